"""The PyTorch computation: a functional entry, the fused-kernel eligibility rule, and the
two paths it chooses between.

* fused: ``torch.lstm`` / ``torch.gru`` / ``torch.rnn_tanh`` / ``torch.rnn_relu`` (oneDNN on
  CPU, cuDNN on GPU), fed views of the layer's own parameters so gradients reach them;
* generic: the input projections of all steps in one product, then a time loop doing one
  recurrent product and the cell's elementwise work per step (``multirnn_torch.scan``, with
  a hand-written backward pass where it applies).

Both compute exactly the function docs/semantics.md defines; the eligibility rule is a pure function
of the spec and the call (:func:`fused_ineligibility`), unit-tested on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from multirnn import activations, builtin_cells, pipeline
from multirnn.spec import LayerSpec
from multirnn_torch import scan
from multirnn_torch.ops import TORCH_ARRAYS, TORCH_OPS

#: activations the framework computes natively and exactly (the formula's own ops)
NATIVE_ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": lambda x: x,
    "elu": F.elu,
    "selu": F.selu,
    "softsign": F.softsign,
    # not F.hardsigmoid: its backward rounds 1/6 to float even in float64 (3e-8 off)
    "hard_sigmoid_relu6": lambda x: F.hardtanh(x / 6.0 + 0.5, 0.0, 1.0),
    # the formula; hardtanh rather than clamp for its backward: one kernel, where clamp's
    # builds its mask from five (measured 4x slower per call on the autograd tape)
    "hard_sigmoid": lambda x: F.hardtanh(x * 0.2 + 0.5, 0.0, 1.0),
}

activation = activations.resolver(NATIVE_ACTIVATIONS, TORCH_OPS)


# -- eligibility ----------------------------------------------------------------------------


def fused_ineligibility(
    spec: LayerSpec,
    *,
    mask: str = "none",
    input_dropout: str = "none",
    recurrent_dropout: bool = False,
) -> str | None:
    """None when a fused PyTorch kernel computes exactly this call; otherwise why not.

    ``mask`` is "none", "right_padded" (every row a prefix of at least one step) or
    "other"; ``input_dropout`` is "none", "shared" (one mask for all gates) or "per_gate".
    """
    return builtin_cells.fused_call(spec, mask=mask, input_dropout=input_dropout,
                                    recurrent_dropout=recurrent_dropout, unroll=False)  # fmt: skip


def _mask_kind(mask: torch.Tensor | None) -> tuple[str, torch.Tensor | None]:
    """("none"|"right_padded"|"other", lengths) for a boolean (batch, time) mask."""
    if mask is None:
        return "none", None
    lengths = mask.sum(dim=1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    prefix = steps[None, :] < lengths[:, None]
    if bool((lengths > 0).all()) and bool(torch.equal(prefix, mask)):
        return "right_padded", lengths
    return "other", None


# -- the functional entry ---------------------------------------------------------------------


def run(
    spec, weights, x, mask, states, mi, mr, cache: WeightLayouts | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Dispatch a validated call to the fused kernel or the generic path (``cache``: the
    layer's :class:`WeightLayouts`)."""
    if x.shape[0] == 0:  # the kernels cannot pack or reshape an empty batch
        return _empty_batch(spec, weights, x, states)
    if torch.compiler.is_compiling():  # traced as one scan operator (multirnn_torch.scan)
        return scan.generic(spec, weights, x, mask, states, mi, mr, activation)
    kind, lengths = _mask_kind(mask)
    input_kind = "none" if mi is None else ("shared" if mi.dim() == 2 else "per_gate")
    reason = fused_ineligibility(
        spec, mask=kind, input_dropout=input_kind, recurrent_dropout=mr is not None
    )
    if reason is None:
        return _fused(spec, weights, x, lengths, states, mi, cache)
    return scan.generic(spec, weights, x, mask, states, mi, mr, activation, cache)


def forward(spec: LayerSpec, weights: Sequence[Any], inputs: Any, **arguments: Any):
    """The layer of ``spec`` as a differentiable function of its weights and inputs, like
    the NumPy reference: see :func:`multirnn.pipeline.forward` for the arguments."""
    return pipeline.forward(TORCH_ARRAYS, run, spec, weights, inputs, **arguments)


