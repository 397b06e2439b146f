/* conv1d, conv2d, conv_transpose2d: forward and gradients against naive
 * reference loops (double) written here, gradcheck in float64, modules
 * (parameter shapes, init bounds, repr), and every error. */
#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* A tensor of shape s with values uniform in [-1, 1). layout 1: a
 * non-contiguous view (the last two dims swapped in memory). */
static em_tensor *rnd(em_dtype dt, int layout, int ndim, const int64_t *s) {
  if (layout == 1 && ndim >= 2) {
    int64_t sw[EM_MAX_DIMS];
    memcpy(sw, s, sizeof(int64_t) * (size_t)ndim);
    sw[ndim - 1] = s[ndim - 2], sw[ndim - 2] = s[ndim - 1];
    em_tensor *b = em_tensor_empty(ndim, sw, dt);
    em_tensor_uniform_(b, -1, 1, NULL);
    em_tensor *t = em_tensor_transpose(b, ndim - 2, ndim - 1);
    em_tensor_release(b);
    return t;
  }
  em_tensor *t = em_tensor_empty(ndim, s, dt);
  em_tensor_uniform_(t, -1, 1, NULL);
  return t;
}
#define RND(dt, layout, ...) rnd(dt, layout, EM_DIMS(__VA_ARGS__))

/* The elements of t in logical order as doubles (malloc'd). */
static double *vals(em_tensor *t) {
  double *v = malloc(sizeof(double) * (size_t)(t->numel + 1));
  for (int64_t i = 0; i < t->numel; i++) v[i] = em_test_get(t, i);
  return v;
}

/* Geometry of a test case (2-D terms; conv1d uses H = kh = 1). */
typedef struct geo {
  int64_t N, C, H, W, Co, kh, kw, sh, sw, ph, pw, dh, dw, g;
  int64_t oph, opw; /* transposed only */
  bool bias;
} geo;

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* Naive convolution with its gradients for the output gradient go:
 * y [N, Co, OH, OW]; dx, dw, db accumulate (zeroed by the caller). */
static void ref_conv(const geo *q, const double *x, const double *w, const double *b,
                     const double *go, double *y, double *dx, double *dw, double *db) {
  int64_t OH = out_size(q->H, q->kh, q->sh, q->ph, q->dh), OW = out_size(q->W, q->kw, q->sw, q->pw, q->dw);
  int64_t Cg = q->C / q->g, Cog = q->Co / q->g;
  for (int64_t n = 0; n < q->N; n++)
    for (int64_t co = 0; co < q->Co; co++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          int64_t oi = ((n * q->Co + co) * OH + oh) * OW + ow;
          double acc = b ? b[co] : 0, gg = go ? go[oi] : 0;
          if (db) db[co] += gg;
          int64_t grp = co / Cog;
          for (int64_t c = 0; c < Cg; c++)
            for (int64_t i = 0; i < q->kh; i++)
              for (int64_t j = 0; j < q->kw; j++) {
                int64_t ih = oh * q->sh - q->ph + i * q->dh, iw = ow * q->sw - q->pw + j * q->dw;
                if (ih < 0 || ih >= q->H || iw < 0 || iw >= q->W) continue;
                int64_t xi = ((n * q->C + grp * Cg + c) * q->H + ih) * q->W + iw;
                int64_t wi = ((co * Cg + c) * q->kh + i) * q->kw + j;
                acc += x[xi] * w[wi];
                if (dx) dx[xi] += gg * w[wi];
                if (dw) dw[wi] += gg * x[xi];
              }
          y[oi] = acc;
        }
}

/* Naive transposed convolution: x [N, C, H, W], w [C, Co/g, kh, kw]. */
static void ref_convt(const geo *q, const double *x, const double *w, const double *b,
                      const double *go, double *y, double *dx, double *dw, double *db) {
  int64_t OH = (q->H - 1) * q->sh - 2 * q->ph + q->dh * (q->kh - 1) + q->oph + 1;
  int64_t OW = (q->W - 1) * q->sw - 2 * q->pw + q->dw * (q->kw - 1) + q->opw + 1;
  int64_t Cg = q->C / q->g, Cog = q->Co / q->g;
  for (int64_t n = 0; n < q->N; n++)
    for (int64_t co = 0; co < q->Co; co++)
      for (int64_t p = 0; p < OH * OW; p++) {
        int64_t oi = (n * q->Co + co) * OH * OW + p;
        y[oi] = b ? b[co] : 0;
        if (db && go) db[co] += go[oi];
      }
  for (int64_t n = 0; n < q->N; n++)
    for (int64_t c = 0; c < q->C; c++) {
      int64_t grp = c / Cg;
      for (int64_t ih = 0; ih < q->H; ih++)
        for (int64_t iw = 0; iw < q->W; iw++) {
          int64_t xi = ((n * q->C + c) * q->H + ih) * q->W + iw;
          for (int64_t co = 0; co < Cog; co++)
            for (int64_t i = 0; i < q->kh; i++)
              for (int64_t j = 0; j < q->kw; j++) {
                int64_t oh = ih * q->sh - q->ph + i * q->dh, ow = iw * q->sw - q->pw + j * q->dw;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                int64_t oi = ((n * q->Co + grp * Cog + co) * OH + oh) * OW + ow;
                int64_t wi = ((c * Cog + co) * q->kh + i) * q->kw + j;
                y[oi] += x[xi] * w[wi];
                if (go) {
                  if (dx) dx[xi] += go[oi] * w[wi];
                  if (dw) dw[wi] += go[oi] * x[xi];
                }
              }
        }
    }
}

