"""The tolerance policy (docs/conformance.md, section 4), in one place and reported with
every result.

An engine's array ``got`` passes against the oracle's ``ref`` when, elementwise,
``|got - ref| <= tol * (1 + |ref|)``. The reported *relative error* is the largest
``|got - ref| / (1 + |ref|)``, directly comparable to ``tol``.

Gradients in float64 are checked against central finite differences of the float64
reference, whose own error (roundoff ``eps/h`` plus truncation ``h**2``, ``h = 1e-6``) is
about 1e-9; their tolerance is therefore looser than the forward one.

Some cases amplify rounding (gates with activations outside [0, 1], long unbounded
recurrences). For float32 the tolerance of a case is therefore the policy value or
``FLOAT32_HEADROOM`` times the error the float32 reference itself makes on that case,
whichever is larger: an engine must be as accurate as a plain float32 evaluation.

The finite differences' roundoff grows with the size of the loss they difference: about
``eps * S / h``, where ``S`` is the sum of the loss's terms' magnitudes. On cases whose
recurrence grows very large (the short cases with unbounded gates that Hypothesis draws)
that exceeds the policy value, so the gradient tolerance is never below
``FD_HEADROOM`` times that estimate: the check cannot be tighter than its yardstick.
"""

from __future__ import annotations

import numpy as np

#: (dtype, quantity) -> tol; quantity is "forward" or "gradients".
POLICY: dict[tuple[str, str], float] = {
    ("float64", "forward"): 1e-9,
    ("float64", "gradients"): 1e-6,
    ("float32", "forward"): 1e-5,
    ("float32", "gradients"): 1e-4,
    # Low precision: a layer computes in float32 and rounds what it returns, so a result is
    # within half a unit in the last place of its dtype (at most 2**-8 relative for
    # bfloat16, 2**-11 for float16): two of those, for states rounded between stateful calls.
    ("bfloat16", "forward"): 2 * 2.0**-8,
    ("bfloat16", "gradients"): 2 * 2.0**-8,
    ("float16", "forward"): 2 * 2.0**-11,
    ("float16", "gradients"): 2 * 2.0**-11,
}

#: Step of the central finite differences (float64).
FD_STEP = 1e-6


#: Multiple of the finite differences' estimated roundoff a gradient may differ by.
FD_HEADROOM = 10.0

#: Multiples of the float32 reference's own error allowed for (forward, gradients).
FLOAT32_HEADROOM = {"forward": 4.0, "gradients": 10.0}


def tolerance(
    dtype: str, quantity: str, reference_error: float = 0.0, fd_roundoff: float = 0.0
) -> float:
    """The tolerance for ``quantity`` (forward, stateful, pairwise or gradients) in ``dtype``;
    ``reference_error`` is the float32 reference's own relative error on the case,
    ``fd_roundoff`` the estimated roundoff of its finite-difference gradients."""
    kind = "gradients" if quantity == "gradients" else "forward"
    tol = POLICY[(dtype, kind)]
    if dtype != "float64":  # float32 and the low-precision dtypes
        tol = max(tol, FLOAT32_HEADROOM[kind] * reference_error)
    if kind == "gradients":
        tol = max(tol, FD_HEADROOM * fd_roundoff)
    return tol


def compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, max relative error) of ``got`` against ``ref``."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    if got.size == 0:
        return 0.0, 0.0
    diff = np.abs(got - ref)
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()), float((diff / (1.0 + np.abs(ref))).max())


def describe() -> str:
    rows = [
        f"  {dtype:<8} {quantity:<10} |d| <= {tol:g} * (1 + |ref|)"
        for (dtype, quantity), tol in POLICY.items()
    ]
    notes = [
        f"  gradients are compared with central differences (h = {FD_STEP:g}), within at "
        f"least {FD_HEADROOM:g}x their estimated roundoff",
        f"  float32: at least {FLOAT32_HEADROOM['forward']:g}x (gradients "
        f"{FLOAT32_HEADROOM['gradients']:g}x) the float32 reference's own error; bfloat16 "
        "and float16 likewise, on the case's values rounded to them",
    ]
    return "tolerance policy:\n" + "\n".join(rows + notes)
