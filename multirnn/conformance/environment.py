"""What a conformance run ran on: package versions, devices and numeric modes, recorded in
every report so that runs can be compared across upgrades.

Versions come from package metadata (``importlib.metadata``), so nothing is imported to
read them. Devices and modes are asked of a framework only when it is already imported,
which is the case for every framework whose engine or oracle is part of the run (their
adapters import it); nothing here imports a framework.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import multirnn

#: Distributions whose versions go into every report, by the name pip lists them under.
#: Several builds of one framework (tensorflow, tensorflow-cpu, ...) are each listed when
#: installed. ``hypothesis`` draws the ``--full`` cases, so its version matters too.
PACKAGES = (
    "numpy",
    "torch",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-macos",
    "tensorflow-intel",
    "keras",
    "flax",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "hypothesis",
)

#: Environment variables that change what the frameworks compute or where; recorded when
#: set.
VARIABLES = (
    "JAX_ENABLE_X64",
    "JAX_PLATFORMS",
    "XLA_FLAGS",
    "KERAS_BACKEND",
    "TF_ENABLE_ONEDNN_OPTS",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MULTIRNN_BACKEND",
)

_TRUE = ("1", "y", "yes", "t", "true", "on")  # how JAX reads a boolean variable


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def packages() -> dict[str, str]:
    """``{distribution: version}`` for the installed :data:`PACKAGES`, in that order."""
    wanted = {_normalize(p): p for p in PACKAGES}
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = _normalize(dist.metadata.get("Name") or "")
        if name in wanted and wanted[name] not in found:
            found[wanted[name]] = dist.version
    return {p: found[p] for p in PACKAGES if p in found}


def _torch_device() -> str:
    torch = sys.modules["torch"]
    device = str(torch.get_default_device())
    if device == "cpu" and torch.cuda.is_available():
        device += " (CUDA is available; the suite's tensors stay on the default device)"
    elif device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _jax_device() -> str:
    jax = sys.modules["jax"]
    first = jax.devices()[0]
    return "cpu" if first.platform == "cpu" else f"{first.platform} ({first.device_kind})"


def _tensorflow_device() -> str:
    tf = sys.modules["tensorflow"]
    gpus = tf.config.list_physical_devices("GPU")
    if not tf.config.list_logical_devices("GPU") or not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu ({details.get('device_name', gpus[0].name)})"


def _keras_device() -> str:
    backend = sys.modules["keras"].backend.backend()
    if backend == "torch":  # Keras places torch tensors on CUDA whenever it can
        torch = sys.modules["torch"]
        return f"{'cuda' if torch.cuda.is_available() else 'cpu'} (torch backend)"
    ask = {"jax": _jax_device, "tensorflow": _tensorflow_device}.get(backend)
    return f"{ask()} ({backend} backend)" if ask else f"{backend} backend"


#: How to find where a built-in engine or oracle computes: the framework module that must
#: already be imported, and the question to ask it.
_DEVICES: dict[str, tuple[str | None, Callable[[], str]]] = {
    "numpy": (None, lambda: "cpu"),
    "torch": ("torch", _torch_device),
    "torch.nn": ("torch", _torch_device),
    "jax": ("jax", _jax_device),
    "flax.nnx": ("jax", _jax_device),
    "tensorflow": ("tensorflow", _tensorflow_device),
    "keras": ("keras", _keras_device),
    # The oracle creates its sessions with the CPUExecutionProvider only.
    "onnxruntime": (None, lambda: "cpu (CPUExecutionProvider)"),
}


def device(adapter: Any) -> str:
    """Where an engine computes in this run: the adapter's own ``device()`` when it defines
    one, else the built-in answer for the engines and oracles multirnn ships."""
    own = getattr(adapter, "device", None)
    try:
        if callable(own):
            return str(own())
        module, ask = _DEVICES.get(adapter.name, (None, None))
        if ask is None:
            return "unknown (the engine's adapter reports no device)"
        if module is not None and module not in sys.modules:
            return "unknown (its framework is not imported)"
        return ask()
    except Exception as exc:  # a report must not fail because a device query did
        return f"unknown ({type(exc).__name__}: {exc})"


def modes(installed: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings that decide which dtypes the frameworks compute in: JAX's 64-bit mode
    (asked of JAX when imported, else read from ``JAX_ENABLE_X64`` when JAX is installed),
    torch's default dtype and the Keras backend (when imported)."""
    out: dict[str, Any] = {}
    if "jax" in sys.modules:
        out["jax_enable_x64"] = bool(sys.modules["jax"].config.jax_enable_x64)
    elif "jax" in (packages() if installed is None else installed):
        out["jax_enable_x64"] = os.environ.get("JAX_ENABLE_X64", "").lower() in _TRUE
    if "torch" in sys.modules:
        out["torch_default_dtype"] = str(sys.modules["torch"].get_default_dtype()).split(".")[-1]
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        out["keras_backend"] = keras.backend.backend()
        out["keras_floatx"] = keras.config.floatx()
    return out


def _versions(adapter: Any) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in adapter.versions().items()}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def collect(adapters: Sequence[Any] = ()) -> dict[str, Any]:
    """Everything a report records about the machine and the software: the multirnn,
    Python and platform versions, :func:`packages`, each adapter's device and the versions
    it reports, :func:`modes` and the :data:`VARIABLES` that are set."""
    installed = packages()
    return {
        "multirnn": multirnn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": installed,
        "engines": {ad.name: {"device": device(ad), "versions": _versions(ad)} for ad in adapters},
        "modes": modes(installed),
        "variables": {k: os.environ[k] for k in VARIABLES if k in os.environ},
    }


def _on_off(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def describe(env: dict[str, Any]) -> list[str]:
    """The environment as a few terminal lines."""
    pkgs = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()) or "none"
    lines = [
        f"multirnn {env.get('multirnn')}, Python {env.get('python')} on {env.get('platform')}",
        f"packages: {pkgs}",
    ]
    engines = env.get("engines", {})
    if engines:
        lines.append("devices: " + ", ".join(f"{k} {v['device']}" for k, v in engines.items()))
    if env.get("modes"):
        lines.append("modes: " + ", ".join(f"{k} {_on_off(v)}" for k, v in env["modes"].items()))
    if env.get("variables"):
        lines.append("variables: " + " ".join(f"{k}={v}" for k, v in env["variables"].items()))
    return lines


def flatten(env: dict[str, Any]) -> list[tuple[str, str]]:
    """The environment as ``(name, value)`` pairs (JUnit properties)."""
    out = [(k, str(env[k])) for k in ("multirnn", "python", "platform") if k in env]
    out += [(f"package.{k}", v) for k, v in env.get("packages", {}).items()]
    for name, info in env.get("engines", {}).items():
        out.append((f"engine.{name}.device", info["device"]))
        out += [(f"engine.{name}.version.{k}", v) for k, v in info["versions"].items()]
    out += [(f"mode.{k}", _on_off(v)) for k, v in env.get("modes", {}).items()]
    out += [(f"variable.{k}", v) for k, v in env.get("variables", {}).items()]
    return out
