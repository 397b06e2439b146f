/* ember._C bindings for ember.distributed and DistributedDataParallel over
 * comm/process_group.h and comm/ddp.h.
 *
 *   _PG        a process group (em_pg): collectives return a _Work.
 *   _Work      a work handle: wait(timeout_ms) (GIL released), is_completed().
 *   _DDP       the DDP reducer over a "shell" em_module that mirrors the
 *              Python module tree (same parameter and buffer tensors, same
 *              dotted names): the Python DistributedDataParallel runs the
 *              Python forward between pre_forward and post_forward.
 *   _GradBucket what a Python comm hook receives.
 *
 * Every call that talks to other ranks runs without the GIL: collectives
 * may run inline on the calling thread when the group's queue is idle, and
 * waits block until peers answer (or the timeout). Python comm hooks run
 * synchronously: the bucket's future is waited inside the hook (the
 * built-in hooks, in C, keep communication overlapped with backward). */
#include "comm/ddp.h"
#include "comm/process_group.h"
#include "python/ember_py.h"

static PyTypeObject PG_Type, Work_Type, DDP_Type, Bucket_Type;

/* ---- _Work ------------------------------------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  em_work *w;
  PyObject *keep; /* Python objects (tensors) the collective writes */
} WorkObject;

static PyObject *work_wrap(em_work *w, PyObject *keep) {
  if (!w) return emp_raise();
  WorkObject *o = PyObject_New(WorkObject, &Work_Type);
  if (!o) {
    em_work_release(w);
    return NULL;
  }
  o->w = w;
  o->keep = Py_XNewRef(keep);
  return (PyObject *)o;
}

static void work_dealloc(PyObject *self) {
  WorkObject *o = (WorkObject *)self;
  em_work *w = o->w;
  o->w = NULL;
  if (w) {
    Py_BEGIN_ALLOW_THREADS em_work_release(w);
    Py_END_ALLOW_THREADS
  }
  Py_XDECREF(o->keep);
  PyObject_Free(self);
}

/* wait(timeout_ms=-1): True, or raises the collective's error */
static PyObject *work_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  int64_t ms = EM_PG_DEFAULT_TIMEOUT;
  if (nargs > 0 && args[0] != Py_None && emp_arg_int(args[0], "wait", "timeout", &ms) < 0) return NULL;
  em_status st;
  em_work *w = ((WorkObject *)self)->w;
  Py_BEGIN_ALLOW_THREADS st = em_work_wait(w, ms);
  Py_END_ALLOW_THREADS if (st) return emp_raise();
  Py_RETURN_TRUE;
}

static PyObject *work_is_completed(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_work_is_completed(((WorkObject *)self)->w));
}

static PyObject *work_is_success(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_work_status(((WorkObject *)self)->w) == EM_OK);
}

