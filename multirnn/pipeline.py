"""A layer call, prepared once for every engine and both layer kinds.

Every call of a recurrent layer goes the same way: keyword-only arguments, ``training``,
the inputs and mask converted and checked, the carried or given states, the layer built
on first use, dropout masks sampled, then the engine's loop or fused kernel, then the
carried states kept. This module is that sequence, written once. An engine supplies
only what differs between frameworks:

* an :class:`Arrays` adapter: which values are its own tensors, how host data becomes
  one, and how to read a tensor's shape and dtype name;
* on its layer class, the hooks :func:`prepare` calls: ``_place(inputs)`` (where the call
  runs: a device, or None), ``_compute_dtype()``, ``_default_training()``,
  ``_build_on(x, place)``, ``_dropout_keep(call, input_shape, recurrent_shape, **args)``
  (the kept entries, booleans; this module scales them), ``_call_weights()`` and
  ``_run(call, weights)`` for :func:`run`, and ``_set_carried(states)`` for :func:`result`.

The rules themselves (what a valid input, mask or state is, and the messages) are in
:mod:`multirnn.calls`; nothing outside this module calls them for a layer call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from multirnn import calls, precision
from multirnn.spec import DTYPES


class Arrays:
    """An engine's tensors as the pipeline sees them. Subclasses set ``native`` (the
    tensor type's name, for messages) and implement :meth:`is_native`, :meth:`from_host`,
    :meth:`shape` and :meth:`dtype`; :meth:`own` may refuse a tensor (e.g. on another
    device)."""

    native: str = "tensor"

    def is_native(self, value: Any) -> bool:
        raise NotImplementedError

    def own(self, value: Any, arg: str, owner: str, place: Any) -> Any:
        """The engine's own tensor as the call uses it (as it is, unless refused)."""
        return value

    def from_host(self, array: np.ndarray, place: Any) -> Any:
        raise NotImplementedError

    def shape(self, value: Any) -> tuple:
        return tuple(value.shape)

    def dtype(self, value: Any) -> str:
        raise NotImplementedError

    def to_numpy(self, value: Any) -> np.ndarray:
        """A copy of a weight (tensor or variable) on the host."""
        return np.array(value)

    #: whether the functional entry also takes NumPy arrays as weights
    numpy_weights: bool = False

    def weight(self, value: Any, what: str) -> Any:
        """A weight given to the functional entry, as the engine's tensor."""
        if self.is_native(value):
            return self.own(value, what, "", None)
        if self.numpy_weights and isinstance(value, (np.ndarray, np.generic)):
            return self.from_host(value, None)
        accepted = self.native + (" or numpy.ndarray" if self.numpy_weights else "")
        raise TypeError(f"{what} must be a {accepted}, got {type(value).__name__}")

    def place_of(self, value: Any) -> Any:
        """Where a tensor lives, for the call's other arguments (None: no devices)."""
        return None

    def cast(self, value: Any, dtype: str) -> Any:
        raise NotImplementedError


def tensor(arrays: Arrays, value: Any, *, arg: str, owner: str, place: Any, dtype: str | None,
           mixed: bool = False):  # fmt: skip
    """A call argument as the engine's tensor: its own tensors as they are, host data (NumPy
    arrays, nested lists) under the one input rule of :func:`multirnn.calls.host_array`
    (floats cast to ``dtype``; ``dtype=None`` keeps a mask's values for its check). Under a
    ``mixed`` policy the engine's own floating-point tensors are cast to ``dtype`` too, as
    the frameworks' mixed-precision layers cast theirs (float32 activations in, bfloat16
    computation)."""
    if arrays.is_native(value):
        value = arrays.own(value, arg, owner, place)
        if mixed and dtype is not None and arrays.dtype(value) in DTYPES:
            value = arrays.cast(value, dtype)
        return value
    array = calls.host_array(value, owner=owner.rstrip(": ") or "multirnn", arg=arg,
                             native=arrays.native, dtype=dtype)  # fmt: skip
    return arrays.from_host(array, place)


def inputs_and_mask(arrays: Arrays, spec: Any, owner: str, inputs: Any, mask: Any, *,
                    place: Any, dtype: str, input_dim: int | None):  # fmt: skip
    """The inputs and mask as checked tensors, and the call's shape."""
    x = tensor(arrays, inputs, arg="inputs", owner=owner, place=place, dtype=dtype,
               mixed=spec.dtype in precision.MIXED)  # fmt: skip
    shape = calls.inputs(spec, arrays.shape(x), arrays.dtype(x), expected_dtype=dtype,
                         input_dim=input_dim)  # fmt: skip
    if mask is not None:
        mask = tensor(arrays, mask, arg="mask", owner=owner, place=place, dtype=None)
        calls.mask(spec, arrays.shape(mask), arrays.dtype(mask), shape)
    return x, mask, shape


