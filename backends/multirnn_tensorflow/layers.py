"""SimpleRNN, LSTM and GRU as Keras 3 layers on the TensorFlow backend.

They fit ``keras.Sequential``/``Model``, ``model.fit``, ``tf.function``, ``tf.GradientTape``
and checkpoints like any Keras layer. The weights are Keras variables ``kernel``,
``recurrent_kernel`` and ``bias`` in the canonical layout; weight regularizers and
constraints go through Keras's own mechanisms (``layer.losses``, applied after each
optimizer step); the computation is ``multirnn_tensorflow.kernels``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from multirnn import calls, constraints, regularizers
from multirnn._checks import check_bool
from multirnn.bidirectional import BidirectionalCore
from multirnn.layer import LayerCore
from multirnn_tensorflow import kernels
from multirnn_tensorflow.carried import CarriedStates
from multirnn_tensorflow.ops import TF_OPS


def framework_version() -> str:
    return tf.__version__


def from_numpy(array: Any) -> tf.Tensor:
    """A tensor from a NumPy array (used by ``multirnn demo``)."""
    return tf.convert_to_tensor(np.ascontiguousarray(array))


def _require_tensorflow_backend(owner: str) -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{owner}: the tensorflow engine's layers are Keras layers on the TensorFlow "
            f"backend, but Keras runs on {backend!r}. Set KERAS_BACKEND=tensorflow before "
            f"Keras is first imported, or use multirnn's {backend!r} engine instead"
        )


class _MainOutputPenalty:
    """The activity regularizer as Keras applies it (to every output, divided by the batch
    size), restricted to the layer's main output: states returned with ``return_state``
    are not penalized."""

    def __init__(self, layer: Recurrent):
        self.layer = layer

    def __call__(self, output):
        if output is not self.layer._main_output:
            return tf.zeros((), output.dtype)
        return regularizers.penalty(self.layer.spec.activity_regularizer, output, TF_OPS)


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


class Recurrent(CarriedStates, LayerCore, kernels.OutputSpecs, keras.layers.Layer):
    """Base class of the TensorFlow engine's layers (use SimpleRNN, LSTM or GRU).

    ``dtype`` defaults to Keras's ``floatx()``. ``trainable`` is Keras's own flag.
    """

    engine_name = "tensorflow"

    def __init__(self, *args: Any, **kwargs: Any):
        _require_tensorflow_backend(type(self).__name__)
        self._init_core(args, kwargs)
        spec = self.spec
        self._main_output = None
        # autocast=False: inputs of another dtype are an error, not silently cast.
        keras.layers.Layer.__init__(
            self,
            name=spec.name,
            dtype=spec.dtype or keras.config.floatx(),
            trainable=spec.trainable,
            autocast=False,
        )
        self.supports_masking = True
        self._seed_generator = keras.random.SeedGenerator(spec.seed)
        self._state_variables: list[keras.Variable] | None = None
        self._build_from_arguments()

    # Keras sets and applies ``activity_regularizer``; the layer's own comes from its spec.
    @property
    def activity_regularizer(self):
        spec = getattr(self, "spec", None)
        if spec is None or spec.activity_regularizer is None:
            return None
        return _MainOutputPenalty(self)

    @activity_regularizer.setter
    def activity_regularizer(self, value) -> None:
        if value is not None:
            raise AttributeError("activity_regularizer is set when the layer is created")

    # -- building and weights ---------------------------------------------------------------
    @property
    def input_dim(self) -> int | None:
        kernel = getattr(self, "kernel", None)  # set while Keras's build is still running
        return None if kernel is None else int(kernel.shape[0])

    def _create_weights(self, input_dim: int) -> None:
        spec = self.spec
        values = _given_values(self)  # set_weights on an unbuilt layer: no initializer runs
        if values is None:
            values = self._initial_weights(input_dim)
        chosen = {
            "kernel": (spec.kernel_regularizer, spec.kernel_constraint),
            "recurrent_kernel": (spec.recurrent_regularizer, spec.recurrent_constraint),
            "bias": (spec.bias_regularizer, spec.bias_constraint),
        }
        variables = []
        for name, value in zip(spec.weight_names, values):
            regularizer, constraint = chosen[name]
            variables.append(self.add_weight(
                name=name,
                shape=value.shape,
                initializer=lambda shape, dtype, value=value: tf.constant(value, dtype),
                regularizer=None if regularizer is None else _penalty(regularizer),
                constraint=None if constraint is None else _projection(constraint),
            ))  # fmt: skip
        if not spec.use_bias:
            self.bias = None
        # the kernel last: `input_dim` reads it, so another thread never sees half the weights
        for name, variable in reversed(list(zip(spec.weight_names, variables))):
            setattr(self, name, variable)
        self.built = True

    def _weights(self) -> list[keras.Variable]:
        return [getattr(self, name) for name in self.spec.weight_names]

    def _require_built(self, what: str) -> list[keras.Variable]:
        if not self.built:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                "build((batch, time, features)), call the layer once, or pass input_dim="
            )
        return self._weights()

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in the canonical layout."""
        return [np.array(w.numpy()) for w in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (canonical layout), keeping the variables."""
        if isinstance(weights, (list, tuple)):
            weights = [w.numpy() if hasattr(w, "numpy") else w for w in weights]
        arrays = self._check_weights(weights, self.input_dim)
        if not self.built:
            _build_with(self, arrays[0].shape[0], arrays)  # (another thread may win)
        for variable, value in zip(self._weights(), arrays):
            variable.assign(value.astype(variable.dtype))

    # Keras's flag, which also reaches the variables; the spec follows it for get_config
    @property
    def trainable(self) -> bool:
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        value = check_bool(self.name, "trainable", value)
        keras.layers.Layer.trainable.fset(self, value)
        if getattr(self, "spec", None) is not None and self.spec.trainable != value:
            self.spec = self.spec.replace(trainable=value)

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        calls.keyword_only(self, args)  # Keras would take a second argument as the mask
        inputs, kwargs = _host_arguments(self, self.compute_dtype, inputs, kwargs)
        return super().__call__(inputs, **kwargs)

    def call(self, inputs, mask=None, initial_state=None, training=None):
        spec = self.spec
        x = kernels.call_tensor(inputs, "inputs", self.compute_dtype, self.name)
        call = calls.inputs(spec, x.shape.as_list() if x.shape.rank is not None else [None],
                            kernels.dtype_name(x.dtype), expected_dtype=self.compute_dtype,
                            input_dim=self.input_dim)  # fmt: skip
        if mask is not None:
            mask = kernels.call_tensor(mask, "mask", None, self.name)
            calls.mask(spec, mask.shape.as_list(), kernels.dtype_name(mask.dtype), call)
        carried = None
        if spec.stateful:
            carried = self._carried_states(call, x)
        if isinstance(initial_state, kernels.Deferred):
            initial_state = initial_state.value
        if initial_state is not None:
            states = kernels.initial_states(spec, initial_state, call, self.compute_dtype,
                                            owner=self.name)  # fmt: skip
        else:
            states = carried
        mi = mr = None
        if training and (spec.dropout > 0 or spec.recurrent_dropout > 0):
            in_shape, rec_shape = self._dropout_mask_shapes(call.batch, call.input_dim)
            mi = self._sample_dropout(in_shape, spec.dropout, x)
            mr = self._sample_dropout(rec_shape, spec.recurrent_dropout, x)
        output, final = kernels.run(spec, [tf.convert_to_tensor(w) for w in self._weights()],
                                    x, mask, states, mi, mr,
                                    inference=training is False)  # fmt: skip
        if spec.stateful:
            self._keep_final(final)
        self._main_output = output
        return [output, *final] if spec.return_state else output

    def _sample_dropout(self, shape, rate: float, like):
        if shape is None:
            return None
        if any(s is None for s in shape):
            batch = tf.shape(like)[0]
            shape = [batch if s is None else s for s in shape]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Under a distribution strategy every replica reads the same generator state:
            # fold the replica's index into the seed so that each draws its own masks.
            seed = tf.cast(self._seed_generator.next(), tf.int64)
            replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
            uniform = tf.random.stateless_uniform(shape, seed=seed, dtype=like.dtype)
        else:
            uniform = keras.random.uniform(shape, dtype=like.dtype, seed=self._seed_generator)
        keep = uniform >= rate
        return tf.cast(keep, like.dtype) / tf.constant(1.0 - rate, like.dtype)

    _batch_hint = (
        "create it with batch_input_shape=(batch, time, features) or batch_size=, or give "
        "the inputs a static batch dimension (keras.Input(batch_size=...))"
    )

    def _default_batch(self) -> int | None:
        return self.spec.batch_size

    # -- state --------------------------------------------------------------------------------
    def reset_states(self, states: Sequence[Any] | Any | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if states is None:
            self._check_reset(None, None, self.compute_dtype)
            self._zero_carried()
            return
        tensors = [kernels.call_tensor(s, "reset_states(states)", self.compute_dtype, self.name)
                   for s in calls.state_list(states)]  # fmt: skip
        self._check_reset([t.shape.as_list() for t in tensors],
                          [kernels.dtype_name(t.dtype) for t in tensors],
                          self.compute_dtype)  # fmt: skip
        self._assign_carried(tensors)

    # -- constraints ----------------------------------------------------------------------------
    def apply_constraints(self) -> None:
        """Project the weights onto their constraints in place (Keras optimizers already do
        this after every step; this is for custom training loops)."""
        weights = self._require_built("apply_constraints")
        for _, variable, projected in self._constrained(weights, TF_OPS):
            variable.assign(projected)

    def __repr__(self) -> str:
        return LayerCore.__repr__(self)


def _host_arguments(layer, dtype: str, inputs, kwargs: dict[str, Any]):
    """NumPy arrays and nested lists converted before Keras sees them (Keras would map a
    nested list element by element), and ``training`` checked, as on every engine."""
    calls.training(layer.name, kwargs.get("training"))
    if not isinstance(inputs, (tf.Tensor, tf.Variable, keras.Variable, keras.KerasTensor)):
        inputs = kernels.call_tensor(inputs, "inputs", dtype, layer.name)

    def convert(value, arg, dtype):
        if not isinstance(value, calls.HOST_TYPES):
            return value
        try:
            return kernels.call_tensor(value, arg, dtype, layer.name)
        except (TypeError, ValueError):  # raised by call() after the inputs are checked
            return kernels.Deferred(value)

    if kwargs.get("mask") is not None:
        kwargs = {**kwargs, "mask": convert(kwargs["mask"], "mask", None)}
    state = kwargs.get("initial_state")
    if state is not None:
        converted = [convert(s, "initial_state", dtype) for s in calls.state_list(state)]
        if any(isinstance(s, kernels.Deferred) for s in converted):
            converted = kernels.Deferred(state)  # Keras takes no mix of tensors and others
        kwargs = {**kwargs, "initial_state": converted}
    return inputs, kwargs


def _penalty(regularizer):
    return lambda w: regularizers.penalty(regularizer, w, TF_OPS)


def _projection(constraint):
    return lambda w: constraints.project(constraint, w, TF_OPS)


@keras.saving.register_keras_serializable(package="multirnn")
class SimpleRNN(Recurrent):
    """Fully connected recurrent layer whose output is fed back as its state."""

    layer_name = "SimpleRNN"


@keras.saving.register_keras_serializable(package="multirnn")
class LSTM(Recurrent):
    """Long short-term memory layer (states ``[h, c]``)."""

    layer_name = "LSTM"


@keras.saving.register_keras_serializable(package="multirnn")
class GRU(Recurrent):
    """Gated recurrent unit layer (``reset_after`` selects the cuDNN-style variant)."""

    layer_name = "GRU"


class _BidirectionalOps:
    concat = staticmethod(lambda tensors, axis: tf.concat(tensors, axis=axis))
    flip = staticmethod(lambda tensor, axis: tf.reverse(tensor, [axis]))


@keras.saving.register_keras_serializable(package="multirnn")
class Bidirectional(BidirectionalCore, keras.layers.Layer):
    """A recurrent layer run forward and backward over the inputs, outputs merged (Keras
    semantics; see ``multirnn.bidirectional``). A Keras layer whose sublayers are the two
    directions, so their weights, penalties and constraints reach Keras as usual."""

    engine_name = "tensorflow"
    _ops = _BidirectionalOps

    def __init__(self, layer: Recurrent, merge_mode: str | None = "concat", **kwargs: Any):
        _require_tensorflow_backend("Bidirectional")
        # Keras takes the name; the rest are the wrapped layer's keywords (or refused there)
        keras_kwargs = {k: kwargs.pop(k) for k in ("name",) if k in kwargs}
        keywords = kwargs
        if "trainable" in keywords:
            keras_kwargs["trainable"] = keywords["trainable"]
        # anything else than a Keras layer is refused by _init_core, with what is accepted
        dtype = layer.dtype if isinstance(layer, keras.layers.Layer) else None
        keras.layers.Layer.__init__(self, dtype=dtype, autocast=False, **keras_kwargs)
        self.forward_layer, self.backward_layer = self._init_core(layer, merge_mode, keywords)
        self.supports_masking = True

    # Keras's flag (it reaches both directions); the spec follows it for get_config
    @property
    def trainable(self) -> bool:
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        keras.layers.Layer.trainable.fset(self, check_bool("Bidirectional", "trainable", value))
        if getattr(self, "spec", None) is not None:
            self.spec = self.spec.with_trainable(bool(value))

    # Keras assigns ``built``; the wrapper is built when both directions are
    @property
    def built(self) -> bool:
        layers = (getattr(self, "forward_layer", None), getattr(self, "backward_layer", None))
        return all(layer is not None and layer.built for layer in layers)

    @built.setter
    def built(self, value: bool) -> None:
        pass

    def build(self, input_shape) -> None:
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        calls.keyword_only(self, args)
        dtype = self.forward_layer.compute_dtype
        inputs, kwargs = _host_arguments(self, dtype, inputs, kwargs)
        return super().__call__(inputs, **kwargs)

    def call(self, inputs, mask=None, initial_state=None, training=None):
        if isinstance(initial_state, kernels.Deferred):
            initial_state = initial_state.value  # each direction's layer refuses it in turn
        return self._run(inputs, mask=mask, initial_state=initial_state, training=training)

    def compute_mask(self, inputs, mask=None):
        spec = self.spec
        output_mask = mask if spec.layer.return_sequences else None
        outputs = [output_mask] * (2 if spec.merge_mode is None else 1)
        states = [None] * (2 * spec.layer.num_states if spec.layer.return_state else 0)
        masks = outputs + states
        return masks[0] if len(masks) == 1 else masks

    def compute_output_shape(self, input_shape):
        spec = self.spec
        batch, time = input_shape[0], input_shape[1]
        width = spec.units
        output = (batch, time, width) if spec.layer.return_sequences else (batch, width)
        if spec.merge_mode is None:
            output = self.forward_layer.compute_output_shape(input_shape)
            output = output[0] if spec.layer.return_state else output
            outputs = [output, output]
        else:
            outputs = [output]
        states = [(batch, spec.layer.units)] * (
            2 * spec.layer.num_states if spec.layer.return_state else 0
        )
        shapes = outputs + states
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def losses(self) -> list:
        return list(self.forward_layer.losses) + list(self.backward_layer.losses)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **BidirectionalCore.get_config(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        layer = cls._layer_from_config(config["layer"])
        return cls(layer, config.get("merge_mode", "concat"), name=config.get("name"))


Bidirectional._classes = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
from multirnn_tensorflow.rnn import RNN  # noqa: E402

Bidirectional._rnn_class = RNN
