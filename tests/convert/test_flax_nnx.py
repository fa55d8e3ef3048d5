"""Flax NNX cells <-> multirnn layers through the public converters."""

from __future__ import annotations

import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")
jax = pytest.importorskip("jax")

from multirnn import convert  # noqa: E402
from multirnn.convert import ConversionError, flax_nnx  # noqa: E402
from multirnn.reference.layers import GRU, LSTM  # noqa: E402


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)


def _cell(kind, **kwargs):
    cell = getattr(nnx, kind)(4, 5, **{"rngs": nnx.Rngs(0), **kwargs})
    # nonzero biases, so that a bias in the wrong slot shows
    for path, value in _params(cell).items():
        if path[-1] == "bias":
            value.set_value(jax.random.normal(jax.random.key(len(path)), value.get_value().shape))
    return cell


def _params(module):
    return {path: v for path, v in nnx.iter_graph(module) if isinstance(v, nnx.Param)}


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("LSTMCell", {}),
        ("OptimizedLSTMCell", {"gate_fn": jax.nn.hard_sigmoid}),
        ("GRUCell", {}),
        ("SimpleCell", {"activation_fn": jax.nn.relu}),
        ("SimpleCell", {"residual": True}),
    ],
    ids=[
        "LSTMCell",
        "OptimizedLSTMCell-hard_sigmoid",
        "GRUCell",
        "SimpleCell-relu",
        "SimpleCell-residual",
    ],  # stable ids: the same in every pytest-xdist worker
)
def test_flax_cells_and_multirnn_layers_compute_the_same(kind, kwargs):
    cell = _cell(kind, **kwargs)
    x = _x()
    want = np.asarray(nnx.RNN(cell)(x))
    layer = convert.from_flax(cell, backend="numpy")
    np.testing.assert_allclose(layer(x), want, atol=2e-6)
    if kwargs.get("residual"):
        return  # exported without the residual: same function, other arrays
    back = convert.to_flax(layer, kind=kind)
    np.testing.assert_allclose(np.asarray(nnx.RNN(back)(x)), want, atol=2e-6)
    got, want = _params(back), _params(cell)
    assert got.keys() == want.keys()
    for path in got:
        np.testing.assert_array_equal(got[path].get_value(), want[path].get_value(),
                                      err_msg=str(path))  # fmt: skip


def _rnn(kind, **kwargs):
    return nnx.RNN(_cell(kind, **kwargs))


