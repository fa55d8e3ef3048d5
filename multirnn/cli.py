"""The ``multirnn`` command: ``conformance`` (check engines against the reference),
``info`` (engines and versions) and ``demo`` (every documented layer on one engine)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import multirnn
from multirnn import engines
from multirnn._checks import positive_int_option

DEMO_CASES: tuple[tuple[str, dict], ...] = (
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu", "return_sequences": True}),
    ("LSTM", {}),
    ("LSTM", {"return_sequences": True, "return_state": True}),
    ("LSTM", {"go_backwards": True, "implementation": 1}),
    ("LSTM", {"recurrent_activation": "sigmoid", "implementation": 2, "unroll": True}),
    ("LSTM", {"stateful": True}),
    ("GRU", {}),
    ("GRU", {"reset_after": True, "return_state": True}),
    ("GRU", {"dropout": 0.2, "recurrent_dropout": 0.2}),
)


def _info(args: argparse.Namespace) -> int:
    print(f"multirnn {multirnn.__version__} on Python {platform.python_version()}")
    given = os.environ.get(engines.ENV_VAR)
    if given is None:
        print(f"selection: {engines.ENV_VAR} (unset)")
    elif not given.strip():
        print(f"selection: {engines.ENV_VAR}={given!r} (blank: as if unset)")
    else:
        print(f"selection: {engines.ENV_VAR}={given!r}")
    try:
        print(f"selected engine: {engines.backend()}")
    except (engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        print(f"selection error: {exc}")
    width = max(len(r["name"]) for r in engines.describe())
    for row in engines.describe():
        mark = "*" if row["selected"] else " "
        if row["installed"]:
            state = f"installed ({row['framework_version']})"
        else:
            state = f"not installed -> {row['install']}" if row["install"] else row["description"]
        print(f" {mark} {row['name']:<{width}}  {state}")
    print("(* = selected engine)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    eng = engines.engine(args.backend)
    convert = getattr(eng.module, "from_numpy", lambda a: a)
    # Engines whose training calls need more than ``training=True`` (JAX: a random key).
    training_kwargs = getattr(eng.module, "training_kwargs", dict)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    print(f"engine {eng.name}: inputs (batch 2, time 5, features 3), second row right-padded")
    for layer, options in DEMO_CASES:
        cls = eng.layer_class(layer)
        instance = cls(4, seed=0, **options)
        dtype = np.float32 if "32" in str(getattr(instance, "dtype", "")) else np.float64
        training = bool(options.get("dropout"))
        try:
            result = instance(
                convert(x.astype(dtype)),
                mask=convert(mask),
                training=training,
                **(training_kwargs() if training else {}),
            )
        except ValueError as exc:  # a malformed switch (MULTIRNN_TORCH_NATIVE=yes) is bad input
            if not str(exc).startswith("MULTIRNN_"):
                raise
            raise Refused(str(exc)) from None
        parts = result if isinstance(result, list) else [result]
        shapes = " + ".join(str(tuple(p.shape)) for p in parts)
        text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        print(f"  {layer}(4{', ' + text if text else ''}) -> {shapes}")
    print("all documented layers ran")
    return 0


class Refused(Exception):
    """A usage error: the message names the bad value and what is accepted. The command
    prints it on one line and exits 2, before anything runs."""


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class Output:
    """A file a command writes at the end of its run (``--json``, ``--junit``, ``--report``).

    Created with the option, before the run: refused unless its directory exists and takes
    a new file, which is checked by creating a temporary file there. :meth:`write` fills the
    temporary file and renames it over the target, so a reader never sees half a report;
    :meth:`discard` (on any failure or interruption) removes it, leaving nothing behind.
    A target that exists and is not a regular file (``/dev/stdout``) is written directly.
    """

    def __init__(self, option: str, path: str):
        self.option, self.path = option, path
        self.temp: Path | None = None
        self.written = False
        if Path(path).is_dir():
            raise Refused(f"{option} {path!r} is a directory; give a file name")
        # a device or pipe (/dev/stdout, also when the shell redirects it to a file, whose
        # replacement would cut the shell's output off) is written directly, as given
        direct = str(path).startswith(("/dev/", "/proc/"))
        with contextlib.suppress(OSError):
            direct = direct or not stat.S_ISREG(os.stat(path).st_mode)
        if direct and os.path.exists(path):
            self.target = Path(path)
            if not os.access(path, os.W_OK):
                raise Refused(f"{option} {path!r} is not writable")
            return
        self.target = Path(os.path.realpath(path))
        parent = self.target.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise Refused(f"{option} {path!r}: the directory {str(parent)!r} {what}")
        try:
            fd, temp = tempfile.mkstemp(dir=parent, prefix=f".{self.target.name}.", suffix=".tmp")
        except OSError as exc:
            raise Refused(
                f"{option} {path!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})"
            ) from None
        os.close(fd)
        self.temp = Path(temp)

    def write(self, text: str) -> None:
        if self.temp is None:  # a device or pipe
            with open(self.target, "a", encoding="utf-8") as stream:  # no truncation
                stream.write(text)
            self.written = True
            return
        self.temp.write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temp, 0o666 & ~umask)  # as a plain open() would have made it
        os.replace(self.temp, self.target)
        self.temp, self.written = None, True

    def discard(self) -> None:
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None


def _outputs(pairs: Sequence[tuple[str, str | None]]) -> list[Output]:
    """An :class:`Output` for each option given; refused if two name the same file."""
    given = [(option, path) for option, path in pairs if path is not None]
    seen: dict[str, str] = {}
    for option, path in given:
        real = os.path.realpath(path)
        if real in seen and (os.path.isfile(real) or not os.path.exists(real)):
            raise Refused(f"{seen[real]} and {option} name the same file {path!r}")
        seen[real] = option
    made: list[Output] = []
    try:
        for option, path in given:
            made.append(Output(option, path))
    except Refused:
        for out in made:
            out.discard()
        raise
    return made


def _default_engines() -> list[str]:
    from multirnn.conformance.adapters import installed_oracles

    return engines.available() + installed_oracles()


def _conformance(args: argparse.Namespace) -> int:
    from multirnn.conformance import cases as case_module
    from multirnn.conformance import known_gaps, runner

    try:
        return _run_conformance(args)
    except (runner.UsageError, known_gaps.KnownGapsError, case_module.CaseError) as exc:
        raise Refused(str(exc)) from None


def _selected_cases(args: argparse.Namespace):
    from multirnn.conformance import cases as case_module

    if not args.full:
        for option, value in (("--count", args.count), ("--seed", args.seed)):
            if value is not None:
                raise Refused(f"{option} applies to --full only; add --full or leave {option} out")
    if args.case:
        selected: dict = {}
        for text in args.case:
            try:
                case = case_module.Case.from_id(text)
            except case_module.CaseError as exc:
                raise Refused(f"--case {text!r}: {exc}") from None
            if case in selected:
                raise Refused(f"--case {text!r} is the same case as --case {selected[case]!r}")
            selected[case] = text
        return "cases given", list(selected)
    if args.full:
        if importlib.util.find_spec("hypothesis") is None:
            raise Refused("--full needs hypothesis (pip install hypothesis)")
        count = 300 if args.count is None else args.count
        return "full", lambda: case_module.full_cases(count, args.seed or 0)
    return "quick", case_module.quick_cases


def _certify_cell(args: argparse.Namespace) -> int:
    """``--cell module:Name``: the cell's portability, its values on every engine that runs
    cells against the NumPy engine's RNN, and its gradients by each framework's autodiff
    against that RNN's finite differences."""
    from multirnn.conformance import cell_suite, runner

    others = [opt for opt, value in (("--case", args.case), ("--full", args.full),
                                     ("--json", args.json), ("--junit", args.junit))
              if value]  # fmt: skip
    if others:
        raise Refused(f"--cell runs the cell checks; {others[0]} applies to the layer grid")
    if importlib.util.find_spec("array_api_strict") is None:
        raise Refused(
            "--cell first runs the cell's step on the bare array API standard, which needs "
            'array-api-strict: pip install array-api-strict (or pip install ".[cells]" from a '
            "multirnn checkout)"
        )
    # module:Name from the working directory first, as ``python -m`` would find it (the
    # installed command's own directory is what Python put on the path)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cell = cell_suite.load_cell(args.cell, args.cell_units)
    except Exception as exc:  # also the user's constructor: one line, not its traceback
        text = str(exc)
        if not (isinstance(exc, ValueError) and text.startswith("--cell")):
            text = f"--cell {args.cell!r}: making the cell raised {type(exc).__name__}: {exc}"
        raise Refused(text) from None
    names = None
    if args.engines is not None:
        names = runner.split_names(args.engines, "--engines")
        for name in names:
            if not cell_suite.runs_cells(name):
                raise Refused(f"--engines: engine {name!r} does not run users' cells (RNN)")
    dtypes = cell_suite.DTYPES
    if args.dtype is not None:
        dtypes = runner.split_cell_dtypes(args.dtype, "--dtype")
    certification = cell_suite.Certification(cell, names, dtypes=dtypes, target=args.cell)
    print(cell_suite.describe(certification), flush=True)
    results = certification.run_all()
    print(cell_suite.summary(cell, results))
    return 1 if any(r.status == "fail" for r in results) else 0


