/* Printing, as PyTorch 1.13 prints (torch/_tensor_str.py with the default
 * print options: precision 4, threshold 1000, edgeitems 3, linewidth 80,
 * sci_mode automatic), "torch." written "ember."; and the comparison
 * helpers allclose and equal.
 *
 * The printer follows _tensor_str.py step by step: one formatter for the
 * whole tensor (built from the elements that will be shown: all of them,
 * or the summarised edges past 1000 elements), rows joined with ",\n" and
 * one more newline per extra dim, vectors wrapped to the line width, and
 * the suffixes (device, size of an empty tensor, a non-default dtype)
 * placed by _add_suffixes. float16 and bfloat16 print through float, as in
 * PyTorch. Elements are read straight from the storage (any layout), so
 * printing a large tensor touches only what it shows.
 *
 * Not printed: PyTorch's autograd suffixes (requires_grad=True,
 * grad_fn=<...>); core knows nothing of autograd nodes. A caller that
 * wants them (the Python layer) strips the final ")" and appends them the
 * way _add_suffixes does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core_impl.h"


enum {
  PRINT_PRECISION = 4,
  PRINT_THRESHOLD = 1000,
  PRINT_EDGEITEMS = 3,
  PRINT_LINEWIDTH = 80,
};

/* ---- a growing string ---------------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}
static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_rep(sbuf *b, char c, int n) {
  for (int i = 0; i < n; i++) sb_putn(b, &c, 1);
}

/* ---- the formatter (_Formatter) -------------------------------------------------------- */

typedef struct printer {
  const em_tensor *t; /* on the CPU */
  em_dtype dt;
  bool is_float, summarize;
  bool int_mode, sci_mode;
  int max_width;
  /* scan state */
  bool any_nonzero_finite;
  double min_abs, max_abs;
  sbuf out;
} printer;

/* %.0f of a double needs up to 309 digits, %.4f 314 plus sign. */
#define NUMBUF 400

static double load_f(const printer *p, int64_t off) {
  const char *base = (const char *)p->t->storage->data;
  return em__load_f64(base + off * (int64_t)em_dtype_size(p->dt), p->dt);
}
static int64_t load_i(const printer *p, int64_t off) {
  const char *base = (const char *)p->t->storage->data;
  return em__load_i64(base + off * (int64_t)em_dtype_size(p->dt), p->dt);
}

/* Python's str() of a float for the three modes, without padding. */
static int fmt_float(char *buf, double v, bool sci, bool int_mode) {
  if (isnan(v)) return snprintf(buf, NUMBUF, "nan");
  if (isinf(v)) return snprintf(buf, NUMBUF, v > 0 ? "inf" : "-inf");
  if (sci) return snprintf(buf, NUMBUF, "%.*e", PRINT_PRECISION, v);
  if (int_mode) return snprintf(buf, NUMBUF, "%.0f.", v);
  return snprintf(buf, NUMBUF, "%.*f", PRINT_PRECISION, v);
}

/* One element as the formatter prints it (padded to max_width). */
static void put_elem(printer *p, int64_t off) {
  char buf[NUMBUF];
  int n;
  if (p->is_float)
    n = fmt_float(buf, load_f(p, off), p->sci_mode, p->int_mode);
  else if (p->dt == EM_BOOL)
    n = snprintf(buf, NUMBUF, "%s", load_i(p, off) ? "True" : "False");
  else
    n = snprintf(buf, NUMBUF, "%lld", (long long)load_i(p, off));
  sb_rep(&p->out, ' ', p->max_width - n);
  sb_putn(&p->out, buf, (size_t)n);
}

/* Visits the elements the printout shows (the summarised edges of every
 * dim when summarising), in order. */
