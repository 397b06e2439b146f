/* max_pool2d (with indices), avg_pool2d, adaptive_avg_pool2d: forward,
 * indices and gradients against naive reference loops (double) written
 * here, hand-computed values (taken from PyTorch 1.13 once), gradcheck,
 * modules and errors. */
#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

static em_tensor *rnd(em_dtype dt, int layout, int ndim, const int64_t *s) {
  if (layout == 1 && ndim >= 2) { /* non-contiguous: last two dims swapped in memory */
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

static double *vals(em_tensor *t) {
  double *v = malloc(sizeof(double) * (size_t)(t->numel + 1));
  for (int64_t i = 0; i < t->numel; i++) v[i] = em_test_get(t, i);
  return v;
}

/* ---- references -------------------------------------------------------------------------- */

typedef struct pgeo {
  int64_t planes, H, W, kh, kw, sh, sw, ph, pw, dh, dw;
  bool ceil_mode, count_include_pad;
} pgeo;

/* Output size as documented for torch.nn.MaxPool2d, with ceil_mode's rule
 * that the last window starts inside the input or the left padding. */
static int64_t ref_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  double v = (double)(in + 2 * p - d * (k - 1) - 1) / (double)s + 1;
  int64_t o = (int64_t)(ceil_mode ? ceil(v) : floor(v));
  if (ceil_mode && (o - 1) * s >= in + p) o--;
  return o;
}

static void ref_max(const pgeo *q, const double *x, const double *go, double *y, int64_t *idx,
                    double *dx) {
  int64_t OH = ref_out(q->H, q->kh, q->sh, q->ph, q->dh, q->ceil_mode);
  int64_t OW = ref_out(q->W, q->kw, q->sw, q->pw, q->dw, q->ceil_mode);
  for (int64_t p = 0; p < q->planes; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double best = -INFINITY;
        int64_t bi = -1;
        for (int64_t i = 0; i < q->kh; i++)
          for (int64_t j = 0; j < q->kw; j++) {
            int64_t ih = oh * q->sh - q->ph + i * q->dh, iw = ow * q->sw - q->pw + j * q->dw;
            if (ih < 0 || ih >= q->H || iw < 0 || iw >= q->W) continue;
            double v = x[(p * q->H + ih) * q->W + iw];
            if (bi < 0 || v > best || isnan(v)) best = v, bi = ih * q->W + iw;
          }
        int64_t o = (p * OH + oh) * OW + ow;
        y[o] = best;
        idx[o] = bi;
        if (go) dx[p * q->H * q->W + bi] += go[o];
      }
}

static void ref_avg(const pgeo *q, const double *x, const double *go, double *y, double *dx) {
  int64_t OH = ref_out(q->H, q->kh, q->sh, q->ph, 1, q->ceil_mode);
  int64_t OW = ref_out(q->W, q->kw, q->sw, q->pw, 1, q->ceil_mode);
  for (int64_t p = 0; p < q->planes; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        /* the window counts padded positions but not the overhang past the padding */
        int64_t n_in = 0, n_pad = 0;
        double s = 0;
        for (int64_t i = 0; i < q->kh; i++)
          for (int64_t j = 0; j < q->kw; j++) {
            int64_t ih = oh * q->sh - q->ph + i, iw = ow * q->sw - q->pw + j;
            bool in_pad_h = ih >= -q->ph && ih < q->H + q->ph, in_pad_w = iw >= -q->pw && iw < q->W + q->pw;
            if (!in_pad_h || !in_pad_w) continue;
            n_pad++;
            if (ih < 0 || ih >= q->H || iw < 0 || iw >= q->W) continue;
            n_in++;
            s += x[(p * q->H + ih) * q->W + iw];
          }
        int64_t o = (p * OH + oh) * OW + ow;
        int64_t div = q->count_include_pad ? n_pad : n_in;
        y[o] = n_in ? s / (double)div : 0;
        if (!go || !n_in) continue;
        for (int64_t i = 0; i < q->kh; i++)
          for (int64_t j = 0; j < q->kw; j++) {
            int64_t ih = oh * q->sh - q->ph + i, iw = ow * q->sw - q->pw + j;
            if (ih < 0 || ih >= q->H || iw < 0 || iw >= q->W) continue;
            dx[(p * q->H + ih) * q->W + iw] += go[o] / (double)div;
          }
      }
}

static void ref_adaptive(int64_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW, const double *x,
                         const double *go, double *y, double *dx) {
  for (int64_t p = 0; p < planes; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t h0 = (int64_t)floor((double)(oh * H) / OH), h1 = (int64_t)ceil((double)((oh + 1) * H) / OH);
        int64_t w0 = (int64_t)floor((double)(ow * W) / OW), w1 = (int64_t)ceil((double)((ow + 1) * W) / OW);
        double s = 0;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) s += x[(p * H + ih) * W + iw];
        int64_t o = (p * OH + oh) * OW + ow, n = (h1 - h0) * (w1 - w0);
        y[o] = s / (double)n;
        if (go)
          for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++) dx[(p * H + ih) * W + iw] += go[o] / (double)n;
      }
}

