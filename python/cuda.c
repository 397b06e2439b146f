/* ember._C's CUDA layer behind ember.cuda (python/ember/cuda.py): device
 * queries, synchronisation, the caching allocator's statistics, matmul
 * precision, record_stream, and the types ember.cuda.Stream and
 * ember.cuda.Event, over core/cuda/ember_cuda.h. A device argument is None
 * (the current device), an int, "cuda:N" or an ember.device. Without CUDA
 * these raise RuntimeError with the C layer's reason.
 *
 * Streams: a Stream either owns its em_cuda_stream (made by Stream(device,
 * priority)) or stands for a default stream (the runtime's, never
 * destroyed). The stream made current through _cuda_set_stream is kept
 * alive by a reference held here until another stream of its device
 * becomes current, so the C layer never holds a freed stream. An owned
 * stream is not destroyed with its object but kept for the next Stream of
 * the same device and priority (as torch pools its streams): the caching
 * allocator's blocks are tied to their stream, and would be stranded by
 * a destroyed one. Waiting calls release the GIL. */
#include "core/cuda/ember_cuda.h"
#include "python/ember_py.h"

#define MAX_DEVICES 64

typedef struct {
  PyObject_HEAD
  em_cuda_stream *s;
  bool owned;
  int device, priority;
} EmStreamObject;

typedef struct {
  PyObject_HEAD
  em_cuda_event *e;
} EmEventObject;

static PyTypeObject EmStream_Type, EmEvent_Type;

/* Streams of dead Stream objects, for reuse (under the GIL). */
typedef struct pooled {
  em_cuda_stream *s;
  int device, priority;
} pooled;
static pooled *pool;
static int npool, cappool;
/* The Python stream made current on each device (a new reference). */
static PyObject *current[MAX_DEVICES];

/* A device argument as torch.cuda takes it (None: the current device; an
 * int; "cuda:1"; ember.device) as an index, -1 for the current one. */
static int arg_device(PyObject *o, const char *fname, int *out) {
  *out = -1;
  if (!o || o == Py_None) return 0;
  em_device d = EM_DEVICE_CPU;
  if (emp_arg_device(o, fname, "device", &d) < 0) return -1;
  if (d.type != EM_CUDA) {
    char name[32];
    PyErr_Format(PyExc_ValueError, "%s(): expected a cuda device, got %s", fname,
                 em_device_str(d, name, sizeof name));
    return -1;
  }
  if (d.index >= MAX_DEVICES) {
    PyErr_Format(PyExc_ValueError, "%s(): invalid device index %d", fname, (int)d.index);
    return -1;
  }
  *out = d.index;
  return 0;
}

