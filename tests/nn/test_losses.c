/* Losses against naive double loops written here (and a few values
 * computed once with PyTorch 1.13), every reduction, weights,
 * ignore_index, label smoothing, probability targets, spatial and
 * non-contiguous inputs, errors, and gradcheck of every loss. */
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

#define EPS 1e-6
#define ATOL 1e-5
#define RTOL 1e-3

static const em_reduction REDS[3] = {EM_REDUCTION_NONE, EM_REDUCTION_MEAN, EM_REDUCTION_SUM};

static em_tensor *f64(int ndim, const int64_t *shape, const double *v) {
  return em_tensor_from_data(v, ndim, shape, EM_FLOAT64);
}
static em_tensor *i64(int ndim, const int64_t *shape, const int64_t *v) {
  return em_tensor_from_data(v, ndim, shape, EM_INT64);
}
/* Uniform values in [lo, hi) of dtype dt from a fixed seed. */
static em_tensor *uni(int ndim, const int64_t *shape, em_dtype dt, double lo, double hi,
                      uint64_t seed) {
  em_generator *g = em_generator_create(seed);
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  em_tensor_uniform_(t, lo, hi, g);
  em_generator_destroy(g);
  return t;
}
/* Logical-order values of t as a malloc'd double array. */
static double *vals(em_tensor *t) {
  double *v = malloc(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
  for (int64_t i = 0; i < t->numel; i++) v[i] = em_test_get(t, i);
  return v;
}
static double item(em_tensor *t) { return em_tensor_item_double(t); }

/* ---- a naive reference of cross_entropy with class indices -------------------------------
 * x is [N, C, S] row-major; per element a = -w[t] logp[t], b = -sum_c w[c]
 * logp[c]; loss = (1 - ls) a + ls / C b; mean divides both sums by the
 * weight sum of the non-ignored targets (PyTorch 1.13). */
static double ce_ref(const double *x, const int64_t *t, int64_t N, int64_t C, int64_t S,
                     const double *w, int64_t ignore, double ls, em_reduction red, double *none) {
  double sa = 0, sb = 0, tw = 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t s = 0; s < S; s++) {
      double mx = -INFINITY, se = 0;
      for (int64_t c = 0; c < C; c++) mx = fmax(mx, x[(n * C + c) * S + s]);
      for (int64_t c = 0; c < C; c++) se += exp(x[(n * C + c) * S + s] - mx);
      double lse = mx + log(se);
      int64_t k = t[n * S + s];
      if (k == ignore) {
        if (none) none[n * S + s] = 0;
        continue;
      }
      double wt = w ? w[k] : 1, a = -wt * (x[(n * C + k) * S + s] - lse), b = 0;
      for (int64_t c = 0; c < C; c++) b -= (w ? w[c] : 1) * (x[(n * C + c) * S + s] - lse);
      if (none) none[n * S + s] = (1 - ls) * a + ls / (double)C * b;
      sa += a, sb += b, tw += wt;
    }
  if (red == EM_REDUCTION_SUM) return (1 - ls) * sa + ls / (double)C * sb;
  return ((1 - ls) * sa + ls / (double)C * sb) / tw;
}

/* Probability targets: -sum_c w[c] p'[c] logp[c], p' = p (1 - ls) + ls / C;
 * mean divides by N * S. */
static double ce_prob_ref(const double *x, const double *p, int64_t N, int64_t C, int64_t S,
                          const double *w, double ls, em_reduction red, double *none) {
  double sum = 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t s = 0; s < S; s++) {
      double mx = -INFINITY, se = 0, l = 0;
      for (int64_t c = 0; c < C; c++) mx = fmax(mx, x[(n * C + c) * S + s]);
      for (int64_t c = 0; c < C; c++) se += exp(x[(n * C + c) * S + s] - mx);
      for (int64_t c = 0; c < C; c++) {
        double pc = p[(n * C + c) * S + s] * (1 - ls) + ls / (double)C;
        l -= (w ? w[c] : 1) * pc * (x[(n * C + c) * S + s] - mx - log(se));
      }
      if (none) none[n * S + s] = l;
      sum += l;
    }
  return red == EM_REDUCTION_SUM ? sum : sum / (double)(N * S);
}

/* Runs cross_entropy (or nll_loss on log_softmax(x) when nll) for every
 * reduction and compares with ce_ref. */
static int check_ce(em_tensor *x, em_tensor *t, em_tensor *w, int64_t ignore, bool has_ignore,
                    double ls, bool nll, double rtol) {
  int ok = 1;
  int64_t N = x->ndim == 1 ? 1 : x->shape[0], C = x->shape[x->ndim == 1 ? 0 : 1];
  int64_t S = x->numel / (C ? C : 1) / (N ? N : 1);
  double *xv = vals(x), *wv = w ? vals(w) : NULL, *none = calloc((size_t)(N * S + 1), sizeof(double));
  int64_t *tv = malloc(sizeof(int64_t) * (size_t)(t->numel + 1));
  for (int64_t i = 0; i < t->numel; i++) tv[i] = (int64_t)em_test_get(t, i);
  em_tensor *in = x;
  if (nll) in = em_tensor_log_softmax(x, x->ndim == 1 ? 0 : 1, EM_DTYPE_UNDEFINED);
  for (int r = 0; r < 3 && ok; r++) {
    em_ce_options o = {.weight = w, .ignore_index = ignore, .has_ignore_index = has_ignore,
                       .reduction = REDS[r], .label_smoothing = ls};
    em_tensor *l = nll ? em_nn_f_nll_loss(in, t, &o) : em_nn_f_cross_entropy(in, t, &o);
    double ref = ce_ref(xv, tv, N, C, S, wv, has_ignore ? ignore : -100, ls, REDS[r], none);
    if (!l) {
      fprintf(stderr, "  loss failed: %s\n", em_last_error());
      ok = 0;
    } else if (REDS[r] == EM_REDUCTION_NONE) {
      ok = em_test_tensor_close(l, none, N * S, rtol, 1e-6, __FILE__, __LINE__, "none") &&
           l->ndim == t->ndim;
    } else {
      ok = l->ndim == 0 && (fabs(item(l) - ref) <= 1e-6 + rtol * fabs(ref) ||
                            (isnan(ref) && isnan(item(l))));
      if (!ok) fprintf(stderr, "  reduction %d: got %.10g expected %.10g\n", r, item(l), ref);
    }
    em_tensor_release(l);
  }
  if (nll) em_tensor_release(in);
  free(xv), free(wv), free(none), free(tv);
  return ok;
}