/* ---- checking one case ----------------------------------------------------------------------- */

typedef enum pkind { P_MAX, P_AVG, P_ADAPTIVE } pkind;

/* x [N, C, H, W] (or [C, H, W] when unbatched) through the op, against the
 * reference: values, indices (max), and the input gradient for a random
 * output gradient. */
static int check_pool(const char *what, pkind k, int64_t N, int64_t C, pgeo q, int64_t aoh,
                      int64_t aow, em_dtype dt, bool unbatched, int layout, double tol) {
  int ok = 0;
  q.planes = N * C;
  int64_t OH, OW;
  if (k == P_ADAPTIVE)
    OH = aoh, OW = aow;
  else {
    OH = ref_out(q.H, q.kh, q.sh, q.ph, k == P_MAX ? q.dh : 1, q.ceil_mode);
    OW = ref_out(q.W, q.kw, q.sw, q.pw, k == P_MAX ? q.dw : 1, q.ceil_mode);
  }
  int64_t xs[4] = {N, C, q.H, q.W}, ys[4] = {N, C, OH, OW};
  int off = unbatched ? 1 : 0;
  em_tensor *x = rnd(dt, layout, 4 - off, xs + off), *y = NULL, *idx = NULL, *go = NULL, *gx = NULL;
  double *xv = NULL, *gov = NULL, *yr = NULL, *dxr = NULL;
  int64_t *ir = NULL;
  em_tensor_set_requires_grad(x, true);
  em_pool_options o = {.kernel = {q.kh, q.kw}, .stride = {q.sh, q.sw}, .padding = {q.ph, q.pw},
                       .dilation = {q.dh, q.dw}, .ceil_mode = q.ceil_mode,
                       .count_include_pad = q.count_include_pad};
  if (k == P_MAX)
    y = em_nn_f_max_pool2d_with_indices(x, &o, &idx);
  else if (k == P_AVG)
    y = em_nn_f_avg_pool2d(x, &o);
  else
    y = em_nn_f_adaptive_avg_pool2d(x, aoh, aow);
  if (!y) {
    fprintf(stderr, "  %s: %s\n", what, em_last_error());
    goto out;
  }
  bool shape_ok = y->ndim == 4 - off && y->dtype == dt;
  for (int d = 0; shape_ok && d < 4 - off; d++) shape_ok = y->shape[d] == ys[d + off];
  if (!shape_ok) {
    fprintf(stderr, "  %s: result %s %s, expected %lld x %lld\n", what, em__tshape(y),
            em_dtype_name((em_dtype)y->dtype), (long long)OH, (long long)OW);
    goto out;
  }
  go = rnd(dt, 0, 4 - off, ys + off);
  xv = vals(x), gov = vals(go);
  yr = calloc((size_t)y->numel + 1, sizeof(double));
  ir = calloc((size_t)y->numel + 1, sizeof(int64_t));
  dxr = calloc((size_t)x->numel + 1, sizeof(double));
  if (k == P_MAX)
    ref_max(&q, xv, gov, yr, ir, dxr);
  else if (k == P_AVG)
    ref_avg(&q, xv, gov, yr, dxr);
  else
    ref_adaptive(q.planes, q.H, q.W, OH, OW, xv, gov, yr, dxr);
  if (!em_test_tensor_close(y, yr, y->numel, tol, tol, __FILE__, __LINE__, what)) goto out;
  if (k == P_MAX) {
    if (!idx || idx->dtype != EM_INT64 || idx->numel != y->numel) {
      fprintf(stderr, "  %s: bad indices\n", what);
      goto out;
    }
    for (int64_t i = 0; i < y->numel; i++)
      if ((int64_t)em_test_get(idx, i) != ir[i]) {
        fprintf(stderr, "  %s: index %lld is %lld, expected %lld\n", what, (long long)i,
                (long long)em_test_get(idx, i), (long long)ir[i]);
        goto out;
      }
  }
  if (em_backward(y, go, false)) {
    fprintf(stderr, "  %s: backward: %s\n", what, em_last_error());
    goto out;
  }
  gx = em_tensor_grad(x);
  char buf[128];
  snprintf(buf, sizeof buf, "%s grad", what);
  if (!em_test_tensor_close(gx, dxr, x->numel, tol, tol, __FILE__, __LINE__, buf)) goto out;
  ok = 1;
out:
  em_tensor_release(x), em_tensor_release(y), em_tensor_release(idx), em_tensor_release(go),
      em_tensor_release(gx);
  free(xv), free(gov), free(yr), free(ir), free(dxr);
  return ok;
}

