"""The canonical weight layout (Keras's): ``[kernel, recurrent_kernel, bias]`` as NumPy arrays.

Kernel ``(input_dim, G*units)``, recurrent kernel ``(units, G*units)``, bias ``(G*units,)``
(``(2, G*units)`` for GRU with ``reset_after``), gate blocks as columns in the order of
``LayerSpec.gate_names``. Every engine's ``get_weights``/``set_weights`` speaks this layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multirnn import initializers, precision
from multirnn._checks import show
from multirnn.spec import LayerSpec


def _describe(spec: LayerSpec) -> str:
    extra = ", reset_after=True" if spec.reset_after else ""
    extra += ", use_bias=False" if not spec.use_bias else ""
    return f"{spec.layer}(units={spec.units}{extra})"


def initial(spec: LayerSpec, input_dim: int, seed: int) -> list[np.ndarray]:
    """Initial canonical weights in float64, a pure function of spec, input size and seed.

    Weight ``i`` draws from ``default_rng([seed, i])``, so adding a weight never shifts the
    others' streams.
    """
    shapes = spec.weight_shapes(input_dim)
    init_args = {
        "kernel": "kernel_initializer",
        "recurrent_kernel": "recurrent_initializer",
        "bias": "bias_initializer",
    }
    out = []
    for index, (name, shape) in enumerate(shapes.items()):
        if name == "bias" and spec.unit_forget_bias:
            value = np.zeros(shape)
            value[..., spec.units : 2 * spec.units] = 1.0
        else:
            init = getattr(spec, init_args[name])
            if isinstance(init, initializers.Initializer):
                value = init(shape, np.random.default_rng([seed, index]))
            else:
                value = np.asarray(init(shape), dtype=np.float64)
                if value.shape != shape:
                    raise ValueError(
                        f"{spec.layer}: the {init_args[name]} callable returned shape "
                        f"{value.shape}, expected {shape}"
                    )
        out.append(value)
    return out


def check(
    spec: LayerSpec,
    weights: Sequence[object],
    input_dim: int | None = None,
    *,
    what: str = "set_weights",
) -> list[np.ndarray]:
    """Validate canonical weights (for ``what``); returns them as NumPy arrays.

    With ``input_dim`` None (an unbuilt layer) the kernel's first dimension decides it.
    """
    names = spec.weight_names
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            f"{what} expects a list of {len(names)} arrays ({', '.join(names)}), "
            f"got {show(weights)}"
        )
    if len(weights) != len(names):
        raise ValueError(
            f"{what}: {_describe(spec)} has {len(names)} weights ({', '.join(names)}), "
            f"got a list of {len(weights)}"
        )
    arrays = []
    for name, value in zip(names, weights):
        array = np.asarray(value)
        if not precision.is_floating(array.dtype):
            raise TypeError(
                f"{what}: weight {name!r} must be a floating-point array, got dtype {array.dtype}"
            )
        arrays.append(array)
    if input_dim is None:
        if arrays[0].ndim != 2:
            raise ValueError(
                f"{what}: weight 'kernel' must be 2-D (input_dim, "
                f"{spec.gates * spec.units}), got shape {arrays[0].shape}"
            )
        input_dim = arrays[0].shape[0]
    expected = spec.weight_shapes(input_dim)
    for name, array in zip(names, arrays):
        if array.shape != expected[name]:
            raise ValueError(
                f"{what}: weight {name!r} of {_describe(spec)} with input_dim={input_dim} "
                f"must have shape {expected[name]}, got {array.shape}"
            )
    return arrays
