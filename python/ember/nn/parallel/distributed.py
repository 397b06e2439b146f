"""ember.nn.parallel.DistributedDataParallel over the C reducer (comm/ddp.h).

    dist.init_process_group("gloo")
    model = DistributedDataParallel(Net())
    loss = lossf(model(x), y)
    loss.backward()       # gradients are averaged over the ranks on return
    opt.step()

At construction every rank must hold the same parameters (names, shapes,
dtypes); rank 0's parameters and buffers are broadcast to the others. The
reducer sees the Python module through a "shell" C module holding the same
parameter and buffer tensors under the same dotted names: gradients are
bucketed in reverse registration order (25 MiB buckets, the first 1 MiB),
and each full bucket's all-reduce starts while backward is still running.
"""
import contextlib

import ember
from ember import _C
from ember.nn.modules.module import Module

__all__ = ["DistributedDataParallel"]


def _spec(module, memo):
    """(params, buffers, children) of the shell mirroring module."""
    key = id(module)
    if key in memo:
        return memo[key]
    params = [(n, p) for n, p in module._parameters.items() if p is not None and p.requires_grad]
    bufs = [(n, b, n not in module._non_persistent_buffers_set)
            for n, b in module._buffers.items() if b is not None]
    kids = [(n, _spec(m, memo)) for n, m in module._modules.items() if m is not None]
    spec = (params, bufs, kids)
    memo[key] = spec
    return spec


def _tensors_of(obj, out):
    if isinstance(obj, ember.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors_of(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors_of(o, out)
    return out


class DistributedDataParallel(Module):
    """Averages gradients over the ranks of a process group during backward
    (torch.nn.parallel.DistributedDataParallel's arguments; device_ids and
    output_device are accepted for CPU modules and ignored)."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=25, find_unused_parameters=False,
                 check_reduction=False, gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        import ember.distributed as dist
        if not isinstance(module, Module):
            raise TypeError("DistributedDataParallel expects an ember.nn.Module, got {}".format(
                type(module).__name__))
        if not any(p.requires_grad for p in module.parameters()):
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any "
                               "parameter that requires a gradient.")
        self.module = module
        self.process_group = dist._pg(process_group)
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.static_graph = static_graph
        self.dim = dim
        self.device_ids = device_ids
        self.output_device = output_device
        self.bucket_bytes_cap = int(bucket_cap_mb * 1024 * 1024)
        object.__setattr__(self, "_ddp", _C._DDP(
            _spec(module, {}), self.process_group._c, self.bucket_bytes_cap, 0,
            gradient_as_bucket_view, find_unused_parameters, static_graph, broadcast_buffers))

    def forward(self, *inputs, **kwargs):
        ddp = self._ddp
        ddp.pre_forward(self.module.training)
        out = self.module(*inputs, **kwargs)
        if self.module.training and ember.is_grad_enabled():
            ddp.post_forward(_tensors_of(out, []))
        return out

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside accumulates gradients locally; the next backward
        outside reduces the sums."""
        prev = self._ddp.set_no_sync(True)
        try:
            yield
        finally:
            self._ddp.set_no_sync(prev)

    def register_comm_hook(self, state, hook):
        """hook(state, bucket) -> a future (or tensor) holding the bucket's
        reduced gradients; bucket.buffer() is the flat gradient buffer. The
        built-in hooks of ember.distributed.algorithms.ddp_comm_hooks
        .default_hooks run in C. Register before the first forward."""
        builtin = getattr(hook, "_ember_builtin", None)
        if builtin is not None and (state is None or state is self.process_group):
            self._ddp.register_comm_hook(builtin, None, None)
        else:
            if not callable(hook):
                raise TypeError("register_comm_hook: hook must be callable")
            self._ddp.register_comm_hook("python", hook, state)

    def _get_ddp_logging_data(self):
        return self._ddp.stats()

    def _bucket_params(self, b):
        return self._ddp.bucket_params(b)
