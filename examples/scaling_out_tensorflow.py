"""Data-parallel training of a multirnn LSTM with tf.distribute.MirroredStrategy.

On a CPU, TensorFlow is asked to split it into two logical devices (this must happen
before TensorFlow starts using it); on GPUs leave that out and MirroredStrategy() takes
every visible GPU. Each replica runs its part of every batch; the gradients are summed.

    python examples/scaling_out_tensorflow.py
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import multirnn  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 10, 4)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None] / 10
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")]
    )
    print(f"{strategy.num_replicas_in_sync} replicas")
    with strategy.scope():  # variables created here are mirrored on every replica
        model = keras.Sequential([
            keras.Input((10, 4)),
            multirnn.engine("tensorflow").LSTM(16, return_sequences=True, seed=0),
            keras.layers.GlobalAveragePooling1D(),  # mean over time
            keras.layers.Dense(1),
        ])  # fmt: skip
        model.compile(keras.optimizers.Adam(1e-2), "mse")
    # 16 rows per step, 8 per replica; 5 steps
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    print(f"loss after one epoch: {history.history['loss'][-1]:.4f}")


if __name__ == "__main__":
    main()
