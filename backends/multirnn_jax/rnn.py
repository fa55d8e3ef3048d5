"""``RNN(cell)`` on the JAX engine: the one layer kind, as a pytree.

The layer's children are its weights (a dict from the names the cell declared to arrays)
and its configuration, the cell included, is static auxiliary data; so a layer passes
straight through ``jax.jit``, ``jax.grad``, ``jax.vmap`` and optax. The loop is one
``lax.scan`` over time calling ``cell.step`` with ``jax.numpy`` (which follows the array
API standard) as its ``ops``; gradients are JAX's autodiff. The built-in layers
(``multirnn_jax.layers``) are this class with a built-in cell, whose fast paths (cuDNN,
the hoisted scan, the hand-written backward) replace the loop.

Calls are pure except for the carried states of a stateful layer, which only an eager call
can update (a traced call cannot write them back): inside transformations, thread states
explicitly with :meth:`RNN.apply`. A call is prepared by :func:`multirnn.pipeline.prepare`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.export
import jax.numpy as jnp
import numpy as np
from jax.tree_util import GetAttrKey

from multirnn import cells, constraints, pipeline, precision, regularizers
from multirnn_jax import kernels
from multirnn_jax.ops import JAX_ARRAYS, JAX_OPS, dtype_name

Array = jax.Array

_OPS = cells.namespace(jnp, JAX_OPS, "jax", kernels.NATIVE_ACTIVATIONS)


def default_dtype() -> str:
    """float64 when JAX's 64-bit mode is on, else float32 (JAX's own default)."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def flax_dtypes(owner: str, kwargs: dict[str, Any], param_dtype: Any) -> dict[str, Any]:
    """Flax's split, ``param_dtype=float32`` with ``dtype=bfloat16`` (or float16), as the
    mixed policy ``dtype="mixed_bfloat16"``; a ``param_dtype`` equal to ``dtype`` changes
    nothing. Any other pair has no multirnn form and is refused."""
    if param_dtype is None:
        return kwargs
    names = []
    for value in (param_dtype, kwargs.get("dtype") or default_dtype()):
        try:
            names.append(value if isinstance(value, str) else np.dtype(value).name)
        except TypeError:
            names.append(repr(value))
    param, dtype = names
    if param == dtype:
        return kwargs
    if param == "float32" and f"mixed_{dtype}" in precision.MIXED:
        return kwargs | {"dtype": f"mixed_{dtype}"}
    raise ValueError(
        f"{owner}: param_dtype={param!r} with dtype={dtype!r} has no multirnn form: "
        "param_dtype is the dtype itself, or float32 with dtype bfloat16 or float16 (the "
        "mixed policies 'mixed_bfloat16' and 'mixed_float16')"
    )


def check_key(key: Any, owner: str) -> jax.Array:
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


