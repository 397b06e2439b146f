/* Losses: torch.nn.functional's cross_entropy, nll_loss, mse_loss, l1_loss,
 * smooth_l1_loss, binary_cross_entropy(_with_logits) and kl_div, each with
 * reduction none / mean / sum.
 *
 * Most losses are compositions of core ops, so autograd differentiates
 * them with respect to input and target. Two are custom functions:
 *   - nll_loss (and the class-index forms of cross_entropy, after
 *     log_softmax): a direct loop over the targets (gather style; O(N*S)
 *     plus O(N*C*S) with label smoothing), with PyTorch's ignore_index,
 *     class weights and label-smoothing normalisations folded in, and a
 *     backward that scatters -w[t] * grad into the target class. This is
 *     the loss of every classification training step, so it avoids the
 *     dozen small ops a composition would cost.
 *   - the elementwise part of binary_cross_entropy, whose backward is
 *     PyTorch's (x - y) / max(x (1 - x), 1e-12) rather than what the
 *     clamped logs would give by composition.
 */
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "nn/nn.h"

#define REL(t) (em_tensor_release(t), (t) = NULL)

static em_status check_reduction(const char *op, em_reduction r) {
  if (r != EM_REDUCTION_MEAN && r != EM_REDUCTION_SUM && r != EM_REDUCTION_NONE)
    return em__set_error(EM_ERR_INVALID, "%s: %d is not a valid value for reduction", op, (int)r);
  return EM_OK;
}

static em_status check_float(const char *op, const char *what, em_tensor *t) {
  if (!em_dtype_is_float((em_dtype)t->dtype))
    return em__set_error(EM_ERR_DTYPE, "%s: expected a floating-point %s, got %s", op, what,
                         em_dtype_name((em_dtype)t->dtype));
  return EM_OK;
}

