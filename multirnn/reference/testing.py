"""Conformance adapter of the NumPy engine: the layer API for plain calls and stateful
sequences, the functional entry for explicit dropout masks. No autodiff, so no gradients."""

from __future__ import annotations

import dataclasses

from multirnn.conformance.adapters import EngineAdapter, layer_from, stateful_sequence
from multirnn.conformance.cases import ALL_DTYPES
from multirnn.conformance.oracle import results
from multirnn.reference import kernels


class NumpyAdapter(EngineAdapter):
    name = "numpy"
    dtypes = ALL_DTYPES

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        if input_dropout is not None or recurrent_dropout is not None:
            output, states = kernels.forward(
                spec,
                weights,
                inputs,
                mask=mask,
                initial_state=initial_state,
                input_dropout=input_dropout,
                recurrent_dropout=recurrent_dropout,
            )
            return results(spec, output, states)
        layer = layer_from(spec, weights, self.name)
        out = layer(inputs, mask=mask, initial_state=initial_state)
        return out if spec.return_state else [out]

    def stateful(self, spec, weights, calls):
        return stateful_sequence(layer_from(spec, weights, self.name), spec, calls)

    def benchmark(self, spec, weights, inputs, stateful=False):
        """``stateful``: streaming: a stateful layer called on the same chunk ``inputs``
        again and again, carrying its states from call to call."""
        if stateful:
            spec = dataclasses.replace(spec, stateful=True)
        layer = layer_from(spec, weights, self.name)
        return (lambda: layer(inputs)), None

    def versions(self):
        import numpy

        return {"numpy": numpy.__version__}


ADAPTER = NumpyAdapter