class _Static:
    """The spec as hashable static data: two layers are alike when their cells have the
    same type and config and their options are equal (cells themselves compare by
    identity), so equal layers share a tree structure and a compiled function."""

    __slots__ = ("_key", "spec")

    def __init__(self, spec: cells.RNNSpec) -> None:
        self.spec = spec
        options = tuple((k, getattr(spec, k)) for k in cells.RNN_OPTIONS)
        self._key = (type(spec.cell), repr(spec.cell.get_config()), options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"_Static({self.spec.layer})"


@partial(jax.jit, static_argnums=(0, 1))
def _scan(static: _Static, dtype: str, w, x, mask, states):
    """The loop, compiled once per cell configuration, options, dtype and shapes: eager
    calls reuse it (rather than tracing the step again every call), and inside a user's
    ``jit`` it is inlined."""
    spec = static.spec
    cell = spec.cell
    batch = x.shape[0]
    xs = jnp.swapaxes(x, 0, 1)  # time-major
    ms = None if mask is None else jnp.swapaxes(mask, 0, 1)[:, :, None]
    if spec.go_backwards:  # processed from the last step, outputs in processing order
        xs = jnp.flip(xs, axis=0)
        ms = None if ms is None else jnp.flip(ms, axis=0)
    zeros = jnp.zeros((batch, spec.units), dtype)

    def step(carry, inputs):
        states, previous = carry
        x_t, keep = inputs
        output, new = cell.step(_OPS, w, x_t, list(states))
        cells.check_step(spec, output, new, batch)
        output = jnp.asarray(output).astype(dtype)
        new = [jnp.asarray(s).astype(dtype) for s in new]
        if keep is not None:
            output, new = cells.masked(_OPS, spec, keep, output, new, states, previous)
        return (new, output), (output if spec.return_sequences else None)

    (final, last), outputs = jax.lax.scan(
        step, (list(states), zeros), (xs, ms), unroll=bool(spec.unroll)
    )
    if spec.return_sequences:
        return jnp.swapaxes(outputs, 0, 1), final
    return last, final


class RNN(cells.RNNCore):
    """A :class:`multirnn.Cell` run over ``(batch, time, features)`` inputs with the
    ``Recurrent`` options, as a JAX pytree.

    ``key`` (a ``jax.random`` key) seeds the initial weights when no ``seed=`` is given;
    with neither, the seed is drawn from NumPy's global generator. ``dtype`` defaults to
    JAX's default float type (float64 only in 64-bit mode); Flax's ``param_dtype=float32``
    with ``dtype=bfloat16`` is the mixed policy ``dtype="mixed_bfloat16"``. A stateful
    layer keeps its states from eager calls only; inside transformations use :meth:`apply`.
    """

    engine_name = "jax"
    _arrays = JAX_ARRAYS
    _dropout_args: tuple[str, ...] = ()
    _unbuilt_hint = (
        "call the layer once eagerly, or pass input_dim= (a layer must be built before it "
        "enters jit, grad or vmap)"
    )
    _training_hint = (" (under jit, pass it as a static argument: "
                      "jax.jit(f, static_argnames='training'))")  # fmt: skip

    def __init__(self, cell: cells.Cell, *, key: jax.Array | None = None,
                 param_dtype: Any = None, **kwargs: Any):  # fmt: skip
        self.spec = cells.parse_rnn(cell, flax_dtypes("RNN", kwargs, param_dtype))
        self._static = _Static(self.spec)
        self._w: dict[str, Array] | None = None
        self._names: tuple[str, ...] = ()
        self._input_dim: int | None = None
        self._setup(key, f"RNN({self.spec.layer})")
        self._build_from_arguments()

    def _setup(self, key: jax.Array | None, owner: str) -> None:
        """What both layer kinds set up after their spec: dtype, seed key, name, states."""
        dtype = precision.values(self.spec.dtype) or default_dtype()
        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                f"{owner}: dtype='float64' needs JAX's 64-bit mode; call "
                "jax.config.update('jax_enable_x64', True) first (or set JAX_ENABLE_X64=1)"
            )
        self._dtype = dtype
        self._key = None if key is None else check_key(key, owner)
        # No generated names: the configuration is the pytree's static data, and two layers
        # built alike must have equal tree structures (to stack an ensemble, to share a
        # compiled function).
        self.name = self._default_name()
        self._states: list[Array] | None = None

    def _default_name(self) -> str:
        return self.spec.name or "rnn"

    # -- pytree protocol --------------------------------------------------------------------
    # An unbuilt layer has no leaves: grad would return an empty gradient and training
    # would silently do nothing, so flattening it (jit, grad, vmap, tree utilities) is an
    # error that says to build it first.

    def _aux(self):
        return (self._static, self._dtype, self._names, self._input_dim)

    def _children(self):
        return ((GetAttrKey("weights"), self._w),)

    def _check_flattenable(self) -> None:
        # A layer the user made and has not built has no leaves: grad would return an empty
        # gradient and training would silently do nothing. A layer that a tree utility made
        # (_unflatten: jax.tree.map(lambda _: None, layer), an in_axes prefix, a partition)
        # flattens whatever its leaves hold, for the next transformation.
        if not getattr(self, "_from_tree", False):
            self._require_built(
                "entering jit, grad, vmap or a tree utility (flattening it as a pytree)"
            )

    def _flatten_with_keys(self):
        self._check_flattenable()
        return self._children(), self._aux()

    def _flatten(self):
        self._check_flattenable()
        return tuple(child for _, child in self._children()), self._aux()

    @classmethod
    def _unflatten(cls, aux, children):
        # Leaves may be anything a tree utility puts there (tracers, shardings, None), so
        # nothing is validated here; carried states belong to the eager object only.
        layer = object.__new__(cls)
        layer._restore(aux, children)
        layer.name = layer._default_name()
        layer._key, layer._states, layer._from_tree = None, None, True
        return layer

    def _restore(self, aux, children) -> None:
        self._static, self._dtype, self._names, self._input_dim = aux
        self.spec = self._static.spec
        (self._w,) = children

    def _with(self, weights: Sequence[Any]) -> RNN:
        """A new layer of these weights (declared order); the layer itself is unchanged."""
        return type(self)._unflatten(self._aux(), (dict(zip(self._names, weights)),))

    # -- weights ----------------------------------------------------------------------------
    @property
    def cell(self) -> cells.Cell:
        return self.spec.cell

    @property
    def dtype(self) -> str:
        """The dtype the layer computes in ("float32" or "float64")."""
        return self._dtype

    @property
    def built(self) -> bool:
        return self._w is not None

    @property
    def input_dim(self) -> int | None:
        return None if self._w is None else self._input_dim

    @property
    def weight_names(self) -> list[str]:
        """The weights' names, in the order the cell declared them."""
        return list(self._names)

    def _weights(self) -> list[Array]:
        return [self._w[n] for n in self._names]

    def _differentiable_weights(self) -> list[Array]:
        """The weights as calls and penalties use them (a frozen built-in layer's pass no
        gradient back)."""
        return self._weights()

    def _declared(self) -> tuple[cells.WeightDecl, ...]:
        return self.cell.declare(self.input_dim)

    def _draw_seed(self) -> int:
        if self._key is not None:
            return int(jax.random.randint(self._key, (), 0, 2**31 - 1))
        return int(np.random.randint(0, 2**31 - 1))

    def _create_weights(self, input_dim: int) -> None:
        """The cell's initial values from the layer's seed (the NumPy engine's, for the
        same seed)."""
        names = tuple(d.name for d in self.cell.declare(input_dim))
        self._set(names, input_dim, self._initial_weights(input_dim))

    @property
    def _weight_dtype(self) -> str:
        """float32 under a mixed policy (Flax's ``param_dtype``), else the layer's dtype."""
        return precision.weights(self.spec.dtype) or self._dtype

    def _set(self, names, input_dim, values) -> None:
        self._names, self._input_dim = tuple(names), int(input_dim)
        dtype = self._weight_dtype
        self._w = {n: jnp.asarray(np.asarray(v), dtype=dtype) for n, v in zip(names, values)}

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (the cell's declared order and shapes) of this layer object,
        eagerly; builds from them."""
        try:
            arrays = [np.asarray(w) for w in weights]
        except TypeError:
            arrays = []
        input_dim = cells.check_weights(
            self.name, self.cell, arrays, self._input_dim if self.built else self.spec.input_dim
        )
        self._set([d.name for d in self.cell.declare(input_dim)], input_dim, arrays)

    def replace(self, **weights: Array) -> RNN:
        """A new layer with some weights replaced (by their declared names); works under
        transformations. Shapes and dtypes are checked."""
        current = self._require_built("replace")
        names = self.weight_names
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(
                f"{self.name}: replace() takes {', '.join(names)}; got {', '.join(sorted(unknown))}"
            )
        new = dict(zip(names, current))
        for decl in self._declared():
            if decl.name not in weights:
                continue
            value = JAX_ARRAYS.weight(weights[decl.name], f"{self.name}: replace({decl.name}=)")
            if tuple(value.shape) != decl.shape:
                raise ValueError(
                    f"{self.name}: weight {decl.name!r} must have shape {decl.shape}, got "
                    f"{tuple(value.shape)}"
                )
            if dtype_name(value.dtype) != self._weight_dtype:
                raise TypeError(
                    f"{self.name}: replacement weight {decl.name!r} must have dtype "
                    f"{self._weight_dtype}, got {dtype_name(value.dtype)}"
                )
            new[decl.name] = value
        return self._with([new[n] for n in names])

    # -- calling ----------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Array,
        *args: Any,
        mask: Array | None = None,
        initial_state: Sequence[Array] | Array | None = None,
        training: bool | None = None,
        **dropout_args: Any,
    ):
        """Run the layer. A stateful layer starts from its carried states (unless
        ``initial_state`` is given) and keeps its final states, eagerly only."""
        stateful = self.spec.stateful
        if stateful and kernels.is_traced(inputs, mask, initial_state,
                                          self._weights() if self.built else None):  # fmt: skip
            raise TypeError(
                f"{self.name}: a stateful layer cannot keep its states from inside jit, grad "
                "or vmap (the traced call cannot write them back). Thread them explicitly: "
                "result, states = layer.apply(x, states=states), starting from "
                "layer.states (eager) or None (zeros)"
            )
        result, final = self._call(inputs, args, mask=mask, initial_state=initial_state,
                                   training=training, carried=self._states if stateful else None,
                                   **dropout_args)  # fmt: skip
        if stateful:
            self._states = final
        return result

    def apply(
        self,
        inputs: Array,
        *,
        states: Sequence[Array] | Array | None = None,
        mask: Array | None = None,
        training: bool | None = None,
        **dropout_args: Any,
    ) -> tuple[Any, list[Array]]:
        """The pure form of a call: ``(result, final_states)``, starting from ``states``
        (zeros when None). Never reads or writes the carried states, so it is what a
        jitted step uses to thread a stateful layer's states."""
        return self._call(inputs, (), mask=mask, initial_state=states, training=training,
                          **dropout_args)  # fmt: skip

    def _call(self, inputs, args, *, mask, initial_state, training, carried=None,
              **dropout_args) -> tuple[Any, list[Array]]:  # fmt: skip
        for name in dropout_args:  # the built-in layers' key=; a cell draws its own
            if name not in self._dropout_args:
                raise TypeError(
                    f"{type(self).__name__}.__call__() got an unexpected keyword argument {name!r}"
                )
        call = pipeline.prepare(self, inputs, args, mask=mask, initial_state=initial_state,
                                training=training, carried=carried, **dropout_args)  # fmt: skip
        output, final = pipeline.run(self, call)
        return ([output, *final] if self.spec.return_state else output), final

    def _default_training(self) -> bool:
        return False

    def _place(self, inputs: Any) -> None:
        return None

    def _compute_dtype(self) -> str:
        return self._dtype

    def _build_on(self, x: Array, place: None) -> None:
        if kernels.is_traced(x):
            self._require_built("a call inside a JAX transformation")
        self.build(x.shape)

    def _call_weights(self) -> list[Array]:
        return self._differentiable_weights()

    def _run(self, call: pipeline.Call, weights: list[Array]) -> tuple[Array, list[Array]]:
        dtype = dtype_name(call.x.dtype)  # float32 for a low-precision layer
        states = call.states
        if states is None:
            states = [jnp.zeros((call.x.shape[0], self.spec.units), dtype)
                      for _ in self.spec.state_names]  # fmt: skip
        w = dict(zip(self._names, weights))
        return _scan(self._static, dtype, w, call.x, call.mask, states)

    # -- state --------------------------------------------------------------------------------
    @property
    def states(self) -> list[Array] | None:
        """The carried states of a stateful layer (None before its first eager call)."""
        return None if self._states is None else list(self._states)

    def reset_states(self, states: Sequence[Array] | Array | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        values = pipeline.reset_values(self, states)
        if values is not None:
            self._states = values
        elif self._states is not None:
            self._states = [jnp.zeros_like(s) for s in self._states]

    # -- penalties and constraints ---------------------------------------------------------------
    def penalties(self) -> list[Array]:
        """The declared weights' regularizer penalties on the current weights, in declared
        order. Pure, so usable inside a jitted loss."""
        self._require_built("penalties")
        weights = self._differentiable_weights()
        pairs = zip(self._declared(), weights)
        return [regularizers.penalty(d.regularizer, w, JAX_OPS)
                for d, w in pairs if d.regularizer is not None]  # fmt: skip

    def penalty(self) -> Array:
        """The sum of :meth:`penalties` (zero when no weight has a regularizer)."""
        return sum(self.penalties(), jnp.zeros((), self._dtype))

    @property
    def losses(self) -> list[Array]:
        """The weight penalties (empty before the layer is built), as the NumPy RNN's."""
        return [] if not self.built else self.penalties()

    def apply_constraints(self) -> RNN:
        """A new layer whose weights are projected onto their constraints (call it on the
        updated layer after an optimizer step). Pure: the layer itself is unchanged."""
        weights = self._require_built("apply_constraints")
        for index, decl in enumerate(self._declared()):
            if decl.constraint is not None:
                weights[index] = constraints.project(decl.constraint, weights[index], JAX_OPS)
        return self._with(weights)

    def __repr__(self) -> str:
        return f"RNN({self.cell!r}) [jax]"

    # -- jax.export: the static data as bytes, so an exported program that takes the layer
    # as an argument can be serialized and called again in another process --------------
    @staticmethod
    def _aux_to_json(aux) -> dict:
        static, dtype, names, input_dim = aux
        return {"config": static.spec.to_config(), "dtype": dtype, "names": list(names),
                "input_dim": input_dim}  # fmt: skip

    @staticmethod
    def _aux_from_json(data: dict):
        config = dict(data["config"])
        spec = cells.parse_rnn(cells.cell_from_config(config.pop("cell")), config)
        return _Static(spec), data["dtype"], tuple(data["names"]), data["input_dim"]


def register(cls: type) -> None:
    """``cls`` as a pytree, whose static data ``jax.export`` can serialize (as JSON: an
    ``RNN`` of an unregistered cell, or a layer with a Python callable, cannot be)."""
    jax.tree_util.register_pytree_with_keys(cls, cls._flatten_with_keys, cls._unflatten,
                                            cls._flatten)  # fmt: skip
    jax.export.register_pytree_node_serialization(
        cls,
        serialized_name=f"{cls.__module__}.{cls.__qualname__}",
        serialize_auxdata=lambda aux: json.dumps(cls._aux_to_json(aux)).encode(),
        deserialize_auxdata=lambda data: cls._aux_from_json(json.loads(data)),
    )


register(RNN)