static bool same_shape(const em_tensor *a, const em_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

/* a and b broadcast together (NumPy rules). */
static em_status check_broadcast(const char *op, em_tensor *a, em_tensor *b) {
  int nd[2] = {a->ndim, b->ndim}, ond;
  const int64_t *sh[2] = {a->shape, b->shape};
  int64_t out[EM_MAX_DIMS];
  em_status st = em_broadcast_shapes(2, nd, sh, &ond, out);
  if (st) em__prefix_error("%s", op);
  return st;
}

/* w can be expanded to t's shape (as an in-place op's operand). */
static em_status check_expands_to(const char *op, const char *what, em_tensor *w, em_tensor *t) {
  bool ok = w->ndim <= t->ndim;
  int off = t->ndim - w->ndim, bad = 0;
  for (int d = 0; ok && d < w->ndim; d++)
    if (w->shape[d] != 1 && w->shape[d] != t->shape[off + d]) ok = false, bad = d;
  if (!ok) {
    if (w->ndim > t->ndim)
      return em__set_error(EM_ERR_SHAPE, "%s: %s of shape %s can't be broadcast to the input shape %s",
                           op, what, em__tshape(w), em__tshape(t));
    return em__set_error(EM_ERR_SHAPE,
                         "%s: The size of tensor a (%lld) must match the size of tensor b (%lld) at "
                         "non-singleton dimension %d (%s %s, input %s)",
                         op, (long long)t->shape[off + bad], (long long)w->shape[bad], off + bad,
                         what, em__tshape(w), em__tshape(t));
  }
  return EM_OK;
}

/* Applies the reduction to an unreduced loss; steals l. */
static em_tensor *reduce_loss(em_tensor *l, em_reduction r) {
  if (!l || r == EM_REDUCTION_NONE) return l;
  em_tensor *out = r == EM_REDUCTION_SUM ? em_tensor_sum(l, 0, NULL, false, EM_DTYPE_UNDEFINED)
                                         : em_tensor_mean(l, 0, NULL, false, EM_DTYPE_UNDEFINED);
  em_tensor_release(l);
  return out;
}

static em_tensor *scalar_op(em_tensor *(*f)(em_tensor *, em_scalar), em_tensor *t, double v) {
  return t ? f(t, em_scalar_float(v)) : NULL;
}

/* ---- nll_loss (custom function) ----------------------------------------------------
 * input: log-probabilities viewed as [N, C, S] (S = product of the spatial
 * dims; N = 1 for a [C] input); target [N, S] int64.
 *   a(n,s) = -w[t] * x[n, t, s]                      (0 where t == ignore_index)
 *   b(n,s) = -sum_c w[c] * x[n, c, s]                 (label smoothing; w = 1 without weight)
 *   loss(n,s) = (1 - ls) * a + ls / C * b
 * mean: ((1 - ls) * sum a + ls / C * sum b) / sum_{non-ignored} w[t] (the
 * number of non-ignored targets without a weight), as PyTorch 1.13. */

typedef struct nll_user {
  const char *op;
  em_reduction red;
  int64_t ignore;
  double ls;
  int ndim;                     /* the input's shape, for the gradient */
  int64_t shape[EM_MAX_DIMS];
  int64_t N, C, S;
  double *w;                    /* [C] or NULL */
  em_dtype dtype;               /* float32 or float64 */
  double tw;                    /* the mean's divisor, set by forward */
} nll_user;

static void nll_user_free(void *p) {
  nll_user *u = p;
  if (u) free(u->w);
  free(u);
}

#define NLL_FWD(T)                                                                        \
  do {                                                                                    \
    const T *xp = (const T *)em_tensor_data(x);                                           \
    T *op_ = (T *)em_tensor_data(o);                                                      \
    for (int64_t n = 0; n < N; n++)                                                       \
      for (int64_t s = 0; s < S; s++) {                                                   \
        int64_t k = tg[n * S + s];                                                        \
        if (k == u->ignore) {                                                             \
          if (none) op_[n * S + s] = 0;                                                   \
          continue;                                                                       \
        }                                                                                 \
        if (k < 0 || k >= C) {                                                            \
          st = em__set_error(EM_ERR_INDEX, "%s: Target %lld is out of bounds.", u->op,     \
                             (long long)k);                                               \
          goto done;                                                                      \
        }                                                                                 \
        const T *row = xp + n * C * S + s;                                                \
        double wt = u->w ? u->w[k] : 1.0;                                                 \
        double a = -wt * (double)row[k * S], b = 0;                                       \
        if (ls > 0) {                                                                     \
          for (int64_t c = 0; c < C; c++) b -= (u->w ? u->w[c] : 1.0) * (double)row[c * S]; \
        }                                                                                 \
        tw += wt;                                                                         \
        sa += a;                                                                          \
        sb += b;                                                                          \
        if (none) op_[n * S + s] = (T)(ls > 0 ? (1 - ls) * a + ls / (double)C * b : a);    \
      }                                                                                   \
    if (!none) {                                                                          \
      double v;                                                                           \
      if (u->red == EM_REDUCTION_SUM)                                                     \
        v = ls > 0 ? (1 - ls) * sa + ls / (double)C * sb : sa;                            \
      else                                                                                \
        v = ls > 0 ? (1 - ls) * (sa / tw) + ls / (double)C * (sb / tw) : sa / tw;         \
      op_[0] = (T)v;                                                                      \
    }                                                                                     \
  } while (0)

static em_status nll_fwd(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                         em_tensor **out) {
  (void)nin;
  nll_user *u = em_ag_ctx_user(ctx);
  em_status st = EM_OK;
  em_tensor *x = em_tensor_contiguous(in[0]), *t = NULL, *o = NULL;
  if (!x) return em_last_status();
  t = em_tensor_contiguous(in[1]);
  if (!t) goto fail;
  bool none = u->red == EM_REDUCTION_NONE;
  o = none ? em_tensor_empty(t->ndim, t->shape, (em_dtype)x->dtype)
           : em_tensor_empty(0, NULL, (em_dtype)x->dtype);
  if (!o) goto fail;
  const int64_t *tg = (const int64_t *)em_tensor_data(t);
  int64_t N = u->N, C = u->C, S = u->S;
  double ls = u->ls, sa = 0, sb = 0, tw = 0;
  if (x->dtype == EM_FLOAT32)
    NLL_FWD(float);
  else
    NLL_FWD(double);
  u->tw = tw;
  st = em_ag_ctx_save(ctx, 1, &t);
  if (st) goto done;
  out[0] = o;
  o = NULL;
  *nout = 1;
  goto done;
fail:
  st = em_last_status();
done:
  em_tensor_release(o), em_tensor_release(t), em_tensor_release(x);
  return st;
}

#define NLL_BWD(T)                                                                     \
  do {                                                                                 \
    T *gp = (T *)em_tensor_data(r);                                                    \
    for (int64_t n = 0; n < N; n++)                                                    \
      for (int64_t s = 0; s < S; s++) {                                                \
        int64_t k = tg[n * S + s];                                                     \
        if (k == u->ignore || k < 0 || k >= C) continue;                               \
        double gg = gd ? gd[n * S + s] : gv;                                           \
        T *row = gp + n * C * S + s;                                                   \
        row[k * S] += (T)(-(u->w ? u->w[k] : 1.0) * ca * gg);                          \
        if (ls > 0)                                                                    \
          for (int64_t c = 0; c < C; c++) row[c * S] += (T)(-(u->w ? u->w[c] : 1.0) * cb * gg); \
      }                                                                                \
  } while (0)

static em_status nll_bwd(em_ag_ctx *ctx, int nout, em_tensor *const *go, int nin,
                         em_tensor **gi) {
  (void)nout, (void)nin;
  if (!go[0] || !em_ag_ctx_needs_input_grad(ctx, 0)) return EM_OK;
  nll_user *u = em_ag_ctx_user(ctx);
  em_tensor *t = em_ag_ctx_saved(ctx, 0);
  if (!t) return em_last_status();
  em_dtype dt = u->dtype;
  em_tensor *r = em_tensor_zeros(u->ndim, u->shape, dt), *g64 = NULL, *gc = NULL;
  if (!r) return em_last_status();
  const double *gd = NULL;
  double gv = 0;
  if (u->red == EM_REDUCTION_NONE) {
    g64 = em_tensor_to_dtype(go[0], EM_FLOAT64);
    gc = g64 ? em_tensor_contiguous(g64) : NULL;
    if (!gc) {
      em_tensor_release(g64), em_tensor_release(r);
      return em_last_status();
    }
    gd = (const double *)em_tensor_data(gc);
  } else {
    gv = em_tensor_item_double(go[0]);
  }
  const int64_t *tg = (const int64_t *)em_tensor_data(t);
  int64_t N = u->N, C = u->C, S = u->S;
  double ls = u->ls, mean = u->red == EM_REDUCTION_MEAN;
  double ca = (ls > 0 ? 1 - ls : 1.0) * (mean ? 1.0 / u->tw : 1.0);
  double cb = ls > 0 ? ls / (double)C * (mean ? 1.0 / u->tw : 1.0) : 0;
  if (r->numel > 0) {
    if (dt == EM_FLOAT32)
      NLL_BWD(float);
    else
      NLL_BWD(double);
  }
  em_tensor_release(gc), em_tensor_release(g64);
  gi[0] = r;
  return EM_OK;
}

static const em_ag_function nll_fn = {"NllLossBackward0", nll_fwd, nll_bwd};

/* Checks target (and weight) against a [N, C, d...] / [C] input. */
static em_status nll_validate(const char *op, em_tensor *input, em_tensor *target,
                              em_tensor *weight) {
  if (input->ndim < 1)
    return em__set_error(EM_ERR_SHAPE, "%s: Expected 1 or more dimensions (got 0)", op);
  EM_CHECK(em__check_same_device(op, 3, (em_tensor *[]){input, target, weight}));
  if (target->dtype != EM_INT64)
    return em__set_error(EM_ERR_DTYPE, "%s: expected scalar type Long but found %s", op,
                         em__torch_dtype_name((em_dtype)target->dtype));
  if (input->ndim == 1) {
    if (target->ndim != 0)
      return em__set_error(EM_ERR_SHAPE, "%s: size mismatch (got input: %s, target: %s)", op,
                           em__tshape(input), em__tshape(target));
  } else {
    if (target->ndim >= 1 && input->shape[0] != target->shape[0])
      return em__set_error(EM_ERR_SHAPE,
                           "%s: Expected input batch_size (%lld) to match target batch_size (%lld).",
                           op, (long long)input->shape[0], (long long)target->shape[0]);
    if (input->ndim == 2 && target->ndim != 1)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: 0D or 1D target tensor expected, multi-target not supported (input "
                           "%s, target %s)",
                           op, em__tshape(input), em__tshape(target));
    bool ok = target->ndim == input->ndim - 1 && target->shape[0] == input->shape[0];
    for (int d = 2; ok && d < input->ndim; d++) ok = target->shape[d - 1] == input->shape[d];
    if (!ok) {
      int64_t want[EM_MAX_DIMS];
      want[0] = input->shape[0];
      for (int d = 2; d < input->ndim; d++) want[d - 1] = input->shape[d];
      char buf[EM_SHAPE_STR_MAX];
      return em__set_error(EM_ERR_SHAPE, "%s: Expected target size %s, got %s", op,
                           em__shape_str(input->ndim - 1, want, buf, sizeof buf),
                           em__tshape(target));
    }
  }
  if (weight) {
    int64_t C = input->shape[input->ndim == 1 ? 0 : 1];
    if (weight->ndim != 1 || weight->shape[0] != C)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: weight tensor should be defined either for all %lld classes or no "
                           "classes but got weight tensor of shape: %s",
                           op, (long long)C, em__tshape(weight));
    if (weight->dtype != input->dtype)
      return em__set_error(EM_ERR_DTYPE, "%s: expected scalar type %s but found %s (weight)", op,
                           em__torch_dtype_name((em_dtype)input->dtype),
                           em__torch_dtype_name((em_dtype)weight->dtype));
  }
  return EM_OK;
}

