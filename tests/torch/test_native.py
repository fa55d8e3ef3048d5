"""The generic path's native loop (multirnn_torch.native, csrc/scan.cpp): the same numbers as
the Python loop and the NumPy reference for every configuration it covers (forward and
gradients, masks, initial states, go_backwards, shared recurrent dropout, per-gate input
dropout), the switch MULTIRNN_TORCH_NATIVE, the fallback when the build fails, the build's
directory and lock (a killed build, a build that holds the lock too long, two environments),
and the eligibility rule."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multirnn_torch import backprop, kernels, native, scan  # noqa: E402
from multirnn_torch.ops import TORCH_OPS  # noqa: E402
from multirnn_torch.scan import array_api  # noqa: E402

import multirnn  # noqa: E402
from multirnn import _lock, builtin_cells, cells  # noqa: E402
from multirnn.reference import kernels as reference  # noqa: E402
from multirnn.spec import parse  # noqa: E402

#: (layer, keyword arguments): every layer, gate form and named activation the loop covers.
#: All are outside the fused kernels (hard_sigmoid gates, reset_after=False, or an
#: activation torch.nn has no kernel for), so every call runs the generic loop.
CONFIGS = [
    ("LSTM", {}),  # the documented defaults: hard_sigmoid gates folded into clamp
    ("LSTM", {"activation": "relu", "recurrent_activation": "hard_sigmoid_relu6"}),
    ("LSTM", {"activation": "softsign", "recurrent_activation": "sigmoid", "use_bias": False}),
    ("GRU", {}),  # the documented defaults: reset_after=False
    ("GRU", {"reset_after": True}),
    ("GRU", {"reset_after": True, "recurrent_activation": "sigmoid", "activation": "elu"}),
    ("GRU", {"recurrent_activation": "sigmoid", "activation": "selu", "use_bias": False}),
    ("SimpleRNN", {"activation": "linear"}),
    ("SimpleRNN", {"activation": "sigmoid"}),
    ("SimpleRNN", {"activation": "hard_sigmoid"}),
    ("SimpleRNN", {"activation": "exponential"}),
    ("SimpleRNN", {"activation": "softplus", "use_bias": False}),
]

#: a gap, a fully masked row and a left-padded row (batch 3, time 6)
MASK = np.array([[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=bool)

#: float64: both loops and the reference agree to rounding; float32 to its rounding
TOL = {"float64": 1e-12, "float32": 2e-5}


def config_id(config):
    layer, kwargs = config
    return layer + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.fixture
def require_native():
    """The native loop, built (skipped where no compiler is present, except on CI)."""
    try:
        return native.build()
    except native.NativeBuildError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc)[:300])


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of the native loop's forward and backward entries."""
    counts = {"forward": 0, "backward": 0}

    def wrap(name, kind):
        inner = getattr(native, name)

        def counted(*args, **kwargs):
            counts[kind] += 1
            return inner(*args, **kwargs)

        monkeypatch.setattr(native, name, counted)

    wrap("forward", "forward")
    for name in ("lstm_backward", "gru_backward", "simple_backward"):
        wrap(name, "backward")
    return counts


def make_spec(layer, kwargs, **extra):
    return parse(layer, (4,), {**kwargs, **extra})


def make_data(spec, dtype, *, masked, states, dropout, seed=0, batch=3, time=6, dim=5):
    rng = np.random.default_rng(seed)
    exponential = "exponential" in (spec.activation, spec.recurrent_activation)
    scale = 0.15 if exponential else 0.8  # exp must not overflow
    weights = [
        (scale * rng.standard_normal(shape)).astype(dtype)
        for shape in spec.weight_shapes(dim).values()
    ]
    x = rng.standard_normal((batch, time, dim)).astype(dtype)
    initial = None
    if states:
        initial = [0.5 * rng.standard_normal((batch, spec.units)).astype(dtype)
                   for _ in range(spec.num_states)]  # fmt: skip
    mi = mr = None
    if dropout:
        # per gate (the inputs are projected before the loop), or shared (projected inside)
        lead = {"LSTM": (4,), "GRU": (3,)}.get(spec.layer, ())
        # one shared recurrent mask, or one per gate (SimpleRNN: its one gate's), scaled
        gates = (spec.gates,) if dropout == "per_gate" else ()
        keep = rng.random((*gates, batch, spec.units)) > 0.3
        mr = (keep / 0.7).astype(dtype)
        mi = ((rng.random((*lead, batch, dim)) > 0.2) / 0.8).astype(dtype)
    return {
        "weights": weights,
        "x": x,
        "mask": MASK[:batch, :time] if masked else None,
        "initial": initial,
        "mi": mi,
        "mr": mr,
    }


