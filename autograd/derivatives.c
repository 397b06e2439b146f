/* Derivative formulas for every differentiable core op, written with core
 * ops (so they run on any device the ops run on). Each formula gets the
 * gradients of the node's outputs and writes the gradients of its inputs;
 * the attrs layouts are the ones documented at the top of each core
 * ops_<family>.c file.
 *
 * Formulas run with grad mode off. Inside a formula:
 *   K(expr)     evaluates a call returning a new tensor, keeps it for release
 *               at the end, jumps to the error path on NULL;
 *   IN(i)/OUT_(i) the saved input / output i (borrowed, version-checked);
 *   SET(i, expr) stores a new reference as input i's gradient;
 *   NEED(i)     whether input i wants a gradient;
 *   GRAD_SCOPE(g) SCOPE, with g the gradient of output 0 (return at once
 *               when none flows in: the inputs get none either);
 *   GRAD0_SCOPE(g) the same, also returning when input 0, the only one
 *               that can take a gradient, wants none. */
#include <math.h>

#include "autograd/autograd_impl.h"

typedef struct scope {
  em_tensor *t[24];
  int n;
} scope;

#define SCOPE \
  scope sc_ = {{0}, 0}; \
  (void)sc_
#define K(expr)                                 \
  ({                                            \
    em_tensor *k_ = (expr);                     \
    if (!k_) goto fail_;                        \
    assert(sc_.n < 24);                         \
    sc_.t[sc_.n++] = k_;                        \
    k_;                                         \
  })
#define IN(i)                                   \
  ({                                            \
    em_tensor *x_ = em__ag_saved_in(n, (i));    \
    if (!x_) goto fail_;                        \
    x_;                                         \
  })
#define OUT_(i)                                 \
  ({                                            \
    em_tensor *x_ = em__ag_saved_out(n, (i));   \
    if (!x_) goto fail_;                        \
    x_;                                         \
  })
#define SET(i, expr)                            \
  do {                                          \
    em_tensor *o_ = (expr);                     \
    if (!o_) goto fail_;                        \
    gi[i] = o_;                                 \
  } while (0)
#define NEED(i) (n->next[(i)].node != NULL)
#define DONE                                    \
  for (int k_ = 0; k_ < sc_.n; k_++) em_tensor_release(sc_.t[k_]); \
  return EM_OK;                                 \
  fail_:                                        \
  for (int k_ = 0; k_ < sc_.n; k_++) em_tensor_release(sc_.t[k_]); \
  return em_last_status() ? em_last_status() : EM_ERR_INTERNAL

/* Nothing is in scope yet, so returning needs no cleanup. */
#define GRAD_SCOPE(g)                           \
  SCOPE;                                        \
  em_tensor *g = go[0];                         \
  if (!g) return EM_OK
#define GRAD0_SCOPE(g)                          \
  GRAD_SCOPE(g);                                \
  if (!NEED(0)) return EM_OK

#define BW(name) static em_status bw_##name(em_ag_node *n, em_tensor *const *go, em_tensor **gi)

static em_scalar F(double v) { return em_scalar_float(v); }

/* ---- helpers ----------------------------------------------------------------------- */

em_tensor *em__ag_sum_to(em_tensor *g, int ndim, const int64_t *shape) {
  bool same = g->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = g->shape[i] == shape[i];
  if (same) return em_tensor_retain(g);
  int lead = g->ndim - ndim;
  if (lead < 0) return EM_FAIL(EM_ERR_INTERNAL, "sum_to: gradient has fewer dims than the input");
  int64_t dims[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < g->ndim; i++)
    if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) dims[nd++] = i;
  if (nd == 0) return em_tensor_reshape(g, ndim, shape);
  em_tensor *s = em_tensor_sum(g, nd, dims, true, EM_DTYPE_UNDEFINED);
  if (!s) return NULL;
  em_tensor *r = em_tensor_reshape(s, ndim, shape);
  em_tensor_release(s);
  return r;
}

em_tensor *em__ag_to_input(em_ag_node *n, int i, em_tensor *g) {
  const em_ag_tmeta *m = &n->in_meta[i];
  em_tensor *s = em__ag_sum_to(g, m->ndim, m->shape);
  if (!s || s->dtype == m->dtype || !em_dtype_is_float((em_dtype)m->dtype)) return s;
  em_tensor *c = em_tensor_to_dtype(s, (em_dtype)m->dtype);
  em_tensor_release(s);
  return c;
}
#define TO_IN(i, g) em__ag_to_input(n, (i), (g))

static em_tensor *zeros_of_input(em_ag_node *n, int i) {
  const em_ag_tmeta *m = &n->in_meta[i];
  em_tensor *z = em_tensor_empty_on(m->ndim, m->shape, (em_dtype)m->dtype, m->device);
  if (z && em_tensor_zero_(z)) {
    em_tensor_release(z);
    return NULL;
  }
  return z;
}

static em_tensor *mul_s(em_tensor *t, double v) { return em_tensor_mul_scalar(t, F(v)); }

/* t * v, or t itself (retained) for v == 1, sparing a pass. */
static em_tensor *scaled(em_tensor *t, double v) {
  return v == 1 ? em_tensor_retain(t) : mul_s(t, v);
}

/* 1 - t */
static em_tensor *em_tensor_rsub_one(em_tensor *t) {
  em_tensor *one = em_tensor_wrapped_scalar(em_scalar_int(1));
  if (!one) return NULL;
  em_tensor *r = em_tensor_sub(one, t);
  em_tensor_release(one);
  return r;
}

/* g reshaped so it broadcasts against the input of a reduction over
 * attrs dims (keepdim in i[0]). */
static em_tensor *unreduce(em_ag_node *n, em_tensor *g) {
  const em_ag_tmeta *m = &n->in_meta[0];
  bool keepdim = n->attrs.i[0];
  if (keepdim || m->ndim == 0) return em_tensor_retain(g);
  int64_t shape[EM_MAX_DIMS];
  bool reduced[EM_MAX_DIMS] = {0};
  if (n->attrs.nd == 0)
    for (int d = 0; d < m->ndim; d++) reduced[d] = true;
  for (int k = 0; k < n->attrs.nd; k++) reduced[n->attrs.d[k]] = true;
  for (int d = 0; d < m->ndim; d++) shape[d] = reduced[d] ? 1 : m->shape[d];
  return em_tensor_reshape(g, m->ndim, shape);
}

static int64_t reduced_count(em_ag_node *n) {
  const em_ag_tmeta *m = &n->in_meta[0];
  int64_t c = 1;
  if (m->ndim == 0) return 1;
  if (n->attrs.nd == 0)
    for (int d = 0; d < m->ndim; d++) c *= m->shape[d];
  for (int k = 0; k < n->attrs.nd; k++) c *= m->shape[n->attrs.d[k]];
  return c;
}

