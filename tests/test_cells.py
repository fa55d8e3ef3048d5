"""Users' cells (``multirnn.Cell``, ``multirnn.RNN``): the declaration API, configs, the
portability check, the NumPy engine's RNN against the built-in layers (two independent
implementations of the same formulas), and every engine's RNN against the NumPy one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import multirnn
from multirnn import cells


@multirnn.register_cell(name="test_cells.Elman")
class Elman(multirnn.Cell):
    """The built-in SimpleRNN's formula, written as a cell."""

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("recurrent_kernel", (self.units, self.units), initializer="orthogonal")
        self.add_weight("bias", (self.units,), initializer="zeros")

    def step(self, ops, w, x, states):
        (h,) = states
        h = ops.tanh(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"])
        return h, [h]


@multirnn.register_cell(name="test_cells.KerasLSTM")
class KerasLSTM(multirnn.Cell):
    """The built-in LSTM's formula (gate order i, f, c, o), with a configurable gate."""

    state_names = ("h", "c")

    def build(self, input_dim):
        u = self.units
        self.add_weight("kernel", (input_dim, 4 * u))
        self.add_weight("recurrent_kernel", (u, 4 * u), initializer="orthogonal")
        self.add_weight("bias", (4 * u,), initializer="zeros", regularizer="l2")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        gate = ops.activation(self.gate)
        z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
        i, f, g, o = (z[:, k * u : (k + 1) * u] for k in range(4))
        c = gate(f) * c + gate(i) * ops.tanh(g)
        h = gate(o) * ops.tanh(c)
        return h, [h, c]


class NotPortable(Elman):
    def step(self, ops, w, x, states):
        (h,) = states
        return ops.sigmoid(x @ w["kernel"]), [h]  # not in the array API standard


def _data(batch=3, time=5, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, time, features))
    mask = rng.random((batch, time)) < 0.6
    mask[-1] = False  # a fully masked row
    return x, mask


# -- the declaration API --------------------------------------------------------------------


def test_declarations_seeded_weights_and_configs():
    cell = KerasLSTM(3, gate="hard_sigmoid")
    names = [d.name for d in cell.declare(2)]
    assert names == ["kernel", "recurrent_kernel", "bias"]
    a, b = cell.initial_weights(2, seed=1), KerasLSTM(3, gate="x").initial_weights(2, seed=1)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    config = cells.cell_config(cell)
    again = cells.cell_from_config(json.loads(json.dumps(config)))
    assert type(again) is KerasLSTM and again.gate == "hard_sigmoid" and again.units == 3


def test_the_built_in_layers_initialise_like_a_cell_with_the_same_declarations():
    # weight i draws from default_rng([seed, i]) in both: one seed, the same numbers
    layer = multirnn.engine("numpy").SimpleRNN(3, seed=4, input_dim=2)
    for got, want in zip(Elman(3).initial_weights(2, seed=4), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: Elman(0), ValueError, "units must be a positive integer"),
        (lambda: Elman(2, units_extra=[1], build=1), ValueError, "'build' cannot be a cell"),
        (lambda: cells.cell_from_config({"class_name": "Nope"}), ValueError, "unknown cell"),
        (lambda: multirnn.engine("numpy").RNN(Elman(2), dropout=0.1), TypeError, "dropout"),
        (lambda: multirnn.engine("numpy").RNN("cell"), TypeError, "takes a multirnn.Cell"),
        (lambda: multirnn.engine("numpy").RNN(Elman(2), go_backwards=1), TypeError,
         "go_backwards must be True or False"),
    ],
)  # fmt: skip
def test_bad_cells_and_options_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_declarations_name_the_weight():
    class Twice(Elman):
        def build(self, input_dim):
            self.add_weight("kernel", (input_dim, self.units))
            self.add_weight("kernel", (input_dim, self.units))

    class BadInit(Elman):
        def build(self, input_dim):
            self.add_weight("kernel", (input_dim, 0))

    with pytest.raises(ValueError, match="'kernel' is declared twice"):
        Twice(2).declare(3)
    with pytest.raises(ValueError, match=r"add_weight\('kernel'\) shape"):
        BadInit(2).declare(3)
    with pytest.raises(RuntimeError, match="called from build"):
        Elman(2).add_weight("w", (1,))


