"""The generic path: every option of docs/semantics.md as one ``tf.while_loop``.

On GPUs the input projections of all steps (with input dropout and the input bias folded
in) are one product before the loop, in time-major layout, and the loop body does one
recurrent product and the cell's elementwise work. On CPU each step computes its own
``x_t W + b`` instead, which runs faster there (see :func:`hoisting`). Masks, recurrent
dropout and ``go_backwards`` use the same body. ``unroll=True`` replaces the loop by a
Python loop over the (static) time steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from multirnn import builtin_cells
from multirnn.spec import LayerSpec
from multirnn_tensorflow.ops import array_api


def split_bias(spec: LayerSpec, weights: Sequence[tf.Tensor]):
    """(input-side bias, recurrent-side bias or None) of canonical weights."""
    return builtin_cells.split_bias(array_api(weights[0].dtype), spec, weights)


def hoisting() -> bool:
    """Whether to hoist the input products out of the loop: only when TensorFlow places
    work on a GPU.

    On CPU computing ``x_t W`` inside the loop is faster than reading the steps of one
    hoisted product, in a plain ``tf.function`` and under ``jit_compile=True`` (measured in
    ``benchmarks/notes.md``). On GPUs one large product is the better use of the device.
    """
    return bool(tf.config.list_logical_devices("GPU"))


def generic(spec: LayerSpec, weights, x, mask, states, mi, mr, act, ract, *, hoist=True):
    """Run the layer over ``x`` (batch, time, F); returns (output, final states).

    ``hoist`` computes the input products of all steps before the loop; otherwise each
    step computes its own (see :func:`hoisting`). Per-gate input dropout masks always hoist.
    """
    kernel, recurrent = weights[0], weights[1]
    ops = array_api(kernel.dtype)
    bias_in, bias_rec = split_bias(spec, weights)
    product = builtin_cells.GateProduct(ops, recurrent, spec.units, spec.gates, mr)

    def step_fn(states, xp):
        return builtin_cells.transition(spec, act, ract, xp, states, product, bias_rec)

    if hoist or (mi is not None and mi.shape.rank == 3):
        xp = builtin_cells.project_inputs(ops, spec, kernel, bias_in, x, mi)
    else:
        xp = tf.transpose(x if mi is None else x * mi[:, None, :], [1, 0, 2])
        recurrent_step = step_fn

        def step_fn(states, x_t):
            return recurrent_step(states, x_t @ kernel + bias_in)

    masks = None if mask is None else tf.transpose(mask)[..., None]
    if spec.go_backwards:
        xp = tf.reverse(xp, [0])
        masks = None if masks is None else tf.reverse(masks, [0])
    zero_output = spec.zero_output_for_mask
    states = list(states)
    inputs, keeps = xp, masks
    previous = tf.zeros_like(states[0])

    def step(t, states, previous, read=lambda a, t: a[t]):
        new = step_fn(states, read(inputs, t))
        for n, s in zip(new, states):
            # with shapes relaxed by retracing, the loop needs its states to keep the shape
            # they entered with (static only: no op at run time)
            n.set_shape(s.shape)
        if masks is None:
            return new, new[0]
        keep = read(keeps, t)
        kept = [tf.where(keep, n, s) for n, s in zip(new, states)]
        out = tf.where(keep, new[0], tf.zeros_like(previous) if zero_output else previous)
        return kept, out

    if spec.unroll:
        time = xp.shape[0]
        if time is None:
            raise ValueError(
                f"{spec.layer}: unroll=True needs a static number of time steps; the inputs "
                f"have shape {x.shape}"
            )
        # unstacked once (``step`` reads these names when it runs), not sliced per step:
        # see the TensorArrays below
        inputs = tf.unstack(xp)
        keeps = None if masks is None else tf.unstack(masks)
        outputs = []
        for t in range(time):
            states, previous = step(t, states, previous)
            outputs.append(previous)
        output = tf.stack(outputs, axis=1) if spec.return_sequences else previous
        return output, states

    # Steps are read from TensorArrays, not sliced: the gradient of a slice would write a
    # full-size zero tensor per step (quadratic in the sequence length).
    time = xp.shape[0] if xp.shape[0] is not None else tf.shape(xp)[0]  # static for XLA
    # each with its elements' shape (batch unknown): TFLite's converter needs it
    inputs = tf.TensorArray(xp.dtype, size=time, element_shape=xp.shape[1:]).unstack(xp)
    if masks is not None:
        keeps = tf.TensorArray(masks.dtype, size=time, element_shape=masks.shape[1:])
        keeps = keeps.unstack(masks)
    sequences = None
    if spec.return_sequences:
        sequences = tf.TensorArray(xp.dtype, size=time, element_shape=[x.shape[0], spec.units])

    def body(t, states, previous, sequences):
        states, previous = step(t, states, previous, read=lambda a, t: a.read(t))
        if sequences is not None:
            sequences = sequences.write(t, previous)
        return t + 1, states, previous, sequences

    loop_vars = (tf.constant(0), states, previous, sequences)
    if sequences is None:
        loop_vars = loop_vars[:3]

        def body3(t, states, previous):
            return body(t, states, previous, None)[:3]

        _, states, previous = tf.while_loop(
            lambda t, *_: t < time, body3, loop_vars, maximum_iterations=time
        )
        return previous, list(states)
    _, states, previous, sequences = tf.while_loop(
        lambda t, *_: t < time, body, loop_vars, maximum_iterations=time
    )
    stacked = sequences.stack()
    stacked.set_shape([xp.shape[0], x.shape[0], spec.units])  # keep the static sizes
    return tf.transpose(stacked, [1, 0, 2]), list(states)
