"""The NumPy engine's layers: plain Python objects holding NumPy weights.

Good for framework-free inference and as the oracle the other engines are checked
against; there is no autodiff here (the conformance suite differentiates it numerically).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from multirnn import calls, precision, regularizers
from multirnn.bidirectional import BidirectionalCore
from multirnn.layer import LayerCore
from multirnn.ops import NUMPY_OPS
from multirnn.reference import kernels

_names = itertools.count()


def framework_version() -> str:
    return np.__version__


class Recurrent(LayerCore):
    """Base class of the NumPy engine's layers (use SimpleRNN, LSTM or GRU)."""

    engine_name = "numpy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._init_core(args, kwargs)
        spec = self.spec
        #: the dtype of values (inputs, outputs, states); the weights': ``_weight_dtype``
        self.dtype: str = precision.values(spec.dtype) or kernels.DEFAULT_DTYPE
        self._weight_dtype = precision.numpy_dtype(precision.weights(spec.dtype) or self.dtype)
        self.name: str = spec.name or f"{self.layer_name.lower()}_{next(_names)}"
        self._weights: list[np.ndarray] | None = None
        self._states: list[np.ndarray] | None = None
        self._activity_loss: float | None = None
        seed = spec.seed if spec.seed is not None else int(np.random.randint(0, 2**31 - 1))
        self._dropout_rng = np.random.default_rng([seed, 0xD50])
        self._build_from_arguments()

    # -- building and weights -------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self._weights is not None

    @property
    def input_dim(self) -> int | None:
        """The feature size the layer was built for (None before it is built)."""
        return None if self._weights is None else self._weights[0].shape[0]

    def _create_weights(self, input_dim: int) -> None:
        self._weights = [w.astype(self._weight_dtype) for w in self._initial_weights(input_dim)]

    def _require_built(self, what: str) -> list[np.ndarray]:
        if self._weights is None:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                "build((batch, time, features)), call the layer once, or pass input_dim="
            )
        return self._weights

    @property
    def weights(self) -> list[np.ndarray]:
        """The live weight arrays in canonical order (modifying them modifies the layer)."""
        return list(self._require_built("weights"))

    @property
    def kernel(self) -> np.ndarray:
        return self._require_built("kernel")[0]

    @property
    def recurrent_kernel(self) -> np.ndarray:
        return self._require_built("recurrent_kernel")[1]

    @property
    def bias(self) -> np.ndarray | None:
        weights = self._require_built("bias")
        return weights[2] if self.spec.use_bias else None

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights in the canonical layout."""
        return [w.copy() for w in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (canonical layout); builds an unbuilt layer from the kernel."""
        arrays = self._check_weights(weights, self.input_dim)
        self._weights = [np.array(a, dtype=self._weight_dtype) for a in arrays]

    # -- calling --------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Any,
        *args: Any,
        mask: Any = None,
        initial_state: Any = None,
        training: bool | None = None,
    ):
        calls.keyword_only(self, args)
        spec = self.spec
        training = calls.training(self.name, training)
        x = kernels.host(self.name, inputs, "inputs", self.dtype)
        call = calls.inputs(
            spec, x.shape, x.dtype.name, expected_dtype=self.dtype, input_dim=self.input_dim
        )
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
        in_shape, rec_shape = self._dropout_mask_shapes(call.batch, call.input_dim)
        mi = mr = None
        if training:
            mi = self._sample_dropout(in_shape, spec.dropout)
            mr = self._sample_dropout(rec_shape, spec.recurrent_dropout)
        kernel, recurrent_kernel, *bias = self._weights
        output, states = kernels.scan(
            spec, kernel, recurrent_kernel, bias[0] if bias else None, x, mask, states, mi, mr
        )
        if spec.stateful:
            self._states = [s.copy() for s in states]
        if spec.activity_regularizer is not None:
            penalty = regularizers.penalty(spec.activity_regularizer, output, NUMPY_OPS)
            self._activity_loss = penalty / max(call.batch, 1)
        if spec.return_state:
            return [output, *states]
        return output

    def _sample_dropout(self, shape, rate: float) -> np.ndarray | None:
        if shape is None:
            return None
        keep = self._dropout_rng.random(shape) >= rate
        return keep.astype(precision.arithmetic(self.dtype)) / (1.0 - rate)

    # -- state ----------------------------------------------------------------------------
    @property
    def states(self) -> list[np.ndarray] | None:
        """The carried states of a stateful layer (None before its first call)."""
        return None if self._states is None else [s.copy() for s in self._states]

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if states is None:
            self._check_reset(None, None, self.dtype)
            if self._states is not None:
                self._states = [np.zeros_like(s) for s in self._states]
            return
        arrays = [
            kernels.host(self.name, s, "reset_states(states)", self.dtype)
            for s in calls.state_list(states)
        ]
        self._check_reset([a.shape for a in arrays], [a.dtype.name for a in arrays], self.dtype)
        self._states = [a.copy() for a in arrays]

    # -- penalties and constraints ----------------------------------------------------------
    @property
    def losses(self) -> list[float]:
        """Weight penalties (current weights) and the activity penalty of the last call."""
        out = []
        if self._weights is not None:
            out = [float(p) for p in self._weight_penalties(self._weights, NUMPY_OPS)]
        if self._activity_loss is not None:
            out.append(float(self._activity_loss))
        return out

    def apply_constraints(self) -> None:
        """Project the weights onto their constraints, in place (as after an update)."""
        weights = self._require_built("apply_constraints")
        for _, w, projected in self._constrained(weights, NUMPY_OPS):
            w[...] = projected


class SimpleRNN(Recurrent):
    """Fully connected recurrent layer whose output is fed back as its state."""

    layer_name = "SimpleRNN"


class LSTM(Recurrent):
    """Long short-term memory layer (states ``[h, c]``)."""

    layer_name = "LSTM"


class GRU(Recurrent):
    """Gated recurrent unit layer (``reset_after`` selects the cuDNN-style variant)."""

    layer_name = "GRU"


class _Ops:
    """What Bidirectional's merge needs, on NumPy arrays."""

    concat = staticmethod(lambda arrays, axis: np.concatenate(arrays, axis=axis))
    flip = staticmethod(lambda array, axis: np.flip(array, axis=axis).copy())


class Bidirectional(BidirectionalCore):
    """A recurrent layer run forward and backward over the inputs, outputs merged
    (Keras semantics; see ``multirnn.bidirectional``)."""

    engine_name = "numpy"
    _ops = _Ops

    def __init__(self, layer: Recurrent, merge_mode: str | None = "concat", **keywords: Any):
        self.forward_layer, self.backward_layer = self._init_core(layer, merge_mode, keywords)

    __call__ = BidirectionalCore._run


Bidirectional._classes = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}

from multirnn.reference.rnn import RNN  # noqa: E402 - users' cells, after the built-in layers

Bidirectional._rnn_class = RNN

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Recurrent", "SimpleRNN"]