def run_torch(spec, data, monkeypatch, mode):
    """Outputs and gradients (of a fixed random projection of the results) of one torch
    call through the functional entry, with the loop chosen by ``mode``."""
    monkeypatch.setenv(native.ENV, mode)

    def t(a, grad=False):
        return None if a is None else torch.from_numpy(a.copy()).requires_grad_(grad)

    weights = [t(w, True) for w in data["weights"]]
    x = t(data["x"], True)
    initial = None if data["initial"] is None else [t(s, True) for s in data["initial"]]
    output, final = kernels.forward(
        spec, weights, x, mask=t(data["mask"]), initial_state=initial,
        input_dropout=t(data["mi"]), recurrent_dropout=t(data["mr"]),
    )  # fmt: skip
    results = [output, *final]
    rng = np.random.default_rng(1)
    loss = sum(
        (r * torch.from_numpy(rng.standard_normal(tuple(r.shape)).astype(data["x"].dtype))).sum()
        for r in results
    )
    leaves = [x, *weights, *(initial or [])]
    grads = torch.autograd.grad(loss, leaves)
    return [r.detach().numpy() for r in results], [g.numpy() for g in grads]


def close(a, b, dtype, what, tol=None):
    tol = TOL[dtype] if tol is None else tol
    err = np.max(np.abs(a - b) / (1 + np.abs(b))) if a.size else 0.0
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "call",
    [
        {},
        {"masked": True},
        {"states": True, "go_backwards": True},
        {"masked": True, "dropout": True, "go_backwards": True},
        {"masked": True, "states": True, "dropout": True, "zero_output_for_mask": True},
        {"masked": True, "states": True, "dropout": "per_gate", "go_backwards": True},
    ],
    ids=["plain", "mask", "states-backwards", "mask-dropout-backwards", "all", "per-gate"],
)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_native_equals_python_loop_and_reference(
    config, call, dtype, monkeypatch, require_native, spy
):
    layer, kwargs = config
    extra = {"return_sequences": True}
    for key in ("go_backwards", "zero_output_for_mask"):
        if call.get(key):
            extra[key] = True
    spec = make_spec(layer, kwargs, **extra)
    flags = {k: call.get(k, False) for k in ("masked", "states", "dropout")}
    data = make_data(spec, dtype, **flags)
    python_out, python_grads = run_torch(spec, data, monkeypatch, "0")
    assert spy == {"forward": 0, "backward": 0}
    native_out, native_grads = run_torch(spec, data, monkeypatch, "1")
    assert spy == {"forward": 1, "backward": 1}, "the call did not take the native loop"
    ref_out, ref_states = reference.forward(
        spec.replace(dtype="float64"),
        [w.astype("float64") for w in data["weights"]],
        data["x"].astype("float64"),
        mask=data["mask"],
        initial_state=data["initial"],
        input_dropout=data["mi"],
        recurrent_dropout=data["mr"],
    )
    for k, (ours, theirs, ref) in enumerate(zip(native_out, python_out, [ref_out, *ref_states])):
        close(ours, theirs, dtype, f"result {k}: native vs Python loop")
        close(ours, ref, dtype, f"result {k}: native vs NumPy reference")
    for k, (ours, theirs) in enumerate(zip(native_grads, python_grads)):
        close(ours, theirs, dtype, f"gradient {k}: native vs Python loop")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "config",
    [("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": True}), CONFIGS[-1]],
    ids=config_id,
)
@pytest.mark.parametrize("dropout", [True, "per_gate"], ids=["shared", "per-gate"])
def test_batch_split_over_threads(config, dropout, monkeypatch, require_native, two_threads):
    """A batch large enough to be split into row ranges, one per thread: the same numbers."""
    layer, kwargs = config
    spec = make_spec(layer, kwargs, return_sequences=True)
    # 9 steps: long enough for the GRU's contiguous column blocks
    data = make_data(spec, "float64", masked=False, states=True, dropout=dropout, batch=37,
                     time=9)  # fmt: skip
    data["mask"] = np.random.default_rng(5).random((37, 9)) > 0.3
    python_out, python_grads = run_torch(spec, data, monkeypatch, "0")
    native_out, native_grads = run_torch(spec, data, monkeypatch, "1")
    for ours, theirs in zip(native_out + native_grads, python_out + python_grads):
        close(ours, theirs, "float64", "native (two threads) vs Python loop")


