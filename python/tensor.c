/* ember.Tensor: the object, wrapping, attributes, repr, conversions to
 * Python values, and the type itself (a heap type assembled from the
 * method / property tables of every binding file).
 *
 * Each object holds one reference to its em_tensor; em_tensor.user points
 * back at the live object (see python/ember_py.h). */
#include "core/cuda/ember_cuda.h"
#include "python/ember_py.h"

PyTypeObject *emp_tensor_type;

/* ---- objects and wrapping ------------------------------------------------------------ */

PyObject *emp_wrap_as(PyTypeObject *tp, em_tensor *t) {
  EmTensorObject *o = (EmTensorObject *)tp->tp_alloc(tp, 0);
  if (!o) {
    em_tensor_release(t);
    return NULL;
  }
  o->t = t;
  t->user = o;
  return (PyObject *)o;
}

PyObject *emp_wrap(em_tensor *t) {
  if (EM_UNLIKELY(!t)) return emp_raise();
  PyObject *u = (PyObject *)t->user;
  if (u) {
    /* the object exists: it already holds a reference */
    Py_INCREF(u);
    em_tensor_release(t);
    return u;
  }
  return emp_wrap_as(emp_tensor_type, t);
}

PyObject *emp_wrap_borrowed(em_tensor *t) {
  if (!t) return emp_raise();
  PyObject *u = (PyObject *)t->user;
  if (u) return Py_NewRef(u);
  return emp_wrap_as(emp_tensor_type, em_tensor_retain(t));
}

static int tensor_traverse(PyObject *self, visitproc visit, void *arg) {
  Py_VISIT(((EmTensorObject *)self)->dict);
  Py_VISIT(Py_TYPE(self));
  return 0;
}

static int tensor_clear(PyObject *self) {
  Py_CLEAR(((EmTensorObject *)self)->dict);
  return 0;
}

static void tensor_dealloc(PyObject *self) {
  EmTensorObject *o = (EmTensorObject *)self;
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (o->weakrefs) PyObject_ClearWeakRefs(self);
  Py_CLEAR(o->dict);
  em_tensor *t = o->t;
  if (t) {
    if (t->user == o) t->user = NULL;
    o->t = NULL;
    em_tensor_release(t);
  }
  tp->tp_free(self);
  Py_DECREF(tp);
}

/* Tensor(*sizes) / Tensor(sequence) / Tensor(): the legacy constructor
 * (float32 by default). */
static PyObject *tensor_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  if (kw && PyDict_GET_SIZE(kw)) {
    PyObject *dev = PyDict_GetItemString(kw, "device");
    if (!dev || PyDict_GET_SIZE(kw) > 1) {
      PyErr_SetString(PyExc_TypeError, "Tensor(): only a 'device' keyword is accepted");
      return NULL;
    }
    em_device d = EM_DEVICE_CPU;
    if (emp_arg_device(dev, "Tensor", "device", &d) < 0) return NULL;
    if (d.type != EM_CPU) {
      PyErr_SetString(PyExc_RuntimeError, "Tensor(): legacy constructor only creates CPU tensors");
      return NULL;
    }
  }
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  em_tensor *t = NULL;
  PyObject *const *items = &PyTuple_GET_ITEM(args, 0);
  if (n == 1 && emp_is_tensor(items[0])) {
    t = em_tensor_detach(emp_tensor(items[0]));
  } else if (n == 1 && !PyLong_Check(items[0]) && !emp_is_tensor(items[0]) &&
             (PySequence_Check(items[0]) || emp_is_ndarray(items[0]))) {
    t = emp_tensor_from_data(items[0], EM_FLOAT32, true);
    if (!t) return NULL;
  } else {
    emp_shape s;
    if (n == 0) {
      s.ndim = 1;
      s.d[0] = 0;
    } else if (emp_arg_shape_varargs(items, n, "Tensor", &s) < 0) {
      return NULL;
    }
    t = em_tensor_empty(s.ndim, s.d, EM_FLOAT32);
  }
  if (!t) return emp_raise();
  if (tp == emp_tensor_type) return emp_wrap(t);
  return emp_wrap_as(tp, t);
}

