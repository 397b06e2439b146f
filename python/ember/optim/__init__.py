"""ember.optim: optimizers (the update in C) and learning-rate schedulers."""
from ember.optim.optimizer import Optimizer
from ember.optim.optimizers import SGD, Adam, AdamW, RMSprop, Adagrad
from ember.optim import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
