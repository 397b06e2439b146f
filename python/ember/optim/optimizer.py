"""ember.optim.Optimizer: PyTorch's optimizer front (param_groups as a list
of dicts, state_dict / load_state_dict, zero_grad) over the C optimizers
of nn/optim.h, which do the update.

Hyper-parameters live in the group dicts, where users and schedulers
change them (``group['lr'] = ...``); step() hands the groups to C, which
picks up whatever changed before updating every parameter in one call.

``optimizer.state`` is a snapshot: a dict from parameter to its state
tensors (momentum_buffer, exp_avg, ...), which share memory with the C
optimizer's (a ``step`` entry is a copy)."""
from collections import defaultdict
import copy

import ember
from ember import _C

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    _kind = None  # the C optimizer: "SGD", "Adam", ...

    def __init__(self, params, defaults):
        self.defaults = defaults
        self._c = None
        self._step_count = 0
        self.param_groups = []
        if isinstance(params, ember.Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + type(params).__name__)
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __getstate__(self):
        raise TypeError("ember optimizers cannot be pickled; save optimizer.state_dict() instead")

    def __repr__(self):
        s = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += "\nParameter Group {0}\n".format(i)
            for key in sorted(group.keys()):
                if key != "params":
                    s += "    {0}: {1}\n".format(key, group[key])
        return s + ")"

    def add_param_group(self, param_group):
        """Adds a group (a dict with 'params' and optional hyper-parameters;
        missing ones come from the optimizer's defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError("param group must be a dict")
        params = param_group["params"]
        if isinstance(params, ember.Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a "
                            "list instead.")
        else:
            param_group["params"] = list(params)
        for param in param_group["params"]:
            if not isinstance(param, ember.Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " +
                                type(param).__name__)
            if not param.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required optimization "
                                 "parameter " + name)
            param_group.setdefault(name, default)
        if len(param_group["params"]) != len(set(param_group["params"])):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = set()
        for group in self.param_groups:
            seen.update(group["params"])
        if not seen.isdisjoint(set(param_group["params"])):
            raise ValueError("some parameters appear in more than one parameter group")
        if self._c is None:
            self._c = _C._Optimizer(self._kind, [param_group])
        else:
            self._c.add_param_group(param_group)
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        """Clears the gradients (None, or zeros with set_to_none=False)."""
        self._c.zero_grad(set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; closure (if
        given) re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with ember.enable_grad():
                loss = closure()
        self._step_count += 1
        self._c.step(self.param_groups)
        return loss

    # ---- state ---------------------------------------------------------------------------------

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _flat_state(self):
        """{param index: {name: tensor}} from the C optimizer."""
        out = defaultdict(dict)
        for name, t in self._c.state_dict():
            if not name.startswith("state."):
                continue
            _, idx, key = name.split(".", 2)
            out[int(idx)][key] = t
        return out

    @property
    def state(self):
        ps = self._params()
        st = defaultdict(dict)
        for i, d in self._flat_state().items():
            st[ps[i]] = d
        return st

    def state_dict(self):
        """{'state': {index: {name: tensor}}, 'param_groups': [{hyper-parameters,
        'params': [indices]}]}, as PyTorch lays it out."""
        index = 0
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            n = len(g["params"])
            packed["params"] = list(range(index, index + n))
            index += n
            groups.append(packed)
        return {"state": dict(self._flat_state()), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores hyper-parameters and state from state_dict()'s output
        (or ember.load of a saved one)."""
        state_dict = copy.copy(state_dict)
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        param_lens = (len(g["params"]) for g in groups)
        saved_lens = (len(g["params"]) for g in saved_groups)
        if any(p_len != s_len for p_len, s_len in zip(param_lens, saved_lens)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the "
                             "size of optimizer's group")
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            ng = {k: (tuple(v) if k == "betas" and isinstance(v, list) else v)
                  for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            new_groups.append(ng)
        entries = []
        for idx, d in state_dict.get("state", {}).items():
            for key, v in d.items():
                if not isinstance(v, ember.Tensor):
                    v = ember.tensor(v)
                entries.append(("state.{}.{}".format(int(idx), key), v))
        for gi, sg in enumerate(saved_groups):
            entries.append(("param_groups.{}.params".format(gi),
                            ember.tensor([int(i) for i in sg["params"]], dtype=ember.int64)))
        self._c.load_state_dict(entries, new_groups)
        for g, ng in zip(groups, new_groups):
            g.clear()
            g.update(ng)
