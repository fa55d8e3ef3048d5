"""The oracle's finite-difference gradients against closed forms."""

from __future__ import annotations

import numpy as np

from multirnn.conformance import oracle
from multirnn.conformance.cases import Case


def test_finite_differences_match_the_closed_form_of_a_linear_step():
    # SimpleRNN, linear activation, one step: out = x W + h0 U + b.
    case = Case("SimpleRNN", activation="linear", time=1, initial_state=True, return_state=False)
    spec, data = case.spec("float64"), case.data()
    (ct,) = data.cotangents
    ct = ct[:, 0]
    x = data.inputs[:, 0]
    kernel, recurrent, _ = data.weights
    grads = oracle.gradients(case)
    np.testing.assert_allclose(grads["kernel"], x.T @ ct, atol=1e-8)
    np.testing.assert_allclose(grads["recurrent_kernel"], data.initial_state[0].T @ ct, atol=1e-8)
    np.testing.assert_allclose(grads["bias"], ct.sum(0), atol=1e-8)
    np.testing.assert_allclose(grads["inputs"][:, 0], ct @ kernel.T, atol=1e-8)
    np.testing.assert_allclose(grads["initial_state"][0], ct @ recurrent.T, atol=1e-8)
    assert spec.return_state is False


def test_stateful_oracle_threads_states():
    case = Case("GRU", stateful=True)
    data = case.data()
    results = oracle.stateful(case)
    spec = case.spec("float64")
    first = oracle.run(
        spec, data.__class__(data.weights, data.calls[0].inputs, None, None, None, None, [], [])
    )
    np.testing.assert_array_equal(results[0][0], first[0])
    # After reset_states() the third call starts from zeros again.
    third = oracle.run(
        spec, data.__class__(data.weights, data.calls[2].inputs, None, None, None, None, [], [])
    )
    np.testing.assert_array_equal(results[2][0], third[0])
