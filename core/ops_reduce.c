/* Reductions, softmax and cumulative ops: argument checking, result
 * dtypes and shapes as PyTorch 1.13, then one kernel call (kernels in
 * core/cpu/reduce.c), then autograd recording.
 *
 * Dim lists: ndims 0 (dims may be NULL) reduces every dim; negative dims
 * count from the end; a repeated dim is an error. A 0-dim input accepts
 * dim 0 / -1 and reduces its single element.
 *
 * Autograd attrs (em_op_attrs) recorded per op. Inputs are the tensor the
 * caller passed (before any dtype conversion). In every dim-list op,
 * nd / d[0..nd) are the reduced dims, wrapped to [0, ndim), in the order
 * given (0..ndim-1 when the caller passed none; for a 0-dim input d may
 * hold 0 although the input has no dims), and i[0] = keepdim.
 *   SUM, MEAN, PROD  d/nd, i[0] keepdim, i[1] = the dtype argument (-1 if
 *                    none); the result has that dtype, or int64 for sum /
 *                    prod of integer and bool inputs, else the input's.
 *   AMAX, AMIN       d/nd, i[0] keepdim. max_all / min_all record AMAX /
 *                    AMIN over all dims with keepdim 0 (0-dim result).
 *                    Backward: gradient shared evenly between ties.
 *   VAR, STD         d/nd, i[0] keepdim, f[0] = correction (divisor
 *                    max(0, N - correction)).
 *   LOGSUMEXP        d/nd, i[0] keepdim (integer inputs are converted to
 *                    the default float dtype first).
 *   NORM             d/nd, i[0] keepdim, f[0] = p (0, 1, 2, inf, -inf or
 *                    any other).
 *   MAX_DIM, MIN_DIM nd = 1, d[0] = the wrapped dim, i[0] keepdim, i[1] =
 *                    the wrapped dim; two outputs: values, int64 indices
 *                    (backward puts the gradient at the index). For a
 *                    0-dim input nothing is reduced (index 0).
 *   SOFTMAX,         nd = 0, i[1] = the wrapped dim (0 for a 0-dim input),
 *   LOG_SOFTMAX      i[2] = the dtype argument (-1 if none; the input is
 *                    converted to it first).
 *   CUMSUM, CUMPROD  nd = 0, i[1] = the wrapped dim, i[2] = the dtype
 *                    argument (-1 if none; ints/bool give int64).
 * ALL, ANY, COUNT_NONZERO, ARGMAX and ARGMIN are not differentiable and
 * record nothing.
 */
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"


/* Signature of every kernel of this family (see core/cpu/reduce.c). */
typedef em_status (*reduce_kernel)(em_tensor *const *out, em_tensor *in, const em_op_attrs *a);

static bool is_intlike(em_dtype dt) { return !em_dtype_is_float(dt); }

static em_status check_input(const char *op, em_tensor *t) {
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: input tensor is NULL", op);
  return EM_OK;
}

static em_status check_dtype_arg(const char *op, em_dtype dt) {
  if (dt != EM_DTYPE_UNDEFINED && !em_dtype_is_valid(dt))
    return em__set_error(EM_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dt);
  return EM_OK;
}

/* Fills a->nd / a->d with the wrapped reduced dims and a->i[0] with
 * keepdim; *red marks the reduced dims of t. */
static em_status reduce_dims(const char *op, em_tensor *t, int ndims, const int64_t *dims,
                             bool keepdim, em_op_attrs *a, bool *red) {
  if (ndims < 0) return em__set_error(EM_ERR_INVALID, "%s: ndims %d is negative", op, ndims);
  if (ndims > 0 && !dims)
    return em__set_error(EM_ERR_INVALID, "%s: dims is NULL but ndims is %d", op, ndims);
  memset(red, 0, EM_MAX_DIMS * sizeof *red);
  if (ndims == 0) {
    a->nd = t->ndim;
    for (int i = 0; i < t->ndim; i++) a->d[i] = i, red[i] = true;
  } else {
    EM_CHECK(em__wrap_dims(op, ndims, dims, t->ndim, a->d));
    a->nd = ndims;
    for (int i = 0; i < ndims; i++)
      if (a->d[i] < t->ndim) red[a->d[i]] = true;
  }
  a->i[0] = keepdim;
  return EM_OK;
}

/* Shape of the result: reduced dims dropped, or kept as 1 with keepdim. */
static int reduced_shape(const em_tensor *t, const bool *red, bool keepdim, int64_t *shape) {
  int nd = 0;
  for (int i = 0; i < t->ndim; i++) {
    if (!red[i])
      shape[nd++] = t->shape[i];
    else if (keepdim)
      shape[nd++] = 1;
  }
  return nd;
}