EM_TEST(ce_matches_pytorch_values) {
  /* computed once with torch 1.13 (float64) */
  double xv[] = {0.5, -1.0, 2.0, 0.1, 1.5, 0.3, -0.7, 0.0, -0.2, 0.9, 0.4, -1.3};
  double wv[] = {0.5, 2.0, 1.0, 3.0};
  double pv[] = {0.1, 0.2, 0.3, 0.4, 0.7, 0.1, 0.1, 0.1, 0.0, 0.5, 0.5, 0.0};
  em_tensor *x = f64(EM_DIMS(3, 4), xv), *w = f64(EM_DIMS(4), wv), *p = f64(EM_DIMS(3, 4), pv);
  em_tensor *t = i64(EM_DIMS(3), (int64_t[]){2, 0, 1}), *t2 = i64(EM_DIMS(3), (int64_t[]){2, 1, 1});
  em_tensor *l;
  l = em_nn_f_cross_entropy(x, t, &(em_ce_options){.reduction = EM_REDUCTION_NONE});
  ASSERT_TENSOR_CLOSE(l, ((double[]){0.3524059381, 0.4917208016, 0.7179397402}), 1e-9, 0);
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t, NULL);
  ASSERT_CLOSE(item(l), 0.5206888266, 1e-9, 0);
  em_tensor_release(l);
  em_ce_options o = {.weight = w, .ignore_index = 1, .has_ignore_index = true};
  l = em_nn_f_cross_entropy(x, t2, &o);
  ASSERT_CLOSE(item(l), 0.3524059381, 1e-9, 0);
  em_tensor_release(l);
  o = (em_ce_options){.ignore_index = 1, .has_ignore_index = true, .label_smoothing = 0.3};
  l = em_nn_f_cross_entropy(x, t2, &o);
  ASSERT_CLOSE(item(l), 0.8324059381, 1e-9, 0);
  em_tensor_release(l);
  o.weight = w;
  l = em_nn_f_cross_entropy(x, t2, &o);
  ASSERT_CLOSE(item(l), 1.3522320515, 1e-9, 0);
  em_tensor_release(l);
  /* two non-ignored targets: the mean divides by their weight sum (count) */
  em_tensor *t3 = i64(EM_DIMS(3), (int64_t[]){2, 1, 0});
  l = em_nn_f_cross_entropy(x, t3, &o);
  ASSERT_CLOSE(item(l), 1.941504389299134, 1e-12, 0);
  em_tensor_release(l);
  o.weight = NULL;
  l = em_nn_f_cross_entropy(x, t3, &o);
  ASSERT_CLOSE(item(l), 1.302672839171642, 1e-12, 0);
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t3, &(em_ce_options){.weight = w, .label_smoothing = 0.3});
  ASSERT_CLOSE(item(l), 1.7722513134013198, 1e-12, 0);
  em_tensor_release(l), em_tensor_release(t3);
  l = em_nn_f_cross_entropy(x, p, NULL);
  ASSERT_CLOSE(item(l), 1.2706888266, 1e-9, 0);
  em_tensor_release(l);
  o = (em_ce_options){.weight = w, .label_smoothing = 0.2, .reduction = EM_REDUCTION_NONE};
  l = em_nn_f_cross_entropy(x, p, &o);
  ASSERT_TENSOR_CLOSE(l, ((double[]){4.1307851933, 1.7165170697, 1.6773581039}), 1e-9, 0);
  em_tensor_release(l);
  o.reduction = EM_REDUCTION_SUM;
  l = em_nn_f_cross_entropy(x, p, &o);
  ASSERT_CLOSE(item(l), 7.5246603669, 1e-9, 0);
  em_tensor_release(l);
  em_tensor_release(x), em_tensor_release(w), em_tensor_release(p);
  em_tensor_release(t), em_tensor_release(t2);
}

EM_TEST(ce_class_indices_every_option) {
  em_dtype dts[2] = {EM_FLOAT32, EM_FLOAT64};
  for (int d = 0; d < 2; d++) {
    em_tensor *x = uni(EM_DIMS(7, 5), dts[d], -3, 3, 1);
    em_tensor *w = uni(EM_DIMS(5), dts[d], 0.2, 2, 2);
    em_tensor *t = i64(EM_DIMS(7), (int64_t[]){0, 4, 2, 2, -100, 1, 3});
    em_tensor *t3 = i64(EM_DIMS(7), (int64_t[]){0, 4, 2, 2, 3, 1, 3}); /* 3 ignored below */
    double rtol = d == 0 ? 1e-5 : 1e-10;
    ASSERT_TRUE(check_ce(x, t, NULL, 0, false, 0, false, rtol));
    ASSERT_TRUE(check_ce(x, t, w, 0, false, 0, false, rtol));
    ASSERT_TRUE(check_ce(x, t3, w, 3, true, 0, false, rtol));
    ASSERT_TRUE(check_ce(x, t3, NULL, 3, true, 0, false, rtol));
    ASSERT_TRUE(check_ce(x, t, NULL, 0, false, 0.25, false, rtol));
    ASSERT_TRUE(check_ce(x, t3, NULL, 3, true, 0.1, false, rtol));
    ASSERT_TRUE(check_ce(x, t3, w, 3, true, 0.1, false, rtol));
    ASSERT_TRUE(check_ce(x, t, w, 0, false, 1.0, false, rtol));
    /* nll_loss on log-probabilities gives the same numbers */
    ASSERT_TRUE(check_ce(x, t3, w, 3, true, 0, true, rtol));
    ASSERT_TRUE(check_ce(x, t, NULL, 0, false, 0, true, rtol));
    em_tensor_release(x), em_tensor_release(w), em_tensor_release(t), em_tensor_release(t3);
  }
}

