/* 2-D pooling: max_pool2d (with indices), avg_pool2d, adaptive_avg_pool2d
 * (functional forms and modules).
 *
 * Inputs are [N, C, H, W] or unbatched [C, H, W]; the kernels see
 * [planes, H, W] with planes = N*C, one plane per task. Each op is one
 * autograd node (an em_ag_function): max pooling records the argmax index
 * of every output (PyTorch's flat h*W + w index within the plane) and its
 * backward scatters the output gradient there; average pooling spreads it
 * over the window. float32 and float64 compute natively, float16 and
 * bfloat16 through float32. Window rules follow PyTorch 1.13's CPU
 * kernels (ceil_mode's last window must start inside the input or the
 * left padding; NaN wins a max window).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#ifdef EMBER_CUDA
#include "core/cuda/cuda_nn.h" /* CUDA tensors: GPU kernels (see the CUDA blocks below) */
#endif


typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_ADAPTIVE } pool_kind;

typedef struct pool_geom {
  pool_kind kind;
  int ndim; /* 3 or 4: the input's */
  int64_t lead[2]; /* the leading dims ([C] or [N, C]) */
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool count_include_pad;
} pool_geom;

/* ---- kernels ----------------------------------------------------------------------- */

/* PyTorch's adaptive pooling windows: [start, end) of output o of O over I. */
static inline int64_t ad_start(int64_t o, int64_t O, int64_t I) { return (o / O) * I + ((o % O) * I) / O; }
static inline int64_t ad_end(int64_t o, int64_t O, int64_t I) { return 1 + ((o + 1) * I - 1) / O; }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

typedef struct pool_job {
  const pool_geom *g;
  const void *x;   /* [planes, H, W] */
  void *y;         /* [planes, OH, OW] */
  int64_t *idx;    /* [planes, OH, OW] (max pool; may be NULL in forward) */
  const void *gy;  /* backward: [planes, OH, OW] */
  void *gx;        /* backward: [planes, H, W], zeroed */
} pool_job;

