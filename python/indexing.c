/* t[index] and t[index] = value, as PyTorch does them.
 *
 * Basic indexing (ints, slices with positive steps, None, Ellipsis) makes
 * views: ints select, slices slice, None unsqueezes. Advanced indices
 * (integer / bool tensors, lists, NumPy arrays, Python bools) are
 * collected with the dim they apply to in the basic view and handed to
 * em_tensor_index / em_tensor_index_put_ in one call (NULL entries for the
 * dims in between), so NumPy's placement rules apply there. As in PyTorch
 * (and unlike NumPy), an int next to an advanced index is a plain select. */
#include "python/ember_py.h"

typedef struct adv_item {
  int pos;      /* dim of the basic view it applies to */
  int consumed; /* dims it consumes (a k-dim bool mask: k; a Python bool: 0) */
  em_tensor *t; /* owned */
} adv_item;

typedef struct index_plan {
  em_tensor *view; /* owned: the basic-indexed view */
  int nadv;
  adv_item adv[EM_MAX_DIMS];
} index_plan;

static void plan_release(index_plan *p) {
  em_tensor_release(p->view);
  for (int i = 0; i < p->nadv; i++) em_tensor_release(p->adv[i].t);
}

static int is_int_like(PyObject *o) {
  if (PyBool_Check(o) || emp_is_tensor(o)) return 0;
  return PyLong_Check(o) || (PyIndex_Check(o) && !PySequence_Check(o));
}

/* An advanced index object -> tensor (new reference), or NULL with an
 * exception. */
static em_tensor *adv_tensor(PyObject *o) {
  em_tensor *t = NULL;
  if (emp_is_tensor(o)) {
    t = em_tensor_retain(emp_tensor(o));
  } else if (PyBool_Check(o)) {
    t = em_tensor_scalar(em_scalar_bool(o == Py_True), EM_BOOL);
    if (!t) emp_raise();
  } else if (PyList_Check(o) || PyTuple_Check(o)) {
    t = emp_tensor_from_data(o, EM_DTYPE_UNDEFINED, false);
    if (t && PySequence_Size(o) == 0 && t->dtype != EM_INT64) {
      em_tensor *c = em_tensor_to_dtype(t, EM_INT64);
      em_tensor_release(t);
      t = c;
      if (!t) emp_raise();
    }
  } else {
    t = emp_tensor_from_buffer(o, false);
  }
  if (!t) return NULL;
  em_dtype dt = (em_dtype)t->dtype;
  if (dt != EM_INT64 && dt != EM_INT32 && dt != EM_BOOL && dt != EM_UINT8 && dt != EM_INT16 &&
      dt != EM_INT8) {
    em_tensor_release(t);
    PyErr_SetString(PyExc_IndexError,
                    "tensors used as indices must be long, int, byte or bool tensors");
    return NULL;
  }
  if (dt == EM_INT16 || dt == EM_INT8) {
    em_tensor *c = em_tensor_to_dtype(t, EM_INT64);
    em_tensor_release(t);
    if (!c) emp_raise();
    return c;
  }
  return t;
}

static int consumed_dims(PyObject *o) {
  if (o == Py_None || o == Py_Ellipsis || PyBool_Check(o)) return 0;
  if (emp_is_tensor(o)) {
    em_tensor *t = emp_tensor(o);
    return (t->dtype == EM_BOOL || t->dtype == EM_UINT8) ? t->ndim : 1;
  }
  return 1;
}