static PyMethodDef work_methods[] = {
    {"wait", EMP_FN(work_wait), METH_FASTCALL, "wait(timeout_ms=None) -> True"},
    {"is_completed", work_is_completed, METH_NOARGS, NULL},
    {"is_success", work_is_success, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Work_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._Work",
    .tp_basicsize = sizeof(WorkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = work_dealloc,
    .tp_methods = work_methods,
};

/* ---- _PG ---------------------------------------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  em_pg *pg;
} PGObject;

static PyObject *pg_wrap(em_pg *pg) {
  if (!pg) return emp_raise();
  PGObject *o = PyObject_New(PGObject, &PG_Type);
  if (!o) {
    Py_BEGIN_ALLOW_THREADS em_pg_release(pg);
    Py_END_ALLOW_THREADS return NULL;
  }
  o->pg = pg;
  return (PyObject *)o;
}

static void pg_dealloc(PyObject *self) {
  PGObject *o = (PGObject *)self;
  em_pg *pg = o->pg;
  o->pg = NULL;
  if (pg) {
    Py_BEGIN_ALLOW_THREADS em_pg_release(pg);
    Py_END_ALLOW_THREADS
  }
  PyObject_Free(self);
}

__attribute__((unused)) static int arg_pg(PyObject *o, em_pg **pg) {
  if (Py_TYPE(o) != &PG_Type || !((PGObject *)o)->pg) {
    PyErr_Format(PyExc_TypeError, "expected an ember process group, not %s", Py_TYPE(o)->tp_name);
    return -1;
  }
  *pg = ((PGObject *)o)->pg;
  return 0;
}

static int arg_backend(PyObject *o, const char **out) {
  *out = NULL;
  if (!o || o == Py_None) return 0;
  if (!PyUnicode_Check(o)) {
    PyErr_SetString(PyExc_TypeError, "backend must be a str");
    return -1;
  }
  *out = PyUnicode_AsUTF8(o);
  return *out ? 0 : -1;
}

/* _dist_init(backend, init_method, rank, world_size, timeout_ms, group_name) */
static PyObject *f_init(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 6) return emp_raise_fmt(EM_ERR_INVALID, "_dist_init takes 6 arguments");
  em_pg_options o = {0};
  int64_t rank = -1, world = -1, timeout = 0;
  const char *url = NULL;
  if (arg_backend(args[0], &o.backend) < 0) return NULL;
  if (args[1] != Py_None && !(url = PyUnicode_AsUTF8(args[1]))) return NULL;
  if (emp_arg_int(args[2], "init_process_group", "rank", &rank) < 0 ||
      emp_arg_int(args[3], "init_process_group", "world_size", &world) < 0 ||
      emp_arg_int(args[4], "init_process_group", "timeout", &timeout) < 0)
    return NULL;
  if (args[5] != Py_None && !(o.group_name = PyUnicode_AsUTF8(args[5]))) return NULL;
  o.timeout_ms = timeout;
  em_pg *pg;
  Py_BEGIN_ALLOW_THREADS if (!url) pg = em_pg_init_env(&o);
  else pg = em_pg_init_url(url, (int)rank, (int)world, &o);
  Py_END_ALLOW_THREADS return pg_wrap(pg);
}

static PyObject *pg_rank(PyObject *self, PyObject *unused) {
  return PyLong_FromLong(em_pg_rank(((PGObject *)self)->pg));
}
static PyObject *pg_size(PyObject *self, PyObject *unused) {
  return PyLong_FromLong(em_pg_size(((PGObject *)self)->pg));
}
static PyObject *pg_backend(PyObject *self, PyObject *unused) {
  return PyUnicode_FromString(em_pg_backend_name(((PGObject *)self)->pg));
}
static PyObject *pg_timeout(PyObject *self, PyObject *unused) {
  return PyLong_FromLongLong(em_pg_timeout(((PGObject *)self)->pg));
}

/* new_group(ranks, backend, timeout_ms) */
static PyObject *pg_new_group(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 3) return emp_raise_fmt(EM_ERR_INVALID, "new_group takes 3 arguments");
  em_pg_options o = {0};
  int64_t timeout = 0;
  if (arg_backend(args[1], &o.backend) < 0 || emp_arg_int(args[2], "new_group", "timeout", &timeout) < 0)
    return NULL;
  o.timeout_ms = timeout;
  PyObject *seq = PySequence_Fast(args[0], "new_group: ranks must be a sequence of ints");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  int *ranks = PyMem_Malloc(sizeof *ranks * (size_t)(n + 1));
  PyObject *ret = NULL;
  if (!ranks) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    int64_t r;
    if (emp_arg_int(PySequence_Fast_GET_ITEM(seq, i), "new_group", "ranks", &r) < 0) goto done;
    ranks[i] = (int)r;
  }
  em_pg *pg = ((PGObject *)self)->pg, *sub;
  Py_BEGIN_ALLOW_THREADS sub = em_pg_new_group(pg, (int)n, ranks, &o);
  Py_END_ALLOW_THREADS ret = pg_wrap(sub);
done:
  PyMem_Free(ranks);
  Py_DECREF(seq);
  return ret;
}

/* ---- collectives --------------------------------------------------------------------------- */

static int arg_op(PyObject *o, em_reduce_op *op) {
  int64_t v;
  if (emp_arg_int(o, "collective", "op", &v) < 0) return -1;
  if (v < 0 || v >= EM_REDUCE_OP_COUNT) {
    PyErr_Format(PyExc_ValueError, "invalid ReduceOp %lld", (long long)v);
    return -1;
  }
  *op = (em_reduce_op)v;
  return 0;
}

