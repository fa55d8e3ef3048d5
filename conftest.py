"""Running the documentation: ``pytest --markdown-docs README.md docs`` (pytest-markdown-docs)
turns every ``python`` block of the README and of docs/*.md into a test; nox runs it in its
``lite`` and ``tests`` sessions.

In the markdown source, a block marked ``python notest`` is a fragment that cannot run
alone, ``python continuation`` runs after the blocks before it, ``fixture:needs_NAME``
skips the block, with the reason, where the package NAME is not installed, and
``fixture:every_engine`` marks a block that works on whichever engine is selected:
tests/test_docs.py runs it once more under each installed engine (MULTIRNN_BACKEND). Each
block runs in an empty temporary directory of its own, so files it writes never land in
the checkout, and starts from the engine selection of the environment (no
``set_backend`` left over from an earlier block).
"""

from __future__ import annotations

import importlib.util

import pytest

#: packages a documentation block may need, by import name, with the extra that installs it
OPTIONAL = {
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "optax": "jax",
    "flax": "flax",
    "h5py": "h5",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def _needs(module: str, extra: str):
    @pytest.fixture(name=f"needs_{module}")
    def fixture() -> None:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f'needs {module}: pip install ".[{extra}]" from a multirnn checkout')

    return fixture


for _module, _extra in OPTIONAL.items():
    globals()[f"needs_{_module}"] = _needs(_module, _extra)


@pytest.fixture
def every_engine() -> None:
    """Marks a documentation block that tests/test_docs.py also runs on every engine."""


@pytest.fixture(autouse=True)
def _markdown_block_sandbox(request):
    """For documentation blocks only: a fresh working directory, and no selection made in
    code by an earlier block."""
    if request.node.get_closest_marker("markdown-docs") is None:
        yield
        return
    from multirnn import engines

    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    engines.set_backend(None)
    yield
    engines.set_backend(None)
