"""The suite as users run it: ``multirnn conformance`` and ``pytest --pyargs``, with a
third-party engine registered by entry point."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

import multirnn
from multirnn import cli, engines
from multirnn.conformance import adapters, runner
from multirnn.conformance.cases import quick_cases

from .. import plugins

BROKEN_ENGINE = """
from multirnn.engines import EngineInfo
from multirnn.reference import layers as _ref
from multirnn.reference.testing import NumpyAdapter

ENGINE = EngineInfo(name="offbyone", module="offbyone_engine", testing="offbyone_engine",
                    priority=-200)


class Recurrent(_ref.Recurrent):
    engine_name = "offbyone"


class SimpleRNN(Recurrent, _ref.SimpleRNN):
    pass


class LSTM(Recurrent, _ref.LSTM):
    def set_weights(self, weights):
        super().set_weights(weights)
        if self.spec.use_bias:  # the bug: the forget block of the bias is off by one
            self._weights[2][self.units : 2 * self.units] += 1.0


class GRU(Recurrent, _ref.GRU):
    pass


class Adapter(NumpyAdapter):
    name = "offbyone"


ADAPTER = Adapter
"""


MODAL_ENGINE = """
from multirnn.engines import EngineInfo
from multirnn.reference import layers as _ref
from multirnn.reference.testing import NumpyAdapter

ENGINE = EngineInfo(name="modal", module="modal_engine", testing="modal_engine", priority=-200)


class Recurrent(_ref.Recurrent):
    engine_name = "modal"


class SimpleRNN(Recurrent, _ref.SimpleRNN):
    pass


class LSTM(Recurrent, _ref.LSTM):
    pass


class GRU(Recurrent, _ref.GRU):
    pass


class Adapter(NumpyAdapter):
    name = "modal"

    def supports(self, case, dtype):
        return "float64 needs the 64-bit mode (MODAL_X64=1)" if dtype == "float64" else None

    def device(self):
        return "accelerator 0"


