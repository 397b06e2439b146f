/* Creation functions: ember.tensor (nested sequences, numbers, arrays,
 * with PyTorch's dtype inference), zeros/ones/empty/full/arange/linspace/
 * eye, random tensors, *_like, Tensor.new_*, and the in-place random ops. */
#include "python/ember_py.h"

#define METHOD(name, fn) {name, EMP_FN(fn), EMP_KW, NULL}

/* ---- keyword arguments shared by factories -------------------------------------------------- */

enum { K_DTYPE = 1, K_DEVICE = 2, K_RG = 4, K_OUT = 8, K_GEN = 16, K_SIZE = 32, K_MISC = 64 };

typedef struct fkw {
  em_dtype dt;
  em_device dev;
  bool has_dev;
  PyObject *rg;    /* requires_grad (borrowed) or NULL */
  PyObject *out;   /* borrowed or NULL */
  PyObject *size;  /* size= keyword (borrowed) or NULL */
  em_generator *gen;
} fkw;

static int parse_fkw(const char *fname, PyObject *const *vals, PyObject *kwnames, unsigned allow,
                     fkw *f) {
  f->dt = EM_DTYPE_UNDEFINED;
  f->dev = EM_DEVICE_CPU;
  f->has_dev = false;
  f->rg = f->out = f->size = NULL;
  f->gen = NULL;
  if (!kwnames) return 0;
  for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
    PyObject *key = PyTuple_GET_ITEM(kwnames, k), *v = vals[k];
#define IS(s) (PyUnicode_CompareWithASCIIString(key, s) == 0)
    if ((allow & K_DTYPE) && IS("dtype")) {
      if (emp_arg_dtype(v, fname, "dtype", &f->dt) < 0) return -1;
    } else if ((allow & K_DEVICE) && IS("device")) {
      if (v != Py_None) {
        if (emp_arg_device(v, fname, "device", &f->dev) < 0) return -1;
        f->has_dev = true;
      }
    } else if ((allow & K_RG) && IS("requires_grad")) {
      f->rg = v;
    } else if ((allow & K_OUT) && IS("out")) {
      f->out = v == Py_None ? NULL : v;
    } else if ((allow & K_GEN) && IS("generator")) {
      if (emp_arg_generator(v, fname, &f->gen) < 0) return -1;
    } else if ((allow & K_SIZE) && IS("size")) {
      f->size = v;
    } else if (IS("layout") || IS("pin_memory") || IS("memory_format")) {
      /* accepted for compatibility: ember tensors are strided and unpinned */
    } else {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
      return -1;
    }
#undef IS
  }
  return 0;
}

int emp_apply_requires_grad(em_tensor *t, PyObject *rg, const char *fname) {
  if (!rg || rg == Py_False || rg == Py_None) return 0;
  bool b = false;
  if (emp_arg_bool(rg, fname, "requires_grad", &b) < 0) return -1;
  if (b && em_tensor_set_requires_grad(t, true)) return emp_raise_status(em_last_status());
  return 0;
}

/* Moves a fresh CPU tensor to the requested device, applies requires_grad
 * and out=, and wraps it. Steals t. */
static PyObject *finish(em_tensor *t, const fkw *f, const char *fname) {
  if (!t) return emp_raise();
  if (f->has_dev && !em_device_eq(f->dev, t->device)) {
    em_tensor *d = em_tensor_to_device(t, f->dev);
    em_tensor_release(t);
    if (!(t = d)) return emp_raise();
  }
  if (f->out) return emp_write_out(f->out, t);
  if (emp_apply_requires_grad(t, f->rg, fname) < 0) {
    em_tensor_release(t);
    return NULL;
  }
  return emp_wrap(t);
}

/* Sizes from the positional arguments or size=. */
static int sizes_of(PyObject *const *args, Py_ssize_t nargs, const fkw *f, const char *fname,
                    emp_shape *s) {
  if (f->size) {
    if (nargs) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument 'size'", fname);
      return -1;
    }
    return emp_arg_shape(f->size, fname, "size", s);
  }
  return emp_arg_shape_varargs(args, nargs, fname, s);
}

