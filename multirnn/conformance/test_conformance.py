"""The suite as pytest tests: one test per engine x dtype x case, plus float32 pairwise."""

from __future__ import annotations

import pytest

from multirnn.conformance import runner


def _verdict(results):
    gaps = {}
    for run in results:
        if run.status == "xfail":
            gaps[run.check] = run.detail
    bad = [r for r in results if r.status in runner.FAILING]
    if bad:
        lines = [
            f"{r.check}: {r.status} max_rel={r.max_rel} tol={r.tolerance} {r.detail}" for r in bad
        ]
        pytest.fail("\n".join(lines) + f"\nreproduce: {bad[0].reproducer}", pytrace=False)
    if gaps:
        pytest.xfail("; ".join(gaps.values()))
    if results and all(r.status == "skip" for r in results):
        pytest.skip(results[0].detail)


def test_case(conformance_run, dtype, case):
    results = runner.check_case(conformance_run, case, dtype)
    runner.apply_gaps(results, {conformance_run.adapter.name: conformance_run.gaps})
    _verdict(results)


def test_float32_pairwise(request, pairwise_case):
    runs = request.config._multirnn_conformance["runs"]
    for run in runs:
        if (pairwise_case, "float32") not in run.forward_results:
            runner.check_case(run, pairwise_case, "float32")
    results = runner.pairwise(runs, [pairwise_case])
    runner.apply_gaps(results, {run.adapter.name: run.gaps for run in runs})
    _verdict(results)
