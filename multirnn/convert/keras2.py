"""Recurrent layers from legacy Keras HDF5 files (``model.save("m.h5")`` or
``model.save_weights("w.h5")``, written by Keras 2, tf.keras / tf-keras or Keras 3's legacy
writer), ``CuDNNLSTM``/``CuDNNGRU`` weights included (h5py imported lazily).

Every recurrent layer of the file is converted exactly or refused with a
:class:`ConversionError` naming the option and the reason; the file's other layers are
skipped. Weights are read in each layer's ``weight_names`` order, never by key order, and
a nested model's group is split among its layers by weight name. In Keras 2
``"hard_sigmoid"`` is ``clip(0.2 x + 0.5, 0, 1)`` (multirnn's ``"hard_sigmoid"``); a file
written by Keras 3's legacy writer means Keras 3's (``"hard_sigmoid_relu6"``).

The file may come from anyone, so it is data: only hard links are followed, datasets
stored in other files (external storage, virtual datasets) are refused, and only the
datasets of the converted layers are read, after their declared dtype and shape agree
with the layer and fit in the file's size. A malformed attribute or config is a
ConversionError naming the file and the key, never an error from inside h5py or json.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from multirnn import _files, precision
from multirnn.convert._common import build, build_bidirectional
from multirnn.convert.keras3 import _PASSED, _TRAINING, FROM_KERAS
from multirnn.convert.layouts import GATES, ConversionError

_RECURRENT = {"SimpleRNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU", "CuDNNLSTM": "LSTM",
              "CuDNNGRU": "GRU"}  # fmt: skip
_MODELS = ("Sequential", "Functional", "Model")
#: the cells of ``keras.layers.RNN(cell)`` that are a recurrent layer
_CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
#: options that exist only for some layers: not passed to the others
_ONLY_FOR = {"recurrent_activation": ("LSTM", "GRU"), "reset_after": ("GRU",),
             "unit_forget_bias": ("LSTM",)}  # fmt: skip
_CELL = ("kernel", "recurrent_kernel")
_UNSET: Any = object()


#: The filters a dataset may need: those that keep the data's size (shuffle reorders
#: bytes, fletcher32 appends a checksum), so a chunk read takes what it stores. A
#: compressed chunk may inflate to any size while HDF5 decompresses it, before anything
#: can be checked, so compression (deflate, szip, lzf, ...) is refused; Keras never
#: compresses the weights it saves, and no plugin filter is ever loaded.
_FILTERS = {2: "shuffle", 3: "fletcher32"}
#: HDF5's and h5py's compressing filters, named in their refusal
_COMPRESSION = {1: "deflate (gzip)", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
#: models nested deeper than this are refused (real models nest two or three deep)
_DEPTH = 32
_MERGE_MODES = ("concat", "sum", "mul", "ave", None)
#: config keys that must be JSON true or false
_FLAGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "use_bias",
          "zero_output_for_mask", "time_major", "reset_after", "unit_forget_bias")  # fmt: skip
#: h5py's errors for a damaged or unusual object: each becomes a ConversionError
_H5_ERRORS = (OSError, KeyError, RuntimeError, TypeError, ValueError)

_short = reprlib.Repr()  # file contents in messages: short, and never a deep recursion
_short.maxstring = _short.maxother = _short.maxlong = 60
_short.maxlevel = 3


class _File:
    """An open HDF5 file: the path messages name, and the bytes this call may still read.

    Every array a legitimate file holds is stored in it, so the arrays one conversion reads
    may declare at most the file's size on disk in all (a chunked dataset: its chunks'
    bytes, when they are larger); a dataset that declares more is refused before it is
    read."""

    def __init__(self, path: str, handle: Any, size: int):
        self.path, self.handle, self.size, self.left = path, handle, size, size

    def member(self, group: Any, name: str, what: str) -> Any:
        """``group[name]`` (None if absent), followed one link at a time: each must be a
        hard link, so that no soft or external link makes HDF5 open another file or
        another object than the one named."""
        import h5py

        parts = name.split("/")
        base = (group.name or "").rstrip("/")
        if any(part in ("", ".") for part in parts):
            raise ConversionError(
                f"{self.path}: {what} {name!r} (under {group.name!r}) is not a path of names"
            )
        node = group
        for k, part in enumerate(parts):
            at = "/".join([base, *parts[: k + 1]])
            if not isinstance(node, h5py.Group):
                return None
            try:
                link = node.get(part, getlink=True)  # the link itself: nothing is opened
            except _H5_ERRORS as exc:
                raise ConversionError(f"{self.path}: {at!r} cannot be opened ({exc})") from exc
            if link is None:
                return None
            if not isinstance(link, h5py.HardLink):
                raise ConversionError(
                    f"{self.path}: {at!r} ({what} {name!r}) is {_link_kind(link)}; only "
                    "hard links are followed: nothing in the file may make the converter "
                    "read another file or another object than the one named"
                )
            try:
                node = node.get(part)
            except _H5_ERRORS as exc:
                raise ConversionError(f"{self.path}: {at!r} cannot be opened ({exc})") from exc
        return node

    def weight(self, group: Any, name: str, layer: str) -> _Weight:
        """The dataset ``name`` of a layer's group, refused if its data would come from
        anywhere but this file; not read yet."""
        import h5py

        dataset = self.member(group, name, "weight")
        if not isinstance(dataset, h5py.Dataset):
            raise ConversionError(
                f"{self.path}: layer {layer!r} lists {name!r} in 'weight_names', "
                "but the file has no such dataset"
            )
        at = f"{self.path}: dataset {'/'.join([(group.name or '').rstrip('/'), name])!r}"
        # The storage is checked in the creation property list, before anything that
        # resolves it: a virtual dataset's shape may come from opening its source files.
        try:
            plist = dataset.id.get_create_plist()
            virtual = plist.get_layout() == h5py.h5d.VIRTUAL
            external = plist.get_external(0)[0] if plist.get_external_count() else None
        except _H5_ERRORS as exc:
            raise ConversionError(f"{at} cannot be read ({exc})") from exc
        if virtual:
            raise ConversionError(
                f"{at} is a virtual dataset (its data is mapped from other datasets or "
                "files): refused, nothing in the file may make the converter read another file"
            )
        if external is not None:
            raise ConversionError(
                f"{at} keeps its data in an external file ({_short.repr(external)}): "
                "refused, nothing in the file may make the converter read another file"
            )
        try:
            shape = dataset.shape
        except _H5_ERRORS as exc:
            raise ConversionError(f"{at} cannot be read ({exc})") from exc
        if shape is None:
            raise ConversionError(f"{at} is an empty (null) dataset, not an array")
        return _Weight(dataset, at, self, tuple(int(n) for n in shape))


def _link_kind(link: Any) -> str:
    name = type(link).__name__
    if name == "SoftLink":
        return f"a soft link to {_short.repr(link.path)}"
    if name == "ExternalLink":
        return f"an external link to {_short.repr(link.path)} in {_short.repr(link.filename)}"
    return f"a link of another kind ({name})"


@dataclass(frozen=True)
class _Weight:
    """A dataset of the file: its declared shape is checked against the layer before
    ``read`` allocates anything."""

    dataset: Any
    where: str
    file: _File
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype | None:
        try:
            return np.dtype(self.dataset.dtype)
        except _H5_ERRORS:
            return None

    def check_dtype(self, layer: str) -> None:
        dtype = self.dtype
        if dtype is None or dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise ConversionError(
                f"{self.where} (layer {layer!r}) holds {dtype or 'non-numeric'} values; "
                "multirnn computes in float32 or float64"
            )

    def read(self, layer: str) -> np.ndarray:
        """The array, within the file's budget, in native byte order."""
        self.check_dtype(layer)
        dtype = np.dtype(f"f{self.dtype.itemsize}")  # type: ignore[union-attr]
        size = math.prod(self.shape) * dtype.itemsize
        try:
            plist = self.dataset.id.get_create_plist()
            filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
            chunks = self.dataset.chunks
        except _H5_ERRORS as exc:
            raise ConversionError(f"{self.where} cannot be read ({exc})") from exc
        refused = [f for f in filters if f not in _FILTERS]
        if refused:
            what = _COMPRESSION.get(refused[0])
            what = f"compression {what}" if what else f"HDF5 filter {refused[0]} (a plugin)"
            raise ConversionError(
                f"{self.where} (layer {layer!r}) needs {what}: refused, a compressed chunk may "
                "inflate to any size before it can be checked, and no plugin is ever loaded "
                f"(filters read: {', '.join(_FILTERS.values())}; Keras does not compress "
                "weights: save them again without compression)"
            )
        chunk = math.prod(chunks) * dtype.itemsize if chunks and filters else 0
        cost = max(size, chunk)  # a filtered chunk is read whole, however little it holds
        if cost > self.file.left:
            raise ConversionError(
                f"{self.where} (layer {layer!r}) declares shape {_short.repr(self.shape)}"
                f"{f' in chunks of {chunk} bytes' if chunk > size else ''}, {cost} bytes, "
                f"more than the file holds: {self.file.size} bytes on disk, "
                f"{self.file.size - self.file.left} of them read already"
            )
        self.file.left -= cost
        out = np.empty(self.shape, dtype)
        try:
            if out.size:
                self.dataset.read_direct(out)
        except _H5_ERRORS as exc:
            raise ConversionError(f"{self.where} cannot be read ({exc})") from exc
        return out


