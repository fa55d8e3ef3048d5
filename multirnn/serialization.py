"""Configs and files that move a layer between engines.

A saved layer is a safetensors file: the canonical weights as tensors, the layer's config
(JSON) in the file's metadata, and a stateful layer's carried states, so that training or
streaming continues where it stopped. Any engine can load it and computes the same
function. A ``Bidirectional`` saves the same way, its two directions' tensors under
``forward/`` and ``backward/``.

A layer file is data from wherever the user got it. ``load`` reads the header first and
checks every tensor's name, shape and dtype against what the config describes before it
creates anything or reads any tensor's bytes; the layer is then built from the file's
arrays, so no initializer runs and nothing is allocated that the file does not hold.
``save`` writes a regular file, whole or not at all (docs/security.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import secrets
import stat
from typing import Any

import numpy as np

from multirnn import cells, engines
from multirnn import layer as layers
from multirnn import spec as specs

FORMAT = "multirnn.layer/1"
_META_FORMAT = "multirnn.format"
_META_CONFIG = "multirnn.config"
_META_ENGINE = "multirnn.engine"
_STATE = "state/"
_DIRECTIONS = ("forward/", "backward/")

#: The largest header (tensor table and metadata) ``load`` reads. A layer's takes a few
#: kilobytes; the header is parsed whole before anything in it can be checked.
MAX_HEADER_BYTES = 8 * 2**20

#: The tensor dtypes a layer file holds (safetensors' names), with their NumPy names and
#: sizes: layers compute in float32 or float64.
_DTYPES = {"F32": ("float32", 4), "F64": ("float64", 8)}

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO opens without waiting, then is refused

#: What interpreting a config may raise; each becomes a LayerFileError naming the file.
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, OverflowError, RecursionError)


class LayerFileError(ValueError):
    """A file (or the config inside it) that does not describe a multirnn layer. The
    message names the file and the offending key."""


def _is_bidirectional(config: Any) -> bool:
    return isinstance(config, dict) and isinstance(config.get("layer"), dict)


def _check_bidirectional_keys(config: dict[str, Any]) -> None:
    unknown = sorted(set(config) - {"layer", "merge_mode", "name"})
    if unknown:
        raise ValueError(
            f"a Bidirectional config has the keys 'layer' and 'merge_mode'; got {unknown}"
        )


def from_config(config: dict[str, Any], backend: str | None = None):
    """A new, unbuilt layer (or ``Bidirectional``) on ``backend`` (default: the selected
    engine) from a config that ``get_config()`` returned."""
    eng = engines.engine(backend)
    if isinstance(config, dict) and "cell" in config:
        return eng.RNN.from_config(config)
    if _is_bidirectional(config):
        _check_bidirectional_keys(config)
        return eng.Bidirectional.from_config(config)
    spec = specs.from_config(config)
    return eng.layer_class(spec.layer).from_config(config)


def _weight_names(layer: Any) -> list[str]:
    """A layer's weight names in order: its spec's, or (``RNN``) its cell's declarations."""
    names = getattr(layer, "weight_names", None)
    return list(names) if names is not None else list(layer.spec.weight_names)


def _layers(layer: Any) -> list[tuple[str, Any]]:
    """(tensor-name prefix, recurrent layer) pairs: one for a layer, two for a wrapper."""
    if hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer"):
        return list(zip(_DIRECTIONS, (layer.forward_layer, layer.backward_layer)))
    return [("", layer)]


# -- save -------------------------------------------------------------------------------------


