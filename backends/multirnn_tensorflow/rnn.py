"""``RNN(cell)`` on the TensorFlow engine: a user's :class:`multirnn.Cell` as a Keras layer.

The cell's ``step`` runs on TensorFlow tensors through a thin array-API adapter
(:class:`ArrayAPI`): TensorFlow has no array-API namespace of its own. The steps run in a
``tf.while_loop`` over TensorArrays when traced (``tf.function``, ``model.fit``; any
time length) and in a Python loop eagerly or with ``unroll=True``. Masks, ``go_backwards``,
states and ``stateful`` follow the NumPy engine's ``RNN`` (``multirnn.reference.rnn``),
the oracle, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from multirnn import calls, cells
from multirnn import constraints as constraint_module
from multirnn._checks import check_bool
from multirnn.layer import _BUILD_LOCK, LayerCore
from multirnn_tensorflow import kernels
from multirnn_tensorflow.carried import CarriedStates
from multirnn_tensorflow.ops import TF_OPS, ArrayAPI

__all__ = ["RNN", "ArrayAPI"]


def tensorflow_namespace(dtype: str) -> cells.Ops:
    """The ``ops`` a cell's step sees on this engine (arrays made from numbers: ``dtype``)."""
    return cells.namespace(ArrayAPI(dtype), TF_OPS, "tensorflow", kernels.NATIVE_ACTIVATIONS)


# -- the layer --------------------------------------------------------------------------------


