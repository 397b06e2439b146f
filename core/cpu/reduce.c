/* CPU kernels: reductions (sum, mean, prod, amax/amin, all/any,
 * count_nonzero, norm, var/std, logsumexp, max/min with indices), softmax,
 * log_softmax, cumsum and cumprod.
 *
 * Every kernel of the family has the signature
 *
 *     em_status k(em_tensor *const *out, em_tensor *in, const em_op_attrs *a)
 *
 * Reductions: out[0] (and out[1], int64 indices, for max/min along a dim;
 * out[0] is NULL for argmax/argmin) are new contiguous tensors whose
 * elements follow the kept dims of in, in order; a->d[0..nd) names the
 * reduced dims of in (entries >= in->ndim, from a 0-dim input, are
 * ignored). Output dtypes: sum/prod of integer and bool inputs write
 * int64, all/any one byte (bool or uint8), count_nonzero int64, the rest
 * in's dtype. a->f[0] is p (norm) or the correction (var/std).
 *
 * Each (op, dtype) is a red_impl: small functions that fold a contiguous
 * run into an accumulator state (partial), merge two states (combine) and
 * write one output (finalize), plus optional column functions that fold
 * whole rows into one accumulator per column. One driver (reduce_run) does
 * the geometry for all of them, after dropping size-1 dims and coalescing
 * (order-free ops also sort the reduced dims by stride):
 *   - INNER, the innermost reduced dim is contiguous: each output folds its
 *     runs with partial, a vectorised multi-accumulator loop. Reductions of
 *     at least 64K elements are cut into up to 64 pieces, reduced on the
 *     thread pool and combined in a fixed order, so the result does not
 *     depend on the thread count.
 *   - OUTER, a kept dim is contiguous (sum over dim 0 of [N, C], the bias
 *     gradient): groups of up to 8 rows are folded into a block of up to
 *     2048 per-column accumulators, vectorised along the columns; threads
 *     take column blocks, and tall blocks are also cut into row pieces.
 *   - otherwise the input is copied with the reduced dims innermost and
 *     reduced by INNER.
 * Function pointers are called per run, row group or output, never per
 * element.
 *
 * Accuracy: float32/float16/bfloat16 sums add 16 lanes in float over
 * blocks of 2048 elements and the block sums in double (compensated);
 * float64 likewise; columns accumulate in double. var/std fold blocks with
 * a two-pass mean / squared deviation in double merged with Chan's
 * formula. logsumexp merges (max, sum of exp(x - max)) per block, so it is
 * stable and single-pass. Integer sums and products wrap in 64 bits.
 *
 * softmax/log_softmax/cumsum/cumprod take a contiguous input of the output
 * dtype and work along dim a->i[1] viewed as [outer, D, inner]: rows when
 * inner == 1, blocks of inner columns otherwise. float exp is a vectorised
 * polynomial (AVX2 where the CPU has it).
 */
#include <stdlib.h>

#include "core/cpu/kernel_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);

/* ---- per-dtype table ---------------------------------------------------------------
 * X(ENUM, T, C, LD, ST, LO, HI): storage type, compute type, load/store
 * (as in kernel_impl.h), and the lowest / highest value of the compute
 * type (identities of max / min). */
#define RED_FLOAT_TYPES(X)                                           \
  X(FLOAT32, float, float, EM_ID, EM_ID, -INFINITY, INFINITY)        \
  X(FLOAT64, double, double, EM_ID, EM_ID, -INFINITY, INFINITY)      \
  X(FLOAT16, uint16_t, float, em__h2f, em__f2h, -INFINITY, INFINITY) \
  X(BFLOAT16, uint16_t, float, em__b2f, em__f2b, -INFINITY, INFINITY)
#define RED_INT_TYPES(X)                                         \
  X(INT8, int8_t, int8_t, EM_ID, EM_ID, INT8_MIN, INT8_MAX)      \
  X(INT16, int16_t, int16_t, EM_ID, EM_ID, INT16_MIN, INT16_MAX) \
  X(INT32, int32_t, int32_t, EM_ID, EM_ID, INT32_MIN, INT32_MAX) \
  X(INT64, int64_t, int64_t, EM_ID, EM_ID, INT64_MIN, INT64_MAX) \
  X(UINT8, uint8_t, uint8_t, EM_ID, EM_ID, 0, UINT8_MAX)
#define RED_BOOL_TYPE(X) X(BOOL, bool, bool, EM_ID, EM_ID, false, true)
#define RED_INTBOOL_TYPES(X) RED_INT_TYPES(X) RED_BOOL_TYPE(X)
#define RED_ALL_TYPES(X) RED_FLOAT_TYPES(X) RED_INT_TYPES(X) RED_BOOL_TYPE(X)

/* exp / log / sqrt / pow / fabs in the compute type (float or double). */
#define CEXP(x) _Generic((x), float : expf, default : exp)(x)
#define CABS(x) _Generic((x), float : fabsf, default : fabs)(x)
#define CPOW(x, y) _Generic((x), float : powf, default : pow)((x), (y))

#define LANES 16    /* independent accumulators in the vectorised loops */
#define BLOCK 2048  /* elements folded in the compute type before a double add */
#define PIECE 32768 /* minimum elements per piece when a reduction is split */
#define MAX_PIECES 64
#define COL_BLOCK 2048 /* columns per task in the OUTER path */
#define ROW_GROUP 8    /* rows folded per column call */
#define SCAN_BLOCK 512 /* columns per task of softmax / cumsum along a non-last dim */

/* ---- accumulator states ---------------------------------------------------------- */

typedef union rstate {
  double d[4];
  int64_t i[4];
  uint64_t u[4];
} rstate;

/* A compute-type value kept at the start of a state. */
#define SVAL(C, s) (*(C *)(void *)(s))

typedef struct red_impl {
  bool ordered;  /* index-producing: reduced dims keep their order */
  int64_t grain; /* input elements per task */
  void (*init)(rstate *s, const em_op_attrs *a);
  /* Folds n contiguous elements at x; pos is the flat index of x[0]
   * within the reduction. */
  void (*partial)(rstate *s, const char *x, int64_t n, int64_t pos, const em_op_attrs *a);
  /* s <- s then o (s covers the earlier elements). */
  void (*combine)(rstate *s, const rstate *o, const em_op_attrs *a);
  /* Writes the result (out) and the index (idx, int64) when not NULL;
   * count is the number of elements reduced. */
  void (*finalize)(char *out, char *idx, const rstate *s, int64_t count, const em_op_attrs *a);
  /* Column path (NULL when absent): acc holds n accumulators of at most
   * 8 bytes; col_acc folds `rows` rows of n contiguous elements, the
   * first at x and each rs bytes after the previous, into them; col_merge
   * folds another accumulator block (covering later rows) into acc. */
  void (*col_init)(void *acc, int64_t n, const em_op_attrs *a);
  void (*col_acc)(void *acc, const char *x, int64_t n, int64_t rows, int64_t rs,
                  const em_op_attrs *a);
  void (*col_merge)(void *acc, const void *other, int64_t n, const em_op_attrs *a);
  void (*col_fin)(char *out, int64_t ostride, const void *acc, int64_t n, int64_t count,
                  const em_op_attrs *a);
} red_impl;

/* Compensated (Neumaier) addition of v to (d[0], d[1]). Infinities and
 * NaNs land in d[0]; the finaliser then ignores the compensation. */
static inline void kahan_add(rstate *s, double v) {
  double t = s->d[0] + v;
  if (fabs(s->d[0]) >= fabs(v))
    s->d[1] += (s->d[0] - t) + v;
  else
    s->d[1] += (v - t) + s->d[0];
  s->d[0] = t;
}
static inline double kahan_value(const rstate *s) {
  return isfinite(s->d[0]) ? s->d[0] + s->d[1] : s->d[0];
}
static void kahan_combine(rstate *s, const rstate *o, const em_op_attrs *a) {
  kahan_add(s, o->d[0]);
  s->d[1] += o->d[1];
}
static void zero_init(rstate *s, const em_op_attrs *a) { memset(s, 0, sizeof *s); }
static void wrap_add_combine(rstate *s, const rstate *o, const em_op_attrs *a) {
  s->u[0] += o->u[0];
}

static void dadd_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  double *acc = accp;
  const double *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] += o[c];
}
static void uadd_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  uint64_t *acc = accp;
  const uint64_t *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] += o[c];
}
static void dmul_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  double *acc = accp;
  const double *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] *= o[c];
}
static void umul_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  uint64_t *acc = accp;
  const uint64_t *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] *= o[c];
}
static void and_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  uint8_t *acc = accp;
  const uint8_t *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] &= o[c];
}
static void or_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  uint8_t *acc = accp;
  const uint8_t *o = op;
  for (int64_t c = 0; c < n; c++) acc[c] |= o[c];
}

/* NaN-propagating max / min: once a NaN is seen it stays. */
#define MAX_NAN(acc, v) (((v) > (acc) || (v) != (v)) ? (v) : (acc))
#define MIN_NAN(acc, v) (((v) < (acc) || (v) != (v)) ? (v) : (acc))

/* ---- sum / mean ------------------------------------------------------------------------
 * floats: 16 lanes in the compute type per block, blocks added in double. */
