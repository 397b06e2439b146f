"""ember.multiprocessing: processes that share tensors (Hogwild training).

Python's multiprocessing with the "fork" start method: a child sees its
parent's memory copy-on-write, and tensors whose storage was moved to
shared memory first (``t.share_memory_()``, ``model.share_memory()``) stay
shared for real, so every process reads and updates one set of weights:

    model.share_memory()
    procs = [ember.multiprocessing.Process(target=train, args=(model, rank))
             for rank in range(4)]
    for p in procs: p.start()
    for p in procs: p.join()

A child of ``Process`` or ``spawn()`` started from the main thread is
killed when its parent dies (PR_SET_PDEATHSIG), so a killed training
script leaves no process behind; ``spawn()`` stops the others (SIGTERM,
then SIGKILL after a grace period) when one fails or the parent is
interrupted. The rest of Python's multiprocessing (Pool, Manager, ...)
is here too, in its fork context.

Unlike torch.multiprocessing, "spawn" and "forkserver" cannot share tensors:
ember's shared memory is unlinked as soon as it exists (nothing can leak
in /dev/shm), so only forked children can map it. ``spawn()`` therefore
forks too; queues pickle tensors by value.
"""
import ember
from ember import _C

# ---- Tensor.share_memory_ / is_shared -----------------------------------------------------------

def _share_memory_(self):
    """Moves the storage into shared memory in place (views follow); a
    no-op when already shared. Returns self."""
    if not isinstance(self, ember.Tensor):
        raise TypeError("share_memory_(): self must be a Tensor, not " + type(self).__name__)
    _C._dl_share_memory(self)
    return self


def _is_shared(self):
    return _C._dl_is_shared(self)


if not hasattr(ember.Tensor, "share_memory_"):
    ember.Tensor.share_memory_ = _share_memory_
if not hasattr(ember.Tensor, "is_shared"):
    ember.Tensor.is_shared = _is_shared



_IMPL_NAMES = ("Process", "Queue", "SimpleQueue", "Pipe", "Event", "Lock", "Barrier", "Value",
               "Array", "get_context", "spawn", "start_processes", "ProcessContext",
               "ProcessRaisedException", "ProcessExitedException", "ProcessException",
               "get_all_start_methods", "set_start_method", "get_start_method", "cpu_count",
               "get_all_sharing_strategies", "get_sharing_strategy", "set_sharing_strategy")
__all__ = list(_IMPL_NAMES)


def __getattr__(name):
    """Names of _impl, then the rest of Python's multiprocessing (Pool,
    Manager, JoinableQueue, RLock, current_process, ...) in its fork
    context, as torch.multiprocessing re-exports multiprocessing."""
    if not name.startswith("_"):
        from ember.multiprocessing import _impl
        return getattr(_impl, name)
    raise AttributeError("module 'ember.multiprocessing' has no attribute '{}'".format(name))


def __dir__():
    from ember.multiprocessing import _impl
    return sorted(set(globals()) | set(_IMPL_NAMES) |
                  {n for n in dir(_impl._ctx) if not n.startswith("_")})
