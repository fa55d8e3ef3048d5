"""Benchmark records as text tables, a Markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multirnn.bench.contenders import CELL_VARIANT, CELL_VARIANTS, LSTMCELL_VARIANT
from multirnn.bench.workloads import Workload


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1e3:.3g}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def _timing(m: dict | None, unit=_ms) -> str:
    """Median (interquartile range) of a timing, in ``unit`` (:func:`_ms` or :func:`_us`)."""
    if not m:
        return "-"
    return f"{unit(m['median_s'])} ({unit(m['p25_s'])}-{unit(m['p75_s'])})"


def _over(m: dict | None, r: dict | None, key: str = "median_s") -> str:
    """``m[key] / r[key]`` as a ratio, "-" when either is missing."""
    if not m or not r or key not in m or key not in r or not r[key]:
        return "-"
    return f"{m[key] / r[key]:.2f}x"


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
        shape += ", stateful" if w.stateful else ""
        lines.append(
            f"| {w.label}, {shape} | {r['contender']} | {_timing(fwd)} | {_ratio(fwd)} | "
            f"{_timing(train)} | {_ratio(train)} | {first} | {gflops} | {100 * frac:.1f}% | "
            f"{mem_text} |"
        )
    return "\n".join(lines)


def _lookup(record: dict[str, Any]) -> dict[tuple[str, str], dict]:
    return {(c["contender"], row["workload"]): row for c in record["contenders"]
            for row in c.get("results", [])}  # fmt: skip


def targets(record: dict[str, Any], group: str = "S") -> str:
    """Every multirnn engine on one workload group (shape S by default) against the
    references the engine issues name: torch.nn.LSTM (fused, same shape), Keras 3's same
    layer on the engine's framework, and Flax NNX's same layer."""
    rows = _lookup(record)
    shape_s_lstm = [
        w["key"]
        for w in record["workloads"]
        if w["group"] == group and w["layer"] == "LSTM" and w["config"] == "fused"
    ]
    s_key = shape_s_lstm[0] if shape_s_lstm else None
    ref = rows.get(("torch.nn", s_key), {}) if s_key else {}

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
        # a cell is compared with Keras's same layer as the engine is
        keras = f"keras:{_engine_of(c['contender']).split(':', 1)[1]}"
        for w in record["workloads"]:
            if w["group"] != group:
                continue
            row = rows.get((c["contender"], w["key"]))
            if not row or "forward" not in row:
                continue
            k = rows.get((keras, w["key"]), {})
            flax = rows.get(("flax.nnx", w["key"]), {})
            fwd, train = row.get("forward"), row.get("train")
            lines.append(
                f"| {c['contender']} | {Workload.from_dict(w).label} | {_ms(fwd['median_s'])} | "
                f"{_ms(train['median_s']) if train else '-'} | {_over(fwd, ref.get('forward'))} | "
                f"{_over(train, ref.get('train'))} | {_over(fwd, k.get('forward'))} | "
                f"{_over(train, k.get('train'))} | {_over(fwd, flax.get('forward'))} | "
                f"{_over(train, flax.get('train'))} | "
                f"{_over(train, ref.get('train'), 'peak_rss_growth_bytes')} |"
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
            cells = [_over(a.get(part), b.get(part)) for part in ("forward", "train")]
            if cells != ["-", "-"]:
                lines.append(f"| {c['contender']} | {documented.layer} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def reference_peer(contender: str) -> str | None:
    """The peer an engine's issues compare it with: torch.nn for torch, Keras 3 on
    TensorFlow traced the same way (``+xla`` with XLA) for tensorflow, Flax NNX for jax.
    None for peers and for engines without one (numpy)."""
    if not contender.startswith("multirnn:"):
        return None
    engine, _, variant = contender.split(":", 1)[1].partition("+")
    if engine == "tensorflow":
        return "keras:tensorflow+xla" if variant == "xla" else "keras:tensorflow"
    return {"torch": "torch.nn", "jax": "flax.nnx"}.get(engine)


def per_call(record: dict[str, Any]) -> str:
    """Per-call cost: every contender's median time for one step at batch 1 with the
    states carried across calls (the streaming workloads), and its ratio to the engine's
    reference peer (:func:`reference_peer`) on the same workload."""
    rows = _lookup(record)
    lines = [
        "| layer | contender | per call us, median (IQR) | reference peer | peer us | "
        "ratio to peer |",
        "|---|---|---|---|---|---|",
    ]
    for data in record["workloads"]:
        if data["group"] != "streaming":
            continue
        w = Workload.from_dict(data)
        for c in record["contenders"]:
            m = rows.get((c["contender"], w.key), {}).get("forward")
            if not m:
                continue
            peer = reference_peer(c["contender"])
            ref = rows.get((peer, w.key), {}).get("forward") if peer else None
            lines.append(
                f"| {w.label} | {c['contender']} | {_timing(m, _us)} | {peer or '-'} | "
                f"{_us(ref['median_s']) if ref else '-'} | {_over(m, ref)} |"
            )
    return "\n".join(lines)


def dropout(record: dict[str, Any]) -> str:
    """Each engine's training step with dropout (the dropout workloads) against the same
    layer without it, in the same run (issue 28 asks at most 1.3x)."""
    rows = _lookup(record)
    every = [Workload.from_dict(w) for w in record["workloads"]]
    workloads = [w for w in every if w.group == "dropout" and w.dropout]
    # the twin without dropout: in the dropout group, or (shape S) the shape-S workload
    base = {(w.layer, w.batch, w.time, w.input_dim, w.units): w for w in every
            if w.config == "documented" and not w.dropout and not w.stateful}  # fmt: skip
    lines = [
        "| engine | layer | shape (batch, time, input, units) | no dropout ms | "
        "dropout ms, median (IQR) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for c in record["contenders"]:
        name = c["contender"]
        for w in workloads:
            plain = base.get((w.layer, w.batch, w.time, w.input_dim, w.units))
            if plain is None:
                continue
            m = rows.get((name, w.key), {}).get("train")
            ref = rows.get((name, plain.key), {}).get("train")
            if not m or not ref:
                continue
            shape = f"{w.batch}, {w.time}, {w.input_dim}, {w.units}"
            lines.append(f"| {name} | {w.layer} | {shape} | {_ms(ref['median_s'])} | "
                         f"{_timing(m)} | {_over(m, ref)} |")  # fmt: skip
    return "\n".join(lines)


def low_precision(record: dict[str, Any]) -> str:
    """Each engine's bfloat16 and float16 layers (the precision workloads) against the
    float32 layer of the same shape and configuration, in the same run."""
    rows = _lookup(record)
    every = [Workload.from_dict(w) for w in record["workloads"]]
    base = {(w.layer, w.config, w.batch, w.time, w.input_dim, w.units): w for w in every
            if w.dtype == "float32" and not w.dropout and not w.stateful}  # fmt: skip
    lines = [
        "| engine | layer | dtype | forward: float32 ms | ms, median (IQR) | ratio | "
        "train: float32 ms | ms, median (IQR) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in record["contenders"]:
        name = c["contender"]
        for w in (w for w in every if w.group == "precision"):
            plain = base.get((w.layer, w.config, w.batch, w.time, w.input_dim, w.units))
            got = rows.get((name, w.key), {})
            ref = rows.get((name, plain.key), {}) if plain else {}
            cells = []
            for step in ("forward", "train"):
                m, r = got.get(step), ref.get(step)
                cells += ["-", "-", "-"] if not m or not r else [
                    _ms(r["median_s"]), _timing(m), _over(m, r)]  # fmt: skip
            if cells.count("-") == len(cells):
                continue
            layer = f"{w.layer} ({'documented' if w.config == 'documented' else 'fused-eligible'})"
            lines.append(f"| {name} | {layer} | {w.dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _engine_of(contender: str) -> str:
    """``multirnn:NAME`` of a cell contender (``multirnn:NAME+cell``), else the name."""
    for variant in CELL_VARIANTS:
        contender = contender.removesuffix("+" + variant)
    return contender


def users_cells(record: dict[str, Any]) -> str:
    """Each engine's user-written LSTM cell (``multirnn:NAME+cell``) against the built-in
    LSTM's own cell through the same ``RNN(cell)`` (``+lstmcell``: its shared step under the
    framework's autodiff) and
    the built-in layer (``multirnn:NAME``) on the shape-S LSTM workloads."""
    rows = _lookup(record)
    lines = [
        "| engine | workload | forward: cell ms | LSTMCell ms | built-in ms | "
        "cell / LSTMCell | cell / built-in | train: cell ms | LSTMCell ms | built-in ms | "
        "cell / LSTMCell | cell / built-in |",
        "|" + "---|" * 12,
    ]
    for c in record["contenders"]:
        name = c["contender"]
        if not name.startswith("multirnn:") or not name.endswith("+" + CELL_VARIANT):
            continue
        builtin = _engine_of(name)
        shared = f"{builtin}+{LSTMCELL_VARIANT}"
        for data in record["workloads"]:
            if data["group"] != "S" or data["layer"] != "LSTM":
                continue
            key = data["key"]
            mine = rows.get((name, key), {})
            if "forward" not in mine:
                continue
            theirs, cell = rows.get((builtin, key), {}), rows.get((shared, key), {})
            cells = []
            for part in ("forward", "train"):
                m, g, r = mine.get(part), cell.get(part), theirs.get(part)
                cells += [_ms(x["median_s"]) if x else "-" for x in (m, g, r)]
                cells += [_over(m, g), _over(m, r)]
            label = Workload.from_dict(data).label
            lines.append(f"| {builtin} | {label} | " + " | ".join(cells) + " |")
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
    """time_vs_length.png (train step vs sequence length), time_per_step_vs_length.png
    (time per step vs sequence length, forward and train) and shape_s.png (bar chart)."""
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
    path = _per_step_plot(record, directory / "time_per_step_vs_length.png", plt)
    if path:
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


#: the marker of each LSTM workload group in the time-per-step plot
_STEP_MARKERS = {"time": "o", "S": "o", "small": "s", "streaming": "^"}


def _per_step_plot(record: dict[str, Any], path: Path, plt) -> Path | None:
    """Median time divided by the number of steps against the number of steps (LSTM), one
    colour per contender and configuration; forward and train panels. The sequence-length
    sweep (with shape S) is drawn as lines, the small and streaming workloads (smaller
    batches, so not on those lines) as lone markers. Where the per-call cost dominates,
    the time per step falls as the sequence grows."""
    points: dict[tuple[str, str], dict[str, list[tuple[str, int, float]]]] = {}
    shapes: dict[str, Workload] = {}
    for group in _STEP_MARKERS:
        for r in rows(record, group):
            w = r["workload"]
            if w.layer != "LSTM":
                continue
            shapes.setdefault(group, w)
            series = points.setdefault((r["contender"], w.config), {})
            for mode in ("forward", "train"):
                if r.get(mode):
                    step_us = r[mode]["median_s"] / w.time * 1e6
                    series.setdefault(mode, []).append((group, w.time, step_us))
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    names = sorted({name for name, _ in points})
    palette = plt.get_cmap("tab20")  # a colour per contender, a line style per configuration
    for (name, config), series in sorted(points.items()):
        colour = palette(names.index(name) % palette.N)
        style = "-" if config == "fused" else "--"
        for ax, mode in zip(axes, ("forward", "train")):
            found = series.get(mode, [])
            label = f"{name} [{config}]"  # once per panel: the legend's entry for the colour
            line = sorted((t, v) for g, t, v in found if g in ("time", "S"))
            if line:
                ax.plot(*zip(*line), marker="o", linestyle=style, color=colour, label=label)
                label = None
            for group in ("small", "streaming"):
                alone = [(t, v) for g, t, v in found if g == group]
                if alone:
                    ax.plot(*zip(*alone), marker=_STEP_MARKERS[group], linestyle="none",
                            color=colour, label=label)  # fmt: skip
                    label = None
    line_shape = shapes.get("time") or shapes.get("S")
    keys = []
    if line_shape:
        keys.append(f"lines: batch {line_shape.batch}, input {line_shape.input_dim}, "
                    f"units {line_shape.units}")  # fmt: skip
    if "small" in shapes:
        keys.append(f"squares: batch {shapes['small'].batch} (small)")
    if "streaming" in shapes:
        keys.append(f"triangles: batch {shapes['streaming'].batch}, one step per call, stateful")
    for ax, mode in zip(axes, ("forward", "train step")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time steps per call")
        ax.set_title(f"LSTM {mode}: time per step")
    axes[0].set_ylabel("us per time step (median / steps)")
    # beside the panels, off the points; the forward panel has every contender
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper left",
               bbox_to_anchor=(1.0, 0.95), fontsize=7)  # fmt: skip
    fig.suptitle("; ".join(keys), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


#: captions of the plots in the report, by file name
_CAPTIONS = {
    "time_vs_length": "Training step against sequence length (LSTM, batch 32).",
    "time_per_step_vs_length": (
        "Time per step against sequence length (LSTM): each call's median divided by its "
        "number of steps. Where a line falls as the sequence grows, the fixed cost of a "
        "call is spread over more steps; the squares (small: batch 8, 10 steps) and "
        "triangles (streaming: batch 1, one step per call) sit where that cost dominates."
    ),
    "shape_s": "Shape S, every layer and configuration (training step, or forward where a "
    "contender has no autodiff).",
}


def report(
    record: dict[str, Any],
    plot_paths: list[Path] = (),
    relative_to: Path | None = None,
    notes: str | Path | None = None,
) -> str:
    """The Markdown page. ``notes``: a hand-written Markdown file (``benchmarks/notes.md``)
    appended verbatim under "Measurements of past changes", so that one-off before/after
    measurements live in the page and survive its regeneration."""
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
        *_cpu_lines(m),
        f"- Python {m['python']}; thread variables in the environment: {m['thread_env'] or 'none'}",
        f"- Measured float32 matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['library']}, "
        f"{peak['size']}x{peak['size']})",
        *_recurrent_product_line(record),
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
        "others are traced without it. A `+cell` contender is a user-written LSTM cell run",
        "by the engine's `RNN(cell)`, a `+lstmcell` one the built-in LSTM's cell run by it",
        "(see *Users' cells*).",
        "",
        "*Small* is batch 8, 10 steps. *Streaming* is batch 1, one step per call, the",
        "states carried from call to call: multirnn and Keras through a `stateful=True`",
        "layer, torch.nn and Flax NNX (the cell's jitted step) with the caller passing the",
        "states back in. On JAX, multirnn's and Keras's stateful layers are called eagerly:",
        "neither carries its states through `jit` (an eager call of a built-in multirnn",
        "layer runs one compiled program). Everything else is called as in the other",
        "workloads (PyTorch eagerly, TensorFlow through `tf.function`). Streaming is timed",
        "forward only: training through carried states is not measured.",
        "",
    ]
    for group, title in (
        ("S", "Shape S: batch 32, time 100, input 64, units 128, float32"),
        ("time", "Sequence length sweep (LSTM)"),
        ("units", "Units sweep (LSTM)"),
        ("latency", "Batch 1 (latency)"),
        ("small", "Small: batch 8, 10 steps"),
        ("streaming", "Streaming: batch 1, one step per call, stateful (forward only)"),
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
    small = targets(record, "small")
    if small.count("\n") > 1:
        lines += [
            "The same references on the small shape (batch 8, 10 steps), where the work",
            "around the kernel weighs more (issue 18 asks at most 1.1x of torch.nn.LSTM for",
            "the torch engine's fused-eligible LSTM):",
            "",
            small,
            "",
        ]
    lines += _per_step_section(record)
    lines += _per_call_section(record)
    lines += _dropout_section(record)
    lines += _precision_section(record)
    lines += _users_cells_section(record)
    for path in plot_paths:
        rel = path.relative_to(relative_to) if relative_to else path
        caption = _CAPTIONS.get(path.stem)
        lines += [f"![{path.stem}]({rel.as_posix()})", ""] + ([caption, ""] if caption else [])
    missing = skipped(record)
    if missing:
        lines += ["## Not run", "", *missing, ""]
    if notes is not None:
        lines += [
            "## Measurements of past changes",
            "",
            f"Hand-written in `{Path(notes).as_posix()}` (kept when this page is regenerated).",
            "",
            Path(notes).read_text(encoding="utf-8").rstrip("\n"),
            "",
        ]
    return "\n".join(lines)


def _cpu_lines(m: dict[str, Any]) -> list[str]:
    """Which core and which BLAS (records made before they were kept have neither)."""
    lines = []
    if m.get("cpu_id") or m.get("cpu_flags"):
        flags = ", ".join(m.get("cpu_flags") or []) or "none of those reported"
        lines.append(f"- CPU identity: {m.get('cpu_id') or 'unknown'}; vector features: {flags}")
    if m.get("blas"):
        lines.append("- BLAS: " + "; ".join(f"{k}: {v}" for k, v in m["blas"].items()))
    return lines


def _recurrent_product_line(record: dict[str, Any]) -> list[str]:
    product = record.get("recurrent_product")
    if not product:
        return []
    b, u, w = product["shape"]
    peak = record["matmul_peak"]["gflops"]
    return [
        f"- One step's recurrent product alone (({b}, {u}) x ({u}, {w}), float32, "
        f"{product['library']}): {_us(product['seconds'])} us, {product['gflops']:.1f} GFLOP/s "
        f"({100 * product['gflops'] / peak:.0f}% of the matmul peak): the floor under an "
        "LSTM's time per step at shape S (see *Time per step*)"
    ]


def per_step(record: dict[str, Any]) -> str:
    """Every contender's time per step on the shape-S LSTM workloads (forward median over
    the number of steps) against one step's recurrent product alone."""
    product = record.get("recurrent_product")
    if not product:
        return ""
    rows = _lookup(record)
    lines = [
        "| workload | contender | forward us per step | recurrent product us | ratio |",
        "|---|---|---|---|---|",
    ]
    for data in record["workloads"]:
        w = Workload.from_dict(data)
        if w.group != "S" or w.layer != "LSTM":
            continue
        for c in record["contenders"]:
            m = rows.get((c["contender"], w.key), {}).get("forward")
            if not m:
                continue
            step, floor = m["median_s"] / w.time, product["seconds"]
            lines.append(f"| {w.label} | {c['contender']} | {_us(step)} | {_us(floor)} | "
                         f"{step / floor:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def _section(title: str, body: str, *intro: str) -> list[str]:
    """A report section: its title, a paragraph, then the table ``body``; nothing when
    the table has no rows (the record has none of its workloads)."""
    if body.count("\n") < 2:
        return []
    return [f"## {title}", "", *intro, "", body, ""]


def _per_step_section(record: dict[str, Any]) -> list[str]:
    return _section(
        "Time per step", per_step(record),
        "Shape S, LSTM, forward: each contender's median over the 100 steps, against one",
        "step's recurrent product alone (Machine, above). A loop cannot run a step faster",
        "than that product; what it spends beyond it is the step's elementwise work and the",
        "loop's own cost. Issue 28 asks the native loop to run at the matmul limit on any",
        "x86 CPU.",
    )  # fmt: skip


def _per_call_section(record: dict[str, Any]) -> list[str]:
    streamed = next((Workload.from_dict(w) for w in record["workloads"]
                     if w["group"] == "streaming"), None)  # fmt: skip
    if streamed is None:
        return []
    work = streamed.flops() / (record["matmul_peak"]["gflops"] * 1e9)
    return _section(
        "Per-call cost (batch 1, one step)", per_call(record),
        "The fixed cost of a call: the median time of one step at batch 1, the states",
        "carried from call to call (the streaming workloads). The matrix products of such",
        f"a step ({streamed.layer}, input {streamed.input_dim}, units {streamed.units}) take",
        f"about {work * 1e6:.2g} us at the measured matmul peak, so nearly all of this time",
        "is the work around the kernel (argument checks, state handling, dispatch into the",
        "framework) and the framework's own cost of a call. Each engine is compared with the",
        "peer its issues name: torch.nn for torch (issue 18 asks at most 1.15x of",
        "torch.nn.LSTM carrying (h, c) itself), Keras 3 on TensorFlow traced the same way",
        "for tensorflow, Flax NNX for jax. Forward only.",
    )  # fmt: skip


def _dropout_section(record: dict[str, Any]) -> list[str]:
    return _section(
        "Dropout", dropout(record),
        "The training step of Keras-2-style dropout (`dropout=0.2, recurrent_dropout=0.2`,",
        "the default `implementation`: one mask per gate, on the inputs and on the",
        "recurrent state) against the same layer without dropout, documented defaults,",
        "each engine in its own process. Issue 28 asks at most 1.3x.",
    )  # fmt: skip


def _precision_section(record: dict[str, Any]) -> list[str]:
    return _section(
        "Low precision", low_precision(record),
        "bfloat16 and float16 layers (`dtype=`) at shape S against the float32 layer, each",
        "engine in its own process. A low-precision layer computes in float32 inside a call",
        "and rounds what it returns (docs/semantics.md), so on a CPU it is not expected to",
        "be faster: it halves the memory of its weights and of what it returns.",
    )  # fmt: skip


def _users_cells_section(record: dict[str, Any]) -> list[str]:
    return _section(
        "Users' cells", users_cells(record),
        "A user-written LSTM cell (`multirnn/bench/user_cell.py`: one plain `step`, no",
        "hand-written backward) run by each engine's `RNN(cell)` (contender",
        "`multirnn:NAME+cell`) on the shape-S workloads, same weights and inputs, against",
        "two things. *LSTMCell* is the built-in LSTM's own cell (`multirnn.LSTMCell`)",
        "through the same `RNN(cell)` (contender `multirnn:NAME+lstmcell`): the built-in",
        "LSTM's shared step differentiated by the framework, which is what a user's cell",
        "gets. *Built-in* is the `multirnn.LSTM` layer itself, with",
        "what only the built-in cells have: fused kernels (the fused-eligible row, where",
        "one applies on this machine), hand-written backward passes, and on PyTorch the",
        "native loop (both rows).",
    )  # fmt: skip
