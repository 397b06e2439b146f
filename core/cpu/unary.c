/* CPU kernels: unary family (math functions, activations, rounding,
 * logical/bitwise not, isnan/isinf/isfinite, clamp/hardtanh, pow with a
 * scalar exponent or base).
 *
 * Every kernel is an em_loop_fn over (out, in), both of shape [n] with byte
 * strides s[0], s[1]; the output dtype is the key dtype except for the
 * bool-valued ops (logical_not, isnan, isinf, isfinite). One body per op,
 * instantiated over a dtype list; float16/bfloat16 compute in float.
 *
 * exp, sigmoid, tanh, silu, gelu and erf on float32 (and float16/bfloat16)
 * use the branch-free implementations below, which the compiler vectorises
 * (libm calls do not); each is within a few ulp of the exact result over
 * the whole float range. float64 uses libm.
 */
#include "core/cpu/kernel_impl.h"

#define EM_INLINE static inline __attribute__((always_inline))

/* ---- vectorisable float32 math ---------------------------------------------------
 * Selections are bit masks, not ?: — GCC (with the default -ftrapping-math)
 * sinks an arm's arithmetic into a branch and then cannot if-convert it, so
 * a ?: over computed values stops the loop from vectorising. */

EM_INLINE uint32_t f_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
EM_INLINE float f_from(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
/* c ? a : b for c in {0, 1}, branch-free. (The same trick on doubles
 * does not vectorise with GCC 12; the double parts below only select
 * between existing values, which needs no mask.) */
EM_INLINE float fsel(int c, float a, float b) {
  uint32_t m = (uint32_t)0 - (uint32_t)c;
  return f_from((f_bits(a) & m) | (f_bits(b) & ~m));
}

/* exp(r) for |r| <= ~0.35 (Cephes expf polynomial, < 1 ulp on the range). */
EM_INLINE float exp_poly(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r + 1.0f;
}

/* p * 2^n for n (an int32 held in a uint32) in [-152, 130]: two factors so
 * that each stays a normal float and the result rounds once (subnormal
 * results included). */
EM_INLINE float scale2(float p, uint32_t n) {
  uint32_t n1 = (uint32_t)((int32_t)n >> 1), n2 = n - n1;
  return p * f_from((n1 + 127u) << 23) * f_from((n2 + 127u) << 23);
}

#define EXPF_HI 88.7228394f  /* above: inf */
#define EXPF_LO -103.972084f /* below: 0 (under half the smallest subnormal) */

/* exp(x) as p * 2^n, p in [0.7, 1.42], for x clamped to [lo, EXPF_HI]
 * (lo >= -150): n = round(x / ln2) by the 1.5 * 2^23 trick, r = x - n ln2
 * in two parts (n * 0.693359375 is exact), p = exp(r) by the polynomial.
 * Callers that scale p by something first and apply 2^n last round once,
 * even when the result is subnormal. */
EM_INLINE float vexpf_parts(float x, float lo, uint32_t *n) {
  float xc = fsel(x < lo, lo, x);
  xc = fsel(xc > EXPF_HI, EXPF_HI, xc);
  float t = xc * 1.44269504088896341f + 12582912.0f;
  float nf = t - 12582912.0f;
  *n = f_bits(t) - 0x4B400000u;
  float r = xc - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  return exp_poly(r);
}

EM_INLINE float vexpf(float x) {
  uint32_t n;
  float p = vexpf_parts(x, EXPF_LO, &n);
  float y = scale2(p, n);
  y = fsel(x > EXPF_HI, INFINITY, y);
  return fsel(x < EXPF_LO, 0.0f, y);
}

/* The same for a double argument, reduced in double: for arguments exact
 * only in double (-x*x, gelu's inner term). n comes from a float copy of a
 * (an error of 1e-5 in it only moves r slightly past ln2/2), r = a - n ln2
 * in double; arguments below lo give p = 0, above 89 p = inf. (Selects and
 * clamps stay in float: GCC 12 does not if-convert them on doubles.) */
EM_INLINE float vexpf_d_parts(double a, float lo, uint32_t *n) {
  float af = (float)a;
  float xc = fsel(af < lo, lo, af);
  xc = fsel(xc > 89.0f, 89.0f, xc);
  float t = xc * 1.44269504088896341f + 12582912.0f;
  float nf = t - 12582912.0f;
  *n = f_bits(t) - 0x4B400000u;
  float p = exp_poly((float)(a - (double)nf * 0.6931471805599453));
  p = fsel(af > 89.0f, INFINITY, p);
  return fsel(af < lo, 0.0f, p);
}

/* Lower cut-off for x * e^a (silu, gelu_tanh): below a = -110, x e^a is
 * under half the smallest subnormal for every |x| < 2^7 — the only x with
 * such an a; 2^n stays >= 2^-159, within scale2's range. */
#define EXPF_LO_SCALED -110.0f

/* 2^n as a double, n in [-152, 130] */
EM_INLINE double d_pow2(uint32_t n) {
  uint64_t u = (uint64_t)((int64_t)(int32_t)n + 1023) << 52;
  double d;
  memcpy(&d, &u, 8);
  return d;
}

/* 1 / (1 + exp(-x)): e = exp(-|x|) = p 2^n; x >= 0: 1 / (1 + e);
 * x < 0: e / (1 + e) = (p / (1 + e)) 2^n, scaled last so that the tail
 * (down to subnormal results) keeps its relative accuracy. */
EM_INLINE float vsigmoidf(float x) {
  uint32_t n;
  float ax = -fabsf(x), p = vexpf_parts(ax, EXPF_LO, &n), d = 1.0f + scale2(p, n);
  float neg = fsel(ax < EXPF_LO, 0.0f, scale2(p / d, n));
  return fsel(x >= 0.0f, 1.0f / d, neg);
}

/* x * sigmoid(x), the negative side scaled last as above. */
EM_INLINE float vsiluf(float x) {
  uint32_t n;
  float ax = -fabsf(x), p = vexpf_parts(ax, EXPF_LO_SCALED, &n), d = 1.0f + scale2(p, n);
  float neg = fsel(ax < EXPF_LO_SCALED, x * 0.0f, scale2(x * p / d, n));
  return fsel(x >= 0.0f, x / d, neg);
}

/* tanh: odd polynomial for |x| < 0.625 (Cephes tanhf), else
 * 1 - 2 / (exp(2|x|) + 1) with the sign restored. */
EM_INLINE float vtanhf(float x) {
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float ax = fabsf(x);
  float e = vexpf(ax + ax);
  float big = copysignf(1.0f - 2.0f / (e + 1.0f), x);
  return fsel(ax < 0.625f, small, big);
}

/* erf(z) / z = P(z^2) on |z| <= 1: least-squares fit in relative error,
 * max error 3.4e-11. */
EM_INLINE double erf_small_poly(double s) {
  double p = -9.6349911180154679e-06;
  p = p * s + 0.00011254640733511512;
  p = p * s - 0.00084825077378343494;
  p = p * s + 0.0052209232160660007;
  p = p * s - 0.02686539212458991;
  p = p * s + 0.11283781839097329;
  p = p * s - 0.37612638425957073;
  return p * s + 1.128379167057098;
}

/* erfc(z) for z >= 1 as t * exp(-z^2 + Q(t)), t = 2 / (2 + z), Q a fit of
 * log(erfc(z) exp(z^2) / t) on t in (0, 2/3] (max error 8e-10). s = z^2
 * exactly (the caller squares a float in double). */
EM_INLINE double erfc_big(double z, double s) {
  double t = 2.0 / (2.0 + z);
  double q = 0.30465690220508967;
  q = q * t - 1.0788155226423566;
  q = q * t + 1.3718734281338025;
  q = q * t - 0.65810103462406733;
  q = q * t + 0.1416022072447003;
  q = q * t - 0.19368444823457867;
  q = q * t - 0.079319077488667733;
  q = q * t + 0.082821979729564121;
  q = q * t + 0.37502029825483851;
  q = q * t + 0.9999996848076389;
  q = q * t - 1.2655121226726944;
  uint32_t n;
  float p = vexpf_d_parts(q - s, -104.0f, &n);
  return t * (double)p * d_pow2(n);
}

EM_INLINE float verff(float x) {
  double z = x, s = z * z;
  float small = (float)(z * erf_small_poly(s));
  float big = copysignf((float)(1.0 - erfc_big(fabs(z), s)), x);
  return fsel(fabsf(x) < 1.0f, small, big);
}

/* gelu(x) = x * Phi(x) = x * erfc(-x / sqrt(2)) / 2; erfc from the same
 * pieces, with u^2 = x^2 / 2 exact in double. */
EM_INLINE float vgeluf(float x) {
  double d = x, u = d * -0.70710678118654752, s = d * d * 0.5;
  float small = (float)(d * 0.5 * (1.0 - u * erf_small_poly(s)));
  double ec = erfc_big(fabs(u), s);
  float neg = (float)(d * 0.5 * ec), pos = (float)(d * 0.5 * (2.0 - ec));
  return fsel(fabsf(x) < 1.41421356f, small, fsel(x < 0.0f, neg, pos));
}

/* tanh-form gelu: 0.5 x (1 + tanh(k)) = x * sigmoid(2k), k = sqrt(2/pi)
 * (x + 0.044715 x^3) computed in double so the tail stays accurate (k has
 * the sign of x); the negative side is scaled last as in vsiluf. */
EM_INLINE float vgelu_tanhf(float x) {
  double d = x, k2 = 1.5957691216057308 * (d + 0.044715 * d * d * d);
  uint32_t n;
  float p = vexpf_d_parts(-fabs(k2), EXPF_LO_SCALED, &n), den = 1.0f + scale2(p, n);
  return fsel(x >= 0.0f, x / den, scale2(x * p / den, n));
}

/* x > 0 ? x : x * slope without a branch (float); plain ?: for double. */
EM_INLINE float leaky_f(float x, float slope) { return fsel(x > 0, x, x * slope); }
static inline double leaky_d(double x, double slope) { return x > 0 ? x : x * slope; }

/* float64 versions (libm). */
static inline double sigmoid_d(double x) {
  double e = exp(-fabs(x)), r = 1.0 / (1.0 + e);
  return x >= 0 ? r : e * r;
}
static inline double silu_d(double x) { return x * sigmoid_d(x); }
static inline double gelu_d(double x) { return 0.5 * x * erfc(-x * 0.70710678118654752); }
static inline double gelu_tanh_d(double x) {
  return x * sigmoid_d(1.5957691216057308 * (x + 0.044715 * x * x * x));
}
static inline double rsqrt_d(double x) { return 1.0 / sqrt(x); }
static inline float rsqrt_f(float x) { return 1.0f / sqrtf(x); }

/* One name for float and double: F_(name, x) picks <vector float impl> or
 * <libm double>. */
#define FD_(ff, df, x) _Generic((x), float: ff, default: df)(x)

/* Kernel k_<NAME>_<ENUM>: out = EXPR(x) after the statements PRE; inside
 * PRE and EXPR the storage type is TT and the compute type CC. */
#define DEF_U(ENUM, T, C, LD, ST, NAME, PRE, EXPR) \
  EM_KERNEL_SIG(k_##NAME##_##ENUM) {               \
    typedef T TT;                                  \
    typedef C CC;                                  \
    (void)sizeof(TT), (void)sizeof(CC);            \
    PRE;                                           \
    EM_UNARY_LOOP(T, T, C, LD, ST, EXPR);          \
  }
/* Same with a bool output. */
#define DEF_UB(ENUM, T, C, LD, ST, NAME, PRE, EXPR) \
  EM_KERNEL_SIG(k_##NAME##_##ENUM) {                \
    typedef C CC;                                   \
    (void)sizeof(CC);                               \
    PRE;                                            \
    EM_UNARY_LOOP(bool, T, C, LD, EM_ID, EXPR);     \
  }
#define REG_U(ENUM, T, C, LD, ST, NAME, OP) \
  em__register_kernel(OP, EM_CPU, EM_##ENUM, (void *)k_##NAME##_##ENUM);

#define NOPRE (void)0

/* ---- kernels ------------------------------------------------------------------------ */

/* neg, abs, sign, square, relu: every numeric dtype (bool: sign only). */
EM_L_FLOAT(DEF_U, neg, NOPRE, -x)
EM_L_INT(DEF_U, neg, NOPRE, EM_WRAP_SUB(TT, 0, x))
EM_L_FLOAT(DEF_U, abs, NOPRE, FD_(fabsf, fabs, x))
EM_L_SINT(DEF_U, abs, NOPRE, x < 0 ? EM_WRAP_SUB(TT, 0, x) : x)
EM_L_UINT(DEF_U, abs, NOPRE, x)
EM_L_FLOAT(DEF_U, sign, NOPRE, (CC)((x > 0) - (x < 0)))
EM_L_SINT(DEF_U, sign, NOPRE, (TT)((x > 0) - (x < 0)))
EM_L_UINT(DEF_U, sign, NOPRE, (TT)(x != 0))
EM_L_BOOL(DEF_U, sign, NOPRE, x)
EM_L_FLOAT(DEF_U, square, NOPRE, x * x)
EM_L_INT(DEF_U, square, NOPRE, EM_WRAP_MUL(TT, x, x))
EM_L_FLOAT(DEF_U, relu, NOPRE, x < 0 ? (CC)0 : x)
EM_L_SINT(DEF_U, relu, NOPRE, x < 0 ? (TT)0 : x)
EM_L_UINT(DEF_U, relu, NOPRE, x)

/* float-only math */
EM_L_FLOAT(DEF_U, exp, NOPRE, FD_(vexpf, exp, x))
EM_L_FLOAT(DEF_U, exp2, NOPRE, FD_(exp2f, exp2, x))
EM_L_FLOAT(DEF_U, log, NOPRE, FD_(logf, log, x))
EM_L_FLOAT(DEF_U, log2, NOPRE, FD_(log2f, log2, x))
EM_L_FLOAT(DEF_U, log10, NOPRE, FD_(log10f, log10, x))
EM_L_FLOAT(DEF_U, log1p, NOPRE, FD_(log1pf, log1p, x))
EM_L_FLOAT(DEF_U, expm1, NOPRE, FD_(expm1f, expm1, x))
EM_L_FLOAT(DEF_U, sqrt, NOPRE, FD_(sqrtf, sqrt, x))
EM_L_FLOAT(DEF_U, rsqrt, NOPRE, FD_(rsqrt_f, rsqrt_d, x))
EM_L_FLOAT(DEF_U, reciprocal, NOPRE, (CC)1 / x)
EM_L_FLOAT(DEF_U, sin, NOPRE, FD_(sinf, sin, x))
EM_L_FLOAT(DEF_U, cos, NOPRE, FD_(cosf, cos, x))
EM_L_FLOAT(DEF_U, tan, NOPRE, FD_(tanf, tan, x))
EM_L_FLOAT(DEF_U, asin, NOPRE, FD_(asinf, asin, x))
EM_L_FLOAT(DEF_U, acos, NOPRE, FD_(acosf, acos, x))
EM_L_FLOAT(DEF_U, atan, NOPRE, FD_(atanf, atan, x))
EM_L_FLOAT(DEF_U, sinh, NOPRE, FD_(sinhf, sinh, x))
EM_L_FLOAT(DEF_U, cosh, NOPRE, FD_(coshf, cosh, x))
EM_L_FLOAT(DEF_U, tanh, NOPRE, FD_(vtanhf, tanh, x))
EM_L_FLOAT(DEF_U, sigmoid, NOPRE, FD_(vsigmoidf, sigmoid_d, x))
EM_L_FLOAT(DEF_U, erf, NOPRE, FD_(verff, erf, x))
EM_L_FLOAT(DEF_U, silu, NOPRE, FD_(vsiluf, silu_d, x))
EM_L_FLOAT(DEF_U, floor, NOPRE, FD_(floorf, floor, x))
EM_L_FLOAT(DEF_U, ceil, NOPRE, FD_(ceilf, ceil, x))
EM_L_FLOAT(DEF_U, round, NOPRE, FD_(rintf, rint, x)) /* half to even */
EM_L_FLOAT(DEF_U, trunc, NOPRE, FD_(truncf, trunc, x))
EM_L_FLOAT(DEF_U, frac, NOPRE, x - FD_(truncf, trunc, x))

/* logical / bitwise not */
EM_L_ALL(DEF_UB, logical_not, NOPRE, x == 0)
EM_L_INT(DEF_U, bitwise_not, NOPRE, (TT)~x)
EM_L_BOOL(DEF_U, bitwise_not, NOPRE, !x)

/* float classification (integer inputs are answered by the front end) */
EM_L_FLOAT(DEF_UB, isnan, NOPRE, x != x)
EM_L_FLOAT(DEF_UB, isinf, NOPRE, FD_(fabsf, fabs, x) == (CC)INFINITY)
EM_L_FLOAT(DEF_UB, isfinite, NOPRE, FD_(fabsf, fabs, x) < (CC)INFINITY)

/* activations with parameters (attrs layout: see core/ops_unary.c) */
EM_L_FLOAT(DEF_U, leaky_relu, const CC slope = (CC)a->f[0],
        _Generic(x, float: leaky_f, default: leaky_d)(x, slope))
EM_L_FLOAT(DEF_U, gelu, NOPRE, FD_(vgeluf, gelu_d, x))
EM_L_FLOAT(DEF_U, gelu_tanh, NOPRE, FD_(vgelu_tanhf, gelu_tanh_d, x))
EM_L_FLOAT(DEF_U, softplus, const CC beta = (CC)a->f[0]; const CC thr = (CC)a->f[1],
        x * beta > thr ? x : FD_(log1pf, log1p, FD_(vexpf, exp, x * beta)) / beta)
EM_L_FLOAT(DEF_U, elu, const CC alpha = (CC)a->f[0], x > 0 ? x : alpha * FD_(expm1f, expm1, x))

/* clamp / hardtanh: y = min(max(x, lo), hi) with NaN kept and lo > hi
 * giving hi. Float bounds in f[0], f[1] (infinite when absent); integer
 * bounds in i[2], i[3] (INT64_MIN/MAX when absent, else within T). */
EM_L_FLOAT(DEF_U, clamp, const CC lo = (CC)a->f[0]; const CC hi = (CC)a->f[1],
        (x < lo ? lo : x) > hi ? hi : (x < lo ? lo : x))
EM_L_INT(DEF_U, clamp, const int64_t lo = a->i[2]; const int64_t hi = a->i[3],
      (TT)((x < lo ? lo : (int64_t)x) > hi ? hi : (x < lo ? lo : (int64_t)x)))

EM_L_INT(EM_DEF_IPOW, _)

/* x ** e: f[0] = e (float kernels), i[0] = e (integer kernels, >= 0).
 * Common exponents get exact or faster forms, as PyTorch does. */
#define DEF_POWS_F(ENUM, T, C, LD, ST, ...)                                 \
  EM_KERNEL_SIG(k_pow_scalar_##ENUM) {                                      \
    const double e = a->f[0];                                               \
    if (e == 2) {                                                           \
      EM_UNARY_LOOP(T, T, C, LD, ST, x * x);                                \
    } else if (e == 3) {                                                    \
      EM_UNARY_LOOP(T, T, C, LD, ST, x * x * x);                            \
    } else if (e == 0.5) {                                                  \
      EM_UNARY_LOOP(T, T, C, LD, ST, FD_(sqrtf, sqrt, x));                  \
    } else if (e == -0.5) {                                                 \
      EM_UNARY_LOOP(T, T, C, LD, ST, FD_(rsqrt_f, rsqrt_d, x));             \
    } else if (e == 1) {                                                    \
      EM_UNARY_LOOP(T, T, C, LD, ST, x);                                    \
    } else if (e == -1) {                                                   \
      EM_UNARY_LOOP(T, T, C, LD, ST, (C)1 / x);                             \
    } else if (e == -2) {                                                   \
      EM_UNARY_LOOP(T, T, C, LD, ST, (C)1 / (x * x));                       \
    } else {                                                                \
      const C ce = (C)e;                                                    \
      EM_UNARY_LOOP(T, T, C, LD, ST, _Generic(x, float: powf, default: pow)(x, ce)); \
    }                                                                       \
  }
EM_L_FLOAT(DEF_POWS_F, _)
#define DEF_POWS_I(ENUM, T, C, LD, ST, ...)                                 \
  EM_KERNEL_SIG(k_pow_scalar_##ENUM) {                                      \
    const int64_t e = a->i[0];                                              \
    if (e == 2) {                                                           \
      EM_UNARY_LOOP(T, T, C, LD, ST, EM_WRAP_MUL(T, x, x));                 \
    } else {                                                                \
      EM_UNARY_LOOP(T, T, C, LD, ST, ipow_##ENUM(x, e));                    \
    }                                                                       \
  }
EM_L_INT(DEF_POWS_I, _)

/* base ** x: f[0] = base (float kernels), i[0] = base (integer kernels,
 * converted to T as PyTorch converts the scalar). */
#define DEF_RPOW_F(ENUM, T, C, LD, ST, ...)                                  \
  EM_KERNEL_SIG(k_rpow_scalar_##ENUM) {                                      \
    const C base = (C)a->f[0];                                               \
    if (base == 2) {                                                         \
      EM_UNARY_LOOP(T, T, C, LD, ST, FD_(exp2f, exp2, x));                   \
    } else {                                                                 \
      EM_UNARY_LOOP(T, T, C, LD, ST, _Generic(x, float: powf, default: pow)(base, x)); \
    }                                                                        \
  }
EM_L_FLOAT(DEF_RPOW_F, _)
#define DEF_RPOW_I(ENUM, T, C, LD, ST, ...)                                  \
  EM_KERNEL_SIG(k_rpow_scalar_##ENUM) {                                      \
    const T base = (T)a->i[0];                                               \
    EM_UNARY_LOOP(T, T, C, LD, ST, ipow_##ENUM(base, (int64_t)x));          \
  }
EM_L_INT(DEF_RPOW_I, _)

/* ---- registration ------------------------------------------------------------------- */

void em__cpu_register_unary(void) {
  EM_L_FLOAT(REG_U, neg, EM_OP_UNARY_neg) EM_L_INT(REG_U, neg, EM_OP_UNARY_neg)
  EM_L_FLOAT(REG_U, abs, EM_OP_UNARY_abs) EM_L_INT(REG_U, abs, EM_OP_UNARY_abs)
  EM_L_ALL(REG_U, sign, EM_OP_UNARY_sign)
  EM_L_FLOAT(REG_U, square, EM_OP_UNARY_square) EM_L_INT(REG_U, square, EM_OP_UNARY_square)
  EM_L_FLOAT(REG_U, relu, EM_OP_UNARY_relu) EM_L_INT(REG_U, relu, EM_OP_UNARY_relu)
#define FLOAT_OP(name) EM_L_FLOAT(REG_U, name, EM_OP_UNARY_##name)
  FLOAT_OP(exp) FLOAT_OP(exp2) FLOAT_OP(log) FLOAT_OP(log2) FLOAT_OP(log10) FLOAT_OP(log1p)
  FLOAT_OP(expm1) FLOAT_OP(sqrt) FLOAT_OP(rsqrt) FLOAT_OP(reciprocal) FLOAT_OP(sin)
  FLOAT_OP(cos) FLOAT_OP(tan) FLOAT_OP(asin) FLOAT_OP(acos) FLOAT_OP(atan) FLOAT_OP(sinh)
  FLOAT_OP(cosh) FLOAT_OP(tanh) FLOAT_OP(sigmoid) FLOAT_OP(erf) FLOAT_OP(silu)
  FLOAT_OP(floor) FLOAT_OP(ceil) FLOAT_OP(round) FLOAT_OP(trunc) FLOAT_OP(frac)
#undef FLOAT_OP
  EM_L_ALL(REG_U, logical_not, EM_OP_UNARY_logical_not)
  EM_L_INT(REG_U, bitwise_not, EM_OP_UNARY_bitwise_not)
  EM_L_BOOL(REG_U, bitwise_not, EM_OP_UNARY_bitwise_not)
  EM_L_FLOAT(REG_U, isnan, EM_OP_ISNAN)
  EM_L_FLOAT(REG_U, isinf, EM_OP_ISINF)
  EM_L_FLOAT(REG_U, isfinite, EM_OP_ISFINITE)
  EM_L_FLOAT(REG_U, leaky_relu, EM_OP_LEAKY_RELU)
  EM_L_FLOAT(REG_U, gelu, EM_OP_GELU)
  EM_L_FLOAT(REG_U, gelu_tanh, EM_OP_GELU_TANH)
  EM_L_FLOAT(REG_U, softplus, EM_OP_SOFTPLUS)
  EM_L_FLOAT(REG_U, elu, EM_OP_ELU)
  /* hardtanh is clamp with both bounds */
  EM_L_FLOAT(REG_U, clamp, EM_OP_HARDTANH) EM_L_INT(REG_U, clamp, EM_OP_HARDTANH)
  EM_L_FLOAT(REG_U, clamp, EM_OP_CLAMP) EM_L_INT(REG_U, clamp, EM_OP_CLAMP)
  EM_L_FLOAT(REG_U, pow_scalar, EM_OP_POW_SCALAR) EM_L_INT(REG_U, pow_scalar, EM_OP_POW_SCALAR)
  EM_L_FLOAT(REG_U, rpow_scalar, EM_OP_RPOW_SCALAR) EM_L_INT(REG_U, rpow_scalar, EM_OP_RPOW_SCALAR)
}
