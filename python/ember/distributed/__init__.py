"""ember.distributed: process groups and collectives (torch.distributed's
API) over ember's comm layer (comm/process_group.h).

    import ember.distributed as dist
    dist.init_process_group("gloo")          # env://: RANK, WORLD_SIZE, MASTER_ADDR/PORT
    t = ember.ones(4) * dist.get_rank()
    dist.all_reduce(t)                        # in place, every rank gets the sum
    work = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)
    work.wait()

Backends: "gloo" (and "auto", the default) picks ember's CPU path: shared
memory between the ranks of a host, TCP across hosts; "tcp", "shm", "mpi"
and "nccl" name one. ``src`` / ``dst`` arguments are global ranks, as in
PyTorch, also for sub-groups from new_group(). Every collective runs
without the GIL; a dead peer or a timeout raises (RuntimeError /
TimeoutError naming the rank) instead of hanging.
"""
import datetime
import pickle

import ember
from ember import _C

__all__ = ["is_available", "is_initialized", "init_process_group", "destroy_process_group",
           "get_rank", "get_world_size", "get_backend", "new_group", "ReduceOp", "Work",
           "ProcessGroup", "GroupMember", "group", "all_reduce", "broadcast", "reduce",
           "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
           "gather", "scatter", "all_to_all", "send", "recv", "isend", "irecv", "barrier",
           "monitored_barrier", "all_gather_object", "broadcast_object_list",
           "default_pg_timeout", "Backend"]

default_pg_timeout = datetime.timedelta(minutes=30)


class ReduceOp:
    """Reduction operations (the values the C layer uses)."""
    SUM = 0
    AVG = 1
    PRODUCT = 2
    MIN = 3
    MAX = 4
    BAND = 5
    BOR = 6
    BXOR = 7

    def __init__(self):
        raise TypeError("ReduceOp is an enumeration; use ReduceOp.SUM, ...")


class Backend:
    GLOO = "gloo"
    NCCL = "nccl"
    MPI = "mpi"
    TCP = "tcp"
    SHM = "shm"
    AUTO = "auto"

    def __new__(cls, name):
        return name.lower()


def _timeout_ms(timeout):
    if timeout is None:
        return 0
    if isinstance(timeout, datetime.timedelta):
        return max(1, int(timeout.total_seconds() * 1000))
    return max(1, int(float(timeout) * 1000))


class ProcessGroup:
    """A group of ranks (the world, or one from new_group())."""

    def __init__(self, c, ranks):
        self._c = c
        self._ranks = list(ranks)  # global ranks, by group rank
        self._rank_of = {g: i for i, g in enumerate(self._ranks)}

    def rank(self):
        return self._c.rank()

    def size(self):
        return len(self._ranks)

    def backend(self):
        return self._c.backend()

    def _group_rank(self, global_rank, what):
        r = self._rank_of.get(global_rank)
        if r is None:
            raise ValueError("{} rank {} is not part of the group (ranks {})".format(
                what, global_rank, self._ranks))
        return r

    def __repr__(self):
        return "ProcessGroup(backend={}, ranks={})".format(self._c.backend(), self._ranks)


class GroupMember:
    WORLD = None
    NON_GROUP_MEMBER = object()


group = GroupMember

_world = None


def is_available():
    return True


def is_initialized():
    return _world is not None


def _check():
    if _world is None:
        raise RuntimeError("Default process group has not been initialized, please make sure to "
                           "call init_process_group.")


def _pg(group):
    _check()
    if group is None or group is GroupMember.WORLD:
        return _world
    if group is GroupMember.NON_GROUP_MEMBER:
        raise RuntimeError("this rank is not a member of the group")
    if not isinstance(group, ProcessGroup):
        raise TypeError("group must be an ember.distributed ProcessGroup, not {}".format(
            type(group).__name__))
    return group


def init_process_group(backend=None, init_method=None, timeout=default_pg_timeout, world_size=-1,
                       rank=-1, store=None, group_name="", pg_options=None):
    """Joins the default process group. init_method "env://" (the default:
    RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as set by trainrun and
    torchrun) or "tcp://host:port" with rank and world_size."""
    global _world
    if _world is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    if store is not None:
        raise NotImplementedError("init_process_group(store=...) is not supported; use init_method")
    if isinstance(backend, str):
        backend = backend.lower()
        if backend == "gloo":
            backend = "auto"
    if init_method is None:
        init_method = "env://"
    if init_method.startswith("file://"):
        raise ValueError("init_method file:// is not supported by ember (use env:// or tcp://)")
    if init_method == "env://":
        # RANK / WORLD_SIZE from the environment unless both are given here
        url = None if (rank < 0 or world_size < 1) else init_method
    else:
        if rank < 0 or world_size < 1:
            raise ValueError("init_method {} needs rank and world_size".format(init_method))
        url = init_method
    c = _C._dist_init(backend, url, rank, world_size, _timeout_ms(timeout), group_name or None)
    _world = ProcessGroup(c, range(c.size()))
    GroupMember.WORLD = _world


