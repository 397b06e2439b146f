"""Ops as functions, methods and operators: values against references
computed here in Python (double), type promotion as PyTorch's, keyword
names, out=, in-place forms, non-contiguous / broadcast / empty / 0-dim
inputs, views sharing memory."""
import math
import unittest

import ember


def close(a, b, tol=1e-5):
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol * (1 + abs(b))


class OpsCase(unittest.TestCase):
    def assertClose(self, t, expected, tol=1e-5):
        got = t.tolist() if isinstance(t, ember.Tensor) else t
        self.assertTrue(close(got, expected, tol), f"{got} != {expected}")


class TestUnary(OpsCase):
    XS = [-1.5, -0.25, 0.0, 0.5, 2.0]
    POS = [0.25, 0.5, 1.0, 2.0, 9.0]
    UNIT = [-0.9, -0.3, 0.0, 0.4, 0.8]

    def check(self, name, ref, xs, dtypes=(ember.float32, ember.float64)):
        for dt in dtypes:
            t = ember.tensor(xs, dtype=dt)
            expected = [ref(x) for x in xs]
            tol = 1e-5 if dt == ember.float32 else 1e-12
            self.assertClose(getattr(t, name)(), expected, tol)
            self.assertClose(getattr(ember, name)(t), expected, tol)
            u = t.clone()
            self.assertIs(getattr(u, name + "_")(), u)
            self.assertClose(u, expected, tol)

    def test_float_ops(self):
        sig = lambda x: 1 / (1 + math.exp(-x))
        table = [
            ("neg", lambda x: -x, self.XS), ("abs", abs, self.XS),
            ("sign", lambda x: (x > 0) - (x < 0), self.XS), ("exp", math.exp, self.XS),
            ("exp2", lambda x: 2 ** x, self.XS), ("log", math.log, self.POS),
            ("log2", math.log2, self.POS), ("log10", math.log10, self.POS),
            ("log1p", math.log1p, self.POS), ("expm1", math.expm1, self.XS),
            ("sqrt", math.sqrt, self.POS), ("rsqrt", lambda x: 1 / math.sqrt(x), self.POS),
            ("reciprocal", lambda x: 1 / x, self.POS), ("square", lambda x: x * x, self.XS),
            ("sin", math.sin, self.XS), ("cos", math.cos, self.XS), ("tan", math.tan, self.XS),
            ("asin", math.asin, self.UNIT), ("acos", math.acos, self.UNIT), ("atan", math.atan, self.XS),
            ("sinh", math.sinh, self.XS), ("cosh", math.cosh, self.XS), ("tanh", math.tanh, self.XS),
            ("sigmoid", sig, self.XS), ("erf", math.erf, self.XS), ("relu", lambda x: max(x, 0.0), self.XS),
            ("silu", lambda x: x * sig(x), self.XS), ("floor", math.floor, self.XS),
            ("ceil", math.ceil, self.XS), ("round", lambda x: float(round(x)), [-1.5, -0.5, 0.5, 1.5, 2.4]),
            ("trunc", math.trunc, self.XS), ("frac", lambda x: x - math.trunc(x), self.XS),
        ]
        for name, ref, xs in table:
            with self.subTest(op=name):
                self.check(name, ref, xs)

    def test_int_inputs_and_dtypes(self):
        t = ember.tensor([1, 4, 9])
        self.assertEqual(t.sqrt().dtype, ember.float32)
        self.assertClose(t.sqrt(), [1.0, 2.0, 3.0])
        self.assertEqual(t.neg().tolist(), [-1, -4, -9])
        self.assertEqual(t.abs().dtype, ember.int64)
        self.assertEqual(ember.tensor([True, False]).logical_not().tolist(), [False, True])
        self.assertEqual(ember.tensor([5, 0], dtype=ember.int32).bitwise_not().tolist(), [-6, -1])
        self.assertClose(ember.tensor([1.0, 4.0], dtype=ember.float16).sqrt(), [1.0, 2.0], 1e-3)
        self.assertClose(ember.tensor([1.0, 4.0], dtype=ember.bfloat16).sqrt(), [1.0, 2.0], 1e-2)

    def test_predicates_and_activations(self):
        t = ember.tensor([1.0, float("nan"), float("inf"), -float("inf")])
        self.assertEqual(t.isnan().tolist(), [False, True, False, False])
        self.assertEqual(t.isinf().tolist(), [False, False, True, True])
        self.assertEqual(ember.isfinite(t).tolist(), [True, False, False, False])
        x = ember.tensor([-2.0, -0.5, 0.5, 3.0])
        self.assertClose(ember.leaky_relu(x, 0.1), [-0.2, -0.05, 0.5, 3.0])
        self.assertClose(ember.hardtanh(x), [-1.0, -0.5, 0.5, 1.0])
        self.assertClose(ember.elu(x), [math.exp(-2) - 1, math.exp(-0.5) - 1, 0.5, 3.0])
        self.assertClose(ember.softplus(x), [math.log1p(math.exp(v)) for v in [-2.0, -0.5, 0.5, 3.0]])
        gelu = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in [-2.0, -0.5, 0.5, 3.0]]
        self.assertClose(ember.gelu(x), gelu)
        self.assertClose(x.clamp(min=0), [0.0, 0.0, 0.5, 3.0])
        self.assertClose(x.clamp(-1, 1), [-1.0, -0.5, 0.5, 1.0])
        self.assertClose(x.clip(max=0), [-2.0, -0.5, 0.0, 0.0])
        self.assertClose(x.clamp(min=ember.tensor([0.0, 0.0, 1.0, 1.0])), [0.0, 0.0, 1.0, 3.0])
        y = x.clone()
        y.clamp_(min=-1.0, max=1.0)
        self.assertClose(y, [-1.0, -0.5, 0.5, 1.0])

    def test_non_contiguous_and_empty(self):
        t = ember.tensor([[1.0, 4.0], [9.0, 16.0]]).t()
        self.assertClose(t.sqrt(), [[1.0, 3.0], [2.0, 4.0]])
        s = ember.arange(10.0)[::3]
        self.assertClose(s.neg(), [-0.0, -3.0, -6.0, -9.0])
        self.assertEqual(ember.zeros(0, 3).exp().shape, (0, 3))
        self.assertClose(ember.tensor(4.0).sqrt(), 2.0)


