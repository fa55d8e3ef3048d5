"""Benchmark records as text tables, a Markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multirnn.bench.workloads import Workload


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1e3:.3g}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _timing(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{_ms(m['median_s'])} ({_ms(m['p25_s'])}-{_ms(m['p75_s'])})"


def _ratio(m: dict | None) -> str:
    if not m or m.get("vs_fastest_peer") is None:
        return "-"
    return f"{m['vs_fastest_peer']:.2f}x"


def rows(record: dict[str, Any], group: str) -> list[dict[str, Any]]:
    workloads = {w["key"]: Workload.from_dict(w) for w in record["workloads"]}
    out = []
    for c in record["contenders"]:
        for row in c.get("results", []):
            w = workloads[row["workload"]]
            if w.group == group:
                out.append({**row, "workload": w, "contender": c["contender"]})
    out.sort(key=lambda r: (r["workload"].layer, r["workload"].config, r["workload"].time,
                            r["workload"].units, r["contender"]))  # fmt: skip
    return out


def table(record: dict[str, Any], group: str = "S") -> str:
    """A Markdown table of one workload group."""
    head = (
        "| workload | contender | forward ms, median (IQR) | vs fastest peer | "
        "train step ms, median (IQR) | vs fastest peer | first call ms (fwd / train) | "
        "train GFLOP/s | % of matmul peak | train peak RSS growth |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows(record, group):
        w, fwd, train = r["workload"], r.get("forward"), r.get("train")
        if "unsupported" in r or "error" in r:
            continue
        first = f"{_ms(fwd['first_s'])} / {_ms(train['first_s']) if train else '-'}"
        gflops = f"{train['gflops']:.1f}" if train else f"{fwd['gflops']:.1f} (fwd)"
        frac = train["peak_fraction"] if train else fwd["peak_fraction"]
        mem = train.get("peak_rss_growth_bytes") if train else None
        mem_text = f"{mem / 2**20:.0f} MiB" if mem is not None else "-"
        shape = f"b{w.batch} t{w.time} i{w.input_dim} u{w.units}"
        lines.append(
            f"| {w.label}, {shape} | {r['contender']} | {_timing(fwd)} | {_ratio(fwd)} | "
            f"{_timing(train)} | {_ratio(train)} | {first} | {gflops} | {100 * frac:.1f}% | "
            f"{mem_text} |"
        )
    return "\n".join(lines)


def _lookup(record: dict[str, Any]) -> dict[tuple[str, str], dict]:
    return {(c["contender"], row["workload"]): row for c in record["contenders"]
            for row in c.get("results", [])}  # fmt: skip


def targets(record: dict[str, Any]) -> str:
    """Every multirnn engine on shape S against the references the engine issues name:
    torch.nn.LSTM (fused, shape S), Keras 3's same layer on the engine's framework, and
    Flax NNX's same layer."""
    rows = _lookup(record)
    shape_s_lstm = [
        w["key"]
        for w in record["workloads"]
        if w["group"] == "S" and w["layer"] == "LSTM" and w["config"] == "fused"
    ]
    s_key = shape_s_lstm[0] if shape_s_lstm else None
    ref = rows.get(("torch.nn", s_key), {}) if s_key else {}

    def ratio(m, r, key="median_s"):
        if not m or not r or key not in m or key not in r or not r[key]:
            return "-"
        return f"{m[key] / r[key]:.2f}x"

    lines = [
        "| engine | workload | forward ms | train ms | forward / torch.nn.LSTM | "
        "train / torch.nn.LSTM | forward / Keras same layer | train / Keras same layer | "
        "forward / Flax NNX same layer | train / Flax NNX same layer | "
        "train memory / torch.nn.LSTM |",
        "|" + "---|" * 11,
    ]
    for c in record["contenders"]:
        if c.get("kind") != "engine":
            continue
        keras = f"keras:{c['contender'].split(':', 1)[1]}"
        for w in record["workloads"]:
            if w["group"] != "S":
                continue
            row = rows.get((c["contender"], w["key"]))
            if not row or "forward" not in row:
                continue
            k = rows.get((keras, w["key"]), {})
            flax = rows.get(("flax.nnx", w["key"]), {})
            fwd, train = row.get("forward"), row.get("train")
            lines.append(
                f"| {c['contender']} | {Workload.from_dict(w).label} | {_ms(fwd['median_s'])} | "
                f"{_ms(train['median_s']) if train else '-'} | {ratio(fwd, ref.get('forward'))} | "
                f"{ratio(train, ref.get('train'))} | {ratio(fwd, k.get('forward'))} | "
                f"{ratio(train, k.get('train'))} | {ratio(fwd, flax.get('forward'))} | "
                f"{ratio(train, flax.get('train'))} | "
                f"{ratio(train, ref.get('train'), 'peak_rss_growth_bytes')} |"
            )
    return "\n".join(lines)


