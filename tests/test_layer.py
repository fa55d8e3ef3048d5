"""What every engine's layer shares through ``LayerCore``: the Keras 2 layer keywords
(``input_shape``, ``batch_input_shape``, ``batch_size``, ``input_length``, ``weights``,
``trainable``) with their Keras 2 meaning, and one Keras-2-style script giving the same
numbers on every engine from NumPy float64 data."""

from __future__ import annotations

import numpy as np
import pytest

import multirnn
from multirnn import engines


def keras2_script(eng, x: np.ndarray) -> list[np.ndarray]:
    """Written as Keras 2 code would be: shapes, initial weights, frozen layers, a
    stateful layer given its batch size, Keras 2's softmax and exponential."""
    rng = np.random.default_rng(7)
    kernel = rng.standard_normal((4, 4 * 3)) * 0.3
    recurrent = rng.standard_normal((3, 4 * 3)) * 0.3
    bias = rng.standard_normal(4 * 3) * 0.1
    encoder = eng.LSTM(3, input_shape=(6, 4), return_sequences=True,
                       weights=[kernel, recurrent, bias], trainable=False)  # fmt: skip
    gru = eng.GRU(2, input_dim=3, input_length=6, activation="softmax", seed=3,
                  recurrent_activation="exponential")  # fmt: skip
    streaming = eng.SimpleRNN(2, batch_input_shape=(2, None, 4), stateful=True, seed=5)
    first, second = streaming(x[:, :3]), streaming(x[:, 3:])
    return multirnn.to_numpy([gru(encoder(x)), first, second])


def test_a_keras2_script_gives_the_same_numbers_on_every_engine(eng):
    x = np.random.default_rng(0).standard_normal((2, 6, 4))
    want = keras2_script(multirnn.engine("numpy"), x)
    got = keras2_script(eng, x)
    for g, w in zip(got, want, strict=True):
        rtol = 1e-5 if g.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


def test_shape_keywords_build_and_check_calls(eng):
    layer = eng.LSTM(3, batch_input_shape=(2, 5, 4))
    assert layer.built and layer.input_dim == 4
    assert (layer.batch_size, layer.input_length) == (2, 5)
    assert layer.get_config()["batch_size"] == 2
    with pytest.raises(ValueError, match="created with input_length=5 .* 6 time steps"):
        layer(np.zeros((2, 6, 4)))
    with pytest.raises(ValueError, match="created with batch_size=2 .* batch size 3"):
        layer(np.zeros((3, 5, 4)))
    open_time = eng.GRU(3, input_shape=(None, 4))
    assert open_time.input_length is None
    assert multirnn.to_numpy(open_time(np.zeros((1, 9, 4)))).shape == (1, 3)


def test_weights_keyword_sets_the_initial_weights(eng):
    source = multirnn.engine("numpy").GRU(3, seed=0, input_dim=2)
    layer = eng.GRU(3, weights=source.get_weights())
    assert layer.built and layer.input_dim == 2
    for got, want in zip(layer.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-7)
    with pytest.raises(ValueError, match=r"weights=.*'kernel'"):
        eng.GRU(3, weights=source.get_weights(), input_dim=5)


def test_trainable_false_freezes_the_weights_in_the_engines_idiom(eng):
    layer = eng.LSTM(2, trainable=False, input_dim=3, seed=0)
    assert layer.trainable is False
    assert layer.get_config()["trainable"] is False
    x = np.ones((1, 2, 3))
    if eng.name == "torch":
        assert not any(p.requires_grad for p in layer.parameters())
        layer.trainable = True
        assert all(p.requires_grad for p in layer.parameters())
    elif eng.name == "jax":
        import jax

        grads = jax.grad(lambda m: m(x).sum())(layer)
        assert all(not np.any(g) for g in jax.tree.leaves(grads))
        layer.trainable = True
        grads = jax.grad(lambda m: m(x).sum())(layer)
        assert any(np.any(g) for g in jax.tree.leaves(grads))
    elif eng.name == "tensorflow":
        assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 3
        layer.trainable = True
        assert len(layer.trainable_weights) == 3 and layer.get_config()["trainable"] is True
    else:
        layer.trainable = True
        assert layer.get_config()["trainable"] is True


