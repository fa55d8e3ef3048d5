"""The peer oracles (torch.nn, Flax NNX, ONNX Runtime) agree with the reference on every
case they can express, and express enough of them to be worth running."""

from __future__ import annotations

import pytest

import multirnn.conformance as conf

#: oracle name -> the package it needs
PEERS = {"torch.nn": "torch", "flax.nnx": "flax", "onnxruntime": "onnxruntime"}
# the quick grid without its one long sequence (time=64), which only costs time here
CASES = [c for c in conf.quick_cases() if c.time <= 8]


@pytest.mark.parametrize("peer", list(PEERS))
def test_peer_oracle_agrees_with_the_reference(peer):
    pytest.importorskip(PEERS[peer])
    if peer == "flax.nnx":  # its float64 cases need JAX's 64-bit mode
        import jax

        context = jax.enable_x64(True)
    else:
        import contextlib

        context = contextlib.nullcontext()
    with context:
        rep = conf.run([peer], CASES)
    assert rep.ok, [(r.case.id, r.dtype, r.check, r.detail) for r in rep.failures]
    passed = [r.case for r in rep.results if r.status == "pass" and r.check == "forward"]
    assert {c.layer for c in passed} == {"SimpleRNN", "LSTM", "GRU"}
    assert any(c.mask != "none" for c in passed), "no masked case ran"
    assert any(c.wrapped for c in passed), "no Bidirectional case ran"
    assert any(c.initial_state for c in passed), "no case with initial states ran"
    assert len(passed) >= 20, f"only {len(passed)} forward checks passed"
