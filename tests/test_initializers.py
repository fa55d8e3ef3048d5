"""Initializers: Keras semantics (scales, fans, truncation) and seed determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multirnn import initializers as init


def sample(initializer, shape, seed=0):
    return initializer(shape, np.random.default_rng(seed))


def test_constant_family():
    assert np.all(sample(init.Zeros(), (2, 3)) == 0)
    assert np.all(sample(init.Ones(), (4,)) == 1)
    assert np.all(sample(init.Constant(0.25), (2, 2)) == 0.25)


def test_identity():
    np.testing.assert_array_equal(sample(init.Identity(2.0), (2, 3)), 2.0 * np.eye(2, 3))
    with pytest.raises(ValueError, match="needs a 2-D weight"):
        sample(init.Identity(), (3,))


@pytest.mark.parametrize("shape", [(6, 6), (4, 12), (12, 4), (2, 3, 4)])
def test_orthogonal(shape):
    w = sample(init.Orthogonal(gain=1.5), shape).reshape(-1, shape[-1])
    rows, cols = w.shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_needs_a_matrix():
    with pytest.raises(ValueError, match="rank >= 2"):
        sample(init.Orthogonal(), (5,))


@pytest.mark.parametrize(
    "cls,scale,fan",
    [
        (init.GlorotUniform, 1.0, lambda i, o: (i + o) / 2),
        (init.HeUniform, 2.0, lambda i, o: i),
        (init.LecunUniform, 1.0, lambda i, o: i),
    ],
)
def test_uniform_variance_scaling_limits(cls, scale, fan):
    fan_in, fan_out = 300, 200
    w = sample(cls(), (fan_in, fan_out))
    limit = np.sqrt(3 * scale / fan(fan_in, fan_out))
    assert w.max() <= limit and w.min() >= -limit
    assert w.max() > 0.98 * limit and w.min() < -0.98 * limit
    np.testing.assert_allclose(w.var(), scale / fan(fan_in, fan_out), rtol=0.03)


@pytest.mark.parametrize(
    "cls,scale,fan",
    [
        (init.GlorotNormal, 1.0, lambda i, o: (i + o) / 2),
        (init.HeNormal, 2.0, lambda i, o: i),
        (init.LecunNormal, 1.0, lambda i, o: i),
    ],
)
def test_truncated_normal_variance_scaling(cls, scale, fan):
    fan_in, fan_out = 300, 200
    w = sample(cls(), (fan_in, fan_out))
    # Truncation at two (rescaled) standard deviations keeps the target variance.
    np.testing.assert_allclose(w.var(), scale / fan(fan_in, fan_out), rtol=0.03)
    stddev = np.sqrt(scale / fan(fan_in, fan_out)) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * stddev


def test_random_and_truncated_normal():
    w = sample(init.RandomNormal(1.0, 0.5), (400, 400))
    np.testing.assert_allclose([w.mean(), w.std()], [1.0, 0.5], rtol=0.01)
    t = sample(init.TruncatedNormal(0.0, 0.5), (400, 400))
    assert np.abs(t).max() <= 1.0
    u = sample(init.RandomUniform(-1, 3), (400, 400))
    assert u.min() >= -1 and u.max() <= 3


def test_variance_scaling_untruncated_and_bias_fans():
    w = sample(init.VarianceScaling(2.0, "fan_out", "untruncated_normal"), (100, 400))
    np.testing.assert_allclose(w.var(), 2.0 / 400, rtol=0.03)
    b = sample(init.VarianceScaling(1.0, "fan_in", "uniform"), (10000,))
    assert np.abs(b).max() <= np.sqrt(3.0 / 10000)


def test_generator_determinism_and_initializer_seed():
    a = sample(init.GlorotUniform(), (3, 4), seed=5)
    b = sample(init.GlorotUniform(), (3, 4), seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample(init.GlorotUniform(), (3, 4), seed=6))
    seeded = init.GlorotUniform(seed=1)
    np.testing.assert_array_equal(sample(seeded, (3, 4), 5), sample(seeded, (3, 4), 6))


def test_values_are_float64():
    assert sample(init.Orthogonal(), (3, 3)).dtype == np.float64


@pytest.mark.parametrize("name", sorted(init.NAMES))
def test_every_name_resolves_and_round_trips(name):
    value = init.resolve(name, owner="LSTM", arg="kernel_initializer")
    config = json.loads(json.dumps(init.serialize(value, arg="kernel_initializer")))
    assert init.resolve(config, owner="LSTM", arg="kernel_initializer") == value


def test_invalid_parameters():
    with pytest.raises(ValueError, match="maxval .* is below minval"):
        init.RandomUniform(1, 0)
    with pytest.raises(ValueError, match="stddev must be a finite number >= 0"):
        init.RandomNormal(stddev=-1)
    with pytest.raises(ValueError, match="seed must be None or an integer"):
        init.Orthogonal(seed="x")
    with pytest.raises(ValueError, match="distribution must be one of"):
        init.VarianceScaling(distribution="cauchy")
