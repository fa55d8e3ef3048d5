"""The generic path's time loop with a hand-written backward pass (``tf.custom_gradient``).

Differentiating a ``tf.while_loop`` automatically replays every op of the body in reverse,
popping each intermediate from a stack. Here the forward loop keeps each step's activations
side by side in one array (the old ``h`` of a step without a mask is the previous output,
not saved twice); the backward loop walks the recurrence (one product with ``U^T`` per
step, two for the GRU with ``reset_after=False``) and records every step's pre-activation
gradients. For the LSTM and the GRU with ``reset_after=True`` it also adds each step's
share of the recurrent kernel's gradient: those small products do not wait on the next
step's recurrence, so TensorFlow runs them beside it on another core (see
:func:`kernel_grads_in_loop`). Otherwise, and always under XLA, the recurrent kernel's
gradient is one large product over all steps after the loop, as the input kernel's, input
and bias gradients always are. On this graph executor each op of a step costs about as
much as its arithmetic, so every op the loops save counts.

The step, its residuals, its backward step and the final weight products are the shared
cell maths of ``multirnn.builtin_cells`` (every named activation's derivative written as a
function of its output, which is what the forward pass keeps); this module holds the
loops. Covered: the named activations, any mask, dropout on the inputs and on the
recurrent state (one mask shared by the gates, or one per gate: a shared input mask is
applied to the inputs before the loop, the others in the step and its backward step), no
``unroll``. Everything else takes the automatically differentiated loop
(``multirnn_tensorflow.scan``).
"""

from __future__ import annotations

import tensorflow as tf

from multirnn import builtin_cells
from multirnn.spec import LayerSpec
from multirnn_tensorflow.ops import array_api


def supported(spec: LayerSpec) -> bool:
    """Whether the hand-written backward pass applies to this layer."""
    return builtin_cells.differentiable(spec) and not spec.unroll


def generic(spec, weights, x, mask, states, mi, mr, act, ract, *, xla: bool = False):
    """Same contract as ``multirnn_tensorflow.scan.generic`` (stepwise input products);
    ``xla``: the graph is compiled by XLA (see :func:`kernel_grads_in_loop`)."""
    from multirnn_tensorflow.scan import split_bias

    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    shared = mi is not None and mi.shape.rank == 2
    xs = tf.transpose(x * mi[:, None, :] if shared else x, [1, 0, 2])
    # one product per gate where a mask is per gate: TensorFlow runs a batched product's
    # gradient slower than the products (measured, benchmarks/notes.md)
    inputs = None
    if mi is not None and not shared:
        inputs = builtin_cells.GateProduct(array_api(x.dtype), kernel, spec.units, spec.gates,
                                           mi, batched=False)  # fmt: skip
    product = builtin_cells.GateProduct(array_api(x.dtype), recurrent, spec.units, spec.gates,
                                        mr, batched=False)  # fmt: skip
    masks = None if mask is None else tf.transpose(mask)[..., None]
    if spec.go_backwards:
        xs = tf.reverse(xs, [0])
        masks = None if masks is None else tf.reverse(masks, [0])
    if bias_rec is None:
        bias_rec = tf.zeros([0], kernel.dtype)  # a placeholder: no recurrent bias
    # per-gate recurrent masks: G products per step in the loop; the gradient after it
    in_loop = kernel_grads_in_loop(spec, xla) and (mr is None or mr.shape.rank == 2)
    outs, final = _loop(spec, act, ract, masks, (inputs, product), kernel, recurrent, bias_in,
                        bias_rec, xs, list(states), in_loop)  # fmt: skip
    if outs is None:  # no mask: the last output is the final state
        return final[0], final
    outs.set_shape([xs.shape[0], x.shape[0], spec.units])
    output = tf.transpose(outs, [1, 0, 2]) if spec.return_sequences else outs[-1]
    return output, final


# -- the loops -----------------------------------------------------------------------------------


def _iterations(time) -> dict:
    """``maximum_iterations`` only where the length is not known when tracing: with a
    static length it adds a comparison and a ``LogicalAnd`` to every step's condition,
    and bounds nothing the condition does not."""
    return {} if isinstance(time, int) else {"maximum_iterations": time}


def _first_old_kept(masked: bool) -> int:
    """The first old state a step keeps: without a mask the old ``h`` is the previous
    output, not kept twice."""
    return 0 if masked else 1


def _saved_widths(spec: LayerSpec, masked: bool) -> list[int]:
    """Last-axis sizes of what a step keeps, side by side in one array: the residuals of
    :func:`multirnn.builtin_cells.saving_step`, then the old states from
    :func:`_first_old_kept` on."""
    olds = spec.num_states - _first_old_kept(masked)
    return builtin_cells.residual_widths(spec) + [spec.units] * olds