ADAPTER = Adapter
"""


@pytest.fixture
def modal_engine(tmp_path):
    """A correct engine that computes float64 only in a mode it names."""
    return plugins.write_plugin(
        tmp_path, "modal_engine", MODAL_ENGINE, "[multirnn.backends]\nmodal = modal_engine:ENGINE\n"
    )


@pytest.fixture
def broken_engine(tmp_path):
    return plugins.write_plugin(
        tmp_path,
        "offbyone_engine",
        BROKEN_ENGINE,
        "[multirnn.backends]\noffbyone = offbyone_engine:ENGINE\n",
    )


def flat(text: str) -> str:
    """``text`` with its wrapped lines joined (the terminal report fits 100 columns)."""
    return " ".join(text.split())


def test_cli_passes_on_numpy_and_writes_reports(tmp_path, capsys):
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    code = cli.main(
        [
            "conformance",
            "--engines",
            "numpy",
            "--no-progress",
            "--json",
            str(out_json),
            "--junit",
            str(out_xml),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "tolerance policy" in text and "LSTM/mask" not in text  # the wide table: --table
    assert "expected time: about" in text
    summary = text[text.index("engine  dtype") :].splitlines()
    assert summary[1].split()[:4] == ["numpy", "float32", str(len(quick_cases())), "0"]
    assert max(len(line) for line in text.splitlines()) <= 100
    lines = text.splitlines()
    assert lines[0].startswith("multirnn conformance (quick): engines numpy;")
    assert lines[1].startswith(f"multirnn {multirnn.__version__}, Python ")
    assert f"numpy {np.__version__}" in lines[2] and "devices: numpy cpu" in lines[3:5]
    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["reference_only"] is True
    assert set(data["engine_seconds"]) == {"numpy"}
    assert data["environment"]["multirnn"] == multirnn.__version__
    assert data["environment"]["packages"]["numpy"] == np.__version__
    assert data["environment"]["engines"]["numpy"]["device"] == "cpu"
    xml = ET.fromstring(out_xml.read_text())
    props = {p.get("name"): p.get("value") for p in xml.find("testsuite").find("properties")}
    assert props["multirnn"] == multirnn.__version__
    assert props["package.numpy"] == np.__version__ and props["engine.numpy.device"] == "cpu"
    # the last lines: what was compared with what, and that this was the reference alone
    closing = text[text.index("compared with the NumPy reference") :].splitlines()
    assert closing[:3] == [
        f"compared with the NumPy reference on {len(quick_cases())} cases:",
        "  numpy   float32, float64  (the reference against itself)",
        "NOTE: only the NumPy reference ran, so it was compared with itself: its float64",
    ]


def test_with_only_the_reference_installed_the_run_says_so_and_how_to_add_an_engine(
    monkeypatch, capsys
):
    monkeypatch.setattr(engines, "available", lambda: ["numpy"])
    monkeypatch.setattr(adapters, "installed_oracles", list)
    assert cli.main(["conformance", "--case", "LSTM()", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("multirnn conformance (cases given): engines numpy; 1 cases")
    assert text.rstrip().splitlines()[-8:] == [
        "compared with the NumPy reference on 1 case:",
        "  numpy   float32, float64  (the reference against itself)",
        "NOTE: only the NumPy reference ran, so it was compared with itself: its float64",
        "  results agree by construction (0.0e+00) and float32 measures only its own rounding.",
        "  No framework engine (PyTorch, JAX, TensorFlow) was checked.",
        "  No other engine is installed. To add one, run this in a checkout of multirnn:",
        '    python -m pip install -c constraints.txt ".[jax]"    (or ".[tensorflow]", '
        '".[torch]", ".[all]")',
        "  docs/installing.md covers PyTorch's CPU-only build. Then run it again: "
        "multirnn conformance",
    ]
    assert "pip install multirnn" not in text and "'multirnn[" not in text  # not on PyPI


def test_skipped_groups_are_loud_on_the_command_line_and_in_pytest(modal_engine, tmp_path):
    report = tmp_path / "modal.json"
    cases = ["LSTM()", "GRU(mask=arbitrary)", "SimpleRNN()"]
    args = ["-m", "multirnn.cli", "conformance", "--engines", "modal,numpy", "--no-progress"]
    args += [f"--case={c}" for c in cases] + ["--json", str(report)]
    cli_run = plugins.run(args, modal_engine)
    assert cli_run.returncode == 0, cli_run.stderr
    out = cli_run.stdout
    assert "devices: modal accelerator 0, numpy cpu" in out
    loud = (
        "SKIPPED: modal float64, 3 of 3 cases: float64 needs the 64-bit mode (MODAL_X64=1); "
        "to run them, set MODAL_X64=1 and run again"
    )
    assert loud in flat(out)  # the terminal report wraps at 100 columns
    assert out.rstrip().splitlines()[-4:] == [
        "compared with the NumPy reference on 3 cases:",
        "  modal   float32; float64 skipped (see above)",
        "  numpy   float32, float64  (the reference against itself)",
        "  float32 results pairwise: modal:numpy",
    ]
    data = json.loads(report.read_text())
    assert data["skipped"][0]["enable"] == "set MODAL_X64=1 and run again"
    assert data["environment"]["engines"]["modal"]["device"] == "accelerator 0"
    # the same suite in pytest, spread over two workers: the skips stay skips, but visible
    selection = "LSTM and mask and not bidirectional"
    run = plugins.run(
        ["-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--pyargs",
         "multirnn.conformance", "-k", selection, "-rN"],
        modal_engine,
        {"MULTIRNN_CONFORMANCE_ENGINES": "modal"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    passed, skipped = map(int, re.search(r"(\d+) passed, (\d+) skipped in", run.stdout).groups())
    assert passed == skipped > 0  # float32 ran, float64 skipped
    assert f"multirnn conformance: multirnn {multirnn.__version__}" in run.stdout  # header
    summary = run.stdout[run.stdout.index("= multirnn conformance =") :]
    assert "devices: modal accelerator 0" in summary
    assert (
        f"SKIPPED: modal float64, {skipped} of {skipped} cases: float64 needs the 64-bit mode "
        "(MODAL_X64=1); to run them, set MODAL_X64=1 and run again"
    ) in summary
    assert "  modal   float32; float64 skipped (see above)" in summary


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_jax_float64_without_x64_is_a_loud_skip():
    run = plugins.run(
        ["-m", "multirnn.cli", "conformance", "--engines", "jax", "--case", "LSTM()",
         "--no-progress"],
        env_extra={"JAX_ENABLE_X64": "0"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "modes: jax_enable_x64 off" in run.stdout
    assert (
        "SKIPPED: jax float64, 1 of 1 case: float64 needs JAX's 64-bit mode (JAX_ENABLE_X64=1); "
        "to run them, set JAX_ENABLE_X64=1 and run again"
    ) in flat(run.stdout)
    assert run.stdout.rstrip().endswith("  jax     float32; float64 skipped (see above)")


def test_cli_single_case_and_bad_arguments(capsys):
    assert (
        cli.main(
            ["conformance", "--engines", "numpy", "--case", "GRU(mask=arbitrary)", "--no-progress"]
        )
        == 0
    )
    assert "1 cases" in capsys.readouterr().out
    assert cli.main(["conformance", "--engines", "numpy", "--case", "GRU(mask=maybe)"]) == 2
    assert cli.main(["conformance", "--engines", "numpy", "--dtype", "float8"]) == 2
    assert cli.main(["conformance", "--engines", "nope"]) == 2
    assert "unknown multirnn engine 'nope'" in capsys.readouterr().err


@pytest.fixture
def nothing_runs(monkeypatch):
    """A usage error must stop the command before any case runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("a case ran")

    monkeypatch.setattr(runner, "check_case", refuse)


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


