"""ember.distributed and DistributedDataParallel with 2 ranks: every
collective against values computed by hand, async works, sub-groups,
objects; DDP's broadcast of rank 0's parameters, averaged gradients against
a reference (each rank's local gradient gathered and averaged here),
no_sync, Python and built-in comm hooks; and a DDP job started through
trainrun with 2 ranks (DistributedSampler + a DataLoader worker per rank)."""
import os
import random
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest

import ember
import ember.distributed as dist
import ember.multiprocessing as mp
import ember.nn as nn
from ember.nn.parallel import DistributedDataParallel as DDP


def free_port():
    """A port for rank 0's store, drawn below the kernel's ephemeral range
    and checked free: a port that bind(0) gave and that is closed again can
    be taken by another test's connection before the store binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    base = lo - 10000 if lo >= 11024 else hi + 1 if hi <= 55535 else None
    if base is None:  # no room outside the range: the old race, but a port
        ports = [0]
    else:
        rng = random.Random(os.getpid() ^ time.monotonic_ns())
        ports = [rng.randrange(base, base + 10000) for _ in range(200)]
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def have_ddp():
    """False when this build lacks the DDP reducer (comm/ddp.c)."""
    try:
        ember._C._DDP(([], [], []), None, 0, 0, False, False, False, True)
    except NotImplementedError:
        return False
    except TypeError:
        return True
    return True


def trainrun_path():
    b = os.environ.get("EMBER_BINARY_DIR")
    if not b:
        b = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__))))
    return os.path.join(b, "bin", "trainrun")


def _init(rank, port, world=2):
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                            world_size=world)


def _collectives(rank, port, q):
    _init(rank, port)
    r = {}
    assert dist.is_initialized() and dist.get_rank() == rank and dist.get_world_size() == 2
    t = ember.tensor([1.0, 2.0]) * (rank + 1)          # rank 0: [1, 2], rank 1: [2, 4]
    dist.all_reduce(t)
    r["sum"] = t.tolist()
    t = ember.tensor([1.0, 2.0]) * (rank + 1)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    r["avg"] = t.tolist()
    for name, op in [("max", dist.ReduceOp.MAX), ("min", dist.ReduceOp.MIN), ("prod", dist.ReduceOp.PRODUCT)]:
        t = ember.tensor([3.0, -1.0]) * (rank + 1)
        dist.all_reduce(t, op=op)
        r[name] = t.tolist()
    i = ember.tensor([6, 3], dtype=ember.int64) if rank == 0 else ember.tensor([3, 5], dtype=ember.int64)
    dist.all_reduce(i, op=dist.ReduceOp.BAND)
    r["band"] = i.tolist()
    b = ember.full((3,), float(rank))
    w = dist.broadcast(b, src=1, async_op=True)
    assert w.wait() is True and w.is_completed()
    r["bcast"] = b.tolist()
    t = ember.tensor([float(rank + 1)])
    dist.reduce(t, dst=1)
    r["reduce"] = t.tolist()
    outs = [ember.zeros(2) for _ in range(2)]
    dist.all_gather(outs, ember.full((2,), float(rank * 10)))
    r["gather_list"] = [o.tolist() for o in outs]
    out = ember.zeros(4)
    dist.all_gather_into_tensor(out, ember.full((2,), float(rank)))
    r["gather_tensor"] = out.tolist()
    rs = ember.zeros(2)
    dist.reduce_scatter(rs, [ember.full((2,), 1.0 + rank), ember.full((2,), 10.0 + rank)])
    r["reduce_scatter"] = rs.tolist()
    rs = ember.zeros(1)
    dist.reduce_scatter_tensor(rs, ember.tensor([1.0, 2.0]) * (rank + 1))
    r["reduce_scatter_tensor"] = rs.tolist()
    g = [ember.zeros(1), ember.zeros(1)] if rank == 0 else None
    dist.gather(ember.tensor([rank + 5.0]), gather_list=g, dst=0)
    r["gather"] = [x.tolist() for x in g] if g else None
    sc = ember.zeros(2)
    dist.scatter(sc, [ember.tensor([1.0, 1.0]), ember.tensor([2.0, 2.0])] if rank == 1 else None, src=1)
    r["scatter"] = sc.tolist()
    outs = [ember.zeros(1), ember.zeros(1)]
    dist.all_to_all(outs, [ember.tensor([rank * 10.0 + 0]), ember.tensor([rank * 10.0 + 1])])
    r["all_to_all"] = [o.tolist() for o in outs]
    if rank == 0:
        dist.send(ember.tensor([42.0, 43.0]), dst=1, tag=3)
    else:
        got = ember.zeros(2)
        dist.recv(got, src=0, tag=3)
        r["recv"] = got.tolist()
    works = [dist.all_reduce(ember.ones(3) * k, async_op=True) for k in range(3)]
    r["async"] = [w.get_future().wait()[0].tolist() for w in works]
    dist.barrier()
    dist.monitored_barrier()
    both = dist.new_group([0, 1])
    t = ember.ones(1)
    dist.all_reduce(t, group=both)
    r["group_sum"] = t.tolist()
    solo = dist.new_group([1])
    if rank == 1:
        t = ember.ones(1) * 5
        dist.all_reduce(t, group=solo)
        r["solo"] = (t.tolist(), dist.get_rank(solo), dist.get_world_size(solo))
        t = ember.zeros(1)
        dist.broadcast(t, src=1, group=solo)
    else:
        r["solo"] = solo is dist.GroupMember.NON_GROUP_MEMBER and dist.get_rank(solo) == -1
    objs = [None, None]
    dist.all_gather_object(objs, {"rank": rank, "name": "r%d" % rank})
    r["objects"] = objs
    lst = [{"a": 1}, "text"] if rank == 0 else [None, None]
    dist.broadcast_object_list(lst, src=0)
    r["bobj"] = lst
    try:
        dist.broadcast(ember.zeros(1), src=5)
    except ValueError as e:
        r["bad_src"] = str(e)
    try:
        dist.all_reduce([1, 2])
    except TypeError:
        r["bad_type"] = True
    try:
        dist.init_process_group("gloo")
    except RuntimeError as e:
        r["twice"] = str(e)
    dist.destroy_process_group()
    r["after"] = dist.is_initialized()
    q.put((rank, r))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 5)
        self.bn = nn.BatchNorm1d(5)
        self.fc2 = nn.Linear(5, 2)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)).relu())


def _local_grads(model, x):
    model.zero_grad()
    model(x).pow(2).sum().backward()
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}


def _ddp(rank, port, q):
    _init(rank, port)
    r = {}
    ember.manual_seed(rank)            # different initial weights on each rank
    net = Net()
    before = net.fc1.weight.clone()
    model = DDP(net, find_unused_parameters=True)
    outs = [ember.zeros(5, 3), ember.zeros(5, 3)]
    dist.all_gather(outs, net.fc1.weight.detach())
    r["same_params"] = bool((outs[0] == outs[1]).all())
    r["rank0_params"] = bool((net.fc1.weight == outs[0]).all())
    r["changed"] = rank == 0 or not bool((before == net.fc1.weight).all())
    r["state_keys"] = list(model.state_dict().keys())[:3]

    ember.manual_seed(50 + rank)
    x = ember.randn(4, 3)
    # reference: the same model without DDP, local gradients averaged by hand
    ref = Net()
    ref.load_state_dict(net.state_dict())
    local = _local_grads(ref, x)
    model.zero_grad()
    model(x).pow(2).sum().backward()
    ok = True
    for n, p in net.named_parameters():
        if local[n] is None:
            ok = ok and (p.grad is None or bool((p.grad == 0).all()))
            continue
        pair = [ember.zeros_like(local[n]), ember.zeros_like(local[n])]
        dist.all_gather(pair, local[n])
        avg = (pair[0] + pair[1]) / 2
        ok = ok and bool(((p.grad - avg).abs() < 1e-5).all())
    r["avg_grads"] = ok
    r["stats"] = model._get_ddp_logging_data()["iterations"]

    # no_sync: two local backwards, then a synced one: the sum of three, averaged
    model.zero_grad()
    xs = [ember.randn(2, 3) for _ in range(3)]
    with model.no_sync():
        model(xs[0]).sum().backward()
        model(xs[1]).sum().backward()
        r["local_after_no_sync"] = net.fc2.weight.grad.tolist()
    model(xs[2]).sum().backward()
    mine = ember.zeros(2)
    for xx in xs:
        ref.load_state_dict(net.state_dict())
        ref.zero_grad()
        ref(xx).sum().backward()
        mine += ref.fc2.bias.grad
    pair = [ember.zeros(2), ember.zeros(2)]
    dist.all_gather(pair, mine)
    r["no_sync"] = bool((((pair[0] + pair[1]) / 2 - net.fc2.bias.grad).abs() < 1e-4).all())

    # a Python comm hook: sum instead of average
    calls = []

    def sum_hook(state, bucket):
        calls.append(bucket.index())
        assert state == "my-state"
        return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])

    m2 = DDP(Net(), find_unused_parameters=True)
    m2.register_comm_hook("my-state", sum_hook)
    xx = ember.ones(2, 3) * (rank + 1)
    m2(xx).sum().backward()
    ref.load_state_dict(m2.module.state_dict())
    ref.zero_grad()
    ref(xx).sum().backward()
    pair = [ember.zeros(2), ember.zeros(2)]
    dist.all_gather(pair, ref.fc2.bias.grad)
    r["py_hook"] = bool(((pair[0] + pair[1] - m2.module.fc2.bias.grad).abs() < 1e-4).all()) and len(calls) >= 1

    from ember.distributed.algorithms.ddp_comm_hooks import default_hooks
    for hook, tol in [(default_hooks.fp16_compress_hook, 1e-2), (default_hooks.allreduce_hook, 1e-5)]:
        for state in (None, dist.group.WORLD, "python"):
            m3 = DDP(Net())
            if state == "python":
                # the built-in called from a Python wrapper (the Python path)
                m3.register_comm_hook(None, lambda s, b, h=hook: h(None, b))
            else:
                m3.register_comm_hook(state, hook)
            xx = ember.ones(2, 3) * (rank + 1)
            m3(xx).sum().backward()
            ref.load_state_dict(m3.module.state_dict())
            ref.zero_grad()
            ref(xx).sum().backward()
            pair = [ember.zeros(5, 3), ember.zeros(5, 3)]
            dist.all_gather(pair, ref.fc1.weight.grad)
            good = bool((((pair[0] + pair[1]) / 2 - m3.module.fc1.weight.grad).abs() < tol).all())
            r.setdefault("hooks", []).append(good)
    try:
        m3.register_comm_hook(None, default_hooks.allreduce_hook)
    except RuntimeError as e:
        r["late_hook"] = "before the first forward" in str(e)
    dist.destroy_process_group()
    q.put((rank, r))


def run_two(fn):
    port = free_port()
    q = mp.SimpleQueue()
    mp.spawn(fn, args=(port, q), nprocs=2)
    res = dict(q.get() for _ in range(2))
    return res[0], res[1]


class TestCollectives(unittest.TestCase):
    def test_collectives(self):
        r0, r1 = run_two(_collectives)
        for r in (r0, r1):
            self.assertEqual(r["sum"], [3.0, 6.0])
            self.assertEqual(r["avg"], [1.5, 3.0])
            self.assertEqual(r["max"], [6.0, -1.0])
            self.assertEqual(r["min"], [3.0, -2.0])
            self.assertEqual(r["prod"], [18.0, 2.0])
            self.assertEqual(r["band"], [6 & 3, 3 & 5])
            self.assertEqual(r["bcast"], [1.0, 1.0, 1.0])
            self.assertEqual(r["gather_list"], [[0.0, 0.0], [10.0, 10.0]])
            self.assertEqual(r["gather_tensor"], [0.0, 0.0, 1.0, 1.0])
            self.assertEqual(r["async"], [[0.0] * 3, [2.0] * 3, [4.0] * 3])
            self.assertEqual(r["group_sum"], [2.0])
            self.assertEqual(r["objects"], [{"rank": 0, "name": "r0"}, {"rank": 1, "name": "r1"}])
            self.assertEqual(r["bobj"], [{"a": 1}, "text"])
            self.assertIn("src rank 5 is not part of the group", r["bad_src"])
            self.assertTrue(r["bad_type"])
            self.assertIn("twice", r["twice"])
            self.assertFalse(r["after"])
        self.assertEqual(r1["reduce"], [3.0])
        self.assertEqual(r0["reduce_scatter"], [1.0 + 2.0] * 2)
        self.assertEqual(r1["reduce_scatter"], [10.0 + 11.0] * 2)
        self.assertEqual(r0["reduce_scatter_tensor"], [1.0 + 2.0])
        self.assertEqual(r1["reduce_scatter_tensor"], [2.0 + 4.0])
        self.assertEqual(r0["gather"], [[5.0], [6.0]])
        self.assertIsNone(r1["gather"])
        self.assertEqual(r0["scatter"], [1.0, 1.0])
        self.assertEqual(r1["scatter"], [2.0, 2.0])
        self.assertEqual(r0["all_to_all"], [[0.0], [10.0]])
        self.assertEqual(r1["all_to_all"], [[1.0], [11.0]])
        self.assertEqual(r1["recv"], [42.0, 43.0])
        self.assertEqual(r1["solo"], ([5.0], 0, 1))
        self.assertTrue(r0["solo"])

    def test_not_initialized(self):
        self.assertFalse(dist.is_initialized())
        with self.assertRaises(RuntimeError):
            dist.get_rank()
        with self.assertRaises(RuntimeError):
            dist.all_reduce(ember.ones(1))
        with self.assertRaises(ValueError):
            dist.init_process_group("gloo", init_method="file:///tmp/x", rank=0, world_size=1)


@unittest.skipUnless(have_ddp(), "the DDP reducer (comm/ddp.c) is not part of this build")
class TestDDP(unittest.TestCase):
    def test_ddp(self):
        r0, r1 = run_two(_ddp)
        for r in (r0, r1):
            self.assertTrue(r["same_params"])
            self.assertTrue(r["rank0_params"])
            self.assertTrue(r["changed"])
            self.assertEqual(r["state_keys"], ["module.fc1.weight", "module.fc1.bias", "module.bn.weight"])
            self.assertTrue(r["avg_grads"])
            self.assertEqual(r["stats"], 1)
            self.assertTrue(r["no_sync"])
            self.assertTrue(r["py_hook"])
            self.assertEqual(r["hooks"], [True] * 6)
            self.assertTrue(r["late_hook"])
        self.assertNotEqual(r0["local_after_no_sync"], r1["local_after_no_sync"])


TRAIN_SCRIPT = textwrap.dedent("""
    import os, sys
    import ember, ember.distributed as dist, ember.nn as nn
    from ember.nn.parallel import DistributedDataParallel as DDP
    from ember.utils.data import TensorDataset, DataLoader, DistributedSampler
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2 and rank == int(os.environ["RANK"])
    ember.manual_seed(0)
    x = ember.randn(64, 4)
    y = x @ ember.tensor([[1.0], [-2.0], [0.5], [3.0]])
    ember.manual_seed(rank + 1)     # different local init: DDP broadcasts rank 0's
    model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    opt = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = DistributedSampler(TensorDataset(x, y), shuffle=True, seed=3)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=sampler, num_workers=1)
    first = last = None
    for epoch in range(15):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            first = float(loss) if first is None else first
            last = float(loss)
    flat = ember.cat([p.detach().reshape(-1) for p in model.parameters()])
    both = [ember.zeros_like(flat), ember.zeros_like(flat)]
    dist.all_gather(both, flat)
    same = bool((both[0] == both[1]).all())
    with open(os.path.join(out, "rank%d" % rank), "w") as f:
        f.write("%s %r %r %d\\n" % (same, first, last, len(sampler)))
    print("rank", rank, "done", flush=True)
    dist.destroy_process_group()
""")


@unittest.skipUnless(have_ddp(), "the DDP reducer (comm/ddp.c) is not part of this build")
class TestTrainrun(unittest.TestCase):
    def test_ddp_through_trainrun(self):
        trainrun = trainrun_path()
        if not os.path.exists(trainrun):
            self.skipTest("trainrun is not built (%s)" % trainrun)
        with tempfile.TemporaryDirectory() as d:
            script = os.path.join(d, "train.py")
            with open(script, "w") as f:
                f.write(TRAIN_SCRIPT)
            p = subprocess.run([trainrun, "--nproc", "2", script, d], capture_output=True, text=True,
                               timeout=180)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("[rank 1]: rank 1 done", p.stdout + p.stderr)
            for r in (0, 1):
                with open(os.path.join(d, "rank%d" % r)) as f:
                    same, first, last, n = f.read().split()
                self.assertEqual(same, "True")
                self.assertLess(float(last), float(first) * 0.2)
                self.assertEqual(int(n), 32)


if __name__ == "__main__":
    unittest.main()
