/* Reductions, softmax and cumulative ops against naive reference loops in
 * double written here: every op over several dim sets, keepdim on and
 * off, contiguous / transposed / step-sliced / expanded inputs, every
 * supported dtype, zero-size and 0-dim inputs, the parallel and column
 * paths, accuracy of long float32 sums, NaN propagation and every error. */
#include "core/core_impl.h"
#include "tests/harness.h"

/* ---- data ------------------------------------------------------------------------------ */

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng_next(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

/* A value suited to dt: small integers for integer types (products stay
 * exact), 0/1 mostly true for bool, [-3, 3) for floats. */
static double rand_value(em_dtype dt) {
  switch (dt) {
    case EM_BOOL: return rng_unit() < 0.8;
    case EM_UINT8: return (double)(rng_next() % 4);
    case EM_INT8:
    case EM_INT16:
    case EM_INT32:
    case EM_INT64: return (double)(int)(rng_next() % 7) - 3;
    default: return rng_unit() * 6 - 3;
  }
}

static em_tensor *rand_tensor(em_dtype dt, int ndim, const int64_t *shape) {
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  char *p = t->numel ? em__data_ptr(t) : NULL;
  size_t es = em_dtype_size(dt);
  for (int64_t i = 0; i < t->numel; i++) em__store_f64(p + (size_t)i * es, dt, rand_value(dt));
  return t;
}

static em_tensor *from_doubles(em_dtype dt, int ndim, const int64_t *shape, const double *v) {
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  size_t es = em_dtype_size(dt);
  for (int64_t i = 0; i < t->numel; i++) em__store_f64((char *)em__data_ptr(t) + i * es, dt, v[i]);
  return t;
}

/* Layouts of a [A, B, C] input with the same logical shape. */
enum { L_CONTIG, L_TRANSPOSED, L_SLICED, L_EXPANDED, L_COUNT };
static const char *layout_name[] = {"contiguous", "transposed", "sliced", "expanded"};

static em_tensor *make_layout(int layout, em_dtype dt, int64_t A, int64_t B, int64_t C) {
  em_tensor *base, *v;
  switch (layout) {
    case L_CONTIG: return rand_tensor(dt, EM_DIMS(A, B, C));
    case L_TRANSPOSED: /* [C, B, A] permuted to [A, B, C] */
      base = rand_tensor(dt, EM_DIMS(C, B, A));
      v = base ? em_tensor_permute(base, EM_DIMS(2, 1, 0)) : NULL;
      break;
    case L_SLICED: /* every other row of dim 1 and dim 2 */
      base = rand_tensor(dt, EM_DIMS(A, 2 * B, 2 * C + 1));
      if (!base) return NULL;
      {
        em_tensor *s1 = em_tensor_slice(base, 1, 1, INT64_MAX, 2);
        v = s1 ? em_tensor_slice(s1, 2, 0, 2 * C, 2) : NULL;
        em_tensor_release(s1);
      }
      break;
    default: /* dim 1 broadcast */
      base = rand_tensor(dt, EM_DIMS(A, 1, C));
      v = base ? em_tensor_expand(base, EM_DIMS(A, B, C)) : NULL;
  }
  em_tensor_release(base);
  return v;
}

/* ---- references ------------------------------------------------------------------------ */

typedef enum {
  R_SUM,
  R_MEAN,
  R_PROD,
  R_AMAX,
  R_AMIN,
  R_ALL,
  R_ANY,
  R_CNT,
  R_VAR,
  R_STD,
  R_LSE,
  R_NORM
} rop;
static const char *rop_name[] = {"sum", "mean",          "prod", "amax", "amin",      "all",
                                 "any", "count_nonzero", "var",  "std",  "logsumexp", "norm"};

/* Output index (row-major over the kept dims) of input element i. */
static int64_t out_index(const em_tensor *t, const bool *red, int64_t i) {
  int64_t o = 0, mul = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t k = i % t->shape[d];
    i /= t->shape[d];
    if (!red[d]) {
      o += k * mul;
      mul *= t->shape[d];
    }
  }
  return o;
}

static double max_nan(double a, double b) {
  return (isnan(a) || b > a) ? (isnan(a) ? a : b) : (isnan(b) ? b : a);
}
static double min_nan(double a, double b) {
  return (isnan(a) || b < a) ? (isnan(a) ? a : b) : (isnan(b) ? b : a);
}

/* ref[m] = op over the reduced dims of output m; scale[m] = the magnitude
 * an error is measured against. Returns the number of outputs. */
static int64_t ref_reduce(em_tensor *t, const bool *red, rop op, double p, double *ref,
                          double *scale) {
  int64_t M = 1, R = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (red[d])
      R *= t->shape[d];
    else
      M *= t->shape[d];
  }
  double *a = calloc((size_t)(M ? M : 1), sizeof(double));
  double *b = calloc((size_t)(M ? M : 1), sizeof(double));
  for (int64_t m = 0; m < M; m++) {
    switch (op) {
      case R_PROD: a[m] = 1; break;
      case R_AMAX: a[m] = -INFINITY; break;
      case R_AMIN: a[m] = INFINITY; break;
      case R_ALL: a[m] = 1; break;
      case R_LSE: a[m] = -INFINITY; break;
      case R_NORM: a[m] = p == -INFINITY ? INFINITY : 0; break;
      default: a[m] = 0;
    }
    b[m] = 0;
  }
  for (int64_t i = 0; i < t->numel; i++) {
    double x = em_test_get(t, i);
    int64_t m = out_index(t, red, i);
    switch (op) {
      case R_SUM:
      case R_MEAN:
      case R_VAR:
      case R_STD:
        a[m] += x;
        b[m] += fabs(x);
        break;
      case R_PROD: a[m] *= x; break;
      case R_AMAX: a[m] = max_nan(a[m], x); break;
      case R_AMIN: a[m] = min_nan(a[m], x); break;
      case R_ALL: a[m] = a[m] && x != 0; break;
      case R_ANY: a[m] = a[m] || x != 0; break;
      case R_CNT: a[m] += x != 0; break;
      case R_LSE: a[m] = max_nan(a[m], x); break;
      case R_NORM:
        if (p == INFINITY)
          a[m] = max_nan(a[m], fabs(x));
        else if (p == -INFINITY)
          a[m] = min_nan(a[m], fabs(x));
        else if (p == 0)
          a[m] += x != 0;
        else
          a[m] += pow(fabs(x), p);
        break;
    }
  }
  /* second passes */
  if (op == R_VAR || op == R_STD || op == R_LSE) {
    for (int64_t m = 0; m < M; m++) {
      if (op != R_LSE) a[m] /= (double)R; /* mean */
      b[m] = 0;
    }
    for (int64_t i = 0; i < t->numel; i++) {
      double x = em_test_get(t, i);
      int64_t m = out_index(t, red, i);
      if (op == R_LSE) {
        double mx = isinf(a[m]) ? 0 : a[m];
        b[m] += exp(x - mx);
      } else {
        b[m] += (x - a[m]) * (x - a[m]);
      }
    }
  }
  for (int64_t m = 0; m < M; m++) {
    switch (op) {
      case R_SUM:
        ref[m] = a[m];
        scale[m] = b[m];
        break;
      case R_MEAN:
        ref[m] = a[m] / (double)R;
        scale[m] = b[m] / (double)R;
        break;
      case R_PROD:
        ref[m] = a[m];
        scale[m] = fabs(a[m]);
        break;
      case R_VAR:
      case R_STD: {
        double div = (double)R - p;
        if (div < 0) div = 0;
        double v = b[m] / div;
        ref[m] = op == R_VAR ? v : sqrt(v);
        scale[m] = fabs(ref[m]) + (op == R_VAR ? a[m] * a[m] : fabs(a[m]));
        break;
      }
      case R_LSE: {
        double mx = isinf(a[m]) ? 0 : a[m];
        ref[m] = isnan(a[m]) ? NAN : log(b[m]) + mx;
        scale[m] = fabs(ref[m]) + 1;
        break;
      }
      case R_NORM:
        if (R == 0)
          ref[m] = 0;
        else if (p == 2)
          ref[m] = sqrt(a[m]);
        else if (p == 0 || p == 1 || isinf(p))
          ref[m] = a[m];
        else
          ref[m] = pow(a[m], 1 / p);
        scale[m] = fabs(ref[m]);
        break;
      default: ref[m] = a[m]; scale[m] = 0;
    }
  }
  free(a);
  free(b);
  return M;
}

