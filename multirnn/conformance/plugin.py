"""Pytest plugin (registered under ``pytest11``): adds the ``--multirnn-*`` options, so
``pytest --pyargs multirnn.conformance --multirnn-engines=NAME`` works anywhere. The tests
themselves live in this package and run only when it is collected.

When an engine is selected, the plugin also records the environment (the report header,
and global properties of ``--junitxml``), and closes the run with a summary section: what
was compared, which groups were skipped and how to run them. Nothing is imported, and
nothing printed, in pytest runs that do not select the suite.

``--multirnn-cell module:Name`` certifies a user's cell inside any pytest run, as
``multirnn conformance --cell`` does: the plugin adds one test per check (engine x dtype x
check, see :mod:`multirnn.conformance.cell_suite`) to whatever the run collects, so that
each failure shows on its own, with its reproducer.
"""

from __future__ import annotations

import itertools
import os

import pytest

ENV_ENGINES = "MULTIRNN_CONFORMANCE_ENGINES"
ENV_CELL = "MULTIRNN_CONFORMANCE_CELL"


#: The user properties each conformance test carries (they travel with pytest-xdist's
#: reports, and appear in ``--junitxml``).
ENGINE, DEVICE, DTYPE = "multirnn_engine", "multirnn_device", "multirnn_dtype"
CASE, PAIRWISE = "multirnn_case", "multirnn_pairwise"
#: ... and each cell check (the cell's ``module:Name``, and the check's engine, dtype, name).
CELL, CELL_ENGINE = "multirnn_cell", "multirnn_cell_engine"
CELL_DTYPE, CELL_CHECK = "multirnn_cell_dtype", "multirnn_cell_check"


def _positive_int(text: str) -> int:
    from multirnn._checks import positive_int_option  # imported only when the option is used

    return positive_int_option(text)


def pytest_addoption(parser):
    group = parser.getgroup("multirnn", "multirnn conformance suite")
    group.addoption("--multirnn-engines", help=f"comma-separated engines (or ${ENV_ENGINES})")
    group.addoption("--multirnn-dtypes", default="float32,float64", help="dtypes to check")
    group.addoption("--multirnn-full", action="store_true", help="add Hypothesis-generated cases")
    group.addoption(
        "--multirnn-count",
        type=_positive_int,
        default=None,
        help="Hypothesis cases in --multirnn-full (default 300)",
    )
    group.addoption(
        "--multirnn-known-gaps", action="append", default=[], help="extra known-gap file"
    )
    group.addoption(
        "--multirnn-cell",
        metavar="module:Name",
        help="certify a user's cell (a multirnn.Cell subclass, or a function returning a "
        f"cell): one test per engine, dtype and check (or ${ENV_CELL})",
    )
    group.addoption(
        "--multirnn-cell-units",
        type=_positive_int,
        default=None,
        help="units of the --multirnn-cell cell (default 3)",
    )


def option(config, name, default=None):
    """An option's value; ``default`` when it is not given or the plugin is disabled
    (``-p no:multirnn``: then the suite reads the environment variable only)."""
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return default if value is None else value


def _selected(config) -> str:
    return option(config, "--multirnn-engines") or os.environ.get(ENV_ENGINES, "")


