"""Running a scenario script in processes of their own (a fresh framework each time), and
checking its report.

Each framework's scenarios run in one script and are checked by one test, so that pytest-xdist
(CI's ``tests`` session) starts the processes once, whatever worker takes the test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TIMEOUT = 120


def run_scenarios(scenarios: dict[str, Callable[[], dict]], after=lambda: None) -> dict:
    """Each scenario's measured values (or its traceback), with its time; used by the
    worker scripts, so one broken scenario still reports the others. ``after`` runs after
    each scenario (a barrier, for ranks)."""
    report: dict = {}
    for name, scenario in scenarios.items():
        start = time.perf_counter()
        try:
            report[name] = scenario()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        report[name]["seconds"] = round(time.perf_counter() - start, 3)
        after()
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("MULTIRNN_BACKEND", None)
    return env


#: what a process prints when PyTorch's gloo threads release tensors during the
#: interpreter's finalization, after all its work is done (an upstream teardown race: the
#: process aborts with SIGABRT on its way out, rarely, more often on a loaded machine)
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """One process; fails the test with its output when it fails. A process that died of
    the gloo teardown race (:data:`GLOO_TEARDOWN_ABORT`) is run once more: a real failure
    fails both times."""
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=environment(**env),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        if result.returncode == 0 or GLOO_TEARDOWN_ABORT not in result.stderr:
            break
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def run_ranks(script: Path, world: int, out: Path, **env: str) -> list[dict]:
    """``script RANK PORT OUT`` in ``world`` processes at once; the report rank 0 wrote."""
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), port, str(out)],
            cwd=ROOT,
            env=environment(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    failed = [(p.returncode, o) for p, o in zip(procs, outputs) if p.returncode != 0]
    assert not failed, f"{script.name} failed: {failed}"
    return json.loads(out.read_text())


def failures(report: dict, expected: dict[str, dict[str, tuple[str, float]]]) -> list[str]:
    """What in ``report`` (scenario -> measured values) breaks ``expected`` (scenario ->
    value -> ("<=", bound) or (">", bound)); errors are failures."""
    out = []
    for scenario, checks in expected.items():
        result = report.get(scenario, {"error": "missing from the report"})
        if "error" in result:
            out.append(f"{scenario}: {result['error']}")
            continue
        for key, (op, bound) in checks.items():
            value = result[key]
            if not (value <= bound if op == "<=" else value > bound):
                out.append(f"{scenario}.{key} = {value!r}, expected {op} {bound}")
    return out
