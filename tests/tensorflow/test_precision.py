"""Keras's mixed-precision policies on the TensorFlow engine: float32 variables, bfloat16 or
float16 computation, float32 inputs accepted, as Keras's own layers under the same policy;
and low-precision layers in models."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

if keras.backend.backend() != "tensorflow":  # pragma: no cover - another suite set Keras up
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

from multirnn_tensorflow.layers import GRU, LSTM, RNN  # noqa: E402

from multirnn import LSTMCell  # noqa: E402

from ..cases import fit_lowers_the_loss, keras_file_reloads  # noqa: E402

POLICIES = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


@pytest.fixture
def global_policy():
    def set_policy(name):
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy("float32")


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((3, 6, 4)).astype(np.float32)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_a_mixed_policy_computes_as_the_low_precision_layer_of_the_rounded_weights(policy):
    compute = POLICIES[policy]
    layer = LSTM(5, input_dim=4, seed=0, dtype=policy, return_state=True)
    assert (layer.variable_dtype, layer.compute_dtype) == ("float32", compute)
    assert layer.kernel.dtype == "float32" and layer.mixed
    low = LSTM(5, input_dim=4, dtype=compute, return_state=True)
    low.set_weights([w.astype(compute) for w in layer.get_weights()])
    x = tf.constant(_x())  # float32 inputs: cast, as Keras's own layers cast them
    got, want = layer(x), low(tf.cast(x, compute))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == compute
        np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(w, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(x)[0], tf.float32))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert [g.dtype for g in grads] == [tf.float32] * 3
    assert all(bool(tf.reduce_any(g != 0)) for g in grads)


def test_the_global_policy_reaches_both_layer_kinds_and_their_configs(global_policy, tmp_path):
    global_policy("mixed_bfloat16")
    layers = [GRU(4, input_dim=3), RNN(LSTMCell(4), input_dim=3)]
    for layer in layers:
        assert layer.dtype_policy.name == "mixed_bfloat16"
        assert layer.get_config()["dtype"] == "mixed_bfloat16"
    global_policy("float32")
    for layer in layers:  # the config carries the policy, whatever the global one is then
        again = type(layer).from_config(layer.get_config())
        assert (again.variable_dtype, again.compute_dtype) == ("float32", "bfloat16")


def test_a_mixed_model_trains_and_reloads(global_policy, tmp_path):
    global_policy("mixed_bfloat16")
    inputs = keras.Input((6, 4))
    hidden = LSTM(8, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(1, dtype="float32")(GRU(8)(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.02), "mse")
    x = _x()
    fit_lowers_the_loss(model, x, np.ones((3, 1), np.float32), epochs=5)
    keras_file_reloads(model, x, tmp_path / "mixed.keras", rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_low_precision_layer_in_a_model(dtype, tmp_path):
    inputs = keras.Input((6, 4), dtype=dtype)
    outputs = LSTM(5, dtype=dtype, seed=0)(inputs)
    model = keras.Model(inputs, outputs)
    assert model.predict(_x().astype(dtype), verbose=0).dtype == dtype
    keras_file_reloads(model, _x().astype(dtype), tmp_path / "low.keras", rtol=0, atol=0)


def test_a_keras_policy_object_is_its_name():
    assert LSTM(3, dtype=keras.DTypePolicy("float16")).spec.dtype == "float16"
    layer = GRU(3, dtype=keras.DTypePolicy("mixed_bfloat16"))
    assert layer.spec.dtype == "mixed_bfloat16" and layer.mixed
