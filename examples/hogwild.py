"""Hogwild training on Fashion-MNIST: several processes update one model in
shared memory without locks.

    python3 examples/hogwild.py [--procs 2] [--steps 6000]

The model's parameters move into shared memory (model.share_memory()); the
forked workers (ember.multiprocessing.Process) each draw their own batches
and apply SGD steps straight into the shared weights. The script then
compares the test accuracy with one process that takes all the steps from
the same initial weights (PyTorch's Hogwild example does the same with
torch.multiprocessing); it exits 1 if Hogwild is more than --tolerance
points worse.
"""
import argparse
import sys
import time

import ember
import ember.multiprocessing as mp
import ember.nn as nn
import ember.nn.functional as F
from ember.datasets import FashionMNIST


def make_model():
    ember.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def train(model, x, y, steps, lr, momentum, batch, seed):
    ember.set_num_threads(1)
    opt = ember.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    g = ember.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = ember.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def accuracy(model, x, y):
    with ember.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--steps", type=int, default=6000, help="in total, over all processes")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points")
    args = p.parse_args()
    if args.procs < 1 or args.steps < args.procs or args.batch_size < 1 or not args.lr > 0:
        p.error("need --procs >= 1, --steps >= --procs, --batch-size >= 1, --lr > 0")

    train_set, test_set = FashionMNIST(args.data, train=True), FashionMNIST(args.data, train=False)
    x, y = train_set.data.float() / 255, train_set.targets
    xt, yt = test_set.data.float() / 255, test_set.targets

    t0 = time.perf_counter()
    single = make_model()
    train(single, x, y, args.steps, args.lr, args.momentum, args.batch_size, 1000)
    acc1 = accuracy(single, xt, yt)
    print(f"single process: {args.steps} steps, test accuracy {100 * acc1:.2f}% "
          f"({time.perf_counter() - t0:.1f}s)")

    t0 = time.perf_counter()
    model = make_model()
    model.share_memory()
    procs = []
    for rank in range(args.procs):
        steps = args.steps // args.procs + (rank < args.steps % args.procs)
        procs.append(mp.Process(target=train, args=(model, x, y, steps, args.lr, args.momentum,
                                                    args.batch_size, 2000 + rank)))
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode != 0 for proc in procs):
        sys.exit("hogwild.py: a worker failed")
    accn = accuracy(model, xt, yt)
    print(f"hogwild, {args.procs} processes: {args.steps} steps in total, test accuracy "
          f"{100 * accn:.2f}% ({time.perf_counter() - t0:.1f}s)")
    diff = 100 * (acc1 - accn)
    print(f"difference: {diff:.2f} points (tolerance {args.tolerance:.2f})")
    sys.exit(1 if diff > args.tolerance else 0)


if __name__ == "__main__":
    main()