def _workers(option: str, names: Sequence[str]) -> int:
    """``--workers``: a count, or ``auto``: one per usable core (at most 4), and none for
    the NumPy reference alone (which finishes before a worker would have started)."""
    if option != "auto":
        try:
            count = int(option)
        except ValueError:
            count = 0
        if count < 1:
            raise Refused(f"--workers takes a number >= 1 or auto, got {option!r}")
        return count
    if all(name == "numpy" for name in names):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


def _run_conformance(args: argparse.Namespace) -> int:
    from multirnn.conformance import environment, known_gaps, runner

    if args.cell is not None:
        return _certify_cell(args)
    from multirnn.conformance import report as rep
    from multirnn.conformance.cases import DTYPES

    names = (
        _default_engines()
        if args.engines is None
        else runner.split_names(args.engines, "--engines")
    )
    dtypes = list(DTYPES) if args.dtype is None else runner.split_dtypes(args.dtype, "--dtype")
    workers = _workers(args.workers, names)
    mode, selected = _selected_cases(args)
    for path in args.known_gaps:
        try:
            known_gaps.load(path)
        except known_gaps.KnownGapsError as exc:
            raise Refused(f"--known-gaps: {exc}") from None
    if args.keras_backend:
        if "keras" not in names:
            raise Refused(
                f"--keras-backend sets the backend of the keras oracle, which is not in this "
                f"run (engines: {', '.join(names)})"
            )
        os.environ["KERAS_BACKEND"] = args.keras_backend
    outputs = _outputs([("--json", args.json), ("--junit", args.junit)])
    done = [0, 0]  # checks done, checks in the run
    bar = None
    try:
        runs = runner.prepare(names, args.known_gaps)  # imports the engines' frameworks
        for engine_run in runs:
            backend = getattr(engine_run.adapter, "backend", None)
            if engine_run.adapter.name == "keras" and args.keras_backend not in (None, backend):
                raise Refused(
                    f"--keras-backend {args.keras_backend}: keras was already imported with "
                    f"the {backend} backend in this process"
                )
        cases = selected if isinstance(selected, list) else selected()
        env = environment.collect([r.adapter for r in runs])
        print(rep.fit(rep.header(mode, names, len(cases), dtypes, env)), flush=True)
        guess = runner.estimate([r.adapter.name for r in runs], len(cases), len(dtypes))
        guess /= min(workers, 2)  # two workers measured near 2x on two cores; more, unknown
        about = f"{guess:.0f} s" if guess < 90 else f"{guess / 60:.0f} min"
        print(f"expected time: about {about} on a 2-core machine (more under load)", flush=True)
        bar = None if args.no_progress else runner.progress_bar()
        done[1] = len(runs) * len(cases) * len(dtypes)

        def progress(count: int, total: int, engine: str) -> None:
            done[0] = count
            if bar:
                bar(count, total, engine)

        result = runner.run(names, cases, dtypes, progress=progress, runs=runs, workers=workers)
        print(rep.table(result) if args.table else rep.engine_summary(result))
        print(rep.fit(rep.summary(result)))
        if result.failures:
            print(rep.fit(rep.failures(result)))
        print(rep.fit(rep.closing(result)))
        for out in outputs:
            out.write(rep.to_json(result) if out.option == "--json" else rep.to_junit(result))
    except KeyboardInterrupt:
        if bar and sys.stderr.isatty():
            sys.stderr.write("\n")
        ran = f"after {done[0]} of {done[1]} checks" if done[1] else "before any check ran"
        written = [out.option for out in outputs if out.written]
        lost = [out.option for out in outputs if not out.written]
        tail = "; no report written" if outputs and not written else ""
        if written and lost:
            tail = f"; {', '.join(lost)} not written"
        print(f"multirnn conformance: interrupted {ran}{tail}", file=sys.stderr)
        return 130
    finally:
        for out in outputs:
            out.discard()
    return 0 if result.ok else 1