/* The custom function on validated arguments; logp is float. */
static em_tensor *nll_apply(const char *op, em_tensor *logp, em_tensor *target, em_tensor *weight,
                            em_reduction red, int64_t ignore, double ls) {
  if (logp->device.type != EM_CPU) {
    /* on a GPU: computed on the host, the log-probabilities moved there and
     * the loss back (both moves differentiable); targets and weights too */
    em_tensor *x = em_tensor_to_device(logp, EM_DEVICE_CPU), *t = NULL, *w = NULL, *r = NULL;
    if (x) t = em_tensor_to_device(target, EM_DEVICE_CPU);
    if (t && weight) w = em_tensor_to_device(weight, EM_DEVICE_CPU);
    if (t && (!weight || w)) r = nll_apply(op, x, t, w, red, ignore, ls);
    em_tensor *o = r ? em_tensor_to_device(r, logp->device) : NULL;
    em_tensor_release(r), em_tensor_release(w), em_tensor_release(t), em_tensor_release(x);
    return o;
  }
  em_dtype dt = (em_dtype)logp->dtype;
  if (dt != EM_FLOAT32 && dt != EM_FLOAT64) {
    /* half types: compute in float32, hand back the input's dtype */
    em_tensor *x32 = em_tensor_to_dtype(logp, EM_FLOAT32), *w32 = NULL, *r = NULL, *o = NULL;
    if (x32 && weight) w32 = em_tensor_to_dtype(weight, EM_FLOAT32);
    if (x32 && (!weight || w32)) r = nll_apply(op, x32, target, w32, red, ignore, ls);
    if (r) o = em_tensor_to_dtype(r, dt);
    em_tensor_release(r), em_tensor_release(w32), em_tensor_release(x32);
    return o;
  }
  nll_user *u = calloc(1, sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  u->op = op;
  u->red = red;
  u->ignore = ignore;
  u->ls = ls;
  u->dtype = dt;
  u->ndim = logp->ndim;
  memcpy(u->shape, logp->shape, sizeof(int64_t) * (size_t)logp->ndim);
  if (logp->ndim == 1) {
    u->N = 1, u->C = logp->shape[0], u->S = 1;
  } else {
    u->N = logp->shape[0], u->C = logp->shape[1], u->S = 1;
    for (int d = 2; d < logp->ndim; d++) u->S *= logp->shape[d];
  }
  if (weight) {
    u->w = malloc(sizeof(double) * (size_t)(u->C > 0 ? u->C : 1));
    if (!u->w) {
      nll_user_free(u);
      return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
    }
    for (int64_t c = 0; c < u->C; c++)
      u->w[c] = em__load_f64(em__data_ptr(weight) + c * weight->strides[0] *
                                                     (int64_t)em_dtype_size((em_dtype)weight->dtype),
                             (em_dtype)weight->dtype);
  }
  em_tensor *in[3] = {logp, target, weight}, *out[EM_AG_MAX_OUTPUTS];
  int nout;
  if (em_ag_function_apply(&nll_fn, u, nll_user_free, weight ? 3 : 2, in, &nout, out))
    return NULL;
  return out[0];
}

static em_ce_options ce_defaults(const em_ce_options *o, int64_t *ignore) {
  em_ce_options d = {0};
  if (o) d = *o;
  *ignore = d.has_ignore_index ? d.ignore_index : -100;
  return d;
}

em_tensor *em_nn_f_nll_loss(em_tensor *input, em_tensor *target, const em_ce_options *o) {
  static const char op[] = "nll_loss";
  if (!input || !target) return EM_FAIL(EM_ERR_INVALID, "nll_loss: NULL input or target");
  int64_t ignore;
  em_ce_options d = ce_defaults(o, &ignore);
  if (check_reduction(op, d.reduction) || check_float(op, "input", input) ||
      nll_validate(op, input, target, d.weight))
    return NULL;
  return nll_apply(op, input, target, d.weight, d.reduction, ignore, 0);
}

/* Class-probability targets: -sum_c w[c] * target[n, c] * log_softmax(x)[n, c]
 * (target smoothed to target * (1 - ls) + ls / C first); mean divides by
 * numel / C. */
static em_tensor *ce_prob(em_tensor *input, em_tensor *target, em_tensor *weight, em_reduction red,
                          double ls) {
  static const char op[] = "cross_entropy";
  int cd = input->ndim == 1 ? 0 : 1;
  int64_t C = input->shape[cd];
  if (weight && (weight->ndim != 1 || weight->shape[0] != C))
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: weight tensor should be defined either for all %lld classes or no classes "
                   "but got weight tensor of shape: %s",
                   op, (long long)C, em__tshape(weight));
  em_tensor *logp = NULL, *tg = NULL, *tmp = NULL, *prod = NULL, *wv = NULL, *s = NULL, *out = NULL;
  logp = em_tensor_log_softmax(input, cd, EM_DTYPE_UNDEFINED);
  if (!logp) goto done;
  if (ls > 0) {
    tmp = scalar_op(em_tensor_mul_scalar, target, 1 - ls);
    tg = scalar_op(em_tensor_add_scalar, tmp, ls / (double)C);
  } else {
    tg = em_tensor_retain(target);
  }
  if (!tg) goto done;
  prod = em_tensor_mul(logp, tg);
  if (!prod) goto done;
  if (weight) {
    int64_t shape[EM_MAX_DIMS];
    for (int d = 0; d < input->ndim; d++) shape[d] = d == cd ? C : 1;
    wv = em_tensor_view(weight, input->ndim, shape);
    em_tensor *p2 = wv ? em_tensor_mul(prod, wv) : NULL;
    REL(prod);
    prod = p2;
    if (!prod) goto done;
  }
  if (red == EM_REDUCTION_NONE) {
    s = em_tensor_sum(prod, EM_DIMS(cd), false, EM_DTYPE_UNDEFINED);
    out = s ? em_tensor_neg(s) : NULL;
  } else {
    s = em_tensor_sum(prod, 0, NULL, false, EM_DTYPE_UNDEFINED);
    em_tensor *ng = s ? em_tensor_neg(s) : NULL;
    if (red == EM_REDUCTION_SUM || !ng) {
      out = ng;
    } else {
      double den = C > 0 ? (double)(input->numel / C) : 0; /* 0: NaN, as PyTorch */
      out = em_tensor_div_scalar(ng, em_scalar_float(den));
      em_tensor_release(ng);
    }
  }
done:
  em_tensor_release(s), em_tensor_release(wv), em_tensor_release(prod);
  em_tensor_release(tmp), em_tensor_release(tg), em_tensor_release(logp);
  return out;
}

