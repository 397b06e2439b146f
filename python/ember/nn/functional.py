"""ember.nn.functional: PyTorch's torch.nn.functional signatures over the
C functional layers and losses (nn/layers.h, nn/losses.h) and the core
activation ops."""
import warnings

import ember
from ember import _C

__all__ = [
    "linear", "bilinear", "conv1d", "conv2d", "conv_transpose2d", "max_pool2d",
    "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
    "group_norm", "embedding", "one_hot", "dropout", "pad", "relu", "relu_", "relu6", "leaky_relu",
    "leaky_relu_", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax", "softplus", "elu",
    "hardtanh", "normalize", "cosine_similarity", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "smooth_l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
]

_linear = _C._nn_linear


def linear(input, weight, bias=None):
    """y = x W^T + b."""
    return _linear(input, weight, bias)


def bilinear(input1, input2, weight, bias=None):
    return _C._nn_bilinear(input1, input2, weight, bias)


# ---- convolution -----------------------------------------------------------------------------

def _ntuple(v, n, name):
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return tuple(v) * n
        if len(v) != n:
            raise RuntimeError("expected {} to be a single integer value or a list of {} values to "
                               "match the convolution dimensions, but got {}={}".format(name, n, name, list(v)))
        return tuple(v)
    return (v,) * n


def _same_padding(input, weight, nd, dilation, stride):
    """PyTorch's padding='same': (pads for the C call, or None) plus an
    asymmetric pre-pad for F.pad when the total padding is odd."""
    if any(s != 1 for s in stride):
        raise RuntimeError("padding='same' is not supported for strided convolutions")
    sym, extra, need_pad = [], [], False
    for d in range(nd):
        total = dilation[d] * (weight.shape[2 + d] - 1)
        left = total // 2
        sym.append(left)
        extra.append(total - 2 * left)
        need_pad = need_pad or total % 2 != 0
    pads = None
    if need_pad:
        pads = []
        for d in reversed(range(nd)):
            pads += [0, extra[d]]
    return tuple(sym), pads


