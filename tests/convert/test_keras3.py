"""Keras 3 SimpleRNN / LSTM / GRU <-> multirnn layers through the public converters."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from multirnn import convert  # noqa: E402
from multirnn.convert import ConversionError  # noqa: E402
from multirnn.reference.layers import GRU, LSTM, SimpleRNN  # noqa: E402


def _x(batch=3, time=6, features=4, dtype="float64"):
    return np.random.default_rng(0).standard_normal((batch, time, features)).astype(dtype)


def _keras(kind, **kwargs):
    layer = getattr(keras.layers, kind)(5, dtype="float64", **kwargs)
    layer.build((None, None, 4))
    rng = np.random.default_rng(1)
    layer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in layer.get_weights()])
    return layer


CASES = [
    ("LSTM", {}),
    ("LSTM", {"recurrent_activation": "hard_sigmoid", "go_backwards": True}),
    ("GRU", {}),
    ("GRU", {"reset_after": False, "activation": "relu"}),
    ("SimpleRNN", {"activation": "selu", "use_bias": False}),
    ("GRU", {"return_state": True, "return_sequences": True}),
]


@pytest.mark.parametrize("kind,kwargs", CASES, ids=str)
def test_keras_layers_and_multirnn_layers_compute_the_same(kind, kwargs):
    peer = _keras(kind, **kwargs)
    x = _x()
    mask = np.arange(6)[None, :] < np.array([6, 3, 5])[:, None]
    want = peer(x, mask=mask)
    want = [
        keras.ops.convert_to_numpy(w) for w in (want if isinstance(want, (list, tuple)) else [want])
    ]
    layer = convert.from_keras(peer, backend="numpy")
    got = layer(x, mask=mask)
    for g, w in zip(got if isinstance(got, (list, tuple)) else [got], want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-12)
    back = convert.to_keras(layer)
    assert back.get_config()["activation"] == peer.get_config()["activation"]
    for a, b in zip(back.get_weights(), peer.get_weights()):
        np.testing.assert_array_equal(a, b)  # keras -> multirnn -> keras is exact


def test_keras_hard_sigmoid_means_slope_one_sixth():
    layer = convert.from_keras(_keras("LSTM", recurrent_activation="hard_sigmoid"),
                               backend="numpy")  # fmt: skip
    assert layer.spec.recurrent_activation == "hard_sigmoid_relu6"


def test_multirnn_hard_sigmoid_has_no_keras3_form():
    with pytest.raises(ConversionError, match="Keras 2's, slope 0.2"):
        convert.to_keras(LSTM(5, input_dim=4, seed=0))  # the documented default


@pytest.mark.parametrize(
    "peer,match",
    [
        (lambda: _keras("LSTM", activation="gelu"), "activation='gelu' has no multirnn"),
        (lambda: _keras("GRU", kernel_regularizer="l2"), "kernel_regularizer"),
        (lambda: keras.layers.Dense(3), "got Dense"),
        (lambda: keras.layers.LSTM(3), "no weights yet"),
    ],
)
def test_keras_layers_without_a_multirnn_form_are_refused(peer, match):
    with pytest.raises(ConversionError, match=match):
        convert.from_keras(peer(), backend="numpy")


def test_to_keras_refuses_training_options_unless_asked():
    layer = SimpleRNN(5, input_dim=4, seed=0, kernel_regularizer="l2")
    with pytest.raises(ConversionError, match="kernel_regularizer"):
        convert.to_keras(layer)
    assert convert.to_keras(layer, ignore_training_options=True).kernel_regularizer is None


def test_gru_default_reset_after_is_converted_explicitly():
    # multirnn's GRU default is reset_after=False, Keras 3's is True: the flag travels
    peer = _keras("GRU")
    assert convert.from_keras(peer, backend="numpy").spec.reset_after is True
    layer = GRU(5, input_dim=4, seed=0, recurrent_activation="sigmoid")
    assert convert.to_keras(layer).get_config()["reset_after"] is False


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_stateful_layers_carry_their_states_both_ways(kind):
    peer = getattr(keras.layers, kind)(5, stateful=True, return_sequences=True, dtype="float64")
    peer.build((3, None, 4))
    rng = np.random.default_rng(2)
    peer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in peer.get_weights()])
    x = _x()
    peer(x)  # the states are no longer zeros
    layer = convert.from_keras(peer, backend="numpy")
    back = convert.to_keras(layer)
    want = keras.ops.convert_to_numpy(peer(x))  # each continues from the same states
    np.testing.assert_allclose(layer(x), want, atol=1e-12)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)), want, atol=1e-12)


def test_a_stateful_layer_needs_a_batch_size_for_keras():
    fresh = SimpleRNN(5, input_dim=4, seed=0, stateful=True)
    with pytest.raises(ConversionError, match="needs a static batch size"):
        convert.to_keras(fresh)
    assert convert.to_keras(fresh, batch_size=2)(_x(batch=2)).shape == (2, 5)
    fresh(_x(batch=3))
    with pytest.raises(ConversionError, match="carries states for batch size 3"):
        convert.to_keras(fresh, batch_size=2)
    # Keras 2's batch_input_shape fixes it, and a frozen layer stays frozen
    fixed = SimpleRNN(5, batch_input_shape=(2, None, 4), seed=0, stateful=True, trainable=False)
    peer = convert.to_keras(fixed)
    assert peer(_x(batch=2)).shape == (2, 5) and not peer.trainable


@pytest.mark.parametrize("merge_mode", ["concat", "mul", None])
def test_keras_bidirectional_converts_both_ways(merge_mode):
    peer = keras.layers.Bidirectional(
        keras.layers.LSTM(5, return_sequences=True, return_state=True, dtype="float64"),
        merge_mode=merge_mode, dtype="float64",
    )  # fmt: skip
    peer.build((None, None, 4))
    rng = np.random.default_rng(3)
    peer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in peer.get_weights()])
    x = _x()
    mask = np.arange(6)[None, :] < np.array([6, 3, 5])[:, None]
    want = [keras.ops.convert_to_numpy(w) for w in peer(x, mask=mask)]
    layer = convert.from_keras(peer, backend="numpy")
    for g, w in zip(layer(x, mask=mask), want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-12)
    back = convert.to_keras(layer)
    for a, b in zip(back.get_weights(), peer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for g, w in zip(back(x, mask=mask), want, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(g), w, atol=1e-12)


def test_a_keras_bidirectional_with_another_backward_layer_is_refused():
    peer = keras.layers.Bidirectional(
        keras.layers.GRU(3, dtype="float64"),
        backward_layer=keras.layers.GRU(3, go_backwards=True, activation="relu", dtype="float64"),
        dtype="float64",
    )  # fmt: skip
    peer.build((None, None, 4))
    with pytest.raises(ConversionError, match="differs in activation"):
        convert.from_keras(peer, backend="numpy")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16", "float16"])
def test_low_precision_and_mixed_layers_convert_with_their_policy(policy):
    """The policy and the weights cross exactly (a mixed policy's float32 variables too).
    Keras rounds at every step where multirnn computes in float32 (multirnn.precision), so
    the two results agree within a few units in the last place."""
    compute = policy.removeprefix("mixed_")
    # (Keras's orthogonal initializer has no bfloat16 QR on TensorFlow)
    init = {"recurrent_initializer": "glorot_uniform"}
    layer = keras.layers.LSTM(5, dtype=policy, return_sequences=True, **init)
    layer.build((None, None, 4))
    ours = convert.from_keras(layer, backend="numpy")
    assert ours.spec.dtype == policy and ours.dtype == compute
    for a, b in zip(ours.get_weights(), layer.get_weights(), strict=True):
        assert a.dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, np.asarray(b))
    x = _x(dtype="float32")
    got = ours(x).astype(np.float64)
    want = np.asarray(layer(keras.ops.cast(x, compute)), np.float32).astype(np.float64)
    tol = {"bfloat16": 2e-2, "float16": 2e-3}[compute]  # |d| <= tol * (1 + |want|)
    np.testing.assert_allclose(got, want, atol=tol, rtol=tol)
    back = convert.to_keras(ours)
    assert back.dtype_policy.name == policy
    for a, b in zip(ours.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    wrapped = keras.layers.Bidirectional(keras.layers.GRU(5, dtype=policy, **init))
    wrapped.build((None, None, 4))
    assert convert.from_keras(wrapped, backend="numpy").forward_layer.spec.dtype == policy
