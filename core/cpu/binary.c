/* CPU kernels: binary family (arithmetic, division variants, pow,
 * maximum/minimum, atan2, logical and bitwise ops, comparisons).
 *
 * Every kernel is an em_loop_fn over (out, a, b), all of shape [n] with
 * byte strides s[0..2]; a and b have the key dtype (the front end converts
 * them), out has the key dtype too except for the logical ops and the
 * comparisons, which write bool. One body per op, instantiated over a
 * dtype list; float16/bfloat16 compute in float. Integer arithmetic wraps.
 * Integer division by zero never traps: the front end reports it before
 * the kernel runs, and the kernels still yield 0 for it; INT_MIN / -1
 * wraps.
 */
#include "core/cpu/kernel_impl.h"

/* Kernel k_<NAME>_<ENUM>: out = EXPR(x, y) after the statements PRE;
 * inside PRE and EXPR the storage type is TT and the compute type CC. */
#define DEF_B(ENUM, T, C, LD, ST, NAME, PRE, EXPR) \
  EM_KERNEL_SIG(k_##NAME##_##ENUM) {               \
    typedef T TT;                                  \
    typedef C CC;                                  \
    (void)sizeof(TT), (void)sizeof(CC);            \
    PRE;                                           \
    EM_BINARY_LOOP(T, T, C, LD, ST, EXPR);         \
  }
/* Same with a bool output. */
#define DEF_BB(ENUM, T, C, LD, ST, NAME, PRE, EXPR) \
  EM_KERNEL_SIG(k_##NAME##_##ENUM) {                \
    PRE;                                            \
    EM_BINARY_LOOP(bool, T, C, LD, EM_ID, EXPR);    \
  }
/* Two bodies: FAST when COND holds (e.g. alpha == 1), else EXPR. */
#define DEF_B2(ENUM, T, C, LD, ST, NAME, PRE, COND, FAST, EXPR) \
  EM_KERNEL_SIG(k_##NAME##_##ENUM) {                           \
    typedef T TT;                                              \
    typedef C CC;                                              \
    (void)sizeof(TT), (void)sizeof(CC);                        \
    PRE;                                                       \
    if (COND) {                                                \
      EM_BINARY_LOOP(T, T, C, LD, ST, FAST);                   \
    } else {                                                   \
      EM_BINARY_LOOP(T, T, C, LD, ST, EXPR);                   \
    }                                                          \
  }
#define REG_B(ENUM, T, C, LD, ST, NAME, OP) \
  em__register_kernel(OP, EM_CPU, EM_##ENUM, (void *)k_##NAME##_##ENUM);

#define NOPRE (void)0
#define FD_(ff, df, x) _Generic((x), float: ff, default: df)
#define FD2_(ff, df, x, y) _Generic((x), float: ff, default: df)(x, y)

/* ---- scalar helpers ----------------------------------------------------------------- */

/* PyTorch's div_floor for floats: Python's // (b == 0 gives a / b). */
#define DEF_FLOORDIV_F(NAME, T, FMOD, FLOOR, COPYSIGN)            \
  static inline T NAME(T a, T b) {                               \
    if (b == 0) return a / b;                                    \
    T mod = FMOD(a, b), div = (a - mod) / b;                     \
    if (mod != 0 && (b < 0) != (mod < 0)) div -= 1;              \
    if (div == 0) return COPYSIGN((T)0, a / b);                  \
    T fl = FLOOR(div);                                           \
    return div - fl > (T)0.5 ? fl + 1 : fl;                      \
  }
DEF_FLOORDIV_F(floordiv_f, float, fmodf, floorf, copysignf)
DEF_FLOORDIV_F(floordiv_d, double, fmod, floor, copysign)

/* Python's % for floats: the sign of the divisor. */
static inline float rem_f(float a, float b) {
  float m = fmodf(a, b);
  return (m != 0 && (b < 0) != (m < 0)) ? m + b : m;
}
static inline double rem_d(double a, double b) {
  double m = fmod(a, b);
  return (m != 0 && (b < 0) != (m < 0)) ? m + b : m;
}
static inline float truncdiv_f(float a, float b) { return truncf(a / b); }
static inline double truncdiv_d(double a, double b) { return trunc(a / b); }

/* max/min propagating NaN (either operand), else std::max/min. */
#define MAXIMUM_F(x, y) ((x) != (x) ? (x) : (y) != (y) ? (y) : (x) < (y) ? (y) : (x))
#define MINIMUM_F(x, y) ((x) != (x) ? (x) : (y) != (y) ? (y) : (y) < (x) ? (y) : (x))

/* Signed integer division family: y == 0 gives 0 (reported by the front
 * end), y == -1 wraps (INT_MIN / -1 == INT_MIN, remainder 0). */
#define DEF_IDIV_S(ENUM, T, ...)                                                \
  static inline T fdiv_##ENUM(T x, T y) {                                      \
    if (y == 0) return 0;                                                      \
    if (y == -1) return EM_WRAP_SUB(T, 0, x);                                  \
    T q = (T)(x / y), r = (T)(x % y);                                          \
    return (r != 0 && ((r < 0) != (y < 0))) ? (T)(q - 1) : q;                  \
  }                                                                            \
  static inline T tdiv_##ENUM(T x, T y) {                                      \
    if (y == 0) return 0;                                                      \
    if (y == -1) return EM_WRAP_SUB(T, 0, x);                                  \
    return (T)(x / y);                                                         \
  }                                                                            \
  static inline T rem_##ENUM(T x, T y) {                                       \
    if (y == 0 || y == -1) return 0;                                           \
    T r = (T)(x % y);                                                          \
    return (r != 0 && ((r < 0) != (y < 0))) ? (T)(r + y) : r;                  \
  }                                                                            \
  static inline T fmod_##ENUM(T x, T y) {                                      \
    if (y == 0 || y == -1) return 0;                                           \
    return (T)(x % y);                                                         \
  }