/* g of a reduction broadcast back to input 0's shape (a view). */
static em_tensor *unreduce_expand(em_ag_node *n, em_tensor *g) {
  em_tensor *u = unreduce(n, g);
  em_tensor *e = u ? em_tensor_expand(u, n->in_meta[0].ndim, n->in_meta[0].shape) : NULL;
  em_tensor_release(u);
  return e;
}

/* amax/amin and the inf-norm: g spread evenly over the places where v
 * attains its extreme y (both kept-dims shaped, like unreduce's). */
static em_tensor *spread_over_extremes(em_ag_node *n, em_tensor *v, em_tensor *y, em_tensor *g) {
  em_tensor *eq = em_tensor_eq(v, y);
  em_tensor *mask = eq ? em_tensor_to_dtype(eq, (em_dtype)v->dtype) : NULL;
  em_tensor *cnt =
      mask ? em_tensor_sum(mask, n->attrs.nd, n->attrs.d, true, EM_DTYPE_UNDEFINED) : NULL;
  em_tensor *share = cnt ? em_tensor_div(g, cnt) : NULL;
  em_tensor *r = share ? em_tensor_mul(mask, share) : NULL;
  em_tensor_release(eq), em_tensor_release(mask), em_tensor_release(cnt), em_tensor_release(share);
  return r;
}

/* 1 where cond, other elsewhere; the ones take x's shape and dtype. */
static em_tensor *one_where(em_tensor *cond, em_tensor *x, em_tensor *other) {
  em_tensor *ones = em_tensor_ones_like(x, EM_DTYPE_UNDEFINED);
  em_tensor *r = ones ? em_tensor_where(cond, ones, other) : NULL;
  em_tensor_release(ones);
  return r;
}

/* ---- copies and views ------------------------------------------------------------- */

/* also expand: summing the broadcast dims back is TO_IN's job */
BW(identity) {
  GRAD0_SCOPE(g);
  SET(0, TO_IN(0, g));
  DONE;
}

BW(fill) {
  SCOPE;
  if (NEED(0)) SET(0, zeros_of_input(n, 0));
  DONE;
}

BW(view) {
  GRAD0_SCOPE(g);
  SET(0, em_tensor_reshape(g, n->in_meta[0].ndim, n->in_meta[0].shape));
  DONE;
}

BW(permute) {
  GRAD0_SCOPE(g);
  int64_t inv[EM_MAX_DIMS];
  for (int k = 0; k < n->attrs.nd; k++) inv[n->attrs.d[k]] = k;
  SET(0, em_tensor_permute(g, n->attrs.nd, inv));
  DONE;
}

/* slice and select: g copied into the part of zeros the view took */
BW(slice) {
  GRAD0_SCOPE(g);
  int dim = (int)n->attrs.i[0];
  em_tensor *z = K(zeros_of_input(n, 0)), *v;
  if (n->op == EM_OP_SELECT) {
    v = K(em_tensor_select(z, dim, n->attrs.i[1]));
  } else {
    v = K(em_tensor_slice(z, dim, n->attrs.i[1], INT64_MAX, n->attrs.i[2]));
    v = K(em_tensor_narrow(v, dim, 0, g->shape[dim]));
  }
  if (em_tensor_copy_(v, g)) goto fail_;
  SET(0, em_tensor_retain(z));
  DONE;
}

/* as_strided: scatter-add each output element's gradient onto the storage
 * element it views (views may overlap, so accumulate one by one). */
BW(as_strided) {
  GRAD0_SCOPE(g);
  const em_ag_tmeta *m = &n->in_meta[0];
  if (!n->attrs.i[2]) {
    em__set_error(EM_ERR_NOTIMPL, "as_strided backward: the input must be contiguous");
    goto fail_;
  }
  em_tensor *z = K(em_tensor_zeros(m->ndim, m->shape, EM_FLOAT64));
  em_tensor *gc = K(em_tensor_contiguous(K(em_tensor_to_dtype(g, EM_FLOAT64))));
  double *zd = em_tensor_data(z);
  const double *gd = em_tensor_data(gc);
  int64_t base = n->attrs.i[0] - n->attrs.i[1], idx[EM_MAX_DIMS] = {0};
  for (int64_t e = 0; e < gc->numel; e++) {
    int64_t off = base;
    for (int d = 0; d < n->attrs.nd; d++) off += idx[d] * n->attrs.d2[d];
    if (off >= 0 && off < z->numel) zd[off] += gd[e];
    for (int d = n->attrs.nd - 1; d >= 0; d--) {
      if (++idx[d] < n->attrs.d[d]) break;
      idx[d] = 0;
    }
  }
  SET(0, em_tensor_to_dtype(z, (em_dtype)m->dtype));
  DONE;
}

/* ---- shape ops ---------------------------------------------------------------------- */

BW(cat) {
  GRAD_SCOPE(g);
  int dim = (int)n->attrs.i[0];
  int64_t start = 0;
  for (int i = 0; i < n->nin; i++) {
    const em_ag_tmeta *m = &n->in_meta[i];
    /* legacy empty 1-D inputs take no slice */
    bool skipped = m->ndim == 1 && m->shape[0] == 0 && g->ndim != 1;
    int64_t len = skipped ? 0 : m->shape[dim];
    if (NEED(i)) {
      if (skipped) SET(i, zeros_of_input(n, i));
      else SET(i, TO_IN(i, K(em_tensor_narrow(g, dim, start, len))));
    }
    start += len;
  }
  DONE;
}

BW(flip) {
  GRAD0_SCOPE(g);
  SET(0, em_tensor_flip(g, n->attrs.nd, n->attrs.d));
  DONE;
}

BW(repeat) {
  GRAD0_SCOPE(g);
  const em_ag_tmeta *m = &n->in_meta[0];
  int nr = n->attrs.nd, lead = nr - m->ndim;
  /* g: [r0*s0, r1*s1, ...] -> [r0, s0, r1, s1, ...], sum over the r dims */
  int64_t shape[2 * EM_MAX_DIMS], dims[EM_MAX_DIMS];
  int k = 0, nd = 0;
  for (int i = 0; i < nr; i++) {
    int64_t s = i < lead ? 1 : m->shape[i - lead];
    dims[nd++] = k;
    shape[k++] = n->attrs.d[i];
    shape[k++] = s;
  }
  if (k > EM_MAX_DIMS) { /* too many dims for one view: reduce dim by dim */
    em__set_error(EM_ERR_NOTIMPL, "repeat backward: more than %d dims", EM_MAX_DIMS / 2);
    goto fail_;
  }
  em_tensor *gc = K(em_tensor_contiguous(g));
  em_tensor *v = K(em_tensor_view(gc, k, shape));
  em_tensor *s = K(em_tensor_sum(v, nd, dims, false, EM_DTYPE_UNDEFINED));
  SET(0, em_tensor_reshape(s, m->ndim, m->shape));
  DONE;
}

/* PAD: d[j] / d2[j] are the pads before / after dim j (negative crops);
 * the gradient is the grad padded with the negated pads. */
