"""ember.multiprocessing's implementation (imported on first use: Python's
multiprocessing costs tens of milliseconds to import)."""
import multiprocessing as _mp
import os
import signal
import sys
import threading
import time
import traceback

from ember import _C


__all__ = ["Process", "Queue", "SimpleQueue", "Pipe", "Event", "Lock", "Barrier", "Value", "Array",
           "get_context", "spawn", "start_processes", "ProcessContext", "ProcessRaisedException",
           "ProcessExitedException", "get_all_start_methods", "set_start_method",
           "get_start_method", "cpu_count", "get_all_sharing_strategies", "get_sharing_strategy",
           "set_sharing_strategy"]

_fork = _mp.get_context("fork")


def __getattr__(name):
    # the rest of multiprocessing (Pool, Manager, JoinableQueue, RLock,
    # current_process, ...), from the fork context, as torch.multiprocessing
    # re-exports it
    if not name.startswith("_") and hasattr(_ctx, name):
        return getattr(_ctx, name)
    raise AttributeError("module 'ember.multiprocessing' has no attribute '{}'".format(name))


# How long the others of a failed spawn() get to leave after SIGTERM
# before SIGKILL.
_TERMINATE_GRACE_S = 3.0


def _die_with_parent(parent_pid):
    """In a child: SIGKILL when the parent dies, so that a killed parent
    never leaves its processes behind (torch's spawn does this for its
    children; here every ember.multiprocessing child does)."""
    if not _C._die_with_parent(parent_pid):
        os._exit(1)


class Process(_fork.Process):
    """multiprocessing's Process (fork), whose child dies with its parent.
    Only when started from the main thread: the kernel ties the child to
    the thread that forked it, and a helper thread that ends would take
    its children along."""

    def start(self):
        self._ember_from_main = threading.current_thread() is threading.main_thread()
        super().start()

    def _bootstrap(self, *args, **kwargs):
        if getattr(self, "_ember_from_main", False):
            _die_with_parent(self._parent_pid)
        return super()._bootstrap(*args, **kwargs)


class _ForkContext(type(_fork)):
    """The fork context whose processes are ember's Process: Pool workers
    and a Manager's server die with their parent too."""
    Process = Process


_ctx = _ForkContext()


Queue = _ctx.Queue
SimpleQueue = _ctx.SimpleQueue
Pipe = _ctx.Pipe
Event = _ctx.Event
Lock = _ctx.Lock
Barrier = _ctx.Barrier
Value = _ctx.Value
Array = _ctx.Array
cpu_count = _mp.cpu_count


# Sharing strategies, as in torch.multiprocessing. Neither changes anything
# here: a shared tensor is a mapping inherited by fork, with no file or fd
# kept per tensor, so the limits that "file_system" works around in torch
# (open fds) do not arise, and nothing is ever left in /dev/shm.
_SHARING_STRATEGIES = ("file_descriptor", "file_system")
_sharing_strategy = "file_descriptor"


def get_all_sharing_strategies():
    return set(_SHARING_STRATEGIES)


def get_sharing_strategy():
    return _sharing_strategy


def set_sharing_strategy(new_strategy):
    global _sharing_strategy
    if new_strategy not in _SHARING_STRATEGIES:
        raise ValueError("set_sharing_strategy: unknown strategy {!r} (one of {})".format(
            new_strategy, ", ".join(_SHARING_STRATEGIES)))
    _sharing_strategy = new_strategy


def get_context(method=None):
    if method not in (None, "fork"):
        raise ValueError("ember.multiprocessing only supports the 'fork' start method (shared "
                         "tensors can only be inherited), got {!r}".format(method))
    return _ctx


def get_all_start_methods():
    return ["fork"]


def get_start_method(allow_none=False):
    return "fork"


def set_start_method(method, force=False):
    get_context(method)


# ---- spawn ---------------------------------------------------------------------------------------

