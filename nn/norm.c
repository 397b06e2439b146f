/* Normalisation: batch_norm, layer_norm, group_norm (functional forms)
 * and BatchNorm1d/2d, LayerNorm, GroupNorm (modules).
 *
 * Each functional form is one autograd node (an em_ag_function) whose
 * forward computes the statistics and the normalised output in one pass
 * over the data per channel / row / group, and whose backward uses the
 * closed form (nn/cpu_norm_impl.h). float32 and float64 compute natively,
 * float16 and bfloat16 through float32 (their parameters may be float32,
 * PyTorch's "mixed" case).
 *
 * Batch norm momentum: a NaN momentum given to em_nn_batch_norm1d/2d is
 * PyTorch's momentum=None (a cumulative moving average, factor
 * 1/num_batches_tracked).
 *
 * On a GPU: batch norm with batch statistics runs on cuDNN as its own
 * autograd node (bn_cuda_function); batch norm with the running
 * statistics, layer norm and group norm (and batch norm in a build without
 * cuDNN) are composed of differentiable ops, which run as CUDA kernels and
 * record their own nodes. float16/bfloat16 compute in float32 there too.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#ifdef EMBER_CUDA
#include "core/cuda/cuda_nn.h"
#include "core/cuda/ember_cuda.h"
#endif

/* core/ops_copy.c */
em_status em__copy_into(em_tensor *dst, em_tensor *src);

#define T float
#define SFX(name) name##_f32
#include "nn/cpu_norm_impl.h"

#define T double
#define SFX(name) name##_f64
#include "nn/cpu_norm_impl.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static void *data_of(em_tensor *t) { return t ? em__data_ptr(t) : NULL; }

/* x must be a floating tensor on the CPU or a CUDA device. */
static em_status check_x(const char *op, em_tensor *x) {
  if (!x) return em__set_error(EM_ERR_INVALID, "%s: input must not be NULL", op);
  if (!em_dtype_is_float((em_dtype)x->dtype))
    return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", op, op,
                         em__torch_dtype_name((em_dtype)x->dtype));
  if (x->device.type != EM_CPU && x->device.type != EM_CUDA)
    return em__set_error(EM_ERR_DEVICE, "%s: unsupported device", op);
  return EM_OK;
}

/* A parameter (weight, bias, running stats) must have x's dtype, or
 * float32 when x is float16/bfloat16. */
static em_status check_param_dtype(const char *op, const char *name, em_tensor *p, em_tensor *x) {
  em_dtype pd = (em_dtype)p->dtype, xd = (em_dtype)x->dtype;
  bool ok = pd == xd || ((xd == EM_FLOAT16 || xd == EM_BFLOAT16) && pd == EM_FLOAT32);
  if (!ok)
    return em__set_error(EM_ERR_DTYPE,
                         "%s: expected %s to have scalar type %s (the input's), but got %s", op,
                         name, em__torch_dtype_name(xd), em__torch_dtype_name(pd));
  return em__check_same_device(op, 2, (em_tensor *[]){x, p});
}

/* Converts a [n] double array into a new tensor of dtype dt. */
static em_tensor *from_doubles(const double *v, int64_t n, em_dtype dt) {
  em_tensor *d = em_tensor_from_data(v, EM_DIMS(n), EM_FLOAT64);
  if (!d || dt == EM_FLOAT64) return d;
  em_tensor *o = em__convert(d, dt);
  em_tensor_release(d);
  return o;
}

/* The values of a tensor of n elements as doubles (malloc'd). */
static double *to_doubles(em_tensor *t, int64_t n) {
  double *v = malloc(sizeof(double) * (size_t)(n + 1));
  if (!v) return EM_FAIL(EM_ERR_NOMEM, "out of memory");
  em_tensor *c = em__as_compute(t, EM_FLOAT64);
  if (!c) {
    free(v);
    return NULL;
  }
  memcpy(v, em__data_ptr(c), sizeof(double) * (size_t)n);
  em_tensor_release(c);
  return v;
}

/* Writes v[0..n) into t (any layout/dtype) in place, bumping its version. */
static em_status store_doubles(em_tensor *t, const double *v) {
  em_tensor *src = em_tensor_from_data(v, t->ndim, t->shape, EM_FLOAT64);
  if (!src) return em_last_status();
  em_status st = em__copy_into(t, src);
  em_tensor_release(src);
  return st;
}

/* ---- batch norm ------------------------------------------------------------------------------ */

typedef struct bn_ctx {
  int64_t N, C, S;
  bool batch_stats, has_w;
  double eps, momentum;
  em_tensor *running_mean, *running_var; /* borrowed during forward only */
  em_dtype bias_dtype;                   /* the GPU path's gradient for it */
} bn_ctx;

/* in: x [N, C, ...], weight, bias (NULL allowed). out: y. Saved: x,
 * weight, and the statistics used (mean and invstd as float64 [C]). */
static em_status bn_fn_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                               em_tensor **out) {
  bn_ctx *b = em_ag_ctx_user(ctx);
  em_tensor *x = in[0], *w = in[1], *bias = in[2];
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  const int64_t C = b->C;
  em_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *stats = NULL;
  double *buf = NULL, *rm = NULL, *rv = NULL;
  em_status st = EM_OK;
  buf = malloc(sizeof(double) * (size_t)(3 * C + 1));
  if (!buf) {
    st = em__set_error(EM_ERR_NOMEM, "batch_norm: out of memory");
    goto done;
  }
  double *mean = buf, *invstd = buf + C, *var = buf + 2 * C;
  if (!b->batch_stats) {
    rm = to_doubles(b->running_mean, C);
    EM_CHECK_PTR_GOTO(rm, st, done);
    rv = to_doubles(b->running_var, C);
    EM_CHECK_PTR_GOTO(rv, st, done);
    for (int64_t c = 0; c < C; c++) mean[c] = rm[c], invstd[c] = 1.0 / sqrt(rv[c] + b->eps);
  }
  xc = em__as_compute(x, cdt);
  EM_CHECK_PTR_GOTO(xc, st, done);
  if (w) {
    wc = em__as_compute(w, cdt);
    EM_CHECK_PTR_GOTO(wc, st, done);
  }
  if (bias) {
    bc = em__as_compute(bias, cdt);
    EM_CHECK_PTR_GOTO(bc, st, done);
  }
  y = em_tensor_empty(x->ndim, x->shape, cdt);
  EM_CHECK_PTR_GOTO(y, st, done);
  int64_t grain = b->N * b->S > 0 ? 32768 / (b->N * b->S) : 1;
  if (grain < 1) grain = 1;
  if (cdt == EM_FLOAT64) {
    bn_job_f64 J = {b->N, C, b->S, data_of(xc), data_of(wc), data_of(bc), NULL,
                    data_of(y), NULL, mean, invstd, var, NULL, NULL, b->batch_stats, b->eps};
    em__parallel_for(C, grain, bn_fwd_range_f64, &J);
  } else {
    bn_job_f32 J = {b->N, C, b->S, data_of(xc), data_of(wc), data_of(bc), NULL,
                    data_of(y), NULL, mean, invstd, var, NULL, NULL, b->batch_stats, b->eps};
    em__parallel_for(C, grain, bn_fwd_range_f32, &J);
  }
  /* running statistics: (1 - momentum) running + momentum batch (unbiased var) */
  int64_t M = b->N * b->S;
  if (b->batch_stats && M > 0 && (b->running_mean || b->running_var)) {
    double m = b->momentum, unbias = M > 1 ? (double)M / (double)(M - 1) : 1.0;
    if (b->running_mean) {
      rm = to_doubles(b->running_mean, C);
      EM_CHECK_PTR_GOTO(rm, st, done);
      for (int64_t c = 0; c < C; c++) rm[c] = (1 - m) * rm[c] + m * mean[c];
      EM_CHECK_GOTO(store_doubles(b->running_mean, rm), st, done);
    }
    if (b->running_var) {
      rv = to_doubles(b->running_var, C);
      EM_CHECK_PTR_GOTO(rv, st, done);
      for (int64_t c = 0; c < C; c++) rv[c] = (1 - m) * rv[c] + m * var[c] * unbias;
      EM_CHECK_GOTO(store_doubles(b->running_var, rv), st, done);
    }
  }
  if (cdt != dt) EM_CHECK_GOTO(em__convert_owned(&y, dt), st, done);
  if (em_ag_ctx_needs_input_grad(ctx, 0) || em_ag_ctx_needs_input_grad(ctx, 1) ||
      em_ag_ctx_needs_input_grad(ctx, 2)) {
    stats = em_tensor_from_data(buf, EM_DIMS(2, C), EM_FLOAT64); /* mean, invstd */
    EM_CHECK_PTR_GOTO(stats, st, done);
    em_tensor *save[3] = {x, w, stats};
    EM_CHECK_GOTO(em_ag_ctx_save(ctx, 3, save), st, done);
  }
done:
  em_tensor_release(xc), em_tensor_release(wc), em_tensor_release(bc), em_tensor_release(stats);
  free(buf), free(rm), free(rv);
  b->running_mean = b->running_var = NULL;
  if (st) {
    em_tensor_release(y);
    return st;
  }
  out[0] = y;
  *nout = 1;
  return EM_OK;
}