/* ---- ember.tensor: inference and filling ------------------------------------------------------- */

typedef struct infer_ctx {
  int ndim;
  int64_t shape[EM_MAX_DIMS];
  em_dtype dt;
  int64_t count;
} infer_ctx;

/* The dtype of one leaf value, or -1 with an exception when o is not a
 * scalar. */
int emp_numpy_scalar_dtype(PyObject *o, em_dtype *dt);

static int leaf_dtype(PyObject *o, em_dtype *dt) {
  if (PyBool_Check(o)) {
    *dt = EM_BOOL;
    return 0;
  }
  if (emp_numpy_scalar_dtype(o, dt) > 0) return 0;
  if (PyErr_Occurred()) return -1;
  if (PyFloat_Check(o)) {
    *dt = em_get_default_dtype();
    return 0;
  }
  if (PyLong_Check(o)) {
    *dt = EM_INT64;
    return 0;
  }
  if (emp_is_tensor(o)) {
    em_tensor *t = emp_tensor(o);
    if (t->numel != 1) {
      PyErr_SetString(PyExc_ValueError, "only one element tensors can be converted to Python scalars");
      return -1;
    }
    *dt = (em_dtype)t->dtype;
    return 0;
  }
  if (PyIndex_Check(o)) {
    *dt = EM_INT64;
    return 0;
  }
  if (PyComplex_Check(o)) {
    PyErr_SetString(PyExc_TypeError, "ember does not support complex numbers");
    return -1;
  }
  if (PyUnicode_Check(o) || PyBytes_Check(o)) {
    PyErr_Format(PyExc_TypeError, "new(): invalid data type '%s'", Py_TYPE(o)->tp_name);
    return -1;
  }
  PyErr_Format(PyExc_RuntimeError, "Could not infer dtype of %s", Py_TYPE(o)->tp_name);
  return -1;
}

static int is_seq(PyObject *o) {
  if (PyList_Check(o) || PyTuple_Check(o)) return 1;
  if (emp_is_tensor(o) || PyUnicode_Check(o) || PyBytes_Check(o) || PyByteArray_Check(o)) return 0;
  return PySequence_Check(o);
}

/* Shape from the first elements. */
static int infer_shape(PyObject *o, infer_ctx *c) {
  PyObject *cur = o;
  Py_INCREF(cur);
  c->ndim = 0;
  while (is_seq(cur)) {
    if (emp_is_tensor(cur)) break;
    Py_ssize_t n = PySequence_Size(cur);
    if (n < 0) {
      Py_DECREF(cur);
      return -1;
    }
    if (c->ndim == EM_MAX_DIMS) {
      Py_DECREF(cur);
      PyErr_Format(PyExc_ValueError, "tensor(): too many dimensions (at most %d)", EM_MAX_DIMS);
      return -1;
    }
    c->shape[c->ndim++] = n;
    if (n == 0) break;
    PyObject *first = PySequence_GetItem(cur, 0);
    Py_DECREF(cur);
    if (!first) return -1;
    cur = first;
  }
  Py_DECREF(cur);
  return 0;
}

/* Walks every leaf: checks the structure, infers the dtype (dt_known:
 * only checks), and with out != NULL stores the values. */
