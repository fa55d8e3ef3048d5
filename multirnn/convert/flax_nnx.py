"""Flax NNX cells (``SimpleCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``) <->
multirnn layers (flax imported lazily).

A cell computes one step; the multirnn layer runs it over a sequence like ``nnx.RNN(cell)``
(full sequence out). Flax's activations are functions, so they map by identity: only the
functions below convert.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multirnn.convert import layouts
from multirnn.convert._common import build
from multirnn.convert.layouts import ConversionError

CELLS = {"SimpleCell": "SimpleRNN", "LSTMCell": "LSTM", "OptimizedLSTMCell": "LSTM",
         "GRUCell": "GRU"}  # fmt: skip
_PATHS = {
    "LSTMCell": [f"{n}.kernel" for n in ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")]
    + [f"{n}.bias" for n in ("hi", "hf", "hg", "ho")],
    "OptimizedLSTMCell": ["dense_i.kernel", "dense_h.kernel", "dense_h.bias"],
    "SimpleCell": ["dense_i.kernel", "dense_i.bias", "dense_h.kernel"],
    "GRUCell": ["dense_i.kernel", "dense_i.bias", "dense_h.kernel"],
}


def _functions() -> dict[str, Any]:
    """multirnn activation name -> the JAX function with that formula."""
    import jax

    return {
        "tanh": jax.numpy.tanh,
        "sigmoid": jax.nn.sigmoid,
        "relu": jax.nn.relu,
        "hard_sigmoid_relu6": jax.nn.hard_sigmoid,
        "softsign": jax.nn.soft_sign,
        "softplus": jax.nn.softplus,
        "elu": jax.nn.elu,
        "selu": jax.nn.selu,
    }


def _name_of(fn, arg: str, kind: str) -> str:
    for name, known in _functions().items():
        if fn is known or fn == known:
            return name
    raise ConversionError(
        f"Flax {kind}: {arg}={getattr(fn, '__name__', fn)!r} has no multirnn equivalent; "
        f"convertible functions: {', '.join(_functions())} (from jax.nn / jax.numpy)"
    )


def _get(cell, path: str) -> np.ndarray:
    module, param = path.split(".")
    return np.asarray(getattr(getattr(cell, module), param).get_value())


def from_flax(cell, *, backend: str | None = None):
    """The multirnn layer (``return_sequences=True``) that runs ``cell`` over a sequence
    like ``nnx.RNN(cell)``; an ``nnx.RNN`` is accepted too (not one with ``reverse=True``)."""
    if type(cell).__name__ == "Bidirectional" and hasattr(cell, "forward_rnn"):
        raise ConversionError(
            "nnx.Bidirectional is not convertible yet; convert forward_rnn.cell and "
            "backward_rnn.cell and wrap them in multirnn's Bidirectional yourself"
        )
    if type(cell).__name__ == "RNN" and hasattr(cell, "cell"):
        if getattr(cell, "reverse", False):
            raise ConversionError("nnx.RNN(reverse=True) needs multirnn's Bidirectional or "
                                  "go_backwards semantics; convert its cell instead")  # fmt: skip
        cell = cell.cell
    kind = type(cell).__name__
    if kind not in CELLS:
        raise ConversionError(
            f"from_flax takes flax.nnx {', '.join(CELLS)} (or nnx.RNN of one), got {kind}"
        )
    layer = CELLS[kind]
    params = {p: _get(cell, p) for p in _PATHS[kind]}
    units = int(cell.hidden_features)
    weights = layouts.from_flax(kind, params, units)
    if kind == "SimpleCell" and cell.residual:  # h' = act(x W + b + h U + h): U + I exactly
        weights[1] = weights[1] + np.eye(units, dtype=weights[1].dtype)
    dtypes = {str(w.dtype) for w in weights}
    if len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        raise ConversionError(f"Flax {kind}: parameters must all be float32 or float64, got "
                              f"{sorted(dtypes)}")  # fmt: skip
    kwargs: dict[str, Any] = {"return_sequences": True, "dtype": dtypes.pop()}
    kwargs["activation"] = _name_of(cell.activation_fn, "activation_fn", kind)
    if layer != "SimpleRNN":
        kwargs["recurrent_activation"] = _name_of(cell.gate_fn, "gate_fn", kind)
    if layer == "GRU":
        kwargs["reset_after"] = True
    return build(layer, units, kwargs, weights, backend)


def to_flax(layer, *, kind: str | None = None, rngs=None):
    """A Flax NNX cell computing one step of ``layer`` (run it with ``nnx.RNN``).

    ``kind`` picks the cell class for an LSTM: "LSTMCell" (default) or
    "OptimizedLSTMCell". Sequence options (return_sequences, masks, states) belong to
    ``nnx.RNN`` and are not converted; ``go_backwards`` is refused.
    """
    import jax.numpy as jnp
    from flax import nnx

    if not getattr(layer, "built", False):
        raise ConversionError("to_flax: the layer has no weights yet; build it first")
    spec = layer.spec
    default = {"SimpleRNN": "SimpleCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}[spec.layer]
    kind = kind or default
    if CELLS.get(kind) != spec.layer:
        options = [k for k, v in CELLS.items() if v == spec.layer]
        raise ConversionError(f"to_flax: kind for a {spec.layer} is one of {options}, got "
                              f"{kind!r}")  # fmt: skip
    if spec.layer == "GRU" and not spec.reset_after:
        raise ConversionError(
            "Flax's GRUCell applies the reset gate after the recurrent product "
            "(reset_after=True); this GRU has reset_after=False"
        )
    if spec.go_backwards:
        raise ConversionError(
            "a Flax cell has no direction; convert a go_backwards=False layer and run it with "
            "nnx.RNN(cell, reverse=True, keep_order=False)"
        )
    functions = _functions()
    names = [("activation", spec.activation)]
    if spec.recurrent_activation is not None:
        names.append(("recurrent_activation", spec.recurrent_activation))
    for arg, value in names:
        if value not in functions:
            raise ConversionError(
                f"{spec.layer}: {arg}={value!r} has no JAX built-in function for a Flax cell; "
                f"convertible: {', '.join(functions)}"
            )
    weights = [np.asarray(w) for w in layer.get_weights()]
    dtype = weights[0].dtype
    params = layouts.to_flax(spec, weights, kind)
    cls = getattr(nnx, kind)
    extra: dict[str, Any] = {"activation_fn": functions[spec.activation]}
    if spec.recurrent_activation is not None:
        extra["gate_fn"] = functions[spec.recurrent_activation]
    cell = cls(weights[0].shape[0], spec.units, param_dtype=dtype, dtype=dtype,
               rngs=rngs if rngs is not None else nnx.Rngs(0), **extra)  # fmt: skip
    for path, value in params.items():
        module, param = path.split(".")
        getattr(getattr(cell, module), param).set_value(jnp.asarray(value, dtype))
    return cell
