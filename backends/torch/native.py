"""The generic path's time loops in native code, compiled on first use.

The Python loop of ``multirnn_torch.backprop`` pays the interpreter's cost for each of the
dozen small operations of every step; on the documented defaults (``hard_sigmoid`` LSTM,
GRU with ``reset_after=False``), which no fused PyTorch kernel computes, that overhead is
most of the time. ``csrc/scan.cpp`` runs the same loops (forward and backward, same buffers,
same ATen products and activations) as one call each.

``pip install`` compiles nothing: the first call that can use the native loop builds it
with PyTorch's C++ extension machinery into the torch extensions directory
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), under a name that
carries a hash of the source and of the torch version, so later processes load it from
there. torch's own lock file lets concurrent processes (pytest-xdist workers) wait for one
build. When the build fails (no compiler, no headers), the Python loop is used and one
warning says why.

``MULTIRNN_TORCH_NATIVE`` chooses: ``auto`` (the default) as above; ``1`` requires the native
loop (a failed build raises with the end of its log); ``0`` never builds or uses it. Calls
the native loop does not cover (:func:`ineligibility`) take the Python loop in every mode.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import torch

#: the environment variable that chooses the loop, and its accepted values
ENV = "MULTIRNN_TORCH_NATIVE"
MODES = ("auto", "1", "0")

#: codes shared with csrc/scan.cpp (enum Layer, enum Activation)
LAYERS = {"SimpleRNN": 0, "LSTM": 1, "GRU": 2}
ACTIVATIONS = {
    name: code
    for code, name in enumerate(
        (
            "linear",
            "tanh",
            "sigmoid",
            "hard_sigmoid",
            "hard_sigmoid_relu6",
            "relu",
            "exponential",
            "softsign",
            "softplus",
            "elu",
            "selu",
            "clamp01",
        )
    )
}

#: the protocol version csrc/scan.cpp reports
VERSION = 2

SOURCE = Path(__file__).with_name("csrc") / "scan.cpp"


def flag_sets() -> list[list[str]]:
    """The compiler flags to try, in order. Always: no contraction into fused multiply-adds
    (each product rounded, as ATen's kernels do) and no trapping maths, so that selects
    vectorise (changes no value). First, where ATen's threads are OpenMP's (Linux wheels),
    with OpenMP: ``at::parallel_for`` in the source then splits the batch over those threads,
    run by the OpenMP runtime torch already loaded (none is linked in); then without it
    (one thread per call), should that not build or load."""
    if os.name == "nt":
        return [["/O2", "/fp:precise"]]
    flags = ["-O3", "-ffp-contract=off", "-fno-trapping-math"]
    if sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info():
        return [[*flags, "-fopenmp"], flags]
    return [flags]


_LOG_TAIL = 3000

log = logging.getLogger("multirnn.torch.native")


class NativeBuildError(RuntimeError):
    """The native loop could not be built or loaded (with ``MULTIRNN_TORCH_NATIVE=1``)."""


class NativeFallbackWarning(UserWarning):
    """The native loop could not be built; the Python loop runs instead."""


def mode() -> str:
    """The value of ``MULTIRNN_TORCH_NATIVE`` (``auto`` when unset), checked."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(
            f"{ENV} must be one of {', '.join(MODES)} (auto: use the native loop when it "
            f"builds; 1: require it; 0: never), got {os.environ[ENV]!r}"
        )
    return value


