"""Recurrent layers from legacy Keras 2 HDF5 files (``model.save("m.h5")`` or
``model.save_weights("w.h5")``), including ``CuDNNLSTM``/``CuDNNGRU`` weights (h5py imported
lazily).

Weights are read in each layer's ``weight_names`` order, never by key order. In Keras 2
``"hard_sigmoid"`` is ``clip(0.2 x + 0.5, 0, 1)`` (multirnn's ``"hard_sigmoid"``); a file
written by Keras 3's legacy writer means Keras 3's (``"hard_sigmoid_relu6"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from multirnn.convert._common import build, build_bidirectional
from multirnn.convert.keras3 import FROM_KERAS
from multirnn.convert.layouts import GATES, ConversionError

_RECURRENT = {"SimpleRNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU", "CuDNNLSTM": "LSTM",
              "CuDNNGRU": "GRU"}  # fmt: skip
_PASSED = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
           "dropout", "recurrent_dropout", "use_bias")  # fmt: skip


@dataclass
class H5Layer:
    """One layer group of the file: its name, class and config (None in a weights-only
    file) and its arrays in ``weight_names`` order."""

    name: str
    class_name: str | None
    config: dict[str, Any] | None
    weights: list[np.ndarray] = field(repr=False)


def _attr_list(group, name: str) -> list[str]:
    """A string-list attribute, joining the chunks Keras writes for long lists."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs:
            values += list(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _configs(model_config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """layer name -> (class name, config) for every layer of a (nested) model config."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    config = model_config.get("config", {})
    layers = config if isinstance(config, list) else config.get("layers", [])
    for entry in layers:
        cls, cfg = entry.get("class_name"), entry.get("config", {})
        if cls in ("Sequential", "Model", "Functional"):
            out.update(_configs(entry))
        else:
            out[cfg.get("name") or entry.get("name")] = (cls, cfg)
    return out


def read(path: str | os.PathLike) -> tuple[str | None, list[H5Layer]]:
    """(keras_version, layers) of a Keras HDF5 weights or model file."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py comes with keras
        raise ImportError("reading Keras HDF5 files needs h5py: pip install h5py") from exc
    path = os.fspath(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ConversionError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with handle:
        root = handle.get("model_weights", handle)
        names = _attr_list(root, "layer_names")
        if not names:
            raise ConversionError(
                f"{path} is an HDF5 file but not a Keras weights file (no 'layer_names' attribute)"
            )
        version = root.attrs.get("keras_version", handle.attrs.get("keras_version"))
        version = None if version is None else _text(version)
        configs = {}
        if "model_config" in handle.attrs:
            configs = _configs(json.loads(_text(handle.attrs["model_config"])))
        layers = []
        for name in names:
            group = root[name]
            weights = [np.asarray(group[w]) for w in _attr_list(group, "weight_names")]
            cls, cfg = configs.get(name, (None, None))
            layers.append(H5Layer(name, cls, cfg, weights))
    return version, layers


def _keras3_file(version: str | None) -> bool:
    return version is not None and version.split(".")[0] == "3"


def _activation(value: Any, arg: str, layer: H5Layer, keras3: bool) -> str:
    if isinstance(value, str):
        if keras3 and value in FROM_KERAS:
            return FROM_KERAS[value]
        if not keras3 and value in FROM_KERAS:  # Keras 2 names mean what multirnn's mean
            return value
    raise ConversionError(f"Keras layer {layer.name!r}: {arg}={value!r} has no multirnn equivalent")


def _canonical(layer: H5Layer, kind: str | None) -> tuple[str, list[np.ndarray], dict[str, Any]]:
    """(multirnn layer, canonical weights with CuDNN layouts converted, the options the
    weights decide); ``kind`` None means: tell from the weights."""
    if len(layer.weights) not in (2, 3):
        raise ConversionError(
            f"Keras layer {layer.name!r} holds {len(layer.weights)} arrays; a recurrent layer "
            "holds kernel, recurrent_kernel[, bias] (Keras 1 files are not supported)"
        )
    kernel, recurrent, *rest = layer.weights
    units = recurrent.shape[0]
    g = recurrent.shape[1] // units if units else 0
    if kernel.ndim != 2 or recurrent.shape != (units, g * units) or kernel.shape[1] != g * units:
        raise ConversionError(
            f"Keras layer {layer.name!r}: kernel {kernel.shape} and recurrent_kernel "
            f"{recurrent.shape} are not a recurrent layer's"
        )
    options: dict[str, Any] = {}
    layer_kind = kind
    if layer_kind is None:
        layer_kind = {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}.get(g)
        if layer_kind is None:
            raise ConversionError(f"Keras layer {layer.name!r}: {g} gate blocks is no cell")
    elif GATES[layer_kind] != g:
        raise ConversionError(
            f"Keras layer {layer.name!r} is a {layer_kind} but its recurrent_kernel has {g} "
            f"gate blocks, not {GATES[layer_kind]}"
        )
    weights = [kernel, recurrent]
    if not rest:
        options["use_bias"] = False
        return layer_kind, weights, options
    (bias,) = rest
    cudnn = bias.shape == (2 * g * units,) and layer_kind in ("LSTM", "GRU")
    if cudnn:  # CuDNNLSTM/CuDNNGRU: each input block holds cuDNN's row-major (units, in)
        blocks = np.split(kernel, g, axis=1)
        kernel = np.concatenate([b.reshape(-1).reshape(units, -1).T for b in blocks], axis=1)
        recurrent = np.concatenate([b.T for b in np.split(recurrent, g, axis=1)], axis=1)
        weights = [kernel, recurrent]
        if layer_kind == "LSTM":
            bias = bias[: g * units] + bias[g * units :]
        else:
            bias = bias.reshape(2, g * units)
        options.update(activation="tanh", recurrent_activation="sigmoid")
    if layer_kind == "GRU":
        if bias.shape == (2, 3 * units):
            options["reset_after"] = True
        elif bias.shape == (3 * units,):
            options["reset_after"] = False
    expected = {(2, 3 * units), (3 * units,)} if layer_kind == "GRU" else {(g * units,)}
    if bias.shape not in expected:
        raise ConversionError(
            f"Keras layer {layer.name!r}: a {layer_kind} bias of {units} units has shape "
            f"{' or '.join(map(str, sorted(expected)))}, got {bias.shape}"
        )
    return layer_kind, [*weights, bias], options


def from_keras2_h5(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    layers: list[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The recurrent layers of a Keras HDF5 file as multirnn layers, by layer name.

    ``layers`` picks layers by name (default: every recurrent layer). ``options`` are
    constructor arguments for every converted layer; a weights-only file has no config, so
    the activations must come from there (``activation=``, ``recurrent_activation=``),
    and they may not contradict a file's config.
    """
    version, found = read(path)
    keras3 = _keras3_file(version)
    by_name = {layer.name: layer for layer in found}
    unknown = [n for n in layers or [] if n not in by_name]
    if unknown:
        raise ConversionError(
            f"{os.fspath(path)} has no layer {unknown[0]!r}; layers: {', '.join(by_name)}"
        )
    out = {}
    for layer in found:
        if layers is not None and layer.name not in layers:
            continue
        if layer.class_name == "Bidirectional":
            out[layer.name] = _bidirectional(layer, keras3, options, backend)
            continue
        if layer.class_name is not None and layer.class_name not in _RECURRENT:
            if layers is not None:
                raise ConversionError(
                    f"Keras layer {layer.name!r} is a {layer.class_name}, not a recurrent "
                    f"layer ({', '.join(_RECURRENT)}, Bidirectional)"
                )
            continue
        if layer.class_name is None and (not layer.weights or len(layer.weights) not in (2, 3)):
            continue  # weights-only file: groups of other layers
        layer_kind, kwargs, weights = _convert(layer, keras3, options)
        out[layer.name] = build(layer_kind, weights[1].shape[0], kwargs, weights, backend)
    return out


def _convert(layer: H5Layer, keras3: bool, options: dict[str, Any]):
    """(multirnn layer, keyword arguments, canonical weights) of one recurrent layer."""
    kind = _RECURRENT.get(layer.class_name) if layer.class_name else None
    layer_kind, weights, decided = _canonical(layer, kind)
    kwargs = dict(decided)
    if layer.config is not None:
        kwargs.update({k: layer.config[k] for k in _PASSED if k in layer.config})
        if "CuDNN" not in (layer.class_name or ""):
            kwargs["activation"] = _activation(layer.config.get("activation", "tanh"),
                                               "activation", layer, keras3)  # fmt: skip
            if layer_kind != "SimpleRNN":
                kwargs["recurrent_activation"] = _activation(
                    layer.config.get("recurrent_activation", "hard_sigmoid"),
                    "recurrent_activation", layer, keras3)  # fmt: skip
        units = layer.config.get("units")
        if units is not None and units != weights[1].shape[0]:
            raise ConversionError(
                f"Keras layer {layer.name!r}: config says units={units}, weights hold "
                f"{weights[1].shape[0]}"
            )
    for key, value in options.items():
        if key in kwargs and kwargs[key] != value:
            raise ConversionError(
                f"Keras layer {layer.name!r}: {key}={value!r} contradicts the file "
                f"({key}={kwargs[key]!r})"
            )
        kwargs[key] = value
    needed = ["activation"] + (["recurrent_activation"] if layer_kind != "SimpleRNN" else [])
    if any(arg not in kwargs for arg in needed):
        raise ConversionError(
            f"Keras layer {layer.name!r}: this file holds weights only, so the "
            f"activations are unknown; pass {'= and '.join(needed)}= as the layer was "
            "built with (Keras 2 defaults: activation 'tanh'; recurrent_activation "
            "'hard_sigmoid' before Keras 2.3, 'sigmoid' from 2.3 and in tf.keras 2)"
        )
    kwargs.setdefault("dtype", str(weights[0].dtype))
    return layer_kind, kwargs, weights


def _bidirectional(layer: H5Layer, keras3: bool, options: dict[str, Any], backend):
    """A Keras Bidirectional group: the forward layer's arrays, then the backward one's."""
    inner = (layer.config or {}).get("layer", {})
    cls, cfg = inner.get("class_name"), inner.get("config", {})
    if cls not in _RECURRENT or len(layer.weights) % 2:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} wraps {cls!r} with {len(layer.weights)} "
            "arrays; convertible: SimpleRNN, LSTM, GRU, CuDNNLSTM, CuDNNGRU"
        )
    half = len(layer.weights) // 2
    forward = H5Layer(layer.name, cls, cfg, layer.weights[:half])
    backward = H5Layer(layer.name, cls, cfg, layer.weights[half:])
    layer_kind, kwargs, forward_weights = _convert(forward, keras3, options)
    _, _, backward_weights = _convert(backward, keras3, options)
    merge_mode = layer.config.get("merge_mode", "concat")
    return build_bidirectional(layer_kind, forward_weights[1].shape[0], kwargs, forward_weights,
                               backward_weights, merge_mode, backend)  # fmt: skip