typedef void (*visit_fn)(printer *p, int64_t off);
static void visit(printer *p, int dim, int64_t off, visit_fn fn) {
  const em_tensor *t = p->t;
  if (dim == t->ndim) {
    fn(p, off);
    return;
  }
  int64_t n = t->shape[dim], st = t->strides[dim];
  bool cut = p->summarize && n > 2 * PRINT_EDGEITEMS;
  for (int64_t i = 0; i < n; i++) {
    if (cut && i == PRINT_EDGEITEMS) i = n - PRINT_EDGEITEMS;
    visit(p, dim + 1, off + i * st, fn);
  }
}

static void scan_float(printer *p, int64_t off) {
  double v = load_f(p, off);
  if (!isfinite(v) || v == 0) return;
  double a = fabs(v);
  if (!p->any_nonzero_finite || a < p->min_abs) p->min_abs = a;
  if (!p->any_nonzero_finite || a > p->max_abs) p->max_abs = a;
  p->any_nonzero_finite = true;
  if (v != ceil(v)) p->int_mode = false;
}

static void width_float(printer *p, int64_t off) {
  double v = load_f(p, off);
  if (!isfinite(v) || v == 0) return;
  char buf[NUMBUF];
  /* int mode counts the "." it appends (fmt_float writes it) */
  int n = fmt_float(buf, v, p->sci_mode, p->int_mode);
  if (n > p->max_width) p->max_width = n;
}

static void width_int(printer *p, int64_t off) {
  char buf[NUMBUF];
  int n = p->dt == EM_BOOL ? (load_i(p, off) ? 4 : 5)
                           : snprintf(buf, NUMBUF, "%lld", (long long)load_i(p, off));
  if (n > p->max_width) p->max_width = n;
}

static void build_formatter(printer *p) {
  p->int_mode = true;
  p->sci_mode = false;
  p->max_width = 1;
  if (!p->is_float) {
    visit(p, 0, p->t->offset, width_int);
    return;
  }
  visit(p, 0, p->t->offset, scan_float);
  if (!p->any_nonzero_finite) return;
  double ratio = p->max_abs / p->min_abs;
  if (p->int_mode)
    p->sci_mode = ratio > 1000.0 || p->max_abs > 1.0e8;
  else
    p->sci_mode = ratio > 1000.0 || p->max_abs > 1.0e8 || p->min_abs < 1.0e-4;
  visit(p, 0, p->t->offset, width_float);
}

/* ---- layout (_tensor_str_with_formatter, _vector_str) ------------------------------------ */

static void vector_str(printer *p, int64_t off, int indent) {
  const em_tensor *t = p->t;
  int64_t n = t->shape[t->ndim - 1], st = t->strides[t->ndim - 1];
  int64_t per_line = (int64_t)floor((double)(PRINT_LINEWIDTH - indent) / (p->max_width + 2));
  if (per_line < 1) per_line = 1;
  bool cut = p->summarize && n > 2 * PRINT_EDGEITEMS;
  sb_puts(&p->out, "[");
  int64_t item = 0;
  for (int64_t i = 0; i < n; i++, item++) {
    if (item > 0) {
      if (item % per_line == 0) {
        sb_puts(&p->out, ",\n");
        sb_rep(&p->out, ' ', indent + 1);
      } else {
        sb_puts(&p->out, ", ");
      }
    }
    if (cut && i == PRINT_EDGEITEMS) {
      sb_puts(&p->out, " ...");
      i = n - PRINT_EDGEITEMS - 1;
      continue;
    }
    put_elem(p, off + i * st);
  }
  sb_puts(&p->out, "]");
}

static void tensor_str(printer *p, int dim, int64_t off, int indent) {
  const em_tensor *t = p->t;
  if (t->ndim == 0) {
    put_elem(p, off);
    return;
  }
  if (dim == t->ndim - 1) {
    vector_str(p, off, indent);
    return;
  }
  int64_t n = t->shape[dim], st = t->strides[dim];
  bool cut = p->summarize && n > 2 * PRINT_EDGEITEMS;
  sb_puts(&p->out, "[");
  for (int64_t i = 0; i < n; i++) {
    if (i > 0) {
      sb_puts(&p->out, ",");
      sb_rep(&p->out, '\n', t->ndim - dim - 1);
      sb_rep(&p->out, ' ', indent + 1);
    }
    if (cut && i == PRINT_EDGEITEMS) {
      sb_puts(&p->out, "...");
      sb_puts(&p->out, ",");
      sb_rep(&p->out, '\n', t->ndim - dim - 1);
      sb_rep(&p->out, ' ', indent + 1);
      i = n - PRINT_EDGEITEMS;
    }
    tensor_str(p, dim + 1, off + i * st, indent + 1);
  }
  sb_puts(&p->out, "]");
}

