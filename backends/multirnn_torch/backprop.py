"""The generic path's time loop as one autograd node with a hand-written backward pass.

The per-step autograd tape records a dozen small operations per step and accumulates the
recurrent-kernel gradient with one product per step. Here the forward pass keeps each
step's activations (written in place over the pre-activations), and the backward pass
derives everything it can for all steps at once, walks back through time with a handful
of operations per step, and forms the weight gradients with single large products.

Layout tricks keep the per-step work small (all are differentiable reshufflings of the
layer's own parameters, done once per call, so gradients still reach them):

* piecewise-linear gates (``hard_sigmoid`` and its slope-1/6 cousin) are an affine map then
  ``clamp(., 0, 1)``; the affine part is folded into the gate columns of the weights;
* the LSTM's columns are reordered to (i, f, o, c) so the three gates are one slice;
* buffers are time-major, so every step reads and writes contiguous rows.

Every named activation's derivative is a function of its output, which is what is kept.
The backward pass is differentiable once (no double backward); torch.func transforms see the
autograd loop instead.
Covered: the named activations, no mask or any mask, no or shared recurrent dropout.
User activations and per-gate recurrent masks stay on the autograd loop
(``multirnn_torch.scan``).

The two walks through time (forward and backward) run natively on CPU when
``multirnn_torch.native`` can build its library (``csrc/scan.cpp``): the same per-step
work over the same buffers, without the interpreter between the small operations. What is
done for all steps at once (the input products, the backward coefficients, the weight
gradients) stays here and is shared by both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multirnn import builtin_cells
from multirnn_torch import native

#: name -> the activation in place on a tensor; its derivative, as a function of its
#: output, is the shared formula (:func:`derivative`)
ACTIVATIONS = {
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "hard_sigmoid": lambda v: v.mul_(0.2).add_(0.5).clamp_(0.0, 1.0),
    "hard_sigmoid_relu6": lambda v: F.hardsigmoid(v, inplace=True),
    "relu": torch.relu_,
    "exponential": torch.exp_,
    "linear": lambda v: v,
    "softsign": lambda v: v.div_(v.abs().add_(1.0)),
    "softplus": lambda v: v.copy_(torch.log1p(torch.exp(-v.abs())) + v.clamp(min=0.0)),
    "elu": lambda v: F.elu(v, inplace=True),
    "selu": lambda v: F.selu(v, inplace=True),
    # internal: a piecewise-linear gate after its affine part was folded into the weights
    "clamp01": lambda v: v.clamp_(0.0, 1.0),
}


def derivative(name: str, y: torch.Tensor) -> torch.Tensor:
    """``activation'`` from the activation's output ``y``: the formulas every engine's
    hand-written backward shares (``builtin_cells.DERIVATIVES``), on PyTorch's array API
    namespace; the internal ``clamp01`` has slope 1 inside (0, 1)."""
    if name == "clamp01":
        return ((y > 0.0) & (y < 1.0)).to(y.dtype)
    from multirnn_torch.scan import array_api  # imports this module

    return builtin_cells.DERIVATIVES[name](array_api(), y)


#: gate activation -> (slope, offset) such that gate(z) = clamp(slope * z + offset, 0, 1)
AFFINE_GATES = {"hard_sigmoid": (0.2, 0.5), "hard_sigmoid_relu6": (1.0 / 6.0, 0.5)}

#: canonical LSTM gate blocks (i, f, c, o) in the internal order (i, f, o, c)
LSTM_ORDER = (0, 1, 3, 2)


def supported(spec, mr) -> bool:
    """Whether the hand-written backward applies; it declines under torch.func transforms
    (grad, vmap, jacrev), which then differentiate the autograd loop instead."""
    return (
        builtin_cells.differentiable(spec)
        and (mr is None or mr.dim() == 2)
        and not torch._C._are_functorch_transforms_active()
    )


_OUT_OF_PLACE = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}

#: derivatives written into a given buffer without temporaries (memory of the backward pass)
_DERIVATIVE_INTO = {
    "tanh": lambda y, out: torch.mul(y, y, out=out).neg_().add_(1.0),
    # y - y*y in one elementwise pass, safe when out is y itself
    "sigmoid": lambda y, out: torch.addcmul(y, y, y, value=-1.0, out=out),
    "clamp01": lambda y, out: torch.addcmul(y, y, y, value=-1.0, out=out).gt_(0.0),
}


def _derivative_into(name, y, out):
    """``out = activation'`` as a function of the activation's output ``y``."""
    fn = _DERIVATIVE_INTO.get(name)
    if fn is not None:
        return fn(y, out)
    return out.copy_(derivative(name, y))


def _apply(name, v):
    """Activation in place (on a buffer slice that keeps the result)."""
    return ACTIVATIONS[name](v)


def _value(name, v, out=None):
    """Activation into a new tensor (or into ``out``)."""
    fn = _OUT_OF_PLACE.get(name)
    if fn is not None:
        return fn(v, out=out)
    if out is None:
        return _apply(name, v.clone())
    return _apply(name, out.copy_(v))


class _Scan(torch.autograd.Function):
    """Time-major loop. Either ``x`` (T, B, D) with ``kernel``/``bias_in`` (the input
    projection happens here, straight into the buffer) or a precomputed ``xp`` (T, B, W).
    Outputs every step's carried h (T, B, u) and the final c (LSTM; else empty)."""

    @staticmethod
    def forward(ctx, *inputs):
        # The forward(ctx, ...) form: with a separate setup_context, every apply() binds
        # its arguments through inspect.signature, which costs as much as a one-step call
        # of the native loop. torch.func transforms, which need that form, take the
        # autograd loop anyway (supported() declines under them).
        cfg, U, mask = inputs[0], inputs[5], inputs[9]
        # the loop is chosen once per call: backward walks back with the loop forward took
        ops = native.loaded_ops(cfg, U.device, U.dtype)
        mask_tm = native.time_major_mask(mask) if ops is not None else None
        output = _Scan.run(ops, mask_tm, *inputs)
        _Scan.keep(ctx, inputs, output)
        ctx.native = ops, mask_tm
        return output

    @staticmethod
    def run(ops, mask_tm, cfg, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr):
        """``ops``: the native loop's ops, or None for the Python loop; ``mask_tm``: the
        mask as the native loop reads it (see ``native.time_major_mask``)."""
        layer, u = cfg[:2]
        if xp is None:
            # One product for all steps; a column of ones carries the bias, which is cheaper
            # than broadcasting it into the output first.
            time, batch, dim = x.shape
            if bias_in is None:
                A = (x.reshape(time * batch, dim) @ kernel).view(time, batch, -1)
            else:
                ones = x.new_ones(time, batch, 1)
                flat = torch.cat([x, ones], dim=-1).view(time * batch, dim + 1)
                A = (flat @ torch.cat([kernel, bias_in[None]])).view(time, batch, -1)
        else:
            A = xp.clone(memory_format=torch.contiguous_format)
        time, batch, _ = A.shape
        # A holds the pre-activations, then (in place) the activations of every step.
        H = A.new_empty(time, batch, u)
        Hin = A.new_empty(time, batch, u) if mr is not None else None  # h_{t-1} * mask
        C = A.new_empty(time, batch, u) if layer == "LSTM" else None
        R = A.new_empty(time, batch, u) if layer == "GRU" else None  # rh, or r * hin
        if ops is not None:
            native.forward(ops, cfg, A, U, bias_rec, h0, c0, mask_tm, mr, H, Hin, C, R)
            c = C[-1] if layer == "LSTM" else None
        else:
            c = _forward_loop(cfg, A, U, bias_rec, h0, c0, mask, mr, H, Hin, C, R)
        empty = h0.new_zeros(0)
        # The buffers are returned as non-differentiable outputs, kept for backward.
        buffers = tuple(empty if b is None else b for b in (Hin, A, C, R))
        return (H, c if layer == "LSTM" else empty, *buffers)

    @staticmethod
    def keep(ctx, inputs, output):
        cfg, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr = inputs
        H, _, Hin, A, C, R = output
        ctx.mark_non_differentiable(Hin, A, C, R)
        # No zero gradients made up for the buffers (A alone is time x batch x G*units) nor
        # for an unused h or c: backward takes None for them.
        ctx.set_materialize_grads(False)
        ctx.cfg = cfg
        ctx.flags = (xp is None, bias_in is not None, bias_rec is not None, Hin.numel() > 0)
        ctx.save_for_backward(x, kernel, U, h0, c0, mask, mr, H, Hin, A, C, R)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dH, dc_final, *_):
        return _backward(ctx, dH, dc_final)


