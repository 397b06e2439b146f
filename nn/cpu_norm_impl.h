/* CPU normalisation kernels, instantiated per compute type by nn/norm.c:
 *
 *     #define T float
 *     #define SFX(name) name##_f32
 *     #include "nn/cpu_norm_impl.h"
 *
 * Batch norm works on x [N, C, S] (S: the product of the dims after C)
 * and runs one task per channel; layer norm on rows [M, D] (one task per
 * row, a second pass over column blocks for the parameter gradients);
 * group norm on [N, C, S] with one task per (image, group). Statistics
 * accumulate in double from vectorisable partial sums in T. Backward uses
 * the closed forms
 *
 *     dx = w * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
 *
 * over the normalised set (batch statistics), or dx = w * rstd * dy (fixed
 * statistics, batch norm in eval mode).
 *
 * No header guard: included once per type. */

#ifndef T
#error "define T and SFX before including nn/cpu_norm_impl.h"
#endif

/* ---- vectorisable partial sums (8 lanes; no -ffast-math needed) --------------------- */

static inline double SFX(sum)(const T *p, int64_t n) {
  T a[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) a[l] += p[i + l];
  double s = 0;
  for (int l = 0; l < 8; l++) s += a[l];
  for (; i < n; i++) s += p[i];
  return s;
}

/* sum of (p - m)^2 */
static inline double SFX(ssd)(const T *p, int64_t n, T m) {
  T a[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) {
      T d = p[i + l] - m;
      a[l] += d * d;
    }
  double s = 0;
  for (int l = 0; l < 8; l++) s += a[l];
  for (; i < n; i++) s += (double)(p[i] - m) * (p[i] - m);
  return s;
}

/* *sdy += sum dy; *sdyx += sum dy * (x - m) */
static inline void SFX(dot2)(const T *dy, const T *x, int64_t n, T m, double *sdy, double *sdyx) {
  T a[8] = {0}, b[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) {
      a[l] += dy[i + l];
      b[l] += dy[i + l] * (x[i + l] - m);
    }
  double s = 0, t = 0;
  for (int l = 0; l < 8; l++) s += a[l], t += b[l];
  for (; i < n; i++) s += dy[i], t += (double)dy[i] * (x[i] - m);
  *sdy += s;
  *sdyx += t;
}

/* y = x * scale + shift */
static inline void SFX(affine)(const T *x, int64_t n, T scale, T shift, T *y) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
}

/* dx = a * dy + k * (x - m) + c */
static inline void SFX(affine_grad)(const T *dy, const T *x, int64_t n, T a, T k, T m, T c, T *dx) {
  for (int64_t i = 0; i < n; i++) dx[i] = a * dy[i] + k * (x[i] - m) + c;
}

/* ---- batch norm ---------------------------------------------------------------------- */

typedef struct SFX(bn_job) {
  int64_t N, C, S;
  const T *x, *w, *b, *dy;  /* w, b may be NULL */
  T *y, *dx;
  double *mean, *invstd;    /* [C]: computed (batch stats) or given (eval) */
  double *var;              /* [C] biased batch variance (forward, batch stats) */
  double *dw, *db;          /* [C] backward sums */
  bool batch_stats;
  double eps;
} SFX(bn_job);

/* [N, C] input (S == 1): a channel's values are C apart, so a task walks
 * its block of channels row by row instead. */
