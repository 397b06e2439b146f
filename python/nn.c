/* ember._C bindings for ember.nn: the functional layers and losses
 * (nn/layers.h, nn/losses.h), initialisation (nn/init.h), gradient
 * clipping and safetensors checkpoints (nn/checkpoint.h).
 *
 * These are the private entry points (_nn_*, _init_*, _clip_*,
 * _safetensors_*) the Python package wraps: ember.nn.functional gives them
 * PyTorch's signatures and defaults; geometry arguments (stride, padding,
 * ...) arrive here already normalised to ints or tuples.
 *
 * The hot ones (_nn_linear, used by every Linear.forward) take positional
 * arguments only and do nothing beyond converting and calling C. */
#include <math.h>

#include "nn/nn.h"
#include "python/ember_py.h"

/* ---- converters ----------------------------------------------------------------------- */

/* Tensor or None (NULL). */
static int opt_tensor(PyObject *o, const char *fn, const char *arg, em_tensor **out) {
  if (!o || o == Py_None) {
    *out = NULL;
    return 0;
  }
  return emp_arg_tensor(o, fn, arg, out);
}

/* An int or a sequence of n ints (n = 1 or 2) into out[0..n). */
static int int_n(PyObject *o, const char *fn, const char *arg, int n, int64_t *out) {
  if (PyLong_Check(o)) {
    int64_t v;
    if (emp_arg_int(o, fn, arg, &v) < 0) return -1;
    for (int i = 0; i < n; i++) out[i] = v;
    return 0;
  }
  PyObject *seq = PySequence_Fast(o, "");
  if (!seq) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s(): argument '%s' must be int or tuple of ints, not %s", fn,
                 arg, Py_TYPE(o)->tp_name);
    return -1;
  }
  Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
  int rc = 0;
  if (len == 1) {
    rc = emp_arg_int(PySequence_Fast_GET_ITEM(seq, 0), fn, arg, &out[0]);
    for (int i = 1; i < n && !rc; i++) out[i] = out[0];
  } else if (len == n) {
    for (int i = 0; i < n && !rc; i++) rc = emp_arg_int(PySequence_Fast_GET_ITEM(seq, i), fn, arg, &out[i]);
  } else {
    PyErr_Format(PyExc_ValueError, "%s(): argument '%s' must have %d element%s, got %zd", fn, arg,
                 n, n == 1 ? "" : "s", len);
    rc = -1;
  }
  Py_DECREF(seq);
  return rc;
}

static int reduction_of(PyObject *o, const char *fn, em_reduction *r, bool *batchmean) {
  if (batchmean) *batchmean = false;
  if (!o || o == Py_None) {
    *r = EM_REDUCTION_MEAN;
    return 0;
  }
  const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL;
  if (!s) {
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_TypeError, "%s(): argument 'reduction' must be str, not %s", fn,
                   Py_TYPE(o)->tp_name);
    return -1;
  }
  if (strcmp(s, "mean") == 0) *r = EM_REDUCTION_MEAN;
  else if (strcmp(s, "sum") == 0) *r = EM_REDUCTION_SUM;
  else if (strcmp(s, "none") == 0) *r = EM_REDUCTION_NONE;
  else if (batchmean && strcmp(s, "batchmean") == 0) *r = EM_REDUCTION_SUM, *batchmean = true;
  else {
    PyErr_Format(PyExc_ValueError, "%s is not a valid value for reduction", s);
    return -1;
  }
  return 0;
}

static int gen_of(PyObject *o, em_generator **g) {
  *g = NULL;
  return emp_arg_generator(o, "init", g);
}

#define PARSE(fname, names, nreq, a) \
  if (emp_parse(fname, names, nreq, args, nargs, kw, a) < 0) return NULL

/* ---- linear ---------------------------------------------------------------------------- */

/* _nn_linear(x, w, b): positional only, b may be None. */
static PyObject *f_linear(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (EM_UNLIKELY(nargs != 3)) {
    PyErr_Format(PyExc_TypeError, "linear() takes 3 arguments (input, weight, bias), got %zd", nargs);
    return NULL;
  }
  em_tensor *x, *w, *b;
  if (!emp_is_tensor(args[0])) return (emp_arg_tensor(args[0], "linear", "input", &x), NULL);
  if (!emp_is_tensor(args[1])) return (emp_arg_tensor(args[1], "linear", "weight", &w), NULL);
  x = emp_tensor(args[0]);
  w = emp_tensor(args[1]);
  if (opt_tensor(args[2], "linear", "bias", &b) < 0) return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big2(x, w), r = em_nn_f_linear(x, w, b));
  return emp_wrap(r);
}

