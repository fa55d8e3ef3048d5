"""The ops namespace the backend-neutral activations, regularizers and constraints are
evaluated with (see ``multirnn.ops``), in PyTorch."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def _sum(x, axis=None, keepdims=False):
    if axis is None:
        return torch.sum(x)
    return torch.sum(x, dim=axis, keepdim=keepdims)


def _max(x, axis=None, keepdims=False):
    if axis is None:
        return torch.amax(x)
    return torch.amax(x, dim=axis, keepdim=keepdims)


def _where(cond, a, b):
    if not torch.is_tensor(b):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return torch.where(cond, a, b)


def _clip(x, lo, hi):
    return torch.clamp(x, lo, hi)


TORCH_OPS = SimpleNamespace(
    abs=torch.abs,
    square=torch.square,
    sqrt=torch.sqrt,
    exp=torch.exp,
    expm1=torch.expm1,
    log1p=torch.log1p,
    tanh=torch.tanh,
    sigmoid=torch.sigmoid,
    maximum=lambda x, y: torch.clamp(x, min=y) if not torch.is_tensor(y) else torch.maximum(x, y),
    minimum=lambda x, y: torch.clamp(x, max=y) if not torch.is_tensor(y) else torch.minimum(x, y),
    clip=_clip,
    where=_where,
    sum=_sum,
    max=_max,
)
