"""The generic path: input projections of all steps in one product, then a time loop with
one recurrent product and the cell's elementwise work per step.

It serves every configuration the fused kernels cannot (the documented hard_sigmoid gates,
GRU with reset_after=False, arbitrary masks, recurrent dropout, user activations).
"""

from __future__ import annotations

import torch

from multirnn import builtin_cells
from multirnn_torch import backprop
from multirnn_torch.backprop import array_api

__all__ = ["array_api", "generic", "project_inputs", "traced_loop"]


def traced_loop(step, xs, keeps, states, zero_output: bool = False):
    """The time loop as one ``scan`` operator, for ``torch.export``: a Python loop would be
    unrolled into the program and fix the number of steps, a scan keeps batch and time
    dynamic. (``torch.compile`` traces the Python loop: its inductor backend does not
    compile every scan yet, and a new sequence length is a recompile there, not an error.)

    ``step(x_t, states) -> (output, new states)``; ``xs`` and
    ``keeps`` (the mask, (time, batch) booleans, or None) are time-major. Masked steps keep
    the states and show zeros (``zero_output``) or the previous output. Returns the
    outputs (batch, time, units) and the final states."""
    from torch._higher_order_ops.scan import scan  # the operator torch.export lowers

    track = keeps is not None and not zero_output  # the previous output is carried too

    def combine(carry, inputs):
        states, previous = (carry[:-1], carry[-1]) if track else (carry, None)
        x_t, keep = inputs if keeps is not None else (inputs, None)
        output, new = step(x_t, list(states))
        if keep is not None:
            keep = keep[:, None]
            new = [torch.where(keep, n, s) for n, s in zip(new, states)]
            output = torch.where(keep, output, previous if track else 0.0)
        # no output of a scan step may alias another: the carry and the sequence get copies
        new = [n.clone() for n in new]
        return (*new, output.clone()) if track else tuple(new), output.clone()

    # the initial states may be one tensor twice (zeros for h and c): a carry may not alias
    start = tuple(s.clone() for s in states) + ((torch.zeros_like(states[0]),) if track else ())
    carry, ys = scan(combine, start, xs if keeps is None else (xs, keeps))
    return ys.transpose(0, 1), list(carry[:-1] if track else carry)


def project_inputs(spec, kernel, bias_in, x, mi) -> torch.Tensor:
    """All steps' input products at once, time-major: (time, batch, G*units), contiguous so
    that every step reads one contiguous slice."""
    batch, time, dim = x.shape
    u, gates = spec.units, spec.gates
    x = x.transpose(0, 1)  # (time, batch, dim)
    if mi is None or mi.dim() == 2:
        xin = x if mi is None else x * mi[None]
        flat = xin.reshape(time * batch, dim)
        xp = flat @ kernel if bias_in is None else torch.addmm(bias_in, flat, kernel)
        return xp.view(time, batch, gates * u)
    parts = [
        (x * mi[g][None]).reshape(time * batch, dim) @ kernel[:, g * u : (g + 1) * u]
        for g in range(gates)
    ]
    xp = torch.cat(parts, dim=1)
    if bias_in is not None:
        xp = xp + bias_in
    return xp.view(time, batch, gates * u)


def generic(spec, weights, x, mask, states, mi, mr, activation, cache=None):
    """``cache``: the layer's ``kernels.WeightLayouts``, which keeps the hand-written
    loop's weight layout between calls that take no gradient."""
    kernel, U, *rest = weights
    bias = rest[0] if rest else None
    batch = x.shape[0]
    u = spec.units
    act = activation(spec.activation)
    ract = activation(spec.recurrent_activation) if spec.recurrent_activation else None
    if bias is None:
        bias_in = bias_rec = None
    elif spec.reset_after:
        bias_in, bias_rec = bias[0], bias[1]
    else:
        bias_in, bias_rec = bias, None
    if spec.go_backwards:
        x = x.flip(1)
        mask = None if mask is None else mask.flip(1)
    if states is None:
        zeros = x.new_zeros(batch, u)
        states = [zeros] * spec.num_states
    h0 = states[0]
    c0 = states[1] if spec.layer == "LSTM" else None
    if mr is not None and mr.dim() == 3 and spec.gates == 1:
        mr = mr[0]  # one gate: its mask is the shared one
    if backprop.supported(spec, x.device.type):

        def layout(kernel=kernel, U=U, bias_in=bias_in, bias_rec=bias_rec):
            return backprop.internal_weights(spec, kernel, U, bias_in, bias_rec)

        internal = layout() if cache is None else cache.get("internal", weights, layout)
        kernel, U, bias_in, bias_rec, gate_name, order = internal
        if mr is not None and mr.dim() == 3 and order is not None:  # per gate: the loop's order
            mr = mr[list(order)]
        gate_masks = None
        if mi is None or mi.dim() == 2:  # the loop projects the inputs itself
            x_tm = x.transpose(0, 1) if mi is None else x.transpose(0, 1) * mi[None]
            parts = (x_tm, kernel, bias_in, None)
        else:
            if order is not None:
                mi = mi[list(order)]
            if mi.requires_grad:  # a mask to differentiate: the product on the tape
                parts = (None, None, None, project_inputs(spec, kernel, bias_in, x, mi))
            else:  # the loop projects under each gate's mask, in one batched product
                parts, gate_masks = (x.transpose(0, 1), kernel, bias_in, None), mi
        y, final = backprop.scan(spec, gate_name, *parts, U, bias_rec, h0, c0, mask, mr,
                                 gate_masks)  # fmt: skip
    else:
        xp = project_inputs(spec, kernel, bias_in, x, mi)
        y, final = _loop(spec, xp, U, bias_rec, h0, c0, mask, mr, act, ract)
    if mask is not None:
        # The carried state h is the previous output at masked steps; before the first
        # unmasked step the output is zero (or always zero with zero_output_for_mask).
        shown = mask if spec.zero_output_for_mask else torch.cumsum(mask, dim=1) > 0
        y = y * shown[..., None].to(y.dtype)
    output = y if spec.return_sequences else y[:, -1]
    return output, final


def _loop(spec, xp, U, bias_rec, h, c, mask, mr, act, ract):
    """The time loop on the autograd tape (user activations, per-gate recurrent masks),
    running the shared step of ``multirnn.builtin_cells``."""
    product = builtin_cells.GateProduct(array_api(), U, spec.units, spec.gates, mr)
    states = [h] if c is None else [h, c]
    if torch.compiler.is_exporting():

        def step(xp_t, states):
            new = builtin_cells.transition(spec, act, ract, xp_t, states, product, bias_rec)
            return new[0], new

        return traced_loop(step, xp, None if mask is None else mask.transpose(0, 1), states)
    outputs = []
    # unbind, not xp[t]: each indexing's backward would write a zero-filled copy of the
    # whole sequence (a training step quadratic in its length); unbind's stacks once
    for t, xp_t in enumerate(xp.unbind(0)):
        new = builtin_cells.transition(spec, act, ract, xp_t, states, product, bias_rec)
        if mask is None:
            states = new
        else:
            keep = mask[:, t, None]
            states = [torch.where(keep, n, s) for n, s in zip(new, states)]
        outputs.append(states[0])
    return torch.stack(outputs, dim=1), states
