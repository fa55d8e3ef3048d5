"""The built-in layers' cells, written once against an array namespace.

SimpleRNN, LSTM and GRU (both forms) are :class:`multirnn.Cell` subclasses here, so
``multirnn.RNN(LSTMCell(8))`` is the layer ``multirnn.LSTM(8)`` computes. The same
functions are what every engine's generic paths run: the automatically differentiated
loops (JAX ``lax.scan``, TensorFlow ``tf.while_loop``, PyTorch's autograd loop) call
:func:`transition`, and the JAX and TensorFlow loops with a hand-written backward pass
call :func:`saving_step`, :func:`step_back` and the weight gradients (:func:`weight_grads`,
or its parts where a loop adds up the recurrent kernel's). PyTorch's loop with a
hand-written backward pass writes the steps' combinations (:class:`Elementwise`,
:func:`lstm_carry`, :func:`gru_candidate`) into its buffers and forms the cells' local
derivatives for all steps at once (:func:`lstm_coefficients`, :func:`gru_coefficients`,
:func:`derivative`). The engines keep only their loops and their fused kernels; a formula
changes here, in one place. (PyTorch's native loop, ``csrc/scan.cpp``, is C++ of the same
formulas; its tests check it against the steps here.)

``ops`` is an array API namespace (``jax.numpy``, array-api-compat's torch, the
TensorFlow adapter). Steps use operators and slicing on arrays where the standard has
them, so a traced program is the one a hand-written step gives. The NumPy reference engine
(``multirnn.reference``) does not use this module: it is the oracle the engines are
checked against, so it stays written on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from multirnn import cells, initializers
from multirnn import spec as specs

__all__ = ["GRUCell", "LSTMCell", "SimpleRNNCell"]

Array = Any

# -- the recurrent product --------------------------------------------------------------------


class GateProduct:
    """``v -> (v * mask_g) K_g`` for the first ``n`` gate blocks of a kernel ``K`` (rows,
    G*units), side by side: the recurrent product ``h U`` (or the input product ``x W``)
    under no dropout mask, one mask shared by the gates (batch, rows), or one per gate
    (G, batch, rows); with the gradients of the same.
    """

    def __init__(self, ops: Any, kernel: Array, units: int, gates: int, mask=None,
                 batched: bool = True) -> None:  # fmt: skip
        """``batched``: per-gate products as one batched product, else one product per
        gate (faster where a batched product costs more than its parts: TensorFlow's
        graphs)."""
        self.ops, self.recurrent, self.units, self.gates, self.mask = (
            ops, kernel, units, gates, mask,
        )  # fmt: skip
        self.split = _splitter(ops)
        self.per_gate = mask is not None and len(mask.shape) == 3
        self.batched = batched
        if self.per_gate and batched:
            blocks = ops.reshape(kernel, (kernel.shape[0], gates, units))
            self.blocks = ops.permute_dims(blocks, (1, 0, 2))  # (G, rows, units)

    def __call__(self, h: Array, n: int) -> Array:
        u = self.units
        if not self.per_gate:
            hd = h if self.mask is None else h * self.mask
            return hd @ (self.recurrent if n == self.gates else self.recurrent[:, : n * u])
        if not self.batched:
            parts = [(h * self.mask[g, ...]) @ self.recurrent[:, g * u : (g + 1) * u]
                     for g in range(n)]  # fmt: skip
            return self.ops.concat(parts, axis=1)
        hd = h[None, ...] * self.mask[:n, ...]
        out = self.ops.matmul(hd, self.blocks[:n, ...])  # (n, batch, u)
        return self.ops.reshape(self.ops.permute_dims(out, (1, 0, 2)), (-1, n * u))

    def candidate(self, r: Array, h: Array) -> Array:
        """The GRU's (``reset_after=False``) candidate product ``(r * h) U_h``, with the
        candidate gate's dropout mask on ``h``."""
        return (r * self.masked(h, 2)) @ self.recurrent[:, 2 * self.units :]

    def masked(self, h: Array, gate: int) -> Array:
        """``h`` as gate ``gate``'s product sees it (under its dropout mask, if any); ``h``
        may be one step's or a time-major stack of them."""
        if self.mask is None:
            return h
        return h * (self.mask[gate, ...] if self.per_gate else self.mask)

    def back(self, dz: Array, KT: Array, n: int) -> Array:
        """The gradient reaching ``v`` through the first ``n`` gates' products from theirs,
        ``dz`` (batch, n units; or a time-major stack), with ``KT`` the kernel's transpose:
        ``(dz K^T) mask``, or per gate ``sum_g (dz_g K_g^T) mask_g``."""
        u = self.units
        if not self.per_gate:
            dv = dz @ (KT if n == self.gates else KT[: n * u])
            return dv if self.mask is None else dv * self.mask
        total = None
        for g in range(n):
            part = (dz[..., g * u : (g + 1) * u] @ KT[g * u : (g + 1) * u]) * self.mask[g, ...]
            total = part if total is None else total + part
        return total

    def kernel_grad(self, h_prev: Array, dz: Array, n: int, outer: Callable) -> Array:
        """The first ``n`` gate blocks of the kernel's gradient, ``sum v^T dz`` with each
        gate's ``v`` under its mask (``outer(ops, a, b)``: ``sum a^T b``)."""
        if not self.per_gate:
            return outer(self.ops, self.masked(h_prev, 0), dz)
        u = self.units
        blocks = [outer(self.ops, self.masked(h_prev, g), dz[..., g * u : (g + 1) * u])
                  for g in range(n)]  # fmt: skip
        return self.ops.concat(blocks, axis=-1)


