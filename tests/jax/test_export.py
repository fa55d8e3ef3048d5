"""``jax.export`` with symbolic batch and time: every path of the JAX engine exports once
and the exported program, serialized and loaded back, gives the eager numbers on other
batch sizes and sequence lengths than any it was traced with."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax import export  # noqa: E402
from multirnn_jax import layers  # noqa: E402
from multirnn_jax.layers import GRU, LSTM, Bidirectional  # noqa: E402

from ..test_rnn import layers_per_path  # noqa: E402

FEATURES = 5

LAYERS = layers_per_path(layers) | {
    "GRU reset_after": lambda **kw: GRU(8, reset_after=True, **kw),
}


def data(batch, time, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((batch, time, FEATURES)), jnp.float32)


def exported(function, *args):
    """``function`` exported with batch ``b`` and time ``t`` symbolic, through its bytes."""
    b, t = export.symbolic_shape("b, t")
    spec = [jax.ShapeDtypeStruct((b, t, FEATURES), jnp.float32) if a is None else a for a in args]
    program = export.export(jax.jit(function))(*spec)
    return export.deserialize(program.serialize())


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("options", [{}, {"return_sequences": True, "return_state": True,
                                          "go_backwards": True}], ids=["last", "all"])  # fmt: skip
def test_a_layer_exports_with_symbolic_batch_and_time(name, options):
    with jax.enable_x64(False):
        layer = LAYERS[name](input_dim=FEATURES, seed=0, dtype="float32", **options)
        program = exported(lambda layer, x: layer(x), layer, None)
        for batch, time in ((3, 7), (1, 2), (4, 11)):
            x = data(batch, time)
            got, want = program.call(layer, x), layer(x)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["LSTM documented defaults", "RNN(user cell)"])
def test_masks_and_initial_states_are_inputs_of_the_exported_program(name):
    with jax.enable_x64(False):
        layer = LAYERS[name](input_dim=FEATURES, seed=0, dtype="float32", return_sequences=True)
        b, t = export.symbolic_shape("b, t")
        states = [jax.ShapeDtypeStruct((b, 8), jnp.float32)] * len(layer.spec.state_names)
        program = export.export(jax.jit(lambda layer, x, m, s: layer(x, mask=m, initial_state=s)))(
            layer, jax.ShapeDtypeStruct((b, t, FEATURES), jnp.float32),
            jax.ShapeDtypeStruct((b, t), jnp.bool_), states,
        )  # fmt: skip
        for batch, time in ((3, 6), (2, 9)):
            x = data(batch, time)
            mask = jnp.asarray(np.random.default_rng(1).random((batch, time)) > 0.3)
            h0 = [jnp.full((batch, 8), 0.1 * (i + 1), jnp.float32) for i in range(len(states))]
            np.testing.assert_allclose(
                program.call(layer, x, mask, h0), layer(x, mask=mask, initial_state=h0),
                rtol=1e-6, atol=1e-6,
            )  # fmt: skip


def test_bidirectional_exports_with_symbolic_batch_and_time():
    with jax.enable_x64(False):
        wrapper = Bidirectional(GRU(4, input_dim=FEATURES, seed=0, dtype="float32"))
        program = exported(lambda x: wrapper(x), None)  # the weights are the program's constants
        x = data(5, 8)
        np.testing.assert_allclose(program.call(x), wrapper(x), rtol=1e-6, atol=1e-6)


def test_the_exported_step_streams_like_one_call_over_the_sequence():
    """A streaming deployment: the exported program is one step (inputs and states in,
    output and states out); fed the sequence a step at a time it equals one call."""
    with jax.enable_x64(False):
        layer = LSTM(8, input_dim=FEATURES, seed=0, dtype="float32", stateful=True)
        b = export.symbolic_shape("b")[0]
        states = [jax.ShapeDtypeStruct((b, 8), jnp.float32)] * 2
        step = export.export(jax.jit(lambda layer, x, s: layer.apply(x, states=s)))(
            layer, jax.ShapeDtypeStruct((b, 1, FEATURES), jnp.float32), states
        )
        x = data(3, 9)
        carried = [jnp.zeros((3, 8), jnp.float32)] * 2
        outputs = []
        for t in range(x.shape[1]):
            output, carried = step.call(layer, x[:, t : t + 1], carried)
            outputs.append(output)
        whole, final = layer.apply(x)
        np.testing.assert_allclose(outputs[-1], whole, rtol=1e-6, atol=1e-6)
        for got, want in zip(carried, final, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_layer_whose_config_has_a_python_callable_says_why_it_cannot_be_serialized():
    with jax.enable_x64(False):
        layer = LSTM(3, input_dim=FEATURES, activation=jnp.tanh, dtype="float32")
        program = export.export(jax.jit(lambda layer, x: layer(x)))(layer, data(2, 3))
        with pytest.raises(TypeError, match="activation is the Python callable"):
            program.serialize()
        # closed over, its weights and callable are the program's own: that one serializes
        closed = export.export(jax.jit(lambda x: layer(x)))(data(2, 3))
        x = data(2, 3, seed=1)
        again = export.deserialize(closed.serialize())
        np.testing.assert_allclose(again.call(x), layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_float16"])
def test_low_precision_layers_export_with_symbolic_shapes(dtype):
    layer = GRU(8, input_dim=5, seed=0, dtype=dtype)
    low = jnp.bfloat16 if dtype == "bfloat16" else jnp.float16
    b, t = export.symbolic_shape("b, t")
    program = export.export(jax.jit(lambda layer, x: layer(x)))(
        layer, jax.ShapeDtypeStruct((b, t, 5), low)
    )
    again = export.deserialize(program.serialize())
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 9, 5)), low)
    np.testing.assert_array_equal(again.call(layer, x), layer(x))
