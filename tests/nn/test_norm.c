/* batch_norm, layer_norm, group_norm: forward and gradients against naive
 * references (double, the gradient by the chain rule through mean and
 * variance) written here, running-statistics updates against hand-computed
 * values, gradcheck, modules (parameters, buffers, train/eval, repr) and
 * errors. */
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
    em_tensor_uniform_(b, -1, 2, NULL);
    em_tensor *t = em_tensor_transpose(b, ndim - 2, ndim - 1);
    em_tensor_release(b);
    return t;
  }
  em_tensor *t = em_tensor_empty(ndim, s, dt);
  em_tensor_uniform_(t, -1, 2, NULL);
  return t;
}
#define RND(dt, layout, ...) rnd(dt, layout, EM_DIMS(__VA_ARGS__))

static double *vals(em_tensor *t) {
  double *v = malloc(sizeof(double) * (size_t)(t->numel + 1));
  for (int64_t i = 0; i < t->numel; i++) v[i] = em_test_get(t, i);
  return v;
}

/* ---- the reference: one normalisation set ------------------------------------------------------
 * Elements ids[0..M) of x are normalised together, with mean/var given
 * (fixed statistics) or computed (batch statistics); element i is scaled
 * by w[widx[i]] and shifted by b[widx[i]]. Gradients by the chain rule:
 * d/dx through xhat, var and mean. */
static void ref_set(const double *x, const double *dy, const int64_t *ids, const int64_t *widx,
                    int64_t M, const double *w, const double *b, bool batch_stats, double fmean,
                    double fvar, double eps, double *y, double *dx, double *dw, double *db,
                    double *mean_out, double *var_out) {
  double mean = fmean, var = fvar;
  if (batch_stats) {
    mean = 0, var = 0;
    for (int64_t i = 0; i < M; i++) mean += x[ids[i]];
    mean /= (double)M;
    for (int64_t i = 0; i < M; i++) var += (x[ids[i]] - mean) * (x[ids[i]] - mean);
    var /= (double)M;
  }
  if (mean_out) *mean_out = mean, *var_out = var;
  double inv = 1 / sqrt(var + eps);
  double dvar = 0, dmean = 0, sxm = 0;
  for (int64_t i = 0; i < M; i++) {
    double xi = x[ids[i]], wi = w ? w[widx[i]] : 1, bi = b ? b[widx[i]] : 0;
    y[ids[i]] = (xi - mean) * inv * wi + bi;
    if (!dy) continue;
    double dxh = dy[ids[i]] * wi;
    dvar += dxh * (xi - mean) * -0.5 * inv * inv * inv;
    dmean += -dxh * inv;
    sxm += xi - mean;
    if (dw) dw[widx[i]] += dy[ids[i]] * (xi - mean) * inv;
    if (db) db[widx[i]] += dy[ids[i]];
  }
  if (!dy) return;
  dmean += dvar * -2 * sxm / (double)M;
  for (int64_t i = 0; i < M; i++) {
    double xi = x[ids[i]], wi = w ? w[widx[i]] : 1;
    double g = dy[ids[i]] * wi * inv;
    if (batch_stats) g += dvar * 2 * (xi - mean) / (double)M + dmean / (double)M;
    dx[ids[i]] = g;
  }
}

typedef enum nkind { N_BN, N_LN, N_GN } nkind;

/* One case: x of shape s through the op, compared with the reference
 * (values, input and parameter gradients, and for batch norm in training
 * the running statistics). For N_LN, nd = number of normalised dims; for
 * N_GN, groups. */
typedef struct ncase {
  nkind k;
  int ndim;
  int64_t s[5];
  bool affine, training;
  int nd_or_groups;
} ncase;

