"""Certifying a user's cell: the same function on every engine, or a named failure.

``multirnn conformance --cell mypkg.cells:MinimalGRU`` checks, in order:

1. portability: one step on array-api-strict, the standard and nothing more;
2. forward: every engine that runs cells (``RNN``) against the NumPy engine's ``RNN`` in
   float64, over a grid of ``Recurrent`` options (sequences, states, ``go_backwards``,
   masks of every kind, ``zero_output_for_mask``, ``initial_state``, ``unroll``, single
   steps and rows), in float64 and float32, with the suite's tolerance policy;
3. stateful: two calls of a stateful layer against one call over the whole sequence.

Gradients are each framework's own autodiff of the same step; this suite checks values
(the engines' own tests compare their gradients with finite differences).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from multirnn import cells, engines
from multirnn.arrays import to_numpy
from multirnn.conformance import tolerances

#: (name, RNN options, mask kind, initial_state, batch, time)
GRID: tuple[tuple[str, dict[str, Any], str, bool, int, int], ...] = (
    ("base", {}, "none", False, 2, 4),
    ("sequences", {"return_sequences": True, "return_state": True}, "none", False, 2, 4),
    ("go_backwards", {"return_sequences": True, "go_backwards": True}, "none", False, 2, 4),
    ("initial_state", {"return_state": True}, "none", True, 2, 4),
    ("mask_right_padded", {"return_sequences": True}, "right_padded", False, 3, 5),
    ("mask_arbitrary", {"return_sequences": True, "go_backwards": True}, "arbitrary", True,
     3, 5),
    ("mask_fully_masked_rows", {"return_state": True}, "fully_masked_rows", True, 3, 5),
    ("zero_output_for_mask", {"return_sequences": True, "zero_output_for_mask": True},
     "arbitrary", False, 3, 5),
    ("unroll", {"return_sequences": True, "unroll": True}, "arbitrary", False, 2, 3),
    ("single_step", {"return_state": True}, "none", True, 1, 1),
    ("long", {}, "none", False, 2, 32),
)  # fmt: skip


@dataclasses.dataclass
class CellResult:
    engine: str
    dtype: str
    check: str
    status: str  # pass, fail, skip
    max_rel: float | None = None
    tolerance: float | None = None
    detail: str = ""

    def line(self) -> str:
        err = (
            "" if self.max_rel is None else f" max rel {self.max_rel:.1e} (tol {self.tolerance:g})"
        )
        return f"{self.status:<4} {self.engine:<10} {self.dtype:<7} {self.check}{err} {self.detail}"


def load_cell(target: str, units: int = 3) -> cells.Cell:
    """The cell ``module:Name`` names: a ``Cell`` subclass (created with ``units``) or a
    callable returning a ``Cell``. Raises ``ValueError`` naming what is wrong."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--cell takes module:Name (e.g. mypkg.cells:MinimalGRU), got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--cell {target!r}: cannot import {module_name!r}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"--cell {target!r}: module {module_name!r} has no {attr!r}")
    cell = None
    if isinstance(obj, type) and issubclass(obj, cells.Cell):
        cell = obj(units)
    elif callable(obj) and not isinstance(obj, type):
        cell = obj()
    if not isinstance(cell, cells.Cell):
        raise ValueError(
            f"--cell {target!r} is not a multirnn.Cell subclass (or a function returning a "
            f"cell instance); got {type(obj).__name__} {attr!r}"
        )
    return cell


def _mask(kind: str, batch: int, time: int, rng: np.random.Generator) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "right_padded":
        lengths = rng.integers(1, time + 1, batch)
        return np.arange(time)[None, :] < lengths[:, None]
    mask = rng.random((batch, time)) < 0.6
    if kind == "fully_masked_rows":
        mask[0] = False
    return mask


def _runs_cells(name: str) -> bool:
    try:
        engines.engine(name).RNN  # noqa: B018 - the property raises where RNN is missing
    except (AttributeError, engines.EngineUnavailableError):
        return False
    return True