/*                  planes H  W  kh kw sh sw ph pw dh dw ceil  incl */
static const pgeo max_cases[] = {
    {0, 6, 6, 2, 2, 2, 2, 0, 0, 1, 1, false, false},  /* the CNN's pool */
    {0, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1, false, false},  /* padding */
    {0, 8, 7, 2, 3, 1, 2, 1, 1, 2, 1, false, false},  /* dilation, non-square */
    {0, 5, 5, 2, 2, 2, 2, 0, 0, 1, 1, true, false},   /* ceil_mode */
    {0, 6, 6, 2, 2, 2, 2, 1, 1, 1, 1, true, false},   /* ceil_mode + padding */
    {0, 7, 6, 3, 2, 3, 2, 1, 1, 2, 2, true, false},   /* ceil_mode + dilation */
    {0, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1, false, false},  /* 1x1 */
};

EM_TEST(max_pool2d_matches_reference) {
  for (size_t i = 0; i < sizeof max_cases / sizeof max_cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "max_pool2d case %zu f64", i);
    ASSERT_TRUE(check_pool(what, P_MAX, 3, 2, max_cases[i], 0, 0, EM_FLOAT64, false, 0, 1e-12));
    snprintf(what, sizeof what, "max_pool2d case %zu f32 strided", i);
    ASSERT_TRUE(check_pool(what, P_MAX, 2, 3, max_cases[i], 0, 0, EM_FLOAT32, false, 1, 1e-6));
    snprintf(what, sizeof what, "max_pool2d case %zu unbatched", i);
    ASSERT_TRUE(check_pool(what, P_MAX, 1, 3, max_cases[i], 0, 0, EM_FLOAT32, true, 0, 1e-6));
  }
  ASSERT_TRUE(check_pool("max_pool2d bf16", P_MAX, 2, 2, max_cases[1], 0, 0, EM_BFLOAT16, false, 0, 0));
  ASSERT_TRUE(check_pool("max_pool2d f16", P_MAX, 2, 2, max_cases[3], 0, 0, EM_FLOAT16, false, 0, 0));
}

static const pgeo avg_cases[] = {
    {0, 6, 6, 2, 2, 2, 2, 0, 0, 1, 1, false, true},
    {0, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1, false, true},
    {0, 7, 5, 3, 3, 2, 2, 1, 1, 1, 1, false, false},
    {0, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, true, true},
    {0, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, true, false},
    {0, 5, 6, 2, 3, 2, 1, 1, 0, 1, 1, true, true},
    {0, 8, 5, 4, 2, 3, 2, 2, 1, 1, 1, true, false},
};

