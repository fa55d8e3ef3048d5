"""The NumPy reference engine (``backend="numpy"``): always available, float64 by default.

Importing this package is cheap; the layers live in :mod:`multirnn.reference.layers` and the
functional entry in :mod:`multirnn.reference.kernels`.
"""

from multirnn.engines import _BUILTIN as ENGINE

__all__ = ["ENGINE"]