USAGE_ERRORS = [
    # --case: each of these ran (dropout=2.0 as dropout=True) or ended in a traceback
    (
        ["--case", "LSTM(units=0)"],
        "--case 'LSTM(units=0)': case field units must be a positive integer, got 0",
    ),
    (
        ["--case", "LSTM(units=two)"],
        "--case 'LSTM(units=two)': case field units must be a positive integer, got 'two'",
    ),
    (
        ["--case", "Foo()"],
        "--case 'Foo()': unknown layer 'Foo'; a case is SimpleRNN(...), LSTM(...), GRU(...)",
    ),
    (
        ["--case", "LSTM(go_backwards=maybe)"],
        "--case 'LSTM(go_backwards=maybe)': case field go_backwards must be True or False, got "
        "'maybe'",
    ),
    (
        ["--case", "LSTM(dropout=2.0)"],
        "--case 'LSTM(dropout=2.0)': case field dropout must be True or False (True: explicit "
        "dropout masks at both rates 0.5), got '2.0'",
    ),
    (
        ["--case", "LSTM(activation=foo)"],
        "--case 'LSTM(activation=foo)': LSTM: unknown activation 'foo'. Accepted: tanh,",
    ),
    (["--case", "LSTM(colour=red)"], "--case 'LSTM(colour=red)': unknown case field 'colour'"),
    (
        ["--case", "LSTM()", "--case", "LSTM(units=3)"],
        "--case 'LSTM(units=3)' is the same case as --case 'LSTM()'",
    ),
    # engines and dtypes
    (["--engines", "nope"], "unknown multirnn engine 'nope'."),
    (["--engines", "numpy,,numpy"], "--engines has an empty name in 'numpy,,numpy'"),
    (["--engines", "numpy,numpy"], "--engines names 'numpy' twice"),
    (["--engines", ""], "--engines needs at least one name, got ''"),
    (["--dtype", "float8"], "--dtype accepts float32, float64, bfloat16, float16; got 'float8'"),
    (["--dtype", "float64,float64"], "--dtype names 'float64' twice"),
    # Hypothesis settings: a traceback from Hypothesis, or silently ignored without --full
    (["--full", "--count", "-3"], "argument --count: must be a positive integer, got '-3'"),
    (["--full", "--count", "x"], "argument --count: must be a positive integer, got 'x'"),
    (["--full", "--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    (["--count", "5"], "--count applies to --full only; add --full or leave --count out"),
    (["--seed", "5"], "--seed applies to --full only; add --full or leave --seed out"),
    # known-gap files: a traceback
    (
        ["--known-gaps", "{tmp}/none.txt"],
        "--known-gaps: known-gap file '{tmp}/none.txt' does not exist",
    ),
    (["--known-gaps", "{tmp}"], "--known-gaps: known-gap file '{tmp}' is a directory"),
    (
        ["--known-gaps", "{tmp}/gaps.txt"],
        "--known-gaps: {tmp}/gaps.txt:2: unexpected 'float8'; an entry is '<pattern> ",
    ),
    # the keras oracle's backend: a traceback from Keras after the header
    (
        ["--keras-backend", "foo"],
        "argument --keras-backend: invalid choice: 'foo' (choose from 'tensorflow', 'jax', "
        "'torch')",
    ),
    (
        ["--keras-backend", "jax"],
        "--keras-backend sets the backend of the keras oracle, which is not in this run "
        "(engines: numpy)",
    ),
    # reports: a traceback after the whole run, its results lost
    (
        ["--json", "{tmp}/missing/r.json"],
        "--json '{tmp}/missing/r.json': the directory '{tmp}/missing' does not exist",
    ),
    (
        ["--junit", "{tmp}/gaps.txt/r.xml"],
        "--junit '{tmp}/gaps.txt/r.xml': the directory '{tmp}/gaps.txt' is not a directory",
    ),
    (["--json", "{tmp}"], "--json '{tmp}' is a directory; give a file name"),
    (["--json", "{tmp}/r", "--junit", "{tmp}/r"], "--json and --junit name the same file"),
    # a report requested, then an engine refused: the report's temporary file goes too
    (["--engines", "numpy,nope", "--json", "{tmp}/r.json"], "unknown multirnn engine 'nope'."),
]


@pytest.mark.parametrize("argv,message", USAGE_ERRORS)
def test_usage_errors_exit_2_with_one_line_before_any_case_runs(
    argv, message, tmp_path, capsys, nothing_runs
):
    tmp = str(Path(os.path.realpath(tmp_path)))
    (tmp_path / "gaps.txt").write_text("LSTM(*)  # fine\nGRU(*) float8\n")
    before = sorted(tmp_path.iterdir())
    argv = [a.format(tmp=tmp) for a in argv]
    if "--engines" not in argv:
        argv = ["--engines", "numpy", *argv]
    assert cli.main(["conformance", "--no-progress", *argv]) == 2
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("multirnn conformance: " + message.format(tmp=tmp)), line
    assert captured.out == ""  # not even the header: nothing ran
    assert sorted(tmp_path.iterdir()) == before  # no report, no temporary file


def test_ctrl_c_exits_130_and_writes_no_report(tmp_path, capsys, monkeypatch):
    calls = []
    check_case = runner.check_case

    def interrupted_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args)
        return check_case(*args, **kwargs)

    monkeypatch.setattr(runner, "check_case", interrupted_after_three)
    reports = ["--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")]
    assert cli.main(["conformance", "--engines", "numpy", "--no-progress", *reports]) == 130
    captured = capsys.readouterr()
    total = 2 * len(quick_cases())
    assert captured.err == (
        f"multirnn conformance: interrupted after 3 of {total} checks; no report written\n"
    )
    assert captured.out.startswith("multirnn conformance (quick)") and "family" not in captured.out
    assert list(tmp_path.iterdir()) == []  # neither the reports nor their temporary files


