/* Copies and conversions (copy_, clone, to, float(), ...), views and shape
 * ops (view, reshape, permute, cat, split, ...) and the indexing ops
 * (index_select, gather, scatter, masked_fill, nonzero, ...). */
#include "core/cuda/ember_cuda.h"
#include "python/ember_py.h"

#define METHOD(name, fn) {name, EMP_FN(fn), EMP_KW, NULL}
#define NOARGS(name, fn) {name, (PyCFunction)(fn), METH_NOARGS, NULL}

static PyObject *out_or_wrap(PyObject *out, em_tensor *r) {
  if (out && out != Py_None) return emp_write_out(out, r);
  return emp_wrap(r);
}

/* ---- copies and conversions --------------------------------------------------------------- */

static PyObject *m_copy_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"src", "non_blocking", NULL};
  PyObject *a[2];
  if (emp_parse("copy_", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *src;
  if (emp_arg_tensor_like(a[0], "copy_", "src", &src) < 0) return NULL;
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_copy_(t, src));
  em_tensor_release(src);
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_clone(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"*", "memory_format", NULL};
  PyObject *a[1];
  if ((nargs || kw) && emp_parse("clone", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_clone(t));
  return emp_wrap(r);
}
EMP_DEF_FUNC(clone, m_clone)

static PyObject *m_contiguous(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kw) {
  static const char *const names[] = {"memory_format", NULL};
  PyObject *a[1];
  if ((nargs || kw) && emp_parse("contiguous", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_contiguous(t));
  return emp_wrap(r);
}

static PyObject *m_detach(PyObject *self, PyObject *unused) {
  return emp_wrap(em_tensor_detach(emp_tensor(self)));
}
static PyObject *f_detach(PyObject *mod, PyObject *t) {
  em_tensor *x;
  if (emp_arg_tensor(t, "detach", "input", &x) < 0) return NULL;
  return emp_wrap(em_tensor_detach(x));
}

static PyObject *m_fill_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"value", NULL};
  PyObject *a[1];
  if (emp_parse("fill_", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_scalar v;
  if (emp_arg_scalar(a[0], "fill_", "value", &v) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_fill_(t, v));
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_zero_(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_zero_(t));
  return st ? emp_raise() : Py_NewRef(self);
}

/* t converted to (dev, dt) where given; copy forces a new tensor;
 * non_blocking: a copy from or to pinned host memory does not wait. */
static PyObject *convert(PyObject *self, bool has_dev, em_device dev, em_dtype dt, bool copy,
                         bool non_blocking) {
  em_tensor *t = emp_tensor(self), *r = em_tensor_retain(t), *n;
  /* to the host with a new dtype: convert on the device first (an
   * asynchronous copy's result must not be read on the host yet) */
  if (has_dev && dev.type == EM_CPU && t->device.type != EM_CPU && dt != EM_DTYPE_UNDEFINED &&
      dt != (em_dtype)t->dtype) {
    EMP_NOGIL_IF(emp_big(r), n = em_tensor_to_dtype(r, dt));
    em_tensor_release(r);
    if (!(r = n)) return emp_raise();
  }
  if (has_dev && !em_device_eq(dev, r->device)) {
    EMP_NOGIL_IF(emp_big(r), n = em_tensor_to_device_async(r, dev, non_blocking));
    em_tensor_release(r);
    if (!(r = n)) return emp_raise();
  }
  if (dt != EM_DTYPE_UNDEFINED && dt != (em_dtype)r->dtype) {
    EMP_NOGIL_IF(emp_big(r), n = em_tensor_to_dtype(r, dt));
    em_tensor_release(r);
    if (!(r = n)) return emp_raise();
  }
  if (copy && r == t) {
    EMP_NOGIL_IF(emp_big(r), n = em_tensor_clone(r));
    em_tensor_release(r);
    if (!(r = n)) return emp_raise();
  }
  return emp_wrap(r);
}

/* to(dtype) / to(device, dtype=None) / to(other): positional args are told
 * apart by type. */
static PyObject *m_to(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  em_dtype dt = EM_DTYPE_UNDEFINED;
  em_device dev = EM_DEVICE_CPU;
  bool has_dev = false, copy = false, non_blocking = false;
  int nbools = 0;
  if (nargs > 4) {
    PyErr_Format(PyExc_TypeError, "to() takes at most 4 positional arguments (%zd given)", nargs);
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nargs; i++) {
    PyObject *o = args[i];
    if (Py_TYPE(o) == &EmDtype_Type) {
      dt = ((EmDtypeObject *)o)->dtype;
    } else if (PyBool_Check(o)) {
      if (nbools++ == 0)
        non_blocking = o == Py_True;
      else
        copy = o == Py_True;
    } else if (emp_is_tensor(o)) {
      dt = (em_dtype)emp_tensor(o)->dtype;
      dev = emp_tensor(o)->device;
      has_dev = true;
    } else if (Py_TYPE(o) == &EmDevice_Type || PyUnicode_Check(o) || PyLong_Check(o)) {
      if (emp_arg_device(o, "to", "device", &dev) < 0) return NULL;
      has_dev = true;
    } else if (o == Py_None) {
      continue;
    } else {
      PyErr_Format(PyExc_TypeError, "to() received an invalid combination of arguments: got %s",
                   Py_TYPE(o)->tp_name);
      return NULL;
    }
  }
  if (kw) {
    Py_ssize_t nkw = PyTuple_GET_SIZE(kw);
    for (Py_ssize_t k = 0; k < nkw; k++) {
      PyObject *key = PyTuple_GET_ITEM(kw, k), *v = args[nargs + k];
      if (PyUnicode_CompareWithASCIIString(key, "dtype") == 0) {
        if (emp_arg_dtype(v, "to", "dtype", &dt) < 0) return NULL;
      } else if (PyUnicode_CompareWithASCIIString(key, "device") == 0) {
        if (v != Py_None) {
          if (emp_arg_device(v, "to", "device", &dev) < 0) return NULL;
          has_dev = true;
        }
      } else if (PyUnicode_CompareWithASCIIString(key, "copy") == 0) {
        if (emp_arg_bool(v, "to", "copy", &copy) < 0) return NULL;
      } else if (PyUnicode_CompareWithASCIIString(key, "non_blocking") == 0) {
        if (emp_arg_bool(v, "to", "non_blocking", &non_blocking) < 0) return NULL;
      } else if (PyUnicode_CompareWithASCIIString(key, "memory_format") != 0) {
        PyErr_Format(PyExc_TypeError, "to() got an unexpected keyword argument '%U'", key);
        return NULL;
      }
    }
  }
  return convert(self, has_dev, dev, dt, copy, non_blocking);
}

#define AS_TYPE(name, DT)                                                                   \
  static PyObject *m_as_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs,    \
                               PyObject *kw) {                                              \
    static const char *const names[] = {"memory_format", NULL};                             \
    PyObject *a[1];                                                                         \
    if ((nargs || kw) && emp_parse(#name, names, 0, args, nargs, kw, a) < 0) return NULL;   \
    return convert(self, false, EM_DEVICE_CPU, DT, false, false);                           \
  }
AS_TYPE(float, EM_FLOAT32)
AS_TYPE(double, EM_FLOAT64)
AS_TYPE(half, EM_FLOAT16)
AS_TYPE(bfloat16, EM_BFLOAT16)
AS_TYPE(long, EM_INT64)
AS_TYPE(int, EM_INT32)
AS_TYPE(short, EM_INT16)
AS_TYPE(char, EM_INT8)
AS_TYPE(byte, EM_UINT8)
AS_TYPE(bool, EM_BOOL)

static PyObject *m_cpu(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"memory_format", NULL};
  PyObject *a[1];
  if ((nargs || kw) && emp_parse("cpu", names, 0, args, nargs, kw, a) < 0) return NULL;
  return convert(self, true, EM_DEVICE_CPU, EM_DTYPE_UNDEFINED, false, false);
}

static PyObject *m_cuda(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"device", "non_blocking", "memory_format", NULL};
  PyObject *a[3];
  if (emp_parse("cuda", names, 0, args, nargs, kw, a) < 0) return NULL;
  int cur = em_cuda_current_device(); /* .cuda(): the current device, as torch */
  em_device dev = EM_DEVICE_CUDA(cur > 0 ? cur : 0);
  bool non_blocking = false;
  if (emp_arg_device(a[0], "cuda", "device", &dev) < 0 ||
      (a[1] && emp_arg_bool(a[1], "cuda", "non_blocking", &non_blocking) < 0))
    return NULL;
  if (dev.type != EM_CUDA) {
    PyErr_SetString(PyExc_RuntimeError, "Invalid device, must be cuda device");
    return NULL;
  }
  return convert(self, true, dev, EM_DTYPE_UNDEFINED, false, non_blocking);
}

static PyObject *m_type_as(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"other", NULL};
  PyObject *a[1];
  if (emp_parse("type_as", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *o;
  if (emp_arg_tensor(a[0], "type_as", "other", &o) < 0) return NULL;
  return convert(self, true, o->device, (em_dtype)o->dtype, false, false);
}

/* ---- views --------------------------------------------------------------------------------- */

static PyObject *m_view(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  em_tensor *t = emp_tensor(self);
  PyObject *a[2]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"size", "dtype", NULL};
    if (emp_parse("view", names, 0, args, nargs, kw, a) < 0) return NULL;
    if (a[1]) {
      args = &a[1];
      nargs = 1;
    } else if (a[0]) {
      args = &a[0];
      nargs = 1;
    }
  }
  if (nargs == 1 && Py_TYPE(args[0]) == &EmDtype_Type) {
    em_dtype dt = ((EmDtypeObject *)args[0])->dtype;
    if (dt == (em_dtype)t->dtype) return emp_wrap(em_tensor_view(t, t->ndim, t->shape));
    PyErr_Format(PyExc_NotImplementedError, "view(dtype): reinterpreting %s as %s is not supported",
                 em_dtype_name((em_dtype)t->dtype), em_dtype_name(dt));
    return NULL;
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "view", &s) < 0) return NULL;
  return emp_wrap(em_tensor_view(t, s.ndim, s.d));
}

