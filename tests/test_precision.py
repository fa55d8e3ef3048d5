"""Low-precision layers (``dtype="bfloat16"`` / ``"float16"``) on every engine: values held
and returned in the dtype, computed in float32, carried across engines and files bit for
bit. The conformance groups (tests/conformance) hold every option to the tolerances; this
module tests what a user of one layer sees."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import multirnn
from multirnn import precision
from multirnn.reference import layers as reference

from .cases import VARIANTS, native, variant_id

ml_dtypes = pytest.importorskip("ml_dtypes")

LOW = ("bfloat16", "float16")
#: half a unit in the last place, relative (at most): what rounding a result costs
HALF_ULP = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


def _rounded(array, dtype):
    return np.asarray(array).astype(precision.numpy_dtype(dtype)).astype(np.float64)


def _make(eng, variant, dtype, **kwargs):
    layer, extra = variant
    return eng.layer_class(layer)(6, **extra, dtype=dtype, **kwargs)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_a_low_precision_layer_rounds_only_what_it_returns(eng, variant, dtype):
    layer = _make(eng, variant, dtype, input_dim=4, seed=1, return_sequences=True,
                  return_state=True)  # fmt: skip
    x = np.random.default_rng(0).standard_normal((3, 9, 4)).astype(np.float32)
    got = multirnn.to_numpy(layer(x))  # host float32 data: cast to the layer's dtype
    weights = layer.get_weights()
    assert {w.dtype.name for w in weights} == {dtype}
    assert {g.dtype.name for g in got} == {dtype}
    # the float64 reference on the same (rounded) numbers, with nothing rounded inside
    peer = _make(multirnn.engine("numpy"), variant, "float64", return_sequences=True,
                 return_state=True)  # fmt: skip
    peer.set_weights([w.astype(np.float64) for w in weights])
    want = peer(_rounded(x, dtype))
    for g, w in zip(got, want, strict=True):
        g = g.astype(np.float64)
        # within half an ulp of the exact value, up to float32's own error in the sum
        assert np.all(np.abs(g - w) <= HALF_ULP[dtype] * np.abs(w) + 1e-6)


@pytest.mark.parametrize("dtype", LOW)
def test_weights_move_between_engines_and_files_bit_for_bit(eng, dtype, tmp_path):
    layer = multirnn.engine("numpy").LSTM(5, input_dim=3, seed=2, dtype=dtype)
    multirnn.save(layer, tmp_path / "lstm.safetensors")
    loaded = multirnn.load(tmp_path / "lstm.safetensors", backend=eng.name)
    other = eng.LSTM(5, dtype=dtype)
    other.set_weights(layer.get_weights())
    for a, b, c in zip(layer.get_weights(), loaded.get_weights(), other.get_weights()):
        assert b.dtype == c.dtype == a.dtype
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
        np.testing.assert_array_equal(a.view(np.uint16), c.view(np.uint16))
    # and back into a file from this engine
    multirnn.save(loaded, tmp_path / "again.safetensors")
    again = multirnn.load(tmp_path / "again.safetensors", backend="numpy")
    assert again.dtype == dtype
    np.testing.assert_array_equal(again.kernel.view(np.uint16), layer.kernel.view(np.uint16))


@pytest.mark.parametrize("dtype", LOW)
def test_every_engine_gives_the_same_low_precision_numbers(eng, dtype):
    layer = _make(eng, ("GRU", {}), dtype, input_dim=4, seed=3, return_sequences=True)
    ref = _make(multirnn.engine("numpy"), ("GRU", {}), dtype, input_dim=4, seed=3,
                return_sequences=True)  # fmt: skip
    x = np.random.default_rng(1).standard_normal((2, 7, 4))
    got = multirnn.to_numpy(layer(native(eng.name, x.astype(precision.numpy_dtype(dtype)))))
    want = ref(x)
    # float32 arithmetic in another order may round the other way: one ulp at most
    spacing = np.abs(want.astype(np.float64)) * 2 * HALF_ULP[dtype] + 1e-7
    assert np.all(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= spacing)


@pytest.mark.parametrize("dtype", LOW)
def test_a_stateful_low_precision_layer_carries_its_states_in_its_dtype(eng, dtype):
    """A sequence split over calls: the states are rounded to the dtype between calls (they
    are what ``states`` and ``return_state`` give), on every engine as on the NumPy one."""
    layer = _make(eng, ("LSTM", {}), dtype, input_dim=3, seed=4, stateful=True)
    ref = _make(multirnn.engine("numpy"), ("LSTM", {}), dtype, input_dim=3, seed=4,
                stateful=True)  # fmt: skip
    x = np.random.default_rng(2).standard_normal((2, 8, 3))
    for chunk in (x[:, :3], x[:, 3:5], x[:, 5:]):
        got, want = multirnn.to_numpy(layer(chunk)), ref(chunk)
    assert {multirnn.to_numpy(s).dtype.name for s in layer.states} == {dtype}
    spacing = np.abs(want.astype(np.float64)) * 4 * HALF_ULP[dtype] + 1e-7
    assert np.all(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= spacing)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_policy_keeps_float32_weights_and_computes_as_the_low_layer(eng, policy, tmp_path):
    """Keras's policy names on every engine (Flax's ``param_dtype=float32`` with a low
    ``dtype`` on JAX): float32 weights, values in the low dtype, the engine's float32
    tensors cast to it as the frameworks' mixed layers cast theirs."""
    low = policy.removeprefix("mixed_")
    mixed = eng.GRU(5, input_dim=3, seed=0, dtype=policy, return_state=True)
    plain = eng.GRU(5, dtype=low, return_state=True)
    plain.set_weights(mixed.get_weights())  # rounded: what the mixed layer computes with
    assert {w.dtype for w in mixed.get_weights()} == {np.dtype(np.float32)}
    x = np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)
    got = multirnn.to_numpy(mixed(native(eng.name, x)))  # float32 tensors: cast
    want = multirnn.to_numpy(plain(native(eng.name, x.astype(precision.numpy_dtype(low)))))
    for g, w in zip(got, want, strict=True):
        assert g.dtype.name == low
        np.testing.assert_array_equal(g.view(np.uint16), w.view(np.uint16))
    assert mixed.get_config()["dtype"] == policy
    multirnn.save(mixed, tmp_path / "mixed.safetensors")  # float32 tensors
    for name in {"numpy", eng.name}:
        again = multirnn.load(tmp_path / "mixed.safetensors", backend=name)
        assert again.get_config()["dtype"] == policy
        for a, b in zip(again.get_weights(), mixed.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_low_precision_inputs_of_another_dtype_are_refused(eng):
    if eng.name == "numpy":
        pytest.skip("the NumPy engine casts NumPy data to the layer's dtype")
    layer = eng.LSTM(3, input_dim=2, dtype="bfloat16")
    x = native(eng.name, np.zeros((1, 2, 2), np.float16))
    with pytest.raises(TypeError, match="inputs have dtype float16 but the layer takes bfloat16"):
        layer(x)


def test_bfloat16_on_the_host_without_ml_dtypes_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(ImportError, match="pip install ml_dtypes"):
        reference.LSTM(3, input_dim=2, dtype="bfloat16")
    # float16 is NumPy's own
    assert reference.LSTM(3, input_dim=2, dtype="float16").kernel.dtype == np.float16


def test_the_dtypes_a_layer_accepts_are_listed():
    with pytest.raises(ValueError, match="'float32', 'float64', 'bfloat16', 'float16', or a mixed"):
        reference.LSTM(3, dtype="float8")
    assert reference.LSTM(3, dtype=ml_dtypes.bfloat16).spec.dtype == "bfloat16"
