"""Recurrent layers from legacy Keras HDF5 files (``model.save("m.h5")`` or
``model.save_weights("w.h5")``, written by Keras 2, tf.keras / tf-keras or Keras 3's legacy
writer), ``CuDNNLSTM``/``CuDNNGRU`` weights included (h5py imported lazily).

Every recurrent layer of the file is converted exactly or refused with a
:class:`ConversionError` naming the option and the reason; the file's other layers are
skipped. Weights are read in each layer's ``weight_names`` order, never by key order, and
a nested model's group is split among its layers by weight name. In Keras 2
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
from multirnn.convert.keras3 import _PASSED, _TRAINING, FROM_KERAS
from multirnn.convert.layouts import GATES, ConversionError

_RECURRENT = {"SimpleRNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU", "CuDNNLSTM": "LSTM",
              "CuDNNGRU": "GRU"}  # fmt: skip
_MODELS = ("Sequential", "Functional", "Model")
#: the cells of ``keras.layers.RNN(cell)`` that are a recurrent layer
_CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
#: options that exist only for some layers: not passed to the others
_ONLY_FOR = {"recurrent_activation": ("LSTM", "GRU"), "reset_after": ("GRU",),
             "unit_forget_bias": ("LSTM",)}  # fmt: skip
_CELL = ("kernel", "recurrent_kernel")
_UNSET: Any = object()


@dataclass
class H5Layer:
    """One layer of the file: its name (``outer/inner`` inside a nested model), class and
    config (None in a weights-only file, where ``class_name`` is told from the weight
    names: a recurrent layer, ``"Bidirectional"``, or None for any other layer), its
    arrays in ``weight_names`` order and, when it cannot be read, why."""

    name: str
    class_name: str | None
    config: dict[str, Any] | None
    weights: list[np.ndarray] = field(repr=False)
    weight_names: list[str] = field(default_factory=list, repr=False)
    problem: str | None = None

    @property
    def recurrent(self) -> bool:
        return self.class_name in _RECURRENT or self.class_name == "Bidirectional"


def _attr_list(group, name: str) -> list[str]:
    """A string-list attribute, joining the chunks Keras writes for long lists."""
    if name in group.attrs:
        values = group.attrs[name]
        values = [values] if isinstance(values, (str, bytes)) else list(values)
    else:
        values, k = [], 0
        while f"{name}{k}" in group.attrs:
            values += list(group.attrs[f"{name}{k}"])
            k += 1
    return [_text(v) for v in values]


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _parts(weight_name: str) -> list[str]:
    """``"lstm/lstm_cell/kernel:0"`` -> ``["lstm", "lstm_cell", "kernel"]``."""
    parts = weight_name.split("/")
    parts[-1] = parts[-1].split(":")[0]
    return parts


def _is_model(entry: dict[str, Any]) -> bool:
    config = entry.get("config")
    return (
        entry.get("class_name") in _MODELS
        or isinstance(config, list)
        or (isinstance(config, dict) and isinstance(config.get("layers"), list))
    )


def _entries(model: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The layer entries of a model config (a Sequential's may be a bare list)."""
    config = model.get("config", {})
    layers = config.get("layers", []) if isinstance(config, dict) else config
    if not isinstance(layers, list) or not all(isinstance(e, dict) for e in layers):
        raise ConversionError(
            f"{where} is not a Keras model config: the layers of {model.get('class_name')!r} "
            "are not a list of layer configs"
        )
    return layers


def _entry_name(entry: dict[str, Any]) -> str | None:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name or entry.get("name")


def _leaves(model: dict[str, Any], prefix: str, where: str):
    """(path, model names on the way, class name, config) of every layer of a nested model."""
    for entry in _entries(model, where):
        name = _entry_name(entry)
        if _is_model(entry):
            yield from (
                (path, [name, *models], cls, cfg)
                for path, models, cls, cfg in _leaves(entry, f"{prefix}{name}/", where)
            )
        else:
            yield f"{prefix}{name}", [], entry.get("class_name"), entry.get("config") or {}


def _model_config(handle, path: str) -> dict[str, tuple[dict[str, Any], ...]] | None:
    """Top-level layer name -> its config entry, or None for a weights-only file."""
    if "model_config" not in handle.attrs:
        return None
    where = f"{path}: attribute 'model_config'"
    try:
        config = json.loads(_text(handle.attrs["model_config"]))
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        raise ConversionError(
            f"{where} is not a Keras model config (a JSON object with 'class_name' and "
            f"'config'); got {type(config).__name__} {str(config)[:60]!r}"
        )
    return {_entry_name(entry): entry for entry in _entries(config, where)}


