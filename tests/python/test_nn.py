"""ember.nn: Module registration, traversal, state dicts, repr, hooks,
conversions; every layer and loss against naive references computed here in
double precision; functional forms, init, gradient clipping; reference counts.
"""
import gc
import math
import random
import sys
import unittest
import warnings
from collections import OrderedDict

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.nn import init


def flat(x):
    if isinstance(x, ember.Tensor):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        out = []
        for v in x:
            out.extend(flat(v))
        return out
    return [x]


class Case(unittest.TestCase):
    def close(self, got, want, tol=1e-5):
        g, w = flat(got), flat(want)
        self.assertEqual(len(g), len(w), "sizes differ: %d vs %d" % (len(g), len(w)))
        worst = max([abs(a - b) / max(1.0, abs(b)) for a, b in zip(g, w)] or [0.0])
        self.assertLessEqual(worst, tol, "max rel diff %g\n got %s\nwant %s" % (worst, g[:8], w[:8]))


def rnd(*shape, seed=0):
    r = random.Random(seed)
    n = 1
    for s in shape:
        n *= s
    vals = [r.uniform(-1, 1) for _ in range(n)]
    return ember.tensor(vals, dtype=ember.float64).reshape(*shape), vals


def nested(vals, shape):
    if len(shape) == 1:
        return list(vals)
    step = len(vals) // shape[0]
    return [nested(vals[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


# ---- modules -------------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(ember.zeros(2))
        self.register_buffer("stat", ember.ones(3))
        self.fc = nn.Linear(2, 3)
        self.register_buffer("tmp", ember.zeros(1), persistent=False)
        self.b = nn.Parameter(ember.ones(1))
        self.seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1, bias=False))

    def forward(self, x):
        return self.seq(self.fc(x))


class TestModule(Case):
    def test_registration_order_and_names(self):
        m = Net()
        self.assertEqual([n for n, _ in m.named_parameters()],
                         ["a", "b", "fc.weight", "fc.bias", "seq.0.weight", "seq.0.bias",
                          "seq.2.weight"])
        self.assertEqual([n for n, _ in m.named_buffers()], ["stat", "tmp"])
        # PyTorch's order: a module's parameters, then its persistent buffers
        self.assertEqual(list(m.state_dict().keys()),
                         ["a", "b", "stat", "fc.weight", "fc.bias", "seq.0.weight", "seq.0.bias",
                          "seq.2.weight"])
        self.assertEqual([n for n, _ in m.named_children()], ["fc", "seq"])
        self.assertEqual([n for n, _ in m.named_modules()], ["", "fc", "seq", "seq.0", "seq.1", "seq.2"])
        self.assertEqual(len(list(m.parameters())), 7)
        self.assertEqual(len(list(m.parameters(recurse=False))), 2)
        self.assertIs(m.fc, m._modules["fc"])
        self.assertIs(m.a, m._parameters["a"])
        self.assertTrue(isinstance(m.a, nn.Parameter) and isinstance(m.a, ember.Tensor))
        self.assertTrue(m.a.requires_grad)
        self.assertIs(m.get_submodule("seq.2"), m.seq[2])
        self.assertIs(m.get_parameter("seq.0.bias"), m.seq[0].bias)

    def test_shared_members_once(self):
        lin = nn.Linear(2, 2)
        seq = nn.Sequential(lin, lin)
        self.assertEqual([n for n, _ in seq.named_modules()], ["", "0"])
        self.assertEqual([n for n, _ in seq.named_parameters()], ["0.weight", "0.bias"])
        self.assertEqual(list(seq.state_dict().keys()), ["0.weight", "0.bias", "1.weight", "1.bias"])

    def test_assignment_rules(self):
        m = nn.Module()
        m.p = nn.Parameter(ember.zeros(1))
        with self.assertRaises(TypeError) as cm:
            m.p = ember.zeros(1)
        self.assertIn("cannot assign 'Tensor' as parameter 'p'", str(cm.exception))
        m.p = None
        self.assertIn("p", m._parameters)
        self.assertEqual(list(m.parameters()), [])
        m.register_buffer("buf", ember.zeros(2))
        with self.assertRaises(TypeError):
            m.buf = 3
        m.buf = ember.ones(2)
        self.assertEqual(m.buf.tolist(), [1.0, 1.0])
        with self.assertRaises(KeyError):
            m.register_buffer("a.b", ember.zeros(1))
        with self.assertRaises(KeyError):
            m.register_parameter("", None)
        with self.assertRaises(TypeError):
            m.register_parameter("q", ember.zeros(1))
        with self.assertRaises(KeyError):
            m.register_buffer("p", ember.zeros(1))
        with self.assertRaises(TypeError):
            m.add_module("x", 3)
        # a registered parameter only takes a Parameter or None ...
        with self.assertRaises(TypeError):
            m.p = nn.Linear(1, 1)
        # ... a new name may become a module, a module a parameter
        m.q = nn.Linear(1, 1)
        m.q = nn.Parameter(ember.zeros(1))
        self.assertNotIn("q", m._modules)
        self.assertIn("q", m._parameters)
        del m.p
        m.p = nn.Linear(1, 1)
        self.assertNotIn("p", m._parameters)
        self.assertIn("p", m._modules)
        del m.p
        self.assertNotIn("p", m._modules)
        with self.assertRaises(AttributeError):
            m.p
        with self.assertRaises(AttributeError):
            m.nothing

        class Early(nn.Module):
            def __init__(self):
                self.w = nn.Parameter(ember.zeros(1))

        with self.assertRaises(AttributeError):
            Early()

    def test_train_eval_apply_zero_grad(self):
        m = Net()
        m.eval()
        self.assertFalse(any(mod.training for mod in m.modules()))
        m.train()
        self.assertTrue(all(mod.training for mod in m.modules()))
        seen = []
        m.apply(lambda mod: seen.append(type(mod).__name__))
        self.assertEqual(seen, ["Linear", "Linear", "ReLU", "Linear", "Sequential", "Net"])
        out = m(ember.ones(5, 2)).sum()
        out.backward()
        self.assertIsNotNone(m.fc.weight.grad)
        m.zero_grad(set_to_none=False)
        self.assertEqual(flat(m.fc.weight.grad), [0.0] * 6)
        m.zero_grad()
        self.assertIsNone(m.fc.weight.grad)

    def test_to_dtype_keeps_parameter_identity(self):
        m = Net()
        w = m.fc.weight
        m.double()
        self.assertIs(m.fc.weight, w)
        self.assertEqual(w.dtype, ember.float64)
        self.assertEqual(m.stat.dtype, ember.float64)
        m.to(ember.float32)
        self.assertEqual(w.dtype, ember.float32)
        m.to("cpu")
        with self.assertRaises(TypeError):
            m.to(ember.int64)

    def test_state_dict_roundtrip_and_errors(self):
        a, b = Net(), Net()
        sd = a.state_dict()
        self.assertFalse(sd["fc.weight"].requires_grad)
        b.load_state_dict(sd)
        for (n1, t1), (n2, t2) in zip(a.state_dict().items(), b.state_dict().items()):
            self.assertEqual(n1, n2)
            self.assertEqual(t1.tolist(), t2.tolist())
        # state_dict shares storage with the module
        sd["a"].fill_(7)
        self.assertEqual(a.a.tolist(), [7.0, 7.0])
        bad = OrderedDict(sd)
        del bad["fc.bias"]
        bad["extra"] = ember.zeros(1)
        bad["fc.weight"] = ember.zeros(4, 4)
        with self.assertRaises(RuntimeError) as cm:
            b.load_state_dict(bad)
        self.assertEqual(
            str(cm.exception),
            'Error(s) in loading state_dict for Net:\n'
            '\tMissing key(s) in state_dict: "fc.bias". \n'
            '\tUnexpected key(s) in state_dict: "extra". \n'
            '\tsize mismatch for fc.weight: copying a param with shape ember.Size([4, 4]) from '
            'checkpoint, the shape in current model is ember.Size([3, 2]).')
        del bad["fc.weight"]
        r = b.load_state_dict(bad, strict=False)
        self.assertEqual(r.missing_keys, [])
        self.assertEqual(r.unexpected_keys, [])
        r = b.load_state_dict(a.state_dict())
        self.assertEqual(repr(r), "<All keys matched successfully>")

    def test_repr(self):
        net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(),
            nn.Sequential(nn.Linear(10, 2), nn.LogSoftmax(dim=1)))
        self.assertEqual(repr(net), """Sequential(
  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (2): ReLU(inplace=True)
  (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (4): Flatten(start_dim=1, end_dim=-1)
  (5): Dropout(p=0.5, inplace=False)
  (6): Sequential(
    (0): Linear(in_features=10, out_features=2, bias=True)
    (1): LogSoftmax(dim=1)
  )
)""")
        cases = [
            (nn.Conv2d(1, 8, (3, 5), stride=2, bias=False, dilation=2),
             "Conv2d(1, 8, kernel_size=(3, 5), stride=(2, 2), dilation=(2, 2), bias=False)"),
            (nn.Conv1d(2, 4, 3), "Conv1d(2, 4, kernel_size=(3,), stride=(1,))"),
            (nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1, groups=2),
             "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1), groups=2)"),
            (nn.LayerNorm(10), "LayerNorm((10,), eps=1e-05, elementwise_affine=True)"),
            (nn.GroupNorm(2, 4), "GroupNorm(2, 4, eps=1e-05, affine=True)"),
            (nn.BatchNorm1d(3, affine=False), "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=True)"),
            (nn.GELU(), "GELU(approximate='none')"), (nn.SiLU(), "SiLU()"), (nn.Tanh(), "Tanh()"),
            (nn.Sigmoid(), "Sigmoid()"), (nn.Softmax(dim=1), "Softmax(dim=1)"),
            (nn.LeakyReLU(), "LeakyReLU(negative_slope=0.01)"), (nn.ReLU(), "ReLU()"),
            (nn.AvgPool2d(2), "AvgPool2d(kernel_size=2, stride=2, padding=0)"),
            (nn.AdaptiveAvgPool2d((1, 1)), "AdaptiveAvgPool2d(output_size=(1, 1))"),
            (nn.Embedding(10, 3, padding_idx=0), "Embedding(10, 3, padding_idx=0)"),
            (nn.Bilinear(2, 3, 4), "Bilinear(in1_features=2, in2_features=3, out_features=4, bias=True)"),
            (nn.Identity(), "Identity()"), (nn.CrossEntropyLoss(), "CrossEntropyLoss()"),
            (nn.MSELoss(), "MSELoss()"), (nn.KLDivLoss(), "KLDivLoss()"),
            (nn.ModuleDict({"a": nn.ReLU()}), "ModuleDict(\n  (a): ReLU()\n)"),
            (nn.ModuleList(), "ModuleList()"),
        ]
        for m, want in cases:
            self.assertEqual(repr(m), want)
        p = nn.Parameter(ember.zeros(2))
        self.assertEqual(repr(p), "Parameter containing:\ntensor([0., 0.], requires_grad=True)")
        self.assertEqual(str(p), repr(p))

    def test_hooks_and_forward_override(self):
        lin = nn.Linear(2, 2)
        calls = []
        h1 = lin.register_forward_pre_hook(lambda mod, inp: (inp[0] * 0,))
        h2 = lin.register_forward_hook(lambda mod, inp, out: calls.append(out.shape) or out + 1)
        y = lin(ember.ones(1, 2))
        self.close(y, [b + 1 for b in lin.bias.tolist()])
        self.assertEqual(calls, [ember.Size([1, 2])])
        h1.remove()
        h2.remove()
        self.close(lin(ember.zeros(1, 2)), lin.bias.tolist())
        other = nn.Linear(2, 2)  # same class: still correct after the class went general
        self.close(other(ember.zeros(1, 2)), other.bias.tolist())
        g = nn.modules.module.register_module_forward_hook(lambda mod, inp, out: out * 0)
        try:
            self.assertEqual(flat(nn.ReLU()(ember.ones(2))), [0.0, 0.0])
        finally:
            g.remove()
        self.assertEqual(flat(nn.ReLU()(ember.ones(2))), [1.0, 1.0])

        class Twice(nn.Module):
            def forward(self, x):
                return x * 2

        t = Twice()
        t.forward = lambda x: x * 3
        self.assertEqual(flat(t(ember.ones(1))), [3.0])
        self.assertEqual(flat(Twice()(ember.ones(1))), [2.0])

        class Wrapped(Twice):
            def __call__(self, x):
                return super().__call__(x) + 1

            def forward(self, x):
                return x * 10

        self.assertEqual(flat(Wrapped()(ember.ones(1))), [11.0])
        self.assertEqual(flat(Twice()(ember.ones(1))), [2.0])

    def test_containers(self):
        s = nn.Sequential(nn.ReLU(), nn.Tanh(), nn.Sigmoid())
        self.assertIsInstance(s[1], nn.Tanh)
        self.assertIsInstance(s[-1], nn.Sigmoid)
        self.assertEqual(len(s[1:]), 2)
        self.assertIsInstance(s[1:], nn.Sequential)
        del s[0]
        self.assertEqual(list(s._modules.keys()), ["0", "1"])
        self.assertIsInstance(s[0], nn.Tanh)
        s.append(nn.ReLU())
        s.insert(0, nn.Identity())
        self.assertEqual([type(m).__name__ for m in s], ["Identity", "Tanh", "Sigmoid", "ReLU"])
        with self.assertRaises(IndexError):
            s[10]
        s2 = nn.Sequential(OrderedDict([("first", nn.ReLU()), ("second", nn.Tanh())]))
        self.assertIs(s2.first, s2[0])
        ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
        self.assertEqual(len(list(ml.parameters())), 6)
        ml.append(nn.ReLU())
        ml.extend([nn.Tanh()])
        del ml[0]
        self.assertEqual([type(m).__name__ for m in ml], ["Linear", "Linear", "ReLU", "Tanh"])
        self.assertEqual(list(ml._modules.keys()), ["0", "1", "2", "3"])
        md = nn.ModuleDict({"a": nn.Linear(1, 2), "b": nn.ReLU()})
        self.assertEqual(list(md.keys()), ["a", "b"])
        self.assertIn("a", md)
        md["c"] = nn.Tanh()
        self.assertEqual([n for n, _ in md.named_parameters()], ["a.weight", "a.bias"])
        pl = nn.ParameterList([nn.Parameter(ember.zeros(2, 3))])
        self.assertEqual([n for n, _ in pl.named_parameters()], ["0"])


