"""What a traced gradient is made of, for tests that guard its shape."""

from __future__ import annotations

from collections import Counter

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


def function_ops(graph) -> dict[str, Counter]:
    """The op types of every function in ``graph``'s library (loop conditions and bodies,
    gradient functions), one count per function name."""
    return {
        function.signature.name: Counter(node.op for node in function.node_def)
        for function in graph.as_graph_def().library.function
    }


def loop_ops(layer, x, **call) -> list[tuple[str, Counter]]:
    """The op types of every ``tf.while_loop`` condition and body in the traced training
    gradient of ``layer(x)`` with respect to its weights, one count each, as
    ``("cond" | "body", Counter)`` pairs: what one step of each loop costs."""

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            y = layer(x, training=True, **call)
        return tape.gradient(y, layer.trainable_variables)

    loops = []
    for name, ops in function_ops(grad.get_concrete_function(x).graph).items():
        kind = "cond" if "while_cond" in name else "body" if "while_body" in name else None
        if kind:
            loops.append((kind, ops))
    return loops
