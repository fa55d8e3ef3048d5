"""The benchmark harness runs and emits well-formed results (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

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
    assert {w.group for w in suite(["SimpleRNN"], "smoke")} == {"S"}  # no gated layer


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
    record = harness.run(["multirnn:numpy"], ["lstm", "gru"], "smoke", memory=False)
    check_record(record)
    rows = record["contenders"][0]["results"]
    assert len(rows) == 6 and all("train" not in r for r in rows)  # no autodiff in numpy
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
    fused = [r for r in torch_rows if "/fused/" in r["workload"]]
    assert all(r["forward"]["vs_fastest_peer"] == 1.0 for r in fused)
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
                    "python": "3", "thread_env": {}},
        "matmul_peak": {"gflops": 100.0, "library": "numpy", "size": 8},
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