static int check_norm(const char *what, ncase c, em_dtype dt, int layout, double tol) {
  int ok = 0;
  const double eps = 1e-5, momentum = 0.2;
  em_tensor *x = rnd(dt, layout, c.ndim, c.s), *w = NULL, *b = NULL, *rm = NULL, *rv = NULL;
  em_tensor *y = NULL, *go = NULL, *gx = NULL, *gw = NULL, *gb = NULL;
  double *xv = NULL, *gov = NULL, *wv = NULL, *bv = NULL, *rmv = NULL, *rvv = NULL;
  double *yr = NULL, *dxr = NULL, *dwr = NULL, *dbr = NULL;
  int64_t *ids = NULL, *widx = NULL;
  int64_t N = c.s[0], C = c.ndim > 1 ? c.s[1] : 1, S = 1;
  for (int d = 2; d < c.ndim; d++) S *= c.s[d];
  /* parameter shape */
  int pnd = 1;
  int64_t ps[5] = {C};
  if (c.k == N_LN) {
    pnd = c.nd_or_groups;
    memcpy(ps, c.s + c.ndim - pnd, sizeof(int64_t) * (size_t)pnd);
  }
  int64_t pn = 1;
  for (int d = 0; d < pnd; d++) pn *= ps[d];
  if (c.affine) {
    w = rnd(dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32, 0, pnd, ps);
    b = rnd(dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32, 0, pnd, ps);
    em_tensor_set_requires_grad(w, true);
    em_tensor_set_requires_grad(b, true);
  }
  em_tensor_set_requires_grad(x, true);
  if (c.k == N_BN) {
    rm = RND(dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32, 0, C);
    rv = RND(dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32, 0, C);
    em_tensor *a = em_tensor_abs(rv); /* variances are positive */
    em_tensor_copy_(rv, a);
    em_tensor_release(a);
    rmv = vals(rm), rvv = vals(rv);
  }
  xv = vals(x);
  wv = w ? vals(w) : NULL, bv = b ? vals(b) : NULL;
  switch (c.k) {
    case N_BN: y = em_nn_f_batch_norm(x, rm, rv, w, b, c.training, momentum, eps); break;
    case N_LN: y = em_nn_f_layer_norm(x, pnd, ps, w, b, eps); break;
    case N_GN: y = em_nn_f_group_norm(x, c.nd_or_groups, w, b, eps); break;
  }
  if (!y) {
    fprintf(stderr, "  %s: %s\n", what, em_last_error());
    goto out;
  }
  if (y->dtype != dt || y->ndim != c.ndim) {
    fprintf(stderr, "  %s: result %s %s\n", what, em__tshape(y), em_dtype_name((em_dtype)y->dtype));
    goto out;
  }
  go = rnd(dt, 0, c.ndim, c.s);
  gov = vals(go);
  int64_t n = x->numel;
  yr = calloc((size_t)n + 1, sizeof(double)), dxr = calloc((size_t)n + 1, sizeof(double));
  dwr = calloc((size_t)pn + 1, sizeof(double)), dbr = calloc((size_t)pn + 1, sizeof(double));
  ids = malloc(sizeof(int64_t) * (size_t)(n + 1)), widx = malloc(sizeof(int64_t) * (size_t)(n + 1));
  if (c.k == N_BN) {
    for (int64_t ch = 0; ch < C; ch++) {
      int64_t M = 0;
      for (int64_t i = 0; i < N; i++)
        for (int64_t s = 0; s < S; s++) ids[M] = (i * C + ch) * S + s, widx[M++] = ch;
      double bm, bvar;
      ref_set(xv, gov, ids, widx, M, wv, bv, c.training, rmv[ch], rvv[ch], eps, yr, dxr, dwr, dbr,
              &bm, &bvar);
      if (c.training) { /* the expected running statistics */
        rmv[ch] = (1 - momentum) * rmv[ch] + momentum * bm;
        rvv[ch] = (1 - momentum) * rvv[ch] + momentum * bvar * M / (M - 1);
      }
    }
  } else if (c.k == N_LN) {
    int64_t D = pn, rows = n / D;
    for (int64_t r = 0; r < rows; r++) {
      for (int64_t j = 0; j < D; j++) ids[j] = r * D + j, widx[j] = j;
      ref_set(xv, gov, ids, widx, D, wv, bv, true, 0, 0, eps, yr, dxr, dwr, dbr, NULL, NULL);
    }
  } else {
    int64_t G = c.nd_or_groups, Cg = C / G;
    for (int64_t i = 0; i < N; i++)
      for (int64_t g = 0; g < G; g++) {
        int64_t M = 0;
        for (int64_t ch = g * Cg; ch < (g + 1) * Cg; ch++)
          for (int64_t s = 0; s < S; s++) ids[M] = (i * C + ch) * S + s, widx[M++] = ch;
        ref_set(xv, gov, ids, widx, M, wv, bv, true, 0, 0, eps, yr, dxr, dwr, dbr, NULL, NULL);
      }
  }
  if (!em_test_tensor_close(y, yr, n, tol, tol, __FILE__, __LINE__, what)) goto out;
  if (c.k == N_BN && c.training) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s running_mean", what);
    if (!em_test_tensor_close(rm, rmv, C, tol, tol, __FILE__, __LINE__, buf)) goto out;
    snprintf(buf, sizeof buf, "%s running_var", what);
    if (!em_test_tensor_close(rv, rvv, C, tol, tol, __FILE__, __LINE__, buf)) goto out;
  }
  if (em_backward(y, go, false)) {
    fprintf(stderr, "  %s: backward: %s\n", what, em_last_error());
    goto out;
  }
  char buf[128];
  gx = em_tensor_grad(x);
  snprintf(buf, sizeof buf, "%s grad x", what);
  if (!em_test_tensor_close(gx, dxr, n, tol * 10, tol * 10, __FILE__, __LINE__, buf)) goto out;
  if (c.affine) {
    gw = em_tensor_grad(w), gb = em_tensor_grad(b);
    snprintf(buf, sizeof buf, "%s grad w", what);
    if (!em_test_tensor_close(gw, dwr, pn, tol * 10, tol * 10, __FILE__, __LINE__, buf)) goto out;
    snprintf(buf, sizeof buf, "%s grad b", what);
    if (!em_test_tensor_close(gb, dbr, pn, tol * 10, tol * 10, __FILE__, __LINE__, buf)) goto out;
  }
  ok = 1;
