"""The ``multirnn`` command: ``conformance`` (check engines against the reference),
``info`` (engines and versions) and ``demo`` (every documented layer on one engine)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import multirnn
from multirnn import engines

DEMO_CASES: tuple[tuple[str, dict], ...] = (
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu", "return_sequences": True}),
    ("LSTM", {}),
    ("LSTM", {"return_sequences": True, "return_state": True}),
    ("LSTM", {"go_backwards": True, "implementation": 1}),
    ("LSTM", {"recurrent_activation": "sigmoid", "implementation": 2, "unroll": True}),
    ("LSTM", {"stateful": True}),
    ("GRU", {}),
    ("GRU", {"reset_after": True, "return_state": True}),
    ("GRU", {"dropout": 0.2, "recurrent_dropout": 0.2}),
)


def _info(args: argparse.Namespace) -> int:
    print(f"multirnn {multirnn.__version__} on Python {platform.python_version()}")
    print(f"selection: {engines.ENV_VAR}={os.environ.get(engines.ENV_VAR, '')!r}")
    try:
        print(f"selected engine: {engines.backend()}")
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        print(f"selection error: {exc}")
    width = max(len(r["name"]) for r in engines.describe())
    for row in engines.describe():
        mark = "*" if row["selected"] else " "
        if row["installed"]:
            state = f"installed ({row['framework_version']})"
        else:
            state = f"not installed -> {row['install']}" if row["install"] else row["description"]
        print(f" {mark} {row['name']:<{width}}  {state}")
    print("(* = selected engine)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    eng = engines.engine(args.backend)
    convert = getattr(eng.module, "from_numpy", lambda a: a)
    # Engines whose training calls need more than ``training=True`` (JAX: a random key).
    training_kwargs = getattr(eng.module, "training_kwargs", dict)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    print(f"engine {eng.name}: inputs (batch 2, time 5, features 3), second row right-padded")
    for layer, options in DEMO_CASES:
        cls = eng.layer_class(layer)
        instance = cls(4, seed=0, **options)
        dtype = np.float32 if "32" in str(getattr(instance, "dtype", "")) else np.float64
        training = bool(options.get("dropout"))
        result = instance(
            convert(x.astype(dtype)),
            mask=convert(mask),
            training=training,
            **(training_kwargs() if training else {}),
        )
        parts = result if isinstance(result, list) else [result]
        shapes = " + ".join(str(tuple(p.shape)) for p in parts)
        text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        print(f"  {layer}(4{', ' + text if text else ''}) -> {shapes}")
    print("all documented layers ran")
    return 0


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _default_engines() -> list[str]:
    from multirnn.conformance.adapters import installed_oracles

    return engines.available() + installed_oracles()


def _conformance(args: argparse.Namespace) -> int:
    if args.keras_backend:
        os.environ["KERAS_BACKEND"] = args.keras_backend
    from multirnn import conformance as conf
    from multirnn.conformance import environment
    from multirnn.conformance import report as rep

    names = _split(args.engines) or _default_engines()
    dtypes = _split(args.dtype) or ["float32", "float64"]
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        print(f"multirnn conformance: --dtype accepts float32, float64; got {bad}", file=sys.stderr)
        return 2
    if args.case:
        try:
            cases = [conf.Case.from_id(c) for c in args.case]
        except (ValueError, TypeError) as exc:
            print(f"multirnn conformance: --case: {exc}", file=sys.stderr)
            return 2
    elif args.full:
        try:
            cases = conf.full_cases(args.count, args.seed)
        except ImportError:
            print("multirnn conformance: --full needs hypothesis (pip install hypothesis)",
                  file=sys.stderr)  # fmt: skip
            return 2
    else:
        cases = conf.quick_cases()
    mode = "cases given" if args.case else ("full" if args.full else "quick")
    runs = conf.runner.prepare(names, args.known_gaps)  # imports the engines' frameworks
    env = environment.collect([r.adapter for r in runs])
    print(rep.header(mode, names, len(cases), dtypes, env), flush=True)
    progress = None if args.no_progress else conf.runner.progress_bar()
    result = conf.run(names, cases, dtypes, progress=progress, runs=runs)
    print(rep.table(result))
    print(rep.summary(result))
    if result.failures:
        print(rep.failures(result))
    print(rep.closing(result))
    if args.json:
        Path(args.json).write_text(rep.to_json(result))
    if args.junit:
        Path(args.junit).write_text(rep.to_junit(result))
    return 0 if result.ok else 1


def _bench(args: argparse.Namespace) -> int:
    import json

    from multirnn.bench import harness, render

    if args.from_json:
        record = json.loads(Path(args.from_json).read_text())
    else:
        names = [f"multirnn:{e}" for e in _split(args.engines)] if args.engines else None
        if args.peers is not None:
            names = (names or harness.engine_contenders()) + _split(args.peers)
        mode = "full" if args.full else "smoke" if args.smoke else "quick"
        layers = _split(args.layers) or None
        unknown = [x for x in layers or [] if x not in harness.LAYERS]
        if unknown:
            print(f"multirnn bench: --layers accepts {', '.join(harness.LAYERS)}; got {unknown}",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(f"multirnn bench ({mode}); matrix-multiply peak and machine first", file=sys.stderr)
        memory = True if args.memory else False if args.no_memory else None
        record = harness.run(names, layers, mode, memory=memory, rounds=args.rounds,
                             progress=lambda text: print(text, file=sys.stderr))  # fmt: skip
    if args.json:  # first: a long run is saved even if rendering fails
        Path(args.json).write_text(json.dumps(record, indent=1))
    print(render.table(record, "S"))
    for line in render.skipped(record):
        print(line)
    written = render.plots(record, args.plot) if args.plot else []
    if args.report:
        report_path = Path(args.report)
        report_path.write_text(render.report(record, written, relative_to=report_path.parent))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multirnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser(
        "conformance",
        help="check engines against the NumPy reference (and the peers' own layers as "
        "further oracles)",
    )
    conf.add_argument(
        "--engines",
        help="comma-separated engine or oracle names: keras, torch.nn, flax.nnx, onnxruntime "
        "(default: every installed engine and oracle)",
    )
    conf.add_argument("--dtype", help="float32,float64 (default: both)")
    size = conf.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the deterministic grid (default)")
    size.add_argument("--full", action="store_true", help="grid plus Hypothesis-generated cases")
    conf.add_argument("--count", type=int, default=300, help="Hypothesis cases in --full")
    conf.add_argument("--seed", type=int, default=0, help="Hypothesis seed in --full")
    conf.add_argument("--case", action="append", help="run only this case id (repeatable)")
    conf.add_argument("--known-gaps", action="append", default=[], help="extra known-gap file")
    conf.add_argument("--keras-backend", help="KERAS_BACKEND for the keras oracle")
    conf.add_argument("--json", help="write every result as JSON here")
    conf.add_argument("--junit", help="write a JUnit XML report here")
    conf.add_argument("--no-progress", action="store_true", help="no progress bar")
    conf.set_defaults(run=_conformance)
    bench = sub.add_parser("bench", help="time engines against torch.nn, Keras 3 and Flax NNX")
    bench.add_argument(
        "--engines",
        help="multirnn engines, NAME or NAME+VARIANT such as tensorflow+xla "
        "(default: every installed one and its variants)",
    )
    bench.add_argument(
        "--peers",
        help="peers: torch.nn, keras:tensorflow, keras:tensorflow+xla, keras:jax, "
        "keras:torch, flax.nnx (default: every installed one)",
    )
    bench.add_argument("--layers", help="lstm,gru,simple_rnn (default: all)")
    speed = bench.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="shape S and short sweeps (default)")
    speed.add_argument("--full", action="store_true", help="full sweeps, peak memory, more repeats")
    speed.add_argument("--smoke", action="store_true", help="tiny shapes: checks the harness runs")
    memory = bench.add_mutually_exclusive_group()
    memory.add_argument(
        "--memory", action="store_true", help="measure peak memory (default: --full)"
    )
    memory.add_argument("--no-memory", action="store_true", help="skip peak-memory workers")
    bench.add_argument("--rounds", type=int, help="round-robin passes, best median kept "
                       "(default 2; 1 for --smoke)")  # fmt: skip
    bench.add_argument("--json", help="write the whole record here")
    bench.add_argument("--plot", help="directory for time_vs_length.png and shape_s.png")
    bench.add_argument("--report", help="write the Markdown report (e.g. docs/benchmarks.md)")
    bench.add_argument("--from-json", help="render a saved record instead of running")
    bench.set_defaults(run=_bench)
    sub.add_parser("info", help="list engines, what is installed and selected").set_defaults(
        run=_info
    )
    demo = sub.add_parser("demo", help="run every documented layer on one engine")
    demo.add_argument("--backend", default=None, help="engine name (default: the selected one)")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        print(f"multirnn: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
