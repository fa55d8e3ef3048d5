"""The TensorFlow layers as Keras users use them: models, fit, masking, tf.function and XLA,
GradientTape, SavedModel and checkpoints, Keras' penalties and constraints. What every
engine shares (seeds, carried states, files, configs, bad calls) is in
tests/test_builtin_layers.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

if keras.backend.backend() != "tensorflow":  # pragma: no cover - another suite set Keras up
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

from multirnn_tensorflow.layers import GRU, LSTM, SimpleRNN  # noqa: E402

from ..cases import VARIANTS, fit_lowers_the_loss, keras_file_reloads, variant_id  # noqa: E402
from .graphs import sequence_slice_grads  # noqa: E402

CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def make(variant, units=3, **kwargs):
    layer, extra = variant
    return CLASSES[layer](units, **extra, **kwargs)


def x(batch=2, time=5, features=4, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.standard_normal((batch, time, features)).astype(dtype))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_weights_are_canonical_keras_variables(variant):
    # their values, the NumPy engine's for one seed: tests/test_builtin_layers.py
    layer = make(variant, input_dim=4, seed=7)
    assert [w.name for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"]


def test_sequential_fit_with_masking_and_keras_file_round_trip(tmp_path):
    inputs = x(time=6).numpy()
    inputs[1, 4:] = 0.0  # padding the Masking layer turns into a mask
    model = keras.Sequential([
        keras.Input((6, 4)),
        keras.layers.Masking(0.0),
        LSTM(5, return_sequences=True, seed=0, kernel_regularizer="l2"),
        GRU(3, seed=1, kernel_constraint="non_neg"),
        keras.layers.Dense(1),
    ])  # fmt: skip
    model.compile(keras.optimizers.Adam(0.05), "mse")
    target = np.ones((2, 1), np.float32)
    fit_lowers_the_loss(model, inputs, target, epochs=20)
    assert (model.layers[2].kernel.numpy() >= 0).all()  # constraint applied by the optimizer
    assert len(model.losses) == 1  # the kernel penalty
    keras_file_reloads(model, inputs, tmp_path / "model.keras")


def _masked_model(seed=0):
    return keras.Sequential([
        keras.Input((None, 4)),
        keras.layers.Masking(0.0),
        LSTM(5, return_sequences=True, seed=seed, go_backwards=True),
        GRU(3, seed=seed + 1),
        keras.layers.Dense(2),
    ])  # fmt: skip


def test_saved_model_export_serves_any_batch_and_length(tmp_path):
    inputs = x(batch=3, time=7).numpy()
    inputs[1, 4:] = 0.0
    model = _masked_model()
    model.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(served.serve(inputs), model(inputs), atol=1e-6)
    shorter = inputs[:2, :5]
    np.testing.assert_allclose(served.serve(shorter), model(shorter), atol=1e-6)
    tf.saved_model.save(model, str(tmp_path / "plain"))  # TensorFlow's own entry point
    assert "serving_default" in tf.saved_model.load(str(tmp_path / "plain")).signatures


def test_checkpoints_restore_the_weights(tmp_path):
    inputs = x(time=6)
    model, other = _masked_model(seed=0), _masked_model(seed=10)
    model(inputs), other(inputs)  # build both
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=other).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(other(inputs), model(inputs), atol=1e-6)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    third = _masked_model(seed=20)
    third.load_weights(str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(third(inputs), model(inputs), atol=1e-6)


def test_exported_stateful_layers_carry_their_states(tmp_path):
    inputs = x(batch=4, time=3)
    model = keras.Sequential([keras.Input((None, 4), batch_size=4),
                              SimpleRNN(3, stateful=True, seed=0)])  # fmt: skip
    first, second = model(inputs), model(inputs)
    model.layers[0].reset_states()
    model.export(str(tmp_path / "stateful"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "stateful"))
    np.testing.assert_allclose(served.serve(inputs), first, atol=1e-6)
    np.testing.assert_allclose(served.serve(inputs), second, atol=1e-6)
    # traced with an unknown batch size, the check runs when the graph does
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds states for batch size 4"):
        served.serve(inputs[:2])


def test_output_mask_is_the_input_mask_when_returning_sequences():
    layer = GRU(3, return_sequences=True, input_dim=4)
    mask = tf.constant([[True] * 5, [True, True, False, False, False]])
    assert layer.compute_mask(x(), mask) is mask
    assert GRU(3).compute_mask(x(), mask) is None
    assert LSTM(3, return_state=True).compute_mask(x(), mask) == [None, None, None]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_and_gradient_tape(jit_compile):
    layer = LSTM(4, return_sequences=True, input_dim=4, seed=0)
    inputs = x()
    eager = layer(inputs)

    @tf.function(jit_compile=jit_compile)
    def step(v):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(v) ** 2)
        return loss, tape.gradient(loss, layer.trainable_weights)

    loss, grads = step(inputs)
    np.testing.assert_allclose(loss, tf.reduce_sum(eager**2), rtol=1e-5)
    assert len(grads) == 3 and all(g is not None for g in grads)


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_the_unrolled_autograd_loop_takes_its_steps_apart_once(layer):
    # a user activation runs the loop TensorFlow differentiates
    cls = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[layer]
    model = cls(3, activation=lambda z: tf.tanh(z), return_sequences=True, unroll=True)
    x = tf.random.normal((2, 6, 4))
    model(x)
    assert sequence_slice_grads(model, x) == 0


def test_dropout_follows_training_and_is_reproducible_with_a_seed():
    inputs = x()

    def run(seed):
        layer = LSTM(3, dropout=0.5, recurrent_dropout=0.5, seed=seed, input_dim=4)
        return layer(inputs, training=False), layer(inputs, training=True)

    plain, dropped = run(0)
    assert not np.allclose(plain, dropped)
    np.testing.assert_array_equal(run(0)[1], dropped)


def test_dropout_under_xla_is_new_every_call_and_reproducible_with_a_seed():
    """Under ``jit_compile`` (Keras's ``fit`` compiles with XLA) the masks come from the
    named Philox generator, as outside it (XLA's automatic choice draws about 15x slower
    on CPU); XLA's Philox orders its numbers its own way, so the masks differ from an
    uncompiled call's, as Keras's own do."""
    inputs = x()

    def run():
        layer = LSTM(3, dropout=0.5, recurrent_dropout=0.5, seed=3, input_dim=4)
        step = tf.function(lambda: layer(inputs, training=True), jit_compile=True)
        return step(), step(), layer(inputs, training=False)

    first, second, plain = run()
    assert not np.allclose(first, second) and not np.allclose(first, plain)
    np.testing.assert_array_equal(run()[0], first)


def test_activity_penalty_is_on_the_main_output_only():
    layer = SimpleRNN(3, activity_regularizer="l1", return_state=True, input_dim=4)
    out, _ = layer(x())
    assert len(layer.losses) == 2  # Keras offers every output; states count zero
    np.testing.assert_allclose(sum(layer.losses), 0.01 * tf.reduce_sum(tf.abs(out)) / 2, rtol=1e-6)


def test_apply_constraints_in_a_custom_loop():
    layer = LSTM(3, recurrent_constraint="max_norm", input_dim=4)
    layer.recurrent_kernel.assign(layer.recurrent_kernel * 10.0)
    layer.apply_constraints()
    assert tf.reduce_max(tf.norm(layer.recurrent_kernel, axis=0)) <= 2.0 + 1e-5


def test_another_keras_backend_is_a_clear_error():
    code = "import multirnn; multirnn.engine('tensorflow').LSTM(3)"
    env = os.environ | {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "Set KERAS_BACKEND=tensorflow" in done.stderr


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_training_false_gives_the_same_outputs_and_gradients(variant):
    """training=False skips what only the hand-written backward pass needs; gradients then
    come from autodiff and must be the same."""
    layer = make(variant, seed=3, return_sequences=True, dtype="float64")
    inputs = x(time=6, dtype="float64")
    results = []
    for training in (None, False):
        with tf.GradientTape() as tape:
            out = layer(inputs, training=training)
            loss = tf.reduce_sum(tf.sin(out))
        results.append([out, *tape.gradient(loss, layer.trainable_weights)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_many_layers_and_lengths_print_no_retracing_warning(caplog):
    # TensorFlow counts traces per code object, so one function per layer configuration
    # looked like retracing in a loop as soon as a script built a few kinds of layers
    caplog.set_level("WARNING", logger="tensorflow")
    for seed in range(3):
        for make in (LSTM, GRU, SimpleRNN):
            layer = make(3, seed=seed)
            for time in (2, 3, 5, 7):
                layer(np.ones((2, time, 4), "float32"))
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_the_users_own_retracing_is_still_reported(caplog):
    caplog.set_level("WARNING", logger="tensorflow")
    square = tf.function(lambda v: v * v)
    for size in range(1, 9):
        square(tf.ones((size, size + 1)))
    assert [r for r in caplog.records if "retracing" in r.getMessage()]
