"""Bidirectional on the PyTorch engine: equal to the NumPy engine's, and to torch.nn's own
bidirectional modules where those compute the same function."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multirnn_torch.layers import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: E402

from multirnn.reference import layers as reference  # noqa: E402


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


@pytest.mark.parametrize("merge_mode", ["concat", "ave", None])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_same_numbers_as_the_numpy_engine_with_masks(kind, merge_mode):
    kwargs = {"return_sequences": True, "return_state": True, "dtype": "float64", "seed": 0}
    cls = {"LSTM": LSTM, "GRU": GRU, "SimpleRNN": SimpleRNN}[kind]
    layer = Bidirectional(cls(5, **kwargs), merge_mode=merge_mode)
    peer = reference.Bidirectional(getattr(reference, kind)(5, **kwargs), merge_mode=merge_mode)
    x = _x()
    mask = np.arange(6)[None, :] < np.array([6, 2, 4])[:, None]
    got = layer(torch.from_numpy(x), mask=torch.from_numpy(mask))
    peer.set_weights(layer.get_weights())
    want = peer(x, mask=mask)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.detach().numpy(), w, atol=1e-12)


def test_equals_torch_nn_bidirectional_lstm_and_trains():
    torch.manual_seed(0)
    peer = torch.nn.LSTM(4, 5, batch_first=True, bidirectional=True).double()
    layer = Bidirectional(LSTM(5, return_sequences=True, recurrent_activation="sigmoid",
                               dtype="float64", input_dim=4))  # fmt: skip
    weights = []
    for suffix in ("", "_reverse"):
        p = {n: getattr(peer, f"{n}_l0{suffix}").detach().numpy()
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}  # fmt: skip
        weights += [p["weight_ih"].T, p["weight_hh"].T, p["bias_ih"] + p["bias_hh"]]
    layer.set_weights(weights)
    x = torch.from_numpy(_x())
    with torch.no_grad():
        want = peer(x)[0]
    got = layer(x)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    got.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert len(list(layer.parameters())) == 6
