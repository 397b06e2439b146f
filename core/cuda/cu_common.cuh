// Device-side building blocks shared by the .cu files: storage types and
// their compute types (float16/bfloat16 compute in float, as on the CPU),
// conversions with the CPU's semantics, math overloads, wrapping integer
// arithmetic, and the elementwise launch helper.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <cfloat>
#include <climits>
#include <limits>
#include <type_traits>

#include "core/cuda/cu_kernels.h"

namespace emcu {

// ---- storage types ------------------------------------------------------------------
// float16 / bfloat16 are stored as raw bits (as ember stores them).
struct f16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

template <class T> struct Ty;  // compute type C, load: T -> C, store: C -> T
template <> struct Ty<float> {
  using C = float;
  static __device__ __forceinline__ C load(float v) { return v; }
  static __device__ __forceinline__ float store(C v) { return v; }
};
template <> struct Ty<double> {
  using C = double;
  static __device__ __forceinline__ C load(double v) { return v; }
  static __device__ __forceinline__ double store(C v) { return v; }
};
template <> struct Ty<f16> {
  using C = float;
  static __device__ __forceinline__ C load(f16 v) { return __half2float(__ushort_as_half(v.bits)); }
  static __device__ __forceinline__ f16 store(C v) { return f16{__half_as_ushort(__float2half_rn(v))}; }
};
template <> struct Ty<bf16> {
  using C = float;
  static __device__ __forceinline__ C load(bf16 v) {
    return __uint_as_float((uint32_t)v.bits << 16);
  }
  // round to nearest even; NaN stays a quiet NaN (as the CPU's em__f2b)
  static __device__ __forceinline__ bf16 store(C v) {
    uint32_t u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{(uint16_t)((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16{(uint16_t)(u >> 16)};
  }
};
#define EMCU_INT_TY(T)                                                   \
  template <> struct Ty<T> {                                             \
    using C = T;                                                         \
    static __device__ __forceinline__ C load(T v) { return v; }          \
    static __device__ __forceinline__ T store(C v) { return v; }         \
  };
EMCU_INT_TY(int8_t)
EMCU_INT_TY(int16_t)
EMCU_INT_TY(int32_t)
EMCU_INT_TY(int64_t)
EMCU_INT_TY(uint8_t)
EMCU_INT_TY(bool)
#undef EMCU_INT_TY

template <class T> using CT = typename Ty<T>::C;
template <class T> constexpr bool is_float_v =
    std::is_same<T, float>::value || std::is_same<T, double>::value ||
    std::is_same<T, f16>::value || std::is_same<T, bf16>::value;
template <class T> constexpr bool is_bool_v = std::is_same<T, bool>::value;
template <class T> constexpr bool is_int_v = !is_float_v<T> && !is_bool_v<T>;
template <class T> constexpr bool is_sint_v = is_int_v<T> && std::is_signed<T>::value;

// Storage type of each em_dtype, in enum order (core/dtype.h).
template <int DT> struct Storage;
template <> struct Storage<EM_FLOAT32> { using T = float; };
template <> struct Storage<EM_FLOAT64> { using T = double; };
template <> struct Storage<EM_FLOAT16> { using T = f16; };
template <> struct Storage<EM_BFLOAT16> { using T = bf16; };
template <> struct Storage<EM_INT8> { using T = int8_t; };
template <> struct Storage<EM_INT16> { using T = int16_t; };
template <> struct Storage<EM_INT32> { using T = int32_t; };
template <> struct Storage<EM_INT64> { using T = int64_t; };
template <> struct Storage<EM_UINT8> { using T = uint8_t; };
template <> struct Storage<EM_BOOL> { using T = bool; };

// ---- wrapping integer arithmetic (PyTorch wraps; signed overflow is UB) -------------------
template <class T> struct Unsigned { using U = typename std::make_unsigned<T>::type; };
template <> struct Unsigned<bool> { using U = bool; };
template <class T> __device__ __forceinline__ T wadd(T x, T y) {
  using U = typename Unsigned<T>::U;
  return (T)(U)((U)x + (U)y);
}
template <class T> __device__ __forceinline__ T wsub(T x, T y) {
  using U = typename Unsigned<T>::U;
  return (T)(U)((U)x - (U)y);
}
template <class T> __device__ __forceinline__ T wmul(T x, T y) {
  using U = typename Unsigned<T>::U;
  return (T)(U)((U)x * 1u * (U)y);
}

// Integer power, wrapping; negative exponents as PyTorch: 1 -> 1,
// -1 -> +-1, else 0 (the CPU's ipow_<ENUM>, core/cpu/kernel_impl.h).
template <class T> __device__ __forceinline__ T ipow(T b, int64_t e) {
  if (e < 0) {
    if (b == 1) return 1;
    if constexpr (std::is_signed<T>::value) {
      if (b == (T)-1) return (e & 1) ? (T)-1 : (T)1;
    }
    return 0;
  }
  T r = 1;
  while (e) {
    if (e & 1) r = wmul(r, b);
    e >>= 1;
    if (e) b = wmul(b, b);
  }
  return r;
}

// Integer limits usable in device code (std::numeric_limits is host-only).
template <class T> struct Lim;
#define EMCU_LIM(T, LO, HI)                                                   \
  template <> struct Lim<T> {                                                 \
    static __host__ __device__ constexpr T lo() { return LO; }                \
    static __host__ __device__ constexpr T hi() { return HI; }                \
  };
EMCU_LIM(int8_t, INT8_MIN, INT8_MAX)
EMCU_LIM(int16_t, INT16_MIN, INT16_MAX)
EMCU_LIM(int32_t, INT32_MIN, INT32_MAX)
EMCU_LIM(int64_t, INT64_MIN, INT64_MAX)
EMCU_LIM(uint8_t, 0, UINT8_MAX)
EMCU_LIM(bool, false, true)
#undef EMCU_LIM

// ---- conversions with the CPU's rules (core/cpu/copy.c) --------------------------------------
// float -> int saturates, NaN -> 0; int -> int wraps; anything -> bool is != 0.
template <class TD> __device__ __forceinline__ TD sat_from_double(double v) {
  if (v != v) return (TD)0;
  if (v >= (double)Lim<TD>::hi()) return Lim<TD>::hi();
  if (v <= (double)Lim<TD>::lo()) return Lim<TD>::lo();
  return (TD)v;
}
template <> __device__ __forceinline__ int64_t sat_from_double<int64_t>(double v) {
  if (v != v) return 0;
  if (v >= 9.2233720368547758e18) return INT64_MAX;
  if (v <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)v;
}

// Source value as the widest useful compute type.
template <class TS> __device__ __forceinline__ auto src_value(TS x) { return Ty<TS>::load(x); }

template <class TD, class TS> __device__ __forceinline__ TD convert(TS x) {
  if constexpr (std::is_same<TD, TS>::value) {
    return x;
  } else if constexpr (is_bool_v<TD>) {
    return src_value(x) != 0;
  } else if constexpr (std::is_same<TD, float>::value) {
    return (float)src_value(x);
  } else if constexpr (std::is_same<TD, double>::value) {
    return (double)src_value(x);
  } else if constexpr (std::is_same<TD, f16>::value || std::is_same<TD, bf16>::value) {
    return Ty<TD>::store((float)src_value(x));
  } else {  // integer destination
    if constexpr (is_float_v<TS>)
      return sat_from_double<TD>((double)src_value(x));
    else
      return (TD)src_value(x);  // modular (two's complement) narrowing
  }
}

// ---- math overloads (float -> the f versions, double -> libdevice double) -------------------
#define EMCU_MATH1(name, fname)                                                   \
  __device__ __forceinline__ float m_##name(float x) { return fname(x); }         \
  __device__ __forceinline__ double m_##name(double x) { return name(x); }
EMCU_MATH1(exp, expf)
EMCU_MATH1(exp2, exp2f)
EMCU_MATH1(log, logf)
EMCU_MATH1(log2, log2f)
EMCU_MATH1(log10, log10f)
EMCU_MATH1(log1p, log1pf)
EMCU_MATH1(expm1, expm1f)
EMCU_MATH1(sqrt, sqrtf)
EMCU_MATH1(rsqrt, rsqrtf)
EMCU_MATH1(sin, sinf)
EMCU_MATH1(cos, cosf)
EMCU_MATH1(tan, tanf)
EMCU_MATH1(asin, asinf)
EMCU_MATH1(acos, acosf)
EMCU_MATH1(atan, atanf)
EMCU_MATH1(sinh, sinhf)
EMCU_MATH1(cosh, coshf)
EMCU_MATH1(tanh, tanhf)
EMCU_MATH1(erf, erff)
EMCU_MATH1(erfc, erfcf)
EMCU_MATH1(floor, floorf)
EMCU_MATH1(ceil, ceilf)
EMCU_MATH1(rint, rintf)
EMCU_MATH1(trunc, truncf)
EMCU_MATH1(fabs, fabsf)
#undef EMCU_MATH1
#define EMCU_MATH2(name, fname)                                                        \
  __device__ __forceinline__ float m_##name(float x, float y) { return fname(x, y); }  \
  __device__ __forceinline__ double m_##name(double x, double y) { return name(x, y); }
EMCU_MATH2(pow, powf)
EMCU_MATH2(fmod, fmodf)
EMCU_MATH2(atan2, atan2f)
EMCU_MATH2(copysign, copysignf)
#undef EMCU_MATH2

template <class C> __device__ __forceinline__ bool is_nan(C x) { return x != x; }

// ---- elementwise launch -------------------------------------------------------------------
// One thread per element (grid-stride), operand pointers from the
// iteration's coalesced dims; a 1-D iteration (the contiguous case after
// coalescing) skips the index arithmetic.
template <int N>
__device__ __forceinline__ void operand_ptrs(const emcu_iter &it, int64_t i, char **p) {
  if (it.ndim == 1) {
#pragma unroll
    for (int k = 0; k < N; k++) p[k] = it.data[k] + i * it.strides[0][k];
    return;
  }
#pragma unroll
  for (int k = 0; k < N; k++) p[k] = it.data[k];
  for (int d = 0; d < it.ndim; d++) {
    int64_t n = it.shape[d], idx = i % n;
    i /= n;
#pragma unroll
    for (int k = 0; k < N; k++) p[k] += idx * it.strides[d][k];
  }
}

template <int N, class F>
__global__ void __launch_bounds__(256) elementwise_kernel(emcu_iter it, F f) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (; i < it.numel; i += step) {
    char *p[N];
    operand_ptrs<N>(it, i, p);
    f(p);
  }
}

inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b > (1 << 20)) b = 1 << 20;  // grid-stride beyond
  return (unsigned)(b > 0 ? b : 1);
}

template <int N, class F>
inline cudaError_t launch(const emcu_iter *it, F f, cudaStream_t s) {
  if (it->numel == 0) return cudaSuccess;
  elementwise_kernel<N, F><<<grid_for(it->numel), 256, 0, s>>>(*it, f);
  return cudaGetLastError();
}

}  // namespace emcu
