"""``RNN(cell)`` on the PyTorch engine: a user's :class:`multirnn.Cell` as an ``nn.Module``.

The cell's weights are ``nn.Parameter``s in an ``nn.ParameterDict`` under the names the
cell declared (``state_dict`` keys ``weights.<name>``), so optimizers, ``.to()`` and
``torch.compile`` see ordinary parameters. The loop is a Python loop over the time steps
calling ``cell.step`` with the array API namespace of array-api-compat; gradients come
from autograd. The semantics (masks, ``go_backwards``, states) are the NumPy engine's
``multirnn.reference.rnn.RNN``, the oracle this layer is tested against.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from multirnn import calls, cells, regularizers
from multirnn import constraints as constraint_module
from multirnn.layer import _BUILD_LOCK
from multirnn_torch import kernels, scan
from multirnn_torch.ops import TORCH_OPS

__all__ = ["RNN", "torch_namespace"]

_names = itertools.count()
_PARAMS = "weights"


_NAMESPACE: list[cells.Ops] = []


def torch_namespace() -> cells.Ops:
    """PyTorch's array API namespace (array-api-compat) with multirnn's activations."""
    if _NAMESPACE:
        return _NAMESPACE[0]
    xp = scan.array_api()  # a missing array-api-compat is named there
    _NAMESPACE.append(cells.namespace(xp, TORCH_OPS, "torch", kernels.NATIVE_ACTIVATIONS))
    return _NAMESPACE[0]


class RNN(cells.RNNCore, nn.Module):
    """A :class:`multirnn.Cell` run over ``(batch, time, features)`` inputs with the
    ``Recurrent`` options, as a ``torch.nn.Module``.

    ``device`` places the weights at creation; ``dtype`` defaults to
    ``torch.get_default_dtype()``. The weights are created by ``build`` (or ``input_dim=``,
    or the first call): create the optimizer after they exist.
    """

    engine_name = "torch"

    def __init__(
        self, cell: cells.Cell, *, device: torch.device | str | None = None, **kwargs: Any
    ) -> None:
        nn.Module.__init__(self)
        self.spec = cells.parse_rnn(cell, kwargs)
        self.cell = cell
        spec = self.spec
        self._dtype = getattr(torch, spec.dtype) if spec.dtype else torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else None
        self.name: str = spec.name or f"rnn_{next(_names)}"
        self.weights = nn.ParameterDict()
        self._names: list[str] = []
        self._decls: tuple[cells.WeightDecl, ...] = ()
        self._input_dim: int | None = None
        # Carried states: a plain attribute (not buffers, which DistributedDataParallel
        # would broadcast from rank 0), moved by ``_apply`` like buffers.
        self._carried: list[torch.Tensor] | None = None
        torch_namespace()  # a missing array-api-compat is an error at creation
        self._build_from_arguments()

    # -- building and weights -------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self._weights()[0].dtype if self.built else self._dtype

    @property
    def built(self) -> bool:
        return self._input_dim is not None

    @property
    def input_dim(self) -> int | None:
        return self._input_dim

    @property
    def weight_names(self) -> list[str]:
        return list(self._names)

    def _draw_seed(self) -> int:
        # Unseeded layers follow torch.manual_seed, like the built-in layers.
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def build(self, input_shape: Sequence[int | None], *, device: Any = None) -> None:
        """Create the weights for inputs of shape ``(batch, time, features)`` (once, also
        when several threads make the first call at the same time)."""
        try:
            input_dim = int(tuple(input_shape)[-1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"{self.name}.build: input_shape must be (batch, time, features), got "
                f"{input_shape!r}"
            ) from None
        if input_dim < 1:
            raise ValueError(
                f"{self.name}.build: inputs need at least one feature, got {input_dim}"
            )
        with _BUILD_LOCK:
            if not self.built:
                seed = self.spec.seed if self.spec.seed is not None else self._draw_seed()
                values = self.cell.initial_weights(input_dim, seed)
                self._create(input_dim, values, device)
                return
        if input_dim != self._input_dim:
            raise ValueError(
                f"{self.name}: already built for input_dim={self._input_dim}, cannot rebuild "
                f"for {input_dim}"
            )

    def _create(self, input_dim: int, arrays: Sequence[Any], device: Any = None) -> None:
        decls = self.cell.declare(input_dim)
        device = self._device if self._device is not None else device
        for decl, value in zip(decls, arrays):  # one by one: the declared order
            tensor = torch.as_tensor(np.asarray(value), dtype=self._dtype, device=device)
            # contiguous: NumPy's initializers may return transposed arrays (orthogonal)
            param = nn.Parameter(tensor.clone(memory_format=torch.contiguous_format))
            self.weights[decl.name] = param
        self._decls, self._names = decls, [d.name for d in decls]
        self._input_dim = input_dim

    def _weights(self) -> list[torch.Tensor]:
        return [self.weights[name] for name in self._names]

    def _require_built(self, what: str) -> list[torch.Tensor]:
        if not self.built:
            raise ValueError(
                f"{self.name}: {what} needs the weights, which do not exist yet; call "
                "build((batch, time, features)), call the layer once, or pass input_dim="
            )
        return self._weights()

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in the order the cell declared them."""
        return [w.detach().cpu().numpy().copy() for w in self._require_built("get_weights")]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (the cell's declared order and shapes), keeping the
        parameter objects; an unbuilt layer is built from them."""
        arrays = [
            w.detach().cpu().numpy() if torch.is_tensor(w) else np.asarray(w) for w in weights
        ]
        known = self._input_dim or self.spec.input_dim  # (unbuilt in load: the spec's)
        input_dim = cells.check_weights(self.name, self.cell, arrays, known)
        if not self.built:
            with _BUILD_LOCK:
                if not self.built:
                    self._create(input_dim, arrays)
                    return
        with torch.no_grad():
            for param, value in zip(self._weights(), arrays):
                param.copy_(torch.as_tensor(value, dtype=param.dtype, device=param.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.built:  # a lazy layer takes its input size from the file
            key = prefix + _PARAMS + "."
            stored = [v for k, v in state_dict.items() if k.startswith(key)]
            if stored:
                arrays = [v.detach().cpu().numpy() for v in stored]
                self.build((None, None, cells.input_dim_of(self.cell, arrays)))
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
        calls.training(self.name, training)
        device = kernels.call_device(self._weights()[0].device if self.built else None,
                                     self._device, inputs)  # fmt: skip
        owner = f"{self.name}: "
        x, mask, call = kernels.call_inputs(
            spec, owner, inputs, mask, device, kernels.dtype_name(self.dtype), self.input_dim
        )
        carried = self._carried
        if spec.stateful and carried is not None:
            calls.stateful_batch(spec, call.batch, carried[0].shape[0])
        self.build(tuple(x.shape), device=device)
        weights = self._weights()
        if initial_state is not None:
            states = kernels.initial_states(spec, initial_state, call, weights[0], owner=owner)
        elif spec.stateful and carried is not None:
            states = list(carried)
        else:
            states = [x.new_zeros((call.batch, spec.units)) for _ in spec.state_names]
        if call.batch == 0:
            output, final = self._empty_batch(x, states, weights)
        else:
            output, final = self._scan(x, mask, states)
        if spec.stateful:  # carried without gradient, like truncated backpropagation
            self._carried = [s.detach() for s in final]
        return [output, *final] if spec.return_state else output

    def _empty_batch(self, x, states, weights):
        """Batch size 0: empty outputs and states, still attached to the weights' graph
        (as the built-in layers return them)."""
        zero = sum(w.sum() for w in weights) * 0
        units = self.spec.units
        shape = (0, x.shape[1], units) if self.spec.return_sequences else (0, units)
        return x.new_zeros(shape) + zero, [s + zero for s in states]

    def _scan(self, x, mask, states):
        spec = self.spec
        ops = torch_namespace()
        w = dict(zip(self._names, self._weights()))
        time = x.shape[1]
        steps = range(time - 1, -1, -1) if spec.go_backwards else range(time)
        previous = x.new_zeros((x.shape[0], spec.units))
        outputs = []
        xs = x.unbind(1)  # not x[:, t]: see multirnn_torch.scan._loop
        for index, t in enumerate(steps):
            output, new = self.cell.step(ops, w, xs[t], states)
            if index == 0:
                cells.check_step(spec, output, new, x.shape[0])
            output = output.to(x.dtype)
            new = [s.to(x.dtype) for s in new]
            if mask is not None:
                keep = mask[:, t, None]
                new = [torch.where(keep, n, s) for n, s in zip(new, states)]
                held = torch.zeros_like(output) if spec.zero_output_for_mask else previous
                output = torch.where(keep, output, held)
            states, previous = new, output
            outputs.append(output)
        if spec.return_sequences:
            return torch.stack(outputs, dim=1), states
        return outputs[-1], states

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... move the carried states too
        super()._apply(fn, recurse)
        if self._carried is not None:
            self._carried = [fn(s) for s in self._carried]
        return self

    # -- states, penalties, constraints, config -----------------------------------------------
    @property
    def states(self) -> list[torch.Tensor] | None:
        """A copy of the carried states of a stateful layer (None before its first call),
        so that writing into it leaves the next call's states alone."""
        return None if self._carried is None else [s.clone() for s in self._carried]

    def reset_states(self, states: Sequence[Any] | torch.Tensor | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        if not self.spec.stateful:
            raise ValueError(
                f"{self.name}: reset_states() applies to stateful layers; this one was created "
                "with stateful=False (its states start from zeros or initial_state every call)"
            )
        if states is None:
            if self._carried is not None:
                self._carried = [torch.zeros_like(s) for s in self._carried]
            return
        device = self._weights()[0].device if self.built else (self._device or torch.device("cpu"))
        dtype = kernels.dtype_name(self.dtype)
        tensors = [kernels._tensor(s, "reset_states(states)", device, dtype, f"{self.name}: ")
                   for s in calls.state_list(states)]  # fmt: skip
        calls.states(self.spec, [tuple(s.shape) for s in tensors],
                     [kernels.dtype_name(s.dtype) for s in tensors],
                     batch=tensors[0].shape[0] if tensors and tensors[0].dim() == 2 else None,
                     expected_dtype=dtype, arg="reset_states(states)")  # fmt: skip
        self._carried = [s.detach().clone() for s in tensors]

    @property
    def losses(self) -> list[torch.Tensor]:
        """Differentiable weight penalties (the regularizers the cell declared). Add
        ``sum(layer.losses)`` to the training loss."""
        if not self.built:
            return []
        pairs = zip(self._decls, self._weights())
        return [regularizers.penalty(d.regularizer, w, TORCH_OPS)
                for d, w in pairs if d.regularizer is not None]  # fmt: skip

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Project the weights onto their declared constraints in place; call after
        ``optimizer.step()``."""
        weights = self._require_built("apply_constraints")
        for d, w in zip(self._decls, weights):
            if d.constraint is not None:
                w.copy_(constraint_module.project(d.constraint, w, TORCH_OPS))

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, input_dim={self.input_dim}, dtype={self.dtype}"
