"""The JAX engine passes the conformance quick grid, forward and gradients, both dtypes,
with no known gaps."""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

import multirnn.conformance as conf
from multirnn.conformance import known_gaps, report


def test_quick_grid():
    rep = conf.run(["jax"], conf.quick_cases())
    assert rep.ok, report.failures(rep)
    checks = {(r.check, r.dtype) for r in rep.results if r.status == "pass"}
    assert {("forward", "float32"), ("gradients", "float64"), ("stateful", "float64")} <= checks


def test_no_known_gaps():
    assert known_gaps.load(known_gaps.builtin_path("jax")) == []
