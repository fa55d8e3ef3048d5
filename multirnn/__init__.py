"""multirnn: the documented SimpleRNN, LSTM and GRU layers, with the same numbers on every engine.

``multirnn.LSTM`` (and ``SimpleRNN``, ``GRU``, ``Recurrent``, ``Bidirectional``) resolve to
the selected engine's class at attribute access; importing this package imports no
framework.
"""

from __future__ import annotations

from typing import Any

from multirnn import activations, constraints, convert, initializers, regularizers
from multirnn._version import __version__
from multirnn.arrays import to_numpy
from multirnn.builtin_cells import GRUCell, LSTMCell, SimpleRNNCell
from multirnn.cells import Cell, register_cell
from multirnn.engines import (
    EngineUnavailableError,
    UnknownEngineError,
    backend,
    engine,
    set_backend,
)
from multirnn.serialization import LayerFileError, from_config, load, save
from multirnn.spec import LayerSpec

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "Cell",
    "EngineUnavailableError",
    "GRUCell",
    "LSTMCell",
    "LayerFileError",
    "LayerSpec",
    "Recurrent",
    "SimpleRNN",
    "SimpleRNNCell",
    "UnknownEngineError",
    "__version__",
    "activations",
    "backend",
    "constraints",
    "convert",
    "engine",
    "from_config",
    "initializers",
    "load",
    "register_cell",
    "regularizers",
    "save",
    "set_backend",
    "to_numpy",
]

_LAYER_CLASSES = ("SimpleRNN", "LSTM", "GRU", "Recurrent", "Bidirectional", "RNN")


def __getattr__(name: str) -> Any:
    if name in _LAYER_CLASSES:
        return getattr(engine(), name)
    raise AttributeError(f"module 'multirnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAYER_CLASSES))
