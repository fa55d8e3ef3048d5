"""The oracle: the NumPy reference in float64, and central finite differences of it.

Results are what a layer call returns, as a list: ``[output]`` or ``[output, *states]``
with ``return_state``. A ``Bidirectional`` case returns its merged output (both outputs
with ``merge_mode=None``) and then the forward layer's states and the backward layer's.
Gradients are those of ``sum_k <cotangent_k, result_k>`` with respect to the inputs, the
initial states (when given) and every weight.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from multirnn.conformance.cases import Case, CaseData
from multirnn.conformance.tolerances import FD_STEP, compare
from multirnn.reference import kernels
from multirnn.spec import LayerSpec

GRADIENT_KEYS = ("inputs", "initial_state", "kernel", "recurrent_kernel", "bias")


def results(spec: LayerSpec, output: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
    return [output, *states] if spec.return_state else [output]


def run(spec: LayerSpec, data: CaseData) -> list[np.ndarray]:
    output, states = kernels.forward(
        spec,
        data.weights,
        data.inputs,
        mask=data.mask,
        initial_state=data.initial_state,
        input_dropout=data.input_dropout,
        recurrent_dropout=data.recurrent_dropout,
    )
    return results(spec, output, states)


def run_stateful(spec: LayerSpec, data: CaseData) -> list[list[np.ndarray]]:
    """The calls of a stateful case, threading the final states by hand."""
    states = None
    out = []
    for call in data.calls:
        if isinstance(call.reset, list):
            states = [s.copy() for s in call.reset]
        elif call.reset == "zeros":
            states = None
        output, states = kernels.forward(
            spec, data.weights, call.inputs, mask=call.mask, initial_state=states
        )
        out.append(results(spec, output, states))
    return out


def run_bidirectional(spec: LayerSpec, merge_mode: str | None, data: CaseData):
    """Keras's ``Bidirectional`` written out from its definition, independently of the
    engines' shared wrapper code: the backward copy runs with ``go_backwards`` flipped, its
    sequence is reversed back to input order, and both copies zero masked steps when
    returning sequences."""
    spec = spec.replace(zero_output_for_mask=spec.return_sequences)
    n, ns = len(spec.weight_names), spec.num_states
    initial = data.initial_state
    runs = []
    for weights, direction, states in (
        (data.weights[:n], spec, initial[:ns] if initial else None),
        (data.weights[n:], spec.replace(go_backwards=not spec.go_backwards),
         initial[ns:] if initial else None),
    ):  # fmt: skip
        runs.append(kernels.forward(direction, weights, data.inputs, mask=data.mask,
                                    initial_state=states))  # fmt: skip
    (y, states_f), (y_rev, states_b) = runs
    if spec.return_sequences:
        y_rev = y_rev[:, ::-1]
    merged = {
        "concat": lambda: [np.concatenate([y, y_rev], axis=-1)],
        "sum": lambda: [y + y_rev],
        "mul": lambda: [y * y_rev],
        "ave": lambda: [(y + y_rev) / 2],
        None: lambda: [y, y_rev],
    }[merge_mode]()
    return [*merged, *states_f, *states_b] if spec.return_state else merged


def run_case(case: Case, spec: LayerSpec, data: CaseData) -> list[np.ndarray]:
    """The results of a (non-stateful) case's call, in ``spec``'s dtype."""
    if case.wrapped:
        return run_bidirectional(spec, case.merge_mode, data)
    return run(spec, data)


Forward = Callable[[LayerSpec, CaseData], list[np.ndarray]]


def loss(spec: LayerSpec, data: CaseData, forward: Forward = run) -> float:
    return float(sum(np.sum(c * r) for c, r in zip(data.cotangents, forward(spec, data))))


def _replace(data: CaseData, key: str, index: int | None, value: np.ndarray) -> CaseData:
    if key == "inputs":
        return _with(data, inputs=value)
    if key == "initial_state":
        states = list(data.initial_state)
        states[index] = value
        return _with(data, initial_state=states)
    weights = list(data.weights)
    weights[("kernel", "recurrent_kernel", "bias").index(key)] = value
    return _with(data, weights=weights)


def _with(data: CaseData, **changes) -> CaseData:
    return dataclasses.replace(data, **changes)


def _leaves(data: CaseData, spec: LayerSpec):
    yield "inputs", None, data.inputs
    for i, s in enumerate(data.initial_state or []):
        yield "initial_state", i, s
    for name, w in zip(spec.weight_names, data.weights):
        yield name, None, w


def finite_difference_gradients(
    spec: LayerSpec, data: CaseData, forward: Forward = run
) -> dict[str, object]:
    """Central differences of the loss, one coordinate at a time (small cases only).

    ``forward`` is the function differentiated (the reference by default; test doubles pass
    their own)."""
    grads: dict[str, object] = {}
    for key, index, value in _leaves(data, spec):
        grad = np.zeros_like(value)
        flat = value.reshape(-1)
        for j in range(flat.size):
            plus, minus = flat.copy(), flat.copy()
            plus[j] += FD_STEP
            minus[j] -= FD_STEP
            up = loss(spec, _replace(data, key, index, plus.reshape(value.shape)), forward)
            down = loss(spec, _replace(data, key, index, minus.reshape(value.shape)), forward)
            grad.reshape(-1)[j] = (up - down) / (2 * FD_STEP)
        if key == "initial_state":
            grads.setdefault("initial_state", []).append(grad)
        else:
            grads[key] = grad
    return grads


# ``values``: which numbers the case is fed. The case's own are float32 numbers (float32
# and float64 engines see the same ones); a low-precision group feeds them rounded to its
# dtype, and the reference computes on exactly those.


def data(case: Case, values: str = "float32") -> CaseData:
    """The case's data as float64 arrays holding ``values`` numbers."""
    if values == "float32":
        return case.data()
    return case.data().cast(values, back=True)