BW(pad) {
  GRAD0_SCOPE(g);
  int64_t neg[2 * EM_MAX_DIMS];
  int np = 0;
  for (int j = n->attrs.nd - 1; j >= 0; j--) {
    neg[np++] = -n->attrs.d[j];
    neg[np++] = -n->attrs.d2[j];
  }
  SET(0, em_tensor_pad(g, np, neg, 0));
  DONE;
}

/* ---- unary ----------------------------------------------------------------------------- */

#define UNARY_BW(name, ...)                        \
  BW(name) {                                       \
    GRAD0_SCOPE(g);                                \
    __VA_ARGS__;                                   \
    DONE;                                          \
  }

UNARY_BW(neg, SET(0, em_tensor_neg(g)))
UNARY_BW(abs, SET(0, em_tensor_mul(g, K(em_tensor_sign(IN(0))))))
UNARY_BW(zero, SET(0, zeros_of_input(n, 0)))
UNARY_BW(exp, SET(0, em_tensor_mul(g, OUT_(0))))
UNARY_BW(exp2, SET(0, mul_s(K(em_tensor_mul(g, OUT_(0))), M_LN2)))
UNARY_BW(log, SET(0, em_tensor_div(g, IN(0))))
UNARY_BW(log2, SET(0, em_tensor_div(g, K(mul_s(IN(0), M_LN2)))))
UNARY_BW(log10, SET(0, em_tensor_div(g, K(mul_s(IN(0), M_LN10)))))
UNARY_BW(log1p, SET(0, em_tensor_div(g, K(em_tensor_add_scalar(IN(0), F(1))))))
UNARY_BW(expm1, SET(0, em_tensor_mul(g, K(em_tensor_add_scalar(OUT_(0), F(1))))))
UNARY_BW(sqrt, SET(0, em_tensor_div(g, K(mul_s(OUT_(0), 2)))))
UNARY_BW(rsqrt, SET(0, em_tensor_mul(g, K(mul_s(K(em_tensor_pow_scalar(OUT_(0), F(3))), -0.5)))))
UNARY_BW(reciprocal, SET(0, em_tensor_mul(g, K(em_tensor_neg(K(em_tensor_square(OUT_(0))))))))
UNARY_BW(square, SET(0, em_tensor_mul(g, K(mul_s(IN(0), 2)))))
UNARY_BW(sin, SET(0, em_tensor_mul(g, K(em_tensor_cos(IN(0))))))
UNARY_BW(cos, SET(0, em_tensor_mul(g, K(em_tensor_neg(K(em_tensor_sin(IN(0))))))))
UNARY_BW(tan, SET(0, em_tensor_mul(g, K(em_tensor_add_scalar(K(em_tensor_square(OUT_(0))), F(1))))))
/* asin: 1/sqrt(1-x^2); acos (also here): the negative; atan: 1/(1+x^2) */
UNARY_BW(asin, {
  em_tensor *r =
      K(em_tensor_mul(g, K(em_tensor_rsqrt(K(em_tensor_rsub_one(K(em_tensor_square(IN(0)))))))));
  SET(0, n->op == EM_OP_UNARY_acos ? em_tensor_neg(r) : em_tensor_retain(r));
})
UNARY_BW(atan, SET(0, em_tensor_div(g, K(em_tensor_add_scalar(K(em_tensor_square(IN(0))), F(1))))))
UNARY_BW(sinh, SET(0, em_tensor_mul(g, K(em_tensor_cosh(IN(0))))))
UNARY_BW(cosh, SET(0, em_tensor_mul(g, K(em_tensor_sinh(IN(0))))))
/* tanh: 1 - y^2; sigmoid: y (1 - y) */
UNARY_BW(tanh, SET(0, em_tensor_mul(g, K(em_tensor_rsub_one(K(em_tensor_square(OUT_(0))))))))
UNARY_BW(sigmoid, SET(0, em_tensor_mul(g, K(em_tensor_mul(OUT_(0), K(em_tensor_rsub_one(OUT_(0))))))))
/* erf: 2/sqrt(pi) exp(-x^2) */
UNARY_BW(erf, SET(0, em_tensor_mul(g, K(mul_s(K(em_tensor_exp(K(em_tensor_neg(K(em_tensor_square(IN(0))))))),
                                               M_2_SQRTPI)))))
/* relu: one fused pass (g where y > 0) for floats; integer relu has no
 * gradient to speak of but keeps the composed form. */