out:
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(b), em_tensor_release(rm),
      em_tensor_release(rv), em_tensor_release(y), em_tensor_release(go), em_tensor_release(gx),
      em_tensor_release(gw), em_tensor_release(gb);
  free(xv), free(gov), free(wv), free(bv), free(rmv), free(rvv), free(yr), free(dxr), free(dwr),
      free(dbr), free(ids), free(widx);
  return ok;
}

static const ncase cases[] = {
    {N_BN, 2, {5, 3}, true, true, 0},
    {N_BN, 3, {4, 3, 5}, true, true, 0},
    {N_BN, 4, {3, 2, 4, 5}, false, true, 0},
    {N_BN, 4, {2, 3, 3, 2}, true, false, 0}, /* eval: running statistics */
    {N_BN, 2, {3, 4}, false, false, 0},
    {N_BN, 3, {1, 4, 70}, true, true, 0},    /* long channels: the vector path */
    {N_LN, 2, {4, 6}, true, false, 1},
    {N_LN, 3, {2, 3, 4}, true, false, 2},
    {N_LN, 3, {3, 2, 37}, false, false, 1},
    {N_GN, 3, {2, 4, 3}, true, false, 2},
    {N_GN, 4, {3, 6, 2, 2}, false, false, 3},
    {N_GN, 2, {2, 6}, true, false, 2},
    {N_GN, 3, {2, 4, 25}, true, false, 1},
};

EM_TEST(norms_match_reference) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "case %zu f64", i);
    ASSERT_TRUE(check_norm(what, cases[i], EM_FLOAT64, 0, 1e-10));
    snprintf(what, sizeof what, "case %zu f32 strided", i);
    ASSERT_TRUE(check_norm(what, cases[i], EM_FLOAT32, 1, 2e-5));
  }
  ASSERT_TRUE(check_norm("bn bf16 (float params)", cases[1], EM_BFLOAT16, 0, 3e-2));
  ASSERT_TRUE(check_norm("ln f16", cases[7], EM_FLOAT16, 0, 5e-3));
  ASSERT_TRUE(check_norm("gn bf16", cases[9], EM_BFLOAT16, 0, 3e-2));
}

/* x [4, 2] = {{1, 10}, {2, 20}, {3, 30}, {4, 40}}: batch means 2.5 and
 * 25, biased variances 1.25 and 125, unbiased 5/3 and 500/3. */
