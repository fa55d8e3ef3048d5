"""The JAX computation: cuDNN eligibility (a pure function, checked on CPU), the cuDNN weight
packing against JAX's own reference LSTM, every path against the NumPy reference, the
hand-written backward pass against autodiff, and trace-time errors."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from multirnn_jax import kernels, scan  # noqa: E402

from multirnn.reference import kernels as reference  # noqa: E402
from multirnn.spec import parse  # noqa: E402

from ..cases import VARIANTS, variant_id  # noqa: E402

SIGMOID_LSTM = {"recurrent_activation": "sigmoid"}


def spec(layer, **kwargs):
    return parse(layer, (4,), kwargs)


def data(s, batch=3, time=6, features=2, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    shapes = s.weight_shapes(features)
    weights = [rng.standard_normal(shapes[n]).astype(dtype) * 0.5 for n in s.weight_names]
    x = rng.standard_normal((batch, time, features)).astype(dtype)
    return weights, x


# -- eligibility ----------------------------------------------------------------------------------


def test_eligible_on_gpu_only():
    s = spec("LSTM", **SIGMOID_LSTM)
    assert kernels.fused_ineligibility(s, platform="gpu", dtype="float32") is None
    call = {"platform": "gpu", "dtype": "float32", "input_dropout": "shared"}
    assert kernels.fused_ineligibility(s, **call, mask="right_padded") is None
    assert "GPUs only" in kernels.fused_ineligibility(s, platform="cpu", dtype="float32")


@pytest.mark.parametrize(
    "layer,kwargs,call,reason",
    [
        ("LSTM", {}, {}, "tanh/sigmoid"),  # the documented hard_sigmoid default
        ("GRU", {"recurrent_activation": "sigmoid", "reset_after": True}, {}, "LSTM kernel only"),
        ("SimpleRNN", {}, {}, "LSTM kernel only"),
        ("LSTM", SIGMOID_LSTM, {"dtype": "float64"}, "float32 only"),
        ("LSTM", SIGMOID_LSTM, {"recurrent_dropout": True}, "recurrent dropout"),
        ("LSTM", SIGMOID_LSTM, {"input_dropout": "per_gate"}, "per-gate"),
        ("LSTM", SIGMOID_LSTM, {"mask": "other"}, "right-padded"),
        ("LSTM", {**SIGMOID_LSTM, "go_backwards": True}, {"mask": "right_padded"}, "left padding"),
        ("LSTM", {**SIGMOID_LSTM, "unroll": True}, {}, "unroll"),
    ],
)
def test_ineligible_with_reason(layer, kwargs, call, reason):
    call = {"platform": "gpu", "dtype": "float32"} | call
    assert reason in kernels.fused_ineligibility(spec(layer, **kwargs), **call)


def test_mask_kinds():
    right = jnp.asarray([[True, True, False], [True, True, True]])
    kind, lengths = kernels.mask_kind(right)
    assert kind == "right_padded" and lengths.tolist() == [2, 3] and lengths.dtype == jnp.int32
    assert kernels.mask_kind(jnp.asarray([[True, False, True]]))[0] == "other"
    assert kernels.mask_kind(jnp.asarray([[False, False]]))[0] == "other"  # empty row
    assert kernels.mask_kind(None) == ("none", None)
    seen = []
    jax.jit(lambda m: seen.append(kernels.mask_kind(m)[0]) or m)(right)
    assert seen == ["other"]  # a traced mask has no values to inspect


def test_the_cpu_never_takes_the_cudnn_path(monkeypatch):
    monkeypatch.setattr(kernels, "_cudnn", lambda *a: pytest.fail("cuDNN path on CPU"))
    s = spec("LSTM", **SIGMOID_LSTM, dtype="float32")
    weights, x = data(s, dtype="float32")
    kernels.forward(s, [jnp.asarray(w) for w in weights], jnp.asarray(x))


# -- the cuDNN path, run on CPU through JAX's reference implementation --------------------------


def _cudnn_on_cpu(x, h0, c0, packed, lengths, input_size, hidden_size, num_layers, dropout,
                  bidirectional):  # fmt: skip
    from jax.experimental import rnn

    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, input_size, hidden_size,
                                                     num_layers, bidirectional)  # fmt: skip
    return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size,
                        num_layers, dropout, bidirectional)  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_sequences": True, "go_backwards": True},
        {"return_sequences": True, "use_bias": False},
        {"return_sequences": True, "mask": True},
        {"return_sequences": True, "mask": True, "zero_output_for_mask": True},
    ],
    ids=str,
)
def test_cudnn_packing_and_path_match_the_reference(monkeypatch, options):
    from jax.experimental import rnn

    options = dict(options)
    masked = options.pop("mask", False)
    s = spec("LSTM", **SIGMOID_LSTM, **options, dtype="float64")
    weights, x = data(s)
    mask = np.ones((3, 6), bool)
    if masked:
        mask[0, 4:] = False
        mask[2, 1:] = False
    states = [np.random.default_rng(1).standard_normal((3, 4)) for _ in range(2)]
    monkeypatch.setattr(rnn, "lstm", _cudnn_on_cpu)
    _, lengths = kernels.mask_kind(jnp.asarray(mask) if masked else None)
    got, got_states = kernels._cudnn(s, [jnp.asarray(w) for w in weights], jnp.asarray(x),
                                     lengths, [jnp.asarray(a) for a in states], None)  # fmt: skip
    want, want_states = reference.forward(s, weights, x, mask=mask if masked else None,
                                          initial_state=states)  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-12)
    for g, w in zip(got_states, want_states):
        np.testing.assert_allclose(g, w, atol=1e-12)


# -- the generic paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("hoist", [True, False], ids=["hoisted", "stepwise"])
@pytest.mark.parametrize("dropout", ["none", "shared", "per_gate"])
def test_both_loop_layouts_match_the_reference(variant, hoist, dropout):
    """CPU runs the stepwise layout, accelerators the hoisted one: both are checked here."""
    layer, extra = variant
    s = parse(layer, (4,), {**extra, "return_sequences": True, "dtype": "float64"})
    weights, x = data(s)
    rng = np.random.default_rng(2)
    mask = rng.random((3, 6)) > 0.3
    lead = {"none": None, "shared": (), "per_gate": (s.gates,)}[dropout]
    mi = mr = None
    if lead is not None:
        mi = (rng.random((*lead, 3, 2)) > 0.5) * 2.0
        mr = (rng.random((*lead, 3, 4)) > 0.5) * 2.0
    want, _ = reference.forward(s, weights, x, mask=mask, input_dropout=mi, recurrent_dropout=mr)
    act = kernels.activation(s.activation)
    ract = kernels.activation(s.recurrent_activation) if s.recurrent_activation else None
    j = [None if a is None else jnp.asarray(a) for a in (mi, mr)]
    got, _ = scan.generic(s, [jnp.asarray(w) for w in weights], jnp.asarray(x),
                          jnp.asarray(mask), [jnp.zeros((3, 4))] * s.num_states, *j, act, ract,
                          hoist=hoist)  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(
    "options",
    [{}, {"go_backwards": True}, {"mask": True}, {"mask": True, "zero_output_for_mask": True}],
    ids=str,
)
@pytest.mark.parametrize("dropout", ["none", "shared", "per_gate"])
def test_hand_written_backward_equals_autodiff(variant, options, dropout, monkeypatch):
    """With dropout masks too: shared by the gates or one per gate, on the inputs and on
    the recurrent state (Keras 2's default implementation takes one per gate)."""
    layer, extra = variant
    options = dict(options)
    masked = options.pop("mask", False)
    s = parse(layer, (4,), {**extra, **options, "return_sequences": True, "dtype": "float64"})
    weights, x = data(s)
    rng = np.random.default_rng(3)
    mask = jnp.asarray(rng.random((3, 6)) > 0.4) if masked else None
    states = [jnp.asarray(rng.standard_normal((3, 4))) for _ in range(s.num_states)]
    lead = {"none": None, "shared": (), "per_gate": (s.gates,)}[dropout]
    mi = mr = None
    if lead is not None:
        mi = jnp.asarray((rng.random((*lead, 3, 2)) > 0.3) / 0.7)
        mr = jnp.asarray((rng.random((*lead, 3, 4)) > 0.3) / 0.7)
    calls, inner = [], kernels.backprop.generic
    monkeypatch.setattr(kernels.backprop, "generic", lambda *a: calls.append(1) or inner(*a))

    def loss(w, x, states):
        out, final = kernels.forward(s, w, x, mask=mask, initial_state=states,
                                     input_dropout=mi, recurrent_dropout=mr)  # fmt: skip
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(f * f) for f in final)

    args = ([jnp.asarray(w) for w in weights], jnp.asarray(x), states)
    fast = jax.grad(loss, argnums=(0, 1, 2))(*args)
    assert calls, "the call did not take the hand-written backward pass"
    with kernels.autodiff_only():
        plain = jax.grad(loss, argnums=(0, 1, 2))(*args)
        jax.jvp(lambda x: loss(args[0], x, states), (args[1],), (args[1],))  # forward mode works
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_program_size_does_not_grow_with_sequence_length():
    """No Python-level unrolling: a training step traces to the same program for 10 and
    1000 steps (``unroll=True`` only changes XLA's layout of the same loop)."""
    s = spec("LSTM", dtype="float32")
    weights = [jnp.zeros(shape, jnp.float32) for shape in s.weight_shapes(3).values()]

    def size(time):
        x = jax.ShapeDtypeStruct((2, time, 3), jnp.float32)
        step = jax.grad(lambda w, x: kernels.forward(s, w, x)[0].sum())
        return len(jax.make_jaxpr(step)(weights, x).jaxpr.eqns)

    assert size(10) == size(1000)


