"""The built-in layers' cells (``multirnn.LSTMCell`` and co.): ``RNN(LSTMCell(...))`` is the
layer ``LSTM(...)`` on every engine, the cells' step is portable, and their options are
checked by the layers' own rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

import multirnn
from multirnn import builtin_cells, cells

CASES = [
    ("SimpleRNN", multirnn.SimpleRNNCell, {"activation": "relu"}),
    ("LSTM", multirnn.LSTMCell, {}),  # the documented defaults: hard_sigmoid, unit_forget_bias
    ("LSTM", multirnn.LSTMCell, {"recurrent_activation": "sigmoid", "use_bias": False}),
    ("GRU", multirnn.GRUCell, {}),  # reset_after=False
    ("GRU", multirnn.GRUCell, {"reset_after": True, "recurrent_activation": "sigmoid"}),
]
IDS = [f"{layer}-{kw}" for layer, _, kw in CASES]

OPTIONS = {"return_sequences": True, "return_state": True, "go_backwards": True}


def _data(batch=3, time=6, features=4):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((batch, time, features))
    mask = rng.random((batch, time)) < 0.7
    mask[-1] = False
    return x, mask


def _close(got, want, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(multirnn.to_numpy(g), w, rtol=tol, atol=tol)


@pytest.mark.parametrize("layer,cell_cls,kwargs", CASES, ids=IDS)
def test_rnn_of_a_built_in_cell_is_the_built_in_layer(eng, layer, cell_cls, kwargs):
    """Same seed, same weights; same numbers as the NumPy engine's layer (the oracle,
    written separately), on every engine, with a mask and initial states."""
    x, mask = _data()
    numpy = multirnn.engine("numpy")
    want_layer = getattr(numpy, layer)(5, seed=3, **kwargs, **OPTIONS)
    want = want_layer(x, mask=mask)
    rnn = eng.RNN(cell_cls(5, **kwargs), seed=3, **OPTIONS)
    got = rnn(x, mask=mask)
    for g, w in zip(rnn.get_weights(), want_layer.get_weights(), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)  # equal, in the layer's dtype
    _close(got, want, multirnn.to_numpy(got[0]).dtype)
    initial = [np.full((3, 5), 0.1 * (k + 1)) for k in range(len(want) - 1)]
    _close(rnn(x, initial_state=initial), want_layer(x, initial_state=initial),
           multirnn.to_numpy(got[0]).dtype)  # fmt: skip


@pytest.mark.parametrize("layer,cell_cls,kwargs", CASES, ids=IDS)
def test_built_in_cells_are_portable_and_configurable(layer, cell_cls, kwargs):
    pytest.importorskip("array_api_strict")
    cell = cell_cls(4, **kwargs)
    cells.check_portable(cell)  # the shared step uses the array API standard only
    config = json.loads(json.dumps(cells.cell_config(cell)))
    again = cells.cell_from_config(config)
    assert type(again) is cell_cls and again.get_config() == cell.get_config()
    assert again.layer_spec.units == 4


def test_saving_an_rnn_of_a_built_in_cell_across_engines(tmp_path):
    x, _ = _data()
    layer = multirnn.engine("numpy").RNN(multirnn.GRUCell(3, reset_after=True), seed=1)
    path = tmp_path / "gru_cell.safetensors"
    want = layer(x)
    multirnn.save(layer, path)
    for name in multirnn.engines.available():
        loaded = multirnn.load(path, backend=name)
        assert type(loaded.cell) is multirnn.GRUCell
        got = multirnn.to_numpy(loaded(x))
        tol = 1e-12 if got.dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: multirnn.LSTMCell(4, dropout=0.1), TypeError, "'dropout'.*belong to the layer"),
        (lambda: multirnn.SimpleRNNCell(4, recurrent_activation="sigmoid"), TypeError,
         "'recurrent_activation'"),
        (lambda: multirnn.LSTMCell(4, reset_after=True), TypeError, "'reset_after'"),
        (lambda: multirnn.GRUCell(4, activation="nope"), ValueError, "activation"),
        (lambda: multirnn.LSTMCell(0), ValueError, "units"),
    ],
)  # fmt: skip
def test_bad_cell_options_are_refused_by_the_layers_rules(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("name", [*sorted(builtin_cells.DERIVATIVES), builtin_cells.CLAMP01])
def test_derivatives_written_into_a_buffer_are_the_shared_formulas(name):
    """A loop that keeps its buffers (PyTorch's) gets the same numbers from the ``out=``
    forms as every other engine from the out-of-place ones, including where ``out`` is
    the input itself."""
    torch = pytest.importorskip("torch")
    xp = pytest.importorskip("array_api_compat.torch")
    into = builtin_cells.IntoBuffers(torch)
    rng = np.random.default_rng(3)
    y = torch.from_numpy(rng.uniform(-1.5, 1.5, (4, 3, 5)))
    y[0, 0, :3] = torch.tensor([0.0, 1.0, -1.0])  # the kinks of the piecewise-linear ones
    want = builtin_cells.derivative(xp, name, y)
    out = torch.empty_like(y)
    assert builtin_cells.derivative(xp, name, y, out, into) is out
    torch.testing.assert_close(out, want, rtol=1e-15, atol=1e-15)
    same = y.clone()
    builtin_cells.derivative(xp, name, same, same, into)
    torch.testing.assert_close(same, want, rtol=1e-15, atol=1e-15)


def test_lstm_coefficients_written_into_buffers_are_the_out_of_place_ones():
    torch = pytest.importorskip("torch")
    xp = pytest.importorskip("array_api_compat.torch")
    into = builtin_cells.IntoBuffers(torch)
    rng = np.random.default_rng(4)
    i, f, o, g, c_prev, tc = (torch.from_numpy(rng.uniform(0.05, 0.95, (3, 2, 4)))
                              for _ in range(6))  # fmt: skip
    args = (xp, "tanh", "sigmoid", i, f, o, g, c_prev)
    want = builtin_cells.lstm_coefficients(*args, tc)
    outs = [torch.empty_like(i) for _ in range(4)]
    tc_buffer = tc.clone()
    got = builtin_cells.lstm_coefficients(*args, tc_buffer, out=(*outs, tc_buffer), e=into)
    for k, (g_k, w_k) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g_k, w_k, rtol=1e-15, atol=1e-15, msg=f"coefficient {k}")
