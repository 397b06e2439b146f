"""ember.nn.Module, written in Python as torch.nn.Module.

Assigning a Parameter, a Module or a registered buffer to an attribute
registers it, in order, in ``_parameters`` / ``_modules`` / ``_buffers``.
Registered values are also mirrored in the instance ``__dict__``, so that
reading ``self.weight`` in a forward is a plain attribute lookup (PyTorch
goes through ``__getattr__``, which costs a failed lookup first).

Calling a module costs no more than calling its forward: every subclass
that does not define ``__call__`` itself gets ``__call__ = forward`` at
class creation ("fast" classes). Registering a forward hook on an instance,
assigning an instance attribute ``forward``, or defining ``__call__`` in a
subclass switches the classes concerned to the general ``_call_impl``
(hooks, ``self.forward``); a global hook switches every class. Together
with the mirroring this keeps a small model's step cheap from Python.
"""
from collections import OrderedDict, namedtuple
import itertools
import types

import ember
from ember.nn.parameter import Parameter

__all__ = ["Module", "register_module_forward_hook", "register_module_forward_pre_hook"]


def _addindent(s_, num_spaces):
    s = s_.split("\n")
    if len(s) == 1:
        return s_
    first = s.pop(0)
    s = [(num_spaces * " ") + line for line in s]
    return first + "\n" + "\n".join(s)


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class RemovableHandle:
    """Removes a hook from its dict (torch.utils.hooks.RemovableHandle)."""

    _next_id = 0

    def __init__(self, hooks_dict, module=None):
        self.hooks_dict = hooks_dict
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        self._module = module

    def remove(self):
        self.hooks_dict.pop(self.id, None)
        if self._module is not None:
            self._module._update_hooked()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.remove()


_global_forward_hooks = OrderedDict()
_global_forward_pre_hooks = OrderedDict()
_global_hooked = [False]


def _update_global_hooked():
    _global_hooked[0] = bool(_global_forward_hooks or _global_forward_pre_hooks)


class _GlobalHandle(RemovableHandle):
    def remove(self):
        self.hooks_dict.pop(self.id, None)
        _update_global_hooked()


def register_module_forward_pre_hook(hook):
    """A pre-hook run before every module's forward (hook(module, input))."""
    h = _GlobalHandle(_global_forward_pre_hooks)
    _global_forward_pre_hooks[h.id] = hook
    _update_global_hooked()
    _all_slow()
    return h


def register_module_forward_hook(hook):
    """A hook run after every module's forward (hook(module, input, output))."""
    h = _GlobalHandle(_global_forward_hooks)
    _global_forward_hooks[h.id] = hook
    _update_global_hooked()
    _all_slow()
    return h


# Classes whose __call__ this module manages (set at class creation), and
# those of them switched to the general _call_impl.
_managed = set()
_slow = set()


def _make_slow(cls):
    if cls in _managed and cls not in _slow:
        _slow.add(cls)
        type.__setattr__(cls, "__call__", Module._call_impl)


def _all_slow():
    stack = [Module]
    while stack:
        c = stack.pop()
        _make_slow(c)
        stack.extend(c.__subclasses__())


