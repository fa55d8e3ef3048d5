"""The TensorFlow computation: the functional entry and the generic ``tf.while_loop`` path.

Every argument is checked from static shapes and dtypes, so a wrong call fails while a
``tf.function`` traces it, before anything runs. Calls go through one ``tf.function`` per
layer configuration, so eager calls run a traced graph instead of the loop op by op; inside
a caller's ``tf.function`` it is inlined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multirnn_tensorflow import scan
from multirnn_tensorflow.ops import TF_OPS

import tensorflow as tf
from multirnn import activations, calls
from multirnn.spec import LayerSpec

_NATIVE = {
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "relu": tf.nn.relu,
    "linear": lambda x: x,
}


def activation(value) -> Any:
    """An activation as a function on tensors (the shared formula unless a native op is exact)."""
    if isinstance(value, str) and value in _NATIVE:
        return _NATIVE[value]
    return activations.function(value, TF_OPS)


def dtype_name(dtype) -> str:
    return tf.as_dtype(dtype).name


def as_tensor(value: Any, what: str) -> tf.Tensor:
    """A tensor from a tensor, variable or NumPy array; anything else is refused."""
    import numpy as np

    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)):
        return tf.convert_to_tensor(value)
    raise TypeError(f"{what} must be a tf.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_weights(spec: LayerSpec, weights: Sequence[Any]) -> list[tf.Tensor]:
    """Canonical weights as tensors of one dtype, shapes checked by name."""
    weights = list(weights)
    names = spec.weight_names
    if len(weights) != len(names):
        raise ValueError(
            f"weights: {spec.layer} takes {len(names)} ({', '.join(names)}), got {len(weights)}"
        )
    tensors = [as_tensor(w, f"weights: {name!r}") for name, w in zip(names, weights)]
    if tensors[0].shape.rank != 2:
        raise ValueError(
            f"weights: 'kernel' must be 2-D (input_dim, G*units), got {tensors[0].shape}"
        )
    shapes = spec.weight_shapes(tensors[0].shape[0])
    dtype = dtype_name(tensors[0].dtype)
    for name, w in zip(names, tensors):
        if tuple(w.shape) != shapes[name]:
            raise ValueError(
                f"weights: {name!r} must have shape {shapes[name]}, got {tuple(w.shape)}"
            )
        if dtype_name(w.dtype) != dtype:
            raise TypeError(f"weights: {name!r} has dtype {dtype_name(w.dtype)}, 'kernel' {dtype}")
    return tensors


def forward(
    spec: LayerSpec,
    weights: Sequence[tf.Tensor],
    inputs: tf.Tensor,
    *,
    mask: tf.Tensor | None = None,
    initial_state: Sequence[tf.Tensor] | None = None,
    input_dropout: tf.Tensor | None = None,
    recurrent_dropout: tf.Tensor | None = None,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Run the layer of ``spec`` as a differentiable function: weights and inputs in,
    ``(output, final_states)`` out, like the NumPy reference.

    Dropout masks are given explicitly, already scaled (``keep / (1 - rate)``): shape
    ``(batch, width)`` shared by all gates or ``(gates, batch, width)`` one per gate.
    """
    weights = check_weights(spec, weights)
    kernel = weights[0]
    dtype = dtype_name(kernel.dtype)
    x = as_tensor(inputs, "inputs")
    call = calls.inputs(spec, x.shape.as_list() if x.shape.rank is not None else [None],
                        dtype_name(x.dtype), expected_dtype=dtype,
                        input_dim=kernel.shape[0])  # fmt: skip
    if mask is not None:
        mask = as_tensor(mask, "mask")
        calls.mask(spec, mask.shape.as_list(), dtype_name(mask.dtype), call)
    states = initial_states(spec, initial_state, call, dtype)
    mi = dropout_mask(spec, input_dropout, call.batch, call.input_dim, "input_dropout", dtype)
    mr = dropout_mask(spec, recurrent_dropout, call.batch, spec.units, "recurrent_dropout", dtype)
    return run(spec, weights, x, mask, states, mi, mr)


def initial_states(spec, initial_state, call, dtype: str) -> list[tf.Tensor] | None:
    """Validated initial states (None means zeros)."""
    if initial_state is None:
        return None
    if isinstance(initial_state, (tf.Tensor, tf.Variable)) or hasattr(initial_state, "dtype"):
        initial_state = [initial_state]
    if not isinstance(initial_state, (list, tuple)):
        raise TypeError(
            f"{spec.layer}: initial_state must be a list of tensors "
            f"[{', '.join(spec.state_names)}], got {type(initial_state).__name__}"
        )
    states = [as_tensor(s, "initial_state") for s in initial_state]
    calls.states(spec, [s.shape.as_list() for s in states],
                 [dtype_name(s.dtype) for s in states], batch=call.batch,
                 expected_dtype=dtype)  # fmt: skip
    return states


def dropout_mask(spec, mask, batch, width, arg, dtype: str) -> tf.Tensor | None:
    if mask is None:
        return None
    mask = as_tensor(mask, arg)
    calls.dropout_mask(spec, mask.shape.as_list(), batch=batch, width=width, arg=arg)
    return tf.cast(mask, dtype)


_COMPILED: dict[LayerSpec, Any] = {}


def run(spec, weights, x, mask, states, mi, mr) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Run a validated call: inlined into a caller's graph, else through the layer
    configuration's own ``tf.function``."""
    if tf.inside_function():
        return _generic(spec)(list(weights), x, mask, states, mi, mr)
    fn = _COMPILED.get(spec)
    if fn is None:
        # unroll needs the static sequence length, which relaxed retracing would drop
        fn = _COMPILED[spec] = tf.function(_generic(spec), reduce_retracing=not spec.unroll)
    return fn(list(weights), x, mask, states, mi, mr)


def _generic(spec: LayerSpec):
    act = activation(spec.activation)
    ract = None if spec.recurrent_activation is None else activation(spec.recurrent_activation)

    def compute(weights, x, mask, states, mi, mr):
        if states is None:
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], spec.units]), x.dtype)
            states = [zeros] * spec.num_states
        output, final = scan.generic(spec, weights, x, mask, states, mi, mr, act, ract)
        return output, final

    return compute
