"""multirnn layers -> ONNX graphs, run in ONNX Runtime against the layer's own call."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from multirnn import engines  # noqa: E402
from multirnn.convert.layouts import ConversionError  # noqa: E402
from multirnn.convert.onnx import ACTIVATIONS, to_onnx  # noqa: E402

E = engines.engine("numpy")
FEATURES = 3


def _layer(kind, units=4, **kwargs):
    kwargs.setdefault("dtype", "float32")
    return getattr(E, kind)(units, seed=1, input_dim=FEATURES, **kwargs)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _mask(kind, batch, time, rng):
    if kind == "right_padded":
        lengths = rng.integers(0, time + 1, size=batch)
        lengths[0] = time
        return np.arange(time)[None, :] < lengths[:, None]
    mask = rng.random((batch, time)) < 0.6  # arbitrary, with a fully masked row
    mask[-1] = False
    return mask


def _check(
    layer,
    model,
    *,
    mask=None,
    initial_state=False,
    shapes=((3, 5), (1, 7)),
    dtype=np.float32,
    rtol=1e-5,
    atol=1e-6,
):
    """Run ``model`` at every (batch, time) of ``shapes`` and compare with ``layer``."""
    session = _session(model)
    names = [i.name for i in session.get_inputs()]
    spec = layer.forward_layer.spec if hasattr(layer, "forward_layer") else layer.spec
    directions = 2 if hasattr(layer, "forward_layer") else 1
    rng = np.random.default_rng(len(names))
    for batch, time in shapes:
        x = rng.standard_normal((batch, time, FEATURES)).astype(dtype)
        feeds, kwargs = {"inputs": x.astype(np.float32)}, {}
        if mask:
            kwargs["mask"] = feeds["mask"] = _mask(mask, batch, time, rng)
        if initial_state:
            states = [
                (rng.standard_normal((batch, spec.units)) * 0.5).astype(dtype)
                for _ in range(directions * spec.num_states)
            ]
            kwargs["initial_state"] = states
            feeds.update({n: s.astype(np.float32) for n, s in zip(names[-len(states) :], states)})
        want = layer(x, **kwargs)
        want = want if isinstance(want, (list, tuple)) else [want]
        got = session.run(None, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=rtol, atol=atol)


_ACTS = sorted(ACTIVATIONS)
# activation pairs rotated so that some nodes mix activations with different parameters
CASES = [
    *[("SimpleRNN", {"activation": a}) for a in _ACTS],
    *[
        ("LSTM", {"recurrent_activation": a, "activation": b})
        for a, b in zip(_ACTS, [*_ACTS[2:], *_ACTS[:2]])
    ],
    *[
        ("GRU", {"recurrent_activation": a, "activation": b, "reset_after": r})
        for r in (False, True)
        for a, b in zip(_ACTS, [*_ACTS[1:], *_ACTS[:1]])
    ],
    ("LSTM", {"use_bias": False, "return_state": True}),
    ("GRU", {"use_bias": False, "reset_after": True}),
    ("LSTM", {"return_sequences": False, "return_state": True}),
    ("GRU", {"go_backwards": True, "return_state": True}),
    ("SimpleRNN", {"go_backwards": True, "return_sequences": False}),
    ("LSTM", {"return_state": True, "_initial_state": True}),
    (
        "LSTM",
        {"go_backwards": True, "return_state": True, "_mask": "arbitrary", "_initial_state": True},
    ),
    ("GRU", {"return_state": True, "_mask": "right_padded", "_initial_state": True}),
    ("GRU", {"reset_after": True, "zero_output_for_mask": True, "_mask": "arbitrary"}),
    ("SimpleRNN", {"return_sequences": False, "return_state": True, "_mask": "arbitrary"}),
    ("LSTM", {"return_sequences": False, "zero_output_for_mask": True, "_mask": "arbitrary"}),
    ("LSTM", {"zero_output_for_mask": True, "go_backwards": True, "_mask": "right_padded"}),
    *[("LSTM", {"_merge": m, "return_state": True}) for m in ("concat", "sum", "mul", "ave")],
    (
        "GRU",
        {
            "_merge": None,
            "reset_after": True,
            "return_state": True,
            "_initial_state": True,
            "_mask": "arbitrary",
        },
    ),
    ("SimpleRNN", {"_merge": "concat", "go_backwards": True, "_mask": "arbitrary"}),
    (
        "LSTM",
        {
            "_merge": "ave",
            "return_sequences": False,
            "return_state": True,
            "_mask": "arbitrary",
            "_initial_state": True,
            "go_backwards": True,
        },
    ),
    ("GRU", {"_merge": None, "return_sequences": False, "_mask": "right_padded"}),
]


def _id(case):
    kind, kwargs = case
    return f"{kind}({','.join(f'{k}={v}' for k, v in kwargs.items())})"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_the_graph_computes_what_the_layer_computes(case):
    kind, kwargs = case
    kwargs = dict(kwargs)
    mask, initial = kwargs.pop("_mask", None), kwargs.pop("_initial_state", False)
    wrap = "_merge" in kwargs
    merge = kwargs.pop("_merge", None)
    kwargs.setdefault("return_sequences", True)
    layer = _layer(kind, **kwargs)
    if wrap:
        layer = E.Bidirectional(layer, merge_mode=merge)
    model = to_onnx(layer, mask=bool(mask), initial_state=initial)
    _check(layer, model, mask=mask, initial_state=initial)


@pytest.mark.parametrize("opset", [13, onnx.defs.onnx_opset_version()])
def test_oldest_and_newest_opsets(opset):
    layer = E.Bidirectional(_layer("LSTM", return_sequences=True, return_state=True), "sum")
    model = to_onnx(layer, mask=True, initial_state=True, opset=opset)
    assert model.opset_import[0].version == opset
    _check(layer, model, mask="arbitrary", initial_state=True, shapes=((2, 4),))


def test_path_writes_a_checked_model_and_fixed_dims(tmp_path):
    layer = _layer("GRU", return_sequences=True)
    path = tmp_path / "gru.onnx"
    model = to_onnx(layer, path=path, batch_size=2, time=5)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded == model
    dims = [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 5, FEATURES]
    _check(layer, loaded, shapes=((2, 5),))
    symbolic = to_onnx(layer).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in symbolic[:2]] == ["batch", "time"]


def test_graph_io_names():
    layer = E.Bidirectional(_layer("LSTM", return_state=True), merge_mode=None)
    model = to_onnx(layer, mask=True, initial_state=True)
    assert [i.name for i in model.graph.input] == [
        "inputs",
        "mask",
        "forward_initial_h",
        "forward_initial_c",
        "backward_initial_h",
        "backward_initial_c",
    ]
    assert [o.name for o in model.graph.output] == [
        "forward_output",
        "backward_output",
        "forward_h",
        "forward_c",
        "backward_h",
        "backward_c",
    ]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LSTM") == 1


def test_a_float64_layer_exports_in_float32_when_asked():
    layer = _layer("LSTM", dtype="float64", return_sequences=True, return_state=True)
    with pytest.raises(ConversionError, match="no float64 kernels"):
        to_onnx(layer)
    model = to_onnx(layer, dtype="float32")
    _check(layer, model, dtype=np.float64, rtol=1e-5, atol=1e-5)


def test_a_stateful_layer_runs_as_states_in_states_out():
    layer = _layer("GRU", stateful=True, return_state=True, return_sequences=True)
    model = to_onnx(layer, initial_state=True, ignore_training_options=True)
    session = _session(model)
    x = np.random.default_rng(3).standard_normal((2, 6, FEATURES)).astype(np.float32)
    state = np.zeros((2, 4), np.float32)
    for chunk in (x[:, :4], x[:, 4:]):
        want, want_h = layer(chunk)
        got, state = session.run(None, {"inputs": chunk, "initial_h": state})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state, want_h, rtol=1e-5, atol=1e-6)


def test_training_options_are_dropped_only_when_asked():
    layer = _layer("LSTM", dropout=0.3, recurrent_dropout=0.2, return_sequences=True)
    with pytest.raises(ConversionError, match="dropout, recurrent_dropout"):
        to_onnx(layer)
    _check(layer, to_onnx(layer, ignore_training_options=True), shapes=((2, 3),))


@pytest.mark.parametrize(
    "make,kwargs,match",
    [
        (lambda: _layer("SimpleRNN", activation="selu"), {}, "activation='selu'.*no SELU"),
        (
            lambda: _layer("GRU", recurrent_activation="softplus"),
            {},
            "recurrent_activation='softplus'.*overflows",
        ),
        (lambda: _layer("SimpleRNN", activation=np.tanh), {}, "Python callable"),
        (lambda: _layer("LSTM", stateful=True), {}, "stateful=True"),
        (lambda: _layer("GRU", kernel_regularizer="l2"), {}, "kernel_regularizer"),
        (lambda: E.LSTM(4), {}, "build it first"),
        (lambda: _layer("LSTM"), {"opset": 12}, "opset must be an int from 13"),
        (lambda: _layer("LSTM"), {"batch_size": 0}, "batch_size must be a positive int"),
        (lambda: _layer("LSTM"), {"dtype": "float16"}, "dtype must be None"),
    ],
)
def test_what_has_no_exact_onnx_form_is_refused(make, kwargs, match):
    with pytest.raises(ConversionError, match=match):
        to_onnx(make(), **kwargs)


def test_a_layer_of_another_engine_exports_the_same_graph():
    if "torch" not in engines.available():
        pytest.skip("the torch engine is not installed")
    from multirnn.convert._common import to_numpy

    torch_engine = engines.engine("torch")
    layer = torch_engine.GRU(
        4, input_dim=FEATURES, seed=1, dtype="float32", reset_after=True, return_sequences=True
    )
    x = np.random.default_rng(5).standard_normal((2, 5, FEATURES)).astype(np.float32)
    want = to_numpy(layer(torch_engine.module.from_numpy(x)))
    got = _session(to_onnx(layer)).run(None, {"inputs": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
