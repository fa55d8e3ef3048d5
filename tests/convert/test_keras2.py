"""Legacy Keras HDF5 files: real files written by Keras 2 itself (tf-keras, in a process of
its own: tests/convert/keras2_files.py) compared with tf-keras's own outputs; Keras 2
layouts written with h5py (CuDNN layers, which tf-keras cannot create on a CPU, and broken
files); and real files written by Keras 3's legacy writer."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from multirnn import convert, engines, to_numpy  # noqa: E402
from multirnn.convert import ConversionError  # noqa: E402
from multirnn.reference import kernels as reference  # noqa: E402

F, H = 3, 4


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def write(path, layers, *, config=True, version="2.2.4", model_weights=True):
    """layers: (name, class_name, config, [(weight_name, array), ...])"""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_weights else f
        root.attrs["layer_names"] = [n.encode() for n, *_ in layers]
        root.attrs["keras_version"] = version.encode()
        root.attrs["backend"] = b"tensorflow"
        for name, _, _, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for w, value in weights:
                group.create_dataset(w, data=value)
        if config:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
                "name": "sequential_1",
                "layers": [{"class_name": c, "config": {"name": n, **cfg}}
                           for n, c, cfg, _ in layers]}}).encode()  # fmt: skip


def rng(seed):
    return np.random.default_rng(seed)


def test_keras2_lstm_gru_and_dense_file(tmp_path):
    r = rng(0)
    lstm = [r.standard_normal(s) * 0.5 for s in ((F, 4 * H), (H, 4 * H), (4 * H,))]
    gru = [r.standard_normal(s) * 0.5 for s in ((H, 3 * H), (H, 3 * H), (3 * H,))]
    dense = [r.standard_normal((H, 2)), np.zeros(2)]
    path = tmp_path / "model.h5"
    write(path, [
        ("lstm_1", "LSTM", {"units": H, "activation": "tanh", "recurrent_activation":
                            "hard_sigmoid", "return_sequences": True, "use_bias": True},
         list(zip(["lstm_1/kernel:0", "lstm_1/recurrent_kernel:0", "lstm_1/bias:0"], lstm))),
        ("gru_1", "GRU", {"units": H, "activation": "tanh", "recurrent_activation":
                          "sigmoid", "reset_after": False, "go_backwards": True},
         list(zip(["gru_1/kernel:0", "gru_1/recurrent_kernel:0", "gru_1/bias:0"], gru))),
        ("dense_1", "Dense", {"units": 2},
         list(zip(["dense_1/kernel:0", "dense_1/bias:0"], dense))),
    ])  # fmt: skip
    layers = convert.from_keras2_h5(path, backend="numpy")
    assert list(layers) == ["lstm_1", "gru_1"]
    lstm_layer, gru_layer = layers.values()
    assert lstm_layer.spec.recurrent_activation == "hard_sigmoid"  # Keras 2's: slope 0.2
    assert lstm_layer.spec.return_sequences and gru_layer.spec.go_backwards
    assert not gru_layer.spec.reset_after
    for layer, weights in ((lstm_layer, lstm), (gru_layer, gru)):
        for a, b in zip(layer.get_weights(), weights):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ConversionError, match="is a Dense, not a recurrent layer"):
        convert.from_keras2_h5(path, backend="numpy", layers=["dense_1"])
    with pytest.raises(ConversionError, match="has no layer 'lstm_9'"):
        convert.from_keras2_h5(path, backend="numpy", layers=["lstm_9"])
    with pytest.raises(ConversionError, match="contradicts the file"):
        convert.from_keras2_h5(path, backend="numpy", layers=["lstm_1"],
                               recurrent_activation="sigmoid")  # fmt: skip


def cudnn_run(kind, W, R, bw, br, x):
    """cuDNN's equations with per-gate (units, in) matrices; LSTM gates i, f, c, o and GRU
    z, r, h (the order CuDNN layers store them in Keras files)."""
    h = np.zeros((x.shape[0], H))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        xi = [x[:, t] @ w.T + b for w, b in zip(W, bw)]
        hi = [h @ r.T + b for r, b in zip(R, br)]
        if kind == "LSTM":
            i, f, o = sigmoid(xi[0] + hi[0]), sigmoid(xi[1] + hi[1]), sigmoid(xi[3] + hi[3])
            c = f * c + i * np.tanh(xi[2] + hi[2])
            h = o * np.tanh(c)
        else:
            z, r = sigmoid(xi[0] + hi[0]), sigmoid(xi[1] + hi[1])
            h = z * h + (1 - z) * np.tanh(xi[2] + r * hi[2])
        outs.append(h)
    return np.stack(outs, axis=1)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cudnn_layer_weights_are_converted(tmp_path, kind):
    g = 4 if kind == "LSTM" else 3
    r = rng(1)
    W = [r.standard_normal((H, F)) * 0.5 for _ in range(g)]
    R = [r.standard_normal((H, H)) * 0.5 for _ in range(g)]
    bw, br = [r.standard_normal(H) * 0.5 for _ in range(g)], [r.standard_normal(H) * 0.5
                                                              for _ in range(g)]  # fmt: skip
    # what a CuDNN layer stores: each block is cuDNN's row-major buffer in an (in, units) array
    kernel = np.concatenate([w.reshape(-1).reshape(F, H) for w in W], axis=1)
    recurrent = np.concatenate(R, axis=1)
    bias = np.concatenate(bw + br)
    name = f"cu_dnn{kind.lower()}_1"
    path = tmp_path / "cudnn.h5"
    write(path, [(name, f"CuDNN{kind}", {"units": H, "return_sequences": True},
                  list(zip([f"{name}/kernel:0", f"{name}/recurrent_kernel:0",
                            f"{name}/bias:0"], [kernel, recurrent, bias])))])  # fmt: skip
    (layer,) = convert.from_keras2_h5(path, backend="numpy").values()
    x = r.standard_normal((2, 5, F))
    np.testing.assert_allclose(layer(x), cudnn_run(kind, W, R, bw, br, x), atol=1e-12)
    assert layer.spec.recurrent_activation == "sigmoid"
    assert kind == "LSTM" or layer.spec.reset_after
    # a weights-only file (model.save_weights) names no class: the bias shape tells CuDNN
    weights_only = tmp_path / "cudnn_weights.h5"
    write(weights_only, [(name, f"CuDNN{kind}", {}, list(zip(
        [f"{name}/kernel:0", f"{name}/recurrent_kernel:0", f"{name}/bias:0"],
        [kernel, recurrent, bias])))], config=False, model_weights=False)  # fmt: skip
    (layer,) = convert.from_keras2_h5(weights_only, backend="numpy").values()
    np.testing.assert_allclose(layer(x), cudnn_run(kind, W, R, bw, br, x)[:, -1], atol=1e-12)


def test_weights_only_files_need_the_activations(tmp_path):
    r = rng(2)
    lstm = [r.standard_normal(s) for s in ((F, 4 * H), (H, 4 * H), (4 * H,))]
    path = tmp_path / "weights.h5"
    write(path, [("lstm", None, None, list(zip(["lstm/lstm_cell/kernel:0",
          "lstm/lstm_cell/recurrent_kernel:0", "lstm/lstm_cell/bias:0"], lstm)))],
          config=False, model_weights=False)  # fmt: skip
    with pytest.raises(ConversionError, match="holds weights only"):
        convert.from_keras2_h5(path, backend="numpy")
    layers = convert.from_keras2_h5(path, backend="numpy", activation="tanh",
                                    recurrent_activation="sigmoid")  # fmt: skip
    x = r.standard_normal((2, 3, F))
    want, _ = reference.forward(layers["lstm"].spec, lstm, x)
    np.testing.assert_allclose(layers["lstm"](x), want)


def test_files_that_are_not_keras_weights(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ConversionError, match="not a legacy Keras weights file"):
        convert.from_keras2_h5(path)
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ConversionError, match="not a readable HDF5 file"):
        convert.from_keras2_h5(tmp_path / "text.h5")
    bad = tmp_path / "bad.h5"
    write(bad, [("lstm_1", "LSTM", {"units": H}, [("k", np.zeros((F, 4 * H))),
                                                  ("r", np.zeros((H, 3 * H)))])])  # fmt: skip
    with pytest.raises(ConversionError, match="do not fit its class LSTM"):
        convert.from_keras2_h5(bad)


def test_a_file_written_by_keras3_means_keras3_hard_sigmoid(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((5, F)),
                              keras.layers.GRU(H, recurrent_activation="hard_sigmoid",
                                               return_sequences=True, name="gru")])  # fmt: skip
    path = tmp_path / "keras3.h5"
    model.save(path)
    (layer,) = convert.from_keras2_h5(path, backend="numpy").values()
    assert layer.spec.recurrent_activation == "hard_sigmoid_relu6" and layer.spec.reset_after
    x = rng(3).standard_normal((2, 5, F)).astype("float32")
    np.testing.assert_allclose(layer(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_a_bidirectional_layer_in_a_keras3_file(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((5, F)), keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True), merge_mode="sum", name="bi")])  # fmt: skip
    path = tmp_path / "bi.h5"
    model.save(path)
    layer = convert.from_keras2_h5(path, backend="numpy")["bi"]
    assert layer.merge_mode == "sum"
    x = rng(4).standard_normal((2, 5, F)).astype("float32")
    np.testing.assert_allclose(layer(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


# -- broken and unclear files: ConversionError naming the file and the key ----------------


def zeros(name, gates, bias=None):
    """(weight name, array) of a layer's kernel, recurrent_kernel and optional bias."""
    arrays = [(f"{name}/kernel:0", np.zeros((F, gates * H))),
              (f"{name}/recurrent_kernel:0", np.zeros((H, gates * H)))]  # fmt: skip
    return arrays if bias is None else [*arrays, (f"{name}/bias:0", np.zeros(bias))]