def read(path: str | os.PathLike) -> tuple[str | None, list[H5Layer]]:
    """(keras_version, layers) of a Keras HDF5 weights or model file; the layers of nested
    models come as ``outer/inner``, in file order."""
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
            hint = ""
            if "layers" in root or "vars" in root:
                hint = (
                    " (it looks like a Keras 3 or tf-keras '.weights.h5' file: load it into "
                    "its Keras model and convert the layers with from_keras)"
                )
            raise ConversionError(
                f"{path} is an HDF5 file but not a legacy Keras weights file "
                f"(no 'layer_names' attribute){hint}"
            )
        version = root.attrs.get("keras_version", handle.attrs.get("keras_version"))
        version = None if version is None else _text(version)
        entries = _model_config(handle, path)
        layers = []
        for name in names:
            group = root.get(name)
            if not isinstance(group, h5py.Group):
                raise ConversionError(
                    f"{path}: 'layer_names' lists {name!r}, but the file has no group {name!r}"
                )
            weight_names = _attr_list(group, "weight_names")
            weights = []
            for w in weight_names:
                dataset = group.get(w)
                if not isinstance(dataset, h5py.Dataset):
                    raise ConversionError(
                        f"{path}: layer {name!r} lists {w!r} in 'weight_names', "
                        "but the file has no such dataset"
                    )
                weights.append(np.asarray(dataset))
            if entries is None:
                layers += _weights_only(name, weights, weight_names)
            elif name in entries and _is_model(entries[name]):
                layers += _nested(entries[name], name, weights, weight_names, path)
            else:
                entry = entries.get(name, {})
                config = entry.get("config") if isinstance(entry.get("config"), dict) else None
                cls, config = _unwrap_rnn(entry.get("class_name"), config)
                layers.append(H5Layer(name, cls, config, weights, weight_names))
    return version, layers


def _unwrap_rnn(cls: str | None, config: Any) -> tuple[str | None, Any]:
    """``RNN(cell)`` of a SimpleRNNCell, LSTMCell or GRUCell is that cell's layer: (its
    class, the cell's config updated with the RNN's). Another cell stays an "RNN"."""
    cell = config.get("cell") if cls == "RNN" and isinstance(config, dict) else None
    if not isinstance(cell, dict) or cell.get("class_name") not in _CELLS:
        return cls, config
    inner = cell.get("config") if isinstance(cell.get("config"), dict) else {}
    return _CELLS[cell["class_name"]], {**inner, **{k: v for k, v in config.items() if k != "cell"}}


def _shown(cls: str | None, config: Any) -> str:
    """A class name for messages (an RNN with the class of its cell)."""
    cell = config.get("cell") if cls == "RNN" and isinstance(config, dict) else None
    if isinstance(cell, dict):
        return f"an RNN of {cell.get('class_name')!r}"
    if isinstance(cell, list):
        return "an RNN of stacked cells"
    return repr(cls)


def _nested(entry, name, weights, weight_names, path) -> list[H5Layer]:
    """A nested model's layers, each with the arrays whose weight names start with its name
    (after the names of the models around it, where a writer puts them)."""
    leaves = list(_leaves(entry, f"{name}/", f"{path}: attribute 'model_config'"))
    by_name = {p.rsplit("/", 1)[-1]: p for p, *_ in leaves}
    models = {name} | {m for _, ms, _, _ in leaves for m in ms}
    owned: dict[str, list[int]] = {}
    for k, w in enumerate(weight_names):
        parts = _parts(w)
        while len(parts) > 1 and parts[0] in models and parts[0] not in by_name:
            parts = parts[1:]
        if parts[0] in by_name:
            owned.setdefault(by_name[parts[0]], []).append(k)
    out = []
    for leaf, _, cls, cfg in leaves:
        ks = owned.get(leaf, [])
        cls, cfg = _unwrap_rnn(cls, cfg)
        layer = H5Layer(leaf, cls, cfg, [weights[k] for k in ks], [weight_names[k] for k in ks])
        if layer.recurrent and not ks:
            layer.problem = (
                f"its weights are not found in the group {name!r} of the nested "
                f"model (no weight name starts with {leaf.rsplit('/', 1)[-1]!r})"
            )
        out.append(layer)
    return out


