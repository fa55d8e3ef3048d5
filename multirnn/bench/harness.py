"""Running a benchmark: workers per contender, the machine's matrix-multiply throughput,
and the comparison of every contender with the fastest peer."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from multirnn import engines
from multirnn.bench import contenders
from multirnn.bench.workloads import LAYERS, Workload, suite

MODES = {"smoke": (2, 0.2), "quick": (5, 2.0), "full": (15, 6.0)}  # repeats, seconds per timing


#: the CPU features that decide which kernels a BLAS library runs (reported, not used)
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def blas() -> dict[str, str]:
    """Which BLAS the frameworks multiply with: PyTorch's build (MKL or OpenBLAS, oneDNN)
    and NumPy's. A vendor library may take another code path on another vendor's CPU
    (MKL on AMD), so speed figures name it."""
    out: dict[str, str] = {}
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy"] = f"{config.get('name', '?')} {config.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict form
        pass
    try:
        import torch

        text = torch.__config__.show()
        info = next((p.split("=", 1)[1] for p in text.replace(",", " ").split()
                     if p.startswith("BLAS_INFO=")), "?")  # fmt: skip
        parts = [info]
        mkl = re.search(r"Math Kernel Library Version (\d[\d.]*)", text)
        onednn = re.search(r"(?:MKL-DNN|oneDNN) v?(\d[\d.]*)", text)
        parts += [f"MKL {mkl[1]}"] if mkl else []
        parts += [f"oneDNN {onednn[1]}"] if onednn else []
        out["torch"] = ", ".join(parts)
    except ImportError:
        pass
    return out


def machine() -> dict[str, Any]:
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = float("nan")
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return {
        "cpu": cpu,
        # a VM may name only the brand ("AMD EPYC"): vendor, family and model say which core
        "cpu_id": " ".join(
            f"{k} {info[k]}" for k in ("vendor_id", "cpu family", "model") if k in info
        ),
        "cpu_flags": [f for f in VECTOR_FLAGS if f in flags],
        "blas": blas(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "thread_env": threads,
    }


def matmul_peak(size: int = 1024, repeats: int = 7) -> dict[str, Any]:
    """Measured float32 matrix-multiply throughput (GFLOP/s): the hardware ceiling that
    achieved fractions are quoted against. PyTorch's BLAS when installed, else NumPy's."""
    try:
        import torch

        a, b = torch.randn(size, size), torch.randn(size, size)
        run, library = (lambda: torch.mm(a, b)), f"torch {torch.__version__}"
    except ImportError:
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        b = a.copy()
        run, library = (lambda: a @ b), f"numpy {np.__version__}"
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"gflops": 2 * size**3 / np.median(times) / 1e9, "library": library, "size": size}


def recurrent_product(batch: int = 32, units: int = 128, gates: int = 4,
                      repeats: int = 7) -> dict[str, Any]:  # fmt: skip
    """The time of one step's recurrent product alone at shape S, ``(batch, units) x
    (units, gates*units)`` float32 (the LSTM's): the floor under a loop's time per step,
    whatever the loop around it. PyTorch's ``mm`` when installed, else NumPy's."""
    try:
        import torch

        h, U = torch.randn(batch, units), torch.randn(units, gates * units)
        out = torch.empty(batch, gates * units)
        run, library = (lambda: torch.mm(h, U, out=out)), f"torch {torch.__version__}"
    except ImportError:
        rng = np.random.default_rng(0)
        h = rng.standard_normal((batch, units), dtype=np.float32)
        U = rng.standard_normal((units, gates * units), dtype=np.float32)
        out = np.empty((batch, gates * units), np.float32)
        run, library = (lambda: np.matmul(h, U, out=out)), f"numpy {np.__version__}"
    calls = 200
    for _ in range(calls):
        run()
    medians = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        medians.append((time.perf_counter() - t0) / calls)
    seconds = float(np.median(medians))
    return {"seconds": seconds, "gflops": 2 * batch * units * gates * units / seconds / 1e9,
            "shape": [batch, units, gates * units], "library": library}  # fmt: skip


def engine_contenders() -> list[str]:
    """Every installed engine, and each of its benchmark variants ("multirnn:NAME+VARIANT";
    "+cell" a user-written LSTM cell through ``RNN(cell)``, "+lstmcell" the built-in
    LSTM's cell through it)."""
    names = []
    for n in engines.available():
        names.append(f"multirnn:{n}")
        names += [f"multirnn:{n}+{v}" for v in engines.registry()[n].benchmark_variants]
        if n != "numpy":  # the reference engine is not timed against its own cells
            names += [f"multirnn:{n}+{v}" for v in contenders.CELL_VARIANTS]
    return names


def default_contenders() -> list[str]:
    names = engine_contenders()
    names += [n for n, make in contenders.PEERS.items() if make().available()]
    return names


#: the worker process's command after the interpreter (tests put a stand-in here)
WORKER = ["-m", "multirnn.bench.worker"]

#: seconds a worker gets to end after each of SIGINT and SIGTERM, before the next signal
STOP_GRACE_S = 5.0


def stop(proc: subprocess.Popen, grace: float | None = None) -> None:
    """End a worker gently, so that it unwinds (its ``finally`` blocks, its own children,
    a native-loop build's locks): a moment to end of itself (a terminal's Ctrl-C reached it
    too), then SIGINT, SIGTERM and SIGKILL, ``grace`` seconds apart. A further Ctrl-C while
    waiting moves on to the next signal."""
    grace = STOP_GRACE_S if grace is None else grace
    sends = [None, proc.terminate, proc.kill]
    if os.name != "nt":  # Windows has no SIGINT for a process outside our console group
        sends.insert(1, lambda: proc.send_signal(signal.SIGINT))
    waits = [min(0.5, grace)] + [grace] * (len(sends) - 2) + [None]
    for send, wait in zip(sends, waits):
        if proc.poll() is not None:
            break
        try:
            if send is not None:
                send()
            proc.wait(wait)
            break
        except ProcessLookupError:  # ended meanwhile
            break
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _worker(job: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen(
        [sys.executable, *WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stdout, stderr = proc.communicate(json.dumps(job), timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        return {"contender": job["contender"], "failed": f"timed out after {timeout:g} s",
                "results": []}  # fmt: skip
    except BaseException:  # Ctrl-C (KeyboardInterrupt): stop the worker, then unwind
        stop(proc)
        raise
    if proc.returncode != 0:
        return {"contender": job["contender"], "failed": stderr[-2000:], "results": []}
    return json.loads(stdout)


def run(
    names: list[str] | None = None,
    layers: list[str] | None = None,
    mode: str = "quick",
    *,
    memory: bool | None = None,
    rounds: int | None = None,
    progress=None,
) -> dict[str, Any]:
    """Benchmark ``names`` (default: every installed engine and peer) on the ``mode`` suite
    (smoke, quick or full); returns the whole record (machine, workloads, results)."""
    layers = [LAYERS.get(name, name) for name in (layers or list(LAYERS))]
    workloads = suite(layers, mode)
    names = names or default_contenders()
    repeats, budget = MODES[mode]
    memory = mode == "full" if memory is None else memory
    rounds = (1 if mode == "smoke" else 2) if rounds is None else rounds
    record: dict[str, Any] = {
        "mode": mode,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "matmul_peak": matmul_peak(),
        "recurrent_product": recurrent_product(),
        "workloads": [w.to_dict() for w in workloads],
        "contenders": [],
    }
    record["rounds"] = rounds
    if progress:  # speed depends on the CPU and the BLAS path: say which, before anything
        m, product = record["machine"], record["recurrent_product"]
        blas_path = "; ".join(f"{k}: {v}" for k, v in m["blas"].items()) or "unknown"
        progress(f"CPU: {m['cpu']} ({m['cpu_id'] or 'no id'}; "
                 f"{', '.join(m['cpu_flags']) or 'no vector features reported'}), "
                 f"{m['cores']} cores; BLAS: {blas_path}")  # fmt: skip
        progress(f"float32 matmul peak {record['matmul_peak']['gflops']:.1f} GFLOP/s; one "
                 f"step's recurrent product (shape S, LSTM) {product['seconds'] * 1e6:.0f} us "
                 f"({product['gflops']:.1f} GFLOP/s)")  # fmt: skip
    best: dict[str, dict] = {}
    for round_index in range(rounds):  # round-robin, so a slow spell hits everyone alike
        for index, name in enumerate(names, 1):
            if progress:
                progress(f"[round {round_index + 1}/{rounds}, {index}/{len(names)}] {name}: "
                         f"{len(workloads)} workloads")  # fmt: skip
            job = {"contender": name, "workloads": record["workloads"], "repeats": repeats,
                   "budget_s": budget}  # fmt: skip
            outcome = _worker(job, timeout=3600)
            best[name] = outcome if name not in best else _faster(best[name], outcome)
    for name in names:
        outcome = best[name]
        if memory:
            for w in workloads:
                if w.group == "S":
                    job = {"contender": name, "workloads": [w.to_dict()], "repeats": repeats,
                           "budget_s": budget, "memory": True}  # fmt: skip
                    mem = _worker(job, timeout=900)
                    for row in outcome.get("results", []):
                        for mrow in mem.get("results", []):
                            if (
                                row["workload"] == mrow["workload"]
                                and "peak_rss_growth_bytes" in mrow
                            ):
                                row.setdefault("train", {})["peak_rss_growth_bytes"] = mrow[
                                    "peak_rss_growth_bytes"
                                ]
        record["contenders"].append(outcome)
    annotate(record)
    return record


def _faster(a: dict, b: dict) -> dict:
    """Merge two rounds of one contender: per workload and mode, the round with the lower
    median (its spread and first-call time come with it)."""
    if "failed" in a:
        return b
    rows_b = {row["workload"]: row for row in b.get("results", [])}
    for row in a["results"]:
        other = rows_b.get(row["workload"], {})
        for mode in ("forward", "train"):
            if mode in row and mode in other and other[mode]["median_s"] < row[mode]["median_s"]:
                row[mode] = other[mode]
    return a


def annotate(record: dict[str, Any]) -> None:
    """Add GFLOP/s, the fraction of the matmul peak and the ratio to the fastest peer."""
    peak = record["matmul_peak"]["gflops"]
    workloads = {w["key"]: Workload.from_dict(w) for w in record["workloads"]}
    best: dict[tuple[str, str], float] = {}
    for c in record["contenders"]:
        if c.get("kind") != "peer":
            continue
        for row in c["results"]:
            for mode in ("forward", "train"):
                if mode in row:
                    key = (row["workload"], mode)
                    best[key] = min(best.get(key, float("inf")), row[mode]["median_s"])
    for c in record["contenders"]:
        for row in c["results"]:
            w = workloads[row["workload"]]
            for mode in ("forward", "train"):
                if mode not in row:
                    continue
                m = row[mode]
                m["gflops"] = w.flops(train=mode == "train") / m["median_s"] / 1e9
                m["peak_fraction"] = m["gflops"] / peak
                ref = best.get((row["workload"], mode))
                m["vs_fastest_peer"] = m["median_s"] / ref if ref else None