def split_bias(ops: Any, spec: specs.LayerSpec, weights: Sequence[Array]):
    """(input-side bias, recurrent-side bias or None) of canonical weights."""
    kernel = weights[0]
    if not spec.use_bias:
        return ops.zeros((spec.gates * spec.units,), dtype=kernel.dtype), None
    bias = weights[2]
    if spec.layer == "GRU" and spec.reset_after:
        return bias[0, ...], bias[1, ...]
    return bias, None


def project_inputs(ops: Any, spec: specs.LayerSpec, kernel, bias_in, x, mi) -> Array:
    """``x_t W + b`` for every step at once: (batch, time, F) -> (time, batch, G*u).

    Input dropout masks are (batch, F) shared by the gates, or (G, batch, F) per gate.
    """
    xt = ops.permute_dims(x, (1, 0, 2))
    if mi is None or len(mi.shape) == 2:
        xp = (xt if mi is None else xt * mi[None, ...]) @ kernel
    else:
        u = spec.units
        parts = [(xt * mi[k, ...]) @ kernel[:, k * u : (k + 1) * u] for k in range(spec.gates)]
        xp = ops.concat(parts, axis=-1)
    return xp + bias_in


def fused_formula(spec: specs.LayerSpec) -> str | None:
    """None when the cell is the formula the frameworks' fused kernels (cuDNN, oneDNN,
    ``torch.nn``) compute; otherwise why it is not. Every engine's fused path asks this
    first, then its own questions (devices, masks, dropout)."""
    if spec.layer == "LSTM":
        if spec.activation != "tanh" or spec.recurrent_activation != "sigmoid":
            return "fused LSTM kernels compute tanh/sigmoid only"
    elif spec.layer == "GRU":
        if not spec.reset_after:
            return (
                "fused GRU kernels apply the reset gate after the recurrent product "
                "(reset_after=True)"
            )
        if spec.activation != "tanh" or spec.recurrent_activation != "sigmoid":
            return "fused GRU kernels compute tanh/sigmoid only"
    elif spec.activation not in ("tanh", "relu"):
        return "fused RNN kernels compute tanh or relu only"
    return None


