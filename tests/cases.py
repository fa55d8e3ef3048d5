"""Layer configurations shared by several test modules (one place, not copied per test)."""

from __future__ import annotations

LAYERS = ("SimpleRNN", "LSTM", "GRU")

#: (layer, extra kwargs) covering each cell variant.
VARIANTS = (
    ("SimpleRNN", {}),
    ("LSTM", {}),
    ("GRU", {}),
    ("GRU", {"reset_after": True}),
)


def variant_id(variant) -> str:
    layer, kwargs = variant
    return layer + "".join(f"-{k}={v}" for k, v in kwargs.items())
