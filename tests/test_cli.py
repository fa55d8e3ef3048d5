from __future__ import annotations

import re

import pytest

from multirnn import cli, engines


def test_info_lists_engines(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    selected = engines.backend()
    assert f"* {selected}" in out and f"selected engine: {selected}" in out
    assert re.search(r"numpy +installed \(\d", out)


def test_demo_runs_every_layer(capsys):
    assert cli.main(["demo", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for layer in ("SimpleRNN(4", "LSTM(4", "GRU(4, reset_after=True"):
        assert layer in out
    assert "all documented layers ran" in out


def test_unknown_engine_is_a_clean_error(capsys, monkeypatch):
    assert cli.main(["demo", "--backend", "nope"]) == 2
    assert "unknown multirnn engine 'nope'" in capsys.readouterr().err
    monkeypatch.setenv(engines.ENV_VAR, "nope")
    assert cli.main(["info"]) == 0
    assert "selection error: unknown multirnn engine 'nope'" in capsys.readouterr().out


def test_usage_error():
    with pytest.raises(SystemExit):
        cli.main([])
