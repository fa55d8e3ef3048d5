"""Engine registry and selection.

Engines are found through the ``multirnn.backends`` entry-point group; each entry point
names an :class:`EngineInfo`, which is cheap to import (no framework). The framework is
imported only when an engine is first used. Selection order: an explicit
:func:`set_backend` > the ``MULTIRNN_BACKEND`` environment variable > automatic (the
highest-priority engine whose framework is importable; the NumPy reference last).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from multirnn._checks import did_you_mean

ENTRY_POINT_GROUP = "multirnn.backends"
ENV_VAR = "MULTIRNN_BACKEND"


class UnknownEngineError(ValueError):
    """An engine name that no installed distribution registers."""


class EngineUnavailableError(ImportError):
    """A registered engine whose framework is not installed (or failed to import)."""


@dataclass(frozen=True)
class EngineInfo:
    """What an engine distribution registers: how to find and load it, and what it needs.

    ``module`` must define ``SimpleRNN``, ``LSTM``, ``GRU`` and ``Recurrent``; it may
    define ``framework_version()``. ``testing`` names the module whose ``ADAPTER`` lets the
    conformance suite drive the engine (see ``multirnn.conformance.adapters``).
    ``benchmark_variants`` names other ways the adapter's benchmark hook can run the
    engine (for example "xla"), each benchmarked as its own contender.
    """

    name: str
    module: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    priority: int = 0
    description: str = ""
    testing: str | None = None
    benchmark_variants: tuple[str, ...] = ()

    def installed(self) -> bool:
        return all(importlib.util.find_spec(req) is not None for req in self.requires)

    def install_hint(self) -> str:
        """The command that installs what the engine needs. multirnn's own extras install
        from a multirnn checkout (multirnn is not on PyPI); a third-party engine's
        requirements are named as they are."""
        if self.extra:
            return f'pip install ".[{self.extra}]" (from a multirnn checkout)'
        return "pip install " + " ".join(self.requires)


@dataclass(frozen=True)
class Engine:
    """A loaded engine: the layer classes of one framework."""

    info: EngineInfo
    module: ModuleType = field(repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def SimpleRNN(self) -> type:
        return self.module.SimpleRNN

    @property
    def LSTM(self) -> type:
        return self.module.LSTM

    @property
    def GRU(self) -> type:
        return self.module.GRU

    @property
    def Recurrent(self) -> type:
        return self.module.Recurrent

    @property
    def Bidirectional(self) -> type:
        cls = getattr(self.module, "Bidirectional", None)
        if cls is None:
            raise AttributeError(f"engine {self.name!r} provides no Bidirectional wrapper")
        return cls

    @property
    def RNN(self) -> type:
        cls = getattr(self.module, "RNN", None)
        if cls is None:
            runs = [n for n, e in _loaded.items() if getattr(e.module, "RNN", None) is not None]
            raise AttributeError(
                f"engine {self.name!r} does not run users' cells (RNN) yet; engines that do: "
                f"{', '.join(sorted(set(runs) | {'numpy'}))}"
            )
        return cls

    def layer_class(self, layer: str) -> type:
        return getattr(self.module, layer)

    def framework_version(self) -> str | None:
        getter = getattr(self.module, "framework_version", None)
        return getter() if getter else None


_BUILTIN = EngineInfo(
    name="numpy",
    module="multirnn.reference.layers",
    testing="multirnn.reference.testing",
    requires=("numpy",),
    priority=-100,
    description="NumPy reference engine (float64 oracle, framework-free inference)",
)

_registry: dict[str, EngineInfo] | None = None
_broken: dict[str, str] = {}
_loaded: dict[str, Engine] = {}
_explicit: str | None = None


def registry(*, refresh: bool = False) -> dict[str, EngineInfo]:
    """Every registered engine by name (entry points plus the built-in reference)."""
    global _registry
    if _registry is None or refresh:
        found: dict[str, EngineInfo] = {_BUILTIN.name: _BUILTIN}
        _broken.clear()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == _BUILTIN.name:
                continue
            try:  # a broken plugin is reported, and must not break the others
                info = ep.load()
            except Exception as exc:
                _broken[ep.name] = f"entry point {ep.value} failed to load: {exc!r}"
                continue
            if not isinstance(info, EngineInfo) or info.name != ep.name:
                _broken[ep.name] = (
                    f"entry point {ep.value} must name an EngineInfo called {ep.name!r}, "
                    f"got {info!r}"
                )
                continue
            found[ep.name] = info
        _registry = found
    return _registry


def _listing() -> str:
    rows = []
    for info in sorted(registry().values(), key=lambda i: -i.priority):
        state = "installed" if info.installed() else f"not installed: {info.install_hint()}"
        rows.append(f"{info.name} ({state})")
    rows += [f"{name} (broken: {why})" for name, why in _broken.items()]
    return "; ".join(rows)


def _info(name: str) -> EngineInfo:
    if not isinstance(name, str):
        raise TypeError(f"an engine name must be a string, got {name!r}")
    engines = registry()
    if name in _broken:
        raise EngineUnavailableError(f"multirnn engine {name!r} is broken: {_broken[name]}")
    if name not in engines:
        hint = did_you_mean(name, engines)
        raise UnknownEngineError(
            f"unknown multirnn engine {name!r}.{hint} Known engines: {_listing()}. "
            f"Third-party engines register under the {ENTRY_POINT_GROUP!r} entry-point group."
        )
    return engines[name]


def engine(name: str | None = None) -> Engine:
    """The engine called ``name`` (default: the selected one), loading it on first use."""
    if name is None:
        name = backend()
    if name in _loaded:
        return _loaded[name]
    info = _info(name)
    if not info.installed():
        missing = [r for r in info.requires if importlib.util.find_spec(r) is None]
        raise EngineUnavailableError(
            f"multirnn engine {name!r} needs {', '.join(missing)}, which is not installed. "
            f"Install it with: {info.install_hint()}. Known engines: {_listing()}."
        )
    try:
        module = importlib.import_module(info.module)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"multirnn engine {name!r} failed to import ({info.module}): {exc}"
        ) from exc
    missing = [c for c in ("SimpleRNN", "LSTM", "GRU", "Recurrent") if not hasattr(module, c)]
    if missing:
        raise EngineUnavailableError(
            f"multirnn engine {name!r}: module {info.module} lacks {', '.join(missing)}"
        )
    loaded = Engine(info=info, module=module)
    _loaded[name] = loaded
    return loaded


def set_backend(name: str | None) -> None:
    """Select the engine for ``multirnn.LSTM`` etc.; ``None`` returns to env/automatic."""
    global _explicit
    if name is not None:
        engine(name)  # fail now, at selection time, with the full listing
    _explicit = name


def backend() -> str:
    """The name of the selected engine."""
    if _explicit is not None:
        return _explicit
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        info = _info(env)
        if not info.installed():
            engine(env)  # raises the not-installed error
        return env
    for info in sorted(registry().values(), key=lambda i: -i.priority):
        if info.installed():
            return info.name
    return _BUILTIN.name


def available() -> list[str]:
    """Names of the registered engines whose frameworks are installed."""
    return [n for n, info in registry().items() if info.installed()]


def _installed_version(info: EngineInfo) -> str | None:
    """The framework's version from package metadata (never imports the framework)."""
    if info.name in _loaded:
        return _loaded[info.name].framework_version()
    if not info.requires:
        return None
    dists = importlib.metadata.packages_distributions().get(info.requires[0], [])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def describe() -> list[dict[str, Any]]:
    """One row per registered engine, for ``multirnn info``."""
    rows = []
    selected = None
    with contextlib.suppress(UnknownEngineError, EngineUnavailableError):
        selected = backend()
    for info in sorted(registry().values(), key=lambda i: -i.priority):
        row: dict[str, Any] = {
            "name": info.name,
            "installed": info.installed(),
            "selected": info.name == selected,
            "requires": list(info.requires),
            "install": info.install_hint() if info.requires else "",
            "description": info.description,
            "framework_version": None,
        }
        if row["installed"]:
            row["framework_version"] = _installed_version(info)
        rows.append(row)
    for name, why in _broken.items():
        rows.append(
            {
                "name": name,
                "installed": False,
                "selected": False,
                "requires": [],
                "install": "",
                "description": f"broken: {why}",
                "framework_version": None,
            }
        )
    return rows
