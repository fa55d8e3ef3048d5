"""multirnn layers -> ONNX graphs (onnx imported lazily), checked against ONNX Runtime.

A layer becomes one ONNX ``RNN``/``LSTM``/``GRU`` node plus the few plain ops that make the
graph return what the layer call returns: batch-major ``inputs`` in, ``output`` (and the
final states with ``return_state``) out. The mapping is exact or refused:

- Gate orders: ONNX's LSTM is i, o, f, c (multirnn's i, f, c, o); the GRU is z, r, h in
  both. Matrices are transposed per direction; the single canonical bias is the ONNX input
  bias with a zero recurrent bias. ``reset_after=True`` is ``linear_before_reset=1`` with the
  two bias rows as the input and recurrent biases; ``reset_after=False`` is
  ``linear_before_reset=0``, where ONNX adds the recurrent candidate bias outside the reset
  product, so it stays zero.
- ``go_backwards`` reverses the inputs (and mask) before a forward node: the outputs then
  come in processing order, as multirnn returns them. ONNX's own ``reverse`` direction
  keeps input order, which only the backward half of a ``Bidirectional`` wants.
- Masks: ONNX's operators know only ``sequence_lens`` (a valid prefix per row). The graph
  moves each row's unmasked steps to the front (a stable sort on the mask), runs them as a
  prefix of that length and gathers the outputs back, so any mask pattern gives multirnn's
  result: carried states, repeated (or zero) outputs at masked steps, fully masked rows.
- ONNX Runtime (checked with 1.32) has no batch-major (``layout=1``) or float64 kernels for
  these operators, so the graph transposes to time-major and float64 layers are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from multirnn._version import __version__
from multirnn.convert._common import is_bidirectional, to_numpy
from multirnn.convert.layouts import ConversionError, permute_gates
from multirnn.spec import LayerSpec

#: opsets the emitted ops are defined the same way in (the graph uses no op changed since 13)
MIN_OPSET = 13
DEFAULT_OPSET = 17

#: ONNX's LSTM gate order i, o, f, c as canonical (i, f, c, o) block indices
LSTM_ORDER = (0, 3, 1, 2)

#: multirnn activation -> (ONNX recurrent activation, alpha, beta), equal as functions
ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 0.2, 0.5),
    "hard_sigmoid_relu6": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "softsign": ("Softsign", None, None),
    "elu": ("Elu", 1.0, None),
}

#: why the other multirnn activations are refused
NO_ONNX_FORM = {
    "selu": "the ONNX recurrent operators offer no SELU (Elu's alpha cannot carry SELU's "
    "outer scale factor)",
    "softplus": "ONNX Runtime evaluates the operators' Softplus as log(1 + exp(x)), which "
    "overflows to inf, then NaN, for x above about 88 in float32, where multirnn's "
    "softplus returns x",
    "exponential": "the ONNX recurrent operators offer no exponential activation",
    "softmax": "the ONNX recurrent operators apply activations elementwise; softmax is not",
}

_TRAINING = (
    "dropout",
    "recurrent_dropout",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)
_OPS = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}
_INT64_MIN = np.iinfo(np.int64).min


def check_exportable(spec: LayerSpec, ignore_training_options: bool = False) -> None:
    """Refuse what no ONNX recurrent operator computes exactly (or, unless ignored, what the
    inference graph would silently drop)."""
    for arg in ("activation", "recurrent_activation"):
        value = getattr(spec, arg)
        if value is None or (isinstance(value, str) and value in ACTIVATIONS):
            continue
        if not isinstance(value, str):
            raise ConversionError(
                f"to_onnx: {spec.layer} {arg} is the Python callable {value!r}; only named "
                f"activations map to ONNX ({', '.join(ACTIVATIONS)})"
            )
        raise ConversionError(
            f"to_onnx: {spec.layer} {arg}={value!r} has no exact ONNX form: "
            f"{NO_ONNX_FORM.get(value, 'not an ONNX recurrent activation')}"
        )
    if ignore_training_options:
        return
    if spec.stateful:
        raise ConversionError(
            "to_onnx: an ONNX graph carries no state from one run to the next (stateful=True); "
            "pass ignore_training_options=True and initial_state=True, and feed each run's "
            "final states (return_state=True) into the next run"
        )
    used = sorted(k for k in _TRAINING if getattr(spec, k))
    if used:
        raise ConversionError(
            f"to_onnx: the graph computes the inference call, which has no "
            f"{', '.join(used)} (training options); pass ignore_training_options=True to "
            "export without them"
        )


def onnx_weights(spec: LayerSpec, weights: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``{"W", "R"[, "B"]}`` of one direction, without the leading direction axis:
    W ``(G*units, input_dim)``, R ``(G*units, units)``, B ``(2*G*units,)``."""
    kernel, recurrent, *rest = (np.asarray(w) for w in weights)
    order = LSTM_ORDER if spec.layer == "LSTM" else tuple(range(spec.gates))
    out = {
        "W": np.ascontiguousarray(permute_gates(kernel, order).T),
        "R": np.ascontiguousarray(permute_gates(recurrent, order).T),
    }
    if rest:
        (bias,) = rest
        if spec.layer == "GRU" and spec.reset_after:
            out["B"] = np.concatenate([bias[0], bias[1]])
        else:
            out["B"] = np.concatenate([permute_gates(bias, order), np.zeros_like(bias)])
    return out