#define DEF_SUM_FLOAT(ENUM, T, C, LD, ST, LO, HI)                                                 \
  static inline double sum_blk_##ENUM(const T *x, int64_t n) {                                    \
    C acc[LANES] = {0};                                                                           \
    int64_t i = 0;                                                                                \
    for (; i + LANES <= n; i += LANES)                                                            \
      for (int k = 0; k < LANES; k++) acc[k] += LD(x[i + k]);                                     \
    for (int k = 0; i < n; i++, k++) acc[k] += LD(x[i]);                                          \
    for (int w = LANES / 2; w > 0; w /= 2)                                                        \
      for (int k = 0; k < w; k++) acc[k] += acc[k + w];                                           \
    return (double)acc[0];                                                                        \
  }                                                                                               \
  static void sum_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,                  \
                              const em_op_attrs *a) {                                             \
    const T *x = (const T *)xp;                                                                   \
    if (n <= LANES) { /* short rows: no lanes to set up */                                        \
      double v = 0;                                                                               \
      for (int64_t i = 0; i < n; i++) v += (double)LD(x[i]);                                      \
      kahan_add(s, v);                                                                            \
      return;                                                                                     \
    }                                                                                             \
    for (int64_t b = 0; b < n; b += BLOCK)                                                        \
      kahan_add(s, sum_blk_##ENUM(x + b, n - b < BLOCK ? n - b : BLOCK));                         \
  }                                                                                               \
  static void sum_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,                \
                             const em_op_attrs *a) {                                              \
    *(T *)out = ST((C)kahan_value(s));                                                            \
  }                                                                                               \
  static void mean_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,               \
                              const em_op_attrs *a) {                                             \
    *(T *)out = ST((C)(kahan_value(s) / (double)count));                                          \
  }                                                                                               \
  static void sum_cinit_##ENUM(void *acc, int64_t n, const em_op_attrs *a) {                      \
    memset(acc, 0, (size_t)n * sizeof(double));                                                   \
  }                                                                                               \
  /* rows are added in the compute type a tile of 64 columns at a time,                           \
   * then into the double accumulators */                                                         \
  static void sum_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs,    \
                              const em_op_attrs *a) {                                             \
    double *acc = accp;                                                                           \
    for (int64_t c0 = 0; c0 < n; c0 += 64) {                                                      \
      const int64_t m = n - c0 < 64 ? n - c0 : 64;                                                \
      const T *x = (const T *)xp + c0;                                                            \
      C t[64];                                                                                    \
      for (int64_t j = 0; j < m; j++) t[j] = LD(x[j]);                                            \
      for (int64_t r = 1; r < rows; r++) {                                                        \
        const T *xr = (const T *)(xp + r * rs) + c0;                                              \
        for (int64_t j = 0; j < m; j++) t[j] += LD(xr[j]);                                        \
      }                                                                                           \
      for (int64_t j = 0; j < m; j++) acc[c0 + j] += (double)t[j];                                \
    }                                                                                             \
  }                                                                                               \
  static void sum_cfin_##ENUM(char *out, int64_t os, const void *accp, int64_t n, int64_t count,  \
                              const em_op_attrs *a) {                                             \
    const double *acc = accp;                                                                     \
    for (int64_t c = 0; c < n; c++) *(T *)(out + c * os) = ST((C)acc[c]);                         \
  }                                                                                               \
  static void mean_cfin_##ENUM(char *out, int64_t os, const void *accp, int64_t n, int64_t count, \
                               const em_op_attrs *a) {                                            \
    const double *acc = accp;                                                                     \
    for (int64_t c = 0; c < n; c++) *(T *)(out + c * os) = ST((C)(acc[c] / (double)count));       \
  }                                                                                               \
  static const red_impl sum_##ENUM = {                                                            \
      false,          EM_GRAIN_CHEAP,   zero_init,       sum_part_##ENUM, kahan_combine,          \
      sum_fin_##ENUM, sum_cinit_##ENUM, sum_cacc_##ENUM, dadd_merge,      sum_cfin_##ENUM};       \
  static const red_impl mean_##ENUM = {                                                           \
      false,           EM_GRAIN_CHEAP,   zero_init,       sum_part_##ENUM, kahan_combine,         \
      mean_fin_##ENUM, sum_cinit_##ENUM, sum_cacc_##ENUM, dadd_merge,      mean_cfin_##ENUM};
RED_FLOAT_TYPES(DEF_SUM_FLOAT)

/* integers and bool: int64 result, wrapping like PyTorch (computed in
 * uint64 where overflow is defined). */
#define DEF_SUM_INT(ENUM, T, C, LD, ST, LO, HI)                                                  \
  static void sum_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,                 \
                              const em_op_attrs *a) {                                            \
    const T *x = (const T *)xp;                                                                  \
    uint64_t acc[LANES] = {0};                                                                   \
    int64_t i = 0;                                                                               \
    for (; i + LANES <= n; i += LANES)                                                           \
      for (int k = 0; k < LANES; k++) acc[k] += (uint64_t)(int64_t)x[i + k];                     \
    for (; i < n; i++) acc[0] += (uint64_t)(int64_t)x[i];                                        \
    for (int k = 0; k < LANES; k++) s->u[0] += acc[k];                                           \
  }                                                                                              \
  static void sum_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,               \
                             const em_op_attrs *a) {                                             \
    *(int64_t *)out = (int64_t)s->u[0];                                                          \
  }                                                                                              \
  static void sum_cinit_##ENUM(void *acc, int64_t n, const em_op_attrs *a) {                     \
    memset(acc, 0, (size_t)n * sizeof(uint64_t));                                                \
  }                                                                                              \
  static void sum_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs,   \
                              const em_op_attrs *a) {                                            \
    uint64_t *acc = accp;                                                                        \
    for (int64_t r = 0; r < rows; r++) {                                                         \
      const T *x = (const T *)(xp + r * rs);                                                     \
      for (int64_t c = 0; c < n; c++) acc[c] += (uint64_t)(int64_t)x[c];                         \
    }                                                                                            \
  }                                                                                              \
  static void sum_cfin_##ENUM(char *out, int64_t os, const void *accp, int64_t n, int64_t count, \
                              const em_op_attrs *a) {                                            \
    const uint64_t *acc = accp;                                                                  \
    for (int64_t c = 0; c < n; c++) *(int64_t *)(out + c * os) = (int64_t)acc[c];                \
  }                                                                                              \
  static const red_impl sum_##ENUM = {                                                           \
      false,          EM_GRAIN_CHEAP,   zero_init,       sum_part_##ENUM, wrap_add_combine,      \
      sum_fin_##ENUM, sum_cinit_##ENUM, sum_cacc_##ENUM, uadd_merge,      sum_cfin_##ENUM};
RED_INTBOOL_TYPES(DEF_SUM_INT)

/* ---- prod ------------------------------------------------------------------------------
 * floats multiply in double; integers wrap in uint64 (int64 result). */
static void prod_init_f(rstate *s, const em_op_attrs *a) { s->d[0] = 1; }
static void prod_combine_f(rstate *s, const rstate *o, const em_op_attrs *a) { s->d[0] *= o->d[0]; }
static void prod_init_i(rstate *s, const em_op_attrs *a) { s->u[0] = 1; }
static void prod_combine_i(rstate *s, const rstate *o, const em_op_attrs *a) { s->u[0] *= o->u[0]; }

#define DEF_PROD_FLOAT(ENUM, T, C, LD, ST, LO, HI)                                              \
  static void prod_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                               const em_op_attrs *a) {                                          \
    const T *x = (const T *)xp;                                                                 \
    double acc[8] = {1, 1, 1, 1, 1, 1, 1, 1};                                                   \
    int64_t i = 0;                                                                              \
    for (; i + 8 <= n; i += 8)                                                                  \
      for (int k = 0; k < 8; k++) acc[k] *= (double)LD(x[i + k]);                               \
    for (; i < n; i++) acc[0] *= (double)LD(x[i]);                                              \
    for (int k = 0; k < 8; k++) s->d[0] *= acc[k];                                              \
  }                                                                                             \
  static void prod_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,             \
                              const em_op_attrs *a) {                                           \
    *(T *)out = ST((C)s->d[0]);                                                                 \
  }                                                                                             \
  static void prod_cinit_##ENUM(void *accp, int64_t n, const em_op_attrs *a) {                  \
    double *acc = accp;                                                                         \
    for (int64_t c = 0; c < n; c++) acc[c] = 1;                                                 \
  }                                                                                             \
  static void prod_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                               const em_op_attrs *a) {                                          \
    double *acc = accp;                                                                         \
    for (int64_t r = 0; r < rows; r++) {                                                        \
      const T *x = (const T *)(xp + r * rs);                                                    \
      for (int64_t c = 0; c < n; c++) acc[c] *= (double)LD(x[c]);                               \
    }                                                                                           \
  }                                                                                             \
  static const red_impl prod_##ENUM = {                                                         \
      false,           EM_GRAIN_CHEAP,    prod_init_f,      prod_part_##ENUM, prod_combine_f,   \
      prod_fin_##ENUM, prod_cinit_##ENUM, prod_cacc_##ENUM, dmul_merge,       sum_cfin_##ENUM};
RED_FLOAT_TYPES(DEF_PROD_FLOAT)

#define DEF_PROD_INT(ENUM, T, C, LD, ST, LO, HI)                                                \
  static void prod_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                               const em_op_attrs *a) {                                          \
    const T *x = (const T *)xp;                                                                 \
    uint64_t acc = 1;                                                                           \
    for (int64_t i = 0; i < n; i++) acc *= (uint64_t)(int64_t)x[i];                             \
    s->u[0] *= acc;                                                                             \
  }                                                                                             \
  static void prod_cinit_##ENUM(void *accp, int64_t n, const em_op_attrs *a) {                  \
    uint64_t *acc = accp;                                                                       \
    for (int64_t c = 0; c < n; c++) acc[c] = 1;                                                 \
  }                                                                                             \
  static void prod_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                               const em_op_attrs *a) {                                          \
    uint64_t *acc = accp;                                                                       \
    for (int64_t r = 0; r < rows; r++) {                                                        \
      const T *x = (const T *)(xp + r * rs);                                                    \
      for (int64_t c = 0; c < n; c++) acc[c] *= (uint64_t)(int64_t)x[c];                        \
    }                                                                                           \
  }                                                                                             \
  static const red_impl prod_##ENUM = {                                                         \
      false,          EM_GRAIN_CHEAP,    prod_init_i,      prod_part_##ENUM, prod_combine_i,    \
      sum_fin_##ENUM, prod_cinit_##ENUM, prod_cacc_##ENUM, umul_merge,       sum_cfin_##ENUM};
RED_INTBOOL_TYPES(DEF_PROD_INT)

/* ---- amax / amin (NaN propagates) ------------------------------------------------------
 * The run loops use GCC vector extensions (16-byte vectors, 4 in flight):
 * the compare-and-blend below is what maxps/minps do, but written so that
 * every vector ISA (and the generic fallback) compiles it; a separate
 * mask collects NaNs for the float types. float16/bfloat16 convert into
 * float vectors element by element. */
#define VT_FLOAT32 float
#define VT_FLOAT64 double
#define VT_FLOAT16 float
#define VT_BFLOAT16 float
#define VT_INT8 int8_t
#define VT_INT16 int16_t
#define VT_INT32 int32_t
#define VT_INT64 int64_t
#define VT_UINT8 uint8_t
#define VT_BOOL uint8_t /* bool bytes are 0 / 1 */
#define VUNROLL 4

