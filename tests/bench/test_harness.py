"""The benchmark harness runs and emits well-formed results (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from multirnn import cli
from multirnn.bench import harness, render
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
    assert len(rows) == 4 and all("train" not in r for r in rows)  # no autodiff in numpy
    text = render.report(record)
    assert "## Shape S" in text and "multirnn:numpy" in text


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
    assert all(r["train"]["vs_fastest_peer"] == 1.0 for r in fused)
    assert any("not expressible" in line for line in render.skipped(record))
    assert "| multirnn:numpy | LSTM (fused-eligible) |" in render.targets(record)
    assert "| multirnn:numpy | LSTM |" in render.defaults_vs_fused(record)
    assert "torch.nn" in report.read_text()


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plots(tmp_path):
    record = harness.run(["multirnn:numpy"], ["lstm"], "smoke", memory=False)
    paths = render.plots(record, tmp_path)
    assert [p.name for p in paths] == ["shape_s.png"] and paths[0].stat().st_size > 1000


def test_bad_layers_argument(capsys):
    assert cli.main(["bench", "--layers", "transformer"]) == 2
    assert "--layers accepts" in capsys.readouterr().err


def test_engine_variants_are_contenders_of_their_own():
    from multirnn import engines
    from multirnn.bench import contenders

    xla = contenders.make("multirnn:tensorflow+xla")
    assert (xla.name, xla.engine, xla.variant) == ("multirnn:tensorflow+xla", "tensorflow", "xla")
    assert contenders.make("keras:tensorflow+xla").xla
    with pytest.raises(ValueError, match="'jax' has benchmark variants none"):
        contenders.make("multirnn:jax+xla")
    names = harness.engine_contenders()
    for name in engines.available():
        variants = engines.registry()[name].benchmark_variants
        assert [n for n in names if n.startswith(f"multirnn:{name}")] == [
            f"multirnn:{name}",
            *(f"multirnn:{name}+{v}" for v in variants),
        ]


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_smoke_run_of_the_tensorflow_xla_variant_against_keras():
    record = harness.run(
        ["multirnn:tensorflow+xla", "keras:tensorflow+xla"], ["lstm"], "smoke", memory=False
    )
    check_record(record)
    assert "| multirnn:tensorflow+xla | LSTM (fused-eligible) |" in render.targets(record)
