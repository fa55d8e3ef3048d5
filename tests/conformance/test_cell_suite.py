"""``multirnn conformance --cell``: certifying a user's cell on every engine that runs
cells, with the portability check first."""

from __future__ import annotations

import pytest

import multirnn
from multirnn import cli
from multirnn.conformance import cell_suite

pytest.importorskip("array_api_strict")


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
