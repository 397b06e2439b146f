/* CPU convolution kernels, instantiated per compute type by nn/conv.c:
 *
 *     #define T float
 *     #define SFX(name) name##_f32
 *     #define GEMM em__sgemm
 *     #include "nn/cpu_conv_impl.h"
 *
 * Convolution is lowered onto GEMM. For a chunk of nb images and a group
 * of Cg input channels, im2col writes the columns
 *
 *     col[(c * kh + i) * kw + j][n * P + p]      // [Cg*kh*kw, nb*P], P = OH*OW
 *         = x[n][c][oh*sh - ph + i*dh][ow*sw - pw + j*dw]   (0 in the padding)
 *
 * so one GEMM per group covers the whole chunk (the batch is part of the
 * GEMM's N dimension): out_g [Coutg, nb*P] = w_g [Coutg, K] @ col. The
 * [C, nb*P] <-> [nb, C, P] re-layouts are block copies of P elements.
 * col2im is the adjoint of im2col (accumulates). The data movement runs
 * under em__parallel_for over (image, channel) planes; GEMMs are called
 * from the calling thread only (OpenBLAS threads itself).
 *
 * No header guard: included once per type. */

#ifndef T
#error "define T, SFX and GEMM before including nn/cpu_conv_impl.h"
#endif

/* ---- layout helpers ------------------------------------------------------------- */

/* Range of output positions o in [0, O) whose input index o*s + off lies in
 * [0, I): [*lo, *hi). */
#ifndef EM_CONV_VALID_RANGE
#define EM_CONV_VALID_RANGE
static inline void conv_valid_range(int64_t O, int64_t I, int64_t s, int64_t off, int64_t *lo,
                                    int64_t *hi) {
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = I - 1 - off < 0 ? 0 : (I - 1 - off) / s + 1;
  if (l > O) l = O;
  if (h > O) h = O;
  if (h < l) h = l;
  *lo = l;
  *hi = h;
}

/* Geometry of one lowering: images [nb, Ctot, IH, IW] (the channels
 * c0 .. c0+Cg taking part), window positions [OH, OW]. */
typedef struct conv_lower {
  int64_t nb, Ctot, c0, Cg;
  int64_t IH, IW, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
} conv_lower;

/* Work buffers: big ones come from core's cache of freed blocks, so they
 * do not page-fault afresh on every call. */
static inline void *conv_ws_alloc(size_t n) {
  return n >= EM_CPU_CACHE_MIN ? em__cpu_cache_alloc(n) : malloc(n);
}
static inline void conv_ws_free(void *p, size_t n) {
  if (n >= EM_CPU_CACHE_MIN)
    em__cpu_cache_free(p, n);
  else
    free(p);
}

/* Tasks of at least ~32k elements each. */
static inline int64_t conv_grain(int64_t per_task) {
  if (per_task <= 0) return 1 << 20;
  int64_t g = 32768 / per_task;
  return g < 1 ? 1 : g;
}
#endif

/* ---- short rows ------------------------------------------------------------------ */

/* Rows here are short (OW elements, often about 10): a memcpy call or a
 * generic vectorised loop spends more on its set-up than on the data. These
 * move 32-byte blocks (one AVX register) with inlined fixed-size memcpy. */
typedef T SFX(vec) __attribute__((vector_size(32)));
#define SFX_VL ((int64_t)(32 / sizeof(T)))