static void SFX(bn_fwd_rows)(const SFX(bn_job) *J, int64_t c0, int64_t c1) {
  const int64_t N = J->N, C = J->C;
  if (J->batch_stats) {
    for (int64_t c = c0; c < c1; c++) J->mean[c] = 0, J->var[c] = 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = c0; c < c1; c++) J->mean[c] += J->x[n * C + c];
    for (int64_t c = c0; c < c1; c++) J->mean[c] = N > 0 ? J->mean[c] / (double)N : 0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = c0; c < c1; c++) {
        double d = J->x[n * C + c] - J->mean[c];
        J->var[c] += d * d;
      }
    for (int64_t c = c0; c < c1; c++) {
      J->var[c] = N > 0 ? J->var[c] / (double)N : 0;
      J->invstd[c] = 1.0 / sqrt(J->var[c] + J->eps);
    }
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = c0; c < c1; c++) {
      double w = J->w ? (double)J->w[c] : 1.0, b = J->b ? (double)J->b[c] : 0.0;
      J->y[n * C + c] = (T)((J->x[n * C + c] - J->mean[c]) * J->invstd[c] * w + b);
    }
}

static void SFX(bn_bwd_rows)(const SFX(bn_job) *J, int64_t c0, int64_t c1) {
  const int64_t N = J->N, C = J->C;
  for (int64_t c = c0; c < c1; c++) J->db[c] = 0, J->dw[c] = 0; /* dw holds sum dy (x - mean) */
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = c0; c < c1; c++) {
      double dy = J->dy[n * C + c];
      J->db[c] += dy;
      J->dw[c] += dy * (J->x[n * C + c] - J->mean[c]);
    }
  if (J->dx) {
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = c0; c < c1; c++) {
        double w = J->w ? (double)J->w[c] : 1.0, a = w * J->invstd[c];
        double v = a * J->dy[n * C + c];
        if (J->batch_stats && N > 0)
          v += -a * J->invstd[c] * J->invstd[c] * J->dw[c] / (double)N *
                   (J->x[n * C + c] - J->mean[c]) -
               a * J->db[c] / (double)N;
        J->dx[n * C + c] = (T)v;
      }
  }
  for (int64_t c = c0; c < c1; c++) J->dw[c] *= J->invstd[c];
}

static void SFX(bn_fwd_range)(void *vctx, int64_t c0, int64_t c1) {
  const SFX(bn_job) *J = vctx;
  const int64_t N = J->N, C = J->C, S = J->S;
  if (S == 1) {
    SFX(bn_fwd_rows)(J, c0, c1);
    return;
  }
  for (int64_t c = c0; c < c1; c++) {
    double mean, invstd;
    if (J->batch_stats) {
      double s = 0;
      for (int64_t n = 0; n < N; n++) s += SFX(sum)(J->x + (n * C + c) * S, S);
      int64_t M = N * S;
      mean = M > 0 ? s / (double)M : 0;
      double q = 0;
      for (int64_t n = 0; n < N; n++) q += SFX(ssd)(J->x + (n * C + c) * S, S, (T)mean);
      double var = M > 0 ? q / (double)M : 0;
      invstd = 1.0 / sqrt(var + J->eps);
      J->mean[c] = mean, J->var[c] = var, J->invstd[c] = invstd;
    } else {
      mean = J->mean[c], invstd = J->invstd[c];
    }
    double w = J->w ? (double)J->w[c] : 1.0, b = J->b ? (double)J->b[c] : 0.0;
    T scale = (T)(w * invstd), shift = (T)(b - mean * w * invstd);
    for (int64_t n = 0; n < N; n++)
      SFX(affine)(J->x + (n * C + c) * S, S, scale, shift, J->y + (n * C + c) * S);
  }
}

