"""Each named activation against its defining formula, evaluated independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multirnn import activations
from multirnn.ops import NUMPY_OPS

POINTS = [-40.0, -3.0, -2.5, -1.0, -0.3, 0.0, 0.3, 1.0, 2.5, 3.0, 40.0]

EXPECTED = {
    "tanh": math.tanh,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "hard_sigmoid": lambda x: min(1.0, max(0.0, 0.2 * x + 0.5)),
    "hard_sigmoid_relu6": lambda x: min(6.0, max(0.0, x + 3)) / 6,
    "relu": lambda x: max(x, 0.0),
    "linear": lambda x: x,
    "softsign": lambda x: x / (1 + abs(x)),
    "softplus": lambda x: math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x)),
    "elu": lambda x: x if x > 0 else math.expm1(x),
    "selu": lambda x: 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * math.expm1(x)),
    "exponential": math.exp,
}

#: not elementwise: over the last axis
ROWWISE = {"softmax"}

#: exp overflows for large inputs on every framework (Keras's exponential does too)
OVERFLOWS = {"exponential"}


def test_every_name_has_an_expected_formula():
    assert set(EXPECTED) | ROWWISE == set(activations.NAMES)


def test_softmax_is_over_the_last_axis_and_shift_invariant():
    fn = activations.function("softmax", NUMPY_OPS)
    x = np.array([[1.0, 2.0, 3.0], [-1e4, 0.0, 1e4], [5.0, 5.0, 5.0]])
    got = fn(x)
    rows = [[math.exp(v - max(r)) / sum(math.exp(w - max(r)) for w in r) for v in r] for r in x]
    np.testing.assert_allclose(got, rows, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(fn(x[:1] + 700.0), got[:1], rtol=1e-14)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_formula(name):
    fn = activations.function(name, NUMPY_OPS)
    got = fn(np.array(POINTS))
    want = np.array([EXPECTED[name](x) for x in POINTS])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)


def test_hard_sigmoid_is_the_keras2_slope():
    fn = activations.function("hard_sigmoid", NUMPY_OPS)
    np.testing.assert_array_equal(fn(np.array([-2.5, -1.0, 0.0, 1.0, 2.5])), [0, 0.3, 0.5, 0.7, 1])


def test_large_inputs_stay_finite():
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        for name in set(activations.NAMES) - OVERFLOWS:
            fn = activations.function(name, NUMPY_OPS)
            assert np.all(np.isfinite(fn(np.array([-1e4, 1e4]))))


def test_callable_is_used_as_given():
    fn = activations.function(np.sin, NUMPY_OPS)
    assert fn(np.array(0.5)) == np.sin(0.5)
    with pytest.raises(TypeError, match="cannot be serialized"):
        activations.serialize(np.sin, arg="activation")
