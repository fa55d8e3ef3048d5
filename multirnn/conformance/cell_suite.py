"""Certifying a user's cell: the same function on every engine, or a named failure.

``multirnn conformance --cell mypkg.cells:MinimalGRU`` (or the pytest option
``--multirnn-cell``) checks, in order:

1. portability: one step on array-api-strict, the standard and nothing more;
2. forward: every engine that runs cells (``RNN``) against the NumPy engine's ``RNN`` in
   float64, over a grid of ``Recurrent`` options (sequences, states, ``go_backwards``,
   masks of every kind, ``zero_output_for_mask``, ``initial_state``, ``unroll``, single
   steps and rows), in float64 and float32, with the suite's tolerance policy;
3. gradients: on every engine with autodiff, the gradients its framework computes
   (``torch.autograd``, ``jax.grad``, ``tf.GradientTape``; see
   :meth:`~multirnn.conformance.adapters.EngineAdapter.cell_gradients`) in float64, with
   respect to the inputs, the initial states (when given) and every weight the cell
   declared, against central finite differences of the NumPy engine's ``RNN``, over a
   sub-grid of options. A random cotangent (fixed seed) weighs every output, states
   included, into one scalar loss, so one gradient covers them all;
4. stateful: two calls of a stateful layer against one call over the whole sequence.

Each check draws its data from its own seeded stream, so one check re-runs alone: every
failure carries a one-line reproducer calling :func:`reproduce`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from multirnn import cells, engines
from multirnn.arrays import to_numpy
from multirnn.conformance import tolerances
from multirnn.conformance.adapters import listed
from multirnn.conformance.report import how_to_enable

#: The engine whose ``RNN`` is the oracle (its gradients are its finite differences).
REFERENCE = "numpy"

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

#: The gradient sub-grid, as GRID. Small on purpose: the finite differences cost two
#: reference calls per input, state and weight entry.
GRADIENT_GRID: tuple[tuple[str, dict[str, Any], str, bool, int, int], ...] = (
    ("plain", {}, "none", False, 2, 3),
    ("sequences_backwards", {"return_sequences": True, "go_backwards": True}, "none", False,
     2, 3),
    ("masked_initial_state", {"return_sequences": True}, "fully_masked_rows", True, 3, 3),
    ("return_state", {"return_state": True}, "none", False, 2, 3),
)  # fmt: skip

#: Input features of the forward and stateful checks, and of the gradient checks (fewer:
#: each one is a column of finite differences).
INPUT_DIM, GRADIENT_INPUT_DIM = 3, 2

GRADIENTS = "gradients/"
PORTABLE, STATEFUL = "portable", "stateful"
DTYPES = ("float64", "float32")


@dataclasses.dataclass(frozen=True)
class Check:
    """One check of a certification: ``name`` is ``portable`` (engine ``standard``, dtype
    ``-``), a :data:`GRID` row, ``gradients/<row>`` (a :data:`GRADIENT_GRID` row, float64)
    or ``stateful``."""

    engine: str
    dtype: str
    name: str

    @property
    def id(self) -> str:
        """``engine-dtype-name`` (``portable`` alone): a pytest id, every character of
        which ``-k`` accepts."""
        return PORTABLE if self.name == PORTABLE else f"{self.engine}-{self.dtype}-{self.name}"


@dataclasses.dataclass
class CellResult:
    engine: str
    dtype: str
    check: str
    status: str  # pass, fail, skip
    max_rel: float | None = None
    tolerance: float | None = None
    detail: str = ""
    #: the command that re-runs this check alone (see :func:`reproduce`)
    reproducer: str = ""
    #: max relative error per compared array (``output``, ``d/kernel``, ...)
    errors: dict[str, float] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        err = (
            "" if self.max_rel is None else f" max rel {self.max_rel:.1e} (tol {self.tolerance:g})"
        )
        return f"{self.status:<4} {self.engine:<10} {self.dtype:<7} {self.check}{err} {self.detail}"


def _resolve(target: str, option: str) -> tuple[str, str, Any]:
    """``(module name, attribute, object)`` of ``module:Name``; ``ValueError`` naming the
    ``option`` and what is wrong: the syntax, the module that does not import, or the
    missing name and the cells the module does define."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"{option} takes module:Name (e.g. mypkg.cells:MinimalGRU), got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the module's own errors too: it does not load either way
        why = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.partition(".")[0]:
            why += " (is it installed, or is its directory on sys.path / PYTHONPATH?)"
        raise ValueError(f"{option} {target!r}: cannot import {module_name!r}: {why}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        found = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, cells.Cell) and value is not cells.Cell
        )
        defined = f"its cells: {', '.join(found)}" if found else "it defines no multirnn.Cell"
        raise ValueError(f"{option} {target!r}: module {module_name!r} has no {attr!r}; {defined}")
    return module_name, attr, obj