typedef enum kind { K_CONV1D, K_CONV2D, K_CONVT2D } kind;

static em_conv_options opts_of(const geo *q, kind k) {
  em_conv_options o = {0};
  if (k == K_CONV1D) {
    o.stride[0] = q->sw, o.padding[0] = q->pw, o.dilation[0] = q->dw;
  } else {
    o.stride[0] = q->sh, o.stride[1] = q->sw;
    o.padding[0] = q->ph, o.padding[1] = q->pw;
    o.dilation[0] = q->dh, o.dilation[1] = q->dw;
    o.output_padding[0] = q->oph, o.output_padding[1] = q->opw;
  }
  o.groups = q->g;
  return o;
}

static em_tensor *run_conv(kind k, em_tensor *x, em_tensor *w, em_tensor *b, const em_conv_options *o) {
  switch (k) {
    case K_CONV1D: return em_nn_f_conv1d(x, w, b, o);
    case K_CONV2D: return em_nn_f_conv2d(x, w, b, o);
    default: return em_nn_f_conv_transpose2d(x, w, b, o);
  }
}

/* Runs case q of kind k in dtype dt: forward against the reference, then
 * backward with a random output gradient against the reference
 * gradients. unbatched drops the batch dim (N must be 1); layout 1 makes
 * x non-contiguous. Returns 1 on success. */
static int check_case(const char *what, kind k, geo q, em_dtype dt, bool unbatched, int layout,
                      double tol) {
  int ok = 0;
  em_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL, *go = NULL, *gx = NULL, *gw = NULL, *gb = NULL;
  double *xv = NULL, *wv = NULL, *bv = NULL, *gov = NULL, *yr = NULL, *dxr = NULL, *dwr = NULL, *dbr = NULL;
  bool t = k == K_CONVT2D;
  int64_t OH, OW;
  if (t) {
    OH = (q.H - 1) * q.sh - 2 * q.ph + q.dh * (q.kh - 1) + q.oph + 1;
    OW = (q.W - 1) * q.sw - 2 * q.pw + q.dw * (q.kw - 1) + q.opw + 1;
  } else {
    OH = out_size(q.H, q.kh, q.sh, q.ph, q.dh);
    OW = out_size(q.W, q.kw, q.sw, q.pw, q.dw);
  }
  int64_t xs[4], ws[4], ys[4];
  int nd;
  int64_t w0 = t ? q.C : q.Co, w1 = t ? q.Co / q.g : q.C / q.g;
  if (k == K_CONV1D) {
    int64_t a[3] = {q.N, q.C, q.W}, bb[3] = {w0, w1, q.kw}, c[3] = {q.N, q.Co, OW};
    nd = 3;
    memcpy(xs, a, sizeof a), memcpy(ws, bb, sizeof bb), memcpy(ys, c, sizeof c);
  } else {
    int64_t a[4] = {q.N, q.C, q.H, q.W}, bb[4] = {w0, w1, q.kh, q.kw}, c[4] = {q.N, q.Co, OH, OW};
    nd = 4;
    memcpy(xs, a, sizeof a), memcpy(ws, bb, sizeof bb), memcpy(ys, c, sizeof c);
  }
  int off = unbatched ? 1 : 0;
  x = rnd(dt, layout, nd - off, xs + off);
  w = rnd(dt, 0, nd, ws);
  if (q.bias) b = RND(dt, 0, q.Co);
  em_tensor_set_requires_grad(x, true);
  em_tensor_set_requires_grad(w, true);
  if (b) em_tensor_set_requires_grad(b, true);
  em_conv_options o = opts_of(&q, k);
  y = run_conv(k, x, w, b, &o);
  if (!y) {
    fprintf(stderr, "  %s: %s\n", what, em_last_error());
    goto out;
  }
  if (y->ndim != nd - off || y->dtype != dt) {
    fprintf(stderr, "  %s: result has %d dims, dtype %s\n", what, y->ndim, em_dtype_name((em_dtype)y->dtype));
    goto out;
  }
  for (int d = 0; d < nd - off; d++)
    if (y->shape[d] != ys[d + off]) {
      fprintf(stderr, "  %s: result shape %s\n", what, em__tshape(y));
      goto out;
    }
  go = rnd(dt, 0, nd - off, ys + off);
  xv = vals(x), wv = vals(w), bv = b ? vals(b) : NULL, gov = vals(go);
  int64_t ny = y->numel;
  yr = calloc((size_t)ny + 1, sizeof(double));
  dxr = calloc((size_t)x->numel + 1, sizeof(double));
  dwr = calloc((size_t)w->numel + 1, sizeof(double));
  dbr = calloc((size_t)q.Co + 1, sizeof(double));
  if (k == K_CONV1D) {
    q.H = 1, q.kh = 1, q.sh = 1, q.ph = 0, q.dh = 1;
  }
  (t ? ref_convt : ref_conv)(&q, xv, wv, bv, gov, yr, dxr, dwr, dbr);
  if (!em_test_tensor_close(y, yr, ny, tol, tol, __FILE__, __LINE__, what)) goto out;
  if (em_backward(y, go, false)) {
    fprintf(stderr, "  %s: backward: %s\n", what, em_last_error());
    goto out;
  }
  gx = em_tensor_grad(x), gw = em_tensor_grad(w), gb = b ? em_tensor_grad(b) : NULL;
  if (!gx || !gw || (b && !gb)) {
    fprintf(stderr, "  %s: missing gradient\n", what);
    goto out;
  }
  if (gx->dtype != dt || gw->dtype != dt) {
    fprintf(stderr, "  %s: gradient dtype %s\n", what, em_dtype_name((em_dtype)gx->dtype));
    goto out;
  }
  char buf[160];
  snprintf(buf, sizeof buf, "%s grad x", what);
  if (!em_test_tensor_close(gx, dxr, x->numel, tol, tol, __FILE__, __LINE__, buf)) goto out;
  snprintf(buf, sizeof buf, "%s grad w", what);
  if (!em_test_tensor_close(gw, dwr, w->numel, tol, tol, __FILE__, __LINE__, buf)) goto out;
  snprintf(buf, sizeof buf, "%s grad b", what);
  if (b && !em_test_tensor_close(gb, dbr, q.Co, tol, tol, __FILE__, __LINE__, buf)) goto out;
  ok = 1;
out:
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(b), em_tensor_release(y);
  em_tensor_release(go), em_tensor_release(gx), em_tensor_release(gw), em_tensor_release(gb);
  free(xv), free(wv), free(bv), free(gov), free(yr), free(dxr), free(dwr), free(dbr);
  return ok;
}

