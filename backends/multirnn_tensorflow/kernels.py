"""The TensorFlow computation: the functional entry and the generic ``tf.while_loop`` path.

Every argument is checked from static shapes and dtypes, so a wrong call fails while a
``tf.function`` traces it, before anything runs. Calls go through one ``tf.function`` per
layer configuration, so eager calls run a traced graph instead of the loop op by op; inside
a caller's ``tf.function`` it is inlined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from multirnn import activations, builtin_cells, pipeline
from multirnn.spec import LayerSpec
from multirnn_tensorflow import backprop, scan
from multirnn_tensorflow.ops import TF_ARRAYS, TF_OPS

#: activations the framework computes natively and exactly (the formula's own ops)
NATIVE_ACTIVATIONS = {
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "relu": tf.nn.relu,
    "linear": lambda x: x,
}

activation = activations.resolver(NATIVE_ACTIVATIONS, TF_OPS)


class OutputSpecs:
    """Keras's output masks and shapes of a recurrent layer, built-in or ``RNN(cell)``: both
    read them from their spec (``return_sequences``, ``return_state``, units, states)."""

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.spec.return_sequences else None
        if self.spec.return_state:
            return [output_mask] + [None] * self.spec.num_states
        return output_mask

    def compute_output_shape(self, input_shape):
        spec = self.spec
        batch, time = input_shape[0], input_shape[1]
        output = (batch, time, spec.units) if spec.return_sequences else (batch, spec.units)
        if spec.return_state:
            return [output] + [(batch, spec.units)] * spec.num_states
        return output


_COMPILED: dict[tuple, Any] = {}
_HAND_WRITTEN_BACKWARD = [True]


@contextlib.contextmanager
def autodiff_only():
    """Trace calls with TensorFlow's automatic differentiation of the loop instead of the
    hand-written backward pass (``multirnn_tensorflow.backprop``): for comparing the two,
    or for higher-order gradients, which the hand-written pass does not provide."""
    _HAND_WRITTEN_BACKWARD.append(False)
    try:
        yield
    finally:
        _HAND_WRITTEN_BACKWARD.pop()


def run(
    spec, weights, x, mask, states, mi, mr, *, inference: bool = False
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Run a validated call: inlined into a caller's graph, else through the layer
    configuration's own ``tf.function``.

    ``inference=True`` (a layer called with ``training=False``), or a call no gradient
    tape can record, skips what only the hand-written backward pass needs: the loop then
    keeps no per-step activations (and its graph is one TFLite converts with builtin ops).
    Gradients stay correct either way; they come from automatic differentiation then.
    """
    hand_written = _HAND_WRITTEN_BACKWARD[-1] and not inference and _recording()
    if tf.inside_function():
        return _generic(spec, hand_written)(list(weights), x, mask, states, mi, mr)
    # one function per dropout-mask form: relaxed retracing would otherwise merge a shared
    # (batch, width) mask and a per-gate one into a mask of unknown rank
    # Layers that compute alike share one function: keyed by what the graph depends on, not
    # by names, seeds or initializers, so that building many layers does not trace (and
    # warn about retracing) once per layer.
    spec = _computation(spec)
    key = (spec, None if mi is None else mi.shape.rank, None if mr is None else mr.shape.rank,
           hand_written)  # fmt: skip
    fn = _COMPILED.get(key)
    if fn is None:
        # unroll needs the static sequence length, which relaxed retracing would drop
        fn = _COMPILED[key] = tf.function(
            _generic(spec, hand_written), reduce_retracing=not spec.unroll
        )
    return fn(list(weights), x, mask, states, mi, mr)


