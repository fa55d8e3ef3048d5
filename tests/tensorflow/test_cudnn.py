"""The cuDNN path, on CPU: its eligibility rules, the weight packing and the code around the
op, with the op itself replaced by an emulation written from cuDNN's documented equations
and parameter layout (so a packing mistake shows up as wrong numbers)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from multirnn_tensorflow import kernels  # noqa: E402

from multirnn.reference import kernels as reference  # noqa: E402
from multirnn.spec import parse  # noqa: E402

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def emulated_cudnn(
    *, input, input_h, input_c, params, sequence_lengths, rnn_mode, is_training, time_major
):
    """CudnnRNNV3 for one unidirectional layer, time-major: per gate a (units, in) matrix
    for the input, then for the state, then input-side and state-side biases; gate order
    i, f, c, o (LSTM) and r, z, h (GRU); outputs past a sequence's length are zeros and its
    states stop there."""
    assert time_major and is_training
    g = _GATES[rnn_mode]
    time, _, features = input.shape
    u = input_h.shape[-1]
    pieces = tf.split(params, [u * features] * g + [u * u] * g + [u] * (2 * g))
    w = [tf.reshape(p, [u, features]) for p in pieces[:g]]
    r = [tf.reshape(p, [u, u]) for p in pieces[g : 2 * g]]
    bw, br = pieces[2 * g : 3 * g], pieces[3 * g :]
    h = input_h[0]
    c = input_c[0] if rnn_mode == "lstm" else None
    outputs = []
    for t in range(time):
        wx = [tf.matmul(input[t], w[k], transpose_b=True) + bw[k] for k in range(g)]
        rh = [tf.matmul(h, r[k], transpose_b=True) + br[k] for k in range(g)]
        if rnn_mode == "lstm":
            i, f = tf.sigmoid(wx[0] + rh[0]), tf.sigmoid(wx[1] + rh[1])
            c_new = f * c + i * tf.tanh(wx[2] + rh[2])
            h_new = tf.sigmoid(wx[3] + rh[3]) * tf.tanh(c_new)
        elif rnn_mode == "gru":
            reset, update = tf.sigmoid(wx[0] + rh[0]), tf.sigmoid(wx[1] + rh[1])
            candidate = tf.tanh(wx[2] + reset * rh[2])
            h_new = (1 - update) * candidate + update * h
        else:
            act = tf.tanh if rnn_mode == "rnn_tanh" else tf.nn.relu
            h_new = act(wx[0] + rh[0])
        valid = (t < sequence_lengths)[:, None]
        h = tf.where(valid, h_new, h)
        if c is not None:
            c = tf.where(valid, c_new, c)
        outputs.append(tf.where(valid, h_new, tf.zeros_like(h_new)))
    c_out = c[None] if c is not None else input_c
    return tf.stack(outputs), h[None], c_out, None, None


@pytest.fixture
def fake_gpu(monkeypatch):
    """A visible 'GPU' whose cuDNN op is the emulation; returns the list of op calls."""
    calls = []

    def op(**kwargs):
        calls.append(kwargs["rnn_mode"])
        return emulated_cudnn(**kwargs)

    monkeypatch.setattr(kernels, "cuda_gpu_visible", lambda: True)
    monkeypatch.setattr(kernels, "_cudnn_rnn", op)
    monkeypatch.setattr(kernels, "_COMPILED", {})  # no function traced without the patch
    return calls


ELIGIBLE = [
    ("LSTM", {"recurrent_activation": "sigmoid"}),
    ("GRU", {"recurrent_activation": "sigmoid", "reset_after": True}),
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu"}),
]

OPTIONS = [
    {},
    {"go_backwards": True, "return_sequences": True},
    {"use_bias": False},
    {"mask": True, "return_sequences": True},
    {"mask": True, "return_sequences": True, "zero_output_for_mask": True},
    {"mask": True},
    {"dropout": True, "return_sequences": True},
]


def _case(layer, extra, options, dtype="float64", seed=0):
    options = dict(options)
    masked, dropout = options.pop("mask", False), options.pop("dropout", False)
    s = parse(layer, (4,), {**extra, **options, "dtype": dtype})
    rng = np.random.default_rng(seed)
    shapes = s.weight_shapes(3)
    weights = [(rng.standard_normal(shapes[n]) * 0.5).astype(dtype) for n in s.weight_names]
    x = rng.standard_normal((3, 6, 3)).astype(dtype)
    states = [rng.standard_normal((3, 4)).astype(dtype) for _ in range(s.num_states)]
    kwargs = {"initial_state": states}
    if masked:  # right-padded, lengths 6, 2, 4
        kwargs["mask"] = np.arange(6)[None, :] < np.array([6, 2, 4])[:, None]
    if dropout:
        kwargs["input_dropout"] = ((rng.random((3, 3)) > 0.5) * 2.0).astype(dtype)
    return s, weights, x, kwargs


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("layer,extra", ELIGIBLE, ids=lambda v: str(v))
def test_cudnn_path_matches_the_reference(fake_gpu, layer, extra, options):
    s, weights, x, kwargs = _case(layer, extra, options)
    want, want_states = reference.forward(s, weights, x, **kwargs)
    got, got_states = kernels.forward(s, weights, x, **kwargs)
    assert fake_gpu, "the cuDNN op was not called"
    np.testing.assert_allclose(got, want, atol=1e-12)
    for g, w in zip(got_states, want_states):
        np.testing.assert_allclose(g, w, atol=1e-12)


def test_cudnn_path_gradients_match_the_generic_path(fake_gpu):
    s, weights, x, kwargs = _case("LSTM", ELIGIBLE[0][1], OPTIONS[4])
    kwargs["mask"] = tf.constant(kwargs["mask"])

    def grads():
        ws = [tf.constant(w) for w in weights]
        with tf.GradientTape() as tape:
            tape.watch(ws)
            out, states = kernels.forward(s, ws, x, **kwargs)
            loss = tf.reduce_sum(out * out) + tf.reduce_sum(states[1])
        return [g.numpy() for g in tape.gradient(loss, ws)]

    via_cudnn = grads()
    assert fake_gpu
    kernels._COMPILED.clear()
    kernels.cuda_gpu_visible = lambda: False  # monkeypatch restores it
    for a, b in zip(via_cudnn, grads()):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize(
    "mask",
    [
        [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]],  # a hole
        [[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]],  # an empty row
    ],
    ids=["hole", "empty-row"],
)
def test_masks_cudnn_cannot_serve_fall_back_at_run_time(fake_gpu, mask):
    s, weights, x, kwargs = _case("GRU", ELIGIBLE[1][1], {"return_sequences": True})
    kwargs["mask"] = np.array(mask, bool)
    want, _ = reference.forward(s, weights, x, **kwargs)
    got, _ = kernels.forward(s, weights, x, **kwargs)
    # the op is in the graph (one branch of a tf.cond), but the generic branch ran
    assert fake_gpu
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_the_cpu_never_takes_the_cudnn_path(monkeypatch):
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_cudnn", lambda *a: pytest.fail("cuDNN path on CPU"))
    assert not kernels.cuda_gpu_visible()
    for layer, extra in ELIGIBLE:
        s, weights, x, kwargs = _case(layer, extra, OPTIONS[4], dtype="float32")
        kernels.forward(s, weights, x, **kwargs)


def test_xla_never_takes_the_cudnn_path(fake_gpu):
    s, weights, x, kwargs = _case("LSTM", ELIGIBLE[0][1], {}, dtype="float32")
    want, _ = reference.forward(s, weights, x, **kwargs)
    got, _ = tf.function(lambda: kernels.forward(s, weights, x, **kwargs), jit_compile=True)()
    assert not fake_gpu
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_layers_take_the_cudnn_path(fake_gpu):
    from multirnn_tensorflow import layers as mtf

    layer = mtf.GRU(4, reset_after=True, recurrent_activation="sigmoid", seed=0,
                    dtype="float64")  # fmt: skip
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    got = layer(x)
    assert fake_gpu == ["gru"]
    want, _ = reference.forward(layer.spec, layer.get_weights(), x)
    np.testing.assert_allclose(got, want, atol=1e-12)


def _reason(layer="LSTM", extra=None, gpu=True, **kwargs):
    defaults = {"recurrent_activation": "sigmoid"} if layer != "SimpleRNN" else {}
    if layer == "GRU":
        defaults["reset_after"] = True
    s = parse(layer, (4,), {**defaults, **(extra or {})})
    return kernels.fused_ineligibility(s, gpu=gpu, **kwargs)


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"gpu": False}, "CUDA GPUs only"),
        ({"xla": True}, "XLA"),
        ({"extra": {"recurrent_activation": "hard_sigmoid"}}, "tanh/sigmoid"),
        ({"extra": {"activation": "relu"}}, "tanh/sigmoid"),
        ({"layer": "GRU", "extra": {"reset_after": False}}, "reset gate after"),
        ({"layer": "SimpleRNN", "extra": {"activation": "sigmoid"}}, "tanh or relu"),
        ({"recurrent_dropout": True}, "recurrent dropout"),
        ({"input_dropout": "per_gate"}, "per-gate"),
        ({"extra": {"unroll": True}}, "unroll"),
        ({"mask": True, "extra": {"go_backwards": True}}, "go_backwards"),
    ],
)
def test_ineligible_calls_say_why(kwargs, reason):
    assert reason in _reason(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"layer": "GRU"},
        {"layer": "SimpleRNN"},
        {"layer": "SimpleRNN", "extra": {"activation": "relu"}},
        {"mask": True},
        {"input_dropout": "shared"},
        {"extra": {"go_backwards": True, "use_bias": False, "return_state": True}},
        {"extra": {"zero_output_for_mask": True, "implementation": 1}, "mask": True},
    ],
)
def test_eligible_calls(kwargs):
    assert _reason(**kwargs) is None
