"""ember.nn.parallel: DistributedDataParallel."""
from ember.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
