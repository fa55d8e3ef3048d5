"""The NumPy engine's layer objects: building, weights, calling, state, dropout. What every
engine shares is in tests/test_builtin_layers.py."""

from __future__ import annotations

import numpy as np
import pytest

from multirnn.reference import kernels
from multirnn.reference.layers import GRU, LSTM, SimpleRNN

from ..cases import VARIANTS, variant_id

CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
RNG = np.random.default_rng(7)


def make(variant, units=3, **kwargs):
    layer, extra = variant
    return CLASSES[layer](units, **extra, **kwargs)


def inputs(batch=2, time=4, features=5, dtype=np.float64):
    return RNG.standard_normal((batch, time, features)).astype(dtype)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_builds_on_first_call_and_matches_the_functional_entry(variant):
    layer = make(variant, return_sequences=True, return_state=True, seed=0)
    assert not layer.built and layer.input_dim is None
    x = inputs()
    output, *states = layer(x)
    assert layer.built and layer.input_dim == 5
    assert output.shape == (2, 4, 3) and len(states) == layer.spec.num_states
    want, want_states = kernels.forward(layer.spec, layer.get_weights(), x)
    np.testing.assert_array_equal(output, want)
    for a, b in zip(states, want_states):
        np.testing.assert_array_equal(a, b)


def test_input_dim_builds_at_construction_and_build_checks():
    layer = LSTM(4, input_dim=3)
    assert layer.built and layer.kernel.shape == (3, 16)
    layer.build((None, 7, 3))  # same size: no-op
    with pytest.raises(ValueError, match="already built for input_dim=3"):
        layer.build((2, 7, 4))
    with pytest.raises(ValueError, match="inputs have 5 features .* input_dim=3"):
        layer(inputs())
    with pytest.raises(ValueError, match="input_shape must be"):
        LSTM(2).build(5)
    with pytest.raises(ValueError, match="feature size .* must be a positive integer"):
        LSTM(2).build((None, None, None))


def test_weights_before_build_fail_clearly():
    with pytest.raises(ValueError, match="call build"):
        GRU(2).get_weights()


def test_return_shapes():
    x = inputs()
    assert LSTM(3)(x).shape == (2, 3)
    out = LSTM(3, return_state=True)(x)
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 3)] * 3
    np.testing.assert_array_equal(out[0], out[1])  # output is h
    assert GRU(3, return_sequences=True)(x).shape == (2, 4, 3)


def test_initial_state_single_array_for_single_state_layers():
    x = inputs()
    h0 = RNG.standard_normal((2, 3))
    layer = GRU(3, seed=1)
    np.testing.assert_array_equal(layer(x, initial_state=h0), layer(x, initial_state=[h0]))
    with pytest.raises(ValueError, match=r"list of 2 array\(s\) \[h, c\]"):
        LSTM(3)(x, initial_state=h0)


# -- seeds and weights (a seed's weights on every engine: tests/test_builtin_layers.py) ------


def test_unseeded_layers_follow_numpy_global_seed():
    np.random.seed(5)
    a = LSTM(2, input_dim=2).get_weights()[0]
    np.random.seed(5)
    np.testing.assert_array_equal(a, LSTM(2, input_dim=2).get_weights()[0])


def test_default_initial_weights():
    lstm = LSTM(3, input_dim=4, seed=0)
    k, r, b = lstm.get_weights()
    np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # forget block = 1
    limit = np.sqrt(6 / (4 + 12))
    assert np.abs(k).max() <= limit
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)  # orthogonal (3, 12)
    gru = GRU(2, input_dim=3, seed=0, reset_after=True)
    assert gru.bias.shape == (2, 6) and not gru.bias.any()
    assert SimpleRNN(2, use_bias=False, input_dim=3).bias is None


def test_unit_forget_bias_overrides_with_warning():
    with pytest.warns(UserWarning, match="overrides bias_initializer"):
        layer = LSTM(2, bias_initializer="ones", input_dim=1, seed=0)
    np.testing.assert_array_equal(layer.bias, [0, 0, 1, 1, 0, 0, 0, 0])
    plain = LSTM(2, bias_initializer="ones", unit_forget_bias=False, input_dim=1, seed=0)
    np.testing.assert_array_equal(plain.bias, np.ones(8))


def test_set_weights_validates_and_copies():
    layer = LSTM(2, input_dim=3)
    good = [np.ones((3, 8)), np.ones((2, 8)), np.ones(8)]
    layer.set_weights(good)
    good[0][0, 0] = 5.0
    assert layer.kernel[0, 0] == 1.0
    with pytest.raises(ValueError, match="has 3 weights .* got a list of 2"):
        layer.set_weights(good[:2])
    with pytest.raises(ValueError, match=r"'recurrent_kernel' .* must have shape \(2, 8\), got"):
        layer.set_weights([good[0], np.ones((8, 2)), good[2]])
    with pytest.raises(TypeError, match="'bias' must be a floating-point array"):
        layer.set_weights([good[0], good[1], np.ones(8, int)])
    with pytest.raises(TypeError, match="expects a list of 3 arrays"):
        layer.set_weights(np.ones(3))


