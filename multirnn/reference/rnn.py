"""``RNN(cell)`` on the NumPy engine: a user's cell run over a sequence, written plainly.

It is the oracle the other engines' ``RNN`` is checked against, so it shares none of their
loop code: the mask rule, ``go_backwards`` and the states are spelled out here once more.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from multirnn import calls, cells, precision, regularizers
from multirnn import constraints as constraint_module
from multirnn.ops import NUMPY_OPS
from multirnn.reference import kernels

_names = itertools.count()


def numpy_namespace() -> cells.Ops:
    """NumPy (2.0 and later follow the array API standard) with multirnn's activations."""
    if not hasattr(np, "__array_api_version__"):
        try:
            import array_api_compat.numpy as xp
        except ImportError as exc:
            raise ImportError(
                "RNN(cell) on NumPy < 2.0 needs array-api-compat: pip install array-api-compat"
            ) from exc
        return cells.namespace(xp, NUMPY_OPS, "numpy")
    return cells.namespace(np, NUMPY_OPS, "numpy")


class RNN(cells.RNNCore):
    """A :class:`multirnn.Cell` run over ``(batch, time, features)`` inputs with the
    ``Recurrent`` options, on NumPy arrays."""

    engine_name = "numpy"

    def __init__(self, cell: cells.Cell, **kwargs: Any) -> None:
        self.spec = cells.parse_rnn(cell, kwargs)
        self.cell = cell
        #: the dtype of values (inputs, outputs, states); the weights': ``_weight_dtype``
        self.dtype: str = precision.values(self.spec.dtype) or kernels.DEFAULT_DTYPE
        self._weight_dtype = precision.numpy_dtype(precision.weights(self.spec.dtype) or self.dtype)
        self.name: str = self.spec.name or f"rnn_{next(_names)}"
        self._weights: list[np.ndarray] | None = None
        self._names: list[str] = []
        self._states: list[np.ndarray] | None = None
        self._ops = numpy_namespace()
        self._build_from_arguments()

    # -- weights ------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self._weights is not None

    @property
    def input_dim(self) -> int | None:
        return None if self._weights is None else self._input_dim

    @property
    def weight_names(self) -> list[str]:
        return list(self._names)

    def _create_weights(self, input_dim: int) -> None:
        values = self._initial_weights(input_dim)
        self._names = [d.name for d in self.cell.declare(input_dim)]
        self._input_dim = input_dim
        self._weights = [v.astype(self._weight_dtype) for v in values]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in the order the cell declared them."""
        if self._weights is None:
            raise ValueError(f"{self.name}: get_weights needs the weights; call build() first")
        return [w.copy() for w in self._weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (the cell's declared order and shapes); builds from them."""
        weights = [np.asarray(w) for w in weights]
        input_dim = cells.check_weights(
            self.name, self.cell, weights, self._input_dim if self.built else self.spec.input_dim
        )
        decls = self.cell.declare(input_dim)
        self._names, self._input_dim = [d.name for d in decls], input_dim
        self._weights = [np.array(w, dtype=self._weight_dtype) for w in weights]

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, inputs: Any, *args: Any, mask: Any = None, initial_state: Any = None,
                 training: bool | None = None):  # fmt: skip
        calls.keyword_only(self, args)
        spec = self.spec
        calls.training(self.name, training)
        x = kernels.host(self.name, inputs, "inputs", self.dtype)
        call = calls.inputs(spec, x.shape, x.dtype.name, expected_dtype=self.dtype,
                            input_dim=self.input_dim)  # fmt: skip
        if mask is not None:
            mask = kernels.host(self.name, mask, "mask", None)
            calls.mask(spec, mask.shape, mask.dtype.name, call)
        if spec.stateful and self._states is not None:
            calls.stateful_batch(spec, call.batch, self._states[0].shape[0])
        if initial_state is not None:
            states = kernels.initial_states(spec, initial_state, call, self.dtype, self.name)
        elif spec.stateful and self._states is not None:
            states = self._states
        else:
            states = kernels.initial_states(spec, None, call, self.dtype)
        self.build(x.shape)
        output, states = self._scan(x, mask, list(states))
        if spec.stateful:
            self._states = [s.copy() for s in states]
        return [output, *states] if spec.return_state else output

    def _scan(self, x, mask, states):
        """The loop; a low-precision layer's in float32 (:mod:`multirnn.precision`)."""

        def loop(weights, x, states):
            return self._loop(weights, x, mask, states)

        return precision.widened(kernels._cast, self.dtype, loop, self._weights, x, states, ())

    def _loop(self, weights, x, mask, states):
        spec = self.spec
        w = dict(zip(self._names, weights))
        batch, dtype = x.shape[0], x.dtype

        def step(x_t, states, first):
            output, new = self.cell.step(self._ops, w, x_t, states)
            cells.check_step(spec, output, new, batch)
            return np.asarray(output, dtype), [np.asarray(s, dtype) for s in new]

        order = slice(None, None, -1) if spec.go_backwards else slice(None)
        xs = list(np.swapaxes(x, 0, 1))[order]
        keeps = None if mask is None else list(np.swapaxes(mask, 0, 1)[..., None])[order]
        outputs, states = cells.unrolled(self._ops, spec, step, xs, keeps, states)
        return (np.stack(outputs, axis=1) if spec.return_sequences else outputs[-1]), states

    # -- states, penalties, constraints, config ---------------------------------------------------
    @property
    def states(self) -> list[np.ndarray] | None:
        return None if self._states is None else [s.copy() for s in self._states]

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        if not self.spec.stateful:
            raise ValueError(f"{self.name}: reset_states() applies to stateful layers")
        if states is None:
            if self._states is not None:
                self._states = [np.zeros_like(s) for s in self._states]
            return
        arrays = [kernels.host(self.name, s, "reset_states(states)", self.dtype)
                  for s in calls.state_list(states)]  # fmt: skip
        calls.states(self.spec, [a.shape for a in arrays], [a.dtype.name for a in arrays],
                     batch=arrays[0].shape[0] if arrays and arrays[0].ndim == 2 else None,
                     expected_dtype=self.dtype, arg="reset_states(states)")  # fmt: skip
        self._states = [a.copy() for a in arrays]

    @property
    def losses(self) -> list[float]:
        if self._weights is None:
            return []
        decls = self.cell.declare(self._input_dim)
        return [float(regularizers.penalty(d.regularizer, w, NUMPY_OPS))
                for d, w in zip(decls, self._weights) if d.regularizer is not None]  # fmt: skip

    def apply_constraints(self) -> None:
        if self._weights is None:
            raise ValueError(f"{self.name}: apply_constraints needs the weights")
        decls = self.cell.declare(self._input_dim)
        for d, w in zip(decls, self._weights):
            if d.constraint is not None:
                w[...] = constraint_module.project(d.constraint, w, NUMPY_OPS)

    def __repr__(self) -> str:
        return f"RNN({self.cell!r}) [numpy]"
