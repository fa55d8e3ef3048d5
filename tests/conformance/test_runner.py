"""The suite can pass, can fail, and says exactly where."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pytest

import multirnn
import multirnn.conformance as conf
from multirnn.conformance import environment, known_gaps, report, runner
from multirnn.conformance.adapters import EngineAdapter
from multirnn.conformance.cases import quick_cases
from multirnn.conformance.oracle import results
from multirnn.reference import kernels

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
    # A softmax gate is blind to the bug: adding 1 to every unit of the forget gate's input
    # shifts the whole softmax argument, which softmax ignores.
    visible = {
        c.id
        for c in SHORT
        if c.layer == "LSTM"
        and c.time > 1
        and c.mask == "none"
        and not c.stateful
        and c.recurrent_activation != "softmax"
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
    with pytest.raises(known_gaps.KnownGapsError, match="gaps.txt:2: unexpected 'float8'"):
        known_gaps.parse("LSTM(*)\nGRU(*) float8\n", "gaps.txt")
    # a pattern without glob characters names one case, and must be its id as printed
    with pytest.raises(known_gaps.KnownGapsError, match="gaps.txt:1: 'LSTM' is neither a glob"):
        known_gaps.parse("LSTM  # every LSTM?\n", "gaps.txt")
    with pytest.raises(
        known_gaps.KnownGapsError,
        match=r"gaps.txt:2: 'LSTM\(units=3\)' would match nothing: that case's id is 'LSTM\(\)'",
    ):
        known_gaps.parse("GRU(*)\nLSTM(units=3)\n", "gaps.txt")
    with pytest.raises(known_gaps.KnownGapsError, match="gaps.txt:1: .* case field units must"):
        known_gaps.parse("LSTM(units=0) float32\n", "gaps.txt")


def test_known_gap_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(known_gaps.KnownGapsError, match="known-gap file '.*nope.txt' does not"):
        known_gaps.load(tmp_path / "nope.txt")
    with pytest.raises(known_gaps.KnownGapsError, match="is a directory"):
        known_gaps.load(tmp_path)
    (tmp_path / "latin1.txt").write_bytes(b"LSTM(*)  # caf\xe9\n")
    with pytest.raises(known_gaps.KnownGapsError, match="is not UTF-8 text"):
        known_gaps.load(tmp_path / "latin1.txt")


@pytest.mark.parametrize(
    "text,accepted,message",
    [
        ("", None, "--x needs at least one name, got ''"),
        (" , ", None, "--x needs at least one name"),
        ("numpy,,torch", None, "--x has an empty name in 'numpy,,torch'"),
        ("numpy,torch,numpy", None, "--x names 'numpy' twice"),
        ("float32,float16", ("float32", "float64"), "--x accepts float32, float64; got 'float16'"),
    ],
)
def test_name_lists_are_exact(text, accepted, message):
    with pytest.raises(runner.UsageError, match=message):
        runner.split_names(text, "--x", accepted)
    assert runner.split_names(" numpy , torch ", "--x") == ["numpy", "torch"]


def test_engines_are_checked_before_any_framework_is_imported(monkeypatch):
    from multirnn import engines

    with pytest.raises(engines.UnknownEngineError, match="'nope'.* Oracles: keras, torch.nn"):
        runner.prepare(["numpy", "nope"])
    monkeypatch.setenv("KERAS_BACKEND", "foo")
    runner.check_engines(["numpy"])  # only the keras oracle reads it
    if importlib.util.find_spec("keras") is None:  # the lite session: not installed, said so
        with pytest.raises(engines.EngineUnavailableError, match="needs keras"):
            runner.check_engines(["keras"])
        return
    with pytest.raises(runner.UsageError, match="KERAS_BACKEND='foo': the keras oracle runs on"):
        runner.check_engines(["keras"])


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


class ModalEngine(EngineAdapter):
    """A correct engine (the reference kernels) that computes float64 only in a mode it
    names, cannot express GRU, and reports its own device and framework version."""

    name = "modal"

    def supports(self, case, dtype):
        if dtype == "float64":
            return "float64 needs the 64-bit mode (MODAL_X64=1)"
        return "modal has no GRU" if case.layer == "GRU" else None

    def forward(self, spec, weights, inputs, **kw):
        return results(spec, *kernels.forward(spec, weights, inputs, **kw))

    def device(self):
        return "accelerator 0 (Modal-9000)"

    def versions(self):
        return {"modalframework": "1.2.3"}


PLAIN = [c for c in QUICK if not c.wrapped and not c.stateful and c.time <= 8]
PLAIN = [c for c in PLAIN if c.layer == "LSTM"][:6] + [c for c in PLAIN if c.layer == "GRU"][:4]


def run_with_modal(cases=PLAIN):
    runs = [runner.EngineRun(conf.adapter("numpy"), []), runner.EngineRun(ModalEngine(), [])]
    return conf.run([], cases, ["float32", "float64"], runs=runs)


def installed_frameworks():
    """The framework distributions installed here, by pip's names."""
    names = ("numpy", "torch", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "keras", "flax",
             "onnx", "onnxruntime")  # fmt: skip
    out = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def test_json_and_junit_record_versions_devices_and_modes():
    rep = run_with_modal()
    data = json.loads(report.to_json(rep))
    env = data["environment"]
    assert env["multirnn"] == multirnn.__version__ == data["multirnn"]
    assert env["python"] and env["platform"]
    frameworks = installed_frameworks()
    assert frameworks["numpy"] == np.__version__
    assert env["packages"].items() >= frameworks.items()  # every installed framework
    assert env["engines"]["numpy"] == {"device": "cpu", "versions": {"numpy": np.__version__}}
    assert env["engines"]["modal"] == {
        "device": "accelerator 0 (Modal-9000)",
        "versions": {"modalframework": "1.2.3"},
    }
    if "jax" in frameworks:  # the mode deciding whether JAX computes float64 at all
        assert isinstance(env["modes"]["jax_enable_x64"], bool)
    suites = ET.fromstring(report.to_junit(rep)).findall("testsuite")
    assert {s.get("name") for s in suites} == {"numpy", "modal", "numpy:modal"}
    for suite in suites:  # every suite carries them, for tools that read one suite
        props = {p.get("name"): p.get("value") for p in suite.find("properties")}
        assert props["multirnn"] == multirnn.__version__
        for name, version in frameworks.items():
            assert props[f"package.{name}"] == version
        assert props["engine.modal.device"] == "accelerator 0 (Modal-9000)"
        assert props["engine.modal.version.modalframework"] == "1.2.3"
        assert props["engine.numpy.device"] == "cpu"
        assert props["reference_only"] == "false"


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_jax_mode_and_device_come_from_jax_once_it_is_imported():
    import jax

    env = environment.collect([conf.adapter("jax")])
    assert env["modes"]["jax_enable_x64"] is bool(jax.config.jax_enable_x64)
    assert env["engines"]["jax"]["device"].startswith(jax.default_backend())  # cpu, gpu (...)
    assert env["engines"]["jax"]["versions"]["jaxlib"] == importlib.metadata.version("jaxlib")


