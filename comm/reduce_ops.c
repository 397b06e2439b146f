/* Reduction kernels for collectives: dst[i] = a[i] op b[i] for every
 * (dtype, reduce op) pair, generated from one loop body per op class over
 * the dtype X-lists of core/cpu/kernel_impl.h. The loops are contiguous
 * and branch-free so -O3 vectorises them; the (dtype, op) choice is made
 * once per call through a table.
 *
 * Semantics (PyTorch's): integer sum/prod wrap; float min/max propagate
 * NaN symmetrically (max(x, NaN) == max(NaN, x) == NaN), so every rank of
 * a recursive-doubling exchange computes the same bits whichever side it
 * holds; bool sum/max are logical or, prod/min logical and; bitwise ops
 * exist for integers and bool only. float16/bfloat16 compute in float and
 * round to nearest even on every store (as a kernel writing back would). */
#include "comm/pg_impl.h"
#include "core/cpu/kernel_impl.h"

/* float -> half, round to nearest even, inline (em__f2h calls out of line,
 * which keeps the loop from vectorising). F. Giesen's branch-light form;
 * NaN becomes the canonical quiet NaN. */
static inline uint16_t f2h_fast(float f) {
  const uint32_t f32infty = 255u << 23, f16max = (127u + 16u) << 23;
  const uint32_t denorm_magic_u = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t o;
  if (x >= f16max) {
    o = x > f32infty ? 0x7e00 : 0x7c00;
  } else if (x < (113u << 23)) {
    float fx, dm;
    memcpy(&fx, &x, 4);
    memcpy(&dm, &denorm_magic_u, 4);
    fx += dm;
    memcpy(&x, &fx, 4);
    o = (uint16_t)(x - denorm_magic_u);
  } else {
    const uint32_t mant_odd = (x >> 13) & 1u;
    x += ((uint32_t)(15 - 127) << 23) + 0xfffu;
    x += mant_odd;
    o = (uint16_t)(x >> 13);
  }
  return (uint16_t)(o | (sign >> 16));
}

/* The reduction table's element: dst[i] = a[i] op b[i], i < n. */
typedef void (*red_fn)(void *dst, const void *a, const void *b, int64_t n);

/* One loop body for every op; OPX(x, y) combines compute-type values. */
#define RED_LOOP(T, C, LD, ST, OPX)                                  \
  {                                                                  \
    T *o_ = (T *)dst;                                                \
    const T *a_ = (const T *)a, *b_ = (const T *)b;                  \
    for (int64_t k_ = 0; k_ < n; k_++) {                             \
      C x = LD(a_[k_]), y = LD(b_[k_]);                              \
      o_[k_] = ST(OPX(x, y));                                        \
    }                                                                \
  }

#define FSUM(x, y) ((x) + (y))
#define FPROD(x, y) ((x) * (y))
/* unsigned product widened to at least unsigned int: uint16 * uint16 would
 * otherwise promote to int and overflow. */
#define UPROD(x, y) ((x) * 1u * (y))
#define FMIN(x, y) (((x) != (x) || (x) < (y)) ? (x) : (y))
#define FMAX(x, y) (((x) != (x) || (x) > (y)) ? (x) : (y))
#define IMIN(x, y) ((x) < (y) ? (x) : (y))
#define IMAX(x, y) ((x) > (y) ? (x) : (y))
#define BAND(x, y) ((x) & (y))
#define BOR(x, y) ((x) | (y))
#define BXOR(x, y) ((x) ^ (y))
#define LAND(x, y) ((x) && (y))
#define LOR(x, y) ((x) || (y))
#define LXOR(x, y) ((x) != (y))

/* The float16 store inside the loop uses the inline rounding. */
#define F2H_ST(v) f2h_fast(v)
#define ST_FLOAT32 EM_ID
#define ST_FLOAT64 EM_ID
#define ST_FLOAT16 F2H_ST
#define ST_BFLOAT16 em__f2b

#define DEF_FLOAT(ENUM, T, C, LD, ST)                                                     \
  static void red_##ENUM##_sum(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST_##ENUM, FSUM)                                                 \
  static void red_##ENUM##_prod(void *dst, const void *a, const void *b, int64_t n)       \
      RED_LOOP(T, C, LD, ST_##ENUM, FPROD)                                                \
  static void red_##ENUM##_min(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST_##ENUM, FMIN)                                                 \
  static void red_##ENUM##_max(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST_##ENUM, FMAX)
EM_FLOAT_TYPES(DEF_FLOAT)

/* Integer sum/prod wrap: the loop's compute type is the unsigned twin. */
#define DEF_INT(ENUM, T, C, LD, ST)                                                       \
  static void red_##ENUM##_sum(void *dst, const void *a, const void *b, int64_t n) {      \
    typedef EM_UNSIGNED_OF(T) U;                                                          \
    RED_LOOP(T, U, (U), (T), FSUM)                                                        \
  }                                                                                       \
  static void red_##ENUM##_prod(void *dst, const void *a, const void *b, int64_t n) {     \
    typedef EM_UNSIGNED_OF(T) U;                                                          \
    RED_LOOP(T, U, (U), (T), UPROD)                                                       \
  }                                                                                       \
  static void red_##ENUM##_min(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST, IMIN)                                                        \
  static void red_##ENUM##_max(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST, IMAX)                                                        \
  static void red_##ENUM##_band(void *dst, const void *a, const void *b, int64_t n)       \
      RED_LOOP(T, C, LD, ST, BAND)                                                        \
  static void red_##ENUM##_bor(void *dst, const void *a, const void *b, int64_t n)        \
      RED_LOOP(T, C, LD, ST, BOR)                                                         \
  static void red_##ENUM##_bxor(void *dst, const void *a, const void *b, int64_t n)       \
      RED_LOOP(T, C, LD, ST, BXOR)