def _bench_names(args: argparse.Namespace) -> list[str] | None:
    """The contenders of ``--engines`` and ``--peers``, checked without importing anything."""
    from multirnn.bench import contenders
    from multirnn.conformance import runner

    names = None
    if args.engines is not None:
        registry = engines.registry()
        names = []
        for given in runner.split_names(args.engines, "--engines"):
            name, plus, variant = given.partition("+")
            if name not in registry:
                raise Refused(
                    f"--engines: unknown engine {name!r}; engines: {', '.join(registry)}"
                    " (NAME or NAME+VARIANT)"
                )
            info = registry[name]
            if not info.installed():
                raise Refused(f"--engines: engine {name!r} is not installed: {info.install_hint()}")
            known = (*info.benchmark_variants, *contenders.CELL_VARIANTS)
            if plus and variant not in known:
                accepted = ", ".join(f"{name}+{v}" for v in known)
                raise Refused(
                    f"--engines: engine {name!r} has no benchmark variant {variant!r} "
                    f"(variants: {accepted or 'none'})"
                )
            names.append(f"multirnn:{given}")
    if args.peers is not None:
        from multirnn.bench import harness

        peers = []  # --peers '': every engine, no peer
        if args.peers.strip():
            peers = runner.split_names(args.peers, "--peers", list(contenders.PEERS))
        for peer in peers:
            contender = contenders.make(peer)
            if not contender.available():
                raise Refused(
                    f"--peers: {peer} needs {', '.join(contender.requires)}, not all installed"
                )
        names = (names or harness.engine_contenders()) + peers
    return names


