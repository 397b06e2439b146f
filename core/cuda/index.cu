// CUDA kernels: row gather / scatter of the index family (index_select,
// advanced indexing, index_add, index_put; geometry in cu_kernels.h and
// core/cpu/index.c), repeat, and small helpers (integer divide for the
// nccl backend's avg, scaling for matmul with k == 0).
#include "core/cuda/cu_common.cuh"

namespace emcu {

struct Rows {
  int np, nq;
  int64_t psize[EMCU_MAX_DIMS], pstride[EMCU_MAX_DIMS];
  int64_t qsize[EMCU_MAX_DIMS], qstride[EMCU_MAX_DIMS];
  int64_t nP, nQ, nb;
  const int64_t *off;
};

static Rows rows_of(const emcu_rows *r) {
  Rows w;
  w.np = r->np;
  w.nq = r->nq;
  for (int d = 0; d < EMCU_MAX_DIMS; d++) {
    w.psize[d] = r->psize[d];
    w.pstride[d] = r->pstride[d];
    w.qsize[d] = r->qsize[d];
    w.qstride[d] = r->qstride[d];
  }
  w.nP = r->nP;
  w.nQ = r->nQ;
  w.nb = r->nb;
  w.off = r->off;
  return w;
}

__device__ __forceinline__ int64_t lin_offset(int64_t lin, int n, const int64_t *size,
                                              const int64_t *stride) {
  int64_t o = 0;
  for (int k = n - 1; k >= 0; k--) {
    o += (lin % size[k]) * stride[k];
    lin /= size[k];
  }
  return o;
}

// Element i of the [P, nb, Q] walk: its offset (elements) in the indexed
// tensor; i is also its position in the contiguous [P, nb, Q] operand.
__device__ __forceinline__ int64_t row_offset(const Rows &r, int64_t i) {
  int64_t q = i % r.nQ, t = i / r.nQ, b = t % r.nb, p = t / r.nb;
  return lin_offset(p, r.np, r.psize, r.pstride) + r.off[b] + lin_offset(q, r.nq, r.qsize, r.qstride);
}

template <class W>  // W: an unsigned word of the element size
__global__ void __launch_bounds__(256) rows_gather_kernel(W *out, const W *src, Rows r) {
  const int64_t n = r.nP * r.nb * r.nQ;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = src[row_offset(r, i)];
}

template <class T>
__device__ __forceinline__ void accumulate(T *p, T v, CT<T> alpha) {
  // *p += alpha * v with atomics (float types, int32, int64)
  if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value) {
    atomicAdd(p, alpha * v);
  } else if constexpr (std::is_same<T, f16>::value) {
    atomicAdd((__half *)p, __float2half_rn(alpha * Ty<T>::load(v)));
  } else if constexpr (std::is_same<T, bf16>::value) {
    atomicAdd((__nv_bfloat16 *)p, __float2bfloat16_rn(alpha * Ty<T>::load(v)));
  } else if constexpr (std::is_same<T, int32_t>::value) {
    atomicAdd((int *)p, (int)wmul(alpha, v));
  } else if constexpr (std::is_same<T, int64_t>::value) {
    atomicAdd((unsigned long long *)p, (unsigned long long)wmul(alpha, v));
  }
}

template <class T>
__global__ void __launch_bounds__(256)
    rows_scatter_kernel(T *dst, const T *vals, Rows r, bool acc, bool scalar, CT<T> alpha) {
  const int64_t n = r.nP * r.nb * r.nQ;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    T v = vals[scalar ? 0 : i];
    T *d = dst + row_offset(r, i);
    if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value ||
                  std::is_same<T, f16>::value || std::is_same<T, bf16>::value ||
                  std::is_same<T, int32_t>::value || std::is_same<T, int64_t>::value) {
      if (acc) {
        accumulate(d, v, alpha);
        continue;
      }
    }
    *d = v;
  }
}

