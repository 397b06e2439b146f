// CUDA kernels: unary family (math functions, activations, rounding,
// logical/bitwise not, isnan/isinf/isfinite, clamp/hardtanh, pow with a
// scalar exponent or base). Semantics and attrs layouts as the CPU
// kernels (core/cpu/unary.c): integer arithmetic wraps, float16/bfloat16
// compute in float, NaN handling as there. Operands (out, in).
#include "core/cuda/cu_elementwise.cuh"

namespace emcu {

// ---- helpers -------------------------------------------------------------------------
template <class C> __device__ __forceinline__ C sigmoid_c(C x) {
  C e = m_exp(-m_fabs(x)), r = (C)1 / ((C)1 + e);
  return x >= 0 ? r : e * r;
}

// ---- ops without attrs ---------------------------------------------------------------------
EMCU_UOP(Neg, false, if constexpr (is_float_v<T>) return (C)-x; else return wsub((C)0, x);)
EMCU_UOP(Abs, false,
         if constexpr (is_float_v<T>) return m_fabs(x);
         else if constexpr (is_sint_v<T>) return x < 0 ? wsub((C)0, x) : x;
         else return x;)
EMCU_UOP(Sign, false,
         if constexpr (is_bool_v<T>) return x;
         else if constexpr (is_float_v<T> || is_sint_v<T>) return (C)((x > 0) - (x < 0));
         else return (C)(x != 0);)
EMCU_UOP(Square, false, if constexpr (is_float_v<T>) return x * x; else return wmul(x, x);)
EMCU_UOP(Relu, false,
         if constexpr (is_float_v<T> || is_sint_v<T>) return x < 0 ? (C)0 : x; else return x;)

#define FLOAT_UOP(Name, EXPR) EMCU_UOP(Name, false, return (C)(EXPR);)
FLOAT_UOP(Exp, m_exp(x))
FLOAT_UOP(Exp2, m_exp2(x))
FLOAT_UOP(Log, m_log(x))
FLOAT_UOP(Log2, m_log2(x))
FLOAT_UOP(Log10, m_log10(x))
FLOAT_UOP(Log1p, m_log1p(x))
FLOAT_UOP(Expm1, m_expm1(x))
FLOAT_UOP(Sqrt, m_sqrt(x))
FLOAT_UOP(Rsqrt, (C)1 / m_sqrt(x))
FLOAT_UOP(Reciprocal, (C)1 / x)
FLOAT_UOP(Sin, m_sin(x))
FLOAT_UOP(Cos, m_cos(x))
FLOAT_UOP(Tan, m_tan(x))
FLOAT_UOP(Asin, m_asin(x))
FLOAT_UOP(Acos, m_acos(x))
FLOAT_UOP(Atan, m_atan(x))
FLOAT_UOP(Sinh, m_sinh(x))
FLOAT_UOP(Cosh, m_cosh(x))
FLOAT_UOP(Tanh, m_tanh(x))
FLOAT_UOP(Sigmoid, sigmoid_c(x))
FLOAT_UOP(Erf, m_erf(x))
FLOAT_UOP(Silu, x * sigmoid_c(x))
FLOAT_UOP(Floor, m_floor(x))
FLOAT_UOP(Ceil, m_ceil(x))
FLOAT_UOP(Round, m_rint(x))  // half to even
FLOAT_UOP(Trunc, m_trunc(x))
FLOAT_UOP(Frac, x - m_trunc(x))
FLOAT_UOP(Gelu, (C)0.5 * x * m_erfc(-x * (C)0.70710678118654752))
FLOAT_UOP(GeluTanh, x * sigmoid_c((C)1.5957691216057308 * (x + (C)0.044715 * x * x * x)))
#undef FLOAT_UOP

EMCU_UOP(LogicalNot, true, return x == 0;)
EMCU_UOP(BitwiseNot, false, if constexpr (is_bool_v<T>) return !x; else return (C)~x;)
EMCU_UOP(IsNan, true, return x != x;)
EMCU_UOP(IsInf, true, return m_fabs(x) == (C)INFINITY;)
EMCU_UOP(IsFinite, true, return m_fabs(x) < (C)INFINITY;)

// ---- ops with attrs (layouts: core/ops_unary.c) ------------------------------------------------
template <class T> struct LeakyRelu {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  C slope;
  __host__ explicit LeakyRelu(const emcu_attrs &a) : slope((C)a.f[0]) {}
  __device__ __forceinline__ C operator()(C x) const { return x > 0 ? x : x * slope; }
};

template <class T> struct Softplus {  // f[0] beta, f[1] threshold
  using C = CT<T>;
  static constexpr bool bool_out = false;
  C beta, thr;
  __host__ explicit Softplus(const emcu_attrs &a) : beta((C)a.f[0]), thr((C)a.f[1]) {}
  __device__ __forceinline__ C operator()(C x) const {
    return x * beta > thr ? x : m_log1p(m_exp(x * beta)) / beta;
  }
};

template <class T> struct Elu {  // f[0] alpha
  using C = CT<T>;
  static constexpr bool bool_out = false;
  C alpha;
  __host__ explicit Elu(const emcu_attrs &a) : alpha((C)a.f[0]) {}
  __device__ __forceinline__ C operator()(C x) const { return x > 0 ? x : alpha * m_expm1(x); }
};

// clamp / hardtanh: float bounds f[0], f[1] (infinite when absent); integer
// bounds i[2], i[3]. NaN stays NaN; lo > hi gives hi.
template <class T> struct Clamp {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  double flo, fhi;
  int64_t ilo, ihi;
  __host__ explicit Clamp(const emcu_attrs &a)
      : flo(a.f[0]), fhi(a.f[1]), ilo(a.i[2]), ihi(a.i[3]) {}
  __device__ __forceinline__ C operator()(C x) const {
    if constexpr (is_float_v<T>) {
      C lo = (C)flo, hi = (C)fhi, v = x < lo ? lo : x;
      return v > hi ? hi : v;
    } else {
      int64_t v = (int64_t)x < ilo ? ilo : (int64_t)x;
      return (C)(v > ihi ? ihi : v);
    }
  }
};

// x ** e: f[0] = e (float), i[0] = e >= 0 (integer).
template <class T> struct PowScalar {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  double e;
  int64_t ie;
  __host__ explicit PowScalar(const emcu_attrs &a) : e(a.f[0]), ie(a.i[0]) {}
  __device__ __forceinline__ C operator()(C x) const {
    if constexpr (is_float_v<T>) {
      if (e == 2) return x * x;
      if (e == 3) return x * x * x;
      if (e == 0.5) return m_sqrt(x);
      if (e == -0.5) return (C)1 / m_sqrt(x);
      if (e == 1) return x;
      if (e == -1) return (C)1 / x;
      if (e == -2) return (C)1 / (x * x);
      return m_pow(x, (C)e);
    } else {
      return ipow<C>(x, ie);
    }
  }
};

// base ** x: f[0] = base (float), i[0] = base (integer, converted to T).
template <class T> struct RpowScalar {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  double base;
  int64_t ibase;
  __host__ explicit RpowScalar(const emcu_attrs &a) : base(a.f[0]), ibase(a.i[0]) {}
  __device__ __forceinline__ C operator()(C x) const {
    if constexpr (is_float_v<T>) {
      if (base == 2) return m_exp2(x);
      return m_pow((C)base, x);
    } else {
      return ipow<C>((C)ibase, (int64_t)x);
    }
  }
};

}  // namespace emcu

