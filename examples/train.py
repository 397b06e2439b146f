"""Trains the Fashion-MNIST CNN with DistributedDataParallel.

    trainrun --nproc 2 examples/train.py [--epochs 5] [--resume] ...

A PyTorch script with `torch` replaced by `ember`: DDP over ember's CPU
backend (shared memory between the ranks of one host), a DataLoader with a
DistributedSampler and one worker process per rank, SGD with momentum and a
cosine learning-rate schedule. Rank 0 prints a live progress line (epoch,
step, loss, samples/s over all ranks, ETA) and the test accuracy after each
epoch, and saves a checkpoint after each epoch (written atomically;
--resume continues from it). Run without trainrun it trains in one process.
"""
import argparse
import os
import sys
import time

import ember
import ember.distributed as dist
import ember.nn as nn
import ember.nn.functional as F
from ember.datasets import FashionMNIST, transforms
from ember.nn.parallel import DistributedDataParallel as DDP
from ember.utils.data import DataLoader, DistributedSampler


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
        x = ember.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes per rank")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--checkpoint", default="fashion_mnist_ddp.safetensors")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="gloo", help="gloo (ember's CPU path), tcp, shm")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    return p.parse_args()


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with ember.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += y.numel()
    model.train()
    return correct / max(total, 1)


def main():
    args = parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group(args.backend)
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    ember.manual_seed(args.seed)

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    train_set = FashionMNIST(args.data, train=True, transform=tf)
    test_set = FashionMNIST(args.data, train=False, transform=tf)
    if args.limit:
        train_set = ember.utils.data.Subset(train_set, range(min(args.limit, len(train_set))))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        drop_last=False)
    test_loader = DataLoader(test_set, batch_size=1000)

    model = Net()
    ddp = DDP(model) if distributed else model
    opt = ember.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    steps_per_epoch = len(loader)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)

    start_epoch = 0
    if args.resume:
        if not os.path.exists(args.checkpoint):
            sys.exit(f"train.py: --resume: no checkpoint at {args.checkpoint}")
        ckpt = ember.load(args.checkpoint)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch = int(ckpt["epoch"])
        if rank == 0:
            print(f"resumed from {args.checkpoint} after epoch {start_epoch}", flush=True)
        if distributed:  # every rank continues from rank 0's copy
            for p in model.parameters():
                dist.broadcast(p.data, 0)

    if rank == 0:
        print(f"ember {ember.__version__}: {world} rank(s), {args.workers} loader worker(s) per "
              f"rank, {len(train_set)} training images, batch {args.batch_size} per rank",
              flush=True)
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        t0 = last = time.perf_counter()
        seen, loss_sum, loss_n = 0, 0.0, 0
        for step, (x, y) in enumerate(loader):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            sched.step()
            seen += y.shape[0] * world
            loss_sum += loss.item()
            loss_n += 1
            now = time.perf_counter()
            if rank == 0 and (now - last >= 2 or step == steps_per_epoch - 1):
                rate = seen / (now - t0)
                eta = (steps_per_epoch - step - 1) * args.batch_size * world / rate
                print(f"epoch {epoch + 1}/{args.epochs}  step {step + 1}/{steps_per_epoch}  "
                      f"loss {loss_sum / loss_n:.4f}  lr {opt.param_groups[0]['lr']:.4f}  "
                      f"{rate:.0f} samples/s  eta {eta:.0f}s", flush=True)
                last, loss_sum, loss_n = now, 0.0, 0
        if rank == 0:
            acc = evaluate(model, test_loader)
            print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f}% "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)
            ember.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1}, args.checkpoint)
        if distributed:
            dist.barrier()
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