/* A PyMem array of the tensors of a sequence (borrowed from *keep). */
static int tensor_seq(PyObject *o, const char *fn, PyObject **keep, em_tensor ***ts, Py_ssize_t *n) {
  *keep = PySequence_Tuple(o);
  if (!*keep) return -1;
  *n = PyTuple_GET_SIZE(*keep);
  *ts = PyMem_Malloc(sizeof **ts * (size_t)(*n + 1));
  if (!*ts) {
    Py_CLEAR(*keep);
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < *n; i++)
    if (emp_arg_tensor(PyTuple_GET_ITEM(*keep, i), fn, "tensor_list", &(*ts)[i]) < 0) {
      PyMem_Free(*ts);
      Py_CLEAR(*keep);
      return -1;
    }
  return 0;
}

static PyObject *pg_allreduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  em_tensor *t;
  em_reduce_op op;
  if (nargs != 2 || emp_arg_tensor(args[0], "all_reduce", "tensor", &t) < 0 || arg_op(args[1], &op) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "allreduce(tensor, op)");
    return NULL;
  }
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = em_pg_allreduce(pg, t, op, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, args[0]);
}

static PyObject *pg_broadcast(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  em_tensor *t;
  int64_t root;
  if (nargs != 2 || emp_arg_tensor(args[0], "broadcast", "tensor", &t) < 0 ||
      emp_arg_int(args[1], "broadcast", "src", &root) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "broadcast(tensor, root)");
    return NULL;
  }
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = em_pg_broadcast(pg, t, (int)root, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, args[0]);
}

static PyObject *pg_reduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  em_tensor *t;
  int64_t root;
  em_reduce_op op;
  if (nargs != 3 || emp_arg_tensor(args[0], "reduce", "tensor", &t) < 0 ||
      emp_arg_int(args[1], "reduce", "dst", &root) < 0 || arg_op(args[2], &op) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "reduce(tensor, root, op)");
    return NULL;
  }
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = em_pg_reduce(pg, t, (int)root, op, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, args[0]);
}

/* kinds of list collectives */
enum { L_ALLGATHER, L_REDUCE_SCATTER, L_GATHER, L_SCATTER, L_ALL_TO_ALL };

/* list_collective(kind, tensor, tensor_list or None, root, op) ; all_to_all: (kind, outs, ins, 0, 0) */
static PyObject *pg_list_collective(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 5) return emp_raise_fmt(EM_ERR_INVALID, "_list_collective takes 5 arguments");
  int64_t kind, root;
  em_reduce_op op;
  if (emp_arg_int(args[0], "collective", "kind", &kind) < 0 ||
      emp_arg_int(args[3], "collective", "root", &root) < 0 || arg_op(args[4], &op) < 0)
    return NULL;
  PyObject *keep1 = NULL, *keep2 = NULL, *ret = NULL;
  em_tensor **l1 = NULL, **l2 = NULL, *t = NULL;
  Py_ssize_t n1 = 0, n2 = 0;
  const char *fn = "collective";
  if (kind == L_ALL_TO_ALL) {
    if (tensor_seq(args[1], fn, &keep1, &l1, &n1) < 0 || tensor_seq(args[2], fn, &keep2, &l2, &n2) < 0)
      goto done;
  } else {
    if (emp_arg_tensor(args[1], fn, "tensor", &t) < 0) goto done;
    if (args[2] != Py_None && tensor_seq(args[2], fn, &keep1, &l1, &n1) < 0) goto done;
  }
  em_pg *pg = ((PGObject *)self)->pg;
  int size = em_pg_size(pg);
  if (l1 && kind != L_ALL_TO_ALL && n1 != size) {
    PyErr_Format(PyExc_ValueError, "the tensor list must hold %d tensors (the group size), got %zd", size, n1);
    goto done;
  }
  if (kind == L_ALL_TO_ALL && (n1 != size || n2 != size)) {
    PyErr_Format(PyExc_ValueError, "all_to_all: both lists must hold %d tensors (the group size)", size);
    goto done;
  }
  if ((kind == L_ALLGATHER || kind == L_REDUCE_SCATTER) && !l1) {
    PyErr_SetString(PyExc_ValueError, "a tensor list is required");
    goto done;
  }
  em_work *w = NULL;
  Py_BEGIN_ALLOW_THREADS switch (kind) {
    case L_ALLGATHER: w = em_pg_allgather(pg, l1, t, NULL); break;
    case L_REDUCE_SCATTER: w = em_pg_reduce_scatter(pg, t, l1, op, NULL); break;
    case L_GATHER: w = em_pg_gather(pg, l1, t, (int)root, NULL); break;
    case L_SCATTER: w = em_pg_scatter(pg, t, l1, (int)root, NULL); break;
    default: w = em_pg_all_to_all(pg, l1, l2, NULL); break;
  }
  Py_END_ALLOW_THREADS;
  PyObject *keep = PyTuple_Pack(3, args[1], args[2], keep1 ? keep1 : Py_None);
  if (!keep) {
    if (w) em_work_release(w);
    goto done;
  }
  ret = work_wrap(w, keep);
  Py_DECREF(keep);