# ---- layers against naive references ---------------------------------------------------------

def conv2d_ref(x, xs, w, ws, b, stride, pad, dil, groups):
    n, cin, h, wd = xs
    cout, cpg, kh, kw = ws
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    opg = cout // groups
    out = []
    for ni in range(n):
        for co in range(cout):
            g = co // opg
            for i in range(oh):
                for j in range(ow):
                    s = b[co] if b is not None else 0.0
                    for ci in range(cpg):
                        for p in range(kh):
                            for q in range(kw):
                                y = i * stride[0] - pad[0] + p * dil[0]
                                z = j * stride[1] - pad[1] + q * dil[1]
                                if 0 <= y < h and 0 <= z < wd:
                                    s += (x[((ni * cin + g * cpg + ci) * h + y) * wd + z] *
                                          w[((co * cpg + ci) * kh + p) * kw + q])
                    out.append(s)
    return out, (n, cout, oh, ow)


class TestLayers(Case):
    def test_linear_init_and_forward(self):
        ember.manual_seed(0)
        lin = nn.Linear(16, 4)
        bound = 1 / math.sqrt(16)
        self.assertTrue(all(abs(v) <= bound for v in flat(lin.weight)))
        self.assertTrue(all(abs(v) <= bound for v in flat(lin.bias)))
        self.assertGreater(max(abs(v) for v in flat(lin.weight)), bound * 0.5)
        lin = nn.Linear(3, 2).double()
        x, xv = rnd(4, 3, seed=1)
        w, b = flat(lin.weight), flat(lin.bias)
        want = [sum(xv[i * 3 + k] * w[o * 3 + k] for k in range(3)) + b[o] for i in range(4) for o in range(2)]
        self.close(lin(x), want, 1e-12)
        # non-contiguous input, 3-D input, no bias
        xt = ember.tensor([[xv[i * 3 + k] for i in range(4)] for k in range(3)], dtype=ember.float64).t()
        self.close(lin(xt), want, 1e-12)
        self.assertEqual(lin(ember.zeros(2, 5, 3, dtype=ember.float64)).shape, ember.Size([2, 5, 2]))
        nb = nn.Linear(3, 2, bias=False)
        self.assertIsNone(nb.bias)
        self.assertEqual([n for n, _ in nb.named_parameters()], ["weight"])
        with self.assertRaises(RuntimeError):
            lin(ember.zeros(2, 4, dtype=ember.float64))
        with self.assertRaises(TypeError):
            lin([1, 2, 3])
        # gradient of a linear layer: dW = g^T x
        x, xv = rnd(2, 3, seed=2)
        lin.zero_grad()
        lin(x).sum().backward()
        self.close(lin.weight.grad, [xv[0 * 3 + k] + xv[1 * 3 + k] for o in range(2) for k in range(3)])
        self.close(lin.bias.grad, [2.0, 2.0])

    def test_bilinear(self):
        m = nn.Bilinear(2, 3, 2).double()
        x1, a = rnd(2, 2, seed=3)
        x2, c = rnd(2, 3, seed=4)
        w, b = flat(m.weight), flat(m.bias)
        want = [sum(a[n * 2 + i] * w[(k * 2 + i) * 3 + j] * c[n * 3 + j] for i in range(2) for j in range(3)) + b[k]
                for n in range(2) for k in range(2)]
        self.close(m(x1, x2), want, 1e-12)

    def test_conv2d(self):
        for stride, pad, dil, groups in [((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 2), 2)]:
            m = nn.Conv2d(4, 6, (3, 2), stride=stride, padding=pad, dilation=dil, groups=groups).double()
            x, xv = rnd(2, 4, 5, 6, seed=5)
            want, shape = conv2d_ref(xv, (2, 4, 5, 6), flat(m.weight), tuple(m.weight.shape),
                                     flat(m.bias), stride, pad, dil, groups)
            y = m(x)
            self.assertEqual(tuple(y.shape), shape)
            self.close(y, want, 1e-10)
        # padding='same' with an even kernel (asymmetric)
        m = nn.Conv2d(1, 1, 2, padding="same", bias=False).double()
        x, xv = rnd(1, 1, 3, 3, seed=6)
        w = flat(m.weight)
        want = []
        for i in range(3):
            for j in range(3):
                s = 0.0
                for p in range(2):
                    for q in range(2):
                        y_, z_ = i + p, j + q
                        if y_ < 3 and z_ < 3:
                            s += xv[y_ * 3 + z_] * w[p * 2 + q]
                want.append(s)
        self.close(m(x), want, 1e-12)
        self.assertEqual(repr(m), "Conv2d(1, 1, kernel_size=(2, 2), stride=(1, 1), padding=same, bias=False)")
        with self.assertRaises(ValueError):
            nn.Conv2d(3, 4, 3, groups=2)
        with self.assertRaises(ValueError):
            nn.Conv2d(1, 1, 3, stride=2, padding="same")
        with self.assertRaises(RuntimeError):
            m(ember.zeros(1, 2, 3, 3, dtype=ember.float64))

    def test_conv1d_and_transpose(self):
        m = nn.Conv1d(2, 3, 3, padding=1).double()
        x, xv = rnd(1, 2, 5, seed=7)
        w = flat(m.weight)
        want, _ = conv2d_ref(xv, (1, 2, 1, 5), w, (3, 2, 1, 3), flat(m.bias), (1, 1), (0, 1), (1, 1), 1)
        self.close(m(x), want, 1e-12)
        t = nn.ConvTranspose2d(2, 1, 2, stride=2, bias=True).double()
        x, xv = rnd(1, 2, 2, 2, seed=8)
        w, b = flat(t.weight), flat(t.bias)  # [cin=2, cout=1, 2, 2]
        out = [[b[0]] * 4 for _ in range(4)]
        for ci in range(2):
            for i in range(2):
                for j in range(2):
                    for p in range(2):
                        for q in range(2):
                            out[i * 2 + p][j * 2 + q] += xv[(ci * 2 + i) * 2 + j] * w[(ci * 2 + p) * 2 + q]
        self.close(t(x), out, 1e-12)

    def test_pooling(self):
        x, xv = rnd(1, 1, 4, 5, seed=9)
        y = nn.MaxPool2d(2)(x)
        want = [max(xv[(2 * i + p) * 5 + 2 * j + q] for p in range(2) for q in range(2)) for i in range(2) for j in range(2)]
        self.close(y, want, 0)
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        self.assertEqual(idx.dtype, ember.int64)
        self.assertEqual([xv[i] for i in flat(idx)], want)
        a = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)(x)
        self.assertEqual(tuple(a.shape), (1, 1, 5, 6))
        self.close(a[0, 0, 0, 0], [xv[0]])
        s = nn.AdaptiveAvgPool2d((1, 1))(x)
        self.close(s, [sum(xv) / 20], 1e-12)
        s = nn.AdaptiveAvgPool2d((2, None))(x)
        self.assertEqual(tuple(s.shape), (1, 1, 2, 5))
        self.close(s[0, 0, 0], [(xv[j] + xv[5 + j]) / 2 for j in range(5)], 1e-12)

    def test_batch_norm(self):
        bn = nn.BatchNorm1d(2).double()
        x, xv = rnd(4, 2, seed=10)
        y = bn(x)
        for c in range(2):
            col = [xv[i * 2 + c] for i in range(4)]
            mean = sum(col) / 4
            var = sum((v - mean) ** 2 for v in col) / 4
            uvar = var * 4 / 3
            self.close([y[i, c] for i in range(4)], [(v - mean) / math.sqrt(var + 1e-5) for v in col], 1e-9)
            self.close(bn.running_mean[c], [0.1 * mean], 1e-12)
            self.close(bn.running_var[c], [0.9 + 0.1 * uvar], 1e-12)
        self.assertEqual(int(bn.num_batches_tracked), 1)
        bn.eval()
        y = bn(x)
        rm, rv = flat(bn.running_mean), flat(bn.running_var)
        self.close(y, [(xv[i * 2 + c] - rm[c]) / math.sqrt(rv[c] + 1e-5) for i in range(4) for c in range(2)], 1e-9)
        self.assertEqual(int(bn.num_batches_tracked), 1)
        with self.assertRaises(ValueError):
            bn(ember.zeros(2, 2, 2, 2))
        bn2 = nn.BatchNorm2d(3, momentum=None)
        bn2(ember.randn(2, 3, 4, 4))
        self.assertEqual(list(bn2.state_dict().keys()),
                         ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"])
        nt = nn.BatchNorm2d(3, track_running_stats=False)
        self.assertEqual(list(nt.state_dict().keys()), ["weight", "bias"])
        nt.eval()
        self.assertEqual(tuple(nt(ember.randn(2, 3, 2, 2)).shape), (2, 3, 2, 2))

    def test_layer_and_group_norm(self):
        ln = nn.LayerNorm(3).double()
        with ember.no_grad():
            ln.weight.copy_(ember.tensor([1.0, 2.0, 3.0]))
            ln.bias.copy_(ember.tensor([0.5, 0.0, -0.5]))
        x, xv = rnd(2, 3, seed=11)
        want = []
        for i in range(2):
            row = xv[i * 3:(i + 1) * 3]
            m = sum(row) / 3
            v = sum((r - m) ** 2 for r in row) / 3
            want += [(r - m) / math.sqrt(v + 1e-5) * w + b for r, w, b in zip(row, [1, 2, 3], [0.5, 0, -0.5])]
        self.close(ln(x), want, 1e-9)
        gn = nn.GroupNorm(2, 4).double()
        x, xv = rnd(1, 4, 2, seed=12)
        want = []
        for g in range(2):
            vals = xv[g * 4:(g + 1) * 4]
            m = sum(vals) / 4
            v = sum((r - m) ** 2 for r in vals) / 4
            want += [(r - m) / math.sqrt(v + 1e-5) for r in vals]
        self.close(gn(x), want, 1e-9)
        with self.assertRaises(ValueError):
            nn.GroupNorm(3, 4)

    def test_embedding(self):
        ember.manual_seed(1)
        e = nn.Embedding(5, 3, padding_idx=-1)
        self.assertEqual(e.padding_idx, 4)
        self.assertEqual(flat(e.weight[4]), [0.0, 0.0, 0.0])
        idx = ember.tensor([[0, 4], [2, 0]])
        y = e(idx)
        self.assertEqual(tuple(y.shape), (2, 2, 3))
        self.assertEqual(flat(y[1, 0]), flat(e.weight[2]))
        y.sum().backward()
        self.assertEqual(flat(e.weight.grad[0]), [2.0] * 3)
        self.assertEqual(flat(e.weight.grad[4]), [0.0] * 3)
        self.assertEqual(flat(e.weight.grad[1]), [0.0] * 3)
        with self.assertRaises(IndexError):
            e(ember.tensor([5]))
        with self.assertRaises(AssertionError):
            nn.Embedding(3, 2, padding_idx=3)

    def test_dropout(self):
        x = ember.ones(1000)
        d = nn.Dropout(0.25)
        y = flat(d(x))
        zeros = sum(1 for v in y if v == 0)
        self.assertTrue(150 < zeros < 350, zeros)
        self.assertTrue(all(v == 0 or abs(v - 1 / 0.75) < 1e-6 for v in y))
        d.eval()
        self.assertEqual(flat(d(x)), [1.0] * 1000)
        self.assertEqual(flat(nn.Dropout(0.0)(x)), [1.0] * 1000)
        self.assertEqual(flat(nn.Dropout(1.0)(x)), [0.0] * 1000)
        with self.assertRaises(ValueError):
            nn.Dropout(1.5)

    def test_activations(self):
        xs = [-2.0, -0.5, 0.0, 0.5, 3.0]
        x = ember.tensor(xs, dtype=ember.float64)
        sig = [1 / (1 + math.exp(-v)) for v in xs]
        refs = [
            (nn.ReLU(), [max(v, 0.0) for v in xs]),
            (nn.LeakyReLU(0.1), [v if v > 0 else 0.1 * v for v in xs]),
            (nn.GELU(), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in xs]),
            (nn.GELU("tanh"), [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))) for v in xs]),
            (nn.SiLU(), [v * s for v, s in zip(xs, sig)]),
            (nn.Tanh(), [math.tanh(v) for v in xs]),
            (nn.Sigmoid(), sig),
            (nn.ELU(), [v if v > 0 else math.exp(v) - 1 for v in xs]),
            (nn.Softplus(), [math.log1p(math.exp(v)) for v in xs]),
            (nn.Hardtanh(), [min(max(v, -1.0), 1.0) for v in xs]),
            (nn.ReLU6(), [min(max(v, 0.0), 6.0) for v in xs]),
            (nn.Identity(), xs),
        ]
        for m, want in refs:
            self.close(m(x), want, 1e-9)
        y = x.clone()
        nn.ReLU(inplace=True)(y)
        self.assertEqual(flat(y), [max(v, 0.0) for v in xs])
        m2 = ember.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=ember.float64)
        e = [math.exp(v) for v in (1.0, 2.0, 3.0)]
        self.close(nn.Softmax(dim=1)(m2), [v / sum(e) for v in e] + [1 / 3] * 3, 1e-12)
        self.close(nn.LogSoftmax(dim=1)(m2), [math.log(v / sum(e)) for v in e] + [math.log(1 / 3)] * 3, 1e-12)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.close(F.softmax(m2), [v / sum(e) for v in e] + [1 / 3] * 3, 1e-12)
            self.assertTrue(any("Implicit dimension" in str(x.message) for x in w))
        f = nn.Flatten()
        self.assertEqual(tuple(f(ember.zeros(2, 3, 4)).shape), (2, 12))
        self.assertEqual(tuple(nn.Unflatten(1, (3, 4))(ember.zeros(2, 12)).shape), (2, 3, 4))