def selection(config) -> dict:
    """The engines, dtypes, Hypothesis count and extra known-gap files the options select,
    each checked before anything is imported or run; a bad value is a ``pytest.UsageError``
    naming it and what is accepted."""
    import pytest

    from multirnn import engines
    from multirnn.conformance import known_gaps, runner

    given = option(config, "--multirnn-engines")
    source = "--multirnn-engines" if given else ENV_ENGINES
    text = given or os.environ.get(ENV_ENGINES, "")
    try:
        if not text.strip():
            raise pytest.UsageError(
                "multirnn conformance: no engine selected. Pass --multirnn-engines=NAME[,NAME] "
                f"or set {ENV_ENGINES}. Installed engines: {', '.join(engines.available())}"
                " (and 'keras' as an oracle where Keras 3 is installed)."
            )
        names = runner.split_names(text, source)
        dtypes = runner.split_dtypes(
            option(config, "--multirnn-dtypes", "float32,float64"), "--multirnn-dtypes"
        )
        full = option(config, "--multirnn-full", False)
        count = option(config, "--multirnn-count")
        if count is not None and not full:
            raise runner.UsageError(
                "--multirnn-count applies to --multirnn-full only; add --multirnn-full or leave "
                "--multirnn-count out"
            )
        count = runner.check_count(300 if count is None else count, "--multirnn-count")
        gaps = list(option(config, "--multirnn-known-gaps", []))
        for path in gaps:
            try:
                known_gaps.load(path)
            except known_gaps.KnownGapsError as exc:
                raise runner.UsageError(f"--multirnn-known-gaps: {exc}") from None
        runner.check_engines(names)
    except (runner.UsageError, known_gaps.KnownGapsError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {exc}") from None
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {source}: {exc}") from None
    return {"names": names, "dtypes": dtypes, "full": full, "count": count, "known_gaps": gaps}


def cell_selection(config) -> dict | None:
    """The cell ``--multirnn-cell`` (or ``MULTIRNN_CONFORMANCE_CELL``) names, loaded, with
    the engines and dtypes to certify it on; None when no cell is named. A bad value is a
    ``pytest.UsageError``: a cell that does not load names the module, the name and the
    cells the module defines. The engines are checked for running cells at collection
    (that imports their frameworks)."""
    from multirnn import engines
    from multirnn.conformance import cell_suite, runner

    given = option(config, "--multirnn-cell")
    source = "--multirnn-cell" if given is not None else ENV_CELL
    target = (given if given is not None else os.environ.get(ENV_CELL, "")).strip()
    units = option(config, "--multirnn-cell-units")
    engines_source = "--multirnn-engines" if option(config, "--multirnn-engines") else ENV_ENGINES
    try:
        if not target:
            if given is not None:
                raise runner.UsageError("--multirnn-cell needs module:Name, got an empty value")
            if units is not None:
                raise runner.UsageError(
                    "--multirnn-cell-units applies to --multirnn-cell only; name the cell or "
                    "leave --multirnn-cell-units out"
                )
            return None
        cell = cell_suite.load_cell(target, 3 if units is None else units, option=source)
        dtypes = runner.split_cell_dtypes(
            option(config, "--multirnn-dtypes", "float32,float64"), "--multirnn-dtypes"
        )
        names = None
        if _selected(config):
            names = runner.split_names(_selected(config), engines_source)
            runner.check_engines(names)
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {engines_source}: {exc}") from None
    except ValueError as exc:  # runner.UsageError, and a cell that does not load
        raise pytest.UsageError(f"multirnn conformance: {exc}") from None
    return {"target": target, "cell": cell, "engines": names, "dtypes": dtypes}


def pytest_configure(config):
    """A run that selects the suite, or names a cell, has its options checked now, before
    collection (and, under pytest-xdist, before any worker starts)."""
    if _selected(config):
        selection(config)
    chosen = cell_selection(config)
    if chosen is not None:
        config._multirnn_cell = chosen


def _cell(config) -> dict | None:
    return getattr(config, "_multirnn_cell", None)


def pytest_report_header(config):
    cell = _cell(config)
    if not _selected(config) and cell is None:
        return None
    from multirnn.conformance import environment

    lines = environment.describe(environment.collect())
    header = [f"multirnn conformance: {lines[0]}", *(f"  {line}" for line in lines[1:])]
    if cell is not None:
        header.append(f"multirnn cell certification: {cell['target']}, {cell['cell']!r}")
    return header


def pytest_sessionstart(session):
    """The versions and modes as global properties of ``--junitxml`` (written by the
    process that writes the file, so they are there with pytest-xdist too)."""
    cell = _cell(session.config)
    if not _selected(session.config) and cell is None:
        return
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pytest moved it: the properties are a convenience
        return
    xml = session.config.stash.get(xml_key, None)
    if xml is None:
        return
    from multirnn.conformance import environment

    if _selected(session.config):
        xml.add_global_property("multirnn_engines", _selected(session.config))
    if cell is not None:
        xml.add_global_property(CELL, cell["target"])
    for name, value in environment.flatten(environment.collect()):
        xml.add_global_property(name, value)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, (tuple, list)) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    _cell_summary(terminalreporter)
    found, pairwise, devices = [], False, {}
    for key in ("passed", "failed", "skipped", "xfailed", "xpassed", "error"):
        for report in terminalreporter.stats.get(key, []):
            props = dict(getattr(report, "user_properties", []) or [])
            pairwise = pairwise or PAIRWISE in props
            if ENGINE not in props or not (report.when == "call" or report.skipped):
                continue
            devices.setdefault(props[ENGINE], props.get(DEVICE, "unknown"))
            skipped = report.skipped and not hasattr(report, "wasxfail")
            reason = _skip_reason(report) if skipped else ""
            found.append((props[ENGINE], props[DTYPE], props[CASE], not skipped, reason))
    if not found:  # the suite did not run: import nothing, print nothing
        return
    from multirnn.conformance import environment
    from multirnn.conformance.report import (
        Outcome,
        compared_lines,
        installed_engines,
        reference_only_lines,
        skip_groups,
        skipped_lines,
    )

    rows = [Outcome(*row) for row in found]
    state = getattr(config, "_multirnn_conformance", None)  # None in pytest-xdist's controller
    order = [run.adapter.name for run in state["runs"]] if state else []
    engines = list(dict.fromkeys([e for e in order if e in devices] + list(devices)))
    dtypes = sorted({r.dtype for r in rows})
    total = len({r.case for r in rows})
    env = environment.collect([run.adapter for run in state["runs"]] if state else [])
    for name, dev in devices.items():  # as the process that ran the tests saw them
        env["engines"].setdefault(name, {"device": dev, "versions": {}})
    pairs = [f"{a}:{b}" for a, b in itertools.combinations(engines, 2)] if pairwise else []
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "multirnn conformance")
    for line in environment.describe(env):
        write(line)
    for line in skipped_lines(skip_groups(rows, total)):
        write(line, yellow=True, bold=line.startswith("SKIPPED"))
    for line in compared_lines(engines, dtypes, rows, total, pairs):
        write(line)
    notice = reference_only_lines(
        engines,
        installed_engines(),
        select="select them with --multirnn-engines",
        rerun="pytest --pyargs multirnn.conformance --multirnn-engines=NAME",
    )
    for line in notice:
        write(line, yellow=True)


