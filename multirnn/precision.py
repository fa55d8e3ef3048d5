"""Low-precision layers: bfloat16 and float16 values, float32 arithmetic.

A layer created with ``dtype="bfloat16"`` or ``"float16"`` keeps its weights in that dtype
and takes and returns inputs, outputs and states in it; inside a call it computes in
float32, as cuDNN's and oneDNN's recurrent kernels do (their math precision is float32
for half-precision data). A product of two bfloat16 or float16 numbers is exact in float32,
so the matrix products are those of a low-precision GEMM with float32 accumulation; the
gates and the states carried from step to step keep float32's precision, and only what
the call returns is rounded. That makes a low-precision layer's result depend on its
dtype alone, not on which engine, kernel or CPU computed it, which is what lets the
conformance suite hold every engine to a few units in the last place of bfloat16.

Mixed precision (``dtype="mixed_bfloat16"`` or ``"mixed_float16"``, Keras's policy names,
on every engine: float32 weights for the optimizer, values exchanged in the low dtype)
rounds the weights to that dtype at each call, as the frameworks' own layers do when they
read a variable under such a policy; so it computes what the low-precision layer of the
rounded weights computes.

This module holds the rule once; engines reach it through :mod:`multirnn.pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: the dtypes a layer may hold and exchange values in but does not compute in
LOW = ("bfloat16", "float16")
#: what a low-precision layer computes in
ARITHMETIC = "float32"
#: mixed precision (Keras's policy names): float32 weights, values exchanged in the dtype
MIXED = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def arithmetic(dtype: str) -> str:
    """The dtype a layer of ``dtype`` computes in."""
    return ARITHMETIC if dtype in LOW else dtype


def values(dtype: str | None) -> str | None:
    """The dtype a layer created with ``dtype`` takes and returns values in (its inputs,
    outputs and states): a mixed policy's low-precision dtype, else ``dtype`` itself."""
    return MIXED.get(dtype, dtype)  # type: ignore[arg-type]


def weights(dtype: str | None) -> str | None:
    """The dtype a layer created with ``dtype`` stores its weights in: float32 under a
    mixed policy, else ``dtype`` itself."""
    return "float32" if dtype in MIXED else dtype


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype called ``name``; bfloat16 is ml_dtypes' (NumPy has none of its own)."""
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            "bfloat16 arrays on the host need the ml_dtypes package (installed with JAX and "
            "TensorFlow; pip install ml_dtypes)"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def is_floating(dtype: np.dtype) -> bool:
    """NumPy's floats, and ml_dtypes' bfloat16 (whose kind NumPy reports as 'V')."""
    return dtype.kind == "f" or dtype.name == "bfloat16"


def widened(
    cast: Callable[[Any, str], Any],
    dtype: str,
    run: Callable[..., tuple[Any, list]],
    weights: Sequence[Any],
    x: Any,
    states: Sequence[Any] | None,
    masks: Sequence[Any | None],
    *rest: Any,
) -> tuple[Any, list]:
    """``run(weights, x, states, *masks, *rest)`` for a layer computing in ``dtype``.

    For bfloat16 and float16: the weights are rounded to ``dtype`` (a no-op unless they are
    float32 variables under a mixed policy), then everything is cast to float32, ``run``
    computes, and the output and final states are rounded to ``dtype``. Other dtypes run
    as they are. ``cast(value, name)`` is the engine's cast."""
    if dtype not in LOW:
        return run(weights, x, states, *masks, *rest)

    def up(value: Any) -> Any:
        return None if value is None else cast(value, ARITHMETIC)

    wide = [up(cast(w, dtype)) for w in weights]
    output, final = run(wide, up(x), None if states is None else [up(s) for s in states],
                        *(up(m) for m in masks), *rest)  # fmt: skip
    return cast(output, dtype), [cast(s, dtype) for s in final]
