"""Legacy Keras HDF5 files: Keras 2 layouts written with h5py exactly as Keras 2 lays them out
(CuDNN layers included), and a real file written by Keras 3's legacy writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from multirnn import convert  # noqa: E402
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
    with pytest.raises(ConversionError, match="not a Keras weights file"):
        convert.from_keras2_h5(path)
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ConversionError, match="not a readable HDF5 file"):
        convert.from_keras2_h5(tmp_path / "text.h5")
    bad = tmp_path / "bad.h5"
    write(bad, [("lstm_1", "LSTM", {"units": H}, [("k", np.zeros((F, 4 * H))),
                                                  ("r", np.zeros((H, 3 * H)))])])  # fmt: skip
    with pytest.raises(ConversionError, match="are not a recurrent layer's"):
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