em_tensor *em_nn_f_cross_entropy(em_tensor *input, em_tensor *target, const em_ce_options *o) {
  static const char op[] = "cross_entropy";
  if (!input || !target) return EM_FAIL(EM_ERR_INVALID, "cross_entropy: NULL input or target");
  int64_t ignore;
  em_ce_options d = ce_defaults(o, &ignore);
  if (check_reduction(op, d.reduction)) return NULL;
  double ls = d.label_smoothing;
  if (same_shape(input, target)) { /* class probabilities */
    if (!em_dtype_is_float((em_dtype)target->dtype))
      return EM_FAIL(EM_ERR_DTYPE,
                     "%s: Expected floating point type for target with class probabilities, got %s",
                     op, em__torch_dtype_name((em_dtype)target->dtype));
    if (ignore >= 0)
      return EM_FAIL(EM_ERR_INVALID, "%s: ignore_index is not supported for floating point target",
                     op);
    if (check_float(op, "input", input)) return NULL;
    if (input->ndim < 1)
      return EM_FAIL(EM_ERR_SHAPE, "%s: Expected 1 or more dimensions (got 0)", op);
    if (ls > 1)
      return EM_FAIL(EM_ERR_INVALID, "%s: label_smoothing must be between 0.0 and 1.0. Got: %g",
                     op, ls);
    return ce_prob(input, target, d.weight, d.reduction, ls > 0 ? ls : 0);
  }
  if (check_float(op, "input", input) || nll_validate(op, input, target, d.weight)) return NULL;
  if (ls > 1)
    return EM_FAIL(EM_ERR_INVALID, "%s: label_smoothing must be between 0.0 and 1.0. Got: %g", op,
                   ls);
  em_tensor *logp = em_tensor_log_softmax(input, input->ndim == 1 ? 0 : 1, EM_DTYPE_UNDEFINED);
  if (!logp) return NULL;
  em_tensor *out = nll_apply(op, logp, target, d.weight, d.reduction, ignore, ls > 0 ? ls : 0);
  em_tensor_release(logp);
  return out;
}