def test_set_weights_builds_an_unbuilt_layer():
    layer = GRU(2, reset_after=True)
    layer.set_weights([np.zeros((4, 6)), np.zeros((2, 6)), np.zeros((2, 6))])
    assert layer.built and layer.input_dim == 4


def test_weights_are_cast_to_the_layer_dtype():
    layer = SimpleRNN(2, dtype="float32", input_dim=2)
    assert all(w.dtype == np.float32 for w in layer.get_weights())
    layer.set_weights([np.ones((2, 2)), np.ones((2, 2)), np.ones(2)])
    assert layer.kernel.dtype == np.float32


# -- dtype and call errors ------------------------------------------------------------------


def test_dtype_default_and_mismatch():
    assert LSTM(2).dtype == "float64"
    layer = LSTM(2, dtype="float32")
    assert layer(inputs(dtype=np.float32)).dtype == np.float32
    # NumPy data is cast to the layer's dtype (the rule every engine shares)
    x = inputs()
    np.testing.assert_array_equal(layer(x), layer(x.astype(np.float32)))
    with pytest.raises(TypeError, match=r"inputs must be floating-point data .* \(int64\)"):
        LSTM(2)(np.ones((1, 2, 3), dtype=np.int64))


# -- stateful (splitting a sequence over calls on every engine: tests/test_builtin_layers.py) -


def test_stateful_batch_size_is_fixed_and_state_survives_errors():
    layer = LSTM(3, stateful=True, seed=0)
    layer(inputs(batch=2))
    before = layer.states
    with pytest.raises(
        ValueError, match="holds states for batch size 2, but the inputs have batch size 3"
    ):
        layer(inputs(batch=3))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        layer(inputs(batch=2), mask=np.ones((2, 4)))
    for a, b in zip(layer.states, before):
        np.testing.assert_array_equal(a, b)
    layer.reset_states([np.ones((3, 3)), np.zeros((3, 3))])  # new values set the batch size
    assert layer(inputs(batch=3)).shape == (3, 3)


def test_reset_states_validation():
    with pytest.raises(ValueError, match="applies to stateful layers"):
        LSTM(2).reset_states()
    layer = LSTM(2, stateful=True)
    with pytest.raises(ValueError, match=r"reset_states\(states\) must be a list of 2"):
        layer.reset_states([np.zeros((1, 2))])
    with pytest.raises(ValueError, match="state 'c' must have shape"):
        layer.reset_states([np.zeros((1, 2)), np.zeros((2, 2))])
    with pytest.raises(TypeError, match=r"reset_states\(states\) must be floating-point"):
        layer.reset_states([np.zeros((1, 2), np.int32), np.zeros((1, 2))])


def test_stateful_initial_state_must_keep_the_batch_size():
    layer = GRU(3, stateful=True, seed=0)
    layer(inputs(batch=2))
    with pytest.raises(ValueError, match="holds states for batch size 2"):
        layer(inputs(batch=3), initial_state=np.zeros((3, 3)))


def test_call_options_are_keyword_only():
    with pytest.raises(TypeError):
        GRU(3)(inputs(), np.ones((2, 4), bool))


def test_stateful_initial_state_overrides_the_carried_state():
    layer = GRU(3, stateful=True, seed=0)
    x = inputs()
    layer(x)
    fresh = GRU(3, seed=0)
    fresh.set_weights(layer.get_weights())
    h0 = np.zeros((2, 3))
    np.testing.assert_array_equal(layer(x, initial_state=[h0]), fresh(x))


# -- dropout --------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", [0, 1, 2])
def test_dropout_only_in_training_and_reproducible(implementation):
    x = inputs()
    kwargs = {"dropout": 0.5, "recurrent_dropout": 0.5, "implementation": implementation}
    a, b = LSTM(3, seed=9, **kwargs), LSTM(3, seed=9, **kwargs)
    infer = a(x)
    np.testing.assert_array_equal(infer, a(x, training=False))
    train = a(x, training=True)
    assert not np.allclose(train, infer)
    np.testing.assert_array_equal(b(x), infer)
    np.testing.assert_array_equal(b(x, training=True), train)  # same seed, same masks


def test_dropout_mask_shapes_follow_implementation():
    layer = GRU(3, dropout=0.1, recurrent_dropout=0.2)
    assert layer._dropout_mask_shapes(2, 5) == ((3, 2, 5), (3, 2, 3))
    layer = GRU(3, dropout=0.1, implementation=2)
    assert layer._dropout_mask_shapes(2, 5) == ((2, 5), None)


# -- config (round trips on every engine: tests/test_builtin_layers.py) ------------------------


def test_attributes_mirror_the_arguments():
    layer = LSTM(5, go_backwards=True, dropout=0.25)
    assert (layer.units, layer.go_backwards, layer.dropout) == (5, True, 0.25)
    assert layer.recurrent_activation == "hard_sigmoid"
    assert repr(layer) == "LSTM(units=5, go_backwards=True) [numpy]"
