"""Fuzzing the boundaries: layer keywords, call arguments and file contents, on every
installed engine. Each draw either gives the NumPy reference's numbers or raises one of the
documented exception types (``TypeError``, ``ValueError``; ``LayerFileError`` for files)
with a message that names the argument, and the same on every engine: never another
exception type, never an error from inside a framework.

Hostile layer files (any header table: names, dtypes, shapes, byte ranges, sizes) either
load or are refused with ``LayerFileError``, within seconds; the costliest of them take
less than 100 MB of resident memory, measured in a fresh process per engine.

``MULTIRNN_FUZZ=long`` (``nox -s fuzz``) runs many more draws than CI's quick profile.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import multirnn  # noqa: E402
from multirnn import engines  # noqa: E402

settings.register_profile(
    "quick", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
settings.register_profile(
    "long", max_examples=600, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
PROFILE = "long" if os.environ.get("MULTIRNN_FUZZ") == "long" else "quick"

ENGINES = [e for e in ("numpy", "torch", "jax", "tensorflow") if e in engines.available()]
DOCUMENTED = (TypeError, ValueError)

# -- layer keywords ---------------------------------------------------------------------------

_BAD = st.sampled_from([None, -1, 0, 2.5, "x", True, [1], {"a": 1}, float("nan")])

KEYWORDS = {
    "units": st.one_of(st.integers(1, 4), _BAD),
    "activation": st.one_of(st.sampled_from(multirnn.activations.NAMES), st.just("hardsigmoid"),
                            _BAD),
    "recurrent_activation": st.one_of(st.sampled_from(multirnn.activations.NAMES), _BAD),
    "use_bias": st.one_of(st.booleans(), _BAD),
    "kernel_initializer": st.one_of(
        st.sampled_from(["glorot_uniform", "orthogonal", "zeros", "he_normal"]),
        st.just({"class_name": "Constant", "config": {"value": 0.1}}),
        st.just({"class_name": ["Constant"]}), _BAD,
    ),
    "kernel_regularizer": st.one_of(st.sampled_from([None, "l2", "l1_l2"]), _BAD),
    "recurrent_constraint": st.one_of(st.sampled_from([None, "max_norm", "non_neg"]), _BAD),
    "dropout": st.one_of(st.sampled_from([0.0, 0.3]), st.floats(-1, 2), _BAD),
    "return_sequences": st.one_of(st.booleans(), _BAD),
    "return_state": st.booleans(),
    "go_backwards": st.one_of(st.booleans(), _BAD),
    "implementation": st.one_of(st.integers(-1, 3), _BAD),
    "unroll": st.booleans(),
    "reset_after": st.one_of(st.booleans(), _BAD),
    "seed": st.one_of(st.integers(0, 5), _BAD),
    "dtype": st.sampled_from([None, "float32", "float64", "float16", np.float64, "x"]),
    "input_shape": st.one_of(
        st.tuples(st.sampled_from([None, 3, 0]), st.sampled_from([2, None, -1])), _BAD
    ),
    "input_dim": st.one_of(st.just(2), _BAD),
    "batch_size": st.one_of(st.sampled_from([None, 2]), _BAD),
    "trainable": st.one_of(st.booleans(), _BAD),
    "unknown_option": st.just(1),
}  # fmt: skip


@st.composite
def layer_arguments(draw):
    kind = draw(st.sampled_from(["SimpleRNN", "LSTM", "GRU"]))
    chosen = draw(st.lists(st.sampled_from(sorted(KEYWORDS)), max_size=4, unique=True))
    kwargs = {"units": 3} | {k: draw(KEYWORDS[k]) for k in chosen}
    return kind, kwargs


def _build(name: str, kind: str, kwargs: dict):
    if name == "jax" and kwargs.get("dtype") in ("float64", np.float64):
        kwargs = {**kwargs, "dtype": "float32"}  # 64-bit mode is off in this process
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unit_forget_bias notices
        return getattr(multirnn.engine(name), kind)(**kwargs)


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:  # every exception is classified by the caller
        return None, exc


def _names_an_argument(exc: Exception, names) -> bool:
    text = str(exc)
    return any(n in text for n in names)


@pytest.mark.parametrize("name", ENGINES)
@settings(settings.get_profile(PROFILE))
@given(drawn=layer_arguments())
def test_layer_keywords_construct_or_are_refused_alike(name, drawn):
    kind, kwargs = drawn
    _, want = _outcome(lambda: _build("numpy", kind, kwargs))
    _, got = _outcome(lambda: _build(name, kind, kwargs))
    if want is None:
        assert got is None, f"{name} refused what the reference accepts: {got!r}"
        return
    assert isinstance(want, DOCUMENTED), f"reference raised {want!r}"
    assert _names_an_argument(want, kwargs), f"message names no argument: {want}"
    assert type(got) is type(want), f"{name}: {got!r} where the reference raised {want!r}"


# -- call arguments ---------------------------------------------------------------------------


@st.composite
def calls(draw):
    kind = draw(st.sampled_from(["SimpleRNN", "LSTM", "GRU"]))
    n_states = 2 if kind == "LSTM" else 1
    options = {
        "return_sequences": draw(st.booleans()),
        "go_backwards": draw(st.booleans()),
        "zero_output_for_mask": draw(st.booleans()),
        "recurrent_activation": draw(st.sampled_from(["sigmoid", "hard_sigmoid"])),
    }
    if kind == "SimpleRNN":
        del options["recurrent_activation"]
    batch, time = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    features = draw(st.sampled_from([2, 2, 2, 3]))
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "int64", "bool", "complex"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((batch, time, features)).astype(dtype)
    rank = draw(st.sampled_from([3, 3, 3, 2]))
    if rank == 2:
        x = x.reshape(batch * time, features)
    as_list = draw(st.booleans())
    mask_kind = draw(st.sampled_from(["none", "bool", "bool", "int", "shape"]))
    mask = None
    if mask_kind != "none":
        shape = (batch, time + (mask_kind == "shape"))
        mask = rng.random(shape) < 0.7
        if mask_kind == "int":
            mask = mask.astype(np.int64)
    state_kind = draw(st.sampled_from(["none", "none", "ok", "count", "shape", "int"]))
    state = None
    if state_kind != "none":
        count = n_states + (state_kind == "count")
        width = 3 + (state_kind == "shape")
        state = [rng.standard_normal((batch, width)) for _ in range(count)]
        if state_kind == "int":
            state = [s.astype(np.int32) for s in state]
    training = draw(st.sampled_from([None, False, True, "no", 1]))
    call = {"inputs": x.tolist() if as_list else x, "mask": mask, "initial_state": state,
            "training": training}  # fmt: skip
    return kind, options, call


def _call(name, kind, options, call):
    layer = _build(
        name,
        kind,
        {
            "units": 3,
            "return_state": True,
            "seed": 0,
            "input_dim": 2,
            "dtype": "float32" if name == "jax" else None,
            **options,
        },
    )
    return multirnn.to_numpy(layer(call["inputs"], mask=call["mask"],
                                   initial_state=call["initial_state"],
                                   training=call["training"]))  # fmt: skip


@pytest.mark.parametrize("name", ENGINES)
@settings(settings.get_profile(PROFILE))
@given(drawn=calls())
def test_calls_match_the_reference_or_are_refused_alike(name, drawn):
    kind, options, call = drawn
    want, want_error = _outcome(lambda: _call("numpy", kind, options, call))
    got, error = _outcome(lambda: _call(name, kind, options, call))
    if want_error is not None:
        assert isinstance(want_error, DOCUMENTED), f"reference raised {want_error!r}"
        assert _names_an_argument(want_error, ["inputs", "mask", "initial_state", "training"])
        assert error is not None, f"{name} accepted what the reference refused: {want_error}"
        assert type(error) is type(want_error), f"{name}: {error!r}, reference {want_error!r}"
        return
    assert error is None, f"{name} raised {error!r} where the reference computed"
    for g, w in zip(got, want, strict=True):
        rtol = 1e-12 if g.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


# -- file contents ----------------------------------------------------------------------------

_GOOD = {"layer": "GRU", "units": 2, "use_bias": True, "reset_after": False}


@st.composite
def file_contents(draw):
    config = dict(_GOOD)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(
            st.sampled_from(
                [
                    "layer",
                    "units",
                    "activation",
                    "dtype",
                    "kernel_initializer",
                    "merge_mode",
                    "use_bias",
                    "unknown",
                    "stateful",
                ]
            )
        )
        config[key] = draw(st.one_of(_BAD, st.sampled_from(["LSTM", "GRU", "tanh", 2, {}])))
    text = json.dumps(config, default=str)
    text = draw(
        st.sampled_from(
            [
                text,
                text,
                text[: len(text) // 2],
                "[" * 3000 + "]" * 3000,
                json.dumps([config]),
                json.dumps({"layer": config}),
            ]
        )
    )
    tensors = {"kernel": np.zeros((2, 6)), "recurrent_kernel": np.zeros((2, 6)),
               "bias": np.zeros(6)}  # fmt: skip
    drop = draw(st.sampled_from([None, "bias", "kernel"]))
    if drop:
        del tensors[drop]
    if draw(st.booleans()):
        tensors["state/h"] = np.zeros((1, 2))
    return text, tensors


@pytest.mark.parametrize("name", ENGINES)
@settings(settings.get_profile(PROFILE))
@given(drawn=file_contents())
def test_files_load_or_raise_one_error_naming_the_file(name, drawn, tmp_path):
    from safetensors.numpy import save_file

    text, tensors = drawn
    path = tmp_path / "fuzzed.safetensors"
    save_file(tensors, str(path), {"multirnn.format": "multirnn.layer/1",
                                   "multirnn.config": text})  # fmt: skip
    layer, error = _outcome(lambda: multirnn.load(path, backend=name))
    if error is None:
        assert layer.built
        return
    assert isinstance(error, multirnn.LayerFileError), f"{name}: {error!r}"
    assert str(path) in str(error)


# -- hostile safetensors headers ------------------------------------------------------------------

_NAMES = ["kernel", "recurrent_kernel", "bias", "state/h", "state/c", "forward/kernel",
          "backward/kernel", "forward/recurrent_kernel", "x", "\u00e9", "k" * 300]  # fmt: skip
_KINDS = ["F32", "F64", "F64", "F16", "BF16", "F8_E4M3", "I64", "U8", "BOOL", "F128", ""]
_DIMS = [0, 1, 2, 3, 6, 2**16, 2**31, 2**62, 2**64 - 1]
_SIZES = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8, "U8": 1, "BOOL": 1}
_HUGE = st.sampled_from([3000, 100000, 2**31, 2**62, 10**30, -1, 0.5, "3", None])
_CELL = {"class_name": "Nope", "config": {"units": 2}}
#: the table _GOOD (GRU, units 2, input_dim 2) needs: mutations start from it
_TABLE = {"kernel": ("F64", [2, 6]), "recurrent_kernel": ("F64", [2, 6]), "bias": ("F64", [6])}


@st.composite
def hostile_files(draw):
    """A config and a header table as an attacker writes them: any names, dtypes, shapes and
    byte ranges, with data that fits them or not; or, as often, what a valid file holds
    with a few changes, so that both loading and refusing are exercised."""
    config = dict(_GOOD) | {"input_dim": 2}
    keys = ["units", "input_dim", "layer", "use_bias", "stateful", "reset_after", "dtype",
            "cell", "unknown"]  # fmt: skip
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        value = st.one_of(_HUGE, _BAD, st.sampled_from(["LSTM", "float32", _CELL]))
        config[draw(st.sampled_from(keys))] = draw(value)
    prefixes = [""]
    if draw(st.integers(0, 3)) == 0:
        config, prefixes = {"layer": config, "merge_mode": "sum"}, ["forward/", "backward/"]
    if draw(st.booleans()):
        table = {
            p + k: (kind, list(shape)) for p in prefixes for k, (kind, shape) in _TABLE.items()
        }
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            key = draw(st.sampled_from(sorted(table)))
            kind, shape = table.pop(key)
            change = draw(st.sampled_from(["kind", "dim", "drop", "rename"]))
            if change == "kind":
                table[key] = (draw(st.sampled_from(_KINDS)), shape)
            elif change == "dim":
                shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(_DIMS))
                table[key] = (kind, shape)
            elif change == "rename":
                table[draw(st.sampled_from(_NAMES))] = (kind, shape)
    else:
        names = draw(st.lists(st.sampled_from(_NAMES), max_size=5, unique=True))
        table = {
            n: (draw(st.sampled_from(_KINDS)), draw(st.lists(st.sampled_from(_DIMS), max_size=3)))
            for n in names
        }
    fit = draw(st.sampled_from([True, True, True, False]))
    entries, offset = {}, 0
    for name, (kind, shape) in table.items():
        size = math.prod(shape) * _SIZES.get(kind, 1)
        if fit and size < 2**12:  # byte ranges that fit the data
            start, end = offset, offset + size
        else:
            start, end = sorted(draw(st.lists(st.sampled_from(_DIMS), min_size=2, max_size=2)))
        offset = max(offset, end)
        entries[name] = {"dtype": kind, "shape": shape, "data_offsets": [start, end]}
    extra = draw(st.sampled_from([0, 0, 0, 1, -1]))
    data = b"\0" * max(offset + extra, 0) if offset < 2**12 else b""
    return config, entries, data


@pytest.mark.parametrize("name", ENGINES)
@settings(settings.get_profile(PROFILE))
@given(drawn=hostile_files(), odd_metadata=st.sampled_from([False] * 7 + [True]))
def test_hostile_headers_load_or_are_refused_quickly_and_cheaply(
    name, drawn, odd_metadata, tmp_path
):
    import time

    config, entries, data = drawn
    metadata = {"multirnn.format": "multirnn.layer/1", "multirnn.config": json.dumps(config)}
    if odd_metadata:  # safetensors' metadata is a map of strings
        metadata["n"] = 1
    text = json.dumps({"__metadata__": metadata, **entries}).encode()
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    multirnn.engine(name).GRU(2, input_dim=2)  # the framework's start-up is not the file's
    start = time.perf_counter()
    layer, error = _outcome(lambda: multirnn.load(path, backend=name))
    elapsed = time.perf_counter() - start
    hypothesis.event("loaded" if error is None else "refused")
    if error is None:
        assert layer.built
    else:
        assert isinstance(error, multirnn.LayerFileError), f"{name}: {error!r}"
        assert str(path) in str(error)
    assert elapsed < 5.0, f"{name}: {elapsed:.1f} s"


def _hostile_headers():
    """Headers that would cost the most if load trusted them: huge layers in tiny files,
    shapes declaring terabytes, byte ranges past the end, a megabyte-long shape for a cell
    that must find its input size, and the largest header load reads."""
    huge = {"layer": "LSTM", "units": 100000, "input_dim": 100000}
    cell = {"cell": {"class_name": "LSTMCell", "config": {"units": 2}}}
    tera = {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}
    padding = "x" * (8 * 2**20 - 300)  # the header just under MAX_HEADER_BYTES
    return [
        (huge, {}),
        ({"layer": {**huge, "layer": "GRU"}}, {}),
        (huge, {"kernel": tera, "recurrent_kernel": tera, "bias": tera}),
        ({"layer": "LSTM", "units": 2}, {"kernel": {**tera, "data_offsets": [0, 2**62]}}),
        (cell, {"kernel": {"dtype": "F32", "shape": list(range(150_000)),
                           "data_offsets": [0, 0]}}),
        ({**huge, "name": padding}, {}),
    ]  # fmt: skip


LOAD_HOSTILE = """
import resource, sys, time
import multirnn
name, paths = sys.argv[1], sys.argv[2:]
multirnn.engine(name).GRU(2, input_dim=2)(__import__("numpy").zeros((1, 2, 2), "float32"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in paths:
    start = time.perf_counter()
    try:
        multirnn.load(path, backend=name)
        print("loaded", path)
    except multirnn.LayerFileError:
        pass
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(path, f"{time.perf_counter() - start:.3f}", grown * 1024)
"""


@pytest.mark.parametrize("name", ENGINES)
def test_hostile_headers_cost_no_resident_memory_in_a_fresh_process(name, tmp_path):
    """Resident memory, which sees what the frameworks allocate (tracemalloc sees only
    Python's heap): each hostile file is refused in under a second, and the process's peak
    grows by less than 100 MB over what the engine took to start."""
    import subprocess
    import sys

    paths = []
    for k, (config, entries) in enumerate(_hostile_headers()):
        metadata = {"multirnn.format": "multirnn.layer/1", "multirnn.config": json.dumps(config)}
        text = json.dumps({"__metadata__": metadata, **entries}).encode()
        path = tmp_path / f"hostile{k}.safetensors"
        path.write_bytes(len(text).to_bytes(8, "little") + text)
        paths.append(str(path))
    done = subprocess.run([sys.executable, "-c", LOAD_HOSTILE, name, *paths],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths), done.stdout
    for line in lines:
        path, seconds, grown = line.split()
        assert float(seconds) < 1.0 and int(grown) < 100 * 2**20, line
