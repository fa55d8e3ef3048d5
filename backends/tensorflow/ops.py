"""The ops namespace the backend-neutral activations, regularizers and constraints are
evaluated with (see ``multirnn.ops``), in TensorFlow."""

from __future__ import annotations

from types import SimpleNamespace

import tensorflow as tf


def _like(value, dtype):
    """A Python number as a tensor of ``dtype`` (``tf.cast`` would round it through float32)."""
    return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(value, dtype)


def _sum(x, axis=None, keepdims=False):
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def _max(x, axis=None, keepdims=False):
    return tf.reduce_max(x, axis=axis, keepdims=keepdims)


def _where(cond, a, b):
    return tf.where(cond, a, _like(b, a.dtype))


def _clip(x, lo, hi):
    return tf.clip_by_value(x, _like(lo, x.dtype), _like(hi, x.dtype))


def _maximum(x, y):
    return tf.maximum(x, _like(y, x.dtype))


def _minimum(x, y):
    return tf.minimum(x, _like(y, x.dtype))


TF_OPS = SimpleNamespace(
    abs=tf.abs,
    square=tf.square,
    sqrt=tf.sqrt,
    exp=tf.exp,
    expm1=tf.math.expm1,
    log1p=tf.math.log1p,
    tanh=tf.tanh,
    sigmoid=tf.sigmoid,
    maximum=_maximum,
    minimum=_minimum,
    clip=_clip,
    where=_where,
    sum=_sum,
    max=_max,
)


_ARRAY_API: dict[str, object] = {}


def array_api(dtype) -> object:
    """The array API adapter (``multirnn_tensorflow.rnn.ArrayAPI``) for arrays of
    ``dtype``: the namespace the shared cell maths (``multirnn.builtin_cells``) run with."""
    name = tf.as_dtype(dtype).name
    if name not in _ARRAY_API:
        from multirnn_tensorflow.rnn import ArrayAPI  # the adapter imports this module

        _ARRAY_API[name] = ArrayAPI(name)
    return _ARRAY_API[name]