/* ---- regression losses ------------------------------------------------------------------- */

static em_status pair_checks(const char *op, em_tensor *input, em_tensor *target, em_reduction r) {
  if (!input || !target) return em__set_error(EM_ERR_INVALID, "%s: NULL input or target", op);
  em_status st = check_reduction(op, r);
  if (!st) st = check_float(op, "input", input);
  if (!st) st = check_broadcast(op, input, target);
  return st;
}

em_tensor *em_nn_f_mse_loss(em_tensor *input, em_tensor *target, em_reduction r) {
  if (pair_checks("mse_loss", input, target, r)) return NULL;
  em_tensor *d = em_tensor_sub(input, target);
  em_tensor *l = d ? em_tensor_square(d) : NULL;
  em_tensor_release(d);
  return reduce_loss(l, r);
}

em_tensor *em_nn_f_l1_loss(em_tensor *input, em_tensor *target, em_reduction r) {
  if (pair_checks("l1_loss", input, target, r)) return NULL;
  em_tensor *d = em_tensor_sub(input, target);
  em_tensor *l = d ? em_tensor_abs(d) : NULL;
  em_tensor_release(d);
  return reduce_loss(l, r);
}

/* |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta */
em_tensor *em_nn_f_smooth_l1_loss(em_tensor *input, em_tensor *target, em_reduction r,
                                  double beta) {
  static const char op[] = "smooth_l1_loss";
  if (pair_checks(op, input, target, r)) return NULL;
  if (beta < 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: smooth_l1_loss does not support negative values for beta.",
                   op);
  if (isnan(beta)) return EM_FAIL(EM_ERR_INVALID, "%s: beta must not be NaN", op);
  if (beta == 0) return em_nn_f_l1_loss(input, target, r);
  em_tensor *d = NULL, *z = NULL, *m = NULL, *z2 = NULL, *a = NULL, *b = NULL, *l = NULL;
  d = em_tensor_sub(input, target);
  z = d ? em_tensor_abs(d) : NULL;
  m = scalar_op(em_tensor_lt_scalar, z, beta);
  z2 = m ? em_tensor_square(z) : NULL;
  a = scalar_op(em_tensor_mul_scalar, z2, 0.5 / beta);
  b = a ? em_tensor_sub_scalar(z, em_scalar_float(0.5 * beta)) : NULL;
  l = b ? em_tensor_where(m, a, b) : NULL;
  em_tensor_release(d), em_tensor_release(z), em_tensor_release(m);
  em_tensor_release(z2), em_tensor_release(a), em_tensor_release(b);
  return reduce_loss(l, r);
}

