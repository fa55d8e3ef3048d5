"""multirnn's PyTorch layers under DistributedDataParallel and FSDP (fully_shard): two CPU
processes joined by gloo train exactly like one process on the concatenated batch.

The scenarios run in ``torch_worker.py`` (two fresh processes, see its docstrings); this
test checks their report. float64 throughout, so the tolerance is 1e-12 (the differences
seen are ~1e-16).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from ._launch import HERE, failures, run_ranks

EQUAL = ("<=", 1e-12)
DIFFERENT = (">", 1e-3)
EXPECTED = {
    # gradients of the first step and weights after the second equal one process's
    "ddp": {"grads": EQUAL, "weights": EQUAL},
    "fsdp": {"grads": EQUAL, "weights": EQUAL},
    # each rank carries the states of its own rows
    "stateful": {"grads": EQUAL, "weights": EQUAL, "states": EQUAL},
    # regression: the carried states were buffers, which DDP broadcasts from rank 0
    "stateful_called_before_wrapping": {"grads": EQUAL, "weights": EQUAL, "states": EQUAL},
    # masks from each rank's own seed: one process drawing them shard by shard agrees,
    # the ranks' masks differ, and the same seed draws the same masks again
    "dropout": {"grads": EQUAL, "weights": EQUAL, "ranks_differ": DIFFERENT, "rerun": EQUAL},
}


def test_ddp_and_fsdp_on_two_cpu_processes_equal_one_process(tmp_path):
    reports = run_ranks(HERE / "torch_worker.py", 2, tmp_path / "report.json")
    problems = [f"rank {r}: {p}" for r, rep in enumerate(reports) for p in failures(rep, EXPECTED)]
    assert not problems, "\n".join(problems)
