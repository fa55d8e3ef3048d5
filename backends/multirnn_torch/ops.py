"""What the core needs of PyTorch: the ops namespace the backend-neutral activations,
regularizers and constraints are evaluated with (see ``multirnn.ops``), and the tensor
adapter of the call pipeline (``multirnn.pipeline``)."""

from __future__ import annotations

import numpy as np
import torch

from multirnn import ops, pipeline, precision

#: asked on every call: a dict lookup, which torch.compile also traces (a cache it cannot)
_NAMES = {d: str(d).replace("torch.", "") for d in (torch.float16, torch.bfloat16, torch.float32,
                                                     torch.float64, torch.bool)}  # fmt: skip


def dtype_name(dtype: torch.dtype) -> str:
    name = _NAMES.get(dtype)
    return name if name is not None else str(dtype).replace("torch.", "")


class TorchArrays(pipeline.Arrays):
    """Tensors stay where they are (one on another device than the call is refused);
    host data is copied to the call's device."""

    native = "torch.Tensor"

    @staticmethod
    def is_native(value) -> bool:
        # torch.compile traces a NumPy array as a tensor; it is host data all the same
        return torch.is_tensor(value) and not isinstance(value, np.ndarray)

    def own(self, value, arg, owner, place):
        if place is not None and value.device != place:
            raise ValueError(
                f"{owner}{arg} is on {value.device} but the weights are on {place}; move it "
                f"with .to({str(place)!r})"
            )
        return value

    def from_host(self, array, place):
        # a writable, C-contiguous copy where needed: torch takes no negative strides
        array = np.require(array, requirements=("C", "W"))
        if array.dtype.name == "bfloat16":  # torch reads no ml_dtypes array: its bits, then
            return torch.as_tensor(torch.from_numpy(array.view(np.int16)).view(torch.bfloat16),
                                   device=place)  # fmt: skip
        return torch.as_tensor(array, device=place)

    def dtype(self, value) -> str:
        return dtype_name(value.dtype)

    def shape(self, value) -> tuple:
        shape = tuple(value.shape)
        if not torch.compiler.is_compiling():
            return shape
        # a dynamic dimension (torch.export's Dim) is unknown until the program runs
        return tuple(d if isinstance(d, int) else None for d in shape)

    def place_of(self, value) -> torch.device:
        return value.device

    def cast(self, value, dtype: str) -> torch.Tensor:
        return value.to(getattr(torch, dtype))

    def to_numpy(self, value) -> np.ndarray:
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # as ml_dtypes' bfloat16, bit for bit
            bits = value.contiguous().view(torch.int16).numpy()
            return bits.view(precision.numpy_dtype("bfloat16")).copy()
        return value.numpy().copy()

    def tensor(self, value, dtype: torch.dtype, device=None) -> torch.Tensor:
        """Host values (NumPy arrays of any float dtype, bfloat16 too) as a new tensor."""
        return self.from_host(np.asarray(value), device).to(dtype)


TORCH_ARRAYS = TorchArrays()


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


TORCH_OPS = ops.namespace(
    torch,
    maximum=lambda x, y: torch.clamp(x, min=y) if not torch.is_tensor(y) else torch.maximum(x, y),
    minimum=lambda x, y: torch.clamp(x, max=y) if not torch.is_tensor(y) else torch.minimum(x, y),
    where=_where,
    sum=_sum,
    max=_max,
)