EM_TEST(batch_norm_running_stats_hand_computed) {
  float xd[8] = {1, 10, 2, 20, 3, 30, 4, 40};
  em_tensor *x = em_tensor_from_data(xd, EM_DIMS(4, 2), EM_FLOAT32);
  em_tensor *rm = em_tensor_zeros(EM_DIMS(2), EM_FLOAT32), *rv = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  uint64_t v0 = em_tensor_version(rm);
  em_tensor *y = em_nn_f_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
  ASSERT_NOTNULL(y);
  ASSERT_TENSOR_CLOSE(rm, ((double[]){0.25, 2.5}), 1e-6, 0);
  ASSERT_TENSOR_CLOSE(rv, ((double[]){0.9 + 0.1 * 5 / 3.0, 0.9 + 0.1 * 500 / 3.0}), 1e-6, 0);
  ASSERT_TRUE(em_tensor_version(rm) != v0);
  double s0 = 1 / sqrt(1.25 + 1e-5), s1 = 1 / sqrt(125 + 1e-5);
  ASSERT_TENSOR_CLOSE(y, ((double[]){-1.5 * s0, -15 * s1, -0.5 * s0, -5 * s1, 0.5 * s0, 5 * s1,
                                     1.5 * s0, 15 * s1}),
                      1e-5, 0);
  em_tensor_release(y);
  /* a second step with momentum 0.5 */
  y = em_nn_f_batch_norm(x, rm, rv, NULL, NULL, true, 0.5, 1e-5);
  ASSERT_TENSOR_CLOSE(rm, ((double[]){0.5 * 0.25 + 0.5 * 2.5, 0.5 * 2.5 + 0.5 * 25}), 1e-6, 0);
  em_tensor_release(y);
  /* eval: (x - running_mean) / sqrt(running_var + eps) * w + b */
  float wd[2] = {2, 3}, bd[2] = {0.5f, -1};
  em_tensor *w = em_tensor_from_data(wd, EM_DIMS(2), EM_FLOAT32);
  em_tensor *b = em_tensor_from_data(bd, EM_DIMS(2), EM_FLOAT32);
  float rmd[2] = {1, 20}, rvd[2] = {4, 16};
  em_tensor *rm2 = em_tensor_from_data(rmd, EM_DIMS(2), EM_FLOAT32);
  em_tensor *rv2 = em_tensor_from_data(rvd, EM_DIMS(2), EM_FLOAT32);
  y = em_nn_f_batch_norm(x, rm2, rv2, w, b, false, 0.1, 0);
  ASSERT_TENSOR_CLOSE(y, ((double[]){0.5, -8.5, 1.5, -1, 2.5, 6.5, 3.5, 14}), 1e-6, 0);
  ASSERT_TENSOR_CLOSE(rm2, ((double[]){1, 20}), 0, 0); /* unchanged */
  em_tensor_release(y);
  /* without running statistics: batch statistics even when not training */
  y = em_nn_f_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5);
  ASSERT_TENSOR_CLOSE(y, ((double[]){-1.5 * s0, -15 * s1, -0.5 * s0, -5 * s1, 0.5 * s0, 5 * s1,
                                     1.5 * s0, 15 * s1}),
                      1e-5, 0);
  em_tensor_release(y);
  /* only running_mean in training: it alone is updated */
  em_tensor *rm3 = em_tensor_zeros(EM_DIMS(2), EM_FLOAT32);
  y = em_nn_f_batch_norm(x, rm3, NULL, NULL, NULL, true, 1.0, 1e-5);
  ASSERT_TENSOR_CLOSE(rm3, ((double[]){2.5, 25}), 1e-6, 0);
  em_tensor_release(y);
  em_tensor_release(x), em_tensor_release(rm), em_tensor_release(rv), em_tensor_release(w),
      em_tensor_release(b), em_tensor_release(rm2), em_tensor_release(rv2), em_tensor_release(rm3);
}

/* ---- gradcheck ----------------------------------------------------------------------------------- */

typedef struct gcn {
  nkind k;
  bool training;
  em_tensor *rm, *rv;
  int nd;
  int64_t shape[4];
  int64_t groups;
} gcn;

static em_tensor *gc_fn(int n, em_tensor *const *in, void *ctx) {
  const gcn *c = ctx;
  em_tensor *w = n > 1 ? in[1] : NULL, *b = n > 2 ? in[2] : NULL;
  switch (c->k) {
    case N_BN: return em_nn_f_batch_norm(in[0], c->rm, c->rv, w, b, c->training, 0.1, 1e-5);
    case N_LN: return em_nn_f_layer_norm(in[0], c->nd, c->shape, w, b, 1e-5);
    default: return em_nn_f_group_norm(in[0], c->groups, w, b, 1e-5);
  }
}

static int gradcheck(const char *what, gcn *c, int n, em_tensor **in) {
  for (int i = 0; i < n; i++) em_tensor_set_requires_grad(in[i], true);
  em_clear_error();
  em_status st = em_ag_gradcheck(gc_fn, c, n, in, 1e-6, 1e-6, 1e-4);
  for (int i = 0; i < n; i++) em_tensor_release(in[i]);
  if (st) fprintf(stderr, "  gradcheck %s: %s\n", what, em_last_error());
  return st == EM_OK;
}

