"""PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` <-> multirnn layers (torch imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from multirnn.convert import layouts
from multirnn.convert._common import build, build_bidirectional, is_bidirectional, to_numpy
from multirnn.convert.layouts import ConversionError
from multirnn.spec import DTYPES, LayerSpec

_KINDS = {"RNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU"}
_FIXED = {"activation": "tanh", "recurrent_activation": "sigmoid"}
#: the methods a torch.nn.RNN/LSTM/GRU call runs: a subclass that replaces any of them may
#: compute something else, which reading the weights cannot reveal
_CALL_PATH = ("forward", "__call__", "_call_impl", "_wrapped_call_impl", "__getattr__",
              "__getattribute__", "check_input", "check_forward_args", "check_hidden_size",
              "get_expected_hidden_size", "get_expected_cell_size", "permute_hidden",
              "_update_flat_weights", "_init_flat_weights", "_weights_have_changed",
              "flatten_parameters")  # fmt: skip


def _dtype(module) -> str:
    dtypes = {str(p.dtype).removeprefix("torch.") for p in module.parameters()}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise ConversionError(
            f"torch module parameters must all be one of {', '.join(DTYPES)}, got {dtypes}"
        )
    return dtypes.pop()


def _tensor(torch, array: np.ndarray):
    """A NumPy array as a tensor; ml_dtypes' bfloat16 by its bits (torch reads no such
    array)."""
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _base(module) -> str:
    """The torch class whose computation ``module`` is proven to run (``RNN``, ``LSTM`` or
    ``GRU``): the class itself, or a subclass (such as the one ``torch.nn.utils.parametrize``
    creates) that keeps every method a call runs. Anything else could compute something the
    weights do not show, so it is refused rather than converted approximately."""
    try:
        import torch
    except ImportError:
        torch = None
    name = type(module).__name__
    bases = {} if torch is None else {k: getattr(torch.nn, k) for k in _KINDS}
    kind = next((k for k, cls in bases.items() if isinstance(module, cls)), None)
    if kind is None:
        raise ConversionError(f"from_torch takes torch.nn.RNN, LSTM or GRU, got {name}")
    base = bases[kind]
    replaced = [m for m in _CALL_PATH
                if getattr(type(module), m, None) is not getattr(base, m, None)]  # fmt: skip
    if replaced:
        raise ConversionError(
            f"from_torch: {name} subclasses torch.nn.{kind} but replaces {', '.join(replaced)}; "
            f"only what torch.nn.{kind} itself computes can be converted exactly (convert a "
            f"torch.nn.{kind} holding the same weights if that is what it computes)"
        )
    hooks = [h for h in module._forward_pre_hooks.values() if not _is_weight_norm(h)]
    hooks += list(module._forward_hooks.values())
    if hooks:
        shown = ", ".join(getattr(h, "__qualname__", type(h).__name__) for h in hooks)
        raise ConversionError(
            f"from_torch: this torch.nn.{kind} has forward hooks ({shown}) that may change "
            "what it computes; remove them (handle.remove()) before converting"
        )
    return kind


def _is_weight_norm(hook) -> bool:
    from torch.nn.utils.weight_norm import WeightNorm

    return isinstance(hook, WeightNorm)


def _weight(module, name: str):
    """The weight ``name`` as ``module``'s forward uses it: a parametrized weight through its
    parametrization (attribute access computes it), a legacy ``weight_norm`` weight computed
    from its ``_g`` and ``_v`` parameters as the pre-hook would before the next call (the
    stored attribute is whatever the last call left)."""
    for hook in module._forward_pre_hooks.values():
        if _is_weight_norm(hook) and hook.name == name:
            return hook.compute_weight(module)
    return getattr(module, name)


def spec_kwargs(module) -> tuple[str, dict[str, Any]]:
    """(multirnn layer name, keyword arguments) computing what ``module`` computes."""
    layer = _KINDS[_base(module)]
    if getattr(module, "proj_size", 0):
        raise ConversionError(
            f"torch LSTM proj_size={module.proj_size} projects the hidden state through "
            "weight_hr; no multirnn LSTM computes that"
        )
    kwargs: dict[str, Any] = {"use_bias": bool(module.bias), "return_sequences": True,
                              "dtype": _dtype(module)}  # fmt: skip
    if layer == "SimpleRNN":
        kwargs["activation"] = module.nonlinearity
    else:
        kwargs.update(_FIXED)
    if layer == "GRU":
        kwargs["reset_after"] = True
    return layer, kwargs


def from_torch(module, *, backend: str | None = None, ignore_training_options: bool = False):
    """The multirnn layer (or, for ``num_layers > 1``, the list of layers, each fed the
    previous one's sequence) computing what ``module`` computes.

    Every layer returns sequences, like the torch module. ``batch_first`` is irrelevant:
    multirnn layers take batch-major inputs. Inter-layer ``dropout`` (training only, a new
    mask per step) has no multirnn form; it is refused unless ``ignore_training_options``.
    """
    layer, kwargs = spec_kwargs(module)
    if module.dropout and module.num_layers > 1 and not ignore_training_options:
        raise ConversionError(
            f"torch dropout={module.dropout} between layers (training only) has no multirnn "
            "form; pass ignore_training_options=True to convert without it"
        )

    def direction(k: int, suffix: str) -> list[np.ndarray]:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if module.bias else 2]
        params = {name: to_numpy(_weight(module, f"{name}_l{k}{suffix}")).copy()
                  for name in names}  # fmt: skip
        return layouts.from_torch(layer, module.hidden_size, params["weight_ih"],
                                  params["weight_hh"], params.get("bias_ih"),
                                  params.get("bias_hh"))  # fmt: skip

    layers = []
    for k in range(module.num_layers):
        if module.bidirectional:  # torch's output is Keras's Bidirectional(merge "concat")
            layers.append(build_bidirectional(layer, module.hidden_size, kwargs,
                                              direction(k, ""), direction(k, "_reverse"),
                                              "concat", backend))  # fmt: skip
        else:
            layers.append(build(layer, module.hidden_size, kwargs, direction(k, ""), backend))
    return layers[0] if len(layers) == 1 else layers


def check_exportable(spec: LayerSpec, ignore_training_options: bool = False) -> None:
    """Refuse what no torch module computes (or, unless ignored, what it cannot train)."""
    if spec.layer == "SimpleRNN":
        if spec.activation not in ("tanh", "relu"):
            raise ConversionError(
                f"torch.nn.RNN computes tanh or relu only; this SimpleRNN has "
                f"activation={spec.activation!r}"
            )
    elif spec.activation != "tanh" or spec.recurrent_activation != "sigmoid":
        raise ConversionError(
            f"torch.nn.{spec.layer} computes activation='tanh', recurrent_activation='sigmoid'"
            f" only; this layer has {spec.activation!r}, {spec.recurrent_activation!r}"
        )
    if spec.layer == "GRU" and not spec.reset_after:
        raise ConversionError(
            "torch.nn.GRU applies the reset gate after the recurrent product "
            "(reset_after=True); this GRU has reset_after=False, which no torch GRU computes"
        )
    if spec.go_backwards:
        raise ConversionError(
            "a go_backwards layer returns its outputs in reversed order; torch.nn modules "
            "have no such mode (bidirectional modules need multirnn's Bidirectional)"
        )
    if ignore_training_options:
        return
    if spec.stateful:
        raise ConversionError(
            "torch.nn modules do not carry states between calls (stateful=True); pass "
            "ignore_training_options=True to convert the weights anyway"
        )
    training = {k: getattr(spec, k) for k in ("dropout", "recurrent_dropout", "kernel_regularizer",
                "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "recurrent_constraint", "bias_constraint")}  # fmt: skip
    used = {k: v for k, v in training.items() if v}
    if used:
        raise ConversionError(
            f"torch.nn.{spec.layer} has no equivalent of {', '.join(sorted(used))} (training "
            "options); pass ignore_training_options=True to convert without them"
        )


def to_torch(layers, *, batch_first: bool = True, ignore_training_options: bool = False):
    """A ``torch.nn.RNN``/``LSTM``/``GRU`` computing what ``layers`` compute: one built
    layer, or a list of alike layers stacked (``num_layers = len(layers)``)."""
    import torch

    stack: Sequence[Any] = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if not stack:
        raise ConversionError("to_torch needs at least one layer")
    wrapped = [is_bidirectional(layer) for layer in stack]
    if any(wrapped) and not all(wrapped):
        raise ConversionError("to_torch: a torch module is bidirectional in every layer or in "
                              "none; this stack mixes Bidirectional and plain layers")  # fmt: skip
    bidirectional = all(wrapped)
    if bidirectional:
        for k, layer in enumerate(stack):
            if layer.merge_mode != "concat":
                raise ConversionError(
                    f"to_torch: a bidirectional torch module concatenates the directions; "
                    f"layer {k} has merge_mode={layer.merge_mode!r}"
                )
        directions = [(layer.forward_layer, layer.backward_layer) for layer in stack]
        stack = [layer.forward_layer for layer in stack]
    specs = [layer.spec.replace(zero_output_for_mask=False) for layer in stack]
    first = specs[0]
    for k, spec in enumerate(specs):
        check_exportable(spec, ignore_training_options)
        if not getattr(stack[k], "built", False):
            raise ConversionError(f"to_torch: layer {k} has no weights yet; build it first")
        differs = [f for f in ("layer", "units", "activation", "use_bias", "reset_after")
                   if getattr(spec, f) != getattr(first, f)]  # fmt: skip
        if differs:
            raise ConversionError(
                f"to_torch: a torch module stacks alike layers; layer {k} differs from layer "
                f"0 in {', '.join(differs)}"
            )
    weights = [[np.asarray(w) for w in layer.get_weights()] for layer in stack]
    width = first.units * (2 if bidirectional else 1)
    for k in range(1, len(stack)):
        if weights[k][0].shape[0] != width:
            raise ConversionError(
                f"to_torch: layer {k} takes {weights[k][0].shape[0]} features, but layer "
                f"{k - 1} outputs {width}"
            )
    cls = {"SimpleRNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[first.layer]
    extra = {"nonlinearity": first.activation} if first.layer == "SimpleRNN" else {}
    dtype = getattr(torch, str(weights[0][0].dtype))
    module = cls(weights[0][0].shape[0], first.units, num_layers=len(stack), bias=first.use_bias,
                 batch_first=batch_first, dtype=dtype, bidirectional=bidirectional,
                 **extra)  # fmt: skip
    with torch.no_grad():
        for k, (spec, ws) in enumerate(zip(specs, weights)):
            parts = [("", ws)]
            if bidirectional:
                parts.append(("_reverse", [np.asarray(w) for w in directions[k][1].get_weights()]))
            for suffix, arrays in parts:
                for name, value in layouts.to_torch(spec, arrays).items():
                    getattr(module, f"{name}_l{k}{suffix}").copy_(_tensor(torch, value))
    return module
