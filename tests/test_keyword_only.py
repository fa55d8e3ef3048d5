"""Everything after ``inputs`` is keyword-only on every engine (docs/semantics.md, Calling
a layer): a positional mask is one clear ``TypeError``, never an engine's own error nor a
silently accepted argument."""

from __future__ import annotations

import numpy as np
import pytest

import multirnn


def _cell_layer(eng):
    from multirnn.builtin_cells import GRUCell

    return eng.RNN(GRUCell(3), input_dim=2)


MAKERS = {
    "LSTM": lambda eng: eng.LSTM(3, input_dim=2, seed=0),
    "Bidirectional": lambda eng: eng.Bidirectional(eng.GRU(3, input_dim=2, seed=0)),
    "RNN(cell)": _cell_layer,
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_a_positional_mask_is_refused_naming_the_layer(eng, make):
    layer = make(eng)
    x = np.zeros((2, 4, 2), "float32")
    mask = np.ones((2, 4), bool)
    name = getattr(layer, "name", None) or type(layer).__name__
    with pytest.raises(
        TypeError, match=r"mask, initial_state and training are keyword-only"
    ) as info:
        layer(x, mask)
    assert name and name in str(info.value)
    with pytest.raises(TypeError, match="got 2 positional arguments after inputs"):
        layer(x, mask, None)
    np.testing.assert_allclose(  # the keyword form works, and the mask matters
        multirnn.to_numpy(layer(x, mask=mask)), multirnn.to_numpy(layer(x)), atol=1e-6
    )


def test_keras_still_hands_its_masks_to_the_tensorflow_layers():
    """Keras passes the masks of Embedding(mask_zero=True) itself: through Sequential, a
    functional model and the multirnn Bidirectional."""
    if "tensorflow" not in multirnn.engines.available():
        pytest.skip("tensorflow is not installed")
    import keras

    tf_engine = multirnn.engine("tensorflow")
    tokens = np.array([[3, 4, 0, 0], [5, 6, 7, 0]])
    sequential = keras.Sequential(
        [
            keras.Input((None,)),
            keras.layers.Embedding(9, 2, mask_zero=True),
            tf_engine.LSTM(3, seed=0),
        ]
    )
    inputs = keras.Input((None,))
    embedded = keras.layers.Embedding(9, 2, mask_zero=True)(inputs)
    functional = keras.Model(inputs, tf_engine.Bidirectional(tf_engine.GRU(3, seed=0))(embedded))
    for model in (sequential, functional):
        padded = np.asarray(model(tokens))
        shorter = np.asarray(model(tokens[:, :3]))  # the padding is masked: same outputs
        np.testing.assert_allclose(padded, shorter, atol=1e-6)