class Float32Only(ModalEngine):
    name = "half"
    dtypes = ("float32",)

    def supports(self, case, dtype):
        return None


def test_skipped_groups_are_summarised_with_how_to_run_them():
    runs = [runner.EngineRun(ModalEngine(), []), runner.EngineRun(Float32Only(), [])]
    rep = conf.run([], PLAIN, ["float32", "float64"], runs=runs)
    n, gru = len(PLAIN), sum(c.layer == "GRU" for c in PLAIN)
    assert 0 < gru < n
    lines = report.closing(rep).splitlines()
    assert lines[: lines.index(f"compared with the NumPy reference on {n} cases:")] == [
        f"SKIPPED: modal float64, {n} of {n} cases: float64 needs the 64-bit mode (MODAL_X64=1); "
        "to run them, set MODAL_X64=1 and run again",
        f"SKIPPED: half float64, all {n} cases (nothing ran): half does not support float64",
        "skipped, as the engine cannot express them (each reason: --json):",
        f"  modal   {gru} of {n} cases in float32: modal has no GRU",
    ]
    data = json.loads(report.to_json(rep))
    assert sorted(data["skipped"], key=lambda g: (g["engine"], g["dtype"])) == [
        {"engine": "half", "dtype": "float64", "reason": "half does not support float64",
         "cases": n, "of": n, "enable": None, "whole": True},
        {"engine": "modal", "dtype": "float32", "reason": "modal has no GRU", "cases": gru,
         "of": n, "enable": None, "whole": False},
        {"engine": "modal", "dtype": "float64",
         "reason": "float64 needs the 64-bit mode (MODAL_X64=1)", "cases": n, "of": n,
         "enable": "set MODAL_X64=1 and run again", "whole": True},
    ]  # fmt: skip