/* Relative tolerance of results computed in dt. */
static double tol_of(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return 2e-6;
    case EM_FLOAT64: return 1e-13;
    case EM_FLOAT16: return 2e-3;
    case EM_BFLOAT16: return 1.6e-2;
    default: return 0;
  }
}

/* |got - ref| <= tol * (scale + |ref|), NaNs and infinities equal. */
static int check_values(em_tensor *r, const double *ref, const double *scale, int64_t n, double tol,
                        const char *what, int line) {
  if (!r) {
    fprintf(stderr, "  line %d: %s: NULL: %s\n", line, what, em_last_error());
    return 0;
  }
  if (r->numel != n) {
    fprintf(stderr, "  line %d: %s: %lld elements, expected %lld\n", line, what,
            (long long)r->numel, (long long)n);
    return 0;
  }
  const em_dtype odt = (em_dtype)r->dtype;
  for (int64_t i = 0; i < n; i++) {
    double g = em_test_get(r, i), e = ref[i];
    if (em_dtype_is_float(odt) && odt != EM_FLOAT64) { /* overflow / underflow as the dtype */
      uint64_t buf = 0;
      em__store_f64(&buf, odt, e);
      e = em__load_f64(&buf, odt);
    }
    if (isnan(e) && isnan(g)) continue;
    if (g == e) continue;
    double s = scale ? scale[i] : 0;
    if (!(fabs(g - e) <= tol * (s + fabs(e)))) {
      fprintf(stderr, "  line %d: %s: element %lld is %.17g, expected %.17g (diff %.3g)\n", line,
              what, (long long)i, g, e, fabs(g - e));
      return 0;
    }
  }
  return 1;
}
#define CHECK_VALUES(r, ref, scale, n, tol, what)                           \
  do {                                                                      \
    if (!check_values((r), (ref), (scale), (n), (tol), (what), __LINE__)) { \
      em_test_failed_now = 1;                                               \
      return;                                                               \
    }                                                                       \
  } while (0)

static int same_shape(const em_tensor *r, int nd, const int64_t *shape) {
  if (!r || r->ndim != nd) return 0;
  for (int i = 0; i < nd; i++)
    if (r->shape[i] != shape[i]) return 0;
  return 1;
}

/* Runs op on t over dims (ndims 0: all) and checks result shape, dtype
 * and values against the reference. Returns 0 (after printing) on a
 * mismatch. */
static int check_reduce(rop op, em_tensor *t, int ndims, const int64_t *dims, bool keepdim,
                        double p, const char *ctx) {
  bool red[EM_MAX_DIMS] = {0};
  if (ndims == 0) {
    for (int d = 0; d < t->ndim; d++) red[d] = true;
  } else {
    for (int i = 0; i < ndims; i++) {
      int64_t d = dims[i] < 0 ? dims[i] + t->ndim : dims[i];
      if (t->ndim == 0) continue;
      red[d] = true;
    }
  }
  em_tensor *r = NULL;
  em_dtype dt = (em_dtype)t->dtype, want = dt;
  bool intlike = !em_dtype_is_float(dt);
  switch (op) {
    case R_SUM:
      r = em_tensor_sum(t, ndims, dims, keepdim, EM_DTYPE_UNDEFINED);
      if (intlike) want = EM_INT64;
      break;
    case R_MEAN: r = em_tensor_mean(t, ndims, dims, keepdim, EM_DTYPE_UNDEFINED); break;
    case R_PROD:
      r = em_tensor_prod(t, ndims, dims, keepdim, EM_DTYPE_UNDEFINED);
      if (intlike) want = EM_INT64;
      break;
    case R_AMAX: r = em_tensor_amax(t, ndims, dims, keepdim); break;
    case R_AMIN: r = em_tensor_amin(t, ndims, dims, keepdim); break;
    case R_ALL:
      r = em_tensor_all(t, ndims, dims, keepdim);
      want = dt == EM_UINT8 ? EM_UINT8 : EM_BOOL;
      break;
    case R_ANY:
      r = em_tensor_any(t, ndims, dims, keepdim);
      want = dt == EM_UINT8 ? EM_UINT8 : EM_BOOL;
      break;
    case R_CNT:
      r = em_tensor_count_nonzero(t, ndims, dims);
      keepdim = false;
      want = EM_INT64;
      break;
    case R_VAR: r = em_tensor_var(t, ndims, dims, p, keepdim); break;
    case R_STD: r = em_tensor_std(t, ndims, dims, p, keepdim); break;
    case R_LSE: r = em_tensor_logsumexp(t, ndims, dims, keepdim); break;
    case R_NORM: r = em_tensor_norm(t, p, ndims, dims, keepdim); break;
  }
  char what[256];
  snprintf(what, sizeof what, "%s %s %s dims(%d)%s keepdim=%d p=%g", rop_name[op],
           em_dtype_name(dt), ctx, ndims, "", keepdim, p);
  if (!r) {
    fprintf(stderr, "  %s: NULL: %s\n", what, em_last_error());
    return 0;
  }
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (!red[d])
      shape[nd++] = t->shape[d];
    else if (keepdim)
      shape[nd++] = 1;
  }
  int ok = 1;
  if (!same_shape(r, nd, shape)) {
    fprintf(stderr, "  %s: wrong result shape %s\n", what, em__tshape(r));
    ok = 0;
  } else if (r->dtype != want) {
    fprintf(stderr, "  %s: dtype %s, expected %s\n", what, em_dtype_name((em_dtype)r->dtype),
            em_dtype_name(want));
    ok = 0;
  } else {
    double *ref = malloc((size_t)(r->numel + 1) * sizeof(double));
    double *scale = malloc((size_t)(r->numel + 1) * sizeof(double));
    ref_reduce(t, red, op, p, ref, scale);
    double tol = tol_of(em_dtype_is_float(dt) ? dt : EM_FLOAT64);
    if (op == R_VAR || op == R_STD || op == R_LSE || op == R_NORM || op == R_MEAN)
      tol = tol > 0 ? tol : 1e-12;
    if (op == R_LSE || (op == R_NORM && p != 0 && p != 1 && p != 2 && !isinf(p)))
      tol *= 4; /* exp / pow in the compute type */
    ok = check_values(r, ref, scale, r->numel, tol, what, __LINE__);
    free(ref);
    free(scale);
  }
  em_tensor_release(r);
  return ok;
}

static const em_dtype all_dtypes[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8,
                                      EM_INT16,   EM_INT32,   EM_INT64,   EM_UINT8,    EM_BOOL};
static const em_dtype float_dtypes[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};

/* Dim sets over a 3-D input (ndims 0 = all). */
static const struct {
  int n;
  int64_t d[3];
} dim_sets[] = {{1, {0}},      {1, {1}},    {1, {2}},    {1, {-1}},      {2, {0, 2}},
                {2, {-3, -1}}, {2, {1, 0}}, {2, {2, 1}}, {3, {2, 0, 1}}, {0, {0}}};
#define NSETS ((int)(sizeof dim_sets / sizeof dim_sets[0]))

/* Every layout x dim set x keepdim of op on dt. */
static int sweep(rop op, em_dtype dt, double p, int64_t A, int64_t B, int64_t C) {
  for (int l = 0; l < L_COUNT; l++) {
    em_tensor *t = make_layout(l, dt, A, B, C);
    if (!t) {
      fprintf(stderr, "  make_layout: %s\n", em_last_error());
      return 0;
    }
    for (int s = 0; s < NSETS; s++)
      for (int k = 0; k < 2; k++)
        if (!check_reduce(op, t, dim_sets[s].n, dim_sets[s].n ? dim_sets[s].d : NULL, k, p,
                          layout_name[l])) {
          fprintf(stderr, "  (dim set %d)\n", s);
          em_tensor_release(t);
          return 0;
        }
    em_tensor_release(t);
  }
  return 1;
}

/* ---- sweeps ------------------------------------------------------------------------------- */

EM_TEST(sum_prod_minmax_logic_every_dtype_layout_and_dim_set) {
  const rop ops[] = {R_SUM, R_PROD, R_AMAX, R_AMIN, R_ALL, R_ANY, R_CNT};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t d = 0; d < sizeof all_dtypes / sizeof all_dtypes[0]; d++)
      ASSERT_TRUE(sweep(ops[o], all_dtypes[d], 0, 3, 4, 5));
}