EM_TEST(ce_spatial_noncontiguous_and_1d) {
  /* [N, C, d1, d2] made as a permuted view of [N, d1, d2, C] */
  em_tensor *b = uni(EM_DIMS(2, 3, 2, 4), EM_FLOAT64, -2, 2, 5);
  em_tensor *x = em_tensor_permute(b, EM_DIMS(0, 3, 1, 2));
  ASSERT_TRUE(!em_tensor_is_contiguous(x));
  em_tensor *t = i64(EM_DIMS(2, 3, 2), (int64_t[]){0, 1, 2, 3, 3, -100, 1, 1, 0, 2, 2, 3});
  em_tensor *w = f64(EM_DIMS(4), ((double[]){1, 0.5, 2, 1.5}));
  ASSERT_TRUE(check_ce(x, t, NULL, 0, false, 0, false, 1e-10));
  ASSERT_TRUE(check_ce(x, t, w, 0, false, 0.2, false, 1e-10));
  em_tensor *t2 = i64(EM_DIMS(2, 3, 2), (int64_t[]){0, 1, 2, 3, 3, 2, 1, 1, 0, 2, 2, 3});
  ASSERT_TRUE(check_ce(x, t2, w, 2, true, 0, false, 1e-10));
  ASSERT_TRUE(check_ce(x, t2, NULL, 2, true, 0.4, false, 1e-10));
  em_tensor_release(t2);
  /* [N, C, d] */
  em_tensor *x3 = uni(EM_DIMS(2, 3, 5), EM_FLOAT64, -2, 2, 6);
  em_tensor *t3 = i64(EM_DIMS(2, 5), (int64_t[]){0, 1, 2, 0, 1, 2, 2, 1, 0, 0});
  ASSERT_TRUE(check_ce(x3, t3, NULL, 0, false, 0.3, false, 1e-10));
  /* [C] with a 0-dim target */
  em_tensor *x1 = f64(EM_DIMS(3), ((double[]){0.1, 0.7, -0.4}));
  em_tensor *t0 = em_tensor_scalar(em_scalar_int(1), EM_INT64);
  ASSERT_TRUE(check_ce(x1, t0, NULL, 0, false, 0, false, 1e-12));
  ASSERT_TRUE(check_ce(x1, t0, NULL, 0, false, 0.5, false, 1e-12));
  em_tensor *l = em_nn_f_cross_entropy(x1, t0, &(em_ce_options){.reduction = EM_REDUCTION_NONE});
  ASSERT_NOTNULL(l);
  ASSERT_SCALAR_SHAPE(l);
  em_tensor_release(l);
  em_tensor *all[] = {b, x, t, w, x3, t3, x1, t0};
  for (int i = 0; i < 8; i++) em_tensor_release(all[i]);
}

EM_TEST(ce_probability_targets) {
  em_tensor *x = uni(EM_DIMS(4, 3), EM_FLOAT64, -2, 2, 7);
  em_tensor *p = uni(EM_DIMS(4, 3), EM_FLOAT64, 0, 1, 8);
  em_tensor *w = f64(EM_DIMS(3), ((double[]){0.3, 1, 2}));
  double *xv = vals(x), *pv = vals(p), *wv = vals(w), none[4];
  double lss[] = {0, 0.15};
  for (int k = 0; k < 2; k++)
    for (int wi = 0; wi < 2; wi++)
      for (int r = 0; r < 3; r++) {
        em_ce_options o = {.weight = wi ? w : NULL, .reduction = REDS[r], .label_smoothing = lss[k]};
        em_tensor *l = em_nn_f_cross_entropy(x, p, &o);
        double ref = ce_prob_ref(xv, pv, 4, 3, 1, wi ? wv : NULL, lss[k], REDS[r], none);
        ASSERT_NOTNULL(l);
        if (REDS[r] == EM_REDUCTION_NONE)
          ASSERT_TENSOR_CLOSE(l, none, 1e-10, 1e-12);
        else
          ASSERT_CLOSE(item(l), ref, 1e-10, 1e-12);
        em_tensor_release(l);
      }
  /* spatial probabilities, a transposed target */
  em_tensor *xs = uni(EM_DIMS(2, 3, 4), EM_FLOAT64, -2, 2, 9);
  em_tensor *pb = uni(EM_DIMS(2, 4, 3), EM_FLOAT64, 0, 1, 10);
  em_tensor *ps = em_tensor_transpose(pb, 1, 2);
  double *xsv = vals(xs), *psv = vals(ps), none8[8];
  em_tensor *l = em_nn_f_cross_entropy(xs, ps, &(em_ce_options){.reduction = EM_REDUCTION_NONE});
  ce_prob_ref(xsv, psv, 2, 3, 4, NULL, 0, EM_REDUCTION_NONE, none8);
  ASSERT_SHAPE(l, 2, 4);
  ASSERT_TENSOR_CLOSE(l, none8, 1e-10, 1e-12);
  em_tensor_release(l);
  free(xv), free(pv), free(wv), free(xsv), free(psv);
  em_tensor_release(x), em_tensor_release(p), em_tensor_release(w);
  em_tensor_release(xs), em_tensor_release(pb), em_tensor_release(ps);
}

