"""Keras's ``model.export`` (a SavedModel) on every path of the TensorFlow engine: batch and
time stay dynamic, and a streaming step exported on its own, fed one step at a time,
equals one call over the sequence."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from multirnn_tensorflow import layers  # noqa: E402
from multirnn_tensorflow.layers import LSTM  # noqa: E402

from ..test_rnn import layers_per_path  # noqa: E402

FEATURES = 5

LAYERS = layers_per_path(layers)


def data(batch, time, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, FEATURES)).astype("float32")


@pytest.mark.parametrize("name", list(LAYERS))
def test_model_export_serves_any_batch_and_length_with_the_eager_numbers(name, tmp_path):
    layer = LAYERS[name](seed=0, return_sequences=True, go_backwards=name.startswith("GRU"))
    inputs = keras.Input((None, FEATURES))
    model = keras.Model(inputs, layer(inputs))
    model.export(str(tmp_path / "model"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "model"))
    for batch, time in ((3, 7), (1, 2), (4, 12)):
        x = data(batch, time, seed=batch)
        np.testing.assert_allclose(served.serve(x), model(x), rtol=1e-6, atol=1e-6)


def test_an_exported_step_fed_one_step_at_a_time_equals_one_call(tmp_path):
    layer = LSTM(8, input_dim=FEATURES, seed=0, return_state=True)
    x_t = keras.Input((1, FEATURES))
    h, c = keras.Input((8,)), keras.Input((8,))
    step = keras.Model([x_t, h, c], layer(x_t, initial_state=[h, c]))
    step.export(str(tmp_path / "step"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "step"))
    x = data(3, 9)
    h = c = np.zeros((3, 8), "float32")
    for t in range(x.shape[1]):
        output, h, c = served.serve([x[:, t : t + 1], h, c])
    for got, want in zip([output, h, c], layer(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