EM_TEST(float_reductions_every_dtype_layout_and_dim_set) {
  for (size_t d = 0; d < sizeof float_dtypes / sizeof float_dtypes[0]; d++) {
    em_dtype dt = float_dtypes[d];
    ASSERT_TRUE(sweep(R_MEAN, dt, 0, 3, 4, 5));
    ASSERT_TRUE(sweep(R_VAR, dt, 1, 3, 4, 5));
    ASSERT_TRUE(sweep(R_VAR, dt, 0, 3, 4, 5));
    ASSERT_TRUE(sweep(R_STD, dt, 1, 3, 4, 5));
    ASSERT_TRUE(sweep(R_LSE, dt, 0, 3, 4, 5));
    const double ps[] = {1, 2, INFINITY, -INFINITY, 0, 3, 0.5};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
      ASSERT_TRUE(sweep(R_NORM, dt, ps[i], 3, 4, 5));
  }
}

/* Shapes that take the split-row, column, run and copy paths. */
EM_TEST(large_shapes_take_every_path) {
  const struct {
    int64_t A, B, C;
    int n;
    int64_t d[2];
    bool big;
  } cases[] = {
      {1, 2, 70000, 1, {2}, true},    /* rows split into pieces across threads */
      {1, 1, 70000, 0, {0}, true},    /* one long row */
      {1, 70000, 2, 1, {1}, true},    /* tiny kept column: copied then rows */
      {2000, 2, 40, 2, {0, 2}, true}, /* pieces spanning runs of 40 */
      {1, 300, 70, 1, {1}, false},    /* columns: dim 0 of [N, C] */
      {5, 40, 33, 1, {1}, false},     /* columns with outer kept dims */
      {6, 5, 40, 2, {0, 1}, false},   /* columns over two reduced dims */
      {4, 30, 50, 2, {0, 2}, false},  /* runs of 50 over an outer reduced dim */
      {30, 4, 3, 2, {0, 2}, false},   /* runs of 3: copied */
  };
  const rop small_ops[] = {R_SUM, R_MEAN, R_PROD, R_AMAX, R_AMIN, R_ALL,
                           R_ANY, R_CNT,  R_VAR,  R_LSE,  R_NORM};
  const rop big_ops[] = {R_SUM, R_AMAX, R_VAR, R_LSE};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const rop *ops = cases[c].big ? big_ops : small_ops;
    size_t nops =
        cases[c].big ? sizeof big_ops / sizeof big_ops[0] : sizeof small_ops / sizeof small_ops[0];
    for (size_t o = 0; o < nops; o++) {
      em_dtype dts[] = {EM_FLOAT32, EM_INT32};
      for (int k = 0; k < 2; k++) {
        if (dts[k] == EM_INT32 && (ops[o] == R_MEAN || ops[o] == R_VAR || ops[o] == R_LSE ||
                                   ops[o] == R_NORM || ops[o] == R_PROD))
          continue; /* (integer products of hundreds of values wrap) */
        for (int l = 0; l < (cases[c].big ? 1 : L_COUNT); l++) {
          em_tensor *t = make_layout(l, dts[k], cases[c].A, cases[c].B, cases[c].C);
          ASSERT_NOTNULL(t);
          int ok = check_reduce(ops[o], t, cases[c].n, cases[c].n ? cases[c].d : NULL, false,
                                ops[o] == R_NORM ? 2 : 1, layout_name[l]);
          em_tensor_release(t);
          if (!ok) {
            fprintf(stderr, "  case %zu\n", c);
            ASSERT_TRUE(ok);
          }
        }
      }
    }
  }
}

/* Long rows and tall columns are cut into pieces combined afterwards:
 * every combine rule against the reference. */
EM_TEST(split_reductions_combine_pieces) {
  const int64_t n = 70000;
  em_tensor *t = em_tensor_empty(EM_DIMS(n), EM_FLOAT32);
  ASSERT_NOTNULL(t);
  float *p = em_tensor_data(t);
  for (int64_t i = 0; i < n; i++) p[i] = (float)(0.9999 + 0.0002 * rng_unit()); /* prod ~ 1 */
  p[n - 3] = 7; /* extremes late in the row */
  p[n - 2] = 0.25f;
  const rop ops[] = {R_PROD, R_ALL, R_ANY, R_NORM, R_AMIN};
  const double ps[] = {INFINITY, -INFINITY, 3, 0};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    if (ops[o] == R_NORM) {
      for (int k = 0; k < 4; k++)
        ASSERT_TRUE(check_reduce(R_NORM, t, 0, NULL, false, ps[k], "long"));
    } else {
      ASSERT_TRUE(check_reduce(ops[o], t, 0, NULL, false, 0, "long"));
    }
  }
  p[n - 1] = 0; /* all() false only at the very end */
  ASSERT_TRUE(check_reduce(R_ALL, t, 0, NULL, false, 0, "long"));
  ASSERT_TRUE(check_reduce(R_NORM, t, 0, NULL, false, -INFINITY, "long"));
  /* a +inf in one piece, finite values in the others */
  p[40000] = INFINITY;
  ASSERT_TRUE(check_reduce(R_LSE, t, 0, NULL, false, 0, "long"));
  em_tensor_release(t);

  /* tall columns: [4000, 40] over dim 0 (rows in pieces) */
  t = make_layout(L_CONTIG, EM_FLOAT32, 1, 4000, 40);
  p = em_tensor_data(t);
  for (int64_t i = 0; i < 4000 * 40; i++) p[i] = (float)(0.9999 + 0.0002 * rng_unit());
  p[3999 * 40 + 5] = 9;
  p[3998 * 40 + 6] = 0;
  const int64_t d1[] = {1};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    if (ops[o] == R_NORM) {
      for (int k = 0; k < 4; k++) ASSERT_TRUE(check_reduce(R_NORM, t, 1, d1, false, ps[k], "tall"));
    } else {
      ASSERT_TRUE(check_reduce(ops[o], t, 1, d1, false, 0, "tall"));
    }
  }
  em_tensor_release(t);
  t = make_layout(L_CONTIG, EM_INT64, 1, 4000, 40);
  ASSERT_TRUE(check_reduce(R_PROD, t, 1, d1, false, 0, "tall")); /* values 0 and +-1..3 */
  em_tensor_release(t);
}

/* ---- dtypes and arguments ------------------------------------------------------------------- */

EM_TEST(result_dtypes_and_dtype_argument) {
  em_tensor *i8 = from_doubles(EM_INT8, EM_DIMS(3), (double[]){100, 100, 100});
  em_tensor *r = em_tensor_sum(i8, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){300}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_sum(i8, 0, NULL, false, EM_INT8); /* wraps like PyTorch */
  ASSERT_EQ(r->dtype, EM_INT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){44}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_prod(i8, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1e6}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_mean(i8, 0, NULL, false, EM_FLOAT32);
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){100}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(i8);

  em_tensor *f = from_doubles(EM_FLOAT32, EM_DIMS(2), (double[]){1.5, 2.5});
  r = em_tensor_sum(f, 0, NULL, false, EM_INT32); /* converted first: 1 + 2 */
  ASSERT_EQ(r->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_prod(f, 0, NULL, false, EM_INT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){2}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_sum(f, 0, NULL, false, EM_FLOAT64);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){4}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_sum(f, 0, NULL, false, EM_BOOL);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_all(f, 0, NULL, false);
  ASSERT_EQ(r->dtype, EM_BOOL);
  em_tensor_release(r);
  em_tensor_release(f);

  em_tensor *b = from_doubles(EM_BOOL, EM_DIMS(4), (double[]){1, 0, 1, 1});
  r = em_tensor_sum(b, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_prod(b, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_amax(b, 0, NULL, false);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(b);

  /* uint8 all/any stay uint8 in PyTorch 1.13 */
  em_tensor *u8 = from_doubles(EM_UINT8, EM_DIMS(2, 3), (double[]){0, 2, 3, 1, 1, 0});
  r = em_tensor_all(u8, EM_DIMS(0), true);
  ASSERT_EQ(r->dtype, EM_UINT8);
  ASSERT_SHAPE(r, 1, 3);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_any(u8, 0, NULL, false);
  ASSERT_EQ(r->dtype, EM_UINT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(u8);

  em_tensor *h = from_doubles(EM_FLOAT16, EM_DIMS(3), (double[]){1, 2, 3});
  r = em_tensor_mean(h, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){2}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_var(h, 0, NULL, 1, false);
  ASSERT_EQ(r->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(h);

  /* logsumexp of integers: default float dtype */
  em_tensor *li = from_doubles(EM_INT32, EM_DIMS(3), (double[]){1, 2, 3});
  r = em_tensor_logsumexp(li, EM_DIMS(0), false);
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3.40760596444438}), 1e-6, 0);
  em_tensor_release(r);
  em_tensor_release(li);
}

