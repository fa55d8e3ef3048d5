"""Flax NNX as an independent oracle: each case's layer (or ``Bidirectional`` wrapper) is
built on the NumPy engine, converted with :func:`multirnn.convert.to_flax` and run by
``nnx.RNN`` (or ``nnx.Bidirectional``), which must agree with the reference.

What it cannot run is derived from the converter: a case is skipped with the
``ConversionError`` its conversion raises (activations with no JAX built-in, such as the
slope-0.2 ``hard_sigmoid``; GRUs with ``reset_after=False`` or a recurrent candidate bias;
``merge_mode=None``; a wrapped ``go_backwards`` layer). A plain ``go_backwards`` layer is
Flax's ``nnx.RNN(reverse=True, keep_order=False)``. LSTMs run as ``LSTMCell``, or as
``OptimizedLSTMCell`` for ``implementation=2`` (both fused and per-gate forms are covered).

A mask runs as ``seq_lengths``, which expresses right-padded rows of length at least one.
``nnx.RNN`` keeps stepping through the padding, so its outputs there are neither zeros
nor repeats; only its final carries (taken at each row's last valid step) are exact there.
Masked cases therefore run where the layer returns the last output and states, which are
the carries. The same holds for a wrapper without ``return_sequences``: each direction's
last output is its final carry, merged with the module's own ``merge_fn``.

float64 needs JAX's 64-bit mode. Dropout masks cannot be fed to a Flax cell, and stateful
sequences are not run. Values only: no gradients.
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


def mask_problem(case, mask) -> str | None:
    """Why ``mask`` cannot be run as ``seq_lengths`` with the same results, or None."""
    problem = lengths_problem(mask, "nnx.RNN's seq_lengths")
    if problem or mask is None or mask.all():
        return problem
    if case.return_sequences:
        return (
            "nnx.RNN keeps stepping through the padding: its outputs at masked steps are "
            "neither zeros nor the last valid output"
        )
    if case.zero_output_for_mask and not case.wrapped and not case.go_backwards:
        return (
            "nnx.RNN's last output is its last valid step's; with zero_output_for_mask=True "
            "a masked last step outputs zeros"
        )
    return None


def _kind(spec) -> str | None:
    return "OptimizedLSTMCell" if spec.layer == "LSTM" and spec.implementation == 2 else None


class FlaxNNXAdapter(EngineAdapter):
    name = "flax.nnx"
    checks_gradients = False

    def __init__(self) -> None:
        import jax  # fail at selection time, not per case
        import jax.numpy as jnp
        from flax import nnx

        self.jax, self.jnp, self.nnx = jax, jnp, nnx

    def versions(self):
        import flax

        return {"flax": flax.__version__, "jax": self.jax.__version__}

    def environment(self):
        return "JAX_ENABLE_X64=1"

    def supports(self, case, dtype):
        if dtype == "float64" and not self.jax.config.jax_enable_x64:
            return "float64 needs JAX's 64-bit mode (JAX_ENABLE_X64=1)"
        if case.dropout:
            return "a Flax cell cannot take explicit dropout masks"
        if case.stateful:
            return None  # stateful() declines: the runner reports it as skipped
        data = case.data().cast(dtype)
        try:
            if case.wrapped:
                self._wrapper(case.spec(dtype), case.merge_mode, data.weights)
            else:
                self._rnn(case.spec(dtype), data.weights)
        except ConversionError as exc:
            return str(exc)
        return mask_problem(case, data.mask)

    def _rnn(self, spec, weights):
        from multirnn.convert import to_flax

        cell = to_flax(layer_from(spec.replace(go_backwards=False), weights, "numpy"),
                       kind=_kind(spec))  # fmt: skip
        return self.nnx.RNN(cell, reverse=spec.go_backwards, keep_order=False)

    def _wrapper(self, spec, merge_mode, weights):
        from multirnn.convert import to_flax

        # the module returns sequences; without them the last outputs are the carries
        spec = spec.replace(return_sequences=True)
        return to_flax(wrapper_from(spec, merge_mode, weights, "numpy"), kind=_kind(spec))

    def _carry(self, spec, states):
        """multirnn states ([h] or [h, c]) as a Flax carry (h, or (c, h))."""
        states = [self.jnp.asarray(s) for s in states]
        return (states[1], states[0]) if spec.layer == "LSTM" else states[0]

    def _states(self, spec, carry) -> list:
        return [carry[1], carry[0]] if spec.layer == "LSTM" else [carry]

    def _lengths(self, mask):
        return None if mask is None else self.jnp.asarray(mask.sum(axis=1))

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        if input_dropout is not None or recurrent_dropout is not None:
            raise ConversionError("a Flax cell cannot take explicit dropout masks")
        carry = None if initial_state is None else self._carry(spec, initial_state)
        final, y = self._rnn(spec, weights)(
            self.jnp.asarray(inputs), initial_carry=carry, seq_lengths=self._lengths(mask),
            return_carry=True,
        )  # fmt: skip
        states = self._states(spec, final)
        out = [y if spec.return_sequences else states[0]]
        return [np.asarray(o) for o in out + (states if spec.return_state else [])]

    def bidirectional(self, spec, merge_mode, weights, inputs, *, mask, initial_state):
        module = self._wrapper(spec, merge_mode, weights)
        carry = None
        if initial_state is not None:
            n = spec.num_states
            carry = (self._carry(spec, initial_state[:n]), self._carry(spec, initial_state[n:]))
        (forward, backward), y = module(
            self.jnp.asarray(inputs), initial_carry=carry, seq_lengths=self._lengths(mask),
            return_carry=True,
        )  # fmt: skip
        states = self._states(spec, forward) + self._states(spec, backward)
        if not spec.return_sequences:
            y = module.merge_fn(states[0], states[len(states) // 2])
        return [np.asarray(o) for o in [y] + (states if spec.return_state else [])]

    def stateful(self, spec, weights, calls):
        return None


ADAPTER = FlaxNNXAdapter