def _recording() -> bool:
    """Whether a gradient tape could record this call: one around an eager call, or one
    active while a ``tf.function`` is traced (Keras's train step, a tape around the call
    of a function). A tape later put around an already traced function still gets
    correct gradients, by automatic differentiation of the plain loop."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it: assume a tape
        return True
    return bool(record.could_possibly_record())


def forward(spec: LayerSpec, weights: Sequence[Any], inputs: Any, **arguments: Any):
    """The layer of ``spec`` as a differentiable function of its weights and inputs, like
    the NumPy reference: see :func:`multirnn.pipeline.forward` for the arguments."""
    return pipeline.forward(TF_ARRAYS, run, spec, weights, inputs, **arguments)


@functools.lru_cache(maxsize=1024)
def _computation(spec: LayerSpec) -> LayerSpec:
    """The spec with every argument the computation does not read set to its default."""
    blank = LayerSpec(spec.layer, spec.units)
    return dataclasses.replace(
        spec,
        **{f: getattr(blank, f) for f in _NOT_COMPUTED},
    )


#: arguments that shape the weights' values or the call's checks, never the graph
_NOT_COMPUTED = (
    "kernel_initializer", "recurrent_initializer", "bias_initializer", "unit_forget_bias",
    "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
    "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
    "recurrent_dropout", "stateful", "return_state", "seed", "input_dim", "name",
    "input_length", "batch_size", "trainable", "dtype",
)  # fmt: skip


class _OwnRetracing(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about multirnn's own functions.

    TensorFlow counts traces per Python code object, so one function per layer
    configuration (each traced once per input signature, shapes relaxed after that) looks
    like retracing in a loop once a script builds a few kinds of layers. Warnings about the
    user's own functions pass through untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("retracing" in message and "multirnn_layer_call" in message)


tf.get_logger().addFilter(_OwnRetracing())


def _generic(spec: LayerSpec, hand_written: bool = True):
    act = activation(spec.activation)
    ract = None if spec.recurrent_activation is None else activation(spec.recurrent_activation)

    def generic(weights, x, mask, states, mi, mr):
        hoist = scan.hoisting()
        if not hoist and hand_written and backprop.supported(spec):
            return backprop.generic(spec, weights, x, mask, states, mi, mr, act, ract,
                                    xla=in_xla_context())  # fmt: skip
        return scan.generic(spec, weights, x, mask, states, mi, mr, act, ract, hoist=hoist)

    def multirnn_layer_call(weights, x, mask, states, mi, mr):
        if states is None:
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], spec.units]), x.dtype)
            states = [zeros] * spec.num_states
        reason = fused_ineligibility(
            spec,
            gpu=cuda_gpu_visible(),
            xla=in_xla_context(),
            mask=mask is not None,
            input_dropout="none"
            if mi is None
            else ("shared" if mi.shape.rank == 2 else "per_gate"),
            recurrent_dropout=mr is not None,
        )
        if reason is not None:
            return generic(weights, x, mask, states, mi, mr)
        if mask is None:
            return _cudnn(spec, weights, x, None, states, mi)
        # the cuDNN op takes lengths: use it when the mask is a prefix of every row, which
        # only the mask's values can tell, so both paths are in the graph
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        prefix = tf.sequence_mask(lengths, maxlen=tf.shape(mask)[1])
        right_padded = tf.logical_and(
            tf.reduce_all(tf.equal(prefix, mask)), tf.reduce_all(lengths > 0)
        )
        return tf.cond(
            right_padded,
            lambda: _cudnn(spec, weights, x, lengths, states, mi),
            # the autodiff loop: cond's gradient cannot resolve what a custom gradient
            # captures inside a branch (and with a GPU visible, generic() uses it anyway)
            lambda: scan.generic(
                spec, weights, x, mask, states, mi, mr, act, ract, hoist=scan.hoisting()
            ),
        )

    return multirnn_layer_call


# -- the cuDNN path ---------------------------------------------------------------------------


def cuda_gpu_visible() -> bool:
    """Whether TensorFlow places work on a CUDA GPU (the cuDNN op has no CPU kernel, and the
    weight layout below is the one of CUDA builds)."""
    build = tf.sysconfig.get_build_info()
    return bool(build.get("is_cuda_build")) and bool(tf.config.list_logical_devices("GPU"))


def in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA (``jit_compile=True``)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private modules moved: assume XLA, which only declines cuDNN
        return True
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def fused_ineligibility(
    spec: LayerSpec,
    *,
    gpu: bool,
    xla: bool = False,
    mask: bool = False,
    input_dropout: str = "none",
    recurrent_dropout: bool = False,
) -> str | None:
    """None when TensorFlow's cuDNN RNN op computes exactly this call; else why not.

    ``gpu``: a CUDA GPU is visible; ``xla``: the call is being compiled by XLA; ``mask``: a
    mask is given (the op then runs only if it is right-padded with no empty row, checked
    at run time); ``input_dropout`` is "none", "shared" or "per_gate".
    """
    if not gpu:
        return "the cuDNN op runs on CUDA GPUs only (none is visible)"
    if xla:
        return "XLA (jit_compile=True) cannot compile the cuDNN op"
    return builtin_cells.fused_call(spec, mask="right_padded" if mask else "none",
                                    input_dropout=input_dropout,
                                    recurrent_dropout=recurrent_dropout)  # fmt: skip


#: cuDNN's gate order as indices into the canonical blocks (its GRU is r, z, h)
_CUDNN_GATES = {"LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2), "SimpleRNN": (0,)}


def cudnn_params(spec: LayerSpec, weights: Sequence[tf.Tensor]) -> tf.Tensor:
    """Canonical weights packed into the flat parameter buffer of the cuDNN op (CUDA
    layout): one ``(units, in)`` matrix per gate for the inputs, then for the state, then
    the input-side biases and the recurrent-side biases, each gate in cuDNN's order."""
    kernel, recurrent = weights[0], weights[1]
    order = _CUDNN_GATES[spec.layer]
    bias_in, bias_rec = scan.split_bias(spec, weights)
    if bias_rec is None:
        bias_rec = tf.zeros_like(bias_in)
    blocks = []
    for matrix in (kernel, recurrent):
        gates = tf.split(matrix, spec.gates, axis=1)
        blocks += [tf.transpose(gates[k]) for k in order]
    for bias in (bias_in, bias_rec):
        gates = tf.split(bias, spec.gates)
        blocks += [gates[k] for k in order]
    return tf.concat([tf.reshape(b, [-1]) for b in blocks], axis=0)


