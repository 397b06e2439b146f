"""Python-level parts of ember.Tensor: pickling, deepcopy, NumPy protocol
hooks, legacy type names, and a few composite ops built from core ops.

ember.Tensor is a heap type defined in C (python/tensor.c); the functions
here are attached to it as attributes when ember is imported."""
import builtins
import copyreg  # noqa: F401  (pickle support lives in __reduce_ex__)

from ember import _C

Tensor = _C.Tensor

_LEGACY_NAMES = {
    "float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
    "bfloat16": "BFloat16Tensor", "int8": "CharTensor", "int16": "ShortTensor",
    "int32": "IntTensor", "int64": "LongTensor", "uint8": "ByteTensor", "bool": "BoolTensor",
}
_BY_LEGACY = {v: k for k, v in _LEGACY_NAMES.items()}


def _dtype_name(dt):
    return repr(dt)[len("ember."):]


# ---- pickling and copying ------------------------------------------------------------------


def _rebuild_tensor(cls, data, dtype_name, shape, requires_grad, state=None):
    t = _C._from_bytes(data, getattr(_C, dtype_name), shape)
    if cls is not Tensor:
        t = Tensor._make_subclass(cls, t, requires_grad)
    elif requires_grad:
        t.requires_grad_(True)
    if state:
        t.__dict__.update(state)
    return t


def _reduce_ex(self, proto):
    state = self.__dict__
    return (_rebuild_tensor,
            (type(self), self.detach().cpu()._to_bytes(), _dtype_name(self.dtype),
             tuple(self.shape), self.requires_grad, dict(state) if state else None))


def _deepcopy(self, memo):
    import copy
    if not self.is_leaf:
        raise RuntimeError(
            "Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
            "protocol at the moment")
    if id(self) in memo:
        return memo[id(self)]
    with _no_grad():
        new = self.clone()
    if type(self) is not Tensor:
        new = Tensor._make_subclass(type(self), new, self.requires_grad)
    elif self.requires_grad:
        new.requires_grad_(True)
    memo[id(self)] = new
    if self.grad is not None:
        new.grad = copy.deepcopy(self.grad, memo)
    if self.__dict__:
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return new


class _no_grad:
    def __enter__(self):
        self.prev = _C._set_grad_enabled(False)

    def __exit__(self, *exc):
        _C._set_grad_enabled(self.prev)


# ---- NumPy protocol ----------------------------------------------------------------------------


def _array(self, dtype=None):
    a = self.numpy()
    return a if dtype is None else a.astype(dtype, copy=False)


def _array_wrap(self, array, context=None):
    if array.dtype.kind == "b" or array.dtype.kind in "iuf":
        return _C.from_numpy(array)
    return array


# ---- legacy type names -----------------------------------------------------------------------


def _type(self, dtype=None, non_blocking=False, **kwargs):
    if dtype is None:
        return "ember." + _LEGACY_NAMES[_dtype_name(self.dtype)]
    if isinstance(dtype, type) and isinstance(getattr(dtype, "dtype", None), _C.dtype):
        dtype = dtype.dtype  # a legacy class: t.type(ember.FloatTensor)
    if isinstance(dtype, str):
        name = dtype.rsplit(".", 1)[-1]
        if name not in _BY_LEGACY:
            raise ValueError(f"invalid type: '{dtype}'")
        dtype = getattr(_C, _BY_LEGACY[name])
    return self.to(dtype)


class _LegacyMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor) and obj.dtype == cls.dtype


def _legacy_class(dtype_name):
    dt = getattr(_C, dtype_name)

    def __new__(cls, *args, device=None):
        if len(args) == 1 and not isinstance(args[0], int):
            return _C.tensor(args[0], dtype=dt, device=device)
        return _C.empty(*args, dtype=dt, device=device)

    return _LegacyMeta(_LEGACY_NAMES[dtype_name], (), {"__new__": __new__, "dtype": dt,
                                                       "__module__": "ember"})


legacy_types = {name: _legacy_class(dt) for dt, name in _LEGACY_NAMES.items()}


