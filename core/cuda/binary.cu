// CUDA kernels: binary family (arithmetic, division variants, pow,
// maximum/minimum, atan2, logical and bitwise ops, comparisons). Semantics
// and attrs as the CPU kernels (core/cpu/binary.c): both inputs have the
// key dtype, integer arithmetic wraps, integer division by zero gives 0
// (the front end reports it first), INT_MIN / -1 wraps, float16/bfloat16
// compute in float. Operands (out, a, b).
#include "core/cuda/cu_elementwise.cuh"

namespace emcu {

template <class C> __device__ __forceinline__ C floordiv_f(C a, C b) {
  if (b == 0) return a / b;
  C mod = m_fmod(a, b), div = (a - mod) / b;
  if (mod != 0 && (b < 0) != (mod < 0)) div -= 1;
  if (div == 0) return m_copysign((C)0, a / b);
  C fl = m_floor(div);
  return div - fl > (C)0.5 ? fl + 1 : fl;
}
template <class C> __device__ __forceinline__ C rem_f(C a, C b) {
  C m = m_fmod(a, b);
  return (m != 0 && (b < 0) != (m < 0)) ? m + b : m;
}

template <class T> __device__ __forceinline__ T idiv_floor(T x, T y) {
  if (y == 0) return 0;
  if constexpr (std::is_signed<T>::value) {
    if (y == (T)-1) return wsub((T)0, x);
    T q = (T)(x / y), r = (T)(x % y);
    return (r != 0 && ((r < 0) != (y < 0))) ? (T)(q - 1) : q;
  } else {
    return (T)(x / y);
  }
}
template <class T> __device__ __forceinline__ T idiv_trunc(T x, T y) {
  if (y == 0) return 0;
  if constexpr (std::is_signed<T>::value) {
    if (y == (T)-1) return wsub((T)0, x);
  }
  return (T)(x / y);
}
template <class T> __device__ __forceinline__ T irem(T x, T y) {
  if (y == 0) return 0;
  if constexpr (std::is_signed<T>::value) {
    if (y == (T)-1) return 0;
    T r = (T)(x % y);
    return (r != 0 && ((r < 0) != (y < 0))) ? (T)(r + y) : r;
  } else {
    return (T)(x % y);
  }
}
template <class T> __device__ __forceinline__ T ifmod(T x, T y) {
  if (y == 0) return 0;
  if constexpr (std::is_signed<T>::value) {
    if (y == (T)-1) return 0;
  }
  return (T)(x % y);
}
// add / sub: f[0] = alpha (float kernels), i[0] = alpha (integer and bool).
template <class T> struct Add {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  double fa;
  int64_t ia;
  __host__ explicit Add(const emcu_attrs &a) : fa(a.f[0]), ia(a.i[0]) {}
  __device__ __forceinline__ C operator()(C x, C y) const {
    if constexpr (is_float_v<T>) {
      C al = (C)fa;
      return al == 1 ? x + y : x + al * y;
    } else if constexpr (is_bool_v<T>) {
      return x | ((ia != 0) & y);
    } else {
      return wadd(x, wmul((C)ia, y));
    }
  }
};
template <class T> struct Sub {
  using C = CT<T>;
  static constexpr bool bool_out = false;
  double fa;
  int64_t ia;
  __host__ explicit Sub(const emcu_attrs &a) : fa(a.f[0]), ia(a.i[0]) {}
  __device__ __forceinline__ C operator()(C x, C y) const {
    if constexpr (is_float_v<T>) {
      C al = (C)fa;
      return al == 1 ? x - y : x - al * y;
    } else {
      return wsub(x, wmul((C)ia, y));
    }
  }
};

EMCU_BOP(Mul, false,
         if constexpr (is_float_v<T>) return x * y;
         else if constexpr (is_bool_v<T>) return (C)(x & y);
         else return wmul(x, y);)
EMCU_BOP(Div, false, return x / y;)
EMCU_BOP(FloorDivide, false,
         if constexpr (is_float_v<T>) return floordiv_f(x, y); else return idiv_floor(x, y);)
EMCU_BOP(TruncDivide, false,
         if constexpr (is_float_v<T>) return m_trunc(x / y); else return idiv_trunc(x, y);)
EMCU_BOP(Remainder, false,
         if constexpr (is_float_v<T>) return rem_f(x, y); else return irem(x, y);)
EMCU_BOP(Fmod, false, if constexpr (is_float_v<T>) return m_fmod(x, y); else return ifmod(x, y);)
EMCU_BOP(Pow, false,
         if constexpr (is_float_v<T>) return m_pow(x, y); else return ipow(x, (int64_t)y);)
EMCU_BOP(Maximum, false,
         if constexpr (is_float_v<T>) return x != x ? x : y != y ? y : x < y ? y : x;
         else if constexpr (is_bool_v<T>) return (C)(x | y);
         else return x < y ? y : x;)
EMCU_BOP(Minimum, false,
         if constexpr (is_float_v<T>) return x != x ? x : y != y ? y : y < x ? y : x;
         else if constexpr (is_bool_v<T>) return (C)(x & y);
         else return y < x ? y : x;)
EMCU_BOP(Atan2, false, return m_atan2(x, y);)
EMCU_BOP(LogicalAnd, true, return (x != 0) & (y != 0);)
EMCU_BOP(LogicalOr, true, return (x != 0) | (y != 0);)
EMCU_BOP(LogicalXor, true, return (x != 0) ^ (y != 0);)
EMCU_BOP(BitwiseAnd, false, return (C)(x & y);)
EMCU_BOP(BitwiseOr, false, return (C)(x | y);)
EMCU_BOP(BitwiseXor, false, return (C)(x ^ y);)
// ReLU's gradient (autograd): x the incoming gradient, y the forward output.
EMCU_BOP(ReluBackward, false, return y > 0 ? x : (C)0;)
EMCU_BOP(Eq, true, return x == y;)
EMCU_BOP(Ne, true, return x != y;)
EMCU_BOP(Lt, true, return x < y;)
EMCU_BOP(Le, true, return x <= y;)
EMCU_BOP(Gt, true, return x > y;)
EMCU_BOP(Ge, true, return x >= y;)

}  // namespace emcu

