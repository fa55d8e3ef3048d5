"""Selects engines and cases for the conformance tests in this package.

Engines come from ``--multirnn-engines`` or the ``MULTIRNN_CONFORMANCE_ENGINES`` environment
variable; collecting the suite with neither is an error, never an empty pass.
"""

from __future__ import annotations

import os

import pytest

from multirnn.conformance.plugin import CASE, DEVICE, DTYPE, ENGINE, ENV_ENGINES, PAIRWISE


def _option(config, name, default=None):
    try:
        value = config.getoption(name)
    except ValueError:  # the plugin was disabled (-p no:multirnn): env vars only
        return default
    return default if value is None else value


def _state(config):
    if hasattr(config, "_multirnn_conformance"):
        return config._multirnn_conformance
    from multirnn import engines
    from multirnn.conformance import cases, runner

    text = _option(config, "--multirnn-engines") or os.environ.get(ENV_ENGINES, "")
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise pytest.UsageError(
            "multirnn conformance: no engine selected. Pass --multirnn-engines=NAME[,NAME] or "
            f"set {ENV_ENGINES}. Installed engines: {', '.join(engines.available())}"
            " (and 'keras' as an oracle where Keras 3 is installed)."
        )
    dtypes = _option(config, "--multirnn-dtypes", "float32,float64")
    dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    if not dtypes or set(dtypes) - {"float32", "float64"}:
        raise pytest.UsageError(f"--multirnn-dtypes accepts float32,float64; got {dtypes}")
    try:
        runs = runner.prepare(names, _option(config, "--multirnn-known-gaps", []))
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        raise pytest.UsageError(f"multirnn conformance: {exc}") from exc
    if _option(config, "--multirnn-full", False):
        selected = cases.full_cases(_option(config, "--multirnn-count", 300))
    else:
        selected = cases.quick_cases()
    config._multirnn_conformance = {"runs": runs, "dtypes": dtypes, "cases": selected}
    return config._multirnn_conformance


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
