/* Creation ops that count: arange, linspace, eye.
 *
 * arange and linspace fill through the range kernels of core/cpu/random.c
 * (EM_OP_ARANGE / EM_OP_LINSPACE, attrs layout documented there); none of
 * these ops records autograd (their results are leaves, as in PyTorch).
 */
#include <math.h>

#include "core/core_impl.h"

em_status em__range_fill(em_op op, em_tensor *t, const char *in, const em_op_attrs *a,
                         int64_t grain);

/* ---- arange -------------------------------------------------------------------------- */

static bool scalar_is_int(em_scalar s) { return s.kind != EM_SCALAR_FLOAT; }

/* PyTorch's Scalar::to<int64_t>(): truncation, refusing what does not fit. */
static em_status scalar_to_i64(em_scalar s, int64_t *out) {
  if (scalar_is_int(s)) {
    *out = s.v.i;
    return EM_OK;
  }
  double v = s.v.f;
  if (!(v >= -9.2233720368547758e18 && v < 9.2233720368547758e18))
    return em__set_error(EM_ERR_INVALID,
                         "arange: value %g cannot be converted to type int64 without overflow", v);
  *out = (int64_t)v;
  return EM_OK;
}

/* Size rule and checks as PyTorch's arange_out: the values are first taken
 * in the dtype's accumulate type (int64 for integer dtypes, double for
 * float32/float64, float for float16/bfloat16); the size is
 * ceil((end - start) / step) in double (for int64 from the int64
 * difference, so large int64 ranges stay exact). */
em_tensor *em_tensor_arange(em_scalar start, em_scalar end, em_scalar step, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED)
    dt = scalar_is_int(start) && scalar_is_int(end) && scalar_is_int(step) ? EM_INT64
                                                                            : em_get_default_dtype();
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "arange: invalid dtype %d", (int)dt);
  if (dt == EM_BOOL) return EM_FAIL(EM_ERR_DTYPE, "arange: not implemented for bool");
  em_op_attrs a = {0};
  double size_d;
  if (em_dtype_is_float(dt)) {
    double xs = em_scalar_to_double(start), xe = em_scalar_to_double(end),
           xst = em_scalar_to_double(step);
    if (dt == EM_FLOAT16 || dt == EM_BFLOAT16) { /* accumulate type float */
      xs = (float)xs, xe = (float)xe, xst = (float)xst;
    }
    if (!(xst > 0 || xst < 0)) return EM_FAIL(EM_ERR_INVALID, "arange: step must be nonzero");
    if (!isfinite(xs) || !isfinite(xe))
      return EM_FAIL(EM_ERR_INVALID, "arange: unsupported range: %g -> %g", xs, xe);
    if (!((xst > 0 && xe >= xs) || (xst < 0 && xe <= xs)))
      return EM_FAIL(EM_ERR_INVALID,
                     "arange: upper bound and larger bound inconsistent with step sign "
                     "(start %g, end %g, step %g)",
                     xs, xe, xst);
    size_d = ceil((em_scalar_to_double(end) - em_scalar_to_double(start)) /
                  em_scalar_to_double(step));
    a.f[0] = xs;
    a.f[1] = xst;
  } else {
    int64_t xs = 0, xe = 0, xst = 0;
    if (scalar_to_i64(start, &xs) || scalar_to_i64(end, &xe) || scalar_to_i64(step, &xst))
      return NULL;
    if (xst == 0) return EM_FAIL(EM_ERR_INVALID, "arange: step must be nonzero");
    if (!((xst > 0 && xe >= xs) || (xst < 0 && xe <= xs)))
      return EM_FAIL(EM_ERR_INVALID,
                     "arange: upper bound and larger bound inconsistent with step sign "
                     "(start %lld, end %lld, step %lld)",
                     (long long)xs, (long long)xe, (long long)xst);
    if (dt == EM_INT64) {
      int64_t diff;
      if (__builtin_sub_overflow(xe, xs, &diff))
        return EM_FAIL(EM_ERR_INVALID, "arange: invalid size, possible overflow?");
      size_d = ceil((double)diff / (double)xst);
    } else {
      size_d = ceil((em_scalar_to_double(end) - em_scalar_to_double(start)) /
                    em_scalar_to_double(step));
    }
    a.i[0] = xs;
    a.i[1] = xst;
  }
  if (!(size_d >= 0 && size_d < 9.2233720368547758e18)) /* < 2^63: fits int64 */
    return EM_FAIL(EM_ERR_INVALID, "arange: invalid size, possible overflow?");
  int64_t n = (int64_t)size_d;
  em_tensor *t = em_tensor_empty(EM_DIMS(n), dt);
  if (!t) {
    em__prefix_error("arange");
    return NULL;
  }
  if (em__range_fill(EM_OP_ARANGE, t, NULL, &a, EM_GRAIN_CHEAP)) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

