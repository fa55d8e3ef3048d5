"""``Bidirectional(RNN(cell))`` on every engine: the NumPy engine's wrapper against its
definition (two RNNs, the backward one reversed) and against the built-in
``Bidirectional(SimpleRNN)``, every engine against the NumPy one, seeds, weights of their
own per direction, configs and files across engines, carried states, gradients (each
framework's autodiff against finite differences of the NumPy engine), each framework's
integration and the errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import multirnn
from multirnn import engines
from multirnn.conformance import cell_suite

from .cases import fit_lowers_the_loss, keras_file_reloads
from .test_cells import Elman  # the built-in SimpleRNN written as a cell

NUMPY = multirnn.engine("numpy")
MERGE_MODES = ["concat", "sum", "mul", "ave", None]


@pytest.fixture(autouse=True)
def _jax_x64():
    """float64 on JAX (the 1e-12 agreement) needs its 64-bit mode."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@multirnn.register_cell(name="test_bidirectional_cells.Peephole")
class Peephole(multirnn.Cell):
    """Two states, a penalised bias and a constrained peephole: what a wrapper must carry
    for both directions."""

    state_names = ("h", "c")

    def build(self, input_dim):
        u = self.units
        self.add_weight("kernel", (input_dim, 4 * u))
        self.add_weight("recurrent_kernel", (u, 4 * u), initializer="orthogonal")
        self.add_weight("bias", (4 * u,), initializer="random_normal", regularizer="l2")
        self.add_weight("peephole", (2, u), initializer="random_normal", constraint="non_neg")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        sigmoid = ops.activation(self.gate)
        z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
        p = w["peephole"]
        i = sigmoid(z[:, :u] + p[0, :] * c)
        f = sigmoid(z[:, u : 2 * u] + p[1, :] * c)
        c = f * c + i * ops.tanh(z[:, 2 * u : 3 * u])
        h = sigmoid(z[:, 3 * u :]) * ops.tanh(c)
        return h, [h, c]


def peephole(units=3):
    return Peephole(units, gate="sigmoid")


def _data(batch=3, time=5, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, time, features))
    mask = rng.random((batch, time)) < 0.7
    mask[0] = True
    mask[-1, 2:] = False  # right padding
    return x, mask


def _list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def _close(got, want, tol=1e-12):
    got, want = _list(multirnn.to_numpy(got)), _list(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _wrapper(eng, cell, merge_mode="concat", **options):
    options = {"dtype": "float64", "seed": 0} | options
    return eng.Bidirectional(eng.RNN(cell, **options), merge_mode=merge_mode)


def _initial(n, batch=3, units=3):
    return [np.full((batch, units), 0.1 * (k + 1)) for k in range(2 * n)]


# -- the NumPy engine's wrapper: its definition, and the built-in layers -------------------------

OPTIONS = [
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True, "go_backwards": True},
    {"return_sequences": True, "unroll": True},
]