def save(layer: Any, path: str | os.PathLike, *, states: bool = True) -> None:
    """Write a built layer's (or ``Bidirectional``'s) config and canonical weights to a
    safetensors file, and with ``states`` (the default) a stateful layer's carried states.

    The file is written next to ``path`` under a temporary name and then renamed over it,
    so ``path`` holds either what it held before or the whole new file, never part of one.
    A symlink is followed: its target is replaced and the link stays. Anything at ``path``
    that is not a regular file (a directory, a FIFO, a device, a socket) is refused with an
    ``OSError`` naming it, and so is every I/O failure."""
    from multirnn.arrays import to_numpy

    config = layer.get_config()  # raises for layers that use Python callables
    if not getattr(layer, "built", False):
        raise ValueError(
            f"save: {layer!r} has no weights yet; build it (or call it once) before saving"
        )
    tensors: dict[str, np.ndarray] = {}
    for prefix, part in _layers(layer):
        for name, w in zip(_weight_names(part), part.get_weights()):
            tensors[prefix + name] = np.ascontiguousarray(w)
        carried = part.states if states and part.spec.stateful else None
        if carried is not None:
            for name, value in zip(part.spec.state_names, to_numpy(list(carried))):
                tensors[f"{prefix}{_STATE}{name}"] = np.ascontiguousarray(value)
    metadata = {
        _META_FORMAT: FORMAT,
        _META_CONFIG: json.dumps(config),
        _META_ENGINE: getattr(layer, "engine_name", "unknown"),
    }
    _write(os.fspath(path), tensors, metadata)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a safetensors file at ``path`` (through a symlink to its target) by way of a
    temporary file in the same directory and one rename: readers never see a partial file,
    and a failure leaves what was there."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    target = os.path.realpath(path)
    try:
        before: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        before = None
    except OSError as exc:
        raise OSError(exc.errno, f"save: cannot write {path}: {exc.strerror}", path) from None
    if before is not None and not stat.S_ISREG(before.st_mode):
        if stat.S_ISDIR(before.st_mode):
            raise IsADirectoryError(
                errno.EISDIR, f"save: {path} is a directory; give the path of a file", path
            )
        kind = next((what for test, what in _KINDS if test(before.st_mode)), "not a file")
        raise OSError(
            errno.EINVAL,
            f"save: {path} is {kind}; save writes only regular files (remove it, or save "
            "elsewhere)",
            path,
        )
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        # created like open(path, "w") creates a file: mode 0o666 less the umask
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666)
    except OSError as exc:
        raise OSError(
            exc.errno, f"save: cannot create a file in {directory or '.'}: {exc.strerror}", path
        ) from None
    try:
        try:
            # a replaced file keeps its permission bits; a new one gets what the umask gives
            mode = stat.S_IMODE((before or os.fstat(fd)).st_mode)
        finally:
            os.close(fd)
        try:
            save_file(tensors, temporary, metadata=metadata)
        except SafetensorError as exc:
            code = re.search(r"code: (\d+)", str(exc))
            raise OSError(
                int(code.group(1)) if code else errno.EIO,
                f"save: writing {path} failed: {exc}",
                path,
            ) from None
        os.chmod(temporary, mode)  # (safetensors may have made the file anew)
        ours = (os.getuid(), os.getgid()) if hasattr(os, "getuid") else None
        if before is not None and ours is not None and (before.st_uid, before.st_gid) != ours:
            with contextlib.suppress(PermissionError):  # the owner too, where allowed
                os.chown(temporary, before.st_uid, before.st_gid)
        fd = os.open(temporary, os.O_RDONLY | _CLOEXEC)
        try:
            os.fsync(fd)  # the bytes reach the disk before the name points at them
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError as exc:
        _remove(temporary)
        if exc.filename == path:
            raise
        raise OSError(exc.errno, f"save: writing {path} failed: {exc.strerror}", path) from None
    except BaseException:  # KeyboardInterrupt, serialization errors: nothing is left behind
        _remove(temporary)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- load -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Expected:
    """What one recurrent layer of a file must hold, from its config alone: each weight's
    name and shape (in the order ``set_weights`` takes them) and its carried states."""

    prefix: str
    weights: dict[str, tuple[int, ...]]
    state_names: tuple[str, ...]
    units: int
    stateful: bool


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    dtype: str | None = None,
    *,
    states: bool = True,
):
    """A layer (or ``Bidirectional``) on ``backend`` (default: the selected engine) from a
    file written by :func:`save`, with its carried states unless ``states=False``.

    ``dtype`` overrides the saved layer's dtype (e.g. to run a float32 PyTorch layer on the
    NumPy engine in float32 rather than its float64 default). A file that is not a
    multirnn layer, or whose contents disagree with each other, raises
    :class:`LayerFileError` naming the file and the key. The header is checked against
    the config before anything is created or any tensor is read, and the layer is built
    from the file's arrays: its initializers never run."""
    path = os.fspath(path)
    size, metadata, header = _read_header(path)
    if metadata.get(_META_FORMAT) != FORMAT or _META_CONFIG not in metadata:
        raise LayerFileError(
            f"load: {path} is a safetensors file but not a multirnn layer (metadata "
            f"{_META_FORMAT!r} is {metadata.get(_META_FORMAT)!r}, expected {FORMAT!r})"
        )
    config = _config(path, metadata[_META_CONFIG])
    try:
        expected, file_dtype = _describe(path, config, header)
    except LayerFileError:
        raise
    except _CONFIG_ERRORS as exc:
        raise _config_error(path, exc) from None
    _check_header(path, header, expected, file_dtype, size)
    if dtype is not None:
        specs.parse("LSTM", (1,), {"dtype": dtype})  # the dtype argument's own error
        inner = config["layer"] if _is_bidirectional(config) else config
        inner["dtype"] = dtype
    try:
        with layers.created_unbuilt():  # built below from the file's arrays
            layer = from_config(config, backend=backend)
    except (engines.UnknownEngineError, engines.EngineUnavailableError):
        raise
    except _CONFIG_ERRORS as exc:
        raise _config_error(path, exc) from None
    wanted = [e.prefix + n for e in expected for n in e.weights]
    if states:
        wanted += [k for e in expected for k in _state_keys(e) if k in header]
    tensors = _read_tensors(path, wanted)
    for want, (prefix, part) in zip(expected, _layers(layer)):
        try:
            part.set_weights([tensors[prefix + n] for n in want.weights])
        except (TypeError, ValueError) as exc:
            raise LayerFileError(f"load: {path}: {exc}") from exc
        carried = [tensors.get(f"{prefix}{_STATE}{n}") for n in want.state_names]
        if not states or all(c is None for c in carried):
            continue
        try:
            part.reset_states(carried)
        except (TypeError, ValueError) as exc:
            raise LayerFileError(f"load: {path}: carried states: {exc}") from exc
    if getattr(layer, "engine_name", None) == "torch":
        layer.eval()  # ready for inference, as the converters return layers (train() undoes)
    return layer


