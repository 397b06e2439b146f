"""ember.utils.data and ember.datasets: datasets, samplers (DistributedSampler
index sets against a reference written here), the DataLoader with 0, 1 and 2
workers (identical batches for a seed, structures, worker errors, seeding,
persistent workers, iterable datasets, timeout, Ctrl-C, no shared memory
left behind) and FashionMNIST from the Debian files."""
import collections
import os
import random
import signal
import threading
import time
import unittest

import ember
from ember.utils.data import (DataLoader, Dataset, IterableDataset, TensorDataset, Subset,
                              ConcatDataset, random_split, SequentialSampler, RandomSampler,
                              BatchSampler, SubsetRandomSampler, WeightedRandomSampler,
                              DistributedSampler, Sampler, get_worker_info, default_collate)

FMNIST = "/usr/share/datasets/fashion-mnist"


def shm_names():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("ember-dl-%d-" % os.getpid()))


def batches(loader):
    return [[t.tolist() if isinstance(t, ember.Tensor) else t for t in b] for b in loader]


class Squares(Dataset):
    def __init__(self, n=10):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i < 0 or i >= self.n:
            raise IndexError(i)
        return ember.tensor([float(i), float(i * i)]), i


Point = collections.namedtuple("Point", ["x", "y"])


class Structured(Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"img": ember.full((2, 2), float(i)), "label": i, "name": "s%d" % i,
                "pair": (ember.tensor(i), 0.5 * i), "pt": Point(ember.tensor([i]), i)}


