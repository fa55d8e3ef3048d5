"""``Bidirectional``: what every engine's wrapper shares, independent of the framework.

Keras semantics: the wrapper holds a forward copy of the layer and a backward copy built
with ``go_backwards`` flipped; with ``return_sequences`` the backward outputs are reversed
back to input order before merging; states come forward first. Like Keras, both copies
emit zeros at masked steps when returning sequences (``zero_output_for_mask`` follows
``return_sequences``), so that the two directions line up step by step.

The wrapped layer is a built-in one (a :class:`~multirnn.spec.LayerSpec`) or ``RNN(cell)``
(a :class:`~multirnn.cells.RNNSpec`). For a cell, each direction runs its own copy of the
cell (``from_config(get_config())``, as Keras copies a wrapped layer through its config)
with its own weights; the backward copy is seeded with ``seed + 1`` like the built-in
layers' backward copy, so the two directions never start equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multirnn import calls, cells
from multirnn._checks import check_bool, show
from multirnn.cells import RNNSpec
from multirnn.spec import LayerSpec

#: What a wrapper wraps: a built-in layer's spec or ``RNN(cell)``'s.
WrappedSpec = LayerSpec | RNNSpec

MERGE_MODES = ("concat", "sum", "mul", "ave", None)

#: Keras 2 keywords a wrapper takes and hands to the layer it wraps (``Bidirectional(LSTM(8),
#: input_shape=(10, 4))`` is how Keras 2 code starts a model with one)
LAYER_KEYWORDS = ("input_shape", "batch_input_shape", "batch_size", "input_length",
                  "input_dim", "trainable")  # fmt: skip


def check_merge_mode(value: object) -> str | None:
    if value not in MERGE_MODES or isinstance(value, bool):
        raise ValueError(
            "Bidirectional: merge_mode must be 'concat', 'sum', 'mul', 'ave' or None, got "
            f"{value!r}"
        )
    return value  # type: ignore[return-value]


def describe(spec: WrappedSpec) -> str:
    """How messages name a wrapped layer: ``LSTM``, or ``RNN(MyCell)`` for a cell."""
    return f"RNN({spec.layer})" if isinstance(spec, RNNSpec) else spec.layer


def copy_cell(cell: cells.Cell) -> cells.Cell:
    """A new cell with ``cell``'s config: each direction gets its own, as Keras gives each
    direction its own copy of the wrapped layer (weights live in the layers, but a cell
    may keep more than its config, and two directions must never share it)."""
    name = type(cell).__name__
    try:
        copy = type(cell).from_config(cell.get_config())
    except Exception as exc:
        raise TypeError(
            f"Bidirectional(RNN({name})): each direction runs its own copy of the cell, made "
            f"with {name}.from_config(cell.get_config()), which raised {type(exc).__name__}: "
            f"{exc}; from_config must accept what get_config returns"
        ) from exc
    if type(copy) is not type(cell):
        raise TypeError(
            f"Bidirectional(RNN({name})): {name}.from_config(cell.get_config()) must return a "
            f"{name}, got {show(copy)}"
        )
    return copy


def rnn_options(spec: RNNSpec) -> dict[str, Any]:
    """The keywords of ``RNN(cell, ...)`` that give ``spec`` back."""
    return {key: getattr(spec, key) for key in cells.RNN_OPTIONS}


def derive(spec: WrappedSpec, *, copy: bool = False, **changes: Any) -> WrappedSpec:
    """``spec`` with some options changed, validated like the original; with ``copy`` an
    ``RNN``'s spec also gets its own copy of the cell."""
    if isinstance(spec, LayerSpec):
        return spec.replace(**changes)
    return cells.parse_rnn(copy_cell(spec.cell) if copy else spec.cell, rnn_options(spec) | changes)


def _lent(layer: Any, forward: Any, backward: Any) -> tuple[Any, Any]:
    """The two directions; a built ``layer`` lends the forward one its weights, and the
    backward one is built for the same input size (with its own weights)."""
    if layer.built:
        forward.set_weights(layer.get_weights())
        backward.build((None, None, layer.input_dim))
    return forward, backward