def destroy_process_group(group=None):
    """Leaves the default group (and with it every sub-group), or one group."""
    global _world
    if group is None or group is GroupMember.WORLD:
        if _world is not None:
            _world._c.close()
        _world = None
        GroupMember.WORLD = None
    elif isinstance(group, ProcessGroup):
        group._c.close()


def get_rank(group=None):
    """This process's rank in group (-1 when it is not a member)."""
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _pg(group).rank()


def get_world_size(group=None):
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return _pg(group).size()


def get_backend(group=None):
    return _pg(group).backend()


def new_group(ranks=None, timeout=None, backend=None, pg_options=None):
    """A sub-group of the given global ranks (all when None). Every rank of
    the world must call it with the same list; non-members get
    GroupMember.NON_GROUP_MEMBER."""
    world = _pg(None)
    ranks = sorted(range(world.size())) if ranks is None else sorted(int(r) for r in ranks)
    if isinstance(backend, str) and backend.lower() == "gloo":
        backend = "auto"
    c = world._c.new_group(ranks, backend, _timeout_ms(timeout))
    if c.rank() < 0:
        return GroupMember.NON_GROUP_MEMBER
    return ProcessGroup(c, ranks)


# ---- works and futures ------------------------------------------------------------------------

class Future:
    """The result of an async collective (torch.futures.Future's core):
    wait() / value() give the list of tensors it produced; then(fn) chains
    a callback run on the result."""

    def __init__(self, work=None, tensors=None, parent=None, fn=None, value=None):
        self._work = work
        self._tensors = tensors
        self._parent = parent
        self._fn = fn
        self._value = value
        self._done = value is not None

    def wait(self):
        if not self._done:
            if self._parent is not None:
                self._parent.wait()
                self._value = self._fn(self._parent)
            else:
                if self._work is not None:
                    self._work.wait()
                self._value = self._tensors
            self._done = True
        return self._value

    def value(self):
        return self.wait()

    def done(self):
        if self._done:
            return True
        if self._parent is not None:
            return self._parent.done()
        return self._work is None or self._work.is_completed()

    def then(self, callback):
        return Future(parent=self, fn=callback)

    def set_result(self, result):
        self._value = result
        self._done = True


class Work:
    """An async collective: wait(timeout=None) blocks until its tensors hold
    the result (True), raising the collective's error; is_completed()."""

    def __init__(self, c, tensors):
        self._c = c
        self._tensors = tensors

    def wait(self, timeout=None):
        ms = None if timeout is None else _timeout_ms(timeout)
        return self._c.wait(ms)

    def is_completed(self):
        return self._c.is_completed()

    def is_success(self):
        return self._c.is_success()

    def get_future(self):
        return Future(self, self._tensors)

    def result(self):
        self.wait()
        return self._tensors


def _finish(c, tensors, async_op):
    w = Work(c, tensors)
    if async_op:
        return w
    w.wait()
    return None


def _check_tensor(t, name):
    if not isinstance(t, ember.Tensor):
        raise TypeError("Invalid function argument. Expected parameter `{}` to be of type "
                        "ember.Tensor.".format(name))


# ---- collectives ---------------------------------------------------------------------------------

