"""torch.nn.RNN / LSTM / GRU <-> multirnn layers through the public converters."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multirnn import convert  # noqa: E402
from multirnn.convert import ConversionError  # noqa: E402


def _module(cls, **kwargs):
    torch.manual_seed(0)
    return cls(4, 5, batch_first=True, **kwargs).double()


def _x(batch=3, time=6, features=4):
    return np.random.default_rng(0).standard_normal((batch, time, features))


def _run_stack(layers, x):
    out = x
    for layer in layers if isinstance(layers, list) else [layers]:
        out = np.asarray(layer(out))
    return out


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (torch.nn.LSTM, {}),
        (torch.nn.GRU, {}),
        (torch.nn.RNN, {}),
        (torch.nn.RNN, {"nonlinearity": "relu"}),
        (torch.nn.LSTM, {"bias": False}),
        (torch.nn.GRU, {"num_layers": 3}),
        (torch.nn.LSTM, {"num_layers": 2}),
        (torch.nn.GRU, {"bidirectional": True}),
        (torch.nn.LSTM, {"bidirectional": True, "num_layers": 2}),
        (torch.nn.RNN, {"bidirectional": True, "nonlinearity": "relu", "bias": False}),
    ],
    ids=str,
)
def test_torch_modules_and_multirnn_layers_compute_the_same(cls, kwargs):
    module = _module(cls, **kwargs)
    x = _x()
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    layers = convert.from_torch(module, backend="numpy")
    assert isinstance(layers, list) == (kwargs.get("num_layers", 1) > 1)
    np.testing.assert_allclose(_run_stack(layers, x), want, atol=1e-12)
    back = convert.to_torch(layers)
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x))[0].numpy(), want, atol=1e-12)
    again = convert.from_torch(back, backend="numpy")
    for a, b in zip(again if isinstance(again, list) else [again],
                    layers if isinstance(layers, list) else [layers]):  # fmt: skip
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)  # multirnn -> torch -> multirnn is exact


def test_torch_module_onto_the_torch_engine_in_float32():
    torch.manual_seed(1)
    module = torch.nn.GRU(4, 5, batch_first=False)
    layer = convert.from_torch(module, backend="torch")
    x = torch.from_numpy(_x().astype(np.float32))
    with torch.no_grad():
        want = module(x.transpose(0, 1))[0].transpose(0, 1)  # batch_first=False: time-major
        got = layer(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert layer.spec.dtype == "float32" and layer.spec.reset_after


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("cls", [torch.nn.GRU, torch.nn.LSTM])
def test_low_precision_modules_convert_in_their_dtype(cls, dtype):
    """A GRU's weights cross exactly; an LSTM's two biases are one canonical bias, whose
    sum is rounded once to the dtype."""
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(2)
    module = cls(4, 5, batch_first=True).to(getattr(torch, dtype))
    layer = convert.from_torch(module, backend="torch")
    assert layer.dtype == getattr(torch, dtype)
    back = convert.to_torch(layer)
    assert next(back.parameters()).dtype == getattr(torch, dtype)
    for name, param in module.named_parameters():
        if cls is torch.nn.GRU or name.startswith("weight"):
            assert torch.equal(getattr(back, name), param)
    if cls is torch.nn.LSTM:
        bias = module.bias_ih_l0.float() + module.bias_hh_l0.float()
        again = back.bias_ih_l0.float() + back.bias_hh_l0.float()
        torch.testing.assert_close(again, bias.to(getattr(torch, dtype)).float(), atol=0, rtol=0)
    x = torch.from_numpy(_x().astype(np.float32)).to(getattr(torch, dtype))
    with torch.no_grad():  # torch rounds at every step; multirnn computes in float32
        want, got = module(x)[0].float(), layer(x).float()
    tol = {"bfloat16": 2e-2, "float16": 2e-3}[dtype]
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "module,match",
    [
        (lambda: torch.nn.LSTM(4, 5, proj_size=3), "proj_size=3"),
        (lambda: torch.nn.LSTM(4, 5, num_layers=2, dropout=0.3), "dropout=0.3 between layers"),
        (lambda: torch.nn.Linear(4, 5), "takes torch.nn.RNN, LSTM or GRU, got Linear"),
        (lambda: torch.nn.LSTM(4, 5).to(torch.float8_e4m3fn), "one of float32, float64"),
    ],
)
def test_torch_modules_without_a_multirnn_form_are_refused(module, match):
    with pytest.raises(ConversionError, match=match):
        convert.from_torch(module(), backend="numpy")


def test_inter_layer_dropout_can_be_dropped_when_asked():
    module = torch.nn.LSTM(4, 5, num_layers=2, dropout=0.3).double().eval()
    layers = convert.from_torch(module, backend="numpy", ignore_training_options=True)
    assert len(layers) == 2 and all(layer.spec.dropout == 0 for layer in layers)


def _built(layer_cls, units=5, **kwargs):
    from multirnn.reference.layers import GRU, LSTM, SimpleRNN

    cls = {"LSTM": LSTM, "GRU": GRU, "SimpleRNN": SimpleRNN}[layer_cls]
    return cls(units, seed=0, input_dim=4, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layer_cls": "LSTM"}, "recurrent_activation='sigmoid' only"),  # the hard_sigmoid default
        ({"layer_cls": "GRU", "recurrent_activation": "sigmoid"}, "reset_after=False"),
        ({"layer_cls": "SimpleRNN", "activation": "elu"}, "tanh or relu only"),
        ({"layer_cls": "SimpleRNN", "go_backwards": True}, "reversed order"),
        ({"layer_cls": "SimpleRNN", "dropout": 0.5}, "dropout"),
        ({"layer_cls": "SimpleRNN", "kernel_regularizer": "l2"}, "kernel_regularizer"),
        ({"layer_cls": "SimpleRNN", "stateful": True}, "stateful"),
    ],
)
def test_layers_without_a_torch_form_are_refused(kwargs, match):
    with pytest.raises(ConversionError, match=match):
        convert.to_torch(_built(**kwargs))


def test_stacks_must_be_alike_and_chained():
    a = _built("SimpleRNN")
    b = _built("SimpleRNN", units=7)
    with pytest.raises(ConversionError, match="differs from layer 0 in units"):
        convert.to_torch([a, b])
    with pytest.raises(ConversionError, match="layer 1 takes 4 features, but layer 0 outputs 5"):
        convert.to_torch([a, _built("SimpleRNN")])


@pytest.mark.parametrize("engine", ["numpy", "torch", "jax", "tensorflow"])
def test_a_torch_module_runs_on_every_engine(engine):
    from multirnn import engines

    if engine not in engines.available():
        pytest.skip(f"engine {engine} is not installed")
    torch.manual_seed(2)
    module = torch.nn.LSTM(4, 5, num_layers=2, batch_first=True)
    x = _x().astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    layers = convert.from_torch(module, backend=engine)
    to_engine = getattr(engines.engine(engine).module, "from_numpy", lambda a: a)
    out = to_engine(x)
    for layer in layers:
        out = layer(out)
    from multirnn.convert._common import to_numpy

    np.testing.assert_allclose(to_numpy(out), want, atol=1e-5)


def test_bidirectional_stacks_must_concatenate_and_not_mix():
    from multirnn.reference.layers import Bidirectional

    inner = _built("GRU", reset_after=True, recurrent_activation="sigmoid")
    with pytest.raises(ConversionError, match="merge_mode='sum'"):
        convert.to_torch(Bidirectional(inner, merge_mode="sum"))
    with pytest.raises(ConversionError, match="mixes Bidirectional and plain layers"):
        convert.to_torch([Bidirectional(inner), inner])


class _NamedLikeLSTM(torch.nn.LSTM):
    """A subclass with its own forward: its outputs are not the weights' LSTM."""

    def forward(self, inputs, hx=None):
        out, states = super().forward(inputs, hx)
        return out * 2, states