/* ---- data replacement (Tensor.data = x, out= resizing) ------------------------------------- */

int emp_set_data(em_tensor *t, em_tensor *src) {
  if (t == src) return 0;
  if (!em_device_eq(t->device, src->device)) {
    PyErr_SetString(PyExc_RuntimeError,
                    "data set to a tensor that requires a different device; use .to() first");
    return -1;
  }
  if (t->requires_grad && !em_dtype_is_float((em_dtype)src->dtype)) {
    PyErr_Format(PyExc_RuntimeError,
                 "data set to a tensor of dtype %s on a tensor that requires grad (only floating "
                 "point tensors can require gradients)",
                 em_dtype_name((em_dtype)src->dtype));
    return -1;
  }
  em_storage *old = t->storage;
  em_tensor *old_base = t->base;
  em_storage_retain(src->storage);
  t->storage = src->storage;
  t->dtype = src->dtype;
  t->ndim = src->ndim;
  t->offset = src->offset;
  t->numel = src->numel;
  memcpy(t->shape, src->shape, sizeof t->shape);
  memcpy(t->strides, src->strides, sizeof t->strides);
  t->base = NULL;
  em_storage_release(old);
  em_tensor_release(old_base);
  return 0;
}

PyObject *emp_write_out(PyObject *out, em_tensor *r) {
  if (!r) return emp_raise();
  if (!emp_is_tensor(out)) {
    em_tensor_release(r);
    PyErr_Format(PyExc_TypeError, "argument 'out' must be Tensor, not %s", Py_TYPE(out)->tp_name);
    return NULL;
  }
  em_tensor *o = emp_tensor(out);
  if (em_is_grad_enabled() && (r->requires_grad || o->requires_grad)) {
    em_tensor_release(r);
    PyErr_SetString(PyExc_RuntimeError,
                    "functions with out=... arguments don't support automatic differentiation, "
                    "but one of the arguments requires grad.");
    return NULL;
  }
  if (!em_can_cast((em_dtype)r->dtype, (em_dtype)o->dtype)) {
    PyErr_Format(PyExc_RuntimeError, "result type %s can't be cast to the desired output type %s",
                 em_dtype_name((em_dtype)r->dtype), em_dtype_name((em_dtype)o->dtype));
    em_tensor_release(r);
    return NULL;
  }
  bool same = r->ndim == o->ndim;
  for (int i = 0; same && i < r->ndim; i++) same = r->shape[i] == o->shape[i];
  em_status st = EM_OK;
  if (same) {
    EMP_NOGIL_IF(emp_big(r), st = em_tensor_copy_(o, r));
    em_tensor_release(r);
    if (st) return emp_raise();
  } else {
    em_tensor *c = em_tensor_to_dtype(r, (em_dtype)o->dtype);
    em_tensor_release(r);
    if (!c) return emp_raise();
    int rc = emp_set_data(o, c);
    em_tensor_release(c);
    if (rc < 0) return NULL;
  }
  return Py_NewRef(out);
}

/* ---- repr ------------------------------------------------------------------------------------ */

PyObject *emp_tensor_repr(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  char *s = em_tensor_to_string(t, NULL);
  if (!s) return emp_raise();
  const char *fn = em_tensor_grad_fn_name(t);
  if (!t->requires_grad) {
    PyObject *r = PyUnicode_FromString(s);
    free(s);
    return r;
  }
  char suffix[80];
  if (fn)
    snprintf(suffix, sizeof suffix, "grad_fn=<%s>", fn);
  else
    snprintf(suffix, sizeof suffix, "requires_grad=True");
  /* PyTorch's _add_suffixes continued after core's own suffixes */
  size_t len = strlen(s);
  if (len && s[len - 1] == ')') s[--len] = '\0';
  const char *nl = strrchr(s, '\n');
  const char *last = nl ? nl + 1 : s;
  size_t last_len = strlen(last);
  bool suffix_line = nl && strncmp(last, "       ", 7) == 0 &&
                     (strncmp(last + 7, "dtype=", 6) == 0 || strncmp(last + 7, "device=", 7) == 0 ||
                      strncmp(last + 7, "size=", 5) == 0);
  size_t last_line_len = suffix_line ? last_len : last_len + 2;
  PyObject *r;
  if (last_line_len + strlen(suffix) + 2 > 80)
    r = PyUnicode_FromFormat("%s,\n       %s)", s, suffix); /* indent: len("tensor(") */
  else
    r = PyUnicode_FromFormat("%s, %s)", s, suffix);
  free(s);
  return r;
}

