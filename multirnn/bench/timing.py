"""Timing that does not flatter anyone: the first call (tracing/compilation included) is
reported on its own, then warm calls are repeated and summarised by their median and spread.
Every timed function blocks until its result exists (the contenders make sure of that)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def measure(fn: Callable[[], Any], *, repeats: int, budget_s: float, warmup: int = 2) -> dict:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "first_s": first,
        "median_s": statistics.median(times),
        "p25_s": quartiles[0],
        "p75_s": quartiles[2],
        "min_s": min(times),
        "runs": len(times),
    }


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_growth(fn, repeats: int = 3) -> int:
    """How far the resident set rises above its level before ``fn`` while it runs (bytes).

    One call runs first (one-time setup such as kernel caches is not the step's memory).
    On Linux the high-water mark is then reset (``/proc/self/clear_refs``), so the peaks of
    importing a framework do not hide the step's own; elsewhere ``ru_maxrss`` is used.
    """
    fn()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        base = _status_kib("VmRSS")
    except OSError:
        base = None
    if base is None:
        before = peak_rss_bytes()
        for _ in range(repeats):
            fn()
        return peak_rss_bytes() - before
    for _ in range(repeats):
        fn()
    return (_status_kib("VmHWM") - base) * 1024