done:
  PyMem_Free(l1);
  PyMem_Free(l2);
  Py_XDECREF(keep1);
  Py_XDECREF(keep2);
  return ret;
}

/* tensor_collective(kind, out, in, op): all_gather_into_tensor (0) / reduce_scatter_tensor (1) */
static PyObject *pg_tensor_collective(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  int64_t kind;
  em_tensor *out, *in;
  em_reduce_op op;
  if (nargs != 4 || emp_arg_int(args[0], "collective", "kind", &kind) < 0 ||
      emp_arg_tensor(args[1], "collective", "output", &out) < 0 ||
      emp_arg_tensor(args[2], "collective", "input", &in) < 0 || arg_op(args[3], &op) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_tensor_collective(kind, out, in, op)");
    return NULL;
  }
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = kind == 0 ? em_pg_allgather_into_tensor(pg, out, in, NULL)
                                      : em_pg_reduce_scatter_tensor(pg, out, in, op, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, args[1]);
}

/* p2p(is_send, tensor, peer, tag) */
static PyObject *pg_p2p(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  em_tensor *t;
  int64_t peer, tag;
  int send = nargs == 4 ? PyObject_IsTrue(args[0]) : -1;
  if (send < 0 || emp_arg_tensor(args[1], "send/recv", "tensor", &t) < 0 ||
      emp_arg_int(args[2], "send/recv", "peer", &peer) < 0 || emp_arg_int(args[3], "send/recv", "tag", &tag) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_p2p(is_send, tensor, peer, tag)");
    return NULL;
  }
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = send ? em_pg_send(pg, t, (int)peer, (int)tag, NULL)
                                  : em_pg_recv(pg, t, (int)peer, (int)tag, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, args[1]);
}

static PyObject *pg_barrier(PyObject *self, PyObject *unused) {
  em_work *w;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS w = em_pg_barrier(pg, NULL);
  Py_END_ALLOW_THREADS return work_wrap(w, NULL);
}

static PyObject *pg_monitored_barrier(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  int64_t ms;
  bool all = false;
  if (nargs != 2 || emp_arg_int(args[0], "monitored_barrier", "timeout", &ms) < 0 ||
      emp_arg_bool(args[1], "monitored_barrier", "wait_all_ranks", &all) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "monitored_barrier(timeout_ms, wait_all_ranks)");
    return NULL;
  }
  em_status st;
  em_pg *pg = ((PGObject *)self)->pg;
  Py_BEGIN_ALLOW_THREADS st = em_pg_monitored_barrier(pg, ms, all);
  Py_END_ALLOW_THREADS if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *pg_close(PyObject *self, PyObject *unused) {
  PGObject *o = (PGObject *)self;
  em_pg *pg = o->pg;
  if (pg) {
    /* keep the object valid: later calls fail in arg checks */
    o->pg = NULL;
    Py_BEGIN_ALLOW_THREADS em_pg_release(pg);
    Py_END_ALLOW_THREADS
  }
  Py_RETURN_NONE;
}

#define PG_GUARD(fn)                                                                    \
  static PyObject *g_##fn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {    \
    if (!((PGObject *)self)->pg) return emp_raise_fmt(EM_ERR_STATE, "the process group was destroyed"); \
    return fn(self, args, nargs);                                                       \
  }