def load_cell(
    target: str,
    units: int = 3,
    config: dict[str, Any] | None = None,
    *,
    option: str = "--cell",
) -> cells.Cell:
    """The cell ``module:Name`` names: a ``Cell`` subclass (created with ``units``, or from
    ``config``) or a callable returning a ``Cell``. Raises ``ValueError`` naming
    ``option`` and what is wrong."""
    _, attr, obj = _resolve(target, option)
    cell = None
    if isinstance(obj, type) and issubclass(obj, cells.Cell):
        cell = obj.from_config(config) if config else obj(units)
    elif callable(obj) and not isinstance(obj, type):
        cell = obj()
    if not isinstance(cell, cells.Cell):
        raise ValueError(
            f"{option} {target!r} is not a multirnn.Cell subclass (or a function returning a "
            f"cell instance); got {type(obj).__name__} {attr!r}"
        )
    return cell


def target_of(cell: cells.Cell) -> str:
    """``module:Name`` of a cell's class: what a reproducer loads when none was given."""
    cls = type(cell)
    return f"{cls.__module__}:{cls.__qualname__}"


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


def runs_cells(name: str) -> bool:
    """Whether engine ``name`` is installed and has an ``RNN`` for users' cells (what the
    command line's ``--engines`` and the pytest option accept with ``--cell``)."""
    try:
        engines.engine(name).RNN  # noqa: B018 - the property raises where RNN is missing
    except (AttributeError, engines.EngineUnavailableError):
        return False
    return True


def cell_engines() -> list[str]:
    """The installed engines that run users' cells."""
    return [n for n in engines.available() if runs_cells(n)]


def _call(layer, x, mask, initial):
    return [
        np.asarray(a, np.float64)
        for a in listed(to_numpy(layer(x, mask=mask, initial_state=initial)))
    ]


@dataclasses.dataclass
class _Row:
    """A grid row's data and what the engines are compared with: the reference's results
    (forward rows) or its finite-difference gradients (gradient rows), named."""

    options: dict[str, Any]
    x: np.ndarray
    mask: np.ndarray | None
    initial: list[np.ndarray] | None
    want: list[np.ndarray]
    names: list[str]
    own_error: float = 0.0  # the float32 reference's own error (forward rows)
    cotangents: list[np.ndarray] = dataclasses.field(default_factory=list)
    weights: list[np.ndarray] = dataclasses.field(default_factory=list)
    fd_roundoff: float = 0.0


def central_differences(
    loss: Callable[[list[np.ndarray]], float], leaves: list[np.ndarray]
) -> list[np.ndarray]:
    """The gradient of ``loss`` at ``leaves`` by central differences (step
    ``tolerances.FD_STEP``), one entry at a time."""
    h = tolerances.FD_STEP
    grads = []
    for index, leaf in enumerate(leaves):
        grad = np.zeros_like(leaf, dtype=np.float64)
        for j in range(leaf.size):
            values = []
            for sign in (1.0, -1.0):
                moved = leaf.astype(np.float64, copy=True)
                moved.reshape(-1)[j] += sign * h
                values.append(loss([*leaves[:index], moved, *leaves[index + 1 :]]))
            grad.reshape(-1)[j] = (values[0] - values[1]) / (2 * h)
        grads.append(grad)
    return grads


