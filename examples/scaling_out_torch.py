"""Data-parallel training of a multirnn LSTM with PyTorch's DistributedDataParallel.

Two processes on this machine's CPU, joined by the gloo backend; each trains on its own
half of every batch and DDP averages the gradients, so every rank holds the same weights.
On GPUs: backend "nccl", one process per GPU, the model and batches on f"cuda:{rank}", and
DistributedDataParallel(model, device_ids=[rank]).

    python examples/scaling_out_torch.py
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import multirnn

WORLD_SIZE = 2
STEPS = 5


class Regressor(nn.Module):
    """LSTM over the sequence, mean over time, a linear head."""

    def __init__(self, features: int, units: int = 16):
        super().__init__()
        self.lstm = multirnn.engine("torch").LSTM(units, return_sequences=True,
                                                  input_dim=features, seed=0)  # fmt: skip
        self.head = nn.Linear(units, 1)

    def forward(self, x):
        return self.head(self.lstm(x).mean(dim=1))


def dataset(samples: int = 80, time: int = 10, features: int = 4) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, time, features, generator=generator)
    y = x.sum(dim=(1, 2)).unsqueeze(1) / time  # something learnable
    return TensorDataset(x, y)


def train(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORLD_SIZE))  # ranks share the CPU
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(Regressor(features=4))
    torch.manual_seed(1000 + rank)  # dropout, if any: per-rank masks, reproducible
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = dataset()
    sampler = DistributedSampler(data, num_replicas=WORLD_SIZE, rank=rank, shuffle=False)
    loader = DataLoader(data, batch_size=8, sampler=sampler)  # 8 rows per rank per step
    for step, (x, y) in zip(range(STEPS), loader):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()  # gradients averaged over the ranks here
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)  # for printing: the loss over the whole global batch
        if rank == 0:
            print(f"step {step}: loss {mean.item() / WORLD_SIZE:.4f}")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    mp.spawn(train, args=(free_port(),), nprocs=WORLD_SIZE)