def defaults_vs_fused(record: dict[str, Any]) -> str:
    """Each engine's documented-defaults time over its own fused-eligible time (shape S)."""
    rows = _lookup(record)
    shape_s = [Workload.from_dict(w) for w in record["workloads"] if w["group"] == "S"]
    lines = [
        "| engine | layer | forward: defaults / fused | train: defaults / fused |",
        "|---|---|---|---|",
    ]
    for c in record["contenders"]:
        if c.get("kind") != "engine":
            continue
        for documented in (w for w in shape_s if w.config == "documented"):
            fused = next((w for w in shape_s if w.layer == documented.layer
                          and w.config == "fused"), None)  # fmt: skip
            a = rows.get((c["contender"], documented.key), {})
            b = rows.get((c["contender"], fused.key), {}) if fused else {}
            cells = []
            for part in ("forward", "train"):
                m, r = a.get(part), b.get(part)
                cells.append(f"{m['median_s'] / r['median_s']:.2f}x" if m and r else "-")
            if cells != ["-", "-"]:
                lines.append(f"| {c['contender']} | {documented.layer} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def skipped(record: dict[str, Any]) -> list[str]:
    out = []
    workloads = {w["key"]: Workload.from_dict(w) for w in record["workloads"]}
    seen = set()
    for c in record["contenders"]:
        if "failed" in c:
            out.append(
                f"- {c['contender']}: worker failed: {c['failed'].strip().splitlines()[-1:]}"
            )
        for row in c.get("results", []):
            reason = row.get("unsupported") or row.get("error")
            w = workloads[row["workload"]]
            key = (c["contender"], w.layer, w.config, reason)
            if reason and key not in seen:
                seen.add(key)
                kind = "not expressible" if "unsupported" in row else "error"
                out.append(f"- {c['contender']}, {w.label}: {kind}: {reason}")
    return out


def plots(record: dict[str, Any], directory: str | Path) -> list[Path]:
    """time_vs_length.png (train step vs sequence length) and shape_s.png (bar chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for group in ("time", "S"):
        for r in rows(record, group):
            w = r["workload"]
            if w.layer != "LSTM" or w.units != 128 or w.batch != 32:
                continue
            m = r.get("train") or r.get("forward")
            if m:
                mode = "train" if "train" in r else "forward only"
                series.setdefault((f"{r['contender']} [{w.config}, {mode}]", w.config), []).append(
                    (w.time, m["median_s"] * 1e3)
                )
    if series:
        fig, ax = plt.subplots(figsize=(8, 5))
        for (name, config), points in sorted(series.items()):
            points.sort()
            ax.plot(
                *zip(*points), marker="o", linestyle="-" if config == "fused" else "--", label=name
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (batch 32, input 64, units 128)")
        ax.set_ylabel("ms per training step (median)")
        ax.set_title("LSTM training step vs sequence length")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / "time_vs_length.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    bars = [
        (r["workload"], r["contender"], r.get("train"), r.get("forward")) for r in rows(record, "S")
    ]
    bars = [b for b in bars if b[3]]
    if bars:
        labels = sorted({f"{w.layer}\n{w.config}" for w, *_ in bars})
        names = sorted({c for _, c, *_ in bars})
        fig, ax = plt.subplots(figsize=(10, 5))
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            values = []
            for label in labels:
                match = [
                    (t or f)["median_s"] * 1e3
                    for w, c, t, f in bars
                    if c == name and f"{w.layer}\n{w.config}" == label
                ]
                values.append(match[0] if match else 0.0)
            forward_only = all(t is None for w, c, t, f in bars if c == name)
            label = f"{name} (forward only)" if forward_only else name
            ax.bar([x + i * width for x in range(len(labels))], values, width, label=label)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
        ax.set_ylabel("ms per training step (forward where no autodiff)")
        ax.set_yscale("log")
        ax.set_title("Shape S: batch 32, time 100, input 64, units 128, float32")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / "shape_s.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def report(
    record: dict[str, Any], plot_paths: list[Path] = (), relative_to: Path | None = None
) -> str:
    m = record["machine"]
    peak = record["matmul_peak"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `multirnn bench --{record['mode']}` on {record['date']}. Do not edit by",
        "hand: `nox -s bench` regenerates this page, its plots and `benchmarks/results.json`.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['platform']}",
        f"- Python {m['python']}; thread variables in the environment: {m['thread_env'] or 'none'}",
        f"- Measured float32 matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['library']}, "
        f"{peak['size']}x{peak['size']})",
        "",
        "| contender | versions | threads | import s |",
        "|---|---|---|---|",
    ]
    for c in record["contenders"]:
        versions = ", ".join(f"{k} {v}" for k, v in c.get("versions", {}).items())
        threads = (
            ", ".join(f"{k}={v}" for k, v in c.get("threads", {}).items()) or "framework default"
        )
        lines.append(f"| {c['contender']} | {versions} | {threads} | {c.get('import_s', 0):.1f} |")
    lines += [
        "",
        "## How to read this",
        "",
        "Each contender runs in its own worker process on identical weights and inputs. The",
        "first call (tracing and compilation included) is reported separately; then each",
        "function is repeated and the median and interquartile range are reported, every call",
        "blocking until its result exists. All contenders run round-robin "
        f"{record.get('rounds', 1)} time(s) and each keeps its round with the lower median, so",
        "that a slow spell of the machine does not land on one contender only. A training",
        "step is forward plus backward of",
        "`sum(outputs)` with respect to the weights. *vs fastest peer* divides by the fastest",
        "of the peers (torch.nn, Keras 3 on each backend, Flax NNX) on the same workload.",
        "GFLOP/s counts matrix-product FLOPs only (a training step is 3x the forward), quoted",
        "against the measured matmul peak above. Peak RSS growth is measured in a fresh process",
        "over three training steps. *documented defaults* (hard_sigmoid gates; GRU with",
        "reset_after=False) cannot be served by any fused kernel; *fused-eligible* can.",
        "A `+xla` contender is the same layer traced with `jit_compile=True` (XLA); the",
        "others are traced without it.",
        "",
    ]
    for group, title in (
        ("S", "Shape S: batch 32, time 100, input 64, units 128, float32"),
        ("time", "Sequence length sweep (LSTM)"),
        ("units", "Units sweep (LSTM)"),
        ("latency", "Batch 1 (latency)"),
    ):
        body = table(record, group)
        if body.count("\n") > 1:
            lines += [f"## {title}", "", body, ""]
    lines += [
        "## Engine targets",
        "",
        "Ratios on shape S against the references the engine issues name (lower is better;",
        "a Keras column compares with Keras 3 running on the engine's own framework).",
        "",
        targets(record),
        "",
        "Documented defaults against the fused-eligible configuration of the same layer on",
        "the same engine (the engine issues ask for at most 1.2x):",
        "",
        defaults_vs_fused(record),
        "",
    ]
    for path in plot_paths:
        rel = path.relative_to(relative_to) if relative_to else path
        lines += [f"![{path.stem}]({rel.as_posix()})", ""]
    missing = skipped(record)
    if missing:
        lines += ["## Not run", "", *missing, ""]
    return "\n".join(lines)
