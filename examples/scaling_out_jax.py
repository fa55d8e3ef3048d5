"""Data-parallel training of a multirnn LSTM in JAX: the batch sharded over a device mesh.

On a CPU, XLA is asked for two host devices (this must happen before JAX starts); on GPUs
or TPUs leave XLA_FLAGS alone and the mesh takes every accelerator. jit compiles one
program for the whole mesh: each device runs its rows, and XLA sums the gradients.

    python examples/scaling_out_jax.py
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import multirnn

STEPS = 5
mesh = Mesh(np.array(jax.devices()), ("data",))
rows = NamedSharding(mesh, P("data"))  # batch split over the devices
replicated = NamedSharding(mesh, P())  # weights: a copy on every device


def new_model(features: int, units: int = 16):
    """LSTM over the sequence, mean over time, a linear head (a pytree)."""
    lstm = multirnn.engine("jax").LSTM(units, return_sequences=True, input_dim=features,
                                       seed=0)  # fmt: skip
    head = {"w": jnp.zeros((units, 1)), "b": jnp.zeros(1)}
    return {"lstm": lstm, "head": head}


def loss_fn(model, x, y):
    h = model["lstm"](x).mean(axis=1)
    return jnp.mean((h @ model["head"]["w"] + model["head"]["b"] - y) ** 2)


optimizer = optax.adam(1e-2)


@jax.jit
def train_step(model, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(model, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, model)
    return optax.apply_updates(model, updates), opt_state, loss


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10, 4)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None] / 10
    model = jax.device_put(new_model(features=4), replicated)
    opt_state = jax.device_put(optimizer.init(model), replicated)
    print(f"{len(jax.devices())} devices")
    for step in range(STEPS):
        batch = slice(16 * (step % 4), 16 * (step % 4 + 1))  # 16 rows: 8 per device
        xb, yb = jax.device_put((x[batch], y[batch]), rows)
        model, opt_state, loss = train_step(model, opt_state, xb, yb)
        print(f"step {step}: loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
