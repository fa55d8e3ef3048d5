"""Weight constraints with Keras semantics and defaults: projections applied to a weight
after an optimizer update (engines expose one documented call for it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multirnn import _registry
from multirnn._checks import check_nonnegative_real, check_real, is_int, show

EPSILON = 1e-7  # Keras's backend epsilon, used to keep the norm divisions finite


def _axis(owner: str, axis: object) -> int | tuple[int, ...]:
    if is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(is_int(a) for a in axis):
        return tuple(int(a) for a in axis)
    raise ValueError(f"{owner}: axis must be an int or a list of ints, got {show(axis)}")


class Constraint(_registry.Configurable):
    def apply(self, w, ops):
        raise NotImplementedError

    def _norms(self, w, ops):
        return ops.sqrt(ops.sum(ops.square(w), axis=self.axis, keepdims=True))


class MaxNorm(Constraint):
    """Rescale each slice along ``axis`` whose L2 norm exceeds ``max_value``."""

    class_name = "MaxNorm"

    def __init__(self, max_value: float = 2, axis: int | list[int] = 0):
        self.max_value = check_nonnegative_real("MaxNorm", "max_value", max_value)
        self.axis = _axis("MaxNorm", axis)

    def apply(self, w, ops):
        norms = self._norms(w, ops)
        desired = ops.clip(norms, 0.0, self.max_value)
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    class_name = "NonNeg"

    def apply(self, w, ops):
        return ops.maximum(w, 0.0)


class UnitNorm(Constraint):
    class_name = "UnitNorm"

    def __init__(self, axis: int | list[int] = 0):
        self.axis = _axis("UnitNorm", axis)

    def apply(self, w, ops):
        return w / (EPSILON + self._norms(w, ops))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Move each slice's norm into [min_value, max_value], by the fraction ``rate``."""

    class_name = "MinMaxNorm"

    def __init__(
        self,
        min_value: float = 0.0,
        max_value: float = 1.0,
        rate: float = 1.0,
        axis: int | list[int] = 0,
    ):
        self.min_value = check_nonnegative_real("MinMaxNorm", "min_value", min_value)
        self.max_value = check_nonnegative_real("MinMaxNorm", "max_value", max_value)
        if self.max_value < self.min_value:
            raise ValueError(
                f"MinMaxNorm: max_value {max_value!r} is below min_value {min_value!r}"
            )
        self.rate = check_real("MinMaxNorm", "rate", rate)
        self.axis = _axis("MinMaxNorm", axis)

    def apply(self, w, ops):
        norms = self._norms(w, ops)
        desired = self.rate * ops.clip(norms, self.min_value, self.max_value)
        desired = desired + (1.0 - self.rate) * norms
        return w * (desired / (EPSILON + norms))

    def get_config(self):
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


CLASSES: dict[str, type[Constraint]] = {
    c.class_name: c for c in (MaxNorm, NonNeg, UnitNorm, MinMaxNorm)
}
NAMES = {
    "max_norm": "MaxNorm",
    "non_neg": "NonNeg",
    "unit_norm": "UnitNorm",
    "min_max_norm": "MinMaxNorm",
    # Keras 2 short aliases
    "maxnorm": "MaxNorm",
    "nonneg": "NonNeg",
    "unitnorm": "UnitNorm",
}


def resolve(value: object, *, owner: str, arg: str) -> Constraint | Callable[..., Any] | None:
    return _registry.resolve(
        value, owner=owner, arg=arg, kind="constraint", names=NAMES, classes=CLASSES,
        base=Constraint, allow_none=True,
    )  # fmt: skip


def serialize(value, *, arg: str):
    return _registry.serialize(value, arg=arg, base=Constraint)


def project(constraint, w, ops):
    """The constrained weight; a user callable is simply called on the engine's array."""
    if isinstance(constraint, Constraint):
        return constraint.apply(w, ops)
    return constraint(w)
