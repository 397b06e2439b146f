"""Datasets (torch.utils.data's): Dataset, IterableDataset, TensorDataset,
Subset, ConcatDataset, ChainDataset, random_split.

A dataset that C can read without Python (TensorDataset, and Subset /
ConcatDataset of such, FashionMNIST without transforms) returns its C
object from ``_c_dataset()``; the DataLoader then loads and collates in C
(in its workers too) without running Python per sample."""
import bisect
import math
import warnings

import ember
from ember import _C
from ember.utils.data.sampler import _indices

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset",
           "random_split"]


class Dataset:
    """A map-style dataset: __getitem__(index) and __len__."""

    def __getitem__(self, index):
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other):
        return ConcatDataset([self, other])

    def _c_dataset(self):
        """The C dataset equivalent to this one as it is now (rebuilt when
        what it reads from was reassigned or changed), or None."""
        return None


class IterableDataset(Dataset):
    """A stream of samples: __iter__. With workers, each worker iterates its
    own copy: shard with ember.utils.data.get_worker_info()."""

    def __iter__(self):
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other):
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Sample i is (t[i] for t in tensors)."""

    def __init__(self, *tensors):
        assert all(tensors[0].size(0) == tensor.size(0) for tensor in tensors), \
            "Size mismatch between tensors"
        self.tensors = tensors
        self._c = None

    def __getitem__(self, index):
        return tuple(tensor[index] for tensor in self.tensors)

    def __len__(self):
        return self.tensors[0].size(0)

    def _c_dataset(self):
        if self._c is None or self._c_src is not self.tensors:
            self._c = _C._dl_tensor_dataset(*self.tensors)
            self._c_src = self.tensors  # held: its tensors' ids cannot be reused
        return self._c


class Subset(Dataset):
    """The samples of dataset at indices."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices
        self._c = None

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)

    def _c_dataset(self):
        inner = self.dataset._c_dataset() if isinstance(self.dataset, Dataset) else None
        if inner is None:
            return None
        indices = _indices(self.indices, "Subset")
        if self._c is None or self._c_inner is not inner or self._c_indices != indices:
            self._c = _C._dl_subset(inner, indices)
            self._c_inner, self._c_indices = inner, indices
        return self._c


class ConcatDataset(Dataset):
    """The samples of several map-style datasets one after the other."""

    @staticmethod
    def cumsum(sequence):
        r, s = [], 0
        for e in sequence:
            s += len(e)
            r.append(s)
        return r

    def __init__(self, datasets):
        self.datasets = list(datasets)
        assert len(self.datasets) > 0, "datasets should not be an empty iterable"
        for d in self.datasets:
            assert not isinstance(d, IterableDataset), "ConcatDataset does not support IterableDataset"
        self.cumulative_sizes = self.cumsum(self.datasets)
        self._c = None

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return self.datasets[dataset_idx][sample_idx]

    def _c_dataset(self):
        parts = [d._c_dataset() if isinstance(d, Dataset) else None for d in self.datasets]
        if any(p is None for p in parts):
            return None
        if self._c is None or len(parts) != len(self._c_parts) or \
                any(a is not b for a, b in zip(parts, self._c_parts)):
            self._c = _C._dl_concat(parts)
            self._c_parts = parts
        return self._c


class ChainDataset(IterableDataset):
    """Iterable datasets chained one after the other."""

    def __init__(self, datasets):
        self.datasets = datasets

    def __iter__(self):
        for d in self.datasets:
            assert isinstance(d, IterableDataset), "ChainDataset only supports IterableDataset"
            for x in d:
                yield x

    def __len__(self):
        total = 0
        for d in self.datasets:
            assert isinstance(d, IterableDataset), "ChainDataset only supports IterableDataset"
            total += len(d)
        return total


def random_split(dataset, lengths, generator=None):
    """Non-overlapping Subsets of the given lengths (or fractions summing to
    1) from one randperm drawn from generator (default: ember's)."""
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        subset_lengths = []
        for i, frac in enumerate(lengths):
            if frac < 0 or frac > 1:
                raise ValueError("Fraction at index {} is not between 0 and 1".format(i))
            subset_lengths.append(int(math.floor(len(dataset) * frac)))
        remainder = len(dataset) - sum(subset_lengths)
        for i in range(remainder):
            subset_lengths[i % len(subset_lengths)] += 1
        lengths = subset_lengths
        for i, length in enumerate(lengths):
            if length == 0:
                warnings.warn("Length of split at index {} is 0. This might result in an empty "
                              "dataset.".format(i))
    if sum(lengths) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    kw = {} if generator is None else {"generator": generator}
    indices = ember.randperm(sum(lengths), **kw).tolist()
    out, offset = [], 0
    for length in lengths:
        out.append(Subset(dataset, indices[offset:offset + length]))
        offset += length
    return out
