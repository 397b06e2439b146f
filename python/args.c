/* Argument parsing for vectorcall functions and the converters every
 * binding uses (tensors, numbers, dtypes, devices, shapes, dims).
 *
 * Messages follow PyTorch's argument parser: "add(): argument 'alpha' must
 * be Number, not str", "zeros() got an unexpected keyword argument 'x'". */
#include "python/ember_py.h"

static const char *type_name(PyObject *o) { return Py_TYPE(o)->tp_name; }

int emp_parse(const char *fname, const char *const *names, int nreq, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames, PyObject **out) {
  int total = 0, npos = -1;
  for (int i = 0; names[i]; i++) {
    if (names[i][0] == '*' && names[i][1] == '\0')
      npos = total;
    else
      out[total++] = NULL;
  }
  if (npos < 0) npos = total;
  if (nargs > npos) {
    PyErr_Format(PyExc_TypeError, "%s() takes %s%d positional argument%s but %zd %s given",
                 fname, npos > nreq ? "at most " : "", npos, npos == 1 ? "" : "s", nargs,
                 nargs == 1 ? "was" : "were");
    return -1;
  }
  for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
  if (kwnames) {
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
      PyObject *key = PyTuple_GET_ITEM(kwnames, k);
      int j = 0, found = -1;
      for (int i = 0; names[i]; i++) {
        if (names[i][0] == '*' && names[i][1] == '\0') continue;
        if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
          found = j;
          break;
        }
        j++;
      }
      if (found < 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
        return -1;
      }
      if (out[found]) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", fname, key);
        return -1;
      }
      out[found] = args[nargs + k];
    }
  }
  for (int i = 0, j = 0; names[i] && j < nreq; i++) {
    if (names[i][0] == '*' && names[i][1] == '\0') continue;
    if (!out[j]) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)", fname,
                   names[i], j + 1);
      return -1;
    }
    j++;
  }
  return 0;
}

/* ---- numbers ------------------------------------------------------------------------ */

/* NumPy's scalar base classes, looked up once numpy has been imported by
 * someone (a NumPy scalar cannot exist before that). */
static PyObject *np_bool, *np_integer, *np_floating, *np_generic;
static int np_state; /* 0 unknown, 1 ready */

static int numpy_ready(void) {
  if (np_state) return 1;
  PyObject *mods = PyImport_GetModuleDict();
  PyObject *np = mods ? PyDict_GetItemString(mods, "numpy") : NULL;
  if (!np) return 0;
  np_bool = PyObject_GetAttrString(np, "bool_");
  np_integer = PyObject_GetAttrString(np, "integer");
  np_floating = PyObject_GetAttrString(np, "floating");
  np_generic = PyObject_GetAttrString(np, "generic");
  if (!np_bool || !np_integer || !np_floating || !np_generic) {
    PyErr_Clear();
    Py_CLEAR(np_bool);
    Py_CLEAR(np_integer);
    Py_CLEAR(np_floating);
    Py_CLEAR(np_generic);
    return 0;
  }
  np_state = 1;
  return 1;
}

