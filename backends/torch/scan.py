"""The generic path: input projections of all steps in one product, then a time loop with
one recurrent product and the cell's elementwise work per step.

It serves every configuration the fused kernels cannot (the documented hard_sigmoid gates,
GRU with reset_after=False, arbitrary masks, recurrent dropout, user activations).
"""

from __future__ import annotations

from multirnn_torch import backprop

import torch


def _rec_weights(U: torch.Tensor, gates: int, units: int) -> torch.Tensor:
    """(G, units, units): one recurrent block per gate, for per-gate dropout masks."""
    return U.reshape(units, gates, units).permute(1, 0, 2)


class _Recurrent:
    """``(h * mask_g) U_g`` for the first ``n`` gates, shared or per-gate masks."""

    def __init__(self, U, mr, gates, units):
        self.U, self.mr, self.u = U, mr, units
        self.per_gate = mr is not None and mr.dim() == 3
        self.blocks = _rec_weights(U, gates, units) if self.per_gate else None

    def __call__(self, h: torch.Tensor, n: int, first: int = 0) -> torch.Tensor:
        u = self.u
        if not self.per_gate:
            hin = h if self.mr is None else h * self.mr
            return hin @ self.U[:, first * u : (first + n) * u]
        hin = h[None] * self.mr[first : first + n]
        out = torch.bmm(hin, self.blocks[first : first + n])  # (n, B, u)
        return out.permute(1, 0, 2).reshape(h.shape[0], n * u)

    def masked_h(self, h: torch.Tensor, gate: int) -> torch.Tensor:
        if self.mr is None:
            return h
        return h * (self.mr[gate] if self.per_gate else self.mr)


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


def generic(spec, weights, x, mask, states, mi, mr, activation):
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
    if backprop.supported(spec, mr):
        kernel, U, bias_in, bias_rec, gate_name, order = backprop.internal_weights(
            spec, kernel, U, bias_in, bias_rec
        )
        if mi is None or mi.dim() == 2:  # the loop projects the inputs itself
            x_tm = x.transpose(0, 1) if mi is None else x.transpose(0, 1) * mi[None]
            parts = (x_tm, kernel, bias_in, None)
        else:
            if order is not None:
                mi = mi[list(order)]
            parts = (None, None, None, project_inputs(spec, kernel, bias_in, x, mi))
        y, final = backprop.scan(spec, gate_name, *parts, U, bias_rec, h0, c0, mask, mr)
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
    """The time loop on the autograd tape (user activations, per-gate recurrent masks)."""
    u = spec.units
    rec = _Recurrent(U, mr, spec.gates, u)
    outputs = []
    for t in range(xp.shape[0]):
        xt = xp[t]
        if spec.layer == "LSTM":
            z = xt + rec(h, 4)
            zi, zf, zc, zo = z.chunk(4, dim=1)
            c_new = ract(zf) * c + ract(zi) * act(zc)
            h_new = ract(zo) * act(c_new)
        elif spec.layer == "GRU":
            xz, xr, xh = xt.chunk(3, dim=1)
            if spec.reset_after:
                rz, rr, rh = rec(h, 3).chunk(3, dim=1)
                if bias_rec is not None:
                    brz, brr, brh = bias_rec.chunk(3)
                    rz, rr, rh = rz + brz, rr + brr, rh + brh
                zg = ract(xz + rz)
                r = ract(xr + rr)
                hh = act(xh + r * rh)
            else:
                rz, rr = rec(h, 2).chunk(2, dim=1)
                zg = ract(xz + rz)
                r = ract(xr + rr)
                hh = act(xh + (r * rec.masked_h(h, 2)) @ U[:, 2 * u :])
            h_new = zg * h + (1.0 - zg) * hh
        else:
            h_new = act(xt + rec(h, 1))
        if mask is None:
            h = h_new
            if c is not None:
                c = c_new
        else:
            keep = mask[:, t, None]
            h = torch.where(keep, h_new, h)
            if c is not None:
                c = torch.where(keep, c_new, c)
        outputs.append(h)
    final = [h] if c is None else [h, c]
    return torch.stack(outputs, dim=1), final
