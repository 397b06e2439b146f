/* ember — tensor operations.
 *
 * Every op validates its arguments, broadcasts (NumPy rules) and promotes
 * dtypes (PyTorch rules) once, then calls a kernel found by (op, device,
 * dtype). Differentiable ops record an autograd node when a tensor input
 * requires grad and grad mode is on (see autograd/autograd.h).
 *
 *     em_tensor *y = em_tensor_add(x, b);          // new tensor
 *     em_status st = em_tensor_add_(x, b);         // in place, x keeps shape
 *     em_tensor *s = em_tensor_sum(y, EM_DIMS(1), false, EM_DTYPE_UNDEFINED);
 *
 * Ownership and errors as in core/tensor.h: inputs are borrowed, results
 * are new references, NULL / non-OK status on failure with a message naming
 * the op and the values. In-place ops return a status; on failure the
 * tensor is unchanged unless the message says otherwise.
 *
 * Dims are int; negative dims count from the end. Dim lists are
 * (int ndims, const int64_t *dims); ndims 0 with dims NULL means "all dims"
 * for reductions.
 */
#ifndef EMBER_CORE_OPS_H
#define EMBER_CORE_OPS_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- copies and conversion --------------------------------------------- */

/* dst <- src (broadcast to dst's shape), any dtypes and layouts. */
EM_API em_status em_tensor_copy_(em_tensor *dst, em_tensor *src);
EM_API em_tensor *em_tensor_clone(em_tensor *t);
/* t itself (retained) if already contiguous, else a contiguous copy. */
EM_API em_tensor *em_tensor_contiguous(em_tensor *t);
/* t itself (retained) if already dt, else a converted copy. */
EM_API em_tensor *em_tensor_to_dtype(em_tensor *t, em_dtype dt);
EM_API em_tensor *em_tensor_to_device(em_tensor *t, em_device dev);
/* A new tensor object sharing t's storage and geometry, without autograd
 * history (PyTorch's detach). */
EM_API em_tensor *em_tensor_detach(em_tensor *t);
EM_API em_status em_tensor_fill_(em_tensor *t, em_scalar value);
EM_API em_status em_tensor_zero_(em_tensor *t);

/* ---- views and shape ---------------------------------------------------- */

/* One size may be -1 (inferred). view fails when the strides cannot express
 * the new shape ("use reshape"); reshape copies then. */
EM_API em_tensor *em_tensor_view(em_tensor *t, int ndim, const int64_t *shape);
EM_API em_tensor *em_tensor_reshape(em_tensor *t, int ndim, const int64_t *shape);
EM_API em_tensor *em_tensor_transpose(em_tensor *t, int dim0, int dim1);
EM_API em_tensor *em_tensor_t(em_tensor *t); /* 0-, 1- or 2-D transpose */
EM_API em_tensor *em_tensor_permute(em_tensor *t, int ndims, const int64_t *dims);
EM_API em_tensor *em_tensor_narrow(em_tensor *t, int dim, int64_t start, int64_t length);
EM_API em_tensor *em_tensor_select(em_tensor *t, int dim, int64_t index);
/* Python slice semantics: start/end clamped, negative values from the end,
 * step > 0. Pass INT64_MAX as end for "to the end". */
EM_API em_tensor *em_tensor_slice(em_tensor *t, int dim, int64_t start, int64_t end,
                                  int64_t step);
/* Sizes -1 keep the dim; new leading dims may be added. */
EM_API em_tensor *em_tensor_expand(em_tensor *t, int ndim, const int64_t *shape);
EM_API em_tensor *em_tensor_expand_as(em_tensor *t, em_tensor *other);
EM_API em_tensor *em_tensor_squeeze(em_tensor *t);              /* all size-1 dims */
EM_API em_tensor *em_tensor_squeeze_dim(em_tensor *t, int dim); /* only if size 1 */
EM_API em_tensor *em_tensor_unsqueeze(em_tensor *t, int dim);
EM_API em_tensor *em_tensor_flatten(em_tensor *t, int start_dim, int end_dim);
EM_API em_tensor *em_tensor_unflatten(em_tensor *t, int dim, int nsizes, const int64_t *sizes);
EM_API em_tensor *em_tensor_as_strided(em_tensor *t, int ndim, const int64_t *shape,
                                       const int64_t *strides, int64_t offset);
/* Broadcast shapes of n tensors (NumPy rules) into out_shape/out_ndim. */
EM_API em_status em_broadcast_shapes(int n, const int *ndims, const int64_t *const *shapes,
                                     int *out_ndim, int64_t *out_shape);

EM_API em_tensor *em_tensor_cat(int n, em_tensor *const *ts, int dim);
EM_API em_tensor *em_tensor_stack(int n, em_tensor *const *ts, int dim);
/* Views of size split_size along dim (the last may be smaller). *out is a
 * malloc'd array of *n new references; free with em_tensor_list_release. */
