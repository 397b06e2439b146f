"""torch.distributed gloo reference for bench/bench_allreduce.sh.

    /usr/bin/python3 bench/bench_gloo.py RANKS SECONDS BYTES...

Spawns RANKS processes (gloo over 127.0.0.1, a tcp:// rendezvous) and
times dist.all_reduce on float32 SUM with the method of bench_allreduce.c:
calibration agreed by every rank (MAX), median of 5 repetitions of
back-to-back calls each started by a barrier, rank 0's clock. Prints
    RESULT gloo <ranks> <bytes> <seconds per op> <bus GB/s> <rank 0's CPU s per op>
Needs PyTorch (Debian's python3-torch 1.13 here); exits 77 without it.
"""
import os
import resource
import socket
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rank_main(rank, world, port, rep_s, sizes):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    for nbytes in sizes:
        n = nbytes // 4
        t = torch.full((n,), float(rank + 1), dtype=torch.float32)
        for _ in range(3):
            t.fill_(rank + 1)
            dist.all_reduce(t)
        if n and t[n // 2].item() != world * (world + 1) / 2:
            print(f"rank {rank}: wrong result", file=sys.stderr)
            sys.exit(1)
        batch = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(batch):
                dist.all_reduce(t)
            took = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(took, op=dist.ReduceOp.MAX)
            per = took.item() / batch
            if took.item() >= rep_s / 4 or batch >= 65536:
                break
            batch *= 2
        iters = max(3, min(200000, int(rep_s / max(per, 1e-9))))
        reps = []
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = ru.ru_utime + ru.ru_stime
        for _ in range(5):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(t)
            reps.append((time.perf_counter() - t0) / iters)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru.ru_utime + ru.ru_stime - cpu0) / (5 * iters)
        if rank == 0:
            reps.sort()
            sec = reps[2]
            bus = 2.0 * (world - 1) / world * nbytes / sec / 1e9
            print(f"RESULT gloo {world} {nbytes} {sec:.9f} {bus:.4f} {cpu:.9f}", flush=True)
    dist.destroy_process_group()


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
        import torch.distributed  # noqa: F401
    except ImportError:
        print("bench_gloo: PyTorch is not installed", file=sys.stderr)
        return 77
    world, rep_s = int(sys.argv[1]), float(sys.argv[2])
    sizes = [int(x) for x in sys.argv[3:]]
    port = free_port()
    pids = []
    for r in range(world):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                rank_main(r, world, port, rep_s, sizes)
            except Exception as e:  # report, never hang the parent
                print(f"rank {r}: {e}", file=sys.stderr)
                code = 1
            sys.stdout.flush()
            os._exit(code)
        pids.append(pid)
    bad = 0
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        bad += st != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
