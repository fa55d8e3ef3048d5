"""The engine adapter contract: how the conformance suite drives an engine.

An engine makes itself testable by naming a module in ``EngineInfo.testing`` whose
``ADAPTER`` is an :class:`EngineAdapter` (an instance, or a class instantiated without
arguments). Everything crosses the boundary as NumPy arrays; the spec passed in already
carries the dtype under test, and the arrays have that dtype.

A *result* is what the layer call returns, as a list: ``[output]``, or ``[output, *states]``
when ``spec.return_state``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from multirnn import engines
from multirnn.conformance.cases import Call, Case
from multirnn.spec import LayerSpec


class EngineAdapter:
    """Base class of adapters. Subclasses implement :meth:`forward`; the others are optional.

    ``name`` is the engine name; ``dtypes`` the dtypes it supports; ``known_gaps`` the path
    of a file listing cases it is known to fail (see ``multirnn.conformance.known_gaps``).
    """

    name: str = ""
    dtypes: tuple[str, ...] = ("float32", "float64")
    known_gaps: str | None = None
    #: False for oracles that only check values (no gradients, no stateful sequences).
    checks_gradients: bool = True

    def environment(self) -> str:
        """Environment settings a reproducer must carry (``KEY=value ...``), if any."""
        return ""

    def supports(self, case: Case, dtype: str) -> str | None:
        """None when the engine can run ``case``; otherwise the reason it cannot."""
        return None

    def forward(
        self,
        spec: LayerSpec,
        weights: list[np.ndarray],
        inputs: np.ndarray,
        *,
        mask: np.ndarray | None,
        initial_state: list[np.ndarray] | None,
        input_dropout: np.ndarray | None,
        recurrent_dropout: np.ndarray | None,
    ) -> list[np.ndarray]:
        """Build the layer of ``spec`` with ``weights``, call it once, return the result.

        With dropout masks given, use the engine's functional entry with those masks (in
        training mode); otherwise the layer API in inference mode.
        """
        raise NotImplementedError

    def gradients(
        self,
        spec: LayerSpec,
        weights: list[np.ndarray],
        inputs: np.ndarray,
        *,
        mask: np.ndarray | None,
        initial_state: list[np.ndarray] | None,
        input_dropout: np.ndarray | None,
        recurrent_dropout: np.ndarray | None,
        cotangents: list[np.ndarray],
    ) -> dict[str, Any] | None:
        """Gradients of ``sum_k <cotangents[k], result[k]>`` by the engine's own autodiff:
        ``{"inputs", "kernel", "recurrent_kernel", "bias" (if used), "initial_state" (a
        list, if given)}``. None when the engine has no autodiff."""
        return None

    def cell_gradients(
        self,
        layer: Any,
        inputs: np.ndarray,
        *,
        mask: np.ndarray | None,
        initial_state: list[np.ndarray] | None,
        cotangents: list[np.ndarray],
    ) -> dict[str, Any] | None:
        """Gradients of ``sum_k <cotangents[k], result[k]>`` for one call of ``layer`` (the
        engine's built ``RNN(cell)``) by the engine's own autodiff: ``{"inputs": array,
        "initial_state": [arrays] (if given), "weights": {name: array}}``, the weights under
        the names the cell declared. None when the engine has no autodiff.

        The engines shipped with multirnn override it in their ``testing`` modules (with
        :func:`listed` and :func:`named_gradients`); the default declines.
        """
        return None

    def bidirectional(
        self,
        spec: LayerSpec,
        merge_mode: str | None,
        weights: list[np.ndarray],
        inputs: np.ndarray,
        *,
        mask: np.ndarray | None,
        initial_state: list[np.ndarray] | None,
    ) -> list[np.ndarray] | None:
        """Build ``Bidirectional(layer of spec, merge_mode)``, load ``weights`` (the forward
        layer's, then the backward layer's), call it once, return the result as a list: the
        merged output (both outputs for ``merge_mode=None``), then with ``return_state`` the
        forward states and the backward states. None when not supported.

        The default builds the engine's own wrapper through its public API, converting arrays
        with :meth:`to_engine` and :meth:`to_numpy`."""
        try:
            engines.engine(self.name)
        except (engines.UnknownEngineError, engines.EngineUnavailableError):
            return None  # not a registered engine (a test double or custom oracle)
        wrapper = wrapper_from(spec, merge_mode, weights, self.name)
        state = None if initial_state is None else [self.to_engine(s) for s in initial_state]
        mask = None if mask is None else self.to_engine(mask)
        out = wrapper(self.to_engine(inputs), mask=mask, initial_state=state)
        return [self.to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    def to_engine(self, array: Any) -> Any:
        """A NumPy array (or a list of them, or None) as the engine's tensors."""
        if array is None:
            return None
        if isinstance(array, list):
            return [self.to_engine(a) for a in array]
        return self.tensor(array)

    def tensor(self, array: np.ndarray) -> Any:
        """One NumPy array as the engine's tensor."""
        return array

    def to_numpy(self, value: Any) -> np.ndarray:
        """An engine tensor as a NumPy array."""
        return np.asarray(value)

    def stateful(self, spec: LayerSpec, weights: list[np.ndarray], calls: list[Call]):
        """Run the calls on one stateful layer (``reset`` before each as the Call says) and
        return each call's result. None when not supported; the default runs a registered
        engine's layer through its public API."""
        try:
            engines.engine(self.name)
        except (engines.UnknownEngineError, engines.EngineUnavailableError):
            return None
        layer = layer_from(spec, weights, self.name)
        return stateful_sequence(layer, spec, calls, self.to_engine, self.to_numpy)

    # -- benchmark hooks (multirnn bench) ---------------------------------------------------
    def benchmark(
        self,
        spec: LayerSpec,
        weights: list[np.ndarray],
        inputs: np.ndarray,
        variant: str | None = None,
    ):
        """``(forward, train)``: callables that run the layer on ``inputs`` and block until
        done; ``train`` also back-propagates ``sum(output)`` to the weights (None without
        autodiff). None when the engine offers no benchmark. ``variant`` is one of the
        engine's ``benchmark_variants``, or None for the default way to run it.

        The shipped engines' hooks also take ``layer=`` (a built layer to time instead, such
        as an ``RNN(cell)``) and ``stateful=True`` (a stateful layer called again and again
        on ``inputs``, one chunk per call: streaming; ``train`` is then None). The bench
        reports the workloads of a hook without them as unsupported."""
        return None

    def versions(self) -> dict[str, str]:
        """Framework versions, for benchmark and conformance reports."""
        return {}

    def threads(self) -> dict[str, Any]:
        """Thread settings the engine computes with, for benchmark reports."""
        return {}


def _instantiate(obj: Any) -> EngineAdapter:
    adapter = obj() if isinstance(obj, type) else obj
    if not isinstance(adapter, EngineAdapter):
        raise TypeError(f"ADAPTER must be an EngineAdapter, got {adapter!r}")
    return adapter


#: External oracles: the peers' own layers, loaded through multirnn's converters (Keras
#: takes the canonical weights directly). name -> (module, the packages it imports)
ORACLES = {
    "keras": ("multirnn.conformance.keras_oracle", ("keras",)),
    "torch.nn": ("multirnn.conformance.torch_oracle", ("torch",)),
    "flax.nnx": ("multirnn.conformance.flax_oracle", ("flax",)),
    "onnxruntime": ("multirnn.conformance.onnx_oracle", ("onnx", "onnxruntime")),
}


def installed_oracles() -> list[str]:
    """The oracles whose packages are importable (without importing them)."""
    return [
        name
        for name, (_, packages) in ORACLES.items()
        if all(importlib.util.find_spec(p) for p in packages)
    ]


def adapter(name: str) -> EngineAdapter:
    """The adapter of engine ``name`` (or of an external oracle: one of :data:`ORACLES`)."""
    if name in ORACLES:
        module, packages = ORACLES[name]
        try:
            return _instantiate(importlib.import_module(module).ADAPTER)
        except ImportError as exc:
            raise engines.EngineUnavailableError(
                f"the {name!r} oracle needs {exc.name or 'a missing package'}: "
                f"pip install {' '.join(packages)}"
                + (" and one Keras backend (tensorflow, jax or torch)" if name == "keras" else "")
            ) from exc
    eng = engines.engine(name)  # raises the selection errors (unknown, not installed)
    info = eng.info
    if not info.testing:
        raise engines.EngineUnavailableError(
            f"engine {name!r} provides no conformance adapter (EngineInfo.testing is unset)"
        )
    module = importlib.import_module(info.testing)
    if not hasattr(module, "ADAPTER"):
        raise engines.EngineUnavailableError(f"{info.testing} defines no ADAPTER")
    return _instantiate(module.ADAPTER)


def stateful_sequence(layer, spec: LayerSpec, calls: list[Call], to_engine=None, to_numpy=None):
    """The stateful check's loop, shared by adapters: reset as each Call says, call the
    layer, collect each result as NumPy arrays. ``to_engine``/``to_numpy`` convert arrays."""
    to_engine = to_engine or (lambda a: a)
    to_numpy = to_numpy or np.asarray
    out = []
    for call in calls:
        if call.reset == "zeros":
            layer.reset_states()
        elif call.reset is not None:
            layer.reset_states([to_engine(s) for s in call.reset])
        mask = None if call.mask is None else to_engine(call.mask)
        result = layer(to_engine(call.inputs), mask=mask)
        out.append([to_numpy(r) for r in (result if spec.return_state else [result])])
    return out


def wrapper_from(spec: LayerSpec, merge_mode: str | None, weights: list[np.ndarray],
                 engine_name: str):  # fmt: skip
    """``Bidirectional(layer of spec, merge_mode)`` built on an engine through its public
    API, loaded with both directions' weights (the forward layer's first)."""
    n = len(spec.weight_names)
    inner = layer_from(spec, weights[:n], engine_name)
    wrapper = engines.engine(engine_name).Bidirectional(inner, merge_mode)
    wrapper.set_weights(weights)
    return wrapper


def lengths_problem(mask: np.ndarray | None, peer: str) -> str | None:
    """Why ``mask`` is not a per-row length that ``peer`` (which knows only lengths, like
    torch's packed sequences or Flax's ``seq_lengths``) can take, or None."""
    if mask is None:
        return None
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
        return f"{peer} expresses right-padded rows only; this mask has gaps"
    if np.any(lengths == 0):
        return f"{peer} cannot express an empty (fully masked) row"
    return None


def layer_from(spec: LayerSpec, weights: list[np.ndarray], engine_name: str):
    """Build ``spec`` on an engine through its public API and load ``weights``."""
    cls = engines.engine(engine_name).layer_class(spec.layer)
    layer = cls.from_config(spec.to_config())
    layer.set_weights(weights)
    return layer


# -- users' cells: what the engines' cell_gradients share ---------------------------------------


def listed(result: Any) -> list:
    """A layer call's result as a list (one output, or the output and the states)."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def layer_gradients(spec: LayerSpec, arrays: list[np.ndarray], has_state: bool) -> dict:
    """The ``gradients`` dict from the gradients of [inputs, *weights, *states]."""
    count = len(spec.weight_names)
    out = {"inputs": arrays[0], **dict(zip(spec.weight_names, arrays[1 : 1 + count]))}
    if has_state:
        out["initial_state"] = list(arrays[1 + count :])
    return out


def named_gradients(
    arrays: list[np.ndarray], weight_names: list[str], initial_state
) -> dict[str, Any]:
    """The ``cell_gradients`` dict from the gradients of [inputs, *states, *weights]."""
    count = 0 if initial_state is None else len(initial_state)
    out: dict[str, Any] = {"inputs": arrays[0]}
    if initial_state is not None:
        out["initial_state"] = arrays[1 : 1 + count]
    out["weights"] = dict(zip(weight_names, arrays[1 + count :], strict=True))
    return out
