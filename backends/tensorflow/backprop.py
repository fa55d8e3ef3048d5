"""The generic path's time loop with a hand-written backward pass (``tf.custom_gradient``).

Differentiating a ``tf.while_loop`` automatically replays every op of the body in reverse,
popping each intermediate from a stack, and accumulates the weight gradients inside the
reverse loop with one small product per step and weight. Here the forward loop keeps each
step's activations and old states; the backward loop only walks the recurrence (one product
with ``U^T`` per step, two for the GRU with ``reset_after=False``) and records the
pre-activation gradients of every step; the weight and input gradients are then single
large products over all steps.

Every named activation's derivative is written as a function of its output, which is what
the forward pass keeps. Covered: the named activations, any mask, shared input dropout
(applied outside, so autodiff handles it), no recurrent dropout, no ``unroll``. Everything
else takes the automatically differentiated loop (``multirnn_tensorflow.scan``).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from multirnn.spec import LayerSpec

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _inside(y, slope):
    return tf.where((y > 0.0) & (y < 1.0), tf.constant(slope, y.dtype), tf.zeros_like(y))


#: activation name -> derivative as a function of the activation's output y
DERIVATIVES: dict[str, Callable] = {
    "tanh": lambda y: 1.0 - y * y,
    "sigmoid": lambda y: y * (1.0 - y),
    "exponential": lambda y: y,  # exp' = exp
    "hard_sigmoid": lambda y: _inside(y, 0.2),
    "hard_sigmoid_relu6": lambda y: _inside(y, 1.0 / 6.0),
    "relu": lambda y: tf.cast(y > 0, y.dtype),
    "linear": tf.ones_like,
    "softsign": lambda y: tf.square(1.0 - tf.abs(y)),
    "softplus": lambda y: -tf.math.expm1(-y),
    "elu": lambda y: tf.where(y > 0, tf.ones_like(y), y + 1.0),
    "selu": lambda y: tf.where(
        y > 0,
        tf.fill(tf.shape(y), tf.constant(_SELU_SCALE, y.dtype)),
        y + _SELU_SCALE * _SELU_ALPHA,
    ),
}


def supported(spec: LayerSpec, mi, mr) -> bool:
    """Whether the hand-written backward pass applies to this call."""
    names = [spec.activation] + ([spec.recurrent_activation] if spec.recurrent_activation else [])
    return (
        all(isinstance(n, str) and n in DERIVATIVES for n in names)
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


# -- one step, forward ---------------------------------------------------------------------------


def _residual_count(spec: LayerSpec) -> int:
    if spec.layer == "SimpleRNN":
        return 1
    if spec.layer == "LSTM":
        return 2
    return 4 if spec.reset_after else 3


def _step(spec, act, ract, W, U, b_in, b_rec, x_t, states):
    """(new states, residuals) of one step; residuals are what the backward step needs."""
    u = spec.units
    h = states[0]
    xp = tf.matmul(x_t, W) + b_in
    if spec.layer == "SimpleRNN":
        y = act(xp + tf.matmul(h, U))
        return [y], (y,)
    if spec.layer == "LSTM":
        z = xp + tf.matmul(h, U)
        zi, zf, zg, zo = tf.split(z, 4, axis=1)
        i, f, g, o = ract(zi), ract(zf), act(zg), ract(zo)
        c = f * states[1] + i * g
        tc = act(c)
        return [o * tc, c], (tf.concat([i, f, g, o], axis=1), tc)
    if spec.reset_after:
        rec = tf.matmul(h, U)
        if b_rec.shape[0]:
            rec = rec + b_rec
        xz, xr, xh = tf.split(xp, 3, axis=1)
        rz, rr, rh = tf.split(rec, 3, axis=1)
        z, r = ract(xz + rz), ract(xr + rr)
        hh = act(xh + r * rh)
        return [z * h + (1.0 - z) * hh], (z, r, hh, rh)
    rec = tf.matmul(h, U[:, : 2 * u])
    xz, xr, xh = tf.split(xp, 3, axis=1)
    rz, rr = tf.split(rec, 2, axis=1)
    z, r = ract(xz + rz), ract(xr + rr)
    hh = act(xh + tf.matmul(r * h, U[:, 2 * u :]))
    return [z * h + (1.0 - z) * hh], (z, r, hh)


# -- one step, backward --------------------------------------------------------------------------


def _step_back(spec, U, residuals, old, d_new):
    """Gradients of one step: (d pre-activation input side, d recurrent-product outputs or
    None when equal, d old states)."""
    u = spec.units
    dact = DERIVATIVES[spec.activation]
    h = old[0]
    if spec.layer == "SimpleRNN":
        (y,) = residuals
        dz = d_new[0] * dact(y)
        return dz, None, [tf.matmul(dz, U, transpose_b=True)]
    dract = DERIVATIVES[spec.recurrent_activation]
    if spec.layer == "LSTM":
        gates, tc = residuals
        i, f, g, o = tf.split(gates, 4, axis=1)
        dh, dc = d_new
        dc = dc + dh * o * dact(tc)
        dz = tf.concat(
            [dc * g * dract(i), dc * old[1] * dract(f), dc * i * dact(g), dh * tc * dract(o)],
            axis=1,
        )
        return dz, None, [tf.matmul(dz, U, transpose_b=True), dc * f]
    (dh,) = d_new
    if spec.reset_after:
        z, r, hh, rec_h = residuals
        dzg = dh * (h - hh) * dract(z)
        dpre_h = dh * (1.0 - z) * dact(hh)
        dr = dpre_h * rec_h * dract(r)
        dxp = tf.concat([dzg, dr, dpre_h], axis=1)
        drec = tf.concat([dzg, dr, dpre_h * r], axis=1)
        return dxp, drec, [dh * z + tf.matmul(drec, U, transpose_b=True)]
    z, r, hh = residuals
    dzg = dh * (h - hh) * dract(z)
    dpre_h = dh * (1.0 - z) * dact(hh)
    d_rh = tf.matmul(dpre_h, U[:, 2 * u :], transpose_b=True)
    dr = d_rh * h * dract(r)
    dzr = tf.concat([dzg, dr], axis=1)
    dxp = tf.concat([dzr, dpre_h], axis=1)
    return dxp, None, [dh * z + d_rh * r + tf.matmul(dzr, U[:, : 2 * u], transpose_b=True)]


# -- the loops -----------------------------------------------------------------------------------


def _arrays(dtype, time, count):
    return [tf.TensorArray(dtype, size=time) for _ in range(count)]


def _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, states):
    """(outputs (time, batch, units), final states, old states and residuals of every
    step, each stacked along time)."""
    zero_output = spec.zero_output_for_mask
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    inputs = tf.TensorArray(dtype, size=time).unstack(xs)
    keeps = None if masks is None else tf.TensorArray(masks.dtype, size=time).unstack(masks)

    def body(t, old, previous, outs, olds, residuals):
        new, res = _step(spec, act, ract, W, U, b_in, b_rec, inputs.read(t), old)
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
        _arrays(dtype, time, _residual_count(spec)),
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
    u = spec.units
    zero_output = spec.zero_output_for_mask
    time = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
    dtype = xs.dtype
    upstream = tf.TensorArray(dtype, size=time).unstack(d_outs)
    keeps = None if masks is None else tf.TensorArray(masks.dtype, size=time).unstack(masks)
    separate = spec.layer == "GRU" and spec.reset_after  # d rec differs from d xp
    old_steps = [tf.TensorArray(dtype, size=time).unstack(a) for a in olds]
    residual_steps = [tf.TensorArray(dtype, size=time).unstack(a) for a in residuals]

    def body(t, d_states, d_previous, dxps, drecs):
        d_out = upstream.read(t) + d_previous
        if keeps is None:
            d_new = [d_states[0] + d_out, *d_states[1:]]
            passed = None
            d_previous = tf.zeros_like(d_out)
        else:
            keep = keeps.read(t)
            zeros = tf.zeros_like(d_out)
            d_new = [tf.where(keep, d, zeros) for d in d_states]
            d_new[0] = d_new[0] + tf.where(keep, d_out, zeros)
            passed = [tf.where(keep, zeros, d) for d in d_states]
            d_previous = zeros if zero_output else tf.where(keep, zeros, d_out)
        old = [a.read(t) for a in old_steps]
        res = [a.read(t) for a in residual_steps]
        dxp, drec, d_old = _step_back(spec, U, res, old, d_new)
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
    dxp = dxps.stack()
    h_prev = olds[0]
    d_xs = tf.einsum("tbg,fg->tbf", dxp, W)
    d_W = tf.einsum("tbf,tbg->fg", xs, dxp)
    d_b_in = tf.reduce_sum(dxp, axis=[0, 1])
    if spec.layer == "GRU" and not spec.reset_after:
        r = residuals[1]
        d_U = tf.concat(
            [
                tf.einsum("tbu,tbg->ug", h_prev, dxp[..., : 2 * u]),
                tf.einsum("tbu,tbg->ug", r * h_prev, dxp[..., 2 * u :]),
            ],
            axis=1,
        )
    else:
        drec = drecs.stack() if separate else dxp
        d_U = tf.einsum("tbu,tbg->ug", h_prev, drec)
    if b_rec.shape[0]:
        d_b_rec = tf.reduce_sum(drecs.stack() if separate else dxp, axis=[0, 1])
    else:
        d_b_rec = tf.zeros_like(b_rec)
    return [d_W, d_U, d_b_in, d_b_rec, d_xs, *d_states]
