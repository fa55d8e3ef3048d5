"""The generic path's time loop with a hand-written backward pass (``jax.custom_vjp``).

Differentiating ``lax.scan`` automatically accumulates every weight gradient inside the
reverse loop, one small product per step and weight. Here the forward loop keeps each
step's activations and states; the backward loop only walks the recurrence (one product
with ``U^T`` per step, two for the GRU with ``reset_after=False``) and emits the
pre-activation gradients of every step; the weight and input gradients are then single
large products over all steps.

Every named activation's derivative is written as a function of its output, which is what
the forward pass keeps. Covered: the named activations, any mask, shared input dropout
(applied outside, so autodiff handles it), no recurrent dropout. Everything else takes the
automatically differentiated scan (``multirnn_jax.scan``). A ``custom_vjp`` has no
forward-mode rule, so ``jax.jvp``/``jacfwd``/``hessian`` need
:func:`multirnn_jax.kernels.autodiff_only`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from multirnn_jax.scan import vary_like

import jax
import jax.numpy as jnp
from jax import lax
from multirnn.spec import LayerSpec

Array = jax.Array

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _inside(y, slope):
    return jnp.where((y > 0.0) & (y < 1.0), slope, 0.0).astype(y.dtype)


#: activation name -> derivative as a function of the activation's output y
DERIVATIVES: dict[str, Callable[[Array], Array]] = {
    "tanh": lambda y: 1.0 - y * y,
    "sigmoid": lambda y: y * (1.0 - y),
    "exponential": lambda y: y,  # exp' = exp
    "hard_sigmoid": lambda y: _inside(y, 0.2),
    "hard_sigmoid_relu6": lambda y: _inside(y, 1.0 / 6.0),
    "relu": lambda y: (y > 0).astype(y.dtype),
    "linear": jnp.ones_like,
    "softsign": lambda y: jnp.square(1.0 - jnp.abs(y)),
    "softplus": lambda y: -jnp.expm1(-y),
    "elu": lambda y: jnp.where(y > 0, 1.0, y + 1.0).astype(y.dtype),
    "selu": lambda y: jnp.where(y > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA).astype(y.dtype),
}


def supported(spec: LayerSpec, mi, mr) -> bool:
    """Whether the hand-written backward pass applies to this call."""
    names = [spec.activation] + ([spec.recurrent_activation] if spec.recurrent_activation else [])
    return (
        all(isinstance(n, str) and n in DERIVATIVES for n in names)
        and mr is None
        and (mi is None or mi.ndim == 2)
    )


def generic(spec, weights, x, mask, states, mi, act, ract):
    """Same contract as ``multirnn_jax.scan.generic`` (stepwise input products)."""
    from multirnn_jax.scan import split_bias

    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    xs = jnp.swapaxes(x if mi is None else x * mi[:, None, :], 0, 1)
    masks = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]
    if spec.go_backwards:
        xs = xs[::-1]
        masks = None if masks is None else masks[::-1]
    if bias_rec is None:
        bias_rec = jnp.zeros((0,), kernel.dtype)  # a placeholder leaf: no recurrent bias
    # Under shard_map every differentiable input of the custom_vjp varies over the same mesh
    # axes, as its backward pass's results do; JAX differentiates the casts (into sums over
    # the devices for replicated weights), as it does for its own operations.
    kernel, recurrent, bias_in, bias_rec, *states = vary_like(
        [kernel, recurrent, bias_in, bias_rec, *states], kernel, recurrent, bias_in, bias_rec,
        xs, masks, states,
    )  # fmt: skip
    outs, final = _loop(spec, act, ract, kernel, recurrent, bias_in, bias_rec, xs, masks,
                        states)  # fmt: skip
    output = jnp.swapaxes(outs, 0, 1) if spec.return_sequences else outs[-1]
    return output, final


# -- one step, forward ---------------------------------------------------------------------------


def _step(spec, act, ract, W, U, b_in, b_rec, x_t, states):
    """(new states, residuals) of one step; residuals are what the backward step needs."""
    u = spec.units
    h = states[0]
    xp = x_t @ W + b_in
    if spec.layer == "SimpleRNN":
        y = act(xp + h @ U)
        return [y], (y,)
    if spec.layer == "LSTM":
        z = xp + h @ U
        i, f, o = ract(z[:, :u]), ract(z[:, u : 2 * u]), ract(z[:, 3 * u :])
        g = act(z[:, 2 * u : 3 * u])
        c = f * states[1] + i * g
        tc = act(c)
        return [o * tc, c], (jnp.concatenate([i, f, g, o], axis=1), tc)
    if spec.reset_after:
        rec = h @ U
        if b_rec.shape[0]:
            rec = rec + b_rec
        z = ract(xp[:, :u] + rec[:, :u])
        r = ract(xp[:, u : 2 * u] + rec[:, u : 2 * u])
        hh = act(xp[:, 2 * u :] + r * rec[:, 2 * u :])
        return [z * h + (1.0 - z) * hh], (z, r, hh, rec[:, 2 * u :])
    rec = h @ U[:, : 2 * u]
    z = ract(xp[:, :u] + rec[:, :u])
    r = ract(xp[:, u : 2 * u] + rec[:, u:])
    hh = act(xp[:, 2 * u :] + (r * h) @ U[:, 2 * u :])
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
        return dz, None, [dz @ U.T]
    dract = DERIVATIVES[spec.recurrent_activation]
    if spec.layer == "LSTM":
        gates, tc = residuals
        i, f, g, o = (gates[:, k * u : (k + 1) * u] for k in range(4))
        dh, dc = d_new
        dc = dc + dh * o * dact(tc)
        dz = jnp.concatenate(
            [dc * g * dract(i), dc * old[1] * dract(f), dc * i * dact(g), dh * tc * dract(o)],
            axis=1,
        )
        return dz, None, [dz @ U.T, dc * f]
    (dh,) = d_new
    if spec.reset_after:
        z, r, hh, rec_h = residuals
        dzg = dh * (h - hh) * dract(z)
        dpre_h = dh * (1.0 - z) * dact(hh)
        dr = dpre_h * rec_h * dract(r)
        dxp = jnp.concatenate([dzg, dr, dpre_h], axis=1)
        drec = jnp.concatenate([dzg, dr, dpre_h * r], axis=1)
        return dxp, drec, [dh * z + drec @ U.T]
    z, r, hh = residuals
    dzg = dh * (h - hh) * dract(z)
    dpre_h = dh * (1.0 - z) * dact(hh)
    d_rh = dpre_h @ U[:, 2 * u :].T
    dr = d_rh * h * dract(r)
    dzr = jnp.concatenate([dzg, dr], axis=1)
    dxp = jnp.concatenate([dzr, dpre_h], axis=1)
    return dxp, None, [dh * z + d_rh * r + dzr @ U[:, : 2 * u].T]


# -- the loop --------------------------------------------------------------------------------------


def _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, states):
    zero_output = spec.zero_output_for_mask

    def body(carry, step):
        old, previous = carry
        x_t, keep = step
        new, residuals = _step(spec, act, ract, W, U, b_in, b_rec, x_t, old)
        if keep is None:
            return (new, new[0]), (new[0], old, residuals)
        kept = [jnp.where(keep, n, s) for n, s in zip(new, old)]
        out = jnp.where(keep, new[0], 0.0 if zero_output else previous)
        return (kept, out), (out, old, residuals)

    start = (states, jnp.zeros_like(states[0]))
    (final, _), (outs, olds, residuals) = lax.scan(body, start, (xs, masks))
    return outs, final, olds, residuals


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, states):
    outs, final, _, _ = _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, states)
    return outs, final


def _loop_fwd(spec, act, ract, W, U, b_in, b_rec, xs, masks, states):
    outs, final, olds, residuals = _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs,
                                                 masks, states)  # fmt: skip
    return (outs, final), (W, U, b_rec, xs, masks, olds, residuals)


def _loop_bwd(spec, act, ract, saved, cotangents):
    W, U, b_rec, xs, masks, olds, residuals = saved
    d_outs, d_final = cotangents
    u = spec.units
    zero_output = spec.zero_output_for_mask

    def body(carry, step):
        d_states, d_previous = carry
        d_out, keep, old, res = step
        d_out = d_out + d_previous
        if keep is None:
            d_new = [d_states[0] + d_out, *d_states[1:]]
            passed = [jnp.zeros_like(d) for d in d_states]
            d_previous = jnp.zeros_like(d_out)
        else:
            d_new = [jnp.where(keep, d, 0.0) for d in d_states]
            d_new[0] = d_new[0] + jnp.where(keep, d_out, 0.0)
            passed = [jnp.where(keep, 0.0, d) for d in d_states]
            d_previous = jnp.zeros_like(d_out) if zero_output else jnp.where(keep, 0.0, d_out)
        dxp, drec, d_old = _step_back(spec, U, res, old, d_new)
        d_old = [a + b for a, b in zip(d_old, passed)]
        return (d_old, d_previous), (dxp, drec)

    d_final = vary_like(d_final, d_outs, U, masks, olds, residuals)  # under shard_map
    start = (d_final, jnp.zeros_like(d_outs[0]))
    (d_states, _), (dxp, drec) = lax.scan(
        body, start, (d_outs, masks, olds, residuals), reverse=True
    )
    h_prev = olds[0]
    d_xs = dxp @ W.T
    d_W = jnp.einsum("tbf,tbg->fg", xs, dxp)
    d_b_in = dxp.sum(axis=(0, 1))
    if spec.layer == "GRU" and not spec.reset_after:
        r = residuals[1]
        d_U = jnp.concatenate(
            [
                jnp.einsum("tbu,tbg->ug", h_prev, dxp[..., : 2 * u]),
                jnp.einsum("tbu,tbg->ug", r * h_prev, dxp[..., 2 * u :]),
            ],
            axis=1,
        )
    else:
        drec = dxp if drec is None else drec
        d_U = jnp.einsum("tbu,tbg->ug", h_prev, drec)
    d_b_rec = drec.sum(axis=(0, 1)) if b_rec.shape[0] else jnp.zeros_like(b_rec)
    return d_W, d_U, d_b_in, d_b_rec, d_xs, None, d_states


_loop.defvjp(_loop_fwd, _loop_bwd)
