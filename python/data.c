/* ember._C bindings for ember.utils.data, ember.datasets and
 * ember.multiprocessing over dataloader/dataloader.h.
 *
 * Objects (internal; the Python package wraps them):
 *   _Dataset   an em_dl_dataset: a C one (TensorDataset, Subset, Concat,
 *              MNIST) or a Python dataset behind callbacks.
 *   _Sampler   an em_dl_sampler: a C one or a Python sampler behind
 *              callbacks (iterated in the main process only).
 *   _Loader    an em_dl_loader; iter() gives a _LoaderIter whose next()
 *              returns (tensors, meta, worker) for each batch.
 *
 * Python datasets in C. A sample must be a tuple of tensors, but a Python
 * dataset returns any object: its get / iter_next callbacks park the
 * object in the dataset's stash (a dict in the process that loads it: a
 * worker, or the main process with num_workers=0) and hand C a 0-dim int64
 * "handle" tensor; the collate callback takes the objects back out of the
 * stash, calls the Python collate function, and flattens the result
 * through pack() into batch tensors (added to the batch builder: in a
 * worker they live in the shared-memory slot, zero copy for the main
 * process) plus meta bytes (the pickled structure with tensors replaced
 * by their positions). _dl_stack, called by default_collate, stacks
 * straight into the slot while a worker collates.
 *
 * Errors. In the main process a Python exception raised by a callback is
 * parked (python/errors.c) and comes back out unchanged. In a worker it
 * becomes the worker's error text: "Caught ValueError in DataLoader worker
 * process 0.\nOriginal Traceback (most recent call last): ..." (PyTorch's
 * wording, with module.qualname for a class not in builtins; the
 * traceback trimmed to fit a worker's report of 6 KiB), which
 * the main process receives prefixed with the worker, pid and sample; the
 * Python DataLoader re-raises it as the original exception class.
 *
 * Workers are fork()ed by em_dl_loader_iter with the GIL held, between
 * PyOS_BeforeFork and PyOS_AfterFork_Child / _Parent (the loader's fork
 * hooks), so a worker runs Python exactly as the parent would. The GIL is
 * released while the main process waits for a batch; Ctrl-C is polled
 * through the loader's check_interrupt. */
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "dataloader/dataloader.h"
#include "python/ember_py.h"

static PyTypeObject Ds_Type, Sampler_Type, SamplerIter_Type, Loader_Type, LoaderIter_Type;

/* ---- Python errors inside callbacks ------------------------------------------------------ */

/* The traceback of (t, v, tb) as text, or NULL (error cleared). */
static PyObject *format_tb(PyObject *t, PyObject *v, PyObject *tb) {
  PyObject *mod = PyImport_ImportModule("traceback");
  PyObject *lines = mod ? PyObject_CallMethod(mod, "format_exception", "OOO", t, v ? v : Py_None,
                                              tb ? tb : Py_None)
                        : NULL;
  Py_XDECREF(mod);
  PyObject *sep = lines ? PyUnicode_FromString("") : NULL;
  PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
  Py_XDECREF(sep);
  Py_XDECREF(lines);
  if (!text) PyErr_Clear();
  return text;
}

/* Turns the pending Python exception into the em error C expects from a
 * callback (see the header comment); returns its status. */
static em_status py_error(void) {
  const em_dl_worker_info *wi = em_dl_get_worker_info();
  if (!wi) return emp_park_exception();
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  if (!t) return em_set_error(EM_ERR_INTERNAL, "a Python callback failed without an exception");
  PyErr_NormalizeException(&t, &v, &tb);
  if (tb && v) PyException_SetTraceback(v, tb);
  PyObject *text = format_tb(t, v, tb);
  /* The class as the main process finds it again (the worker is a fork):
   * its name for a builtin, else module.qualname. */
  char tname[256];
  PyObject *mod = PyObject_GetAttrString(t, "__module__");
  PyObject *qual = PyObject_GetAttrString(t, "__qualname__");
  const char *ms = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
  const char *qs = qual && PyUnicode_Check(qual) ? PyUnicode_AsUTF8(qual) : NULL;
  if (qs && ms && strcmp(ms, "builtins") != 0) snprintf(tname, sizeof tname, "%s.%s", ms, qs);
  else snprintf(tname, sizeof tname, "%s", qs ? qs : ((PyTypeObject *)t)->tp_name);
  Py_XDECREF(mod);
  Py_XDECREF(qual);
  PyErr_Clear();
  PyErr_Restore(t, v, tb);
  em_status st = emp_park_exception(); /* status from the class; the message is replaced */
  emp_clear_parked();
  /* UTF-8, with what cannot be encoded (a lone surrogate from a file
   * name) escaped rather than losing the whole text */
  PyObject *bytes = text ? PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace") : NULL;
  const char *s = bytes ? PyBytes_AsString(bytes) : NULL;
  if (!s) {
    PyErr_Clear();
    s = "Traceback unavailable\n";
  }
  /* keep the message within what a worker's error report carries
   * (EM_DL_TEXT_MAX, less the words naming the worker): the first line
   * and the tail */
  const size_t budget = 5600;
  size_t len = strlen(s);
  if (len <= budget) {
    em_set_error(st, "Caught %s in DataLoader worker process %d.\nOriginal %s", tname, wi->id, s);
  } else {
    const char *nl = strchr(s, '\n');
    size_t head = nl ? (size_t)(nl - s) + 1 : 0;
    if (head > budget / 2) head = budget / 2; /* a long first line (no traceback) */
    const char *tail = s + len - (budget - head - 8);
    const char *tnl = strchr(tail, '\n');
    if (tnl && tnl[1]) tail = tnl + 1;
    em_set_error(st, "Caught %s in DataLoader worker process %d.\nOriginal %.*s  ...\n%s", tname,
                 wi->id, (int)head, s, tail);
  }
  Py_XDECREF(bytes);
  Py_XDECREF(text);
  return st;
}

/* Takes the GIL for a callback; false, with the em error set, once Python
 * is finalizing (then leave Python alone). */
static bool gil_enter(PyGILState_STATE *g) {
  if (emp_gil_enter(g)) return true;
  em_set_error(EM_ERR_STATE, "Python is finalizing");
  return false;
}

/* Drops a reference from a callback; a finalizing Python keeps it. */
static void drop_ref(PyObject *o) {
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return;
  Py_XDECREF(o);
  emp_gil_leave(g);
}

/* ---- _Dataset and _Sampler ---------------------------------------------------------- */