def _cudnn_rnn(**kwargs):
    """TensorFlow's cuDNN op (a seam: the tests put a CPU emulation here)."""
    return tf.raw_ops.CudnnRNNV3(**kwargs)


def _cudnn(spec: LayerSpec, weights, x, lengths, states, mi):
    """The call through the cuDNN op; ``lengths`` are those of a right-padded mask."""
    if mi is not None:
        x = x * mi[:, None, :]
    xs = tf.transpose(x, [1, 0, 2])
    time = tf.shape(xs)[0]
    if spec.go_backwards:  # never with a mask (see fused_ineligibility)
        xs = tf.reverse(xs, [0])
    masked = lengths is not None
    if not masked:
        lengths = tf.fill(tf.shape(xs)[1:2], time)
    mode = {"LSTM": "lstm", "GRU": "gru"}.get(spec.layer, f"rnn_{spec.activation}")
    c0 = states[1][None] if spec.layer == "LSTM" else tf.zeros([], x.dtype)
    ys, h, c, _, _ = _cudnn_rnn(
        input=xs,
        input_h=states[0][None],
        input_c=c0,
        params=cudnn_params(spec, weights),
        sequence_lengths=lengths,
        rnn_mode=mode,
        is_training=True,
        time_major=True,
    )
    y = tf.transpose(ys, [1, 0, 2])  # padded steps are zeros
    if masked and not spec.zero_output_for_mask:  # masked steps repeat the last valid output
        steps = tf.range(time)[None, :]
        y = tf.gather(y, tf.minimum(steps, lengths[:, None] - 1), batch_dims=1)
    output = y if spec.return_sequences else y[:, -1]
    final = [h[0], c[0]] if spec.layer == "LSTM" else [h[0]]
    return output, final
