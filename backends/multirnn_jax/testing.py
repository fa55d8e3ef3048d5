"""Conformance adapter of the JAX engine: the layer API for plain calls and stateful
sequences, the functional entry for explicit dropout masks, ``jax.vjp`` for gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from multirnn.conformance.adapters import (
    EngineAdapter,
    layer_from,
    layer_gradients,
    listed,
    named_gradients,
)
from multirnn.conformance.cases import ALL_DTYPES
from multirnn.conformance.oracle import results
from multirnn_jax import kernels


class JaxAdapter(EngineAdapter):
    name = "jax"
    dtypes = ALL_DTYPES

    tensor = staticmethod(jnp.asarray)

    def environment(self) -> str:
        return "JAX_ENABLE_X64=1"

    def supports(self, case, dtype: str) -> str | None:
        if dtype == "float64" and not jax.config.jax_enable_x64:
            return "float64 needs JAX's 64-bit mode (JAX_ENABLE_X64=1)"
        return None

    def __init__(self) -> None:
        self._programs: dict = {}

    def _program(self, spec, weights, mask, input_dropout, recurrent_dropout, has_state):
        """One compiled program per case computing the result and its pullback together:
        forward and gradients of a case share it (compiling is what costs time here)."""
        key = (spec, weights[0].shape, mask is None, input_dropout is None,
               recurrent_dropout is None, has_state)  # fmt: skip
        if key in self._programs:
            return self._programs[key]
        dropout = input_dropout is not None or recurrent_dropout is not None
        layer = None if dropout else layer_from(spec, weights, self.name)

        def run(x, params, states, mask, mi, mr):
            if dropout:  # explicit masks go through the functional entry
                output, final = kernels.forward(spec, params, x, mask=mask,
                                                initial_state=states or None,
                                                input_dropout=mi, recurrent_dropout=mr)  # fmt: skip
                return results(spec, output, final)
            out = layer.replace(**dict(zip(spec.weight_names, params)))(
                x, mask=mask, initial_state=states or None
            )
            return out if spec.return_state else [out]

        @jax.jit
        def program(x, params, states, mask, mi, mr, cotangents):
            result, pullback = jax.vjp(
                lambda x, p, s: run(x, p, s, mask, mi, mr), x, params, states
            )
            return result, pullback(cotangents)

        self._programs[key] = program
        return program

    def _call(self, spec, weights, inputs, mask, initial_state, input_dropout,
              recurrent_dropout, cotangents):  # fmt: skip
        program = self._program(spec, weights, mask, input_dropout, recurrent_dropout,
                                initial_state is not None)  # fmt: skip
        if cotangents is None:  # the forward check: zero cotangents, same compiled program
            batch, time = inputs.shape[:2]
            shape = (batch, time, spec.units) if spec.return_sequences else (batch, spec.units)
            states = [(batch, spec.units)] * spec.num_states if spec.return_state else []
            shapes = [shape, *states]
            cotangents = [np.zeros(s, inputs.dtype) for s in shapes]
        j = self.to_engine
        return program(j(inputs), j(weights), j(initial_state) or [], j(mask), j(input_dropout),
                       j(recurrent_dropout), j(cotangents))  # fmt: skip

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        result, _ = self._call(spec, weights, inputs, mask, initial_state, input_dropout,
                               recurrent_dropout, None)  # fmt: skip
        return [np.asarray(r) for r in result]

    def gradients(self, spec, weights, inputs, *, mask, initial_state, input_dropout,
                  recurrent_dropout, cotangents):  # fmt: skip
        _, (gx, gw, gs) = self._call(spec, weights, inputs, mask, initial_state, input_dropout,
                                     recurrent_dropout, cotangents)  # fmt: skip
        arrays = [np.asarray(g) for g in (gx, *gw, *gs)]
        return layer_gradients(spec, arrays, initial_state is not None)

    def benchmark(self, spec, weights, inputs, layer=None, stateful=False):
        """``layer``: a built layer to time instead (an ``RNN(cell)``). ``stateful``:
        streaming, forward only: a stateful layer (``layer`` must be one) called eagerly on
        the same chunk ``inputs`` again and again, carrying its states from call to call
        (a stateful layer keeps its states in eager calls only)."""
        if stateful:
            spec = dataclasses.replace(spec, stateful=True)
        layer = layer or layer_from(spec, weights, self.name)
        x = self.to_engine(inputs)
        if stateful:
            return (lambda: jax.block_until_ready(layer(x))), None

        @jax.jit
        def forward(layer, x):
            return layer(x)

        # a training call, as on the other engines: with dropout, masks from a key
        dropout = {}
        if getattr(spec, "dropout", 0) or getattr(spec, "recurrent_dropout", 0):
            dropout = {"training": True, "key": jax.random.key(0)}

        @jax.jit
        def train(layer, x):
            def loss(layer):
                out = layer(x, **dropout)
                return (out[0] if isinstance(out, list) else out).sum()

            return jax.grad(loss)(layer)

        return (
            lambda: jax.block_until_ready(forward(layer, x)),
            lambda: jax.block_until_ready(train(layer, x)),
        )

    def versions(self):
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def threads(self):
        return {"jax_platform": jax.default_backend(), "devices": len(jax.devices())}

    def cell_gradients(self, layer, inputs, *, mask, initial_state, cotangents):
        names = layer.weight_names
        weights = {name: jnp.asarray(w) for name, w in zip(names, layer.get_weights())}
        mask = None if mask is None else jnp.asarray(mask)

        def loss(x, states, weights):
            result = listed(layer.replace(**weights)(x, mask=mask, initial_state=states or None))
            return sum(jnp.sum(r * c) for r, c in zip(result, cotangents, strict=True))

        states = [] if initial_state is None else [jnp.asarray(s) for s in initial_state]
        gx, gs, gw = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(inputs), states, weights)
        arrays = [gx, *gs, *(gw[name] for name in names)]
        return named_gradients([np.asarray(a) for a in arrays], names, initial_state)


ADAPTER = JaxAdapter
