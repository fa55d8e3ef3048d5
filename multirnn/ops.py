"""The handful of array primitives the backend-neutral definitions are written against.

Activations, regularizers and constraints are defined once, as formulas over an *ops*
namespace, so that every engine evaluates literally the same expression with its own
framework's functions. An engine supplies its own namespace with the attributes listed in
``REQUIRED``; :data:`NUMPY_OPS` is the one the reference engine uses.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

REQUIRED = (
    "abs",
    "square",
    "sqrt",
    "exp",
    "expm1",
    "log1p",
    "tanh",
    "sigmoid",
    "maximum",
    "minimum",
    "clip",
    "where",
    "sum",
    "max",
)


def _sigmoid(x):
    # exp(-logaddexp(0, -x)) is exact in both tails, unlike 1 / (1 + exp(-x)).
    return np.exp(-np.logaddexp(0.0, -x))


def namespace(module: object, **overrides: object) -> SimpleNamespace:
    """The :data:`REQUIRED` primitives of a framework: taken from ``module`` by name, except
    those the framework names or defines differently, given as ``overrides``."""
    return SimpleNamespace(**{n: overrides.get(n) or getattr(module, n) for n in REQUIRED})


NUMPY_OPS = namespace(np, sigmoid=_sigmoid)


def check_ops(ops: object) -> None:
    """Fail early, naming what is missing, when an engine's ops namespace is incomplete."""
    missing = [name for name in REQUIRED if not hasattr(ops, name)]
    if missing:
        raise TypeError(f"ops namespace {ops!r} lacks {', '.join(missing)}")
