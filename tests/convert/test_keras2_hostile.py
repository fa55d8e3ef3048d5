"""Keras HDF5 files from strangers are data: every probe of a crafted file is a
``ConversionError`` naming the file and the key, nothing in a file makes the converter read
another file, and only the datasets of the converted layers are read, after their declared
shapes and dtypes are checked. The Hypothesis test mutates real files (``MULTIRNN_FUZZ=long``:
``nox -s fuzz``, many more draws)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from multirnn import convert  # noqa: E402
from multirnn.convert import ConversionError  # noqa: E402

F, H = 3, 4
#: the real Keras 2 files from public projects, read in place (never copied into the repository)
REAL = Path(__file__).resolve().parents[3] / "shared" / "real_h5"
#: a float32 that no file here holds: it marks bytes that live outside the converted file
SECRET = np.float32(1234.5678)


def lstm_arrays(name, inputs=F, units=H, dtype="float32"):
    r = np.random.default_rng(0)
    shapes = {"kernel": (inputs, 4 * units), "recurrent_kernel": (units, 4 * units),
              "bias": (4 * units,)}  # fmt: skip
    return [(f"{name}/{k}:0", r.standard_normal(s).astype(dtype)) for k, s in shapes.items()]


def write(path, layers, *, config=True):
    """A Keras 2 model file (``config=False``: a ``save_weights`` file); layers:
    ``(name, class_name, config, [(weight name, array or a function making the dataset)])``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if config else f
        root.attrs["layer_names"] = [n.encode() for n, *_ in layers]
        root.attrs["keras_version"] = b"2.3.1"
        for name, _, _, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for w, value in weights:
                if callable(value):
                    value(group, w)
                else:
                    group.create_dataset(w, data=value)
        if config:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
                "name": "sequential_1",
                "layers": [{"class_name": c, "config": {"name": n, **cfg}}
                           for n, c, cfg, _ in layers]}}).encode()  # fmt: skip
    return path


LSTM_CONFIG = {"units": H, "activation": "tanh", "recurrent_activation": "sigmoid"}


def lstm_file(path, **kwargs):
    return write(path, [("lstm_1", "LSTM", LSTM_CONFIG, lstm_arrays("lstm_1"))], **kwargs)


def refused(path, match, **kwargs):
    """The conversion is refused with a message naming the file and matching ``match``."""
    with pytest.raises(ConversionError, match=match) as info:
        convert.from_keras2_h5(path, backend="numpy", **kwargs)
    assert str(path) in str(info.value)
    return str(info.value)


def secret_file(tmp_path, n):
    path = tmp_path / "credentials"
    path.write_bytes(np.full(n, SECRET, np.float32).tobytes())
    return path


def secret_h5(tmp_path, shape):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.full(shape, SECRET, np.float32))
    return path


# -- nothing in a file makes the converter read another file ----------------------------------


def test_external_storage_is_refused(tmp_path):
    secret = secret_file(tmp_path, F * 4 * H)

    def external(group, name):
        group.create_dataset(name, shape=(F, 4 * H), dtype="f4",
                             external=[(str(secret), 0, F * 4 * H * 4)])  # fmt: skip

    arrays = lstm_arrays("lstm_1")
    arrays[0] = (arrays[0][0], external)
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    with h5py.File(path) as f:  # the file alone would read the secret into the kernel
        assert np.all(f["model_weights/lstm_1/lstm_1/kernel:0"][()] == SECRET)
    refused(path, r"dataset '/model_weights/lstm_1/lstm_1/kernel:0' keeps its data in an "
            "external file .*credentials")  # fmt: skip


