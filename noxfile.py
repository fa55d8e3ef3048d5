"""Developer and CI sessions. ``nox`` alone runs lint, lite, tests and package (what CI runs).

Exact versions of everything we test with live in ``constraints.txt`` (one place); the
extras in pyproject.toml carry only lower bounds. pip's output is shown (``silent=False``)
so that a long install, such as the frameworks', visibly makes progress in CI logs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "lite", "tests", "package"]
nox.options.reuse_existing_virtualenvs = True

PINS = ("-c", "constraints.txt")
#: the Python blocks of the README and of docs/*.md, as tests (pytest-markdown-docs)
DOCS = ("--markdown-docs", "README.md", "docs")
#: pytest-xdist: one worker per core (CI has two); ``nox -- -n 0`` runs in one process
PARALLEL = ("-n", "auto", "--dist", "worksteal")
FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "tf_keras", "flax", "onnx", "onnxruntime")


def install(session: nox.Session, *args: str) -> None:
    """``pip install`` with the pinned versions, pip's progress shown."""
    session.install(*PINS, *args, silent=False)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite with every engine's framework installed (pinned; optax comes with
    the jax extra), and Flax, h5py, onnx and ONNX Runtime for the converters' tests and the
    peer oracles; then every Python block of the documentation."""
    install(session, ".[test,all,flax,h5,onnx]")
    # tf-keras (Keras 2) writes real Keras 2 files for tests/convert/test_keras2.py; it needs
    # the `tensorflow` distribution, which tensorflow-cpu provides, so no dependencies
    install(session, "--no-deps", "tf-keras")
    env = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    # --durations: the slowest tests in the CI log, to keep the run within its budget
    session.run("pytest", *PARALLEL, "--durations=15", *session.posargs, env=env)
    session.run("pytest", *DOCS, env=env)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The boundary fuzz tests (tests/test_fuzz.py: layer keywords, call arguments and file
    contents on every engine; tests/convert/test_keras2_hostile.py: mutated Keras HDF5 files)
    with the long Hypothesis profile: hundreds of draws per test
    where CI's quick profile runs a few dozen. Not in the default list."""
    install(session, ".[test,all]")
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "MULTIRNN_FUZZ": "long"}
    session.run("pytest", "tests/test_fuzz.py", "tests/convert/test_keras2_hostile.py",
                *PARALLEL, "--hypothesis-show-statistics", *session.posargs, env=env)  # fmt: skip


@nox.session
def distributed(session: nox.Session) -> None:
    """Only the tests under tests/distributed: the layers under each framework's own
    distributed engine (PyTorch DDP and FSDP over gloo, JAX sharding and shard_map over host
    CPU devices, TensorFlow's MirroredStrategy over logical CPUs) and the scaling-out
    examples. Not in the default list: ``nox`` (CI) already runs these tests in ``tests``."""
    install(session, ".[test,all]")
    session.run("pytest", "tests/distributed", *session.posargs, env={"TF_CPP_MIN_LOG_LEVEL": "1"})


@nox.session
def lite(session: nox.Session) -> None:
    """The suite with no framework installed: proves the frameworks are optional. The
    documentation blocks that need a framework are skipped, each with its reason."""
    install(session, ".[test]")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; "
        f"found = [m for m in {FRAMEWORKS!r} if u.find_spec(m)]; "
        "sys.exit(f'lite session must not have {found}' if found else 0)",
    )
    session.run("pytest", *PARALLEL, *session.posargs)
    session.run("pytest", *DOCS)


@nox.session
def conformance(session: nox.Session) -> None:
    """The full conformance run: every engine, with the peers as extra oracles (Keras 3 on
    TensorFlow, torch.nn, Flax NNX and ONNX Runtime, each through multirnn's converters),
    then Keras on its JAX and torch backends, each in a process of its own.
    ``nox -s conformance -- ARGS`` passes ARGS to ``multirnn conformance`` instead."""
    install(session, ".[test,all,flax,onnx]")
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "JAX_ENABLE_X64": "1"}  # the JAX engine's float64
    if session.posargs:
        session.run("multirnn", "conformance", *session.posargs, env=env)
        return
    session.run("multirnn", "conformance", "--full", "--no-progress", env=env)
    for backend in ("jax", "torch"):
        session.run(
            "multirnn", "conformance", "--engines", "keras", "--keras-backend", backend,
            "--no-progress", env=env,
        )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark run behind docs/benchmarks.md (every engine and peer, full sweeps).
    ``nox -s bench -- ARGS`` passes ARGS to ``multirnn bench`` instead."""
    install(session, ".[test,all,bench]")
    args = session.posargs or [
        "--full",
        "--json", "benchmarks/results.json",
        "--plot", "docs/benchmarks",
        "--report", "docs/benchmarks.md",
    ]  # fmt: skip
    session.run("multirnn", "bench", *args, env={"TF_CPP_MIN_LOG_LEVEL": "2"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


#: the smoke test in a fresh environment that has only the wheel and its dependencies
SMOKE = f"""
import importlib.util
import numpy as np
import multirnn