def states(arrays: Arrays, spec: Any, value: Any, *, batch: int | None, place: Any, dtype: str,
           owner: str, arg: str = "initial_state") -> list:  # fmt: skip
    """``initial_state`` (or ``reset_states(states)``) as checked tensors, one per state."""
    mixed = spec.dtype in precision.MIXED
    values = [tensor(arrays, s, arg=arg, owner=owner, place=place, dtype=dtype, mixed=mixed)
              for s in calls.state_list(value)]  # fmt: skip
    shapes = [arrays.shape(v) for v in values]
    calls.state_count(spec, len(values), arg=arg)
    if batch is None and len(shapes[0]) == 2:
        batch = shapes[0][0]
    calls.states(spec, shapes, [arrays.dtype(v) for v in values], batch=batch,
                 expected_dtype=dtype, arg=arg)  # fmt: skip
    return values


def dropout_mask(arrays: Arrays, spec: Any, value: Any, *, batch: int, width: int, arg: str,
                 place: Any) -> Any:  # fmt: skip
    """An explicit dropout mask of a functional entry, checked (None stays None)."""
    if value is None:
        return None
    mask = tensor(arrays, value, arg=arg, owner=f"{spec.layer}: ", place=place, dtype=None)
    calls.dropout_mask(spec, arrays.shape(mask), batch=batch, width=width, arg=arg)
    return mask


def dropout_shapes(spec: Any, batch: int, input_dim: int) -> tuple:
    """Shapes of the (input, recurrent) masks a training call samples, or None each.

    Implementations 0 and 1 use one mask per gate, implementation 2 one shared mask;
    ``RNN(cell)`` has no dropout option (a cell draws its own)."""
    rate, recurrent = getattr(spec, "dropout", 0), getattr(spec, "recurrent_dropout", 0)
    lead = () if getattr(spec, "implementation", 2) == 2 else (spec.gates,)
    return (
        (*lead, batch, input_dim) if rate > 0 else None,
        (*lead, batch, spec.units) if recurrent > 0 else None,
    )


@dataclass
class Call:
    """A prepared call: what the engine's loop or kernel runs on. ``states`` None means
    zeros; the dropout masks are scaled (``keep / (1 - rate)``) or None; ``training`` is
    None where the framework decides (Keras's learning phase)."""

    x: Any
    mask: Any
    states: list | None
    shape: calls.CallShape
    training: bool | None
    input_dropout: Any = None
    recurrent_dropout: Any = None


def functional(arrays: Arrays, spec: Any, inputs: Any, *, mask: Any, initial_state: Any,
               input_dropout: Any, recurrent_dropout: Any, place: Any, dtype: str,
               input_dim: int) -> Call:  # fmt: skip
    """The arguments of an engine's functional entry (``kernels.forward``: weights given,
    dropout masks explicit, nothing carried), converted and checked."""
    owner = f"{spec.layer}: "
    x, mask, shape = inputs_and_mask(arrays, spec, owner, inputs, mask, place=place, dtype=dtype,
                                     input_dim=input_dim)  # fmt: skip
    given = None
    if initial_state is not None:
        given = states(arrays, spec, initial_state, batch=shape.batch, place=place, dtype=dtype,
                       owner=owner)  # fmt: skip
    masks = [
        dropout_mask(arrays, spec, value, batch=shape.batch, width=width, arg=arg, place=place)
        for value, width, arg in ((input_dropout, shape.input_dim, "input_dropout"),
                                  (recurrent_dropout, spec.units, "recurrent_dropout"))
    ]  # fmt: skip
    return Call(x, mask, given, shape, False, *masks)


def functional_weights(arrays: Arrays, spec: Any, weights: Sequence[Any]) -> list:
    """The canonical weights given to a functional entry, checked: their number, each a
    tensor, the kernel 2-D, every shape for the kernel's input size, one dtype."""
    weights = list(weights)
    names = spec.weight_names
    if len(weights) != len(names):
        raise ValueError(
            f"weights: {spec.layer} takes {len(names)} ({', '.join(names)}), got {len(weights)}"
        )
    tensors = [arrays.weight(w, f"weights: {name!r}") for name, w in zip(names, weights)]
    kernel_shape = arrays.shape(tensors[0])
    if len(kernel_shape) != 2:
        raise ValueError(f"weights: 'kernel' must be 2-D (input_dim, G*units), got {kernel_shape}")
    shapes = spec.weight_shapes(kernel_shape[0])
    dtype = arrays.dtype(tensors[0])
    for name, w in zip(names, tensors):
        if arrays.shape(w) != shapes[name]:
            raise ValueError(
                f"weights: {name!r} must have shape {shapes[name]}, got {arrays.shape(w)}"
            )
        if arrays.dtype(w) != dtype:
            raise TypeError(
                f"weights: {name!r} has dtype {arrays.dtype(w)} but 'kernel' has {dtype}"
            )
    return tensors