class _SameForward(torch.nn.LSTM):
    """A subclass that only changes how weights start: it computes torch's LSTM."""

    def reset_parameters(self):
        super().reset_parameters()


def _matches_module(module, x):
    layers = convert.from_torch(module, backend="numpy")  # before the module's own call
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(_run_stack(layers, x), want, atol=1e-12)


def test_a_subclass_with_its_own_forward_is_refused():
    module = _module(_NamedLikeLSTM)
    assert type(module).__name__ == "_NamedLikeLSTM"
    with pytest.raises(ConversionError, match="subclasses torch.nn.LSTM but replaces forward"):
        convert.from_torch(module, backend="numpy")
    LSTM = type("LSTM", (_NamedLikeLSTM,), {})  # the class name alone proves nothing
    with pytest.raises(ConversionError, match="replaces forward"):
        convert.from_torch(_module(LSTM), backend="numpy")


def test_a_subclass_that_keeps_the_call_path_converts_exactly():
    _matches_module(_module(_SameForward), _x())


def test_forward_hooks_are_refused():
    module = _module(torch.nn.GRU)
    handle = module.register_forward_hook(lambda mod, args, out: (out[0] + 1, out[1]))
    with pytest.raises(ConversionError, match="forward hooks"):
        convert.from_torch(module, backend="numpy")
    handle.remove()
    module.register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    with pytest.raises(ConversionError, match="forward hooks"):
        convert.from_torch(module, backend="numpy")


@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_ih_l0"])
def test_parametrized_weights_are_read_as_forward_computes_them(name):
    from torch.nn.utils import parametrizations

    module = parametrizations.weight_norm(_module(torch.nn.LSTM), name)
    with torch.no_grad():  # move the norm away from the original weight's
        getattr(module.parametrizations, name).original0.mul_(1.7)
    _matches_module(module, _x())


def test_a_legacy_weight_norm_is_read_through_its_norm_not_the_stale_weight():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the legacy form
        module = torch.nn.utils.weight_norm(_module(torch.nn.GRU, num_layers=2), "weight_hh_l1")
    with torch.no_grad():
        module.weight_hh_l1_g.mul_(1.7)  # the stored weight_hh_l1 is now stale
    _matches_module(module.eval(), _x())  # compares against the module's own call


def test_spectral_norm_which_changes_the_weights_when_called_is_refused():
    module = torch.nn.utils.spectral_norm(_module(torch.nn.RNN), "weight_hh_l0")
    with pytest.raises(ConversionError, match="SpectralNorm"):
        convert.from_torch(module, backend="numpy")
