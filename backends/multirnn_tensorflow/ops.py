"""TensorFlow's namespaces: the ops the backend-neutral activations, regularizers and
constraints are evaluated with (see ``multirnn.ops``), the array API adapter cells run
with (TensorFlow has no array API namespace of its own), and the tensor adapter of the
call pipeline (``multirnn.pipeline``)."""

from __future__ import annotations

import builtins

import numpy as np
import tensorflow as tf

from multirnn import ops, pipeline


def dtype_name(dtype) -> str:
    return tf.as_dtype(dtype).name


class TfArrays(pipeline.Arrays):
    """TensorFlow tensors and (Keras) variables read as tensors; host data converted."""

    native = "tf.Tensor"
    numpy_weights = True

    def is_native(self, value) -> bool:
        if isinstance(value, (tf.Tensor, tf.Variable)):
            return True
        import keras

        return isinstance(value, keras.Variable)

    def own(self, value, arg, owner, place):
        return tf.convert_to_tensor(value)

    def from_host(self, array, place):
        return tf.convert_to_tensor(array)

    def shape(self, value) -> tuple:
        return tuple(value.shape.as_list()) if value.shape.rank is not None else (None,)

    def dtype(self, value) -> str:
        return dtype_name(value.dtype)

    def to_numpy(self, value) -> np.ndarray:
        return np.array(value.numpy())

    def cast(self, value, dtype: str) -> tf.Tensor:
        return tf.cast(value, dtype)


TF_ARRAYS = TfArrays()


def _like(value, dtype):
    """A Python number as a tensor of ``dtype`` (``tf.cast`` would round it through float32)."""
    return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(value, dtype)


def _where(cond, a, b):
    return tf.where(cond, a, _like(b, a.dtype))


def _clip(x, lo, hi):
    return tf.clip_by_value(x, _like(lo, x.dtype), _like(hi, x.dtype))


TF_OPS = ops.namespace(
    tf.math,
    maximum=lambda x, y: tf.maximum(x, _like(y, x.dtype)),
    minimum=lambda x, y: tf.minimum(x, _like(y, x.dtype)),
    clip=_clip,
    where=_where,
    sum=tf.reduce_sum,
    max=tf.reduce_max,
)


# -- the array-API adapter ----------------------------------------------------------------------


def _axes(axis):
    return list(axis) if isinstance(axis, tuple) else axis


#: array API functions that ``tf.math`` has under the same name and meaning
_SAME_BINARY = """add subtract multiply divide pow maximum minimum atan2 equal not_equal greater
greater_equal less less_equal logical_and logical_or logical_xor"""
_SAME_UNARY = """abs negative square sqrt exp expm1 log log1p sin cos tan asin acos atan sinh cosh
tanh asinh acosh atanh sign floor ceil round logical_not"""


