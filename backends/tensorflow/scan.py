"""The generic path: every option of DESIGN.md §3-4 as one ``tf.while_loop``.

On GPUs the input projections of all steps (with input dropout and the input bias folded
in) are one product before the loop, in time-major layout, and the loop body does one
recurrent product and the cell's elementwise work. On CPU each step computes its own
``x_t W + b`` instead, which runs faster there (see :func:`hoisting`). Masks, recurrent
dropout and ``go_backwards`` use the same body. ``unroll=True`` replaces the loop by a
Python loop over the (static) time steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from multirnn.spec import LayerSpec


def split_bias(spec: LayerSpec, weights: Sequence[tf.Tensor]):
    """(input-side bias, recurrent-side bias or None) of canonical weights."""
    kernel = weights[0]
    if not spec.use_bias:
        return tf.zeros([spec.gates * spec.units], kernel.dtype), None
    bias = weights[2]
    if spec.layer == "GRU" and spec.reset_after:
        return bias[0], bias[1]
    return bias, None


def project_inputs(spec: LayerSpec, kernel, bias_in, x, mi) -> tf.Tensor:
    """``x_t W + b`` for every step in one product: (batch, time, F) -> (time, batch, G*u)."""
    if mi is None:
        xp = tf.einsum("btf,fg->tbg", x, kernel)
    elif mi.shape.rank == 2:
        xp = tf.einsum("btf,fg->tbg", x * mi[:, None, :], kernel)
    else:
        g, u = spec.gates, spec.units
        # the input size may be unknown here: traces relax it (reduce_retracing)
        w = tf.reshape(kernel, [-1, g, u])
        xp = tf.einsum("btf,kbf,fku->tbku", x, mi, w)
        xp = tf.reshape(xp, [tf.shape(xp)[0], tf.shape(xp)[1], g * u])
    return xp + bias_in


def _recurrent(spec: LayerSpec, recurrent, mr) -> Callable:
    """``h -> (h * mask_g) U_g`` for the first ``n`` gate blocks, concatenated."""
    u = spec.units
    if mr is None or mr.shape.rank == 2:

        def product(h, n):
            hd = h if mr is None else h * mr
            return tf.matmul(hd, recurrent if n == spec.gates else recurrent[:, : n * u])

        return product
    blocks = tf.reshape(recurrent, [u, spec.gates, u])

    def per_gate(h, n):
        out = tf.einsum("kbu,ukv->bkv", h[None] * mr[:n], blocks[:, :n])
        return tf.reshape(out, [tf.shape(h)[0], n * u])

    return per_gate


def cell(spec: LayerSpec, act, ract, recurrent, bias_rec, mr) -> Callable:
    """One step: (states, projected input of the step) -> new states."""
    u = spec.units
    product = _recurrent(spec, recurrent, mr)
    if spec.layer == "SimpleRNN":
        return lambda states, xp: [act(xp + product(states[0], 1))]
    if spec.layer == "LSTM":

        def lstm(states, xp):
            h, c = states
            z = xp + product(h, 4)
            i, f, g, o = tf.split(z, 4, axis=1)
            c = ract(f) * c + ract(i) * act(g)
            return [ract(o) * act(c), c]

        return lstm
    if spec.reset_after:

        def gru_after(states, xp):
            (h,) = states
            rec = product(h, 3)
            if bias_rec is not None:
                rec = rec + bias_rec
            z = ract(xp[:, :u] + rec[:, :u])
            r = ract(xp[:, u : 2 * u] + rec[:, u : 2 * u])
            hh = act(xp[:, 2 * u :] + r * rec[:, 2 * u :])
            return [z * h + (1.0 - z) * hh]

        return gru_after
    candidate = recurrent[:, 2 * u :]
    m_h = None if mr is None else (mr if mr.shape.rank == 2 else mr[2])

    def gru_before(states, xp):
        (h,) = states
        rec = product(h, 2)
        z = ract(xp[:, :u] + rec[:, :u])
        r = ract(xp[:, u : 2 * u] + rec[:, u:])
        hd = h if m_h is None else h * m_h
        hh = act(xp[:, 2 * u :] + tf.matmul(r * hd, candidate))
        return [z * h + (1.0 - z) * hh]

    return gru_before


def hoisting() -> bool:
    """Whether to hoist the input products out of the loop: only when TensorFlow places
    work on a GPU.

    Measured on CPU (TensorFlow 2.21, shape S, LSTM): computing ``x_t W`` inside the loop
    makes the training step about 10% faster in a plain ``tf.function`` and the forward
    pass about 1.6x faster under ``jit_compile=True`` (XLA) than reading the steps of one
    hoisted product. On GPUs one large product is the better use of the device.
    """
    return bool(tf.config.list_logical_devices("GPU"))


def generic(spec: LayerSpec, weights, x, mask, states, mi, mr, act, ract, *, hoist=True):
    """Run the layer over ``x`` (batch, time, F); returns (output, final states).

    ``hoist`` computes the input products of all steps before the loop; otherwise each
    step computes its own (see :func:`hoisting`). Per-gate input dropout masks always hoist.
    """
    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    step_fn = cell(spec, act, ract, recurrent, bias_rec, mr)
    if hoist or (mi is not None and mi.shape.rank == 3):
        xp = project_inputs(spec, kernel, bias_in, x, mi)
    else:
        xp = tf.transpose(x if mi is None else x * mi[:, None, :], [1, 0, 2])
        recurrent_step = step_fn

        def step_fn(states, x_t):
            return recurrent_step(states, tf.matmul(x_t, kernel) + bias_in)

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
        outputs = []
        for t in range(time):
            states, previous = step(t, states, previous)
            outputs.append(previous)
        output = tf.stack(outputs, axis=1) if spec.return_sequences else previous
        return output, states

    # Steps are read from TensorArrays, not sliced: the gradient of a slice would write a
    # full-size zero tensor per step (quadratic in the sequence length).
    time = xp.shape[0] if xp.shape[0] is not None else tf.shape(xp)[0]  # static for XLA
    inputs = tf.TensorArray(xp.dtype, size=time).unstack(xp)
    if masks is not None:
        keeps = tf.TensorArray(masks.dtype, size=time).unstack(masks)
    sequences = tf.TensorArray(xp.dtype, size=time) if spec.return_sequences else None

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