def _cells(weight_names: list[str]) -> list[tuple[str, list[int]]]:
    """The weights grouped by the path that owns them (all but the last name), in order."""
    cells: dict[str, list[int]] = {}
    for k, w in enumerate(weight_names):
        cells.setdefault("/".join(_parts(w)[:-1]), []).append(k)
    return list(cells.items())


def _is_cell(weight_names: list[str], ks: list[int]) -> bool:
    names = tuple(_parts(weight_names[k])[-1] for k in ks)
    return names in (_CELL, (*_CELL, "bias"))


def _direction(owner: str) -> str | None:
    for part in owner.split("/"):
        for direction in ("forward", "backward"):
            if part.startswith(f"{direction}_"):
                return direction
    return None


def _classify(name: str, weights, weight_names, ks: list[int]) -> H5Layer | None:
    """A weights-only layer from its weight names: one recurrent cell (kernel,
    recurrent_kernel[, bias]), a forward and a backward one (Bidirectional), or None."""
    cells = _cells([weight_names[k] for k in ks])
    picked = [[ks[j] for j in js] for _, js in cells]
    if not all(_is_cell(weight_names, p) for p in picked):
        return None
    if len(cells) == 1:
        kind = None
    elif len(cells) == 2 and [_direction(o) for o, _ in cells] == ["forward", "backward"]:
        kind = "Bidirectional"
    else:
        return None
    order = [k for p in picked for k in p]
    return H5Layer(
        name, kind or "?", None, [weights[k] for k in order], [weight_names[k] for k in order]
    )


def _weights_only(name: str, weights, weight_names) -> list[H5Layer]:
    """The layers of one group of a weights-only file; a nested model's group holds several
    layers, told apart by the first name of their weight names."""
    everything = list(range(len(weights)))
    layer = _classify(name, weights, weight_names, everything)
    if layer is not None:
        return [_weights_only_layer(layer)]
    firsts: dict[str, list[int]] = {}
    for k in everything:
        firsts.setdefault(_parts(weight_names[k])[0], []).append(k)
    if len(firsts) < 2 or name in firsts:  # one layer of another kind
        return [H5Layer(name, None, None, weights, weight_names)]
    out = []
    for first, ks in firsts.items():
        inner = _classify(f"{name}/{first}", weights, weight_names, ks)
        if inner is not None:
            out.append(_weights_only_layer(inner))
    return out


def _weights_only_layer(layer: H5Layer) -> H5Layer:
    """A weights-only layer: config None, class "Bidirectional" or that of the shapes."""
    if layer.class_name == "?":
        layer.class_name = _kind_from_shapes(layer.weights)
        if layer.class_name is None:
            shapes = " and ".join(str(w.shape) for w in layer.weights[:2])
            layer.problem = (f"its kernel and recurrent_kernel {shapes} are no recurrent "
                             "cell's (1, 3 or 4 gate blocks)")  # fmt: skip
    return layer


def _kind_from_shapes(weights: list[np.ndarray]) -> str | None:
    kernel, recurrent = weights[0], weights[1]
    if recurrent.ndim != 2 or kernel.ndim != 2 or not recurrent.shape[0]:
        return None
    g, rest = divmod(recurrent.shape[1], recurrent.shape[0])
    return {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}.get(g) if not rest else None


def _keras3_file(version: str | None) -> bool:
    return version is not None and version.split(".")[0] == "3"


def _activation(value: Any, arg: str, layer: H5Layer, keras3: bool) -> str:
    if isinstance(value, str) and value in FROM_KERAS:
        return FROM_KERAS[value] if keras3 else value  # Keras 2 names mean multirnn's
    raise ConversionError(
        f"Keras layer {layer.name!r}: {arg}={value!r} has no multirnn equivalent; multirnn "
        f"takes {', '.join(FROM_KERAS)}"
    )