#define DEFINE_POOL_KERNELS(T, SFX)                                                              \
  /* One max window: [h0, h1) x [w0, w1) stepping by the dilation; NaN wins. */                 \
  static inline void max_one_##SFX(const pool_geom *g, const T *x, int64_t oh, int64_t ow,      \
                                   T *y, int64_t *ix) {                                          \
    int64_t h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;                                    \
    int64_t h1 = min64(h0 + (g->kh - 1) * g->dh + 1, g->H);                                      \
    int64_t w1 = min64(w0 + (g->kw - 1) * g->dw + 1, g->W);                                      \
    while (h0 < 0) h0 += g->dh;                                                                  \
    while (w0 < 0) w0 += g->dw;                                                                  \
    int64_t best = h0 * g->W + w0;                                                               \
    T mv = -INFINITY;                                                                            \
    for (int64_t ih = h0; ih < h1; ih += g->dh)                                                  \
      for (int64_t iw = w0; iw < w1; iw += g->dw) {                                              \
        T v = x[ih * g->W + iw];                                                                 \
        if (v > mv || isnan(v)) {                                                                \
          mv = v;                                                                                \
          best = ih * g->W + iw;                                                                 \
        }                                                                                        \
      }                                                                                          \
    *y = mv;                                                                                     \
    if (ix) *ix = best;                                                                          \
  }                                                                                              \
  static void max_fwd_##SFX(void *vctx, int64_t begin, int64_t end) {                            \
    const pool_job *J = vctx;                                                                    \
    const pool_geom *g = J->g;                                                                   \
    bool two = g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 &&             \
               g->pw == 0 && g->dh == 1 && g->dw == 1;                                           \
    /* outputs whose 2x2 window lies inside the input (all but ceil_mode's last) */              \
    int64_t OHi = two ? min64(g->OH, g->H / 2) : 0, OWi = two ? min64(g->OW, g->W / 2) : 0;      \
    for (int64_t pl = begin; pl < end; pl++) {                                                   \
      const T *x = (const T *)J->x + pl * g->H * g->W;                                           \
      T *y = (T *)J->y + pl * g->OH * g->OW;                                                     \
      int64_t *ix = J->idx ? J->idx + pl * g->OH * g->OW : NULL;                                 \
      for (int64_t oh = 0; oh < g->OH; oh++) {                                                   \
        int64_t ow = 0;                                                                          \
        if (oh < OHi) {                                                                          \
          const T *r0 = x + 2 * oh * g->W;                                                       \
          if (ix)                                                                                \
            max2x2_idx_##SFX(r0, r0 + g->W, OWi, 2 * oh * g->W, g->W, y + oh * g->OW,             \
                             ix + oh * g->OW);                                                   \
          else                                                                                   \
            max2x2_val_##SFX(r0, r0 + g->W, OWi, y + oh * g->OW);                                \
          ow = OWi;                                                                              \
        }                                                                                        \
        for (; ow < g->OW; ow++)                                                                 \
          max_one_##SFX(g, x, oh, ow, y + oh * g->OW + ow, ix ? ix + oh * g->OW + ow : NULL);    \
      }                                                                                          \
    }                                                                                            \
  }                                                                                              \
  static void max_bwd_##SFX(void *vctx, int64_t begin, int64_t end) {                            \
    const pool_job *J = vctx;                                                                    \
    const pool_geom *g = J->g;                                                                   \
    const int64_t P = g->OH * g->OW;                                                             \
    for (int64_t pl = begin; pl < end; pl++) {                                                   \
      const T *gy = (const T *)J->gy + pl * P;                                                   \
      const int64_t *ix = J->idx + pl * P;                                                       \
      T *gx = (T *)J->gx + pl * g->H * g->W;                                                     \
      for (int64_t o = 0; o < P; o++) gx[ix[o]] += gy[o];                                        \
    }                                                                                            \
  }                                                                                              \
  /* One window of average pooling: [h0, h1) x [w0, w1) clipped, and its divisor. */            \
  static void avg_fwd_##SFX(void *vctx, int64_t begin, int64_t end) {                            \
    const pool_job *J = vctx;                                                                    \
    const pool_geom *g = J->g;                                                                   \
    for (int64_t pl = begin; pl < end; pl++) {                                                   \
      const T *x = (const T *)J->x + pl * g->H * g->W;                                           \
      T *y = (T *)J->y + pl * g->OH * g->OW;                                                     \
      for (int64_t oh = 0; oh < g->OH; oh++)                                                     \
        for (int64_t ow = 0; ow < g->OW; ow++) {                                                 \
          int64_t h0, h1, w0, w1, div;                                                           \
          window(g, oh, ow, &h0, &h1, &w0, &w1, &div);                                           \
          if (div == 0) {                                                                        \
            y[oh * g->OW + ow] = 0;                                                              \
            continue;                                                                            \
          }                                                                                      \
          T s = 0;                                                                               \
          for (int64_t ih = h0; ih < h1; ih++)                                                   \
            for (int64_t iw = w0; iw < w1; iw++) s += x[ih * g->W + iw];                         \
          y[oh * g->OW + ow] = s / (T)div;                                                       \
        }                                                                                        \
    }                                                                                            \
  }                                                                                              \
  static void avg_bwd_##SFX(void *vctx, int64_t begin, int64_t end) {                            \
    const pool_job *J = vctx;                                                                    \
    const pool_geom *g = J->g;                                                                   \
    for (int64_t pl = begin; pl < end; pl++) {                                                   \
      const T *gy = (const T *)J->gy + pl * g->OH * g->OW;                                       \
      T *gx = (T *)J->gx + pl * g->H * g->W;                                                     \
      for (int64_t oh = 0; oh < g->OH; oh++)                                                     \
        for (int64_t ow = 0; ow < g->OW; ow++) {                                                 \
          int64_t h0, h1, w0, w1, div;                                                           \
          window(g, oh, ow, &h0, &h1, &w0, &w1, &div);                                           \
          if (div == 0) continue;                                                                \
          T v = gy[oh * g->OW + ow] / (T)div;                                                    \
          for (int64_t ih = h0; ih < h1; ih++)                                                   \
            for (int64_t iw = w0; iw < w1; iw++) gx[ih * g->W + iw] += v;                        \
        }                                                                                        \
    }                                                                                            \
  }

/* One row of 2x2 stride-2 unpadded windows (the usual CNN pool) over input
 * rows r0, r1, written so that the compiler vectorises it (no branches):
 * the first maximum in PyTorch's scan order wins, and so does NaN. With
 * indices (flat h*W + w, base = the first window's) or values only. */