def test_conflicting_keywords_name_both(eng):
    with pytest.raises(ValueError, match=r"input_shape=\(5, 4\) gives input_dim=4 but input_dim"):
        eng.LSTM(3, input_shape=(5, 4), input_dim=3)
    with pytest.raises(ValueError, match=r"input_shape=\(5, 4\) gives input_length=5 but "
                                         r"batch_input_shape=\(2, 6, 4\) gives 6"):  # fmt: skip
        eng.LSTM(3, batch_input_shape=(2, 6, 4), input_shape=(5, 4))
    with pytest.raises(ValueError, match=r"gives batch_size=2 but batch_size gives 3"):
        eng.LSTM(3, batch_input_shape=(2, 6, 4), batch_size=3)
    with pytest.raises(ValueError, match=r"input_shape must be a tuple \(time, features\)"):
        eng.LSTM(3, input_shape=(4,))
    with pytest.raises(TypeError, match="trainable must be True or False"):
        eng.LSTM(3, trainable="no")


def test_framework_objects_are_converted_exactly_or_refused_at_creation(eng):
    keras = pytest.importorskip("keras")
    layer = eng.LSTM(2, input_dim=3, seed=0, kernel_regularizer=keras.regularizers.L1L2(0.1, 0.2),
                     recurrent_constraint=keras.constraints.MaxNorm(1.5, axis=0))  # fmt: skip
    assert layer.kernel_regularizer == multirnn.regularizers.L1L2(l1=0.1, l2=0.2)
    assert layer.recurrent_constraint == multirnn.constraints.MaxNorm(max_value=1.5, axis=0)
    same = eng.LSTM(2, input_dim=3, seed=0, kernel_regularizer={"class_name": "L1L2", "config":
                    {"l1": 0.1, "l2": 0.2}}, recurrent_constraint="max_norm")  # fmt: skip

    def penalty(m):  # JAX layers are pure: penalties() instead of collected losses
        return float(multirnn.to_numpy((m.penalties() if eng.name == "jax" else m.losses)[0]))

    assert np.isclose(penalty(layer), penalty(same))
    if "torch" in engines.available():
        import torch

        with pytest.raises(TypeError, match="kernel_initializer is torch's xavier_uniform_"):
            eng.LSTM(2, kernel_initializer=torch.nn.init.xavier_uniform_)
    with pytest.raises(TypeError, match="kernel_constraint is keras's Constraint"):
        eng.GRU(2, kernel_constraint=keras.constraints.Constraint())
    with pytest.raises(TypeError, match="kernel_regularizer is keras's OrthogonalRegularizer"):
        eng.GRU(2, kernel_regularizer=keras.regularizers.OrthogonalRegularizer())


def test_bidirectional_takes_the_keras2_keywords_and_trainable(eng):
    wrapper = eng.Bidirectional(eng.LSTM(2, seed=0), input_shape=(5, 3))
    assert wrapper.built and wrapper.spec.layer.input_length == 5
    with pytest.raises(ValueError, match="created with input_length=5 .* 6 time steps"):
        wrapper(np.zeros((1, 6, 3)))
    with pytest.raises(ValueError, match=r"input_shape=\(5, 3\) gives input_dim=3 but input_dim"):
        eng.Bidirectional(eng.LSTM(2, input_dim=4), input_shape=(5, 3))
    with pytest.raises(TypeError, match="unexpected keyword argument 'units'"):
        eng.Bidirectional(eng.LSTM(2), units=3)
    frozen = eng.Bidirectional(eng.GRU(2, seed=0), trainable=False, batch_input_shape=(2, 4, 3))
    assert not frozen.trainable
    assert not frozen.forward_layer.trainable and not frozen.backward_layer.trainable
    assert multirnn.from_config(frozen.get_config(), backend="numpy").trainable is False
    frozen.trainable = True
    assert frozen.forward_layer.trainable and frozen.backward_layer.trainable
    assert frozen.get_config()["layer"]["trainable"] is True
