"""The generic path's time loop as one autograd node with a hand-written backward pass.

The per-step autograd tape records a dozen small operations per step and accumulates the
recurrent-kernel gradient with one product per step. Here the forward pass keeps each
step's activations (written in place over the pre-activations), and the backward pass
derives everything it can for all steps at once, walks back through time with a handful
of operations per step, and forms the weight gradients with single large products.

The cell maths are the shared ones (``multirnn.builtin_cells``): the forward step's
combinations written into this loop's buffers, the activations' derivatives, and each
cell's local derivatives (its coefficients), which are elementwise and so are formed here
for every step at once. What stays here is the loop: buffers, products and slicing.

Layout tricks keep the per-step work small (all are differentiable reshufflings of the
layer's own parameters, done once per call, so gradients still reach them):

* piecewise-linear gates (``builtin_cells.FOLDED_GATES``) are an affine map then
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
done for all steps at once (the input products, the coefficients, the weight gradients)
stays here and is shared by both.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from multirnn import activations, builtin_cells
from multirnn_torch import native
from multirnn_torch.ops import TORCH_OPS

CLAMP01 = builtin_cells.CLAMP01

#: the shared step's combinations, written into this loop's buffers (PyTorch's ``out=``)
INTO = builtin_cells.IntoBuffers(torch)


def array_api():
    """PyTorch's array API namespace (array-api-compat): what the shared cell maths
    (``multirnn.builtin_cells``) run with on tensors."""
    try:
        import array_api_compat.torch as xp
    except ImportError as exc:  # pragma: no cover - the torch extra installs it
        raise ImportError(
            'the torch engine needs array-api-compat: pip install ".[torch]" from a multirnn '
            "checkout, or pip install array-api-compat"
        ) from exc
    return xp


#: name -> the activation in place, where PyTorch has an in-place form of the kernel the
#: engine computes it with; the other named activations are the shared formula
#: (``multirnn.activations``) copied into the buffer
_IN_PLACE = {
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "relu": torch.relu_,
    "exponential": torch.exp_,
    "linear": lambda v: v,
    "elu": lambda v: F.elu(v, inplace=True),
    "selu": lambda v: F.selu(v, inplace=True),
    CLAMP01: lambda v: v.clamp_(0.0, 1.0),
}

#: out-of-place kernels that also take ``out=``
_OUT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _in_place(name: str):
    """The named activation in place on a tensor (a buffer slice that keeps the result)."""
    if name in _IN_PLACE:
        return _IN_PLACE[name]
    formula = activations.function(name, TORCH_OPS)
    return lambda v: v.copy_(formula(v))


def _activation(name: str):
    """The named activation as ``f(v, out=None)``: a new tensor, or written into ``out``."""
    in_place, direct = _in_place(name), _OUT.get(name)
    if direct is not None:
        return direct
    return lambda v, out=None: in_place(v.clone() if out is None else out.copy_(v))


#: every name the loop computes: the named activations and the folded gate, as
#: (in place, into ``out``)
ACTIVATIONS = {
    name: (_in_place(name), _activation(name)) for name in [*builtin_cells.DERIVATIVES, CLAMP01]
}


def supported(spec, device_type: str = "cpu") -> bool:
    """Whether the hand-written loop applies (with dropout masks of either form too). It
    declines where the framework must see
    every operation: under torch.func transforms (grad, vmap, jacrev), which differentiate
    the autograd loop instead; under torch.compile and torch.export, which trace it as one
    scan operator; and under autocast, whose per-operation precision the autograd loop
    follows (products in low precision, the state in float32)."""
    return (
        builtin_cells.differentiable(spec)
        and not torch._C._are_functorch_transforms_active()
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled(device_type)
    )


def derivative(name: str, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``activation'`` from the activation's output ``y`` (the shared formulas), into
    ``out`` when given."""
    return builtin_cells.derivative(array_api(), name, y, out, INTO)


