/* Elementwise ops, reductions and linear algebra as Tensor methods and
 * ember.* functions, and the Python operators (+ - * / // % ** @ & | ^ ~,
 * comparisons, in-place and reflected forms).
 *
 * Each op is written once as a method implementation (self = the tensor);
 * the ember.<op>(input, ...) function calls it through
 * emp_call_as_function. The operator slots take the shortest path: no
 * keyword parsing, no intermediate Python objects; the GIL is released
 * only for operands past EMP_NOGIL_NUMEL elements. */
#include <math.h>

#include "python/ember_py.h"

PyObject *emp_call_as_function(emp_fastcall_kw m, const char *fname, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *self = NULL, *conv = NULL, *newkw = NULL, *res = NULL;
  PyObject *buf[32];
  if (nargs >= 1) {
    self = args[0];
    args++;
    nargs--;
  } else if (kwnames) {
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames), idx = -1;
    for (Py_ssize_t k = 0; k < nkw; k++)
      if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, k), "input") == 0) idx = k;
    if (idx >= 0) {
      if (nkw - 1 > 32) {
        PyErr_Format(PyExc_TypeError, "%s(): too many keyword arguments", fname);
        return NULL;
      }
      self = args[idx];
      newkw = PyTuple_New(nkw - 1);
      if (!newkw) return NULL;
      for (Py_ssize_t k = 0, j = 0; k < nkw; k++) {
        if (k == idx) continue;
        buf[j] = args[k];
        PyTuple_SET_ITEM(newkw, j, Py_NewRef(PyTuple_GET_ITEM(kwnames, k)));
        j++;
      }
      args = buf;
      kwnames = PyTuple_GET_SIZE(newkw) ? newkw : NULL;
    }
  }
  if (!self) {
    PyErr_Format(PyExc_TypeError, "%s() missing required argument 'input' (pos 1)", fname);
    goto done;
  }
  if (!emp_is_tensor(self)) {
    em_tensor *t;
    if (emp_arg_tensor_like(self, fname, "input", &t) < 0) goto done;
    conv = emp_wrap(t);
    if (!conv) goto done;
    self = conv;
  }
  res = m(self, args, nargs, kwnames);
done:
  Py_XDECREF(conv);
  Py_XDECREF(newkw);
  return res;
}

#define METHOD(name, fn) {name, EMP_FN(fn), EMP_KW, NULL}

static PyObject *out_or_wrap(PyObject *out, em_tensor *r) {
  if (out && out != Py_None) return emp_write_out(out, r);
  return emp_wrap(r);
}

/* ---- unary ------------------------------------------------------------------------------- */

typedef em_tensor *(*unary_fn)(em_tensor *);
typedef em_status (*unary_ip_fn)(em_tensor *);

static PyObject *unary(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                       const char *name, unary_fn fn) {
  PyObject *a[1] = {NULL};
  if (nargs || kw) {
    static const char *const names[] = {"*", "out", NULL};
    if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  }
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = fn(t));
  return out_or_wrap(a[0], r);
}

static PyObject *unary_(PyObject *self, unary_ip_fn fn) {
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = fn(t));
  if (st) return emp_raise();
  return Py_NewRef(self);
}

#define UNARY_DEFS(name)                                                                       \
  static PyObject *m_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs,          \
                            PyObject *kw) {                                                    \
    return unary(self, args, nargs, kw, #name, em_tensor_##name);                              \
  }                                                                                            \
  static PyObject *m_##name##_(PyObject *self, PyObject *unused) {                             \
    return unary_(self, em_tensor_##name##_);                                                  \
  }                                                                                            \
  EMP_DEF_FUNC(name, m_##name)                                                                 \
  static PyObject *f_##name##_(PyObject *mod, PyObject *t) {                                   \
    if (!emp_is_tensor(t)) {                                                                   \
      PyErr_Format(PyExc_TypeError, #name "_(): argument 'input' must be Tensor, not %s",       \
                   Py_TYPE(t)->tp_name);                                                       \
      return NULL;                                                                             \
    }                                                                                          \
    return unary_(t, em_tensor_##name##_);                                                     \
  }
EM_UNARY_OPS(UNARY_DEFS)
#undef UNARY_DEFS

#define UNARY_NOIP(name)                                                                       \
  static PyObject *m_##name(PyObject *self, PyObject *const *args, Py_ssize_t nargs,          \
                            PyObject *kw) {                                                    \
    return unary(self, args, nargs, kw, #name, em_tensor_##name);                              \
  }                                                                                            \
  EMP_DEF_FUNC(name, m_##name)
UNARY_NOIP(isnan)
UNARY_NOIP(isinf)
UNARY_NOIP(isfinite)

/* ---- parameterised activations (methods where PyTorch has them; all as functions for
 * ember.nn.functional) ------------------------------------------------------------------ */

static PyObject *m_leaky_relu(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kw) {
  static const char *const names[] = {"negative_slope", "inplace", NULL};
  PyObject *a[2];
  if (emp_parse("leaky_relu", names, 0, args, nargs, kw, a) < 0) return NULL;
  double slope = 0.01;
  bool inplace = false;
  if (a[0] && emp_arg_double(a[0], "leaky_relu", "negative_slope", &slope) < 0) return NULL;
  if (a[1] && emp_arg_bool(a[1], "leaky_relu", "inplace", &inplace) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r = NULL;
  if (inplace) {
    em_status st;
    EMP_NOGIL_IF(emp_big(t), st = em_tensor_leaky_relu_(t, slope));
    return st ? emp_raise() : Py_NewRef(self);
  }
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_leaky_relu(t, slope));
  return emp_wrap(r);
}
EMP_DEF_FUNC(leaky_relu, m_leaky_relu)

static PyObject *m_gelu(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"*", "approximate", NULL};
  PyObject *a[1];
  if (emp_parse("gelu", names, 0, args, nargs, kw, a) < 0) return NULL;
  bool approx = false;
  if (a[0] && a[0] != Py_None) {
    const char *s = PyUnicode_Check(a[0]) ? PyUnicode_AsUTF8(a[0]) : NULL;
    if (!s || (strcmp(s, "none") && strcmp(s, "tanh"))) {
      PyErr_SetString(PyExc_ValueError, "gelu(): approximate must be 'none' or 'tanh'");
      return NULL;
    }
    approx = strcmp(s, "tanh") == 0;
  }
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_gelu(t, approx));
  return emp_wrap(r);
}
EMP_DEF_FUNC(gelu, m_gelu)

static PyObject *m_softplus(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"beta", "threshold", NULL};
  PyObject *a[2];
  if (emp_parse("softplus", names, 0, args, nargs, kw, a) < 0) return NULL;
  double beta = 1, thr = 20;
  if (a[0] && emp_arg_double(a[0], "softplus", "beta", &beta) < 0) return NULL;
  if (a[1] && emp_arg_double(a[1], "softplus", "threshold", &thr) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_softplus(t, beta, thr));
  return emp_wrap(r);
}
EMP_DEF_FUNC(softplus, m_softplus)

static PyObject *m_elu(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"alpha", NULL};
  PyObject *a[1];
  if (emp_parse("elu", names, 0, args, nargs, kw, a) < 0) return NULL;
  double alpha = 1;
  if (a[0] && emp_arg_double(a[0], "elu", "alpha", &alpha) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_elu(t, alpha));
  return emp_wrap(r);
}
EMP_DEF_FUNC(elu, m_elu)