def _activation_attrs(spec: LayerSpec, directions: int) -> dict[str, Any]:
    """``activations`` (f, g[, h] per direction) and their parameters.

    ONNX Runtime gives the listed alphas (betas) in turn to the activations that take one;
    another reading gives one value per activation. Where every activation that takes a
    parameter takes the same value, the list repeats it once per activation, which both
    readings agree on.
    """
    if spec.layer == "SimpleRNN":
        names = [spec.activation]
    elif spec.layer == "LSTM":
        names = [spec.recurrent_activation, spec.activation, spec.activation]
    else:
        names = [spec.recurrent_activation, spec.activation]
    mapped = [ACTIVATIONS[str(n)] for n in names] * directions
    attrs: dict[str, Any] = {"activations": [m[0] for m in mapped]}
    for key, k in (("activation_alpha", 1), ("activation_beta", 2)):
        values = [m[k] for m in mapped if m[k] is not None]
        if values:
            attrs[key] = [values[0]] * len(mapped) if len(set(values)) == 1 else values
    return attrs


class _Graph:
    """Nodes and constants of the graph being built, with generated unique names."""

    def __init__(self, onnx_module, dtype: np.dtype) -> None:
        self.onnx = onnx_module
        self.dtype = np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint: str = "const", dtype=None) -> str:
        name = self._name(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def i64(self, *values: int) -> str:
        return self.const(np.array(values, np.int64), "i64")

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs):
        names = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, list(inputs), names, name=self._name(op_type), **attrs
            )
        )
        return names[0] if outputs == 1 else names

    def zero(self) -> str:
        return self.const(np.zeros((), self.dtype), "zero")

    def prune(self, outputs: Sequence[str]) -> None:
        """Drop what ``outputs`` do not depend on; unused optional outputs of the recurrent
        node (``Y`` without ``return_sequences``, ``Y_c`` without ``return_state``) become
        ``""``, so that runtimes need not compute them."""
        needed = set(outputs)
        kept = []
        for node in reversed(self.nodes):
            if node.op_type in _OPS.values():
                for k, name in enumerate(node.output):
                    if name not in needed:
                        node.output[k] = ""
                while node.output and not node.output[-1]:
                    del node.output[-1]
            if any(name in needed for name in node.output if name):
                kept.append(node)
                needed.update(name for name in node.input if name)
        self.nodes = kept[::-1]
        self.initializers = [t for t in self.initializers if t.name in needed]


def _flip_time(g: _Graph, x: str) -> str:
    return g.op("Slice", [x, g.i64(-1), g.i64(_INT64_MIN), g.i64(1), g.i64(-1)])


