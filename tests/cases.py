"""Layer configurations shared by several test modules (one place, not copied per test)."""

from __future__ import annotations

LAYERS = ("SimpleRNN", "LSTM", "GRU")

#: each built-in engine's package (its layers are in ``<package>.layers``)
PACKAGES = {
    "numpy": "multirnn.reference",
    "torch": "multirnn_torch",
    "jax": "multirnn_jax",
    "tensorflow": "multirnn_tensorflow",
}

#: each built-in engine's default dtype (JAX in its 64-bit mode: the ``eng64`` fixture)
DTYPES = {"numpy": "float64", "torch": "float32", "jax": "float64", "tensorflow": "float32"}

#: (layer, extra kwargs) covering each cell variant.
VARIANTS = (
    ("SimpleRNN", {}),
    ("LSTM", {}),
    ("GRU", {}),
    ("GRU", {"reset_after": True}),
)


def variant_id(variant) -> str:
    layer, kwargs = variant
    return layer + "".join(f"-{k}={v}" for k, v in kwargs.items())


def bidirectional_and_reference(layers, kind: str, merge_mode: str | None):
    """An engine's ``Bidirectional(kind)`` (from its ``layers`` module), its inputs and
    right-padded mask, and what the NumPy engine's wrapper returns with the same weights:
    the traced-call checks of the engines that trace (the grid calls eagerly)."""
    import numpy as np

    from multirnn.reference import layers as reference

    kwargs = {"return_sequences": True, "return_state": True, "dtype": "float64", "seed": 0}
    layer = layers.Bidirectional(getattr(layers, kind)(5, input_dim=4, **kwargs), merge_mode)
    peer = reference.Bidirectional(getattr(reference, kind)(5, **kwargs), merge_mode)
    peer.set_weights(layer.get_weights())
    x = np.random.default_rng(0).standard_normal((3, 6, 4))
    mask = np.arange(6)[None, :] < np.array([6, 2, 4])[:, None]
    return layer, x, mask, peer(x, mask=mask)


def fit_lowers_the_loss(model, x, y, epochs: int) -> None:
    """A compiled Keras model's ``fit`` lowers its loss."""
    history = model.fit(x, y, epochs=epochs, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def keras_file_reloads(model, x, path, **tolerance) -> None:
    """A Keras model saved to ``path`` (.keras) loads back predicting what it predicts."""
    import keras
    import numpy as np

    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(
        again.predict(x, verbose=0), model.predict(x, verbose=0), **tolerance
    )


def native(engine: str, array):
    """A NumPy array as the engine's own tensor (a torch.Tensor, jax.Array or tf.Tensor),
    so the shared tests call each engine with what its users pass."""
    import numpy as np

    if engine == "torch":
        from multirnn_torch.ops import TORCH_ARRAYS  # bfloat16 too

        return TORCH_ARRAYS.from_host(np.ascontiguousarray(array), None)
    if engine == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    if engine == "tensorflow":
        import tensorflow as tf

        return tf.constant(array)
    return np.asarray(array)


def is_native(engine: str, value) -> bool:
    """Whether ``value`` is the engine's own tensor type (what its layers return)."""
    import numpy as np

    if engine == "torch":
        import torch

        return torch.is_tensor(value)
    if engine == "jax":
        import jax

        return isinstance(value, jax.Array)
    if engine == "tensorflow":
        import tensorflow as tf

        return tf.is_tensor(value)
    return isinstance(value, np.ndarray)
