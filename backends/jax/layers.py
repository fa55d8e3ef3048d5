"""SimpleRNN, LSTM and GRU as JAX pytrees.

A layer's leaves are its weights, ``kernel``, ``recurrent_kernel`` and ``bias``, in the
canonical (Keras) layout; its configuration is static auxiliary data. So a layer can be
passed straight through ``jax.jit``, ``jax.grad``, ``jax.vmap``, optax and sharding
utilities, and what comes back (gradients, updates, stacked ensembles) is again a layer.

Calls are pure except for the carried states of a stateful layer, which only an eager call
can update (a traced call cannot write them back): inside transformations, thread states
explicitly with :meth:`Recurrent.apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from multirnn_jax import kernels
from multirnn_jax._pytree import check_flattenable, unbuilt
from multirnn_jax.ops import JAX_OPS

import jax
import jax.numpy as jnp
from jax.tree_util import GetAttrKey
from multirnn import calls, regularizers
from multirnn.bidirectional import BidirectionalCore, merge
from multirnn.layer import LayerCore

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def framework_version() -> str:
    return jax.__version__


def from_numpy(array: Any) -> jax.Array:
    """A JAX array from a NumPy array (used by ``multirnn demo``)."""
    return kernels.as_array(np.ascontiguousarray(array), "array")


def training_kwargs() -> dict[str, Any]:
    """What a training call needs besides ``training=True`` (used by ``multirnn demo``)."""
    return {"key": jax.random.key(0)}


def default_dtype() -> str:
    """float64 when JAX's 64-bit mode is on, else float32 (JAX's own default)."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def _check_key(key: Any, owner: str) -> jax.Array:
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise TypeError(
        f"{owner}: key must be one JAX PRNG key (jax.random.key(seed) or "
        f"jax.random.PRNGKey(seed)), got {type(key).__name__} "
        f"{getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}"
    )