static em_status bn_fn_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                em_tensor **grad_in) {
  bn_ctx *b = em_ag_ctx_user(ctx);
  em_tensor *dy = grad_out[0];
  if (!dy) return EM_OK;
  em_tensor *x = em_ag_ctx_saved(ctx, 0);
  if (!x) return em_last_status();
  em_tensor *w = NULL;
  if (b->has_w && !(w = em_ag_ctx_saved(ctx, 1))) return em_last_status();
  em_tensor *stats = em_ag_ctx_saved(ctx, 2);
  if (!stats) return em_last_status();
  const int64_t C = b->C;
  bool need_x = em_ag_ctx_needs_input_grad(ctx, 0), need_w = em_ag_ctx_needs_input_grad(ctx, 1),
       need_b = em_ag_ctx_needs_input_grad(ctx, 2);
  em_dtype cdt = em__compute_dtype((em_dtype)x->dtype);
  em_tensor *xc = NULL, *wc = NULL, *dyc = NULL, *dx = NULL, *dw = NULL, *db = NULL;
  double *sums = NULL;
  em_status st = EM_OK;
  sums = malloc(sizeof(double) * (size_t)(2 * C + 1));
  if (!sums) {
    st = em__set_error(EM_ERR_NOMEM, "batch_norm backward: out of memory");
    goto done;
  }
  xc = em__as_compute(x, cdt);
  EM_CHECK_PTR_GOTO(xc, st, done);
  dyc = em__as_compute(dy, cdt);
  EM_CHECK_PTR_GOTO(dyc, st, done);
  if (w) {
    wc = em__as_compute(w, cdt);
    EM_CHECK_PTR_GOTO(wc, st, done);
  }
  if (need_x) {
    dx = em_tensor_empty(x->ndim, x->shape, cdt);
    EM_CHECK_PTR_GOTO(dx, st, done);
  }
  double *mean = (double *)em__data_ptr(stats), *invstd = mean + C;
  int64_t grain = b->N * b->S > 0 ? 16384 / (b->N * b->S) : 1;
  if (grain < 1) grain = 1;
  if (cdt == EM_FLOAT64) {
    bn_job_f64 J = {b->N, C, b->S, data_of(xc), data_of(wc), NULL, data_of(dyc),
                    NULL, data_of(dx), mean, invstd, NULL, sums, sums + C, b->batch_stats, b->eps};
    em__parallel_for(C, grain, bn_bwd_range_f64, &J);
  } else {
    bn_job_f32 J = {b->N, C, b->S, data_of(xc), data_of(wc), NULL, data_of(dyc),
                    NULL, data_of(dx), mean, invstd, NULL, sums, sums + C, b->batch_stats, b->eps};
    em__parallel_for(C, grain, bn_bwd_range_f32, &J);
  }
  if (need_w) {
    dw = from_doubles(sums, C, cdt);
    EM_CHECK_PTR_GOTO(dw, st, done);
  }
  if (need_b) {
    db = from_doubles(sums + C, C, cdt);
    EM_CHECK_PTR_GOTO(db, st, done);
  }
done:
  em_tensor_release(xc), em_tensor_release(wc), em_tensor_release(dyc);
  free(sums);
  if (st) {
    em_tensor_release(dx), em_tensor_release(dw), em_tensor_release(db);
    return st;
  }
  grad_in[0] = dx, grad_in[1] = dw, grad_in[2] = db;
  return EM_OK;
}

static const em_ag_function bn_function = {"NativeBatchNormBackward0", bn_fn_forward,
                                           bn_fn_backward};

/* ---- on a GPU ---------------------------------------------------------------------------
 * Composed of differentiable ops (see the top). Each helper returns a new
 * tensor or NULL with the error set, and leaves its arguments alone. */

/* x in the dtype the statistics are computed in (float32 for halves). */
static em_tensor *gpu_compute_in(em_tensor *x) {
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  return cdt == dt ? em_tensor_retain(x) : em_tensor_to_dtype(x, cdt);
}

/* (x - m) * rsqrt(v + eps), m and v broadcasting against x. */
static em_tensor *gpu_standardize(em_tensor *x, em_tensor *m, em_tensor *v, double eps) {
  em_tensor *ve = em_tensor_add_scalar(v, em_scalar_float(eps));
  em_tensor *rs = ve ? em_tensor_rsqrt(ve) : NULL;
  em_tensor *xm = rs ? em_tensor_sub(x, m) : NULL;
  em_tensor *y = xm ? em_tensor_mul(xm, rs) : NULL;
  em_tensor_release(ve), em_tensor_release(rs), em_tensor_release(xm);
  return y;
}

/* x standardised over dims of x (population variance); mean_out /
 * var_out (optional): the statistics (keepdim). */
static em_tensor *gpu_normalize(em_tensor *x, int nd, const int64_t *dims, double eps,
                                em_tensor **mean_out, em_tensor **var_out) {
  em_tensor *m = em_tensor_mean(x, nd, dims, true, EM_DTYPE_UNDEFINED);
  em_tensor *v = m ? em_tensor_var(x, nd, dims, 0, true) : NULL;
  em_tensor *y = v ? gpu_standardize(x, m, v, eps) : NULL;
  if (y && mean_out) *mean_out = em_tensor_retain(m);
  if (y && var_out) *var_out = em_tensor_retain(v);
  em_tensor_release(m), em_tensor_release(v);
  return y;
}

