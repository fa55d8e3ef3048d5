"""The case generator: ids round-trip, the quick grid covers every dimension, data is
deterministic and float32-representable."""

from __future__ import annotations

import numpy as np
import pytest

from multirnn import activations
from multirnn.conformance.cases import (
    BIDIRECTIONAL,
    MASKS,
    Case,
    CaseError,
    full_cases,
    hypothesis_cases,
    quick_cases,
)
from multirnn.spec import parse

QUICK = quick_cases()


def test_ids_round_trip_and_are_unique():
    assert len({c.id for c in QUICK}) == len(QUICK)
    for case in QUICK + hypothesis_cases(40):
        assert Case.from_id(case.id) == case


def test_bad_ids():
    with pytest.raises(ValueError, match="not a case id"):
        Case.from_id("LSTM")
    with pytest.raises(ValueError, match="unknown case field 'colour'"):
        Case.from_id("LSTM(colour=red)")
    with pytest.raises(ValueError, match="mask must be one of"):
        Case.from_id("GRU(mask=sometimes)")


@pytest.mark.parametrize(
    "text,message",
    [
        # each of these ran, or ended in a traceback from deep inside a run
        ("LSTM(units=0)", "case field units must be a positive integer, got 0"),
        ("LSTM(units=two)", "case field units must be a positive integer, got 'two'"),
        ("GRU(time=-1)", "case field time must be a positive integer, got -1"),
        ("LSTM(go_backwards=maybe)", "case field go_backwards must be True or False, got 'maybe'"),
        ("LSTM(go_backwards=true)", "case field go_backwards must be True or False, got 'true'"),
        # ran as dropout=True: the field says whether explicit masks are fed, it is no rate
        (
            "LSTM(dropout=2.0)",
            "case field dropout must be True or False (True: explicit "
            "dropout masks at both rates 0.5), got '2.0'",
        ),
        ("LSTM(seed=-1)", "case field seed must be an integer >= 0, got -1"),
        ("Foo()", "unknown layer 'Foo'; a case is SimpleRNN(...), LSTM(...), GRU(...)"),
        ("LSTM(unit=3)", "unknown case field 'unit'. Did you mean 'units'? Case fields: units,"),
        ("LSTM(family=x)", "unknown case field 'family'"),
        ("LSTM(units)", "expected key=value in a case id, got 'units'"),
        ("LSTM(units=2,units=3)", "case field units given twice"),
        # the id said so, the run ignored it
        ("LSTM(reset_after=True)", "case field reset_after applies to GRU only, not LSTM"),
        ("SimpleRNN(recurrent_activation=sigmoid)", "SimpleRNN has no recurrent_activation"),
        ("GRU(activation=None)", "case field activation must be an activation name"),
    ],
)
def test_bad_case_values_are_refused_naming_the_field_and_what_is_accepted(text, message):
    with pytest.raises(CaseError) as info:
        Case.from_id(text)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "text,arguments",
    [
        ("LSTM(activation=foo)", {"activation": "foo"}),
        ("GRU(recurrent_activation=hardsigmoid)", {"recurrent_activation": "hardsigmoid"}),
        ("SimpleRNN(implementation=3)", {"implementation": 3}),
    ],
)
def test_case_layer_arguments_go_through_the_layers_own_validation(text, arguments):
    layer = text.split("(")[0]
    with pytest.raises((TypeError, ValueError)) as spec_error:
        parse(layer, (3,), arguments, warn=False)
    with pytest.raises(CaseError) as case_error:
        Case.from_id(text)
    assert str(case_error.value) == str(spec_error.value)


def test_cases_built_in_code_are_checked_like_ids():
    with pytest.raises(CaseError, match="case field dropout must be True or False"):
        Case("LSTM", dropout=0.2)
    with pytest.raises(CaseError, match="case field units must be a positive integer, got True"):
        Case("GRU", units=True)
    with pytest.raises(CaseError, match="case field activation must be a string"):
        Case("GRU", activation=np.tanh)
    with pytest.raises(CaseError, match="unknown layer 'lstm'"):
        Case("lstm")


def test_valid_ids_keep_their_meaning():
    assert Case.from_id("LSTM(units=2, time=3)") == Case("LSTM", units=2, time=3)
    assert Case.from_id("LSTM(units=3)") == Case("LSTM")  # the default, spelled out
    assert Case.from_id("SimpleRNN(recurrent_activation=None)") == Case("SimpleRNN")
    assert Case.from_id("LSTM(recurrent_activation=None)").recurrent_activation is None
    assert Case.from_id("GRU(reset_after=True)").reset_after is True


