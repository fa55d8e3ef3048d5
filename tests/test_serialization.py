"""Configs through JSON and layers through safetensors files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import multirnn

from .cases import VARIANTS, variant_id

RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def _numpy_engine():
    """These tests feed NumPy arrays; cross-engine files are tested per engine."""
    multirnn.set_backend("numpy")


def make(variant, **kwargs):
    layer, extra = variant
    return getattr(multirnn, layer)(3, **extra, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_from_config_round_trip_through_json(variant):
    layer = make(
        variant,
        activation="softsign",
        kernel_regularizer="l2",
        recurrent_constraint="unit_norm",
        return_sequences=True,
        seed=1,
        dtype="float32",
    )
    text = json.dumps(layer.get_config())
    again = multirnn.from_config(json.loads(text))
    assert type(again) is type(layer) and again.spec == layer.spec
    assert json.dumps(again.get_config()) == text


def test_from_config_names_the_problem():
    with pytest.raises(ValueError, match="needs a 'layer' key"):
        multirnn.from_config({"units": 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'unitz'"):
        multirnn.from_config({"layer": "GRU", "unitz": 3})
    with pytest.raises(multirnn.UnknownEngineError):
        multirnn.from_config({"layer": "GRU", "units": 3}, backend="nope")


def test_callable_layers_cannot_be_serialized(tmp_path):
    layer = multirnn.SimpleRNN(2, activation=np.sin, input_dim=2)
    with pytest.raises(TypeError, match="activation is the Python callable"):
        layer.get_config()
    with pytest.raises(TypeError, match="cannot be serialized"):
        multirnn.save(layer, tmp_path / "x.safetensors")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_save_load_computes_the_same_function(variant, tmp_path):
    layer = make(variant, return_sequences=True, go_backwards=True)
    x = RNG.standard_normal((2, 5, 4))
    want = layer(x)
    path = tmp_path / "layer.safetensors"
    multirnn.save(layer, path)
    loaded = multirnn.load(path, backend="numpy")
    assert loaded.spec == layer.spec
    np.testing.assert_array_equal(loaded(x), want)
    for a, b in zip(loaded.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_float32_layer_saves_float32_and_load_can_override_the_dtype(tmp_path):
    layer = multirnn.LSTM(2, dtype="float32", input_dim=3)
    multirnn.save(layer, tmp_path / "l.safetensors")
    loaded = multirnn.load(tmp_path / "l.safetensors")
    assert loaded.kernel.dtype == np.float32
    assert multirnn.load(tmp_path / "l.safetensors", dtype="float64").kernel.dtype == np.float64
    assert multirnn.load(tmp_path / "l.safetensors", dtype="float16").kernel.dtype == np.float16
    with pytest.raises(ValueError, match="dtype must be None"):
        multirnn.load(tmp_path / "l.safetensors", dtype="int8")


def test_save_unbuilt_and_load_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="has no weights yet"):
        multirnn.save(multirnn.GRU(2), tmp_path / "a.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(2)}, str(other), metadata={"format": "np"})
    with pytest.raises(ValueError, match="not a multirnn layer"):
        multirnn.load(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        multirnn.load(garbage)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        multirnn.load(tmp_path / "missing.safetensors")


def test_load_rejects_tensors_that_do_not_match_the_config(tmp_path):
    layer = multirnn.LSTM(2, input_dim=3)
    path = tmp_path / "l.safetensors"
    multirnn.save(layer, path)
    config = multirnn.LSTM(2, use_bias=False).get_config()
    meta = {"multirnn.format": "multirnn.layer/1", "multirnn.config": json.dumps(config)}
    save_file(
        dict(zip(("kernel", "recurrent_kernel", "bias"), layer.get_weights())), str(path), meta
    )
    with pytest.raises(ValueError, match="holds tensors .* but its config needs"):
        multirnn.load(path)


# -- Bidirectional, carried states, every engine ----------------------------------------------

ENGINES = ("numpy", "torch", "jax", "tensorflow")


def _installed(name):
    if name not in multirnn.engines.available():
        pytest.skip(f"{name} is not installed")
    return name


@pytest.mark.parametrize("source", ENGINES)
def test_bidirectional_and_carried_states_move_between_engines(source, tmp_path):
    _installed(source)
    x = RNG.standard_normal((2, 6, 4))
    inner = multirnn.engine(source).GRU(3, return_sequences=True, stateful=True, seed=0,
                                        dtype="float32" if source == "jax" else None)  # fmt: skip
    layer = multirnn.engine(source).Bidirectional(inner, merge_mode="sum")
    layer(x[:, :3])  # states now carried
    path = tmp_path / "b.safetensors"
    multirnn.save(layer, path)
    want = multirnn.to_numpy(layer(x[:, 3:]))  # the sequence continued
    for target in [e for e in ENGINES if e in multirnn.engines.available()]:
        loaded = multirnn.load(path, backend=target)
        assert type(loaded).__name__ == "Bidirectional" and loaded.merge_mode == "sum"
        got = multirnn.to_numpy(loaded(x[:, 3:]))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        fresh = multirnn.load(path, backend=target, states=False)
        assert fresh.states is None
    again = multirnn.from_config(json.loads(json.dumps(layer.get_config())), backend="numpy")
    assert again.spec == layer.spec


def test_states_can_be_left_out_of_a_file(tmp_path):
    layer = multirnn.LSTM(2, stateful=True, seed=0)
    layer(RNG.standard_normal((1, 3, 2)))
    multirnn.save(layer, tmp_path / "with.safetensors")
    multirnn.save(layer, tmp_path / "without.safetensors", states=False)
    with_states = multirnn.load(tmp_path / "with.safetensors")
    for a, b in zip(with_states.states, layer.states, strict=True):
        np.testing.assert_array_equal(a, b)
    assert multirnn.load(tmp_path / "without.safetensors").states is None


def _write(path, config_text, tensors=None):
    tensors = tensors or {"kernel": np.zeros((2, 8)), "recurrent_kernel": np.zeros((2, 8))}
    meta = {"multirnn.format": "multirnn.layer/1", "multirnn.config": config_text}
    save_file(tensors, str(path), meta)
    return path


@pytest.mark.parametrize(
    "config,match",
    [
        ("{not json", "is not JSON"),
        ("[" * 5000 + "]" * 5000, "nested too deeply|not JSON"),
        ('["LSTM"]', "must hold a JSON object, got list"),
        ('{"layer": "GRU", "units": 2, "kernel_initializer": {"class_name": ["x"]}}',
         r"kernel_initializer\['class_name'\] must be a string"),
        ('{"layer": "LSTM", "units": "two"}', "units must be a positive integer"),
        ('{"layer": {"layer": "LSTM", "units": 2}, "merge_mode": "max"}', "merge_mode"),
    ],
)  # fmt: skip
def test_malformed_files_raise_one_error_naming_file_and_key(tmp_path, config, match):
    path = _write(tmp_path / "bad.safetensors", config)
    with pytest.raises(multirnn.LayerFileError, match=match) as info:
        multirnn.load(path)
    assert str(path) in str(info.value)


def test_missing_and_stray_tensors_name_the_file(tmp_path):
    config = json.dumps(multirnn.SimpleRNN(2, use_bias=False, stateful=False).get_config())
    path = _write(tmp_path / "a.safetensors", config, {"kernel": np.zeros((2, 2))})
    with pytest.raises(multirnn.LayerFileError, match=r"a.safetensors holds tensors \['kernel'\]"):
        multirnn.load(path)
    tensors = {"kernel": np.zeros((2, 2)), "recurrent_kernel": np.zeros((2, 2)),
               "state/h": np.zeros((1, 2))}  # fmt: skip
    path = _write(tmp_path / "b.safetensors", config, tensors)
    with pytest.raises(multirnn.LayerFileError, match="carried states .* is not stateful"):
        multirnn.load(path)
    path = _write(tmp_path / "c.safetensors", config,
                  {"kernel": np.zeros((2, 3)), "recurrent_kernel": np.zeros((2, 2))})  # fmt: skip
    with pytest.raises(multirnn.LayerFileError, match="c.safetensors: .*'kernel'"):
        multirnn.load(path)


# -- files from strangers: checked before anything is created --------------------------------


@multirnn.register_cell(name="test_serialization.Leaky")
class Leaky(multirnn.Cell):
    """A leaky cell whose kernel reads [x, h] (its first dimension is no input size), with a
    helper method and a class default that an option may override."""

    rate = 0.5

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim + self.units, self.units), initializer="orthogonal")

    def mix(self, old, new):
        return (1.0 - self.rate) * old + self.rate * new

    def step(self, ops, w, x, states):
        (h,) = states
        h = self.mix(h, ops.tanh(ops.concat([x, h], axis=1) @ w["kernel"]))
        return h, [h]


def write_raw(path, header, data=b""):
    """A safetensors file with exactly this header (which save_file would not write)."""
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def _meta(config):
    return {"multirnn.format": "multirnn.layer/1", "multirnn.config": json.dumps(config)}


def _dtype(eng):
    return "float32" if eng.name == "jax" else "float64"  # JAX's 64-bit mode is off


HOSTILE = {
    "LSTM units 3000": {"layer": "LSTM", "units": 3000, "input_dim": 3000},
    "LSTM units 100000": {"layer": "LSTM", "units": 100000, "input_dim": 100000},
    "Bidirectional GRU": {"layer": {"layer": "GRU", "units": 100000, "input_dim": 100000}},
    "RNN(cell)": {"cell": {"class_name": "test_serialization.Leaky",
                           "config": {"units": 100000}}, "input_dim": 100000},
}  # fmt: skip


@pytest.mark.parametrize("config", HOSTILE.values(), ids=HOSTILE)
def test_a_tiny_file_describing_a_huge_layer_is_refused_at_once(eng, config, tmp_path):
    import time
    import tracemalloc

    path = tmp_path / "hostile.safetensors"
    save_file({}, str(path), _meta(config))
    assert path.stat().st_size < 400
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(multirnn.LayerFileError, match="holds tensors \\[\\], but its config"):
            multirnn.load(path, backend=eng.name)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 10 * 2**20, (elapsed, peak)


def test_a_tiny_hostile_file_costs_no_memory_in_a_fresh_process(tmp_path):
    """The probe as an attacker would run it: resident memory, not only Python's heap."""
    import subprocess
    import sys

    script = f"""
import json, resource, time
from safetensors.numpy import save_file
import multirnn
for units in (3000, 100000):
    path = {str(tmp_path)!r} + f"/h{{units}}.safetensors"
    config = {{"layer": "LSTM", "units": units, "input_dim": units}}
    save_file({{}}, path, {{"multirnn.format": "multirnn.layer/1",
                           "multirnn.config": json.dumps(config)}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        multirnn.load(path, backend="numpy")
    except multirnn.LayerFileError:
        pass
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(units, time.perf_counter() - start, grown * 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        _, seconds, grown = line.split()
        assert float(seconds) < 1.0 and int(grown) < 100 * 2**20, line


def _file_layers(eng):
    dtype = _dtype(eng)
    return {
        "LSTM": eng.LSTM(3, input_dim=4, seed=1, dtype=dtype),
        "Bidirectional": eng.Bidirectional(eng.GRU(3, stateful=True, seed=2, dtype=dtype)),
        "RNN(cell)": eng.RNN(Leaky(3), input_dim=4, seed=3, dtype=dtype),
        "Bidirectional(RNN(cell))": eng.Bidirectional(
            eng.RNN(Leaky(3, rate=0.25), seed=4, dtype=dtype)
        ),
    }


def test_load_builds_from_the_files_arrays_and_never_runs_an_initializer(
    eng, tmp_path, monkeypatch
):
    x = RNG.standard_normal((2, 5, 4)).astype(_dtype(eng))
    following = {}
    for name, layer in _file_layers(eng).items():
        layer(x)  # builds; the stateful one carries states into the file
        multirnn.save(layer, tmp_path / f"{name}.safetensors")
        following[name] = multirnn.to_numpy(layer(x))

    def refuse(*args, **kwargs):
        raise AssertionError("an initializer ran during load")

    monkeypatch.setattr("multirnn.weights.initial", refuse)
    monkeypatch.setattr(multirnn.Cell, "initial_weights", refuse)
    for name, next_call in following.items():
        loaded = multirnn.load(tmp_path / f"{name}.safetensors", backend=eng.name)
        assert loaded.built
        np.testing.assert_allclose(multirnn.to_numpy(loaded(x)), next_call, rtol=1e-6, atol=1e-6)


def _cell_file(tmp_path, **options):
    layer = multirnn.RNN(Leaky(2), input_dim=3, seed=0)
    path = tmp_path / "cell.safetensors"
    multirnn.save(layer, path)
    config = layer.get_config()
    config["cell"]["config"].update(options)
    save_file(dict(zip(layer.weight_names, layer.get_weights())), str(path), _meta(config))
    return path


@pytest.mark.parametrize(
    "option,match",
    [
        ({"step": 1}, "'step' cannot be a cell option"),
        ({"state_names": 1}, "'state_names' cannot be a cell option"),
        ({"mix": 1}, "'mix' cannot be a cell option: it would replace Leaky.mix"),
        ({"_config": 1}, "'_config' cannot be a cell option"),
        ({"rate": "fast"}, "option 'rate' must be a number, like its default Leaky.rate"),
        ({"rate": True}, "option 'rate' must be a number"),
    ],
)
def test_cell_options_that_would_replace_the_class_are_refused(tmp_path, option, match):
    path = _cell_file(tmp_path, **option)
    with pytest.raises(multirnn.LayerFileError, match=match) as info:
        multirnn.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=match):
        Leaky(2, **option)


def test_a_cell_option_overrides_a_class_default(tmp_path):
    loaded = multirnn.load(_cell_file(tmp_path, rate=0.25))
    assert loaded.cell.rate == 0.25 and Leaky.rate == 0.5


def test_a_cell_file_without_input_dim_takes_it_from_the_shapes(tmp_path):
    """save records the input size; a hand-made file may leave it out where the shapes
    show it, and is refused where they do not."""
    layer = multirnn.RNN(multirnn.SimpleRNNCell(2), input_dim=3, seed=0)
    config = json.dumps(layer.get_config() | {"input_dim": None})
    tensors = dict(zip(layer.weight_names, layer.get_weights()))
    path = _write(tmp_path / "c.safetensors", config, tensors)
    assert multirnn.load(path).input_dim == 3
    leaky = multirnn.RNN(Leaky(2), input_dim=3, seed=0)  # kernel (input_dim + units, units)
    config = json.dumps(leaky.get_config() | {"input_dim": None})
    _write(path, config, {"kernel": leaky.get_weights()[0]})
    with pytest.raises(multirnn.LayerFileError, match="Leaky declares for no input size"):
        multirnn.load(path)


@pytest.mark.parametrize("kind", ["F8_E4M3", "F8_E5M2", "I32", "U8", "BOOL"])
def test_tensors_of_unsupported_dtypes_are_named(tmp_path, kind):
    config = multirnn.SimpleRNN(1, use_bias=False, input_dim=1).get_config()
    sizes = {"F8_E4M3": 1, "F8_E5M2": 1, "I32": 4, "U8": 1, "BOOL": 1}
    n = sizes[kind]
    header = {
        "__metadata__": _meta(config),
        "kernel": {"dtype": kind, "shape": [1, 1], "data_offsets": [0, n]},
        "recurrent_kernel": {"dtype": kind, "shape": [1, 1], "data_offsets": [n, 2 * n]},
    }
    path = write_raw(tmp_path / "d.safetensors", header, b"\0" * 2 * n)
    with pytest.raises(multirnn.LayerFileError, match=f"tensor 'kernel' holds {kind}; a layer"):
        multirnn.load(path)


def test_tensors_must_have_the_dtype_the_config_gives(tmp_path):
    config = json.dumps(multirnn.SimpleRNN(2, use_bias=False, dtype="float32").get_config())
    path = _write(tmp_path / "a.safetensors", config,
                  {"kernel": np.zeros((3, 2)), "recurrent_kernel": np.zeros((2, 2))})  # fmt: skip
    with pytest.raises(multirnn.LayerFileError, match="holds float64, but its config says"):
        multirnn.load(path)


def test_carried_states_must_fit_the_layer(tmp_path):
    config = json.dumps(multirnn.LSTM(2, use_bias=False, stateful=True).get_config())
    weights = {"kernel": np.zeros((3, 8)), "recurrent_kernel": np.zeros((2, 8))}
    cases = [
        ({"state/h": np.zeros((1, 2))}, "needs all of them"),
        ({"state/h": np.zeros((1, 3)), "state/c": np.zeros((1, 3))}, r"needs \(batch, 2\)"),
        ({"state/h": np.zeros(2), "state/c": np.zeros(2)}, r"state/h has shape \(2,\)"),
        ({"state/h": np.zeros((1, 2)), "state/c": np.zeros((4, 2))}, "different batch sizes"),
    ]
    for states, match in cases:
        path = _write(tmp_path / "s.safetensors", config, weights | states)
        with pytest.raises(multirnn.LayerFileError, match=match):
            multirnn.load(path)
    path = _write(tmp_path / "s.safetensors", config,
                  weights | {"state/h": np.ones((4, 2)), "state/c": np.ones((4, 2))})  # fmt: skip
    np.testing.assert_array_equal(multirnn.load(path).states[0], np.ones((4, 2)))
    assert multirnn.load(path, states=False).states is None


def test_headers_that_do_not_fit_their_file_are_refused(tmp_path):
    config = multirnn.SimpleRNN(1, use_bias=False, input_dim=1).get_config()
    header = {"__metadata__": _meta(config),
              "kernel": {"dtype": "F64", "shape": [1, 1], "data_offsets": [0, 8]},
              "recurrent_kernel": {"dtype": "F64", "shape": [2**31, 2**31],
                                   "data_offsets": [8, 16]}}  # fmt: skip
    path = write_raw(tmp_path / "h.safetensors", header, b"\0" * 16)
    with pytest.raises(multirnn.LayerFileError, match="not a readable safetensors file"):
        multirnn.load(path)
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(multirnn.LayerFileError, match="no header length that fits its 10 bytes"):
        multirnn.load(path)
    big = {"__metadata__": {**_meta(config), "padding": "x" * (9 * 2**20)}}
    path = write_raw(tmp_path / "big.safetensors", big)
    with pytest.raises(multirnn.LayerFileError, match="load reads headers of at most 8388608"):
        multirnn.load(path)


def test_load_reads_only_regular_files(tmp_path):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(multirnn.LayerFileError, match="it is a FIFO"):
        multirnn.load(fifo)
    with pytest.raises(multirnn.LayerFileError, match="it is a directory"):
        multirnn.load(tmp_path)


# -- save writes a regular file, whole or not at all ----------------------------------------------


def _layer():
    return multirnn.GRU(2, input_dim=3, seed=0)


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "run3.safetensors"
    target.write_bytes(b"old")
    link = tmp_path / "latest.safetensors"
    link.symlink_to(target.name)
    multirnn.save(_layer(), link)
    assert link.is_symlink() and os.readlink(link) == target.name
    assert multirnn.load(target).spec == _layer().spec
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to("made.safetensors")
    multirnn.save(_layer(), dangling)
    assert dangling.is_symlink() and (tmp_path / "made.safetensors").is_file()


def _special_files(tmp_path):
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    yield fifo, "a FIFO \\(named pipe\\)", stat.S_ISFIFO
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:  # not root: no device node to try
        pass
    else:
        yield device, "a character device", stat.S_ISCHR
    sock = tmp_path / "sock"
    os.mknod(sock, 0o600 | stat.S_IFSOCK)
    yield sock, "a socket", stat.S_ISSOCK


def test_save_refuses_what_is_not_a_regular_file(tmp_path):
    import errno

    for path, kind, still in _special_files(tmp_path):
        with pytest.raises(OSError, match=f"is {kind}; save writes only regular files") as info:
            multirnn.save(_layer(), path)
        assert info.value.errno == errno.EINVAL and info.value.filename == str(path)
        assert still(path.lstat().st_mode), f"{kind} was replaced"
        link = tmp_path / f"link-to-{path.name}"
        link.symlink_to(path)
        with pytest.raises(OSError, match=kind):
            multirnn.save(_layer(), link)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        multirnn.save(_layer(), tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot create a file in") as info:
        multirnn.save(_layer(), tmp_path / "missing" / "x.safetensors")
    assert info.value.filename == str(tmp_path / "missing" / "x.safetensors")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("failure", ["serializing", "disk full", "interrupted"])
def test_a_failed_save_leaves_what_was_there_and_no_temporary_file(tmp_path, monkeypatch, failure):
    import errno

    import safetensors.numpy
    from safetensors import SafetensorError

    path = tmp_path / "layer.safetensors"
    multirnn.save(multirnn.GRU(2, input_dim=3, seed=1), path)
    before = path.read_bytes()

    real_write = os.write

    def fail(fd, data):  # part of the file written, then the failure
        real_write(fd, bytes(data[:7]))
        if failure == "disk full":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise KeyboardInterrupt

    def refuse(tensors, metadata=None):
        raise SafetensorError("cannot serialize")

    if failure == "serializing":
        monkeypatch.setattr(safetensors.numpy, "save", refuse)
    else:
        monkeypatch.setattr(os, "write", fail)
    expected = {"serializing": ValueError, "disk full": OSError, "interrupted": KeyboardInterrupt}
    with pytest.raises(expected[failure]) as info:
        multirnn.save(_layer(), path)
    if failure == "disk full":
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["layer.safetensors"]


def test_save_keeps_a_replaced_files_mode_and_creates_like_open(tmp_path):
    path = tmp_path / "layer.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o640)
    multirnn.save(_layer(), path)
    assert path.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o027)
    try:
        multirnn.save(_layer(), tmp_path / "new.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "new.safetensors").stat().st_mode & 0o777 == 0o640


# -- hostile headers cost what a real one costs; every byte is read through one descriptor ---


def test_a_cell_file_with_one_long_shape_is_refused_at_once_in_a_short_message(tmp_path):
    """A zero-byte tensor of shape [0, 1, ..., N] once made load declare the cell for every
    size in it (seconds per megabyte of header) and quote the whole shape."""
    import time

    from multirnn.builtin_cells import LSTMCell

    config = multirnn.RNN(LSTMCell(2)).get_config()  # no input_dim: the shapes tell it
    shape = list(range(200_000))  # a 1.3 MB header
    header = {"__metadata__": _meta(config),
              "kernel": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}  # fmt: skip
    path = write_raw(tmp_path / "long.safetensors", header)
    start = time.perf_counter()
    with pytest.raises(multirnn.LayerFileError, match="declares for no input size") as info:
        multirnn.load(path)
    assert time.perf_counter() - start < 1.0
    assert len(str(info.value)) < 500


def _open_calls(monkeypatch):
    """The paths os.open and open are given, from now on."""
    import builtins

    opened = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    def py_open(path, *args, **kwargs):
        if not isinstance(path, int):
            opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    return opened


def test_load_opens_the_file_once_and_reads_through_that_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "layer.safetensors"
    layer = multirnn.LSTM(3, input_dim=2, seed=0, stateful=True)
    layer(np.ones((4, 5, 2)))
    multirnn.save(layer, path)
    opened = _open_calls(monkeypatch)
    again = multirnn.load(path)
    assert opened == [str(path)]
    for got, want in zip(
        again.get_weights() + list(again.states), layer.get_weights() + list(layer.states)
    ):
        np.testing.assert_array_equal(got, want)


SWAP_FOR_A_FIFO = """
import os, sys
import multirnn
path = sys.argv[1]
real_open = os.open