/*                    N  C  H  W Co kh kw sh sw ph pw dh dw g oph opw bias */
static const geo conv2d_cases[] = {
    {3, 2, 5, 6, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, true},   /* plain 3x3, batch 3 */
    {3, 3, 7, 6, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, true},   /* stride 2, padding 1 */
    {1, 2, 7, 8, 3, 3, 3, 1, 1, 0, 2, 2, 2, 1, 0, 0, false},  /* dilation 2, batch 1 */
    {3, 4, 5, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0, 0, true},   /* groups 2 */
    {2, 6, 6, 5, 3, 2, 2, 1, 2, 0, 1, 2, 1, 3, 0, 0, true},   /* groups 3, mixed */
    {3, 2, 6, 7, 3, 2, 3, 2, 1, 1, 0, 1, 2, 1, 0, 0, true},   /* non-square kernel */
    {2, 3, 4, 4, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, true},   /* 1x1 */
    {2, 1, 9, 9, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, true},   /* one input channel, big pad */
    {2, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, true},   /* kernel = input */
};

EM_TEST(conv2d_matches_reference) {
  for (size_t i = 0; i < sizeof conv2d_cases / sizeof conv2d_cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "conv2d case %zu f64", i);
    ASSERT_TRUE(check_case(what, K_CONV2D, conv2d_cases[i], EM_FLOAT64, false, 0, 1e-10));
    snprintf(what, sizeof what, "conv2d case %zu f32", i);
    ASSERT_TRUE(check_case(what, K_CONV2D, conv2d_cases[i], EM_FLOAT32, false, 0, 1e-4));
    snprintf(what, sizeof what, "conv2d case %zu f32 strided", i);
    ASSERT_TRUE(check_case(what, K_CONV2D, conv2d_cases[i], EM_FLOAT32, false, 1, 1e-4));
  }
}

EM_TEST(conv2d_unbatched_and_low_precision) {
  geo q = {1, 4, 6, 5, 6, 3, 2, 2, 1, 1, 1, 1, 2, 2, 0, 0, true};
  ASSERT_TRUE(check_case("unbatched f64", K_CONV2D, q, EM_FLOAT64, true, 0, 1e-10));
  ASSERT_TRUE(check_case("unbatched f32 strided", K_CONV2D, q, EM_FLOAT32, true, 1, 1e-4));
  geo r = {2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, true};
  ASSERT_TRUE(check_case("bf16", K_CONV2D, r, EM_BFLOAT16, false, 0, 0.1));
  ASSERT_TRUE(check_case("f16", K_CONV2D, r, EM_FLOAT16, false, 0, 2e-2));
}

/* Enough images and channels to use several column chunks' worth of
 * threads and the batched GEMM path with a larger problem. */
EM_TEST(conv2d_larger_problem) {
  geo q = {9, 8, 12, 11, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, true};
  ASSERT_TRUE(check_case("larger f32", K_CONV2D, q, EM_FLOAT32, false, 0, 1e-4));
  geo r = {4, 8, 10, 10, 8, 5, 5, 2, 2, 2, 2, 1, 1, 4, 0, 0, true};
  ASSERT_TRUE(check_case("larger grouped f64", K_CONV2D, r, EM_FLOAT64, false, 0, 1e-10));
}

EM_TEST(conv1d_matches_reference) {
  /*        N  C  H  W Co kh kw sh sw ph pw dh dw g */
  geo cases[] = {{3, 2, 1, 9, 4, 1, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, true},
                 {2, 4, 1, 11, 6, 1, 3, 1, 2, 0, 2, 1, 2, 2, 0, 0, true},
                 {1, 3, 1, 7, 2, 1, 4, 1, 3, 0, 1, 1, 1, 1, 0, 0, false}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "conv1d case %zu f64", i);
    ASSERT_TRUE(check_case(what, K_CONV1D, cases[i], EM_FLOAT64, false, 0, 1e-10));
    snprintf(what, sizeof what, "conv1d case %zu f32 strided", i);
    ASSERT_TRUE(check_case(what, K_CONV1D, cases[i], EM_FLOAT32, false, 1, 1e-4));
  }
  geo u = {1, 3, 1, 8, 2, 1, 3, 1, 1, 0, 1, 1, 1, 1, 0, 0, true};
  ASSERT_TRUE(check_case("conv1d unbatched", K_CONV1D, u, EM_FLOAT64, true, 0, 1e-10));
}