using namespace emcu;

// tables: F float types, I integer types, B bool
EMCU_TABLE(emcu_neg, unary_entry, Neg, true, true, false)
EMCU_TABLE(emcu_abs, unary_entry, Abs, true, true, false)
EMCU_TABLE(emcu_sign, unary_entry, Sign, true, true, true)
EMCU_TABLE(emcu_square, unary_entry, Square, true, true, false)
EMCU_TABLE(emcu_relu, unary_entry, Relu, true, true, false)
EMCU_TABLE(emcu_exp, unary_entry, Exp, true, false, false)
EMCU_TABLE(emcu_exp2, unary_entry, Exp2, true, false, false)
EMCU_TABLE(emcu_log, unary_entry, Log, true, false, false)
EMCU_TABLE(emcu_log2, unary_entry, Log2, true, false, false)
EMCU_TABLE(emcu_log10, unary_entry, Log10, true, false, false)
EMCU_TABLE(emcu_log1p, unary_entry, Log1p, true, false, false)
EMCU_TABLE(emcu_expm1, unary_entry, Expm1, true, false, false)
EMCU_TABLE(emcu_sqrt, unary_entry, Sqrt, true, false, false)
EMCU_TABLE(emcu_rsqrt, unary_entry, Rsqrt, true, false, false)
EMCU_TABLE(emcu_reciprocal, unary_entry, Reciprocal, true, false, false)
EMCU_TABLE(emcu_sin, unary_entry, Sin, true, false, false)
EMCU_TABLE(emcu_cos, unary_entry, Cos, true, false, false)
EMCU_TABLE(emcu_tan, unary_entry, Tan, true, false, false)
EMCU_TABLE(emcu_asin, unary_entry, Asin, true, false, false)
EMCU_TABLE(emcu_acos, unary_entry, Acos, true, false, false)
EMCU_TABLE(emcu_atan, unary_entry, Atan, true, false, false)
EMCU_TABLE(emcu_sinh, unary_entry, Sinh, true, false, false)
EMCU_TABLE(emcu_cosh, unary_entry, Cosh, true, false, false)
EMCU_TABLE(emcu_tanh, unary_entry, Tanh, true, false, false)
EMCU_TABLE(emcu_sigmoid, unary_entry, Sigmoid, true, false, false)
EMCU_TABLE(emcu_erf, unary_entry, Erf, true, false, false)
EMCU_TABLE(emcu_silu, unary_entry, Silu, true, false, false)
EMCU_TABLE(emcu_floor, unary_entry, Floor, true, false, false)
EMCU_TABLE(emcu_ceil, unary_entry, Ceil, true, false, false)
EMCU_TABLE(emcu_round, unary_entry, Round, true, false, false)
EMCU_TABLE(emcu_trunc, unary_entry, Trunc, true, false, false)
EMCU_TABLE(emcu_frac, unary_entry, Frac, true, false, false)
EMCU_TABLE(emcu_logical_not, unary_entry, LogicalNot, true, true, true)
EMCU_TABLE(emcu_bitwise_not, unary_entry, BitwiseNot, false, true, true)
EMCU_TABLE(emcu_isnan, unary_entry, IsNan, true, false, false)
EMCU_TABLE(emcu_isinf, unary_entry, IsInf, true, false, false)
EMCU_TABLE(emcu_isfinite, unary_entry, IsFinite, true, false, false)
EMCU_TABLE(emcu_leaky_relu, unary_entry, LeakyRelu, true, false, false)
EMCU_TABLE(emcu_gelu, unary_entry, Gelu, true, false, false)
EMCU_TABLE(emcu_gelu_tanh, unary_entry, GeluTanh, true, false, false)
EMCU_TABLE(emcu_softplus, unary_entry, Softplus, true, false, false)
EMCU_TABLE(emcu_elu, unary_entry, Elu, true, false, false)
EMCU_TABLE(emcu_clamp, unary_entry, Clamp, true, true, false)
EMCU_TABLE(emcu_pow_scalar, unary_entry, PowScalar, true, true, false)
EMCU_TABLE(emcu_rpow_scalar, unary_entry, RpowScalar, true, true, false)
