"""The contenders: multirnn engines and the layers a user would otherwise pick.

Each contender turns a workload into two callables that block until their result exists:
``forward()`` (inference) and ``train()`` (forward plus backward of ``sum(outputs)`` with
respect to the weights), or raises :class:`Unsupported` with the reason. Frameworks are
imported only inside the contender that needs them; each contender runs in its own worker
process (see ``multirnn.bench.worker``).

A stateful (streaming) workload is timed forward only: each ``forward()`` call feeds the
same one-step chunk and carries the states on, the way each framework's users stream
(multirnn and Keras: a ``stateful=True`` layer, called as in the other workloads except on
JAX, where a stateful layer carries its states in eager calls only; torch.nn and Flax NNX:
the caller passes the states back in). ``train`` is None there.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from multirnn.bench.workloads import Workload, peer_layout

Fns = tuple[Callable[[], Any], Callable[[], Any] | None]


class Unsupported(Exception):
    """This contender cannot run this workload (the reason is the message)."""


class Contender:
    name: str
    kind: str  # "engine" or "peer"
    requires: tuple[str, ...] = ()

    @classmethod
    def available(cls) -> bool:
        return all(importlib.util.find_spec(r) is not None for r in cls.requires)

    def setup(self) -> None:
        """Import the framework (not timed)."""

    def versions(self) -> dict[str, str]:
        return {}

    def threads(self) -> dict[str, Any]:
        return {}

    def prepare(self, workload: Workload) -> Fns:
        raise NotImplementedError


class EngineContender(Contender):
    """A multirnn engine, driven through its conformance adapter's ``benchmark`` hook."""

    kind = "engine"

    def __init__(self, engine: str, variant: str | None = None):
        self.engine = engine
        self.variant = variant
        self.name = f"multirnn:{engine}" + (f"+{variant}" if variant else "")

    def setup(self) -> None:
        from multirnn.conformance.adapters import adapter

        self.adapter = adapter(self.engine)

    def versions(self) -> dict[str, str]:
        import multirnn

        return {"multirnn": multirnn.__version__, **self.adapter.versions()}

    def threads(self) -> dict[str, Any]:
        return self.adapter.threads()

    def prepare(self, workload: Workload) -> Fns:
        options = {"variant": self.variant} if self.variant else {}
        return self._time(workload, **options, **self._streaming(workload))

    def _time(self, workload: Workload, **options: Any) -> Fns:
        """The engine's benchmark hook on the workload; a keyword the hook does not take
        (a third-party engine's older hook) makes the workload unsupported, not an error."""
        accepted = inspect.signature(self.adapter.benchmark).parameters
        for keyword in options:
            if keyword not in accepted:
                raise Unsupported(f"the benchmark hook of engine {self.engine} has no {keyword}=")
        fns = self.adapter.benchmark(
            _spec(workload), workload.weights(), workload.inputs(), **options
        )
        if fns is None:
            raise Unsupported(f"engine {self.engine} has no benchmark hook")
        return fns

    def _streaming(self, workload: Workload) -> dict[str, bool]:
        """``stateful=True`` for a streaming workload (a hook without the keyword cannot
        stream: it would time a fresh, stateless call)."""
        return {"stateful": True} if workload.stateful else {}


def _spec(workload: Workload):
    """The multirnn layer spec of a workload (its outputs: the whole sequence)."""
    from multirnn.spec import parse

    kwargs = workload.layer_kwargs() | {"return_sequences": True, "dtype": workload.dtype}
    return parse(workload.layer, (workload.units,), kwargs)


#: the benchmark variants every engine has, cells run by its ``RNN(cell)``: a user-written
#: LSTM cell, and the built-in LSTM's own cell (``multirnn.LSTMCell``): what the framework's
#: autodiff makes of the built-in LSTM's shared step
CELL_VARIANT = "cell"
LSTMCELL_VARIANT = "lstmcell"
CELL_VARIANTS = (CELL_VARIANT, LSTMCELL_VARIANT)