def fused_call(spec: specs.LayerSpec, *, mask: str = "none", input_dropout: str = "none",
               recurrent_dropout: bool = False, unroll: bool = True) -> str | None:  # fmt: skip
    """None when a fused kernel can run this call of ``spec``; otherwise why not: its
    formula (:func:`fused_formula`), then what every fused kernel needs of the call.

    ``mask`` is "none", "right_padded" (every row a prefix of at least one step) or "other";
    ``input_dropout`` is "none", "shared" (one mask for all gates) or "per_gate";
    ``unroll``: whether ``unroll=True`` declines (a kernel whose framework unrolls loops).
    """
    formula = fused_formula(spec)
    if formula:
        return formula
    if recurrent_dropout:
        return "recurrent dropout multiplies the state inside the loop"
    if input_dropout == "per_gate":
        return "per-gate input dropout masks need one input product per gate"
    if mask == "other":
        return "only right-padded masks map to the kernel's sequence lengths"
    if mask == "right_padded" and spec.go_backwards:
        return "go_backwards turns right padding into left padding"
    if unroll and spec.unroll:
        return "unroll=True asks for a statically unrolled loop"
    return None


# -- the elementwise maths of a step -----------------------------------------------------------


class Elementwise:
    """The elementwise combinations the steps are made of. Each formula of this module is
    written once against these. Here they are operators on any array API arrays (``out``
    is ignored), so a traced program is the one a hand-written step gives;
    :class:`IntoBuffers` writes the same combinations into a loop's buffers."""

    buffers: Any = None

    @staticmethod
    def mul(a: Array, b: Array, out: Array | None = None) -> Array:
        """``a b``."""
        return a * b

    @staticmethod
    def fma(c: Array, a: Array, b: Array, out: Array | None = None) -> Array:
        """``c + a b``."""
        return c + a * b

    @staticmethod
    def blend(z: Array, h: Array, hh: Array, out: Array | None = None) -> Array:
        """``z h + (1 - z) hh``: the GRU's update."""
        return z * h + (1.0 - z) * hh

    @staticmethod
    def activate(act: Callable, v: Array, out: Array | None = None) -> Array:
        """``act(v)``."""
        return act(v)


class IntoBuffers(Elementwise):
    """:class:`Elementwise`'s combinations written into ``out`` (a new array when it is
    None), each in one pass, by ``buffers``: a namespace with PyTorch's ``out=`` functions
    (``mul``, ``addcmul``, ``lerp``), for a loop that keeps its results in buffers it
    allocated once. The functions are bound as they are: no Python call between the loop
    and the kernel. Activations must take ``out`` too."""

    def __init__(self, buffers: Any) -> None:
        self.buffers = buffers
        self.mul = buffers.mul
        self.fma = buffers.addcmul
        # the same update as hh + z (h - hh)
        self.blend = lambda z, h, hh, out=None: buffers.lerp(hh, h, z, out=out)
        self.activate = lambda act, v, out=None: act(v, out=out)


#: the out-of-place combinations (every namespace)
ARRAYS = Elementwise()


def lstm_carry(e: Elementwise, i: Array, f: Array, g: Array, c: Array, out=None) -> Array:
    """The LSTM's new carry ``f c + i g`` from its activated gates."""
    return e.fma(e.mul(f, c, out=out), i, g, out=out)


def lstm_output(e: Elementwise, act: Callable, o: Array, c: Array, out=None) -> Array:
    """The LSTM's new ``h``: ``o act(c)`` of the new carry."""
    return e.mul(e.activate(act, c, out=out), o, out=out)


def gru_candidate(e: Elementwise, xh: Array, r: Array, rh: Array, out=None) -> Array:
    """The GRU's candidate pre-activation with the reset gate after the recurrent product
    (``reset_after``): ``xh + r rh``; before it, ``rh`` is ``(r h) U_h`` and ``r`` is 1."""
    return e.fma(xh, r, rh, out=out)


# -- one step ----------------------------------------------------------------------------------


def _splitter(ops: Any) -> Callable | None:
    """The namespace's column split, where it offers one (the TensorFlow adapter's
    ``_split_columns``: one op, not one per block, per step of a loop); looked up once per
    loop, not per step."""
    return getattr(ops, "_split_columns", None)


def _blocks(z: Array, u: int, n: int, split: Callable | None = None) -> list[Array]:
    """The ``n`` gate blocks of ``z``'s columns (``split``: see :func:`_splitter`)."""
    if split is not None:
        return split(z, n)
    return [z[:, k * u : (k + 1) * u] for k in range(n)]