def _with_model_config(tmp_path, value):
    path = tmp_path / "model.h5"
    write(path, [("gru", "GRU", {"units": H}, zeros("gru", 3))])
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = value
    return path


@pytest.mark.parametrize(
    "value,reason",
    [
        ('"just a string"', "is not a Keras model config"),
        ("[1, 2]", "is not a Keras model config"),
        ('{"class_name": "Sequential", "config": "oops"}', "is not a Keras model config"),
        ("{not json", "is not valid JSON"),
        (
            '{"class_name": "Sequential", "config": {"layers": [1]}}',
            "is not a Keras model config: the layers",
        ),
    ],
    ids=["string", "list", "config-string", "invalid-json", "layers-not-dicts"],
)
def test_a_broken_model_config_names_the_file_and_the_attribute(tmp_path, value, reason):
    path = _with_model_config(tmp_path, value)
    with pytest.raises(ConversionError, match=rf"model\.h5: attribute 'model_config' {reason}"):
        convert.from_keras2_h5(path, backend="numpy")


def test_missing_groups_and_datasets_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "weights.h5"
    write(path, [("lstm", None, None, zeros("lstm/lstm_cell", 4))], config=False)
    with h5py.File(path, "a") as f:
        del f["model_weights/lstm/lstm/lstm_cell/recurrent_kernel:0"]
    with pytest.raises(
        ConversionError,
        match=r"weights\.h5: layer 'lstm' lists "
        r"'lstm/lstm_cell/recurrent_kernel:0' in 'weight_names', but",
    ):
        convert.from_keras2_h5(path, activation="tanh", recurrent_activation="sigmoid")
    with h5py.File(path, "a") as f:
        f["model_weights"].attrs["layer_names"] = [b"gone"]
    with pytest.raises(ConversionError, match=r"weights\.h5: 'layer_names' lists 'gone', but"):
        convert.from_keras2_h5(path)