/* y * w + b, w and b (either NULL) viewed as [C, 1, ...] (ndim - 1 ones)
 * when per_channel, else as they are; then x's dtype. Consumes y. */
static em_tensor *gpu_affine(em_tensor *y, em_tensor *w, em_tensor *b, bool per_channel, int ndim,
                             em_dtype dt) {
  int64_t shape[EM_MAX_DIMS];
  em_tensor *ps[2] = {w, b};
  for (int i = 1; i < ndim; i++) shape[i] = 1;
  for (int k = 0; k < 2 && y; k++) {
    if (!ps[k]) continue;
    shape[0] = ps[k]->numel;
    em_tensor *pv = per_channel ? em_tensor_reshape(ps[k], ndim, shape) : em_tensor_retain(ps[k]);
    em_tensor *r = pv ? (k == 0 ? em_tensor_mul(y, pv) : em_tensor_add(y, pv)) : NULL;
    em_tensor_release(pv), em_tensor_release(y);
    y = r;
  }
  if (y && (em_dtype)y->dtype != dt) {
    em_tensor *r = em_tensor_to_dtype(y, dt);
    em_tensor_release(y);
    y = r;
  }
  return y;
}

/* stat <- (1 - m) stat + m * batch (no autograd; batch keepdim, any
 * layout: flattened to stat's shape). */
static em_status gpu_update_running(em_tensor *stat, em_tensor *batch, double m) {
  bool prev = em_set_grad_enabled(false);
  em_tensor *bf = em_tensor_reshape(batch, stat->ndim, stat->shape);
  em_tensor *a = bf ? em_tensor_mul_scalar(bf, em_scalar_float(m)) : NULL;
  em_tensor *old = a ? em_tensor_to_dtype(stat, (em_dtype)a->dtype) : NULL;
  em_tensor *o = old ? em_tensor_mul_scalar(old, em_scalar_float(1 - m)) : NULL;
  em_tensor *n = o ? em_tensor_add(o, a) : NULL;
  em_status st = n ? em__copy_into(stat, n) : em_last_status();
  if (!st) em__bump_version(stat);
  em_tensor_release(bf), em_tensor_release(a), em_tensor_release(old), em_tensor_release(o);
  em_tensor_release(n);
  em_set_grad_enabled(prev);
  return st;
}

/* Batch norm with batch statistics, composed: normalised over every dim
 * but the channels; the running statistics updated when given. */
static em_tensor *gpu_batch_norm_batch(em_tensor *x, em_tensor *rm, em_tensor *rv, em_tensor *w,
                                       em_tensor *b, double momentum, double eps) {
  int64_t dims[EM_MAX_DIMS];
  int nd = 0;
  dims[nd++] = 0;
  for (int d = 2; d < x->ndim; d++) dims[nd++] = d;
  em_tensor *xc = gpu_compute_in(x), *mean = NULL, *var = NULL;
  em_tensor *y = xc ? gpu_normalize(xc, nd, dims, eps, &mean, &var) : NULL;
  int64_t M = x->numel / (x->shape[1] ? x->shape[1] : 1);
  em_status st = y ? EM_OK : em_last_status();
  if (!st && rm) st = gpu_update_running(rm, mean, momentum);
  if (!st && rv) {
    em_tensor *vu = em_tensor_mul_scalar(var, em_scalar_float(M > 1 ? (double)M / (double)(M - 1) : 1.0));
    st = vu ? gpu_update_running(rv, vu, momentum) : em_last_status();
    em_tensor_release(vu);
  }
  em_tensor_release(xc), em_tensor_release(mean), em_tensor_release(var);
  if (st) {
    em_tensor_release(y);
    return NULL;
  }
  return gpu_affine(y, w, b, true, x->ndim - 1, (em_dtype)x->dtype);
}

/* Batch norm with the running statistics, composed. */
static em_tensor *gpu_batch_norm_running(em_tensor *x, em_tensor *rm, em_tensor *rv, em_tensor *w,
                                         em_tensor *b, double eps) {
  int64_t shape[EM_MAX_DIMS];
  shape[0] = x->shape[1];
  for (int i = 1; i < x->ndim - 1; i++) shape[i] = 1;
  em_tensor *xc = gpu_compute_in(x);
  em_dtype cdt = xc ? (em_dtype)xc->dtype : EM_FLOAT32;
  em_tensor *m = xc ? em_tensor_to_dtype(rm, cdt) : NULL, *v = m ? em_tensor_to_dtype(rv, cdt) : NULL;
  em_tensor *mv = v ? em_tensor_reshape(m, x->ndim - 1, shape) : NULL;
  em_tensor *vv = mv ? em_tensor_reshape(v, x->ndim - 1, shape) : NULL;
  em_tensor *y = vv ? gpu_standardize(xc, mv, vv, eps) : NULL;
  em_tensor_release(xc), em_tensor_release(m), em_tensor_release(v), em_tensor_release(mv);
  em_tensor_release(vv);
  return y ? gpu_affine(y, w, b, true, x->ndim - 1, (em_dtype)x->dtype) : NULL;
}

#ifdef EMBER_CUDA
/* Batch norm with batch statistics on cuDNN: in x, weight, bias; saved x,
 * weight, save_mean, save_invstd (cuDNN's, in the compute dtype). */
static em_status bn_cuda_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                                 em_tensor **out) {
  bn_ctx *b = em_ag_ctx_user(ctx);
  em_tensor *x = in[0], *w = in[1], *bias = in[2];
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  em_tensor *xc = NULL, *wc = NULL, *bc = NULL, *rmc = NULL, *rvc = NULL, *y = NULL;
  em_tensor *sm = NULL, *si = NULL;
  em_status st = EM_OK;
  EM_CHECK_PTR_GOTO(xc = em__as_compute(x, cdt), st, done);
  if (w) EM_CHECK_PTR_GOTO(wc = em__as_compute(w, cdt), st, done);
  if (bias) EM_CHECK_PTR_GOTO(bc = em__as_compute(bias, cdt), st, done);
  if (b->running_mean) EM_CHECK_PTR_GOTO(rmc = em__as_compute(b->running_mean, cdt), st, done);
  if (b->running_var) EM_CHECK_PTR_GOTO(rvc = em__as_compute(b->running_var, cdt), st, done);
  EM_CHECK_GOTO(em__cuda_batch_norm_forward(xc, wc, bc, rmc, rvc, true, b->momentum, b->eps, &y,
                                            &sm, &si),
                st, done);
  /* running statistics kept in another dtype or layout: copy back */
  if (rmc && rmc != b->running_mean) {
    EM_CHECK_GOTO(em__copy_into(b->running_mean, rmc), st, done);
    em__bump_version(b->running_mean);
  }
  if (rvc && rvc != b->running_var) {
    EM_CHECK_GOTO(em__copy_into(b->running_var, rvc), st, done);
    em__bump_version(b->running_var);
  }
  if (cdt != dt) EM_CHECK_GOTO(em__convert_owned(&y, dt), st, done);
  if (em_ag_ctx_needs_input_grad(ctx, 0) || em_ag_ctx_needs_input_grad(ctx, 1) ||
      em_ag_ctx_needs_input_grad(ctx, 2)) {
    em_tensor *save[4] = {x, w, sm, si};
    EM_CHECK_GOTO(em_ag_ctx_save(ctx, 4, save), st, done);
  }
done:
  em_tensor_release(xc), em_tensor_release(wc), em_tensor_release(bc);
  em_tensor_release(rmc), em_tensor_release(rvc), em_tensor_release(sm), em_tensor_release(si);
  b->running_mean = b->running_var = NULL;
  if (st) {
    em_tensor_release(y);
    return st;
  }
  out[0] = y;
  *nout = 1;
  return EM_OK;
}

