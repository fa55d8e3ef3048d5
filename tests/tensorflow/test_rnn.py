"""RNN(cell) on the TensorFlow engine against the NumPy engine's RNN (the oracle): outputs,
masks, tf.function, traced gradients and errors, Keras training. What every engine shares
(carried states, files, gradients, errors) is in tests/test_rnn.py."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

if keras.backend.backend() != "tensorflow":  # pragma: no cover - another suite set Keras up
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

from multirnn_tensorflow.rnn import RNN  # noqa: E402

import multirnn  # noqa: E402

from .graphs import sequence_slice_grads  # noqa: E402

NumpyRNN = multirnn.engine("numpy").RNN


@multirnn.register_cell(name="tf_test_rnn.MinimalGRU")
class MinimalGRU(multirnn.Cell):
    def build(self, input_dim):
        u = self.units
        self.add_weight("kernel", (input_dim, 3 * u))
        self.add_weight("recurrent", (u, 3 * u), "orthogonal")
        self.add_weight("bias", (3 * u,), "zeros")

    def step(self, ops, w, x, states):
        (h,) = states
        u = self.units
        xp = ops.matmul(x, w["kernel"]) + w["bias"]
        hp = ops.matmul(h, w["recurrent"])
        sigmoid = ops.activation("sigmoid")
        z = sigmoid(xp[:, :u] + hp[:, :u])
        r = sigmoid(xp[:, u : 2 * u] + hp[:, u : 2 * u])
        candidate = ops.tanh(xp[:, 2 * u :] + r * hp[:, 2 * u :])
        h = z * h + (1.0 - z) * candidate
        return h, [h]


@multirnn.register_cell(name="tf_test_rnn.TwoState")
class TwoState(multirnn.Cell):
    """LSTM-like: states h and c, one fused kernel over [x, h]."""

    state_names = ("h", "c")

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim + self.units, 4 * self.units))
        self.add_weight("bias", (4 * self.units,), "ones")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        z = ops.matmul(ops.concat([x, h], axis=1), w["kernel"]) + w["bias"]
        sig = ops.activation("hard_sigmoid")
        i, f, o = sig(z[:, :u]), sig(z[:, u : 2 * u]), sig(z[:, 2 * u : 3 * u])
        c = f * c + i * ops.tanh(z[:, 3 * u :])
        h = o * ops.tanh(c)
        return h, [h, c]


@multirnn.register_cell(name="tf_test_rnn.ManyOps")
class ManyOps(multirnn.Cell):
    """Uses a broad slice of the array API, to check the adapter against NumPy."""

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("recurrent", (self.units, self.units), "orthogonal")

    def step(self, ops, w, x, states):
        (h,) = states
        a = ops.matmul(x, w["kernel"]) + ops.matmul(h, ops.matrix_transpose(w["recurrent"]))
        b = ops.clip(a, min=-1.5, max=1.5) + ops.where(a > 0, ops.sqrt(ops.abs(a)), 0.25)
        b = b + ops.mean(a, axis=1, keepdims=True) - ops.max(a, axis=-1, keepdims=True)
        b = b + 0.1 * ops.sum(ops.square(ops.sin(a)), axis=1, keepdims=True)
        b = b + ops.minimum(ops.exp(-ops.abs(a)), 0.5) + ops.log1p(ops.abs(a))
        b = b + ops.expm1(ops.cos(a)) * ops.sign(a) + ops.negative(ops.log(1.0 + a * a))
        b = b * ops.reshape(ops.stack([ops.ones_like(h[:, 0])] * self.units, axis=1), h.shape)
        b = b + ops.astype(ops.zeros_like(h) + ops.full_like(h, 0.5), x.dtype)
        b = b + ops.prod(ops.maximum(ops.abs(a), 0.5), axis=1, keepdims=True) * 0.01
        out = ops.tanh(b + ops.min(h, axis=1, keepdims=True))
        return out, [out]


def data(batch=3, time=5, features=4, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(dtype)


def pair(cell_cls, units=3, dtype="float64", **options):
    tf_layer = RNN(cell_cls(units), seed=11, dtype=dtype, **options)
    np_layer = NumpyRNN(cell_cls(units), seed=11, dtype=dtype, **options)
    return tf_layer, np_layer


def assert_same(got, want, dtype="float64"):
    tol = 1e-12 if dtype == "float64" else 1e-5
    got = got if isinstance(got, list) else [got]
    want = want if isinstance(want, list) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(np.asarray(g), w, rtol=tol, atol=tol)


MASK = np.array(
    [[True, True, False, True, False], [False, False, True, True, True],
     [False] * 5]
)  # fmt: skip

OPTIONS = {
    "last": {},
    "sequences": {"return_sequences": True},
    "state": {"return_state": True},
    "backwards": {"go_backwards": True, "return_sequences": True, "return_state": True},
    "unroll": {"unroll": True, "return_sequences": True},
}


def test_selected_by_the_engine_and_keras_serializable():
    assert multirnn.engine("tensorflow").RNN is RNN
    assert keras.saving.get_registered_object("multirnn>RNN") is RNN


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell_cls", [MinimalGRU, TwoState])
def test_same_seed_same_weights_as_numpy(cell_cls, dtype):
    a, b = pair(cell_cls, input_dim=4, dtype=dtype)
    assert a.weight_names == b.weight_names == [w.name for w in a.weights]
    for x, y in zip(a.get_weights(), b.get_weights()):
        assert x.dtype == y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(x, y)
    assert RNN(cell_cls(3)).compute_dtype == keras.config.floatx()


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("cell_cls", [MinimalGRU, TwoState])
def test_equals_numpy(cell_cls, option, masked):
    a, b = pair(cell_cls, **OPTIONS[option])
    x = data()
    mask = MASK if masked else None
    assert_same(a(tf.constant(x), mask=None if mask is None else tf.constant(mask)),
                b(x, mask=mask))  # fmt: skip


@pytest.mark.parametrize("backwards", [False, True])
def test_zero_output_for_mask_and_initial_state(backwards):
    opts = {"zero_output_for_mask": True, "return_sequences": True, "return_state": True,
            "go_backwards": backwards}  # fmt: skip
    a, b = pair(TwoState, **opts)
    x = data()
    init = [np.random.default_rng(5).standard_normal((3, 3)) for _ in range(2)]
    got = a(tf.constant(x), mask=tf.constant(MASK), initial_state=[tf.constant(s) for s in init])
    assert_same(got, b(x, mask=MASK, initial_state=init))


def test_float32_and_many_ops_match_numpy():
    a, b = pair(ManyOps, units=4, dtype="float32", return_sequences=True)
    x = data(dtype="float32")
    assert_same(a(x, mask=MASK), b(x, mask=MASK), dtype="float32")
    a, b = pair(ManyOps, units=4, return_sequences=True)
    assert_same(a(data()), b(data()))


@pytest.mark.parametrize("cell_cls", [MinimalGRU, TwoState])
def test_tf_function_with_unknown_time_length(cell_cls):
    a, b = pair(cell_cls, return_sequences=True, return_state=True, go_backwards=True)
    spec = [tf.TensorSpec([None, None, 4], tf.float64), tf.TensorSpec([None, None], tf.bool)]
    run = tf.function(lambda x, m: a(x, mask=m), input_signature=spec)
    for time in (5, 2):
        x, mask = data(time=time), MASK[:, :time]
        assert_same(run(tf.constant(x), tf.constant(mask)), b(x, mask=mask))
    traced = tf.function(lambda x: a(x))
    assert_same(traced(tf.constant(data())), b(data()))


def _numpy_loss(layer, x, mask, r):
    out = layer(x, mask=mask)
    return float(np.sum(out * r))


def test_gradients_in_a_tf_function_match_finite_differences():
    # eager gradients on every engine: tests/test_rnn.py
    opts = {"return_sequences": True, "go_backwards": True}
    a, b = pair(MinimalGRU, units=2, **opts)
    x = data(batch=2, time=3, features=2, seed=3)
    mask = np.array([[True, False, True], [False, True, True]])
    r = np.random.default_rng(4).standard_normal((2, 3, 2))
    b.build(x.shape)

    def grads(xt):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(a(xt, mask=tf.constant(mask)) * r)
        return tape.gradient(loss, [xt, *a.trainable_weights])

    got = [g.numpy() for g in tf.function(grads)(tf.constant(x))]
    eps = 1e-6

    def central(array, setter):
        out = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            hi, lo = array.copy(), array.copy()
            hi[i] += eps
            lo[i] -= eps
            out[i] = (setter(hi) - setter(lo)) / (2 * eps)
        return out

    want = [central(x, lambda v: _numpy_loss(b, v, mask, r))]
    weights = b.get_weights()
    for k, w in enumerate(weights):

        def loss_with(v, k=k):
            b.set_weights([v if j == k else u for j, u in enumerate(weights)])
            return _numpy_loss(b, x, mask, r)

        want.append(central(w, loss_with))
    b.set_weights(weights)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_the_unrolled_loop_takes_the_inputs_apart_once(go_backwards):
    layer, _ = pair(MinimalGRU, return_sequences=True, unroll=True, go_backwards=go_backwards)
    x = tf.constant(data(time=6))
    layer(x)
    assert sequence_slice_grads(layer, x) == 0


def test_keras_sequential_fit_step_with_masking():
    cell_layer = RNN(TwoState(3), seed=0, return_sequences=False)
    model = keras.Sequential(
        [keras.Input((None, 4)), keras.layers.Masking(0.0), cell_layer, keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = data(batch=8, time=6, dtype="float32")
    x[:2, -2:] = 0.0
    y = np.ones((8, 1), "float32")
    before = cell_layer.get_weights()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(p, q) for p, q in zip(before, cell_layer.get_weights()))
    ref = NumpyRNN(TwoState(3), dtype="float32", input_dim=4)
    ref.set_weights(cell_layer.get_weights())
    mask = np.any(x != 0.0, axis=-1)
    inner = keras.Model(model.inputs[0], cell_layer.output)
    assert_same(inner(x), ref(x, mask=mask), dtype="float32")


def test_config_round_trips_through_keras():
    a = RNN(MinimalGRU(3), seed=1, return_sequences=True, input_dim=4, name="mine")
    config = a.get_config()
    assert config["cell"] == {"class_name": "tf_test_rnn.MinimalGRU", "config": {"units": 3}}
    assert config["input_dim"] == 4 and config["name"] == "mine"
    assert set(config) - {"cell"} == set(NumpyRNN(MinimalGRU(3)).get_config()) - {"cell"}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(a))
    assert isinstance(clone, RNN) and clone.built
    assert clone.get_config() == config
    frozen = RNN.from_config({**config, "trainable": False})
    assert not frozen.trainable and frozen.trainable_weights == []


def test_numpy_and_list_inputs():
    a, b = pair(MinimalGRU, dtype="float32", return_state=True)
    x = data(dtype="float64")  # cast to the layer's dtype, as on every engine
    assert_same(a(x, mask=MASK.tolist(), initial_state=np.zeros((3, 3))),
                b(x.astype("float32"), mask=MASK), dtype="float32")  # fmt: skip
    assert_same(a(x.tolist()), b(x.astype("float32")), dtype="float32")


@multirnn.register_cell(name="tf_test_rnn.WrongShape")
class WrongShape(multirnn.Cell):
    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units + 1))

    def step(self, ops, w, x, states):
        out = ops.matmul(x, w["kernel"])
        return out, [states[0]]


def test_clear_errors():
    # what every engine refuses: tests/test_rnn.py
    with pytest.raises(ValueError, match=r"returned output of shape \(None, 4\)|\(3, 4\)"):
        tf.function(RNN(WrongShape(3))).get_concrete_function(
            tf.TensorSpec([None, None, 4], tf.float32)
        )
    with pytest.raises(ValueError, match="unroll=True needs a static"):
        tf.function(RNN(MinimalGRU(3), unroll=True)).get_concrete_function(
            tf.TensorSpec([2, None, 4], tf.float32)
        )