#define DEF_IDIV_U(ENUM, T, ...)                                                             \
  static inline T fdiv_##ENUM(T x, T y) { return y ? (T)(x / y) : 0; }                      \
  static inline T tdiv_##ENUM(T x, T y) { return y ? (T)(x / y) : 0; }                      \
  static inline T rem_##ENUM(T x, T y) { return y ? (T)(x % y) : 0; }                       \
  static inline T fmod_##ENUM(T x, T y) { return y ? (T)(x % y) : 0; }
EM_L_SINT(DEF_IDIV_S, _)
EM_L_UINT(DEF_IDIV_U, _)

EM_L_INT(EM_DEF_IPOW, _)

/* ---- arithmetic (attrs: f[0] = alpha for float kernels, i[0] = alpha for
 * integer and bool kernels) ---------------------------------------------------------- */

EM_L_FLOAT(DEF_B2, add, const CC al = (CC)a->f[0], al == 1, x + y, x + al * y)
EM_L_INT(DEF_B2, add, const TT al = (TT)a->i[0], al == 1, EM_WRAP_ADD(TT, x, y),
      EM_WRAP_ADD(TT, x, EM_WRAP_MUL(TT, al, y)))
EM_L_BOOL(DEF_B, add, const bool al = a->i[0] != 0, x | (al & y))
EM_L_FLOAT(DEF_B2, sub, const CC al = (CC)a->f[0], al == 1, x - y, x - al * y)
EM_L_INT(DEF_B2, sub, const TT al = (TT)a->i[0], al == 1, EM_WRAP_SUB(TT, x, y),
      EM_WRAP_SUB(TT, x, EM_WRAP_MUL(TT, al, y)))
EM_L_FLOAT(DEF_B, mul, NOPRE, x * y)
EM_L_INT(DEF_B, mul, NOPRE, EM_WRAP_MUL(TT, x, y))
EM_L_BOOL(DEF_B, mul, NOPRE, x & y)
EM_L_FLOAT(DEF_B, div, NOPRE, x / y)