EM_TEST(ce_empty_and_all_ignored) {
  em_tensor *x = em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *t = em_tensor_zeros(EM_DIMS(0), EM_INT64);
  em_tensor *l = em_nn_f_cross_entropy(x, t, NULL);
  ASSERT_TRUE(l && isnan(item(l)));
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t, &(em_ce_options){.reduction = EM_REDUCTION_SUM});
  ASSERT_TRUE(l && item(l) == 0);
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t, &(em_ce_options){.reduction = EM_REDUCTION_NONE});
  ASSERT_SHAPE(l, 0);
  em_tensor_release(l);
  em_tensor *p = em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32);
  l = em_nn_f_cross_entropy(x, p, NULL);
  ASSERT_TRUE(l && isnan(item(l)));
  em_tensor_release(l), em_tensor_release(p);
  em_tensor_release(x), em_tensor_release(t);
  /* every target ignored: mean is 0/0 = NaN (with smoothing too), sum is 0 */
  x = uni(EM_DIMS(2, 3), EM_FLOAT32, -1, 1, 3);
  t = i64(EM_DIMS(2), (int64_t[]){-100, -100});
  l = em_nn_f_cross_entropy(x, t, NULL);
  ASSERT_TRUE(l && isnan(item(l)));
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t, &(em_ce_options){.label_smoothing = 0.1});
  ASSERT_TRUE(l && isnan(item(l)));
  em_tensor_release(l);
  l = em_nn_f_cross_entropy(x, t, &(em_ce_options){.reduction = EM_REDUCTION_SUM});
  ASSERT_TRUE(l && item(l) == 0);
  em_tensor_release(l);
  em_tensor_release(x), em_tensor_release(t);
}

EM_TEST(ce_errors) {
  em_tensor *x = uni(EM_DIMS(4, 10), EM_FLOAT32, -1, 1, 1);
  em_tensor *t = i64(EM_DIMS(4), (int64_t[]){1, 2, 10, 3});
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, t, NULL), EM_ERR_INDEX, "Target 10 is out of bounds.");
  em_tensor *tn = i64(EM_DIMS(4), (int64_t[]){1, 2, -1, 3});
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, tn, NULL), EM_ERR_INDEX, "Target -1 is out of bounds.");
  ASSERT_NULL_ERR(em_nn_f_nll_loss(x, tn, NULL), EM_ERR_INDEX, "nll_loss: Target -1 is out of bounds.");
  em_tensor *t32 = em_tensor_zeros(EM_DIMS(4), EM_INT32);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, t32, NULL), EM_ERR_DTYPE,
                  "expected scalar type Long but found Int");
  em_tensor *tf = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, tf, NULL), EM_ERR_DTYPE,
                  "expected scalar type Long but found Float");
  em_tensor *t3 = i64(EM_DIMS(3), (int64_t[]){1, 2, 3});
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, t3, NULL), EM_ERR_SHAPE,
                  "Expected input batch_size (4) to match target batch_size (3).");
  em_tensor *t42 = em_tensor_zeros(EM_DIMS(4, 2), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_nll_loss(x, t42, NULL), EM_ERR_SHAPE,
                  "0D or 1D target tensor expected, multi-target not supported");
  em_tensor *w5 = em_tensor_ones(EM_DIMS(5), EM_FLOAT32);
  em_tensor *ok = i64(EM_DIMS(4), (int64_t[]){1, 2, 3, 3});
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, ok, &(em_ce_options){.weight = w5}), EM_ERR_SHAPE,
                  "weight tensor should be defined either for all 10 classes or no classes but got "
                  "weight tensor of shape: [5]");
  em_tensor *w64 = em_tensor_ones(EM_DIMS(10), EM_FLOAT64);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, ok, &(em_ce_options){.weight = w64}), EM_ERR_DTYPE,
                  "expected scalar type Float but found Double");
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, ok, &(em_ce_options){.label_smoothing = 1.5}),
                  EM_ERR_INVALID, "label_smoothing must be between 0.0 and 1.0. Got: 1.5");
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, ok, &(em_ce_options){.reduction = (em_reduction)7}),
                  EM_ERR_INVALID, "not a valid value for reduction");
  em_tensor *p = uni(EM_DIMS(4, 10), EM_FLOAT32, 0, 1, 2);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(
                      x, p, &(em_ce_options){.ignore_index = 1, .has_ignore_index = true}),
                  EM_ERR_INVALID, "ignore_index is not supported for floating point target");
  em_tensor *pl = em_tensor_zeros(EM_DIMS(4, 10), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(x, pl, NULL), EM_ERR_DTYPE,
                  "Expected floating point type for target with class probabilities, got Long");
  em_tensor *xi = em_tensor_zeros(EM_DIMS(4, 10), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(xi, ok, NULL), EM_ERR_DTYPE, "floating-point input");
  em_tensor *xs = uni(EM_DIMS(2, 3, 4), EM_FLOAT32, -1, 1, 3);
  em_tensor *ts = em_tensor_zeros(EM_DIMS(2, 5), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(xs, ts, NULL), EM_ERR_SHAPE,
                  "Expected target size [2, 4], got [2, 5]");
  em_tensor *x0 = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  em_tensor *t0 = em_tensor_scalar(em_scalar_int(0), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_nll_loss(x0, t0, NULL), EM_ERR_SHAPE,
                  "Expected 1 or more dimensions (got 0)");
  em_tensor *x1 = uni(EM_DIMS(5), EM_FLOAT32, -1, 1, 3);
  em_tensor *t1 = i64(EM_DIMS(1), (int64_t[]){3});
  ASSERT_NULL_ERR(em_nn_f_nll_loss(x1, t1, NULL), EM_ERR_SHAPE,
                  "size mismatch (got input: [5], target: [1])");
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(NULL, t1, NULL), EM_ERR_INVALID, "NULL");
  /* an ignored target may be out of range */
  em_tensor *ti = i64(EM_DIMS(4), (int64_t[]){1, 2, 50, 3});
  em_tensor *l = em_nn_f_cross_entropy(x, ti, &(em_ce_options){.ignore_index = 50, .has_ignore_index = true});
  ASSERT_NOTNULL(l);
  em_tensor_release(l);
  em_tensor *all[] = {x, t, tn, t32, tf, t3, t42, w5, ok, w64, p, pl, xi, xs, ts, x0, t0, x1, t1, ti};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) em_tensor_release(all[i]);
}