static em_tensor *relu_grad(em_tensor *g, em_tensor *y) {
  if (g->dtype == y->dtype && em_dtype_is_float((em_dtype)g->dtype)) {
    em_tensor *in[2] = {g, y};
    return em__elementwise(EM_OP_RELU_BACKWARD, (em_dtype)g->dtype, (em_dtype)g->dtype, 2, in, NULL,
                           NULL, EM_GRAIN_CHEAP);
  }
  em_tensor *m = em_tensor_gt_scalar(y, em_scalar_int(0));
  em_tensor *r = m ? em_tensor_mul(g, m) : NULL;
  em_tensor_release(m);
  return r;
}
UNARY_BW(relu, SET(0, relu_grad(g, OUT_(0))))
/* silu: s (1 + x (1 - s)) with s = sigmoid(x) */
UNARY_BW(silu, {
  em_tensor *x = IN(0);
  em_tensor *s = K(em_tensor_sigmoid(x));
  em_tensor *t = K(em_tensor_add_scalar(K(em_tensor_mul(x, K(em_tensor_rsub_one(s)))), F(1)));
  SET(0, em_tensor_mul(g, K(em_tensor_mul(s, t))));
})
UNARY_BW(frac, SET(0, em_tensor_retain(g)))
UNARY_BW(leaky_relu, {
  em_tensor *x = IN(0);
  em_tensor *pos = K(em_tensor_gt_scalar(x, em_scalar_int(0)));
  em_tensor *slope = K(em_tensor_full_like(x, F(n->attrs.f[0]), EM_DTYPE_UNDEFINED));
  SET(0, em_tensor_mul(g, K(one_where(pos, x, slope))));
})
/* gelu: Phi(x) + x phi(x) */
UNARY_BW(gelu, {
  em_tensor *x = IN(0);
  em_tensor *cdf = K(mul_s(K(em_tensor_add_scalar(K(em_tensor_erf(K(mul_s(x, M_SQRT1_2)))), F(1))), 0.5));
  em_tensor *pdf = K(mul_s(K(em_tensor_exp(K(mul_s(K(em_tensor_square(x)), -0.5)))), 0.5 * M_2_SQRTPI * M_SQRT1_2));
  SET(0, em_tensor_mul(g, K(em_tensor_add(cdf, K(em_tensor_mul(x, pdf))))));
})
/* gelu(tanh): 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2), t = tanh(k (x + c x^3)) */
UNARY_BW(gelu_tanh, {
  const double k = M_SQRT2 * M_2_SQRTPI * 0.5, c = 0.044715;
  em_tensor *x = IN(0);
  em_tensor *x2 = K(em_tensor_square(x));
  em_tensor *inner = K(mul_s(K(em_tensor_mul(x, K(em_tensor_add_scalar(K(mul_s(x2, c)), F(1))))), k));
  em_tensor *t = K(em_tensor_tanh(inner));
  em_tensor *left = K(mul_s(K(em_tensor_add_scalar(t, F(1))), 0.5));
  em_tensor *dinner = K(mul_s(K(em_tensor_add_scalar(K(mul_s(x2, 3 * c)), F(1))), k));
  em_tensor *right = K(mul_s(K(em_tensor_mul(K(em_tensor_mul(x, K(em_tensor_rsub_one(K(em_tensor_square(t)))))), dinner)), 0.5));
  SET(0, em_tensor_mul(g, K(em_tensor_add(left, right))));
})
/* softplus: sigmoid(beta x) below the threshold, 1 above */
UNARY_BW(softplus, {
  em_tensor *x = IN(0);
  double beta = n->attrs.f[0], thr = n->attrs.f[1];
  em_tensor *bx = K(mul_s(x, beta));
  em_tensor *lin = K(em_tensor_gt_scalar(bx, F(thr)));
  SET(0, em_tensor_mul(g, K(one_where(lin, x, K(em_tensor_sigmoid(bx))))));
})
/* elu: 1 for x > 0, y + alpha otherwise */
UNARY_BW(elu, {
  em_tensor *x = IN(0);
  em_tensor *pos = K(em_tensor_gt_scalar(x, em_scalar_int(0)));
  em_tensor *neg = K(em_tensor_add_scalar(OUT_(0), F(n->attrs.f[0])));
  SET(0, em_tensor_mul(g, K(one_where(pos, x, neg))));
})
UNARY_BW(hardtanh, {
  em_tensor *x = IN(0);
  em_tensor *in_range = K(em_tensor_logical_and(K(em_tensor_gt_scalar(x, F(n->attrs.f[0]))),
                                                K(em_tensor_lt_scalar(x, F(n->attrs.f[1])))));
  SET(0, em_tensor_mul(g, in_range));
})
/* clamp: the gradient passes where min <= x <= max */
UNARY_BW(clamp, {
  em_tensor *x = IN(0);
  em_tensor *mask = K(em_tensor_ones_like(x, EM_BOOL));
  if (n->attrs.i[0]) mask = K(em_tensor_logical_and(mask, K(em_tensor_ge_scalar(x, F(n->attrs.f[0])))));
  if (n->attrs.i[1]) mask = K(em_tensor_logical_and(mask, K(em_tensor_le_scalar(x, F(n->attrs.f[1])))));
  SET(0, em_tensor_mul(g, mask));
})
/* x ** s: s x^(s-1) (0 when s == 0) */
UNARY_BW(pow_scalar, {
  em_tensor *x = IN(0);
  double s = em_scalar_to_double(n->attrs.s);
  if (s == 0) SET(0, zeros_of_input(n, 0));
  else SET(0, em_tensor_mul(g, K(mul_s(K(em_tensor_pow_scalar(x, F(s - 1))), s))));
})
/* s ** x: y ln s */
UNARY_BW(rpow_scalar, SET(0, em_tensor_mul(g, K(mul_s(OUT_(0), log(em_scalar_to_double(n->attrs.s)))))))

/* ---- binary ------------------------------------------------------------------------------ */

BW(add) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, TO_IN(0, g));
  if (NEED(1)) SET(1, TO_IN(1, K(scaled(g, em_scalar_to_double(n->attrs.s)))));
  DONE;
}

BW(sub) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, TO_IN(0, g));
  if (NEED(1)) SET(1, TO_IN(1, K(mul_s(g, -em_scalar_to_double(n->attrs.s)))));
  DONE;
}

/* also dot */
BW(mul) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_mul(g, IN(1)))));
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_mul(g, IN(0)))));
  DONE;
}

BW(div) {
  GRAD_SCOPE(g);
  em_tensor *b = IN(1);
  if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_div(g, b))));
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_neg(K(em_tensor_div(K(em_tensor_mul(g, OUT_(0))), b))))));
  DONE;
}

BW(zeros2) {
  SCOPE;
  for (int i = 0; i < n->nin; i++)
    if (NEED(i)) SET(i, zeros_of_input(n, i));
  DONE;
}

/* remainder: a - b floor(a/b); fmod (also here): a - b trunc(a/b) */
BW(remainder) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, TO_IN(0, g));
  if (NEED(1)) {
    em_tensor *q = K(em_tensor_div(IN(0), IN(1)));
    q = K(n->op == EM_OP_BINARY_remainder ? em_tensor_floor(q) : em_tensor_trunc(q));
    SET(1, TO_IN(1, K(em_tensor_neg(K(em_tensor_mul(g, q))))));
  }
  DONE;
}

/* pow(a, b): b a^(b-1), and y ln a (0 where a == 0 and b >= 0) */
BW(pow) {
  GRAD_SCOPE(g);
  em_tensor *a = IN(0), *b = IN(1);
  if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_mul(g, K(em_tensor_mul(b, K(em_tensor_pow(a, K(em_tensor_sub_scalar(b, F(1)))))))))));
  if (NEED(1)) {
    em_tensor *t = K(em_tensor_mul(OUT_(0), K(em_tensor_log(a))));
    em_tensor *mask = K(em_tensor_logical_and(K(em_tensor_eq_scalar(a, em_scalar_int(0))),
                                              K(em_tensor_ge_scalar(b, em_scalar_int(0)))));
    t = K(em_tensor_masked_fill(t, mask, em_scalar_int(0)));
    SET(1, TO_IN(1, K(em_tensor_mul(g, t))));
  }
  DONE;
}

/* maximum and minimum (also here): the gradient goes to the winner, split
 * in half on ties */
BW(maximum) {
  GRAD_SCOPE(g);
  bool is_max = n->op == EM_OP_BINARY_maximum;
  em_tensor *a = IN(0), *b = IN(1);
  em_tensor *half = K(mul_s(g, 0.5));
  em_tensor *tie = K(em_tensor_eq(a, b));
  em_tensor *zero = K(em_tensor_zeros_like(g, EM_DTYPE_UNDEFINED));
  em_tensor *a_wins = K(is_max ? em_tensor_gt(a, b) : em_tensor_lt(a, b));
  em_tensor *b_wins = K(is_max ? em_tensor_lt(a, b) : em_tensor_gt(a, b));
  if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_where(tie, half, K(em_tensor_where(a_wins, g, zero))))));
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_where(tie, half, K(em_tensor_where(b_wins, g, zero))))));
  DONE;
}

BW(atan2) {
  GRAD_SCOPE(g);
  em_tensor *a = IN(0), *b = IN(1);
  em_tensor *den = K(em_tensor_add(K(em_tensor_square(a)), K(em_tensor_square(b))));
  em_tensor *gd = K(em_tensor_div(g, den));
  if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_mul(gd, b))));
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_neg(K(em_tensor_mul(gd, a))))));
  DONE;
}

/* ---- ternary -------------------------------------------------------------------------------- */

