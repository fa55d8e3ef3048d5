"""Keras 3 as an independent second oracle: its LSTM, GRU (both reset_after values) and
SimpleRNN, given the same canonical weights (the canonical layout is Keras's), must agree
with the reference on every case Keras can express.

Keras computes with whatever backend ``KERAS_BACKEND`` names (set it before the first
import of keras). It checks values only: outputs, final states and stateful sequences.
"""

from __future__ import annotations

import os

import numpy as np

from multirnn.conformance.adapters import EngineAdapter
from multirnn.conformance.known_gaps import builtin_path


def hard_sigmoid_slope_02(x):
    """Keras 2's hard sigmoid, multirnn's ``hard_sigmoid``."""
    import keras

    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


class KerasAdapter(EngineAdapter):
    name = "keras"
    checks_gradients = False

    def __init__(self) -> None:
        if os.environ.get("KERAS_BACKEND") == "jax":  # float64 arrays need x64 from the start
            os.environ.setdefault("JAX_ENABLE_X64", "1")
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)
        self.known_gaps = builtin_path(f"keras-{self.backend}")

    def environment(self):
        return f"KERAS_BACKEND={self.backend}"

    def supports(self, case, dtype):
        if case.dropout:
            return "Keras samples its own dropout masks; it cannot take explicit ones"
        return None

    def _activation(self, name):
        if name == "hard_sigmoid":  # Keras 3's own hard_sigmoid has slope 1/6
            # registered, because Bidirectional clones its layer through the layer's config
            register = self.keras.saving.register_keras_serializable("multirnn_oracle")
            return register(hard_sigmoid_slope_02)
        if name == "hard_sigmoid_relu6":
            return "hard_sigmoid"
        return name

    def _layer(self, spec, weights, batch):
        kwargs = {
            "activation": self._activation(spec.activation),
            "use_bias": spec.use_bias,
            "return_sequences": spec.return_sequences,
            "return_state": spec.return_state,
            "go_backwards": spec.go_backwards,
            "stateful": spec.stateful,
            "unroll": spec.unroll,
            "zero_output_for_mask": spec.zero_output_for_mask,
            "dtype": spec.dtype,
        }
        if spec.layer != "SimpleRNN":
            kwargs["recurrent_activation"] = self._activation(spec.recurrent_activation)
        if spec.layer == "LSTM":
            kwargs["unit_forget_bias"] = False
        if spec.layer == "GRU":
            kwargs["reset_after"] = spec.reset_after
        layer = getattr(self.keras.layers, spec.layer)(spec.units, **kwargs)
        layer.build((batch if spec.stateful else None, None, weights[0].shape[0]))
        layer.set_weights(weights)
        return layer

    def _call(self, layer, spec, inputs, mask, initial_state):
        kwargs = {}
        if mask is not None:
            kwargs["mask"] = mask
        if initial_state is not None:
            kwargs["initial_state"] = list(initial_state)
        out = layer(inputs, **kwargs)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(self.keras.ops.convert_to_numpy(o)) for o in out]

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        layer = self._layer(spec, weights, inputs.shape[0])
        return self._call(layer, spec, inputs, mask, initial_state)

    def bidirectional(self, spec, merge_mode, weights, inputs, *, mask, initial_state):
        n, batch = len(spec.weight_names), inputs.shape[0]
        # The backward layer is passed in: Keras 3 would build it with go_backwards=True
        # even when the wrapped layer already runs backwards (multirnn flips it, as Keras 2).
        flipped = spec.replace(go_backwards=not spec.go_backwards)
        wrapper = self.keras.layers.Bidirectional(
            self._layer(spec, weights[:n], batch),
            merge_mode=merge_mode,
            backward_layer=self._layer(flipped, weights[n:], batch),
            dtype=spec.dtype,
        )
        wrapper.build((None, None, weights[0].shape[0]))
        wrapper.set_weights(weights)
        return self._call(wrapper, spec, inputs, mask, initial_state)

    def stateful(self, spec, weights, calls):
        layer = self._layer(spec, weights, calls[0].inputs.shape[0])
        out = []
        for call in calls:
            if call.reset == "zeros":
                layer.reset_state()
            elif call.reset is not None:
                for variable, value in zip(layer.states, call.reset):
                    variable.assign(value)
            out.append(self._call(layer, spec, call.inputs, call.mask, None))
        return out


ADAPTER = KerasAdapter