int emp_scalar_from(PyObject *o, em_scalar *out) {
  if (PyFloat_Check(o)) {
    *out = em_scalar_float(PyFloat_AS_DOUBLE(o));
    return 1;
  }
  if (PyBool_Check(o)) {
    *out = em_scalar_bool(o == Py_True);
    return 1;
  }
  if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) {
      PyErr_Format(PyExc_RuntimeError, "Overflow when unpacking long");
      return -1;
    }
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = em_scalar_int(v);
    return 1;
  }
  if (emp_is_tensor(o)) return 0;
  /* NumPy scalars (np.float32, np.int64, np.bool_) */
  if (Py_TYPE(o)->tp_as_number && numpy_ready() && PyObject_TypeCheck(o, (PyTypeObject *)np_generic)) {
    if (PyObject_TypeCheck(o, (PyTypeObject *)np_bool)) {
      int b = PyObject_IsTrue(o);
      if (b < 0) return -1;
      *out = em_scalar_bool(b);
      return 1;
    }
    if (PyObject_TypeCheck(o, (PyTypeObject *)np_integer)) {
      PyObject *i = PyNumber_Index(o);
      if (!i) return -1;
      int r = emp_scalar_from(i, out);
      Py_DECREF(i);
      return r;
    }
    if (PyObject_TypeCheck(o, (PyTypeObject *)np_floating)) {
      double d = PyFloat_AsDouble(o);
      if (d == -1.0 && PyErr_Occurred()) return -1;
      *out = em_scalar_float(d);
      return 1;
    }
    return 0;
  }
  /* other integer-like objects (__index__); arrays also have __index__ */
  if (PyIndex_Check(o) && !PyObject_CheckBuffer(o) && !PySequence_Check(o)) {
    PyObject *i = PyNumber_Index(o);
    if (!i) return -1;
    int r = emp_scalar_from(i, out);
    Py_DECREF(i);
    return r;
  }
  return 0;
}

PyObject *emp_scalar_to_py(em_scalar s) {
  switch (s.kind) {
    case EM_SCALAR_BOOL: return PyBool_FromLong(s.v.i != 0);
    case EM_SCALAR_INT: return PyLong_FromLongLong(s.v.i);
    default: return PyFloat_FromDouble(s.v.f);
  }
}

static int bad_type(const char *fname, const char *arg, const char *want, PyObject *o) {
  PyErr_Format(PyExc_TypeError, "%s(): argument '%s' must be %s, not %s", fname, arg, want,
               type_name(o));
  return -1;
}

int emp_arg_scalar(PyObject *o, const char *fname, const char *arg, em_scalar *out) {
  int r = emp_scalar_from(o, out);
  if (r < 0) return -1;
  if (r > 0) return 0;
  if (emp_is_tensor(o)) {
    em_tensor *t = emp_tensor(o);
    if (t->numel != 1) {
      PyErr_Format(PyExc_ValueError,
                   "%s(): argument '%s': only one element tensors can be converted to Python "
                   "scalars",
                   fname, arg);
      return -1;
    }
    em_status st = em_tensor_item(t, out);
    return st ? emp_raise_status(st) : 0;
  }
  return bad_type(fname, arg, "Number", o);
}

int emp_arg_int(PyObject *o, const char *fname, const char *arg, int64_t *out) {
  if (PyLong_Check(o) && !PyBool_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) {
      PyErr_Format(PyExc_OverflowError, "%s(): argument '%s' is too large for int64", fname, arg);
      return -1;
    }
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
  }
  if (emp_is_tensor(o)) {
    em_tensor *t = emp_tensor(o);
    if (t->numel == 1 && !em_dtype_is_float((em_dtype)t->dtype) && t->dtype != EM_BOOL) {
      em_scalar s;
      em_status st = em_tensor_item(t, &s);
      if (st) return emp_raise_status(st);
      *out = s.v.i;
      return 0;
    }
    return bad_type(fname, arg, "int", o);
  }
  if (PyFloat_Check(o) || PyBool_Check(o) || !PyIndex_Check(o)) return bad_type(fname, arg, "int", o);
  PyObject *i = PyNumber_Index(o);
  if (!i) return -1;
  int r = emp_arg_int(i, fname, arg, out);
  Py_DECREF(i);
  return r;
}

int emp_arg_dim(PyObject *o, const char *fname, const char *arg, int *out) {
  int64_t v;
  if (emp_arg_int(o, fname, arg, &v) < 0) return -1;
  if (v < INT32_MIN || v > INT32_MAX) {
    PyErr_Format(PyExc_IndexError, "%s(): dimension %lld out of range", fname, (long long)v);
    return -1;
  }
  *out = (int)v;
  return 0;
}

