/* gradcheck: the Jacobian from backward against central differences, in
 * float64. */
#include <math.h>
#include <stdlib.h>

#include "autograd/autograd_impl.h"

/* Address of logical element e of t (row-major order over its shape). */
static double *elem(em_tensor *t, int64_t e) {
  int64_t off = t->offset;
  for (int d = t->ndim - 1; d >= 0; d--) {
    off += (e % t->shape[d]) * t->strides[d];
    e /= t->shape[d];
  }
  return (double *)t->storage->data + off;
}

/* Logical element e of any float tensor as double. */
static double em_test_get_f64(em_tensor *t, int64_t e) {
  int64_t off = t->offset;
  for (int d = t->ndim - 1; d >= 0; d--) {
    off += (e % t->shape[d]) * t->strides[d];
    e /= t->shape[d];
  }
  return em__load_f64((char *)t->storage->data + off * (int64_t)em_dtype_size((em_dtype)t->dtype),
                      (em_dtype)t->dtype);
}

/* y = fn(in) flattened to float64 values (no grad). */
static em_status eval(em_ag_gradcheck_fn fn, void *ctx, int nin, em_tensor *const *in,
                      double *out, int64_t m) {
  bool prev = em_set_grad_enabled(false);
  em_tensor *y = fn(nin, in, ctx);
  em_set_grad_enabled(prev);
  if (!y) return em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  em_status st = EM_OK;
  if (y->numel != m) {
    st = em__set_error(EM_ERR_INVALID, "gradcheck: the function's output changed size (%lld, was %lld)",
                       (long long)y->numel, (long long)m);
  } else {
    for (int64_t j = 0; j < m; j++) {
      int64_t off = y->offset, e = j;
      for (int d = y->ndim - 1; d >= 0; d--) {
        off += (e % y->shape[d]) * y->strides[d];
        e /= y->shape[d];
      }
      out[j] = em__load_f64((char *)y->storage->data + off * (int64_t)em_dtype_size((em_dtype)y->dtype),
                            (em_dtype)y->dtype);
    }
  }
  em_tensor_release(y);
  return st;
}

em_status em_ag_gradcheck(em_ag_gradcheck_fn fn, void *ctx, int nin, em_tensor *const *in,
                          double eps, double atol, double rtol) {
  em_tensor *checked[64];
  int idx[64], nc = 0;
  for (int i = 0; i < nin; i++) {
    if (!in[i] || !in[i]->requires_grad) continue;
    if (in[i]->dtype != EM_FLOAT64)
      return em__set_error(EM_ERR_DTYPE, "gradcheck: input %d is %s; gradcheck needs float64 inputs",
                           i, em_dtype_name((em_dtype)in[i]->dtype));
    if (nc == 64) return em__set_error(EM_ERR_INVALID, "gradcheck: at most 64 inputs");
    checked[nc] = in[i];
    idx[nc++] = i;
  }
  if (nc == 0) return em__set_error(EM_ERR_INVALID, "gradcheck: no input requires grad");

  em_tensor *y = fn(nin, in, ctx);
  if (!y) {
    if (!em_last_status()) em__set_error(EM_ERR_INTERNAL, "gradcheck: the function failed");
    return em_last_status();
  }
  em_status st = EM_OK;
  int64_t m = y->numel;
  double *plus = NULL, *minus = NULL, **analytic = NULL;
  em_tensor *onehot = NULL;
  em_tensor **grads = calloc((size_t)nc, sizeof *grads);
  analytic = calloc((size_t)nc, sizeof *analytic);
  plus = malloc(sizeof(double) * (size_t)(m + 1));
  minus = malloc(sizeof(double) * (size_t)(m + 1));
  if (!grads || !analytic || !plus || !minus) {
    st = em__set_error(EM_ERR_NOMEM, "gradcheck: out of memory");
    goto done;
  }
  if (!y->requires_grad) {
    st = em__set_error(EM_ERR_INVALID, "gradcheck: the output does not require grad (no input "
                       "reaches it through differentiable ops)");
    goto done;
  }
  for (int c = 0; c < nc; c++) {
    analytic[c] = calloc((size_t)(m * checked[c]->numel + 1), sizeof(double));
    if (!analytic[c]) {
      st = em__set_error(EM_ERR_NOMEM, "gradcheck: out of memory");
      goto done;
    }
  }
  /* analytical: one backward per output element, row j of each Jacobian */
  onehot = em_tensor_zeros(y->ndim, y->shape, (em_dtype)y->dtype);
  EM_CHECK_PTR_GOTO(onehot, st, done);
  for (int64_t j = 0; j < m; j++) {
    em__store_f64(elem(onehot, j), EM_FLOAT64, 1.0);
    if (y->dtype != EM_FLOAT64) {
      st = em__set_error(EM_ERR_DTYPE, "gradcheck: the output is %s, expected float64",
                         em_dtype_name((em_dtype)y->dtype));
      goto done;
    }
    st = em_ag_grad(1, &y, &onehot, nc, checked, true, true, grads);
    /* read before resetting: a gradient may be a view of the one-hot */
    for (int c = 0; !st && c < nc; c++) {
      if (!grads[c]) continue;
      for (int64_t e = 0; e < checked[c]->numel; e++)
        analytic[c][j * checked[c]->numel + e] = em_test_get_f64(grads[c], e);
    }
    for (int c = 0; c < nc; c++) {
      em_tensor_release(grads[c]);
      grads[c] = NULL;
    }
    *elem(onehot, j) = 0.0;
    if (st) goto done;
  }
  /* numerical, column by column */
  double worst = 0;
  for (int c = 0; c < nc && !st; c++) {
    em_tensor *x = checked[c];
    for (int64_t e = 0; e < x->numel && !st; e++) {
      double *p = elem(x, e), orig = *p;
      *p = orig + eps;
      st = eval(fn, ctx, nin, in, plus, m);
      *p = orig - eps;
      if (!st) st = eval(fn, ctx, nin, in, minus, m);
      *p = orig;
      for (int64_t j = 0; j < m && !st; j++) {
        double num = (plus[j] - minus[j]) / (2 * eps);
        double ana = analytic[c][j * x->numel + e];
        double diff = fabs(num - ana);
        if (diff > worst) worst = diff;
        if (!(diff <= atol + rtol * fabs(num)))
          st = em__set_error(EM_ERR_INVALID,
                             "gradcheck: Jacobian mismatch for output element %lld with respect to "
                             "input %d element %lld: numerical %.10g, analytical %.10g (difference "
                             "%.3g; atol %g, rtol %g)",
                             (long long)j, idx[c], (long long)e, num, ana, diff, atol, rtol);
      }
    }
  }
done:
  em_tensor_release(onehot);
  for (int c = 0; grads && c < nc; c++) em_tensor_release(grads[c]);
  for (int c = 0; analytic && c < nc; c++) free(analytic[c]);
  free(grads);
  free(analytic);
  free(plus);
  free(minus);
  em_tensor_release(y);
  return st;
}