def _bench_record(path: str) -> dict:
    import json

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"--from-json {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"--from-json {path!r} cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"--from-json {path!r} is not JSON: {exc}") from None
    except RecursionError:
        raise Refused(f"--from-json {path!r}: its JSON is nested too deeply") from None
    if not isinstance(record, dict) or not {"contenders", "workloads"} <= set(record):
        raise Refused(f"--from-json {path!r} is not a record written by multirnn bench --json")
    problem = _record_problem(record)
    if problem:
        raise Refused(
            f"--from-json {path!r} is not a record written by multirnn bench --json: {problem}"
        )
    return record


_NUMBER = (int, float)
#: the types of what rendering a record reads: workloads' fields, results' timings
_WORKLOAD_FIELDS = {"key": str, "layer": str, "config": str, "group": str, "batch": int,
                    "time": int, "input_dim": int, "units": int}  # fmt: skip
_WORKLOAD_OPTIONAL = {"dtype": str, "stateful": bool, "label": str, "dropout": _NUMBER}


def _is(value, kind) -> bool:
    """isinstance, with a bool never counting as a number."""
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _record_problem(record: dict) -> str | None:
    """What in a saved bench record has the wrong type or refers to nothing (the first
    found, by its place in the record), or None: everything rendering reads is checked
    before rendering starts, so a hand-edited or foreign file is one clear error."""
    workloads, contenders = record["workloads"], record["contenders"]
    if not isinstance(workloads, list):
        return f"'workloads' is {type(workloads).__name__}, expected a list"
    keys = set()
    for i, w in enumerate(workloads):
        where = f"workloads[{i}]"
        if not isinstance(w, dict):
            return f"{where} is {type(w).__name__}, expected an object"
        for name in _WORKLOAD_FIELDS:
            if name not in w:
                return f"{where} has no {name!r}"
        for name, kind in {**_WORKLOAD_FIELDS, **_WORKLOAD_OPTIONAL}.items():
            if name in w and not _is(w[name], kind):
                expected = "a number" if kind is _NUMBER else kind.__name__
                return f"{where}.{name} is {w[name]!r}, expected {expected}"
        keys.add(w["key"])
    if not isinstance(contenders, list):
        return f"'contenders' is {type(contenders).__name__}, expected a list"
    for i, c in enumerate(contenders):
        where = f"contenders[{i}]"
        if not isinstance(c, dict):
            return f"{where} is {type(c).__name__}, expected an object"
        if not isinstance(c.get("contender"), str):
            return f"{where}.contender is {c.get('contender')!r}, expected a name"
        for name in ("kind", "failed"):
            if name in c and not isinstance(c[name], str):
                return f"{where}.{name} is {c[name]!r}, expected a string"
        if "import_s" in c and not _is(c["import_s"], _NUMBER):
            return f"{where}.import_s is {c['import_s']!r}, expected a number"
        for name in ("versions", "threads"):
            if name in c and not isinstance(c[name], dict):
                return f"{where}.{name} is {type(c[name]).__name__}, expected an object"
        results = c.get("results", [])
        if not isinstance(results, list):
            return f"{where}.results is {type(results).__name__}, expected a list"
        for j, row in enumerate(results):
            here = f"{where}.results[{j}]"
            if not isinstance(row, dict):
                return f"{here} is {type(row).__name__}, expected an object"
            if row.get("workload") not in keys:
                return f"{here}.workload {row.get('workload')!r} is none of the workloads' keys"
            for name in ("unsupported", "error", "traceback"):
                if name in row and not isinstance(row[name], str):
                    return f"{here}.{name} is {row[name]!r}, expected a string"
            for mode in ("forward", "train"):
                if mode not in row:
                    continue
                timing = row[mode]
                if not isinstance(timing, dict) or not _is(timing.get("median_s"), _NUMBER):
                    return f"{here}.{mode} has no number 'median_s'"
                for name, value in timing.items():
                    if value is not None and not _is(value, _NUMBER):
                        return f"{here}.{mode}.{name} is {value!r}, expected a number"
    for name, kind in (("machine", dict), ("matmul_peak", dict), ("mode", str),
                       ("date", str), ("rounds", int)):  # fmt: skip
        if name in record and not _is(record[name], kind):
            return f"{name!r} is {record[name]!r:.60}, expected {kind.__name__}"
    peak = record.get("matmul_peak", {}).get("gflops")
    if "matmul_peak" in record and not (_is(peak, _NUMBER) and peak > 0):
        return f"matmul_peak.gflops is {peak!r}, expected a positive number"
    product = record.get("recurrent_product")
    if product is not None:  # optional: records made before it was measured lack it
        if not isinstance(product, dict):
            return f"recurrent_product is {product!r:.60}, expected an object"
        for name in ("seconds", "gflops"):
            value = product.get(name)
            if not (_is(value, _NUMBER) and value > 0):
                return f"recurrent_product.{name} is {value!r}, expected a positive number"
        shape = product.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(_is(v, int) for v in shape)):
            return f"recurrent_product.shape is {shape!r:.60}, expected three integers"
        if not isinstance(product.get("library"), str):
            return f"recurrent_product.library is {product.get('library')!r:.60}, expected a string"
    machine = record.get("machine", {})
    for name, kind in (("cpu_id", str), ("cpu_flags", list), ("blas", dict)):
        if name in machine and not _is(machine[name], kind):
            return f"machine.{name} is {machine[name]!r:.60}, expected {kind.__name__}"
    return None


