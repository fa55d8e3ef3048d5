"""Rendering a conformance report: the summary table, JSON and JUnit XML."""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from xml.etree import ElementTree as ET

import multirnn
from multirnn.conformance import tolerances
from multirnn.conformance.runner import FAILING, Report


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


def summary(report: Report) -> str:
    counts = report.counts()
    parts = [
        f"{counts.get(k, 0)} {k}"
        for k in ("pass", "fail", "error", "skip", "xfail", "xpass")
        if counts.get(k)
    ]
    lines = [
        f"{len(report.cases)} cases x {', '.join(report.engines)} x {', '.join(report.dtypes)}: "
        + ", ".join(parts)
        + f" in {report.seconds:.1f} s",
        tolerances.describe(),
        "cells: worst relative error |d| / (1 + |ref|); ok* = passes with known gaps",
    ]
    for gap in report.unused_gaps:
        lines.append(f"known-gap entry matches no case: {gap.source}: {gap.pattern}")
    return "\n".join(lines)


def failures(report: Report, limit: int = 50) -> str:
    lines = []
    for r in report.failures[:limit]:
        err = f"max rel {r.max_rel:.2e} > tol {r.tolerance:g}" if r.max_rel is not None else ""
        lines.append(f"FAIL {r.engine} {r.dtype} {r.check} {r.case.id} {err} {r.detail}".rstrip())
        lines.append(f"  reproduce: {r.reproducer}")
    if len(report.failures) > limit:
        lines.append(f"... and {len(report.failures) - limit} more (see --json)")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(
        {
            "multirnn": multirnn.__version__,
            "python": platform.python_version(),
            "engines": report.engines,
            "dtypes": report.dtypes,
            "cases": len(report.cases),
            "seconds": report.seconds,
            "ok": report.ok,
            "counts": report.counts(),
            "tolerances": {f"{d}/{q}": t for (d, q), t in tolerances.POLICY.items()},
            "unused_known_gaps": [f"{g.source}: {g.pattern}" for g in report.unused_gaps],
            "results": [r.to_dict() for r in report.results],
        },
        indent=1,
    )


def to_junit(report: Report) -> str:
    suites = ET.Element("testsuites", name="multirnn-conformance")
    by_engine = defaultdict(list)
    for r in report.results:
        by_engine[r.engine].append(r)
    for engine, results in by_engine.items():
        suite = ET.SubElement(suites, "testsuite", name=engine, tests=str(len(results)))
        suite.set("failures", str(sum(r.status == "fail" for r in results)))
        suite.set("errors", str(sum(r.status == "error" for r in results)))
        suite.set("skipped", str(sum(r.status in ("skip", "xfail") for r in results)))
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