static PyObject *tensor_format(PyObject *self, PyObject *spec) {
  em_tensor *t = emp_tensor(self);
  if (t->ndim == 0 && PyUnicode_Check(spec) && PyUnicode_GET_LENGTH(spec) > 0) {
    em_scalar s;
    if (em_tensor_item(t, &s)) return emp_raise();
    PyObject *v = emp_scalar_to_py(s);
    if (!v) return NULL;
    PyObject *r = PyObject_Format(v, spec);
    Py_DECREF(v);
    return r;
  }
  PyObject *r = PyObject_Str(self);
  if (!r) return NULL;
  PyObject *f = PyObject_Format(r, spec);
  Py_DECREF(r);
  return f;
}

/* ---- conversions to Python values ----------------------------------------------------------- */

static PyObject *load_py(const char *p, em_dtype dt) {
  if (em_dtype_is_float(dt)) return PyFloat_FromDouble(em__load_f64(p, dt));
  if (dt == EM_BOOL) return PyBool_FromLong(*(const bool *)p);
  return PyLong_FromLongLong(em__load_i64(p, dt));
}

static PyObject *tensor_item(PyObject *self, PyObject *unused) {
  em_scalar s;
  if (em_tensor_item(emp_tensor(self), &s)) {
    if (em_last_status() == EM_ERR_INVALID) {
      PyErr_Format(PyExc_ValueError, "only one element tensors can be converted to Python scalars");
      return NULL;
    }
    return emp_raise();
  }
  return emp_scalar_to_py(s);
}

typedef struct list_ctx {
  em_tensor *t;
  size_t esize;
  int64_t count;
} list_ctx;

static PyObject *to_list(list_ctx *c, int dim, const char *p) {
  em_tensor *t = c->t;
  if (dim == t->ndim) {
    if ((++c->count & ((1 << 20) - 1)) == 0 && PyErr_CheckSignals() < 0) return NULL;
    return load_py(p, (em_dtype)t->dtype);
  }
  int64_t n = t->shape[dim];
  PyObject *l = PyList_New((Py_ssize_t)n);
  if (!l) return NULL;
  int64_t step = t->strides[dim] * (int64_t)c->esize;
  for (int64_t i = 0; i < n; i++) {
    PyObject *v = to_list(c, dim + 1, p + i * step);
    if (!v) {
      Py_DECREF(l);
      return NULL;
    }
    PyList_SET_ITEM(l, (Py_ssize_t)i, v);
  }
  return l;
}

static PyObject *tensor_tolist(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  em_tensor *c = t;
  if (t->device.type != EM_CPU) {
    c = em_tensor_to_device(t, EM_DEVICE_CPU);
    if (!c) return emp_raise();
  }
  list_ctx ctx = {c, em_dtype_size((em_dtype)c->dtype), 0};
  PyObject *r = to_list(&ctx, 0, c->numel ? em__data_ptr(c) : NULL);
  if (c != t) em_tensor_release(c);
  return r;
}

static int one_element(em_tensor *t, const char *what) {
  if (t->numel == 1) return 0;
  if (strcmp(what, "bool") == 0)
    PyErr_Format(PyExc_RuntimeError,
                 "Boolean value of Tensor with %s values is ambiguous",
                 t->numel == 0 ? "no" : "more than one");
  else
    PyErr_Format(PyExc_ValueError, "only one element tensors can be converted to Python scalars");
  return -1;
}

