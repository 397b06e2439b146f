"""default_collate / default_convert (torch.utils.data's rules) and the
packing of a batch structure into flat tensors plus meta bytes for the
shared-memory rings."""
import collections.abc
import io
import pickle
import re
import sys
import threading

import ember
from ember import _C

__all__ = ["default_collate", "default_convert"]

_np_str_obj_array_pattern = re.compile(r"[SaUO]")

default_collate_err_msg_format = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}")


def _is_ndarray(x):
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def _is_np_scalar(x):
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.generic)


def default_convert(data):
    """Without batching: numpy arrays become tensors; containers are walked."""
    if isinstance(data, ember.Tensor):
        return data
    if _is_ndarray(data):
        if _np_str_obj_array_pattern.search(data.dtype.str) is not None:
            return data
        return ember.as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        try:
            return type(data)({key: default_convert(data[key]) for key in data})
        except TypeError:
            return {key: default_convert(data[key]) for key in data}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data


def default_collate(batch):
    """Stacks a list of samples into a batch: tensors along a new dim 0
    (straight into shared memory inside a worker), numbers into tensors,
    dicts / tuples / lists field by field (tuples become lists)."""
    elem = batch[0]
    if isinstance(elem, ember.Tensor):
        return _C._dl_stack(batch)
    if _is_ndarray(elem):
        if _np_str_obj_array_pattern.search(elem.dtype.str) is not None:
            raise TypeError(default_collate_err_msg_format.format(elem.dtype))
        return default_collate([ember.as_tensor(b) for b in batch])
    if _is_np_scalar(elem):
        return ember.as_tensor(__import__("numpy").array(batch))
    if isinstance(elem, float):
        return ember.tensor(batch, dtype=ember.float64)
    if isinstance(elem, int):
        return ember.tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        try:
            return type(elem)({key: default_collate([d[key] for d in batch]) for key in elem})
        except TypeError:
            return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        it = iter(batch)
        elem_size = len(next(it))
        if not all(len(e) == elem_size for e in it):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = list(zip(*batch))
        if isinstance(elem, tuple):
            return [default_collate(samples) for samples in transposed]
        try:
            return type(elem)([default_collate(samples) for samples in transposed])
        except TypeError:
            return [default_collate(samples) for samples in transposed]
    raise TypeError(default_collate_err_msg_format.format(type(elem)))


# ---- batches through the rings: flat tensors + pickled structure ------------------------------

class _Pickler(pickle.Pickler):
    def __init__(self, f, tensors):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._tensors = tensors

    def persistent_id(self, obj):
        if isinstance(obj, ember.Tensor):
            self._tensors.append(obj)
            return len(self._tensors) - 1
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, tensors):
        super().__init__(f)
        self._tensors = tensors

    def persistent_load(self, pid):
        return self._tensors[pid]


def _pack(batch):
    """batch -> (list of tensors, meta bytes or None). A plain list of
    tensors (the usual batch) needs no meta."""
    if type(batch) is list and all(type(t) is ember.Tensor for t in batch):
        return batch, None
    tensors = []
    buf = io.BytesIO()
    _Pickler(buf, tensors).dump(batch)
    return tensors, buf.getvalue()


# Without workers a batch never leaves the process: it is handed back as
# the same object, as torch's (nothing pickled, so anything can be in it,
# tensors on any device too). The meta then holds a key into this
# thread's table of batches between collate and next(), which runs them
# back to back; a next() that fails drops what it left there.
_REF = b"\0ref"
_in_process = threading.local()


def _in_process_mark():
    """The key the next batch packed in-process gets (keys only grow)."""
    return _in_process.__dict__.get("next", 0)


def _pack_in_process(batch):
    table = _in_process.__dict__.setdefault("batches", {})
    key = _in_process.__dict__.get("next", 0)
    _in_process.next = key + 1
    table[key] = batch
    return [], _REF + key.to_bytes(8, "little")


def _forget_in_process(mark):
    """Drops the batches packed since mark and not handed out."""
    table = _in_process.__dict__.get("batches")
    for key in [k for k in table or () if k >= mark]:
        del table[key]


def _unpack(tensors, meta):
    if meta is None:
        return list(tensors)
    if meta[:len(_REF)] == _REF:
        return _in_process.batches.pop(int.from_bytes(meta[len(_REF):], "little"))
    return _Unpickler(io.BytesIO(meta), tensors).load()