/* Builds the plan for index on t. Returns 0 or -1. */
static int make_plan(em_tensor *t, PyObject *index, index_plan *p) {
  p->view = NULL;
  p->nadv = 0;
  PyObject *const *items;
  Py_ssize_t n;
  if (PyTuple_Check(index)) {
    items = &PyTuple_GET_ITEM(index, 0);
    n = PyTuple_GET_SIZE(index);
  } else {
    items = &index;
    n = 1;
  }
  int consuming = 0, ellipses = 0;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (items[i] == Py_Ellipsis) ellipses++;
    consuming += consumed_dims(items[i]);
  }
  if (ellipses > 1) {
    PyErr_SetString(PyExc_IndexError, "an index can only have a single ellipsis ('...')");
    return -1;
  }
  if (consuming > t->ndim) {
    PyErr_Format(PyExc_IndexError, "too many indices for tensor of dimension %d", t->ndim);
    return -1;
  }
  em_tensor *r = em_tensor_retain(t);
  int d = 0, seen = 0; /* seen: consuming dims handled so far */
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *o = items[i];
    em_tensor *nr = NULL;
    if (is_int_like(o)) {
      int64_t v;
      if (emp_arg_int(o, "__getitem__", "index", &v) < 0) goto fail;
      nr = em_tensor_select(r, d, v);
      seen++;
    } else if (PySlice_Check(o)) {
      Py_ssize_t start, stop, step;
      if (PySlice_Unpack(o, &start, &stop, &step) < 0) goto fail;
      if (step <= 0) {
        PyErr_SetString(PyExc_ValueError, "step must be greater than zero");
        goto fail;
      }
      int64_t s = start, e = stop == PY_SSIZE_T_MAX ? INT64_MAX : stop;
      if (start == PY_SSIZE_T_MIN) s = INT64_MIN / 2;
      nr = em_tensor_slice(r, d, s, e, step);
      d++;
      seen++;
    } else if (o == Py_None) {
      nr = em_tensor_unsqueeze(r, d);
      d++;
    } else if (o == Py_Ellipsis) {
      d += t->ndim - consuming;
      continue;
    } else if (emp_is_tensor(o) || PyBool_Check(o) || PyList_Check(o) || PyTuple_Check(o) ||
               emp_is_ndarray(o)) {
      if (p->nadv == EM_MAX_DIMS) {
        PyErr_SetString(PyExc_IndexError, "too many advanced indices");
        goto fail;
      }
      em_tensor *a = adv_tensor(o);
      if (!a) goto fail;
      int c = (a->dtype == EM_BOOL || a->dtype == EM_UINT8) ? a->ndim : 1;
      if (PyBool_Check(o)) c = 0;
      p->adv[p->nadv++] = (adv_item){d, c, a};
      d += c;
      seen += c;
      continue;
    } else {
      PyErr_Format(PyExc_IndexError,
                   "only integers, slices (`:`), ellipsis (`...`), None and long or byte "
                   "Variables are valid indices (got %s)",
                   Py_TYPE(o)->tp_name);
      goto fail;
    }
    em_tensor_release(r);
    r = nr;
    if (!r) {
      emp_raise();
      goto fail;
    }
  }
  (void)seen;
  p->view = r;
  return 0;
fail:
  em_tensor_release(r);
  p->view = NULL;
  plan_release(p);
  p->nadv = 0;
  return -1;
}

/* Entries for em_tensor_index: NULL for untouched dims before each
 * advanced index. */
static int plan_entries(const index_plan *p, em_tensor **e) {
  int n = 0, j = 0;
  for (int i = 0; i < p->nadv; i++) {
    while (j < p->adv[i].pos && n < EM_MAX_DIMS) {
      e[n++] = NULL;
      j++;
    }
    if (n == EM_MAX_DIMS) return -1;
    e[n++] = p->adv[i].t;
    j += p->adv[i].consumed;
  }
  return n;
}

