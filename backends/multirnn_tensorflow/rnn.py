"""``RNN(cell)`` on the TensorFlow engine: the one layer kind, as a Keras 3 layer.

A user's :class:`multirnn.Cell` has its weights as Keras variables named as the cell
declared them (regularizers and constraints through Keras), and its ``step`` runs on
TensorFlow tensors through a thin array-API adapter (:class:`ArrayAPI`: TensorFlow has no
array-API namespace of its own). The steps run in a ``tf.while_loop`` over TensorArrays
when traced (``tf.function``, ``model.fit``; any time length) and in a Python loop eagerly
or with ``unroll=True``; the semantics are the NumPy engine's ``RNN``. The built-in layers
(``multirnn_tensorflow.layers``) are this class with a built-in cell, whose fast paths
(cuDNN, the hand-written backward) replace the loop.

A call is prepared by :func:`multirnn.pipeline.prepare`; this module supplies its hooks,
and converts host data before Keras sees it (Keras would map a nested list element by
element). A stateful layer's carried states are plain TensorFlow variables, not Keras
weights: Keras allows no new weights after ``build``, and the batch size is known only at
the first call (or at ``reset_states``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from multirnn import calls, cells, constraints, pipeline, precision, regularizers
from multirnn._checks import check_bool
from multirnn_tensorflow import kernels
from multirnn_tensorflow.ops import TF_ARRAYS, TF_OPS, ArrayAPI

__all__ = ["RNN", "ArrayAPI"]


def policy_name(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``dtype`` given as a ``keras.DTypePolicy``, as its name (``"mixed_bfloat16"``,
    ``"float32"``), which the spec takes."""
    dtype = kwargs.get("dtype")
    if isinstance(dtype, keras.DTypePolicy):
        return kwargs | {"dtype": dtype.name}
    return kwargs


def with_policy(layer: keras.layers.Layer, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the layer's mixed policy, if any, as its ``dtype`` (one that came
    from Keras's global policy)."""
    return config | {"dtype": layer.dtype_policy.name} if layer.mixed else config


def tensorflow_namespace(dtype: str) -> cells.Ops:
    """The ``ops`` a cell's step sees on this engine (arrays made from numbers: ``dtype``)."""
    return cells.namespace(ArrayAPI(dtype), TF_OPS, "tensorflow", kernels.NATIVE_ACTIVATIONS)


def _require_tensorflow_backend(owner: str) -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{owner}: the tensorflow engine's layers are Keras layers on the TensorFlow "
            f"backend, but Keras runs on {backend!r}. Set KERAS_BACKEND=tensorflow before "
            f"Keras is first imported, or use multirnn's {backend!r} engine instead"
        )


_GIVEN: contextvars.ContextVar[tuple[Any, list] | None] = contextvars.ContextVar(
    "multirnn_tensorflow_given_weights", default=None
)


def _build_with(layer: Any, input_dim: int, arrays: list) -> None:
    """Build ``layer`` through Keras's ``build`` (its name scope and build config) with
    ``arrays`` as the weights' values, so that no initializer runs."""
    token = _GIVEN.set((layer, list(arrays)))
    try:
        layer.build((None, None, input_dim))
    finally:
        _GIVEN.reset(token)


def _given_values(layer: Any) -> list | None:
    """The values ``_build_with`` gives ``layer``'s weights (None: draw the initial ones)."""
    given = _GIVEN.get()
    return given[1] if given is not None and given[0] is layer else None


def _penalty(regularizer):
    return lambda w: regularizers.penalty(regularizer, w, TF_OPS)


def _projection(constraint):
    return lambda w: constraints.project(constraint, w, TF_OPS)


