"""What the core needs of JAX: the ops namespace the backend-neutral activations,
regularizers and constraints are evaluated with (see ``multirnn.ops``), in jax.numpy, and
the array adapter of the call pipeline (``multirnn.pipeline``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from multirnn import ops, pipeline


def dtype_name(dtype) -> str:
    return np.dtype(dtype).name


class JaxArrays(pipeline.Arrays):
    """JAX arrays (tracers included) as they are; host data becomes a JAX array."""

    native = "jax.Array"
    numpy_weights = True

    def is_native(self, value) -> bool:
        return isinstance(value, jax.Array)

    def from_host(self, array, place):
        return jnp.asarray(array)

    def shape(self, value) -> tuple:
        # a symbolic dimension (jax.export with shapes "b, t") is unknown until it runs
        return tuple(d if isinstance(d, (int, np.integer)) else None for d in value.shape)

    def weight(self, value, what: str) -> jax.Array:
        """JAX arrays, and NumPy arrays JAX holds in their own dtype (no silent cast)."""
        array = super().weight(value, what)
        if array.dtype != value.dtype:  # e.g. float64 NumPy data while x64 is off
            raise TypeError(
                f"{what} has dtype {dtype_name(value.dtype)}, which JAX holds as "
                f"{dtype_name(array.dtype)} unless 64-bit mode is on: cast it, or enable "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
        return array

    def cast(self, value, dtype: str) -> jax.Array:
        return value.astype(dtype)

    def dtype(self, value) -> str:
        return dtype_name(value.dtype)


JAX_ARRAYS = JaxArrays()


JAX_OPS = ops.namespace(jnp, sigmoid=jax.nn.sigmoid)
