"""The documented layer arguments, parsed and validated once into a frozen :class:`LayerSpec`.

Every engine builds its layers from a spec, so a bad argument fails here, at construction,
with the same message on every engine, and no engine re-implements argument handling.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from multirnn import activations, constraints, initializers, precision, regularizers
from multirnn._checks import (
    check_bool,
    check_positive_int,
    check_rate,
    did_you_mean,
    is_int,
    show,
)

LAYERS = ("SimpleRNN", "LSTM", "GRU")
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
STATE_NAMES = {"SimpleRNN": ("h",), "LSTM": ("h", "c"), "GRU": ("h",)}
GATE_NAMES = {"SimpleRNN": ("h",), "LSTM": ("i", "f", "c", "o"), "GRU": ("z", "r", "h")}
DTYPES = ("float32", "float64", "bfloat16", "float16")

_COMMON_HEAD: tuple[tuple[str, Any], ...] = (
    ("kernel_initializer", "glorot_uniform"),
    ("recurrent_initializer", "orthogonal"),
    ("bias_initializer", "zeros"),
)
_COMMON_TAIL: tuple[tuple[str, Any], ...] = (
    ("kernel_regularizer", None),
    ("recurrent_regularizer", None),
    ("bias_regularizer", None),
    ("activity_regularizer", None),
    ("kernel_constraint", None),
    ("recurrent_constraint", None),
    ("bias_constraint", None),
    ("dropout", 0.0),
    ("recurrent_dropout", 0.0),
)

#: The documented signatures, in their documented order (these may be given positionally).
SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "SimpleRNN": (
        ("units", dataclasses.MISSING),
        ("activation", "tanh"),
        ("use_bias", True),
        *_COMMON_HEAD,
        *_COMMON_TAIL,
    ),
    "LSTM": (
        ("units", dataclasses.MISSING),
        ("activation", "tanh"),
        ("recurrent_activation", "hard_sigmoid"),
        ("use_bias", True),
        *_COMMON_HEAD,
        ("unit_forget_bias", True),
        *_COMMON_TAIL,
    ),
    "GRU": (
        ("units", dataclasses.MISSING),
        ("activation", "tanh"),
        ("recurrent_activation", "hard_sigmoid"),
        ("use_bias", True),
        *_COMMON_HEAD,
        *_COMMON_TAIL,
    ),
}

#: The documented ``Recurrent`` options (keyword-only).
RECURRENT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("return_sequences", False),
    ("return_state", False),
    ("go_backwards", False),
    ("stateful", False),
    ("unroll", False),
    ("implementation", 0),
)

#: Our extensions (keyword-only); ``reset_after`` exists for GRU only.
EXTENSIONS: tuple[tuple[str, Any], ...] = (
    ("reset_after", False),
    ("zero_output_for_mask", False),
    ("seed", None),
    ("dtype", None),
    ("input_dim", None),
    ("name", None),
)

#: Keras 2 layer keywords kept with their Keras 2 meaning (keyword-only). ``input_length``
#: and ``batch_size`` are checked at every call; ``trainable`` freezes the weights in each
#: engine's idiom.
KERAS2_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("input_length", None),
    ("batch_size", None),
    ("trainable", True),
)

#: Keras 2 shorthands parsed into the options above and ``input_dim`` (never stored).
KERAS2_SHAPES = ("input_shape", "batch_input_shape")


def keywords(layer: str) -> tuple[str, ...]:
    """Every keyword ``layer`` accepts, documented ones first."""
    names = [n for n, _ in SIGNATURES[layer]] + [n for n, _ in RECURRENT_OPTIONS]
    names += [n for n, _ in EXTENSIONS if n != "reset_after" or layer == "GRU"]
    names += [n for n, _ in KERAS2_OPTIONS]
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Everything that defines a recurrent layer, validated.

    Options that do not exist for a layer hold their neutral value (``recurrent_activation``
    is None for SimpleRNN, ``unit_forget_bias`` and ``reset_after`` are False where they do
    not apply). ``dtype`` None means "the engine's default float type".
    """

    layer: str
    units: int
    activation: activations.Activation = "tanh"
    recurrent_activation: activations.Activation | None = None
    use_bias: bool = True
    kernel_initializer: Any = dataclasses.field(default_factory=initializers.GlorotUniform)
    recurrent_initializer: Any = dataclasses.field(default_factory=initializers.Orthogonal)
    bias_initializer: Any = dataclasses.field(default_factory=initializers.Zeros)
    unit_forget_bias: bool = False
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    kernel_constraint: Any = None
    recurrent_constraint: Any = None
    bias_constraint: Any = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool = False
    implementation: int = 0
    reset_after: bool = False
    zero_output_for_mask: bool = False
    seed: int | None = None
    dtype: str | None = None
    input_dim: int | None = None
    name: str | None = None
    input_length: int | None = None
    batch_size: int | None = None
    trainable: bool = True

    # -- derived facts every engine needs -------------------------------------------------
    @property
    def gates(self) -> int:
        return GATES[self.layer]

    @property
    def gate_names(self) -> tuple[str, ...]:
        return GATE_NAMES[self.layer]

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATE_NAMES[self.layer]

    @property
    def num_states(self) -> int:
        return len(STATE_NAMES[self.layer])

    @property
    def weight_names(self) -> tuple[str, ...]:
        base = ("kernel", "recurrent_kernel")
        return (*base, "bias") if self.use_bias else base

    def weight_shapes(self, input_dim: int) -> dict[str, tuple[int, ...]]:
        """Canonical (Keras-layout) shape of every weight for a given input size."""
        width = self.gates * self.units
        shapes = {"kernel": (input_dim, width), "recurrent_kernel": (self.units, width)}
        if self.use_bias:
            shapes["bias"] = (2, width) if self.reset_after else (width,)
        return shapes

    @property
    def serializable(self) -> bool:
        try:
            self.to_config()
        except TypeError:
            return False
        return True

    def replace(self, **changes: Any) -> LayerSpec:
        """A new spec with some arguments changed, validated like the original."""
        config = self.to_config(strict=False)
        config.update(changes)
        return parse(self.layer, (), config, warn=False)

    def to_config(self, *, strict: bool = True) -> dict[str, Any]:
        """The arguments as a JSON-compatible dict (``{"layer": ..., **arguments}``).

        With ``strict`` (the default) a user callable raises ``TypeError`` naming the
        argument; otherwise it is kept as is (for :meth:`replace`).
        """
        config: dict[str, Any] = {"layer": self.layer}
        for key in keywords(self.layer):
            value = getattr(self, key)
            if strict:
                value = _serialize(key, value)
            config[key] = value
        return config