/* Both hold one reference to their C object and the Python objects that
 * object borrows (keep: generators and samplers, or NULL); the Python type
 * says which C type h is. */
typedef struct {
  PyObject_HEAD
  union {
    void *h;
    em_dl_dataset *d;
    em_dl_sampler *s;
  };
  PyObject *keep;
} HandleObject;
typedef HandleObject DsObject, SamplerObject;

static void handle_release(PyTypeObject *tp, void *h) {
  if (tp == &Ds_Type) em_dl_dataset_release(h);
  else em_dl_sampler_release(h);
}

/* A new tp object owning h, a C object just created (NULL: raises its
 * error); h is released when Python has no memory for the object. */
static PyObject *handle_wrap(PyTypeObject *tp, void *h, PyObject *keep) {
  if (!h) return emp_raise();
  HandleObject *o = PyObject_New(HandleObject, tp);
  if (!o) {
    handle_release(tp, h);
    return NULL;
  }
  o->h = h;
  o->keep = Py_XNewRef(keep);
  return (PyObject *)o;
}
static PyObject *ds_wrap(em_dl_dataset *d) { return handle_wrap(&Ds_Type, d, NULL); }
static PyObject *sampler_wrap(em_dl_sampler *s, PyObject *keep) {
  return handle_wrap(&Sampler_Type, s, keep);
}

/* The C object of o, which must be exactly a tp (borrowed); NULL with a
 * TypeError otherwise. */
static void *handle_arg(PyObject *o, PyTypeObject *tp) {
  if (Py_TYPE(o) == tp) return ((HandleObject *)o)->h;
  PyErr_Format(PyExc_TypeError, "expected an %s, not %s", tp->tp_name, Py_TYPE(o)->tp_name);
  return NULL;
}
static int arg_ds(PyObject *o, em_dl_dataset **d) {
  return (*d = handle_arg(o, &Ds_Type)) ? 0 : -1;
}
static int arg_sampler(PyObject *o, em_dl_sampler **s) {
  return (*s = handle_arg(o, &Sampler_Type)) ? 0 : -1;
}

static void handle_dealloc(PyObject *self) {
  HandleObject *o = (HandleObject *)self;
  void *h = o->h;
  o->h = NULL;
  handle_release(Py_TYPE(self), h);
  Py_XDECREF(o->keep);
  PyObject_Free(self);
}

/* ---- _Dataset ------------------------------------------------------------------------ */

static Py_ssize_t ds_len(PyObject *s) {
  int64_t n = em_dl_dataset_len(((DsObject *)s)->d);
  if (n < 0) return emp_raise_status(em_last_status());
  return (Py_ssize_t)n;
}

/* A sample's or a batch's tensors as a tuple (borrowed: they stay the C side's too) */
static PyObject *tensor_tuple(int n, em_tensor *const *ts) {
  PyObject *t = PyTuple_New(n);
  for (int i = 0; t && i < n; i++) {
    PyObject *x = emp_wrap_borrowed(ts[i]);
    if (!x) Py_CLEAR(t);
    else PyTuple_SET_ITEM(t, i, x);
  }
  return t;
}

/* get(index) -> tuple of tensors */
static PyObject *ds_get(PyObject *s, PyObject *arg) {
  int64_t i;
  if (emp_arg_int(arg, "Dataset.__getitem__", "index", &i) < 0) return NULL;
  em_dl_sample smp = {0};
  if (em_dl_dataset_get(((DsObject *)s)->d, i, &smp)) return emp_raise();
  PyObject *t = tensor_tuple(smp.n, smp.t);
  em_dl_sample_release(&smp);
  return t;
}

static PyObject *ds_name(PyObject *s, void *c) {
  return PyUnicode_FromString(em_dl_dataset_name(((DsObject *)s)->d));
}
static PyObject *ds_iterable(PyObject *s, void *c) {
  return PyBool_FromLong(em_dl_dataset_is_iterable(((DsObject *)s)->d));
}