/* v <- W elements of x (converted when T is not the vector type). */
#define VLOAD(ENUM, T, LD, v, x)                                                            \
  do {                                                                                      \
    if (sizeof(T) == sizeof(VT_##ENUM)) {                                                   \
      memcpy(&(v), (x), sizeof(v));                                                         \
    } else {                                                                                \
      VT_##ENUM tmp_[sizeof(v) / sizeof(VT_##ENUM)];                                        \
      for (size_t j_ = 0; j_ < sizeof(v) / sizeof(VT_##ENUM); j_++) tmp_[j_] = LD((x)[j_]); \
      memcpy(&(v), tmp_, sizeof(v));                                                        \
    }                                                                                       \
  } while (0)

/* NAME_run_ENUM(x, n): the NaN-propagating extreme of n elements (INIT
 * for n == 0). CMP is > for max, < for min; NANCHK collects NaNs (float
 * types only: integer vectors would warn on x != x). */
#define DEF_RUN(ENUM, T, C, LD, ST, NAME, RULE, CMP, INIT, NANCHK)                           \
  typedef VT_##ENUM NAME##_vec_##ENUM __attribute__((vector_size(16)));                      \
  static inline C NAME##_run_##ENUM(const T *x, int64_t n) {                                 \
    enum { W = 16 / sizeof(VT_##ENUM) };                                                     \
    NAME##_vec_##ENUM acc[VUNROLL];                                                          \
    __typeof__(acc[0] > acc[0]) nan[VUNROLL];                                                \
    {                                                                                        \
      VT_##ENUM init_[W];                                                                    \
      for (int j = 0; j < W; j++) init_[j] = (VT_##ENUM)(INIT);                              \
      for (int u = 0; u < VUNROLL; u++) memcpy(&acc[u], init_, sizeof acc[u]);               \
      memset(nan, 0, sizeof nan);                                                            \
    }                                                                                        \
    int64_t i = 0;                                                                           \
    for (; i + W * VUNROLL <= n; i += W * VUNROLL)                                           \
      for (int u = 0; u < VUNROLL; u++) {                                                    \
        NAME##_vec_##ENUM v;                                                                 \
        VLOAD(ENUM, T, LD, v, x + i + u * W);                                                \
        __typeof__(nan[0]) m = v CMP acc[u];                                                 \
        acc[u] = (NAME##_vec_##ENUM)(((__typeof__(m))v & m) | ((__typeof__(m))acc[u] & ~m)); \
        NANCHK(nan[u], v);                                                                   \
      }                                                                                      \
    C r = INIT;                                                                              \
    bool isnan_ = false;                                                                     \
    for (int u = 0; u < VUNROLL; u++)                                                        \
      for (int j = 0; j < W; j++) {                                                          \
        C e = (C)acc[u][j];                                                                  \
        r = RULE(r, e);                                                                      \
        isnan_ |= nan[u][j] != 0;                                                            \
      }                                                                                      \
    for (; i < n; i++) {                                                                     \
      C v = LD(x[i]);                                                                        \
      r = RULE(r, v);                                                                        \
    }                                                                                        \
    return isnan_ ? (C)NAN : r;                                                              \
  }
#define NAN_MASK(mask, v) ((mask) |= ((v) != (v)))
#define NO_NAN_MASK(mask, v) ((void)0)
#define DEF_RUNS_F(ENUM, T, C, LD, ST, LO, HI)                \
  DEF_RUN(ENUM, T, C, LD, ST, amax, MAX_NAN, >, LO, NAN_MASK) \
  DEF_RUN(ENUM, T, C, LD, ST, amin, MIN_NAN, <, HI, NAN_MASK)
#define DEF_RUNS_I(ENUM, T, C, LD, ST, LO, HI)                   \
  DEF_RUN(ENUM, T, C, LD, ST, amax, MAX_NAN, >, LO, NO_NAN_MASK) \
  DEF_RUN(ENUM, T, C, LD, ST, amin, MIN_NAN, <, HI, NO_NAN_MASK)
RED_FLOAT_TYPES(DEF_RUNS_F)
RED_INTBOOL_TYPES(DEF_RUNS_I)

#define DEF_MINMAX(ENUM, T, C, LD, ST, LO, HI, NAME, RULE, INIT)                                  \
  static void NAME##_init_##ENUM(rstate *s, const em_op_attrs *a) { SVAL(C, s) = INIT; }          \
  static void NAME##_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                                 const em_op_attrs *a) {                                          \
    C v = NAME##_run_##ENUM((const T *)xp, n);                                                    \
    SVAL(C, s) = RULE(SVAL(C, s), v);                                                             \
  }                                                                                               \
  static void NAME##_comb_##ENUM(rstate *s, const rstate *o, const em_op_attrs *a) {              \
    SVAL(C, s) = RULE(SVAL(C, s), SVAL(C, o));                                                    \
  }                                                                                               \
  static void NAME##_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,             \
                                const em_op_attrs *a) {                                           \
    *(T *)out = ST(SVAL(C, s));                                                                   \
  }                                                                                               \
  static void NAME##_cinit_##ENUM(void *accp, int64_t n, const em_op_attrs *a) {                  \
    C *acc = accp;                                                                                \
    for (int64_t c = 0; c < n; c++) acc[c] = INIT;                                                \
  }                                                                                               \
  static void NAME##_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                                 const em_op_attrs *a) {                                          \
    C *acc = accp;                                                                                \
    for (int64_t r = 0; r < rows; r++) {                                                          \
      const T *x = (const T *)(xp + r * rs);                                                      \
      for (int64_t c = 0; c < n; c++) {                                                           \
        C v = LD(x[c]);                                                                           \
        acc[c] = RULE(acc[c], v);                                                                 \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  static void NAME##_cmerge_##ENUM(void *accp, const void *op, int64_t n, const em_op_attrs *a) { \
    C *acc = accp;                                                                                \
    const C *o = op;                                                                              \
    for (int64_t c = 0; c < n; c++) acc[c] = RULE(acc[c], o[c]);                                  \
  }                                                                                               \
  static void NAME##_cfin_##ENUM(char *out, int64_t os, const void *accp, int64_t n,              \
                                 int64_t count, const em_op_attrs *a) {                           \
    const C *acc = accp;                                                                          \
    for (int64_t c = 0; c < n; c++) *(T *)(out + c * os) = ST(acc[c]);                            \
  }                                                                                               \
  static const red_impl NAME##_##ENUM = {false,                                                   \
                                         EM_GRAIN_CHEAP,                                          \
                                         NAME##_init_##ENUM,                                      \
                                         NAME##_part_##ENUM,                                      \
                                         NAME##_comb_##ENUM,                                      \
                                         NAME##_fin_##ENUM,                                       \
                                         NAME##_cinit_##ENUM,                                     \
                                         NAME##_cacc_##ENUM,                                      \
                                         NAME##_cmerge_##ENUM,                                    \
                                         NAME##_cfin_##ENUM};
#define DEF_AMAX(ENUM, T, C, LD, ST, LO, HI) \
  DEF_MINMAX(ENUM, T, C, LD, ST, LO, HI, amax, MAX_NAN, LO)
#define DEF_AMIN(ENUM, T, C, LD, ST, LO, HI) \
  DEF_MINMAX(ENUM, T, C, LD, ST, LO, HI, amin, MIN_NAN, HI)
RED_ALL_TYPES(DEF_AMAX)
RED_ALL_TYPES(DEF_AMIN)

/* ---- all / any / count_nonzero --------------------------------------------------------- */
static void all_init(rstate *s, const em_op_attrs *a) { s->i[0] = 1; }
static void all_comb(rstate *s, const rstate *o, const em_op_attrs *a) { s->i[0] &= o->i[0]; }
static void any_comb(rstate *s, const rstate *o, const em_op_attrs *a) { s->i[0] |= o->i[0]; }
static void bool_fin(char *out, char *idx, const rstate *s, int64_t count, const em_op_attrs *a) {
  *(uint8_t *)out = (uint8_t)(s->i[0] != 0);
}
static void cnt_fin(char *out, char *idx, const rstate *s, int64_t count, const em_op_attrs *a) {
  *(int64_t *)out = s->i[0];
}
static void all_cinit(void *acc, int64_t n, const em_op_attrs *a) { memset(acc, 1, (size_t)n); }
static void u8_cinit(void *acc, int64_t n, const em_op_attrs *a) { memset(acc, 0, (size_t)n); }
static void i64_cinit(void *acc, int64_t n, const em_op_attrs *a) {
  memset(acc, 0, (size_t)n * sizeof(int64_t));
}
static void bool_cfin(char *out, int64_t os, const void *accp, int64_t n, int64_t count,
                      const em_op_attrs *a) {
  const uint8_t *acc = accp;
  for (int64_t c = 0; c < n; c++) *(uint8_t *)(out + c * os) = acc[c];
}
static void cnt_cfin(char *out, int64_t os, const void *accp, int64_t n, int64_t count,
                     const em_op_attrs *a) {
  const int64_t *acc = accp;
  for (int64_t c = 0; c < n; c++) *(int64_t *)(out + c * os) = acc[c];
}

#define DEF_LOGIC(ENUM, T, C, LD, ST, LO, HI)                                                  \
  static void all_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                              const em_op_attrs *a) {                                          \
    const T *x = (const T *)xp;                                                                \
    uint8_t acc = 1;                                                                           \
    for (int64_t i = 0; i < n; i++) acc &= LD(x[i]) != 0;                                      \
    s->i[0] &= acc;                                                                            \
  }                                                                                            \
  static void any_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                              const em_op_attrs *a) {                                          \
    const T *x = (const T *)xp;                                                                \
    uint8_t acc = 0;                                                                           \
    for (int64_t i = 0; i < n; i++) acc |= LD(x[i]) != 0;                                      \
    s->i[0] |= acc;                                                                            \
  }                                                                                            \
  static void cnt_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,               \
                              const em_op_attrs *a) {                                          \
    const T *x = (const T *)xp;                                                                \
    int64_t acc[LANES] = {0};                                                                  \
    int64_t i = 0;                                                                             \
    for (; i + LANES <= n; i += LANES)                                                         \
      for (int k = 0; k < LANES; k++) acc[k] += LD(x[i + k]) != 0;                             \
    for (; i < n; i++) acc[0] += LD(x[i]) != 0;                                                \
    for (int k = 0; k < LANES; k++) s->i[0] += acc[k];                                         \
  }                                                                                            \
  static void all_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                              const em_op_attrs *a) {                                          \
    uint8_t *acc = accp;                                                                       \
    for (int64_t r = 0; r < rows; r++) {                                                       \
      const T *x = (const T *)(xp + r * rs);                                                   \
      for (int64_t c = 0; c < n; c++) acc[c] &= LD(x[c]) != 0;                                 \
    }                                                                                          \
  }                                                                                            \
  static void any_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                              const em_op_attrs *a) {                                          \
    uint8_t *acc = accp;                                                                       \
    for (int64_t r = 0; r < rows; r++) {                                                       \
      const T *x = (const T *)(xp + r * rs);                                                   \
      for (int64_t c = 0; c < n; c++) acc[c] |= LD(x[c]) != 0;                                 \
    }                                                                                          \
  }                                                                                            \
  static void cnt_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs, \
                              const em_op_attrs *a) {                                          \
    int64_t *acc = accp;                                                                       \
    for (int64_t r = 0; r < rows; r++) {                                                       \
      const T *x = (const T *)(xp + r * rs);                                                   \
      for (int64_t c = 0; c < n; c++) acc[c] += LD(x[c]) != 0;                                 \
    }                                                                                          \
  }                                                                                            \
  static const red_impl all_##ENUM = {false,     EM_GRAIN_CHEAP, all_init,  all_part_##ENUM,   \
                                      all_comb,  bool_fin,       all_cinit, all_cacc_##ENUM,   \
                                      and_merge, bool_cfin};                                   \
  static const red_impl any_##ENUM = {false,    EM_GRAIN_CHEAP, zero_init, any_part_##ENUM,    \
                                      any_comb, bool_fin,       u8_cinit,  any_cacc_##ENUM,    \
                                      or_merge, bool_cfin};                                    \
  static const red_impl cnt_##ENUM = {                                                         \
      false,   EM_GRAIN_CHEAP, zero_init,       cnt_part_##ENUM, wrap_add_combine,             \
      cnt_fin, i64_cinit,      cnt_cacc_##ENUM, uadd_merge,      cnt_cfin};
RED_ALL_TYPES(DEF_LOGIC)

/* ---- norm ------------------------------------------------------------------------------
 * a->f[0] = p. Sum-like kinds (0, 1, 2, general) use the compensated sum
 * state; max/min kinds (inf, -inf) keep a NaN-propagating max/min of |x|. */
