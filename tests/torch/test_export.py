"""PyTorch's deployment routes on every path of the engine: ``torch.export`` with dynamic
batch and time (and the saved program loaded back), ``torch.compile(fullgraph=True)``
forward and backward, a streaming step exported on its own, and autocast. Under export the
loops are one ``scan`` operator (``multirnn_torch.scan.traced_loop``), under compile the
autograd loop; eager calls keep their fused, native and hand-written paths."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from multirnn_torch import layers  # noqa: E402
from multirnn_torch.layers import LSTM  # noqa: E402

from ..test_rnn import layers_per_path  # noqa: E402

FEATURES = 5

#: one layer per path: fused kernel, native/hand-written loop, generic loop of a cell
LAYERS = layers_per_path(layers)


def data(batch, time, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, time, FEATURES, generator=generator)


def close(got, want, rtol=1e-6, atol=1e-6):
    got, want = (v if isinstance(v, (list, tuple)) else [v] for v in (got, want))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


class Call(torch.nn.Module):
    """The layer called with a mask and initial states: all are inputs of the program."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, mask, *states):
        return self.layer(x, mask=mask, initial_state=list(states))


@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_export_with_dynamic_batch_and_time_saves_loads_and_matches_eager(name, tmp_path):
    layer = LAYERS[name](input_dim=FEATURES, seed=0, return_sequences=True, return_state=True,
                         go_backwards=name.startswith("GRU")).eval()  # fmt: skip
    module = Call(layer)
    count = len(layer.spec.state_names)
    x, mask = data(3, 7), torch.rand(3, 7) > 0.3
    states = [torch.full((3, 8), 0.1 * (k + 1)) for k in range(count)]
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    shapes = {"x": {0: batch, 1: time}, "mask": {0: batch, 1: time},
              "states": ({0: batch},) * count}  # fmt: skip
    program = torch.export.export(module, (x, mask, *states), dynamic_shapes=shapes)
    torch.export.save(program, tmp_path / "layer.pt2")
    loaded = torch.export.load(tmp_path / "layer.pt2").module()
    for b, t in ((3, 7), (1, 2), (4, 12)):
        x, mask = data(b, t, seed=b), torch.rand(b, t) > 0.3
        states = [torch.full((b, 8), 0.1 * (k + 1)) for k in range(count)]
        with torch.no_grad():
            close(loaded(x, mask, *states), module(x, mask, *states))


@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_compile_fullgraph_forward_and_backward_match_eager(name):
    layer = LAYERS[name](input_dim=FEATURES, seed=0)
    compiled = torch.compile(layer, fullgraph=True)
    x = data(3, 7)
    got = compiled(x)
    got.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    want = layer(x)
    want.square().sum().backward()
    close(got, want, rtol=1e-5, atol=1e-6)
    close(grads, [p.grad for p in layer.parameters()], rtol=1e-5, atol=1e-5)


def test_torch_compile_takes_a_numpy_mask_as_host_data():
    """torch.compile traces a NumPy array as a tensor; the layer still takes it as host data
    (converted where the call runs), not as a tensor refused for its device."""
    np = pytest.importorskip("numpy")
    layer = LSTM(4, input_dim=FEATURES, seed=0)
    mask = np.ones((3, 7), dtype=bool)
    mask[0, 4:] = False
    x = data(3, 7)
    got = torch.compile(lambda x: layer(x, mask=mask))(x)
    close(got, layer(x, mask=torch.from_numpy(mask)))


class Step(torch.nn.Module):
    """One streaming step: inputs and states in, output and states out."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x_t, h, c):
        return self.layer(x_t, initial_state=[h, c])


def test_an_exported_step_fed_one_step_at_a_time_equals_one_call():
    layer = LSTM(8, input_dim=FEATURES, seed=0, return_state=True).eval()
    step = Step(layer)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(step, (data(2, 1), torch.zeros(2, 8), torch.zeros(2, 8)),
                                  dynamic_shapes={"x_t": {0: batch}, "h": {0: batch},
                                                  "c": {0: batch}}).module()  # fmt: skip
    x = data(3, 9)
    h, c = torch.zeros(3, 8), torch.zeros(3, 8)
    with torch.no_grad():
        for t in range(x.shape[1]):
            output, h, c = program(x[:, t : t + 1], h, c)
        close([output, h, c], layer(x))


@pytest.mark.parametrize("name", list(LAYERS))
def test_autocast_bfloat16_runs_every_path_within_bfloat16_of_float32(name):
    layer = LAYERS[name](input_dim=FEATURES, seed=0)
    x = data(4, 6)
    want = layer(x)
    with torch.autocast("cpu", torch.bfloat16):
        got = layer(x)
    got.float().sum().backward()  # and trains
    assert all(p.grad is not None for p in layer.parameters())
    close(got.float(), want, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_low_precision_layers_export_with_dynamic_batch_and_time(dtype):
    layer = LSTM(8, input_dim=5, seed=0, dtype=dtype, return_sequences=True).eval()
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=2)
    x = torch.randn(2, 7, 5, dtype=torch.bfloat16)
    program = torch.export.export(layer, (x,), dynamic_shapes={"inputs": {0: batch, 1: time}})
    again = torch.randn(3, 11, 5, dtype=torch.bfloat16)
    assert torch.equal(program.module()(again), layer(again))
