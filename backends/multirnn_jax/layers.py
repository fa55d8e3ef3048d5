"""SimpleRNN, LSTM and GRU as JAX pytrees: the engine's ``RNN`` with a built-in cell.

A layer's leaves are its weights, ``kernel``, ``recurrent_kernel`` and ``bias``, in the
canonical (Keras) layout; its configuration is static auxiliary data. So a layer can be
passed straight through ``jax.jit``, ``jax.grad``, ``jax.vmap``, optax and sharding
utilities, and what comes back (gradients, updates, stacked ensembles) is again a layer.

Calls are pure except for the carried states of a stateful layer (see ``RNN.apply``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import GetAttrKey

from multirnn import builtin_cells, calls, cells, regularizers
from multirnn import spec as specs
from multirnn.bidirectional import BidirectionalCore, merge
from multirnn.layer import LayerCore, builtin_classes
from multirnn_jax import kernels
from multirnn_jax.ops import JAX_ARRAYS, JAX_OPS
from multirnn_jax.rnn import RNN, check_key, default_dtype, flax_dtypes, register

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Recurrent", "SimpleRNN", "default_dtype"]

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def framework_version() -> str:
    return jax.__version__


def from_numpy(array: Any) -> jax.Array:
    """A JAX array from a NumPy array (used by ``multirnn demo``)."""
    return JAX_ARRAYS.weight(np.ascontiguousarray(array), "array")


def training_kwargs() -> dict[str, Any]:
    """What a training call needs besides ``training=True`` (used by ``multirnn demo``)."""
    return {"key": jax.random.key(0)}


class Recurrent(LayerCore, RNN):
    """Base class of the JAX engine's built-in layers (use SimpleRNN, LSTM or GRU): ``RNN``
    with the built-in cell, whose leaves are the weights ``kernel``, ``recurrent_kernel``
    and ``bias`` and whose calls take the cell's fast paths (``multirnn_jax.kernels.run``).

    ``key`` (a ``jax.random`` key) seeds the initial weights when no ``seed=`` is given;
    with neither, the seed is drawn from NumPy's global generator. ``dtype`` defaults to
    JAX's default float type (float64 only in 64-bit mode); Flax's ``param_dtype=float32``
    with ``dtype=bfloat16`` is the mixed policy ``dtype="mixed_bfloat16"``. ``key=`` on a
    training call draws the dropout masks.
    """

    kernel: jax.Array | None
    recurrent_kernel: jax.Array | None
    bias: jax.Array | None
    _dropout_args = ("key",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    def __init__(self, *args: Any, key: jax.Array | None = None, param_dtype: Any = None,
                 **kwargs: Any):  # fmt: skip
        self._init_core(args, flax_dtypes(type(self).__name__, kwargs, param_dtype))
        self.kernel = self.recurrent_kernel = self.bias = None
        self._setup(key, type(self).__name__)
        self._build_from_arguments()

    def _default_name(self) -> str:
        return self.spec.name or self.layer_name.lower()

    @property
    def cell(self) -> cells.Cell:
        """The built-in cell this layer runs (``RNN(cell)`` computes the same function)."""
        return builtin_cells.cell_of(self.spec)

    # -- pytree protocol: the three weights are the leaves -------------------------------------
    def _aux(self):
        return (self.spec, self._dtype)

    def _children(self):
        return tuple((GetAttrKey(n), getattr(self, n)) for n in _WEIGHTS)

    @staticmethod
    def _aux_to_json(aux) -> dict:
        return {"config": aux[0].to_config(), "dtype": aux[1]}

    @staticmethod
    def _aux_from_json(data: dict):
        return specs.from_config(data["config"]), data["dtype"]

    def _restore(self, aux, children) -> None:
        self.spec, self._dtype = aux
        self.kernel, self.recurrent_kernel, self.bias = children

    def _with(self, weights: Sequence[Any]) -> Recurrent:
        leaves = tuple(weights) + (None,) * (len(_WEIGHTS) - len(weights))
        return type(self)._unflatten(self._aux(), leaves)

    # -- weights ----------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def input_dim(self) -> int | None:
        return None if self.kernel is None else int(self.kernel.shape[0])

    @property
    def weight_names(self) -> list[str]:
        return list(self.spec.weight_names)

    def _weights(self) -> list[jax.Array]:
        return [getattr(self, name) for name in self.spec.weight_names]

    def _differentiable_weights(self) -> list[jax.Array]:
        weights = self._weights()
        if self.spec.trainable:
            return weights
        return [jax.lax.stop_gradient(w) for w in weights]

    def _declared(self):
        return self.cell.declare(self.input_dim)

    def _create_weights(self, input_dim: int) -> None:
        self._create(self._initial_weights(input_dim))

    def _create(self, arrays) -> None:
        values = [jnp.asarray(np.asarray(v), dtype=self._weight_dtype) for v in arrays]
        # the kernel last: `built` reads it, so another thread never sees half the weights
        for name, value in reversed(list(zip(self.spec.weight_names, values))):
            setattr(self, name, value)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (canonical layout) of this layer object, eagerly."""
        if isinstance(weights, (list, tuple)):
            weights = [np.asarray(w) if isinstance(w, jax.Array) else w for w in weights]
        self._create(self._check_weights(weights, self.input_dim))

    # -- calling: the cell's fast paths --------------------------------------------------------
    def _run(self, call, weights):
        return kernels.run(self.spec, weights, call.x, call.mask, call.states,
                           call.input_dropout, call.recurrent_dropout)  # fmt: skip

    def _dropout_keep(self, call, *shapes, key: jax.Array | None = None) -> list:
        spec = self.spec
        if key is None:
            raise ValueError(
                f"{self.name}: training with dropout={spec.dropout}, recurrent_dropout="
                f"{spec.recurrent_dropout} needs a random key: "
                "layer(x, training=True, key=jax.random.key(...))"
            )
        keys = jax.random.split(check_key(key, self.name))
        rates = (spec.dropout, spec.recurrent_dropout)
        return [None if shape is None else jax.random.bernoulli(k, 1.0 - rate, shape)
                for k, shape, rate in zip(keys, shapes, rates)]  # fmt: skip

    # -- penalties ----------------------------------------------------------------------------
    def penalties(self, output: jax.Array | None = None) -> list[jax.Array]:
        """Differentiable penalties: the weight regularizers on the current weights, then
        the activity regularizer of ``output`` (the layer's main output, divided by its
        batch size) when given. Pure, so usable inside a jitted loss."""
        spec = self.spec
        out = RNN.penalties(self)
        if output is not None and spec.activity_regularizer is not None:
            output = JAX_ARRAYS.weight(output, f"{self.name}: penalties(output)")
            batch = max(int(output.shape[0]), 1) if output.ndim else 1
            out.append(regularizers.penalty(spec.activity_regularizer, output, JAX_OPS) / batch)
        return out

    def penalty(self, output: jax.Array | None = None) -> jax.Array:
        """The sum of :meth:`penalties` (zero when the layer has no regularizers)."""
        return sum(self.penalties(output), jnp.zeros((), self._dtype))

    def __repr__(self) -> str:
        return LayerCore.__repr__(self)


