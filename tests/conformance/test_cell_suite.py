"""``multirnn conformance --cell`` and ``pytest --multirnn-cell``: certifying a user's cell
on every engine that runs cells (values and gradients), with the portability check first."""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

import multirnn
from multirnn import cli
from multirnn.conformance import adapters, cell_suite, plugin

from . import frameworks

pytest.importorskip("array_api_strict")

pytest_plugins = ["pytester"]


@multirnn.register_cell(name="test_cell_suite.Leaky")
class Leaky(multirnn.Cell):
    """A leaky integrator: every engine must agree on it."""

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("recurrent_kernel", (self.units, self.units), initializer="orthogonal")

    def step(self, ops, w, x, states):
        (h,) = states
        h = 0.5 * h + 0.5 * ops.tanh(x @ w["kernel"] + h @ w["recurrent_kernel"])
        return h, [h]


class EngineDependent(Leaky):
    """Computes something else on NumPy than elsewhere: the suite must fail it."""

    def step(self, ops, w, x, states):
        (h,) = states
        scale = 0.5 if ops.name == "numpy" else 0.25
        h = scale * h + ops.tanh(x @ w["kernel"])
        return h, [h]


class Framework(Leaky):
    def step(self, ops, w, x, states):
        (h,) = states
        return h.clip(-1.0, 1.0) + ops.tanh(x @ w["kernel"]), [h]  # NumPy's method, not ops


