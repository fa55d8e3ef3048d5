"""Rendering a conformance report: the header, the summary table, what was compared and
skipped, JSON and JUnit XML."""

from __future__ import annotations

import json
import re
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from xml.etree import ElementTree as ET

import multirnn
from multirnn.conformance import environment, tolerances
from multirnn.conformance.runner import FAILING, Report

#: The engine every other one is compared with.
REFERENCE = "numpy"

#: How to add an engine: multirnn is installed from a checkout (it is not on PyPI), with
#: the tested framework versions from constraints.txt. JAX first: its extra is a CPU build,
#: where PyTorch's default Linux wheels pull in CUDA.
INSTALL_LINES = (
    "To add one, run this in a checkout of multirnn:",
    '    python -m pip install -c constraints.txt ".[jax]"'
    '    (or ".[tensorflow]", ".[torch]", ".[all]")',
    "  docs/installing.md covers PyTorch's CPU-only build.",
)


def _cell(results) -> str:
    statuses = [r.status for r in results]
    failed = sum(s in FAILING for s in statuses)
    rels = [r.max_rel for r in results if r.max_rel is not None and r.status != "skip"]
    worst = f"{max(rels):.1e}" if rels else ""
    if failed:
        return f"FAIL {failed}/{len(results)} {worst}"
    if all(s == "skip" for s in statuses):
        return "skip"
    if any(s in ("xfail", "xpass") for s in statuses):
        return f"ok* {worst}"
    return f"ok {worst}"