@dataclass(frozen=True, eq=False)
class BidirectionalSpec:
    """The wrapped layer's spec and the merge mode; the two directions derive from them.

    Two specs are equal when they describe the same wrapper: for ``RNN(cell)``, cells of
    the same type and config count as the same cell (cells compare by identity), so equal
    JAX wrappers share a tree structure and a compiled function."""

    layer: WrappedSpec
    merge_mode: str | None = "concat"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, (LayerSpec, RNNSpec)):
            raise TypeError(
                "BidirectionalSpec: layer must be a LayerSpec (SimpleRNN, LSTM, GRU) or an "
                f"RNNSpec (RNN(cell)), got {show(self.layer)}"
            )
        check_merge_mode(self.merge_mode)

    def _key(self) -> tuple:
        layer = self.layer
        if isinstance(layer, RNNSpec):
            cell = layer.cell
            return (type(cell), repr(cell.get_config()), tuple(rnn_options(layer).items()),
                    self.merge_mode)  # fmt: skip
        return (layer, self.merge_mode)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BidirectionalSpec) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def name(self) -> str:
        """``Bidirectional(LSTM)``, ``Bidirectional(RNN(MyCell))``: the owner in messages."""
        return f"Bidirectional({describe(self.layer)})"

    @property
    def forward(self) -> WrappedSpec:
        name = None if self.layer.name is None else f"forward_{self.layer.name}"
        return derive(self.layer, copy=True, zero_output_for_mask=self.layer.return_sequences,
                      name=name)  # fmt: skip

    @property
    def backward(self) -> WrappedSpec:
        """The backward direction; a seeded layer's is seeded ``seed + 1`` (seeded alike,
        both directions would start with equal weights)."""
        layer = self.layer
        name = None if layer.name is None else f"backward_{layer.name}"
        seed = {} if layer.seed is None else {"seed": (layer.seed + 1) % 2**31}
        return derive(layer, copy=True, zero_output_for_mask=layer.return_sequences,
                      go_backwards=not layer.go_backwards, name=name, **seed)  # fmt: skip

    @property
    def units(self) -> int:
        """Width of the merged output."""
        return 2 * self.layer.units if self.merge_mode == "concat" else self.layer.units

    def with_trainable(self, value: bool) -> BidirectionalSpec:
        """The spec with the wrapped layer's ``trainable`` set (``RNN(cell)``'s spec has no
        such option: where an engine's RNN has the flag, the layers hold it)."""
        if isinstance(self.layer, RNNSpec):
            return self
        return BidirectionalSpec(self.layer.replace(trainable=value), self.merge_mode)

    def to_config(self) -> dict[str, Any]:
        return {"layer": self.layer.to_config(), "merge_mode": self.merge_mode}

    def split_initial_state(self, initial_state: Sequence[Any] | None):
        """(forward states, backward states) of a Bidirectional ``initial_state``."""
        if initial_state is None:
            return None, None
        n = self.layer.num_states
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2 * n:
            got = len(initial_state) if isinstance(initial_state, (list, tuple)) else 1
            raise ValueError(
                f"{self.name}: initial_state must be a list of {2 * n} tensors, the forward "
                f"layer's [{', '.join(self.layer.state_names)}] then the backward layer's, got "
                f"{got}"
            )
        return list(initial_state[:n]), list(initial_state[n:])


def merge(spec: BidirectionalSpec, forward, backward, ops):
    """The merged output of one call; ``ops`` provides ``concat(list, axis)`` and ``flip(x,
    axis)`` for the engine's tensors. Returns a list of the outputs the call returns."""
    if spec.layer.return_state:
        y, *states_f = forward
        y_rev, *states_b = backward
    else:
        y, y_rev, states_f, states_b = forward, backward, [], []
    if spec.layer.return_sequences:
        y_rev = ops.flip(y_rev, 1)
    if spec.merge_mode is None:
        outputs = [y, y_rev]
    elif spec.merge_mode == "concat":
        outputs = [ops.concat([y, y_rev], -1)]
    elif spec.merge_mode == "sum":
        outputs = [y + y_rev]
    elif spec.merge_mode == "ave":
        outputs = [(y + y_rev) / 2]
    else:
        outputs = [y * y_rev]
    return [*outputs, *states_f, *states_b]


