"""Users' own recurrent cells: declared once, run by every engine, checked by the suite.

A :class:`Cell` declares its weights (canonical NumPy arrays, initialised from the
layer's seed like the built-in layers') and its states, and writes one ``step`` against
an array namespace: the Python array API standard, plus ``ops.activation(name)`` for
multirnn's activations. ``multirnn.RNN(cell, **options)`` runs it over a sequence on the
selected engine with the ``Recurrent`` options (masks, ``go_backwards``, states, ...).

Nothing here imports a framework: engines hand their namespace to :func:`namespace`.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from multirnn import activations, constraints, initializers, precision, regularizers
from multirnn._checks import check_bool, check_positive_int, did_you_mean, is_int, show
from multirnn.layer import Buildable

__all__ = ["Cell", "Ops", "WeightDecl", "cell_from_config", "namespace", "register_cell"]

_REGISTRY: dict[str, type[Cell]] = {}


@dataclasses.dataclass(frozen=True)
class WeightDecl:
    """One weight a cell declared in ``build``: its name, shape and training options."""

    name: str
    shape: tuple[int, ...]
    initializer: Any
    regularizer: Any = None
    constraint: Any = None


class Cell:
    """Base class of a user's recurrent cell.

    Subclasses set ``state_names`` (every state is ``(batch, units)``), declare their
    weights in ``build(input_dim)`` with :meth:`add_weight`, and compute one step in
    ``step(ops, w, x, states) -> (output, new_states)``, where ``w`` maps weight names to
    the engine's arrays, ``x`` is ``(batch, input_dim)`` and the output is
    ``(batch, units)``. ``Cell(units, **config)`` keeps extra hyperparameters as
    attributes; they are the cell's config, so give JSON values.
    """

    state_names: ClassVar[tuple[str, ...]] = ("h",)

    def __init__(self, units: int, **config: Any) -> None:
        owner = type(self).__name__
        self.units = check_positive_int(owner, "units", units)
        for key, value in config.items():
            _check_option(type(self), key, value)
        self._config = dict(config)
        for key, value in config.items():
            setattr(self, key, value)
        self._recording: list[WeightDecl] | None = None
        names = type(self).state_names
        if (
            not isinstance(names, tuple)
            or not names
            or not all(isinstance(n, str) and n.isidentifier() for n in names)
            or len(set(names)) != len(names)
        ):
            raise TypeError(
                f"{owner}.state_names must be a non-empty tuple of distinct names, got "
                f"{show(names)}"
            )

    # -- what a user writes ---------------------------------------------------------------
    def build(self, input_dim: int) -> None:
        """Declare the weights for inputs of ``input_dim`` features (``add_weight``)."""
        raise NotImplementedError(f"{type(self).__name__} must define build(self, input_dim)")

    def step(self, ops: Any, w: dict[str, Any], x: Any, states: Sequence[Any]):
        """One step: ``(output, new_states)``; written against ``ops`` only."""
        raise NotImplementedError(
            f"{type(self).__name__} must define step(self, ops, w, x, states)"
        )

    def add_weight(
        self,
        name: str,
        shape: Sequence[int],
        initializer: Any = "glorot_uniform",
        regularizer: Any = None,
        constraint: Any = None,
    ) -> None:
        """Declare a weight (only inside ``build``). Initializers, regularizers and
        constraints take multirnn's names, config dicts or objects, as layer arguments do."""
        owner = type(self).__name__
        if self._recording is None:
            raise RuntimeError(f"{owner}: add_weight is called from build(self, input_dim)")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{owner}: a weight name is an identifier, got {show(name)}")
        if any(d.name == name for d in self._recording):
            raise ValueError(f"{owner}: weight {name!r} is declared twice")
        try:
            dims = tuple(shape)
        except TypeError:
            dims = None
        if not dims or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
            raise ValueError(
                f"{owner}: add_weight({name!r}) shape must be a tuple of positive integers, "
                f"got {show(shape)}"
            )
        arg = f"add_weight({name!r})"
        self._recording.append(
            WeightDecl(
                name,
                tuple(int(d) for d in dims),
                initializers.resolve(initializer, owner=owner, arg=f"{arg} initializer"),
                regularizers.resolve(regularizer, owner=owner, arg=f"{arg} regularizer"),
                constraints.resolve(constraint, owner=owner, arg=f"{arg} constraint"),
            )
        )

    # -- what engines use -----------------------------------------------------------------
    def declare(self, input_dim: int) -> tuple[WeightDecl, ...]:
        """The weights ``build(input_dim)`` declares, in order."""
        self._recording = []
        try:
            self.build(int(input_dim))
            declared = tuple(self._recording)
        finally:
            self._recording = None
        if not declared:
            raise ValueError(f"{type(self).__name__}.build declared no weight (add_weight)")
        return declared

    def initial_weights(self, input_dim: int, seed: int) -> list[np.ndarray]:
        """The declared weights' initial values in float64, a pure function of the input
        size and the seed (weight ``i`` draws from ``default_rng([seed, i])``, as the
        built-in layers' do), so one seed gives the same weights on every engine."""
        out = []
        for index, decl in enumerate(self.declare(input_dim)):
            init = decl.initializer
            if isinstance(init, initializers.Initializer):
                value = init(decl.shape, np.random.default_rng([seed, index]))
            else:
                value = np.asarray(init(decl.shape), dtype=np.float64)
            if value.shape != decl.shape:
                raise ValueError(
                    f"{type(self).__name__}: the initializer of {decl.name!r} returned shape "
                    f"{value.shape}, expected {decl.shape}"
                )
            out.append(np.asarray(value, dtype=np.float64))
        return out

    def get_config(self) -> dict[str, Any]:
        """``units`` and the extra options given at creation."""
        return {"units": self.units, **self._config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Cell:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_option(cls: type[Cell], key: str, value: Any) -> None:
    """A cell option becomes an attribute: it must not replace what the class defines (a
    config from a file could otherwise turn ``step`` or a helper method into a number, and
    the layer would fail later, far from the file). A class attribute that holds a plain
    default (``epsilon = 1e-5``) may be overridden, by a value of the same kind."""
    owner = cls.__name__
    if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
        raise ValueError(f"{owner}: cell option names are identifiers, got {show(key)}")
    if key.startswith("_") or hasattr(Cell, key):
        raise ValueError(f"{owner}: {key!r} cannot be a cell option (a reserved name)")
    default = inspect.getattr_static(cls, key, _NO_DEFAULT)
    if default is _NO_DEFAULT or default is None:
        return
    if callable(default) or hasattr(default, "__get__"):
        raise ValueError(
            f"{owner}: {key!r} cannot be a cell option: it would replace {owner}.{key}, "
            f"which the class defines ({type(default).__name__})"
        )
    for kind, what in ((bool, "True or False"), (numbers.Real, "a number"), (str, "a string")):
        if isinstance(default, kind):
            if not isinstance(value, kind) or (kind is numbers.Real and isinstance(value, bool)):
                raise ValueError(
                    f"{owner}: option {key!r} must be {what}, like its default "
                    f"{owner}.{key} = {default!r}; got {show(value)}"
                )
            return


_NO_DEFAULT = object()


def register_cell(cls: type[Cell] | None = None, *, name: str | None = None):
    """Class decorator: register a cell under ``name`` (default: its class name) so that
    configs and files naming it can be loaded. Registering another class under a taken
    name is an error."""

    def register(target: type[Cell]) -> type[Cell]:
        if not (isinstance(target, type) and issubclass(target, Cell)):
            raise TypeError(f"register_cell takes a subclass of multirnn.Cell, got {target!r}")
        key = name or target.__name__
        known = _REGISTRY.get(key)
        if known is not None and _qualified(known) != _qualified(target):
            raise ValueError(
                f"register_cell: the name {key!r} is taken by {_qualified(known)}; "
                "pass name= to register this one under another"
            )
        _REGISTRY[key] = target
        target.registered_name = key
        return target

    return register if cls is None else register(cls)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def cell_config(cell: Cell) -> dict[str, Any]:
    """A cell as ``{"class_name": registered name, "config": ...}`` (JSON-compatible)."""
    key = getattr(type(cell), "registered_name", None)
    if key is None or _REGISTRY.get(key) is not type(cell):
        raise TypeError(
            f"{type(cell).__name__} is not registered, so a config or file could not name it; "
            "decorate the class with @multirnn.register_cell"
        )
    return {"class_name": key, "config": cell.get_config()}


def cell_from_config(config: dict[str, Any]) -> Cell:
    """The cell a :func:`cell_config` dict describes (its class must be registered)."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(
            f"a cell config is {{'class_name': <registered name>, 'config': {{...}}}}, got "
            f"{show(config)}"
        )
    key = config["class_name"]
    if key not in _REGISTRY:
        hint = did_you_mean(key, _REGISTRY)
        raise ValueError(
            f"unknown cell {key!r}.{hint} Registered: {', '.join(sorted(_REGISTRY)) or 'none'}; "
            "import the module that defines it (decorated with @multirnn.register_cell) first"
        )
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"cell {key!r}: 'config' must be a dict, got {show(inner)}")
    return _REGISTRY[key].from_config(inner)


# -- the namespace a step sees ------------------------------------------------------------------


class Ops:
    """An engine's array namespace (array API standard) plus ``activation(name)``.

    Attribute access goes to the namespace (``ops.tanh``, ``ops.concat``, ``ops.where``);
    ``ops.activation("hard_sigmoid")`` is multirnn's activation of that name, evaluated
    with the engine's ops, so a cell's gates compute exactly the built-in layers' formula.
    """

    def __init__(
        self, xp: Any, activation_ops: Any, name: str, native: dict[str, Callable] | None = None
    ) -> None:
        self._xp = xp
        self._activation_ops = activation_ops
        self.name = name
        # the engine's own implementations where they compute the formula exactly (as its
        # built-in layers use them): one framework call instead of a few
        self._cache: dict[str, Callable[[Any], Any]] = dict(native or {})

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._xp, attr)

    def activation(self, name: Any) -> Callable[[Any], Any]:
        key = activations.resolve(name, owner="ops", arg="activation")
        if not isinstance(key, str):
            return key
        if key not in self._cache:
            self._cache[key] = activations.function(key, self._activation_ops)
        return self._cache[key]

    def __repr__(self) -> str:
        return f"Ops({self.name})"


def namespace(
    xp: Any, activation_ops: Any, name: str, native: dict[str, Callable] | None = None
) -> Ops:
    """The ``ops`` a step receives on one engine: ``xp`` the array API namespace,
    ``activation_ops`` what multirnn's activation formulas are evaluated with, ``native``
    the engine's exact native activations by name."""
    return Ops(xp, activation_ops, name, native)


# -- the layer's options --------------------------------------------------------------------

#: ``RNN(cell, ...)``'s options: the documented Recurrent options and multirnn's extensions
#: that apply to any cell (no dropout: a cell that wants it draws it in its own step).
RNN_OPTIONS: dict[str, Any] = {
    "return_sequences": False,
    "return_state": False,
    "go_backwards": False,
    "stateful": False,
    "unroll": False,
    "zero_output_for_mask": False,
    "seed": None,
    "dtype": None,
    "input_dim": None,
    "name": None,
}


@dataclasses.dataclass(frozen=True)
class RNNSpec:
    """A cell and the options it runs with, validated (the cell's counterpart of
    :class:`multirnn.spec.LayerSpec`)."""

    cell: Cell
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool = False
    zero_output_for_mask: bool = False
    seed: int | None = None
    dtype: str | None = None
    input_dim: int | None = None
    name: str | None = None

    @property
    def layer(self) -> str:
        return type(self.cell).__name__

    @property
    def units(self) -> int:
        return self.cell.units

    @property
    def state_names(self) -> tuple[str, ...]:
        return type(self.cell).state_names

    # the Keras 2 size checks of the built-in layers do not apply to RNN(cell)
    input_length = None
    batch_size = None

    @property
    def num_states(self) -> int:
        return len(self.state_names)

    def weight_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        return {d.name: d.shape for d in self.cell.declare(input_dim)}

    def to_config(self) -> dict[str, Any]:
        return {"cell": cell_config(self.cell)} | {key: getattr(self, key) for key in RNN_OPTIONS}

    def __hash__(self) -> int:
        return hash(repr(self))


class RNNCore(Buildable):
    """Mixin: what every engine's ``RNN`` shares, independent of the framework (the cells'
    counterpart of :class:`multirnn.layer.LayerCore`)."""

    spec: RNNSpec
    input_dim: int | None
    #: how the "needs the weights" message ends (JAX adds that jit needs a built layer)
    _unbuilt_hint: str = "call the layer once, or pass input_dim="

    def _require_built(self, what: str) -> list:
        """The weights in order, or a message saying how to create them."""
        if not self.built:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                f"build((batch, time, features)), {self._unbuilt_hint}"
            )
        return self._weights()

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in order (the canonical layout of the
        built-in layers, the declared order of a cell's)."""
        return [self._arrays.to_numpy(w) for w in self._require_built("get_weights")]

    def get_config(self) -> dict[str, Any]:
        """The cell (by its registered name) and the options; a built layer records its
        input size, which the cell's declarations depend on."""
        return self.spec.to_config() | {"input_dim": self.input_dim or self.spec.input_dim}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        config = dict(config)
        cell = cell_from_config(config.pop("cell", None))
        return cls(cell, **config)

    def _build_from_arguments(self) -> None:
        """Build at creation when ``input_dim`` is given (not inside ``created_unbuilt``,
        where ``load`` builds from a file's arrays and the initializers never run)."""
        from multirnn.layer import builds_at_creation

        if self.spec.input_dim is not None and builds_at_creation():
            self.build((None, None, self.spec.input_dim))


def parse_rnn(cell: Any, kwargs: dict[str, Any]) -> RNNSpec:
    """Validate ``RNN(cell, **kwargs)``."""
    from multirnn import spec as specs

    if not isinstance(cell, Cell):
        raise TypeError(f"RNN takes a multirnn.Cell as its first argument, got {show(cell)}")
    unknown = sorted(set(kwargs) - set(RNN_OPTIONS))
    if unknown:
        hint = did_you_mean(unknown[0], RNN_OPTIONS)
        extra = (
            " (a cell that needs dropout draws it in its own step)"
            if {"dropout", "recurrent_dropout"} & set(unknown)
            else ""
        )
        raise TypeError(
            f"RNN got an unexpected keyword argument {unknown[0]!r}.{hint}{extra} Valid "
            f"keywords: {', '.join(RNN_OPTIONS)}"
        )
    owner = f"RNN({type(cell).__name__})"
    given = RNN_OPTIONS | kwargs
    fields: dict[str, Any] = {"cell": cell}
    for key in ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                "zero_output_for_mask"):  # fmt: skip
        fields[key] = check_bool(owner, key, given[key])
    # seed, dtype, input_dim and name mean what they mean on the built-in layers
    seed = given["seed"]
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"{owner}: seed must be None or an integer >= 0, got {show(seed)}")
    fields["seed"] = None if seed is None else int(seed)
    fields["dtype"] = specs._dtype(owner, given["dtype"])
    dim = given["input_dim"]
    fields["input_dim"] = None if dim is None else check_positive_int(owner, "input_dim", dim)
    if given["name"] is not None and not isinstance(given["name"], str):
        raise TypeError(f"{owner}: name must be a string or None, got {show(given['name'])}")
    fields["name"] = given["name"]
    return RNNSpec(**fields)