/* _add_suffixes: each suffix goes on the current line unless the line
 * would pass the line width. */
static void add_suffixes(sbuf *b, int nsuf, char suf[][EM_SHAPE_STR_MAX + 16], int indent) {
  size_t last_nl = b->len;
  for (size_t i = b->len; i > 0; i--)
    if (b->p[i - 1] == '\n') {
      last_nl = i - 1;
      break;
    }
  /* Python: len(s) - s.rfind('\n') + 1, with rfind -1 when none */
  long last_line_len = last_nl == b->len ? (long)b->len + 2 : (long)(b->len - last_nl) + 1;
  for (int i = 0; i < nsuf; i++) {
    long n = (long)strlen(suf[i]);
    if (last_line_len + n + 2 > PRINT_LINEWIDTH) {
      sb_puts(b, ",\n");
      sb_rep(b, ' ', indent);
      last_line_len = indent + n;
    } else {
      sb_puts(b, ", ");
      last_line_len += n + 2;
    }
    sb_puts(b, suf[i]);
  }
  sb_puts(b, ")");
}

char *em_tensor_to_string(em_tensor *t, const char *prefix) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "to_string: NULL tensor");
  em_tensor *c = t;
  if (t->device.type != EM_CPU) {
    c = em_tensor_to_device(t, EM_DEVICE_CPU);
    if (!c) return NULL;
  }
  if (!prefix) prefix = "tensor(";
  const char *nl = strrchr(prefix, '\n');
  int indent = (int)strlen(nl ? nl + 1 : prefix);

  printer p = {0};
  p.t = c;
  p.dt = (em_dtype)t->dtype;
  p.is_float = em_dtype_is_float(p.dt);
  p.summarize = t->numel > PRINT_THRESHOLD;

  sb_puts(&p.out, prefix);
  if (t->numel == 0) {
    sb_puts(&p.out, "[]");
  } else {
    build_formatter(&p);
    tensor_str(&p, 0, c->offset, indent);
  }

  char suf[3][EM_SHAPE_STR_MAX + 16];
  int nsuf = 0;
  em_dtype def = em_get_default_dtype();
  if (t->device.type != EM_CPU) {
    char d[16];
    snprintf(suf[nsuf++], sizeof suf[0], "device='%s'", em_device_str(t->device, d, sizeof d));
  }
  if (t->numel == 0) {
    if (t->ndim != 1) {
      char *s = suf[nsuf++];
      int n = snprintf(s, sizeof suf[0], "size=(");
      for (int i = 0; i < t->ndim && n < (int)sizeof suf[0]; i++)
        n += snprintf(s + n, sizeof suf[0] - (size_t)n, i ? ", %lld" : "%lld",
                      (long long)t->shape[i]);
      if (n < (int)sizeof suf[0]) snprintf(s + n, sizeof suf[0] - (size_t)n, ")");
    }
    if (p.dt != def) snprintf(suf[nsuf++], sizeof suf[0], "dtype=ember.%s", em_dtype_name(p.dt));
  } else if (p.dt != def && p.dt != EM_INT64 && p.dt != EM_BOOL) {
    snprintf(suf[nsuf++], sizeof suf[0], "dtype=ember.%s", em_dtype_name(p.dt));
  }
  add_suffixes(&p.out, nsuf, suf, indent);

  if (c != t) em_tensor_release(c);
  if (p.out.oom) {
    free(p.out.p);
    return EM_FAIL(EM_ERR_NOMEM, "to_string: out of memory");
  }
  return p.out.p;
}

