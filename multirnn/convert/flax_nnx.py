"""Flax NNX cells (``SimpleCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``) <->
multirnn layers (flax imported lazily).

A cell computes one step; the multirnn layer runs it over a sequence like ``nnx.RNN(cell)``
(full sequence out). Flax's activations are functions, so they map by identity: only the
functions below convert.

``nnx.Bidirectional`` is Keras's wrapper in another form: it runs the backward RNN with
``reverse=True, keep_order=True`` (a go_backwards copy whose outputs are flipped back) and
merges per step, so it converts to multirnn's ``Bidirectional`` when its ``merge_fn`` is
one of the merges below.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multirnn import precision
from multirnn.convert import layouts
from multirnn.convert._common import build, build_bidirectional, is_bidirectional
from multirnn.convert.layouts import ConversionError
from multirnn.spec import DTYPES

CELLS = {"SimpleCell": "SimpleRNN", "LSTMCell": "LSTM", "OptimizedLSTMCell": "LSTM",
         "GRUCell": "GRU"}  # fmt: skip
_PATHS = {
    "LSTMCell": [f"{n}.kernel" for n in ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")]
    + [f"{n}.bias" for n in ("hi", "hf", "hg", "ho")],
    "OptimizedLSTMCell": ["dense_i.kernel", "dense_h.kernel", "dense_h.bias"],
    "SimpleCell": ["dense_i.kernel", "dense_i.bias", "dense_h.kernel"],
    "GRUCell": ["dense_i.kernel", "dense_i.bias", "dense_h.kernel"],
}


def _functions() -> dict[str, Any]:
    """multirnn activation name -> the JAX function with that formula."""
    import jax

    return {
        "tanh": jax.numpy.tanh,
        "sigmoid": jax.nn.sigmoid,
        "relu": jax.nn.relu,
        "hard_sigmoid_relu6": jax.nn.hard_sigmoid,
        "softsign": jax.nn.soft_sign,
        "softplus": jax.nn.softplus,
        "elu": jax.nn.elu,
        "selu": jax.nn.selu,
        "exponential": jax.numpy.exp,
        "softmax": jax.nn.softmax,  # default axis=-1, as multirnn's
    }


def _name_of(fn, arg: str, kind: str) -> str:
    for name, known in _functions().items():
        if fn is known or fn == known:
            return name
    raise ConversionError(
        f"Flax {kind}: {arg}={getattr(fn, '__name__', fn)!r} has no multirnn equivalent; "
        f"convertible functions: {', '.join(_functions())} (from jax.nn / jax.numpy)"
    )


def _get(cell, path: str) -> np.ndarray:
    module, param = path.split(".")
    return np.asarray(getattr(getattr(cell, module), param).get_value())


def _merges() -> dict[str, Any]:
    """multirnn merge mode -> the ``merge_fn`` computing it (the default one for concat)."""
    import jax.numpy as jnp
    from flax.nnx.nn import recurrent

    return {"concat": recurrent._concatenate, "sum": jnp.add, "mul": jnp.multiply,
            "ave": average}  # fmt: skip


def average(forward, backward):
    """The ``merge_fn`` of ``merge_mode="ave"``, with the wrapper's own formula."""
    return (forward + backward) / 2


def _is_rnn(module) -> bool:
    return type(module).__name__ == "RNN" and hasattr(module, "cell")


def _cell_parts(cell) -> tuple[str, int, dict[str, Any], list[np.ndarray]]:
    """(layer name, units, keyword arguments, canonical weights) of one Flax cell."""
    kind = type(cell).__name__
    if kind not in CELLS:
        raise ConversionError(
            f"from_flax takes flax.nnx {', '.join(CELLS)} (or nnx.RNN of one, or "
            f"nnx.Bidirectional of two), got {kind}"
        )
    layer = CELLS[kind]
    units = int(cell.hidden_features)
    if cell.carry_init is not None:  # nnx.RNN starts from it; multirnn layers from zeros
        import jax

        start = cell.carry_init(jax.random.key(0), (1, units), cell.param_dtype)
        if np.any(np.asarray(start) != 0):
            raise ConversionError(
                f"Flax {kind}: carry_init gives a nonzero initial carry; multirnn layers start "
                "from zeros (pass the carry as initial_state instead)"
            )
    params = {p: _get(cell, p) for p in _PATHS[kind]}
    weights = layouts.from_flax(kind, params, units)
    if kind == "SimpleCell" and cell.residual:  # h' = act(x W + b + h U + h): U + I exactly
        weights[1] = weights[1] + np.eye(units, dtype=weights[1].dtype)
    kwargs: dict[str, Any] = {"return_sequences": True, "dtype": _dtype(kind, cell, weights)}
    kwargs["activation"] = _name_of(cell.activation_fn, "activation_fn", kind)
    if layer != "SimpleRNN":
        kwargs["recurrent_activation"] = _name_of(cell.gate_fn, "gate_fn", kind)
    if layer == "GRU":
        kwargs["reset_after"] = True
    return layer, units, kwargs, weights