# ---- composite ops -------------------------------------------------------------------------------


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol * |other| elementwise (bool tensor)."""
    if not isinstance(other, Tensor):
        other = _C.tensor(other, dtype=input.dtype)
    with _no_grad():
        close = (input - other).abs() <= atol + rtol * other.abs()
        close = close | (input == other)
        if equal_nan:
            close = close | (input.isnan() & other.isnan())
    return close


def _tri(input, diagonal, upper):
    if input.ndim < 2:
        raise RuntimeError("tril/triu: input tensor must have at least 2 dimensions")
    n, m = input.shape[-2], input.shape[-1]
    rows = _C.arange(n).unsqueeze(1)
    cols = _C.arange(m).unsqueeze(0)
    keep = (cols - rows >= diagonal) if upper else (cols - rows <= diagonal)
    return input.masked_fill(~keep, 0)


def tril(input, diagonal=0):
    """The lower triangle of the last two dims (others zeroed)."""
    return _tri(input, diagonal, False)


def triu(input, diagonal=0):
    """The upper triangle of the last two dims (others zeroed)."""
    return _tri(input, diagonal, True)


def roll(input, shifts, dims=None):
    """Rolls elements along dims (flattened when dims is None)."""
    if dims is None:
        return roll(input.flatten(), shifts, 0).view(input.shape)
    if isinstance(shifts, int):
        shifts, dims = (shifts,), (dims,) if isinstance(dims, int) else tuple(dims)
    out = input
    for s, d in zip(shifts, dims):
        n = out.shape[d]
        if n == 0:
            continue
        s %= n
        if s:
            out = _C.cat([out.narrow(d, n - s, s), out.narrow(d, 0, n - s)], d)
    return out


def diag(input, diagonal=0):
    """1-D: a matrix with input on a diagonal; 2-D: that diagonal."""
    if input.ndim == 1:
        n = input.shape[0] + builtins.abs(diagonal)
        out = _C.zeros(n, n, dtype=input.dtype)
        r = _C.arange(input.shape[0])
        rows, cols = (r, r + diagonal) if diagonal >= 0 else (r - diagonal, r)
        return out.index_put((rows, cols), input)
    if input.ndim == 2:
        return diagonal_(input, diagonal)
    raise RuntimeError("diag(): Supports 1D or 2D tensors. Got %dD" % input.ndim)


def diagonal_(input, offset=0, dim1=0, dim2=1):
    """The diagonal of dims (dim1, dim2) as a view (moved to the last dim)."""
    if dim1 < 0:
        dim1 += input.ndim
    if dim2 < 0:
        dim2 += input.ndim
    n1, n2 = input.shape[dim1], input.shape[dim2]
    s1, s2 = input.stride(dim1), input.stride(dim2)
    if offset >= 0:
        length = builtins.max(0, builtins.min(n1, n2 - offset))
        start = offset * s2
    else:
        length = builtins.max(0, builtins.min(n1 + offset, n2))
        start = -offset * s1
    sizes = [s for i, s in enumerate(input.shape) if i not in (dim1, dim2)] + [length]
    strides = [s for i, s in enumerate(input.stride()) if i not in (dim1, dim2)] + [s1 + s2]
    return input.as_strided(sizes, strides, input.storage_offset() + (start if length else 0))


def trace(input):
    """The sum of the main diagonal of a matrix."""
    return diagonal_(input).sum()


def _argsort_np(input, dim, descending):
    import numpy as np
    a = input.detach().cpu().numpy()
    if descending:
        b = a.astype(np.float64) if a.dtype.kind in "bu" else a
        idx = np.argsort(-b, axis=dim, kind="stable")
    else:
        idx = np.argsort(a, axis=dim, kind="stable")
    return _C.from_numpy(np.ascontiguousarray(idx.astype(np.int64)))


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort input along dim (stable)."""
    if input.ndim == 0:
        return _C.zeros((), dtype=_C.int64)
    return _argsort_np(input, dim, descending)


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) sorted along dim; values are differentiable."""
    if input.ndim == 0:
        return _SortResult((input.clone(), _C.zeros((), dtype=_C.int64)))
    idx = _argsort_np(input, dim, descending)
    return _SortResult((input.gather(dim, idx), idx))


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (smallest) entries along dim."""
    if input.ndim == 0:
        return _TopkResult((input.clone(), _C.zeros((), dtype=_C.int64)))
    n = input.shape[dim]
    if k < 0 or k > n:
        raise RuntimeError(f"selected index k out of range (k={k}, dimension size {n})")
    idx = _argsort_np(input, dim, largest).narrow(dim, 0, k).contiguous()
    return _TopkResult((input.gather(dim, idx), idx))


