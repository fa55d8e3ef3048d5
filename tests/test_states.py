"""Stateful layers on every engine: what ``layer.states`` hands out, and what splitting a
sequence along time into consecutive calls gives (docs/semantics.md, Stateful layers)."""

from __future__ import annotations

import numpy as np
import pytest

import multirnn

T, SPLIT = 6, 3
#: row 1 is masked at the two steps that begin the second call, row 0 nowhere
MASK = np.array([[True] * T, [True, True, True, False, False, True]])


def _write_into(value) -> None:
    """Overwrite an engine's state tensor in place wherever the engine lets one."""
    if hasattr(value, "zero_"):  # torch
        value.zero_()
        return
    if isinstance(value, np.ndarray):
        value[...] = 0
        return
    view = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if view.flags.writeable:  # a NumPy view of TensorFlow's buffer, if it shares one
        view[...] = 0


def _cell_layer(eng, **kwargs):
    from multirnn.builtin_cells import LSTMCell

    return eng.RNN(LSTMCell(3), **kwargs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN(cell)"])
def test_layer_states_is_a_copy_that_writing_into_leaves_the_carried_states_alone(eng, kind):
    if eng.name == "jax":
        pytest.skip("JAX arrays cannot be written into")
    kwargs = {"stateful": True, "seed": 0, "input_dim": 2, "dtype": "float64"}
    layer = _cell_layer(eng, **kwargs) if kind == "RNN(cell)" else getattr(eng, kind)(3, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, 4, 2))
    layer(x)
    before = [multirnn.to_numpy(s).copy() for s in layer.states]
    for value in layer.states:
        _write_into(value)
    handed = layer.states
    for value in handed:
        _write_into(value)
    for want, got in zip(before, layer.states):
        np.testing.assert_array_equal(multirnn.to_numpy(got), want)
    assert np.abs(before[0]).max() > 0  # zeros written over zeros would prove nothing


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_splitting_a_masked_sequence_keeps_the_states_and_zeroes_the_masked_steps_that_begin_a_call(
    eng, kind
):
    kwargs = {"return_sequences": True, "return_state": True, "seed": 0, "dtype": "float32"}
    x = np.random.default_rng(1).standard_normal((2, T, 2)).astype("float32")
    whole, *whole_states = getattr(eng, kind)(3, input_dim=2, **kwargs)(x, mask=MASK)
    streaming = getattr(eng, kind)(3, stateful=True, input_dim=2, **kwargs)
    first, *_ = streaming(x[:, :SPLIT], mask=MASK[:, :SPLIT])
    second, *states = streaming(x[:, SPLIT:], mask=MASK[:, SPLIT:])
    chunked = np.concatenate([multirnn.to_numpy(first), multirnn.to_numpy(second)], axis=1)
    whole = multirnn.to_numpy(whole)
    for got, want in zip(multirnn.to_numpy(states), multirnn.to_numpy(whole_states)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # states: the same
    held = ~MASK[1, SPLIT:].cumsum().astype(bool)  # masked steps before the call's first kept
    steps = SPLIT + np.flatnonzero(held)
    assert steps.tolist() == [3, 4]
    # one call repeats the last kept output there; a call that begins masked has none: zeros
    np.testing.assert_allclose(whole[1, steps], np.repeat(whole[1, SPLIT - 1 : SPLIT], 2, 0))
    np.testing.assert_array_equal(chunked[1, steps], 0.0)
    elsewhere = np.ones(chunked.shape[:2], bool)
    elsewhere[1, steps] = False
    np.testing.assert_allclose(chunked[elsewhere], whole[elsewhere], rtol=1e-5, atol=1e-6)


def test_keras2_splits_a_masked_sequence_the_same_way():
    """What the docs say Keras 2 does, checked against Keras 2 itself (tf-keras)."""
    tf_keras = pytest.importorskip("tf_keras")
    reference = multirnn.engine("numpy").LSTM(
        3, stateful=True, return_sequences=True, seed=0, input_dim=2
    )
    peer = tf_keras.layers.LSTM(
        3,
        recurrent_activation="hard_sigmoid",  # Keras 2's documented default, as multirnn's
        stateful=True,
        return_sequences=True,
        batch_input_shape=(2, None, 2),
    )
    peer.build((2, None, 2))
    peer.set_weights(reference.get_weights())
    x = np.random.default_rng(1).standard_normal((2, T, 2)).astype("float32")
    for part in (slice(0, SPLIT), slice(SPLIT, T)):
        want = np.asarray(peer(x[:, part], mask=MASK[:, part]))
        got = reference(x[:, part].astype("float64"), mask=MASK[:, part])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(want[1, :2] == 0)  # Keras 2 outputs zeros at the masked steps too