class CellContender(EngineContender):
    """An LSTM cell run by an engine's ``RNN(cell)``, timed like the engine's built-in LSTM
    (same weights, inputs and hook): ``multirnn:NAME+cell`` a user's
    (``multirnn.bench.user_cell``), ``multirnn:NAME+lstmcell`` the built-in one."""

    def __init__(self, engine: str, variant: str = CELL_VARIANT):
        super().__init__(engine, variant)

    def prepare(self, workload: Workload) -> Fns:
        from multirnn import engines
        from multirnn.bench.user_cell import UserLSTM
        from multirnn.builtin_cells import LSTMCell

        if workload.layer != "LSTM":
            raise Unsupported("the cells are LSTMs")
        if workload.dropout:
            raise Unsupported("RNN(cell) has no dropout option (a cell draws its own)")
        if workload.group == "precision":
            raise Unsupported("low precision is timed on the built-in layers")
        if self.variant == CELL_VARIANT:
            cell = UserLSTM(workload.units, gate=workload.gate_activation)
        else:
            cell = LSTMCell(workload.units, **workload.layer_kwargs())
        streaming = self._streaming(workload)
        layer = engines.engine(self.engine).RNN(
            cell, return_sequences=True, dtype=workload.dtype, **streaming
        )
        layer.set_weights(workload.weights())
        return self._time(workload, layer=layer, **streaming)


class TorchNN(Contender):
    """torch.nn.LSTM / GRU / RNN: PyTorch's fused kernels (oneDNN on CPU)."""

    name = "torch.nn"
    kind = "peer"
    requires = ("torch",)

    def setup(self) -> None:
        import torch

        self.torch = torch

    def versions(self) -> dict[str, str]:
        return {"torch": self.torch.__version__}

    def threads(self) -> dict[str, Any]:
        return {"torch_threads": self.torch.get_num_threads()}

    def prepare(self, workload: Workload) -> Fns:
        torch = self.torch
        if workload.config != "fused":
            raise Unsupported("torch.nn has no hard_sigmoid gates and no reset_after=False GRU")
        cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "SimpleRNN": torch.nn.RNN}[
            workload.layer
        ]
        module = cls(workload.input_dim, workload.units, batch_first=True)
        with torch.no_grad():
            for name, value in peer_layout(workload, workload.weights()).items():
                getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        x = torch.from_numpy(workload.inputs())
        if workload.stateful:
            return _carrying(torch, module, x), None

        def forward():
            with torch.no_grad():
                return module(x)[0]

        def train():
            module.zero_grad(set_to_none=True)
            module(x)[0].sum().backward()

        return forward, train


def _carrying(torch, module, x) -> Callable[[], Any]:
    """Streaming with torch.nn: the caller passes the last call's states ((h, c) for the
    LSTM, h otherwise) back into the module."""
    carried = [None]

    def forward():
        with torch.no_grad():
            out, carried[0] = module(x, carried[0])
        return out

    return forward