/* Runs op's kernel for src's dtype into new outputs of the reduced shape:
 * out0 of dtype odt (EM_DTYPE_UNDEFINED: none) and, when want_idx, int64
 * indices. */
static em_status run_reduce(em_op op, const char *name, em_tensor *src, const em_op_attrs *a,
                            const bool *red, bool keepdim, em_dtype odt, bool want_idx,
                            em_tensor **out0, em_tensor **out1) {
  int64_t shape[EM_MAX_DIMS];
  int nd = reduced_shape(src, red, keepdim, shape);
  em_tensor *o[2] = {NULL, NULL};
  em_status st = EM_OK;
  reduce_kernel k =
      (reduce_kernel)em__kernel(op, (em_device_type)src->device.type, (em_dtype)src->dtype);
  if (!k) return em_last_status();
  if (odt != EM_DTYPE_UNDEFINED) {
    o[0] = em_tensor_empty_on(nd, shape, odt, src->device);
    EM_CHECK_PTR_GOTO(o[0], st, fail);
  }
  if (want_idx) {
    o[1] = em_tensor_empty_on(nd, shape, EM_INT64, src->device);
    EM_CHECK_PTR_GOTO(o[1], st, fail);
  }
  st = k(o, src, a);
  if (st) {
    em__prefix_error("%s", name);
    goto fail;
  }
  if (out0) *out0 = o[0];
  if (out1) *out1 = o[1];
  return EM_OK;
fail:
  em_tensor_release(o[0]);
  em_tensor_release(o[1]);
  return st;
}

/* The kernel result dtype of op for an input of dtype dt. */
static em_dtype kernel_out_dtype(em_op op, em_dtype dt) {
  switch (op) {
    case EM_OP_SUM:
    case EM_OP_PROD: return is_intlike(dt) ? EM_INT64 : dt;
    case EM_OP_ALL:
    case EM_OP_ANY: return dt == EM_UINT8 ? EM_UINT8 : EM_BOOL;
    case EM_OP_COUNT_NONZERO: return EM_INT64;
    default: return dt;
  }
}

/* A reduction with one output: converts t to conv (when defined and
 * different), reduces, converts the result to final (when defined and
 * different) and records op. */
static em_tensor *reduce1(em_op op, const char *name, em_tensor *t, em_op_attrs *a, const bool *red,
                          bool keepdim, em_dtype conv, em_dtype final, bool record) {
  em_tensor *src = t, *out = NULL;
  if (conv != EM_DTYPE_UNDEFINED && conv != (em_dtype)t->dtype) {
    src = em__convert(t, conv);
    if (!src) return NULL;
  }
  em_dtype odt = kernel_out_dtype(op, (em_dtype)src->dtype);
  em_status st = run_reduce(op, name, src, a, red, keepdim, odt, false, &out, NULL);
  if (src != t) em_tensor_release(src);
  if (st) return NULL;
  if (final != EM_DTYPE_UNDEFINED && final != odt) {
    em_tensor *c = em__convert(out, final);
    em_tensor_release(out);
    if (!c) return NULL;
    out = c;
  }
  return record ? em__record1(op, 1, &t, out, a) : out;
}

/* ---- sum / mean / prod -------------------------------------------------------------- */

static em_tensor *sum_like(em_op op, const char *name, em_tensor *t, int ndims, const int64_t *dims,
                           bool keepdim, em_dtype dt) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input(name, t) || check_dtype_arg(name, dt) ||
      reduce_dims(name, t, ndims, dims, keepdim, &a, red))
    return NULL;
  a.i[1] = dt;
  return reduce1(op, name, t, &a, red, keepdim, dt, dt, true);
}

em_tensor *em_tensor_sum(em_tensor *t, int ndims, const int64_t *dims, bool keepdim, em_dtype dt) {
  return sum_like(EM_OP_SUM, "sum", t, ndims, dims, keepdim, dt);
}

em_tensor *em_tensor_prod(em_tensor *t, int ndims, const int64_t *dims, bool keepdim, em_dtype dt) {
  return sum_like(EM_OP_PROD, "prod", t, ndims, dims, keepdim, dt);
}

