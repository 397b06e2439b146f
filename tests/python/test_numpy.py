"""NumPy interop without copies: from_numpy / numpy() share memory and keep
the owner alive, the buffer protocol, __array_interface__, DLPack round
trips, operators with arrays, dtype mapping and errors."""
import gc
import sys
import unittest

import numpy as np

import ember

DTYPES = [
    (np.float32, ember.float32), (np.float64, ember.float64), (np.float16, ember.float16),
    (np.int8, ember.int8), (np.int16, ember.int16), (np.int32, ember.int32), (np.int64, ember.int64),
    (np.uint8, ember.uint8), (np.bool_, ember.bool),
]


class TestFromNumpy(unittest.TestCase):
    def test_shares_memory_both_ways(self):
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        t = ember.from_numpy(a)
        self.assertEqual(t.dtype, ember.float32)
        self.assertEqual(t.shape, (2, 3))
        t[0, 1] = 100
        self.assertEqual(a[0, 1], 100)
        a[1, 2] = -5
        self.assertEqual(t[1, 2].item(), -5)
        self.assertEqual(t.data_ptr(), a.ctypes.data)

    def test_all_dtypes(self):
        for npdt, dt in DTYPES:
            a = (np.arange(4) % 2).astype(npdt)
            t = ember.from_numpy(a)
            self.assertEqual(t.dtype, dt, npdt)
            self.assertEqual(t.tolist(), a.tolist())
            back = t.numpy()
            self.assertEqual(back.dtype, np.dtype(npdt))
            self.assertTrue(np.shares_memory(back, a))

    def test_keeps_array_alive(self):
        a = np.arange(1000, dtype=np.float64)
        before = sys.getrefcount(a)
        t = ember.from_numpy(a)
        self.assertEqual(sys.getrefcount(a), before + 1)
        v = t[10:20]
        del t
        self.assertEqual(sys.getrefcount(a), before + 1)  # the view keeps the buffer
        del v
        gc.collect()
        self.assertEqual(sys.getrefcount(a), before)
        t = ember.from_numpy(np.arange(5.0))  # only the tensor holds the array now
        gc.collect()
        self.assertEqual(t.tolist(), [0.0, 1.0, 2.0, 3.0, 4.0])

    def test_strided_arrays(self):
        a = np.arange(24, dtype=np.int32).reshape(4, 6)
        for view in (a[:, ::2], a.T, a[1:3, 2:5], a[::2]):
            t = ember.from_numpy(view)
            self.assertEqual(t.tolist(), view.tolist())
            self.assertEqual(t.stride(), tuple(s // 4 for s in view.strides))
        t = ember.from_numpy(a.T)
        t[0, 0] = -1
        self.assertEqual(a[0, 0], -1)

    def test_zero_dim_empty_readonly(self):
        self.assertEqual(ember.from_numpy(np.array(3.5)).item(), 3.5)
        self.assertEqual(ember.from_numpy(np.array(3.5)).shape, ())
        self.assertEqual(ember.from_numpy(np.zeros((0, 3))).shape, (0, 3))
        ro = np.arange(3.0)
        ro.flags.writeable = False
        self.assertEqual(ember.from_numpy(ro).tolist(), [0.0, 1.0, 2.0])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "negative"):
            ember.from_numpy(np.arange(5)[::-1])
        with self.assertRaisesRegex(TypeError, "only supported types"):
            ember.from_numpy(np.arange(3, dtype=np.uint32))
        with self.assertRaisesRegex(TypeError, "only supported types"):
            ember.from_numpy(np.arange(3, dtype=np.complex64))
        with self.assertRaisesRegex(TypeError, r"expected np.ndarray \(got list\)"):
            ember.from_numpy([1, 2])

    def test_tensor_and_as_tensor(self):
        a = np.arange(3.0)
        t = ember.tensor(a)
        self.assertEqual(t.dtype, ember.float64)
        t[0] = 9
        self.assertEqual(a[0], 0.0)  # ember.tensor copies
        s = ember.as_tensor(a)
        s[0] = 9
        self.assertEqual(a[0], 9.0)  # as_tensor shares
        self.assertEqual(ember.as_tensor(a, dtype=ember.float32).dtype, ember.float32)
        self.assertEqual(ember.tensor(np.float32(2.5)).dtype, ember.float32)
        self.assertEqual(ember.tensor([np.int32(1), np.int32(2)]).dtype, ember.int32)
        self.assertEqual(ember.tensor([np.arange(2), np.arange(2)]).tolist(), [[0, 1], [0, 1]])


class TestToNumpy(unittest.TestCase):
    def test_numpy_shares_memory_and_keeps_tensor_alive(self):
        t = ember.arange(6.0).view(2, 3)
        a = t.numpy()
        self.assertEqual(a.dtype, np.float32)
        self.assertEqual(a.shape, (2, 3))
        a[0, 0] = 42
        self.assertEqual(t[0, 0].item(), 42)
        t[1, 1] = -1
        self.assertEqual(a[1, 1], -1)
        del t
        gc.collect()
        self.assertEqual(a.tolist(), [[42, 1, 2], [3, -1, 5]])

    def test_non_contiguous_and_special(self):
        t = ember.arange(12).view(3, 4).t()
        a = t.numpy()
        self.assertEqual(a.strides, (8, 32))
        self.assertEqual(a.tolist(), t.tolist())
        self.assertEqual(ember.tensor(7).numpy().shape, ())
        self.assertEqual(ember.zeros(0, 2).numpy().shape, (0, 2))
        self.assertEqual(ember.tensor([True, False]).numpy().dtype, np.bool_)
        self.assertEqual(repr(ember.tensor(5).numpy()), "array(5)")
        self.assertEqual(np.asarray(ember.ones(2, dtype=ember.float16)).dtype, np.float16)

    def test_buffer_protocol(self):
        t = ember.arange(6, dtype=ember.int32).view(2, 3)
        m = memoryview(t)
        self.assertEqual(m.format, "i")
        self.assertEqual(m.shape, (2, 3))
        self.assertEqual(m.strides, (12, 4))
        self.assertEqual(m.tolist(), [[0, 1, 2], [3, 4, 5]])
        m[0, 0] = 7
        self.assertEqual(t[0, 0].item(), 7)
        a = np.asarray(t)
        self.assertTrue(np.shares_memory(a, t.numpy()))
        nc = ember.arange(6, dtype=ember.int8).view(2, 3).t()
        self.assertEqual(bytes(nc), bytes([0, 3, 1, 4, 2, 5]))  # strided export, C-order copy
        import hashlib
        with self.assertRaises(BufferError):
            hashlib.sha1(nc)  # a contiguous buffer was requested
        m.release()

    def test_buffer_survives_data_swap(self):
        t = ember.arange(4.0)
        a = t.numpy()
        t.data = ember.zeros(2)
        gc.collect()
        self.assertEqual(a.tolist(), [0.0, 1.0, 2.0, 3.0])  # old storage still alive

    def test_array_interface_and_protocols(self):
        t = ember.arange(6.0, dtype=ember.float64).view(2, 3)[:, 1:]
        ai = t.__array_interface__
        self.assertEqual(ai["shape"], (2, 2))
        self.assertEqual(ai["typestr"], "<f8")
        self.assertEqual(ai["strides"], (24, 8))
        self.assertEqual(ai["version"], 3)
        self.assertEqual(ai["data"], (t.data_ptr(), False))
        self.assertEqual(np.array(t).tolist(), [[1, 2], [4, 5]])
        self.assertEqual(np.asarray(t, dtype=np.int64).dtype, np.int64)
        r = np.sin(ember.zeros(2))
        self.assertIsInstance(r, ember.Tensor)

    def test_errors(self):
        with self.assertRaisesRegex(RuntimeError, r"Can't call numpy\(\) on Tensor that requires grad"):
            ember.ones(2, requires_grad=True).numpy()
        self.assertEqual(ember.ones(2, requires_grad=True).numpy(force=True).tolist(), [1.0, 1.0])
        self.assertEqual(ember.ones(2, requires_grad=True).detach().numpy().tolist(), [1.0, 1.0])
        with self.assertRaisesRegex(TypeError, "BFloat16"):
            ember.ones(2, dtype=ember.bfloat16).numpy()


class TestOperatorsWithArrays(unittest.TestCase):
    def test_mixed_arithmetic(self):
        t = ember.ones(2)
        a = np.array([1.0, 2.0])
        r = t + a
        self.assertIsInstance(r, ember.Tensor)
        self.assertEqual(r.dtype, ember.float64)
        self.assertEqual(r.tolist(), [2.0, 3.0])
        r2 = a + t  # NumPy defers to the tensor (__array_priority__)
        self.assertIsInstance(r2, ember.Tensor)
        self.assertEqual(r2.tolist(), [2.0, 3.0])
        self.assertEqual((t * np.float32(3)).dtype, ember.float32)
        self.assertEqual((ember.ones(2, dtype=ember.int32) + np.int64(1)).dtype, ember.int32)
        self.assertEqual((np.eye(2) @ ember.ones(2, dtype=ember.float64)).tolist(), [1.0, 1.0])


class TestDLPack(unittest.TestCase):
    def test_to_numpy_shares(self):
        t = ember.arange(6.0).view(2, 3)
        self.assertEqual(t.__dlpack_device__(), (1, 0))
        a = np.from_dlpack(t)  # NumPy 1.24 marks imported arrays read-only
        self.assertEqual(a.shape, (2, 3))
        t[0, 0] = 11
        self.assertEqual(a[0, 0], 11)
        s = t[:, 1:]
        b = np.from_dlpack(s)
        self.assertEqual(b.tolist(), [[1.0, 2.0], [4.0, 5.0]])
        del t, s
        gc.collect()
        self.assertEqual(a[1].tolist(), [3.0, 4.0, 5.0])

    def test_from_numpy_shares(self):
        a = np.arange(8, dtype=np.int16).reshape(2, 4)
        t = ember.from_dlpack(a)
        self.assertEqual(t.dtype, ember.int16)
        t[1, 3] = -9
        self.assertEqual(a[1, 3], -9)
        del a
        gc.collect()
        self.assertEqual(t[1].tolist(), [4, 5, 6, -9])

    def test_round_trip_and_capsules(self):
        t = ember.arange(5, dtype=ember.int64)
        u = ember.from_dlpack(t.__dlpack__())
        u[0] = 50
        self.assertEqual(t[0].item(), 50)
        cap = ember.ones(2).__dlpack__()
        ember.from_dlpack(cap)
        with self.assertRaisesRegex(RuntimeError, "consumed only once"):
            ember.from_dlpack(cap)
        unused = ember.ones(3).__dlpack__()
        del unused  # the capsule destructor frees it
        with self.assertRaisesRegex(RuntimeError, "require gradient"):
            ember.ones(2, requires_grad=True).__dlpack__()
        for dt in (ember.float16, ember.bfloat16, ember.uint8, ember.int32, ember.float64):
            x = ember.ones(3, dtype=dt)
            self.assertEqual(ember.from_dlpack(x).dtype, dt)
            self.assertTrue(ember.equal(ember.from_dlpack(x), x))


if __name__ == "__main__":
    unittest.main()
