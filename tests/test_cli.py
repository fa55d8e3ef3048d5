from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from multirnn import cli, engines


def test_info_lists_engines(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    selected = engines.backend()
    assert f"* {selected}" in out and f"selected engine: {selected}" in out
    assert re.search(r"numpy +installed \(\d", out)


def test_demo_runs_every_layer(capsys):
    assert cli.main(["demo", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for layer in ("SimpleRNN(4", "LSTM(4", "GRU(4, reset_after=True"):
        assert layer in out
    assert "all documented layers ran" in out


def test_unknown_engine_is_a_clean_error(capsys, monkeypatch):
    assert cli.main(["demo", "--backend", "nope"]) == 2
    assert capsys.readouterr().err.startswith("multirnn demo: unknown multirnn engine 'nope'")
    monkeypatch.setenv(engines.ENV_VAR, "nope")
    assert cli.main(["info"]) == 0
    assert "selection error: unknown multirnn engine 'nope'" in capsys.readouterr().out


def one_line(err: str) -> str:
    """The single line a usage error prints on stderr (never a traceback)."""
    assert "Traceback" not in err and err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "multirnn: the following arguments are required: command (see multirnn --help)"),
        (["nope"], "multirnn: argument command: invalid choice: 'nope'"),
        (["info", "extra"], "multirnn: unrecognized arguments: extra"),
        (["demo", "--backend", "nope"], "multirnn demo: unknown multirnn engine 'nope'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith(message) and captured.out == ""


@pytest.fixture
def no_bench_run(monkeypatch):
    """A usage error must stop bench before it measures anything."""
    from multirnn.bench import harness

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(harness, "run", refuse)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--rounds", "0"], "argument --rounds: must be a positive integer, got '0'"),
        (["--rounds", "two"], "argument --rounds: must be a positive integer, got 'two'"),
        (["--engines", "nope"], "--engines: unknown engine 'nope'; engines: numpy"),
        (["--engines", "numpy+xla"], "--engines: engine 'numpy' has no benchmark variant 'xla'"),
        (["--engines", "numpy,,numpy"], "--engines has an empty name in 'numpy,,numpy'"),
        (["--engines", "numpy,numpy"], "--engines names 'numpy' twice"),
        (["--peers", "pytorch"], "--peers accepts torch.nn, keras:tensorflow,"),
        (["--layers", "transformer"], "--layers accepts lstm, gru, simple_rnn; got 'transformer'"),
        (["--layers", "lstm,lstm"], "--layers names 'lstm' twice"),
        (["--smoke", "--full"], "argument --full: not allowed with argument --smoke"),
        (["--from-json", "{tmp}/none.json"], "--from-json '{tmp}/none.json' does not exist"),
        (["--from-json", "{tmp}/bad.json"], "--from-json '{tmp}/bad.json' is not JSON"),
        (["--from-json", "{tmp}/list.json"], "--from-json '{tmp}/list.json' is not a record"),
        (
            ["--from-json", "{tmp}/list.json", "--layers", "lstm"],
            "--from-json renders a saved record; --layers is for a new run",
        ),
        (["--json", "{tmp}/missing/b.json"], "--json '{tmp}/missing/b.json': the directory"),
        (["--json", "{tmp}"], "--json '{tmp}' is a directory; give a file name"),
        (["--report", "{tmp}/bad.json/r.md"], "--report '{tmp}/bad.json/r.md': the directory"),
        (["--plot", "{tmp}/bad.json"], "--plot '{tmp}/bad.json' is not a directory"),
    ],
)
def test_bench_usage_errors_exit_2_before_anything_runs(
    argv, message, tmp_path, capsys, no_bench_run
):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "list.json").write_text("[]")
    before = sorted(tmp_path.iterdir())
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith("multirnn bench: " + message.format(tmp=tmp_path))
    assert captured.out == "" and sorted(tmp_path.iterdir()) == before


def test_bench_interrupted_writes_nothing(tmp_path, capsys, monkeypatch):
    from multirnn.bench import harness

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "run", interrupted)
    argv = ["bench", "--engines", "numpy", "--json", str(tmp_path / "b.json")]
    assert cli.main([*argv, "--report", str(tmp_path / "b.md")]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "multirnn bench: interrupted; no record written"
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_interrupted_commands_exit_130_with_one_line(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(engines, "describe", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err == "multirnn info: interrupted\n"


def test_output_files_appear_whole_or_not_at_all(tmp_path):
    target = tmp_path / "report.json"
    out = cli.Output("--json", str(target))
    temporary = [p for p in tmp_path.iterdir()]
    assert len(temporary) == 1 and temporary[0].name.startswith(".report.json.")
    out.write("{}")
    assert target.read_text() == "{}" and list(tmp_path.iterdir()) == [target]
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    dropped = cli.Output("--json", str(tmp_path / "dropped.json"))
    dropped.discard()
    assert list(tmp_path.iterdir()) == [target]
    cli.Output("--json", "/dev/null").write("{}")  # a device is written, never replaced
    assert Path("/dev/null").is_char_device()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_info_says_when_the_selection_is_unset(monkeypatch, capsys):
    monkeypatch.delenv(engines.ENV_VAR, raising=False)
    assert cli.main(["info"]) == 0
    assert "selection: MULTIRNN_BACKEND (unset)\n" in capsys.readouterr().out
    monkeypatch.setenv(engines.ENV_VAR, " ")
    assert cli.main(["info"]) == 0
    assert "selection: MULTIRNN_BACKEND=' ' (blank: as if unset)\n" in capsys.readouterr().out
    monkeypatch.setenv(engines.ENV_VAR, "numpy")
    assert cli.main(["info"]) == 0
    assert "selection: MULTIRNN_BACKEND='numpy'\n" in capsys.readouterr().out


def test_ctrl_c_while_parsing_exits_130_with_one_line(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._Parser, "parse_args", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err == "multirnn: interrupted\n"


#: runs the command with one of its imports held up, and says so on stdout
SLOW_IMPORT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest-xdist's workers ignore it
class Slow:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            print("importing", flush=True)
            time.sleep(120)
sys.meta_path.insert(0, Slow())
from multirnn import cli
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize(
    "module, argv, line",
    [
        ("multirnn.bench.render", ["bench", "--smoke"], "multirnn bench: interrupted"),
        ("multirnn.conformance.runner", ["conformance"], "multirnn conformance: interrupted"),
    ],
)
def test_sigint_while_a_command_imports_exits_130_with_one_line(module, argv, line):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, module, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "importing\n"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == line + "\n", err


@pytest.mark.skipif(os.name == "nt", reason="POSIX pipes")
def test_output_closed_early_ends_quietly():
    """``multirnn info | head -0``: the reader is gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "multirnn.cli", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc.stdout.close()
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 141 and err == "", err


def test_demo_with_a_malformed_engine_switch_is_one_line(capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("MULTIRNN_TORCH_NATIVE", "yes")
    assert cli.main(["demo", "--backend", "torch"]) == 2
    assert one_line(capsys.readouterr().err).startswith(
        "multirnn demo: MULTIRNN_TORCH_NATIVE must be one of auto, 1, 0"
    )
