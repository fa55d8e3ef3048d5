"""The JAX engine (``multirnn_jax``): SimpleRNN, LSTM and GRU as JAX pytrees.

Importing this package does not import jax; the layers live in ``multirnn_jax.layers``,
the pure functional entry in ``multirnn_jax.kernels``.
"""

from multirnn.engines import EngineInfo

ENGINE = EngineInfo(
    name="jax",
    module="multirnn_jax.layers",
    testing="multirnn_jax.testing",
    requires=("jax",),
    extra="jax",
    priority=20,
    description="JAX engine (pytree layers over lax.scan; cuDNN LSTM on GPUs when eligible)",
)

__all__ = ["ENGINE"]