@pytest.mark.parametrize(
    "field,values",
    [
        ("layer", {"SimpleRNN", "LSTM", "GRU"}),
        ("units", {1}),
        ("time", {1, 64}),
        ("batch", {1}),
        ("activation", set(activations.NAMES)),
        ("recurrent_activation", set(activations.NAMES)),
        ("use_bias", {True, False}),
        ("return_sequences", {True, False}),
        ("return_state", {True, False}),
        ("go_backwards", {True, False}),
        ("initial_state", {True, False}),
        ("mask", set(MASKS)),
        ("stateful", {True, False}),
        ("unroll", {True, False}),
        ("implementation", {0, 1, 2}),
        ("reset_after", {True, False}),
        ("dropout", {True, False}),
        ("zero_output_for_mask", {True, False}),
        ("bidirectional", set(BIDIRECTIONAL)),
    ],
)
def test_quick_grid_covers_every_dimension(field, values):
    for layer in (
        ("SimpleRNN", "LSTM", "GRU") if field not in ("layer", "reset_after") else ("GRU",)
    ):
        if field == "recurrent_activation" and layer == "SimpleRNN":
            continue
        seen = {getattr(c, field) for c in QUICK if field == "layer" or c.layer == layer}
        assert values <= seen, (layer, field, values - seen)


def test_data_is_deterministic_and_float32_representable():
    case = Case("LSTM", mask="arbitrary", initial_state=True, dropout=True, implementation=1)
    a, b = case.data(), case.data()
    for x, y in zip(
        [*a.weights, a.inputs, *a.initial_state], [*b.weights, b.inputs, *b.initial_state]
    ):
        np.testing.assert_array_equal(x, y)
        assert np.array_equal(x.astype(np.float32).astype(np.float64), x)
    assert a.input_dropout.shape == (4, 2, 2) and a.recurrent_dropout.shape == (4, 2, 3)
    assert set(np.unique(a.input_dropout)) <= {0.0, 2.0}  # float32-representable too
    shared = Case("LSTM", dropout=True, implementation=2).data()
    assert shared.input_dropout.shape == (2, 2)


def test_masks_have_their_kind():
    for kind in MASKS[1:]:
        mask = Case("GRU", batch=4, time=6, mask=kind, seed=3).data().mask
        assert mask.dtype == bool and mask.shape == (4, 6)
        if kind == "right_padded":
            assert all(np.all(np.diff(row.astype(int)) <= 0) for row in mask) and mask[0].all()
        if kind == "fully_masked_rows":
            assert not mask[0].any()


def test_stateful_cases_reject_options_they_cannot_honour():
    with pytest.raises(ValueError, match="initial_state and explicit dropout masks must be off"):
        Case("LSTM", stateful=True, dropout=True)


def test_bidirectional_cases_reject_options_they_cannot_honour():
    with pytest.raises(ValueError, match="stateful and explicit dropout masks must be off"):
        Case("GRU", bidirectional="sum", dropout=True)
    with pytest.raises(ValueError, match="case bidirectional must be one of"):
        Case("GRU", bidirectional="max")


def test_bidirectional_cases_carry_both_directions():
    case = Case("LSTM", bidirectional="none", initial_state=True)
    data = case.data()
    assert len(data.weights) == 6 and len(data.initial_state) == 4
    assert [c.shape for c in data.cotangents] == [(2, 4, 3)] * 2 + [(2, 3)] * 4
    assert Case.from_id(case.id) == case and case.merge_mode is None
    assert Case("GRU", bidirectional="concat").data().cotangents[0].shape == (2, 4, 6)


def test_stateful_cases_have_a_call_sequence_with_resets():
    data = Case("LSTM", stateful=True).data()
    assert [c.reset if isinstance(c.reset, (str, type(None))) else "given" for c in data.calls] == [
        None,
        None,
        "zeros",
        "given",
    ]


def test_hypothesis_cases_are_deterministic_and_varied():
    first, again = hypothesis_cases(100, seed=1), hypothesis_cases(100, seed=1)
    assert first == again
    assert {c.layer for c in first} == {"SimpleRNN", "LSTM", "GRU"}
    assert len({c.mask for c in first}) == 4
    assert len(full_cases(10)) == len(QUICK) + 10
