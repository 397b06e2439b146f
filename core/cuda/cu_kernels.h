/* The boundary between ember's C code and the CUDA kernels (*.cu, C++).
 *
 * The .cu files cannot include ember's internal headers (core/tensor.h
 * uses C11 atomics, which C++ does not have), so everything crossing the
 * boundary is here: plain structs describing an iteration or a reduction,
 * the launcher signatures, and the per-op launcher tables the .cu files
 * define and core/cuda/register.c enters into the dispatch table. Only
 * core/dtype.h (C and C++) is shared besides this.
 *
 * Every launcher enqueues its kernel(s) on the given stream for the
 * device current on the calling thread and returns cudaSuccess or the
 * launch error; it never waits and never validates (the C side did).
 */
#ifndef EMBER_CORE_CUDA_CU_KERNELS_H
#define EMBER_CORE_CUDA_CU_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EMCU_MAX_DIMS 16    /* == EM_MAX_DIMS (checked in core/cuda/elementwise.c) */
#define EMCU_MAX_OPERANDS 5 /* == EM_ITER_MAX_OPERANDS */

/* ---- elementwise -----------------------------------------------------------------
 * An em_iter as the kernels see it: operands broadcast over shape (dims
 * innermost first, coalesced), byte strides [dim][operand], operand 0 is
 * the output. Passed by value to kernels (~0.8 KB of parameters). */
typedef struct emcu_iter {
  int nops, ndim;
  int64_t numel;
  int64_t shape[EMCU_MAX_DIMS];
  int64_t strides[EMCU_MAX_DIMS][EMCU_MAX_OPERANDS];
  char *data[EMCU_MAX_OPERANDS];
} emcu_iter;

/* The scalar part of em_op_attrs (the layouts per op are those of the CPU
 * kernels: core/cpu/<family>.c). */
typedef struct emcu_attrs {
  double f[4];
  int64_t i[4];
  em_scalar s;
} emcu_attrs;

typedef cudaError_t (*emcu_elem_fn)(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s);

/* Launcher tables, one per op, indexed by em_dtype (the key dtype the
 * front end looks the kernel up with); NULL where the op has no CUDA
 * kernel for that dtype. X(EM_OP name, table). */
