"""ember.save / ember.load: state dicts (and nested dicts, lists and numbers
holding tensors, e.g. a checkpoint with a model, an optimizer and an epoch)
as safetensors files (nn/checkpoint.h: written atomically, hostile files
refused).

Every tensor is stored under a dotted name of its place in the structure
("model.fc.weight", "optimizer.state.0.momentum_buffer"), so the file
loads in any safetensors reader; the structure itself (dict key types,
lists, tuples, numbers, strings) rides in the header metadata as JSON
under "ember.structure". A file without that entry (written by another
tool) loads as an OrderedDict of its tensors in file order.
"""
from collections import OrderedDict
import json
import os

import ember
from ember import _C

__all__ = ["save", "load"]

_STRUCT_KEY = "ember.structure"


def _path(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(f))
    raise TypeError("ember.save/load take a file path (str or os.PathLike), not {}".format(
        type(f).__name__))


class _Flattener:
    def __init__(self):
        self.names, self.tensors, self.used = [], [], set()

    def name(self, path):
        base = ".".join(path) if path else "tensor"
        name, k = base, 1
        while name in self.used:
            name = "{}#{}".format(base, k)
            k += 1
        self.used.add(name)
        return name

    def walk(self, obj, path):
        if isinstance(obj, ember.Tensor):
            name = self.name(path)
            self.names.append(name)
            t = obj.detach()
            if t.device.type != "cpu":
                t = t.to("cpu")
            self.tensors.append(t)
            return {"T": name}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError("ember.save: dict keys must be str or int, got {!r}".format(k))
                items.append([k, self.walk(v, path + [str(k)])])
            return {"O" if isinstance(obj, OrderedDict) else "D": items}
        if isinstance(obj, (list, tuple)):
            seq = [self.walk(v, path + [str(i)]) for i, v in enumerate(obj)]
            return {"U" if isinstance(obj, tuple) else "L": seq}
        if isinstance(obj, ember.dtype):
            return {"dtype": repr(obj).split(".")[-1]}
        raise TypeError(
            "ember.save: cannot save an object of type {} (tensors, numbers, strings, None and "
            "dicts / lists / tuples of them)".format(type(obj).__name__))


def save(obj, f, metadata=None):
    """Saves a state dict (or a nested structure of tensors) to path f."""
    fl = _Flattener()
    skeleton = fl.walk(obj, [])
    meta = dict(metadata) if metadata else {}
    meta[_STRUCT_KEY] = json.dumps(skeleton)
    _C._safetensors_save(_path(f), fl.names, fl.tensors, meta)


def _rebuild(node, tensors):
    if isinstance(node, dict):
        if "T" in node and len(node) == 1:
            return tensors[node["T"]]
        if "D" in node:
            return {k: _rebuild(v, tensors) for k, v in node["D"]}
        if "O" in node:
            return OrderedDict((k, _rebuild(v, tensors)) for k, v in node["O"])
        if "L" in node:
            return [_rebuild(v, tensors) for v in node["L"]]
        if "U" in node:
            return tuple(_rebuild(v, tensors) for v in node["U"])
        if "dtype" in node:
            return getattr(ember, node["dtype"])
        raise ValueError("ember.load: malformed structure entry {!r}".format(node))
    return node


def load(f, map_location=None, weights_only=None):
    """Loads what ember.save wrote (or any safetensors file: then an
    OrderedDict of its tensors). map_location: a device (or None)."""
    path = _path(f)
    entries = _C._safetensors_load(path)
    tensors = OrderedDict(entries)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        tensors = OrderedDict((k, v.to(map_location)) for k, v in tensors.items())
    struct = _C._safetensors_metadata(path, _STRUCT_KEY)
    if struct is None:
        return tensors
    try:
        skeleton = json.loads(struct)
    except ValueError as e:
        raise ValueError("ember.load: {}: the '{}' metadata is not valid JSON ({})".format(
            path, _STRUCT_KEY, e)) from None
    try:
        return _rebuild(skeleton, tensors)
    except KeyError as e:
        raise ValueError("ember.load: {}: the structure names a tensor the file does not hold "
                         "({})".format(path, e)) from None
