"""The suite as users run it: ``multirnn conformance`` and ``pytest --pyargs``, with a
third-party engine registered by entry point."""

from __future__ import annotations

import importlib.util
import json

import pytest

from multirnn import cli
from multirnn.conformance.cases import quick_cases

from .. import plugins

BROKEN_ENGINE = """
from multirnn.engines import EngineInfo
from multirnn.reference import layers as _ref
from multirnn.reference.testing import NumpyAdapter

ENGINE = EngineInfo(name="offbyone", module="offbyone_engine", testing="offbyone_engine",
                    priority=-200)


class Recurrent(_ref.Recurrent):
    engine_name = "offbyone"


class SimpleRNN(Recurrent, _ref.SimpleRNN):
    pass


class LSTM(Recurrent, _ref.LSTM):
    def set_weights(self, weights):
        super().set_weights(weights)
        if self.spec.use_bias:  # the bug: the forget block of the bias is off by one
            self._weights[2][self.units : 2 * self.units] += 1.0


class GRU(Recurrent, _ref.GRU):
    pass


class Adapter(NumpyAdapter):
    name = "offbyone"


ADAPTER = Adapter
"""


@pytest.fixture
def broken_engine(tmp_path):
    return plugins.write_plugin(
        tmp_path,
        "offbyone_engine",
        BROKEN_ENGINE,
        "[multirnn.backends]\noffbyone = offbyone_engine:ENGINE\n",
    )


def test_cli_passes_on_numpy_and_writes_reports(tmp_path, capsys):
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    code = cli.main(
        [
            "conformance",
            "--engines",
            "numpy",
            "--no-progress",
            "--json",
            str(out_json),
            "--junit",
            str(out_xml),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "LSTM/mask" in text and "tolerance policy" in text
    assert json.loads(out_json.read_text())["ok"] is True
    assert out_xml.read_text().startswith("<testsuites")


def test_cli_single_case_and_bad_arguments(capsys):
    assert (
        cli.main(
            ["conformance", "--engines", "numpy", "--case", "GRU(mask=arbitrary)", "--no-progress"]
        )
        == 0
    )
    assert "1 cases" in capsys.readouterr().out
    assert cli.main(["conformance", "--engines", "numpy", "--case", "GRU(mask=maybe)"]) == 2
    assert cli.main(["conformance", "--engines", "numpy", "--dtype", "float16"]) == 2
    assert cli.main(["conformance", "--engines", "nope"]) == 2
    assert "unknown multirnn engine 'nope'" in capsys.readouterr().err


def test_registered_third_party_engine_is_checked_by_name(broken_engine):
    result = plugins.run(
        [
            "-m",
            "multirnn.cli",
            "conformance",
            "--engines",
            "offbyone",
            "--dtype",
            "float64",
            "--no-progress",
        ],
        broken_engine,
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL offbyone float64 forward LSTM()" in result.stdout
    assert "c.reproduce('offbyone', 'LSTM()', 'float64')" in result.stdout
    assert "FAIL offbyone float64 forward GRU" not in result.stdout


def test_pytest_integration(broken_engine):
    ok = plugins.run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "multirnn.conformance",
            "--multirnn-engines",
            "numpy",
            "--multirnn-dtypes",
            "float32",
        ]
    )
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert f"{len(quick_cases())} passed" in ok.stdout  # one per case; no pairwise alone
    none = plugins.run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "multirnn.conformance"]
    )
    assert none.returncode != 0 and "no engine selected" in none.stdout + none.stderr
    broken = plugins.run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "multirnn.conformance",
            "--multirnn-dtypes",
            "float64",
            "-k",
            "LSTM",
        ],
        broken_engine,
        {"MULTIRNN_CONFORMANCE_ENGINES": "offbyone"},
    )
    assert broken.returncode == 1
    assert "reproduce: python -c" in broken.stdout


@pytest.mark.skipif(
    not (importlib.util.find_spec("keras") and importlib.util.find_spec("tensorflow")),
    reason="the Keras cross-check needs keras and tensorflow (nox -s tests installs them)",
)
def test_keras_agrees_with_the_reference(tmp_path):
    """The independent second oracle: Keras 3 on TensorFlow, on every case it can express."""
    report = tmp_path / "keras.json"
    result = plugins.run(
        [
            "-m",
            "multirnn.cli",
            "conformance",
            "--engines",
            "keras",
            "--keras-backend",
            "tensorflow",
            "--no-progress",
            "--json",
            str(report),
        ],
        env_extra={"TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    data = json.loads(report.read_text())
    skipped = [r for r in data["results"] if r["status"] == "skip"]
    assert all("dropout=True" in r["case"] for r in skipped)
    ran = sum(data["counts"].get(k, 0) for k in ("pass", "xfail", "xpass"))
    assert ran == 2 * len(quick_cases()) - len(skipped)  # every other case-dtype ran
