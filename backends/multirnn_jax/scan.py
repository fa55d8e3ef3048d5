"""The generic path: every option of docs/semantics.md as one ``lax.scan``.

On accelerators the input projections of all steps (with input dropout and the input bias
folded in) are one product before the loop, in time-major layout, and the scan body does
one recurrent product and the cell's elementwise work; on CPU each step computes its own
input product, which XLA runs faster there (see :func:`hoisting`). Masks, recurrent
dropout and ``go_backwards`` are handled with the same body, so one traced program serves
every option and its size does not depend on the sequence length (``unroll`` only changes
how XLA lays it out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from multirnn import builtin_cells
from multirnn.spec import LayerSpec

Array = jnp.ndarray


def _varying(value) -> frozenset:
    """The ``shard_map`` mesh axes ``value`` varies over (empty outside shard_map)."""
    aval = jax.typeof(value)
    manual = getattr(aval, "manual_axis_type", None)
    return manual.varying if manual is not None else getattr(aval, "vma", frozenset())


def vary_like(values: Sequence[Array], *like) -> list[Array]:
    """``values`` marked as varying over every ``shard_map`` axis that the arrays in ``like``
    vary over. A loop's carry must vary over the same axes on entry as on exit, and zero
    initial states (or replicated ones) do not vary while the batch they meet does. A no-op
    outside ``shard_map``."""
    axes = frozenset().union(*(_varying(a) for a in jax.tree.leaves(like)))
    out = []
    for value in values:
        missing = tuple(axes - _varying(value))
        out.append(lax.pcast(value, missing, to="varying") if missing else value)
    return out


def split_bias(spec: LayerSpec, weights: Sequence[Array]) -> tuple[Array, Array | None]:
    """(input-side bias, recurrent-side bias or None) of canonical weights."""
    return builtin_cells.split_bias(jnp, spec, weights)


def generic(
    spec: LayerSpec,
    weights: Sequence[Array],
    x: Array,
    mask: Array | None,
    states: Sequence[Array],
    mi: Array | None,
    mr: Array | None,
    act: Callable,
    ract: Callable | None,
    *,
    hoist: bool = True,
) -> tuple[Array, list[Array]]:
    """Run the layer over ``x`` (batch, time, F); returns (output, final states).

    ``hoist`` computes the input products of all steps before the loop; otherwise each
    step computes its own ``x_t W + b`` next to the recurrent product (faster under XLA on
    CPU, see :func:`hoisting`). Per-gate input dropout masks always hoist.
    """
    kernel, recurrent = weights[0], weights[1]
    bias_in, bias_rec = split_bias(spec, weights)
    product = builtin_cells.GateProduct(jnp, recurrent, spec.units, spec.gates, mr)

    def cell(states, xp):
        return builtin_cells.transition(spec, act, ract, xp, states, product, bias_rec)

    time = x.shape[1]
    if hoist or (mi is not None and mi.ndim == 3):
        xs = builtin_cells.project_inputs(jnp, spec, kernel, bias_in, x, mi)

        def project(x_t):
            return x_t

    else:
        xs = jnp.swapaxes(x if mi is None else x * mi[:, None, :], 0, 1)

        def project(x_t):
            return x_t @ kernel + bias_in

    masks = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]
    if spec.go_backwards:
        xs = xs[::-1]
        masks = None if masks is None else masks[::-1]
    sequences = spec.return_sequences
    states = vary_like(states, xs, recurrent, bias_rec, masks, mr)
    unroll = time if spec.unroll else 1

    if masks is None:

        def body(carry, x_t):
            new = cell(carry, project(x_t))
            return new, (new[0] if sequences else None)

        final, ys = lax.scan(body, states, xs, unroll=unroll)
        last = final[0]
    else:
        zero_output = spec.zero_output_for_mask

        def body(carry, step):
            x_t, keep = step
            old, previous = carry
            new = cell(old, project(x_t))
            kept = [jnp.where(keep, n, s) for n, s in zip(new, old)]
            out = jnp.where(keep, new[0], 0.0 if zero_output else previous)
            return (kept, out), (out if sequences else None)

        start = (states, jnp.zeros_like(states[0]))
        (final, last), ys = lax.scan(body, start, (xs, masks), unroll=unroll)
    output = jnp.swapaxes(ys, 0, 1) if sequences else last
    return output, list(final)


def hoisting(platform: str) -> bool:
    """Whether to hoist the input products out of the loop on this platform.

    On XLA's CPU backend computing ``x_t W`` inside the scan body is faster, forward and in
    training, than slicing a hoisted (time, batch, 4u) projection each step (measured in
    ``benchmarks/notes.md``). Accelerators keep the hoisted product, the layout cuDNN and
    XLA's GPU backend are built around.
    """
    return platform != "cpu"