static PyObject *m_reshape(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  PyObject *a[1]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"shape", NULL};
    if (emp_parse("reshape", names, 1, args, nargs, kw, a) < 0) return NULL;
    args = a;
    nargs = 1;
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "reshape", &s) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_reshape(t, s.ndim, s.d));
  return emp_wrap(r);
}
static PyObject *f_reshape(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "shape", NULL};
  PyObject *a[2];
  if (emp_parse("reshape", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t;
  emp_shape s;
  if (emp_arg_tensor(a[0], "reshape", "input", &t) < 0 || emp_arg_shape(a[1], "reshape", "shape", &s) < 0)
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_reshape(t, s.ndim, s.d));
  return emp_wrap(r);
}

static PyObject *as_other(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                          const char *name, int which) {
  static const char *const names[] = {"other", NULL};
  PyObject *a[1];
  if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *o, *r = NULL;
  if (emp_arg_tensor(a[0], name, "other", &o) < 0) return NULL;
  switch (which) {
    case 0: r = em_tensor_view(t, o->ndim, o->shape); break;
    case 1: EMP_NOGIL_IF(emp_big(t), r = em_tensor_reshape(t, o->ndim, o->shape)); break;
    default: r = em_tensor_expand_as(t, o); break;
  }
  return emp_wrap(r);
}
static PyObject *m_view_as(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return as_other(self, args, nargs, kw, "view_as", 0);
}
static PyObject *m_reshape_as(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return as_other(self, args, nargs, kw, "reshape_as", 1);
}
static PyObject *m_expand_as(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return as_other(self, args, nargs, kw, "expand_as", 2);
}

static PyObject *m_transpose(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim0", "dim1", NULL};
  PyObject *a[2];
  if (emp_parse("transpose", names, 2, args, nargs, kw, a) < 0) return NULL;
  int d0, d1;
  if (emp_arg_dim(a[0], "transpose", "dim0", &d0) < 0 || emp_arg_dim(a[1], "transpose", "dim1", &d1) < 0)
    return NULL;
  return emp_wrap(em_tensor_transpose(emp_tensor(self), d0, d1));
}
EMP_DEF_FUNC(transpose, m_transpose)

