"""The Python benchmarks of issue 8, ember and PyTorch 1.13 side by side
from one run (run with /usr/bin/python3 from the repository root after
building; ember is imported from build/python):

  1. per-op overhead: `a + b` on 1-element float32 tensors (target: ember
     <= 0.4x PyTorch's time);
  2. a training step (forward, MSE loss, backward, SGD step) of an MLP
     32-32-32-1 at batch 1 (target <= 0.3x);
  3. end to end: samples/s of `trainrun --nproc 2 examples/train.py` (one
     epoch) against `torchrun --nproc_per_node 2 bench/train_torch.py` doing
     the same work (target >= 1.5x).

    /usr/bin/python3 bench/bench_python.py [--build build] [--skip-e2e] [--limit N]

Each side runs in its own subprocess (1 thread; OMP_WAIT_POLICY=PASSIVE and
OPENBLAS_CORETYPE as the machine notes recommend for PyTorch).
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MICRO = r'''
import sys, timeit
fw = sys.argv[1]
if fw == "ember":
    import ember as T
else:
    import torch as T
T.set_num_threads(1)
nn = T.nn
a, b = T.ones(1), T.ones(1)
n = 200000
add = min(timeit.repeat("a + b", globals=globals(), number=n, repeat=5)) / n * 1e6
T.manual_seed(0)
m = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
opt = T.optim.SGD(m.parameters(), lr=0.01)
x, y = T.randn(1, 32), T.randn(1, 1)
def step():
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(m(x), y)
    loss.backward()
    opt.step()
k = 2000
mlp = min(timeit.repeat(step, number=k, repeat=5)) / k * 1e6
print(add, mlp)
'''


def env_for(build):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(build, "python")
    env["OMP_NUM_THREADS"] = "1"
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def micro(fw, env):
    out = subprocess.run([sys.executable, "-c", MICRO, fw], env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"{fw} micro-benchmark failed:\n{out.stderr}")
    add, mlp = map(float, out.stdout.split())
    return add, mlp


def e2e(cmd, env, pattern):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    rates = [float(m) for m in re.findall(pattern, out.stdout)]
    if out.returncode or not rates:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return rates[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="training images for the end-to-end run")
    args = p.parse_args()
    env = env_for(os.path.abspath(args.build))
    rows = []
    e_add, e_mlp = micro("ember", env)
    t_add, t_mlp = micro("torch", env)
    rows.append(("a + b, 1-element (us)", e_add, t_add, e_add / t_add, "<= 0.4"))
    rows.append(("MLP 32-32-32-1 step, batch 1 (us)", e_mlp, t_mlp, e_mlp / t_mlp, "<= 0.3"))
    if not args.skip_e2e:
        lim = ["--limit", str(args.limit)] if args.limit else []
        trainrun = os.path.join(os.path.abspath(args.build), "bin", "trainrun")
        e = e2e([trainrun, "--nproc", "2", "examples/train.py", "--epochs", "1",
                 "--checkpoint", "/tmp/bench_python.safetensors"] + lim, env,
                r"step \d+/\d+ .* (\d+) samples/s")
        t = e2e(["torchrun", "--standalone", "--nproc_per_node", "2", "--monitor_interval", "0.1",
                 "--redirects", "9:1", "--tee", "9:1", "bench/train_torch.py", "--epochs", "1"] + lim,
                env, r"epoch 1: (\d+) samples/s")
        rows.append(("main job, 2 ranks (samples/s)", e, t, e / t, ">= 1.5"))
    print(f"{'benchmark':36s} {'ember':>10s} {'torch':>10s} {'ratio':>7s} {'target':>8s}")
    for name, e, t, r, target in rows:
        op, bound = target.split()
        ok = r <= float(bound) if op == "<=" else r >= float(bound)
        print(f"{name:36s} {e:10.2f} {t:10.2f} {r:7.2f} {target:>8s} {'ok' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