BW(where) {
  GRAD_SCOPE(g);
  em_tensor *c = IN(0);
  em_tensor *zero = K(em_tensor_zeros_like(g, EM_DTYPE_UNDEFINED));
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_where(c, g, zero))));
  if (NEED(2)) SET(2, TO_IN(2, K(em_tensor_where(c, zero, g))));
  DONE;
}

/* lerp(a, b, w) = a + w (b - a); the weight is input 2 unless i[0] (then
 * the scalar f[0]) */
BW(lerp) {
  GRAD_SCOPE(g);
  if (n->attrs.i[0]) {
    double w = n->attrs.f[0];
    if (NEED(0)) SET(0, TO_IN(0, K(mul_s(g, 1 - w))));
    if (NEED(1)) SET(1, TO_IN(1, K(mul_s(g, w))));
  } else {
    em_tensor *w = IN(2);
    if (NEED(0)) SET(0, TO_IN(0, K(em_tensor_mul(g, K(em_tensor_rsub_one(w))))));
    if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_mul(g, w))));
    if (NEED(2)) SET(2, TO_IN(2, K(em_tensor_mul(g, K(em_tensor_sub(IN(1), IN(0)))))));
  }
  DONE;
}

BW(addcmul) {
  GRAD_SCOPE(g);
  double v = em_scalar_to_double(n->attrs.s);
  if (NEED(0)) SET(0, TO_IN(0, g));
  if (NEED(1)) SET(1, TO_IN(1, K(mul_s(K(em_tensor_mul(g, IN(2))), v))));
  if (NEED(2)) SET(2, TO_IN(2, K(mul_s(K(em_tensor_mul(g, IN(1))), v))));
  DONE;
}

BW(addcdiv) {
  GRAD_SCOPE(g);
  double v = em_scalar_to_double(n->attrs.s);
  em_tensor *t2 = IN(2);
  if (NEED(0)) SET(0, TO_IN(0, g));
  if (NEED(1)) SET(1, TO_IN(1, K(mul_s(K(em_tensor_div(g, t2)), v))));
  if (NEED(2))
    SET(2, TO_IN(2, K(mul_s(K(em_tensor_div(K(em_tensor_mul(g, IN(1))), K(em_tensor_square(t2)))), -v))));
  DONE;
}

/* ---- reductions ------------------------------------------------------------------------------- */

/* sum, and mean (also here): g spread over the reduced elements */
BW(sum) {
  GRAD0_SCOPE(g);
  em_tensor *e = K(unreduce_expand(n, g));
  if (n->op == EM_OP_MEAN) e = K(mul_s(e, 1.0 / (double)reduced_count(n)));
  SET(0, TO_IN(0, e));
  DONE;
}

/* amax and amin (also here): spread evenly over the elements that attain
 * the extreme */
BW(amax) {
  GRAD0_SCOPE(g);
  em_tensor *x = IN(0);
  em_tensor *y = K(unreduce(n, OUT_(0)));
  SET(0, spread_over_extremes(n, x, y, K(unreduce(n, g))));
  DONE;
}

/* var: 2 (x - mean) / (N - correction); std (also here): (x - mean) /
 * ((N - c) std) */
BW(var) {
  GRAD0_SCOPE(g);
  em_tensor *x = IN(0);
  double dof = (double)reduced_count(n) - n->attrs.f[0];
  em_tensor *mean = K(em_tensor_mean(x, n->attrs.nd, n->attrs.d, true, EM_DTYPE_UNDEFINED));
  em_tensor *xc = K(em_tensor_sub(x, mean));
  g = K(unreduce(n, g));
  if (n->op == EM_OP_STD) {
    em_tensor *s = K(unreduce(n, OUT_(0)));
    SET(0, em_tensor_mul(xc, K(mul_s(K(em_tensor_div(g, s)), 1.0 / dof))));
  } else {
    SET(0, em_tensor_mul(xc, K(mul_s(g, 2.0 / dof))));
  }
  DONE;
}

BW(logsumexp) {
  GRAD0_SCOPE(g);
  em_tensor *x = IN(0);
  em_tensor *y = K(unreduce(n, OUT_(0)));
  SET(0, em_tensor_mul(K(unreduce(n, g)), K(em_tensor_exp(K(em_tensor_sub(x, y))))));
  DONE;
}

/* norm: p = 2: x / y; p = 1: sign(x); inf: like amax of |x|; other p:
 * x |x|^(p-2) / y^(p-1). Zero norms give zero gradients. */
BW(norm) {
  GRAD0_SCOPE(g);
  em_tensor *x = IN(0);
  double p = n->attrs.f[0];
  g = K(unreduce(n, g));
  em_tensor *y = K(unreduce(n, OUT_(0)));
  em_tensor *r;
  if (p == 1) {
    r = K(em_tensor_mul(g, K(em_tensor_sign(x))));
  } else if (isinf(p)) {
    em_tensor *spread = K(spread_over_extremes(n, K(em_tensor_abs(x)), y, g));
    r = K(em_tensor_mul(K(em_tensor_sign(x)), spread));
  } else {
    em_tensor *num = p == 2 ? x : K(em_tensor_mul(x, K(em_tensor_pow_scalar(K(em_tensor_abs(x)), F(p - 2)))));
    em_tensor *den = p == 2 ? y : K(em_tensor_pow_scalar(y, F(p - 1)));
    em_tensor *q = K(em_tensor_div(K(em_tensor_mul(g, num)), den));
    em_tensor *zero = K(em_tensor_zeros_like(q, EM_DTYPE_UNDEFINED));
    em_tensor *ymask = K(em_tensor_eq_scalar(K(em_tensor_expand_as(y, q)), em_scalar_int(0)));
    r = K(em_tensor_where(ymask, zero, q));
  }
  SET(0, em_tensor_retain(r));
  DONE;
}

/* max_dim/min_dim: values' gradient scattered back to the indices.
 * attrs: i[0] keepdim, i[1] dim. */
BW(max_dim) {
  GRAD0_SCOPE(g);
  int dim = (int)n->attrs.i[1];
  em_tensor *idx = OUT_(1);
  if (!n->attrs.i[0] && n->in_meta[0].ndim > 0) {
    idx = K(em_tensor_unsqueeze(idx, dim));
    g = K(em_tensor_unsqueeze(g, dim));
  }
  em_tensor *z = K(zeros_of_input(n, 0));
  SET(0, em_tensor_scatter(z, dim, idx, g));
  DONE;
}

/* softmax: y (g - sum(g y)); log_softmax: g - exp(y) sum(g). attrs i[1] = dim. */
BW(softmax) {
  GRAD0_SCOPE(g);
  int64_t dim = n->attrs.i[1];
  em_tensor *y = OUT_(0);
  em_tensor *s = K(em_tensor_sum(K(em_tensor_mul(g, y)), 1, &dim, true, EM_DTYPE_UNDEFINED));
  SET(0, TO_IN(0, K(em_tensor_mul(y, K(em_tensor_sub(g, s))))));
  DONE;
}

