"""Every framework engine shipped with multirnn passes the conformance quick grid (forward,
stateful and gradients, float32 and float64) with no known-gap entries."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest

import multirnn.conformance as conf
from multirnn.conformance import known_gaps, report

#: engine -> the framework module it needs
ENGINES = {
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
}


def _float64(engine: str):
    if engine == "jax":  # JAX computes float64 only in its 64-bit mode
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # two tests: parallel workers
@pytest.mark.parametrize("engine", list(ENGINES))
def test_quick_grid(engine, dtype):
    if importlib.util.find_spec(ENGINES[engine]) is None:
        pytest.skip(f"needs {ENGINES[engine]}")
    with _float64(engine):
        rep = conf.run([engine], conf.quick_cases(), [dtype])
    assert rep.ok, report.failures(rep)
    checks = {r.check for r in rep.results if r.status == "pass"}
    assert {"forward", "gradients", "stateful"} <= checks
    wrapped = {r.case.id for r in rep.results if r.case.wrapped and r.status == "pass"}
    assert len(wrapped) == sum(c.wrapped for c in conf.quick_cases())


@pytest.mark.parametrize("engine", list(ENGINES))
def test_no_known_gaps(engine):
    assert known_gaps.load(known_gaps.builtin_path(engine)) == []
