"""ember.nn.init: in-place parameter initialisation (nn/init.h), as
torch.nn.init. Every function runs without autograd and returns its
tensor."""
from ember import _C

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "trunc_normal_"]


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity ("relu", "tanh", "leaky_relu", ...)."""
    return _C._init_calculate_gain(nonlinearity, param)


def _calculate_fan_in_and_fan_out(tensor):
    return _C._init_fans(tensor)


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _C._init_("uniform_", tensor, a, b, None, None, generator)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _C._init_("normal_", tensor, mean, std, None, None, generator)


def constant_(tensor, val):
    return _C._init_("constant_", tensor, val, None, None, None, None)


def ones_(tensor):
    return constant_(tensor, 1.0)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def eye_(tensor):
    if tensor.dim() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    import ember
    with ember.no_grad():
        tensor.zero_()
        n = min(tensor.shape[0], tensor.shape[1])
        for i in range(n):
            tensor[i, i] = 1
    return tensor


def xavier_uniform_(tensor, gain=1.0, generator=None):
    return _C._init_("xavier_uniform_", tensor, gain, None, None, None, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    return _C._init_("xavier_normal_", tensor, gain, None, None, None, generator)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return _C._init_("kaiming_uniform_", tensor, a, None, mode, nonlinearity, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return _C._init_("kaiming_normal_", tensor, a, None, mode, nonlinearity, generator)


def orthogonal_(tensor, gain=1, generator=None):
    return _C._init_("orthogonal_", tensor, gain, None, None, None, generator)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Normal(mean, std) truncated to [a, b] by resampling out-of-range
    values (PyTorch uses the inverse CDF; the distribution is the same)."""
    import ember
    with ember.no_grad():
        normal_(tensor, mean, std, generator)
        for _ in range(64):
            bad = (tensor < a) | (tensor > b)
            if not bool(bad.any()):
                break
            fresh = ember.empty_like(tensor)
            normal_(fresh, mean, std, generator)
            tensor.copy_(ember.where(bad, fresh, tensor))
        tensor.clamp_(a, b)
    return tensor