static PyObject *m_t(PyObject *self, PyObject *unused) { return emp_wrap(em_tensor_t(emp_tensor(self))); }
static PyObject *f_t(PyObject *mod, PyObject *x) {
  em_tensor *t;
  if (emp_arg_tensor(x, "t", "input", &t) < 0) return NULL;
  return emp_wrap(em_tensor_t(t));
}

static PyObject *m_permute(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  PyObject *a[1]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"dims", NULL};
    if (emp_parse("permute", names, 1, args, nargs, kw, a) < 0) return NULL;
    args = a;
    nargs = 1;
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "permute", &s) < 0) return NULL;
  return emp_wrap(em_tensor_permute(emp_tensor(self), s.ndim, s.d));
}
static PyObject *f_permute(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "dims", NULL};
  PyObject *a[2];
  if (emp_parse("permute", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t;
  emp_shape s;
  if (emp_arg_tensor(a[0], "permute", "input", &t) < 0 || emp_arg_shape(a[1], "permute", "dims", &s) < 0)
    return NULL;
  return emp_wrap(em_tensor_permute(t, s.ndim, s.d));
}

static PyObject *m_movedim(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"source", "destination", NULL};
  PyObject *a[2];
  if (emp_parse("movedim", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  emp_shape src, dst;
  if (emp_arg_dims(a[0], "movedim", "source", &src) < 0 ||
      emp_arg_dims(a[1], "movedim", "destination", &dst) < 0)
    return NULL;
  if (src.ndim != dst.ndim) {
    PyErr_Format(PyExc_RuntimeError,
                 "movedim: Invalid source or destination dims: source (%d dims) should contain the "
                 "same number of dims as destination (%d dims)",
                 src.ndim, dst.ndim);
    return NULL;
  }
  int64_t s[EM_MAX_DIMS], d[EM_MAX_DIMS], perm[EM_MAX_DIMS];
  if (em__wrap_dims("movedim", src.ndim, src.d, t->ndim, s) ||
      em__wrap_dims("movedim", dst.ndim, dst.d, t->ndim, d))
    return emp_raise();
  bool used_src[EM_MAX_DIMS] = {0}, used_dst[EM_MAX_DIMS] = {0};
  for (int i = 0; i < t->ndim; i++) perm[i] = -1;
  for (int i = 0; i < src.ndim; i++) {
    perm[d[i]] = s[i];
    used_src[s[i]] = used_dst[d[i]] = true;
  }
  for (int i = 0, j = 0; i < t->ndim; i++) {
    if (used_dst[i]) continue;
    while (used_src[j]) j++;
    perm[i] = j++;
  }
  return emp_wrap(em_tensor_permute(t, t->ndim, perm));
}
EMP_DEF_FUNC(movedim, m_movedim)

static PyObject *m_narrow(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", "start", "length", NULL};
  PyObject *a[3];
  if (emp_parse("narrow", names, 3, args, nargs, kw, a) < 0) return NULL;
  int dim;
  int64_t start, len;
  if (emp_arg_dim(a[0], "narrow", "dim", &dim) < 0 || emp_arg_int(a[1], "narrow", "start", &start) < 0 ||
      emp_arg_int(a[2], "narrow", "length", &len) < 0)
    return NULL;
  return emp_wrap(em_tensor_narrow(emp_tensor(self), dim, start, len));
}
EMP_DEF_FUNC(narrow, m_narrow)

static PyObject *m_select(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", "index", NULL};
  PyObject *a[2];
  if (emp_parse("select", names, 2, args, nargs, kw, a) < 0) return NULL;
  int dim;
  int64_t idx;
  if (emp_arg_dim(a[0], "select", "dim", &dim) < 0 || emp_arg_int(a[1], "select", "index", &idx) < 0)
    return NULL;
  return emp_wrap(em_tensor_select(emp_tensor(self), dim, idx));
}
EMP_DEF_FUNC(select, m_select)

static PyObject *m_expand(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  PyObject *a[2]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"size", "implicit", NULL};
    if (emp_parse("expand", names, 0, args, nargs, kw, a) < 0) return NULL;
    if (a[0]) {
      args = a;
      nargs = 1;
    }
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "expand", &s) < 0) return NULL;
  return emp_wrap(em_tensor_expand(emp_tensor(self), s.ndim, s.d));
}

static PyObject *m_broadcast_to(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kw) {
  static const char *const names[] = {"size", NULL};
  PyObject *a[1];
  if (emp_parse("broadcast_to", names, 1, args, nargs, kw, a) < 0) return NULL;
  emp_shape s;
  if (emp_arg_shape(a[0], "broadcast_to", "size", &s) < 0) return NULL;
  return emp_wrap(em_tensor_expand(emp_tensor(self), s.ndim, s.d));
}
EMP_DEF_FUNC(broadcast_to, m_broadcast_to)

static PyObject *m_squeeze(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1] = {NULL};
  if ((nargs || kw) && emp_parse("squeeze", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  if (!a[0] || a[0] == Py_None) return emp_wrap(em_tensor_squeeze(t));
  emp_shape dims;
  if (emp_arg_dims(a[0], "squeeze", "dim", &dims) < 0) return NULL;
  int64_t w[EM_MAX_DIMS];
  if (em__wrap_dims("squeeze", dims.ndim, dims.d, t->ndim, w)) return emp_raise();
  /* squeeze the highest dims first so the others keep their numbers */
  em_tensor *r = em_tensor_retain(t);
  for (int k = t->ndim - 1; k >= 0 && r; k--) {
    bool sel = false;
    for (int i = 0; i < dims.ndim; i++) sel |= w[i] == k;
    if (!sel || t->ndim == 0) continue;
    em_tensor *n = em_tensor_squeeze_dim(r, k);
    em_tensor_release(r);
    r = n;
  }
  return emp_wrap(r);
}
EMP_DEF_FUNC(squeeze, m_squeeze)

static PyObject *m_unsqueeze(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1];
  if (emp_parse("unsqueeze", names, 1, args, nargs, kw, a) < 0) return NULL;
  int dim;
  if (emp_arg_dim(a[0], "unsqueeze", "dim", &dim) < 0) return NULL;
  return emp_wrap(em_tensor_unsqueeze(emp_tensor(self), dim));
}
EMP_DEF_FUNC(unsqueeze, m_unsqueeze)

