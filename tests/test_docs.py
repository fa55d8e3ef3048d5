"""The documentation as tests, beyond what ``pytest --markdown-docs README.md docs`` runs
(see the root conftest.py): the blocks marked ``fixture:every_engine`` (the README's first
example among them) on every installed engine, and the install commands the docs and the
code give.

Blocks are read with pytest-markdown-docs' own extraction, so this file and the plugin
agree on what a block is, which blocks are ``notest`` and which fixtures a block names.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import extract_fence_tests

from conftest import OPTIONAL
from multirnn import engines

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENGINES = ("numpy", "torch", "jax", "tensorflow")
#: the distribution that provides an importable module, where the names differ
DISTRIBUTION = {"tensorflow": "tensorflow-cpu"}
#: what a declared package brings along (TensorFlow 2.16 and later depend on Keras 3)
IMPLIES = {"tensorflow": {"keras"}}


def python_blocks(path: Path):
    """The runnable Python blocks of one page (``notest`` ones left out), in order."""
    parser = MarkdownIt("commonmark")
    return list(extract_fence_tests(parser, path.read_text("utf8"), 0, source_path=path))


def extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf8"))["project"]
    return project["optional-dependencies"]


def distributions(extra: str, table: dict[str, list[str]]) -> set[str]:
    """The distributions an extra installs, following ``multirnn[...]`` references."""
    names = set()
    for requirement in table[extra]:
        name, _, rest = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]*)\])?", requirement).groups()
        if name == "multirnn":
            for inner in rest.split(","):
                names |= distributions(inner.strip(), table)
        else:
            names.add(name.lower())
    return names


def blocks_for_every_engine():
    """The blocks marked ``fixture:every_engine``, as pytest params."""
    return [
        pytest.param(block, id=f"{page.relative_to(ROOT)}:{block.start_line}")
        for page in PAGES
        for block in python_blocks(page)
        if "every_engine" in block.fixture_names
    ]


def test_the_readme_first_example_is_run_on_every_engine():
    first = python_blocks(ROOT / "README.md")[0]
    assert "every_engine" in first.fixture_names
    assert first.source.lstrip().startswith("import numpy as np\nimport multirnn\n")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("block", blocks_for_every_engine())
def test_blocks_for_every_engine_run_on_each_installed_engine(block, engine, tmp_path):
    """A block marked every_engine, verbatim, in a fresh process with MULTIRNN_BACKEND set,
    in an empty directory (the README's first block writes encoder.safetensors)."""
    if not engines.registry()[engine].installed():
        pytest.skip(f"the {engine} engine is not installed")
    needs = [f.removeprefix("needs_") for f in block.fixture_names if f.startswith("needs_")]
    if missing := [m for m in needs if importlib.util.find_spec(m) is None]:
        pytest.skip(f"needs {', '.join(missing)}")
    check = f"\nassert multirnn.backend() == {engine!r}, multirnn.backend()\n"
    result = subprocess.run(
        [sys.executable, "-c", block.source + check],
        cwd=tmp_path,
        env={**os.environ, engines.ENV_VAR: engine, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    where = f"{block.source_path.relative_to(ROOT)}:{block.start_line}"
    assert result.returncode == 0, f"{where} on {engine}:\n{result.stderr}"


def test_every_optional_import_of_a_block_is_declared_and_installed_by_an_extra():
    """A block that imports an optional package names ``fixture:needs_<package>`` (so it
    is skipped where the package is missing), and the extra the skip message names
    installs that package."""
    table = extras()
    undeclared = []
    for page in PAGES:
        for block in python_blocks(page):
            tree = ast.parse(block.source)
            imported = {
                alias.name.partition(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import)
                for alias in node.names
            } | {
                node.module.partition(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
            }
            declared = {
                f.removeprefix("needs_") for f in block.fixture_names if f.startswith("needs_")
            }
            declared |= {m for d in declared for m in IMPLIES.get(d, ())}
            where = f"{page.relative_to(ROOT)}:{block.start_line}"
            undeclared += [(where, m) for m in sorted(imported & OPTIONAL.keys() - declared)]
            assert declared <= OPTIONAL.keys(), f"{where}: unknown fixtures {declared}"
    assert not undeclared, f"blocks importing an optional package without needs_: {undeclared}"
    for module, extra in OPTIONAL.items():
        assert DISTRIBUTION.get(module, module) in distributions(extra, table), (module, extra)


def test_install_commands_name_a_checkout_not_pypi():
    """multirnn is not on PyPI: no page and no error message may tell users to
    pip install multirnn[...]; the engines' hints name extras that exist."""
    wrong = re.compile(r"pip install\s+['\"]?multirnn\[")
    sources = [*PAGES, *ROOT.glob("multirnn/**/*.py"), *ROOT.glob("backends/*/*.py")]
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text("utf8").splitlines(), 1)
        if wrong.search(line)
    ]
    assert not hits
    table = extras()
    for name in ENGINES[1:]:
        info = engines.registry()[name]
        assert info.extra in table
        assert info.install_hint() == f'pip install ".[{info.extra}]" (from a multirnn checkout)'


def test_readme_and_index_link_the_installing_page():
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        assert "installing.md" in page.read_text("utf8"), page


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command (Quick start, step 2) as written."""
    readme = (ROOT / "README.md").read_text("utf8")
    commands = [
        line.partition("#")[0].strip()
        for token in MarkdownIt("commonmark").parse(readme)
        if token.type == "fence" and token.info.strip() == "bash"
        for line in token.content.splitlines()
        if "-m nox" in line
    ]
    assert commands == ["python -m pip install nox && python -m nox"]
    ci = (ROOT / ".ci" / "run").read_text("utf8").splitlines()
    assert commands[0] in ci


def test_the_cells_of_the_guide_are_certified():
    """docs/cells.md promises that its cells pass ``multirnn conformance --cell``."""
    pytest.importorskip("array_api_strict")
    import multirnn
    from multirnn.conformance import cell_suite

    found = []
    for block in python_blocks(ROOT / "docs" / "cells.md"):
        namespace = {"__name__": f"docs_cells_{block.start_line}"}
        exec(compile(block.source, f"docs/cells.md:{block.start_line}", "exec"), namespace)
        for value in list(namespace.values()):
            if isinstance(value, type) and issubclass(value, multirnn.Cell):
                if value is multirnn.Cell:
                    continue
                results = cell_suite.certify(value(3))
                found.append(value.__name__)
                failed = [r.line() for r in results if r.status == "fail"]
                assert not failed, "\n".join(failed)
    assert found == ["MinimalGRU", "PeepholeLSTM", "LayerNormLSTM", "IndRNN"]
