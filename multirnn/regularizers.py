"""Weight and activity penalties with Keras semantics: ``l1 * sum(|w|) + l2 * sum(w**2)``.

The names ``"l1"``, ``"l2"`` and ``"l1_l2"`` use the documented default factor 0.01.
Engines evaluate :meth:`Regularizer.penalty` with their own ops, so the value is
differentiable in each framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multirnn import _registry
from multirnn._checks import check_nonnegative_real


class Regularizer(_registry.Configurable):
    class_name = "L1L2"

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        owner = type(self).__name__
        self.l1 = check_nonnegative_real(owner, "l1", l1)
        self.l2 = check_nonnegative_real(owner, "l2", l2)

    def penalty(self, x, ops):
        total = 0.0
        if self.l1:
            total = total + self.l1 * ops.sum(ops.abs(x))
        if self.l2:
            total = total + self.l2 * ops.sum(ops.square(x))
        return total

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1L2(Regularizer):
    class_name = "L1L2"


class L1(Regularizer):
    class_name = "L1"

    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    class_name = "L2"

    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def l1(l: float = 0.01) -> L1:  # noqa: E741 - the Keras name
    return L1(l)


def l2(l: float = 0.01) -> L2:  # noqa: E741
    return L2(l)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    return L1L2(l1, l2)


CLASSES: dict[str, type[Regularizer]] = {"L1": L1, "L2": L2, "L1L2": L1L2}
NAMES = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2"}
_NAME_DEFAULTS = {"l1_l2": {"l1": 0.01, "l2": 0.01}}


def resolve(value: object, *, owner: str, arg: str) -> Regularizer | Callable[..., Any] | None:
    return _registry.resolve(
        value, owner=owner, arg=arg, kind="regularizer", names=NAMES, classes=CLASSES,
        base=Regularizer, allow_none=True, name_defaults=_NAME_DEFAULTS,
    )  # fmt: skip


def serialize(value, *, arg: str):
    return _registry.serialize(value, arg=arg, base=Regularizer)


def penalty(regularizer, x, ops):
    """The penalty of ``x``; a user callable is simply called on the engine's array."""
    if isinstance(regularizer, Regularizer):
        return regularizer.penalty(x, ops)
    return regularizer(x)
