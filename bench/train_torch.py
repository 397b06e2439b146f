"""examples/train.py for PyTorch 1.13 (the reference of bench_python.py):
the same CNN, DistributedSampler, DataLoader with the same per-sample
ToTensor + Normalize work, DDP on gloo, SGD + cosine schedule. torchvision
is not needed: the IDX files are read with gzip + numpy and the transforms
are the same two steps written with torch ops.

    torchrun --nproc_per_node 2 bench/train_torch.py --epochs 1
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMNIST(Dataset):
    def __init__(self, root, train):
        prefix = "train" if train else "t10k"
        self.data = torch.from_numpy(read_idx(f"{root}/{prefix}-images-idx3-ubyte.gz").copy())
        self.targets = torch.from_numpy(read_idx(f"{root}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64))

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = self.data[i].unsqueeze(0).to(torch.float32).div(255)  # ToTensor
        img = (img - 0.2860) / 0.3530                                 # Normalize
        return img, int(self.targets[i])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(1600, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    train_set = FashionMNIST(args.data, True)
    if args.limit:
        train_set = Subset(train_set, range(min(args.limit, len(train_set))))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    model = Net()
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        seen = 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
            sched.step()
            seen += y.shape[0] * world
        if rank == 0:
            print(f"epoch {epoch + 1}: {seen / (time.perf_counter() - t0):.0f} samples/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
