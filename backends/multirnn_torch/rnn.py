"""``RNN(cell)`` on the PyTorch engine: the one layer kind, as a ``torch.nn.Module``.

A user's :class:`multirnn.Cell` keeps its weights as ``nn.Parameter``s in an
``nn.ParameterDict`` under the names the cell declared (``state_dict`` keys
``weights.<name>``), so optimizers, ``.to()`` and ``torch.compile`` see ordinary
parameters; the loop is a Python loop over the time steps calling ``cell.step`` with the
array API namespace of array-api-compat, and gradients come from autograd. The built-in
layers (``multirnn_torch.layers``) are this class with a built-in cell, whose fast paths
(fused kernels, the native loop, the hand-written backward) replace the loop.

A call is prepared by :func:`multirnn.pipeline.prepare`; this module supplies its hooks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from multirnn import cells, constraints, pipeline, precision, regularizers
from multirnn.layer import _BUILD_LOCK
from multirnn_torch import kernels, scan
from multirnn_torch.ops import TORCH_ARRAYS, TORCH_OPS, dtype_name

__all__ = ["RNN", "torch_namespace"]

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
    _arrays = TORCH_ARRAYS
    _counter = itertools.count()
    _default_name = "rnn"

    def __init__(
        self, cell: cells.Cell, *, device: torch.device | str | None = None, **kwargs: Any
    ) -> None:
        nn.Module.__init__(self)
        self.spec = cells.parse_rnn(cell, kwargs)
        self.cell = cell
        self.weights = nn.ParameterDict()
        self._names: list[str] = []
        self._input_dim: int | None = None
        self._setup(device)
        torch_namespace()  # a missing array-api-compat is an error at creation
        self._build_from_arguments()

    def _setup(self, device: torch.device | str | None) -> None:
        """What both layer kinds set up after their spec: dtype, device, name, states."""
        spec = self.spec
        weights = precision.weights(spec.dtype)  # (float32 under a mixed policy)
        self._dtype = getattr(torch, weights) if weights else torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else None
        self.name: str = spec.name or f"{self._default_name}_{next(self._counter)}"
        self._decls: tuple[cells.WeightDecl, ...] = ()
        # Carried states are plain attributes, not buffers: DistributedDataParallel
        # broadcasts rank 0's buffers before every forward, which would hand every rank the
        # states of rank 0's rows. ``_apply`` moves them with ``.to()`` like buffers.
        self._set_carried(None)

    # -- weights: where they are kept ---------------------------------------------------------
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

    def _weights(self) -> list[torch.Tensor]:
        return [self.weights[name] for name in self._names]

    def _store(self, input_dim: int, params: list[nn.Parameter]) -> None:
        decls = self.cell.declare(input_dim)
        for decl, param in zip(decls, params):  # one by one: the declared order
            self.weights[decl.name] = param
        self._decls, self._names = decls, [d.name for d in decls]
        self._input_dim = input_dim

    def _draw_seed(self) -> int:
        # Unseeded layers follow torch.manual_seed.
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def _parameters_from(self, arrays: Sequence[Any], device: Any = None) -> list:
        device = self._device if self._device is not None else device
        params = []
        for value in arrays:
            tensor = TORCH_ARRAYS.tensor(value, self._dtype, device)
            # contiguous: NumPy's initializers may return transposed arrays (orthogonal),
            # and FSDP shards only contiguous parameters
            param = nn.Parameter(tensor.clone(memory_format=torch.contiguous_format))
            params.append(param.requires_grad_(getattr(self.spec, "trainable", True)))
        return params

    def _create_weights(self, input_dim: int, device: Any = None) -> None:
        self._store(input_dim, self._parameters_from(self._initial_weights(input_dim), device))

    def _checked_weights(self, weights: Any) -> tuple[int, list]:
        arrays = [np.asarray(w) for w in weights]
        known = self._input_dim or self.spec.input_dim  # (unbuilt in load: the spec's)
        return cells.check_weights(self.name, self.cell, arrays, known), arrays

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights (the declared order and shapes), keeping the parameter
        objects; an unbuilt layer is built from them."""
        if isinstance(weights, (list, tuple)):
            weights = [TORCH_ARRAYS.to_numpy(w) if torch.is_tensor(w) else w for w in weights]
        input_dim, arrays = self._checked_weights(weights)
        if not self.built:
            with _BUILD_LOCK:
                if not self.built:
                    self._store(input_dim, self._parameters_from(arrays))
                    return
        with torch.no_grad():
            for param, value in zip(self._weights(), arrays):
                param.copy_(TORCH_ARRAYS.tensor(value, param.dtype, param.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.built:  # a lazy layer takes its input size from the file
            stored = [v for k, v in state_dict.items() if k.startswith(prefix + "weights.")]
            if stored:
                arrays = [TORCH_ARRAYS.to_numpy(v) for v in stored]
                self.build((None, None, cells.input_dim_of(self.cell, arrays)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- calling: the pipeline's hooks, then the loop ----------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        *args: Any,
        mask: torch.Tensor | None = None,
        initial_state: Sequence[torch.Tensor] | torch.Tensor | None = None,
        training: bool | None = None,
    ):
        call = pipeline.prepare(self, inputs, args, mask=mask, initial_state=initial_state,
                                training=training, carried=self._get_carried())  # fmt: skip
        output, final = pipeline.run(self, call)
        return pipeline.result(self, output, final)

    def _default_training(self) -> bool:
        return self.training

    def _place(self, inputs: Any) -> torch.device:
        """Where a call runs: the weights' device once built, else the ``device=`` the
        layer was created with, else the inputs' (CPU for host data)."""
        if self.built:
            return self._weights()[0].device
        if self._device is not None:
            return self._device
        return inputs.device if torch.is_tensor(inputs) else torch.device("cpu")

    def _compute_dtype(self) -> str:
        """The dtype of the call's values: the weights', or a mixed policy's low dtype."""
        return precision.MIXED.get(self.spec.dtype) or dtype_name(self.dtype)

    def _build_on(self, x: torch.Tensor, place: torch.device) -> None:
        self.build(tuple(x.shape), device=place)

    def _dropout_keep(self, call, *shapes: tuple | None) -> list[torch.Tensor | None]:
        """Which entries the (input, recurrent) dropout of a training call keeps."""
        like, spec = self._weights()[0], self.spec
        dtype = getattr(torch, precision.arithmetic(dtype_name(like.dtype)))
        rates = (spec.dropout, spec.recurrent_dropout)
        return [None if s is None else torch.rand(s, device=like.device, dtype=dtype) >= rate
                for s, rate in zip(shapes, rates)]  # fmt: skip

    def _call_weights(self) -> list[torch.Tensor]:
        return self._weights()

    def _run(self, call: pipeline.Call, weights) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The generic loop: ``cell.step`` per time step, masks and ``go_backwards``
        applied here (the semantics of the NumPy engine's ``RNN``)."""
        spec, x, mask = self.spec, call.x, call.mask
        if call.shape.batch == 0:
            return kernels._empty_batch(spec, weights, x, call.states)
        states = call.states
        if states is None:
            states = [x.new_zeros((x.shape[0], spec.units)) for _ in spec.state_names]
        ops, batch = torch_namespace(), call.shape.batch
        w = dict(zip(self._names, weights))
        if torch.compiler.is_exporting():  # one scan operator: batch and time stay dynamic
            if spec.go_backwards:
                x, mask = x.flip(1), None if mask is None else mask.flip(1)

            def traced_step(x_t, states):
                output, new = self.cell.step(ops, w, x_t, states)
                return output.to(x.dtype), [s.to(x.dtype) for s in new]

            keeps = None if mask is None else mask.transpose(0, 1)
            ys, states = scan.traced_loop(traced_step, x.transpose(0, 1), keeps, states,
                                          spec.zero_output_for_mask)  # fmt: skip
            return (ys if spec.return_sequences else ys[:, -1]), states

        def step(x_t, states, first):
            output, new = self.cell.step(ops, w, x_t, states)
            if first:
                cells.check_step(spec, output, new, batch)
            return output.to(x.dtype), [s.to(x.dtype) for s in new]

        xs = x.unbind(1)  # not x[:, t]: see multirnn_torch.scan._loop
        keeps = None if mask is None else mask[..., None].unbind(1)
        if spec.go_backwards:
            xs, keeps = xs[::-1], None if keeps is None else keeps[::-1]
        outputs, states = cells.unrolled(ops, spec, step, xs, keeps, states)
        return (torch.stack(outputs, dim=1) if spec.return_sequences else outputs[-1]), states

    # -- carried states ---------------------------------------------------------------------
    def _get_carried(self) -> list[torch.Tensor] | None:
        return self.__dict__.get("_carried")

    def _set_carried(self, values: list[torch.Tensor] | None) -> None:
        # carried without gradient, like truncated backpropagation; a plain attribute
        # (see _setup): nn.Module's __setattr__ bookkeeping is skipped
        detached = None if values is None else [v.detach() for v in values]
        self.__dict__["_carried"] = detached

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... move the carried states too
        super()._apply(fn, recurse)
        carried = self._get_carried()
        if carried is not None:
            self._set_carried([fn(s) for s in carried])
        return self

    @property
    def states(self) -> list[torch.Tensor] | None:
        """A copy of the carried states of a stateful layer (None before its first call):
        writing into it (``.zero_()``, a NumPy view) must not change what the next call
        starts from."""
        carried = self._get_carried()
        return None if carried is None else [s.clone() for s in carried]

    def reset_states(self, states: Sequence[Any] | torch.Tensor | None = None) -> None:
        """Zero the carried states, or set them (which also sets the batch size)."""
        values = pipeline.reset_values(self, states)
        if values is None:
            carried = self._get_carried()
            if carried is not None:
                self._set_carried([torch.zeros_like(s) for s in carried])
            return
        self._set_carried([s.clone() for s in values])

    # -- penalties and constraints ----------------------------------------------------------
    @property
    def losses(self) -> list[torch.Tensor]:
        """Differentiable weight penalties (the regularizers the cell declared). Add
        ``sum(layer.losses)`` to the training loss."""
        if not self.built:
            return []
        pairs = zip(self._declared(), self._weights())
        return [regularizers.penalty(d.regularizer, w, TORCH_OPS)
                for d, w in pairs if d.regularizer is not None]  # fmt: skip

    def _declared(self) -> tuple[cells.WeightDecl, ...]:
        return self._decls

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Project the weights onto their declared constraints in place; call after
        ``optimizer.step()``."""
        weights = self._require_built("apply_constraints")
        for d, w in zip(self._declared(), weights):
            if d.constraint is not None:
                w.copy_(constraints.project(d.constraint, w, TORCH_OPS))

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, input_dim={self.input_dim}, dtype={self.dtype}"
