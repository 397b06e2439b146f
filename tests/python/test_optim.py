"""ember.optim: every optimizer's updates against a reference written here
(PyTorch 1.13's single-tensor update rules, in double precision), param_groups
changes picked up by step(), state_dict round trips, errors, and every
scheduler's learning-rate sequence against hand-computed values."""
import math
import unittest
import warnings

import ember
import ember.nn as nn
from ember.optim import lr_scheduler as S

GRADS = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.7], [-1.5, 0.2, 0.0], [0.4, 0.4, 0.4], [2.0, -0.1, 0.3]]
P0 = [1.0, -2.0, 0.5]


def param(values=P0):
    return nn.Parameter(ember.tensor(values, dtype=ember.float64))


# ---- reference updates (lists of floats, one element at a time) ------------------------------

def ref_sgd(p, steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    p = list(p)
    buf = None
    for g in steps:
        d = [-x if maximize else x for x in g]
        if weight_decay:
            d = [di + weight_decay * pi for di, pi in zip(d, p)]
        if momentum:
            if buf is None:
                buf = list(d)
            else:
                buf = [b * momentum + (1 - dampening) * di for b, di in zip(buf, d)]
            d = [di + momentum * b for di, b in zip(d, buf)] if nesterov else list(buf)
        p = [pi - lr * di for pi, di in zip(p, d)]
    return p


def ref_adam(p, steps, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False, maximize=False, changes=None):
    p = list(p)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    vmax = [0.0] * len(p)
    for t, g in enumerate(steps, 1):
        if changes and t in changes:
            lr, b1, b2, eps, weight_decay = changes[t]
        g = [-x if maximize else x for x in g]
        if decoupled:
            p = [pi * (1 - lr * weight_decay) for pi in p]
        elif weight_decay:
            g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if amsgrad:
            vmax = [max(a, b) for a, b in zip(vmax, v)]
            den = [math.sqrt(x) / math.sqrt(bc2) + eps for x in vmax]
        else:
            den = [math.sqrt(x) / math.sqrt(bc2) + eps for x in v]
        p = [pi - lr / bc1 * mi / di for pi, mi, di in zip(p, m, den)]
    return p


def ref_rmsprop(p, steps, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p = list(p)
    sq = [0.0] * len(p)
    ga = [0.0] * len(p)
    buf = [0.0] * len(p)
    for g in steps:
        if weight_decay:
            g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
        sq = [alpha * s + (1 - alpha) * gi * gi for s, gi in zip(sq, g)]
        if centered:
            ga = [alpha * a + (1 - alpha) * gi for a, gi in zip(ga, g)]
            avg = [math.sqrt(s - a * a) + eps for s, a in zip(sq, ga)]
        else:
            avg = [math.sqrt(s) + eps for s in sq]
        if momentum > 0:
            buf = [momentum * b + gi / a for b, gi, a in zip(buf, g, avg)]
            p = [pi - lr * b for pi, b in zip(p, buf)]
        else:
            p = [pi - lr * gi / a for pi, gi, a in zip(p, g, avg)]
    return p


def ref_adagrad(p, steps, lr=1e-2, lr_decay=0.0, weight_decay=0.0, init_acc=0.0, eps=1e-10):
    p = list(p)
    s = [init_acc] * len(p)
    for t, g in enumerate(steps, 1):
        if weight_decay:
            g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
        clr = lr / (1 + (t - 1) * lr_decay)
        s = [si + gi * gi for si, gi in zip(s, g)]
        p = [pi - clr * gi / (math.sqrt(si) + eps) for pi, gi, si in zip(p, g, s)]
    return p


def run(opt_factory, steps=GRADS, on_step=None):
    p = param()
    opt = opt_factory([p])
    for i, g in enumerate(steps, 1):
        if on_step:
            on_step(opt, i)
        p.grad = ember.tensor(g, dtype=ember.float64)
        opt.step()
    return p.tolist(), opt


class Close(unittest.TestCase):
    def close(self, got, want, tol=1e-10):
        self.assertEqual(len(got), len(want))
        for a, b in zip(got, want):
            self.assertLessEqual(abs(a - b), tol * max(1.0, abs(b)), "%s vs %s" % (got, want))


class TestOptimizers(Close):
    def test_sgd(self):
        for kw in [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
                   dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.01),
                   dict(lr=0.1, weight_decay=0.1, maximize=True)]:
            got, _ = run(lambda ps: ember.optim.SGD(ps, **kw))
            self.close(got, ref_sgd(P0, GRADS, **kw))

    def test_adam_adamw(self):
        for kw in [dict(), dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1),
                   dict(lr=0.01, amsgrad=True), dict(lr=0.01, maximize=True)]:
            got, _ = run(lambda ps: ember.optim.Adam(ps, **kw))
            r = dict(kw)
            if "betas" in r:
                r["b1"], r["b2"] = r.pop("betas")
            self.close(got, ref_adam(P0, GRADS, **r))
        got, _ = run(lambda ps: ember.optim.AdamW(ps, lr=0.01))
        self.close(got, ref_adam(P0, GRADS, lr=0.01, weight_decay=1e-2, decoupled=True))
        got, _ = run(lambda ps: ember.optim.AdamW(ps, lr=0.01, weight_decay=0))
        self.close(got, ref_adam(P0, GRADS, lr=0.01, weight_decay=0, decoupled=True))
        # zero betas / eps are values, not "use the default"
        got, _ = run(lambda ps: ember.optim.Adam(ps, lr=0.01, betas=(0.0, 0.5), eps=0.0))
        self.close(got, ref_adam(P0, GRADS, lr=0.01, b1=0.0, b2=0.5, eps=0.0))

    def test_rmsprop_adagrad(self):
        for kw in [dict(), dict(lr=0.05, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1)]:
            got, _ = run(lambda ps: ember.optim.RMSprop(ps, **kw))
            self.close(got, ref_rmsprop(P0, GRADS, **kw))
        got, _ = run(lambda ps: ember.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.1,
                                                     initial_accumulator_value=0.5))
        self.close(got, ref_adagrad(P0, GRADS, lr=0.1, lr_decay=0.01, weight_decay=0.1, init_acc=0.5))

    def test_float32_params(self):
        p = nn.Parameter(ember.tensor(P0))
        opt = ember.optim.SGD([p], lr=0.1, momentum=0.9)
        for g in GRADS:
            p.grad = ember.tensor(g)
            opt.step()
        self.close(p.tolist(), ref_sgd(P0, GRADS, lr=0.1, momentum=0.9), 1e-6)

    def test_group_changes_reach_the_update(self):
        def lr_change(opt, i):
            if i == 3:
                opt.param_groups[0]["lr"] = 0.01
                opt.param_groups[0]["momentum"] = 0.5

        got, _ = run(lambda ps: ember.optim.SGD(ps, lr=0.1, momentum=0.9), on_step=lr_change)
        p = ref_sgd(P0, GRADS[:2], lr=0.1, momentum=0.9)
        # continue by hand with the buffer of the first two steps
        buf = None
        pp = list(P0)
        for t, g in enumerate(GRADS, 1):
            lr, mom = (0.1, 0.9) if t < 3 else (0.01, 0.5)
            buf = list(g) if buf is None else [b * mom + gi for b, gi in zip(buf, g)]
            pp = [pi - lr * b for pi, b in zip(pp, buf)]
        self.close(got, pp)
        self.assertNotEqual(p, pp)

        # the rare ones (betas[1], eps, weight_decay) go through a state round trip
        def adam_change(opt, i):
            if i == 3:
                g = opt.param_groups[0]
                g["betas"] = (0.5, 0.9)
                g["eps"] = 1e-3
                g["weight_decay"] = 0.2
                g["lr"] = 0.02

        got, _ = run(lambda ps: ember.optim.Adam(ps, lr=0.01), on_step=adam_change)
        want = ref_adam(P0, GRADS, lr=0.01, changes={3: (0.02, 0.5, 0.9, 1e-3, 0.2)})
        self.close(got, want)

    def test_zero_grad_and_groups(self):
        a, b = param(), param([0.0, 0.0, 0.0])
        opt = ember.optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1)
        self.assertEqual([g["lr"] for g in opt.param_groups], [0.1, 0.5])
        a.grad = ember.ones(3, dtype=ember.float64)
        b.grad = ember.ones(3, dtype=ember.float64)
        opt.step()
        self.close(a.tolist(), [x - 0.1 for x in P0])
        self.close(b.tolist(), [-0.5] * 3)
        opt.zero_grad(set_to_none=False)
        self.assertEqual(a.grad.tolist(), [0.0] * 3)
        opt.zero_grad()
        self.assertIsNone(a.grad)
        opt.step()  # no gradients: nothing moves
        self.close(b.tolist(), [-0.5] * 3)
        c = param()
        opt.add_param_group({"params": [c], "momentum": 0.9})
        self.assertEqual(opt.param_groups[2]["lr"], 0.1)
        self.assertEqual(opt.param_groups[2]["momentum"], 0.9)
        self.assertIn("Parameter Group 2", repr(opt))
        self.assertTrue(repr(opt).startswith("SGD (\nParameter Group 0\n    dampening: 0\n"))

    def test_errors(self):
        p = param()
        cases = [
            (lambda: ember.optim.SGD([p], lr=-1), ValueError, "Invalid learning rate: -1"),
            (lambda: ember.optim.SGD([p]), ValueError,
             "parameter group didn't specify a value of required optimization parameter lr"),
            (lambda: ember.optim.SGD([p], lr=0.1, nesterov=True), ValueError,
             "Nesterov momentum requires a momentum and zero dampening"),
            (lambda: ember.optim.Adam([p], betas=(1.0, 0.9)), ValueError,
             "Invalid beta parameter at index 0: 1.0"),
            (lambda: ember.optim.Adam([p], eps=-1), ValueError, "Invalid epsilon value: -1"),
            (lambda: ember.optim.RMSprop([p], alpha=-1), ValueError, "Invalid alpha value: -1"),
            (lambda: ember.optim.Adagrad([p], lr_decay=-1), ValueError, "Invalid lr_decay value: -1"),
            (lambda: ember.optim.SGD([], lr=0.1), ValueError, "optimizer got an empty parameter list"),
            (lambda: ember.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1), ValueError,
             "some parameters appear in more than one parameter group"),
            (lambda: ember.optim.SGD([p * 2], lr=0.1), ValueError, "can't optimize a non-leaf Tensor"),
            (lambda: ember.optim.SGD([{"params": {p}}], lr=0.1), TypeError, "ordering of tensors in sets"),
            (lambda: ember.optim.SGD([1.0], lr=0.1), TypeError, "optimizer can only optimize Tensors"),
            (lambda: ember.optim.SGD(p, lr=0.1), TypeError, "should be an iterable"),
            # (PyTorch 1.13 accepts these and fails at the first step)
            (lambda: ember.optim.SGD([ember.zeros(2, dtype=ember.int64)], lr=0.1), TypeError,
             "optimizer can only optimize floating-point Tensors, but parameter 0 is int64"),
        ]
        for fn, exc, text in cases:
            with self.assertRaises(exc) as cm:
                fn()
            self.assertIn(text, str(cm.exception))
        # lr = 0 is allowed (a frozen group)
        _, opt = run(lambda ps: ember.optim.SGD(ps, lr=0.0))
        self.assertEqual(opt.param_groups[0]["lr"], 0.0)
        got, _ = run(lambda ps: ember.optim.SGD(ps, lr=0.0))
        self.close(got, P0)


