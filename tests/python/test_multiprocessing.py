"""ember.multiprocessing: shared-memory tensors seen across forked
processes, Hogwild training of one shared model by two processes, spawn()
with errors, a killed or interrupted parent (no child left running), and
nothing left in /dev/shm."""
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import numpy as np

import ember
import ember.nn as nn
import ember.multiprocessing as mp


def shm_names():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("ember-dl-%d-" % os.getpid()))


def _hogwild_worker(rank, model, data, steps, done):
    ember.manual_seed(100 + rank)
    opt = ember.optim.SGD(model.parameters(), lr=0.05)
    x, y = data
    for i in range(steps):
        idx = ember.randint(0, x.shape[0], (8,))
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    done[rank] = 1


def _fails(rank):
    if rank == 1:
        raise ValueError("rank one is unhappy")


def _writes(rank, t):
    t[rank] = rank + 10


def _big_traceback(rank):
    raise ValueError("x" * 200000 + " the end")


def _ignores_sigterm(rank):
    if rank == 0:
        time.sleep(0.5)
        raise ValueError("rank zero fails")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def _rt_signal(rank):
    os.kill(os.getpid(), signal.SIGRTMIN + 3)


def _alive(pid):
    """Running (not gone, not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


# a parent that starts two children that would run forever
_PARENT = textwrap.dedent("""
    import sys, time
    import ember.multiprocessing as mp
    def forever(*args):
        while True:
            time.sleep(0.05)
    if sys.argv[1] == "spawn":
        mp.spawn(forever, nprocs=2)
    elif sys.argv[1] == "pool":
        with mp.Pool(2) as pool:
            pool.map(forever, range(2))
    else:
        ps = [mp.Process(target=forever) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
""")


class TestMultiprocessing(unittest.TestCase):
    def setUp(self):
        self.before = shm_names()

    def tearDown(self):
        self.assertEqual(shm_names(), self.before)

    def test_share_memory_tensor(self):
        t = ember.zeros(4)
        view = t[1:3]
        self.assertFalse(t.is_shared())
        self.assertIs(t.share_memory_(), t)
        self.assertTrue(t.is_shared())
        self.assertTrue(view.is_shared())  # views follow their storage
        p = mp.Process(target=lambda: (t.fill_(7), view.fill_(3)))
        p.start()
        p.join()
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(t.tolist(), [7.0, 3.0, 3.0, 7.0])
        # a tensor that is not shared stays private to the child
        q = ember.zeros(2)
        p = mp.Process(target=lambda: q.fill_(1))
        p.start()
        p.join()
        self.assertEqual(q.tolist(), [0.0, 0.0])
        mp.spawn(_writes, args=(t,), nprocs=3)
        self.assertEqual(t.tolist()[:3], [10.0, 11.0, 12.0])

    def test_hogwild(self):
        ember.manual_seed(0)
        w_true = ember.tensor([[2.0, -1.0, 0.5]])
        x = ember.randn(256, 3)
        y = x @ w_true.t() + 0.3
        model = nn.Linear(3, 1)
        self.assertIs(model.share_memory(), model)
        self.assertTrue(all(p.is_shared() for p in model.parameters()))
        w0 = model.weight.tolist()
        loss0 = float(nn.functional.mse_loss(model(x), y))
        done = mp.Array("i", 2)
        procs = [mp.Process(target=_hogwild_worker, args=(r, model, (x, y), 150, done)) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        self.assertEqual([p.exitcode for p in procs], [0, 0])
        self.assertEqual(list(done), [1, 1])
        # the parent's model moved: both processes trained the shared weights
        self.assertNotEqual(model.weight.tolist(), w0)
        loss1 = float(nn.functional.mse_loss(model(x), y))
        self.assertLess(loss1, loss0 * 0.05)
        for got, want in zip(model.weight.tolist()[0], [2.0, -1.0, 0.5]):
            self.assertAlmostEqual(got, want, delta=0.1)

    def test_spawn_errors(self):
        with self.assertRaises(mp.ProcessRaisedException) as cm:
            mp.spawn(_fails, nprocs=2)
        self.assertIn("ValueError: rank one is unhappy", str(cm.exception))
        self.assertIn("Process 1 terminated with the following error", str(cm.exception))
        self.assertEqual(cm.exception.error_index, 1)
        ctx = mp.spawn(lambda r: os._exit(3) if r == 0 else None, nprocs=2, join=False)
        with self.assertRaises(mp.ProcessExitedException) as cm:
            while not ctx.join():
                pass
        self.assertEqual(cm.exception.exit_code, 3)
        with self.assertRaises(ValueError):
            mp.get_context("spawn")

    def test_memory_before_share(self):
        # an array taken before share_memory_ goes stale (zeros), and is never
        # memory that a later tensor gets
        t = ember.full((1 << 20,), 3.0)
        a = t.numpy()
        t.share_memory_()
        later = [ember.zeros(1 << 20) for _ in range(3)]
        a[:] = 123.0
        self.assertTrue(all(x.sum().item() == 0 for x in later))
        self.assertEqual(t[7].item(), 3.0)
        # nor is the old memory kept resident: the tensor is not held twice
        def rss_anon_mb():
            with open("/proc/self/status") as f:
                return [int(l.split()[1]) // 1024 for l in f if l.startswith("RssAnon")][0]
        m = nn.Linear(4096, 4096)  # 64 MiB of weights
        before = rss_anon_mb()
        m.share_memory()
        self.assertLess(rss_anon_mb(), before - 48)
        with self.assertRaises(TypeError):
            ember.Tensor.share_memory_([t])

    def test_module_share_memory_grads(self):
        m = nn.Linear(3, 2)
        m(ember.ones(1, 3)).sum().backward()
        m.share_memory()
        self.assertTrue(all(p.grad.is_shared() for p in m.parameters()))
        p = mp.Process(target=lambda: m.weight.grad.fill_(5))
        p.start()
        p.join()
        self.assertEqual(m.weight.grad.tolist(), [[5.0] * 3] * 2)

    def test_share_memory_from_threads(self):
        for _ in range(5):
            m = nn.Sequential(*[nn.Linear(64, 64) for _ in range(8)])
            ref = [p.detach().clone() for p in m.parameters()]
            bar = threading.Barrier(2)
            th = [threading.Thread(target=lambda: (bar.wait(), m.share_memory())) for _ in range(2)]
            for x in th:
                x.start()
            for x in th:
                x.join()
            self.assertTrue(all(ember.equal(a, b) for a, b in zip(ref, m.parameters())))
            del m, ref
            gc.collect()

    def test_spawn_failures(self):
        # a traceback larger than the pipe: read while the child writes it
        with self.assertRaises(mp.ProcessRaisedException) as cm:
            mp.spawn(_big_traceback, nprocs=1)
        self.assertIn(" the end", str(cm.exception))
        # a sibling that ignores SIGTERM is killed after the grace period
        from ember.multiprocessing import _impl
        grace, _impl._TERMINATE_GRACE_S = _impl._TERMINATE_GRACE_S, 0.3
        try:
            t0 = time.monotonic()
            with self.assertRaises(mp.ProcessRaisedException):
                mp.spawn(_ignores_sigterm, nprocs=2)
            self.assertLess(time.monotonic() - t0, 20)
        finally:
            _impl._TERMINATE_GRACE_S = grace
        # a real-time signal has no name of its own
        with self.assertRaises(mp.ProcessExitedException) as cm:
            mp.spawn(_rt_signal, nprocs=1)
        self.assertEqual(cm.exception.signal_name, "SIGRTMIN+3")
        with self.assertRaises(ValueError):
            mp.spawn(_rt_signal, nprocs=-1)

    def _run_parent(self, how):
        p = subprocess.Popen([sys.executable, "-c", _PARENT, how],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            kids = []
            while len(kids) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                kids = _children(p.pid)
            self.assertEqual(len(kids), 2)
            return p, kids
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise

    def _gone(self, kids):
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [k for k in kids if _alive(k)]
        for k in left:  # a failing test must not leave them running either
            os.kill(k, signal.SIGKILL)
        return not left

    def test_killed_parent_leaves_no_child(self):
        for how in ("spawn", "process", "pool"):
            p, kids = self._run_parent(how)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            self.assertTrue(self._gone(kids), how)

    def test_interrupted_spawn_stops_children(self):
        p, kids = self._run_parent("spawn")
        os.kill(p.pid, signal.SIGINT)  # the parent only, not its group
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            self.fail("the parent hung after Ctrl-C")
        self.assertTrue(self._gone(kids))

    def test_rest_of_multiprocessing(self):
        with mp.Pool(2) as pool:
            self.assertEqual(pool.map(abs, [-1, -2, 3]), [1, 2, 3])
        for name in ("Manager", "JoinableQueue", "RLock", "Semaphore", "Condition",
                     "current_process", "active_children"):
            self.assertTrue(callable(getattr(mp, name)), name)
        self.assertEqual(mp.get_sharing_strategy(), "file_descriptor")
        self.assertEqual(mp.get_all_sharing_strategies(), {"file_descriptor", "file_system"})
        mp.set_sharing_strategy("file_system")
        self.assertEqual(mp.get_sharing_strategy(), "file_system")
        mp.set_sharing_strategy("file_descriptor")
        with self.assertRaises(ValueError):
            mp.set_sharing_strategy("bogus")
        with self.assertRaises(AttributeError):
            mp.no_such_name

    def test_queue_passes_tensors(self):
        q = mp.Queue()
        p = mp.Process(target=lambda: q.put(ember.arange(5) * 2))
        p.start()
        got = q.get(timeout=10)
        p.join()
        self.assertEqual(got.tolist(), [0, 2, 4, 6, 8])


if __name__ == "__main__":
    unittest.main()
