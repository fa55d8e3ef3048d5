"""Configs through JSON and layers through safetensors files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import multirnn

from .cases import VARIANTS, variant_id

RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def _numpy_engine():
    """These tests feed NumPy arrays; cross-engine files are tested per engine."""
    multirnn.set_backend("numpy")


def make(variant, **kwargs):
    layer, extra = variant
    return getattr(multirnn, layer)(3, **extra, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_from_config_round_trip_through_json(variant):
    layer = make(
        variant,
        activation="softsign",
        kernel_regularizer="l2",
        recurrent_constraint="unit_norm",
        return_sequences=True,
        seed=1,
        dtype="float32",
    )
    text = json.dumps(layer.get_config())
    again = multirnn.from_config(json.loads(text))
    assert type(again) is type(layer) and again.spec == layer.spec
    assert json.dumps(again.get_config()) == text


def test_from_config_names_the_problem():
    with pytest.raises(ValueError, match="needs a 'layer' key"):
        multirnn.from_config({"units": 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'unitz'"):
        multirnn.from_config({"layer": "GRU", "unitz": 3})
    with pytest.raises(multirnn.UnknownEngineError):
        multirnn.from_config({"layer": "GRU", "units": 3}, backend="nope")


def test_callable_layers_cannot_be_serialized(tmp_path):
    layer = multirnn.SimpleRNN(2, activation=np.sin, input_dim=2)
    with pytest.raises(TypeError, match="activation is the Python callable"):
        layer.get_config()
    with pytest.raises(TypeError, match="cannot be serialized"):
        multirnn.save(layer, tmp_path / "x.safetensors")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_save_load_computes_the_same_function(variant, tmp_path):
    layer = make(variant, return_sequences=True, go_backwards=True)
    x = RNG.standard_normal((2, 5, 4))
    want = layer(x)
    path = tmp_path / "layer.safetensors"
    multirnn.save(layer, path)
    loaded = multirnn.load(path, backend="numpy")
    assert loaded.spec == layer.spec
    np.testing.assert_array_equal(loaded(x), want)
    for a, b in zip(loaded.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_float32_layer_saves_float32_and_load_can_override_the_dtype(tmp_path):
    layer = multirnn.LSTM(2, dtype="float32", input_dim=3)
    multirnn.save(layer, tmp_path / "l.safetensors")
    loaded = multirnn.load(tmp_path / "l.safetensors")
    assert loaded.kernel.dtype == np.float32
    assert multirnn.load(tmp_path / "l.safetensors", dtype="float64").kernel.dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be None"):
        multirnn.load(tmp_path / "l.safetensors", dtype="float16")


def test_save_unbuilt_and_load_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="has no weights yet"):
        multirnn.save(multirnn.GRU(2), tmp_path / "a.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(2)}, str(other), metadata={"format": "np"})
    with pytest.raises(ValueError, match="not a multirnn layer"):
        multirnn.load(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        multirnn.load(garbage)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        multirnn.load(tmp_path / "missing.safetensors")


def test_load_rejects_tensors_that_do_not_match_the_config(tmp_path):
    layer = multirnn.LSTM(2, input_dim=3)
    path = tmp_path / "l.safetensors"
    multirnn.save(layer, path)
    config = multirnn.LSTM(2, use_bias=False).get_config()
    meta = {"multirnn.format": "multirnn.layer/1", "multirnn.config": json.dumps(config)}
    save_file(
        dict(zip(("kernel", "recurrent_kernel", "bias"), layer.get_weights())), str(path), meta
    )
    with pytest.raises(ValueError, match="holds tensors .* but its config needs"):
        multirnn.load(path)