EM_TEST(avg_pool2d_matches_reference) {
  for (size_t i = 0; i < sizeof avg_cases / sizeof avg_cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "avg_pool2d case %zu f64", i);
    ASSERT_TRUE(check_pool(what, P_AVG, 3, 2, avg_cases[i], 0, 0, EM_FLOAT64, false, 0, 1e-12));
    snprintf(what, sizeof what, "avg_pool2d case %zu f32 strided", i);
    ASSERT_TRUE(check_pool(what, P_AVG, 2, 3, avg_cases[i], 0, 0, EM_FLOAT32, false, 1, 1e-5));
    snprintf(what, sizeof what, "avg_pool2d case %zu unbatched", i);
    ASSERT_TRUE(check_pool(what, P_AVG, 1, 2, avg_cases[i], 0, 0, EM_FLOAT64, true, 0, 1e-12));
  }
  ASSERT_TRUE(check_pool("avg_pool2d bf16", P_AVG, 2, 2, avg_cases[3], 0, 0, EM_BFLOAT16, false, 0, 2e-2));
}

EM_TEST(adaptive_avg_pool2d_matches_reference) {
  int64_t sizes[][4] = {{5, 5, 2, 3}, {7, 6, 3, 4}, {4, 4, 4, 4}, {6, 9, 1, 1}, {3, 5, 7, 6}, {10, 3, 4, 2}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    pgeo q = {0, sizes[i][0], sizes[i][1], 0, 0, 0, 0, 0, 0, 0, 0, false, false};
    char what[64];
    snprintf(what, sizeof what, "adaptive case %zu f64", i);
    ASSERT_TRUE(check_pool(what, P_ADAPTIVE, 2, 3, q, sizes[i][2], sizes[i][3], EM_FLOAT64, false, 0, 1e-12));
    snprintf(what, sizeof what, "adaptive case %zu f32 strided unbatched", i);
    ASSERT_TRUE(check_pool(what, P_ADAPTIVE, 1, 3, q, sizes[i][2], sizes[i][3], EM_FLOAT32, true, 1, 1e-5));
  }
}

/* x = arange(25) as [1, 1, 5, 5]; the expected values were printed by
 * PyTorch 1.13. */
static em_tensor *arange25(double sign) {
  float v[25];
  for (int i = 0; i < 25; i++) v[i] = (float)(sign * i);
  return em_tensor_from_data(v, EM_DIMS(1, 1, 5, 5), EM_FLOAT32);
}