class TestBinary(OpsCase):
    def test_arithmetic_and_broadcasting(self):
        a = ember.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        b = ember.tensor([10.0, 20.0, 30.0])
        self.assertClose(a + b, [[11, 22, 33], [14, 25, 36]])
        self.assertClose(a - b, [[-9, -18, -27], [-6, -15, -24]])
        self.assertClose(a * b, [[10, 40, 90], [40, 100, 180]])
        self.assertClose(b / a, [[10, 10, 10], [2.5, 4, 5]])
        self.assertClose(ember.add(a, b, alpha=2), [[21, 42, 63], [24, 45, 66]])
        self.assertClose(a.sub(b, alpha=0.5), [[-4, -8, -12], [-1, -5, -9]])
        self.assertClose(ember.mul(a, 2), [[2, 4, 6], [8, 10, 12]])
        self.assertClose(a.t() + b.view(3, 1), [[11, 14], [22, 25], [33, 36]])
        self.assertClose(ember.maximum(a, ember.tensor([2.0, 2.0, 7.0])), [[2, 2, 7], [4, 5, 7]])
        self.assertClose(ember.minimum(a, 3.5), [[1, 2, 3], [3.5, 3.5, 3.5]])
        self.assertClose(ember.atan2(ember.tensor([1.0, -1.0]), ember.tensor([1.0, 1.0])),
                         [math.atan2(1, 1), math.atan2(-1, 1)])
        self.assertClose(ember.pow(a, 2), [[1, 4, 9], [16, 25, 36]])
        self.assertClose(ember.pow(2, ember.tensor([1.0, 3.0])), [2, 8])
        self.assertClose(a.pow(ember.tensor([0.0, 1.0, 2.0])), [[1, 2, 9], [1, 5, 36]])

    def test_integer_division_family(self):
        a = ember.tensor([7, -7, 7, -7])
        b = ember.tensor([2, 2, -2, -2])
        self.assertEqual((a // b).tolist(), [3, -4, -4, 3])
        self.assertEqual((a % b).tolist(), [1, 1, -1, -1])
        self.assertEqual(ember.fmod(a, b).tolist(), [1, -1, 1, -1])
        self.assertEqual(a.div(b, rounding_mode="trunc").tolist(), [3, -3, -3, 3])
        self.assertEqual(a.div(b, rounding_mode="floor").tolist(), [3, -4, -4, 3])
        self.assertClose(a / b, [3.5, -3.5, -3.5, 3.5])
        self.assertEqual((a / b).dtype, ember.float32)
        self.assertClose(ember.tensor([7.5, -7.5]) // 2, [3.0, -4.0])
        self.assertClose(ember.tensor([7.5, -7.5]) % 2, [1.5, 0.5])

    def test_type_promotion(self):
        i32 = ember.tensor([1, 2], dtype=ember.int32)
        cases = [
            (i32 + 1, ember.int32), (i32 + 1.5, ember.float32), (i32 + ember.tensor(1), ember.int32),
            (i32 + ember.tensor([1, 1]), ember.int64), (i32 * True, ember.int32),
            (ember.tensor([1, 2], dtype=ember.uint8) + ember.tensor([1, 2], dtype=ember.int8), ember.int16),
            (ember.tensor([1.0], dtype=ember.float16) + 1, ember.float16),
            (ember.tensor([1.0], dtype=ember.float16) + ember.tensor([1.0]), ember.float32),
            (ember.tensor([True]) + True, ember.bool), (ember.tensor([True]) + 1, ember.int64),
            (ember.tensor(1.0) + ember.tensor([1, 2]), ember.float32),
            (ember.tensor(1.0, dtype=ember.float64) + ember.tensor([1.0]), ember.float32),
            (i32 / 2, ember.float32), (ember.tensor([1.0], dtype=ember.bfloat16) * 2, ember.bfloat16),
        ]
        for t, dt in cases:
            self.assertEqual(t.dtype, dt, repr(t))
        self.assertEqual((i32 + 1.5).tolist(), [2.5, 3.5])

    def test_operators_reflected_and_inplace(self):
        a = ember.tensor([1.0, 2.0, 4.0])
        self.assertClose(2 + a, [3, 4, 6])
        self.assertClose(2 - a, [1, 0, -2])
        self.assertClose(2 * a, [2, 4, 8])
        self.assertClose(8 / a, [8, 4, 2])
        self.assertClose(9 // a, [9, 4, 2])
        self.assertClose(9 % a, [0, 1, 1])
        self.assertClose(2 ** a, [2, 4, 16])
        self.assertClose(a ** 2, [1, 4, 16])
        self.assertClose(a ** 0.5, [1, math.sqrt(2), 2])
        self.assertClose(-a, [-1, -2, -4])
        self.assertClose(+a, [1, 2, 4])
        self.assertClose(abs(-a), [1, 2, 4])
        i = ember.tensor([12, 10])
        self.assertEqual((i & 6).tolist(), [4, 2])
        self.assertEqual((i | 1).tolist(), [13, 11])
        self.assertEqual((i ^ 6).tolist(), [10, 12])
        self.assertEqual((6 & i).tolist(), [4, 2])
        self.assertEqual((~i).tolist(), [-13, -11])
        m = ember.tensor([True, False])
        self.assertEqual((~m).tolist(), [False, True])
        self.assertEqual((m | ember.tensor([False, True])).tolist(), [True, True])
        b = a.clone()
        ref = b
        b += 1
        b *= 2
        b -= ember.tensor([1.0, 1.0, 1.0])
        b /= 2
        b **= 2
        self.assertIs(b, ref)
        self.assertClose(b, [((x + 1) * 2 - 1) ** 2 / 4 for x in [1, 2, 4]])
        c = ember.tensor([7, 8])
        c //= 3
        c %= 2
        self.assertEqual(c.tolist(), [0, 0])
        self.assertEqual(a.add_(1).tolist(), [2.0, 3.0, 5.0])
        self.assertEqual(a.mul_(ember.tensor(2.0)).tolist(), [4.0, 6.0, 10.0])

    def test_comparisons(self):
        a = ember.tensor([1, 2, 3])
        self.assertEqual((a == 2).tolist(), [False, True, False])
        self.assertEqual((a != 2).tolist(), [True, False, True])
        self.assertEqual((a < 2).tolist(), [True, False, False])
        self.assertEqual((a <= 2).tolist(), [True, True, False])
        self.assertEqual((a > ember.tensor([0, 2, 4])).tolist(), [True, False, False])
        self.assertEqual((a >= 2.5).tolist(), [False, False, True])
        self.assertEqual((2 < a).tolist(), [False, False, True])
        self.assertEqual(ember.eq(a, a).tolist(), [True] * 3)
        self.assertEqual(a.ge(2).dtype, ember.bool)
        self.assertFalse(ember.ones(2) == None)  # noqa: E711
        b = ember.tensor([1.0, 5.0])
        b.gt_(2)
        self.assertEqual(b.tolist(), [0.0, 1.0])
        self.assertTrue(ember.allclose(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 2.0000001])))
        self.assertFalse(ember.tensor([1.0]).allclose(ember.tensor([1.1])))
        self.assertTrue(ember.equal(a, ember.tensor([1, 2, 3])))
        self.assertEqual(ember.isclose(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 2.1])).tolist(),
                         [True, False])

    def test_logical(self):
        a = ember.tensor([True, True, False])
        b = ember.tensor([True, False, False])
        self.assertEqual(ember.logical_and(a, b).tolist(), [True, False, False])
        self.assertEqual(a.logical_or(b).tolist(), [True, True, False])
        self.assertEqual(a.logical_xor(b).tolist(), [False, True, False])

    def test_out_argument(self):
        out = ember.empty(3)
        r = ember.add(ember.ones(3), ember.ones(3), out=out)
        self.assertIs(r, out)
        self.assertEqual(out.tolist(), [2.0, 2.0, 2.0])
        out2 = ember.empty(0)
        ember.mul(ember.ones(2, 2), 3, out=out2)
        self.assertEqual(out2.shape, (2, 2))
        self.assertEqual(out2.tolist(), [[3.0, 3.0]] * 2)
        o = ember.empty(2, dtype=ember.int64)
        with self.assertRaises(RuntimeError):
            ember.div(ember.ones(2), 3, out=o)
        s = ember.empty(())
        ember.sum(ember.ones(4), out=s)
        self.assertEqual(s.item(), 4.0)
        e = ember.empty(3)
        ember.exp(ember.zeros(3), out=e)
        self.assertEqual(e.tolist(), [1.0] * 3)

    def test_function_and_method_agree(self):
        a = ember.tensor([[1.0, -2.0], [3.0, 0.5]])
        for name in ("exp", "abs", "sum", "mean", "t", "flatten", "argmax", "softmax"):
            args = (1,) if name == "softmax" else ()
            self.assertEqual(getattr(ember, name)(a, *args).tolist(), getattr(a, name)(*args).tolist(), name)
        self.assertEqual(ember.add(input=a, other=a).tolist(), (a + a).tolist())


