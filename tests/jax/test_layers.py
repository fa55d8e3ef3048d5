"""The JAX layers as JAX users use them: pytrees through jit/grad/vmap and optax, explicit
keys, threaded state, penalties and constraints as values, and the errors only JAX has. What
every engine shares (seeds, carried states, files, configs, bad calls) is in
tests/test_builtin_layers.py."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from multirnn_jax import kernels  # noqa: E402
from multirnn_jax.layers import (  # noqa: E402
    GRU,
    LSTM,
    Bidirectional,
    SimpleRNN,
)

from ..cases import VARIANTS, variant_id  # noqa: E402

CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def make(variant, units=3, **kwargs):
    layer, extra = variant
    kwargs.setdefault("dtype", "float64")
    return CLASSES[layer](units, **extra, **kwargs)


def x(batch=2, time=5, features=4, dtype="float64", seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, time, features)), dtype)


# -- pytrees --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_a_layer_is_a_pytree_of_its_canonical_weights(variant):
    layer = make(variant, input_dim=4, seed=1)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(layer)]
    assert paths == [".kernel", ".recurrent_kernel", ".bias"]
    doubled = jax.tree.map(lambda w: 2 * w, layer)
    assert type(doubled) is type(layer) and doubled.spec == layer.spec
    for a, b in zip(doubled.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, 2 * b)
    assert len(jax.tree.leaves(make(variant, input_dim=4, use_bias=False))) == 2


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_jit_grad_and_eager_agree(variant):
    layer = make(variant, input_dim=4, seed=2, return_sequences=True)
    inputs = x()
    np.testing.assert_allclose(jax.jit(lambda m, v: m(v))(layer, inputs), layer(inputs))

    def loss(m):
        return jnp.sum(m(inputs) ** 2)

    grads = jax.grad(loss)(layer)
    assert type(grads) is type(layer)

    def functional(weights):
        return jnp.sum(kernels.forward(layer.spec, weights, inputs)[0] ** 2)

    want = jax.grad(functional)(layer._weights())
    for g, w in zip(jax.tree.leaves(grads), want):
        np.testing.assert_allclose(g, w, atol=1e-12)


def test_vmap_over_a_stacked_ensemble():
    # members differ by key, not by seed= (a seed is configuration, part of the tree structure)
    members = [LSTM(3, input_dim=4, key=jax.random.key(k), dtype="float64") for k in range(3)]
    stacked = jax.tree.map(lambda *w: jnp.stack(w), *members)
    inputs = x()
    together = jax.vmap(lambda m: m(inputs))(stacked)
    for k, member in enumerate(members):
        np.testing.assert_allclose(together[k], member(inputs), atol=1e-12)


def test_vmap_over_an_extra_input_axis():
    layer = GRU(3, input_dim=4, seed=0, dtype="float64")
    inputs = jnp.stack([x(seed=1), x(seed=2)])
    together = jax.vmap(layer)(inputs)
    np.testing.assert_allclose(together[1], layer(inputs[1]), atol=1e-12)


def test_sharding_utilities_take_the_layer():
    """device_put with a NamedSharding, and a jitted call on batch-sharded inputs (one
    device here; several devices are the distributed-training issue's test)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((1,), ("batch",))
    layer = GRU(3, input_dim=4, seed=0, dtype="float64")
    replicated = jax.device_put(layer, NamedSharding(mesh, PartitionSpec()))
    assert isinstance(replicated, GRU) and replicated.kernel.sharding.mesh == mesh
    inputs = jax.device_put(x(), NamedSharding(mesh, PartitionSpec("batch")))
    np.testing.assert_allclose(jax.jit(lambda m, v: m(v))(replicated, inputs), layer(x()))


@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
def test_optax_trains_the_layer(recurrent_activation):
    optax = pytest.importorskip("optax")
    layer = LSTM(4, recurrent_activation=recurrent_activation, input_dim=3, seed=0,
                 dtype="float64")  # fmt: skip
    optimizer = optax.adam(0.05)
    state = optimizer.init(layer)
    inputs = x(features=3)
    target = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4)))

    @jax.jit
    def step(layer, state):
        loss, grads = jax.value_and_grad(lambda m: jnp.mean((m(inputs) - target) ** 2))(layer)
        updates, state = optimizer.update(grads, state, layer)
        return optax.apply_updates(layer, updates), state, loss

    losses = []
    for _ in range(40):
        layer, state, loss = step(layer, state)
        losses.append(float(loss))
    assert isinstance(layer, LSTM) and losses[-1] < 0.5 * losses[0]


def test_replace_works_under_jit_and_checks_shapes():
    layer = SimpleRNN(3, input_dim=4, seed=0, dtype="float64")
    zeroed = jax.jit(lambda m: m.replace(kernel=jnp.zeros_like(m.kernel)))(layer)
    assert not np.any(zeroed.get_weights()[0]) and np.any(layer.get_weights()[0])
    with pytest.raises(ValueError, match="'kernel' must have shape"):
        layer.replace(kernel=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="replace\\(\\) takes kernel, recurrent_kernel, bias"):
        layer.replace(gamma=jnp.zeros(3))


