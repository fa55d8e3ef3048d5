"""A stateful layer's carried states on TensorFlow, one implementation for the built-in
layers (``Recurrent``) and ``RNN(cell)``.

The states are plain TensorFlow variables, not Keras weights: Keras allows no new weights
after ``build``, and the batch size is known only at the first call (or at
``reset_states``); ``get_weights``/``set_weights`` and optimizers never see them.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from multirnn import calls


class CarriedStates:
    """Mixin for a Keras layer with ``spec``, ``name`` and ``compute_dtype``; it sets
    ``_state_variables`` to None in its constructor."""

    _state_variables: list[tf.Variable] | None
    #: how to give a stateful layer the batch size it needs before its first call
    _batch_hint = "give the inputs a static batch dimension (keras.Input(batch_size=...))"

    def _default_batch(self) -> int | None:
        """The batch size the layer was created with, if any."""
        return None

    def _carried_states(self, call: Any, x: tf.Tensor) -> list[tf.Tensor]:
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