class TestStateDict(Close):
    def test_layout_and_resume(self):
        for factory in [lambda ps: ember.optim.SGD(ps, lr=0.1, momentum=0.9),
                        lambda ps: ember.optim.Adam(ps, lr=0.01, amsgrad=True),
                        lambda ps: ember.optim.RMSprop(ps, lr=0.01, momentum=0.3, centered=True),
                        lambda ps: ember.optim.Adagrad(ps, lr=0.1)]:
            full, _ = run(factory)
            p = param()
            opt = factory([p])
            for g in GRADS[:2]:
                p.grad = ember.tensor(g, dtype=ember.float64)
                opt.step()
            sd = opt.state_dict()
            self.assertEqual(sd["param_groups"][0]["params"], [0])
            self.assertEqual(list(sd["state"].keys()), [0])
            # a fresh optimizer over a copy of the parameter continues identically
            q = nn.Parameter(p.detach().clone())
            opt2 = factory([q])
            opt2.load_state_dict(sd)
            for g in GRADS[2:]:
                q.grad = ember.tensor(g, dtype=ember.float64)
                opt2.step()
            self.close(q.tolist(), full)
        p = param()
        opt = ember.optim.SGD([p], lr=0.1, momentum=0.9)
        p.grad = ember.tensor(GRADS[0], dtype=ember.float64)
        opt.step()
        sd = opt.state_dict()
        self.assertEqual(sd["state"][0]["momentum_buffer"].tolist(), GRADS[0])
        self.assertEqual(sd["param_groups"][0]["lr"], 0.1)
        st = opt.state[p]
        self.assertEqual(st["momentum_buffer"].tolist(), GRADS[0])
        sd["param_groups"][0]["lr"] = 0.5
        opt.load_state_dict(sd)
        self.assertEqual(opt.param_groups[0]["lr"], 0.5)
        with self.assertRaises(ValueError):
            opt.load_state_dict({"state": {}, "param_groups": []})
        with self.assertRaises(ValueError):
            opt.load_state_dict({"state": {}, "param_groups": [dict(sd["param_groups"][0], params=[0, 1])]})


