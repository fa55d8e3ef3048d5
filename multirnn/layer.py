"""Behaviour every engine's layer shares, independent of the framework it is built on.

Engines combine :class:`LayerCore` with their framework's base class (``nn.Module``, a Keras
``Layer``, a pytree) and implement the computation; argument handling, configs, the
canonical weight layout, seeding and dropout-mask bookkeeping live here once.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from multirnn import calls, constraints, regularizers
from multirnn import spec as specs
from multirnn import weights as canonical
from multirnn._checks import check_bool, is_int, show

#: Building is rare and quick; one lock for every layer keeps layers picklable and copyable.
_BUILD_LOCK = threading.RLock()

_UNBUILT = contextvars.ContextVar("multirnn_created_unbuilt", default=False)


@contextlib.contextmanager
def created_unbuilt() -> Iterator[None]:
    """Layers created inside stay unbuilt even when their arguments give the input size.

    ``load`` builds a layer from a file's arrays (``set_weights`` on an unbuilt layer): the
    initializers never run, so a file cannot make them allocate what its tensors do not
    hold, and a large layer loads at the cost of reading it."""
    token = _UNBUILT.set(True)
    try:
        yield
    finally:
        _UNBUILT.reset(token)


def builds_at_creation() -> bool:
    """Whether a layer whose arguments give the input size builds when it is created."""
    return not _UNBUILT.get()


class Buildable:
    """Mixin of both layer kinds (the built-in layers and ``RNN(cell)``) on every engine: the
    weights are created once, from the layer's seed, when the input size is first known.
    An engine implements ``_create_weights(input_dim, **where)`` and, for unseeded layers,
    ``_draw_seed`` from its framework's generator."""

    def build(self, input_shape: Sequence[int | None], **where: Any) -> None:
        """Create the weights for inputs of shape ``(batch, time, features)`` (``where``:
        the engine's placement, e.g. PyTorch's ``device``).

        Once, also when several threads make a layer's first call at the same time: the
        others wait and then use the weights the first one created."""
        input_dim = self._input_dim_from_shape(type(self).__name__, input_shape)
        if self.input_dim is None:  # engines set the kernel last: once seen, all weights exist
            with _BUILD_LOCK:
                if self.input_dim is None:
                    self._create_weights(input_dim, **where)
                    return
        if input_dim != self.input_dim:
            raise ValueError(
                f"{self.name}: already built for input_dim={self.input_dim}, "
                f"cannot rebuild for {input_dim}"
            )

    def _create_weights(self, input_dim: int, **where: Any) -> None:
        raise NotImplementedError

    def _initial_weights(self, input_dim: int) -> list[np.ndarray]:
        """The initial values of the weights (``RNN(cell)``: the cell's initializers)."""
        return self.cell.initial_weights(input_dim, self._layer_seed())

    def _layer_seed(self) -> int:
        """The seed the initial weights are drawn from (the engine's RNG when none given)."""
        if self.spec.seed is not None:
            return self.spec.seed
        return self._draw_seed()

    def _draw_seed(self) -> int:
        return int(np.random.randint(0, 2**31 - 1))

    @staticmethod
    def _input_dim_from_shape(owner: str, input_shape: Any) -> int:
        try:
            shape = tuple(input_shape)
        except TypeError:
            shape = None
        if shape is None or len(shape) not in (2, 3):
            raise ValueError(
                f"{owner}.build: input_shape must be (batch, time, features) (or (time, "
                f"features)), got {show(input_shape)}"
            )
        features = shape[-1]
        if not is_int(features) or features < 1:
            raise ValueError(
                f"{owner}.build: the feature size (last entry of input_shape) must be a "
                f"positive integer, got {show(features)} in {shape}"
            )
        return int(features)


