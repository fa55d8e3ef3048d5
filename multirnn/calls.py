"""Validation of call arguments from their shapes and dtype names alone.

Engines convert user values to their own arrays, then hand the shapes here, so a wrong
rank, feature size, dtype, mask or initial state fails before any computation, with the
same message on every engine (never as a shape error from inside a matrix product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from multirnn import precision
from multirnn.spec import DTYPES, LayerSpec

#: What every engine accepts besides its own tensors: data on the host.
HOST_TYPES = (np.ndarray, np.generic, list, tuple)

_KINDS = {"b": "booleans", "i": "integers", "u": "unsigned integers", "c": "complex numbers"}


@dataclass(frozen=True)
class CallShape:
    batch: int
    time: int
    input_dim: int


def _compatible(shape: tuple, want: tuple) -> bool:
    """Equal shapes, where an unknown size (None, e.g. while tracing) matches any size."""
    return len(shape) == len(want) and all(
        a is None or b is None or a == b for a, b in zip(shape, want)
    )


def _shape(shape: Sequence[int | None]) -> tuple:
    return tuple(None if s is None else int(s) for s in shape)


def type_name(value: object) -> str:
    """``torch.Tensor``, ``ndarray``, ``str``: enough to tell which framework a value is from."""
    cls = type(value)
    root = cls.__module__.split(".")[0]
    return cls.__name__ if root in ("builtins", "numpy") else f"{root}.{cls.__name__}"


def host_array(
    value: Any, *, owner: str, arg: str, native: str | None, dtype: str | None
) -> np.ndarray:
    """A NumPy array or (nested) list given where an engine takes its own tensor, as a
    NumPy array, under the one rule every engine documents: floating-point data is cast to
    the layer's dtype (``dtype``; Keras 3 does the same on every backend); integer, boolean
    and complex data is refused rather than guessed at. With ``dtype=None`` (masks) the
    values are kept as they are for :func:`mask` to check. ``native`` names the engine's
    own tensor type for the error message (None for the NumPy engine).

    A framework's own tensors never come here: the engine keeps them as they are (no cast
    inside a traced graph), and another framework's tensors are refused with their type.
    """
    if not isinstance(value, HOST_TYPES):
        accepted = "a NumPy array or a nested list of numbers"
        raise TypeError(
            f"{owner}: {arg} must be {'' if native is None else f'a {native}, '}{accepted}, "
            f"got {type_name(value)}"
        )
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{owner}: {arg} given as a nested list must be rectangular (every row of a level "
            f"the same length): {exc}"
        ) from None
    if array.dtype == object:
        raise TypeError(
            f"{owner}: {arg} must hold numbers; its entries include "
            f"{type_name(array.flat[0]) if array.size else 'objects'}"
        )
    if dtype is None:
        return array
    if not precision.is_floating(array.dtype):
        what = _KINDS.get(array.dtype.kind, f"dtype {array.dtype}")
        raise TypeError(
            f"{owner}: {arg} must be floating-point data (cast to the layer's {dtype}); got "
            f"{what} ({array.dtype}). Convert them yourself, e.g. x.astype({dtype!r})"
        )
    return array.astype(precision.numpy_dtype(dtype), copy=False)


def keyword_only(layer: object, args: tuple) -> None:
    """Everything after ``inputs`` is keyword-only on every engine: frameworks disagree on
    the positional order (Keras's ``call`` takes ``mask, training, initial_state``, PyTorch
    passes states second), so a positional second argument is refused, not guessed."""
    if args:
        kind = type(layer).__name__
        name = getattr(layer, "name", None)
        raise TypeError(
            f"{f'{name} ({kind})' if name else kind}: mask, initial_state and training are "
            "keyword-only; call layer(inputs, mask=..., initial_state=..., training=...) "
            f"(got {len(args)} positional argument{'s' if len(args) > 1 else ''} after inputs)"
        )


def training(owner: str, value: object) -> bool | None:
    """``training`` is True, False (NumPy booleans too) or None, on every engine."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(f"{owner}: training must be True, False or None, got {value!r}")