static PyMethodDef ds_methods[] = {
    {"get", ds_get, METH_O, "get(index) -> tuple of tensors"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef ds_getset[] = {
    {"name", ds_name, NULL, NULL, NULL},
    {"iterable", ds_iterable, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PySequenceMethods ds_seq = {.sq_length = ds_len};

static PyTypeObject Ds_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._Dataset",
    .tp_basicsize = sizeof(DsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = handle_dealloc,
    .tp_as_sequence = &ds_seq,
    .tp_methods = ds_methods,
    .tp_getset = ds_getset,
};

/* ---- C datasets ---------------------------------------------------------------------------------- */

static PyObject *f_tensor_dataset(PyObject *mod, PyObject *args) {
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  if (n > EM_DL_MAX_FIELDS)
    return emp_raise_fmt(EM_ERR_INVALID, "TensorDataset: at most %d tensors, got %zd", EM_DL_MAX_FIELDS, n);
  em_tensor *ts[EM_DL_MAX_FIELDS];
  for (Py_ssize_t i = 0; i < n; i++)
    if (emp_arg_tensor(PyTuple_GET_ITEM(args, i), "TensorDataset", "tensors", &ts[i]) < 0) return NULL;
  return ds_wrap(em_dl_tensor_dataset_create((int)n, ts));
}

/* Converts one item of a sequence argument (see seq_array) into *out. */
typedef int (*item_fn)(PyObject *o, const char *fn, const char *arg, void *out);
static int item_int(PyObject *o, const char *fn, const char *arg, void *out) {
  return emp_arg_int(o, fn, arg, out);
}
static int item_double(PyObject *o, const char *fn, const char *arg, void *out) {
  return emp_arg_double(o, fn, arg, out);
}
static int item_tensor(PyObject *o, const char *fn, const char *arg, void *out) {
  return emp_arg_tensor(o, fn, arg, out);
}
static int item_ds(PyObject *o, const char *fn, const char *arg, void *out) {
  return arg_ds(o, out);
}

/* The items of seq (a list or tuple, as from PySequence_Fast) converted by
 * conv into a PyMem array of size-byte slots, one spare so that an empty
 * sequence still allocates; NULL with the exception set. Tensors and
 * datasets in it are borrowed from seq: keep seq while using the array. */
static void *seq_array(PyObject *seq, size_t size, item_fn conv, const char *fn, const char *arg) {
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  char *a = PyMem_Malloc(size * (size_t)(n + 1));
  if (!a) return PyErr_NoMemory();
  for (Py_ssize_t i = 0; i < n; i++)
    if (conv(PySequence_Fast_GET_ITEM(seq, i), fn, arg, a + size * (size_t)i) < 0) {
      PyMem_Free(a);
      return NULL;
    }
  return a;
}

/* An int64 array from a sequence of ints (PyMem). */
static int64_t *int_array(PyObject *o, const char *fn, Py_ssize_t *n) {
  PyObject *seq = PySequence_Fast(o, "expected a sequence of ints");
  if (!seq) return NULL;
  *n = PySequence_Fast_GET_SIZE(seq);
  int64_t *a = seq_array(seq, sizeof *a, item_int, fn, "indices");
  Py_DECREF(seq);
  return a;
}

static PyObject *f_subset(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  em_dl_dataset *d;
  Py_ssize_t n;
  if (nargs != 2 || arg_ds(args[0], &d) < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_dl_subset(dataset, indices)");
    return NULL;
  }
  int64_t *idx = int_array(args[1], "Subset", &n);
  if (!idx) return NULL;
  em_dl_dataset *r = em_dl_subset_create(d, n, idx);
  PyMem_Free(idx);
  return ds_wrap(r);
}

static PyObject *f_concat(PyObject *mod, PyObject *arg) {
  PyObject *seq = PySequence_Fast(arg, "ConcatDataset: expected a sequence of datasets");
  if (!seq) return NULL;
  int n = (int)PySequence_Fast_GET_SIZE(seq);
  em_dl_dataset **ds = seq_array(seq, sizeof *ds, item_ds, NULL, NULL);
  PyObject *r = ds ? ds_wrap(em_dl_concat_dataset_create(n, ds)) : NULL;
  PyMem_Free(ds);
  Py_DECREF(seq);
  return r;
}

static PyObject *f_mnist(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_dl_mnist(root, train)");
    return NULL;
  }
  PyObject *pb;
  bool train = true;
  if (!PyUnicode_FSConverter(args[0], &pb)) return NULL;
  if (emp_arg_bool(args[1], "MNIST", "train", &train) < 0) {
    Py_DECREF(pb);
    return NULL;
  }
  em_dl_dataset *d;
  const char *root = PyBytes_AS_STRING(pb);
  Py_BEGIN_ALLOW_THREADS d = em_dl_mnist_create(root, train);
  Py_END_ALLOW_THREADS Py_DECREF(pb);
  return ds_wrap(d);
}

/* ---- Python datasets behind callbacks ---------------------------------------------------------- */

typedef struct pyds {
  PyObject *obj;   /* the Python dataset */
  PyObject *stash; /* handle (int) -> sample object, in the loading process */
  int64_t next_handle;
} pyds;

static int64_t pyds_len(void *ctx) {
  pyds *p = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return -1;
  Py_ssize_t n = PyObject_Size(p->obj);
  if (n < 0) py_error();
  emp_gil_leave(g);
  return n;
}

static em_status stash_put(pyds *p, PyObject *item, em_dl_sample *out) {
  int64_t h = p->next_handle++;
  PyObject *key = PyLong_FromLongLong(h);
  int rc = key ? PyDict_SetItem(p->stash, key, item) : -1;
  Py_XDECREF(key);
  if (rc < 0) return py_error();
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(h), EM_INT64));
}

static em_status pyds_get(void *ctx, int64_t index, em_dl_sample *out) {
  pyds *p = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  em_status st;
  PyObject *key = PyLong_FromLongLong(index);
  PyObject *item = key ? PyObject_GetItem(p->obj, key) : NULL;
  Py_XDECREF(key);
  st = item ? stash_put(p, item, out) : py_error();
  Py_XDECREF(item);
  emp_gil_leave(g);
  return st;
}

static em_status pyds_iter_begin(void *ctx, const em_dl_worker_info *info, void **state) {
  pyds *p = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  PyObject *it = PyObject_GetIter(p->obj);
  em_status st = it ? EM_OK : py_error();
  *state = it;
  emp_gil_leave(g);
  return st;
}

static em_status pyds_iter_next(void *ctx, void *state, em_dl_sample *out, bool *done) {
  pyds *p = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  em_status st = EM_OK;
  PyObject *item = PyIter_Next((PyObject *)state);
  if (item) st = stash_put(p, item, out);
  else if (PyErr_Occurred()) st = py_error();
  else *done = true;
  Py_XDECREF(item);
  emp_gil_leave(g);
  return st;
}

static void pyds_iter_end(void *ctx, void *state) { drop_ref(state); }

static void pyds_destroy(void *ctx) {
  pyds *p = ctx;
  drop_ref(p->obj);
  drop_ref(p->stash);
  free(p);
}

static PyObject *f_python_dataset(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_dl_python_dataset(dataset, iterable)");
    return NULL;
  }
  int iterable = PyObject_IsTrue(args[1]);
  if (iterable < 0) return NULL;
  pyds *p = calloc(1, sizeof *p);
  if (!p) return PyErr_NoMemory();
  p->obj = Py_NewRef(args[0]);
  if (!(p->stash = PyDict_New())) {
    Py_DECREF(p->obj);
    free(p);
    return NULL;
  }
  em_dl_dataset_ops ops = {.name = Py_TYPE(args[0])->tp_name, .destroy = pyds_destroy};
  if (iterable) {
    ops.iter_begin = pyds_iter_begin;
    ops.iter_next = pyds_iter_next;
    ops.iter_end = pyds_iter_end;
  } else {
    ops.len = pyds_len;
    ops.get = pyds_get;
  }
  em_dl_dataset *d = em_dl_dataset_create(&ops, p);
  if (!d) {
    pyds_destroy(p);
    return emp_raise();
  }
  return ds_wrap(d);
}

/* ---- _Sampler ------------------------------------------------------------------------------------- */

/* A negative length from a sampler or loader is an error (a Python one a
 * callback raised, or an em one) or, with neither, "no len()": true then. */
static bool len_missing(void) {
  if (PyErr_Occurred()) return false;
  if (!em_last_status()) return true;
  emp_raise_status(em_last_status());
  return false;
}

static Py_ssize_t sampler_len(PyObject *self) {
  em_dl_sampler *s = ((SamplerObject *)self)->s;
  em_clear_error();
  int64_t n = em_dl_sampler_len(s);
  if (n >= 0) return (Py_ssize_t)n;
  if (len_missing())
    PyErr_Format(PyExc_TypeError, "object of type '%s' has no len()", em_dl_sampler_name(s));
  return -1;
}

