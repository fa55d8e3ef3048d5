"""The suite can pass, can fail, and says exactly where."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import pytest

import multirnn.conformance as conf
from multirnn.conformance import known_gaps, report, runner
from multirnn.conformance.cases import quick_cases

from .doubles import BrokenBidirectional, Crashing, ForgetBiasOffByOne, ResetAfterGRU

QUICK = quick_cases()
# Gradient checks use finite differences: keep the broken-engine runs to the short cases.
# (Wrapped cases have a double of their own: these doubles have no Bidirectional.)
SHORT = [c for c in QUICK if c.time <= 8 and c.layer != "SimpleRNN" and not c.wrapped]


def run_double(adapter, cases=SHORT, dtypes=("float64",), gaps=()):
    return conf.run([], cases, dtypes, runs=[runner.EngineRun(adapter, list(gaps))])


def failing_ids(rep):
    return {r.case.id for r in rep.failures}


def test_numpy_engine_passes_the_quick_grid():
    rep = conf.run(["numpy"], QUICK)
    assert rep.ok, report.failures(rep)
    assert rep.counts()["pass"] == 2 * len(QUICK)


def test_wrong_gru_reset_is_caught_exactly_where_it_differs():
    rep = run_double(ResetAfterGRU())
    wrong_family = {c.id for c in SHORT if c.layer == "GRU" and not c.reset_after}
    # With one unit, or one step from a zero state, the two GRU forms coincide.
    visible = {
        c.id
        for c in SHORT
        if c.id in wrong_family
        and c.units > 1
        and c.time > 1
        and c.mask == "none"
        and not c.dropout
        and not c.stateful  # the doubles run no stateful sequences
    }
    assert visible and visible <= failing_ids(rep) <= wrong_family
    assert {r.check for r in rep.failures} == {"forward", "gradients"}
    grads = [r for r in rep.results if r.check == "gradients" and r.status == "pass"]
    assert grads and all(r.max_rel < 1e-6 for r in grads)  # FD of the same function agrees


def test_forget_bias_off_by_one_is_caught():
    rep = run_double(ForgetBiasOffByOne())
    lstm = {c.id for c in SHORT if c.layer == "LSTM"}
    visible = {
        c.id
        for c in SHORT
        if c.layer == "LSTM" and c.time > 1 and c.mask == "none" and not c.stateful
    }
    assert visible and visible <= failing_ids(rep) <= lstm


def test_a_wrong_bidirectional_wrapper_is_caught_where_it_is_wrong():
    wrapped = [c for c in QUICK if c.wrapped]
    rep = run_double(BrokenBidirectional(), cases=wrapped, dtypes=("float64", "float32"))
    wrong = {c.id for c in wrapped if c.bidirectional == "mul"}
    wrong |= {c.id for c in wrapped if c.bidirectional == "none" and c.return_sequences}
    assert wrong and failing_ids(rep) == wrong
    assert {r.check for r in rep.results} == {"forward"}  # the wrapper's values only
    detail = {r.detail for r in rep.failures if r.case.bidirectional == "none"}
    assert detail == {"worst: output/backward"}


def test_every_failure_has_a_reproducer_that_runs():
    rep = run_double(ForgetBiasOffByOne(), cases=SHORT[:40])
    bad = rep.failures[0]
    assert bad.reproducer.startswith('python -c "import multirnn.conformance as c; c.reproduce(')
    # The reproducer names the engine; run the equivalent for a registered engine.
    line = runner.Result("numpy", "float32", bad.case, "forward", "pass").reproducer
    command = sys.executable + line[len("python") :]
    out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert bad.case.id in out.stdout and "forward    pass" in out.stdout


def test_engine_errors_are_failures_with_the_message():
    rep = run_double(Crashing(), cases=QUICK[:3])
    assert {r.status for r in rep.results} == {"error"}
    assert "RuntimeError: kaboom" in rep.results[0].detail
    assert not rep.ok


def test_known_gaps_turn_failures_into_xfail_and_report_unused_entries():
    gaps = known_gaps.parse(
        "GRU(*) float64 forward  # reset gate placement\n"
        "GRU(*) float64 gradients  # same\n"
        "GRU(*) float64 stateful  # same\n"
        "SimpleRNN(units=99)  # matches nothing\n",
        "gaps.txt",
    )
    rep = run_double(ResetAfterGRU(), gaps=gaps)
    assert rep.ok
    assert {r.status for r in rep.results if r.case.layer == "GRU"} <= {"xfail", "xpass", "skip"}
    assert [g.pattern for g in rep.unused_gaps] == ["SimpleRNN(units=99)"]
    assert "matches no case: gaps.txt:4" in report.summary(rep)


def test_known_gap_syntax_errors_name_the_line():
    with pytest.raises(ValueError, match="gaps.txt:2: unexpected 'float16'"):
        known_gaps.parse("LSTM(*)\nGRU(*) float16\n", "gaps.txt")


def test_reproducers_name_what_is_needed():
    case = QUICK[0]
    pair = runner.Result("numpy:torch", "float32", case, "pairwise", "fail")
    assert f"c.reproduce('numpy,torch', {case.id!r}, 'float32')" in pair.reproducer
    keras = runner.Result("keras", "float64", case, "forward", "fail", env="KERAS_BACKEND=jax")
    assert keras.reproducer.startswith('KERAS_BACKEND=jax python -c "')


def test_pairwise_float32_comparison():
    cases = [c for c in QUICK if c.layer == "LSTM"][:20]
    runs = [runner.EngineRun(conf.adapter("numpy"), []), runner.EngineRun(ForgetBiasOffByOne(), [])]
    rep = conf.run([], cases, ["float32"], runs=runs)
    pair = [r for r in rep.results if r.check == "pairwise"]
    assert pair and {r.engine for r in pair} == {"numpy:broken-lstm"}
    assert any(r.status == "fail" for r in pair)


def test_reports_render():
    rep = run_double(ForgetBiasOffByOne(), cases=SHORT[:30])
    text = report.table(rep)
    assert "LSTM/base" in text and "FAIL" in text
    data = json.loads(report.to_json(rep))
    assert data["ok"] is False and data["tolerances"]["float64/forward"] == 1e-9
    first_fail = next(r for r in data["results"] if r["status"] == "fail")
    assert first_fail["reproducer"] and first_fail["max_rel_error"] > first_fail["tolerance"]
    xml = ET.fromstring(report.to_junit(rep))
    assert int(xml.find("testsuite").get("failures")) == len(rep.failures)


def test_unknown_engine_names_the_choices():
    with pytest.raises(conf.adapters.engines.UnknownEngineError, match="Known engines"):
        conf.run(["nope"], QUICK[:1])
