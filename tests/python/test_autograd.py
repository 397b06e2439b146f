"""Autograd from Python: gradients against hand-computed values,
requires_grad / grad / grad_fn / is_leaf, retain_graph, hooks, grad mode
(context managers, decorators, thread-locality), autograd.grad,
autograd.Function written in Python."""
import math
import threading
import unittest

import ember
from ember.autograd import Function


def close(a, b, tol=1e-5):
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return abs(a - b) <= tol * (1 + abs(b))


class AGCase(unittest.TestCase):
    def assertClose(self, t, expected, tol=1e-5):
        got = t.tolist() if isinstance(t, ember.Tensor) else t
        self.assertTrue(close(got, expected, tol), f"{got} != {expected}")


class TestGradients(AGCase):
    def test_elementwise_chain(self):
        av, bv = [0.5, -1.0, 2.0], [3.0, 0.25, -2.0]
        a = ember.tensor(av, dtype=ember.float64, requires_grad=True)
        b = ember.tensor(bv, dtype=ember.float64, requires_grad=True)
        y = (a * b + a.exp() - b.sin() / 2).sum()
        self.assertClose(y.item(), sum(x * z + math.exp(x) - math.sin(z) / 2 for x, z in zip(av, bv)), 1e-12)
        y.backward()
        self.assertClose(a.grad, [z + math.exp(x) for x, z in zip(av, bv)], 1e-12)
        self.assertClose(b.grad, [x - math.cos(z) / 2 for x, z in zip(av, bv)], 1e-12)

    def test_matmul_mean_broadcast(self):
        w = ember.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)  # [3, 2]
        x = ember.tensor([[1.0, -1.0, 2.0]])  # [1, 3]
        bias = ember.tensor([0.5], requires_grad=True)  # broadcast over [1, 2]
        loss = ((x @ w + bias) ** 2).mean()
        # out = [1-3+10+0.5, 2-4+12+0.5] = [8.5, 10.5]; dL/dout = out (mean of 2, times 2)
        out = [8.5, 10.5]
        self.assertClose(loss.item(), (8.5 ** 2 + 10.5 ** 2) / 2)
        loss.backward()
        self.assertClose(w.grad, [[xi * o for o in out] for xi in [1.0, -1.0, 2.0]])
        self.assertClose(bias.grad, [sum(out)])

    def test_softmax_cross_entropy_by_hand(self):
        z = [1.0, 2.0, 0.5]
        logits = ember.tensor([z], dtype=ember.float64, requires_grad=True)
        loss = -logits.log_softmax(1)[0, 1]
        loss.backward()
        s = sum(math.exp(v) for v in z)
        p = [math.exp(v) / s for v in z]
        self.assertClose(loss.item(), -math.log(p[1]), 1e-12)
        self.assertClose(logits.grad, [[p[0], p[1] - 1, p[2]]], 1e-12)

    def test_gradient_argument_accumulation_retain_graph(self):
        x = ember.tensor([1.0, 2.0], requires_grad=True)
        y = x * x
        y.backward(ember.tensor([1.0, 10.0]), retain_graph=True)
        self.assertClose(x.grad, [2.0, 40.0])
        y.backward(gradient=ember.tensor([1.0, 1.0]))
        self.assertClose(x.grad, [4.0, 44.0])  # accumulates
        with self.assertRaisesRegex(RuntimeError, "backward through the graph a second time"):
            y.backward(ember.ones(2))
        with self.assertRaisesRegex(RuntimeError, "grad can be implicitly created only for scalar outputs"):
            (x * 2).backward()
        z = (x * 3).sum()
        z.backward(inputs=[x])
        self.assertClose(x.grad, [7.0, 47.0])
        ember.autograd.backward([(x * 2).sum()], retain_graph=False)
        self.assertClose(x.grad, [9.0, 49.0])

    def test_views_and_inplace(self):
        x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x.clone()
        y[1:] *= 10
        y.sum().backward()
        self.assertClose(x.grad, [1.0, 10.0, 10.0])
        x.grad = None
        (x.view(3, 1).expand(3, 2).sum(1) * x).sum().backward()  # d/dx sum(2x^2) = 4x
        self.assertClose(x.grad, [4.0, 8.0, 12.0])
        x.grad = None
        (x[ember.tensor([0, 0, 2])]).sum().backward()
        self.assertClose(x.grad, [2.0, 0.0, 1.0])


