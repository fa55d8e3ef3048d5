"""The PyTorch layers as PyTorch users use them: parameters, modes, optimizers, autograd
penalties, constraints after a step, and the errors only PyTorch has. What every engine
shares (seeds, carried states, files, configs, bad calls) is in tests/test_builtin_layers.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multirnn_torch import kernels  # noqa: E402
from multirnn_torch.layers import GRU, LSTM, SimpleRNN  # noqa: E402

import multirnn  # noqa: E402

from ..cases import VARIANTS, variant_id  # noqa: E402
from .graphs import node_counts  # noqa: E402

CLASSES = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}


def make(variant, units=3, **kwargs):
    layer, extra = variant
    return CLASSES[layer](units, **extra, **kwargs)


def x(batch=2, time=5, features=4, dtype=torch.float32):
    return torch.randn(batch, time, features, dtype=dtype)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_parameters_are_canonical_and_in_the_state_dict(variant):
    layer = make(variant, input_dim=4)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["kernel", "recurrent_kernel", "bias"]
    assert list(layer.state_dict()) == names
    shapes = layer.spec.weight_shapes(4)
    assert all(tuple(p.shape) == shapes[n] for n, p in layer.named_parameters())


def test_lazy_build_and_state_dict_loading():
    source = LSTM(3, input_dim=4, seed=1)
    target = LSTM(3)
    assert list(target.parameters()) == []
    target.load_state_dict(source.state_dict())
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unseeded_init_follows_torch_manual_seed():
    torch.manual_seed(3)
    a = GRU(2, input_dim=2).get_weights()[0]
    torch.manual_seed(3)
    np.testing.assert_array_equal(a, GRU(2, input_dim=2).get_weights()[0])


def test_dtype_and_to():
    layer = LSTM(3, input_dim=4)
    assert layer.dtype == torch.get_default_dtype()
    layer = layer.to(torch.float64)
    assert layer.dtype == torch.float64 and layer(x(dtype=torch.float64)).dtype == torch.float64
    assert LSTM(3, dtype="float64", input_dim=2).kernel.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_to_a_low_precision_dtype_trains_in_it(dtype):
    """``.to(torch.bfloat16)`` makes a low-precision layer (float32 arithmetic inside a call,
    multirnn.precision) on every path: the native loop, the fused kernel, with dropout."""
    for kwargs in ({}, {"activation": "tanh", "recurrent_activation": "sigmoid"},
                   {"dropout": 0.3, "recurrent_dropout": 0.3}):  # fmt: skip
        layer = LSTM(4, input_dim=3, seed=0, **kwargs).to(dtype).train()
        full = LSTM(4, input_dim=3, seed=0, **kwargs).eval()
        full.set_weights([w.astype(np.float32) for w in layer.get_weights()])
        inputs = x(features=3, dtype=dtype)
        y = layer(inputs)
        assert y.dtype == dtype
        y.float().sum().backward()
        assert all(p.grad is not None and p.grad.dtype == dtype for p in layer.parameters())
        with torch.no_grad():  # in inference, the float32 result rounded
            want = full(inputs.float()).to(dtype)
            got = layer.eval()(inputs)
        torch.testing.assert_close(got.float(), want.float(), atol=1e-3, rtol=2**-7)


def test_dropout_follows_the_module_mode_and_manual_seed():
    layer = LSTM(3, dropout=0.5, recurrent_dropout=0.5, seed=0, input_dim=4)
    inputs = x()
    layer.eval()
    a = layer(inputs)
    assert torch.equal(a, layer(inputs))
    layer.train()
    torch.manual_seed(11)
    b = layer(inputs)
    assert not torch.allclose(a, b)
    torch.manual_seed(11)
    assert torch.equal(b, layer(inputs))
    assert torch.equal(layer(inputs, training=False), a)


@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
def test_gradients_reach_the_parameters_and_an_optimizer_trains(recurrent_activation):
    torch.manual_seed(0)
    layer = LSTM(4, recurrent_activation=recurrent_activation, input_dim=3, seed=0)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    inputs, target = x(features=3), torch.randn(2, 4)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.mean((layer(inputs) - target) ** 2)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_fused_path_is_taken_only_when_eligible(monkeypatch):
    calls = []
    original = kernels._fused
    monkeypatch.setattr(kernels, "_fused", lambda *a: calls.append(1) or original(*a))
    inputs = x()
    LSTM(3, recurrent_activation="sigmoid")(inputs)
    assert len(calls) == 1
    LSTM(3)(inputs)  # hard_sigmoid: generic path
    GRU(3, recurrent_activation="sigmoid")(inputs)  # reset_after=False: generic path
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    LSTM(3, recurrent_activation="sigmoid")(inputs, mask=mask)  # right padded: packed
    assert len(calls) == 2


@pytest.mark.parametrize("layer", ["SimpleRNN", "LSTM", "GRU"])
def test_the_autograd_loop_takes_its_steps_apart_once(layer):
    # A user activation runs the loop on the autograd tape. Indexing one step at a time
    # would give each step a backward that writes a zero-filled copy of the whole
    # sequence: a training step quadratic in the sequence's length.
    model = CLASSES[layer](3, activation=lambda z: torch.tanh(z), return_sequences=True)
    counts = node_counts(model(x(time=7)))
    assert counts["SelectBackward0"] == 0, counts
    assert counts["UnbindBackward0"] == 1, counts


def test_torch_func_functional_call_and_grad():
    layer = GRU(3, input_dim=4, seed=0)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    inputs = x()

    def loss(p):
        return torch.func.functional_call(layer, p, (inputs,)).sum()

    grads = torch.func.grad(loss)(params)
    layer.zero_grad()
    layer(inputs).sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)


def test_torch_compile_traces_the_layer():
    layer = LSTM(3, input_dim=4, seed=0)
    compiled = torch.compile(layer, backend="eager")
    inputs = x()
    torch.testing.assert_close(compiled(inputs), layer(inputs))


# -- state (what every engine shares: tests/test_builtin_layers.py) ---------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_carried_states_hold_no_gradient(variant):
    stateful = make(variant, seed=2, return_sequences=True, stateful=True, input_dim=4)
    stateful(x(time=3))
    out = stateful(x(time=3))
    assert out.requires_grad and all(not s.requires_grad for s in stateful.states)


# -- penalties and constraints ------------------------------------------------------


def test_losses_are_differentiable_tensors():
    layer = SimpleRNN(3, kernel_regularizer="l2", activity_regularizer="l1", input_dim=4)
    layer(x())  # the penalties' values, on every engine: tests/test_builtin_layers.py
    penalty = sum(layer.losses)
    assert len(layer.losses) == 2 and penalty.requires_grad
    penalty.backward()
    assert layer.kernel.grad is not None


def test_apply_constraints_after_a_step():
    layer = LSTM(3, kernel_constraint="non_neg", recurrent_constraint="max_norm", input_dim=4)
    with torch.no_grad():
        layer.recurrent_kernel.mul_(10.0)
    layer.apply_constraints()
    assert (layer.kernel >= 0).all()
    assert torch.linalg.vector_norm(layer.recurrent_kernel, dim=0).max() <= 2.0 + 1e-5


# -- bad input (what every engine refuses: tests/test_builtin_layers.py) ------------------


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda layer: layer("x"), TypeError, "inputs must be a torch.Tensor, a NumPy array"),
        (lambda layer: layer(torch.zeros(2, 5, 4, device="meta")), ValueError, "inputs is on meta"),
    ],
)
def test_bad_calls_say_what_was_expected(call, error, match):
    layer = LSTM(3, input_dim=4)
    with pytest.raises(error, match=match):
        call(layer)


def test_functional_entry_with_explicit_masks():
    s = multirnn.spec.parse("GRU", (3,), {"dtype": "float64"})
    weights = [torch.randn(4, 9, dtype=torch.float64), torch.randn(3, 9, dtype=torch.float64),
               torch.randn(9, dtype=torch.float64)]  # fmt: skip
    inputs = x(dtype=torch.float64)
    drop = torch.full((2, 4), 2.0, dtype=torch.float64)
    out, _ = kernels.forward(s, weights, inputs, input_dropout=drop)
    ref, _ = kernels.forward(s, weights, inputs * 2.0)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="input_dropout must have shape"):
        kernels.forward(s, weights, inputs, input_dropout=torch.ones(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("recurrent_activation", ["sigmoid", "hard_sigmoid"])
def test_cuda_matches_cpu(recurrent_activation):
    cpu = LSTM(8, recurrent_activation=recurrent_activation, input_dim=4, seed=0)
    gpu = LSTM(8, recurrent_activation=recurrent_activation, input_dim=4, seed=0, device="cuda")
    inputs = x()
    torch.testing.assert_close(gpu(inputs.cuda()).cpu(), cpu(inputs), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [LSTM, GRU])
def test_parametrized_and_weight_normed_weights_are_what_a_call_uses(layer):
    """torch.nn.utils.parametrize moves a weight out of the module's parameters (its
    attribute computes it): a call must use the computed weight, and gradients reach the
    original."""
    from torch.nn.utils import parametrizations, parametrize

    class Twice(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    x = torch.randn(2, 5, 3, dtype=torch.float64)
    plain = layer(4, input_dim=3, seed=0, dtype="float64")
    doubled = layer(4, input_dim=3, seed=0, dtype="float64")
    parametrize.register_parametrization(doubled, "recurrent_kernel", Twice())
    weights = plain.get_weights()
    plain.set_weights([weights[0], 2 * weights[1], *weights[2:]])
    out = doubled(x)
    torch.testing.assert_close(out, plain(x), rtol=0, atol=1e-12)
    out.sum().backward()
    assert doubled.parametrizations.recurrent_kernel.original.grad is not None
    assert doubled.built and doubled.input_dim == 3

    normed = layer(4, input_dim=3, seed=0, dtype="float64")
    reference = normed(x).detach()
    parametrizations.weight_norm(normed, "kernel", dim=1)
    torch.testing.assert_close(normed(x), reference, rtol=0, atol=1e-12)
