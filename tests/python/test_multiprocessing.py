"""ember.multiprocessing: shared-memory tensors seen across forked
processes, Hogwild training of one shared model by two processes, spawn()
with errors, and nothing left in /dev/shm."""
import os
import unittest

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

    def test_queue_passes_tensors(self):
        q = mp.Queue()
        p = mp.Process(target=lambda: q.put(ember.arange(5) * 2))
        p.start()
        got = q.get(timeout=10)
        p.join()
        self.assertEqual(got.tolist(), [0, 2, 4, 6, 8])


if __name__ == "__main__":
    unittest.main()