static PyObject *f_bilinear(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input1", "input2", "weight", "bias", NULL};
  PyObject *a[4];
  PARSE("bilinear", names, 3, a);
  em_tensor *x1, *x2, *w, *b;
  if (emp_arg_tensor(a[0], "bilinear", "input1", &x1) < 0 ||
      emp_arg_tensor(a[1], "bilinear", "input2", &x2) < 0 ||
      emp_arg_tensor(a[2], "bilinear", "weight", &w) < 0 || opt_tensor(a[3], "bilinear", "bias", &b) < 0)
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big2(x1, w), r = em_nn_f_bilinear(x1, x2, w, b));
  return emp_wrap(r);
}

/* ---- convolution ---------------------------------------------------------------------------- */

/* _nn_conv(kind, x, w, b, stride, padding, dilation, groups, output_padding):
 * kind 1 = conv1d, 2 = conv2d, 3 = conv_transpose2d. */
static PyObject *f_conv(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 9) {
    PyErr_SetString(PyExc_TypeError, "_nn_conv takes 9 arguments");
    return NULL;
  }
  int64_t kind;
  if (emp_arg_int(args[0], "conv", "kind", &kind) < 0) return NULL;
  const char *fn = kind == 1 ? "conv1d" : kind == 2 ? "conv2d" : "conv_transpose2d";
  int nd = kind == 1 ? 1 : 2;
  em_tensor *x, *w, *b;
  em_conv_options o = {{1, 1}, {0, 0}, {1, 1}, {0, 0}, 1};
  if (emp_arg_tensor(args[1], fn, "input", &x) < 0 || emp_arg_tensor(args[2], fn, "weight", &w) < 0 ||
      opt_tensor(args[3], fn, "bias", &b) < 0 || int_n(args[4], fn, "stride", nd, o.stride) < 0 ||
      int_n(args[5], fn, "padding", nd, o.padding) < 0 ||
      int_n(args[6], fn, "dilation", nd, o.dilation) < 0 ||
      emp_arg_int(args[7], fn, "groups", &o.groups) < 0 ||
      int_n(args[8], fn, "output_padding", nd, o.output_padding) < 0)
    return NULL;
  if (nd == 1) o.stride[1] = 1, o.dilation[1] = 1, o.padding[1] = 0, o.output_padding[1] = 0;
  /* 0 means "default" to C; a user's 0 stride must stay an error */
  for (int i = 0; i < nd; i++)
    if (o.stride[i] <= 0 || o.dilation[i] <= 0) {
      PyErr_Format(PyExc_RuntimeError, "%s: non-positive %s is not supported", fn,
                   o.stride[i] <= 0 ? "stride" : "dilation");
      return NULL;
    }
  if (o.groups <= 0) {
    PyErr_Format(PyExc_RuntimeError, "%s: non-positive groups is not supported", fn);
    return NULL;
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x) || emp_big(w),
               r = kind == 1   ? em_nn_f_conv1d(x, w, b, &o)
                   : kind == 2 ? em_nn_f_conv2d(x, w, b, &o)
                               : em_nn_f_conv_transpose2d(x, w, b, &o));
  return emp_wrap(r);
}

/* ---- pooling ---------------------------------------------------------------------------------- */

/* _nn_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices) */
static PyObject *f_max_pool2d(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 7) {
    PyErr_SetString(PyExc_TypeError, "_nn_max_pool2d takes 7 arguments");
    return NULL;
  }
  const char *fn = "max_pool2d";
  em_tensor *x;
  em_pool_options o = {0};
  bool ceil = false, ri = false;
  if (emp_arg_tensor(args[0], fn, "input", &x) < 0 || int_n(args[1], fn, "kernel_size", 2, o.kernel) < 0 ||
      (args[2] != Py_None && int_n(args[2], fn, "stride", 2, o.stride) < 0) ||
      int_n(args[3], fn, "padding", 2, o.padding) < 0 ||
      int_n(args[4], fn, "dilation", 2, o.dilation) < 0 ||
      emp_arg_bool(args[5], fn, "ceil_mode", &ceil) < 0 ||
      emp_arg_bool(args[6], fn, "return_indices", &ri) < 0)
    return NULL;
  if (args[2] != Py_None && (o.stride[0] <= 0 || o.stride[1] <= 0)) {
    PyErr_Format(PyExc_RuntimeError, "%s: stride should be greater than zero, but got stride=(%lld, %lld)",
                 fn, (long long)o.stride[0], (long long)o.stride[1]);
    return NULL;
  }
  if (o.dilation[0] <= 0 || o.dilation[1] <= 0) {
    PyErr_Format(PyExc_RuntimeError, "%s: dilation should be greater than zero", fn);
    return NULL;
  }
  o.ceil_mode = ceil;
  em_tensor *r, *idx = NULL;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_max_pool2d_with_indices(x, &o, ri ? &idx : NULL));
  if (!r) return emp_raise();
  PyObject *pr = emp_wrap(r);
  if (!ri || !pr) return pr;
  PyObject *pi = emp_wrap(idx);
  if (!pi) {
    Py_DECREF(pr);
    return NULL;
  }
  PyObject *tup = PyTuple_Pack(2, pr, pi);
  Py_DECREF(pr);
  Py_DECREF(pi);
  return tup;
}

