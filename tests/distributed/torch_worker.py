"""PyTorch scenarios for ``test_torch.py``, run as a script in a process of its own.

``python torch_worker.py RANK PORT OUT.json`` is one of two CPU processes joined by gloo
(``test_torch.py`` starts both). Every scenario runs in both, and rank 0 writes each
rank's largest absolute differences from the same training run in a single process on the
concatenated batch (or the error), and the seconds each scenario took.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from _launch import run_scenarios  # the script's own folder is on sys.path
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import multirnn

WORLD = 2
BATCH, TIME, FEATURES, UNITS = 8, 6, 3, 8
SHARD = BATCH // WORLD
LR = 0.1


class Model(nn.Module):
    """LSTM (documented defaults: the generic path with its hand-written backward pass), a
    GRU on PyTorch's fused kernel, the mean over time and a linear head, in float64."""

    def __init__(self, **options):
        super().__init__()
        engine = multirnn.engine("torch")
        self.lstm = engine.LSTM(UNITS, return_sequences=True, input_dim=FEATURES, seed=0,
                                dtype="float64", **options)  # fmt: skip
        self.gru = engine.GRU(UNITS, return_sequences=True, input_dim=UNITS, seed=1,
                              dtype="float64", activation="tanh", recurrent_activation="sigmoid",
                              reset_after=True, implementation=2, **options)  # fmt: skip
        self.head = nn.Linear(UNITS, 1, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.gru(self.lstm(x)).mean(dim=1))


def new_model(**options) -> Model:
    torch.manual_seed(0)  # the head's initial weights
    return Model(**options)


def data(time: int = TIME) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, time, FEATURES))
    y = rng.standard_normal((BATCH, 1))
    return torch.from_numpy(x), torch.from_numpy(y)


def rows(rank: int) -> slice:
    return slice(rank * SHARD, (rank + 1) * SHARD)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def single_process_steps(chunks, y, seeds=None, **options):
    """The reference: one process, the whole batch, the mean loss; with ``seeds``, each
    shard's rows run with the dropout masks that rank's generator draws."""
    model = new_model(**options)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    first_grads = None
    for x in chunks:
        optimizer.zero_grad()
        if seeds is None:
            loss = nn.functional.mse_loss(model(x), y)
        else:  # one forward per shard, the mean of the shards' losses
            losses = []
            for rank, seed in enumerate(seeds):
                torch.manual_seed(seed)
                losses.append(nn.functional.mse_loss(model(x[rows(rank)]), y[rows(rank)]))
            loss = sum(losses) / len(losses)
        loss.backward()
        first_grads = first_grads or grads(model)
        optimizer.step()
    return model, first_grads


def ddp_steps(rank, chunks, y, seed=None, before_wrap=None, **options):
    model = new_model(**options)
    if before_wrap is not None:
        before_wrap(model)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
    if seed is not None:
        torch.manual_seed(seed)
    first_grads = None
    for x in chunks:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(x[rows(rank)]), y[rows(rank)])
        loss.backward()  # DDP averages the gradients over the ranks
        first_grads = first_grads or grads(model)
        optimizer.step()
    return model, first_grads


def scenario_ddp(rank):
    """Two optimizer steps: gradients of the first, weights after the second."""
    x, y = data()
    model, g = ddp_steps(rank, [x, x], y)
    ref, ref_g = single_process_steps([x, x], y)
    return {"grads": max_diff(g, ref_g), "weights": max_diff(weights(model), weights(ref))}


def scenario_stateful(rank, before_wrap=None):
    """Stateful layers, two consecutive chunks (truncated backpropagation through time):
    each rank carries the states of its own rows."""
    x, y = data(time=2 * TIME)
    chunks = [x[:, :TIME], x[:, TIME:]]
    model, g = ddp_steps(rank, chunks, y, before_wrap=before_wrap, stateful=True)
    ref, ref_g = single_process_steps(chunks, y, stateful=True)
    states = max(
        float((mine - theirs[rows(rank)]).abs().max())
        for layer, ref_layer in ((model.lstm, ref.lstm), (model.gru, ref.gru))
        for mine, theirs in zip(layer.states, ref_layer.states)
    )
    return {
        "grads": max_diff(g, ref_g),
        "weights": max_diff(weights(model), weights(ref)),
        "states": states,
    }


def scenario_stateful_called_before_wrapping(rank):
    """The same, with states that exist when DDP wraps the model (a lazy layer's first
    call, then reset_states()): DDP must not replace them by rank 0's."""

    def call_once(model):
        model(torch.zeros(SHARD, TIME, FEATURES, dtype=torch.float64))
        model.lstm.reset_states()
        model.gru.reset_states()

    return scenario_stateful(rank, before_wrap=call_once)


def scenario_dropout(rank):
    """Dropout 0.25 in both layers, torch.manual_seed(100 + rank) on each rank."""
    x, y = data()
    seeds = [100 + r for r in range(WORLD)]
    model, g = ddp_steps(rank, [x], y, seed=seeds[rank], dropout=0.25)
    ref, ref_g = single_process_steps([x], y, seeds=seeds, dropout=0.25)
    # the ranks draw different masks: the same rows give different outputs
    probe = new_model(dropout=0.25)
    torch.manual_seed(seeds[rank])
    with torch.no_grad():
        out = probe.lstm(x[:SHARD])
    outs = [torch.empty_like(out) for _ in range(WORLD)]
    dist.all_gather(outs, out)
    # and the same seed draws the same masks again
    torch.manual_seed(seeds[rank])
    with torch.no_grad():
        again = probe.lstm(x[:SHARD])
    return {
        "grads": max_diff(g, ref_g),
        "weights": max_diff(weights(model), weights(ref)),
        "ranks_differ": float((outs[0] - outs[1]).abs().max()),
        "rerun": float((again - out).abs().max()),
    }


def scenario_fsdp(rank):
    """FSDP2 (fully_shard) over a CPU device mesh: one step, gradients and weights."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    x, y = data()
    mesh = init_device_mesh("cpu", (WORLD,))
    model = new_model()
    fully_shard(model.lstm, mesh=mesh)
    fully_shard(model.gru, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss = nn.functional.mse_loss(model(x[rows(rank)]), y[rows(rank)])
    loss.backward()
    g = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    optimizer.step()
    w = {n: p.detach().full_tensor() for n, p in model.named_parameters()}
    ref, ref_g = single_process_steps([x], y)
    return {"grads": max_diff(g, ref_g), "weights": max_diff(w, weights(ref))}


SCENARIOS = {
    "ddp": scenario_ddp,
    "stateful": scenario_stateful,
    "stateful_called_before_wrapping": scenario_stateful_called_before_wrapping,
    "dropout": scenario_dropout,
    "fsdp": scenario_fsdp,
}


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    scenarios = {name: functools.partial(scenario, rank) for name, scenario in SCENARIOS.items()}
    report = run_scenarios(scenarios, after=dist.barrier)
    reports = [None] * WORLD
    dist.all_gather_object(reports, report)
    if rank == 0:
        with open(out, "w") as file:
            json.dump(reports, file, indent=1)
    dist.destroy_process_group()
    # Leave without the interpreter's finalization: there, gloo's worker threads can still
    # release tensors after Python is gone and abort the process ("terminate called without
    # an active exception", SIGABRT, about one run in four on this 2-core machine, after
    # the group was destroyed and every result was gathered and written).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # torch_worker.py RANK PORT OUT.json, one process per rank
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