static int walk(PyObject *o, int dim, infer_ctx *c, bool dt_known, em_tensor *out, int64_t *pos) {
  if (dim == c->ndim) {
    if (is_seq(o) && !emp_is_tensor(o)) {
      PyErr_Format(PyExc_ValueError, "expected a scalar at dim %d (got a sequence of type %s)", dim,
                   Py_TYPE(o)->tp_name);
      return -1;
    }
    if ((++c->count & ((1 << 20) - 1)) == 0 && PyErr_CheckSignals() < 0) return -1;
    if (!out) {
      em_dtype d;
      if (leaf_dtype(o, &d) < 0) return -1;
      if (!dt_known) c->dt = c->dt == EM_DTYPE_UNDEFINED ? d : em_promote_types(c->dt, d);
      return 0;
    }
    em_scalar s;
    if (emp_arg_scalar(o, "tensor", "data", &s) < 0) return -1;
    em__store_scalar((char *)em__data_ptr(out) + *pos * (int64_t)em_dtype_size((em_dtype)out->dtype),
                     (em_dtype)out->dtype, s);
    (*pos)++;
    return 0;
  }
  if (!is_seq(o)) {
    PyErr_Format(PyExc_TypeError, "not a sequence (got %s at dim %d, expected a sequence of length "
                 "%lld)", Py_TYPE(o)->tp_name, dim, (long long)c->shape[dim]);
    return -1;
  }
  PyObject *fast = PySequence_Fast(o, "not a sequence");
  if (!fast) return -1;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  if (n != c->shape[dim]) {
    Py_DECREF(fast);
    PyErr_Format(PyExc_ValueError, "expected sequence of length %lld at dim %d (got %zd)",
                 (long long)c->shape[dim], dim, n);
    return -1;
  }
  PyObject **items = PySequence_Fast_ITEMS(fast);
  for (Py_ssize_t i = 0; i < n; i++) {
    if (walk(items[i], dim + 1, c, dt_known, out, pos) < 0) {
      Py_DECREF(fast);
      return -1;
    }
  }
  Py_DECREF(fast);
  return 0;
}

em_tensor *emp_tensor_from_data(PyObject *data, em_dtype dt, bool copy_arrays) {
  if (emp_is_tensor(data)) {
    em_tensor *t = emp_tensor(data);
    bool prev = em_set_grad_enabled(false);
    em_tensor *r = dt == EM_DTYPE_UNDEFINED || dt == (em_dtype)t->dtype ? em_tensor_clone(t)
                                                                        : em_tensor_to_dtype(t, dt);
    if (r == t) { /* to_dtype returned t itself */
      em_tensor_release(r);
      r = em_tensor_clone(t);
    }
    em_set_grad_enabled(prev);
    if (!r) emp_raise();
    return r;
  }
  if (emp_is_ndarray(data) && !PyList_Check(data) && !PyTuple_Check(data)) {
    em_tensor *b = emp_tensor_from_buffer(data, false);
    if (!b) return NULL;
    em_tensor *r;
    if (dt != EM_DTYPE_UNDEFINED && dt != (em_dtype)b->dtype)
      r = em_tensor_to_dtype(b, dt);
    else
      r = copy_arrays ? em_tensor_clone(b) : em_tensor_retain(b);
    em_tensor_release(b);
    if (!r) emp_raise();
    return r;
  }
  infer_ctx c = {0};
  c.dt = EM_DTYPE_UNDEFINED;
  if (infer_shape(data, &c) < 0) return NULL;
  int64_t n = 1;
  for (int i = 0; i < c.ndim; i++) {
    if (__builtin_mul_overflow(n, c.shape[i], &n)) {
      PyErr_SetString(PyExc_ValueError, "tensor(): too many elements");
      return NULL;
    }
  }
  bool known = dt != EM_DTYPE_UNDEFINED;
  if (walk(data, 0, &c, known, NULL, NULL) < 0) return NULL;
  if (!known) dt = c.dt == EM_DTYPE_UNDEFINED ? em_get_default_dtype() : c.dt;
  em_tensor *t = em_tensor_empty(c.ndim, c.shape, dt);
  if (!t) {
    emp_raise();
    return NULL;
  }
  int64_t pos = 0;
  c.count = 0;
  if (n > 0 && walk(data, 0, &c, true, t, &pos) < 0) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

static PyObject *f_tensor(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  if (nargs != 1) {
    PyErr_Format(PyExc_TypeError, "tensor() takes 1 positional argument but %zd were given", nargs);
    return NULL;
  }
  fkw f;
  if (parse_fkw("tensor", args + nargs, kw, K_DTYPE | K_DEVICE | K_RG, &f) < 0) return NULL;
  em_tensor *t = emp_tensor_from_data(args[0], f.dt, true);
  if (!t) return NULL;
  return finish(t, &f, "tensor");
}

static PyObject *f_as_tensor(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"data", "dtype", "device", NULL};
  PyObject *a[3];
  if (emp_parse("as_tensor", names, 1, args, nargs, kw, a) < 0) return NULL;
  fkw f = {.dt = EM_DTYPE_UNDEFINED, .dev = EM_DEVICE_CPU};
  if (emp_arg_dtype(a[1], "as_tensor", "dtype", &f.dt) < 0) return NULL;
  if (a[2] && a[2] != Py_None) {
    if (emp_arg_device(a[2], "as_tensor", "device", &f.dev) < 0) return NULL;
    f.has_dev = true;
  }
  em_tensor *t;
  if (emp_is_tensor(a[0])) {
    t = em_tensor_retain(emp_tensor(a[0]));
    if (f.dt != EM_DTYPE_UNDEFINED && f.dt != (em_dtype)t->dtype) {
      em_tensor *c = em_tensor_to_dtype(t, f.dt);
      em_tensor_release(t);
      t = c;
    }
  } else {
    t = emp_tensor_from_data(a[0], f.dt, false);
    if (!t) return NULL;
  }
  return finish(t, &f, "as_tensor");
}