static void SFX(bn_bwd_range)(void *vctx, int64_t c0, int64_t c1) {
  const SFX(bn_job) *J = vctx;
  const int64_t N = J->N, C = J->C, S = J->S, M = N * S;
  if (S == 1) {
    SFX(bn_bwd_rows)(J, c0, c1);
    return;
  }
  for (int64_t c = c0; c < c1; c++) {
    double mean = J->mean[c], invstd = J->invstd[c];
    double sdy = 0, sdyx = 0;
    for (int64_t n = 0; n < N; n++)
      SFX(dot2)(J->dy + (n * C + c) * S, J->x + (n * C + c) * S, S, (T)mean, &sdy, &sdyx);
    J->db[c] = sdy;
    J->dw[c] = sdyx * invstd;
    if (!J->dx) continue;
    double w = J->w ? (double)J->w[c] : 1.0, a = w * invstd, k = 0, cst = 0;
    if (J->batch_stats && M > 0) {
      k = -a * invstd * invstd * sdyx / (double)M;
      cst = -a * sdy / (double)M;
    }
    for (int64_t n = 0; n < N; n++)
      SFX(affine_grad)(J->dy + (n * C + c) * S, J->x + (n * C + c) * S, S, (T)a, (T)k, (T)mean,
                       (T)cst, J->dx + (n * C + c) * S);
  }
}

/* ---- layer norm ------------------------------------------------------------------------- */

typedef struct SFX(ln_job) {
  int64_t M, D;
  const T *x, *w, *b, *dy; /* w, b [D] or NULL */
  T *y, *dx;
  double *mean, *rstd;     /* [M] */
  double *dw, *db;         /* [D] */
  double eps;
} SFX(ln_job);

static void SFX(ln_fwd_range)(void *vctx, int64_t r0, int64_t r1) {
  const SFX(ln_job) *J = vctx;
  const int64_t D = J->D;
  for (int64_t r = r0; r < r1; r++) {
    const T *x = J->x + r * D;
    T *y = J->y + r * D;
    double mean = D > 0 ? SFX(sum)(x, D) / (double)D : 0;
    double var = D > 0 ? SFX(ssd)(x, D, (T)mean) / (double)D : 0;
    double rstd = 1.0 / sqrt(var + J->eps);
    J->mean[r] = mean, J->rstd[r] = rstd;
    T tm = (T)mean, tr = (T)rstd;
    if (J->w && J->b) {
      for (int64_t j = 0; j < D; j++) y[j] = (x[j] - tm) * tr * J->w[j] + J->b[j];
    } else if (J->w) {
      for (int64_t j = 0; j < D; j++) y[j] = (x[j] - tm) * tr * J->w[j];
    } else if (J->b) {
      for (int64_t j = 0; j < D; j++) y[j] = (x[j] - tm) * tr + J->b[j];
    } else {
      for (int64_t j = 0; j < D; j++) y[j] = (x[j] - tm) * tr;
    }
  }
}

/* dx for rows [r0, r1) */
static void SFX(ln_bwd_range)(void *vctx, int64_t r0, int64_t r1) {
  const SFX(ln_job) *J = vctx;
  const int64_t D = J->D;
  for (int64_t r = r0; r < r1; r++) {
    const T *x = J->x + r * D, *dy = J->dy + r * D;
    T *dx = J->dx + r * D;
    double mean = J->mean[r], rstd = J->rstd[r];
    /* g = dy * w; sums of g and g * (x - mean) */
    double sg = 0, sgx = 0;
    if (J->w) {
      for (int64_t j = 0; j < D; j++) {
        double g = (double)dy[j] * J->w[j];
        sg += g;
        sgx += g * (x[j] - mean);
      }
    } else {
      SFX(dot2)(dy, x, D, (T)mean, &sg, &sgx);
    }
    T k = (T)(-rstd * rstd * rstd * sgx / (double)D), cst = (T)(-rstd * sg / (double)D);
    T tm = (T)mean, tr = (T)rstd;
    if (J->w) {
      for (int64_t j = 0; j < D; j++) dx[j] = tr * dy[j] * J->w[j] + k * (x[j] - tm) + cst;
    } else {
      SFX(affine_grad)(dy, x, D, tr, k, tm, cst, dx);
    }
  }
}

