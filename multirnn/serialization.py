"""Configs and files that move a layer between engines.

A saved layer is a safetensors file: the canonical weights as tensors, the layer's config
(JSON) in the file's metadata, and a stateful layer's carried states, so that training or
streaming continues where it stopped. Any engine can load it and computes the same
function. A ``Bidirectional`` saves the same way, its two directions' tensors under
``forward/`` and ``backward/``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from multirnn import engines
from multirnn import spec as specs

FORMAT = "multirnn.layer/1"
_META_FORMAT = "multirnn.format"
_META_CONFIG = "multirnn.config"
_META_ENGINE = "multirnn.engine"
_STATE = "state/"
_DIRECTIONS = ("forward/", "backward/")


class LayerFileError(ValueError):
    """A file (or the config inside it) that does not describe a multirnn layer. The
    message names the file and the offending key."""


def _is_bidirectional(config: Any) -> bool:
    return isinstance(config, dict) and isinstance(config.get("layer"), dict)


def from_config(config: dict[str, Any], backend: str | None = None):
    """A new, unbuilt layer (or ``Bidirectional``) on ``backend`` (default: the selected
    engine) from a config that ``get_config()`` returned."""
    eng = engines.engine(backend)
    if isinstance(config, dict) and "cell" in config:
        return eng.RNN.from_config(config)
    if _is_bidirectional(config):
        unknown = sorted(set(config) - {"layer", "merge_mode", "name"})
        if unknown:
            raise ValueError(
                f"a Bidirectional config has the keys 'layer' and 'merge_mode'; got {unknown}"
            )
        return eng.Bidirectional.from_config(config)
    spec = specs.from_config(config)
    return eng.layer_class(spec.layer).from_config(config)


def _weight_names(layer: Any) -> list[str]:
    """A layer's weight names in order: its spec's, or (``RNN``) its cell's declarations."""
    names = getattr(layer, "weight_names", None)
    return list(names) if names is not None else list(layer.spec.weight_names)


def _layers(layer: Any) -> list[tuple[str, Any]]:
    """(tensor-name prefix, recurrent layer) pairs: one for a layer, two for a wrapper."""
    if hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer"):
        return list(zip(_DIRECTIONS, (layer.forward_layer, layer.backward_layer)))
    return [("", layer)]


def save(layer: Any, path: str | os.PathLike, *, states: bool = True) -> None:
    """Write a built layer's (or ``Bidirectional``'s) config and canonical weights to a
    safetensors file, and with ``states`` (the default) a stateful layer's carried states."""
    from safetensors.numpy import save_file

    from multirnn.arrays import to_numpy

    config = layer.get_config()  # raises for layers that use Python callables
    if not getattr(layer, "built", False):
        raise ValueError(
            f"save: {layer!r} has no weights yet; build it (or call it once) before saving"
        )
    tensors: dict[str, np.ndarray] = {}
    for prefix, part in _layers(layer):
        for name, w in zip(_weight_names(part), part.get_weights()):
            tensors[prefix + name] = np.ascontiguousarray(w)
        carried = part.states if states and part.spec.stateful else None
        if carried is not None:
            for name, value in zip(part.spec.state_names, to_numpy(list(carried))):
                tensors[f"{prefix}{_STATE}{name}"] = np.ascontiguousarray(value)
    metadata = {
        _META_FORMAT: FORMAT,
        _META_CONFIG: json.dumps(config),
        _META_ENGINE: getattr(layer, "engine_name", "unknown"),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    dtype: str | None = None,
    *,
    states: bool = True,
):
    """A layer (or ``Bidirectional``) on ``backend`` (default: the selected engine) from a
    file written by :func:`save`, with its carried states unless ``states=False``.

    ``dtype`` overrides the saved layer's dtype (e.g. to run a float32 PyTorch layer on the
    NumPy engine in float32 rather than its float64 default). A file that is not a
    multirnn layer, or whose contents disagree with each other, raises
    :class:`LayerFileError` naming the file and the key."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise LayerFileError(f"load: {path} is not a readable safetensors file: {exc}") from exc
    if metadata.get(_META_FORMAT) != FORMAT or _META_CONFIG not in metadata:
        raise LayerFileError(
            f"load: {path} is a safetensors file but not a multirnn layer (metadata "
            f"{_META_FORMAT!r} is {metadata.get(_META_FORMAT)!r}, expected {FORMAT!r})"
        )
    config = _config(path, metadata[_META_CONFIG])
    if dtype is not None:
        specs.parse("LSTM", (1,), {"dtype": dtype})  # the dtype argument's own error
        inner = config["layer"] if _is_bidirectional(config) else config
        inner["dtype"] = dtype
    try:
        layer = from_config(config, backend=backend)
    except (engines.UnknownEngineError, engines.EngineUnavailableError):
        raise
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise LayerFileError(f"load: {path}: metadata key {_META_CONFIG!r}: {reason}") from None
    parts = _layers(layer)
    expected = {prefix + n for prefix, part in parts for n in _weight_names(part)}
    state_keys = {f"{prefix}{_STATE}{n}" for prefix, part in parts for n in part.spec.state_names}
    stored = {k for k in tensors if k not in state_keys}
    if stored != expected:
        raise LayerFileError(
            f"load: {path} holds tensors {sorted(stored)}, but its config needs "
            f"{sorted(expected)} (and, for a stateful layer, {sorted(state_keys)})"
        )
    for prefix, part in parts:
        try:
            part.set_weights([tensors[prefix + n] for n in _weight_names(part)])
        except (TypeError, ValueError) as exc:
            raise LayerFileError(f"load: {path}: {exc}") from exc
        carried = [tensors.get(f"{prefix}{_STATE}{n}") for n in part.spec.state_names]
        if not states or all(c is None for c in carried):
            continue
        if any(c is None for c in carried) or not part.spec.stateful:
            raise LayerFileError(
                f"load: {path} holds carried states {prefix}{_STATE}* for a layer that "
                f"{'is not stateful' if not part.spec.stateful else 'needs all of them'}"
            )
        try:
            part.reset_states(carried)
        except (TypeError, ValueError) as exc:
            raise LayerFileError(f"load: {path}: carried states: {exc}") from exc
    if getattr(layer, "engine_name", None) == "torch":
        layer.eval()  # ready for inference, as the converters return layers (train() undoes)
    return layer


def _config(path: str, text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        kind = "nested too deeply" if isinstance(exc, RecursionError) else f"not JSON ({exc})"
        raise LayerFileError(f"load: {path}: metadata key {_META_CONFIG!r} is {kind}") from None
    if not isinstance(config, dict):
        raise LayerFileError(
            f"load: {path}: metadata key {_META_CONFIG!r} must hold a JSON object, got "
            f"{type(config).__name__}"
        )
    return config
