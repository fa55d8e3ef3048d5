"""Deliberately wrong engines (test doubles) the suite must catch, and only where wrong."""

from __future__ import annotations

import dataclasses

import numpy as np

from multirnn.conformance import oracle
from multirnn.conformance.adapters import EngineAdapter
from multirnn.conformance.cases import CaseData


class _FunctionalDouble(EngineAdapter):
    """An engine defined by a (possibly wrong) forward function of spec and case data, with
    gradients by finite differences of that same function."""

    def compute(self, spec, data: CaseData) -> list[np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def _data(
        weights, inputs, mask, initial_state, input_dropout, recurrent_dropout, cotangents=()
    ):
        return CaseData(
            list(weights),
            inputs,
            mask,
            initial_state,
            input_dropout,
            recurrent_dropout,
            list(cotangents),
            [],
        )

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        data = self._data(weights, inputs, mask, initial_state, input_dropout, recurrent_dropout)
        return self.compute(spec, data)

    def gradients(self, spec, weights, inputs, *, cotangents, **kwargs):
        data = self._data(weights, inputs, cotangents=cotangents, **kwargs)
        return oracle.finite_difference_gradients(spec, data, self.compute)


class ResetAfterGRU(_FunctionalDouble):
    """Claims reset_after=False but applies the reset gate after the recurrent product."""

    name = "broken-gru"

    def compute(self, spec, data):
        if spec.layer != "GRU" or spec.reset_after:
            return oracle.run(spec, data)
        weights = list(data.weights)
        if spec.use_bias:
            weights[2] = np.stack([weights[2], np.zeros_like(weights[2])])
        wrong = dataclasses.replace(spec, reset_after=True)
        return oracle.run(wrong, dataclasses.replace(data, weights=weights))


class ForgetBiasOffByOne(_FunctionalDouble):
    """Adds one to the forget-gate pre-activation of every LSTM."""

    name = "broken-lstm"

    def compute(self, spec, data):
        if spec.layer != "LSTM":
            return oracle.run(spec, data)
        weights = list(data.weights)
        units = spec.units
        if spec.use_bias:
            bias = weights[2].copy()
            bias[units : 2 * units] += 1.0
            return oracle.run(spec, dataclasses.replace(data, weights=[*weights[:2], bias]))
        # No bias: shift through an extra input feature that is constantly one.
        ones = np.ones((*data.inputs.shape[:2], 1), data.inputs.dtype)
        kernel = np.concatenate([weights[0], np.zeros((1, 4 * units), weights[0].dtype)])
        kernel[-1, units : 2 * units] = 1.0
        inputs = np.concatenate([data.inputs, ones], axis=-1)
        in_drop = data.input_dropout
        if in_drop is not None:
            in_drop = np.concatenate(
                [in_drop, np.ones((*in_drop.shape[:-1], 1), in_drop.dtype)], -1
            )
        changed = dataclasses.replace(
            data, weights=[kernel, weights[1]], inputs=inputs, input_dropout=in_drop
        )
        return oracle.run(spec, changed)


class Crashing(EngineAdapter):
    name = "crashing"

    def forward(self, spec, weights, inputs, **kwargs):
        raise RuntimeError("kaboom")


class BrokenBidirectional(EngineAdapter):
    """A correct layer in a wrong wrapper: ``merge_mode="mul"`` adds, and with
    ``merge_mode=None`` the backward sequence is left in processing order."""

    name = "broken-bidirectional"

    def forward(self, spec, weights, inputs, **kwargs):
        return oracle.run(spec, _FunctionalDouble._data(weights, inputs, **kwargs))

    def bidirectional(self, spec, merge_mode, weights, inputs, *, mask, initial_state):
        data = _FunctionalDouble._data(weights, inputs, mask, initial_state, None, None)
        if merge_mode == "mul":
            return oracle.run_bidirectional(spec, "sum", data)
        out = oracle.run_bidirectional(spec, merge_mode, data)
        if merge_mode is None and spec.return_sequences:
            out[1] = out[1][:, ::-1]
        return out