enum { P_ZERO, P_ONE, P_TWO, P_INF, P_NEGINF, P_GEN };
static int norm_kind(double p) {
  if (p == 0) return P_ZERO;
  if (p == 1) return P_ONE;
  if (p == 2) return P_TWO;
  if (p == INFINITY) return P_INF;
  if (p == -INFINITY) return P_NEGINF;
  return P_GEN;
}
static void norm_init(rstate *s, const em_op_attrs *a) {
  memset(s, 0, sizeof *s);
  if (norm_kind(a->f[0]) == P_NEGINF) s->d[0] = INFINITY;
}
static void norm_comb(rstate *s, const rstate *o, const em_op_attrs *a) {
  switch (norm_kind(a->f[0])) {
    case P_INF: s->d[0] = MAX_NAN(s->d[0], o->d[0]); break;
    case P_NEGINF: s->d[0] = MIN_NAN(s->d[0], o->d[0]); break;
    default: kahan_combine(s, o, a);
  }
}
static double norm_value(double v, int64_t count, const em_op_attrs *a) {
  if (count == 0) return 0;
  switch (norm_kind(a->f[0])) {
    case P_TWO: return sqrt(v);
    case P_GEN: return pow(v, 1.0 / a->f[0]);
    default: return v;
  }
}
static void norm_col_init(void *accp, int64_t n, const em_op_attrs *a) {
  double *acc = accp, v = norm_kind(a->f[0]) == P_NEGINF ? INFINITY : 0;
  for (int64_t c = 0; c < n; c++) acc[c] = v;
}

static void norm_col_merge(void *accp, const void *op, int64_t n, const em_op_attrs *a) {
  double *acc = accp;
  const double *o = op;
  switch (norm_kind(a->f[0])) {
    case P_INF:
      for (int64_t c = 0; c < n; c++) acc[c] = MAX_NAN(acc[c], o[c]);
      break;
    case P_NEGINF:
      for (int64_t c = 0; c < n; c++) acc[c] = MIN_NAN(acc[c], o[c]);
      break;
    default:
      for (int64_t c = 0; c < n; c++) acc[c] += o[c];
  }
}

/* One block of the sum-like kinds with transform F of the loaded value x. */
#define NORM_SUM_BLK(C, LD, arr, n, F, p, out)                   \
  do {                                                           \
    C acc_[LANES] = {0};                                         \
    int64_t i_ = 0;                                              \
    for (; i_ + LANES <= (n); i_ += LANES)                       \
      for (int k_ = 0; k_ < LANES; k_++) {                       \
        C x = LD((arr)[i_ + k_]);                                \
        acc_[k_] += (F);                                         \
      }                                                          \
    for (int k_ = 0; i_ < (n); i_++, k_++) {                     \
      C x = LD((arr)[i_]);                                       \
      acc_[k_] += (F);                                           \
    }                                                            \
    for (int w_ = LANES / 2; w_ > 0; w_ /= 2)                    \
      for (int k_ = 0; k_ < w_; k_++) acc_[k_] += acc_[k_ + w_]; \
    (out) = (double)acc_[0];                                     \
  } while (0)

#define DEF_NORM(ENUM, T, C, LD, ST, LO, HI)                                                      \
  static void norm_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,                 \
                               const em_op_attrs *a) {                                            \
    const T *xs = (const T *)xp;                                                                  \
    const int kind = norm_kind(a->f[0]);                                                          \
    const C p = (C)a->f[0];                                                                       \
    if (kind == P_INF || kind == P_NEGINF) {                                                      \
      C acc[LANES];                                                                               \
      for (int k = 0; k < LANES; k++) acc[k] = (C)s->d[0];                                        \
      int64_t i = 0;                                                                              \
      if (kind == P_INF) {                                                                        \
        for (; i + LANES <= n; i += LANES)                                                        \
          for (int k = 0; k < LANES; k++) {                                                       \
            C v = CABS(LD(xs[i + k]));                                                            \
            acc[k] = MAX_NAN(acc[k], v);                                                          \
          }                                                                                       \
        for (; i < n; i++) {                                                                      \
          C v = CABS(LD(xs[i]));                                                                  \
          acc[0] = MAX_NAN(acc[0], v);                                                            \
        }                                                                                         \
        for (int k = 1; k < LANES; k++) acc[0] = MAX_NAN(acc[0], acc[k]);                         \
      } else {                                                                                    \
        for (; i + LANES <= n; i += LANES)                                                        \
          for (int k = 0; k < LANES; k++) {                                                       \
            C v = CABS(LD(xs[i + k]));                                                            \
            acc[k] = MIN_NAN(acc[k], v);                                                          \
          }                                                                                       \
        for (; i < n; i++) {                                                                      \
          C v = CABS(LD(xs[i]));                                                                  \
          acc[0] = MIN_NAN(acc[0], v);                                                            \
        }                                                                                         \
        for (int k = 1; k < LANES; k++) acc[0] = MIN_NAN(acc[0], acc[k]);                         \
      }                                                                                           \
      s->d[0] = (double)acc[0];                                                                   \
      return;                                                                                     \
    }                                                                                             \
    for (int64_t b = 0; b < n; b += BLOCK) {                                                      \
      const T *xb = xs + b;                                                                       \
      int64_t m = n - b < BLOCK ? n - b : BLOCK;                                                  \
      double v;                                                                                   \
      switch (kind) {                                                                             \
        case P_ZERO: NORM_SUM_BLK(C, LD, xb, m, (C)(x != 0), p, v); break;                        \
        case P_ONE: NORM_SUM_BLK(C, LD, xb, m, CABS(x), p, v); break;                             \
        case P_TWO: NORM_SUM_BLK(C, LD, xb, m, x *x, p, v); break;                                \
        default: NORM_SUM_BLK(C, LD, xb, m, CPOW(CABS(x), p), p, v); break;                       \
      }                                                                                           \
      kahan_add(s, v);                                                                            \
    }                                                                                             \
  }                                                                                               \
  static void norm_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,               \
                              const em_op_attrs *a) {                                             \
    int kind = norm_kind(a->f[0]);                                                                \
    double v = (kind == P_INF || kind == P_NEGINF) ? s->d[0] : kahan_value(s);                    \
    *(T *)out = ST((C)norm_value(v, count, a));                                                   \
  }                                                                                               \
  static void norm_cacc_##ENUM(void *accp, const char *xp, int64_t n, int64_t rows, int64_t rs,   \
                               const em_op_attrs *a) {                                            \
    double *acc = accp;                                                                           \
    const double p = a->f[0];                                                                     \
    const int kind = norm_kind(p);                                                                \
    for (int64_t r = 0; r < rows; r++) {                                                          \
      const T *xs = (const T *)(xp + r * rs);                                                     \
      switch (kind) {                                                                             \
        case P_ZERO:                                                                              \
          for (int64_t c = 0; c < n; c++) acc[c] += LD(xs[c]) != 0;                               \
          break;                                                                                  \
        case P_ONE:                                                                               \
          for (int64_t c = 0; c < n; c++) acc[c] += fabs((double)LD(xs[c]));                      \
          break;                                                                                  \
        case P_TWO:                                                                               \
          for (int64_t c = 0; c < n; c++) {                                                       \
            double v = (double)LD(xs[c]);                                                         \
            acc[c] += v * v;                                                                      \
          }                                                                                       \
          break;                                                                                  \
        case P_INF:                                                                               \
          for (int64_t c = 0; c < n; c++) {                                                       \
            double v = fabs((double)LD(xs[c]));                                                   \
            acc[c] = MAX_NAN(acc[c], v);                                                          \
          }                                                                                       \
          break;                                                                                  \
        case P_NEGINF:                                                                            \
          for (int64_t c = 0; c < n; c++) {                                                       \
            double v = fabs((double)LD(xs[c]));                                                   \
            acc[c] = MIN_NAN(acc[c], v);                                                          \
          }                                                                                       \
          break;                                                                                  \
        default:                                                                                  \
          for (int64_t c = 0; c < n; c++) acc[c] += pow(fabs((double)LD(xs[c])), p);              \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  static void norm_cfin_##ENUM(char *out, int64_t os, const void *accp, int64_t n, int64_t count, \
                               const em_op_attrs *a) {                                            \
    const double *acc = accp;                                                                     \
    for (int64_t c = 0; c < n; c++) *(T *)(out + c * os) = ST((C)norm_value(acc[c], count, a));   \
  }                                                                                               \
  static const red_impl norm_##ENUM = {                                                           \
      false,           EM_GRAIN_CHEAP, norm_init,        norm_part_##ENUM, norm_comb,             \
      norm_fin_##ENUM, norm_col_init,  norm_cacc_##ENUM, norm_col_merge,   norm_cfin_##ENUM};
RED_FLOAT_TYPES(DEF_NORM)

/* ---- var / std -------------------------------------------------------------------------
 * state d[0] = count, d[1] = mean, d[2] = sum of squared deviations.
 * a->f[0] = correction: the divisor is max(0, count - correction). */
static void chan_merge(rstate *s, double nb, double mb, double m2b) {
  double na = s->d[0];
  if (nb == 0) return;
  if (na == 0) {
    s->d[0] = nb, s->d[1] = mb, s->d[2] = m2b;
    return;
  }
  double n = na + nb, delta = mb - s->d[1];
  s->d[1] += delta * (nb / n);
  s->d[2] += m2b + delta * delta * (na * nb / n);
  s->d[0] = n;
}
static void var_comb(rstate *s, const rstate *o, const em_op_attrs *a) {
  chan_merge(s, o->d[0], o->d[1], o->d[2]);
}
static double var_value(const rstate *s, int64_t count, const em_op_attrs *a) {
  double div = (double)count - a->f[0];
  if (div < 0) div = 0;
  return s->d[2] / div;
}

#define DEF_VAR(ENUM, T, C, LD, ST, LO, HI)                                                  \
  static void var_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,             \
                              const em_op_attrs *a) {                                        \
    const T *xs = (const T *)xp;                                                             \
    for (int64_t b = 0; b < n; b += BLOCK) {                                                 \
      const T *x = xs + b;                                                                   \
      int64_t m = n - b < BLOCK ? n - b : BLOCK, i = 0;                                      \
      double acc[8] = {0};                                                                   \
      for (; i + 8 <= m; i += 8)                                                             \
        for (int k = 0; k < 8; k++) acc[k] += (double)LD(x[i + k]);                          \
      for (int k = 0; i < m; i++, k++) acc[k] += (double)LD(x[i]);                           \
      double sum =                                                                           \
          ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
      double mean = sum / (double)m;                                                         \
      double q[8] = {0};                                                                     \
      for (i = 0; i + 8 <= m; i += 8)                                                        \
        for (int k = 0; k < 8; k++) {                                                        \
          double d = (double)LD(x[i + k]) - mean;                                            \
          q[k] += d * d;                                                                     \
        }                                                                                    \
      for (int k = 0; i < m; i++, k++) {                                                     \
        double d = (double)LD(x[i]) - mean;                                                  \
        q[k] += d * d;                                                                       \
      }                                                                                      \
      double m2 = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));         \
      chan_merge(s, (double)m, mean, m2);                                                    \
    }                                                                                        \
  }                                                                                          \
  static void var_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,           \
                             const em_op_attrs *a) {                                         \
    *(T *)out = ST((C)var_value(s, count, a));                                               \
  }                                                                                          \
  static void std_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count,           \
                             const em_op_attrs *a) {                                         \
    *(T *)out = ST((C)sqrt(var_value(s, count, a)));                                         \
  }                                                                                          \
  static const red_impl var_##ENUM = {                                                       \
      false, EM_GRAIN_CHEAP, zero_init, var_part_##ENUM, var_comb, var_fin_##ENUM, NULL,     \
      NULL,  NULL,           NULL};                                                          \
  static const red_impl std_##ENUM = {                                                       \
      false, EM_GRAIN_CHEAP, zero_init, var_part_##ENUM, var_comb, std_fin_##ENUM, NULL,     \
      NULL,  NULL,           NULL};
