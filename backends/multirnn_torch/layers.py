"""SimpleRNN, LSTM and GRU as ``torch.nn.Module``s.

Parameters are ``kernel``, ``recurrent_kernel`` and ``bias`` in the canonical (Keras) layout,
so ``state_dict``, optimizers, ``.to()``, ``torch.func`` and ``torch.compile`` see ordinary
parameters. Weights are created by ``build`` (or ``input_dim=``, or the first call, like
PyTorch's lazy modules): create the optimizer after they exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multirnn import calls, regularizers
from multirnn.bidirectional import BidirectionalCore
from multirnn.layer import LayerCore
from multirnn_torch import kernels
from multirnn_torch.ops import TORCH_OPS

_names = itertools.count()
_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def framework_version() -> str:
    return torch.__version__


def from_numpy(array: Any) -> torch.Tensor:
    """A tensor from a NumPy array (used by ``multirnn demo``)."""
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(array))


class Recurrent(LayerCore, nn.Module):
    """Base class of the PyTorch engine's layers (use SimpleRNN, LSTM or GRU).

    ``device`` places the weights at creation; ``dtype`` (a layer argument) defaults to
    ``torch.get_default_dtype()``. Dropout follows the module's mode (``train()`` /
    ``eval()``) unless ``training=`` is passed to the call.
    """

    engine_name = "torch"

    def __init__(self, *args: Any, device: torch.device | str | None = None, **kwargs: Any):
        nn.Module.__init__(self)
        self._init_core(args, kwargs)
        spec = self.spec
        self._dtype = getattr(torch, spec.dtype) if spec.dtype else torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else None
        self.name = spec.name or f"{self.layer_name.lower()}_{next(_names)}"
        for weight in _WEIGHTS:
            self.register_parameter(weight, None)
        # Carried states are plain attributes, not buffers: DistributedDataParallel
        # broadcasts rank 0's buffers before every forward, which would hand every rank the
        # states of rank 0's rows. ``_apply`` moves them with ``.to()`` like buffers.
        for name in spec.state_names:
            setattr(self, f"state_{name}", None)
        self._activity_loss: torch.Tensor | None = None
        self._weight_layouts = kernels.WeightLayouts()
        self._build_from_arguments()

    # -- building and weights -------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.kernel.dtype if self.kernel is not None else self._dtype

    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def input_dim(self) -> int | None:
        return None if self.kernel is None else self.kernel.shape[0]

    def _draw_seed(self) -> int:
        # Unseeded layers follow torch.manual_seed.
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def _create_weights(self, input_dim: int) -> None:
        self._create(self._initial_weights(input_dim))

    def _create(self, arrays) -> None:
        params = []
        for value in arrays:
            tensor = torch.as_tensor(value, dtype=self._dtype, device=self._device)
            # contiguous: NumPy's initializers may return transposed arrays (orthogonal),
            # and FSDP shards only contiguous parameters
            param = nn.Parameter(tensor.clone(memory_format=torch.contiguous_format))
            params.append(param.requires_grad_(self.spec.trainable))
        # the kernel last: `built` reads it, so another thread never sees half the weights
        for name, param in reversed(list(zip(self.spec.weight_names, params))):
            setattr(self, name, param)

    def _apply_trainable(self) -> None:
        # trainable=False is requires_grad=False: optimizers and autograd skip the weights
        if self.built:
            for param in self._weights():
                param.requires_grad_(self.spec.trainable)

    def _weights(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.spec.weight_names]

    def _require_built(self, what: str) -> list[torch.Tensor]:
        if not self.built:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                "build((batch, time, features)), call the layer once, or pass input_dim="
            )
        return self._weights()

    def get_weights(self) -> list:
        """Copies of the weights as NumPy arrays, in the canonical layout."""
        return [w.detach().cpu().numpy().copy() for w in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (canonical layout), keeping the parameter objects."""
        arrays = self._check_weights(
            [w.detach().cpu().numpy() if torch.is_tensor(w) else w for w in weights]
            if isinstance(weights, (list, tuple))
            else weights,
            self.input_dim,
        )
        if not self.built:
            self._create(arrays)
            return
        with torch.no_grad():
            for param, value in zip(self._weights(), arrays):
                param.copy_(torch.as_tensor(value, dtype=param.dtype, device=param.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "kernel"
        if not self.built and key in state_dict:  # a lazy layer takes its shape from the file
            self.build((None, None, state_dict[key].shape[0]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- calling --------------------------------------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        *args: Any,
        mask: torch.Tensor | None = None,
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None = None,
        training: bool | None = None,
    ):
        calls.keyword_only(self, args)
        spec = self.spec
        training = calls.training(self.name, training)
        if training is None:
            training = self.training
        kernel = self.kernel  # None until built; read once (a module attribute lookup)
        device = kernels.call_device(None if kernel is None else kernel.device, self._device,
                                     inputs)  # fmt: skip
        owner = f"{self.name}: "
        dtype = kernels.dtype_name(self._dtype if kernel is None else kernel.dtype)
        input_dim = None if kernel is None else kernel.shape[0]
        x, mask, call = kernels.call_inputs(spec, owner, inputs, mask, device, dtype, input_dim)
        carried = self._carried()
        if spec.stateful and carried is not None:
            calls.stateful_batch(spec, call.batch, carried[0].shape[0])
        if kernel is None:  # the inputs' size was checked against a built layer's above
            self.build(x.shape)
            kernel = self.kernel
        weights = self._weights()
        if initial_state is not None:
            states = kernels.initial_states(spec, initial_state, call, kernel, owner=owner)
        else:
            states = carried if spec.stateful else None
        mi = mr = None
        if training:
            in_shape, rec_shape = self._dropout_mask_shapes(call.batch, call.input_dim)
            mi = self._sample_dropout(in_shape, spec.dropout, kernel)
            mr = self._sample_dropout(rec_shape, spec.recurrent_dropout, kernel)
        output, final = kernels.run(spec, weights, x, mask, states, mi, mr, self._weight_layouts)
        if spec.stateful:  # carried without gradient, like truncated backpropagation
            for name, value in zip(spec.state_names, final):
                # plain attributes (see __init__): skip nn.Module's __setattr__ bookkeeping
                self.__dict__[f"state_{name}"] = value.detach() if value.requires_grad else value
        if spec.activity_regularizer is not None:
            penalty = regularizers.penalty(spec.activity_regularizer, output, TORCH_OPS)
            self._activity_loss = penalty / max(call.batch, 1)
        return [output, *final] if spec.return_state else output

    @staticmethod
    def _sample_dropout(shape, rate: float, like: torch.Tensor) -> torch.Tensor | None:
        if shape is None:
            return None
        keep = torch.rand(shape, device=like.device, dtype=like.dtype) >= rate
        return keep.to(like.dtype) / (1.0 - rate)

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... move the carried states too
        super()._apply(fn, recurse)
        for name in self.spec.state_names:
            value = getattr(self, f"state_{name}")
            if value is not None:
                setattr(self, f"state_{name}", fn(value))
        return self

    # -- state ----------------------------------------------------------------------------
    def _carried(self) -> list[torch.Tensor] | None:
        values = [getattr(self, f"state_{n}") for n in self.spec.state_names]
        return None if values[0] is None else values

    @property
    def states(self) -> list[torch.Tensor] | None:
        """A copy of the carried states of a stateful layer (None before its first call):
        writing into it (``.zero_()``, a NumPy view) must not change what the next call
        starts from."""
        values = self._carried()
        return None if values is None else [v.clone() for v in values]

    def reset_states(self, states: Sequence[torch.Tensor] | torch.Tensor | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        names = self.spec.state_names
        if states is None:
            self._check_reset(None, None, kernels.dtype_name(self.dtype))
            for name in names:
                value = getattr(self, f"state_{name}")
                if value is not None:
                    setattr(self, f"state_{name}", torch.zeros_like(value))
            return
        device = self.kernel.device if self.built else (self._device or torch.device("cpu"))
        dtype = kernels.dtype_name(self.dtype)
        states = [kernels._tensor(s, "reset_states(states)", device, dtype, f"{self.name}: ")
                  for s in calls.state_list(states)]  # fmt: skip
        self._check_reset([tuple(s.shape) for s in states],
                          [kernels.dtype_name(s.dtype) for s in states],
                          kernels.dtype_name(self.dtype))  # fmt: skip
        for name, value in zip(names, states):
            setattr(self, f"state_{name}", value.detach().clone())

    # -- penalties and constraints ----------------------------------------------------------
    @property
    def losses(self) -> list[torch.Tensor]:
        """Differentiable penalties: weight regularizers (current weights) and the activity
        regularizer of the last call. Add ``sum(layer.losses)`` to the training loss."""
        out = self._weight_penalties(self._weights(), TORCH_OPS) if self.built else []
        if self._activity_loss is not None:
            out.append(self._activity_loss)
        return out

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Project the weights onto their constraints in place; call after optimizer.step()."""
        weights = self._require_built("apply_constraints")
        for _, w, projected in self._constrained(weights, TORCH_OPS):
            w.copy_(projected)

    def extra_repr(self) -> str:
        return f"units={self.spec.units}, input_dim={self.input_dim}, dtype={self.dtype}"

    __repr__ = nn.Module.__repr__


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
    concat = staticmethod(lambda tensors, axis: torch.cat(tensors, dim=axis))
    flip = staticmethod(lambda tensor, axis: torch.flip(tensor, dims=[axis]))


class Bidirectional(BidirectionalCore, nn.Module):
    """A recurrent layer run forward and backward over the inputs, outputs merged (Keras
    semantics; see ``multirnn.bidirectional``). Both copies are submodules."""

    engine_name = "torch"
    _ops = _BidirectionalOps

    def __init__(self, layer: Recurrent, merge_mode: str | None = "concat", **keywords: Any):
        nn.Module.__init__(self)
        self.forward_layer, self.backward_layer = self._init_core(layer, merge_mode, keywords)

    def forward(self, inputs, *args, mask=None, initial_state=None, training=None):
        return self._run(inputs, *args, mask=mask, initial_state=initial_state,
                         training=training)  # fmt: skip

    __repr__ = nn.Module.__repr__


Bidirectional._classes = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
from multirnn_torch.rnn import RNN  # noqa: E402  (engine.RNN: users' cells)

Bidirectional._rnn_class = RNN
