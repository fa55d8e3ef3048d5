"""The ops namespace the backend-neutral activations, regularizers and constraints are
evaluated with (see ``multirnn.ops``), in jax.numpy."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp


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