static inline void SFX(copy_row)(T *restrict dst, const T *restrict src, int64_t n) {
  if (n >= SFX_VL) {
    int64_t i = 0;
    for (; i + SFX_VL <= n; i += SFX_VL) memcpy(dst + i, src + i, 32);
    if (i < n) memcpy(dst + n - SFX_VL, src + n - SFX_VL, 32); /* overlapping tail */
    return;
  }
  for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static inline void SFX(add_row)(T *restrict dst, const T *restrict src, int64_t n) {
  int64_t i = 0;
  for (; i + SFX_VL <= n; i += SFX_VL) {
    SFX(vec) a, b;
    memcpy(&a, dst + i, 32);
    memcpy(&b, src + i, 32);
    a += b;
    memcpy(dst + i, &a, 32);
  }
  for (; i < n; i++) dst[i] += src[i];
}
#undef SFX_VL

/* ---- im2col / col2im ------------------------------------------------------------ */

typedef struct SFX(lower_job) {
  const conv_lower *L;
  const T *img; /* [nb, Ctot, IH, IW] */
  T *col;       /* [Cg*kh*kw, nb*OH*OW] */
} SFX(lower_job);

/* One task per (image, channel) plane: rows c*kh*kw .. (c+1)*kh*kw of col,
 * the columns of image n. */
static void SFX(im2col_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(lower_job) *J = vctx;
  const conv_lower *L = J->L;
  const int64_t P = L->OH * L->OW, ld = L->nb * P;
  for (int64_t t = begin; t < end; t++) {
    int64_t n = t / L->Cg, c = t % L->Cg;
    const T *plane = J->img + ((n * L->Ctot) + L->c0 + c) * L->IH * L->IW;
    for (int64_t i = 0; i < L->kh; i++) {
      for (int64_t j = 0; j < L->kw; j++) {
        T *row = J->col + ((c * L->kh + i) * L->kw + j) * ld + n * P;
        int64_t offw = j * L->dw - L->pw, lo, hi;
        conv_valid_range(L->OW, L->IW, L->sw, offw, &lo, &hi);
        for (int64_t oh = 0; oh < L->OH; oh++) {
          T *dst = row + oh * L->OW;
          int64_t ih = oh * L->sh - L->ph + i * L->dh;
          if (ih < 0 || ih >= L->IH) {
            memset(dst, 0, sizeof(T) * (size_t)L->OW);
            continue;
          }
          const T *src = plane + ih * L->IW + offw;
          for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
          if (L->sw == 1) {
            SFX(copy_row)(dst + lo, src + lo, hi - lo);
          } else {
            const int64_t s = L->sw;
            for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * s];
          }
          for (int64_t ow = hi; ow < L->OW; ow++) dst[ow] = 0;
        }
      }
    }
  }
}

static void SFX(im2col)(const conv_lower *L, const T *img, T *col) {
  SFX(lower_job) J = {L, img, col};
  int64_t ntask = L->nb * L->Cg;
  em__parallel_for(ntask, conv_grain(L->kh * L->kw * L->OH * L->OW), SFX(im2col_range), &J);
}

/* The adjoint: img[n][c0+c] += the columns that read from it. One task per
 * (image, channel) plane, so tasks never write the same memory. */
static void SFX(col2im_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(lower_job) *J = vctx;
  const conv_lower *L = J->L;
  const int64_t P = L->OH * L->OW, ld = L->nb * P;
  T *img = (T *)J->img;
  for (int64_t t = begin; t < end; t++) {
    int64_t n = t / L->Cg, c = t % L->Cg;
    T *plane = img + ((n * L->Ctot) + L->c0 + c) * L->IH * L->IW;
    for (int64_t i = 0; i < L->kh; i++) {
      for (int64_t j = 0; j < L->kw; j++) {
        const T *row = J->col + ((c * L->kh + i) * L->kw + j) * ld + n * P;
        int64_t offw = j * L->dw - L->pw, lo, hi;
        conv_valid_range(L->OW, L->IW, L->sw, offw, &lo, &hi);
        for (int64_t oh = 0; oh < L->OH; oh++) {
          int64_t ih = oh * L->sh - L->ph + i * L->dh;
          if (ih < 0 || ih >= L->IH) continue;
          const T *src = row + oh * L->OW;
          T *dst = plane + ih * L->IW + offw;
          if (L->sw == 1) {
            SFX(add_row)(dst + lo, src + lo, hi - lo);
          } else {
            const int64_t s = L->sw;
            for (int64_t ow = lo; ow < hi; ow++) dst[ow * s] += src[ow];
          }
        }
      }
    }
  }
}

static void SFX(col2im)(const conv_lower *L, const T *col, T *img) {
  SFX(lower_job) J = {L, img, (T *)col};
  int64_t ntask = L->nb * L->Cg;
  em__parallel_for(ntask, conv_grain(L->kh * L->kw * L->OH * L->OW), SFX(col2im_range), &J);
}

/* ---- [nb, Ctot, P] <-> [Cg, nb*P] ------------------------------------------------ */

typedef struct SFX(relayout_job) {
  const T *src;
  T *dst;
  const T *bias; /* [Ctot] or NULL (to_nc only) */
  int64_t nb, Ctot, c0, Cg, P;
  bool accumulate; /* to_nc: dst += instead of = */
} SFX(relayout_job);

/* dst[c][n*P + p] = src[n][c0 + c][p]; task = (n, c). */
static void SFX(to_cn_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(relayout_job) *J = vctx;
  for (int64_t t = begin; t < end; t++) {
    int64_t n = t / J->Cg, c = t % J->Cg;
    memcpy(J->dst + (c * J->nb + n) * J->P, J->src + (n * J->Ctot + J->c0 + c) * J->P,
           sizeof(T) * (size_t)J->P);
  }
}

