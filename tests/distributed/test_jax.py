"""multirnn's JAX layers with the batch sharded over two host CPU devices: under jax.jit with
NamedSharding, and under shard_map, outputs and gradients equal the one-device computation.

The scenarios run in ``jax_worker.py`` in a fresh process (the forced device count and
64-bit mode must be set before JAX starts; see its docstrings); this test checks its
report. float64, so the tolerance is 1e-12 (the differences seen are ~1e-16).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from ._launch import HERE, failures, run

EQUAL = ("<=", 1e-12)
EXPECTED = {
    # jit, batch sharded, weights replicated: outputs, loss, gradients, weights after a step
    "named_sharding": {"outputs": EQUAL, "loss": EQUAL, "grads": EQUAL, "weights": EQUAL},
    # shard_map with check_vma (pmean of the loss; regression: the scan's carry and the
    # hand-written backward pass failed JAX's varying-axes check) and without (pmean of grads)
    "shard_map": {
        f"{variant}_{value}": EQUAL
        for variant in ("check_vma", "no_check_vma")
        for value in ("loss", "grads")
    },
    # one key under jit draws the one-device masks; per-device keys under shard_map
    "dropout": {
        "jit_outputs": EQUAL,
        "shard_map_outputs": EQUAL,
        "rerun": EQUAL,
        "devices_differ": (">", 1e-3),
    },
    "stateful": {"outputs": EQUAL, "states": EQUAL},
}


def test_sharded_batch_on_two_host_devices_equals_one_device(tmp_path):
    out = tmp_path / "report.json"
    run([str(HERE / "jax_worker.py"), str(out)],
        XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_ENABLE_X64="1")  # fmt: skip
    report = json.loads(out.read_text())
    assert report["devices"] == 2 and report["x64"], report
    problems = failures(report, EXPECTED)
    assert not problems, "\n".join(problems)
