"""PyTorch 1.13 side of bench_ddp: DDP on gloo, batch 64 per rank, one
thread per rank. Prints "<model> <world> <median step ms of rank 0>"."""
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def make(cnn):
    torch.manual_seed(0)
    if cnn:
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512),
                         nn.ReLU(), nn.Linear(512, 10))


def worker(rank, world, port, cnn, q):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    m = nn.parallel.DistributedDataParallel(make(cnn))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1 + rank)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    times = []
    for s in range(-5, steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
        if s >= 0:
            times.append((time.perf_counter() - t0) * 1e3)
    if rank == 0:
        q.put(statistics.median(times))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    for cnn in (0, 1):
        for world in (1, 2):
            q = ctx.Queue()
            port = free_port()
            procs = [ctx.Process(target=worker, args=(r, world, port, cnn, q)) for r in range(world)]
            for p in procs:
                p.start()
            ms = q.get(timeout=600)
            for p in procs:
                p.join()
            print("cnn" if cnn else "mlp", world, ms, flush=True)
