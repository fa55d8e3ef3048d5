"""Fused-kernel eligibility (a pure function, checked on CPU) and the fused layouts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from multirnn_torch import kernels  # noqa: E402
from multirnn_torch.scan import array_api  # noqa: E402

import multirnn  # noqa: E402
from multirnn import builtin_cells  # noqa: E402
from multirnn.spec import parse  # noqa: E402


def spec(layer, **kwargs):
    return parse(layer, (4,), kwargs)


@pytest.mark.parametrize(
    "layer,kwargs",
    [
        ("LSTM", {"recurrent_activation": "sigmoid"}),
        ("GRU", {"recurrent_activation": "sigmoid", "reset_after": True}),
        ("SimpleRNN", {}),
        ("SimpleRNN", {"activation": "relu"}),
        ("LSTM", {"recurrent_activation": "sigmoid", "go_backwards": True, "implementation": 2}),
    ],
)
def test_eligible(layer, kwargs):
    s = spec(layer, **kwargs)
    assert kernels.fused_ineligibility(s) is None
    assert kernels.fused_ineligibility(s, input_dropout="shared") is None
    if not s.go_backwards:
        assert kernels.fused_ineligibility(s, mask="right_padded") is None


@pytest.mark.parametrize(
    "layer,kwargs,call,reason",
    [
        ("LSTM", {}, {}, "tanh/sigmoid"),  # the documented hard_sigmoid default
        ("GRU", {"recurrent_activation": "sigmoid"}, {}, "reset_after=True"),
        ("GRU", {"recurrent_activation": "hard_sigmoid", "reset_after": True}, {}, "tanh/sigmoid"),
        ("SimpleRNN", {"activation": "elu"}, {}, "tanh or relu"),
        (
            "LSTM",
            {"recurrent_activation": "sigmoid"},
            {"recurrent_dropout": True},
            "recurrent dropout",
        ),
        ("LSTM", {"recurrent_activation": "sigmoid"}, {"input_dropout": "per_gate"}, "per-gate"),
        ("LSTM", {"recurrent_activation": "sigmoid"}, {"mask": "other"}, "right-padded"),
        (
            "LSTM",
            {"recurrent_activation": "sigmoid", "go_backwards": True},
            {"mask": "right_padded"},
            "left padding",
        ),
    ],
)
def test_ineligible_with_reason(layer, kwargs, call, reason):
    assert reason in kernels.fused_ineligibility(spec(layer, **kwargs), **call)


def test_mask_kinds():
    right = torch.tensor([[True, True, False], [True, True, True]])
    assert kernels._mask_kind(right)[0] == "right_padded"
    assert kernels._mask_kind(right)[1].tolist() == [2, 3]
    assert kernels._mask_kind(torch.tensor([[True, False, True]]))[0] == "other"
    assert kernels._mask_kind(torch.tensor([[False, False]]))[0] == "other"  # empty row
    assert kernels._mask_kind(None) == ("none", None)


def test_fused_parameters_are_contiguous_in_torch_layout():
    s = spec("LSTM", recurrent_activation="sigmoid")
    weights = [torch.randn(3, 16), torch.randn(4, 16), torch.randn(16)]
    params = kernels.fused_parameters(s, weights)
    assert params[0].is_contiguous() and params[1].is_contiguous()
    assert torch.equal(params[0], weights[0].t()) and torch.equal(params[1], weights[1].t())
    assert params[2].data_ptr() == weights[2].data_ptr()


@pytest.mark.parametrize(
    "options,layout",
    [({"recurrent_activation": "sigmoid"}, "fused"), ({}, "internal")],  # documented defaults
    ids=["fused", "hand-written"],
)
def test_weight_layouts_are_kept_between_calls_without_gradient_and_follow_the_weights(
    options, layout
):
    layer = multirnn.engine("torch").LSTM(4, seed=0, input_dim=3, **options)
    x = torch.randn(2, 5, 3)
    cache = layer._weight_layouts
    with torch.no_grad():
        first = layer(x)
        kept = cache._layouts[layout]
        assert layer(x).equal(first) and cache._layouts[layout] is kept  # no new layout
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(x).sum()  # a graph: a fresh, differentiable layout, not the cache
    loss.backward()
    assert layer.kernel.grad is not None and cache._layouts[layout] is kept
    optimizer.step()  # in place: the next call without gradient lays the weights out again
    with torch.no_grad():
        after = layer(x)
    assert cache._layouts[layout] is not kept and not after.equal(first)
    fresh = multirnn.engine("torch").LSTM(4, input_dim=3, **options)
    fresh.set_weights(layer.get_weights())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), after)


def test_gru_gates_are_permuted_to_torch_order():
    s = spec("GRU", recurrent_activation="sigmoid", reset_after=True)
    kernel = torch.arange(12.0).reshape(1, 12)  # blocks z, r, h of 4 units
    params = kernels.fused_parameters(s, [kernel, torch.zeros(4, 12), torch.zeros(2, 12)])
    assert params[0][:, 0].tolist() == [4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11]  # r, z, n


@pytest.mark.parametrize("name", sorted(kernels.NATIVE_ACTIVATIONS))
def test_native_activations_differentiate_as_the_shared_derivatives(name):
    # the autograd loop's activations against the derivatives the hand-written backward
    # passes use, at the corners of the piecewise-linear ones too (hard_sigmoid: +-2.5)
    if name not in builtin_cells.DERIVATIVES:
        pytest.skip(f"{name} has no shared derivative")
    z = torch.tensor([-3.0, -2.5, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5, 3.0, 4.0],
                     dtype=torch.float64, requires_grad=True)  # fmt: skip
    y = kernels.NATIVE_ACTIVATIONS[name](z)
    (grad,) = torch.autograd.grad(y.sum(), z)
    expected = builtin_cells.DERIVATIVES[name](array_api(), y.detach())
    torch.testing.assert_close(grad, expected.to(grad.dtype), rtol=1e-12, atol=0)