static PyObject *m_hardtanh(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"min_val", "max_val", NULL};
  PyObject *a[2];
  if (emp_parse("hardtanh", names, 0, args, nargs, kw, a) < 0) return NULL;
  double lo = -1, hi = 1;
  if (a[0] && emp_arg_double(a[0], "hardtanh", "min_val", &lo) < 0) return NULL;
  if (a[1] && emp_arg_double(a[1], "hardtanh", "max_val", &hi) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_hardtanh(t, lo, hi));
  return emp_wrap(r);
}
EMP_DEF_FUNC(hardtanh, m_hardtanh)

/* clamp(min=None, max=None): number bounds go to the clamp kernel; tensor
 * bounds become maximum / minimum. */
static em_tensor *clamp_any(em_tensor *t, PyObject *lo, PyObject *hi, const char *name) {
  if (lo == Py_None) lo = NULL;
  if (hi == Py_None) hi = NULL;
  if (!lo && !hi) {
    PyErr_Format(PyExc_RuntimeError, "%s: At least one of 'min' or 'max' must not be None", name);
    return NULL;
  }
  em_tensor *r = NULL;
  if ((lo && emp_is_tensor(lo)) || (hi && emp_is_tensor(hi))) {
    em_tensor *cur = em_tensor_retain(t);
    if (lo) {
      em_tensor *b;
      if (emp_arg_tensor_like(lo, name, "min", &b) < 0) goto fail;
      r = em_tensor_maximum(cur, b);
      em_tensor_release(b);
      em_tensor_release(cur);
      if (!(cur = r)) return NULL;
    }
    if (hi) {
      em_tensor *b;
      if (emp_arg_tensor_like(hi, name, "max", &b) < 0) goto fail;
      r = em_tensor_minimum(cur, b);
      em_tensor_release(b);
      em_tensor_release(cur);
      if (!(cur = r)) return NULL;
    }
    return cur;
  fail:
    em_tensor_release(cur);
    return NULL;
  }
  double l = 0, h = 0;
  if (lo && emp_arg_double(lo, name, "min", &l) < 0) return NULL;
  if (hi && emp_arg_double(hi, name, "max", &h) < 0) return NULL;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_clamp(t, lo != NULL, l, hi != NULL, h));
  return r;
}

static PyObject *m_clamp(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"min", "max", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse("clamp", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *r = clamp_any(emp_tensor(self), a[0] ? a[0] : Py_None, a[1] ? a[1] : Py_None, "clamp");
  if (!r) return emp_raise();
  return out_or_wrap(a[2], r);
}
EMP_DEF_FUNC(clamp, m_clamp)

static PyObject *m_clamp_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"min", "max", NULL};
  PyObject *a[2];
  if (emp_parse("clamp_", names, 0, args, nargs, kw, a) < 0) return NULL;
  PyObject *lo = a[0] && a[0] != Py_None ? a[0] : NULL, *hi = a[1] && a[1] != Py_None ? a[1] : NULL;
  em_tensor *t = emp_tensor(self);
  if ((lo && emp_is_tensor(lo)) || (hi && emp_is_tensor(hi)) || (!lo && !hi)) {
    em_tensor *r = clamp_any(t, lo ? lo : Py_None, hi ? hi : Py_None, "clamp_");
    if (!r) return emp_raise();
    em_status st = em_tensor_copy_(t, r);
    em_tensor_release(r);
    return st ? emp_raise() : Py_NewRef(self);
  }
  double l = 0, h = 0;
  if (lo && emp_arg_double(lo, "clamp_", "min", &l) < 0) return NULL;
  if (hi && emp_arg_double(hi, "clamp_", "max", &h) < 0) return NULL;
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_clamp_(t, lo != NULL, l, hi != NULL, h));
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_clamp_min(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"min", NULL};
  PyObject *a[1];
  if (emp_parse("clamp_min", names, 1, args, nargs, kw, a) < 0) return NULL;
  return emp_wrap(clamp_any(emp_tensor(self), a[0], Py_None, "clamp_min"));
}
static PyObject *m_clamp_max(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"max", NULL};
  PyObject *a[1];
  if (emp_parse("clamp_max", names, 1, args, nargs, kw, a) < 0) return NULL;
  return emp_wrap(clamp_any(emp_tensor(self), Py_None, a[0], "clamp_max"));
}
EMP_DEF_FUNC(clamp_min, m_clamp_min)
EMP_DEF_FUNC(clamp_max, m_clamp_max)

/* ---- binary ------------------------------------------------------------------------------------ */

typedef struct binop {
  const char *name;
  em_tensor *(*fn)(em_tensor *, em_tensor *);
  em_status (*ip)(em_tensor *, em_tensor *);
  em_tensor *(*sc)(em_tensor *, em_scalar);
  bool commutative;
} binop;

enum {
#define X(n) B_##n,
  EM_BINARY_OPS(X)
#undef X
#define X(n) C_##n,
  EM_COMPARE_OPS(X)
#undef X
  B_COUNT
};

static const binop binops[B_COUNT] = {
#define X(n) [B_##n] = {#n, em_tensor_##n, em_tensor_##n##_, em_tensor_##n##_scalar, false},
    EM_BINARY_OPS(X)
#undef X
#define X(n) [C_##n] = {#n, em_tensor_##n, NULL, em_tensor_##n##_scalar, false},
    EM_COMPARE_OPS(X)
#undef X
};

static bool commutative(int op) {
  switch (op) {
    case B_add: case B_mul: case B_maximum: case B_minimum: case B_logical_and:
    case B_logical_or: case B_logical_xor: case B_bitwise_and: case B_bitwise_or:
    case B_bitwise_xor: case C_eq: case C_ne:
      return true;
    default:
      return false;
  }
}

/* a op other; other is a tensor, a number or an array. Returns a new
 * reference, or NULL with a Python error or an em error set. With
 * notimpl, an unsupported other gives Py_NotImplemented (as *notimpl = 1). */
static em_tensor *binary_em(int op, em_tensor *a, PyObject *other, const char *name, int *notimpl) {
  em_tensor *r;
  if (EM_LIKELY(emp_is_tensor(other))) {
    em_tensor *b = emp_tensor(other);
    EMP_NOGIL_IF(emp_big2(a, b), r = binops[op].fn(a, b));
    return r;
  }
  em_scalar s;
  int k = emp_scalar_from(other, &s);
  if (k < 0) return NULL;
  if (k > 0) {
    EMP_NOGIL_IF(emp_big(a), r = binops[op].sc(a, s));
    return r;
  }
  if (emp_is_ndarray(other)) {
    em_tensor *b = emp_tensor_from_buffer(other, false);
    if (!b) return NULL;
    EMP_NOGIL_IF(emp_big2(a, b), r = binops[op].fn(a, b));
    em_tensor_release(b);
    return r;
  }
  if (notimpl) {
    *notimpl = 1;
    return NULL;
  }
  PyErr_Format(PyExc_TypeError, "%s(): argument 'other' must be Tensor or Number, not %s", name,
               Py_TYPE(other)->tp_name);
  return NULL;
}