def test_external_storage_in_a_skipped_layer_is_refused_too(tmp_path):
    secret = secret_file(tmp_path, 8)

    def external(group, name):
        group.create_dataset(name, shape=(8,), dtype="f4", external=[(str(secret), 0, 32)])

    path = write(tmp_path / "m.h5", [
        ("lstm_1", "LSTM", LSTM_CONFIG, lstm_arrays("lstm_1")),
        ("dense_1", "Dense", {"units": 8}, [("dense_1/bias:0", external)]),
    ])  # fmt: skip
    refused(path, r"'/model_weights/dense_1/dense_1/bias:0' keeps its data in an external file")


def test_virtual_datasets_are_refused(tmp_path):
    other = secret_h5(tmp_path, (H, 4 * H))

    def virtual(group, name):
        layout = h5py.VirtualLayout((H, 4 * H), "f4")
        layout[:] = h5py.VirtualSource(str(other), "data", (H, 4 * H))
        group.create_virtual_dataset(name, layout)

    arrays = lstm_arrays("lstm_1")
    arrays[1] = (arrays[1][0], virtual)
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    refused(path, r"'/model_weights/lstm_1/lstm_1/recurrent_kernel:0' is a virtual dataset")


@pytest.mark.parametrize(
    "where,link",
    [
        ("model_weights/lstm_1/lstm_1/kernel:0", "soft"),
        ("model_weights/lstm_1/lstm_1/kernel:0", "external"),
        ("model_weights/lstm_1/lstm_1", "soft"),  # a group on the way to a dataset
        ("model_weights/lstm_1", "soft"),  # a layer group
        ("model_weights/lstm_1", "external"),
        ("model_weights", "external"),
    ],
)
def test_soft_and_external_links_are_refused(tmp_path, where, link):
    path = lstm_file(tmp_path / "m.h5")
    other = secret_h5(tmp_path, (F, 4 * H))
    with h5py.File(path, "a") as f:
        f.move(where, "/moved")  # the link's target, elsewhere in the file
        f[where] = h5py.SoftLink("/moved") if link == "soft" else h5py.ExternalLink(other, "/")
    kind = "a soft link to '/moved'" if link == "soft" else "an external link to '/' in"
    refused(path, f"'/{where}' .* is {kind}")


def test_a_weight_name_that_is_not_a_relative_path_is_refused(tmp_path):
    path = lstm_file(tmp_path / "m.h5")
    with h5py.File(path, "a") as f:  # an absolute name would reach any object of the file
        group = f["model_weights/lstm_1"]
        names = list(group.attrs["weight_names"])
        group.attrs["weight_names"] = [f"/model_weights/lstm_1/{names[0]}", *names[1:]]
    refused(path, "weight '/model_weights/lstm_1/lstm_1/kernel:0' .* is not a path of names")


def test_a_dataset_needing_a_filter_plugin_is_refused(tmp_path):
    def plugin(group, name):
        group.create_dataset(name, data=np.zeros((H, 4 * H), "f4"), compression=32123,
                             allow_unknown_filter=True)  # fmt: skip

    arrays = lstm_arrays("lstm_1")
    arrays[1] = (arrays[1][0], plugin)
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    refused(path, "recurrent_kernel:0' .*needs HDF5 filter 32123.* no plugin is ever loaded")


def test_a_path_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.h5"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    refused(fifo, r"is not a readable HDF5 file: it is a FIFO \(named pipe\)")


# -- only the converted layers' datasets are read, after their shapes are checked -------------


def huge(shape, **kwargs):
    """A dataset declaring ``shape`` that stores nothing (no chunk is ever written)."""
    return lambda group, name: group.create_dataset(name, shape=shape, dtype="f4", **kwargs)


def test_a_skipped_layer_declaring_a_huge_dataset_is_never_read(tmp_path):
    path = write(tmp_path / "m.h5", [
        ("lstm_1", "LSTM", LSTM_CONFIG, lstm_arrays("lstm_1")),
        ("dense_1", "Dense", {"units": 100000}, [
            ("dense_1/kernel:0", huge((100000, 100000))),  # 40 GB declared
            ("dense_1/bias:0", huge((100000,), chunks=True, compression="gzip"))]),
    ])  # fmt: skip
    assert path.stat().st_size < 16_000
    (layer,) = convert.from_keras2_h5(path, backend="numpy").values()
    np.testing.assert_array_equal(layer.get_weights()[0], lstm_arrays("lstm_1")[0][1])