def _empty_batch(spec, weights, x, states) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What every engine returns for batch size 0: empty outputs and states, still attached
    to the weights' graph so that a loss built on them can be differentiated (to zeros)."""
    zero = sum(w.sum() for w in weights) * 0
    time = x.shape[1]
    shape = (0, time, spec.units) if spec.return_sequences else (0, spec.units)
    output = x.new_zeros(shape) + zero
    if states is None:
        states = [x.new_zeros((0, spec.units)) + zero for _ in spec.state_names]
    return output, list(states)


# -- the fused path -----------------------------------------------------------------------------

_GRU_ORDER = (1, 0, 2)  # canonical z, r, h -> torch r, z, n


def _torch_order(spec: LayerSpec, w: torch.Tensor) -> torch.Tensor:
    if spec.layer != "GRU":
        return w
    u = spec.units
    return torch.cat([w[..., k * u : (k + 1) * u] for k in _GRU_ORDER], dim=-1)


def fused_parameters(spec: LayerSpec, weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The layer's parameters in the flat layout of PyTorch's RNN ops: the kernels
    transposed into contiguous ``(G*units, features)`` matrices, as ``torch.nn`` keeps them
    (a transposed view runs the op about twice as slowly for a single row), and the GRU's
    gate blocks permuted."""
    kernel, recurrent, *rest = weights
    params = [
        _torch_order(spec, kernel).t().contiguous(),
        _torch_order(spec, recurrent).t().contiguous(),
    ]
    if rest:
        bias = rest[0]
        if spec.reset_after:
            params += [_torch_order(spec, bias[0]), _torch_order(spec, bias[1])]
        else:
            params += [bias, torch.zeros_like(bias)]
    return params


class WeightLayouts:
    """A layer's weights in the layouts its kernels take (the fused kernels', the
    hand-written loop's), kept between calls while the weights are unchanged and no
    gradient is taken (inference, streaming one step per call), where laying them out
    again would cost as much as the step. A call that records a graph lays them out
    afresh, as a differentiable function of the weights."""

    __slots__ = ("_key", "_layouts")

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._layouts: dict[str, Any] = {}

    def __getstate__(self):  # copies and pickles of a layer start without a cache
        return {"cached": False}

    def __setstate__(self, state) -> None:
        self.__init__()

    def get(self, name: str, weights: Sequence[torch.Tensor], make: Callable[[], Any]) -> Any:
        """``make()`` (the layout called ``name``), computed once per state of ``weights``."""
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return make()
        # in-place updates (optimizers, load_state_dict, set_weights) bump _version
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
        if key != self._key:
            self._key, self._layouts = key, {}
        if name not in self._layouts:
            with torch.no_grad():
                self._layouts[name] = make()
        return self._layouts[name]


def _fused(spec, weights, x, lengths, states, mi, cache: WeightLayouts | None = None):
    batch, time = x.shape[:2]
    if mi is not None:
        x = x * mi[:, None, :]
    if spec.go_backwards:
        x = x.flip(1)
    if cache is None:
        params = fused_parameters(spec, weights)
    else:
        params = cache.get("fused", weights, lambda: fused_parameters(spec, weights))
    has_bias = spec.use_bias
    if states is not None:
        hx = [s[None] for s in states]
    else:
        hx = [x.new_zeros(1, batch, spec.units)] * spec.num_states
    op = {"LSTM": torch.lstm, "GRU": torch.gru}.get(spec.layer)
    if op is None:
        op = torch.rnn_tanh if spec.activation == "tanh" else torch.rnn_relu
    hidden = tuple(hx) if spec.layer == "LSTM" else hx[0]
    if lengths is None:
        out, *final = op(x, hidden, params, has_bias, 1, 0.0, False, False, True)
        final_states = [f[0] for f in final]
        output = out if spec.return_sequences else out[:, -1]
        return output, final_states
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order, restore = packed.sorted_indices, packed.unsorted_indices
    if spec.layer == "LSTM":
        hidden = (hidden[0][:, order], hidden[1][:, order])
    else:
        hidden = hidden[:, order]
    data, *final = op(
        packed.data, packed.batch_sizes, hidden, params, has_bias, 1, 0.0, False, False
    )
    final_states = [f[0][restore] for f in final]
    out, _ = pad_packed_sequence(
        PackedSequence(data, packed.batch_sizes, order, restore),
        batch_first=True,
        total_length=time,
    )
    if not spec.zero_output_for_mask:  # masked steps repeat the last valid output
        steps = torch.arange(time, device=x.device)
        last = torch.minimum(steps[None, :], (lengths - 1)[:, None])
        out = out.gather(1, last[..., None].expand(-1, -1, spec.units))
    output = out if spec.return_sequences else out[:, -1]
    return output, final_states