def _conv(kind, nd, input, weight, bias, stride, padding, dilation, groups):
    stride = _ntuple(stride, nd, "stride")
    dilation = _ntuple(dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * nd
        elif padding == "same":
            padding, pre = _same_padding(input, weight, nd, dilation, stride)
            if pre is not None:
                input = _C.pad(input, pre)
        else:
            raise RuntimeError("Invalid padding string: '{}'".format(padding))
    else:
        padding = _ntuple(padding, nd, "padding")
    return _C._nn_conv(kind, input, weight, bias, stride, padding, dilation, groups, (0,) * nd)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(1, 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv(2, 2, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _C._nn_conv(3, input, weight, bias, _ntuple(stride, 2, "stride"),
                       _ntuple(padding, 2, "padding"), _ntuple(dilation, 2, "dilation"), groups,
                       _ntuple(output_padding, 2, "output_padding"))


# ---- pooling -----------------------------------------------------------------------------------

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    if stride is not None and isinstance(stride, (tuple, list)) and len(stride) == 0:
        stride = None
    return _C._nn_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=True):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if divisor_override is not None:
        raise NotImplementedError("avg_pool2d: divisor_override is not supported by ember")
    if stride is not None and isinstance(stride, (tuple, list)) and len(stride) == 0:
        stride = None
    return _C._nn_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def adaptive_avg_pool2d(input, output_size):
    if isinstance(output_size, list):
        output_size = tuple(output_size)
    return _C._nn_adaptive_avg_pool2d(input, output_size)


# ---- normalisation ----------------------------------------------------------------------------------

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    return _C._nn_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _C._nn_layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    return _C._nn_group_norm(input, num_groups, weight, bias, eps)


# ---- embedding, dropout, padding ------------------------------------------------------------------------

def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not "
                                  "supported by ember")
    if padding_idx is not None:
        if padding_idx > 0:
            assert padding_idx < weight.size(0), "Padding_idx must be within num_embeddings"
        elif padding_idx < 0:
            assert padding_idx >= -weight.size(0), "Padding_idx must be within num_embeddings"
            padding_idx = weight.size(0) + padding_idx
    return _C._nn_embedding(input, weight, padding_idx)


def one_hot(tensor, num_classes=-1):
    return _C.one_hot(tensor, num_classes)


def dropout(input, p=0.5, training=True, inplace=False):
    if p < 0.0 or p > 1.0:
        raise ValueError("dropout probability has to be between 0 and 1, but got {}".format(p))
    out = _C._nn_dropout(input, p, training)
    if inplace and out is not input:
        with ember.no_grad():
            input.copy_(out)
        return input
    return out


def pad(input, pad, mode="constant", value=None):
    if mode != "constant":
        return _C.pad(input, pad, mode, value)
    return _C.pad(input, pad, mode, value)


# ---- activations ------------------------------------------------------------------------------------------

def relu(input, inplace=False):
    return input.relu_() if inplace else _C.relu(input)


def relu_(input):
    return input.relu_()


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _C.leaky_relu(input, negative_slope, inplace)


def leaky_relu_(input, negative_slope=0.01):
    return _C.leaky_relu(input, negative_slope, True)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError("approximate argument must be either none or tanh.")
    return _C.gelu(input, approximate=approximate)


def silu(input, inplace=False):
    return input.silu_() if inplace else _C.silu(input)


def tanh(input):
    return _C.tanh(input)


def sigmoid(input):
    return _C.sigmoid(input)


def _get_softmax_dim(name, ndim, stacklevel):
    warnings.warn("Implicit dimension choice for {} has been deprecated. Change the call to include "
                  "dim=X as an argument.".format(name), stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dim is None:
        dim = _get_softmax_dim("softmax", input.dim(), _stacklevel)
    if dtype is not None:
        return _C.softmax(input, dim, dtype=dtype)
    return _C.softmax(input, dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dim is None:
        dim = _get_softmax_dim("log_softmax", input.dim(), _stacklevel)
    if dtype is not None:
        return _C.log_softmax(input, dim, dtype=dtype)
    return _C.log_softmax(input, dim)


def softplus(input, beta=1, threshold=20):
    return _C.softplus(input, beta, threshold)


def elu(input, alpha=1.0, inplace=False):
    out = _C.elu(input, alpha)
    if inplace:
        with ember.no_grad():
            input.copy_(out)
        return input
    return out


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    out = _C.hardtanh(input, min_val, max_val)
    if inplace:
        with ember.no_grad():
            input.copy_(out)
        return input
    return out


def normalize(input, p=2.0, dim=1, eps=1e-12):
    denom = input.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(input)
    return input / denom


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    w12 = (x1 * x2).sum(dim)
    n1 = (x1 * x1).sum(dim)
    n2 = (x2 * x2).sum(dim)
    return w12 / ((n1 * n2).clamp_min(eps * eps)).sqrt()


# ---- losses -------------------------------------------------------------------------------------------------

def _legacy_reduction(size_average, reduce):
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='{}' "
                  "instead.".format("mean"), stacklevel=3)
    if size_average is None:
        size_average = True
    if reduce is None:
        reduce = True
    if size_average and reduce:
        return "mean"
    if reduce:
        return "sum"
    return "none"


def _reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        return _legacy_reduction(size_average, reduce)
    return reduction


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    return _C._nn_cross_entropy(input, target, weight, ignore_index,
                                _reduction(size_average, reduce, reduction), label_smoothing)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    return _C._nn_nll_loss(input, target, weight, ignore_index,
                           _reduction(size_average, reduce, reduction))


def _check_sizes(name, input, target):
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn("Using a target size ({}) that is different to the input size ({}). This will "
                      "likely lead to incorrect results due to broadcasting. Please ensure they have "
                      "the same size.".format(target.size(), input.size()), stacklevel=3)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    _check_sizes("mse_loss", input, target)
    return _C._nn_mse_loss(input, target, _reduction(size_average, reduce, reduction))


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    _check_sizes("l1_loss", input, target)
    return _C._nn_l1_loss(input, target, _reduction(size_average, reduce, reduction))


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    _check_sizes("smooth_l1_loss", input, target)
    return _C._nn_smooth_l1_loss(input, target, _reduction(size_average, reduce, reduction), beta)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError("Using a target size ({}) that is different to the input size ({}) is "
                         "deprecated. Please ensure they have the same size.".format(
                             target.size(), input.size()))
    return _C._nn_binary_cross_entropy(input, target, weight,
                                       _reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError("Target size ({}) must be the same as input size ({})".format(
            target.size(), input.size()))
    return _C._nn_binary_cross_entropy_with_logits(input, target, weight,
                                                   _reduction(size_average, reduce, reduction),
                                                   pos_weight)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    reduction = _reduction(size_average, reduce, reduction)
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with the "
                      "KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.")
    return _C._nn_kl_div(input, target, reduction, log_target)