@pytest.mark.parametrize("mode", ["1", "0"], ids=["native", "python"])
@pytest.mark.parametrize("dropout", [True, "per_gate"], ids=["shared", "per-gate"])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c[0] != "SimpleRNN"], ids=config_id)
def test_native_gradients_equal_the_autograd_loop(config, dropout, mode, monkeypatch,
                                                  require_native):  # fmt: skip
    """The hand-written backward (native, and its Python loop) against autograd through
    the shared cell step (``multirnn_torch.scan``'s tape loop, which knows nothing of
    either backward), with the recurrent dropout mask shared by the gates or one per gate."""
    layer, kwargs = config
    spec = make_spec(layer, kwargs, return_sequences=True)
    data = make_data(spec, "float64", masked=True, states=True, dropout=dropout)
    native_out, native_grads = run_torch(spec, data, monkeypatch, mode)
    monkeypatch.setattr(backprop, "supported", lambda *_: False)
    tape_out, tape_grads = run_torch(spec, data, monkeypatch, "1")
    # ATen's hardsigmoid backward multiplies by 1/6 rounded to float32, also in float64
    tol = 1e-7 if "hard_sigmoid_relu6" in kwargs.values() else None
    for ours, theirs in zip(native_out + native_grads, tape_out + tape_grads):
        close(ours, theirs, "float64", "native vs autograd loop", tol)


