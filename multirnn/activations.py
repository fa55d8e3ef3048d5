"""Activations by name, each defined once as a formula over an engine's ops namespace.

Two functions are called "hard sigmoid" in the wild. This API documents the Keras 2 one,
``clip(0.2 * x + 0.5, 0, 1)``, and keeps that name for it (it is the default recurrent
activation). The slope-1/6 version that Keras 3, PyTorch (``Hardsigmoid``) and JAX call
"hard sigmoid", ``relu6(x + 3) / 6``, is available as ``"hard_sigmoid_relu6"`` so a port
from those frameworks can say exactly what it means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multirnn._checks import did_you_mean, show

Activation = str | Callable[[Any], Any]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _elu(x, ops):
    # expm1 of the clamped value keeps the untaken branch finite (and its gradient zero).
    return ops.where(x > 0, x, ops.expm1(ops.minimum(x, 0.0)))


def _softplus(x, ops):
    return ops.log1p(ops.exp(-ops.abs(x))) + ops.maximum(x, 0.0)


def _softmax(x, ops):
    # over the last axis (each gate block's units), shifted by the maximum: exact and finite
    e = ops.exp(x - ops.max(x, axis=-1, keepdims=True))
    return e / ops.sum(e, axis=-1, keepdims=True)


FORMULAS: dict[str, Callable[[Any, Any], Any]] = {
    "tanh": lambda x, ops: ops.tanh(x),
    "sigmoid": lambda x, ops: ops.sigmoid(x),
    "hard_sigmoid": lambda x, ops: ops.clip(0.2 * x + 0.5, 0.0, 1.0),
    "hard_sigmoid_relu6": lambda x, ops: ops.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "relu": lambda x, ops: ops.maximum(x, 0.0),
    "linear": lambda x, ops: x,
    "softsign": lambda x, ops: x / (1.0 + ops.abs(x)),
    "softplus": _softplus,
    "elu": _elu,
    "selu": lambda x, ops: (
        _SELU_SCALE * ops.where(x > 0, x, _SELU_ALPHA * ops.expm1(ops.minimum(x, 0.0)))
    ),
    "exponential": lambda x, ops: ops.exp(x),
    "softmax": _softmax,
}

NAMES: tuple[str, ...] = tuple(FORMULAS)


def resolve(value: object, *, owner: str, arg: str) -> Activation:
    """Canonical activation for an argument: a known name, or a user callable.

    ``None`` means the identity, as the documented API says.
    """
    if value is None:
        return "linear"
    if isinstance(value, str):
        if value in FORMULAS:
            return value
        hint = did_you_mean(value, NAMES)
        if value.replace("_", "").lower() == "hardsigmoid" and value != "hard_sigmoid":
            hint = (
                " 'hard_sigmoid' here is the Keras 2 clip(0.2*x + 0.5, 0, 1); the slope-1/6 "
                "function PyTorch, JAX and Keras 3 call hard sigmoid is 'hard_sigmoid_relu6'."
            )
        raise ValueError(
            f"{owner}: unknown {arg} {value!r}. Accepted: {', '.join(NAMES)}, None, "
            f"or a callable.{hint}"
        )
    if callable(value):
        return value
    raise TypeError(
        f"{owner}: {arg} must be an activation name, None or a callable, got {show(value)}"
    )


def function(activation: Activation, ops: object) -> Callable[[Any], Any]:
    """The activation as a one-argument function on an engine's arrays."""
    if isinstance(activation, str):
        formula = FORMULAS[activation]
        return lambda x: formula(x, ops)
    return activation


def resolver(native: dict[str, Callable[[Any], Any]], ops: object) -> Callable:
    """An engine's ``activation(value)``: its own op where that computes the formula exactly
    (one framework call instead of a few), else the formula evaluated with ``ops``."""

    def activation(value: Activation) -> Callable[[Any], Any]:
        if isinstance(value, str) and value in native:
            return native[value]
        return function(value, ops)

    return activation


def serialize(activation: Activation, *, arg: str) -> str:
    if isinstance(activation, str):
        return activation
    raise TypeError(
        f"{arg} is the Python callable {activation!r}: a layer that uses one computes only "
        "on the engine it was written for and cannot be serialized. Use a named activation "
        f"({', '.join(NAMES)}) to save or share the layer."
    )
