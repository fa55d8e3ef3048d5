"""The generic path's time loop with a hand-written backward pass (``jax.custom_vjp``).

Differentiating ``lax.scan`` automatically accumulates every weight gradient inside the
reverse loop, one small product per step and weight. Here the forward loop keeps each
step's activations and states; the backward loop only walks the recurrence (one product
with ``U^T`` per step, two for the GRU with ``reset_after=False``) and emits the
pre-activation gradients of every step; the weight and input gradients are then single
large products over all steps.

The step, its residuals, its backward step and the final weight products are the shared
cell maths of ``multirnn.builtin_cells`` (every named activation's derivative written as a
function of its output, which is what the forward pass keeps); this module holds the
loops. Covered: the named activations, any mask, dropout on the inputs and on the
recurrent state (one mask shared by the gates, or one per gate: a shared input mask is
applied to the inputs before the loop, the others in the step and its backward step).
Other activations take the automatically differentiated scan (``multirnn_jax.scan``). A
``custom_vjp`` has no forward-mode rule, so ``jax.jvp``/``jacfwd``/``hessian`` need
:func:`multirnn_jax.kernels.autodiff_only`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from multirnn import builtin_cells
from multirnn.spec import LayerSpec
from multirnn_jax.scan import vary_like

Array = jax.Array


def supported(spec: LayerSpec) -> bool:
    """Whether the hand-written backward pass applies to this layer."""
    return builtin_cells.differentiable(spec)


def generic(spec, weights, x, mask, states, mi, mr, act, ract):
    """Same contract as ``multirnn_jax.scan.generic`` (stepwise input products)."""
    from multirnn_jax.scan import split_bias

    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    shared = mi is not None and mi.ndim == 2
    xs = jnp.swapaxes(x * mi[:, None, :] if shared else x, 0, 1)
    mi = None if shared else mi  # per gate: the step applies them
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
        xs, masks, mi, mr, states,
    )  # fmt: skip
    outs, final = _loop(spec, act, ract, kernel, recurrent, bias_in, bias_rec, xs, masks,
                        (mi, mr), states)  # fmt: skip
    output = jnp.swapaxes(outs, 0, 1) if spec.return_sequences else outs[-1]
    return output, final


# -- the loop --------------------------------------------------------------------------------------


def _products(spec, W, U, dropout):
    """The input and recurrent products under the per-gate input and the recurrent
    dropout masks ``dropout`` (each None: none)."""
    mi, mr = dropout
    inputs = None if mi is None else builtin_cells.GateProduct(jnp, W, spec.units, spec.gates, mi)
    return inputs, builtin_cells.GateProduct(jnp, U, spec.units, spec.gates, mr)


def _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, dropout, states):
    zero_output = spec.zero_output_for_mask
    inputs, product = _products(spec, W, U, dropout)

    def body(carry, step):
        old, previous = carry
        x_t, keep = step
        new, residuals = builtin_cells.saving_step(jnp, spec, act, ract, W, U, b_in, b_rec,
                                                   x_t, old, product, inputs)  # fmt: skip
        if keep is None:
            return (new, new[0]), (new[0], old, residuals)
        kept = [jnp.where(keep, n, s) for n, s in zip(new, old)]
        out = jnp.where(keep, new[0], 0.0 if zero_output else previous)
        return (kept, out), (out, old, residuals)

    start = (states, jnp.zeros_like(states[0]))
    (final, _), (outs, olds, residuals) = lax.scan(body, start, (xs, masks))
    return outs, final, olds, residuals


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, dropout, states):
    outs, final, _, _ = _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs, masks, dropout,
                                      states)  # fmt: skip
    return outs, final


def _loop_fwd(spec, act, ract, W, U, b_in, b_rec, xs, masks, dropout, states):
    outs, final, olds, residuals = _forward_loop(spec, act, ract, W, U, b_in, b_rec, xs,
                                                 masks, dropout, states)  # fmt: skip
    return (outs, final), (W, U, b_rec, xs, masks, dropout, olds, residuals)


def _loop_bwd(spec, act, ract, saved, cotangents):
    W, U, b_rec, xs, masks, dropout, olds, residuals = saved
    d_outs, d_final = cotangents
    UT = U.T
    inputs, product = _products(spec, W, U, dropout)
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
        dxp, drec, d_old = builtin_cells.step_back(jnp, spec, UT, res, old, d_new, product)
        d_old = [a + b for a, b in zip(d_old, passed)]
        return (d_old, d_previous), (dxp, drec)

    d_final = vary_like(d_final, d_outs, U, masks, olds, residuals)  # under shard_map
    start = (d_final, jnp.zeros_like(d_outs[0]))
    (d_states, _), (dxp, drec) = lax.scan(
        body, start, (d_outs, masks, olds, residuals), reverse=True
    )
    d_W, d_U, d_b_in, d_b_rec, d_xs = builtin_cells.weight_grads(
        jnp, spec, W, b_rec, xs, olds[0], residuals, dxp, drec, product, inputs
    )
    return d_W, d_U, d_b_in, d_b_rec, d_xs, None, (None, None), d_states


_loop.defvjp(_loop_fwd, _loop_bwd)
