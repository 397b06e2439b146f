// CUDA kernels: copy with dtype conversion (every pair of dtypes) and fill.
// COPY is registered per destination dtype; attrs i[0] holds the source
// dtype (as core/cpu/copy.c). Conversions follow the CPU's rules
// (cu_common.cuh: float -> int saturates, NaN -> 0). FILL writes attrs s
// converted on the host exactly as the CPU does (em__store_scalar).
// Operands (out, in) / (out).
#include "core/cuda/cu_elementwise.cuh"

namespace emcu {

template <class TD, class TS>
struct ConvF {
  __device__ __forceinline__ void operator()(char **p) const {
    *(TD *)p[0] = convert<TD, TS>(*(const TS *)p[1]);
  }
};

template <class TD>
struct Copy {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    switch ((em_dtype)a->i[0]) {
      case EM_FLOAT32: return launch<2>(it, ConvF<TD, float>{}, s);
      case EM_FLOAT64: return launch<2>(it, ConvF<TD, double>{}, s);
      case EM_FLOAT16: return launch<2>(it, ConvF<TD, f16>{}, s);
      case EM_BFLOAT16: return launch<2>(it, ConvF<TD, bf16>{}, s);
      case EM_INT8: return launch<2>(it, ConvF<TD, int8_t>{}, s);
      case EM_INT16: return launch<2>(it, ConvF<TD, int16_t>{}, s);
      case EM_INT32: return launch<2>(it, ConvF<TD, int32_t>{}, s);
      case EM_INT64: return launch<2>(it, ConvF<TD, int64_t>{}, s);
      case EM_UINT8: return launch<2>(it, ConvF<TD, uint8_t>{}, s);
      case EM_BOOL: return launch<2>(it, ConvF<TD, bool>{}, s);
      default: return cudaErrorInvalidValue;
    }
  }
};

template <class T>
struct FillF {
  T v;
  __device__ __forceinline__ void operator()(char **p) const { *(T *)p[0] = v; }
};

template <int DT>
struct Fill {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    using T = typename Storage<DT>::T;
    T v;
    em__store_scalar(&v, (em_dtype)DT, a->s);  // f16/bf16: the bits, as ember stores them
    return launch<1>(it, FillF<T>{v}, s);
  }
};

}  // namespace emcu

extern "C" const emcu_elem_fn emcu_copy[EM_DTYPE_COUNT] = {
    &emcu::Copy<float>::run,   &emcu::Copy<double>::run,  &emcu::Copy<emcu::f16>::run,
    &emcu::Copy<emcu::bf16>::run, &emcu::Copy<int8_t>::run, &emcu::Copy<int16_t>::run,
    &emcu::Copy<int32_t>::run, &emcu::Copy<int64_t>::run, &emcu::Copy<uint8_t>::run,
    &emcu::Copy<bool>::run};

extern "C" const emcu_elem_fn emcu_fill[EM_DTYPE_COUNT] = {
    &emcu::Fill<EM_FLOAT32>::run, &emcu::Fill<EM_FLOAT64>::run, &emcu::Fill<EM_FLOAT16>::run,
    &emcu::Fill<EM_BFLOAT16>::run, &emcu::Fill<EM_INT8>::run,   &emcu::Fill<EM_INT16>::run,
    &emcu::Fill<EM_INT32>::run,   &emcu::Fill<EM_INT64>::run,   &emcu::Fill<EM_UINT8>::run,
    &emcu::Fill<EM_BOOL>::run};
