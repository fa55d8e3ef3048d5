"""What every converter does on the multirnn side: build the layer, load weights and states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from multirnn import arrays
from multirnn.convert.layouts import ConversionError


def to_numpy(value: Any) -> np.ndarray:
    """An engine or peer tensor as a NumPy array (detached, on the host)."""
    if hasattr(value, "detach"):  # torch (bfloat16 too, as ml_dtypes' bfloat16)
        return arrays.to_numpy(value)
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            return np.asarray(value.numpy())
        except (TypeError, ValueError, AttributeError):
            pass
    return np.asarray(value)


def build(
    layer: str,
    units: int,
    kwargs: dict[str, Any],
    weights: Sequence[np.ndarray],
    backend: str | None,
    states: Sequence[np.ndarray] | None = None,
):
    """A multirnn layer on ``backend`` with ``weights`` and, for a stateful layer, the
    peer's carried ``states``."""
    from multirnn import engines, serialization
    from multirnn.spec import parse

    spec = parse(layer, (units,), kwargs)
    built = serialization.from_config(spec.to_config(), backend=backend)
    built.set_weights([np.asarray(w) for w in weights])
    if states is not None and spec.stateful:
        convert = getattr(engines.engine(backend).module, "from_numpy", lambda a: a)
        built.reset_states([convert(np.asarray(s, weights[0].dtype)) for s in states])
    return for_inference(built)


def build_bidirectional(layer: str, units: int, kwargs: dict[str, Any],
                        forward: Sequence[np.ndarray], backward: Sequence[np.ndarray],
                        merge_mode: str | None, backend: str | None):  # fmt: skip
    """A multirnn ``Bidirectional`` on ``backend`` with both directions' weights."""
    from multirnn import engines

    inner = build(layer, units, kwargs, forward, backend)
    wrapper = engines.engine(backend).Bidirectional(inner, merge_mode)
    wrapper.set_weights([np.asarray(w) for w in [*forward, *backward]])
    return for_inference(wrapper)


def for_inference(layer):
    """``layer`` ready for inference on its engine: a converted model is usually run, not
    trained, and a call with no ``training=`` must compute what the source model computes
    in inference. Only PyTorch needs a step (its modules start in training mode, where
    ``training=None`` applies dropout); ``train()`` switches back."""
    if getattr(layer, "engine_name", None) == "torch":
        layer.eval()
    return layer


def refuse_cells(layer: Any, what: str) -> None:
    """Converters translate the built-in layers; ``RNN(cell)`` (alone, in a list or inside
    ``Bidirectional``) has no counterpart in another framework's layer API: a clear
    refusal instead of an error from inside the converter."""
    items = layer if isinstance(layer, (list, tuple)) else [layer]
    for item in items:
        inner = getattr(item, "forward_layer", item)
        spec = getattr(inner, "spec", None)
        cell = getattr(spec, "cell", None)
        if cell is None:
            continue
        from multirnn.builtin_cells import _BuiltinCell

        hint = (
            f" It runs a built-in cell: build multirnn.{cell.layer}({cell.units}, ...) with the "
            "same options and weights (set_weights) and convert that."
            if isinstance(cell, _BuiltinCell)
            else ""
        )
        raise ConversionError(
            f"{what} translates the built-in layers (SimpleRNN, LSTM, GRU and Bidirectional "
            f"of them); got RNN({type(cell).__name__}), a layer of a cell, which has no "
            f"counterpart among another framework's layers.{hint}"
        )


def is_bidirectional(layer) -> bool:
    return hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer")


def states_of(layer) -> list[np.ndarray] | None:
    """The carried states of a stateful multirnn layer (None when it has none yet)."""
    states = getattr(layer, "states", None)
    return None if states is None else [to_numpy(s) for s in states]