#define DEF_MAX2X2(T, SFX, ATTR)                                                                  \
  ATTR static void max2x2_idx_##SFX(const T *restrict r0, const T *restrict r1, int64_t n,        \
                                    int64_t base, int64_t W, T *restrict y, int64_t *restrict ix) { \
    for (int64_t ow = 0; ow < n; ow++) {                                                          \
      T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];                   \
      T m = a;                                                                                    \
      bool t = b > m || b != b;                                                                   \
      m = t ? b : m;                                                                              \
      int64_t off = t ? 1 : 0;                                                                    \
      t = c > m || c != c;                                                                        \
      m = t ? c : m;                                                                              \
      off = t ? W : off;                                                                          \
      t = d > m || d != d;                                                                        \
      m = t ? d : m;                                                                              \
      off = t ? W + 1 : off;                                                                      \
      y[ow] = m;                                                                                  \
      ix[ow] = base + 2 * ow + off;                                                               \
    }                                                                                             \
  }                                                                                               \
  ATTR static void max2x2_val_##SFX(const T *restrict r0, const T *restrict r1, int64_t n,        \
                                    T *restrict y) {                                              \
    for (int64_t ow = 0; ow < n; ow++) {                                                          \
      T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];                   \
      T m = a;                                                                                    \
      m = (b > m || b != b) ? b : m;                                                              \
      m = (c > m || c != c) ? c : m;                                                              \
      m = (d > m || d != d) ? d : m;                                                              \
      y[ow] = m;                                                                                  \
    }                                                                                             \
  }

#if defined(__x86_64__) && defined(__GNUC__)
#define EM_POOL_AVX2 __attribute__((target("avx2")))
DEF_MAX2X2(float, f32_avx2, EM_POOL_AVX2)
DEF_MAX2X2(double, f64_avx2, EM_POOL_AVX2)
#endif
DEF_MAX2X2(float, f32_base, )
DEF_MAX2X2(double, f64_base, )

static bool have_avx2(void) {
#ifdef EM_POOL_AVX2
  static _Atomic int cached = -1; /* every thread computes the same value */
  int c = atomic_load_explicit(&cached, memory_order_relaxed);
  if (c < 0) {
    __builtin_cpu_init();
    c = __builtin_cpu_supports("avx2") ? 1 : 0;
    atomic_store_explicit(&cached, c, memory_order_relaxed);
  }
  return c;
#else
  return false;
#endif
}

#ifdef EM_POOL_AVX2
#define MAX2X2_DISPATCH(T, SFX)                                                                   \
  static void max2x2_idx_##SFX(const T *r0, const T *r1, int64_t n, int64_t base, int64_t W,     \
                               T *y, int64_t *ix) {                                               \
    (have_avx2() ? max2x2_idx_##SFX##_avx2 : max2x2_idx_##SFX##_base)(r0, r1, n, base, W, y, ix); \
  }                                                                                               \
  static void max2x2_val_##SFX(const T *r0, const T *r1, int64_t n, T *y) {                       \
    (have_avx2() ? max2x2_val_##SFX##_avx2 : max2x2_val_##SFX##_base)(r0, r1, n, y);              \
  }
#else
#define MAX2X2_DISPATCH(T, SFX)                                                                   \
  static void max2x2_idx_##SFX(const T *r0, const T *r1, int64_t n, int64_t base, int64_t W,     \
                               T *y, int64_t *ix) {                                               \
    max2x2_idx_##SFX##_base(r0, r1, n, base, W, y, ix);                                           \
  }                                                                                               \
  static void max2x2_val_##SFX(const T *r0, const T *r1, int64_t n, T *y) {                       \
    max2x2_val_##SFX##_base(r0, r1, n, y);                                                        \
  }
#endif
MAX2X2_DISPATCH(float, f32)
MAX2X2_DISPATCH(double, f64)

/* The window of output (oh, ow) clipped to the input, and the divisor
 * (0: an empty window, whose output is 0). */
static inline void window(const pool_geom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1,
                          int64_t *w0, int64_t *w1, int64_t *div) {
  if (g->kind == POOL_ADAPTIVE) {
    *h0 = ad_start(oh, g->OH, g->H), *h1 = ad_end(oh, g->OH, g->H);
    *w0 = ad_start(ow, g->OW, g->W), *w1 = ad_end(ow, g->OW, g->W);
    *div = (*h1 - *h0) * (*w1 - *w0);
    return;
  }
  int64_t a = oh * g->sh - g->ph, c = ow * g->sw - g->pw;
  int64_t b = min64(a + g->kh, g->H + g->ph), d = min64(c + g->kw, g->W + g->pw);
  int64_t pool_size = (b - a) * (d - c);
  a = max64(a, 0), c = max64(c, 0), b = min64(b, g->H), d = min64(d, g->W);
  *h0 = a, *h1 = b, *w0 = c, *w1 = d;
  if (a >= b || c >= d)
    *div = 0;
  else
    *div = g->count_include_pad ? pool_size : (b - a) * (d - c);
}

