"""The ``multirnn`` command: ``info`` (engines and versions) and ``demo`` (every documented
layer and option, run on one engine)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence

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
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    print(f"engine {eng.name}: inputs (batch 2, time 5, features 3), second row right-padded")
    for layer, options in DEMO_CASES:
        cls = eng.layer_class(layer)
        instance = cls(4, seed=0, **options)
        dtype = np.dtype(getattr(instance, "dtype", "float64") or "float64")
        result = instance(
            convert(x.astype(dtype)),
            mask=convert(mask),
            training=bool(options.get("dropout")),
        )
        parts = result if isinstance(result, list) else [result]
        shapes = " + ".join(str(tuple(np.shape(p))) for p in parts)
        text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        print(f"  {layer}(4{', ' + text if text else ''}) -> {shapes}")
    print("all documented layers ran")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multirnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
