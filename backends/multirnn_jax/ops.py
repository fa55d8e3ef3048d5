"""What the core needs of JAX: the ops namespace the backend-neutral activations,
regularizers and constraints are evaluated with (see ``multirnn.ops``), in jax.numpy, and
the array adapter of the call pipeline (``multirnn.pipeline``)."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from multirnn import pipeline


def dtype_name(dtype) -> str:
    return np.dtype(dtype).name


class JaxArrays(pipeline.Arrays):
    """JAX arrays (tracers included) as they are; host data becomes a JAX array."""

    native = "jax.Array"

    def is_native(self, value) -> bool:
        return isinstance(value, jax.Array)

    def from_host(self, array, place):
        return jnp.asarray(array)

    def dtype(self, value) -> str:
        return dtype_name(value.dtype)


JAX_ARRAYS = JaxArrays()


def _sum(x, axis=None, keepdims=False):
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def _max(x, axis=None, keepdims=False):
    return jnp.max(x, axis=axis, keepdims=keepdims)


JAX_OPS = SimpleNamespace(
    abs=jnp.abs,
    square=jnp.square,
    sqrt=jnp.sqrt,
    exp=jnp.exp,
    expm1=jnp.expm1,
    log1p=jnp.log1p,
    tanh=jnp.tanh,
    sigmoid=jax.nn.sigmoid,
    maximum=jnp.maximum,
    minimum=jnp.minimum,
    clip=jnp.clip,
    where=jnp.where,
    sum=_sum,
    max=_max,
)
