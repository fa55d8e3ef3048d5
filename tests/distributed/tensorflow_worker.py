"""TensorFlow scenarios for ``test_tensorflow.py``, run as a script in a process of its own.

``python tensorflow_worker.py OUT.json`` splits the CPU into two logical devices (before
TensorFlow starts), runs every scenario under a ``MirroredStrategy`` over them and on one
device, and writes, per scenario, the largest absolute differences, or the error.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf

REPLICAS = 2
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
from _launch import run_scenarios  # noqa: E402  (the script folder is on sys.path)

import multirnn  # noqa: E402

keras.config.set_floatx("float64")
BATCH, TIME, FEATURES, UNITS = 8, 6, 3, 8
SHARD = BATCH // REPLICAS
LR = 0.1
DEVICES = [d.name for d in tf.config.list_logical_devices("CPU")]


def new_model(**options) -> keras.Model:
    """An LSTM (documented defaults), the mean over time and a linear head, in float64."""
    rng = np.random.default_rng(2)
    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(
        rng.standard_normal((UNITS, 1)) / UNITS))  # fmt: skip
    return keras.Sequential([
        keras.Input((TIME, FEATURES)),
        multirnn.engine("tensorflow").LSTM(UNITS, return_sequences=True, seed=0, **options),
        keras.layers.GlobalAveragePooling1D(),
        head,
    ])  # fmt: skip


def data(time: int = TIME):
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, time, FEATURES)), rng.standard_normal((BATCH, 1))


def diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def per_replica(strategy, array):
    """Replica i gets rows i*SHARD ... (i+1)*SHARD - 1."""
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * SHARD :][:SHARD])
    )


def custom_step(strategy, model, optimizer, x, y):
    """One step of a custom loop: each replica the loss of its rows scaled to the global
    batch (tf.nn.compute_average_loss); the optimizer sums the replicas' gradients."""

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = tf.square(model(x, training=True) - y)[:, 0]
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, grads

    @tf.function
    def step(x, y):
        loss, grads = strategy.run(replica_step, args=(x, y))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        return total, [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]

    return step(x, y)


def single_device_custom_step(x, y, **options):
    model = new_model(**options)
    optimizer = keras.optimizers.SGD(LR)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(tf.constant(x), training=True) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return model, loss, grads


def scenario_custom_loop():
    x, y = data()
    strategy = tf.distribute.MirroredStrategy(DEVICES)
    with strategy.scope():
        model = new_model()
        optimizer = keras.optimizers.SGD(LR)
    loss, grads = custom_step(strategy, model, optimizer, per_replica(strategy, x),
                              per_replica(strategy, y))  # fmt: skip
    ref, ref_loss, ref_grads = single_device_custom_step(x, y)
    return {
        "loss": diff([loss], [ref_loss]),
        "grads": diff(grads, ref_grads),
        "weights": diff(values(model.weights), values(ref.weights)),
    }


def scenario_fit():
    """model.fit, one epoch of two steps (batch 8 split over the replicas), no shuffling."""
    x, y = data()
    x, y = np.concatenate([x, x[::-1]]), np.concatenate([y, y[::-1]])
    models = []
    for strategy in (tf.distribute.MirroredStrategy(DEVICES), tf.distribute.get_strategy()):
        with strategy.scope():
            model = new_model()
            model.compile(keras.optimizers.SGD(LR), "mse")
        history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        models.append((model, history.history["loss"][-1]))
    (model, loss), (ref, ref_loss) = models
    return {
        "loss": abs(loss - ref_loss),
        "weights": diff(values(model.weights), values(ref.weights)),
    }


def scenario_dropout():
    """Dropout 0.25 (seed=0): every replica draws its own masks (the same rows give different
    outputs on the two replicas), and a second model with the same seed draws the same."""
    x, _ = data()
    strategy = tf.distribute.MirroredStrategy(DEVICES)

    def run():
        with strategy.scope():
            layer = multirnn.engine("tensorflow").LSTM(UNITS, seed=0, dropout=0.25,
                                                       implementation=2)  # fmt: skip
            layer.build((None, TIME, FEATURES))
        same_rows = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(x[:SHARD])
        )

        def forward(v):
            return layer(v, training=True)

        call = tf.function(lambda v: strategy.run(forward, args=(v,)))
        return [np.array(o) for _ in range(2) for o in strategy.experimental_local_results(
            call(same_rows))]  # fmt: skip

    first, again = run(), run()
    return {
        "replicas_differ": diff([first[0]], [first[1]]),
        "calls_differ": diff([first[0]], [first[2]]),
        "rerun": diff(first, again),
    }


def scenario_stateful():
    """A stateful LSTM over two consecutive chunks: each replica carries the states of its
    own rows, equal to those rows of a single-device run over the whole batch."""
    x, _ = data(time=2 * TIME)
    chunks = [x[:, :TIME], x[:, TIME:]]
    strategy = tf.distribute.MirroredStrategy(DEVICES)
    engine = multirnn.engine("tensorflow")
    with strategy.scope():
        layer = engine.LSTM(UNITS, seed=0, stateful=True, input_dim=FEATURES)

    def forward(v):
        layer(v)
        return layer.states  # in a replica: this replica's states

    call = tf.function(lambda v: strategy.run(forward, args=(v,)))
    for chunk in chunks:
        states = call(per_replica(strategy, chunk))
    ref = engine.LSTM(UNITS, seed=0, stateful=True, input_dim=FEATURES)
    for chunk in chunks:
        ref(tf.constant(chunk))
    states = [np.concatenate(strategy.experimental_local_results(s)) for s in states]
    return {"states": diff(states, values(ref.states))}


SCENARIOS = {
    "custom_loop": scenario_custom_loop,
    "fit": scenario_fit,
    "dropout": scenario_dropout,
    "stateful": scenario_stateful,
}


def main(out: str) -> None:
    report = {"devices": DEVICES, **run_scenarios(SCENARIOS)}
    with open(out, "w") as file:
        json.dump(report, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