def _rt_repr(self):
    return f"ember.return_types.{type(self).__name__}(\nvalues={self[0]!r},\nindices={self[1]!r})"


class _ReturnType(tuple):
    """(values, indices) as PyTorch's torch.return_types.*."""
    __slots__ = ()
    __repr__ = _rt_repr

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


_SortResult = type("sort", (_ReturnType,), {"__slots__": (), "__module__": "ember.return_types"})
_TopkResult = type("topk", (_ReturnType,), {"__slots__": (), "__module__": "ember.return_types"})
for _t in (_C._return_type_max, _C._return_type_min):
    _t.__repr__ = _rt_repr
del _t


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values (sorted), optionally with inverse indices and
    counts. Not differentiable."""
    import numpy as np
    if dim is not None:
        raise NotImplementedError("unique(dim=...) is not supported by ember")
    a = input.detach().cpu().numpy()
    vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    out = _C.from_numpy(np.ascontiguousarray(vals)).clone()
    if not (return_inverse or return_counts):
        return out
    res = [out]
    if return_inverse:
        res.append(_C.from_numpy(inv.reshape(a.shape).astype(np.int64)))
    if return_counts:
        res.append(_C.from_numpy(counts.astype(np.int64)))
    return tuple(res)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None,
           requires_grad=False, out=None):
    """Normal samples: number mean/std with a size, or tensors (broadcast)."""
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        shape = _C.broadcast_shapes(tuple(getattr(mean, "shape", ())), tuple(getattr(std, "shape", ())))
        like = mean if isinstance(mean, Tensor) else std
        z = _C.randn(shape, dtype=like.dtype, generator=generator)
        return z * std + mean
    if size is None:
        raise TypeError("normal(): size is required when mean and std are numbers")
    z = _C.randn(size, generator=generator, dtype=dtype, device=device)
    r = z * std + mean
    if requires_grad:
        r.requires_grad_(True)
    if out is not None:
        out.copy_(r)
        return out
    return r


def _new(self, *args, **kwargs):
    """Legacy Tensor.new: new(sizes...) -> uninitialised; new(data) -> a copy
    of data; both with self's dtype and device."""
    if len(args) == 1 and not isinstance(args[0], int) and not isinstance(args[0], _C.Size):
        return self.new_tensor(args[0], **kwargs)
    return self.new_empty(*args, **kwargs) if args else self.new_empty(0, **kwargs)


def _record_stream(self, stream):
    """Marks this CUDA tensor's memory as used by ``stream``: once freed, it
    is reused only after the work queued on ``stream`` by then."""
    _C._cuda_record_stream(self, stream)


def _install():
    Tensor.new = _new
    Tensor.__reduce_ex__ = _reduce_ex
    Tensor.__deepcopy__ = _deepcopy
    Tensor.__array__ = _array
    Tensor.__array_wrap__ = _array_wrap
    Tensor.__array_priority__ = 1000
    Tensor.type = _type
    Tensor.isclose = isclose
    Tensor.tril = tril
    Tensor.triu = triu
    Tensor.roll = roll
    Tensor.diag = diag
    Tensor.diagonal = diagonal_
    Tensor.trace = trace
    Tensor.argsort = argsort
    Tensor.sort = sort
    Tensor.topk = topk
    Tensor.unique = unique
    Tensor.__reversed__ = lambda self: self.flip(0) if self.ndim else self
    Tensor.record_stream = _record_stream
    Tensor.is_tensor_like = True
    Tensor.__module__ = "ember"


_install()
