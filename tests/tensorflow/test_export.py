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


# -- TFLite, builtin ops only ---------------------------------------------------------------


def _tflite(function, *signature):
    """A TFLite interpreter of ``function`` traced at ``signature``, its variables frozen
    into constants (the route TFLite takes for a trained model), builtin ops only."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    traced = tf.function(function).get_concrete_function(*signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(traced)]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return tf.lite.Interpreter(model_content=converter.convert())


def _invoke(interpreter, *arrays):
    inputs = interpreter.get_input_details()
    for detail, array in zip(inputs, arrays, strict=True):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(inputs, arrays, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("name", list(LAYERS))
def test_tflite_with_builtin_ops_gives_the_eager_numbers(name):
    """Every path, the length dynamic; the batch too where the layer returns its last
    output (a returned sequence needs a static batch: TFLite's converter lowers the list
    it is gathered in only with static element shapes, for Keras's own layers too)."""
    sequence = LAYERS[name](input_dim=FEATURES, seed=0, return_sequences=True)
    last = LAYERS[name](input_dim=FEATURES, seed=1, go_backwards=True)
    for layer, batch in ((sequence, 3), (last, None)):
        served = _tflite(layer, tf.TensorSpec((batch, None, FEATURES)))
        for shape in ((3, 7), (3, 2)) if batch else ((3, 7), (1, 2), (4, 12)):
            x = data(*shape, seed=shape[1])
            (got,) = _invoke(served, x)
            np.testing.assert_allclose(got, layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_streaming_step_and_masked_calls_give_the_eager_numbers():
    layer = LSTM(8, input_dim=FEATURES, seed=0, return_state=True)
    step = _tflite(
        lambda x_t, h, c: layer(x_t, initial_state=[h, c]),
        tf.TensorSpec((2, 1, FEATURES)), tf.TensorSpec((2, 8)), tf.TensorSpec((2, 8)),
    )  # fmt: skip
    x = data(2, 6)
    h = c = np.zeros((2, 8), "float32")
    for t in range(x.shape[1]):
        output, h, c = _invoke(step, x[:, t : t + 1], h, c)
    for got, want in zip([output, h, c], layer(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    masked = LSTM(8, input_dim=FEATURES, seed=0, return_sequences=True)
    served = _tflite(lambda x, m: masked(x, mask=m), tf.TensorSpec((2, 6, FEATURES)),
                     tf.TensorSpec((2, 6), tf.bool))  # fmt: skip
    mask = np.arange(6)[None] < np.array([[6], [3]])
    (got,) = _invoke(served, x, mask)
    np.testing.assert_allclose(got, masked(x, mask=mask), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_from_a_keras_model():
    inputs = keras.Input((None, FEATURES))
    model = keras.Model(inputs, keras.layers.Dense(2)(layers.GRU(8, seed=0)(inputs)))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    served = tf.lite.Interpreter(model_content=converter.convert())
    x = data(3, 7)
    (got,) = _invoke(served, x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