PG_GUARD(pg_allreduce)
PG_GUARD(pg_broadcast)
PG_GUARD(pg_reduce)
PG_GUARD(pg_list_collective)
PG_GUARD(pg_tensor_collective)
PG_GUARD(pg_p2p)
PG_GUARD(pg_new_group)
PG_GUARD(pg_monitored_barrier)
static PyObject *g_pg_barrier(PyObject *self, PyObject *unused) {
  if (!((PGObject *)self)->pg) return emp_raise_fmt(EM_ERR_STATE, "the process group was destroyed");
  return pg_barrier(self, unused);
}
#define PG_GUARD0(fn)                                                                   \
  static PyObject *g_##fn(PyObject *self, PyObject *unused) {                           \
    if (!((PGObject *)self)->pg) return emp_raise_fmt(EM_ERR_STATE, "the process group was destroyed"); \
    return fn(self, unused);                                                            \
  }
PG_GUARD0(pg_rank)
PG_GUARD0(pg_size)
PG_GUARD0(pg_backend)
PG_GUARD0(pg_timeout)

static PyMethodDef pg_methods[] = {
    {"rank", g_pg_rank, METH_NOARGS, NULL},
    {"size", g_pg_size, METH_NOARGS, NULL},
    {"backend", g_pg_backend, METH_NOARGS, NULL},
    {"timeout_ms", g_pg_timeout, METH_NOARGS, NULL},
    {"new_group", EMP_FN(g_pg_new_group), METH_FASTCALL, NULL},
    {"allreduce", EMP_FN(g_pg_allreduce), METH_FASTCALL, NULL},
    {"broadcast", EMP_FN(g_pg_broadcast), METH_FASTCALL, NULL},
    {"reduce", EMP_FN(g_pg_reduce), METH_FASTCALL, NULL},
    {"list_collective", EMP_FN(g_pg_list_collective), METH_FASTCALL, NULL},
    {"tensor_collective", EMP_FN(g_pg_tensor_collective), METH_FASTCALL, NULL},
    {"p2p", EMP_FN(g_pg_p2p), METH_FASTCALL, NULL},
    {"barrier", g_pg_barrier, METH_NOARGS, NULL},
    {"monitored_barrier", EMP_FN(g_pg_monitored_barrier), METH_FASTCALL, NULL},
    {"close", pg_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PG_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._PG",
    .tp_basicsize = sizeof(PGObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = pg_dealloc,
    .tp_methods = pg_methods,
};

#ifdef EMP_HAVE_DDP
/* ---- shell modules ------------------------------------------------------------------------------ */

static const em_module_ops SHELL_OPS = {"PythonModule", NULL, NULL, NULL};

/* spec: (params [(name, tensor)], buffers [(name, tensor, persistent)],
 * children [(name, spec)]); memo maps id(spec) to an em_module capsule so a
 * module shared by two parents is one shell. New reference or NULL. */
static em_module *build_shell(PyObject *spec, int depth) {
  if (depth > 256) return (PyErr_SetString(PyExc_RecursionError, "module tree too deep"), NULL);
  PyObject *params, *bufs, *kids;
  if (!PyArg_ParseTuple(spec, "O!O!O!", &PyList_Type, &params, &PyList_Type, &bufs, &PyList_Type, &kids))
    return NULL;
  em_module *m = em_module_create(&SHELL_OPS, NULL);
  if (!m) return (emp_raise(), NULL);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params); i++) {
    const char *name;
    PyObject *t;
    em_tensor *et;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(params, i), "sO", &name, &t) ||
        emp_arg_tensor(t, "DistributedDataParallel", "parameter", &et) < 0)
      goto fail;
    if (em_module_register_parameter(m, name, et)) {
      emp_raise();
      goto fail;
    }
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(bufs); i++) {
    const char *name;
    PyObject *t;
    int persistent;
    em_tensor *et;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(bufs, i), "sOp", &name, &t, &persistent) ||
        emp_arg_tensor(t, "DistributedDataParallel", "buffer", &et) < 0)
      goto fail;
    if (em_module_register_buffer(m, name, et, persistent)) {
      emp_raise();
      goto fail;
    }
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kids); i++) {
    const char *name;
    PyObject *sub;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(kids, i), "sO", &name, &sub)) goto fail;
    em_module *c = build_shell(sub, depth + 1);
    if (!c) goto fail;
    if (em_module_register_module(m, name, c)) { /* steals c */
      emp_raise();
      goto fail;
    }
  }
  return m;
fail:
  em_module_release(m);
  return NULL;
}

/* ---- _DDP ------------------------------------------------------------------------------------------ */

typedef struct {
  PyObject_HEAD
  em_ddp *d;
  em_module *shell;
  PyObject *pg;   /* the _PG object */
  PyObject *hook; /* Python comm hook (callable) or NULL */
  PyObject *hook_state;
} DDPObject;

