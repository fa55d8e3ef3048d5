"""Small helpers that make every validation error say which argument, what was given and
what is accepted."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

import numpy as np


def show(value: object) -> str:
    """A short, unambiguous rendering of a user value for an error message."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean X?' when a close match exists, else ''."""
    choices = list(choices)
    folded = {c.lower().replace("_", ""): c for c in choices}
    key = name.lower().replace("_", "").replace("-", "")
    if key in folded:
        return f" Did you mean {folded[key]!r}?"
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    if close:
        return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return ""


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_bool(owner: str, arg: str, value: object) -> bool:
    if not is_bool(value):
        raise TypeError(f"{owner}: {arg} must be True or False, got {show(value)}")
    return bool(value)


def check_positive_int(owner: str, arg: str, value: object) -> int:
    if not is_int(value) or value <= 0:
        raise ValueError(f"{owner}: {arg} must be a positive integer, got {show(value)}")
    return int(value)


def check_rate(owner: str, arg: str, value: object) -> float:
    if not is_real(value):
        raise TypeError(f"{owner}: {arg} must be a float in [0, 1), got {show(value)}")
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: {arg} must be in [0, 1), got {value!r}")
    return float(value)


def check_nonnegative_real(owner: str, arg: str, value: object) -> float:
    if not is_real(value) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {arg} must be a finite number >= 0, got {show(value)}")
    return float(value)


def check_real(owner: str, arg: str, value: object) -> float:
    if not is_real(value) or not np.isfinite(value):
        raise ValueError(f"{owner}: {arg} must be a finite number, got {show(value)}")
    return float(value)


def positive_int_option(text: str) -> int:
    """A command-line option's positive integer (an ``argparse`` type; ``multirnn`` and
    the pytest plugin share it)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value
