"""PyTorch 1.13 side of bench_dataloader: the same epoch of Fashion-MNIST with
the same per-sample augmentation, batch, shuffle and worker counts through
torch.utils.data.DataLoader.

    python3 bench_dataloader_torch.py ROOT EPOCHS WORKERS(0,1,2)

Prints "torch <workers> <samples/s> <peak RSS MB> <PSS MB> <main CPU
us/sample> <workers' CPU us/sample> <ok|FAIL>" per worker count; the figures are measured exactly as bench_dataloader.c
measures ember's (see there)."""
import gzip
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530


def load_idx(root, name):
    path = os.path.join(root, name)
    if os.path.exists(path):
        data = open(path, "rb").read()
    else:
        data = gzip.open(path + ".gz", "rb").read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).view(shape)


class AugmentedFashionMNIST(torch.utils.data.Dataset):
    """What torchvision's RandomCrop(28, padding=4), RandomHorizontalFlip(),
    ConvertImageDtype(torch.float) and Normalize((MEAN,), (STD,)) do to a
    uint8 image tensor, one sample at a time."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.mean = torch.tensor([MEAN]).view(1, 1, 1)
        self.std = torch.tensor([STD]).view(1, 1, 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i].unsqueeze(0)                      # uint8 [1, 28, 28]
        img = F.pad(img, (4, 4, 4, 4))                          # [1, 36, 36], zeros
        top = torch.randint(0, 9, size=(1,)).item()
        left = torch.randint(0, 9, size=(1,)).item()
        img = img[..., top:top + 28, left:left + 28]
        if torch.rand(1) < 0.5:
            img = img.flip(-1)
        x = img.to(torch.float32).div(255)
        x = x.sub_(self.mean).div_(self.std)
        return x, int(self.labels[i]), i


def proc_kb(pid, file, key):
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_mb(pids, hwm):
    if hwm:
        return sum(proc_kb(p, "status", "VmHWM") for p in pids) / 1024
    return sum(proc_kb(p, "smaps_rollup", "Pss_Anon") + proc_kb(p, "smaps_rollup", "Pss_Shmem")
               for p in pids) / 1024


def cpu_s(who):
    a = resource.getrusage(who)
    return a.ru_utime + a.ru_stime


def run(ds, workers, epochs):
    g = torch.Generator()
    g.manual_seed(1234)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers,
                                         generator=g)
    nb = len(loader)
    n = len(ds)
    times, cpu_main, cpu_work, hwm_mb, pss_mb, ok = [], 0.0, 0.0, 0.0, 0.0, True
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for e in range(epochs):
        seen = torch.zeros(n, dtype=torch.int64)
        got = 0
        probe = probe_cpu = 0.0
        cm0, cw0 = cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        it = iter(loader)
        pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
        for b, (x, y, idx) in enumerate(it):
            seen[idx] += 1
            ok &= bool((y == ds.labels[idx].long()).all()) and x.shape[1:] == (1, 28, 28)
            got += len(idx)
            if b % 128 == 0 or b == nb - 1:  # the memory probes are not timed
                p0, pc0 = time.perf_counter(), time.process_time()
                pss_mb = max(pss_mb, tree_mb(pids, False))
                hwm_mb = max(hwm_mb, tree_mb(pids, True))
                probe += time.perf_counter() - p0
                probe_cpu += time.process_time() - pc0
        del it  # shuts the workers down (joined: their CPU time is counted)
        times.append(time.perf_counter() - t0 - probe)
        cpu_main += cpu_s(resource.RUSAGE_SELF) - cm0 - probe_cpu
        cpu_work += cpu_s(resource.RUSAGE_CHILDREN) - cw0
        ok &= got == n and bool((seen == 1).all())
    us = 1e6 / (n * epochs)
    return n / statistics.median(times), hwm_mb, pss_mb, cpu_main * us, cpu_work * us, ok


def main():
    root, epochs, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ds = AugmentedFashionMNIST(load_idx(root, "train-images-idx3-ubyte"),
                               load_idx(root, "train-labels-idx1-ubyte"))
    for w in (int(s) for s in workers.split(",")):
        sps, hwm, pss, cm, cw, ok = run(ds, w, epochs)
        print(f"torch {w} {sps:.1f} {hwm:.1f} {pss:.1f} {cm:.2f} {cw:.2f} {'ok' if ok else 'FAIL'}",
              flush=True)


if __name__ == "__main__":
    main()