# -- weights, seeds, dtypes ------------------------------------------------------------------------


def test_unseeded_init_follows_the_given_key():
    a = GRU(2, input_dim=2, key=jax.random.key(3)).get_weights()[0]
    np.testing.assert_array_equal(a, GRU(2, input_dim=2, key=jax.random.key(3)).get_weights()[0])
    assert not np.array_equal(a, GRU(2, input_dim=2, key=jax.random.key(4)).get_weights()[0])
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        GRU(2, key=3)


def test_dtypes_follow_jax_64_bit_mode():
    with jax.enable_x64(False):
        layer = LSTM(3, input_dim=4)
        assert layer.dtype == "float32" and layer.kernel.dtype == jnp.float32
        with pytest.raises(ValueError, match="jax_enable_x64"):
            LSTM(3, dtype="float64")
        assert layer(np.zeros((2, 5, 4))).dtype == jnp.float32  # NumPy data: cast
        with pytest.raises(TypeError, match=r"floating-point data .*\(int64\)"):
            layer(np.zeros((2, 5, 4), np.int64))
    assert LSTM(3).dtype == "float64"
    single = LSTM(3, dtype="float32", input_dim=2)
    assert single(x(features=2, dtype="float32")).dtype == jnp.float32


def test_lazy_build_eagerly_but_not_under_a_transformation():
    layer = LSTM(3, dtype="float64")
    # no leaves would mean an empty gradient: training that silently does nothing
    with pytest.raises(ValueError, match="build.* or pass input_dim="):
        jax.value_and_grad(lambda m: m(x()).sum())(layer)
    with pytest.raises(ValueError, match="flattening it as a pytree"):
        jax.tree.leaves(layer)
    with pytest.raises(ValueError, match="must be built before it enters jit"):
        jax.jit(lambda m, v: m(v))(layer, x())
    assert layer(x()).shape == (2, 3) and layer.input_dim == 4


# -- dropout ---------------------------------------------------------------------------------------


def test_dropout_needs_a_key_and_is_reproducible():
    layer = LSTM(3, dropout=0.5, recurrent_dropout=0.5, seed=0, input_dim=4, dtype="float64")
    inputs = x()
    plain = layer(inputs)
    np.testing.assert_array_equal(layer(inputs, key=jax.random.key(0)), plain)  # inference
    with pytest.raises(ValueError, match="needs a random key"):
        layer(inputs, training=True)
    a = layer(inputs, training=True, key=jax.random.key(1))
    np.testing.assert_array_equal(a, layer(inputs, training=True, key=jax.random.key(1)))
    assert not np.allclose(a, layer(inputs, training=True, key=jax.random.key(2)))
    assert not np.allclose(a, plain)
    jitted = jax.jit(lambda m, v, k: m(v, training=True, key=k))
    np.testing.assert_allclose(jitted(layer, inputs, jax.random.key(1)), a, atol=1e-12)
    with pytest.raises(TypeError, match="training must be True, False or None"):
        layer(inputs, training=1)


@pytest.mark.parametrize("implementation", [1, 2])
def test_dropout_masks_match_the_documented_shapes(implementation, monkeypatch):
    seen = []
    original = kernels.run
    monkeypatch.setattr(kernels, "run", lambda *a: seen.append(a[5:]) or original(*a))
    layer = GRU(3, dropout=0.2, recurrent_dropout=0.3, implementation=implementation,
                input_dim=4, dtype="float64")  # fmt: skip
    layer(x(), training=True, key=jax.random.key(0))
    mi, mr = seen[0]
    lead = (3,) if implementation == 1 else ()
    assert mi.shape == (*lead, 2, 4) and mr.shape == (*lead, 2, 3)
    assert set(np.unique(np.asarray(mi))) <= {0.0, 1 / 0.8}


# -- state -----------------------------------------------------------------------------------------


def test_states_are_threaded_explicitly_under_jit():
    layer = LSTM(3, seed=2, return_sequences=True, stateful=True, input_dim=4, dtype="float64")
    inputs = x(time=6)
    eager = [layer(inputs[:, :3]), layer(inputs[:, 3:])]
    with pytest.raises(TypeError, match="layer.apply"):
        jax.jit(lambda m, v: m(v))(layer, inputs)

    @jax.jit
    def step(layer, states, chunk):
        return layer.apply(chunk, states=states)

    out1, states = step(layer, None, inputs[:, :3])
    out2, states = step(layer, states, inputs[:, 3:])
    np.testing.assert_allclose(out1, eager[0], atol=1e-12)
    np.testing.assert_allclose(out2, eager[1], atol=1e-12)
    for a, b in zip(states, layer.states):
        np.testing.assert_allclose(a, b, atol=1e-12)


# -- penalties and constraints ------------------------------------------------------------------