def test_a_recurrent_dataset_that_disagrees_with_the_config_is_refused_before_reading(tmp_path):
    arrays = lstm_arrays("lstm_1")
    arrays[0] = (arrays[0][0], huge((100000, 100000)))
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    refused(path, r"kernel \(100000, 100000\) and recurrent_kernel \(4, 16\) do not fit")
    units = lstm_arrays("lstm_1", units=3)  # the config says 4 units
    path = write(tmp_path / "u.h5", [("lstm_1", "LSTM", LSTM_CONFIG, units)])
    refused(path, r"config says units=4, its recurrent_kernel has shape \(3, 12\)")
    config = {**LSTM_CONFIG, "batch_input_shape": [None, 5, F + 1]}
    path = write(tmp_path / "i.h5", [("lstm_1", "LSTM", config, lstm_arrays("lstm_1"))])
    refused(path, r"config says its inputs have 4 features, its kernel has shape \(3, 16\)")


@pytest.mark.parametrize("chunked", [False, True], ids=["contiguous", "chunked"])
def test_a_recurrent_dataset_declaring_more_than_the_file_holds_is_refused(tmp_path, chunked):
    """The shapes fit an LSTM of the config's units, but the kernel declares 10**8 input
    features: more bytes than the file holds."""
    kwargs = {"chunks": (1000, 4 * H), "shuffle": True} if chunked else {}
    arrays = lstm_arrays("lstm_1")
    arrays[0] = (arrays[0][0], huge((10**8, 4 * H), **kwargs))
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    refused(path, r"kernel:0' \(layer 'lstm_1'\) declares shape \(100000000, 16\), 6400000000 "
            r"bytes, more than the file holds: \d+ bytes on disk")  # fmt: skip


def test_weights_only_shapes_are_checked_against_each_other_before_reading(tmp_path):
    weights = [("lstm/lstm_cell/kernel:0", huge((F, 4 * 10**6))),
               ("lstm/lstm_cell/recurrent_kernel:0", np.zeros((H, 4 * H), "f4"))]  # fmt: skip
    path = write(tmp_path / "w.h5", [("lstm", None, None, weights)], config=False)
    refused(path, r"kernel \(3, 4000000\) and recurrent_kernel \(4, 16\) do not fit its class "
            "LSTM", activation="tanh", recurrent_activation="sigmoid")  # fmt: skip


@pytest.mark.parametrize("dtype", ["int32", "float16", "complex64", "S4"])
def test_weights_of_another_dtype_are_refused(tmp_path, dtype):
    arrays = lstm_arrays("lstm_1")
    arrays[2] = (arrays[2][0], np.zeros(4 * H, dtype))
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    refused(path, rf"bias:0' \(layer 'lstm_1'\) holds {np.dtype(dtype)} values; multirnn "
            "computes in float32 or float64")  # fmt: skip


def test_big_endian_weights_convert(tmp_path):
    arrays = [(n, a.astype(">f8")) for n, a in lstm_arrays("lstm_1")]
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    (layer,) = convert.from_keras2_h5(path, backend="numpy").values()
    assert layer.spec.dtype == "float64"
    np.testing.assert_array_equal(layer.get_weights()[1], arrays[1][1])


# -- malformed attributes and configs: ConversionError naming the file and the key ------------


def _set_attr(path, where, key, value):
    with h5py.File(path, "a") as f:
        f[where].attrs[key] = value