class TestTernary(OpsCase):
    def test_where_lerp_addc(self):
        c = ember.tensor([True, False, True])
        x = ember.tensor([1.0, 2.0, 3.0])
        y = ember.tensor([10.0, 20.0, 30.0])
        self.assertClose(ember.where(c, x, y), [1, 20, 3])
        self.assertClose(x.where(c, y), [1, 20, 3])
        self.assertClose(ember.where(c, x, 0.0), [1, 0, 3])
        self.assertEqual(ember.where(c, 1, 0).dtype, ember.int64)
        self.assertEqual([t.tolist() for t in ember.where(c)], [[0, 2]])
        self.assertClose(ember.lerp(x, y, 0.5), [5.5, 11, 16.5])
        self.assertClose(x.lerp(y, ember.tensor([0.0, 1.0, 0.5])), [1, 20, 16.5])
        self.assertClose(ember.addcmul(x, x, y, value=2), [21, 82, 183])
        self.assertClose(x.addcdiv(y, x, value=0.5), [6, 7, 8])
        z = x.clone()
        z.addcmul_(x, x)
        self.assertClose(z, [2, 6, 12])
        z.lerp_(y, 1.0)
        self.assertClose(z, [10, 20, 30])


class TestReductions(OpsCase):
    A = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]

    def test_sum_mean_prod(self):
        a = ember.tensor(self.A)
        self.assertClose(a.sum(), 21)
        self.assertClose(a.sum(0), [5, 7, 9])
        self.assertClose(a.sum(dim=1, keepdim=True), [[6], [15]])
        self.assertClose(a.sum((0, 1)), 21)
        self.assertClose(a.sum(-1), [6, 15])
        self.assertEqual(a.sum(dtype=ember.float64).dtype, ember.float64)
        self.assertEqual(ember.tensor([[1, 2], [3, 4]]).sum().dtype, ember.int64)
        self.assertEqual(ember.tensor([True, True]).sum().item(), 2)
        self.assertClose(a.mean(), 3.5)
        self.assertClose(a.mean([0]), [2.5, 3.5, 4.5])
        self.assertClose(a.prod(), 720)
        self.assertClose(a.prod(1), [6, 120])
        self.assertClose(a.t().sum(0), [6, 15])  # non-contiguous
        self.assertClose(ember.zeros(0, 3).sum(0), [0, 0, 0])

    def test_minmax(self):
        a = ember.tensor([[1.0, 7.0, 3.0], [4.0, 5.0, 6.0]])
        self.assertClose(a.max(), 7)
        self.assertClose(a.min(), 1)
        r = a.max(1)
        self.assertClose(r.values, [7, 6])
        self.assertEqual(r.indices.tolist(), [1, 2])
        v, i = a.min(dim=0, keepdim=True)
        self.assertClose(v, [[1, 5, 3]])
        self.assertEqual(i.tolist(), [[0, 1, 0]])
        self.assertEqual(repr(ember.tensor([[1.0, 2.0]]).max(1)),
                         "ember.return_types.max(\nvalues=tensor([2.]),\nindices=tensor([1]))")
        self.assertClose(a.max(ember.tensor([5.0, 5.0, 5.0])), [[5, 7, 5], [5, 5, 6]])
        self.assertClose(ember.amax(a, 0), [4, 7, 6])
        self.assertClose(a.amin(dim=(0, 1)), 1)
        self.assertEqual(a.argmax().item(), 1)
        self.assertEqual(a.argmax(1).tolist(), [1, 2])
        self.assertEqual(a.argmin(0, keepdim=True).tolist(), [[0, 1, 0]])

    def test_statistics(self):
        a = ember.tensor(self.A, dtype=ember.float64)
        xs = [1, 2, 3, 4, 5, 6]
        m = sum(xs) / 6
        var1 = sum((x - m) ** 2 for x in xs) / 5
        self.assertClose(a.var(), var1, 1e-12)
        self.assertClose(a.var(unbiased=False), var1 * 5 / 6, 1e-12)
        self.assertClose(a.var(False), var1 * 5 / 6, 1e-12)
        self.assertClose(a.std(), math.sqrt(var1), 1e-12)
        self.assertClose(a.std(1), [1.0, 1.0], 1e-12)
        self.assertClose(a.var(0, correction=0), [2.25, 2.25, 2.25], 1e-12)
        self.assertClose(a.norm(), math.sqrt(sum(x * x for x in xs)), 1e-12)
        self.assertClose(a.norm(1), 21, 1e-12)
        self.assertClose(a.norm(float("inf"), dim=1), [3, 6], 1e-12)
        self.assertClose(a.logsumexp(1), [math.log(sum(math.exp(x) for x in r)) for r in self.A], 1e-12)
        self.assertEqual(ember.tensor([1, 0, 2, 0]).count_nonzero().item(), 2)
        self.assertTrue(ember.tensor([1, 1]).all().item())
        self.assertEqual(ember.tensor([[0, 1], [0, 0]]).any(1).tolist(), [True, False])

    def test_softmax_cumulative(self):
        a = ember.tensor(self.A)
        sm = [[math.exp(x) / sum(math.exp(y) for y in r) for x in r] for r in self.A]
        self.assertClose(a.softmax(1), sm)
        self.assertClose(ember.softmax(a, dim=-1), sm)
        self.assertClose(a.log_softmax(1), [[math.log(v) for v in r] for r in sm])
        self.assertEqual(a.softmax(1, dtype=ember.float64).dtype, ember.float64)
        self.assertClose(a.cumsum(1), [[1, 3, 6], [4, 9, 15]])
        self.assertClose(a.cumprod(0), [[1, 2, 3], [4, 10, 18]])