em_tensor *em_tensor_mean(em_tensor *t, int ndims, const int64_t *dims, bool keepdim, em_dtype dt) {
  if (check_input("mean", t) || check_dtype_arg("mean", dt)) return NULL;
  if (dt != EM_DTYPE_UNDEFINED && !em_dtype_is_float(dt))
    return EM_FAIL(EM_ERR_DTYPE,
                   "mean(): could not infer output dtype. Optional dtype must be either a "
                   "floating point or complex dtype. Got: %s",
                   em__torch_dtype_name(dt));
  if (dt == EM_DTYPE_UNDEFINED && !em_dtype_is_float((em_dtype)t->dtype))
    return EM_FAIL(EM_ERR_DTYPE,
                   "mean(): could not infer output dtype. Input dtype must be either a "
                   "floating point or complex dtype. Got: %s",
                   em__torch_dtype_name((em_dtype)t->dtype));
  return sum_like(EM_OP_MEAN, "mean", t, ndims, dims, keepdim, dt);
}

/* ---- amax / amin / max_all / min_all ------------------------------------------------- */

/* PyTorch refuses max/min reductions with no identity over nothing. */
static em_status check_nonempty(const char *name, em_tensor *t, int ndims, const int64_t *dims) {
  if (t->numel != 0) return EM_OK;
  if (ndims == 0)
    return em__set_error(EM_ERR_SHAPE,
                         "%s(): Expected reduction dim to be specified for input.numel() == 0. "
                         "Specify the reduction dim with the 'dim' argument.",
                         name);
  for (int i = 0; i < ndims; i++) {
    int d;
    if (em__wrap_dim(name, (int)dims[i], t->ndim, &d) == EM_OK && d < t->ndim && t->shape[d] == 0)
      return em__set_error(EM_ERR_INDEX, "%s(): Expected reduction dim %lld to have non-zero size.",
                           name, (long long)dims[i]);
  }
  return EM_OK;
}

static em_tensor *minmax(em_op op, const char *name, em_tensor *t, int ndims, const int64_t *dims,
                         bool keepdim) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input(name, t) || reduce_dims(name, t, ndims, dims, keepdim, &a, red) ||
      check_nonempty(name, t, ndims, dims))
    return NULL;
  return reduce1(op, name, t, &a, red, keepdim, EM_DTYPE_UNDEFINED, EM_DTYPE_UNDEFINED, true);
}

em_tensor *em_tensor_amax(em_tensor *t, int ndims, const int64_t *dims, bool keepdim) {
  return minmax(EM_OP_AMAX, "amax", t, ndims, dims, keepdim);
}
em_tensor *em_tensor_amin(em_tensor *t, int ndims, const int64_t *dims, bool keepdim) {
  return minmax(EM_OP_AMIN, "amin", t, ndims, dims, keepdim);
}

static em_tensor *minmax_all(em_op op, const char *name, em_tensor *t) {
  if (check_input(name, t)) return NULL;
  if (t->numel == 0)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s(): Expected reduction dim to be specified for input.numel() == 0. "
                   "Specify the reduction dim with the 'dim' argument.",
                   name);
  return minmax(op, name, t, 0, NULL, false);
}

em_tensor *em_tensor_max_all(em_tensor *t) { return minmax_all(EM_OP_AMAX, "max", t); }
em_tensor *em_tensor_min_all(em_tensor *t) { return minmax_all(EM_OP_AMIN, "min", t); }

/* ---- all / any / count_nonzero -------------------------------------------------------- */

static em_tensor *logical(em_op op, const char *name, em_tensor *t, int ndims, const int64_t *dims,
                          bool keepdim) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input(name, t) || reduce_dims(name, t, ndims, dims, keepdim, &a, red)) return NULL;
  return reduce1(op, name, t, &a, red, keepdim, EM_DTYPE_UNDEFINED, EM_DTYPE_UNDEFINED, false);
}

em_tensor *em_tensor_all(em_tensor *t, int ndims, const int64_t *dims, bool keepdim) {
  return logical(EM_OP_ALL, "all", t, ndims, dims, keepdim);
}
em_tensor *em_tensor_any(em_tensor *t, int ndims, const int64_t *dims, bool keepdim) {
  return logical(EM_OP_ANY, "any", t, ndims, dims, keepdim);
}
em_tensor *em_tensor_count_nonzero(em_tensor *t, int ndims, const int64_t *dims) {
  return logical(EM_OP_COUNT_NONZERO, "count_nonzero", t, ndims, dims, false);
}

/* ---- var / std / logsumexp / norm ------------------------------------------------------- */

static em_tensor *var_like(em_op op, const char *name, em_tensor *t, int ndims, const int64_t *dims,
                           double correction, bool keepdim) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input(name, t) || reduce_dims(name, t, ndims, dims, keepdim, &a, red)) return NULL;
  if (!em_dtype_is_float((em_dtype)t->dtype))
    return EM_FAIL(EM_ERR_DTYPE, "%s: std and var only support floating point and complex dtypes",
                   name);
  a.f[0] = correction;
  return reduce1(op, name, t, &a, red, keepdim, EM_DTYPE_UNDEFINED, EM_DTYPE_UNDEFINED, true);
}