/* dw, db for columns [j0, j1): sums over rows */
static void SFX(ln_param_range)(void *vctx, int64_t j0, int64_t j1) {
  const SFX(ln_job) *J = vctx;
  const int64_t D = J->D;
  for (int64_t j = j0; j < j1; j++) J->dw[j] = 0, J->db[j] = 0;
  for (int64_t r = 0; r < J->M; r++) {
    const T *x = J->x + r * D, *dy = J->dy + r * D;
    double mean = J->mean[r], rstd = J->rstd[r];
    for (int64_t j = j0; j < j1; j++) {
      J->db[j] += dy[j];
      J->dw[j] += (double)dy[j] * (x[j] - mean) * rstd;
    }
  }
}

/* ---- group norm ---------------------------------------------------------------------------- */

typedef struct SFX(gn_job) {
  int64_t N, C, S, G;
  const T *x, *w, *b, *dy; /* w, b [C] or NULL */
  T *y, *dx;
  double *mean, *rstd;     /* [N*G] */
  double *sdy, *sdyx;      /* [N*C]: per (n, c) sums of dy and dy*(x - mean) */
  double eps;
} SFX(gn_job);

static void SFX(gn_fwd_range)(void *vctx, int64_t t0, int64_t t1) {
  const SFX(gn_job) *J = vctx;
  const int64_t Cg = J->C / J->G, D = Cg * J->S;
  for (int64_t t = t0; t < t1; t++) { /* t = n * G + g */
    int64_t n = t / J->G, g = t % J->G;
    const T *x = J->x + (n * J->C + g * Cg) * J->S;
    T *y = J->y + (n * J->C + g * Cg) * J->S;
    double mean = D > 0 ? SFX(sum)(x, D) / (double)D : 0;
    double var = D > 0 ? SFX(ssd)(x, D, (T)mean) / (double)D : 0;
    double rstd = 1.0 / sqrt(var + J->eps);
    J->mean[t] = mean, J->rstd[t] = rstd;
    for (int64_t c = 0; c < Cg; c++) {
      int64_t ch = g * Cg + c;
      double w = J->w ? (double)J->w[ch] : 1.0, b = J->b ? (double)J->b[ch] : 0.0;
      SFX(affine)(x + c * J->S, J->S, (T)(w * rstd), (T)(b - mean * w * rstd), y + c * J->S);
    }
  }
}

static void SFX(gn_bwd_range)(void *vctx, int64_t t0, int64_t t1) {
  const SFX(gn_job) *J = vctx;
  const int64_t Cg = J->C / J->G, S = J->S, D = Cg * S;
  for (int64_t t = t0; t < t1; t++) {
    int64_t n = t / J->G, g = t % J->G;
    const T *x = J->x + (n * J->C + g * Cg) * S, *dy = J->dy + (n * J->C + g * Cg) * S;
    double mean = J->mean[t], rstd = J->rstd[t];
    /* A = sum_c w_c sdy_c, B = sum_c w_c sdyx_c over the group */
    double A = 0, B = 0;
    for (int64_t c = 0; c < Cg; c++) {
      int64_t ch = g * Cg + c;
      double s1 = 0, s2 = 0;
      SFX(dot2)(dy + c * S, x + c * S, S, (T)mean, &s1, &s2);
      J->sdy[n * J->C + ch] = s1, J->sdyx[n * J->C + ch] = s2;
      double w = J->w ? (double)J->w[ch] : 1.0;
      A += w * s1, B += w * s2;
    }
    if (!J->dx || D == 0) continue;
    /* dx = rstd w dy - rstd A / D - rstd^3 (x - mean) B / D */
    T k = (T)(-rstd * rstd * rstd * B / (double)D), cst = (T)(-rstd * A / (double)D);
    for (int64_t c = 0; c < Cg; c++) {
      int64_t ch = g * Cg + c;
      double w = J->w ? (double)J->w[ch] : 1.0;
      SFX(affine_grad)(dy + c * S, x + c * S, S, (T)(rstd * w), k, (T)mean, cst,
                       J->dx + (n * J->C + ch) * S);
    }
  }
}

#undef T
#undef SFX