def _bench(args: argparse.Namespace) -> int:
    import json

    from multirnn.bench import harness, render
    from multirnn.conformance import runner

    run_options = {
        "--engines": args.engines,
        "--peers": args.peers,
        "--layers": args.layers,
        "--quick": args.quick,
        "--full": args.full,
        "--smoke": args.smoke,
        "--memory": args.memory,
        "--no-memory": args.no_memory,
        "--rounds": args.rounds,
    }
    try:
        if args.from_json:
            given = [option for option, value in run_options.items() if value not in (None, False)]
            if given:
                raise Refused(f"--from-json renders a saved record; {given[0]} is for a new run")
            record = _bench_record(args.from_json)
        else:
            names = _bench_names(args)
            layers = None
            if args.layers is not None:
                layers = runner.split_names(args.layers, "--layers", list(harness.LAYERS))
    except runner.UsageError as exc:
        raise Refused(str(exc)) from None
    if args.plot:
        _check_directory("--plot", args.plot)
        if importlib.util.find_spec("matplotlib") is None:
            raise Refused("--plot needs matplotlib (pip install matplotlib)")
    notes = _bench_notes(args.notes)
    outputs = _outputs([("--json", args.json), ("--report", args.report)])
    try:
        if not args.from_json:
            mode = "full" if args.full else "smoke" if args.smoke else "quick"
            print(f"multirnn bench ({mode}); matrix-multiply peak and machine first",
                  file=sys.stderr)  # fmt: skip
            memory = True if args.memory else False if args.no_memory else None
            record = harness.run(names, layers, mode, memory=memory, rounds=args.rounds,
                                 progress=lambda text: print(text, file=sys.stderr))  # fmt: skip
        for out in outputs:  # the record first: a long run is saved even if rendering fails
            if out.option == "--json":
                out.write(json.dumps(record, indent=1))
        print(render.table(record, "S"))
        for line in render.skipped(record):
            print(line)
        written = render.plots(record, args.plot) if args.plot else []
        for out in outputs:
            if out.option == "--report":
                out.write(render.report(record, written, relative_to=Path(out.path).parent,
                                        notes=notes))  # fmt: skip
    except (TypeError, KeyError, ValueError, AttributeError, IndexError, ZeroDivisionError,
            StopIteration) as exc:  # fmt: skip
        if not args.from_json:
            raise
        # what _record_problem does not check (the report's machine section, say)
        raise Refused(
            f"--from-json {args.from_json!r} is not a record written by multirnn bench "
            f"--json: rendering it failed with {type(exc).__name__}: {exc}"
        ) from None
    except KeyboardInterrupt:
        saved = [out.option for out in outputs if out.written]
        tail = f"; {', '.join(saved)} written" if saved else "; no record written"
        print(f"multirnn bench: interrupted{tail if outputs else ''}", file=sys.stderr)
        return 130
    finally:
        for out in outputs:
            out.discard()
    return 0