def test_penalties_are_differentiable_values():
    layer = SimpleRNN(3, kernel_regularizer="l2", activity_regularizer="l1", input_dim=4,
                      dtype="float64")  # fmt: skip
    out = layer(x())
    terms = layer.penalties(out)
    assert len(terms) == 2  # their values, on every engine: tests/test_builtin_layers.py
    assert float(layer.penalty()) == pytest.approx(float(terms[0]))
    grads = jax.grad(lambda m: m.penalty(m(x())))(layer)
    np.testing.assert_allclose(grads.bias, jax.grad(lambda m: m.penalties(m(x()))[1])(layer).bias)
    assert float(LSTM(3, input_dim=4).penalty()) == 0.0


def test_apply_constraints_returns_a_new_layer():
    layer = LSTM(3, kernel_constraint="non_neg", recurrent_constraint="max_norm", input_dim=4,
                 dtype="float64")  # fmt: skip
    layer = layer.replace(recurrent_kernel=10.0 * layer.recurrent_kernel)
    projected = jax.jit(lambda m: m.apply_constraints())(layer)
    assert isinstance(projected, LSTM)
    assert (projected.kernel >= 0).all() and (layer.kernel < 0).any()
    assert jnp.linalg.norm(projected.recurrent_kernel, axis=0).max() <= 2.0 + 1e-9
    np.testing.assert_array_equal(projected.bias, layer.bias)


# -- bad input (what every engine refuses: tests/test_builtin_layers.py) ---------------------------


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m: m("x"), TypeError, "inputs must be a jax.Array, a NumPy array or"),
        (lambda m: m(x(), training=True, key=7), TypeError, "key must be one JAX PRNG key"),
    ],
)
def test_bad_calls_say_what_was_expected(call, error, match):
    layer = LSTM(3, input_dim=4, dtype="float64", dropout=0.1)
    with pytest.raises(error, match=match):
        call(layer)


def test_bad_calls_fail_while_tracing():
    layer = LSTM(3, input_dim=4, dtype="float32")
    with pytest.raises(ValueError, match="inputs have 5 features"):
        jax.eval_shape(lambda m, v: m(v), layer, jax.ShapeDtypeStruct((2, 7, 5), jnp.float32))


def test_benchmark_hook_runs_in_the_harness():
    from multirnn.bench import harness

    record = harness.run(["multirnn:jax"], ["lstm"], "smoke", memory=False)
    rows = record["contenders"][0]["results"]
    assert rows and all(r["forward"]["median_s"] > 0 for r in rows)
    # streaming (stateful, one step per call) times inference only
    trained = [r for r in rows if not r["workload"].endswith("/stateful")]
    assert trained and all(r["train"]["median_s"] > 0 for r in trained)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
def test_gpu_matches_cpu(recurrent_activation):
    """On a GPU the sigmoid LSTM takes cuDNN, the hard_sigmoid one the generic scan."""
    with jax.default_matmul_precision("highest"):
        layer = LSTM(8, recurrent_activation=recurrent_activation, return_sequences=True,
                     input_dim=4, seed=0, dtype="float32")  # fmt: skip
        inputs = x(dtype="float32")
        cpu = jax.device_put(layer, jax.devices("cpu")[0])
        got = layer(inputs)
        want = cpu(jax.device_put(inputs, jax.devices("cpu")[0]))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        grads = jax.grad(lambda m: m(inputs).sum())(layer)
        cpu_grads = jax.grad(lambda m: m(jax.device_put(inputs, jax.devices("cpu")[0])).sum())(cpu)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(cpu_grads)):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("wrapped", [False, True], ids=["LSTM", "Bidirectional"])
def test_a_tree_of_nones_shaped_like_a_layer_flattens_for_vmap_in_axes(wrapped):
    """Only an unbuilt layer the user made is refused: the tree of Nones a tree utility
    makes from a built layer is an in_axes prefix, and flattens again."""
    layer = LSTM(3, input_dim=4, seed=0, dtype="float64")
    if wrapped:
        layer = Bidirectional(layer)
    axes = jax.tree.map(lambda _: None, layer)
    assert jax.tree.leaves(axes) == []
    batches = jnp.stack([x(seed=0), x(seed=1)])
    out = jax.vmap(lambda m, v: m(v), in_axes=(axes, 0))(layer, batches)
    np.testing.assert_allclose(out[1], layer(batches[1]), rtol=1e-12)


def test_flax_param_dtype_and_dtype_are_the_mixed_policy():
    layer = LSTM(4, input_dim=3, seed=0, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert layer.spec.dtype == "mixed_bfloat16" and layer.kernel.dtype == jnp.float32
    assert layer(jnp.zeros((2, 5, 3), jnp.float32)).dtype == jnp.bfloat16
    assert LSTM(4, dtype="float16", param_dtype="float16").spec.dtype == "float16"
    with pytest.raises(ValueError, match="param_dtype='float16' with dtype='float32' has no"):
        LSTM(4, dtype="float32", param_dtype=jnp.float16)
