"""Errors: every em_status becomes the exception EM_STATUS_MAP names, with
the C message; bad Python arguments raise TypeError / ValueError with
clear messages; garbage arguments to every function and method raise
(never crash the interpreter)."""
import builtins
import unittest

import numpy as np

import ember
from ember import _C


class TestStatusMapping(unittest.TestCase):
    def test_every_status(self):
        names = _C._status_names()
        self.assertGreaterEqual(len(names), 14)
        for code, (desc, exc_name) in names.items():
            exc = getattr(builtins, exc_name)
            with self.assertRaises(exc) as cm:
                _C._raise_status(code, f"op: failure {code}")
            self.assertEqual(str(cm.exception), f"op: failure {code}")
            self.assertIs(type(cm.exception), exc, desc)

    def test_statuses_from_real_ops(self):
        cases = [
            (ValueError, "arange: step must be nonzero", lambda: ember.arange(0, 10, 0)),
            (RuntimeError, r"add: the size of tensor a \(2\) must match the size of tensor b \(3\)",
             lambda: ember.ones(2, 3) + ember.ones(3, 2)),
            (RuntimeError, r"matmul: shapes \[2, 3\] and \[2, 3\] cannot be multiplied",
             lambda: ember.ones(2, 3) @ ember.ones(2, 3)),
            (TypeError, "only Tensors of floating point dtype can require gradients",
             lambda: ember.ones(2, dtype=ember.int64).requires_grad_()),
            (TypeError, "result type Float can't be cast to the desired output type Int",
             lambda: ember.ones(2, dtype=ember.int32).add_(1.5)),
            (IndexError, r"sum: dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)",
             lambda: ember.ones(2, 3).sum(2)),
            (RuntimeError, "cuda", lambda: ember.ones(2).to("cuda:99")),
            (MemoryError, "overflow", lambda: ember.empty(2 ** 62)),
            (RuntimeError, "does not require grad", lambda: ember.ones(2).sum().backward()),
            (RuntimeError, r"view: shape '\[4\]' is invalid for input of size 6",
             lambda: ember.ones(2, 3).view(4)),
            (ValueError, "only one element tensors can be converted to Python scalars",
             lambda: ember.ones(3).item()),
        ]
        for exc, msg, fn in cases:
            with self.assertRaisesRegex(exc, msg):
                fn()

    def test_not_implemented(self):
        root = ember.from_numpy(np.zeros((3, 4), dtype=np.float32).T)  # a non-contiguous root
        x = ember.ones(3, requires_grad=True)
        with self.assertRaisesRegex(NotImplementedError, "non-contiguous"):
            root[0].copy_(x * 1)
        with self.assertRaises(NotImplementedError):
            (x * 2).sum().backward(create_graph=True)


class TestArgumentErrors(unittest.TestCase):
    def test_type_errors(self):
        cases = [
            (r"add\(\) got an unexpected keyword argument 'foo'", lambda: ember.ones(2).add(ember.ones(2), foo=1)),
            (r"add\(\) missing required argument 'other' \(pos 1\)", lambda: ember.ones(2).add()),
            ("add\\(\\): argument 'alpha' must be Number, not str",
             lambda: ember.ones(2).add(ember.ones(2), alpha="x")),
            ("zeros\\(\\): argument 'size' must be tuple of ints, but found element of type str at pos 1",
             lambda: ember.zeros(2, "a")),
            ("argument 'dim' must be int or tuple of ints, not str", lambda: ember.ones(2).sum(dim="x")),
            ("argument 'dtype' must be ember.dtype, not str", lambda: ember.zeros(2, dtype="float32")),
            ("argument 'other' must be Tensor or Number, not list", lambda: ember.ones(2).mul([1, 2])),
            ("unsupported operand type", lambda: ember.ones(2) + "a"),
            ("invalid data type 'str'", lambda: ember.tensor(["a"])),
            ("takes 1 positional argument", lambda: ember.tensor(1, 2)),
            ("argument 'tensors' must be tuple of Tensors, but found element of type int at pos 1",
             lambda: ember.cat([ember.ones(2), 1])),
            ("hook must be callable", lambda: ember.ones(1, requires_grad=True).register_hook(3)),
            ("must be ember.device", lambda: ember.zeros(1, device=1.5)),
            ("len\\(\\) of a 0-d tensor", lambda: len(ember.tensor(1.0))),
            ("iteration over a 0-d tensor", lambda: iter(ember.tensor(1.0))),
            ("only integer tensors of a single element can be converted to an index",
             lambda: [1, 2][ember.tensor(1.5)]),
        ]
        for msg, fn in cases:
            with self.assertRaisesRegex(TypeError, msg):
                fn()

    def test_value_errors(self):
        with self.assertRaisesRegex(ValueError, r"expected sequence of length 1 at dim 1 \(got 2\)"):
            ember.tensor([[1], [2, 3]])
        with self.assertRaisesRegex(ValueError, "rounding_mode"):
            ember.ones(2).div(2, rounding_mode="up")
        with self.assertRaisesRegex(ValueError, "negative dimension"):
            ember.zeros(-1)
        with self.assertRaisesRegex(ValueError, "step must be greater than zero"):
            ember.ones(3)[::-2]
        with self.assertRaises(RuntimeError):
            bool(ember.ones(2))
        with self.assertRaises(OverflowError):
            ember.zeros(2 ** 70)