class Loop(NamedTuple):
    """One call of the loop: what the forward walk read and wrote (time-major buffers),
    kept for the backward walk."""

    cfg: tuple  # (layer, units, activation, gate activation, reset_after)
    U: torch.Tensor  # recurrent kernel, internal layout
    bias_rec: torch.Tensor | None
    h0: torch.Tensor
    c0: torch.Tensor  # zeros but for the LSTM
    mask: torch.Tensor | None  # (batch, time) bool
    mr: torch.Tensor | None  # recurrent dropout: (batch, units) shared, (G, batch, units) per gate
    A: torch.Tensor  # (time, batch, G*units): pre-activations, then (in place) activations
    H: torch.Tensor  # (time, batch, units): every step's carried h
    Hin: torch.Tensor | None  # h_{t-1} * mr, with recurrent dropout: (time[, G], batch, units)
    C: torch.Tensor | None  # every step's carried c (LSTM)
    C_prev: torch.Tensor | None  # every step's previous c: c0, then C[:-1] (one buffer)
    R: torch.Tensor | None  # GRU: rh (reset_after) or r * hin
    ops: Any  # the native loop's op namespace, or None for the Python loop
    mask_tm: torch.Tensor | None  # the mask as the native loop reads it


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
        cfg, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr, mi = inputs
        A = _project(x, kernel, bias_in, xp, mi)
        time, batch, _ = A.shape
        layer, u = cfg[:2]
        # the loop is chosen once per call: backward walks back with the loop forward took
        ops = native.loaded_ops(cfg, U.device, U.dtype)
        carries = None  # c0, then every step's c, in one buffer: C and C_prev are views
        if layer == "LSTM":
            carries = A.new_empty(time + 1, batch, u)
            carries[0] = c0
        loop = Loop(
            cfg, U, bias_rec, h0, c0, mask, mr, A,
            H=A.new_empty(time, batch, u),
            Hin=None if mr is None else A.new_empty(time, *mr.shape),
            C=None if carries is None else carries[1:],
            C_prev=None if carries is None else carries[:-1],
            R=A.new_empty(time, batch, u) if layer == "GRU" else None,
            ops=ops, mask_tm=native.time_major_mask(mask) if ops is not None else None,
        )  # fmt: skip
        if ops is not None:
            native.forward(loop)
            c = loop.C[-1] if layer == "LSTM" else None
        else:
            c = _forward_loop(loop)
        empty = h0.new_zeros(0)
        # The buffers are non-differentiable outputs, kept for backward.
        buffers = tuple(empty if b is None else b for b in (loop.Hin, A, carries, loop.R))
        ctx.mark_non_differentiable(*buffers)
        # No zero gradients made up for the buffers (A alone is time x batch x G*units) nor
        # for an unused h or c: backward takes None for them.
        ctx.set_materialize_grads(False)
        ctx.loop = loop._replace(H=None, Hin=None, A=None, C=None, C_prev=None, R=None, U=None,
                                 h0=None, c0=None, mask=None, mr=None)  # fmt: skip
        ctx.flags = (xp is None, bias_in is not None, bias_rec is not None)
        ctx.save_for_backward(x, kernel, U, h0, c0, mask, mr, mi, loop.H, *buffers)
        return (loop.H, c if layer == "LSTM" else empty, *buffers)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dH, dc_final, *_):
        return _backward(ctx, dH, dc_final)