static PyObject *m_flatten(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"start_dim", "end_dim", NULL};
  PyObject *a[2];
  if (emp_parse("flatten", names, 0, args, nargs, kw, a) < 0) return NULL;
  int s = 0, e = -1;
  if ((a[0] && emp_arg_dim(a[0], "flatten", "start_dim", &s) < 0) ||
      (a[1] && emp_arg_dim(a[1], "flatten", "end_dim", &e) < 0))
    return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_flatten(t, s, e));
  return emp_wrap(r);
}
EMP_DEF_FUNC(flatten, m_flatten)

static PyObject *m_unflatten(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", "sizes", NULL};
  PyObject *a[2];
  if (emp_parse("unflatten", names, 2, args, nargs, kw, a) < 0) return NULL;
  int dim;
  emp_shape s;
  if (emp_arg_dim(a[0], "unflatten", "dim", &dim) < 0 || emp_arg_shape(a[1], "unflatten", "sizes", &s) < 0)
    return NULL;
  return emp_wrap(em_tensor_unflatten(emp_tensor(self), dim, s.ndim, s.d));
}
EMP_DEF_FUNC(unflatten, m_unflatten)

static PyObject *m_as_strided(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"size", "stride", "storage_offset", NULL};
  PyObject *a[3];
  if (emp_parse("as_strided", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  emp_shape size, stride;
  int64_t off = t->offset;
  if (emp_arg_shape(a[0], "as_strided", "size", &size) < 0 ||
      emp_arg_shape(a[1], "as_strided", "stride", &stride) < 0 ||
      (a[2] && a[2] != Py_None && emp_arg_int(a[2], "as_strided", "storage_offset", &off) < 0))
    return NULL;
  if (size.ndim != stride.ndim) {
    PyErr_Format(PyExc_RuntimeError, "mismatch in length of strides and shape");
    return NULL;
  }
  return emp_wrap(em_tensor_as_strided(t, size.ndim, size.d, stride.d, off));
}
EMP_DEF_FUNC(as_strided, m_as_strided)

static PyObject *m_flip(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  PyObject *a[1]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"dims", NULL};
    if (emp_parse("flip", names, 1, args, nargs, kw, a) < 0) return NULL;
    args = a;
    nargs = 1;
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "flip", &s) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_flip(t, s.ndim, s.d));
  return emp_wrap(r);
}
static PyObject *f_flip(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "dims", NULL};
  PyObject *a[2];
  if (emp_parse("flip", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t, *r;
  emp_shape s;
  if (emp_arg_tensor(a[0], "flip", "input", &t) < 0 || emp_arg_dims(a[1], "flip", "dims", &s) < 0)
    return NULL;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_flip(t, s.ndim, s.d));
  return emp_wrap(r);
}

static PyObject *m_repeat(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  PyObject *a[1]; /* outlives the if: args may point into it */
  if (kw) {
    static const char *const names[] = {"repeats", NULL};
    if (emp_parse("repeat", names, 1, args, nargs, kw, a) < 0) return NULL;
    args = a;
    nargs = 1;
  }
  emp_shape s;
  if (emp_arg_shape_varargs(args, nargs, "repeat", &s) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_repeat(t, s.ndim, s.d));
  return emp_wrap(r);
}

static PyObject *list_to_tuple(em_tensor **list, int n) {
  PyObject *tup = PyTuple_New(n);
  for (int i = 0; i < n; i++) {
    PyObject *v = tup ? emp_wrap(list[i]) : NULL;
    list[i] = NULL;
    if (!v) {
      Py_CLEAR(tup);
      continue;
    }
    PyTuple_SET_ITEM(tup, i, v);
  }
  em_tensor_list_release(list, n);
  return tup;
}

static PyObject *m_split(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"split_size", "dim", NULL};
  PyObject *a[2];
  if (emp_parse("split", names, 1, args, nargs, kw, a) < 0) return NULL;
  int dim = 0;
  if (a[1] && emp_arg_dim(a[1], "split", "dim", &dim) < 0) return NULL;
  em_tensor *t = emp_tensor(self), **out = NULL;
  int n = 0;
  if (PyTuple_Check(a[0]) || PyList_Check(a[0])) {
    emp_shape s;
    if (emp_arg_shape(a[0], "split", "split_size", &s) < 0) return NULL;
    if (em_tensor_split_sizes(t, s.ndim, s.d, dim, &out)) return emp_raise();
    n = s.ndim;
  } else {
    int64_t size;
    if (emp_arg_int(a[0], "split", "split_size", &size) < 0) return NULL;
    if (em_tensor_split(t, size, dim, &out, &n)) return emp_raise();
  }
  return list_to_tuple(out, n);
}
EMP_DEF_FUNC(split, m_split)

static PyObject *m_chunk(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"chunks", "dim", NULL};
  PyObject *a[2];
  if (emp_parse("chunk", names, 1, args, nargs, kw, a) < 0) return NULL;
  int dim = 0;
  int64_t chunks;
  if (emp_arg_int(a[0], "chunk", "chunks", &chunks) < 0 ||
      (a[1] && emp_arg_dim(a[1], "chunk", "dim", &dim) < 0))
    return NULL;
  if (chunks <= 0 || chunks > INT32_MAX) {
    PyErr_Format(PyExc_RuntimeError, "chunk expects `chunks` to be greater than 0, got: %lld",
                 (long long)chunks);
    return NULL;
  }
  em_tensor **out = NULL;
  int n = 0;
  if (em_tensor_chunk(emp_tensor(self), (int)chunks, dim, &out, &n)) return emp_raise();
  return list_to_tuple(out, n);
}
EMP_DEF_FUNC(chunk, m_chunk)