/* other op b (b a tensor, other not). */
static em_tensor *rbinary_em(int op, PyObject *other, em_tensor *b, int *notimpl) {
  em_tensor *r;
  em_scalar s;
  int k = emp_scalar_from(other, &s);
  if (k < 0) return NULL;
  if (k > 0) {
    if (commutative(op)) {
      EMP_NOGIL_IF(emp_big(b), r = binops[op].sc(b, s));
      return r;
    }
    em_tensor *w = em_tensor_wrapped_scalar(s);
    if (!w) return NULL;
    EMP_NOGIL_IF(emp_big(b), r = binops[op].fn(w, b));
    em_tensor_release(w);
    return r;
  }
  if (emp_is_ndarray(other)) {
    em_tensor *a = emp_tensor_from_buffer(other, false);
    if (!a) return NULL;
    EMP_NOGIL_IF(emp_big2(a, b), r = binops[op].fn(a, b));
    em_tensor_release(a);
    return r;
  }
  *notimpl = 1;
  return NULL;
}

static em_status binary_ip_em(int op, em_tensor *a, PyObject *other, const char *name) {
  em_status st;
  if (emp_is_tensor(other)) {
    em_tensor *b = emp_tensor(other);
    EMP_NOGIL_IF(emp_big(a), st = binops[op].ip(a, b));
    return st;
  }
  em_tensor *b;
  if (emp_arg_tensor_like(other, name, "other", &b) < 0) return EM_ERR_INVALID;
  EMP_NOGIL_IF(emp_big(a), st = binops[op].ip(a, b));
  em_tensor_release(b);
  return st;
}

/* In-place comparison (t.eq_(x)): the bool result written into t. */
static em_status compare_ip_em(int op, em_tensor *a, PyObject *other, const char *name) {
  em_tensor *r = binary_em(op, a, other, name, NULL);
  if (!r) return PyErr_Occurred() ? EM_ERR_INVALID : em_last_status();
  em_status st = em_tensor_copy_(a, r);
  em_tensor_release(r);
  return st;
}

static PyObject *binary_method(int op, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kw) {
  const char *name = binops[op].name;
  PyObject *a[2] = {NULL, NULL};
  if (nargs == 1 && !kw) {
    a[0] = args[0];
  } else {
    static const char *const names[] = {"other", "*", "out", NULL};
    if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
  }
  em_tensor *r = binary_em(op, emp_tensor(self), a[0], name, NULL);
  return out_or_wrap(a[1], r);
}

static PyObject *binary_method_(int op, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kw) {
  char name[40];
  snprintf(name, sizeof name, "%s_", binops[op].name);
  PyObject *a[1];
  static const char *const names[] = {"other", NULL};
  if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
  em_status st = op >= C_eq ? compare_ip_em(op, emp_tensor(self), a[0], name)
                            : binary_ip_em(op, emp_tensor(self), a[0], name);
  if (st) return emp_raise();
  return Py_NewRef(self);
}

#define BINARY_DEFS(n)                                                                          \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return binary_method(B_##n, self, args, nargs, kw);                                         \
  }                                                                                             \
  static PyObject *m_##n##_(PyObject *self, PyObject *const *args, Py_ssize_t nargs,            \
                            PyObject *kw) {                                                     \
    return binary_method_(B_##n, self, args, nargs, kw);                                        \
  }                                                                                             \
  EMP_DEF_FUNC(n, m_##n)
EM_BINARY_OPS(BINARY_DEFS)
#undef BINARY_DEFS

#define COMPARE_DEFS(n)                                                                         \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return binary_method(C_##n, self, args, nargs, kw);                                         \
  }                                                                                             \
  static PyObject *m_##n##_(PyObject *self, PyObject *const *args, Py_ssize_t nargs,            \
                            PyObject *kw) {                                                     \
    return binary_method_(C_##n, self, args, nargs, kw);                                        \
  }                                                                                             \
  EMP_DEF_FUNC(n, m_##n)
EM_COMPARE_OPS(COMPARE_DEFS)
#undef COMPARE_DEFS

/* add / sub with alpha: a + alpha * other */
static PyObject *add_sub(bool sub, bool inplace, PyObject *self, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kw) {
  const char *name = sub ? (inplace ? "sub_" : "sub") : (inplace ? "add_" : "add");
  PyObject *a[3] = {NULL, NULL, NULL};
  if (nargs == 1 && !kw) {
    a[0] = args[0];
  } else {
    static const char *const names[] = {"other", "*", "alpha", "out", NULL};
    if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
    if (inplace && a[2]) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument 'out'", name);
      return NULL;
    }
  }
  em_tensor *t = emp_tensor(self);
  int op = sub ? B_sub : B_add;
  if (!a[1] || a[1] == Py_None) {
    if (inplace) return binary_method_(op, self, args, nargs, kw);
    return out_or_wrap(a[2], binary_em(op, t, a[0], name, NULL));
  }
  em_scalar alpha;
  if (emp_arg_scalar(a[1], name, "alpha", &alpha) < 0) return NULL;
  em_tensor *b;
  if (emp_arg_tensor_like(a[0], name, "other", &b) < 0) return NULL;
  if (inplace) {
    em_status st;
    EMP_NOGIL_IF(emp_big(t), st = sub ? em_tensor_sub_alpha_(t, b, alpha) : em_tensor_add_alpha_(t, b, alpha));
    em_tensor_release(b);
    return st ? emp_raise() : Py_NewRef(self);
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big2(t, b), r = sub ? em_tensor_sub_alpha(t, b, alpha) : em_tensor_add_alpha(t, b, alpha));
  em_tensor_release(b);
  return out_or_wrap(a[2], r);
}

static PyObject *m_add_alpha(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return add_sub(false, false, self, args, nargs, kw);
}
static PyObject *m_add_alpha_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return add_sub(false, true, self, args, nargs, kw);
}
static PyObject *m_sub_alpha(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return add_sub(true, false, self, args, nargs, kw);
}
static PyObject *m_sub_alpha_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return add_sub(true, true, self, args, nargs, kw);
}
EMP_DEF_FUNC(add_alpha, m_add_alpha)
EMP_DEF_FUNC(sub_alpha, m_sub_alpha)

/* rsub(other, alpha=1): other - alpha * self */
static PyObject *m_rsub(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"other", "*", "alpha", NULL};
  PyObject *a[2];
  if (emp_parse("rsub", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_scalar alpha = em_scalar_int(1);
  if (a[1] && emp_arg_scalar(a[1], "rsub", "alpha", &alpha) < 0) return NULL;
  em_tensor *o;
  if (emp_arg_tensor_like(a[0], "rsub", "other", &o) < 0) return NULL;
  em_tensor *r = em_tensor_sub_alpha(o, emp_tensor(self), alpha);
  em_tensor_release(o);
  return emp_wrap(r);
}
EMP_DEF_FUNC(rsub, m_rsub)

/* div(other, *, rounding_mode=None) */
static PyObject *div_impl(bool inplace, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kw) {
  const char *name = inplace ? "div_" : "div";
  PyObject *a[3] = {NULL, NULL, NULL};
  if (nargs == 1 && !kw) {
    a[0] = args[0];
  } else {
    static const char *const names[] = {"other", "*", "rounding_mode", "out", NULL};
    if (emp_parse(name, names, 1, args, nargs, kw, a) < 0) return NULL;
  }
  int op = B_div;
  if (a[1] && a[1] != Py_None) {
    const char *m = PyUnicode_Check(a[1]) ? PyUnicode_AsUTF8(a[1]) : NULL;
    if (m && strcmp(m, "trunc") == 0) {
      op = B_trunc_divide;
    } else if (m && strcmp(m, "floor") == 0) {
      op = B_floor_divide;
    } else {
      PyObject *r = PyObject_Repr(a[1]);
      PyErr_Format(PyExc_ValueError,
                   "div expected rounding_mode to be one of None, 'trunc', or 'floor' but found %U",
                   r);
      Py_XDECREF(r);
      return NULL;
    }
  }
  if (inplace) {
    em_status st = binary_ip_em(op, emp_tensor(self), a[0], name);
    return st ? emp_raise() : Py_NewRef(self);
  }
  return out_or_wrap(a[2], binary_em(op, emp_tensor(self), a[0], name, NULL));
}
static PyObject *m_div_rm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return div_impl(false, self, args, nargs, kw);
}
static PyObject *m_div_rm_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return div_impl(true, self, args, nargs, kw);
}
EMP_DEF_FUNC(div_rm, m_div_rm)

