/* CPU kernel building blocks: per-dtype type lists, load/store to the
 * compute type, and loop bodies that every elementwise family instantiates
 * once per dtype (one body, many dtypes — no copy-paste per type).
 *
 * A kernel is an em_loop_fn: (data, strides, n, attrs); operand 0 is the
 * output. Each loop body has a contiguous path the compiler vectorises
 * (all strides equal to the element size), a path for a broadcast scalar
 * second operand, and a general strided path.
 */
#ifndef EMBER_CORE_CPU_KERNEL_IMPL_H
#define EMBER_CORE_CPU_KERNEL_IMPL_H

#include <math.h>

#include "core/core_impl.h"

/* ---- half / bfloat16 conversions, inline for kernels ------------------------ */

static inline float em__h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {
      float v = (float)man * 5.9604644775390625e-8f;
      return sign ? -v : v;
    }
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t em__f2h(float f) { return em_float_to_half(f); }
static inline float em__b2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t em__f2b(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* Float -> integer conversion defined for every input: saturating, NaN -> 0
 * (C leaves out-of-range conversion undefined). */
#define EM__SAT(T, MIN, MAX, v) \
  ((v) != (v) ? (T)0 : (v) >= (double)(MAX) ? (T)(MAX) : (v) <= (double)(MIN) ? (T)(MIN) : (T)(v))
static inline int8_t em__f2i8(double v) { return EM__SAT(int8_t, INT8_MIN, INT8_MAX, v); }
static inline int16_t em__f2i16(double v) { return EM__SAT(int16_t, INT16_MIN, INT16_MAX, v); }
static inline int32_t em__f2i32(double v) { return EM__SAT(int32_t, INT32_MIN, INT32_MAX, v); }
static inline int64_t em__f2i64(double v) {
  return v != v ? 0 : v >= 9.2233720368547758e18 ? INT64_MAX
                    : v <= -9.2233720368547758e18 ? INT64_MIN : (int64_t)v;
}
static inline uint8_t em__f2u8(double v) { return EM__SAT(uint8_t, 0, UINT8_MAX, v); }

#define EM_ID(x) (x)

/* ---- dtype lists ---------------------------------------------------------------
 * X(ENUM, T, C, LOAD, STORE): storage type T, compute type C, LOAD: T -> C,
 * STORE: C -> T. Integer compute types are the storage types themselves;
 * kernels that can overflow use the EM_WRAP_* helpers below. */
#define EM_FLOAT_TYPES(X)                              \
  X(FLOAT32, float, float, EM_ID, EM_ID)               \
  X(FLOAT64, double, double, EM_ID, EM_ID)             \
  X(FLOAT16, uint16_t, float, em__h2f, em__f2h)        \
  X(BFLOAT16, uint16_t, float, em__b2f, em__f2b)

#define EM_INT_TYPES(X)                                \
  X(INT8, int8_t, int8_t, EM_ID, EM_ID)                \
  X(INT16, int16_t, int16_t, EM_ID, EM_ID)             \
  X(INT32, int32_t, int32_t, EM_ID, EM_ID)             \
  X(INT64, int64_t, int64_t, EM_ID, EM_ID)             \
  X(UINT8, uint8_t, uint8_t, EM_ID, EM_ID)

#define EM_BOOL_TYPE(X) X(BOOL, bool, bool, EM_ID, EM_ID)

#define EM_NUMERIC_TYPES(X) EM_FLOAT_TYPES(X) EM_INT_TYPES(X)
#define EM_ALL_TYPES(X) EM_FLOAT_TYPES(X) EM_INT_TYPES(X) EM_BOOL_TYPE(X)

/* The same lists with extra arguments passed through to X(ENUM, T, C, LD,
 * ST, ...), for kernel definitions that take an op name, statements and
 * an expression (core/cpu/unary.c, binary.c, ternary.c). */
#define EM_L_FLOAT(X, ...)                                   \
  X(FLOAT32, float, float, EM_ID, EM_ID, __VA_ARGS__)        \
  X(FLOAT64, double, double, EM_ID, EM_ID, __VA_ARGS__)      \
  X(FLOAT16, uint16_t, float, em__h2f, em__f2h, __VA_ARGS__) \
  X(BFLOAT16, uint16_t, float, em__b2f, em__f2b, __VA_ARGS__)
#define EM_L_SINT(X, ...)                               \
  X(INT8, int8_t, int8_t, EM_ID, EM_ID, __VA_ARGS__)    \
  X(INT16, int16_t, int16_t, EM_ID, EM_ID, __VA_ARGS__) \
  X(INT32, int32_t, int32_t, EM_ID, EM_ID, __VA_ARGS__) \
  X(INT64, int64_t, int64_t, EM_ID, EM_ID, __VA_ARGS__)
#define EM_L_UINT(X, ...) X(UINT8, uint8_t, uint8_t, EM_ID, EM_ID, __VA_ARGS__)
#define EM_L_BOOL(X, ...) X(BOOL, bool, bool, EM_ID, EM_ID, __VA_ARGS__)
#define EM_L_INT(X, ...) EM_L_SINT(X, __VA_ARGS__) EM_L_UINT(X, __VA_ARGS__)
#define EM_L_NUM(X, ...) EM_L_FLOAT(X, __VA_ARGS__) EM_L_INT(X, __VA_ARGS__)
#define EM_L_ALL(X, ...) EM_L_NUM(X, __VA_ARGS__) EM_L_BOOL(X, __VA_ARGS__)

/* Wrapping integer arithmetic (PyTorch wraps; signed overflow in C is
 * undefined): compute in the unsigned type of the same width. */
#define EM_UNSIGNED_OF(T)                                                             \
  __typeof__(_Generic((T)0, int8_t: (uint8_t)0, int16_t: (uint16_t)0,                 \
                      int32_t: (uint32_t)0, int64_t: (uint64_t)0, uint8_t: (uint8_t)0, \
                      default: (T)0))
#define EM_WRAP_ADD(T, x, y) ((T)((EM_UNSIGNED_OF(T))(x) + (EM_UNSIGNED_OF(T))(y)))
#define EM_WRAP_SUB(T, x, y) ((T)((EM_UNSIGNED_OF(T))(x) - (EM_UNSIGNED_OF(T))(y)))
/* 1u * first: narrow unsigned types would otherwise promote to int and the
 * product could overflow it. */
#define EM_WRAP_MUL(T, x, y) ((T)((1u * (EM_UNSIGNED_OF(T))(x)) * (EM_UNSIGNED_OF(T))(y)))

/* ipow_<ENUM>(b, e): integer power, wrapping; negative exponents as
 * PyTorch: 1 -> 1, -1 -> +-1, else 0. Instantiate with EM_L_INT(EM_DEF_IPOW, _). */
#define EM_DEF_IPOW(ENUM, T, ...)                        \
  static inline T ipow_##ENUM(T b, int64_t e) {         \
    if (e < 0) {                                         \
      if (b == 1) return 1;                              \
      if (b == (T)-1) return (e & 1) ? (T)-1 : (T)1;     \
      return 0;                                          \
    }                                                    \
    T r = 1;                                             \
    while (e) {                                          \
      if (e & 1) r = EM_WRAP_MUL(T, r, b);               \
      e >>= 1;                                           \
      if (e) b = EM_WRAP_MUL(T, b, b);                   \
    }                                                    \
    return r;                                            \
  }