#define D EM_FLOAT64
EM_TEST(gradcheck_batch_norm) {
  gcn tr = {.k = N_BN, .training = true};
  ASSERT_TRUE(gradcheck("bn train affine", &tr, 3,
                        (em_tensor *[]){RND(D, 1, 3, 2, 4), RND(D, 0, 2), RND(D, 0, 2)}));
  ASSERT_TRUE(gradcheck("bn train 2d no affine", &tr, 1, (em_tensor *[]){RND(D, 0, 5, 3)}));
  ASSERT_TRUE(gradcheck("bn train 4d", &tr, 3,
                        (em_tensor *[]){RND(D, 0, 2, 2, 2, 3), RND(D, 0, 2), RND(D, 0, 2)}));
  gcn tr_rs = {.k = N_BN, .training = true, .rm = em_tensor_zeros(EM_DIMS(3), D),
               .rv = em_tensor_ones(EM_DIMS(3), D)};
  ASSERT_TRUE(gradcheck("bn train with running stats", &tr_rs, 3,
                        (em_tensor *[]){RND(D, 0, 4, 3), RND(D, 0, 3), RND(D, 0, 3)}));
  em_tensor_release(tr_rs.rm), em_tensor_release(tr_rs.rv);
  gcn ev = {.k = N_BN, .training = false, .rm = RND(D, 0, 3), .rv = em_tensor_full(EM_DIMS(3), em_scalar_float(0.7), D)};
  ASSERT_TRUE(gradcheck("bn eval", &ev, 3,
                        (em_tensor *[]){RND(D, 1, 2, 3, 4), RND(D, 0, 3), RND(D, 0, 3)}));
  ASSERT_TRUE(gradcheck("bn eval no affine", &ev, 1, (em_tensor *[]){RND(D, 0, 2, 3)}));
  em_tensor_release(ev.rm), em_tensor_release(ev.rv);
}

EM_TEST(gradcheck_layer_and_group_norm) {
  gcn l1 = {.k = N_LN, .nd = 1, .shape = {4}};
  ASSERT_TRUE(gradcheck("ln affine", &l1, 3, (em_tensor *[]){RND(D, 1, 3, 4), RND(D, 0, 4), RND(D, 0, 4)}));
  ASSERT_TRUE(gradcheck("ln weight only", &l1, 2, (em_tensor *[]){RND(D, 0, 2, 3, 4), RND(D, 0, 4)}));
  gcn l2 = {.k = N_LN, .nd = 2, .shape = {3, 2}};
  ASSERT_TRUE(gradcheck("ln two dims no affine", &l2, 1, (em_tensor *[]){RND(D, 0, 2, 3, 2)}));
  ASSERT_TRUE(gradcheck("ln two dims affine", &l2, 3,
                        (em_tensor *[]){RND(D, 0, 2, 3, 2), RND(D, 1, 3, 2), RND(D, 0, 3, 2)}));
  gcn g1 = {.k = N_GN, .groups = 2};
  ASSERT_TRUE(gradcheck("gn affine", &g1, 3,
                        (em_tensor *[]){RND(D, 1, 2, 4, 3), RND(D, 0, 4), RND(D, 0, 4)}));
  gcn g3 = {.k = N_GN, .groups = 3};
  ASSERT_TRUE(gradcheck("gn no affine", &g3, 1, (em_tensor *[]){RND(D, 0, 2, 6, 2, 2)}));
  gcn g6 = {.k = N_GN, .groups = 6};
  ASSERT_TRUE(gradcheck("gn 2d input, instance-like", &g6, 3,
                        (em_tensor *[]){RND(D, 0, 3, 6, 2), RND(D, 0, 6), RND(D, 0, 6)}));
}

/* ---- errors ------------------------------------------------------------------------------------------ */