@pytest.mark.parametrize(
    "where,key,value,match",
    [
        ("model_weights", "layer_names", np.arange(3),
         r"attribute 'layer_names' of '/model_weights' holds int 0, not text"),
        ("model_weights", "layer_names", np.zeros((2, 2), "S3"),
         r"attribute 'layer_names' of '/model_weights' is not a list of names"),
        ("model_weights", "layer_names", np.array([b"lstm_\xff"]),
         r"attribute 'layer_names' of '/model_weights' is not valid UTF-8"),
        ("model_weights/lstm_1", "weight_names", np.array([1.5, 2.5]),
         r"attribute 'weight_names' of '/model_weights/lstm_1' holds float 1.5, not text"),
        ("model_weights/lstm_1", "weight_names",
         np.array([b"\xff\xfe"], dtype=h5py.string_dtype("utf-8")),
         r"attribute 'weight_names' of '/model_weights/lstm_1' is not valid UTF-8"),
        ("model_weights", "keras_version", np.int32(2), "attribute 'keras_version' holds"),
        ("/", "model_config", np.arange(4), "attribute 'model_config' holds ndarray"),
        ("/", "model_config", b'{"class_name": "\xff"}', "attribute 'model_config' is not valid"),
    ],
    ids=["layer-names-ints", "layer-names-2d", "layer-names-bytes", "weight-names-floats",
         "weight-names-vlen-utf8", "version-int", "config-array", "config-bytes"],
)  # fmt: skip
def test_attributes_of_the_wrong_type_or_encoding(tmp_path, where, key, value, match):
    path = lstm_file(tmp_path / "m.h5")
    _set_attr(path, where, key, value)
    refused(path, match)


def test_a_deeply_nested_model_config_is_refused(tmp_path):
    path = lstm_file(tmp_path / "m.h5")
    _set_attr(path, "/", "model_config", "[" * 10_000 + "]" * 10_000)
    refused(path, "attribute 'model_config' is JSON nested too deeply")
    model = {"class_name": "LSTM", "config": {"name": "lstm_1", **LSTM_CONFIG}}
    for k in range(40):  # parses, but nests models 40 deep
        model = {"class_name": "Functional", "config": {"name": f"m{k}", "layers": [model]}}
    _set_attr(path, "/", "model_config", json.dumps({"class_name": "Sequential",
                                                     "config": {"layers": [model]}}))  # fmt: skip
    refused(path, "attribute 'model_config' nests models more than 32 deep")


@pytest.mark.parametrize(
    "entry,match",
    [
        ({"class_name": "LSTM", "config": "units=4"}, "the 'config' of layer None is str"),
        ({"class_name": ["LSTM"], "config": {"name": "lstm_1"}}, "'class_name' is \\['LSTM'\\]"),
        ({"class_name": "LSTM", "config": {"name": 7}}, "a layer's 'name' is 7, not a string"),
    ],
    ids=["config-string", "class-list", "name-int"],
)
def test_model_config_entries_of_the_wrong_type(tmp_path, entry, match):
    path = lstm_file(tmp_path / "m.h5")
    config = {"class_name": "Sequential", "config": {"layers": [entry]}}
    _set_attr(path, "/", "model_config", json.dumps(config))
    refused(path, f"attribute 'model_config'.*{match}")


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("units", "4", "config units='4' is not a positive integer"),
        ("units", 0, "config units=0 is not a positive integer"),
        ("activation", ["tanh"], r"activation=\['tanh'\] has no multirnn equivalent"),
        ("recurrent_activation", {"a": [[[[1]]]]}, "recurrent_activation=.* has no multirnn"),
        ("return_sequences", "yes", "config return_sequences='yes' is not true or false"),
        ("time_major", 1, "config time_major=1 is not true or false"),
        ("dropout", "0.2", "config dropout='0.2' is not a number"),
        ("dropout", 7.0, "dropout"),  # the layer's own check, as a ConversionError
        ("dtype", 5, "config dtype=5 is neither a dtype name nor a dtype policy"),
        ("dtype", {"config": []}, "is neither a dtype name nor a dtype policy"),
    ],
)
def test_config_values_of_the_wrong_type(tmp_path, key, value, match):
    config = {**LSTM_CONFIG, key: value}
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", config, lstm_arrays("lstm_1"))])
    refused(path, f"Keras layer 'lstm_1'.*{match}")


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("merge_mode", 3, "config merge_mode=3 is not one of"),
        ("layer", ["LSTM"], r"config layer=\['LSTM'\] is not a layer config"),
        ("backward_layer", "lstm", "config backward_layer='lstm' is not a layer config"),
    ],
)
def test_bidirectional_config_values_of_the_wrong_type(tmp_path, key, value, match):
    config = {"layer": {"class_name": "LSTM", "config": LSTM_CONFIG}, "merge_mode": "concat",
              key: value}  # fmt: skip
    arrays = lstm_arrays("bi/forward_lstm") + lstm_arrays("bi/backward_lstm")
    path = write(tmp_path / "m.h5", [("bi", "Bidirectional", config, arrays)])
    refused(path, f"Keras Bidirectional 'bi': {match}")


