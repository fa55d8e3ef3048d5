"""The reference computation against hand-derived numbers, and its options against their
definitions (docs/semantics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multirnn.reference.kernels import forward
from multirnn.spec import parse

from ..cases import VARIANTS, variant_id


def spec(layer, units=1, **kwargs):
    kwargs.setdefault("dtype", "float64")
    return parse(layer, (units,), kwargs)


def hsig(v):
    return min(1.0, max(0.0, 0.2 * v + 0.5))


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


X = np.array([[[1.0], [2.0], [-0.5]]])  # batch 1, time 3, one feature

# -- hand-derived single-unit cases ---------------------------------------------------------


def test_simple_rnn_by_hand():
    w, u, b = 0.5, 0.3, 0.1
    weights = [np.array([[w]]), np.array([[u]]), np.array([b])]
    out, (h,) = forward(spec("SimpleRNN", return_sequences=True), weights, X)
    hs, prev = [], 0.0
    for x in (1.0, 2.0, -0.5):
        prev = math.tanh(w * x + u * prev + b)
        hs.append(prev)
    np.testing.assert_allclose(out[0, :, 0], hs, rtol=1e-15)
    assert h[0, 0] == pytest.approx(hs[-1], rel=1e-15)


LSTM_W = [0.5, -0.4, 0.3, 0.8]  # gate order i, f, c, o
LSTM_U = [0.2, 0.1, -0.6, 0.4]
LSTM_B = [0.05, 1.0, -0.1, 0.2]


def lstm_by_hand(xs, ract, h=0.0, c=0.0):
    hs = []
    for x in xs:
        z = [LSTM_W[k] * x + LSTM_U[k] * h + LSTM_B[k] for k in range(4)]
        i, f, o = ract(z[0]), ract(z[1]), ract(z[3])
        c = f * c + i * math.tanh(z[2])
        h = o * math.tanh(c)
        hs.append(h)
    return hs, h, c


def lstm_weights():
    return [np.array([LSTM_W]), np.array([LSTM_U]), np.array(LSTM_B)]


@pytest.mark.parametrize("ract_name,ract", [("hard_sigmoid", hsig), ("sigmoid", sig)])
def test_lstm_by_hand(ract_name, ract):
    s = spec("LSTM", recurrent_activation=ract_name, return_sequences=True)
    out, (h, c) = forward(s, lstm_weights(), X)
    hs, h_want, c_want = lstm_by_hand((1.0, 2.0, -0.5), ract)
    np.testing.assert_allclose(out[0, :, 0], hs, rtol=1e-14)
    np.testing.assert_allclose([h[0, 0], c[0, 0]], [h_want, c_want], rtol=1e-14)


GRU_W = [0.5, -0.3, 0.9]  # gate order z, r, h
GRU_U = [0.4, 0.7, -0.8]
GRU_BI = [0.1, -0.2, 0.3]
GRU_BR = [-0.05, 0.15, 0.25]


def gru_by_hand(xs, reset_after, h=0.0, rec_mask=(1.0, 1.0, 1.0)):
    hs = []
    for x in xs:
        hz, hr, hh_in = (h * m for m in rec_mask)
        if reset_after:
            z = hsig(GRU_W[0] * x + GRU_BI[0] + GRU_U[0] * hz + GRU_BR[0])
            r = hsig(GRU_W[1] * x + GRU_BI[1] + GRU_U[1] * hr + GRU_BR[1])
            hh = math.tanh(GRU_W[2] * x + GRU_BI[2] + r * (GRU_U[2] * hh_in + GRU_BR[2]))
        else:
            z = hsig(GRU_W[0] * x + GRU_U[0] * hz + GRU_BI[0])
            r = hsig(GRU_W[1] * x + GRU_U[1] * hr + GRU_BI[1])
            hh = math.tanh(GRU_W[2] * x + GRU_BI[2] + (r * hh_in) * GRU_U[2])
        h = z * h + (1 - z) * hh  # the blend always uses the undropped state
        hs.append(h)
    return hs


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_by_hand(reset_after):
    bias = np.array([GRU_BI, GRU_BR]) if reset_after else np.array(GRU_BI)
    weights = [np.array([GRU_W]), np.array([GRU_U]), bias]
    s = spec("GRU", reset_after=reset_after, return_sequences=True)
    out, (_h,) = forward(s, weights, X)
    np.testing.assert_allclose(out[0, :, 0], gru_by_hand((1.0, 2.0, -0.5), reset_after), 1e-14)


def test_gru_variants_differ_with_more_than_one_unit():
    # With one unit r * (h U) == (r * h) U, so the two forms differ only from two units on.
    s, w, x = random_case("GRU", {}, units=2)
    after = forward(s.replace(reset_after=True), [*w[:2], np.stack([w[2], 0 * w[2]])], x)[0]
    assert not np.allclose(after, forward(s, w, x)[0])


@pytest.mark.parametrize("implementation", [0, 1, 2])
@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_recurrent_dropout_by_hand(implementation, reset_after):
    """Per-gate recurrent masks multiply h where it enters each product, never the blend."""
    bias = np.array([GRU_BI, GRU_BR]) if reset_after else np.array(GRU_BI)
    weights = [np.array([GRU_W]), np.array([GRU_U]), bias]
    s = spec("GRU", reset_after=reset_after, return_sequences=True, implementation=implementation)
    masks = (2.0, 0.0, 2.0)
    rec = np.array(masks).reshape(3, 1, 1)
    out, _ = forward(s, weights, X, recurrent_dropout=rec)
    want = gru_by_hand((1.0, 2.0, -0.5), reset_after, rec_mask=masks)
    np.testing.assert_allclose(out[0, :, 0], want, rtol=1e-14)


def test_lstm_recurrent_dropout_never_touches_c():
    s = spec("LSTM", return_sequences=True)
    zero = np.zeros((1, 1))  # the recurrent products vanish, c still carries
    out, (_h, c) = forward(s, lstm_weights(), X, recurrent_dropout=zero)
    c_val, hs = 0.0, []
    for x in (1.0, 2.0, -0.5):
        z = [LSTM_W[k] * x + LSTM_B[k] for k in range(4)]
        c_val = hsig(z[1]) * c_val + hsig(z[0]) * math.tanh(z[2])
        hs.append(hsig(z[3]) * math.tanh(c_val))
    np.testing.assert_allclose(out[0, :, 0], hs, rtol=1e-14)
    assert c[0, 0] == pytest.approx(c_val, rel=1e-14)


# -- options --------------------------------------------------------------------------------

RNG = np.random.default_rng(1234)


def random_case(layer, kwargs, units=3, input_dim=4, batch=3, time=5):
    s = spec(layer, units, return_sequences=True, return_state=True, **kwargs)
    shapes = s.weight_shapes(input_dim)
    weights = [RNG.standard_normal(shape) * 0.5 for shape in shapes.values()]
    x = RNG.standard_normal((batch, time, input_dim))
    return s, weights, x


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_implementations_and_unroll_agree(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    base, base_states = forward(s, w, x)
    for changes in ({"implementation": 1}, {"implementation": 2}, {"unroll": True}):
        out, states = forward(s.replace(**changes), w, x)
        np.testing.assert_allclose(out, base, rtol=1e-13, atol=1e-14)
        for a, b in zip(states, base_states):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_implementations_agree_under_shared_dropout_masks(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    mi = (RNG.random((3, 4)) > 0.3) / 0.7
    mr = (RNG.random((3, 3)) > 0.3) / 0.7
    outs = [
        forward(s.replace(implementation=i), w, x, input_dropout=mi, recurrent_dropout=mr)[0]
        for i in (0, 1, 2)
    ]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-13, atol=1e-14)
    assert not np.allclose(outs[0], forward(s, w, x)[0])


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_per_gate_input_mask_equals_zeroed_kernel_block(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    units, gates = s.units, s.gates
    per_gate = np.ones((gates, 3, 4))
    per_gate[gates - 1] = 0.0  # drop the inputs of the last gate entirely
    dropped = forward(s, w, x, input_dropout=per_gate)[0]
    w2 = [a.copy() for a in w]
    w2[0][:, (gates - 1) * units :] = 0.0
    np.testing.assert_allclose(dropped, forward(s, w2, x)[0], rtol=1e-13)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_go_backwards_processes_the_reversed_sequence(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    back, back_states = forward(s.replace(go_backwards=True), w, x)
    fwd, fwd_states = forward(s, w, x[:, ::-1].copy())
    np.testing.assert_array_equal(back, fwd)  # outputs stay in processing order
    for a, b in zip(back_states, fwd_states):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_return_sequences_false_gives_last_step(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    seq, states = forward(s, w, x)
    last, _ = forward(s.replace(return_sequences=False), w, x)
    np.testing.assert_array_equal(last, seq[:, -1])
    np.testing.assert_array_equal(states[0], seq[:, -1])  # h is the output


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_initial_state_is_used(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    init = [RNG.standard_normal((3, 3)) for _ in range(s.num_states)]
    with_init, _ = forward(s, w, x, initial_state=init)
    # Running the first step with zeros from a one-step prefix is not the same function.
    assert not np.allclose(with_init, forward(s, w, x)[0])
    # Splitting a sequence and feeding the states forward equals one run.
    first, states = forward(s, w, x[:, :2], initial_state=init)
    second, final = forward(s, w, x[:, 2:], initial_state=states)
    np.testing.assert_allclose(np.concatenate([first, second], 1), with_init, rtol=1e-14)
    np.testing.assert_allclose(final[0], with_init[:, -1], rtol=1e-14)


# -- masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_mask_carries_states_and_repeats_outputs(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs, batch=4, time=6)
    mask = np.array(
        [
            [True] * 6,  # no masking
            [True, True, True, False, False, False],  # right padded
            [False, True, False, True, True, False],  # arbitrary, starts masked
            [False] * 6,  # fully masked row
        ]
    )
    init = [RNG.standard_normal((4, 3)) for _ in range(s.num_states)]
    out, states = forward(s, w, x, mask=mask, initial_state=init)
    # Row 0 equals the unmasked computation.
    np.testing.assert_allclose(out[0], forward(s, w, x, initial_state=init)[0][0], rtol=1e-14)
    # Row 1 equals running only its valid prefix; padded outputs repeat the last valid one.
    prefix, prefix_states = forward(s, w, x[1:2, :3], initial_state=[i[1:2] for i in init])
    np.testing.assert_allclose(out[1, :3], prefix[0], rtol=1e-14)
    for t in (3, 4, 5):
        np.testing.assert_array_equal(out[1, t], out[1, 2])
    for got, want in zip(states, prefix_states):
        np.testing.assert_allclose(got[1], want[0], rtol=1e-14)
    # Row 2 equals running only its unmasked steps, zeros before the first one.
    valid = [1, 3, 4]
    sub, sub_states = forward(s, w, x[2:3, valid], initial_state=[i[2:3] for i in init])
    np.testing.assert_array_equal(out[2, 0], np.zeros(3))
    np.testing.assert_allclose(out[2, [1, 3, 4]], sub[0], rtol=1e-14)
    np.testing.assert_array_equal(out[2, 2], out[2, 1])
    np.testing.assert_array_equal(out[2, 5], out[2, 4])
    for got, want in zip(states, sub_states):
        np.testing.assert_allclose(got[2], want[0], rtol=1e-14)
    # Row 3: fully masked - zero outputs, states unchanged.
    np.testing.assert_array_equal(out[3], np.zeros((6, 3)))
    for got, start in zip(states, init):
        np.testing.assert_array_equal(got[3], start[3])


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_zero_output_for_mask(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    mask = np.ones((3, 5), bool)
    mask[0, 2] = mask[1, 4] = False
    carried, states = forward(s, w, x, mask=mask)
    zeroed, zstates = forward(s.replace(zero_output_for_mask=True), w, x, mask=mask)
    np.testing.assert_array_equal(zeroed[0, 2], 0.0)
    np.testing.assert_array_equal(zeroed[1, 4], 0.0)
    np.testing.assert_array_equal(carried[0, 2], carried[0, 1])
    keep = mask[:, :, None]
    np.testing.assert_array_equal(np.where(keep, zeroed, 0), np.where(keep, carried, 0))
    for a, b in zip(states, zstates):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_mask_is_reversed_with_the_inputs(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    mask = RNG.random((3, 5)) > 0.4
    back, _ = forward(s.replace(go_backwards=True), w, x, mask=mask)
    fwd, _ = forward(s, w, x[:, ::-1].copy(), mask=mask[:, ::-1].copy())
    np.testing.assert_array_equal(back, fwd)


# -- float32 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_float32_close_to_float64(variant):
    layer, kwargs = variant
    s, w, x = random_case(layer, kwargs)
    out64, _ = forward(s, w, x)
    s32 = s.replace(dtype="float32")
    out32, states32 = forward(s32, [a.astype(np.float32) for a in w], x.astype(np.float32))
    assert out32.dtype == np.float32 and states32[0].dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)


# -- bad input --------------------------------------------------------------------------------


def test_functional_entry_validates_everything():
    s, w, x = random_case("LSTM", {})
    with pytest.raises(ValueError, match=r"inputs must be 3-D \(batch, time, features\)"):
        forward(s, w, x[0])
    with pytest.raises(TypeError, match=r"inputs must be floating-point data .* integers"):
        forward(s, w, x.astype(np.int64))
    with pytest.raises(ValueError, match="inputs have 3 features .* built for input_dim=4"):
        forward(s, w, x[:, :, :3])
    with pytest.raises(ValueError, match="at least one time step"):
        forward(s, w, x[:, :0])
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        forward(s, w, x, mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, time\) = \(3, 5\)"):
        forward(s, w, x, mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"initial_state must be a list of 2 array\(s\) \[h, c\]"):
        forward(s, w, x, initial_state=[np.zeros((3, 3))])
    with pytest.raises(ValueError, match="initial_state state 'c' must have shape"):
        forward(s, w, x, initial_state=[np.zeros((3, 3)), np.zeros((2, 3))])
    with pytest.raises(
        ValueError, match=r"input_dropout must have shape \(3, 4\) .* or \(4, 3, 4\)"
    ):
        forward(s, w, x, input_dropout=np.ones((3, 3)))
    with pytest.raises(ValueError, match="LSTM.* has 3 weights"):
        forward(s, w[:2], x)
