"""What flattening a layer as a pytree refuses, for the built-in layers and ``RNN(cell)``."""

from __future__ import annotations

from typing import Any

#: what flattening an unbuilt layer is called in its error
FLATTEN = "entering jit, grad, vmap or a tree utility (flattening it as a pytree)"


def unbuilt(name: str, what: str) -> ValueError:
    """The error for using a layer's weights before they exist."""
    return ValueError(
        f"{name}: {what} needs the weights, which do not exist yet; call "
        "build((batch, time, features)), call the layer once eagerly, or pass "
        "input_dim= (a layer must be built before it enters jit, grad or vmap)"
    )


def check_flattenable(layer: Any) -> None:
    """Refuse to flatten a layer that the user created and has not built: it has no leaves,
    so grad would return an empty gradient and training would silently do nothing.

    A layer that a tree utility made (``_unflatten``: ``jax.tree.map(lambda _: None,
    layer)``, an ``in_axes`` prefix, a partition) flattens whatever its leaves hold, so that
    it can be handed to the next transformation."""
    if not getattr(layer, "_from_tree", False):
        layer._require_built(FLATTEN)