def test_a_file_without_a_recurrent_layer_is_refused(tmp_path):
    dense = [("dense_1/kernel:0", np.zeros((F, 2), "f4")), ("dense_1/bias:0", np.zeros(2, "f4"))]
    layers = [("embedding_1", "Embedding", {}, [("embedding_1/embeddings:0", np.zeros((5, F)))]),
              ("dense_1", "Dense", {"units": 2}, dense)]  # fmt: skip
    path = write(tmp_path / "m.h5", layers)
    refused(path, r"holds no recurrent layer \(SimpleRNN, .*\); its layers are 'Embedding', "
            "'Dense'")  # fmt: skip
    weights = write(tmp_path / "w.h5", layers, config=False)
    refused(weights, r"holds no recurrent layer .*; its layers \('embedding_1', 'dense_1'\) hold "
            "no recurrent cell's weights", activation="tanh")  # fmt: skip


# -- the real files still convert --------------------------------------------------------------

#: file -> {layer: units}; the weights-only files hold no config (the README's architectures)
REAL_LAYERS = {
    "2018_nlp_mid_project__rnn_model.h5": {"lstm_1": 64},
    "CircuitRNN__gru_model.h5": {"gru": 50, "gru_1": 50, "gru_2": 50},
    "EnglishToKatakanaSeq2Seq__model.h5": {"lstm_1": 64, "lstm_2": 64},
    "IMDB-models__bigru_model.h5": {"bidirectional_4": 16},
    "IMDB-models__bilstm_model.h5": {"bidirectional_1": 30},
    "SequencePredictionLSTM__gru_model.h5": {"gru": 20},
    "SequencePredictionLSTM__lstm_model.h5": {"lstm": 20},
    "Sunspot-RNN-Forecast__rnn_model.h5": {"lstm_9": 128, "lstm_10": 64, "lstm_11": 64},
    "arabic-sentiment-analysis__lstm_model.h5": {"lstm_3": 100},
    "chennai-aug-batch-srsreekanth__rnn_model.h5": {"lstm_1": 128},
    "forecast-nifty50-rnn-lstm__rnn_model.h5": {"simple_rnn": 50, "simple_rnn_1": 50,
                                                "simple_rnn_2": 50},
    "lstm-multi__model.h5": {"lstm_1": 50},
    "recover-messages__rnn_model.h5": {"gru_2": 16},
}  # fmt: skip
WEIGHTS_ONLY = {"activation": "tanh", "recurrent_activation": "sigmoid", "return_sequences": True}


def real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"the real Keras 2 files are not at {REAL}")
    return path


@pytest.mark.parametrize("name", sorted(REAL_LAYERS))
def test_the_real_files_still_convert(name):
    kwargs = WEIGHTS_ONLY if name.startswith("SequencePrediction") else {}
    layers = convert.from_keras2_h5(real(name), backend="numpy", **kwargs)
    units = {n: (getattr(layer, "forward_layer", layer)).spec.units for n, layer in layers.items()}
    assert units == REAL_LAYERS[name]