def ineligibility(cfg, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the native loop computes this call of the generic loop; otherwise why not.

    ``cfg`` is the loop's ``(layer, units, activation, gate_activation, reset_after)``, with
    the gate activation after ``backprop.internal_weights`` (``clamp01`` for the folded
    piecewise-linear gates). Pure: the build and the switch are not consulted.
    """
    layer, _units, act, gate, _reset_after = cfg
    if device.type != "cpu":
        return f"tensors on {device}: the native loop runs on CPU"
    if dtype not in (torch.float32, torch.float64):
        return f"dtype {dtype}: the native loop computes float32 and float64"
    if layer not in LAYERS:
        return f"layer {layer!r} has no native loop"
    for name in (act, gate) if layer != "SimpleRNN" else (act,):
        if name not in ACTIVATIONS:
            return f"activation {name!r} has no native form"
    if torch.compiler.is_compiling():
        return "torch.compile traces the Python loop"
    return None


# -- building and loading -------------------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ops": the op namespace, or "error": why the build failed


def library_name(flags: list[str] | None = None) -> str:
    """The extension's name: a hash of the source, the flags (by default the first set) and
    the torch version, so that a changed source or another torch never loads a stale
    library."""
    flags = flag_sets()[0] if flags is None else flags
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{torch.__version__}|{flags}|{VERSION}".encode())
    return f"multirnn_scan_{digest.hexdigest()[:12]}"


def _compile():
    """Build (or find already built) and load the library; returns its op namespace. Tries
    each of :func:`flag_sets` in turn; raises the last failure."""
    from torch.utils import cpp_extension  # needs setuptools; imported only when building

    failures = []
    for flags in flag_sets():
        name = library_name(flags)
        log.info("building or loading the native scan loop %s (%s)", name, " ".join(flags))
        try:
            cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=flags,
                is_python_module=False,
                verbose=False,
            )
            break
        except Exception as exc:  # a compile error, or a library that does not load
            failures.append(exc)
    else:
        raise failures[-1]
    ops = torch.ops.multirnn_scan
    if ops.version() != VERSION:
        raise NativeBuildError(
            f"the loaded native scan library reports version {ops.version()}, expected "
            f"{VERSION}; another multirnn's library is loaded in this process"
        )
    return ops


def _tail(text: str) -> str:
    """A build log cut to its first line (what failed) and its end (the compiler's error)."""
    if len(text) <= _LOG_TAIL:
        return text
    first = text.split("\n", 1)[0][:200]
    return f"{first}\n...\n{text[-_LOG_TAIL:]}"


def build():
    """Build and load the native loop now (for instance while building a container image);
    returns its op namespace. Raises :class:`NativeBuildError` with the end of the build log
    when it cannot be built."""
    with _lock:
        if "ops" in _state:
            return _state["ops"]
        if "error" not in _state:
            try:
                _state["ops"] = _compile()
                return _state["ops"]
            except Exception as exc:  # no compiler, no ninja, no setuptools, a compile error
                _state["error"] = f"{type(exc).__name__}: {_tail(str(exc))}"
        raise NativeBuildError(
            f"the native scan loop ({SOURCE.name}) could not be built: {_state['error']}"
        )


def loaded_ops(cfg, device: torch.device, dtype: torch.dtype):
    """The native loop's op namespace for this call, or None for the Python loop: None when
    the switch is 0, the call is ineligible, or (in auto mode) the build failed, which is
    warned about once per process."""
    chosen = mode()
    if chosen == "0" or ineligibility(cfg, device, dtype) is not None:
        return None
    ops = _state.get("ops")
    if ops is not None:
        return ops
    if chosen == "1":
        return build()
    if "error" in _state:
        return None
    try:
        return build()
    except NativeBuildError as exc:
        warnings.warn(
            f"{str(exc).rstrip('.')}. The generic PyTorch path runs its Python loop instead "
            f"(same numbers, slower); set {ENV}=0 to skip the build and this warning.",
            NativeFallbackWarning,
            stacklevel=4,
        )
        return None


# -- the calls ---------------------------------------------------------------------------------


def _codes(cfg):
    layer, _units, act, gate, reset_after = cfg
    return LAYERS[layer], ACTIVATIONS[act], ACTIVATIONS.get(gate, 0), bool(reset_after)


def time_major_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The (batch, time) boolean mask as the loops read it: (time, batch), contiguous."""
    return None if mask is None else mask.t().contiguous()


def forward(ops, cfg, A, U, bias_rec, h0, c0, mask_tm, mr, H, Hin, C, R) -> None:
    """Fill the forward buffers (see ``backprop._Scan.forward``) with the native loop."""
    layer, act, gate, reset_after = _codes(cfg)
    ops.forward(
        layer, act, gate, reset_after, A, U, bias_rec, h0.contiguous(), c0.contiguous(),
        mask_tm, None if mr is None else mr.contiguous(), H, Hin, C, R,
    )  # fmt: skip


def lstm_backward(ops, cfg, DZ, A, C, c0, dH, dc_final, mask_tm, mr, U):
    """(dh0, dc0); fills DZ with the gradients of the pre-activations, forming the per-step
    coefficients on the way (the Python loop forms them for all steps first)."""
    _, act, gate, _ = _codes(cfg)
    dh, dc = ops.lstm_backward(
        act, gate, DZ, A, C, c0.contiguous(), dH.contiguous(), dc_final.contiguous(), mask_tm,
        None if mr is None else mr.contiguous(), U,
    )  # fmt: skip
    return dh, dc


def gru_backward(ops, reset_after, DZ, DREC, K_z, K_h, K_r, A, dH, mask_tm, mr, U):
    """dh0; fills DZ (and DREC) with the gradients of the pre-activations."""
    (dh,) = ops.gru_backward(
        bool(reset_after), DZ, DREC, K_z.contiguous(), K_h.contiguous(), K_r.contiguous(), A,
        dH.contiguous(), mask_tm, None if mr is None else mr.contiguous(), U,
    )  # fmt: skip
    return dh


def simple_backward(ops, DZ, K, dH, mask_tm, mr, U):
    """dh0; fills DZ with the gradients of the pre-activations."""
    (dh,) = ops.simple_backward(DZ, K.contiguous(), dH.contiguous(), mask_tm,
                                None if mr is None else mr.contiguous(), U)  # fmt: skip
    return dh