/* _nn_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad) */
static PyObject *f_avg_pool2d(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 6) {
    PyErr_SetString(PyExc_TypeError, "_nn_avg_pool2d takes 6 arguments");
    return NULL;
  }
  const char *fn = "avg_pool2d";
  em_tensor *x;
  em_pool_options o = {0};
  bool ceil = false, cip = true;
  if (emp_arg_tensor(args[0], fn, "input", &x) < 0 || int_n(args[1], fn, "kernel_size", 2, o.kernel) < 0 ||
      (args[2] != Py_None && int_n(args[2], fn, "stride", 2, o.stride) < 0) ||
      int_n(args[3], fn, "padding", 2, o.padding) < 0 || emp_arg_bool(args[4], fn, "ceil_mode", &ceil) < 0 ||
      emp_arg_bool(args[5], fn, "count_include_pad", &cip) < 0)
    return NULL;
  if (args[2] != Py_None && (o.stride[0] <= 0 || o.stride[1] <= 0)) {
    PyErr_Format(PyExc_RuntimeError, "%s: stride should be greater than zero", fn);
    return NULL;
  }
  o.ceil_mode = ceil;
  o.count_include_pad = cip;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_avg_pool2d(x, &o));
  return emp_wrap(r);
}

/* _nn_adaptive_avg_pool2d(x, (oh, ow)); None entries keep the input size */
static PyObject *f_adaptive_avg_pool2d(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_nn_adaptive_avg_pool2d takes 2 arguments");
    return NULL;
  }
  const char *fn = "adaptive_avg_pool2d";
  em_tensor *x;
  int64_t out[2];
  if (emp_arg_tensor(args[0], fn, "input", &x) < 0) return NULL;
  PyObject *o = args[1];
  if (PyTuple_Check(o) && PyTuple_GET_SIZE(o) == 2) {
    for (int i = 0; i < 2; i++) {
      PyObject *v = PyTuple_GET_ITEM(o, i);
      if (v == Py_None) {
        if (x->ndim < 2) return emp_raise_fmt(EM_ERR_SHAPE, "%s: input must have at least 2 dims", fn);
        out[i] = x->shape[x->ndim - 2 + i];
      } else if (emp_arg_int(v, fn, "output_size", &out[i]) < 0) {
        return NULL;
      }
    }
  } else if (int_n(o, fn, "output_size", 2, out) < 0) {
    return NULL;
  }
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_adaptive_avg_pool2d(x, out[0], out[1]));
  return emp_wrap(r);
}

/* ---- normalisation ------------------------------------------------------------------------ */

/* _nn_batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps) */
static PyObject *f_batch_norm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 8) {
    PyErr_SetString(PyExc_TypeError, "_nn_batch_norm takes 8 arguments");
    return NULL;
  }
  const char *fn = "batch_norm";
  em_tensor *x, *rm, *rv, *w, *b;
  bool training = false;
  double momentum = 0.1, eps = 1e-5;
  if (emp_arg_tensor(args[0], fn, "input", &x) < 0 || opt_tensor(args[1], fn, "running_mean", &rm) < 0 ||
      opt_tensor(args[2], fn, "running_var", &rv) < 0 || opt_tensor(args[3], fn, "weight", &w) < 0 ||
      opt_tensor(args[4], fn, "bias", &b) < 0 || emp_arg_bool(args[5], fn, "training", &training) < 0 ||
      (args[6] != Py_None && emp_arg_double(args[6], fn, "momentum", &momentum) < 0) ||
      emp_arg_double(args[7], fn, "eps", &eps) < 0)
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_batch_norm(x, rm, rv, w, b, training, momentum, eps));
  return emp_wrap(r);
}