# -- fuzzing: mutated real files ---------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile(
    "h5-quick", max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
settings.register_profile(
    "h5-long", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
PROFILE = "h5-long" if os.environ.get("MULTIRNN_FUZZ") == "long" else "h5-quick"

#: a full-model file (Embedding, Dropout, GRU, Dense) and a weights-only file
BASES = ["recover-messages__rnn_model.h5", "SequencePredictionLSTM__lstm_model.h5"]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True)
    | st.sampled_from(["tanh", "sigmoid", "LSTM", "Dense", "concat", "", "\udcff"])
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
_ATTRIBUTES = st.one_of(
    st.integers(-5, 5).map(np.int64),
    st.lists(st.integers(0, 9), max_size=3).map(np.array),
    st.lists(st.floats(-1, 1), min_size=1, max_size=3).map(np.array),
    st.binary(max_size=8).map(np.bytes_),  # fixed-length: h5py's variable ones refuse NUL
    st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=3).map(np.array),
    st.text(st.characters(exclude_characters="\x00"), max_size=8),  # h5py refuses NUL
    st.just(np.zeros((2, 2), "S2")),
)
_DTYPES = st.sampled_from(["f4", "f8", ">f4", "f2", "i4", "u1", "c8", "S3", "?"])


def _paths(f):
    groups, datasets = [], []
    f.visititems(lambda n, o: (datasets if isinstance(o, h5py.Dataset) else groups).append(n))
    return groups, datasets


def _json_places(value, out, path=()):
    """Every (path of keys) into a JSON value, for replacing one of them."""
    out.append(path)
    if isinstance(value, (dict, list)):
        for k, v in value.items() if isinstance(value, dict) else enumerate(value):
            _json_places(v, out, (*path, k))
    return out


def _json_attribute(f):
    try:
        return json.loads(f.attrs["model_config"])
    except (KeyError, TypeError, ValueError):  # none, or a mutation replaced it
        return None


def _replace(value, path, new):
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


@st.composite
def mutations(draw, f, tmp):
    """Applies 1 to 3 random mutations to the open file ``f``; returns what was done."""
    done = []
    for _ in range(draw(st.integers(1, 3))):
        groups, datasets = _paths(f)
        what = draw(st.sampled_from(["attribute", "config", "shape", "dtype", "link", "delete"]))
        config = _json_attribute(f) if what == "config" else None
        if config is not None:
            place = draw(st.sampled_from(_json_places(config, [])))
            new = draw(_JSON)
            f.attrs["model_config"] = json.dumps(_replace(config, place, new))
            done.append(f"model_config{list(place)} = {new!r}")
        elif what == "attribute" or what == "config":
            owner = draw(st.sampled_from(["/", *groups]))
            keys = sorted(f[owner].attrs) or ["layer_names"]
            key = draw(st.sampled_from([*keys, "layer_names", "weight_names"]))
            value = draw(_ATTRIBUTES)
            f[owner].attrs[key] = value
            done.append(f"{owner} attrs[{key!r}] = {value!r}")
        elif datasets and what in ("shape", "dtype"):
            name = draw(st.sampled_from(datasets))
            old = f[name]
            shape = old.shape
            if what == "shape":
                dims = st.sampled_from([0, 1, 2, 3, 16, 10**6, 10**9])
                shape = tuple(draw(st.lists(dims, max_size=3)))
                if np.prod(shape, dtype=float) > 1e18:  # more than HDF5 can declare
                    shape = shape[:2]
            dtype = draw(_DTYPES) if what == "dtype" else old.dtype
            del f[name]
            if np.prod(shape, dtype=float) * np.dtype(dtype).itemsize < 1e6:
                f.create_dataset(name, data=np.ones(shape, dtype))
            else:  # declared, not stored
                f.create_dataset(name, shape=shape, dtype=dtype)
            done.append(f"{name}: {shape} {dtype}")
        elif what == "link" and datasets:
            name = draw(st.sampled_from([*datasets, *groups]))
            kind = draw(st.sampled_from(["soft", "external", "storage", "virtual"]))
            shape = f[name].shape if isinstance(f[name], h5py.Dataset) else (4,)
            shape = shape if 0 < np.prod(shape) < 10**6 else (4,)
            del f[name]
            if kind == "soft":
                f[name] = h5py.SoftLink("/" + draw(st.sampled_from(datasets)))
            elif kind == "external":
                f[name] = h5py.ExternalLink(str(tmp / "other.h5"), "/data")
            elif kind == "storage":
                secret = str(tmp / "credentials")
                f.create_dataset(name, shape=shape, dtype="f4",
                                 external=[(secret, 0, h5py.h5f.UNLIMITED)])  # fmt: skip
            else:
                layout = h5py.VirtualLayout(shape, "f4")
                layout[...] = h5py.VirtualSource(str(tmp / "other.h5"), "data", shape)
                f.create_virtual_dataset(name, layout, fillvalue=SECRET)
            done.append(f"{name}: {kind}")
        elif datasets:
            name = draw(st.sampled_from([*datasets, *groups]))
            del f[name]
            done.append(f"del {name}")
    return done