int emp_arg_bool(PyObject *o, const char *fname, const char *arg, bool *out) {
  if (o == Py_True || o == Py_False) {
    *out = o == Py_True;
    return 0;
  }
  if (o == Py_None) return 0;
  em_scalar s;
  int r = emp_scalar_from(o, &s);
  if (r < 0) return -1;
  if (r == 0 || s.kind == EM_SCALAR_FLOAT) return bad_type(fname, arg, "bool", o);
  *out = s.v.i != 0;
  return 0;
}

int emp_arg_double(PyObject *o, const char *fname, const char *arg, double *out) {
  if (PyFloat_Check(o)) {
    *out = PyFloat_AS_DOUBLE(o);
    return 0;
  }
  em_scalar s;
  if (emp_arg_scalar(o, fname, arg, &s) < 0) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      return bad_type(fname, arg, "float", o);
    }
    return -1;
  }
  *out = em_scalar_to_double(s);
  return 0;
}

/* ---- tensors ------------------------------------------------------------------------ */

int emp_arg_tensor(PyObject *o, const char *fname, const char *arg, em_tensor **out) {
  if (o && emp_is_tensor(o)) {
    *out = emp_tensor(o);
    return 0;
  }
  if (!o) {
    PyErr_Format(PyExc_TypeError, "%s(): missing argument '%s'", fname, arg);
    return -1;
  }
  return bad_type(fname, arg, "Tensor", o);
}

int emp_arg_tensor_like(PyObject *o, const char *fname, const char *arg, em_tensor **out) {
  if (emp_is_tensor(o)) {
    *out = em_tensor_retain(emp_tensor(o));
    return 0;
  }
  em_scalar s;
  int r = emp_scalar_from(o, &s);
  if (r < 0) return -1;
  if (r > 0) {
    *out = em_tensor_wrapped_scalar(s);
    return *out ? 0 : (emp_raise(), -1);
  }
  if (emp_is_ndarray(o)) {
    *out = emp_tensor_from_buffer(o, false);
    return *out ? 0 : -1;
  }
  return bad_type(fname, arg, "Tensor", o);
}

/* ---- dtype / device ------------------------------------------------------------------- */

int emp_arg_dtype(PyObject *o, const char *fname, const char *arg, em_dtype *out) {
  if (!o || o == Py_None) return 0;
  if (Py_TYPE(o) == &EmDtype_Type) {
    *out = ((EmDtypeObject *)o)->dtype;
    return 0;
  }
  if (o == (PyObject *)&PyFloat_Type) {
    *out = EM_FLOAT64;
    return 0;
  }
  if (o == (PyObject *)&PyLong_Type) {
    *out = EM_INT64;
    return 0;
  }
  if (o == (PyObject *)&PyBool_Type) {
    *out = EM_BOOL;
    return 0;
  }
  return bad_type(fname, arg, "ember.dtype", o);
}

int emp_arg_device(PyObject *o, const char *fname, const char *arg, em_device *out) {
  if (!o || o == Py_None) return 0;
  if (Py_TYPE(o) == &EmDevice_Type) {
    *out = ((EmDeviceObject *)o)->device;
    return 0;
  }
  if (PyUnicode_Check(o)) {
    const char *s = PyUnicode_AsUTF8(o);
    if (!s) return -1;
    em_device d;
    if (em_device_parse(s, &d)) return emp_raise_status(em_last_status());
    *out = d;
    return 0;
  }
  if (PyLong_Check(o) && !PyBool_Check(o)) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT16_MAX) {
      PyErr_Format(PyExc_RuntimeError, "Device index must not be negative");
      return -1;
    }
    *out = EM_DEVICE_CUDA(v);
    return 0;
  }
  return bad_type(fname, arg, "ember.device", o);
}

/* ---- shapes and dims -------------------------------------------------------------------- */

