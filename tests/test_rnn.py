"""``RNN(cell)`` as every engine provides it, against the NumPy engine's (the oracle):
selection, carried states over calls, empty batches, files, and errors that say what was
expected. Each engine's own option grids, gradients and framework integration are in its
folder; Bidirectional of ``RNN(cell)`` is in test_bidirectional_cells.py."""

from __future__ import annotations

import numpy as np
import pytest

import multirnn
from multirnn.conformance import cell_suite

from .cases import PACKAGES, is_native, native

NUMPY = multirnn.engine("numpy")


@multirnn.register_cell(name="tests.test_rnn.MinGRU")
class MinGRU(multirnn.Cell):
    """A GRU (reset gate before the recurrent product), a penalty and two constraints."""

    def build(self, input_dim):
        u = self.units
        max_norm = {"class_name": "MaxNorm", "config": {"max_value": 0.1}}
        self.add_weight("kernel", (input_dim, 3 * u), constraint=max_norm)
        self.add_weight("recurrent", (u, 3 * u), "orthogonal", regularizer="l2")
        self.add_weight("bias", (3 * u,), "random_normal", constraint="non_neg")

    def step(self, ops, w, x, states):
        (h,) = states
        u = self.units
        xz = ops.matmul(x, w["kernel"]) + w["bias"]
        sigmoid = ops.activation("sigmoid")
        z = sigmoid(xz[:, :u] + ops.matmul(h, w["recurrent"][:, :u]))
        r = sigmoid(xz[:, u : 2 * u] + ops.matmul(h, w["recurrent"][:, u : 2 * u]))
        candidate = ops.tanh(xz[:, 2 * u :] + ops.matmul(r * h, w["recurrent"][:, 2 * u :]))
        h = z * h + (1 - z) * candidate
        return h, [h]


@multirnn.register_cell(name="tests.test_rnn.TwoState")
class TwoState(multirnn.Cell):
    """LSTM-like: states h and c, the output is h."""

    state_names = ("h", "c")

    def build(self, input_dim):
        u = self.units
        self.add_weight("W", (input_dim, 4 * u))
        self.add_weight("U", (u, 4 * u), "orthogonal")
        self.add_weight("b", (4 * u,), "random_normal")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        z = ops.matmul(x, w["W"]) + ops.matmul(h, w["U"]) + w["b"]
        gate = ops.activation(self.gate)
        i, f, o = gate(z[:, :u]), gate(z[:, u : 2 * u]), gate(z[:, 3 * u :])
        c = f * c + i * ops.tanh(z[:, 2 * u : 3 * u])
        h = o * ops.tanh(c)
        return h, [h, c]


class WrongShape(multirnn.Cell):
    """Unregistered, and its step's output is not (batch, units)."""

    def build(self, input_dim):
        self.add_weight("W", (input_dim, self.units + 1))

    def step(self, ops, w, x, states):
        out = ops.matmul(x, w["W"])
        return out, [out]


CELLS = {"gru": lambda: MinGRU(3), "two_state": lambda: TwoState(3, gate="hard_sigmoid")}