typedef struct {
  PyObject_HEAD
  int index, nbuckets;
  PyObject *buffer;
  PyObject *params; /* tuple of tensors */
  PyObject *offsets;
} BucketObject;

static void bucket_dealloc(PyObject *self) {
  BucketObject *b = (BucketObject *)self;
  Py_XDECREF(b->buffer);
  Py_XDECREF(b->params);
  Py_XDECREF(b->offsets);
  PyObject_Free(self);
}

static PyObject *bucket_index(PyObject *self, PyObject *unused) {
  return PyLong_FromLong(((BucketObject *)self)->index);
}
static PyObject *bucket_buffer(PyObject *self, PyObject *unused) {
  return Py_NewRef(((BucketObject *)self)->buffer);
}
static PyObject *bucket_parameters(PyObject *self, PyObject *unused) {
  return PySequence_List(((BucketObject *)self)->params);
}
static PyObject *bucket_offsets(PyObject *self, PyObject *unused) {
  return Py_NewRef(((BucketObject *)self)->offsets);
}
static PyObject *bucket_is_last(PyObject *self, PyObject *unused) {
  BucketObject *b = (BucketObject *)self;
  return PyBool_FromLong(b->index == b->nbuckets - 1);
}

static PyMethodDef bucket_methods[] = {
    {"index", bucket_index, METH_NOARGS, NULL},
    {"buffer", bucket_buffer, METH_NOARGS, "the flat gradient buffer of this bucket"},
    {"parameters", bucket_parameters, METH_NOARGS, NULL},
    {"offsets", bucket_offsets, METH_NOARGS, "element offsets of each parameter's gradient"},
    {"is_last", bucket_is_last, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Bucket_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._GradBucket",
    .tp_basicsize = sizeof(BucketObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = bucket_dealloc,
    .tp_methods = bucket_methods,
};

/* A Python comm hook behind the C hook: hook(state, bucket) returns a
 * tensor, or an object with wait() returning a tensor (or a list whose
 * first element is one): the result of the bucket. */
static em_work *py_hook(void *ctx, em_pg *pg, em_ddp_bucket *bucket) {
  DDPObject *self = ctx;
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return em_set_error(EM_ERR_STATE, "Python is finalizing"), NULL;
  em_work *w = NULL;
  BucketObject *b = PyObject_New(BucketObject, &Bucket_Type);
  PyObject *r = NULL, *v = NULL;
  if (!b) goto pyfail;
  b->index = bucket->index;
  b->nbuckets = em_ddp_get_stats(self->d).nbuckets;
  b->buffer = emp_wrap_borrowed(bucket->buffer);
  b->params = PyTuple_New(bucket->nparams);
  b->offsets = PyList_New(bucket->nparams);
  if (!b->buffer || !b->params || !b->offsets) goto pyfail;
  for (int i = 0; i < bucket->nparams; i++) {
    PyObject *p = emp_wrap_borrowed(bucket->params[i]);
    PyObject *off = PyLong_FromLongLong(bucket->offsets[i]);
    if (!p || !off) {
      Py_XDECREF(p);
      Py_XDECREF(off);
      goto pyfail;
    }
    PyTuple_SET_ITEM(b->params, i, p);
    PyList_SET_ITEM(b->offsets, i, off);
  }
  r = PyObject_CallFunctionObjArgs(self->hook, self->hook_state ? self->hook_state : Py_None,
                                   (PyObject *)b, NULL);
  if (!r) goto pyfail;
  if (emp_is_tensor(r)) {
    v = Py_NewRef(r);
  } else {
    v = PyObject_CallMethod(r, "wait", NULL);
    if (!v) goto pyfail;
    if (PyList_Check(v) || PyTuple_Check(v)) {
      PyObject *first = PySequence_Size(v) > 0 ? PySequence_GetItem(v, 0) : NULL;
      Py_DECREF(v);
      v = first;
      if (!v) goto pyfail;
    }
  }
  if (!emp_is_tensor(v)) {
    PyErr_Format(PyExc_TypeError,
                 "a DDP comm hook must return a Tensor or a future whose value is one, got %s",
                 Py_TYPE(v)->tp_name);
    goto pyfail;
  }
  em_tensor *res = emp_tensor(v);
  if (res != bucket->buffer) bucket->result = em_tensor_retain(res);
  w = em_work_completed(EM_OK);
  goto done;
pyfail:
  emp_park_exception();
  w = NULL;
done:
  Py_XDECREF(b);
  Py_XDECREF(r);
  Py_XDECREF(v);
  emp_gil_leave(g);
  return w;
}

static void ddp_dealloc(PyObject *s) {
  DDPObject *self = (DDPObject *)s;
  em_ddp *d = self->d;
  self->d = NULL;
  if (d) {
    Py_BEGIN_ALLOW_THREADS em_ddp_free(d);
    Py_END_ALLOW_THREADS
  }
  em_module_release(self->shell);
  Py_XDECREF(self->pg);
  Py_XDECREF(self->hook);
  Py_XDECREF(self->hook_state);
  PyObject_Free(s);
}

/* _DDP(spec, pg, bucket_cap_bytes, first_bucket_cap_bytes, gradient_as_bucket_view,
 *      find_unused_parameters, static_graph, broadcast_buffers) */
static PyObject *ddp_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  PyObject *spec, *pgo;
  long long cap = 0, first = 0;
  int gabv = 0, unused = 0, sg = 0, bb = 1;
  if (!PyArg_ParseTuple(args, "OO!LLpppp:_DDP", &spec, &PG_Type, &pgo, &cap, &first, &gabv, &unused,
                        &sg, &bb))
    return NULL;
  em_pg *pg;
  if (arg_pg(pgo, &pg) < 0) return NULL;
  em_module *shell = build_shell(spec, 0);
  if (!shell) return NULL;
  em_ddp_options o = {.bucket_cap_bytes = cap, .first_bucket_cap_bytes = first,
                      .gradient_as_bucket_view = gabv, .find_unused_parameters = unused,
                      .static_graph = sg, .no_broadcast_buffers = !bb};
  em_ddp *d;
  Py_BEGIN_ALLOW_THREADS d = em_ddp_create(shell, pg, &o);
  Py_END_ALLOW_THREADS if (!d) {
    em_module_release(shell);
    return emp_raise();
  }
  DDPObject *self = (DDPObject *)tp->tp_alloc(tp, 0);
  if (!self) {
    Py_BEGIN_ALLOW_THREADS em_ddp_free(d);
    Py_END_ALLOW_THREADS em_module_release(shell);
    return NULL;
  }
  self->d = d;
  self->shell = shell;
  self->pg = Py_NewRef(pgo);
  return (PyObject *)self;
}

static PyObject *ddp_pre_forward(PyObject *s, PyObject *training) {
  DDPObject *self = (DDPObject *)s;
  int tr = PyObject_IsTrue(training);
  if (tr < 0) return NULL;
  if (em_module_is_training(self->shell) != (bool)tr) em_module_train(self->shell, tr);
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_ddp_pre_forward(self->d);
  Py_END_ALLOW_THREADS if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *ddp_post_forward(PyObject *s, PyObject *outs) {
  DDPObject *self = (DDPObject *)s;
  PyObject *keep;
  em_tensor **ts;
  Py_ssize_t n;
  if (tensor_seq(outs, "DistributedDataParallel", &keep, &ts, &n) < 0) return NULL;
  em_status st = em_ddp_post_forward(self->d, (int)n, ts);
  PyMem_Free(ts);
  Py_DECREF(keep);
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *ddp_set_no_sync(PyObject *s, PyObject *arg) {
  int v = PyObject_IsTrue(arg);
  if (v < 0) return NULL;
  return PyBool_FromLong(em_ddp_set_no_sync(((DDPObject *)s)->d, v));
}

/* register_comm_hook(kind, hook, state): kind "allreduce" | "fp16" | "bf16" | "python" */
static PyObject *ddp_register_comm_hook(PyObject *s, PyObject *const *args, Py_ssize_t nargs) {
  DDPObject *self = (DDPObject *)s;
  if (nargs != 3) return emp_raise_fmt(EM_ERR_INVALID, "register_comm_hook(kind, hook, state)");
  const char *kind = PyUnicode_AsUTF8(args[0]);
  if (!kind) return NULL;
  em_status st;
  if (strcmp(kind, "allreduce") == 0) st = em_ddp_register_comm_hook(self->d, em_ddp_hook_allreduce, NULL, NULL);
  else if (strcmp(kind, "fp16") == 0) st = em_ddp_register_comm_hook(self->d, em_ddp_hook_fp16_compress, NULL, NULL);
  else if (strcmp(kind, "bf16") == 0) st = em_ddp_register_comm_hook(self->d, em_ddp_hook_bf16_compress, NULL, NULL);
  else {
    if (!PyCallable_Check(args[1])) {
      PyErr_SetString(PyExc_TypeError, "register_comm_hook: hook must be callable");
      return NULL;
    }
    st = em_ddp_register_comm_hook(self->d, py_hook, self, NULL);
    if (!st) {
      Py_XSETREF(self->hook, Py_NewRef(args[1]));
      Py_XSETREF(self->hook_state, Py_NewRef(args[2]));
    }
  }
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *ddp_stats(PyObject *s, PyObject *unused) {
  em_ddp_stats st = em_ddp_get_stats(((DDPObject *)s)->d);
  return Py_BuildValue("{s:i,s:L,s:L,s:L,s:O}", "nbuckets", st.nbuckets, "iterations",
                       (long long)st.iterations, "buckets_launched", (long long)st.buckets_launched,
                       "launched_during_backward", (long long)st.launched_during_backward,
                       "rebuilt", st.rebuilt ? Py_True : Py_False);
}

static PyObject *ddp_bucket_params(PyObject *s, PyObject *arg) {
  int64_t b;
  if (emp_arg_int(arg, "bucket_params", "bucket", &b) < 0) return NULL;
  em_ddp *d = ((DDPObject *)s)->d;
  int n = em_ddp_bucket_params(d, (int)b, NULL, 0);
  int *idx = PyMem_Malloc(sizeof *idx * (size_t)(n + 1));
  if (!idx) return PyErr_NoMemory();
  em_ddp_bucket_params(d, (int)b, idx, n);
  PyObject *l = PyList_New(n);
  for (int i = 0; l && i < n; i++) PyList_SET_ITEM(l, i, PyLong_FromLong(idx[i]));
  PyMem_Free(idx);
  return l;
}

static PyMethodDef ddp_methods[] = {
    {"pre_forward", ddp_pre_forward, METH_O, "pre_forward(training)"},
    {"post_forward", ddp_post_forward, METH_O, "post_forward(output tensors)"},
    {"set_no_sync", ddp_set_no_sync, METH_O, "set_no_sync(flag) -> previous"},
    {"register_comm_hook", EMP_FN(ddp_register_comm_hook), METH_FASTCALL, NULL},
    {"stats", ddp_stats, METH_NOARGS, NULL},
    {"bucket_params", ddp_bucket_params, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DDP_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._DDP",
    .tp_basicsize = sizeof(DDPObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ddp_new,
    .tp_dealloc = ddp_dealloc,
    .tp_methods = ddp_methods,
};

#else
/* ---- _DDP without the reducer in this build ------------------------------------------------ */

static PyObject *ddp_missing(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  PyErr_SetString(PyExc_NotImplementedError,
                  "DistributedDataParallel: the DDP reducer (comm/ddp.c) is not part of this build");
  return NULL;
}

static PyTypeObject DDP_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._DDP",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ddp_missing,
};
static PyTypeObject Bucket_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._GradBucket",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

#endif

static PyObject *f_reduce_op_names(PyObject *mod, PyObject *unused) {
  PyObject *l = PyList_New(EM_REDUCE_OP_COUNT);
  for (int i = 0; l && i < EM_REDUCE_OP_COUNT; i++)
    PyList_SET_ITEM(l, i, PyUnicode_FromString(em_reduce_op_name((em_reduce_op)i)));
  return l;
}

static PyMethodDef dist_functions[] = {
    {"_dist_init", EMP_FN(f_init), METH_FASTCALL, NULL},
    {"_dist_reduce_op_names", f_reduce_op_names, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int emp_init_distributed(PyObject *module) {
  PyTypeObject *types[] = {&PG_Type, &Work_Type, &DDP_Type, &Bucket_Type};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (PyType_Ready(types[i]) < 0) return -1;
  if (PyModule_AddObjectRef(module, "_DDP", (PyObject *)&DDP_Type) < 0) return -1;
  return PyModule_AddFunctions(module, dist_functions);
}
