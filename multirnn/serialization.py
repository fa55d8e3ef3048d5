"""Configs and files that move a layer between engines.

A saved layer is a safetensors file: the canonical weights as tensors, and the layer's
config (JSON) in the file's metadata. Any engine can load it and computes the same function.
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


def from_config(config: dict[str, Any], backend: str | None = None):
    """A new, unbuilt layer on ``backend`` (default: the selected engine) from a config."""
    spec = specs.from_config(config)
    cls = engines.engine(backend).layer_class(spec.layer)
    return cls.from_config(config)


def save(layer: Any, path: str | os.PathLike) -> None:
    """Write a built layer's config and canonical weights to a safetensors file."""
    from safetensors.numpy import save_file

    config = layer.get_config()  # raises for layers that use Python callables
    if not getattr(layer, "built", False):
        raise ValueError(
            f"save: {layer!r} has no weights yet; build it (or call it once) before saving"
        )
    names = layer.spec.weight_names
    tensors = {n: np.ascontiguousarray(w) for n, w in zip(names, layer.get_weights())}
    metadata = {
        _META_FORMAT: FORMAT,
        _META_CONFIG: json.dumps(config),
        _META_ENGINE: getattr(layer, "engine_name", "unknown"),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load(path: str | os.PathLike, backend: str | None = None, dtype: str | None = None):
    """A layer on ``backend`` (default: the selected engine) from a file written by save().

    ``dtype`` overrides the saved layer's dtype (e.g. to run a float32 PyTorch layer on the
    NumPy engine in float32 rather than its float64 default)."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"load: {path} is not a readable safetensors file: {exc}") from exc
    if metadata.get(_META_FORMAT) != FORMAT or _META_CONFIG not in metadata:
        raise ValueError(
            f"load: {path} is a safetensors file but not a multirnn layer (metadata "
            f"{_META_FORMAT!r} is {metadata.get(_META_FORMAT)!r}, expected {FORMAT!r})"
        )
    config = json.loads(metadata[_META_CONFIG])
    if dtype is not None:
        config["dtype"] = dtype
    layer = from_config(config, backend=backend)
    names = layer.spec.weight_names
    if set(tensors) != set(names):
        raise ValueError(
            f"load: {path} holds tensors {sorted(tensors)}, but its config needs {list(names)}"
        )
    layer.set_weights([tensors[n] for n in names])
    return layer