def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduces tensor across the group in place; every rank gets the result."""
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    return _finish(pg._c.allreduce(tensor, op), [tensor], async_op)


def broadcast(tensor, src, group=None, async_op=False):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    return _finish(pg._c.broadcast(tensor, pg._group_rank(src, "src")), [tensor], async_op)


def reduce(tensor, dst, op=ReduceOp.SUM, group=None, async_op=False):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    return _finish(pg._c.reduce(tensor, pg._group_rank(dst, "dst"), op), [tensor], async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    return _finish(pg._c.list_collective(0, tensor, list(tensor_list), 0, 0), list(tensor_list), async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    _check_tensor(output_tensor, "output_tensor")
    _check_tensor(input_tensor, "input_tensor")
    pg = _pg(group)
    return _finish(pg._c.tensor_collective(0, output_tensor, input_tensor, 0), [output_tensor], async_op)


_all_gather_base = all_gather_into_tensor


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    _check_tensor(output, "output")
    pg = _pg(group)
    return _finish(pg._c.list_collective(1, output, list(input_list), 0, op), [output], async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    _check_tensor(output, "output")
    _check_tensor(input, "input")
    pg = _pg(group)
    return _finish(pg._c.tensor_collective(1, output, input, op), [output], async_op)


_reduce_scatter_base = reduce_scatter_tensor


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    root = pg._group_rank(dst, "dst")
    if pg.rank() == root:
        if gather_list is None:
            raise ValueError("Argument ``gather_list`` must be specified on destination rank.")
        lst = list(gather_list)
    else:
        if gather_list:
            raise ValueError("Argument ``gather_list`` must NOT be specified on non-destination ranks.")
        lst = None
    return _finish(pg._c.list_collective(2, tensor, lst, root, 0), lst or [], async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    root = pg._group_rank(src, "src")
    if pg.rank() == root:
        if scatter_list is None:
            raise ValueError("Argument ``scatter_list`` must be specified on source rank.")
        lst = list(scatter_list)
    else:
        if scatter_list:
            raise ValueError("Argument ``scatter_list`` must NOT be specified on non-source ranks.")
        lst = None
    return _finish(pg._c.list_collective(3, tensor, lst, root, 0), [tensor], async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    pg = _pg(group)
    outs = list(output_tensor_list)
    return _finish(pg._c.list_collective(4, outs, list(input_tensor_list), 0, 0), outs, async_op)


def isend(tensor, dst, group=None, tag=0):
    _check_tensor(tensor, "tensor")
    pg = _pg(group)
    return Work(pg._c.p2p(True, tensor, pg._group_rank(dst, "dst"), tag), [tensor])


def irecv(tensor, src=None, group=None, tag=0):
    _check_tensor(tensor, "tensor")
    if src is None:
        raise NotImplementedError("recv from any source is not supported by ember; pass src")
    pg = _pg(group)
    return Work(pg._c.p2p(False, tensor, pg._group_rank(src, "src"), tag), [tensor])


def send(tensor, dst, group=None, tag=0):
    isend(tensor, dst, group, tag).wait()


def recv(tensor, src=None, group=None, tag=0):
    irecv(tensor, src, group, tag).wait()
    return src


def barrier(group=None, async_op=False, device_ids=None):
    pg = _pg(group)
    return _finish(pg._c.barrier(), [], async_op)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """A barrier that names the ranks that did not arrive within timeout."""
    pg = _pg(group)
    ms = _timeout_ms(timeout) if timeout is not None else pg._c.timeout_ms()
    pg._c.monitored_barrier(ms, wait_all_ranks)


# ---- objects ---------------------------------------------------------------------------------------

def _to_tensor(obj):
    data = pickle.dumps(obj)
    return ember.tensor(list(data), dtype=ember.uint8), len(data)


def _from_tensor(t, n):
    return pickle.loads(bytes(t[:n].tolist()))


def all_gather_object(object_list, obj, group=None):
    """object_list[i] receives rank i's obj (pickled through tensors)."""
    pg = _pg(group)
    t, n = _to_tensor(obj)
    sizes = [ember.zeros(1, dtype=ember.int64) for _ in range(pg.size())]
    all_gather(sizes, ember.tensor([n], dtype=ember.int64), group=group)
    sizes = [int(s) for s in sizes]
    cap = max(sizes)
    padded = ember.zeros(cap, dtype=ember.uint8)
    padded[:n] = t
    outs = [ember.zeros(cap, dtype=ember.uint8) for _ in range(pg.size())]
    all_gather(outs, padded, group=group)
    for i, (o, s) in enumerate(zip(outs, sizes)):
        object_list[i] = _from_tensor(o, s)


def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Rank src's objects replace object_list's on every rank."""
    pg = _pg(group)
    me = pg._ranks[pg.rank()]
    if me == src:
        payload = [_to_tensor(o) for o in object_list]
        sizes = ember.tensor([n for _, n in payload], dtype=ember.int64)
    else:
        sizes = ember.zeros(len(object_list), dtype=ember.int64)
    broadcast(sizes, src, group=group)
    total = int(sizes.sum()) if len(object_list) else 0
    buf = ember.zeros(max(total, 1), dtype=ember.uint8)
    if me == src and total:
        buf[:total] = ember.cat([t for t, _ in payload])
    broadcast(buf, src, group=group)
    off = 0
    for i, n in enumerate(sizes.tolist()):
        object_list[i] = _from_tensor(buf[off:off + n], n)
        off += n


from ember.distributed import algorithms  # noqa: E402,F401