def _why(message: str) -> str:
    """A refusal's kind, for Hypothesis's statistics: its words without names or numbers."""
    words = re.sub(r"'[^']*'|\([^)]*\)|[0-9]+", "", message.removeprefix(": ")).split()
    return " ".join(words[:6])


@pytest.mark.skipif(not REAL.exists(), reason=f"the real Keras 2 files are not at {REAL}")
@settings(settings.get_profile(PROFILE))
@given(data=st.data(), base=st.sampled_from(BASES))
def test_mutated_real_files_convert_or_are_refused(tmp_path, data, base):
    """From a mutated real file, ``from_keras2_h5`` returns layers or raises
    ConversionError, never another exception, and never returns bytes of another file."""
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    path = tmp / "m.h5"
    shutil.copyfile(real(base), path)
    os.chmod(path, 0o600)
    (tmp / "credentials").write_bytes(np.full(10**6, SECRET, np.float32).tobytes())
    with h5py.File(tmp / "other.h5", "w") as other:
        other.create_dataset("data", data=np.full((2, 4, 16, 64), SECRET, np.float32))
    with h5py.File(path, "a") as f:
        data.draw(mutations(f, tmp), label="mutations")
    try:
        kwargs = WEIGHTS_ONLY if base.startswith("SequencePrediction") else {}
        layers = convert.from_keras2_h5(path, backend="numpy", **kwargs)
    except ConversionError as exc:
        assert str(path) in str(exc)
        event(f"refused: {_why(str(exc).replace(str(path), ''))}")
        return
    event(f"converted {len(layers)} layers")
    for layer in layers.values():
        for w in layer.get_weights():
            assert not np.any(np.asarray(w) == SECRET)


# -- nothing in a file makes the converter wait, or allocate more than the file holds ---------

CONVERT = """
import resource, sys
from multirnn import convert
from multirnn.convert import ConversionError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    print(sorted(convert.from_keras2_h5(sys.argv[1], backend="numpy")))
except ConversionError as exc:
    print("refused:", exc)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(f"grown {grown // 1024} MB")
"""