class ArrayAPI:
    """The array API standard's functions that recurrent cells use, on TensorFlow tensors,
    with the standard's argument names. Python numbers mixed with tensors take the
    tensor's dtype; arrays created from nothing (``zeros``, ``asarray`` of numbers)
    default to the layer's dtype."""

    __array_api_version__ = "2023.12"

    bool = tf.bool
    int8, int16, int32, int64 = tf.int8, tf.int16, tf.int32, tf.int64
    uint8 = tf.uint8
    float16, float32, float64 = tf.float16, tf.float32, tf.float64
    e, pi, inf, nan = np.e, np.pi, np.inf, np.nan
    newaxis = None

    def __init__(self, default_dtype: str = "float32") -> None:
        self.default_dtype = tf.as_dtype(default_dtype)

    # conversions ------------------------------------------------------------------------
    def _t(self, x, like=None):
        """A tensor; a Python number or NumPy scalar takes ``like``'s dtype."""
        if tf.is_tensor(x) or isinstance(x, tf.Variable):
            return tf.convert_to_tensor(x)
        if like is not None:
            return tf.constant(x, tf.as_dtype(like.dtype))
        if isinstance(x, (builtins.bool, np.bool_)):
            return tf.constant(x, tf.bool)
        if isinstance(x, (int, float)):
            return tf.constant(x, self.default_dtype)
        return tf.convert_to_tensor(x)

    def _pair(self, x, y):
        if tf.is_tensor(x) or isinstance(x, tf.Variable):
            x = tf.convert_to_tensor(x)
            return x, self._t(y, x)
        if tf.is_tensor(y) or isinstance(y, tf.Variable):
            y = tf.convert_to_tensor(y)
            return self._t(x, y), y
        return self._t(x), self._t(y)

    def _dtype(self, dtype):
        return self.default_dtype if dtype is None else tf.as_dtype(dtype)

    def asarray(self, obj, dtype=None, copy=None, device=None):
        if tf.is_tensor(obj) or isinstance(obj, tf.Variable):
            t = tf.convert_to_tensor(obj)
            return t if dtype is None else tf.cast(t, dtype)
        if dtype is None:
            array = np.asarray(obj)
            dtype = self.default_dtype if array.dtype.kind == "f" else array.dtype
        return tf.constant(np.asarray(obj), tf.as_dtype(dtype))

    def astype(self, x, dtype, /, *, copy=True, device=None):
        return tf.cast(x, dtype)

    # creation ----------------------------------------------------------------------------
    def zeros(self, shape, *, dtype=None, device=None):
        return tf.zeros(shape, self._dtype(dtype))

    def ones(self, shape, *, dtype=None, device=None):
        return tf.ones(shape, self._dtype(dtype))

    def full(self, shape, fill_value, *, dtype=None, device=None):
        return tf.fill(shape, tf.constant(fill_value, self._dtype(dtype)))

    def zeros_like(self, x, /, *, dtype=None, device=None):
        return tf.zeros_like(x, dtype=dtype)

    def ones_like(self, x, /, *, dtype=None, device=None):
        return tf.ones_like(x, dtype=dtype)

    def full_like(self, x, /, fill_value, *, dtype=None, device=None):
        dtype = tf.as_dtype(x.dtype if dtype is None else dtype)
        return tf.fill(tf.shape(x), tf.constant(fill_value, dtype))

    def eye(self, n_rows, n_cols=None, /, *, k=0, dtype=None, device=None):
        if k != 0:
            raise NotImplementedError("eye(k != 0) on the tensorflow engine")
        return tf.eye(n_rows, n_cols, dtype=self._dtype(dtype))

    def arange(self, start, /, stop=None, step=1, *, dtype=None, device=None):
        return tf.range(start, stop, step, dtype=dtype or tf.int64)

    # elementwise: the standard's functions that tf.math names alike, then the others
    def _binary(fn):
        def method(self, x1, x2, /):
            return fn(*self._pair(x1, x2))

        method.__name__ = getattr(fn, "__name__", "binary")
        return method

    for _name in _SAME_BINARY.split():
        locals()[_name] = _binary(getattr(tf.math, _name))
    for _name in _SAME_UNARY.split():
        locals()[_name] = staticmethod(getattr(tf.math, _name))
    del _name
    logaddexp = _binary(lambda a, b: tf.reduce_logsumexp(tf.stack([a, b]), axis=0))
    floor_divide = _binary(tf.math.floordiv)
    remainder = _binary(tf.math.floormod)
    hypot = _binary(lambda a, b: tf.sqrt(a * a + b * b))
    copysign = _binary(lambda a, b: tf.abs(a) * tf.where(b < 0, -tf.ones_like(a), tf.ones_like(a)))
    del _binary

    positive = staticmethod(tf.identity)
    log2 = staticmethod(lambda x: tf.math.log(x) / tf.math.log(tf.constant(2.0, x.dtype)))
    log10 = staticmethod(lambda x: tf.math.log(x) / tf.math.log(tf.constant(10.0, x.dtype)))
    trunc = staticmethod(lambda x: tf.where(x < 0, tf.math.ceil(x), tf.floor(x)))
    isnan = staticmethod(tf.math.is_nan)
    isinf = staticmethod(tf.math.is_inf)
    isfinite = staticmethod(tf.math.is_finite)

    def clip(self, x, /, min=None, max=None):
        x = tf.convert_to_tensor(x)
        if min is not None:
            x = tf.maximum(x, self._t(min, x))
        if max is not None:
            x = tf.minimum(x, self._t(max, x))
        return x

    def where(self, condition, x1, x2, /):
        x1, x2 = self._pair(x1, x2)
        return tf.where(self._t(condition), x1, x2)

    # reductions --------------------------------------------------------------------------
    def _reduction(fn):
        def method(self, x, /, *, axis=None, keepdims=False, dtype=None, correction=None):
            x = tf.convert_to_tensor(x)
            if dtype is not None:
                x = tf.cast(x, dtype)
            return fn(x, axis=_axes(axis), keepdims=keepdims)

        method.__name__ = fn.__name__
        return method

    for _name in ("sum", "prod", "mean", "max", "min", "all", "any"):
        locals()[_name] = _reduction(getattr(tf, f"reduce_{_name}"))
    del _name
    del _reduction

    def var(self, x, /, *, axis=None, correction=0.0, keepdims=False):
        x = tf.convert_to_tensor(x)
        mean = tf.reduce_mean(x, axis=_axes(axis), keepdims=True)
        total = tf.reduce_sum(tf.square(x - mean), axis=_axes(axis), keepdims=keepdims)
        count = tf.cast(tf.size(x), x.dtype) / tf.cast(tf.size(mean), x.dtype)
        return total / (count - correction)

    def std(self, x, /, *, axis=None, correction=0.0, keepdims=False):
        return tf.sqrt(self.var(x, axis=axis, correction=correction, keepdims=keepdims))

    def argmax(self, x, /, *, axis=None, keepdims=False):
        out = tf.argmax(
            tf.reshape(x, [-1]) if axis is None else x, axis=0 if axis is None else axis
        )
        return tf.expand_dims(out, axis) if keepdims and axis is not None else out

    def argmin(self, x, /, *, axis=None, keepdims=False):
        out = tf.argmin(
            tf.reshape(x, [-1]) if axis is None else x, axis=0 if axis is None else axis
        )
        return tf.expand_dims(out, axis) if keepdims and axis is not None else out

    def cumulative_sum(self, x, /, *, axis=None, dtype=None, include_initial=False):
        if include_initial:
            raise NotImplementedError("cumulative_sum(include_initial=True) on tensorflow")
        return tf.cumsum(x if dtype is None else tf.cast(x, dtype), axis=axis or 0)

    # shapes and linear algebra ----------------------------------------------------------------
    def concat(self, arrays, /, *, axis=0):
        if axis is None:
            return tf.concat([tf.reshape(a, [-1]) for a in arrays], axis=0)
        return tf.concat(list(arrays), axis=axis)

    def stack(self, arrays, /, *, axis=0):
        return tf.stack(list(arrays), axis=axis)

    def unstack(self, x, /, *, axis=0):
        return tuple(tf.unstack(x, axis=axis))

    def reshape(self, x, /, shape, *, copy=None):
        return tf.reshape(x, shape)

    def expand_dims(self, x, /, *, axis=0):
        return tf.expand_dims(x, axis)

    def squeeze(self, x, /, axis):
        return tf.squeeze(x, _axes(axis) if isinstance(axis, tuple) else [axis])

    def flip(self, x, /, *, axis=None):
        if axis is None:
            axis = list(range(x.shape.rank))
        return tf.reverse(x, _axes(axis) if isinstance(axis, tuple) else [axis])

    def permute_dims(self, x, /, axes):
        return tf.transpose(x, list(axes))

    def broadcast_to(self, x, /, shape):
        return tf.broadcast_to(x, shape)

    def tile(self, x, repetitions, /):
        return tf.tile(x, list(repetitions))

    def matmul(self, x1, x2, /):
        return tf.linalg.matmul(x1, x2)

    def matrix_transpose(self, x, /):
        return tf.linalg.matrix_transpose(x)

    def tensordot(self, x1, x2, /, *, axes=2):
        return tf.tensordot(x1, x2, axes)

    def vecdot(self, x1, x2, /, *, axis=-1):
        return tf.reduce_sum(x1 * x2, axis=axis)

    # not the standard: what the shared cell maths (multirnn.builtin_cells) use when
    # present, so that a loop step runs one op where slicing or a product would run several
    def _split_columns(self, x, n):
        return tf.split(x, n, axis=1)

    def _activation_grad(self, name, y, dy):
        grad = _FUSED_GRADS.get(name)
        return None if grad is None else grad(y, dy)

    def take(self, x, indices, /, *, axis=None):
        if axis is None:
            return tf.gather(tf.reshape(x, [-1]), indices)
        return tf.gather(x, indices, axis=axis)


#: activation -> (output y, upstream dy) -> dy * activation'(y), one op each
_FUSED_GRADS = {
    "tanh": lambda y, dy: tf.raw_ops.TanhGrad(y=y, dy=dy),
    "sigmoid": lambda y, dy: tf.raw_ops.SigmoidGrad(y=y, dy=dy),
}

_ARRAY_API: dict[str, ArrayAPI] = {}


def array_api(dtype) -> ArrayAPI:
    """The array API adapter for arrays of ``dtype``: the namespace users' cells and the
    shared cell maths (``multirnn.builtin_cells``) run with on this engine."""
    name = tf.as_dtype(dtype).name
    if name not in _ARRAY_API:
        _ARRAY_API[name] = ArrayAPI(name)
    return _ARRAY_API[name]
