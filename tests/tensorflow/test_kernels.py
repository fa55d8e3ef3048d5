"""The TensorFlow engine's computation: the functional entry
against the NumPy reference for every cell and option, its gradients against central
differences, and errors raised while a tf.function traces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from multirnn_tensorflow import kernels, scan  # noqa: E402

import multirnn  # noqa: E402
from multirnn.conformance import cases, oracle  # noqa: E402
from multirnn.reference import kernels as reference  # noqa: E402
from multirnn.spec import parse  # noqa: E402

from ..cases import VARIANTS, variant_id  # noqa: E402

OPTIONS = (
    {},
    {"go_backwards": True, "return_sequences": True},
    {"return_sequences": True, "zero_output_for_mask": True},
    {"unroll": True, "return_sequences": True},
)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_forward_matches_the_reference(variant):
    layer, extra = variant
    rng = np.random.default_rng(0)
    for options, masked, dropout in itertools.product(OPTIONS, (False, True), ("shared", "gate")):
        s = parse(layer, (3,), {**extra, **options, "dtype": "float64"})
        shapes = s.weight_shapes(2)
        weights = [rng.standard_normal(shapes[n]) * 0.5 for n in s.weight_names]
        x = rng.standard_normal((2, 5, 2))
        mask = rng.random((2, 5)) > 0.4 if masked else None
        states = [rng.standard_normal((2, 3)) for _ in range(s.num_states)]
        lead = () if dropout == "shared" else (s.gates,)
        mi, mr = (rng.random((*lead, 2, 2)) > 0.5) * 2.0, (rng.random((*lead, 2, 3)) > 0.5) * 2.0
        kwargs = {"mask": mask, "initial_state": states, "input_dropout": mi,
                  "recurrent_dropout": mr}  # fmt: skip
        want, want_states = reference.forward(s, weights, x, **kwargs)
        got, got_states = kernels.forward(s, weights, x, **kwargs)
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"{options} {masked}")
        for g, w in zip(got_states, want_states):
            np.testing.assert_allclose(g, w, atol=1e-12)


def test_per_gate_dropout_with_input_sizes_that_relax_the_trace():
    # The traced function relaxes shapes that change between calls (reduce_retracing):
    # the input size is then unknown while tracing. Found by the full conformance run.
    s = parse("LSTM", (1,), {"use_bias": False, "dtype": "float64"})
    rng = np.random.default_rng(0)
    for input_dim in (1, 2, 3, 1):
        shapes = s.weight_shapes(input_dim)
        weights = [rng.standard_normal(shapes[n]) for n in s.weight_names]
        x = rng.standard_normal((1, 3, input_dim))
        mi = (rng.random((4, 1, input_dim)) > 0.5) * 2.0
        mr = (rng.random((4, 1, 1)) > 0.5) * 2.0
        kwargs = {"input_dropout": mi, "recurrent_dropout": mr}
        want, _ = reference.forward(s, weights, x, **kwargs)
        got, _ = kernels.forward(s, weights, x, **kwargs)
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"input_dim={input_dim}")


@pytest.mark.parametrize(
    "case_id",
    [
        "SimpleRNN(mask=arbitrary,initial_state=True)",
        "LSTM(go_backwards=True,mask=right_padded)",
        "GRU(dropout=True,implementation=1)",
        "GRU(reset_after=True,zero_output_for_mask=True,mask=arbitrary)",
        "LSTM(recurrent_activation=hard_sigmoid,return_state=True,initial_state=True)",
    ],
)
def test_gradients_match_central_differences(case_id):
    case = cases.Case.from_id(case_id)
    spec, data = case.spec("float64"), case.data().cast("float64")
    leaves = [tf.constant(w) for w in data.weights]
    x = tf.constant(data.inputs)
    states = [tf.constant(s) for s in data.initial_state] if data.initial_state else None
    with tf.GradientTape() as tape:
        tape.watch([x, *leaves, *(states or [])])
        output, final = kernels.forward(
            spec, leaves, x, mask=data.mask, initial_state=states,
            input_dropout=data.input_dropout, recurrent_dropout=data.recurrent_dropout,
        )  # fmt: skip
        result = oracle.results(spec, output, final)
        loss = sum(tf.reduce_sum(r * c) for r, c in zip(result, data.cotangents))
    got = tape.gradient(loss, [x, *leaves, *(states or [])])
    want = oracle.gradients(case)
    np.testing.assert_allclose(got[0], want["inputs"], atol=1e-6)
    for name, g in zip(spec.weight_names, got[1 : 1 + len(leaves)]):
        np.testing.assert_allclose(g, want[name], atol=1e-6, err_msg=name)
    for g, w in zip(got[1 + len(leaves) :], want.get("initial_state", [])):
        np.testing.assert_allclose(g, w, atol=1e-6)


@pytest.mark.parametrize(
    "signature,match",
    [
        ({"inputs": [3, 4]}, "must be 3-D"),
        ({"inputs": [3, 6, 5]}, "5 features"),
        ({"mask": [3, 5]}, "mask must have shape"),
        ({"initial_state": [[3, 4]]}, r"\[h, c\]"),
        ({"input_dropout": [3, 3]}, "input_dropout must have shape"),
    ],
)
def test_bad_calls_fail_while_tracing(signature, match):
    s = parse("LSTM", (4,), {"dtype": "float32"})
    weights = [tf.zeros(shape) for shape in s.weight_shapes(2).values()]
    shapes = {"inputs": [3, 6, 2]} | signature
    args = {k: tf.TensorSpec(v, tf.bool if k == "mask" else tf.float32)
            for k, v in shapes.items() if k != "initial_state"}  # fmt: skip
    state_specs = [tf.TensorSpec(v, tf.float32) for v in shapes.get("initial_state", [])]

    def call(inputs, mask=None, input_dropout=None, initial_state=None):
        return kernels.forward(s, weights, inputs, mask=mask, input_dropout=input_dropout,
                               initial_state=initial_state)[0]  # fmt: skip

    fn = tf.function(call)
    with pytest.raises(ValueError, match=match):
        fn.get_concrete_function(**args, **({"initial_state": state_specs} if state_specs else {}))


def test_tensors_must_have_the_weights_dtype_numpy_data_is_cast():
    s = parse("GRU", (3,), {"dtype": "float32"})
    weights = [np.zeros(shape, np.float32) for shape in s.weight_shapes(2).values()]
    with pytest.raises(TypeError, match="dtype float64 .* float32"):
        kernels.forward(s, weights, tf.zeros((1, 2, 2), tf.float64))
    out, _ = kernels.forward(s, weights, np.zeros((1, 2, 2)))
    assert out.dtype == tf.float32
    assert kernels.forward(s, weights, [[[0.0, 0.0]]])[0].shape == (1, 3)
    with pytest.raises(TypeError, match="must be a tf.Tensor, a NumPy array or a nested list"):
        kernels.forward(s, weights, "x")


def _gradients(s, weights, x, kwargs, *, jit=False):
    ws = [tf.constant(w) for w in weights]
    xt = tf.constant(x)
    states = [tf.constant(a) for a in kwargs.pop("initial_state")]

    def compute():
        with tf.GradientTape() as tape:
            tape.watch([*ws, xt, *states])
            out, final = kernels.forward(s, ws, xt, initial_state=states, **kwargs)
            loss = tf.reduce_sum(tf.sin(out)) + sum(tf.reduce_sum(f * f) for f in final)
        return tape.gradient(loss, [*ws, xt, *states])

    return [g.numpy() for g in tf.function(compute, jit_compile=jit)()]


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"go_backwards": True, "activation": "relu", "return_sequences": True, "mask": True},
        {
            "mask": True,
            "zero_output_for_mask": True,
            "activation": "elu",
            "recurrent_activation": "hard_sigmoid",
        },
        {
            "dropout": "shared",
            "activation": "softsign",
            "use_bias": False,
            "recurrent_activation": "sigmoid",
        },
        {"activation": "selu", "recurrent_activation": "hard_sigmoid_relu6", "mask": True},
        {"activation": "softplus", "go_backwards": True},
        {"dropout": "per_gate", "mask": True, "return_sequences": True},
        {"dropout": "per_gate", "go_backwards": True, "reset_after": False},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_hand_written_backward_equals_autodiff(variant, options, monkeypatch):
    """Dropout: one mask shared by the gates, or one per gate (Keras 2's default
    implementation), on the inputs and on the recurrent state."""
    layer, extra = variant
    if "reset_after" in options and layer != "GRU":
        options = {k: v for k, v in options.items() if k != "reset_after"}
    options = dict(options)
    masked, dropout = options.pop("mask", False), options.pop("dropout", False)
    if layer == "SimpleRNN":
        options.pop("recurrent_activation", None)
    s = parse(layer, (4,), {**extra, **options, "dtype": "float64"})
    assert kernels.backprop.supported(s)
    rng = np.random.default_rng(3)
    shapes = s.weight_shapes(3)
    weights = [rng.standard_normal(shapes[n]) * 0.5 for n in s.weight_names]
    x = rng.standard_normal((3, 6, 3))
    kwargs = {"initial_state": [rng.standard_normal((3, 4)) for _ in range(s.num_states)]}
    if masked:
        kwargs["mask"] = rng.random((3, 6)) > 0.4
    if dropout:
        lead = (s.gates,) if dropout == "per_gate" else ()
        kwargs["input_dropout"] = (rng.random((*lead, 3, 3)) > 0.5) * 2.0
        kwargs["recurrent_dropout"] = (rng.random((*lead, 3, 4)) > 0.3) / 0.7
    calls, inner = [], kernels.backprop.generic
    monkeypatch.setattr(
        kernels.backprop, "generic", lambda *a, **k: calls.append(1) or inner(*a, **k)
    )
    fast = _gradients(s, weights, x, dict(kwargs))
    assert calls, "the call did not take the hand-written backward pass"
    with kernels.autodiff_only():
        plain = _gradients(s, weights, x, dict(kwargs))
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(
    "options",
    [{"return_sequences": True, "mask": True}, {}],
    ids=["sequences,mask", "last-output"],
)
def test_hand_written_backward_under_xla(variant, options):
    # under XLA every layer forms its kernels' gradients after the loop; without a mask or
    # return_sequences the loop returns only its final states
    layer, extra = variant
    options = dict(options)
    masked = options.pop("mask", False)
    s = parse(layer, (4,), {**extra, **options, "dtype": "float64"})
    assert not kernels.backprop.kernel_grads_in_loop(s, xla=True)
    rng = np.random.default_rng(4)
    shapes = s.weight_shapes(3)
    weights = [rng.standard_normal(shapes[n]) * 0.5 for n in s.weight_names]
    kwargs = {"initial_state": [rng.standard_normal((3, 4)) for _ in range(s.num_states)]}
    if masked:
        kwargs["mask"] = rng.random((3, 6)) > 0.4
    x = rng.standard_normal((3, 6, 3))
    fast = _gradients(s, weights, x, dict(kwargs), jit=True)
    with kernels.autodiff_only():
        plain = _gradients(s, weights, x, dict(kwargs))
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_kernel_gradients_in_the_loop_only_where_measured_faster():
    def spec(layer, **options):
        return parse(layer, (4,), options)

    assert kernels.backprop.kernel_grads_in_loop(spec("LSTM"), xla=False)
    assert kernels.backprop.kernel_grads_in_loop(spec("GRU", reset_after=True), xla=False)
    assert not kernels.backprop.kernel_grads_in_loop(spec("GRU", reset_after=False), xla=False)
    assert not kernels.backprop.kernel_grads_in_loop(spec("SimpleRNN"), xla=False)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_hand_written_loops_keep_one_array_per_step(variant, masked, monkeypatch):
    # Each op of a step costs about as much as its arithmetic here: the forward loop keeps
    # a step's activations (and old states) in one array, the backward loop reads it once,
    # and a length known when tracing adds no bound to either loop's condition.
    from .graphs import loop_ops

    # the CPU's loops, also where TensorFlow sees a GPU (which takes cuDNN or hoists)
    monkeypatch.setattr(kernels, "cuda_gpu_visible", lambda: False)
    monkeypatch.setattr(scan, "hoisting", lambda: False)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    layer_name, extra = variant
    activations = {} if layer_name == "SimpleRNN" else {"recurrent_activation": "sigmoid"}
    layer = getattr(multirnn.engine("tensorflow"), layer_name)(
        4, return_sequences=True, **activations, **extra
    )
    x = tf.constant(np.random.default_rng(0).standard_normal((3, 6, 2)), tf.float32)
    mask = tf.constant(np.arange(6)[None, :] < np.array([[6], [4], [2]]))
    call = {"mask": mask} if masked else {}
    loops = loop_ops(layer, x, **call)
    bodies = [ops for kind, ops in loops if kind == "body"]
    assert len(bodies) == 2, loops
    # only the forward loop reads TensorArrays (its inputs)
    forward, backward = sorted(bodies, key=lambda ops: -ops["TensorListGetItem"])
    assert forward["TensorListSetItem"] == 2  # the outputs, and what the step keeps
    separate = layer_name == "GRU" and extra.get("reset_after", False)
    assert backward["TensorListSetItem"] == (2 if separate else 1)
    # reads per step: the output gradient, what the step kept, and the mask or, without
    # one, the old h where the step needs it (the GRU's step; the LSTM's recurrent
    # kernel's gradient, added up in the loop); with a mask what the step kept holds it
    reads_h = not masked and layer_name != "SimpleRNN"
    assert backward["GatherV2"] == 2 + masked + reads_h, backward
    for kind, ops in loops:
        if kind == "cond":
            assert "LogicalAnd" not in ops, ops


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_hand_written_backward_with_a_length_unknown_when_tracing(variant):
    # the loops then take their bound from the tensor's shape at run time
    layer, extra = variant
    s = parse(layer, (4,), {**extra, "return_sequences": True, "dtype": "float64"})
    rng = np.random.default_rng(5)
    shapes = s.weight_shapes(3)
    ws = [tf.constant(rng.standard_normal(shapes[n]) * 0.5) for n in s.weight_names]

    def gradients(x):
        with tf.GradientTape() as tape:
            tape.watch([*ws, x])
            out, final = kernels.forward(s, ws, x)
            loss = tf.reduce_sum(tf.sin(out)) + sum(tf.reduce_sum(f * f) for f in final)
        return tape.gradient(loss, [*ws, x])

    from .graphs import function_ops

    unknown = [tf.TensorSpec([2, None, 3], tf.float64)]
    x = tf.constant(rng.standard_normal((2, 5, 3)))
    traced = tf.function(gradients, input_signature=unknown).get_concrete_function()
    ops = function_ops(traced.graph).values()
    # the hand-written pass: no TensorFlow-differentiated loop popping its intermediates,
    # and the loops bounded by the length the tensor has when it runs
    assert not any(c["TensorListPopBack"] for c in ops)
    assert any(c["LogicalAnd"] for c in ops)
    fast = traced(x)
    with kernels.autodiff_only():
        plain = tf.function(gradients, input_signature=unknown)(x)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-12)
