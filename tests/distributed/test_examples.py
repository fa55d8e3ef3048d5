"""The scaling-out examples (docs/scaling-out.md) run as written, each in a process of its
own, and print a finite loss for every step."""

from __future__ import annotations

import math
import re

import pytest

from ._launch import ROOT, run

EXAMPLES = {
    "torch": ("scaling_out_torch.py", ("torch",), 5),
    "jax": ("scaling_out_jax.py", ("jax", "optax"), 5),
    "tensorflow": ("scaling_out_tensorflow.py", ("tensorflow", "keras"), 1),
}


@pytest.mark.parametrize("framework", list(EXAMPLES))
def test_example_runs_as_written(framework):
    script, needs, losses = EXAMPLES[framework]
    for module in needs:
        pytest.importorskip(module)
    output = run([str(ROOT / "examples" / script)]).stdout
    values = [float(v) for v in re.findall(r"loss (?:after one epoch: )?([-\d.naif]+)", output)]
    assert len(values) == losses, output
    assert all(math.isfinite(v) for v in values), output