/* ---- factories ------------------------------------------------------------------------------------ */

typedef em_tensor *(*shape_fn)(int, const int64_t *, em_dtype);

static PyObject *factory(PyObject *const *args, Py_ssize_t nargs, PyObject *kw, const char *fname,
                         shape_fn fn) {
  fkw f;
  if (parse_fkw(fname, args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_OUT | K_SIZE, &f) < 0)
    return NULL;
  emp_shape s;
  if (sizes_of(args, nargs, &f, fname, &s) < 0) return NULL;
  if (f.out && f.dt == EM_DTYPE_UNDEFINED) f.dt = (em_dtype)emp_tensor(f.out)->dtype;
  em_tensor *t;
  int64_t n = 1;
  for (int i = 0; i < s.ndim; i++) n *= s.d[i] > 0 ? s.d[i] : 0;
  EMP_NOGIL_IF(n > EMP_NOGIL_NUMEL, t = fn(s.ndim, s.d, f.dt));
  return finish(t, &f, fname);
}

#define FACTORY(name)                                                                        \
  static PyObject *f_##name(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,         \
                            PyObject *kw) {                                                  \
    return factory(args, nargs, kw, #name, em_tensor_##name);                               \
  }
FACTORY(zeros)
FACTORY(ones)
FACTORY(empty)

typedef em_tensor *(*rand_fn)(int, const int64_t *, em_dtype, em_generator *);

static PyObject *rand_factory(PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                              const char *fname, rand_fn fn) {
  fkw f;
  if (parse_fkw(fname, args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_OUT | K_SIZE | K_GEN, &f) < 0)
    return NULL;
  emp_shape s;
  if (sizes_of(args, nargs, &f, fname, &s) < 0) return NULL;
  em_tensor *t;
  int64_t n = 1;
  for (int i = 0; i < s.ndim; i++) n *= s.d[i] > 0 ? s.d[i] : 0;
  EMP_NOGIL_IF(n > EMP_NOGIL_NUMEL, t = fn(s.ndim, s.d, f.dt, f.gen));
  return finish(t, &f, fname);
}
static PyObject *f_rand(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return rand_factory(args, nargs, kw, "rand", em_tensor_rand);
}
static PyObject *f_randn(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return rand_factory(args, nargs, kw, "randn", em_tensor_randn);
}

static PyObject *f_full(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  Py_ssize_t nkw = kw ? PyTuple_GET_SIZE(kw) : 0;
  PyObject *fill = NULL, *size = NULL;
  /* full(size, fill_value) with either given by keyword */
  PyObject *kvals[16];
  PyObject *knames = NULL;
  if (nkw > 16) {
    PyErr_SetString(PyExc_TypeError, "full(): too many keyword arguments");
    return NULL;
  }
  if (nargs >= 1) size = args[0];
  if (nargs >= 2) fill = args[1];
  if (nargs > 2) {
    PyErr_Format(PyExc_TypeError, "full() takes 2 positional arguments but %zd were given", nargs);
    return NULL;
  }
  Py_ssize_t nrest = 0;
  if (nkw) {
    knames = PyTuple_New(nkw);
    if (!knames) return NULL;
    for (Py_ssize_t k = 0; k < nkw; k++) {
      PyObject *key = PyTuple_GET_ITEM(kw, k);
      if (PyUnicode_CompareWithASCIIString(key, "fill_value") == 0 && !fill) {
        fill = args[nargs + k];
      } else if (PyUnicode_CompareWithASCIIString(key, "size") == 0 && !size) {
        size = args[nargs + k];
      } else {
        kvals[nrest] = args[nargs + k];
        PyTuple_SET_ITEM(knames, nrest++, Py_NewRef(key));
      }
    }
    if (_PyTuple_Resize(&knames, nrest) < 0) return NULL;
  }
  PyObject *res = NULL;
  fkw f;
  emp_shape s;
  em_scalar v;
  if (!size || !fill) {
    PyErr_SetString(PyExc_TypeError, "full() missing required arguments 'size' and 'fill_value'");
    goto done;
  }
  if (parse_fkw("full", kvals, nrest ? knames : NULL, K_DTYPE | K_DEVICE | K_RG | K_OUT, &f) < 0 ||
      emp_arg_shape(size, "full", "size", &s) < 0 || emp_arg_scalar(fill, "full", "fill_value", &v) < 0)
    goto done;
  if (f.dt == EM_DTYPE_UNDEFINED) f.dt = f.out ? (em_dtype)emp_tensor(f.out)->dtype : em_scalar_dtype(v);
  em_tensor *t;
  EMP_NOGIL(t = em_tensor_full(s.ndim, s.d, v, f.dt));
  res = finish(t, &f, "full");
done:
  Py_XDECREF(knames);
  return res;
}

static PyObject *f_arange(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"start", "end", "step", "*", "out", "dtype", "layout",
                                      "device", "pin_memory", "requires_grad", NULL};
  PyObject *a[9];
  if (emp_parse("arange", names, 0, args, nargs, kw, a) < 0) return NULL;
  PyObject *ps = a[0], *pe = a[1], *pst = a[2];
  if (ps && !pe && nargs <= 1) { /* arange(end) */
    pe = ps;
    ps = NULL;
  }
  if (!pe) {
    PyErr_SetString(PyExc_TypeError, "arange() missing required argument 'end'");
    return NULL;
  }
  em_scalar start = em_scalar_int(0), end, step = em_scalar_int(1);
  if ((ps && emp_arg_scalar(ps, "arange", "start", &start) < 0) ||
      emp_arg_scalar(pe, "arange", "end", &end) < 0 ||
      (pst && emp_arg_scalar(pst, "arange", "step", &step) < 0))
    return NULL;
  fkw f = {.dt = EM_DTYPE_UNDEFINED, .dev = EM_DEVICE_CPU, .out = a[3] == Py_None ? NULL : a[3],
           .rg = a[8]};
  if (emp_arg_dtype(a[4], "arange", "dtype", &f.dt) < 0) return NULL;
  if (a[6] && a[6] != Py_None) {
    if (emp_arg_device(a[6], "arange", "device", &f.dev) < 0) return NULL;
    f.has_dev = true;
  }
  em_tensor *t = em_tensor_arange(start, end, step, f.dt);
  return finish(t, &f, "arange");
}