def _canonical(layer: H5Layer, kind: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(canonical weights with CuDNN layouts converted, the options the weights decide)."""
    if len(layer.weights) not in (2, 3):
        raise ConversionError(
            f"Keras layer {layer.name!r} holds {len(layer.weights)} arrays; a recurrent layer "
            "holds kernel, recurrent_kernel[, bias] (Keras 1 files are not supported)"
        )
    kernel, recurrent, *rest = layer.weights
    units = recurrent.shape[0] if recurrent.ndim == 2 else 0
    g = GATES[kind]
    if kernel.ndim != 2 or recurrent.shape != (units, g * units) or kernel.shape[1] != g * units:
        raise ConversionError(
            f"Keras layer {layer.name!r}: kernel {kernel.shape} and recurrent_kernel "
            f"{recurrent.shape} do not fit its class {kind} ({g} gate blocks)"
        )
    for w in layer.weights:
        if w.dtype not in (np.float32, np.float64):
            raise ConversionError(
                f"Keras layer {layer.name!r} holds {w.dtype} weights; "
                "multirnn computes in float32 or float64"
            )
    options: dict[str, Any] = {}
    weights = [kernel, recurrent]
    if not rest:
        options["use_bias"] = False
        return weights, options
    (bias,) = rest
    # a weights-only file names no class: its bias shape tells a CuDNN layer
    cudnn_class = layer.config is None or "CuDNN" in (layer.class_name or "")
    if cudnn_class and kind != "SimpleRNN" and bias.shape == (2 * g * units,):
        # CuDNNLSTM/CuDNNGRU: each input block holds cuDNN's row-major (units, in)
        blocks = np.split(kernel, g, axis=1)
        kernel = np.concatenate([b.reshape(-1).reshape(units, -1).T for b in blocks], axis=1)
        recurrent = np.concatenate([b.T for b in np.split(recurrent, g, axis=1)], axis=1)
        weights = [kernel, recurrent]
        bias = bias[: g * units] + bias[g * units :] if kind == "LSTM" else bias.reshape(2, -1)
        options.update(activation="tanh", recurrent_activation="sigmoid")
    if kind == "GRU" and bias.shape in ((2, 3 * units), (3 * units,)):
        options["reset_after"] = bias.ndim == 2
    expected = {(2, 3 * units), (3 * units,)} if kind == "GRU" else {(g * units,)}
    if bias.shape not in expected:
        raise ConversionError(
            f"Keras layer {layer.name!r}: a {kind} bias of {units} units has shape "
            f"{' or '.join(map(str, sorted(expected)))}, got {bias.shape}"
        )
    return [*weights, bias], options


def from_keras2_h5(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    layers: list[str] | None = None,
    merge_mode: Any = _UNSET,
    ignore_training_options: bool = False,
    ignore_time_major: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """The recurrent layers of a Keras HDF5 file as multirnn layers, by layer name
    (``outer/inner`` for a layer of a nested model).

    ``layers`` picks layers by name (default: every recurrent layer; a recurrent layer that
    cannot be converted exactly is refused, pick the others by name). ``options`` are
    constructor arguments for every converted layer (an option that a layer does not have,
    such as ``recurrent_activation`` for a ``SimpleRNN``, is not passed to it); they may not
    contradict the file's config. A weights-only file has no config: the activations must
    come from ``options``, as must ``reset_after`` for a GRU without a bias and
    ``merge_mode`` for a ``Bidirectional``.

    Refused unless asked for: regularizers and constraints (``ignore_training_options=True``
    converts without them); ``time_major=True`` (``ignore_time_major=True`` gives a layer
    taking ``(batch, time, features)``: swap the first two axes of the inputs and of the
    sequence outputs).
    """
    version, found = read(path)
    keras3 = _keras3_file(version)
    by_name = {layer.name: layer for layer in found}
    unknown = [n for n in layers or [] if n not in by_name]
    if unknown:
        raise ConversionError(
            f"{os.fspath(path)} has no layer {unknown[0]!r}; layers: {', '.join(by_name)}"
        )
    flags = {
        "ignore_training_options": ignore_training_options,
        "ignore_time_major": ignore_time_major,
    }
    out = {}
    for layer in found:
        if layers is not None and layer.name not in layers:
            continue
        if not layer.recurrent:
            if layers is not None and layer.problem is not None:
                raise ConversionError(f"Keras layer {layer.name!r}: {layer.problem}")
            if layers is not None:
                what = (
                    f"is {_shown(layer.class_name, layer.config)},"
                    if layer.class_name == "RNN"
                    else f"is a {layer.class_name},"
                    if layer.class_name
                    else f"holds weights {layer.weight_names or '(none)'}, which are"
                )
                raise ConversionError(
                    f"Keras layer {layer.name!r} {what} not a recurrent layer "
                    f"({', '.join(_RECURRENT)}, Bidirectional, RNN of {', '.join(_CELLS)})"
                )
            continue
        if layer.problem is not None:
            raise ConversionError(f"Keras layer {layer.name!r}: {layer.problem}")
        try:
            if layer.class_name == "Bidirectional":
                out[layer.name] = _bidirectional(layer, keras3, options, merge_mode, flags, backend)
            else:
                kind, kwargs, weights = _convert(layer, keras3, options, flags)
                out[layer.name] = build(kind, weights[1].shape[0], kwargs, weights, backend)
        except ConversionError as exc:
            if layers is None and len([f for f in found if f.recurrent]) > 1:
                raise ConversionError(f"{exc} (pick the other layers with layers=[...])") from exc
            raise
    return out


def _dtype_policy(value: Any) -> str | None:
    """The name of a config's dtype: a string or a (Keras 2 or 3) policy object."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    return value if isinstance(value, str) else None


def _config_kwargs(layer: H5Layer, kind: str, keras3: bool, flags: dict[str, bool]):
    """The keyword arguments a layer's config decides (refusing what has no exact form)."""
    config = layer.config or {}
    kwargs = {k: config[k] for k in _PASSED if k in config}
    if "CuDNN" not in (layer.class_name or ""):
        kwargs["activation"] = _activation(
            config.get("activation", "tanh"), "activation", layer, keras3
        )
        if kind != "SimpleRNN":
            kwargs["recurrent_activation"] = _activation(
                config.get("recurrent_activation", "hard_sigmoid"),
                "recurrent_activation",
                layer,
                keras3,
            )
    if kind == "GRU" and "CuDNN" not in (layer.class_name or ""):
        kwargs["reset_after"] = bool(config.get("reset_after", False))  # Keras 2's default
    policy = _dtype_policy(config.get("dtype"))
    if policy is not None and policy not in ("float32", "float64"):
        raise ConversionError(
            f"Keras layer {layer.name!r} has dtype policy {policy!r}: it computes in "
            f"{policy.split('_')[-1]}, while multirnn computes in float32 or float64"
        )
    if config.get("time_major") and not flags["ignore_time_major"]:
        raise ConversionError(
            f"Keras layer {layer.name!r} has time_major=True: it takes (time, batch, features) "
            "inputs, while multirnn layers take (batch, time, features). Pass "
            "ignore_time_major=True to convert it anyway (the same weights and function: swap "
            "the first two axes of its inputs and sequence outputs)"
        )
    used = [k for k in _TRAINING if config.get(k) is not None]
    if used and not flags["ignore_training_options"]:
        raise ConversionError(
            f"Keras layer {layer.name!r} uses {', '.join(used)}; multirnn's regularizers and "
            "constraints are its own objects, so they are not converted. Pass "
            "ignore_training_options=True to convert without them"
        )
    units = config.get("units")
    return kwargs, units


def _convert(layer: H5Layer, keras3: bool, options: dict[str, Any], flags: dict[str, bool]):
    """(multirnn layer, keyword arguments, canonical weights) of one recurrent layer."""
    kind = _RECURRENT.get(layer.class_name or "")
    if kind is None:
        raise ConversionError(
            f"Keras layer {layer.name!r}: its arrays are no recurrent cell's "
            "(kernel, recurrent_kernel[, bias] of 1, 3 or 4 gate blocks)"
        )
    weights, decided = _canonical(layer, kind)
    kwargs: dict[str, Any] = {}
    if layer.config is not None:
        kwargs, units = _config_kwargs(layer, kind, keras3, flags)
        if units is not None and units != weights[1].shape[0]:
            raise ConversionError(
                f"Keras layer {layer.name!r}: config says units={units}, weights hold "
                f"{weights[1].shape[0]}"
            )
    for key, value in decided.items():
        if key in kwargs and kwargs[key] != value:
            raise ConversionError(
                f"Keras layer {layer.name!r}: config says {key}={kwargs[key]!r}, but its "
                f"weights are those of {key}={value!r}"
            )
        kwargs[key] = value
    for key, value in options.items():
        if key in _ONLY_FOR and kind not in _ONLY_FOR[key]:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ConversionError(
                f"Keras layer {layer.name!r}: {key}={value!r} contradicts the file "
                f"({key}={kwargs[key]!r})"
            )
        kwargs[key] = value
    needed = ["activation"] + (["recurrent_activation"] if kind != "SimpleRNN" else [])
    if any(arg not in kwargs for arg in needed):
        raise ConversionError(
            f"Keras layer {layer.name!r}: this file holds weights only, so the "
            f"activations are unknown; pass {'= and '.join(needed)}= as the layer was "
            "built with (Keras 2 defaults: activation 'tanh'; recurrent_activation "
            "'hard_sigmoid' before Keras 2.3, 'sigmoid' from 2.3 and in tf.keras 2)"
        )
    if kind == "GRU" and "reset_after" not in kwargs:
        raise ConversionError(
            f"Keras layer {layer.name!r}: this file holds weights only and the GRU has no "
            "bias, so reset_after is unknown (the two forms compute different functions); "
            "pass reset_after= as the layer was built with (the default is False in Keras 2, "
            "True in tf.keras from TensorFlow 2.0)"
        )
    kwargs.setdefault("dtype", str(weights[0].dtype))
    return kind, kwargs, weights


def _inner(layer: H5Layer, key: str, second: bool, keras3, options, flags):
    """(kind, kwargs, weights) of one direction of a Bidirectional: the config under ``key``
    (``"layer"`` or ``"backward_layer"``) with the first or the ``second`` half of the
    arrays."""
    half = len(layer.weights) // 2
    part = slice(half, None) if second else slice(None, half)
    entry = (layer.config or {}).get(key) or {}
    cls, cfg = _unwrap_rnn(entry.get("class_name"), entry.get("config"))
    if layer.config is None:  # weights-only: told from the shapes
        cls, cfg = _kind_from_shapes(layer.weights[part]), None
    elif cls not in _RECURRENT or not isinstance(cfg, dict):
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} wraps {_shown(cls, cfg)}; convertible: "
            f"{', '.join(_RECURRENT)}, RNN of {', '.join(_CELLS)}"
        )
    inner = H5Layer(layer.name, cls, cfg, layer.weights[part], layer.weight_names[part])
    return _convert(inner, keras3, options, flags)


