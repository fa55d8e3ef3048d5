"""torch.nn as an independent oracle: each case's layer (or concat ``Bidirectional``) is
built on the NumPy engine, converted with :func:`multirnn.convert.to_torch` and run by
PyTorch's own ``nn.RNN``/``nn.LSTM``/``nn.GRU``, which must agree with the reference.

What it cannot run is derived from the converter: a case is skipped with the
``ConversionError`` its conversion raises (activations other than tanh/sigmoid, GRUs with
``reset_after=False``, ``go_backwards``, merges other than concat). A mask runs as a packed
sequence, which expresses only right-padded rows of length at least one; a packed run pads
its outputs with zeros and its final states are those of the last valid step, so masked
cases run where the layer returns exactly that (the output sequence with
``zero_output_for_mask=True``, or the last valid output and the final states). Inputs are
never flipped or patched here: whatever torch cannot compute itself is skipped. Dropout
masks cannot be fed to a torch module, and torch modules carry no state between calls.
Values only: no gradients.
"""

from __future__ import annotations

import numpy as np

from multirnn.conformance.adapters import (
    EngineAdapter,
    layer_from,
    lengths_problem,
    wrapper_from,
)
from multirnn.convert.layouts import ConversionError


def packing_problem(mask, return_sequences: bool, zero_output_for_mask: bool) -> str | None:
    """Why ``mask`` cannot be run as a packed sequence with the same results, or None."""
    problem = lengths_problem(mask, "a packed sequence")
    if problem or mask is None or mask.all():
        return problem
    if return_sequences and not zero_output_for_mask:
        return (
            "a packed sequence pads its outputs with zeros; with zero_output_for_mask=False "
            "masked steps repeat the last output"
        )
    if not return_sequences and zero_output_for_mask:
        return (
            "a packed sequence's last output is its last valid step's; with "
            "zero_output_for_mask=True a masked last step outputs zeros"
        )
    return None


class TorchNNAdapter(EngineAdapter):
    name = "torch.nn"
    checks_gradients = False

    def __init__(self) -> None:
        import torch  # fail at selection time, not per case

        self.torch = torch

    def versions(self):
        return {"torch": self.torch.__version__}

    def supports(self, case, dtype):
        if case.dropout:
            return "a torch.nn module samples its own dropout; it cannot take explicit masks"
        if case.stateful:
            return None  # stateful() declines: the runner reports it as skipped
        data = case.data().cast(dtype)
        try:
            self._module(case.spec(dtype), case.merge_mode if case.wrapped else False,
                         data.weights)  # fmt: skip
        except ConversionError as exc:
            return str(exc)
        # a wrapper's copies emit zeros at masked steps exactly when returning sequences
        zeros = case.return_sequences if case.wrapped else case.zero_output_for_mask
        return packing_problem(data.mask, case.return_sequences, zeros)

    def _module(self, spec, merge_mode, weights):
        from multirnn.convert import to_torch

        if merge_mode is False:
            return to_torch(layer_from(spec, weights, "numpy"))
        return to_torch(wrapper_from(spec, merge_mode, weights, "numpy"))

    def _run(self, module, spec, inputs, mask, initial_state):
        """The layer call's result from one torch call: the output sequence, or the top
        layer's final hidden state (every direction's, concatenated) as the last output."""
        torch = self.torch
        directions = 2 if module.bidirectional else 1
        lstm = spec.layer == "LSTM"
        hx = None
        if initial_state is not None:  # multirnn: per direction [h, c]; torch: per state
            n = spec.num_states
            stacked = [torch.from_numpy(np.stack(initial_state[i::n])) for i in range(n)]
            hx = tuple(stacked) if lstm else stacked[0]
        x = torch.from_numpy(inputs)
        with torch.no_grad():
            if mask is None:
                y, h = module(x, hx)
            else:
                lengths = torch.from_numpy(mask.sum(axis=1).astype(np.int64))
                packed = torch.nn.utils.rnn.pack_padded_sequence(
                    x, lengths, batch_first=True, enforce_sorted=False
                )
                y, h = module(packed, hx)
                y, _ = torch.nn.utils.rnn.pad_packed_sequence(
                    y, batch_first=True, total_length=inputs.shape[1]
                )
        states = list(h) if lstm else [h]
        last = torch.cat([states[0][d] for d in range(directions)], dim=-1)
        out = [y if spec.return_sequences else last]
        if spec.return_state:
            out += [s[d] for d in range(directions) for s in states]
        return [o.numpy() for o in out]

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        if input_dropout is not None or recurrent_dropout is not None:
            raise ConversionError("a torch.nn module cannot take explicit dropout masks")
        return self._run(self._module(spec, False, weights), spec, inputs, mask, initial_state)

    def bidirectional(self, spec, merge_mode, weights, inputs, *, mask, initial_state):
        module = self._module(spec, merge_mode, weights)
        return self._run(module, spec, inputs, mask, initial_state)

    def stateful(self, spec, weights, calls):
        return None


ADAPTER = TorchNNAdapter
