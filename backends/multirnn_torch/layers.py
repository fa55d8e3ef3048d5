"""SimpleRNN, LSTM and GRU as ``torch.nn.Module``s: the engine's ``RNN`` with a built-in cell.

Parameters are ``kernel``, ``recurrent_kernel`` and ``bias`` in the canonical (Keras) layout,
so ``state_dict``, optimizers, ``.to()``, ``torch.func`` and ``torch.compile`` see ordinary
parameters. Weights are created by ``build`` (or ``input_dim=``, or the first call, like
PyTorch's lazy modules): create the optimizer after they exist.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
from torch import nn

from multirnn import builtin_cells, cells, regularizers
from multirnn.bidirectional import BidirectionalCore
from multirnn.layer import LayerCore, builtin_classes
from multirnn_torch import kernels
from multirnn_torch.ops import TORCH_OPS
from multirnn_torch.rnn import RNN

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Recurrent", "SimpleRNN"]

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def framework_version() -> str:
    return torch.__version__


def from_numpy(array: Any) -> torch.Tensor:
    """A tensor from a NumPy array (used by ``multirnn demo``)."""
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(array))


class Recurrent(LayerCore, RNN):
    """Base class of the PyTorch engine's built-in layers (use SimpleRNN, LSTM or GRU):
    ``RNN`` with the built-in cell, whose weights are the module's own parameters and whose
    calls take the cell's fast paths (``multirnn_torch.kernels.run``).

    ``device`` places the weights at creation; ``dtype`` (a layer argument) defaults to
    ``torch.get_default_dtype()``. Dropout follows the module's mode (``train()`` /
    ``eval()``) unless ``training=`` is passed to the call.
    """

    _counter = itertools.count()

    def __init__(self, *args: Any, device: torch.device | str | None = None, **kwargs: Any):
        nn.Module.__init__(self)
        self._init_core(args, kwargs)
        for weight in _WEIGHTS:
            self.register_parameter(weight, None)
        self._setup(device)
        self._activity_loss: torch.Tensor | None = None
        self._weight_layouts = kernels.WeightLayouts()
        self._build_from_arguments()

    @property
    def _default_name(self) -> str:
        return self.layer_name.lower()

    @property
    def cell(self) -> cells.Cell:
        """The built-in cell this layer runs (``RNN(cell)`` computes the same function)."""
        return builtin_cells.cell_of(self.spec)

    # -- weights: the module's own parameters, in the canonical layout ---------------------------
    def _param(self, name: str) -> torch.Tensor | None:
        # read past nn.Module.__getattr__ (every call asks several times); a parametrized
        # or weight-normed weight is no longer in _parameters: its attribute computes it
        params = self._parameters
        return params[name] if name in params else getattr(self, name)

    @property
    def built(self) -> bool:
        return self._param("kernel") is not None

    @property
    def input_dim(self) -> int | None:
        kernel = self._param("kernel")
        return None if kernel is None else kernel.shape[0]

    @property
    def weight_names(self) -> list[str]:
        return list(self.spec.weight_names)

    def _weights(self) -> list[torch.Tensor]:
        return [self._param(name) for name in self.spec.weight_names]

    def _store(self, input_dim: int, params: list[nn.Parameter]) -> None:
        self._decls = self.cell.declare(input_dim)
        # the kernel last: `built` reads it, so another thread never sees half the weights
        for name, param in reversed(list(zip(self.spec.weight_names, params))):
            setattr(self, name, param)

    def _checked_weights(self, weights: Any) -> tuple[int, list]:
        arrays = self._check_weights(weights, self.input_dim)
        return arrays[0].shape[0], arrays

    def _apply_trainable(self) -> None:
        # trainable=False is requires_grad=False: optimizers and autograd skip the weights
        if self.built:
            for param in self._weights():
                param.requires_grad_(self.spec.trainable)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "kernel"
        if not self.built and key in state_dict:  # a lazy layer takes its shape from the file
            self.build((None, None, state_dict[key].shape[0]))
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)

    # -- calling: the cell's fast paths --------------------------------------------------------
    def _build_on(self, x: torch.Tensor, place: torch.device) -> None:
        self.build(tuple(x.shape))

    def _run(self, call, weights):
        spec = self.spec
        # the layouts are kept for the layer's own weights (not a low-precision call's
        # float32 copies, made afresh every call)
        own = weights[0] is self._param("kernel")
        output, final = kernels.run(spec, weights, call.x, call.mask, call.states,
                                    call.input_dropout, call.recurrent_dropout,
                                    self._weight_layouts if own else None)  # fmt: skip
        if spec.activity_regularizer is not None:
            penalty = regularizers.penalty(spec.activity_regularizer, output, TORCH_OPS)
            self._activity_loss = penalty / max(call.shape.batch, 1)
        return output, final

    # -- carried states: the attributes state_h (state_c) ----------------------------------------
    def _get_carried(self) -> list[torch.Tensor] | None:
        values = [self.__dict__.get(f"state_{n}") for n in self.spec.state_names]
        return None if values[0] is None else values

    def _set_carried(self, values: list[torch.Tensor] | None) -> None:
        for index, name in enumerate(self.spec.state_names):
            self.__dict__[f"state_{name}"] = None if values is None else values[index].detach()

    @property
    def losses(self) -> list[torch.Tensor]:
        """Differentiable penalties: weight regularizers (current weights) and the activity
        regularizer of the last call. Add ``sum(layer.losses)`` to the training loss."""
        out = RNN.losses.fget(self)
        if self._activity_loss is not None:
            out.append(self._activity_loss)
        return out

    def extra_repr(self) -> str:
        return f"units={self.spec.units}, input_dim={self.input_dim}, dtype={self.dtype}"

    __repr__ = nn.Module.__repr__


SimpleRNN, LSTM, GRU = builtin_classes(Recurrent, __name__)


class _BidirectionalOps:
    concat = staticmethod(lambda tensors, axis: torch.cat(tensors, dim=axis))
    flip = staticmethod(lambda tensor, axis: torch.flip(tensor, dims=[axis]))


class Bidirectional(BidirectionalCore, nn.Module):
    """A recurrent layer run forward and backward over the inputs, outputs merged (Keras
    semantics; see ``multirnn.bidirectional``). Both copies are submodules."""

    engine_name = "torch"
    _ops = _BidirectionalOps
    _classes: ClassVar[dict[str, type]] = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
    _rnn_class = RNN

    def __init__(self, layer: RNN, merge_mode: str | None = "concat", **keywords: Any):
        nn.Module.__init__(self)
        self.forward_layer, self.backward_layer = self._init_core(layer, merge_mode, keywords)

    def forward(self, inputs, *args, mask=None, initial_state=None, training=None):
        return self._run(inputs, *args, mask=mask, initial_state=initial_state,
                         training=training)  # fmt: skip

    __repr__ = nn.Module.__repr__