@pytest.mark.parametrize(
    "kind,merge_fn,mode",
    [
        ("LSTMCell", None, "concat"),
        ("OptimizedLSTMCell", jax.numpy.multiply, "mul"),
        ("GRUCell", jax.numpy.add, "sum"),
        ("SimpleCell", flax_nnx.average, "ave"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nnx_bidirectional_round_trips_with_its_numbers(kind, merge_fn, mode, dtype):
    with jax.enable_x64(dtype == "float64"):
        x = np.random.default_rng(1).standard_normal((3, 6, 4)).astype(dtype)
        rnns = [nnx.RNN(_cell(kind, param_dtype=dtype, dtype=dtype, rngs=nnx.Rngs(seed)))
                for seed in (0, 1)]  # fmt: skip
        merge = {} if merge_fn is None else {"merge_fn": merge_fn}
        module = nnx.Bidirectional(*rnns, return_carry=True, **merge)
        (forward, backward), want = module(x)
        layer = convert.from_flax(module, backend="numpy")
        assert layer.merge_mode == mode and layer.spec.layer.return_state
        got = layer(x)
        atol = 1e-12 if dtype == "float64" else 1e-6
        np.testing.assert_allclose(got[0], want, atol=atol)
        states = [forward, backward] if kind == "SimpleCell" or kind == "GRUCell" else [
            forward[1], forward[0], backward[1], backward[0]]  # fmt: skip
        for g, w in zip(got[1:], states):
            np.testing.assert_allclose(g, w, atol=atol)
        (_, again) = convert.to_flax(layer, kind=kind)(x)
        np.testing.assert_allclose(np.asarray(again), want, atol=atol)


def test_nnx_bidirectional_carries_match_masked_last_steps():
    # seq_lengths and a right-padded mask agree on the final carries
    module = nnx.Bidirectional(_rnn("LSTMCell"), _rnn("LSTMCell"), return_carry=True)
    x, lengths = _x(), np.array([6, 3, 1])
    (forward, backward), _ = module(x, seq_lengths=lengths)
    layer = convert.from_flax(module, backend="numpy")
    got = layer(x, mask=np.arange(6) < lengths[:, None])
    for g, w in zip(got[1:], [forward[1], forward[0], backward[1], backward[0]]):
        np.testing.assert_allclose(g, w, atol=2e-6)


@pytest.mark.parametrize(
    "changes,merge_mode,match",
    [
        ({}, None, "merge_mode=None"),
        ({"go_backwards": True}, "concat", "go_backwards=True"),
        ({"return_sequences": False}, "concat", "return_sequences=False"),
    ],
)
def test_bidirectional_wrappers_without_an_nnx_form_are_refused(changes, merge_mode, match):
    from multirnn import engines

    inner = GRU(5, input_dim=4, seed=0, reset_after=True, recurrent_activation="sigmoid",
                use_bias=False, **{"return_sequences": True, **changes})  # fmt: skip
    wrapper = engines.engine("numpy").Bidirectional(inner, merge_mode)
    with pytest.raises(ConversionError, match=match):
        convert.to_flax(wrapper)


def test_nnx_rnn_wrappers_are_accepted():
    layer = convert.from_flax(nnx.RNN(_cell("GRUCell")), backend="numpy")
    assert layer.spec.layer == "GRU" and layer.spec.reset_after


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: _cell("LSTMCell", activation_fn=jax.nn.gelu), "activation_fn='gelu'"),
        (lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0)), "got Linear"),
        (lambda: nnx.RNN(_cell("GRUCell"), reverse=True), "reverse=True"),
        (
            lambda: nnx.Bidirectional(_rnn("GRUCell"), _rnn("GRUCell"), merge_fn=jax.numpy.maximum),
            "merge_fn='maximum'",
        ),
        (
            lambda: nnx.Bidirectional(_rnn("GRUCell"), _rnn("GRUCell"), time_major=True),
            "time_major=True",
        ),
        (lambda: nnx.Bidirectional(_rnn("GRUCell"), _rnn("LSTMCell")), "backward cell"),
        (
            lambda: nnx.Bidirectional(_rnn("GRUCell"), _rnn("GRUCell", activation_fn=jax.nn.relu)),
            "backward cell",
        ),
        (
            lambda: nnx.Bidirectional(_rnn("GRUCell"), _cell("GRUCell")),
            "backward_rnn must be an nnx.RNN",
        ),
        (
            lambda: _cell("SimpleCell", carry_init=nnx.initializers.ones_init()),
            "nonzero initial carry",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:carry_init is provided")
def test_flax_modules_without_a_multirnn_form_are_refused(make, match):
    with pytest.raises(ConversionError, match=match):
        convert.from_flax(make(), backend="numpy")


@pytest.mark.parametrize(
    "layer,kwargs,match",
    [
        (lambda: LSTM(5, input_dim=4, seed=0), {}, "no JAX built-in"),  # hard_sigmoid 0.2
        (lambda: GRU(5, input_dim=4, seed=0, recurrent_activation="sigmoid"), {},
         "reset_after=False"),
        (lambda: GRU(5, input_dim=4, seed=0, reset_after=True, recurrent_activation="sigmoid"),
         {"kind": "LSTMCell"}, "kind for a GRU"),
    ],
)  # fmt: skip
def test_layers_without_a_flax_form_are_refused(layer, kwargs, match):
    with pytest.raises(ConversionError, match=match):
        convert.to_flax(layer(), **kwargs)


@pytest.mark.parametrize(
    "param_dtype,dtype,ours",
    [("float32", "bfloat16", "mixed_bfloat16"), ("float32", "float16", "mixed_float16"),
     ("bfloat16", None, "bfloat16"), ("float16", "float16", "float16")],
)  # fmt: skip
def test_flax_param_dtype_and_dtype_convert_as_multirnn_dtypes(param_dtype, dtype, ours):
    """Flax's split of parameters (``param_dtype``) from computation (``dtype``) is a mixed
    policy; Flax rounds at every step where multirnn computes in float32
    (multirnn.precision), so the results agree within a few units in the last place."""
    jnp = jax.numpy
    init = nnx.initializers.lecun_normal()  # (Flax's orthogonal has no half-precision QR)
    cell = nnx.GRUCell(4, 6, param_dtype=getattr(jnp, param_dtype),
                       dtype=None if dtype is None else getattr(jnp, dtype),
                       recurrent_kernel_init=init, rngs=nnx.Rngs(0))  # fmt: skip
    layer = convert.from_flax(cell, backend="jax")
    assert layer.spec.dtype == ours
    low = dtype or param_dtype
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4)), low)
    want = np.asarray(nnx.RNN(cell)(x), np.float32)
    got = np.asarray(layer(x), np.float32)
    tol = {"bfloat16": 2e-2, "float16": 2e-3}[low]
    np.testing.assert_allclose(got, want, atol=tol, rtol=tol)
    back = convert.to_flax(layer)
    assert (np.dtype(back.param_dtype).name, np.dtype(back.dtype).name) == (param_dtype, low)
    np.testing.assert_array_equal(np.asarray(nnx.RNN(back)(x), np.float32), want)


def test_parameters_computing_in_a_wider_dtype_are_refused():
    init = nnx.initializers.lecun_normal()
    cell = nnx.GRUCell(4, 6, param_dtype=jax.numpy.float16, dtype=jax.numpy.float32,
                       recurrent_kernel_init=init, rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ConversionError, match=r"parameters in \['float16'\] computing in float32"):
        convert.from_flax(cell, backend="jax")