/* None, or the exception for a failed status. */
static PyObject *none_or_raise(em_status st) {
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

/* ---- devices ------------------------------------------------------------------------ */

static PyObject *f_is_available(PyObject *m, PyObject *unused) {
  return PyBool_FromLong(em_cuda_is_available());
}
static PyObject *f_cudnn_is_available(PyObject *m, PyObject *unused) {
  return PyBool_FromLong(em_cudnn_is_available());
}
static PyObject *f_unavailable_reason(PyObject *m, PyObject *unused) {
  return PyUnicode_FromString(em_cuda_unavailable_reason());
}
static PyObject *f_device_count(PyObject *m, PyObject *unused) {
  return PyLong_FromLong(em_cuda_device_count());
}

/* Raises RuntimeError naming why CUDA cannot be used; NULL. */
static PyObject *unavailable(const char *fname) {
  return PyErr_Format(PyExc_RuntimeError, "%s: CUDA is not available: %s", fname,
                      em_cuda_unavailable_reason());
}

static PyObject *f_current_device(PyObject *m, PyObject *unused) {
  int d = em_cuda_current_device();
  return d < 0 ? unavailable("current_device") : PyLong_FromLong(d);
}
static PyObject *f_set_device(PyObject *m, PyObject *dev) {
  int d;
  if (arg_device(dev, "set_device", &d) < 0) return NULL;
  if (d < 0) return PyErr_Format(PyExc_ValueError, "set_device(): expected a device, got None");
  return none_or_raise(em_cuda_set_device(d));
}
static PyObject *f_device_name(PyObject *m, PyObject *dev) {
  int d;
  char name[256];
  if (arg_device(dev, "get_device_name", &d) < 0) return NULL;
  if (em_cuda_device_name(d, name, sizeof name)) return emp_raise();
  return PyUnicode_FromString(name);
}
static PyObject *f_synchronize(PyObject *m, PyObject *dev) {
  int d;
  em_status st;
  if (arg_device(dev, "synchronize", &d) < 0) return NULL;
  EMP_NOGIL(st = em_cuda_synchronize(d));
  return none_or_raise(st);
}

/* ---- memory ------------------------------------------------------------------------ */

static PyObject *f_memory_stats(PyObject *m, PyObject *dev) {
  int d;
  em_cuda_memory_stats s;
  if (arg_device(dev, "memory_stats", &d) < 0) return NULL;
  if (em_cuda_memory_stats_get(d, &s)) return emp_raise();
  return Py_BuildValue(
      "{sKsKsKsKsKsLsLsLsLsLsL}", "allocated_bytes", (unsigned long long)s.allocated,
      "requested_bytes", (unsigned long long)s.requested, "reserved_bytes",
      (unsigned long long)s.reserved, "allocated_bytes.peak", (unsigned long long)s.peak_allocated,
      "reserved_bytes.peak", (unsigned long long)s.peak_reserved, "num_alloc_retries", 0LL,
      "num_allocs", (long long)s.num_allocs, "num_device_alloc", (long long)s.num_device_allocs,
      "num_device_free", (long long)s.num_device_frees, "num_ooms", (long long)s.num_ooms,
      "segment.count", (long long)s.num_segments);
}
static PyObject *f_reset_peak_memory_stats(PyObject *m, PyObject *dev) {
  int d;
  if (arg_device(dev, "reset_peak_memory_stats", &d) < 0) return NULL;
  return none_or_raise(em_cuda_reset_peak_memory_stats(d));
}
static PyObject *f_empty_cache(PyObject *m, PyObject *unused) {
  em_status st;
  EMP_NOGIL(st = em_cuda_empty_cache());
  return none_or_raise(st);
}

/* ---- matmul precision --------------------------------------------------------------------- */

static PyObject *f_set_matmul_precision(PyObject *m, PyObject *p) {
  if (!PyUnicode_Check(p)) {
    PyErr_Format(PyExc_TypeError, "set_float32_matmul_precision(): argument 'precision' must be "
                 "str, not %s", Py_TYPE(p)->tp_name);
    return NULL;
  }
  return none_or_raise(em_cuda_set_float32_matmul_precision(PyUnicode_AsUTF8(p)));
}
static PyObject *f_get_matmul_precision(PyObject *m, PyObject *unused) {
  return PyUnicode_FromString(em_cuda_get_float32_matmul_precision());
}

/* ---- streams --------------------------------------------------------------------------- */

/* Keeps s for a later Stream (destroys it if the pool cannot grow). */
static void pool_put(em_cuda_stream *s, int device, int priority) {
  if (npool == cappool) {
    int cap = cappool ? 2 * cappool : 8;
    pooled *p = realloc(pool, (size_t)cap * sizeof *p);
    if (!p) {
      em_status st;
      EMP_NOGIL(st = em_cuda_stream_destroy(s));
      (void)st; /* it waited for the stream's work; nothing to report to */
      return;
    }
    pool = p;
    cappool = cap;
  }
  pool[npool++] = (pooled){s, device, priority};
}

static em_cuda_stream *pool_take(int device, int priority) {
  for (int i = npool - 1; i >= 0; i--)
    if (pool[i].device == device && pool[i].priority == priority) {
      em_cuda_stream *s = pool[i].s;
      pool[i] = pool[--npool];
      return s;
    }
  return NULL;
}

static PyObject *stream_wrap(em_cuda_stream *s, bool owned, int priority) {
  EmStreamObject *o = PyObject_New(EmStreamObject, &EmStream_Type);
  if (!o) {
    if (owned) pool_put(s, em_cuda_stream_device(s), priority);
    return NULL;
  }
  o->s = s;
  o->owned = owned;
  o->device = em_cuda_stream_device(s);
  o->priority = priority;
  return (PyObject *)o;
}

/* Stream(device=None, priority=0): a new stream. */
static PyObject *stream_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  static char *names[] = {"device", "priority", NULL};
  PyObject *dev = NULL;
  int device, priority = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|Oi:Stream", names, &dev, &priority) ||
      arg_device(dev, "Stream", &device) < 0)
    return NULL;
  if (device < 0 && (device = em_cuda_current_device()) < 0) return unavailable("Stream");
  em_cuda_stream *s = pool_take(device, priority);
  if (!s && !(s = em_cuda_stream_create(device, priority))) return emp_raise();
  return stream_wrap(s, true, priority);
}