def transition(
    spec: specs.LayerSpec,
    act: Callable,
    ract: Callable | None,
    xp: Array,
    states: Sequence[Array],
    product: GateProduct,
    bias_rec: Array | None = None,
) -> list[Array]:
    """One step of the layer ``spec`` describes: (projected input ``x_t W + b``, states) ->
    new states; the output is the new ``h`` (the first state)."""
    u, split = spec.units, product.split
    h = states[0]
    if spec.layer == "SimpleRNN":
        return [act(xp + product(h, 1))]
    if spec.layer == "LSTM":
        i, f, g, o = _blocks(xp + product(h, 4), u, 4, split)
        c = lstm_carry(ARRAYS, ract(i), ract(f), act(g), states[1])
        return [lstm_output(ARRAYS, act, ract(o), c), c]
    xz, xr, xh = _blocks(xp, u, 3, split)
    if spec.reset_after:
        rec = product(h, 3)
        if bias_rec is not None:
            rec = rec + bias_rec
        rz, rr, rh = _blocks(rec, u, 3, split)
        z, r = ract(xz + rz), ract(xr + rr)
        hh = act(gru_candidate(ARRAYS, xh, r, rh))
    else:
        rz, rr = _blocks(product(h, 2), u, 2, split)
        z, r = ract(xz + rz), ract(xr + rr)
        hh = act(xh + product.candidate(r, h))
    return [ARRAYS.blend(z, h, hh)]


# -- the hand-written backward pass (JAX and TensorFlow) -------------------------------------

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _inside(ops: Any, y: Array, slope: float) -> Array:
    inside = ops.astype((y > 0.0) & (y < 1.0), y.dtype)
    return inside if slope == 1.0 else inside * slope


#: activation name -> (ops, y) -> the derivative, as a function of the activation's output
DERIVATIVES: dict[str, Callable[[Any, Array], Array]] = {
    "tanh": lambda ops, y: 1.0 - y * y,
    "sigmoid": lambda ops, y: y * (1.0 - y),
    "exponential": lambda ops, y: y,  # exp' = exp
    "hard_sigmoid": lambda ops, y: _inside(ops, y, 0.2),
    "hard_sigmoid_relu6": lambda ops, y: _inside(ops, y, 1.0 / 6.0),
    "relu": lambda ops, y: ops.astype(y > 0.0, y.dtype),
    "linear": lambda ops, y: ops.ones_like(y),
    "softsign": lambda ops, y: ops.square(1.0 - ops.abs(y)),
    "softplus": lambda ops, y: -ops.expm1(-y),
    "elu": lambda ops, y: ops.where(y > 0.0, ops.ones_like(y), y + 1.0),
    "selu": lambda ops, y: ops.where(
        y > 0.0, ops.full_like(y, _SELU_SCALE), y + _SELU_SCALE * _SELU_ALPHA
    ),
}


#: piecewise-linear gate -> (slope, offset): ``gate(z) = clip(slope z + offset, 0, 1)``. A loop
#: may fold the affine part into the gate's weights and then apply :data:`CLAMP01`.
FOLDED_GATES = {"hard_sigmoid": (0.2, 0.5), "hard_sigmoid_relu6": (1.0 / 6.0, 0.5)}

#: the gate after folding: ``clip(z, 0, 1)``, of slope 1 inside (0, 1)
CLAMP01 = "clamp01"

#: the derivatives of :data:`DERIVATIVES` (and of :data:`CLAMP01`) written into a buffer in
#: one pass, with :class:`Elementwise`'s ``buffers`` namespace, for the large time-stacked
#: arrays a loop keeps (no temporaries of their size); the others are copied into it
_DERIVATIVES_INTO: dict[str, Callable[[Any, Array, Array], Array]] = {
    "tanh": lambda t, y, out: t.mul(y, y, out=out).neg_().add_(1.0),
    "sigmoid": lambda t, y, out: t.addcmul(y, y, y, value=-1.0, out=out),  # y - y y
    CLAMP01: lambda t, y, out: t.addcmul(y, y, y, value=-1.0, out=out).gt_(0.0),
}