/* The analytic gradient of mean cross_entropy: (softmax(x) - onehot) / N,
 * checked on the float32 training path. */
EM_TEST(ce_gradient_float32) {
  em_tensor *x = uni(EM_DIMS(6, 10), EM_FLOAT32, -3, 3, 11);
  ASSERT_OK(em_tensor_set_requires_grad(x, true));
  int64_t tv[6] = {0, 9, 3, 3, 7, 1};
  em_tensor *t = i64(EM_DIMS(6), tv);
  em_tensor *l = em_nn_f_cross_entropy(x, t, NULL);
  ASSERT_NOTNULL(l);
  ASSERT_STREQ(em_tensor_grad_fn_name(l), "NllLossBackward0");
  ASSERT_OK(em_backward(l, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  double *xv = vals(x), exp_g[60];
  for (int n = 0; n < 6; n++) {
    double mx = -INFINITY, se = 0;
    for (int c = 0; c < 10; c++) mx = fmax(mx, xv[n * 10 + c]);
    for (int c = 0; c < 10; c++) se += exp(xv[n * 10 + c] - mx);
    for (int c = 0; c < 10; c++)
      exp_g[n * 10 + c] = (exp(xv[n * 10 + c] - mx) / se - (c == tv[n])) / 6.0;
  }
  ASSERT_TENSOR_CLOSE(g, exp_g, 1e-5, 1e-7);
  free(xv);
  em_tensor_release(g), em_tensor_release(l), em_tensor_release(t), em_tensor_release(x);
}

EM_TEST(ce_half_input) {
  em_tensor *x32 = uni(EM_DIMS(3, 4), EM_FLOAT32, -1, 1, 12);
  em_tensor *x = em_tensor_to_dtype(x32, EM_BFLOAT16);
  em_tensor *t = i64(EM_DIMS(3), (int64_t[]){0, 3, 1});
  em_tensor *l = em_nn_f_nll_loss(x, t, NULL);
  ASSERT_NOTNULL(l);
  ASSERT_EQ(l->dtype, EM_BFLOAT16);
  double xv[12];
  for (int i = 0; i < 12; i++) xv[i] = em_test_get(x, i);
  ASSERT_CLOSE(item(l), -(xv[0] + xv[7] + xv[9]) / 3, 1e-2, 0);
  em_tensor_release(l), em_tensor_release(t), em_tensor_release(x), em_tensor_release(x32);
}

/* ---- gradcheck -------------------------------------------------------------------------- */

typedef struct ce_ctx {
  em_tensor *t;  /* class indices (not an input) */
  em_ce_options o;
  bool nll;
} ce_ctx;

static em_tensor *ce_call(int n, em_tensor *const *in, void *p) {
  ce_ctx *c = p;
  if (n == 2) return em_nn_f_cross_entropy(in[0], in[1], &c->o); /* probability targets */
  return c->nll ? em_nn_f_nll_loss(in[0], c->t, &c->o) : em_nn_f_cross_entropy(in[0], c->t, &c->o);
}

static em_tensor *gin(int ndim, const int64_t *s, double lo, double hi, uint64_t seed) {
  em_tensor *t = uni(ndim, s, EM_FLOAT64, lo, hi, seed);
  em_tensor_set_requires_grad(t, true);
  return t;
}

EM_TEST(gradcheck_ce_and_nll) {
  em_tensor *w = f64(EM_DIMS(4), ((double[]){0.5, 2, 1, 3}));
  em_tensor *t = i64(EM_DIMS(5), (int64_t[]){0, 3, 1, 1, 2});
  em_tensor *ts = i64(EM_DIMS(2, 3), (int64_t[]){0, 3, 1, 1, 2, 2});
  for (int r = 0; r < 3; r++) {
    ce_ctx cases[] = {
        {t, {.reduction = REDS[r]}, false},
        {t, {.weight = w, .reduction = REDS[r], .ignore_index = 1, .has_ignore_index = true}, false},
        {t, {.reduction = REDS[r], .label_smoothing = 0.2, .ignore_index = 3, .has_ignore_index = true}, false},
        {t, {.weight = w, .reduction = REDS[r], .label_smoothing = 0.3}, false},
        {t, {.weight = w, .reduction = REDS[r], .ignore_index = 2, .has_ignore_index = true}, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
      em_tensor *x = gin(EM_DIMS(5, 4), -2, 2, 20 + k);
      em_status st = em_ag_gradcheck(ce_call, &cases[k], 1, &x, EPS, ATOL, RTOL);
      if (st) fprintf(stderr, "  case %zu reduction %d: %s\n", k, r, em_last_error());
      em_tensor_release(x);
      ASSERT_OK(st);
    }
    /* spatial, transposed input */
    ce_ctx sp = {ts, {.weight = w, .reduction = REDS[r], .label_smoothing = 0.1}, false};
    em_tensor *b = gin(EM_DIMS(2, 3, 4), -2, 2, 30);
    em_tensor *xs = em_tensor_transpose(b, 1, 2);
    ASSERT_OK(em_ag_gradcheck(ce_call, &sp, 1, &xs, EPS, ATOL, RTOL));
    em_tensor_release(xs), em_tensor_release(b);
    /* probability targets: with respect to input and target */
    ce_ctx pc = {NULL, {.weight = w, .reduction = REDS[r], .label_smoothing = 0.2}, false};
    em_tensor *in[2] = {gin(EM_DIMS(3, 4), -2, 2, 31), gin(EM_DIMS(3, 4), 0, 1, 32)};
    ASSERT_OK(em_ag_gradcheck(ce_call, &pc, 2, in, EPS, ATOL, RTOL));
    em_tensor_release(in[0]), em_tensor_release(in[1]);
  }
  em_tensor_release(w), em_tensor_release(t), em_tensor_release(ts);
}

/* ---- regression losses ------------------------------------------------------------------ */

typedef double (*elem_fn)(double x, double y, double beta);
static double mse_e(double x, double y, double b) { (void)b; return (x - y) * (x - y); }
static double l1_e(double x, double y, double b) { (void)b; return fabs(x - y); }
static double sl1_e(double x, double y, double b) {
  double z = fabs(x - y);
  return z < b ? 0.5 * z * z / b : z - 0.5 * b;
}

/* input [3, 4] transposed view, target [4] broadcast */
static int check_pair(int which, double beta) {
  em_tensor *b = uni(EM_DIMS(4, 3), EM_FLOAT64, -2, 2, 40);
  em_tensor *x = em_tensor_t(b);
  em_tensor *y = f64(EM_DIMS(4), ((double[]){0.3, -1, 1.99, 0.05}));
  elem_fn f = which == 0 ? mse_e : which == 1 ? l1_e : sl1_e;
  double none[12], sum = 0;
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++) {
      none[i * 4 + j] = f(em_test_get(x, i * 4 + j), em_test_get(y, j), beta);
      sum += none[i * 4 + j];
    }
  int ok = 1;
  for (int r = 0; r < 3 && ok; r++) {
    em_tensor *l = which == 0   ? em_nn_f_mse_loss(x, y, REDS[r])
                   : which == 1 ? em_nn_f_l1_loss(x, y, REDS[r])
                                : em_nn_f_smooth_l1_loss(x, y, REDS[r], beta);
    if (REDS[r] == EM_REDUCTION_NONE)
      ok = em_test_tensor_close(l, none, 12, 1e-12, 1e-14, __FILE__, __LINE__, "none");
    else
      ok = l && fabs(item(l) - (REDS[r] == EM_REDUCTION_SUM ? sum : sum / 12)) < 1e-12;
    em_tensor_release(l);
  }
  em_tensor_release(x), em_tensor_release(b), em_tensor_release(y);
  return ok;
}

EM_TEST(regression_losses) {
  ASSERT_TRUE(check_pair(0, 0));
  ASSERT_TRUE(check_pair(1, 0));
  ASSERT_TRUE(check_pair(2, 1.0));
  ASSERT_TRUE(check_pair(2, 0.5));
  ASSERT_TRUE(check_pair(2, 0)); /* beta 0 is l1 */
  /* hand values */
  em_tensor *x = f64(EM_DIMS(3), ((double[]){1, 2, 3}));
  em_tensor *y = f64(EM_DIMS(3), ((double[]){1.5, 0, 3}));
  em_tensor *l = em_nn_f_mse_loss(x, y, EM_REDUCTION_MEAN);
  ASSERT_CLOSE(item(l), (0.25 + 4) / 3, 1e-15, 0);
  em_tensor_release(l);
  l = em_nn_f_smooth_l1_loss(x, y, EM_REDUCTION_NONE, 1);
  ASSERT_TENSOR_CLOSE(l, ((double[]){0.125, 1.5, 0}), 1e-15, 0);
  em_tensor_release(l);
  /* float32 and 0-dim */
  em_tensor *a = em_tensor_scalar(em_scalar_float(2), EM_FLOAT32);
  em_tensor *c = em_tensor_scalar(em_scalar_float(-1), EM_FLOAT32);
  l = em_nn_f_l1_loss(a, c, EM_REDUCTION_MEAN);
  ASSERT_TRUE(l && l->dtype == EM_FLOAT32 && item(l) == 3);
  em_tensor_release(l);
  /* empty: mean NaN, sum 0 */
  em_tensor *e = em_tensor_zeros(EM_DIMS(0, 2), EM_FLOAT32);
  l = em_nn_f_mse_loss(e, e, EM_REDUCTION_MEAN);
  ASSERT_TRUE(l && isnan(item(l)));
  em_tensor_release(l);
  l = em_nn_f_mse_loss(e, e, EM_REDUCTION_SUM);
  ASSERT_TRUE(l && item(l) == 0);
  em_tensor_release(l);
  /* errors */
  em_tensor *y4 = em_tensor_zeros(EM_DIMS(4), EM_FLOAT64);
  ASSERT_NULL_ERR(em_nn_f_mse_loss(x, y4, EM_REDUCTION_MEAN), EM_ERR_SHAPE,
                  "must match the size of tensor b (4) at non-singleton dimension");
  em_tensor *xi = em_tensor_zeros(EM_DIMS(3), EM_INT64);
  ASSERT_NULL_ERR(em_nn_f_l1_loss(xi, xi, EM_REDUCTION_MEAN), EM_ERR_DTYPE, "floating-point");
  ASSERT_NULL_ERR(em_nn_f_smooth_l1_loss(x, y, EM_REDUCTION_MEAN, -1), EM_ERR_INVALID,
                  "smooth_l1_loss does not support negative values for beta.");
  em_tensor *all[] = {x, y, a, c, e, y4, xi};
  for (int i = 0; i < 7; i++) em_tensor_release(all[i]);
}

typedef struct pair_ctx {
  int which; /* 0 mse, 1 l1, 2 smooth_l1, 3 bce, 4 bce logits, 5 kl, 6 kl log_target */
  em_reduction r;
  double beta;
  em_tensor *w, *pw;
  bool batchmean;
} pair_ctx;

static em_tensor *pair_call(int n, em_tensor *const *in, void *p) {
  (void)n;
  pair_ctx *c = p;
  switch (c->which) {
    case 0: return em_nn_f_mse_loss(in[0], in[1], c->r);
    case 1: return em_nn_f_l1_loss(in[0], in[1], c->r);
    case 2: return em_nn_f_smooth_l1_loss(in[0], in[1], c->r, c->beta);
    case 3: return em_nn_f_binary_cross_entropy(in[0], in[1], c->w, c->r);
    case 4: return em_nn_f_binary_cross_entropy_with_logits(in[0], in[1], c->w, c->pw, c->r);
    case 5: return em_nn_f_kl_div(in[0], in[1], c->r, c->batchmean, false);
    default: return em_nn_f_kl_div(in[0], in[1], c->r, c->batchmean, true);
  }
}

EM_TEST(gradcheck_pairwise_losses) {
  em_tensor *w = f64(EM_DIMS(4), ((double[]){0.5, 2, 1, 3}));
  em_tensor *pw = f64(EM_DIMS(4), ((double[]){3, 0.5, 1, 2}));
  for (int r = 0; r < 3; r++)
    for (int which = 0; which <= 6; which++) {
      pair_ctx c = {which, REDS[r], 0.7, NULL, NULL, false};
      if (which == 3 || which == 4) c.w = w;
      if (which == 4) c.pw = pw;
      if (which == 5 && r == 1) c.batchmean = true;
      double lo = which == 3 ? 0.05 : which == 5 ? -3 : -2, hi = which == 3 ? 0.95 : which == 5 ? -0.1 : 2;
      double tlo = which == 3 || which == 4 || which == 5 ? 0.05 : -2, thi = which >= 3 && which <= 5 ? 0.95 : 2;
      em_tensor *b = gin(EM_DIMS(4, 3), lo, hi, 50 + which);
      em_tensor *in[2] = {em_tensor_t(b), gin(EM_DIMS(3, 4), tlo, thi, 60 + which)};
      em_status st = em_ag_gradcheck(pair_call, &c, 2, in, EPS, ATOL, RTOL);
      if (st) fprintf(stderr, "  loss %d reduction %d: %s\n", which, r, em_last_error());
      em_tensor_release(in[0]), em_tensor_release(in[1]), em_tensor_release(b);
      ASSERT_OK(st);
    }
  em_tensor_release(w), em_tensor_release(pw);
}

/* ---- binary cross entropy ------------------------------------------------------------------ */

EM_TEST(bce_values_and_errors) {
  double xv[] = {0.3, 0.0, 1.0, 0.9, 0.5, 0.01};
  double yv[] = {0.4, 1.0, 0.0, 1.0, 0.5, 0.0};
  double wv[] = {2, 1, 0.5};
  em_tensor *x = f64(EM_DIMS(2, 3), xv), *y = f64(EM_DIMS(2, 3), yv), *w = f64(EM_DIMS(3), wv);
  double none[6], sum = 0;
  for (int i = 0; i < 6; i++) {
    double lx = fmax(log(xv[i]), -100), l1 = fmax(log(1 - xv[i]), -100);
    none[i] = -wv[i % 3] * (yv[i] * lx + (1 - yv[i]) * l1);
    sum += none[i];
  }
  ASSERT_CLOSE(none[1], 100, 1e-12, 0); /* log(0) clamped at -100 */
  em_tensor *l = em_nn_f_binary_cross_entropy(x, y, w, EM_REDUCTION_NONE);
  ASSERT_TENSOR_CLOSE(l, none, 1e-12, 1e-14);
  em_tensor_release(l);
  l = em_nn_f_binary_cross_entropy(x, y, w, EM_REDUCTION_SUM);
  ASSERT_CLOSE(item(l), sum, 1e-12, 0);
  em_tensor_release(l);
  l = em_nn_f_binary_cross_entropy(x, y, w, EM_REDUCTION_MEAN);
  ASSERT_CLOSE(item(l), sum / 6, 1e-12, 0);
  em_tensor_release(l);
  /* the gradient at the clamped ends is PyTorch's (x - y) / max(x (1 - x), 1e-12) */
  em_tensor *xg = f64(EM_DIMS(3), ((double[]){0.3, 0.0, 1.0}));
  em_tensor *yg = f64(EM_DIMS(3), ((double[]){0.4, 0.5, 0.2}));
  em_tensor_set_requires_grad(xg, true);
  em_tensor_set_requires_grad(yg, true);
  l = em_nn_f_binary_cross_entropy(xg, yg, NULL, EM_REDUCTION_SUM);
  ASSERT_CLOSE(item(l), 130.69559408809363, 1e-12, 0); /* torch 1.13 */
  ASSERT_OK(em_backward(l, NULL, false));
  em_tensor *gx = em_tensor_grad(xg), *gy = em_tensor_grad(yg);
  ASSERT_TENSOR_CLOSE(gx, ((double[]){-0.1 / 0.21, -0.5e12, 0.8e12}), 1e-12, 0);
  ASSERT_TENSOR_CLOSE(gy, ((double[]){log(0.7) - log(0.3), INFINITY, -INFINITY}), 1e-12, 0);
  em_tensor_release(gx), em_tensor_release(gy), em_tensor_release(l);
  em_tensor_release(xg), em_tensor_release(yg);
  /* errors */
  em_tensor *bad = f64(EM_DIMS(2), ((double[]){0.5, 1.5}));
  em_tensor *y2 = f64(EM_DIMS(2), ((double[]){0, 1}));
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy(bad, y2, NULL, EM_REDUCTION_MEAN), EM_ERR_INVALID,
                  "all elements of input should be between 0 and 1");
  em_tensor *nanx = f64(EM_DIMS(2), ((double[]){0.5, NAN}));
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy(nanx, y2, NULL, EM_REDUCTION_MEAN), EM_ERR_INVALID,
                  "all elements of input should be between 0 and 1");
  em_tensor *y12 = f64(EM_DIMS(1, 2), ((double[]){0, 1}));
  em_tensor *half = f64(EM_DIMS(2), ((double[]){0.5, 0.5}));
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy(half, y12, NULL, EM_REDUCTION_MEAN), EM_ERR_SHAPE,
                  "Using a target size ([1, 2]) that is different to the input size ([2]) is "
                  "deprecated. Please ensure they have the same size.");
  em_tensor *w3 = em_tensor_ones(EM_DIMS(3), EM_FLOAT64);
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy(half, y2, w3, EM_REDUCTION_MEAN), EM_ERR_SHAPE,
                  "The size of tensor a (2) must match the size of tensor b (3)");
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy_with_logits(half, y12, NULL, NULL, EM_REDUCTION_MEAN),
                  EM_ERR_SHAPE, "Target size ([1, 2]) must be the same as input size ([2])");
  ASSERT_NULL_ERR(em_nn_f_binary_cross_entropy_with_logits(half, y2, NULL, w3, EM_REDUCTION_MEAN),
                  EM_ERR_SHAPE, "pos_weight");
  em_tensor *all[] = {x, y, w, bad, y2, nanx, y12, half, w3};
  for (int i = 0; i < 9; i++) em_tensor_release(all[i]);
}