/* ---- binary cross entropy ------------------------------------------------------------------
 * Elementwise custom function (no weight, no reduction):
 *   l = (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100)
 *   dl/dx = (x - y) / max((1 - x) x, 1e-12)
 *   dl/dy = log1p(-x) - log(x)
 * as PyTorch 1.13's kernels and derivative formulas. */

static em_status bce_fwd(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                         em_tensor **out) {
  (void)nin;
  em_tensor *x = in[0], *y = in[1];
  em_tensor *nx = NULL, *l1 = NULL, *c1 = NULL, *lx = NULL, *c0 = NULL, *ym1 = NULL, *p = NULL,
            *q = NULL, *r = NULL;
  nx = em_tensor_neg(x);
  l1 = nx ? em_tensor_log1p(nx) : NULL;
  c1 = l1 ? em_tensor_clamp(l1, true, -100, false, 0) : NULL;
  lx = c1 ? em_tensor_log(x) : NULL;
  c0 = lx ? em_tensor_clamp(lx, true, -100, false, 0) : NULL;
  ym1 = c0 ? em_tensor_sub_scalar(y, em_scalar_float(1)) : NULL;
  p = ym1 ? em_tensor_mul(ym1, c1) : NULL;
  q = p ? em_tensor_mul(y, c0) : NULL;
  r = q ? em_tensor_sub(p, q) : NULL;
  em_status st = r ? em_ag_ctx_save(ctx, 2, in) : em_last_status();
  if (!st) {
    out[0] = r;
    r = NULL;
    *nout = 1;
  }
  em_tensor *all[] = {nx, l1, c1, lx, c0, ym1, p, q, r};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) em_tensor_release(all[i]);
  return st;
}