static int tensor_bool(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (one_element(t, "bool") < 0) return -1;
  em_scalar s;
  if (em_tensor_item(t, &s)) return emp_raise_status(em_last_status());
  return s.kind == EM_SCALAR_FLOAT ? s.v.f != 0 : s.v.i != 0;
}

static PyObject *tensor_float(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (one_element(t, "float") < 0) return NULL;
  em_scalar s;
  if (em_tensor_item(t, &s)) return emp_raise();
  return PyFloat_FromDouble(em_scalar_to_double(s));
}

static PyObject *tensor_int(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (one_element(t, "int") < 0) return NULL;
  em_scalar s;
  if (em_tensor_item(t, &s)) return emp_raise();
  if (s.kind == EM_SCALAR_FLOAT) return PyLong_FromDouble(s.v.f);
  return PyLong_FromLongLong(s.v.i);
}

static PyObject *tensor_index(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (t->numel != 1 || em_dtype_is_float((em_dtype)t->dtype)) {
    PyErr_SetString(PyExc_TypeError,
                    "only integer tensors of a single element can be converted to an index");
    return NULL;
  }
  em_scalar s;
  if (em_tensor_item(t, &s)) return emp_raise();
  return PyLong_FromLongLong(s.v.i);
}

static Py_ssize_t tensor_len(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (t->ndim == 0) {
    PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
    return -1;
  }
  return (Py_ssize_t)t->shape[0];
}

static PyObject *tensor_iter(PyObject *self) {
  em_tensor *t = emp_tensor(self);
  if (t->ndim == 0) {
    PyErr_SetString(PyExc_TypeError, "iteration over a 0-d tensor");
    return NULL;
  }
  int64_t n = t->shape[0];
  PyObject *tup = PyTuple_New((Py_ssize_t)n);
  if (!tup) return NULL;
  for (int64_t i = 0; i < n; i++) {
    PyObject *v = emp_wrap(em_tensor_select(t, 0, i));
    if (!v) {
      Py_DECREF(tup);
      return NULL;
    }
    PyTuple_SET_ITEM(tup, (Py_ssize_t)i, v);
  }
  PyObject *it = PyObject_GetIter(tup);
  Py_DECREF(tup);
  return it;
}

static int tensor_contains(PyObject *self, PyObject *el) {
  em_tensor *t = emp_tensor(self);
  em_tensor *e = NULL;
  if (emp_arg_tensor_like(el, "__contains__", "element", &e) < 0) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      PyErr_Format(PyExc_RuntimeError,
                   "Tensor.__contains__ only supports Tensor or scalar, but you passed in a %s.",
                   Py_TYPE(el)->tp_name);
    }
    return -1;
  }
  bool prev = em_set_grad_enabled(false);
  em_tensor *eq = em_tensor_eq(t, e);
  em_tensor *any = eq ? em_tensor_any(eq, 0, NULL, false) : NULL;
  em_set_grad_enabled(prev);
  em_tensor_release(e);
  em_tensor_release(eq);
  if (!any) return emp_raise_status(em_last_status());
  em_scalar s;
  em_status st = em_tensor_item(any, &s);
  em_tensor_release(any);
  if (st) return emp_raise_status(st);
  return s.v.i != 0;
}

static Py_hash_t tensor_hash(PyObject *self) { return _Py_HashPointer(self); }

/* ---- attributes ------------------------------------------------------------------------------- */