EM_TEST(conv_transpose2d_matches_reference) {
  /*        N  C  H  W Co kh kw sh sw ph pw dh dw g oph opw */
  geo cases[] = {{3, 2, 4, 5, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, true},
                 {2, 3, 4, 3, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, true},
                 {2, 4, 3, 4, 6, 2, 3, 2, 1, 0, 1, 2, 1, 2, 1, 0, true},
                 {1, 2, 5, 5, 4, 3, 2, 1, 3, 1, 0, 2, 1, 2, 1, 2, false},
                 {2, 3, 3, 3, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, true}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "conv_transpose2d case %zu f64", i);
    ASSERT_TRUE(check_case(what, K_CONVT2D, cases[i], EM_FLOAT64, false, 0, 1e-10));
    snprintf(what, sizeof what, "conv_transpose2d case %zu f32 strided", i);
    ASSERT_TRUE(check_case(what, K_CONVT2D, cases[i], EM_FLOAT32, false, 1, 1e-4));
  }
  geo u = {1, 2, 3, 4, 3, 2, 2, 2, 2, 0, 0, 1, 1, 1, 1, 1, true};
  ASSERT_TRUE(check_case("conv_transpose2d unbatched", K_CONVT2D, u, EM_FLOAT64, true, 0, 1e-10));
}

/* A hand-computed case: a 3x3 input of 1..9, a 2x2 kernel of ones, bias
 * 0.5, padding 1, stride 2. */
EM_TEST(conv2d_hand_computed) {
  double xd[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  em_tensor *x = em_tensor_from_data(xd, EM_DIMS(1, 1, 3, 3), EM_FLOAT64);
  em_tensor *w = em_tensor_ones(EM_DIMS(1, 1, 2, 2), EM_FLOAT64);
  em_tensor *b = em_tensor_full(EM_DIMS(1), em_scalar_float(0.5), EM_FLOAT64);
  em_conv_options o = {.stride = {2, 2}, .padding = {1, 1}};
  em_tensor *y = em_nn_f_conv2d(x, w, b, &o);
  ASSERT_SHAPE(y, 1, 1, 2, 2);
  /* windows: {1}, {2,3}, {4,7}, {5,6,8,9} */
  ASSERT_TENSOR_CLOSE(y, ((double[]){1.5, 5.5, 11.5, 28.5}), 0, 1e-12);
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(b), em_tensor_release(y);
}

EM_TEST(conv_zero_sizes) {
  em_tensor *x = RND(EM_FLOAT32, 0, 0, 3, 5, 5), *w = RND(EM_FLOAT32, 0, 4, 3, 3, 3);
  em_tensor_set_requires_grad(w, true);
  em_tensor *y = em_nn_f_conv2d(x, w, NULL, NULL);
  ASSERT_SHAPE(y, 0, 4, 3, 3);
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *gw = em_tensor_grad(w);
  ASSERT_NOTNULL(gw);
  ASSERT_TENSOR_CLOSE(gw, ((double[108]){0}), 0, 0);
  em_tensor_release(gw), em_tensor_release(s), em_tensor_release(y);
  /* zero input channels: the result is the bias */
  em_tensor *x0 = em_tensor_empty(EM_DIMS(2, 0, 4, 4), EM_FLOAT32);
  em_tensor *w0 = em_tensor_empty(EM_DIMS(3, 0, 3, 3), EM_FLOAT32);
  em_tensor *b0 = em_tensor_full(EM_DIMS(3), em_scalar_float(1.5), EM_FLOAT32);
  y = em_nn_f_conv2d(x0, w0, b0, NULL);
  ASSERT_SHAPE(y, 2, 3, 2, 2);
  double e[24];
  for (int i = 0; i < 24; i++) e[i] = 1.5;
  ASSERT_TENSOR_CLOSE(y, e, 0, 0);
  em_tensor_release(y);
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(x0), em_tensor_release(w0),
      em_tensor_release(b0);
}

/* An expanded input (batch stride 0) and a step-sliced weight: the result
 * and the gradients (summed over the expanded batch) against the reference. */
EM_TEST(conv2d_expanded_and_sliced_inputs) {
  geo q = {3, 2, 5, 4, 3, 3, 2, 1, 1, 1, 0, 1, 1, 1, 0, 0, true};
  em_tensor *x1 = RND(EM_FLOAT64, 0, 1, 2, 5, 4);
  em_tensor_set_requires_grad(x1, true);
  em_tensor *x = em_tensor_expand(x1, EM_DIMS(3, 2, 5, 4));
  em_tensor *wb = RND(EM_FLOAT64, 0, 6, 2, 3, 2);
  em_tensor_set_requires_grad(wb, true);
  em_tensor *w = em_tensor_slice(wb, 0, 0, 6, 2); /* rows 0, 2, 4 */
  em_tensor *b = RND(EM_FLOAT64, 0, 3);
  ASSERT_TRUE(x->strides[0] == 0 && !em_tensor_is_contiguous(w));
  em_conv_options o = opts_of(&q, K_CONV2D);
  em_tensor *y = em_nn_f_conv2d(x, w, b, &o);
  ASSERT_SHAPE(y, 3, 3, 5, 3);
  em_tensor *go = RND(EM_FLOAT64, 0, 3, 3, 5, 3);
  double *xv = vals(x), *wv = vals(w), *gov = vals(go);
  double yr[135] = {0}, dxr[120] = {0}, dwr[36] = {0}, dbr[3] = {0};
  ref_conv(&q, xv, wv, NULL, gov, yr, dxr, dwr, dbr);
  for (int i = 0; i < 135; i++) yr[i] += em_test_get(b, (i / 15) % 3);
  free(xv), free(wv), free(gov);
  ASSERT_TENSOR_CLOSE(y, yr, 1e-12, 1e-12);
  ASSERT_OK(em_backward(y, go, false));
  em_tensor *gx = em_tensor_grad(x1), *gwb = em_tensor_grad(wb);
  double dx1[40];
  for (int i = 0; i < 40; i++) dx1[i] = dxr[i] + dxr[40 + i] + dxr[80 + i];
  ASSERT_TENSOR_CLOSE(gx, dx1, 1e-12, 1e-12);
  /* wb's gradient: dw in rows 0, 2, 4 and zeros in between */
  double dwb[72] = {0};
  for (int r = 0; r < 3; r++) memcpy(dwb + 2 * r * 12, dwr + r * 12, sizeof(double) * 12);
  ASSERT_TENSOR_CLOSE(gwb, dwb, 1e-12, 1e-12);
  em_tensor_release(gx), em_tensor_release(gwb), em_tensor_release(y), em_tensor_release(go);
  em_tensor_release(x1), em_tensor_release(x), em_tensor_release(wb), em_tensor_release(w),
      em_tensor_release(b);
}

/* ---- gradcheck ----------------------------------------------------------------------- */

typedef struct gc_case {
  kind k;
  em_conv_options o;
} gc_case;

static em_tensor *gc_fn(int n, em_tensor *const *in, void *ctx) {
  const gc_case *c = ctx;
  return run_conv(c->k, in[0], in[1], n > 2 ? in[2] : NULL, &c->o);
}

static int gradcheck(const char *what, gc_case *c, int n, em_tensor **in) {
  for (int i = 0; i < n; i++) em_tensor_set_requires_grad(in[i], true);
  em_clear_error();
  em_status st = em_ag_gradcheck(gc_fn, c, n, in, 1e-6, 1e-6, 1e-4);
  for (int i = 0; i < n; i++) em_tensor_release(in[i]);
  if (st) fprintf(stderr, "  gradcheck %s: %s\n", what, em_last_error());
  return st == EM_OK;
}

#define D EM_FLOAT64
EM_TEST(gradcheck_conv2d) {
  gc_case c = {K_CONV2D, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}};
  ASSERT_TRUE(gradcheck("conv2d stride/pad/dil", &c, 3,
                        (em_tensor *[]){RND(D, 0, 2, 2, 5, 6), RND(D, 0, 3, 2, 3, 2), RND(D, 0, 3)}));
  gc_case g = {K_CONV2D, {.padding = {1, 1}, .groups = 2}};
  ASSERT_TRUE(gradcheck("conv2d groups", &g, 3,
                        (em_tensor *[]){RND(D, 1, 2, 4, 4, 3), RND(D, 0, 4, 2, 2, 2), RND(D, 0, 4)}));
  gc_case nb = {K_CONV2D, {.stride = {2, 2}}};
  ASSERT_TRUE(gradcheck("conv2d no bias, unbatched", &nb, 2,
                        (em_tensor *[]){RND(D, 0, 2, 5, 5), RND(D, 0, 3, 2, 3, 3)}));
}

