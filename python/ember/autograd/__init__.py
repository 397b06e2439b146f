"""ember.autograd: backward, grad, grad mode, custom Functions.

ember records a graph as ops run on tensors that require grad; backward()
walks it in dependency order (see autograd/autograd.h). Higher-order
gradients (create_graph=True) are not supported."""
from ember import _C
from ember.autograd.grad_mode import (enable_grad, inference_mode, is_grad_enabled, no_grad,
                                      set_grad_enabled)
from ember.autograd.function import Function, FunctionCtx, once_differentiable
from ember.autograd import function, grad_mode  # noqa: F401

__all__ = ["backward", "grad", "Function", "FunctionCtx", "no_grad", "enable_grad",
           "set_grad_enabled", "inference_mode", "is_grad_enabled", "Variable", "Node",
           "once_differentiable"]

Node = _C._Node


def _as_tuple(x):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return (x,)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
             grad_variables=None, inputs=None):
    """Accumulates d(sum of tensors * grad_tensors)/d(leaf) into leaf.grad.

    grad_tensors may be None for one-element tensors. retain_graph keeps the
    graph for another backward. inputs limits accumulation to those tensors."""
    if grad_variables is not None:
        grad_tensors = grad_variables
    tensors = _as_tuple(tensors)
    grad_tensors = _as_tuple(grad_tensors)
    if retain_graph is None:
        retain_graph = create_graph
    _C._backward(tensors, grad_tensors, retain_graph, create_graph, None,
                 _as_tuple(inputs))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=False, is_grads_batched=False):
    """The gradients of outputs with respect to inputs, as a tuple (one per
    input; None for an unused input when allow_unused). .grad is untouched."""
    if is_grads_batched:
        raise NotImplementedError("grad: is_grads_batched is not supported by ember")
    if retain_graph is None:
        retain_graph = create_graph
    return _C._grad(_as_tuple(outputs), _as_tuple(inputs), _as_tuple(grad_outputs),
                    retain_graph, create_graph, only_inputs, allow_unused)


def Variable(data, requires_grad=False):
    """The deprecated Variable wrapper: returns data (requires_grad set)."""
    if requires_grad:
        data.requires_grad_(True)
    return data
