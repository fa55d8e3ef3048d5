"""SimpleRNN, LSTM and GRU as Keras 3 layers on the TensorFlow backend: the engine's
``RNN`` with a built-in cell.

They fit ``keras.Sequential``/``Model``, ``model.fit``, ``tf.function``, ``tf.GradientTape``
and checkpoints like any Keras layer. The weights are Keras variables ``kernel``,
``recurrent_kernel`` and ``bias`` in the canonical layout; weight regularizers and
constraints go through Keras's own mechanisms (``layer.losses``, applied after each
optimizer step); the computation is ``multirnn_tensorflow.kernels``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from multirnn import builtin_cells, calls, cells, precision, regularizers
from multirnn._checks import check_bool
from multirnn.bidirectional import BidirectionalCore
from multirnn.layer import LayerCore, builtin_classes
from multirnn_tensorflow import kernels
from multirnn_tensorflow.ops import TF_OPS
from multirnn_tensorflow.rnn import (
    RNN,
    _host_arguments,
    _require_tensorflow_backend,
    _undeferred,
    policy_name,
    with_policy,
)

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Recurrent", "SimpleRNN"]


def framework_version() -> str:
    return tf.__version__


def from_numpy(array: Any) -> tf.Tensor:
    """A tensor from a NumPy array (used by ``multirnn demo``)."""
    return tf.convert_to_tensor(np.ascontiguousarray(array))


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


class Recurrent(LayerCore, RNN):
    """Base class of the TensorFlow engine's built-in layers (use SimpleRNN, LSTM or GRU):
    ``RNN`` with the built-in cell, whose variables are the layer's ``kernel``,
    ``recurrent_kernel`` and ``bias`` and whose calls take the cell's fast paths
    (``multirnn_tensorflow.kernels.run``).

    ``dtype`` defaults to Keras's global dtype policy (``floatx()`` unless
    ``keras.config.set_dtype_policy`` set another). ``trainable`` is Keras's own flag.
    """

    _batch_hint = (
        "create it with batch_input_shape=(batch, time, features) or batch_size=, or give "
        "the inputs a static batch dimension (keras.Input(batch_size=...))"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        _require_tensorflow_backend(type(self).__name__)
        self._init_core(args, policy_name(kwargs))
        self._main_output = None
        self._setup(self.spec.trainable)
        self._seed_generator = keras.random.SeedGenerator(self.spec.seed)
        self._build_from_arguments()

    @property
    def cell(self) -> cells.Cell:
        """The built-in cell this layer runs (``RNN(cell)`` computes the same function)."""
        return builtin_cells.cell_of(self.spec)

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

    # -- weights: the variables kernel, recurrent_kernel, bias --------------------------------
    @property
    def input_dim(self) -> int | None:
        kernel = getattr(self, "kernel", None)  # set while Keras's build is still running
        return None if kernel is None else int(kernel.shape[0])

    @property
    def weight_names(self) -> list[str]:
        return list(self.spec.weight_names)

    def _weights(self) -> list[keras.Variable]:
        return [getattr(self, name) for name in self.spec.weight_names]

    def _store(self, decls, input_dim: int, variables: list) -> None:
        if not self.spec.use_bias:
            self.bias = None
        # the kernel last: `input_dim` reads it, so another thread never sees half the weights
        for name, variable in reversed(list(zip(self.spec.weight_names, variables))):
            setattr(self, name, variable)

    def _checked_weights(self, weights: Any) -> tuple[int, list[np.ndarray]]:
        arrays = self._check_weights(weights, self.input_dim)
        return arrays[0].shape[0], arrays

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

    # -- calling: the cell's fast paths --------------------------------------------------------
    def _run(self, call, weights):
        output, final = kernels.run(self.spec, weights, call.x, call.mask, call.states,
                                    call.input_dropout, call.recurrent_dropout,
                                    inference=call.training is False)  # fmt: skip
        self._main_output = output
        return output, final

    def _dropout_keep(self, call, *shapes) -> list:
        rates = (self.spec.dropout, self.spec.recurrent_dropout)
        return [None if shape is None else self._keep(shape, rate, call.x)
                for shape, rate in zip(shapes, rates)]  # fmt: skip

    def _keep(self, shape, rate: float, like):
        if any(s is None for s in shape):
            batch = tf.shape(like)[0]
            shape = [batch if s is None else s for s in shape]
        seed = tf.cast(self._seed_generator.next(), tf.int64)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Under a distribution strategy every replica reads the same generator state:
            # fold the replica's index into the seed so that each draws its own masks.
            replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        # Philox named, not chosen: under XLA (jit_compile, Keras's fit) the automatic
        # choice draws about 15x slower on CPU (4 ms for an LSTM's 16k per-gate mask
        # entries), more than the training step it serves; outside XLA it is Philox anyway
        dtype = precision.arithmetic(like.dtype.name)
        return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype, alg="philox") >= rate

    def _default_batch(self) -> int | None:
        return self.spec.batch_size

    def apply_constraints(self) -> None:
        """Project the weights onto their constraints in place (Keras optimizers already do
        this after every step; this is for custom training loops)."""
        weights = self._require_built("apply_constraints")
        for _, variable, projected in self._constrained(weights, TF_OPS):
            variable.assign(projected)

    def get_config(self) -> dict[str, Any]:
        return with_policy(self, LayerCore.get_config(self))

    def __repr__(self) -> str:
        return LayerCore.__repr__(self)


SimpleRNN, LSTM, GRU = (
    keras.saving.register_keras_serializable(package="multirnn")(cls)
    for cls in builtin_classes(Recurrent, __name__)
)


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
    _classes: ClassVar[dict[str, type]] = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
    _rnn_class = RNN

    def __init__(self, layer: RNN, merge_mode: str | None = "concat", **kwargs: Any):
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
        initial_state = _undeferred(initial_state)  # each direction's layer refuses it in turn
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
