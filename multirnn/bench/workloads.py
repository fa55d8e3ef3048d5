"""What is benchmarked: layer x configuration x shape, with the FLOPs each one costs.

Two configurations per gated layer: ``fused`` computes what the frameworks' fused kernels
compute (sigmoid gates; GRU with ``reset_after=True``) and ``documented`` is the documented
default of this API (``hard_sigmoid`` gates; GRU with ``reset_after=False``), which no fused
kernel serves. Weights are canonical (Keras layout) float32 arrays drawn from a fixed seed,
so every contender runs on identical weights and inputs.

Besides shape S and its sweeps, two workloads are about the cost of a call rather than of
the arithmetic: ``small`` (batch 8, 10 steps) and ``streaming`` (batch 1, one step per
call, the states carried from call to call by a stateful layer), where the work around the
kernel (argument checks, state handling, dispatch) is most of the time. ``dropout`` times
the training step of Keras-2-style dropout (``dropout=recurrent_dropout=0.2`` with the
default ``implementation``: one mask per gate) against the same layer without dropout, on
the engines only (the peers' dropout is not Keras 2's). ``precision`` times bfloat16 and
float16 layers at shape S against the float32 shape-S workloads, on the engines only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from multirnn import precision
from multirnn.spec import GATES

LAYERS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}
SHAPE_S = {"batch": 32, "time": 100, "input_dim": 64, "units": 128}
#: a short sequence at a small batch, where the per-call work is a large part of the time
SMALL = {"batch": 8, "time": 10, "input_dim": 64, "units": 128}
#: one step per call at batch 1, the states carried across calls (speech, control, online)
STREAMING = {"batch": 1, "time": 1, "input_dim": 64, "units": 128}
#: a Keras 2 tutorial's text model, trained with dropout (``LSTM(32, dropout=0.2,
#: recurrent_dropout=0.2)``): small layers, where a mask's extra work shows most
DROPOUT = {"batch": 32, "time": 40, "input_dim": 128, "units": 32}
#: the dropout rate of the dropout workloads (on the inputs and on the recurrent state)
DROPOUT_RATE = 0.2


@dataclass(frozen=True)
class Workload:
    layer: str  # SimpleRNN | LSTM | GRU
    config: str  # fused | documented
    batch: int
    time: int
    input_dim: int
    units: int
    group: str  # S | time | units | latency | small | streaming | dropout | precision
    dtype: str = "float32"
    #: the layer keeps its states from one call to the next (each call is one more chunk)
    stateful: bool = False
    #: ``dropout`` and ``recurrent_dropout`` of the layer (its training step samples masks)
    dropout: float = 0.0

    @property
    def key(self) -> str:
        shape = f"b{self.batch}-t{self.time}-i{self.input_dim}-u{self.units}"
        tail = (
            ("/stateful" if self.stateful else "")
            + (f"/dropout{self.dropout:g}" if self.dropout else "")
            + ("" if self.dtype == "float32" else f"/{self.dtype}")
        )
        return f"{self.layer}/{self.config}/{shape}" + tail

    @property
    def label(self) -> str:
        if self.config == "documented":
            label = f"{self.layer} (documented defaults: no fused kernel)"
        else:
            label = f"{self.layer} (fused-eligible)"
        label += f", dropout {self.dropout:g}" if self.dropout else ""
        return label + ("" if self.dtype == "float32" else f", {self.dtype}")

    def layer_kwargs(self) -> dict[str, Any]:
        """multirnn constructor arguments for this configuration."""
        rates = {"dropout": self.dropout, "recurrent_dropout": self.dropout} if self.dropout else {}
        if self.layer == "SimpleRNN":
            return {"activation": "tanh", **rates}
        if self.config == "fused":
            extra = {"reset_after": True} if self.layer == "GRU" else {}
            return {"recurrent_activation": "sigmoid", **extra, **rates}
        return rates  # the documented defaults: hard_sigmoid, reset_after=False

    @property
    def reset_after(self) -> bool:
        return self.layer == "GRU" and self.config == "fused"

    @property
    def gate_activation(self) -> str:
        return "sigmoid" if self.config == "fused" else "hard_sigmoid"

    def flops(self, train: bool = False) -> float:
        """Matrix-product FLOPs (2 per multiply-add) of the forward pass; a training step
        counts three times that (forward, and two products per product backward)."""
        g = GATES[self.layer]
        forward = 2.0 * self.time * self.batch * g * self.units * (self.input_dim + self.units)
        return 3.0 * forward if train else forward

    def weights(self) -> list[np.ndarray]:
        rng = np.random.default_rng(1234)
        g, u, d = GATES[self.layer], self.units, self.input_dim
        kernel = rng.uniform(-1, 1, (d, g * u)) * np.sqrt(3.0 / d)
        recurrent = rng.uniform(-1, 1, (u, g * u)) * np.sqrt(1.0 / u)
        bias_shape = (2, g * u) if self.reset_after else (g * u,)
        bias = rng.uniform(-0.1, 0.1, bias_shape)
        return [w.astype(precision.numpy_dtype(self.dtype)) for w in (kernel, recurrent, bias)]

    def inputs(self) -> np.ndarray:
        rng = np.random.default_rng(99)
        x = rng.standard_normal((self.batch, self.time, self.input_dim))
        return x.astype(precision.numpy_dtype(self.dtype))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"key": self.key, "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def _configs(layer: str) -> tuple[str, ...]:
    return ("fused",) if layer == "SimpleRNN" else ("fused", "documented")


def _per_call(layers: list[str]) -> list[Workload]:
    """The small and streaming workloads of the gated layers among ``layers``: small in
    both configurations; streaming fused-eligible, plus the documented LSTM (what ported
    Keras 2 models stream with)."""
    out = []
    for layer in (name for name in ("LSTM", "GRU") if name in layers):
        out += [Workload(layer, c, **SMALL, group="small") for c in _configs(layer)]
        streamed = _configs(layer) if layer == "LSTM" else ("fused",)
        out += [Workload(layer, c, **STREAMING, group="streaming", stateful=True)
                for c in streamed]  # fmt: skip
    return out


def _dropout(layers: list[str], mode: str) -> list[Workload]:
    """The documented gated layers with and without dropout at :data:`DROPOUT`, and in a
    full run with dropout at shape S too (whose twin without it is the shape-S workload)."""
    gated = [layer for layer in ("LSTM", "GRU") if layer in layers]
    out = [Workload(layer, "documented", **DROPOUT, group="dropout", dropout=rate)
           for layer in gated for rate in (0.0, DROPOUT_RATE)]  # fmt: skip
    if mode == "full":
        out += [Workload(layer, "documented", **SHAPE_S, group="dropout", dropout=DROPOUT_RATE)
                for layer in gated]  # fmt: skip
    return out


def _precision(layers: list[str]) -> list[Workload]:
    """The LSTM (or the first layer) at shape S in bfloat16 and float16, both
    configurations; their float32 twins are the shape-S workloads."""
    layer = "LSTM" if "LSTM" in layers else layers[0]
    return [Workload(layer, c, **SHAPE_S, group="precision", dtype=dtype)
            for c in _configs(layer) for dtype in precision.LOW]  # fmt: skip


def suite(layers: list[str], mode: str = "full") -> list[Workload]:
    """The workloads of a run: shape S for every layer and configuration, a sweep over
    sequence length and one over units (fused and documented LSTM), batch 1, the small
    shape, streaming and dropout. Smoke runs tiny shapes, with one small, one streaming and
    one dropout pair (of the first gated layer) so that every kind is exercised."""
    if mode == "smoke":
        out = [Workload(layer, c, 2, 5, 3, 4, "S") for layer in layers for c in _configs(layer)]
        gated = next((name for name in ("LSTM", "GRU") if name in layers), None)
        if gated:
            out.append(Workload(gated, "fused", 2, 3, 3, 4, "small"))
            out.append(Workload(gated, "fused", 1, 1, 3, 4, "streaming", stateful=True))
            out += [Workload(gated, "documented", 2, 3, 3, 4, "dropout", dropout=rate)
                    for rate in (0.0, DROPOUT_RATE)]  # fmt: skip
        out.append(Workload(layers[0], "fused", 2, 5, 3, 4, "precision", dtype="float16"))
        return out
    out = [Workload(layer, c, **SHAPE_S, group="S") for layer in layers for c in _configs(layer)]
    times = (10, 100, 300) if mode == "quick" else (10, 30, 100, 300, 1000)
    units = (32, 256) if mode == "quick" else (32, 64, 256, 512)
    sweep_layer = "LSTM" if "LSTM" in layers else layers[0]
    for config in _configs(sweep_layer):
        base = dict(SHAPE_S)
        for t in times:
            if t != SHAPE_S["time"]:
                out.append(Workload(sweep_layer, config, **(base | {"time": t}), group="time"))
        for u in units:
            out.append(Workload(sweep_layer, config, **(base | {"units": u}), group="units"))
    for layer in layers:
        out.append(Workload(layer, "fused", **(SHAPE_S | {"batch": 1}), group="latency"))
    return out + _per_call(layers) + _dropout(layers, mode) + _precision(layers)


def peer_layout(workload: Workload, weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights in PyTorch's layout (gates i,f,g,o for LSTM, r,z,n for GRU; weights
    transposed; input and recurrent biases). Only the fused configuration maps exactly."""
    kernel, recurrent, bias = weights
    u = workload.units
    if workload.layer == "GRU":
        order = [1, 0, 2]  # canonical z, r, h -> torch r, z, n

        def reorder(a):
            return np.concatenate([a[..., k * u : (k + 1) * u] for k in order], axis=-1)

        kernel, recurrent, bias = reorder(kernel), reorder(recurrent), reorder(bias)
    if bias.ndim == 2:
        b_ih, b_hh = bias[0], bias[1]
    else:
        b_ih, b_hh = bias, np.zeros_like(bias)
    return {
        "weight_ih_l0": kernel.T,
        "weight_hh_l0": recurrent.T,
        "bias_ih_l0": b_ih,
        "bias_hh_l0": b_hh,
    }