struct RepeatGeo {
  int nd;
  int64_t oshape[EMCU_MAX_DIMS], ishape[EMCU_MAX_DIMS], istride[EMCU_MAX_DIMS];
  int64_t n;
};

template <class W>
__global__ void __launch_bounds__(256) repeat_kernel(W *out, const W *src, RepeatGeo g) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < g.n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t lin = i, off = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
      int64_t c = lin % g.oshape[d];
      lin /= g.oshape[d];
      off += (c % g.ishape[d]) * g.istride[d];
    }
    out[i] = src[off];
  }
}

template <class T>
__global__ void __launch_bounds__(256) div_trunc_kernel(T *p, int64_t n, int64_t divisor) {
  /* in int64: a world of 256 must not wrap to 0 in an 8-bit type */
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    p[i] = (T)((int64_t)p[i] / divisor);
}

template <class T>
__global__ void __launch_bounds__(256) scale_kernel(T *p, int64_t n, double beta) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    using C = CT<T>;
    p[i] = Ty<T>::store((C)((C)beta * Ty<T>::load(p[i])));
  }
}

}  // namespace emcu

using namespace emcu;

extern "C" cudaError_t emcu_rows_gather(char *out, const char *src, const emcu_rows *r,
                                        int64_t esize, cudaStream_t s) {
  Rows w = rows_of(r);
  int64_t n = w.nP * w.nb * w.nQ;
  if (n == 0) return cudaSuccess;
  unsigned grid = grid_for(n);
  switch (esize) {
    case 1: rows_gather_kernel<uint8_t><<<grid, 256, 0, s>>>((uint8_t *)out, (const uint8_t *)src, w); break;
    case 2: rows_gather_kernel<uint16_t><<<grid, 256, 0, s>>>((uint16_t *)out, (const uint16_t *)src, w); break;
    case 4: rows_gather_kernel<uint32_t><<<grid, 256, 0, s>>>((uint32_t *)out, (const uint32_t *)src, w); break;
    case 8: rows_gather_kernel<uint64_t><<<grid, 256, 0, s>>>((uint64_t *)out, (const uint64_t *)src, w); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

extern "C" bool emcu_rows_scatter_supported(em_dtype dt, bool accumulate) {
  if (!accumulate) return dt >= 0 && dt < EM_DTYPE_COUNT;
  return dt == EM_FLOAT32 || dt == EM_FLOAT64 || dt == EM_FLOAT16 || dt == EM_BFLOAT16 ||
         dt == EM_INT32 || dt == EM_INT64;
}

template <class T>
static cudaError_t scatter_typed(char *dst, const char *vals, const Rows &w, bool acc, bool scalar,
                                 em_scalar alpha, cudaStream_t s) {
  using C = CT<T>;
  C al;
  if constexpr (is_float_v<T>) {
    al = (C)(alpha.kind == EM_SCALAR_FLOAT ? alpha.v.f : (double)alpha.v.i);
  } else {
    T v;  // as PyTorch casts alpha to the dtype
    em__store_scalar(&v, std::is_same<T, int32_t>::value ? EM_INT32 : EM_INT64, alpha);
    al = v;
  }
  int64_t n = w.nP * w.nb * w.nQ;
  rows_scatter_kernel<T><<<grid_for(n), 256, 0, s>>>((T *)dst, (const T *)vals, w, acc, scalar, al);
  return cudaGetLastError();
}

extern "C" cudaError_t emcu_rows_scatter(em_dtype dt, char *dst, const char *vals,
                                         const emcu_rows *r, bool accumulate, bool scalar,
                                         em_scalar alpha, cudaStream_t s) {
  Rows w = rows_of(r);
  if (w.nP * w.nb * w.nQ == 0) return cudaSuccess;
  if (!emcu_rows_scatter_supported(dt, accumulate)) return cudaErrorNotSupported;
  switch (dt) {
    case EM_FLOAT32: return scatter_typed<float>(dst, vals, w, accumulate, scalar, alpha, s);
    case EM_FLOAT64: return scatter_typed<double>(dst, vals, w, accumulate, scalar, alpha, s);
    case EM_FLOAT16: return scatter_typed<f16>(dst, vals, w, accumulate, scalar, alpha, s);
    case EM_BFLOAT16: return scatter_typed<bf16>(dst, vals, w, accumulate, scalar, alpha, s);
    case EM_INT32: return scatter_typed<int32_t>(dst, vals, w, accumulate, scalar, alpha, s);
    case EM_INT64: return scatter_typed<int64_t>(dst, vals, w, accumulate, scalar, alpha, s);
    default: break;
  }
  /* plain puts of the other dtypes move bytes */
  size_t es = em_dtype_size(dt);
  int64_t n = w.nP * w.nb * w.nQ;
  if (es == 1)
    rows_scatter_kernel<uint8_t><<<grid_for(n), 256, 0, s>>>((uint8_t *)dst, (const uint8_t *)vals, w, false, scalar, 0);
  else
    rows_scatter_kernel<int16_t><<<grid_for(n), 256, 0, s>>>((int16_t *)dst, (const int16_t *)vals, w, false, scalar, 0);
  return cudaGetLastError();
}

extern "C" cudaError_t emcu_repeat(char *out, const char *src, int nd, const int64_t *shape,
                                   const int64_t *reps, int64_t esize, cudaStream_t s) {
  RepeatGeo g;
  g.nd = nd;
  g.n = 1;
  int64_t st = 1;
  for (int d = nd - 1; d >= 0; d--) {
    g.ishape[d] = shape[d];
    g.oshape[d] = shape[d] * reps[d];
    g.istride[d] = st;
    st *= shape[d];
  }
  for (int d = 0; d < nd; d++) g.n *= g.oshape[d];
  if (g.n == 0) return cudaSuccess;
  unsigned grid = grid_for(g.n);
  switch (esize) {
    case 1: repeat_kernel<uint8_t><<<grid, 256, 0, s>>>((uint8_t *)out, (const uint8_t *)src, g); break;
    case 2: repeat_kernel<uint16_t><<<grid, 256, 0, s>>>((uint16_t *)out, (const uint16_t *)src, g); break;
    case 4: repeat_kernel<uint32_t><<<grid, 256, 0, s>>>((uint32_t *)out, (const uint32_t *)src, g); break;
    case 8: repeat_kernel<uint64_t><<<grid, 256, 0, s>>>((uint64_t *)out, (const uint64_t *)src, g); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t emcu_div_trunc(void *buf, int64_t n, em_dtype dt, int64_t divisor,
                                      cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  unsigned grid = grid_for(n);
  switch (dt) {
    case EM_INT8: div_trunc_kernel<int8_t><<<grid, 256, 0, s>>>((int8_t *)buf, n, divisor); break;
    case EM_UINT8: div_trunc_kernel<uint8_t><<<grid, 256, 0, s>>>((uint8_t *)buf, n, divisor); break;
    case EM_INT16: div_trunc_kernel<int16_t><<<grid, 256, 0, s>>>((int16_t *)buf, n, divisor); break;
    case EM_INT32: div_trunc_kernel<int32_t><<<grid, 256, 0, s>>>((int32_t *)buf, n, divisor); break;
    case EM_INT64: div_trunc_kernel<int64_t><<<grid, 256, 0, s>>>((int64_t *)buf, n, divisor); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t emcu_scale(void *buf, int64_t n, em_dtype dt, double beta, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  unsigned grid = grid_for(n);
  switch (dt) {
    case EM_FLOAT32: scale_kernel<float><<<grid, 256, 0, s>>>((float *)buf, n, beta); break;
    case EM_FLOAT64: scale_kernel<double><<<grid, 256, 0, s>>>((double *)buf, n, beta); break;
    case EM_FLOAT16: scale_kernel<f16><<<grid, 256, 0, s>>>((f16 *)buf, n, beta); break;
    case EM_BFLOAT16: scale_kernel<bf16><<<grid, 256, 0, s>>>((bf16 *)buf, n, beta); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