# -- the functional entry and trace-time errors --------------------------------------------------


def test_functional_entry_with_explicit_masks():
    s = parse("GRU", (3,), {"dtype": "float64"})
    weights, x = data(s, features=4)
    weights = [jnp.asarray(w) for w in weights]
    drop = jnp.full((3, 4), 2.0)
    out, _ = kernels.forward(s, weights, jnp.asarray(x), input_dropout=drop)
    ref, _ = kernels.forward(s, weights, jnp.asarray(x) * 2.0)
    np.testing.assert_allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"inputs": jax.ShapeDtypeStruct((3, 4), jnp.float32)}, ValueError, "must be 3-D"),
        ({"inputs": jax.ShapeDtypeStruct((3, 6, 5), jnp.float32)}, ValueError, "5 features"),
        ({"inputs": jax.ShapeDtypeStruct((3, 6, 2), jnp.float16)}, TypeError, "float16"),
        ({"mask": jax.ShapeDtypeStruct((3, 5), jnp.bool_)}, ValueError, "mask must have shape"),
        ({"mask": jax.ShapeDtypeStruct((3, 6), jnp.float32)}, TypeError, "boolean"),
        ({"initial_state": [jax.ShapeDtypeStruct((3, 4), jnp.float32)]}, ValueError, r"\[h, c\]"),
        (
            {"input_dropout": jax.ShapeDtypeStruct((3, 3), jnp.float32)},
            ValueError,
            "input_dropout must have shape",
        ),
    ],
)
def test_bad_calls_fail_while_tracing(kwargs, error, match):
    s = spec("LSTM", dtype="float32")
    weights = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in s.weight_shapes(2).values()]
    args = {"inputs": jax.ShapeDtypeStruct((3, 6, 2), jnp.float32)} | kwargs
    inputs = args.pop("inputs")
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda w, x, a: kernels.forward(s, w, x, **a), weights, inputs, args)


