"""ember.nn.utils: gradient clipping and parameter/vector conversion."""
import ember
from ember import _C

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _params(parameters):
    if isinstance(parameters, ember.Tensor):
        return [parameters]
    return [p for p in parameters]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scales the gradients in place so that their total norm is at most
    max_norm; returns the total norm before clipping (a 0-dim tensor)."""
    ps = _params(parameters)
    if isinstance(norm_type, str) and norm_type != "inf":
        raise ValueError("norm_type must be a number or 'inf', got {!r}".format(norm_type))
    try:
        total = _C._clip_grad_norm_(ps, float(max_norm), norm_type, error_if_nonfinite)
    except ValueError as e:
        if "non-finite" in str(e):
            raise RuntimeError(str(e)) from None  # PyTorch's class for this error
        raise
    return ember.tensor(total)


def clip_grad_value_(parameters, clip_value):
    """Clamps every gradient in place to [-clip_value, clip_value]."""
    _C._clip_grad_value_(_params(parameters), float(clip_value))


def parameters_to_vector(parameters):
    return ember.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    if not isinstance(vec, ember.Tensor):
        raise TypeError("expected ember.Tensor, but got: {}".format(type(vec).__name__))
    pointer = 0
    for param in parameters:
        n = param.numel()
        param.data = vec[pointer:pointer + n].view_as(param).data
        pointer += n