def _compact(g: _Graph, x: str, mask: str) -> dict[str, str]:
    """Each row's unmasked steps moved to the front in order, and what undoes it.

    ``lengths`` (int32, at least 1: a fully masked row runs one step whose results are
    all replaced), ``count`` the number of unmasked steps up to and including each step
    (int64, (batch, time)), ``any`` whether a row has an unmasked step (bool, (batch,))."""
    steps = g.op("Gather", [g.op("Shape", [x]), g.const(np.int64(1))], axis=0)  # scalar
    flags = g.op("Cast", [mask], to=g.onnx.TensorProto.INT64)
    count = g.op("CumSum", [flags, g.i64(1)])
    total = g.op("ReduceSum", [flags, g.i64(1)], keepdims=0)
    position = g.op("Range", [g.const(np.int64(0)), steps, g.const(np.int64(1))])
    # sort key: unmasked steps first, each group in time order (the keys are distinct)
    key = g.op("Add", [position, g.op("Mul", [g.op("Sub", [g.const(np.int64(1)), flags]), steps])])
    _, order = g.op(
        "TopK", [key, g.op("Unsqueeze", [steps, g.i64(0)])], outputs=2, axis=1, largest=0, sorted=1
    )
    index = g.op("Expand", [g.op("Unsqueeze", [order, g.i64(2)]), g.op("Shape", [x])])
    lengths = g.op(
        "Cast", [g.op("Max", [total, g.const(np.int64(1))])], to=g.onnx.TensorProto.INT32
    )
    return {
        "x": g.op("GatherElements", [x, index], axis=1),
        "lengths": lengths,
        "count": count,
        "any": g.op("Greater", [total, g.const(np.int64(0))]),
    }


def _merge(g: _Graph, y: str, axis: int, merge_mode: str | None) -> list[str]:
    """Merge the direction axis ``axis`` (size 2) of ``y`` as the wrapper does."""
    forward = g.op("Gather", [y, g.const(np.int64(0))], axis=axis)
    backward = g.op("Gather", [y, g.const(np.int64(1))], axis=axis)
    if merge_mode is None:
        return [forward, backward]
    if merge_mode == "concat":
        return [g.op("Reshape", [y, g.i64(*([0] * axis), -1)])]
    if merge_mode == "mul":
        return [g.op("Mul", [forward, backward])]
    total = g.op("Add", [forward, backward])
    if merge_mode == "sum":
        return [total]
    return [g.op("Div", [total, g.const(np.array(2, g.dtype))])]


def _restore(
    g: _Graph,
    spec: LayerSpec,
    bidirectional: bool,
    packed: dict[str, str],
    mask: str,
    y: str,
    final: list[str],
    initial: list[str | None],
):
    """The layer's results from those of the compacted sequences: sequence outputs
    ``(batch, time, dirs, units)``, last outputs and final states ``(batch, dirs, units)``."""
    zero = g.zero()
    # the step each output repeats: the latest unmasked one so far (none yet: zeros)
    count = packed["count"]
    source = g.op("Max", [g.op("Sub", [count, g.const(np.int64(1))]), g.const(np.int64(0))])
    index = g.op("Expand", [g.op("Unsqueeze", [source, g.i64(2, 3)]), g.op("Shape", [y])])
    gathered = g.op("GatherElements", [y, index], axis=1)
    keep = mask if spec.zero_output_for_mask else g.op("Greater", [count, g.const(np.int64(0))])
    y = g.op("Where", [g.op("Unsqueeze", [keep, g.i64(2, 3)]), gathered, zero])
    any_step = g.op("Unsqueeze", [packed["any"], g.i64(1, 2)])
    last_keep = any_step
    if spec.zero_output_for_mask and not bidirectional:  # the last step masked: zeros
        last_step = g.op("Slice", [mask, g.i64(-1), g.i64(np.iinfo(np.int64).max), g.i64(1)])
        last_keep = g.op("Unsqueeze", [last_step, g.i64(2)])
    last = g.op("Where", [last_keep, final[0], zero])
    # a fully masked row keeps its initial states (ONNX Runtime zeroes them)
    final = [g.op("Where", [any_step, s, init or zero]) for s, init in zip(final, initial)]
    return y, last, final