class TestTensorState(AGCase):
    def test_requires_grad_and_leaves(self):
        x = ember.ones(2)
        self.assertFalse(x.requires_grad)
        self.assertTrue(x.is_leaf)
        self.assertIs(x.requires_grad_(), x)
        self.assertTrue(x.requires_grad and x.is_leaf)
        y = x * 2
        self.assertTrue(y.requires_grad)
        self.assertFalse(y.is_leaf)
        self.assertEqual(y.grad_fn.name(), "MulBackward0")
        fns = y.grad_fn.next_functions
        self.assertEqual(fns[0][0].name(), "AccumulateGrad")
        self.assertIs(fns[0][0].variable, x)
        d = y.detach()
        self.assertFalse(d.requires_grad)
        self.assertTrue(d.is_leaf)
        x.requires_grad = False
        self.assertFalse(x.requires_grad)
        with self.assertRaises(RuntimeError):
            y.requires_grad = False  # non-leaf
        with self.assertRaises(TypeError):
            ember.ones(2, dtype=ember.int64).requires_grad_()
        self.assertFalse((ember.ones(2, requires_grad=True) > 0).requires_grad)

    def test_grad_set_and_errors(self):
        x = ember.ones(2, requires_grad=True)
        self.assertIsNone(x.grad)
        x.grad = ember.tensor([1.0, 2.0])
        self.assertEqual(x.grad.tolist(), [1.0, 2.0])
        with self.assertRaises(RuntimeError):
            x.grad = ember.ones(3)
        with self.assertRaises(TypeError):
            x.grad = [1.0, 2.0]
        x.grad = None
        self.assertIsNone(x.grad)

    def test_retain_grad_and_detach_(self):
        x = ember.tensor([1.0, 2.0], requires_grad=True)
        h = x * 3
        h.retain_grad()
        self.assertTrue(h.retains_grad)
        (h * h).sum().backward()
        self.assertClose(h.grad, [6.0, 12.0])
        self.assertClose(x.grad, [18.0, 36.0])
        z = x * 2
        z.detach_()
        self.assertFalse(z.requires_grad)
        self.assertIsNone(z.grad_fn)

    def test_version_counter_detects_inplace(self):
        x = ember.ones(2, requires_grad=True)
        y = x.exp()
        v = y._version
        y.add_(1)
        self.assertEqual(y._version, v + 1)
        with self.assertRaisesRegex(RuntimeError, "modified by an inplace operation"):
            y.sum().backward()


class TestHooks(AGCase):
    def test_hook_modifies_and_removes(self):
        x = ember.ones(3, requires_grad=True)
        seen = []
        h = x.register_hook(lambda g: seen.append(g.tolist()) or g * 10)
        (x * 2).sum().backward()
        self.assertEqual(seen, [[2.0, 2.0, 2.0]])
        self.assertClose(x.grad, [20.0] * 3)
        h.remove()
        x.grad = None
        (x * 2).sum().backward()
        self.assertClose(x.grad, [2.0] * 3)

    def test_hook_on_intermediate(self):
        x = ember.ones(2, requires_grad=True)
        y = x * 3
        y.register_hook(lambda g: g + 1)
        (y * 2).sum().backward()
        self.assertClose(x.grad, [9.0, 9.0])

    def test_hook_exceptions_propagate(self):
        x = ember.ones(2, requires_grad=True)

        def bad(g):
            raise KeyError("from the hook")

        x.register_hook(bad)
        with self.assertRaises(KeyError) as cm:
            (x * 2).sum().backward()
        self.assertIn("from the hook", str(cm.exception))
        y = ember.ones(2, requires_grad=True)
        y.register_hook(lambda g: "not a tensor")
        with self.assertRaisesRegex(TypeError, "hook must return None or a Tensor"):
            (y * 2).sum().backward()
        z = ember.ones(2, requires_grad=True)
        z.register_hook(lambda g: ember.ones(5))
        with self.assertRaisesRegex(RuntimeError, "hook returned a gradient of shape"):
            (z * 2).sum().backward()
        with self.assertRaises(RuntimeError):
            ember.ones(2).register_hook(lambda g: g)
        with self.assertRaises(TypeError):
            z.register_hook(42)

    def test_post_accumulate_hook(self):
        x = ember.ones(2, requires_grad=True)
        seen = []
        x.register_post_accumulate_grad_hook(lambda t: seen.append((t is x, t.grad.tolist())))
        (x * 4).sum().backward()
        self.assertEqual(seen, [(True, [4.0, 4.0])])

    def test_backward_inside_hook_is_refused(self):
        x = ember.ones(2, requires_grad=True)
        other = ember.ones(1, requires_grad=True)

        def hook(g):
            (other * 2).sum().backward()

        x.register_hook(hook)
        with self.assertRaisesRegex(RuntimeError, "not reentrant"):
            (x * 2).sum().backward()