class Deferred:
    """A call argument the input rule refused before Keras saw the call: carried through
    Keras untouched, so that the call checks its arguments in the order every engine does
    (inputs first) and raises the refusal in turn."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _undeferred(value: Any) -> Any:
    return value.value if isinstance(value, Deferred) else value


def _tensor(layer: Any, value: Any, arg: str, dtype: str | None) -> tf.Tensor:
    return pipeline.tensor(TF_ARRAYS, value, arg=arg, owner=f"{layer.name}: ", place=None,
                           dtype=dtype)  # fmt: skip


def _host_arguments(layer, dtype: str, inputs, kwargs: dict[str, Any]):
    """NumPy arrays and nested lists converted before Keras sees them (Keras would map a
    nested list element by element), and ``training`` checked, as on every engine."""
    calls.training(layer.name, kwargs.get("training"))
    if not isinstance(inputs, (tf.Tensor, tf.Variable, keras.Variable, keras.KerasTensor)):
        inputs = _tensor(layer, inputs, "inputs", dtype)

    def convert(value, arg, dtype):
        if not isinstance(value, calls.HOST_TYPES):
            return value
        try:
            return _tensor(layer, value, arg, dtype)
        except (TypeError, ValueError):  # raised by call() after the inputs are checked
            return Deferred(value)

    if kwargs.get("mask") is not None:
        kwargs = {**kwargs, "mask": convert(kwargs["mask"], "mask", None)}
    state = kwargs.get("initial_state")
    if state is not None:
        converted = [convert(s, "initial_state", dtype) for s in calls.state_list(state)]
        if any(isinstance(s, Deferred) for s in converted):
            converted = Deferred(state)  # Keras takes no mix of tensors and others
        kwargs = {**kwargs, "initial_state": converted}
    return inputs, kwargs


class _Shape(SimpleNamespace):
    """A static shape for multirnn.cells.check_step, unknown sizes taken as expected."""


def _static(value, want: tuple) -> _Shape | Any:
    shape = getattr(value, "shape", None)
    if not isinstance(shape, tf.TensorShape):
        return value
    if shape.rank is None:
        return _Shape(shape=want)
    dims = tuple(shape.as_list())
    if len(dims) == len(want):
        dims = tuple(w if d is None or w is None else d for d, w in zip(dims, want))
    return _Shape(shape=dims)


@keras.saving.register_keras_serializable(package="multirnn")
class RNN(cells.RNNCore, kernels.OutputSpecs, keras.layers.Layer):
    """A :class:`multirnn.Cell` run over ``(batch, time, features)`` inputs with the
    ``Recurrent`` options, as a Keras layer on the TensorFlow backend.

    ``RNN(cell, return_sequences=..., return_state=..., go_backwards=..., stateful=...,
    unroll=..., zero_output_for_mask=..., seed=..., dtype=..., input_dim=..., name=...)``;
    ``dtype`` defaults to Keras's global dtype policy (``floatx()`` unless
    ``keras.config.set_dtype_policy`` set another). The weights are Keras variables named as
    the cell declared them; their regularizers and constraints go through Keras.
    """

    engine_name = "tensorflow"
    _arrays = TF_ARRAYS
    #: how to give a stateful layer the batch size it needs before its first call
    _batch_hint = (
        "give the inputs a static batch dimension (keras.Input(batch_size=...)) or call "
        "reset_states(states=[...]) first"
    )

    def __init__(self, cell: cells.Cell, **kwargs: Any) -> None:
        _require_tensorflow_backend("RNN")
        trainable = check_bool("RNN", "trainable", kwargs.pop("trainable", True))
        self.spec = cells.parse_rnn(cell, policy_name(kwargs))
        self.cell = cell
        self._setup(trainable)
        self._names: list[str] = []
        self._variables_in_order: list[keras.Variable] | None = None
        self._input_dim: int | None = None
        self._ops = tensorflow_namespace(precision.arithmetic(self.compute_dtype))
        self._build_from_arguments()

    def _setup(self, trainable: bool) -> None:
        """What both layer kinds set up after their spec: the Keras layer (its dtype policy
        is the spec's dtype, a mixed policy's name included, else Keras's global policy),
        the states."""
        keras.layers.Layer.__init__(
            self,
            name=self.spec.name,
            dtype=self.spec.dtype,
            trainable=trainable,
            autocast=False,
        )
        # Inputs of another dtype are an error, not silently cast; except under a mixed
        # policy, whose layers take float32 inputs and cast them, as Keras's own do.
        self.autocast = self.mixed
        self.supports_masking = True
        self._state_variables: list[tf.Variable] | None = None

    # -- weights ------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int | None:
        return self._input_dim if self._variables_in_order is not None else None

    @property
    def weight_names(self) -> list[str]:
        return list(self._names)

    def _weights(self) -> list[keras.Variable]:
        return list(self._variables_in_order)

    def _create_weights(self, input_dim: int) -> None:
        """The declared weights as Keras variables (set_weights on an unbuilt layer gives
        their values: then no initializer runs)."""
        values = _given_values(self)
        if values is None:
            values = self._initial_weights(input_dim)
        decls = self.cell.declare(input_dim)
        variables = []
        for decl, value in zip(decls, values):
            value = np.asarray(value).astype(precision.numpy_dtype(self.variable_dtype))
            variables.append(self.add_weight(
                name=decl.name,
                shape=value.shape,
                initializer=lambda shape, dtype, value=value: tf.constant(value, dtype),
                regularizer=None if decl.regularizer is None else _penalty(decl.regularizer),
                constraint=None if decl.constraint is None else _projection(decl.constraint),
            ))  # fmt: skip
        self._store(decls, input_dim, variables)
        self.built = True

    def _store(self, decls, input_dim: int, variables: list) -> None:
        self._names = [d.name for d in decls]
        self._input_dim = input_dim
        self._variables_in_order = variables

    def _checked_weights(self, weights: Any) -> tuple[int, list[np.ndarray]]:
        arrays = [np.asarray(w) for w in weights]
        known = self.input_dim or self.spec.input_dim  # (unbuilt in load: the spec's)
        return cells.check_weights(self.name, self.cell, arrays, known), arrays

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (declared order and shapes), keeping the variables; builds
        the layer from them if needed (no initializer runs then)."""
        if isinstance(weights, (list, tuple)):
            weights = [w.numpy() if hasattr(w, "numpy") else w for w in weights]
        input_dim, arrays = self._checked_weights(weights)
        if not self.built:
            _build_with(self, input_dim, arrays)  # (another thread may win)
        for variable, value in zip(self._weights(), arrays):
            variable.assign(value.astype(precision.numpy_dtype(variable.dtype)))

    # -- calling: host data converted, then the pipeline's hooks ------------------------------
    def __call__(self, inputs, *args, **kwargs):
        calls.keyword_only(self, args)  # Keras would take a second argument as the mask
        inputs, kwargs = _host_arguments(self, self.compute_dtype, inputs, kwargs)
        return super().__call__(inputs, **kwargs)

    def call(self, inputs, mask=None, initial_state=None, training=None):
        spec = self.spec
        carried = self._carried_states if spec.stateful else None
        call = pipeline.prepare(self, inputs, (), mask=_undeferred(mask),
                                initial_state=_undeferred(initial_state), training=training,
                                carried=carried)  # fmt: skip
        output, final = pipeline.run(self, call)
        if spec.stateful:
            self._keep_final(final)
        return [output, *final] if spec.return_state else output

    def _default_training(self) -> None:
        return None  # Keras's learning phase: no dropout, not inference either

    def _place(self, inputs: Any) -> None:
        return None

    def _compute_dtype(self) -> str:
        return self.compute_dtype

    def _build_on(self, x: tf.Tensor, place: None) -> None:
        self.build((None, None, x.shape[-1]))

    def _call_weights(self) -> list[tf.Tensor]:
        return [tf.convert_to_tensor(w) for w in self._weights()]

    def _run(self, call: pipeline.Call, weights: list[tf.Tensor]):
        spec, x = self.spec, call.x
        states = call.states
        if states is None:
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], spec.units]), x.dtype)
            zeros.set_shape([call.shape.batch, spec.units])
            states = [zeros for _ in spec.state_names]
        w = dict(zip(self._names, weights))
        return self._scan(w, x, call.mask, list(states), call.shape)

    def _step(self, w, x_t, states, batch, check: bool = True):
        """One step of the cell; ``check``: validate what it returned (once per trace, or
        on the first step of an eager loop: every step has the same shapes)."""
        spec = self.spec
        output, new = self.cell.step(self._ops, w, x_t, list(states))
        want = (batch, spec.units)
        if check and isinstance(new, (list, tuple)):
            cells.check_step(spec, _static(output, want), [_static(s, want) for s in new], batch)
        elif check:
            cells.check_step(spec, output, new, batch)
        dtype = x_t.dtype  # float32 for a low-precision layer
        output = tf.cast(output, dtype)
        new = [tf.cast(n, dtype) for n in new]
        for n, s in zip(new, states):
            n.set_shape(s.shape)  # static only; keeps the loop's shapes invariant
        output.set_shape(states[0].shape)
        return output, new

    def _scan(self, w, x, mask, states, call):
        spec = self.spec
        xs = tf.transpose(x, [1, 0, 2])  # time-major
        keeps = None if mask is None else tf.transpose(mask)[..., None]
        if spec.go_backwards:
            xs = tf.reverse(xs, [0])
            keeps = None if keeps is None else tf.reverse(keeps, [0])
        previous = tf.zeros_like(states[0])

        def step(x_t, keep, states, previous, check=True):
            output, new = self._step(w, x_t, states, call.batch, check)
            if keep is None:
                return output, new
            return cells.masked(self._ops, spec, keep, output, new, states, previous)

        time = xs.shape[0]
        if spec.unroll and time is None:
            raise ValueError(
                f"{self.name}: unroll=True needs a static number of time steps; the inputs "
                f"have shape {x.shape}"
            )
        if time is not None and (spec.unroll or tf.executing_eagerly()):
            # unstacked once, not xs[t]: see the TensorArrays below
            step_keeps = None if keeps is None else tf.unstack(keeps)
            outputs, states = cells.unrolled(
                self._ops, spec, lambda x_t, s, first: self._step(w, x_t, s, call.batch, first),
                tf.unstack(xs), step_keeps, states,
            )  # fmt: skip
            return (tf.stack(outputs, axis=1) if spec.return_sequences else outputs[-1]), states

        # Steps are read from TensorArrays (the gradient of a slice per step would write a
        # full-size zero tensor each time).
        length = time if time is not None else tf.shape(xs)[0]
        # each with its elements' shape: TFLite's converter needs it
        inputs = tf.TensorArray(xs.dtype, size=length, element_shape=xs.shape[1:]).unstack(xs)
        masks = None
        if keeps is not None:
            masks = tf.TensorArray(tf.bool, size=length, element_shape=keeps.shape[1:])
            masks = masks.unstack(keeps)
        sequences = None
        if spec.return_sequences:
            sequences = tf.TensorArray(xs.dtype, size=length,
                                       element_shape=[call.batch, spec.units])  # fmt: skip

        def body(t, states, previous, *rest):
            keep = None if masks is None else masks.read(t)
            previous, states = step(inputs.read(t), keep, states, previous)
            if rest:
                return t + 1, states, previous, rest[0].write(t, previous)
            return t + 1, states, previous

        loop_vars = (tf.constant(0), states, previous)
        if sequences is not None:
            loop_vars += (sequences,)
        result = tf.while_loop(lambda t, *_: t < length, body, loop_vars,
                               maximum_iterations=length)  # fmt: skip
        states, previous = list(result[1]), result[2]
        if sequences is None:
            return previous, states
        stacked = result[3].stack()
        stacked.set_shape([time, call.batch, spec.units])
        return tf.transpose(stacked, [1, 0, 2]), states

    # -- carried states: TensorFlow variables ----------------------------------------------------
    def _default_batch(self) -> int | None:
        """The batch size the layer was created with, if any."""
        return None

    def _carried_states(self, call: calls.CallShape, x: tf.Tensor) -> list[tf.Tensor]:
        """The states a stateful call starts from, created (zeros) at the first call; a
        call traced with an unknown batch size checks it when it runs."""
        spec = self.spec
        if self._state_variables is None:
            batch = call.batch if call.batch is not None else self._default_batch()
            if batch is None:
                raise ValueError(
                    f"{self.name}: a stateful layer needs a fixed batch size; {self._batch_hint}"
                )
            self._state_variables = self._new_states((batch, spec.units))
        fixed = int(self._state_variables[0].shape[0])
        if call.batch is None:  # traced with an unknown batch size (e.g. model.export)
            try:
                calls.stateful_batch(spec, -1, fixed)
            except ValueError as error:
                message = str(error).replace("batch size -1", "another batch size")
            check = tf.debugging.assert_equal(tf.shape(x)[0], fixed, message=message)
            with tf.control_dependencies([check]):
                return [tf.identity(v) for v in self._state_variables]
        calls.stateful_batch(spec, call.batch, fixed)
        return [tf.convert_to_tensor(v) for v in self._state_variables]

    def _new_states(self, shape) -> list[tf.Variable]:
        return [
            tf.Variable(tf.zeros(shape, self.compute_dtype), trainable=False, name=f"state_{n}")
            for n in self.spec.state_names
        ]

    def _keep_final(self, final: list[tf.Tensor]) -> None:
        """Carry a stateful call's final states to the next call."""
        for variable, value in zip(self._state_variables, final):
            variable.assign(value)

    def _zero_carried(self) -> None:
        for variable in self._state_variables or []:
            variable.assign(tf.zeros_like(variable))

    def _assign_carried(self, tensors: list[tf.Tensor]) -> None:
        """Set the carried states to checked tensors; a new batch size gets new variables."""
        current = self._state_variables
        if current is not None and tuple(current[0].shape) != tuple(tensors[0].shape):
            current = None
        if current is None:
            current = self._state_variables = self._new_states(tuple(tensors[0].shape))
        for variable, value in zip(current, tensors):
            variable.assign(value)

    @property
    def states(self) -> list[tf.Tensor] | None:
        """The carried states of a stateful layer (None before its first call)."""
        if self._state_variables is None:
            return None
        return [tf.convert_to_tensor(v) for v in self._state_variables]

    def reset_states(self, states: Sequence[Any] | Any | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        values = pipeline.reset_values(self, states)
        if values is None:
            self._zero_carried()
        else:
            self._assign_carried(values)

    # -- constraints, config ----------------------------------------------------------------------
    def apply_constraints(self) -> None:
        """Project the weights onto their constraints in place (Keras optimizers already do
        this after every step; this is for custom training loops)."""
        variables = self._require_built("apply_constraints")
        for decl, variable in zip(self.cell.declare(self.input_dim), variables):
            if decl.constraint is not None:
                value = tf.convert_to_tensor(variable)
                variable.assign(constraints.project(decl.constraint, value, TF_OPS))

    @property
    def mixed(self) -> bool:
        """Whether the layer follows a mixed-precision policy (float32 variables,
        low-precision computation: see :mod:`multirnn.precision`)."""
        return self.variable_dtype != self.compute_dtype

    def get_config(self) -> dict[str, Any]:
        """The NumPy engine's ``RNN`` config (the cell by its registered name, the options,
        the input size once built), named as Keras named the layer; a mixed policy as its
        ``dtype``."""
        return with_policy(self, super().get_config() | {"name": self.name})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RNN:
        config = dict(config)
        cell = cells.cell_from_config(config.pop("cell", None))
        trainable = config.pop("trainable", True)
        layer = cls(cell, **config)
        layer.trainable = trainable
        return layer

    def __repr__(self) -> str:
        return f"RNN({self.cell!r}) [tensorflow]"
