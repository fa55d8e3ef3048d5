"""The conformance suite: proves an engine computes the documented layers with the
reference's numbers (outputs, final states, stateful sequences and gradients).

Use it from the command line (``multirnn conformance``), from pytest
(``pytest --pyargs multirnn.conformance --multirnn-engines=torch``), or from Python::

    import multirnn.conformance as c
    report = c.run(["numpy"], c.quick_cases())
    print(c.table(report))
"""

from __future__ import annotations

from multirnn.conformance.adapters import EngineAdapter, adapter
from multirnn.conformance.cases import Case, full_cases, hypothesis_cases, quick_cases
from multirnn.conformance.report import failures, summary, table, to_json, to_junit
from multirnn.conformance.runner import Report, Result, run

__all__ = [
    "Case",
    "EngineAdapter",
    "Report",
    "Result",
    "adapter",
    "failures",
    "full_cases",
    "hypothesis_cases",
    "quick_cases",
    "reproduce",
    "run",
    "summary",
    "table",
    "to_json",
    "to_junit",
]


def reproduce(engines: str, case_id: str, dtype: str = "float64") -> list[Result]:
    """Re-run one case on one engine (or a comma-separated pair, for pairwise checks) and
    print every check's errors; the one-line reproducer printed for each failure calls this."""
    case = Case.from_id(case_id)
    report = run([n for n in engines.split(",") if n], [case], [dtype])
    print(f"{engines} {dtype} {case.id}")
    for r in report.results:
        errs = (
            f"max abs {r.max_abs:.3e}  max rel {r.max_rel:.3e}  tol {r.tolerance:g}"
            if r.max_rel is not None
            else ""
        )
        print(f"  {r.engine:<12} {r.check:<10} {r.status:<6} {errs} {r.detail}".rstrip())
    return report.results
