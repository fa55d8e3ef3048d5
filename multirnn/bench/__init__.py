"""The benchmark harness behind ``multirnn bench``: multirnn engines against the layers a
user would otherwise pick (torch.nn, Keras 3 on each backend, Flax NNX), same shapes and
weights, one worker process per contender. Benchmarks are not tests: nothing here asserts
a speed."""
