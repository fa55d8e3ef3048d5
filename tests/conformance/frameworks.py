"""What the conformance tests need from each engine's framework: whether it is installed,
and float64 where the framework computes it only when asked (JAX)."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest

#: engine -> the framework module it needs (the engines with autodiff)
FRAMEWORKS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}


def needs(engine: str) -> None:
    """Skip the test when the engine's framework is not installed."""
    if importlib.util.find_spec(FRAMEWORKS[engine]) is None:
        pytest.skip(f"needs {FRAMEWORKS[engine]}")


def float64(engine: str):
    """A context in which the engine computes float64."""
    if engine == "jax":  # JAX computes float64 only in its 64-bit mode
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()