static em_status bn_cuda_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                  em_tensor **grad_in) {
  bn_ctx *b = em_ag_ctx_user(ctx);
  em_tensor *dy = grad_out[0];
  if (!dy) return EM_OK;
  em_tensor *x = em_ag_ctx_saved(ctx, 0), *w = NULL, *sm, *si;
  if (!x || (b->has_w && !(w = em_ag_ctx_saved(ctx, 1))) || !(sm = em_ag_ctx_saved(ctx, 2)) ||
      !(si = em_ag_ctx_saved(ctx, 3)))
    return em_last_status();
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  em_tensor *xc = NULL, *dyc = NULL, *wc = NULL, *dx = NULL, *dw = NULL, *db = NULL;
  em_status st = EM_OK;
  EM_CHECK_PTR_GOTO(xc = em__as_compute(x, cdt), st, done);
  EM_CHECK_PTR_GOTO(dyc = em__as_compute(dy, cdt), st, done);
  if (w) EM_CHECK_PTR_GOTO(wc = em__as_compute(w, cdt), st, done);
  EM_CHECK_GOTO(em__cuda_batch_norm_backward(xc, dyc, wc, sm, si, b->eps, &dx, &dw, &db), st, done);
  if (em_ag_ctx_needs_input_grad(ctx, 0) && cdt != dt) EM_CHECK_GOTO(em__convert_owned(&dx, dt), st, done);
  if (w && (em_dtype)w->dtype != cdt) EM_CHECK_GOTO(em__convert_owned(&dw, (em_dtype)w->dtype), st, done);
  if (b->bias_dtype != EM_DTYPE_UNDEFINED && b->bias_dtype != cdt)
    EM_CHECK_GOTO(em__convert_owned(&db, b->bias_dtype), st, done);
done:
  em_tensor_release(xc), em_tensor_release(dyc), em_tensor_release(wc);
  if (st) {
    em_tensor_release(dx), em_tensor_release(dw), em_tensor_release(db);
    return st;
  }
  if (!em_ag_ctx_needs_input_grad(ctx, 0)) em_tensor_release(dx), dx = NULL;
  if (!em_ag_ctx_needs_input_grad(ctx, 1)) em_tensor_release(dw), dw = NULL;
  if (!em_ag_ctx_needs_input_grad(ctx, 2)) em_tensor_release(db), db = NULL;
  grad_in[0] = dx, grad_in[1] = dw, grad_in[2] = db;
  return EM_OK;
}

static const em_ag_function bn_cuda_function = {"CudnnBatchNormBackward0", bn_cuda_forward,
                                                bn_cuda_backward};
#endif

/* Checks that an optional per-channel tensor has C elements. */
static em_status check_numel(const char *op, const char *name, em_tensor *t, int64_t C,
                             em_tensor *x) {
  if (!t) return EM_OK;
  if (t->numel != C)
    return em__set_error(EM_ERR_SHAPE, "%s: %s should contain %lld elements not %lld", op, name,
                         (long long)C, (long long)t->numel);
  return check_param_dtype(op, name, t, x);
}

em_tensor *em_nn_f_batch_norm(em_tensor *x, em_tensor *running_mean, em_tensor *running_var,
                              em_tensor *weight, em_tensor *bias, bool training, double momentum,
                              double eps) {
  const char *op = "batch_norm";
  if (check_x(op, x)) return NULL;
  if (x->ndim < 2)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: expected an input of at least 2 dims [N, C, ...], but got input of size %s",
                   op, em__tshape(x));
  int64_t C = x->shape[1];
  if (check_numel(op, "running_mean", running_mean, C, x) ||
      check_numel(op, "running_var", running_var, C, x) ||
      check_numel(op, "weight", weight, C, x) || check_numel(op, "bias", bias, C, x))
    return NULL;
  if (!training && (running_mean || running_var)) {
    if (!running_mean)
      return EM_FAIL(EM_ERR_INVALID, "%s: running_mean must be defined in evaluation mode", op);
    if (!running_var)
      return EM_FAIL(EM_ERR_INVALID, "%s: running_var must be defined in evaluation mode", op);
  }
  bool batch_stats = training || (!running_mean && !running_var);
  int64_t S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  if (training && x->shape[0] * S == 1)
    return EM_FAIL(EM_ERR_INVALID,
                   "%s: Expected more than 1 value per channel when training, got input size %s", op,
                   em__tshape(x));
  /* running stats are updated in place inside forward: refuse ones that need grad */
  if ((running_mean && running_mean->requires_grad) || (running_var && running_var->requires_grad))
    return EM_FAIL(EM_ERR_INVALID, "%s: running_mean and running_var must not require grad", op);
  const em_ag_function *fn = &bn_function;
  if (x->device.type != EM_CPU) {
    if (!batch_stats) return gpu_batch_norm_running(x, running_mean, running_var, weight, bias, eps);
#ifdef EMBER_CUDA
    if (em_cudnn_is_available()) fn = &bn_cuda_function;
#endif
    if (fn == &bn_function)
      return gpu_batch_norm_batch(x, running_mean, running_var, weight, bias, momentum, eps);
  }
  bn_ctx *u = malloc(sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  *u = (bn_ctx){x->shape[0], C, S, batch_stats, weight != NULL, eps, momentum, running_mean,
                running_var, bias ? (em_dtype)bias->dtype : EM_DTYPE_UNDEFINED};
  em_tensor *in[3] = {x, weight, bias};
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  if (em_ag_function_apply(fn, u, free, 3, in, &nout, out)) return NULL;
  return out[0];
}

/* ---- layer norm ------------------------------------------------------------------------------ */

/* ---- what layer norm and group norm share ------------------------------------------------- */

/* A forward of x, weight, bias (either may be NULL): the inputs in the
 * compute dtype, the output in it, and the statistics [2, nstats]
 * (mean, rstd) in float64. */
typedef struct norm_fwd {
  em_dtype dt, cdt;
  em_tensor *xc, *wc, *bc, *y, *stats;
  double *mean, *rstd;
} norm_fwd;

static em_status norm_fwd_begin(norm_fwd *f, em_tensor *const *in, int64_t nstats) {
  em_tensor *x = in[0];
  memset(f, 0, sizeof *f);
  f->dt = (em_dtype)x->dtype;
  f->cdt = em__compute_dtype(f->dt);
  if (!(f->stats = em_tensor_empty(EM_DIMS(2, nstats), EM_FLOAT64)) ||
      !(f->xc = em__as_compute(x, f->cdt)) ||
      (in[1] && !(f->wc = em__as_compute(in[1], f->cdt))) ||
      (in[2] && !(f->bc = em__as_compute(in[2], f->cdt))) ||
      !(f->y = em_tensor_empty(x->ndim, x->shape, f->cdt)))
    return em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  f->mean = (double *)em__data_ptr(f->stats);
  f->rstd = f->mean + nstats;
  return EM_OK;
}