def test_weights_are_checked_by_name():
    s = spec("LSTM", dtype="float32")
    weights, x = data(s, dtype="float32")
    with pytest.raises(ValueError, match="'recurrent_kernel' must have shape"):
        kernels.forward(s, [weights[0], weights[0], weights[2]], x)
    with pytest.raises(ValueError, match="takes 3"):
        kernels.forward(s, weights[:2], x)
    np.testing.assert_array_equal(kernels.forward(s, weights, np.asarray(x).tolist())[0],
                                  kernels.forward(s, weights, x)[0])  # fmt: skip
    with pytest.raises(TypeError, match="must be a jax.Array, a NumPy array or a nested list"):
        kernels.forward(s, weights, {"x": x})


def test_dispatch_on_a_gpu_takes_cudnn_only_when_eligible(monkeypatch):
    """The GPU dispatch, run on CPU: the platform is faked, cuDNN replaced by JAX's
    reference LSTM; the right-padded mask becomes lengths, an arbitrary one declines."""
    from jax.experimental import rnn

    taken = []
    monkeypatch.setattr(kernels, "platform_of", lambda *a: "gpu")
    monkeypatch.setattr(rnn, "lstm", lambda *a: taken.append(1) or _cudnn_on_cpu(*a))
    s = spec("LSTM", **SIGMOID_LSTM, return_sequences=True, dtype="float32")
    weights, x = data(s, dtype="float32")
    weights, x = [jnp.asarray(w) for w in weights], jnp.asarray(x)
    right = np.ones((3, 6), bool)
    right[1, 2:] = False
    arbitrary = right.copy()
    arbitrary[0, 1] = False
    for mask, expect in ((None, 1), (right, 2), (arbitrary, 2)):
        got, _ = kernels.forward(s, weights, x, mask=None if mask is None else jnp.asarray(mask))
        want, _ = reference.forward(s, [np.asarray(w) for w in weights], np.asarray(x), mask=mask)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert len(taken) == expect