static em_status bce_bwd(em_ag_ctx *ctx, int nout, em_tensor *const *go, int nin, em_tensor **gi) {
  (void)nout, (void)nin;
  if (!go[0]) return EM_OK;
  em_tensor *x = em_ag_ctx_saved(ctx, 0), *y = em_ag_ctx_saved(ctx, 1);
  if (!x || !y) return em_last_status();
  em_status st = EM_OK;
  em_tensor *t[8] = {0};
  if (em_ag_ctx_needs_input_grad(ctx, 0)) {
    /* g * (x - y) / max((1 - x) * x, 1e-12) */
    t[0] = em_tensor_sub(x, y);
    t[1] = t[0] ? em_tensor_neg(x) : NULL;
    t[2] = t[1] ? em_tensor_add_scalar(t[1], em_scalar_float(1)) : NULL;
    t[3] = t[2] ? em_tensor_mul(t[2], x) : NULL;
    t[4] = t[3] ? em_tensor_clamp(t[3], true, 1e-12, false, 0) : NULL;
    t[5] = t[4] ? em_tensor_div(t[0], t[4]) : NULL;
    gi[0] = t[5] ? em_tensor_mul(go[0], t[5]) : NULL;
    if (!gi[0]) st = em_last_status();
    for (int i = 0; i < 8; i++) REL(t[i]);
  }
  if (!st && em_ag_ctx_needs_input_grad(ctx, 1)) {
    t[0] = em_tensor_neg(x);
    t[1] = t[0] ? em_tensor_log1p(t[0]) : NULL;
    t[2] = t[1] ? em_tensor_log(x) : NULL;
    t[3] = t[2] ? em_tensor_sub(t[1], t[2]) : NULL;
    gi[1] = t[3] ? em_tensor_mul(go[0], t[3]) : NULL;
    if (!gi[1]) st = em_last_status();
    for (int i = 0; i < 8; i++) REL(t[i]);
  }
  return st;
}

static const em_ag_function bce_fn = {"BinaryCrossEntropyBackward0", bce_fwd, bce_bwd};

/* Every element of x in [0, 1] (NaN fails). */
static em_status check_unit_range(const char *op, em_tensor *x) {
  em_tensor *ge = em_tensor_ge_scalar(x, em_scalar_float(0));
  em_tensor *le = ge ? em_tensor_le_scalar(x, em_scalar_float(1)) : NULL;
  em_tensor *both = le ? em_tensor_logical_and(ge, le) : NULL;
  em_tensor *all = both ? em_tensor_all(both, 0, NULL, false) : NULL;
  em_status st = all ? EM_OK : em_last_status();
  if (!st && em_tensor_item_double(all) == 0)
    st = em__set_error(EM_ERR_INVALID, "%s: all elements of input should be between 0 and 1", op);
  em_tensor_release(all), em_tensor_release(both), em_tensor_release(le), em_tensor_release(ge);
  return st;
}

em_tensor *em_nn_f_binary_cross_entropy(em_tensor *input, em_tensor *target, em_tensor *weight,
                                        em_reduction r) {
  static const char op[] = "binary_cross_entropy";
  if (!input || !target) return EM_FAIL(EM_ERR_INVALID, "%s: NULL input or target", op);
  if (check_reduction(op, r) || check_float(op, "input", input) ||
      check_float(op, "target", target))
    return NULL;
  if (!same_shape(input, target))
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Using a target size (%s) that is different to the input size (%s) is "
                   "deprecated. Please ensure they have the same size.",
                   op, em__tshape(target), em__tshape(input));
  if (weight && check_expands_to(op, "weight", weight, input)) return NULL;
  if (check_unit_range(op, input)) return NULL;
  em_tensor *in[2] = {input, target}, *out[EM_AG_MAX_OUTPUTS];
  int nout;
  if (em_ag_function_apply(&bce_fn, NULL, NULL, 2, in, &nout, out)) return NULL;
  em_tensor *l = out[0];
  if (weight) {
    em_tensor *lw = em_tensor_mul(l, weight);
    em_tensor_release(l);
    l = lw;
  }
  return reduce_loss(l, r);
}

/* PyTorch's stable form, m = max(-x, 0):
 *   (1 - y) x + lw (log(exp(-m) + exp(-x - m)) + m),  lw = (pos_weight - 1) y + 1
 * (lw = 1 without pos_weight), times weight. */