class ProcessException(Exception):
    __slots__ = ["error_index", "error_pid"]

    def __init__(self, msg, error_index, pid):
        super().__init__(msg)
        self.msg = msg
        self.error_index = error_index
        self.pid = pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised; the message carries its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process exited with a non-zero code or was killed."""

    __slots__ = ["exit_code", "signal_name"]

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, error_pid)
        self.exit_code = exit_code
        self.signal_name = signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.exit_code, self.signal_name)


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:  # real-time signals have no name of their own
        if signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return "SIGRTMIN+%d" % (signum - signal.SIGRTMIN)
        return "signal %d" % signum


def _stop(processes, grace_s):
    """SIGTERM to those still running, SIGKILL to those still running
    grace_s later; all reaped."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
        p.join()


def _wrap(fn, i, args, error_queue):
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass
    except Exception:
        error_queue.put(traceback.format_exc())
        sys.exit(1)


class ProcessContext:
    def __init__(self, processes, error_queues):
        self.error_queues = error_queues
        self.processes = processes
        self.sentinels = {p.sentinel: i for i, p in enumerate(processes)}
        self._tracebacks = {}

    def pids(self):
        return [int(p.pid) for p in self.processes]

    def _read_traceback(self, index):
        if index not in self._tracebacks:
            try:
                self._tracebacks[index] = self.error_queues[index].get()
            except (EOFError, OSError):  # it died before writing one
                self._tracebacks[index] = None

    def join(self, timeout=None):
        """Waits for the processes; True when all finished. The first failure
        stops the others (SIGTERM, then SIGKILL after a grace period) and
        raises ProcessRaisedException (with the child's traceback) or
        ProcessExitedException."""
        if len(self.sentinels) == 0:
            return True
        from multiprocessing.connection import wait
        # A child's traceback is read as soon as it comes: one larger than
        # the pipe would otherwise keep the child from exiting.
        readers = {q._reader: i for i, q in enumerate(self.error_queues)
                   if i not in self._tracebacks and self.processes[i].sentinel in self.sentinels}
        ready = wait(list(self.sentinels.keys()) + list(readers.keys()), timeout=timeout)
        for r in ready:
            if r in readers:
                self._read_traceback(readers[r])
        error_index = None
        for sentinel in ready:
            if sentinel not in self.sentinels:
                continue
            index = self.sentinels.pop(sentinel)
            process = self.processes[index]
            process.join()
            if process.exitcode != 0:
                error_index = index
                break
        if error_index is None:
            return len(self.sentinels) == 0
        _stop(self.processes, _TERMINATE_GRACE_S)
        failed = self.processes[error_index]
        if error_index not in self._tracebacks and not self.error_queues[error_index].empty():
            self._read_traceback(error_index)
        original_trace = self._tracebacks.get(error_index)
        if original_trace is None:
            exitcode = failed.exitcode
            if exitcode < 0:
                name = _signal_name(-exitcode)
                raise ProcessExitedException(
                    "process %d terminated with signal %s" % (error_index, name), error_index,
                    failed.pid, exit_code=exitcode, signal_name=name)
            raise ProcessExitedException(
                "process %d terminated with exit code %d" % (error_index, exitcode), error_index,
                failed.pid, exit_code=exitcode)
        msg = "\n\n-- Process %d terminated with the following error:\n" % error_index
        msg += original_trace
        raise ProcessRaisedException(msg, error_index, failed.pid)


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="fork"):
    get_context(start_method)
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 0:
        raise ValueError("spawn: nprocs must be a non-negative integer, got {!r}".format(nprocs))
    error_queues, processes = [], []
    try:
        for i in range(nprocs):
            q = _ctx.SimpleQueue()
            p = Process(target=_wrap, args=(fn, i, args, q), daemon=daemon)
            p.start()
            error_queues.append(q)
            processes.append(p)
        context = ProcessContext(processes, error_queues)
        if not join:
            return context
        while not context.join():
            pass
    except BaseException:
        # Ctrl-C (or any error) in the parent: the children must not be
        # left running, nor joined forever at interpreter exit.
        _stop(processes, _TERMINATE_GRACE_S)
        raise


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="fork"):
    """Runs fn(i, *args) in nprocs forked processes (i = 0 .. nprocs-1), as
    torch.multiprocessing.spawn; joins them unless join=False (then returns
    a ProcessContext)."""
    return start_processes(fn, args, nprocs, join, daemon, start_method)