/* Writes the printout and a newline (as Python's print) to f (NULL:
 * stdout). */
em_status em_tensor_print(em_tensor *t, FILE *f) {
  char *s = em_tensor_to_string(t, NULL);
  if (!s) return em_last_status();
  if (!f) f = stdout;
  int bad = fputs(s, f) < 0 || fputc('\n', f) == EOF;
  free(s);
  if (bad) return em__set_error(EM_ERR_IO, "print: writing the tensor failed");
  return EM_OK;
}

/* ---- comparison helpers ------------------------------------------------------------------ */

/* Both operands on the CPU, converted to their promoted dtype and then to
 * float64 (float results) or int64 (integer and bool results), contiguous
 * in their own shapes; strides (elements) against the broadcast shape. */
typedef struct cmp_pair {
  em_tensor *a, *b;
  bool is_float;
  int nd;
  int64_t numel;
  int64_t shape[EM_MAX_DIMS], sa[EM_MAX_DIMS], sb[EM_MAX_DIMS];
} cmp_pair;

static em_tensor *cmp_operand(em_tensor *t, em_dtype promoted, em_dtype compute) {
  em_tensor *x = em_tensor_retain(t), *y;
  if (x->device.type != EM_CPU) {
    y = em_tensor_to_device(x, EM_DEVICE_CPU);
    em_tensor_release(x);
    if (!(x = y)) return NULL;
  }
  if (x->dtype != promoted) { /* round through the promoted dtype, as PyTorch compares */
    y = em__convert(x, promoted);
    em_tensor_release(x);
    if (!(x = y)) return NULL;
  }
  if (x->dtype != compute || !em_tensor_is_contiguous(x)) {
    y = em__convert(x, compute);
    em_tensor_release(x);
    x = y;
  }
  return x;
}

static void cmp_strides(const em_tensor *t, int nd, const int64_t *shape, int64_t *s) {
  int64_t cs[EM_MAX_DIMS];
  em__contiguous_strides(t->ndim, t->shape, cs);
  int off = nd - t->ndim;
  for (int d = 0; d < nd; d++) {
    int j = d - off;
    s[d] = (j < 0 || t->shape[j] != shape[d]) ? 0 : cs[j];
  }
}

static em_status cmp_prepare(const char *op, em_tensor *a, em_tensor *b, cmp_pair *c) {
  em_tensor *ab[2] = {a, b};
  EM_CHECK(em__check_same_device(op, 2, ab));
  const int ndims[2] = {a->ndim, b->ndim};
  const int64_t *shapes[2] = {a->shape, b->shape};
  em_status st = em_broadcast_shapes(2, ndims, shapes, &c->nd, c->shape);
  if (st) {
    em__prefix_error("%s", op);
    return st;
  }
  c->numel = 1;
  for (int d = 0; d < c->nd; d++) c->numel *= c->shape[d];
  em_dtype promoted = em_promote_types((em_dtype)a->dtype, (em_dtype)b->dtype);
  c->is_float = em_dtype_is_float(promoted);
  em_dtype compute = c->is_float ? EM_FLOAT64 : EM_INT64;
  c->a = cmp_operand(a, promoted, compute);
  c->b = c->a ? cmp_operand(b, promoted, compute) : NULL;
  if (!c->a || !c->b) {
    em_tensor_release(c->a);
    em__prefix_error("%s", op);
    return em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  }
  cmp_strides(c->a, c->nd, c->shape, c->sa);
  cmp_strides(c->b, c->nd, c->shape, c->sb);
  return EM_OK;
}

static void cmp_release(cmp_pair *c) {
  em_tensor_release(c->a);
  em_tensor_release(c->b);
}

/* Runs the body (the macro's last argument, a block) for every element of the broadcast shape with oa / ob the
 * element offsets into A / B; the body may `break` out of the walk. */