EM_TEST(bce_with_logits_values) {
  double xv[] = {0.3, -2, 100, -100, 0, 5.5};
  double yv[] = {0.4, 1, 0, 1, 0.5, 0.9};
  double wv[] = {2, 1, 0.5}, pv[] = {3, 0.5, 1};
  em_tensor *x = f64(EM_DIMS(2, 3), xv), *y = f64(EM_DIMS(2, 3), yv);
  em_tensor *w = f64(EM_DIMS(3), wv), *pw = f64(EM_DIMS(3), pv);
  for (int k = 0; k < 2; k++) {
    double none[6], sum = 0;
    for (int i = 0; i < 6; i++) {
      /* -w [p y log s(x) + (1 - y) log(1 - s(x))], log s(x) = -log1p(e^-x) computed stably */
      double ls = xv[i] >= 0 ? -log1p(exp(-xv[i])) : xv[i] - log1p(exp(xv[i]));
      double l1s = ls - xv[i];
      double p = k ? pv[i % 3] : 1;
      none[i] = -wv[i % 3] * (p * yv[i] * ls + (1 - yv[i]) * l1s);
      sum += none[i];
    }
    em_tensor *l = em_nn_f_binary_cross_entropy_with_logits(x, y, w, k ? pw : NULL, EM_REDUCTION_NONE);
    ASSERT_TENSOR_CLOSE(l, none, 1e-12, 1e-12);
    em_tensor_release(l);
    l = em_nn_f_binary_cross_entropy_with_logits(x, y, w, k ? pw : NULL, EM_REDUCTION_MEAN);
    ASSERT_CLOSE(item(l), sum / 6, 1e-12, 0);
    em_tensor_release(l);
  }
  /* float32 stays finite for huge logits */
  em_tensor *x32 = em_tensor_to_dtype(x, EM_FLOAT32), *y32 = em_tensor_to_dtype(y, EM_FLOAT32);
  em_tensor *l = em_nn_f_binary_cross_entropy_with_logits(x32, y32, NULL, NULL, EM_REDUCTION_SUM);
  ASSERT_TRUE(l && isfinite(item(l)));
  em_tensor_release(l);
  em_tensor_release(x32), em_tensor_release(y32);
  em_tensor_release(x), em_tensor_release(y), em_tensor_release(w), em_tensor_release(pw);
}