EM_INT_TYPES(DEF_INT)

/* bool is stored as one byte 0/1; the logical ops keep it so. */
static void red_BOOL_or(void *dst, const void *a, const void *b, int64_t n)
    RED_LOOP(uint8_t, uint8_t, EM_ID, EM_ID, BOR)
static void red_BOOL_and(void *dst, const void *a, const void *b, int64_t n)
    RED_LOOP(uint8_t, uint8_t, EM_ID, EM_ID, BAND)
static void red_BOOL_xor(void *dst, const void *a, const void *b, int64_t n)
    RED_LOOP(uint8_t, uint8_t, EM_ID, EM_ID, BXOR)

static red_fn table[EM_DTYPE_COUNT][EM_REDUCE_OP_COUNT] = {
#define ROW_FLOAT(ENUM, T, C, LD, ST)                                                   \
  [EM_##ENUM] = {[EM_REDUCE_SUM] = red_##ENUM##_sum,   [EM_REDUCE_AVG] = red_##ENUM##_sum, \
                 [EM_REDUCE_PROD] = red_##ENUM##_prod, [EM_REDUCE_MIN] = red_##ENUM##_min, \
                 [EM_REDUCE_MAX] = red_##ENUM##_max},
    EM_FLOAT_TYPES(ROW_FLOAT)
#define ROW_INT(ENUM, T, C, LD, ST)                                                      \
  [EM_##ENUM] = {[EM_REDUCE_SUM] = red_##ENUM##_sum,   [EM_REDUCE_AVG] = red_##ENUM##_sum, \
                 [EM_REDUCE_PROD] = red_##ENUM##_prod, [EM_REDUCE_MIN] = red_##ENUM##_min, \
                 [EM_REDUCE_MAX] = red_##ENUM##_max,   [EM_REDUCE_BAND] = red_##ENUM##_band, \
                 [EM_REDUCE_BOR] = red_##ENUM##_bor,   [EM_REDUCE_BXOR] = red_##ENUM##_bxor},
    EM_INT_TYPES(ROW_INT)
    [EM_BOOL] = {[EM_REDUCE_SUM] = red_BOOL_or,  [EM_REDUCE_PROD] = red_BOOL_and,
                 [EM_REDUCE_MIN] = red_BOOL_and, [EM_REDUCE_MAX] = red_BOOL_or,
                 [EM_REDUCE_BAND] = red_BOOL_and, [EM_REDUCE_BOR] = red_BOOL_or,
                 [EM_REDUCE_BXOR] = red_BOOL_xor},
};
_Static_assert(EM_DTYPE_COUNT == 10, "reduce table covers every dtype");
_Static_assert(EM_REDUCE_OP_COUNT == 8, "reduce table covers every op");

em_status em__reduce_op_check(const char *what, em_reduce_op op, em_dtype dt) {
  if ((int)op < 0 || op >= EM_REDUCE_OP_COUNT)
    return em__set_error(EM_ERR_INVALID, "%s: invalid reduce op %d", what, (int)op);
  if (!em_dtype_is_valid(dt))
    return em__set_error(EM_ERR_DTYPE, "%s: invalid dtype %d", what, (int)dt);
  if (!table[dt][op]) {
    if (em_dtype_is_float(dt))
      return em__set_error(EM_ERR_DTYPE, "%s: cannot use reduce op %s with non-integral dtype %s",
                           what, em_reduce_op_name(op), em_dtype_name(dt));
    return em__set_error(EM_ERR_DTYPE, "%s: cannot use reduce op %s with dtype %s", what,
                         em_reduce_op_name(op), em_dtype_name(dt));
  }
  return EM_OK;
}

em_status em__reduce_out(void *dst, const void *a, const void *b, int64_t n, em_dtype dt,
                         em_reduce_op op) {
  EM_CHECK(em__reduce_op_check("reduce", op, dt));
  if (n > 0) table[dt][op](dst, a, b, n);
  return EM_OK;
}

em_status em__reduce_into(void *dst, const void *src, int64_t n, em_dtype dt, em_reduce_op op) {
  return em__reduce_out(dst, dst, src, n, dt, op);
}

#define DEF_AVG_FLOAT(ENUM, T, C, LD, ST)                          \
  static void avg_##ENUM(void *buf, int64_t n, int world) {        \
    T *p_ = (T *)buf;                                              \
    const C w_ = (C)world;                                         \
    for (int64_t k_ = 0; k_ < n; k_++) p_[k_] = ST_##ENUM(LD(p_[k_]) / w_); \
  }
EM_FLOAT_TYPES(DEF_AVG_FLOAT)
#define DEF_AVG_INT(ENUM, T, C, LD, ST)                            \
  static void avg_##ENUM(void *buf, int64_t n, int world) {        \
    T *p_ = (T *)buf;                                              \
    const int64_t w_ = world;                                      \
    for (int64_t k_ = 0; k_ < n; k_++) p_[k_] = (T)((int64_t)p_[k_] / w_); \
  }
EM_INT_TYPES(DEF_AVG_INT)

void em__reduce_avg_finish(void *buf, int64_t n, em_dtype dt, int world) {
  if (n <= 0 || world <= 1) return;
  switch (dt) {
#define CASE_AVG(ENUM, T, C, LD, ST) \
  case EM_##ENUM: avg_##ENUM(buf, n, world); break;
    EM_FLOAT_TYPES(CASE_AVG)
    EM_INT_TYPES(CASE_AVG)
    default: break; /* bool: refused by em__reduce_op_check */
  }
}
