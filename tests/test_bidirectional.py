"""Bidirectional of the built-in layers as every engine provides it: initial states split
between the directions, weights, config, the errors, and selection. Each engine's own
comparisons (with torch.nn, under jit, in Keras models, with Keras 3's wrapper) are in its
folder; Bidirectional of ``RNN(cell)`` is in test_bidirectional_cells.py."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import multirnn

from .cases import DTYPES, PACKAGES, native


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


def test_initial_state_weights_and_config(eng64):
    def tensor(array):
        return native(eng64.name, array.astype(DTYPES[eng64.name]))

    layer = eng64.Bidirectional(eng64.LSTM(3, seed=1, return_state=True))
    x = tensor(_x())
    rng = np.random.default_rng(2)
    states = [tensor(rng.standard_normal((3, 3))) for _ in range(4)]
    out, hf, *_ = multirnn.to_numpy(layer(x, initial_state=states))
    assert out.shape == (3, 6) and hf.shape == (3, 3)
    forward = multirnn.to_numpy(layer.forward_layer(x, initial_state=states[:2])[0])
    np.testing.assert_allclose(forward, out[:, :3], atol=1e-15)
    assert len(layer.get_weights()) == 6
    kernels = multirnn.to_numpy([layer.forward_layer.kernel, layer.backward_layer.kernel])
    assert not np.array_equal(*kernels)
    again = eng64.Bidirectional.from_config(layer.get_config())
    again.set_weights(layer.get_weights())
    np.testing.assert_array_equal(multirnn.to_numpy(again(x)[0]), multirnn.to_numpy(layer(x)[0]))
    with pytest.raises(ValueError, match="initial_state must be a list of 4 tensors"):
        layer(x, initial_state=states[:2])
    with pytest.raises(ValueError, match="merge_mode must be 'concat', 'sum', 'mul', 'ave'"):
        eng64.Bidirectional(eng64.LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="set_weights takes 6 arrays"):
        layer.set_weights(layer.get_weights()[:3])
    with pytest.raises(TypeError, match="wraps a SimpleRNN, LSTM or GRU"):
        eng64.Bidirectional("lstm")


def test_the_selected_engine_provides_bidirectional(eng):
    wrapper = importlib.import_module(PACKAGES[eng.name] + ".layers").Bidirectional
    multirnn.set_backend(eng.name)
    assert multirnn.Bidirectional is wrapper
    assert multirnn.engine(eng.name).Bidirectional is wrapper
    wrapped = multirnn.Bidirectional(multirnn.GRU(4, seed=0), merge_mode="sum")
    assert tuple(wrapped(_x()).shape) == (3, 4)