#define EMCU_ELEMENTWISE_TABLES(X)                                                         \
  X(COPY, emcu_copy) X(FILL, emcu_fill)                                                    \
  X(UNARY_neg, emcu_neg) X(UNARY_abs, emcu_abs) X(UNARY_sign, emcu_sign)                   \
  X(UNARY_exp, emcu_exp) X(UNARY_exp2, emcu_exp2) X(UNARY_log, emcu_log)                   \
  X(UNARY_log2, emcu_log2) X(UNARY_log10, emcu_log10) X(UNARY_log1p, emcu_log1p)           \
  X(UNARY_expm1, emcu_expm1) X(UNARY_sqrt, emcu_sqrt) X(UNARY_rsqrt, emcu_rsqrt)           \
  X(UNARY_reciprocal, emcu_reciprocal) X(UNARY_square, emcu_square)                        \
  X(UNARY_sin, emcu_sin) X(UNARY_cos, emcu_cos) X(UNARY_tan, emcu_tan)                     \
  X(UNARY_asin, emcu_asin) X(UNARY_acos, emcu_acos) X(UNARY_atan, emcu_atan)               \
  X(UNARY_sinh, emcu_sinh) X(UNARY_cosh, emcu_cosh) X(UNARY_tanh, emcu_tanh)               \
  X(UNARY_sigmoid, emcu_sigmoid) X(UNARY_erf, emcu_erf) X(UNARY_relu, emcu_relu)           \
  X(UNARY_silu, emcu_silu) X(UNARY_floor, emcu_floor) X(UNARY_ceil, emcu_ceil)             \
  X(UNARY_round, emcu_round) X(UNARY_trunc, emcu_trunc) X(UNARY_frac, emcu_frac)           \
  X(UNARY_logical_not, emcu_logical_not) X(UNARY_bitwise_not, emcu_bitwise_not)            \
  X(ISNAN, emcu_isnan) X(ISINF, emcu_isinf) X(ISFINITE, emcu_isfinite)                     \
  X(LEAKY_RELU, emcu_leaky_relu) X(GELU, emcu_gelu) X(GELU_TANH, emcu_gelu_tanh)           \
  X(SOFTPLUS, emcu_softplus) X(ELU, emcu_elu) X(HARDTANH, emcu_clamp) X(CLAMP, emcu_clamp) \
  X(POW_SCALAR, emcu_pow_scalar) X(RPOW_SCALAR, emcu_rpow_scalar)                          \
  X(BINARY_add, emcu_add) X(BINARY_sub, emcu_sub) X(BINARY_mul, emcu_mul)                  \
  X(BINARY_div, emcu_div) X(BINARY_floor_divide, emcu_floor_divide)                        \
  X(BINARY_trunc_divide, emcu_trunc_divide) X(BINARY_remainder, emcu_remainder)            \
  X(BINARY_fmod, emcu_fmod) X(BINARY_pow, emcu_pow) X(BINARY_maximum, emcu_maximum)        \
  X(BINARY_minimum, emcu_minimum) X(BINARY_atan2, emcu_atan2)                              \
  X(BINARY_logical_and, emcu_logical_and) X(BINARY_logical_or, emcu_logical_or)            \
  X(BINARY_logical_xor, emcu_logical_xor) X(BINARY_bitwise_and, emcu_bitwise_and)          \
  X(BINARY_bitwise_or, emcu_bitwise_or) X(BINARY_bitwise_xor, emcu_bitwise_xor)            \
  X(EQ, emcu_eq) X(NE, emcu_ne) X(LT, emcu_lt) X(LE, emcu_le) X(GT, emcu_gt) X(GE, emcu_ge) \
  X(RELU_BACKWARD, emcu_relu_backward)                                                     \
  X(WHERE, emcu_where) X(LERP, emcu_lerp) X(ADDCMUL, emcu_addcmul) X(ADDCDIV, emcu_addcdiv) \
  X(GATHER, emcu_gather) X(SCATTER, emcu_scatter) X(SCATTER_VALUE, emcu_scatter_value)     \
  X(SCATTER_ADD, emcu_scatter_add) X(MASKED_FILL, emcu_masked_fill)

#define EMCU__DECL_TABLE(op, table) extern const emcu_elem_fn table[EM_DTYPE_COUNT];
EMCU_ELEMENTWISE_TABLES(EMCU__DECL_TABLE)
#undef EMCU__DECL_TABLE

/* ---- reductions --------------------------------------------------------------------
 * out[o] = reduce over j of src[koff(o) + roff(j)] where o enumerates the
 * kept dims and j the reduced dims of the input, both row-major in the
 * input's dim order (element strides). out0 / out1 (int64 indices) are
 * contiguous; either may be NULL as the op allows. */
typedef struct emcu_reduce_args {
  int nkeep, nred;
  int64_t keep_shape[EMCU_MAX_DIMS], keep_stride[EMCU_MAX_DIMS];
  int64_t red_shape[EMCU_MAX_DIMS], red_stride[EMCU_MAX_DIMS];
  int64_t nout, nr; /* products */
  const char *src;
  char *out0, *out1;
  double p; /* norm's p, var's correction */
} emcu_reduce_args;

typedef enum emcu_reduce_op {
  EMCU_SUM, EMCU_MEAN, EMCU_PROD, EMCU_AMAX, EMCU_AMIN, EMCU_ALL, EMCU_ANY,
  EMCU_COUNT_NONZERO, EMCU_NORM, EMCU_VAR, EMCU_STD, EMCU_LOGSUMEXP, EMCU_ARGMAX,
  EMCU_ARGMIN, EMCU_REDUCE_OP_COUNT
} emcu_reduce_op;

/* True when the op has a kernel for input dtype dt. */
bool emcu_reduce_supported(emcu_reduce_op op, em_dtype dt);
/* Bytes of device scratch emcu_reduce needs for r (0: none). Large
 * reductions into few outputs are split across blocks in two passes
 * through it; var/std/logsumexp keep a per-output center there. */