EM_TEST(integer_reductions_wrap) {
  em_tensor *t = from_doubles(EM_INT64, EM_DIMS(2), (double[]){0, 0});
  int64_t *p = em_tensor_data(t);
  p[0] = INT64_MAX;
  p[1] = 2;
  em_tensor *r = em_tensor_sum(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(*(int64_t *)em_tensor_data(r), INT64_MIN + 1);
  em_tensor_release(r);
  r = em_tensor_prod(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(*(int64_t *)em_tensor_data(r), -2);
  em_tensor_release(r);
  r = em_tensor_amax(t, 0, NULL, false); /* exact, not through double */
  ASSERT_EQ(*(int64_t *)em_tensor_data(r), INT64_MAX);
  em_tensor_release(r);
  p[0] = INT64_MAX - 1;
  p[1] = INT64_MAX;
  em_tensor *v, *ix;
  ASSERT_OK(em_tensor_max_dim(t, 0, false, &v, &ix));
  ASSERT_EQ(*(int64_t *)em_tensor_data(ix), 1);
  em_tensor_release(v);
  em_tensor_release(ix);
  em_tensor_release(t);
}

/* ---- max / min with indices, argmax / argmin ------------------------------------------------ */

/* Reference along dim d (d < 0: flattened) with first-occurrence ties and
 * the first NaN winning. */
static int check_arg(em_tensor *t, int dim, bool keepdim, bool is_max, bool via_dim,
                     const char *ctx) {
  int d = dim < 0 ? -1 : dim;
  int64_t D = d < 0 ? t->numel : (t->ndim ? t->shape[d] : 1);
  int64_t outer = 1, inner = 1;
  if (d >= 0)
    for (int i = 0; i < t->ndim; i++) {
      if (i < d)
        outer *= t->shape[i];
      else if (i > d)
        inner *= t->shape[i];
    }
  int64_t M = outer * inner;
  double *rv = malloc((size_t)(M + 1) * sizeof(double)),
         *ri = malloc((size_t)(M + 1) * sizeof(double));
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      double best = 0;
      int64_t bi = -1;
      for (int64_t k = 0; k < D; k++) {
        double x = em_test_get(t, (o * D + k) * inner + j);
        if (bi >= 0 && isnan(best)) break;
        if (bi < 0 || isnan(x) || (is_max ? x > best : x < best)) best = x, bi = k;
      }
      rv[o * inner + j] = best;
      ri[o * inner + j] = (double)bi;
    }
  int ok = 1;
  char what[160];
  snprintf(what, sizeof what, "%s%s %s dim %d keepdim %d %s", via_dim ? "" : "arg",
           is_max ? "max" : "min", em_dtype_name((em_dtype)t->dtype), dim, keepdim, ctx);
  em_tensor *v = NULL, *ix = NULL;
  if (via_dim) {
    em_status st = is_max ? em_tensor_max_dim(t, dim, keepdim, &v, &ix)
                          : em_tensor_min_dim(t, dim, keepdim, &v, &ix);
    if (st) {
      fprintf(stderr, "  %s: %s\n", what, em_last_error());
      ok = 0;
    }
  } else {
    ix = is_max ? em_tensor_argmax(t, d >= 0, dim, keepdim)
                : em_tensor_argmin(t, d >= 0, dim, keepdim);
  }
  if (ok && ix && ix->dtype != EM_INT64) ok = 0;
  if (ok && v && v->dtype != t->dtype) ok = 0;
  if (ok && keepdim && ix && ix->ndim != t->ndim) ok = 0;
  if (ok && !keepdim && ix && ix->ndim != (d < 0 ? 0 : (t->ndim ? t->ndim - 1 : 0))) ok = 0;
  if (!ok && ix) fprintf(stderr, "  %s: wrong result dtype or shape %s\n", what, em__tshape(ix));
  if (ok) ok = check_values(ix, ri, NULL, M, 0, what, __LINE__);
  if (ok && via_dim) ok = check_values(v, rv, NULL, M, 0, what, __LINE__);
  em_tensor_release(v);
  em_tensor_release(ix);
  free(rv);
  free(ri);
  return ok;
}

EM_TEST(max_min_dim_and_argmax_every_dtype_and_layout) {
  for (size_t k = 0; k < sizeof all_dtypes / sizeof all_dtypes[0]; k++) {
    em_dtype dt = all_dtypes[k];
    for (int l = 0; l < L_COUNT; l++) {
      em_tensor *t = make_layout(l, dt, 3, 4, 5);
      ASSERT_NOTNULL(t);
      for (int dim = 0; dim < 3; dim++)
        for (int kd = 0; kd < 2; kd++)
          for (int mx = 0; mx < 2; mx++) {
            ASSERT_TRUE(check_arg(t, dim, kd, mx, true, layout_name[l]));
            if (dt != EM_BOOL) ASSERT_TRUE(check_arg(t, dim, kd, mx, false, layout_name[l]));
          }
      if (dt != EM_BOOL)
        for (int mx = 0; mx < 2; mx++)
          ASSERT_TRUE(check_arg(t, -1, false, mx, false, layout_name[l]));
      em_tensor_release(t);
    }
  }
  /* negative dim, flattened keepdim, a long row split across threads */
  em_tensor *t = make_layout(L_CONTIG, EM_FLOAT32, 2, 3, 4);
  em_tensor *v, *ix;
  ASSERT_OK(em_tensor_max_dim(t, -1, true, &v, &ix));
  ASSERT_SHAPE(v, 2, 3, 1);
  em_tensor_release(v);
  em_tensor_release(ix);
  ix = em_tensor_argmax(t, false, 0, true);
  ASSERT_SHAPE(ix, 1, 1, 1);
  em_tensor_release(ix);
  em_tensor_release(t);
  t = make_layout(L_CONTIG, EM_FLOAT32, 1, 1, 300001);
  ASSERT_TRUE(check_arg(t, -1, false, true, false, "long"));
  ASSERT_TRUE(check_arg(t, 2, false, false, true, "long"));
  em_tensor_release(t);
  t = make_layout(L_CONTIG, EM_INT16, 1, 1, 300001); /* many ties */
  ASSERT_TRUE(check_arg(t, -1, false, true, false, "long ties"));
  ASSERT_TRUE(check_arg(t, 2, false, false, true, "long ties"));
  em_tensor_release(t);
}

/* ---- NaN and infinities ------------------------------------------------------------------- */

EM_TEST(nan_propagates) {
  em_tensor *t = from_doubles(EM_FLOAT32, EM_DIMS(4), (double[]){1, NAN, 3, NAN});
  em_tensor *r;
#define NANCHECK(expr)                   \
  r = (expr);                            \
  ASSERT_NOTNULL(r);                     \
  ASSERT_TRUE(isnan(em_test_get(r, 0))); \
  em_tensor_release(r);
  NANCHECK(em_tensor_sum(t, 0, NULL, false, EM_DTYPE_UNDEFINED));
  NANCHECK(em_tensor_mean(t, 0, NULL, false, EM_DTYPE_UNDEFINED));
  NANCHECK(em_tensor_prod(t, 0, NULL, false, EM_DTYPE_UNDEFINED));
  NANCHECK(em_tensor_amax(t, 0, NULL, false));
  NANCHECK(em_tensor_amin(t, 0, NULL, false));
  NANCHECK(em_tensor_max_all(t));
  NANCHECK(em_tensor_min_all(t));
  NANCHECK(em_tensor_var(t, 0, NULL, 1, false));
  NANCHECK(em_tensor_logsumexp(t, 0, NULL, false));
  NANCHECK(em_tensor_norm(t, 2, 0, NULL, false));
  NANCHECK(em_tensor_norm(t, INFINITY, 0, NULL, false));
  NANCHECK(em_tensor_norm(t, -INFINITY, 0, NULL, false));
  NANCHECK(em_tensor_softmax(t, 0, EM_DTYPE_UNDEFINED));
#undef NANCHECK
  em_tensor *v, *ix;
  ASSERT_OK(em_tensor_max_dim(t, 0, false, &v, &ix));
  ASSERT_TRUE(isnan(em_test_get(v, 0)));
  ASSERT_EQ(em_test_get(ix, 0), 1);
  em_tensor_release(v);
  em_tensor_release(ix);
  ASSERT_OK(em_tensor_min_dim(t, 0, false, &v, &ix));
  ASSERT_EQ(em_test_get(ix, 0), 1);
  em_tensor_release(v);
  em_tensor_release(ix);
  r = em_tensor_argmin(t, false, 0, false);
  ASSERT_EQ(em_test_get(r, 0), 1);
  em_tensor_release(r);
  /* NaN counts as non-zero */
  r = em_tensor_count_nonzero(t, 0, NULL);
  ASSERT_EQ(em_test_get(r, 0), 4);
  em_tensor_release(r);
  r = em_tensor_all(t, 0, NULL, false);
  ASSERT_EQ(em_test_get(r, 0), 1);
  em_tensor_release(r);
  em_tensor_release(t);

  /* a NaN far into a long row, in a column, and in the split path */
  t = make_layout(L_CONTIG, EM_FLOAT32, 1, 40, 5000);
  ((float *)em_tensor_data(t))[123457] = NAN;
  r = em_tensor_amax(t, 0, NULL, false);
  ASSERT_TRUE(isnan(em_test_get(r, 0)));
  em_tensor_release(r);
  r = em_tensor_amin(t, EM_DIMS(1), false);
  ASSERT_TRUE(isnan(em_test_get(r, 123457 % 5000)));
  ASSERT_TRUE(!isnan(em_test_get(r, 0)));
  em_tensor_release(r);
  r = em_tensor_argmax(t, false, 0, false);
  ASSERT_EQ(em_test_get(r, 0), 123457);
  em_tensor_release(r);
  em_tensor_release(t);
}

EM_TEST(logsumexp_and_softmax_with_infinities) {
  em_tensor *t =
      from_doubles(EM_FLOAT32, EM_DIMS(4, 2),
                   (double[]){-INFINITY, -INFINITY, INFINITY, 1, INFINITY, -INFINITY, 1000, 1000});
  em_tensor *r = em_tensor_logsumexp(t, EM_DIMS(1), false);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-INFINITY, INFINITY, INFINITY, 1000 + log(2.0)}), 1e-6, 0);
  em_tensor_release(r);
  r = em_tensor_softmax(t, 1, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, NAN, NAN, NAN, NAN, 0.5, 0.5}), 1e-6, 0);
  em_tensor_release(r);
  r = em_tensor_log_softmax(t, 1, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, NAN, NAN, NAN, NAN, -log(2.0), -log(2.0)}), 1e-6, 0);
  em_tensor_release(r);
  em_tensor_release(t);
  /* masked entries give exactly 0 */
  t = from_doubles(EM_FLOAT32, EM_DIMS(3), (double[]){-INFINITY, 0, 0});
  r = em_tensor_softmax(t, 0, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0.5, 0.5}), 1e-7, 0);
  em_tensor_release(r);
  r = em_tensor_log_softmax(t, 0, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-INFINITY, -log(2.0), -log(2.0)}), 1e-7, 0);
  em_tensor_release(r);
  em_tensor_release(t);
}