static void SFX(to_cn)(const T *src, int64_t nb, int64_t Ctot, int64_t c0, int64_t Cg, int64_t P,
                       T *dst) {
  SFX(relayout_job) J = {src, dst, NULL, nb, Ctot, c0, Cg, P, false};
  em__parallel_for(nb * Cg, conv_grain(P), SFX(to_cn_range), &J);
}

/* dst[n][c0 + c][p] (=|+=) src[c][n*P + p] (+ bias[c0 + c]); task = (n, c). */
static void SFX(to_nc_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(relayout_job) *J = vctx;
  const int64_t P = J->P;
  for (int64_t t = begin; t < end; t++) {
    int64_t n = t / J->Cg, c = t % J->Cg;
    const T *s = J->src + (c * J->nb + n) * P;
    T *d = J->dst + (n * J->Ctot + J->c0 + c) * P;
    T b = J->bias ? J->bias[J->c0 + c] : (T)0;
    if (J->accumulate) {
      for (int64_t p = 0; p < P; p++) d[p] += s[p] + b;
    } else {
      for (int64_t p = 0; p < P; p++) d[p] = s[p] + b;
    }
  }
}

static void SFX(to_nc)(const T *src, int64_t nb, int64_t Ctot, int64_t c0, int64_t Cg, int64_t P,
                       const T *bias, bool accumulate, T *dst) {
  SFX(relayout_job) J = {src, dst, bias, nb, Ctot, c0, Cg, P, accumulate};
  em__parallel_for(nb * Cg, conv_grain(P), SFX(to_nc_range), &J);
}

/* out[n][c][p] += bias[c] over [N, C, P]; task = (n, c). */
static void SFX(add_bias_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(relayout_job) *J = vctx;
  for (int64_t t = begin; t < end; t++) {
    T b = J->bias[t % J->Ctot];
    T *d = J->dst + t * J->P;
    for (int64_t p = 0; p < J->P; p++) d[p] += b;
  }
}

/* db[c] = sum over n, p of g[n][c][p]; task = c. */
static void SFX(bias_grad_range)(void *vctx, int64_t begin, int64_t end) {
  const SFX(relayout_job) *J = vctx;
  for (int64_t c = begin; c < end; c++) {
    double acc = 0;
    for (int64_t n = 0; n < J->nb; n++) {
      const T *s = J->src + (n * J->Ctot + c) * J->P;
      T a[16] = {0}; /* independent lanes: vectorisable without -ffast-math */
      int64_t p = 0;
      for (; p + 16 <= J->P; p += 16)
        for (int l = 0; l < 16; l++) a[l] += s[p + l];
      for (; p < J->P; p++) a[0] += s[p];
      for (int l = 0; l < 16; l++) acc += a[l];
    }
    J->dst[c] = (T)acc;
  }
}

static void SFX(bias_grad)(const T *g, int64_t N, int64_t C, int64_t P, T *db) {
  SFX(relayout_job) J = {g, db, NULL, N, C, 0, C, P, false};
  em__parallel_for(C, conv_grain(N * P), SFX(bias_grad_range), &J);
}

/* ---- drivers ------------------------------------------------------------------------ */

/* Images per chunk so that a [K, nb*P] column buffer stays under ~16M
 * elements (at least one image). */
static inline int64_t SFX(chunk_images)(int64_t N, int64_t K, int64_t P) {
  int64_t per = K * P;
  if (per <= 0) return N > 0 ? N : 1;
  int64_t nb = ((int64_t)1 << 18) / per;
  if (nb < 1) nb = 1;
  if (nb > N) nb = N;
  return nb > 0 ? nb : 1;
}

/* out [N, Cout, OH, OW] = conv(x [N, Cin, H, W], w [Cout, Cin/G, kh, kw]) + b.
 * All buffers contiguous; b may be NULL. */