static void stream_dealloc(PyObject *self) {
  EmStreamObject *o = (EmStreamObject *)self;
  /* never current here: current[] holds a reference to that one */
  if (o->owned && o->s) pool_put(o->s, o->device, o->priority);
  PyObject_Free(self);
}

/* The Python object for em stream s: the owner when s is current (held in
 * current[]), else a wrapper of a default stream. */
static PyObject *stream_obj(em_cuda_stream *s) {
  if (!s) return emp_raise();
  int d = em_cuda_stream_device(s);
  if (d >= 0 && d < MAX_DEVICES && current[d] && ((EmStreamObject *)current[d])->s == s)
    return Py_NewRef(current[d]);
  return stream_wrap(s, false, 0);
}

static PyObject *f_current_stream(PyObject *m, PyObject *dev) {
  int d;
  if (arg_device(dev, "current_stream", &d) < 0) return NULL;
  return stream_obj(em_cuda_current_stream(d));
}
static PyObject *f_default_stream(PyObject *m, PyObject *dev) {
  int d;
  if (arg_device(dev, "default_stream", &d) < 0) return NULL;
  em_cuda_stream *s = em_cuda_default_stream(d);
  return s ? stream_wrap(s, false, 0) : emp_raise();
}

static int arg_stream(PyObject *o, const char *fname, em_cuda_stream **out) {
  if (!o || o == Py_None) {
    *out = NULL; /* the current stream */
    return 0;
  }
  if (!PyObject_TypeCheck(o, &EmStream_Type)) {
    PyErr_Format(PyExc_TypeError, "%s(): expected an ember.cuda.Stream, not %s", fname,
                 Py_TYPE(o)->tp_name);
    return -1;
  }
  *out = ((EmStreamObject *)o)->s;
  return 0;
}

/* _cuda_set_stream(stream): makes it its device's current stream. */
static PyObject *f_set_stream(PyObject *m, PyObject *o) {
  em_cuda_stream *s;
  if (arg_stream(o, "set_stream", &s) < 0) return NULL;
  if (!s) Py_RETURN_NONE;
  int d = em_cuda_stream_device(s);
  if (d < 0 || d >= MAX_DEVICES) return PyErr_Format(PyExc_RuntimeError, "set_stream: bad stream");
  if (em_cuda_set_current_stream(s)) return emp_raise();
  PyObject *old = current[d];
  current[d] = ((EmStreamObject *)o)->owned ? Py_NewRef(o) : NULL;
  Py_XDECREF(old);
  Py_RETURN_NONE;
}