static PyObject *get_shape(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  return emp_size_obj(t->ndim, t->shape);
}
static PyObject *get_dtype(PyObject *self, void *c) {
  return Py_NewRef(emp_dtype_obj((em_dtype)emp_tensor(self)->dtype));
}
static PyObject *get_device(PyObject *self, void *c) {
  return emp_device_obj(emp_tensor(self)->device);
}
static PyObject *get_ndim(PyObject *self, void *c) { return PyLong_FromLong(emp_tensor(self)->ndim); }
static PyObject *get_is_cuda(PyObject *self, void *c) {
  return PyBool_FromLong(emp_tensor(self)->device.type == EM_CUDA);
}
static PyObject *get_is_cpu(PyObject *self, void *c) {
  return PyBool_FromLong(emp_tensor(self)->device.type == EM_CPU);
}
static PyObject *get_false(PyObject *self, void *c) { Py_RETURN_FALSE; }
static PyObject *get_itemsize(PyObject *self, void *c) {
  return PyLong_FromSize_t(em_dtype_size((em_dtype)emp_tensor(self)->dtype));
}
static PyObject *get_nbytes(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  return PyLong_FromLongLong(t->numel * (int64_t)em_dtype_size((em_dtype)t->dtype));
}

static PyObject *get_T(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  int64_t perm[EM_MAX_DIMS];
  for (int i = 0; i < t->ndim; i++) perm[i] = t->ndim - 1 - i;
  em_tensor *r = em_tensor_permute(t, t->ndim, perm);
  return emp_wrap(r);
}
static PyObject *get_mT(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  if (t->ndim < 2) {
    PyErr_Format(PyExc_RuntimeError,
                 "tensor.mT is only supported on matrices or batches of matrices. Got %d-D tensor.",
                 t->ndim);
    return NULL;
  }
  return emp_wrap(em_tensor_transpose(t, -2, -1));
}

static PyObject *get_data(PyObject *self, void *c) {
  return emp_wrap(em_tensor_detach(emp_tensor(self)));
}
static int set_data(PyObject *self, PyObject *v, void *c) {
  if (!v) {
    PyErr_SetString(PyExc_TypeError, "cannot delete .data");
    return -1;
  }
  if (!emp_is_tensor(v)) {
    PyErr_Format(PyExc_TypeError, "Tensor.data must be a Tensor, not %s", Py_TYPE(v)->tp_name);
    return -1;
  }
  return emp_set_data(emp_tensor(self), emp_tensor(v));
}

static PyObject *get_dict(PyObject *self, void *c) {
  EmTensorObject *o = (EmTensorObject *)self;
  if (!o->dict && !(o->dict = PyDict_New())) return NULL;
  return Py_NewRef(o->dict);
}
static int set_dict(PyObject *self, PyObject *v, void *c) {
  if (!v || !PyDict_Check(v)) {
    PyErr_SetString(PyExc_TypeError, "__dict__ must be set to a dictionary");
    return -1;
  }
  Py_XSETREF(((EmTensorObject *)self)->dict, Py_NewRef(v));
  return 0;
}