#define IDIV_KERNELS(ENUM, T, C, LD, ST, ...)                                      \
  DEF_B(ENUM, T, C, LD, ST, floor_divide, NOPRE, fdiv_##ENUM(x, y))                \
  DEF_B(ENUM, T, C, LD, ST, trunc_divide, NOPRE, tdiv_##ENUM(x, y))                \
  DEF_B(ENUM, T, C, LD, ST, remainder, NOPRE, rem_##ENUM(x, y))                    \
  DEF_B(ENUM, T, C, LD, ST, fmod, NOPRE, fmod_##ENUM(x, y))                        \
  DEF_B(ENUM, T, C, LD, ST, pow, NOPRE, ipow_##ENUM(x, (int64_t)y))
EM_L_INT(IDIV_KERNELS, _)
EM_L_FLOAT(DEF_B, floor_divide, NOPRE, FD2_(floordiv_f, floordiv_d, x, y))
EM_L_FLOAT(DEF_B, trunc_divide, NOPRE, FD2_(truncdiv_f, truncdiv_d, x, y))
EM_L_FLOAT(DEF_B, remainder, NOPRE, FD2_(rem_f, rem_d, x, y))
EM_L_FLOAT(DEF_B, fmod, NOPRE, FD2_(fmodf, fmod, x, y))
EM_L_FLOAT(DEF_B, pow, NOPRE, FD2_(powf, pow, x, y))
EM_L_FLOAT(DEF_B, atan2, NOPRE, FD2_(atan2f, atan2, x, y))

EM_L_FLOAT(DEF_B, maximum, NOPRE, MAXIMUM_F(x, y))
EM_L_FLOAT(DEF_B, minimum, NOPRE, MINIMUM_F(x, y))
EM_L_INT(DEF_B, maximum, NOPRE, x < y ? y : x)
EM_L_INT(DEF_B, minimum, NOPRE, y < x ? y : x)
EM_L_BOOL(DEF_B, maximum, NOPRE, x | y)
EM_L_BOOL(DEF_B, minimum, NOPRE, x & y)

/* ---- logical (bool out), bitwise (integers and bool) -------------------------------- */

EM_L_ALL(DEF_BB, logical_and, NOPRE, (x != 0) & (y != 0))
EM_L_ALL(DEF_BB, logical_or, NOPRE, (x != 0) | (y != 0))
EM_L_ALL(DEF_BB, logical_xor, NOPRE, (x != 0) ^ (y != 0))
EM_L_INT(DEF_B, bitwise_and, NOPRE, (TT)(x & y))
EM_L_INT(DEF_B, bitwise_or, NOPRE, (TT)(x | y))
EM_L_INT(DEF_B, bitwise_xor, NOPRE, (TT)(x ^ y))
EM_L_BOOL(DEF_B, bitwise_and, NOPRE, x & y)
EM_L_BOOL(DEF_B, bitwise_or, NOPRE, x | y)
EM_L_BOOL(DEF_B, bitwise_xor, NOPRE, x ^ y)

/* ---- comparisons (bool out, computed in the key dtype) ------------------------------ */

EM_L_ALL(DEF_BB, eq, NOPRE, x == y)
/* ReLU's gradient: x is the incoming gradient, y the forward output. */
EM_L_FLOAT(DEF_B, relu_backward, NOPRE, y > 0 ? x : (CC)0)

EM_L_ALL(DEF_BB, ne, NOPRE, x != y)
EM_L_ALL(DEF_BB, lt, NOPRE, x < y)
EM_L_ALL(DEF_BB, le, NOPRE, x <= y)
EM_L_ALL(DEF_BB, gt, NOPRE, x > y)
EM_L_ALL(DEF_BB, ge, NOPRE, x >= y)

/* ---- registration ------------------------------------------------------------------- */

void em__cpu_register_binary(void) {
#define R(LIST, name, OP) LIST(REG_B, name, OP)
  R(EM_L_ALL, add, EM_OP_BINARY_add)
  R(EM_L_NUM, sub, EM_OP_BINARY_sub)
  R(EM_L_ALL, mul, EM_OP_BINARY_mul)
  R(EM_L_FLOAT, div, EM_OP_BINARY_div)
  R(EM_L_NUM, floor_divide, EM_OP_BINARY_floor_divide)
  R(EM_L_NUM, trunc_divide, EM_OP_BINARY_trunc_divide)
  R(EM_L_NUM, remainder, EM_OP_BINARY_remainder)
  R(EM_L_NUM, fmod, EM_OP_BINARY_fmod)
  R(EM_L_NUM, pow, EM_OP_BINARY_pow)
  R(EM_L_ALL, maximum, EM_OP_BINARY_maximum)
  R(EM_L_ALL, minimum, EM_OP_BINARY_minimum)
  R(EM_L_FLOAT, atan2, EM_OP_BINARY_atan2)
  R(EM_L_ALL, logical_and, EM_OP_BINARY_logical_and)
  R(EM_L_ALL, logical_or, EM_OP_BINARY_logical_or)
  R(EM_L_ALL, logical_xor, EM_OP_BINARY_logical_xor)
  R(EM_L_INT, bitwise_and, EM_OP_BINARY_bitwise_and)
  R(EM_L_INT, bitwise_or, EM_OP_BINARY_bitwise_or)
  R(EM_L_INT, bitwise_xor, EM_OP_BINARY_bitwise_xor)
  R(EM_L_BOOL, bitwise_and, EM_OP_BINARY_bitwise_and)
  R(EM_L_BOOL, bitwise_or, EM_OP_BINARY_bitwise_or)
  R(EM_L_BOOL, bitwise_xor, EM_OP_BINARY_bitwise_xor)
  R(EM_L_FLOAT, relu_backward, EM_OP_RELU_BACKWARD)
  R(EM_L_ALL, eq, EM_OP_EQ)
  R(EM_L_ALL, ne, EM_OP_NE)
  R(EM_L_ALL, lt, EM_OP_LT)
  R(EM_L_ALL, le, EM_OP_LE)
  R(EM_L_ALL, gt, EM_OP_GT)
  R(EM_L_ALL, ge, EM_OP_GE)
#undef R
}