static em_status SFX(conv_forward)(const conv_geom *g, const T *x, const T *w, const T *b, T *out) {
  const int64_t G = g->groups, Cg = g->Cin / G, Coutg = g->Cout / G;
  const int64_t K = Cg * g->kh * g->kw, P = g->OH * g->OW;
  const int64_t nb_max = SFX(chunk_images)(g->N, K, P);
  const size_t ncol = sizeof(T) * (size_t)(K * nb_max * P + 1);
  const size_t ntmp = sizeof(T) * (size_t)(Coutg * nb_max * P + 1);
  T *col = conv_ws_alloc(ncol), *tmp = conv_ws_alloc(ntmp);
  if (!col || !tmp) {
    if (col) conv_ws_free(col, ncol);
    if (tmp) conv_ws_free(tmp, ntmp);
    return em__set_error(EM_ERR_NOMEM, "conv%dd: out of memory for the column buffer",
                         g->spatial);
  }
  for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
    int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max;
    const T *xc = x + n0 * g->Cin * g->H * g->W;
    T *oc = out + n0 * g->Cout * P;
    for (int64_t gi = 0; gi < G; gi++) {
      conv_lower L = {nb, g->Cin, gi * Cg, Cg, g->H, g->W, g->OH, g->OW,
                      g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
      if (K > 0) {
        SFX(im2col)(&L, xc, col);
        GEMM(false, false, Coutg, nb * P, K, (T)1, w + gi * Coutg * K, K, col, nb * P, (T)0, tmp,
             nb * P);
      } else {
        memset(tmp, 0, sizeof(T) * (size_t)(Coutg * nb * P));
      }
      SFX(to_nc)(tmp, nb, g->Cout, gi * Coutg, Coutg, P, b, false, oc);
    }
  }
  conv_ws_free(col, ncol), conv_ws_free(tmp, ntmp);
  return EM_OK;
}

/* Gradients of conv_forward: dx [N, Cin, H, W], dw [Cout, Cin/G, kh, kw],
 * db [Cout]; each may be NULL (not wanted). x is needed for dw, w for dx. */
static em_status SFX(conv_backward)(const conv_geom *g, const T *x, const T *w, const T *go, T *dx,
                                    T *dw, T *db) {
  const int64_t G = g->groups, Cg = g->Cin / G, Coutg = g->Cout / G;
  const int64_t K = Cg * g->kh * g->kw, P = g->OH * g->OW;
  if (db) SFX(bias_grad)(go, g->N, g->Cout, P, db);
  if (dw) memset(dw, 0, sizeof(T) * (size_t)(g->Cout * K));
  if (dx) memset(dx, 0, sizeof(T) * (size_t)(g->N * g->Cin * g->H * g->W));
  if ((!dx && !dw) || K == 0) return EM_OK;
  const int64_t nb_max = SFX(chunk_images)(g->N, K, P);
  const size_t ncol = sizeof(T) * (size_t)(K * nb_max * P + 1);
  const size_t ngot = sizeof(T) * (size_t)(g->Cout * nb_max * P + 1);
  T *col = conv_ws_alloc(ncol), *got = conv_ws_alloc(ngot);
  if (!col || !got) {
    if (col) conv_ws_free(col, ncol);
    if (got) conv_ws_free(got, ngot);
    return em__set_error(EM_ERR_NOMEM, "conv%dd backward: out of memory for the column buffer",
                         g->spatial);
  }
  for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
    int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max;
    SFX(to_cn)(go + n0 * g->Cout * P, nb, g->Cout, 0, g->Cout, P, got);
    for (int64_t gi = 0; gi < G; gi++) {
      conv_lower L = {nb, g->Cin, gi * Cg, Cg, g->H, g->W, g->OH, g->OW,
                      g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
      const T *gog = got + gi * Coutg * nb * P; /* [Coutg, nb*P] */
      if (dw) {
        SFX(im2col)(&L, x + n0 * g->Cin * g->H * g->W, col);
        GEMM(false, true, Coutg, K, nb * P, (T)1, gog, nb * P, col, nb * P, (T)1,
             dw + gi * Coutg * K, K);
      }
      if (dx) {
        GEMM(true, false, K, nb * P, Coutg, (T)1, w + gi * Coutg * K, K, gog, nb * P, (T)0, col,
             nb * P);
        SFX(col2im)(&L, col, dx + n0 * g->Cin * g->H * g->W);
      }
    }
  }
  conv_ws_free(col, ncol), conv_ws_free(got, ngot);
  return EM_OK;
}

/* Transposed convolution: out [N, Cout, OH, OW] from x [N, Cin, H, W] and
 * w [Cin, Cout/G, kh, kw]: the adjoint of a convolution whose input is
 * out and whose output is x. */
