// CUDA kernels: ternary family (where, lerp, addcmul, addcdiv) and the
// index ops that are elementwise over the index's shape (gather, scatter,
// scatter with a value, scatter_add, masked_fill). Operands and attrs as
// the CPU kernels (core/cpu/ternary.c, core/cpu/index.c).
//
// Along-dim ops iterate over the index's shape with the dim left out and
// walk the dim in the kernel: i[0] = its length L, i[1] = the index's byte
// stride along it, i[2] = the indexed tensor's, i[3] = the walked
// operand's. Index values were validated by the front end. Duplicate
// indices: scatter keeps one of the values (unspecified which, as in
// PyTorch on CUDA); scatter_add accumulates with atomics.
#include "core/cuda/cu_elementwise.cuh"

namespace emcu {

// ---- where: out = cond ? a : b (values copied as stored; cond is bytes) -----------------------
template <class T>
struct WhereF {
  __device__ __forceinline__ void operator()(char **p) const {
    *(T *)p[0] = *(const uint8_t *)p[1] ? *(const T *)p[2] : *(const T *)p[3];
  }
};
template <class T>
struct Where {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<4>(it, WhereF<T>{}, s);
  }
};

// ---- lerp (PyTorch's two-sided form): i[0] = 1: scalar weight f[0],
// operands (out, a, b); else (out, a, b, w) -----------------------------------------------------
template <class C> __device__ __forceinline__ C lerp_c(C x, C y, C w) {
  return (w < (C)0.5 && w > (C)-0.5) ? x + w * (y - x) : y - (y - x) * ((C)1 - w);
}
template <class T>
struct LerpScalarF {
  double w;
  __device__ __forceinline__ void operator()(char **p) const {
    using C = CT<T>;
    C x = Ty<T>::load(*(const T *)p[1]), y = Ty<T>::load(*(const T *)p[2]);
    *(T *)p[0] = Ty<T>::store(lerp_c(x, y, (C)w));
  }
};
template <class T>
struct LerpTensorF {
  __device__ __forceinline__ void operator()(char **p) const {
    using C = CT<T>;
    C x = Ty<T>::load(*(const T *)p[1]), y = Ty<T>::load(*(const T *)p[2]),
      w = Ty<T>::load(*(const T *)p[3]);
    *(T *)p[0] = Ty<T>::store(lerp_c(x, y, w));
  }
};
template <class T>
struct Lerp {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    if (a->i[0]) return launch<3>(it, LerpScalarF<T>{a->f[0]}, s);
    return launch<4>(it, LerpTensorF<T>{}, s);
  }
};

// ---- addcmul / addcdiv: a + value * t1 * t2, a + value * t1 / t2;
// f[0] = value (float), i[0] = value (integer) --------------------------------------------------
template <class T, bool DIV>
struct AddcF {
  double fv;
  int64_t iv;
  __device__ __forceinline__ void operator()(char **p) const {
    using C = CT<T>;
    C x = Ty<T>::load(*(const T *)p[1]), y = Ty<T>::load(*(const T *)p[2]),
      z = Ty<T>::load(*(const T *)p[3]);
    if constexpr (is_float_v<T>) {
      C v = (C)fv;
      *(T *)p[0] = Ty<T>::store(DIV ? x + v * y / z : x + v * y * z);
    } else {
      *(T *)p[0] = wadd(x, wmul(wmul((C)iv, y), z));
    }
  }
};
template <class T>
struct Addcmul {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<4>(it, AddcF<T, false>{a->f[0], a->i[0]}, s);
  }
};
template <class T>
struct Addcdiv {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<4>(it, AddcF<T, true>{a->f[0], a->i[0]}, s);
  }
};

// ---- atomics for scatter_add: *p = ST(LD(*p) + LD(v)) (bool: or) ------------------------------
// 1- and 2-byte types update their aligned 32-bit word with compare-and-swap.
template <class T>
__device__ __forceinline__ void atomic_add_small(T *p, T v) {
  uintptr_t addr = (uintptr_t)p;
  unsigned int *word = (unsigned int *)(addr & ~(uintptr_t)3);
  const unsigned shift = (unsigned)(addr & 3) * 8;
  const unsigned mask = (sizeof(T) == 1 ? 0xffu : 0xffffu) << shift;
  unsigned int old = *word, assumed;
  do {
    assumed = old;
    T cur;
    uint32_t bits = (assumed & mask) >> shift;
    if constexpr (sizeof(T) == 1) {
      uint8_t b = (uint8_t)bits;
      memcpy(&cur, &b, 1);
    } else {
      uint16_t b = (uint16_t)bits;
      memcpy(&cur, &b, 2);
    }
    T next;
    if constexpr (is_bool_v<T>)
      next = cur | v;
    else if constexpr (is_float_v<T>)
      next = Ty<T>::store(Ty<T>::load(cur) + Ty<T>::load(v));
    else
      next = wadd(cur, v);
    uint32_t nb = 0;
    memcpy(&nb, &next, sizeof(T));
    old = atomicCAS(word, assumed, (assumed & ~mask) | ((nb << shift) & mask));
  } while (old != assumed);
}