DEFINE_POOL_KERNELS(float, f32)
DEFINE_POOL_KERNELS(double, f64)

static int64_t pool_grain(const pool_geom *g) {
  int64_t per = g->OH * g->OW * (g->kind == POOL_ADAPTIVE ? 1 : g->kh * g->kw) + g->H * g->W;
  int64_t gr = per > 0 ? 32768 / per : 1;
  return gr < 1 ? 1 : gr;
}

/* ---- compute helpers ------------------------------------------------------------------ */

/* The output's shape: the leading dims then (OH, OW). */
static int out_shape(const pool_geom *g, int64_t *s) {
  int nl = g->ndim - 2;
  for (int i = 0; i < nl; i++) s[i] = g->lead[i];
  s[nl] = g->OH, s[nl + 1] = g->OW;
  return g->ndim;
}

#ifdef EMBER_CUDA
/* ---- CUDA: the same windows on the GPU (core/cuda/cuda_nn.h), over the
 * [planes, H, W] view ---------------------------------------------------------------------- */
static em_cuda_pool_geom cuda_geom(const pool_geom *g) {
  em_cuda_pool_kind k = g->kind == POOL_MAX   ? EM_CUDA_POOL_MAX
                        : g->kind == POOL_AVG ? EM_CUDA_POOL_AVG
                                              : EM_CUDA_POOL_ADAPTIVE;
  return (em_cuda_pool_geom){k,     g->planes, g->H,  g->W,  g->OH, g->OW, g->kh, g->kw,
                             g->sh, g->sw,     g->ph, g->pw, g->dh, g->dw, g->count_include_pad};
}

/* t (contiguous) viewed as [a, b, c] / back as nd dims of shape s. */
static em_tensor *view3(em_tensor *t, int64_t a, int64_t b, int64_t c) {
  em_tensor *ct = em_tensor_contiguous(t);
  em_tensor *v = ct ? em_tensor_view(ct, EM_DIMS(a, b, c)) : NULL;
  em_tensor_release(ct);
  return v;
}

static em_status cuda_pool_forward(const pool_geom *g, em_tensor *x, em_tensor **y, em_tensor **idx) {
  em_cuda_pool_geom cg = cuda_geom(g);
  int64_t s[4];
  int nd = out_shape(g, s);
  em_tensor *x3 = view3(x, g->planes, g->H, g->W), *y3 = NULL, *i3 = NULL;
  em_status st = x3 ? em__cuda_pool2d_forward(&cg, x3, &y3, idx ? &i3 : NULL) : em_last_status();
  em_tensor_release(x3);
  if (st) return st;
  *y = em_tensor_view(y3, nd, s);
  if (idx) *idx = i3 ? em_tensor_view(i3, nd, s) : NULL;
  em_tensor_release(y3), em_tensor_release(i3);
  if (!*y || (idx && i3 && !*idx)) {
    em_tensor_release(*y);
    if (idx) em_tensor_release(*idx);
    return em_last_status();
  }
  return EM_OK;
}

static em_status cuda_pool_backward(const pool_geom *g, em_tensor *gy, em_tensor *idx,
                                    em_tensor **gx) {
  em_cuda_pool_geom cg = cuda_geom(g);
  int64_t s[4];
  int nl = g->ndim - 2;
  for (int i = 0; i < nl; i++) s[i] = g->lead[i];
  s[nl] = g->H, s[nl + 1] = g->W;
  em_tensor *gy3 = view3(gy, g->planes, g->OH, g->OW), *i3 = idx ? view3(idx, g->planes, g->OH, g->OW) : NULL;
  em_tensor *gx3 = NULL;
  em_status st = gy3 && (!idx || i3) ? em__cuda_pool2d_backward(&cg, gy3, i3, &gx3) : em_last_status();
  em_tensor_release(gy3), em_tensor_release(i3);
  if (st) return st;
  *gx = em_tensor_view(gx3, g->ndim, s);
  em_tensor_release(gx3);
  return *gx ? EM_OK : em_last_status();
}
#endif