def _project(x, kernel, bias_in, xp, mi=None):
    """The pre-activations' buffer: ``x W + b`` for all steps in one product (with one
    input dropout mask per gate ``mi``, (G, batch, features): ``(x mi_g) W_g + b_g``, one
    product per gate), or a copy of the given projection."""
    if xp is not None:
        return xp.clone(memory_format=torch.contiguous_format)
    time, batch, dim = x.shape
    if mi is not None:  # gate by gate through one buffer: no (G, time, batch, features) copy
        out = x.new_empty(time * batch, kernel.shape[1])
        u = kernel.shape[1] // mi.shape[0]
        for g, masked in _masked_inputs(x, mi):
            cols = slice(g * u, (g + 1) * u)
            if bias_in is None:
                torch.mm(masked, kernel[:, cols], out=out[:, cols])
            else:
                torch.addmm(bias_in[cols], masked, kernel[:, cols], out=out[:, cols])
        return out.view(time, batch, -1)
    if bias_in is None:
        return (x.reshape(time * batch, dim) @ kernel).view(time, batch, -1)
    # one fused product-and-bias: no ones column or stacked kernel made every call
    return torch.addmm(bias_in, x.reshape(time * batch, dim), kernel).view(time, batch, -1)


def _forward_loop(loop: Loop):
    """The forward time loop in Python over the buffers of ``_Scan.forward``, on the shared
    step's combinations; returns the final c (LSTM) or None. ``csrc/scan.cpp`` runs the
    same loop natively."""
    layer, u, act_name, gate_name, reset_after = loop.cfg
    A, U, mask, mr, bias_rec = loop.A, loop.U, loop.mask, loop.mr, loop.bias_rec
    (act_, act), (gate_, _) = ACTIVATIONS[act_name], ACTIVATIONS.get(gate_name, (None, None))
    time, width = A.shape[0], A.shape[2]
    # Per-step views, made once (unbind is one call), so the loop does no slicing.
    steps, Hs = A.unbind(0), loop.H.unbind(0)
    Hins = loop.Hin.unbind(0) if mr is not None else None
    cols = [A[..., k * u : (k + 1) * u].unbind(0) for k in range(width // u)]
    if layer == "LSTM":  # columns i, f, o, c
        gate_rows, cand_rows, Cs = A[..., : 3 * u].unbind(0), cols[3], loop.C.unbind(0)
    elif layer == "GRU":  # columns z, r, h
        gate_rows, Rs = A[..., : 2 * u].unbind(0), loop.R.unbind(0)
        U_zr, U_h = U[:, : 2 * u], U[:, 2 * u :]
    h, c = loop.h0, loop.c0
    per_gate = _per_gate(mr)
    if per_gate:  # the gate blocks of U, (G, units, units)
        U = _gate_blocks(U, u)
    for t in range(time):
        if per_gate:  # (G, batch, units): h under each gate's mask
            hin = torch.mul(h[None], mr, out=Hins[t])
        else:
            hin = h if mr is None else torch.mul(h, mr, out=Hins[t])
        a = steps[t]
        h_out = Hs[t] if mask is None else None  # with no mask, write straight in place
        if layer == "LSTM":
            c_out = Cs[t] if mask is None else None
            if per_gate:
                a.add_(_gate_products(hin, U, 4))
            else:
                a.addmm_(hin, U)
            gate_(gate_rows[t])
            g = act_(cand_rows[t])
            c_new = builtin_cells.lstm_carry(INTO, cols[0][t], cols[1][t], g, c, out=c_out)
            h_new = builtin_cells.lstm_output(INTO, act, cols[2][t], c_new, out=h_out)
        elif layer == "GRU":
            zr, zh = gate_rows[t], cols[2][t]
            if reset_after:
                if per_gate:
                    rec = _gate_products(hin, U, 3, bias_rec)
                else:
                    rec = hin @ U if bias_rec is None else torch.addmm(bias_rec, hin, U)
                gate_(zr.add_(rec[:, : 2 * u]))
                rh = Rs[t].copy_(rec[:, 2 * u :])
                builtin_cells.gru_candidate(INTO, zh, cols[1][t], rh, out=zh)
            elif per_gate:
                gate_(zr.add_(_gate_products(hin, U, 2)))
                zh.addmm_(INTO.mul(cols[1][t], hin[2], out=Rs[t]), U[2])
            else:
                gate_(zr.addmm_(hin, U_zr))
                zh.addmm_(INTO.mul(cols[1][t], hin, out=Rs[t]), U_h)  # xh + (r h) U_h
            hh = act_(zh)
            h_new = INTO.blend(cols[0][t], h, hh, out=h_out)
        else:  # one gate: a per-gate mask is a shared one (scan.generic passes it so)
            h_new = act_(a.addmm_(hin, U))
            if h_out is not None:
                h_new = h_out.copy_(h_new)
        if mask is None:
            h, c = h_new, (c_new if layer == "LSTM" else c)
        else:
            keep = mask[:, t, None]
            h = torch.where(keep, h_new, h, out=Hs[t])
            if layer == "LSTM":
                c = torch.where(keep, c_new, c, out=Cs[t])
    return c if layer == "LSTM" else None


def _gate_blocks(U, u):
    """``U``'s gate blocks, (G, units, units): the recurrent kernels of the gates."""
    return U.view(u, -1, u).transpose(0, 1).contiguous()


def _gate_products(hin, blocks, gates, bias=None):
    """``hin_g U_g`` for the first ``gates`` gates, side by side (batch, gates*units): the
    recurrent product with one dropout mask per gate (``hin``: (G, batch, units), h under
    each gate's mask; ``blocks``: :func:`_gate_blocks`), as one batched product."""
    out = torch.bmm(hin[:gates], blocks[:gates]).transpose(0, 1).reshape(hin.shape[1], -1)
    return out if bias is None else out + bias


def _carried_back(dz, Ut, mr, u, gates):
    """The gradient reaching ``h_{t-1}`` through the recurrent product ``(h mr) U`` from the
    product's gradient ``dz`` (the first ``gates`` gates' columns): the shared cell maths'
    :meth:`multirnn.builtin_cells.GateProduct.back` (``Ut``: ``U^T``)."""
    blocks = mr.shape[0] if _per_gate(mr) else gates  # the masks' gates, or dz's
    product = builtin_cells.GateProduct(array_api(), None, u, blocks, mr, batched=False)
    return product.back(dz, Ut, gates)


def _per_gate(mr) -> bool:
    return mr is not None and mr.dim() == 3


def _block_outer(Hin, D, u):
    """``sum_t Hin_t^T D_t``, the recurrent kernel's gradient from the masked states
    ``Hin`` (time, batch, units), or per gate block from (time, G, batch, units)."""
    if Hin.dim() == 3:
        return Hin.reshape(-1, u).t() @ D.reshape(-1, D.shape[-1])
    blocks = [Hin[:, g].reshape(-1, u).t() @ D[..., g * u : (g + 1) * u].reshape(-1, u)
              for g in range(D.shape[-1] // u)]  # fmt: skip
    return torch.cat(blocks, dim=1)


class Grads(NamedTuple):
    """The backward walk's results: the pre-activations' gradient (the input side's), the
    recurrent kernel's and bias's, and the initial states'."""

    DZ: torch.Tensor
    dU: torch.Tensor
    dbias_rec: torch.Tensor | None
    dh0: torch.Tensor
    dc0: torch.Tensor | None


def _backward(ctx, dH, dc_final):
    """``_Scan.backward``: the per-step coefficients of all steps at once, the walk back
    through time (native or Python), then the weight gradients as single large products."""
    projected_here, has_bias_in, has_bias_rec = ctx.flags
    x, kernel, U, h0, c0, mask, mr, mi, H, Hin, A, carries, R = ctx.saved_tensors
    layer = ctx.loop.cfg[0]
    loop = ctx.loop._replace(
        U=U, h0=h0, c0=c0, mask=mask, mr=mr, H=H, A=A,
        Hin=Hin if Hin.numel() else None, C=carries[1:] if carries.numel() else None,
        C_prev=carries[:-1] if carries.numel() else None,
        R=R if R.numel() else None,
    )  # fmt: skip
    time, batch, width = A.shape
    if dH is None:
        dH = torch.zeros_like(H)
    if dc_final is None and layer == "LSTM":
        dc_final = torch.zeros_like(h0)
    walk = {"LSTM": _lstm_backward, "GRU": _gru_backward}.get(layer, _simple_backward)
    grads = walk(loop, dH, dc_final)
    dbias_rec = grads.dbias_rec if has_bias_rec else None
    dx = dkernel = dbias_in = dxp = None
    if projected_here and mi is not None:
        dx, dkernel = _per_gate_input_back(x, kernel, mi, grads.DZ, ctx.needs_input_grad[1:3])
        if has_bias_in and ctx.needs_input_grad[3]:
            dbias_in = grads.DZ.view(time * batch, width).sum(0)
    elif projected_here:
        flat = grads.DZ.view(time * batch, width)
        if ctx.needs_input_grad[1]:
            dx = (flat @ kernel.t()).view(x.shape)
        if ctx.needs_input_grad[2]:
            dkernel = x.reshape(time * batch, -1).t() @ flat
        if has_bias_in and ctx.needs_input_grad[3]:
            dbias_in = flat.sum(0)
    else:
        dxp = grads.DZ
    return (None, dx, dkernel, dbias_in, dxp, grads.dU, dbias_rec, grads.dh0, grads.dc0, None,
            None, None)  # fmt: skip


def _masked_inputs(x, mi):
    """``(g, x mi_g)`` for each gate, as (time*batch, features): one buffer, rewritten for
    each gate (a copy of the inputs per gate at once would cost more than the products)."""
    time, batch, dim = x.shape
    buffer = x.new_empty(time, batch, dim)
    for g in range(mi.shape[0]):
        yield g, torch.mul(x, mi[g], out=buffer).view(time * batch, dim)


def _per_gate_input_back(x, kernel, mi, DZ, needed):
    """(dx, dkernel) of ``_project`` with one input mask per gate, gate by gate."""
    time, batch, dim = x.shape
    flat = DZ.view(time * batch, -1)
    u = flat.shape[1] // mi.shape[0]
    dx = dkernel = None
    if needed[0]:
        dx = x.new_zeros(time, batch, dim)
        for g in range(mi.shape[0]):
            cols = slice(g * u, (g + 1) * u)
            dx.addcmul_((flat[:, cols] @ kernel[:, cols].t()).view(time, batch, dim), mi[g])
    if needed[1]:
        dkernel = kernel.new_empty(kernel.shape)
        for g, masked in _masked_inputs(x, mi):
            cols = slice(g * u, (g + 1) * u)
            torch.mm(masked.t(), flat[:, cols], out=dkernel[:, cols])
    return dx, dkernel


def _keep(mask, dtype):
    """The mask as the Python loop reads it: (time, batch, 1) of 0/1 in ``dtype``."""
    return None if mask is None else mask.t().to(dtype)[..., None]


def _previous(first, stack):
    """Every step's previous value: ``first``, then all but the last of ``stack``."""
    return torch.cat([first[None], stack[:-1]], dim=0)


def _lstm_backward(loop: Loop, dH, dc) -> Grads:
    _, u, act_name, gate_name, _ = loop.cfg
    A, C = loop.A, loop.C
    DZ = torch.empty_like(A)  # columns i, f, o, c: the coefficients, then the gradients
    if loop.ops is not None:  # forms the coefficients step by step, on rows still in cache
        dh, dc = native.lstm_backward(loop, DZ, dH, dc)
        return Grads(DZ, _outer(loop, DZ), None, dh, dc)
    i, f, o, g = (A[..., k * u : (k + 1) * u] for k in range(4))
    d_i, d_f, d_o, d_g = (DZ[..., k * u : (k + 1) * u] for k in range(4))
    # every step's coefficients at once, in the buffer that then becomes the gradient
    tc = ACTIVATIONS[act_name][1](C)
    K_dc = builtin_cells.lstm_coefficients(
        array_api(), act_name, gate_name, i, f, o, g, loop.C_prev, tc,
        out=(d_i, d_f, d_o, d_g, tc), e=INTO,
    )[-1]  # fmt: skip
    Ut = loop.U.t().contiguous()  # BLAS runs twice as fast on it as on the transposed view
    mr, dh = loop.mr, torch.zeros_like(loop.h0)
    keep = _keep(loop.mask, A.dtype)
    # Per-step views, made once, so the loop does no slicing.
    dHs, DZs, f_rows, K_dcs = dH.unbind(0), DZ.unbind(0), f.unbind(0), K_dc.unbind(0)
    keeps = None if keep is None else keep.unbind(0)
    DZ_if = DZ[..., : 2 * u].unflatten(-1, (2, u)).unbind(0)
    DZ_o, DZ_c = d_o.unbind(0), d_g.unbind(0)
    for t in range(A.shape[0] - 1, -1, -1):
        dh = dh + dHs[t]
        m = None if keeps is None else keeps[t]
        dhn, dcn = (dh, dc) if m is None else (dh * m, dc * m)
        dcn = torch.addcmul(dcn, dhn, K_dcs[t])
        DZ_if[t].mul_(dcn[:, None])  # coefficients times the incoming gradients
        DZ_o[t].mul_(dhn)
        DZ_c[t].mul_(dcn)
        dhin = _carried_back(DZs[t], Ut, mr, u, 4)
        dc_prev = dcn * f_rows[t]
        if m is None:
            dh, dc = dhin, dc_prev
        else:
            dh = torch.addcmul(dhin, dh, 1.0 - m)
            dc = torch.addcmul(dc_prev, dc, 1.0 - m)
    return Grads(DZ, _outer(loop, DZ), None, dh, dc)


def _gru_backward(loop: Loop, dH, _dc) -> Grads:
    _, u, act_name, gate_name, reset_after = loop.cfg
    A, R = loop.A, loop.R
    width = A.shape[-1]
    DZ = torch.empty_like(A)  # gradient w.r.t. the pre-activations = w.r.t. xp
    H_prev = _previous(loop.h0, loop.H)
    Hin = H_prev if loop.Hin is None else loop.Hin
    Hin_h = Hin[:, 2] if Hin.dim() == 4 else Hin  # the candidate's, per gate
    K_z, K_r, K_h = builtin_cells.gru_coefficients(
        array_api(), act_name, gate_name, A[..., :u], A[..., u : 2 * u], A[..., 2 * u :],
        H_prev, R if reset_after else Hin_h,
    )  # fmt: skip
    DREC = torch.empty_like(A) if reset_after else None
    if loop.ops is not None:
        dh = native.gru_backward(loop, DZ, DREC, K_z, K_h, K_r, dH)
    else:
        dh = _gru_loop(loop, dH, DZ, DREC, K_z, K_h, K_r)
    dbr = None
    if reset_after:
        dU = _block_outer(Hin, DREC, u)
        dbr = DREC.reshape(-1, width).sum(0)
    else:
        Hin_zr = Hin[:, :2] if Hin.dim() == 4 else Hin
        dU = torch.cat([_block_outer(Hin_zr, DZ[..., : 2 * u], u),
                        _block_outer(R, DZ[..., 2 * u :], u)], dim=1)  # fmt: skip
    return Grads(DZ, dU, dbr, dh, None)


def _gru_loop(loop: Loop, dH, DZ, DREC, K_z, K_h, K_r):
    """The GRU's walk back through time in Python (``csrc/scan.cpp``: gru_backward)."""
    reset_after, A, mr = loop.cfg[4], loop.A, loop.mr
    u = loop.h0.shape[1]
    zgate, r = A[..., :u], A[..., u : 2 * u]
    keep = _keep(loop.mask, A.dtype)
    dh = torch.zeros_like(loop.h0)
    U = loop.U
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
            dhin = _carried_back(drec, Ut, mr, u, 3)
        else:
            dq = dzh @ U_h_t
            torch.mul(dq, K_r[t], out=dz[:, u : 2 * u])
            if _per_gate(mr):  # z and r under theirs, h under its own
                dhin = _carried_back(dz[:, : 2 * u], U_zr_t, mr, u, 2) + dq * r[t] * mr[2]
            else:
                dhin = torch.addcmul(dz[:, : 2 * u] @ U_zr_t, dq, r[t])
                dhin = dhin if mr is None else dhin * mr
        carry = torch.addcmul(dhin, dhn, zgate[t])
        dh = carry if m is None else torch.addcmul(carry, dh, 1.0 - m)
    return dh


def _simple_backward(loop: Loop, dH, _dc) -> Grads:
    DZ = torch.empty_like(loop.A)  # gradient w.r.t. the pre-activations = w.r.t. xp
    K = derivative(loop.cfg[2], loop.A)
    if loop.ops is not None:
        dh = native.simple_backward(loop, DZ, K, dH)
        return Grads(DZ, _outer(loop, DZ), None, dh, None)
    keep, mr = _keep(loop.mask, loop.A.dtype), loop.mr
    dh = torch.zeros_like(loop.h0)
    Ut = loop.U.t().contiguous()  # BLAS runs twice as fast on it as on the transposed view
    for t in range(loop.A.shape[0] - 1, -1, -1):
        dh = dh + dH[t]
        m = None if keep is None else keep[t]
        dhn = dh if m is None else dh * m
        dz = torch.mul(dhn, K[t], out=DZ[t])
        dhin = _carried_back(dz, Ut, mr, dz.shape[1], 1)
        dh = dhin if m is None else torch.addcmul(dhin, dh, 1.0 - m)
    return Grads(DZ, _outer(loop, DZ), None, dh, None)


def _outer(loop: Loop, DZ):
    """sum_t h_{t-1}^T dz_t: the recurrent kernel's gradient, without building the shifted
    state sequence when no dropout mask was applied (then h_{t-1} is H[t-1], or h0)."""
    h0, H = loop.h0, loop.H
    units, width = h0.shape[1], DZ.shape[-1]
    if loop.Hin is not None:
        return _block_outer(loop.Hin, DZ, units)
    out = h0.t() @ DZ[0]
    if DZ.shape[0] > 1:
        out.addmm_(H[:-1].reshape(-1, units).t(), DZ[1:].reshape(-1, width))
    return out


#: canonical LSTM gate blocks (i, f, c, o) in the internal order (i, f, o, c)
LSTM_ORDER = (0, 1, 3, 2)


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
    if gate_name in builtin_cells.FOLDED_GATES:
        slope, offset = builtin_cells.FOLDED_GATES[gate_name]
        scale = kernel.new_ones(kernel.shape[1])
        scale[:gate_cols] = slope
        shift = kernel.new_zeros(kernel.shape[1])
        shift[:gate_cols] = offset
        kernel, U = kernel * scale, U * scale
        bias_in = shift if bias_in is None else torch.addcmul(shift, bias_in, scale)
        bias_rec = None if bias_rec is None else bias_rec * scale
        gate_name = CLAMP01
    return kernel, U, bias_in, bias_rec, gate_name, order


def scan(spec, gate_name, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr, mi=None):
    """Every step's carried h as (B, T, u), and the final states. Give either the
    time-major inputs ``x`` with ``kernel``/``bias_in``, or projected inputs ``xp``; all
    weights in the internal layout (see internal_weights)."""
    if c0 is None:
        c0 = h0.new_zeros(h0.shape)
    cfg = (spec.layer, spec.units, spec.activation, gate_name, spec.reset_after)
    H, c, *_ = _Scan.apply(cfg, x, kernel, bias_in, xp, U, bias_rec, h0, c0, mask, mr, mi)
    final = [H[-1], c] if spec.layer == "LSTM" else [H[-1]]
    return H.transpose(0, 1), final