static PyObject *m_unbind(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1];
  if (emp_parse("unbind", names, 0, args, nargs, kw, a) < 0) return NULL;
  int dim = 0, w;
  if (a[0] && emp_arg_dim(a[0], "unbind", "dim", &dim) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  if (t->ndim == 0) {
    PyErr_SetString(PyExc_IndexError, "unbind: dimension specified as 0 but tensor has no dimensions");
    return NULL;
  }
  if (em__wrap_dim("unbind", dim, t->ndim, &w)) return emp_raise();
  int64_t n = t->shape[w];
  PyObject *tup = PyTuple_New((Py_ssize_t)n);
  if (!tup) return NULL;
  for (int64_t i = 0; i < n; i++) {
    PyObject *v = emp_wrap(em_tensor_select(t, w, i));
    if (!v) {
      Py_DECREF(tup);
      return NULL;
    }
    PyTuple_SET_ITEM(tup, (Py_ssize_t)i, v);
  }
  return tup;
}
EMP_DEF_FUNC(unbind, m_unbind)

/* A sequence of tensors -> borrowed em_tensor array (caller frees the array). */
static em_tensor **tensor_seq(PyObject *seq, const char *fname, int *n) {
  PyObject *fast = PySequence_Fast(seq, "expected a sequence of tensors");
  if (!fast) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s(): argument 'tensors' must be tuple of Tensors, not %s", fname,
                 Py_TYPE(seq)->tp_name);
    return NULL;
  }
  Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
  em_tensor **ts = PyMem_Malloc(sizeof *ts * (size_t)(len + 1));
  if (!ts) {
    Py_DECREF(fast);
    PyErr_NoMemory();
    return NULL;
  }
  for (Py_ssize_t i = 0; i < len; i++) {
    PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
    if (!emp_is_tensor(o)) {
      PyErr_Format(PyExc_TypeError,
                   "%s(): argument 'tensors' must be tuple of Tensors, but found element of type "
                   "%s at pos %zd",
                   fname, Py_TYPE(o)->tp_name, i);
      PyMem_Free(ts);
      Py_DECREF(fast);
      return NULL;
    }
    ts[i] = emp_tensor(o);
  }
  /* the tensors stay alive: seq holds them for the duration of the call */
  Py_DECREF(fast);
  *n = (int)len;
  return ts;
}

static PyObject *cat_stack(PyObject *const *args, Py_ssize_t nargs, PyObject *kw, const char *name,
                           bool stack) {
  static const char *const names[] = {"tensors", "dim", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
  int dim = 0, n = 0;
  if (a[1] && emp_arg_dim(a[1], name, "dim", &dim) < 0) return NULL;
  PyObject *keep = PySequence_Fast(a[0], "tensors"); /* keeps a list's items alive */
  if (!keep) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s(): argument 'tensors' must be tuple of Tensors, not %s", name,
                 Py_TYPE(a[0])->tp_name);
    return NULL;
  }
  em_tensor **ts = tensor_seq(keep, name, &n);
  if (!ts) {
    Py_DECREF(keep);
    return NULL;
  }
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += ts[i]->numel;
  em_tensor *r;
  EMP_NOGIL_IF(total > EMP_NOGIL_NUMEL, r = stack ? em_tensor_stack(n, ts, dim) : em_tensor_cat(n, ts, dim));
  PyMem_Free(ts);
  Py_DECREF(keep);
  return out_or_wrap(a[2], r);
}
static PyObject *f_cat(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return cat_stack(args, nargs, kw, "cat", false);
}
static PyObject *f_stack(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return cat_stack(args, nargs, kw, "stack", true);
}

static PyObject *f_broadcast_shapes(PyObject *mod, PyObject *args) {
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  int out_nd = 0;
  int64_t out[EM_MAX_DIMS];
  int nds[2];
  const int64_t *shapes[2];
  for (Py_ssize_t i = 0; i < n; i++) {
    emp_shape s;
    if (emp_arg_shape(PyTuple_GET_ITEM(args, i), "broadcast_shapes", "shapes", &s) < 0) return NULL;
    nds[0] = out_nd;
    shapes[0] = out;
    nds[1] = s.ndim;
    shapes[1] = s.d;
    int64_t tmp[EM_MAX_DIMS];
    int tnd;
    if (em_broadcast_shapes(2, nds, shapes, &tnd, tmp)) return emp_raise();
    out_nd = tnd;
    memcpy(out, tmp, sizeof(int64_t) * (size_t)tnd);
  }
  return emp_size_obj(out_nd, out);
}

static PyObject *f_broadcast_tensors(PyObject *mod, PyObject *args) {
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  if (n == 1 && !emp_is_tensor(PyTuple_GET_ITEM(args, 0))) args = PyTuple_GET_ITEM(args, 0);
  int nt = 0;
  em_tensor **ts = tensor_seq(args, "broadcast_tensors", &nt);
  if (!ts) return NULL;
  int nds[EM_MAX_DIMS * 4];
  const int64_t *shapes[EM_MAX_DIMS * 4];
  if (nt > EM_MAX_DIMS * 4) {
    PyMem_Free(ts);
    PyErr_SetString(PyExc_ValueError, "broadcast_tensors: too many tensors");
    return NULL;
  }
  for (int i = 0; i < nt; i++) {
    nds[i] = ts[i]->ndim;
    shapes[i] = ts[i]->shape;
  }
  int ond = 0;
  int64_t out[EM_MAX_DIMS];
  PyObject *res = NULL;
  if (nt && em_broadcast_shapes(nt, nds, shapes, &ond, out)) {
    emp_raise();
    goto done;
  }
  res = PyTuple_New(nt);
  for (int i = 0; res && i < nt; i++) {
    PyObject *v = emp_wrap(em_tensor_expand(ts[i], ond, out));
    if (!v) {
      Py_CLEAR(res);
      break;
    }
    PyTuple_SET_ITEM(res, i, v);
  }
done:
  PyMem_Free(ts);
  return res;
}

