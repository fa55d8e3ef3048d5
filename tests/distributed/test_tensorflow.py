"""multirnn's TensorFlow layers under tf.distribute.MirroredStrategy over two logical CPU
devices: a custom training loop and model.fit give the single-device weights.

The scenarios run in ``tensorflow_worker.py`` in a fresh process (logical devices must be
set before TensorFlow starts; see its docstrings); this test checks its report. float64,
so the tolerance is 1e-12 (the differences seen are ~1e-17).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from ._launch import HERE, failures, run

EQUAL = ("<=", 1e-12)
DIFFERENT = (">", 1e-3)
EXPECTED = {
    "custom_loop": {"loss": EQUAL, "grads": EQUAL, "weights": EQUAL},
    "fit": {"loss": EQUAL, "weights": EQUAL},
    # regression: every replica drew the same masks (one generator state, read by all)
    "dropout": {"replicas_differ": DIFFERENT, "calls_differ": DIFFERENT, "rerun": EQUAL},
    "stateful": {"states": EQUAL},
}


def test_mirrored_strategy_on_two_logical_cpus_equals_one_device(tmp_path):
    out = tmp_path / "report.json"
    run([str(HERE / "tensorflow_worker.py"), str(out)], KERAS_BACKEND="tensorflow")
    report = json.loads(out.read_text())
    assert len(report["devices"]) == 2, report
    problems = failures(report, EXPECTED)
    assert not problems, "\n".join(problems)