EM_TEST(gradcheck_conv1d) {
  gc_case c = {K_CONV1D, {.stride = {2}, .padding = {1}, .dilation = {2}, .groups = 2}};
  ASSERT_TRUE(gradcheck("conv1d", &c, 3,
                        (em_tensor *[]){RND(D, 0, 2, 4, 9), RND(D, 0, 4, 2, 3), RND(D, 0, 4)}));
  gc_case u = {.k = K_CONV1D};
  ASSERT_TRUE(gradcheck("conv1d unbatched", &u, 3,
                        (em_tensor *[]){RND(D, 1, 3, 6), RND(D, 0, 2, 3, 2), RND(D, 0, 2)}));
}

EM_TEST(gradcheck_conv_transpose2d) {
  gc_case c = {K_CONVT2D, {.stride = {2, 2}, .padding = {1, 0}, .output_padding = {1, 1}}};
  ASSERT_TRUE(gradcheck("conv_transpose2d", &c, 3,
                        (em_tensor *[]){RND(D, 0, 2, 2, 3, 3), RND(D, 0, 2, 3, 3, 2), RND(D, 0, 3)}));
  gc_case g = {K_CONVT2D, {.dilation = {2, 1}, .groups = 2}};
  ASSERT_TRUE(gradcheck("conv_transpose2d groups", &g, 3,
                        (em_tensor *[]){RND(D, 1, 1, 4, 3, 3), RND(D, 0, 4, 1, 2, 2), RND(D, 0, 2)}));
  gc_case u = {K_CONVT2D, {.stride = {1, 2}}};
  ASSERT_TRUE(gradcheck("conv_transpose2d unbatched no bias", &u, 2,
                        (em_tensor *[]){RND(D, 0, 2, 3, 2), RND(D, 0, 2, 2, 2, 3)}));
}