@dataclass
class H5Layer:
    """One layer of the file: its name (``outer/inner`` inside a nested model), class and
    config (None in a weights-only file, where ``class_name`` is told from the weight
    names: a recurrent layer, ``"Bidirectional"``, or None for any other layer), its
    datasets in ``weight_names`` order (read only when the layer is converted) and, when
    it cannot be read, why."""

    name: str
    class_name: str | None
    config: dict[str, Any] | None
    weights: list[_Weight] = field(repr=False)
    weight_names: list[str] = field(default_factory=list, repr=False)
    problem: str | None = None

    @property
    def recurrent(self) -> bool:
        return self.class_name in _RECURRENT or self.class_name == "Bidirectional"


def _attr(file: _File, obj: Any, name: str) -> Any:
    try:
        return obj.attrs[name]
    except _H5_ERRORS as exc:
        raise ConversionError(
            f"{file.path}: attribute {name!r} of {obj.name!r} cannot be read ({exc})"
        ) from exc


def _attr_list(file: _File, obj: Any, name: str) -> list[str]:
    """A string-list attribute, joining the chunks Keras writes for long lists."""
    if name in obj.attrs:
        chunks = [(name, _attr(file, obj, name))]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in obj.attrs:
            chunks.append((f"{name}{k}", _attr(file, obj, f"{name}{k}")))
            k += 1
    out = []
    for key, values in chunks:
        where = f"{file.path}: attribute {key!r} of {obj.name!r}"
        if isinstance(values, np.ndarray) and values.ndim <= 1:
            values = list(values.reshape(-1))
        elif isinstance(values, (str, bytes)):
            values = [values]
        else:
            raise ConversionError(
                f"{where} is not a list of names: {type(values).__name__} {_short.repr(values)}"
            )
        out += [_text(v, where) for v in values]
    return out


