"""What a traced gradient is made of, for tests that guard its shape."""

from __future__ import annotations

import tensorflow as tf


def sequence_slice_grads(layer, x) -> int:
    """How many per-step slices of a whole sequence (a ``StridedSliceGrad`` writing a
    3-D tensor) the gradient of ``layer(x)`` with respect to ``x`` takes: each one writes a
    zero-filled copy of the sequence, so a loop that slices makes training quadratic in
    the sequence's length."""

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, x)

    graph = grad.get_concrete_function(x).graph
    return sum(
        1
        for op in graph.get_operations()
        if op.type == "StridedSliceGrad" and op.outputs[0].shape.rank == 3
    )
