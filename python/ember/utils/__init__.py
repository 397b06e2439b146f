"""ember.utils."""
from ember.utils import data

__all__ = ["data"]