found = [m for m in {FRAMEWORKS!r} if importlib.util.find_spec(m)]
assert not found, f"a framework came with the wheel: {{found}}"
assert multirnn.backend() == "numpy", multirnn.backend()
output, h, c = multirnn.LSTM(4, return_state=True, seed=0)(np.zeros((2, 3, 5)))
assert output.shape == h.shape == c.shape == (2, 4)
print("multirnn", multirnn.__version__, "from", multirnn.__file__)
"""


def _expected_files(patterns: tuple[str, ...]) -> set[str]:
    """Files of the checkout, relative to it, that the distributions must carry."""
    return {
        p.as_posix()
        for pattern in patterns
        for p in Path().glob(pattern)
        if "__pycache__" not in p.parts
    }


def check_sdist(session: nox.Session, path: Path) -> None:
    """The sdist builds everything: the engines under backends/ (with the C++ source of
    the native loop), the known-gap data, the README (the long description) and
    pyproject.toml."""
    with tarfile.open(path) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
    need = _expected_files(
        (
            "multirnn/**/*.py",
            "multirnn/conformance/gaps/*.txt",
            "backends/*/*.py",
            "backends/*/csrc/*.cpp",
        )
    ) | {"README.md", "pyproject.toml"}
    if missing := sorted(need - names):
        session.error(f"{path.name} lacks {missing}")
    session.log(f"{path.name}: {len(names)} entries, with backends/, gaps/*.txt and README.md")


def check_wheel(session: nox.Session, path: Path) -> None:
    """The wheel holds the three engine packages, the native loop's C++ source, the
    known-gap data and the entry points."""
    with zipfile.ZipFile(path) as whl:
        names = set(whl.namelist())
        entry_points = next(
            whl.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    need = {
        f"multirnn/conformance/gaps/{p.name}"
        for p in Path().glob("multirnn/conformance/gaps/*.txt")
    }
    need |= {f"multirnn_{name}/__init__.py" for name in ("torch", "jax", "tensorflow")}
    sources = Path().glob("backends/multirnn_torch/csrc/*.cpp")
    need |= {f"multirnn_torch/csrc/{p.name}" for p in sources}
    if missing := sorted(need - names):
        session.error(f"{path.name} lacks {missing}")
    if "[multirnn.backends]" not in entry_points:
        session.error(f"{path.name} registers no multirnn.backends entry points")


@nox.session
def package(session: nox.Session) -> None:
    """Builds the sdist and the wheel (``python -m build``), checks them with ``twine check``
    and for the files they must carry, then installs the wheel into a fresh virtual
    environment (it brings only NumPy and safetensors) and runs ``multirnn info`` and a
    NumPy-engine layer there, outside the checkout."""
    install(session, ".[package]")
    tmp = Path(session.create_tmp()).resolve()
    dist, venv = tmp / "dist", tmp / "fresh-venv"
    for old in (dist, venv):
        shutil.rmtree(old, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))
    check_sdist(session, sdist)
    check_wheel(session, wheel)

    session.run(sys.executable, "-m", "venv", str(venv), external=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = str(bin_dir / "python")
    session.run(python, "-m", "pip", "install", *PINS, str(wheel), external=True, silent=False)
    session.run(python, "-m", "pip", "list", external=True)
    (tmp / "smoke.py").write_text(SMOKE)
    with session.chdir(tmp):  # away from the checkout, whose multirnn/ would shadow the wheel's
        session.run(str(bin_dir / "multirnn"), "info", external=True)
        session.run(python, "smoke.py", external=True)
