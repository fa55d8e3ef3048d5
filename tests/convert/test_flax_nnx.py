"""Flax NNX cells <-> multirnn layers through the public converters."""

from __future__ import annotations

import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")
jax = pytest.importorskip("jax")

from multirnn import convert  # noqa: E402
from multirnn.convert import ConversionError  # noqa: E402
from multirnn.reference.layers import GRU, LSTM  # noqa: E402


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)


def _cell(kind, **kwargs):
    cell = getattr(nnx, kind)(4, 5, rngs=nnx.Rngs(0), **kwargs)
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
    ids=str,
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
            lambda: nnx.Bidirectional(nnx.RNN(_cell("GRUCell")), nnx.RNN(_cell("GRUCell"))),
            "nnx.Bidirectional is not convertible yet",
        ),
    ],
)
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
