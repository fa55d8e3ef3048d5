"""Developer and CI sessions. ``nox`` alone runs lint, lite and tests (what CI runs).

Exact versions of everything we test with live in ``constraints.txt`` (one place); the
extras in pyproject.toml carry only lower bounds. pip's output is shown (``silent=False``)
so that a long install, such as the frameworks', visibly makes progress in CI logs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "lite", "tests"]
nox.options.reuse_existing_virtualenvs = True

PINS = ("-c", "constraints.txt")
#: the Python blocks of the README and of docs/*.md, as tests (pytest-markdown-docs)
DOCS = ("--markdown-docs", "README.md", "docs")
#: pytest-xdist: one worker per core (CI has two); ``nox -- -n 0`` runs in one process
PARALLEL = ("-n", "auto", "--dist", "worksteal")
FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "flax", "onnx", "onnxruntime")


def install(session: nox.Session, *args: str) -> None:
    """``pip install`` with the pinned versions, pip's progress shown."""
    session.install(*PINS, *args, silent=False)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite with every engine's framework installed (pinned; optax comes with
    the jax extra), and Flax, h5py, onnx and ONNX Runtime for the converters' tests and the
    peer oracles; then every Python block of the documentation."""
    install(session, ".[test,all,flax,h5,onnx]")
    env = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    session.run("pytest", *PARALLEL, *session.posargs, env=env)
    session.run("pytest", *DOCS, env=env)


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