/* Only some inputs need a gradient; the others get none. */
EM_TEST(conv_partial_gradients) {
  em_tensor *x = RND(EM_FLOAT32, 0, 2, 3, 5, 5), *w = RND(EM_FLOAT32, 0, 4, 3, 3, 3),
            *b = RND(EM_FLOAT32, 0, 4);
  em_tensor_set_requires_grad(w, true);
  em_tensor *y = em_nn_f_conv2d(x, w, b, NULL);
  ASSERT_NOTNULL(y);
  ASSERT_STREQ(em_tensor_grad_fn_name(y), "ConvolutionBackward0");
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *gw = em_tensor_grad(w), *gx = em_tensor_grad(x);
  ASSERT_NOTNULL(gw);
  ASSERT_TRUE(gx == NULL);
  ASSERT_SHAPE(gw, 4, 3, 3, 3);
  em_tensor_release(gw), em_tensor_release(s), em_tensor_release(y);
  /* without grad mode nothing is recorded */
  bool prev = em_set_grad_enabled(false);
  y = em_nn_f_conv2d(x, w, b, NULL);
  em_set_grad_enabled(prev);
  ASSERT_NOTNULL(y);
  ASSERT_TRUE(!em_tensor_requires_grad(y));
  em_tensor_release(y);
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(b);
}

/* ---- errors ---------------------------------------------------------------------------- */