/* pow(exponent): tensor or number exponent; ember.pow(number, tensor) too. */
static PyObject *pow_impl(em_tensor *t, PyObject *exponent, PyObject *out) {
  em_tensor *r;
  em_scalar s;
  if (!emp_is_tensor(exponent)) {
    int k = emp_scalar_from(exponent, &s);
    if (k < 0) return NULL;
    if (k > 0) {
      EMP_NOGIL_IF(emp_big(t), r = em_tensor_pow_scalar(t, s));
      return out_or_wrap(out, r);
    }
  }
  return out_or_wrap(out, binary_em(B_pow, t, exponent, "pow", NULL));
}
static PyObject *m_pow_any(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"exponent", "*", "out", NULL};
  PyObject *a[2];
  if (emp_parse("pow", names, 1, args, nargs, kw, a) < 0) return NULL;
  return pow_impl(emp_tensor(self), a[0], a[1]);
}
static PyObject *f_pow_any(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "exponent", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse("pow", names, 2, args, nargs, kw, a) < 0) return NULL;
  if (emp_is_tensor(a[0])) return pow_impl(emp_tensor(a[0]), a[1], a[2]);
  if (emp_is_tensor(a[1])) {
    em_scalar s;
    if (emp_arg_scalar(a[0], "pow", "input", &s) < 0) return NULL;
    em_tensor *t = emp_tensor(a[1]), *r;
    EMP_NOGIL_IF(emp_big(t), r = em_tensor_rpow_scalar(s, t));
    return out_or_wrap(a[2], r);
  }
  em_tensor *t;
  if (emp_arg_tensor_like(a[0], "pow", "input", &t) < 0) return NULL;
  PyObject *res = pow_impl(t, a[1], a[2]);
  em_tensor_release(t);
  return res;
}
static PyObject *m_pow_any_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"exponent", NULL};
  PyObject *a[1];
  if (emp_parse("pow_", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_status st = binary_ip_em(B_pow, emp_tensor(self), a[0], "pow_");
  return st ? emp_raise() : Py_NewRef(self);
}

/* maximum/minimum also answer t.max(other) (ops dispatch on the argument). */

/* ---- ternary ------------------------------------------------------------------------------------- */

static PyObject *where3(PyObject *cond, PyObject *x, PyObject *y) {
  em_tensor *c = NULL, *a = NULL, *b = NULL, *r = NULL;
  if (emp_arg_tensor(cond, "where", "condition", &c) < 0) return NULL;
  if (emp_arg_tensor_like(x, "where", "input", &a) < 0) return NULL;
  if (emp_arg_tensor_like(y, "where", "other", &b) < 0) {
    em_tensor_release(a);
    return NULL;
  }
  EMP_NOGIL_IF(emp_big(c) || emp_big2(a, b), r = em_tensor_where(c, a, b));
  em_tensor_release(a);
  em_tensor_release(b);
  return emp_wrap(r);
}

static PyObject *m_where(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"condition", "other", NULL};
  PyObject *a[2];
  if (emp_parse("where", names, 2, args, nargs, kw, a) < 0) return NULL;
  return where3(a[0], self, a[1]);
}

PyObject *emp_nonzero_tuple(em_tensor *t);

static PyObject *f_where(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"condition", "input", "other", NULL};
  PyObject *a[3];
  if (emp_parse("where", names, 1, args, nargs, kw, a) < 0) return NULL;
  if (!a[1] && !a[2]) {
    em_tensor *c;
    if (emp_arg_tensor(a[0], "where", "condition", &c) < 0) return NULL;
    return emp_nonzero_tuple(c);
  }
  if (!a[1] || !a[2]) {
    PyErr_SetString(PyExc_TypeError, "where() takes 1 or 3 arguments (condition, input, other)");
    return NULL;
  }
  return where3(a[0], a[1], a[2]);
}

static PyObject *m_lerp(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"end", "weight", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse("lerp", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *e, *r;
  if (emp_arg_tensor(a[0], "lerp", "end", &e) < 0) return NULL;
  if (emp_is_tensor(a[1])) {
    em_tensor *w = emp_tensor(a[1]);
    EMP_NOGIL_IF(emp_big(t), r = em_tensor_lerp(t, e, w));
  } else {
    double w;
    if (emp_arg_double(a[1], "lerp", "weight", &w) < 0) return NULL;
    EMP_NOGIL_IF(emp_big(t), r = em_tensor_lerp_scalar(t, e, w));
  }
  return out_or_wrap(a[2], r);
}
EMP_DEF_FUNC(lerp, m_lerp)

static PyObject *m_lerp_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"end", "weight", NULL};
  PyObject *a[2];
  if (emp_parse("lerp_", names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *e;
  if (emp_arg_tensor(a[0], "lerp_", "end", &e) < 0) return NULL;
  em_status st;
  if (emp_is_tensor(a[1])) {
    em_tensor *r = em_tensor_lerp(t, e, emp_tensor(a[1]));
    if (!r) return emp_raise();
    st = em_tensor_copy_(t, r);
    em_tensor_release(r);
  } else {
    double w;
    if (emp_arg_double(a[1], "lerp_", "weight", &w) < 0) return NULL;
    EMP_NOGIL_IF(emp_big(t), st = em_tensor_lerp_(t, e, w));
  }
  return st ? emp_raise() : Py_NewRef(self);
}

typedef em_tensor *(*addc_fn)(em_tensor *, em_tensor *, em_tensor *, em_scalar);
typedef em_status (*addc_ip_fn)(em_tensor *, em_tensor *, em_tensor *, em_scalar);

static PyObject *addc(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                      const char *name, addc_fn fn, addc_ip_fn ip) {
  static const char *const names[] = {"tensor1", "tensor2", "*", "value", "out", NULL};
  PyObject *a[4];
  if (emp_parse(name, names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *t1, *t2;
  em_scalar v = em_scalar_int(1);
  if (emp_arg_tensor(a[0], name, "tensor1", &t1) < 0 ||
      emp_arg_tensor(a[1], name, "tensor2", &t2) < 0 ||
      (a[2] && emp_arg_scalar(a[2], name, "value", &v) < 0))
    return NULL;
  if (ip) {
    em_status st;
    EMP_NOGIL_IF(emp_big(t), st = ip(t, t1, t2, v));
    return st ? emp_raise() : Py_NewRef(self);
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(t) || emp_big(t1), r = fn(t, t1, t2, v));
  return out_or_wrap(a[3], r);
}
static PyObject *m_addcmul(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addc(self, args, nargs, kw, "addcmul", em_tensor_addcmul, NULL);
}
static PyObject *m_addcmul_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addc(self, args, nargs, kw, "addcmul_", NULL, em_tensor_addcmul_);
}
static PyObject *m_addcdiv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addc(self, args, nargs, kw, "addcdiv", em_tensor_addcdiv, NULL);
}
static PyObject *m_addcdiv_(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addc(self, args, nargs, kw, "addcdiv_", NULL, em_tensor_addcdiv_);
}
EMP_DEF_FUNC(addcmul, m_addcmul)
EMP_DEF_FUNC(addcdiv, m_addcdiv)

/* ---- reductions ------------------------------------------------------------------------------------ */

typedef em_tensor *(*red_dt_fn)(em_tensor *, int, const int64_t *, bool, em_dtype);
typedef em_tensor *(*red_fn)(em_tensor *, int, const int64_t *, bool);

/* sum / mean / prod (dim=None, keepdim=False, *, dtype=None, out=None) */
static PyObject *reduce_dt(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                           const char *name, red_dt_fn fn) {
  PyObject *a[4] = {NULL, NULL, NULL, NULL};
  if (nargs || kw) {
    static const char *const names[] = {"dim", "keepdim", "*", "dtype", "out", NULL};
    if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  }
  emp_shape dims;
  bool keepdim = false;
  em_dtype dt = EM_DTYPE_UNDEFINED;
  /* sum(dtype) positionally is not allowed; sum(ember.float64) is a common slip */
  if (a[0] && Py_TYPE(a[0]) == &EmDtype_Type && !a[2]) {
    a[2] = a[0];
    a[0] = NULL;
  }
  if (emp_arg_dims(a[0], name, "dim", &dims) < 0 ||
      (a[1] && emp_arg_bool(a[1], name, "keepdim", &keepdim) < 0) ||
      emp_arg_dtype(a[2], name, "dtype", &dt) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = fn(t, dims.ndim, dims.ndim ? dims.d : NULL, keepdim, dt));
  return out_or_wrap(a[3], r);
}

static PyObject *reduce_plain(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kw, const char *name, red_fn fn) {
  PyObject *a[3] = {NULL, NULL, NULL};
  if (nargs || kw) {
    static const char *const names[] = {"dim", "keepdim", "*", "out", NULL};
    if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  }
  emp_shape dims;
  bool keepdim = false;
  if (emp_arg_dims(a[0], name, "dim", &dims) < 0 ||
      (a[1] && emp_arg_bool(a[1], name, "keepdim", &keepdim) < 0))
    return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = fn(t, dims.ndim, dims.ndim ? dims.d : NULL, keepdim));
  return out_or_wrap(a[2], r);
}