em_tensor *em_nn_f_binary_cross_entropy_with_logits(em_tensor *input, em_tensor *target,
                                                    em_tensor *weight, em_tensor *pos_weight,
                                                    em_reduction r) {
  static const char op[] = "binary_cross_entropy_with_logits";
  if (!input || !target) return EM_FAIL(EM_ERR_INVALID, "%s: NULL input or target", op);
  if (check_reduction(op, r) || check_float(op, "input", input)) return NULL;
  if (!same_shape(input, target))
    return EM_FAIL(EM_ERR_SHAPE, "%s: Target size (%s) must be the same as input size (%s)", op,
                   em__tshape(target), em__tshape(input));
  if (weight && check_expands_to(op, "weight", weight, input)) return NULL;
  if (pos_weight && check_expands_to(op, "pos_weight", pos_weight, input)) return NULL;
  em_tensor *t[16] = {0}, *l = NULL;
  int k = 0;
#define STEP(expr) (t[k] = (expr), t[k++] != NULL)
  bool ok = STEP(em_tensor_neg(input)) &&                                /* 0: -x */
            STEP(em_tensor_clamp(t[0], true, 0, false, 0)) &&            /* 1: m */
            STEP(em_tensor_neg(t[1])) &&                                 /* 2: -m */
            STEP(em_tensor_exp(t[2])) &&                                 /* 3: e^-m */
            STEP(em_tensor_sub(t[0], t[1])) &&                           /* 4: -x - m */
            STEP(em_tensor_exp(t[4])) &&                                 /* 5 */
            STEP(em_tensor_add(t[3], t[5])) &&                           /* 6 */
            STEP(em_tensor_log(t[6])) &&                                 /* 7 */
            STEP(em_tensor_neg(target)) &&                               /* 8: -y */
            STEP(em_tensor_add_scalar(t[8], em_scalar_float(1))) &&      /* 9: 1 - y */
            STEP(em_tensor_mul(t[9], input));                            /* 10: (1 - y) x */
  if (ok && pos_weight) {
    ok = STEP(em_tensor_sub_scalar(pos_weight, em_scalar_float(1))) &&   /* 11 */
         STEP(em_tensor_mul(t[11], target)) &&                           /* 12 */
         STEP(em_tensor_add_scalar(t[12], em_scalar_float(1))) &&        /* 13: lw */
         STEP(em_tensor_add(t[7], t[1])) &&                              /* 14 */
         STEP(em_tensor_mul(t[13], t[14]));                              /* 15 */
    if (ok) l = em_tensor_add(t[10], t[15]);
  } else if (ok) {
    ok = STEP(em_tensor_add(t[10], t[1]));                               /* 11 */
    if (ok) l = em_tensor_add(t[11], t[7]);
  }
#undef STEP
  for (int i = 0; i < k; i++) em_tensor_release(t[i]);
  if (l && weight) {
    em_tensor *lw = em_tensor_mul(l, weight);
    em_tensor_release(l);
    l = lw;
  }
  return reduce_loss(l, r);
}

/* ---- kl_div -------------------------------------------------------------------------------
 * log_target: exp(t) (t - x); else xlogy(t, t) - t x, with xlogy(0, 0) = 0.
 * xlogy is t * log(t with zeros replaced by 1), so the gradient with
 * respect to a zero target is 0 (PyTorch's xlogy gives NaN there). */
em_tensor *em_nn_f_kl_div(em_tensor *input, em_tensor *target, em_reduction r, bool batchmean,
                          bool log_target) {
  static const char op[] = "kl_div";
  if (!input || !target) return EM_FAIL(EM_ERR_INVALID, "%s: NULL input or target", op);
  if (!batchmean && check_reduction(op, r)) return NULL;
  if (check_float(op, "input", input) || check_float(op, "target", target) ||
      check_broadcast(op, input, target))
    return NULL;
  em_tensor *t[6] = {0}, *l = NULL;
  if (log_target) {
    t[0] = em_tensor_exp(target);
    t[1] = t[0] ? em_tensor_sub(target, input) : NULL;
    l = t[1] ? em_tensor_mul(t[0], t[1]) : NULL;
  } else {
    t[0] = em_tensor_eq_scalar(target, em_scalar_float(0));
    t[1] = t[0] ? em_tensor_masked_fill(target, t[0], em_scalar_float(1)) : NULL;
    t[2] = t[1] ? em_tensor_log(t[1]) : NULL;
    t[3] = t[2] ? em_tensor_mul(target, t[2]) : NULL;
    t[4] = t[3] ? em_tensor_mul(target, input) : NULL;
    l = t[4] ? em_tensor_sub(t[3], t[4]) : NULL;
  }
  for (int i = 0; i < 6; i++) em_tensor_release(t[i]);
  if (!batchmean) return reduce_loss(l, r);
  em_tensor *s = reduce_loss(l, EM_REDUCTION_SUM);
  if (!s || input->ndim == 0) return s;
  em_tensor *out = em_tensor_div_scalar(s, em_scalar_float((double)input->shape[0]));
  em_tensor_release(s);
  return out;
}
