"""Shared fixtures: every test starts with automatic engine selection and no env override."""

from __future__ import annotations

import pytest

import multirnn
from multirnn import engines

from .conformance.frameworks import float64

#: the built-in engines, in the order tests are parametrised over them
ENGINES = ("numpy", "torch", "jax", "tensorflow")


@pytest.fixture(autouse=True)
def _clean_selection(monkeypatch):
    monkeypatch.delenv(engines.ENV_VAR, raising=False)
    engines.set_backend(None)
    yield
    engines.set_backend(None)


@pytest.fixture(params=ENGINES)
def eng(request):
    """Each built-in engine in turn (skipped where its framework is not installed), for the
    behaviours every engine shares: one test, parametrised, instead of a copy per engine."""
    if request.param not in engines.available():
        pytest.skip(f"{request.param} is not installed")
    return multirnn.engine(request.param)


@pytest.fixture
def eng64(eng):
    """``eng`` with JAX in its 64-bit mode, so each engine's default dtype is the one its
    own tests have always used: float64 on NumPy and JAX, float32 on PyTorch and TensorFlow."""
    with float64(eng.name):
        yield eng
