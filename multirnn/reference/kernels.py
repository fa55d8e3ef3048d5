"""The reference computation, written to read like the cell maths and options of
docs/semantics.md rather than to be fast.

:func:`forward` is the functional entry: spec, canonical weights and inputs in; output
and final states out. Dropout masks are passed in explicitly (already scaled, e.g.
``keep / (1 - p)``), so other engines can be compared with it exactly under dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multirnn import activations, calls, precision
from multirnn import weights as canonical
from multirnn.ops import NUMPY_OPS
from multirnn.spec import LayerSpec

DEFAULT_DTYPE = "float64"


def _gate(array: np.ndarray, g: int, units: int) -> np.ndarray:
    return array[..., g * units : (g + 1) * units]


def _drop(v: np.ndarray, mask: np.ndarray | None, g: int) -> np.ndarray:
    """``v * mask`` for gate ``g``: masks are (batch, width) shared or (G, batch, width)."""
    if mask is None:
        return v
    m = mask[g] if mask.ndim == 3 else mask
    return v * (m[:, None, :] if v.ndim == 3 else m)


def _shared(mask: np.ndarray | None) -> bool:
    return mask is None or mask.ndim == 2


class _Projections:
    """Input and recurrent products grouped as ``implementation`` says:
    0 - input products of all steps up front; 1 - one product per gate per step;
    2 - one fused product per step (per gate only when per-gate dropout masks forbid it).
    """

    def __init__(self, spec, kernel, recurrent_kernel, bias_in, bias_rec, x, mi, mr):
        self.spec, self.u, self.G = spec, spec.units, spec.gates
        self.W, self.U, self.bi, self.br = kernel, recurrent_kernel, bias_in, bias_rec
        self.x, self.mi, self.mr = x, mi, mr
        self.hoisted = None
        if spec.implementation == 0:
            self.hoisted = [
                _drop(x, mi, g) @ _gate(kernel, g, self.u) + _gate(bias_in, g, self.u)
                for g in range(self.G)
            ]

    def inputs(self, t: int) -> list[np.ndarray]:
        u, G = self.u, self.G
        if self.hoisted is not None:
            return [p[:, t] for p in self.hoisted]
        x_t = self.x[:, t]
        if self.spec.implementation == 2 and _shared(self.mi):
            full = _drop(x_t, self.mi, 0) @ self.W + self.bi
            return [_gate(full, g, u) for g in range(G)]
        return [
            _drop(x_t, self.mi, g) @ _gate(self.W, g, u) + _gate(self.bi, g, u) for g in range(G)
        ]

    def recurrent(self, h: np.ndarray, gates: Sequence[int]) -> list[np.ndarray]:
        """``(h * mask_g) U_g (+ recurrent bias)`` for consecutive gates starting at 0."""
        u = self.u
        if self.spec.implementation == 2 and _shared(self.mr):
            n = len(gates)
            full = _drop(h, self.mr, 0) @ self.U[:, : n * u]
            parts = [_gate(full, g, u) for g in gates]
        else:
            parts = [_drop(h, self.mr, g) @ _gate(self.U, g, u) for g in gates]
        if self.br is not None:
            parts = [p + _gate(self.br, g, u) for g, p in zip(gates, parts)]
        return parts


def _cell(spec: LayerSpec, act, ract, proj: _Projections, t: int, states: list[np.ndarray]):
    """One step of the cell maths; returns the new states (the output is ``states[0]``)."""
    h = states[0]
    xs = proj.inputs(t)
    if spec.layer == "SimpleRNN":
        (r,) = proj.recurrent(h, [0])
        return [act(xs[0] + r)]
    if spec.layer == "LSTM":
        c = states[1]
        rs = proj.recurrent(h, [0, 1, 2, 3])
        i, f, g, o = (xs[k] + rs[k] for k in range(4))
        c_new = ract(f) * c + ract(i) * act(g)
        return [ract(o) * act(c_new), c_new]
    # GRU
    if spec.reset_after:
        rz, rr, rh = proj.recurrent(h, [0, 1, 2])
        z = ract(xs[0] + rz)
        r = ract(xs[1] + rr)
        hh = act(xs[2] + r * rh)
    else:
        rz, rr = proj.recurrent(h, [0, 1])
        z = ract(xs[0] + rz)
        r = ract(xs[1] + rr)
        u = spec.units
        hh = act(xs[2] + (r * _drop(h, proj.mr, 2)) @ _gate(proj.U, 2, u))
    return [z * h + (1.0 - z) * hh]


def as_array(value: object, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # e.g. a framework tensor on an accelerator
        raise TypeError(
            f"{what} must be a NumPy array (or convertible), got {type(value)}"
        ) from exc


def forward(
    spec: LayerSpec,
    weights: Sequence[np.ndarray],
    inputs: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    initial_state: Sequence[np.ndarray] | None = None,
    input_dropout: np.ndarray | None = None,
    recurrent_dropout: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the layer described by ``spec`` as a pure function.

    Returns ``(output, final_states)`` where ``output`` is ``(batch, units)``, or
    ``(batch, time, units)`` with ``return_sequences`` (in processing order). Computes in
    ``spec.dtype`` (float64 when None); inputs and states are cast to it (see
    :func:`multirnn.calls.host_array`).
    """
    dtype = precision.values(spec.dtype) or DEFAULT_DTYPE
    kernel, recurrent_kernel, *rest = canonical.check(spec, list(weights), what="weights")
    bias = rest[0] if rest else None
    x = host(spec.layer, inputs, "inputs", dtype)
    input_dim = kernel.shape[0]
    call = calls.inputs(spec, x.shape, x.dtype.name, expected_dtype=dtype, input_dim=input_dim)
    if mask is not None:
        mask = host(spec.layer, mask, "mask", None)
        calls.mask(spec, mask.shape, mask.dtype.name, call)
    states = initial_states(spec, initial_state, call, dtype)
    scale = precision.arithmetic(dtype)  # 1 / (1 - rate) is rarely a bfloat16 number
    mi = dropout_mask(spec, input_dropout, call.batch, call.input_dim, "input_dropout", scale)
    mr = dropout_mask(spec, recurrent_dropout, call.batch, spec.units, "recurrent_dropout", scale)
    kernel, recurrent_kernel = _cast(kernel, dtype), _cast(recurrent_kernel, dtype)
    return scan(spec, kernel, recurrent_kernel, bias, x, mask, states, mi, mr)


