"""The benchmark harness runs and emits well-formed results (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from multirnn import cli, engines
from multirnn.bench import contenders, harness, render
from multirnn.bench.workloads import SHAPE_S, Workload, peer_layout, suite


def test_suite_has_shape_s_both_configurations_and_sweeps():
    full = suite(["LSTM", "GRU", "SimpleRNN"], "full")
    s = [w for w in full if w.group == "S"]
    assert {(w.layer, w.config) for w in s} == {
        ("LSTM", "fused"), ("LSTM", "documented"), ("GRU", "fused"), ("GRU", "documented"),
        ("SimpleRNN", "fused"),
    }  # fmt: skip
    assert all((w.batch, w.time, w.input_dim, w.units) == tuple(SHAPE_S.values()) for w in s)
    assert {w.time for w in full if w.group == "time"} | {100} == {10, 30, 100, 300, 1000}
    assert {w.units for w in full if w.group == "units"} == {32, 64, 256, 512}
    assert {w.batch for w in full if w.group == "latency"} == {1}
    assert len({w.key for w in full}) == len(full)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_suite_has_small_and_streaming_workloads(mode):
    workloads = suite(["LSTM", "GRU", "SimpleRNN"], mode)
    small = [w for w in workloads if w.group == "small"]
    streaming = [w for w in workloads if w.group == "streaming"]
    assert {(w.layer, w.config) for w in small} == {
        ("LSTM", "fused"), ("LSTM", "documented"), ("GRU", "fused"), ("GRU", "documented"),
    }  # fmt: skip
    assert {(w.layer, w.config) for w in streaming} == {
        ("LSTM", "fused"), ("LSTM", "documented"), ("GRU", "fused"),
    }  # fmt: skip
    assert all((w.batch, w.time, w.input_dim, w.units, w.stateful) == (8, 10, 64, 128, False)
               for w in small)  # fmt: skip
    assert all((w.batch, w.time, w.input_dim, w.units, w.stateful) == (1, 1, 64, 128, True)
               for w in streaming)  # fmt: skip
    assert not any(w.stateful for w in workloads if w.group != "streaming")


def test_smoke_suite_has_one_small_and_one_streaming_workload():
    smoke = suite(["LSTM", "GRU"], "smoke")
    assert [w.group for w in smoke].count("small") == 1
    assert [w.group for w in smoke].count("streaming") == 1
    stream = next(w for w in smoke if w.group == "streaming")
    assert (stream.batch, stream.time, stream.stateful) == (1, 1, True)
    assert stream.key.endswith("/stateful")
    assert Workload.from_dict(stream.to_dict()) == stream
    # no gated layer: shape S, and the low-precision workload
    assert {w.group for w in suite(["SimpleRNN"], "smoke")} == {"S", "precision"}


@pytest.mark.parametrize("mode", ["smoke", "quick", "full"])
def test_suite_has_dropout_pairs(mode):
    """Every dropout workload has its twin without dropout, same layer and shape (at shape
    S, the shape-S workload)."""
    everything = suite(["LSTM", "GRU"], mode)
    with_dropout = [w for w in everything if w.dropout]
    assert with_dropout and all(w.group == "dropout" for w in with_dropout)
    plain = {(w.layer, w.config, w.batch, w.time, w.units) for w in everything if not w.dropout}
    assert {(w.layer, w.config, w.batch, w.time, w.units) for w in with_dropout} <= plain
    assert len({w.key for w in everything}) == len(everything)
    if mode != "smoke":
        assert {(w.layer, w.batch, w.time, w.input_dim, w.units) for w in with_dropout} >= {
            ("LSTM", 32, 40, 128, 32), ("GRU", 32, 40, 128, 32)
        }  # fmt: skip
    w = with_dropout[0]
    assert w.layer_kwargs() == {"dropout": 0.2, "recurrent_dropout": 0.2}
    assert w.key.endswith("/dropout0.2") and w.label.endswith(", dropout 0.2")
    assert Workload.from_dict(w.to_dict()) == w
    assert not any(x.dropout for x in suite(["LSTM"], mode) if x.group != "dropout")


def test_machine_names_the_cpu_and_the_blas_and_times_one_recurrent_product():
    m = harness.machine()
    assert isinstance(m["cpu_id"], str) and isinstance(m["blas"], dict)
    assert set(m["cpu_flags"]) <= set(harness.VECTOR_FLAGS)
    product = harness.recurrent_product(batch=2, units=3, gates=4, repeats=2)
    assert product["seconds"] > 0 and product["shape"] == [2, 3, 12]
    record = fake_record({"multirnn:torch": {"S": 0.01}})  # LSTM forward 10 ms, 5 steps
    text = render.report(record)
    assert "- CPU identity: vendor_id V cpu family 1; vector features: avx2" in text
    assert "- BLAS: numpy: openblas 0.3" in text
    assert "- One step's recurrent product alone ((32, 128) x (128, 512)" in text
    assert "## Time per step" in text
    assert "| multirnn:torch | 2000 | 50 | 40.00x |" in render.per_step(record)


def test_report_has_the_dropout_ratios():
    record = fake_record({"multirnn:torch": {"dropout": 0.001}, "torch.nn": {"S": 0.001}})
    dropped = next(w["key"] for w in record["workloads"] if w.get("dropout"))
    for row in record["contenders"][0]["results"]:
        if row["workload"] == dropped:
            row["train"] = {**row["train"], "median_s": 0.0039, "p25_s": 0.0039,
                            "p75_s": 0.0039}  # fmt: skip
    table = render.dropout(record)
    assert "| multirnn:torch | LSTM | 2, 3, 3, 4 | 3 | 3.9 (3.9-3.9) | 1.30x |" in table
    assert "torch.nn" not in table
    assert "## Dropout" in render.report(record)


def test_suite_has_low_precision_twins_and_the_report_their_ratios():
    for mode in ("smoke", "quick", "full"):
        everything = suite(["LSTM", "GRU"], mode)
        low = [w for w in everything if w.group == "precision"]
        assert low and {w.dtype for w in low} <= {"bfloat16", "float16"}
        plain = {(w.layer, w.config, w.batch, w.time, w.units) for w in everything
                 if w.dtype == "float32"}  # fmt: skip
        assert {(w.layer, w.config, w.batch, w.time, w.units) for w in low} <= plain
        assert len({w.key for w in everything}) == len(everything)
    w = next(w for w in suite(["LSTM"], "quick") if w.dtype == "bfloat16")
    assert w.key.endswith("/bfloat16") and w.label.endswith(", bfloat16")
    assert Workload.from_dict(w.to_dict()) == w
    half = next(w for w in suite(["LSTM"], "quick") if w.dtype == "float16")
    assert half.weights()[0].dtype == np.float16 and half.inputs().dtype == np.float16
    record = fake_record({"multirnn:torch": {"S": 0.001, "precision": 0.0011},
                          "torch.nn": {"S": 0.001}})  # fmt: skip
    table = render.low_precision(record)
    assert "| multirnn:torch | LSTM (fused-eligible) | float16 | 1 | 1.1 (1.1-1.1) | 1.10x |" in (
        table
    )
    assert "torch.nn" not in table and "## Low precision" in render.report(record)


def test_workload_configurations_and_flops():
    fused = Workload("GRU", "fused", 32, 100, 64, 128, "S")
    documented = Workload("GRU", "documented", 32, 100, 64, 128, "S")
    assert fused.layer_kwargs() == {"recurrent_activation": "sigmoid", "reset_after": True}
    assert documented.layer_kwargs() == {}
    assert fused.weights()[2].shape == (2, 384) and documented.weights()[2].shape == (384,)
    assert fused.flops() == 2 * 100 * 32 * 3 * 128 * (64 + 128)
    assert fused.flops(train=True) == 3 * fused.flops()


def test_torch_layout_reorders_gru_gates():
    w = Workload("GRU", "fused", 1, 1, 2, 1, "S")
    kernel, recurrent, bias = w.weights()
    torch_form = peer_layout(w, [kernel, recurrent, bias])
    # canonical z, r, h -> torch r, z, n (and transposed)
    assert (torch_form["weight_ih_l0"][0] == kernel[:, 1]).all()
    assert (torch_form["bias_hh_l0"] == bias[1][[1, 0, 2]]).all()


def check_record(record):
    assert record["matmul_peak"]["gflops"] > 0
    assert record["machine"]["cores"] >= 1
    for contender in record["contenders"]:
        assert "failed" not in contender, contender.get("failed")
        for row in contender["results"]:
            assert "error" not in row, row.get("traceback")
            if "forward" in row:
                m = row["forward"]
                assert 0 < m["min_s"] <= m["median_s"] and m["runs"] >= 2
                assert m["gflops"] > 0 and m["first_s"] > 0
    json.dumps(record)  # serialisable


def test_smoke_run_on_the_numpy_engine(tmp_path):
    said = []
    record = harness.run(["multirnn:numpy"], ["lstm", "gru"], "smoke", memory=False,
                         progress=said.append)  # fmt: skip
    check_record(record)
    # the CPU and the BLAS path first: the figures depend on them
    assert said[0].startswith("CPU: ") and "; BLAS: " in said[0]
    assert "recurrent product" in said[1] and record["recurrent_product"]["seconds"] > 0
    rows = record["contenders"][0]["results"]
    assert len(rows) == 9 and all("train" not in r for r in rows)  # no autodiff in numpy
    assert {r["workload"] for r in rows if "forward" in r} == {
        w["key"] for w in record["workloads"]
    }  # the small and streaming workloads ran too
    text = render.report(record)
    assert "## Shape S" in text and "multirnn:numpy" in text
    assert "## Small: batch 8, 10 steps" in text and "## Streaming:" in text
    assert "## Per-call cost (batch 1, one step)" in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_smoke_run_with_a_peer_and_the_command_line(tmp_path):
    out = tmp_path / "bench.json"
    report = tmp_path / "benchmarks.md"
    code = cli.main(
        ["bench", "--smoke", "--engines", "numpy", "--peers", "torch.nn", "--layers", "lstm,gru",
         "--json", str(out), "--report", str(report)]
    )  # fmt: skip
    assert code == 0
    record = json.loads(out.read_text())
    check_record(record)
    torch_rows = next(c for c in record["contenders"] if c["contender"] == "torch.nn")["results"]
    fused = [r for r in torch_rows if "/fused/" in r["workload"] and "forward" in r]
    assert fused and all(r["forward"]["vs_fastest_peer"] == 1.0 for r in fused)
    assert all("unsupported" in r for r in torch_rows if r["workload"].endswith("/float16"))
    assert all(r["train"]["vs_fastest_peer"] == 1.0 for r in fused if "train" in r)
    groups = {w["key"]: w["group"] for w in record["workloads"]}
    for contender in record["contenders"]:  # both stream (forward only) and run the small shape
        ran = {groups[r["workload"]]: r for r in contender["results"] if "forward" in r}
        assert {"small", "streaming"} <= set(ran) and "train" not in ran["streaming"]
    assert any("not expressible" in line for line in render.skipped(record))
    assert "| multirnn:numpy | LSTM (fused-eligible) |" in render.targets(record)
    assert "| multirnn:numpy | LSTM (fused-eligible) |" in render.targets(record, "small")
    assert "| multirnn:numpy | LSTM |" in render.defaults_vs_fused(record)
    per_call = render.per_call(record)
    assert "| LSTM (fused-eligible) | torch.nn |" in per_call
    assert "| LSTM (fused-eligible) | multirnn:numpy |" in per_call
    text = report.read_text()
    assert "torch.nn" in text and "## Per-call cost (batch 1, one step)" in text


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plots(tmp_path):
    record = harness.run(["multirnn:numpy"], ["lstm"], "smoke", memory=False)
    paths = render.plots(record, tmp_path)
    assert [p.name for p in paths] == ["time_per_step_vs_length.png", "shape_s.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    text = render.report(record, paths, relative_to=tmp_path)
    assert "![time_per_step_vs_length](time_per_step_vs_length.png)" in text


def fake_record(timings: dict[str, dict[str, float]]) -> dict:
    """A record of the smoke workloads with given forward medians (seconds) per contender
    and workload group; a train step takes three times its forward."""
    workloads = suite(["LSTM", "GRU"], "smoke")
    record = {
        "mode": "smoke", "date": "today", "rounds": 1,
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1.0, "platform": "p",
                    "python": "3", "thread_env": {}, "cpu_id": "vendor_id V cpu family 1",
                    "cpu_flags": ["avx2"], "blas": {"numpy": "openblas 0.3"}},
        "matmul_peak": {"gflops": 100.0, "library": "numpy", "size": 8},
        "recurrent_product": {"seconds": 0.00005, "gflops": 80.0, "shape": [32, 128, 512],
                              "library": "numpy"},
        "workloads": [w.to_dict() for w in workloads],
        "contenders": [],
    }  # fmt: skip

    def timing(seconds):
        return {"first_s": seconds, "median_s": seconds, "p25_s": seconds, "p75_s": seconds,
                "min_s": seconds, "runs": 3}  # fmt: skip

    for name, by_group in timings.items():
        results = []
        for w in workloads:
            if w.group in by_group:
                row = {"workload": w.key, "forward": timing(by_group[w.group])}
                if not w.stateful:
                    row["train"] = timing(3 * by_group[w.group])
                results.append(row)
        kind = "engine" if name.startswith("multirnn:") else "peer"
        record["contenders"].append({"contender": name, "kind": kind, "results": results})
    harness.annotate(record)
    return record


def test_report_has_per_call_users_cells_and_notes(tmp_path):
    record = fake_record({
        "multirnn:torch": {"S": 0.002, "small": 0.001, "streaming": 0.0003},
        "multirnn:torch+cell": {"S": 0.003},
        "multirnn:torch+lstmcell": {"S": 0.0025},
        "multirnn:tensorflow+xla": {"streaming": 0.0004},
        "torch.nn": {"S": 0.001, "small": 0.001, "streaming": 0.0002},
        "keras:tensorflow+xla": {"streaming": 0.0008},
    })  # fmt: skip
    per_call = render.per_call(record)
    assert "| multirnn:torch | 300 (300-300) | torch.nn | 200 | 1.50x |" in per_call
    assert "| multirnn:tensorflow+xla | 400 (400-400) | keras:tensorflow+xla | 800 | 0.50x |" in (
        per_call
    )
    assert "| LSTM (fused-eligible) | torch.nn | 200 (200-200) | - | - | - |" in per_call
    cells = render.users_cells(record)
    assert (
        "| multirnn:torch | LSTM (fused-eligible) | 3 | 2.5 | 2 | 1.20x | 1.50x | 9 | 7.5 | 6 "
        "| 1.20x | 1.50x |"
    ) in cells
    assert "GRU" not in cells  # the user's cell is an LSTM
    notes = tmp_path / "notes.md"
    notes.write_text("Before: 10 ms. After: 5 ms.\n\n| a | b |\n|---|---|\n")
    text = render.report(record, notes=notes)
    assert "## Per-call cost (batch 1, one step)" in text and "## Users' cells" in text
    assert "`multirnn:NAME+lstmcell`" in text and "shared step differentiated" in text
    tail = text.split("## Measurements of past changes", 1)[1]
    assert tail.rstrip().endswith("Before: 10 ms. After: 5 ms.\n\n| a | b |\n|---|---|")
    assert "## Measurements of past changes" not in render.report(record)


def test_command_line_notes(tmp_path, capsys):
    record = fake_record({"torch.nn": {"S": 0.001, "small": 0.001, "streaming": 0.0002}})
    saved = tmp_path / "record.json"
    saved.write_text(json.dumps(record))
    notes, report = tmp_path / "notes.md", tmp_path / "page.md"
    notes.write_text("One change, measured.\n")
    argv = ["bench", "--from-json", str(saved), "--report", str(report)]
    assert cli.main([*argv, "--notes", str(notes)]) == 0
    assert report.read_text().rstrip().endswith("One change, measured.")
    assert cli.main([*argv, "--notes", ""]) == 0
    assert "Measurements of past changes" not in report.read_text()
    assert cli.main([*argv, "--notes", str(tmp_path / "none.md")]) == 2
    assert "--notes" in capsys.readouterr().err


def as_array(value) -> np.ndarray:
    value = value[0] if isinstance(value, list) else value
    return value.detach().numpy() if hasattr(value, "detach") else np.array(value)


@pytest.mark.parametrize("engine", engines.available())
def test_streaming_hooks_carry_the_states(engine):
    """Each call of a streaming hook's forward goes on from the states the last left: the
    same chunk gives another output the second time."""
    from multirnn.conformance.adapters import adapter

    w = Workload("LSTM", "documented", 1, 1, 3, 4, "streaming", stateful=True)
    forward, train = adapter(engine).benchmark(
        contenders._spec(w), w.weights(), w.inputs(), stateful=True
    )
    assert train is None
    first, second = as_array(forward()), as_array(forward())
    assert first.shape == (1, 1, 4) and not np.allclose(first, second)
    for variant in contenders.CELL_VARIANTS if engine != "numpy" else ():
        cell = contenders.make(f"multirnn:{engine}+{variant}")  # RNN(cell, stateful=True)
        cell.setup()
        forward, train = cell.prepare(w)
        assert train is None
        first, second = as_array(forward()), as_array(forward())
        assert not np.allclose(first, second)


@pytest.mark.parametrize("peer", ["torch.nn", "flax.nnx"])
def test_streaming_peers_carry_the_states(peer):
    contender = contenders.make(peer)
    if not contender.available():
        pytest.skip(f"needs {', '.join(contender.requires)}")
    contender.setup()
    forward, train = contender.prepare(
        Workload("GRU", "fused", 1, 1, 3, 4, "streaming", stateful=True)
    )
    assert train is None
    assert not np.allclose(as_array(forward()), as_array(forward()))


def test_bad_layers_argument(capsys):
    assert cli.main(["bench", "--layers", "transformer"]) == 2
    assert "--layers accepts" in capsys.readouterr().err


def test_engine_variants_are_contenders_of_their_own():
    xla = contenders.make("multirnn:tensorflow+xla")
    assert (xla.name, xla.engine, xla.variant) == ("multirnn:tensorflow+xla", "tensorflow", "xla")
    assert contenders.make("keras:tensorflow+xla").xla
    with pytest.raises(ValueError, match="'jax' has benchmark variants cell, lstmcell"):
        contenders.make("multirnn:jax+xla")
    names = harness.engine_contenders()
    for name in engines.available():
        variants = engines.registry()[name].benchmark_variants
        cell = [] if name == "numpy" else [f"multirnn:{name}+{v}" for v in ("cell", "lstmcell")]
        assert [n for n in names if n.startswith(f"multirnn:{name}")] == [
            f"multirnn:{name}",
            *(f"multirnn:{name}+{v}" for v in variants),
            *cell,
        ]


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_smoke_run_of_the_tensorflow_xla_variant_against_keras():
    record = harness.run(
        ["multirnn:tensorflow+xla", "keras:tensorflow+xla"], ["lstm"], "smoke", memory=False
    )
    check_record(record)
    assert "| multirnn:tensorflow+xla | LSTM (fused-eligible) |" in render.targets(record)
    assert "| multirnn:tensorflow+xla | " in render.targets(record, "small")
    assert "| keras:tensorflow+xla | " in render.per_call(record)  # a stateful Keras layer


# -- saved records of the wrong shape ---------------------------------------------------------


def _set(path: str, value):
    """A change to a saved record: ``value`` at ``path`` (keys and indices, dot-separated)."""

    def change(record):
        *head, last = path.split(".")
        target = record
        for key in head:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is KeyError:
            del target[last]
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set("workloads", {}), "'workloads' is dict, expected a list"),
        (_set("workloads.0.batch", "32"), "workloads[0].batch is '32', expected int"),
        (_set("workloads.0.stateful", 1), "workloads[0].stateful is 1, expected bool"),
        (_set("workloads.1.units", KeyError), "workloads[1] has no 'units'"),
        (_set("contenders", "all"), "'contenders' is str, expected a list"),
        (_set("contenders.0", 3), "contenders[0] is int, expected an object"),
        (_set("contenders.0.contender", None), "contenders[0].contender is None, expected a"),
        (_set("contenders.0.results", {}), "contenders[0].results is dict, expected a list"),
        (_set("contenders.0.results.0.workload", "nope"), ".workload 'nope' is none of the"),
        (_set("contenders.0.results.0.forward", [1]), "results[0].forward has no number 'median"),
        (_set("contenders.0.results.0.forward.median_s", True), "forward has no number 'medi"),
        (_set("contenders.0.results.0.train.p25_s", "1"), "train.p25_s is '1', expected a nu"),
        (_set("matmul_peak", {"gflops": 0}), "matmul_peak.gflops is 0, expected a positive"),
        (_set("mode", ["smoke"]), "'mode' is ['smoke'], expected str"),
        (_set("workloads.0.dropout", "0.2"), "workloads[0].dropout is '0.2', expected"),
        (_set("recurrent_product", [1]), "recurrent_product is [1], expected an object"),
        (_set("recurrent_product.seconds", -1), "recurrent_product.seconds is -1, expected a"),
        (_set("recurrent_product.shape", [32, 128]), "recurrent_product.shape is [32, 128],"),
        (_set("machine.blas", "mkl"), "machine.blas is 'mkl', expected dict"),
        # what only the report reads: caught as it renders, still one line
        (_set("machine.cpu", KeyError), "rendering it failed with KeyError: 'cpu'"),
    ],
)
def test_saved_record_of_the_wrong_shape_is_one_line(change, message, tmp_path, capsys):
    record = fake_record({"torch.nn": {"S": 0.001}})
    saved, report = tmp_path / "record.json", tmp_path / "page.md"
    argv = ["bench", "--from-json", str(saved), "--report", str(report), "--notes", ""]
    saved.write_text(json.dumps(record))
    assert cli.main(argv) == 0  # as written, it renders
    capsys.readouterr()
    report.unlink()
    change(record)
    saved.write_text(json.dumps(record))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"multirnn bench: --from-json {str(saved)!r} is not a record"), err
    assert message in err and not report.exists()


def test_saved_record_nested_too_deeply_is_one_line(tmp_path, capsys):
    saved = tmp_path / "deep.json"
    saved.write_text("[" * 100_000 + "]" * 100_000)
    assert cli.main(["bench", "--from-json", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err == f"multirnn bench: --from-json {str(saved)!r}: its JSON is nested too deeply\n"


# -- stopping workers -------------------------------------------------------------------------

#: a worker that notes each signal it gets; which it ignores is its first argument
NOTING_WORKER = """
import signal, sys, time
ignore, log = sys.argv[1], sys.argv[2]
def note(text):
    with open(log, "a") as stream:
        stream.write(text + " ")