/* ---- var / std corrections, norm special cases ------------------------------------------- */

EM_TEST(var_corrections) {
  em_tensor *t = from_doubles(EM_FLOAT32, EM_DIMS(2), (double[]){1, 2});
  em_tensor *r = em_tensor_var(t, 0, NULL, 0, false);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0.25}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_var(t, 0, NULL, 2, false); /* N - correction = 0 */
  ASSERT_TENSOR_CLOSE(r, ((double[]){INFINITY}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_std(t, 0, NULL, 3, false);
  ASSERT_TENSOR_CLOSE(r, ((double[]){INFINITY}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(t);
  t = from_doubles(EM_FLOAT32, EM_DIMS(2), (double[]){1, 1});
  r = em_tensor_var(t, 0, NULL, 2, false); /* 0 / 0 */
  ASSERT_TRUE(isnan(em_test_get(r, 0)));
  em_tensor_release(r);
  em_tensor_release(t);
  t = from_doubles(EM_FLOAT32, EM_DIMS(3), (double[]){1, 2, 3});
  r = em_tensor_var(t, 0, NULL, -1, false);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0.5}), 1e-7, 0);
  em_tensor_release(r);
  em_tensor_release(t);
  t = from_doubles(EM_FLOAT64, EM_DIMS(1), (double[]){5});
  r = em_tensor_var(t, EM_DIMS(0), 1, false);
  ASSERT_TRUE(isnan(em_test_get(r, 0)));
  em_tensor_release(r);
  r = em_tensor_var(t, EM_DIMS(0), 0, false);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(t);
}

EM_TEST(norm_values) {
  em_tensor *t = from_doubles(EM_FLOAT32, EM_DIMS(3), (double[]){0, 3, -4});
  const double ps[] = {0, 1, 2, 3, INFINITY, -INFINITY, -1, 0.5};
  const double want[] = {2, 7, 5, 4.497941445275415, 4, 0, 0, 13.928203230275509};
  for (int i = 0; i < 8; i++) {
    em_tensor *r = em_tensor_norm(t, ps[i], 0, NULL, false);
    ASSERT_NOTNULL(r);
    ASSERT_CLOSE(em_test_get(r, 0), want[i], 1e-6, 0);
    em_tensor_release(r);
  }
  em_tensor_release(t);
  t = from_doubles(EM_FLOAT16, EM_DIMS(2), (double[]){1, 2});
  em_tensor *r = em_tensor_norm(t, 2, 0, NULL, false);
  ASSERT_EQ(r->dtype, EM_FLOAT16);
  ASSERT_CLOSE(em_test_get(r, 0), 2.236328125, 0, 0);
  em_tensor_release(r);
  em_tensor_release(t);
}

/* ---- zero-size and 0-dim ----------------------------------------------------------------- */