def test_a_keras3_weights_file_is_refused_with_a_hint(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((5, F)), keras.layers.GRU(H)])
    model.save_weights(tmp_path / "model.weights.h5")
    with pytest.raises(ConversionError, match="'.weights.h5' file: load it into"):
        convert.from_keras2_h5(tmp_path / "model.weights.h5")


def test_a_config_that_contradicts_the_weights_is_refused(tmp_path):
    path = tmp_path / "model.h5"
    write(path, [("gru", "GRU", {"units": H, "reset_after": True}, zeros("gru", 3, 3 * H))])
    with pytest.raises(ConversionError, match="config says reset_after=True, but its weights"):
        convert.from_keras2_h5(path, backend="numpy")


def test_a_backward_layer_of_other_units_is_refused(tmp_path):
    path = tmp_path / "model.h5"
    backward = [("bi/backward_lstm/kernel:0", np.zeros((F, 8))),
                ("bi/backward_lstm/recurrent_kernel:0", np.zeros((2, 8)))]  # fmt: skip
    write(path, [("bi", "Bidirectional", {
        "layer": {"class_name": "LSTM", "config": {"units": H}}, "merge_mode": "concat",
        "backward_layer": {"class_name": "LSTM", "config": {"units": 2, "go_backwards": True}},
    }, zeros("bi/forward_lstm", 4) + backward)])  # fmt: skip
    with pytest.raises(ConversionError, match=r"not the forward layer run backwards \(differs "
                       r"in units\)"):  # fmt: skip
        convert.from_keras2_h5(path, backend="numpy")


