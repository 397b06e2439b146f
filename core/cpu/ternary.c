/* CPU kernels: ternary family (where, lerp, addcmul, addcdiv).
 *
 * Kernels are em_loop_fns over (out, in1, in2[, in3]), all of shape [n]
 * with byte strides s[k]; inputs have the key dtype except where's
 * condition, which is read as bytes (bool or uint8). float16/bfloat16
 * compute in float. Attrs layouts: see core/ops_ternary.c.
 */
#include "core/cpu/kernel_impl.h"

#define REG_T(ENUM, T, C, LD, ST, NAME, OP) \
  em__register_kernel(OP, EM_CPU, EM_##ENUM, (void *)k_##NAME##_##ENUM);

/* ---- where: out = cond ? a : b (values copied as stored) ---------------------------- */

#define DEF_WHERE(ENUM, T, ...)                                                    \
  EM_KERNEL_SIG(k_where_##ENUM) {                                                  \
    const int64_t so = s_[0], sc = s_[1], sa = s_[2], sb = s_[3];                  \
    const int64_t e = (int64_t)sizeof(T);                                          \
    if (so == e && sc == 1 && sa == e && sb == e) {                                \
      T *o = (T *)d_[0];                                                           \
      const uint8_t *c = (const uint8_t *)d_[1];                                   \
      const T *x = (const T *)d_[2], *y = (const T *)d_[3];                        \
      for (int64_t k = 0; k < n_; k++) o[k] = c[k] ? x[k] : y[k];                  \
    } else {                                                                       \
      char *o = d_[0];                                                             \
      const char *c = d_[1], *x = d_[2], *y = d_[3];                               \
      for (int64_t k = 0; k < n_; k++, o += so, c += sc, x += sa, y += sb)         \
        *(T *)o = *(const uint8_t *)c ? *(const T *)x : *(const T *)y;             \
    }                                                                              \
  }
EM_L_ALL(DEF_WHERE, _)

/* ---- lerp: a + w (b - a), PyTorch's two-sided form for accuracy ---------------
 * i[0] = 1: scalar weight f[0], operands (out, a, b); else (out, a, b, w). */

#define LERP_(x, y, w) \
  ((w) < 0.5 && (w) > -0.5 ? (x) + (w) * ((y) - (x)) : (y) - ((y) - (x)) * (1 - (w)))

#define DEF_LERP(ENUM, T, C, LD, ST, ...)                                          \
  EM_KERNEL_SIG(k_lerp_##ENUM) {                                                   \
    if (a->i[0]) {                                                                 \
      const C w = (C)a->f[0], omw = 1 - w;                                         \
      if (w < 0.5 && w > -0.5) {                                                   \
        EM_BINARY_LOOP(T, T, C, LD, ST, x + w * (y - x));                          \
      } else {                                                                     \
        EM_BINARY_LOOP(T, T, C, LD, ST, y - (y - x) * omw);                        \
      }                                                                            \
    } else {                                                                       \
      EM_TERNARY_LOOP(T, T, C, LD, ST, LERP_(x, y, z));                            \
    }                                                                              \
  }
EM_L_FLOAT(DEF_LERP, _)

/* ---- addcmul / addcdiv: a + value * t1 * t2, a + value * t1 / t2 --------------
 * f[0] = value (float kernels), i[0] = value (integer kernels). */

#define DEF_ADDCMUL_F(ENUM, T, C, LD, ST, ...)                                    \
  EM_KERNEL_SIG(k_addcmul_##ENUM) {                                               \
    const C v = (C)a->f[0];                                                       \
    EM_TERNARY_LOOP(T, T, C, LD, ST, x + v * y * z);                              \
  }                                                                               \
  EM_KERNEL_SIG(k_addcdiv_##ENUM) {                                               \
    const C v = (C)a->f[0];                                                       \
    EM_TERNARY_LOOP(T, T, C, LD, ST, x + v * y / z);                              \
  }
EM_L_FLOAT(DEF_ADDCMUL_F, _)

#define DEF_ADDCMUL_I(ENUM, T, C, LD, ST, ...)                                    \
  EM_KERNEL_SIG(k_addcmul_##ENUM) {                                               \
    const T v = (T)a->i[0];                                                       \
    EM_TERNARY_LOOP(T, T, C, LD, ST, EM_WRAP_ADD(T, x, EM_WRAP_MUL(T, EM_WRAP_MUL(T, v, y), z))); \
  }
EM_L_INT(DEF_ADDCMUL_I, _)

void em__cpu_register_ternary(void) {
  EM_L_ALL(REG_T, where, EM_OP_WHERE)
  EM_L_FLOAT(REG_T, lerp, EM_OP_LERP)
  EM_L_FLOAT(REG_T, addcmul, EM_OP_ADDCMUL)
  EM_L_INT(REG_T, addcmul, EM_OP_ADDCMUL)
  EM_L_FLOAT(REG_T, addcdiv, EM_OP_ADDCDIV)
}
