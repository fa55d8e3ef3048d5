"""Engine selection, discovery through entry points, and import hygiene."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

import multirnn
from multirnn import engines

from . import plugins

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras", "flax")


def test_automatic_selection_takes_the_highest_priority_installed_engine():
    infos = [engines.registry()[name] for name in engines.available()]
    best = max(infos, key=lambda info: info.priority)
    assert multirnn.backend() == best.name
    assert engines.registry()["numpy"].priority == min(i.priority for i in infos)
    assert multirnn.LSTM is multirnn.engine(best.name).LSTM
    assert multirnn.Recurrent is multirnn.engine().Recurrent


def test_engine_object_exposes_the_layer_classes():
    eng = multirnn.engine("numpy")
    assert {eng.SimpleRNN.__name__, eng.LSTM.__name__, eng.GRU.__name__} == {
        "SimpleRNN",
        "LSTM",
        "GRU",
    }
    assert eng.layer_class("GRU") is eng.GRU
    assert eng.framework_version()


def test_environment_variable_selects(monkeypatch):
    monkeypatch.setenv(engines.ENV_VAR, "numpy")
    assert multirnn.backend() == "numpy"
    monkeypatch.setenv(engines.ENV_VAR, "pytorch")
    with pytest.raises(multirnn.UnknownEngineError, match=r"unknown multirnn engine 'pytorch'"):
        multirnn.backend()
    with pytest.raises(multirnn.UnknownEngineError, match=r"Known engines: .*numpy \(installed\)"):
        _ = multirnn.LSTM


def test_set_backend_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(engines.ENV_VAR, "no-such-engine")
    multirnn.set_backend("numpy")
    assert multirnn.backend() == "numpy"
    multirnn.set_backend(None)
    with pytest.raises(multirnn.UnknownEngineError):
        multirnn.backend()


def test_set_backend_fails_at_selection_time_and_keeps_the_old_choice():
    multirnn.set_backend("numpy")
    with pytest.raises(multirnn.UnknownEngineError, match="'nmupy'.*Did you mean 'numpy'"):
        multirnn.set_backend("nmupy")
    assert multirnn.backend() == "numpy"
    with pytest.raises(TypeError, match="engine name must be a string"):
        multirnn.engine(3)


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return plugins.run(["-c", textwrap.dedent(code)], env_extra=env_extra)


def test_import_multirnn_imports_no_framework():
    result = run_python(
        f"""
        import sys, multirnn, numpy as np
        layer = multirnn.engine("numpy").LSTM(2)
        layer(np.zeros((1, 2, 3)))
        multirnn.backend(); multirnn.engines.describe(); multirnn.engines.available()
        import multirnn.conformance, multirnn.bench.harness, multirnn.cli
        print([m for m in {FRAMEWORKS!r} if m in sys.modules])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


PLUGIN = """
from multirnn.engines import EngineInfo
from multirnn.reference import layers as _ref

ENGINE = EngineInfo(name="fake", module="fake_engine", priority=50, description="test double")
MISSING = EngineInfo(
    name="needs-missing", module="fake_engine", requires=("no_such_framework_xyz",),
    extra="missing", priority=60,
)


class Recurrent(_ref.Recurrent):
    engine_name = "fake"


class SimpleRNN(Recurrent, _ref.SimpleRNN):
    pass


class LSTM(Recurrent, _ref.LSTM):
    pass


class GRU(Recurrent, _ref.GRU):
    pass
"""

ENTRY_POINTS = """
[multirnn.backends]
fake = fake_engine:ENGINE
needs-missing = fake_engine:MISSING
broken = fake_engine:DOES_NOT_EXIST
"""


@pytest.fixture
def plugin_path(tmp_path):
    return plugins.write_plugin(tmp_path, "fake_engine", PLUGIN, ENTRY_POINTS)


def test_third_party_engine_is_discovered_and_selected_automatically(plugin_path):
    result = run_python(
        """
        import json, multirnn, numpy as np
        layer = multirnn.LSTM(2)
        out = layer(np.zeros((1, 2, 3)))
        print(json.dumps({
            "backend": multirnn.backend(),
            "engine": layer.engine_name,
            "rows": multirnn.engines.describe(),
            "loaded_by_name": multirnn.engine("numpy").name,
        }))
        """,
        {"PYTHONPATH": plugin_path},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # needs-missing has the higher priority but is not installed: fake is chosen.
    assert report["backend"] == "fake" and report["engine"] == "fake"
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["fake"]["installed"] and rows["fake"]["selected"]
    assert not rows["needs-missing"]["installed"]
    assert rows["needs-missing"]["install"] == (
        'pip install ".[missing]" (from a multirnn checkout)'
    )
    assert "broken" in rows["broken"]["description"]
    assert report["loaded_by_name"] == "numpy"


def test_selection_errors_name_the_fix(plugin_path):
    result = run_python(
        """
        import multirnn
        for name in ("needs-missing", "broken", "nope"):
            try:
                multirnn.set_backend(name)
            except (multirnn.EngineUnavailableError, multirnn.UnknownEngineError) as exc:
                print(type(exc).__name__, "|", exc)
        """,
        {"PYTHONPATH": plugin_path},
    )
    assert result.returncode == 0, result.stderr
    missing, broken, unknown = result.stdout.strip().splitlines()
    assert missing.startswith("EngineUnavailableError")
    assert "needs no_such_framework_xyz" in missing
    assert 'pip install ".[missing]" (from a multirnn checkout)' in missing
    assert broken.startswith("EngineUnavailableError") and "DOES_NOT_EXIST" in broken
    assert unknown.startswith("UnknownEngineError")
    assert "fake (installed)" in unknown and "needs-missing (not installed" in unknown


def test_env_var_picks_a_plugin(plugin_path):
    result = run_python(
        "import multirnn; print(multirnn.backend(), multirnn.GRU.engine_name)",
        {"PYTHONPATH": plugin_path, engines.ENV_VAR: "numpy"},
    )
    assert result.stdout.split() == ["numpy", "numpy"], result.stderr
