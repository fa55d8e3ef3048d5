"""ONNX Runtime as an independent oracle: each case's layer (or Bidirectional wrapper) is
built on the NumPy engine, exported with :func:`multirnn.convert.onnx.to_onnx` and run by
ONNX Runtime's own LSTM, GRU and RNN kernels, which must agree with the reference.

What it cannot run is derived from the exporter: a case is skipped with the
``ConversionError`` its export raises (activations with no exact ONNX form, float64, which
ONNX Runtime's recurrent kernels lack). Dropout cases feed explicit masks, which an
inference graph cannot take, and stateful sequences are not run (an ONNX graph carries no
state between runs). Values only: no gradients.
"""

from __future__ import annotations

import numpy as np

from multirnn.conformance.adapters import EngineAdapter, layer_from, wrapper_from
from multirnn.convert.layouts import ConversionError


class OnnxRuntimeAdapter(EngineAdapter):
    name = "onnxruntime"
    checks_gradients = False

    def __init__(self) -> None:
        import onnx  # noqa: F401  (both are needed; fail at selection time, not per case)
        import onnxruntime

        self.ort = onnxruntime

    def versions(self):
        import onnx

        return {"onnx": onnx.__version__, "onnxruntime": self.ort.__version__}

    def supports(self, case, dtype):
        if case.dropout:
            return "an ONNX inference graph cannot take explicit dropout masks"
        if case.stateful:
            return None  # stateful() declines: the runner reports it as skipped
        data = case.data().cast(dtype)
        try:
            self._export(
                case.spec(dtype),
                case.merge_mode if case.wrapped else False,
                data.weights,
                data.mask is not None,
                data.initial_state is not None,
            )
        except ConversionError as exc:
            return str(exc)
        return None

    def _export(self, spec, merge_mode, weights, mask, initial_state):
        from multirnn.convert.onnx import to_onnx

        if merge_mode is False:
            layer = layer_from(spec, weights, "numpy")
        else:
            layer = wrapper_from(spec, merge_mode, weights, "numpy")
        return to_onnx(layer, mask=mask, initial_state=initial_state)

    def _run(self, model, inputs, mask, initial_state):
        session = self.ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        values = [inputs, *([] if mask is None else [mask]), *(initial_state or [])]
        if len(values) != len(names):
            raise RuntimeError(f"the graph takes {names}, the case gives {len(values)} arrays")
        feeds = {name: np.asarray(v) for name, v in zip(names, values)}
        return [np.asarray(o) for o in session.run(None, feeds)]

    def forward(
        self, spec, weights, inputs, *, mask, initial_state, input_dropout, recurrent_dropout
    ):
        if input_dropout is not None or recurrent_dropout is not None:
            raise ConversionError("an ONNX inference graph cannot take explicit dropout masks")
        model = self._export(spec, False, weights, mask is not None, initial_state is not None)
        return self._run(model, inputs, mask, initial_state)

    def bidirectional(self, spec, merge_mode, weights, inputs, *, mask, initial_state):
        model = self._export(spec, merge_mode, weights, mask is not None, initial_state is not None)
        return self._run(model, inputs, mask, initial_state)

    def stateful(self, spec, weights, calls):
        return None


ADAPTER = OnnxRuntimeAdapter
