"""The call boundary every engine shares: NumPy arrays and nested lists in (cast to the
layer's dtype under one rule), native tensors out, ``multirnn.to_numpy`` back, and the same
clear refusals for what the rule does not cover."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import multirnn
from multirnn import engines


def _data(batch=3, time=5, features=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, time, features))  # float64, as NumPy makes it
    mask = np.arange(time)[None, :] < np.array([time, 2, 0][:batch])[:, None]
    return x, mask


def _reference(kind, kwargs, weights, x, **call):
    peer = getattr(multirnn.engine("numpy"), kind)(**kwargs)
    peer.set_weights(weights)
    return peer(x, **call)


def _close(got, want, dtype):
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for g, w in zip(multirnn.to_numpy(list(got)), want, strict=True):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_numpy_and_lists_in_native_out_same_numbers(eng, kind):
    x, mask = _data()
    kwargs = {"units": 3, "return_sequences": True, "return_state": True, "seed": 1}
    layer = getattr(eng, kind)(**kwargs)
    n = len(layer.spec.state_names)
    h0 = np.full((3, 3), 0.25)
    out = layer(x, mask=mask.tolist(), initial_state=[h0.tolist()] + [h0] * (n - 1))
    native = {"numpy": "numpy", "torch": "torch", "jax": "jaxlib", "tensorflow": "tensorflow"}
    assert type(out[0]).__module__.split(".")[0] == native[eng.name]
    dtype = str(multirnn.to_numpy(out[0]).dtype)
    want = _reference(kind, {**kwargs, "dtype": "float64"}, layer.get_weights(), x,
                      mask=mask, initial_state=[h0] * n)  # fmt: skip
    _close(out, want, dtype)
    again = layer(x.astype(np.float16).astype(np.float64).tolist(), mask=mask)
    assert multirnn.to_numpy(again[0]).shape == (3, 5, 3)


def test_bidirectional_takes_numpy_too(eng):
    x, mask = _data()
    layer = eng.Bidirectional(eng.GRU(2, return_sequences=True, seed=0), merge_mode=None)
    forward, backward = multirnn.to_numpy(layer(x, mask=mask))
    assert forward.shape == backward.shape == (3, 5, 2)


def test_stateful_layers_take_numpy_states(eng):
    layer = eng.LSTM(2, stateful=True, seed=0)
    layer(np.ones((1, 3, 2)))
    layer.reset_states([[[1.0, 2.0]], np.zeros((1, 2))])
    h, c = multirnn.to_numpy(layer.states)
    np.testing.assert_array_equal(h, [[1.0, 2.0]])
    np.testing.assert_array_equal(c, [[0.0, 0.0]])


def test_the_functional_entry_takes_numpy(eng):
    kernels = importlib.import_module(
        "multirnn.reference.kernels" if eng.name == "numpy" else f"multirnn_{eng.name}.kernels"
    )
    layer = eng.GRU(3, seed=0, input_dim=4)
    x, mask = _data()
    weights = [w.astype(layer.get_weights()[0].dtype) for w in layer.get_weights()]
    if eng.name != "numpy":
        weights = [getattr(w, "value", w) for w in layer._weights()]
    out, _ = kernels.forward(layer.spec, weights, x.tolist(), mask=mask,
                             initial_state=[np.zeros((3, 3)).tolist()])  # fmt: skip
    assert multirnn.to_numpy(out).shape == (3, 3)


@pytest.mark.parametrize(
    "value,error,match",
    [
        (np.ones((2, 5, 4), np.int64), TypeError, r"floating-point data .* integers \(int64\)"),
        (np.ones((2, 5, 4), bool), TypeError, r"floating-point data .* booleans"),
        (np.ones((2, 5, 4), complex), TypeError, r"floating-point data .* complex"),
        ([[[1, 2, 3, 4]]], TypeError, r"floating-point data .* integers"),
        ([[[1.0, 2.0]], [[1.0]]], ValueError, "nested list must be rectangular"),
        ("inputs", TypeError, r"inputs must be .*NumPy array or a nested list .* got str"),
        ({"x": 1}, TypeError, r"inputs must be .* got dict"),
    ],
)
def test_inputs_outside_the_rule_are_refused_naming_the_argument(eng, value, error, match):
    layer = eng.LSTM(3, input_dim=4)
    with pytest.raises(error, match=match):
        layer(value)


def test_masks_and_states_outside_the_rule_are_refused(eng):
    layer = eng.LSTM(3, input_dim=4)
    x, _ = _data()
    with pytest.raises(TypeError, match="mask must be a boolean"):
        layer(x, mask=np.ones((3, 5)))
    with pytest.raises(TypeError, match=r"initial_state must be floating-point data"):
        layer(x, initial_state=[np.zeros((3, 3), int), np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"initial_state must be a list of 2"):
        layer(x, initial_state=np.zeros((3, 3)))


def test_another_frameworks_tensor_is_refused_with_its_type():
    if "torch" not in engines.available():
        pytest.skip("torch is not installed")
    import torch

    layer = multirnn.engine("numpy").LSTM(2)
    with pytest.raises(TypeError, match=r"got torch\.Tensor"):
        layer(torch.zeros(1, 2, 3))


def test_to_numpy_takes_every_engines_outputs(eng):
    layer = eng.LSTM(2, return_state=True, seed=0)
    out = layer(np.ones((1, 3, 2)))
    arrays = multirnn.to_numpy(out)
    assert isinstance(arrays, list) and all(isinstance(a, np.ndarray) for a in arrays)
    assert multirnn.to_numpy(tuple(out))[0].shape == (1, 2)
    assert multirnn.to_numpy(None) is None


def test_to_numpy_detaches_torch_tensors_that_require_grad():
    if "torch" not in engines.available():
        pytest.skip("torch is not installed")
    import torch

    value = torch.ones(2, requires_grad=True) * 2
    np.testing.assert_array_equal(multirnn.to_numpy(value), [2.0, 2.0])


def test_to_numpy_refuses_what_has_no_values():
    with pytest.raises(TypeError, match="to_numpy takes a tensor"):
        multirnn.to_numpy(object())
    if "jax" in engines.available():
        import jax

        with pytest.raises(TypeError, match="JAX tracer"):
            jax.jit(multirnn.to_numpy)(np.ones(2))


# -- training, empty batches, threads ---------------------------------------------------------


@pytest.mark.parametrize("training", ["no", 1, 0.0, "False"])
def test_training_is_true_false_or_none(eng, training):
    layer = eng.GRU(2, dropout=0.5, input_dim=3, seed=0)
    with pytest.raises(TypeError, match="training must be True, False or None"):
        layer(np.ones((1, 2, 3)), training=training)
    layer(np.ones((1, 2, 3)), training=None)


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("LSTM", {}),
        ("LSTM", {"recurrent_activation": "sigmoid"}),  # fused-eligible where there is one
        ("GRU", {"reset_after": True, "recurrent_activation": "sigmoid"}),
        ("GRU", {"unroll": True, "go_backwards": True}),
        ("SimpleRNN", {}),
    ],
)
def test_batch_size_zero_returns_empty_results(eng, kind, kwargs):
    layer = getattr(eng, kind)(3, return_sequences=True, return_state=True, seed=0, **kwargs)
    states = len(layer.spec.state_names)
    for mask in (None, np.zeros((0, 4), bool)):
        out = multirnn.to_numpy(layer(np.zeros((0, 4, 2)), mask=mask))
        assert [o.shape for o in out] == [(0, 4, 3)] + [(0, 3)] * states


def test_the_first_call_from_several_threads_builds_once(eng):
    import threading

    x = np.random.default_rng(0).standard_normal((2, 3, 5))
    for _ in range(5):  # a race shows in some trials only: several fresh layers
        layer = eng.LSTM(4, return_sequences=True)  # unseeded: a second build would differ
        results, errors = [], []
        barrier = threading.Barrier(6)

        def first_call(layer=layer, results=results, errors=errors, barrier=barrier):
            try:
                barrier.wait()
                results.append(multirnn.to_numpy(layer(x)))
            except Exception as exc:  # collected and reported below
                errors.append(exc)

        threads = [threading.Thread(target=first_call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        want = multirnn.to_numpy(layer(x))  # the layer's final weights
        for got in results:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_concurrent_calls_of_a_built_layer_stay_correct(eng):
    from concurrent.futures import ThreadPoolExecutor

    layer = eng.GRU(3, seed=0, input_dim=2)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((2, 4 + k % 3, 2)) for k in range(12)]
    want = [multirnn.to_numpy(layer(x)) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: multirnn.to_numpy(layer(x)), inputs))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_arguments_are_checked_in_one_order_on_every_engine(eng):
    # found by the fuzz test: TensorFlow converted the states before Keras saw the call, so
    # a bad state was reported before bad inputs, unlike every other engine
    layer = eng.SimpleRNN(3, input_dim=2)
    with pytest.raises(ValueError, match="inputs need at least one time step"):
        layer(np.zeros((0, 0, 2)), initial_state=[np.zeros((0, 3), np.int32)])
    with pytest.raises(ValueError, match="inputs have 4 features"):
        layer(np.zeros((1, 2, 4)), mask=[[1, 0]])
