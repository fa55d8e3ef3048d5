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
import reprlib
import secrets
import stat
from typing import Any

import numpy as np

from multirnn import _files, cells, engines, precision
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
#: sizes: a layer's dtypes (bfloat16 as ml_dtypes' on the host).
_DTYPES = {"F32": ("float32", 4), "F64": ("float64", 8), "BF16": ("bfloat16", 2),
           "F16": ("float16", 2)}  # fmt: skip

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_short = reprlib.Repr()  # shapes from a file in messages: a header may hold megabytes
_short.maxtuple = _short.maxlist = 8
_short.maxother = _short.maxstring = 60

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


def _write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a safetensors file at ``path`` (through a symlink to its target) by way of a
    temporary file in the same directory and one rename: readers never see a partial file,
    and a failure leaves what was there.

    The temporary file is written, synced and given its mode through the descriptor that
    created it (exclusively): it is never opened again by name, so nothing that swaps the
    name for a symlink meanwhile can redirect the bytes."""
    from safetensors import SafetensorError
    from safetensors.numpy import save as serialize

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
        raise OSError(
            errno.EINVAL,
            f"save: {path} is {_files.kind(before.st_mode)}; save writes only regular files "
            "(remove it, or save elsewhere)",
            path,
        )
    try:
        data = serialize(tensors, metadata=metadata)
    except SafetensorError as exc:
        raise ValueError(f"save: {path}: the tensors cannot be serialized: {exc}") from None
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
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if before is not None:  # a replaced file keeps its mode, and owner where allowed
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, stat.S_IMODE(before.st_mode))
                else:  # pragma: no cover - Windows: only the read-only bit exists
                    os.chmod(temporary, stat.S_IMODE(before.st_mode))
                ours = (os.getuid(), os.getgid()) if hasattr(os, "getuid") else None
                if ours is not None and (before.st_uid, before.st_gid) != ours:
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, before.st_uid, before.st_gid)
            os.fsync(fd)  # the bytes reach the disk before the name points at them
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError as exc:
        _remove(temporary)
        raise OSError(exc.errno, f"save: writing {path} failed: {exc.strerror}", path) from None
    except BaseException:  # KeyboardInterrupt: nothing is left behind
        _remove(temporary)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename durable, where the platform can sync a directory (not Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory or ".", os.O_RDONLY | _CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
    try:
        fd, info = _files.open_regular(path)
    except OSError as exc:
        reason = exc
        if isinstance(exc, _files.NotRegularFile):
            reason = f"{exc.strerror}; load reads regular files only"
        raise LayerFileError(f"load: {path} is not a readable safetensors file: {reason}") from exc
    try:
        return _load(path, fd, info.st_size, backend, dtype, states)
    finally:
        os.close(fd)


def _load(path: str, fd: int, size: int, backend: str | None, dtype: str | None, states: bool):
    """``load`` of the file open at ``fd``: every byte is read through that descriptor."""
    metadata, header, ranges = _read_header(path, fd, size)
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
    tensors = _read_tensors(path, fd, header, ranges, wanted)
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


def _read_header(
    path: str, fd: int, size: int
) -> tuple[dict[str, str], dict[str, tuple[str, tuple]], dict[str, tuple[int, int]]]:
    """(metadata, {tensor name: (dtype, shape)}, {tensor name: (first byte, end)}) of the
    safetensors file open at ``fd``, reading no tensor's bytes.

    A header larger than :data:`MAX_HEADER_BYTES` is refused before it is read. The
    tensors' byte ranges must match their dtypes and shapes and cover the data exactly,
    as safetensors requires."""

    def bad(reason: str) -> LayerFileError:
        return LayerFileError(f"load: {path} is not a readable safetensors file: {reason}")

    prefix = _files.read_exactly(fd, 8)
    declared = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
    if declared is None or declared > size - 8:
        raise bad(f"it starts with no header length that fits its {size} bytes")
    if declared > MAX_HEADER_BYTES:
        raise LayerFileError(
            f"load: {path}: its header declares {declared} bytes; load reads headers of at most "
            f"{MAX_HEADER_BYTES} bytes (a layer's takes a few kilobytes)"
        )
    text = _files.read_exactly(fd, declared)
    try:
        table = json.loads(text.decode("utf8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad(f"its header is not JSON ({_short.repr(str(exc))})") from None
    if not isinstance(table, dict):
        raise bad(f"its header is {type(table).__name__}, not a JSON object")
    metadata = table.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) for v in metadata.values()
    ):  # fmt: skip
        raise bad("its '__metadata__' is not an object of strings")
    header, ranges = {}, {}
    for key, entry in table.items():
        where = f"tensor {_short.repr(key)}"
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            raise bad(f"{where} has no 'dtype'")
        kind, shape, offsets = entry["dtype"], entry.get("shape"), entry.get("data_offsets")
        if kind not in _DTYPES:
            named = kind if kind.isidentifier() else _short.repr(kind)
            raise LayerFileError(
                f"load: {path}: {where} holds {named}; a layer file holds float32 (F32) or "
                "float64 (F64) tensors"
            )
        if not (
            isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(d) is int for d in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"{where} has no valid 'shape' and 'data_offsets'")
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPES[kind][1]:
            raise bad(
                f"{where}'s byte range {_short.repr(offsets)} does not hold its shape "
                f"{_short.repr(shape)}"
            )
        header[key] = (kind, tuple(shape))
        ranges[key] = (8 + declared + offsets[0], 8 + declared + offsets[1])
    end = 8 + declared
    for first, last in sorted(ranges.values()):
        if first != end:
            raise bad("its tensors' byte ranges overlap or leave gaps")
        end = last
    if end != size:
        raise bad(f"its tensors' byte ranges end at byte {end}, the file at {size}")
    return metadata, header, ranges


def _read_tensors(
    path: str,
    fd: int,
    header: dict[str, tuple[str, tuple]],
    ranges: dict[str, tuple[int, int]],
    keys: list[str],
) -> dict[str, np.ndarray]:
    """The named tensors' arrays, read from the descriptor after the header was checked
    (their sizes are known and fit the file)."""
    tensors = {}
    for key in keys:
        (kind, shape), (first, last) = header[key], ranges[key]
        try:
            os.lseek(fd, first, os.SEEK_SET)
            data = _files.read_exactly(fd, last - first)
        except OSError as exc:
            raise LayerFileError(f"load: {path} could not be read: {exc}") from exc
        if len(data) != last - first:  # changed since its header was read
            raise LayerFileError(f"load: {path} could not be read: it ends early")
        native = precision.numpy_dtype(_DTYPES[kind][0])
        tensors[key] = np.frombuffer(data, native.newbyteorder("<")).astype(native).reshape(shape)
    return tensors


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
                    f"load: {path}: tensor {prefixes[0] + 'kernel'!r} has shape "
                    f"{_short.repr(kernel)}, but its config needs (input_dim, "
                    f"{spec.gates * spec.units})"
                )
            input_dim = kernel[0]
        weights = spec.weight_shapes(input_dim or 1)  # no kernel: refused by its names
    expected = [
        _Expected(prefix, weights, tuple(spec.state_names), spec.units, spec.stateful)
        for prefix in prefixes
    ]
    return expected, precision.weights(spec.dtype)  # a mixed policy's weights: float32


def _cell_input_dim(
    path: str, cell: cells.Cell, shapes: dict[str, tuple], state_names: tuple[str, ...]
) -> int:
    """The input size whose declarations match the stored shapes. Only the sizes in the
    first weight's stored shape are tried (at most its declared rank of them), so a header
    of many or long shapes costs no more ``declare`` calls than a real one."""
    stored = {k: v for k, v in shapes.items() if not k.startswith(_STATE)}
    first = cell.declare(1)[0]
    got = stored.get(first.name)
    candidates = [] if got is None or len(got) != len(first.shape) else sorted(set(got))
    for candidate in candidates:
        if candidate >= 1 and {d.name: d.shape for d in cell.declare(candidate)} == stored:
            return candidate
    shown = _short.repr(dict(sorted(stored.items())))
    raise LayerFileError(
        f"load: {path} holds tensors with shapes {shown}, which {type(cell).__name__} "
        "declares for no input size (and its config gives no input_dim)"
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
                f"load: {path}: tensor {key!r} holds {kind}; a layer file holds float32 (F32), "
                "float64 (F64), bfloat16 (BF16) or float16 (F16) tensors"
            )
        try:
            precision.numpy_dtype(_DTYPES[kind][0])
        except ImportError as exc:
            raise LayerFileError(f"load: {path}: tensor {key!r}: {exc}") from None
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
            f"load: {path} holds tensors {_short.repr(sorted(stored))}, but its config needs "
            f"{sorted(names)} (and, for a stateful layer, {sorted(state_keys)})"
        )
    for want in expected:
        for name, shape in want.weights.items():
            got = header[want.prefix + name][1]
            if got != tuple(shape):
                raise LayerFileError(
                    f"load: {path}: tensor {want.prefix + name!r} has shape "
                    f"{_short.repr(got)}, but its config needs {tuple(shape)}"
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
                    f"load: {path}: carried state {want.prefix}{_STATE}{n} has shape "
                    f"{_short.repr(shape)}, but its config needs (batch, {want.units})"
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
