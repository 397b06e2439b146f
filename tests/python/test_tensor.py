"""ember.Tensor: creation, dtypes, devices, Size, attributes, conversions,
repr (against PyTorch 1.13's output, hard-coded), pickling and copying."""
import copy
import math
import pickle
import unittest
import weakref

import ember


class TestCreation(unittest.TestCase):
    def test_tensor_from_lists_infers_dtype_like_torch(self):
        cases = [
            ([1, 2, 3], ember.int64, [3]),
            ([1.0, 2], ember.float32, [2]),
            ([True, False], ember.bool, [2]),
            ([True, 2], ember.int64, [2]),
            ([1, 2.5, True], ember.float32, [3]),
            ([[1, 2], [3, 4]], ember.int64, [2, 2]),
            ([], ember.float32, [0]),
            ([[]], ember.float32, [1, 0]),
            (3.5, ember.float32, []),
            (7, ember.int64, []),
            (False, ember.bool, []),
            (2 ** 40, ember.int64, []),
            ((1, 2), ember.int64, [2]),
            ([ember.tensor(1, dtype=ember.int32), 2], ember.int64, [2]),
        ]
        for data, dt, shape in cases:
            t = ember.tensor(data)
            self.assertEqual(t.dtype, dt, data)
            self.assertEqual(list(t.shape), shape, data)
        self.assertEqual(ember.tensor([[1, 2], [3, 4]]).tolist(), [[1, 2], [3, 4]])
        self.assertEqual(ember.tensor(2 ** 40).item(), 2 ** 40)

    def test_tensor_dtype_device_requires_grad(self):
        t = ember.tensor([1, 2], dtype=ember.float64, device="cpu", requires_grad=True)
        self.assertEqual(t.dtype, ember.float64)
        self.assertTrue(t.requires_grad and t.is_leaf)
        self.assertEqual(t.tolist(), [1.0, 2.0])
        self.assertEqual(ember.tensor([1.7, -1.7], dtype=ember.int32).tolist(), [1, -1])
        self.assertEqual(ember.tensor([1, 0, 2], dtype=ember.bool).tolist(), [True, False, True])

    def test_tensor_copies_its_input(self):
        a = ember.ones(3)
        b = ember.tensor(a)
        b[0] = 5
        self.assertEqual(a.tolist(), [1.0, 1.0, 1.0])

    def test_size_forms(self):
        for t in (ember.zeros(2, 3), ember.zeros((2, 3)), ember.zeros([2, 3]),
                  ember.zeros(size=(2, 3)), ember.zeros(ember.Size([2, 3]))):
            self.assertEqual(t.shape, (2, 3))
            self.assertEqual(t.dtype, ember.float32)
            self.assertEqual(t.tolist(), [[0.0] * 3] * 2)
        self.assertEqual(ember.zeros(()).shape, ())
        self.assertEqual(ember.zeros([]).ndim, 0)
        self.assertEqual(ember.ones(2, dtype=ember.int32).tolist(), [1, 1])
        self.assertEqual(ember.empty(0, 4).shape, (0, 4))
        self.assertEqual(ember.zeros(2, requires_grad=True).requires_grad, True)

    def test_full_infers_dtype_from_fill_value(self):
        self.assertEqual(ember.full((2,), 7).dtype, ember.int64)
        self.assertEqual(ember.full((2,), 7.0).dtype, ember.float32)
        self.assertEqual(ember.full((2,), True).dtype, ember.bool)
        self.assertEqual(ember.full((2, 2), 3, dtype=ember.float64).tolist(), [[3.0, 3.0]] * 2)
        self.assertEqual(ember.full(size=(1,), fill_value=2.5).tolist(), [2.5])

    def test_arange_linspace_eye(self):
        self.assertEqual(ember.arange(5).tolist(), [0, 1, 2, 3, 4])
        self.assertEqual(ember.arange(5).dtype, ember.int64)
        self.assertEqual(ember.arange(1, 4, 0.5).tolist(), [1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
        self.assertEqual(ember.arange(1, 4, 0.5).dtype, ember.float32)
        self.assertEqual(ember.arange(5, 0, -2).tolist(), [5, 3, 1])
        self.assertEqual(ember.arange(0, 1, 0.25, dtype=ember.float64).dtype, ember.float64)
        self.assertEqual(ember.arange(end=3).tolist(), [0, 1, 2])
        self.assertEqual(ember.linspace(0, 1, 5).tolist(), [0.0, 0.25, 0.5, 0.75, 1.0])
        self.assertEqual(ember.eye(2).tolist(), [[1.0, 0.0], [0.0, 1.0]])
        self.assertEqual(ember.eye(2, 3, dtype=ember.int64).tolist(), [[1, 0, 0], [0, 1, 0]])

    def test_random(self):
        ember.manual_seed(123)
        a = ember.rand(1000)
        ember.manual_seed(123)
        b = ember.rand(1000)
        self.assertTrue(ember.equal(a, b))
        self.assertTrue(0.0 <= a.min().item() and a.max().item() < 1.0)
        self.assertAlmostEqual(a.mean().item(), 0.5, delta=0.05)
        n = ember.randn(4000, dtype=ember.float64)
        self.assertEqual(n.dtype, ember.float64)
        self.assertAlmostEqual(n.mean().item(), 0.0, delta=0.1)
        self.assertAlmostEqual(n.std().item(), 1.0, delta=0.1)
        r = ember.randint(3, 7, (500,))
        self.assertEqual(r.dtype, ember.int64)
        self.assertEqual(set(r.tolist()), {3, 4, 5, 6})
        self.assertEqual(ember.randint(5, (2, 2)).shape, (2, 2))
        p = ember.randperm(10)
        self.assertEqual(sorted(p.tolist()), list(range(10)))
        g = ember.Generator().manual_seed(5)
        x = ember.randn(3, generator=g)
        g.manual_seed(5)
        self.assertTrue(ember.equal(x, ember.randn(3, generator=g)))
        state = ember.get_rng_state()
        y = ember.rand(3)
        ember.set_rng_state(state)
        self.assertTrue(ember.equal(y, ember.rand(3)))

    def test_like_and_new(self):
        base = ember.ones(2, 3, dtype=ember.int32)
        self.assertEqual(ember.zeros_like(base).dtype, ember.int32)
        self.assertEqual(ember.ones_like(base, dtype=ember.float64).dtype, ember.float64)
        self.assertEqual(ember.full_like(base, 4).tolist(), [[4] * 3] * 2)
        self.assertEqual(ember.empty_like(base).shape, (2, 3))
        self.assertEqual(ember.rand_like(ember.ones(5)).shape, (5,))
        self.assertEqual(ember.randn_like(ember.ones(5, dtype=ember.float64)).dtype, ember.float64)
        self.assertTrue(ember.zeros_like(ember.ones(2), requires_grad=True).requires_grad)
        self.assertEqual(base.new_zeros(4).dtype, ember.int32)
        self.assertEqual(base.new_ones((1, 2)).tolist(), [[1, 1]])
        self.assertEqual(base.new_full((2,), 9).tolist(), [9, 9])
        self.assertEqual(base.new_tensor([1.9, 2]).tolist(), [1, 2])
        self.assertEqual(base.new_empty(3).shape, (3,))

    def test_legacy_constructors(self):
        self.assertEqual(ember.Tensor(2, 3).shape, (2, 3))
        self.assertEqual(ember.Tensor([1, 2]).dtype, ember.float32)
        self.assertEqual(ember.Tensor().shape, (0,))
        self.assertEqual(ember.LongTensor([1, 2]).dtype, ember.int64)
        self.assertEqual(ember.FloatTensor(3).shape, (3,))
        self.assertIsInstance(ember.ones(2), ember.FloatTensor)
        self.assertNotIsInstance(ember.ones(2), ember.LongTensor)


class TestTypes(unittest.TestCase):
    def test_dtypes(self):
        self.assertEqual(repr(ember.float32), "ember.float32")
        self.assertIs(ember.float, ember.float32)
        self.assertIs(ember.double, ember.float64)
        self.assertIs(ember.half, ember.float16)
        self.assertIs(ember.long, ember.int64)
        self.assertIs(ember.int, ember.int32)
        self.assertIs(ember.short, ember.int16)
        self.assertIs(ember.uint8, ember.byte)
        self.assertTrue(ember.bfloat16.is_floating_point)
        self.assertFalse(ember.int8.is_floating_point)
        self.assertEqual(ember.int64.itemsize, 8)
        self.assertEqual(ember.float16.itemsize, 2)
        self.assertTrue(ember.int8.is_signed)
        self.assertFalse(ember.uint8.is_signed)
        for dt in (ember.float32, ember.bool, ember.bfloat16):
            self.assertIs(pickle.loads(pickle.dumps(dt)), dt)
        self.assertIs(ember.get_default_dtype(), ember.float32)

    def test_python_types_as_dtypes(self):
        self.assertEqual(ember.zeros(1, dtype=float).dtype, ember.float64)
        self.assertEqual(ember.zeros(1, dtype=int).dtype, ember.int64)
        self.assertEqual(ember.zeros(1, dtype=bool).dtype, ember.bool)

    def test_device(self):
        d = ember.device("cpu")
        self.assertEqual(repr(d), "device(type='cpu')")
        self.assertEqual(str(d), "cpu")
        self.assertEqual(d.type, "cpu")
        self.assertIsNone(d.index)
        c = ember.device("cuda", 1)
        self.assertEqual(repr(c), "device(type='cuda', index=1)")
        self.assertEqual(str(ember.device("cuda:1")), "cuda:1")
        self.assertEqual(c, ember.device("cuda:1"))
        self.assertNotEqual(c, d)
        self.assertEqual(ember.zeros(1).device, d)
        self.assertEqual(hash(ember.device("cpu")), hash(d))
        self.assertEqual(pickle.loads(pickle.dumps(c)), c)
        self.assertFalse(ember.zeros(1).is_cuda)
        self.assertEqual(ember.zeros(2, device=ember.device("cpu")).device, d)

    def test_size(self):
        s = ember.zeros(2, 3, 4).shape
        self.assertIsInstance(s, tuple)
        self.assertIsInstance(s, ember.Size)
        self.assertEqual(repr(s), "ember.Size([2, 3, 4])")
        self.assertEqual(s, (2, 3, 4))
        self.assertEqual(s.numel(), 24)
        self.assertIsInstance(s[1:], ember.Size)
        self.assertEqual(s[1:], (3, 4))
        self.assertEqual(s[-1], 4)
        self.assertIsInstance(s + (5,), ember.Size)
        self.assertEqual(pickle.loads(pickle.dumps(s)), s)
        self.assertEqual(repr(ember.Size([])), "ember.Size([])")
        a, b, c = s
        self.assertEqual((a, b, c), (2, 3, 4))


class TestAttributes(unittest.TestCase):
    def test_geometry(self):
        t = ember.arange(24).view(2, 3, 4)
        self.assertEqual(t.ndim, 3)
        self.assertEqual(t.dim(), 3)
        self.assertEqual(t.numel(), 24)
        self.assertEqual(t.size(), (2, 3, 4))
        self.assertEqual(t.size(-1), 4)
        self.assertEqual(t.stride(), (12, 4, 1))
        self.assertEqual(t.stride(0), 12)
        self.assertEqual(t.element_size(), 8)
        self.assertTrue(t.is_contiguous())
        self.assertFalse(t.transpose(0, 2).is_contiguous())
        self.assertEqual(t.T.shape, (4, 3, 2))
        self.assertEqual(t.mT.shape, (2, 4, 3))
        self.assertEqual(t[:, 1].storage_offset(), 4)
        self.assertEqual(t.nbytes, 24 * 8)
        self.assertTrue(t.is_cpu)

    def test_item_tolist_and_python_conversions(self):
        self.assertEqual(ember.tensor([2.5]).item(), 2.5)
        self.assertIsInstance(ember.tensor(3).item(), int)
        self.assertIsInstance(ember.tensor(True).item(), bool)
        self.assertEqual(ember.tensor(3.0, dtype=ember.float16).item(), 3.0)
        self.assertEqual(ember.tensor([[1.5, 2], [3, 4]]).tolist(), [[1.5, 2.0], [3.0, 4.0]])
        self.assertEqual(ember.tensor(7).tolist(), 7)
        self.assertEqual(ember.arange(6).view(2, 3).t().tolist(), [[0, 3], [1, 4], [2, 5]])
        self.assertEqual(int(ember.tensor(3.7)), 3)
        self.assertEqual(float(ember.tensor([2])), 2.0)
        self.assertTrue(bool(ember.tensor([1])))
        self.assertFalse(bool(ember.tensor(0.0)))
        self.assertEqual([10, 20, 30][ember.tensor(1)], 20)
        self.assertEqual(math.floor(ember.tensor(2.5)), 2)
        self.assertEqual(f"{ember.tensor(3.14159):.2f}", "3.14")

    def test_len_iter_contains(self):
        t = ember.arange(6).view(3, 2)
        self.assertEqual(len(t), 3)
        rows = list(t)
        self.assertEqual([r.tolist() for r in rows], [[0, 1], [2, 3], [4, 5]])
        rows[0][0] = 100  # rows are views
        self.assertEqual(t[0, 0].item(), 100)
        self.assertEqual([x.item() for x in ember.arange(3)], [0, 1, 2])
        self.assertIn(3, t)
        self.assertNotIn(42, t)

    def test_attributes_and_weakrefs(self):
        t = ember.ones(2)
        t.note = "hello"
        self.assertEqual(t.note, "hello")
        self.assertEqual(t.__dict__, {"note": "hello"})
        r = weakref.ref(t)
        self.assertIs(r(), t)
        del t
        self.assertIsNone(r())
        self.assertNotEqual(hash(ember.ones(1)), None)
        a = ember.ones(1)
        self.assertEqual({a: 1}[a], 1)

    def test_identity_is_preserved(self):
        x = ember.ones(3, requires_grad=True)
        (x * 2).sum().backward()
        self.assertIs(x.grad, x.grad)
        self.assertIs(x.to(ember.float32), x)
        self.assertIs(x.float(), x)
        self.assertIs(x.cpu(), x)
        self.assertIsNot(x.to(ember.float32, copy=True), x)
        self.assertIsNot(x.detach(), x)

    def test_data_property(self):
        x = ember.ones(3, requires_grad=True)
        d = x.data
        self.assertFalse(d.requires_grad)
        d[0] = 5
        self.assertEqual(x[0].item(), 5.0)
        x.data = ember.zeros(2)
        self.assertEqual(x.shape, (2,))
        self.assertTrue(x.requires_grad)
        self.assertEqual(x.tolist(), [0.0, 0.0])

    def test_subclass(self):
        class Param(ember.Tensor):
            def __new__(cls, data, requires_grad=True):
                return ember.Tensor._make_subclass(cls, data, requires_grad)

        base = ember.ones(3)
        p = Param(base)
        self.assertIsInstance(p, Param)
        self.assertTrue(p.requires_grad)
        p.data[0] = 7
        self.assertEqual(base[0].item(), 7.0)  # shares storage
        self.assertIs(type(p * 2), ember.Tensor)
        (p * 2).sum().backward()
        self.assertEqual(p.grad.tolist(), [2.0, 2.0, 2.0])


class TestConversions(unittest.TestCase):
    def test_to_and_shortcuts(self):
        t = ember.tensor([1.7, -2.2])
        self.assertEqual(t.to(ember.int32).tolist(), [1, -2])
        self.assertEqual(t.to("cpu", ember.float64).dtype, ember.float64)
        self.assertEqual(t.to(device="cpu", dtype=ember.int64).dtype, ember.int64)
        self.assertEqual(t.to(ember.ones(1, dtype=ember.int16)).dtype, ember.int16)
        for name, dt in [("float", ember.float32), ("double", ember.float64), ("half", ember.float16),
                         ("bfloat16", ember.bfloat16), ("long", ember.int64), ("int", ember.int32),
                         ("short", ember.int16), ("char", ember.int8), ("byte", ember.uint8),
                         ("bool", ember.bool)]:
            self.assertEqual(getattr(t, name)().dtype, dt, name)
        self.assertEqual(t.type(), "ember.FloatTensor")
        self.assertEqual(t.type(ember.int64).dtype, ember.int64)
        self.assertEqual(t.type("ember.DoubleTensor").dtype, ember.float64)
        self.assertEqual(t.type_as(ember.zeros(1, dtype=ember.int8)).dtype, ember.int8)

    def test_contiguous_clone_detach(self):
        t = ember.arange(6).view(2, 3).t()
        c = t.contiguous()
        self.assertTrue(c.is_contiguous())
        self.assertEqual(c.tolist(), t.tolist())
        k = ember.arange(3)
        self.assertIs(k.contiguous(), k)
        cl = k.clone()
        cl[0] = 9
        self.assertEqual(k[0].item(), 0)
        d = k.detach()
        d[0] = 9
        self.assertEqual(k[0].item(), 9)


class TestRepr(unittest.TestCase):
    # Expected strings: PyTorch 1.13's repr with "torch." written "ember.".
    CASES = [
        (lambda: ember.tensor([[1., 2.], [3., 4.]]), 'tensor([[1., 2.],\n        [3., 4.]])'),
        (lambda: ember.tensor([1, 2, 3], dtype=ember.int32), 'tensor([1, 2, 3], dtype=ember.int32)'),
        (lambda: ember.tensor([True, False]), 'tensor([ True, False])'),
        (lambda: ember.tensor([1, 2, 3]), 'tensor([1, 2, 3])'),
        (lambda: ember.tensor(3.5), 'tensor(3.5000)'),
        (lambda: ember.zeros(0, 3), 'tensor([], size=(0, 3))'),
        (lambda: ember.zeros(0, dtype=ember.int64), 'tensor([], dtype=ember.int64)'),
        (lambda: ember.tensor([1e10, 1.]), 'tensor([1.0000e+10, 1.0000e+00])'),
        (lambda: ember.tensor([0.001, 1000.]), 'tensor([1.0000e-03, 1.0000e+03])'),
        (lambda: ember.arange(2000.),
         'tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        1.9990e+03])'),
        (lambda: ember.tensor([1., 2.], requires_grad=True), 'tensor([1., 2.], requires_grad=True)'),
        (lambda: ember.tensor([1., 2.], requires_grad=True) * 2, 'tensor([2., 4.], grad_fn=<MulBackward0>)'),
        (lambda: ember.ones(2, 2, dtype=ember.float64, requires_grad=True) * 3,
         'tensor([[3., 3.],\n        [3., 3.]], dtype=ember.float64, grad_fn=<MulBackward0>)'),
        (lambda: ember.zeros(0, 3, requires_grad=True), 'tensor([], size=(0, 3), requires_grad=True)'),
        (lambda: ember.tensor([1., 2.], requires_grad=True).sum(), 'tensor(3., grad_fn=<SumBackward0>)'),
        (lambda: ember.arange(6).view(1, 2, 3), 'tensor([[[0, 1, 2],\n         [3, 4, 5]]])'),
        (lambda: ember.tensor([float("nan"), float("inf"), -1.5]), 'tensor([    nan,     inf, -1.5000])'),
        (lambda: ember.tensor([1.5, 2.25], dtype=ember.float16), 'tensor([1.5000, 2.2500], dtype=ember.float16)'),
        (lambda: ember.full((2, 7), 1.5e5, dtype=ember.float64, requires_grad=True) * 1,
         'tensor([[150000., 150000., 150000., 150000., 150000., 150000., 150000.],\n'
         '        [150000., 150000., 150000., 150000., 150000., 150000., 150000.]],\n'
         '       dtype=ember.float64, grad_fn=<MulBackward0>)'),
        (lambda: ember.arange(8.).view(2, 4).requires_grad_().double() * 12345.678,
         'tensor([[    0.0000, 12345.6780, 24691.3560, 37037.0340],\n'
         '        [49382.7120, 61728.3900, 74074.0680, 86419.7460]], dtype=ember.float64,\n'
         '       grad_fn=<MulBackward0>)'),
        (lambda: ember.linspace(-1e5, 1e5, 10, dtype=ember.float64, requires_grad=True) * 1,
         'tensor([-100000.0000,  -77777.7778,  -55555.5556,  -33333.3333,  -11111.1111,\n'
         '          11111.1111,   33333.3333,   55555.5556,   77777.7778,  100000.0000],\n'
         '       dtype=ember.float64, grad_fn=<MulBackward0>)'),
    ]

    def test_repr_matches_torch(self):
        for make, expected in self.CASES:
            t = make()
            self.assertEqual(repr(t), expected)
            self.assertEqual(str(t), expected)

    def test_grad_fn_repr(self):
        t = ember.ones(2, requires_grad=True)
        self.assertIsNone(t.grad_fn)
        y = t.exp()
        self.assertEqual(y.grad_fn.name(), "ExpBackward0")
        self.assertEqual(type(y.grad_fn).__name__, "ExpBackward0")
        self.assertTrue(repr(y.grad_fn).startswith("<ExpBackward0 object at 0x"))


class TestPickleCopy(unittest.TestCase):
    def test_pickle_round_trip(self):
        for t in (ember.arange(6).view(2, 3), ember.tensor([1.5, -2], dtype=ember.float16),
                  ember.tensor(True), ember.zeros(0, 2), ember.arange(6.).view(2, 3).t()):
            for proto in (2, pickle.HIGHEST_PROTOCOL):
                u = pickle.loads(pickle.dumps(t, protocol=proto))
                self.assertEqual(u.dtype, t.dtype)
                self.assertEqual(u.shape, t.shape)
                self.assertEqual(u.tolist(), t.tolist())
        r = pickle.loads(pickle.dumps(ember.ones(2, requires_grad=True)))
        self.assertTrue(r.requires_grad and r.is_leaf)

    def test_copy_and_deepcopy(self):
        t = ember.tensor([1.0, 2.0], requires_grad=True)
        (t * 3).sum().backward()
        d = copy.deepcopy(t)
        self.assertIsNot(d, t)
        self.assertTrue(d.requires_grad)
        self.assertEqual(d.tolist(), [1.0, 2.0])
        self.assertEqual(d.grad.tolist(), [3.0, 3.0])
        d.data[0] = 5
        self.assertEqual(t[0].item(), 1.0)
        pair = copy.deepcopy([t, t])
        self.assertIs(pair[0], pair[1])
        c = copy.copy(ember.ones(2))
        self.assertEqual(c.tolist(), [1.0, 1.0])
        with self.assertRaises(RuntimeError):
            copy.deepcopy(t * 2)



class TestConfig(unittest.TestCase):
    def test_config_show(self):
        text = ember.__config__.show()
        self.assertIn("ember " + ember.__version__, text)
        self.assertRegex(text, r"BLAS: OpenBLAS [0-9.]+ \(.*kernels")
        self.assertIn("CPU threads: %d" % ember.get_num_threads(), text)


if __name__ == "__main__":
    unittest.main()