/* ---- loop bodies ------------------------------------------------------------------
 * Inside EXPR the compute-type values are named x (and y, z); attrs is `a`.
 * TO/TI: output / input storage types; LD: TI -> C; ST: C -> TO. */

#define EM_UNARY_LOOP(TO, TI, C, LD, ST, EXPR)                                   \
  do {                                                                            \
    const int64_t so_ = s_[0], si_ = s_[1];                                       \
    if (so_ == (int64_t)sizeof(TO) && si_ == (int64_t)sizeof(TI)) {               \
      TO *o_ = (TO *)d_[0];                                                       \
      const TI *i_ = (const TI *)d_[1];                                           \
      for (int64_t k_ = 0; k_ < n_; k_++) {                                       \
        C x = LD(i_[k_]);                                                         \
        o_[k_] = ST(EXPR);                                                        \
      }                                                                           \
    } else {                                                                      \
      char *o_ = d_[0];                                                           \
      const char *i_ = d_[1];                                                     \
      for (int64_t k_ = 0; k_ < n_; k_++, o_ += so_, i_ += si_) {                 \
        C x = LD(*(const TI *)i_);                                                \
        *(TO *)o_ = ST(EXPR);                                                     \
      }                                                                           \
    }                                                                             \
  } while (0)

#define EM_BINARY_LOOP(TO, TI, C, LD, ST, EXPR)                                  \
  do {                                                                            \
    const int64_t so_ = s_[0], sa_ = s_[1], sb_ = s_[2];                          \
    const int64_t eo_ = (int64_t)sizeof(TO), ei_ = (int64_t)sizeof(TI);           \
    if (so_ == eo_ && sa_ == ei_ && sb_ == ei_) {                                 \
      TO *o_ = (TO *)d_[0];                                                       \
      const TI *a_ = (const TI *)d_[1], *b_ = (const TI *)d_[2];                  \
      for (int64_t k_ = 0; k_ < n_; k_++) {                                       \
        C x = LD(a_[k_]), y = LD(b_[k_]);                                         \
        o_[k_] = ST(EXPR);                                                        \
      }                                                                           \
    } else if (so_ == eo_ && sa_ == ei_ && sb_ == 0) {                            \
      TO *o_ = (TO *)d_[0];                                                       \
      const TI *a_ = (const TI *)d_[1];                                           \
      const C y = LD(*(const TI *)d_[2]);                                         \
      for (int64_t k_ = 0; k_ < n_; k_++) {                                       \
        C x = LD(a_[k_]);                                                         \
        o_[k_] = ST(EXPR);                                                        \
      }                                                                           \
    } else if (so_ == eo_ && sa_ == 0 && sb_ == ei_) {                            \
      TO *o_ = (TO *)d_[0];                                                       \
      const TI *b_ = (const TI *)d_[2];                                           \
      const C x = LD(*(const TI *)d_[1]);                                         \
      for (int64_t k_ = 0; k_ < n_; k_++) {                                       \
        C y = LD(b_[k_]);                                                         \
        o_[k_] = ST(EXPR);                                                        \
      }                                                                           \
    } else {                                                                      \
      char *o_ = d_[0];                                                           \
      const char *a_ = d_[1], *b_ = d_[2];                                        \
      for (int64_t k_ = 0; k_ < n_; k_++, o_ += so_, a_ += sa_, b_ += sb_) {      \
        C x = LD(*(const TI *)a_), y = LD(*(const TI *)b_);                       \
        *(TO *)o_ = ST(EXPR);                                                     \
      }                                                                           \
    }                                                                             \
  } while (0)

