"""Writes real Keras 2 HDF5 files with tf-keras (the Keras 2 package), and what tf-keras's
own layers compute on fixed inputs, for tests/convert/test_keras2.py.

Run as ``python keras2_files.py OUTDIR`` (the tests run it once per session, in a process of
its own, so that the test process never imports tf_keras). It writes, in OUTDIR:

- ``<stem>.h5`` (``model.save``) and ``<stem>_weights.h5`` (``model.save_weights``) for every
  model below;
- ``expected.npz``: inputs, masks and tf-keras's outputs, by key;
- ``manifest.json``: ``{stem: {layer path: [[input key, mask key or null, [output keys]],
  ...]}}``, one entry per call (two for a stateful layer: its states carry over), and
  ``{"model:<stem>": [input keys, output keys]}`` for whole models (mask-producing layers).

The layer path is the key ``from_keras2_h5`` gives the layer (``outer/inner`` for a layer of
a nested model). Weights are random (not Keras's initial values), so biases are nonzero.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tf_keras as keras

L = keras.layers
B, T, F, U = 3, 6, 4, 5  # batch, time, features, units


class Recorder:
    def __init__(self, outdir: str):
        self.outdir = outdir
        self.arrays: dict[str, np.ndarray] = {}
        self.manifest: dict[str, dict] = {}
        self.rng = np.random.default_rng(0)

    def array(self, key: str, value) -> str:
        self.arrays[key] = np.asarray(value)
        return key

    def randomize(self, model, scale=0.4):
        """Random weights (nonzero biases), positive variances for BatchNormalization."""
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                self.randomize(layer, scale)
                continue
            values = []
            for w in layer.weights:
                value = self.rng.standard_normal(w.shape) * scale
                if "variance" in w.name:
                    value = np.abs(value) + 0.5
                values.append(value.astype(w.dtype.as_numpy_dtype))
            layer.set_weights(values)

    def save(self, stem: str, model, weights_only_too: bool = True):
        model.save(os.path.join(self.outdir, f"{stem}.h5"))
        if weights_only_too:
            model.save_weights(os.path.join(self.outdir, f"{stem}_weights.h5"))

    def call(self, stem: str, path: str, layer, x, mask=None, *, time_major=False, tag=""):
        """Record ``layer(x, mask=mask)`` called eagerly (tf-keras's own computation)."""
        key = f"{stem}/{path}{tag}"
        kwargs = {} if mask is None else {"mask": mask}
        out = layer(x, **kwargs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        entry = [
            self.array(f"{key}/x", x),
            None if mask is None else self.array(f"{key}/mask", mask),
            [self.array(f"{key}/y{k}", np.asarray(o)) for k, o in enumerate(outs)],
        ]
        self.manifest.setdefault(stem, {}).setdefault(path, []).append(entry)

    def x(self, features=F, *, batch=B, time=T, dtype="float32"):
        return self.rng.standard_normal((batch, time, features)).astype(dtype)

    def finish(self):
        np.savez(os.path.join(self.outdir, "expected.npz"), **self.arrays)
        with open(os.path.join(self.outdir, "manifest.json"), "w") as f:
            json.dump(self.manifest, f, indent=1)


def every_cell(r: Recorder):
    """Every cell x use_bias (x reset_after for the GRU), non-default activations, options,
    RNN(cell): one functional model whose branches all read the input."""
    layers = [
        L.SimpleRNN(U, return_sequences=True, name="rnn_bias"),
        L.SimpleRNN(U, use_bias=False, activation="relu", return_sequences=True, name="rnn_nobias"),
        L.LSTM(U, return_sequences=True, name="lstm_bias"),
        L.LSTM(U, use_bias=False, return_sequences=True, return_state=True, name="lstm_nobias"),
        L.GRU(U, reset_after=True, return_sequences=True, name="gru_after_bias"),
        L.GRU(U, reset_after=True, use_bias=False, return_sequences=True, name="gru_after_nobias"),
        L.GRU(
            U, reset_after=False, go_backwards=True, return_sequences=True, name="gru_before_bias"
        ),
        L.GRU(U, reset_after=False, use_bias=False, return_state=True, name="gru_before_nobias"),
        L.LSTM(
            U,
            activation="softmax",
            recurrent_activation="hard_sigmoid",
            return_sequences=True,
            name="lstm_softmax",
        ),
        L.GRU(U, activation="exponential", recurrent_activation="softsign", name="gru_exp"),
        L.SimpleRNN(U, activation="exponential", name="rnn_exp"),
        L.SimpleRNN(
            U, activation="softmax", go_backwards=True, return_sequences=True, name="rnn_softmax"
        ),
        L.LSTM(
            U,
            activation="elu",
            recurrent_activation="sigmoid",
            dropout=0.3,
            recurrent_dropout=0.2,
            unroll=True,
            return_sequences=True,
            name="lstm_dropout",
        ),
        L.GRU(U, dtype="float64", return_sequences=True, name="gru_f64"),
        L.RNN(L.LSTMCell(U), return_sequences=True, name="rnn_of_lstm_cell"),
        L.RNN(
            L.GRUCell(U, activation="relu", reset_after=False),
            go_backwards=True,
            name="rnn_of_gru_cell",
        ),
    ]
    inp = keras.Input((T, F))
    model = keras.Model(inp, [layer(inp) for layer in layers])
    r.randomize(model, scale=0.3)
    r.save("cells", model)
    x = r.x()
    for layer in layers:
        r.call("cells", layer.name, layer, x.astype(layer.dtype))


def bidirectional(r: Recorder):
    """Bidirectional in every merge mode, with states, and with custom backward layers."""
    wrappers = [
        L.Bidirectional(L.LSTM(U, return_sequences=True), name="bi_concat"),
        L.Bidirectional(L.GRU(U, return_sequences=True), merge_mode="sum", name="bi_sum"),
        L.Bidirectional(L.SimpleRNN(U, return_sequences=True), merge_mode="mul", name="bi_mul"),
        L.Bidirectional(L.GRU(U, reset_after=False), merge_mode="ave", name="bi_ave"),
        L.Bidirectional(L.LSTM(U, return_sequences=True), merge_mode=None, name="bi_none"),
        L.Bidirectional(L.GRU(U, return_state=True), name="bi_state"),
        L.Bidirectional(
            L.LSTM(U, return_sequences=True),
            backward_layer=L.LSTM(U, return_sequences=True, go_backwards=True),
            name="bi_custom_same",
        ),
        L.Bidirectional(
            L.GRU(U, use_bias=False, reset_after=True, return_sequences=True),
            merge_mode="ave",
            name="bi_gru_nobias",
        ),
    ]
    inp = keras.Input((T, F))
    model = keras.Model(inp, [w(inp) for w in wrappers])
    r.randomize(model)
    r.save("bidirectional", model)
    x = r.x()
    for w in wrappers:
        r.call("bidirectional", w.name, w, x)


def refused(r: Recorder):
    """Forms that have no exact multirnn equivalent, each in one layer of one model."""
    inp = keras.Input((T, F))
    layers = [
        L.Bidirectional(
            L.LSTM(U, return_sequences=True),
            backward_layer=L.LSTM(U, activation="relu", return_sequences=True, go_backwards=True),
            name="bi_custom_relu",
        ),
        L.GRU(U, activation="swish", name="gru_swish"),
        L.LSTM(U, dtype="mixed_float16", name="lstm_mixed"),
        L.RNN([L.LSTMCell(U), L.LSTMCell(U)], name="rnn_stacked"),
    ]
    outs = [layer(inp) for layer in layers]
    time_major = L.LSTM(U, time_major=True, return_sequences=True, name="lstm_time_major")
    outs.append(time_major(inp))  # Keras reads the input's first axis as time
    model = keras.Model(inp, outs)
    r.randomize(model)
    r.save("refused", model)
    r.call("refused", "lstm_time_major", time_major, r.x(batch=T, time=B))  # (time, batch, f)
    r.call("refused", "lstm_mixed", layers[2], r.x())  # float16 computation


def training_options(r: Recorder):
    """Regularizers and constraints: refused unless ignore_training_options=True."""
    layers = [
        L.LSTM(U, kernel_regularizer="l2", return_sequences=True, name="lstm_l2"),
        L.GRU(U, recurrent_constraint="max_norm", name="gru_maxnorm"),
        L.SimpleRNN(U, activity_regularizer="l1", bias_constraint="non_neg", name="rnn_l1"),
        L.Bidirectional(L.LSTM(U, bias_regularizer="l1_l2"), name="bi_l1l2"),
    ]
    inp = keras.Input((T, F))
    model = keras.Model(inp, [layer(inp) for layer in layers])
    r.randomize(model)
    r.save("training", model, weights_only_too=False)
    x = r.x()
    for layer in layers:
        r.call("training", layer.name, layer, x)


def stateful(r: Recorder):
    """Stateful layers (batch_input_shape): the states carry over from call to call."""
    inp = keras.Input(batch_shape=(B, None, F))
    lstm = L.LSTM(U, stateful=True, return_sequences=True, name="lstm_stateful")
    gru = L.GRU(U, stateful=True, return_state=True, name="gru_stateful")
    bi = L.Bidirectional(L.SimpleRNN(U, stateful=True, return_sequences=True), name="bi_stateful")
    model = keras.Model(inp, [*gru(lstm(inp)), bi(inp)])
    r.randomize(model)
    r.save("stateful", model)
    for layer in (lstm, bi):
        layer.reset_states()
        for k in range(2):
            r.call("stateful", layer.name, layer, r.x(), tag=f"/{k}")
    gru.reset_states()
    for k in range(2):
        r.call("stateful", gru.name, gru, r.x(U), tag=f"/{k}")


def masking(r: Recorder):
    """Embedding(mask_zero=True) and Masking before recurrent layers: the whole model's
    outputs, where Keras passes the mask on by itself."""
    tokens = keras.Input((T,), dtype="int32")
    values = keras.Input((T, F))
    emb = L.Embedding(10, F, mask_zero=True, name="embedding")(tokens)
    out_lstm = L.LSTM(U, return_sequences=True, name="lstm_masked")(emb)
    out_bi = L.Bidirectional(L.GRU(U, return_sequences=True), name="bi_masked")(emb)
    masked = L.Masking(mask_value=0.0, name="masking")(values)
    out_gru = L.GRU(U, name="gru_masked")(masked)
    out_rnn = L.SimpleRNN(U, return_sequences=True, go_backwards=True, name="rnn_masked")(masked)
    model = keras.Model([tokens, values], [out_lstm, out_bi, out_gru, out_rnn])
    r.randomize(model)
    r.save("masking", model)
    ids = r.rng.integers(1, 10, (B, T)).astype("int32")
    ids[1, 4:] = 0  # right padding
    ids[2, 2] = 0  # a masked step inside the sequence
    x = r.x()
    x[1, 3:] = 0.0
    x[0, 1] = 0.0
    outs = model([ids, x])
    r.manifest["model:masking"] = [
        [r.array("masking/tokens", ids), r.array("masking/values", x)],
        [r.array(f"masking/out{k}", np.asarray(o)) for k, o in enumerate(outs)],
    ]


def nested(r: Recorder):
    """A Sequential inside a functional Model, beside top-level layers; the nested model
    holds a non-recurrent layer with non-trainable weights and a frozen recurrent layer."""
    inner = keras.Sequential(
        [
            L.LSTM(U, return_sequences=True, name="lstm_inner"),
            L.BatchNormalization(name="bn_inner"),
            L.GRU(U, return_sequences=True, name="gru_frozen"),
            L.Bidirectional(
                L.SimpleRNN(U, return_sequences=True), merge_mode="sum", name="bi_inner"
            ),
        ],
        name="inner",
    )
    inner.get_layer("gru_frozen").trainable = False
    inp = keras.Input((T, F))
    top_gru = L.GRU(U, name="gru_top")
    y = L.Dense(2, name="dense_top")(top_gru(inner(inp)))
    model = keras.Model(inp, y)
    r.randomize(model)
    r.save("nested", model)
    r.call("nested", "gru_top", top_gru, r.x(U))
    r.call("nested", "inner/lstm_inner", inner.get_layer("lstm_inner"), r.x())
    r.call("nested", "inner/gru_frozen", inner.get_layer("gru_frozen"), r.x(U))
    r.call("nested", "inner/bi_inner", inner.get_layer("bi_inner"), r.x(U))


def other_layers(r: Recorder):
    """Recurrent layers mixed with Dense, TimeDistributed(Dense), Conv1D, BatchNormalization
    (with three and with two 1-D arrays): what a weights-only reader must not misread."""
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            L.Conv1D(F, 2, padding="same", name="conv1d"),
            L.BatchNormalization(scale=False, name="bn_noscale"),
            L.LSTM(U, return_sequences=True, name="lstm"),
            L.TimeDistributed(L.Dense(F), name="time_distributed"),
            L.BatchNormalization(center=False, scale=False, name="bn_bare"),
            L.SimpleRNN(U, return_sequences=True, name="simple_rnn"),
            L.GRU(U, name="gru"),
            L.Dense(2, name="dense"),
        ]
    )
    r.randomize(model)
    r.save("mixed", model)
    for name, features in (("lstm", F), ("simple_rnn", F), ("gru", U)):
        r.call("mixed", name, model.get_layer(name), r.x(features))


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    keras.utils.set_random_seed(0)
    r = Recorder(outdir)
    for build in (
        every_cell,
        bidirectional,
        refused,
        training_options,
        stateful,
        masking,
        nested,
        other_layers,
    ):
        build(r)
    r.manifest["keras_version"] = keras.__version__
    r.finish()


if __name__ == "__main__":
    main(sys.argv[1])