def test_unregistered_cells_cannot_be_saved(tmp_path):
    class Local(Elman):
        pass

    layer = multirnn.engine("numpy").RNN(Local(2), input_dim=3)
    with pytest.raises(TypeError, match="register_cell"):
        multirnn.save(layer, tmp_path / "x.safetensors")


def test_the_portability_check_names_the_call():
    pytest.importorskip("array_api_strict")
    cells.check_portable(KerasLSTM(3, gate="sigmoid"))
    cells.check_portable(Elman(2))
    with pytest.raises(cells.CellNotPortable, match=r"ops\.sigmoid\(x @ w\[\"kernel\"\]\)"):
        cells.check_portable(NotPortable(2))


# -- the NumPy engine's RNN against the built-in layers ---------------------------------------

OPTIONS = [
    {},
    {"return_sequences": True, "go_backwards": True},
    {"return_sequences": True, "zero_output_for_mask": True},
    {"return_state": True, "go_backwards": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_numpy_rnn_equals_the_built_in_layers(options, masked):
    numpy = multirnn.engine("numpy")
    x, mask = _data()
    mask = mask if masked else None
    for cell, built_in in [
        (Elman(3), numpy.SimpleRNN(3, **options)),
        (KerasLSTM(3, gate="hard_sigmoid"), numpy.LSTM(3, unit_forget_bias=False, **options)),
    ]:
        layer = numpy.RNN(cell, seed=0, **options)
        layer.build(x.shape)
        built_in.set_weights(layer.get_weights())
        initial = [np.full((3, 3), 0.1 * (k + 1)) for k in range(len(cell.state_names))]
        got = layer(x, mask=mask, initial_state=initial)
        want = built_in(x, mask=mask, initial_state=initial)
        for g, w in zip(*(v if isinstance(v, list) else [v] for v in (got, want)), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-14)


def test_numpy_rnn_stateful_losses_and_files(tmp_path):
    numpy = multirnn.engine("numpy")
    x, mask = _data(time=6)
    whole = numpy.RNN(KerasLSTM(2, gate="sigmoid"), seed=1, return_sequences=True)
    stream = numpy.RNN(KerasLSTM(2, gate="sigmoid"), seed=1, return_sequences=True,
                       stateful=True)  # fmt: skip
    want = whole(x, mask=mask)
    got = np.concatenate([stream(x[:, :3], mask=mask[:, :3]), stream(x[:, 3:], mask=mask[:, 3:])],
                         axis=1)  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert len(stream.losses) == 1  # the bias's l2
    path = tmp_path / "cell.safetensors"
    multirnn.save(stream, path)
    loaded = multirnn.load(path, backend="numpy")
    np.testing.assert_array_equal(loaded.states[1], stream.states[1])
    np.testing.assert_array_equal(loaded(x[:, :2]), stream(x[:, :2]))


def test_a_step_returning_the_wrong_shape_is_named():
    class Wrong(Elman):
        def step(self, ops, w, x, states):
            return x, states

    with pytest.raises(ValueError, match=r"Wrong.step returned output of shape \(3, 4\)"):
        multirnn.engine("numpy").RNN(Wrong(2))(_data()[0])


# -- every engine against the NumPy one ----------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_every_engines_rnn_equals_the_numpy_one(eng, options):
    try:
        rnn = eng.RNN
    except AttributeError as exc:
        pytest.skip(str(exc))
    x, mask = _data()
    cell = KerasLSTM(3, gate="hard_sigmoid")
    want = multirnn.engine("numpy").RNN(cell, seed=2, **options)(x, mask=mask)
    layer = rnn(cell, seed=2, **options)
    got = multirnn.to_numpy(layer(x, mask=mask))
    for g, w in zip(*(v if isinstance(v, list) else [v] for v in (got, want)), strict=True):
        rtol = 1e-12 if g.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)