static PyObject *f_pad(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "pad", "mode", "value", NULL};
  PyObject *a[4];
  if (emp_parse("pad", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t;
  emp_shape p;
  double value = 0;
  if (emp_arg_tensor(a[0], "pad", "input", &t) < 0 || emp_arg_shape(a[1], "pad", "pad", &p) < 0)
    return NULL;
  if (a[2] && a[2] != Py_None) {
    const char *m = PyUnicode_Check(a[2]) ? PyUnicode_AsUTF8(a[2]) : NULL;
    if (!m || strcmp(m, "constant") != 0) {
      PyErr_Format(PyExc_NotImplementedError, "pad: only mode='constant' is supported");
      return NULL;
    }
  }
  if (a[3] && a[3] != Py_None && emp_arg_double(a[3], "pad", "value", &value) < 0) return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_pad(t, p.ndim, p.d, value));
  return emp_wrap(r);
}

/* ---- indexing ops ---------------------------------------------------------------------------- */

static PyObject *m_index_select(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kw) {
  static const char *const names[] = {"dim", "index", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse("index_select", names, 2, args, nargs, kw, a) < 0) return NULL;
  int dim;
  em_tensor *idx, *t = emp_tensor(self), *r;
  if (emp_arg_dim(a[0], "index_select", "dim", &dim) < 0 ||
      emp_arg_tensor(a[1], "index_select", "index", &idx) < 0)
    return NULL;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_index_select(t, dim, idx));
  return out_or_wrap(a[2], r);
}
EMP_DEF_FUNC(index_select, m_index_select)

static PyObject *m_gather(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"dim", "index", "*", "sparse_grad", "out", NULL};
  PyObject *a[4];
  if (emp_parse("gather", names, 2, args, nargs, kw, a) < 0) return NULL;
  int dim;
  em_tensor *idx, *t = emp_tensor(self), *r;
  if (emp_arg_dim(a[0], "gather", "dim", &dim) < 0 || emp_arg_tensor(a[1], "gather", "index", &idx) < 0)
    return NULL;
  EMP_NOGIL_IF(emp_big(idx), r = em_tensor_gather(t, dim, idx));
  return out_or_wrap(a[3], r);
}
EMP_DEF_FUNC(gather, m_gather)

/* scatter(dim, index, src) / scatter(dim, index, value) and scatter_add */
static PyObject *scatter_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                              const char *name, bool add, bool inplace) {
  static const char *const names[] = {"dim", "index", "src", "value", "*", "reduce", NULL};
  PyObject *a[5];
  if (emp_parse(name, names, 2, args, nargs, kw, a) < 0) return NULL;
  if (a[4] && a[4] != Py_None) {
    PyErr_Format(PyExc_NotImplementedError, "%s: the reduce argument is not supported", name);
    return NULL;
  }
  int dim;
  em_tensor *idx, *t = emp_tensor(self), *r = NULL;
  if (emp_arg_dim(a[0], name, "dim", &dim) < 0 || emp_arg_tensor(a[1], name, "index", &idx) < 0)
    return NULL;
  PyObject *src = a[2] ? a[2] : a[3];
  if (!src || (a[2] && a[3])) {
    PyErr_Format(PyExc_TypeError, "%s() needs exactly one of 'src' and 'value'", name);
    return NULL;
  }
  em_status st = EM_OK;
  if (emp_is_tensor(src)) {
    em_tensor *s = emp_tensor(src);
    if (inplace)
      EMP_NOGIL_IF(emp_big(idx), st = add ? em_tensor_scatter_add_(t, dim, idx, s)
                                          : em_tensor_scatter_(t, dim, idx, s));
    else
      EMP_NOGIL_IF(emp_big(idx), r = add ? em_tensor_scatter_add(t, dim, idx, s)
                                         : em_tensor_scatter(t, dim, idx, s));
  } else {
    em_scalar v;
    if (add) {
      PyErr_Format(PyExc_TypeError, "%s(): argument 'src' must be Tensor, not %s", name,
                   Py_TYPE(src)->tp_name);
      return NULL;
    }
    if (emp_arg_scalar(src, name, "value", &v) < 0) return NULL;
    EMP_NOGIL_IF(emp_big(idx), r = em_tensor_scatter_value(t, dim, idx, v));
    if (inplace && r) {
      st = em_tensor_copy_(t, r);
      em_tensor_release(r);
      r = NULL;
    } else if (inplace) {
      st = em_last_status();
    }
  }
  if (inplace) return st ? emp_raise() : Py_NewRef(self);
  return emp_wrap(r);
}
static PyObject *m_scatter(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return scatter_impl(self, args, nargs, kw, "scatter", false, false);
}
static PyObject *m_scatter_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return scatter_impl(self, args, nargs, kw, "scatter_", false, true);
}
static PyObject *m_scatter_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return scatter_impl(self, args, nargs, kw, "scatter_add", true, false);
}
static PyObject *m_scatter_add_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return scatter_impl(self, args, nargs, kw, "scatter_add_", true, true);
}
EMP_DEF_FUNC(scatter, m_scatter)
EMP_DEF_FUNC(scatter_add, m_scatter_add)

static PyObject *index_add_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kw, bool inplace) {
  const char *name = inplace ? "index_add_" : "index_add";
  static const char *const names[] = {"dim", "index", "source", "*", "alpha", NULL};
  PyObject *a[4];
  if (emp_parse(name, names, 3, args, nargs, kw, a) < 0) return NULL;
  int dim;
  em_tensor *idx, *src, *t = emp_tensor(self);
  em_scalar alpha = em_scalar_int(1);
  if (emp_arg_dim(a[0], name, "dim", &dim) < 0 || emp_arg_tensor(a[1], name, "index", &idx) < 0 ||
      emp_arg_tensor(a[2], name, "source", &src) < 0 ||
      (a[3] && emp_arg_scalar(a[3], name, "alpha", &alpha) < 0))
    return NULL;
  if (inplace) {
    em_status st;
    EMP_NOGIL_IF(emp_big(src), st = em_tensor_index_add_(t, dim, idx, src, alpha));
    return st ? emp_raise() : Py_NewRef(self);
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(src) || emp_big(t), r = em_tensor_index_add(t, dim, idx, src, alpha));
  return emp_wrap(r);
}
static PyObject *m_index_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return index_add_impl(self, args, nargs, kw, false);
}
static PyObject *m_index_add_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return index_add_impl(self, args, nargs, kw, true);
}
EMP_DEF_FUNC(index_add, m_index_add)

