"""Every documented argument: its default, accepted values, and the error for bad ones."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from multirnn import constraints, initializers, regularizers, spec
from multirnn.spec import parse

from .cases import LAYERS


def build(layer, *args, **kwargs):
    return parse(layer, args, kwargs)


# -- defaults -----------------------------------------------------------------------------


def test_documented_defaults_lstm():
    s = build("LSTM", 8)
    assert s.units == 8
    assert s.activation == "tanh"
    assert s.recurrent_activation == "hard_sigmoid"
    assert s.use_bias is True
    assert s.kernel_initializer == initializers.GlorotUniform()
    assert s.recurrent_initializer == initializers.Orthogonal()
    assert s.bias_initializer == initializers.Zeros()
    assert s.unit_forget_bias is True
    for key in ("kernel", "recurrent", "bias", "activity"):
        assert getattr(s, f"{key}_regularizer") is None
    for key in ("kernel", "recurrent", "bias"):
        assert getattr(s, f"{key}_constraint") is None
    assert (s.dropout, s.recurrent_dropout) == (0.0, 0.0)
    assert not (s.return_sequences or s.return_state or s.go_backwards or s.stateful or s.unroll)
    assert s.implementation == 0
    assert s.zero_output_for_mask is False
    assert (s.seed, s.dtype, s.input_dim, s.name) == (None, None, None, None)


def test_documented_defaults_gru_and_simple_rnn():
    g = build("GRU", 3)
    assert g.recurrent_activation == "hard_sigmoid"
    assert g.reset_after is False
    assert g.unit_forget_bias is False
    r = build("SimpleRNN", 3)
    assert r.activation == "tanh"
    assert r.recurrent_activation is None


def test_positional_arguments_follow_the_documented_order():
    s = build("LSTM", 4, "relu", "sigmoid", False)
    assert (s.activation, s.recurrent_activation, s.use_bias) == ("relu", "sigmoid", False)
    r = build("SimpleRNN", 4, "relu", False)
    assert (r.activation, r.use_bias) == ("relu", False)


def test_too_many_positional_arguments():
    with pytest.raises(TypeError, match="at most 15 positional"):
        build("SimpleRNN", *([1] * 16))


def test_argument_given_twice():
    with pytest.raises(TypeError, match="multiple values for argument 'activation'"):
        build("LSTM", 4, "tanh", activation="relu")


def test_keywords_are_what_each_layer_documents():
    assert "recurrent_activation" not in spec.keywords("SimpleRNN")
    assert "unit_forget_bias" in spec.keywords("LSTM")
    assert "unit_forget_bias" not in spec.keywords("GRU")
    assert "reset_after" in spec.keywords("GRU")
    assert "reset_after" not in spec.keywords("LSTM")


# -- units --------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("units", [1, 7, np.int64(5)])
def test_units_valid(layer, units):
    assert build(layer, units).units == int(units)


@pytest.mark.parametrize("units", [0, -3, 2.0, 2.5, "4", True, None, [4]])
def test_units_invalid(units):
    with pytest.raises(ValueError, match="units must be a positive integer, got"):
        build("LSTM", units)


def test_units_missing():
    with pytest.raises(TypeError, match="missing required argument 'units'"):
        build("GRU")


# -- activations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "tanh",
        "sigmoid",
        "hard_sigmoid",
        "hard_sigmoid_relu6",
        "relu",
        "linear",
        "softsign",
        "softplus",
        "elu",
        "selu",
    ],
)
@pytest.mark.parametrize("arg", ["activation", "recurrent_activation"])
def test_activation_names(name, arg):
    assert getattr(build("LSTM", 2, **{arg: name}), arg) == name


def test_activation_none_is_linear():
    assert build("SimpleRNN", 2, activation=None).activation == "linear"


def test_activation_callable_is_kept():
    def fn(x):
        return x

    assert build("GRU", 2, recurrent_activation=fn).recurrent_activation is fn


def test_unknown_activation_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown activation 'tahn'.*Did you mean 'tanh'"):
        build("LSTM", 2, activation="tahn")


def test_hardsigmoid_spelling_explains_the_two_meanings():
    with pytest.raises(ValueError, match="hard_sigmoid_relu6"):
        build("LSTM", 2, recurrent_activation="hardsigmoid")


def test_activation_wrong_type():
    with pytest.raises(TypeError, match="activation must be an activation name"):
        build("LSTM", 2, activation=3)


def test_simple_rnn_has_no_recurrent_activation():
    with pytest.raises(TypeError, match="unexpected keyword argument 'recurrent_activation'"):
        build("SimpleRNN", 2, recurrent_activation="sigmoid")


# -- booleans -----------------------------------------------------------------------------

BOOLEANS = (
    "use_bias",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "zero_output_for_mask",
)


@pytest.mark.parametrize("arg", BOOLEANS)
@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_booleans_valid(arg, value):
    assert getattr(build("LSTM", 2, **{arg: value}), arg) is bool(value)


@pytest.mark.parametrize("arg", [*BOOLEANS, "unit_forget_bias"])
@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_booleans_reject_non_booleans(arg, value):
    with pytest.raises(TypeError, match=f"{arg} must be True or False, got"):
        build("LSTM", 2, **{arg: value})


def test_reset_after_valid_and_invalid():
    assert build("GRU", 2, reset_after=True).reset_after is True
    with pytest.raises(TypeError, match="reset_after must be True or False"):
        build("GRU", 2, reset_after="yes")
    with pytest.raises(TypeError, match="unexpected keyword argument 'reset_after'"):
        build("LSTM", 2, reset_after=True)


# -- dropout, implementation --------------------------------------------------------------


@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999, np.float32(0.25)])
def test_dropout_valid(arg, value):
    assert getattr(build("GRU", 2, **{arg: value}), arg) == pytest.approx(float(value))


@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [1.0, 1, -0.1, 2.0, float("nan"), float("inf")])
def test_dropout_out_of_range(arg, value):
    with pytest.raises(ValueError, match=rf"{arg} must be in \[0, 1\), got"):
        build("GRU", 2, **{arg: value})


@pytest.mark.parametrize("value", ["0.5", None, True])
def test_dropout_wrong_type(value):
    with pytest.raises(TypeError, match=r"dropout must be a float in \[0, 1\)"):
        build("GRU", 2, dropout=value)


@pytest.mark.parametrize("value", [0, 1, 2])
def test_implementation_valid(value):
    assert build("LSTM", 2, implementation=value).implementation == value


@pytest.mark.parametrize("value", [3, -1, 1.0, "2", True, None])
def test_implementation_invalid(value):
    with pytest.raises(ValueError, match="implementation must be 0, 1 or 2, got"):
        build("LSTM", 2, implementation=value)


# -- initializers, regularizers, constraints ----------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("glorot_uniform", initializers.GlorotUniform()),
        ("GlorotNormal", initializers.GlorotNormal()),
        ("he_normal", initializers.HeNormal()),
        ("lecun_uniform", initializers.LecunUniform()),
        ("orthogonal", initializers.Orthogonal()),
        ("identity", initializers.Identity()),
        ("ones", initializers.Ones()),
        ("zero", initializers.Zeros()),
        ({"class_name": "Constant", "config": {"value": 0.5}}, initializers.Constant(0.5)),
        (
            {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_out"}},
            initializers.VarianceScaling(2.0, "fan_out"),
        ),
        (initializers.RandomNormal(stddev=0.1, seed=3), initializers.RandomNormal(0.0, 0.1, 3)),
    ],
)
def test_initializer_forms(value, expected):
    assert build("LSTM", 2, kernel_initializer=value).kernel_initializer == expected


@pytest.mark.parametrize("arg", ["kernel_initializer", "recurrent_initializer", "bias_initializer"])
def test_unknown_initializer(arg):
    with pytest.raises(ValueError, match=rf"unknown initializer 'glorot_unifrom' for {arg}"):
        build("GRU", 2, **{arg: "glorot_unifrom"})


def test_initializer_bad_forms():
    with pytest.raises(TypeError, match="cannot be None"):
        build("GRU", 2, kernel_initializer=None)
    with pytest.raises(TypeError, match="kernel_initializer must be"):
        build("GRU", 2, kernel_initializer=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) stdev; accepted: mean, stddev"):
        build("GRU", 2, kernel_initializer={"class_name": "RandomNormal", "config": {"stdev": 1}})
    with pytest.raises(ValueError, match="unknown initializer class 'Glorot'"):
        build("GRU", 2, kernel_initializer={"class_name": "Glorot", "config": {}})
    with pytest.raises(ValueError, match="must look like"):
        build("GRU", 2, kernel_initializer={"name": "ones"})
    with pytest.raises(ValueError, match="mode must be one of"):
        initializers.VarianceScaling(mode="fan")


@pytest.mark.parametrize(
    "value,l1,l2",
    [
        ("l1", 0.01, 0.0),
        ("l2", 0.0, 0.01),
        ("l1_l2", 0.01, 0.01),
        (regularizers.l2(0.5), 0.0, 0.5),
        ({"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}}, 0.1, 0.2),
    ],
)
@pytest.mark.parametrize("key", ["kernel", "recurrent", "bias", "activity"])
def test_regularizer_forms(value, l1, l2, key):
    reg = getattr(build("LSTM", 2, **{f"{key}_regularizer": value}), f"{key}_regularizer")
    assert (reg.l1, reg.l2) == (l1, l2)


def test_regularizer_invalid():
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        build("LSTM", 2, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="l1 must be a finite number >= 0"):
        build("LSTM", 2, kernel_regularizer={"class_name": "L1", "config": {"l1": -1}})
    with pytest.raises(TypeError, match="bias_regularizer must be"):
        build("LSTM", 2, bias_regularizer=0.01)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("max_norm", constraints.MaxNorm(2, 0)),
        ("non_neg", constraints.NonNeg()),
        ("unit_norm", constraints.UnitNorm()),
        ("min_max_norm", constraints.MinMaxNorm(0.0, 1.0, 1.0, 0)),
        ({"class_name": "MaxNorm", "config": {"max_value": 3}}, constraints.MaxNorm(3)),
    ],
)
@pytest.mark.parametrize("key", ["kernel", "recurrent", "bias"])
def test_constraint_forms(value, expected, key):
    got = getattr(build("GRU", 2, **{f"{key}_constraint": value}), f"{key}_constraint")
    assert got == expected


def test_constraint_invalid():
    with pytest.raises(ValueError, match=r"unknown constraint 'max_nrom'.*'max_norm'"):
        build("GRU", 2, kernel_constraint="max_nrom")
    with pytest.raises(ValueError, match="max_value .* is below min_value"):
        constraints.MinMaxNorm(2.0, 1.0)
    with pytest.raises(ValueError, match="axis must be an int"):
        constraints.MaxNorm(axis="rows")


# -- unit_forget_bias ---------------------------------------------------------------------


def test_unit_forget_bias_warns_when_it_overrides_a_given_initializer():
    with pytest.warns(UserWarning, match="overrides bias_initializer='ones'"):
        build("LSTM", 2, bias_initializer="ones")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("LSTM", 2, bias_initializer="ones", unit_forget_bias=False)
        build("LSTM", 2, bias_initializer="zeros")


# -- extensions ---------------------------------------------------------------------------


def test_seed_dtype_input_dim_name():
    s = build("LSTM", 2, seed=7, dtype="float32", input_dim=3, name="enc")
    assert (s.seed, s.dtype, s.input_dim, s.name) == (7, "float32", 3, "enc")
    assert build("LSTM", 2, dtype=np.float64).dtype == "float64"
    assert build("LSTM", 2, dtype=np.dtype("float32")).dtype == "float32"


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"seed": -1}, ValueError, "seed must be None or an integer >= 0"),
        ({"seed": 1.5}, ValueError, "seed must be None or an integer >= 0"),
        ({"dtype": "int8"}, ValueError, "dtype must be None .* 'mixed_float16', got 'int8'"),
        ({"dtype": np.int32}, ValueError, "dtype must be None"),
        ({"input_dim": 0}, ValueError, "input_dim must be a positive integer"),
        ({"name": 3}, TypeError, "name must be a string"),
    ],
)
def test_extensions_invalid(kwargs, error, match):
    with pytest.raises(error, match=match):
        build("GRU", 2, **kwargs)


def test_unknown_keyword_lists_the_valid_ones():
    with pytest.raises(TypeError, match=r"'return_sequence'.*Did you mean 'return_sequences'"):
        build("LSTM", 2, return_sequence=True)
    with pytest.raises(TypeError, match="Valid keywords: units, activation"):
        build("LSTM", 2, frobnicate=True)


# -- derived facts and configs ------------------------------------------------------------


def test_weight_shapes():
    assert build("LSTM", 4).weight_shapes(3) == {
        "kernel": (3, 16),
        "recurrent_kernel": (4, 16),
        "bias": (16,),
    }
    assert build("GRU", 2, reset_after=True).weight_shapes(5)["bias"] == (2, 6)
    assert "bias" not in build("SimpleRNN", 2, use_bias=False).weight_shapes(5)


@pytest.mark.parametrize("layer", LAYERS)
def test_config_round_trips_through_json(layer):
    s = build(
        layer,
        3,
        activation="elu",
        kernel_initializer={"class_name": "RandomNormal", "config": {"stddev": 0.2, "seed": 1}},
        kernel_regularizer="l1_l2",
        bias_constraint="max_norm",
        go_backwards=True,
        implementation=2,
        seed=11,
        dtype="float32",
        name="x",
    )
    config = json.loads(json.dumps(s.to_config()))
    assert spec.from_config(config) == s


def test_config_with_callable_fails_naming_the_argument():
    s = build("LSTM", 2, recurrent_activation=lambda x: x)
    with pytest.raises(TypeError, match="recurrent_activation is the Python callable"):
        s.to_config()
    assert not s.serializable


def test_from_config_errors():
    with pytest.raises(ValueError, match="needs a 'layer' key"):
        spec.from_config({"units": 2})
    with pytest.raises(ValueError, match="'layer' must be one of.*Did you mean 'LSTM'"):
        spec.from_config({"layer": "lstm", "units": 2})
    keras_style = {"class_name": "GRU", "config": {"units": 2, "reset_after": True}}
    assert spec.from_config(keras_style).reset_after


def test_replace_revalidates():
    s = build("LSTM", 2)
    assert s.replace(units=5).units == 5
    with pytest.raises(ValueError, match="units must be a positive integer"):
        s.replace(units=0)