static PyObject *f_layer_norm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "normalized_shape", "weight", "bias", "eps", NULL};
  PyObject *a[5];
  PARSE("layer_norm", names, 2, a);
  const char *fn = "layer_norm";
  em_tensor *x, *w, *b;
  emp_shape s;
  double eps = 1e-5;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0) return NULL;
  if (PyLong_Check(a[1])) {
    s.ndim = 1;
    if (emp_arg_int(a[1], fn, "normalized_shape", &s.d[0]) < 0) return NULL;
  } else if (emp_arg_shape(a[1], fn, "normalized_shape", &s) < 0) {
    return NULL;
  }
  if (opt_tensor(a[2], fn, "weight", &w) < 0 || opt_tensor(a[3], fn, "bias", &b) < 0 ||
      (a[4] && emp_arg_double(a[4], fn, "eps", &eps) < 0))
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_layer_norm(x, s.ndim, s.d, w, b, eps));
  return emp_wrap(r);
}

static PyObject *f_group_norm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "num_groups", "weight", "bias", "eps", NULL};
  PyObject *a[5];
  PARSE("group_norm", names, 2, a);
  const char *fn = "group_norm";
  em_tensor *x, *w, *b;
  int64_t g;
  double eps = 1e-5;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_int(a[1], fn, "num_groups", &g) < 0 ||
      opt_tensor(a[2], fn, "weight", &w) < 0 || opt_tensor(a[3], fn, "bias", &b) < 0 ||
      (a[4] && emp_arg_double(a[4], fn, "eps", &eps) < 0))
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_group_norm(x, g, w, b, eps));
  return emp_wrap(r);
}

/* ---- embedding, dropout --------------------------------------------------------------------- */

static PyObject *f_embedding(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "weight", "padding_idx", NULL};
  PyObject *a[3];
  PARSE("embedding", names, 2, a);
  em_tensor *idx, *w;
  int64_t pad = 0;
  bool has_pad = a[2] && a[2] != Py_None;
  if (emp_arg_tensor(a[0], "embedding", "input", &idx) < 0 ||
      emp_arg_tensor(a[1], "embedding", "weight", &w) < 0 ||
      (has_pad && emp_arg_int(a[2], "embedding", "padding_idx", &pad) < 0))
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(idx), r = em_nn_f_embedding(idx, w, has_pad, pad));
  return emp_wrap(r);
}

static PyObject *f_dropout(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "p", "training", "generator", NULL};
  PyObject *a[4];
  PARSE("dropout", names, 1, a);
  em_tensor *x;
  double p = 0.5;
  bool training = true;
  em_generator *g = NULL;
  if (emp_arg_tensor(a[0], "dropout", "input", &x) < 0 ||
      (a[1] && emp_arg_double(a[1], "dropout", "p", &p) < 0) ||
      (a[2] && emp_arg_bool(a[2], "dropout", "training", &training) < 0) ||
      (a[3] && emp_arg_generator(a[3], "dropout", &g) < 0))
    return NULL;
  if (!(p >= 0 && p <= 1)) return emp_raise_fmt(EM_ERR_INVALID, "dropout probability has to be between 0 and 1, but got %R", a[1]);
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_dropout(x, p, training, g));
  return emp_wrap(r);
}

/* ---- losses ------------------------------------------------------------------------------------ */

static PyObject *ce_like(bool nll, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "target", "weight", "ignore_index", "reduction",
                                      "label_smoothing", NULL};
  const char *fn = nll ? "nll_loss" : "cross_entropy";
  PyObject *a[6];
  if (emp_parse(fn, names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *x, *t;
  em_ce_options o = {.ignore_index = -100, .has_ignore_index = true};
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_tensor(a[1], fn, "target", &t) < 0 ||
      opt_tensor(a[2], fn, "weight", &o.weight) < 0 ||
      (a[3] && emp_arg_int(a[3], fn, "ignore_index", &o.ignore_index) < 0) ||
      reduction_of(a[4], fn, &o.reduction, NULL) < 0 ||
      (a[5] && emp_arg_double(a[5], fn, "label_smoothing", &o.label_smoothing) < 0))
    return NULL;
  if (nll && o.label_smoothing != 0)
    return emp_raise_fmt(EM_ERR_INVALID, "nll_loss() got an unexpected keyword argument 'label_smoothing'");
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = nll ? em_nn_f_nll_loss(x, t, &o) : em_nn_f_cross_entropy(x, t, &o));
  return emp_wrap(r);
}
static PyObject *f_cross_entropy(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return ce_like(false, args, nargs, kw);
}
static PyObject *f_nll_loss(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return ce_like(true, args, nargs, kw);
}