/* Ends a forward (st: how it went so far): y in x's dtype; x, weight and
 * the statistics saved for backward; the temporaries released. */
static em_status norm_fwd_end(norm_fwd *f, em_status st, em_ag_ctx *ctx, em_tensor *const *in,
                              int *nout, em_tensor **out) {
  if (!st && f->cdt != f->dt) st = em__convert_owned(&f->y, f->dt);
  if (!st && (em_ag_ctx_needs_input_grad(ctx, 0) || em_ag_ctx_needs_input_grad(ctx, 1) ||
              em_ag_ctx_needs_input_grad(ctx, 2))) {
    em_tensor *save[3] = {in[0], in[1], f->stats};
    st = em_ag_ctx_save(ctx, 3, save);
  }
  em_tensor_release(f->xc), em_tensor_release(f->wc), em_tensor_release(f->bc);
  em_tensor_release(f->stats);
  if (st) {
    em_tensor_release(f->y);
    return st;
  }
  out[0] = f->y;
  *nout = 1;
  return EM_OK;
}

/* A backward: the saved x and statistics, and x, weight (when the
 * forward had one) and dy in the compute dtype; dx allocated when x needs
 * a gradient. */
typedef struct norm_bwd {
  em_dtype cdt;
  bool need_x, need_w, need_b;
  em_tensor *x, *xc, *wc, *dyc, *dx, *dw, *db;
  double *mean, *rstd;
} norm_bwd;

static em_status norm_bwd_begin(norm_bwd *g, em_ag_ctx *ctx, em_tensor *dy, bool has_w,
                                int64_t nstats) {
  memset(g, 0, sizeof *g);
  em_tensor *x = em_ag_ctx_saved(ctx, 0), *w = NULL, *stats = NULL;
  if (!x || (has_w && !(w = em_ag_ctx_saved(ctx, 1))) || !(stats = em_ag_ctx_saved(ctx, 2)))
    return em_last_status();
  g->x = x;
  g->need_x = em_ag_ctx_needs_input_grad(ctx, 0);
  g->need_w = em_ag_ctx_needs_input_grad(ctx, 1);
  g->need_b = em_ag_ctx_needs_input_grad(ctx, 2);
  g->cdt = em__compute_dtype((em_dtype)x->dtype);
  g->mean = (double *)em__data_ptr(stats);
  g->rstd = g->mean + nstats;
  if (!(g->xc = em__as_compute(x, g->cdt)) || !(g->dyc = em__as_compute(dy, g->cdt)) ||
      (w && !(g->wc = em__as_compute(w, g->cdt))) ||
      (g->need_x && !(g->dx = em_tensor_empty(x->ndim, x->shape, g->cdt))))
    return em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  return EM_OK;
}

/* Ends a backward (st: how it went): hands out dx, dw, db or frees them. */
static em_status norm_bwd_end(norm_bwd *g, em_status st, em_tensor **grad_in) {
  em_tensor_release(g->xc), em_tensor_release(g->wc), em_tensor_release(g->dyc);
  if (st) {
    em_tensor_release(g->dx), em_tensor_release(g->dw), em_tensor_release(g->db);
    return st;
  }
  grad_in[0] = g->dx, grad_in[1] = g->dw, grad_in[2] = g->db;
  return EM_OK;
}

typedef struct ln_ctx {
  int64_t M, D;
  int nd;                     /* normalised dims */
  int64_t shape[EM_MAX_DIMS]; /* normalised shape */
  bool has_w;
  double eps;
} ln_ctx;

/* in: x, weight, bias. out: y. Saved: x, weight, stats [2, M] (mean, rstd). */
static em_status ln_fn_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                               em_tensor **out) {
  ln_ctx *l = em_ag_ctx_user(ctx);
  norm_fwd f;
  em_status st = norm_fwd_begin(&f, in, l->M);
  if (!st) {
    int64_t grain = l->D > 0 ? 1 + 32768 / l->D : 1;
    if (f.cdt == EM_FLOAT64) {
      ln_job_f64 J = {l->M, l->D, data_of(f.xc), data_of(f.wc), data_of(f.bc), NULL, data_of(f.y),
                      NULL, f.mean, f.rstd, NULL, NULL, l->eps};
      em__parallel_for(l->M, grain, ln_fwd_range_f64, &J);
    } else {
      ln_job_f32 J = {l->M, l->D, data_of(f.xc), data_of(f.wc), data_of(f.bc), NULL, data_of(f.y),
                      NULL, f.mean, f.rstd, NULL, NULL, l->eps};
      em__parallel_for(l->M, grain, ln_fwd_range_f32, &J);
    }
  }
  return norm_fwd_end(&f, st, ctx, in, nout, out);
}

/* A [n] double array as a tensor of the normalised shape and dtype dt. */
static em_tensor *param_grad(const double *v, const ln_ctx *l, em_dtype dt) {
  em_tensor *t = from_doubles(v, l->D, dt);
  if (!t) return NULL;
  em_tensor *r = em_tensor_reshape(t, l->nd, l->shape);
  em_tensor_release(t);
  return r;
}

static em_status ln_fn_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                em_tensor **grad_in) {
  ln_ctx *l = em_ag_ctx_user(ctx);
  if (!grad_out[0]) return EM_OK;
  norm_bwd g;
  double *sums = NULL;
  em_status st = norm_bwd_begin(&g, ctx, grad_out[0], l->has_w, l->M);
  if (st) goto done;
  if (g.need_x) {
    int64_t grain = l->D > 0 ? 1 + 16384 / l->D : 1;
    if (g.cdt == EM_FLOAT64) {
      ln_job_f64 J = {l->M, l->D, data_of(g.xc), data_of(g.wc), NULL, data_of(g.dyc), NULL,
                      data_of(g.dx), g.mean, g.rstd, NULL, NULL, l->eps};
      em__parallel_for(l->M, grain, ln_bwd_range_f64, &J);
    } else {
      ln_job_f32 J = {l->M, l->D, data_of(g.xc), data_of(g.wc), NULL, data_of(g.dyc), NULL,
                      data_of(g.dx), g.mean, g.rstd, NULL, NULL, l->eps};
      em__parallel_for(l->M, grain, ln_bwd_range_f32, &J);
    }
  }
  if (g.need_w || g.need_b) {
    sums = malloc(sizeof(double) * (size_t)(2 * l->D + 1));
    if (!sums) {
      st = em__set_error(EM_ERR_NOMEM, "layer_norm backward: out of memory");
      goto done;
    }
    int64_t grain = l->M > 0 ? 1 + 16384 / l->M : l->D + 1;
    if (g.cdt == EM_FLOAT64) {
      ln_job_f64 J = {l->M, l->D, data_of(g.xc), NULL, NULL, data_of(g.dyc), NULL, NULL,
                      g.mean, g.rstd, sums, sums + l->D, l->eps};
      em__parallel_for(l->D, grain, ln_param_range_f64, &J);
    } else {
      ln_job_f32 J = {l->M, l->D, data_of(g.xc), NULL, NULL, data_of(g.dyc), NULL, NULL,
                      g.mean, g.rstd, sums, sums + l->D, l->eps};
      em__parallel_for(l->D, grain, ln_param_range_f32, &J);
    }
    if (g.need_w) {
      g.dw = param_grad(sums, l, g.cdt);
      EM_CHECK_PTR_GOTO(g.dw, st, done);
    }
    if (g.need_b) {
      g.db = param_grad(sums + l->D, l, g.cdt);
      EM_CHECK_PTR_GOTO(g.db, st, done);
    }
  }
done:
  free(sums);
  return norm_bwd_end(&g, st, grad_in);
}