EM_TEST(pool_hand_computed) {
  em_tensor *x = arange25(-1);
  em_pool_options o = {.kernel = {2, 2}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
  em_tensor *idx = NULL;
  em_tensor *y = em_nn_f_max_pool2d_with_indices(x, &o, &idx);
  ASSERT_SHAPE(y, 1, 1, 3, 3);
  ASSERT_TENSOR_CLOSE(y, ((double[]){0, -1, -3, -5, -6, -8, -15, -16, -18}), 0, 0);
  ASSERT_TENSOR_CLOSE(idx, ((double[]){0, 1, 3, 5, 6, 8, 15, 16, 18}), 0, 0);
  em_tensor_release(y), em_tensor_release(idx), em_tensor_release(x);

  x = arange25(1);
  o = (em_pool_options){.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true,
                        .count_include_pad = true};
  y = em_nn_f_avg_pool2d(x, &o);
  ASSERT_TENSOR_CLOSE(y, ((double[]){4.0 / 3, 3, 8.0 / 3, 7, 12, 9, 8, 13, 28.0 / 3}), 1e-6, 0);
  em_tensor_release(y);
  o.count_include_pad = false;
  y = em_nn_f_avg_pool2d(x, &o);
  ASSERT_TENSOR_CLOSE(y, ((double[]){3, 4.5, 6, 10.5, 12, 13.5, 18, 19.5, 21}), 1e-6, 0);
  em_tensor_release(y);
  o = (em_pool_options){.kernel = {2, 2}, .ceil_mode = true, .count_include_pad = true};
  y = em_nn_f_avg_pool2d(x, &o);
  ASSERT_TENSOR_CLOSE(y, ((double[]){3, 5, 6.5, 13, 15, 16.5, 20.5, 22.5, 24}), 1e-6, 0);
  em_tensor_release(y);
  y = em_nn_f_adaptive_avg_pool2d(x, 2, 3);
  ASSERT_SHAPE(y, 1, 1, 2, 3);
  ASSERT_TENSOR_CLOSE(y, ((double[]){5.5, 7, 8.5, 15.5, 17, 18.5}), 1e-6, 0);
  em_tensor_release(y);
  em_tensor_release(x);
}

/* NaN wins a max window (and its index is reported); -inf windows
 * report their first position. */
EM_TEST(max_pool2d_nan_and_inf) {
  double v[8] = {1, NAN, 3, 2, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  em_tensor *x = em_tensor_from_data(v, EM_DIMS(1, 2, 2, 2), EM_FLOAT64);
  em_pool_options o = {.kernel = {2, 2}};
  em_tensor *idx = NULL;
  em_tensor *y = em_nn_f_max_pool2d_with_indices(x, &o, &idx);
  ASSERT_SHAPE(y, 1, 2, 1, 1);
  ASSERT_TRUE(isnan(em_test_get(y, 0)));
  ASSERT_EQ(em_test_get(idx, 0), 1);
  ASSERT_TRUE(isinf(em_test_get(y, 1)) && em_test_get(y, 1) < 0);
  ASSERT_EQ(em_test_get(idx, 1), 0);
  em_tensor_release(y), em_tensor_release(idx), em_tensor_release(x);
}

EM_TEST(pool_zero_batch_and_output) {
  em_tensor *x = RND(EM_FLOAT32, 0, 0, 3, 4, 4);
  em_pool_options o = {.kernel = {2, 2}};
  em_tensor *y = em_nn_f_max_pool2d(x, &o);
  ASSERT_SHAPE(y, 0, 3, 2, 2);
  em_tensor_release(y);
  y = em_nn_f_avg_pool2d(x, &o);
  ASSERT_SHAPE(y, 0, 3, 2, 2);
  em_tensor_release(y);
  y = em_nn_f_adaptive_avg_pool2d(x, 2, 2);
  ASSERT_SHAPE(y, 0, 3, 2, 2);
  em_tensor_release(y);
  em_tensor *x2 = RND(EM_FLOAT32, 0, 1, 3, 4, 5);
  y = em_nn_f_adaptive_avg_pool2d(x2, 0, 0);
  ASSERT_SHAPE(y, 1, 3, 0, 0);
  em_tensor_release(y);
  em_tensor_release(x), em_tensor_release(x2);
}

/* ---- gradcheck ------------------------------------------------------------------------------- */

typedef struct gcp {
  pkind k;
  em_pool_options o;
  int64_t oh, ow;
} gcp;

static em_tensor *gc_fn(int n, em_tensor *const *in, void *ctx) {
  const gcp *c = ctx;
  if (c->k == P_MAX) return em_nn_f_max_pool2d(in[0], &c->o);
  if (c->k == P_AVG) return em_nn_f_avg_pool2d(in[0], &c->o);
  return em_nn_f_adaptive_avg_pool2d(in[0], c->oh, c->ow);
}

static int gradcheck(const char *what, gcp *c, em_tensor *x) {
  em_tensor_set_requires_grad(x, true);
  em_clear_error();
  em_status st = em_ag_gradcheck(gc_fn, c, 1, &x, 1e-6, 1e-6, 1e-4);
  em_tensor_release(x);
  if (st) fprintf(stderr, "  gradcheck %s: %s\n", what, em_last_error());
  return st == EM_OK;
}

EM_TEST(gradcheck_pools) {
  gcp m = {.k = P_MAX, .o = {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 2}, .ceil_mode = true}};
  ASSERT_TRUE(gradcheck("max_pool2d", &m, RND(EM_FLOAT64, 1, 2, 2, 6, 5)));
  gcp m2 = {.k = P_MAX, .o = {.kernel = {2, 2}}};
  ASSERT_TRUE(gradcheck("max_pool2d unbatched", &m2, RND(EM_FLOAT64, 0, 2, 4, 4)));
  gcp a = {.k = P_AVG, .o = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true, .count_include_pad = true}};
  ASSERT_TRUE(gradcheck("avg_pool2d include pad", &a, RND(EM_FLOAT64, 1, 2, 2, 5, 6)));
  gcp a2 = {.k = P_AVG, .o = {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}}};
  ASSERT_TRUE(gradcheck("avg_pool2d exclude pad", &a2, RND(EM_FLOAT64, 0, 2, 5, 5)));
  gcp ad = {.k = P_ADAPTIVE, .oh = 3, .ow = 2};
  ASSERT_TRUE(gradcheck("adaptive_avg_pool2d", &ad, RND(EM_FLOAT64, 1, 2, 2, 5, 7)));
}