def _forward_loop(cfg, A, U, bias_rec, h0, c0, mask, mr, H, Hin, C, R):
    """The forward time loop in Python over the buffers of ``_Scan.forward``; returns the
    final c (LSTM) or None. ``csrc/scan.cpp`` runs the same loop natively."""
    layer, u, act_name, gate_name, reset_after = cfg
    time, width = A.shape[0], A.shape[2]
    # Per-step views, made once (unbind is one call), so the loop does no slicing.
    steps, Hs = A.unbind(0), H.unbind(0)
    Hins = Hin.unbind(0) if Hin is not None else None
    cols = [A[..., k * u : (k + 1) * u].unbind(0) for k in range(width // u)]
    if layer == "LSTM":  # columns i, f, o, c
        gate_rows, cand_rows, Cs = A[..., : 3 * u].unbind(0), cols[3], C.unbind(0)
    elif layer == "GRU":  # columns z, r, h
        gate_rows, Rs = A[..., : 2 * u].unbind(0), R.unbind(0)
        U_zr, U_h = U[:, : 2 * u], U[:, 2 * u :]
    h, c = h0, c0
    for t in range(time):
        hin = h if mr is None else torch.mul(h, mr, out=Hins[t])
        a = steps[t]
        h_out = Hs[t] if mask is None else None  # with no mask, write straight in place
        if layer == "LSTM":
            a.addmm_(hin, U)
            _apply(gate_name, gate_rows[t])
            g = _apply(act_name, cand_rows[t])
            if mask is None:  # no allocation: c and h go straight into their buffers
                c_new = torch.mul(cols[1][t], c, out=Cs[t]).addcmul_(cols[0][t], g)
                h_new = _value(act_name, c_new, out=h_out).mul_(cols[2][t])
            else:
                c_new = torch.addcmul(cols[1][t] * c, cols[0][t], g)
                h_new = cols[2][t] * _value(act_name, c_new)
        elif layer == "GRU":
            zr, zh = gate_rows[t], cols[2][t]
            if reset_after:
                rec = hin @ U if bias_rec is None else torch.addmm(bias_rec, hin, U)
                _apply(gate_name, zr.add_(rec[:, : 2 * u]))
                rh = Rs[t].copy_(rec[:, 2 * u :])
                zh.addcmul_(cols[1][t], rh)
            else:
                _apply(gate_name, zr.addmm_(hin, U_zr))
                q = torch.mul(cols[1][t], hin, out=Rs[t])
                zh.addmm_(q, U_h)
            hh = _apply(act_name, zh)
            h_new = torch.lerp(hh, h, cols[0][t], out=h_out)  # z * h + (1 - z) * hh
        else:
            h_new = _apply(act_name, a.addmm_(hin, U))
            if h_out is not None:
                h_new = h_out.copy_(h_new)
        if mask is None:
            h = h_new
            c = c_new if layer == "LSTM" else c
        else:
            keep = mask[:, t, None]
            h = torch.where(keep, h_new, h, out=Hs[t])
            if layer == "LSTM":
                c = torch.where(keep, c_new, c, out=Cs[t])
    return c if layer == "LSTM" else None


def _backward(ctx, dH, dc_final):
    """``_Scan.backward``: the per-step coefficients of all steps at once, the walk back
    through time (native or Python), then the weight gradients as single large products."""
    layer = ctx.cfg[0]
    projected_here, has_bias_in, has_bias_rec, has_hin = ctx.flags
    x, kernel, U, h0, c0, mask, mr, H, Hin, A, C, R = ctx.saved_tensors
    if not has_hin:
        Hin = None
    time, batch, width = A.shape
    if dH is None:
        dH = torch.zeros_like(H)
    if dc_final is None and layer == "LSTM":
        dc_final = torch.zeros_like(h0)
    grads = {"LSTM": _lstm_backward, "GRU": _gru_backward}.get(layer, _simple_backward)
    # ctx.native: the loop forward took (native ops or None) and its time-major mask
    DZ, dU, dbr, dh, dc = grads(*ctx.native, ctx.cfg, U, h0, c0, mask, mr, H, Hin, A, C, R,
                                dH, dc_final, has_bias_rec)  # fmt: skip
    dx = dkernel = dbias_in = dxp = None
    if projected_here:
        flat = DZ.view(time * batch, width)
        if ctx.needs_input_grad[1]:
            dx = (flat @ kernel.t()).view(x.shape)
        if ctx.needs_input_grad[2]:
            dkernel = x.reshape(time * batch, -1).t() @ flat
        if has_bias_in and ctx.needs_input_grad[3]:
            dbias_in = flat.sum(0)
    else:
        dxp = DZ
    return None, dx, dkernel, dbias_in, dxp, dU, dbr, dh, dc, None, None


def _keep(mask, dtype):
    """The mask as the Python loop reads it: (time, batch, 1) of 0/1 in ``dtype``."""
    return None if mask is None else mask.t().to(dtype)[..., None]


def _lstm_backward(ops, mask_tm, cfg, U, h0, c0, mask, mr, H, Hin, A, C, R, dH, dc, _has_br):
    _, u, act_name, gate_name, _ = cfg
    if ops is not None:  # forms the coefficients step by step, on rows still in cache
        DZ = torch.empty_like(A)
        dh, dc = native.lstm_backward(ops, cfg, DZ, A, C, c0, dH, dc, mask_tm, mr, U)
        return DZ, _outer(Hin, h0, H, DZ), None, dh, dc
    i, f, o, g = (A[..., k * u : (k + 1) * u] for k in range(4))
    # Coefficients of every step, all at once, in the buffer that then becomes the
    # gradient (memory): dc_new -> (i, f) pre-activations, dh_new -> o
    # pre-activation, dc_new -> c pre-activation; and dh_new -> dc_new.
    DZ = torch.empty_like(A)  # columns i, f, o, c
    _derivative_into(gate_name, A[..., : 3 * u], DZ[..., : 3 * u])
    DZ[..., :u].mul_(g)
    DZ[1:, :, u : 2 * u].mul_(C[:-1])
    DZ[0, :, u : 2 * u].mul_(c0)
    ac = _value(act_name, C)
    DZ[..., 2 * u : 3 * u].mul_(ac)
    _derivative_into(act_name, g, DZ[..., 3 * u :]).mul_(i)
    K_dc = _derivative_into(act_name, ac, ac).mul_(o)
    Ut = U.t().contiguous()  # BLAS runs twice as fast on it as on the transposed view
    dh = torch.zeros_like(h0)
    keep = _keep(mask, A.dtype)
    # Per-step views, made once, so the loop does no slicing.
    dHs, DZs, f_rows, K_dcs = dH.unbind(0), DZ.unbind(0), f.unbind(0), K_dc.unbind(0)
    keeps = None if keep is None else keep.unbind(0)
    DZ_if = DZ[..., : 2 * u].unflatten(-1, (2, u)).unbind(0)
    DZ_o, DZ_c = DZ[..., 2 * u : 3 * u].unbind(0), DZ[..., 3 * u :].unbind(0)
    for t in range(A.shape[0] - 1, -1, -1):
        dh = dh + dHs[t]
        m = None if keeps is None else keeps[t]
        dhn, dcn = (dh, dc) if m is None else (dh * m, dc * m)
        dcn = torch.addcmul(dcn, dhn, K_dcs[t])
        DZ_if[t].mul_(dcn[:, None])  # coefficients times the incoming gradients
        DZ_o[t].mul_(dhn)
        DZ_c[t].mul_(dcn)
        dhin = DZs[t] @ Ut
        if mr is not None:
            dhin = dhin * mr
        dc_prev = dcn * f_rows[t]
        if m is None:
            dh, dc = dhin, dc_prev
        else:
            dh = torch.addcmul(dhin, dh, 1.0 - m)
            dc = torch.addcmul(dc_prev, dc, 1.0 - m)
    return DZ, _outer(Hin, h0, H, DZ), None, dh, dc


def _gru_backward(
    ops, mask_tm, cfg, U, h0, c0, mask, mr, H, Hin, A, C, R, dH, dc_final, has_bias_rec
):
    _, u, act_name, gate_name, reset_after = cfg
    width = A.shape[-1]
    DZ = torch.empty_like(A)  # gradient w.r.t. the pre-activations = w.r.t. xp
    H_prev = torch.cat([h0[None], H[:-1]], dim=0)
    if Hin is None:
        Hin = H_prev
    zgate, hh = A[..., :u], A[..., 2 * u :]
    dgates = derivative(gate_name, A[..., : 2 * u])
    K_z = (H_prev - hh) * dgates[..., :u]  # dh_new -> z pre-activation
    K_h = (1.0 - zgate) * derivative(act_name, hh)  # dh_new -> candidate pre-activation
    K_r = (R if reset_after else Hin) * dgates[..., u:]  # -> r pre-activation
    DREC = torch.empty_like(A) if reset_after else None
    if ops is not None:
        dh = native.gru_backward(ops, reset_after, DZ, DREC, K_z, K_h, K_r, A, dH, mask_tm,
                                 mr, U)  # fmt: skip
    else:
        dh = _gru_loop(U, h0, mask, mr, A, R, dH, DZ, DREC, K_z, K_h, K_r, reset_after)
    dbr = None
    if reset_after:
        flat = DREC.reshape(-1, width)
        dU = Hin.reshape(-1, u).t() @ flat
        dbr = flat.sum(0) if has_bias_rec else None
    else:
        dU = torch.cat(
            [
                Hin.reshape(-1, u).t() @ DZ[..., : 2 * u].reshape(-1, 2 * u),
                R.reshape(-1, u).t() @ DZ[..., 2 * u :].reshape(-1, u),
            ],
            dim=1,
        )
    return DZ, dU, dbr, dh, None


def _gru_loop(U, h0, mask, mr, A, R, dH, DZ, DREC, K_z, K_h, K_r, reset_after):
    """The GRU's walk back through time in Python (``csrc/scan.cpp``: gru_backward)."""
    u = h0.shape[1]
    zgate, r = A[..., :u], A[..., u : 2 * u]
    keep = _keep(mask, A.dtype)
    dh = torch.zeros_like(h0)
    Ut = U.t().contiguous()  # BLAS runs twice as fast on it as on the transposed view
    if not reset_after:
        U_zr_t, U_h_t = U[:, : 2 * u].t().contiguous(), U[:, 2 * u :].t().contiguous()
    for t in range(A.shape[0] - 1, -1, -1):
        dh = dh + dH[t]
        m = None if keep is None else keep[t]
        dhn = dh if m is None else dh * m
        dz = DZ[t]
        torch.mul(dhn, K_z[t], out=dz[:, :u])
        dzh = torch.mul(dhn, K_h[t], out=dz[:, 2 * u :])
        if reset_after:
            torch.mul(dzh, K_r[t], out=dz[:, u : 2 * u])
            drec = DREC[t]
            drec[:, : 2 * u] = dz[:, : 2 * u]
            torch.mul(dzh, r[t], out=drec[:, 2 * u :])
            dhin = drec @ Ut
        else:
            dq = dzh @ U_h_t
            torch.mul(dq, K_r[t], out=dz[:, u : 2 * u])
            dhin = torch.addcmul(dz[:, : 2 * u] @ U_zr_t, dq, r[t])
        if mr is not None:
            dhin = dhin * mr
        carry = torch.addcmul(dhin, dhn, zgate[t])
        dh = carry if m is None else torch.addcmul(carry, dh, 1.0 - m)
    return dh


def _simple_backward(
    ops, mask_tm, cfg, U, h0, c0, mask, mr, H, Hin, A, C, R, dH, dc_final, _has_br
):
    act_name = cfg[2]
    DZ = torch.empty_like(A)  # gradient w.r.t. the pre-activations = w.r.t. xp
    K = derivative(act_name, A)
    if ops is not None:
        dh = native.simple_backward(ops, DZ, K, dH, mask_tm, mr, U)
        return DZ, _outer(Hin, h0, H, DZ), None, dh, None
    keep = _keep(mask, A.dtype)
    dh = torch.zeros_like(h0)
    Ut = U.t().contiguous()  # BLAS runs twice as fast on it as on the transposed view
    for t in range(A.shape[0] - 1, -1, -1):
        dh = dh + dH[t]
        m = None if keep is None else keep[t]
        dhn = dh if m is None else dh * m
        dz = torch.mul(dhn, K[t], out=DZ[t])
        dhin = dz @ Ut
        if mr is not None:
            dhin = dhin * mr
        dh = dhin if m is None else torch.addcmul(dhin, dh, 1.0 - m)
    return DZ, _outer(Hin, h0, H, DZ), None, dh, None


def _outer(Hin, h0, H, DZ):
    """sum_t h_{t-1}^T dz_t: the recurrent kernel's gradient, without building the shifted
    state sequence when no dropout mask was applied (then h_{t-1} is H[t-1], or h0)."""
    units, width = h0.shape[1], DZ.shape[-1]
    if Hin is not None:
        return Hin.reshape(-1, units).t() @ DZ.reshape(-1, width)
    out = h0.t() @ DZ[0]
    if DZ.shape[0] > 1:
        out.addmm_(H[:-1].reshape(-1, units).t(), DZ[1:].reshape(-1, width))
    return out


def internal_weights(spec, kernel, U, bias_in, bias_rec):
    """The weights in the loop's layout, derived differentiably from the layer's own:
    LSTM columns reordered to (i, f, o, c), and piecewise-linear gates' affine part folded
    into the gate columns. Returns (kernel, U, bias_in, bias_rec, gate_name, gate_order)."""
    u = spec.units
    gate_name = spec.recurrent_activation
    order = None
    if spec.layer == "LSTM":
        order = LSTM_ORDER
        index = torch.cat([torch.arange(k * u, (k + 1) * u) for k in order]).to(kernel.device)
        kernel, U = kernel.index_select(1, index), U.index_select(1, index)
        bias_in = None if bias_in is None else bias_in.index_select(0, index)
        gate_cols = 3 * u
    elif spec.layer == "GRU":
        gate_cols = 2 * u
    else:
        return kernel, U, bias_in, bias_rec, gate_name, order
    if gate_name in AFFINE_GATES:
        slope, offset = AFFINE_GATES[gate_name]
        scale = kernel.new_ones(kernel.shape[1])
        scale[:gate_cols] = slope
        shift = kernel.new_zeros(kernel.shape[1])
        shift[:gate_cols] = offset
        kernel, U = kernel * scale, U * scale
        bias_in = shift if bias_in is None else torch.addcmul(shift, bias_in, scale)
        bias_rec = None if bias_rec is None else bias_rec * scale
        gate_name = "clamp01"
    return kernel, U, bias_in, bias_rec, gate_name, order


def scan(spec, gate_name, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr):
    """Every step's carried h as (B, T, u), and the final states. Give either the
    time-major inputs ``x`` with ``kernel``/``bias_in``, or projected inputs ``xp``; all
    weights in the internal layout (see internal_weights)."""
    if c0 is None:
        c0 = h0.new_zeros(h0.shape)
    cfg = (spec.layer, spec.units, spec.activation, gate_name, spec.reset_after)
    H, c, *_ = _Scan.apply(cfg, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr)
    final = [H[-1], c] if spec.layer == "LSTM" else [H[-1]]
    return H.transpose(0, 1), final