static const em_ag_function ln_function = {"NativeLayerNormBackward0", ln_fn_forward,
                                           ln_fn_backward};

em_tensor *em_nn_f_layer_norm(em_tensor *x, int ndim, const int64_t *shape, em_tensor *weight,
                              em_tensor *bias, double eps) {
  const char *op = "layer_norm";
  if (check_x(op, x)) return NULL;
  char ns[EM_SHAPE_STR_MAX];
  if (ndim < 1 || !shape)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Expected normalized_shape to be at least 1-dimensional, i.e., containing at "
                   "least one element, but got normalized_shape = []",
                   op);
  if (ndim > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_SHAPE, "%s: normalized_shape has %d dims (at most %d)", op, ndim,
                   EM_MAX_DIMS);
  em__shape_str(ndim, shape, ns, sizeof ns);
  bool ok = x->ndim >= ndim;
  for (int i = 0; ok && i < ndim; i++) ok = x->shape[x->ndim - ndim + i] == shape[i];
  if (!ok) {
    char star[EM_SHAPE_STR_MAX + 4];
    snprintf(star, sizeof star, "[*, %s", ns + 1);
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Given normalized_shape=%s, expected input with shape %s, but got input of "
                   "size%s",
                   op, ns, star, em__tshape(x));
  }
  em_tensor *ps[2] = {weight, bias};
  const char *names[2] = {"weight", "bias"};
  for (int k = 0; k < 2; k++) {
    em_tensor *p = ps[k];
    if (!p) continue;
    bool same = p->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = p->shape[i] == shape[i];
    if (!same)
      return EM_FAIL(EM_ERR_SHAPE,
                     "%s: Expected %s to be of same shape as normalized_shape, but got %s of shape "
                     "%s and normalized_shape = %s",
                     op, names[k], names[k], em__tshape(p), ns);
    if (check_param_dtype(op, names[k], p, x)) return NULL;
  }
  if (x->device.type != EM_CPU) { /* over the last ndim dims, composed */
    int64_t dims[EM_MAX_DIMS];
    for (int i = 0; i < ndim; i++) dims[i] = x->ndim - ndim + i;
    em_tensor *xc = gpu_compute_in(x);
    em_tensor *y = xc ? gpu_normalize(xc, ndim, dims, eps, NULL, NULL) : NULL;
    em_tensor_release(xc);
    return y ? gpu_affine(y, weight, bias, false, 0, (em_dtype)x->dtype) : NULL;
  }
  ln_ctx *u = calloc(1, sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  int64_t D = 1;
  for (int i = 0; i < ndim; i++) D *= shape[i], u->shape[i] = shape[i];
  u->D = D;
  u->M = D > 0 ? x->numel / D : 0;
  if (D == 0) { /* no normalised elements: rows are the leading dims */
    u->M = 1;
    for (int i = 0; i < x->ndim - ndim; i++) u->M *= x->shape[i];
  }
  u->nd = ndim;
  u->has_w = weight != NULL;
  u->eps = eps;
  em_tensor *in[3] = {x, weight, bias};
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  if (em_ag_function_apply(&ln_function, u, free, 3, in, &nout, out)) return NULL;
  return out[0];
}

/* ---- group norm ------------------------------------------------------------------------------ */

typedef struct gn_ctx {
  int64_t N, C, S, G;
  bool has_w;
  double eps;
} gn_ctx;

/* in: x, weight, bias. out: y. Saved: x, weight, stats [2, N*G] (mean, rstd). */
static em_status gn_fn_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                               em_tensor **out) {
  gn_ctx *q = em_ag_ctx_user(ctx);
  int64_t NG = q->N * q->G;
  norm_fwd f;
  em_status st = norm_fwd_begin(&f, in, NG);
  if (!st) {
    int64_t per = q->C / q->G * q->S, grain = per > 0 ? 1 + 32768 / per : 1;
    if (f.cdt == EM_FLOAT64) {
      gn_job_f64 J = {q->N, q->C, q->S, q->G, data_of(f.xc), data_of(f.wc), data_of(f.bc), NULL,
                      data_of(f.y), NULL, f.mean, f.rstd, NULL, NULL, q->eps};
      em__parallel_for(NG, grain, gn_fwd_range_f64, &J);
    } else {
      gn_job_f32 J = {q->N, q->C, q->S, q->G, data_of(f.xc), data_of(f.wc), data_of(f.bc), NULL,
                      data_of(f.y), NULL, f.mean, f.rstd, NULL, NULL, q->eps};
      em__parallel_for(NG, grain, gn_fwd_range_f32, &J);
    }
  }
  return norm_fwd_end(&f, st, ctx, in, nout, out);
}

static em_status gn_fn_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                em_tensor **grad_in) {
  gn_ctx *q = em_ag_ctx_user(ctx);
  if (!grad_out[0]) return EM_OK;
  const int64_t N = q->N, C = q->C, G = q->G, NG = N * G;
  norm_bwd g;
  double *sums = NULL, *pg = NULL;
  em_status st = norm_bwd_begin(&g, ctx, grad_out[0], q->has_w, NG);
  if (st) goto done;
  sums = malloc(sizeof(double) * (size_t)(2 * N * C + 1));
  pg = calloc((size_t)(2 * C + 1), sizeof(double));
  if (!sums || !pg) {
    st = em__set_error(EM_ERR_NOMEM, "group_norm backward: out of memory");
    goto done;
  }
  int64_t per = C / G * q->S, grain = per > 0 ? 1 + 16384 / per : 1;
  if (g.cdt == EM_FLOAT64) {
    gn_job_f64 J = {N, C, q->S, G, data_of(g.xc), data_of(g.wc), NULL, data_of(g.dyc), NULL,
                    data_of(g.dx), g.mean, g.rstd, sums, sums + N * C, q->eps};
    em__parallel_for(NG, grain, gn_bwd_range_f64, &J);
  } else {
    gn_job_f32 J = {N, C, q->S, G, data_of(g.xc), data_of(g.wc), NULL, data_of(g.dyc), NULL,
                    data_of(g.dx), g.mean, g.rstd, sums, sums + N * C, q->eps};
    em__parallel_for(NG, grain, gn_bwd_range_f32, &J);
  }
  /* dw[c] = sum_n rstd (sum dy (x - mean)), db[c] = sum_n sum dy */
  int64_t Cg = C / G;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      int64_t t = n * G + c / Cg;
      pg[c] += g.rstd[t] * sums[N * C + n * C + c];
      pg[C + c] += sums[n * C + c];
    }
  if (g.need_w) {
    g.dw = from_doubles(pg, C, g.cdt);
    EM_CHECK_PTR_GOTO(g.dw, st, done);
  }
  if (g.need_b) {
    g.db = from_doubles(pg + C, C, g.cdt);
    EM_CHECK_PTR_GOTO(g.db, st, done);
  }