static PyObject *sampler_set_epoch(PyObject *self, PyObject *arg) {
  int64_t e;
  if (emp_arg_int(arg, "set_epoch", "epoch", &e) < 0) return NULL;
  if (em_dl_sampler_set_epoch(((SamplerObject *)self)->s, e)) return emp_raise();
  Py_RETURN_NONE;
}

typedef struct {
  PyObject_HEAD
  PyObject *owner;
  em_dl_sampler_iter *it;
  bool is_batch;
  const int64_t *idx;
  int64_t n, pos;
} SamplerIterObject;

static PyObject *sampler_iter(PyObject *self) {
  SamplerObject *so = (SamplerObject *)self;
  em_dl_sampler_iter *it = em_dl_sampler_iter_create(so->s);
  if (!it) return emp_raise();
  SamplerIterObject *o = PyObject_New(SamplerIterObject, &SamplerIter_Type);
  if (!o) {
    em_dl_sampler_iter_destroy(it);
    return NULL;
  }
  o->owner = Py_NewRef(self);
  o->it = it;
  o->is_batch = em_dl_sampler_is_batch(so->s);
  o->idx = NULL;
  o->n = o->pos = 0;
  return (PyObject *)o;
}

static void sampler_iter_dealloc(PyObject *self) {
  SamplerIterObject *o = (SamplerIterObject *)self;
  em_dl_sampler_iter_destroy(o->it);
  Py_XDECREF(o->owner);
  PyObject_Free(self);
}

static PyObject *sampler_iter_next(PyObject *self) {
  SamplerIterObject *o = (SamplerIterObject *)self;
  if (!o->it) return NULL;
  if (o->pos >= o->n || o->is_batch) {
    if (em_dl_sampler_iter_next(o->it, &o->idx, &o->n)) return emp_raise();
    o->pos = 0;
    if (o->n == 0) {
      em_dl_sampler_iter_destroy(o->it);
      o->it = NULL;
      return NULL;
    }
  }
  if (!o->is_batch) return PyLong_FromLongLong(o->idx[o->pos++]);
  PyObject *l = PyList_New((Py_ssize_t)o->n);
  for (int64_t i = 0; l && i < o->n; i++) {
    PyObject *v = PyLong_FromLongLong(o->idx[i]);
    if (!v) Py_CLEAR(l);
    else PyList_SET_ITEM(l, (Py_ssize_t)i, v);
  }
  return l;
}

static PyTypeObject SamplerIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._SamplerIter",
    .tp_basicsize = sizeof(SamplerIterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = sampler_iter_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = sampler_iter_next,
};

static PyObject *sampler_is_batch(PyObject *self, void *c) {
  return PyBool_FromLong(em_dl_sampler_is_batch(((SamplerObject *)self)->s));
}