static PyObject *f_linspace(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"start", "end", "steps", "*", "out", "dtype", "layout",
                                      "device", "pin_memory", "requires_grad", NULL};
  PyObject *a[9];
  if (emp_parse("linspace", names, 3, args, nargs, kw, a) < 0) return NULL;
  double s, e;
  int64_t steps;
  if (emp_arg_double(a[0], "linspace", "start", &s) < 0 || emp_arg_double(a[1], "linspace", "end", &e) < 0 ||
      emp_arg_int(a[2], "linspace", "steps", &steps) < 0)
    return NULL;
  fkw f = {.dt = EM_DTYPE_UNDEFINED, .dev = EM_DEVICE_CPU, .out = a[3] == Py_None ? NULL : a[3],
           .rg = a[8]};
  if (emp_arg_dtype(a[4], "linspace", "dtype", &f.dt) < 0) return NULL;
  if (a[6] && a[6] != Py_None) {
    if (emp_arg_device(a[6], "linspace", "device", &f.dev) < 0) return NULL;
    f.has_dev = true;
  }
  return finish(em_tensor_linspace(s, e, steps, f.dt), &f, "linspace");
}

static PyObject *f_eye(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"n", "m", "*", "out", "dtype", "layout", "device",
                                      "pin_memory", "requires_grad", NULL};
  PyObject *a[8];
  if (emp_parse("eye", names, 1, args, nargs, kw, a) < 0) return NULL;
  int64_t n, m;
  if (emp_arg_int(a[0], "eye", "n", &n) < 0) return NULL;
  m = n;
  if (a[1] && a[1] != Py_None && emp_arg_int(a[1], "eye", "m", &m) < 0) return NULL;
  fkw f = {.dt = EM_DTYPE_UNDEFINED, .dev = EM_DEVICE_CPU, .out = a[2] == Py_None ? NULL : a[2],
           .rg = a[7]};
  if (emp_arg_dtype(a[3], "eye", "dtype", &f.dt) < 0) return NULL;
  if (a[5] && a[5] != Py_None) {
    if (emp_arg_device(a[5], "eye", "device", &f.dev) < 0) return NULL;
    f.has_dev = true;
  }
  return finish(em_tensor_eye(n, m, f.dt), &f, "eye");
}