EM_TEST(conv_errors) {
  em_tensor *x4 = RND(EM_FLOAT32, 0, 2, 3, 5, 5), *w4 = RND(EM_FLOAT32, 0, 4, 3, 3, 3);
  em_tensor *x2 = RND(EM_FLOAT32, 0, 5, 5), *x5 = RND(EM_FLOAT32, 0, 1, 1, 3, 5, 5);
  em_tensor *w3 = RND(EM_FLOAT32, 0, 4, 3, 3), *b3 = RND(EM_FLOAT32, 0, 3);
  em_tensor *xd = RND(EM_FLOAT64, 0, 2, 3, 5, 5), *bd = RND(EM_FLOAT64, 0, 4);
  em_tensor *xl = em_tensor_zeros(EM_DIMS(2, 3, 5, 5), EM_INT64);
  em_conv_options o = {0};
  ASSERT_NULL_ERR(em_nn_f_conv2d(NULL, w4, NULL, NULL), EM_ERR_INVALID, "conv2d: input and weight");
  em_tensor *x0 = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x0, w4, NULL, NULL), EM_ERR_SHAPE, "but got input of size: []");
  em_tensor_release(x0);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x2, w4, NULL, NULL), EM_ERR_SHAPE,
                  "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [5, 5]");
  ASSERT_NULL_ERR(em_nn_f_conv2d(x5, w4, NULL, NULL), EM_ERR_SHAPE,
                  "input to conv2d, but got input of size: [1, 1, 3, 5, 5]");
  ASSERT_NULL_ERR(em_nn_f_conv1d(x4, w3, NULL, NULL), EM_ERR_SHAPE,
                  "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: [2, 3, 5, 5]");
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(x5, w4, NULL, NULL), EM_ERR_SHAPE,
                  "input to conv_transpose2d, but got input of size: [1, 1, 3, 5, 5]");
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w3, NULL, NULL), EM_ERR_SHAPE,
                  "conv2d: expected 4D weight, but got weight of size [4, 3, 3]");
  em_tensor *xc = RND(EM_FLOAT32, 0, 2, 2, 5, 5);
  ASSERT_NULL_ERR(em_nn_f_conv2d(xc, w4, NULL, NULL), EM_ERR_SHAPE,
                  "Given groups=1, weight of size [4, 3, 3, 3], expected input[2, 2, 5, 5] to have 3 "
                  "channels, but got 2 channels instead");
  em_tensor *xu = RND(EM_FLOAT32, 0, 2, 5, 5);
  ASSERT_NULL_ERR(em_nn_f_conv2d(xu, w4, NULL, NULL), EM_ERR_SHAPE,
                  "expected input[1, 2, 5, 5] to have 3 channels, but got 2 channels instead");
  o.groups = 2;
  em_tensor *wg = RND(EM_FLOAT32, 0, 3, 2, 3, 3);
  em_tensor *xg = RND(EM_FLOAT32, 0, 2, 4, 5, 5);
  ASSERT_NULL_ERR(em_nn_f_conv2d(xg, wg, NULL, &o), EM_ERR_SHAPE,
                  "Given groups=2, expected weight to be divisible by 2 at dimension 0, but got "
                  "weight of size [[3, 2, 3, 3]] instead");
  em_tensor *wg1 = RND(EM_FLOAT32, 0, 4, 1, 3, 3);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, wg1, NULL, &o), EM_ERR_SHAPE,
                  "Given groups=2, weight of size [4, 1, 3, 3], expected input[2, 3, 5, 5] to have 2 "
                  "channels, but got 3 channels instead");
  o = (em_conv_options){0};
  em_tensor *wbig = RND(EM_FLOAT32, 0, 4, 3, 6, 3);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, wbig, NULL, NULL), EM_ERR_SHAPE,
                  "Calculated padded input size per channel: (5 x 5). Kernel size: (6 x 3). Kernel "
                  "size can't be greater than actual input size");
  o.padding[0] = 1;
  em_tensor *y = em_nn_f_conv2d(x4, wbig, NULL, &o);
  ASSERT_SHAPE(y, 2, 4, 2, 3);
  em_tensor_release(y);
  o = (em_conv_options){.dilation = {3, 3}};
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, NULL, &o), EM_ERR_SHAPE,
                  "Calculated padded input size per channel: (5 x 5). Kernel size: (7 x 7).");
  em_tensor *x1 = RND(EM_FLOAT32, 0, 1, 3, 5), *w1big = RND(EM_FLOAT32, 0, 4, 3, 6);
  ASSERT_NULL_ERR(em_nn_f_conv1d(x1, w1big, NULL, NULL), EM_ERR_SHAPE,
                  "Calculated padded input size per channel: (5). Kernel size: (6).");
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, b3, NULL), EM_ERR_SHAPE,
                  "Given weight of size [4, 3, 3, 3], expected bias to be 1-dimensional with 4 "
                  "elements, but got bias of size [3] instead");
  o = (em_conv_options){.stride = {-1, 1}};
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, NULL, &o), EM_ERR_INVALID, "non-positive stride is not supported");
  o = (em_conv_options){.padding = {0, -1}};
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, NULL, &o), EM_ERR_INVALID, "negative padding is not supported");
  o = (em_conv_options){.dilation = {-2, 1}};
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, NULL, &o), EM_ERR_INVALID, "non-positive dilation is not supported");
  o = (em_conv_options){.groups = -1};
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, NULL, &o), EM_ERR_INVALID, "non-positive groups is not supported");
  ASSERT_NULL_ERR(em_nn_f_conv2d(xd, w4, NULL, NULL), EM_ERR_DTYPE,
                  "Input type (double) and weight type (float) should be the same");
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w4, bd, NULL), EM_ERR_DTYPE,
                  "Input type (float) and bias type (double) should be the same");
  ASSERT_NULL_ERR(em_nn_f_conv2d(xl, w4, NULL, NULL), EM_ERR_DTYPE, "not implemented for 'Long'");
  em_tensor *w0 = em_tensor_empty(EM_DIMS(0, 3, 3, 3), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, w0, NULL, NULL), EM_ERR_SHAPE,
                  "Given groups=1, expected weight to be at least 1 at dimension 0, but got weight "
                  "of size [0, 3, 3, 3] instead");
  em_tensor *wk0 = em_tensor_empty(EM_DIMS(4, 3, 0, 3), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_conv2d(x4, wk0, NULL, NULL), EM_ERR_SHAPE, "non-positive kernel size");
  /* transposed */
  em_tensor *wt = RND(EM_FLOAT32, 0, 3, 4, 3, 3), *xt = RND(EM_FLOAT32, 0, 1, 2, 5, 5);
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(xt, wt, NULL, NULL), EM_ERR_SHAPE,
                  "Given transposed=1, weight of size [3, 4, 3, 3], expected input[1, 2, 5, 5] to "
                  "have 3 channels, but got 2 channels instead");
  o = (em_conv_options){.groups = 2};
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(x4, wt, NULL, &o), EM_ERR_SHAPE,
                  "Given groups=2, expected weight to be divisible by 2 at dimension 0");
  o = (em_conv_options){.output_padding = {1, 1}};
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(x4, wt, NULL, &o), EM_ERR_INVALID,
                  "output padding must be smaller than either stride or dilation, but got "
                  "output_padding_height: 1 output_padding_width: 1 stride_height: 1 stride_width: "
                  "1 dilation_height: 1 dilation_width: 1");
  o = (em_conv_options){.output_padding = {0, -1}};
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(x4, wt, NULL, &o), EM_ERR_INVALID,
                  "negative output_padding is not supported");
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(x4, wt, b3, NULL), EM_ERR_SHAPE,
                  "Given transposed=1, weight of size [3, 4, 3, 3], expected bias to be "
                  "1-dimensional with 4 elements, but got bias of size [3] instead");
  em_tensor *xs = RND(EM_FLOAT32, 0, 1, 3, 1, 1), *ws1 = RND(EM_FLOAT32, 0, 3, 4, 1, 1);
  o = (em_conv_options){.padding = {1, 1}};
  ASSERT_NULL_ERR(em_nn_f_conv_transpose2d(xs, ws1, NULL, &o), EM_ERR_SHAPE,
                  "Given input size per channel: (1 x 1). Calculated output size per channel: (-1 x "
                  "-1). Output size is too small");
  em_tensor *ts[] = {x4, w4, x2, x5, w3, b3, xd, bd, xl, xc, xu, wg, xg, wg1, wbig, x1, w1big,
                     w0, wk0, wt, xt, xs, ws1};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

/* ---- modules ------------------------------------------------------------------------------ */

static double max_abs(em_tensor *t) {
  double m = 0;
  for (int64_t i = 0; i < t->numel; i++) m = fmax(m, fabs(em_test_get(t, i)));
  return m;
}