def _check_dim(what: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConversionError(f"to_onnx: {what} must be a positive int or None, got {value!r}")


def to_onnx(
    layer,
    *,
    path=None,
    mask: bool = False,
    initial_state: bool = False,
    batch_size: int | None = None,
    time: int | None = None,
    opset: int | None = None,
    dtype: str | None = None,
    ignore_training_options: bool = False,
):
    """An ``onnx.ModelProto`` computing what a built multirnn layer (or ``Bidirectional``)
    computes in inference; with ``path``, also saved there.

    Graph inputs: ``inputs`` ``(batch, time, features)``; with ``mask=True`` a boolean
    ``mask`` ``(batch, time)``; with ``initial_state=True`` one ``(batch, units)`` input per
    state, ``initial_h`` (and ``initial_c``), or for a Bidirectional ``forward_initial_h``,
    ..., ``backward_initial_h``, .... Graph outputs, in the layer call's order: ``output``
    (``forward_output`` and ``backward_output`` for ``merge_mode=None``), then with
    ``return_state`` the states ``h`` (``c``), or ``forward_h``, ..., ``backward_h``, ....

    Any mask pattern gives the layer's result, not only right padding: ONNX's operators
    take only per-row lengths, so the graph sorts each row's unmasked steps to the front
    and gathers the outputs back. Batch and time are symbolic (one model serves any
    shape) unless ``batch_size``/``time`` fix them. ONNX Runtime has no float64 kernels
    for these operators, so a float64 layer is refused unless ``dtype="float32"`` asks for
    its weights rounded to float32.
    """
    import onnx

    _check_dim("batch_size", batch_size)
    _check_dim("time", time)
    latest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ConversionError(
            f"to_onnx: opset must be an int from {MIN_OPSET} to {latest} (this onnx "
            f"package's newest), got {opset!r}"
        )
    if not getattr(layer, "built", False):
        raise ConversionError("to_onnx: the layer has no weights yet; build it first")
    bidirectional = is_bidirectional(layer)
    if bidirectional:
        spec = layer.forward_layer.spec
        if layer.backward_layer.spec.go_backwards == spec.go_backwards:
            raise ConversionError(
                "to_onnx: this Bidirectional's backward layer does not run "
                "the other way; multirnn's wrapper always does"
            )
        merge_mode = layer.merge_mode
    else:
        spec = layer.spec
        merge_mode = None
    check_exportable(spec, ignore_training_options)
    arrays = [to_numpy(w) for w in layer.get_weights()]
    have = str(arrays[0].dtype)
    if dtype not in (None, "float32", "float64"):
        raise ConversionError(f"to_onnx: dtype must be None, 'float32' or 'float64', got {dtype!r}")
    dtype = dtype or have
    if dtype != "float32":
        raise ConversionError(
            f"to_onnx: ONNX Runtime has no {dtype} kernels for the LSTM, GRU and RNN "
            f"operators (its CPU provider computes them in float32 only), so a {dtype} graph "
            "would not run there; pass dtype='float32' to export the weights as float32 "
            "(rounded from float64; exact from bfloat16 and float16, whose layers compute "
            "in float32 anyway)"
        )
    arrays = [a.astype(np.float32) for a in arrays]
    n = len(spec.weight_names)
    directions = [arrays[:n], arrays[n:]] if bidirectional else [arrays]
    parts = [onnx_weights(spec, ws) for ws in directions]
    input_dim = arrays[0].shape[0]
    units = spec.units
    num_dirs = len(directions)

    g = _Graph(onnx, np.float32)
    elem = onnx.TensorProto.FLOAT
    batch_dim = batch_size if batch_size is not None else "batch"
    time_dim = time if time is not None else "time"
    graph_inputs = [
        onnx.helper.make_tensor_value_info("inputs", elem, [batch_dim, time_dim, input_dim])
    ]
    x, m = "inputs", None
    if mask:
        graph_inputs.append(
            onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.BOOL, [batch_dim, time_dim])
        )
        m = "mask"
    prefixes = ["forward_", "backward_"] if bidirectional else [""]
    initial: list[str | None] = [None] * spec.num_states  # per state, (batch, dirs, units)
    if initial_state:  # in the layer call's order: the forward states, then the backward ones
        names = [[f"{prefix}initial_{state}" for prefix in prefixes] for state in spec.state_names]
        for prefix in prefixes:
            for state in spec.state_names:
                graph_inputs.append(
                    onnx.helper.make_tensor_value_info(
                        f"{prefix}initial_{state}", elem, [batch_dim, units]
                    )
                )
        for k, per_dir in enumerate(names):
            per_dir = [g.op("Unsqueeze", [name, g.i64(1)]) for name in per_dir]
            initial[k] = per_dir[0] if num_dirs == 1 else g.op("Concat", per_dir, axis=1)

    if spec.go_backwards:  # processing order is reversed input order, outputs included
        x = _flip_time(g, x)
        m = None if m is None else _flip_time(g, m)
    packed = _compact(g, x, m) if m is not None else None
    if packed is not None:
        x = packed["x"]

    stacked = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
    node_inputs = [
        g.op("Transpose", [x], perm=[1, 0, 2]),
        g.const(stacked["W"], "W"),
        g.const(stacked["R"], "R"),
        g.const(stacked["B"], "B") if "B" in stacked else "",
        packed["lengths"] if packed else "",
    ]
    node_inputs += [g.op("Transpose", [s], perm=[1, 0, 2]) if s else "" for s in initial]
    while node_inputs[-1] == "":
        node_inputs.pop()
    attrs: dict[str, Any] = {
        "hidden_size": units,
        "direction": "bidirectional" if bidirectional else "forward",
        **_activation_attrs(spec, num_dirs),
    }
    if spec.layer == "GRU":
        attrs["linear_before_reset"] = int(spec.reset_after)
    y, *final = g.op(_OPS[spec.layer], node_inputs, outputs=1 + spec.num_states, **attrs)
    y = g.op("Transpose", [y], perm=[2, 0, 1, 3])  # (batch, time, dirs, units)
    final = [g.op("Transpose", [s], perm=[1, 0, 2]) for s in final]  # (batch, dirs, units)
    last = final[0]

    if packed is not None:
        y, last, final = _restore(g, spec, bidirectional, packed, m, y, final, initial)

    if spec.return_sequences:
        outputs = _merge(g, y, 2, merge_mode) if bidirectional else [g.op("Squeeze", [y, g.i64(2)])]
    else:
        outputs = (
            _merge(g, last, 1, merge_mode) if bidirectional else [g.op("Squeeze", [last, g.i64(1)])]
        )
    width = 2 * units if merge_mode == "concat" and bidirectional else units
    shape = [batch_dim, time_dim, width] if spec.return_sequences else [batch_dim, width]
    names = ["forward_output", "backward_output"] if len(outputs) == 2 else ["output"]
    results = list(zip(names, outputs, [shape] * len(outputs)))
    if spec.return_state:
        for k, prefix in enumerate(prefixes):
            for state, value in zip(spec.state_names, final):
                part = g.op("Gather", [value, g.const(np.int64(k))], axis=1)
                results.append((f"{prefix}{state}", part, [batch_dim, units]))
    graph_outputs = []
    for name, value, dims in results:
        g.nodes.append(onnx.helper.make_node("Identity", [value], [name], name=f"out_{name}"))
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, elem, dims))

    what = f"Bidirectional({spec.layer}, merge_mode={merge_mode!r})" if bidirectional else ""
    g.prune([name for name, _, _ in results])
    graph = onnx.helper.make_graph(
        g.nodes,
        f"multirnn_{spec.layer}",
        graph_inputs,
        graph_outputs,
        g.initializers,
        doc_string=f"multirnn {what or spec.layer}, units={units}",
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="multirnn",
        producer_version=__version__,
    )
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, path)
    return model