static PyObject *stream_synchronize(PyObject *self, PyObject *unused) {
  em_status st;
  EMP_NOGIL(st = em_cuda_stream_synchronize(((EmStreamObject *)self)->s));
  return none_or_raise(st);
}
static PyObject *stream_query(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_cuda_stream_query(((EmStreamObject *)self)->s));
}
static PyObject *stream_wait_stream(PyObject *self, PyObject *other) {
  em_cuda_stream *s;
  if (arg_stream(other, "wait_stream", &s) < 0) return NULL;
  if (!s) s = em_cuda_current_stream(-1);
  return none_or_raise(em_cuda_stream_wait_stream(((EmStreamObject *)self)->s, s));
}
static PyObject *stream_wait_event(PyObject *self, PyObject *ev) {
  if (!PyObject_TypeCheck(ev, &EmEvent_Type))
    return PyErr_Format(PyExc_TypeError, "wait_event(): expected an ember.cuda.Event, not %s",
                        Py_TYPE(ev)->tp_name);
  return none_or_raise(em_cuda_stream_wait_event(((EmStreamObject *)self)->s, ((EmEventObject *)ev)->e));
}
static PyObject *stream_get_device(PyObject *self, void *c) {
  return PyLong_FromLong(em_cuda_stream_device(((EmStreamObject *)self)->s));
}
static PyObject *stream_get_handle(PyObject *self, void *c) {
  return PyLong_FromVoidPtr(em_cuda_stream_handle(((EmStreamObject *)self)->s));
}
static PyObject *stream_richcompare(PyObject *a, PyObject *b, int op) {
  if (!PyObject_TypeCheck(b, &EmStream_Type) || (op != Py_EQ && op != Py_NE))
    Py_RETURN_NOTIMPLEMENTED;
  bool eq = ((EmStreamObject *)a)->s == ((EmStreamObject *)b)->s;
  return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}
static Py_hash_t stream_hash(PyObject *self) {
  return _Py_HashPointer(((EmStreamObject *)self)->s);
}

static PyMethodDef stream_methods[] = {
    {"synchronize", stream_synchronize, METH_NOARGS, "Waits for all work queued on the stream."},
    {"query", stream_query, METH_NOARGS, "True when all work queued on the stream has finished."},
    {"wait_stream", stream_wait_stream, METH_O, "Later work on this stream waits for the other's."},
    {"wait_event", stream_wait_event, METH_O, "Later work on this stream waits for the event."},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef stream_getset[] = {
    {"device_index", stream_get_device, NULL, NULL, NULL},
    {"cuda_stream", stream_get_handle, NULL, "The cudaStream_t as an int.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyTypeObject EmStream_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.cuda.Stream",
    .tp_basicsize = sizeof(EmStreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = stream_new,
    .tp_dealloc = stream_dealloc,
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
    .tp_richcompare = stream_richcompare,
    .tp_hash = stream_hash,
    .tp_doc = "Stream(device=None, priority=0): a CUDA stream; priority < 0 is higher.",
};

/* ---- events ---------------------------------------------------------------------------- */

static PyObject *event_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  static char *names[] = {"enable_timing", NULL};
  int timing = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|p:Event", names, &timing)) return NULL;
  em_cuda_event *e = em_cuda_event_create(timing);
  if (!e) return emp_raise();
  EmEventObject *o = PyObject_New(EmEventObject, &EmEvent_Type);
  if (!o) {
    em_cuda_event_destroy(e);
    return NULL;
  }
  o->e = e;
  return (PyObject *)o;
}
static void event_dealloc(PyObject *self) {
  em_cuda_event_destroy(((EmEventObject *)self)->e);
  PyObject_Free(self);
}
static PyObject *event_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kw) {
  static const char *const names[] = {"stream", NULL};
  PyObject *a[1];
  em_cuda_stream *s;
  if (emp_parse("record", names, 0, args, nargs, kw, a) < 0 || arg_stream(a[0], "record", &s) < 0)
    return NULL;
  return none_or_raise(em_cuda_event_record(((EmEventObject *)self)->e, s));
}
static PyObject *event_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"stream", NULL};
  PyObject *a[1];
  em_cuda_stream *s;
  if (emp_parse("wait", names, 0, args, nargs, kw, a) < 0 || arg_stream(a[0], "wait", &s) < 0)
    return NULL;
  return none_or_raise(em_cuda_stream_wait_event(s, ((EmEventObject *)self)->e));
}
static PyObject *event_query(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_cuda_event_query(((EmEventObject *)self)->e));
}
static PyObject *event_synchronize(PyObject *self, PyObject *unused) {
  em_status st;
  EMP_NOGIL(st = em_cuda_event_synchronize(((EmEventObject *)self)->e));
  return none_or_raise(st);
}
static PyObject *event_elapsed_time(PyObject *self, PyObject *end) {
  if (!PyObject_TypeCheck(end, &EmEvent_Type))
    return PyErr_Format(PyExc_TypeError, "elapsed_time(): expected an ember.cuda.Event, not %s",
                        Py_TYPE(end)->tp_name);
  float ms;
  if (em_cuda_event_elapsed_ms(((EmEventObject *)self)->e, ((EmEventObject *)end)->e, &ms))
    return emp_raise();
  return PyFloat_FromDouble(ms);
}

