"""``RNN(cell)`` on the JAX engine against the NumPy engine's (the oracle): the same seed
gives the same weights and the same numbers for every option, and the layer is a pytree
that jit, grad and files take like the built-in layers."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from multirnn_jax.rnn import RNN  # noqa: E402

import multirnn  # noqa: E402
from multirnn.reference.rnn import RNN as NumpyRNN  # noqa: E402


@multirnn.register_cell(name="test_jax_rnn.MinimalGRU")
class MinimalGRU(multirnn.Cell):
    """A GRU (reset after the recurrent product) written against the ops namespace."""

    def build(self, input_dim):
        u = self.units
        self.add_weight("kernel", (input_dim, 3 * u))
        self.add_weight("recurrent_kernel", (u, 3 * u), "orthogonal")
        self.add_weight("bias", (3 * u,), "glorot_uniform")

    def step(self, ops, w, x, states):
        (h,) = states
        u = self.units
        gx = ops.matmul(x, w["kernel"]) + w["bias"]
        gh = ops.matmul(h, w["recurrent_kernel"])
        sigmoid = ops.activation("sigmoid")
        z = sigmoid(gx[:, :u] + gh[:, :u])
        r = sigmoid(gx[:, u : 2 * u] + gh[:, u : 2 * u])
        n = ops.tanh(gx[:, 2 * u :] + r * gh[:, 2 * u :])
        h = z * h + (1.0 - z) * n
        return h, [h]


@multirnn.register_cell(name="test_jax_rnn.TwoStateLSTM")
class TwoStateLSTM(multirnn.Cell):
    """An LSTM-like cell with states [h, c], a regularized kernel and a constrained
    recurrent kernel."""

    state_names = ("h", "c")

    def build(self, input_dim):
        u = self.units
        self.add_weight(
            "w_x", (input_dim, 4 * u), regularizer={"class_name": "L2", "config": {"l2": 0.01}}
        )
        self.add_weight(
            "w_h",
            (u, 4 * u),
            "orthogonal",
            constraint={"class_name": "MaxNorm", "config": {"max_value": 0.5}},
        )
        self.add_weight("b", (4 * u,), "glorot_uniform")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        z = ops.matmul(x, w["w_x"]) + ops.matmul(h, w["w_h"]) + w["b"]
        act = ops.activation(self.recurrent_activation)
        i, f, o = act(z[:, :u]), act(z[:, u : 2 * u]), act(z[:, 3 * u :])
        c = f * c + i * ops.tanh(z[:, 2 * u : 3 * u])
        h = o * ops.tanh(c)
        return h, [h, c]


def lstm(units=3):
    return TwoStateLSTM(units, recurrent_activation="hard_sigmoid")


CELLS = {"gru": lambda: MinimalGRU(3), "lstm": lstm}


def data(batch=3, time=5, features=4, seed=0, dtype="float64"):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(dtype)


def ragged_mask(batch=3, time=5):
    """Row 0 unmasked, row 1 masked at its start and in the middle, row 2 fully masked."""
    mask = np.ones((batch, time), bool)
    mask[1, :2] = False
    mask[1, 3] = False
    mask[2 % batch] = False
    return mask


def pair(cell_name, **kwargs):
    kwargs.setdefault("seed", 7)
    return RNN(CELLS[cell_name](), **kwargs), NumpyRNN(CELLS[cell_name](), **kwargs)


def close(got, want, tol):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            close(g, w, tol)
        return
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)


OPTIONS = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"go_backwards": True, "return_sequences": True, "return_state": True},
    {"unroll": True, "return_sequences": True},
    {"zero_output_for_mask": True, "return_sequences": True},
]


@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "default")
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_matches_the_numpy_rnn_in_float64(cell_name, options, masked):
    layer, oracle = pair(cell_name, dtype="float64", **options)
    x, mask = data(), ragged_mask() if masked else None
    want = oracle(x, mask=mask)
    close(layer(jnp.asarray(x), mask=None if mask is None else jnp.asarray(mask)), want, 1e-12)
    for got, ref in zip(layer.get_weights(), oracle.get_weights()):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, ref)  # one seed, the same weights exactly
    assert layer.weight_names == oracle.weight_names


@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_matches_the_numpy_rnn_in_float32_with_initial_state(cell_name):
    options = {"return_sequences": True, "return_state": True, "go_backwards": True}
    layer, oracle = pair(cell_name, dtype="float32", **options)
    x, mask = data(dtype="float32"), ragged_mask()
    states = [np.random.default_rng(i).standard_normal((3, 3)).astype("float32")
              for i in range(len(layer.spec.state_names))]  # fmt: skip
    want = oracle(x, mask=mask, initial_state=states)
    got = layer(x, mask=mask, initial_state=[jnp.asarray(s) for s in states])
    assert all(g.dtype == jnp.float32 for g in got)
    close(got, want, 1e-5)


def test_numpy_and_nested_list_inputs_follow_the_input_rule():
    layer, oracle = pair("gru", return_sequences=True)
    x = data(dtype="float32")  # floats are cast to the layer's dtype
    close(layer(x), oracle(x.astype("float64")), 1e-6)
    close(layer(x.tolist(), mask=ragged_mask().tolist()), oracle(x, mask=ragged_mask()), 1e-6)
    with pytest.raises(TypeError, match="integers"):
        layer(np.ones((2, 3, 4), int))


def test_stateful_over_two_calls_and_reset():
    layer, oracle = pair("lstm", stateful=True, return_state=True)
    x1, x2 = data(seed=1), data(seed=2)
    close(layer(x1), oracle(x1), 1e-12)
    close(layer(x2, mask=ragged_mask()), oracle(x2, mask=ragged_mask()), 1e-12)
    close(layer.states, oracle.states, 1e-12)
    with pytest.raises(ValueError, match="batch size 3"):
        layer(data(batch=2))
    layer.reset_states()
    oracle.reset_states()
    close(layer(x1), oracle(x1), 1e-12)
    new = [np.full((3, 3), 0.5), np.full((3, 3), -0.5)]
    layer.reset_states(new)
    oracle.reset_states(new)
    close(layer(x2), oracle(x2), 1e-12)
    with pytest.raises(ValueError, match="'c'"):
        layer.reset_states([np.zeros((3, 3)), np.zeros((3, 2))])


def test_stateful_layer_threads_states_explicitly_under_jit():
    layer, oracle = pair("gru", stateful=True, input_dim=4)
    x1, x2 = data(seed=1), data(seed=2)
    with pytest.raises(TypeError, match="layer.apply"):
        jax.jit(lambda lay, x: lay(x))(layer, jnp.asarray(x1))
    run = jax.jit(lambda lay, x, s: lay.apply(x, states=s))
    _, s1 = run(layer, jnp.asarray(x1), None)
    y2, _ = run(layer, jnp.asarray(x2), s1)
    oracle(x1)
    close(y2, oracle(x2), 1e-12)
    assert layer.states is None  # apply never writes the carried states


def test_batch_zero_gives_empty_outputs():
    layer, oracle = pair("lstm", return_sequences=True, return_state=True)
    x = data(batch=0)
    got, want = layer(x), oracle(x)
    assert [g.shape for g in got] == [(0, 5, 3), (0, 3), (0, 3)]
    close(got, want, 0)


def test_jit_of_a_call_and_equal_layers_share_a_tree_structure():
    layer, oracle = pair("gru", return_sequences=True, go_backwards=True)
    x, mask = data(), ragged_mask()
    traces = []

    @jax.jit
    def run(lay, x, mask):
        traces.append(1)
        return lay(x, mask=mask)

    layer.build(x.shape)
    close(run(layer, jnp.asarray(x), jnp.asarray(mask)), oracle(x, mask=mask), 1e-12)
    twin = RNN.from_config(layer.get_config() | {"input_dim": None})  # alike, another cell
    twin.build(x.shape)
    assert jax.tree_util.tree_structure(twin) == jax.tree_util.tree_structure(layer)
    run(twin, jnp.asarray(x), jnp.asarray(mask))
    assert len(traces) == 1
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(layer)[0]]
    assert paths == [".weights['bias']", ".weights['kernel']", ".weights['recurrent_kernel']"]


def _numpy_loss(oracle, weights, x, mask, probe):
    oracle.set_weights(weights)
    out = oracle(x, mask=mask)
    return sum(float(np.sum(o * p)) for o, p in zip(out, probe))


@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_grad_matches_central_differences_of_the_numpy_rnn(cell_name):
    options = {"return_sequences": True, "return_state": True, "go_backwards": True}
    layer, oracle = pair(cell_name, **options)
    x = data(batch=2, time=3, features=2, seed=3)
    mask = np.array([[True, False, True], [False, True, True]])
    layer.build(x.shape)
    oracle.build(x.shape)
    outs = oracle(x, mask=mask)
    rng = np.random.default_rng(4)
    probe = [rng.standard_normal(o.shape) for o in outs]

    def loss(lay, x):
        out = lay(x, mask=jnp.asarray(mask))
        return sum(jnp.sum(o * jnp.asarray(p)) for o, p in zip(out, probe))

    g_layer, g_x = jax.grad(loss, argnums=(0, 1))(layer, jnp.asarray(x))
    weights = oracle.get_weights()
    eps = 1e-6

    def numeric(perturb, shape):
        grad = np.zeros(shape)
        for index in np.ndindex(shape):
            up, down = perturb(index, eps), perturb(index, -eps)
            grad[index] = (up - down) / (2 * eps)
        return grad

    def in_x(index, step):
        moved = x.copy()
        moved[index] += step
        return _numpy_loss(oracle, weights, moved, mask, probe)

    np.testing.assert_allclose(np.asarray(g_x), numeric(in_x, x.shape), atol=1e-7, rtol=1e-6)
    assert isinstance(g_layer, RNN)
    for k, (name, grad) in enumerate(zip(g_layer.weight_names, g_layer.get_weights())):

        def in_w(index, step, k=k):
            moved = [w.copy() for w in weights]
            moved[k][index] += step
            return _numpy_loss(oracle, moved, x, mask, probe)

        np.testing.assert_allclose(
            grad, numeric(in_w, weights[k].shape), atol=1e-7, rtol=1e-6, err_msg=name
        )


def test_save_on_jax_load_on_numpy(tmp_path):
    layer = RNN(lstm(), seed=3, stateful=True, return_sequences=True)
    x = data()
    layer(x)
    path = tmp_path / "rnn.safetensors"
    multirnn.save(layer, path)
    on_numpy = multirnn.load(path, backend="numpy")
    assert isinstance(on_numpy, NumpyRNN)
    close(layer(x, mask=ragged_mask()), on_numpy(x, mask=ragged_mask()), 1e-12)
    back = multirnn.load(path, backend="jax")
    assert isinstance(back, RNN) and back.get_config() == layer.get_config()


def test_config_penalties_and_constraints_match_the_numpy_rnn():
    layer, oracle = pair("lstm", input_dim=4)
    assert layer.get_config() == oracle.get_config()
    assert layer.get_config()["cell"]["class_name"] == "test_jax_rnn.TwoStateLSTM"
    penalties = layer.penalties()
    assert len(penalties) == 1
    np.testing.assert_allclose(float(penalties[0]), oracle.losses[0], rtol=1e-12)
    np.testing.assert_allclose(float(jax.jit(lambda lay: lay.penalty())(layer)), oracle.losses[0])
    big = layer.replace(w_h=layer._w["w_h"] * 10)
    projected = big.apply_constraints()
    assert projected is not big and isinstance(projected, RNN)
    oracle.set_weights(big.get_weights())
    oracle.apply_constraints()
    for got, want in zip(projected.get_weights(), oracle.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(big.get_weights()[1], layer.get_weights()[1] * 10)


def test_selected_engine_and_key_seeding():
    assert multirnn.engines.engine("jax").RNN is RNN
    one = RNN(MinimalGRU(3), key=jax.random.key(1), input_dim=2)
    two = RNN(MinimalGRU(3), key=jax.random.key(1), input_dim=2)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert repr(one) == "RNN(MinimalGRU(units=3)) [jax]"
    assert RNN(MinimalGRU(3)).get_config()["dtype"] is None
    with jax.enable_x64(False):
        assert RNN(MinimalGRU(3), input_dim=2).get_weights()[0].dtype == np.float32
        with pytest.raises(ValueError, match="64-bit mode"):
            RNN(MinimalGRU(3), dtype="float64")


class WrongShape(multirnn.Cell):
    def build(self, input_dim):
        self.add_weight("w", (input_dim, self.units))

    def step(self, ops, w, x, states):
        return ops.matmul(x, w["w"])[:, :1], states


def test_errors_say_what_was_expected():
    layer = RNN(MinimalGRU(3), seed=0)
    with pytest.raises(ValueError, match="3-D"):
        layer(np.zeros((2, 4)))
    layer(data())
    with pytest.raises(ValueError, match="input_dim=4"):
        layer(data(features=2))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        layer(data(), mask=np.ones((3, 5), float))
    with pytest.raises(ValueError, match="initial_state"):
        layer(data(), initial_state=[np.zeros((3, 3)), np.zeros((3, 3))])
    with pytest.raises(TypeError, match="training must be"):
        layer(data(), training="yes")
    with pytest.raises(ValueError, match="'recurrent_kernel' must have shape"):
        layer.set_weights([np.zeros((4, 9)), np.zeros((3, 8)), np.zeros(9)])
    with pytest.raises(ValueError, match="has 3 weights"):
        layer.set_weights([np.zeros((4, 9))])
    with pytest.raises(ValueError, match="replace\\(\\) takes"):
        layer.replace(W=jnp.zeros((4, 9)))
    with pytest.raises(TypeError, match="dtype float64"):
        layer.replace(kernel=jnp.zeros((4, 9), jnp.float32))
    with pytest.raises(ValueError, match="returned output of shape \\(3, 1\\)"):
        RNN(WrongShape(2), seed=0)(data())
    with pytest.raises(ValueError, match="call build"):
        jax.jit(lambda lay, x: lay(x))(RNN(MinimalGRU(3)), jnp.asarray(data()))
    with pytest.raises(ValueError, match="reset_states\\(\\) applies"):
        layer.reset_states()
    with pytest.raises(TypeError, match="Cell"):
        RNN("gru")
    with pytest.raises(TypeError, match="not registered"):
        RNN(WrongShape(2)).get_config()
    # set_weights on an unbuilt layer finds the input size from the shapes
    fresh = RNN(MinimalGRU(3))
    fresh.set_weights(layer.get_weights())
    assert fresh.input_dim == 4
    assert layer(data(), training=True).shape == (3, 3)


def test_unbuilt_is_refused_but_a_tree_of_nones_flattens_for_vmap_in_axes():
    with pytest.raises(ValueError, match="must be built before it enters jit"):
        jax.value_and_grad(lambda m: m(data()).sum())(RNN(lstm(), seed=0))
    layer = RNN(lstm(), seed=0, input_dim=4)
    axes = jax.tree.map(lambda _: None, layer)
    assert jax.tree.leaves(axes) == []
    batches = jnp.stack([data(seed=0), data(seed=1)])
    out = jax.vmap(lambda m, v: m(v), in_axes=(axes, 0))(layer, batches)
    np.testing.assert_allclose(out[1], layer(batches[1]), rtol=1e-12)