#define RED_DT(n)                                                                              \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return reduce_dt(self, args, nargs, kw, #n, em_tensor_##n);                                \
  }                                                                                            \
  EMP_DEF_FUNC(n, m_##n)
RED_DT(sum)
RED_DT(mean)
RED_DT(prod)
#define RED(n)                                                                                 \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return reduce_plain(self, args, nargs, kw, #n, em_tensor_##n);                             \
  }                                                                                            \
  EMP_DEF_FUNC(n, m_##n)
RED(amax)
RED(amin)
RED(all)
RED(any)
RED(logsumexp)

static PyObject *var_std(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                         bool is_std) {
  const char *name = is_std ? "std" : "var";
  static const char *const names[] = {"dim", "unbiased", "keepdim", "*", "correction", "out", NULL};
  PyObject *a[5];
  if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  if (a[0] && PyBool_Check(a[0])) { /* var(unbiased) */
    if (a[1]) {
      PyErr_Format(PyExc_TypeError, "%s(): got multiple values for argument 'unbiased'", name);
      return NULL;
    }
    a[1] = a[0];
    a[0] = NULL;
  }
  emp_shape dims;
  bool unbiased = true, keepdim = false;
  double correction;
  if (emp_arg_dims(a[0], name, "dim", &dims) < 0 ||
      (a[1] && emp_arg_bool(a[1], name, "unbiased", &unbiased) < 0) ||
      (a[2] && emp_arg_bool(a[2], name, "keepdim", &keepdim) < 0))
    return NULL;
  correction = unbiased ? 1 : 0;
  if (a[3] && a[3] != Py_None) {
    if (a[1]) {
      PyErr_Format(PyExc_TypeError, "%s(): cannot specify both 'unbiased' and 'correction'", name);
      return NULL;
    }
    if (emp_arg_double(a[3], name, "correction", &correction) < 0) return NULL;
  }
  em_tensor *t = emp_tensor(self), *r;
  const int64_t *d = dims.ndim ? dims.d : NULL;
  EMP_NOGIL_IF(emp_big(t), r = is_std ? em_tensor_std(t, dims.ndim, d, correction, keepdim)
                                      : em_tensor_var(t, dims.ndim, d, correction, keepdim));
  return out_or_wrap(a[4], r);
}
static PyObject *m_var(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return var_std(self, args, nargs, kw, false);
}
static PyObject *m_std(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return var_std(self, args, nargs, kw, true);
}
EMP_DEF_FUNC(var, m_var)
EMP_DEF_FUNC(std, m_std)

static PyObject *m_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"p", "dim", "keepdim", "dtype", "*", "out", NULL};
  PyObject *a[5];
  if (emp_parse("norm", names, 0, args, nargs, kw, a) < 0) return NULL;
  double p = 2;
  if (a[0] && a[0] != Py_None) {
    if (PyUnicode_Check(a[0])) {
      const char *s = PyUnicode_AsUTF8(a[0]);
      if (!s || strcmp(s, "fro") != 0) {
        PyErr_Format(PyExc_NotImplementedError, "norm(): p=%R is not supported", a[0]);
        return NULL;
      }
    } else if (emp_arg_double(a[0], "norm", "p", &p) < 0) {
      return NULL;
    }
  }
  emp_shape dims;
  bool keepdim = false;
  em_dtype dt = EM_DTYPE_UNDEFINED;
  if (emp_arg_dims(a[1], "norm", "dim", &dims) < 0 ||
      (a[2] && emp_arg_bool(a[2], "norm", "keepdim", &keepdim) < 0) ||
      emp_arg_dtype(a[3], "norm", "dtype", &dt) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self), *src = t, *r;
  if (dt != EM_DTYPE_UNDEFINED && !(src = em_tensor_to_dtype(t, dt))) return emp_raise();
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_norm(src, p, dims.ndim, dims.ndim ? dims.d : NULL, keepdim));
  if (src != t) em_tensor_release(src);
  return out_or_wrap(a[4], r);
}
EMP_DEF_FUNC(norm, m_norm)

static PyObject *m_count_nonzero(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kw) {
  static const char *const names[] = {"dim", NULL};
  PyObject *a[1];
  if (emp_parse("count_nonzero", names, 0, args, nargs, kw, a) < 0) return NULL;
  emp_shape dims;
  if (emp_arg_dims(a[0], "count_nonzero", "dim", &dims) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_count_nonzero(t, dims.ndim, dims.ndim ? dims.d : NULL));
  return emp_wrap(r);
}
EMP_DEF_FUNC(count_nonzero, m_count_nonzero)

/* max / min: (), (dim, keepdim=False) -> (values, indices), (other) */
static PyTypeObject *rt_max, *rt_min;