class TestLosses(Case):
    def setUp(self):
        self.logits, self.lv = rnd(3, 4, seed=20)
        self.target = ember.tensor([1, 0, 3])
        self.tv = [1, 0, 3]

    def logsm(self, row):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        return [v - lse for v in row]

    def test_cross_entropy_and_nll(self):
        rows = [self.lv[i * 4:(i + 1) * 4] for i in range(3)]
        ls = [self.logsm(r) for r in rows]
        per = [-ls[i][self.tv[i]] for i in range(3)]
        self.close(nn.CrossEntropyLoss()(self.logits, self.target), [sum(per) / 3], 1e-12)
        self.close(nn.CrossEntropyLoss(reduction="sum")(self.logits, self.target), [sum(per)], 1e-12)
        self.close(nn.CrossEntropyLoss(reduction="none")(self.logits, self.target), per, 1e-12)
        w = [1.0, 2.0, 0.5, 3.0]
        wl = nn.CrossEntropyLoss(weight=ember.tensor(w, dtype=ember.float64))(self.logits, self.target)
        self.close(wl, [sum(per[i] * w[self.tv[i]] for i in range(3)) / sum(w[t] for t in self.tv)], 1e-12)
        ig = nn.CrossEntropyLoss(ignore_index=0)(self.logits, self.target)
        self.close(ig, [(per[0] + per[2]) / 2], 1e-12)
        eps = 0.1
        sm = [(1 - eps) * per[i] + eps * sum(-v for v in ls[i]) / 4 for i in range(3)]
        self.close(nn.CrossEntropyLoss(label_smoothing=eps)(self.logits, self.target), [sum(sm) / 3], 1e-12)
        lsm = F.log_softmax(self.logits, dim=1)
        self.close(nn.NLLLoss()(lsm, self.target), [sum(per) / 3], 1e-12)
        self.close(F.nll_loss(lsm, self.target, reduction="none"), per, 1e-12)
        # probabilities as target
        probs = ember.tensor([[0.25] * 4] * 3, dtype=ember.float64)
        self.close(F.cross_entropy(self.logits, probs), [sum(-0.25 * v for r in ls for v in r) / 3], 1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.close(F.cross_entropy(self.logits, self.target, size_average=False), [sum(per)], 1e-12)
        with self.assertRaises(IndexError):
            F.cross_entropy(self.logits, ember.tensor([1, 0, 7]))
        with self.assertRaises(ValueError):
            F.cross_entropy(self.logits, self.target, reduction="avg")
        # gradient: softmax - onehot, / N
        x = self.logits.clone().requires_grad_()
        F.cross_entropy(x, self.target).backward()
        g = []
        for i in range(3):
            for j in range(4):
                g.append((math.exp(ls[i][j]) - (1.0 if j == self.tv[i] else 0.0)) / 3)
        self.close(x.grad, g, 1e-10)

    def test_regression_losses(self):
        a, av = rnd(2, 3, seed=21)
        b, bv = rnd(2, 3, seed=22)
        d = [x - y for x, y in zip(av, bv)]
        self.close(nn.MSELoss()(a, b), [sum(v * v for v in d) / 6], 1e-12)
        self.close(nn.MSELoss(reduction="sum")(a, b), [sum(v * v for v in d)], 1e-12)
        self.close(nn.L1Loss(reduction="none")(a, b), [abs(v) for v in d], 1e-12)
        beta = 0.3
        sl = [0.5 * v * v / beta if abs(v) < beta else abs(v) - 0.5 * beta for v in d]
        self.close(nn.SmoothL1Loss(beta=beta)(a, b), [sum(sl) / 6], 1e-12)
        p = ember.tensor([0.2, 0.7, 0.9], dtype=ember.float64)
        t = ember.tensor([0.0, 1.0, 1.0], dtype=ember.float64)
        bce = [-(tv * math.log(pv) + (1 - tv) * math.log(1 - pv)) for pv, tv in zip([0.2, 0.7, 0.9], [0, 1, 1])]
        self.close(nn.BCELoss()(p, t), [sum(bce) / 3], 1e-12)
        z = ember.tensor([-1.0, 0.5, 2.0], dtype=ember.float64)
        pw = 2.0
        bl = []
        for zv, tv in zip([-1.0, 0.5, 2.0], [0, 1, 1]):
            s = 1 / (1 + math.exp(-zv))
            bl.append(-(pw * tv * math.log(s) + (1 - tv) * math.log(1 - s)))
        self.close(nn.BCEWithLogitsLoss(pos_weight=ember.tensor([pw], dtype=ember.float64))(z, t), [sum(bl) / 3], 1e-12)
        with self.assertRaises(ValueError):
            F.binary_cross_entropy(p, t[:2])
        lp = ember.tensor([[math.log(0.5), math.log(0.5)]], dtype=ember.float64)
        q = ember.tensor([[0.9, 0.1]], dtype=ember.float64)
        kl = [0.9 * (math.log(0.9) - math.log(0.5)), 0.1 * (math.log(0.1) - math.log(0.5))]
        self.close(nn.KLDivLoss(reduction="batchmean")(lp, q), [sum(kl)], 1e-12)
        self.close(nn.KLDivLoss(reduction="sum", log_target=True)(lp, q.log()), [sum(kl)], 1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.close(nn.KLDivLoss()(lp, q), [sum(kl) / 2], 1e-12)


class TestInitAndUtils(Case):
    def test_init(self):
        t = ember.empty(20, 30)
        init.constant_(t, 0.5)
        self.assertEqual(set(flat(t)), {0.5})
        init.ones_(t)
        self.assertEqual(set(flat(t)), {1.0})
        init.zeros_(t)
        self.assertEqual(set(flat(t)), {0.0})
        init.uniform_(t, -0.2, 0.3)
        v = flat(t)
        self.assertTrue(min(v) >= -0.2 and max(v) <= 0.3)
        init.normal_(t, 1.0, 0.5)
        v = flat(t)
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / len(v))
        self.assertLess(abs(mean - 1.0), 0.1)
        self.assertLess(abs(std - 0.5), 0.1)
        init.xavier_uniform_(t, gain=2.0)
        bound = 2.0 * math.sqrt(6 / (20 + 30))
        self.assertLessEqual(max(abs(x) for x in flat(t)), bound)
        init.kaiming_uniform_(t, a=0, mode="fan_in", nonlinearity="relu")
        bound = math.sqrt(2) * math.sqrt(3 / 30)
        self.assertLessEqual(max(abs(x) for x in flat(t)), bound)
        init.kaiming_normal_(t, mode="fan_out")
        self.assertEqual(init._calculate_fan_in_and_fan_out(ember.empty(4, 3, 2, 2)), (12, 16))
        self.assertAlmostEqual(init.calculate_gain("relu"), math.sqrt(2))
        self.assertAlmostEqual(init.calculate_gain("tanh"), 5 / 3)
        self.assertAlmostEqual(init.calculate_gain("leaky_relu", 0.2), math.sqrt(2 / (1 + 0.04)))
        self.assertAlmostEqual(init.calculate_gain("leaky_relu"), math.sqrt(2 / (1 + 0.0001)))
        with self.assertRaises(ValueError):
            init.calculate_gain("nope")
        with self.assertRaises(ValueError):
            init.xavier_uniform_(ember.empty(3))
        with self.assertRaises(ValueError):
            init.kaiming_uniform_(t, mode="fan_sideways")
        o = ember.empty(3, 5)
        init.orthogonal_(o)
        rows = o.tolist()
        for i in range(3):
            for j in range(3):
                dot = sum(a * b for a, b in zip(rows[i], rows[j]))
                self.assertAlmostEqual(dot, 1.0 if i == j else 0.0, places=5)
        e = ember.empty(2, 3)
        init.eye_(e)
        self.assertEqual(e.tolist(), [[1, 0, 0], [0, 1, 0]])
        p = nn.Parameter(ember.zeros(4))
        init.uniform_(p)  # no autograd error on a leaf that requires grad
        self.assertTrue(p.requires_grad)
        init.trunc_normal_(t, std=1.0, a=-0.5, b=0.5)
        self.assertLessEqual(max(abs(x) for x in flat(t)), 0.5)

    def test_clip_grad(self):
        a = nn.Parameter(ember.zeros(2))
        b = nn.Parameter(ember.zeros(2))
        c = nn.Parameter(ember.zeros(1))  # no grad: skipped
        a.grad = ember.tensor([3.0, 0.0])
        b.grad = ember.tensor([0.0, 4.0])
        total = nn.utils.clip_grad_norm_([a, b, c], max_norm=1.0)
        self.assertAlmostEqual(float(total), 5.0, places=5)
        self.close(a.grad, [0.6, 0.0], 1e-5)
        self.close(b.grad, [0.0, 0.8], 1e-5)
        a.grad = ember.tensor([3.0, -7.0])
        total = nn.utils.clip_grad_norm_(a, 100.0, norm_type="inf")
        self.assertAlmostEqual(float(total), 7.0, places=5)
        self.close(a.grad, [3.0, -7.0])
        total = nn.utils.clip_grad_norm_([a], 5.0, norm_type=1)
        self.assertAlmostEqual(float(total), 10.0, places=5)
        self.close(a.grad, [1.5, -3.5], 1e-5)
        a.grad = ember.tensor([float("nan"), 1.0])
        with self.assertRaises(RuntimeError):
            nn.utils.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
        a.grad = ember.tensor([-3.0, 0.5])
        nn.utils.clip_grad_value_([a], 1.0)
        self.close(a.grad, [-1.0, 0.5])
        v = nn.utils.parameters_to_vector([ember.ones(2, 2), ember.zeros(3)])
        self.assertEqual(flat(v), [1.0] * 4 + [0.0] * 3)


class TestRefcounts(Case):
    def test_no_growth_over_training_steps(self):
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
        opt = ember.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = ember.randn(4, 8), ember.randn(4, 1)
        lossf = nn.MSELoss()

        def step():
            opt.zero_grad()
            loss = lossf(model(x), y)
            loss.backward()
            opt.step()
            model.state_dict()
            return float(loss)

        for _ in range(20):
            step()
        gc.collect()
        w = model[0].weight
        rc = sys.getrefcount(w), sys.getrefcount(x), sys.getrefcount(model)
        n_objs = len(gc.get_objects())
        for _ in range(300):
            step()
        gc.collect()
        self.assertEqual((sys.getrefcount(w), sys.getrefcount(x), sys.getrefcount(model)), rc)
        self.assertLessEqual(len(gc.get_objects()) - n_objs, 20)


if __name__ == "__main__":
    unittest.main()
