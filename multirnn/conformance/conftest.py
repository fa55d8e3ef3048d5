"""Selects engines and cases for the conformance tests in this package.

Engines come from ``--multirnn-engines`` or the ``MULTIRNN_CONFORMANCE_ENGINES`` environment
variable; collecting the suite with neither is an error, never an empty pass.
"""

from __future__ import annotations

import pytest

from multirnn.conformance.plugin import CASE, DEVICE, DTYPE, ENGINE, PAIRWISE, selection


def _state(config):
    if hasattr(config, "_multirnn_conformance"):
        return config._multirnn_conformance
    from multirnn import engines
    from multirnn.conformance import cases, known_gaps, runner

    chosen = selection(config)  # a bad option is a pytest.UsageError naming it
    try:
        runs = runner.prepare(chosen["names"], chosen["known_gaps"])
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {exc}") from None
    except (runner.UsageError, known_gaps.KnownGapsError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {exc}") from None
    selected = cases.full_cases(chosen["count"]) if chosen["full"] else cases.quick_cases()
    config._multirnn_conformance = {"runs": runs, "dtypes": chosen["dtypes"], "cases": selected}
    return config._multirnn_conformance


def pytest_collectstart(collector):
    """The selection is made as the suite's module starts collecting, where a usage error
    stops pytest with its one-line message (in pytest_generate_tests it would be a
    collection error with a traceback)."""
    if isinstance(collector, pytest.Module) and collector.path.name == "test_conformance.py":
        _state(collector.config)


def pytest_generate_tests(metafunc):
    if not {"conformance_run", "pairwise_case"} & set(metafunc.fixturenames):
        return
    state = _state(metafunc.config)
    if "conformance_run" in metafunc.fixturenames:
        params = [
            pytest.param(run, dtype, case, id=f"{run.adapter.name}-{dtype}-{case.id}")
            for run in state["runs"]
            for dtype in state["dtypes"]
            for case in state["cases"]
        ]
        metafunc.parametrize("conformance_run,dtype,case", params)
    if "pairwise_case" in metafunc.fixturenames:
        several = len(state["runs"]) > 1 and "float32" in state["dtypes"]
        params = [pytest.param(c, id=c.id) for c in state["cases"] if not c.stateful]
        params = params if several else []
        metafunc.parametrize("pairwise_case", params)


def pytest_collection_modifyitems(config, items):
    """Each conformance test carries its engine, device, dtype and case as user properties,
    from which the plugin's terminal summary tells what was compared and what was skipped
    (in the process that prints it, which under pytest-xdist has not imported the engines)."""
    from multirnn.conformance import cases, environment

    devices: dict[str, str] = {}
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "conformance_run" in params:
            ad = params["conformance_run"].adapter
            if ad.name not in devices:
                devices[ad.name] = environment.device(ad)
            item.user_properties += [
                (ENGINE, ad.name),
                (DEVICE, devices[ad.name]),
                (DTYPE, params["dtype"]),
                (CASE, params["case"].id),
            ]
        elif isinstance(params.get("pairwise_case"), cases.Case):  # not an empty parameter set
            item.user_properties.append((PAIRWISE, params["pairwise_case"].id))