def _state_keys(expected: _Expected) -> list[str]:
    return [f"{expected.prefix}{_STATE}{n}" for n in expected.state_names]


def _read_header(path: str) -> tuple[int, dict[str, str], dict[str, tuple[str, tuple]]]:
    """(file size, metadata, {tensor name: (dtype, shape)}), reading no tensor's bytes.

    Only a regular file is opened for reading (a FIFO or a device could block or never
    end), and a header larger than :data:`MAX_HEADER_BYTES` is refused before it is read.
    safetensors itself checks that the tensors' byte ranges cover the file exactly."""
    from safetensors import SafetensorError, safe_open

    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except OSError as exc:
        raise LayerFileError(f"load: {path} is not a readable safetensors file: {exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else next(
                (what for test, what in _KINDS if test(info.st_mode)), "not a regular file"
            )  # fmt: skip
            raise LayerFileError(
                f"load: {path} is not a readable safetensors file: it is {kind}; load reads "
                "regular files only"
            )
        prefix = os.read(fd, 8)
    finally:
        os.close(fd)
    declared = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
    if declared is None or declared > info.st_size - 8:
        raise LayerFileError(
            f"load: {path} is not a readable safetensors file: it starts with no header "
            f"length that fits its {info.st_size} bytes"
        )
    if declared > MAX_HEADER_BYTES:
        raise LayerFileError(
            f"load: {path}: its header declares {declared} bytes; load reads headers of at most "
            f"{MAX_HEADER_BYTES} bytes (a layer's takes a few kilobytes)"
        )
    try:
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            header = {}
            for key in handle.keys():  # noqa: SIM118 (a handle, not a dict)
                piece = handle.get_slice(key)
                header[key] = (piece.get_dtype(), tuple(int(d) for d in piece.get_shape()))
    except (SafetensorError, OSError) as exc:
        raise LayerFileError(f"load: {path} is not a readable safetensors file: {exc}") from exc
    return info.st_size, metadata, header