EM_TEST(zero_size_inputs) {
  em_tensor *e = em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *r;
#define ZCHECK(expr, n, ...)                                    \
  r = (expr);                                                   \
  ASSERT_NOTNULL(r);                                            \
  ASSERT_TENSOR_CLOSE_N(r, ((double[]){__VA_ARGS__}), n, 0, 0); \
  em_tensor_release(r);
  ZCHECK(em_tensor_sum(e, EM_DIMS(0), false, EM_DTYPE_UNDEFINED), 3, 0, 0, 0);
  ZCHECK(em_tensor_sum(e, 0, NULL, false, EM_DTYPE_UNDEFINED), 1, 0);
  ZCHECK(em_tensor_prod(e, EM_DIMS(0), false, EM_DTYPE_UNDEFINED), 3, 1, 1, 1);
  ZCHECK(em_tensor_mean(e, EM_DIMS(0), false, EM_DTYPE_UNDEFINED), 3, NAN, NAN, NAN);
  ZCHECK(em_tensor_mean(e, 0, NULL, false, EM_DTYPE_UNDEFINED), 1, NAN);
  ZCHECK(em_tensor_var(e, EM_DIMS(0), 1, false), 3, NAN, NAN, NAN);
  ZCHECK(em_tensor_std(e, EM_DIMS(0), 0, false), 3, NAN, NAN, NAN);
  ZCHECK(em_tensor_logsumexp(e, EM_DIMS(0), false), 3, -INFINITY, -INFINITY, -INFINITY);
  ZCHECK(em_tensor_norm(e, 2, EM_DIMS(0), false), 3, 0, 0, 0);
  ZCHECK(em_tensor_norm(e, INFINITY, EM_DIMS(0), false), 3, 0, 0, 0);
  ZCHECK(em_tensor_norm(e, -INFINITY, 0, NULL, false), 1, 0);
  ZCHECK(em_tensor_norm(e, -1, 0, NULL, false), 1, 0);
  ZCHECK(em_tensor_all(e, EM_DIMS(0), false), 3, 1, 1, 1);
  ZCHECK(em_tensor_any(e, EM_DIMS(0), false), 3, 0, 0, 0);
  ZCHECK(em_tensor_count_nonzero(e, EM_DIMS(0)), 3, 0, 0, 0);
#undef ZCHECK
  r = em_tensor_amax(e, EM_DIMS(1), false); /* the zero dim is kept */
  ASSERT_SHAPE(r, 0);
  em_tensor_release(r);
  r = em_tensor_sum(e, EM_DIMS(1), true, EM_DTYPE_UNDEFINED);
  ASSERT_SHAPE(r, 0, 1);
  em_tensor_release(r);
  em_tensor *v, *ix;
  ASSERT_OK(em_tensor_max_dim(e, 1, false, &v, &ix));
  ASSERT_SHAPE(v, 0);
  ASSERT_SHAPE(ix, 0);
  em_tensor_release(v);
  em_tensor_release(ix);
  r = em_tensor_argmax(e, true, 1, false);
  ASSERT_SHAPE(r, 0);
  em_tensor_release(r);
  r = em_tensor_softmax(e, 1, EM_DTYPE_UNDEFINED);
  ASSERT_SHAPE(r, 0, 3);
  em_tensor_release(r);
  r = em_tensor_cumsum(e, 0, EM_DTYPE_UNDEFINED);
  ASSERT_SHAPE(r, 0, 3);
  em_tensor_release(r);
  em_tensor *ei = em_tensor_zeros(EM_DIMS(0), EM_INT32);
  r = em_tensor_sum(ei, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_prod(ei, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(ei);

  /* errors: nothing to take the max of */
  ASSERT_NULL_ERR(em_tensor_amax(e, 0, NULL, false), EM_ERR_SHAPE,
                  "amax(): Expected reduction dim to be specified for input.numel() == 0. "
                  "Specify the reduction dim with the 'dim' argument.");
  ASSERT_NULL_ERR(em_tensor_amax(e, EM_DIMS(0), false), EM_ERR_INDEX,
                  "amax(): Expected reduction dim 0 to have non-zero size.");
  ASSERT_NULL_ERR(em_tensor_amin(e, EM_DIMS(1, -2), false), EM_ERR_INDEX,
                  "amin(): Expected reduction dim -2 to have non-zero size.");
  ASSERT_NULL_ERR(em_tensor_max_all(e), EM_ERR_SHAPE,
                  "max(): Expected reduction dim to be specified for input.numel() == 0.");
  ASSERT_NULL_ERR(em_tensor_min_all(e), EM_ERR_SHAPE, "min(): Expected reduction dim");
  ASSERT_ERR(em_tensor_max_dim(e, -2, false, &v, &ix), EM_ERR_INDEX,
             "max(): Expected reduction dim 0 to have non-zero size.");
  ASSERT_TRUE(v == NULL && ix == NULL);
  ASSERT_ERR(em_tensor_min_dim(e, 0, false, &v, &ix), EM_ERR_INDEX,
             "min(): Expected reduction dim 0 to have non-zero size.");
  ASSERT_NULL_ERR(em_tensor_argmax(e, false, 0, false), EM_ERR_INDEX,
                  "argmax(): Expected reduction dim to be specified for input.numel() == 0.");
  ASSERT_NULL_ERR(em_tensor_argmin(e, true, 0, false), EM_ERR_INDEX,
                  "argmin(): Expected reduction dim 0 to have non-zero size.");
  em_tensor_release(e);
}

EM_TEST(zero_dim_inputs) {
  em_tensor *s = em_tensor_scalar(em_scalar_float(3), EM_FLOAT32);
  em_tensor *r;
#define SCHECK(expr, val)                          \
  r = (expr);                                      \
  ASSERT_NOTNULL(r);                               \
  ASSERT_EQ(r->ndim, 0);                           \
  ASSERT_CLOSE(em_test_get(r, 0), (val), 1e-7, 0); \
  em_tensor_release(r);
  SCHECK(em_tensor_sum(s, 0, NULL, false, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_sum(s, EM_DIMS(0), false, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_sum(s, EM_DIMS(-1), true, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_mean(s, EM_DIMS(0), false, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_prod(s, 0, NULL, true, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_amax(s, EM_DIMS(0), false), 3);
  SCHECK(em_tensor_max_all(s), 3);
  SCHECK(em_tensor_min_all(s), 3);
  SCHECK(em_tensor_var(s, 0, NULL, 1, false), NAN);
  SCHECK(em_tensor_var(s, EM_DIMS(0), 0, false), 0);
  SCHECK(em_tensor_logsumexp(s, EM_DIMS(0), false), 3);
  SCHECK(em_tensor_norm(s, 2, 0, NULL, false), 3);
  SCHECK(em_tensor_count_nonzero(s, EM_DIMS(0)), 1);
  SCHECK(em_tensor_softmax(s, 0, EM_DTYPE_UNDEFINED), 1);
  SCHECK(em_tensor_log_softmax(s, -1, EM_DTYPE_UNDEFINED), 0);
  SCHECK(em_tensor_cumsum(s, 0, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_cumprod(s, -1, EM_DTYPE_UNDEFINED), 3);
  SCHECK(em_tensor_argmax(s, true, 0, true), 0);
  SCHECK(em_tensor_argmin(s, false, 0, false), 0);
#undef SCHECK
  em_tensor *v, *ix;
  ASSERT_OK(em_tensor_max_dim(s, 0, true, &v, &ix));
  ASSERT_EQ(v->ndim, 0);
  ASSERT_EQ(ix->ndim, 0);
  ASSERT_CLOSE(em_test_get(v, 0), 3, 0, 0);
  ASSERT_EQ(em_test_get(ix, 0), 0);
  em_tensor_release(v);
  em_tensor_release(ix);
  ASSERT_NULL_ERR(em_tensor_sum(s, EM_DIMS(1), false, EM_DTYPE_UNDEFINED), EM_ERR_INDEX,
                  "sum: dimension out of range (expected to be in range of [-1, 0], but got 1)");
  ASSERT_NULL_ERR(em_tensor_softmax(s, 1, EM_DTYPE_UNDEFINED), EM_ERR_INDEX,
                  "softmax: dimension out of range");
  em_tensor_release(s);
}

/* ---- accuracy, threads -------------------------------------------------------------------- */

EM_TEST(long_float32_sum_is_accurate) {
  const int64_t n = 10000000;
  em_tensor *t = em_tensor_empty(EM_DIMS(n), EM_FLOAT32);
  ASSERT_NOTNULL(t);
  float *p = em_tensor_data(t);
  double ref = 0, ref2 = 0;
  for (int64_t i = 0; i < n; i++) {
    p[i] = (float)rng_unit() + 1000.0f;
    ref += p[i];
  }
  em_tensor *r = em_tensor_sum(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_NOTNULL(r);
  double got = em_test_get(r, 0);
  ASSERT_TRUE(fabs(got - ref) / ref < 1e-6);
  em_tensor_release(r);
  r = em_tensor_mean(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_CLOSE(em_test_get(r, 0), ref / (double)n, 1e-6, 0);
  em_tensor_release(r);

  /* var of the first 1M: catastrophic in a naive float single pass */
  const int64_t m = 1000000;
  double mean = 0;
  for (int64_t i = 0; i < m; i++) mean += p[i];
  mean /= (double)m;
  for (int64_t i = 0; i < m; i++) ref2 += (p[i] - mean) * (p[i] - mean);
  em_tensor *head = em_tensor_narrow(t, 0, 0, m);
  r = em_tensor_var(head, 0, NULL, 0, false);
  ASSERT_CLOSE(em_test_get(r, 0), ref2 / (double)m, 1e-5, 0);
  em_tensor_release(r);

  /* the same bits with 1 and 2 threads */
  int nt = em_get_num_threads();
  em_set_num_threads(1);
  em_tensor *r1 = em_tensor_sum(head, 0, NULL, false, EM_DTYPE_UNDEFINED);
  em_set_num_threads(2);
  em_tensor *r2 = em_tensor_sum(head, 0, NULL, false, EM_DTYPE_UNDEFINED);
  em_set_num_threads(nt);
  em_tensor_release(head);
  ASSERT_TRUE(r1 && r2);
  ASSERT_TRUE(em_test_get(r1, 0) == em_test_get(r2, 0));
  em_tensor_release(r1);
  em_tensor_release(r2);
  em_tensor_release(t);
}

EM_TEST(half_sums_accumulate_in_float) {
  /* 4096 x 1.0 + 0.5s: a half accumulator would stall at 2048 */
  const int64_t n = 4096;
  em_tensor *t = em_tensor_ones(EM_DIMS(n), EM_FLOAT16);
  em_tensor *r = em_tensor_sum(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_CLOSE(em_test_get(r, 0), 4096, 0, 0);
  em_tensor_release(r);
  em_tensor_release(t);
  t = em_tensor_ones(EM_DIMS(n), EM_BFLOAT16);
  r = em_tensor_mean(t, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_CLOSE(em_test_get(r, 0), 1, 0, 0);
  em_tensor_release(r);
  r = em_tensor_cumsum(t, 0, EM_DTYPE_UNDEFINED);
  ASSERT_CLOSE(em_test_get(r, 1000), 1000, 0, 0); /* 1000 is a bfloat16 value; float acc */
  em_tensor_release(r);
  em_tensor_release(t);
}

/* ---- softmax / log_softmax ----------------------------------------------------------------- */

static int check_softmax(em_tensor *t, int dim, bool log_, em_dtype dt, const char *ctx) {
  em_tensor *r = log_ ? em_tensor_log_softmax(t, dim, dt) : em_tensor_softmax(t, dim, dt);
  em_dtype odt = dt == EM_DTYPE_UNDEFINED ? (em_dtype)t->dtype : dt;
  char what[128];
  snprintf(what, sizeof what, "%s %s dim %d %s", log_ ? "log_softmax" : "softmax",
           em_dtype_name(odt), dim, ctx);
  if (!r || r->dtype != odt || !same_shape(r, t->ndim, t->shape)) {
    fprintf(stderr, "  %s: bad result %s\n", what, r ? em__tshape(r) : em_last_error());
    em_tensor_release(r);
    return 0;
  }
  int d = dim < 0 ? dim + t->ndim : dim;
  int64_t D = t->ndim ? t->shape[d] : 1, outer = 1, inner = 1;
  for (int i = 0; i < t->ndim; i++) {
    if (i < d)
      outer *= t->shape[i];
    else if (i > d)
      inner *= t->shape[i];
  }
  double *ref = malloc((size_t)(t->numel + 1) * sizeof(double));
  /* values as converted to odt: round-trip through the output dtype */
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      double mx = -INFINITY, s = 0;
      for (int64_t k = 0; k < D; k++) {
        double x = em_test_get(t, (o * D + k) * inner + j);
        if (x > mx) mx = x;
      }
      for (int64_t k = 0; k < D; k++) s += exp(em_test_get(t, (o * D + k) * inner + j) - mx);
      for (int64_t k = 0; k < D; k++) {
        int64_t i = (o * D + k) * inner + j;
        double x = em_test_get(t, i);
        ref[i] = log_ ? x - mx - log(s) : exp(x - mx) / s;
      }
    }
  double *scale = malloc((size_t)(t->numel + 1) * sizeof(double));
  for (int64_t i = 0; i < t->numel; i++) scale[i] = log_ ? 1 : 0;
  double tol = tol_of(odt) * 4;
  if (!em_dtype_is_float((em_dtype)t->dtype) || (odt == EM_FLOAT64 && t->dtype != EM_FLOAT64))
    tol = tol_of(EM_FLOAT32) * 4; /* input values may have been rounded on conversion */
  int ok = check_values(r, ref, scale, t->numel, tol, what, __LINE__);
  free(ref);
  free(scale);
  em_tensor_release(r);
  return ok;
}

EM_TEST(softmax_every_dim_layout_and_dtype) {
  for (size_t k = 0; k < sizeof float_dtypes / sizeof float_dtypes[0]; k++)
    for (int l = 0; l < L_COUNT; l++) {
      em_tensor *t = make_layout(l, float_dtypes[k], 3, 4, 5);
      ASSERT_NOTNULL(t);
      for (int dim = -3; dim < 3; dim++)
        for (int lg = 0; lg < 2; lg++)
          ASSERT_TRUE(check_softmax(t, dim, lg, EM_DTYPE_UNDEFINED, layout_name[l]));
      em_tensor_release(t);
    }
  /* dtype argument: input converted first (int input allowed then) */
  em_tensor *t = make_layout(L_CONTIG, EM_FLOAT32, 2, 3, 4);
  ASSERT_TRUE(check_softmax(t, 2, false, EM_FLOAT64, "dtype"));
  ASSERT_TRUE(check_softmax(t, 1, true, EM_BFLOAT16, "dtype"));
  em_tensor_release(t);
  t = make_layout(L_CONTIG, EM_INT32, 2, 3, 4);
  ASSERT_TRUE(check_softmax(t, -1, false, EM_FLOAT64, "int input"));
  em_tensor_release(t);
  /* training-step shapes and a wide inner block */
  const int64_t shapes[][3] = {{1, 64, 10}, {1, 64, 1000}, {2, 700, 3}, {3, 5, 1100}};
  for (int i = 0; i < 4; i++) {
    t = make_layout(L_CONTIG, EM_FLOAT32, shapes[i][0], shapes[i][1], shapes[i][2]);
    ASSERT_TRUE(check_softmax(t, 2, false, EM_DTYPE_UNDEFINED, "big"));
    ASSERT_TRUE(check_softmax(t, 1, true, EM_DTYPE_UNDEFINED, "big"));
    em_tensor_release(t);
  }
}

EM_TEST(softmax_long_rows_with_infinities) {
  /* rows of 100 (the per-row path) with masked entries, an all -inf row
   * and a NaN */
  const int64_t D = 100;
  em_tensor *t = make_layout(L_CONTIG, EM_FLOAT32, 1, 3, D);
  float *p = em_tensor_data(t);
  for (int i = 0; i < D; i += 3) p[i] = -INFINITY;
  for (int i = 0; i < D; i++) p[D + i] = -INFINITY;
  p[2 * D + 57] = NAN;
  for (int lg = 0; lg < 2; lg++) {
    em_tensor *r = lg ? em_tensor_log_softmax(t, -1, EM_DTYPE_UNDEFINED)
                      : em_tensor_softmax(t, -1, EM_DTYPE_UNDEFINED);
    ASSERT_NOTNULL(r);
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < D; i++) mx = p[i] > mx ? p[i] : mx;
    for (int i = 0; i < D; i++) s += exp(p[i] - mx);
    for (int i = 0; i < D; i++) {
      double want = lg ? p[i] - mx - log(s) : exp(p[i] - mx) / s;
      ASSERT_CLOSE(em_test_get(r, i), want, 1e-5, 0);
      ASSERT_TRUE(isnan(em_test_get(r, D + i)));
      ASSERT_TRUE(isnan(em_test_get(r, 2 * D + i)));
    }
    em_tensor_release(r);
  }
  em_tensor_release(t);
}

EM_TEST(softmax_rows_sum_to_one) {
  em_tensor *t = make_layout(L_CONTIG, EM_FLOAT32, 1, 64, 1000);
  em_tensor *r = em_tensor_softmax(t, -1, EM_DTYPE_UNDEFINED);
  ASSERT_NOTNULL(r);
  const float *p = em_tensor_data(r);
  for (int i = 0; i < 64; i++) {
    double s = 0;
    for (int j = 0; j < 1000; j++) s += p[i * 1000 + j];
    ASSERT_CLOSE(s, 1, 1e-5, 0);
  }
  em_tensor_release(r);
  em_tensor_release(t);
}

/* ---- cumsum / cumprod ------------------------------------------------------------------------ */

static int check_scan(em_tensor *t, int dim, bool prod, em_dtype dt, const char *ctx) {
  em_tensor *r = prod ? em_tensor_cumprod(t, dim, dt) : em_tensor_cumsum(t, dim, dt);
  em_dtype odt = dt != EM_DTYPE_UNDEFINED                ? dt
                 : em_dtype_is_float((em_dtype)t->dtype) ? (em_dtype)t->dtype
                                                         : EM_INT64;
  char what[128];
  snprintf(what, sizeof what, "%s %s->%s dim %d %s", prod ? "cumprod" : "cumsum",
           em_dtype_name((em_dtype)t->dtype), em_dtype_name(odt), dim, ctx);
  if (!r || r->dtype != odt || !same_shape(r, t->ndim, t->shape)) {
    fprintf(stderr, "  %s: bad result %s\n", what, r ? em__tshape(r) : em_last_error());
    em_tensor_release(r);
    return 0;
  }
  int d = dim < 0 ? dim + t->ndim : dim;
  int64_t D = t->shape[d], outer = 1, inner = 1;
  for (int i = 0; i < t->ndim; i++) {
    if (i < d)
      outer *= t->shape[i];
    else if (i > d)
      inner *= t->shape[i];
  }
  double *ref = malloc((size_t)t->numel * sizeof(double));
  double *scale = malloc((size_t)t->numel * sizeof(double));
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      double acc = prod ? 1 : 0, sc = prod ? 1 : 0;
      for (int64_t k = 0; k < D; k++) {
        int64_t i = (o * D + k) * inner + j;
        double x = em_test_get(t, i);
        if (!em_dtype_is_float(odt)) x = trunc(x);
        acc = prod ? acc * x : acc + x;
        sc = prod ? sc * fabs(x) : sc + fabs(x);
        ref[i] = acc;
        scale[i] = sc;
      }
    }
  int ok = check_values(r, ref, scale, t->numel, tol_of(odt) * 2, what, __LINE__);
  free(ref);
  free(scale);
  em_tensor_release(r);
  return ok;
}

EM_TEST(cumsum_cumprod_every_dim_layout_and_dtype) {
  for (size_t k = 0; k < sizeof all_dtypes / sizeof all_dtypes[0]; k++)
    for (int l = 0; l < L_COUNT; l++) {
      em_tensor *t = make_layout(l, all_dtypes[k], 3, 4, 5);
      ASSERT_NOTNULL(t);
      for (int dim = -3; dim < 3; dim++)
        for (int pr = 0; pr < 2; pr++)
          ASSERT_TRUE(check_scan(t, dim, pr, EM_DTYPE_UNDEFINED, layout_name[l]));
      em_tensor_release(t);
    }
  em_tensor *t = make_layout(L_CONTIG, EM_FLOAT32, 2, 3, 4);
  ASSERT_TRUE(check_scan(t, 1, false, EM_FLOAT64, "dtype"));
  ASSERT_TRUE(check_scan(t, 2, false, EM_INT32, "dtype")); /* truncated first */
  em_tensor_release(t);
  t = make_layout(L_CONTIG, EM_FLOAT32, 3, 700, 600); /* wide column blocks */
  ASSERT_TRUE(check_scan(t, 1, false, EM_DTYPE_UNDEFINED, "big"));
  em_tensor_release(t);
  /* uint8 with the dtype argument wraps */
  em_tensor *u = from_doubles(EM_UINT8, EM_DIMS(3), (double[]){200, 200, 3});
  em_tensor *r = em_tensor_cumsum(u, 0, EM_UINT8);
  ASSERT_EQ(r->dtype, EM_UINT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){200, 144, 147}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_cumsum(u, 0, EM_DTYPE_UNDEFINED);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){200, 400, 403}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(u);
}

/* ---- errors ------------------------------------------------------------------------------------
 */

EM_TEST(errors) {
  em_tensor *x = em_tensor_ones(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *xi = em_tensor_ones(EM_DIMS(2, 3), EM_INT64);
  em_tensor *xb = em_tensor_ones(EM_DIMS(2, 3), EM_BOOL);
  em_tensor *v, *ix;
  const char *range = "dimension out of range (expected to be in range of [-2, 1], but got 2)";
  ASSERT_NULL_ERR(em_tensor_sum(x, EM_DIMS(2), false, EM_DTYPE_UNDEFINED), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_mean(x, EM_DIMS(-3), false, EM_DTYPE_UNDEFINED), EM_ERR_INDEX,
                  "but got -3)");
  ASSERT_NULL_ERR(em_tensor_prod(x, EM_DIMS(0, 2), false, EM_DTYPE_UNDEFINED), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_amax(x, EM_DIMS(2), false), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_all(x, EM_DIMS(2), false), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_count_nonzero(x, EM_DIMS(2)), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_var(x, EM_DIMS(2), 1, false), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_logsumexp(x, EM_DIMS(2), false), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_norm(x, 2, EM_DIMS(2), false), EM_ERR_INDEX, range);
  ASSERT_ERR(em_tensor_max_dim(x, 2, false, &v, &ix), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_argmax(x, true, 2, false), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_softmax(x, 2, EM_DTYPE_UNDEFINED), EM_ERR_INDEX, range);
  ASSERT_NULL_ERR(em_tensor_cumsum(x, -3, EM_DTYPE_UNDEFINED), EM_ERR_INDEX, "but got -3)");

  const char *rep = "dim 0 appears multiple times in the list of dims";
  ASSERT_NULL_ERR(em_tensor_sum(x, EM_DIMS(0, 0), false, EM_DTYPE_UNDEFINED), EM_ERR_INVALID, rep);
  ASSERT_NULL_ERR(em_tensor_sum(x, EM_DIMS(0, -2), false, EM_DTYPE_UNDEFINED), EM_ERR_INVALID, rep);
  ASSERT_NULL_ERR(em_tensor_amin(x, EM_DIMS(-2, 0), false), EM_ERR_INVALID, rep);
  ASSERT_NULL_ERR(em_tensor_var(x, EM_DIMS(0, 0), 1, false), EM_ERR_INVALID, rep);
  ASSERT_NULL_ERR(em_tensor_count_nonzero(x, EM_DIMS(0, 0)), EM_ERR_INVALID, rep);

  ASSERT_NULL_ERR(em_tensor_mean(xi, 0, NULL, false, EM_DTYPE_UNDEFINED), EM_ERR_DTYPE,
                  "mean(): could not infer output dtype. Input dtype must be either a floating "
                  "point or complex dtype. Got: Long");
  ASSERT_NULL_ERR(em_tensor_mean(xb, 0, NULL, false, EM_DTYPE_UNDEFINED), EM_ERR_DTYPE,
                  "Got: Bool");
  ASSERT_NULL_ERR(em_tensor_mean(x, 0, NULL, false, EM_INT64), EM_ERR_DTYPE,
                  "mean(): could not infer output dtype. Optional dtype must be either a "
                  "floating point or complex dtype. Got: Long");
  ASSERT_NULL_ERR(em_tensor_var(xi, 0, NULL, 1, false), EM_ERR_DTYPE,
                  "std and var only support floating point and complex dtypes");
  ASSERT_NULL_ERR(em_tensor_std(xb, 0, NULL, 1, false), EM_ERR_DTYPE, "std and var only support");
  ASSERT_NULL_ERR(em_tensor_norm(xi, 2, 0, NULL, false), EM_ERR_DTYPE,
                  "norm(): input dtype should be either floating point or complex. Got Long "
                  "instead.");
  ASSERT_NULL_ERR(em_tensor_softmax(xi, 1, EM_DTYPE_UNDEFINED), EM_ERR_DTYPE,
                  "\"softmax_lastdim_kernel_impl\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_softmax(xi, 0, EM_DTYPE_UNDEFINED), EM_ERR_DTYPE,
                  "\"softmax_kernel_impl\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_log_softmax(x, -1, EM_INT32), EM_ERR_DTYPE,
                  "\"log_softmax_lastdim_kernel_impl\" not implemented for 'Int'");
  ASSERT_NULL_ERR(em_tensor_cumsum(x, 0, EM_BOOL), EM_ERR_DTYPE,
                  "\"cumsum_out_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_cumprod(xi, 0, EM_BOOL), EM_ERR_DTYPE,
                  "\"cumprod_out_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_argmax(xb, false, 0, false), EM_ERR_DTYPE,
                  "\"argmax_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_argmin(xb, true, 0, false), EM_ERR_DTYPE,
                  "\"argmin_cpu\" not implemented for 'Bool'");

  ASSERT_NULL_ERR(em_tensor_sum(NULL, 0, NULL, false, EM_DTYPE_UNDEFINED), EM_ERR_INVALID,
                  "sum: input tensor is NULL");
  ASSERT_NULL_ERR(em_tensor_sum(x, -1, NULL, false, EM_DTYPE_UNDEFINED), EM_ERR_INVALID,
                  "sum: ndims -1 is negative");
  ASSERT_NULL_ERR(em_tensor_sum(x, 1, NULL, false, EM_DTYPE_UNDEFINED), EM_ERR_INVALID,
                  "dims is NULL");
  ASSERT_NULL_ERR(em_tensor_sum(x, 0, NULL, false, (em_dtype)42), EM_ERR_DTYPE,
                  "sum: invalid dtype 42");
  ASSERT_ERR(em_tensor_max_dim(x, 0, false, NULL, &ix), EM_ERR_INVALID, "must not be NULL");
  ASSERT_NULL_ERR(em_tensor_softmax(NULL, 0, EM_DTYPE_UNDEFINED), EM_ERR_INVALID, "NULL");
  em_tensor_release(x);
  em_tensor_release(xi);
  em_tensor_release(xb);
}

EM_TEST_MAIN()
