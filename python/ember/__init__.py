"""ember: a PyTorch-style deep-learning system with a C core.

    import ember
    x = ember.randn(64, 784)
    w = ember.randn(784, 10, requires_grad=True)
    loss = (x @ w).log_softmax(-1).mean()
    loss.backward()          # w.grad holds d loss / d w

Names follow PyTorch: a script written for ``torch`` runs with ``import
ember as torch`` for what ember implements. Tensors, ops and autograd live
in the C extension ``ember._C``; ``ember.nn``, ``ember.optim``,
``ember.utils.data``, ``ember.distributed`` and ``ember.multiprocessing``
are imported on first use.
"""
import builtins as _builtins
import importlib as _importlib
import sys as _sys
import types as _types

from ember import _C
from ember._C import Tensor, Size, dtype, device, Generator, default_generator  # noqa: F401

__version__ = _C.__version__

# Every public name of _C: functions (ember.add, ember.zeros, ...) and the
# dtypes with their aliases (ember.float32, ember.float, ember.long, ...).
for _name in dir(_C):
    if not _name.startswith("_"):
        globals()[_name] = getattr(_C, _name)
del _name

from ember import _tensor  # noqa: E402  (installs Python-level Tensor methods)
from ember._tensor import (isclose, tril, triu, roll, diag, trace, argsort, sort, topk,  # noqa: E402,F401
                           normal, unique)
from ember import autograd  # noqa: E402,F401
from ember.autograd.grad_mode import (no_grad, enable_grad, set_grad_enabled,  # noqa: E402,F401
                                      inference_mode, is_grad_enabled)

globals().update(_tensor.legacy_types)
from ember import multiprocessing as _multiprocessing  # noqa: E402  (Tensor.share_memory_, is_shared)
diagonal = _tensor.diagonal_
return_types = _types.SimpleNamespace(max=_C._return_type_max, min=_C._return_type_min,
                                      sort=_tensor._SortResult, topk=_tensor._TopkResult)
concat = _C.cat

# ---- small PyTorch names ----------------------------------------------------------------------


def is_tensor(obj):
    """True when obj is an ember.Tensor."""
    return isinstance(obj, Tensor)


def is_floating_point(input):
    return input.is_floating_point()


def numel(input):
    return input.numel()


def from_numpy_copy(a):
    """A copy of a NumPy array as a tensor (ember.tensor(a) does the same)."""
    return _C.tensor(a)


def promote_types(type1, type2):
    """The dtype both convert to under PyTorch's promotion rules."""
    return (_C.zeros((), dtype=type1) + _C.zeros((), dtype=type2)).dtype


def result_type(tensor1, tensor2):
    """The dtype of an elementwise op between the two (tensors or numbers)."""
    def probe(x):
        return _C.zeros([1] * x.ndim, dtype=x.dtype) if isinstance(x, Tensor) else x

    a, b = probe(tensor1), probe(tensor2)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = _C.tensor(a)
    return (a + b).dtype if isinstance(a, Tensor) else (b + a).dtype


def use_deterministic_algorithms(mode, *, warn_only=False):
    """ember's CPU kernels are deterministic; accepted for compatibility."""


def set_printoptions(*args, **kwargs):
    """Accepted for compatibility; ember prints with PyTorch's defaults."""


class finfo:
    """Machine limits of a floating dtype (bits, eps, max, min, tiny, resolution)."""
    _TABLE = {
        "float32": (32, 1.1920928955078125e-07, 3.4028234663852886e+38, 1.1754943508222875e-38, 1e-06),
        "float64": (64, 2.220446049250313e-16, 1.7976931348623157e+308, 2.2250738585072014e-308, 1e-15),
        "float16": (16, 0.0009765625, 65504.0, 6.103515625e-05, 0.001),
        "bfloat16": (16, 0.0078125, 3.3895313892515355e+38, 1.1754943508222875e-38, 0.01),
    }

    def __init__(self, type=None):
        type = get_default_dtype() if type is None else type
        name = repr(type)[len("ember."):]
        if name not in self._TABLE:
            raise TypeError(f"finfo(): {type} is not a floating point dtype")
        self.dtype = name
        self.bits, self.eps, self.max, self.tiny, self.resolution = self._TABLE[name]
        self.min = -self.max
        self.smallest_normal = self.tiny

    def __repr__(self):
        return (f"finfo(resolution={self.resolution}, min={self.min:.6g}, max={self.max:.6g}, "
                f"eps={self.eps:.6g}, smallest_normal={self.tiny:.6g}, tiny={self.tiny:.6g}, "
                f"dtype={self.dtype})")


class iinfo:
    """Limits of an integer dtype (bits, min, max)."""

    def __init__(self, type):
        name = repr(type)[len("ember."):]
        bits = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "bool": 8}.get(name)
        if bits is None:
            raise TypeError(f"iinfo(): {type} is not an integer dtype")
        self.dtype, self.bits = name, bits
        signed = name.startswith("int")
        self.min = -(1 << (bits - 1)) if signed else 0
        self.max = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        if name == "bool":
            self.max = 1

    def __repr__(self):
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"


class _MemoryFormat:
    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return "ember." + self._name


class _Layout(_MemoryFormat):
    pass


contiguous_format = _MemoryFormat("contiguous_format")
preserve_format = _MemoryFormat("preserve_format")
channels_last = _MemoryFormat("channels_last")
strided = _Layout("strided")

# ---- ember.cuda, ember.backends -------------------------------------------------------------

from ember import cuda  # noqa: E402


class _CudaMatmul:
    """ember.backends.cuda.matmul.allow_tf32: True when float32 GPU matmuls
    may use TF32 (set_float32_matmul_precision "high" or "medium")."""

    @property
    def allow_tf32(self):
        return _C.get_float32_matmul_precision() != "highest"

    @allow_tf32.setter
    def allow_tf32(self, on):
        _C.set_float32_matmul_precision("high" if on else "highest")


backends = _types.ModuleType("ember.backends")
backends.cuda = _types.SimpleNamespace(matmul=_CudaMatmul(),
                                       is_built=lambda: "CUDA: runtime" in _C._config())
backends.cudnn = _types.SimpleNamespace(benchmark=False, deterministic=False, enabled=True,
                                        is_available=_C._cudnn_is_available)
_sys.modules["ember.backends"] = backends

# ---- lazily imported sub-packages -------------------------------------------------------------

# ember.__config__.show(): the build and run-time configuration (BLAS and
# its kernels, threads, CUDA), as torch.__config__.show() prints PyTorch's.
__config__ = _types.SimpleNamespace(show=_C._config, parallel_info=_C._config)

_LAZY_MODULES = ("nn", "optim", "utils", "datasets", "distributed", "multiprocessing",
                 "serialization")
# Names provided by sub-packages: ember.save/load come from ember.serialization.
_LAZY_NAMES = {"save": "serialization", "load": "serialization"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return _importlib.import_module("ember." + name)
    if name in _LAZY_NAMES:
        mod = _importlib.import_module("ember." + _LAZY_NAMES[name])
        return getattr(mod, name)
    raise AttributeError(f"module 'ember' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


del _builtins