static PyObject *minmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                        bool is_max) {
  const char *name = is_max ? "max" : "min";
  static const char *const names[] = {"dim", "keepdim", "*", "out", NULL};
  PyObject *a[3] = {NULL, NULL, NULL};
  if ((nargs || kw) && emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *r;
  if (!a[0]) {
    EMP_NOGIL_IF(emp_big(t), r = is_max ? em_tensor_max_all(t) : em_tensor_min_all(t));
    return emp_wrap(r);
  }
  if (emp_is_tensor(a[0])) {
    if (a[1]) {
      PyErr_Format(PyExc_TypeError, "%s(): keepdim is not valid with a tensor 'other'", name);
      return NULL;
    }
    return out_or_wrap(a[2], binary_em(is_max ? B_maximum : B_minimum, t, a[0], name, NULL));
  }
  int dim;
  bool keepdim = false;
  if (emp_arg_dim(a[0], name, "dim", &dim) < 0 ||
      (a[1] && emp_arg_bool(a[1], name, "keepdim", &keepdim) < 0))
    return NULL;
  em_tensor *v = NULL, *i = NULL;
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = is_max ? em_tensor_max_dim(t, dim, keepdim, &v, &i)
                                       : em_tensor_min_dim(t, dim, keepdim, &v, &i));
  if (st) return emp_raise();
  PyObject *res = PyStructSequence_New(is_max ? rt_max : rt_min);
  PyObject *pv = emp_wrap(v), *pi = emp_wrap(i);
  if (!res || !pv || !pi) {
    Py_XDECREF(res), Py_XDECREF(pv), Py_XDECREF(pi);
    return NULL;
  }
  PyStructSequence_SET_ITEM(res, 0, pv);
  PyStructSequence_SET_ITEM(res, 1, pi);
  return res;
}
static PyObject *m_max(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return minmax(self, args, nargs, kw, true);
}
static PyObject *m_min(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return minmax(self, args, nargs, kw, false);
}
EMP_DEF_FUNC(max, m_max)
EMP_DEF_FUNC(min, m_min)

static PyObject *argminmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                           bool is_max) {
  const char *name = is_max ? "argmax" : "argmin";
  static const char *const names[] = {"dim", "keepdim", NULL};
  PyObject *a[2];
  if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  int dim = 0;
  bool has_dim = a[0] && a[0] != Py_None, keepdim = false;
  if ((has_dim && emp_arg_dim(a[0], name, "dim", &dim) < 0) ||
      (a[1] && emp_arg_bool(a[1], name, "keepdim", &keepdim) < 0))
    return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = is_max ? em_tensor_argmax(t, has_dim, dim, keepdim)
                                      : em_tensor_argmin(t, has_dim, dim, keepdim));
  return emp_wrap(r);
}
static PyObject *m_argmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return argminmax(self, args, nargs, kw, true);
}
static PyObject *m_argmin(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return argminmax(self, args, nargs, kw, false);
}
EMP_DEF_FUNC(argmax, m_argmax)
EMP_DEF_FUNC(argmin, m_argmin)

typedef em_tensor *(*dim_dt_fn)(em_tensor *, int, em_dtype);

static PyObject *dim_dt(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                        const char *name, dim_dt_fn fn) {
  static const char *const names[] = {"dim", "dtype", "*", "out", NULL};
  PyObject *a[3];
  if (emp_parse(name, names, 0, args, nargs, kw, a) < 0) return NULL;
  if (!a[0] || a[0] == Py_None) {
    PyErr_Format(PyExc_TypeError, "%s() missing required argument 'dim' (pos 1)", name);
    return NULL;
  }
  int dim;
  em_dtype dt = EM_DTYPE_UNDEFINED;
  if (emp_arg_dim(a[0], name, "dim", &dim) < 0 || emp_arg_dtype(a[1], name, "dtype", &dt) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self), *r;
  EMP_NOGIL_IF(emp_big(t), r = fn(t, dim, dt));
  return out_or_wrap(a[2], r);
}
#define DIM_DT(n)                                                                              \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return dim_dt(self, args, nargs, kw, #n, em_tensor_##n);                                   \
  }                                                                                            \
  EMP_DEF_FUNC(n, m_##n)
DIM_DT(softmax)
DIM_DT(log_softmax)
DIM_DT(cumsum)
DIM_DT(cumprod)

/* ---- linear algebra ---------------------------------------------------------------------------------- */

typedef em_tensor *(*mm_fn)(em_tensor *, em_tensor *);

static PyObject *mm_like(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                         const char *name, const char *arg, mm_fn fn) {
  const char *const names[] = {arg, "*", "out", NULL};
  PyObject *a[2] = {NULL, NULL};
  if (nargs == 1 && !kw)
    a[0] = args[0];
  else if (emp_parse(name, names, 1, args, nargs, kw, a) < 0)
    return NULL;
  em_tensor *t = emp_tensor(self), *b, *r;
  if (emp_arg_tensor(a[0], name, arg, &b) < 0) return NULL;
  EMP_NOGIL_IF(emp_big2(t, b), r = fn(t, b));
  return out_or_wrap(a[1], r);
}
#define MM(n, arg)                                                                             \
  static PyObject *m_##n(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) { \
    return mm_like(self, args, nargs, kw, #n, arg, em_tensor_##n);                             \
  }                                                                                            \
  EMP_DEF_FUNC(n, m_##n)
MM(matmul, "other")
MM(mm, "mat2")
MM(bmm, "mat2")
MM(mv, "vec")
MM(dot, "other")
MM(outer, "vec2")

typedef em_tensor *(*addmm_fn)(em_tensor *, em_tensor *, em_tensor *, double, double);
static PyObject *addmm_like(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw,
                            const char *name, addmm_fn fn) {
  static const char *const names[] = {"mat1", "mat2", "*", "beta", "alpha", "out", NULL};
  PyObject *a[5];
  if (emp_parse(name, names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self), *m1, *m2, *r;
  double beta = 1, alpha = 1;
  if (emp_arg_tensor(a[0], name, "mat1", &m1) < 0 || emp_arg_tensor(a[1], name, "mat2", &m2) < 0 ||
      (a[2] && emp_arg_double(a[2], name, "beta", &beta) < 0) ||
      (a[3] && emp_arg_double(a[3], name, "alpha", &alpha) < 0))
    return NULL;
  EMP_NOGIL_IF(emp_big2(m1, m2), r = fn(t, m1, m2, beta, alpha));
  return out_or_wrap(a[4], r);
}
static PyObject *m_addmm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addmm_like(self, args, nargs, kw, "addmm", em_tensor_addmm);
}
static PyObject *m_baddbmm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return addmm_like(self, args, nargs, kw, "baddbmm", em_tensor_baddbmm);
}
EMP_DEF_FUNC(addmm, m_addmm)
EMP_DEF_FUNC(baddbmm, m_baddbmm)

/* ---- comparison helpers -------------------------------------------------------------------------------- */

static PyObject *m_allclose(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"other", "rtol", "atol", "equal_nan", NULL};
  PyObject *a[4];
  if (emp_parse("allclose", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *o;
  double rtol = 1e-5, atol = 1e-8;
  bool equal_nan = false, res = false;
  if (emp_arg_tensor(a[0], "allclose", "other", &o) < 0 ||
      (a[1] && emp_arg_double(a[1], "allclose", "rtol", &rtol) < 0) ||
      (a[2] && emp_arg_double(a[2], "allclose", "atol", &atol) < 0) ||
      (a[3] && emp_arg_bool(a[3], "allclose", "equal_nan", &equal_nan) < 0))
    return NULL;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big2(t, o), st = em_tensor_allclose(t, o, rtol, atol, equal_nan, &res));
  if (st) return emp_raise();
  return PyBool_FromLong(res);
}
EMP_DEF_FUNC(allclose, m_allclose)

static PyObject *m_equal(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"other", NULL};
  PyObject *a[1];
  if (emp_parse("equal", names, 1, args, nargs, kw, a) < 0) return NULL;
  em_tensor *o;
  if (emp_arg_tensor(a[0], "equal", "other", &o) < 0) return NULL;
  bool res = false;
  em_tensor *t = emp_tensor(self);
  em_status st;
  EMP_NOGIL_IF(emp_big(t), st = em_tensor_equal(t, o, &res));
  if (st) return emp_raise();
  return PyBool_FromLong(res);
}
EMP_DEF_FUNC(equal, m_equal)