/* ---- errors ------------------------------------------------------------------------------------- */

EM_TEST(pool_errors) {
  em_tensor *x = RND(EM_FLOAT32, 0, 1, 3, 5, 5), *x2 = RND(EM_FLOAT32, 0, 5, 5);
  em_tensor *x5 = RND(EM_FLOAT32, 0, 1, 3, 5, 5, 5), *xs = RND(EM_FLOAT32, 0, 1, 3, 1, 1);
  em_tensor *xe = em_tensor_empty(EM_DIMS(1, 3, 0, 4), EM_FLOAT32);
  em_tensor *xc = em_tensor_empty(EM_DIMS(1, 0, 4, 4), EM_FLOAT32);
  em_tensor *xl = em_tensor_zeros(EM_DIMS(1, 3, 4, 4), EM_INT64);
  em_pool_options o = {.kernel = {2, 2}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(NULL, &o), EM_ERR_INVALID, "max_pool2d: input must not be NULL");
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, NULL), EM_ERR_INVALID, "options must not be NULL");
  em_tensor *x0 = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x0, &o), EM_ERR_SHAPE, "tensor expected for input");
  ASSERT_NULL_ERR(em_nn_f_adaptive_avg_pool2d(x0, 1, 1), EM_ERR_SHAPE, "Expected 3D or 4D tensor, but got []");
  em_tensor_release(x0);
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x2, &o), EM_ERR_SHAPE,
                  "max_pool2d: non-empty 3D or 4D (batch mode) tensor expected for input");
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x5, &o), EM_ERR_SHAPE, "non-empty 3D or 4D");
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(x5, &o), EM_ERR_SHAPE,
                  "avg_pool2d: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size "
                  "for input, but got:[1, 3, 5, 5, 5]");
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(xl, &o), EM_ERR_DTYPE, "\"max_pool2d\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(xl, &o), EM_ERR_DTYPE, "\"avg_pool2d\" not implemented for 'Long'");
  o = (em_pool_options){.kernel = {2, 2}, .padding = {2, 2}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, &o), EM_ERR_INVALID,
                  "pad should be at most half of kernel size, but got pad=2 and kernel_size=2");
  o = (em_pool_options){.kernel = {3, 2}, .padding = {1, 2}};
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(x, &o), EM_ERR_INVALID,
                  "pad should be at most half of kernel size, but got pad=2 and kernel_size=2");
  o = (em_pool_options){.kernel = {2, 2}, .padding = {-1, 0}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, &o), EM_ERR_INVALID, "pad must be non-negative, but got pad: -1");
  o = (em_pool_options){.kernel = {0, 0}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, &o), EM_ERR_INVALID, "stride should not be zero");
  o = (em_pool_options){.kernel = {0, 0}, .stride = {1, 1}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, &o), EM_ERR_INVALID,
                  "kernel size should be greater than zero, but got kH: 0 kW: 0");
  o = (em_pool_options){.kernel = {-2, -2}};
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(x, &o), EM_ERR_INVALID,
                  "pad should be at most half of kernel size, but got pad=0 and kernel_size=-2");
  o = (em_pool_options){.kernel = {2, 2}, .stride = {-1, -1}};
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(x, &o), EM_ERR_INVALID,
                  "stride should be greater than zero, but got dH: -1 dW: -1");
  o = (em_pool_options){.kernel = {2, 2}, .dilation = {-1, -1}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x, &o), EM_ERR_INVALID,
                  "dilation should be greater than zero, but got dilationH: -1 dilationW: -1");
  o = (em_pool_options){.kernel = {2, 2}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(xs, &o), EM_ERR_SHAPE,
                  "Given input size: (3x1x1). Calculated output size: (3x0x0). Output size is too small");
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(xs, &o), EM_ERR_SHAPE, "Output size is too small");
  o = (em_pool_options){.kernel = {3, 3}, .padding = {1, 1}, .dilation = {2, 2}};
  em_tensor *x22 = RND(EM_FLOAT32, 0, 1, 3, 2, 2);
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(x22, &o), EM_ERR_SHAPE,
                  "Given input size: (3x2x2). Calculated output size: (3x0x0)");
  o = (em_pool_options){.kernel = {2, 2}};
  ASSERT_NULL_ERR(em_nn_f_max_pool2d(xe, &o), EM_ERR_SHAPE,
                  "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                  "but got:[1, 3, 0, 4]");
  ASSERT_NULL_ERR(em_nn_f_avg_pool2d(xc, &o), EM_ERR_SHAPE, "but got:[1, 0, 4, 4]");
  /* adaptive */
  ASSERT_NULL_ERR(em_nn_f_adaptive_avg_pool2d(x2, 2, 2), EM_ERR_SHAPE,
                  "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got [5, 5]");
  ASSERT_NULL_ERR(em_nn_f_adaptive_avg_pool2d(xe, 2, 2), EM_ERR_SHAPE,
                  "adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                  "dimensions, but input has sizes [1, 3, 0, 4] with dimension 2 being empty");
  ASSERT_NULL_ERR(em_nn_f_adaptive_avg_pool2d(x, -1, -1), EM_ERR_INVALID,
                  "elements of output_size must be greater than or equal to 0 but received {-1, -1}");
  ASSERT_NULL_ERR(em_nn_f_adaptive_avg_pool2d(xl, 2, 2), EM_ERR_DTYPE,
                  "\"adaptive_avg_pool2d\" not implemented for 'Long'");
  em_tensor *ts[] = {x, x2, x5, xs, xe, xc, xl, x22};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

/* ---- modules -------------------------------------------------------------------------------------- */

EM_TEST(pool_modules) {
  em_pool_options o = {.kernel = {2, 2}};
  em_module *m = em_nn_max_pool2d(&o);
  ASSERT_NOTNULL(m);
  char *r = em_module_repr(m);
  ASSERT_STREQ(r, "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  free(r);
  em_tensor *x = RND(EM_FLOAT32, 0, 2, 3, 6, 6);
  em_tensor *y = em_module_forward(m, x), *e = em_nn_f_max_pool2d(x, &o);
  bool same = false;
  ASSERT_SHAPE(y, 2, 3, 3, 3);
  ASSERT_OK(em_tensor_equal(y, e, &same));
  ASSERT_TRUE(same);
  em_tensor_release(y), em_tensor_release(e);
  ASSERT_NULL_ERR(em_module_forward_n(m, 2, (em_tensor *[]){x, x}), EM_ERR_INVALID,
                  "MaxPool2d.forward: takes 1 input, got 2");
  em_module_release(m);
  o = (em_pool_options){.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}, .dilation = {2, 1},
                        .ceil_mode = true};
  m = em_nn_max_pool2d(&o);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "MaxPool2d(kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=(2, 1), ceil_mode=True)");
  free(r);
  em_module_release(m);
  o = (em_pool_options){.kernel = {2, 2}, .count_include_pad = true};
  m = em_nn_avg_pool2d(&o);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "AvgPool2d(kernel_size=2, stride=2, padding=0)");
  free(r);
  y = em_module_forward(m, x);
  e = em_nn_f_avg_pool2d(x, &o);
  ASSERT_OK(em_tensor_equal(y, e, &same));
  ASSERT_TRUE(same);
  em_tensor_release(y), em_tensor_release(e);
  em_module_release(m);
  o = (em_pool_options){.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}, .ceil_mode = true};
  m = em_nn_avg_pool2d(&o);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "AvgPool2d(kernel_size=(2, 3), stride=(1, 2), padding=1)");
  free(r);
  em_module_release(m);
  m = em_nn_adaptive_avg_pool2d(2, 3);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "AdaptiveAvgPool2d(output_size=(2, 3))");
  free(r);
  y = em_module_forward(m, x);
  ASSERT_SHAPE(y, 2, 3, 2, 3);
  em_tensor_release(y);
  em_module_release(m);
  m = em_nn_adaptive_avg_pool2d(1, 1);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "AdaptiveAvgPool2d(output_size=1)");
  free(r);
  em_module_release(m);
  em_clear_error();
  ASSERT_TRUE(em_nn_adaptive_avg_pool2d(-1, 2) == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_INVALID);
  ASSERT_TRUE(em_nn_max_pool2d(NULL) == NULL);
  em_tensor_release(x);
}

EM_TEST_MAIN()