int emp_arg_shape(PyObject *o, const char *fname, const char *arg, emp_shape *out) {
  if (emp_is_tensor(o)) {
    em_tensor *t = emp_tensor(o);
    if (t->ndim > 1 || em_dtype_is_float((em_dtype)t->dtype) || t->dtype == EM_BOOL)
      return bad_type(fname, arg, "tuple of ints", o);
    if (t->ndim == 0) { /* a single size */
      int64_t v;
      if (emp_arg_int(o, fname, arg, &v) < 0) return -1;
      out->ndim = 1;
      out->d[0] = v;
      return 0;
    }
    if (t->numel > EM_MAX_DIMS) goto toomany;
    out->ndim = (int)t->numel;
    for (int64_t i = 0; i < t->numel; i++)
      out->d[i] = em__load_i64((char *)em_tensor_data(t) + i * t->strides[0] *
                                       (int64_t)em_dtype_size((em_dtype)t->dtype),
                                   (em_dtype)t->dtype);
    return 0;
  }
  if (PyLong_Check(o) || PyIndex_Check(o)) {
    if (PyFloat_Check(o)) return bad_type(fname, arg, "tuple of ints", o);
    int64_t v;
    if (emp_arg_int(o, fname, arg, &v) < 0) return -1;
    out->ndim = 1;
    out->d[0] = v;
    return 0;
  }
  if (!PyTuple_Check(o) && !PyList_Check(o)) return bad_type(fname, arg, "tuple of ints", o);
  Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
  if (n > EM_MAX_DIMS) goto toomany;
  PyObject **items = PySequence_Fast_ITEMS(o);
  for (Py_ssize_t i = 0; i < n; i++) {
    if (emp_arg_int(items[i], fname, arg, &out->d[i]) < 0) {
      if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s(): argument '%s' must be tuple of ints, but found element of type %s at "
                     "pos %zd",
                     fname, arg, type_name(items[i]), i);
      }
      return -1;
    }
  }
  out->ndim = (int)n;
  return 0;
toomany:
  PyErr_Format(PyExc_ValueError, "%s(): at most %d dimensions are supported", fname, EM_MAX_DIMS);
  return -1;
}

int emp_arg_shape_varargs(PyObject *const *args, Py_ssize_t n, const char *fname, emp_shape *out) {
  out->ndim = 0;
  if (n == 0) return 0;
  if (n == 1 && !PyLong_Check(args[0]) &&
      (PyTuple_Check(args[0]) || PyList_Check(args[0]) ||
       (emp_is_tensor(args[0]) && emp_tensor(args[0])->ndim == 1)))
    return emp_arg_shape(args[0], fname, "size", out);
  if (n > EM_MAX_DIMS) {
    PyErr_Format(PyExc_ValueError, "%s(): at most %d dimensions are supported", fname,
                 EM_MAX_DIMS);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    if (emp_arg_int(args[i], fname, "size", &out->d[i]) < 0) {
      if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s(): argument 'size' must be tuple of ints, but found element of type %s "
                     "at pos %zd",
                     fname, type_name(args[i]), i);
      }
      return -1;
    }
  }
  out->ndim = (int)n;
  return 0;
}

int emp_arg_dims(PyObject *o, const char *fname, const char *arg, emp_shape *out) {
  out->ndim = 0;
  if (!o || o == Py_None) return 0;
  if (PyTuple_Check(o) || PyList_Check(o)) return emp_arg_shape(o, fname, arg, out);
  int64_t v;
  if (emp_arg_int(o, fname, arg, &v) < 0) {
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      return bad_type(fname, arg, "int or tuple of ints", o);
    }
    return -1;
  }
  out->ndim = 1;
  out->d[0] = v;
  return 0;
}

PyObject *emp_int_tuple(int n, const int64_t *d) {
  PyObject *t = PyTuple_New(n);
  if (!t) return NULL;
  for (int i = 0; i < n; i++) {
    PyObject *v = PyLong_FromLongLong(d[i]);
    if (!v) {
      Py_DECREF(t);
      return NULL;
    }
    PyTuple_SET_ITEM(t, i, v);
  }
  return t;
}
