"""Samplers (torch.utils.data's), each backed by the C sampler of
dataloader/dataloader.h so that the DataLoader draws indices without
Python; a user-defined Sampler (Python __iter__) works too (the loader
wraps it)."""
import operator

from ember import _C

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler", "DistributedSampler"]


class Sampler:
    """Base class: yields dataset indices (or, for batch samplers, lists)."""

    _c = None

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        self._refresh()
        if self._c is not None:
            return iter(self._c)
        raise NotImplementedError

    def __len__(self):
        self._refresh()
        if self._c is not None:
            return len(self._c)
        raise TypeError("object of type '{}' has no len()".format(type(self).__name__))

    def _c_sampler(self, is_batch=False):
        """The C sampler (wrapping a Python one if needed)."""
        if self._c is not None:
            return self._c
        return _C._dl_sampler_python(self, is_batch)

    def _refresh(self):
        """Rebuilds the C sampler (self._c, a new object then) if what it
        was built from changed: a dataset that grew or shrank (torch's
        samplers read len() at each pass)."""


def _indices(indices, what):
    """indices as a list of ints; a float or other non-integer is an
    IndexError naming it (torch fails on it when indexing)."""
    out = []
    for pos, i in enumerate(indices):
        try:
            out.append(operator.index(i))
        except TypeError:
            raise IndexError("{}: index {!r} at position {} is not an integer".format(
                what, i, pos)) from None
    return out


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source
        self._refresh()

    def _refresh(self):
        n = len(self.data_source)
        if self._c is None or n != self._n:
            self._n = n
            self._c = _C._dl_sampler_sequential(n)


class RandomSampler(Sampler):
    """A random permutation (or num_samples draws with replacement); without
    a generator each pass draws a fresh seed from ember's default one."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.replacement, bool):
            raise TypeError("replacement should be a boolean value, but got "
                            "replacement={}".format(self.replacement))
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             "num_samples={}".format(self.num_samples))
        self._refresh()

    def _refresh(self):
        n = len(self.data_source)
        if self._c is None or n != self._n:
            self._n = n
            self._c = _C._dl_sampler_random(n, self.replacement, self._num_samples, self.generator)

    @property
    def num_samples(self):
        if self._num_samples is None:
            return len(self.data_source)
        return self._num_samples


class SubsetRandomSampler(Sampler):
    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = generator
        self._c = _C._dl_sampler_subset_random(_indices(indices, "SubsetRandomSampler"), generator)


class WeightedRandomSampler(Sampler):
    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             "num_samples={}".format(num_samples))
        if not isinstance(replacement, bool):
            raise ValueError("replacement should be a boolean value, but got "
                             "replacement={}".format(replacement))
        if hasattr(weights, "tolist"):
            weights = weights.tolist()
        weights = list(weights)
        if any(isinstance(w, (list, tuple)) for w in weights):
            raise ValueError("weights should be a 1d sequence but given weights have shape "
                             "({}, ...)".format(len(weights)))
        self.weights = [float(w) for w in weights]
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator
        self._c = _C._dl_sampler_weighted(self.weights, num_samples, replacement, generator)


class BatchSampler(Sampler):
    """Groups the indices of sampler into lists of batch_size."""

    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError("batch_size should be a positive integer value, but got "
                             "batch_size={}".format(batch_size))
        if not isinstance(drop_last, bool):
            raise ValueError("drop_last should be a boolean value, but got "
                             "drop_last={}".format(drop_last))
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._build()

    def _build(self):
        if isinstance(self.sampler, Sampler):
            inner = self.sampler._c_sampler(False)
        else:
            inner = _C._dl_sampler_python(self.sampler, False)
        self._inner = inner
        self._c = _C._dl_sampler_batch(inner, self.batch_size, self.drop_last)

    def _refresh(self):
        if isinstance(self.sampler, Sampler):
            self.sampler._refresh()
            if self.sampler._c is not None and self.sampler._c is not self._inner:
                self._build()


class DistributedSampler(Sampler):
    """The share of one rank: with shuffle, a permutation seeded with
    seed + epoch (call set_epoch each epoch), padded to a multiple of
    num_replicas by repeating its start (or its tail dropped with
    drop_last); rank r takes positions r, r + num_replicas, ..."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            import ember.distributed as dist
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError("Requires distributed package to be available")
            if num_replicas is None:
                num_replicas = dist.get_world_size()
            if rank is None:
                rank = dist.get_rank()
        if rank >= num_replicas or rank < 0:
            raise ValueError("Invalid rank {}, rank should be in the interval [0, {}]".format(
                rank, num_replicas - 1))
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        n = len(dataset)
        if self.drop_last and n % self.num_replicas != 0:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self._c = _C._dl_sampler_distributed(n, num_replicas, rank, shuffle, seed, drop_last)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch
        self._c.set_epoch(epoch)