def _serialize(key: str, value: Any) -> Any:
    if key in ("activation", "recurrent_activation"):
        return activations.serialize(value, arg=key)
    if key.endswith("_initializer"):
        return initializers.serialize(value, arg=key)
    if key.endswith("_regularizer"):
        return regularizers.serialize(value, arg=key)
    if key.endswith("_constraint"):
        return constraints.serialize(value, arg=key)
    return value


def _dtype(owner: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and (value in DTYPES or value in precision.MIXED):
        return value
    if isinstance(value, (np.dtype, type)):
        try:
            name = np.dtype(value).name
        except TypeError:
            name = None
        if name in DTYPES:
            return name
    raise ValueError(
        f"{owner}: dtype must be None (the engine's default), 'float32', 'float64', "
        f"'bfloat16', 'float16', or a mixed policy 'mixed_bfloat16' or 'mixed_float16', "
        f"got {show(value)}"
    )


def _check_units_like(owner: str, arg: str, value: object) -> int | None:
    if value is None:
        return None
    return check_positive_int(owner, arg, value)


def _apply_shapes(owner: str, shapes: dict[str, Any], given: dict[str, Any]) -> None:
    """Fold Keras 2's ``input_shape=(time, features)`` and ``batch_input_shape=(batch, time,
    features)`` into ``input_length``, ``input_dim`` and ``batch_size`` in ``given``. A size
    given twice must agree; a conflict names both keywords."""
    source: dict[str, str] = {
        k: k for k in ("input_dim", "input_length", "batch_size") if k in given
    }
    # batch_input_shape first: Keras 2 prefers it when both are given
    for key in ("batch_input_shape", "input_shape"):
        if key not in shapes:
            continue
        value = shapes[key]
        names = ("batch_size", "input_length", "input_dim")[3 - _SHAPE_RANK[key] :]
        form = "(batch, time, features)" if key == "batch_input_shape" else "(time, features)"
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            raise ValueError(
                f"{owner}: {key} must be a tuple {form} (None for a size left open), got "
                f"{show(value)}"
            )
        for name, size in zip(names, value):
            if size is None:
                continue
            if not is_int(size) or size < 1:
                raise ValueError(
                    f"{owner}: {key} must be a tuple {form} of positive integers or None, got "
                    f"{show(value)}"
                )
            if name in given and given[name] is not None and given[name] != size:
                raise ValueError(
                    f"{owner}: {key}={tuple(value)} gives {name}={size} but {source[name]} "
                    f"gives {given[name]}; pass one of them, or make them agree"
                )
            given[name], source[name] = int(size), f"{key}={tuple(value)}"
    if given.get("input_dim") is None and shapes:
        key = next(iter(shapes))
        raise ValueError(f"{owner}: {key} must give the feature size (last entry), got None")


_SHAPE_RANK = {"input_shape": 2, "batch_input_shape": 3}


def parse(
    layer: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    warn: bool = True,
) -> LayerSpec:
    """Validate the arguments of ``layer(*args, **kwargs)`` into a :class:`LayerSpec`."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    owner = layer
    signature = SIGNATURES[layer]
    if len(args) > len(signature):
        raise TypeError(
            f"{owner} takes at most {len(signature)} positional arguments "
            f"({', '.join(n for n, _ in signature)}), got {len(args)}"
        )
    given: dict[str, Any] = {}
    for (key, _), value in zip(signature, args):
        given[key] = value
    valid = keywords(layer)
    kwargs = dict(kwargs)
    shapes = {key: kwargs.pop(key) for key in KERAS2_SHAPES if key in kwargs}
    for key, value in kwargs.items():
        if key == "layer":  # present in configs
            if value != layer:
                raise ValueError(f"{owner}: config describes a {value!r} layer, not {layer}")
            continue
        if key not in valid:
            hint = did_you_mean(key, valid)
            raise TypeError(
                f"{owner} got an unexpected keyword argument {key!r}.{hint} "
                f"Valid keywords: {', '.join(valid)}"
            )
        if key in given:
            raise TypeError(f"{owner} got multiple values for argument {key!r}")
        given[key] = value
    if "units" not in given:
        raise TypeError(f"{owner} missing required argument 'units' (a positive integer)")
    _apply_shapes(owner, shapes, given)

    defaults = dict(signature) | dict(RECURRENT_OPTIONS) | dict(EXTENSIONS) | dict(KERAS2_OPTIONS)

    def get(key: str) -> Any:
        return given.get(key, defaults[key])

    fields: dict[str, Any] = {"layer": layer}
    fields["units"] = check_positive_int(owner, "units", given["units"])
    fields["activation"] = activations.resolve(get("activation"), owner=owner, arg="activation")
    if layer != "SimpleRNN":
        fields["recurrent_activation"] = activations.resolve(
            get("recurrent_activation"), owner=owner, arg="recurrent_activation"
        )
    for key in ("use_bias", *(n for n, _ in RECURRENT_OPTIONS if n != "implementation")):
        fields[key] = check_bool(owner, key, get(key))
    fields["zero_output_for_mask"] = check_bool(
        owner, "zero_output_for_mask", get("zero_output_for_mask")
    )
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        fields[key] = initializers.resolve(get(key), owner=owner, arg=key)
    for key in ("kernel", "recurrent", "bias", "activity"):
        arg = f"{key}_regularizer"
        fields[arg] = regularizers.resolve(get(arg), owner=owner, arg=arg)
    for key in ("kernel", "recurrent", "bias"):
        arg = f"{key}_constraint"
        fields[arg] = constraints.resolve(get(arg), owner=owner, arg=arg)
    fields["dropout"] = check_rate(owner, "dropout", get("dropout"))
    fields["recurrent_dropout"] = check_rate(owner, "recurrent_dropout", get("recurrent_dropout"))

    implementation = get("implementation")
    if not is_int(implementation) or implementation not in (0, 1, 2):
        raise ValueError(f"{owner}: implementation must be 0, 1 or 2, got {show(implementation)}")
    fields["implementation"] = int(implementation)

    if layer == "LSTM":
        fields["unit_forget_bias"] = check_bool(owner, "unit_forget_bias", get("unit_forget_bias"))
        if (
            warn
            and fields["unit_forget_bias"]
            and fields["use_bias"]
            and "bias_initializer" in given
            and fields["bias_initializer"] != initializers.Zeros()
        ):
            warnings.warn(
                f"LSTM: unit_forget_bias=True sets the initial bias (forget block 1, other "
                f"blocks 0) and overrides bias_initializer={given['bias_initializer']!r}; "
                "pass unit_forget_bias=False to use your initializer.",
                UserWarning,
                stacklevel=4,
            )
    if layer == "GRU":
        fields["reset_after"] = check_bool(owner, "reset_after", get("reset_after"))

    seed = get("seed")
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"{owner}: seed must be None or an integer >= 0, got {show(seed)}")
    fields["seed"] = None if seed is None else int(seed)
    fields["dtype"] = _dtype(owner, get("dtype"))
    for key in ("input_dim", "input_length", "batch_size"):
        fields[key] = _check_units_like(owner, key, get(key))
    fields["trainable"] = check_bool(owner, "trainable", get("trainable"))
    name = get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{owner}: name must be a string or None, got {show(name)}")
    fields["name"] = name
    return LayerSpec(**fields)


def from_config(config: dict[str, Any]) -> LayerSpec:
    """The spec described by a config from :meth:`LayerSpec.to_config` (or a Keras-style
    ``{"class_name": ..., "config": ...}`` wrapper around one)."""
    if not isinstance(config, dict):
        raise TypeError(f"a layer config must be a dict, got {show(config)}")
    if "class_name" in config and "config" in config:
        config = {"layer": config["class_name"], **config["config"]}
    if "layer" not in config:
        raise ValueError(
            f"a layer config needs a 'layer' key ({', '.join(LAYERS)}); got keys {sorted(config)}"
        )
    layer = config["layer"]
    if layer not in LAYERS:
        hint = did_you_mean(str(layer), LAYERS)
        raise ValueError(f"config 'layer' must be one of {', '.join(LAYERS)}, got {layer!r}.{hint}")
    rest = {k: v for k, v in config.items() if k != "layer"}
    return parse(layer, (), rest, warn=False)