BW(log_softmax) {
  GRAD0_SCOPE(g);
  int64_t dim = n->attrs.i[1];
  em_tensor *y = OUT_(0);
  em_tensor *s = K(em_tensor_sum(g, 1, &dim, true, EM_DTYPE_UNDEFINED));
  SET(0, TO_IN(0, K(em_tensor_sub(g, K(em_tensor_mul(K(em_tensor_exp(y)), s))))));
  DONE;
}

/* cumsum: the reversed cumulative sum of g. attrs i[1] = dim. */
BW(cumsum) {
  GRAD0_SCOPE(g);
  int64_t dim = n->attrs.i[1];
  em_tensor *f = K(em_tensor_flip(g, 1, &dim));
  em_tensor *c = K(em_tensor_cumsum(f, (int)dim, EM_DTYPE_UNDEFINED));
  SET(0, TO_IN(0, K(em_tensor_flip(c, 1, &dim))));
  DONE;
}

/* prod and cumprod (also here): d/dx_k of a product is the product of
 * the other factors. Computed exactly (zeros included) in float64 on the
 * host: for each reduced group, prefix and suffix products. */
BW(prod) {
  GRAD0_SCOPE(g);
  bool cumulative = n->op == EM_OP_CUMPROD;
  em_tensor *x = IN(0);
  const em_ag_tmeta *m = &n->in_meta[0];
  /* move the reduced dims last: [outer..., group] */
  int64_t perm[EM_MAX_DIMS];
  bool reduced[EM_MAX_DIMS] = {0};
  int np = 0;
  if (cumulative) {
    reduced[m->ndim ? n->attrs.i[1] : 0] = true;
  } else if (n->attrs.nd == 0) {
    for (int d = 0; d < m->ndim; d++) reduced[d] = true;
  } else {
    for (int k = 0; k < n->attrs.nd; k++) reduced[n->attrs.d[k]] = true;
  }
  int64_t outer = 1, group = 1;
  for (int d = 0; d < m->ndim; d++)
    if (!reduced[d]) {
      perm[np++] = d;
      outer *= m->shape[d];
    }
  for (int d = 0; d < m->ndim; d++)
    if (reduced[d]) {
      perm[np++] = d;
      group *= m->shape[d];
    }
  if (!cumulative) g = K(unreduce_expand(n, g));
  em_tensor *xp = K(em_tensor_contiguous(K(em_tensor_to_dtype(K(em_tensor_permute(x, np, perm)), EM_FLOAT64))));
  em_tensor *gp = K(em_tensor_contiguous(K(em_tensor_to_dtype(K(em_tensor_permute(g, np, perm)), EM_FLOAT64))));
  em_tensor *rp = K(em_tensor_empty(xp->ndim, xp->shape, EM_FLOAT64));
  const double *xd = em_tensor_data(xp), *gd = em_tensor_data(gp);
  double *rd = em_tensor_data(rp);
  for (int64_t o = 0; rd && o < outer; o++) {
    const double *xs = xd + o * group, *gs = gd + o * group;
    double *rs = rd + o * group;
    for (int64_t k = 0; k < group; k++) {
      double acc = 0;
      if (!cumulative) {
        double prod = 1; /* all factors but k */
        for (int64_t j = 0; j < group; j++)
          if (j != k) prod *= xs[j];
        acc = gs[k] * prod;
      } else {
        /* y_j = prod_{i<=j} x_i: dy_j/dx_k = prod_{i<=j, i!=k} x_i for j >= k */
        double before = 1;
        for (int64_t i = 0; i < k; i++) before *= xs[i];
        double after = 1;
        for (int64_t j = k; j < group; j++) {
          if (j > k) after *= xs[j];
          acc += gs[j] * before * after;
        }
      }
      rs[k] = acc;
    }
  }
  int64_t inv[EM_MAX_DIMS];
  for (int k = 0; k < np; k++) inv[perm[k]] = k;
  em_tensor *back = K(em_tensor_permute(rp, np, inv));
  SET(0, em_tensor_to_dtype(back, (em_dtype)m->dtype));
  /* to_dtype returns back itself for float64: it is retained, fine */
  DONE;
}

/* ---- linear algebra ------------------------------------------------------------------------------ */

/* A matrix stored column-major (a transposed view of a contiguous one). */
static bool col_major(const em_tensor *t) {
  return t->ndim == 2 && t->strides[0] == 1 && (t->shape[1] <= 1 || t->strides[1] == t->shape[0]) &&
         t->shape[0] > 1;
}

/* x @ y as a new reference, computed so the result has the layout of
 * like: for a column-major like, (y^T @ x^T)^T. Gradients then arrive in
 * their input's own layout (a Linear weight used as w^T gets a contiguous
 * gradient), as PyTorch's mm backward does, sparing a transposing copy. */
static em_tensor *mm_as(em_tensor *x, em_tensor *y, const em_tensor *like) {
  if (!col_major(like)) return em_tensor_mm(x, y);
  em_tensor *yt = em_tensor_t(y), *xt = em_tensor_t(x);
  em_tensor *r = yt && xt ? em_tensor_mm(yt, xt) : NULL;
  em_tensor *out = r ? em_tensor_t(r) : NULL;
  em_tensor_release(yt), em_tensor_release(xt), em_tensor_release(r);
  return out;
}

/* mm and bmm, addmm and baddbmm (all here): x @ y gives g y^T and x^T g
 * (per matrix for the batched ones); addmm(input, x, y) scales them by
 * alpha f[1] and gives input beta f[0] g. */
BW(mm) {
  GRAD_SCOPE(g);
  bool batched = n->op == EM_OP_BMM || n->op == EM_OP_BADDBMM;
  int ix = 0;
  if (n->op == EM_OP_ADDMM || n->op == EM_OP_BADDBMM) {
    if (NEED(0)) SET(0, TO_IN(0, K(scaled(g, n->attrs.f[0]))));
    g = K(scaled(g, n->attrs.f[1]));
    ix = 1;
  }
  int iy = ix + 1;
  if (batched) {
    if (NEED(ix)) SET(ix, em_tensor_bmm(g, K(em_tensor_transpose(IN(iy), 1, 2))));
    if (NEED(iy)) SET(iy, em_tensor_bmm(K(em_tensor_transpose(IN(ix), 1, 2)), g));
  } else {
    em_tensor *x = IN(ix), *y = IN(iy); /* both, for mm_as's layout */
    if (NEED(ix)) SET(ix, mm_as(g, K(em_tensor_t(y)), x));
    if (NEED(iy)) SET(iy, mm_as(K(em_tensor_t(x)), g, y));
  }
  DONE;
}

BW(mv) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, em_tensor_outer(g, IN(1)));
  if (NEED(1)) SET(1, em_tensor_mv(K(em_tensor_t(IN(0))), g));
  DONE;
}

/* ---- indexing --------------------------------------------------------------------------------
 * Layouts from core/ops_index.c: dims in i[0]; index tensors are inputs. */