class BidirectionalCore:
    """Mixin: the wrapper's behaviour on any engine. An engine's class sets ``_ops``
    (``concat``, ``flip``), ``_classes`` (layer name -> its SimpleRNN/LSTM/GRU class),
    ``_rnn_class`` (its ``RNN``, where it runs users' cells) and ``engine_name``, calls
    :meth:`_init_core` and exposes :meth:`_run` as its call."""

    _ops: Any
    _classes: dict[str, type]
    _rnn_class: type | None = None
    engine_name: str
    spec: BidirectionalSpec

    def _init_core(
        self, layer: Any, merge_mode: str | None, keywords: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """(forward layer, backward layer): copies of ``layer``, the backward one with
        ``go_backwards`` flipped; a built ``layer`` lends the forward copy its weights.
        ``keywords`` (:data:`LAYER_KEYWORDS`) apply to the wrapped layer, checked against
        what it already says."""
        if isinstance(getattr(layer, "spec", None), RNNSpec) and self._rnn_class is not None:
            if not isinstance(layer, self._rnn_class):
                raise TypeError(self._refusal(layer))
            return self._init_rnn(layer, merge_mode, keywords or {})
        classes = tuple(self._classes.values())
        if not isinstance(layer, classes):
            raise TypeError(self._refusal(layer))
        inner = layer.spec
        if keywords:
            from multirnn import spec as specs

            unknown = sorted(set(keywords) - set(LAYER_KEYWORDS))
            if unknown:
                raise TypeError(
                    f"Bidirectional got an unexpected keyword argument {unknown[0]!r}; besides "
                    f"layer and merge_mode it takes {', '.join(LAYER_KEYWORDS)}, which apply to "
                    "the wrapped layer"
                )
            config = inner.to_config(strict=False)
            for key in ("input_dim", "input_length", "batch_size"):  # unset: no conflict
                if config[key] is None:
                    del config[key]
            inner = specs.parse(inner.layer, (), config | keywords, warn=False)
        self.spec = BidirectionalSpec(inner, check_merge_mode(merge_mode))
        cls = type(layer)
        forward = cls.from_config(self.spec.forward.to_config())
        backward = cls.from_config(self.spec.backward.to_config())
        return _lent(layer, forward, backward)

    def _init_rnn(self, layer: Any, merge_mode: str | None, keywords: dict[str, Any]):
        """``_init_core`` for ``RNN(cell)``: the same derivation (each direction with its own
        copy of the cell, the backward one seeded ``seed + 1``), built from the options
        rather than a config, so that an unregistered cell can be wrapped too."""
        inner = layer.spec
        owner = f"Bidirectional({describe(inner)})"
        has_trainable = hasattr(layer, "trainable")  # the Keras flag of TensorFlow's RNN
        taken = ("input_dim", "trainable") if has_trainable else ("input_dim",)
        for key in sorted(set(keywords) - set(taken)):
            if key == "trainable":
                why = (f"RNN(cell) has no trainable option on the {self.engine_name} engine; "
                       "freeze its weights the framework's way")  # fmt: skip
            elif key in LAYER_KEYWORDS:
                why = ("RNN(cell) takes input_dim= for the input size and checks neither the "
                       "sequence length nor the batch size")  # fmt: skip
            else:
                why = "besides layer and merge_mode it takes " + ", ".join(taken)
            raise TypeError(f"{owner} got an unexpected keyword argument {key!r}: {why}")
        if keywords.get("input_dim") is not None:
            given = derive(inner, input_dim=keywords["input_dim"]).input_dim
            known = layer.input_dim if layer.built else inner.input_dim
            if known is not None and known != given:
                raise ValueError(
                    f"{owner}: input_dim={given} but the wrapped RNN has input_dim={known}; "
                    "pass one of them, or make them agree"
                )
            inner = derive(inner, input_dim=given)
        extra = {}
        if has_trainable:
            extra["trainable"] = check_bool(owner, "trainable",
                                            keywords.get("trainable", layer.trainable))  # fmt: skip
        self.spec = BidirectionalSpec(inner, check_merge_mode(merge_mode))
        cls = type(layer)
        forward_spec, backward_spec = self.spec.forward, self.spec.backward
        forward = cls(forward_spec.cell, **rnn_options(forward_spec), **extra)
        backward = cls(backward_spec.cell, **rnn_options(backward_spec), **extra)
        return _lent(layer, forward, backward)

    def _refusal(self, layer: Any) -> str:
        """Why ``layer`` cannot be wrapped: what was given, what is accepted, and the likely
        fix (a cell not in an RNN, a class, another engine's layer)."""
        rnn = self._rnn_class is not None
        accepted = "a SimpleRNN, LSTM or GRU" + (" layer, or an RNN(cell)," if rnn else "")
        message = f"Bidirectional wraps {accepted} of the {self.engine_name} engine, got "
        kinds = (*self._classes.values(), *([self._rnn_class] if rnn else []))
        if isinstance(layer, cells.Cell):
            name = type(layer).__name__
            return (f"{message}the cell {show(layer)}; a cell runs inside an RNN: "
                    f"Bidirectional(RNN({name}(...)))")  # fmt: skip
        if isinstance(layer, type) and issubclass(layer, kinds):
            return f"{message}the class {layer.__name__}; pass a layer: {layer.__name__}(...)"
        other = getattr(layer, "engine_name", None)
        if isinstance(other, str) and other != self.engine_name:
            kind = type(layer).__name__
            return (f"{message}a {kind} of the {other} engine; create it with "
                    f"multirnn.engine({self.engine_name!r}).{kind}, or wrap it with "
                    f"multirnn.engine({other!r}).Bidirectional")  # fmt: skip
        return message + show(layer)

    @property
    def merge_mode(self) -> str | None:
        return self.spec.merge_mode

    @property
    def trainable(self) -> bool:
        """Whether training updates either direction's weights; setting it sets both."""
        if isinstance(self.spec.layer, RNNSpec):
            return bool(getattr(self.forward_layer, "trainable", True))
        return self.spec.layer.trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if isinstance(self.spec.layer, RNNSpec) and not hasattr(self.forward_layer, "trainable"):
            raise TypeError(
                f"{self.spec.name}: RNN(cell) has no trainable flag on the {self.engine_name} "
                "engine; freeze its weights the framework's way"
            )
        self.forward_layer.trainable = value
        self.backward_layer.trainable = value
        self.spec = self.spec.with_trainable(self.forward_layer.trainable)

    @property
    def built(self) -> bool:
        return self.forward_layer.built and self.backward_layer.built

    def get_weights(self) -> list:
        """The forward layer's weights, then the backward layer's (canonical arrays)."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def _weight_names(self) -> list[str] | None:
        """One direction's weight names (None for an unbuilt RNN: the cell's declarations
        depend on the input size)."""
        if isinstance(self.spec.layer, LayerSpec):
            return list(self.spec.layer.weight_names)
        return self.forward_layer.weight_names if self.forward_layer.built else None

    def set_weights(self, weights: Sequence[Any]) -> None:
        weights = list(weights)
        names = self._weight_names()
        if names is None:  # the directions' shapes tell the input size: half each
            if len(weights) % 2:
                raise ValueError(
                    f"{self.spec.name}.set_weights takes the forward layer's weights (in the "
                    f"order the cell declares them) then the backward layer's, an even number "
                    f"of arrays, got {len(weights)}"
                )
            n = len(weights) // 2
        else:
            n = len(names)
            if len(weights) != 2 * n:
                raise ValueError(
                    f"{self.spec.name}.set_weights takes {2 * n} arrays, the forward layer's "
                    f"{names} then the backward layer's, got {len(weights)}"
                )
        self.forward_layer.set_weights(weights[:n])
        self.backward_layer.set_weights(weights[n:])

    def _run(self, inputs: Any, *args: Any, mask: Any = None, initial_state: Any = None,
             training: bool | None = None):  # fmt: skip
        calls.keyword_only(self, args)
        forward_state, backward_state = self.spec.split_initial_state(initial_state)
        y = self.forward_layer(inputs, mask=mask, initial_state=forward_state,
                               training=training)  # fmt: skip
        y_rev = self.backward_layer(inputs, mask=mask, initial_state=backward_state,
                                    training=training)  # fmt: skip
        out = merge(self.spec, y, y_rev, self._ops)
        return out[0] if len(out) == 1 else out

    @property
    def states(self) -> list | None:
        """The forward layer's carried states, then the backward layer's."""
        f, b = self.forward_layer.states, self.backward_layer.states
        return None if f is None or b is None else list(f) + list(b)

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        forward_state, backward_state = self.spec.split_initial_state(states)
        self.forward_layer.reset_states(forward_state)
        self.backward_layer.reset_states(backward_state)

    @property
    def losses(self) -> list:
        return list(self.forward_layer.losses) + list(self.backward_layer.losses)

    def apply_constraints(self) -> None:
        self.forward_layer.apply_constraints()
        self.backward_layer.apply_constraints()

    def get_config(self) -> dict[str, Any]:
        """The wrapped layer's config and the merge mode. For ``RNN(cell)`` it records the
        input size once built, as ``RNN.get_config`` does: the cell's declarations (and so
        the names of a file's tensors) depend on it."""
        config = self.spec.to_config()
        if isinstance(self.spec.layer, RNNSpec) and self.forward_layer.built:
            config["layer"]["input_dim"] = self.forward_layer.input_dim
        return config

    @classmethod
    def _layer_from_config(cls, config: dict[str, Any]):
        """The wrapped layer a Bidirectional config's ``layer`` describes."""
        from multirnn import spec as specs

        if isinstance(config, dict) and "cell" in config:
            if cls._rnn_class is None:
                raise ValueError(
                    f"the {cls.engine_name} engine does not run users' cells (RNN), so it "
                    "cannot create a Bidirectional of one"
                )
            return cls._rnn_class.from_config(config)
        inner = specs.from_config(config)
        return cls._classes[inner.layer].from_config(config)

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return cls(cls._layer_from_config(config["layer"]), config.get("merge_mode", "concat"))