EM_TEST(norm_errors) {
  em_tensor *x = RND(EM_FLOAT32, 0, 2, 3), *x1 = RND(EM_FLOAT32, 0, 3), *xn1 = RND(EM_FLOAT32, 0, 1, 3);
  em_tensor *c3 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32), *c4 = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  em_tensor *d3 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT64), *xl = em_tensor_zeros(EM_DIMS(2, 3), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(NULL, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), EM_ERR_INVALID,
                  "batch_norm: input must not be NULL");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x1, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "expected an input of at least 2 dims");
  em_tensor *x0 = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x0, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "but got input of size []");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x0, EM_DIMS(1), NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "Given normalized_shape=[1], expected input with shape [*, 1], but got input of size[]");
  ASSERT_NULL_ERR(em_nn_f_group_norm(x0, 1, NULL, NULL, 1e-5), EM_ERR_SHAPE, "at least 2 dims");
  em_tensor_release(x0);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, c4, c3, NULL, NULL, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "running_mean should contain 3 elements not 4");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, c3, c4, NULL, NULL, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "running_var should contain 3 elements not 4");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, c3, c3, c4, NULL, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "weight should contain 3 elements not 4");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, c3, c3, c3, c4, true, 0.1, 1e-5), EM_ERR_SHAPE,
                  "bias should contain 3 elements not 4");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(xn1, c3, c3, NULL, NULL, true, 0.1, 1e-5), EM_ERR_INVALID,
                  "Expected more than 1 value per channel when training, got input size [1, 3]");
  em_tensor *y = em_nn_f_batch_norm(xn1, c3, c3, NULL, NULL, false, 0.1, 1e-5); /* eval: fine */
  ASSERT_NOTNULL(y);
  em_tensor_release(y);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, NULL, c3, NULL, NULL, false, 0.1, 1e-5), EM_ERR_INVALID,
                  "running_mean must be defined in evaluation mode");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, c3, NULL, NULL, NULL, false, 0.1, 1e-5), EM_ERR_INVALID,
                  "running_var must be defined in evaluation mode");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(xl, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), EM_ERR_DTYPE,
                  "\"batch_norm\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, d3, c3, NULL, NULL, true, 0.1, 1e-5), EM_ERR_DTYPE,
                  "expected running_mean to have scalar type Float (the input's), but got Double");
  em_tensor *rg = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor_set_requires_grad(rg, true);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(x, rg, c3, NULL, NULL, true, 0.1, 1e-5), EM_ERR_INVALID,
                  "running_mean and running_var must not require grad");
  /* layer norm */
  em_tensor *x3 = RND(EM_FLOAT32, 0, 2, 3, 4);
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x3, EM_DIMS(3), NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "Given normalized_shape=[3], expected input with shape [*, 3], but got input of "
                  "size[2, 3, 4]");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x3, EM_DIMS(2, 3, 4, 5), NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "Given normalized_shape=[2, 3, 4, 5], expected input with shape [*, 2, 3, 4, 5]");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x3, EM_DIMS(4), c3, NULL, 1e-5), EM_ERR_SHAPE,
                  "Expected weight to be of same shape as normalized_shape, but got weight of shape "
                  "[3] and normalized_shape = [4]");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x3, EM_DIMS(4), c4, c3, 1e-5), EM_ERR_SHAPE,
                  "Expected bias to be of same shape as normalized_shape, but got bias of shape [3] "
                  "and normalized_shape = [4]");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(x3, 0, NULL, NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "Expected normalized_shape to be at least 1-dimensional");
  ASSERT_NULL_ERR(em_nn_f_layer_norm(xl, EM_DIMS(3), NULL, NULL, 1e-5), EM_ERR_DTYPE,
                  "\"layer_norm\" not implemented for 'Long'");
  /* group norm */
  em_tensor *x64 = RND(EM_FLOAT32, 0, 2, 6, 4), *c5 = em_tensor_zeros(EM_DIMS(5), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_group_norm(x64, 4, NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "Expected number of channels in input to be divisible by num_groups, but got "
                  "input of shape [2, 6, 4] and num_groups=4");
  ASSERT_NULL_ERR(em_nn_f_group_norm(x64, 3, c5, NULL, 1e-5), EM_ERR_SHAPE,
                  "Expected weight to be a vector of size equal to the number of channels in input, "
                  "but got weight of shape [5] and input of shape [2, 6, 4]");
  ASSERT_NULL_ERR(em_nn_f_group_norm(x64, 3, NULL, c5, 1e-5), EM_ERR_SHAPE,
                  "Expected bias to be a vector of size equal to the number of channels in input");
  ASSERT_NULL_ERR(em_nn_f_group_norm(x64, 0, NULL, NULL, 1e-5), EM_ERR_INVALID,
                  "num_groups must be positive");
  ASSERT_NULL_ERR(em_nn_f_group_norm(x1, 1, NULL, NULL, 1e-5), EM_ERR_SHAPE,
                  "expected an input of at least 2 dims");
  em_tensor *ts[] = {x, x1, xn1, c3, c4, d3, xl, rg, x3, x64, c5};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

EM_TEST(norm_zero_sizes) {
  em_tensor *x = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *rm = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32), *rv = em_tensor_ones(EM_DIMS(3), EM_FLOAT32);
  em_tensor *y = em_nn_f_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
  ASSERT_SHAPE(y, 0, 3);
  ASSERT_TENSOR_CLOSE(rm, ((double[]){0, 0, 0}), 0, 0); /* nothing to learn from */
  em_tensor_release(y);
  em_tensor *x2 = em_tensor_empty(EM_DIMS(0, 4), EM_FLOAT32);
  y = em_nn_f_layer_norm(x2, EM_DIMS(4), NULL, NULL, 1e-5);
  ASSERT_SHAPE(y, 0, 4);
  em_tensor_release(y);
  em_tensor *x3 = em_tensor_empty(EM_DIMS(0, 6, 3), EM_FLOAT32);
  y = em_nn_f_group_norm(x3, 3, NULL, NULL, 1e-5);
  ASSERT_SHAPE(y, 0, 6, 3);
  em_tensor_release(y);
  em_tensor_release(x), em_tensor_release(rm), em_tensor_release(rv), em_tensor_release(x2),
      em_tensor_release(x3);
}

/* ---- modules ----------------------------------------------------------------------------------------- */