static PyMethodDef sampler_methods[] = {
    {"set_epoch", sampler_set_epoch, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef sampler_getset[] = {
    {"is_batch", sampler_is_batch, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PySequenceMethods sampler_seq = {.sq_length = sampler_len};

static PyTypeObject Sampler_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._Sampler",
    .tp_basicsize = sizeof(SamplerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = handle_dealloc,
    .tp_as_sequence = &sampler_seq,
    .tp_iter = sampler_iter,
    .tp_methods = sampler_methods,
    .tp_getset = sampler_getset,
};

/* generator argument: None -> NULL; the object is kept by the sampler */
static int gen_arg(PyObject *o, const char *fn, em_generator **g) {
  *g = NULL;
  if (!o || o == Py_None) return 0;
  return emp_arg_generator(o, fn, g);
}

static PyObject *f_sampler_sequential(PyObject *mod, PyObject *arg) {
  int64_t n;
  if (emp_arg_int(arg, "SequentialSampler", "n", &n) < 0) return NULL;
  return sampler_wrap(em_dl_sequential_sampler_create(n), NULL);
}

/* (n, replacement, num_samples or None, generator) */
static PyObject *f_sampler_random(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  const char *fn = "RandomSampler";
  int64_t n, ns = -1;
  bool repl = false;
  em_generator *g;
  if (nargs != 4) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_random takes 4 arguments");
  if (emp_arg_int(args[0], fn, "n", &n) < 0 || emp_arg_bool(args[1], fn, "replacement", &repl) < 0 ||
      (args[2] != Py_None && emp_arg_int(args[2], fn, "num_samples", &ns) < 0) ||
      gen_arg(args[3], fn, &g) < 0)
    return NULL;
  return sampler_wrap(em_dl_random_sampler_create(n, repl, ns, g), args[3]);
}

static PyObject *f_sampler_subset_random(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  Py_ssize_t n;
  em_generator *g;
  if (nargs != 2) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_subset_random takes 2 arguments");
  if (gen_arg(args[1], "SubsetRandomSampler", &g) < 0) return NULL;
  int64_t *idx = int_array(args[0], "SubsetRandomSampler", &n);
  if (!idx) return NULL;
  em_dl_sampler *s = em_dl_subset_random_sampler_create(n, idx, g);
  PyMem_Free(idx);
  return sampler_wrap(s, args[1]);
}

/* (weights, num_samples, replacement, generator) */
static PyObject *f_sampler_weighted(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  const char *fn = "WeightedRandomSampler";
  if (nargs != 4) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_weighted takes 4 arguments");
  int64_t ns;
  bool repl = true;
  em_generator *g;
  if (emp_arg_int(args[1], fn, "num_samples", &ns) < 0 || emp_arg_bool(args[2], fn, "replacement", &repl) < 0 ||
      gen_arg(args[3], fn, &g) < 0)
    return NULL;
  PyObject *seq = PySequence_Fast(args[0], "weights must be a sequence of numbers");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  double *w = seq_array(seq, sizeof *w, item_double, fn, "weights");
  Py_DECREF(seq);
  if (!w) return NULL;
  PyObject *r = sampler_wrap(em_dl_weighted_random_sampler_create(n, w, ns, repl, g), args[3]);
  PyMem_Free(w);
  return r;
}

static PyObject *f_sampler_batch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  em_dl_sampler *s;
  int64_t bs;
  bool dl = false;
  if (nargs != 3) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_batch takes 3 arguments");
  if (arg_sampler(args[0], &s) < 0 || emp_arg_int(args[1], "BatchSampler", "batch_size", &bs) < 0 ||
      emp_arg_bool(args[2], "BatchSampler", "drop_last", &dl) < 0)
    return NULL;
  return sampler_wrap(em_dl_batch_sampler_create(s, bs, dl), NULL);
}

/* (dataset_len, num_replicas, rank, shuffle, seed, drop_last) */
static PyObject *f_sampler_distributed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  const char *fn = "DistributedSampler";
  if (nargs != 6) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_distributed takes 6 arguments");
  int64_t n, seed;
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  if (emp_arg_int(args[0], fn, "len", &n) < 0 || emp_arg_int(args[1], fn, "num_replicas", &o.num_replicas) < 0 ||
      emp_arg_int(args[2], fn, "rank", &o.rank) < 0 || emp_arg_bool(args[3], fn, "shuffle", &o.shuffle) < 0 ||
      emp_arg_int(args[4], fn, "seed", &seed) < 0 || emp_arg_bool(args[5], fn, "drop_last", &o.drop_last) < 0)
    return NULL;
  o.seed = (uint64_t)seed;
  return sampler_wrap(em_dl_distributed_sampler_create(n, &o), NULL);
}

/* Python samplers behind callbacks (main process only). */
typedef struct pysampler {
  PyObject *obj;
  bool is_batch;
} pysampler;

typedef struct pysampler_state {
  PyObject *it;
  int64_t *buf;
  int64_t cap;
} pysampler_state;

static int64_t pys_len(void *ctx) {
  pysampler *p = ctx;
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return -1;
  Py_ssize_t n = PyObject_Size(p->obj);
  if (n < 0) PyErr_Clear(); /* no len(): unknown */
  emp_gil_leave(g);
  return n;
}

static em_status pys_begin(void *ctx, void **state) {
  pysampler *p = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  em_status st = EM_OK;
  pysampler_state *s = calloc(1, sizeof *s);
  if (!s) st = em_set_error(EM_ERR_NOMEM, "sampler: out of memory");
  else if (!(s->it = PyObject_GetIter(p->obj))) st = py_error();
  if (st && s) {
    free(s);
    s = NULL;
  }
  *state = s;
  emp_gil_leave(g);
  return st;
}

/* Stores the index o (any object with __index__) at position k of the buffer. */
static em_status buf_put(pysampler_state *s, int64_t k, PyObject *o) {
  PyObject *i = PyNumber_Index(o);
  long long v = i ? PyLong_AsLongLong(i) : -1;
  Py_XDECREF(i);
  if (v == -1 && PyErr_Occurred()) return py_error();
  if (k >= s->cap) {
    int64_t nc = s->cap ? s->cap * 2 : 256;
    int64_t *nb = realloc(s->buf, sizeof *nb * (size_t)nc);
    if (!nb) return em_set_error(EM_ERR_NOMEM, "sampler: out of memory");
    s->buf = nb;
    s->cap = nc;
  }
  s->buf[k] = v;
  return EM_OK;
}

static em_status pys_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  pysampler *p = ctx;
  pysampler_state *s = state;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  em_status st = EM_OK;
  int64_t k = 0;
  if (!p->is_batch) {
    for (; k < 256 && !st; k++) {
      PyObject *v = PyIter_Next(s->it);
      if (!v) break;
      st = buf_put(s, k, v);
      Py_DECREF(v);
    }
    if (!st && PyErr_Occurred()) st = py_error();
  } else {
    PyObject *b = PyIter_Next(s->it);
    if (b) {
      PyObject *seq = PySequence_Fast(b, "a batch sampler must yield sequences of indices");
      if (!seq) st = py_error();
      for (Py_ssize_t i = 0; seq && !st && i < PySequence_Fast_GET_SIZE(seq); i++)
        st = buf_put(s, k++, PySequence_Fast_GET_ITEM(seq, i));
      Py_XDECREF(seq);
      Py_DECREF(b);
      if (!st && k == 0) st = em_set_error(EM_ERR_INVALID, "batch sampler yielded an empty batch");
    } else if (PyErr_Occurred()) {
      st = py_error();
    }
  }
  emp_gil_leave(g);
  *idx = s->buf;
  *n = st ? 0 : k;
  return st;
}

static void pys_end(void *ctx, void *state) {
  pysampler_state *s = state;
  if (!s) return;
  drop_ref(s->it);
  free(s->buf);
  free(s);
}

static void pys_destroy(void *ctx) {
  pysampler *p = ctx;
  drop_ref(p->obj);
  free(p);
}

static PyObject *f_sampler_python(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) return emp_raise_fmt(EM_ERR_INVALID, "_dl_sampler_python(sampler, is_batch)");
  int b = PyObject_IsTrue(args[1]);
  if (b < 0) return NULL;
  pysampler *p = calloc(1, sizeof *p);
  if (!p) return PyErr_NoMemory();
  p->obj = Py_NewRef(args[0]);
  p->is_batch = b;
  em_dl_sampler_ops ops = {.name = Py_TYPE(args[0])->tp_name, .is_batch = b, .len = pys_len,
                           .begin = pys_begin, .next = pys_next, .end = pys_end,
                           .destroy = pys_destroy};
  em_dl_sampler *s = em_dl_sampler_create(&ops, p);
  if (!s) {
    pys_destroy(p);
    return emp_raise();
  }
  return sampler_wrap(s, NULL);
}

/* ---- collate, worker init, fork hooks, interrupts ------------------------------------------------ */

/* The builder of the batch being collated on this thread (for _dl_stack). */
static _Thread_local em_dl_batch_builder *cur_builder;

typedef struct pycollate {
  PyObject *fn;   /* list of samples -> batch */
  PyObject *pack; /* batch -> (tensors, meta bytes or None) */
  PyObject *ds;   /* the _Dataset object when it is a Python one (its stash), else NULL */
} pycollate;