def handler(signum, frame):
    name = signal.Signals(signum).name
    note(name)
    if name not in ignore:
        sys.exit(1)
signal.signal(signal.SIGINT, handler)
signal.signal(signal.SIGTERM, handler)
note("started")
while True:
    time.sleep(0.02)
"""

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def noting_worker(ignore: str, log):
    proc = subprocess.Popen([sys.executable, "-c", NOTING_WORKER, ignore, str(log)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


@posix_only
@pytest.mark.parametrize(
    "ignore, notes, returncode",
    [
        ("", "started SIGINT", 1),  # stops at the first, gentle signal
        ("SIGINT", "started SIGINT SIGTERM", 1),
        ("SIGINT,SIGTERM", "started SIGINT SIGTERM", -signal.SIGKILL),  # then no choice
    ],
)
def test_stop_sends_sigint_then_sigterm_then_sigkill(ignore, notes, returncode, tmp_path):
    log = tmp_path / "signals"
    proc = noting_worker(ignore, log)
    harness.stop(proc, grace=0.3)
    assert proc.returncode == returncode
    assert log.read_text().split() == notes.split()
    assert proc.stdout.closed and proc.stderr.closed


@posix_only
def test_sigint_during_bench_stops_its_worker_and_exits_130_with_one_line(tmp_path):
    log = tmp_path / "signals"
    # pytest-xdist's workers ignore SIGINT, and a child inherits that: Python's own handler
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from multirnn import cli\n"
        "from multirnn.bench import harness\n"
        f"harness.WORKER = ['-c', {NOTING_WORKER!r}, 'SIGINT', {str(log)!r}]\n"
        "harness.STOP_GRACE_S = 0.3\n"
        "harness.matmul_peak = lambda: {'gflops': 1.0, 'library': 'none', 'size': 1}\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", script, "bench", "--smoke", "--engines", "numpy",
               "--peers", "", "--json", str(tmp_path / "record.json")]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text()):  # the worker runs
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # to the command only, as `kill -INT` does
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "multirnn bench: interrupted; no record written"
    assert log.read_text().split() == ["started", "SIGINT", "SIGTERM"]
    assert list(tmp_path.iterdir()) == [log]