template <class T>
__device__ __forceinline__ void atomic_accumulate(T *p, T v) {
  if constexpr (std::is_same<T, float>::value) {
    atomicAdd(p, v);
  } else if constexpr (std::is_same<T, double>::value) {
    atomicAdd(p, v);
  } else if constexpr (std::is_same<T, int32_t>::value) {
    atomicAdd((int *)p, (int)v);
  } else if constexpr (std::is_same<T, int64_t>::value) {
    atomicAdd((unsigned long long *)p, (unsigned long long)v);  // wraps, as the CPU
  } else if constexpr (std::is_same<T, f16>::value) {
    atomicAdd((__half *)p, __ushort_as_half(v.bits));
  } else if constexpr (std::is_same<T, bf16>::value) {
    __nv_bfloat16 b;
    memcpy(&b, &v.bits, 2);
    atomicAdd((__nv_bfloat16 *)p, b);
  } else {
    atomic_add_small(p, v);
  }
}

// ---- along-dim ops ---------------------------------------------------------------------------------
struct DimGeom {
  int64_t L, si, sx, sw;
};
__device__ __forceinline__ int64_t idx_at(const char *p) { return *(const int64_t *)p; }

template <class T>
struct GatherF {  // (out, index, self): out[j] = self[index[j]]
  DimGeom g;
  __device__ void operator()(char **p) const {
    for (int64_t j = 0; j < g.L; j++)
      *(T *)(p[0] + j * g.sw) = *(const T *)(p[2] + idx_at(p[1] + j * g.si) * g.sx);
  }
};
template <class T>
struct ScatterF {  // (self, index, src): self[index[j]] = src[j]
  DimGeom g;
  __device__ void operator()(char **p) const {
    for (int64_t j = 0; j < g.L; j++)
      *(T *)(p[0] + idx_at(p[1] + j * g.si) * g.sx) = *(const T *)(p[2] + j * g.sw);
  }
};
template <class T>
struct ScatterValueF {  // (self, index): self[index[j]] = v
  DimGeom g;
  T v;
  __device__ void operator()(char **p) const {
    for (int64_t j = 0; j < g.L; j++) *(T *)(p[0] + idx_at(p[1] + j * g.si) * g.sx) = v;
  }
};
template <class T>
struct ScatterAddF {  // (self, index, src): self[index[j]] += src[j]
  DimGeom g;
  __device__ void operator()(char **p) const {
    for (int64_t j = 0; j < g.L; j++)
      atomic_accumulate((T *)(p[0] + idx_at(p[1] + j * g.si) * g.sx),
                        *(const T *)(p[2] + j * g.sw));
  }
};
template <class T>
struct MaskedFillF {  // (out, self, mask bytes): out = mask ? v : self
  T v;
  __device__ __forceinline__ void operator()(char **p) const {
    *(T *)p[0] = *(const uint8_t *)p[2] ? v : *(const T *)p[1];
  }
};

inline DimGeom geom(const emcu_attrs *a) { return DimGeom{a->i[0], a->i[1], a->i[2], a->i[3]}; }

template <class T>
T scalar_as(const emcu_attrs *a, em_dtype dt) {
  T v;
  em__store_scalar(&v, dt, a->s);
  return v;
}

template <class T> constexpr em_dtype dtype_of();
template <> constexpr em_dtype dtype_of<float>() { return EM_FLOAT32; }
template <> constexpr em_dtype dtype_of<double>() { return EM_FLOAT64; }
template <> constexpr em_dtype dtype_of<f16>() { return EM_FLOAT16; }
template <> constexpr em_dtype dtype_of<bf16>() { return EM_BFLOAT16; }
template <> constexpr em_dtype dtype_of<int8_t>() { return EM_INT8; }
template <> constexpr em_dtype dtype_of<int16_t>() { return EM_INT16; }
template <> constexpr em_dtype dtype_of<int32_t>() { return EM_INT32; }
template <> constexpr em_dtype dtype_of<int64_t>() { return EM_INT64; }
template <> constexpr em_dtype dtype_of<uint8_t>() { return EM_UINT8; }
template <> constexpr em_dtype dtype_of<bool>() { return EM_BOOL; }

template <class T>
struct Gather {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<3>(it, GatherF<T>{geom(a)}, s);
  }
};
template <class T>
struct Scatter {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<3>(it, ScatterF<T>{geom(a)}, s);
  }
};
template <class T>
struct ScatterValue {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<2>(it, ScatterValueF<T>{geom(a), scalar_as<T>(a, dtype_of<T>())}, s);
  }
};
template <class T>
struct ScatterAdd {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<3>(it, ScatterAddF<T>{geom(a)}, s);
  }
};
template <class T>
struct MaskedFill {
  static cudaError_t run(const emcu_iter *it, const emcu_attrs *a, cudaStream_t s) {
    return launch<3>(it, MaskedFillF<T>{scalar_as<T>(a, dtype_of<T>())}, s);
  }
};

}  // namespace emcu

using namespace emcu;

EMCU_TABLE(emcu_where, custom_entry, Where, true, true, true)
EMCU_TABLE(emcu_lerp, custom_entry, Lerp, true, false, false)
EMCU_TABLE(emcu_addcmul, custom_entry, Addcmul, true, true, false)
EMCU_TABLE(emcu_addcdiv, custom_entry, Addcdiv, true, false, false)
EMCU_TABLE(emcu_gather, custom_entry, Gather, true, true, true)
EMCU_TABLE(emcu_scatter, custom_entry, Scatter, true, true, true)
EMCU_TABLE(emcu_scatter_value, custom_entry, ScatterValue, true, true, true)
EMCU_TABLE(emcu_scatter_add, custom_entry, ScatterAdd, true, true, true)
EMCU_TABLE(emcu_masked_fill, custom_entry, MaskedFill, true, true, true)