def _layers():
    """``multirnn_tensorflow.layers``, imported late: it imports this module at its end."""
    from multirnn_tensorflow import layers

    return layers


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
class RNN(CarriedStates, kernels.OutputSpecs, keras.layers.Layer):
    """A :class:`multirnn.Cell` run over ``(batch, time, features)`` inputs with the
    ``Recurrent`` options, as a Keras layer on the TensorFlow backend.

    ``RNN(cell, return_sequences=..., return_state=..., go_backwards=..., stateful=...,
    unroll=..., zero_output_for_mask=..., seed=..., dtype=..., input_dim=..., name=...)``;
    ``dtype`` defaults to Keras's ``floatx()``. The weights are Keras variables named as
    the cell declared them; their regularizers and constraints go through Keras.
    """

    engine_name = "tensorflow"

    def __init__(self, cell: cells.Cell, **kwargs: Any) -> None:
        _layers()._require_tensorflow_backend("RNN")
        trainable = check_bool("RNN", "trainable", kwargs.pop("trainable", True))
        self.spec = cells.parse_rnn(cell, kwargs)
        self.cell = cell
        keras.layers.Layer.__init__(
            self,
            name=self.spec.name,
            dtype=self.spec.dtype or keras.config.floatx(),
            trainable=trainable,
            autocast=False,
        )
        self.supports_masking = True
        self._names: list[str] = []
        self._variables_in_order: list[keras.Variable] | None = None
        self._input_dim: int | None = None
        self._state_variables: list[tf.Variable] | None = None
        self._ops = tensorflow_namespace(self.compute_dtype)
        cells.RNNCore._build_from_arguments(self)

    # -- weights ------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int | None:
        return self._input_dim if self._variables_in_order is not None else None

    @property
    def weight_names(self) -> list[str]:
        return list(self._names)

    def build(self, input_shape) -> None:
        input_dim = LayerCore._input_dim_from_shape("RNN", input_shape)
        with _BUILD_LOCK:
            if self._variables_in_order is None:
                self._create_weights(input_dim)
                return
        if input_dim != self._input_dim:
            raise ValueError(
                f"{self.name}: already built for input_dim={self._input_dim}, cannot rebuild "
                f"for {input_dim}"
            )

    def _create_weights(self, input_dim: int) -> None:
        values = _layers()._given_values(self)  # set_weights on an unbuilt layer
        if values is None:  # no initializer runs then
            seed = self.spec.seed
            if seed is None:
                seed = int(np.random.randint(0, 2**31 - 1))
            values = self.cell.initial_weights(input_dim, seed)
        decls = self.cell.declare(input_dim)
        variables = []
        penalty, projection = _layers()._penalty, _layers()._projection
        for decl, value in zip(decls, values):
            value = value.astype(self.compute_dtype)
            variables.append(
                self.add_weight(
                    name=decl.name,
                    shape=value.shape,
                    initializer=lambda shape, dtype, value=value: tf.constant(value, dtype),
                    regularizer=None if decl.regularizer is None else penalty(decl.regularizer),
                    constraint=None if decl.constraint is None else projection(decl.constraint),
                )
            )
        self._names = [d.name for d in decls]
        self._input_dim = input_dim
        self._variables_in_order = variables
        self.built = True

    def _require_built(self, what: str) -> list[keras.Variable]:
        if self._variables_in_order is None:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                "build((batch, time, features)), call the layer once, or pass input_dim="
            )
        return self._variables_in_order

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in the order the cell declared them."""
        return [np.array(v.numpy()) for v in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (the cell's declared order and shapes), keeping the
        variables; builds the layer from them if needed."""
        arrays = [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in weights]
        known = self.input_dim or self.spec.input_dim  # (unbuilt in load: the spec's)
        input_dim = cells.check_weights(self.name, self.cell, arrays, known)
        if not self.built:
            _layers()._build_with(self, input_dim, arrays)  # (another thread may win)
        for variable, value in zip(self._variables_in_order, arrays):
            variable.assign(value.astype(variable.dtype))

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        calls.keyword_only(self, args)
        inputs, kwargs = _layers()._host_arguments(self, self.compute_dtype, inputs, kwargs)
        return super().__call__(inputs, **kwargs)

    def call(self, inputs, mask=None, initial_state=None, training=None):
        spec = self.spec
        x = kernels.call_tensor(inputs, "inputs", self.compute_dtype, self.name)
        shape = x.shape.as_list() if x.shape.rank is not None else [None]
        call = calls.inputs(
            spec,
            shape,
            kernels.dtype_name(x.dtype),
            expected_dtype=self.compute_dtype,
            input_dim=self.input_dim,
        )
        if mask is not None:
            mask = kernels.call_tensor(mask, "mask", None, self.name)
            calls.mask(spec, mask.shape.as_list(), kernels.dtype_name(mask.dtype), call)
        carried = self._carried_states(call, x) if spec.stateful else None
        if isinstance(initial_state, kernels.Deferred):
            initial_state = initial_state.value
        if initial_state is not None:
            states = kernels.initial_states(spec, initial_state, call, self.compute_dtype,
                                            owner=self.name)  # fmt: skip
        elif carried is not None:
            states = carried
        else:
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], spec.units]), self.compute_dtype)
            zeros.set_shape([call.batch, spec.units])
            states = [zeros for _ in spec.state_names]
        self.build((None, None, call.input_dim))
        weights = {
            n: tf.convert_to_tensor(v) for n, v in zip(self._names, self._variables_in_order)
        }
        output, final = self._scan(weights, x, mask, list(states), call)
        if spec.stateful:
            self._keep_final(final)
        return [output, *final] if spec.return_state else output

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
        dtype = self.compute_dtype
        output = tf.cast(output, dtype)
        new = [tf.cast(n, dtype) for n in new]
        for n, s in zip(new, states):
            n.set_shape(s.shape)  # static only; keeps the loop's shapes invariant
        output.set_shape(states[0].shape)
        return output, new

    def _scan(self, w, x, mask, states, call):
        spec = self.spec
        zero_output = spec.zero_output_for_mask
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
            new = [tf.where(keep, n, s) for n, s in zip(new, states)]
            held = tf.zeros_like(output) if zero_output else previous
            return tf.where(keep, output, held), new

        time = xs.shape[0]
        if spec.unroll and time is None:
            raise ValueError(
                f"{self.name}: unroll=True needs a static number of time steps; the inputs "
                f"have shape {x.shape}"
            )
        if time is not None and (spec.unroll or tf.executing_eagerly()):
            # unstacked once, not xs[t]: see the TensorArrays below
            steps = tf.unstack(xs)
            step_keeps = None if keeps is None else tf.unstack(keeps)
            outputs = []
            for t in range(time):
                keep = None if step_keeps is None else step_keeps[t]
                previous, states = step(steps[t], keep, states, previous, check=t == 0)
                outputs.append(previous)
            if spec.return_sequences:
                return tf.stack(outputs, axis=1), states
            return previous, states

        # Steps are read from TensorArrays (the gradient of a slice per step would write a
        # full-size zero tensor each time).
        length = time if time is not None else tf.shape(xs)[0]
        inputs = tf.TensorArray(xs.dtype, size=length).unstack(xs)
        masks = None if keeps is None else tf.TensorArray(tf.bool, size=length).unstack(keeps)
        sequences = tf.TensorArray(xs.dtype, size=length) if spec.return_sequences else None

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

    # -- states ---------------------------------------------------------------------------------
    _batch_hint = (
        "give the inputs a static batch dimension (keras.Input(batch_size=...)) or call "
        "reset_states(states=[...]) first"
    )

    def reset_states(self, states: Sequence[Any] | Any | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if not self.spec.stateful:
            raise ValueError(f"{self.name}: reset_states() applies to stateful layers")
        if states is None:
            self._zero_carried()
            return
        tensors = [kernels.call_tensor(s, "reset_states(states)", self.compute_dtype, self.name)
                   for s in calls.state_list(states)]  # fmt: skip
        shapes = [t.shape.as_list() for t in tensors]
        calls.states(self.spec, shapes, [kernels.dtype_name(t.dtype) for t in tensors],
                     batch=shapes[0][0] if len(shapes[0]) == 2 else None,
                     expected_dtype=self.compute_dtype, arg="reset_states(states)")  # fmt: skip
        self._assign_carried(tensors)

    # -- constraints, masks, shapes, config -------------------------------------------------------
    def apply_constraints(self) -> None:
        """Project the weights onto their constraints in place (Keras optimizers already do
        this after every step; this is for custom training loops)."""
        variables = self._require_built("apply_constraints")
        for decl, variable in zip(self.cell.declare(self._input_dim), variables):
            if decl.constraint is not None:
                projected = constraint_module.project(
                    decl.constraint, tf.convert_to_tensor(variable), TF_OPS
                )
                variable.assign(projected)

    def get_config(self) -> dict[str, Any]:
        """The NumPy engine's ``RNN`` config (the cell by its registered name, the options,
        the input size once built), named as Keras named the layer."""
        return cells.RNNCore.get_config(self) | {"name": self.name}

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
