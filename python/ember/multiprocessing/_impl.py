"""ember.multiprocessing's implementation (imported on first use: Python's
multiprocessing costs tens of milliseconds to import)."""
import multiprocessing as _mp
import signal
import sys
import traceback


__all__ = ["Process", "Queue", "SimpleQueue", "Pipe", "Event", "Lock", "Barrier", "Value", "Array",
           "get_context", "spawn", "start_processes", "ProcessContext", "ProcessRaisedException",
           "ProcessExitedException", "get_all_start_methods", "set_start_method",
           "get_start_method", "cpu_count"]

_ctx = _mp.get_context("fork")

Process = _ctx.Process
Queue = _ctx.Queue
SimpleQueue = _ctx.SimpleQueue
Pipe = _ctx.Pipe
Event = _ctx.Event
Lock = _ctx.Lock
Barrier = _ctx.Barrier
Value = _ctx.Value
Array = _ctx.Array
cpu_count = _mp.cpu_count


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

    def pids(self):
        return [int(p.pid) for p in self.processes]

    def join(self, timeout=None):
        """Waits for the processes; True when all finished. The first failure
        stops the others and raises ProcessRaisedException (with the child's
        traceback) or ProcessExitedException."""
        if len(self.sentinels) == 0:
            return True
        from multiprocessing.connection import wait
        ready = wait(self.sentinels.keys(), timeout=timeout)
        error_index = None
        for sentinel in ready:
            index = self.sentinels.pop(sentinel)
            process = self.processes[index]
            process.join()
            if process.exitcode != 0:
                error_index = index
                break
        if error_index is None:
            return len(self.sentinels) == 0
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
        failed = self.processes[error_index]
        if self.error_queues[error_index].empty():
            exitcode = failed.exitcode
            if exitcode < 0:
                name = signal.Signals(-exitcode).name
                raise ProcessExitedException(
                    "process %d terminated with signal %s" % (error_index, name), error_index,
                    failed.pid, exit_code=exitcode, signal_name=name)
            raise ProcessExitedException(
                "process %d terminated with exit code %d" % (error_index, exitcode), error_index,
                failed.pid, exit_code=exitcode)
        original_trace = self.error_queues[error_index].get()
        msg = "\n\n-- Process %d terminated with the following error:\n" % error_index
        msg += original_trace
        raise ProcessRaisedException(msg, error_index, failed.pid)


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="fork"):
    get_context(start_method)
    error_queues, processes = [], []
    for i in range(nprocs):
        q = _ctx.SimpleQueue()
        p = _ctx.Process(target=_wrap, args=(fn, i, args, q), daemon=daemon)
        p.start()
        error_queues.append(q)
        processes.append(p)
    context = ProcessContext(processes, error_queues)
    if not join:
        return context
    while not context.join():
        pass


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="fork"):
    """Runs fn(i, *args) in nprocs forked processes (i = 0 .. nprocs-1), as
    torch.multiprocessing.spawn; joins them unless join=False (then returns
    a ProcessContext)."""
    return start_processes(fn, args, nprocs, join, daemon, start_method)
