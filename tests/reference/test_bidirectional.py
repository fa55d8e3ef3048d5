"""Bidirectional on the NumPy engine, against Keras 3's Bidirectional on the same weights
(what every engine's wrapper shares is in tests/test_bidirectional.py)."""

from __future__ import annotations

import numpy as np
import pytest

from multirnn.reference.layers import GRU, LSTM, Bidirectional, SimpleRNN

CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


MASK = np.arange(6)[None, :] < np.array([6, 2, 4])[:, None]


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("LSTM", {"return_sequences": True}),
        ("GRU", {"reset_after": True, "return_state": True}),
        ("SimpleRNN", {"return_sequences": True, "return_state": True}),
        ("LSTM", {}),
    ],
    ids=str,
)
def test_bidirectional_matches_keras(kind, kwargs, merge_mode):
    keras = pytest.importorskip("keras")
    extra = {} if kind == "SimpleRNN" else {"recurrent_activation": "sigmoid"}
    layer = Bidirectional(CLASSES[kind](5, seed=0, dtype="float64", **extra, **kwargs),
                          merge_mode=merge_mode)  # fmt: skip
    x = _x()
    ours = layer(x, mask=MASK)
    peer = keras.layers.Bidirectional(
        getattr(keras.layers, kind)(5, dtype="float64", **kwargs),
        merge_mode=merge_mode,
        dtype="float64",
    )
    peer.build((None, None, 4))
    peer.set_weights(layer.get_weights())
    theirs = peer(x, mask=MASK)
    ours = ours if isinstance(ours, list) else [ours]
    theirs = theirs if isinstance(theirs, (list, tuple)) else [theirs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), atol=1e-12)