@pytest.mark.parametrize("config", [("LSTM", {}), ("GRU", {})], ids=config_id)
def test_native_gradients_equal_finite_differences_of_the_reference(config, require_native):
    """The documented defaults: the recurrent kernel's gradient against central differences
    of the NumPy reference (float64)."""
    layer, kwargs = config
    spec = make_spec(layer, kwargs, dtype="float64")
    data = make_data(spec, "float64", masked=True, states=False, dropout=False, time=4)
    weights = [torch.from_numpy(w.copy()).requires_grad_() for w in data["weights"]]
    output, _ = kernels.forward(spec, weights, torch.from_numpy(data["x"]),
                                mask=torch.from_numpy(data["mask"]))  # fmt: skip
    output.sum().backward()

    def loss(U):
        w = list(data["weights"])
        w[1] = U
        out, _ = reference.forward(spec, w, data["x"], mask=data["mask"])
        return out.sum()

    U, eps = data["weights"][1], 1e-6
    expected = np.zeros_like(U)
    for index in np.ndindex(U.shape):
        up, down = U.copy(), U.copy()
        up[index] += eps
        down[index] -= eps
        expected[index] = (loss(up) - loss(down)) / (2 * eps)
    np.testing.assert_allclose(weights[1].grad.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_layers_with_the_documented_defaults_take_the_native_loop(require_native, spy, monkeypatch):
    from multirnn_torch.layers import GRU, LSTM

    import multirnn

    monkeypatch.setenv(native.ENV, "auto")

    x = np.random.default_rng(0).standard_normal((2, 7, 3))
    for cls in (LSTM, GRU):
        layer = cls(4, return_sequences=True, seed=2, dtype="float64")
        ref = multirnn.engine("numpy").layer_class(cls.__name__)(
            4, return_sequences=True, seed=2, dtype="float64"
        )
        out = layer(torch.from_numpy(x))
        out.sum().backward()
        np.testing.assert_allclose(out.detach().numpy(), ref(x), rtol=0, atol=1e-13)
    assert spy == {"forward": 2, "backward": 2}


def test_float32_inference_mode_and_no_grad(require_native, spy, monkeypatch):
    monkeypatch.setenv(native.ENV, "1")
    spec = make_spec("LSTM", {}, return_sequences=True)
    data = make_data(spec, "float32", masked=True, states=False, dropout=False)
    weights = [torch.from_numpy(w) for w in data["weights"]]
    x, mask = torch.from_numpy(data["x"]), torch.from_numpy(data["mask"])
    with torch.inference_mode():
        a, _ = kernels.forward(spec, weights, x, mask=mask)
    with torch.no_grad():
        b, _ = kernels.forward(spec, weights, x, mask=mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert spy["forward"] == 2 and spy["backward"] == 0


# -- the switch and the fallback ----------------------------------------------------------------


def test_mode_reads_the_switch(monkeypatch):
    monkeypatch.delenv(native.ENV, raising=False)
    assert native.mode() == "auto"
    for value, expected in (("1", "1"), ("0", "0"), (" AUTO ", "auto"), ("", "auto")):
        monkeypatch.setenv(native.ENV, value)
        assert native.mode() == expected
    monkeypatch.setenv(native.ENV, "yes")
    with pytest.raises(ValueError, match=r"MULTIRNN_TORCH_NATIVE must be one of auto, 1, 0.*'yes'"):
        native.mode()


def lstm_call():
    spec = make_spec("LSTM", {})
    data = make_data(spec, "float64", masked=False, states=False, dropout=False)
    weights = [torch.from_numpy(w) for w in data["weights"]]
    return kernels.forward(spec, weights, torch.from_numpy(data["x"]))[0]


@pytest.mark.parametrize("mode, used", [("0", 0), ("1", 1), ("auto", 1)])
def test_switch_chooses_the_loop(mode, used, monkeypatch, require_native, spy):
    monkeypatch.setenv(native.ENV, mode)
    lstm_call()
    assert spy["forward"] == used


@pytest.fixture
def broken_build(monkeypatch):
    """A build that fails as a machine without a compiler does, on a fresh process state."""
    calls = []

    def fail():
        calls.append(1)
        raise RuntimeError(
            "Error building extension 'multirnn_scan'\n" + "x" * 5000 + "\ng++: not found"
        )

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_compile", fail)
    return calls


def test_failed_build_falls_back_with_one_warning(monkeypatch, broken_build):
    monkeypatch.setenv(native.ENV, "auto")
    with pytest.warns(native.NativeFallbackWarning) as rec:
        first = lstm_call()
    assert len(rec) == 1
    message = str(rec[0].message)
    # why: the log's first line and its end (where the compiler's error is), not all of it
    assert "Error building extension" in message and "g++: not found" in message
    assert "x" * 5000 not in message and f"{native.ENV}=0" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = lstm_call()  # no second warning, no second build
    assert broken_build == [1]
    monkeypatch.setenv(native.ENV, "0")
    torch.testing.assert_close(first, lstm_call(), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_failed_build_raises_when_required(monkeypatch, broken_build):
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(native.NativeBuildError, match="could not be built: RuntimeError: .*"):
        lstm_call()
    with pytest.raises(native.NativeBuildError, match="g\\+\\+: not found"):
        lstm_call()  # remembered: no second build
    assert broken_build == [1]


def test_switch_off_never_builds(monkeypatch, broken_build):
    monkeypatch.setenv(native.ENV, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lstm_call()
    assert broken_build == []


def test_build_tries_the_flag_sets_in_turn(monkeypatch, require_native, tmp_path):
    """An OpenMP build that does not load (no runtime in scope) is followed by one without."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    tried = []

    def load(name, sources, extra_cflags, **kwargs):
        tried.append(extra_cflags)
        if "-fopenmp" in extra_cflags:
            raise OSError("undefined symbol: GOMP_parallel")

    monkeypatch.setattr(native, "flag_sets", lambda: [["-O3", "-fopenmp"], ["-O3"]])
    monkeypatch.setattr(cpp_extension, "load", load)
    assert native._compile() is require_native  # the library this process already loaded
    assert tried == [["-O3", "-fopenmp"], ["-O3"]]
    monkeypatch.setattr(native, "flag_sets", lambda: [["-O3", "-fopenmp"]])
    with pytest.raises(OSError, match="GOMP_parallel"):
        native._compile()


def test_library_name_follows_the_source_and_torch(monkeypatch):
    name = native.library_name()
    assert name.startswith("multirnn_scan_") and name == native.library_name()
    assert native.library_name(["-O2"]) != name
    monkeypatch.setattr(torch, "__version__", "0.0.0+other")
    assert native.library_name() != name


def test_build_key_follows_everything_the_command_depends_on(monkeypatch, tmp_path):
    """Another interpreter, environment, torch, compiler, flag set, source or protocol is
    another build directory; the same inputs are the same one."""
    base = native.build_key(["-O3"])
    assert base == native.build_key(["-O3"]) and native.library_name(["-O3"]).endswith(base)
    source = tmp_path / "scan.cpp"
    source.write_bytes(native.SOURCE.read_bytes() + b"// changed\n")
    compiler = tmp_path / "c++"
    compiler.write_text("#!/bin/sh\necho 'c++ (other) 99.0'\n")
    compiler.chmod(0o755)
    changes = [
        (sys, "prefix", str(tmp_path / "venv")),
        (sys, "executable", str(tmp_path / "venv" / "bin" / "python")),
        (sys, "version", "3.99.0"),
        (torch, "__version__", "0.0.0+other"),
        (torch, "__file__", str(tmp_path / "torch" / "__init__.py")),
        (native, "SOURCE", source),
        (native, "VERSION", native.VERSION + 1),
    ]
    for owner, name, value in changes:
        with monkeypatch.context() as m:
            m.setattr(owner, name, value)
            assert native.build_key(["-O3"]) != base, name
    assert native.build_key(["-O2"]) != base
    if os.name != "nt":
        with monkeypatch.context() as m:
            m.setenv("CXX", str(compiler))
            assert native.build_key(["-O3"]) != base, "CXX"
    assert native.build_key(["-O3"]) == base


def test_wait_limit_reads_its_variable(monkeypatch):
    monkeypatch.delenv(native.WAIT_ENV, raising=False)
    assert native.wait_limit() == native.DEFAULT_WAIT
    for value, expected in (("0", 0.0), (" 2.5 ", 2.5), ("", native.DEFAULT_WAIT)):
        monkeypatch.setenv(native.WAIT_ENV, value)
        assert native.wait_limit() == expected
    for value in ("-1", "soon", "inf", "nan"):
        monkeypatch.setenv(native.WAIT_ENV, value)
        with pytest.raises(ValueError, match=f"MULTIRNN_TORCH_NATIVE_WAIT must be .*{value!r}"):
            native.wait_limit()


def test_malformed_wait_raises_before_any_build(monkeypatch, broken_build):
    monkeypatch.setenv(native.ENV, "auto")
    monkeypatch.setenv(native.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match="MULTIRNN_TORCH_NATIVE_WAIT must be"):
        lstm_call()
    assert broken_build == []


posix_only = pytest.mark.skipif(os.name == "nt", reason="holds the lock with fcntl")

#: holds the build lock as a build does (and creates torch's lock file) until killed
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()} {os.uname().nodename}".encode())
open(sys.argv[2], "w").close()
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
def fake_build(monkeypatch, tmp_path):
    """One flag set, builds under tmp_path, and torch's build replaced by one that records
    each call (with whether torch's lock file was there) and fails, so nothing compiles."""
    from torch.utils import cpp_extension

    class Built(Exception):
        pass

    calls = []

    def load(name, build_directory, **kwargs):
        calls.append({"name": name, "stale baton": (Path(build_directory) / "lock").exists()})
        raise Built(name)

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(native, "flag_sets", lambda: [["-O3"]])
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(cpp_extension, "load", load)
    directory = tmp_path / "ext" / native.library_name(["-O3"])
    directory.mkdir(parents=True)
    return {"calls": calls, "error": Built, "directory": directory}


@contextlib.contextmanager
def lock_holder(directory):
    """A process holding the build lock, as one compiling does; killed on leaving."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory / "multirnn.lock"), str(directory / "lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    with holder:
        try:
            assert holder.stdout.readline() == "holding\n"
            yield holder
        finally:
            holder.kill()


@posix_only
def test_lock_of_a_killed_build_is_taken_over(fake_build, monkeypatch):
    """SIGKILL leaves torch's lock file but frees ours: the next build starts at once, with
    torch's stale lock file removed first (else torch would wait for it forever)."""
    with lock_holder(fake_build["directory"]):
        pass  # killed
    assert (fake_build["directory"] / "lock").exists()
    monkeypatch.setenv(native.WAIT_ENV, "60")
    start = time.monotonic()
    with pytest.raises(fake_build["error"]):
        native._compile()
    assert time.monotonic() - start < 30
    assert fake_build["calls"] == [{"name": native.library_name(["-O3"]), "stale baton": False}]


@posix_only
def test_lock_held_past_the_wait_falls_back_with_one_warning(fake_build, monkeypatch):
    with lock_holder(fake_build["directory"]) as holder:
        monkeypatch.setenv(native.WAIT_ENV, "0.5")
        monkeypatch.setenv(native.ENV, "auto")
        with pytest.warns(native.NativeFallbackWarning) as rec:
            fallback = lstm_call()
        assert len(rec) == 1, [str(r.message) for r in rec]
        message = str(rec[0].message)
        assert f"another process ({holder.pid} on " in message
        assert "held the build lock" in message and "0.5 s (MULTIRNN_TORCH_NATIVE_WAIT)" in message
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lstm_call()  # decided once per process
        monkeypatch.setenv(native.ENV, "0")
        torch.testing.assert_close(fallback, lstm_call(), rtol=0, atol=0)
        monkeypatch.setattr(native, "_state", {})
        monkeypatch.setenv(native.ENV, "1")
        with pytest.raises(native.NativeBuildError, match="BuildLockTimeout: another process"):
            lstm_call()
    assert fake_build["calls"] == []  # never built beside the holder


@posix_only
def test_pid_file_stands_in_where_files_cannot_be_locked(fake_build, monkeypatch):
    """A pid file naming an ended process is taken over; one naming a running process is
    waited for, up to the bound."""
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    directory = fake_build["directory"]
    pid_file = directory / "multirnn.pid"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    host = os.uname().nodename
    pid_file.write_text(f"{ended.stdout.strip()} {host}")
    with _lock.BuildLock(directory, 30):
        assert pid_file.read_text() == f"{os.getpid()} {host}"
    assert not pid_file.exists()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        pid_file.write_text(f"{running.pid} {host}")
        timeout = pytest.raises(
            _lock.BuildLockTimeout, match=f"another process \\({running.pid} on "
        )
        with timeout, _lock.BuildLock(directory, 0.3):
            pass
    finally:
        running.kill()
        running.wait()
    assert pid_file.read_text() == f"{running.pid} {host}"  # the holder's, left alone


@posix_only
def test_two_waiters_finding_a_stale_pid_file_do_not_both_take_the_lock(tmp_path, monkeypatch):
    """Both read the ended holder's pid; the first takes over and holds the lock before the
    second removes the file: the second must leave the first's new pid file alone."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    host = os.uname().nodename
    pid_file = tmp_path / "multirnn.pid"
    pid_file.write_text(f"{ended.stdout.strip()} {host}")
    first, second = _lock.BuildLock(tmp_path, 1), _lock.BuildLock(tmp_path, 1)
    first.pid_file = second.pid_file = True
    me = f"{os.getpid()} {host}"
    read_holder = _lock.BuildLock._holder
    overtaken = []

    def holder(self, *path):
        text = read_holder(self, *path)
        if self is second and not path and not overtaken:  # the first overtakes here
            overtaken.append(text)
            assert not first._try(me)  # removes the stale file
            assert first._try(me)  # and holds the lock
        return text

    monkeypatch.setattr(_lock.BuildLock, "_holder", holder)
    assert not second._try(me)
    assert overtaken == [f"{ended.stdout.strip()} on {host}"]
    assert pid_file.read_text() == me  # the first's file, left in place
    assert not second._try(me)  # still held
    assert [p.name for p in tmp_path.iterdir()] == ["multirnn.pid"]


#: builds the native loop and prints the directory of the library it loaded
BUILD = """
import torch
from multirnn_torch import native
native.build()
(library,) = [p for p in torch.ops.loaded_libraries if "multirnn_scan" in p]
print(library)
"""


def built_files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".o", ".so", ".pyd")}


@posix_only
def test_killed_build_then_two_environments_alternate_without_a_rebuild(tmp_path):
    """The real build, twice (the slowest test here, about a minute on a busy machine):
    a build killed mid-compile (its whole process group, as a CI timeout does) leaves
    torch's lock file behind, and the next process builds anyway; a second virtual
    environment (same torch, another interpreter path and prefix) builds its own library
    beside it; then each loads its own again without compiling anything."""
    if not os.environ.get("CI") and (shutil.which(native.compiler()[0]) is None
                                     or shutil.which("ninja") is None):  # fmt: skip
        pytest.skip("no C++ compiler or ninja here")
    root = tmp_path / "ext"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(root), native.ENV: "1",
           native.WAIT_ENV: "600"}  # fmt: skip
    env.pop("PYTHONPATH", None)

    def build(python):
        proc = subprocess.run([python, "-c", BUILD], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return Path(proc.stdout.strip()).parent

    killed = subprocess.Popen([sys.executable, "-c", BUILD], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(root.glob("*/lock")):  # torch's lock: the compiler is about to run
        assert killed.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    time.sleep(1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert list(root.glob("*/lock")), "torch's lock file is left behind"

    first = build(sys.executable)
    assert not (first / "lock").exists()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, timeout=120)  # fmt: skip
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # this environment's packages (torch, multirnn) seen from the new one
    here = sysconfig.get_path("purelib")
    Path(site, "outer.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    second = build(python)
    assert second != first and second.parent == first.parent == root
    files = built_files(root)
    assert {p.parent for p in files} == {first, second}
    for python_, directory in ((sys.executable, first), (python, second)) * 2:
        assert build(python_) == directory
    assert built_files(root) == files, "an environment rebuilt a library"


def test_source_ships_with_the_package():
    assert native.SOURCE.is_file() and native.SOURCE.parent.name == "csrc"


# -- eligibility --------------------------------------------------------------------------------

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "cfg",
    [
        ("LSTM", 4, "tanh", "clamp01", False),
        ("GRU", 4, "tanh", "clamp01", False),
        ("GRU", 4, "elu", "sigmoid", True),
        ("SimpleRNN", 4, "selu", None, False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eligible(cfg, dtype):
    assert native.ineligibility(cfg, CPU, dtype) is None


@pytest.mark.parametrize(
    "cfg, device, dtype, reason",
    [
        (("LSTM", 4, "tanh", "clamp01", False), torch.device("cuda", 0), torch.float32, "CPU"),
        (("LSTM", 4, "tanh", "clamp01", False), torch.device("meta"), torch.float32, "CPU"),
        (("LSTM", 4, "tanh", "clamp01", False), CPU, torch.float16, "float32 and float64"),
        (("LSTM", 4, "tanh", "clamp01", False), CPU, torch.bfloat16, "float32 and float64"),
        (("LSTM", 4, "gelu", "clamp01", False), CPU, torch.float32, "'gelu'"),
        (("GRU", 4, "tanh", "hard_swish", False), CPU, torch.float32, "'hard_swish'"),
        (("IndRNN", 4, "tanh", None, False), CPU, torch.float32, "'IndRNN'"),
    ],
)
def test_ineligible_with_reason(cfg, device, dtype, reason):
    assert reason in native.ineligibility(cfg, device, dtype)


def test_ineligible_while_torch_compile_traces(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    cfg = ("LSTM", 4, "tanh", "clamp01", False)
    assert "torch.compile" in native.ineligibility(cfg, CPU, torch.float32)


def test_ineligible_calls_take_the_python_loop_even_when_required(monkeypatch, broken_build):
    """The switch requires the build, not the native loop for calls it does not cover."""
    monkeypatch.setenv(native.ENV, "1")
    assert native.loaded_ops(("LSTM", 4, "tanh", "clamp01", False), CPU, torch.float16) is None
    assert broken_build == []


def test_every_named_activation_has_a_native_code():
    assert set(backprop.ACTIVATIONS) == set(native.ACTIVATIONS)


# -- the native loop against the shared definition of the cells ---------------------------------

#: every cell the native loop computes (GRU in both forms)
NATIVE_CELLS = [("SimpleRNN", {}), ("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": True})]


def _every_cell_and_activation():
    """Each cell with each named activation as its activation (the gate at its default,
    hard_sigmoid, which the loop folds into its internal ``clamp01``) and, with tanh, as
    its gate."""
    named = sorted(set(native.ACTIVATIONS) - {builtin_cells.CLAMP01})
    for layer, kwargs in NATIVE_CELLS:
        for name in named:
            yield layer, {**kwargs, "activation": name}
            if layer != "SimpleRNN":
                yield layer, {**kwargs, "activation": "tanh", "recurrent_activation": name}


def _shared_definition(cell, weights, x, states):
    """Every step's output and the final states of ``cell``'s own step (the shared maths of
    ``multirnn.builtin_cells``) in a plain loop, on the autograd tape."""
    w = dict(zip(cell.layer_spec.weight_names, weights, strict=True))
    ops = cells.namespace(array_api(), TORCH_OPS, "torch")  # multirnn's own activations
    outputs = []
    for x_t in x.unbind(1):
        y, states = cell.step(ops, w, x_t, states)
        outputs.append(y)
    return [torch.stack(outputs, dim=1), *states]


@pytest.mark.parametrize("config", list(_every_cell_and_activation()), ids=config_id)
def test_both_loops_compute_the_shared_cells(config, monkeypatch, require_native, spy):
    """Forward and gradients of the native loop (``csrc/scan.cpp``) and of the Python loop
    equal those of the cells' shared step differentiated by autograd, for every cell and
    activation the native loop has."""
    layer, kwargs = config
    cell = {"SimpleRNN": multirnn.SimpleRNNCell, "LSTM": multirnn.LSTMCell,
            "GRU": multirnn.GRUCell}[layer](4, **kwargs)  # fmt: skip
    spec = make_spec(layer, kwargs, return_sequences=True)
    data = make_data(spec, "float64", masked=False, states=True, dropout=False)
    results, leaves = {}, {}
    for way in ("1", "0", "shared"):  # the native loop, the Python loop, the definition
        weights = [torch.tensor(w, requires_grad=True) for w in data["weights"]]
        x = torch.tensor(data["x"], requires_grad=True)
        states = [torch.tensor(s, requires_grad=True) for s in data["initial"]]
        if way == "shared":
            out = _shared_definition(cell, weights, x, states)
        else:
            monkeypatch.setenv(native.ENV, way)
            y, final = scan.generic(spec, weights, x, None, states, None, None,
                                    kernels.activation)  # fmt: skip
            out = [y, *final]
        rng = np.random.default_rng(1)
        loss = sum((r * torch.from_numpy(rng.standard_normal(tuple(r.shape)))).sum() for r in out)
        grads = torch.autograd.grad(loss, [x, *weights, *states])
        results[way], leaves[way] = [r.detach().numpy() for r in out], [g.numpy() for g in grads]
    assert spy == {"forward": 1, "backward": 1}, "one call took the native loop"
    # float64 rounding, summed in another order: products over all steps, not step by step
    tol = 1e-11
    for way, name in (("1", "native"), ("0", "Python")):
        for k, (ours, theirs) in enumerate(zip(results[way], results["shared"], strict=True)):
            close(ours, theirs, "float64", f"{name} loop, result {k}", tol)
        for k, (ours, theirs) in enumerate(zip(leaves[way], leaves["shared"], strict=True)):
            close(ours, theirs, "float64", f"{name} loop, gradient {k}", tol)