static PyObject *masked_fill_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kw, bool inplace) {
  const char *name = inplace ? "masked_fill_" : "masked_fill";
  static const char *const names[] = {"mask", "value", NULL};
  PyObject *a[2];
  if (emp_parse(name, names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *mask, *t = emp_tensor(self);
  em_scalar v;
  if (emp_arg_tensor(a[0], name, "mask", &mask) < 0 || emp_arg_scalar(a[1], name, "value", &v) < 0)
    return NULL;
  if (inplace) {
    em_status st;
    EMP_NOGIL_IF(emp_big(t), st = em_tensor_masked_fill_(t, mask, v));
    return st ? emp_raise() : Py_NewRef(self);
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_masked_fill(t, mask, v));
  return emp_wrap(r);
}
static PyObject *m_masked_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return masked_fill_impl(self, args, nargs, kw, false);
}
static PyObject *m_masked_fill_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return masked_fill_impl(self, args, nargs, kw, true);
}
EMP_DEF_FUNC(masked_fill, m_masked_fill)

static PyObject *m_masked_select(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kw) {
  static const char *const names[] = {"mask", "*", "out", NULL};
  PyObject *a[2];
  if (emp_parse("masked_select", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *mask, *t = emp_tensor(self), *r;
  if (emp_arg_tensor(a[0], "masked_select", "mask", &mask) < 0) return NULL;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_masked_select(t, mask));
  return out_or_wrap(a[1], r);
}
EMP_DEF_FUNC(masked_select, m_masked_select)

PyObject *emp_nonzero_tuple(em_tensor *t) {
  em_tensor *nz;
  EMP_NOGIL_IF(emp_big(t), nz = em_tensor_nonzero(t));
  if (!nz) return emp_raise();
  int nd = t->ndim ? t->ndim : 1;
  PyObject *tup = PyTuple_New(nd);
  for (int d = 0; tup && d < nd; d++) {
    em_tensor *col = t->ndim ? em_tensor_select(nz, 1, d) : NULL;
    if (!t->ndim) { /* 0-dim input: one index list of zeros */
      col = em_tensor_zeros(1, (int64_t[]){nz->shape[0]}, EM_INT64);
    } else if (col) {
      em_tensor *c = em_tensor_contiguous(col);
      em_tensor_release(col);
      col = c;
    }
    PyObject *v = emp_wrap(col);
    if (!v) {
      Py_CLEAR(tup);
      break;
    }
    PyTuple_SET_ITEM(tup, d, v);
  }
  em_tensor_release(nz);
  return tup;
}

static PyObject *m_nonzero(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"*", "as_tuple", NULL};
  PyObject *a[1] = {NULL};
  if ((nargs || kw) && emp_parse("nonzero", names, 0, args, nargs, kw, a) < 0) return NULL;
  bool as_tuple = false;
  if (a[0] && emp_arg_bool(a[0], "nonzero", "as_tuple", &as_tuple) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  if (as_tuple) return emp_nonzero_tuple(t);
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_nonzero(t));
  return emp_wrap(r);
}
EMP_DEF_FUNC(nonzero, m_nonzero)

static PyObject *m_argwhere(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_nonzero(t));
  return emp_wrap(r);
}

static PyObject *m_take_along_dim(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kw) {
  static const char *const names[] = {"indices", "dim", NULL};
  PyObject *a[2];
  if (emp_parse("take_along_dim", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *idx, *t = emp_tensor(self);
  if (emp_arg_tensor(a[0], "take_along_dim", "indices", &idx) < 0) return NULL;
  if (!a[1] || a[1] == Py_None) {
    em_tensor *ft = em_tensor_reshape(t, 1, (int64_t[]){-1});
    em_tensor *fi = ft ? em_tensor_reshape(idx, 1, (int64_t[]){-1}) : NULL;
    em_tensor *r = fi ? em_tensor_take_along_dim(ft, fi, 0) : NULL;
    em_tensor_release(ft);
    em_tensor_release(fi);
    return emp_wrap(r);
  }
  int dim;
  if (emp_arg_dim(a[1], "take_along_dim", "dim", &dim) < 0) return NULL;
  return emp_wrap(em_tensor_take_along_dim(t, idx, dim));
}
EMP_DEF_FUNC(take_along_dim, m_take_along_dim)

/* index_put_(indices, values, accumulate=False): indices is a tuple of
 * index tensors (None = full slice). */
static PyObject *index_put_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kw, bool inplace) {
  const char *name = inplace ? "index_put_" : "index_put";
  static const char *const names[] = {"indices", "values", "accumulate", NULL};
  PyObject *a[3];
  if (emp_parse(name, names, 2, args, nargs, kw, a) < 0) return NULL;
  bool acc = false;
  if (a[2] && emp_arg_bool(a[2], name, "accumulate", &acc) < 0) return NULL;
  if (!PyTuple_Check(a[0]) && !PyList_Check(a[0])) {
    PyErr_Format(PyExc_TypeError, "%s(): argument 'indices' must be tuple of Tensors, not %s", name,
                 Py_TYPE(a[0])->tp_name);
    return NULL;
  }
  Py_ssize_t n = PySequence_Fast_GET_SIZE(a[0]);
  if (n > EM_MAX_DIMS) {
    PyErr_Format(PyExc_IndexError, "%s: too many indices", name);
    return NULL;
  }
  em_tensor *idx[EM_MAX_DIMS];
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *o = PySequence_Fast_GET_ITEM(a[0], i);
    if (o == Py_None) {
      idx[i] = NULL;
    } else if (emp_arg_tensor(o, name, "indices", &idx[i]) < 0) {
      return NULL;
    }
  }
  em_tensor *vals, *t = emp_tensor(self), *target = t;
  if (emp_arg_tensor_like(a[1], name, "values", &vals) < 0) return NULL;
  if (vals->dtype != t->dtype) {
    em_tensor *c = em_tensor_to_dtype(vals, (em_dtype)t->dtype);
    em_tensor_release(vals);
    if (!(vals = c)) return emp_raise();
  }
  if (!inplace && !(target = em_tensor_clone(t))) {
    em_tensor_release(vals);
    return emp_raise();
  }
  em_status st;
  EMP_NOGIL_IF(emp_big(vals), st = em_tensor_index_put_(target, (int)n, idx, vals, acc));
  em_tensor_release(vals);
  if (st) {
    if (!inplace) em_tensor_release(target);
    return emp_raise();
  }
  if (inplace) return Py_NewRef(self);
  return emp_wrap(target);
}
static PyObject *m_index_put_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return index_put_impl(self, args, nargs, kw, true);
}
static PyObject *m_index_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return index_put_impl(self, args, nargs, kw, false);
}
EMP_DEF_FUNC(index_put, m_index_put)