/* ---- Python operators ------------------------------------------------------------------------------------ */

static PyObject *op_binary(int op, PyObject *a, PyObject *b) {
  int notimpl = 0;
  em_tensor *r;
  if (EM_LIKELY(emp_is_tensor(a))) {
    em_tensor *ta = emp_tensor(a);
    if (EM_LIKELY(emp_is_tensor(b))) { /* the hot path: tensor op tensor */
      em_tensor *tb = emp_tensor(b);
      EMP_NOGIL_IF(emp_big2(ta, tb), r = binops[op].fn(ta, tb));
      return emp_wrap(r);
    }
    r = binary_em(op, ta, b, binops[op].name, &notimpl);
  } else {
    r = rbinary_em(op, a, emp_tensor(b), &notimpl);
  }
  if (notimpl) Py_RETURN_NOTIMPLEMENTED;
  return emp_wrap(r);
}

static PyObject *op_inplace(int op, PyObject *a, PyObject *b) {
  if (!emp_is_tensor(b)) {
    em_scalar s;
    int k = emp_scalar_from(b, &s);
    if (k < 0) return NULL;
    if (k == 0 && !emp_is_ndarray(b)) Py_RETURN_NOTIMPLEMENTED;
  }
  em_status st = binary_ip_em(op, emp_tensor(a), b, binops[op].name);
  if (st) return emp_raise();
  return Py_NewRef(a);
}

#define NB(slot, op)                                                              \
  static PyObject *nb_##slot(PyObject *a, PyObject *b) { return op_binary(op, a, b); } \
  static PyObject *nb_i##slot(PyObject *a, PyObject *b) { return op_inplace(op, a, b); }
NB(add, B_add)
NB(sub, B_sub)
NB(mul, B_mul)
NB(div, B_div)
NB(floordiv, B_floor_divide)
NB(mod, B_remainder)
NB(and, B_bitwise_and)
NB(or, B_bitwise_or)
NB(xor, B_bitwise_xor)
#undef NB

static PyObject *nb_pow(PyObject *a, PyObject *b, PyObject *mod) {
  if (mod != Py_None) Py_RETURN_NOTIMPLEMENTED;
  em_scalar s;
  em_tensor *r;
  if (emp_is_tensor(a)) {
    em_tensor *t = emp_tensor(a);
    if (!emp_is_tensor(b)) {
      int k = emp_scalar_from(b, &s);
      if (k < 0) return NULL;
      if (k > 0) {
        EMP_NOGIL_IF(emp_big(t), r = em_tensor_pow_scalar(t, s));
        return emp_wrap(r);
      }
    }
    return op_binary(B_pow, a, b);
  }
  int k = emp_scalar_from(a, &s);
  if (k < 0) return NULL;
  if (k > 0) {
    em_tensor *t = emp_tensor(b);
    EMP_NOGIL_IF(emp_big(t), r = em_tensor_rpow_scalar(s, t));
    return emp_wrap(r);
  }
  return op_binary(B_pow, a, b);
}
static PyObject *nb_ipow(PyObject *a, PyObject *b, PyObject *mod) {
  if (mod != Py_None) Py_RETURN_NOTIMPLEMENTED;
  return op_inplace(B_pow, a, b);
}

static PyObject *nb_matmul(PyObject *a, PyObject *b) {
  em_tensor *ta = NULL, *tb = NULL, *r;
  if (!emp_is_tensor(a) && !emp_is_ndarray(a)) Py_RETURN_NOTIMPLEMENTED;
  if (!emp_is_tensor(b) && !emp_is_ndarray(b)) Py_RETURN_NOTIMPLEMENTED;
  if (emp_arg_tensor_like(a, "matmul", "input", &ta) < 0) return NULL;
  if (emp_arg_tensor_like(b, "matmul", "other", &tb) < 0) {
    em_tensor_release(ta);
    return NULL;
  }
  EMP_NOGIL_IF(emp_big2(ta, tb), r = em_tensor_matmul(ta, tb));
  em_tensor_release(ta);
  em_tensor_release(tb);
  return emp_wrap(r);
}

static PyObject *nb_neg(PyObject *a) {
  em_tensor *t = emp_tensor(a), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_neg(t));
  return emp_wrap(r);
}
static PyObject *nb_pos(PyObject *a) { return Py_NewRef(a); }
static PyObject *nb_abs(PyObject *a) {
  em_tensor *t = emp_tensor(a), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_abs(t));
  return emp_wrap(r);
}
static PyObject *nb_invert(PyObject *a) {
  em_tensor *t = emp_tensor(a), *r;
  EMP_NOGIL_IF(emp_big(t), r = em_tensor_bitwise_not(t));
  return emp_wrap(r);
}

PyObject *emp_richcompare(PyObject *a, PyObject *b, int op) {
  static const int map[] = {[Py_LT] = C_lt, [Py_LE] = C_le, [Py_EQ] = C_eq,
                            [Py_NE] = C_ne, [Py_GT] = C_gt, [Py_GE] = C_ge};
  if (!emp_is_tensor(a)) Py_RETURN_NOTIMPLEMENTED;
  int notimpl = 0;
  em_tensor *r = binary_em(map[op], emp_tensor(a), b, binops[map[op]].name, &notimpl);
  if (notimpl) Py_RETURN_NOTIMPLEMENTED;
  return emp_wrap(r);
}

PyType_Slot emp_number_slots[] = {
    {Py_nb_add, nb_add},
    {Py_nb_subtract, nb_sub},
    {Py_nb_multiply, nb_mul},
    {Py_nb_true_divide, nb_div},
    {Py_nb_floor_divide, nb_floordiv},
    {Py_nb_remainder, nb_mod},
    {Py_nb_power, nb_pow},
    {Py_nb_and, nb_and},
    {Py_nb_or, nb_or},
    {Py_nb_xor, nb_xor},
    {Py_nb_matrix_multiply, nb_matmul},
    {Py_nb_inplace_add, nb_iadd},
    {Py_nb_inplace_subtract, nb_isub},
    {Py_nb_inplace_multiply, nb_imul},
    {Py_nb_inplace_true_divide, nb_idiv},
    {Py_nb_inplace_floor_divide, nb_ifloordiv},
    {Py_nb_inplace_remainder, nb_imod},
    {Py_nb_inplace_power, nb_ipow},
    {Py_nb_inplace_and, nb_iand},
    {Py_nb_inplace_or, nb_ior},
    {Py_nb_inplace_xor, nb_ixor},
    {Py_nb_negative, nb_neg},
    {Py_nb_positive, nb_pos},
    {Py_nb_absolute, nb_abs},
    {Py_nb_invert, nb_invert},
    {0, NULL},
};

/* ---- tables -------------------------------------------------------------------------------------------- */