def derivative(
    ops: Any, name: str, y: Array, out: Array | None = None, e: Elementwise = ARRAYS
) -> Array:
    """``activation'`` as a function of the activation's output ``y``; into ``out`` with
    ``e``'s buffers namespace when given."""
    if out is not None:
        into = _DERIVATIVES_INTO.get(name)
        if into is not None:
            return into(e.buffers, y, out)
        out[...] = derivative(ops, name, y)
        return out
    if name == CLAMP01:
        return _inside(ops, y, 1.0)
    return DERIVATIVES[name](ops, y)


def differentiable(spec: specs.LayerSpec) -> bool:
    """Whether every activation of ``spec`` has a derivative in :data:`DERIVATIVES`."""
    names = [spec.activation] + ([spec.recurrent_activation] if spec.recurrent_activation else [])
    return all(isinstance(n, str) and n in DERIVATIVES for n in names)


def residual_widths(spec: specs.LayerSpec) -> list[int]:
    """The last-axis sizes of the arrays :func:`saving_step` keeps per step, in order (a
    loop that keeps them side by side in one array splits them apart by these)."""
    u = spec.units
    if spec.layer == "SimpleRNN":
        return [u]
    if spec.layer == "LSTM":
        return [4 * u, u]
    return [u] * (4 if spec.reset_after else 3)


def residual_count(spec: specs.LayerSpec) -> int:
    """How many arrays :func:`saving_step` keeps per step."""
    return len(residual_widths(spec))


def saving_step(ops, spec, act, ract, W, U, b_in, b_rec, x_t, states, product=None,
                inputs=None):  # fmt: skip
    """(new states, residuals) of one step from the raw input ``x_t``; the residuals are
    what :func:`step_back` needs. ``b_rec`` has size 0 when there is no recurrent bias.
    ``product`` and ``inputs``: the :class:`GateProduct` of ``U`` and of ``W`` with their
    dropout masks (default: none)."""
    u, split = spec.units, _splitter(ops)
    h = states[0]
    if product is None:
        product = GateProduct(ops, U, u, spec.gates)
    xp = (x_t @ W if inputs is None else inputs(x_t, spec.gates)) + b_in
    if spec.layer == "SimpleRNN":
        y = act(xp + product(h, 1))
        return [y], (y,)
    if spec.layer == "LSTM":
        zi, zf, zg, zo = _blocks(xp + product(h, 4), u, 4, split)
        i, f, g, o = ract(zi), ract(zf), act(zg), ract(zo)
        c = lstm_carry(ARRAYS, i, f, g, states[1])
        tc = act(c)
        return [o * tc, c], (ops.concat([i, f, g, o], axis=1), tc)
    xz, xr, xh = _blocks(xp, u, 3, split)
    if spec.reset_after:
        rec = product(h, 3)
        if b_rec.shape[0]:
            rec = rec + b_rec
        rz, rr, rh = _blocks(rec, u, 3, split)
        z, r = ract(xz + rz), ract(xr + rr)
        hh = act(gru_candidate(ARRAYS, xh, r, rh))
        return [ARRAYS.blend(z, h, hh)], (z, r, hh, rh)
    rz, rr = _blocks(product(h, 2), u, 2, split)
    z, r = ract(xz + rz), ract(xr + rr)
    hh = act(xh + product.candidate(r, h))
    return [ARRAYS.blend(z, h, hh)], (z, r, hh)


def _grad(ops: Any, name: str, y: Array, dy: Array) -> Array:
    """``dy * activation'`` from the activation's output ``y``: one fused op where the
    namespace offers it (the TensorFlow adapter's ``_activation_grad``: TanhGrad,
    SigmoidGrad), else the product with :data:`DERIVATIVES`."""
    fused = getattr(ops, "_activation_grad", None)
    if fused is not None:
        out = fused(name, y, dy)
        if out is not None:
            return out
    return dy * derivative(ops, name, y)