def open_then_swap(name, *args, **kwargs):  # the file is replaced once it has been opened
    fd = real_open(name, *args, **kwargs)
    if os.fspath(name) == path:
        os.rename(path, path + ".real")
        os.mkfifo(path)  # opened again by name, it would wait for a writer forever
    return fd

os.open = open_then_swap
multirnn.set_backend("numpy")
print(type(multirnn.load(path)).__name__)
"""


def test_load_is_not_misled_by_a_fifo_swapped_in_after_the_check(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "layer.safetensors"
    multirnn.save(multirnn.GRU(2, input_dim=3, seed=0), path)
    done = subprocess.run([sys.executable, "-c", SWAP_FOR_A_FIFO, str(path)], timeout=60,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "GRU"


def test_save_writes_the_temporary_file_through_the_descriptor_that_created_it(
    tmp_path, monkeypatch
):
    """A temporary name swapped for a symlink after it was created redirects nothing."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    real_os_open = os.open

    def create_then_swap(name, flags, *args, **kwargs):
        fd = real_os_open(name, flags, *args, **kwargs)
        if str(name).endswith(".tmp"):
            os.unlink(name)
            os.symlink(victim, name)
        return fd

    monkeypatch.setattr(os, "open", create_then_swap)
    opened = _open_calls(monkeypatch)
    multirnn.save(_layer(), tmp_path / "layer.safetensors")
    assert victim.read_bytes() == b"precious"
    assert len([p for p in opened if p.endswith(".tmp")]) == 1