/* randint(high, size) / randint(low, high, size) */
static PyObject *f_randint(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  fkw f;
  if (parse_fkw("randint", args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_OUT | K_GEN | K_SIZE, &f) < 0)
    return NULL;
  PyObject *plow = NULL, *phigh = NULL, *psize = f.size;
  if (nargs == 3) {
    plow = args[0], phigh = args[1], psize = args[2];
  } else if (nargs == 2 && !psize) {
    phigh = args[0], psize = args[1];
  } else if (nargs == 2) {
    plow = args[0], phigh = args[1];
  } else if (nargs == 1 && psize) {
    phigh = args[0];
  }
  if (!phigh || !psize || (nargs == 3 && f.size)) {
    PyErr_SetString(PyExc_TypeError,
                    "randint() received an invalid combination of arguments: expected (high, size) "
                    "or (low, high, size)");
    return NULL;
  }
  int64_t low = 0, high;
  emp_shape s;
  if ((plow && emp_arg_int(plow, "randint", "low", &low) < 0) ||
      emp_arg_int(phigh, "randint", "high", &high) < 0 || emp_arg_shape(psize, "randint", "size", &s) < 0)
    return NULL;
  em_tensor *t;
  EMP_NOGIL(t = em_tensor_randint(low, high, s.ndim, s.d, f.dt, f.gen));
  return finish(t, &f, "randint");
}

static PyObject *f_randperm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  fkw f;
  if (nargs != 1) {
    PyErr_Format(PyExc_TypeError, "randperm() takes 1 positional argument but %zd were given", nargs);
    return NULL;
  }
  if (parse_fkw("randperm", args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_OUT | K_GEN, &f) < 0)
    return NULL;
  int64_t n;
  if (emp_arg_int(args[0], "randperm", "n", &n) < 0) return NULL;
  em_tensor *t;
  EMP_NOGIL(t = em_tensor_randperm(n, f.dt, f.gen));
  return finish(t, &f, "randperm");
}

/* ---- *_like ------------------------------------------------------------------------------------------ */

typedef enum { L_ZEROS, L_ONES, L_EMPTY, L_RAND, L_RANDN, L_FULL, L_RANDINT } like_kind;