def step_back(ops, spec, UT, residuals, old, d_new, product=None):
    """Gradients of one step, given ``UT`` (the recurrent kernel transposed, formed once
    per call): (d pre-activations, input side; d recurrent-product outputs, or None when
    they are the same; d old states). ``product``: the forward step's, for its recurrent
    dropout mask."""
    u, split = spec.units, _splitter(ops)
    a, ra = spec.activation, spec.recurrent_activation
    h = old[0]
    if product is None:
        product = GateProduct(ops, None, u, spec.gates)
    if spec.layer == "SimpleRNN":
        (y,) = residuals
        dz = _grad(ops, a, y, d_new[0])
        return dz, None, [product.back(dz, UT, 1)]
    if spec.layer == "LSTM":
        gates, tc = residuals
        i, f, g, o = _blocks(gates, u, 4, split)
        dh, dc = d_new
        dc = dc + _grad(ops, a, tc, dh * o)
        dz = ops.concat(
            [
                _grad(ops, ra, i, dc * g),
                _grad(ops, ra, f, dc * old[1]),
                _grad(ops, a, g, dc * i),
                _grad(ops, ra, o, dh * tc),
            ],
            axis=1,
        )
        return dz, None, [product.back(dz, UT, 4), dc * f]
    (dh,) = d_new
    if spec.reset_after:
        z, r, hh, rec_h = residuals
        dzg = _grad(ops, ra, z, dh * (h - hh))
        dpre_h = _grad(ops, a, hh, dh * (1.0 - z))
        dr = _grad(ops, ra, r, dpre_h * rec_h)
        dxp = ops.concat([dzg, dr, dpre_h], axis=1)
        drec = ops.concat([dzg, dr, dpre_h * r], axis=1)
        return dxp, drec, [dh * z + product.back(drec, UT, 3)]
    z, r, hh = residuals
    dzg = _grad(ops, ra, z, dh * (h - hh))
    dpre_h = _grad(ops, a, hh, dh * (1.0 - z))
    d_rh = dpre_h @ UT[2 * u :]
    dr = _grad(ops, ra, r, d_rh * product.masked(h, 2))
    dzr = ops.concat([dzg, dr], axis=1)
    dxp = ops.concat([dzr, dpre_h], axis=1)
    return dxp, None, [dh * z + product.masked(d_rh * r, 2) + product.back(dzr, UT, 2)]


# -- the same derivatives as coefficients (PyTorch's loop) -----------------------------------
#
# A loop may form each step's local derivatives before it walks back, then only multiply
# them by the incoming gradients step by step. They are elementwise, so these take one
# step's arrays or every step's at once (stacked along a leading time axis); with ``out``
# (and ``e`` writing into buffers) they fill the loop's buffers. :func:`step_back` applies
# the same chain rule step by step, where a namespace's fused activation gradients help.


def lstm_coefficients(ops, act, ract, i, f, o, g, c_prev, tc, out=(None,) * 5, e=ARRAYS):
    """The LSTM's local derivatives from its activated gates ``i, f, o, g``, the previous
    carry and ``tc = act(c)`` of the new one: (i and f pre-activations from the new carry:
    ``ract'(i) g``, ``ract'(f) c_prev``; o's from h: ``ract'(o) tc``; the candidate's from
    the new carry: ``act'(g) i``; the new carry from h: ``act'(tc) o``). The previous carry
    takes the new carry's gradient times ``f``. ``out`` (five buffers; the last may be
    ``tc`` itself) receives them in that order."""
    o_i, o_f, o_o, o_g, o_c = out
    return (
        e.mul(derivative(ops, ract, i, o_i, e), g, out=o_i),
        e.mul(derivative(ops, ract, f, o_f, e), c_prev, out=o_f),
        e.mul(derivative(ops, ract, o, o_o, e), tc, out=o_o),
        e.mul(derivative(ops, act, g, o_g, e), i, out=o_g),
        e.mul(derivative(ops, act, tc, o_c, e), o, out=o_c),  # last: o_c may be tc
    )