/* index_select and gather: g added back to the places it was read from */
BW(index_select) {
  GRAD0_SCOPE(g);
  int dim = (int)n->attrs.i[0];
  em_tensor *z = K(zeros_of_input(n, 0));
  em_status st = n->op == EM_OP_GATHER ? em_tensor_scatter_add_(z, dim, IN(1), g)
                                       : em_tensor_index_add_(z, dim, IN(1), g, em_scalar_int(1));
  if (st) goto fail_;
  SET(0, em_tensor_retain(z));
  DONE;
}

/* scatter(t, index, src), scatter_value(t, index) and scatter_add (all
 * here): src gets the gradient gathered back; t keeps it all with
 * scatter_add, none at the overwritten places otherwise. */
BW(scatter) {
  GRAD_SCOPE(g);
  int dim = (int)n->attrs.i[0];
  if (NEED(0))
    SET(0, n->op == EM_OP_SCATTER_ADD ? em_tensor_retain(g)
                                      : em_tensor_scatter_value(g, dim, IN(1), em_scalar_int(0)));
  if (n->nin > 2 && NEED(2)) SET(2, em_tensor_gather(g, dim, IN(1)));
  DONE;
}

BW(index_add) {
  GRAD_SCOPE(g);
  if (NEED(0)) SET(0, em_tensor_retain(g));
  if (NEED(2)) {
    em_tensor *sel = K(em_tensor_index_select(g, (int)n->attrs.i[0], IN(1)));
    sel = K(scaled(sel, em_scalar_to_double(n->attrs.s)));
    SET(2, em_tensor_reshape(sel, n->in_meta[2].ndim, n->in_meta[2].shape));
  }
  DONE;
}

BW(masked_fill) {
  GRAD0_SCOPE(g);
  SET(0, TO_IN(0, K(em_tensor_masked_fill(g, IN(1), em_scalar_int(0)))));
  DONE;
}

/* masked_select: the selected gradient values go back to the selected
 * places of the broadcast shape, summed to t's shape. */
BW(masked_select) {
  GRAD0_SCOPE(g);
  em_tensor *mask = IN(1);
  int nd;
  int64_t shape[EM_MAX_DIMS];
  const int ndims[2] = {n->in_meta[0].ndim, mask->ndim};
  const int64_t *shapes[2] = {n->in_meta[0].shape, mask->shape};
  if (em_broadcast_shapes(2, ndims, shapes, &nd, shape)) goto fail_;
  em_tensor *z = K(em_tensor_zeros(nd, shape, (em_dtype)g->dtype));
  em_tensor *m = K(em_tensor_expand(mask, nd, shape));
  if (em_tensor_index_put_(z, 1, &m, g, true)) goto fail_;
  SET(0, TO_IN(0, z));
  DONE;
}

/* The ni index tensors of index / index_put, saved from input first on;
 * NULL for the None slots (never saved). */
static em_status saved_indices(em_ag_node *n, int first, int ni, em_tensor **idx) {
  for (int k = 0; k < ni; k++) {
    idx[k] = NULL;
    if (!n->released && !n->saved[first + k].t) continue;
    idx[k] = em__ag_saved_in(n, first + k);
    if (!idx[k]) return em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  }
  return EM_OK;
}

/* index(t, i0, i1, ...): the gradient accumulates back through the same
 * indices (duplicates add up). */
BW(index) {
  GRAD0_SCOPE(g);
  int ni = (int)n->attrs.i[0];
  em_tensor *idx[EM_MAX_DIMS];
  if (saved_indices(n, 1, ni, idx)) goto fail_;
  em_tensor *z = K(zeros_of_input(n, 0));
  if (em_tensor_index_put_(z, ni, idx, g, true)) goto fail_;
  SET(0, em_tensor_retain(z));
  DONE;
}

/* index_put(t, values, i0, ...): t keeps the gradient where it was not
 * overwritten (everywhere with accumulate); values get the indexed
 * gradient summed to their shape. */
BW(index_put) {
  GRAD_SCOPE(g);
  int ni = (int)n->attrs.i[0];
  em_tensor *idx[EM_MAX_DIMS];
  if (saved_indices(n, 2, ni, idx)) goto fail_;
  if (NEED(0)) {
    if (n->attrs.i[1]) {
      SET(0, em_tensor_retain(g));
    } else {
      em_tensor *c = K(em_tensor_clone(g));
      em_tensor *zero = K(em_tensor_zeros(0, NULL, (em_dtype)g->dtype));
      if (em_tensor_index_put_(c, ni, idx, zero, false)) goto fail_;
      SET(0, em_tensor_retain(c));
    }
  }
  if (NEED(1)) SET(1, TO_IN(1, K(em_tensor_index(g, ni, idx))));
  DONE;
}

/* ---- the table --------------------------------------------------------------------------------------- */

static em_ag_formula formulas[EM_OP_COUNT];

static void set_f(em_op op, em_ag_backward_fn fn, uint32_t save_in, uint32_t save_out) {
  formulas[op] = (em_ag_formula){fn, save_in, save_out};
}

#define B(i) (1u << (i))