class Module:
    """Base class of every layer and model (torch.nn.Module)."""

    dump_patches = False
    _version = 1
    training = True
    _hooked = False

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(
                "{}.__init__() got an unexpected argument".format(type(self).__name__)
            )
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()
        d["_forward_pre_hooks"] = OrderedDict()
        d["_hooked"] = False

    # ---- running -----------------------------------------------------------------

    def forward(self, *input):
        raise NotImplementedError(
            'Module [{}] is missing the required "forward" function'.format(type(self).__name__)
        )

    def _call_impl(self, *args, **kwargs):
        if self._hooked or _global_hooked[0]:
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    __call__ = _call_impl

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            # a user-defined __call__ may call super().__call__(), which must
            # reach self.forward: its managed ancestors go general
            for base in cls.__mro__[1:]:
                _make_slow(base)
            return
        _managed.add(cls)
        raw = next((k.__dict__["forward"] for k in cls.__mro__ if "forward" in k.__dict__), None)
        if _global_hooked[0] or not isinstance(raw, types.FunctionType):
            # (a forward that is not a plain function, e.g. a staticmethod,
            # cannot stand in for __call__)
            _slow.add(cls)
            type.__setattr__(cls, "__call__", Module._call_impl)
        else:
            type.__setattr__(cls, "__call__", raw)

    def _call_with_hooks(self, args, kwargs):
        pre = list(_global_forward_pre_hooks.values()) + list(self.__dict__.get("_forward_pre_hooks", {}).values())
        for hook in pre:
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        post = list(_global_forward_hooks.values()) + list(self.__dict__.get("_forward_hooks", {}).values())
        for hook in post:
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def _update_hooked(self):
        self.__dict__["_hooked"] = bool(self._forward_hooks or self._forward_pre_hooks)
        if self._hooked:
            _make_slow(type(self))

    def register_forward_pre_hook(self, hook):
        """hook(module, input) -> None or a modified input; runs before forward."""
        h = RemovableHandle(self._forward_pre_hooks, self)
        self._forward_pre_hooks[h.id] = hook
        self._update_hooked()
        return h

    def register_forward_hook(self, hook):
        """hook(module, input, output) -> None or a modified output."""
        h = RemovableHandle(self._forward_hooks, self)
        self._forward_hooks[h.id] = hook
        self._update_hooked()
        return h

    # ---- registration --------------------------------------------------------------

    def register_buffer(self, name, tensor, persistent=True):
        """Adds a buffer (saved in state_dict when persistent)."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError("buffer name should be a string. Got {}".format(type(name).__name__))
        if "." in name:
            raise KeyError('buffer name can\'t contain "."')
        if name == "":
            raise KeyError('buffer name can\'t be empty string ""')
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError("attribute '{}' already exists".format(name))
        if tensor is not None and not isinstance(tensor, ember.Tensor):
            raise TypeError(
                "cannot assign '{}' object to buffer '{}' (ember Tensor or None required)".format(
                    type(tensor).__name__, name
                )
            )
        self._buffers[name] = tensor
        self.__dict__[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name, param):
        """Adds a parameter (a Parameter or None)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError("parameter name should be a string. Got {}".format(type(name).__name__))
        if "." in name:
            raise KeyError('parameter name can\'t contain "."')
        if name == "":
            raise KeyError('parameter name can\'t be empty string ""')
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError("attribute '{}' already exists".format(name))
        if param is not None:
            if not isinstance(param, Parameter):
                raise TypeError(
                    "cannot assign '{}' object to parameter '{}' (ember.nn.Parameter or None "
                    "required)".format(type(param).__name__, name)
                )
            if param.grad_fn is not None:
                raise ValueError(
                    "Cannot assign non-leaf Tensor to parameter '{0}'. Model parameters must be "
                    "created explicitly. To express '{0}' as a function of another Tensor, compute "
                    "the value in the forward() method.".format(name)
                )
        self._parameters[name] = param
        self.__dict__[name] = param

    def add_module(self, name, module):
        """Adds a child module (or None) under name."""
        if not isinstance(module, Module) and module is not None:
            raise TypeError("{} is not a Module subclass".format(type(module).__name__))
        if not isinstance(name, str):
            raise TypeError("module name should be a string. Got {}".format(type(name).__name__))
        if hasattr(self, name) and name not in self._modules:
            raise KeyError("attribute '{}' already exists".format(name))
        if "." in name:
            raise KeyError('module name can\'t contain ".", got: {}'.format(name))
        if name == "":
            raise KeyError('module name can\'t be empty string ""')
        self._modules[name] = module
        self.__dict__[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name, d["_buffers"], d["_modules"])
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(
                    "cannot assign '{}' as parameter '{}' (ember.nn.Parameter or None "
                    "expected)".format(type(value).__name__, name)
                )
            self.register_parameter(name, value)
            return
        modules = d.get("_modules")
        if isinstance(value, Module):
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name, d["_parameters"], d["_buffers"])
            modules[name] = value
            d[name] = value
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(
                    "cannot assign '{}' as child module '{}' (ember.nn.Module or None "
                    "expected)".format(type(value).__name__, name)
                )
            modules[name] = value
            d[name] = value
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, ember.Tensor):
                raise TypeError(
                    "cannot assign '{}' as buffer '{}' (ember.Tensor or None expected)".format(
                        type(value).__name__, name
                    )
                )
            buffers[name] = value
            d[name] = value
            return
        if name == "forward":
            _make_slow(type(self))
        object.__setattr__(self, name, value)

    def _forget(self, name, *dicts):
        for dd in dicts:
            if name in dd:
                del dd[name]
        self.__dict__.pop(name, None)
        self.__dict__.get("_non_persistent_buffers_set", set()).discard(name)

    def __getattr__(self, name):
        # only reached when name is not in __dict__ (e.g. entries put into
        # _parameters directly)
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            sub = d.get(key)
            if sub is not None and name in sub:
                return sub[name]
        raise AttributeError("'{}' object has no attribute '{}'".format(type(self).__name__, name))

    def __delattr__(self, name):
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            sub = d.get(key)
            if sub is not None and name in sub:
                del sub[name]
                d.pop(name, None)
                d["_non_persistent_buffers_set"].discard(name)
                return
        object.__delattr__(self, name)

    def __setstate__(self, state):
        self.__dict__.update(state)
        for key in ("_forward_hooks", "_forward_pre_hooks"):
            self.__dict__.setdefault(key, OrderedDict())
        self.__dict__.setdefault("_non_persistent_buffers_set", set())
        self.__dict__.setdefault("_hooked", False)

    def __dir__(self):
        return sorted(set(dir(type(self))) | set(self.__dict__))

    # ---- traversal ---------------------------------------------------------------------

    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        memo = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get_members_fn(module):
                if v is None or v in memo:
                    continue
                if remove_duplicate:
                    memo.add(v)
                yield module_prefix + ("." if module_prefix else "") + k, v

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, parameter) in registration order, depth first."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_children(self):
        memo = set()
        for name, module in self._modules.items():
            if module is not None and module not in memo:
                memo.add(module)
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if self not in memo:
            if remove_duplicate:
                memo.add(self)
            yield prefix, self
            for name, module in self._modules.items():
                if module is None:
                    continue
                submodule_prefix = prefix + ("." if prefix else "") + name
                for m in module.named_modules(memo, submodule_prefix, remove_duplicate):
                    yield m

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def get_submodule(self, target):
        if target == "":
            return self
        mod = self
        for item in target.split("."):
            if not hasattr(mod, item):
                raise AttributeError(mod._get_name() + " has no attribute `" + item + "`")
            mod = getattr(mod, item)
            if not isinstance(mod, Module):
                raise AttributeError("`" + item + "` is not an nn.Module")
        return mod

    def get_parameter(self, target):
        module_path, _, param_name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if not hasattr(mod, param_name):
            raise AttributeError(mod._get_name() + " has no attribute `" + param_name + "`")
        param = getattr(mod, param_name)
        if not isinstance(param, Parameter):
            raise AttributeError("`" + param_name + "` is not an nn.Parameter")
        return param

    def get_buffer(self, target):
        module_path, _, buffer_name = target.rpartition(".")
        mod = self.get_submodule(module_path)
        if buffer_name not in mod._buffers:
            raise AttributeError("`" + buffer_name + "` is not a buffer")
        return mod._buffers[buffer_name]

    # ---- modes, gradients, conversion ---------------------------------------------------------

    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Clears every parameter's .grad (None by default; zeroes with set_to_none=False)."""
        for p in self.parameters():
            g = p.grad
            if g is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                if g.grad_fn is not None:
                    g.detach_()
                else:
                    g.requires_grad_(False)
                g.zero_()

    def apply(self, fn):
        """Calls fn on every submodule (children first) and on self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _apply(self, fn):
        for module in self.children():
            module._apply(fn)
        for key, param in self._parameters.items():
            if param is None:
                continue
            with ember.no_grad():
                applied = fn(param)
            if applied is not param:
                param.data = applied
            g = param.grad
            if g is not None:
                with ember.no_grad():
                    ga = fn(g)
                if ga is not g:
                    param.grad = ga
        for key, buf in self._buffers.items():
            if buf is not None:
                nb = fn(buf)
                self._buffers[key] = nb
                self.__dict__[key] = nb
        return self

    def to(self, *args, **kwargs):
        """to(device), to(dtype), to(device, dtype), to(tensor): floating-point
        parameters and buffers take the dtype; everything moves to the device."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError("to() got an unexpected keyword argument '{}'".format(next(iter(kwargs))))
        for a in args:
            if isinstance(a, ember.Tensor):
                device, dtype = a.device, a.dtype
            elif isinstance(a, ember.dtype):
                dtype = a
            elif a is not None:
                device = a
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(
                "nn.Module.to only accepts floating point dtypes, but got desired dtype={}".format(dtype)
            )

        def convert(t):
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype) if dtype is not None else (t.to(device) if device is not None else t)
            return t.to(device) if device is not None else t

        return self._apply(convert)

    def cpu(self):
        return self._apply(lambda t: t.to("cpu"))

    def cuda(self, device=None):
        return self._apply(lambda t: t.to("cuda" if device is None else device))

    def float(self):
        return self._apply(lambda t: t.to(ember.float32) if t.is_floating_point() else t)

    def double(self):
        return self._apply(lambda t: t.to(ember.float64) if t.is_floating_point() else t)

    def half(self):
        return self._apply(lambda t: t.to(ember.float16) if t.is_floating_point() else t)

    def bfloat16(self):
        return self._apply(lambda t: t.to(ember.bfloat16) if t.is_floating_point() else t)

    def share_memory(self):
        """Moves the parameters, their gradients where they exist, and the
        buffers into shared memory (in place), so that processes forked
        afterwards (ember.multiprocessing) train one model together,
        Hogwild style."""
        ts = []
        for p in self.parameters():
            ts.append(p)
            if p.grad is not None:
                ts.append(p.grad)
        ts.extend(self.buffers())
        if ts:
            ember._C._dl_share_memory(ts)
        return self

    # ---- state dicts ---------------------------------------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """An OrderedDict of parameters and persistent buffers by dotted name
        (detached tensors sharing the module's storage)."""
        if args:
            # the legacy positional form state_dict(destination, prefix, keep_vars)
            destination = args[0]
            if len(args) > 1:
                prefix = args[1]
            if len(args) > 2:
                keep_vars = args[2]
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        persistent = {k: v for k, v in self._buffers.items() if k not in self._non_persistent_buffers_set}
        local_state = {k: v for k, v in itertools.chain(self._parameters.items(), persistent.items()) if v is not None}
        for name, param in local_state.items():
            key = prefix + name
            if key in state_dict:
                input_param = state_dict[key]
                if not isinstance(input_param, ember.Tensor):
                    error_msgs.append(
                        'While copying the parameter named "{}", expected ember.Tensor or '
                        "Tensor-like object from checkpoint but received {}".format(key, type(input_param))
                    )
                    continue
                if tuple(input_param.shape) != tuple(param.shape):
                    error_msgs.append(
                        "size mismatch for {}: copying a param with shape {} from checkpoint, "
                        "the shape in current model is {}.".format(key, input_param.shape, param.shape)
                    )
                    continue
                try:
                    with ember.no_grad():
                        param.copy_(input_param)
                except Exception as ex:
                    error_msgs.append(
                        'While copying the parameter named "{}", whose dimensions in the model are '
                        "{} and whose dimensions in the checkpoint are {}, an exception occurred : "
                        "{}.".format(key, param.size(), input_param.size(), ex.args)
                    )
            elif strict:
                missing_keys.append(key)
        if strict:
            for key in state_dict.keys():
                if key.startswith(prefix):
                    input_name = key[len(prefix):].split(".", 1)[0]
                    if input_name not in self._modules and input_name not in local_state:
                        unexpected_keys.append(key)

    def load_state_dict(self, state_dict, strict=True):
        """Copies values into the parameters and buffers (PyTorch's rules and
        messages). Returns (missing_keys, unexpected_keys)."""
        if not isinstance(state_dict, dict):
            raise TypeError("Expected state_dict to be dict-like, got {}.".format(type(state_dict)))
        missing_keys, unexpected_keys, error_msgs = [], [], []

        def load(module, prefix=""):
            module._load_from_state_dict(state_dict, prefix, {}, True, missing_keys, unexpected_keys,
                                         error_msgs)
            for name, child in module._modules.items():
                if child is not None:
                    load(child, prefix + name + ".")

        load(self)
        if strict:
            if unexpected_keys:
                error_msgs.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join('"{}"'.format(k) for k in unexpected_keys)))
            if missing_keys:
                error_msgs.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join('"{}"'.format(k) for k in missing_keys)))
        else:
            missing_keys, unexpected_keys = [], []
        if error_msgs:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                self.__class__.__name__, "\n\t".join(error_msgs)))
        return _IncompatibleKeys(missing_keys, unexpected_keys)

    # ---- printing -------------------------------------------------------------------------------

    def _get_name(self):
        return self.__class__.__name__

    def extra_repr(self):
        return ""

    def __repr__(self):
        extra_lines = []
        extra = self.extra_repr()
        if extra:
            extra_lines = extra.split("\n")
        child_lines = []
        for key, module in self._modules.items():
            mod_str = _addindent(repr(module), 2)
            child_lines.append("(" + key + "): " + mod_str)
        lines = extra_lines + child_lines
        main_str = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main_str += extra_lines[0]
            else:
                main_str += "\n  " + "\n  ".join(lines) + "\n"
        return main_str + ")"
