"""ember.utils.data.DataLoader: torch's signature over the C loader of
dataloader/dataloader.h.

Every configuration runs through the C loader, so batches are identical
whatever num_workers is (given the same generator state):

* A dataset C can read (``_c_dataset()``: TensorDataset, FashionMNIST
  without transforms, Subset / ConcatDataset of them) with the default
  collate_fn is loaded and collated entirely in C, in the workers too.
* Otherwise the workers (forked processes) call the Python dataset's
  __getitem__ / __iter__ and collate_fn; tensors of the batch are written
  into the worker's shared-memory ring (default_collate stacks straight
  into it) and the main process receives views of them (zero copy); any
  other structure (tuples, dicts, namedtuples, strings ...) travels as
  pickled meta bytes with the tensors referenced by position.

Worker w seeds ember's default generator and Python's ``random`` (and
NumPy's global generator, if NumPy is imported) with base_seed + w, where
base_seed is drawn from ``generator`` (or ember's default generator) for
each pass. A worker's exception is raised in the main process as the same
exception class, its message naming the worker and carrying the worker's
traceback text. Ctrl-C interrupts the wait and stops the workers.

Workers are forked (never spawned), so datasets need not be picklable.
"""
import builtins
import random
import re
import sys

from ember import _C
from ember.utils.data.dataset import Dataset, IterableDataset
from ember.utils.data.sampler import Sampler, SequentialSampler, RandomSampler, BatchSampler
from ember.utils.data._collate import (default_collate, default_convert, _pack, _pack_in_process,
                                      _unpack, _in_process_mark, _forget_in_process)

__all__ = ["DataLoader", "get_worker_info", "WorkerInfo"]


class WorkerInfo:
    __slots__ = ("id", "num_workers", "seed", "dataset")

    def __init__(self, id, num_workers, seed, dataset):
        self.id = id
        self.num_workers = num_workers
        self.seed = seed
        self.dataset = dataset

    def __repr__(self):
        return "WorkerInfo(id={}, num_workers={}, seed={}, dataset={!r})".format(
            self.id, self.num_workers, self.seed, self.dataset)


_worker_dataset = None


def get_worker_info():
    """In a DataLoader worker: WorkerInfo(id, num_workers, seed, dataset);
    in the main process: None."""
    info = _C._dl_worker_info()
    if info is None:
        return None
    return WorkerInfo(info[0], info[1], info[2], _worker_dataset)


def _make_worker_init(dataset, user_fn):
    def init(worker_id):
        global _worker_dataset
        _worker_dataset = dataset
        info = _C._dl_worker_info()
        seed = info[2] if info is not None else 0
        random.seed(seed)
        np = sys.modules.get("numpy")
        if np is not None:
            np.random.seed(seed % (2 ** 32))
        if user_fn is not None:
            user_fn(worker_id)
    return init


class DataLoaderTimeoutError(RuntimeError, TimeoutError):
    """A batch did not arrive within the DataLoader's timeout."""


_CAUGHT = re.compile(r"Caught ([\w.]+) in DataLoader worker process")


def _find_class(name):
    """The class a worker named: a builtin's name, or module.qualname (the
    worker is a fork, so the main process has the same modules)."""
    if "." not in name:
        return getattr(builtins, name, None)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


class _KeyErrorMessage(str):
    """KeyError's str() is the repr() of its argument, which would print a
    worker's traceback as one line of escapes (torch does the same)."""

    def __repr__(self):
        return self


def _reraise(exc):
    """Re-raises a worker's failure as its original exception class (a
    RuntimeError if the class cannot be built from one message, as torch)."""
    msg = str(exc)
    m = _CAUGHT.search(msg)
    if m:
        cls = _find_class(m.group(1))
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                new = cls(_KeyErrorMessage(msg) if issubclass(cls, KeyError) else msg)
            except Exception:
                new = RuntimeError(msg)
            raise new from None
    if isinstance(exc, TimeoutError) and not isinstance(exc, DataLoaderTimeoutError):
        raise DataLoaderTimeoutError(msg) from None
    raise exc


class _Iter:
    def __init__(self, loader):
        self._loader = loader
        self._c = iter(loader._c_loader())
        self._num_yielded = 0

    def _reset(self):
        """A new pass (persistent workers: iter() hands out the same
        iterator, as torch's does)."""
        self._shutdown()
        self._c = iter(self._loader._c_loader())
        self._num_yielded = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._c is None:
            raise StopIteration
        mark = _in_process_mark()
        try:
            item = self._next_item()
        except BaseException:
            _forget_in_process(mark)  # a batch collated in-process but never handed out
            raise
        self._num_yielded += 1
        tensors, meta, _ = item
        return _unpack(tensors, meta)

    def _next_item(self):
        try:
            return next(self._c)
        except StopIteration:
            self._c = None
            raise
        except KeyboardInterrupt:
            self._shutdown()
            raise
        except TimeoutError as e:
            self._shutdown()
            _reraise(e)
        except Exception as e:
            if "DataLoader worker" in str(e) and "failed" not in str(e):
                # a dead worker: the pass is over
                self._shutdown()
            _reraise(e)

    def __len__(self):
        return len(self._loader)

    def _shutdown(self):
        c, self._c = self._c, None
        if c is not None:
            c.close()

    def worker_pids(self):
        return self._c.worker_pids() if self._c is not None else []

    def __del__(self):
        try:
            self._shutdown()
        except Exception:
            pass


# As torch: these define the sampling and may not change after __init__ ...
_FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")
# ... these may, and the next pass uses them.
_REBUILD = ("num_workers", "collate_fn", "worker_init_fn", "timeout", "pin_memory",
            "prefetch_factor", "generator")


