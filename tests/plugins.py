"""Installing throwaway engine distributions (a module plus a dist-info with entry points)
into a directory that a subprocess puts on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from multirnn import engines


def write_plugin(root: Path, module: str, source: str, entry_points: str) -> str:
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return str(root)


def run(args: list[str], path: str | None = None, env_extra: dict | None = None, timeout=300):
    env = dict(os.environ)
    env.pop(engines.ENV_VAR, None)
    if path:
        env["PYTHONPATH"] = path
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
