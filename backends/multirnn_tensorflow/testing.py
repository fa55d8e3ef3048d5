"""Conformance adapter of the TensorFlow engine: the Keras layer for plain calls, stateful
sequences and gradients (``tf.GradientTape``); the functional entry for explicit dropout
masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from multirnn.conformance.adapters import (
    EngineAdapter,
    layer_from,
    layer_gradients,
    listed,
    named_gradients,
)
from multirnn.conformance.cases import ALL_DTYPES
from multirnn.conformance.oracle import results
from multirnn_tensorflow import kernels


class TensorFlowAdapter(EngineAdapter):
    name = "tensorflow"
    dtypes = ALL_DTYPES

    tensor = staticmethod(tf.constant)

    def environment(self) -> str:
        return "KERAS_BACKEND=tensorflow"

    def _run(self, spec, weights, inputs, mask, initial_state, input_dropout, recurrent_dropout,
             watch=lambda tensors: None):  # fmt: skip
        x, state = self.to_engine(inputs), self.to_engine(initial_state)
        watch([x, *(state or [])])
        if input_dropout is not None or recurrent_dropout is not None:
            params = [tf.Variable(w) for w in weights]
            t = self.to_engine
            output, final = kernels.forward(
                spec, params, x, mask=t(mask), initial_state=state,
                input_dropout=t(input_dropout), recurrent_dropout=t(recurrent_dropout),
            )  # fmt: skip
            return results(spec, output, final), params, x, state
        layer = layer_from(spec, weights, self.name)
        out = layer(x, mask=self.to_engine(mask), initial_state=state, training=False)
        return (out if spec.return_state else [out]), layer._weights(), x, state

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        got, *_ = self._run(spec, weights, inputs, mask, initial_state, input_dropout,
                            recurrent_dropout)  # fmt: skip
        return [np.asarray(r) for r in got]

    def gradients(self, spec, weights, inputs, *, mask, initial_state, input_dropout,
                  recurrent_dropout, cotangents):  # fmt: skip
        with tf.GradientTape() as tape:
            got, params, x, state = self._run(spec, weights, inputs, mask, initial_state,
                                              input_dropout, recurrent_dropout,
                                              tape.watch)  # fmt: skip
            loss = tf.add_n([tf.reduce_sum(r * c) for r, c in zip(got, self.to_engine(cotangents))])
        leaves = [x, *params, *(state or [])]
        grads = tape.gradient(loss, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return layer_gradients(spec, [np.asarray(g) for g in grads], bool(state))

    def benchmark(self, spec, weights, inputs, variant=None, layer=None, stateful=False):
        """Traced functions; variant "xla" compiles them with ``jit_compile=True``;
        ``layer``: a built layer to time instead (an ``RNN(cell)``). ``stateful``:
        streaming, forward only: a stateful layer (``layer`` must be one) called on the
        same chunk ``inputs`` again and again, carrying its states (variables) from call
        to call."""
        if variant not in (None, "xla"):
            raise ValueError(f"the tensorflow engine has no benchmark variant {variant!r}")
        if stateful:
            spec = dataclasses.replace(spec, stateful=True)
        layer = layer or layer_from(spec, weights, self.name)
        x = self.to_engine(inputs)
        xla = variant == "xla"

        @tf.function(jit_compile=xla)
        def forward():
            return layer(x, training=False)

        @tf.function(jit_compile=xla)
        def train():
            with tf.GradientTape() as tape:
                out = layer(x, training=True)
                loss = tf.reduce_sum(out[0] if isinstance(out, list) else out)
            return tape.gradient(loss, layer.trainable_weights)

        def run_forward():
            return forward().numpy()

        def run_train():
            return [g.numpy() for g in train()]

        if stateful:  # an eager first call makes the state variables outside the trace
            layer(x, training=False)
            return run_forward, None
        return run_forward, run_train

    def versions(self):
        import keras

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def threads(self):
        return {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }

    def cell_gradients(self, layer, inputs, *, mask, initial_state, cotangents):
        x = tf.constant(inputs)
        states = None if initial_state is None else [tf.constant(s) for s in initial_state]
        weights = list(layer.trainable_weights)
        if len(weights) != len(layer.weight_names):
            raise ValueError(
                f"{layer.name}: {len(weights)} trainable weights for the cell's "
                f"{len(layer.weight_names)} ({', '.join(layer.weight_names)})"
            )
        with tf.GradientTape() as tape:
            tape.watch([x, *(states or [])])
            mask_t = None if mask is None else tf.constant(mask)
            result = listed(layer(x, mask=mask_t, initial_state=states, training=False))
            loss = tf.add_n([tf.reduce_sum(r * c) for r, c in zip(result, cotangents, strict=True)])
        leaves = [x, *(states or []), *weights]
        grads = tape.gradient(loss, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return named_gradients([np.asarray(g) for g in grads], layer.weight_names, initial_state)


ADAPTER = TensorFlowAdapter