def from_flax(cell, *, backend: str | None = None):
    """The multirnn layer (``return_sequences=True``) that runs ``cell`` over a sequence
    like ``nnx.RNN(cell)``; an ``nnx.RNN`` is accepted too (not one with ``reverse=True``),
    and an ``nnx.Bidirectional`` becomes multirnn's ``Bidirectional``."""
    if type(cell).__name__ == "Bidirectional" and hasattr(cell, "forward_rnn"):
        return _from_bidirectional(cell, backend)
    if _is_rnn(cell):
        if getattr(cell, "reverse", False):
            raise ConversionError("nnx.RNN(reverse=True) needs multirnn's Bidirectional or "
                                  "go_backwards semantics; convert its cell instead")  # fmt: skip
        cell = cell.cell
    layer, units, kwargs, weights = _cell_parts(cell)
    return build(layer, units, kwargs, weights, backend)


def _from_bidirectional(module, backend):
    """Both RNNs' cells as the two copies of one multirnn layer. The wrapper calls them with
    its own direction, order and carry options, so those of the RNNs do not matter."""
    if module.time_major:
        raise ConversionError(
            "nnx.Bidirectional(time_major=True) takes (time, batch, features) inputs; "
            "multirnn's Bidirectional takes batch-major ones"
        )
    for arg in ("forward_rnn", "backward_rnn"):
        if not _is_rnn(getattr(module, arg)):
            raise ConversionError(f"nnx.Bidirectional: {arg} must be an nnx.RNN, got "
                                  f"{type(getattr(module, arg)).__name__}")  # fmt: skip
    modes = [m for m, fn in _merges().items() if module.merge_fn is fn]
    if not modes:
        fn = module.merge_fn
        raise ConversionError(
            f"nnx.Bidirectional: merge_fn={getattr(fn, '__name__', fn)!r} has no multirnn "
            "merge mode; convertible: the default (concat), jax.numpy.add (sum), "
            "jax.numpy.multiply (mul), multirnn.convert.flax_nnx.average (ave)"
        )
    forward = _cell_parts(module.forward_rnn.cell)
    backward = _cell_parts(module.backward_rnn.cell)
    same = forward[:3] == backward[:3] and forward[3][0].shape == backward[3][0].shape
    if not same:
        raise ConversionError(
            "nnx.Bidirectional: multirnn's Bidirectional runs two copies of one layer; the "
            f"backward cell ({backward[0]}, {backward[1]} units, {backward[2]}) differs from "
            f"the forward one ({forward[0]}, {forward[1]} units, {forward[2]})"
        )
    layer, units, kwargs, weights = forward
    kwargs = {**kwargs, "return_state": bool(module.return_carry)}
    return build_bidirectional(layer, units, kwargs, weights, backward[3], modes[0], backend)