done:
  free(sums), free(pg);
  return norm_bwd_end(&g, st, grad_in);
}

static const em_ag_function gn_function = {"NativeGroupNormBackward0", gn_fn_forward,
                                           gn_fn_backward};

em_tensor *em_nn_f_group_norm(em_tensor *x, int64_t num_groups, em_tensor *weight, em_tensor *bias,
                              double eps) {
  const char *op = "group_norm";
  if (check_x(op, x)) return NULL;
  if (x->ndim < 2)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: expected an input of at least 2 dims [N, C, ...], but got input of size %s",
                   op, em__tshape(x));
  if (num_groups <= 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: num_groups must be positive, but got num_groups=%lld", op,
                   (long long)num_groups);
  int64_t N = x->shape[0], C = x->shape[1];
  if (C % num_groups != 0)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Expected number of channels in input to be divisible by num_groups, but got "
                   "input of shape %s and num_groups=%lld",
                   op, em__tshape(x), (long long)num_groups);
  em_tensor *ps[2] = {weight, bias};
  const char *names[2] = {"weight", "bias"};
  for (int k = 0; k < 2; k++) {
    em_tensor *p = ps[k];
    if (!p) continue;
    if (p->ndim != 1 || p->shape[0] != C)
      return EM_FAIL(EM_ERR_SHAPE,
                     "%s: Expected %s to be a vector of size equal to the number of channels in "
                     "input, but got %s of shape %s and input of shape %s",
                     op, names[k], names[k], em__tshape(p), em__tshape(x));
    if (check_param_dtype(op, names[k], p, x)) return NULL;
  }
  if (x->device.type != EM_CPU) { /* [N, G, rest] normalised over rest, composed */
    const int64_t dim2[] = {2};
    em_tensor *xc = gpu_compute_in(x);
    int64_t rest = C / num_groups; /* not -1: N may be 0 */
    for (int d = 2; d < x->ndim; d++) rest *= x->shape[d];
    em_tensor *xg = xc ? em_tensor_reshape(xc, EM_DIMS(N, num_groups, rest)) : NULL;
    em_tensor *yg = xg ? gpu_normalize(xg, 1, dim2, eps, NULL, NULL) : NULL;
    em_tensor *y = yg ? em_tensor_reshape(yg, x->ndim, x->shape) : NULL;
    em_tensor_release(xc), em_tensor_release(xg), em_tensor_release(yg);
    return y ? gpu_affine(y, weight, bias, true, x->ndim - 1, (em_dtype)x->dtype) : NULL;
  }
  gn_ctx *u = malloc(sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  int64_t S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  *u = (gn_ctx){N, C, S, num_groups, weight != NULL, eps};
  em_tensor *in[3] = {x, weight, bias};
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  if (em_ag_function_apply(&gn_function, u, free, 3, in, &nout, out)) return NULL;
  return out[0];
}

/* ---- modules ----------------------------------------------------------------------------------- */