static em_status py_collate(void *ctx, int n, em_dl_sample *samples, em_dl_batch_builder *b) {
  pycollate *c = ctx;
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  em_status st = EM_OK;
  pyds *p = c->ds ? em_dl_dataset_ctx(((DsObject *)c->ds)->d) : NULL;
  PyObject *items = PyList_New(n), *batch = NULL, *packed = NULL;
  if (!items) goto pyfail;
  for (int i = 0; i < n; i++) {
    PyObject *item;
    if (p) {
      em_scalar h;
      if (samples[i].n != 1 || em_tensor_item(samples[i].t[0], &h)) {
        st = em_set_error(EM_ERR_INTERNAL, "collate: sample %d is not a stash handle", i);
        goto done;
      }
      PyObject *key = PyLong_FromLongLong(h.v.i);
      item = key ? PyDict_GetItemWithError(p->stash, key) : NULL;
      Py_XINCREF(item);
      Py_XDECREF(key);
      if (!item) {
        if (!PyErr_Occurred()) {
          st = em_set_error(EM_ERR_INTERNAL, "collate: sample %d is missing from the stash", i);
          goto done;
        }
        goto pyfail;
      }
    } else {
      item = tensor_tuple(samples[i].n, samples[i].t);
      if (!item) goto pyfail;
    }
    PyList_SET_ITEM(items, i, item);
  }
  if (p) PyDict_Clear(p->stash);
  cur_builder = b;
  batch = PyObject_CallOneArg(c->fn, items);
  cur_builder = NULL;
  if (!batch) goto pyfail;
  packed = PyObject_CallOneArg(c->pack, batch);
  if (!packed) goto pyfail;
  if (!PyTuple_Check(packed) || PyTuple_GET_SIZE(packed) != 2) {
    st = em_set_error(EM_ERR_INTERNAL, "collate: pack() must return (tensors, meta)");
    goto done;
  }
  PyObject *ts = PyTuple_GET_ITEM(packed, 0), *meta = PyTuple_GET_ITEM(packed, 1);
  if (!PyList_Check(ts)) {
    st = em_set_error(EM_ERR_INTERNAL, "collate: pack() must return a list of tensors");
    goto done;
  }
  if (PyList_GET_SIZE(ts) > EM_DL_MAX_TENSORS) {
    st = em_set_error(EM_ERR_INVALID,
                      "collate: a batch holds at most %d tensors, this one has %zd (return fewer, "
                      "larger tensors from collate_fn)",
                      EM_DL_MAX_TENSORS, PyList_GET_SIZE(ts));
    goto done;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ts) && !st; i++) {
    PyObject *t = PyList_GET_ITEM(ts, i);
    if (!emp_is_tensor(t)) {
      st = em_set_error(EM_ERR_INTERNAL, "collate: pack() returned a non-tensor");
      break;
    }
    st = em_dl_batch_builder_add(b, emp_tensor(t));
  }
  if (!st && PyBytes_Check(meta))
    st = em_dl_batch_builder_set_meta(b, PyBytes_AS_STRING(meta), (size_t)PyBytes_GET_SIZE(meta));
  goto done;
pyfail:
  st = py_error();
done:
  cur_builder = NULL;
  if (st && p) PyDict_Clear(p->stash);
  Py_XDECREF(items);
  Py_XDECREF(batch);
  Py_XDECREF(packed);
  emp_gil_leave(g);
  return st;
}

static em_status py_worker_init(void *ctx, int worker_id) {
  PyGILState_STATE g;
  if (!gil_enter(&g)) return em_last_status();
  PyObject *id = PyLong_FromLong(worker_id);
  PyObject *r = id ? PyObject_CallOneArg((PyObject *)ctx, id) : NULL;
  Py_XDECREF(id);
  em_status st = r ? EM_OK : py_error();
  Py_XDECREF(r);
  emp_gil_leave(g);
  return st;
}

static void hook_prepare(void *ctx) { PyOS_BeforeFork(); }
static void hook_parent(void *ctx) { PyOS_AfterFork_Parent(); }
static void hook_child(void *ctx) { PyOS_AfterFork_Child(); }

static em_status check_interrupt(void *ctx) {
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return EM_OK;
  em_status st = EM_OK;
  if (PyErr_CheckSignals() < 0) st = emp_park_exception();
  emp_gil_leave(g);
  return st;
}

/* _dl_stack(tensors): stack along a new dim 0, straight into the batch's
 * shared-memory slot when called from a collate function in a worker. */
static PyObject *f_stack(PyObject *mod, PyObject *arg) {
  PyObject *seq = PySequence_Fast(arg, "stack: expected a sequence of tensors");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  em_tensor **ts = seq_array(seq, sizeof *ts, item_tensor, "stack", "tensors");
  PyObject *ret = NULL;
  if (!ts) goto done;
  bool same = n > 0 && cur_builder && ts[0]->ndim < EM_MAX_DIMS && ts[0]->device.type == EM_CPU;
  for (Py_ssize_t i = 1; same && i < n; i++) {
    same = ts[i]->ndim == ts[0]->ndim && ts[i]->dtype == ts[0]->dtype && ts[i]->device.type == EM_CPU;
    for (int d = 0; same && d < ts[0]->ndim; d++) same = ts[i]->shape[d] == ts[0]->shape[d];
  }
  em_tensor *r = NULL;
  if (same) {
    int64_t shape[EM_MAX_DIMS];
    shape[0] = n;
    memcpy(shape + 1, ts[0]->shape, sizeof *shape * (size_t)ts[0]->ndim);
    bool prev = em_set_grad_enabled(false);
    r = em_dl_batch_builder_alloc(cur_builder, ts[0]->ndim + 1, shape, (em_dtype)ts[0]->dtype);
    for (Py_ssize_t i = 0; r && i < n; i++) {
      em_tensor *row = em_tensor_select(r, 0, i);
      em_status st = row ? em_tensor_copy_(row, ts[i]) : em_last_status();
      em_tensor_release(row);
      if (st) {
        em_tensor_release(r);
        r = NULL;
      }
    }
    em_set_grad_enabled(prev);
  } else {
    r = em_tensor_stack((int)n, ts, 0);
  }
  ret = emp_wrap(r);
done:
  PyMem_Free(ts);
  Py_DECREF(seq);
  return ret;
}

/* ---- _Loader ---------------------------------------------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  em_dl_loader *l;
  pycollate coll;
  PyObject *winit;
  PyObject *keep; /* dataset, samplers, generator */
  int num_workers;
} LoaderObject;

static void loader_dealloc(PyObject *self) {
  LoaderObject *o = (LoaderObject *)self;
  if (o->l) {
    em_dl_loader *l = o->l;
    o->l = NULL;
    Py_BEGIN_ALLOW_THREADS em_dl_loader_destroy(l);
    Py_END_ALLOW_THREADS
  }
  Py_XDECREF(o->coll.fn);
  Py_XDECREF(o->coll.pack);
  Py_XDECREF(o->coll.ds);
  Py_XDECREF(o->winit);
  Py_XDECREF(o->keep);
  PyObject_Free(self);
}