def test_many_skip_reasons_stay_a_few_lines():
    groups = [
        {"engine": "peer", "dtype": d, "reason": f"peer lacks activation {i}",
         "cases": 1 + (i == 7), "of": 50, "enable": None, "whole": False}
        for d in ("float32", "float64") for i in range(30)
    ] + [
        {"engine": "peer", "dtype": "float16", "reason": r, "cases": c, "of": 50,
         "enable": None, "whole": True}
        for r, c in (("no float16 kernels " + "x" * 200, 40), ("no masks", 6), ("no state", 4))
    ]  # fmt: skip
    lines = report.skipped_lines(groups)
    assert len(lines) == 3
    assert lines[0].startswith("SKIPPED: peer float16, all 50 cases (nothing ran): 40 of them: "
                               "no float16 kernels xxx")  # fmt: skip
    assert lines[0].endswith("...; 10 for 2 other reasons") and len(lines[0]) < 200
    assert lines[2] == (
        "  peer    31 of 50 cases in float32, float64: 30 reasons, most often: peer lacks "
        "activation 7"
    )


def test_closing_lines_say_what_was_compared_with_what():
    rep = run_with_modal()
    n, ran = len(PLAIN), sum(c.layer != "GRU" for c in PLAIN)
    text = report.closing(rep)
    compared = text[text.index("compared with the NumPy reference") :].splitlines()
    assert compared == [
        f"compared with the NumPy reference on {n} cases:",
        "  numpy   float32, float64  (the reference against itself)",
        f"  modal   float32 ({ran} of {n} cases); float64 skipped (see above)",
        "  float32 results pairwise: numpy:modal",
    ]
    assert "NOTE" not in text and not rep.reference_only
    data = json.loads(report.to_json(rep))
    assert data["compared"] == {"numpy": {"float32": n, "float64": n}, "modal": {"float32": ran}}
    assert data["pairwise"] == ["numpy:modal"] and data["reference_only"] is False


def test_a_reference_only_run_says_it_compared_the_reference_with_itself():
    rep = conf.run(["numpy"], PLAIN[:2])
    assert rep.reference_only and json.loads(report.to_json(rep))["reference_only"] is True
    alone = report.closing(rep, installed=["numpy"])
    assert "only the NumPy reference ran, so it was compared with itself" in alone
    assert 'python -m pip install -c constraints.txt ".[jax]"' in alone
    assert "pip install multirnn" not in alone and "'multirnn[" not in alone  # not on PyPI
    assert alone.endswith("Then run it again: multirnn conformance")
    more = report.closing(rep, installed=["numpy", "torch", "keras"])
    assert "compared with itself" in more and "pip install" not in more
    assert "Installed but not in this run: torch, keras" in more


def test_worker_processes_give_the_results_of_one_process_in_its_order():
    cases = [c for c in quick_cases() if c.family.startswith("GRU/")][:6]
    alone = runner.run(["numpy"], cases, workers=1)
    shared = runner.run(["numpy"], cases, workers=2)
    assert [(r.engine, r.dtype, r.case.id, r.check, r.status) for r in shared.results] == [
        (r.engine, r.dtype, r.case.id, r.check, r.status) for r in alone.results
    ]
    assert [r.max_rel for r in shared.results] == [r.max_rel for r in alone.results]
    assert set(shared.engine_seconds) == {"numpy"}


@pytest.mark.parametrize("given", ["0", "-2", "many"])
def test_workers_option_refuses_what_is_not_a_count(given, capsys):
    from multirnn import cli

    assert cli.main(["conformance", "--engines", "numpy", "--workers", given]) == 2
    assert f"--workers takes a number >= 1 or auto, got {given!r}" in capsys.readouterr().err