/* ---- kl_div ---------------------------------------------------------------------------------- */

EM_TEST(kl_div_values) {
  double xv[] = {-1.2, -0.3, -2.0, -0.7, -0.1, -3.0};
  double tv[] = {0.2, 0.0, 0.5, 0.3, 0.6, 0.1};
  em_tensor *x = f64(EM_DIMS(2, 3), xv), *t = f64(EM_DIMS(2, 3), tv);
  double none[6], sum = 0, nonel[6], suml = 0;
  for (int i = 0; i < 6; i++) {
    none[i] = (tv[i] > 0 ? tv[i] * log(tv[i]) : 0) - tv[i] * xv[i];
    nonel[i] = exp(tv[i]) * (tv[i] - xv[i]);
    sum += none[i], suml += nonel[i];
  }
  em_tensor *l = em_nn_f_kl_div(x, t, EM_REDUCTION_NONE, false, false);
  ASSERT_TENSOR_CLOSE(l, none, 1e-12, 1e-14);
  em_tensor_release(l);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_MEAN, false, false);
  ASSERT_CLOSE(item(l), sum / 6, 1e-12, 0);
  em_tensor_release(l);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_SUM, false, false);
  ASSERT_CLOSE(item(l), sum, 1e-12, 0);
  em_tensor_release(l);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_MEAN, true, false); /* batchmean: sum / N */
  ASSERT_CLOSE(item(l), sum / 2, 1e-12, 0);
  em_tensor_release(l);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_NONE, false, true);
  ASSERT_TENSOR_CLOSE(l, nonel, 1e-12, 1e-14);
  em_tensor_release(l);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_SUM, true, true);
  ASSERT_CLOSE(item(l), suml / 2, 1e-12, 0);
  em_tensor_release(l);
  /* a zero target contributes 0 and has a finite gradient */
  em_tensor_set_requires_grad(t, true);
  l = em_nn_f_kl_div(x, t, EM_REDUCTION_SUM, false, false);
  ASSERT_OK(em_backward(l, NULL, false));
  em_tensor *g = em_tensor_grad(t);
  ASSERT_CLOSE(em_test_get(g, 1), 0.3, 1e-15, 0); /* -x: the xlogy part adds 0 */
  ASSERT_CLOSE(em_test_get(g, 0), log(0.2) + 1 - (-1.2), 1e-12, 0);
  em_tensor_release(g), em_tensor_release(l);
  /* 0-dim batchmean divides by nothing */
  em_tensor *x0 = em_tensor_scalar(em_scalar_float(-1), EM_FLOAT64);
  em_tensor *t0 = em_tensor_scalar(em_scalar_float(0.5), EM_FLOAT64);
  l = em_nn_f_kl_div(x0, t0, EM_REDUCTION_MEAN, true, false);
  ASSERT_CLOSE(item(l), 0.5 * log(0.5) + 0.5, 1e-12, 0);
  em_tensor_release(l);
  em_tensor *t4 = em_tensor_zeros(EM_DIMS(4), EM_FLOAT64);
  ASSERT_NULL_ERR(em_nn_f_kl_div(x, t4, EM_REDUCTION_MEAN, false, false), EM_ERR_SHAPE,
                  "must match");
  em_tensor_release(t4), em_tensor_release(x0), em_tensor_release(t0);
  em_tensor_release(x), em_tensor_release(t);
}

EM_TEST_MAIN()
