"""``RNN(cell)`` on the PyTorch engine against the NumPy engine's (the oracle): outputs,
states and masks in both dtypes, and the module's behaviour. What every engine shares
(carried states, files, gradients, errors) is in tests/test_rnn.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("array_api_compat")

from multirnn_torch.layers import RNN  # noqa: E402

import multirnn  # noqa: E402
from multirnn.reference.rnn import RNN as NumpyRNN  # noqa: E402

from ..test_rnn import MinGRU, TwoState  # noqa: E402
from .graphs import node_counts  # noqa: E402

CELLS = {"gru": lambda: MinGRU(3), "two_state": lambda: TwoState(2, gate="hard_sigmoid")}
TOL = {"float64": 1e-12, "float32": 1e-5}


def pair(kind, dtype="float64", **options):
    """The torch layer and the NumPy oracle with the same seed (so the same weights)."""
    a = RNN(CELLS[kind](), seed=7, dtype=dtype, **options)
    b = NumpyRNN(CELLS[kind](), seed=7, dtype=dtype, **options)
    return a, b


def data(batch=3, time=5, features=4, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(dtype)


def as_list(result):
    return list(result) if isinstance(result, list) else [result]


def check(ours, theirs, dtype):
    ours, theirs = as_list(ours), as_list(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.is_tensor(a)
        assert tuple(a.shape) == b.shape
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=0, atol=TOL[dtype])


MASK = np.array(
    [[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=bool
)  # a gap, a fully masked row, a left-padded row


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_sequences": True},
        {"return_state": True, "go_backwards": True},
        {"return_sequences": True, "return_state": True, "go_backwards": True},
    ],
    ids=["last", "sequences", "state_backwards", "all"],
)
@pytest.mark.parametrize("masked", ["nomask", "mask", "mask_zero_output"])
def test_equals_the_numpy_engine(kind, dtype, options, masked):
    if masked == "mask_zero_output":
        options = options | {"zero_output_for_mask": True}
    a, b = pair(kind, dtype, **options)
    x = data(dtype=dtype)
    mask = None if masked == "nomask" else MASK
    check(a(torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask)),
          b(x, mask=mask), dtype)  # fmt: skip
    for ours, theirs in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(ours, theirs)  # one seed, the same weights


@pytest.mark.parametrize("kind", list(CELLS))
def test_initial_state(kind):
    a, b = pair(kind, return_state=True, return_sequences=True)
    x = data()
    rng = np.random.default_rng(3)
    states = [rng.standard_normal((3, a.spec.units)) for _ in a.spec.state_names]
    initial = [torch.from_numpy(s) for s in states]
    check(a(torch.from_numpy(x), initial_state=initial, mask=torch.from_numpy(MASK)),
          b(x, initial_state=states, mask=MASK), "float64")  # fmt: skip
    # NumPy initial states (and inputs) follow the engine's input rule too
    check(a(x, initial_state=states), b(x, initial_state=states), "float64")


@pytest.mark.parametrize("kind", list(CELLS))
def test_carried_states_hold_no_gradient_and_follow_the_module(kind):
    # the states' values over calls, on every engine: tests/test_rnn.py
    a, _ = pair(kind, stateful=True, go_backwards=True)
    a(torch.from_numpy(data(seed=1)))
    a(torch.from_numpy(data(seed=2)), mask=torch.from_numpy(MASK))
    assert all(not s.requires_grad for s in a.states)  # carried without gradient
    a.float()  # .to() and friends move the carried states
    assert all(s.dtype == torch.float32 for s in a.states)


def test_batch_zero_stays_attached_to_the_weights():
    a, _ = pair("two_state", return_sequences=True, return_state=True)
    out = a(torch.from_numpy(data(batch=0)).requires_grad_())
    sum(o.sum() for o in out).backward()  # still attached to the weights' graph
    assert all(w.grad is not None and not w.grad.any() for w in a.weights.values())


@pytest.mark.parametrize("go_backwards", [False, True])
def test_the_loop_takes_the_inputs_apart_once(go_backwards):
    # x[:, t] at every step would give each step a backward that writes a zero-filled copy
    # of the whole input: quadratic in the sequence's length when the input needs a gradient
    a, _ = pair("two_state", return_sequences=True, go_backwards=go_backwards)
    xt = torch.from_numpy(data(batch=2, time=6, features=2)).requires_grad_()
    counts = node_counts(a(xt))
    assert counts["SelectBackward0"] == 0, counts
    assert counts["UnbindBackward0"] == 1, counts


def test_module_behaviour():
    assert multirnn.engine("torch").RNN is RNN
    layer = RNN(TwoState(2, gate="sigmoid"), seed=3)
    assert not layer.built and layer.input_dim is None and layer.dtype == torch.float32
    assert layer.get_config()["input_dim"] is None
    out = layer([[[0.5, 1.0]], [[1.0, 2.0]]])  # nested lists: cast to the layer dtype
    assert out.dtype == torch.float32 and tuple(out.shape) == (2, 2)
    assert layer.built and layer.input_dim == 2 and layer.weight_names == ["W", "U", "b"]
    assert list(layer.state_dict()) == ["weights.W", "weights.U", "weights.b"]
    assert [p.shape for p in layer.parameters()] == [(2, 8), (2, 8), (8,)]
    config = layer.get_config()
    assert config["input_dim"] == 2 and config["cell"]["config"] == {"units": 2, "gate": "sigmoid"}
    twin = RNN.from_config(config)
    assert twin.built
    twin.load_state_dict(layer.state_dict())
    torch.testing.assert_close(twin(out[:, None].detach()), layer(out[:, None].detach()))
    lazy = RNN(TwoState(2, gate="sigmoid"))  # a lazy layer takes its input size from the file
    lazy.load_state_dict(layer.state_dict())
    assert lazy.input_dim == 2
    # an optimizer step changes the parameters in place
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.get_weights()
    layer(torch.ones(2, 3, 2)).sum().backward()
    optimizer.step()
    assert all(not np.array_equal(b, w) for b, w in zip(before, layer.get_weights()))


def test_losses_constraints_and_set_weights():
    layer = RNN(MinGRU(2), input_dim=3, seed=0, dtype="float64")
    (penalty,) = layer.losses
    recurrent = layer.weights["recurrent"]
    torch.testing.assert_close(penalty, 0.01 * (recurrent**2).sum())
    penalty.backward()
    assert recurrent.grad is not None
    layer.set_weights([np.zeros((3, 6)), np.zeros((2, 6)), -np.ones(6)])
    assert layer.weights["recurrent"] is recurrent  # the parameter objects are kept
    layer.apply_constraints()
    assert not layer.weights["bias"].detach().any()  # non_neg


def test_torch_compile():
    a, b = pair("gru", return_sequences=True, go_backwards=True)
    x = data(batch=2, time=3)
    compiled = torch.compile(a)
    check(compiled(torch.from_numpy(x), mask=torch.from_numpy(MASK[:2, :3])),
          b(x, mask=MASK[:2, :3]), "float64")  # fmt: skip