static PyObject *like(PyObject *const *args, Py_ssize_t nargs, PyObject *kw, const char *fname,
                      like_kind kind) {
  Py_ssize_t need = kind == L_FULL ? 2 : kind == L_RANDINT ? 2 : 1;
  Py_ssize_t maxp = kind == L_RANDINT ? 3 : need;
  if (nargs < need || nargs > maxp) {
    PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given", fname,
                 need, nargs);
    return NULL;
  }
  fkw f;
  if (parse_fkw(fname, args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_GEN, &f) < 0) return NULL;
  em_tensor *t;
  if (emp_arg_tensor(args[0], fname, "input", &t) < 0) return NULL;
  em_tensor *r = NULL;
  em_dtype dt = f.dt;
  switch (kind) {
    case L_ZEROS: r = em_tensor_zeros_like(t, dt); break;
    case L_ONES: r = em_tensor_ones_like(t, dt); break;
    case L_EMPTY: r = em_tensor_empty_like(t, dt); break;
    case L_RAND: r = em_tensor_rand_like(t, dt, f.gen); break;
    case L_RANDN: r = em_tensor_randn_like(t, dt, f.gen); break;
    case L_FULL: {
      em_scalar v;
      if (emp_arg_scalar(args[1], fname, "fill_value", &v) < 0) return NULL;
      r = em_tensor_full_like(t, v, dt);
      break;
    }
    case L_RANDINT: {
      int64_t low = 0, high;
      if (nargs == 3) {
        if (emp_arg_int(args[1], fname, "low", &low) < 0 || emp_arg_int(args[2], fname, "high", &high) < 0)
          return NULL;
      } else if (emp_arg_int(args[1], fname, "high", &high) < 0) {
        return NULL;
      }
      r = em_tensor_randint(low, high, t->ndim, t->shape,
                            dt == EM_DTYPE_UNDEFINED ? (em_dtype)t->dtype : dt, f.gen);
      break;
    }
  }
  return finish(r, &f, fname);
}
#define LIKE(name, K)                                                                         \
  static PyObject *f_##name(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,          \
                            PyObject *kw) {                                                   \
    return like(args, nargs, kw, #name, K);                                                   \
  }
LIKE(zeros_like, L_ZEROS)
LIKE(ones_like, L_ONES)
LIKE(empty_like, L_EMPTY)
LIKE(rand_like, L_RAND)
LIKE(randn_like, L_RANDN)
LIKE(full_like, L_FULL)
LIKE(randint_like, L_RANDINT)

/* ---- Tensor.new_* ------------------------------------------------------------------------------------- */

static PyObject *new_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                          const char *fname, int kind) {
  em_tensor *t = emp_tensor(self);
  fkw f;
  if (parse_fkw(fname, args + nargs, kw, K_DTYPE | K_DEVICE | K_RG | K_SIZE, &f) < 0) return NULL;
  em_dtype dt = f.dt == EM_DTYPE_UNDEFINED ? (em_dtype)t->dtype : f.dt;
  if (!f.has_dev) {
    f.dev = t->device;
    f.has_dev = true;
  }
  em_tensor *r = NULL;
  if (kind == 4) { /* new_tensor(data) */
    if (nargs != 1) {
      PyErr_SetString(PyExc_TypeError, "new_tensor() takes 1 positional argument");
      return NULL;
    }
    r = emp_tensor_from_data(args[0], f.dt == EM_DTYPE_UNDEFINED ? dt : f.dt, true);
    if (!r) return NULL;
    return finish(r, &f, fname);
  }
  emp_shape s;
  em_scalar v = em_scalar_int(0);
  if (kind == 3) { /* new_full(size, fill_value) */
    if (nargs != 2) {
      PyErr_SetString(PyExc_TypeError, "new_full() takes 2 positional arguments (size, fill_value)");
      return NULL;
    }
    if (emp_arg_shape(args[0], fname, "size", &s) < 0 || emp_arg_scalar(args[1], fname, "fill_value", &v) < 0)
      return NULL;
  } else if (sizes_of(args, nargs, &f, fname, &s) < 0) {
    return NULL;
  }
  switch (kind) {
    case 0: r = em_tensor_zeros(s.ndim, s.d, dt); break;
    case 1: r = em_tensor_ones(s.ndim, s.d, dt); break;
    case 2: r = em_tensor_empty(s.ndim, s.d, dt); break;
    default: r = em_tensor_full(s.ndim, s.d, v, dt); break;
  }
  return finish(r, &f, fname);
}
#define NEW(name, k)                                                                          \
  static PyObject *m_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs,         \
                            PyObject *kw) {                                                   \
    return new_impl(self, args, nargs, kw, #name, k);                                         \
  }
NEW(new_zeros, 0)
NEW(new_ones, 1)
NEW(new_empty, 2)
NEW(new_full, 3)
NEW(new_tensor, 4)

/* ---- in-place random ops ---------------------------------------------------------------------------------- */

static PyObject *m_uniform_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"from", "to", "*", "generator", NULL};
  PyObject *a[3];
  if (emp_parse("uniform_", names, 0, args, nargs, kw, a) < 0) return NULL;
  double lo = 0, hi = 1;
  em_generator *g = NULL;
  if ((a[0] && emp_arg_double(a[0], "uniform_", "from", &lo) < 0) ||
      (a[1] && emp_arg_double(a[1], "uniform_", "to", &hi) < 0) ||
      emp_arg_generator(a[2], "uniform_", &g) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_uniform_(t, lo, hi, g));
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_normal_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"mean", "std", "*", "generator", NULL};
  PyObject *a[3];
  if (emp_parse("normal_", names, 0, args, nargs, kw, a) < 0) return NULL;
  double mean = 0, std = 1;
  em_generator *g = NULL;
  if ((a[0] && emp_arg_double(a[0], "normal_", "mean", &mean) < 0) ||
      (a[1] && emp_arg_double(a[1], "normal_", "std", &std) < 0) ||
      emp_arg_generator(a[2], "normal_", &g) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_normal_(t, mean, std, g));
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_bernoulli_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"p", "*", "generator", NULL};
  PyObject *a[2];
  if (emp_parse("bernoulli_", names, 0, args, nargs, kw, a) < 0) return NULL;
  double p = 0.5;
  em_generator *g = NULL;
  if ((a[0] && emp_arg_double(a[0], "bernoulli_", "p", &p) < 0) ||
      emp_arg_generator(a[1], "bernoulli_", &g) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_bernoulli_(t, p, g));
  return st ? emp_raise() : Py_NewRef(self);
}