/* mse (0), l1 (1), smooth_l1 (2, beta) */
static PyObject *pointwise_loss(int kind, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "target", "reduction", "beta", NULL};
  const char *fn = kind == 0 ? "mse_loss" : kind == 1 ? "l1_loss" : "smooth_l1_loss";
  PyObject *a[4];
  if (emp_parse(fn, names, 2, args, nargs, kw, a) < 0) return NULL;
  em_tensor *x, *t;
  em_reduction red;
  double beta = 1.0;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_tensor(a[1], fn, "target", &t) < 0 ||
      reduction_of(a[2], fn, &red, NULL) < 0 || (a[3] && emp_arg_double(a[3], fn, "beta", &beta) < 0))
    return NULL;
  if (kind < 2 && a[3]) return emp_raise_fmt(EM_ERR_DTYPE, "%s() got an unexpected keyword argument 'beta'", fn);
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = kind == 0   ? em_nn_f_mse_loss(x, t, red)
                               : kind == 1 ? em_nn_f_l1_loss(x, t, red)
                                           : em_nn_f_smooth_l1_loss(x, t, red, beta));
  return emp_wrap(r);
}
static PyObject *f_mse_loss(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return pointwise_loss(0, args, nargs, kw);
}
static PyObject *f_l1_loss(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return pointwise_loss(1, args, nargs, kw);
}
static PyObject *f_smooth_l1_loss(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  return pointwise_loss(2, args, nargs, kw);
}

static PyObject *f_bce(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "target", "weight", "reduction", NULL};
  const char *fn = "binary_cross_entropy";
  PyObject *a[4];
  PARSE(fn, names, 2, a);
  em_tensor *x, *t, *w;
  em_reduction red;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_tensor(a[1], fn, "target", &t) < 0 ||
      opt_tensor(a[2], fn, "weight", &w) < 0 || reduction_of(a[3], fn, &red, NULL) < 0)
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_binary_cross_entropy(x, t, w, red));
  return emp_wrap(r);
}

static PyObject *f_bce_logits(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "target", "weight", "reduction", "pos_weight", NULL};
  const char *fn = "binary_cross_entropy_with_logits";
  PyObject *a[5];
  PARSE(fn, names, 2, a);
  em_tensor *x, *t, *w, *pw;
  em_reduction red;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_tensor(a[1], fn, "target", &t) < 0 ||
      opt_tensor(a[2], fn, "weight", &w) < 0 || reduction_of(a[3], fn, &red, NULL) < 0 ||
      opt_tensor(a[4], fn, "pos_weight", &pw) < 0)
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_binary_cross_entropy_with_logits(x, t, w, pw, red));
  return emp_wrap(r);
}

static PyObject *f_kl_div(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"input", "target", "reduction", "log_target", NULL};
  const char *fn = "kl_div";
  PyObject *a[4];
  PARSE(fn, names, 2, a);
  em_tensor *x, *t;
  em_reduction red;
  bool bm = false, lt = false;
  if (emp_arg_tensor(a[0], fn, "input", &x) < 0 || emp_arg_tensor(a[1], fn, "target", &t) < 0 ||
      reduction_of(a[2], fn, &red, &bm) < 0 || (a[3] && emp_arg_bool(a[3], fn, "log_target", &lt) < 0))
    return NULL;
  em_tensor *r;
  EMP_NOGIL_IF(emp_big(x), r = em_nn_f_kl_div(x, t, red, bm, lt));
  return emp_wrap(r);
}

/* ---- init ------------------------------------------------------------------------------------- */

static PyObject *done_init(em_status st, PyObject *t) {
  if (st) return emp_raise();
  return Py_NewRef(t);
}

static int fan_mode(PyObject *o, em_fan_mode *m) {
  const char *s = o && o != Py_None ? PyUnicode_AsUTF8(o) : "fan_in";
  if (!s) return -1;
  if (strcmp(s, "fan_in") == 0) *m = EM_FAN_IN;
  else if (strcmp(s, "fan_out") == 0) *m = EM_FAN_OUT;
  else {
    PyErr_Format(PyExc_ValueError, "Mode %s not supported, please use one of fan_in, fan_out", s);
    return -1;
  }
  return 0;
}

/* _init_(kind, tensor, a, b, mode, nonlinearity, generator)
 * kind: uniform(a, b), normal(mean a, std b), constant(a), xavier_uniform(gain a),
 * xavier_normal(gain a), kaiming_uniform(a, mode, nl), kaiming_normal(a, mode, nl),
 * orthogonal(gain a). */
