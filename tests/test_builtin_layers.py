"""The built-in layers (SimpleRNN, LSTM, GRU) as every engine provides them: selection, seeds,
carried states, files, configs, and calls refused with what was expected. Each engine runs in
its default dtype; what only one framework has (modules, pytrees, Keras models, traced and
fused paths) is tested in that engine's folder."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import multirnn

from .cases import DTYPES, PACKAGES, VARIANTS, native, variant_id

#: how close a sequence fed in two stateful calls is to the whole, on each engine
SPLIT = {
    "numpy": {"rtol": 1e-14, "atol": 0},
    "torch": {"rtol": 1.3e-6, "atol": 1e-5},  # torch.testing's float32 tolerance
    "jax": {"rtol": 1e-7, "atol": 1e-12},
    "tensorflow": {"rtol": 1e-7, "atol": 1e-6},
}


def make(eng, variant, units=3, **kwargs):
    layer, extra = variant
    return eng.layer_class(layer)(units, **extra, **kwargs)


def inputs(eng, batch=2, time=5, features=4):
    """Random inputs as the engine's tensor, in its default dtype."""
    data = np.random.default_rng(0).standard_normal((batch, time, features))
    return native(eng.name, data.astype(DTYPES[eng.name]))


def test_the_demo_runs_on_every_engine(eng, capsys):
    from multirnn import cli

    assert cli.main(["demo", "--backend", eng.name]) == 0
    assert "all documented layers ran" in capsys.readouterr().out


