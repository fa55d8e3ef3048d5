"""The TensorFlow engine (``multirnn_tensorflow``): SimpleRNN, LSTM and GRU as Keras 3
layers on the TensorFlow backend.

Importing this package does not import TensorFlow; the layers live in
``multirnn_tensorflow.layers``, the functional entry in ``multirnn_tensorflow.kernels``.
"""

from multirnn.engines import EngineInfo

ENGINE = EngineInfo(
    name="tensorflow",
    module="multirnn_tensorflow.layers",
    testing="multirnn_tensorflow.testing",
    requires=("tensorflow", "keras"),
    extra="tensorflow",
    priority=10,
    benchmark_variants=("xla",),
    description="TensorFlow engine (Keras 3 layers on the TensorFlow backend, tf.while_loop)",
)

__all__ = ["ENGINE"]