def gru_coefficients(ops, act, ract, z, r, hh, h_prev, r_input):
    """The GRU's local derivatives from its gates ``z, r``, candidate ``hh`` and previous
    ``h``: (z's pre-activation from the new h: ``(h_prev - hh) ract'(z)``; r's from the
    candidate's pre-activation: ``r_input ract'(r)``, with ``r_input`` what ``r``
    multiplies (``rh`` with ``reset_after``, else the previous h as the product sees it);
    the candidate's from the new h: ``(1 - z) act'(hh)``). The previous h takes the new
    h's gradient times ``z``, plus what flows back through the recurrent product."""
    return (
        (h_prev - hh) * derivative(ops, ract, z),
        r_input * derivative(ops, ract, r),
        (1.0 - z) * derivative(ops, act, hh),
    )


def _outer(ops, a: Array, b: Array) -> Array:
    """``sum over (time, batch) of a^T b`` for time-major (time, batch, .) arrays."""
    return ops.tensordot(a, b, axes=((0, 1), (0, 1)))


def kernel_grads(ops, spec, xs, h_prev, residuals, dxp, drec, product=None, inputs=None):
    """(d kernel, d recurrent kernel) from the pre-activation gradients of every step at
    once (time-major stacks); ``product``, ``inputs``: as in :func:`saving_step`."""
    return (
        input_kernel_grad(ops, xs, dxp, inputs),
        recurrent_kernel_grad(ops, spec, h_prev, residuals, dxp, drec, product=product),
    )


def input_kernel_grad(ops, xs, dxp, inputs=None):
    """The input kernel's gradient over every step (time-major stacks)."""
    if inputs is None:
        return _outer(ops, xs, dxp)
    return inputs.kernel_grad(xs, dxp, inputs.gates, _outer)


def recurrent_kernel_grad(ops, spec, h_prev, residuals, dxp, drec, outer=_outer,
                          product=None):  # fmt: skip
    """The recurrent kernel's gradient: over every step (time-major stacks, the default
    ``outer``), or of one step, with ``outer(ops, a, b)`` the product ``a^T b`` of
    (batch, .) arrays, for a loop that adds it up step by step. ``product``: the forward
    step's, for its recurrent dropout mask."""
    if product is None:
        product = GateProduct(ops, None, spec.units, spec.gates)
    if spec.layer == "GRU" and not spec.reset_after:
        u, r = spec.units, residuals[1]
        candidate = outer(ops, r * product.masked(h_prev, 2), dxp[..., 2 * u :])
        return ops.concat(
            [product.kernel_grad(h_prev, dxp[..., : 2 * u], 2, outer), candidate], axis=1
        )
    return product.kernel_grad(h_prev, dxp if drec is None else drec, spec.gates, outer)


def weight_grads(ops, spec, W, b_rec, xs, h_prev, residuals, dxp, drec, product=None,
                 inputs=None):  # fmt: skip
    """(d kernel, d recurrent kernel, d input bias, d recurrent bias, d inputs) from every
    step's pre-activation gradients (time-major), as single large products."""
    d_W, d_U = kernel_grads(ops, spec, xs, h_prev, residuals, dxp, drec, product, inputs)
    return (d_W, d_U, *bias_and_input_grads(ops, W, b_rec, dxp, drec, inputs))


def bias_and_input_grads(ops, W, b_rec, dxp, drec, inputs=None):
    """(d input bias, d recurrent bias, d inputs) from every step's pre-activation
    gradients (time-major); ``inputs``: as in :func:`saving_step`."""
    drec = dxp if drec is None else drec
    d_b_rec = ops.sum(drec, axis=(0, 1)) if b_rec.shape[0] else ops.zeros_like(b_rec)
    WT = ops.matrix_transpose(W)
    d_xs = dxp @ WT if inputs is None else inputs.back(dxp, WT, inputs.gates)
    return ops.sum(dxp, axis=(0, 1)), d_b_rec, d_xs


# -- the built-in cells as Cells --------------------------------------------------------------

#: the options of a built-in layer that belong to its cell (the rest are the layer's)
CELL_OPTIONS = (
    "activation", "recurrent_activation", "use_bias", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
    "recurrent_regularizer", "bias_regularizer", "kernel_constraint", "recurrent_constraint",
    "bias_constraint", "reset_after",
)  # fmt: skip