class TestSchedulers(Close):
    def lrs(self, make, n, base=1.0, opt_factory=None):
        p = param()
        opt = (opt_factory or (lambda ps: ember.optim.SGD(ps, lr=base, momentum=0.9)))([p])
        sched = make(opt)
        out = [opt.param_groups[0]["lr"]]
        for _ in range(n - 1):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        self.assertEqual(sched.get_last_lr(), [out[-1]])
        return out, opt

    def test_simple_schedules(self):
        out, _ = self.lrs(lambda o: S.StepLR(o, step_size=2, gamma=0.1), 6)
        self.close(out, [1, 1, 0.1, 0.1, 0.01, 0.01], 1e-12)
        out, _ = self.lrs(lambda o: S.MultiStepLR(o, milestones=[2, 4], gamma=0.5), 6)
        self.close(out, [1, 1, 0.5, 0.5, 0.25, 0.25], 1e-12)
        out, _ = self.lrs(lambda o: S.ExponentialLR(o, gamma=0.9), 5)
        self.close(out, [0.9 ** e for e in range(5)], 1e-12)
        out, _ = self.lrs(lambda o: S.CosineAnnealingLR(o, T_max=4, eta_min=0.1), 9)
        self.close(out, [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(9)], 1e-12)
        out, _ = self.lrs(lambda o: S.LinearLR(o, start_factor=0.5, total_iters=4), 7)
        self.close(out, [0.5 + 0.5 * min(4, e) / 4 for e in range(7)], 1e-12)
        out, _ = self.lrs(lambda o: S.LambdaLR(o, lambda e: 1.0 / (e + 1)), 4)
        self.close(out, [1, 0.5, 1 / 3, 0.25], 1e-12)
        out, _ = self.lrs(lambda o: S.ConstantLR(o, factor=0.25, total_iters=2), 4)
        self.close(out, [0.25, 0.25, 1, 1], 1e-12)

    def test_sequential(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SequentialLR calls step(0), deprecated in PyTorch too
            out, _ = self.lrs(lambda o: S.SequentialLR(
                o, [S.ConstantLR(o, factor=0.1, total_iters=2), S.ExponentialLR(o, gamma=0.9)],
                milestones=[2]), 5)
        # PyTorch 1.13's actual sequence: at the milestone ExponentialLR restarts
        # from its closed form (base lr * 0.9 ** 0)
        self.close(out, [0.1, 0.1, 1.0, 0.9, 0.81], 1e-12)

    def test_one_cycle(self):
        total, max_lr = 10, 1.0
        out, opt = self.lrs(lambda o: S.OneCycleLR(o, max_lr=max_lr, total_steps=total), total)
        init_lr, min_lr = max_lr / 25, max_lr / 25 / 1e4
        end1 = 0.3 * total - 1

        def cos_anneal(a, b, pct):
            return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)

        want, mom = [], []
        for s in range(total):
            if s <= end1:
                pct = s / end1
                want.append(cos_anneal(init_lr, max_lr, pct))
                mom.append(cos_anneal(0.95, 0.85, pct))
            else:
                pct = (s - end1) / (total - 1 - end1)
                want.append(cos_anneal(max_lr, min_lr, pct))
                mom.append(cos_anneal(0.85, 0.95, pct))
        self.close(out, want, 1e-12)
        self.close([opt.param_groups[0]["momentum"]], [mom[-1]], 1e-12)
        # Adam cycles beta1
        out, opt = self.lrs(lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=5, anneal_strategy="linear"),
                            3, opt_factory=lambda ps: ember.optim.Adam(ps))
        self.assertEqual(len(opt.param_groups[0]["betas"]), 2)
        self.assertLess(opt.param_groups[0]["betas"][0], 0.95)
        with self.assertRaises(ValueError):
            S.OneCycleLR(ember.optim.SGD([param()], lr=0.1), max_lr=1.0)

    def test_scheduled_lr_is_used_and_state(self):
        p = param()
        opt = ember.optim.SGD([p], lr=1.0)
        sched = S.StepLR(opt, step_size=1, gamma=0.5)
        before = p.tolist()
        p.grad = ember.ones(3, dtype=ember.float64)
        opt.step()
        sched.step()
        opt.step()
        self.close(p.tolist(), [x - 1.0 - 0.5 for x in before])
        sd = sched.state_dict()
        self.assertNotIn("optimizer", sd)
        self.assertEqual(sd["last_epoch"], 1)
        s2 = S.StepLR(opt, step_size=1, gamma=0.5, last_epoch=sd["last_epoch"])
        s2.load_state_dict(sd)
        self.assertEqual(s2.last_epoch, 1)
        with self.assertRaises(TypeError):
            S.StepLR(object(), 1)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            o = ember.optim.SGD([param()], lr=1.0)
            s = S.StepLR(o, 1)
            s.step()
            self.assertTrue(any("before `optimizer.step()`" in str(x.message) for x in w))


if __name__ == "__main__":
    unittest.main()