def _call(layer, x, mask, initial):
    return [
        np.asarray(a, np.float64)
        for a in _as_list(to_numpy(layer(x, mask=mask, initial_state=initial)))
    ]


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def certify(cell: cells.Cell, engine_names: list[str] | None = None, seed: int = 0):
    """Every check of the cell on every engine that runs cells (or those named)."""
    results: list[CellResult] = []
    try:
        cells.check_portable(cell)
        results.append(CellResult("standard", "-", "portable", "pass"))
    except cells.CellNotPortable as exc:
        results.append(CellResult("standard", "-", "portable", "fail", detail=str(exc)))
        return results
    names = engine_names or [n for n in engines.available() if _runs_cells(n)]
    numpy = engines.engine("numpy")
    rng = np.random.default_rng(seed)
    input_dim = 3
    for check, options, mask_kind, with_state, batch, time in GRID:
        x = rng.standard_normal((batch, time, input_dim)) * 0.8
        mask = _mask(mask_kind, batch, time, rng)
        initial = None
        if with_state:
            initial = [rng.standard_normal((batch, cell.units)) * 0.5 for _ in cell.state_names]
        reference = numpy.RNN(cell, seed=seed, dtype="float64", **options)
        want = _call(reference, x, mask, initial)
        single = numpy.RNN(cell, seed=seed, dtype="float32", **options)
        own = _call(single, x, mask, initial)
        own_error = max(tolerances.compare(g, w)[1] for g, w in zip(own, want))
        for name in names:
            for dtype in ("float64", "float32"):
                results.append(_check(name, dtype, check, cell, options, seed, x, mask, initial,
                                      want, own_error))  # fmt: skip
    for name in names:
        for dtype in ("float64", "float32"):
            results.append(_stateful(name, dtype, cell, seed, rng, input_dim))
    return results


def _check(name, dtype, check, cell, options, seed, x, mask, initial, want, own_error):
    try:
        layer = engines.engine(name).RNN(cell, seed=seed, dtype=dtype, **options)
        got = _call(layer, x, mask, initial)
    except ValueError as exc:
        if "64-bit mode" in str(exc):
            return CellResult(name, dtype, check, "skip", detail="float64 needs JAX_ENABLE_X64=1")
        return CellResult(name, dtype, check, "fail", detail=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # every exception is a finding, reported with its type
        return CellResult(name, dtype, check, "fail", detail=f"{type(exc).__name__}: {exc}")
    tol = tolerances.tolerance(dtype, "forward", own_error if dtype == "float32" else 0.0)
    worst = max(tolerances.compare(g, w)[1] for g, w in zip(got, want, strict=True))
    return CellResult(name, dtype, check, "pass" if worst <= tol else "fail", worst, tol)


def _stateful(name, dtype, cell, seed, rng, input_dim):
    # no mask: a masked step at the start of a call repeats that call's zero output, not the
    # previous call's last one, so only unmasked streams equal the whole sequence
    x = rng.standard_normal((2, 6, input_dim)) * 0.8
    try:
        eng = engines.engine(name)
        whole = _call(eng.RNN(cell, seed=seed, dtype=dtype, return_sequences=True), x, None, None)
        stream = eng.RNN(cell, seed=seed, dtype=dtype, return_sequences=True, stateful=True)
        parts = [_call(stream, x[:, :3], None, None)[0], _call(stream, x[:, 3:], None, None)[0]]
    except ValueError as exc:
        if "64-bit mode" in str(exc):
            return CellResult(name, dtype, "stateful", "skip", detail="needs JAX_ENABLE_X64=1")
        return CellResult(name, dtype, "stateful", "fail", detail=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # every exception is a finding, reported with its type
        return CellResult(name, dtype, "stateful", "fail", detail=f"{type(exc).__name__}: {exc}")
    worst = tolerances.compare(np.concatenate(parts, axis=1), whole[0])[1]
    tol = tolerances.tolerance(dtype, "stateful")
    return CellResult(name, dtype, "stateful", "pass" if worst <= tol else "fail", worst, tol)


def summary(cell: cells.Cell, results: list[CellResult]) -> str:
    failed = [r for r in results if r.status == "fail"]
    skipped = [r for r in results if r.status == "skip"]
    engines_run = sorted({r.engine for r in results if r.engine != "standard"})
    lines = [r.line() for r in failed]
    if skipped:
        lines.append(f"SKIPPED: {len(skipped)} checks ({skipped[0].detail})")
    passed = len(results) - len(failed) - len(skipped)
    lines.append(
        f"cell {type(cell).__name__}({cell.units} units): {passed} passed, {len(failed)} failed "
        f"on {', '.join(engines_run) or 'no engine'} against the NumPy engine's RNN in float64"
    )
    return "\n".join(lines)