class TestLinalg(OpsCase):
    def test_products(self):
        a = ember.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        b = ember.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])
        ref = [[sum(a.tolist()[i][k] * b.tolist()[k][j] for k in range(2)) for j in range(3)]
               for i in range(3)]
        self.assertClose(a @ b, ref)
        self.assertClose(ember.matmul(a, b), ref)
        self.assertClose(a.mm(b), ref)
        self.assertClose(b.t() @ a.t(), [list(r) for r in zip(*ref)])
        self.assertClose(a.mv(ember.tensor([1.0, 1.0])), [3, 7, 11])
        self.assertClose(ember.dot(ember.tensor([1.0, 2.0]), ember.tensor([3.0, 4.0])), 11)
        self.assertClose(ember.outer(ember.tensor([1.0, 2.0]), ember.tensor([3.0, 4.0])), [[3, 4], [6, 8]])
        bb = ember.stack([a, a])
        self.assertClose(ember.bmm(bb, ember.stack([b, b])), [ref, ref])
        self.assertClose(ember.addmm(ember.ones(3, 3), a, b, beta=0.5, alpha=2),
                         [[0.5 + 2 * x for x in r] for r in ref])
        self.assertClose(ember.baddbmm(ember.zeros(2, 3, 3), bb, ember.stack([b, b])), [ref, ref])
        self.assertClose(ember.tensor([1, 2]) @ ember.tensor([[1, 2], [3, 4]]), [7, 10])
        self.assertEqual((ember.tensor([1, 2]) @ ember.tensor([[1, 2], [3, 4]])).dtype, ember.int64)


