"""Weight initializers with Keras semantics, computed in NumPy float64.

Every engine draws its initial weights from these functions and only then casts them to its
own arrays, so a layer built with the same ``seed`` starts from bit-identical weights on
every engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from multirnn._checks import check_nonnegative_real, check_real, is_int, show
from multirnn._registry import Configurable


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng: np.random.Generator, shape, mean: float, stddev: float):
    """Normal samples redrawn until they fall within two standard deviations."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return mean + stddev * out


class Initializer(Configurable):
    """Base class: ``init(shape, rng)`` returns a float64 NumPy array.

    An initializer built with its own ``seed`` ignores the generator it is handed and
    gives the same values on every call, as in Keras.
    """

    seed: int | None = None

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator | None = None):
        shape = tuple(int(s) for s in shape)
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        elif rng is None:
            rng = np.random.default_rng()
        return np.asarray(self.sample(shape, rng), dtype=np.float64).reshape(shape)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


def _seed(owner: str, seed: object) -> int | None:
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"{owner}: seed must be None or an integer >= 0, got {show(seed)}")
    return None if seed is None else int(seed)


class Zeros(Initializer):
    class_name = "Zeros"

    def sample(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    class_name = "Ones"

    def sample(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    class_name = "Constant"

    def __init__(self, value: float = 0.0):
        self.value = check_real("Constant", "value", value)

    def sample(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomUniform(Initializer):
    class_name = "RandomUniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None):
        self.minval = check_real("RandomUniform", "minval", minval)
        self.maxval = check_real("RandomUniform", "maxval", maxval)
        if self.maxval < self.minval:
            raise ValueError(f"RandomUniform: maxval {maxval!r} is below minval {minval!r}")
        self.seed = _seed("RandomUniform", seed)

    def sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    class_name = "RandomNormal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        self.mean = check_real("RandomNormal", "mean", mean)
        self.stddev = check_nonnegative_real("RandomNormal", "stddev", stddev)
        self.seed = _seed("RandomNormal", seed)

    def sample(self, shape, rng):
        return self.mean + self.stddev * rng.standard_normal(shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """Normal samples, redrawn when more than two standard deviations from the mean."""

    class_name = "TruncatedNormal"

    def sample(self, shape, rng):
        return _truncated_normal(rng, shape, self.mean, self.stddev)


class VarianceScaling(Initializer):
    class_name = "VarianceScaling"
    MODES = ("fan_in", "fan_out", "fan_avg")
    DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ):
        owner = type(self).__name__
        self.scale = check_real(owner, "scale", scale)
        if self.scale <= 0:
            raise ValueError(f"{owner}: scale must be positive, got {scale!r}")
        if mode not in self.MODES:
            raise ValueError(f"{owner}: mode must be one of {self.MODES}, got {show(mode)}")
        if distribution == "normal":  # the Keras 2 spelling of truncated_normal
            distribution = "truncated_normal"
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(
                f"{owner}: distribution must be one of {self.DISTRIBUTIONS}, "
                f"got {show(distribution)}"
            )
        self.mode = mode
        self.distribution = distribution
        self.seed = _seed(owner, seed)

    def sample(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        variance = self.scale / max(1.0, fan[self.mode])
        if self.distribution == "truncated_normal":
            # 0.8796... is the stddev of a standard normal truncated to [-2, 2].
            stddev = math.sqrt(variance) / 0.87962566103423978
            return _truncated_normal(rng, shape, 0.0, stddev)
        if self.distribution == "untruncated_normal":
            return math.sqrt(variance) * rng.standard_normal(shape)
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape)

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


def _preset(name: str, scale: float, mode: str, distribution: str) -> type[VarianceScaling]:
    def __init__(self, seed: int | None = None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    doc = f"VarianceScaling(scale={scale}, mode={mode!r}, distribution={distribution!r})."
    return type(
        name,
        (VarianceScaling,),
        {"class_name": name, "__init__": __init__, "get_config": get_config, "__doc__": doc},
    )


GlorotUniform = _preset("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _preset("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _preset("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _preset("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _preset("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a normal sample, with the
    sign correction that makes the distribution uniform."""

    class_name = "Orthogonal"

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        self.gain = check_real("Orthogonal", "gain", gain)
        self.seed = _seed("Orthogonal", seed)

    def sample(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a weight of rank >= 2, got shape {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    class_name = "Identity"

    def __init__(self, gain: float = 1.0):
        self.gain = check_real("Identity", "gain", gain)

    def sample(self, shape, rng):
        if len(shape) != 2:
            raise ValueError(f"Identity: needs a 2-D weight, got shape {shape}")
        return self.gain * np.eye(*shape)

    def get_config(self):
        return {"gain": self.gain}


CLASSES: dict[str, type[Initializer]] = {
    cls.class_name: cls
    for cls in (
        Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
        GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal,
        Orthogonal, Identity,
    )
}  # fmt: skip

NAMES: dict[str, str] = {
    "zeros": "Zeros",
    "ones": "Ones",
    "constant": "Constant",
    "random_uniform": "RandomUniform",
    "random_normal": "RandomNormal",
    "truncated_normal": "TruncatedNormal",
    "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform",
    "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform",
    "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal",
    "identity": "Identity",
    # Keras 2 aliases
    "zero": "Zeros",
    "one": "Ones",
    "uniform": "RandomUniform",
    "normal": "RandomNormal",
}

InitializerLike = str | dict | Initializer | Callable[..., Any]


def resolve(value: object, *, owner: str, arg: str) -> Initializer | Callable[..., Any]:
    """An initializer from a name, a Keras-style config dict, an instance or a callable."""
    from multirnn import _registry

    return _registry.resolve(
        value, owner=owner, arg=arg, kind="initializer", names=NAMES, classes=CLASSES,
        base=Initializer, allow_none=False,
    )  # fmt: skip


def serialize(value: Initializer | Callable[..., Any], *, arg: str) -> dict[str, Any]:
    from multirnn import _registry

    return _registry.serialize(value, arg=arg, base=Initializer)
