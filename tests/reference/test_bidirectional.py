"""Bidirectional on the NumPy engine, against Keras 3's Bidirectional on the same weights."""

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


def test_initial_state_weights_and_config():
    layer = Bidirectional(LSTM(3, seed=1, return_state=True))
    x = _x()
    rng = np.random.default_rng(2)
    states = [rng.standard_normal((3, 3)) for _ in range(4)]
    out, hf, *_ = layer(x, initial_state=states)
    assert out.shape == (3, 6) and hf.shape == (3, 3)
    np.testing.assert_allclose(
        layer.forward_layer(x, initial_state=states[:2])[0], out[:, :3], atol=1e-15
    )
    assert len(layer.get_weights()) == 6
    assert not np.array_equal(layer.forward_layer.kernel, layer.backward_layer.kernel)
    again = Bidirectional.from_config(layer.get_config())
    again.set_weights(layer.get_weights())
    np.testing.assert_array_equal(again(x)[0], layer(x)[0])
    with pytest.raises(ValueError, match="initial_state must be a list of 4 tensors"):
        layer(x, initial_state=states[:2])
    with pytest.raises(ValueError, match="merge_mode must be 'concat', 'sum', 'mul', 'ave'"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="set_weights takes 6 arrays"):
        layer.set_weights(layer.get_weights()[:3])
    with pytest.raises(TypeError, match="wraps a SimpleRNN, LSTM or GRU"):
        Bidirectional("lstm")


def test_the_selected_engine_provides_bidirectional():
    import multirnn

    multirnn.set_backend("numpy")
    assert multirnn.Bidirectional is Bidirectional
    assert multirnn.engine("numpy").Bidirectional is Bidirectional
    wrapped = multirnn.Bidirectional(multirnn.GRU(4, seed=0), merge_mode="sum")
    assert wrapped(_x()).shape == (3, 4)