EM_TEST(batch_norm_modules) {
  em_module *m = em_nn_batch_norm2d(3, 1e-5, 0.1, true, true);
  ASSERT_NOTNULL(m);
  char *r = em_module_repr(m);
  ASSERT_STREQ(r, "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
  free(r);
  em_tensor *w = em_module_parameter(m, "weight"), *b = em_module_parameter(m, "bias");
  em_tensor *rm = em_module_buffer(m, "running_mean"), *rv = em_module_buffer(m, "running_var");
  em_tensor *nbt = em_module_buffer(m, "num_batches_tracked");
  ASSERT_TENSOR_CLOSE(w, ((double[]){1, 1, 1}), 0, 0);
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 0, 0}), 0, 0);
  ASSERT_TENSOR_CLOSE(rm, ((double[]){0, 0, 0}), 0, 0);
  ASSERT_TENSOR_CLOSE(rv, ((double[]){1, 1, 1}), 0, 0);
  ASSERT_TRUE(em_tensor_requires_grad(w) && !em_tensor_requires_grad(rm));
  ASSERT_EQ(nbt->ndim, 0);
  ASSERT_EQ(nbt->dtype, EM_INT64);
  ASSERT_EQ(em_test_get(nbt, 0), 0);
  /* training: batch statistics, running stats and the counter move */
  em_tensor *x = RND(EM_FLOAT32, 0, 4, 3, 2, 2);
  em_tensor *y = em_module_forward(m, x);
  ASSERT_SHAPE(y, 4, 3, 2, 2);
  ASSERT_EQ(em_test_get(nbt, 0), 1);
  double mean0 = 0, var0 = 0;
  for (int n = 0; n < 4; n++)
    for (int s = 0; s < 4; s++) mean0 += em_test_get(x, (n * 3 + 0) * 4 + s);
  mean0 /= 16;
  for (int n = 0; n < 4; n++)
    for (int s = 0; s < 4; s++) {
      double d = em_test_get(x, (n * 3 + 0) * 4 + s) - mean0;
      var0 += d * d;
    }
  ASSERT_CLOSE(em_test_get(rm, 0), 0.1 * mean0, 1e-5, 1e-6);
  ASSERT_CLOSE(em_test_get(rv, 0), 0.9 + 0.1 * var0 / 15, 1e-5, 1e-6);
  ASSERT_CLOSE(em_test_get(y, 0), (em_test_get(x, 0) - mean0) / sqrt(var0 / 16 + 1e-5), 1e-4, 1e-5);
  em_tensor_release(y);
  /* backward reaches the parameters */
  y = em_module_forward(m, x);
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *gb = em_tensor_grad(b);
  ASSERT_TENSOR_CLOSE(gb, ((double[]){16, 16, 16}), 1e-6, 0);
  em_tensor_release(gb), em_tensor_release(s), em_tensor_release(y);
  ASSERT_EQ(em_test_get(nbt, 0), 2);
  /* eval: running statistics, nothing moves */
  em_module_train(m, false);
  double rm0 = em_test_get(rm, 0), rv0 = em_test_get(rv, 0);
  y = em_module_forward(m, x);
  ASSERT_EQ(em_test_get(nbt, 0), 2);
  ASSERT_CLOSE(em_test_get(rm, 0), rm0, 0, 0);
  ASSERT_CLOSE(em_test_get(y, 0), (em_test_get(x, 0) - rm0) / sqrt(rv0 + 1e-5), 1e-4, 1e-5);
  em_tensor_release(y);
  em_tensor *x3 = RND(EM_FLOAT32, 0, 3, 2, 2);
  ASSERT_NULL_ERR(em_module_forward(m, x3), EM_ERR_SHAPE, "BatchNorm2d: expected 4D input (got 3D input)");
  em_tensor_release(x3);
  em_module_release(m);
  em_tensor_release(x);

  /* momentum None (NaN): a cumulative average of the batch statistics */
  m = em_nn_batch_norm1d(2, 1e-3, NAN, false, true);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "BatchNorm1d(2, eps=0.001, momentum=None, affine=False, track_running_stats=True)");
  free(r);
  ASSERT_TRUE(em_module_parameter(m, "weight") == NULL);
  float a[4] = {1, 2, 3, 4}, c[4] = {5, 6, 7, 8};
  em_tensor *xa = em_tensor_from_data(a, EM_DIMS(2, 2), EM_FLOAT32); /* means 2, 3 */
  em_tensor *xc = em_tensor_from_data(c, EM_DIMS(2, 2), EM_FLOAT32); /* means 6, 7 */
  y = em_module_forward(m, xa);
  em_tensor_release(y);
  ASSERT_TENSOR_CLOSE(em_module_buffer(m, "running_mean"), ((double[]){2, 3}), 1e-6, 0);
  y = em_module_forward(m, xc);
  em_tensor_release(y);
  ASSERT_TENSOR_CLOSE(em_module_buffer(m, "running_mean"), ((double[]){4, 5}), 1e-6, 0);
  ASSERT_TENSOR_CLOSE(em_module_buffer(m, "running_var"), ((double[]){2, 2}), 1e-6, 0);
  em_tensor *x4 = RND(EM_FLOAT32, 0, 2, 2, 2, 2);
  ASSERT_NULL_ERR(em_module_forward(m, x4), EM_ERR_SHAPE, "BatchNorm1d: expected 2D or 3D input (got 4D input)");
  em_tensor *xl3 = RND(EM_FLOAT32, 0, 2, 2, 5);
  y = em_module_forward(m, xl3);
  ASSERT_SHAPE(y, 2, 2, 5);
  em_tensor_release(y);
  em_module_release(m);

  /* no running statistics: batch statistics in eval too, no buffers */
  m = em_nn_batch_norm1d(2, 1e-5, 0.1, true, false);
  ASSERT_TRUE(em_module_buffer(m, "running_mean") == NULL);
  ASSERT_TRUE(em_module_buffer(m, "num_batches_tracked") == NULL);
  em_module_train(m, false);
  y = em_module_forward(m, xa); /* channel 0 is {1, 3}: mean 2, var 1 */
  ASSERT_CLOSE(em_test_get(y, 0), -1 / sqrt(1 + 1e-5), 1e-5, 1e-6);
  em_tensor_release(y);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=False)");
  free(r);
  em_module_release(m);
  em_clear_error();
  ASSERT_TRUE(em_nn_batch_norm2d(-1, 1e-5, 0.1, true, true) == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_INVALID);
  em_tensor_release(xa), em_tensor_release(xc), em_tensor_release(x4), em_tensor_release(xl3);
}