static PyObject *f_init(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 7) {
    PyErr_SetString(PyExc_TypeError, "_init_ takes 7 arguments");
    return NULL;
  }
  const char *kind = PyUnicode_AsUTF8(args[0]);
  if (!kind) return NULL;
  em_tensor *t;
  double a = 0, b = 0;
  em_generator *g;
  if (emp_arg_tensor(args[1], kind, "tensor", &t) < 0 ||
      (args[2] != Py_None && emp_arg_double(args[2], kind, "a", &a) < 0) ||
      (args[3] != Py_None && emp_arg_double(args[3], kind, "b", &b) < 0) || gen_of(args[6], &g) < 0)
    return NULL;
  em_status st;
  if (strcmp(kind, "uniform_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_uniform_(t, a, b, g));
  } else if (strcmp(kind, "normal_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_normal_(t, a, b, g));
  } else if (strcmp(kind, "constant_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_constant_(t, a));
  } else if (strcmp(kind, "xavier_uniform_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_xavier_uniform_(t, a, g));
  } else if (strcmp(kind, "xavier_normal_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_xavier_normal_(t, a, g));
  } else if (strcmp(kind, "orthogonal_") == 0) {
    EMP_NOGIL_IF(emp_big(t), st = em_nn_init_orthogonal_(t, a, g));
  } else if (strcmp(kind, "kaiming_uniform_") == 0 || strcmp(kind, "kaiming_normal_") == 0) {
    em_fan_mode m;
    if (fan_mode(args[4], &m) < 0) return NULL;
    const char *nl = args[5] == Py_None ? "leaky_relu" : PyUnicode_AsUTF8(args[5]);
    if (!nl) return NULL;
    if (kind[8] == 'u') {
      EMP_NOGIL_IF(emp_big(t), st = em_nn_init_kaiming_uniform_(t, a, m, nl, g));
    } else {
      EMP_NOGIL_IF(emp_big(t), st = em_nn_init_kaiming_normal_(t, a, m, nl, g));
    }
  } else {
    PyErr_Format(PyExc_ValueError, "unknown init %s", kind);
    return NULL;
  }
  return done_init(st, args[1]);
}

static PyObject *f_calculate_gain(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "calculate_gain(nonlinearity, param=None)");
    return NULL;
  }
  const char *nl = PyUnicode_AsUTF8(args[0]);
  if (!nl) return NULL;
  double p = NAN;
  if (nargs == 2 && args[1] != Py_None) {
    if (PyBool_Check(args[1]) || !(PyLong_Check(args[1]) || PyFloat_Check(args[1]))) {
      PyErr_Format(PyExc_ValueError, "negative_slope %S not a valid number", args[1]);
      return NULL;
    }
    if (emp_arg_double(args[1], "calculate_gain", "param", &p) < 0) return NULL;
  }
  if (isnan(p)) p = strcmp(nl, "leaky_relu") == 0 ? 0.01 : 0;
  em_clear_error();
  double g = em_nn_init_calculate_gain(nl, p);
  if (isnan(g)) return emp_raise_fmt(EM_ERR_INVALID, "Unsupported nonlinearity %s", nl);
  return PyFloat_FromDouble(g);
}

static PyObject *f_init_fans(PyObject *mod, PyObject *arg) {
  em_tensor *t;
  if (emp_arg_tensor(arg, "_calculate_fan_in_and_fan_out", "tensor", &t) < 0) return NULL;
  int64_t fi, fo;
  if (em_nn_init_fans(t, &fi, &fo)) return emp_raise();
  return Py_BuildValue("(LL)", (long long)fi, (long long)fo);
}

/* ---- gradient clipping ---------------------------------------------------------------------------- */

/* A list of tensors from an iterable of tensors (a lone tensor too).
 * *out is PyMem-allocated; the tensors are borrowed from *keep. */
static int tensor_list(PyObject *o, const char *fn, PyObject **keep, em_tensor ***out, int *n) {
  if (emp_is_tensor(o)) {
    *keep = PyTuple_Pack(1, o);
  } else {
    *keep = PySequence_Tuple(o);
  }
  if (!*keep) return -1;
  Py_ssize_t len = PyTuple_GET_SIZE(*keep);
  *out = PyMem_Malloc(sizeof **out * (size_t)(len + 1));
  if (!*out) {
    Py_CLEAR(*keep);
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < len; i++) {
    if (emp_arg_tensor(PyTuple_GET_ITEM(*keep, i), fn, "parameters", &(*out)[i]) < 0) {
      PyMem_Free(*out);
      Py_CLEAR(*keep);
      return -1;
    }
  }
  *n = (int)len;
  return 0;
}

static PyObject *f_clip_grad_norm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"parameters", "max_norm", "norm_type", "error_if_nonfinite", NULL};
  const char *fn = "clip_grad_norm_";
  PyObject *a[4];
  PARSE(fn, names, 2, a);
  double max_norm, norm_type = 2;
  bool err = false;
  if (emp_arg_double(a[1], fn, "max_norm", &max_norm) < 0) return NULL;
  if (a[2] && a[2] != Py_None) {
    if (PyUnicode_Check(a[2]) && PyUnicode_CompareWithASCIIString(a[2], "inf") == 0)
      norm_type = INFINITY;
    else if (emp_arg_double(a[2], fn, "norm_type", &norm_type) < 0)
      return NULL;
  }
  if (a[3] && emp_arg_bool(a[3], fn, "error_if_nonfinite", &err) < 0) return NULL;
  PyObject *keep;
  em_tensor **ps;
  int n;
  if (tensor_list(a[0], fn, &keep, &ps, &n) < 0) return NULL;
  double total = 0;
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_nn_clip_grad_norm_(n, ps, max_norm, norm_type, err, &total);
  Py_END_ALLOW_THREADS PyMem_Free(ps);
  Py_DECREF(keep);
  if (st) return emp_raise();
  return PyFloat_FromDouble(total);
}