static PyObject *loader_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  static char *names[] = {"dataset", "sampler", "batch_sampler", "batch_size", "drop_last",
                          "num_workers", "prefetch_factor", "persistent_workers", "timeout",
                          "collate_fn", "pack", "worker_init_fn", "generator", "pin_memory",
                          "python_dataset", NULL};
  PyObject *ds, *sampler = Py_None, *bsampler = Py_None, *collate = Py_None, *pack = Py_None,
               *winit = Py_None, *gen = Py_None;
  long long batch_size = 1;
  int drop_last = 0, num_workers = 0, prefetch = 0, persistent = 0, pin = 0, pyds_flag = 0;
  double timeout = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|OOLpiipdOOOOpp:_Loader", names, &Ds_Type, &ds,
                                   &sampler, &bsampler, &batch_size, &drop_last, &num_workers,
                                   &prefetch, &persistent, &timeout, &collate, &pack, &winit, &gen,
                                   &pin, &pyds_flag))
    return NULL;
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = batch_size;
  o.drop_last = drop_last;
  o.num_workers = num_workers;
  o.prefetch_factor = prefetch;
  o.persistent_workers = persistent;
  o.timeout = timeout;
  o.pin_memory = pin;
  if (sampler != Py_None && arg_sampler(sampler, &o.sampler) < 0) return NULL;
  if (bsampler != Py_None && arg_sampler(bsampler, &o.batch_sampler) < 0) return NULL;
  if (gen_arg(gen, "DataLoader", &o.generator) < 0) return NULL;
  if (collate != Py_None && (!PyCallable_Check(collate) || !PyCallable_Check(pack))) {
    PyErr_SetString(PyExc_TypeError, "_Loader: collate_fn and pack must be callable");
    return NULL;
  }
  LoaderObject *self = (LoaderObject *)tp->tp_alloc(tp, 0);
  if (!self) return NULL;
  self->num_workers = num_workers;
  self->keep = PyTuple_Pack(4, ds, sampler, bsampler, gen);
  if (!self->keep) goto fail;
  if (collate != Py_None) {
    self->coll.fn = Py_NewRef(collate);
    self->coll.pack = Py_NewRef(pack);
    self->coll.ds = pyds_flag ? Py_NewRef(ds) : NULL;
    o.collate_fn = py_collate;
    o.collate_ctx = &self->coll;
  } else if (pyds_flag) {
    PyErr_SetString(PyExc_ValueError, "_Loader: a Python dataset needs a Python collate_fn");
    goto fail;
  }
  if (winit != Py_None) {
    self->winit = Py_NewRef(winit);
    o.worker_init_fn = py_worker_init;
    o.worker_init_ctx = winit;
  }
  o.check_interrupt = check_interrupt;
  o.fork_hooks = (em_dl_fork_hooks){hook_prepare, hook_parent, hook_child, NULL};
  self->l = em_dl_loader_create(((DsObject *)ds)->d, &o);
  if (!self->l) {
    emp_raise();
    goto fail;
  }
  return (PyObject *)self;
fail:
  Py_DECREF(self);
  return NULL;
}

static Py_ssize_t loader_len(PyObject *self) {
  em_clear_error();
  int64_t n = em_dl_loader_len(((LoaderObject *)self)->l);
  if (n >= 0) return (Py_ssize_t)n;
  if (len_missing())
    PyErr_SetString(PyExc_TypeError, "this DataLoader has no len() (iterable dataset)");
  return -1;
}

typedef struct {
  PyObject_HEAD
  PyObject *loader;
  em_dl_iter *it;
  bool nogil;
} LoaderIterObject;

static PyObject *loader_iter(PyObject *self) {
  LoaderObject *lo = (LoaderObject *)self;
  /* forks the workers: the GIL stays held (the fork hooks need it) */
  em_dl_iter *it = em_dl_loader_iter(lo->l);
  if (!it) return emp_raise();
  LoaderIterObject *o = PyObject_New(LoaderIterObject, &LoaderIter_Type);
  if (!o) {
    em_dl_iter_destroy(it);
    return NULL;
  }
  o->loader = Py_NewRef(self);
  o->it = it;
  o->nogil = lo->num_workers > 0;
  return (PyObject *)o;
}

static void loader_iter_close_(LoaderIterObject *o) {
  em_dl_iter *it = o->it;
  o->it = NULL;
  if (!it) return;
  if (o->nogil) {
    Py_BEGIN_ALLOW_THREADS em_dl_iter_destroy(it);
    Py_END_ALLOW_THREADS
  } else {
    em_dl_iter_destroy(it);
  }
}

static void loader_iter_dealloc(PyObject *self) {
  LoaderIterObject *o = (LoaderIterObject *)self;
  loader_iter_close_(o);
  Py_XDECREF(o->loader);
  PyObject_Free(self);
}

/* next() -> (tensors tuple, meta bytes or None, worker id); StopIteration at the end */
static PyObject *loader_iter_next(PyObject *self) {
  LoaderIterObject *o = (LoaderIterObject *)self;
  if (!o->it) return NULL;
  em_dl_batch b;
  bool done = false;
  em_status st;
  EMP_NOGIL_IF(o->nogil, st = em_dl_iter_next(o->it, &b, &done));
  if (st) return emp_raise();
  if (done) {
    loader_iter_close_(o);
    return NULL;
  }
  PyObject *ts = tensor_tuple(b.n, b.t), *meta = NULL, *r = NULL;
  if (ts) meta = b.meta ? PyBytes_FromStringAndSize(b.meta, (Py_ssize_t)b.meta_len) : Py_NewRef(Py_None);
  if (meta) r = Py_BuildValue("(OOi)", ts, meta, b.worker);
  Py_XDECREF(ts);
  Py_XDECREF(meta);
  em_dl_batch_release(&b);
  return r;
}

static PyObject *loader_iter_close(PyObject *self, PyObject *unused) {
  loader_iter_close_((LoaderIterObject *)self);
  Py_RETURN_NONE;
}

static PyObject *loader_iter_pids(PyObject *self, PyObject *unused) {
  LoaderIterObject *o = (LoaderIterObject *)self;
  pid_t pids[256];
  int n = o->it ? em_dl_iter_worker_pids(o->it, pids, 256) : 0;
  PyObject *l = PyList_New(n);
  for (int i = 0; l && i < n; i++) PyList_SET_ITEM(l, i, PyLong_FromLong(pids[i]));
  return l;
}

