"""Engine outputs back to NumPy, without importing any framework.

Layers return their engine's native tensors (so they stay differentiable and on their
device); :func:`to_numpy` is the one way back that works whichever engine produced them,
which is what makes a script engine-neutral from end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multirnn import precision


def _framework(value: object) -> str:
    return type(value).__module__.split(".")[0]


def to_numpy(value: Any) -> Any:
    """NumPy arrays from any engine's output.

    Takes a tensor of any engine (a ``torch.Tensor``, also one that requires grad or lives
    on a GPU; a ``jax.Array``; a ``tf.Tensor`` or Keras/TensorFlow variable; a NumPy array)
    or a list/tuple of them, as ``return_state=True`` and ``Bidirectional(merge_mode=None)``
    return. Lists and tuples keep their type; ``None`` stays ``None``. Symbolic values
    (inside ``jit``, ``tf.function`` or a Keras functional model) have no values yet and
    raise ``TypeError``.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    if isinstance(value, np.ndarray):
        return value
    framework = _framework(value)
    if framework == "torch" and hasattr(value, "detach"):
        value = value.detach().cpu().resolve_conj().resolve_neg()
        if str(value.dtype) == "torch.bfloat16":  # NumPy's bfloat16 is ml_dtypes'; exact
            return value.float().numpy().astype(precision.numpy_dtype("bfloat16"))
        return value.numpy()
    if framework in ("tensorflow", "keras") and hasattr(value, "numpy"):
        try:
            return np.asarray(value.numpy())
        except (AttributeError, NotImplementedError, ValueError) as exc:
            raise TypeError(
                f"to_numpy: {type(value).__name__} is symbolic (inside tf.function or a Keras "
                "functional model) and has no values yet; call it eagerly"
            ) from exc
    if framework == "jax" and "Tracer" in type(value).__name__:
        raise TypeError(
            "to_numpy: a JAX tracer (inside jit, grad or vmap) has no values yet; "
            "convert the result outside the transformation"
        )
    if type(value).__name__ == "KerasTensor":
        raise TypeError(
            "to_numpy: a KerasTensor is symbolic (a Keras functional model's input or output) "
            "and has no values yet; call the model on data"
        )
    if isinstance(value, (np.generic, int, float, bool)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(
        f"to_numpy takes a tensor of a multirnn engine (torch, jax, tensorflow, numpy) or a "
        f"list/tuple of them, got {type(value).__module__}.{type(value).__name__}"
    )