def inputs(
    spec: LayerSpec,
    shape: Sequence[int | None],
    dtype: str,
    *,
    expected_dtype: str,
    input_dim: int | None,
) -> CallShape:
    """Check the ``(batch, time, features)`` input against the layer."""
    shape = _shape(shape)
    owner = spec.layer
    if len(shape) != 3:
        raise ValueError(
            f"{owner}: inputs must be 3-D (batch, time, features), got shape {shape} "
            f"({len(shape)}-D)"
        )
    batch, time, features = shape
    if input_dim is not None and features != input_dim:
        raise ValueError(
            f"{owner}: inputs have {features} features (last axis) but the layer was built "
            f"for input_dim={input_dim}; got input shape {shape}"
        )
    if features is not None and features < 1:
        raise ValueError(f"{owner}: inputs need at least one feature, got shape {shape}")
    if time is not None and time < 1:
        raise ValueError(f"{owner}: inputs need at least one time step, got shape {shape}")
    if spec.input_length is not None and time is not None and time != spec.input_length:
        raise ValueError(
            f"{owner}: the layer was created with input_length={spec.input_length} (from "
            f"input_shape/batch_input_shape/input_length) but the inputs have {time} time "
            f"steps; got input shape {shape}"
        )
    if spec.batch_size is not None and batch is not None and batch != spec.batch_size:
        raise ValueError(
            f"{owner}: the layer was created with batch_size={spec.batch_size} (from "
            f"batch_input_shape/batch_size) but the inputs have batch size {batch}; got input "
            f"shape {shape}"
        )
    if dtype != expected_dtype:
        fix = f"cast the inputs to {expected_dtype}"
        if dtype in DTYPES:
            fix += f", or create the layer with dtype={dtype!r}"
        raise TypeError(
            f"{owner}: inputs have dtype {dtype} but the layer takes {expected_dtype}; {fix}"
        )
    return CallShape(batch, time, features)


def mask(spec: LayerSpec, shape: Sequence[int | None], dtype: str, call: CallShape) -> None:
    """A mask is a boolean ``(batch, time)`` array."""
    shape = _shape(shape)
    if dtype != "bool":
        raise TypeError(
            f"{spec.layer}: mask must be a boolean array of shape (batch, time) = "
            f"{(call.batch, call.time)}, got dtype {dtype} (compare with 0 or cast to bool)"
        )
    if not _compatible(shape, (call.batch, call.time)):
        raise ValueError(
            f"{spec.layer}: mask must have shape (batch, time) = {(call.batch, call.time)}, "
            f"got {shape}"
        )


def state_count(spec: LayerSpec, count: int, *, arg: str = "initial_state") -> None:
    if count != spec.num_states:
        names = ", ".join(spec.state_names)
        raise ValueError(
            f"{spec.layer}: {arg} must be a list of {spec.num_states} array(s) [{names}], "
            f"each of shape (batch, {spec.units}); got {count}"
        )


def state_list(value: Any) -> list:
    """``initial_state`` (or ``reset_states(states)``) as a list: a list or tuple holds one
    entry per state; anything else is the one state of a one-state layer."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def states(
    spec: LayerSpec,
    shapes: Sequence[Sequence[int | None]],
    dtypes: Sequence[str],
    *,
    batch: int | None,
    expected_dtype: str,
    arg: str = "initial_state",
) -> None:
    """Initial (or reset) states: one ``(batch, units)`` array per state, in order."""
    state_count(spec, len(shapes), arg=arg)
    for name, shape, dtype in zip(spec.state_names, shapes, dtypes):
        shape = _shape(shape)
        want = (batch, spec.units)
        if len(shape) != 2 or (batch is not None and shape[0] != batch) or shape[1] != spec.units:
            raise ValueError(
                f"{spec.layer}: {arg} state {name!r} must have shape (batch, units) = {want}, "
                f"got {shape}"
            )
        if dtype != expected_dtype:
            raise TypeError(
                f"{spec.layer}: {arg} state {name!r} has dtype {dtype}; the layer takes "
                f"in {expected_dtype}"
            )


def dropout_mask(
    spec: LayerSpec,
    shape: Sequence[int | None],
    *,
    batch: int,
    width: int,
    arg: str,
) -> None:
    """Explicit dropout masks: ``(batch, width)`` shared by all gates, or
    ``(gates, batch, width)`` with one mask per gate (gate order of the weights)."""
    shape = _shape(shape)
    shared, per_gate = (batch, width), (spec.gates, batch, width)
    if shape not in (shared, per_gate):
        raise ValueError(
            f"{spec.layer}: {arg} must have shape {shared} (one mask for all gates) or "
            f"{per_gate} (one per gate, order {', '.join(spec.gate_names)}), got {shape}"
        )


def stateful_batch(spec: LayerSpec, batch: int, fixed: int | None) -> None:
    if fixed is not None and batch != fixed:
        raise ValueError(
            f"{spec.layer}: this stateful layer holds states for batch size {fixed}, but the "
            f"inputs have batch size {batch}. Keep the batch size fixed, or start over with "
            "new states for the new size: reset_states(states=[...])."
        )