EM_TEST(layer_and_group_norm_modules) {
  em_module *m = em_nn_layer_norm(EM_DIMS(3, 4), 1e-5, true);
  ASSERT_NOTNULL(m);
  char *r = em_module_repr(m);
  ASSERT_STREQ(r, "LayerNorm((3, 4), eps=1e-05, elementwise_affine=True)");
  free(r);
  ASSERT_SHAPE(em_module_parameter(m, "weight"), 3, 4);
  ASSERT_TENSOR_CLOSE(em_module_parameter(m, "weight"), ((double[12]){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}), 0, 0);
  ASSERT_TENSOR_CLOSE(em_module_parameter(m, "bias"), ((double[12]){0}), 0, 0);
  em_tensor *x = RND(EM_FLOAT32, 0, 2, 3, 4);
  em_tensor *y = em_module_forward(m, x), *e = em_nn_f_layer_norm(x, EM_DIMS(3, 4), NULL, NULL, 1e-5);
  bool same = false;
  ASSERT_OK(em_tensor_allclose(y, e, 1e-6, 1e-6, false, &same));
  ASSERT_TRUE(same);
  em_tensor_release(y), em_tensor_release(e);
  em_module_release(m);
  m = em_nn_layer_norm(EM_DIMS(3), 1e-6, false);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "LayerNorm((3,), eps=1e-06, elementwise_affine=False)");
  free(r);
  ASSERT_TRUE(em_module_parameter(m, "weight") == NULL);
  em_module_release(m);

  m = em_nn_group_norm(2, 4, 1e-5, true);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "GroupNorm(2, 4, eps=1e-05, affine=True)");
  free(r);
  ASSERT_TENSOR_CLOSE(em_module_parameter(m, "weight"), ((double[]){1, 1, 1, 1}), 0, 0);
  em_tensor *xg = RND(EM_FLOAT32, 0, 2, 4, 3);
  y = em_module_forward(m, xg);
  ASSERT_SHAPE(y, 2, 4, 3);
  em_tensor_release(y);
  em_module_release(m);
  m = em_nn_group_norm(2, 4, 0.5, false);
  r = em_module_repr(m);
  ASSERT_STREQ(r, "GroupNorm(2, 4, eps=0.5, affine=False)");
  free(r);
  em_module_release(m);
  em_clear_error();
  ASSERT_TRUE(em_nn_group_norm(3, 4, 1e-5, true) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "num_channels must be divisible by num_groups") != NULL);
  ASSERT_TRUE(em_nn_layer_norm(0, NULL, 1e-5, true) == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_INVALID);
  em_tensor_release(x), em_tensor_release(xg);
}

EM_TEST_MAIN()