class TestGradMode(AGCase):
    def test_context_managers(self):
        x = ember.ones(2, requires_grad=True)
        with ember.no_grad():
            self.assertFalse(ember.is_grad_enabled())
            self.assertFalse((x * 2).requires_grad)
            with ember.enable_grad():
                self.assertTrue((x * 2).requires_grad)
            self.assertFalse((x * 2).requires_grad)
        self.assertTrue((x * 2).requires_grad)
        with ember.set_grad_enabled(False):
            self.assertFalse((x * 2).requires_grad)
        self.assertTrue(ember.is_grad_enabled())
        ember.set_grad_enabled(False)
        self.assertFalse(ember.is_grad_enabled())
        ember.set_grad_enabled(True)
        with ember.inference_mode():
            self.assertFalse((x * 2).requires_grad)
        try:
            with ember.no_grad():
                raise ValueError
        except ValueError:
            pass
        self.assertTrue(ember.is_grad_enabled())

    def test_decorators(self):
        x = ember.ones(2, requires_grad=True)

        @ember.no_grad()
        def f():
            return (x * 2).requires_grad

        @ember.enable_grad()
        def g():
            return (x * 2).requires_grad

        @ember.set_grad_enabled(False)
        def h():
            return (x * 2).requires_grad

        self.assertTrue(ember.is_grad_enabled())  # decorating changed nothing
        self.assertFalse(f())
        self.assertFalse(h())
        with ember.no_grad():
            self.assertTrue(g())

        @ember.no_grad()
        def gen():
            yield (x * 2).requires_grad
            yield (x * 3).requires_grad

        self.assertEqual(list(gen()), [False, False])
        self.assertEqual(f.__name__, "f")

    def test_grad_mode_is_thread_local(self):
        seen = []
        with ember.no_grad():
            t = threading.Thread(target=lambda: seen.append(ember.is_grad_enabled()))
            t.start()
            t.join()
            self.assertFalse(ember.is_grad_enabled())
        self.assertEqual(seen, [True])


class TestAutogradGrad(AGCase):
    def test_grad(self):
        x = ember.tensor([1.0, 2.0], requires_grad=True)
        y = ember.tensor([3.0, 4.0], requires_grad=True)
        z = (x * y).sum()
        gx, gy = ember.autograd.grad(z, [x, y], retain_graph=True)
        self.assertClose(gx, [3.0, 4.0])
        self.assertClose(gy, [1.0, 2.0])
        self.assertIsNone(x.grad)
        (g,) = ember.autograd.grad(x * y, x, grad_outputs=ember.tensor([1.0, -1.0]))
        self.assertClose(g, [3.0, -4.0])
        unused = ember.ones(1, requires_grad=True)
        with self.assertRaisesRegex(RuntimeError, "allow_unused"):
            ember.autograd.grad((x * 2).sum(), [x, unused])
        r = ember.autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)
        self.assertIsNone(r[1])
        with self.assertRaises(NotImplementedError):
            ember.autograd.grad((x * 2).sum(), x, create_graph=True)