/* bernoulli(input, p=None, *, generator): input holds probabilities, or
 * gives the shape when p is a number. */
static PyObject *m_bernoulli(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"p", "*", "generator", NULL};
  PyObject *a[2];
  if (emp_parse("bernoulli", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_generator *g = NULL;
  if (emp_arg_generator(a[1], "bernoulli", &g) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  if (a[0] && a[0] != Py_None) {
    double p;
    if (emp_arg_double(a[0], "bernoulli", "p", &p) < 0) return NULL;
    r = em_tensor_empty_like(t, EM_DTYPE_UNDEFINED);
    if (r && em_tensor_bernoulli_(r, p, g)) {
      em_tensor_release(r);
      r = NULL;
    }
    return emp_wrap(r);
  }
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_bernoulli(t, g));
  return emp_wrap(r);
}
EMP_DEF_FUNC(bernoulli, m_bernoulli)

PyMethodDef emp_create_methods[] = {
    METHOD("new_zeros", m_new_zeros), METHOD("new_ones", m_new_ones), METHOD("new_empty", m_new_empty),
    METHOD("new_full", m_new_full), METHOD("new_tensor", m_new_tensor),
    METHOD("uniform_", m_uniform_), METHOD("normal_", m_normal_), METHOD("bernoulli_", m_bernoulli_),
    METHOD("bernoulli", m_bernoulli),
    {NULL, NULL, 0, NULL},
};

PyMethodDef emp_create_functions[] = {
    METHOD("tensor", f_tensor), METHOD("as_tensor", f_as_tensor), METHOD("asarray", f_as_tensor),
    METHOD("zeros", f_zeros), METHOD("ones", f_ones), METHOD("empty", f_empty), METHOD("full", f_full),
    METHOD("rand", f_rand), METHOD("randn", f_randn), METHOD("arange", f_arange),
    METHOD("linspace", f_linspace), METHOD("eye", f_eye), METHOD("randint", f_randint),
    METHOD("randperm", f_randperm), METHOD("zeros_like", f_zeros_like),
    METHOD("ones_like", f_ones_like), METHOD("empty_like", f_empty_like),
    METHOD("rand_like", f_rand_like), METHOD("randn_like", f_randn_like),
    METHOD("full_like", f_full_like), METHOD("randint_like", f_randint_like),
    METHOD("bernoulli", f_bernoulli),
    {NULL, NULL, 0, NULL},
};

int emp_create_init(PyObject *m) { return 0; }