static PyMethodDef event_methods[] = {
    {"record", EMP_FN(event_record), METH_FASTCALL | METH_KEYWORDS,
     "record(stream=None): marks the point reached by the stream's work (current stream)."},
    {"wait", EMP_FN(event_wait), METH_FASTCALL | METH_KEYWORDS,
     "wait(stream=None): later work on the stream waits for the recorded point."},
    {"query", event_query, METH_NOARGS, "True when the work before the record has finished."},
    {"synchronize", event_synchronize, METH_NOARGS, "Waits until the event is reached."},
    {"elapsed_time", event_elapsed_time, METH_O, "Milliseconds from this event to end."},
    {NULL, NULL, 0, NULL},
};
static PyTypeObject EmEvent_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.cuda.Event",
    .tp_basicsize = sizeof(EmEventObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = event_new,
    .tp_dealloc = event_dealloc,
    .tp_methods = event_methods,
    .tp_doc = "Event(enable_timing=False): a point in a stream's work to wait for or time.",
};

/* ---- tensors ------------------------------------------------------------------------------ */

/* _cuda_record_stream(tensor, stream): Tensor.record_stream. */
static PyObject *f_record_stream(PyObject *m, PyObject *args) {
  PyObject *t, *o;
  em_cuda_stream *s;
  if (!PyArg_ParseTuple(args, "OO:record_stream", &t, &o)) return NULL;
  em_tensor *x;
  if (emp_arg_tensor(t, "record_stream", "self", &x) < 0 || arg_stream(o, "record_stream", &s) < 0)
    return NULL;
  if (!s) return PyErr_Format(PyExc_TypeError, "record_stream(): expected an ember.cuda.Stream");
  return none_or_raise(em_tensor_record_stream(x, s));
}

static PyMethodDef cuda_functions[] = {
    {"_cuda_is_available", f_is_available, METH_NOARGS, NULL},
    {"_cudnn_is_available", f_cudnn_is_available, METH_NOARGS, NULL},
    {"_cuda_unavailable_reason", f_unavailable_reason, METH_NOARGS, NULL},
    {"_cuda_device_count", f_device_count, METH_NOARGS, NULL},
    {"_cuda_current_device", f_current_device, METH_NOARGS, NULL},
    {"_cuda_set_device", f_set_device, METH_O, NULL},
    {"_cuda_device_name", f_device_name, METH_O, NULL},
    {"_cuda_synchronize", f_synchronize, METH_O, NULL},
    {"_cuda_memory_stats", f_memory_stats, METH_O, NULL},
    {"_cuda_reset_peak_memory_stats", f_reset_peak_memory_stats, METH_O, NULL},
    {"_cuda_empty_cache", f_empty_cache, METH_NOARGS, NULL},
    {"_cuda_current_stream", f_current_stream, METH_O, NULL},
    {"_cuda_default_stream", f_default_stream, METH_O, NULL},
    {"_cuda_set_stream", f_set_stream, METH_O, NULL},
    {"_cuda_record_stream", f_record_stream, METH_VARARGS, NULL},
    {"set_float32_matmul_precision", f_set_matmul_precision, METH_O,
     "'highest' (float32 products), 'high' (TF32) or 'medium' (bfloat16) for GPU matmuls."},
    {"get_float32_matmul_precision", f_get_matmul_precision, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int emp_init_cuda(PyObject *m) {
  if (PyType_Ready(&EmStream_Type) < 0 || PyType_Ready(&EmEvent_Type) < 0) return -1;
  if (PyModule_AddObjectRef(m, "_CudaStream", (PyObject *)&EmStream_Type) < 0 ||
      PyModule_AddObjectRef(m, "_CudaEvent", (PyObject *)&EmEvent_Type) < 0)
    return -1;
  return PyModule_AddFunctions(m, cuda_functions);
}