size_t emcu_reduce_scratch(emcu_reduce_op op, const emcu_reduce_args *r);
cudaError_t emcu_reduce(emcu_reduce_op op, em_dtype dt, const emcu_reduce_args *r, void *scratch,
                        cudaStream_t s);

/* Along a dim of a contiguous [outer, D, inner] tensor into out of the same
 * shape and dtype dt. */
typedef enum emcu_scan_op { EMCU_SOFTMAX, EMCU_LOG_SOFTMAX, EMCU_CUMSUM, EMCU_CUMPROD } emcu_scan_op;
bool emcu_scan_supported(emcu_scan_op op, em_dtype dt);
cudaError_t emcu_scan(emcu_scan_op op, em_dtype dt, const char *src, char *out, int64_t outer,
                      int64_t d, int64_t inner, cudaStream_t s);

/* ---- shape ------------------------------------------------------------------------------
 * repeat: src contiguous [shape], out contiguous [shape * reps], elements
 * of esize bytes. */
cudaError_t emcu_repeat(char *out, const char *src, int nd, const int64_t *shape,
                        const int64_t *reps, int64_t esize, cudaStream_t s);

/* ---- index rows (index_select, advanced indexing, index_add, index_put) -------------------
 * The indexed tensor is walked as [P..., B, Q...] (see core/cpu/index.c):
 * off[b] (device memory) is the element offset of indexed position b. */
typedef struct emcu_rows {
  int np, nq;
  int64_t psize[EMCU_MAX_DIMS], pstride[EMCU_MAX_DIMS];
  int64_t qsize[EMCU_MAX_DIMS], qstride[EMCU_MAX_DIMS];
  int64_t nP, nQ, nb;
  const int64_t *off;
} emcu_rows;
/* out contiguous [P..., nb, Q...] = src rows; esize bytes per element. */
cudaError_t emcu_rows_gather(char *out, const char *src, const emcu_rows *r, int64_t esize,
                             cudaStream_t s);
/* dst rows = vals (accumulate false) or += alpha * vals (atomics; dtypes
 * of emcu_rows_scatter_supported); scalar: vals is one element for all. */
bool emcu_rows_scatter_supported(em_dtype dt, bool accumulate);
cudaError_t emcu_rows_scatter(em_dtype dt, char *dst, const char *vals, const emcu_rows *r,
                              bool accumulate, bool scalar, em_scalar alpha, cudaStream_t s);

/* ---- 2-D pooling (nn/pool.c's windows) --------------------------------------------------------
 * kind 0 max (NaN wins; idx: flat h*W + w of the max, may be NULL), 1 avg,
 * 2 adaptive avg. x [planes, H, W], y [planes, OH, OW], contiguous, of
 * float32 (single) or float64 (double). Backward: gx (zeroed here)
 * accumulates gy through idx (max) or over the windows (avg). */
typedef struct emcu_pool {
  int kind;
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool count_include_pad;
} emcu_pool;
cudaError_t emcu_pool2d_forward(const emcu_pool *g, bool dbl, const void *x, void *y, int64_t *idx,
                                cudaStream_t s);
cudaError_t emcu_pool2d_backward(const emcu_pool *g, bool dbl, const void *gy, const int64_t *idx,
                                 void *gx, cudaStream_t s);

/* ---- small helpers ------------------------------------------------------------------------ */
/* buf[i] /= divisor for n elements of an integer dtype (truncating; the
 * nccl backend's integer avg). */
cudaError_t emcu_div_trunc(void *buf, int64_t n, em_dtype dt, int64_t divisor, cudaStream_t s);
/* buf[i] *= beta for n elements of a float dtype (matmul with k == 0). */
cudaError_t emcu_scale(void *buf, int64_t n, em_dtype dt, double beta, cudaStream_t s);

/* ember functions the kernels' host code uses (core/tensor.c). */
void em__store_scalar(void *p, em_dtype dt, em_scalar v);

#ifdef __cplusplus
}
#endif
#endif