em_tensor *em_tensor_var(em_tensor *t, int ndims, const int64_t *dims, double correction,
                         bool keepdim) {
  return var_like(EM_OP_VAR, "var", t, ndims, dims, correction, keepdim);
}
em_tensor *em_tensor_std(em_tensor *t, int ndims, const int64_t *dims, double correction,
                         bool keepdim) {
  return var_like(EM_OP_STD, "std", t, ndims, dims, correction, keepdim);
}

em_tensor *em_tensor_logsumexp(em_tensor *t, int ndims, const int64_t *dims, bool keepdim) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input("logsumexp", t) || reduce_dims("logsumexp", t, ndims, dims, keepdim, &a, red))
    return NULL;
  em_dtype conv =
      em_dtype_is_float((em_dtype)t->dtype) ? EM_DTYPE_UNDEFINED : em_get_default_dtype();
  return reduce1(EM_OP_LOGSUMEXP, "logsumexp", t, &a, red, keepdim, conv, EM_DTYPE_UNDEFINED, true);
}

em_tensor *em_tensor_norm(em_tensor *t, double p, int ndims, const int64_t *dims, bool keepdim) {
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS];
  if (check_input("norm", t) || reduce_dims("norm", t, ndims, dims, keepdim, &a, red)) return NULL;
  if (!em_dtype_is_float((em_dtype)t->dtype))
    return EM_FAIL(EM_ERR_DTYPE,
                   "norm(): input dtype should be either floating point or complex. Got %s "
                   "instead.",
                   em__torch_dtype_name((em_dtype)t->dtype));
  a.f[0] = p;
  return reduce1(EM_OP_NORM, "norm", t, &a, red, keepdim, EM_DTYPE_UNDEFINED, EM_DTYPE_UNDEFINED,
                 true);
}

/* ---- max / min along a dim, argmax / argmin --------------------------------------------- */

static em_status minmax_dim(em_op op, const char *name, em_tensor *t, int dim, bool keepdim,
                            em_tensor **values, em_tensor **indices) {
  if (values) *values = NULL;
  if (indices) *indices = NULL;
  EM_CHECK(check_input(name, t));
  if (!values || !indices)
    return em__set_error(EM_ERR_INVALID, "%s: values and indices must not be NULL", name);
  int d;
  EM_CHECK(em__wrap_dim(name, dim, t->ndim, &d));
  if (t->ndim > 0 && t->shape[d] == 0)
    return em__set_error(EM_ERR_INDEX, "%s(): Expected reduction dim %d to have non-zero size.",
                         name, d);
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS] = {0};
  a.nd = 1;
  a.d[0] = d;
  a.i[0] = keepdim;
  a.i[1] = d;
  if (t->ndim > 0) red[d] = true;
  em_tensor *o[2];
  em_status st = run_reduce(op, name, t, &a, red, keepdim, (em_dtype)t->dtype, true, &o[0], &o[1]);
  if (st) return st;
  st = em__record(op, 1, &t, 2, o, &a);
  if (st) {
    em_tensor_release(o[0]);
    em_tensor_release(o[1]);
    return st;
  }
  *values = o[0];
  *indices = o[1];
  return EM_OK;
}

em_status em_tensor_max_dim(em_tensor *t, int dim, bool keepdim, em_tensor **values,
                            em_tensor **indices) {
  return minmax_dim(EM_OP_MAX_DIM, "max", t, dim, keepdim, values, indices);
}
em_status em_tensor_min_dim(em_tensor *t, int dim, bool keepdim, em_tensor **values,
                            em_tensor **indices) {
  return minmax_dim(EM_OP_MIN_DIM, "min", t, dim, keepdim, values, indices);
}

static em_tensor *arg(em_op op, const char *name, em_tensor *t, bool has_dim, int dim,
                      bool keepdim) {
  if (check_input(name, t)) return NULL;
  if (t->dtype == EM_BOOL)
    return EM_FAIL(EM_ERR_DTYPE, "%s: \"%s_cpu\" not implemented for 'Bool'", name, name);
  em_op_attrs a = {0};
  bool red[EM_MAX_DIMS] = {0};
  if (has_dim) {
    int d;
    if (em__wrap_dim(name, dim, t->ndim, &d)) return NULL;
    if (t->ndim > 0 && t->shape[d] == 0)
      return EM_FAIL(EM_ERR_INDEX, "%s(): Expected reduction dim %d to have non-zero size.", name,
                     d);
    a.nd = 1;
    a.d[0] = d;
    if (t->ndim > 0) red[d] = true;
  } else {
    if (t->numel == 0)
      return EM_FAIL(EM_ERR_INDEX,
                     "%s(): Expected reduction dim to be specified for input.numel() == 0.", name);
    a.nd = t->ndim;
    for (int i = 0; i < t->ndim; i++) a.d[i] = i, red[i] = true;
  }
  a.i[0] = keepdim;
  em_tensor *idx = NULL;
  if (run_reduce(op, name, t, &a, red, keepdim, EM_DTYPE_UNDEFINED, true, NULL, &idx)) return NULL;
  return idx;
}