def _cast(array: np.ndarray | None, dtype: str) -> np.ndarray | None:
    return None if array is None else array.astype(precision.numpy_dtype(dtype), copy=False)


def host(owner: str, value: object, what: str, dtype: str | None) -> np.ndarray:
    """A call argument under the engines' common input rule (floats cast to ``dtype``)."""
    return calls.host_array(value, owner=owner, arg=what, native=None, dtype=dtype)


def initial_states(spec, initial_state, call, dtype, owner=None) -> list[np.ndarray]:
    if initial_state is None:
        zeros = np.zeros((call.batch, spec.units), precision.numpy_dtype(dtype))
        return [zeros.copy() for _ in range(spec.num_states)]
    states = calls.state_list(initial_state)
    states = [host(owner or spec.layer, s, "initial_state", dtype) for s in states]
    calls.states(
        spec,
        [s.shape for s in states],
        [s.dtype.name for s in states],
        batch=call.batch,
        expected_dtype=dtype,
    )
    return states


def dropout_mask(spec, mask, batch, width, arg, dtype):
    if mask is None:
        return None
    mask = as_array(mask, arg)
    calls.dropout_mask(spec, mask.shape, batch=batch, width=width, arg=arg)
    return mask.astype(dtype)


def scan(spec, kernel, recurrent_kernel, bias, x, mask, states, mi, mr):
    """The loop, in the inputs' dtype; a low-precision call's in float32
    (:mod:`multirnn.precision`; with float32 weights too, a mixed policy's)."""
    if x.dtype.name in precision.LOW:

        def wide(weights, x, states, mi, mr):
            return scan(spec, *weights, x, mask, states, mi, mr)

        return precision.widened(_cast, x.dtype.name, wide, [kernel, recurrent_kernel, bias],
                                 x, states, (mi, mr))  # fmt: skip
    dtype = kernel.dtype
    act = activations.function(spec.activation, NUMPY_OPS)
    ract = None
    if spec.recurrent_activation is not None:
        ract = activations.function(spec.recurrent_activation, NUMPY_OPS)
    width = spec.gates * spec.units
    if bias is None:
        bias_in, bias_rec = np.zeros(width, dtype), None
    elif spec.reset_after:
        bias_in, bias_rec = bias[0].astype(dtype), bias[1].astype(dtype)
    else:
        bias_in, bias_rec = bias.astype(dtype), None
    if spec.go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    proj = _Projections(spec, kernel, recurrent_kernel, bias_in, bias_rec, x, mi, mr)
    batch, time = x.shape[:2]
    previous = np.zeros((batch, spec.units), dtype)
    outputs = []
    for t in range(time):
        new = _cell(spec, act, ract, proj, t, states)
        if mask is None:
            states, out = new, new[0]
        else:
            keep = mask[:, t, None]
            states = [np.where(keep, n, s) for n, s in zip(new, states)]
            fill = np.zeros_like(previous) if spec.zero_output_for_mask else previous
            out = np.where(keep, new[0], fill)
        outputs.append(out)
        previous = out
    output = np.stack(outputs, axis=1) if spec.return_sequences else outputs[-1]
    return np.asarray(output, dtype), [np.asarray(s, dtype) for s in states]