def test_ctrl_c_while_the_engines_load(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "prepare", interrupted)
    assert cli.main(["conformance", "--engines", "numpy", "--case", "LSTM()"]) == 130
    assert capsys.readouterr().err == "multirnn conformance: interrupted before any check ran\n"


def test_sigint_during_a_run_exits_130_with_one_line_and_no_report(tmp_path):
    env = dict(os.environ)
    env.pop(engines.ENV_VAR, None)
    # each check slowed down, so that the run is still going when the signal arrives
    slow = ("import sys, time\n"
            "from multirnn import cli\n"
            "from multirnn.conformance import runner\n"
            "check = runner.check_case\n"
            "runner.check_case = lambda *a, **k: (time.sleep(0.01), check(*a, **k))[1]\n"
            "sys.exit(cli.main(sys.argv[1:]))")  # fmt: skip
    command = [sys.executable, "-u", "-c", slow, "conformance", "--engines", "numpy",
               "--json", "r.json", "--junit", "r.xml"]  # fmt: skip
    # pytest-xdist's workers ignore SIGINT, and a child would inherit that: restore it
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        first = proc.stderr.readline()  # the progress bar's first line: a check has run
        assert re.match(r"\[[#.]+\] \d+/\d+ numpy", first), first
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert re.fullmatch(
        r"multirnn conformance: interrupted after \d+ of \d+ checks; no report written",
        err.splitlines()[-1],
    )
    assert list(tmp_path.iterdir()) == []


class Options:
    """A pytest config holding the plugin's options."""

    def __init__(self, **given):
        self.given = {
            "--multirnn-engines": None,
            "--multirnn-dtypes": "float32,float64",
            "--multirnn-full": False,
            "--multirnn-count": None,
            "--multirnn-known-gaps": [],
        }
        self.given.update({"--multirnn-" + k.replace("_", "-"): v for k, v in given.items()})

    def getoption(self, name):
        return self.given[name]