/* y = pool(x) (and the argmax indices for max pooling when idx is not
 * NULL); y has x's dtype. */
static em_status pool_compute(const pool_geom *g, em_tensor *x, em_tensor **y, em_tensor **idx) {
#ifdef EMBER_CUDA
  if (x->device.type == EM_CUDA) return cuda_pool_forward(g, x, y, idx);
#endif
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  int64_t s[4];
  int nd = out_shape(g, s);
  em_tensor *xc = NULL, *out = NULL, *ix = NULL;
  em_status st = EM_OK;
  xc = em__as_compute(x, cdt);
  EM_CHECK_PTR_GOTO(xc, st, done);
  out = em_tensor_empty(nd, s, cdt);
  EM_CHECK_PTR_GOTO(out, st, done);
  if (idx) {
    ix = em_tensor_empty(nd, s, EM_INT64);
    EM_CHECK_PTR_GOTO(ix, st, done);
  }
  pool_job J = {g, em__data_ptr(xc), em__data_ptr(out), ix ? (int64_t *)em__data_ptr(ix) : NULL,
                NULL, NULL};
  em_range_fn fn;
  if (g->kind == POOL_MAX)
    fn = cdt == EM_FLOAT64 ? max_fwd_f64 : max_fwd_f32;
  else
    fn = cdt == EM_FLOAT64 ? avg_fwd_f64 : avg_fwd_f32;
  em__parallel_for(g->planes, pool_grain(g), fn, &J);
  if (cdt != dt) EM_CHECK_GOTO(em__convert_owned(&out, dt), st, done);
done:
  em_tensor_release(xc);
  if (st) {
    em_tensor_release(out), em_tensor_release(ix);
    return st;
  }
  *y = out;
  if (idx) *idx = ix;
  return EM_OK;
}

/* ---- the autograd function ------------------------------------------------------------------ */

/* inputs: x; outputs: y and, for max pooling, the indices (not
 * differentiable). Saved: the indices (max) or nothing (avg: the window
 * geometry is enough). */
static em_status pool_fn_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                                 em_tensor **out) {
  const pool_geom *g = em_ag_ctx_user(ctx);
  if (g->kind != POOL_MAX) {
    EM_CHECK(pool_compute(g, in[0], &out[0], NULL));
    *nout = 1;
    return EM_OK;
  }
  EM_CHECK(pool_compute(g, in[0], &out[0], &out[1]));
  *nout = 2;
  EM_CHECK(em_ag_ctx_mark_non_differentiable(ctx, 1));
  return em_ag_ctx_save(ctx, 1, &out[1]);
}

static em_status pool_fn_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                  em_tensor **grad_in) {
  const pool_geom *g = em_ag_ctx_user(ctx);
  em_tensor *gy = grad_out[0];
  if (!gy || !em_ag_ctx_needs_input_grad(ctx, 0)) return EM_OK;
  em_tensor *idx = NULL;
  if (g->kind == POOL_MAX && !(idx = em_ag_ctx_saved(ctx, 0))) return em_last_status();
#ifdef EMBER_CUDA
  if (gy->device.type == EM_CUDA) return cuda_pool_backward(g, gy, idx, &grad_in[0]);
#endif
  em_dtype cdt = em__compute_dtype((em_dtype)gy->dtype);
  em_tensor *gyc = em__as_compute(gy, cdt);
  if (!gyc) return em_last_status();
  int64_t s[4];
  int nl = g->ndim - 2;
  for (int i = 0; i < nl; i++) s[i] = g->lead[i];
  s[nl] = g->H, s[nl + 1] = g->W;
  em_tensor *gx = em_tensor_zeros(g->ndim, s, cdt);
  if (!gx) {
    em_tensor_release(gyc);
    return em_last_status();
  }
  pool_job J = {g, NULL, NULL, idx ? (int64_t *)em__data_ptr(idx) : NULL, em__data_ptr(gyc),
                em__data_ptr(gx)};
  em_range_fn fn;
  if (g->kind == POOL_MAX)
    fn = cdt == EM_FLOAT64 ? max_bwd_f64 : max_bwd_f32;
  else
    fn = cdt == EM_FLOAT64 ? avg_bwd_f64 : avg_bwd_f32;
  em__parallel_for(g->planes, pool_grain(g), fn, &J);
  em_tensor_release(gyc);
  grad_in[0] = gx;
  return EM_OK;
}