/* Three inputs of the same type (lerp, addcmul, ...). */
#define EM_TERNARY_LOOP(TO, TI, C, LD, ST, EXPR)                                 \
  do {                                                                            \
    const int64_t so_ = s_[0], sa_ = s_[1], sb_ = s_[2], sc_ = s_[3];             \
    const int64_t eo_ = (int64_t)sizeof(TO), ei_ = (int64_t)sizeof(TI);           \
    if (so_ == eo_ && sa_ == ei_ && sb_ == ei_ && sc_ == ei_) {                   \
      TO *o_ = (TO *)d_[0];                                                       \
      const TI *a_ = (const TI *)d_[1], *b_ = (const TI *)d_[2],                  \
               *c_ = (const TI *)d_[3];                                           \
      for (int64_t k_ = 0; k_ < n_; k_++) {                                       \
        C x = LD(a_[k_]), y = LD(b_[k_]), z = LD(c_[k_]);                         \
        o_[k_] = ST(EXPR);                                                        \
      }                                                                           \
    } else {                                                                      \
      char *o_ = d_[0];                                                           \
      const char *a_ = d_[1], *b_ = d_[2], *c_ = d_[3];                           \
      for (int64_t k_ = 0; k_ < n_; k_++, o_ += so_, a_ += sa_, b_ += sb_,        \
                   c_ += sc_) {                                                   \
        C x = LD(*(const TI *)a_), y = LD(*(const TI *)b_), z = LD(*(const TI *)c_); \
        *(TO *)o_ = ST(EXPR);                                                     \
      }                                                                           \
    }                                                                             \
  } while (0)

/* Kernel function signature with the names the loop bodies use. */
#define EM_KERNEL_SIG(fname) \
  static void fname(char **d_, const int64_t *s_, int64_t n_, const em_op_attrs *a)

/* Register fname_<ENUM> for each dtype of a list:
 *   EM_FLOAT_TYPES(EM__REG_X) with #define EM__REG_OP EM_OP_EXP, EM__REG_FN exp */
#define EM_REGISTER_CPU(op, fn, DT) em__register_kernel(op, EM_CPU, EM_##DT, (void *)fn)

#endif
