"""The generic path's time loop with a hand-written backward pass (``tf.custom_gradient``).

Differentiating a ``tf.while_loop`` automatically replays every op of the body in reverse,
popping each intermediate from a stack, and accumulates the weight gradients inside the
reverse loop with one small product per step and weight. Here the forward loop keeps each
step's activations and old states; the backward loop only walks the recurrence (one product
with ``U^T`` per step, two for the GRU with ``reset_after=False``) and records the
pre-activation gradients of every step; the weight and input gradients are then single
large products over all steps.

The step, its residuals, its backward step and the final weight products are the shared
cell maths of ``multirnn.builtin_cells`` (every named activation's derivative written as a
function of its output, which is what the forward pass keeps); this module holds the
loops. Covered: the named activations, any mask, shared input dropout
(applied outside, so autodiff handles it), no recurrent dropout, no ``unroll``. Everything
else takes the automatically differentiated loop (``multirnn_tensorflow.scan``).
"""

from __future__ import annotations

from multirnn_tensorflow.ops import array_api

import tensorflow as tf
from multirnn import builtin_cells
from multirnn.spec import LayerSpec


def supported(spec: LayerSpec, mi, mr) -> bool:
    """Whether the hand-written backward pass applies to this call."""
    return (
        builtin_cells.differentiable(spec)
        and mr is None
        and (mi is None or mi.shape.rank == 2)
        and not spec.unroll
    )


def generic(spec, weights, x, mask, states, mi, act, ract):
    """Same contract as ``multirnn_tensorflow.scan.generic`` (stepwise input products)."""
    from multirnn_tensorflow.scan import split_bias

    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    xs = tf.transpose(x if mi is None else x * mi[:, None, :], [1, 0, 2])
    masks = None if mask is None else tf.transpose(mask)[..., None]
    if spec.go_backwards:
        xs = tf.reverse(xs, [0])
        masks = None if masks is None else tf.reverse(masks, [0])
    if bias_rec is None:
        bias_rec = tf.zeros([0], kernel.dtype)  # a placeholder: no recurrent bias
    outs, *final = _loop(spec, act, ract, masks, kernel, recurrent, bias_in, bias_rec, xs,
                         list(states))  # fmt: skip
    outs.set_shape([xs.shape[0], x.shape[0], spec.units])
    output = tf.transpose(outs, [1, 0, 2]) if spec.return_sequences else outs[-1]
    return output, final


# -- the loops -----------------------------------------------------------------------------------


def _arrays(dtype, time, count):
    return [tf.TensorArray(dtype, size=time) for _ in range(count)]


def _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, states):
    """(outputs (time, batch, units), final states, old states and residuals of every
    step, each stacked along time)."""
    zero_output = spec.zero_output_for_mask
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    ops = array_api(dtype)
    inputs = tf.TensorArray(dtype, size=time).unstack(xs)
    keeps = None if masks is None else tf.TensorArray(masks.dtype, size=time).unstack(masks)

    def body(t, old, previous, outs, olds, residuals):
        new, res = builtin_cells.saving_step(ops, spec, act, ract, W, U, b_in, b_rec,
                                             inputs.read(t), old)  # fmt: skip
        for n, s in zip(new, old):
            n.set_shape(s.shape)
        if keeps is None:
            kept, out = new, new[0]
        else:
            keep = keeps.read(t)
            kept = [tf.where(keep, n, s) for n, s in zip(new, old)]
            out = tf.where(keep, new[0], tf.zeros_like(previous) if zero_output else previous)
        outs = outs.write(t, out)
        olds = [a.write(t, s) for a, s in zip(olds, old)]
        residuals = [a.write(t, r) for a, r in zip(residuals, res)]
        return t + 1, kept, out, outs, olds, residuals

    start = (
        tf.constant(0),
        list(states),
        tf.zeros_like(states[0]),
        tf.TensorArray(dtype, size=time),
        _arrays(dtype, time, len(states)),
        _arrays(dtype, time, builtin_cells.residual_count(spec)),
    )
    _, final, _, outs, olds, residuals = tf.while_loop(
        lambda t, *_: t < time, body, start, maximum_iterations=time
    )
    # dense tensors, not TensorArrays, cross into the backward pass: a SavedModel saves
    # the gradient function too, and cannot save a capture of a TensorArray
    return outs.stack(), final, [a.stack() for a in olds], [a.stack() for a in residuals]


def _loop(spec, act, ract, masks, W, U, b_in, b_rec, xs, states):
    n = len(states)

    @tf.custom_gradient
    def loop(W, U, b_in, b_rec, xs, *states):
        outs, final, olds, residuals = _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs,
                                                     masks, states)  # fmt: skip

        def backward(d_outs, *d_final):
            d_outs = tf.zeros_like(outs) if d_outs is None else d_outs
            d_final = [tf.zeros_like(s) if d is None else d for d, s in zip(d_final, final)]
            return _backward(spec, W, U, b_rec, xs, masks, olds, residuals, d_outs, d_final)

        return (outs, *final), backward

    results = loop(W, U, b_in, b_rec, xs, *states)
    return [results[0], *results[1 : 1 + n]]


def _backward(spec, W, U, b_rec, xs, masks, olds, residuals, d_outs, d_final):
    zero_output = spec.zero_output_for_mask
    ops = array_api(xs.dtype)
    UT = tf.transpose(U)
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    # Steps are read as slices of the dense stacks: unstacking them into TensorArrays would
    # copy every saved activation once more (this loop is not differentiated again, so
    # the slices' own gradients never matter).
    separate = spec.layer == "GRU" and spec.reset_after  # d rec differs from d xp

    def body(t, d_states, d_previous, dxps, drecs):
        d_out = d_outs[t] + d_previous
        if masks is None:
            d_new = [d_states[0] + d_out, *d_states[1:]]
            passed = None
            d_previous = tf.zeros_like(d_out)
        else:
            keep = masks[t]
            zeros = tf.zeros_like(d_out)
            d_new = [tf.where(keep, d, zeros) for d in d_states]
            d_new[0] = d_new[0] + tf.where(keep, d_out, zeros)
            passed = [tf.where(keep, zeros, d) for d in d_states]
            d_previous = zeros if zero_output else tf.where(keep, zeros, d_out)
        old = [a[t] for a in olds]
        res = [a[t] for a in residuals]
        dxp, drec, d_old = builtin_cells.step_back(ops, spec, UT, res, old, d_new)
        if passed is not None:
            d_old = [a + b for a, b in zip(d_old, passed)]
        for d, s in zip(d_old, d_states):
            d.set_shape(s.shape)
        dxps = dxps.write(t, dxp)
        if separate:
            drecs = drecs.write(t, drec)
        return t - 1, d_old, d_previous, dxps, drecs

    dxps = tf.TensorArray(dtype, size=time)
    drecs = tf.TensorArray(dtype, size=time if separate else 0)
    start = (time - 1, list(d_final), tf.zeros_like(d_final[0]), dxps, drecs)
    _, d_states, _, dxps, drecs = tf.while_loop(
        lambda t, *_: t >= 0, body, start, maximum_iterations=time
    )
    drec = drecs.stack() if separate else None
    d_W, d_U, d_b_in, d_b_rec, d_xs = builtin_cells.weight_grads(
        ops, spec, W, b_rec, xs, olds[0], residuals, dxps.stack(), drec
    )
    return [d_W, d_U, d_b_in, d_b_rec, d_xs, *d_states]