static const em_ag_function max_pool_function = {"MaxPool2DWithIndicesBackward0", pool_fn_forward,
                                                 pool_fn_backward};
static const em_ag_function avg_pool_function = {"AvgPool2DBackward0", pool_fn_forward,
                                                 pool_fn_backward};
static const em_ag_function adaptive_function = {"AdaptiveAvgPool2DBackward0", pool_fn_forward,
                                                 pool_fn_backward};

static em_tensor *pool_run(const pool_geom *g, em_tensor *x, em_tensor **indices) {
  if (!em__should_record(1, &x)) {
    em_tensor *y = NULL;
    if (pool_compute(g, x, &y, g->kind == POOL_MAX ? indices : NULL)) return NULL;
    return y;
  }
  pool_geom *u = malloc(sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "pool: out of memory");
  *u = *g;
  const em_ag_function *fn = g->kind == POOL_MAX ? &max_pool_function
                             : g->kind == POOL_AVG ? &avg_pool_function
                                                   : &adaptive_function;
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  if (em_ag_function_apply(fn, u, free, 1, &x, &nout, out)) return NULL;
  if (g->kind == POOL_MAX) {
    if (indices)
      *indices = out[1];
    else
      em_tensor_release(out[1]);
  }
  return out[0];
}

/* ---- validation --------------------------------------------------------------------------------- */

static em_status check_input(const char *op, em_tensor *x, bool max) {
  if (!x) return em__set_error(EM_ERR_INVALID, "%s: input must not be NULL", op);
  if (x->ndim != 3 && x->ndim != 4) {
    if (max)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: non-empty 3D or 4D (batch mode) tensor expected for input, but got "
                           "input of size: %s",
                           op, em__tshape(x));
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size "
                         "for input, but got:%s",
                         op, em__tshape(x));
  }
  if (!em_dtype_is_float((em_dtype)x->dtype))
    return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", op, op,
                         em__torch_dtype_name((em_dtype)x->dtype));
  bool on_cuda = false; /* CUDA tensors run the GPU kernels */
#ifdef EMBER_CUDA
  on_cuda = x->device.type == EM_CUDA;
#endif
  if (!on_cuda && !em_device_eq(x->device, EM_DEVICE_CPU))
    return em__set_error(EM_ERR_DEVICE, "%s: only CPU tensors are supported in this build", op);
  return EM_OK;
}

static void set_planes(pool_geom *g, em_tensor *x) {
  g->ndim = x->ndim;
  g->lead[0] = x->shape[0];
  g->lead[1] = x->ndim == 4 ? x->shape[1] : 0;
  g->planes = x->ndim == 4 ? x->shape[0] * x->shape[1] : x->shape[0];
  g->H = x->shape[x->ndim - 2];
  g->W = x->shape[x->ndim - 1];
}

/* PyTorch's pooling_output_shape for one dim, with its checks. */
static em_status pool_out(const char *op, int64_t in, int64_t k, int64_t pad, int64_t s, int64_t d,
                          bool ceil_mode, int64_t *out) {
  if (s == 0) return em__set_error(EM_ERR_INVALID, "%s: stride should not be zero", op);
  if (pad < 0)
    return em__set_error(EM_ERR_INVALID, "%s: pad must be non-negative, but got pad: %lld", op,
                         (long long)pad);
  if (pad > k / 2)
    return em__set_error(EM_ERR_INVALID,
                         "%s: pad should be at most half of kernel size, but got pad=%lld and "
                         "kernel_size=%lld",
                         op, (long long)pad, (long long)k);
  if (s < 0 || k <= 0 || d <= 0) {
    *out = 0; /* reported by the caller's checks */
    return EM_OK;
  }
  int64_t num = in + 2 * pad - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1; /* floor division */
  if (ceil_mode && (o - 1) * s >= in + pad) o--;
  *out = o;
  return EM_OK;
}

/* Fills g for max (dilation) or average pooling, with PyTorch's checks
 * in PyTorch's order. */