class Certification:
    """One cell's checks on a set of engines: the plan (:meth:`plan`) and each check run on
    its own (:meth:`run`), sharing the reference's results between engines. The command
    line runs them all; the pytest plugin makes one test of each."""

    def __init__(
        self,
        cell: cells.Cell,
        engine_names: Sequence[str] | None = None,
        *,
        dtypes: Sequence[str] = DTYPES,
        seed: int = 0,
        target: str | None = None,
    ) -> None:
        self.cell = cell
        self.engines = list(engine_names) if engine_names else cell_engines()
        self.dtypes = [d for d in DTYPES if d in dtypes]
        self.seed = seed
        self.target = target or target_of(cell)
        self._adapters: dict[str, Any] = {}
        self._rows: dict[str, _Row] = {}  # the reference's side of each row, computed once
        self._problem: list[str | None] = []  # the portability check's finding, once

    # -- the plan -------------------------------------------------------------------------
    def plan(self) -> list[Check]:
        checks = [Check("standard", "-", PORTABLE)]
        checks += [Check(e, d, row[0]) for row in GRID for e in self.engines for d in self.dtypes]
        if "float64" in self.dtypes:
            checks += [
                Check(e, "float64", GRADIENTS + row[0])
                for row in GRADIENT_GRID
                for e in self.engines
                if e != REFERENCE  # the oracle: its gradients are the finite differences
            ]
        checks += [Check(e, d, STATEFUL) for e in self.engines for d in self.dtypes]
        return checks

    # -- running ------------------------------------------------------------------------------
    def run_all(self) -> list[CellResult]:
        """Every check of the plan; only the portability check when it fails."""
        plan = self.plan()
        first = self.run(plan[0])
        if first.status == "fail":
            return [first]
        return [first, *(self.run(check) for check in plan[1:])]

    def run(self, check: Check) -> CellResult:
        """Run ``check``; every exception an engine raises is a failure with its type."""
        result = self._run(check)
        if result.status == "fail":
            result.reproducer = self.reproducer(check)
        return result

    def _run(self, check: Check) -> CellResult:
        def result(status: str, **kw: Any) -> CellResult:
            return CellResult(check.engine, check.dtype, check.name, status, **kw)

        if check.name == PORTABLE:
            problem = self._portability()
            return result("pass") if problem is None else result("fail", detail=problem)
        if self._portability() is not None:
            return result("skip", detail="the cell is not portable (see the portable check)")
        try:
            if check.name == STATEFUL:
                return self._stateful(check, result)
            if check.name.startswith(GRADIENTS):
                return self._gradients(check, result)
            return self._forward(check, result)
        except ValueError as exc:
            if "64-bit mode" in str(exc):
                return result("skip", detail="float64 needs JAX_ENABLE_X64=1")
            return result("fail", detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # every exception is a finding, reported with its type
            return result("fail", detail=f"{type(exc).__name__}: {exc}")

    def _portability(self) -> str | None:
        if not self._problem:
            try:
                cells.check_portable(self.cell)
                self._problem.append(None)
            except cells.CellNotPortable as exc:
                self._problem.append(str(exc))
        return self._problem[0]

    def _layer(self, engine: str, dtype: str, options: dict[str, Any]):
        return engines.engine(engine).RNN(self.cell, seed=self.seed, dtype=dtype, **options)

    def _names(self, count: int) -> list[str]:
        return ["output", *(f"state[{n}]" for n in self.cell.state_names)][:count]

    @staticmethod
    def _verdict(result, got, want, names, tol: float) -> CellResult:
        if len(got) != len(want):
            return result("fail", detail=f"returned {len(got)} arrays, expected {len(want)}")
        errors = {n: tolerances.compare(g, w)[1] for n, g, w in zip(names, got, want)}
        worst = max(errors, key=errors.__getitem__)
        status = "pass" if errors[worst] <= tol else "fail"
        detail = f"worst: {worst}" if status == "fail" else ""
        return result(status, max_rel=errors[worst], tolerance=tol, detail=detail, errors=errors)

    def _row(self, name: str) -> _Row:
        if name not in self._rows:
            make = self._gradient_row if name.startswith(GRADIENTS) else self._forward_row
            self._rows[name] = make(name.removeprefix(GRADIENTS))
        return self._rows[name]

    def _draw(self, grid, stream: int, name: str, input_dim: int):
        """A grid row's options and its random inputs, mask and initial states, drawn from
        the certification's seed, the grid's stream and the row's index; and the
        generator, for what a row draws next."""
        index = [row[0] for row in grid].index(name)
        _, options, mask_kind, with_state, batch, time = grid[index]
        rng = np.random.default_rng([self.seed, stream, index])
        x = rng.standard_normal((batch, time, input_dim)) * 0.8
        mask = _mask(mask_kind, batch, time, rng)
        initial = None
        if with_state:
            initial = [rng.standard_normal((batch, self.cell.units)) * 0.5
                       for _ in self.cell.state_names]  # fmt: skip
        return options, x, mask, initial, rng

    def _forward_row(self, name: str) -> _Row:
        options, x, mask, initial, _ = self._draw(GRID, 0, name, INPUT_DIM)
        want = _call(self._layer(REFERENCE, "float64", options), x, mask, initial)
        own = _call(self._layer(REFERENCE, "float32", options), x, mask, initial)
        own_error = max(tolerances.compare(g, w)[1] for g, w in zip(own, want))
        return _Row(options, x, mask, initial, want, self._names(len(want)), own_error)

    def _forward(self, check: Check, result) -> CellResult:
        row = self._row(check.name)
        got = _call(self._layer(check.engine, check.dtype, row.options), row.x, row.mask,
                    row.initial)  # fmt: skip
        tol = tolerances.tolerance(check.dtype, "forward",
                                   row.own_error if check.dtype == "float32" else 0.0)  # fmt: skip
        return self._verdict(result, got, row.want, row.names, tol)

    def _gradient_row(self, name: str) -> _Row:
        """The reference's results on a gradient row, a random cotangent for each, and the
        finite-difference gradients of their weighted sum."""
        options, x, mask, initial, rng = self._draw(GRADIENT_GRID, 1, name, GRADIENT_INPUT_DIM)
        reference = self._layer(REFERENCE, "float64", options)
        want = _call(reference, x, mask, initial)
        cotangents = [rng.standard_normal(w.shape) for w in want]
        weights = reference.get_weights()
        states = len(initial or [])

        def loss(leaves: list[np.ndarray]) -> float:
            reference.set_weights(leaves[1 + states :])
            got = _call(reference, leaves[0], mask, leaves[1 : 1 + states] or None)
            return float(sum(np.sum(c * r) for c, r in zip(cotangents, got)))

        grads = central_differences(loss, [x, *(initial or []), *weights])
        names = ["d/inputs", *(f"d/initial_state[{n}]" for n in self.cell.state_names[:states]),
                 *(f"d/{n}" for n in reference.weight_names)]  # fmt: skip
        # the differences' roundoff, eps * (sum of the loss terms' magnitudes) / h, bounds the
        # tolerance from below, as for the layers (see tolerances)
        scale = sum(float(np.sum(np.abs(c * r))) for c, r in zip(cotangents, want))
        roundoff = float(np.finfo(np.float64).eps) * scale / tolerances.FD_STEP
        return _Row(options, x, mask, initial, grads, names, cotangents=cotangents,
                    weights=weights, fd_roundoff=roundoff)  # fmt: skip

    def adapter(self, engine: str):
        """The engine's conformance adapter (None when it has none), made once."""
        if engine not in self._adapters:
            from multirnn.conformance import adapters

            try:
                self._adapters[engine] = adapters.adapter(engine)
            except engines.EngineUnavailableError:
                self._adapters[engine] = None
        return self._adapters[engine]

    def _gradients(self, check: Check, result) -> CellResult:
        row = self._row(check.name)
        tol = tolerances.tolerance("float64", "gradients", fd_roundoff=row.fd_roundoff)
        adapter = self.adapter(check.engine)
        if adapter is None:
            return result("skip", detail=f"{check.engine} provides no conformance adapter")
        layer = self._layer(check.engine, "float64", row.options)
        layer.set_weights(row.weights)
        got = adapter.cell_gradients(layer, row.x, mask=row.mask, initial_state=row.initial,
                                     cotangents=row.cotangents)  # fmt: skip
        if got is None:
            return result("skip", detail=f"{check.engine} has no autodiff for cells")
        weights = got.get("weights", {})
        if set(weights) != set(layer.weight_names):
            return result("fail", detail=f"gradients for weights {sorted(weights)}, expected "
                                         f"{sorted(layer.weight_names)}")  # fmt: skip
        arrays = [got["inputs"], *(got.get("initial_state") or [])]
        arrays += [weights[n] for n in layer.weight_names]
        got = [np.asarray(a, np.float64) for a in arrays]
        return self._verdict(result, got, row.want, row.names, tol)

    def _stateful(self, check: Check, result) -> CellResult:
        # no mask: a masked step at the start of a call repeats that call's zero output, not
        # the previous call's last one, so only unmasked streams equal the whole sequence
        rng = np.random.default_rng([self.seed, 2])
        x = rng.standard_normal((2, 6, INPUT_DIM)) * 0.8
        whole = _call(self._layer(check.engine, check.dtype, {"return_sequences": True}), x,
                      None, None)  # fmt: skip
        stream = self._layer(check.engine, check.dtype,
                             {"return_sequences": True, "stateful": True})  # fmt: skip
        parts = [_call(stream, x[:, :3], None, None)[0], _call(stream, x[:, 3:], None, None)[0]]
        got = [np.concatenate(parts, axis=1)]
        tol = tolerances.tolerance(check.dtype, "stateful")
        return self._verdict(result, got, whole[:1], ["output"], tol)

    # -- reproducing --------------------------------------------------------------------------
    def reproducer(self, check: Check) -> str:
        """A shell command re-running ``check`` alone, with the settings its engine needs."""
        config = self.cell.get_config()
        args = [repr(self.target), repr(check.engine), repr(check.dtype), repr(check.name)]
        if set(config) != {"units"}:
            args.append(f"config={config!r}")
        elif config["units"] != 3:
            args.append(f"units={config['units']}")
        if self.seed:
            args.append(f"seed={self.seed}")
        adapter = self.adapter(check.engine) if check.engine != "standard" else None
        env = adapter.environment() if adapter is not None else ""
        prefix = f"{env} " if env else ""
        return (
            f'{prefix}python -c "from multirnn.conformance import cell_suite; '
            f'cell_suite.reproduce({", ".join(args)})"'
        )

    def source(self) -> tuple[str | None, int | None]:
        """The file and line of the cell's class (where a failing test points)."""
        cls = type(self.cell)
        try:
            return inspect.getsourcefile(cls), inspect.getsourcelines(cls)[1]
        except (OSError, TypeError):
            return None, None


def certify(
    cell: cells.Cell,
    engine_names: list[str] | None = None,
    seed: int = 0,
    target: str | None = None,
) -> list[CellResult]:
    """Every check of the cell on every engine that runs cells (or those named); only the
    portability check when it fails."""
    return Certification(cell, engine_names, seed=seed, target=target).run_all()


def reproduce(
    target: str,
    engine: str,
    dtype: str,
    check: str,
    *,
    units: int = 3,
    config: dict[str, Any] | None = None,
    seed: int = 0,
) -> CellResult:
    """Re-run one check of the cell ``module:Name`` and print its errors, array by array;
    the reproducer printed for each failure calls this."""
    cell = load_cell(target, units, config)
    engine_names = [REFERENCE if engine == "standard" else engine]
    certification = Certification(cell, engine_names, seed=seed, target=target)
    result = certification.run(Check(engine, dtype, check))
    print(f"{target} {cell!r}: {result.line()}".rstrip())
    for name, error in result.errors.items():
        print(f"  {name:<24} max rel {error:.3e}")
    return result


def skipped_lines(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """``(engine, dtype, reason)`` of each skipped check, as one loud line per group, with
    the setting that runs them where the reason names one."""
    groups: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in rows:
        groups[row] += 1
    lines = []
    for (engine, dtype, reason), count in groups.items():
        enable = how_to_enable(reason)
        lines.append(f"SKIPPED: {engine} {dtype}, {count} check{'s' * (count != 1)}: {reason}"
                     + (f"; to run them, {enable}" if enable else ""))  # fmt: skip
    return lines


def describe(certification: Certification) -> str:
    """What a certification checks, for the first lines of a run."""
    graded = [e for e in certification.engines if e != REFERENCE]
    dtypes = " and ".join(certification.dtypes)
    lines = [
        f"multirnn conformance (cell): {certification.target}, {certification.cell!r}; "
        f"engines {', '.join(certification.engines) or 'none'}",
        f"  forward: {len(GRID)} option sets in {dtypes}, against the NumPy engine's RNN",
        f"  gradients: {len(GRADIENT_GRID)} option sets in float64, each framework's autodiff "
        f"({', '.join(graded) or 'no engine'}) against central differences of the NumPy "
        f"engine's RNN (h = {tolerances.FD_STEP:g}, tol "
        f"{tolerances.POLICY[('float64', 'gradients')]:g})",
        "  stateful: two calls of a stateful layer against one call",
    ]
    if "float64" not in certification.dtypes:
        lines[2] = "  gradients: not checked (float64 only)"
    return "\n".join(lines)


def summary(cell: cells.Cell, results: list[CellResult]) -> str:
    """Each failure with its reproducer, the skipped groups, and a closing count."""
    failed = [r for r in results if r.status == "fail"]
    skipped = [r for r in results if r.status == "skip"]
    engines_run = sorted({r.engine for r in results if r.engine != "standard"})
    lines = []
    for r in failed:
        lines.append(r.line().rstrip())
        if r.reproducer:
            lines.append(f"  reproduce: {r.reproducer}")
    lines += skipped_lines([(r.engine, r.dtype, r.detail) for r in skipped])
    passed = len(results) - len(failed) - len(skipped)
    graded = sorted({r.engine for r in results
                     if r.check.startswith(GRADIENTS) and r.status != "skip"})  # fmt: skip
    gradients = f"; gradients on {', '.join(graded)}" if graded else ""
    lines.append(
        f"cell {type(cell).__name__}({cell.units} units): {passed} passed, {len(failed)} failed "
        f"on {', '.join(engines_run) or 'no engine'} against the NumPy engine's RNN in float64"
        f"{gradients}"
    )
    return "\n".join(lines)