def _cell(spec, weights: list[np.ndarray], kind: str | None, rngs):
    """The Flax cell computing one step of a layer of ``spec`` with ``weights``."""
    import jax.numpy as jnp
    from flax import nnx

    default = {"SimpleRNN": "SimpleCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}[spec.layer]
    kind = kind or default
    if CELLS.get(kind) != spec.layer:
        options = [k for k, v in CELLS.items() if v == spec.layer]
        raise ConversionError(f"to_flax: kind for a {spec.layer} is one of {options}, got "
                              f"{kind!r}")  # fmt: skip
    if spec.layer == "GRU" and not spec.reset_after:
        raise ConversionError(
            "Flax's GRUCell applies the reset gate after the recurrent product "
            "(reset_after=True); this GRU has reset_after=False"
        )
    functions = _functions()
    names = [("activation", spec.activation)]
    if spec.recurrent_activation is not None:
        names.append(("recurrent_activation", spec.recurrent_activation))
    for arg, value in names:
        if value not in functions:
            raise ConversionError(
                f"{spec.layer}: {arg}={value!r} has no JAX built-in function for a Flax cell; "
                f"convertible: {', '.join(functions)}"
            )
    dtype = weights[0].dtype  # the parameters'; a mixed policy computes in its low dtype
    compute = precision.values(spec.dtype) or dtype
    params = layouts.to_flax(spec, weights, kind)
    cls = getattr(nnx, kind)
    extra: dict[str, Any] = {"activation_fn": functions[spec.activation]}
    if spec.recurrent_activation is not None:
        extra["gate_fn"] = functions[spec.recurrent_activation]
    if dtype.itemsize < 4:  # Flax's orthogonal initializer has no half-precision QR; the
        extra["recurrent_kernel_init"] = nnx.initializers.zeros_init()  # weights replace it
    cell = cls(weights[0].shape[0], spec.units, param_dtype=dtype, dtype=compute,
               rngs=rngs if rngs is not None else nnx.Rngs(0), **extra)  # fmt: skip
    for path, value in params.items():
        module, param = path.split(".")
        getattr(getattr(cell, module), param).set_value(jnp.asarray(value, dtype))
    return cell


def _dtype(kind: str, cell, weights) -> str:
    """The multirnn dtype of a cell's ``param_dtype`` and ``dtype`` (the computation's;
    None: the parameters'): one dtype, or float32 parameters computing in bfloat16 or
    float16, a mixed policy."""
    params = {str(w.dtype) for w in weights}
    compute = getattr(cell, "dtype", None)
    compute = None if compute is None else str(np.dtype(compute))
    if len(params) == 1:
        (param,) = params
        if compute in (None, param) and param in DTYPES:
            return param
        if param == "float32" and f"mixed_{compute}" in precision.MIXED:
            return f"mixed_{compute}"
    raise ConversionError(
        f"Flax {kind}: parameters in {sorted(params)} computing in {compute or 'their dtype'};"
        f" multirnn layers take one of {', '.join(DTYPES)}, or float32 parameters computing "
        "in bfloat16 or float16 (a mixed policy)"
    )


def to_flax(layer, *, kind: str | None = None, rngs=None):
    """A Flax NNX cell computing one step of ``layer`` (run it with ``nnx.RNN``), or for a
    multirnn ``Bidirectional`` an ``nnx.Bidirectional`` of two ``nnx.RNN``.

    ``kind`` picks the cell class for an LSTM: "LSTMCell" (default) or
    "OptimizedLSTMCell". Sequence options (return_sequences, masks, states) belong to
    ``nnx.RNN`` and are not converted; ``go_backwards`` is refused.
    """
    if not getattr(layer, "built", False):
        raise ConversionError("to_flax: the layer has no weights yet; build it first")
    if is_bidirectional(layer):
        return _to_bidirectional(layer, kind, rngs)
    if layer.spec.go_backwards:
        raise ConversionError(
            "a Flax cell has no direction; convert a go_backwards=False layer and run it with "
            "nnx.RNN(cell, reverse=True, keep_order=False)"
        )
    return _cell(layer.spec, [np.asarray(w) for w in layer.get_weights()], kind, rngs)


def _to_bidirectional(wrapper, kind, rngs):
    """``nnx.Bidirectional`` with the wrapper's merge as ``merge_fn`` and its states as the
    carries (``return_carry=return_state``)."""
    from flax import nnx

    spec = wrapper.spec.layer
    if wrapper.merge_mode is None:
        raise ConversionError(
            "to_flax: nnx.Bidirectional merges the directions into one output; "
            "merge_mode=None returns both, which no standard merge_fn does"
        )
    if spec.go_backwards:
        raise ConversionError(
            "to_flax: nnx.Bidirectional runs its forward RNN forwards; this wrapper's layer "
            "has go_backwards=True"
        )
    if not spec.return_sequences:
        raise ConversionError(
            "to_flax: nnx.Bidirectional returns merged sequences, and the backward half of "
            "its last step is the backward RNN's first step, not its last output "
            "(return_sequences=False); convert a return_sequences=True wrapper and merge "
            "the final carries' outputs instead"
        )
    cells = [_cell(spec, [np.asarray(w) for w in part.get_weights()], kind, rngs)
             for part in (wrapper.forward_layer, wrapper.backward_layer)]  # fmt: skip
    return nnx.Bidirectional(nnx.RNN(cells[0]), nnx.RNN(cells[1]),
                             merge_fn=_merges()[wrapper.merge_mode],
                             return_carry=spec.return_state)  # fmt: skip
