"""The JAX computation: the pure functional entry, the cuDNN eligibility rule, and the two
paths it chooses between.

* cuDNN: ``jax.experimental.rnn.lstm`` on a GPU, when the spec computes exactly what it
  computes (an LSTM with tanh/sigmoid, no recurrent dropout, float32, no mask or a
  right-padded one known when the call is traced);
* generic: ``multirnn_jax.scan`` (one hoisted input product, then a ``lax.scan``), with a
  hand-written backward pass (``multirnn_jax.backprop``) where it applies.

Every argument is checked from shapes and dtypes alone, so a wrong call fails while it is
traced, before anything runs. The eligibility rule is the pure function
:func:`fused_ineligibility`, unit-tested on CPU; the CPU never takes the cuDNN path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from multirnn import activations, builtin_cells, pipeline
from multirnn.spec import LayerSpec
from multirnn_jax import backprop, scan
from multirnn_jax.ops import JAX_ARRAYS, JAX_OPS, dtype_name

Array = jax.Array

#: activations the framework computes natively and exactly (the formula's own ops)
NATIVE_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}

activation = activations.resolver(NATIVE_ACTIVATIONS, JAX_OPS)


def is_traced(*values: Any) -> bool:
    """True when any value is an abstract tracer (inside jit, grad, vmap, ...)."""
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


# -- eligibility ---------------------------------------------------------------------------------


def fused_ineligibility(
    spec: LayerSpec,
    *,
    platform: str,
    dtype: str,
    mask: str = "none",
    input_dropout: str = "none",
    recurrent_dropout: bool = False,
) -> str | None:
    """None when ``jax.experimental.rnn`` (cuDNN) computes exactly this call; else why not.

    ``platform`` is the JAX platform the call runs on ("cpu", "gpu", "tpu"); ``mask`` is
    "none", "right_padded" (every row a prefix of at least one step, known at trace time)
    or "other"; ``input_dropout`` is "none", "shared" or "per_gate".
    """
    if platform != "gpu":
        return f"the cuDNN kernel runs on GPUs only (this call runs on {platform})"
    if spec.layer != "LSTM":
        return "jax.experimental.rnn provides an LSTM kernel only"
    if dtype != "float32":
        return f"the cuDNN LSTM of jax.experimental.rnn computes in float32 only (got {dtype})"
    return builtin_cells.fused_call(spec, mask=mask, input_dropout=input_dropout,
                                    recurrent_dropout=recurrent_dropout)  # fmt: skip


def mask_kind(mask: Array | None) -> tuple[str, Array | None]:
    """("none"|"right_padded"|"other", lengths) of a boolean (batch, time) mask.

    A traced mask has no values to look at, so it counts as "other".
    """
    if mask is None:
        return "none", None
    if is_traced(mask):
        return "other", None
    values = np.asarray(mask)
    lengths = values.sum(axis=1)
    prefix = np.arange(values.shape[1])[None, :] < lengths[:, None]
    if (lengths > 0).all() and np.array_equal(prefix, values):
        return "right_padded", jnp.asarray(lengths, jnp.int32)
    return "other", None


def platform_of(*values: Any) -> str:
    """The platform a call on these arrays runs on (the default backend under a trace)."""
    for value in jax.tree.leaves(values):
        if isinstance(value, jax.Array) and not is_traced(value):
            devices = value.devices()
            if devices:
                return next(iter(devices)).platform
    return jax.default_backend()


# -- the functional entry ------------------------------------------------------------------------


def run(spec, weights, x, mask, states, mi, mr) -> tuple[Array, list[Array]]:
    """Dispatch a validated call to the cuDNN kernel or the generic path."""
    if states is None:
        states = [jnp.zeros((x.shape[0], spec.units), x.dtype)] * spec.num_states
    input_kind = "none" if mi is None else ("shared" if mi.ndim == 2 else "per_gate")
    platform = platform_of(x, *weights)
    call = {"platform": platform, "dtype": dtype_name(x.dtype), "input_dropout": input_kind,
            "recurrent_dropout": mr is not None}  # fmt: skip
    reason, lengths = fused_ineligibility(spec, **call), None
    if reason is None and mask is not None:  # only then look at the mask's values
        kind, lengths = mask_kind(mask)
        reason = fused_ineligibility(spec, mask=kind, **call)
    if reason is None:
        path = "cudnn"
    elif scan.hoisting(platform):
        path = "hoisted"
    elif _HAND_WRITTEN_BACKWARD[-1] and backprop.supported(spec):
        path = "custom_vjp"
    else:
        path = "stepwise"
    return _execute(spec, path, weights, x, mask, states, mi, mr, lengths)


def forward(spec: LayerSpec, weights: Sequence[Any], inputs: Any, **arguments: Any):
    """The layer of ``spec`` as a differentiable function of its weights and inputs, like
    the NumPy reference: see :func:`multirnn.pipeline.forward` for the arguments."""
    return pipeline.forward(JAX_ARRAYS, run, spec, weights, inputs, **arguments)


@partial(jax.jit, static_argnums=(0, 1))
def _execute(spec, path, weights, x, mask, states, mi, mr, lengths):
    # Compiled once per spec, path and shapes: eager calls reuse it, and inside a user's
    # jit it is inlined.
    if path == "cudnn":
        return _cudnn(spec, weights, x, lengths, states, mi)
    act = activation(spec.activation)
    ract = None if spec.recurrent_activation is None else activation(spec.recurrent_activation)
    if path == "custom_vjp":
        return backprop.generic(spec, weights, x, mask, states, mi, mr, act, ract)
    return scan.generic(spec, weights, x, mask, states, mi, mr, act, ract,
                        hoist=path == "hoisted")  # fmt: skip


_HAND_WRITTEN_BACKWARD = [True]


@contextmanager
def autodiff_only() -> Iterator[None]:
    """Within this block, calls traced from now on differentiate the plain ``lax.scan``
    instead of the hand-written backward pass: needed for forward-mode differentiation
    (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``), which a ``custom_vjp`` does not support.
    Same numbers either way; the hand-written pass is faster for reverse mode."""
    _HAND_WRITTEN_BACKWARD.append(False)
    try:
        yield
    finally:
        _HAND_WRITTEN_BACKWARD.pop()


# -- the cuDNN path -------------------------------------------------------------------------------


def cudnn_weights(spec: LayerSpec, weights: Sequence[Array]) -> Array:
    """Canonical LSTM weights packed into the flat cuDNN layout of ``jax.experimental.rnn``:
    ``W_ih (4u, F)``, ``W_hh (4u, u)``, then ``b_ih``, ``b_hh`` (gate order i, f, g, o is the
    canonical i, f, c, o, so only transposes are needed; the single bias goes to ``b_ih``)."""
    kernel, recurrent, *rest = weights
    width = kernel.shape[1]
    bias = rest[0] if rest else jnp.zeros(width, kernel.dtype)
    parts = [kernel.T, recurrent.T, bias, jnp.zeros(width, kernel.dtype)]
    return jnp.concatenate([p.reshape(-1) for p in parts])


def _cudnn(spec, weights, x, lengths, states, mi):
    from jax.experimental import rnn

    batch, time, features = x.shape
    if mi is not None:
        x = x * mi[:, None, :]
    if spec.go_backwards:
        x = x[:, ::-1]
    if lengths is None:
        lengths = jnp.full((batch,), time, jnp.int32)
    h0, c0 = (s[None] for s in states)
    y, h, c = rnn.lstm(x, h0, c0, cudnn_weights(spec, weights), lengths, features, spec.units,
                       1, 0.0, False)  # fmt: skip
    if not spec.zero_output_for_mask:  # masked steps repeat the last valid output
        last = jnp.minimum(jnp.arange(time)[None, :], (lengths - 1)[:, None])
        y = jnp.take_along_axis(y, last[..., None], axis=1)
    output = y if spec.return_sequences else y[:, -1]
    return output, [h[0], c[0]]