def _by_definition(cell, merge_mode, weights, x, mask, initial, **options):
    """Keras's definition, spelled out with two NumPy RNNs: the backward one runs with
    go_backwards flipped, its sequence is reversed back, both emit zeros at masked steps
    when returning sequences, and the states come forward first."""
    base = {"dtype": "float64", "zero_output_for_mask": bool(options.get("return_sequences"))}
    go_backwards = options.pop("go_backwards", False)
    n, k = len(weights) // 2, len(initial) // 2
    runs = []
    for part, backwards, states in [(weights[:n], go_backwards, initial[:k]),
                                    (weights[n:], not go_backwards, initial[k:])]:  # fmt: skip
        layer = NUMPY.RNN(cell, go_backwards=backwards, **base, **options)
        layer.set_weights(part)
        runs.append(_list(layer(x, mask=mask, initial_state=states)))
    (y, *states_f), (y_rev, *states_b) = runs
    if options.get("return_sequences"):
        y_rev = y_rev[:, ::-1]
    merged = {"concat": [np.concatenate([y, y_rev], -1)], "sum": [y + y_rev], "mul": [y * y_rev],
              "ave": [(y + y_rev) / 2], None: [y, y_rev]}[merge_mode]  # fmt: skip
    return [*merged, *states_f, *states_b] if options.get("return_state") else merged


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_the_numpy_wrapper_is_its_definition(options, merge_mode):
    x, mask = _data()
    cell = peephole()
    layer = _wrapper(NUMPY, cell, merge_mode, **options)
    initial = _initial(2)
    got = layer(x, mask=mask, initial_state=initial)
    want = _by_definition(cell, merge_mode, layer.get_weights(), x, mask, initial, **options)
    _close(got, want, 1e-15)


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
def test_the_numpy_wrapper_equals_the_built_in_bidirectional(merge_mode):
    """Elman declares SimpleRNN's weights, so one seed gives both wrappers the same weights
    in both directions (the backward seed derived alike) and the same outputs; the built-in
    wrapper is itself checked against Keras's."""
    x, mask = _data()
    options = {"return_sequences": True, "return_state": True, "seed": 7, "dtype": "float64"}
    ours = NUMPY.Bidirectional(NUMPY.RNN(Elman(3), **options), merge_mode=merge_mode)
    theirs = NUMPY.Bidirectional(NUMPY.SimpleRNN(3, **options), merge_mode=merge_mode)
    _close(ours(x, mask=mask), theirs(x, mask=mask), 1e-14)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# -- every engine against the NumPy one ------------------------------------------------------------


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_every_engine_equals_the_numpy_engine(eng, options, merge_mode):
    if eng.name == "numpy":
        pytest.skip("the NumPy engine is the reference (test_the_numpy_wrapper_is_its_definition)")
    x, mask = _data()
    layer = _wrapper(eng, peephole(), merge_mode, **options)
    peer = _wrapper(NUMPY, peephole(), merge_mode, **options)
    initial = _initial(2)
    got = layer(x, mask=mask, initial_state=initial)
    want = peer(x, mask=mask, initial_state=initial)
    # the same seed: the same weights on every engine, so no copying is needed
    for a, b in zip(multirnn.to_numpy(layer.get_weights()), peer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    _close(got, want)


def test_the_selected_engine_wraps_its_rnn(eng):
    multirnn.set_backend(eng.name)
    layer = multirnn.Bidirectional(multirnn.RNN(Elman(4), return_sequences=True, seed=1))
    assert type(layer) is eng.Bidirectional and type(layer.forward_layer) is eng.RNN
    x, _ = _data()
    out = multirnn.to_numpy(layer(x))
    assert out.shape == (3, 5, 8)
    peer = NUMPY.Bidirectional(NUMPY.RNN(Elman(4), return_sequences=True, seed=1,
                                         dtype=str(out.dtype)))  # fmt: skip
    _close(out, peer(x.astype(out.dtype)), 1e-5 if out.dtype == np.float32 else 1e-12)


# -- seeds and weights: each direction its own ----------------------------------------------------


def test_seeds_follow_the_built_in_wrapper(eng):
    """The forward direction has the wrapped layer's seed, the backward one seed + 1, as
    the built-in Bidirectional derives it: the same weights on every engine."""
    layer = _wrapper(eng, peephole(), seed=11, input_dim=4)
    n = len(layer.forward_layer.weight_names)
    forward = NUMPY.RNN(peephole(), seed=11, input_dim=4, dtype="float64").get_weights()
    backward = NUMPY.RNN(peephole(), seed=12, input_dim=4, dtype="float64").get_weights()
    weights = multirnn.to_numpy(layer.get_weights())
    for got, want in zip(weights, forward + backward, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(weights[0], weights[n])
    built_in = eng.Bidirectional(eng.SimpleRNN(3, seed=11, input_dim=4, dtype="float64"))
    elman = _wrapper(eng, Elman(3), seed=11, input_dim=4)
    for a, b in zip(multirnn.to_numpy(built_in.get_weights()),
                    multirnn.to_numpy(elman.get_weights()), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_directions_have_their_own_cell_and_weights(eng):
    cell = peephole()
    inner = eng.RNN(cell, seed=3, dtype="float64", return_sequences=True, name="mine")
    inner.build((None, None, 4))
    layer = eng.Bidirectional(inner)
    forward, backward = layer.forward_layer, layer.backward_layer
    # copies of the cell, through its config (Keras copies a wrapped layer the same way)
    assert len({id(cell), id(forward.cell), id(backward.cell)}) == 3
    assert type(forward.cell) is type(backward.cell) is Peephole
    assert forward.cell.get_config() == backward.cell.get_config() == cell.get_config()
    assert not forward.spec.go_backwards and backward.spec.go_backwards
    assert forward.spec.zero_output_for_mask and backward.spec.zero_output_for_mask
    assert forward.name.startswith("forward_mine") and backward.name.startswith("backward_mine")
    # a built layer lends the forward direction its weights, as copies
    for a, b in zip(multirnn.to_numpy(forward.get_weights()),
                    multirnn.to_numpy(inner.get_weights()), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    before = multirnn.to_numpy(layer.get_weights())
    zeros = [np.zeros_like(w) for w in multirnn.to_numpy(inner.get_weights())]
    n = len(zeros)
    inner.set_weights(zeros)  # the wrapped layer is no direction of the wrapper
    for a, b in zip(before, multirnn.to_numpy(layer.get_weights()), strict=True):
        np.testing.assert_array_equal(a, b)
    forward.set_weights(zeros)  # nor does one direction share the other's weights
    after = multirnn.to_numpy(layer.get_weights())
    for a, b in zip(before[n:], after[n:], strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(not a.any() for a in after[:n])


def test_set_weights_builds_both_directions_forward_first(eng):
    layer = _wrapper(eng, peephole())
    assert not layer.built
    source = _wrapper(NUMPY, peephole(), seed=5, input_dim=2)
    layer.set_weights(source.get_weights())
    assert layer.built and layer.forward_layer.input_dim == 2
    for a, b in zip(multirnn.to_numpy(layer.get_weights()), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x, mask = _data(features=2)
    _close(layer(x, mask=mask), source(x, mask=mask))


# -- configs, files, carried states ----------------------------------------------------------------


def test_config_round_trips(eng):
    layer = _wrapper(eng, peephole(), "ave", return_state=True, go_backwards=True, seed=4)
    x, mask = _data()
    want = multirnn.to_numpy(layer(x, mask=mask))
    config = json.loads(json.dumps(layer.get_config()))
    assert config["merge_mode"] == "ave"
    assert config["layer"]["cell"] == {"class_name": "test_bidirectional_cells.Peephole",
                                       "config": {"units": 3, "gate": "sigmoid"}}  # fmt: skip
    assert config["layer"]["input_dim"] == 4 and config["layer"]["go_backwards"] is True
    again = eng.Bidirectional.from_config(config)
    assert json.loads(json.dumps(again.get_config())) == config
    assert again.spec.layer.cell is not layer.spec.layer.cell
    again.set_weights(layer.get_weights())
    _close(again(x, mask=mask), want)
    on_numpy = multirnn.from_config(config, backend="numpy")
    on_numpy.set_weights(multirnn.to_numpy(layer.get_weights()))
    _close(on_numpy(x, mask=mask), want)


@pytest.mark.parametrize("source", ["numpy", "torch", "jax", "tensorflow"])
def test_files_move_between_engines_with_carried_states(source, tmp_path):
    if source not in engines.available():
        pytest.skip(f"{source} is not installed")
    eng = multirnn.engine(source)
    layer = _wrapper(eng, peephole(), "concat", return_sequences=True, stateful=True)
    x, mask = _data(time=6)
    layer(x[:, :3], mask=mask[:, :3])  # states now carried
    path = tmp_path / "both.safetensors"
    multirnn.save(layer, path)
    want = multirnn.to_numpy(layer(x[:, 3:], mask=mask[:, 3:]))
    for target in [e for e in ("numpy", "torch", "jax", "tensorflow") if e in engines.available()]:
        loaded = multirnn.load(path, backend=target)
        assert type(loaded) is multirnn.engine(target).Bidirectional
        assert loaded.forward_layer.weight_names == ["kernel", "recurrent_kernel", "bias",
                                                     "peephole"]  # fmt: skip
        _close(loaded(x[:, 3:], mask=mask[:, 3:]), want)
        assert multirnn.load(path, backend=target, states=False).states is None


def test_stateful_streams_and_reset_states(eng):
    x, mask = _data(time=6)
    layer = _wrapper(eng, Elman(3), "sum", return_sequences=True, stateful=True)
    peer = _wrapper(NUMPY, Elman(3), "sum", return_sequences=True, stateful=True)
    for part in (slice(0, 3), slice(3, 6)):
        _close(layer(x[:, part], mask=mask[:, part]), peer(x[:, part], mask=mask[:, part]))
    assert len(layer.states) == 2
    _close(layer.states, peer.states)
    states = _initial(1)
    layer.reset_states(states)
    peer.reset_states(states)
    _close(layer.states, states)
    _close(layer(x[:, :2]), peer(x[:, :2]))
    layer.reset_states()
    _close(layer.states, [np.zeros((3, 3))] * 2)
    with pytest.raises(ValueError, match=r"initial_state must be a list of 2 tensors"):
        layer.reset_states(states[:1])


def test_initial_state_is_split_between_the_directions(eng):
    x, mask = _data()
    layer = _wrapper(eng, peephole(), None, return_state=True)
    states = _initial(2)
    y, y_rev, *final = layer(x, mask=mask, initial_state=states)
    assert len(final) == 4
    forward = layer.forward_layer(x, mask=mask, initial_state=states[:2])
    backward = layer.backward_layer(x, mask=mask, initial_state=states[2:])
    _close([y, *final[:2]], multirnn.to_numpy(forward))
    _close([y_rev, *final[2:]], multirnn.to_numpy(backward))
    with pytest.raises(ValueError, match=r"Bidirectional\(RNN\(Peephole\)\): initial_state must "
                                         r"be a list of 4 tensors.*\[h, c\].*got 2"):  # fmt: skip
        layer(x, initial_state=states[:2])


def test_penalties_and_constraints_of_both_directions(eng):
    layer = _wrapper(eng, peephole(), input_dim=4)
    losses = layer.losses
    assert len(losses) == 2  # the bias penalty of each direction
    biases = [layer.forward_layer.get_weights()[2], layer.backward_layer.get_weights()[2]]
    for got, bias in zip(losses, biases, strict=True):
        np.testing.assert_allclose(multirnn.to_numpy(got), 0.01 * np.sum(bias**2), rtol=1e-12)
    constrained = layer.apply_constraints()
    layer = layer if constrained is None else constrained  # JAX layers are immutable
    for direction in (layer.forward_layer, layer.backward_layer):
        assert (multirnn.to_numpy(direction.get_weights()[3]) >= 0).all()


# -- gradients: each framework's autodiff against finite differences of the NumPy engine ----------


def _autodiff(eng, layer, x, mask, probes):
    """d sum(outputs * probes) / d weights, forward then backward, by the engine's autodiff."""
    if eng.name == "torch":
        import torch

        out = _list(layer(torch.from_numpy(x), mask=torch.from_numpy(mask)))
        sum((o * torch.from_numpy(p)).sum() for o, p in zip(out, probes)).backward()
        return [d.weights[n].grad.numpy() for d in (layer.forward_layer, layer.backward_layer)
                for n in d.weight_names]  # fmt: skip
    if eng.name == "jax":
        import jax
        import jax.numpy as jnp

        def loss(m):
            out = _list(m(jnp.asarray(x), mask=jnp.asarray(mask)))
            return sum(jnp.sum(o * jnp.asarray(p)) for o, p in zip(out, probes))

        grads = jax.jit(jax.grad(loss))(layer)
        assert type(grads) is eng.Bidirectional
        return grads.get_weights()
    import tensorflow as tf

    variables = layer.forward_layer.trainable_weights + layer.backward_layer.trainable_weights
    with tf.GradientTape() as tape:
        out = _list(layer(tf.constant(x), mask=tf.constant(mask)))
        loss = tf.add_n([tf.reduce_sum(o * p) for o, p in zip(out, probes)])
    return [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("merge_mode", ["concat", "mul"])
def test_gradients_match_finite_differences_of_the_numpy_engine(eng, merge_mode):
    if eng.name == "numpy":
        pytest.skip("the NumPy engine has no autodiff: it is the reference")
    options = {"return_sequences": True, "return_state": True, "input_dim": 2}
    layer = _wrapper(eng, peephole(2), merge_mode, **options)
    peer = _wrapper(NUMPY, peephole(2), merge_mode, **options)
    x, mask = _data(batch=2, time=3, features=2, seed=3)
    rng = np.random.default_rng(4)
    probes = [rng.standard_normal(o.shape) for o in peer(x, mask=mask)]
    got = _autodiff(eng, layer, x, mask, probes)
    weights = peer.get_weights()

    def loss(moved):
        peer.set_weights(moved)
        return sum(float(np.sum(o * p)) for o, p in zip(peer(x, mask=mask), probes))

    assert len(got) == len(weights) == 8
    want = cell_suite.central_differences(loss, weights)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8, err_msg=f"weight {k}")


# -- each framework's integration ------------------------------------------------------------------


def test_torch_module():
    torch = pytest.importorskip("torch")
    eng = multirnn.engine("torch")
    layer = _wrapper(eng, peephole(), return_sequences=True, input_dim=4)
    assert isinstance(layer, torch.nn.Module)
    assert len(list(layer.parameters())) == 8
    keys = list(layer.state_dict())
    assert keys[0] == "forward_layer.weights.kernel"
    assert keys[-1] == "backward_layer.weights.peephole"
    lazy = _wrapper(eng, peephole(), return_sequences=True)  # unbuilt: sized by the file
    lazy.load_state_dict(layer.state_dict())
    x = torch.from_numpy(_data()[0])
    torch.testing.assert_close(lazy(x), layer(x), rtol=0, atol=0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.get_weights()
    layer(x).square().mean().backward()
    optimizer.step()
    assert all(not np.array_equal(b, a) for b, a in zip(before, layer.get_weights()))
    assert layer.float()(x.float()).dtype == torch.float32


def test_jax_pytree():
    jax = pytest.importorskip("jax")
    eng = multirnn.engine("jax")
    layer = _wrapper(eng, peephole(), return_sequences=True, input_dim=4)
    leaves = jax.tree_util.tree_leaves_with_path(layer)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves]
    assert len(paths) == 8 and paths[0].startswith(".forward_layer")
    assert paths[-1].startswith(".backward_layer")
    x, mask = _data()
    traces = []

    @jax.jit
    def run(m, x, mask):
        traces.append(1)
        return m(x, mask=mask)

    _close(run(layer, x, mask), multirnn.to_numpy(layer(x, mask=mask)))
    # an equal wrapper around another cell object: the same tree structure, no new trace
    twin = _wrapper(eng, peephole(), return_sequences=True, input_dim=4)
    assert jax.tree_util.tree_structure(twin) == jax.tree_util.tree_structure(layer)
    run(twin, x, mask)
    assert len(traces) == 1
    updated = jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, layer, jax.grad(
        lambda m: run(m, x, mask).sum())(layer))  # fmt: skip
    assert type(updated) is eng.Bidirectional
    assert type(updated.apply_constraints()) is eng.Bidirectional
    with pytest.raises(TypeError, match=r"key= draws dropout masks, which RNN\(cell\) does not"):
        layer(x, training=True, key=jax.random.key(0))


def test_keras_layer_in_a_model_fit_and_a_keras_file(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    eng = multirnn.engine("tensorflow")
    x = _data(batch=4, time=5)[0].astype("float32")
    x[1, 3:] = 0.0
    wrapper = eng.Bidirectional(eng.RNN(peephole(), return_sequences=True, seed=0), "sum")
    model = keras.Sequential([
        keras.Input((None, 4)),
        keras.layers.Masking(0.0),
        wrapper,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])  # fmt: skip
    assert len(wrapper.trainable_weights) == 8 and len(model.losses) == 2
    model.compile(keras.optimizers.Adam(0.05), "mse")
    fit_lowers_the_loss(model, x, np.ones((4, 1), "float32"), epochs=5)
    keras_file_reloads(model, x, tmp_path / "model.keras", atol=1e-6)
    frozen = eng.Bidirectional(eng.RNN(Elman(2)), trainable=False)
    frozen.build((None, None, 3))
    assert not frozen.trainable and frozen.trainable_weights == []
    assert not frozen.forward_layer.trainable and not frozen.backward_layer.trainable
    frozen.trainable = True
    assert len(frozen.trainable_weights) == 6


# -- errors ----------------------------------------------------------------------------------------


def test_what_cannot_be_wrapped_is_named(eng):
    with pytest.raises(TypeError, match=r"wraps a SimpleRNN, LSTM or GRU layer, or an "
                                        r"RNN\(cell\), of the \w+ engine, got 'lstm'"):  # fmt: skip
        eng.Bidirectional("lstm")
    with pytest.raises(TypeError, match=r"got the cell Elman\(units=3\).*a cell runs inside an "
                                        r"RNN: Bidirectional\(RNN\(Elman\(...\)\)\)"):  # fmt: skip
        eng.Bidirectional(Elman(3))
    with pytest.raises(TypeError, match=r"got the class RNN; pass a layer: RNN\(...\)"):
        eng.Bidirectional(eng.RNN)
    other = next(n for n in ("numpy", "torch") if n != eng.name)
    if other in engines.available():
        with pytest.raises(TypeError, match=rf"a RNN of the {other} engine; create it with "
                                            rf"multirnn.engine\('{eng.name}'\).RNN"):  # fmt: skip
            eng.Bidirectional(multirnn.engine(other).RNN(Elman(3)))


def test_bad_arguments_are_refused_with_what_is_accepted(eng):
    rnn = eng.RNN(Elman(3))
    with pytest.raises(ValueError, match="merge_mode must be 'concat', 'sum', 'mul', 'ave' or "
                                         "None, got 'max'"):  # fmt: skip
        eng.Bidirectional(rnn, merge_mode="max")
    refused = r"Bidirectional\(RNN\(Elman\)\) got an unexpected keyword argument 'input_shape'"
    with pytest.raises(TypeError, match=refused + r": RNN\(cell\) takes input_dim="):
        eng.Bidirectional(rnn, input_shape=(5, 4))
    with pytest.raises(TypeError, match="unexpected keyword argument 'backward_layer'"):
        eng.Bidirectional(rnn, backward_layer=eng.RNN(Elman(3), go_backwards=True))
    if eng.name != "tensorflow":  # only TensorFlow's RNN has Keras's trainable flag
        with pytest.raises(TypeError, match=f"no trainable option on the {eng.name} engine"):
            eng.Bidirectional(rnn, trainable=False)
        with pytest.raises(TypeError, match=f"no trainable flag on the {eng.name} engine"):
            eng.Bidirectional(rnn).trainable = False
    sized = eng.Bidirectional(eng.RNN(Elman(3), seed=0), input_dim=4)
    assert sized.built and sized.forward_layer.input_dim == 4
    with pytest.raises(ValueError, match=r"input_dim=5 but the wrapped RNN has input_dim=4"):
        eng.Bidirectional(eng.RNN(Elman(3), input_dim=4), input_dim=5)
    with pytest.raises(ValueError, match="input_dim must be a positive integer, got 0"):
        eng.Bidirectional(rnn, input_dim=0)
    with pytest.raises(ValueError, match=r"set_weights takes 6 arrays, the forward layer's "
                                         r"\['kernel', 'recurrent_kernel', 'bias'\] then the "
                                         r"backward layer's, got 3"):  # fmt: skip
        sized.set_weights(sized.get_weights()[:3])
    with pytest.raises(ValueError, match="an even number of arrays, got 3"):
        eng.Bidirectional(rnn).set_weights(sized.get_weights()[:3])


def test_cells_that_cannot_be_copied_or_saved_say_why(eng, tmp_path):
    class Local(Elman):  # not registered: runs, but a file could not name it
        pass

    layer = eng.Bidirectional(eng.RNN(Local(2), input_dim=3))
    assert multirnn.to_numpy(layer(np.ones((1, 2, 3)))).shape == (1, 4)
    with pytest.raises(TypeError, match="register_cell"):
        multirnn.save(layer, tmp_path / "local.safetensors")

    class Fixed(Elman):
        def __init__(self):
            super().__init__(2)

    made = r"its own copy of the cell, made with Fixed.from_config\(cell.get_config\(\)\)"
    with pytest.raises(TypeError, match=made + ", which raised"):
        eng.Bidirectional(eng.RNN(Fixed()))