@pytest.mark.parametrize(
    "options,message",
    [
        ({"engines": "numpy,,torch"}, "--multirnn-engines has an empty name in 'numpy,,torch'"),
        ({"engines": "numpy,numpy"}, "--multirnn-engines names 'numpy' twice"),
        ({"engines": "nope"}, "--multirnn-engines: unknown multirnn engine 'nope'."),
        (
            {"dtypes": "float8"},
            "--multirnn-dtypes accepts float32, float64, bfloat16, float16; got 'float8'",
        ),
        ({"dtypes": ","}, "--multirnn-dtypes needs at least one name"),
        ({"count": 5}, "--multirnn-count applies to --multirnn-full only"),
        ({"full": True, "count": 0}, "--multirnn-count must be a positive integer, got 0"),
        (
            {"known_gaps": ["{tmp}/none.txt"]},
            "--multirnn-known-gaps: known-gap file '{tmp}/none.txt' does not exist",
        ),
    ],
)
def test_pytest_plugin_options_are_checked(options, message, tmp_path):
    from multirnn.conformance import plugin

    options = {"engines": "numpy", **options}
    if "known_gaps" in options:
        options["known_gaps"] = [p.format(tmp=tmp_path) for p in options["known_gaps"]]
    with pytest.raises(pytest.UsageError) as info:
        plugin.selection(Options(**options))
    assert str(info.value).startswith("multirnn conformance: " + message.format(tmp=tmp_path))
    chosen = plugin.selection(Options(engines="numpy", dtypes="float64"))
    assert chosen["names"] == ["numpy"] and chosen["dtypes"] == ["float64"]


def test_pytest_plugin_usage_errors_stop_pytest_with_one_line():
    for args, message in [
        (["--multirnn-engines=numpy", "--multirnn-dtypes=float8"],
         "ERROR: multirnn conformance: --multirnn-dtypes accepts float32, float64, bfloat16, "
         "float16; got 'float8'"),
        ([], "ERROR: multirnn conformance: no engine selected."),  # at collection
    ]:  # fmt: skip
        run = plugins.run(
            ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "multirnn.conformance",
             *args]
        )  # fmt: skip
        text = run.stdout + run.stderr
        assert run.returncode == 4, text  # pytest's usage error
        assert message in text and "Traceback" not in text and "conftest.py" not in text


def test_registered_third_party_engine_is_checked_by_name(broken_engine):
    result = plugins.run(
        [
            "-m",
            "multirnn.cli",
            "conformance",
            "--engines",
            "offbyone",
            "--dtype",
            "float64",
            "--no-progress",
        ],
        broken_engine,
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL offbyone float64 forward: max rel" in result.stdout
    assert "  case LSTM()\n" in result.stdout
    assert "c.reproduce('offbyone', 'LSTM()', 'float64')" in result.stdout
    assert "  case GRU" not in result.stdout


def test_pytest_integration(broken_engine):
    ok = plugins.run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "multirnn.conformance",
            "--multirnn-engines",
            "numpy",
            "--multirnn-dtypes",
            "float32",
        ]
    )
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert f"{len(quick_cases())} passed" in ok.stdout  # one per case; no pairwise alone
    summary = ok.stdout[ok.stdout.index("= multirnn conformance =") :]
    assert f"compared with the NumPy reference on {len(quick_cases())} cases:" in summary
    assert "only the NumPy reference ran, so it was compared with itself" in summary
    none = plugins.run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "multirnn.conformance"]
    )
    assert none.returncode == 4 and "no engine selected" in none.stdout + none.stderr
    broken = plugins.run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "multirnn.conformance",
            "--multirnn-dtypes",
            "float64",
            "-k",
            "LSTM",
        ],
        broken_engine,
        {"MULTIRNN_CONFORMANCE_ENGINES": "offbyone"},
    )
    assert broken.returncode == 1
    assert "reproduce: python -c" in broken.stdout


