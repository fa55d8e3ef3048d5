"""The tensorflow engine (multirnn_tensorflow), under construction.

Its computation exists and is tested against the NumPy reference (``kernels.forward``, the
functional entry, over ``scan``, a ``tf.while_loop``); its Keras layers, conformance
adapter and cuDNN path do not yet. Until they do it registers no entry point, so multirnn
never offers it as an engine.
"""
