"""``RNN(cell)`` on the JAX engine: a user's cell run over a sequence, as a pytree.

Like the built-in layers (``multirnn_jax.layers``), the layer's children are its weights
(a dict from the names the cell declared to arrays) and its configuration, the cell
included, is static auxiliary data; so a layer passes straight through ``jax.jit``,
``jax.grad``, ``jax.vmap`` and optax. The loop is one ``lax.scan`` over time calling
``cell.step`` with ``jax.numpy`` (which follows the array API standard) as its ``ops``;
gradients are JAX's autodiff. The semantics are the NumPy engine's ``RNN``'s (the oracle,
``multirnn.reference.rnn``): the mask rule, ``go_backwards``, states and ``stateful``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from multirnn_jax import kernels
from multirnn_jax._pytree import check_flattenable, unbuilt
from multirnn_jax.ops import JAX_OPS

import jax
import jax.numpy as jnp
from jax.tree_util import GetAttrKey
from multirnn import calls, cells, regularizers
from multirnn import constraints as constraint_module
from multirnn.layer import _BUILD_LOCK, LayerCore

Array = jax.Array

_OPS = cells.namespace(jnp, JAX_OPS, "jax", kernels.NATIVE_ACTIVATIONS)


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
            new = [jnp.where(keep, n, s) for n, s in zip(new, states)]
            output = jnp.where(keep, output, zeros if spec.zero_output_for_mask else previous)
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
    JAX's default float type (float64 only in 64-bit mode). A stateful layer keeps its
    states from eager calls only; inside transformations use :meth:`apply`.
    """

    engine_name = "jax"

    def __init__(self, cell: cells.Cell, *, key: jax.Array | None = None, **kwargs: Any):
        # layers.py imports this module at its end: take its helpers at call time
        from multirnn_jax.layers import _check_key, default_dtype

        spec = cells.parse_rnn(cell, kwargs)
        dtype = spec.dtype or default_dtype()
        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError(
                f"RNN({spec.layer}): dtype='float64' needs JAX's 64-bit mode; call "
                "jax.config.update('jax_enable_x64', True) first (or set JAX_ENABLE_X64=1)"
            )
        self._static = _Static(spec)
        self._dtype = dtype
        self._key = None if key is None else _check_key(key, f"RNN({spec.layer})")
        # no generated names: equal layers must have equal tree structures
        self.name = spec.name or "rnn"
        self._w: dict[str, Array] | None = None
        self._names: tuple[str, ...] = ()
        self._input_dim: int | None = None
        self._states: list[Array] | None = None
        self._build_from_arguments()

    @property
    def spec(self) -> cells.RNNSpec:
        return self._static.spec

    @property
    def cell(self) -> cells.Cell:
        return self._static.spec.cell

    # -- pytree protocol --------------------------------------------------------------------
    def _aux(self):
        return (self._static, self._dtype, self._names, self._input_dim)

    def _flatten_with_keys(self):
        check_flattenable(self)
        return ((GetAttrKey("weights"), self._w),), self._aux()

    def _flatten(self):
        check_flattenable(self)
        return (self._w,), self._aux()

    @classmethod
    def _unflatten(cls, aux, children):
        # leaves may be anything a tree utility puts there: nothing is validated here, and
        # carried states belong to the eager object only
        layer = object.__new__(cls)
        layer._static, layer._dtype, layer._names, layer._input_dim = aux
        layer.name = layer._static.spec.name or "rnn"
        (layer._w,) = children
        layer._key, layer._states, layer._from_tree = None, None, True
        return layer

    # -- weights ----------------------------------------------------------------------------
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

    def _layer_seed(self) -> int:
        if self.spec.seed is not None:
            return self.spec.seed
        if self._key is not None:
            return int(jax.random.randint(self._key, (), 0, 2**31 - 1))
        return int(np.random.randint(0, 2**31 - 1))

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create the weights for inputs of shape ``(batch, time, features)``: the cell's
        initial values from the layer's seed (the NumPy engine's, for the same seed)."""
        input_dim = LayerCore._input_dim_from_shape("RNN", input_shape)
        with _BUILD_LOCK:
            if self._w is None:
                values = self.cell.initial_weights(input_dim, self._layer_seed())
                names = tuple(d.name for d in self.cell.declare(input_dim))
                self._set(names, input_dim, values)
                return
        if input_dim != self._input_dim:
            raise ValueError(
                f"{self.name}: already built for input_dim={self._input_dim}, cannot rebuild "
                f"for {input_dim}"
            )

    def _set(self, names, input_dim, values) -> None:
        self._names, self._input_dim = tuple(names), int(input_dim)
        self._w = {n: jnp.asarray(np.asarray(v), dtype=self._dtype) for n, v in zip(names, values)}

    def _require_built(self, what: str) -> dict[str, Array]:
        if self._w is None:
            raise unbuilt(self.name, what)
        return self._w

    def _ordered(self, what: str) -> list[Array]:
        w = self._require_built(what)
        return [w[n] for n in self._names]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in the order the cell declared them."""
        return [np.array(w) for w in self._ordered("get_weights")]

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
        """A new layer with some weights replaced (by the names the cell declared); works
        under transformations. Shapes and dtypes are checked."""
        current = self._require_built("replace")
        unknown = set(weights) - set(self._names)
        if unknown:
            raise ValueError(
                f"{self.name}: replace() takes {', '.join(self._names)}; got "
                f"{', '.join(sorted(unknown))}"
            )
        decls = {d.name: d for d in self.cell.declare(self._input_dim)}
        new = dict(current)
        for name, value in weights.items():
            value = kernels.as_array(value, f"{self.name}: replace({name}=)")
            if tuple(value.shape) != decls[name].shape:
                raise ValueError(
                    f"{self.name}: weight {name!r} must have shape {decls[name].shape}, got "
                    f"{tuple(value.shape)}"
                )
            if kernels.dtype_name(value.dtype) != self._dtype:
                raise TypeError(
                    f"{self.name}: replacement weight {name!r} must have dtype {self._dtype}, "
                    f"got {kernels.dtype_name(value.dtype)}"
                )
            new[name] = value
        return self._with_weights(new)

    def _with_weights(self, weights: dict[str, Any]) -> RNN:
        return type(self)._unflatten(self._aux(), (weights,))

    # -- calling ----------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Array,
        *args: Any,
        mask: Array | None = None,
        initial_state: Sequence[Array] | Array | None = None,
        training: bool | None = None,
    ):
        """Run the layer. A stateful layer starts from its carried states (unless
        ``initial_state`` is given) and keeps its final states, eagerly only."""
        calls.keyword_only(self, args)
        inputs = kernels.call_array(inputs, "inputs", self._dtype, self.name)
        if not self.spec.stateful:
            return self.apply(inputs, states=initial_state, mask=mask, training=training)[0]
        weights = None if self._w is None else list(self._w.values())
        if kernels.is_traced(inputs, mask, initial_state, weights):
            raise TypeError(
                f"{self.name}: a stateful layer cannot keep its states from inside jit, grad "
                "or vmap (the traced call cannot write them back). Thread them explicitly: "
                "result, states = layer.apply(x, states=states), starting from "
                "layer.states (eager) or None (zeros)"
            )
        if self._states is not None and len(inputs.shape) == 3:
            calls.stateful_batch(self.spec, inputs.shape[0], self._states[0].shape[0])
        states = self._states if initial_state is None else initial_state
        result, final = self.apply(inputs, states=states, mask=mask, training=training)
        self._states = final
        return result

    def apply(
        self,
        inputs: Array,
        *,
        states: Sequence[Array] | Array | None = None,
        mask: Array | None = None,
        training: bool | None = None,
    ) -> tuple[Any, list[Array]]:
        """The pure form of a call: ``(result, final_states)``, starting from ``states``
        (zeros when None). Never reads or writes the carried states."""
        spec = self.spec
        if training is not None and not isinstance(training, (bool, np.bool_)):
            raise TypeError(
                f"{self.name}: training must be True, False or None, got {training!r} (under "
                "jit, pass it as a static argument: jax.jit(f, static_argnames='training'))"
            )
        x = kernels.call_array(inputs, "inputs", self._dtype, self.name)
        if not self.built:
            if kernels.is_traced(x):
                self._require_built("a call inside a JAX transformation")
            if len(x.shape) == 3:
                self.build(x.shape)
        call = calls.inputs(spec, x.shape, kernels.dtype_name(x.dtype),
                            expected_dtype=self._dtype, input_dim=self.input_dim)  # fmt: skip
        if mask is not None:
            mask = kernels.call_array(mask, "mask", None, self.name)
            calls.mask(spec, mask.shape, kernels.dtype_name(mask.dtype), call)
        initial = kernels.initial_states(spec, states, call, self._dtype, owner=self.name)
        if initial is None:
            initial = [jnp.zeros((call.batch, spec.units), self._dtype) for _ in spec.state_names]
        output, final = self._scan(dict(self._require_built("a call")), x, mask, initial)
        result = [output, *final] if spec.return_state else output
        return result, final

    def _scan(self, w, x, mask, states):
        return _scan(self._static, self._dtype, w, x, mask, states)

    # -- state --------------------------------------------------------------------------------
    @property
    def states(self) -> list[Array] | None:
        """The carried states of a stateful layer (None before its first eager call)."""
        return None if self._states is None else list(self._states)

    def reset_states(self, states: Sequence[Array] | Array | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if not self.spec.stateful:
            raise ValueError(f"{self.name}: reset_states() applies to stateful layers")
        if states is None:
            if self._states is not None:
                self._states = [jnp.zeros_like(s) for s in self._states]
            return
        arrays = [kernels.call_array(s, "reset_states(states)", self._dtype, self.name)
                  for s in calls.state_list(states)]  # fmt: skip
        calls.state_count(self.spec, len(arrays), arg="reset_states(states)")
        calls.states(self.spec, [a.shape for a in arrays],
                     [kernels.dtype_name(a.dtype) for a in arrays],
                     batch=arrays[0].shape[0] if len(arrays[0].shape) == 2 else None,
                     expected_dtype=self._dtype, arg="reset_states(states)")  # fmt: skip
        self._states = arrays

    # -- penalties and constraints ---------------------------------------------------------------
    def penalties(self) -> list[Array]:
        """The declared weights' regularizer penalties on the current weights, in declared
        order. Pure, so usable inside a jitted loss."""
        w = self._require_built("penalties")
        decls = self.cell.declare(self._input_dim)
        return [regularizers.penalty(d.regularizer, w[d.name], JAX_OPS)
                for d in decls if d.regularizer is not None]  # fmt: skip

    def penalty(self) -> Array:
        """The sum of :meth:`penalties` (zero when no weight has a regularizer)."""
        return sum(self.penalties(), jnp.zeros((), self._dtype))

    @property
    def losses(self) -> list[Array]:
        """The weight penalties (empty before the layer is built), as the NumPy RNN's."""
        return [] if self._w is None else self.penalties()

    def apply_constraints(self) -> RNN:
        """A new layer whose weights are projected onto their constraints (call it on the
        updated layer after an optimizer step). Pure: the layer itself is unchanged."""
        w = dict(self._require_built("apply_constraints"))
        for d in self.cell.declare(self._input_dim):
            if d.constraint is not None:
                w[d.name] = constraint_module.project(d.constraint, w[d.name], JAX_OPS)
        return self._with_weights(w)

    # -- config -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"RNN({self.cell!r}) [jax]"


jax.tree_util.register_pytree_with_keys(RNN, RNN._flatten_with_keys, RNN._unflatten, RNN._flatten)