class WhoAmI(Dataset):
    """Returns (index, worker id, Python random draw, ember random draw)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        w = get_worker_info()
        return ember.tensor([float(i), -1.0 if w is None else float(w.id), random.random(),
                             float(ember.rand(1))], dtype=ember.float64)


class Failing(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 4:
            raise ValueError("bad sample %d" % i)
        return ember.tensor([i])


class MyError(Exception):
    pass


class Outer:
    class Inner(LookupError):
        pass


class TwoArgError(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)


class Raising(Dataset):
    """Raises exc at sample 1."""

    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 3

    def __getitem__(self, i):
        if i == 1:
            raise self.exc
        return ember.tensor([i])


class Slow(Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(self.delay)
        return ember.tensor([i])


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        w = get_worker_info()
        start, step = (0, 1) if w is None else (w.id, w.num_workers)
        for i in range(start, self.n, step):
            yield ember.tensor(i)


class TestDatasets(unittest.TestCase):
    def test_tensor_subset_concat(self):
        x = ember.arange(10).reshape(5, 2)
        y = ember.arange(5) * 10
        ds = TensorDataset(x, y)
        self.assertEqual(len(ds), 5)
        a, b = ds[3]
        self.assertEqual((a.tolist(), int(b)), ([6, 7], 30))
        with self.assertRaises(AssertionError):
            TensorDataset(x, ember.arange(4))
        sub = Subset(ds, [4, 0, 2])
        self.assertEqual(len(sub), 3)
        self.assertEqual(int(sub[0][1]), 40)
        cat = ConcatDataset([ds, sub, Squares(2)])
        self.assertEqual(len(cat), 10)
        self.assertEqual(int(cat[6][1]), 0)
        self.assertEqual(cat[9][1], 1)
        self.assertEqual(cat[-1][1], 1)
        with self.assertRaises(ValueError):
            cat[-11]
        # the C path sees the same samples
        cc = ConcatDataset([ds, sub])
        self.assertIsNotNone(cc._c_dataset())
        self.assertEqual([int(cc._c_dataset().get(i)[1]) for i in range(8)],
                         [int(cc[i][1]) for i in range(8)])
        self.assertIsNone(ConcatDataset([ds, Squares(2)])._c_dataset())
        with self.assertRaises(IndexError):
            ds._c_dataset().get(5)
        s = ds + sub
        self.assertIsInstance(s, ConcatDataset)

    def test_random_split(self):
        ds = Squares(10)
        g = ember.Generator().manual_seed(3)
        parts = random_split(ds, [3, 7], generator=g)
        self.assertEqual([len(p) for p in parts], [3, 7])
        idx = sorted(parts[0].indices + parts[1].indices)
        self.assertEqual(idx, list(range(10)))
        again = random_split(ds, [3, 7], generator=ember.Generator().manual_seed(3))
        self.assertEqual(again[0].indices, parts[0].indices)
        parts = random_split(ds, [0.5, 0.3, 0.2])
        self.assertEqual([len(p) for p in parts], [5, 3, 2])
        with self.assertRaises(ValueError):
            random_split(ds, [3, 3])


class TestSamplers(unittest.TestCase):
    def test_basic_samplers(self):
        self.assertEqual(list(SequentialSampler(range(4))), [0, 1, 2, 3])
        g1, g2 = ember.Generator().manual_seed(5), ember.Generator().manual_seed(5)
        r1, r2 = list(RandomSampler(range(20), generator=g1)), list(RandomSampler(range(20), generator=g2))
        self.assertEqual(r1, r2)
        self.assertEqual(sorted(r1), list(range(20)))
        rs = RandomSampler(range(5), replacement=True, num_samples=50)
        draws = list(rs)
        self.assertEqual(len(draws), 50)
        self.assertEqual(len(rs), 50)
        self.assertTrue(all(0 <= d < 5 for d in draws))
        self.assertEqual(list(BatchSampler(SequentialSampler(range(7)), 3, False)), [[0, 1, 2], [3, 4, 5], [6]])
        self.assertEqual(list(BatchSampler(range(7), 3, True)), [[0, 1, 2], [3, 4, 5]])
        self.assertEqual(len(BatchSampler(SequentialSampler(range(7)), 3, False)), 3)
        self.assertEqual(sorted(SubsetRandomSampler([7, 3, 9])), [3, 7, 9])
        w = list(WeightedRandomSampler([0.0, 1.0, 0.0, 3.0], 200))
        self.assertEqual(set(w), {1, 3})
        self.assertGreater(w.count(3), w.count(1))
        wn = list(WeightedRandomSampler([1.0, 1.0, 0.0, 1.0], 3, replacement=False))
        self.assertEqual(sorted(wn), [0, 1, 3])
        with self.assertRaises(ValueError):
            BatchSampler(range(3), 0, False)
        with self.assertRaises(ValueError):
            RandomSampler(range(3), num_samples=0)

    def test_distributed_sampler(self):
        def ref(n, r, R, drop_last, perm=None):
            idx = list(perm) if perm is not None else list(range(n))
            if drop_last:
                total = (n // R) * R
                idx = idx[:total]
            else:
                total = -(-n // R) * R
                pad = total - len(idx)
                while pad > 0:
                    idx += idx[:pad]
                    pad = total - len(idx)
            return idx[r:total:R]

        for n, R, dl in [(10, 3, False), (10, 3, True), (2, 4, False), (12, 4, False), (7, 2, True)]:
            got = [list(DistributedSampler(range(n), num_replicas=R, rank=r, shuffle=False, drop_last=dl))
                   for r in range(R)]
            self.assertEqual(got, [ref(n, r, R, dl) for r in range(R)], (n, R, dl))
            self.assertEqual([len(DistributedSampler(range(n), num_replicas=R, rank=r, drop_last=dl))
                              for r in range(R)], [len(x) for x in got])
        # shuffled: every rank agrees on one permutation (seed + epoch)
        n, R = 11, 3
        per_rank = [DistributedSampler(range(n), num_replicas=R, rank=r, seed=7) for r in range(R)]
        e0 = [list(s) for s in per_rank]
        merged = [None] * (len(e0[0]) * R)
        for r in range(R):
            merged[r::R] = e0[r]
        perm = merged[:n]
        self.assertEqual(sorted(perm), list(range(n)))
        self.assertEqual(merged[n:], perm[:len(merged) - n])
        self.assertEqual(e0, [list(s) for s in per_rank])  # same epoch, same order
        for s in per_rank:
            s.set_epoch(1)
        e1 = [list(s) for s in per_rank]
        self.assertNotEqual(e0, e1)
        self.assertEqual(set(sum(e1, [])), set(range(n)))
        self.assertEqual(len(sum(e1, [])), 12)
        with self.assertRaises(ValueError):
            DistributedSampler(range(4), num_replicas=2, rank=2)
        with self.assertRaises(RuntimeError):
            DistributedSampler(range(4))  # no process group


class TestDataLoader(unittest.TestCase):
    def setUp(self):
        self.shm_before = shm_names()

    def tearDown(self):
        self.assertEqual(shm_names(), self.shm_before)

    def test_identical_batches_for_a_seed(self):
        x = ember.arange(40, dtype=ember.float32).reshape(20, 2)
        y = ember.arange(20)
        for ds in [TensorDataset(x, y), Squares(20)]:
            runs = []
            for nw in (0, 1, 2):
                g = ember.Generator().manual_seed(11)
                dl = DataLoader(ds, batch_size=6, shuffle=True, num_workers=nw, generator=g)
                runs.append(batches(dl))
            self.assertEqual(runs[0], runs[1])
            self.assertEqual(runs[0], runs[2])
            self.assertEqual(len(runs[0]), 4)
            self.assertEqual(sorted(v for b in runs[0] for v in (b[1] if isinstance(b[1], list) else [b[1]])),
                             list(range(20)) if isinstance(ds, TensorDataset) else list(range(20)))
        # a worker's batch lies in shared memory (as in torch), an in-process one does not
        for ds in [TensorDataset(x, y), Squares(20)]:
            for nw in (0, 1):
                b = next(iter(DataLoader(ds, batch_size=4, num_workers=nw)))
                self.assertEqual([t.is_shared() for t in b], [nw > 0] * 2)
        b = next(iter(DataLoader(TensorDataset(x, y), batch_size=4)))
        self.assertIsInstance(b, list)
        self.assertEqual(b[0].shape, ember.Size([4, 2]))
        self.assertEqual(b[1].tolist(), [0, 1, 2, 3])

    def test_pin_memory(self):
        # With a CUDA device every tensor of a batch comes in pinned host
        # memory; without one pin_memory=True changes nothing. Either way the
        # batches are those of the same loader without it.
        cuda = ember.cuda.is_available()
        for nw in (0, 2):
            plain = list(DataLoader(Structured(), batch_size=2, num_workers=nw))
            pinned = list(DataLoader(Structured(), batch_size=2, num_workers=nw, pin_memory=True))
            self.assertEqual(len(pinned), 3)
            for p, q in zip(pinned, plain):
                self.assertEqual(p["img"].tolist(), q["img"].tolist())
                self.assertEqual(p["label"].tolist(), q["label"].tolist())
                self.assertEqual(p["name"], q["name"])
                self.assertEqual(p["pt"].x.tolist(), q["pt"].x.tolist())
                for t in (p["img"], p["label"], p["pair"][0], p["pt"].x):
                    self.assertEqual(t.is_pinned(), cuda)
                self.assertFalse(q["img"].is_pinned())
        x = ember.arange(6.0)
        self.assertFalse(x.is_pinned())
        if cuda:
            y = x.pin_memory()
            self.assertTrue(y.is_pinned())
            self.assertEqual(y.tolist(), x.tolist())
        else:
            with self.assertRaisesRegex(RuntimeError, "pin_memory"):
                x.pin_memory()

    def test_structures_and_collate(self):
        for nw in (0, 2):
            out = list(DataLoader(Structured(), batch_size=2, num_workers=nw))
            self.assertEqual(len(out), 3)
            b = out[1]
            self.assertEqual(b["img"].shape, ember.Size([2, 2, 2]))
            self.assertEqual(b["label"].tolist(), [2, 3])
            self.assertEqual(b["label"].dtype, ember.int64)
            self.assertEqual(b["name"], ["s2", "s3"])
            self.assertIsInstance(b["pair"], list)
            self.assertEqual(b["pair"][0].tolist(), [2, 3])
            self.assertEqual(b["pair"][1].dtype, ember.float64)
            self.assertEqual(b["pair"][1].tolist(), [1.0, 1.5])
            self.assertIsInstance(b["pt"], Point)
            self.assertEqual(b["pt"].x.tolist(), [[2], [3]])
            self.assertEqual(out[2]["label"].tolist(), [4])
        for nw in (0, 1):
            custom = list(DataLoader(Squares(5), batch_size=2, num_workers=nw,
                                     collate_fn=lambda items: ("custom", [i for _, i in items])))
            self.assertEqual(custom, [("custom", [0, 1]), ("custom", [2, 3]), ("custom", [4])])
            single = list(DataLoader(Squares(3), batch_size=None, num_workers=nw))
            self.assertEqual([(t.tolist(), i) for t, i in single],
                             [([0.0, 0.0], 0), ([1.0, 1.0], 1), ([2.0, 4.0], 2)])
            dl = DataLoader(Squares(7), batch_size=3, drop_last=True, num_workers=nw)
            self.assertEqual(len(dl), 2)
            self.assertEqual([b[1].tolist() for b in dl], [[0, 1, 2], [3, 4, 5]])
            ts = list(DataLoader(TensorDataset(ember.arange(3)), batch_size=None, num_workers=nw))
            self.assertEqual([t[0].tolist() for t in ts], [0, 1, 2])
        for nw in (0, 2):
            ds = TensorDataset(ember.arange(6), ember.arange(6) * 2)
            got = list(DataLoader(ds, batch_size=4, num_workers=nw,
                                  collate_fn=lambda items: {"sum": sum(int(a) + int(b) for a, b in items),
                                                            "n": len(items)}))
            self.assertEqual(got, [{"sum": 18, "n": 4}, {"sum": 27, "n": 2}])
        self.assertEqual(default_collate([1, 2]).tolist(), [1, 2])
        with self.assertRaises(RuntimeError):
            default_collate([[1, 2], [3]])
        with self.assertRaises(TypeError):
            default_collate([object()])

    def test_samplers_in_loader(self):
        class Evens(Sampler):
            def __iter__(self):
                return iter([0, 2, 4, 6])

            def __len__(self):
                return 4

        for nw in (0, 2):
            dl = DataLoader(Squares(8), sampler=Evens(), batch_size=3, num_workers=nw)
            self.assertEqual([b[1].tolist() for b in dl], [[0, 2, 4], [6]])
            dl = DataLoader(Squares(8), batch_sampler=[[7, 1], [3]], num_workers=nw)
            self.assertEqual([b[1].tolist() for b in dl], [[7, 1], [3]])
            dl = DataLoader(TensorDataset(ember.arange(8)), num_workers=nw,
                            sampler=DistributedSampler(range(8), num_replicas=2, rank=1, shuffle=False))
            self.assertEqual([b[0].tolist() for b in dl], [[1], [3], [5], [7]])

    def test_worker_info_and_seeding(self):
        def run(seed, nw):
            g = ember.Generator().manual_seed(seed)
            rows = [r for b in DataLoader(WhoAmI(), batch_size=2, num_workers=nw, generator=g) for r in b.tolist()]
            return rows

        a, b, c = run(1, 2), run(1, 2), run(2, 2)
        self.assertEqual(a, b)
        self.assertNotEqual([r[2] for r in a], [r[2] for r in c])
        self.assertEqual([r[1] for r in a], [0, 0, 1, 1, 0, 0, 1, 1])
        # the two workers draw different Python and ember streams
        w0 = [r[2:] for r in a if r[1] == 0]
        w1 = [r[2:] for r in a if r[1] == 1]
        self.assertNotEqual(w0[0], w1[0])
        self.assertEqual([r[1] for r in run(1, 0)], [-1.0] * 8)
        self.assertIsNone(get_worker_info())

        calls = []

        def init_fn(worker_id):
            info = get_worker_info()
            assert info.id == worker_id and info.num_workers == 2
            assert isinstance(info.dataset, WhoAmI)
            random.seed(1000 + worker_id)

        rows = [r for b in DataLoader(WhoAmI(), batch_size=4, num_workers=2, worker_init_fn=init_fn) for r in b.tolist()]
        random.seed(1000)
        self.assertAlmostEqual(rows[0][2], random.random())
        self.assertEqual(calls, [])  # init_fn ran in the workers, not here

    def test_worker_errors(self):
        for nw in (0, 1, 2):
            got = []
            with self.assertRaises(ValueError) as cm:
                for b in DataLoader(Failing(), batch_size=2, num_workers=nw):
                    got.append(b.tolist())
            self.assertEqual(got, [[[0], [1]], [[2], [3]]])
            msg = str(cm.exception)
            if nw == 0:
                self.assertEqual(msg, "bad sample 4")
            else:
                self.assertIn("DataLoader worker", msg)
                self.assertIn("Caught ValueError in DataLoader worker process", msg)
                self.assertIn("Original Traceback (most recent call last):", msg)
                self.assertIn('raise ValueError("bad sample %d" % i)', msg)
                self.assertIn("ValueError: bad sample 4", msg)
        with self.assertRaises(TypeError):
            list(DataLoader(Squares(4), batch_size=2, num_workers=1, collate_fn=lambda b: b[0] + 1))

    def test_worker_exception_classes(self):
        import zipfile
        cases = [(MyError("mine"), MyError), (zipfile.BadZipFile("zip"), zipfile.BadZipFile),
                 (Outer.Inner("inner"), Outer.Inner), (KeyError("k"), KeyError),
                 (TwoArgError(1, 2), RuntimeError),  # cannot be rebuilt from one message
                 (ValueError("name \udcff"), ValueError)]  # a lone surrogate (os.fsdecode)
        for exc, cls in cases:
            with self.assertRaises(cls) as cm:
                list(DataLoader(Raising(exc), batch_size=1, num_workers=1))
            self.assertIs(type(cm.exception), cls)
            msg = str(cm.exception)
            self.assertIn("in DataLoader worker process 0", msg)
            self.assertIn("Original Traceback (most recent call last):", msg)
            self.assertIn("raise self.exc", msg)
        self.assertIn("Caught zipfile.BadZipFile in", self._raised(zipfile.BadZipFile("zip")))
        self.assertIn("ValueError: name \\udcff", self._raised(ValueError("name \udcff")))
        self.assertIn("\n", self._raised(KeyError("k")))  # KeyError's str() not a repr
        import functools  # a 7000-character first line, no traceback (raised in C)
        with self.assertRaises(KeyError):
            list(DataLoader(Squares(2), batch_size=1, num_workers=1,
                            collate_fn=functools.partial(("{" + "a" * 7000 + "}").format)))
        long_text = self._raised(ValueError("x" * 3000))  # a long message is kept whole
        self.assertIn("x" * 3000, long_text)
        self.assertIn("Original Traceback (most recent call last):", long_text)

    def _raised(self, exc):
        try:
            list(DataLoader(Raising(exc), batch_size=1, num_workers=1))
        except Exception as e:
            return str(e)
        self.fail("no exception")

    def test_live_dataset_and_settings(self):
        # each pass reads the dataset as it is then, as torch's samplers do
        data = [1, 2]
        dl = DataLoader(data, batch_size=8)
        self.assertEqual(batches(dl), [[1, 2]])
        data.append(3)
        self.assertEqual((batches(dl), len(dl)), ([[1, 2, 3]], 1))
        del data[1:]
        self.assertEqual(batches(dl), [[1]])
        rs = DataLoader(data, batch_size=8, shuffle=True)
        data.extend([5, 6])
        self.assertEqual(sorted(batches(rs)[0]), [1, 5, 6])
        # len() first (tqdm does) must not hide the change from the pass
        data = list(range(4))
        dl = DataLoader(data, batch_size=2)
        self.assertEqual(len(batches(dl)), 2)
        data.extend([4, 5, 6, 7])
        self.assertEqual(len(dl), 4)
        self.assertEqual(len(list(iter(dl.sampler))), 8)
        self.assertEqual(batches(dl), [[0, 1], [2, 3], [4, 5], [6, 7]])
        # new tensors, even at the address of freed ones, are read
        renewed = TensorDataset(ember.arange(4))
        dl = DataLoader(renewed, batch_size=4)
        for k in range(5):
            renewed.tensors = (ember.arange(4) + 100 * k,)
            self.assertEqual(batches(dl), [[[100 * k + i for i in range(4)]]])
        tds = TensorDataset(ember.arange(10))
        sub = Subset(tds, [0, 1])
        for nw in (0, 1):
            dl = DataLoader(sub, batch_size=4, num_workers=nw)
            sub.indices = [0, 1]
            tds.tensors = (ember.arange(10),)
            self.assertEqual(batches(dl), [[[0, 1]]])
            sub.indices = [2, 3, 4]
            self.assertEqual(batches(dl), [[[2, 3, 4]]])
            sub.indices.append(7)
            self.assertEqual(batches(dl), [[[2, 3, 4, 7]]])
            tds.tensors = (ember.arange(10, 20),)
            self.assertEqual(batches(dl), [[[12, 13, 14, 17]]])
        # the sampling is fixed after __init__ (torch: ValueError) ...
        for attr in ("dataset", "sampler", "batch_sampler", "batch_size", "drop_last",
                     "persistent_workers"):
            with self.assertRaises(ValueError) as cm:
                setattr(dl, attr, None)
            self.assertIn("%s attribute should not be set after DataLoader is initialized" % attr,
                          str(cm.exception))
        # ... the rest applies from the next pass
        dl = DataLoader(tds, batch_size=5, collate_fn=len)
        self.assertEqual(list(dl), [5, 5])
        dl.collate_fn = lambda b: -len(b)
        self.assertEqual(list(dl), [-5, -5])
        dl.num_workers = 2
        self.assertEqual(list(dl), [-5, -5])
        # persistent workers: iter() hands out the same iterator, reset
        dl = DataLoader(tds, batch_size=4, num_workers=1, persistent_workers=True)
        a = iter(dl)
        next(a)
        b = iter(dl)
        self.assertIs(a, b)
        self.assertEqual(len(batches(a)), 3)
        # indices must be integers; an iterable dataset's batch_size positive
        with self.assertRaises(IndexError) as cm:
            list(DataLoader(Subset(tds, [0, 1.5]), batch_size=2))
        self.assertIn("Subset: index 1.5 at position 1 is not an integer", str(cm.exception))
        with self.assertRaises(IndexError):
            SubsetRandomSampler([1.5, 2])
        for w2 in ([[1.0, 2.0], [3.0, 4.0]], ember.ones(2, 2)):
            with self.assertRaises(ValueError) as cm:
                WeightedRandomSampler(w2, 2)
            self.assertIn("weights should be a 1d sequence", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            DataLoader(Stream(3), batch_size=0)
        self.assertIn("batch_size should be a positive integer value", str(cm.exception))
        # mixed dtypes stack in the promoted type, as torch.stack (C collate)
        mixed = ConcatDataset([TensorDataset(ember.zeros(2, 2)),
                               TensorDataset(ember.ones(2, 2, dtype=ember.float64))])
        (b,) = next(iter(DataLoader(mixed, batch_size=4)))
        self.assertEqual(b.dtype, ember.float64)
        self.assertEqual(b.tolist(), [[0, 0], [0, 0], [1, 1], [1, 1]])

    def test_batches_stay_objects_without_workers(self):
        # as torch: nothing is pickled, the collated object comes back itself
        lock, objs = threading.Lock(), [object(), object()]

        class Objects(Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                return {"lock": lock, "obj": objs[i], "t": ember.tensor([i])}

        got = list(DataLoader(Objects(), batch_size=None))
        self.assertIs(got[1]["obj"], objs[1])
        self.assertIs(got[0]["lock"], lock)
        self.assertEqual(got[1]["t"].tolist(), [1])
        made = []
        dl = DataLoader(Objects(), batch_size=2, collate_fn=lambda b: made.append(b) or made[-1])
        self.assertIs(next(iter(dl)), made[0])
        made.clear()  # a list of tensors too
        dl = DataLoader(Objects(), batch_size=2,
                        collate_fn=lambda b: made.append([s["t"] for s in b]) or made[-1])
        self.assertIs(next(iter(dl)), made[0])
        import ember.utils.data._collate as collate
        self.assertEqual(collate._in_process.__dict__.get("batches", {}), {})
        with self.assertRaises(TypeError):  # with workers a batch must be picklable
            list(DataLoader(Objects(), batch_size=None, num_workers=1))

    def test_batches_of_many_tensors(self):
        # a batch may hold many more tensors than a sample has fields
        tds = TensorDataset(ember.arange(300).reshape(300, 1).float())
        for nw in (0, 1, 2):
            got = list(DataLoader(tds, batch_size=100, num_workers=nw, collate_fn=list))
            self.assertEqual([len(b) for b in got], [100, 100, 100])
            self.assertEqual(got[2][99][0].tolist(), [299.0])
            wide = list(DataLoader(tds, batch_size=None, num_workers=nw,
                                   collate_fn=lambda s: {str(k): s[0] + k for k in range(40)}))
            self.assertEqual((len(wide), len(wide[5])), (300, 40))
            self.assertEqual(wide[5]["39"].tolist(), [44.0])

    def test_persistent_and_iterable(self):
        dl = DataLoader(Squares(6), batch_size=2, num_workers=2, persistent_workers=True)
        it = iter(dl)
        pids = it.worker_pids()
        first = batches(it)
        it2 = iter(dl)
        self.assertEqual(it2.worker_pids(), pids)
        self.assertEqual(batches(it2), first)
        del it, it2, dl
        for nw in (0, 1, 2):
            got = [b.tolist() for b in DataLoader(Stream(7), batch_size=2, num_workers=nw)]
            flat = sorted(v for b in got for v in b)
            self.assertEqual(flat, list(range(7)))
            if nw == 2:
                self.assertEqual(got, [[0, 2], [1, 3], [4, 6], [5]])
        self.assertEqual([t.tolist() for t in DataLoader(Stream(3), batch_size=None)], [0, 1, 2])
        self.assertEqual(len(DataLoader(Stream(7), batch_size=2)), 4)

    def test_no_growth_over_epochs(self):
        import gc
        loaders = [DataLoader(TensorDataset(ember.arange(12).reshape(6, 2)), batch_size=4),
                   DataLoader(Squares(6), batch_size=4),
                   DataLoader(Structured(), batch_size=2)]

        def epochs(n):
            for _ in range(n):
                for dl in loaders:
                    for b in dl:
                        pass

        epochs(3)
        gc.collect()
        before = len(gc.get_objects())
        epochs(60)
        gc.collect()
        self.assertLessEqual(len(gc.get_objects()) - before, 10)

    def test_argument_errors(self):
        ds = Squares(4)
        for kw, text in [
            (dict(num_workers=-1), "num_workers option should be non-negative"),
            (dict(timeout=-1), "timeout option should be non-negative"),
            (dict(timeout=1), "timeout option needs num_workers > 0"),
            (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
            (dict(prefetch_factor=4), "prefetch_factor option could only be specified"),
            (dict(sampler=SequentialSampler(ds), shuffle=True), "mutually exclusive with shuffle"),
            (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
            (dict(batch_size=None, drop_last=True), "disables auto-batching"),
        ]:
            with self.assertRaises(ValueError) as cm:
                DataLoader(ds, **kw)
            self.assertIn(text, str(cm.exception))
        with self.assertRaises(ValueError):
            DataLoader(Stream(3), shuffle=True)

    def test_timeout_and_interrupt(self):
        dl = DataLoader(Slow(3.0), batch_size=1, num_workers=1, timeout=0.3)
        t = time.time()
        with self.assertRaises(RuntimeError) as cm:
            next(iter(dl))
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertLess(time.time() - t, 2.5)
        dl = DataLoader(Slow(5.0), batch_size=1, num_workers=1)
        timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
        t = time.time()
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            next(iter(dl))
        timer.join()
        self.assertLess(time.time() - t, 2.5)


@unittest.skipUnless(os.path.exists(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")),
                     "Fashion-MNIST is not installed under " + FMNIST)
class TestFashionMNIST(unittest.TestCase):
    def test_shapes_labels_and_loader(self):
        from ember.datasets import FashionMNIST, transforms
        test = FashionMNIST(train=False)
        self.assertEqual(len(test), 10000)
        self.assertEqual(test.data.shape, ember.Size([10000, 28, 28]))
        self.assertEqual(test.data.dtype, ember.uint8)
        self.assertEqual(test.targets.dtype, ember.int64)
        self.assertEqual(test.targets[:10].tolist(), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        counts = [0] * 10
        for v in test.targets.tolist():
            counts[v] += 1
        self.assertEqual(counts, [1000] * 10)
        img, label = test[0]
        self.assertEqual((img.shape, img.dtype, label), (ember.Size([28, 28]), ember.uint8, 9))
        self.assertEqual(test.classes[label], "Ankle boot")
        tf = FashionMNIST(train=False, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]), target_transform=lambda y: y + 100)
        img2, label2 = tf[0]
        self.assertEqual(img2.shape, ember.Size([1, 28, 28]))
        self.assertEqual(label2, 109)
        raw = img.tolist()
        self.assertAlmostEqual(float(img2[0, 14, 14]), (raw[14][14] / 255 - 0.5) / 0.5, places=5)
        # the C path (no transform) and the Python path agree
        sub = Subset(test, list(range(64)))
        a = next(iter(DataLoader(sub, batch_size=64, num_workers=1)))
        b = next(iter(DataLoader(Subset(FashionMNIST(train=False, transform=lambda t: t), list(range(64))),
                                 batch_size=64, num_workers=1)))
        self.assertEqual(a[1].tolist(), b[1].tolist())
        self.assertTrue(bool((a[0] == b[0]).all()))
        train = FashionMNIST(train=True)
        self.assertEqual(len(train), 60000)
        self.assertEqual(train.targets[:10].tolist(), [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        with self.assertRaises(FileNotFoundError):
            FashionMNIST(root="/nonexistent")


if __name__ == "__main__":
    unittest.main()