# -- real Keras 2 files, written by tf-keras ------------------------------------------------

HERE = Path(__file__).parent
#: float32 Keras against multirnn: about 1e-5 relative
TOL = {"rtol": 1e-5, "atol": 2e-6}


class Files:
    """The files keras2_files.py wrote, and tf-keras's inputs and outputs."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.manifest = json.loads((directory / "manifest.json").read_text())
        with np.load(directory / "expected.npz") as arrays:
            self.arrays = dict(arrays)

    def path(self, stem: str) -> Path:
        return self.dir / f"{stem}.h5"

    def check(self, stem: str, name: str, layer) -> int:
        """``layer`` computes what tf-keras's layer computed, call after call (a stateful
        layer's states carry over); returns the number of arrays compared."""
        n = 0
        for x, mask, outputs in self.manifest[stem][name]:
            kwargs = {} if mask is None else {"mask": self.arrays[mask]}
            got = layer(self.arrays[x], training=False, **kwargs)  # torch: train mode
            got = got if isinstance(got, (list, tuple)) else [got]
            assert len(got) == len(outputs), f"{name}: {len(got)} outputs, Keras {len(outputs)}"
            for g, key in zip(got, outputs):
                np.testing.assert_allclose(
                    to_numpy(g), self.arrays[key], **TOL, err_msg=f"{stem} {name} {key}"
                )
                n += 1
        return n


