"""Weight layouts of the peers, as NumPy functions: canonical weights <-> a peer's arrays.

Kept apart from the framework objects so that every gate permutation, transpose and bias
split is tested exactly without any framework installed. Canonical layout: ``kernel``
``(input_dim, G*units)``, ``recurrent_kernel`` ``(units, G*units)``, ``bias`` ``(G*units,)``,
or ``(2, 3*units)`` for a GRU with ``reset_after=True``; gate blocks LSTM i, f, c, o and
GRU z, r, h.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multirnn.spec import LayerSpec

GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}

#: PyTorch's and Flax's GRU gate order is r, z, n; canonical is z, r, h (self-inverse)
RZ_SWAP = (1, 0, 2)


class ConversionError(ValueError):
    """A conversion with no exact mapping, or input that is not what it claims to be."""


def permute_gates(array: np.ndarray, order: Sequence[int], axis: int = -1) -> np.ndarray:
    """Reorder the equal gate blocks of ``array`` along ``axis``: slot k gets block order[k]."""
    blocks = np.split(array, len(order), axis=axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)


def _expect(what: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise ConversionError(f"{what} must have shape {shape}, got {array.shape}")
    return array


# -- PyTorch: weight_ih (G*H, in), weight_hh (G*H, H), bias_ih, bias_hh (G*H,) ---------------


def from_torch(layer: str, units: int, w_ih, w_hh, b_ih=None, b_hh=None) -> list[np.ndarray]:
    """Canonical weights of one direction of one torch layer.

    LSTM and RNN have one canonical bias, ``b_ih + b_hh`` (in bfloat16 or float16 that sum
    is rounded once); the GRU keeps both (PyTorch's GRU is the ``reset_after=True`` form).
    """
    g = GATES[layer]
    w_ih = np.asarray(w_ih)
    if w_ih.ndim != 2:
        raise ConversionError(f"weight_ih must be 2-D (gates*hidden, input), got {w_ih.shape}")
    w_ih = _expect("weight_ih", w_ih, (g * units, w_ih.shape[1]))
    w_hh = _expect("weight_hh", w_hh, (g * units, units))
    if layer == "GRU":
        w_ih, w_hh = permute_gates(w_ih, RZ_SWAP, 0), permute_gates(w_hh, RZ_SWAP, 0)
    weights = [np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)]
    if b_ih is None and b_hh is None:
        return weights
    if b_ih is None or b_hh is None:
        raise ConversionError("bias_ih and bias_hh must both be given, or neither")
    b_ih = _expect("bias_ih", b_ih, (g * units,))
    b_hh = _expect("bias_hh", b_hh, (g * units,))
    if layer == "GRU":
        return [*weights, np.stack([permute_gates(b_ih, RZ_SWAP), permute_gates(b_hh, RZ_SWAP)])]
    if b_ih.dtype.itemsize < 4:  # bfloat16/float16: summed in float32, rounded once
        return [*weights, (b_ih.astype(np.float32) + b_hh.astype(np.float32)).astype(b_ih.dtype)]
    return [*weights, b_ih + b_hh]


def to_torch(spec: LayerSpec, weights: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"]}`` of one direction; the single
    canonical bias goes to ``bias_ih`` and ``bias_hh`` is zero."""
    kernel, recurrent, *rest = (np.asarray(w) for w in weights)
    w_ih, w_hh = kernel.T, recurrent.T
    if spec.layer == "GRU":
        w_ih, w_hh = permute_gates(w_ih, RZ_SWAP, 0), permute_gates(w_hh, RZ_SWAP, 0)
    out = {"weight_ih": np.ascontiguousarray(w_ih), "weight_hh": np.ascontiguousarray(w_hh)}
    if rest:
        (bias,) = rest
        if spec.layer == "GRU":
            out["bias_ih"] = permute_gates(bias[0], RZ_SWAP)
            out["bias_hh"] = permute_gates(bias[1], RZ_SWAP)
        else:
            out["bias_ih"], out["bias_hh"] = bias.copy(), np.zeros_like(bias)
    return out


# -- Flax NNX cells ---------------------------------------------------------------------------


def from_flax(kind: str, params: dict[str, np.ndarray], units: int) -> list[np.ndarray]:
    """Canonical weights of a Flax NNX cell from its parameter arrays by path.

    ``kind`` is the cell class name. Paths: LSTMCell ``ii.kernel`` ... ``ho.bias``;
    OptimizedLSTMCell ``dense_i.kernel``, ``dense_h.kernel``, ``dense_h.bias``; SimpleCell
    ``dense_i.kernel``, ``dense_i.bias``, ``dense_h.kernel``; GRUCell ``dense_i.kernel``,
    ``dense_i.bias``, ``dense_h.kernel`` (gates r, z, n and no recurrent-side bias).
    """
    p = {k: np.asarray(v) for k, v in params.items()}
    if kind == "LSTMCell":
        kernel = np.concatenate([p[f"{n}.kernel"] for n in ("ii", "if_", "ig", "io")], axis=1)
        hs = ("hi", "hf", "hg", "ho")
        recurrent = np.concatenate([p[f"{n}.kernel"] for n in hs], axis=1)
        return [kernel, recurrent, np.concatenate([p[f"{n}.bias"] for n in hs])]
    if kind == "OptimizedLSTMCell":
        return [p["dense_i.kernel"], p["dense_h.kernel"], p["dense_h.bias"]]
    if kind == "SimpleCell":
        return [p["dense_i.kernel"], p["dense_h.kernel"], p["dense_i.bias"]]
    if kind == "GRUCell":
        bias = permute_gates(p["dense_i.bias"], RZ_SWAP)
        return [permute_gates(p["dense_i.kernel"], RZ_SWAP), permute_gates(p["dense_h.kernel"],
                RZ_SWAP), np.stack([bias, np.zeros_like(bias)])]  # fmt: skip
    raise ConversionError(
        f"Flax cell {kind!r} has no multirnn form; supported: SimpleCell, LSTMCell, "
        "OptimizedLSTMCell, GRUCell"
    )


def to_flax(spec: LayerSpec, weights: Sequence[np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """A Flax NNX cell's parameter arrays by path (see :func:`from_flax`).

    Flax cells always have their biases, so ``use_bias=False`` gives zeros. The Flax GRU
    has no recurrent-side bias: the z and r parts of canonical row 1 fold into the input
    side exactly; a nonzero candidate part has no slot and is refused.
    """
    kernel, recurrent, *rest = (np.asarray(w) for w in weights)
    u = spec.units
    if rest:
        (bias,) = rest
    elif spec.layer == "GRU" and spec.reset_after:
        bias = np.zeros((2, 3 * u), kernel.dtype)
    else:
        bias = np.zeros(kernel.shape[1], kernel.dtype)
    if kind == "LSTMCell":
        out = {}
        for k, (i_name, h_name) in enumerate(zip(("ii", "if_", "ig", "io"), ("hi", "hf", "hg",
                                                                         "ho"))):  # fmt: skip
            block = slice(k * u, (k + 1) * u)
            out[f"{i_name}.kernel"] = kernel[:, block]
            out[f"{h_name}.kernel"] = recurrent[:, block]
            out[f"{h_name}.bias"] = bias[block]
        return out
    if kind == "OptimizedLSTMCell":
        return {"dense_i.kernel": kernel, "dense_h.kernel": recurrent, "dense_h.bias": bias}
    if kind == "SimpleCell":
        return {"dense_i.kernel": kernel, "dense_i.bias": bias, "dense_h.kernel": recurrent}
    if kind == "GRUCell":
        candidate = bias[1][2 * u :]
        if np.any(candidate != 0):
            raise ConversionError(
                "Flax's GRUCell has no recurrent-side candidate bias (it computes "
                "n = tanh(W_in x + b_in + r * (W_hn h))); this GRU's bias[1, 2*units:] is "
                "nonzero, so no Flax GRUCell computes it"
            )
        folded = bias[0] + np.concatenate([bias[1][: 2 * u], np.zeros_like(candidate)])
        return {"dense_i.kernel": permute_gates(kernel, RZ_SWAP),
                "dense_i.bias": permute_gates(folded, RZ_SWAP),
                "dense_h.kernel": permute_gates(recurrent, RZ_SWAP)}  # fmt: skip
    raise ConversionError(f"unknown Flax cell kind {kind!r}")