SimpleRNN, LSTM, GRU = builtin_classes(Recurrent, __name__)


class _BidirectionalOps:
    concat = staticmethod(lambda arrays, axis: jnp.concatenate(arrays, axis=axis))
    flip = staticmethod(lambda array, axis: jnp.flip(array, axis=axis))


class Bidirectional(BidirectionalCore):
    """A recurrent layer run forward and backward over the inputs, outputs merged (Keras
    semantics; see ``multirnn.bidirectional``). A pytree whose children are the two
    layers, so ``jit``, ``grad`` and optax take it like a single layer. ``key`` is split
    between the two directions' dropout."""

    engine_name = "jax"
    _ops = _BidirectionalOps
    _classes: ClassVar[dict[str, type]] = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
    _rnn_class = RNN

    def __init__(self, layer: RNN, merge_mode: str | None = "concat", **keywords: Any):
        self.forward_layer, self.backward_layer = self._init_core(layer, merge_mode, keywords)

    def _flatten_with_keys(self):
        children = (
            (GetAttrKey("forward_layer"), self.forward_layer),
            (GetAttrKey("backward_layer"), self.backward_layer),
        )
        return children, self.spec

    def _flatten(self):
        return (self.forward_layer, self.backward_layer), self.spec

    @classmethod
    def _unflatten(cls, spec, children):
        wrapper = object.__new__(cls)
        wrapper.spec = spec
        wrapper.forward_layer, wrapper.backward_layer = children
        return wrapper

    def __call__(self, inputs, *args, mask=None, initial_state=None, training: bool = False,
                 key: jax.Array | None = None):  # fmt: skip
        calls.keyword_only(self, args)
        forward_keys, backward_keys = {}, {}
        if not isinstance(self.forward_layer, Recurrent):  # RNN(cell): no dropout, no key
            if key is not None:
                raise TypeError(
                    f"{self.spec.name}: key= draws dropout masks, which RNN(cell) does not "
                    "have (a cell that wants dropout draws it in its own step); call it "
                    "without key"
                )
        elif key is not None:
            forward_key, backward_key = jax.random.split(key)
            forward_keys, backward_keys = {"key": forward_key}, {"key": backward_key}
        forward_state, backward_state = self.spec.split_initial_state(initial_state)
        y = self.forward_layer(inputs, mask=mask, initial_state=forward_state,
                               training=training, **forward_keys)  # fmt: skip
        y_rev = self.backward_layer(inputs, mask=mask, initial_state=backward_state,
                                    training=training, **backward_keys)  # fmt: skip
        out = merge(self.spec, y, y_rev, self._ops)
        return out[0] if len(out) == 1 else out

    @property
    def losses(self) -> list[jax.Array]:
        """The weight penalties of both directions (current weights)."""
        return self.forward_layer.penalties() + self.backward_layer.penalties()

    def apply_constraints(self) -> Bidirectional:  # type: ignore[override]
        """A new wrapper with both directions' weights projected (layers are immutable)."""
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(self, is_leaf=lambda n: isinstance(n, RNN)),
            [self.forward_layer.apply_constraints(), self.backward_layer.apply_constraints()],
        )


jax.tree_util.register_pytree_with_keys(
    Bidirectional,
    Bidirectional._flatten_with_keys,
    Bidirectional._unflatten,
    Bidirectional._flatten,
)