static PyObject *f_clip_grad_value(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"parameters", "clip_value", NULL};
  const char *fn = "clip_grad_value_";
  PyObject *a[2];
  PARSE(fn, names, 2, a);
  double v;
  if (emp_arg_double(a[1], fn, "clip_value", &v) < 0) return NULL;
  PyObject *keep;
  em_tensor **ps;
  int n;
  if (tensor_list(a[0], fn, &keep, &ps, &n) < 0) return NULL;
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_nn_clip_grad_value_(n, ps, v);
  Py_END_ALLOW_THREADS PyMem_Free(ps);
  Py_DECREF(keep);
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

/* ---- safetensors ------------------------------------------------------------------------------ */

static int path_of(PyObject *o, PyObject **bytes) {
  if (!PyUnicode_FSConverter(o, bytes)) return -1;
  return 0;
}

/* _safetensors_save(path, names (list of str), tensors (list), metadata dict or None) */
static PyObject *f_st_save(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "_safetensors_save takes 4 arguments");
    return NULL;
  }
  PyObject *pb = NULL, *names = args[1], *tensors = args[2], *meta = args[3];
  if (!PyList_Check(names) || !PyList_Check(tensors) || PyList_GET_SIZE(names) != PyList_GET_SIZE(tensors)) {
    PyErr_SetString(PyExc_TypeError, "_safetensors_save: names and tensors must be lists of one length");
    return NULL;
  }
  if (path_of(args[0], &pb) < 0) return NULL;
  em_state_dict *sd = em_state_dict_create();
  const char **mk = NULL, **mv = NULL;
  int nm = 0;
  PyObject *ret = NULL;
  if (!sd) {
    emp_raise();
    goto done;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
    const char *nmc = PyUnicode_AsUTF8(PyList_GET_ITEM(names, i));
    em_tensor *t;
    if (!nmc) goto done;
    if (emp_arg_tensor(PyList_GET_ITEM(tensors, i), "save", "tensor", &t) < 0) goto done;
    if (em_state_dict_set(sd, nmc, t)) {
      emp_raise();
      goto done;
    }
  }
  if (meta && meta != Py_None) {
    if (!PyDict_Check(meta)) {
      PyErr_SetString(PyExc_TypeError, "save: metadata must be a dict of str to str");
      goto done;
    }
    Py_ssize_t n = PyDict_GET_SIZE(meta), pos = 0;
    mk = PyMem_Calloc((size_t)n + 1, sizeof *mk);
    mv = PyMem_Calloc((size_t)n + 1, sizeof *mv);
    if (!mk || !mv) {
      PyErr_NoMemory();
      goto done;
    }
    PyObject *k, *v;
    while (PyDict_Next(meta, &pos, &k, &v)) {
      if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "save: metadata must be a dict of str to str");
        goto done;
      }
      if (!(mk[nm] = PyUnicode_AsUTF8(k)) || !(mv[nm] = PyUnicode_AsUTF8(v))) goto done;
      nm++;
    }
  }
  em_status st;
  const char *path = PyBytes_AS_STRING(pb);
  Py_BEGIN_ALLOW_THREADS st = em_save_safetensors(path, sd, nm, mk, mv);
  Py_END_ALLOW_THREADS if (st) emp_raise();
  else ret = Py_NewRef(Py_None);
done:
  PyMem_Free(mk);
  PyMem_Free(mv);
  em_state_dict_free(sd);
  Py_XDECREF(pb);
  return ret;
}

