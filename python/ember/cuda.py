"""ember.cuda: CUDA devices, memory, streams and events, as torch.cuda.

A ``device`` argument is None (the current device), an int, ``"cuda:N"``
or an ``ember.device``. Without CUDA support in the build, or without a
usable device, ``is_available()`` is False, ``device_count()`` is 0, and
every call that needs a device raises RuntimeError saying why
(``unavailable_reason()``).

Random numbers: ember draws every device's random numbers from the one
default generator (counter-based, so a seed gives the same values on the
CPU and on a GPU); ``manual_seed`` and ``manual_seed_all`` seed it, as
``ember.manual_seed`` does."""
import contextlib as _contextlib

from . import _C

Stream = _C._CudaStream
Event = _C._CudaEvent


def is_available():
    """True when ember was built with CUDA and a device is usable."""
    return _C._cuda_is_available()


def unavailable_reason():
    """Why is_available() is False ("" when it is True)."""
    return _C._cuda_unavailable_reason()


def device_count():
    return _C._cuda_device_count()


def is_initialized():
    return is_available()


def init():
    """Starts CUDA now (it starts at first use otherwise); raises without a device."""
    current_device()


def current_device():
    return _C._cuda_current_device()


def set_device(device):
    if isinstance(device, int) and device < 0:
        return  # as torch: a negative index changes nothing
    _C._cuda_set_device(device)


class device:
    """Context manager that makes ``device`` current and restores the previous one."""

    def __init__(self, device):
        self.device, self.prev = device, None

    def __enter__(self):
        if self.device is not None:
            self.prev = current_device()
            set_device(self.device)

    def __exit__(self, *exc):
        if self.prev is not None:
            set_device(self.prev)
        return False


def get_device_name(device=None):
    return _C._cuda_device_name(device)


def synchronize(device=None):
    """Waits for all work on every stream of the device."""
    _C._cuda_synchronize(device)


def manual_seed(seed):
    _C.manual_seed(seed)


manual_seed_all = manual_seed


# ---- memory ----------------------------------------------------------------------------

def empty_cache():
    """Returns the caching allocator's unused device memory to the driver."""
    _C._cuda_empty_cache()


def memory_stats(device=None):
    """The caching allocator's counters (torch.cuda.memory_stats' names where
    they exist: "allocated_bytes", "reserved_bytes", "allocated_bytes.peak",
    "reserved_bytes.peak", "num_allocs", "num_ooms", "segment.count", ...)."""
    return _C._cuda_memory_stats(device)


def memory_allocated(device=None):
    return memory_stats(device)["allocated_bytes"]


def max_memory_allocated(device=None):
    return memory_stats(device)["allocated_bytes.peak"]


def memory_reserved(device=None):
    return memory_stats(device)["reserved_bytes"]


def max_memory_reserved(device=None):
    return memory_stats(device)["reserved_bytes.peak"]


def reset_peak_memory_stats(device=None):
    _C._cuda_reset_peak_memory_stats(device)


# ---- streams --------------------------------------------------------------------------

def current_stream(device=None):
    return _C._cuda_current_stream(device)


def default_stream(device=None):
    return _C._cuda_default_stream(device)


def set_stream(stream):
    """Makes ``stream`` the current stream of its device."""
    _C._cuda_set_stream(stream)


@_contextlib.contextmanager
def stream(s):
    """Runs the block with ``s`` as its device's current stream (None: unchanged)."""
    if s is None:
        yield
        return
    prev = current_stream(s.device_index)
    set_stream(s)
    try:
        yield
    finally:
        set_stream(prev)
