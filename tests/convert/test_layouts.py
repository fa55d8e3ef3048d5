"""The array-level mappings, NumPy only: each peer's equations written out from its
documentation, run on the peer's arrays, must equal the reference on the converted
canonical weights; and multirnn -> peer -> multirnn gives back identical arrays."""

from __future__ import annotations

import numpy as np
import pytest

from multirnn.convert import layouts
from multirnn.convert.layouts import ConversionError
from multirnn.reference import kernels as reference
from multirnn.spec import parse

B, T, F, H = 3, 5, 4, 6


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rng_arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.5 for s in shapes]


# -- PyTorch (documented equations of nn.RNN / nn.LSTM / nn.GRU) ------------------------------


def torch_run(kind, p, x, nonlinearity="tanh"):
    h = np.zeros((x.shape[0], H))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ p["weight_ih"].T + p.get("bias_ih", 0.0)
        gh = h @ p["weight_hh"].T + p.get("bias_hh", 0.0)
        if kind == "RNN":
            h = np.tanh(gi + gh) if nonlinearity == "tanh" else np.maximum(gi + gh, 0.0)
        elif kind == "LSTM":
            i, f, g, o = np.split(gi + gh, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            ir, iz, in_ = np.split(gi, 3, axis=1)
            hr, hz, hn = np.split(gh, 3, axis=1)
            r, z = sigmoid(ir + hr), sigmoid(iz + hz)
            n = np.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
        outs.append(h)
    return np.stack(outs, axis=1)


TORCH = {"RNN": ("SimpleRNN", 1), "LSTM": ("LSTM", 4), "GRU": ("GRU", 3)}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,nonlinearity", [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None),
                                               ("GRU", None)])  # fmt: skip
def test_torch_arrays_compute_the_same_function(kind, nonlinearity, bias):
    layer, g = TORCH[kind]
    w_ih, w_hh, b_ih, b_hh, x = rng_arrays(0, (g * H, F), (g * H, H), (g * H,), (g * H,),
                                           (B, T, F))  # fmt: skip
    p = {"weight_ih": w_ih, "weight_hh": w_hh}
    if bias:
        p |= {"bias_ih": b_ih, "bias_hh": b_hh}
    weights = layouts.from_torch(layer, H, w_ih, w_hh, p.get("bias_ih"), p.get("bias_hh"))
    kwargs = {"return_sequences": True, "use_bias": bias, "dtype": "float64"}
    if layer == "SimpleRNN":
        kwargs["activation"] = nonlinearity
    else:
        kwargs["recurrent_activation"] = "sigmoid"
    if layer == "GRU":
        kwargs["reset_after"] = True
    spec = parse(layer, (H,), kwargs)
    want = torch_run(kind, p, x, nonlinearity)
    got, _ = reference.forward(spec, weights, x)
    np.testing.assert_allclose(got, want, atol=1e-12)
    back = layouts.to_torch(spec, weights)
    np.testing.assert_allclose(torch_run(kind, back, x, nonlinearity), want, atol=1e-12)
    again = layouts.from_torch(layer, H, *back.values())
    for a, b in zip(again, weights):
        np.testing.assert_array_equal(a, b)  # multirnn -> torch -> multirnn is exact
    if kind == "GRU" and bias:  # both GRU biases survive: torch -> multirnn -> torch is exact
        for name in p:
            np.testing.assert_array_equal(back[name], p[name])


def test_torch_shapes_are_checked():
    w_ih, w_hh = rng_arrays(1, (4 * H, F), (4 * H, H))
    with pytest.raises(ConversionError, match=r"weight_hh must have shape \(24, 6\)"):
        layouts.from_torch("LSTM", H, w_ih, w_hh[:, :3])
    with pytest.raises(ConversionError, match="weight_ih must have shape"):
        layouts.from_torch("GRU", H, w_ih, w_hh)
    with pytest.raises(ConversionError, match="both be given, or neither"):
        layouts.from_torch("LSTM", H, w_ih, w_hh, np.zeros(4 * H), None)


# -- Flax NNX (equations of flax/nnx/nn/recurrent.py) -----------------------------------------