PyGetSetDef emp_tensor_getset[] = {
    {"shape", get_shape, NULL, "The size of the tensor (ember.Size).", NULL},
    {"dtype", get_dtype, NULL, NULL, NULL},
    {"device", get_device, NULL, NULL, NULL},
    {"ndim", get_ndim, NULL, NULL, NULL},
    {"T", get_T, NULL, "The tensor with its dimensions reversed.", NULL},
    {"mT", get_mT, NULL, "The last two dimensions transposed.", NULL},
    {"data", get_data, set_data, "The tensor's data without autograd history.", NULL},
    {"is_cuda", get_is_cuda, NULL, NULL, NULL},
    {"is_cpu", get_is_cpu, NULL, NULL, NULL},
    {"is_sparse", get_false, NULL, NULL, NULL},
    {"is_quantized", get_false, NULL, NULL, NULL},
    {"is_meta", get_false, NULL, NULL, NULL},
    {"itemsize", get_itemsize, NULL, NULL, NULL},
    {"nbytes", get_nbytes, NULL, NULL, NULL},
    {"__dict__", get_dict, set_dict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- methods ------------------------------------------------------------------------------------ */

static PyObject *m_size(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1];
  if (emp_parse("size", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  if (!a[0] || a[0] == Py_None) return emp_size_obj(t->ndim, t->shape);
  int d;
  if (emp_arg_dim(a[0], "size", "dim", &d) < 0) return NULL;
  int64_t v = em_tensor_size(t, d);
  if (v < 0) return emp_raise();
  return PyLong_FromLongLong(v);
}

static PyObject *m_stride(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1];
  if (emp_parse("stride", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  if (!a[0] || a[0] == Py_None) return emp_int_tuple(t->ndim, t->strides);
  int d, w;
  if (emp_arg_dim(a[0], "stride", "dim", &d) < 0) return NULL;
  if (em__wrap_dim("stride", d, t->ndim, &w)) return emp_raise();
  return PyLong_FromLongLong(t->ndim ? t->strides[w] : 1);
}

static PyObject *m_dim(PyObject *self, PyObject *unused) { return PyLong_FromLong(emp_tensor(self)->ndim); }
static PyObject *m_numel(PyObject *self, PyObject *unused) {
  return PyLong_FromLongLong(emp_tensor(self)->numel);
}
static PyObject *m_element_size(PyObject *self, PyObject *unused) {
  return PyLong_FromSize_t(em_dtype_size((em_dtype)emp_tensor(self)->dtype));
}
static PyObject *m_storage_offset(PyObject *self, PyObject *unused) {
  return PyLong_FromLongLong(emp_tensor(self)->offset);
}
static PyObject *m_is_contiguous(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kw) {
  static const char *const names[] = {"memory_format", NULL};
  PyObject *a[1];
  if (emp_parse("is_contiguous", names, 0, args, nargs, kw, a) < 0) return NULL;
  return PyBool_FromLong(em_tensor_is_contiguous(emp_tensor(self)));
}
/* is_pinned(): in page-locked host memory (pin_memory(), a DataLoader with
 * pin_memory=True on a machine with a CUDA device). pin_memory(): a copy
 * there (self when it already is); RuntimeError without a CUDA device. */
static PyObject *m_is_pinned(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_tensor_is_pinned(emp_tensor(self)));
}
static PyObject *m_pin_memory(PyObject *self, PyObject *unused) {
  return emp_wrap(em_tensor_pin_memory(emp_tensor(self)));
}
static PyObject *m_is_floating_point(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_dtype_is_float((em_dtype)emp_tensor(self)->dtype));
}
static PyObject *m_is_signed(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(em_dtype_get_info((em_dtype)emp_tensor(self)->dtype)->is_signed);
}
static PyObject *m_false(PyObject *self, PyObject *unused) { Py_RETURN_FALSE; }
static PyObject *m_data_ptr(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  return PyLong_FromVoidPtr(t->numel ? em__data_ptr(t) : NULL);
}
static PyObject *m_get_device(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  return PyLong_FromLong(t->device.type == EM_CPU ? -1 : t->device.index);
}

/* Tensor._make_subclass(cls, data, require_grad=False): a new object of
 * class cls sharing data's storage (nn.Parameter's constructor). */
static PyObject *m_make_subclass(PyObject *unused, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kw) {
  static const char *const names[] = {"cls", "data", "require_grad", NULL};
  PyObject *a[3];
  if (emp_parse("_make_subclass", names, 2, args, nargs, kw, a) < 0) return NULL;
  if (!PyType_Check(a[0]) || !PyType_IsSubtype((PyTypeObject *)a[0], emp_tensor_type)) {
    PyErr_SetString(PyExc_TypeError, "_make_subclass(): cls must be a subclass of ember.Tensor");
    return NULL;
  }
  em_tensor *data;
  bool rg = false;
  if (emp_arg_tensor(a[1], "_make_subclass", "data", &data) < 0) return NULL;
  if (a[2] && emp_arg_bool(a[2], "_make_subclass", "require_grad", &rg) < 0) return NULL;
  em_tensor *t = em_tensor_detach(data);
  if (!t) return emp_raise();
  if (rg && em_tensor_set_requires_grad(t, true)) {
    em_tensor_release(t);
    return emp_raise();
  }
  return emp_wrap_as((PyTypeObject *)a[0], t);
}

/* Contiguous bytes of the data (pickling). */
static PyObject *m_to_bytes(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  em_tensor *c = em_tensor_contiguous(t);
  if (!c) return emp_raise();
  if (c->device.type != EM_CPU) {
    em_tensor *h = em_tensor_to_device(c, EM_DEVICE_CPU);
    em_tensor_release(c);
    if (!h) return emp_raise();
    c = h;
  }
  Py_ssize_t n = (Py_ssize_t)(c->numel * (int64_t)em_dtype_size((em_dtype)c->dtype));
  PyObject *b = PyBytes_FromStringAndSize(n ? (const char *)em__data_ptr(c) : "", n);
  em_tensor_release(c);
  return b;
}

PyMethodDef emp_tensor_methods[] = {
    {"size", EMP_FN(m_size), METH_FASTCALL | METH_KEYWORDS, "size(dim=None)"},
    {"stride", EMP_FN(m_stride), METH_FASTCALL | METH_KEYWORDS, "stride(dim=None)"},
    {"dim", m_dim, METH_NOARGS, NULL},
    {"ndimension", m_dim, METH_NOARGS, NULL},
    {"numel", m_numel, METH_NOARGS, NULL},
    {"nelement", m_numel, METH_NOARGS, NULL},
    {"element_size", m_element_size, METH_NOARGS, NULL},
    {"storage_offset", m_storage_offset, METH_NOARGS, NULL},
    {"is_contiguous", EMP_FN(m_is_contiguous), METH_FASTCALL | METH_KEYWORDS, NULL},
    {"is_pinned", m_is_pinned, METH_NOARGS, NULL},
    {"pin_memory", m_pin_memory, METH_NOARGS, NULL},
    {"is_floating_point", m_is_floating_point, METH_NOARGS, NULL},
    {"is_signed", m_is_signed, METH_NOARGS, NULL},
    {"is_complex", m_false, METH_NOARGS, NULL},
    {"data_ptr", m_data_ptr, METH_NOARGS, NULL},
    {"get_device", m_get_device, METH_NOARGS, NULL},
    {"item", tensor_item, METH_NOARGS, "The value of a one-element tensor as a Python number."},
    {"tolist", tensor_tolist, METH_NOARGS, "The data as (nested) Python lists."},
    {"__format__", tensor_format, METH_O, NULL},
    {"_make_subclass", EMP_FN(m_make_subclass), METH_FASTCALL | METH_KEYWORDS | METH_STATIC, NULL},
    {"_to_bytes", m_to_bytes, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* _from_bytes(data, dtype, shape): a new tensor copied from raw bytes
 * (unpickling). */
static PyObject *f_from_bytes(PyObject *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"data", "dtype", "shape", NULL};
  PyObject *a[3];
  if (emp_parse("_from_bytes", names, 3, args, nargs, kw, a) < 0) return NULL;
  em_dtype dt = EM_DTYPE_UNDEFINED;
  emp_shape s;
  if (emp_arg_dtype(a[1], "_from_bytes", "dtype", &dt) < 0 || emp_arg_shape(a[2], "_from_bytes", "shape", &s) < 0)
    return NULL;
  if (dt == EM_DTYPE_UNDEFINED) {
    PyErr_SetString(PyExc_TypeError, "_from_bytes(): dtype is required");
    return NULL;
  }
  Py_buffer v;
  if (PyObject_GetBuffer(a[0], &v, PyBUF_SIMPLE) < 0) return NULL;
  int64_t n = 1;
  for (int i = 0; i < s.ndim; i++) n *= s.d[i] < 0 ? 0 : s.d[i];
  em_tensor *t = NULL;
  if ((int64_t)v.len != n * (int64_t)em_dtype_size(dt))
    PyErr_Format(PyExc_ValueError, "_from_bytes(): %zd bytes do not hold %lld elements of %s", v.len,
                 (long long)n, em_dtype_name(dt));
  else
    t = em_tensor_from_data(v.buf, s.ndim, s.d, dt);
  PyBuffer_Release(&v);
  if (!t) return PyErr_Occurred() ? NULL : emp_raise();
  return emp_wrap(t);
}

PyMethodDef emp_tensor_functions[] = {
    {"_from_bytes", EMP_FN(f_from_bytes), EMP_KW, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- the type ------------------------------------------------------------------------------------ */

static PyMemberDef tensor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(EmTensorObject, weakrefs), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(EmTensorObject, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static size_t count_methods(const PyMethodDef *m) {
  size_t n = 0;
  while (m[n].ml_name) n++;
  return n;
}
static size_t count_getset(const PyGetSetDef *g) {
  size_t n = 0;
  while (g[n].name) n++;
  return n;
}

extern PyType_Slot emp_number_slots[];

int emp_tensor_init(PyObject *m) {
  PyMethodDef *tables[] = {emp_tensor_methods, emp_ops_methods, emp_shape_methods,
                           emp_autograd_methods, emp_interop_methods, emp_create_methods,
                           emp_index_methods};
  size_t total = 0;
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) total += count_methods(tables[i]);
  PyMethodDef *methods = PyMem_Calloc(total + 1, sizeof *methods); /* lives as long as the type */
  if (!methods) return -1;
  size_t k = 0;
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
    for (size_t j = 0; tables[i][j].ml_name; j++) methods[k++] = tables[i][j];

  PyGetSetDef *gtables[] = {emp_tensor_getset, emp_autograd_getset, emp_interop_getset};
  total = 0;
  for (size_t i = 0; i < sizeof gtables / sizeof gtables[0]; i++) total += count_getset(gtables[i]);
  PyGetSetDef *getset = PyMem_Calloc(total + 1, sizeof *getset);
  if (!getset) return -1;
  k = 0;
  for (size_t i = 0; i < sizeof gtables / sizeof gtables[0]; i++)
    for (size_t j = 0; gtables[i][j].name; j++) getset[k++] = gtables[i][j];

  PyType_Slot slots[96];
  int n = 0;
#define SLOT(id, fn) slots[n++] = (PyType_Slot){id, (void *)(fn)}
  SLOT(Py_tp_dealloc, tensor_dealloc);
  SLOT(Py_tp_traverse, tensor_traverse);
  SLOT(Py_tp_clear, tensor_clear);
  SLOT(Py_tp_new, tensor_new);
  SLOT(Py_tp_repr, emp_tensor_repr);
  SLOT(Py_tp_str, emp_tensor_repr);
  SLOT(Py_tp_hash, tensor_hash);
  SLOT(Py_tp_richcompare, emp_richcompare);
  SLOT(Py_tp_iter, tensor_iter);
  SLOT(Py_tp_methods, methods);
  SLOT(Py_tp_getset, getset);
  SLOT(Py_tp_members, tensor_members);
  SLOT(Py_tp_doc, "Tensor: an n-dimensional array with autograd support.");
  SLOT(Py_nb_bool, tensor_bool);
  SLOT(Py_nb_float, tensor_float);
  SLOT(Py_nb_int, tensor_int);
  SLOT(Py_nb_index, tensor_index);
  SLOT(Py_mp_length, tensor_len);
  SLOT(Py_sq_length, tensor_len);
  SLOT(Py_mp_subscript, emp_getitem);
  SLOT(Py_mp_ass_subscript, emp_setitem);
  SLOT(Py_sq_contains, tensor_contains);
  SLOT(Py_bf_getbuffer, emp_getbuffer);
  SLOT(Py_bf_releasebuffer, emp_releasebuffer);
  for (int i = 0; emp_number_slots[i].slot; i++) slots[n++] = emp_number_slots[i];
  slots[n++] = (PyType_Slot){0, NULL};
#undef SLOT
  PyType_Spec spec = {
      .name = "ember.Tensor",
      .basicsize = sizeof(EmTensorObject),
      .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
      .slots = slots,
  };
  emp_tensor_type = (PyTypeObject *)PyType_FromSpec(&spec);
  if (!emp_tensor_type) return -1;
  if (PyModule_AddObjectRef(m, "Tensor", (PyObject *)emp_tensor_type) < 0) return -1;
  return 0;
}