EM_API em_status em_tensor_split(em_tensor *t, int64_t split_size, int dim, em_tensor ***out,
                                 int *n);
EM_API em_status em_tensor_split_sizes(em_tensor *t, int nsizes, const int64_t *sizes, int dim,
                                       em_tensor ***out);
EM_API em_status em_tensor_chunk(em_tensor *t, int chunks, int dim, em_tensor ***out, int *n);
EM_API em_tensor *em_tensor_flip(em_tensor *t, int ndims, const int64_t *dims);
EM_API em_tensor *em_tensor_repeat(em_tensor *t, int nrepeats, const int64_t *repeats);
/* pads: (left, right) pairs from the last dim backwards, as F.pad;
 * negative pads crop. Constant mode. */
EM_API em_tensor *em_tensor_pad(em_tensor *t, int npads, const int64_t *pads, double value);

/* ---- elementwise: unary ------------------------------------------------ */

/* X(name): em_tensor_<name>(t) and em_tensor_<name>_(t). Float-only ops
 * (exp, log, sin, ...) turn integer inputs into the default float dtype;
 * their in-place forms need a float tensor. */
#define EM_UNARY_OPS(X)                                                               \
  X(neg) X(abs) X(sign) X(exp) X(exp2) X(log) X(log2) X(log10) X(log1p) X(expm1)       \
  X(sqrt) X(rsqrt) X(reciprocal) X(square) X(sin) X(cos) X(tan) X(asin) X(acos)        \
  X(atan) X(sinh) X(cosh) X(tanh) X(sigmoid) X(erf) X(relu) X(silu) X(floor) X(ceil)   \
  X(round) X(trunc) X(frac) X(logical_not) X(bitwise_not)

#define EM__DECL_UNARY(name)                                \
  EM_API em_tensor *em_tensor_##name(em_tensor *t); \
  EM_API em_status em_tensor_##name##_(em_tensor *t);
EM_UNARY_OPS(EM__DECL_UNARY)
#undef EM__DECL_UNARY

EM_API em_tensor *em_tensor_isnan(em_tensor *t); /* bool */
EM_API em_tensor *em_tensor_isinf(em_tensor *t); /* bool */
EM_API em_tensor *em_tensor_isfinite(em_tensor *t);
EM_API em_tensor *em_tensor_leaky_relu(em_tensor *t, double negative_slope);
EM_API em_status em_tensor_leaky_relu_(em_tensor *t, double negative_slope);
/* approximate: false = exact erf form, true = tanh form. */
EM_API em_tensor *em_tensor_gelu(em_tensor *t, bool approximate);
EM_API em_tensor *em_tensor_softplus(em_tensor *t, double beta, double threshold);
EM_API em_tensor *em_tensor_elu(em_tensor *t, double alpha);
EM_API em_tensor *em_tensor_hardtanh(em_tensor *t, double min_val, double max_val);
/* Bounds may be omitted (has_min / has_max false); min > max gives max as
 * PyTorch does. */
EM_API em_tensor *em_tensor_clamp(em_tensor *t, bool has_min, double min, bool has_max,
                                  double max);
EM_API em_status em_tensor_clamp_(em_tensor *t, bool has_min, double min, bool has_max,
                                  double max);
EM_API em_tensor *em_tensor_pow_scalar(em_tensor *t, em_scalar exponent); /* t ** s */
EM_API em_tensor *em_tensor_rpow_scalar(em_scalar base, em_tensor *t);    /* s ** t */

/* ---- elementwise: binary ----------------------------------------------- */

/* X(name): em_tensor_<name>(a, b), em_tensor_<name>_(a, b) (a keeps its
 * shape and dtype; b broadcasts to it) and em_tensor_<name>_scalar(a, s). */
#define EM_BINARY_OPS(X)                                                                \
  X(add) X(sub) X(mul) X(div) X(floor_divide) X(trunc_divide) X(remainder) X(fmod)       \
  X(pow) X(maximum) X(minimum) X(atan2) X(logical_and) X(logical_or) X(logical_xor)      \
  X(bitwise_and) X(bitwise_or) X(bitwise_xor)

#define EM__DECL_BINARY(name)                                                 \
  EM_API em_tensor *em_tensor_##name(em_tensor *a, em_tensor *b);             \
  EM_API em_status em_tensor_##name##_(em_tensor *a, em_tensor *b);           \
  EM_API em_tensor *em_tensor_##name##_scalar(em_tensor *a, em_scalar b);
EM_BINARY_OPS(EM__DECL_BINARY)
#undef EM__DECL_BINARY