def flax_run(kind, p, x, residual=False):
    h = np.zeros((x.shape[0], H))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        if kind == "SimpleCell":
            h = np.tanh(xt @ p["dense_i.kernel"] + p["dense_i.bias"] + h @ p["dense_h.kernel"]
                        + (h if residual else 0.0))  # fmt: skip
        elif kind == "LSTMCell":

            def gate(i, hname, x=xt, h=h):
                return x @ p[f"{i}.kernel"] + h @ p[f"{hname}.kernel"] + p[f"{hname}.bias"]

            i, f = sigmoid(gate("ii", "hi")), sigmoid(gate("if_", "hf"))
            g, o = np.tanh(gate("ig", "hg")), sigmoid(gate("io", "ho"))
            c = f * c + i * g
            h = o * np.tanh(c)
        elif kind == "OptimizedLSTMCell":
            z = xt @ p["dense_i.kernel"] + h @ p["dense_h.kernel"] + p["dense_h.bias"]
            i, f, g, o = np.split(z, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            xr, xz, xn = np.split(xt @ p["dense_i.kernel"] + p["dense_i.bias"], 3, axis=1)
            hr, hz, hn = np.split(h @ p["dense_h.kernel"], 3, axis=1)
            r, z = sigmoid(xr + hr), sigmoid(xz + hz)
            n = np.tanh(xn + r * hn)
            h = (1.0 - z) * n + z * h
        outs.append(h)
    return np.stack(outs, axis=1)


FLAX_SHAPES = {
    "SimpleCell": {"dense_i.kernel": (F, H), "dense_i.bias": (H,), "dense_h.kernel": (H, H)},
    "OptimizedLSTMCell": {"dense_i.kernel": (F, 4 * H), "dense_h.kernel": (H, 4 * H),
                          "dense_h.bias": (4 * H,)},
    "GRUCell": {"dense_i.kernel": (F, 3 * H), "dense_i.bias": (3 * H,),
                "dense_h.kernel": (H, 3 * H)},
    "LSTMCell": {**{f"{n}.kernel": (F, H) for n in ("ii", "if_", "ig", "io")},
                 **{f"{n}.kernel": (H, H) for n in ("hi", "hf", "hg", "ho")},
                 **{f"{n}.bias": (H,) for n in ("hi", "hf", "hg", "ho")}},
}  # fmt: skip
FLAX_LAYER = {"SimpleCell": "SimpleRNN", "OptimizedLSTMCell": "LSTM", "LSTMCell": "LSTM",
              "GRUCell": "GRU"}  # fmt: skip


@pytest.mark.parametrize("kind", list(FLAX_SHAPES))
def test_flax_arrays_compute_the_same_function(kind):
    shapes = FLAX_SHAPES[kind]
    *arrays, x = rng_arrays(2, *shapes.values(), (B, T, F))
    p = dict(zip(shapes, arrays))
    layer = FLAX_LAYER[kind]
    kwargs = {"return_sequences": True, "dtype": "float64"}
    if layer != "SimpleRNN":
        kwargs["recurrent_activation"] = "sigmoid"
    if layer == "GRU":
        kwargs["reset_after"] = True
    spec = parse(layer, (H,), kwargs)
    weights = layouts.from_flax(kind, p, H)
    want = flax_run(kind, p, x)
    np.testing.assert_allclose(reference.forward(spec, weights, x)[0], want, atol=1e-12)
    back = layouts.to_flax(spec, weights, kind)
    for name in p:  # flax -> multirnn -> flax is exact
        np.testing.assert_array_equal(back[name], p[name])


def test_flax_gru_folds_recurrent_gate_biases_and_refuses_a_candidate_one():
    spec = parse("GRU", (H,), {"reset_after": True, "recurrent_activation": "sigmoid",
                               "return_sequences": True, "dtype": "float64"})  # fmt: skip
    kernel, recurrent, bias, x = rng_arrays(3, (F, 3 * H), (H, 3 * H), (2, 3 * H), (B, T, F))
    bias[1, 2 * H :] = 0.0  # the part Flax has no slot for
    p = layouts.to_flax(spec, [kernel, recurrent, bias], "GRUCell")
    want, _ = reference.forward(spec, [kernel, recurrent, bias], x)
    np.testing.assert_allclose(flax_run("GRUCell", p, x), want, atol=1e-12)
    bias[1, -1] = 0.5
    with pytest.raises(ConversionError, match="no recurrent-side candidate bias"):
        layouts.to_flax(spec, [kernel, recurrent, bias], "GRUCell")


def test_unknown_flax_cell_is_refused():
    with pytest.raises(ConversionError, match="supported: SimpleCell, LSTMCell"):
        layouts.from_flax("MGUCell", {}, H)
