"""The oracle's finite-difference gradients against closed forms."""

from __future__ import annotations

import numpy as np

from multirnn.conformance import oracle, tolerances
from multirnn.conformance.cases import Case, quick_cases


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


def test_gradient_tolerance_never_tighter_than_the_finite_differences_roundoff():
    # Unbounded gates: this short case's outputs grow to about 2e7 in five steps, and
    # finite differences of a loss that large carry roundoff of about 1e-2.
    exploding = Case.from_id(
        "GRU(units=4,time=5,batch=4,activation=linear,recurrent_activation=linear,"
        "go_backwards=True,initial_state=True,mask=right_padded,unroll=True,reset_after=True,"
        "dropout=True,zero_output_for_mask=True,seed=22964)"
    )
    assert oracle.fd_roundoff(exploding) > 1e-3
    assert tolerances.tolerance("float64", "gradients", 0.0, oracle.fd_roundoff(exploding)) > 1e-2
    # the grid's cases keep the policy value
    for case in [c for c in quick_cases() if not c.stateful][:60]:
        fd = oracle.fd_roundoff(case)
        assert tolerances.tolerance("float64", "gradients", 0.0, fd) == 1e-6
        assert tolerances.tolerance("float64", "forward", 0.0, fd) == 1e-9
