"""Layers that the converters and ``multirnn.load`` return are ready for inference: the same
script with no ``training=`` anywhere computes what the source model computes in inference,
on every engine (on PyTorch the layers come back in ``eval()`` mode)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

import multirnn
from multirnn import convert

h5py = pytest.importorskip("h5py")

#: real Keras 2 files from public projects, read in place (never copied into the checkout)
REAL = Path(
    os.environ.get("MULTIRNN_REAL_H5", Path(__file__).resolve().parents[3] / "shared" / "real_h5")
)
FILES = sorted(p.name for p in REAL.glob("*.h5")) if REAL.is_dir() else []
#: weights-only files (no config): how their repository's notebook built the layers
OPTIONS = {
    "SequencePredictionLSTM__lstm_model.h5": {
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    },
    "SequencePredictionLSTM__gru_model.h5": {
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    },
}
#: the files whose recurrent layers have dropout: there, a training call differs
DROPOUT = {"2018_nlp_mid_project__rnn_model.h5", "arabic-sentiment-analysis__lstm_model.h5"}


def _inputs(layer, seed: int = 0) -> np.ndarray:
    inner = getattr(layer, "forward_layer", layer)
    dtype = multirnn.to_numpy(inner.get_weights()[0]).dtype
    return np.random.default_rng(seed).standard_normal((2, 5, inner.input_dim)).astype(dtype)


def _training(eng) -> dict:
    """What a training call needs besides ``training=True`` on ``eng`` (JAX: a key)."""
    return getattr(eng.module, "training_kwargs", dict)()


@functools.cache
def _keras2_model(name: str):
    """The file's model as Keras 2 (tf-keras) loads it, or None for a weights-only file."""
    tf_keras = pytest.importorskip("tf_keras", reason="the Keras 2 reference needs tf-keras")
    with h5py.File(REAL / name, "r") as handle:
        if "model_config" not in handle.attrs:
            return None
    return tf_keras.models.load_model(REAL / name, compile=False)


@pytest.mark.skipif(not FILES, reason=f"the real Keras 2 files are not at {REAL}")
@pytest.mark.parametrize("name", FILES)
def test_real_keras2_files_convert_ready_for_inference(name, eng):
    layers = convert.from_keras2_h5(REAL / name, backend=eng.name, **OPTIONS.get(name, {}))
    assert layers, f"{name} holds no recurrent layer"
    for layer_name, layer in layers.items():
        x = _inputs(layer)
        got = multirnn.to_numpy(layer(x))  # no training= anywhere, as an inference script
        inference = multirnn.to_numpy(layer(x, training=False))
        np.testing.assert_allclose(got, inference, rtol=1e-6, atol=1e-6, err_msg=layer_name)
        if name in DROPOUT:  # the equality above is not dropout being off everywhere
            noisy = multirnn.to_numpy(layer(x, training=True, **_training(eng)))
            assert np.abs(noisy - inference).max() > 1e-3
        model = _keras2_model(name)
        if model is not None:
            want = np.asarray(model.get_layer(layer_name)(x))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=layer_name)


def test_a_loaded_dropout_layer_called_without_training_computes_inference(eng, tmp_path):
    source = multirnn.engine("numpy").LSTM(
        4, dropout=0.5, recurrent_dropout=0.5, return_sequences=True, seed=0, input_dim=3
    )
    path = tmp_path / "layer.safetensors"
    multirnn.save(source, path)
    layer = multirnn.load(path, backend=eng.name)
    x = (
        np.random.default_rng(1)
        .standard_normal((2, 6, 3))
        .astype(multirnn.to_numpy(layer.get_weights()[0]).dtype)
    )
    np.testing.assert_allclose(
        multirnn.to_numpy(layer(x)),
        multirnn.to_numpy(layer(x, training=False)),
        rtol=1e-6,
        atol=1e-6,
    )
    noisy = multirnn.to_numpy(layer(x, training=True, **_training(eng)))
    assert np.abs(noisy - multirnn.to_numpy(layer(x, training=False))).max() > 1e-3


def _from_keras3():
    keras = pytest.importorskip("keras")
    peer = keras.layers.Bidirectional(keras.layers.GRU(4, dropout=0.3))
    peer.build((None, None, 3))
    return convert.from_keras(peer, backend="torch")


def _from_flax():
    nnx = pytest.importorskip("flax.nnx")
    return convert.from_flax(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)), backend="torch")


CONVERTERS = {
    "from_torch": lambda torch: convert.from_torch(torch.nn.LSTM(3, 4), backend="torch"),
    "from_torch-bidirectional": lambda torch: convert.from_torch(
        torch.nn.GRU(3, 4, bidirectional=True), backend="torch"
    ),
    "from_keras": lambda torch: _from_keras3(),
    "from_flax": lambda torch: _from_flax(),
}


@pytest.mark.parametrize("convert_one", CONVERTERS.values(), ids=CONVERTERS.keys())
def test_converted_torch_layers_come_back_in_eval_mode(convert_one):
    torch = pytest.importorskip("torch")
    layer = convert_one(torch)  # torch modules, the sources here included, start in training
    assert not layer.training and not any(m.training for m in layer.modules())
    layer.train()  # the user's way back to training mode
    assert layer.training


def test_the_training_none_rule_reads_the_same_on_every_page():
    """One rule, written once in the same words wherever a user looks for it."""
    import re

    docs = Path(__file__).resolve().parents[2] / "docs"
    rules = {}
    for page in ("semantics.md", "torch.md", "jax.md", "tensorflow.md", "keras2.md"):
        text = (docs / page).read_text(encoding="utf-8")
        found = re.search(r"\*\*`training=None`\*\*.*?(?=\n\s*\n|\n[-*] )", text, re.S)
        assert found, f"docs/{page} does not state the training=None rule"
        rules[page] = " ".join(found.group(0).split())
    assert len(set(rules.values())) == 1, rules
    assert "eval()" in rules["semantics.md"]