/* a + alpha * b and a - alpha * b (torch.add(a, b, alpha=...)). */
EM_API em_tensor *em_tensor_add_alpha(em_tensor *a, em_tensor *b, em_scalar alpha);
EM_API em_status em_tensor_add_alpha_(em_tensor *a, em_tensor *b, em_scalar alpha);
EM_API em_tensor *em_tensor_sub_alpha(em_tensor *a, em_tensor *b, em_scalar alpha);
EM_API em_status em_tensor_sub_alpha_(em_tensor *a, em_tensor *b, em_scalar alpha);

/* Comparisons give bool tensors. */
#define EM_COMPARE_OPS(X) X(eq) X(ne) X(lt) X(le) X(gt) X(ge)
#define EM__DECL_CMP(name)                                            \
  EM_API em_tensor *em_tensor_##name(em_tensor *a, em_tensor *b);     \
  EM_API em_tensor *em_tensor_##name##_scalar(em_tensor *a, em_scalar b);
EM_COMPARE_OPS(EM__DECL_CMP)
#undef EM__DECL_CMP

/* ---- elementwise: ternary ---------------------------------------------- */

EM_API em_tensor *em_tensor_where(em_tensor *cond, em_tensor *a, em_tensor *b);
/* a + weight * (b - a) */
EM_API em_tensor *em_tensor_lerp(em_tensor *a, em_tensor *b, em_tensor *weight);
EM_API em_tensor *em_tensor_lerp_scalar(em_tensor *a, em_tensor *b, double weight);
EM_API em_status em_tensor_lerp_(em_tensor *a, em_tensor *b, double weight);
/* a + value * t1 * t2 and a + value * t1 / t2 */
EM_API em_tensor *em_tensor_addcmul(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value);
EM_API em_status em_tensor_addcmul_(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value);
EM_API em_tensor *em_tensor_addcdiv(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value);
EM_API em_status em_tensor_addcdiv_(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value);

/* ---- reductions --------------------------------------------------------
 * (ndims, dims) as described at the top; keepdim keeps reduced dims as
 * size 1. dt (where present) is the accumulation/result dtype, UNDEFINED for
 * PyTorch's default (sum/prod of ints and bools give int64). */
EM_API em_tensor *em_tensor_sum(em_tensor *t, int ndims, const int64_t *dims, bool keepdim,
                                em_dtype dt);
EM_API em_tensor *em_tensor_mean(em_tensor *t, int ndims, const int64_t *dims, bool keepdim,
                                 em_dtype dt);
EM_API em_tensor *em_tensor_prod(em_tensor *t, int ndims, const int64_t *dims, bool keepdim,
                                 em_dtype dt);
