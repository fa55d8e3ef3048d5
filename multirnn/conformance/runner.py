"""Running cases against engines and turning the comparisons into results."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from multirnn import engines as _engines
from multirnn.conformance import environment, oracle
from multirnn.conformance.adapters import ORACLES, EngineAdapter, adapter
from multirnn.conformance.cases import ALL_DTYPES, LOW_DTYPES, Case
from multirnn.conformance.known_gaps import Gap, builtin_path, load
from multirnn.conformance.tolerances import compare, tolerance

FAILING = ("fail", "error")
#: The Keras backends the keras oracle runs on (each has its known-gap file).
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


class UsageError(ValueError):
    """A setting of a run that cannot be honoured, found before anything runs (the message
    names the setting, the value and what is accepted)."""


def split_names(text: str, option: str, accepted: Sequence[str] | None = None) -> list[str]:
    """The comma-separated names given to ``option``: at least one, none empty, none twice,
    and each one of ``accepted`` when given."""
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise UsageError(f"{option} needs at least one name, got {text!r}")
    if "" in names:
        raise UsageError(f"{option} has an empty name in {text!r} (names are comma-separated)")
    twice = [n for i, n in enumerate(names) if n in names[:i]]
    if twice:
        raise UsageError(f"{option} names {twice[0]!r} twice")
    bad = [n for n in names if accepted is not None and n not in accepted]
    if bad:
        raise UsageError(f"{option} accepts {', '.join(accepted or ())}; got {bad[0]!r}")
    return names


def split_cell_dtypes(text: str, option: str) -> list[str]:
    """``--dtype`` of the cell checks: float32 and float64 (the low-precision groups are
    the layer grid's)."""
    from multirnn.conformance.cell_suite import DTYPES as CELL_DTYPES

    return split_names(text, option, tuple(sorted(CELL_DTYPES)))


def split_dtypes(text: str, option: str) -> list[str]:
    return split_names(text, option, ALL_DTYPES)


def check_count(value: object, option: str) -> int:
    """The number of Hypothesis cases: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{option} must be a positive integer, got {value!r}")
    return value


def check_engines(names: Sequence[str]) -> None:
    """Refuse, without importing any framework, an engine or oracle that is unknown, broken
    or not installed, and a ``KERAS_BACKEND`` the keras oracle does not run on."""
    registry = _engines.registry()
    for name in names:
        if name in ORACLES:
            missing = [p for p in ORACLES[name][1] if importlib.util.find_spec(p) is None]
            if missing:
                raise _engines.EngineUnavailableError(
                    f"the {name!r} oracle needs {', '.join(missing)}: pip install "
                    f"{' '.join(ORACLES[name][1])}"
                )
            continue
        if name in registry and registry[name].installed():
            continue
        try:
            _engines.engine(name)  # raises the unknown, broken and not-installed errors
        except _engines.UnknownEngineError as exc:
            raise _engines.UnknownEngineError(f"{exc} Oracles: {', '.join(ORACLES)}.") from None
    backend = os.environ.get("KERAS_BACKEND")
    if "keras" in names and backend and backend not in KERAS_BACKENDS:
        raise UsageError(
            f"KERAS_BACKEND={backend!r}: the keras oracle runs on {', '.join(KERAS_BACKENDS)}"
        )


@dataclass
class Result:
    engine: str
    dtype: str
    case: Case
    check: str  # forward | gradients | stateful | pairwise
    status: str  # pass | fail | error | skip | xfail | xpass
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: float | None = None
    detail: str = ""

    env: str = ""  # environment an engine needs to reproduce (e.g. KERAS_BACKEND=jax)

    @property
    def reproducer(self) -> str:
        engines = self.engine.replace(":", ",")  # a pairwise result names both engines
        prefix = f"{self.env} " if self.env else ""
        return (
            f'{prefix}python -c "import multirnn.conformance as c; '
            f'c.reproduce({engines!r}, {self.case.id!r}, {self.dtype!r})"'
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "dtype": self.dtype,
            "case": self.case.id,
            "family": self.case.family,
            "check": self.check,
            "status": self.status,
            "max_abs_error": self.max_abs,
            "max_rel_error": self.max_rel,
            "tolerance": self.tolerance,
            "detail": self.detail,
            "reproducer": self.reproducer if self.status in FAILING else None,
        }


def _names(case: Case, count: int) -> list[str]:
    states = {"LSTM": ["h", "c"]}.get(case.layer, ["h"])
    if not case.wrapped:
        return ["output", *states][:count]
    outputs = ["output/forward", "output/backward"] if case.bidirectional == "none" else ["output"]
    both = [f"{s}/{d}" for d in ("forward", "backward") for s in states]
    return [*outputs, *both][:count]


def _compare_lists(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], names: Sequence[str], tol: float
):
    """Worst errors over named arrays; detail names the worst one and any shape problem."""
    if len(got) != len(want):
        return float("inf"), float("inf"), f"returned {len(got)} arrays, expected {len(want)}"
    worst_abs = worst_rel = 0.0
    worst = ""
    for name, g, w in zip(names, got, want):
        g = np.asarray(g)
        if g.shape != w.shape:
            return float("inf"), float("inf"), f"{name}: shape {g.shape}, expected {w.shape}"
        a, r = compare(g, w)
        if r >= worst_rel:
            worst_abs, worst_rel, worst = a, r, name
    detail = f"worst: {worst}" if worst_rel > tol else ""
    return worst_abs, worst_rel, detail


def _gradient_items(grads: dict[str, Any]):
    for key in oracle.GRADIENT_KEYS:
        value = grads.get(key)
        if value is None:
            continue
        if key == "initial_state":
            for i, v in enumerate(value):
                yield f"d/initial_state[{i}]", v
        else:
            yield f"d/{key}", value


@dataclass
class EngineRun:
    """One adapter, its known gaps, and the forward results kept for pairwise checks."""

    adapter: EngineAdapter
    gaps: list[Gap]
    forward_results: dict[tuple[Case, str], list[np.ndarray]] = field(default_factory=dict)


def check_case(run: EngineRun, case: Case, dtype: str) -> list[Result]:
    """Every check of one case on one engine in one dtype."""
    ad = run.adapter

    def result(check: str, status: str, **kw: Any) -> Result:
        return Result(ad.name, dtype, case, check, status, env=ad.environment(), **kw)

    def verdict(check: str, errors: tuple[float, float, str], tol: float) -> Result:
        a, r, d = errors
        status = "pass" if r <= tol else "fail"
        return result(check, status, max_abs=a, max_rel=r, tolerance=tol, detail=d)

    if dtype not in ad.dtypes:
        return [result("forward", "skip", detail=f"{ad.name} does not support {dtype}")]
    reason = ad.supports(case, dtype)
    if reason:
        return [result("forward", "skip", detail=reason)]
    spec = case.spec(dtype)
    values = dtype if dtype in LOW_DTYPES else "float32"  # the numbers the case is fed
    data = oracle.data(case, values).cast(dtype)
    out: list[Result] = []
    ref_error = oracle.own_error(case, dtype) if dtype != "float64" else 0.0
    tol = tolerance(dtype, "forward", ref_error)
    try:
        if case.stateful:
            got = ad.stateful(spec, data.weights, data.calls)
            if got is None:
                return [result("stateful", "skip", detail=f"{ad.name} runs no stateful sequences")]
            want = oracle.stateful(case, values)
            worst = (0.0, 0.0, "")
            for index, (g, w) in enumerate(zip(got, want)):
                a, r, d = _compare_lists(g, w, _names(case, len(w)), tol)
                if r >= worst[1]:
                    worst = (a, r, f"call {index}: {d}" if d else "")
            if len(got) != len(want):
                worst = (
                    float("inf"),
                    float("inf"),
                    f"{len(got)} call results for {len(want)} calls",
                )
            return [verdict("stateful", worst, tol)]
        kwargs = {
            "mask": data.mask,
            "initial_state": data.initial_state,
            "input_dropout": data.input_dropout,
            "recurrent_dropout": data.recurrent_dropout,
        }
        if case.wrapped:
            got = ad.bidirectional(spec, case.merge_mode, data.weights, data.inputs,
                                   mask=data.mask, initial_state=data.initial_state)  # fmt: skip
            if got is None:
                return [result("forward", "skip", detail=f"{ad.name} has no Bidirectional")]
        else:
            got = ad.forward(spec, data.weights, data.inputs, **kwargs)
        want = oracle.forward(case, values)
        errors = _compare_lists(got, want, _names(case, len(want)), tol)
        run.forward_results[(case, dtype)] = [np.asarray(g) for g in got]
        out.append(verdict("forward", errors, tol))
    except Exception as exc:  # an engine crash is a failure with its message
        return [result("stateful" if case.stateful else "forward", "error", detail=_error(exc))]
    if not ad.checks_gradients or case.wrapped:  # the wrapper's gradients: engine tests
        return out
    gtol = tolerance(dtype, "gradients", ref_error, oracle.fd_roundoff(case, values))
    try:
        grads = ad.gradients(spec, data.weights, data.inputs, cotangents=data.cotangents, **kwargs)
        if grads is None:
            return out
        want_items = dict(_gradient_items(oracle.gradients(case, values)))
        got_items = dict(_gradient_items(grads))
        if set(got_items) != set(want_items):
            detail = f"gradients for {sorted(got_items)}, expected {sorted(want_items)}"
            out.append(result("gradients", "fail", detail=detail, tolerance=gtol))
            return out
        names = list(want_items)
        got_list, want_list = [got_items[n] for n in names], [want_items[n] for n in names]
        out.append(verdict("gradients", _compare_lists(got_list, want_list, names, gtol), gtol))
    except Exception as exc:
        out.append(result("gradients", "error", detail=_error(exc)))
    return out


def _error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def pairwise(runs: Sequence[EngineRun], cases: Iterable[Case]) -> list[Result]:
    """float32 engines against each other on the forward results they both produced."""
    out = []
    for first, second in itertools.combinations(runs, 2):
        for case in cases:
            a = first.forward_results.get((case, "float32"))
            b = second.forward_results.get((case, "float32"))
            if a is None or b is None:
                continue
            tol = tolerance("float32", "pairwise", oracle.float32_error(case))
            names = _names(case, len(b))
            ab, rel, d = _compare_lists(a, [np.asarray(x, np.float64) for x in b], names, tol)
            status = "pass" if rel <= tol else "fail"
            engine = f"{first.adapter.name}:{second.adapter.name}"
            out.append(Result(engine, "float32", case, "pairwise", status, ab, rel, tol, d))
    return out


def apply_gaps(results: list[Result], gaps_by_engine: dict[str, list[Gap]]) -> list[Gap]:
    """Mark known gaps (xfail/xpass); returns the entries that matched no result."""
    used: set[Gap] = set()
    for res in results:
        for name in res.engine.split(":"):
            for gap in gaps_by_engine.get(name, []):
                if gap.matches(res.case.id, res.dtype, res.check):
                    used.add(gap)
                    if res.status in FAILING:
                        res.status, res.detail = (
                            "xfail",
                            f"known gap ({gap.source}: {gap.reason}) {res.detail}",
                        )
                    elif res.status == "pass":
                        res.status = "xpass"
    unused = [g for gaps in gaps_by_engine.values() for g in gaps if g not in used]
    return list(dict.fromkeys(unused))  # a shared --known-gaps file is listed once


@dataclass
class Report:
    results: list[Result]
    engines: list[str]
    dtypes: list[str]
    cases: list[Case]
    unused_gaps: list[Gap]
    seconds: float
    #: versions, devices and modes (see :func:`multirnn.conformance.environment.collect`)
    environment: dict[str, Any] = field(default_factory=dict)
    #: seconds each engine took, all its dtypes together
    engine_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status in FAILING]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def reference_only(self) -> bool:
        """Only the NumPy reference ran: it was compared with itself."""
        return bool(self.engines) and all(e == "numpy" for e in self.engines)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def prepare(names: Sequence[str], extra_gaps: Sequence[str] = ()) -> list[EngineRun]:
    """An :class:`EngineRun` per engine. The names and the extra known-gap files are checked
    before any framework is imported (:class:`UsageError`, the engines' selection errors,
    :class:`~multirnn.conformance.known_gaps.KnownGapsError`)."""
    check_engines(names)
    extra = [gap for path in extra_gaps for gap in load(path)]
    runs = []
    for name in names:
        ad = adapter(name)
        runs.append(EngineRun(ad, load(ad.known_gaps or builtin_path(name)) + extra))
    return runs


def run(
    engines: Sequence[str],
    cases: Sequence[Case],
    dtypes: Sequence[str] = ("float32", "float64"),
    *,
    known_gaps: Sequence[str] = (),
    progress: Callable[[int, int, str], None] | None = None,
    runs: Sequence[EngineRun] | None = None,
    workers: int = 1,
) -> Report:
    """Check ``cases`` on ``engines`` in ``dtypes``; returns every result. ``workers`` > 1
    checks in that many worker processes (each imports the frameworks it meets)."""
    start = time.perf_counter()
    runs = list(runs) if runs is not None else prepare(engines, known_gaps)
    env = environment.collect([r.adapter for r in runs])
    total = len(runs) * len(cases) * len(dtypes)
    if workers > 1 and total > 1:
        results, spent = _in_workers(runs, list(cases), list(dtypes), known_gaps, workers,
                                     progress)  # fmt: skip
    else:
        results, spent = _in_process(runs, cases, dtypes, progress)
    if "float32" in dtypes:
        results += pairwise(runs, cases)
    unused = apply_gaps(results, {r.adapter.name: r.gaps for r in runs})
    return Report(
        results,
        [r.adapter.name for r in runs],
        list(dtypes),
        list(cases),
        unused,
        time.perf_counter() - start,
        env,
        spent,
    )


#: Seconds one case in one dtype took per engine in the quick grid, measured on a 2-core
#: AMD EPYC (2026-12-07, JAX and TensorFlow compile a program per case): what :func:`estimate`
#: says before a run starts.
SECONDS_PER_CHECK = {
    "numpy": 0.002,
    "torch": 0.032,
    "jax": 0.50,
    "tensorflow": 0.56,
    "keras": 0.043,
    "torch.nn": 0.002,
    "flax.nnx": 0.064,
    "onnxruntime": 0.005,
}


def estimate(engines: Sequence[str], cases: int, dtypes: int) -> float:
    """Roughly how many seconds a run takes on a 2-core machine (an unknown engine counts
    as the slowest known one)."""
    slowest = max(SECONDS_PER_CHECK.values())
    return sum(SECONDS_PER_CHECK.get(e, slowest) for e in engines) * cases * dtypes


def _in_process(runs, cases, dtypes, progress):
    results: list[Result] = []
    total, done = len(runs) * len(cases) * len(dtypes), 0
    spent: dict[str, float] = {}
    for engine_run in runs:
        began = time.perf_counter()
        for dtype in dtypes:
            for case in cases:
                results += check_case(engine_run, case, dtype)
                done += 1
                if progress:
                    progress(done, total, engine_run.adapter.name)
        spent[engine_run.adapter.name] = time.perf_counter() - began
    return results, spent


_WORKER_RUNS: dict[str, EngineRun] = {}


def _job(name: str, known_gaps: tuple[str, ...], cases: list[Case], dtype: str):
    """A worker process's share of a run: one engine, one dtype, some cases. The engine's
    adapter is kept for the worker's next share (its compiled programs with it)."""
    if name not in _WORKER_RUNS:
        _WORKER_RUNS[name] = prepare([name], known_gaps)[0]
    engine_run = _WORKER_RUNS[name]
    engine_run.forward_results.clear()
    began = time.perf_counter()
    results = [r for case in cases for r in check_case(engine_run, case, dtype)]
    return name, results, dict(engine_run.forward_results), time.perf_counter() - began


def _in_workers(runs, cases, dtypes, known_gaps, workers, progress):
    """The checks in worker processes (spawned: a framework imported here is not forked),
    in shares small enough for the progress bar to move and the workers to stay busy."""
    import multiprocessing

    size = max(1, -(-len(cases) // 4))
    jobs = [(r.adapter.name, tuple(known_gaps), cases[i : i + size], dtype)
            for r in runs for dtype in dtypes for i in range(0, len(cases), size)]  # fmt: skip
    by_name = {r.adapter.name: r for r in runs}
    collected: dict[tuple[str, str, int], list[Result]] = {}
    spent = dict.fromkeys(by_name, 0.0)
    total, done = len(runs) * len(cases) * len(dtypes), 0
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for index, name, results, forward, seconds in pool.imap_unordered(
            _indexed_job, list(enumerate(jobs))
        ):
            collected[index] = results
            by_name[name].forward_results.update(forward)
            spent[name] += seconds
            done += len(jobs[index][2])
            if progress:
                progress(done, total, name)
    # in the order one process would have produced them, whichever worker finished first
    return [r for index in range(len(jobs)) for r in collected[index]], spent


def _indexed_job(item):
    index, job = item
    return index, *_job(*job)


def progress_bar(stream=None) -> Callable[[int, int, str], None]:
    stream = stream or sys.stderr
    tty = getattr(stream, "isatty", lambda: False)()
    state = {"last": -1, "start": time.perf_counter()}

    def update(done: int, total: int, engine: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        percent = 100 * done // max(total, 1)
        elapsed = time.perf_counter() - state["start"]
        left = f"{elapsed * (total - done) / done:.0f} s left" if 0 < done < total else ""
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {engine:<11} {left}"
        if tty:
            stream.write(f"\r{bar:<78}")
            if done == total:
                stream.write("\n")
        elif percent // 10 != state["last"] or done == total:
            state["last"] = percent // 10
            stream.write(bar.rstrip() + "\n")
        stream.flush()

    return update
