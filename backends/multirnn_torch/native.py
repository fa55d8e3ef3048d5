"""The generic path's time loops in native code, compiled on first use.

The Python loop of ``multirnn_torch.backprop`` pays the interpreter's cost for each of the
dozen small operations of every step; on the documented defaults (``hard_sigmoid`` LSTM,
GRU with ``reset_after=False``), which no fused PyTorch kernel computes, that overhead is
most of the time. ``csrc/scan.cpp`` runs the same loops (forward and backward, same buffers,
same ATen products and activations) as one call each.

``pip install`` compiles nothing: the first call that can use the native loop builds it
with PyTorch's C++ extension machinery under the torch extensions directory
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), in a directory named by
a hash of everything the build command depends on (:func:`build_key`: the source, the flags,
torch's version and install, the interpreter and its environment, the compiler), so later
processes load it from there and two virtual environments never rebuild each other's.

One process builds at a time: each takes an operating-system lock on a file in that
directory (:class:`BuildLock`), which the kernel releases when its holder dies however it
dies, so a killed build never blocks the next one; a lock file torch's own machinery left
behind there is removed before building. A process that cannot get the lock within
``MULTIRNN_TORCH_NATIVE_WAIT`` seconds (default 300) does not build. When the build fails
or times out (no compiler, no headers, another process still building), the Python loop
is used and one warning says why.

``MULTIRNN_TORCH_NATIVE`` chooses: ``auto`` (the default) as above; ``1`` requires the native
loop (a failed build raises with the end of its log); ``0`` never builds or uses it. Calls
the native loop does not cover (:func:`ineligibility`) take the Python loop in every mode.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import torch

from multirnn._lock import BuildLock

#: the environment variable that chooses the loop, and its accepted values
ENV = "MULTIRNN_TORCH_NATIVE"
MODES = ("auto", "1", "0")

#: the environment variable that bounds the wait for another process's build, in seconds
WAIT_ENV = "MULTIRNN_TORCH_NATIVE_WAIT"
DEFAULT_WAIT = 300.0

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
VERSION = 3

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
    piecewise-linear gates, ``multirnn.builtin_cells.CLAMP01``). Pure: the build and the
    switch are not consulted.
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


def wait_limit() -> float:
    """The value of ``MULTIRNN_TORCH_NATIVE_WAIT`` in seconds (300 when unset), checked."""
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_WAIT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(
            f"{WAIT_ENV} must be a number of seconds >= 0 (how long to wait for another "
            f"process's build of the native loop), got {os.environ[WAIT_ENV]!r}"
        )
    return value


def compiler() -> tuple[str, str]:
    """The C++ compiler torch's build runs (``CXX``, else ``c++``; ``cl`` on Windows), as
    ``(resolved path, its --version output)``: a compiler upgraded in place, or another one
    named by ``CXX``, is another build."""
    name = os.environ.get("CXX", "cl" if os.name == "nt" else "c++")
    path = shutil.which(name) or name
    if os.name == "nt":  # cl has no --version; its path names its version
        return path, ""
    try:
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        version = probe.stdout.strip() or probe.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:  # no compiler: the build says so
        version = f"unavailable: {type(exc).__name__}"
    return path, version


_compilers: dict[tuple[str | None, str | None], tuple[str, str]] = {}


def build_key(flags: list[str] | None = None) -> str:
    """A hash of everything the build command depends on: the source and the protocol
    version, the flags (by default the first set), torch's version and install directory
    (its headers and libraries), the interpreter and its environment's prefix (the include
    paths torch adds), and the compiler. Builds with different keys never share a
    directory, so no process loads or rebuilds another environment's library."""
    flags = flag_sets()[0] if flags is None else flags
    cache = (os.environ.get("CXX"), os.environ.get("PATH"))
    if cache not in _compilers:
        _compilers[cache] = compiler()
    parts = [
        hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        str(VERSION),
        repr(list(flags)),
        torch.__version__,
        os.path.dirname(os.path.realpath(torch.__file__)),
        sys.executable,
        sys.prefix,
        sys.version,
        *_compilers[cache],
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def library_name(flags: list[str] | None = None) -> str:
    """The extension's name, which is also its build directory's: :func:`build_key`'s hash,
    so a changed source, another torch, environment or compiler never loads a stale
    library."""
    return f"multirnn_scan_{build_key(flags)}"


def build_root() -> Path:
    """Where the build directories are: ``TORCH_EXTENSIONS_DIR``, else torch's default."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        from torch.utils import cpp_extension

        root = cpp_extension.get_default_build_root()
    return Path(root)


def _compile():
    """Build (or find already built) and load the library; returns its op namespace. Tries
    each of :func:`flag_sets` in turn; raises the last failure. Each attempt holds its build
    directory's :class:`BuildLock`; a timeout ends all attempts (the next set would only
    start a second compile beside the running one)."""
    from torch.utils import cpp_extension  # needs setuptools; imported only when building

    failures = []
    wait = wait_limit()
    for flags in flag_sets():
        name = library_name(flags)
        directory = build_root() / name
        directory.mkdir(parents=True, exist_ok=True)
        with BuildLock(directory, wait, "the build lock", WAIT_ENV):
            # torch's own lock, left by a process killed inside its build: we hold the only
            # lock builders of this directory take, so no one else is building
            baton = directory / "lock"
            if baton.exists():
                log.warning("removing %s, left by a build that was killed", baton)
                baton.unlink(missing_ok=True)
            log.info("building or loading the native scan loop %s (%s)", name, " ".join(flags))
            try:
                cpp_extension.load(
                    name=name,
                    sources=[str(SOURCE)],
                    extra_cflags=flags,
                    build_directory=str(directory),
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
        wait_limit()  # a malformed bound is the caller's error, as a malformed switch is
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


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def forward(loop) -> None:
    """Fill the forward buffers of ``loop`` (a ``backprop.Loop``) with the native loop."""
    layer, act, gate, reset_after = _codes(loop.cfg)
    loop.ops.forward(
        layer, act, gate, reset_after, loop.A, loop.U, loop.bias_rec, loop.h0.contiguous(),
        loop.c0.contiguous(), loop.mask_tm, _contiguous(loop.mr), loop.H, loop.Hin, loop.C,
        loop.R,
    )  # fmt: skip


def lstm_backward(loop, DZ, dH, dc_final):
    """(dh0, dc0); fills DZ with the gradients of the pre-activations, forming the per-step
    coefficients on the way (the Python loop forms them for all steps first)."""
    _, act, gate, _ = _codes(loop.cfg)
    dh, dc = loop.ops.lstm_backward(
        act, gate, DZ, loop.A, loop.C, loop.c0.contiguous(), dH.contiguous(),
        dc_final.contiguous(), loop.mask_tm, _contiguous(loop.mr), loop.U,
    )  # fmt: skip
    return dh, dc


def gru_backward(loop, DZ, DREC, K_z, K_h, K_r, dH):
    """dh0; fills DZ (and DREC) with the gradients of the pre-activations."""
    (dh,) = loop.ops.gru_backward(
        bool(loop.cfg[4]), DZ, DREC, K_z.contiguous(), K_h.contiguous(), K_r.contiguous(),
        loop.A, dH.contiguous(), loop.mask_tm, _contiguous(loop.mr), loop.U,
    )  # fmt: skip
    return dh


def simple_backward(loop, DZ, K, dH):
    """dh0; fills DZ with the gradients of the pre-activations."""
    (dh,) = loop.ops.simple_backward(DZ, K.contiguous(), dH.contiguous(), loop.mask_tm,
                                     _contiguous(loop.mr), loop.U)  # fmt: skip
    return dh
