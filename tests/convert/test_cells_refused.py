"""Converters translate the built-in layers: ``RNN(cell)``, alone, in a list or inside
``Bidirectional``, is refused up front with what to do instead."""

from __future__ import annotations

import pytest

import multirnn
from multirnn import convert

CONVERTERS = [convert.to_torch, convert.to_keras, convert.to_flax, convert.to_onnx]


@pytest.mark.parametrize("converter", CONVERTERS, ids=lambda f: f.__name__)
def test_a_layer_of_a_cell_is_refused_with_the_built_in_layer_to_use(converter):
    numpy = multirnn.engine("numpy")
    rnn = numpy.RNN(multirnn.GRUCell(3, reset_after=True), input_dim=2)
    for given in (rnn, [rnn], numpy.Bidirectional(rnn)):
        with pytest.raises(convert.ConversionError, match=r"got RNN\(GRUCell\).*multirnn\.GRU\(3"):
            converter(given)