PyMethodDef emp_ops_methods[] = {
#define X(n) METHOD(#n, m_##n), {#n "_", m_##n##_, METH_NOARGS, NULL},
    EM_UNARY_OPS(X)
#undef X
    METHOD("isnan", m_isnan), METHOD("isinf", m_isinf), METHOD("isfinite", m_isfinite),
    /* aliases */
    METHOD("absolute", m_abs), {"absolute_", m_abs_, METH_NOARGS, NULL},
    METHOD("negative", m_neg), {"negative_", m_neg_, METH_NOARGS, NULL},
    METHOD("arcsin", m_asin), METHOD("arccos", m_acos), METHOD("arctan", m_atan),
    METHOD("fix", m_trunc), {"fix_", m_trunc_, METH_NOARGS, NULL},
    METHOD("relu", m_relu), METHOD("gelu", m_gelu),
    METHOD("clamp", m_clamp), METHOD("clamp_", m_clamp_), METHOD("clip", m_clamp),
    METHOD("clip_", m_clamp_), METHOD("clamp_min", m_clamp_min), METHOD("clamp_max", m_clamp_max),
    /* before the generic binary entries: the first of two same-named entries wins */
    METHOD("add", m_add_alpha), METHOD("add_", m_add_alpha_), METHOD("sub", m_sub_alpha),
    METHOD("sub_", m_sub_alpha_), METHOD("subtract", m_sub_alpha), METHOD("subtract_", m_sub_alpha_),
    METHOD("rsub", m_rsub),
    METHOD("multiply", m_mul), METHOD("multiply_", m_mul_),
    METHOD("div", m_div_rm), METHOD("div_", m_div_rm_), METHOD("divide", m_div_rm),
    METHOD("divide_", m_div_rm_), METHOD("true_divide", m_div), METHOD("true_divide_", m_div_),
    METHOD("pow", m_pow_any), METHOD("pow_", m_pow_any_),
#define X(n) METHOD(#n, m_##n), METHOD(#n "_", m_##n##_),
    EM_BINARY_OPS(X)
    EM_COMPARE_OPS(X)
#undef X
    METHOD("greater", m_gt), METHOD("greater_equal", m_ge), METHOD("less", m_lt),
    METHOD("less_equal", m_le), METHOD("not_equal", m_ne), METHOD("arctan2", m_atan2),
    METHOD("where", m_where), METHOD("lerp", m_lerp), METHOD("lerp_", m_lerp_),
    METHOD("addcmul", m_addcmul), METHOD("addcmul_", m_addcmul_), METHOD("addcdiv", m_addcdiv),
    METHOD("addcdiv_", m_addcdiv_),
    METHOD("sum", m_sum), METHOD("mean", m_mean), METHOD("prod", m_prod), METHOD("amax", m_amax),
    METHOD("amin", m_amin), METHOD("all", m_all), METHOD("any", m_any), METHOD("var", m_var),
    METHOD("std", m_std), METHOD("logsumexp", m_logsumexp), METHOD("norm", m_norm),
    METHOD("count_nonzero", m_count_nonzero), METHOD("max", m_max), METHOD("min", m_min),
    METHOD("argmax", m_argmax), METHOD("argmin", m_argmin), METHOD("softmax", m_softmax),
    METHOD("log_softmax", m_log_softmax), METHOD("cumsum", m_cumsum), METHOD("cumprod", m_cumprod),
    METHOD("matmul", m_matmul), METHOD("mm", m_mm), METHOD("bmm", m_bmm), METHOD("mv", m_mv),
    METHOD("dot", m_dot), METHOD("inner", m_dot), METHOD("outer", m_outer), METHOD("ger", m_outer),
    METHOD("addmm", m_addmm), METHOD("baddbmm", m_baddbmm),
    METHOD("allclose", m_allclose), METHOD("equal", m_equal),
    {NULL, NULL, 0, NULL},
};

PyMethodDef emp_ops_functions[] = {
#define X(n) METHOD(#n, f_##n), {#n "_", f_##n##_, METH_O, NULL},
    EM_UNARY_OPS(X)
#undef X
    METHOD("isnan", f_isnan), METHOD("isinf", f_isinf), METHOD("isfinite", f_isfinite),
    METHOD("absolute", f_abs), METHOD("negative", f_neg), METHOD("arcsin", f_asin),
    METHOD("arccos", f_acos), METHOD("arctan", f_atan), METHOD("fix", f_trunc),
    METHOD("leaky_relu", f_leaky_relu), METHOD("gelu", f_gelu), METHOD("softplus", f_softplus),
    METHOD("elu", f_elu), METHOD("hardtanh", f_hardtanh),
    METHOD("clamp", f_clamp), METHOD("clip", f_clamp), METHOD("clamp_min", f_clamp_min),
    METHOD("clamp_max", f_clamp_max),
    METHOD("add", f_add_alpha), METHOD("sub", f_sub_alpha), METHOD("subtract", f_sub_alpha),
    METHOD("rsub", f_rsub), METHOD("multiply", f_mul), METHOD("div", f_div_rm),
    METHOD("divide", f_div_rm), METHOD("true_divide", f_div), METHOD("pow", f_pow_any),
#define X(n) METHOD(#n, f_##n),
    EM_BINARY_OPS(X)
    EM_COMPARE_OPS(X)
#undef X
    METHOD("greater", f_gt), METHOD("greater_equal", f_ge), METHOD("less", f_lt),
    METHOD("less_equal", f_le), METHOD("not_equal", f_ne), METHOD("arctan2", f_atan2),
    METHOD("where", f_where), METHOD("lerp", f_lerp), METHOD("addcmul", f_addcmul),
    METHOD("addcdiv", f_addcdiv),
    METHOD("sum", f_sum), METHOD("mean", f_mean), METHOD("prod", f_prod), METHOD("amax", f_amax),
    METHOD("amin", f_amin), METHOD("all", f_all), METHOD("any", f_any), METHOD("var", f_var),
    METHOD("std", f_std), METHOD("logsumexp", f_logsumexp), METHOD("norm", f_norm),
    METHOD("count_nonzero", f_count_nonzero), METHOD("max", f_max), METHOD("min", f_min),
    METHOD("argmax", f_argmax), METHOD("argmin", f_argmin), METHOD("softmax", f_softmax),
    METHOD("log_softmax", f_log_softmax), METHOD("cumsum", f_cumsum), METHOD("cumprod", f_cumprod),
    METHOD("matmul", f_matmul), METHOD("mm", f_mm), METHOD("bmm", f_bmm), METHOD("mv", f_mv),
    METHOD("dot", f_dot), METHOD("inner", f_dot), METHOD("outer", f_outer), METHOD("ger", f_outer),
    METHOD("addmm", f_addmm), METHOD("baddbmm", f_baddbmm),
    METHOD("allclose", f_allclose), METHOD("equal", f_equal),
    {NULL, NULL, 0, NULL},
};

static PyStructSequence_Field rt_fields[] = {{"values", NULL}, {"indices", NULL}, {NULL, NULL}};
static PyStructSequence_Desc rt_max_desc = {"ember.return_types.max", NULL, rt_fields, 2};
static PyStructSequence_Desc rt_min_desc = {"ember.return_types.min", NULL, rt_fields, 2};

int emp_ops_init(PyObject *m) {
  rt_max = PyStructSequence_NewType(&rt_max_desc);
  rt_min = PyStructSequence_NewType(&rt_min_desc);
  if (!rt_max || !rt_min) return -1;
  if (PyModule_AddObjectRef(m, "_return_type_max", (PyObject *)rt_max) < 0 ||
      PyModule_AddObjectRef(m, "_return_type_min", (PyObject *)rt_min) < 0)
    return -1;
  return 0;
}
