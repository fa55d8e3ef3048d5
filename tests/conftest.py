"""Shared fixtures: every test starts with automatic engine selection and no env override."""

from __future__ import annotations

import pytest

from multirnn import engines


@pytest.fixture(autouse=True)
def _clean_selection(monkeypatch):
    monkeypatch.delenv(engines.ENV_VAR, raising=False)
    engines.set_backend(None)
    yield
    engines.set_backend(None)