class _UnitForgetBias(initializers.Initializer):
    """The LSTM's ``unit_forget_bias``: zeros, ones in the forget gate's block."""

    def __init__(self, units: int) -> None:
        self.units = units

    def __call__(self, shape, rng=None) -> np.ndarray:
        value = np.zeros(shape)
        value[..., self.units : 2 * self.units] = 1.0
        return value

    def get_config(self) -> dict[str, Any]:
        return {"units": self.units}


class _BuiltinCell(cells.Cell):
    """A built-in layer's cell: the options its layer takes for the cell, validated by the
    layer's own rules (so ``LSTMCell(8, recurrent_activation="sigmoid")`` is the cell of
    ``LSTM(8, recurrent_activation="sigmoid")``)."""

    layer: str = ""

    def __init__(self, units: int, **config: Any) -> None:
        owner = type(self).__name__
        allowed = [k for k in CELL_OPTIONS if k != "reset_after" or self.layer == "GRU"]
        allowed = [k for k in allowed if k != "recurrent_activation" or self.layer != "SimpleRNN"]
        allowed = [k for k in allowed if k != "unit_forget_bias" or self.layer == "LSTM"]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise TypeError(
                f"{owner} got an unexpected keyword argument {unknown[0]!r}; a cell takes "
                f"{', '.join(allowed)} (dropout, states and sequence options belong to the layer)"
            )
        self.layer_spec = specs.parse(self.layer, (units,), dict(config))
        super().__init__(units)
        self._config = {k: v for k, v in self.layer_spec.to_config().items() if k in allowed}

    def build(self, input_dim: int) -> None:
        spec = self.layer_spec
        shapes = spec.weight_shapes(input_dim)
        self.add_weight(
            "kernel", shapes["kernel"], spec.kernel_initializer, spec.kernel_regularizer,
            spec.kernel_constraint,
        )  # fmt: skip
        self.add_weight(
            "recurrent_kernel", shapes["recurrent_kernel"], spec.recurrent_initializer,
            spec.recurrent_regularizer, spec.recurrent_constraint,
        )  # fmt: skip
        if spec.use_bias:
            init = _UnitForgetBias(self.units) if spec.unit_forget_bias else spec.bias_initializer
            self.add_weight("bias", shapes["bias"], init, spec.bias_regularizer,
                            spec.bias_constraint)  # fmt: skip

    def step(self, ops, w, x, states):
        spec = self.layer_spec
        weights = [w[n] for n in spec.weight_names]
        bias_in, bias_rec = split_bias(ops, spec, weights)
        product = GateProduct(ops, weights[1], spec.units, spec.gates)
        act = ops.activation(spec.activation)
        ract = ops.activation(spec.recurrent_activation) if spec.recurrent_activation else None
        new = transition(spec, act, ract, x @ weights[0] + bias_in, states, product, bias_rec)
        return new[0], new


class SimpleRNNCell(_BuiltinCell):
    """The cell of :class:`multirnn.SimpleRNN`, for ``multirnn.RNN``."""

    layer = "SimpleRNN"
    state_names = ("h",)


class LSTMCell(_BuiltinCell):
    """The cell of :class:`multirnn.LSTM`, for ``multirnn.RNN``."""

    layer = "LSTM"
    state_names = ("h", "c")


class GRUCell(_BuiltinCell):
    """The cell of :class:`multirnn.GRU` (either form, ``reset_after``), for ``multirnn.RNN``."""

    layer = "GRU"
    state_names = ("h",)


for _cls in (SimpleRNNCell, LSTMCell, GRUCell):
    cells.register_cell(_cls)


def cell_of(spec: specs.LayerSpec) -> _BuiltinCell:
    """The cell a built-in layer of ``spec`` runs: ``SimpleRNN(...)`` is ``RNN`` of it.

    Made from the layer's validated spec rather than through the cell's arguments, so a
    layer with Python callables (which have no config) has its cell too."""
    cls = _CELLS[spec.layer]
    cell = cls.__new__(cls)
    cells.Cell.__init__(cell, spec.units)
    cell.layer_spec = spec
    return cell


_CELLS: dict[str, type[_BuiltinCell]] = {c.layer: c for c in (SimpleRNNCell, LSTMCell, GRUCell)}