static em_status pool_check(const char *op, em_tensor *x, const em_pool_options *o, bool max,
                            pool_geom *g) {
  EM_CHECK(check_input(op, x, max));
  if (!o) return em__set_error(EM_ERR_INVALID, "%s: options must not be NULL", op);
  memset(g, 0, sizeof *g);
  g->kind = max ? POOL_MAX : POOL_AVG;
  g->count_include_pad = o->count_include_pad;
  set_planes(g, x);
  g->kh = o->kernel[0], g->kw = o->kernel[1];
  g->sh = o->stride[0] ? o->stride[0] : g->kh;
  g->sw = o->stride[1] ? o->stride[1] : g->kw;
  g->ph = o->padding[0], g->pw = o->padding[1];
  g->dh = max && o->dilation[0] ? o->dilation[0] : 1;
  g->dw = max && o->dilation[1] ? o->dilation[1] : 1;
  EM_CHECK(pool_out(op, g->H, g->kh, g->ph, g->sh, g->dh, o->ceil_mode, &g->OH));
  EM_CHECK(pool_out(op, g->W, g->kw, g->pw, g->sw, g->dw, o->ceil_mode, &g->OW));
  if (g->kh <= 0 || g->kw <= 0)
    return em__set_error(EM_ERR_INVALID,
                         "%s: kernel size should be greater than zero, but got kH: %lld kW: %lld", op,
                         (long long)g->kh, (long long)g->kw);
  if (g->sh <= 0 || g->sw <= 0)
    return em__set_error(EM_ERR_INVALID,
                         "%s: stride should be greater than zero, but got dH: %lld dW: %lld", op,
                         (long long)g->sh, (long long)g->sw);
  if (g->dh <= 0 || g->dw <= 0)
    return em__set_error(EM_ERR_INVALID,
                         "%s: dilation should be greater than zero, but got dilationH: %lld "
                         "dilationW: %lld",
                         op, (long long)g->dh, (long long)g->dw);
  bool valid = x->shape[x->ndim - 3] != 0 && g->H != 0 && g->W != 0;
  if (!valid)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size "
                         "for input, but got:%s",
                         op, em__tshape(x));
  if (g->OH < 1 || g->OW < 1)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Given input size: (%lldx%lldx%lld). Calculated output size: "
                         "(%lldx%lldx%lld). Output size is too small",
                         op, (long long)x->shape[x->ndim - 3], (long long)g->H, (long long)g->W,
                         (long long)x->shape[x->ndim - 3], (long long)g->OH, (long long)g->OW);
  return EM_OK;
}

/* ---- functional forms ---------------------------------------------------------------------------- */

em_tensor *em_nn_f_max_pool2d_with_indices(em_tensor *x, const em_pool_options *o,
                                           em_tensor **indices) {
  if (indices) *indices = NULL;
  pool_geom g;
  if (pool_check("max_pool2d", x, o, true, &g)) return NULL;
  return pool_run(&g, x, indices);
}

em_tensor *em_nn_f_max_pool2d(em_tensor *x, const em_pool_options *o) {
  return em_nn_f_max_pool2d_with_indices(x, o, NULL);
}

em_tensor *em_nn_f_avg_pool2d(em_tensor *x, const em_pool_options *o) {
  pool_geom g;
  if (pool_check("avg_pool2d", x, o, false, &g)) return NULL;
  return pool_run(&g, x, NULL);
}

em_tensor *em_nn_f_adaptive_avg_pool2d(em_tensor *x, int64_t out_h, int64_t out_w) {
  const char *op = "adaptive_avg_pool2d";
  if (!x) return EM_FAIL(EM_ERR_INVALID, "%s: input must not be NULL", op);
  if (x->ndim != 3 && x->ndim != 4)
    return EM_FAIL(EM_ERR_SHAPE, "%s(): Expected 3D or 4D tensor, but got %s", op, em__tshape(x));
  for (int d = 1; d < x->ndim; d++)
    if (x->shape[d] == 0)
      return EM_FAIL(EM_ERR_SHAPE,
                     "%s(): Expected input to have non-zero size for non-batch dimensions, but "
                     "input has sizes %s with dimension %d being empty",
                     op, em__tshape(x), d);
  if (out_h < 0 || out_w < 0)
    return EM_FAIL(EM_ERR_INVALID,
                   "%s: elements of output_size must be greater than or equal to 0 but received "
                   "{%lld, %lld}",
                   op, (long long)out_h, (long long)out_w);
  if (check_input(op, x, false)) return NULL;
  pool_geom g = {0};
  g.kind = POOL_ADAPTIVE;
  set_planes(&g, x);
  g.OH = out_h, g.OW = out_w;
  return pool_run(&g, x, NULL);
}