# -- a user's cell: one test per check -------------------------------------------------------


class CellCheck(pytest.Item):
    """One check of a cell's certification (engine x dtype x check) as a test; a failure
    shows the check's line (errors, tolerance, worst array) and its reproducer."""

    def __init__(self, *, certification, check, **kwargs) -> None:
        super().__init__(**kwargs)
        self.certification = certification
        self.check = check
        self.user_properties += [
            (CELL, certification.target),
            (CELL_ENGINE, check.engine),
            (CELL_DTYPE, check.dtype),
            (CELL_CHECK, check.name),
        ]

    def runtest(self) -> None:
        result = self.certification.run(self.check)
        if result.status == "skip":
            pytest.skip(result.detail)
        if result.status == "fail":
            message = result.line().rstrip()
            if result.reproducer:
                message += f"\nreproduce: {result.reproducer}"
            pytest.fail(message, pytrace=False)

    def reportinfo(self):
        """Where the cell is defined (else the suite), and the check."""
        path, line = self.certification.source()
        where = (path or self.path), (None if line is None else line - 1)
        return *where, f"{self.certification.target} {self.check.id}"


class CellCertification(pytest.Collector):
    """The tests of one cell, under the node ``multirnn-cell`` (``-k multirnn-cell``
    selects them all)."""

    def __init__(self, *, certification, **kwargs) -> None:
        super().__init__(**kwargs)
        self.certification = certification

    def collect(self) -> list[CellCheck]:
        label = type(self.certification.cell).__name__
        return [
            CellCheck.from_parent(
                self, name=f"{label}[{check.id}]", certification=self.certification, check=check
            )
            for check in self.certification.plan()
        ]


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(session, config, items):
    """A named cell's checks join the collected tests."""
    chosen = _cell(config)
    if chosen is None:
        return
    from multirnn.conformance import cell_suite
    from multirnn.conformance.adapters import ORACLES

    for name in chosen["engines"] or ():
        if name in ORACLES or not cell_suite.runs_cells(name):
            raise pytest.UsageError(
                f"multirnn conformance: --multirnn-cell: engine {name!r} does not run users' "
                "cells (RNN); select engines that do, or none for every one that does"
            )
    certification = cell_suite.Certification(
        chosen["cell"], chosen["engines"], dtypes=chosen["dtypes"], target=chosen["target"]
    )
    if not certification.engines:
        raise pytest.UsageError(
            "multirnn conformance: --multirnn-cell: no installed engine runs users' cells"
        )
    parent = CellCertification.from_parent(
        session, name="multirnn-cell", nodeid="multirnn-cell", certification=certification
    )
    items.extend(session.genitems(parent))  # reported as collected, like any test


def _cell_summary(terminalreporter) -> None:
    """The closing lines of a run with cell checks: the skipped groups, loud, and a count."""
    counts: dict[str, int] = {}
    skipped, engines, cells = [], set(), set()
    for key in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(key, []):
            props = dict(getattr(report, "user_properties", []) or [])
            if CELL not in props or not (report.when == "call" or report.skipped):
                continue
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
            cells.add(props[CELL])
            if props[CELL_ENGINE] != "standard":
                engines.add(props[CELL_ENGINE])
            if report.skipped:
                skipped.append((props[CELL_ENGINE], props[CELL_DTYPE], _skip_reason(report)))
    if not counts:
        return
    from multirnn.conformance.cell_suite import skipped_lines

    terminalreporter.write_sep("=", "multirnn cell certification")
    for line in skipped_lines(skipped):
        terminalreporter.write_line(line, yellow=True, bold=True)
    done = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "skipped"))
    terminalreporter.write_line(
        f"cell {', '.join(sorted(cells))}: {done} on {', '.join(sorted(engines)) or 'no engine'}, "
        "against the "
        "NumPy engine's RNN (gradients: its central differences)"
    )