@functools.lru_cache(maxsize=4096)
def forward(case: Case, values: str = "float32") -> list[np.ndarray]:
    """The reference results of a (non-stateful) case, float64."""
    return run_case(case, case.spec("float64"), data(case, values))


@functools.lru_cache(maxsize=1024)
def stateful(case: Case, values: str = "float32") -> list[list[np.ndarray]]:
    """The reference results of each call of a stateful case, float64."""
    return run_stateful(case.spec("float64"), data(case, values))


@functools.lru_cache(maxsize=4096)
def own_error(case: Case, dtype: str = "float32") -> float:
    """How far the reference itself lands from float64 when run in ``dtype`` (float32, or
    a low-precision dtype on its own values): the case's sensitivity to rounding; see
    tolerances.tolerance."""
    values = "float32" if dtype == "float32" else dtype
    spec = case.spec(dtype)
    cast = data(case, values).cast(dtype)
    if case.stateful:
        got = [r for call in run_stateful(spec, cast) for r in call]
        want = [r for call in stateful(case, values) for r in call]
    else:
        got, want = run_case(case, spec, cast), forward(case, values)
    return max((compare(g, w)[1] for g, w in zip(got, want)), default=0.0)


def float32_error(case: Case) -> float:
    """:func:`own_error` in float32."""
    return own_error(case, "float32")


@functools.lru_cache(maxsize=4096)
def fd_roundoff(case: Case, values: str = "float32") -> float:
    """The finite differences' roundoff on a case, ``eps * S / h``, where ``S`` sums the
    magnitudes of the loss's terms (see tolerances)."""
    cotangents = data(case, values).cotangents
    results = forward(case, values)
    scale = sum(float(np.sum(np.abs(c * r))) for c, r in zip(cotangents, results))
    return float(np.finfo(np.float64).eps) * scale / FD_STEP


@functools.lru_cache(maxsize=4096)
def gradients(case: Case, values: str = "float32") -> dict[str, object]:
    """Finite-difference gradients of the reference for a (non-stateful) case, float64."""
    return finite_difference_gradients(case.spec("float64"), data(case, values))
