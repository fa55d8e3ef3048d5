"""Bidirectional on the TensorFlow engine: a Keras layer equal to the NumPy engine's
wrapper, usable in Sequential models, fit and .keras files."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from multirnn_tensorflow import layers  # noqa: E402
from multirnn_tensorflow.layers import GRU, LSTM, Bidirectional  # noqa: E402

from ..cases import (  # noqa: E402
    bidirectional_and_reference,
    fit_lowers_the_loss,
    keras_file_reloads,
)


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


def test_same_numbers_as_the_numpy_engine_in_a_tf_function():
    # every cell and merge mode is in the conformance grid, called eagerly
    layer, x, mask, want = bidirectional_and_reference(layers, "GRU", None)
    got = tf.function(lambda: layer(x, mask=mask))()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-12)


def test_in_a_sequential_model_with_masking_fit_and_a_keras_file(tmp_path):
    x = _x().astype("float32")
    x[1, 4:] = 0.0
    model = keras.Sequential([
        keras.Input((None, 4)),
        keras.layers.Masking(0.0),
        Bidirectional(LSTM(5, return_sequences=True, seed=0, kernel_regularizer="l2")),
        Bidirectional(GRU(3, seed=1), merge_mode="ave"),
        keras.layers.Dense(1),
    ])  # fmt: skip
    assert len(model.layers[1].trainable_weights) == 6
    assert len(model.losses) == 2  # one kernel penalty per direction
    model.compile(keras.optimizers.Adam(0.05), "mse")
    fit_lowers_the_loss(model, x, np.ones((3, 1), "float32"), epochs=10)
    keras_file_reloads(model, x, tmp_path / "model.keras", atol=1e-6)