MASK = np.array(
    [[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=bool
)  # a gap, a fully masked row, a left-padded row


def data(batch=3, time=5, features=4, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(dtype)


def pair(eng, kind, **options):
    """The engine's layer and the NumPy oracle with the same seed (so the same weights)."""
    return eng.RNN(CELLS[kind](), seed=7, **options), NUMPY.RNN(CELLS[kind](), seed=7, **options)


def check(eng, ours, theirs, atol):
    """The engine's result (its own tensors) equals the oracle's, to ``atol``."""
    ours = ours if isinstance(ours, list) else [ours]
    theirs = theirs if isinstance(theirs, list) else [theirs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert is_native(eng.name, a), type(a)
        assert tuple(a.shape) == b.shape
        np.testing.assert_allclose(multirnn.to_numpy(a), b, rtol=0, atol=atol)


def test_selected_by_the_engine(eng):
    assert eng.RNN.__module__.startswith(PACKAGES[eng.name] + ".")
    multirnn.set_backend(eng.name)
    assert multirnn.RNN is eng.RNN


@pytest.mark.parametrize(
    "options",
    [{"go_backwards": True}, {"return_state": True}, {"return_sequences": True}],
    ids=["backwards", "state", "sequences"],
)
@pytest.mark.parametrize("kind", list(CELLS))
def test_stateful_over_two_calls_and_reset(eng64, kind, options):
    a, b = pair(eng64, kind, stateful=True, dtype="float64", **options)
    assert a.states is None
    x1, x2 = data(seed=1), data(seed=2)
    t = native
    check(eng64, a(t(eng64.name, x1)), b(x1), 1e-12)
    check(eng64, a(t(eng64.name, x2), mask=t(eng64.name, MASK)), b(x2, mask=MASK), 1e-12)
    check(eng64, list(a.states), b.states, 1e-12)
    with pytest.raises(ValueError, match="batch size 3"):
        a(t(eng64.name, data(batch=2)))
    a.reset_states()
    b.reset_states()
    check(eng64, a(t(eng64.name, x1)), b(x1), 1e-12)
    states = [np.full((2, 3), 0.5 - k) for k in range(len(a.spec.state_names))]
    a.reset_states(states)
    b.reset_states(states)
    # NumPy inputs and states follow the engine's input rule too
    check(eng64, a(data(batch=2)), b(data(batch=2)), 1e-12)
    if kind == "two_state":
        with pytest.raises(ValueError, match="'c'"):
            a.reset_states([np.zeros((3, 3)), np.zeros((3, 2))])


def test_batch_zero(eng64):
    a, b = pair(eng64, "two_state", return_sequences=True, return_state=True, dtype="float64")
    x = data(batch=0)
    got = a(native(eng64.name, x))
    assert [tuple(g.shape) for g in got] == [(0, 5, 3), (0, 3), (0, 3)]
    check(eng64, got, b(x), 0)
    mask = np.zeros((0, 5), bool)
    check(eng64, a(x, mask=mask), b(x, mask=mask), 0)


@pytest.mark.parametrize(
    "kind,options",
    [
        ("gru", {"stateful": True, "return_sequences": True}),
        ("two_state", {"dtype": "float64", "return_state": True, "go_backwards": True}),
    ],
    ids=["stateful", "backwards"],
)
def test_save_load_on_numpy_and_back(eng64, kind, options, tmp_path):
    a = eng64.RNN(CELLS[kind](), seed=1, **options)
    dtype = str(multirnn.to_numpy(a(data(dtype="float32"))[0]).dtype)  # builds; NumPy data cast
    x = data(dtype=dtype)
    multirnn.save(a, tmp_path / "engine.safetensors")
    # the config leaves the dtype to each engine's default (as the built-in layers' do)
    b = multirnn.load(tmp_path / "engine.safetensors", backend="numpy", dtype=dtype)
    assert isinstance(b, NUMPY.RNN) and b.dtype == dtype and b.input_dim == 4
    back = multirnn.load(tmp_path / "engine.safetensors", backend=eng64.name)
    assert isinstance(back, eng64.RNN) and back.get_config() == a.get_config()
    atol = 1e-5 if dtype == "float32" else 1e-12
    # the same weights (and for the stateful layer, the same carried states)
    want = b(x, mask=MASK)
    check(eng64, a(native(eng64.name, x), mask=native(eng64.name, MASK)), want, atol)
    check(eng64, back(native(eng64.name, x), mask=native(eng64.name, MASK)), want, atol)
    multirnn.save(b, tmp_path / "numpy.safetensors")
    c = multirnn.load(tmp_path / "numpy.safetensors", backend=eng64.name)
    assert isinstance(c, eng64.RNN) and c.weight_names == b.weight_names == a.weight_names
    check(eng64, c(native(eng64.name, x), mask=native(eng64.name, MASK)), b(x, mask=MASK), atol)


def test_config_penalties_and_constraints_match_the_oracle(eng64):
    a, b = pair(eng64, "gru", dtype="float64", input_dim=4)
    config, want = a.get_config(), b.get_config()
    if eng64.name == "tensorflow":  # Keras names each layer it creates ("rnn_3")
        assert set(config) == set(want)
        config, want = config | {"name": None}, want | {"name": None}
    assert config == want
    assert a.get_config()["cell"] == {"class_name": "tests.test_rnn.MinGRU", "config": {"units": 3}}
    a(data())
    b(data())
    # JAX layers are pure: penalties() instead of collected losses
    penalties = a.penalties() if eng64.name == "jax" else a.losses
    assert len(penalties) == len(b.losses) == 1  # the recurrent kernel's l2
    np.testing.assert_allclose(
        [float(multirnn.to_numpy(p)) for p in penalties], b.losses, rtol=1e-12
    )
    kernel, recurrent, bias = a.get_weights()
    for layer in (a, b):
        layer.set_weights([kernel, recurrent, -np.abs(bias)])
    projected = a.apply_constraints()
    if eng64.name == "jax":  # a new layer
        assert projected is not a and isinstance(projected, eng64.RNN)
        a = projected
    b.apply_constraints()
    got, want = a.get_weights(), b.get_weights()
    assert np.linalg.norm(want[0], axis=0).max() <= 0.1 + 1e-12 and not want[2].any()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_errors_say_what_was_expected(eng64):
    with pytest.raises(TypeError, match="Cell"):
        eng64.RNN("gru")
    with pytest.raises(TypeError, match="multirnn.Cell"):
        eng64.RNN(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'"):
        eng64.RNN(MinGRU(3), dropout=0.5)
    with pytest.raises(ValueError, match=r"WrongShape.step returned output of shape \(3, 4\)"):
        eng64.RNN(WrongShape(3), seed=0)(data())
    with pytest.raises(TypeError, match="not registered"):
        eng64.RNN(WrongShape(3)).get_config()
    with pytest.raises(ValueError, match="get_weights needs the weights"):
        eng64.RNN(MinGRU(3)).get_weights()
    layer = eng64.RNN(MinGRU(3), seed=0, dtype="float64")
    with pytest.raises(ValueError, match="3-D"):
        layer(np.zeros((2, 4)))
    layer(data())
    with pytest.raises(ValueError, match="built for input_dim=4"):
        layer(data(features=5))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        layer(data(), mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match="initial_state"):
        layer(data(), initial_state=[np.zeros((3, 3)), np.zeros((3, 3))])
    with pytest.raises(TypeError, match="training must be True, False or None"):
        layer(data(), training="yes")
    assert tuple(layer(data(), training=True).shape) == (3, 3)
    with pytest.raises(ValueError, match="'recurrent' must have shape"):
        layer.set_weights([np.zeros((4, 9)), np.zeros((3, 8)), np.zeros(9)])
    with pytest.raises(ValueError, match="has 3 weights"):
        layer.set_weights([np.zeros((4, 9))])
    with pytest.raises(ValueError, match=r"reset_states\(\) applies"):
        layer.reset_states()
    if eng64.name != "numpy":  # the NumPy engine casts NumPy data to the layer's dtype
        with pytest.raises(TypeError, match="dtype float32"):
            layer(native(eng64.name, data(dtype="float32")))
    # set_weights on an unbuilt layer finds the input size from the shapes
    fresh = eng64.RNN(MinGRU(3))
    fresh.set_weights(layer.get_weights())
    assert fresh.input_dim == 4


# -- gradients: each framework's autodiff against finite differences of the oracle ------------


def _autodiff(eng, layer, x, mask, probes):
    """d sum(outputs * probes) / d (inputs, weights), by the engine's autodiff."""

    def listed(out):
        return out if isinstance(out, list) else [out]

    if eng.name == "torch":
        import torch

        xt = torch.from_numpy(x.copy()).requires_grad_()
        out = listed(layer(xt, mask=torch.from_numpy(mask)))
        sum((o * torch.from_numpy(p)).sum() for o, p in zip(out, probes)).backward()
        return [xt.grad.numpy()] + [layer.weights[n].grad.numpy() for n in layer.weight_names]
    if eng.name == "jax":
        import jax
        import jax.numpy as jnp

        def loss(lay, x):
            out = listed(lay(x, mask=jnp.asarray(mask)))
            return sum(jnp.sum(o * jnp.asarray(p)) for o, p in zip(out, probes))

        g_layer, g_x = jax.grad(loss, argnums=(0, 1))(layer, jnp.asarray(x))
        assert isinstance(g_layer, eng.RNN)  # the gradient is a layer-shaped pytree
        return [np.asarray(g_x), *g_layer.get_weights()]
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = listed(layer(xt, mask=tf.constant(mask)))
        loss = tf.add_n([tf.reduce_sum(o * p) for o, p in zip(out, probes)])
    return [g.numpy() for g in tape.gradient(loss, [xt, *layer.trainable_weights])]


@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True, "go_backwards": True},
        {"return_sequences": True, "return_state": True, "go_backwards": True},
    ],
    ids=["sequences", "sequences-state"],
)
@pytest.mark.parametrize("kind", list(CELLS))
def test_gradients_match_central_differences_of_the_oracle(eng64, kind, options):
    if eng64.name == "numpy":
        pytest.skip("the NumPy engine has no autodiff: it is the oracle")
    a, b = pair(eng64, kind, dtype="float64", input_dim=2, **options)
    x = data(batch=2, time=3, features=2, seed=3)
    mask = np.array([[True, False, True], [False, True, True]])
    outs = b(x, mask=mask)
    rng = np.random.default_rng(4)
    probes = [rng.standard_normal(o.shape) for o in (outs if isinstance(outs, list) else [outs])]
    got = _autodiff(eng64, a, x, mask, probes)

    def loss(leaves):
        b.set_weights(leaves[1:])
        out = b(leaves[0], mask=mask)
        return sum(
            float(np.sum(o * p)) for o, p in zip(out if isinstance(out, list) else [out], probes)
        )

    want = cell_suite.central_differences(loss, [x, *b.get_weights()])
    assert len(got) == len(want) == 1 + len(a.weight_names)
    for name, g, w in zip(["inputs", *a.weight_names], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-7, atol=1e-7, err_msg=name)


def layers_per_path(engine) -> dict:
    """One layer maker per path of an engine's layers (``engine``: its ``layers`` module):
    fused kernel, native/hand-written loop, generic loop of a built-in and a user's cell.
    The export tests of every engine run them all."""
    return {
        "LSTM fused-eligible": lambda **kw: engine.LSTM(
            8, activation="tanh", recurrent_activation="sigmoid", **kw
        ),
        "LSTM documented defaults": lambda **kw: engine.LSTM(8, **kw),
        "GRU documented defaults": lambda **kw: engine.GRU(8, **kw),
        "SimpleRNN": lambda **kw: engine.SimpleRNN(8, **kw),
        "RNN(LSTMCell)": lambda **kw: engine.RNN(multirnn.LSTMCell(8), **kw),
        "RNN(user cell)": lambda **kw: engine.RNN(TwoState(8, gate="hard_sigmoid"), **kw),
    }
