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


# -- Bidirectional, carried states, every engine ----------------------------------------------

ENGINES = ("numpy", "torch", "jax", "tensorflow")


def _installed(name):
    if name not in multirnn.engines.available():
        pytest.skip(f"{name} is not installed")
    return name


@pytest.mark.parametrize("source", ENGINES)
def test_bidirectional_and_carried_states_move_between_engines(source, tmp_path):
    _installed(source)
    x = RNG.standard_normal((2, 6, 4))
    inner = multirnn.engine(source).GRU(3, return_sequences=True, stateful=True, seed=0,
                                        dtype="float32" if source == "jax" else None)  # fmt: skip
    layer = multirnn.engine(source).Bidirectional(inner, merge_mode="sum")
    layer(x[:, :3])  # states now carried
    path = tmp_path / "b.safetensors"
    multirnn.save(layer, path)
    want = multirnn.to_numpy(layer(x[:, 3:]))  # the sequence continued
    for target in [e for e in ENGINES if e in multirnn.engines.available()]:
        loaded = multirnn.load(path, backend=target)
        assert type(loaded).__name__ == "Bidirectional" and loaded.merge_mode == "sum"
        got = multirnn.to_numpy(loaded(x[:, 3:]))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        fresh = multirnn.load(path, backend=target, states=False)
        assert fresh.states is None
    again = multirnn.from_config(json.loads(json.dumps(layer.get_config())), backend="numpy")
    assert again.spec == layer.spec


def test_states_can_be_left_out_of_a_file(tmp_path):
    layer = multirnn.LSTM(2, stateful=True, seed=0)
    layer(RNG.standard_normal((1, 3, 2)))
    multirnn.save(layer, tmp_path / "with.safetensors")
    multirnn.save(layer, tmp_path / "without.safetensors", states=False)
    with_states = multirnn.load(tmp_path / "with.safetensors")
    for a, b in zip(with_states.states, layer.states, strict=True):
        np.testing.assert_array_equal(a, b)
    assert multirnn.load(tmp_path / "without.safetensors").states is None


def _write(path, config_text, tensors=None):
    tensors = tensors or {"kernel": np.zeros((2, 8)), "recurrent_kernel": np.zeros((2, 8))}
    meta = {"multirnn.format": "multirnn.layer/1", "multirnn.config": config_text}
    save_file(tensors, str(path), meta)
    return path


@pytest.mark.parametrize(
    "config,match",
    [
        ("{not json", "is not JSON"),
        ("[" * 5000 + "]" * 5000, "nested too deeply|not JSON"),
        ('["LSTM"]', "must hold a JSON object, got list"),
        ('{"layer": "GRU", "units": 2, "kernel_initializer": {"class_name": ["x"]}}',
         r"kernel_initializer\['class_name'\] must be a string"),
        ('{"layer": "LSTM", "units": "two"}', "units must be a positive integer"),
        ('{"layer": {"layer": "LSTM", "units": 2}, "merge_mode": "max"}', "merge_mode"),
    ],
)  # fmt: skip
def test_malformed_files_raise_one_error_naming_file_and_key(tmp_path, config, match):
    path = _write(tmp_path / "bad.safetensors", config)
    with pytest.raises(multirnn.LayerFileError, match=match) as info:
        multirnn.load(path)
    assert str(path) in str(info.value)


def test_missing_and_stray_tensors_name_the_file(tmp_path):
    config = json.dumps(multirnn.SimpleRNN(2, use_bias=False, stateful=False).get_config())
    path = _write(tmp_path / "a.safetensors", config, {"kernel": np.zeros((2, 2))})
    with pytest.raises(multirnn.LayerFileError, match=r"a.safetensors holds tensors \['kernel'\]"):
        multirnn.load(path)
    tensors = {"kernel": np.zeros((2, 2)), "recurrent_kernel": np.zeros((2, 2)),
               "state/h": np.zeros((1, 2))}  # fmt: skip
    path = _write(tmp_path / "b.safetensors", config, tensors)
    with pytest.raises(multirnn.LayerFileError, match="carried states .* is not stateful"):
        multirnn.load(path)
    path = _write(tmp_path / "c.safetensors", config,
                  {"kernel": np.zeros((2, 3)), "recurrent_kernel": np.zeros((2, 2))})  # fmt: skip
    with pytest.raises(multirnn.LayerFileError, match="c.safetensors: .*'kernel'"):
        multirnn.load(path)