def _read_tensors(path: str, keys: list[str]) -> dict[str, np.ndarray]:
    """The named tensors' arrays (after the header was checked: their sizes are known)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as handle:
            return {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, KeyError) as exc:  # changed since its header was read
        raise LayerFileError(f"load: {path} could not be read: {exc}") from exc


def _config_error(path: str, exc: BaseException) -> LayerFileError:
    reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
    return LayerFileError(f"load: {path}: metadata key {_META_CONFIG!r}: {reason}")


def _describe(
    path: str, config: dict[str, Any], header: dict[str, tuple[str, tuple]]
) -> tuple[list[_Expected], str | None]:
    """The tensors a config needs, per recurrent layer (two for a ``Bidirectional``), and
    the dtype it fixes (None: float32 or float64), computed from the parsed config alone:
    nothing is created, and a cell only declares its weights."""
    from multirnn.bidirectional import check_merge_mode

    inner = config
    prefixes: tuple[str, ...] = ("",)
    if _is_bidirectional(config):
        _check_bidirectional_keys(config)
        check_merge_mode(config.get("merge_mode", "concat"))
        inner, prefixes = config["layer"], _DIRECTIONS
    shapes = {k[len(prefixes[0]) :]: v[1] for k, v in header.items() if k.startswith(prefixes[0])}
    if isinstance(inner, dict) and "cell" in inner:
        options = dict(inner)
        cell = cells.cell_from_config(options.pop("cell"))
        spec: Any = cells.parse_rnn(cell, options)
        input_dim = spec.input_dim
        if input_dim is None:  # a file not written by save: the shapes tell the input size
            input_dim = _cell_input_dim(path, cell, shapes, spec.state_names)
        weights = {d.name: d.shape for d in cell.declare(input_dim)}
    else:
        spec = specs.from_config(inner)
        input_dim = spec.input_dim
        kernel = shapes.get("kernel")
        if input_dim is None and kernel is not None:
            if len(kernel) != 2 or kernel[0] < 1:
                raise LayerFileError(
                    f"load: {path}: tensor {prefixes[0] + 'kernel'!r} has shape {kernel}, but "
                    f"its config needs (input_dim, {spec.gates * spec.units})"
                )
            input_dim = kernel[0]
        weights = spec.weight_shapes(input_dim or 1)  # no kernel: refused by its names
    expected = [
        _Expected(prefix, weights, tuple(spec.state_names), spec.units, spec.stateful)
        for prefix in prefixes
    ]
    return expected, spec.dtype


def _cell_input_dim(
    path: str, cell: cells.Cell, shapes: dict[str, tuple], state_names: tuple[str, ...]
) -> int:
    stored = {k: v for k, v in shapes.items() if not k.startswith(_STATE)}
    for candidate in sorted({d for shape in stored.values() for d in shape if d >= 1}):
        if {d.name: d.shape for d in cell.declare(candidate)} == stored:
            return candidate
    raise LayerFileError(
        f"load: {path} holds tensors {sorted(stored)} with shapes {sorted(stored.values())}, "
        f"which {type(cell).__name__} declares for no input size (and its config gives no "
        "input_dim)"
    )


def _check_header(
    path: str,
    header: dict[str, tuple[str, tuple]],
    expected: list[_Expected],
    dtype: str | None,
    size: int,
) -> None:
    """Every tensor's dtype, name and shape against what the config needs, before any
    tensor is read; the sizes they declare must fit in the file."""
    for key, (kind, _) in header.items():
        if kind not in _DTYPES:
            raise LayerFileError(
                f"load: {path}: tensor {key!r} holds {kind}; a layer file holds float32 (F32) "
                "or float64 (F64) tensors"
            )
        if dtype is not None and _DTYPES[kind][0] != dtype:
            raise LayerFileError(
                f"load: {path}: tensor {key!r} holds {_DTYPES[kind][0]}, but its config says "
                f"dtype={dtype!r}"
            )
    names = {e.prefix + n for e in expected for n in e.weights}
    state_keys = {k for e in expected for k in _state_keys(e)}
    stored = {k for k in header if k not in state_keys}
    if stored != names:
        raise LayerFileError(
            f"load: {path} holds tensors {sorted(stored)}, but its config needs "
            f"{sorted(names)} (and, for a stateful layer, {sorted(state_keys)})"
        )
    for want in expected:
        for name, shape in want.weights.items():
            got = header[want.prefix + name][1]
            if got != tuple(shape):
                raise LayerFileError(
                    f"load: {path}: tensor {want.prefix + name!r} has shape {got}, but its "
                    f"config needs {tuple(shape)}"
                )
        carried = {n: header.get(f"{want.prefix}{_STATE}{n}") for n in want.state_names}
        if all(c is None for c in carried.values()):
            continue
        if any(c is None for c in carried.values()) or not want.stateful:
            raise LayerFileError(
                f"load: {path} holds carried states {want.prefix}{_STATE}* for a layer that "
                f"{'is not stateful' if not want.stateful else 'needs all of them'}"
            )
        batches = set()
        for n, (_, shape) in carried.items():
            if len(shape) != 2 or shape[1] != want.units:
                raise LayerFileError(
                    f"load: {path}: carried state {want.prefix}{_STATE}{n} has shape {shape}, "
                    f"but its config needs (batch, {want.units})"
                )
            batches.add(shape[0])
        if len(batches) > 1:
            raise LayerFileError(
                f"load: {path}: the carried states {want.prefix}{_STATE}* have different "
                f"batch sizes {sorted(batches)}"
            )
    needed = sum(math.prod(shape) * _DTYPES[kind][1] for kind, shape in header.values())
    if needed > size:  # safetensors checks this too; the bound must not rest on it alone
        raise LayerFileError(
            f"load: {path}: its tensors declare {needed} bytes, more than the file's {size}"
        )


def _config(path: str, text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        kind = "nested too deeply" if isinstance(exc, RecursionError) else f"not JSON ({exc})"
        raise LayerFileError(f"load: {path}: metadata key {_META_CONFIG!r} is {kind}") from None
    if not isinstance(config, dict):
        raise LayerFileError(
            f"load: {path}: metadata key {_META_CONFIG!r} must hold a JSON object, got "
            f"{type(config).__name__}"
        )
    return config