def forward(arrays: Arrays, run: Any, spec: Any, weights: Sequence[Any], inputs: Any, *,
            mask: Any = None, initial_state: Any = None, input_dropout: Any = None,
            recurrent_dropout: Any = None):  # fmt: skip
    """An engine's functional entry (``kernels.forward``): the layer of ``spec`` as a
    differentiable function of its weights and inputs, run by the engine's ``run``.

    Dropout masks are given explicitly, already scaled (``keep / (1 - rate)``): shape
    ``(batch, width)`` shared by all gates or ``(gates, batch, width)`` one per gate.
    Returns ``(output, final_states)`` like the NumPy reference."""
    weights = functional_weights(arrays, spec, weights)
    kernel = weights[0]
    dtype = arrays.dtype(kernel)
    call = functional(arrays, spec, inputs, mask=mask, initial_state=initial_state,
                      input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                      place=arrays.place_of(kernel), dtype=dtype,
                      input_dim=arrays.shape(kernel)[0])  # fmt: skip
    masks = [None if m is None else arrays.cast(m, precision.arithmetic(dtype))
             for m in (call.input_dropout, call.recurrent_dropout)]  # fmt: skip

    def loop(weights, x, states, mi, mr):
        return run(spec, weights, x, call.mask, states, mi, mr)

    return precision.widened(arrays.cast, dtype, loop, weights, call.x, call.states, masks)


def prepare(
    layer: Any,
    inputs: Any,
    args: tuple,
    *,
    mask: Any = None,
    initial_state: Any = None,
    training: Any = None,
    carried: Sequence[Any] | None = None,
    **dropout_args: Any,
) -> Call:
    """Everything a call does before the computation, in one order on every engine.

    ``carried``: the states a stateful layer carries (None before its first call, and in
    a pure call), which the call starts from unless ``initial_state`` is given; or a
    function of the call's shape and inputs giving them (TensorFlow creates its state
    variables at the first call, and checks a batch size unknown while tracing itself).
    ``dropout_args`` go to the layer's ``_dropout_keep`` (JAX's ``key``)."""
    calls.keyword_only(layer, args)
    spec = layer.spec
    try:
        training = calls.training(layer.name, training)
    except TypeError as exc:  # an engine may say more (JAX: static under jit)
        raise TypeError(f"{exc}{getattr(layer, '_training_hint', '')}") from None
    if training is None:
        training = layer._default_training()
    arrays: Arrays = layer._arrays
    place = layer._place(inputs)
    dtype = layer._compute_dtype()
    owner = f"{layer.name}: "
    x, mask, shape = inputs_and_mask(arrays, spec, owner, inputs, mask, place=place,
                                     dtype=dtype, input_dim=layer.input_dim)  # fmt: skip
    if not spec.stateful:
        carried = None
    elif callable(carried):
        carried = carried(shape, x)
    elif carried is not None:
        calls.stateful_batch(spec, shape.batch, arrays.shape(carried[0])[0])
    if not layer.built:  # the inputs' size was checked against a built layer's above
        layer._build_on(x, place)
    if initial_state is not None:
        given = states(arrays, spec, initial_state, batch=shape.batch, place=place, dtype=dtype,
                       owner=owner)  # fmt: skip
    else:
        given = None if carried is None else list(carried)
    call = Call(x, mask, given, shape, training)
    if training:
        shapes = dropout_shapes(spec, shape.batch, shape.input_dim)
        if shapes != (None, None):
            keeps = layer._dropout_keep(call, *shapes, **dropout_args)
            # scaled in the arithmetic dtype: 1 / (1 - rate) is rarely a bfloat16 number
            scale = precision.arithmetic(dtype)
            call.input_dropout, call.recurrent_dropout = (
                None if keep is None else arrays.cast(keep, scale) / (1.0 - rate)
                for keep, rate in zip(keeps, (spec.dropout, spec.recurrent_dropout))
            )
    return call


def run(layer: Any, call: Call) -> tuple[Any, list]:
    """The engine's loop or kernel on a prepared call (``layer._run(call, weights)``, the
    weights as ``layer._call_weights()`` gives them); a low-precision layer's in float32
    (:mod:`multirnn.precision`)."""
    dtype = layer._compute_dtype()
    if dtype not in precision.LOW:  # the common case, on every call: nothing to widen
        return layer._run(call, layer._call_weights())
    masks = (call.input_dropout, call.recurrent_dropout)

    def loop(weights, x, states, mi, mr):
        wide = dataclasses.replace(call, x=x, states=states, input_dropout=mi,
                                   recurrent_dropout=mr)  # fmt: skip
        return layer._run(wide, weights)

    return precision.widened(layer._arrays.cast, dtype, loop, layer._call_weights(), call.x,
                             call.states, masks)  # fmt: skip


def result(layer: Any, output: Any, final: Sequence[Any]):
    """What a call returns, after a stateful layer kept its final states."""
    spec = layer.spec
    if spec.stateful:
        layer._set_carried(list(final))
    return [output, *final] if spec.return_state else output


def reset_values(layer: Any, values: Any) -> list | None:
    """``reset_states(states)`` checked: None (zero the states) or the new states."""
    spec = layer.spec
    if not spec.stateful:
        raise ValueError(
            f"{layer.name}: reset_states() applies to stateful layers; this one was created "
            "with stateful=False (its states start from zeros or initial_state every call)"
        )
    if values is None:
        return None
    return states(layer._arrays, spec, values, batch=None, place=layer._place(None),
                  dtype=layer._compute_dtype(), owner=f"{layer.name}: ",
                  arg="reset_states(states)")  # fmt: skip