em_tensor *em_tensor_argmax(em_tensor *t, bool has_dim, int dim, bool keepdim) {
  return arg(EM_OP_ARGMAX, "argmax", t, has_dim, dim, keepdim);
}
em_tensor *em_tensor_argmin(em_tensor *t, bool has_dim, int dim, bool keepdim) {
  return arg(EM_OP_ARGMIN, "argmin", t, has_dim, dim, keepdim);
}

/* ---- softmax / log_softmax / cumsum / cumprod -------------------------------------------- */

/* Runs op along dim on a contiguous copy of t in dtype odt (t itself when
 * it already is), into a new tensor of t's shape. */
static em_tensor *along_dim(em_op op, const char *name, em_tensor *t, em_dtype odt,
                            em_op_attrs *a) {
  reduce_kernel k = (reduce_kernel)em__kernel(op, (em_device_type)t->device.type, odt);
  if (!k) return NULL;
  em_tensor *src = t;
  if (odt != (em_dtype)t->dtype || !em_tensor_is_contiguous(t)) {
    src = em__convert(t, odt);
    if (!src) return NULL;
  }
  em_tensor *o[2] = {em_tensor_empty_on(t->ndim, t->shape, odt, t->device), NULL};
  em_status st = o[0] ? k(o, src, a) : em_last_status();
  if (src != t) em_tensor_release(src);
  if (st) {
    em_tensor_release(o[0]);
    em__prefix_error("%s", name);
    return NULL;
  }
  return em__record1(op, 1, &t, o[0], a);
}

static em_tensor *softmax_like(em_op op, const char *name, em_tensor *t, int dim, em_dtype dt) {
  int d;
  if (check_input(name, t) || check_dtype_arg(name, dt) || em__wrap_dim(name, dim, t->ndim, &d))
    return NULL;
  em_dtype odt = dt == EM_DTYPE_UNDEFINED ? (em_dtype)t->dtype : dt;
  if (!em_dtype_is_float(odt))
    return EM_FAIL(EM_ERR_DTYPE, "%s: \"%s%s_kernel_impl\" not implemented for '%s'", name, name,
                   (t->ndim == 0 || d == t->ndim - 1) ? "_lastdim" : "", em__torch_dtype_name(odt));
  em_op_attrs a = {0};
  a.i[1] = d;
  a.i[2] = dt;
  return along_dim(op, name, t, odt, &a);
}

em_tensor *em_tensor_softmax(em_tensor *t, int dim, em_dtype dt) {
  return softmax_like(EM_OP_SOFTMAX, "softmax", t, dim, dt);
}
em_tensor *em_tensor_log_softmax(em_tensor *t, int dim, em_dtype dt) {
  return softmax_like(EM_OP_LOG_SOFTMAX, "log_softmax", t, dim, dt);
}

static em_tensor *scan(em_op op, const char *name, em_tensor *t, int dim, em_dtype dt) {
  int d;
  if (check_input(name, t) || check_dtype_arg(name, dt) || em__wrap_dim(name, dim, t->ndim, &d))
    return NULL;
  em_dtype odt = dt != EM_DTYPE_UNDEFINED         ? dt
                 : is_intlike((em_dtype)t->dtype) ? EM_INT64
                                                  : (em_dtype)t->dtype;
  if (odt == EM_BOOL)
    return EM_FAIL(EM_ERR_DTYPE, "%s: \"%s_out_cpu\" not implemented for 'Bool'", name, name);
  em_op_attrs a = {0};
  a.i[1] = d;
  a.i[2] = dt;
  return along_dim(op, name, t, odt, &a);
}

em_tensor *em_tensor_cumsum(em_tensor *t, int dim, em_dtype dt) {
  return scan(EM_OP_CUMSUM, "cumsum", t, dim, dt);
}
em_tensor *em_tensor_cumprod(em_tensor *t, int dim, em_dtype dt) {
  return scan(EM_OP_CUMPROD, "cumprod", t, dim, dt);
}
