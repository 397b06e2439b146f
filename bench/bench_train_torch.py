"""PyTorch 1.13 side of bench_train: the same models, batch and optimizer.
Prints "<model> <threads> <median step ms>" for 1 and 2 threads (PyTorch's
OpenMP pool and the OpenBLAS it calls both sized to that count)."""
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512),
                         nn.ReLU(), nn.Linear(512, 10))


def time_steps(make):
    torch.manual_seed(0)
    m = make()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    times = []
    for s in range(-5, steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        if s >= 0:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def set_blas_threads(n):
    """torch.set_num_threads sizes PyTorch's OpenMP pool only: the OpenBLAS
    it calls for matmul (Debian's, through libblas.so.3) keeps a pool of
    one thread per core. Sized here too, so "1 thread" means one core."""
    import ctypes
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            fn = getattr(ctypes.CDLL(name), "openblas_set_num_threads")
        except (OSError, AttributeError):
            continue
        fn(n)
        return True
    return False


for threads in (1, 2):
    torch.set_num_threads(threads)
    if not set_blas_threads(threads):
        print("warning: could not size OpenBLAS's threads", file=sys.stderr)
    print("cnn", threads, time_steps(cnn), flush=True)
    print("mlp", threads, time_steps(mlp), flush=True)
