/* CPU kernels: random family (uniform, normal, bernoulli, randint) and the
 * counting creation ops (arange, linspace).
 *
 * These ops have no input layout to iterate: each kernel fills the
 * contiguous output elements [begin, end) of a flat buffer, element k
 * depending only on k and the attrs, so any split of [0, numel) across
 * threads gives the same result. The front ends (core/random.c,
 * core/ops_create.c) write into a contiguous temporary when the target is
 * not contiguous.
 *
 * Kernel signature (em__range_kernel, declared in core/random.c):
 *     void k(char *out, const char *in, int64_t begin, int64_t end,
 *            const em_op_attrs *a)
 * out: element 0 of the contiguous output (dtype = the registered dtype);
 * in: for BERNOULLI_P the contiguous float64 probabilities, else NULL.
 *
 * Random kernels: a->i[0] = seed, a->i[1] = first counter (offset) as
 * uint64 bit patterns. Element k draws the Philox4x32-10 block with
 * counter (offset + k, 0) and key seed: words w0..w3.
 *   UNIFORM     f[0] = from, f[1] = to: from + u * (to - from), u in [0, 1)
 *               with the dtype's significand bits (53 from w0:w1 for
 *               float64, 24 from w0 for float32, 11 for float16, 8 for
 *               bfloat16, so u never rounds up to 1).
 *   NORMAL      f[0] = mean, f[1] = std: z * std + mean, z from Box-Muller
 *               (cosine branch) sqrt(-2 log u1) cos(2 pi u2): for float64
 *               in double with u1 = 1 - (53 bits of w0:w1), u2 = 53 bits
 *               of w2:w3; for the other float dtypes in float with
 *               u1 = (w0 + 1) / 2^32, u2 = (w1 >> 8) / 2^24.
 *   BERNOULLI   f[0] = p: 1 if u < p (53-bit u from w0:w1) else 0.
 *   BERNOULLI_P in[k] = p_k (float64): the same per element.
 *   RANDINT     i[2] = low, i[3] = high - low as uint64 (> 0):
 *               low + ((w0:w1 as uint64) mod range).
 * Counting kernels:
 *   ARANGE      float dtypes: start f[0] + step f[1] * k in the
 *               accumulate type (double; float for float16/bfloat16);
 *               integer dtypes: i[0] + i[1] * k in wrapping int64, then
 *               converted (wrapping) to the dtype, as PyTorch does.
 *   LINSPACE    f[0] = start, f[1] = end, i[0] = steps (>= 2): PyTorch's
 *               symmetric formula start + step * k for k < steps / 2, else
 *               end - step * (steps - 1 - k), with step = (end - start) /
 *               (steps - 1), in the dtype's own float type (double for
 *               integer dtypes, then truncated).
 */
#include "core/cpu/kernel_impl.h"

/* ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11; constants from Random123) -------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                 uint32_t k0, uint32_t k1, uint32_t out[4]) {
#pragma GCC unroll 10
  for (int r = 0; r < 10; r++) {
    if (r) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* The raw block, for the generator's known-answer tests. */
void em__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  philox4x32_10(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out);
}

/* The block for element k of a call: counter (offset + k) in the low 64
 * bits, key = seed. */
static inline void block_at(const em_op_attrs *a, int64_t k, uint32_t w[4]) {
  uint64_t seed = (uint64_t)a->i[0], ctr = (uint64_t)a->i[1] + (uint64_t)k;
  philox4x32_10((uint32_t)ctr, (uint32_t)(ctr >> 32), 0, 0, (uint32_t)seed,
                (uint32_t)(seed >> 32), w);
}

static inline uint64_t u64_of(uint32_t hi, uint32_t lo) { return (uint64_t)hi << 32 | lo; }
/* [0, 1) with 53 significant bits. */
static inline double unit53(uint32_t hi, uint32_t lo) {
  return (double)(u64_of(hi, lo) >> 11) * 0x1.0p-53;
}

/* Uniform [0, 1) per dtype, from the block's words, in the compute type. */
#define U_FLOAT32(w) ((float)((w)[0] >> 8) * 0x1.0p-24f)
#define U_FLOAT64(w) unit53((w)[0], (w)[1])
#define U_FLOAT16(w) ((float)((w)[0] >> 21) * 0x1.0p-11f)
#define U_BFLOAT16(w) ((float)((w)[0] >> 24) * 0x1.0p-8f)

static const double two_pi = 6.283185307179586476925286766559;