def _generate(directory: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run(
        [sys.executable, str(HERE / "keras2_files.py"), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"keras2_files.py failed:\n{done.stderr[-4000:]}")


@pytest.fixture(scope="session")
def keras2(tmp_path_factory) -> Files:
    """Every file, written once per test run: under pytest-xdist the first worker writes
    them and the others wait for it."""
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip(
            "real Keras 2 files need tf-keras (the Keras 2 package): pip install "
            "--no-deps tf-keras==2.21.0 beside tensorflow"
        )
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "keras2_files"
    else:
        shared = tmp_path_factory.mktemp("run") / "keras2_files"
    done, failed = shared.with_suffix(".done"), shared.with_suffix(".failed")
    try:
        os.close(os.open(shared.with_suffix(".lock"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:  # another worker writes them
        deadline = time.monotonic() + 600
        while not (done.exists() or failed.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        try:
            _generate(shared)
        except Exception as exc:
            failed.write_text(str(exc))
            raise
        done.touch()
    if failed.exists():
        raise RuntimeError(failed.read_text())
    return Files(shared)


def _framework() -> str | None:
    available = engines.available()
    return next((n for n in ("torch", "jax", "tensorflow") if n in available), None)


@pytest.fixture(params=["numpy", "framework"])
def engine(request) -> str:
    """The NumPy engine, and one framework engine (the first installed)."""
    if request.param == "numpy":
        return "numpy"
    name = _framework()
    if name is None:
        pytest.skip("no framework engine installed")
    return name


#: the cells model of keras2_files.py: what a weights-only reader must be told per layer
CELLS = {
    "rnn_bias": {"activation": "tanh"},
    "rnn_nobias": {"activation": "relu"},
    "lstm_bias": {},
    "lstm_nobias": {"return_state": True},
    "gru_after_bias": {},
    "gru_after_nobias": {"reset_after": True},
    "gru_before_bias": {"go_backwards": True},
    "gru_before_nobias": {"reset_after": False, "return_state": True, "return_sequences": False},
    "lstm_softmax": {"activation": "softmax", "recurrent_activation": "hard_sigmoid"},
    "gru_exp": {
        "activation": "exponential",
        "recurrent_activation": "softsign",
        "return_sequences": False,
    },
    "rnn_exp": {"activation": "exponential", "return_sequences": False},
    "rnn_softmax": {"activation": "softmax", "go_backwards": True},
    "lstm_dropout": {"activation": "elu"},
    "gru_f64": {},
    "rnn_of_lstm_cell": {},
    "rnn_of_gru_cell": {"activation": "relu", "go_backwards": True, "return_sequences": False},
}


def test_every_cell_full_model_file(keras2, engine):
    layers = convert.from_keras2_h5(keras2.path("cells"), backend=engine)
    assert list(layers) == list(CELLS)
    for name, layer in layers.items():
        keras2.check("cells", name, layer)
    # regression: reset_after came from the bias shape only, so a bias-free GRU lost it
    assert layers["gru_after_nobias"].spec.reset_after
    assert not layers["gru_before_nobias"].spec.reset_after
    assert layers["lstm_softmax"].spec.recurrent_activation == "hard_sigmoid"  # slope 0.2
    assert layers["lstm_dropout"].spec.dropout == 0.3 and layers["gru_f64"].spec.dtype == "float64"


def test_every_cell_weights_only_file(keras2):
    path = keras2.path("cells_weights")
    for name, told in CELLS.items():
        kwargs = {
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
            "return_sequences": True,
            **told,
        }
        (layer,) = convert.from_keras2_h5(path, backend="numpy", layers=[name], **kwargs).values()
        keras2.check("cells", name, layer)
    with pytest.raises(
        ConversionError,
        match="'gru_after_nobias'.*no bias, so reset_after is unknown.*pass reset_after=",
    ):
        convert.from_keras2_h5(
            path,
            backend="numpy",
            layers=["gru_after_nobias"],
            activation="tanh",
            recurrent_activation="sigmoid",
        )
    with pytest.raises(ConversionError, match="'gru_before_bias': reset_after=True contradicts"):
        convert.from_keras2_h5(
            path,
            backend="numpy",
            layers=["gru_before_bias"],
            activation="tanh",
            recurrent_activation="sigmoid",
            reset_after=True,
        )


def test_bidirectional_every_merge_mode(keras2, engine):
    layers = convert.from_keras2_h5(keras2.path("bidirectional"), backend=engine)
    assert {name: layer.merge_mode for name, layer in layers.items()} == {
        "bi_concat": "concat",
        "bi_sum": "sum",
        "bi_mul": "mul",
        "bi_ave": "ave",
        "bi_none": None,
        "bi_state": "concat",
        "bi_custom_same": "concat",
        "bi_gru_nobias": "ave",
    }
    for name, layer in layers.items():
        keras2.check("bidirectional", name, layer)


def test_bidirectional_weights_only(keras2):
    """Regression: a weights-only Bidirectional came back as {} even when named."""
    path = keras2.path("bidirectional_weights")
    told = {
        "bi_concat": ("concat", {}),
        "bi_sum": ("sum", {}),
        "bi_mul": ("mul", {}),
        "bi_ave": ("ave", {"return_sequences": False}),
        "bi_none": (None, {}),
        "bi_state": ("concat", {"return_state": True, "return_sequences": False}),
        "bi_custom_same": ("concat", {}),
        "bi_gru_nobias": ("ave", {"reset_after": True}),
    }
    for name, (merge_mode, kwargs) in told.items():
        kwargs = {
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
            "return_sequences": True,
            **kwargs,
        }
        layers = convert.from_keras2_h5(
            path, backend="numpy", layers=[name], merge_mode=merge_mode, **kwargs
        )
        keras2.check("bidirectional", name, layers[name])
    with pytest.raises(
        ConversionError,
        match="'bi_sum': this file holds weights only, so the "
        "merge mode is unknown; pass merge_mode=",
    ):
        convert.from_keras2_h5(
            path, layers=["bi_sum"], activation="tanh", recurrent_activation="sigmoid"
        )


def test_refused_forms_name_the_option(keras2):
    path = keras2.path("refused")
    refusals = {
        # regression: converted with the forward layer's config
        "bi_custom_relu": "has a backward_layer that is not the forward layer run backwards "
        r"\(differs in activation\)",
        "gru_swish": "activation='swish' has no multirnn equivalent",
        "rnn_stacked": "is an RNN of 'StackedRNNCells', not a recurrent layer",
        # regression: converted as a batch-major layer
        "lstm_time_major": r"time_major=True: it takes \(time, batch, features\) inputs.*Pass "
        "ignore_time_major=True",
    }
    for name, reason in refusals.items():
        with pytest.raises(ConversionError, match=f"'{name}'.*{reason}"):
            convert.from_keras2_h5(path, backend="numpy", layers=[name])
    with pytest.raises(ConversionError, match=r"pick the other layers with layers=\[\.\.\.\]"):
        convert.from_keras2_h5(path, backend="numpy")


def test_a_mixed_precision_layer_converts_with_its_policy(keras2):
    """tf-keras's ``mixed_float16`` LSTM: float32 weights in the file, float16 computation.
    tf-keras rounds at every step where multirnn computes in float32 (multirnn.precision):
    the results agree within a few float16 units in the last place."""
    (layer,) = convert.from_keras2_h5(
        keras2.path("refused"), backend="numpy", layers=["lstm_mixed"]
    ).values()
    assert layer.spec.dtype == "mixed_float16" and layer.kernel.dtype == np.float32
    ((x, _, (y,)),) = keras2.manifest["refused"]["lstm_mixed"]
    got, want = layer(keras2.arrays[x]), keras2.arrays[y]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want, atol=2e-3, rtol=2e-3)


def test_time_major_converts_when_asked_on_transposed_inputs(keras2):
    (layer,) = convert.from_keras2_h5(
        keras2.path("refused"), backend="numpy", layers=["lstm_time_major"], ignore_time_major=True
    ).values()
    ((x, _, (y,)),) = keras2.manifest["refused"]["lstm_time_major"]
    got = layer(np.swapaxes(keras2.arrays[x], 0, 1))  # (time, batch, f) -> (batch, time, f)
    np.testing.assert_allclose(np.swapaxes(got, 0, 1), keras2.arrays[y], **TOL)


def test_regularizers_and_constraints_follow_from_keras(keras2, engine):
    """Regression: they were dropped silently; from_keras refuses them unless asked."""
    path = keras2.path("training")
    for name, used in {
        "lstm_l2": "kernel_regularizer",
        "gru_maxnorm": "recurrent_constraint",
        "rnn_l1": "activity_regularizer, bias_constraint",
        "bi_l1l2": "bias_regularizer",
    }.items():
        with pytest.raises(
            ConversionError, match=f"'{name}' uses {used};.*Pass ignore_training_options=True"
        ):
            convert.from_keras2_h5(path, backend=engine, layers=[name])
    layers = convert.from_keras2_h5(path, backend=engine, ignore_training_options=True)
    assert len(layers) == 4
    for name, layer in layers.items():
        keras2.check("training", name, layer)


def test_stateful_layers_carry_their_states(keras2, engine):
    layers = convert.from_keras2_h5(keras2.path("stateful"), backend=engine)
    assert list(layers) == ["lstm_stateful", "gru_stateful", "bi_stateful"]
    for name, layer in layers.items():
        assert keras2.check("stateful", name, layer) >= 2  # two calls, states carried over


def test_mask_producing_layers_are_skipped_and_their_mask_passed_explicitly(keras2, engine):
    """Embedding(mask_zero=True) and Masking are not converted; the recurrent layers given
    the mask those layers make reproduce the whole Keras model."""
    layers = convert.from_keras2_h5(keras2.path("masking"), backend=engine)
    assert list(layers) == ["lstm_masked", "bi_masked", "gru_masked", "rnn_masked"]
    (tokens, values), outs = keras2.manifest["model:masking"]
    tokens, values = keras2.arrays[tokens], keras2.arrays[values]
    with h5py.File(keras2.path("masking")) as f:
        table = np.asarray(f["model_weights/embedding/embedding/embeddings:0"])
    embedded, token_mask = table[tokens], tokens != 0
    value_mask = np.any(values != 0.0, axis=-1)  # Masking(mask_value=0.0)
    calls = [
        ("lstm_masked", embedded, token_mask),
        ("bi_masked", embedded, token_mask),
        ("gru_masked", values, value_mask),
        ("rnn_masked", values, value_mask),
    ]
    for (name, x, mask), out in zip(calls, outs):
        got = to_numpy(layers[name](x, mask=mask))
        np.testing.assert_allclose(got, keras2.arrays[out], **TOL, err_msg=name)
    assert not np.allclose(to_numpy(layers["lstm_masked"](embedded)), keras2.arrays[outs[0]])


def test_a_nested_model_and_the_top_level_layers(keras2, engine):
    """Regression: the nested model failed the whole file ("weights only")."""
    layers = convert.from_keras2_h5(keras2.path("nested"), backend=engine)
    assert list(layers) == ["inner/lstm_inner", "inner/gru_frozen", "inner/bi_inner", "gru_top"]
    for name, layer in layers.items():
        keras2.check("nested", name, layer)
    with pytest.raises(ConversionError, match="'inner/bn_inner' is a BatchNormalization"):
        convert.from_keras2_h5(keras2.path("nested"), layers=["inner/bn_inner"])


def test_a_nested_model_in_a_weights_only_file(keras2):
    path = keras2.path("nested_weights")
    kwargs = {
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "return_sequences": True,
        "merge_mode": "sum",
    }
    layers = convert.from_keras2_h5(path, backend="numpy", **kwargs)
    # the group lists the nested model's trainable weights first, then the rest (the
    # frozen GRU's after BatchNormalization's moving statistics): split by weight name
    assert list(layers) == ["inner/lstm_inner", "inner/bi_inner", "inner/gru_frozen", "gru_top"]
    for name, layer in layers.items():
        if name != "gru_top":
            keras2.check("nested", name, layer)
    (top,) = convert.from_keras2_h5(
        path, backend="numpy", layers=["gru_top"], activation="tanh", recurrent_activation="sigmoid"
    ).values()
    keras2.check("nested", "gru_top", top)


@pytest.mark.parametrize("stem", ["mixed", "mixed_weights"])
def test_other_layers_are_skipped_never_misread(keras2, stem):
    """Regressions: in a weights-only file a Dense, TimeDistributed(Dense), Conv1D or
    BatchNormalization group was read as a recurrent layer (IndexError), and
    recurrent_activation= reached the SimpleRNN (TypeError)."""
    kwargs = {}
    if stem == "mixed_weights":  # as docs/porting.md says: the activations for every layer
        kwargs = {"activation": "tanh", "recurrent_activation": "sigmoid"}
    layers = convert.from_keras2_h5(keras2.path(stem), backend="numpy", **kwargs)
    assert list(layers) == ["lstm", "simple_rnn", "gru"]
    if stem == "mixed_weights":  # the sequence options are not in the file either
        for name in ("lstm", "simple_rnn"):
            layers[name] = convert.from_keras2_h5(keras2.path(stem), backend="numpy",
                                                  layers=[name], return_sequences=True,
                                                  **kwargs)[name]  # fmt: skip
    for name, layer in layers.items():
        keras2.check("mixed", name, layer)
    for other in ("conv1d", "bn_noscale", "time_distributed", "bn_bare", "dense"):
        with pytest.raises(ConversionError, match=f"'{other}' .*not a recurrent layer"):
            convert.from_keras2_h5(keras2.path(stem), layers=[other], **kwargs)
