"""Keras 3 ``SimpleRNN`` / ``LSTM`` / ``GRU`` <-> multirnn layers (keras imported lazily).

Keras 3 keeps the canonical weight layout, so only the configuration needs care: activations
map by meaning, not by name. Keras 3's ``"hard_sigmoid"`` is ``clip(x / 6 + 0.5, 0, 1)``,
multirnn's ``"hard_sigmoid_relu6"``; multirnn's ``"hard_sigmoid"`` (slope 0.2, Keras 2's)
has no Keras 3 built-in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multirnn import precision
from multirnn.convert._common import (
    build,
    build_bidirectional,
    is_bidirectional,
    states_of,
    to_numpy,
)
from multirnn.convert.layouts import ConversionError
from multirnn.spec import DTYPES, LayerSpec

#: Keras 3 activation name -> multirnn activation with the same formula
FROM_KERAS = {
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "hard_sigmoid": "hard_sigmoid_relu6",
    "relu": "relu",
    "linear": "linear",
    "softsign": "softsign",
    "softplus": "softplus",
    "elu": "elu",
    "selu": "selu",
    "exponential": "exponential",
    "softmax": "softmax",  # Keras's default axis is the last, as multirnn's
}
TO_KERAS = {v: k for k, v in FROM_KERAS.items()}

_PASSED = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
           "dropout", "recurrent_dropout", "use_bias", "zero_output_for_mask")  # fmt: skip
_TRAINING = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
             "activity_regularizer", "kernel_constraint", "recurrent_constraint",
             "bias_constraint")  # fmt: skip


def _activation(value: Any, arg: str, name: str) -> str:
    if isinstance(value, str) and value in FROM_KERAS:
        return FROM_KERAS[value]
    raise ConversionError(
        f"Keras layer {name!r}: {arg}={value!r} has no multirnn equivalent; multirnn takes "
        f"the Keras 3 activations {', '.join(FROM_KERAS)}"
    )


def _dtype(layer) -> str:
    """The Keras layer's dtype policy as multirnn's ``dtype``: its dtype, or a mixed
    policy's name (float32 variables, bfloat16 or float16 computation), which every
    multirnn engine takes."""
    compute = str(getattr(layer, "compute_dtype", None) or layer.dtype)
    variable = str(getattr(layer, "variable_dtype", None) or compute)
    policy = f"mixed_{compute}"
    if variable == "float32" and policy in precision.MIXED:
        return policy
    if compute not in DTYPES or variable != compute:
        raise ConversionError(
            f"Keras layer {layer.name!r} has {variable} variables and computes in {compute}; "
            f"multirnn layers take {', '.join(DTYPES)} or a mixed policy "
            f"({', '.join(precision.MIXED)})"
        )
    return compute


def spec_kwargs(layer, ignore_training_options: bool = False) -> tuple[str, dict[str, Any]]:
    """(multirnn layer name, keyword arguments) computing what the Keras layer computes."""
    kind = type(layer).__name__
    if kind not in ("SimpleRNN", "LSTM", "GRU") or not type(layer).__module__.startswith("keras"):
        raise ConversionError(
            f"from_keras takes keras.layers.SimpleRNN, LSTM or GRU, got {type(layer).__name__}"
        )
    config = layer.get_config()
    name = config.get("name", kind)
    kwargs: dict[str, Any] = {k: config[k] for k in _PASSED if k in config}
    kwargs["activation"] = _activation(config["activation"], "activation", name)
    if kind != "SimpleRNN":
        kwargs["recurrent_activation"] = _activation(
            config["recurrent_activation"], "recurrent_activation", name
        )
    if kind == "GRU":
        kwargs["reset_after"] = bool(config["reset_after"])
    if isinstance(config.get("seed"), int):
        kwargs["seed"] = config["seed"]
    kwargs["dtype"] = _dtype(layer)
    used = [k for k in _TRAINING if config.get(k) is not None]
    if used and not ignore_training_options:
        raise ConversionError(
            f"Keras layer {name!r} uses {', '.join(used)}; multirnn's regularizers and "
            "constraints are its own objects, so they are not converted. Pass "
            "ignore_training_options=True to convert without them"
        )
    return kind, kwargs


def from_keras(layer, *, backend: str | None = None, ignore_training_options: bool = False):
    """The multirnn layer computing what a built Keras 3 ``SimpleRNN``/``LSTM``/``GRU``
    computes, with its weights and options (initializers are not carried: the weights are)."""
    if type(layer).__name__ == "Bidirectional" and hasattr(layer, "forward_layer"):
        return _from_bidirectional(layer, backend, ignore_training_options)
    kind, kwargs = spec_kwargs(layer, ignore_training_options)
    if not layer.built:
        raise ConversionError(f"Keras layer {layer.name!r} has no weights yet; build it first")
    states = None
    if kwargs.get("stateful") and getattr(layer, "states", None) is not None:
        import keras

        states = [to_numpy(keras.ops.convert_to_numpy(s)) for s in _flat(layer.states)]
    weights = [np.asarray(w) for w in layer.get_weights()]
    return build(kind, int(layer.get_config()["units"]), kwargs, weights, backend, states)


def _from_bidirectional(layer, backend, ignore_training_options):
    if not layer.built:
        raise ConversionError(f"Keras layer {layer.name!r} has no weights yet; build it first")
    kind, forward = spec_kwargs(layer.forward_layer, ignore_training_options)
    _, backward = spec_kwargs(layer.backward_layer, ignore_training_options)
    # multirnn's wrapper derives the backward copy: only go_backwards may differ
    ignored = {"go_backwards", "zero_output_for_mask"}
    differs = sorted(k for k in forward.keys() | backward.keys()
                     if k not in ignored and forward.get(k) != backward.get(k))  # fmt: skip
    if differs or forward.get("go_backwards") == backward.get("go_backwards"):
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} has a backward_layer that is not the forward "
            f"layer run backwards (differs in {', '.join(differs) or 'go_backwards'}); "
            "multirnn's Bidirectional derives its backward copy from the forward layer"
        )
    if forward.get("stateful"):
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} is stateful; convert its forward_layer and "
            "backward_layer separately to keep their states"
        )
    forward.pop("zero_output_for_mask", None)
    units = int(layer.forward_layer.get_config()["units"])
    return build_bidirectional(
        kind, units, forward,
        [np.asarray(w) for w in layer.forward_layer.get_weights()],
        [np.asarray(w) for w in layer.backward_layer.get_weights()],
        layer.merge_mode, backend,
    )  # fmt: skip


def _flat(states) -> list:
    return list(states) if isinstance(states, (list, tuple)) else [states]


def keras_kwargs(spec: LayerSpec, ignore_training_options: bool = False) -> dict[str, Any]:
    """Keyword arguments of the Keras 3 layer computing what ``spec`` computes."""
    kwargs: dict[str, Any] = {"units": spec.units}
    for arg in ("activation", "recurrent_activation"):
        value = getattr(spec, arg)
        if value is None:
            continue
        if not isinstance(value, str) or value not in TO_KERAS:
            hint = (
                " (multirnn's hard_sigmoid is Keras 2's, slope 0.2; Keras 3's hard_sigmoid "
                "has slope 1/6)"
                if value == "hard_sigmoid"
                else ""
            )
            raise ConversionError(
                f"{spec.layer}: {arg}={value!r} has no Keras 3 built-in activation{hint}"
            )
        kwargs[arg] = TO_KERAS[value]
    kwargs.update({k: getattr(spec, k) for k in _PASSED})
    if spec.layer == "GRU":
        kwargs["reset_after"] = spec.reset_after
    if spec.seed is not None:
        kwargs["seed"] = spec.seed
    if spec.dtype is not None:
        kwargs["dtype"] = spec.dtype
    if spec.dtype == "bfloat16":  # Keras's orthogonal initializer has no bfloat16 QR on
        kwargs["recurrent_initializer"] = "glorot_uniform"  # TF; the weights replace it
    if not spec.trainable:
        kwargs["trainable"] = False
    used = [k for k in _TRAINING if getattr(spec, k) is not None]
    if used and not ignore_training_options:
        raise ConversionError(
            f"{spec.layer}: {', '.join(used)} are multirnn objects and are not converted to "
            "Keras; pass ignore_training_options=True to convert without them"
        )
    return kwargs


def to_keras(layer, *, batch_size: int | None = None, ignore_training_options: bool = False):
    """A built Keras 3 layer (on the current Keras backend) computing what ``layer``
    computes.

    A stateful Keras layer needs a static batch size: ``batch_size``, or that of the
    states ``layer`` carries, which are copied over, or the layer's own ``batch_size``
    (``batch_input_shape``). ``trainable=False`` carries over.
    """
    import keras

    if not getattr(layer, "built", False):
        raise ConversionError("to_keras: the layer has no weights yet; build it first")
    if is_bidirectional(layer):
        if layer.spec.layer.stateful:
            raise ConversionError("to_keras: convert a stateful Bidirectional's two layers "
                                  "separately, to keep their states")  # fmt: skip
        inner = layer.spec.layer.replace(zero_output_for_mask=False)
        kwargs = keras_kwargs(inner, ignore_training_options)
        kwargs.pop("zero_output_for_mask")
        weights = [to_numpy(w) for w in layer.get_weights()]
        out = keras.layers.Bidirectional(getattr(keras.layers, inner.layer)(**kwargs),
                                         merge_mode=layer.merge_mode,
                                         dtype=kwargs.get("dtype"))  # fmt: skip
        out.build((None, None, weights[0].shape[0]))
        out.set_weights(weights)
        return out
    spec = layer.spec
    kwargs = keras_kwargs(spec, ignore_training_options)
    weights = [to_numpy(w) for w in layer.get_weights()]
    states = states_of(layer) if spec.stateful else None
    if spec.stateful:
        carried = None if states is None else states[0].shape[0]
        if batch_size is None:
            batch_size = carried if carried is not None else spec.batch_size
        if batch_size is None:
            raise ConversionError(
                "to_keras: a stateful Keras layer needs a static batch size; pass batch_size="
                " (or convert a layer that has been called, whose states fix it)"
            )
        if carried is not None and carried != batch_size:
            raise ConversionError(
                f"to_keras: batch_size={batch_size}, but the layer carries states for batch "
                f"size {carried}; reset_states() first to start the Keras layer from zeros"
            )
    out = getattr(keras.layers, spec.layer)(**kwargs)
    out.build((batch_size if spec.stateful else None, None, weights[0].shape[0]))
    out.set_weights(weights)
    if states is not None:
        for variable, value in zip(_flat(out.states), states):
            variable.assign(value)
    return out