/* _safetensors_load(path) -> list of (name, tensor) in file order */
static PyObject *f_st_load(PyObject *mod, PyObject *arg) {
  PyObject *pb;
  if (path_of(arg, &pb) < 0) return NULL;
  em_state_dict *sd = NULL;
  em_status st;
  const char *path = PyBytes_AS_STRING(pb);
  Py_BEGIN_ALLOW_THREADS st = em_load_safetensors(path, &sd);
  Py_END_ALLOW_THREADS Py_DECREF(pb);
  if (st) return emp_raise();
  int n = em_state_dict_size(sd);
  PyObject *l = PyList_New(n);
  for (int i = 0; l && i < n; i++) {
    PyObject *t = emp_wrap_borrowed(em_state_dict_tensor_at(sd, i));
    PyObject *item = t ? Py_BuildValue("(sN)", em_state_dict_name_at(sd, i), t) : NULL;
    if (!item) Py_CLEAR(l);
    else PyList_SET_ITEM(l, i, item);
  }
  em_state_dict_free(sd);
  return l;
}

static PyObject *f_st_metadata(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_safetensors_metadata(path, key)");
    return NULL;
  }
  PyObject *pb;
  const char *key = PyUnicode_AsUTF8(args[1]);
  if (!key || path_of(args[0], &pb) < 0) return NULL;
  char *v = NULL;
  em_status st = em_safetensors_metadata(PyBytes_AS_STRING(pb), key, &v);
  Py_DECREF(pb);
  if (st) return emp_raise();
  if (!v) Py_RETURN_NONE;
  PyObject *r = PyUnicode_FromString(v);
  free(v);
  return r;
}

/* ---- table ------------------------------------------------------------------------------------- */

static PyMethodDef nn_functions[] = {
    {"_nn_linear", EMP_FN(f_linear), METH_FASTCALL, "linear(input, weight, bias)"},
    {"_nn_bilinear", EMP_FN(f_bilinear), EMP_KW, NULL},
    {"_nn_conv", EMP_FN(f_conv), METH_FASTCALL, NULL},
    {"_nn_max_pool2d", EMP_FN(f_max_pool2d), METH_FASTCALL, NULL},
    {"_nn_avg_pool2d", EMP_FN(f_avg_pool2d), METH_FASTCALL, NULL},
    {"_nn_adaptive_avg_pool2d", EMP_FN(f_adaptive_avg_pool2d), METH_FASTCALL, NULL},
    {"_nn_batch_norm", EMP_FN(f_batch_norm), METH_FASTCALL, NULL},
    {"_nn_layer_norm", EMP_FN(f_layer_norm), EMP_KW, NULL},
    {"_nn_group_norm", EMP_FN(f_group_norm), EMP_KW, NULL},
    {"_nn_embedding", EMP_FN(f_embedding), EMP_KW, NULL},
    {"_nn_dropout", EMP_FN(f_dropout), EMP_KW, NULL},
    {"_nn_cross_entropy", EMP_FN(f_cross_entropy), EMP_KW, NULL},
    {"_nn_nll_loss", EMP_FN(f_nll_loss), EMP_KW, NULL},
    {"_nn_mse_loss", EMP_FN(f_mse_loss), EMP_KW, NULL},
    {"_nn_l1_loss", EMP_FN(f_l1_loss), EMP_KW, NULL},
    {"_nn_smooth_l1_loss", EMP_FN(f_smooth_l1_loss), EMP_KW, NULL},
    {"_nn_binary_cross_entropy", EMP_FN(f_bce), EMP_KW, NULL},
    {"_nn_binary_cross_entropy_with_logits", EMP_FN(f_bce_logits), EMP_KW, NULL},
    {"_nn_kl_div", EMP_FN(f_kl_div), EMP_KW, NULL},
    {"_init_", EMP_FN(f_init), METH_FASTCALL, NULL},
    {"_init_calculate_gain", EMP_FN(f_calculate_gain), METH_FASTCALL, NULL},
    {"_init_fans", f_init_fans, METH_O, NULL},
    {"_clip_grad_norm_", EMP_FN(f_clip_grad_norm), EMP_KW, NULL},
    {"_clip_grad_value_", EMP_FN(f_clip_grad_value), EMP_KW, NULL},
    {"_safetensors_save", EMP_FN(f_st_save), METH_FASTCALL, NULL},
    {"_safetensors_load", f_st_load, METH_O, NULL},
    {"_safetensors_metadata", EMP_FN(f_st_metadata), METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

int emp_init_nn(PyObject *module) { return PyModule_AddFunctions(module, nn_functions); }
