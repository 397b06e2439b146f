"""ember.datasets: MNIST / Fashion-MNIST from IDX files, and transforms."""
from ember.datasets.mnist import MNIST, FashionMNIST
from ember.datasets import transforms

__all__ = ["MNIST", "FashionMNIST", "transforms"]
