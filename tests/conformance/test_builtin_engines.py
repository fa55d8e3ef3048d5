"""Every framework engine shipped with multirnn passes the conformance quick grid (forward,
stateful and gradients, float32 and float64) with no known-gap entries. The torch engine's
generic path runs it twice: with its native loop required and with the Python loop
(MULTIRNN_TORCH_NATIVE=1 and 0; docs/torch.md)."""

from __future__ import annotations

import os

import pytest

import multirnn.conformance as conf
from multirnn.conformance import known_gaps, report

from . import frameworks

#: (engine, MULTIRNN_TORCH_NATIVE or None): the torch grid once per loop of its generic path
RUNS = {
    "torch-native": ("torch", "1"),
    "torch-python": ("torch", "0"),
    "jax": ("jax", None),
    "tensorflow": ("tensorflow", None),
}


def _torch_loop(native_mode: str | None, monkeypatch):
    """Select the torch generic path's loop; returns the call counts of the native one."""
    counts = {"forward": 0}
    if native_mode is None:
        return counts
    from multirnn_torch import native

    if native_mode == "1":
        try:
            native.build()
        except native.NativeBuildError as exc:  # no compiler here; CI has one and must build
            if os.environ.get("CI"):
                raise
            pytest.skip(str(exc)[:300])
    monkeypatch.setenv(native.ENV, native_mode)
    inner = native.forward

    def counted(*args, **kwargs):
        counts["forward"] += 1
        return inner(*args, **kwargs)

    monkeypatch.setattr(native, "forward", counted)
    return counts


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # two tests: parallel workers
@pytest.mark.parametrize("run", list(RUNS))
def test_quick_grid(run, dtype, monkeypatch):
    engine, native_mode = RUNS[run]
    frameworks.needs(engine)
    native_calls = _torch_loop(native_mode, monkeypatch)
    with frameworks.float64(engine):
        rep = conf.run([engine], conf.quick_cases(), [dtype])
    # the required native loop (a failed build raises) ran; the Python loop did not call it
    assert (native_calls["forward"] > 0) == (native_mode == "1")
    assert rep.ok, report.failures(rep)
    checks = {r.check for r in rep.results if r.status == "pass"}
    assert {"forward", "gradients", "stateful"} <= checks
    wrapped = {r.case.id for r in rep.results if r.case.wrapped and r.status == "pass"}
    assert len(wrapped) == sum(c.wrapped for c in conf.quick_cases())


@pytest.mark.parametrize("engine", list(frameworks.FRAMEWORKS))
def test_no_known_gaps(engine):
    assert known_gaps.load(known_gaps.builtin_path(engine)) == []


#: every how-many-th case of the quick grid the low-precision groups run in the test suite
#: (the whole grid: ``multirnn conformance --dtype bfloat16,float16``, a few minutes)
LOW_PRECISION_SAMPLE = 12


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("engine", ["numpy", *frameworks.FRAMEWORKS])
def test_low_precision_groups_on_a_sample_of_the_grid(engine, dtype):
    if engine != "numpy":
        frameworks.needs(engine)
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")  # NumPy's bfloat16 (installed with JAX and TF)
    grid = conf.quick_cases()
    stateful = [c for c in grid if c.stateful][::3]
    dropout = [c for c in grid if c.dropout][::3]
    cases = list(dict.fromkeys(grid[::LOW_PRECISION_SAMPLE] + stateful + dropout))
    rep = conf.run([engine], cases, [dtype])
    assert rep.ok, report.failures(rep)
    passed = {r.check for r in rep.results if r.status == "pass"}
    assert passed >= ({"forward", "stateful"} | ({"gradients"} if engine != "numpy" else set()))
    ran = {r.case for r in rep.results if r.status == "pass"}
    assert any(c.wrapped for c in ran) and any(c.dropout for c in ran)