/* Standard normal via Box-Muller; u1 in (0, 1] keeps log finite. */
static inline double normal_f64(const uint32_t w[4]) {
  double u1 = 1.0 - unit53(w[0], w[1]), u2 = unit53(w[2], w[3]);
  return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}
/* For float32/float16/bfloat16 in float arithmetic (twice as fast; the
 * result is rounded to float anyway). u1 = (w0 + 1) / 2^32 in (0, 1]
 * reaches 6.66 sigma in the tails. */
static inline float normal_f32(const uint32_t w[4]) {
  float u1 = ((float)w[0] + 1.0f) * 0x1.0p-32f, u2 = (float)(w[1] >> 8) * 0x1.0p-24f;
  return sqrtf(-2.0f * logf(u1)) * cosf((float)two_pi * u2);
}
#define N_FLOAT32 normal_f32
#define N_FLOAT64 normal_f64
#define N_FLOAT16 normal_f32
#define N_BFLOAT16 normal_f32

/* ---- random kernels ------------------------------------------------------------ */

#define UNIFORM_K(E, T, C, LD, ST)                                                     \
  static void uniform_##E(char *out, const char *in, int64_t b, int64_t e,            \
                          const em_op_attrs *a) {                                     \
    T *o = (T *)out;                                                                  \
    const C from = (C)a->f[0], range = (C)(a->f[1] - a->f[0]);                        \
    for (int64_t k = b; k < e; k++) {                                                 \
      uint32_t w[4];                                                                  \
      block_at(a, k, w);                                                              \
      o[k] = ST((C)(U_##E(w) * range + from));                                        \
    }                                                                                 \
  }
EM_FLOAT_TYPES(UNIFORM_K)

#define NORMAL_K(E, T, C, LD, ST)                                                      \
  static void normal_##E(char *out, const char *in, int64_t b, int64_t e,             \
                         const em_op_attrs *a) {                                      \
    T *o = (T *)out;                                                                  \
    const double mean = a->f[0], std = a->f[1];                                       \
    for (int64_t k = b; k < e; k++) {                                                 \
      uint32_t w[4];                                                                  \
      block_at(a, k, w);                                                              \
      o[k] = ST((C)(N_##E(w) * std + mean));                                          \
    }                                                                                 \
  }
EM_FLOAT_TYPES(NORMAL_K)

#define BERNOULLI_K(E, T, C, LD, ST)                                                   \
  static void bernoulli_##E(char *out, const char *in, int64_t b, int64_t e,          \
                            const em_op_attrs *a) {                                   \
    T *o = (T *)out;                                                                  \
    const double p = a->f[0];                                                         \
    for (int64_t k = b; k < e; k++) {                                                 \
      uint32_t w[4];                                                                  \
      block_at(a, k, w);                                                              \
      o[k] = ST((C)(unit53(w[0], w[1]) < p));                                         \
    }                                                                                 \
  }                                                                                   \
  static void bernoulli_p_##E(char *out, const char *in, int64_t b, int64_t e,        \
                              const em_op_attrs *a) {                                 \
    T *o = (T *)out;                                                                  \
    const double *p = (const double *)in;                                             \
    for (int64_t k = b; k < e; k++) {                                                 \
      uint32_t w[4];                                                                  \
      block_at(a, k, w);                                                              \
      o[k] = ST((C)(unit53(w[0], w[1]) < p[k]));                                      \
    }                                                                                 \
  }
EM_ALL_TYPES(BERNOULLI_K)

/* Integers: the sum wraps in uint64 (low + r < high always holds, so the
 * true value is in range; only the C types need the detour). Float dtypes
 * get the int64 value converted. */
#define RANDINT_K(E, T, C, LD, ST)                                                     \
  static void randint_##E(char *out, const char *in, int64_t b, int64_t e,            \
                          const em_op_attrs *a) {                                     \
    T *o = (T *)out;                                                                  \
    const uint64_t low = (uint64_t)a->i[2], range = (uint64_t)a->i[3];                \
    for (int64_t k = b; k < e; k++) {                                                 \
      uint32_t w[4];                                                                  \
      block_at(a, k, w);                                                              \
      int64_t v = (int64_t)(low + u64_of(w[0], w[1]) % range);                        \
      o[k] = ST((C)v);                                                                \
    }                                                                                 \
  }
EM_ALL_TYPES(RANDINT_K)

/* ---- counting kernels -------------------------------------------------------------- */