def _text(value: Any, where: str) -> str:
    """A string attribute or list item: text or UTF-8 bytes."""
    if isinstance(value, (np.ndarray, np.generic)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"{where} is not valid UTF-8 ({exc})") from exc
    if isinstance(value, str):
        try:
            value.encode("utf8")  # h5py keeps invalid bytes as surrogates
        except UnicodeEncodeError as exc:
            raise ConversionError(f"{where} is not valid UTF-8 ({exc})") from exc
        return value
    raise ConversionError(f"{where} holds {type(value).__name__} {_short.repr(value)}, not text")


def _parts(weight_name: str) -> list[str]:
    """``"lstm/lstm_cell/kernel:0"`` -> ``["lstm", "lstm_cell", "kernel"]``."""
    parts = weight_name.split("/")
    parts[-1] = parts[-1].split(":")[0]
    return parts


def _is_model(entry: dict[str, Any]) -> bool:
    config = entry.get("config")
    return (
        entry.get("class_name") in _MODELS
        or isinstance(config, list)
        or (isinstance(config, dict) and isinstance(config.get("layers"), list))
    )


def _entries(model: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The layer entries of a model config (a Sequential's may be a bare list)."""
    config = model.get("config", {})
    layers = config.get("layers", []) if isinstance(config, dict) else config
    if not isinstance(layers, list) or not all(isinstance(e, dict) for e in layers):
        raise ConversionError(
            f"{where} is not a Keras model config: the layers of "
            f"{_short.repr(model.get('class_name'))} are not a list of layer configs"
        )
    for entry in layers:
        cls = entry.get("class_name")
        if cls is not None and not isinstance(cls, str):
            raise ConversionError(
                f"{where}: a layer's 'class_name' is {_short.repr(cls)}, not a string"
            )
    return layers


def _entry_name(entry: dict[str, Any], where: str) -> str | None:
    config = entry.get("config")
    names = [config.get("name") if isinstance(config, dict) else None, entry.get("name")]
    for name in names:
        if name is not None and not isinstance(name, str):
            raise ConversionError(f"{where}: a layer's 'name' is {_short.repr(name)}, not a string")
    return names[0] or names[1]


def _entry_config(entry: dict[str, Any], name: str | None, where: str) -> dict[str, Any]:
    """A layer entry's config (a JSON object; missing means empty)."""
    config = entry.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConversionError(
            f"{where}: the 'config' of layer {name!r} is {type(config).__name__} "
            f"{_short.repr(config)}, not a JSON object"
        )
    return config


def _leaves(model: dict[str, Any], prefix: str, where: str, depth: int = 1):
    """(path, model names on the way, class name, config) of every layer of a nested model."""
    if depth > _DEPTH:
        raise ConversionError(f"{where} nests models more than {_DEPTH} deep")
    for entry in _entries(model, where):
        name = _entry_name(entry, where)
        if _is_model(entry):
            yield from (
                (path, [name, *models], cls, cfg)
                for path, models, cls, cfg in _leaves(entry, f"{prefix}{name}/", where, depth + 1)
            )
        else:
            yield f"{prefix}{name}", [], entry.get("class_name"), _entry_config(entry, name, where)


def _model_config(file: _File) -> dict[str | None, dict[str, Any]] | None:
    """Top-level layer name -> its config entry, or None for a weights-only file."""
    if "model_config" not in file.handle.attrs:
        return None
    where = f"{file.path}: attribute 'model_config'"
    text = _text(_attr(file, file.handle, "model_config"), where)
    try:
        config = json.loads(text)
    except RecursionError as exc:
        raise ConversionError(f"{where} is JSON nested too deeply") from exc
    except ValueError as exc:
        raise ConversionError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        raise ConversionError(
            f"{where} is not a Keras model config (a JSON object with 'class_name' and "
            f"'config'); got {type(config).__name__} {_short.repr(config)}"
        )
    entries = {}
    for entry in _entries(config, where):  # every entry checked, converted or not
        name = _entry_name(entry, where)
        if _is_model(entry):
            list(_leaves(entry, f"{name}/", where))
        else:
            _entry_config(entry, name, where)
        entries[name] = entry
    return entries


def _open(path: str):
    """(h5py file, the stream it reads, size): a regular file opened once, without waiting
    (a FIFO or a device would block or never end), and read through that descriptor."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py comes with keras
        raise ImportError("reading Keras HDF5 files needs h5py: pip install h5py") from exc
    try:
        fd, info = _files.open_regular(path)
    except OSError as exc:
        reason = exc.strerror if isinstance(exc, _files.NotRegularFile) else exc
        raise ConversionError(f"{path} is not a readable HDF5 file: {reason}") from exc
    stream = os.fdopen(fd, "rb")  # HDF5 reads through it: the file is never opened again
    try:
        handle = h5py.File(stream, "r")
    except BaseException as exc:
        stream.close()
        if isinstance(exc, _H5_ERRORS):
            raise ConversionError(f"{path} is not a readable HDF5 file: {exc}") from exc
        raise
    return handle, stream, info.st_size


def read(file: _File) -> tuple[str | None, list[H5Layer]]:
    """(keras_version, layers) of an open Keras HDF5 weights or model file; the layers of
    nested models come as ``outer/inner``, in file order. Nothing is read but attributes:
    each layer holds its datasets, checked for links and foreign storage, still unread."""
    import h5py

    path, handle = file.path, file.handle
    root = file.member(handle, "model_weights", "group")
    if root is None:
        root = handle
    elif not isinstance(root, h5py.Group):
        raise ConversionError(f"{path}: 'model_weights' is not a group")
    names = _attr_list(file, root, "layer_names")
    if not names:
        hint = ""
        if any(root.get(n, getlink=True) is not None for n in ("layers", "vars")):
            hint = (
                " (it looks like a Keras 3 or tf-keras '.weights.h5' file: load it into "
                "its Keras model and convert the layers with from_keras)"
            )
        raise ConversionError(
            f"{path} is an HDF5 file but not a legacy Keras weights file "
            f"(no 'layer_names' attribute){hint}"
        )
    version = None
    for owner in (root, handle):
        if "keras_version" in owner.attrs:
            version = _text(
                _attr(file, owner, "keras_version"), f"{path}: attribute 'keras_version'"
            )
            break
    entries = _model_config(file)
    where = f"{path}: attribute 'model_config'"
    layers = []
    for name in names:
        group = file.member(root, name, "layer")
        if not isinstance(group, h5py.Group):
            raise ConversionError(
                f"{path}: 'layer_names' lists {name!r}, but the file has no group {name!r}"
            )
        weight_names = _attr_list(file, group, "weight_names")
        weights = [file.weight(group, w, name) for w in weight_names]
        if entries is None:
            layers += _weights_only(name, weights, weight_names)
        elif name in entries and _is_model(entries[name]):
            layers += _nested(entries[name], name, weights, weight_names, path)
        else:
            entry = entries.get(name, {})
            config = _entry_config(entry, name, where) if name in entries else None
            cls, config = _unwrap_rnn(entry.get("class_name"), config)
            layers.append(H5Layer(name, cls, config, weights, weight_names))
    return version, layers


def _unwrap_rnn(cls: str | None, config: Any) -> tuple[str | None, Any]:
    """``RNN(cell)`` of a SimpleRNNCell, LSTMCell or GRUCell is that cell's layer: (its
    class, the cell's config updated with the RNN's). Another cell stays an "RNN"."""
    cell = config.get("cell") if cls == "RNN" and isinstance(config, dict) else None
    if not isinstance(cell, dict) or not isinstance(cell.get("class_name"), str):
        return cls, config
    if cell["class_name"] not in _CELLS:
        return cls, config
    inner = cell.get("config") if isinstance(cell.get("config"), dict) else {}
    return _CELLS[cell["class_name"]], {**inner, **{k: v for k, v in config.items() if k != "cell"}}


def _shown(cls: str | None, config: Any) -> str:
    """A class name for messages (an RNN with the class of its cell)."""
    cell = config.get("cell") if cls == "RNN" and isinstance(config, dict) else None
    if isinstance(cell, dict):
        return f"an RNN of {_short.repr(cell.get('class_name'))}"
    if isinstance(cell, list):
        return "an RNN of stacked cells"
    return _short.repr(cls)


def _nested(entry, name, weights, weight_names, path) -> list[H5Layer]:
    """A nested model's layers, each with the arrays whose weight names start with its name
    (after the names of the models around it, where a writer puts them)."""
    leaves = list(_leaves(entry, f"{name}/", f"{path}: attribute 'model_config'"))
    by_name = {p.rsplit("/", 1)[-1]: p for p, *_ in leaves}
    models = {name} | {m for _, ms, _, _ in leaves for m in ms}
    owned: dict[str, list[int]] = {}
    for k, w in enumerate(weight_names):
        parts = _parts(w)
        while len(parts) > 1 and parts[0] in models and parts[0] not in by_name:
            parts = parts[1:]
        if parts[0] in by_name:
            owned.setdefault(by_name[parts[0]], []).append(k)
    out = []
    for leaf, _, cls, cfg in leaves:
        ks = owned.get(leaf, [])
        cls, cfg = _unwrap_rnn(cls, cfg)
        layer = H5Layer(leaf, cls, cfg, [weights[k] for k in ks], [weight_names[k] for k in ks])
        if layer.recurrent and not ks:
            layer.problem = (
                f"its weights are not found in the group {name!r} of the nested "
                f"model (no weight name starts with {leaf.rsplit('/', 1)[-1]!r})"
            )
        out.append(layer)
    return out


def _cells(weight_names: list[str]) -> list[tuple[str, list[int]]]:
    """The weights grouped by the path that owns them (all but the last name), in order."""
    cells: dict[str, list[int]] = {}
    for k, w in enumerate(weight_names):
        cells.setdefault("/".join(_parts(w)[:-1]), []).append(k)
    return list(cells.items())


def _is_cell(weight_names: list[str], ks: list[int]) -> bool:
    names = tuple(_parts(weight_names[k])[-1] for k in ks)
    return names in (_CELL, (*_CELL, "bias"))


def _direction(owner: str) -> str | None:
    for part in owner.split("/"):
        for direction in ("forward", "backward"):
            if part.startswith(f"{direction}_"):
                return direction
    return None


def _classify(name: str, weights, weight_names, ks: list[int]) -> H5Layer | None:
    """A weights-only layer from its weight names: one recurrent cell (kernel,
    recurrent_kernel[, bias]), a forward and a backward one (Bidirectional), or None."""
    cells = _cells([weight_names[k] for k in ks])
    picked = [[ks[j] for j in js] for _, js in cells]
    if not all(_is_cell(weight_names, p) for p in picked):
        return None
    if len(cells) == 1:
        kind = None
    elif len(cells) == 2 and [_direction(o) for o, _ in cells] == ["forward", "backward"]:
        kind = "Bidirectional"
    else:
        return None
    order = [k for p in picked for k in p]
    return H5Layer(
        name, kind or "?", None, [weights[k] for k in order], [weight_names[k] for k in order]
    )


def _weights_only(name: str, weights, weight_names) -> list[H5Layer]:
    """The layers of one group of a weights-only file; a nested model's group holds several
    layers, told apart by the first name of their weight names."""
    everything = list(range(len(weights)))
    layer = _classify(name, weights, weight_names, everything)
    if layer is not None:
        return [_weights_only_layer(layer)]
    firsts: dict[str, list[int]] = {}
    for k in everything:
        firsts.setdefault(_parts(weight_names[k])[0], []).append(k)
    if len(firsts) < 2 or name in firsts:  # one layer of another kind
        return [H5Layer(name, None, None, weights, weight_names)]
    out = []
    for first, ks in firsts.items():
        inner = _classify(f"{name}/{first}", weights, weight_names, ks)
        if inner is not None:
            out.append(_weights_only_layer(inner))
    return out


def _weights_only_layer(layer: H5Layer) -> H5Layer:
    """A weights-only layer: config None, class "Bidirectional" or that of the shapes."""
    if layer.class_name == "?":
        layer.class_name = _kind_from_shapes(layer.weights)
        if layer.class_name is None:
            shapes = " and ".join(str(w.shape) for w in layer.weights[:2])
            layer.problem = (f"its kernel and recurrent_kernel {shapes} are no recurrent "
                             "cell's (1, 3 or 4 gate blocks)")  # fmt: skip
    return layer


def _kind_from_shapes(weights: list[_Weight]) -> str | None:
    if len(weights) < 2:
        return None
    kernel, recurrent = weights[0], weights[1]
    if recurrent.ndim != 2 or kernel.ndim != 2 or not recurrent.shape[0]:
        return None
    g, rest = divmod(recurrent.shape[1], recurrent.shape[0])
    return {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}.get(g) if not rest else None


def _keras3_file(version: str | None) -> bool:
    return version is not None and version.split(".")[0] == "3"


def _activation(value: Any, arg: str, layer: H5Layer, keras3: bool) -> str:
    if isinstance(value, str) and value in FROM_KERAS:
        return FROM_KERAS[value] if keras3 else value  # Keras 2 names mean multirnn's
    raise ConversionError(
        f"Keras layer {layer.name!r}: {arg}={_short.repr(value)} has no multirnn equivalent; "
        "multirnn "
        f"takes {', '.join(FROM_KERAS)}"
    )


def _canonical(
    layer: H5Layer, kind: str, units: int | None = None
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(canonical weights with CuDNN layouts converted, the options the weights decide).
    The declared shapes and dtypes are checked against the class and the config's
    ``units`` before any dataset is read."""
    if len(layer.weights) not in (2, 3):
        raise ConversionError(
            f"Keras layer {layer.name!r} holds {len(layer.weights)} arrays; a recurrent layer "
            "holds kernel, recurrent_kernel[, bias] (Keras 1 files are not supported)"
        )
    kernel, recurrent, *rest = layer.weights
    found = recurrent.shape[0] if recurrent.ndim == 2 else 0
    if units is not None and units != found:
        raise ConversionError(
            f"Keras layer {layer.name!r}: config says units={units}, its recurrent_kernel "
            f"has shape {recurrent.shape}"
        )
    units = found
    g = GATES[kind]
    if kernel.ndim != 2 or recurrent.shape != (units, g * units) or kernel.shape[1] != g * units:
        raise ConversionError(
            f"Keras layer {layer.name!r}: kernel {kernel.shape} and recurrent_kernel "
            f"{recurrent.shape} do not fit its class {kind} ({g} gate blocks)"
        )
    inputs = _input_dim(layer.config)
    if inputs is not None and kernel.shape[0] != inputs:
        raise ConversionError(
            f"Keras layer {layer.name!r}: config says its inputs have {inputs} features, its "
            f"kernel has shape {kernel.shape}"
        )
    options: dict[str, Any] = {}
    # a weights-only file names no class: its bias shape tells a CuDNN layer
    cudnn_class = layer.config is None or "CuDNN" in (layer.class_name or "")
    cudnn = bool(rest) and cudnn_class and kind != "SimpleRNN"
    cudnn = cudnn and rest[0].shape == (2 * g * units,)
    if rest and not cudnn:
        expected = {(2, 3 * units), (3 * units,)} if kind == "GRU" else {(g * units,)}
        if rest[0].shape not in expected:
            raise ConversionError(
                f"Keras layer {layer.name!r}: a {kind} bias of {units} units has shape "
                f"{' or '.join(map(str, sorted(expected)))}, got {rest[0].shape}"
            )
    for w in layer.weights:
        w.check_dtype(layer.name)
    kernel, recurrent, *rest = [w.read(layer.name) for w in layer.weights]
    if not rest:
        options["use_bias"] = False
        return [kernel, recurrent], options
    (bias,) = rest
    if cudnn:
        # CuDNNLSTM/CuDNNGRU: each input block holds cuDNN's row-major (units, in)
        blocks = np.split(kernel, g, axis=1)
        kernel = np.concatenate([b.reshape(-1).reshape(units, -1).T for b in blocks], axis=1)
        recurrent = np.concatenate([b.T for b in np.split(recurrent, g, axis=1)], axis=1)
        bias = bias[: g * units] + bias[g * units :] if kind == "LSTM" else bias.reshape(2, -1)
        options.update(activation="tanh", recurrent_activation="sigmoid")
    if kind == "GRU":
        options["reset_after"] = bias.ndim == 2
    return [kernel, recurrent, bias], options


def _input_dim(config: dict[str, Any] | None) -> int | None:
    """The feature count a config's ``batch_input_shape`` gives (the first layer's)."""
    shape = (config or {}).get("batch_input_shape")
    last = shape[-1] if isinstance(shape, list) and shape else None
    return last if isinstance(last, int) and not isinstance(last, bool) else None


def from_keras2_h5(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    layers: list[str] | None = None,
    merge_mode: Any = _UNSET,
    ignore_training_options: bool = False,
    ignore_time_major: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """The recurrent layers of a Keras HDF5 file as multirnn layers, by layer name
    (``outer/inner`` for a layer of a nested model).

    ``layers`` picks layers by name (default: every recurrent layer; a recurrent layer that
    cannot be converted exactly is refused, pick the others by name). ``options`` are
    constructor arguments for every converted layer (an option that a layer does not have,
    such as ``recurrent_activation`` for a ``SimpleRNN``, is not passed to it); they may not
    contradict the file's config. A weights-only file has no config: the activations must
    come from ``options``, as must ``reset_after`` for a GRU without a bias and
    ``merge_mode`` for a ``Bidirectional``.

    Refused unless asked for: regularizers and constraints (``ignore_training_options=True``
    converts without them); ``time_major=True`` (``ignore_time_major=True`` gives a layer
    taking ``(batch, time, features)``: swap the first two axes of the inputs and of the
    sequence outputs).

    A file with no recurrent layer is refused, as is anything in the file that would make
    the converter read another file (links other than hard links, external storage,
    virtual datasets) or more bytes than the file holds (docs/porting.md lists the checks).
    """
    path = os.fspath(path)
    handle, stream, size = _open(path)
    with stream, handle:
        file = _File(path, handle, size)
        version, found = read(file)
        flags = {
            "ignore_training_options": ignore_training_options,
            "ignore_time_major": ignore_time_major,
        }
        return _convert_all(file, version, found, layers, options, merge_mode, flags, backend)


def _convert_all(file: _File, version, found: list[H5Layer], layers, options, merge_mode,
                 flags, backend) -> dict[str, Any]:  # fmt: skip
    """The picked layers (every recurrent one by default), reading only their datasets."""
    path = file.path
    keras3 = _keras3_file(version)
    by_name = {layer.name: layer for layer in found}
    unknown = [n for n in layers or [] if n not in by_name]
    if unknown:
        raise ConversionError(
            f"{path} has no layer {_short.repr(unknown[0])}; layers: {', '.join(by_name)}"
        )
    recurrent = [layer for layer in found if layer.recurrent]
    if layers is None and not recurrent:
        raise ConversionError(
            f"{path} holds no recurrent layer ({', '.join(_RECURRENT)}, Bidirectional, RNN "
            f"of {', '.join(_CELLS)}); {_found(found)}"
        )
    out = {}
    for layer in found:
        if layers is not None and layer.name not in layers:
            continue
        if not layer.recurrent:
            if layers is not None and layer.problem is not None:
                raise ConversionError(f"{path}: Keras layer {layer.name!r}: {layer.problem}")
            if layers is not None:
                what = (
                    f"is {_shown(layer.class_name, layer.config)},"
                    if layer.class_name == "RNN"
                    else f"is a {layer.class_name},"
                    if layer.class_name
                    else f"holds weights {_short.repr(layer.weight_names or '(none)')}, which are"
                )
                raise ConversionError(
                    f"{path}: Keras layer {layer.name!r} {what} not a recurrent layer "
                    f"({', '.join(_RECURRENT)}, Bidirectional, RNN of {', '.join(_CELLS)})"
                )
            continue
        try:
            if layer.problem is not None:
                raise ConversionError(f"Keras layer {layer.name!r}: {layer.problem}")
            try:
                if layer.class_name == "Bidirectional":
                    out[layer.name] = _bidirectional(
                        layer, keras3, options, merge_mode, flags, backend
                    )
                else:
                    kind, kwargs, weights = _convert(layer, keras3, options, flags)
                    out[layer.name] = build(kind, weights[1].shape[0], kwargs, weights, backend)
            except ConversionError:
                raise
            except (TypeError, ValueError) as exc:  # what the layer's constructor refuses
                raise ConversionError(f"Keras layer {layer.name!r}: {exc}") from exc
        except ConversionError as exc:
            message = str(exc)
            if not message.startswith(path):
                message = f"{path}: {message}"
            if layers is None and len(recurrent) > 1:
                message += " (pick the other layers with layers=[...])"
            raise ConversionError(message) from exc
    return out


def _found(found: list[H5Layer]) -> str:
    """What a file without a recurrent layer holds, for the message."""
    classes = [_shown(layer.class_name, layer.config) for layer in found if layer.class_name]
    if classes:
        return f"its layers are {', '.join(dict.fromkeys(classes))}"
    names = ", ".join(repr(layer.name) for layer in found[:10])
    return (f"its layers ({names}{', ...' if len(found) > 10 else ''}) hold no recurrent "
            "cell's weights (kernel, recurrent_kernel[, bias])")  # fmt: skip


def _dtype_policy(value: Any, layer: H5Layer) -> str | None:
    """The name of a config's dtype: a string or a (Keras 2 or 3) policy object."""
    name = value
    if isinstance(value, dict):
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
    if value is not None and not isinstance(name, str):
        raise ConversionError(
            f"Keras layer {layer.name!r}: config dtype={_short.repr(value)} is neither a "
            "dtype name nor a dtype policy"
        )
    return name


def _check_types(layer: H5Layer) -> None:
    """The config values the converter uses have the types Keras writes."""
    config = layer.config or {}
    wrong = [(k, "true or false") for k in _FLAGS if not isinstance(config.get(k, True), bool)]
    for key in ("dropout", "recurrent_dropout"):
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong.append((key, "a number"))
    units = config.get("units")
    if units is not None and (isinstance(units, bool) or not isinstance(units, int) or units < 1):
        wrong.append(("units", "a positive integer"))
    if wrong:
        key, what = wrong[0]
        raise ConversionError(
            f"Keras layer {layer.name!r}: config {key}={_short.repr(config[key])} is not {what}"
        )


def _config_kwargs(layer: H5Layer, kind: str, keras3: bool, flags: dict[str, bool]):
    """The keyword arguments a layer's config decides (refusing what has no exact form)."""
    _check_types(layer)
    config = layer.config or {}
    kwargs = {k: config[k] for k in _PASSED if k in config}
    if "CuDNN" not in (layer.class_name or ""):
        kwargs["activation"] = _activation(
            config.get("activation", "tanh"), "activation", layer, keras3
        )
        if kind != "SimpleRNN":
            kwargs["recurrent_activation"] = _activation(
                config.get("recurrent_activation", "hard_sigmoid"),
                "recurrent_activation",
                layer,
                keras3,
            )
    if kind == "GRU" and "CuDNN" not in (layer.class_name or ""):
        kwargs["reset_after"] = bool(config.get("reset_after", False))  # Keras 2's default
    policy = _dtype_policy(config.get("dtype"), layer)
    if policy in precision.MIXED:  # float32 weights in the file, low-precision computation
        kwargs["dtype"] = policy
    elif policy is not None and policy not in ("float32", "float64"):
        raise ConversionError(
            f"Keras layer {layer.name!r} has dtype policy {policy!r}; multirnn converts "
            f"float32, float64 and the mixed policies {', '.join(precision.MIXED)} from "
            "Keras 2 files"
        )
    if config.get("time_major") and not flags["ignore_time_major"]:
        raise ConversionError(
            f"Keras layer {layer.name!r} has time_major=True: it takes (time, batch, features) "
            "inputs, while multirnn layers take (batch, time, features). Pass "
            "ignore_time_major=True to convert it anyway (the same weights and function: swap "
            "the first two axes of its inputs and sequence outputs)"
        )
    used = [k for k in _TRAINING if config.get(k) is not None]
    if used and not flags["ignore_training_options"]:
        raise ConversionError(
            f"Keras layer {layer.name!r} uses {', '.join(used)}; multirnn's regularizers and "
            "constraints are its own objects, so they are not converted. Pass "
            "ignore_training_options=True to convert without them"
        )
    units = config.get("units")
    return kwargs, units


def _convert(layer: H5Layer, keras3: bool, options: dict[str, Any], flags: dict[str, bool]):
    """(multirnn layer, keyword arguments, canonical weights) of one recurrent layer."""
    kind = _RECURRENT.get(layer.class_name or "")
    if kind is None:
        raise ConversionError(
            f"Keras layer {layer.name!r}: its arrays are no recurrent cell's "
            "(kernel, recurrent_kernel[, bias] of 1, 3 or 4 gate blocks)"
        )
    kwargs: dict[str, Any] = {}
    units = None
    if layer.config is not None:
        kwargs, units = _config_kwargs(layer, kind, keras3, flags)
    weights, decided = _canonical(layer, kind, units)
    for key, value in decided.items():
        if key in kwargs and kwargs[key] != value:
            raise ConversionError(
                f"Keras layer {layer.name!r}: config says {key}={kwargs[key]!r}, but its "
                f"weights are those of {key}={value!r}"
            )
        kwargs[key] = value
    for key, value in options.items():
        if key in _ONLY_FOR and kind not in _ONLY_FOR[key]:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ConversionError(
                f"Keras layer {layer.name!r}: {key}={value!r} contradicts the file "
                f"({key}={kwargs[key]!r})"
            )
        kwargs[key] = value
    needed = ["activation"] + (["recurrent_activation"] if kind != "SimpleRNN" else [])
    if any(arg not in kwargs for arg in needed):
        raise ConversionError(
            f"Keras layer {layer.name!r}: this file holds weights only, so the "
            f"activations are unknown; pass {'= and '.join(needed)}= as the layer was "
            "built with (Keras 2 defaults: activation 'tanh'; recurrent_activation "
            "'hard_sigmoid' before Keras 2.3, 'sigmoid' from 2.3 and in tf.keras 2)"
        )
    if kind == "GRU" and "reset_after" not in kwargs:
        raise ConversionError(
            f"Keras layer {layer.name!r}: this file holds weights only and the GRU has no "
            "bias, so reset_after is unknown (the two forms compute different functions); "
            "pass reset_after= as the layer was built with (the default is False in Keras 2, "
            "True in tf.keras from TensorFlow 2.0)"
        )
    kwargs.setdefault("dtype", str(weights[0].dtype))
    return kind, kwargs, weights


def _inner(layer: H5Layer, key: str, second: bool, keras3, options, flags):
    """(kind, kwargs, weights) of one direction of a Bidirectional: the config under ``key``
    (``"layer"`` or ``"backward_layer"``) with the first or the ``second`` half of the
    arrays."""
    half = len(layer.weights) // 2
    part = slice(half, None) if second else slice(None, half)
    entry = (layer.config or {}).get(key) or {}
    if not isinstance(entry, dict):
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r}: config {key}={_short.repr(entry)} is not a "
            "layer config"
        )
    cls, cfg = _unwrap_rnn(entry.get("class_name"), entry.get("config"))
    if layer.config is None:  # weights-only: told from the shapes
        cls, cfg = _kind_from_shapes(layer.weights[part]), None
    elif not isinstance(cls, str) or cls not in _RECURRENT or not isinstance(cfg, dict):
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} wraps {_shown(cls, cfg)}; convertible: "
            f"{', '.join(_RECURRENT)}, RNN of {', '.join(_CELLS)}"
        )
    inner = H5Layer(layer.name, cls, cfg, layer.weights[part], layer.weight_names[part])
    return _convert(inner, keras3, options, flags)