RED_FLOAT_TYPES(DEF_VAR)

/* ---- exp -------------------------------------------------------------------------------
 * exp over 8-float vectors (two SSE halves unless built for AVX2) with
 * Cephes' range reduction and degree-6 polynomial: within 2 ulp of expf,
 * exp(-inf) = 0, NaN stays NaN, overflow gives inf. 2^n is applied as two
 * factors so that n in [-150, 128] never leaves the normal range before
 * the final multiply. */
typedef float v4sf __attribute__((vector_size(16)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef float v8sf __attribute__((vector_size(32)));
typedef int32_t v8si __attribute__((vector_size(32)));

/* NAME(VT *x): x <- exp(x) over a W-float vector. */
#define DEF_VEXP(NAME, VT, VI, ATTR)                                  \
  static inline ATTR void NAME(VT *xp) {                              \
    VT x = *xp;                                                       \
    const VI nan_mask = x != x;                                       \
    VT k;                                                             \
    for (size_t j = 0; j < sizeof(VT) / 4; j++) k[j] = 0.0f;          \
    x = (VT)(((VI)k & nan_mask) | ((VI)x & ~nan_mask));               \
    for (size_t j = 0; j < sizeof(VT) / 4; j++) k[j] = 88.8f;         \
    VI m = x > k;                                                     \
    x = (VT)(((VI)k & m) | ((VI)x & ~m));                             \
    for (size_t j = 0; j < sizeof(VT) / 4; j++) k[j] = -104.0f;       \
    m = x < k;                                                        \
    x = (VT)(((VI)k & m) | ((VI)x & ~m));                             \
    VT fn = x * 1.44269504088896341f;                                 \
    fn = (fn + 12582912.0f) - 12582912.0f; /* round to nearest */     \
    VT r = x - fn * 0.693359375f;                                     \
    r = r - fn * -2.12194440e-4f;                                     \
    VT p = r * 1.9875691500e-4f + 1.3981999507e-3f;                   \
    p = p * r + 8.3334519073e-3f;                                     \
    p = p * r + 4.1665795894e-2f;                                     \
    p = p * r + 1.6666665459e-1f;                                     \
    p = p * r + 5.0000001201e-1f;                                     \
    VT y = p * r * r + r + 1.0f;                                      \
    VI n = __builtin_convertvector(fn, VI), n1 = n >> 1, n2 = n - n1; \
    y = y * (VT)((n1 + 127) << 23) * (VT)((n2 + 127) << 23);          \
    for (size_t j = 0; j < sizeof(VT) / 4; j++) k[j] = NAN;           \
    *xp = (VT)(((VI)k & nan_mask) | ((VI)y & ~nan_mask));             \
  }

/* NAME(x, mx, y, n): sum of exp(x[i] - mx) over n floats, storing each
 * term in y (which may be x) unless y is NULL. Two vectors in flight;
 * lanes flushed into a double every 1024 elements; the tail is padded
 * with -inf (exp 0). */
#define DEF_EXPSUM(NAME, VT, VEXP, ATTR)                                   \
  static ATTR double NAME(const float *x, float mx, float *y, int64_t n) { \
    enum { W = sizeof(VT) / 4 };                                           \
    double s = 0;                                                          \
    int64_t i = 0;                                                         \
    while (i < n) {                                                        \
      VT acc0 = {0}, acc1 = {0};                                           \
      int64_t end = n - i > 1024 ? i + 1024 : n;                           \
      for (; i + 2 * W <= end; i += 2 * W) {                               \
        VT a, b;                                                           \
        memcpy(&a, x + i, sizeof a);                                       \
        memcpy(&b, x + i + W, sizeof b);                                   \
        a -= mx;                                                           \
        b -= mx;                                                           \
        VEXP(&a);                                                          \
        VEXP(&b);                                                          \
        if (y) {                                                           \
          memcpy(y + i, &a, sizeof a);                                     \
          memcpy(y + i + W, &b, sizeof b);                                 \
        }                                                                  \
        acc0 += a;                                                         \
        acc1 += b;                                                         \
      }                                                                    \
      while (i < end) {                                                    \
        float buf[W];                                                      \
        int k = end - i < W ? (int)(end - i) : W;                          \
        for (int j = 0; j < W; j++) buf[j] = j < k ? x[i + j] : -INFINITY; \
        VT a;                                                              \
        memcpy(&a, buf, sizeof a);                                         \
        a -= mx;                                                           \
        VEXP(&a);                                                          \
        memcpy(buf, &a, sizeof a);                                         \
        if (y)                                                             \
          for (int j = 0; j < k; j++) y[i + j] = buf[j];                   \
        acc0 += a;                                                         \
        i += k;                                                            \
      }                                                                    \
      acc0 += acc1;                                                        \
      float lanes[W];                                                      \
      memcpy(lanes, &acc0, sizeof lanes);                                  \
      double part = 0;                                                     \
      for (int j = 0; j < W; j++) part += lanes[j];                        \
      s += part;                                                           \
    }                                                                      \
    return s;                                                              \
  }

DEF_VEXP(vexp4, v4sf, v4si, )
DEF_EXPSUM(expsum4, v4sf, vexp4, )
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EM_HAVE_AVX2_EXP 1
DEF_VEXP(vexp8, v8sf, v8si, __attribute__((target("avx2"))))
DEF_EXPSUM(expsum8, v8sf, vexp8, __attribute__((target("avx2"))))
#endif

static double expsum_f32(const float *x, float mx, float *y, int64_t n) {
#ifdef EM_HAVE_AVX2_EXP
  if (n >= 16 && __builtin_cpu_supports("avx2")) return expsum8(x, mx, y, n);
#endif
  return expsum4(x, mx, y, n);
}

static double expsum_f64(const double *x, double mx, double *y, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; k++) {
      double e = exp(x[i + k] - mx);
      if (y) y[i + k] = e;
      acc[k] += e;
    }
  for (int k = 0; i < n; i++, k++) {
    double e = exp(x[i] - mx);
    if (y) y[i] = e;
    acc[k] += e;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* float16 / bfloat16: through a float buffer; y (float) may be NULL. */
#define DEF_EXPSUM_HALF(ENUM, LD)                                                 \
  static double expsum_##ENUM(const uint16_t *x, float mx, float *y, int64_t n) { \
    float buf[256];                                                               \
    double s = 0;                                                                 \
    for (int64_t b = 0; b < n; b += 256) {                                        \
      int64_t m = n - b < 256 ? n - b : 256;                                      \
      for (int64_t j = 0; j < m; j++) buf[j] = LD(x[b + j]);                      \
      s += expsum_f32(buf, mx, y ? y + b : NULL, m);                              \
    }                                                                             \
    return s;                                                                     \
  }
DEF_EXPSUM_HALF(FLOAT16, em__h2f)
DEF_EXPSUM_HALF(BFLOAT16, em__b2f)
#define expsum_FLOAT32 expsum_f32
#define expsum_FLOAT64 expsum_f64

/* ---- logsumexp -------------------------------------------------------------------------
 * state d[0] = running max m (NaN once any NaN is seen), d[1] = sum of
 * exp(x - m). An infinite max makes the result that infinity, as
 * PyTorch's max-subtracted formula does. */
static void lse_init(rstate *s, const em_op_attrs *a) {
  s->d[0] = -INFINITY;
  s->d[1] = 0;
}
static void lse_merge(rstate *s, double m, double sum) {
  double sm = s->d[0];
  if (sm != sm) return;
  if (m != m) {
    s->d[0] = NAN;
    return;
  }
  if (m == -INFINITY) return;
  if (sm == -INFINITY) {
    s->d[0] = m, s->d[1] = sum;
    return;
  }
  if (sm == INFINITY || m == INFINITY) {
    s->d[0] = INFINITY;
    return;
  }
  double mm = sm > m ? sm : m;
  s->d[1] = s->d[1] * exp(sm - mm) + sum * exp(m - mm);
  s->d[0] = mm;
}
static void lse_comb(rstate *s, const rstate *o, const em_op_attrs *a) {
  lse_merge(s, o->d[0], o->d[1]);
}
static double lse_value(const rstate *s) {
  double m = s->d[0];
  if (m != m || isinf(m)) return m;
  return m + log(s->d[1]);
}

#define DEF_LSE(ENUM, T, C, LD, ST, LO, HI)                                        \
  static void lse_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,   \
                              const em_op_attrs *a) {                              \
    const T *xs = (const T *)xp;                                                   \
    for (int64_t b = 0; b < n; b += BLOCK) {                                       \
      const T *x = xs + b;                                                         \
      int64_t m = n - b < BLOCK ? n - b : BLOCK;                                   \
      C mx = amax_run_##ENUM(x, m);                                                \
      if (mx != mx || isinf(mx)) {                                                 \
        lse_merge(s, (double)mx, 1);                                               \
        continue;                                                                  \
      }                                                                            \
      lse_merge(s, (double)mx, expsum_##ENUM(x, mx, NULL, m));                     \
    }                                                                              \
  }                                                                                \
  static void lse_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count, \
                             const em_op_attrs *a) {                               \
    *(T *)out = ST((C)lse_value(s));                                               \
  }                                                                                \
  static const red_impl lse_##ENUM = {false,    EM_GRAIN_COSTLY,                   \
                                      lse_init, lse_part_##ENUM,                   \
                                      lse_comb, lse_fin_##ENUM,                    \
                                      NULL,     NULL,                              \
                                      NULL,     NULL};
RED_FLOAT_TYPES(DEF_LSE)

/* ---- max / min with index (argmax, argmin) ---------------------------------------------
 * state: the value (compute type) at the start, i[1] = index (-1: empty).
 * The first occurrence wins; the first NaN beats everything. A run is
 * reduced in two vectorised passes: its extreme value, then the first
 * position holding it. */