def _forward_loop(spec, act, ract, products, W, U, b_in, b_rec, xs, masks, states):
    """(outputs (time, batch, units), final states, what every step keeps (time, batch,
    sum of :func:`_saved_widths`)).

    Each step writes what it keeps as one array: one write per step, one stack after the
    loop and one read per step of the backward loop (plus the old ``h`` where, without a
    mask, the backward step needs it), where separate arrays took one each (measured in
    ``benchmarks/notes.md``).
    """
    zero_output = spec.zero_output_for_mask
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    ops = array_api(dtype)
    inputs = tf.TensorArray(dtype, size=time).unstack(xs)
    keeps = None if masks is None else tf.TensorArray(masks.dtype, size=time).unstack(masks)
    first_saved = _first_old_kept(masks is not None)
    in_product, product = products

    def body(t, old, outs, saved, previous=None):
        new, res = builtin_cells.saving_step(ops, spec, act, ract, W, U, b_in, b_rec,
                                             inputs.read(t), old, product, in_product)  # fmt: skip
        for n, s in zip(new, old):
            n.set_shape(s.shape)
        if keeps is None:
            kept, out = new, new[0]
        else:
            keep = keeps.read(t)
            kept = [tf.where(keep, n, s) for n, s in zip(new, old)]
            out = tf.where(keep, new[0], tf.zeros_like(previous) if zero_output else previous)
        pieces = [*res, *old[first_saved:]]
        saved = saved.write(t, pieces[0] if len(pieces) == 1 else tf.concat(pieces, axis=1))
        outs = outs.write(t, out)
        return (t + 1, kept, outs, saved, *(() if keeps is None else (out,)))

    start = (
        tf.constant(0),
        list(states),
        tf.TensorArray(dtype, size=time),
        tf.TensorArray(dtype, size=time),
    )
    if keeps is not None:  # the previous output, repeated where the mask skips a step
        start += (tf.zeros_like(states[0]),)
    _, final, outs, saved, *_ = tf.while_loop(
        lambda t, *_: t < time, body, start, **_iterations(time)
    )
    # dense tensors, not TensorArrays, cross into the backward pass: a SavedModel saves
    # the gradient function too, and cannot save a capture of a TensorArray
    return outs.stack(), final, saved.stack()


def kernel_grads_in_loop(spec: LayerSpec, xla: bool) -> bool:
    """Whether the backward loop adds up the recurrent kernel's gradient step by step (the
    input kernel's is always one product over all steps after it).

    In the loop was measured faster (``benchmarks/notes.md``) for the LSTM and the GRU with
    ``reset_after=True`` in a plain graph; after it for the GRU with ``reset_after=False``
    (two products and a concatenation per step), the SimpleRNN, and every layer under XLA,
    which runs a loop body's products one after another. Only the recurrent kernel's is
    added up in the loop, which keeps the cores about equally busy."""
    if xla:
        return False
    return spec.layer == "LSTM" or (spec.layer == "GRU" and spec.reset_after)


def _loop(spec, act, ract, masks, products, W, U, b_in, b_rec, xs, states, in_loop):
    """(stacked outputs, or None when only the final states are needed; final states).
    ``products``: the input and recurrent :class:`~multirnn.builtin_cells.GateProduct`
    with their dropout masks (the input's None without per-gate masks).

    Without a mask and without ``return_sequences`` the layer's output is the final ``h``:
    the outputs then stay inside, and the backward loop reads no output gradients."""
    n = len(states)
    sequences = spec.return_sequences or masks is not None

    @tf.custom_gradient
    def loop(W, U, b_in, b_rec, xs, *states):
        outs, final, saved = _forward_loop(spec, act, ract, products, W, U, b_in, b_rec, xs,
                                           masks, states)  # fmt: skip

        def backward(*grads):
            d_outs, d_final = (grads[0], grads[1:]) if sequences else (None, grads)
            if sequences and d_outs is None:
                d_outs = tf.zeros_like(outs)
            d_final = [tf.zeros_like(s) if d is None else d for d, s in zip(d_final, final)]
            # without a mask, each step's old h is the output before it
            h_prev = None if masks is not None else tf.concat([states[0][None], outs[:-1]], 0)
            return _backward(spec, products, W, U, b_rec, xs, masks, h_prev, saved, d_outs,
                             d_final, in_loop)  # fmt: skip

        return ((outs,) if sequences else ()) + tuple(final), backward

    results = loop(W, U, b_in, b_rec, xs, *states)
    if sequences:
        return results[0], list(results[1 : 1 + n])
    return None, list(results[:n])