def _bidirectional(layer: H5Layer, keras3, options, merge_mode, flags, backend):
    """A Keras Bidirectional: the forward layer's arrays, then the backward one's; a custom
    ``backward_layer`` must be the forward layer run backwards."""
    if len(layer.weights) % 2:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r} holds {len(layer.weights)} "
            "arrays, not the same number for each direction"
        )
    kind, forward, forward_weights = _inner(layer, "layer", False, keras3, options, flags)
    config = layer.config or {}
    custom = bool(config.get("backward_layer"))
    back_kind, backward, backward_weights = _inner(
        layer, "backward_layer" if custom else "layer", True, keras3, options, flags
    )
    if custom:
        ignored = {"go_backwards", "zero_output_for_mask"}
        differs = sorted(
            k
            for k in forward.keys() | backward.keys()
            if k not in ignored and forward.get(k) != backward.get(k)
        )
        if backward_weights[1].shape != forward_weights[1].shape:
            differs.insert(0, "units")
        if back_kind != kind:
            differs.insert(0, f"class ({back_kind}, not {kind})")
        if differs or forward.get("go_backwards") == backward.get("go_backwards"):
            raise ConversionError(
                f"Keras Bidirectional {layer.name!r} has a backward_layer that is not the "
                f"forward layer run backwards (differs in {', '.join(differs) or 'go_backwards'}"
                "); multirnn's Bidirectional derives its backward copy from the forward layer"
            )
    elif back_kind != kind or backward != forward:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r}: its backward arrays are not "
            "those of its forward layer's kind"
        )
    if layer.config is not None:
        in_file = config.get("merge_mode", "concat")
        if not isinstance(in_file, (str, type(None))) or in_file not in _MERGE_MODES:
            raise ConversionError(
                f"Keras Bidirectional {layer.name!r}: config merge_mode={_short.repr(in_file)} "
                f"is not one of {', '.join(map(repr, _MERGE_MODES))}"
            )
        if merge_mode is not _UNSET and merge_mode != in_file:
            raise ConversionError(
                f"Keras Bidirectional {layer.name!r}: merge_mode="
                f"{merge_mode!r} contradicts the file (merge_mode={in_file!r})"
            )
        merge_mode = in_file
    elif merge_mode is _UNSET:
        raise ConversionError(
            f"Keras Bidirectional {layer.name!r}: this file holds weights only, so the merge "
            "mode is unknown; pass merge_mode= as the layer was built with ('concat', 'sum', "
            "'mul', 'ave' or None; Keras's default 'concat')"
        )
    forward.pop("zero_output_for_mask", None)
    return build_bidirectional(
        kind,
        forward_weights[1].shape[0],
        forward,
        forward_weights,
        backward_weights,
        merge_mode,
        backend,
    )