def test_a_portable_cell_passes_every_check(capsys):
    assert cli.main(["conformance", "--cell", f"{__name__}:Leaky"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("cell Leaky(3 units): ") and " 0 failed on " in last


def test_a_cell_that_differs_between_engines_fails_with_the_check_named():
    results = cell_suite.certify(EngineDependent(3))
    failed = {(r.engine, r.check) for r in results if r.status == "fail"}
    engines = {r.engine for r in results} - {"standard", "numpy"}
    if not engines:
        pytest.skip("no framework engine runs cells here")
    assert {e for e, _ in failed} == engines
    assert not any(e == "numpy" for e, _ in failed)


def test_a_cell_that_calls_a_framework_fails_the_portability_check(capsys):
    assert cli.main(["conformance", "--cell", f"{__name__}:Framework"]) == 1
    out = capsys.readouterr().out
    assert "Framework.step is not portable" in out and "h.clip(-1.0, 1.0)" in out


@pytest.mark.parametrize(
    "args,match",
    [
        (["--cell", "nope"], "takes module:Name"),
        (["--cell", "no_such_module:X"], "cannot import 'no_such_module'"),
        (["--cell", f"{__name__}:Missing"], "has no 'Missing'"),
        (["--cell", f"{__name__}:pytest"], "is not a multirnn.Cell"),
        (["--cell", f"{__name__}:Leaky", "--case", "LSTM()"], "--case applies to the layer"),
    ],
)
def test_usage_errors_exit_2(capsys, args, match):
    assert cli.main(["conformance", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


# -- gradients ------------------------------------------------------------------------------


def _needs(engine: str) -> None:
    frameworks.needs(engine)


def _gradient_checks(certification):
    return [c for c in certification.plan() if c.name.startswith(cell_suite.GRADIENTS)]


def test_central_differences_of_a_known_function():
    a, b = np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([0.3, -0.7])
    grads = cell_suite.central_differences(
        lambda v: float(np.sum(v[0] ** 3) + np.sum(np.sin(v[1]))), [a, b]
    )
    np.testing.assert_allclose(grads[0], 3 * a**2, rtol=1e-8)
    np.testing.assert_allclose(grads[1], np.cos(b), rtol=1e-8)


@pytest.mark.parametrize("engine", list(frameworks.FRAMEWORKS))
def test_a_correct_cell_passes_the_gradient_checks(engine):
    _needs(engine)
    certification = cell_suite.Certification(Leaky(3), [engine])
    checks = _gradient_checks(certification)
    assert [c.name for c in checks] == [f"gradients/{row[0]}" for row in cell_suite.GRADIENT_GRID]
    with frameworks.float64(engine):
        results = [certification.run(c) for c in checks]
    assert all(r.status == "pass" for r in results), [r.line() for r in results]
    assert max(r.max_rel for r in results) < 1e-8  # the tolerance is 1e-6: a real margin
    masked = results[[c.name for c in checks].index("gradients/masked_initial_state")]
    assert set(masked.errors) == {"d/inputs", "d/initial_state[h]", "d/kernel",
                                  "d/recurrent_kernel"}  # fmt: skip


def test_the_reference_is_not_graded_against_itself():
    certification = cell_suite.Certification(Leaky(3), ["numpy"])
    assert _gradient_checks(certification) == []
    float32 = cell_suite.Certification(Leaky(3), ["numpy", "torch"], dtypes=["float32"])
    assert _gradient_checks(float32) == []  # the finite differences are float64


def _perturbed(monkeypatch, weight: str):
    """The torch adapter's cell gradients, with one weight's gradient 0.1 % off."""
    _needs("torch")
    cls = type(adapters.adapter("torch"))
    right = cls.cell_gradients

    def wrong(self, *args, **kwargs):
        grads = right(self, *args, **kwargs)
        grads["weights"][weight] = grads["weights"][weight] * 1.001
        return grads

    monkeypatch.setattr(cls, "cell_gradients", wrong)


def test_a_wrong_engine_gradient_fails_with_its_error_and_reproducer(monkeypatch, capsys):
    _perturbed(monkeypatch, "recurrent_kernel")
    assert cli.main(["conformance", "--cell", f"{__name__}:Leaky", "--engines", "numpy,torch"]) == 1
    out = capsys.readouterr().out
    assert "gradients: 4 option sets in float64, each framework's autodiff (torch)" in out
    failed = [line for line in out.splitlines() if line.startswith("fail ")]
    assert len(failed) == len(cell_suite.GRADIENT_GRID)  # every gradient row, nothing else
    first = failed[0].split()
    assert first[:4] == ["fail", "torch", "float64", "gradients/plain"]
    assert first[4:6] == ["max", "rel"] and float(first[6]) > 1e-4
    assert first[-2:] == ["worst:", "d/recurrent_kernel"]
    reproducer = (
        'python -c "from multirnn.conformance import cell_suite; cell_suite.reproduce('
        f"'{__name__}:Leaky', 'torch', 'float64', 'gradients/plain')\""
    )
    assert f"  reproduce: {reproducer}" in out.splitlines()
    assert out.rstrip().splitlines()[-1].startswith("cell Leaky(3 units): ")
    # the reproducer re-runs that check alone and prints each array's error
    result = cell_suite.reproduce(f"{__name__}:Leaky", "torch", "float64", "gradients/plain")
    assert result.status == "fail" and result.errors["d/recurrent_kernel"] > 1e-4
    printed = capsys.readouterr().out
    assert "d/recurrent_kernel" in printed and "d/inputs" in printed


def test_a_gradient_missing_a_weight_fails_naming_it(monkeypatch):
    _needs("torch")
    cls = type(adapters.adapter("torch"))
    right = cls.cell_gradients

    def partial(self, *args, **kwargs):
        grads = right(self, *args, **kwargs)
        del grads["weights"]["kernel"]
        return grads

    monkeypatch.setattr(cls, "cell_gradients", partial)
    certification = cell_suite.Certification(Leaky(3), ["torch"])
    result = certification.run(_gradient_checks(certification)[0])
    assert result.status == "fail" and "expected ['kernel', 'recurrent_kernel']" in result.detail


def test_a_reproducer_carries_the_engines_setting_and_the_cells_options():
    _needs("jax")
    certification = cell_suite.Certification(Leaky(4, leak=0.25), ["jax"], target="m:Leaky")
    text = certification.reproducer(cell_suite.Check("jax", "float64", "gradients/plain"))
    assert text.startswith('JAX_ENABLE_X64=1 python -c "')
    assert "reproduce('m:Leaky', 'jax', 'float64', 'gradients/plain', config={'units': 4, " \
           "'leak': 0.25})" in text  # fmt: skip


# -- pytest --multirnn-cell ---------------------------------------------------------------------

CELLS = """
import multirnn


class Leaky(multirnn.Cell):
    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("recurrent_kernel", (self.units, self.units), initializer="orthogonal")

    def step(self, ops, w, x, states):
        (h,) = states
        h = 0.5 * h + 0.5 * ops.tanh(x @ w["kernel"] + h @ w["recurrent_kernel"])
        return h, [h]


class Other(Leaky):
    pass


NOT_A_CELL = 3
"""


@pytest.fixture
def cell_project(pytester, monkeypatch):
    """A project with a cell module (``mycells``) on sys.path, and no suite selected."""
    for name in (plugin.ENV_CELL, plugin.ENV_ENGINES):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(mycells=textwrap.dedent(CELLS))
    pytester.makepyfile(test_own="def test_own():\n    assert True\n")
    pytester.syspathinsert()
    return pytester


def test_pytest_option_runs_one_test_per_check(cell_project):
    plan = cell_suite.Certification(Leaky(3), ["numpy", "torch"]).plan()
    _needs("torch")
    result = cell_project.runpytest(
        "-v", "-p", "no:cacheprovider", "--multirnn-cell", "mycells:Leaky",
        "--multirnn-engines", "numpy,torch",
    )  # fmt: skip
    result.assert_outcomes(passed=len(plan) + 1)  # and the project's own test
    result.stdout.fnmatch_lines(
        [
            "multirnn cell certification: mycells:Leaky, Leaky(units=3)",
            "*multirnn-cell::Leaky?portable? PASSED*",
            "*multirnn-cell::Leaky?numpy-float32-mask_arbitrary? PASSED*",
            "*multirnn-cell::Leaky?torch-float64-gradients/masked_initial_state? PASSED*",
            "*multirnn-cell::Leaky?torch-float32-stateful? PASSED*",
            "*= multirnn cell certification =*",
            f"cell mycells:Leaky: {len(plan)} passed, 0 failed, 0 skipped on numpy, torch, *",
        ]
    )
    assert not any("numpy-float64-gradients" in line for line in result.outlines)


def test_pytest_option_failures_show_the_error_and_the_reproducer(cell_project, monkeypatch):
    _perturbed(monkeypatch, "kernel")
    result = cell_project.runpytest(
        "-p", "no:cacheprovider", "--multirnn-cell=mycells:Leaky", "--multirnn-cell-units=4",
        "--multirnn-engines=torch", "--multirnn-dtypes=float64", "-k", "gradients",
    )  # fmt: skip
    result.assert_outcomes(failed=len(cell_suite.GRADIENT_GRID))
    result.stdout.fnmatch_lines(
        [
            "*_ mycells:Leaky torch-float64-gradients/plain _*",
            "fail torch      float64 gradients/plain max rel *(tol 1e-06) worst: d/kernel",
            'reproduce: python -c "from multirnn.conformance import cell_suite; '
            "cell_suite.reproduce('mycells:Leaky', 'torch', 'float64', 'gradients/plain', "
            'units=4)"',
        ]
    )
    result.stdout.fnmatch_lines(["cell mycells:Leaky: 0 passed, 4 failed, 0 skipped on torch, *"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--multirnn-cell", "mycells:Missing"],
         "ERROR: multirnn conformance: --multirnn-cell 'mycells:Missing': module 'mycells' has "
         "no 'Missing'; its cells: Leaky, Other"),
        (["--multirnn-cell", "no_such_cells:Leaky"],
         "ERROR: multirnn conformance: --multirnn-cell 'no_such_cells:Leaky': cannot import "
         "'no_such_cells': No module named 'no_such_cells' (is it installed, or is its "
         "directory on sys.path / PYTHONPATH?)"),
        (["--multirnn-cell", "mycells:NOT_A_CELL"],
         "ERROR: multirnn conformance: --multirnn-cell 'mycells:NOT_A_CELL' is not a "
         "multirnn.Cell subclass (or a function returning a cell instance); got int "
         "'NOT_A_CELL'"),
        (["--multirnn-cell", "mycells"], "ERROR: multirnn conformance: --multirnn-cell takes "
         "module:Name (e.g. mypkg.cells:MinimalGRU), got 'mycells'"),
        (["--multirnn-cell-units", "4"], "ERROR: multirnn conformance: --multirnn-cell-units "
         "applies to --multirnn-cell only*"),
        (["--multirnn-cell", "mycells:Leaky", "--multirnn-engines", "keras"],
         "ERROR: multirnn conformance: --multirnn-cell: engine 'keras' does not run users' "
         "cells (RNN)*"),
    ],
)  # fmt: skip
def test_pytest_option_usage_errors_stop_pytest_with_one_line(cell_project, args, message):
    if "keras" in args and importlib.util.find_spec("keras") is None:
        pytest.skip("the keras oracle needs keras")
    result = cell_project.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_environment_variable_names_the_cell_too(cell_project, monkeypatch):
    monkeypatch.setenv(plugin.ENV_CELL, "mycells:Other")
    monkeypatch.setenv(plugin.ENV_ENGINES, "numpy")
    result = cell_project.runpytest("-p", "no:cacheprovider", "-k", "portable or own")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["cell mycells:Other: 1 passed, 0 failed, 0 skipped on *"])
    monkeypatch.setenv(plugin.ENV_CELL, "mycells:Gone")
    result = cell_project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*MULTIRNN_CONFORMANCE_CELL 'mycells:Gone': module 'mycells'*"])


def test_pytest_runs_without_the_option_add_nothing(cell_project):
    result = cell_project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "multirnn-cell" not in result.stdout.str()
    assert "multirnn cell certification" not in result.stdout.str()