using namespace emcu;

EMCU_TABLE(emcu_add, binary_entry, Add, true, true, true)
EMCU_TABLE(emcu_sub, binary_entry, Sub, true, true, false)
EMCU_TABLE(emcu_mul, binary_entry, Mul, true, true, true)
EMCU_TABLE(emcu_div, binary_entry, Div, true, false, false)
EMCU_TABLE(emcu_floor_divide, binary_entry, FloorDivide, true, true, false)
EMCU_TABLE(emcu_trunc_divide, binary_entry, TruncDivide, true, true, false)
EMCU_TABLE(emcu_remainder, binary_entry, Remainder, true, true, false)
EMCU_TABLE(emcu_fmod, binary_entry, Fmod, true, true, false)
EMCU_TABLE(emcu_pow, binary_entry, Pow, true, true, false)
EMCU_TABLE(emcu_maximum, binary_entry, Maximum, true, true, true)
EMCU_TABLE(emcu_minimum, binary_entry, Minimum, true, true, true)
EMCU_TABLE(emcu_atan2, binary_entry, Atan2, true, false, false)
EMCU_TABLE(emcu_logical_and, binary_entry, LogicalAnd, true, true, true)
EMCU_TABLE(emcu_logical_or, binary_entry, LogicalOr, true, true, true)
EMCU_TABLE(emcu_logical_xor, binary_entry, LogicalXor, true, true, true)
EMCU_TABLE(emcu_bitwise_and, binary_entry, BitwiseAnd, false, true, true)
EMCU_TABLE(emcu_bitwise_or, binary_entry, BitwiseOr, false, true, true)
EMCU_TABLE(emcu_bitwise_xor, binary_entry, BitwiseXor, false, true, true)
EMCU_TABLE(emcu_relu_backward, binary_entry, ReluBackward, true, false, false)
EMCU_TABLE(emcu_eq, binary_entry, Eq, true, true, true)
EMCU_TABLE(emcu_ne, binary_entry, Ne, true, true, true)
EMCU_TABLE(emcu_lt, binary_entry, Lt, true, true, true)
EMCU_TABLE(emcu_le, binary_entry, Le, true, true, true)
EMCU_TABLE(emcu_gt, binary_entry, Gt, true, true, true)
EMCU_TABLE(emcu_ge, binary_entry, Ge, true, true, true)