/* A double as Python's repr prints it: "1e-05", "0.1", "100.0". */
static const char *py_float(double v, char *buf, size_t n) {
  if (isnan(v)) return snprintf(buf, n, "nan"), buf;
  if (isinf(v)) return snprintf(buf, n, v > 0 ? "inf" : "-inf"), buf;
  char e[40];
  for (int p = 1; p <= 17; p++) { /* the shortest round-tripping digits */
    snprintf(e, sizeof e, "%.*e", p - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  /* e is "-d.ddde+XX": collect the digits and the exponent */
  char digits[24];
  int nd = 0;
  const char *c = e;
  bool neg = *c == '-';
  if (neg) c++;
  for (; *c && *c != 'e'; c++)
    if (*c >= '0' && *c <= '9') digits[nd++] = *c;
  int ex = atoi(c + 1);
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  digits[nd] = '\0';
  size_t k = 0;
#define PUT(ch) (k + 1 < n ? (void)(buf[k++] = (ch)) : (void)0)
  if (neg) PUT('-');
  if (ex >= 16 || ex < -4) {
    PUT(digits[0]);
    if (nd > 1) {
      PUT('.');
      for (int i = 1; i < nd; i++) PUT(digits[i]);
    }
    char tail[16];
    snprintf(tail, sizeof tail, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    for (char *t = tail; *t; t++) PUT(*t);
  } else if (ex >= 0) {
    for (int i = 0; i <= ex; i++) PUT(i < nd ? digits[i] : '0');
    PUT('.');
    if (nd > ex + 1)
      for (int i = ex + 1; i < nd; i++) PUT(digits[i]);
    else
      PUT('0');
  } else {
    PUT('0');
    PUT('.');
    for (int i = 0; i < -ex - 1; i++) PUT('0');
    for (int i = 0; i < nd; i++) PUT(digits[i]);
  }
#undef PUT
  buf[k] = '\0';
  return buf;
}

static em_status one_input(em_module *m, int nin) {
  if (nin != 1)
    return em__set_error(EM_ERR_INVALID, "%s.forward: takes 1 input, got %d", em_module_type_name(m),
                         nin);
  return EM_OK;
}

/* A float32 parameter or buffer filled with value. */
static em_tensor *filled(int ndim, const int64_t *shape, double value) {
  return em_tensor_full(ndim, shape, em_scalar_float(value), EM_FLOAT32);
}

static em_status add_param(em_module *m, const char *name, em_tensor *t) {
  if (!t) return em_last_status();
  em_status st = em_module_register_parameter(m, name, t);
  em_tensor_release(t);
  return st;
}

static em_status add_buffer(em_module *m, const char *name, em_tensor *t) {
  if (!t) return em_last_status();
  em_status st = em_module_register_buffer(m, name, t, true);
  em_tensor_release(t);
  return st;
}

typedef struct bn_impl {
  int64_t C;
  double eps, momentum; /* momentum NaN: None */
  bool affine, track, two_d;
} bn_impl;

static em_tensor *bn_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  bn_impl *p = em_module_impl(m);
  em_tensor *x = in[0];
  if (p->two_d ? x->ndim != 4 : (x->ndim != 2 && x->ndim != 3))
    return EM_FAIL(EM_ERR_SHAPE, "%s: expected %s input (got %dD input)", em_module_type_name(m),
                   p->two_d ? "4D" : "2D or 3D", x->ndim);
  bool training = em_module_is_training(m);
  em_tensor *rm = em_module_buffer(m, "running_mean"), *rv = em_module_buffer(m, "running_var");
  em_tensor *nbt = em_module_buffer(m, "num_batches_tracked");
  double factor = isnan(p->momentum) ? 0.0 : p->momentum;
  bool count = training && p->track && nbt;
  int64_t batches = 0;
  if (count) {
    batches = (int64_t)em_tensor_item_double(nbt) + 1;
    if (isnan(p->momentum)) factor = 1.0 / (double)batches;
  }
  bool bn_training = training || (!rm && !rv);
  bool pass_stats = !training || p->track;
  em_tensor *y = em_nn_f_batch_norm(x, pass_stats ? rm : NULL, pass_stats ? rv : NULL,
                                    em_module_parameter(m, "weight"), em_module_parameter(m, "bias"),
                                    bn_training, factor, p->eps);
  if (y && count) { /* num_batches_tracked += 1 (after success: a failed call changes nothing) */
    em_status st = em_tensor_fill_(nbt, em_scalar_int(batches));
    if (st) {
      em_tensor_release(y);
      return NULL;
    }
  }
  return y;
}

static char *bn_repr(em_module *m) {
  bn_impl *p = em_module_impl(m);
  char e[40], mo[40];
  return em__nn_fmt("%lld, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", (long long)p->C,
             py_float(p->eps, e, sizeof e),
             isnan(p->momentum) ? "None" : py_float(p->momentum, mo, sizeof mo),
             p->affine ? "True" : "False", p->track ? "True" : "False");
}

static const em_module_ops bn1d_ops = {"BatchNorm1d", bn_forward, bn_repr, free};
static const em_module_ops bn2d_ops = {"BatchNorm2d", bn_forward, bn_repr, free};

static em_module *bn_module(const em_module_ops *ops, int64_t C, double eps, double momentum,
                            bool affine, bool track, bool two_d) {
  if (C < 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: Trying to create tensor with negative dimension %lld: [%lld]",
                   ops->type_name, (long long)C, (long long)C);
  bn_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", ops->type_name);
  *p = (bn_impl){C, eps, momentum, affine, track, two_d};
  em_module *m = em_module_create(ops, p);
  if (!m) return NULL;
  em_status st = EM_OK;
  if (affine) {
    st = add_param(m, "weight", filled(EM_DIMS(C), 1.0));
    if (!st) st = add_param(m, "bias", filled(EM_DIMS(C), 0.0));
  } else {
    st = em_module_register_parameter(m, "weight", NULL);
    if (!st) st = em_module_register_parameter(m, "bias", NULL);
  }
  if (!st && track) {
    st = add_buffer(m, "running_mean", filled(EM_DIMS(C), 0.0));
    if (!st) st = add_buffer(m, "running_var", filled(EM_DIMS(C), 1.0));
    if (!st) st = add_buffer(m, "num_batches_tracked", em_tensor_zeros(0, NULL, EM_INT64));
  }
  if (st) {
    em_module_release(m);
    return NULL;
  }
  return m;
}

em_module *em_nn_batch_norm1d(int64_t num_features, double eps, double momentum, bool affine,
                              bool track_running_stats) {
  return bn_module(&bn1d_ops, num_features, eps, momentum, affine, track_running_stats, false);
}

em_module *em_nn_batch_norm2d(int64_t num_features, double eps, double momentum, bool affine,
                              bool track_running_stats) {
  return bn_module(&bn2d_ops, num_features, eps, momentum, affine, track_running_stats, true);
}

typedef struct ln_impl {
  int nd;
  int64_t shape[EM_MAX_DIMS];
  double eps;
  bool affine;
} ln_impl;

static em_tensor *ln_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  ln_impl *p = em_module_impl(m);
  return em_nn_f_layer_norm(in[0], p->nd, p->shape, em_module_parameter(m, "weight"),
                            em_module_parameter(m, "bias"), p->eps);
}

static char *ln_repr(em_module *m) {
  ln_impl *p = em_module_impl(m);
  char s[EM_SHAPE_STR_MAX] = "(";
  size_t k = 1;
  for (int i = 0; i < p->nd; i++)
    k += (size_t)snprintf(s + k, sizeof s - k, "%s%lld", i ? ", " : "", (long long)p->shape[i]);
  snprintf(s + k, sizeof s - k, p->nd == 1 ? ",)" : ")");
  char e[40];
  return em__nn_fmt("%s, eps=%s, elementwise_affine=%s", s, py_float(p->eps, e, sizeof e),
             p->affine ? "True" : "False");
}

static const em_module_ops ln_ops = {"LayerNorm", ln_forward, ln_repr, free};

em_module *em_nn_layer_norm(int ndim, const int64_t *shape, double eps, bool elementwise_affine) {
  if (ndim < 1 || ndim > EM_MAX_DIMS || !shape)
    return EM_FAIL(EM_ERR_INVALID, "LayerNorm: normalized_shape must have 1 to %d dims, got %d",
                   EM_MAX_DIMS, ndim);
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0)
      return EM_FAIL(EM_ERR_INVALID, "LayerNorm: Trying to create tensor with negative dimension %lld",
                     (long long)shape[i]);
  ln_impl *p = calloc(1, sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "LayerNorm: out of memory");
  p->nd = ndim;
  memcpy(p->shape, shape, sizeof(int64_t) * (size_t)ndim);
  p->eps = eps;
  p->affine = elementwise_affine;
  em_module *m = em_module_create(&ln_ops, p);
  if (!m) return NULL;
  em_status st;
  if (elementwise_affine) {
    st = add_param(m, "weight", filled(ndim, shape, 1.0));
    if (!st) st = add_param(m, "bias", filled(ndim, shape, 0.0));
  } else {
    st = em_module_register_parameter(m, "weight", NULL);
    if (!st) st = em_module_register_parameter(m, "bias", NULL);
  }
  if (st) {
    em_module_release(m);
    return NULL;
  }
  return m;
}

typedef struct gn_impl {
  int64_t groups, channels;
  double eps;
  bool affine;
} gn_impl;

static em_tensor *gn_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  gn_impl *p = em_module_impl(m);
  return em_nn_f_group_norm(in[0], p->groups, em_module_parameter(m, "weight"),
                            em_module_parameter(m, "bias"), p->eps);
}

static char *gn_repr(em_module *m) {
  gn_impl *p = em_module_impl(m);
  char e[40];
  return em__nn_fmt("%lld, %lld, eps=%s, affine=%s", (long long)p->groups, (long long)p->channels,
             py_float(p->eps, e, sizeof e), p->affine ? "True" : "False");
}

static const em_module_ops gn_ops = {"GroupNorm", gn_forward, gn_repr, free};

em_module *em_nn_group_norm(int64_t num_groups, int64_t num_channels, double eps, bool affine) {
  if (num_groups <= 0)
    return EM_FAIL(EM_ERR_INVALID, "GroupNorm: num_groups must be positive, got %lld",
                   (long long)num_groups);
  if (num_channels < 0)
    return EM_FAIL(EM_ERR_INVALID, "GroupNorm: Trying to create tensor with negative dimension %lld",
                   (long long)num_channels);
  if (num_channels % num_groups != 0)
    return EM_FAIL(EM_ERR_INVALID, "GroupNorm: num_channels must be divisible by num_groups");
  gn_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "GroupNorm: out of memory");
  *p = (gn_impl){num_groups, num_channels, eps, affine};
  em_module *m = em_module_create(&gn_ops, p);
  if (!m) return NULL;
  em_status st;
  if (affine) {
    st = add_param(m, "weight", filled(EM_DIMS(num_channels), 1.0));
    if (!st) st = add_param(m, "bias", filled(EM_DIMS(num_channels), 0.0));
  } else {
    st = em_module_register_parameter(m, "weight", NULL);
    if (!st) st = em_module_register_parameter(m, "bias", NULL);
  }
  if (st) {
    em_module_release(m);
    return NULL;
  }
  return m;
}