static void init_formulas(void) {
  set_f(EM_OP_CLONE, bw_identity, 0, 0);
  set_f(EM_OP_TO_DTYPE, bw_identity, 0, 0);
  set_f(EM_OP_TO_DEVICE, bw_identity, 0, 0); /* validate_grad moves it back */
  set_f(EM_OP_FILL, bw_fill, 0, 0);
  set_f(EM_OP_VIEW, bw_view, 0, 0);
  set_f(EM_OP_PERMUTE, bw_permute, 0, 0);
  set_f(EM_OP_SLICE, bw_slice, 0, 0);
  set_f(EM_OP_SELECT, bw_slice, 0, 0);
  set_f(EM_OP_EXPAND, bw_identity, 0, 0);
  set_f(EM_OP_AS_STRIDED, bw_as_strided, 0, 0);
  set_f(EM_OP_CAT, bw_cat, 0, 0);
  set_f(EM_OP_FLIP, bw_flip, 0, 0);
  set_f(EM_OP_REPEAT, bw_repeat, 0, 0);
  set_f(EM_OP_PAD, bw_pad, 0, 0);

  set_f(EM_OP_UNARY_neg, bw_neg, 0, 0);
  set_f(EM_OP_UNARY_abs, bw_abs, B(0), 0);
  set_f(EM_OP_UNARY_sign, bw_zero, 0, 0);
  set_f(EM_OP_UNARY_exp, bw_exp, 0, B(0));
  set_f(EM_OP_UNARY_exp2, bw_exp2, 0, B(0));
  set_f(EM_OP_UNARY_log, bw_log, B(0), 0);
  set_f(EM_OP_UNARY_log2, bw_log2, B(0), 0);
  set_f(EM_OP_UNARY_log10, bw_log10, B(0), 0);
  set_f(EM_OP_UNARY_log1p, bw_log1p, B(0), 0);
  set_f(EM_OP_UNARY_expm1, bw_expm1, 0, B(0));
  set_f(EM_OP_UNARY_sqrt, bw_sqrt, 0, B(0));
  set_f(EM_OP_UNARY_rsqrt, bw_rsqrt, 0, B(0));
  set_f(EM_OP_UNARY_reciprocal, bw_reciprocal, 0, B(0));
  set_f(EM_OP_UNARY_square, bw_square, B(0), 0);
  set_f(EM_OP_UNARY_sin, bw_sin, B(0), 0);
  set_f(EM_OP_UNARY_cos, bw_cos, B(0), 0);
  set_f(EM_OP_UNARY_tan, bw_tan, 0, B(0));
  set_f(EM_OP_UNARY_asin, bw_asin, B(0), 0);
  set_f(EM_OP_UNARY_acos, bw_asin, B(0), 0);
  set_f(EM_OP_UNARY_atan, bw_atan, B(0), 0);
  set_f(EM_OP_UNARY_sinh, bw_sinh, B(0), 0);
  set_f(EM_OP_UNARY_cosh, bw_cosh, B(0), 0);
  set_f(EM_OP_UNARY_tanh, bw_tanh, 0, B(0));
  set_f(EM_OP_UNARY_sigmoid, bw_sigmoid, 0, B(0));
  set_f(EM_OP_UNARY_erf, bw_erf, B(0), 0);
  set_f(EM_OP_UNARY_relu, bw_relu, 0, B(0));
  set_f(EM_OP_UNARY_silu, bw_silu, B(0), 0);
  set_f(EM_OP_UNARY_floor, bw_zero, 0, 0);
  set_f(EM_OP_UNARY_ceil, bw_zero, 0, 0);
  set_f(EM_OP_UNARY_round, bw_zero, 0, 0);
  set_f(EM_OP_UNARY_trunc, bw_zero, 0, 0);
  set_f(EM_OP_UNARY_frac, bw_frac, 0, 0);
  set_f(EM_OP_LEAKY_RELU, bw_leaky_relu, B(0), 0);
  set_f(EM_OP_GELU, bw_gelu, B(0), 0);
  set_f(EM_OP_GELU_TANH, bw_gelu_tanh, B(0), 0);
  set_f(EM_OP_SOFTPLUS, bw_softplus, B(0), 0);
  set_f(EM_OP_ELU, bw_elu, B(0), B(0));
  set_f(EM_OP_HARDTANH, bw_hardtanh, B(0), 0);
  set_f(EM_OP_CLAMP, bw_clamp, B(0), 0);
  set_f(EM_OP_POW_SCALAR, bw_pow_scalar, B(0), 0);
  set_f(EM_OP_RPOW_SCALAR, bw_rpow_scalar, 0, B(0));

  set_f(EM_OP_BINARY_add, bw_add, 0, 0);
  set_f(EM_OP_BINARY_sub, bw_sub, 0, 0);
  set_f(EM_OP_BINARY_mul, bw_mul, B(0) | B(1), 0);
  set_f(EM_OP_BINARY_div, bw_div, B(1), B(0));
  set_f(EM_OP_BINARY_floor_divide, bw_zeros2, 0, 0);
  set_f(EM_OP_BINARY_trunc_divide, bw_zeros2, 0, 0);
  set_f(EM_OP_BINARY_remainder, bw_remainder, B(0) | B(1), 0);
  set_f(EM_OP_BINARY_fmod, bw_remainder, B(0) | B(1), 0);
  set_f(EM_OP_BINARY_pow, bw_pow, B(0) | B(1), B(0));
  set_f(EM_OP_BINARY_maximum, bw_maximum, B(0) | B(1), 0);
  set_f(EM_OP_BINARY_minimum, bw_maximum, B(0) | B(1), 0);
  set_f(EM_OP_BINARY_atan2, bw_atan2, B(0) | B(1), 0);

  set_f(EM_OP_WHERE, bw_where, B(0), 0);
  set_f(EM_OP_LERP, bw_lerp, B(0) | B(1) | B(2), 0);
  set_f(EM_OP_ADDCMUL, bw_addcmul, B(1) | B(2), 0);
  set_f(EM_OP_ADDCDIV, bw_addcdiv, B(1) | B(2), 0);

  set_f(EM_OP_SUM, bw_sum, 0, 0);
  set_f(EM_OP_MEAN, bw_sum, 0, 0);
  set_f(EM_OP_PROD, bw_prod, B(0), 0);
  set_f(EM_OP_AMAX, bw_amax, B(0), B(0));
  set_f(EM_OP_AMIN, bw_amax, B(0), B(0));
  set_f(EM_OP_VAR, bw_var, B(0), 0);
  set_f(EM_OP_STD, bw_var, B(0), B(0));
  set_f(EM_OP_LOGSUMEXP, bw_logsumexp, B(0), B(0));
  set_f(EM_OP_NORM, bw_norm, B(0), B(0));
  set_f(EM_OP_MAX_DIM, bw_max_dim, 0, B(1));
  set_f(EM_OP_MIN_DIM, bw_max_dim, 0, B(1));
  set_f(EM_OP_SOFTMAX, bw_softmax, 0, B(0));
  set_f(EM_OP_LOG_SOFTMAX, bw_log_softmax, 0, B(0));
  set_f(EM_OP_CUMSUM, bw_cumsum, 0, 0);
  set_f(EM_OP_CUMPROD, bw_prod, B(0), 0);

  set_f(EM_OP_BERNOULLI_P, bw_zero, 0, 0);

  set_f(EM_OP_INDEX_SELECT, bw_index_select, B(1), 0);
  set_f(EM_OP_GATHER, bw_index_select, B(1), 0);
  set_f(EM_OP_SCATTER, bw_scatter, B(1), 0);
  set_f(EM_OP_SCATTER_VALUE, bw_scatter, B(1), 0);
  set_f(EM_OP_SCATTER_ADD, bw_scatter, B(1), 0);
  set_f(EM_OP_INDEX_ADD, bw_index_add, B(1), 0);
  set_f(EM_OP_MASKED_FILL, bw_masked_fill, B(1), 0);
  set_f(EM_OP_MASKED_SELECT, bw_masked_select, B(1), 0);
  set_f(EM_OP_INDEX, bw_index, ~B(0), 0);
  set_f(EM_OP_INDEX_PUT, bw_index_put, ~(B(0) | B(1)), 0);

  set_f(EM_OP_MM, bw_mm, B(0) | B(1), 0);
  set_f(EM_OP_BMM, bw_mm, B(0) | B(1), 0);
  set_f(EM_OP_MV, bw_mv, B(0) | B(1), 0);
  set_f(EM_OP_DOT, bw_mul, B(0) | B(1), 0);
  set_f(EM_OP_ADDMM, bw_mm, B(1) | B(2), 0);
  set_f(EM_OP_BADDBMM, bw_mm, B(1) | B(2), 0);
}

#include <pthread.h>
static pthread_once_t once = PTHREAD_ONCE_INIT;

const em_ag_formula *em__ag_formula(em_op op) {
  pthread_once(&once, init_formulas);
  if (op < 0 || op >= EM_OP_COUNT || !formulas[op].backward) return NULL;
  return &formulas[op];
}