static em_status SFX(convt_forward)(const conv_geom *g, const T *x, const T *w, const T *b, T *out) {
  const int64_t G = g->groups, Cg = g->Cin / G, Coutg = g->Cout / G;
  const int64_t Kc = Coutg * g->kh * g->kw, Pin = g->H * g->W, Pout = g->OH * g->OW;
  memset(out, 0, sizeof(T) * (size_t)(g->N * g->Cout * Pout));
  if (Kc > 0 && Cg > 0) {
    const int64_t nb_max = SFX(chunk_images)(g->N, Kc + g->Cin, Pin);
    const size_t ncol = sizeof(T) * (size_t)(Kc * nb_max * Pin + 1);
    const size_t nxt = sizeof(T) * (size_t)(g->Cin * nb_max * Pin + 1);
    T *col = conv_ws_alloc(ncol), *xt = conv_ws_alloc(nxt);
    if (!col || !xt) {
      if (col) conv_ws_free(col, ncol);
      if (xt) conv_ws_free(xt, nxt);
      return em__set_error(EM_ERR_NOMEM, "conv_transpose2d: out of memory for the column buffer");
    }
    for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
      int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max;
      SFX(to_cn)(x + n0 * g->Cin * Pin, nb, g->Cin, 0, g->Cin, Pin, xt);
      for (int64_t gi = 0; gi < G; gi++) {
        /* the lowering of the forward convolution out -> x */
        conv_lower L = {nb, g->Cout, gi * Coutg, Coutg, g->OH, g->OW, g->H, g->W,
                        g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
        GEMM(true, false, Kc, nb * Pin, Cg, (T)1, w + gi * Cg * Kc, Kc, xt + gi * Cg * nb * Pin,
             nb * Pin, (T)0, col, nb * Pin);
        SFX(col2im)(&L, col, out + n0 * g->Cout * Pout);
      }
    }
    conv_ws_free(col, ncol), conv_ws_free(xt, nxt);
  }
  if (b) {
    SFX(relayout_job) J = {NULL, out, b, g->N, g->Cout, 0, g->Cout, Pout, true};
    em__parallel_for(g->N * g->Cout, conv_grain(Pout), SFX(add_bias_range), &J);
  }
  return EM_OK;
}

static em_status SFX(convt_backward)(const conv_geom *g, const T *x, const T *w, const T *go,
                                     T *dx, T *dw, T *db) {
  const int64_t G = g->groups, Cg = g->Cin / G, Coutg = g->Cout / G;
  const int64_t Kc = Coutg * g->kh * g->kw, Pin = g->H * g->W, Pout = g->OH * g->OW;
  if (db) SFX(bias_grad)(go, g->N, g->Cout, Pout, db);
  if (dw) memset(dw, 0, sizeof(T) * (size_t)(g->Cin * Kc));
  if (dx) memset(dx, 0, sizeof(T) * (size_t)(g->N * g->Cin * Pin));
  if ((!dx && !dw) || Kc == 0 || Cg == 0) return EM_OK;
  const int64_t nb_max = SFX(chunk_images)(g->N, Kc + g->Cin, Pin);
  const size_t ncol = sizeof(T) * (size_t)(Kc * nb_max * Pin + 1);
  const size_t nxt = sizeof(T) * (size_t)(g->Cin * nb_max * Pin + 1);
  T *col = conv_ws_alloc(ncol), *xt = conv_ws_alloc(nxt);
  if (!col || !xt) {
    if (col) conv_ws_free(col, ncol);
    if (xt) conv_ws_free(xt, nxt);
    return em__set_error(EM_ERR_NOMEM,
                         "conv_transpose2d backward: out of memory for the column buffer");
  }
  for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
    int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max;
    if (dw) SFX(to_cn)(x + n0 * g->Cin * Pin, nb, g->Cin, 0, g->Cin, Pin, xt);
    for (int64_t gi = 0; gi < G; gi++) {
      conv_lower L = {nb, g->Cout, gi * Coutg, Coutg, g->OH, g->OW, g->H, g->W,
                      g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
      SFX(im2col)(&L, go + n0 * g->Cout * Pout, col); /* [Kc, nb*Pin] */
      if (dw)
        GEMM(false, true, Cg, Kc, nb * Pin, (T)1, xt + gi * Cg * nb * Pin, nb * Pin, col,
             nb * Pin, (T)1, dw + gi * Cg * Kc, Kc);
      if (dx) /* reuses xt's rows of this group: they are not needed again */
        GEMM(false, false, Cg, nb * Pin, Kc, (T)1, w + gi * Cg * Kc, Kc, col, nb * Pin, (T)0,
             xt + gi * Cg * nb * Pin, nb * Pin);
    }
    if (dx) SFX(to_nc)(xt, nb, g->Cin, 0, g->Cin, Pin, NULL, false, dx + n0 * g->Cin * Pin);
  }
  conv_ws_free(col, ncol), conv_ws_free(xt, nxt);
  return EM_OK;
}

#undef T
#undef SFX
#undef GEMM