class TestShape(OpsCase):
    def test_views_share_memory(self):
        makers = [
            (lambda v: v.t(), 12), (lambda v: v[1], 4), (lambda v: v.narrow(1, 1, 2), 6),
            (lambda v: v.select(0, 2), 4), (lambda v: v.unsqueeze(0), 12), (lambda v: v.view(-1), 12),
            (lambda v: v.reshape(12), 12), (lambda v: v.flatten(), 12), (lambda v: v[:, ::2], 6),
            (lambda v: v.unflatten(1, (2, 2)), 12), (lambda v: v.as_strided((2,), (4,)), 2),
            (lambda v: v.movedim(0, 1), 12), (lambda v: v.permute(1, 0), 12),
            (lambda v: v[None, ..., 1], 3), (lambda v: v.view(1, 12).squeeze(), 12),
            (lambda v: v.diagonal(), 3), (lambda v: v.split(2, 1)[1], 6), (lambda v: v.chunk(3)[2], 4),
            (lambda v: v.unbind(1)[0], 3), (lambda v: v.swapaxes(0, 1), 12), (lambda v: v.detach(), 12),
            (lambda v: v.T, 12), (lambda v: v[..., 1:3], 6),
        ]
        for make, n in makers:
            base = ember.arange(12.0).view(3, 4)
            make(base).fill_(-7)
            self.assertEqual((base == -7).sum().item(), n)
        base = ember.arange(3.0)
        e = base.expand(2, 3)
        base[1] = 9
        self.assertEqual(e.tolist(), [[0, 9, 2], [0, 9, 2]])
        self.assertEqual(e.stride(), (0, 1))

    def test_shape_ops_values(self):
        t = ember.arange(6).view(2, 3)
        self.assertEqual(t.t().tolist(), [[0, 3], [1, 4], [2, 5]])
        self.assertEqual(t.permute(1, 0).tolist(), [[0, 3], [1, 4], [2, 5]])
        self.assertEqual(ember.permute(t, (1, 0)).shape, (3, 2))
        self.assertEqual(t.reshape(3, 2).tolist(), [[0, 1], [2, 3], [4, 5]])
        self.assertEqual(t.t().reshape(6).tolist(), [0, 3, 1, 4, 2, 5])
        self.assertEqual(ember.reshape(t, (-1,)).shape, (6,))
        self.assertEqual(t.view(3, -1).shape, (3, 2))
        self.assertEqual(t.view_as(ember.zeros(3, 2)).shape, (3, 2))
        self.assertEqual(t.flip(0).tolist(), [[3, 4, 5], [0, 1, 2]])
        self.assertEqual(t.flip(0, 1).tolist(), [[5, 4, 3], [2, 1, 0]])
        self.assertEqual(ember.flip(t, [1]).tolist(), [[2, 1, 0], [5, 4, 3]])
        self.assertEqual(t.repeat(1, 2).tolist(), [[0, 1, 2, 0, 1, 2], [3, 4, 5, 3, 4, 5]])
        self.assertEqual(t.movedim(1, 0).shape, (3, 2))
        self.assertEqual(ember.zeros(1, 2, 1).squeeze().shape, (2,))
        self.assertEqual(ember.zeros(1, 2, 1).squeeze(-1).shape, (1, 2))
        self.assertEqual(ember.zeros(2).unsqueeze(-1).shape, (2, 1))
        self.assertEqual(ember.arange(3).expand(2, -1).tolist(), [[0, 1, 2]] * 2)
        self.assertEqual(ember.arange(3).broadcast_to((2, 3)).shape, (2, 3))
        self.assertEqual(ember.ones(2, 1).expand_as(ember.ones(2, 3)).shape, (2, 3))
        self.assertEqual(ember.zeros(2, 3, 4).flatten(1).shape, (2, 12))
        self.assertEqual(ember.zeros(2, 12).unflatten(1, (3, 4)).shape, (2, 3, 4))
        self.assertEqual(ember.broadcast_shapes((2, 1), (1, 3)), (2, 3))
        self.assertEqual([x.shape for x in ember.broadcast_tensors(ember.ones(2, 1), ember.ones(3))],
                         [(2, 3), (2, 3)])

    def test_join_split(self):
        a, b = ember.ones(2, 2), ember.zeros(2, 2)
        self.assertEqual(ember.cat([a, b]).shape, (4, 2))
        self.assertEqual(ember.cat((a, b), dim=1).tolist(), [[1, 1, 0, 0]] * 2)
        self.assertEqual(ember.concat([a, b], 0).shape, (4, 2))
        self.assertEqual(ember.stack([a, b]).shape, (2, 2, 2))
        self.assertEqual(ember.stack([a, b], dim=2).shape, (2, 2, 2))
        s = ember.arange(5).split(2)
        self.assertEqual([x.tolist() for x in s], [[0, 1], [2, 3], [4]])
        self.assertEqual([x.tolist() for x in ember.arange(5).split([1, 4])], [[0], [1, 2, 3, 4]])
        self.assertEqual([x.tolist() for x in ember.arange(5).chunk(2)], [[0, 1, 2], [3, 4]])
        self.assertEqual([x.tolist() for x in ember.arange(6).view(2, 3).unbind(1)], [[0, 3], [1, 4], [2, 5]])
        self.assertEqual(ember.pad(ember.ones(2), (1, 2), value=0).tolist(), [0, 1, 1, 0, 0])

    def test_index_ops(self):
        t = ember.arange(6).view(2, 3)
        self.assertEqual(t.index_select(1, ember.tensor([2, 0])).tolist(), [[2, 0], [5, 3]])
        self.assertEqual(t.gather(1, ember.tensor([[0], [2]])).tolist(), [[0], [5]])
        self.assertEqual(ember.zeros(2, 3).scatter(1, ember.tensor([[1], [2]]), 5.0).tolist(),
                         [[0, 5, 0], [0, 0, 5]])
        self.assertEqual(ember.zeros(2, 3).scatter(1, ember.tensor([[1], [2]]), ember.ones(2, 1)).tolist(),
                         [[0, 1, 0], [0, 0, 1]])
        self.assertEqual(ember.zeros(3).scatter_add(0, ember.tensor([0, 0, 2]), ember.ones(3)).tolist(),
                         [2, 0, 1])
        self.assertEqual(ember.zeros(3).index_add(0, ember.tensor([1, 1]), ember.ones(2), alpha=3).tolist(),
                         [0, 6, 0])
        m = ember.tensor([True, False, True, False])
        self.assertEqual(ember.arange(4).masked_fill(m, -1).tolist(), [-1, 1, -1, 3])
        self.assertEqual(ember.arange(4).masked_select(m).tolist(), [0, 2])
        self.assertEqual(ember.tensor([[0, 1], [1, 0]]).nonzero().tolist(), [[0, 1], [1, 0]])
        self.assertEqual([x.tolist() for x in ember.tensor([[0, 1], [1, 0]]).nonzero(as_tuple=True)],
                         [[0, 1], [1, 0]])
        self.assertEqual(ember.one_hot(ember.tensor([0, 2]), 3).tolist(), [[1, 0, 0], [0, 0, 1]])
        self.assertEqual(ember.embedding(ember.arange(6.0).view(3, 2), ember.tensor([2, 0])).tolist(),
                         [[4, 5], [0, 1]])
        self.assertEqual(t.take_along_dim(ember.tensor([[2], [0]]), 1).tolist(), [[2], [3]])
        u = ember.zeros(3)
        u.index_put_((ember.tensor([0, 2]),), ember.tensor([5.0, 6.0]))
        self.assertEqual(u.tolist(), [5, 0, 6])
        u.index_put_((ember.tensor([0, 0]),), ember.tensor(1.0), accumulate=True)
        self.assertEqual(u.tolist(), [7, 0, 6])

    def test_sort_topk_composites(self):
        t = ember.tensor([3.0, 1.0, 2.0])
        v, i = t.sort()
        self.assertEqual((v.tolist(), i.tolist()), ([1, 2, 3], [1, 2, 0]))
        r = t.sort(descending=True)
        self.assertEqual(r.values.tolist(), [3, 2, 1])
        self.assertEqual(t.topk(2).indices.tolist(), [0, 2])
        self.assertEqual(t.argsort().tolist(), [1, 2, 0])
        self.assertEqual(ember.tril(ember.ones(3, 3)).tolist(), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
        self.assertEqual(ember.triu(ember.ones(2, 2), 1).tolist(), [[0, 1], [0, 0]])
        self.assertEqual(ember.roll(ember.arange(4), 1).tolist(), [3, 0, 1, 2])
        self.assertEqual(ember.diag(ember.tensor([1, 2])).tolist(), [[1, 0], [0, 2]])
        self.assertEqual(ember.arange(9).view(3, 3).diagonal().tolist(), [0, 4, 8])
        self.assertEqual(ember.trace(ember.arange(9.0).view(3, 3)).item(), 12.0)
        self.assertEqual(ember.unique(ember.tensor([3, 1, 3, 2])).tolist(), [1, 2, 3])
        vals, inv, counts = ember.tensor([3, 1, 3]).unique(return_inverse=True, return_counts=True)
        self.assertEqual((vals.tolist(), inv.tolist(), counts.tolist()), ([1, 3], [1, 0, 1], [1, 2]))
        self.assertEqual([x.item() for x in reversed(ember.arange(3))], [2, 1, 0])
        x = ember.tensor([3.0, 1.0, 2.0], requires_grad=True)
        x.sort().values.sum().backward()  # values are differentiable (gather)
        self.assertEqual(x.grad.tolist(), [1.0, 1.0, 1.0])
        self.assertEqual(ember.finfo(ember.float32).eps, 2 ** -23)
        self.assertEqual(ember.finfo(ember.float16).max, 65504.0)
        self.assertEqual((ember.iinfo(ember.int8).min, ember.iinfo(ember.uint8).max), (-128, 255))

    def test_fill_copy_random_inplace(self):
        t = ember.empty(2, 2)
        self.assertIs(t.fill_(3), t)
        self.assertEqual(t.tolist(), [[3.0, 3.0]] * 2)
        t.zero_()
        self.assertEqual(t.sum().item(), 0.0)
        t.copy_(ember.tensor([1.0, 2.0]))
        self.assertEqual(t.tolist(), [[1.0, 2.0]] * 2)
        t.copy_(ember.tensor([[5, 6], [7, 8]]))
        self.assertEqual(t.tolist(), [[5.0, 6.0], [7.0, 8.0]])
        u = ember.empty(1000).uniform_(2, 3)
        self.assertTrue(2 <= u.min().item() and u.max().item() < 3)
        n = ember.empty(2000, dtype=ember.float64).normal_(5, 2)
        self.assertAlmostEqual(n.mean().item(), 5, delta=0.3)
        b = ember.empty(1000).bernoulli_(0.25)
        self.assertEqual(set(b.tolist()) <= {0.0, 1.0}, True)
        self.assertAlmostEqual(b.mean().item(), 0.25, delta=0.08)
        self.assertEqual(ember.bernoulli(ember.tensor([0.0, 1.0])).tolist(), [0.0, 1.0])


if __name__ == "__main__":
    unittest.main()