EM_TEST(conv_modules) {
  em_module *m = em_nn_conv2d(1, 32, 3, 3, NULL, true);
  ASSERT_NOTNULL(m);
  em_tensor *w = em_module_parameter(m, "weight"), *b = em_module_parameter(m, "bias");
  ASSERT_SHAPE(w, 32, 1, 3, 3);
  ASSERT_SHAPE(b, 32);
  ASSERT_EQ(w->dtype, EM_FLOAT32);
  ASSERT_TRUE(em_tensor_requires_grad(w) && em_tensor_requires_grad(b));
  /* bound 1/sqrt(fan_in) = 1/3, and the values spread over it */
  ASSERT_TRUE(max_abs(w) <= 1.0 / 3 + 1e-6 && max_abs(w) > 0.25);
  ASSERT_TRUE(max_abs(b) <= 1.0 / 3 + 1e-6 && max_abs(b) > 0.2);
  char *r = em_module_repr(m);
  ASSERT_STREQ(r, "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))");
  free(r);
  /* forward is the functional form */
  em_tensor *x = RND(EM_FLOAT32, 0, 2, 1, 6, 6);
  em_tensor *y = em_module_forward(m, x), *e = em_nn_f_conv2d(x, w, b, NULL);
  ASSERT_SHAPE(y, 2, 32, 4, 4);
  bool same = false;
  ASSERT_OK(em_tensor_equal(y, e, &same));
  ASSERT_TRUE(same);
  em_tensor_release(y), em_tensor_release(e), em_tensor_release(x);
  em_module_release(m);

  em_conv_options o = {.stride = {2, 2}, .padding = {1, 1}, .dilation = {2, 2}, .groups = 2};
  m = em_nn_conv2d(2, 4, 3, 5, &o, false);
  ASSERT_NOTNULL(m);
  ASSERT_SHAPE(em_module_parameter(m, "weight"), 4, 1, 3, 5);
  ASSERT_TRUE(em_module_parameter(m, "bias") == NULL);
  ASSERT_TRUE(max_abs(em_module_parameter(m, "weight")) <= 1 / sqrt(15.0) + 1e-6);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "Conv2d(2, 4, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), dilation=(2, 2), "
                  "groups=2, bias=False)");
  free(r);
  em_module_release(m);

  m = em_nn_conv1d(2, 4, 3, NULL, true);
  ASSERT_NOTNULL(m);
  ASSERT_SHAPE(em_module_parameter(m, "weight"), 4, 2, 3);
  ASSERT_SHAPE(em_module_parameter(m, "bias"), 4);
  ASSERT_TRUE(max_abs(em_module_parameter(m, "bias")) <= 1 / sqrt(6.0) + 1e-6);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "Conv1d(2, 4, kernel_size=(3,), stride=(1,))");
  free(r);
  x = RND(EM_FLOAT32, 0, 2, 7);
  y = em_module_forward(m, x);
  ASSERT_SHAPE(y, 4, 5);
  em_tensor_release(y), em_tensor_release(x);
  em_module_release(m);
  o = (em_conv_options){.stride = {2}, .padding = {1}, .dilation = {3}, .groups = 2};
  m = em_nn_conv1d(2, 4, 3, &o, false);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "Conv1d(2, 4, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(3,), groups=2, "
                  "bias=False)");
  free(r);
  em_module_release(m);

  /* transposed: weight [in, out/groups, kh, kw], fan_in from dim 1 */
  o = (em_conv_options){.stride = {2, 2}, .padding = {1, 1}, .output_padding = {1, 1},
                        .dilation = {2, 2}, .groups = 2};
  m = em_nn_conv_transpose2d(2, 4, 3, 3, &o, true);
  ASSERT_NOTNULL(m);
  ASSERT_SHAPE(em_module_parameter(m, "weight"), 2, 2, 3, 3);
  ASSERT_TRUE(max_abs(em_module_parameter(m, "weight")) <= 1 / sqrt(18.0) + 1e-6);
  ASSERT_TRUE(max_abs(em_module_parameter(m, "bias")) <= 1 / sqrt(18.0) + 1e-6);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                  "dilation=(2, 2), output_padding=(1, 1), groups=2)");
  free(r);
  x = RND(EM_FLOAT32, 0, 1, 2, 3, 3);
  y = em_module_forward(m, x);
  ASSERT_SHAPE(y, 1, 4, 8, 8);
  em_tensor_release(y), em_tensor_release(x);
  em_module_release(m);
  m = em_nn_conv_transpose2d(2, 4, 3, 3, NULL, true);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(1, 1))");
  free(r);
  em_module_release(m);

  /* module errors */
  o = (em_conv_options){.groups = 2};
  em_clear_error();
  ASSERT_TRUE(em_nn_conv2d(3, 4, 3, 3, &o, true) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "in_channels must be divisible by groups") != NULL);
  ASSERT_TRUE(em_nn_conv2d(4, 3, 3, 3, &o, true) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "out_channels must be divisible by groups") != NULL);
  ASSERT_TRUE(em_nn_conv_transpose2d(3, 4, 3, 3, &o, true) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "in_channels must be divisible by groups") != NULL);
  o.groups = -2;
  ASSERT_TRUE(em_nn_conv1d(4, 4, 3, &o, true) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "groups must be a positive integer") != NULL);
  ASSERT_TRUE(em_nn_conv2d(-1, 4, 3, 3, NULL, true) == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_INVALID);
  m = em_nn_conv2d(3, 4, 3, 3, NULL, true);
  x = RND(EM_FLOAT32, 0, 1, 2, 5, 5);
  ASSERT_NULL_ERR(em_module_forward(m, x), EM_ERR_SHAPE, "to have 3 channels, but got 2 channels");
  ASSERT_NULL_ERR(em_module_forward_n(m, 2, (em_tensor *[]){x, x}), EM_ERR_INVALID,
                  "Conv2d.forward: takes 1 input, got 2");
  em_tensor_release(x);
  em_module_release(m);
}

EM_TEST_MAIN()