/* X(ENUM, T, ACC, ST): arange's accumulate type per float dtype. */
#define ARANGE_FLOAT_TYPES(X)             \
  X(FLOAT32, float, double, (float))      \
  X(FLOAT64, double, double, EM_ID)       \
  X(FLOAT16, uint16_t, float, em__f2h)    \
  X(BFLOAT16, uint16_t, float, em__f2b)

#define ARANGE_FK(E, T, ACC, ST)                                                       \
  static void arange_##E(char *out, const char *in, int64_t b, int64_t e,             \
                         const em_op_attrs *a) {                                      \
    T *o = (T *)out;                                                                  \
    const ACC start = (ACC)a->f[0], step = (ACC)a->f[1];                              \
    for (int64_t k = b; k < e; k++) o[k] = ST(start + step * (ACC)k);                 \
  }
ARANGE_FLOAT_TYPES(ARANGE_FK)

#define ARANGE_IK(E, T, C, LD, ST)                                                     \
  static void arange_##E(char *out, const char *in, int64_t b, int64_t e,             \
                         const em_op_attrs *a) {                                      \
    T *o = (T *)out;                                                                  \
    const uint64_t start = (uint64_t)a->i[0], step = (uint64_t)a->i[1];               \
    for (int64_t k = b; k < e; k++) o[k] = (T)(start + step * (uint64_t)k);           \
  }
EM_INT_TYPES(ARANGE_IK)

/* X(ENUM, T, STEP, ST): linspace's arithmetic type per dtype (PyTorch's
 * step_t: the dtype itself for floats, double for integers). */
#define LINSPACE_TYPES(X)                 \
  X(FLOAT32, float, float, EM_ID)         \
  X(FLOAT64, double, double, EM_ID)       \
  X(FLOAT16, uint16_t, float, em__f2h)    \
  X(BFLOAT16, uint16_t, float, em__f2b)   \
  X(INT8, int8_t, double, em__f2i8)       \
  X(INT16, int16_t, double, em__f2i16)    \
  X(INT32, int32_t, double, em__f2i32)    \
  X(INT64, int64_t, double, em__f2i64)    \
  X(UINT8, uint8_t, double, em__f2u8)

#define LINSPACE_K(E, T, S, ST)                                                        \
  static void linspace_##E(char *out, const char *in, int64_t b, int64_t e,           \
                           const em_op_attrs *a) {                                    \
    T *o = (T *)out;                                                                  \
    const S start = (S)a->f[0], end = (S)a->f[1];                                     \
    const int64_t steps = a->i[0], half = steps / 2;                                  \
    const S step = (end - start) / (S)(steps - 1);                                    \
    for (int64_t k = b; k < e; k++)                                                   \
      o[k] = ST(k < half ? start + step * (S)k : end - step * (S)(steps - 1 - k));    \
  }
LINSPACE_TYPES(LINSPACE_K)

/* ---- registration -------------------------------------------------------------------- */

void em__cpu_register_random(void) {
#define REG_FLOAT(E, T, C, LD, ST)                    \
  EM_REGISTER_CPU(EM_OP_UNIFORM, uniform_##E, E);     \
  EM_REGISTER_CPU(EM_OP_NORMAL, normal_##E, E);
  EM_FLOAT_TYPES(REG_FLOAT)
#undef REG_FLOAT
#define REG_ALL(E, T, C, LD, ST)                         \
  EM_REGISTER_CPU(EM_OP_BERNOULLI, bernoulli_##E, E);    \
  EM_REGISTER_CPU(EM_OP_BERNOULLI_P, bernoulli_p_##E, E); \
  EM_REGISTER_CPU(EM_OP_RANDINT, randint_##E, E);
  EM_ALL_TYPES(REG_ALL)
#undef REG_ALL
#define REG_ARANGE_F(E, T, ACC, ST) EM_REGISTER_CPU(EM_OP_ARANGE, arange_##E, E);
  ARANGE_FLOAT_TYPES(REG_ARANGE_F)
#undef REG_ARANGE_F
#define REG_ARANGE_I(E, T, C, LD, ST) EM_REGISTER_CPU(EM_OP_ARANGE, arange_##E, E);
  EM_INT_TYPES(REG_ARANGE_I)
#undef REG_ARANGE_I
#define REG_LINSPACE(E, T, S, ST) EM_REGISTER_CPU(EM_OP_LINSPACE, linspace_##E, E);
  LINSPACE_TYPES(REG_LINSPACE)
#undef REG_LINSPACE
}