static PyMethodDef loader_iter_methods[] = {
    {"close", loader_iter_close, METH_NOARGS, "stop the pass (workers end unless persistent)"},
    {"worker_pids", loader_iter_pids, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LoaderIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._LoaderIter",
    .tp_basicsize = sizeof(LoaderIterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = loader_iter_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = loader_iter_next,
    .tp_methods = loader_iter_methods,
};

static PySequenceMethods loader_seq = {.sq_length = loader_len};

static PyTypeObject Loader_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._Loader",
    .tp_basicsize = sizeof(LoaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = loader_new,
    .tp_dealloc = loader_dealloc,
    .tp_as_sequence = &loader_seq,
    .tp_iter = loader_iter,
};

/* ---- files, shared memory, worker info ------------------------------------------------------------- */

static PyObject *load_file(PyObject *arg, em_tensor *(*fn)(const char *)) {
  PyObject *pb;
  if (!PyUnicode_FSConverter(arg, &pb)) return NULL;
  em_tensor *t;
  const char *path = PyBytes_AS_STRING(pb);
  Py_BEGIN_ALLOW_THREADS t = fn(path);
  Py_END_ALLOW_THREADS Py_DECREF(pb);
  return emp_wrap(t);
}
static PyObject *f_idx_load(PyObject *mod, PyObject *arg) { return load_file(arg, em_dl_idx_load); }
static PyObject *f_npy_load(PyObject *mod, PyObject *arg) { return load_file(arg, em_dl_npy_load); }

static PyObject *f_npy_save(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) return emp_raise_fmt(EM_ERR_INVALID, "_dl_npy_save(path, tensor)");
  em_tensor *t;
  PyObject *pb;
  if (emp_arg_tensor(args[1], "save_npy", "tensor", &t) < 0) return NULL;
  if (!PyUnicode_FSConverter(args[0], &pb)) return NULL;
  em_status st;
  const char *path = PyBytes_AS_STRING(pb);
  Py_BEGIN_ALLOW_THREADS st = em_dl_npy_save(path, t);
  Py_END_ALLOW_THREADS Py_DECREF(pb);
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *f_share_memory(PyObject *mod, PyObject *arg) {
  PyObject *seq = emp_is_tensor(arg) ? PyTuple_Pack(1, arg) : PySequence_Tuple(arg);
  if (!seq) return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(seq);
  em_tensor **ts = seq_array(seq, sizeof *ts, item_tensor, "share_memory_", "tensor");
  PyObject *ret = NULL;
  if (!ts) goto done;
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_dl_share_memory_list((int)n, ts);
  Py_END_ALLOW_THREADS if (st) emp_raise();
  else ret = Py_NewRef(Py_None);
done:
  PyMem_Free(ts);
  Py_DECREF(seq);
  return ret;
}

static PyObject *f_is_shared(PyObject *mod, PyObject *arg) {
  em_tensor *t;
  if (emp_arg_tensor(arg, "is_shared", "self", &t) < 0) return NULL;
  return PyBool_FromLong(em_dl_is_shared(t));
}

/* (id, num_workers, seed) in a worker, None in the main process (the
 * Python layer adds the dataset) */
static PyObject *f_worker_info(PyObject *mod, PyObject *unused) {
  const em_dl_worker_info *wi = em_dl_get_worker_info();
  if (!wi) Py_RETURN_NONE;
  return Py_BuildValue("(iiK)", wi->id, wi->num_workers, (unsigned long long)wi->seed);
}

/* In a forked child: SIGKILL when the parent dies (as DataLoader workers
 * and trainrun's workers). False when parent_pid is already gone (it
 * died before the request), so that the caller leaves at once. */
static PyObject *f_die_with_parent(PyObject *mod, PyObject *arg) {
  long parent = PyLong_AsLong(arg);
  if (parent == -1 && PyErr_Occurred()) return NULL;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return PyErr_SetFromErrno(PyExc_OSError);
  return PyBool_FromLong(getppid() == (pid_t)parent);
}

static PyObject *f_shm_cleanup(PyObject *mod, PyObject *unused) {
  return PyLong_FromLong(em_dl_shm_cleanup_stale());
}

static PyMethodDef data_functions[] = {
    {"_dl_tensor_dataset", f_tensor_dataset, METH_VARARGS, NULL},
    {"_dl_subset", EMP_FN(f_subset), METH_FASTCALL, NULL},
    {"_dl_concat", f_concat, METH_O, NULL},
    {"_dl_mnist", EMP_FN(f_mnist), METH_FASTCALL, NULL},
    {"_dl_python_dataset", EMP_FN(f_python_dataset), METH_FASTCALL, NULL},
    {"_dl_sampler_sequential", f_sampler_sequential, METH_O, NULL},
    {"_dl_sampler_random", EMP_FN(f_sampler_random), METH_FASTCALL, NULL},
    {"_dl_sampler_subset_random", EMP_FN(f_sampler_subset_random), METH_FASTCALL, NULL},
    {"_dl_sampler_weighted", EMP_FN(f_sampler_weighted), METH_FASTCALL, NULL},
    {"_dl_sampler_batch", EMP_FN(f_sampler_batch), METH_FASTCALL, NULL},
    {"_dl_sampler_distributed", EMP_FN(f_sampler_distributed), METH_FASTCALL, NULL},
    {"_dl_sampler_python", EMP_FN(f_sampler_python), METH_FASTCALL, NULL},
    {"_dl_stack", f_stack, METH_O, NULL},
    {"_dl_idx_load", f_idx_load, METH_O, NULL},
    {"_dl_npy_load", f_npy_load, METH_O, NULL},
    {"_dl_npy_save", EMP_FN(f_npy_save), METH_FASTCALL, NULL},
    {"_dl_share_memory", f_share_memory, METH_O, NULL},
    {"_dl_is_shared", f_is_shared, METH_O, NULL},
    {"_dl_worker_info", f_worker_info, METH_NOARGS, NULL},
    {"_dl_shm_cleanup", f_shm_cleanup, METH_NOARGS, NULL},
    {"_die_with_parent", f_die_with_parent, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int emp_init_data(PyObject *module) {
  PyTypeObject *types[] = {&Ds_Type, &Sampler_Type, &SamplerIter_Type, &Loader_Type,
                           &LoaderIter_Type};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (PyType_Ready(types[i]) < 0) return -1;
  if (PyModule_AddObjectRef(module, "_Loader", (PyObject *)&Loader_Type) < 0) return -1;
  return PyModule_AddFunctions(module, data_functions);
}