class Cube(Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x ** 3 * scale

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x ** 2 * ctx.scale, None


class TwoOut(Function):
    @staticmethod
    def forward(ctx, a, b):
        idx = a.argmax()
        ctx.mark_non_differentiable(idx)
        return a + b, a * b, idx, "extra"

    @staticmethod
    def backward(ctx, g_sum, g_prod, g_idx):
        return g_sum + g_prod * 2, g_sum + g_prod * 5


class TestFunction(AGCase):
    def test_save_for_backward_and_non_tensor_args(self):
        x = ember.tensor([1.0, 2.0], requires_grad=True)
        y = Cube.apply(x, 2.0)
        self.assertClose(y, [2.0, 16.0])
        self.assertEqual(y.grad_fn.name(), "CubeBackward")
        self.assertEqual(repr(y), "tensor([ 2., 16.], grad_fn=<CubeBackward>)")
        y.sum().backward()
        self.assertClose(x.grad, [6.0, 24.0])

    def test_multiple_outputs_and_non_differentiable(self):
        a = ember.tensor([2.0], requires_grad=True)
        b = ember.tensor([5.0], requires_grad=True)
        s, p, idx, extra = TwoOut.apply(a, b)
        self.assertEqual(extra, "extra")
        self.assertFalse(idx.requires_grad)
        self.assertTrue(s.requires_grad and p.requires_grad)
        (s + p).sum().backward()
        self.assertClose(a.grad, [3.0])
        self.assertClose(b.grad, [6.0])

    def test_needs_input_grad_and_no_grad(self):
        seen = []

        class Probe(Function):
            @staticmethod
            def forward(ctx, a, b, c):
                seen.append(ctx.needs_input_grad)
                seen.append(ember.is_grad_enabled())
                return a * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2, None, None

        r = Probe.apply(ember.ones(1, requires_grad=True), ember.ones(1), 3)
        self.assertEqual(seen, [(True, False, False), False])
        self.assertTrue(r.requires_grad)
        with ember.no_grad():
            r2 = Probe.apply(ember.ones(1, requires_grad=True), ember.ones(1), 3)
        self.assertFalse(r2.requires_grad)

    def test_exceptions_and_bad_gradients(self):
        class BadForward(Function):
            @staticmethod
            def forward(ctx, x):
                raise ZeroDivisionError("forward failed")

        with self.assertRaisesRegex(ZeroDivisionError, "forward failed"):
            BadForward.apply(ember.ones(1, requires_grad=True))

        class BadBackward(Function):
            @staticmethod
            def forward(ctx, x):
                return x * 1

            @staticmethod
            def backward(ctx, g):
                raise LookupError("backward failed")

        with self.assertRaisesRegex(LookupError, "backward failed"):
            BadBackward.apply(ember.ones(1, requires_grad=True)).sum().backward()

        class TooFew(Function):
            @staticmethod
            def forward(ctx, x, y):
                return x + y

            @staticmethod
            def backward(ctx, g):
                return g

        with self.assertRaisesRegex(RuntimeError, "incorrect number of gradients"):
            TooFew.apply(ember.ones(1, requires_grad=True), ember.ones(1)).sum().backward()

        class GradForNonTensor(Function):
            @staticmethod
            def forward(ctx, x, k):
                return x * k

            @staticmethod
            def backward(ctx, g):
                return g, g

        with self.assertRaisesRegex(RuntimeError, "was not a Variable"):
            GradForNonTensor.apply(ember.ones(1, requires_grad=True), 2).sum().backward()
        with self.assertRaises(NotImplementedError):
            Function.apply(ember.ones(1))

    def test_saved_tensor_modified_in_place(self):
        x = ember.ones(2, requires_grad=True)
        a = x * 1
        out = Cube.apply(a, 1.0)
        a.add_(1)
        with self.assertRaisesRegex(RuntimeError, "modified by an inplace operation"):
            out.sum().backward()

    def test_ctx_outlives_graph_safely(self):
        kept = []

        class Keep(Function):
            @staticmethod
            def forward(ctx, x):
                kept.append(ctx)
                ctx.save_for_backward(x)
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2

        y = Keep.apply(ember.ones(1, requires_grad=True))
        del y
        with self.assertRaises(RuntimeError):
            kept[0].saved_tensors


if __name__ == "__main__":
    unittest.main()