def _bidirectional(layer: H5Layer, keras3, options, merge_mode, flags, backend):
    """A Keras Bidirectional: the forward layer's arrays, then the backward one's; a custom
    ``backward_layer`` must be the forward layer run backwards."""
    if len(layer.weights) % 2:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} holds {len(layer.weights)} "
            "arrays, not the same number for each direction"
        )
    kind, forward, forward_weights = _inner(layer, "layer", False, keras3, options, flags)
    config = layer.config or {}
    custom = bool(config.get("backward_layer"))
    back_kind, backward, backward_weights = _inner(
        layer, "backward_layer" if custom else "layer", True, keras3, options, flags
    )
    if custom:
        ignored = {"go_backwards", "zero_output_for_mask"}
        differs = sorted(
            k
            for k in forward.keys() | backward.keys()
            if k not in ignored and forward.get(k) != backward.get(k)
        )
        if backward_weights[1].shape != forward_weights[1].shape:
            differs.insert(0, "units")
        if back_kind != kind:
            differs.insert(0, f"class ({back_kind}, not {kind})")
        if differs or forward.get("go_backwards") == backward.get("go_backwards"):
            raise ConversionError(
                f"Keras Bidirectional {layer.name!r} has a backward_layer that is not the "
                f"forward layer run backwards (differs in {', '.join(differs) or 'go_backwards'}"
                "); multirnn's Bidirectional derives its backward copy from the forward layer"
            )
    elif back_kind != kind or backward != forward:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r}: its backward arrays are not "
            "those of its forward layer's kind"
        )
    if layer.config is not None:
        in_file = config.get("merge_mode", "concat")
        if merge_mode is not _UNSET and merge_mode != in_file:
            raise ConversionError(
                f"Keras Bidirectional {layer.name!r}: merge_mode="
                f"{merge_mode!r} contradicts the file (merge_mode={in_file!r})"
            )
        merge_mode = in_file
    elif merge_mode is _UNSET:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r}: this file holds weights only, so the merge "
            "mode is unknown; pass merge_mode= as the layer was built with ('concat', 'sum', "
            "'mul', 'ave' or None; Keras's default 'concat')"
        )
    forward.pop("zero_output_for_mask", None)
    return build_bidirectional(
        kind,
        forward_weights[1].shape[0],
        forward,
        forward_weights,
        backward_weights,
        merge_mode,
        backend,
    )
