"""Conformance adapter of the PyTorch engine: the module API for plain calls, stateful
sequences and gradients; the functional entry for explicit dropout masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from multirnn.conformance.adapters import (
    EngineAdapter,
    layer_from,
    layer_gradients,
    listed,
    named_gradients,
    stateful_sequence,
)
from multirnn.conformance.cases import ALL_DTYPES
from multirnn.conformance.oracle import results
from multirnn_torch import kernels
from multirnn_torch.ops import TORCH_ARRAYS


def _t(a, grad: bool = False):
    if a is None:
        return None
    if isinstance(a, list):
        return [_t(x, grad) for x in a]
    t = TORCH_ARRAYS.from_host(np.asarray(a), None)
    return t.requires_grad_(grad) if grad and t.is_floating_point() else t


def _np(t: torch.Tensor) -> np.ndarray:
    return TORCH_ARRAYS.to_numpy(t)


class TorchAdapter(EngineAdapter):
    name = "torch"
    dtypes = ALL_DTYPES

    tensor = staticmethod(_t)
    to_numpy = staticmethod(_np)

    def _run(self, spec, weights, inputs, mask, initial_state, input_dropout, recurrent_dropout,
             grad=False):  # fmt: skip
        x, state = _t(inputs, grad), _t(initial_state, grad)
        if input_dropout is not None or recurrent_dropout is not None:
            params = _t(weights, grad)
            output, final = kernels.forward(
                spec, params, x, mask=_t(mask), initial_state=state,
                input_dropout=_t(input_dropout), recurrent_dropout=_t(recurrent_dropout),
            )  # fmt: skip
            return results(spec, output, final), params, x, state
        layer = layer_from(spec, weights, self.name).eval()
        out = layer(x, mask=_t(mask), initial_state=state)
        return (out if spec.return_state else [out]), layer._weights(), x, state

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        with torch.no_grad():
            got, *_ = self._run(spec, weights, inputs, mask, initial_state, input_dropout,
                                recurrent_dropout)  # fmt: skip
        return [_np(r) for r in got]

    def gradients(self, spec, weights, inputs, *, mask, initial_state, input_dropout,
                  recurrent_dropout, cotangents):  # fmt: skip
        got, params, x, state = self._run(spec, weights, inputs, mask, initial_state,
                                          input_dropout, recurrent_dropout, grad=True)  # fmt: skip
        loss = sum((r * _t(c)).sum() for r, c in zip(got, cotangents))
        leaves = [x, *params, *(state or [])]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
        return layer_gradients(spec, [_np(g) for g in grads], bool(state))

    def stateful(self, spec, weights, calls):
        layer = layer_from(spec, weights, self.name).eval()
        with torch.no_grad():
            return stateful_sequence(layer, spec, calls, self.to_engine, _np)

    def benchmark(self, spec, weights, inputs, layer=None, stateful=False):
        """``layer``: a built layer to time instead (an ``RNN(cell)``). ``stateful``:
        streaming, forward only: a stateful layer (``layer`` must be one) called on the
        same chunk ``inputs`` again and again, carrying its states from call to call."""
        if stateful:
            spec = dataclasses.replace(spec, stateful=True)
        layer = (layer or layer_from(spec, weights, self.name)).train()
        x = _t(inputs)

        def forward():
            with torch.no_grad():
                return layer(x, training=False)

        def train():
            layer.zero_grad(set_to_none=True)
            out = layer(x)
            (out[0] if isinstance(out, list) else out).sum().backward()

        return forward, None if stateful else train

    def versions(self):
        return {"torch": torch.__version__}

    def threads(self):
        return {"torch_threads": torch.get_num_threads()}

    def cell_gradients(self, layer, inputs, *, mask, initial_state, cotangents):
        def tensor(a, grad=False):
            return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)

        x = tensor(inputs, True)
        states = None if initial_state is None else [tensor(s, True) for s in initial_state]
        weights = [layer.weights[name] for name in layer.weight_names]
        result = listed(layer(x, mask=None if mask is None else tensor(mask), initial_state=states))
        loss = sum((r * tensor(c)).sum() for r, c in zip(result, cotangents, strict=True))
        leaves = [x, *(states or []), *weights]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        arrays = [
            np.zeros(leaf.shape) if g is None else g.detach().cpu().numpy()
            for leaf, g in zip(leaves, grads)
        ]
        return named_gradients(arrays, layer.weight_names, initial_state)


ADAPTER = TorchAdapter