class Keras(Contender):
    """Keras 3 LSTM / GRU / SimpleRNN on one backend (KERAS_BACKEND is set per worker)."""

    kind = "peer"

    def __init__(self, backend: str, xla: bool = False):
        self.backend = backend
        self.xla = xla
        self.name = f"keras:{backend}" + ("+xla" if xla else "")
        self.requires = ("keras", {"tensorflow": "tensorflow"}.get(backend, backend))

    def available(self) -> bool:  # type: ignore[override]
        return all(importlib.util.find_spec(r) is not None for r in self.requires)

    def setup(self) -> None:
        os.environ["KERAS_BACKEND"] = self.backend
        import keras

        self.keras = keras
        if keras.backend.backend() != self.backend:
            raise RuntimeError(f"keras was imported with backend {keras.backend.backend()}")

    def versions(self) -> dict[str, str]:
        mod = importlib.import_module(
            self.backend if self.backend != "tensorflow" else "tensorflow"
        )
        return {"keras": self.keras.__version__, self.backend: mod.__version__}

    def threads(self) -> dict[str, Any]:
        if self.backend == "torch":
            import torch

            return {"torch_threads": torch.get_num_threads()}
        return {}

    def prepare(self, workload: Workload) -> Fns:
        keras = self.keras
        ops = keras.ops
        kwargs: dict[str, Any] = {"return_sequences": True}
        if workload.layer != "SimpleRNN":
            if workload.config == "fused":
                kwargs["recurrent_activation"] = "sigmoid"
            else:  # Keras 3's "hard_sigmoid" has slope 1/6; the documented one has 0.2
                kwargs["recurrent_activation"] = lambda v: ops.clip(0.2 * v + 0.5, 0.0, 1.0)
        if workload.layer == "GRU":
            kwargs["reset_after"] = workload.reset_after
        # a stateful layer keeps its states in variables sized by a fixed batch
        batch = workload.batch if workload.stateful else None
        layer = getattr(keras.layers, workload.layer)(
            workload.units, stateful=workload.stateful, **kwargs
        )
        layer.build((batch, workload.time, workload.input_dim))
        layer.set_weights(workload.weights())
        x = workload.inputs()
        if workload.stateful and self.backend == "jax":
            return _stream_eagerly(layer, x), None
        forward, train = getattr(self, f"_fns_{self.backend}")(layer, x)
        return forward, None if workload.stateful else train

    def _fns_tensorflow(self, layer, x) -> Fns:
        import tensorflow as tf

        x = tf.constant(x)
        forward_fn = tf.function(lambda v: layer(v), jit_compile=self.xla)

        @tf.function(jit_compile=self.xla)
        def train_fn(v):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(v))
            return tape.gradient(loss, layer.trainable_variables)

        return (lambda: forward_fn(x).numpy()), (lambda: [g.numpy() for g in train_fn(x)])

    def _fns_jax(self, layer, x) -> Fns:
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]
        x = jnp.asarray(x)

        def loss(tv, v):
            return jnp.sum(layer.stateless_call(tv, fixed, v)[0])

        forward_fn = jax.jit(lambda tv, v: layer.stateless_call(tv, fixed, v)[0])
        grad_fn = jax.jit(jax.grad(loss))
        return (
            lambda: jax.block_until_ready(forward_fn(trainable, x)),
            lambda: jax.block_until_ready(grad_fn(trainable, x)),
        )

    def _fns_torch(self, layer, x) -> Fns:
        import torch

        x = torch.from_numpy(x)

        def forward():
            with torch.no_grad():
                return layer(x)

        def train():
            for v in layer.trainable_variables:
                v.value.grad = None
            torch.sum(layer(x)).backward()

        return forward, train


