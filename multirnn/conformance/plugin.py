"""Pytest plugin (registered under ``pytest11``): adds the ``--multirnn-*`` options, so
``pytest --pyargs multirnn.conformance --multirnn-engines=NAME`` works anywhere. The tests
themselves live in this package and run only when it is collected.

When an engine is selected, the plugin also records the environment (the report header,
and global properties of ``--junitxml``), and closes the run with a summary section: what
was compared, which groups were skipped and how to run them. Nothing is imported, and
nothing printed, in pytest runs that do not select the suite.
"""

from __future__ import annotations

import itertools
import os

ENV_ENGINES = "MULTIRNN_CONFORMANCE_ENGINES"


#: The user properties each conformance test carries (they travel with pytest-xdist's
#: reports, and appear in ``--junitxml``).
ENGINE, DEVICE, DTYPE = "multirnn_engine", "multirnn_device", "multirnn_dtype"
CASE, PAIRWISE = "multirnn_case", "multirnn_pairwise"


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


def pytest_configure(config):
    """A run that selects the suite has its options checked now, before collection (and,
    under pytest-xdist, before any worker starts)."""
    if _selected(config):
        selection(config)


def pytest_report_header(config):
    if not _selected(config):
        return None
    from multirnn.conformance import environment

    lines = environment.describe(environment.collect())
    return [f"multirnn conformance: {lines[0]}", *(f"  {line}" for line in lines[1:])]


def pytest_sessionstart(session):
    """The versions and modes as global properties of ``--junitxml`` (written by the
    process that writes the file, so they are there with pytest-xdist too)."""
    if not _selected(session.config):
        return
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pytest moved it: the properties are a convenience
        return
    xml = session.config.stash.get(xml_key, None)
    if xml is None:
        return
    from multirnn.conformance import environment

    xml.add_global_property("multirnn_engines", _selected(session.config))
    for name, value in environment.flatten(environment.collect()):
        xml.add_global_property(name, value)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, (tuple, list)) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
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