def table(report: Report) -> str:
    """Case families x engine/dtype: pass/fail with the worst relative error."""
    columns = sorted({(r.engine, r.dtype) for r in report.results})
    grid: dict[str, dict[tuple[str, str], list]] = defaultdict(lambda: defaultdict(list))
    for r in report.results:
        grid[r.case.family or "case"][(r.engine, r.dtype)].append(r)
    header = ["family"] + [f"{e} {d[5:]}" for e, d in columns]
    rows = [
        [family] + [_cell(cells[c]) if c in cells else "" for c in columns]
        for family, cells in grid.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fit(text: str, width: int = 100) -> str:
    """``text`` for a terminal: lines longer than ``width`` wrapped at spaces (continued two
    spaces in), except a reproducer, which stays one line to copy."""
    out = []
    for line in text.splitlines():
        if len(line) <= width or line.lstrip().startswith("reproduce: "):
            out.append(line)
        else:
            indent = " " * (len(line) - len(line.lstrip()))
            out += textwrap.wrap(line, width, subsequent_indent=indent + "  ",
                                 break_on_hyphens=False)  # fmt: skip
    return "\n".join(out)


def engine_summary(report: Report) -> str:
    """One row per engine (and engine pair) and dtype: the counts and the worst relative
    error. Narrow enough for any terminal; the family table is ``--table`` and ``--json``."""
    grid: dict[tuple[str, str], list] = defaultdict(list)
    for r in report.results:
        grid[(r.engine, r.dtype)].append(r)
    header = ["engine", "dtype", "pass", "fail", "skip", "gaps", "worst rel"]
    rows = []
    for (engine, dtype), results in grid.items():
        statuses = [r.status for r in results]
        rels = [r.max_rel for r in results if r.max_rel is not None and r.status != "skip"]
        rows.append([
            _shorten(engine, 24), dtype, str(statuses.count("pass")),
            str(sum(s in FAILING for s in statuses)), str(statuses.count("skip")),
            str(sum(s in ("xfail", "xpass") for s in statuses)),
            f"{max(rels):.1e}" if rels else "",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    if report.engine_seconds:
        spent = ", ".join(f"{e} {s:.0f} s" for e, s in report.engine_seconds.items())
        lines.append(_shorten(f"time per engine: {spent}"))
    return "\n".join(lines)


def summary(report: Report) -> str:
    counts = report.counts()
    parts = [
        f"{counts.get(k, 0)} {k}"
        for k in ("pass", "fail", "error", "skip", "xfail", "xpass")
        if counts.get(k)
    ]
    first = (
        f"{len(report.cases)} cases x {', '.join(report.engines)} x {', '.join(report.dtypes)}: "
        + ", ".join(parts)
        + f" in {report.seconds:.1f} s"
    )
    lines = [
        first,
        tolerances.describe(),
        "worst rel: the largest |d| / (1 + |ref|); gaps: known gaps (ok* in --table)",
    ]
    for gap in report.unused_gaps:
        lines.append(f"known-gap entry matches no case: {gap.source}: {gap.pattern}")
    return "\n".join(lines)


def failures(report: Report, limit: int = 50) -> str:
    lines = []
    for r in report.failures[:limit]:
        err = f"max rel {r.max_rel:.2e} > tol {r.tolerance:g}" if r.max_rel is not None else ""
        lines.append(_shorten(f"FAIL {r.engine} {r.dtype} {r.check}: {err} {r.detail}".rstrip()))
        # the case wrapped at its commas to fit; the reproducer below has it whole
        lines += textwrap.wrap(f"case {r.case.id.replace(',', ', ')}", 98, initial_indent="  ",
                               subsequent_indent="    ")  # fmt: skip
        lines.append(f"  reproduce: {r.reproducer}")
    if len(report.failures) > limit:
        lines.append(f"... and {len(report.failures) - limit} more (see --json)")
    return "\n".join(lines)


def header(mode: str, engines: Sequence[str], cases: int, dtypes: Sequence[str], env: dict) -> str:
    """The first lines of a run: what runs, and on which versions, devices and modes."""
    first = (
        f"multirnn conformance ({mode}): engines {', '.join(engines)}; {cases} cases; "
        f"dtypes {', '.join(dtypes)}"
    )
    return "\n".join([first, *environment.describe(env)])


def _cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


class Outcome(NamedTuple):
    """One engine, dtype and case: ``ran`` (at least one check held to the policy), or
    skipped with the reason. What the closing lines are computed from, for both the
    command line and the pytest plugin."""

    engine: str
    dtype: str
    case: str
    ran: bool
    reason: str = ""


def outcomes(report: Report) -> list[Outcome]:
    """Per engine, dtype and case (pairwise results left out): ran or skipped."""
    by_key: dict[tuple[str, str, str], list] = defaultdict(list)
    for r in report.results:
        if r.check != "pairwise":
            by_key[(r.engine, r.dtype, r.case.id)].append(r)
    out = []
    for (engine, dtype, case), results in by_key.items():
        skips = [r for r in results if r.status == "skip"]
        ran = len(skips) < len(results)
        out.append(Outcome(engine, dtype, case, ran, "" if ran else skips[0].detail))
    return out


_VARIABLE = re.compile(r"\b([A-Z][A-Z0-9_]*=[^\s);,]+)")


def how_to_enable(reason: str) -> str | None:
    """How to run cases skipped for ``reason``, when a setting can: a reason that names an
    environment variable (``JAX_ENABLE_X64=1``) is enabled by setting it."""
    found = _VARIABLE.search(reason)
    return f"set {found.group(1)} and run again" if found else None


def skip_groups(rows: Iterable[Outcome], total: int) -> list[dict]:
    """Skipped outcomes grouped by engine, dtype and reason: ``engine``, ``dtype``,
    ``reason``, ``cases`` (how many), ``of`` (the cases in the run), ``enable`` (how to run
    them, or None when the engine cannot express them) and ``whole`` (every case of the
    engine in that dtype was skipped)."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    ran: set[tuple[str, str]] = set()
    for row in rows:
        if row.ran:
            ran.add((row.engine, row.dtype))
        else:
            counts[(row.engine, row.dtype, row.reason)] += 1
    return [
        {
            "engine": engine,
            "dtype": dtype,
            "reason": reason,
            "cases": n,
            "of": total,
            "enable": how_to_enable(reason),
            "whole": (engine, dtype) not in ran,
        }
        for (engine, dtype, reason), n in counts.items()
    ]


def _shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def skipped_lines(groups: Sequence[dict]) -> list[str]:
    """The skipped groups in a few lines. In capitals, one line each: every group a setting
    would run (with the setting), and every engine and dtype in which nothing ran. Then one
    line per engine for the cases it cannot express (the JSON report lists every reason)."""
    loud: list[str] = []
    merged: dict[tuple, list[str]] = defaultdict(list)  # enable-able groups, dtypes merged
    columns: dict[tuple[str, str], list[dict]] = defaultdict(list)  # nothing ran there
    limits: dict[str, list[dict]] = defaultdict(list)  # cases an engine cannot express
    for g in groups:
        if g["enable"]:
            merged[(g["engine"], g["reason"], g["cases"], g["of"], g["enable"])].append(g["dtype"])
        elif g["whole"]:
            columns[(g["engine"], g["dtype"])].append(g)
        else:
            limits[g["engine"]].append(g)
    for (engine, reason, n, of, enable), dtypes in merged.items():
        each = " each" if len(dtypes) > 1 else ""
        loud.append(f"SKIPPED: {engine} {', '.join(sorted(dtypes))}, {n} of {_cases(of)}{each}: "
                    f"{reason}; to run them, {enable}")  # fmt: skip
    for (engine, dtype), found in columns.items():
        top = max(found, key=lambda g: g["cases"])
        total = sum(g["cases"] for g in found)
        if len(found) == 1:
            why = _shorten(top["reason"])
        else:
            why = (f"{top['cases']} of them: {_shorten(top['reason'])}; {total - top['cases']} "
                   f"for {len(found) - 1} other reasons")  # fmt: skip
        loud.append(f"SKIPPED: {engine} {dtype}, all {_cases(total)} (nothing ran): {why}")
    quiet = []
    width = max([len(e) for e in limits] + [6])
    for engine, found in limits.items():
        per_dtype: dict[str, int] = defaultdict(int)
        for g in found:
            per_dtype[g["dtype"]] += g["cases"]
        of = found[0]["of"]
        counts = set(per_dtype.values())
        if len(counts) == 1:
            where = f"{counts.pop()} of {_cases(of)} in {', '.join(sorted(per_dtype))}"
        else:
            where = ", ".join(f"{n} of {_cases(of)} in {d}" for d, n in sorted(per_dtype.items()))
        reasons = {g["reason"] for g in found}
        top = max(reasons, key=lambda r: sum(g["cases"] for g in found if g["reason"] == r))
        why = top if len(reasons) == 1 else f"{len(reasons)} reasons, most often: {top}"
        quiet.append(f"  {engine:<{width}}  {where}: {_shorten(why)}")
    if quiet:
        quiet.insert(0, "skipped, as the engine cannot express them (each reason: --json):")
    return loud + quiet


def _ran(rows: Iterable[Outcome]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.ran:
            out[row.engine][row.dtype] += 1
    return {e: dict(d) for e, d in out.items()}


def compared_lines(
    engines: Sequence[str],
    dtypes: Sequence[str],
    rows: Sequence[Outcome],
    total: int,
    pairs: Sequence[str] = (),
) -> list[str]:
    """What was compared with what: each engine's dtypes against the reference, and the
    float32 pairs."""
    ran = _ran(rows)
    width = max([len(e) for e in engines] + [6])
    lines = [f"compared with the NumPy reference on {_cases(total)}:"]
    for engine in engines:
        done = ran.get(engine, {})
        parts = [d if done[d] == total else f"{d} ({done[d]} of {_cases(total)})"
                 for d in dtypes if d in done]  # fmt: skip
        text = ", ".join(parts) or "nothing (every case was skipped)"
        missing = [d for d in dtypes if d not in done]
        if parts and missing:
            text += f"; {', '.join(missing)} skipped (see above)"
        if engine == REFERENCE:
            text += "  (the reference against itself)"
        lines.append(f"  {engine:<{width}}  {text}")
    if len(pairs) > 3:
        lines.append(f"  float32 results pairwise: {len(pairs)} pairs of the engines above")
    elif pairs:
        lines.append(f"  float32 results pairwise: {', '.join(pairs)}")
    return lines


def reference_only_lines(
    engines: Sequence[str], installed: Sequence[str], select: str, rerun: str
) -> list[str]:
    """The notice for a run in which only the reference ran: it was compared with itself.
    ``installed``: the engines and oracles installed; ``select``: how to select them;
    ``rerun``: the command to run again after installing one."""
    if not engines or any(e != REFERENCE for e in engines):
        return []
    lines = [
        "NOTE: only the NumPy reference ran, so it was compared with itself: its float64",
        "  results agree by construction (0.0e+00) and float32 measures only its own rounding.",
        "  No framework engine (PyTorch, JAX, TensorFlow) was checked.",
    ]
    others = [n for n in installed if n != REFERENCE]
    if others:
        lines.append(f"  Installed but not in this run: {', '.join(others)}; {select}.")
    else:
        lines.append(f"  No other engine is installed. {INSTALL_LINES[0]}")
        lines += [*INSTALL_LINES[1:-1], f"{INSTALL_LINES[-1]} Then run it again: {rerun}"]
    return lines


def installed_engines() -> list[str]:
    """The engines and oracles installed here (without importing their frameworks)."""
    from multirnn import engines
    from multirnn.conformance.adapters import installed_oracles

    return engines.available() + installed_oracles()


def closing(
    report: Report,
    installed: Sequence[str] | None = None,
    select: str = "`multirnn conformance` without --engines checks every installed one",
    rerun: str = "multirnn conformance",
) -> str:
    """The last lines of a run: the skipped groups, what was compared with what, and the
    notice when only the reference ran."""
    rows = outcomes(report)
    total = len(report.cases)
    pairs = sorted({r.engine for r in report.results if r.check == "pairwise"})
    lines = skipped_lines(skip_groups(rows, total))
    lines += compared_lines(report.engines, report.dtypes, rows, total, pairs)
    if report.reference_only:
        installed = installed_engines() if installed is None else installed
        lines += reference_only_lines(report.engines, installed, select, rerun)
    return "\n".join(lines)


def to_json(report: Report) -> str:
    rows = outcomes(report)
    env = report.environment or environment.collect()
    return json.dumps(
        {
            "multirnn": multirnn.__version__,
            "python": env["python"],
            "environment": env,
            "engines": report.engines,
            "dtypes": report.dtypes,
            "cases": len(report.cases),
            "seconds": report.seconds,
            "engine_seconds": report.engine_seconds,
            "ok": report.ok,
            "counts": report.counts(),
            "tolerances": {f"{d}/{q}": t for (d, q), t in tolerances.POLICY.items()},
            "unused_known_gaps": [f"{g.source}: {g.pattern}" for g in report.unused_gaps],
            "reference_only": report.reference_only,
            "compared": _ran(rows),
            "pairwise": sorted({r.engine for r in report.results if r.check == "pairwise"}),
            "skipped": skip_groups(rows, len(report.cases)),
            "results": [r.to_dict() for r in report.results],
        },
        indent=1,
    )


def to_junit(report: Report) -> str:
    suites = ET.Element("testsuites", name="multirnn-conformance")
    properties = environment.flatten(report.environment or environment.collect())
    properties.append(("reference_only", str(report.reference_only).lower()))
    by_engine = defaultdict(list)
    for r in report.results:
        by_engine[r.engine].append(r)
    for engine, results in by_engine.items():
        suite = ET.SubElement(suites, "testsuite", name=engine, tests=str(len(results)))
        suite.set("failures", str(sum(r.status == "fail" for r in results)))
        suite.set("errors", str(sum(r.status == "error" for r in results)))
        suite.set("skipped", str(sum(r.status in ("skip", "xfail") for r in results)))
        props = ET.SubElement(suite, "properties")  # every suite: tools read them per suite
        for name, value in properties:
            ET.SubElement(props, "property", name=name, value=value)
        for r in results:
            case = ET.SubElement(
                suite, "testcase", classname=f"{engine}.{r.dtype}.{r.check}", name=r.case.id
            )
            message = f"max_rel={r.max_rel} tol={r.tolerance} {r.detail}\nreproduce: {r.reproducer}"
            if r.status == "fail":
                ET.SubElement(case, "failure", message=message)
            elif r.status == "error":
                ET.SubElement(case, "error", message=message)
            elif r.status in ("skip", "xfail"):
                ET.SubElement(case, "skipped", message=r.detail)
    return ET.tostring(suites, encoding="unicode")