EM_API em_tensor *em_tensor_amax(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
EM_API em_tensor *em_tensor_amin(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
EM_API em_tensor *em_tensor_all(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
EM_API em_tensor *em_tensor_any(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
/* correction: 1 for the unbiased estimate, 0 for the population one. */
EM_API em_tensor *em_tensor_var(em_tensor *t, int ndims, const int64_t *dims, double correction,
                                bool keepdim);
EM_API em_tensor *em_tensor_std(em_tensor *t, int ndims, const int64_t *dims, double correction,
                                bool keepdim);
EM_API em_tensor *em_tensor_logsumexp(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
/* p = 1, 2, INFINITY, or any other positive p. */
EM_API em_tensor *em_tensor_norm(em_tensor *t, double p, int ndims, const int64_t *dims,
                                 bool keepdim);
EM_API em_tensor *em_tensor_count_nonzero(em_tensor *t, int ndims, const int64_t *dims);
/* Maximum/minimum over all elements (0-dim). */
EM_API em_tensor *em_tensor_max_all(em_tensor *t);
EM_API em_tensor *em_tensor_min_all(em_tensor *t);
/* Along one dim: values and int64 indices (first occurrence). */
EM_API em_status em_tensor_max_dim(em_tensor *t, int dim, bool keepdim, em_tensor **values,
                                   em_tensor **indices);
EM_API em_status em_tensor_min_dim(em_tensor *t, int dim, bool keepdim, em_tensor **values,
                                   em_tensor **indices);
/* has_dim false: index into the flattened tensor. */
EM_API em_tensor *em_tensor_argmax(em_tensor *t, bool has_dim, int dim, bool keepdim);
EM_API em_tensor *em_tensor_argmin(em_tensor *t, bool has_dim, int dim, bool keepdim);
EM_API em_tensor *em_tensor_softmax(em_tensor *t, int dim, em_dtype dt);
EM_API em_tensor *em_tensor_log_softmax(em_tensor *t, int dim, em_dtype dt);
EM_API em_tensor *em_tensor_cumsum(em_tensor *t, int dim, em_dtype dt);
EM_API em_tensor *em_tensor_cumprod(em_tensor *t, int dim, em_dtype dt);

/* ---- linear algebra ------------------------------------------------------
 * float32/float64 through BLAS; other dtypes by a plain loop with a wide
 * accumulator. */
EM_API em_tensor *em_tensor_matmul(em_tensor *a, em_tensor *b); /* numpy.matmul rules */
EM_API em_tensor *em_tensor_mm(em_tensor *a, em_tensor *b);     /* [n,k] x [k,m] */
EM_API em_tensor *em_tensor_bmm(em_tensor *a, em_tensor *b);    /* [B,n,k] x [B,k,m] */
EM_API em_tensor *em_tensor_mv(em_tensor *a, em_tensor *v);
EM_API em_tensor *em_tensor_dot(em_tensor *a, em_tensor *b);    /* 1-D . 1-D */
EM_API em_tensor *em_tensor_outer(em_tensor *a, em_tensor *b);
/* beta * input + alpha * (m1 @ m2); input broadcasts to [n, m]. */
EM_API em_tensor *em_tensor_addmm(em_tensor *input, em_tensor *m1, em_tensor *m2, double beta,
                                  double alpha);
EM_API em_tensor *em_tensor_baddbmm(em_tensor *input, em_tensor *b1, em_tensor *b2, double beta,
                                    double alpha);

/* ---- indexing ------------------------------------------------------------ */

EM_API em_tensor *em_tensor_index_select(em_tensor *t, int dim, em_tensor *index);
EM_API em_tensor *em_tensor_gather(em_tensor *t, int dim, em_tensor *index);
/* out = t with out[index[i][j]][j] = src[i][j] (dim 0), etc. */
EM_API em_tensor *em_tensor_scatter(em_tensor *t, int dim, em_tensor *index, em_tensor *src);
EM_API em_status em_tensor_scatter_(em_tensor *t, int dim, em_tensor *index, em_tensor *src);
EM_API em_tensor *em_tensor_scatter_value(em_tensor *t, int dim, em_tensor *index,
                                          em_scalar value);
EM_API em_tensor *em_tensor_scatter_add(em_tensor *t, int dim, em_tensor *index, em_tensor *src);
EM_API em_status em_tensor_scatter_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src);
EM_API em_tensor *em_tensor_index_add(em_tensor *t, int dim, em_tensor *index, em_tensor *src,
                                      em_scalar alpha);
EM_API em_status em_tensor_index_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src,
                                      em_scalar alpha);
EM_API em_tensor *em_tensor_masked_fill(em_tensor *t, em_tensor *mask, em_scalar value);
EM_API em_status em_tensor_masked_fill_(em_tensor *t, em_tensor *mask, em_scalar value);
EM_API em_tensor *em_tensor_masked_select(em_tensor *t, em_tensor *mask);
/* [n, ndim] int64 coordinates of the non-zero elements, row-major order. */
EM_API em_tensor *em_tensor_nonzero(em_tensor *t);
/* num_classes -1: max + 1. Result int64 with one more dim. */
EM_API em_tensor *em_tensor_one_hot(em_tensor *t, int64_t num_classes);
/* weight [num, dim], indices any shape of ints -> [..., dim]. */
EM_API em_tensor *em_tensor_embedding(em_tensor *weight, em_tensor *indices);
EM_API em_tensor *em_tensor_take_along_dim(em_tensor *t, em_tensor *indices, int dim);
/* Advanced indexing t[i0, i1, ...]: n index tensors (NULL = full slice),
 * int64/int32 (broadcast together) or bool masks, as numpy. */
EM_API em_tensor *em_tensor_index(em_tensor *t, int n, em_tensor *const *indices);
/* t[i0, i1, ...] = values (broadcast); accumulate adds instead. */
EM_API em_status em_tensor_index_put_(em_tensor *t, int n, em_tensor *const *indices,
                                      em_tensor *values, bool accumulate);

/* ---- comparison helpers and printing -------------------------------------- */

/* |a - b| <= atol + rtol * |b| elementwise (broadcast), NaNs equal when
 * equal_nan. *out receives the answer. */
EM_API em_status em_tensor_allclose(em_tensor *a, em_tensor *b, double rtol, double atol,
                                    bool equal_nan, bool *out);
/* Same shape and every element equal. */
EM_API em_status em_tensor_equal(em_tensor *a, em_tensor *b, bool *out);

/* The tensor as PyTorch prints it: "tensor([[1., 2.],\n        [3., 4.]])"
 * with ", dtype=ember.int32" when the dtype is not the default, and the
 * device when not the CPU. prefix replaces "tensor(" when not NULL. The
 * string is malloc'd; the caller frees it. */
EM_API char *em_tensor_to_string(em_tensor *t, const char *prefix);
EM_API em_status em_tensor_print(em_tensor *t, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