static PyObject *f_one_hot(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"tensor", "num_classes", NULL};
  PyObject *a[2];
  if (emp_parse("one_hot", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t, *r;
  int64_t nc = -1;
  if (emp_arg_tensor(a[0], "one_hot", "tensor", &t) < 0 ||
      (a[1] && emp_arg_int(a[1], "one_hot", "num_classes", &nc) < 0))
    return NULL;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_one_hot(t, nc));
  return emp_wrap(r);
}

/* embedding(weight, indices) as torch.embedding (F.embedding swaps them). */
static PyObject *f_embedding(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"weight", "indices", NULL};
  PyObject *a[2];
  if (emp_parse("embedding", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *w, *i, *r;
  if (emp_arg_tensor(a[0], "embedding", "weight", &w) < 0 ||
      emp_arg_tensor(a[1], "embedding", "indices", &i) < 0)
    return NULL;
  EMP_NOGIL_IF(emp_big(i), r = em_tensor_embedding(w, i));
  return emp_wrap(r);
}

/* ---- tables --------------------------------------------------------------------------------------- */

PyMethodDef emp_shape_methods[] = {
    METHOD("copy_", m_copy_), METHOD("clone", m_clone), METHOD("contiguous", m_contiguous),
    NOARGS("detach", m_detach), METHOD("fill_", m_fill_), NOARGS("zero_", m_zero_),
    METHOD("to", m_to), METHOD("float", m_as_float), METHOD("double", m_as_double),
    METHOD("half", m_as_half), METHOD("bfloat16", m_as_bfloat16), METHOD("long", m_as_long),
    METHOD("int", m_as_int), METHOD("short", m_as_short), METHOD("char", m_as_char),
    METHOD("byte", m_as_byte), METHOD("bool", m_as_bool), METHOD("cpu", m_cpu),
    METHOD("cuda", m_cuda), METHOD("type_as", m_type_as),
    METHOD("view", m_view), METHOD("view_as", m_view_as), METHOD("reshape", m_reshape),
    METHOD("reshape_as", m_reshape_as), METHOD("transpose", m_transpose),
    METHOD("swapaxes", m_transpose), METHOD("swapdims", m_transpose), NOARGS("t", m_t),
    METHOD("permute", m_permute), METHOD("movedim", m_movedim), METHOD("moveaxis", m_movedim),
    METHOD("narrow", m_narrow), METHOD("select", m_select), METHOD("expand", m_expand),
    METHOD("expand_as", m_expand_as), METHOD("broadcast_to", m_broadcast_to),
    METHOD("squeeze", m_squeeze), METHOD("unsqueeze", m_unsqueeze), METHOD("flatten", m_flatten),
    METHOD("unflatten", m_unflatten), METHOD("as_strided", m_as_strided), METHOD("flip", m_flip),
    METHOD("repeat", m_repeat), METHOD("split", m_split), METHOD("chunk", m_chunk),
    METHOD("unbind", m_unbind),
    METHOD("index_select", m_index_select), METHOD("gather", m_gather), METHOD("scatter", m_scatter),
    METHOD("scatter_", m_scatter_), METHOD("scatter_add", m_scatter_add),
    METHOD("scatter_add_", m_scatter_add_), METHOD("index_add", m_index_add),
    METHOD("index_add_", m_index_add_), METHOD("masked_fill", m_masked_fill),
    METHOD("masked_fill_", m_masked_fill_), METHOD("masked_select", m_masked_select),
    METHOD("nonzero", m_nonzero), NOARGS("argwhere", m_argwhere),
    METHOD("take_along_dim", m_take_along_dim), METHOD("index_put_", m_index_put_),
    METHOD("index_put", m_index_put),
    {NULL, NULL, 0, NULL},
};

PyMethodDef emp_shape_functions[] = {
    METHOD("clone", f_clone), {"detach", f_detach, METH_O, NULL},
    METHOD("reshape", f_reshape), METHOD("transpose", f_transpose), METHOD("swapaxes", f_transpose),
    METHOD("swapdims", f_transpose), {"t", f_t, METH_O, NULL}, METHOD("permute", f_permute),
    METHOD("movedim", f_movedim), METHOD("moveaxis", f_movedim), METHOD("narrow", f_narrow),
    METHOD("select", f_select), METHOD("broadcast_to", f_broadcast_to), METHOD("squeeze", f_squeeze),
    METHOD("unsqueeze", f_unsqueeze), METHOD("flatten", f_flatten), METHOD("unflatten", f_unflatten),
    METHOD("as_strided", f_as_strided), METHOD("flip", f_flip), METHOD("split", f_split),
    METHOD("chunk", f_chunk), METHOD("unbind", f_unbind), METHOD("cat", f_cat),
    METHOD("concat", f_cat), METHOD("concatenate", f_cat), METHOD("stack", f_stack),
    {"broadcast_shapes", f_broadcast_shapes, METH_VARARGS, NULL},
    {"broadcast_tensors", f_broadcast_tensors, METH_VARARGS, NULL},
    METHOD("pad", f_pad), METHOD("index_select", f_index_select), METHOD("gather", f_gather),
    METHOD("scatter", f_scatter), METHOD("scatter_add", f_scatter_add),
    METHOD("index_add", f_index_add), METHOD("masked_fill", f_masked_fill),
    METHOD("masked_select", f_masked_select), METHOD("nonzero", f_nonzero),
    METHOD("take_along_dim", f_take_along_dim), METHOD("index_put", f_index_put),
    METHOD("one_hot", f_one_hot), METHOD("embedding", f_embedding),
    {NULL, NULL, 0, NULL},
};
