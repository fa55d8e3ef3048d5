"""The quieting recipe of docs/installing.md, run as a user runs it: in a fresh process
whose environment sets nothing, it prints nothing."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("tensorflow") is None:  # not imported here: the child does
    pytest.skip("tensorflow is not installed", allow_module_level=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "installing.md"


def test_the_documented_quieting_prints_nothing(tmp_path):
    section = DOC.read_text(encoding="utf-8").split("## Quieting TensorFlow", 1)[1]
    block = re.search(r"```python[^\n]*\n(.*?)```", section, re.S)
    assert block, "docs/installing.md has no Python block under Quieting TensorFlow"
    script = tmp_path / "quiet.py"
    script.write_text(block.group(1) + "layer(__import__('numpy').zeros((2, 3, 4), 'float32'))\n")
    quiet = ("TF_", "GLOG_", "ABSL_", "KERAS_", "MULTIRNN_BACKEND")
    env = {k: v for k, v in os.environ.items() if not k.startswith(quiet)}
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout + run.stderr == ""