#define DEF_ARG(ENUM, T, C, LD, ST, LO, HI, NAME, RUN, BETTER)                        \
  static void NAME##_init_##ENUM(rstate *s, const em_op_attrs *a) {                   \
    memset(s, 0, sizeof *s);                                                          \
    s->i[1] = -1;                                                                     \
  }                                                                                   \
  static void NAME##_comb_##ENUM(rstate *s, const rstate *o, const em_op_attrs *a) {  \
    if (o->i[1] < 0) return;                                                          \
    if (s->i[1] < 0) {                                                                \
      *s = *o;                                                                        \
      return;                                                                         \
    }                                                                                 \
    C sv = SVAL(C, s), ov = SVAL(C, o);                                               \
    if (sv != sv) return;                                                             \
    if (ov != ov || BETTER(ov, sv)) *s = *o;                                          \
  }                                                                                   \
  static void NAME##_part_##ENUM(rstate *s, const char *xp, int64_t n, int64_t pos,   \
                                 const em_op_attrs *a) {                              \
    const T *x = (const T *)xp;                                                       \
    if (n <= 0) return;                                                               \
    C best = RUN(x, n);                                                               \
    int64_t i = 0;                                                                    \
    if (best != best) {                                                               \
      while (LD(x[i]) == LD(x[i])) i++;                                               \
    } else {                                                                          \
      while (LD(x[i]) != best) i++;                                                   \
    }                                                                                 \
    rstate o;                                                                         \
    memset(&o, 0, sizeof o);                                                          \
    SVAL(C, &o) = best;                                                               \
    o.i[1] = pos + i;                                                                 \
    NAME##_comb_##ENUM(s, &o, a);                                                     \
  }                                                                                   \
  static void NAME##_fin_##ENUM(char *out, char *idx, const rstate *s, int64_t count, \
                                const em_op_attrs *a) {                               \
    if (out) *(T *)out = ST(SVAL(C, s));                                              \
    if (idx) *(int64_t *)idx = s->i[1];                                               \
  }                                                                                   \
  static const red_impl NAME##_##ENUM = {true,                                        \
                                         EM_GRAIN_CHEAP,                              \
                                         NAME##_init_##ENUM,                          \
                                         NAME##_part_##ENUM,                          \
                                         NAME##_comb_##ENUM,                          \
                                         NAME##_fin_##ENUM,                           \
                                         NULL,                                        \
                                         NULL,                                        \
                                         NULL,                                        \
                                         NULL};