#define CMP_WALK(c, ...)                                                    \
  do {                                                                      \
    int64_t idx_[EM_MAX_DIMS] = {0}, oa = 0, ob = 0;                        \
    for (int64_t k_ = 0; k_ < (c)->numel; k_++) {                           \
      __VA_ARGS__                                                           \
      for (int d_ = (c)->nd - 1; d_ >= 0; d_--) {                           \
        oa += (c)->sa[d_];                                                  \
        ob += (c)->sb[d_];                                                  \
        if (++idx_[d_] < (c)->shape[d_]) break;                             \
        oa -= (c)->sa[d_] * (c)->shape[d_];                                 \
        ob -= (c)->sb[d_] * (c)->shape[d_];                                 \
        idx_[d_] = 0;                                                       \
      }                                                                     \
    }                                                                       \
  } while (0)

/* PyTorch's isclose, element by element: equal (infinities included), or
 * both NaN under equal_nan, or a finite |a - b| <= atol + |rtol * b|.
 * Computed in double (PyTorch computes in the tensors' dtype). */
em_status em_tensor_allclose(em_tensor *a, em_tensor *b, double rtol, double atol,
                             bool equal_nan, bool *out) {
  if (!a || !b || !out) return em__set_error(EM_ERR_INVALID, "allclose: NULL argument");
  if (!(rtol >= 0))
    return em__set_error(EM_ERR_INVALID,
                         "allclose: rtol must be greater than or equal to zero, but got %g", rtol);
  if (!(atol >= 0))
    return em__set_error(EM_ERR_INVALID,
                         "allclose: atol must be greater than or equal to zero, but got %g", atol);
  cmp_pair c;
  EM_CHECK(cmp_prepare("allclose", a, b, &c));
  bool all = true;
  if (c.numel > 0 && c.is_float) {
    const double *x = (const double *)em__data_ptr(c.a), *y = (const double *)em__data_ptr(c.b);
    CMP_WALK(&c, {
      double u = x[oa], v = y[ob];
      if (!(u == v || (equal_nan && isnan(u) && isnan(v)))) {
        double err = fabs(u - v);
        if (!(isfinite(err) && err <= atol + fabs(rtol * v))) {
          all = false;
          break;
        }
      }
    });
  } else if (c.numel > 0) {
    const int64_t *x = (const int64_t *)em__data_ptr(c.a), *y = (const int64_t *)em__data_ptr(c.b);
    CMP_WALK(&c, {
      int64_t u = x[oa], v = y[ob];
      if (u != v) {
        double err = (double)(u > v ? (uint64_t)u - (uint64_t)v : (uint64_t)v - (uint64_t)u);
        if (!(err <= atol + fabs(rtol * (double)v))) {
          all = false;
          break;
        }
      }
    });
  }
  cmp_release(&c);
  *out = all;
  return EM_OK;
}

/* torch.equal: false for different shapes (no broadcasting); values
 * compared after promotion; NaN is unequal to everything. */
em_status em_tensor_equal(em_tensor *a, em_tensor *b, bool *out) {
  if (!a || !b || !out) return em__set_error(EM_ERR_INVALID, "equal: NULL argument");
  bool same = a->ndim == b->ndim;
  for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
  if (!same) {
    em_tensor *ab[2] = {a, b};
    EM_CHECK(em__check_same_device("equal", 2, ab));
    *out = false;
    return EM_OK;
  }
  cmp_pair c;
  EM_CHECK(cmp_prepare("equal", a, b, &c));
  bool all = true;
  if (c.numel > 0 && c.is_float) {
    const double *x = (const double *)em__data_ptr(c.a), *y = (const double *)em__data_ptr(c.b);
    CMP_WALK(&c, {
      if (!(x[oa] == y[ob])) {
        all = false;
        break;
      }
    });
  } else if (c.numel > 0) {
    const int64_t *x = (const int64_t *)em__data_ptr(c.a), *y = (const int64_t *)em__data_ptr(c.b);
    CMP_WALK(&c, {
      if (x[oa] != y[ob]) {
        all = false;
        break;
      }
    });
  }
  cmp_release(&c);
  *out = all;
  return EM_OK;
}