class DataLoader:
    """Batches from a dataset (torch.utils.data.DataLoader's arguments).

    Each pass reads the dataset as it is then: a dataset that grew or
    shrank, or whose tensors or indices were reassigned, is sampled and
    loaded anew, and so are changes to num_workers, collate_fn and the
    other settings that may change between passes."""

    _initialized = False

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=2, persistent_workers=False, pin_memory_device=""):
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                             "disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if timeout > 0 and num_workers == 0:
            # torch fails the same at iter() (an assert): nothing to wait for
            raise ValueError("timeout option needs num_workers > 0 (got timeout={})".format(timeout))
        if num_workers == 0 and prefetch_factor != 2:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing.")
        assert prefetch_factor > 0
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if multiprocessing_context not in (None, "fork"):
            raise ValueError("ember's DataLoader workers are always forked "
                             "(multiprocessing_context={!r})".format(multiprocessing_context))
        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.persistent_workers = persistent_workers

        if isinstance(dataset, IterableDataset):
            self._iterable = True
            if shuffle not in {False, None}:
                raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle "
                                 "option, but got shuffle={}".format(shuffle))
            if sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler "
                                 "option, but got sampler={}".format(sampler))
            if batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified "
                                 "batch_sampler option, but got batch_sampler={}".format(batch_sampler))
            if batch_size is not None and (not isinstance(batch_size, int) or
                                           isinstance(batch_size, bool) or batch_size <= 0):
                raise ValueError("batch_size should be a positive integer value, but got "
                                 "batch_size={}".format(batch_size))
        else:
            self._iterable = False
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size = None
            drop_last = False
        elif batch_size is None:
            if drop_last:
                raise ValueError("batch_size=None option disables auto-batching and is mutually "
                                 "exclusive with drop_last")
        if not self._iterable:
            if sampler is None:
                sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
            if batch_size is not None and batch_sampler is None:
                batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self._auto_collation = batch_sampler is not None or (self._iterable and batch_size is not None)
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._loader = None
        self._loader_ds = self._loader_sampler = None
        self._py_ds = None
        self._initialized = True

    def __setattr__(self, attr, val):
        if self._initialized and attr in _FROZEN:
            raise ValueError("{} attribute should not be set after {} is initialized".format(
                attr, type(self).__name__))
        object.__setattr__(self, attr, val)
        if attr in _REBUILD:
            object.__setattr__(self, "_loader", None)

    def _c_loader(self):
        c_ds = None
        if not self._iterable and isinstance(self.dataset, Dataset):
            c_ds = self.dataset._c_dataset()
        # what the sampling is built from now (a batch sampler refreshes the
        # sampler it wraps); a new C sampler or dataset means a new loader
        s = self.batch_sampler if self.batch_sampler is not None else self.sampler
        c_sampler = None
        if isinstance(s, Sampler):
            s._refresh()
            c_sampler = s._c
        if c_ds is None:
            if self._py_ds is None:
                self._py_ds = _C._dl_python_dataset(self.dataset, self._iterable)
            c_ds = self._py_ds
        if self.timeout > 0 and self.num_workers == 0:
            raise ValueError("timeout option needs num_workers > 0 (got timeout={})".format(
                self.timeout))
        if self._loader is not None and c_ds is self._loader_ds and \
                c_sampler is self._loader_sampler:
            return self._loader
        python_ds = c_ds is self._py_ds
        c_collate = not python_ds and self.collate_fn in (default_collate, default_convert)
        kw = dict(batch_size=0, drop_last=self.drop_last, num_workers=self.num_workers,
                  prefetch_factor=self.prefetch_factor if self.num_workers > 0 else 0,
                  persistent_workers=self.persistent_workers and self.num_workers > 0,
                  timeout=float(self.timeout),
                  generator=self.generator, pin_memory=bool(self.pin_memory),
                  python_dataset=python_ds)
        if self._iterable:
            kw["batch_size"] = self.batch_size if self.batch_size is not None else 0
        elif self.batch_sampler is not None:
            bs = self.batch_sampler
            kw["batch_sampler"] = bs._c_sampler(True) if isinstance(bs, Sampler) else _C._dl_sampler_python(bs, True)
            kw["batch_size"] = 1
            kw["drop_last"] = False
        else:
            s = self.sampler
            kw["sampler"] = s._c_sampler(False) if isinstance(s, Sampler) else _C._dl_sampler_python(s, False)
            kw["drop_last"] = False
        if not c_collate:
            fn = self.collate_fn
            if not self._auto_collation:
                # without batching collate_fn sees each sample, not a list of one
                user_fn = fn
                fn = lambda items: user_fn(items[0])  # noqa: E731
            kw["collate_fn"] = fn
            # without workers nor pinning, the batch stays one object
            in_process = self.num_workers == 0 and not self.pin_memory
            kw["pack"] = _pack_in_process if in_process else _pack
        if python_ds or self.worker_init_fn is not None:
            kw["worker_init_fn"] = _make_worker_init(self.dataset, self.worker_init_fn)
        self._loader = _C._Loader(c_ds, **kw)
        self._loader_ds, self._loader_sampler = c_ds, c_sampler
        return self._loader

    def __iter__(self):
        if self.persistent_workers and self._live is not None:
            self._live._reset()
            return self._live
        it = _Iter(self)
        if self.persistent_workers:
            self._live = it
        return it

    _live = None

    def __len__(self):
        if self._iterable:
            n = len(self.dataset)
            if self.batch_size is not None:
                from math import ceil
                n = n // self.batch_size if self.drop_last else ceil(n / self.batch_size)
            return n
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)