PyObject *emp_getitem(PyObject *self, PyObject *index) {
  em_tensor *t = emp_tensor(self);
  /* fast paths: t[i] and t[a:b] */
  if (PyLong_CheckExact(index)) {
    int overflow = 0;
    long long i = PyLong_AsLongLongAndOverflow(index, &overflow);
    if (overflow || (i == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      PyErr_SetString(PyExc_IndexError, "index out of range");
      return NULL;
    }
    if (t->ndim == 0) {
      PyErr_SetString(PyExc_IndexError, "invalid index of a 0-dim tensor. Use `tensor.item()` in "
                                        "Python or `tensor.item<T>()` in C++ to convert a 0-dim "
                                        "tensor to a number");
      return NULL;
    }
    return emp_wrap(em_tensor_select(t, 0, i));
  }
  index_plan p;
  if (make_plan(t, index, &p) < 0) return NULL;
  em_tensor *r;
  if (p.nadv == 0) {
    r = p.view == t ? em_tensor_view(t, t->ndim, t->shape) : em_tensor_retain(p.view);
  } else {
    em_tensor *e[EM_MAX_DIMS];
    int n = plan_entries(&p, e);
    if (n < 0) {
      plan_release(&p);
      PyErr_SetString(PyExc_IndexError, "too many indices");
      return NULL;
    }
    EMP_NOGIL_IF(emp_big(p.view), r = em_tensor_index(p.view, n, e));
  }
  plan_release(&p);
  return emp_wrap(r);
}

static bool same_view(const em_tensor *a, const em_tensor *b) {
  if (a->storage != b->storage || a->offset != b->offset || a->ndim != b->ndim ||
      a->dtype != b->dtype)
    return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->strides[i] != b->strides[i]))
      return false;
  return true;
}

int emp_setitem(PyObject *self, PyObject *index, PyObject *value) {
  if (!value) {
    PyErr_SetString(PyExc_TypeError, "Tensor does not support item deletion");
    return -1;
  }
  em_tensor *t = emp_tensor(self);
  index_plan p;
  if (make_plan(t, index, &p) < 0) return -1;
  em_status st = EM_OK;
  em_scalar s;
  if (p.nadv == 0 && emp_is_tensor(value) && same_view(emp_tensor(value), p.view)) {
    /* t[i] op= x: Python stores the updated view back into itself. A copy
     * would be a no-op that only bumps the version counter (and breaks
     * the view's autograd history), so skip it. */
    plan_release(&p);
    return 0;
  }
  int k = emp_is_tensor(value) ? 0 : emp_scalar_from(value, &s);
  if (k < 0) goto fail;
  if (p.nadv == 0 && k > 0) {
    EMP_NOGIL_IF(emp_big(p.view), st = em_tensor_fill_(p.view, s));
  } else {
    em_tensor *v;
    if (emp_arg_tensor_like(value, "__setitem__", "value", &v) < 0) {
      if (PyErr_ExceptionMatches(PyExc_TypeError) && (PyList_Check(value) || PyTuple_Check(value))) {
        PyErr_Clear();
        v = emp_tensor_from_data(value, (em_dtype)t->dtype, true);
        if (!v) goto fail;
      } else {
        goto fail;
      }
    }
    if (p.nadv == 0) {
      EMP_NOGIL_IF(emp_big(p.view), st = em_tensor_copy_(p.view, v));
    } else {
      if (v->dtype != t->dtype) {
        em_tensor *c = em_tensor_to_dtype(v, (em_dtype)t->dtype);
        em_tensor_release(v);
        if (!(v = c)) {
          st = em_last_status();
          goto done;
        }
      }
      em_tensor *e[EM_MAX_DIMS];
      int n = plan_entries(&p, e);
      if (n < 0) {
        em_tensor_release(v);
        PyErr_SetString(PyExc_IndexError, "too many indices");
        goto fail;
      }
      EMP_NOGIL_IF(emp_big(v) || emp_big(p.view), st = em_tensor_index_put_(p.view, n, e, v, false));
    }
    em_tensor_release(v);
  }
done:
  plan_release(&p);
  if (st) return emp_raise_status(st);
  return 0;
fail:
  plan_release(&p);
  return -1;
}

PyMethodDef emp_index_methods[] = {
    {NULL, NULL, 0, NULL},
};
