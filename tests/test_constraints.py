"""Constraints with Keras semantics (norms over ``axis``, epsilon 1e-7)."""

from __future__ import annotations

import numpy as np
import pytest

from multirnn import constraints as c
from multirnn.ops import NUMPY_OPS

EPS = 1e-7
W = np.array([[3.0, 0.1], [4.0, -0.2]])  # column norms 5 and ~0.2236


def apply(constraint, w=W):
    return c.project(constraint, w, NUMPY_OPS)


def test_max_norm_clips_only_large_columns():
    out = apply(c.MaxNorm(2.0))
    np.testing.assert_allclose(out[:, 0], W[:, 0] * 2.0 / (5.0 + EPS))
    n1 = np.linalg.norm(W[:, 1])
    np.testing.assert_allclose(out[:, 1], W[:, 1] * n1 / (n1 + EPS))


def test_max_norm_axis_1():
    out = apply(c.MaxNorm(1.0, axis=1))
    rows = np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_allclose(out, W * np.minimum(rows, 1.0) / (rows + EPS))


def test_unit_norm():
    np.testing.assert_allclose(np.linalg.norm(apply(c.UnitNorm()), axis=0), 1.0, rtol=1e-6)


def test_non_neg():
    np.testing.assert_array_equal(apply(c.NonNeg()), [[3.0, 0.1], [4.0, 0.0]])


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_min_max_norm(rate):
    out = apply(c.MinMaxNorm(0.5, 1.0, rate))
    norms = np.linalg.norm(W, axis=0)
    desired = rate * np.clip(norms, 0.5, 1.0) + (1 - rate) * norms
    np.testing.assert_allclose(out, W * desired / (norms + EPS))


def test_callable_constraint():
    np.testing.assert_array_equal(apply(np.abs), np.abs(W))