@pytest.mark.skipif(
    not (importlib.util.find_spec("keras") and importlib.util.find_spec("tensorflow")),
    reason="the Keras cross-check needs keras and tensorflow (nox -s tests installs them)",
)
def test_keras_agrees_with_the_reference(tmp_path):
    """The independent second oracle: Keras 3 on TensorFlow, on every case it can express."""
    report = tmp_path / "keras.json"
    result = plugins.run(
        [
            "-m",
            "multirnn.cli",
            "conformance",
            "--engines",
            "keras",
            "--keras-backend",
            "tensorflow",
            "--no-progress",
            "--json",
            str(report),
        ],
        env_extra={"TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    data = json.loads(report.read_text())
    skipped = [r for r in data["results"] if r["status"] == "skip"]
    assert all("dropout=True" in r["case"] for r in skipped)
    ran = sum(data["counts"].get(k, 0) for k in ("pass", "xfail", "xpass"))
    assert ran == 2 * len(quick_cases()) - len(skipped)  # every other case-dtype ran


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="needs /dev/stdout")
def test_json_to_dev_stdout_keeps_the_printed_lines_when_redirected_or_piped(tmp_path):
    # written directly, appended: replacing the file the shell redirected stdout to (or
    # resolving /dev/stdout to a pipe's /proc path) lost either the table or the report
    env = {k: v for k, v in os.environ.items() if k != engines.ENV_VAR}
    command = [sys.executable, "-m", "multirnn.cli", "conformance", "--engines", "numpy",
               "--case", "LSTM()", "--json", "/dev/stdout", "--no-progress"]  # fmt: skip
    out = tmp_path / "out.txt"
    with open(out, "w") as stream:
        assert subprocess.run(command, stdout=stream, env=env, timeout=120).returncode == 0
    text = out.read_text()
    assert "compared with the NumPy reference" in text and '"environment"' in text
    piped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert piped.returncode == 0 and '"environment"' in piped.stdout, piped.stderr


def test_cell_without_array_api_strict_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_strict", None)  # as if not installed
    assert cli.main(["conformance", "--cell", "mycells:Leaky"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("multirnn conformance: --cell first runs the cell's step")
    assert "pip install array-api-strict" in err and '".[cells]"' in err


#: a user's cell, in a file of the directory the command runs in
USER_CELL = """
import multirnn

class Leaky(multirnn.Cell):
    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))

    def step(self, ops, w, x, states):
        (h,) = states
        h = 0.5 * h + 0.5 * ops.tanh(x @ w["kernel"])
        return h, [h]
"""


def test_cell_module_is_imported_from_the_working_directory(tmp_path):
    """As the installed command runs: its own directory, not the working one, first on
    sys.path (-I: neither the working directory nor PYTHONPATH are on it)."""
    pytest.importorskip("array_api_strict")
    (tmp_path / "usercells_here.py").write_text(USER_CELL)
    env = {k: v for k, v in os.environ.items() if k != engines.ENV_VAR}
    code = "import sys; from multirnn.cli import main; sys.exit(main())"
    command = [sys.executable, "-I", "-c", code, "conformance", "--cell", "usercells_here:Leaky",
               "--engines", "numpy"]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("cell Leaky(3 units): ")


def test_cell_whose_constructor_raises_is_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("array_api_strict")
    (tmp_path / "usercells_broken.py").write_text(
        "import multirnn\n"
        "class Broken(multirnn.Cell):\n"
        "    def __init__(self, units, **kwargs):\n"
        "        raise RuntimeError('no weights today')\n"
        "def factory():\n"
        "    return {}['cell']\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts tmp_path on it
    monkeypatch.delitem(sys.modules, "usercells_broken", raising=False)
    for name, why in (("Broken", "RuntimeError: no weights today"), ("factory", "KeyError")):
        assert cli.main(["conformance", "--cell", f"usercells_broken:{name}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(
            f"multirnn conformance: --cell 'usercells_broken:{name}': making the cell raised {why}"
        )


def test_table_prints_the_families_and_a_failure_stays_within_100_columns(capsys, monkeypatch):
    assert cli.main(["conformance", "--engines", "numpy", "--no-progress", "--table",
                     "--case", "LSTM()"]) == 0  # fmt: skip
    assert "family  numpy 32    numpy 64" in capsys.readouterr().out
    from multirnn.conformance import report as rep
    from multirnn.conformance import runner

    long_case = max(quick_cases(), key=lambda c: len(c.id))
    failed = runner.Result("torch", "float32", long_case, "forward", "fail", 0.5, 0.5, 1e-5,
                           "output differs")  # fmt: skip
    text = rep.failures(runner.Report([failed], ["torch"], ["float32"], [long_case], [], 1.0))
    for line in text.splitlines():  # only the copy-paste command may be longer
        assert len(line) <= 100 or line.startswith("  reproduce: "), line
    assert "reset_after=True" in text


def test_the_cell_checks_take_float32_and_float64_only(capsys):
    pytest.importorskip("array_api_strict")
    argv = ["conformance", "--cell", "multirnn:LSTMCell", "--engines", "numpy"]
    assert cli.main([*argv, "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "--dtype accepts float32, float64; got 'bfloat16'" in err