def _backward(spec, products, W, U, b_rec, xs, masks, h_prev, saved, d_outs, d_final,
              in_loop):  # fmt: skip
    """The reverse loop; ``h_prev``: every step's old ``h`` (None when ``saved`` keeps
    it); ``d_outs`` is None when the outputs were not returned; ``in_loop``: add up the
    recurrent kernel's gradient inside it."""
    zero_output = spec.zero_output_for_mask
    ops = array_api(xs.dtype)
    inputs, product = products
    UT = tf.transpose(U)
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    widths = _saved_widths(spec, masks is not None)
    count = builtin_cells.residual_count(spec)
    # a step's old h: the GRU's backward step and the recurrent kernel's gradient in the
    # loop read it; the LSTM's step reads its old c, the SimpleRNN's neither
    needs_h = spec.layer == "GRU" or in_loop

    offsets = [sum(widths[:i]) for i in range(len(widths))]

    def unpack(kept, h, split):
        """(residuals, old states) of one step, or of every step, from what it kept and
        its old ``h`` (used only without a mask: with one, ``kept`` holds it). ``split``:
        one op for every piece (a step); else a slice for each, so that a graph computes
        only the pieces it uses (the stacks after the loop)."""
        if len(widths) == 1:
            pieces = [kept]
        elif split:
            pieces = tf.split(kept, widths, axis=-1)
        else:
            pieces = [kept[..., o : o + w] for o, w in zip(offsets, widths)]
        return pieces[:count], pieces[count:] if masks is not None else [h, *pieces[count:]]

    # Steps are read from the dense stacks by gather, one op each (a slice ``a[t]`` with a
    # tensor ``t`` takes four); unstacking them into TensorArrays would copy every saved
    # activation once more. This loop is not differentiated again, so the reads' own
    # gradients never matter.
    separate = spec.layer == "GRU" and spec.reset_after  # d rec differs from d xp

    def body(t, d_states, d_kernels, dxps, *carried):
        # carried: the recurrent-side gradients (GRU, reset_after) and the output gradient
        # passed on over skipped steps (with a mask), each only where it exists
        drecs = carried[0] if separate else None
        d_previous = carried[-1] if masks is not None else None
        if masks is None:
            d_new = list(d_states)
            if d_outs is not None:
                d_new[0] = d_new[0] + tf.gather(d_outs, t)
            passed = None
        else:
            d_out = tf.gather(d_outs, t) + d_previous
            keep = tf.gather(masks, t)
            zeros = tf.zeros_like(d_out)
            d_new = [tf.where(keep, d, zeros) for d in d_states]
            d_new[0] = d_new[0] + tf.where(keep, d_out, zeros)
            passed = [tf.where(keep, zeros, d) for d in d_states]
            d_previous = zeros if zero_output else tf.where(keep, zeros, d_out)
        h = tf.gather(h_prev, t) if h_prev is not None and needs_h else None
        res, old = unpack(tf.gather(saved, t), h, split=True)
        dxp, drec, d_old = builtin_cells.step_back(ops, spec, UT, res, old, d_new, product)
        if passed is not None:
            d_old = [a + b for a, b in zip(d_old, passed)]
        for d, s in zip(d_old, d_states):
            d.set_shape(s.shape)
        if in_loop:
            d_U = builtin_cells.recurrent_kernel_grad(
                ops, spec, old[0], res, dxp, drec, outer=_transposed_product, product=product
            )
            d_kernels = [d_kernels[0] + d_U]
        carried = (drecs.write(t, drec),) if separate else ()
        if masks is not None:
            carried += (d_previous,)
        return (t - 1, d_old, d_kernels, dxps.write(t, dxp), *carried)

    kernels = [tf.zeros_like(U)] if in_loop else []
    start = (time - 1, list(d_final), kernels, tf.TensorArray(dtype, size=time))
    if separate:
        start += (tf.TensorArray(dtype, size=time),)
    if masks is not None:
        start += (tf.zeros_like(d_final[0]),)
    _, d_states, d_kernels, dxps, *carried = tf.while_loop(
        lambda t, *_: t >= 0, body, start, **_iterations(time)
    )
    drec = carried[0].stack() if separate else None
    dxp = dxps.stack()
    if in_loop:
        d_kernels = [builtin_cells.input_kernel_grad(ops, xs, dxp, inputs), *d_kernels]
    else:
        residuals, olds = unpack(saved, h_prev, split=False)
        d_kernels = builtin_cells.kernel_grads(ops, spec, xs, olds[0], residuals, dxp, drec,
                                               product, inputs)  # fmt: skip
    d_b_in, d_b_rec, d_xs = builtin_cells.bias_and_input_grads(ops, W, b_rec, dxp, drec,
                                                               inputs)  # fmt: skip
    return [*d_kernels, d_b_in, d_b_rec, d_xs, *d_states]


def _transposed_product(ops, a, b):
    """``a^T b`` of one step's (batch, .) arrays, the transpose folded into the product."""
    return tf.matmul(a, b, transpose_a=True)
