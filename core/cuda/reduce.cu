// CUDA kernels: reductions (sum, mean, prod, amax/amin, all/any,
// count_nonzero, norm, var/std, logsumexp, max/min with indices) and the
// along-dim ops (softmax, log_softmax, cumsum, cumprod). Semantics as the
// CPU kernels (core/cpu/reduce.c): NaN propagates through max/min, argmax
// takes the first occurrence and the first NaN beats everything, integer
// sums and products wrap in 64 bits, empty reductions give the identity
// (mean / var: NaN, norm: 0, logsumexp: -inf). Float types accumulate in
// double (sums, products, norms, var, logsumexp).
//
// Geometry (cu_kernels.h, emcu_reduce_args): output o walks the kept dims,
// j the reduced dims, both row-major over the input's dims.
//
// Scheme: G threads (1, 32 or 256) fold one output's elements, combined
// through shared memory. When there are few outputs and many elements,
// each output is split into P parts folded by separate blocks into
// partial accumulators (scratch), which a second kernel combines.
// var/std and logsumexp are two such reductions: the mean / max (the
// "center") first, then the squared deviations / exp(x - max).
#include "core/cuda/cu_common.cuh"

namespace emcu {

struct Geo {
  int nkeep, nred;
  int64_t ks[EMCU_MAX_DIMS], kst[EMCU_MAX_DIMS], rs[EMCU_MAX_DIMS], rst[EMCU_MAX_DIMS];
  int64_t nout, nr;
};

static Geo geo_of(const emcu_reduce_args *r) {
  Geo g;
  g.nkeep = r->nkeep;
  g.nred = r->nred;
  for (int d = 0; d < EMCU_MAX_DIMS; d++) {
    g.ks[d] = r->keep_shape[d];
    g.kst[d] = r->keep_stride[d];
    g.rs[d] = r->red_shape[d];
    g.rst[d] = r->red_stride[d];
  }
  g.nout = r->nout;
  g.nr = r->nr;
  return g;
}

__device__ __forceinline__ int64_t keep_offset(const Geo &g, int64_t o) {
  int64_t off = 0;
  for (int d = g.nkeep - 1; d >= 0; d--) {
    off += (o % g.ks[d]) * g.kst[d];
    o /= g.ks[d];
  }
  return off;
}
__device__ __forceinline__ int64_t red_offset(const Geo &g, int64_t j) {
  if (g.nred == 1) return j * g.rst[0];
  int64_t off = 0;
  for (int d = g.nred - 1; d >= 0; d--) {
    off += (j % g.rs[d]) * g.rst[d];
    j /= g.rs[d];
  }
  return off;
}

// ---- reducers ---------------------------------------------------------------------------------
// Acc init(); Acc load(T x, int64_t j, int64_t o); Acc combine(Acc, Acc);
// void write(int64_t o, Acc) (the final value for output o).

__device__ __forceinline__ double max_nan(double a, double b) { return a != a ? a : b != b ? b : a < b ? b : a; }
__device__ __forceinline__ double min_nan(double a, double b) { return a != a ? a : b != b ? b : b < a ? b : a; }

template <class T>
struct SumR {  // out: T for floats, int64 otherwise
  using Acc = typename std::conditional<is_float_v<T>, double, int64_t>::type;
  char *out;
  int64_t nr;
  bool mean;
  __device__ Acc init() const { return 0; }
  __device__ Acc load(T x, int64_t, int64_t) const { return (Acc)Ty<T>::load(x); }
  __device__ Acc combine(Acc a, Acc b) const {
    if constexpr (is_float_v<T>)
      return a + b;
    else
      return (Acc)((uint64_t)a + (uint64_t)b);
  }
  __device__ void write(int64_t o, Acc a) const {
    if constexpr (is_float_v<T>)
      ((T *)out)[o] = Ty<T>::store((CT<T>)(mean ? a / (double)nr : a));
    else
      ((int64_t *)out)[o] = a;
  }
};

template <class T>
struct ProdR {
  using Acc = typename std::conditional<is_float_v<T>, double, int64_t>::type;
  char *out;
  __device__ Acc init() const { return 1; }
  __device__ Acc load(T x, int64_t, int64_t) const { return (Acc)Ty<T>::load(x); }
  __device__ Acc combine(Acc a, Acc b) const {
    if constexpr (is_float_v<T>)
      return a * b;
    else
      return (Acc)((uint64_t)a * (uint64_t)b);
  }
  __device__ void write(int64_t o, Acc a) const {
    if constexpr (is_float_v<T>)
      ((T *)out)[o] = Ty<T>::store((CT<T>)a);
    else
      ((int64_t *)out)[o] = a;
  }
};

template <class T, bool MAX>
struct ExtremeR {  // amax / amin, NaN-propagating; out T
  using Acc = CT<T>;
  char *out;
  __device__ Acc init() const {
    if constexpr (is_float_v<T>)
      return MAX ? (Acc)-INFINITY : (Acc)INFINITY;
    else
      return MAX ? Lim<Acc>::lo() : Lim<Acc>::hi();
  }
  __device__ Acc load(T x, int64_t, int64_t) const { return Ty<T>::load(x); }
  __device__ Acc combine(Acc a, Acc b) const {
    if constexpr (is_float_v<T>) {
      if (a != a) return a;
      if (b != b) return b;
    }
    if constexpr (MAX)
      return a < b ? b : a;
    else
      return b < a ? b : a;
  }
  __device__ void write(int64_t o, Acc a) const { ((T *)out)[o] = Ty<T>::store(a); }
};

template <class T, int KIND>  // 0 all, 1 any, 2 count_nonzero
struct LogicR {
  using Acc = int64_t;
  char *out;
  __device__ Acc init() const { return KIND == 0 ? 1 : 0; }
  __device__ Acc load(T x, int64_t, int64_t) const { return Ty<T>::load(x) != 0; }
  __device__ Acc combine(Acc a, Acc b) const {
    return KIND == 0 ? (a & b) : KIND == 1 ? (a | b) : a + b;
  }
  __device__ void write(int64_t o, Acc a) const {
    if (KIND == 2)
      ((int64_t *)out)[o] = a;
    else
      ((uint8_t *)out)[o] = (uint8_t)(a != 0);  // bool or uint8: one byte 0/1
  }
};

enum { P_ZERO, P_ONE, P_TWO, P_INF, P_NEGINF, P_GEN };
static int norm_kind(double p) {
  if (p == 0) return P_ZERO;
  if (p == 1) return P_ONE;
  if (p == 2) return P_TWO;
  if (p == INFINITY) return P_INF;
  if (p == -INFINITY) return P_NEGINF;
  return P_GEN;
}

template <class T>
struct NormR {
  using Acc = double;
  char *out;
  int kind;
  double p;
  int64_t nr;
  __device__ Acc init() const { return kind == P_NEGINF ? INFINITY : 0; }
  __device__ Acc load(T x, int64_t, int64_t) const {
    double v = (double)Ty<T>::load(x), a = fabs(v);
    switch (kind) {
      case P_ZERO: return v != 0;
      case P_ONE:
      case P_INF:
      case P_NEGINF: return a;
      case P_TWO: return v * v;
      default: return pow(a, p);
    }
  }
  __device__ Acc combine(Acc a, Acc b) const {
    if (kind == P_INF) return max_nan(a, b);
    if (kind == P_NEGINF) return min_nan(a, b);
    return a + b;
  }
  __device__ void write(int64_t o, Acc a) const {
    double v = a;
    if (nr == 0)
      v = 0;
    else if (kind == P_TWO)
      v = sqrt(a);
    else if (kind == P_GEN)
      v = pow(a, 1.0 / p);
    ((T *)out)[o] = Ty<T>::store((CT<T>)v);
  }
};

// The center of a two-pass reduction into center[o] (double).
template <class T>
struct MeanCenterR {
  using Acc = double;
  double *center;
  int64_t nr;
  __device__ Acc init() const { return 0; }
  __device__ Acc load(T x, int64_t, int64_t) const { return (double)Ty<T>::load(x); }
  __device__ Acc combine(Acc a, Acc b) const { return a + b; }
  __device__ void write(int64_t o, Acc a) const { center[o] = a / (double)nr; }
};
template <class T>
struct MaxCenterR {
  using Acc = double;
  double *center;
  __device__ Acc init() const { return -INFINITY; }
  __device__ Acc load(T x, int64_t, int64_t) const { return (double)Ty<T>::load(x); }
  __device__ Acc combine(Acc a, Acc b) const { return max_nan(a, b); }
  __device__ void write(int64_t o, Acc a) const { center[o] = a; }
};

template <class T>
struct VarR {  // sum (x - mean)^2 / max(0, N - correction); std: sqrt
  using Acc = double;
  char *out;
  const double *center;
  double correction;
  int64_t nr;
  bool std_;
  __device__ Acc init() const { return 0; }
  __device__ Acc load(T x, int64_t, int64_t o) const {
    double d = (double)Ty<T>::load(x) - center[o];
    return d * d;
  }
  __device__ Acc combine(Acc a, Acc b) const { return a + b; }
  __device__ void write(int64_t o, Acc a) const {
    double div = (double)nr - correction;
    double v = a / (div > 0 ? div : 0);
    ((T *)out)[o] = Ty<T>::store((CT<T>)(std_ ? sqrt(v) : v));
  }
};

template <class T>
struct LseR {  // max + log(sum exp(x - max)); a NaN or infinite max is the result
  using Acc = double;
  char *out;
  const double *center;
  __device__ Acc init() const { return 0; }
  __device__ Acc load(T x, int64_t, int64_t o) const {
    double m = center[o];
    if (m != m || isinf(m)) return 0;
    return exp((double)Ty<T>::load(x) - m);
  }
  __device__ Acc combine(Acc a, Acc b) const { return a + b; }
  __device__ void write(int64_t o, Acc a) const {
    double m = center[o];
    double v = (m != m || isinf(m)) ? m : m + log(a);
    ((T *)out)[o] = Ty<T>::store((CT<T>)v);
  }
};

template <class C>
struct ArgAcc {
  C v;
  int64_t i;  // -1: nothing seen
};

template <class T, bool MAX>
struct ArgR {  // values (out0, may be NULL) and int64 indices (out1)
  using C = CT<T>;
  using Acc = ArgAcc<C>;
  char *out0, *out1;
  __device__ Acc init() const { return Acc{C(), -1}; }
  __device__ Acc load(T x, int64_t j, int64_t) const { return Acc{Ty<T>::load(x), j}; }
  __device__ static bool better(const Acc &b, const Acc &a) {  // is b better than a?
    if constexpr (is_float_v<T>) {
      bool an = a.v != a.v, bn = b.v != b.v;
      if (an || bn) return bn && (!an || b.i < a.i);
    }
    if (b.v == a.v) return b.i < a.i;
    return MAX ? a.v < b.v : b.v < a.v;
  }
  __device__ Acc combine(Acc a, Acc b) const {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    return better(b, a) ? b : a;
  }
  __device__ void write(int64_t o, Acc a) const {
    if (out0) ((T *)out0)[o] = Ty<T>::store(a.v);
    if (out1) ((int64_t *)out1)[o] = a.i < 0 ? 0 : a.i;
  }
};

// ---- the kernels ----------------------------------------------------------------------------------

// G threads per output, 256 / G outputs per block. parts > 1: block b folds
// part (b % parts) of output (b / parts) into partial[b] (no write).
template <class T, class R, int G>
__global__ void __launch_bounds__(256)
    reduce_kernel(Geo g, const T *src, R r, int64_t parts, typename R::Acc *partial) {
  using Acc = typename R::Acc;
  constexpr int PER = 256 / G;
  __shared__ __align__(16) unsigned char smem[256 * sizeof(Acc)];
  Acc *sh = reinterpret_cast<Acc *>(smem);
  const int lane = threadIdx.x % G, slot = threadIdx.x / G;
  int64_t o, j0 = 0, j1 = g.nr;
  if (parts > 1) {  // G == 256: one output part per block
    o = (int64_t)blockIdx.x / parts;
    int64_t q = (int64_t)blockIdx.x % parts, chunk = (g.nr + parts - 1) / parts;
    j0 = q * chunk;
    j1 = j0 + chunk < g.nr ? j0 + chunk : g.nr;
  } else {
    o = (int64_t)blockIdx.x * PER + slot;
  }
  Acc acc = r.init();
  if (o < g.nout) {
    const int64_t base = keep_offset(g, o);
    for (int64_t j = j0 + lane; j < j1; j += G) acc = r.combine(acc, r.load(src[base + red_offset(g, j)], j, o));
  }
  if constexpr (G > 1) {
    sh[threadIdx.x] = acc;
    __syncthreads();
#pragma unroll
    for (int w = G / 2; w > 0; w /= 2) {
      if (lane < w) sh[threadIdx.x] = r.combine(sh[threadIdx.x], sh[threadIdx.x + w]);
      __syncthreads();
    }
    acc = sh[threadIdx.x];
  }
  if (lane != 0 || o >= g.nout) return;
  if (parts > 1)
    partial[blockIdx.x] = acc;
  else
    r.write(o, acc);
}

// Combines parts partials per output (G = 32 threads per output).
template <class R>
__global__ void __launch_bounds__(256)
    combine_kernel(int64_t nout, int64_t parts, R r, const typename R::Acc *partial) {
  using Acc = typename R::Acc;
  __shared__ __align__(16) unsigned char smem[256 * sizeof(Acc)];
  Acc *sh = reinterpret_cast<Acc *>(smem);
  const int lane = threadIdx.x % 32, slot = threadIdx.x / 32;
  int64_t o = (int64_t)blockIdx.x * 8 + slot;
  Acc acc = r.init();
  if (o < nout)
    for (int64_t q = lane; q < parts; q += 32) acc = r.combine(acc, partial[o * parts + q]);
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int w = 16; w > 0; w /= 2) {
    if (lane < w) sh[threadIdx.x] = r.combine(sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  if (lane == 0 && o < nout) r.write(o, sh[threadIdx.x]);
}

// Parts per output: split only when the outputs alone cannot fill the GPU
// and there is enough work per part.
static int64_t split_parts(int64_t nout, int64_t nr) {
  const int64_t target_blocks = 1024, min_per_part = 8192;
  if (nr < 2 * min_per_part || nout >= target_blocks / 4) return 1;
  int64_t p = (target_blocks + nout - 1) / nout;
  int64_t pmax = nr / min_per_part;
  return p < pmax ? p : pmax;
}

constexpr size_t MAX_ACC = 16;  // the largest Acc (ArgAcc<double>)

template <class T, class R>
cudaError_t run(const Geo &g, const T *src, R r, void *partial_mem, cudaStream_t s) {
  using Acc = typename R::Acc;
  static_assert(sizeof(Acc) <= MAX_ACC, "scratch sizing");
  const int64_t parts = split_parts(g.nout, g.nr);
  if (parts > 1) {
    Acc *partial = (Acc *)partial_mem;
    reduce_kernel<T, R, 256><<<(unsigned)(g.nout * parts), 256, 0, s>>>(g, src, r, parts, partial);
    combine_kernel<R><<<(unsigned)((g.nout + 7) / 8), 256, 0, s>>>(g.nout, parts, r, partial);
  } else if (g.nr >= 1024) {
    reduce_kernel<T, R, 256><<<(unsigned)g.nout, 256, 0, s>>>(g, src, r, 1, nullptr);
  } else if (g.nr >= 32) {
    reduce_kernel<T, R, 32><<<(unsigned)((g.nout + 7) / 8), 256, 0, s>>>(g, src, r, 1, nullptr);
  } else {
    reduce_kernel<T, R, 1><<<(unsigned)((g.nout + 255) / 256), 256, 0, s>>>(g, src, r, 1, nullptr);
  }
  return cudaGetLastError();
}

// Per dtype: every op the input dtype supports (the same sets as the CPU).
template <class T>
cudaError_t reduce_typed(emcu_reduce_op op, const emcu_reduce_args *ra, void *scratch,
                         cudaStream_t s) {
  const Geo g = geo_of(ra);
  const T *src = (const T *)ra->src;
  double *center = (double *)scratch;
  void *partial = scratch ? (void *)((char *)scratch + ((size_t)g.nout * sizeof(double) + 15) / 16 * 16)
                          : nullptr;
  switch (op) {
    case EMCU_SUM: return run(g, src, SumR<T>{ra->out0, g.nr, false}, partial, s);
    case EMCU_PROD: return run(g, src, ProdR<T>{ra->out0}, partial, s);
    case EMCU_AMAX: return run(g, src, ExtremeR<T, true>{ra->out0}, partial, s);
    case EMCU_AMIN: return run(g, src, ExtremeR<T, false>{ra->out0}, partial, s);
    case EMCU_ALL: return run(g, src, LogicR<T, 0>{ra->out0}, partial, s);
    case EMCU_ANY: return run(g, src, LogicR<T, 1>{ra->out0}, partial, s);
    case EMCU_COUNT_NONZERO: return run(g, src, LogicR<T, 2>{ra->out0}, partial, s);
    case EMCU_ARGMAX: return run(g, src, ArgR<T, true>{ra->out0, ra->out1}, partial, s);
    case EMCU_ARGMIN: return run(g, src, ArgR<T, false>{ra->out0, ra->out1}, partial, s);
    default: break;
  }
  if constexpr (is_float_v<T>) {
    switch (op) {
      case EMCU_MEAN: return run(g, src, SumR<T>{ra->out0, g.nr, true}, partial, s);
      case EMCU_NORM:
        return run(g, src, NormR<T>{ra->out0, norm_kind(ra->p), ra->p, g.nr}, partial, s);
      case EMCU_VAR:
      case EMCU_STD: {
        cudaError_t err = run(g, src, MeanCenterR<T>{center, g.nr}, partial, s);
        if (err != cudaSuccess) return err;
        return run(g, src, VarR<T>{ra->out0, center, ra->p, g.nr, op == EMCU_STD}, partial, s);
      }
      case EMCU_LOGSUMEXP: {
        cudaError_t err = run(g, src, MaxCenterR<T>{center}, partial, s);
        if (err != cudaSuccess) return err;
        return run(g, src, LseR<T>{ra->out0, center}, partial, s);
      }
      default: break;
    }
  }
  return cudaErrorInvalidValue;
}

// ---- along a dim: softmax, log_softmax, cumsum, cumprod ------------------------------------------
// [outer, D, inner] contiguous. inner == 1: one row per block (256
// threads); else one thread per (outer, inner) column walking D.

template <class T>
using SoftAcc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <class T, bool LOG>
__global__ void __launch_bounds__(256) softmax_rows(const T *src, T *out, int64_t D) {
  using A = SoftAcc<T>;
  __shared__ A sh[256];
  const T *x = src + (int64_t)blockIdx.x * D;
  T *y = out + (int64_t)blockIdx.x * D;
  A m = -INFINITY;
  bool nan = false;
  for (int64_t j = threadIdx.x; j < D; j += 256) {
    A v = (A)Ty<T>::load(x[j]);
    nan |= v != v;
    m = v > m ? v : m;
  }
  sh[threadIdx.x] = nan ? (A)NAN : m;
  __syncthreads();
  for (int w = 128; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      A a = sh[threadIdx.x], b = sh[threadIdx.x + w];
      sh[threadIdx.x] = a != a ? a : b != b ? b : (a < b ? b : a);
    }
    __syncthreads();
  }
  m = sh[0];
  __syncthreads();
  A sum = 0;
  for (int64_t j = threadIdx.x; j < D; j += 256) sum += m_exp((A)Ty<T>::load(x[j]) - m);
  sh[threadIdx.x] = sum;
  __syncthreads();
  for (int w = 128; w > 0; w /= 2) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  sum = sh[0];
  const A lsum = m_log(sum), inv = (A)1 / sum;
  for (int64_t j = threadIdx.x; j < D; j += 256) {
    A v = (A)Ty<T>::load(x[j]) - m;
    y[j] = Ty<T>::store((CT<T>)(LOG ? v - lsum : m_exp(v) * inv));
  }
}

template <class T, bool LOG>
__global__ void __launch_bounds__(256)
    softmax_cols(const T *src, T *out, int64_t outer, int64_t D, int64_t inner) {
  using A = SoftAcc<T>;
  int64_t c = (int64_t)blockIdx.x * 256 + threadIdx.x;
  if (c >= outer * inner) return;
  int64_t base = (c / inner) * D * inner + c % inner;
  const T *x = src + base;
  T *y = out + base;
  A m = -INFINITY;
  bool nan = false;
  for (int64_t j = 0; j < D; j++) {
    A v = (A)Ty<T>::load(x[j * inner]);
    nan |= v != v;
    m = v > m ? v : m;
  }
  if (nan) m = NAN;
  A sum = 0;
  for (int64_t j = 0; j < D; j++) sum += m_exp((A)Ty<T>::load(x[j * inner]) - m);
  const A lsum = m_log(sum), inv = (A)1 / sum;
  for (int64_t j = 0; j < D; j++) {
    A v = (A)Ty<T>::load(x[j * inner]) - m;
    y[j * inner] = Ty<T>::store((CT<T>)(LOG ? v - lsum : m_exp(v) * inv));
  }
}

template <class T, bool PROD>
__global__ void __launch_bounds__(256)
    scan_cols(const T *src, T *out, int64_t outer, int64_t D, int64_t inner) {
  using A = typename std::conditional<is_float_v<T>, double, CT<T>>::type;
  int64_t c = (int64_t)blockIdx.x * 256 + threadIdx.x;
  if (c >= outer * inner) return;
  int64_t base = (c / inner) * D * inner + c % inner;
  A acc = PROD ? 1 : 0;
  for (int64_t j = 0; j < D; j++) {
    A v = (A)Ty<T>::load(src[base + j * inner]);
    if constexpr (is_float_v<T>)
      acc = PROD ? acc * v : acc + v;
    else
      acc = PROD ? wmul(acc, v) : wadd(acc, v);
    out[base + j * inner] = Ty<T>::store((CT<T>)acc);
  }
}

template <class T>
cudaError_t scan_typed(emcu_scan_op op, const T *src, T *out, int64_t outer, int64_t d,
                       int64_t inner, cudaStream_t s) {
  const unsigned cols = (unsigned)((outer * inner + 255) / 256);
  if constexpr (is_float_v<T>) {
    if (op == EMCU_SOFTMAX || op == EMCU_LOG_SOFTMAX) {
      bool log = op == EMCU_LOG_SOFTMAX;
      if (inner == 1) {
        if (log)
          softmax_rows<T, true><<<(unsigned)outer, 256, 0, s>>>(src, out, d);
        else
          softmax_rows<T, false><<<(unsigned)outer, 256, 0, s>>>(src, out, d);
      } else if (log) {
        softmax_cols<T, true><<<cols, 256, 0, s>>>(src, out, outer, d, inner);
      } else {
        softmax_cols<T, false><<<cols, 256, 0, s>>>(src, out, outer, d, inner);
      }
      return cudaGetLastError();
    }
  }
  if constexpr (!is_bool_v<T>) {
    if (op == EMCU_CUMSUM)
      scan_cols<T, false><<<cols, 256, 0, s>>>(src, out, outer, d, inner);
    else if (op == EMCU_CUMPROD)
      scan_cols<T, true><<<cols, 256, 0, s>>>(src, out, outer, d, inner);
    else
      return cudaErrorInvalidValue;
    return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace emcu

using namespace emcu;

extern "C" bool emcu_reduce_supported(emcu_reduce_op op, em_dtype dt) {
  bool fl = dt == EM_FLOAT32 || dt == EM_FLOAT64 || dt == EM_FLOAT16 || dt == EM_BFLOAT16;
  switch (op) {
    case EMCU_MEAN:
    case EMCU_NORM:
    case EMCU_VAR:
    case EMCU_STD:
    case EMCU_LOGSUMEXP: return fl;
    default: return dt >= 0 && dt < EM_DTYPE_COUNT;
  }
}

extern "C" size_t emcu_reduce_scratch(emcu_reduce_op op, const emcu_reduce_args *r) {
  int64_t parts = split_parts(r->nout, r->nr);
  bool center = op == EMCU_VAR || op == EMCU_STD || op == EMCU_LOGSUMEXP;
  size_t n = 0;
  /* reduce_typed puts the partials after the centre area for every op */
  if (center || parts > 1) n += ((size_t)r->nout * sizeof(double) + 15) / 16 * 16;
  if (parts > 1) n += (size_t)(r->nout * parts) * MAX_ACC;
  return n;
}

extern "C" cudaError_t emcu_reduce(emcu_reduce_op op, em_dtype dt, const emcu_reduce_args *r,
                                   void *scratch, cudaStream_t s) {
  if (r->nout == 0) return cudaSuccess;
  switch (dt) {
    case EM_FLOAT32: return reduce_typed<float>(op, r, scratch, s);
    case EM_FLOAT64: return reduce_typed<double>(op, r, scratch, s);
    case EM_FLOAT16: return reduce_typed<f16>(op, r, scratch, s);
    case EM_BFLOAT16: return reduce_typed<bf16>(op, r, scratch, s);
    case EM_INT8: return reduce_typed<int8_t>(op, r, scratch, s);
    case EM_INT16: return reduce_typed<int16_t>(op, r, scratch, s);
    case EM_INT32: return reduce_typed<int32_t>(op, r, scratch, s);
    case EM_INT64: return reduce_typed<int64_t>(op, r, scratch, s);
    case EM_UINT8: return reduce_typed<uint8_t>(op, r, scratch, s);
    case EM_BOOL: return reduce_typed<bool>(op, r, scratch, s);
    default: return cudaErrorInvalidValue;
  }
}

extern "C" bool emcu_scan_supported(emcu_scan_op op, em_dtype dt) {
  bool fl = dt == EM_FLOAT32 || dt == EM_FLOAT64 || dt == EM_FLOAT16 || dt == EM_BFLOAT16;
  if (op == EMCU_SOFTMAX || op == EMCU_LOG_SOFTMAX) return fl;
  return dt >= 0 && dt < EM_DTYPE_COUNT && dt != EM_BOOL;
}

extern "C" cudaError_t emcu_scan(emcu_scan_op op, em_dtype dt, const char *src, char *out,
                                 int64_t outer, int64_t d, int64_t inner, cudaStream_t s) {
  if (outer * d * inner == 0) return cudaSuccess;
#define CASE(DT, T) \
  case DT: return scan_typed<T>(op, (const T *)src, (T *)out, outer, d, inner, s);
  switch (dt) {
    CASE(EM_FLOAT32, float)
    CASE(EM_FLOAT64, double)
    CASE(EM_FLOAT16, f16)
    CASE(EM_BFLOAT16, bf16)
    CASE(EM_INT8, int8_t)
    CASE(EM_INT16, int16_t)
    CASE(EM_INT32, int32_t)
    CASE(EM_INT64, int64_t)
    CASE(EM_UINT8, uint8_t)
    default: return cudaErrorInvalidValue;
  }
#undef CASE
}