class Recurrent(LayerCore):
    """Base class of the JAX engine's layers (use SimpleRNN, LSTM or GRU).

    ``key`` (a ``jax.random`` key) seeds the initial weights when no ``seed=`` is given;
    with neither, the seed is drawn from NumPy's global generator. ``dtype`` defaults to
    JAX's default float type (float64 only in 64-bit mode).
    """

    engine_name = "jax"
    kernel: jax.Array | None
    recurrent_kernel: jax.Array | None
    bias: jax.Array | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, cls._flatten_with_keys, cls._unflatten, cls._flatten
        )

    def __init__(self, *args: Any, key: jax.Array | None = None, **kwargs: Any):
        self._init_core(args, kwargs)
        spec = self.spec
        dtype = spec.dtype or default_dtype()
        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                f"{type(self).__name__}: dtype='float64' needs JAX's 64-bit mode; call "
                "jax.config.update('jax_enable_x64', True) first (or set JAX_ENABLE_X64=1)"
            )
        self._dtype = dtype
        self._key = None if key is None else _check_key(key, type(self).__name__)
        # No generated names: the configuration is the pytree's static data, and two layers
        # built alike must have equal tree structures (to stack an ensemble, to share a
        # compiled function).
        self.name = spec.name or self.layer_name.lower()
        self.kernel = self.recurrent_kernel = self.bias = None
        self._states: list[jax.Array] | None = None
        self._build_from_arguments()

    # -- pytree protocol --------------------------------------------------------------------
    def _flatten_with_keys(self):
        check_flattenable(self)
        children = tuple((GetAttrKey(n), getattr(self, n)) for n in _WEIGHTS)
        return children, (self.spec, self._dtype)

    def _flatten(self):
        check_flattenable(self)
        return tuple(getattr(self, n) for n in _WEIGHTS), (self.spec, self._dtype)

    @classmethod
    def _unflatten(cls, aux, children):
        # Leaves may be anything a tree utility puts there (tracers, shardings, None), so
        # nothing is validated here; carried states belong to the eager object only.
        layer = object.__new__(cls)
        layer.spec, layer._dtype = aux
        layer.name = layer.spec.name or cls.layer_name.lower()
        layer.kernel, layer.recurrent_kernel, layer.bias = children
        layer._key, layer._states, layer._from_tree = None, None, True
        return layer

    # -- building and weights ---------------------------------------------------------------
    @property
    def dtype(self) -> str:
        """The dtype the layer computes in ("float32" or "float64")."""
        return self._dtype

    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def input_dim(self) -> int | None:
        return None if self.kernel is None else int(self.kernel.shape[0])

    def _draw_seed(self) -> int:
        if self._key is not None:
            return int(jax.random.randint(self._key, (), 0, 2**31 - 1))
        return super()._draw_seed()

    def _create_weights(self, input_dim: int) -> None:
        self._create(self._initial_weights(input_dim))

    def _create(self, arrays) -> None:
        values = [jnp.asarray(np.asarray(v), dtype=self._dtype) for v in arrays]
        # the kernel last: `built` reads it, so another thread never sees half the weights
        for name, value in reversed(list(zip(self.spec.weight_names, values))):
            setattr(self, name, value)

    def _weights(self) -> list[jax.Array]:
        return [getattr(self, name) for name in self.spec.weight_names]

    def _differentiable_weights(self) -> list[jax.Array]:
        """The weights as calls and penalties use them: a frozen layer's (trainable=False)
        pass no gradient back."""
        weights = self._weights()
        if self.spec.trainable:
            return weights
        return [jax.lax.stop_gradient(w) for w in weights]

    def _require_built(self, what: str) -> list[jax.Array]:
        if not self.built:
            raise unbuilt(self.name, what)
        return self._weights()

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in the canonical layout."""
        return [np.array(w) for w in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (canonical layout) of this layer object, eagerly."""
        if isinstance(weights, (list, tuple)):
            weights = [np.asarray(w) if isinstance(w, jax.Array) else w for w in weights]
        self._create(self._check_weights(weights, self.input_dim))

    def replace(self, **weights: jax.Array) -> Recurrent:
        """A new layer with some weights replaced (``kernel=``, ``recurrent_kernel=``,
        ``bias=``); works under transformations. Shapes and dtypes are checked."""
        unknown = set(weights) - set(self.spec.weight_names)
        if unknown:
            raise ValueError(
                f"{self.name}: replace() takes {', '.join(self.spec.weight_names)}; got "
                f"{', '.join(sorted(unknown))}"
            )
        current = self._require_built("replace")
        new = [weights.get(n, w) for n, w in zip(self.spec.weight_names, current)]
        new = kernels.check_weights(self.spec, new, self.input_dim)
        if any(kernels.dtype_name(w.dtype) != self._dtype for w in new):
            raise TypeError(f"{self.name}: replacement weights must have dtype {self._dtype}")
        return self._with_leaves(new)

    # -- calling ----------------------------------------------------------------------------
    def __call__(
        self,
        inputs: jax.Array,
        *args: Any,
        mask: jax.Array | None = None,
        initial_state: Sequence[jax.Array] | jax.Array | None = None,
        training: bool = False,
        key: jax.Array | None = None,
    ):
        """Run the layer. ``key`` (a ``jax.random`` key) is required when ``training=True``
        and the layer has dropout. A stateful layer starts from its carried states (unless
        ``initial_state`` is given) and keeps its final states, eagerly only."""
        calls.keyword_only(self, args)
        inputs = kernels.call_array(inputs, "inputs", self._dtype, self.name)
        if not self.spec.stateful:
            return self.apply(inputs, states=initial_state, mask=mask, training=training, key=key)[
                0
            ]
        if kernels.is_traced(inputs, mask, initial_state, self._weights()):
            raise TypeError(
                f"{self.name}: a stateful layer cannot keep its states from inside jit, grad "
                "or vmap (the traced call cannot write them back). Thread them explicitly: "
                "result, states = layer.apply(x, states=states), starting from "
                "layer.states (eager) or None (zeros)"
            )
        self._require_batch(inputs)
        states = self._states if initial_state is None else initial_state
        result, final = self.apply(inputs, states=states, mask=mask, training=training, key=key)
        self._states = final
        return result

    def _require_batch(self, inputs: Any) -> None:
        if self._states is not None and hasattr(inputs, "shape") and len(inputs.shape) == 3:
            calls.stateful_batch(self.spec, inputs.shape[0], self._states[0].shape[0])

    def apply(
        self,
        inputs: jax.Array,
        *,
        states: Sequence[jax.Array] | jax.Array | None = None,
        mask: jax.Array | None = None,
        training: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[Any, list[jax.Array]]:
        """The pure form of a call: ``(result, final_states)``, starting from ``states``
        (zeros when None). Never reads or writes the carried states, so it is what a
        jitted step uses to thread a stateful layer's states."""
        spec = self.spec
        try:  # None: the default, which is off in JAX
            training = bool(calls.training(self.name, training))
        except TypeError as exc:
            raise TypeError(
                f"{exc} (under jit, pass it as a static argument: "
                "jax.jit(f, static_argnames='training'))"
            ) from None
        x = kernels.call_array(inputs, "inputs", self._dtype, self.name)
        if not self.built:
            if kernels.is_traced(x):
                self._require_built("a call inside a JAX transformation")
            self.build(x.shape)
        weights = self._differentiable_weights()
        call = calls.inputs(spec, x.shape, kernels.dtype_name(x.dtype),
                            expected_dtype=self._dtype, input_dim=self.input_dim)  # fmt: skip
        if mask is not None:
            mask = kernels.call_array(mask, "mask", None, self.name)
            calls.mask(spec, mask.shape, kernels.dtype_name(mask.dtype), call)
        initial = kernels.initial_states(spec, states, call, self._dtype, owner=self.name)
        mi = mr = None
        if training and (spec.dropout > 0 or spec.recurrent_dropout > 0):
            if key is None:
                raise ValueError(
                    f"{self.name}: training with dropout={spec.dropout}, recurrent_dropout="
                    f"{spec.recurrent_dropout} needs a random key: "
                    "layer(x, training=True, key=jax.random.key(...))"
                )
            key = _check_key(key, self.name)
            in_shape, rec_shape = self._dropout_mask_shapes(call.batch, call.input_dim)
            k_in, k_rec = jax.random.split(key)
            mi = self._sample_dropout(k_in, in_shape, spec.dropout)
            mr = self._sample_dropout(k_rec, rec_shape, spec.recurrent_dropout)
        output, final = kernels.run(spec, weights, x, mask, initial, mi, mr)
        result = [output, *final] if spec.return_state else output
        return result, final

    def _sample_dropout(self, key, shape, rate: float) -> jax.Array | None:
        if shape is None:
            return None
        keep = jax.random.bernoulli(key, 1.0 - rate, shape)
        return keep.astype(self._dtype) / jnp.asarray(1.0 - rate, self._dtype)

    # -- state --------------------------------------------------------------------------------
    @property
    def states(self) -> list[jax.Array] | None:
        """The carried states of a stateful layer (None before its first eager call)."""
        return None if self._states is None else list(self._states)

    def reset_states(self, states: Sequence[jax.Array] | jax.Array | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if states is None:
            self._check_reset(None, None, self._dtype)
            if self._states is not None:
                self._states = [jnp.zeros_like(s) for s in self._states]
            return
        arrays = [kernels.call_array(s, "reset_states(states)", self._dtype, self.name)
                  for s in calls.state_list(states)]  # fmt: skip
        self._check_reset([s.shape for s in arrays],
                          [kernels.dtype_name(s.dtype) for s in arrays], self._dtype)  # fmt: skip
        self._states = arrays

    # -- penalties and constraints ---------------------------------------------------------------
    def penalties(self, output: jax.Array | None = None) -> list[jax.Array]:
        """Differentiable penalties: the weight regularizers on the current weights, then
        the activity regularizer of ``output`` (the layer's main output, divided by its
        batch size) when given. Pure, so usable inside a jitted loss."""
        spec = self.spec
        self._require_built("penalties")
        out = self._weight_penalties(self._differentiable_weights(), JAX_OPS)
        if output is not None and spec.activity_regularizer is not None:
            output = kernels.as_array(output, f"{self.name}: penalties(output)")
            batch = max(int(output.shape[0]), 1) if output.ndim else 1
            out.append(regularizers.penalty(spec.activity_regularizer, output, JAX_OPS) / batch)
        return out

    def penalty(self, output: jax.Array | None = None) -> jax.Array:
        """The sum of :meth:`penalties` (zero when the layer has no regularizers)."""
        terms = self.penalties(output)
        return sum(terms, jnp.zeros((), self._dtype))

    def apply_constraints(self) -> Recurrent:
        """A new layer whose weights are projected onto their constraints (call it on the
        updated layer after an optimizer step). Pure: the layer itself is unchanged."""
        leaves = self._require_built("apply_constraints")
        for index, _, projected in self._constrained(leaves, JAX_OPS):
            leaves[index] = projected
        return self._with_leaves(leaves)

    def _with_leaves(self, weights: Sequence[Any]) -> Recurrent:
        leaves = tuple(weights) + (None,) * (len(_WEIGHTS) - len(weights))
        return type(self)._unflatten((self.spec, self._dtype), leaves)

    def __repr__(self) -> str:
        return LayerCore.__repr__(self)


class SimpleRNN(Recurrent):
    """Fully connected recurrent layer whose output is fed back as its state."""

    layer_name = "SimpleRNN"


class LSTM(Recurrent):
    """Long short-term memory layer (states ``[h, c]``)."""

    layer_name = "LSTM"


class GRU(Recurrent):
    """Gated recurrent unit layer (``reset_after`` selects the cuDNN-style variant)."""

    layer_name = "GRU"


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

    def __init__(self, layer: Recurrent, merge_mode: str | None = "concat", **keywords: Any):
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
            jax.tree_util.tree_structure(self, is_leaf=lambda n: isinstance(n, (Recurrent, RNN))),
            [self.forward_layer.apply_constraints(), self.backward_layer.apply_constraints()],
        )


jax.tree_util.register_pytree_with_keys(
    Bidirectional,
    Bidirectional._flatten_with_keys,
    Bidirectional._unflatten,
    Bidirectional._flatten,
)
Bidirectional._classes = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
from multirnn_jax.rnn import RNN  # noqa: E402

Bidirectional._rnn_class = RNN