class LayerCore(Buildable):
    """Mixin: the validated spec, its arguments as attributes, config and weight checks."""

    layer_name: ClassVar[str]  # "SimpleRNN", "LSTM" or "GRU"
    engine_name: ClassVar[str]
    spec: specs.LayerSpec

    def _init_core(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not hasattr(type(self), "layer_name"):
            raise TypeError(
                f"{type(self).__name__} is the abstract base of the recurrent layers; "
                "instantiate SimpleRNN, LSTM or GRU"
            )
        kwargs = dict(kwargs)
        given = kwargs.pop("weights", None)
        self.spec = specs.parse(self.layer_name, args, kwargs)
        self._given_weights = None
        if given is not None:  # Keras 2's weights=: the initial weights, canonical layout
            self._given_weights = canonical.check(
                self.spec, given, self.spec.input_dim, what=f"{self.layer_name}(weights=...)"
            )

    def _build_from_arguments(self) -> None:
        """Build at creation when the arguments fix the input size (``input_dim``,
        ``input_shape``, ``batch_input_shape``) or give the weights (``weights=``)."""
        given, self._given_weights = self._given_weights, None
        if given is not None:
            self.set_weights(given)
        elif self.spec.input_dim is not None and builds_at_creation():
            self.build((None, None, self.spec.input_dim))

    # -- trainable ------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether training updates the weights (Keras 2's ``trainable``). Engines freeze
        them in their own idiom; setting it later works as in Keras."""
        return self.spec.trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.spec = self.spec.replace(trainable=check_bool(self.spec.layer, "trainable", value))
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        """Engines whose framework records trainability on the weights update it here."""

    # -- config ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The layer's arguments as a JSON-compatible dict (see ``multirnn.from_config``)."""
        return self.spec.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        spec = specs.from_config(config)
        if spec.layer != cls.layer_name:
            raise ValueError(f"{cls.__name__}.from_config got a config for a {spec.layer} layer")
        with warnings.catch_warnings():  # the unit_forget_bias notice was given at creation
            warnings.simplefilter("ignore", UserWarning)
            return cls(**spec.to_config(strict=False))

    # -- weights --------------------------------------------------------------------------
    def _initial_weights(self, input_dim: int) -> list[np.ndarray]:
        return canonical.initial(self.spec, input_dim, self._layer_seed())

    def _check_weights(self, weights, input_dim: int | None) -> list[np.ndarray]:
        return canonical.check(self.spec, weights, input_dim)

    # -- dropout --------------------------------------------------------------------------
    def _dropout_mask_shapes(self, batch: int, input_dim: int):
        """Shapes of the (input, recurrent) masks a training call samples, or None.

        Implementations 0 and 1 use one mask per gate, implementation 2 one shared mask.
        """
        spec = self.spec
        lead = () if spec.implementation == 2 else (spec.gates,)
        input_shape = (*lead, batch, input_dim) if spec.dropout > 0 else None
        rec_shape = (*lead, batch, spec.units) if spec.recurrent_dropout > 0 else None
        return input_shape, rec_shape

    # -- state, penalties, constraints: the engine-neutral parts ------------------------------
    def _check_reset(self, shapes, dtypes, dtype: str) -> int | None:
        """Validate ``reset_states(states)`` arguments; returns the batch size they set."""
        spec = self.spec
        if not spec.stateful:
            raise ValueError(
                f"{self.name}: reset_states() applies to stateful layers; this one was created "
                "with stateful=False (its states start from zeros or initial_state every call)"
            )
        if shapes is None:
            return None
        calls.state_count(spec, len(shapes), arg="reset_states(states)")
        batch = shapes[0][0] if len(shapes[0]) == 2 else None
        calls.states(spec, shapes, dtypes, batch=batch, expected_dtype=dtype,
                     arg="reset_states(states)")  # fmt: skip
        return batch

    def _weight_penalties(self, weights, ops) -> list:
        spec = self.spec
        chosen = (spec.kernel_regularizer, spec.recurrent_regularizer, spec.bias_regularizer)
        return [regularizers.penalty(r, w, ops) for r, w in zip(chosen, weights) if r is not None]

    def _constrained(self, weights, ops):
        """(index, weight, projected value) for every weight that has a constraint."""
        spec = self.spec
        chosen = (spec.kernel_constraint, spec.recurrent_constraint, spec.bias_constraint)
        for index, (constraint, w) in enumerate(zip(chosen, weights)):
            if constraint is not None:
                yield index, w, constraints.project(constraint, w, ops)

    def __repr__(self) -> str:
        spec = self.spec
        extras = []
        for key in ("return_sequences", "return_state", "go_backwards", "stateful"):
            if getattr(spec, key):
                extras.append(f"{key}=True")
        if spec.name:
            extras.append(f"name={spec.name!r}")
        tail = "".join(", " + e for e in extras)
        return f"{type(self).__name__}(units={spec.units}{tail}) [{self.engine_name}]"


#: The built-in layers and what each is (their classes' docstrings on every engine).
BUILTIN_LAYERS = {
    "SimpleRNN": "Fully connected recurrent layer whose output is fed back as its state.",
    "LSTM": "Long short-term memory layer (states ``[h, c]``).",
    "GRU": "Gated recurrent unit layer (``reset_after`` selects the cuDNN-style variant).",
}


def builtin_classes(base: type, module: str) -> list[type]:
    """An engine's ``SimpleRNN``, ``LSTM`` and ``GRU``: subclasses of ``base`` (its
    ``Recurrent``, which is its ``RNN`` with the built-in cell), made here once so that
    the three engines do not each spell them out. ``module`` is where they live (pickle
    and Keras's registry find them there)."""
    return [
        type(base)(
            name,
            (base,),
            {"layer_name": name, "__doc__": doc, "__module__": module, "__qualname__": name},
        )
        for name, doc in BUILTIN_LAYERS.items()
    ]


def _spec_property(key: str) -> property:
    return property(lambda self: getattr(self.spec, key), doc=f"The layer's ``{key}`` argument.")


for _key in {k for layer in specs.LAYERS for k in specs.keywords(layer)} - {
    "name",
    "dtype",
    "input_dim",
    "trainable",
}:
    setattr(LayerCore, _key, _spec_property(_key))
