"""``Bidirectional``: what every engine's wrapper shares, independent of the framework.

Keras semantics: the wrapper holds a forward copy of the layer and a backward copy built
with ``go_backwards`` flipped; with ``return_sequences`` the backward outputs are reversed
back to input order before merging; states come forward first. Like Keras, both copies
emit zeros at masked steps when returning sequences (``zero_output_for_mask`` follows
``return_sequences``), so that the two directions line up step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multirnn.spec import LayerSpec

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


@dataclass(frozen=True)
class BidirectionalSpec:
    """The wrapped layer's spec and the merge mode; the two directions derive from them."""

    layer: LayerSpec
    merge_mode: str | None = "concat"

    def __post_init__(self) -> None:
        check_merge_mode(self.merge_mode)

    @property
    def forward(self) -> LayerSpec:
        name = None if self.layer.name is None else f"forward_{self.layer.name}"
        return self.layer.replace(zero_output_for_mask=self.layer.return_sequences, name=name)

    @property
    def backward(self) -> LayerSpec:
        name = None if self.layer.name is None else f"backward_{self.layer.name}"
        return self.forward.replace(go_backwards=not self.layer.go_backwards, name=name)

    @property
    def units(self) -> int:
        """Width of the merged output."""
        return 2 * self.layer.units if self.merge_mode == "concat" else self.layer.units

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
                f"Bidirectional({self.layer.layer}): initial_state must be a list of {2 * n} "
                f"tensors, the forward layer's [{', '.join(self.layer.state_names)}] then the "
                f"backward layer's, got {got}"
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
    (``concat``, ``flip``), ``_classes`` (layer name -> its SimpleRNN/LSTM/GRU class) and
    ``engine_name``, calls :meth:`_init_core` and exposes :meth:`_run` as its call."""

    _ops: Any
    _classes: dict[str, type]
    engine_name: str
    spec: BidirectionalSpec

    def _init_core(
        self, layer: Any, merge_mode: str | None, keywords: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """(forward layer, backward layer): copies of ``layer``, the backward one with
        ``go_backwards`` flipped; a built ``layer`` lends the forward copy its weights.
        ``keywords`` (:data:`LAYER_KEYWORDS`) apply to the wrapped layer, checked against
        what it already says."""
        classes = tuple(self._classes.values())
        if not isinstance(layer, classes):
            raise TypeError(
                f"Bidirectional wraps a SimpleRNN, LSTM or GRU of the {self.engine_name} "
                f"engine, got {type(layer).__name__}"
            )
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
        backward_spec = self.spec.backward
        if backward_spec.seed is not None:  # seeded alike, both directions would start equal
            backward_spec = backward_spec.replace(seed=(backward_spec.seed + 1) % 2**31)
        backward = cls.from_config(backward_spec.to_config())
        if layer.built:
            forward.set_weights(layer.get_weights())
            backward.build((None, None, layer.input_dim))
        return forward, backward

    @property
    def merge_mode(self) -> str | None:
        return self.spec.merge_mode

    @property
    def trainable(self) -> bool:
        """Whether training updates either direction's weights; setting it sets both."""
        return self.spec.layer.trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.forward_layer.trainable = value
        self.backward_layer.trainable = value
        layer = self.spec.layer.replace(trainable=self.forward_layer.trainable)
        self.spec = BidirectionalSpec(layer, self.spec.merge_mode)

    @property
    def built(self) -> bool:
        return self.forward_layer.built and self.backward_layer.built

    def get_weights(self) -> list:
        """The forward layer's weights, then the backward layer's (canonical arrays)."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence[Any]) -> None:
        weights = list(weights)
        n = len(self.spec.layer.weight_names)
        if len(weights) != 2 * n:
            raise ValueError(
                f"Bidirectional({self.spec.layer.layer}).set_weights takes {2 * n} arrays, "
                f"the forward layer's {list(self.spec.layer.weight_names)} then the backward "
                f"layer's, got {len(weights)}"
            )
        self.forward_layer.set_weights(weights[:n])
        self.backward_layer.set_weights(weights[n:])

    def _run(self, inputs: Any, *, mask: Any = None, initial_state: Any = None,
             training: bool | None = None):  # fmt: skip
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
        return self.spec.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        from multirnn import spec as specs

        inner = specs.from_config(config["layer"])
        layer = cls._classes[inner.layer].from_config(config["layer"])
        return cls(layer, config.get("merge_mode", "concat"))
