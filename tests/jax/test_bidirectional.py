"""Bidirectional on the JAX engine: a pytree equal to the NumPy engine's wrapper."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from multirnn_jax import layers  # noqa: E402
from multirnn_jax.layers import LSTM, Bidirectional  # noqa: E402

from ..cases import bidirectional_and_reference  # noqa: E402


def _x():
    return np.random.default_rng(0).standard_normal((3, 6, 4))


def test_same_numbers_as_the_numpy_engine_with_masks_under_jit():
    # every cell and merge mode is in the conformance grid, called eagerly
    layer, x, mask, want = bidirectional_and_reference(layers, "LSTM", None)
    got = jax.jit(lambda m, x, k: m(x, mask=k))(layer, x, mask)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-12)


def test_a_pytree_of_both_directions_with_gradients_and_dropout_keys():
    layer = Bidirectional(LSTM(3, input_dim=4, seed=1, dropout=0.5, return_sequences=True))
    leaves = jax.tree_util.tree_leaves_with_path(layer)
    assert len(leaves) == 6 and "forward_layer" in jax.tree_util.keystr(leaves[0][0])
    x = _x()
    grads = jax.grad(lambda m: m(x).sum())(layer)
    assert isinstance(grads, Bidirectional)
    a = layer(x, training=True, key=jax.random.key(0))
    b = layer(x, training=True, key=jax.random.key(0))
    c = layer(x, training=True, key=jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert isinstance(layer.apply_constraints(), Bidirectional)