def _stream_eagerly(layer, x) -> Callable[[], Any]:
    """Keras's stateful layer on JAX, called eagerly: the only way it carries its states
    (they are not among the variables ``stateless_call`` threads through ``jit``), as for
    multirnn's stateful JAX layer."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x)
    return lambda: jax.block_until_ready(layer(x))


class FlaxNNX(Contender):
    """Flax NNX cells under ``nnx.RNN``, jit-compiled (OptimizedLSTMCell, GRUCell, SimpleCell)."""

    name = "flax.nnx"
    kind = "peer"
    requires = ("flax", "jax")

    def setup(self) -> None:
        import flax
        import jax
        from flax import nnx

        self.flax, self.jax, self.nnx = flax, jax, nnx

    def versions(self) -> dict[str, str]:
        return {"flax": self.flax.__version__, "jax": self.jax.__version__}

    def prepare(self, workload: Workload) -> Fns:
        import jax
        import jax.numpy as jnp

        nnx = self.nnx
        d, u = workload.input_dim, workload.units
        kernel, recurrent, bias = (jnp.asarray(w) for w in workload.weights())
        if workload.layer == "LSTM":
            gate = jax.nn.sigmoid if workload.config == "fused" else _hard_sigmoid
            cell = nnx.OptimizedLSTMCell(d, u, gate_fn=gate, rngs=nnx.Rngs(0))
            cell.dense_i.kernel.value, cell.dense_h.kernel.value = kernel, recurrent
            cell.dense_h.bias.value = bias
        elif workload.layer == "GRU":
            if workload.config != "fused":
                raise Unsupported("Flax's GRUCell applies the reset gate after the product only")
            cell = nnx.GRUCell(d, u, rngs=nnx.Rngs(0))
            order = [1, 0, 2]  # canonical z, r, h -> flax r, z, n

            def reorder(a):
                return jnp.concatenate([a[..., k * u : (k + 1) * u] for k in order], axis=-1)

            # Flax's GRUCell has no recurrent bias: it gets the input bias only.
            cell.dense_i.kernel.value, cell.dense_h.kernel.value = (
                reorder(kernel),
                reorder(recurrent),
            )
            cell.dense_i.bias.value = reorder(bias[0])
        else:
            cell = nnx.SimpleCell(d, u, rngs=nnx.Rngs(0))
            cell.dense_i.kernel.value, cell.dense_h.kernel.value = kernel, recurrent
            cell.dense_i.bias.value = bias
        x = jnp.asarray(workload.inputs())
        if workload.stateful:
            return _stream_cell(nnx, cell, x), None
        model = nnx.RNN(cell)

        @nnx.jit
        def forward_fn(m, v):
            return m(v)

        @nnx.jit
        def grad_fn(m, v):
            return nnx.grad(lambda mm: jnp.sum(mm(v)))(m)

        return (
            lambda: jax.block_until_ready(forward_fn(model, x)),
            lambda: jax.block_until_ready(grad_fn(model, x)),
        )


def _stream_cell(nnx, cell, x) -> Callable[[], Any]:
    """Streaming with Flax NNX: the cell's jitted step, the caller passing the carry of
    the last call back in (one step per call, so ``nnx.RNN``'s scan is not needed)."""
    import jax

    step = nnx.jit(lambda c, carry, v: c(carry, v))
    chunk = x[:, 0]  # (batch, features): the one step of each call
    carried = [cell.initialize_carry(chunk.shape, rngs=nnx.Rngs(0))]  # zeros

    def forward():
        carried[0], out = step(cell, carried[0], chunk)
        return jax.block_until_ready(out)

    return forward


def _hard_sigmoid(v):
    import jax.numpy as jnp

    return jnp.clip(0.2 * v + 0.5, 0.0, 1.0)


PEERS: dict[str, Callable[[], Contender]] = {
    "torch.nn": TorchNN,
    "keras:tensorflow": lambda: Keras("tensorflow"),
    "keras:tensorflow+xla": lambda: Keras("tensorflow", xla=True),
    "keras:jax": lambda: Keras("jax"),
    "keras:torch": lambda: Keras("torch"),
    "flax.nnx": FlaxNNX,
}


def make(name: str) -> Contender:
    if name.startswith("multirnn:"):
        engine, _, variant = name.split(":", 1)[1].partition("+")
        if variant in CELL_VARIANTS:
            return CellContender(engine, variant)
        if variant:
            from multirnn import engines

            known = engines.registry().get(engine)
            variants = known.benchmark_variants if known else ()
            if variant not in variants:
                raise ValueError(
                    f"unknown contender {name!r}: engine {engine!r} has benchmark variants "
                    f"{', '.join((*variants, *CELL_VARIANTS))}"
                )
        return EngineContender(engine, variant or None)
    if name not in PEERS:
        raise ValueError(
            f"unknown contender {name!r}; peers: {', '.join(PEERS)}; engines: multirnn:NAME "
            f"(or multirnn:NAME+{CELL_VARIANT} for a user's cell, +{LSTMCELL_VARIANT} for the "
            "built-in LSTM's cell)"
        )
    return PEERS[name]()
