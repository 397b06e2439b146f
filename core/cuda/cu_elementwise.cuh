// Elementwise kernel plumbing: functor wrappers that load operands, apply
// an op in the compute type and store; launchers per (storage type, op);
// and the launcher tables (cu_kernels.h) built per dtype category, with
// NULL where the op has no kernel for a dtype (compile-time: invalid
// combinations are never instantiated).
#pragma once

#include "core/cuda/cu_common.cuh"

namespace emcu {

// An op is a class template Op<T> over the storage type, constructed on
// the host from the attrs, with bool_out (output bool instead of T) and a
// device operator() on compute-type values.

template <class T, class Op>
struct UnaryF {
  Op op;
  __device__ __forceinline__ void operator()(char **p) const {
    auto x = Ty<T>::load(*(const T *)p[1]);
    if constexpr (Op::bool_out)
      *(bool *)p[0] = op(x);
    else
      *(T *)p[0] = Ty<T>::store(op(x));
  }
};

template <class T, class Op>
struct BinaryF {
  Op op;
  __device__ __forceinline__ void operator()(char **p) const {
    auto x = Ty<T>::load(*(const T *)p[1]);
    auto y = Ty<T>::load(*(const T *)p[2]);
    if constexpr (Op::bool_out)
      *(bool *)p[0] = op(x, y);
    else
      *(T *)p[0] = Ty<T>::store(op(x, y));
  }
};

template <class T, template <class> class Op>
cudaError_t run_unary(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
  return launch<2>(it, UnaryF<T, Op<T>>{Op<T>(*a)}, s);
}
template <class T, template <class> class Op>
cudaError_t run_binary(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
  return launch<3>(it, BinaryF<T, Op<T>>{Op<T>(*a)}, s);
}

template <bool ok, class T, template <class> class Op>
constexpr emcu_elem_fn unary_entry() {
  if constexpr (ok)
    return &run_unary<T, Op>;
  else
    return nullptr;
}
template <bool ok, class T, template <class> class Op>
constexpr emcu_elem_fn binary_entry() {
  if constexpr (ok)
    return &run_binary<T, Op>;
  else
    return nullptr;
}
// A launcher template taking the whole iteration itself (ternary, index).
template <bool ok, class T, template <class> class L>
constexpr emcu_elem_fn custom_entry() {
  if constexpr (ok)
    return &L<T>::run;
  else
    return nullptr;
}

}  // namespace emcu

// The table name[dtype] for op Op: float types if F, integer types if I,
// bool if B (em_dtype order: f32 f64 f16 bf16 i8 i16 i32 i64 u8 bool).
#define EMCU_TABLE(name, ENTRY, Op, F, I, B)                                                    \
  extern "C" const emcu_elem_fn name[EM_DTYPE_COUNT] = {                                        \
      emcu::ENTRY<F, float, Op>(),   emcu::ENTRY<F, double, Op>(),  emcu::ENTRY<F, emcu::f16, Op>(), \
      emcu::ENTRY<F, emcu::bf16, Op>(), emcu::ENTRY<I, int8_t, Op>(), emcu::ENTRY<I, int16_t, Op>(), \
      emcu::ENTRY<I, int32_t, Op>(), emcu::ENTRY<I, int64_t, Op>(), emcu::ENTRY<I, uint8_t, Op>(),  \
      emcu::ENTRY<B, bool, Op>()};

// An op without attrs: Name<T> with compute type C and value x (and y).
#define EMCU_UOP(Name, BOOL_OUT, ...)                                    \
  template <class T>                                                     \
  struct Name {                                                          \
    using C = CT<T>;                                                     \
    static constexpr bool bool_out = BOOL_OUT;                           \
    __host__ explicit Name(const emcu_attrs &) {}                        \
    __device__ __forceinline__ auto operator()(C x) const { __VA_ARGS__ } \
  };
#define EMCU_BOP(Name, BOOL_OUT, ...)                                          \
  template <class T>                                                           \
  struct Name {                                                                \
    using C = CT<T>;                                                           \
    static constexpr bool bool_out = BOOL_OUT;                                 \
    __host__ explicit Name(const emcu_attrs &) {}                              \
    __device__ __forceinline__ auto operator()(C x, C y) const { __VA_ARGS__ } \
  };