# garbage argument lists: each call must raise or return, never crash
GARBAGE = [(), (None,), ("x",), (1e300,), (-1,), (2 ** 70,), (3,), ([1, [2]],), (object(),),
           (ember.ones(2), "a"), (None, None, None), (ember.ones(3, 3), ember.ones(2)), (-5, -5),
           (float("nan"),), ((1, 2),)]
SKIP = {"set_num_threads", "set_default_dtype", "manual_seed", "seed", "set_rng_state",
        "_set_grad_enabled", "set_grad_enabled", "_raise_status"}


class TestGarbage(unittest.TestCase):
    def test_module_functions(self):
        for name in dir(_C):
            fn = getattr(_C, name)
            if name in SKIP or not callable(fn) or isinstance(fn, type):
                continue
            for args in GARBAGE:
                try:
                    fn(*args)
                except Exception:
                    pass
        self.assertTrue(ember.is_grad_enabled())

    def test_tensor_methods(self):
        names = [n for n in dir(ember.Tensor) if not n.startswith("__") or n in
                 ("__getitem__", "__setitem__", "__add__", "__matmul__", "__pow__", "__dlpack__")]
        makers = [lambda: ember.ones(2, 3), lambda: ember.arange(4), lambda: ember.tensor(2.5),
                  lambda: ember.zeros(0, 2), lambda: ember.ones(2, requires_grad=True) * 1]
        for make in makers:
            for name in names:
                for args in GARBAGE:
                    t = make()
                    try:
                        getattr(t, name)(*args)
                    except Exception:
                        pass
        self.assertTrue(ember.is_grad_enabled())


if __name__ == "__main__":
    unittest.main()


_CTRLC_CHILD = r"""
import sys, time, ember
x = ember.randn(512, 512, requires_grad=True)
w = (ember.randn(512, 512) * 0.05).requires_grad_()
y = x
for _ in range(500):          # a long backward (seconds): 1000 512^3 matmuls, twice the forward
    y = (y @ w).tanh()
loss = y.sum()
print("ready", flush=True)
t0 = time.monotonic()
try:
    loss.backward()
except KeyboardInterrupt:
    print("interrupted after %.3f s" % (time.monotonic() - t0), flush=True)
    sys.exit(0)
print("backward finished", flush=True)
sys.exit(3)
"""


class TestCtrlC(unittest.TestCase):
    def test_sigint_stops_a_long_backward(self):
        """Ctrl-C during a backward that runs without the GIL raises
        KeyboardInterrupt soon, not when the whole backward is done."""
        import os
        import signal
        import subprocess
        import sys
        import time
        p = subprocess.Popen([sys.executable, "-c", _CTRLC_CHILD], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, EMBER_NUM_THREADS="2"))
        try:
            self.assertEqual(p.stdout.readline().strip(), "ready")
            time.sleep(0.3)
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=60)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("interrupted after", out)
        # exit status 3 above: the backward ran to its end (seconds); the
        # interrupt lands within a node or two (a 512^3 matmul each)
        self.assertLess(took, 5.0, out)
