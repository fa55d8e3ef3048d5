"""One contender in its own process: ``python -m multirnn.bench.worker`` reads a JSON job
from stdin and writes JSON results to stdout. Separate processes keep frameworks (and
Keras backends) from sharing state, and give every contender the same starting conditions."""

from __future__ import annotations

import json
import sys
import time
import traceback

from multirnn import precision
from multirnn.bench import contenders, timing
from multirnn.bench.workloads import Workload


def run_job(job: dict) -> dict:
    contender = contenders.make(job["contender"])
    t0 = time.perf_counter()
    contender.setup()
    out = {
        "contender": contender.name,
        "kind": contender.kind,
        "import_s": time.perf_counter() - t0,
        "versions": contender.versions(),
        "threads": contender.threads(),
        "results": [],
    }
    for data in job["workloads"]:
        workload = Workload.from_dict(data)
        row = {"workload": workload.key}
        try:
            if workload.dropout and contender.kind != "engine":
                raise contenders.Unsupported("dropout is timed on multirnn's engines only")
            if workload.group == "precision" and contender.kind != "engine":
                raise contenders.Unsupported("low precision is timed on multirnn's engines only")
            try:  # bfloat16 on the host needs ml_dtypes (with JAX and TensorFlow)
                precision.numpy_dtype(workload.dtype)
            except ImportError as exc:
                raise contenders.Unsupported(str(exc)) from None
            forward, train = contender.prepare(workload)
            if job.get("memory"):  # a fresh process per workload: train steps only
                if train is not None:
                    row["peak_rss_growth_bytes"] = timing.peak_growth(train)
            else:
                kw = {"repeats": job["repeats"], "budget_s": job["budget_s"]}
                row["forward"] = timing.measure(forward, **kw)
                if train is not None:
                    row["train"] = timing.measure(train, **kw)
        except contenders.Unsupported as exc:
            row["unsupported"] = str(exc)
        except Exception as exc:  # report, and go on with the other workloads
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc(limit=4)
        out["results"].append(row)
    return out


def main() -> int:
    try:
        job = json.loads(sys.stdin.read())
        json.dump(run_job(job), sys.stdout)
    except KeyboardInterrupt:  # the harness stops its workers with SIGINT first
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