# -- portability ----------------------------------------------------------------------------


class CellNotPortable(TypeError):
    """A cell's ``step`` used something outside the array API namespace it was given."""


def _strict_activation_ops(xp: Any) -> Any:
    from types import SimpleNamespace

    def _sum(x, axis=None, keepdims=False):
        return xp.sum(x, axis=axis, keepdims=keepdims)

    def _max(x, axis=None, keepdims=False):
        return xp.max(x, axis=axis, keepdims=keepdims)

    return SimpleNamespace(
        abs=xp.abs, square=xp.square, sqrt=xp.sqrt, exp=xp.exp, expm1=xp.expm1,
        log1p=xp.log1p, tanh=xp.tanh, sigmoid=lambda x: 1.0 / (1.0 + xp.exp(-x)),
        maximum=xp.maximum, minimum=xp.minimum, clip=xp.clip, where=xp.where, sum=_sum,
        max=_max,
    )  # fmt: skip


def check_portable(cell: Cell, input_dim: int = 3, batch: int = 2) -> None:
    """Run ``cell.step`` once on array-api-strict arrays, the standard and nothing more: a
    step that calls a framework's own function (``torch.sigmoid``) or a method outside the
    standard fails here with :class:`CellNotPortable`, naming the call and its line."""
    import traceback

    try:
        import array_api_strict as xp
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            'checking a cell needs array-api-strict: pip install ".[test]" from a multirnn '
            "checkout, or pip install array-api-strict"
        ) from exc
    owner = type(cell).__name__
    rng = np.random.default_rng(0)
    weights = cell.initial_weights(input_dim, seed=0)
    names = [d.name for d in cell.declare(input_dim)]
    w = {n: xp.asarray(v) for n, v in zip(names, weights)}
    x = xp.asarray(rng.standard_normal((batch, input_dim)))
    states = [xp.asarray(rng.standard_normal((batch, cell.units))) for _ in cell.state_names]
    ops = namespace(xp, _strict_activation_ops(xp), "array-api-strict")
    try:
        cell.step(ops, w, x, states)
    except Exception as exc:
        import inspect

        try:
            source = inspect.getsourcefile(type(cell))
        except (TypeError, OSError):  # defined in exec'd code, a notebook, ...
            source = None
        frames = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in frames if f.filename == source] or [
            f for f in frames if f.filename != __file__
        ]
        where = (
            f" at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        )
        raise CellNotPortable(
            f"{owner}.step is not portable: on the array API standard alone (array-api-strict) "
            f"it raised {type(exc).__name__}: {exc}{where}. Use only the functions of the ops "
            "namespace it is given (ops.tanh, ops.activation('sigmoid'), ...), not a "
            "framework's own"
        ) from exc


# -- checks every engine's RNN shares (one vocabulary, as multirnn.calls for the layers) --------


def check_step(spec, output, states, batch: int) -> None:
    """A step's result must be ``(output (batch, units), [one (batch, units) per state])``."""
    owner = f"{spec.layer}.step"
    want = (batch, spec.units)
    if not isinstance(states, (list, tuple)) or len(states) != spec.num_states:
        raise ValueError(
            f"{owner} must return (output, new_states) with {spec.num_states} state(s) "
            f"[{', '.join(spec.state_names)}]; got {type(states).__name__} "
            f"{len(states) if isinstance(states, (list, tuple)) else ''}"
        )
    for what, value in [("output", output), *list(zip(spec.state_names, states))]:
        if tuple(getattr(value, "shape", ())) != want:
            raise ValueError(
                f"{owner} returned {what} of shape {tuple(getattr(value, 'shape', ()))}; every "
                f"output and state is (batch, units) = {want}"
            )


def masked(ops: Any, spec, keep, output, new: list, states: list, previous) -> tuple:
    """One step under a mask, as every engine's ``RNN`` applies it: where ``keep`` is false
    the states stay and the output is zeros (``zero_output_for_mask``) or the previous
    output (zeros before the first step, ``previous`` None)."""
    new = [ops.where(keep, n, s) for n, s in zip(new, states)]
    held = ops.zeros_like(output) if spec.zero_output_for_mask or previous is None else previous
    return ops.where(keep, output, held), new


def unrolled(ops: Any, spec, step: Callable, xs: Sequence, keeps: Sequence | None,
             states: list) -> tuple[list, list]:  # fmt: skip
    """The steps in a Python loop: ``xs`` the steps' inputs in processing order, ``keeps``
    their ``(batch, 1)`` masks (or None), ``step(x_t, states, first)`` one step of the cell
    in the layer's dtype. Returns every step's output and the final states."""
    outputs, previous = [], None
    for index, x_t in enumerate(xs):
        output, new = step(x_t, states, index == 0)
        if keeps is not None:
            output, new = masked(ops, spec, keeps[index], output, new, states, previous)
        states, previous = new, output
        outputs.append(output)
    return outputs, states


def input_dim_of(cell: Cell, weights: list[np.ndarray]) -> int:
    """The input size whose declared shapes the given weights have (tried from their
    shapes, since declarations depend on it)."""
    for candidate in sorted({d for w in weights for d in w.shape}):
        decls = cell.declare(candidate)
        if len(decls) == len(weights) and all(d.shape == w.shape for d, w in zip(decls, weights)):
            return candidate
    raise ValueError(
        f"{type(cell).__name__}: set_weights got shapes {[w.shape for w in weights]}, which "
        "the cell declares for no input size; build the layer first"
    )


def check_weights(owner: str, cell: Cell, arrays: list[np.ndarray], input_dim: int | None) -> int:
    """Weights given to ``set_weights`` (as NumPy arrays): the cell's declared count, shapes
    and floating-point values, each error naming the weight. Returns the input size (worked
    out from the shapes when the layer is not built yet)."""
    if not arrays or arrays[0].ndim < 1:
        raise ValueError(f"{owner}: set_weights takes the cell's weights, in order")
    if input_dim is None:
        input_dim = input_dim_of(cell, arrays)
    decls = cell.declare(input_dim)
    if len(arrays) != len(decls):
        raise ValueError(
            f"{owner}: {type(cell).__name__} has {len(decls)} weights "
            f"({', '.join(d.name for d in decls)}), got {len(arrays)}"
        )
    for decl, value in zip(decls, arrays):
        if value.shape != decl.shape:
            raise ValueError(
                f"{owner}: weight {decl.name!r} must have shape {decl.shape}, got {value.shape}"
            )
        if not precision.is_floating(value.dtype):
            raise TypeError(
                f"{owner}: weight {decl.name!r} must hold floating-point numbers, got "
                f"{value.dtype.name}"
            )
    return input_dim