#define GT(x, y) ((x) > (y))
#define LT(x, y) ((x) < (y))
#define DEF_ARGMAX(ENUM, T, C, LD, ST, LO, HI) \
  DEF_ARG(ENUM, T, C, LD, ST, LO, HI, argmax, amax_run_##ENUM, GT)
#define DEF_ARGMIN(ENUM, T, C, LD, ST, LO, HI) \
  DEF_ARG(ENUM, T, C, LD, ST, LO, HI, argmin, amin_run_##ENUM, LT)
RED_ALL_TYPES(DEF_ARGMAX)
RED_ALL_TYPES(DEF_ARGMIN)

/* ---- the driver ----------------------------------------------------------------------- */

/* Dims of size > 1, coalesced: kept dims in order (with their output
 * strides), reduced dims outermost first. */
typedef struct geom {
  int nk, nr;
  int64_t ks[EM_MAX_DIMS], kst[EM_MAX_DIMS], kos[EM_MAX_DIMS];
  int64_t rs[EM_MAX_DIMS], rst[EM_MAX_DIMS];
  int64_t M, R;
} geom;

static void build_geom(geom *g, const em_tensor *in, const bool *red, bool ordered) {
  int nd = in->ndim;
  int64_t ostr[EM_MAX_DIMS], acc = 1, R = 1;
  for (int i = nd - 1; i >= 0; i--) {
    if (red[i]) {
      R *= in->shape[i];
    } else {
      ostr[i] = acc;
      acc *= in->shape[i];
    }
  }
  g->M = acc;
  g->R = R;
  g->nk = g->nr = 0;
  for (int i = 0; i < nd; i++) {
    if (in->shape[i] == 1) continue;
    if (red[i]) {
      g->rs[g->nr] = in->shape[i];
      g->rst[g->nr++] = in->strides[i];
    } else {
      int k = g->nk;
      if (k > 0 && g->kst[k - 1] == in->strides[i] * in->shape[i] &&
          g->kos[k - 1] == ostr[i] * in->shape[i]) {
        g->ks[k - 1] *= in->shape[i];
        g->kst[k - 1] = in->strides[i];
        g->kos[k - 1] = ostr[i];
      } else {
        g->ks[k] = in->shape[i];
        g->kst[k] = in->strides[i];
        g->kos[k] = ostr[i];
        g->nk++;
      }
    }
  }
  if (!ordered) { /* order-free ops: largest stride outermost (stable) */
    for (int i = 1; i < g->nr; i++) {
      int64_t s = g->rs[i], st = g->rst[i];
      int j = i;
      for (; j > 0 && g->rst[j - 1] < st; j--) {
        g->rs[j] = g->rs[j - 1];
        g->rst[j] = g->rst[j - 1];
      }
      g->rs[j] = s;
      g->rst[j] = st;
    }
  }
  int n = 0;
  for (int i = 0; i < g->nr; i++) {
    if (n > 0 && g->rst[n - 1] == g->rst[i] * g->rs[i]) {
      g->rs[n - 1] *= g->rs[i];
      g->rst[n - 1] = g->rst[i];
    } else {
      g->rs[n] = g->rs[i];
      g->rst[n++] = g->rst[i];
    }
  }
  g->nr = n;
  if (g->nr == 0) { /* one element per output */
    g->nr = 1;
    g->rs[0] = 1;
    g->rst[0] = 1;
  }
}

/* Input offset (elements) of output m, skipping kept dim `skip`. */
static inline int64_t kept_off(const geom *g, int64_t m, int skip, int64_t *out_off) {
  int64_t off = 0, oo = 0;
  for (int k = g->nk - 1; k >= 0; k--) {
    if (k == skip) continue;
    int64_t q = m / g->ks[k], i = m - q * g->ks[k];
    off += i * g->kst[k];
    oo += i * g->kos[k];
    m = q;
  }
  if (out_off) *out_off = oo;
  return off;
}

/* Offset of run j over the reduced dims except the innermost. */
static inline int64_t run_off(const geom *g, int64_t j) {
  int64_t off = 0;
  for (int k = g->nr - 2; k >= 0 && j > 0; k--) {
    int64_t q = j / g->rs[k];
    off += (j - q * g->rs[k]) * g->rst[k];
    j = q;
  }
  return off;
}

/* Start of piece k of K over n elements. */
static inline int64_t piece_start(int64_t n, int64_t K, int64_t k) {
  int64_t q = n / K, r = n % K;
  return q * k + (k < r ? k : r);
}

typedef struct drive_ctx {
  const red_impl *im;
  const em_op_attrs *a;
  const geom *g;
  const char *x;
  int64_t es;
  char *o0, *o1;
  int64_t oes;
  int64_t K, Ri;       /* INNER: pieces per output, innermost run length */
  rstate *st;          /* INNER with K > 1: states [M][K] */
  int cdim;            /* OUTER: the contiguous kept dim */
  int64_t nb, Kr;      /* OUTER: column blocks, row pieces per block */
  unsigned char *bufs; /* OUTER with Kr > 1: accumulators [blocks][Kr][COL_BLOCK * 8] */
} drive_ctx;

static void inner_task(void *p, int64_t tb, int64_t te) {
  const drive_ctx *c = p;
  const geom *g = c->g;
  const red_impl *im = c->im;
  const int64_t R = g->R, K = c->K, Ri = c->Ri;
  for (int64_t t = tb; t < te; t++) {
    int64_t m = t / K, k = t - m * K;
    int64_t p0 = piece_start(R, K, k), p1 = piece_start(R, K, k + 1);
    const char *base = c->x + kept_off(g, m, -1, NULL) * c->es;
    rstate s;
    im->init(&s, c->a);
    int64_t j = p0 / Ri, i0 = p0 - j * Ri, pos = p0;
    while (pos < p1) {
      int64_t len = Ri - i0;
      if (len > p1 - pos) len = p1 - pos;
      im->partial(&s, base + (run_off(g, j) + i0) * c->es, len, pos, c->a);
      pos += len;
      i0 = 0;
      j++;
    }
    if (K == 1)
      im->finalize(c->o0 ? c->o0 + m * c->oes : NULL, c->o1 ? c->o1 + m * 8 : NULL, &s, R, c->a);
    else
      c->st[t] = s;
  }
}

/* Column block tc of the OUTER path: input and output offsets (elements),
 * first column and width. */
static void outer_block(const drive_ctx *c, int64_t tc, int64_t *in_off, int64_t *out_off,
                        int64_t *c0, int64_t *cb) {
  const geom *g = c->g;
  int64_t m2 = tc / c->nb, b = tc - m2 * c->nb, C = g->ks[c->cdim];
  *in_off = kept_off(g, m2, c->cdim, out_off);
  *c0 = b * COL_BLOCK;
  *cb = C - *c0 < COL_BLOCK ? C - *c0 : COL_BLOCK;
}

/* Task t: column block t / Kr folded over row piece t % Kr. */
static void outer_task(void *p, int64_t tb, int64_t te) {
  const drive_ctx *c = p;
  const geom *g = c->g;
  const red_impl *im = c->im;
  const int L = g->nr - 1;
  const int64_t ocs = g->kos[c->cdim], Kr = c->Kr;
  _Alignas(64) unsigned char local[COL_BLOCK * 8];
  for (int64_t t = tb; t < te; t++) {
    int64_t tc = t / Kr, piece = t - tc * Kr, in_off, oo, c0, cb;
    outer_block(c, tc, &in_off, &oo, &c0, &cb);
    const char *base = c->x + (in_off + c0) * c->es;
    unsigned char *acc = Kr > 1 ? c->bufs + (size_t)t * COL_BLOCK * 8 : local;
    int64_t r0 = piece_start(g->R, Kr, piece), r1 = piece_start(g->R, Kr, piece + 1);
    int64_t idx[EM_MAX_DIMS], roff = 0, q = r0;
    for (int d = L; d >= 0; d--) {
      idx[d] = q % g->rs[d];
      q /= g->rs[d];
      roff += idx[d] * g->rst[d];
    }
    im->col_init(acc, cb, c->a);
    for (int64_t r = r0; r < r1;) {
      int64_t rows = g->rs[L] - idx[L];
      if (rows > r1 - r) rows = r1 - r;
      if (rows > ROW_GROUP) rows = ROW_GROUP;
      im->col_acc(acc, base + roff * c->es, cb, rows, g->rst[L] * c->es, c->a);
      r += rows;
      idx[L] += rows;
      roff += rows * g->rst[L];
      for (int d = L; d > 0 && idx[d] == g->rs[d]; d--) {
        roff -= g->rst[d] * g->rs[d];
        idx[d] = 0;
        idx[d - 1]++;
        roff += g->rst[d - 1];
      }
    }
    if (Kr == 1) im->col_fin(c->o0 + (oo + c0 * ocs) * c->oes, ocs * c->oes, acc, cb, g->R, c->a);
  }
}

/* Runs a reduction: see the comment at the top of the file. */
static em_status reduce_run(const red_impl *im, em_tensor *const *out, em_tensor *in,
                            const em_op_attrs *a) {
  bool red[EM_MAX_DIMS] = {0};
  for (int i = 0; i < a->nd; i++)
    if (a->d[i] >= 0 && a->d[i] < in->ndim) red[a->d[i]] = true;
  geom g;
  build_geom(&g, in, red, im->ordered);
  if (g.M == 0) return EM_OK;
  char *o0 = out[0] ? em__data_ptr(out[0]) : NULL;
  char *o1 = out[1] ? em__data_ptr(out[1]) : NULL;
  int64_t oes = out[0] ? (int64_t)em_dtype_size((em_dtype)out[0]->dtype) : 0;
  if (g.R == 0) {
    for (int64_t m = 0; m < g.M; m++) {
      rstate s;
      im->init(&s, a);
      im->finalize(o0 ? o0 + m * oes : NULL, o1 ? o1 + m * 8 : NULL, &s, 0, a);
    }
    return EM_OK;
  }
  drive_ctx c = {.im = im,
                 .a = a,
                 .g = &g,
                 .x = em__data_ptr(in),
                 .es = (int64_t)em_dtype_size((em_dtype)in->dtype),
                 .o0 = o0,
                 .o1 = o1,
                 .oes = oes};
  bool inner_ok = g.rst[g.nr - 1] == 1;
  int64_t Ri = g.rs[g.nr - 1];
  int cdim = -1;
  if (im->col_acc && out[1] == NULL)
    for (int k = 0; k < g.nk; k++)
      if (g.kst[k] == 1 && g.ks[k] >= 16) cdim = k;

  if (inner_ok && (Ri >= 16 || g.nr == 1)) {
    int64_t K = 1;
    if (g.R >= 2 * PIECE) K = g.R / PIECE < MAX_PIECES ? g.R / PIECE : MAX_PIECES;
    c.K = K;
    c.Ri = Ri;
    if (K > 1) {
      c.st = malloc((size_t)(g.M * K) * sizeof(rstate));
      if (!c.st)
        return em__set_error(EM_ERR_NOMEM, "out of memory for %lld partial results",
                             (long long)(g.M * K));
    }
    int64_t per = g.R / K;
    em__parallel_for(g.M * K, per >= im->grain ? 1 : im->grain / (per > 0 ? per : 1), inner_task,
                     &c);
    if (K > 1) {
      for (int64_t m = 0; m < g.M; m++) {
        rstate s = c.st[m * K];
        for (int64_t k = 1; k < K; k++) im->combine(&s, &c.st[m * K + k], a);
        im->finalize(o0 ? o0 + m * oes : NULL, o1 ? o1 + m * 8 : NULL, &s, g.R, a);
      }
      free(c.st);
    }
    return EM_OK;
  }
  if (cdim >= 0) {
    /* Few column blocks over many rows: also cut the rows into pieces
     * (chosen from the shape alone, so results do not depend on the
     * thread count). */
    c.cdim = cdim;
    c.nb = (g.ks[cdim] + COL_BLOCK - 1) / COL_BLOCK;
    int64_t ntc = g.M / g.ks[cdim] * c.nb;
    int64_t width = g.ks[cdim] < COL_BLOCK ? g.ks[cdim] : COL_BLOCK, Kr = 1;
    if (ntc < 8) {
      Kr = g.R * width / (2 * PIECE);
      if (Kr > 16) Kr = 16;
      if (Kr > g.R / ROW_GROUP) Kr = g.R / ROW_GROUP;
      if (Kr < 1) Kr = 1;
    }
    c.Kr = Kr;
    if (Kr > 1) {
      c.bufs = malloc((size_t)(ntc * Kr) * COL_BLOCK * 8);
      if (!c.bufs)
        return em__set_error(EM_ERR_NOMEM, "out of memory for %lld partial column results",
                             (long long)(ntc * Kr * width));
    }
    int64_t per = g.R / Kr * width;
    em__parallel_for(ntc * Kr, per >= im->grain ? 1 : im->grain / per, outer_task, &c);
    if (Kr > 1) {
      const int64_t ocs = g.kos[cdim];
      for (int64_t tc = 0; tc < ntc; tc++) {
        int64_t in_off, oo, c0, cb;
        outer_block(&c, tc, &in_off, &oo, &c0, &cb);
        unsigned char *acc = c.bufs + (size_t)(tc * Kr) * COL_BLOCK * 8;
        for (int64_t k = 1; k < Kr; k++) im->col_merge(acc, acc + (size_t)k * COL_BLOCK * 8, cb, a);
        im->col_fin(o0 + (oo + c0 * ocs) * oes, ocs * oes, acc, cb, g.R, a);
      }
      free(c.bufs);
    }
    return EM_OK;
  }
  /* Neither: copy with the kept dims outermost and the reduced dims
   * innermost (in stride order unless the op is ordered), then INNER. */
  int perm[EM_MAX_DIMS], np = 0, nkept = 0;
  for (int i = 0; i < in->ndim; i++)
    if (!red[i]) perm[np++] = i;
  nkept = np;
  for (int i = 0; i < in->ndim; i++)
    if (red[i]) perm[np++] = i;
  if (!im->ordered) /* stable sort of the reduced part by stride, largest first */
    for (int i = nkept + 1; i < np; i++) {
      int v = perm[i], j = i;
      for (; j > nkept && in->strides[perm[j - 1]] < in->strides[v]; j--) perm[j] = perm[j - 1];
      perm[j] = v;
    }
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  for (int i = 0; i < np; i++) {
    shape[i] = in->shape[perm[i]];
    strides[i] = in->strides[perm[i]];
  }
  em_status st = EM_OK;
  em_tensor *view = em__tensor_view_of(in, np, shape, strides, in->offset);
  em_tensor *tmp = em_tensor_empty_on(np, shape, (em_dtype)in->dtype, in->device);
  EM_CHECK_PTR_GOTO(view, st, done);
  EM_CHECK_PTR_GOTO(tmp, st, done);
  EM_CHECK_GOTO(em__copy_into(tmp, view), st, done);
  em_op_attrs a2 = *a;
  a2.nd = np - nkept;
  for (int i = 0; i < a2.nd; i++) a2.d[i] = nkept + i;
  st = reduce_run(im, out, tmp, &a2);
done:
  em_tensor_release(view);
  em_tensor_release(tmp);
  return st;
}

/* One registered kernel per (op, dtype). */
#define DEF_KERNEL(NAME, ENUM)                                                                     \
  static em_status k_##NAME##_##ENUM(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) { \
    return reduce_run(&NAME##_##ENUM, out, in, a);                                                 \
  }
#define DEF_KERNELS_ALL(ENUM, T, C, LD, ST, LO, HI)                                          \
  DEF_KERNEL(sum, ENUM)                                                                      \
  DEF_KERNEL(prod, ENUM) DEF_KERNEL(amax, ENUM) DEF_KERNEL(amin, ENUM) DEF_KERNEL(all, ENUM) \
      DEF_KERNEL(any, ENUM) DEF_KERNEL(cnt, ENUM) DEF_KERNEL(argmax, ENUM)                   \
          DEF_KERNEL(argmin, ENUM)
#define DEF_KERNELS_FLOAT(ENUM, T, C, LD, ST, LO, HI) \
  DEF_KERNEL(mean, ENUM)                              \
  DEF_KERNEL(norm, ENUM) DEF_KERNEL(var, ENUM) DEF_KERNEL(std, ENUM) DEF_KERNEL(lse, ENUM)
RED_ALL_TYPES(DEF_KERNELS_ALL)
RED_FLOAT_TYPES(DEF_KERNELS_FLOAT)

/* ---- softmax / log_softmax --------------------------------------------------------------
 * [outer, D, inner] contiguous, in and out of the same float dtype,
 * computed in the compute type: max, sum of exp(x - max), then the
 * output. float32/float64 keep exp(x - max) in out between the passes;
 * float16/bfloat16 recompute it so that it is rounded once. */
typedef struct sm_ctx {
  const char *x;
  char *y;
  int64_t outer, D, inner, nb;
  bool log;
} sm_ctx;

static void sm_geom(const em_tensor *in, int dim, int64_t *outer, int64_t *D, int64_t *inner) {
  *outer = *D = *inner = 1;
  for (int i = 0; i < in->ndim; i++) {
    if (i < dim)
      *outer *= in->shape[i];
    else if (i == dim)
      *D = in->shape[i];
    else
      *inner *= in->shape[i];
  }
}

/* float32 rows shorter than this are done a block of rows at a time:
 * x - max for every row, one vectorised exp over the block, then the
 * per-row sums (the per-row calls would cost more than the arithmetic). */
#define SM_SHORT 64
static void sm_short_f32(const sm_ctx *c, int64_t rb, int64_t re) {
  const int64_t D = c->D;
  float mx[64];
  for (int64_t r0 = rb; r0 < re; r0 += 64) {
    const int64_t nr = re - r0 < 64 ? re - r0 : 64;
    const float *x = (const float *)c->x + r0 * D;
    float *y = (float *)c->y + r0 * D;
    for (int64_t r = 0; r < nr; r++) {
      mx[r] = amax_run_FLOAT32(x + r * D, D);
      for (int64_t i = 0; i < D; i++) y[r * D + i] = x[r * D + i] - mx[r];
    }
    expsum_f32(y, 0.0f, y, nr * D);
    for (int64_t r = 0; r < nr; r++) {
      float *yr = y + r * D;
      double sum = 0;
      for (int64_t i = 0; i < D; i++) sum += yr[i];
      if (c->log) {
        const float ls = (float)log(sum), *xr = x + r * D;
        for (int64_t i = 0; i < D; i++) yr[i] = (xr[i] - mx[r]) - ls;
      } else {
        const float inv = (float)(1 / sum);
        for (int64_t i = 0; i < D; i++) yr[i] *= inv;
      }
    }
  }
}
#define SM_SHORT_FLOAT32 1
#define SM_SHORT_FLOAT64 0
#define SM_SHORT_FLOAT16 0
#define SM_SHORT_BFLOAT16 0

#define SM_DIRECT_FLOAT32 1
#define SM_DIRECT_FLOAT64 1
#define SM_DIRECT_FLOAT16 0
#define SM_DIRECT_BFLOAT16 0

#define DEF_SOFTMAX(ENUM, T, C, LD, ST, LO, HI)                                                   \
  static void sm_rows_##ENUM(void *p, int64_t rb, int64_t re) {                                   \
    const sm_ctx *c = p;                                                                          \
    const int64_t D = c->D;                                                                       \
    if (SM_SHORT_##ENUM && D < SM_SHORT) {                                                        \
      sm_short_f32(c, rb, re);                                                                    \
      return;                                                                                     \
    }                                                                                             \
    for (int64_t r = rb; r < re; r++) {                                                           \
      const T *x = (const T *)c->x + r * D;                                                       \
      T *y = (T *)c->y + r * D;                                                                   \
      const C mx = amax_run_##ENUM(x, D);                                                         \
      if (c->log) {                                                                               \
        const C ls = (C)log(expsum_##ENUM(x, mx, NULL, D));                                       \
        for (int64_t i = 0; i < D; i++) y[i] = ST((LD(x[i]) - mx) - ls);                          \
      } else if (SM_DIRECT_##ENUM) { /* exp kept in y between the passes */                       \
        const C inv = (C)(1 / expsum_##ENUM(x, mx, (C *)(void *)y, D));                           \
        for (int64_t i = 0; i < D; i++) y[i] = ST(LD(y[i]) * inv);                                \
      } else { /* exp recomputed so that the output is rounded once */                            \
        const C inv = (C)(1 / expsum_##ENUM(x, mx, NULL, D));                                     \
        C buf[256];                                                                               \
        for (int64_t b = 0; b < D; b += 256) {                                                    \
          int64_t m = D - b < 256 ? D - b : 256;                                                  \
          expsum_##ENUM(x + b, mx, buf, m);                                                       \
          for (int64_t j = 0; j < m; j++) y[b + j] = ST(buf[j] * inv);                            \
        }                                                                                         \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  /* dim not innermost: vectorised across a block of inner columns */                             \
  static void sm_cols_##ENUM(void *p, int64_t tb, int64_t te) {                                   \
    const sm_ctx *c = p;                                                                          \
    const int64_t D = c->D, I = c->inner;                                                         \
    C mx[SCAN_BLOCK], sm[SCAN_BLOCK];                                                             \
    for (int64_t t = tb; t < te; t++) {                                                           \
      int64_t o = t / c->nb, j0 = (t - o * c->nb) * SCAN_BLOCK;                                   \
      int64_t n = I - j0 < SCAN_BLOCK ? I - j0 : SCAN_BLOCK;                                      \
      const T *x = (const T *)c->x + o * D * I + j0;                                              \
      T *y = (T *)c->y + o * D * I + j0;                                                          \
      for (int64_t j = 0; j < n; j++) mx[j] = LO, sm[j] = 0;                                      \
      for (int64_t d = 0; d < D; d++)                                                             \
        for (int64_t j = 0; j < n; j++) {                                                         \
          C v = LD(x[d * I + j]);                                                                 \
          mx[j] = MAX_NAN(mx[j], v);                                                              \
        }                                                                                         \
      for (int64_t d = 0; d < D; d++)                                                             \
        for (int64_t j = 0; j < n; j++) {                                                         \
          C e = CEXP(LD(x[d * I + j]) - mx[j]);                                                   \
          if (SM_DIRECT_##ENUM && !c->log) y[d * I + j] = ST(e);                                  \
          sm[j] += e;                                                                             \
        }                                                                                         \
      if (c->log) {                                                                               \
        for (int64_t j = 0; j < n; j++) sm[j] = (C)log(sm[j]);                                    \
        for (int64_t d = 0; d < D; d++)                                                           \
          for (int64_t j = 0; j < n; j++) y[d * I + j] = ST((LD(x[d * I + j]) - mx[j]) - sm[j]);  \
      } else {                                                                                    \
        for (int64_t j = 0; j < n; j++) sm[j] = (C)1 / sm[j];                                     \
        for (int64_t d = 0; d < D; d++)                                                           \
          for (int64_t j = 0; j < n; j++)                                                         \
            y[d * I + j] = SM_DIRECT_##ENUM ? ST(LD(y[d * I + j]) * sm[j])                        \
                                            : ST(CEXP(LD(x[d * I + j]) - mx[j]) * sm[j]);         \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  static em_status k_softmax_##ENUM(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) { \
    return softmax_run(out[0], in, a, false, sm_rows_##ENUM, sm_cols_##ENUM);                     \
  }                                                                                               \
  static em_status k_log_softmax_##ENUM(em_tensor *const *out, em_tensor *in,                     \
                                        const em_op_attrs *a) {                                   \
    return softmax_run(out[0], in, a, true, sm_rows_##ENUM, sm_cols_##ENUM);                      \
  }

static em_status softmax_run(em_tensor *out, em_tensor *in, const em_op_attrs *a, bool log,
                             em_range_fn rows, em_range_fn cols) {
  if (in->numel == 0) return EM_OK;
  sm_ctx c = {.x = em__data_ptr(in), .y = em__data_ptr(out), .log = log};
  sm_geom(in, (int)a->i[1], &c.outer, &c.D, &c.inner);
  if (c.inner == 1) {
    int64_t g = EM_GRAIN_COSTLY / c.D;
    em__parallel_for(c.outer, g > 1 ? g : 1, rows, &c);
  } else {
    c.nb = (c.inner + SCAN_BLOCK - 1) / SCAN_BLOCK;
    int64_t per = c.D * (c.inner < SCAN_BLOCK ? c.inner : SCAN_BLOCK);
    int64_t g = EM_GRAIN_COSTLY / per;
    em__parallel_for(c.outer * c.nb, g > 1 ? g : 1, cols, &c);
  }
  return EM_OK;
}
RED_FLOAT_TYPES(DEF_SOFTMAX)

/* ---- cumsum / cumprod ---------------------------------------------------------------------
 * [outer, D, inner] contiguous, in and out of the same dtype. Accumulates
 * like PyTorch's CPU kernels: float32/float64 in double, float16/bfloat16
 * in float, integers in (wrapping) 64 bits. */
typedef struct scan_ctx {
  const char *x;
  char *y;
  int64_t outer, D, inner, nb;
  bool prod;
} scan_ctx;

#define SCAN_ACC_FLOAT32 double
#define SCAN_ACC_FLOAT64 double
#define SCAN_ACC_FLOAT16 float
#define SCAN_ACC_BFLOAT16 float
#define SCAN_ACC_INT8 uint64_t
#define SCAN_ACC_INT16 uint64_t
#define SCAN_ACC_INT32 uint64_t
#define SCAN_ACC_INT64 uint64_t
#define SCAN_ACC_UINT8 uint64_t
/* acc -> stored value (integers: back through int64, wrapping) */
#define SCAN_OUT(T, C, ST, v) ST((C)(int64_t)(v))
#define SCAN_OUT_F(T, C, ST, v) ST((C)(v))
#define SCAN_IN_F(LD, v) LD(v)
#define SCAN_IN_I(LD, v) (uint64_t)(int64_t)(v)

#define DEF_SCAN(ENUM, T, C, LD, ST, LO, HI, OUT, IN)                                             \
  static void scan_rows_##ENUM(void *p, int64_t rb, int64_t re) {                                 \
    const scan_ctx *c = p;                                                                        \
    const int64_t D = c->D;                                                                       \
    for (int64_t r = rb; r < re; r++) {                                                           \
      const T *x = (const T *)c->x + r * D;                                                       \
      T *y = (T *)c->y + r * D;                                                                   \
      SCAN_ACC_##ENUM acc;                                                                        \
      if (c->prod) {                                                                              \
        acc = 1;                                                                                  \
        for (int64_t i = 0; i < D; i++) {                                                         \
          acc *= IN(LD, x[i]);                                                                    \
          y[i] = OUT(T, C, ST, acc);                                                              \
        }                                                                                         \
      } else {                                                                                    \
        acc = 0;                                                                                  \
        for (int64_t i = 0; i < D; i++) {                                                         \
          acc += IN(LD, x[i]);                                                                    \
          y[i] = OUT(T, C, ST, acc);                                                              \
        }                                                                                         \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  static void scan_cols_##ENUM(void *p, int64_t tb, int64_t te) {                                 \
    const scan_ctx *c = p;                                                                        \
    const int64_t D = c->D, I = c->inner;                                                         \
    SCAN_ACC_##ENUM acc[SCAN_BLOCK];                                                              \
    for (int64_t t = tb; t < te; t++) {                                                           \
      int64_t o = t / c->nb, j0 = (t - o * c->nb) * SCAN_BLOCK;                                   \
      int64_t n = I - j0 < SCAN_BLOCK ? I - j0 : SCAN_BLOCK;                                      \
      const T *x = (const T *)c->x + o * D * I + j0;                                              \
      T *y = (T *)c->y + o * D * I + j0;                                                          \
      for (int64_t j = 0; j < n; j++) acc[j] = c->prod ? 1 : 0;                                   \
      for (int64_t d = 0; d < D; d++) {                                                           \
        if (c->prod)                                                                              \
          for (int64_t j = 0; j < n; j++) acc[j] *= IN(LD, x[d * I + j]);                         \
        else                                                                                      \
          for (int64_t j = 0; j < n; j++) acc[j] += IN(LD, x[d * I + j]);                         \
        for (int64_t j = 0; j < n; j++) y[d * I + j] = OUT(T, C, ST, acc[j]);                     \
      }                                                                                           \
    }                                                                                             \
  }                                                                                               \
  static em_status k_cumsum_##ENUM(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) {  \
    return scan_run(out[0], in, a, false, scan_rows_##ENUM, scan_cols_##ENUM);                    \
  }                                                                                               \
  static em_status k_cumprod_##ENUM(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) { \
    return scan_run(out[0], in, a, true, scan_rows_##ENUM, scan_cols_##ENUM);                     \
  }
#define DEF_SCAN_FLOAT(ENUM, T, C, LD, ST, LO, HI) \
  DEF_SCAN(ENUM, T, C, LD, ST, LO, HI, SCAN_OUT_F, SCAN_IN_F)
#define DEF_SCAN_INT(ENUM, T, C, LD, ST, LO, HI) \
  DEF_SCAN(ENUM, T, C, LD, ST, LO, HI, SCAN_OUT, SCAN_IN_I)

static em_status scan_run(em_tensor *out, em_tensor *in, const em_op_attrs *a, bool prod,
                          em_range_fn rows, em_range_fn cols) {
  if (in->numel == 0) return EM_OK;
  scan_ctx c = {.x = em__data_ptr(in), .y = em__data_ptr(out), .prod = prod};
  sm_geom(in, (int)a->i[1], &c.outer, &c.D, &c.inner);
  if (c.inner == 1) {
    int64_t g = EM_GRAIN_CHEAP / c.D;
    em__parallel_for(c.outer, g > 1 ? g : 1, rows, &c);
  } else {
    c.nb = (c.inner + SCAN_BLOCK - 1) / SCAN_BLOCK;
    int64_t g = EM_GRAIN_CHEAP / (c.D * (c.inner < SCAN_BLOCK ? c.inner : SCAN_BLOCK));
    em__parallel_for(c.outer * c.nb, g > 1 ? g : 1, cols, &c);
  }
  return EM_OK;
}
RED_FLOAT_TYPES(DEF_SCAN_FLOAT)
RED_INT_TYPES(DEF_SCAN_INT)

/* ---- registration ------------------------------------------------------------------------ */

void em__cpu_register_reduce(void) {
#define REG(OP, NAME, ENUM) \
  em__register_kernel(EM_OP_##OP, EM_CPU, EM_##ENUM, (void *)k_##NAME##_##ENUM);
#define REG_ALL(ENUM, T, C, LD, ST, LO, HI)                                             \
  REG(SUM, sum, ENUM)                                                                   \
  REG(PROD, prod, ENUM) REG(AMAX, amax, ENUM) REG(AMIN, amin, ENUM) REG(ALL, all, ENUM) \
      REG(ANY, any, ENUM) REG(COUNT_NONZERO, cnt, ENUM) REG(MAX_DIM, argmax, ENUM)      \
          REG(MIN_DIM, argmin, ENUM) REG(ARGMAX, argmax, ENUM) REG(ARGMIN, argmin, ENUM)
#define REG_FLOAT(ENUM, T, C, LD, ST, LO, HI)                                                   \
  REG(MEAN, mean, ENUM)                                                                         \
  REG(NORM, norm, ENUM) REG(VAR, var, ENUM) REG(STD, std, ENUM) REG(LOGSUMEXP, lse, ENUM)       \
      REG(SOFTMAX, softmax, ENUM) REG(LOG_SOFTMAX, log_softmax, ENUM) REG(CUMSUM, cumsum, ENUM) \
          REG(CUMPROD, cumprod, ENUM)
#define REG_INT(ENUM, T, C, LD, ST, LO, HI) REG(CUMSUM, cumsum, ENUM) REG(CUMPROD, cumprod, ENUM)
  RED_ALL_TYPES(REG_ALL)
  RED_FLOAT_TYPES(REG_FLOAT)
  RED_INT_TYPES(REG_INT)
#undef REG
#undef REG_ALL
#undef REG_FLOAT
#undef REG_INT
}