/* ---- modules ---------------------------------------------------------------------------------------- */

typedef struct pool_impl {
  em_pool_options o;
  int64_t out_h, out_w;
} pool_impl;

/* "2" when both entries are equal (how PyTorch prints an int argument),
 * else "(2, 3)". */
static const char *pair(const int64_t *v, char *buf, size_t n) {
  if (v[0] == v[1])
    snprintf(buf, n, "%lld", (long long)v[0]);
  else
    snprintf(buf, n, "(%lld, %lld)", (long long)v[0], (long long)v[1]);
  return buf;
}

static em_status one_input(em_module *m, int nin) {
  if (nin != 1)
    return em__set_error(EM_ERR_INVALID, "%s.forward: takes 1 input, got %d", em_module_type_name(m),
                         nin);
  return EM_OK;
}

static em_tensor *max_pool_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  return em_nn_f_max_pool2d(in[0], &((pool_impl *)em_module_impl(m))->o);
}
static em_tensor *avg_pool_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  return em_nn_f_avg_pool2d(in[0], &((pool_impl *)em_module_impl(m))->o);
}
static em_tensor *adaptive_forward(em_module *m, int nin, em_tensor *const *in) {
  if (one_input(m, nin)) return NULL;
  pool_impl *p = em_module_impl(m);
  return em_nn_f_adaptive_avg_pool2d(in[0], p->out_h, p->out_w);
}

static char *max_pool_repr(em_module *m) {
  const em_pool_options *o = &((pool_impl *)em_module_impl(m))->o;
  char k[48], s[48], p[48], d[48];
  return em__nn_fmt("kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s",
             pair(o->kernel, k, sizeof k), pair(o->stride, s, sizeof s),
             pair(o->padding, p, sizeof p), pair(o->dilation, d, sizeof d),
             o->ceil_mode ? "True" : "False");
}
static char *avg_pool_repr(em_module *m) {
  const em_pool_options *o = &((pool_impl *)em_module_impl(m))->o;
  char k[48], s[48], p[48];
  return em__nn_fmt("kernel_size=%s, stride=%s, padding=%s", pair(o->kernel, k, sizeof k),
             pair(o->stride, s, sizeof s), pair(o->padding, p, sizeof p));
}
static char *adaptive_repr(em_module *m) {
  pool_impl *p = em_module_impl(m);
  int64_t v[2] = {p->out_h, p->out_w};
  char b[48];
  return em__nn_fmt("output_size=%s", pair(v, b, sizeof b));
}

static const em_module_ops max_pool_ops = {"MaxPool2d", max_pool_forward, max_pool_repr, free};
static const em_module_ops avg_pool_ops = {"AvgPool2d", avg_pool_forward, avg_pool_repr, free};
static const em_module_ops adaptive_ops = {"AdaptiveAvgPool2d", adaptive_forward, adaptive_repr,
                                           free};

static em_module *pool_module(const em_module_ops *ops, const em_pool_options *o, bool max) {
  if (!o) return EM_FAIL(EM_ERR_INVALID, "%s: options must not be NULL", ops->type_name);
  pool_impl *p = calloc(1, sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", ops->type_name);
  p->o = *o;
  for (int i = 0; i < 2; i++) {
    if (!p->o.stride[i]) p->o.stride[i] = p->o.kernel[i];
    if (max && !p->o.dilation[i]) p->o.dilation[i] = 1;
  }
  return em_module_create(ops, p);
}

em_module *em_nn_max_pool2d(const em_pool_options *o) { return pool_module(&max_pool_ops, o, true); }
em_module *em_nn_avg_pool2d(const em_pool_options *o) { return pool_module(&avg_pool_ops, o, false); }

em_module *em_nn_adaptive_avg_pool2d(int64_t out_h, int64_t out_w) {
  if (out_h < 0 || out_w < 0)
    return EM_FAIL(EM_ERR_INVALID,
                   "AdaptiveAvgPool2d: elements of output_size must be greater than or equal to 0 "
                   "but received {%lld, %lld}",
                   (long long)out_h, (long long)out_w);
  pool_impl *p = calloc(1, sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "AdaptiveAvgPool2d: out of memory");
  p->out_h = out_h, p->out_w = out_w;
  return em_module_create(&adaptive_ops, p);
}
