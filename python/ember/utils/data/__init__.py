"""ember.utils.data: datasets, samplers, collation and the DataLoader
(torch.utils.data's names) over ember's C data loader."""
from ember.utils.data.dataset import (Dataset, IterableDataset, TensorDataset, Subset,
                                      ConcatDataset, ChainDataset, random_split)
from ember.utils.data.sampler import (Sampler, SequentialSampler, RandomSampler,
                                      SubsetRandomSampler, WeightedRandomSampler, BatchSampler,
                                      DistributedSampler)
from ember.utils.data._collate import default_collate, default_convert
from ember.utils.data.dataloader import DataLoader, get_worker_info, WorkerInfo

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset",
           "random_split", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler", "DistributedSampler", "default_collate",
           "default_convert", "DataLoader", "get_worker_info", "WorkerInfo"]
