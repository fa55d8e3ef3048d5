"""``RNN(cell)`` on the JAX engine against the NumPy engine's (the oracle): the same seed
gives the same weights and the same numbers for every option, and the layer is a pytree
that jit takes like the built-in layers. What every engine shares (carried states, files,
gradients, errors) is in tests/test_rnn.py."""

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


def test_penalty_under_jit_and_constraints_on_a_replaced_layer():
    # configs, penalties and constraints against the oracle on every engine: tests/test_rnn.py
    layer, oracle = pair("lstm", input_dim=4)
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


def test_errors_say_what_was_expected():
    # what every engine refuses: tests/test_rnn.py
    layer = RNN(MinimalGRU(3), seed=0)
    layer(data())
    with pytest.raises(ValueError, match="replace\\(\\) takes"):
        layer.replace(W=jnp.zeros((4, 9)))
    with pytest.raises(TypeError, match="dtype float64"):
        layer.replace(kernel=jnp.zeros((4, 9), jnp.float32))
    with pytest.raises(ValueError, match="call build"):
        jax.jit(lambda lay, x: lay(x))(RNN(MinimalGRU(3)), jnp.asarray(data()))


def test_unbuilt_is_refused_but_a_tree_of_nones_flattens_for_vmap_in_axes():
    with pytest.raises(ValueError, match="must be built before it enters jit"):
        jax.value_and_grad(lambda m: m(data()).sum())(RNN(lstm(), seed=0))
    layer = RNN(lstm(), seed=0, input_dim=4)
    axes = jax.tree.map(lambda _: None, layer)
    assert jax.tree.leaves(axes) == []
    batches = jnp.stack([data(seed=0), data(seed=1)])
    out = jax.vmap(lambda m, v: m(v), in_axes=(axes, 0))(layer, batches)
    np.testing.assert_allclose(out[1], layer(batches[1]), rtol=1e-12)
