"""One resolver for initializers, regularizers and constraints: a name, a Keras-style
``{"class_name": ..., "config": {...}}`` dict, an instance, or a plain callable."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from multirnn._checks import did_you_mean, show


class Configurable:
    """Equality, hashing and repr from ``get_config()``: two initializers (regularizers,
    constraints) are the same when their class and configuration are."""

    class_name: ClassVar[str]

    def get_config(self) -> dict[str, Any]:
        return {}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _instantiate(cls: type, config: dict[str, Any], *, owner: str, arg: str) -> Any:
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(
            f"{owner}: {arg} {cls.class_name} got unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(**config)


def resolve(
    value: object,
    *,
    owner: str,
    arg: str,
    kind: str,
    names: dict[str, str],
    classes: dict[str, type],
    base: type,
    allow_none: bool,
    name_defaults: dict[str, dict[str, Any]] | None = None,
) -> Any:
    accepted = f"a name ({', '.join(names)}), a {{'class_name', 'config'}} dict, an instance"
    if allow_none:
        accepted = "None, " + accepted
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{owner}: {arg} cannot be None; give {accepted}")
    if isinstance(value, base):
        return value
    if isinstance(value, str):
        class_name = names.get(value) or (value if value in classes else None)
        if class_name is None:
            hint = did_you_mean(value, list(names) + list(classes))
            raise ValueError(
                f"{owner}: unknown {kind} {value!r} for {arg}.{hint} Accepted: {accepted}."
            )
        defaults = (name_defaults or {}).get(value, {})
        return _instantiate(classes[class_name], dict(defaults), owner=owner, arg=arg)
    if isinstance(value, dict):
        if (
            set(value) - {"class_name", "config", "module", "registered_name"}
            or "class_name" not in value
        ):
            raise ValueError(
                f"{owner}: {arg} as a dict must look like "
                f"{{'class_name': ..., 'config': {{...}}}}, got {show(value)}"
            )
        alias = value["class_name"]
        if not isinstance(alias, str):
            raise TypeError(
                f"{owner}: {arg}['class_name'] must be a string naming a {kind} class, got "
                f"{show(alias)}"
            )
        class_name = names.get(alias, alias)
        if class_name not in classes:
            hint = did_you_mean(str(class_name), list(classes))
            raise ValueError(
                f"{owner}: unknown {kind} class {value['class_name']!r} for {arg}.{hint} "
                f"Accepted: {', '.join(classes)}."
            )
        config = value.get("config") or {}
        if not isinstance(config, dict):
            raise TypeError(f"{owner}: {arg}['config'] must be a dict, got {show(config)}")
        defaults = (name_defaults or {}).get(alias, {})
        return _instantiate(classes[class_name], defaults | config, owner=owner, arg=arg)
    framework = _framework(value)
    if framework is not None:
        return _foreign(value, framework, owner=owner, arg=arg, kind=kind, classes=classes,
                        accepted=accepted)  # fmt: skip
    if callable(value):
        return value
    raise TypeError(f"{owner}: {arg} must be {accepted} or a callable, got {show(value)}")


#: frameworks whose objects a layer argument may come from by mistake or by habit
_FRAMEWORKS = {"torch", "tensorflow", "keras", "tf_keras", "jax", "jaxlib", "flax", "optax"}


def _framework(value: object) -> str | None:
    module = value.__module__ if inspect.isroutine(value) else type(value).__module__
    root = (module or "").split(".")[0]
    return root if root in _FRAMEWORKS else None


def _foreign(value: object, framework: str, *, owner, arg, kind, classes, accepted) -> Any:
    """A framework's object: converted exactly where multirnn has the same class (Keras's
    regularizers and constraints, by their config), kept where it computes NumPy-compatible
    values on every engine (Keras's initializers, as before), else refused now rather than
    failing inside another engine later."""
    name = type(value).__name__
    if kind != "initializer" and name in classes and hasattr(value, "get_config"):
        config = {k: v for k, v in value.get_config().items() if v is not None}
        return _instantiate(classes[name], config, owner=owner, arg=arg)
    if (
        kind == "initializer"
        and framework in ("keras", "tf_keras")
        and not inspect.isroutine(value)
    ):
        return value
    what = getattr(value, "__qualname__", None) or name
    raise TypeError(
        f"{owner}: {arg} is {framework}'s {what}, which multirnn cannot apply the same way "
        f"on every engine; give {accepted} of multirnn's own {kind}s (the same formulas as "
        "Keras's), or a plain Python callable"
    )


def serialize(value: Any, *, arg: str, base: type) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, base):
        return {"class_name": value.class_name, "config": value.get_config()}
    raise TypeError(
        f"{arg} is the Python callable {value!r}, which cannot be serialized. Use one of the "
        "built-in names or classes to save or share the layer."
    )
