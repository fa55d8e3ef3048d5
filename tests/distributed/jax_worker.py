"""JAX scenarios for ``test_jax.py``, run as a script in a process of its own.

``python jax_worker.py OUT.json`` needs two host CPU devices and 64-bit mode, set before JAX
starts (``XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_ENABLE_X64=1``; the test
sets them). It writes, per scenario, the largest absolute differences between the batch
sharded over a device mesh and the same computation on one device, or the error.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _launch import run_scenarios  # the script's own folder is on sys.path
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import multirnn

BATCH, TIME, FEATURES, UNITS = 8, 6, 3, 8
DEVICES = jax.devices()
MESH = Mesh(np.array(DEVICES), ("data",))
SHARDS = len(DEVICES)
REPLICATED = NamedSharding(MESH, P())
BY_ROWS = NamedSharding(MESH, P("data"))
ONE_DEVICE = jax.sharding.SingleDeviceSharding(DEVICES[0])
OPTIMIZER = optax.sgd(0.1)


def new_model(**options):
    """An LSTM (the documented defaults), the mean over time and a linear head: a pytree of a
    layer and arrays, in float64."""
    lstm = multirnn.engine("jax").LSTM(UNITS, return_sequences=True, input_dim=FEATURES,
                                       seed=0, dtype="float64", **options)  # fmt: skip
    rng = np.random.default_rng(2)
    head = {"w": jnp.asarray(rng.standard_normal((UNITS, 1)) / UNITS), "b": jnp.zeros(1)}
    return {"lstm": lstm, "head": head}


def predict(model, x, key=None):
    h = model["lstm"](x, training=key is not None, key=key)
    return h.mean(axis=1) @ model["head"]["w"] + model["head"]["b"]


def loss_fn(model, x, y, key=None):
    out = predict(model, x, key)
    return jnp.mean((out - y) ** 2), out


def data(time: int = TIME):
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, time, FEATURES)), rng.standard_normal((BATCH, 1))


def diff(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


def placed(tree, sharding):
    return jax.device_put(tree, sharding)


@jax.jit
def train_step(model, opt_state, x, y):
    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, x, y)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, model)
    return optax.apply_updates(model, updates), loss, out, grads


ONE_DEVICE_RUN = {}


def one_device_step():
    """The reference: one SGD step on one device, the whole batch."""
    if not ONE_DEVICE_RUN:
        x, y = placed(data(), ONE_DEVICE)
        model = placed(new_model(), ONE_DEVICE)
        ONE_DEVICE_RUN["step"] = train_step(model, OPTIMIZER.init(model), x, y)
    return ONE_DEVICE_RUN["step"]


def scenario_named_sharding():
    """jit with the batch sharded over the mesh (weights replicated) against one device:
    predictions, loss, gradients and the weights after one SGD step."""
    x, y = placed(data(), BY_ROWS)
    model = placed(new_model(), REPLICATED)
    new, loss, out, grads = train_step(model, OPTIMIZER.init(model), x, y)
    # the work was split over the devices
    assert len(out.sharding.device_set) == SHARDS and out.sharding.spec[0] == "data", out.sharding
    ref_new, ref_loss, ref_out, ref_grads = one_device_step()
    return {"outputs": diff(out, ref_out), "loss": diff(loss, ref_loss),
            "grads": diff(grads, ref_grads), "weights": diff(new, ref_new)}  # fmt: skip


def scenario_shard_map():
    """shard_map, each device the loss of its own rows, against the gradient of the mean loss
    over the whole batch on one device. With shard_map's default check_vma=True, JAX sums
    the gradients of replicated weights over the devices itself, so the loss to
    differentiate is the pmean of the per-device losses; with check_vma=False each device
    gets its own gradients, and pmean averages them."""
    args = placed(new_model(), REPLICATED), *placed(data(), BY_ROWS)
    _, ref_loss, _, ref_grads = one_device_step()
    specs = {"mesh": MESH, "in_specs": (P(), P("data"), P("data")), "out_specs": (P(), P())}

    @jax.jit
    @jax.shard_map(**specs)
    def checked(model, x, y):
        return jax.value_and_grad(lambda m: jax.lax.pmean(loss_fn(m, x, y)[0], "data"))(model)

    @jax.jit
    @jax.shard_map(**specs, check_vma=False)
    def unchecked(model, x, y):
        loss, grads = jax.value_and_grad(lambda m: loss_fn(m, x, y)[0])(model)
        return jax.lax.pmean(loss, "data"), jax.lax.pmean(grads, "data")

    report = {}
    for name, step in (("check_vma", checked), ("no_check_vma", unchecked)):
        loss, grads = step(*args)
        report[f"{name}_loss"] = diff(loss, ref_loss)
        report[f"{name}_grads"] = diff(grads, ref_grads)
    return report


def scenario_dropout():
    """Dropout 0.25. Under jit with a sharded batch the one key draws the same masks as on
    one device. Under shard_map each device folds its index into the key: its own masks,
    equal to one device drawing with the folded key for those rows, the same on a rerun."""
    x, _ = data()
    model = new_model(dropout=0.25, implementation=2)  # one mask shared by the gates
    key = jax.random.key(7)
    on_one = jax.jit(predict)
    sharded = on_one(placed(model, REPLICATED), placed(x, BY_ROWS), key)
    one = on_one(model, x, key)

    @jax.jit
    @jax.shard_map(mesh=MESH, in_specs=(P(), P("data"), P()), out_specs=P("data"))
    def per_device(model, x, key):
        return predict(model, x, jax.random.fold_in(key, jax.lax.axis_index("data")))

    same_rows = np.concatenate([x[:2]] * SHARDS)  # every device gets the same two rows
    args = placed(model, REPLICATED), placed(same_rows, BY_ROWS), placed(key, REPLICATED)
    out = per_device(*args)
    again = per_device(*args)
    expected = [on_one(model, x[:2], jax.random.fold_in(key, i)) for i in range(SHARDS)]
    return {
        "jit_outputs": diff(sharded, one),
        "shard_map_outputs": diff(out, jnp.concatenate(expected)),
        "rerun": diff(out, again),
        "devices_differ": diff(out[:2], out[2:4]),
    }


def scenario_stateful():
    """Stateful layers threaded through layer.apply: the states keep the batch's sharding
    (each device carries its own rows' states) and equal the one-device states."""
    x, _ = data(time=2 * TIME)
    engine = multirnn.engine("jax")
    layer = engine.LSTM(UNITS, stateful=True, input_dim=FEATURES, seed=0, dtype="float64")
    step = jax.jit(lambda layer, states, chunk: layer.apply(chunk, states=states))

    def run(chunk_sharding, layer):
        states = None
        for chunk in (x[:, :TIME], x[:, TIME:]):
            out, states = step(layer, states, placed(chunk, chunk_sharding))
        return out, states

    out, states = run(BY_ROWS, placed(layer, REPLICATED))
    ref_out, ref_states = run(ONE_DEVICE, layer)
    assert all(s.sharding.spec == P("data") for s in states), [s.sharding for s in states]
    return {"outputs": diff(out, ref_out), "states": diff(states, ref_states)}


SCENARIOS = {
    "named_sharding": scenario_named_sharding,
    "shard_map": scenario_shard_map,
    "dropout": scenario_dropout,
    "stateful": scenario_stateful,
}


def main(out: str) -> None:
    report = {"devices": len(DEVICES), "x64": bool(jax.config.jax_enable_x64)}
    report.update(run_scenarios(SCENARIOS))
    with open(out, "w") as file:
        json.dump(report, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
