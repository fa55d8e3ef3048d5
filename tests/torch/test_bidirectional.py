"""Bidirectional on the PyTorch engine: equal to torch.nn's own bidirectional modules where
those compute the same function (the conformance grid checks it against the reference)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multirnn_torch.layers import LSTM, Bidirectional  # noqa: E402


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


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
