"""t[index] and t[index] = value against NumPy's results (same semantics
as PyTorch's for these indices), views vs copies, and indexing errors."""
import unittest

import numpy as np

import ember


def pair(*shape):
    n = int(np.prod(shape))
    return ember.arange(n).view(*shape), np.arange(n).reshape(shape)


class TestGetitem(unittest.TestCase):
    def check(self, t, a, idx, conv=None):
        got = t[conv(idx) if conv else idx]
        exp = a[idx]
        self.assertEqual(tuple(got.shape), exp.shape, idx)
        self.assertEqual(got.tolist(), exp.tolist(), idx)

    def test_basic(self):
        t, a = pair(4, 5, 6)
        for idx in [0, -1, 3, (1, 2), (1, 2, 3), (-1, -2, -3), slice(1, 3), slice(None, None, 2),
                    (slice(None), 1), (Ellipsis, 2), (0, Ellipsis), (None,), (None, 1),
                    (1, None, slice(None), None), (slice(1, None, 2), slice(None, None, 3), 0),
                    (Ellipsis, None), (slice(-3, None),), (slice(-100, 100),), (slice(5, 2),),
                    (slice(None), slice(None), slice(None, None, 4)), ()]:
            self.check(t, a, idx)

    def test_basic_indexing_gives_views(self):
        t = ember.arange(24).view(4, 6)
        for idx in [0, (slice(None), 1), (slice(1, 3), slice(None, None, 2)), (None, Ellipsis, 2), ...]:
            v = t[idx]
            v.fill_(-1)
            self.assertTrue((t == -1).any().item(), idx)
            t = ember.arange(24).view(4, 6)
        t = ember.arange(6)
        v = t[...]
        self.assertIsNot(v, t)
        v[0] = 99
        self.assertEqual(t[0].item(), 99)

    def test_advanced(self):
        t, a = pair(4, 5, 6)
        cases = [
            [0, 2], [[0, 1], [2, 3]], ([0, 1], [1, 2]), (slice(None), [0, 4]), (Ellipsis, [5, 0]),
            ([1, 0], slice(None), [1, 2]), ([[0], [1]], [[1, 2]]), (slice(1, 3), [0, 0], slice(None)),
            ([-1, -4],), (None, [1, 2]),
        ]
        for idx in cases:
            self.check(t, a, idx, lambda i: tuple(ember.tensor(x) if isinstance(x, list) else x
                                                   for x in i) if isinstance(i, tuple) else ember.tensor(i))
            self.check(t, a, idx)  # plain Python lists
        self.check(t, a, np.array([3, 1]))

    def test_masks(self):
        t, a = pair(3, 4)
        m = a % 3 == 0
        self.check(t, a, m, ember.tensor)
        rows = np.array([True, False, True])
        self.check(t, a, rows, ember.tensor)
        self.check(t, a, (slice(None), np.array([True, False, False, True])), lambda i: (i[0], ember.tensor(i[1])))
        self.assertEqual(t[t > 5].tolist(), a[a > 5].tolist())
        self.assertEqual(t[True].shape, (1, 3, 4))
        self.assertEqual(t[False].shape, (0, 3, 4))
        self.assertEqual(t[ember.tensor([1, 0, 1], dtype=ember.uint8)].tolist(), a[[0, 2]].tolist())

    def test_int_next_to_advanced_is_a_select(self):
        # PyTorch (unlike NumPy) applies the int first: result [5, 2], not [2, 5]
        t = ember.arange(60).view(3, 4, 5)
        r = t[0, :, [1, 2]]
        self.assertEqual(r.shape, (4, 2))
        self.assertEqual(r.tolist(), np.arange(60).reshape(3, 4, 5)[0][:, [1, 2]].tolist())

    def test_zero_dim_and_int_tensor_index(self):
        t, a = pair(3, 2)
        self.assertEqual(t[ember.tensor(1)].tolist(), a[1].tolist())
        self.assertEqual(t[np.int64(2)].tolist(), a[2].tolist())
        s = ember.tensor(5.0)
        self.assertEqual(s[...].item(), 5.0)
        self.assertEqual(s[None].shape, (1,))


class TestSetitem(unittest.TestCase):
    def test_basic_and_advanced_assignment(self):
        cases = [
            (1, 7), ((slice(None), 2), -1), ((Ellipsis, slice(0, 2)), 5), ((1, slice(None, None, 2)), 3),
            ([0, 2], 9), (([0, 1], [2, 3]), 4), ((slice(None), [0, 3]), 8),
        ]
        for idx, val in cases:
            t, a = pair(3, 4)
            t[idx] = val
            a[idx] = val
            self.assertEqual(t.tolist(), a.tolist(), idx)

    def test_assign_tensors_with_broadcasting(self):
        t, a = pair(3, 4)
        t[1] = ember.tensor([10, 20, 30, 40])
        a[1] = [10, 20, 30, 40]
        t[:, 0] = ember.tensor([7, 8, 9])
        a[:, 0] = [7, 8, 9]
        t[[0, 2]] = ember.tensor([[1, 1, 1, 1]])
        a[[0, 2]] = [[1, 1, 1, 1]]
        self.assertEqual(t.tolist(), a.tolist())
        t[t > 5] = 0
        a[a > 5] = 0
        self.assertEqual(t.tolist(), a.tolist())
        t[...] = ember.tensor(3)
        self.assertEqual(t.tolist(), [[3] * 4] * 3)
        f = ember.zeros(2, 2)
        f[0] = [1.5, 2.5]
        f[1] = np.array([3.0, 4.0])
        self.assertEqual(f.tolist(), [[1.5, 2.5], [3.0, 4.0]])
        g = ember.zeros(3)
        g[ember.tensor([0, 2])] = ember.tensor([1, 2], dtype=ember.int64)  # converted to float
        self.assertEqual(g.tolist(), [1.0, 0.0, 2.0])

    def test_assignment_through_views_and_autograd(self):
        x = ember.ones(3, requires_grad=True)
        y = x * 2
        y[1] = 10
        y.sum().backward()
        self.assertEqual(x.grad.tolist(), [2.0, 0.0, 2.0])
        with self.assertRaises(RuntimeError):
            x[0] = 5  # in-place on a leaf that requires grad


class TestIndexErrors(unittest.TestCase):
    def test_errors(self):
        t = ember.arange(6).view(2, 3)
        with self.assertRaisesRegex(IndexError, "index 2 is out of bounds for dimension 0 with size 2"):
            t[2]
        with self.assertRaisesRegex(IndexError, "out of bounds for dimension 1 with size 3"):
            t[:, -4]
        with self.assertRaisesRegex(IndexError, "too many indices for tensor of dimension 2"):
            t[0, 0, 0]
        with self.assertRaisesRegex(ValueError, "step must be greater than zero"):
            t[::-1]
        with self.assertRaisesRegex(IndexError, "tensors used as indices must be long, int, byte or bool"):
            t[ember.tensor([0.5])]
        with self.assertRaisesRegex(IndexError, "out of bounds"):
            t[ember.tensor([5])]
        with self.assertRaisesRegex(IndexError, "single ellipsis"):
            t[..., ...]
        with self.assertRaises(IndexError):
            t["a"]
        with self.assertRaises(IndexError):
            ember.tensor(1.0)[0]
        with self.assertRaises(TypeError):
            del t[0]
        with self.assertRaises(RuntimeError):
            t[0] = ember.ones(5, dtype=ember.int64)
        with self.assertRaises(IndexError):
            t[ember.tensor([True, False, True])]  # mask shape mismatch


if __name__ == "__main__":
    unittest.main()
