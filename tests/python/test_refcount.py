"""Reference counts and leaks: no growth over many iterations of ops,
autograd, hooks, Functions, NumPy views, DLPack and error paths — counted
as Python objects (gc), Python allocations (tracemalloc) and C heap bytes
(glibc mallinfo2; skipped under ASan, which replaces malloc)."""
import ctypes
import gc
import os
import pickle
import sys
import tracemalloc
import unittest

import numpy as np

import ember
from ember.autograd import Function

SANITIZE = bool(os.environ.get("EMBER_SANITIZE"))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def c_heap_bytes():
    try:
        f = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    f.restype = _MallInfo2
    m = f()
    return m.uordblks + m.hblkhd


class Square(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.tag = [1, 2, 3]
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class Failing(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, g):
        raise ValueError("no")


class LeakCase(unittest.TestCase):
    def assertNoLeak(self, fn, n=300):
        for _ in range(30):
            fn()
        gc.collect()
        objs0 = len(gc.get_objects())
        heap0 = c_heap_bytes()
        tracemalloc.start()
        snap0 = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            fn()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - snap0
        tracemalloc.stop()
        objs = len(gc.get_objects()) - objs0
        self.assertLess(objs, 20, f"{objs} Python objects leaked")
        self.assertLess(grown, 32 * 1024, f"{grown} bytes of Python memory leaked")
        if heap0 is not None and not SANITIZE:
            heap = c_heap_bytes() - heap0
            self.assertLess(heap, 256 * 1024, f"{heap} bytes of C heap leaked over {n} iterations")


class TestRefcounts(LeakCase):
    def test_tensor_refcounts_stable(self):
        a = ember.ones(3)
        b = ember.ones(3)
        ra, rb = sys.getrefcount(a), sys.getrefcount(b)
        for _ in range(100):
            a + b, a * 2, a.sum(), a[0], a[1:], a.view(3, 1), a.exp_(), a.add_(b), a.clamp(0, 1)
            a.shape, a.dtype, a.device, a.T, a.tolist(), repr(a), a.numpy()
        gc.collect()
        self.assertEqual(sys.getrefcount(a), ra)
        self.assertEqual(sys.getrefcount(b), rb)

    def test_same_object_returned_keeps_counts(self):
        x = ember.ones(2, requires_grad=True)
        (x * 2).sum().backward()
        r = sys.getrefcount(x)
        for _ in range(50):
            x.grad, x.to(ember.float32), x.float(), x.cpu(), x.contiguous()
        self.assertEqual(sys.getrefcount(x), r)
        g = x.grad
        rg = sys.getrefcount(g)
        for _ in range(50):
            x.grad
        self.assertEqual(sys.getrefcount(g), rg)

    def test_hook_callable_refcount(self):
        x = ember.ones(2, requires_grad=True)
        fn = lambda g: None  # noqa: E731
        r = sys.getrefcount(fn)
        h = x.register_hook(fn)
        self.assertEqual(sys.getrefcount(fn), r + 1)
        h.remove()
        self.assertEqual(sys.getrefcount(fn), r)
        del h  # a handle keeps its tensor alive (so that remove() always works)
        x.register_hook(fn)
        del x
        gc.collect()
        self.assertEqual(sys.getrefcount(fn), r)

    def test_numpy_owner_refcounts(self):
        a = np.arange(10.0)
        r = sys.getrefcount(a)
        t = ember.from_numpy(a)
        views = [t[i:] for i in range(5)]
        del t, views
        gc.collect()
        self.assertEqual(sys.getrefcount(a), r)
        t = ember.arange(4.0)
        rt = sys.getrefcount(t)
        n = t.numpy()
        self.assertGreater(sys.getrefcount(t), rt)
        del n
        gc.collect()
        self.assertEqual(sys.getrefcount(t), rt)

    def test_function_class_refcount(self):
        r = sys.getrefcount(Square)
        for _ in range(20):
            x = ember.ones(2, requires_grad=True)
            Square.apply(x).sum().backward()
            Square.apply(x)
        del x
        gc.collect()
        self.assertEqual(sys.getrefcount(Square), r)


class TestNoLeaks(LeakCase):
    def test_ops(self):
        a = ember.randn(4, 5)
        b = ember.randn(5)

        def run():
            c = a + b
            c = c * 2 - 1 / (c.abs() + 1)
            c.sum(1), c.max(0), c.softmax(1), c @ b, c.t().contiguous(), c.argmax()
            ember.cat([a, c]), ember.stack([a, a]), a.split(2), a.chunk(2), a.unbind(0)
            a.to(ember.float64), a.int(), ember.where(a > 0, a, 0.0), a.clamp(min=0)
            ember.tensor([[1, 2], [3, 4.5]]), ember.zeros(3, 4), ember.arange(10), ember.rand(3)
            repr(c), c.tolist(), c.shape, pickle.loads(pickle.dumps(c))
            a.sort(), a.topk(2)

        self.assertNoLeak(run)

    def test_indexing(self):
        t = ember.arange(24.0).view(4, 6)
        idx = ember.tensor([0, 2])

        def run():
            t[1], t[:, 2], t[idx], t[t > 5], t[..., None], t[[1, 0], 1:3]
            u = t.clone()
            u[0] = 1
            u[idx] = 2.0
            u[u > 20] = ember.tensor(0.0)
            u[1:3, ::2] += 1

        self.assertNoLeak(run)

    def test_autograd(self):
        w = ember.randn(5, 3, requires_grad=True)

        def run():
            x = ember.randn(2, 5)
            loss = (x @ w).relu().log_softmax(1).mean()
            loss.backward()
            h = w.register_hook(lambda g: g * 0.5)
            (w * w).sum().backward()
            h.remove()
            ember.autograd.grad((w * 3).sum(), w)
            y = w * 2
            y.retain_grad()
            y.sum().backward()
            w.grad = None
            with ember.no_grad():
                w.add_(0.0)

        self.assertNoLeak(run)

    def test_functions(self):
        def run():
            x = ember.ones(3, requires_grad=True)
            Square.apply(x).sum().backward()
            Square.apply(ember.ones(2))  # not recorded
            try:
                Failing.apply(x).sum().backward()
            except ValueError:
                pass

        self.assertNoLeak(run)

    def test_numpy_and_dlpack(self):
        arr = np.arange(12.0).reshape(3, 4)

        def run():
            t = ember.from_numpy(arr)
            t[0, 0] = 0.0
            t.numpy(), np.asarray(t[1:]), memoryview(t), t.__array_interface__
            ember.from_dlpack(arr)
            np.from_dlpack(t)
            ember.from_dlpack(t.__dlpack__())
            t.__dlpack__()  # never consumed
            ember.tensor(arr), ember.as_tensor(arr), t + arr

        self.assertNoLeak(run)

    def test_error_paths(self):
        x = ember.ones(2, requires_grad=True)

        def bad_hook(g):
            raise RuntimeError("hook")

        def run():
            for fn in (lambda: ember.ones(2, 3) + ember.ones(3, 2), lambda: ember.ones(2)[5],
                       lambda: ember.tensor([[1], [2, 3]]), lambda: ember.ones(2).add(foo=1),
                       lambda: ember.ones(2).view(3), lambda: ember.from_numpy(np.arange(3)[::-1]),
                       lambda: ember.ones(2).sum().backward(), lambda: ember.zeros(2, "a"),
                       lambda: ember.ones(2, dtype=ember.int64).requires_grad_()):
                try:
                    fn()
                except Exception:
                    pass
            h = x.register_hook(bad_hook)
            try:
                (x * 2).sum().backward()
            except RuntimeError:
                pass
            h.remove()

        self.assertNoLeak(run)


if __name__ == "__main__":
    unittest.main()
