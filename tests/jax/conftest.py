"""JAX tests run in 64-bit mode unless a test switches it off (``jax.enable_x64(False)``),
so float32 and float64 layers can be built side by side."""

from __future__ import annotations

import pytest

try:
    import jax
except ImportError:  # the lite session: the test modules skip themselves
    jax = None


@pytest.fixture(autouse=True)
def _x64():
    if jax is None:
        yield
        return
    with jax.enable_x64(True):
        yield