def test_selected_by_name_and_recurrent_is_an_abstract_base(eng):
    layers = importlib.import_module(PACKAGES[eng.name] + ".layers")
    assert multirnn.engine(eng.name).LSTM is layers.LSTM
    with pytest.raises(TypeError, match="abstract base"):
        eng.Recurrent(3)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_a_seed_gives_the_numpy_engines_weights(eng64, variant):
    layer = make(eng64, variant, input_dim=4, seed=7, dtype="float32")
    ref = make(multirnn.engine("numpy"), variant, input_dim=4, seed=7, dtype="float32")
    for a, b in zip(layer.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # in the engine's default dtype: one seed, the same weights; another seed, others
    a, b = make(eng64, variant, seed=3, input_dim=4), make(eng64, variant, seed=3, input_dim=4)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    c = make(eng64, variant, seed=4, input_dim=4)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


# -- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_stateful_calls_continue_the_sequence(eng64, variant):
    x = inputs(eng64, time=6)
    whole = make(eng64, variant, seed=2, return_sequences=True, input_dim=4)
    stateful = make(eng64, variant, seed=2, return_sequences=True, stateful=True, input_dim=4)
    first, second = multirnn.to_numpy([stateful(x[:, :3]), stateful(x[:, 3:])])
    np.testing.assert_allclose(
        np.concatenate([first, second], 1), multirnn.to_numpy(whole(x)), **SPLIT[eng64.name]
    )
    assert len(stateful.states) == stateful.spec.num_states
    stateful.reset_states()
    assert all(not np.any(s) for s in multirnn.to_numpy(list(stateful.states)))
    np.testing.assert_array_equal(multirnn.to_numpy(stateful(x[:, :3])), first)


def test_stateful_batch_size_and_reset_states_errors(eng64):
    layer = eng64.LSTM(3, stateful=True)
    layer(inputs(eng64, batch=2))
    with pytest.raises(ValueError, match="holds states for batch size 2"):
        layer(inputs(eng64, batch=3))

    def zeros():
        return native(eng64.name, np.zeros((3, 3), DTYPES[eng64.name]))

    with pytest.raises(ValueError, match=r"reset_states\(states\) must be a list of 2"):
        layer.reset_states([zeros()])
    layer.reset_states([zeros(), zeros()])
    assert tuple(layer(inputs(eng64, batch=3)).shape) == (3, 3)
    with pytest.raises(ValueError, match="applies to stateful layers"):
        eng64.LSTM(3).reset_states()


# -- files and configs ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_save_load_on_numpy_and_back(eng64, variant, tmp_path):
    layer = make(eng64, variant, seed=5, return_sequences=True, go_backwards=True, input_dim=4)
    x = inputs(eng64)
    want = multirnn.to_numpy(layer(x))
    path = tmp_path / "layer.safetensors"
    multirnn.save(layer, path)
    on_numpy = multirnn.load(path, backend="numpy", dtype=str(want.dtype))
    atol = 1e-5 if want.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(on_numpy(multirnn.to_numpy(x)), want, atol=atol)
    back = multirnn.load(path, backend=eng64.name)
    np.testing.assert_allclose(multirnn.to_numpy(back(x)), want, rtol=1e-7, atol=0)
    multirnn.save(on_numpy, path)
    back = multirnn.load(path, backend=eng64.name)
    np.testing.assert_allclose(multirnn.to_numpy(back(x)), want, rtol=1e-7, atol=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_from_config_rebuilds_the_same_layer(eng64, variant):
    layer = make(eng64, variant, seed=4, go_backwards=True, name="enc")
    again = type(layer).from_config(layer.get_config())
    assert again.spec == layer.spec and again.name == "enc"
    other = eng64.GRU if variant[0] == "LSTM" else eng64.LSTM
    with pytest.raises(ValueError, match="got a config for a"):
        other.from_config(layer.get_config())


# -- bad input ----------------------------------------------------------------------------------

X = np.zeros((2, 5, 4))
Z = np.zeros((2, 3))

#: call(layer, to_engine) -> error, match: what every engine refuses, with the same words
BAD_CALLS = {
    "2-D": (
        lambda m, t: m(t(np.zeros((2, 4)))),
        ValueError,
        r"inputs must be 3-D \(batch, time, features\)",
    ),
    "features": (
        lambda m, t: m(t(np.zeros((2, 5, 3)))),
        ValueError,
        "inputs have 3 features .* input_dim=4",
    ),
    "integers": (
        lambda m, t: m(np.zeros((2, 5, 4), int)),
        TypeError,
        r"floating-point .*\(int64\)",
    ),
    "mask-shape": (
        lambda m, t: m(t(X), mask=t(np.ones((2, 4), bool))),
        ValueError,
        "mask must have shape",
    ),
    "mask-float": (
        lambda m, t: m(t(X), mask=t(np.ones((2, 5)))),
        TypeError,
        "mask must be a boolean",
    ),
    "one-state": (lambda m, t: m(t(X), initial_state=[t(Z)]), ValueError, r"\[h, c\]"),
    "c-shape": (
        lambda m, t: m(t(X), initial_state=[t(Z), t(np.zeros((2, 2)))]),
        ValueError,
        "'c'",
    ),
    "array-state": (lambda m, t: m(t(X), initial_state=t(Z)), ValueError, r"\[h, c\]"),
    "training": (
        lambda m, t: m(t(X), training=1),
        TypeError,
        "training must be True, False or None",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS.values(), ids=BAD_CALLS)
def test_bad_calls_say_what_was_expected(eng64, case):
    call, error, match = case
    layer = eng64.LSTM(3, input_dim=4)
    dtype = DTYPES[eng64.name]

    def to_engine(array):
        return native(eng64.name, array.astype(dtype) if array.dtype.kind == "f" else array)

    with pytest.raises(error, match=match):
        call(layer, to_engine)


def test_a_tensor_of_another_dtype_is_refused(eng64):
    if eng64.name == "numpy":
        pytest.skip("the NumPy engine casts NumPy data to the layer's dtype")
    own = DTYPES[eng64.name]
    other = "float32" if own == "float64" else "float64"
    layer = eng64.LSTM(3, input_dim=4)
    with pytest.raises(TypeError, match=f"dtype {other} .* {own}"):
        layer(native(eng64.name, np.zeros((2, 5, 4), other)))


# -- constraints --------------------------------------------------------------------------------


def test_apply_constraints_projects_the_constrained_weights_only(eng64):
    # each framework's idiom (after an optimizer step, in a custom loop, under jit) is
    # tested in its folder; here every engine projects the weights set_weights gave
    max_norm = multirnn.constraints.MaxNorm(0.1)
    layer = eng64.LSTM(3, kernel_constraint="non_neg", recurrent_constraint=max_norm,
                       input_dim=4, seed=0)  # fmt: skip
    kernel, recurrent, bias = layer.get_weights()
    assert (kernel < 0).any()
    layer.set_weights([kernel, 10.0 * recurrent, bias])
    projected = layer.apply_constraints()
    if eng64.name == "jax":  # a pure layer: a new one, the old one untouched
        assert isinstance(projected, eng64.LSTM)
        assert (layer.get_weights()[0] < 0).any()
        layer = projected
    kernel, recurrent, bias_after = layer.get_weights()
    assert (kernel >= 0).all()
    slack = 1e-7 if kernel.dtype == np.float32 else 0.0
    assert np.linalg.norm(recurrent, axis=0).max() <= 0.1 + slack
    np.testing.assert_array_equal(bias_after, bias)


# -- penalties --------------------------------------------------------------------------------


def test_penalties_are_the_weights_and_the_main_outputs(eng64):
    layer = eng64.SimpleRNN(2, seed=0, kernel_regularizer="l2", activity_regularizer="l1",
                            bias_regularizer=multirnn.regularizers.l1(0.5),
                            bias_initializer="ones", input_dim=4)  # fmt: skip
    if eng64.name != "jax":  # JAX layers are pure: nothing is collected, penalties(out) ask
        assert eng64.SimpleRNN(2, kernel_regularizer="l2").losses == []  # no weights yet
        assert len(layer.losses) == 2  # the weights' penalties, before any call
    out = layer(inputs(eng64))
    got = layer.penalties(out) if eng64.name == "jax" else layer.losses
    got = [float(multirnn.to_numpy(v)) for v in got]
    if eng64.name == "tensorflow":  # Keras lists the activity penalty first
        got = got[1:] + got[:1]
    k, _, b = layer.get_weights()
    out = multirnn.to_numpy(out)
    want = [0.01 * np.sum(k**2), 0.5 * np.sum(np.abs(b)), 0.01 * np.sum(np.abs(out)) / 2]
    rtol = 1e-6 if out.dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, want, rtol=rtol)
