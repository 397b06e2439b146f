"""Custom differentiable functions written in Python.

    class Exp(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    y = Exp.apply(x)

forward runs with grad mode off; apply records one graph node
("ExpBackward") when an input requires grad. backward returns one gradient
(or None) per forward argument. Exceptions raised in forward or backward
propagate unchanged out of apply() / backward()."""
from ember import _C

__all__ = ["Function", "FunctionCtx", "once_differentiable"]

FunctionCtx = _C._FunctionCtx


class Function:
    """Base class of custom autograd functions (static forward/backward)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            "Legacy autograd function with non-static forward method is deprecated. "
            "Please use new-style autograd function with static forward method. "
            "(Example: https://pytorch.org/docs/stable/autograd.html#torch.autograd.Function)")

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError(
            "You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError(
            "You must implement either the backward or vjp method for your custom "
            "autograd.Function to use it with backward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        if kwargs:
            raise TypeError(f"{cls.__name__}.apply() takes positional arguments only")
        return _C._function_apply(cls, args)

    vjp = backward


def once_differentiable(fn):
    """Marks a backward as not twice differentiable (ember never records
    inside backward, so this is the identity)."""
    return fn