#: hand-written measurements the report appends (``--notes``), found from the working directory
BENCH_NOTES = "benchmarks/notes.md"


def _bench_notes(given: str | None) -> Path | None:
    """The notes file of ``--notes``: the one given (it must exist), none for '', else
    benchmarks/notes.md when the working directory has one (a multirnn checkout)."""
    if given is None:
        return Path(BENCH_NOTES) if Path(BENCH_NOTES).is_file() else None
    if not given:
        return None
    if not Path(given).is_file():
        raise Refused(f"--notes {given!r} is not a file")
    return Path(given)


def _check_directory(option: str, path: str) -> None:
    """A directory that exists and takes new files, or can be created."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise Refused(f"{option} {path!r} is not a directory")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise Refused(f"{option} {path!r}: cannot create or write in {str(existing)!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns its exit status: 0 success, 1 failures found (conformance),
    2 a usage error (nothing ran), 130 interrupted (Ctrl-C at any point: one line on
    stderr, never a traceback), 141 its output closed early (``multirnn info | head``:
    nothing more is written, quietly, as a program ended by SIGPIPE would)."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in a traceback at exit
    except KeyboardInterrupt:  # while parsing or importing, before a command could say
        _say("multirnn: interrupted")
        return 130
    except BrokenPipeError:
        # what is still buffered would fail again when the interpreter exits
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 141


def _say(line: str) -> None:
    """One line on stderr, which may itself be closed."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _main(argv: Sequence[str] | None) -> int:
    parser = _Parser(prog="multirnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser(
        "conformance",
        help="check engines against the NumPy reference (and the peers' own layers as "
        "further oracles)",
    )
    conf.add_argument(
        "--engines",
        help="comma-separated engine or oracle names: keras, torch.nn, flax.nnx, onnxruntime "
        "(default: every installed engine and oracle)",
    )
    conf.add_argument(
        "--dtype",
        help="float32,float64 (the default), and the low-precision groups bfloat16, float16",
    )
    size = conf.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the deterministic grid (default)")
    size.add_argument("--full", action="store_true", help="grid plus Hypothesis-generated cases")
    conf.add_argument(
        "--count", type=positive_int_option, help="Hypothesis cases in --full (default 300)"
    )
    conf.add_argument("--seed", type=_nonnegative_int, help="Hypothesis seed in --full (default 0)")
    conf.add_argument("--case", action="append", help="run only this case id (repeatable)")
    conf.add_argument(
        "--cell",
        help="certify a user's cell instead: module:Name of a multirnn.Cell subclass (or of a "
        "function returning a cell); its values on every engine that runs cells, and its "
        "gradients on those with autodiff",
    )
    conf.add_argument(
        "--cell-units", type=positive_int_option, default=3, help="units of the --cell cell"
    )
    conf.add_argument("--known-gaps", action="append", default=[], help="extra known-gap file")
    conf.add_argument(
        "--keras-backend",
        choices=("tensorflow", "jax", "torch"),
        help="KERAS_BACKEND for the keras oracle",
    )
    conf.add_argument("--json", help="write every result as JSON here")
    conf.add_argument("--junit", help="write a JUnit XML report here")
    conf.add_argument("--no-progress", action="store_true", help="no progress bar")
    conf.add_argument("--workers", default="auto",
                      help="worker processes (default auto: one per core, at most 4)")  # fmt: skip
    conf.add_argument("--table", action="store_true",
                      help="the full table (case families x engines x dtypes), wide")  # fmt: skip
    conf.set_defaults(run=_conformance)
    bench = sub.add_parser("bench", help="time engines against torch.nn, Keras 3 and Flax NNX")
    bench.add_argument(
        "--engines",
        help="multirnn engines, NAME or NAME+VARIANT such as tensorflow+xla "
        "(default: every installed one and its variants)",
    )
    bench.add_argument(
        "--peers",
        help="peers: torch.nn, keras:tensorflow, keras:tensorflow+xla, keras:jax, "
        "keras:torch, flax.nnx (default: every installed one; '' for none)",
    )
    bench.add_argument("--layers", help="lstm,gru,simple_rnn (default: all)")
    speed = bench.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true",
                       help="shape S, short sweeps, small and streaming (default)")  # fmt: skip
    speed.add_argument("--full", action="store_true", help="full sweeps, peak memory, more repeats")
    speed.add_argument("--smoke", action="store_true", help="tiny shapes: checks the harness runs")
    memory = bench.add_mutually_exclusive_group()
    memory.add_argument(
        "--memory", action="store_true", help="measure peak memory (default: --full)"
    )
    memory.add_argument("--no-memory", action="store_true", help="skip peak-memory workers")
    bench.add_argument("--rounds", type=positive_int_option, help="round-robin passes, best median "
                       "kept (default 2; 1 for --smoke)")  # fmt: skip
    bench.add_argument("--json", help="write the whole record here")
    bench.add_argument("--plot", help="directory for time_vs_length.png, "
                       "time_per_step_vs_length.png and shape_s.png")  # fmt: skip
    bench.add_argument("--report", help="write the Markdown report (e.g. docs/benchmarks.md)")
    bench.add_argument("--notes", help="hand-written Markdown the report appends under "
                       f"'Measurements of past changes' (default: {BENCH_NOTES} if it exists; "
                       "'' for none)")  # fmt: skip
    bench.add_argument("--from-json", help="render a saved record instead of running")
    bench.set_defaults(run=_bench)
    sub.add_parser("info", help="list engines, what is installed and selected").set_defaults(
        run=_info
    )
    demo = sub.add_parser("demo", help="run every documented layer on one engine")
    demo.add_argument("--backend", default=None, help="engine name (default: the selected one)")
    demo.set_defaults(run=_demo)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 0
    command = f"multirnn {args.command}"
    try:
        return args.run(args)
    except (Refused, engines.UnknownEngineError, engines.EngineUnavailableError) as exc:
        _say(f"{command}: {exc}")
        return 2
    except KeyboardInterrupt:
        _say(f"{command}: interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
