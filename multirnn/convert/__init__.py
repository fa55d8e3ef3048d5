"""Converters between multirnn layers and the recurrent layers people already have.

Each converter is exact or refuses with :class:`ConversionError` naming the peer option and
the reason; nothing is converted approximately. The frameworks are imported only by the
converter that needs them.

- PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU``: :func:`from_torch`, :func:`to_torch`
- Keras 3 ``SimpleRNN``/``LSTM``/``GRU``: :func:`from_keras`, :func:`to_keras`
- legacy Keras HDF5 files, ``CuDNNLSTM``/``CuDNNGRU`` included: :func:`from_keras2_h5`
- Flax NNX cells (and ``nnx.RNN``/``nnx.Bidirectional``): :func:`from_flax`, :func:`to_flax`
- ONNX (run by ONNX Runtime or any other ONNX runtime): :func:`to_onnx`

The array-level mappings (gate orders, transposes, biases) are in
:mod:`multirnn.convert.layouts` and need only NumPy.
"""

from __future__ import annotations

from multirnn.convert import _common
from multirnn.convert.layouts import ConversionError


def from_torch(module, *, backend: str | None = None, ignore_training_options: bool = False):
    """multirnn layer(s) computing what a ``torch.nn.RNN``/``LSTM``/``GRU`` computes (a list
    of layers for ``num_layers > 1``). See :func:`multirnn.convert.pytorch.from_torch`."""
    from multirnn.convert import pytorch

    return pytorch.from_torch(module, backend=backend,
                              ignore_training_options=ignore_training_options)  # fmt: skip


def to_torch(layers, *, batch_first: bool = True, ignore_training_options: bool = False):
    """A ``torch.nn`` module computing what a layer (or a list of alike layers) computes.
    See :func:`multirnn.convert.pytorch.to_torch`."""
    _common.refuse_cells(layers, "convert.to_torch")
    from multirnn.convert import pytorch

    return pytorch.to_torch(layers, batch_first=batch_first,
                            ignore_training_options=ignore_training_options)  # fmt: skip


def from_keras(layer, *, backend: str | None = None, ignore_training_options: bool = False):
    """The multirnn layer computing what a built Keras 3 recurrent layer computes."""
    from multirnn.convert import keras3

    return keras3.from_keras(layer, backend=backend,
                             ignore_training_options=ignore_training_options)  # fmt: skip


def to_keras(layer, *, batch_size: int | None = None, ignore_training_options: bool = False):
    """A built Keras 3 layer computing what a multirnn layer computes (a stateful one
    with its carried states)."""
    _common.refuse_cells(layer, "convert.to_keras")
    from multirnn.convert import keras3

    return keras3.to_keras(layer, batch_size=batch_size,
                           ignore_training_options=ignore_training_options)  # fmt: skip


def from_keras2_h5(path, *, backend: str | None = None, layers=None, **options):
    """The recurrent layers of a legacy Keras HDF5 file (``CuDNNLSTM``/``CuDNNGRU``
    included) as multirnn layers, by layer name. See
    :func:`multirnn.convert.keras2.from_keras2_h5`."""
    from multirnn.convert import keras2

    return keras2.from_keras2_h5(path, backend=backend, layers=layers, **options)


def from_flax(cell, *, backend: str | None = None):
    """The multirnn layer running a Flax NNX cell over a sequence (like ``nnx.RNN``)."""
    from multirnn.convert import flax_nnx

    return flax_nnx.from_flax(cell, backend=backend)


def to_flax(layer, *, kind: str | None = None, rngs=None):
    """A Flax NNX cell computing one step of a multirnn layer."""
    _common.refuse_cells(layer, "convert.to_flax")
    from multirnn.convert import flax_nnx

    return flax_nnx.to_flax(layer, kind=kind, rngs=rngs)


def to_onnx(
    layer,
    *,
    path=None,
    mask: bool = False,
    initial_state: bool = False,
    batch_size: int | None = None,
    time: int | None = None,
    opset: int | None = None,
    dtype: str | None = None,
    ignore_training_options: bool = False,
):
    """An ``onnx.ModelProto`` computing what a built layer (or ``Bidirectional``) computes
    in inference, saved to ``path`` if given. See :func:`multirnn.convert.onnx.to_onnx`."""
    _common.refuse_cells(layer, "convert.to_onnx")
    from multirnn.convert import onnx

    return onnx.to_onnx(layer, path=path, mask=mask, initial_state=initial_state,
                        batch_size=batch_size, time=time, opset=opset, dtype=dtype,
                        ignore_training_options=ignore_training_options)  # fmt: skip


__all__ = [
    "ConversionError",
    "from_flax",
    "from_keras",
    "from_keras2_h5",
    "from_torch",
    "to_flax",
    "to_keras",
    "to_onnx",
    "to_torch",
]
