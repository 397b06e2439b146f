// CUDA kernels: 2-D pooling with nn/pool.c's windows (PyTorch 1.13's):
// max (NaN wins, first maximum in scan order, flat h*W + w index), average
// (clipped window; divisor with or without the padding), adaptive average.
// One thread per output element; backward accumulates with atomics.
#include "core/cuda/cu_common.cuh"

namespace emcu {

__device__ __forceinline__ int64_t ad_start(int64_t o, int64_t O, int64_t I) {
  return (o / O) * I + ((o % O) * I) / O;
}
__device__ __forceinline__ int64_t ad_end(int64_t o, int64_t O, int64_t I) {
  return 1 + ((o + 1) * I - 1) / O;
}

// The averaging window of output (oh, ow), clipped, and its divisor.
__device__ __forceinline__ void window(const emcu_pool &g, int64_t oh, int64_t ow, int64_t *h0,
                                       int64_t *h1, int64_t *w0, int64_t *w1, int64_t *div) {
  if (g.kind == 2) {
    *h0 = ad_start(oh, g.OH, g.H), *h1 = ad_end(oh, g.OH, g.H);
    *w0 = ad_start(ow, g.OW, g.W), *w1 = ad_end(ow, g.OW, g.W);
    *div = (*h1 - *h0) * (*w1 - *w0);
    return;
  }
  int64_t a = oh * g.sh - g.ph, c = ow * g.sw - g.pw;
  int64_t b = min(a + g.kh, g.H + g.ph), d = min(c + g.kw, g.W + g.pw);
  int64_t pool_size = (b - a) * (d - c);
  a = max(a, (int64_t)0), c = max(c, (int64_t)0), b = min(b, g.H), d = min(d, g.W);
  *h0 = a, *h1 = b, *w0 = c, *w1 = d;
  *div = (a >= b || c >= d) ? 0 : g.count_include_pad ? pool_size : (b - a) * (d - c);
}

template <class T>
__global__ void __launch_bounds__(256) pool_fwd(emcu_pool g, const T *x, T *y, int64_t *idx) {
  const int64_t n = g.planes * g.OH * g.OW;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, pl = i / (g.OW * g.OH);
    const T *xp = x + pl * g.H * g.W;
    if (g.kind == 0) {
      int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
      int64_t h1 = min(h0 + (g.kh - 1) * g.dh + 1, g.H), w1 = min(w0 + (g.kw - 1) * g.dw + 1, g.W);
      while (h0 < 0) h0 += g.dh;
      while (w0 < 0) w0 += g.dw;
      int64_t best = h0 * g.W + w0;
      T mv = -INFINITY;
      for (int64_t ih = h0; ih < h1; ih += g.dh)
        for (int64_t iw = w0; iw < w1; iw += g.dw) {
          T v = xp[ih * g.W + iw];
          if (v > mv || v != v) {
            mv = v;
            best = ih * g.W + iw;
          }
        }
      y[i] = mv;
      if (idx) idx[i] = best;
    } else {
      int64_t h0, h1, w0, w1, div;
      window(g, oh, ow, &h0, &h1, &w0, &w1, &div);
      if (div == 0) {
        y[i] = 0;
        continue;
      }
      T s = 0;
      for (int64_t ih = h0; ih < h1; ih++)
        for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * g.W + iw];
      y[i] = s / (T)div;
    }
  }
}

template <class T>
__global__ void __launch_bounds__(256)
    pool_bwd(emcu_pool g, const T *gy, const int64_t *idx, T *gx) {
  const int64_t n = g.planes * g.OH * g.OW;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, pl = i / (g.OW * g.OH);
    T *gp = gx + pl * g.H * g.W;
    if (g.kind == 0) {
      atomicAdd(gp + idx[i], gy[i]);
      continue;
    }
    int64_t h0, h1, w0, w1, div;
    window(g, oh, ow, &h0, &h1, &w0, &w1, &div);
    if (div == 0) continue;
    T v = gy[i] / (T)div;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) atomicAdd(gp + ih * g.W + iw, v);
  }
}

}  // namespace emcu

using namespace emcu;

extern "C" cudaError_t emcu_pool2d_forward(const emcu_pool *g, bool dbl, const void *x, void *y,
                                           int64_t *idx, cudaStream_t s) {
  int64_t n = g->planes * g->OH * g->OW;
  if (n == 0) return cudaSuccess;
  if (dbl)
    pool_fwd<double><<<grid_for(n), 256, 0, s>>>(*g, (const double *)x, (double *)y, idx);
  else
    pool_fwd<float><<<grid_for(n), 256, 0, s>>>(*g, (const float *)x, (float *)y, idx);
  return cudaGetLastError();
}

extern "C" cudaError_t emcu_pool2d_backward(const emcu_pool *g, bool dbl, const void *gy,
                                            const int64_t *idx, void *gx, cudaStream_t s) {
  size_t es = dbl ? 8 : 4;
  cudaError_t err = cudaMemsetAsync(gx, 0, (size_t)(g->planes * g->H * g->W) * es, s);
  if (err != cudaSuccess) return err;
  int64_t n = g->planes * g->OH * g->OW;
  if (n == 0) return cudaSuccess;
  if (dbl)
    pool_bwd<double><<<grid_for(n), 256, 0, s>>>(*g, (const double *)gy, idx, (double *)gx);
  else
    pool_bwd<float><<<grid_for(n), 256, 0, s>>>(*g, (const float *)gy, idx, (float *)gx);
  return cudaGetLastError();
}