/* ---- linspace ------------------------------------------------------------------------ */

em_tensor *em_tensor_linspace(double start, double end, int64_t steps, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "linspace: invalid dtype %d", (int)dt);
  if (dt == EM_BOOL) return EM_FAIL(EM_ERR_DTYPE, "linspace: not implemented for bool");
  if (steps < 0)
    return EM_FAIL(EM_ERR_INVALID, "linspace: number of steps must be non-negative, got %lld",
                   (long long)steps);
  em_op_attrs a = {0};
  a.f[0] = start;
  a.f[1] = end;
  a.i[0] = steps;
  if (!em_dtype_is_float(dt)) {
    /* PyTorch converts start and end to the dtype first (truncating) and
     * steps from those integers. */
    int64_t lo, hi;
    switch (dt) {
      case EM_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
      case EM_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
      case EM_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
      case EM_UINT8: lo = 0, hi = UINT8_MAX; break;
      default: lo = INT64_MIN, hi = INT64_MAX; break;
    }
    double v[2] = {start, end};
    for (int i = 0; i < 2; i++) {
      double tv = trunc(v[i]);
      if (!(tv >= (double)lo && tv <= (double)hi) || (dt == EM_INT64 && tv >= 9.2233720368547758e18))
        return EM_FAIL(EM_ERR_INVALID,
                       "linspace: value %g cannot be converted to type %s without overflow", v[i],
                       em_dtype_name(dt));
      a.f[i] = (double)(int64_t)tv;
    }
  }
  em_tensor *t = em_tensor_empty(EM_DIMS(steps), dt);
  if (!t) {
    em__prefix_error("linspace");
    return NULL;
  }
  em_status st = EM_OK;
  if (steps == 1)
    st = em_tensor_fill_(t, em_scalar_float(a.f[0]));
  else if (steps > 1)
    st = em__range_fill(EM_OP_LINSPACE, t, NULL, &a, EM_GRAIN_CHEAP);
  if (st) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

/* ---- eye ----------------------------------------------------------------------------- */

/* m < 0 means m = n (C has no optional arguments; PyTorch's eye(n)). */
em_tensor *em_tensor_eye(int64_t n, int64_t m, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "eye: invalid dtype %d", (int)dt);
  if (n < 0)
    return EM_FAIL(EM_ERR_INVALID, "eye: n must be greater or equal to 0, got %lld", (long long)n);
  if (m < 0) m = n;
  em_tensor *t = em_tensor_zeros(EM_DIMS(n, m), dt);
  if (!t) {
    em__prefix_error("eye");
    return NULL;
  }
  int64_t k = n < m ? n : m;
  if (k == 0) return t;
  /* the diagonal as a strided view, filled with ones */
  int64_t stride = m + 1;
  em_tensor *diag = em__tensor_view_of(t, 1, &k, &stride, t->offset);
  em_status st = diag ? em_tensor_fill_(diag, em_scalar_int(1)) : em_last_status();
  em_tensor_release(diag);
  if (st) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}