def convert_elsewhere(path, timeout=60):
    """(what converting ``path`` in a fresh process printed, how much its peak resident
    memory grew while converting, in MB); a process that waits forever fails the test."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CONVERT, str(path)], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result, grown = done.stdout.strip().rsplit("\n", 1)
    return result, int(grown.split()[1])


def test_a_virtual_dataset_with_a_fifo_source_is_refused_without_opening_it(tmp_path):
    """An unlimited mapping makes HDF5 open the source file to learn the dataset's shape:
    the storage is checked first, even for a layer that is not converted."""
    source = tmp_path / "source.h5"

    def virtual(group, name):
        layout = h5py.VirtualLayout((8,), "f4", maxshape=(None,))
        unlimited = h5py.VirtualSource(str(source), "data", (8,), maxshape=(None,))
        layout[0 : h5py.h5s.UNLIMITED] = unlimited[0 : h5py.h5s.UNLIMITED]
        group.create_virtual_dataset(name, layout)

    path = write(tmp_path / "m.h5", [
        ("lstm_1", "LSTM", LSTM_CONFIG, lstm_arrays("lstm_1")),
        ("dense_1", "Dense", {"units": 8}, [("dense_1/bias:0", virtual)]),
    ])  # fmt: skip
    os.mkfifo(source)  # opening it would wait for a writer forever
    result, _ = convert_elsewhere(path)
    assert re.search(r"refused: .*'/model_weights/dense_1/dense_1/bias:0' is a virtual", result)


def test_a_compressed_chunk_that_inflates_a_thousandfold_is_refused_before_reading(tmp_path):
    """A kernel of 3 x 16 floats stored in one deflated chunk of 256 MB (256 KB on disk):
    inflating it would allocate the whole chunk, whatever the dataset declares."""
    import zlib

    rows = 2**22  # 2**22 x 16 float32: 256 MB

    def bomb(group, name):
        dataset = group.create_dataset(
            name, shape=(F, 4 * H), maxshape=(None, 4 * H), dtype="f4", chunks=(rows, 4 * H),
            compression="gzip",
        )  # fmt: skip
        deflate = zlib.compressobj(9)
        zeros = bytes(2**20)
        stream = b"".join(deflate.compress(zeros) for _ in range(rows * 4 * H * 4 // 2**20))
        dataset.id.write_direct_chunk((0, 0), stream + deflate.flush())

    arrays = lstm_arrays("lstm_1")
    arrays[0] = (arrays[0][0], bomb)
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    assert path.stat().st_size < 2**20
    result, grown = convert_elsewhere(path)
    assert re.search(r"refused: .*kernel:0' \(layer 'lstm_1'\) needs compression deflate", result)
    assert grown < 50


def test_shuffled_and_checksummed_weights_convert(tmp_path):
    """Filters that keep the data's size are read."""

    def filtered(array):
        return lambda group, name: group.create_dataset(
            name, data=array, chunks=array.shape, shuffle=True, fletcher32=True
        )

    arrays = [(name, filtered(array)) for name, array in lstm_arrays("lstm_1")]
    path = write(tmp_path / "m.h5", [("lstm_1", "LSTM", LSTM_CONFIG, arrays)])
    (layer,) = convert.from_keras2_h5(path, backend="numpy").values()
    for got, (_, want) in zip(layer.get_weights(), lstm_arrays("lstm_1")):
        np.testing.assert_array_equal(got, want)


SWAP_FOR_A_FIFO = """
import os, sys
from multirnn import convert
path = sys.argv[1]

def swapping(call):  # the file is replaced once it has been opened or checked
    def swapped(name, *args, **kwargs):
        result = call(name, *args, **kwargs)
        if os.fspath(name) == path and not os.path.exists(path + ".real"):
            os.rename(path, path + ".real")
            os.mkfifo(path)  # opened again by name, it would wait for a writer forever
        return result
    return swapped

os.open, os.stat = swapping(os.open), swapping(os.stat)
print(sorted(convert.from_keras2_h5(path, backend="numpy")))
"""


def test_the_file_is_read_through_the_descriptor_that_was_checked(tmp_path):
    import subprocess
    import sys

    path = lstm_file(tmp_path / "m.h5")
    done = subprocess.run([sys.executable, "-c", SWAP_FOR_A_FIFO, str(path)], timeout=60,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['lstm_1']"
