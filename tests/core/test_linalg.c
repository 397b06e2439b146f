/* Linear algebra: matmul, mm, bmm, mv, dot, outer, addmm, baddbmm against
 * naive double loops written here.
 *
 * Inputs hold multiples of 1/4 in [-1, 1] (floats) or small integers, so
 * products and sums are exact in every float type for the sizes used, up to
 * the final rounding to the output type. Tolerances: float64 1e-12
 * relative; float32 1e-5 relative + 1e-5 absolute (BLAS may reorder sums);
 * float16 1e-3 and bfloat16 8e-3 relative (one rounding of a float sum);
 * integers exact. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "tests/harness.h"

/* ---- helpers -------------------------------------------------------------------------- */

static int64_t numel_of(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  return n;
}

/* A tensor of dtype dt with deterministic values: q/4 (floats) or q
 * (integers), q in [-4, 4] (unsigned and bool: [0, 4] and {0, 1}). */
static em_tensor *mk(em_dtype dt, int nd, const int64_t *shape, unsigned seed) {
  int64_t n = numel_of(nd, shape);
  double *v = calloc((size_t)(n ? n : 1), sizeof(double));
  uint32_t s = seed * 747796405u + 2891336453u;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    int q = (int)((s >> 16) % 9) - 4;
    if (dt == EM_UINT8) q = q < 0 ? -q : q;
    if (dt == EM_BOOL) q = q > 0;
    v[i] = em_dtype_is_float(dt) ? q * 0.25 : q;
  }
  em_tensor *d = em_tensor_from_data(v, nd, shape, EM_FLOAT64);
  free(v);
  if (!d) return NULL;
  em_tensor *t = em_tensor_to_dtype(d, dt);
  em_tensor_release(d);
  return t;
}

/* numpy.matmul in double over logical elements: a [..., n, k] or [k],
 * b [..., k, m] or [k]; writes the result in row-major order of the
 * result shape (out NULL: only counts); returns its element count. */
static int64_t ref_matmul(em_tensor *a, em_tensor *b, double *out) {
  int da = a->ndim, db = b->ndim;
  int64_t k = a->shape[da - 1];
  int64_t n = da == 1 ? 1 : a->shape[da - 2], m = db == 1 ? 1 : b->shape[db - 1];
  int nba = da > 2 ? da - 2 : 0, nbb = db > 2 ? db - 2 : 0;
  int nb = nba > nbb ? nba : nbb;
  int64_t bs[EM_MAX_DIMS], bsa[EM_MAX_DIMS], bsb[EM_MAX_DIMS];
  for (int i = 0; i < nb; i++) {
    int ia = i - (nb - nba), ib = i - (nb - nbb);
    bsa[i] = ia >= 0 ? a->shape[ia] : 1;
    bsb[i] = ib >= 0 ? b->shape[ib] : 1;
    bs[i] = bsa[i] == 1 ? bsb[i] : bsa[i];
  }
  int64_t B = numel_of(nb, bs), cnt = 0;
  if (!out) return B * n * m;
  for (int64_t bi = 0; bi < B; bi++) {
    /* batch index -> a's and b's batch offsets (broadcast dims use 0) */
    int64_t rem = bi, oa = 0, ob = 0, ma = 1, mb = 1;
    for (int d = nb - 1; d >= 0; d--) {
      int64_t idx = rem % bs[d];
      rem /= bs[d];
      oa += (bsa[d] == 1 ? 0 : idx) * ma;
      ob += (bsb[d] == 1 ? 0 : idx) * mb;
      ma *= bsa[d];
      mb *= bsb[d];
    }
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < m; j++) {
        double acc = 0;
        for (int64_t p = 0; p < k; p++)
          acc += em_test_get(a, oa * n * k + i * k + p) * em_test_get(b, ob * k * m + p * m + j);
        out[cnt++] = acc;
      }
  }
  return cnt;
}

/* Integer results wrap to the dtype's width, as PyTorch. */
static void wrap_to(em_dtype dt, double *v, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    int64_t x = (int64_t)v[i];
    switch (dt) {
      case EM_INT8:
        v[i] = (int8_t)x;
        break;
      case EM_INT16:
        v[i] = (int16_t)x;
        break;
      case EM_INT32:
        v[i] = (int32_t)x;
        break;
      case EM_UINT8:
        v[i] = (uint8_t)x;
        break;
      default:
        break;
    }
  }
}

static double tol_of(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT64:
      return 1e-12;
    case EM_FLOAT32:
      return 1e-5;
    case EM_FLOAT16:
      return 1e-3;
    case EM_BFLOAT16:
      return 8e-3;
    default:
      return 0;
  }
}

/* r must equal numpy.matmul(a, b) with the given shape. */
#define CHECK_MATMUL(r, a, b, dt)                                                                  \
  do {                                                                                             \
    ASSERT_NOTNULL(r);                                                                             \
    int64_t n_ = ref_matmul((a), (b), NULL);                                                       \
    double *exp_ = malloc(sizeof(double) * (size_t)(n_ + 1));                                      \
    ref_matmul((a), (b), exp_);                                                                    \
    wrap_to((dt), exp_, n_);                                                                       \
    int ok_ = n_ == (r)->numel && (r)->dtype == (dt) &&                                            \
              em_test_tensor_close((r), exp_, n_, tol_of(dt), tol_of(dt), __FILE__, __LINE__, #r); \
    free(exp_);                                                                                    \
    if (!ok_) {                                                                                    \
      EM_FAILF("%s wrong (dtype %s, %lld elements, expected %lld)", #r,                            \
               em_dtype_name((em_dtype)(r)->dtype), (long long)(r)->numel, (long long)n_);         \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

static const em_dtype all_dtypes[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8,
                                      EM_INT16,   EM_INT32,   EM_INT64,   EM_UINT8};
#define NDT (sizeof all_dtypes / sizeof all_dtypes[0])

/* ---- mm ------------------------------------------------------------------------------- */

EM_TEST(mm_contiguous_every_dtype) {
  static const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 4}, {7, 5, 3}, {33, 19, 41}, {3, 300, 2}};
  for (size_t d = 0; d < NDT; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      em_dtype dt = all_dtypes[d];
      int64_t n = shapes[s][0], k = shapes[s][1], m = shapes[s][2];
      em_tensor *a = mk(dt, 2, (int64_t[]){n, k}, 1 + (unsigned)s);
      em_tensor *b = mk(dt, 2, (int64_t[]){k, m}, 7 + (unsigned)s);
      em_tensor *r = em_tensor_mm(a, b);
      ASSERT_SHAPE(r, n, m);
      CHECK_MATMUL(r, a, b, dt);
      em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
    }
}

/* Every layout for both operands: contiguous, transposed (BLAS transpose),
 * a column slice (leading dim > cols), a column step (needs a copy for
 * BLAS, the dot/strided path for the kernels), a row step, an expanded
 * (stride-0) row. */
static em_tensor *layout(em_dtype dt, int64_t r, int64_t c, int kind, unsigned seed) {
  em_tensor *base = NULL, *v = NULL;
  switch (kind) {
    case 0:
      return mk(dt, 2, (int64_t[]){r, c}, seed);
    case 1:
      base = mk(dt, 2, (int64_t[]){c, r}, seed);
      v = em_tensor_t(base);
      break;
    case 2:
      base = mk(dt, 2, (int64_t[]){r, c + 5}, seed);
      v = em_tensor_narrow(base, 1, 2, c);
      break;
    case 3:
      base = mk(dt, 2, (int64_t[]){r, 2 * c}, seed);
      v = em_tensor_slice(base, 1, 1, INT64_MAX, 2);
      break;
    case 4:
      base = mk(dt, 2, (int64_t[]){3 * r, c}, seed);
      v = em_tensor_slice(base, 0, 0, INT64_MAX, 3); /* strides (3c, 1) */
      break;
    case 5:
      base = mk(dt, 2, (int64_t[]){1, c}, seed);
      v = em_tensor_expand(base, 2, (int64_t[]){r, c});
      break;
  }
  em_tensor_release(base);
  return v;
}
#define NLAYOUTS 6

EM_TEST(mm_strided_layouts) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_INT32, EM_BFLOAT16};
  static const int64_t shapes[][3] = {{5, 4, 3}, {1, 6, 1}, {17, 9, 33}, {2, 1, 7}};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int la = 0; la < NLAYOUTS; la++)
        for (int lb = 0; lb < NLAYOUTS; lb++) {
          int64_t n = shapes[s][0], k = shapes[s][1], m = shapes[s][2];
          em_tensor *a = layout(dts[d], n, k, la, 3 + (unsigned)la);
          em_tensor *b = layout(dts[d], k, m, lb, 11 + (unsigned)lb);
          ASSERT_NOTNULL(a);
          ASSERT_NOTNULL(b);
          em_tensor *r = em_tensor_mm(a, b);
          if (!r) EM_FAILF("layouts %d x %d", la, lb);
          ASSERT_SHAPE(r, n, m);
          CHECK_MATMUL(r, a, b, dts[d]);
          em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
        }
}

/* Large enough that the kernels split rows across threads and BLAS blocks. */
EM_TEST(mm_larger_threaded) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_INT32, EM_BFLOAT16};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
    em_tensor *a = mk(dts[d], 2, (int64_t[]){96, 130}, 5);
    em_tensor *bt = mk(dts[d], 2, (int64_t[]){300, 130}, 6);
    em_tensor *b = em_tensor_t(bt);
    em_tensor *r = em_tensor_mm(a, b);
    ASSERT_SHAPE(r, 96, 300);
    CHECK_MATMUL(r, a, b, dts[d]);
    em_tensor_release(a), em_tensor_release(bt), em_tensor_release(b), em_tensor_release(r);
  }
}

EM_TEST(mm_integers_wrap) {
  /* int8: 100*100 + 100*100 = 20000 = 32 (mod 256), as PyTorch */
  em_tensor *a = em_tensor_full(EM_DIMS(2, 2), em_scalar_int(100), EM_INT8);
  em_tensor *r = em_tensor_mm(a, a);
  ASSERT_TENSOR_CLOSE(r, ((double[]){32, 32, 32, 32}), 0, 0);
  ASSERT_EQ(r->dtype, EM_INT8);
  /* uint8: 200*200 = 40000 = 64 (mod 256) */
  em_tensor *u = em_tensor_full(EM_DIMS(1, 1), em_scalar_int(200), EM_UINT8);
  em_tensor *ru = em_tensor_mm(u, u);
  ASSERT_TENSOR_CLOSE(ru, ((double[]){64}), 0, 0);
  /* int64: 2^62 * 4 wraps to 0; -2^62 * 2 = -2^63 */
  int64_t big[2] = {INT64_C(4611686018427387904), INT64_C(-4611686018427387904)};
  int64_t sm[2] = {4, 2};
  em_tensor *x = em_tensor_from_data(big, 2, (int64_t[]){2, 1}, EM_INT64);
  em_tensor *y = em_tensor_from_data(sm, 2, (int64_t[]){1, 2}, EM_INT64);
  em_tensor *rx = em_tensor_mm(x, y);
  ASSERT_NOTNULL(rx);
  const int64_t *p = em_tensor_data(rx);
  ASSERT_EQ(p[0], 0);
  ASSERT_EQ(p[1], INT64_MIN);
  ASSERT_EQ(p[2], 0);
  ASSERT_EQ(p[3], INT64_MIN);
  em_tensor_release(a), em_tensor_release(r), em_tensor_release(u), em_tensor_release(ru);
  em_tensor_release(x), em_tensor_release(y), em_tensor_release(rx);
}

EM_TEST(mm_nan_propagates) {
  em_tensor *a = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(NAN), EM_FLOAT32);
  em_tensor *z = em_tensor_zeros(EM_DIMS(2, 2), EM_FLOAT32);
  em_tensor *r = em_tensor_mm(a, z);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, NAN, NAN}), 0, 0);
  em_tensor *h = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(NAN), EM_FLOAT16);
  em_tensor *hz = em_tensor_zeros(EM_DIMS(2, 2), EM_FLOAT16);
  em_tensor *rh = em_tensor_mm(hz, h);
  ASSERT_TENSOR_CLOSE(rh, ((double[]){NAN, NAN, NAN, NAN}), 0, 0);
  em_tensor_release(a), em_tensor_release(z), em_tensor_release(r);
  em_tensor_release(h), em_tensor_release(hz), em_tensor_release(rh);
}

EM_TEST(mm_zero_size) {
  for (size_t d = 0; d < NDT; d++) {
    em_dtype dt = all_dtypes[d];
    em_tensor *a = mk(dt, 2, (int64_t[]){3, 0}, 1), *b = mk(dt, 2, (int64_t[]){0, 4}, 2);
    em_tensor *r = em_tensor_mm(a, b); /* k = 0: zeros */
    ASSERT_SHAPE(r, 3, 4);
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
    em_tensor *c = mk(dt, 2, (int64_t[]){0, 5}, 3), *e = mk(dt, 2, (int64_t[]){5, 4}, 4);
    em_tensor *r2 = em_tensor_mm(c, e);
    ASSERT_SHAPE(r2, 0, 4);
    em_tensor *f = mk(dt, 2, (int64_t[]){5, 0}, 5);
    em_tensor *r3 = em_tensor_mm(c, f);
    ASSERT_SHAPE(r3, 0, 0);
    em_tensor_release(a), em_tensor_release(b), em_tensor_release(r), em_tensor_release(c);
    em_tensor_release(e), em_tensor_release(r2), em_tensor_release(f), em_tensor_release(r3);
  }
}

/* ---- bmm ------------------------------------------------------------------------------ */

EM_TEST(bmm_every_dtype_and_layout) {
  for (size_t d = 0; d < NDT; d++) {
    em_dtype dt = all_dtypes[d];
    /* contiguous */
    em_tensor *a = mk(dt, 3, (int64_t[]){3, 4, 5}, 1), *b = mk(dt, 3, (int64_t[]){3, 5, 2}, 2);
    em_tensor *r = em_tensor_bmm(a, b);
    ASSERT_SHAPE(r, 3, 4, 2);
    CHECK_MATMUL(r, a, b, dt);
    /* per-matrix transposes and a permuted batch dim */
    em_tensor *at0 = mk(dt, 3, (int64_t[]){3, 5, 4}, 3);
    em_tensor *at = em_tensor_transpose(at0, 1, 2);
    em_tensor *bp0 = mk(dt, 3, (int64_t[]){5, 3, 2}, 4);
    em_tensor *bp = em_tensor_permute(bp0, 3, (int64_t[]){1, 0, 2});
    em_tensor *r2 = em_tensor_bmm(at, bp);
    ASSERT_SHAPE(r2, 3, 4, 2);
    CHECK_MATMUL(r2, at, bp, dt);
    /* expanded (stride-0) batches on either side */
    em_tensor *b1 = mk(dt, 3, (int64_t[]){1, 5, 2}, 5);
    em_tensor *be = em_tensor_expand(b1, 3, (int64_t[]){3, 5, 2});
    em_tensor *r3 = em_tensor_bmm(a, be); /* folds into one GEMM for BLAS dtypes */
    CHECK_MATMUL(r3, a, be, dt);
    em_tensor *a1 = mk(dt, 3, (int64_t[]){1, 4, 5}, 6);
    em_tensor *ae = em_tensor_expand(a1, 3, (int64_t[]){3, 4, 5});
    em_tensor *r4 = em_tensor_bmm(ae, b);
    CHECK_MATMUL(r4, ae, b, dt);
    em_tensor *r5 = em_tensor_bmm(at, be); /* transposed a + shared b: no fold */
    CHECK_MATMUL(r5, at, be, dt);
    em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
    em_tensor_release(at0), em_tensor_release(at), em_tensor_release(bp0), em_tensor_release(bp);
    em_tensor_release(r2), em_tensor_release(b1), em_tensor_release(be), em_tensor_release(r3);
    em_tensor_release(a1), em_tensor_release(ae), em_tensor_release(r4), em_tensor_release(r5);
  }
}

/* A layout BLAS cannot read inside a batch: copied once per stack, or once
 * when the batch stride is 0. */
EM_TEST(bmm_copied_layouts) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_INT16};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
    em_dtype dt = dts[d];
    em_tensor *base = mk(dt, 3, (int64_t[]){2, 3, 8}, 1);
    em_tensor *a = em_tensor_slice(base, 2, 0, INT64_MAX, 2); /* [2, 3, 4], col stride 2 */
    em_tensor *b0 = mk(dt, 3, (int64_t[]){1, 4, 1}, 2);
    em_tensor *b = em_tensor_expand(b0, 3, (int64_t[]){2, 4, 6}); /* stride-0 columns */
    em_tensor *r = em_tensor_bmm(a, b);
    ASSERT_SHAPE(r, 2, 3, 6);
    CHECK_MATMUL(r, a, b, dt);
    em_tensor_release(base), em_tensor_release(a), em_tensor_release(b0);
    em_tensor_release(b), em_tensor_release(r);
  }
}

EM_TEST(bmm_zero_size) {
  em_tensor *a = mk(EM_FLOAT32, 3, (int64_t[]){0, 2, 3}, 1);
  em_tensor *b = mk(EM_FLOAT32, 3, (int64_t[]){0, 3, 4}, 2);
  em_tensor *r = em_tensor_bmm(a, b);
  ASSERT_SHAPE(r, 0, 2, 4);
  em_tensor *c = mk(EM_INT64, 3, (int64_t[]){2, 2, 0}, 3);
  em_tensor *e = mk(EM_INT64, 3, (int64_t[]){2, 0, 3}, 4);
  em_tensor *r2 = em_tensor_bmm(c, e);
  ASSERT_SHAPE(r2, 2, 2, 3);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
  em_tensor_release(c), em_tensor_release(e), em_tensor_release(r2);
}

/* ---- mv, dot, outer ----------------------------------------------------------------------- */

EM_TEST(mv_every_dtype_and_layout) {
  for (size_t d = 0; d < NDT; d++) {
    em_dtype dt = all_dtypes[d];
    em_tensor *a = mk(dt, 2, (int64_t[]){5, 7}, 1), *v = mk(dt, 1, (int64_t[]){7}, 2);
    em_tensor *r = em_tensor_mv(a, v);
    ASSERT_SHAPE(r, 5);
    CHECK_MATMUL(r, a, v, dt);
    /* transposed matrix, stepped vector, expanded vector */
    em_tensor *a0 = mk(dt, 2, (int64_t[]){7, 5}, 3);
    em_tensor *at = em_tensor_t(a0);
    em_tensor *v0 = mk(dt, 1, (int64_t[]){21}, 4);
    em_tensor *vs = em_tensor_slice(v0, 0, 1, INT64_MAX, 3); /* [7] */
    em_tensor *r2 = em_tensor_mv(at, vs);
    ASSERT_SHAPE(r2, 5);
    CHECK_MATMUL(r2, at, vs, dt);
    em_tensor *one = mk(dt, 1, (int64_t[]){1}, 5);
    em_tensor *ve = em_tensor_expand(one, 1, (int64_t[]){7});
    em_tensor *r3 = em_tensor_mv(a, ve);
    CHECK_MATMUL(r3, a, ve, dt);
    em_tensor_release(a), em_tensor_release(v), em_tensor_release(r), em_tensor_release(a0);
    em_tensor_release(at), em_tensor_release(v0), em_tensor_release(vs), em_tensor_release(r2);
    em_tensor_release(one), em_tensor_release(ve), em_tensor_release(r3);
  }
  em_tensor *e = mk(EM_FLOAT32, 2, (int64_t[]){3, 0}, 1),
            *ev = mk(EM_FLOAT32, 1, (int64_t[]){0}, 2);
  em_tensor *re = em_tensor_mv(e, ev);
  ASSERT_SHAPE(re, 3);
  ASSERT_TENSOR_CLOSE(re, ((double[]){0, 0, 0}), 0, 0);
  em_tensor_release(e), em_tensor_release(ev), em_tensor_release(re);
}

EM_TEST(dot_every_dtype_and_layout) {
  for (size_t d = 0; d < NDT; d++) {
    em_dtype dt = all_dtypes[d];
    em_tensor *a = mk(dt, 1, (int64_t[]){9}, 1), *b = mk(dt, 1, (int64_t[]){9}, 2);
    em_tensor *r = em_tensor_dot(a, b);
    ASSERT_NOTNULL(r);
    ASSERT_SCALAR_SHAPE(r);
    CHECK_MATMUL(r, a, b, dt);
    em_tensor *a0 = mk(dt, 1, (int64_t[]){27}, 3);
    em_tensor *as = em_tensor_slice(a0, 0, 2, INT64_MAX, 3);
    em_tensor *s1 = mk(dt, 1, (int64_t[]){1}, 4);
    em_tensor *be = em_tensor_expand(s1, 1, (int64_t[]){9});
    em_tensor *r2 = em_tensor_dot(as, be);
    CHECK_MATMUL(r2, as, be, dt);
    em_tensor_release(a), em_tensor_release(b), em_tensor_release(r), em_tensor_release(a0);
    em_tensor_release(as), em_tensor_release(s1), em_tensor_release(be), em_tensor_release(r2);
  }
  /* long float32 dot: 1000 * 0.25 * 0.5 */
  em_tensor *x = em_tensor_full(EM_DIMS(1000), em_scalar_float(0.25), EM_FLOAT32);
  em_tensor *y = em_tensor_full(EM_DIMS(1000), em_scalar_float(0.5), EM_FLOAT32);
  em_tensor *r = em_tensor_dot(x, y);
  ASSERT_TENSOR_CLOSE(r, ((double[]){125}), 1e-6, 0);
  em_tensor *z = mk(EM_INT32, 1, (int64_t[]){0}, 1);
  em_tensor *rz = em_tensor_dot(z, z);
  ASSERT_SCALAR_SHAPE(rz);
  ASSERT_TENSOR_CLOSE(rz, ((double[]){0}), 0, 0);
  em_tensor_release(x), em_tensor_release(y), em_tensor_release(r), em_tensor_release(z);
  em_tensor_release(rz);
}

EM_TEST(outer_promotes_and_bool) {
  double av[3] = {1, -2, 3};
  float bv[2] = {1.5f, 2};
  int8_t a8[3] = {1, -2, 3};
  em_tensor *a = em_tensor_from_data(a8, 1, (int64_t[]){3}, EM_INT8);
  em_tensor *b = em_tensor_from_data(bv, 1, (int64_t[]){2}, EM_FLOAT32);
  em_tensor *r = em_tensor_outer(a, b);
  ASSERT_SHAPE(r, 3, 2);
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1.5, 2, -3, -4, 4.5, 6}), 0, 0);
  em_tensor *ad = em_tensor_from_data(av, 1, (int64_t[]){3}, EM_FLOAT64);
  em_tensor *r2 = em_tensor_outer(b, ad);
  ASSERT_EQ(r2->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){1.5, -3, 4.5, 2, -4, 6}), 0, 0);
  bool b1[2] = {true, false}, b2[3] = {true, true, false};
  em_tensor *x = em_tensor_from_data(b1, 1, (int64_t[]){2}, EM_BOOL);
  em_tensor *y = em_tensor_from_data(b2, 1, (int64_t[]){3}, EM_BOOL);
  em_tensor *r3 = em_tensor_outer(x, y);
  ASSERT_EQ(r3->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){1, 1, 0, 0, 0, 0}), 0, 0);
  /* int32 x bool -> int32; strided input */
  int32_t iv[6] = {1, 9, 2, 9, 3, 9};
  em_tensor *i0 = em_tensor_from_data(iv, 1, (int64_t[]){6}, EM_INT32);
  em_tensor *is = em_tensor_slice(i0, 0, 0, INT64_MAX, 2);
  em_tensor *r4 = em_tensor_outer(is, x);
  ASSERT_EQ(r4->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(r4, ((double[]){1, 0, 2, 0, 3, 0}), 0, 0);
  em_tensor *e = em_tensor_zeros(EM_DIMS(0), EM_FLOAT32);
  em_tensor *r5 = em_tensor_outer(e, b);
  ASSERT_SHAPE(r5, 0, 2);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(r), em_tensor_release(ad);
  em_tensor_release(r2), em_tensor_release(x), em_tensor_release(y), em_tensor_release(r3);
  em_tensor_release(i0), em_tensor_release(is), em_tensor_release(r4), em_tensor_release(e);
  em_tensor_release(r5);
}

/* ---- matmul ---------------------------------------------------------------------------- */

typedef struct mm_case {
  int na, nb;
  int64_t sa[5], sb[5];
  int64_t rs[5]; /* result shape */
  int nr;
} mm_case;

EM_TEST(matmul_numpy_rules) {
  static const mm_case cases[] = {
      {1, 1, {4}, {4}, {0}, 0},                         /* dot -> 0-dim */
      {2, 1, {3, 4}, {4}, {3}, 1},                      /* mv */
      {1, 2, {4}, {4, 5}, {5}, 1},                      /* [1,4] mm, squeezed */
      {2, 2, {3, 4}, {4, 5}, {3, 5}, 2},                /* mm */
      {3, 1, {2, 3, 4}, {4}, {2, 3}, 2},                /* folded mv */
      {3, 2, {2, 3, 4}, {4, 5}, {2, 3, 5}, 3},          /* folded mm */
      {4, 2, {2, 2, 3, 4}, {4, 5}, {2, 2, 3, 5}, 4},    /* folded, 2 batch dims */
      {1, 3, {4}, {2, 4, 5}, {2, 5}, 2},                /* 1-D @ batched */
      {2, 3, {3, 4}, {2, 4, 5}, {2, 3, 5}, 3},          /* broadcast a */
      {3, 3, {2, 3, 4}, {2, 4, 5}, {2, 3, 5}, 3},       /* bmm */
      {3, 3, {1, 3, 4}, {2, 4, 5}, {2, 3, 5}, 3},       /* size-1 batch */
      {4, 3, {2, 1, 3, 4}, {5, 4, 2}, {2, 5, 3, 2}, 4}, /* two-sided broadcast */
      {3, 4, {5, 3, 4}, {2, 1, 4, 2}, {2, 5, 3, 2}, 4},
      {4, 4, {2, 3, 3, 4}, {2, 3, 4, 1}, {2, 3, 3, 1}, 4},
      {3, 1, {0, 3, 4}, {4}, {0, 3}, 2}, /* empty batch */
      {3, 3, {2, 0, 4}, {2, 4, 5}, {2, 0, 5}, 3},
      {2, 2, {3, 0}, {0, 5}, {3, 5}, 2}, /* k = 0 */
      {1, 1, {0}, {0}, {0}, 0},          /* empty dot */
  };
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_INT64, EM_FLOAT16};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
      const mm_case *t = &cases[c];
      em_tensor *a = mk(dts[d], t->na, t->sa, 1 + (unsigned)c);
      em_tensor *b = mk(dts[d], t->nb, t->sb, 50 + (unsigned)c);
      em_tensor *r = em_tensor_matmul(a, b);
      if (!r) EM_FAILF("case %zu: %s", c, em_last_error());
      ASSERT_NOTNULL(r);
      ASSERT_EQ(r->ndim, t->nr);
      for (int i = 0; i < t->nr; i++) ASSERT_EQ(r->shape[i], t->rs[i]);
      CHECK_MATMUL(r, a, b, dts[d]);
      em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
    }
}

EM_TEST(matmul_strided_inputs) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_INT32};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
    em_dtype dt = dts[d];
    /* batched a with transposed matrices: not foldable, goes batched */
    em_tensor *a0 = mk(dt, 3, (int64_t[]){2, 4, 3}, 1);
    em_tensor *a = em_tensor_transpose(a0, 1, 2); /* [2, 3, 4] */
    em_tensor *b = mk(dt, 2, (int64_t[]){4, 5}, 2);
    em_tensor *r = em_tensor_matmul(a, b);
    ASSERT_SHAPE(r, 2, 3, 5);
    CHECK_MATMUL(r, a, b, dt);
    em_tensor *v = mk(dt, 1, (int64_t[]){4}, 3);
    em_tensor *r2 = em_tensor_matmul(a, v);
    ASSERT_SHAPE(r2, 2, 3);
    CHECK_MATMUL(r2, a, v, dt);
    /* permuted batch dims (foldable rows? no: batch dims out of order) */
    em_tensor *p0 = mk(dt, 4, (int64_t[]){3, 2, 5, 4}, 4);
    em_tensor *p = em_tensor_permute(p0, 4, (int64_t[]){1, 0, 2, 3}); /* [2, 3, 5, 4] */
    em_tensor *q0 = mk(dt, 3, (int64_t[]){4, 3, 2}, 5);
    em_tensor *q = em_tensor_permute(q0, 3, (int64_t[]){1, 0, 2}); /* [3, 4, 2] */
    em_tensor *r3 = em_tensor_matmul(p, q);
    ASSERT_SHAPE(r3, 2, 3, 5, 2);
    CHECK_MATMUL(r3, p, q, dt);
    /* sliced rows with a step still fold: rows evenly spaced */
    em_tensor *s0 = mk(dt, 3, (int64_t[]){2, 6, 4}, 6);
    em_tensor *s = em_tensor_slice(s0, 1, 0, INT64_MAX, 2); /* [2, 3, 4] */
    em_tensor *r4 = em_tensor_matmul(s, b);
    CHECK_MATMUL(r4, s, b, dt);
    em_tensor_release(a0), em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
    em_tensor_release(v), em_tensor_release(r2), em_tensor_release(p0), em_tensor_release(p);
    em_tensor_release(q0), em_tensor_release(q), em_tensor_release(r3), em_tensor_release(s0);
    em_tensor_release(s), em_tensor_release(r4);
  }
}

/* ---- addmm, baddbmm ------------------------------------------------------------------------- */

/* beta * input (broadcast over [n, m]) + alpha * (a @ b), all from logical
 * elements; input of shape [n, m], [m], [1, m], [n, 1] or 0-dim. */
static void ref_addmm(em_tensor *input, em_tensor *a, em_tensor *b, double beta, double alpha,
                      int64_t B, double *out) {
  int64_t n = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], m = b->shape[b->ndim - 1];
  for (int64_t bi = 0; bi < B; bi++)
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < m; j++) {
        /* broadcast index into input */
        int64_t idx[3] = {bi, i, j}, full[3] = {B, n, m}, lin = 0;
        for (int d = 0; d < input->ndim; d++) {
          int fd = 3 - input->ndim + d;
          (void)full;
          lin = lin * input->shape[d] + (input->shape[d] == 1 ? 0 : idx[fd]);
        }
        double acc = 0;
        for (int64_t p = 0; p < k; p++)
          acc += em_test_get(a, bi * n * k + i * k + p) * em_test_get(b, bi * k * m + p * m + j);
        out[(bi * n + i) * m + j] = (beta == 0 ? 0 : beta * em_test_get(input, lin)) + alpha * acc;
      }
}

EM_TEST(addmm_values_and_broadcast) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT32};
  static const int64_t ishapes[][2] = {{4, 5}, {1, 5}, {4, 1}, {1, 1}};
  static const double betas[] = {1, 0.5, 0, -2}, alphas[] = {1, 2, -0.5, 0};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (size_t s = 0; s < 6; s++)
      for (size_t c = 0; c < 4; c++) {
        em_dtype dt = dts[d];
        em_tensor *input = s < 4    ? mk(dt, 2, ishapes[s], 1)
                           : s == 4 ? mk(dt, 1, (int64_t[]){5}, 2)
                                    : mk(dt, 0, NULL, 3);
        em_tensor *a0 = mk(dt, 2, (int64_t[]){3, 4}, 4); /* a = a0^T: transposed */
        em_tensor *a = em_tensor_t(a0);
        em_tensor *b = mk(dt, 2, (int64_t[]){3, 5}, 5);
        /* integers truncate alpha and beta (0.5 -> 0, -0.5 -> 0) */
        double beta = betas[c], alpha = alphas[(c + s) % 4];
        double be = dt == EM_INT32 ? trunc(beta) : beta, al = dt == EM_INT32 ? trunc(alpha) : alpha;
        em_tensor *r = em_tensor_addmm(input, a, b, beta, alpha);
        ASSERT_SHAPE(r, 4, 5);
        ASSERT_EQ(r->dtype, dt);
        double ex[20];
        ref_addmm(input, a, b, be, al, 1, ex);
        ASSERT_TENSOR_CLOSE(r, ex, tol_of(dt), tol_of(dt));
        em_tensor_release(input), em_tensor_release(a0), em_tensor_release(a);
        em_tensor_release(b), em_tensor_release(r);
      }
}

EM_TEST(addmm_beta_zero_ignores_nan_alpha_zero_ignores_product) {
  em_tensor *nan = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(NAN), EM_FLOAT32);
  em_tensor *one = em_tensor_ones(EM_DIMS(2, 2), EM_FLOAT32);
  em_tensor *three = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(3), EM_FLOAT32);
  em_tensor *r = em_tensor_addmm(nan, one, one, 0, 1);
  ASSERT_TENSOR_CLOSE(r, ((double[]){2, 2, 2, 2}), 0, 0);
  em_tensor *r2 = em_tensor_addmm(three, nan, one, 1, 0); /* PyTorch gives 3 */
  ASSERT_TENSOR_CLOSE(r2, ((double[]){3, 3, 3, 3}), 0, 0);
  em_tensor *h = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(NAN), EM_FLOAT16);
  em_tensor *h1 = em_tensor_ones(EM_DIMS(2, 2), EM_FLOAT16);
  em_tensor *r3 = em_tensor_addmm(h, h1, h1, 0, 3);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){6, 6, 6, 6}), 0, 0);
  /* k = 0: beta * input, with NaN input and beta 0: zeros */
  em_tensor *e1 = em_tensor_ones(EM_DIMS(2, 0), EM_FLOAT64),
            *e2 = em_tensor_ones(EM_DIMS(0, 2), EM_FLOAT64);
  em_tensor *t3 = em_tensor_full(EM_DIMS(2), em_scalar_float(3), EM_FLOAT64);
  em_tensor *n64 = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(NAN), EM_FLOAT64);
  em_tensor *r4 = em_tensor_addmm(t3, e1, e2, 2, 1);
  ASSERT_TENSOR_CLOSE(r4, ((double[]){6, 6, 6, 6}), 0, 0);
  em_tensor *r5 = em_tensor_addmm(n64, e1, e2, 0, 1);
  ASSERT_TENSOR_CLOSE(r5, ((double[]){0, 0, 0, 0}), 0, 0);
  /* integer beta 0.5 truncates to 0: input ignored (PyTorch: 6) */
  em_tensor *i3 = em_tensor_full(EM_DIMS(2, 2), em_scalar_int(3), EM_INT64);
  em_tensor *i1 = em_tensor_ones(EM_DIMS(2, 2), EM_INT64);
  em_tensor *r6 = em_tensor_addmm(i3, i3, i1, 0.5, 1);
  ASSERT_TENSOR_CLOSE(r6, ((double[]){6, 6, 6, 6}), 0, 0);
  em_tensor *r7 = em_tensor_addmm(i3, i3, i1, 1.5, 2.5); /* 1*3 + 2*6 */
  ASSERT_TENSOR_CLOSE(r7, ((double[]){15, 15, 15, 15}), 0, 0);
  em_tensor_release(nan), em_tensor_release(one), em_tensor_release(three);
  em_tensor_release(r), em_tensor_release(r2), em_tensor_release(h), em_tensor_release(h1);
  em_tensor_release(r3), em_tensor_release(e1), em_tensor_release(e2), em_tensor_release(t3);
  em_tensor_release(n64), em_tensor_release(r4), em_tensor_release(r5), em_tensor_release(i3);
  em_tensor_release(i1), em_tensor_release(r6), em_tensor_release(r7);
}

EM_TEST(baddbmm_values_and_broadcast) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_BFLOAT16, EM_INT16};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (int s = 0; s < 4; s++) {
      em_dtype dt = dts[d];
      em_tensor *input = s == 0   ? mk(dt, 3, (int64_t[]){2, 3, 4}, 1)
                         : s == 1 ? mk(dt, 1, (int64_t[]){4}, 2)
                         : s == 2 ? mk(dt, 3, (int64_t[]){2, 1, 4}, 3)
                                  : mk(dt, 2, (int64_t[]){3, 1}, 4);
      em_tensor *a = mk(dt, 3, (int64_t[]){2, 3, 5}, 5);
      em_tensor *b0 = mk(dt, 3, (int64_t[]){2, 4, 5}, 6);
      em_tensor *b = em_tensor_transpose(b0, 1, 2); /* [2, 5, 4] */
      double beta = s == 3 ? 0 : 2, alpha = s == 1 ? -1 : 3;
      em_tensor *r = em_tensor_baddbmm(input, a, b, beta, alpha);
      ASSERT_SHAPE(r, 2, 3, 4);
      double ex[24];
      ref_addmm(input, a, b, beta, alpha, 2, ex);
      ASSERT_TENSOR_CLOSE(r, ex, tol_of(dt), tol_of(dt));
      em_tensor_release(input), em_tensor_release(a), em_tensor_release(b0);
      em_tensor_release(b), em_tensor_release(r);
    }
  /* k = 0 */
  em_tensor *in = em_tensor_full(EM_DIMS(1), em_scalar_float(3), EM_FLOAT32);
  em_tensor *a = em_tensor_ones(EM_DIMS(2, 1, 0), EM_FLOAT32),
            *b = em_tensor_ones(EM_DIMS(2, 0, 2), EM_FLOAT32);
  em_tensor *r = em_tensor_baddbmm(in, a, b, 0.5, 1);
  ASSERT_SHAPE(r, 2, 1, 2);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1.5, 1.5, 1.5, 1.5}), 0, 0);
  em_tensor_release(in), em_tensor_release(a), em_tensor_release(b), em_tensor_release(r);
}

/* ---- errors ---------------------------------------------------------------------------------- */

EM_TEST(errors_mm_bmm_mv_dot_outer) {
  em_tensor *m34 = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *m56 = em_tensor_zeros(EM_DIMS(5, 6), EM_FLOAT32);
  em_tensor *d46 = em_tensor_zeros(EM_DIMS(4, 6), EM_FLOAT64);
  em_tensor *v3 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *v4 = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  em_tensor *v4d = em_tensor_zeros(EM_DIMS(4), EM_FLOAT64);
  em_tensor *v5 = em_tensor_zeros(EM_DIMS(5), EM_FLOAT32);
  em_tensor *b234 = em_tensor_zeros(EM_DIMS(2, 3, 4), EM_FLOAT32);
  em_tensor *b256 = em_tensor_zeros(EM_DIMS(2, 5, 6), EM_FLOAT32);
  em_tensor *b346 = em_tensor_zeros(EM_DIMS(3, 4, 6), EM_FLOAT32);
  em_tensor *b246d = em_tensor_zeros(EM_DIMS(2, 4, 6), EM_FLOAT64);
  em_tensor *bool22 = em_tensor_zeros(EM_DIMS(2, 2), EM_BOOL);
  em_tensor *s = em_tensor_zeros(0, NULL, EM_FLOAT32);

  ASSERT_NULL_ERR(em_tensor_mm(m34, m56), EM_ERR_SHAPE,
                  "mm: mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)");
  ASSERT_NULL_ERR(em_tensor_mm(v3, m56), EM_ERR_SHAPE, "mm: self must be a matrix, got 1-D tensor");
  ASSERT_NULL_ERR(em_tensor_mm(m34, v4), EM_ERR_SHAPE, "mm: mat2 must be a matrix, got 1-D tensor");
  ASSERT_NULL_ERR(em_tensor_mm(m34, d46), EM_ERR_DTYPE,
                  "mm: expected scalar type Float but found Double");
  ASSERT_NULL_ERR(em_tensor_mm(bool22, bool22), EM_ERR_DTYPE, "not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_mm(NULL, m34), EM_ERR_INVALID, "mm: NULL tensor");

  ASSERT_NULL_ERR(em_tensor_bmm(b234, b256), EM_ERR_SHAPE,
                  "bmm: Expected size for first two dimensions of batch2 tensor to be: [2, 4] but "
                  "got: [2, 5].");
  ASSERT_NULL_ERR(em_tensor_bmm(b234, b346), EM_ERR_SHAPE,
                  "bmm: Expected size for first two dimensions of batch2 tensor to be: [2, 4] but "
                  "got: [3, 4].");
  ASSERT_NULL_ERR(em_tensor_bmm(m34, b346), EM_ERR_SHAPE,
                  "bmm: batch1 must be a 3D tensor, got 2-D");
  ASSERT_NULL_ERR(em_tensor_bmm(b234, d46), EM_ERR_SHAPE,
                  "bmm: batch2 must be a 3D tensor, got 2-D");
  ASSERT_NULL_ERR(em_tensor_bmm(b234, b246d), EM_ERR_DTYPE,
                  "bmm: expected scalar type Float but found Double");

  ASSERT_NULL_ERR(em_tensor_mv(m34, v5), EM_ERR_SHAPE,
                  "mv: size mismatch, got mat (3x4) and vec (5)");
  ASSERT_NULL_ERR(em_tensor_mv(v3, v5), EM_ERR_SHAPE,
                  "mv: expected a 2-D matrix and a 1-D vector, but got 1-D and 1-D tensors");
  ASSERT_NULL_ERR(em_tensor_mv(m34, m34), EM_ERR_SHAPE, "got 2-D and 2-D tensors");
  ASSERT_NULL_ERR(em_tensor_mv(m34, v4d), EM_ERR_DTYPE,
                  "mv: expected scalar type Float but found Double");

  ASSERT_NULL_ERR(em_tensor_dot(v3, v4), EM_ERR_SHAPE,
                  "dot: inconsistent tensor size, expected tensor [3] and src [4] to have the same "
                  "number of elements, but got 3 and 4 elements respectively");
  ASSERT_NULL_ERR(em_tensor_dot(m34, v4), EM_ERR_SHAPE,
                  "dot: 1D tensors expected, but got 2D and 1D tensors");
  ASSERT_NULL_ERR(em_tensor_dot(v4, s), EM_ERR_SHAPE,
                  "dot: 1D tensors expected, but got 1D and 0D tensors");
  ASSERT_NULL_ERR(em_tensor_dot(v4, v4d), EM_ERR_DTYPE,
                  "dot: expected both vectors to have same dtype, but found Float and Double");

  ASSERT_NULL_ERR(em_tensor_outer(v3, m34), EM_ERR_SHAPE,
                  "outer: Expected 1-D argument vec2, but got 2-D");
  ASSERT_NULL_ERR(em_tensor_outer(s, v3), EM_ERR_SHAPE,
                  "outer: Expected 1-D argument self, but got 0-D");
  ASSERT_NULL_ERR(em_tensor_outer(v3, NULL), EM_ERR_INVALID, "outer: NULL tensor");

  em_tensor_release(m34), em_tensor_release(m56), em_tensor_release(d46), em_tensor_release(v3);
  em_tensor_release(v4), em_tensor_release(v4d), em_tensor_release(v5), em_tensor_release(b234);
  em_tensor_release(b256), em_tensor_release(b346), em_tensor_release(b246d);
  em_tensor_release(bool22), em_tensor_release(s);
}

EM_TEST(errors_addmm_baddbmm) {
  em_tensor *m34 = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *m46 = em_tensor_zeros(EM_DIMS(4, 6), EM_FLOAT32);
  em_tensor *m56 = em_tensor_zeros(EM_DIMS(5, 6), EM_FLOAT32);
  em_tensor *m36 = em_tensor_zeros(EM_DIMS(3, 6), EM_FLOAT32);
  em_tensor *m26 = em_tensor_zeros(EM_DIMS(2, 6), EM_FLOAT32);
  em_tensor *v3 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *d36 = em_tensor_zeros(EM_DIMS(3, 6), EM_FLOAT64);
  em_tensor *d46 = em_tensor_zeros(EM_DIMS(4, 6), EM_FLOAT64);
  em_tensor *t363 = em_tensor_zeros(EM_DIMS(3, 6, 3), EM_FLOAT32);
  em_tensor *bl = em_tensor_zeros(EM_DIMS(2, 2), EM_BOOL);
  em_tensor *b234 = em_tensor_zeros(EM_DIMS(2, 3, 4), EM_FLOAT32);
  em_tensor *b246 = em_tensor_zeros(EM_DIMS(2, 4, 6), EM_FLOAT32);
  em_tensor *b256 = em_tensor_zeros(EM_DIMS(2, 5, 6), EM_FLOAT32);
  em_tensor *b336 = em_tensor_zeros(EM_DIMS(3, 3, 6), EM_FLOAT32);
  em_tensor *b236d = em_tensor_zeros(EM_DIMS(2, 3, 6), EM_FLOAT64);

  ASSERT_NULL_ERR(em_tensor_addmm(m36, m34, m56, 1, 1), EM_ERR_SHAPE,
                  "addmm: mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)");
  ASSERT_NULL_ERR(em_tensor_addmm(m36, v3, m46, 1, 1), EM_ERR_SHAPE,
                  "addmm: mat1 must be a matrix, got 1-D tensor");
  ASSERT_NULL_ERR(em_tensor_addmm(m36, m34, v3, 1, 1), EM_ERR_SHAPE,
                  "addmm: mat2 must be a matrix, got 1-D tensor");
  ASSERT_NULL_ERR(em_tensor_addmm(m26, m34, m46, 1, 1), EM_ERR_SHAPE,
                  "addmm: The expanded size of the tensor (3) must match the existing size (2) at "
                  "non-singleton dimension 0.  Target sizes: [3, 6].  Tensor sizes: [2, 6]");
  ASSERT_NULL_ERR(em_tensor_addmm(v3, m34, m46, 1, 1), EM_ERR_SHAPE,
                  "The expanded size of the tensor (6) must match the existing size (3) at "
                  "non-singleton dimension 1");
  ASSERT_NULL_ERR(em_tensor_addmm(t363, m34, m46, 1, 1), EM_ERR_SHAPE,
                  "addmm: the number of sizes provided (2) must be greater or equal to the number "
                  "of dimensions in the tensor (3)");
  ASSERT_NULL_ERR(em_tensor_addmm(d36, m34, m46, 1, 1), EM_ERR_DTYPE,
                  "addmm: self and mat2 must have the same dtype, but got Double and Float");
  ASSERT_NULL_ERR(em_tensor_addmm(m36, m34, d46, 1, 1), EM_ERR_DTYPE,
                  "addmm: mat1 and mat2 must have the same dtype, but got Float and Double");
  ASSERT_NULL_ERR(em_tensor_addmm(bl, bl, bl, 1, 1), EM_ERR_DTYPE,
                  "addmm: \"addmm\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_addmm(NULL, m34, m46, 1, 1), EM_ERR_INVALID, "addmm: NULL tensor");

  ASSERT_NULL_ERR(em_tensor_baddbmm(b234, b234, b256, 1, 1), EM_ERR_SHAPE,
                  "baddbmm: Expected size for first two dimensions of batch2 tensor to be: [2, 4] "
                  "but got: [2, 5].");
  ASSERT_NULL_ERR(
      em_tensor_baddbmm(b336, b234, b246, 1, 1), EM_ERR_SHAPE,
      "baddbmm: The expanded size of the tensor (2) must match the existing size (3) at "
      "non-singleton dimension 0.  Target sizes: [2, 3, 6].  Tensor sizes: [3, 3, 6]");
  ASSERT_NULL_ERR(em_tensor_baddbmm(b234, m34, b246, 1, 1), EM_ERR_SHAPE,
                  "baddbmm: batch1 must be a 3D tensor");
  ASSERT_NULL_ERR(em_tensor_baddbmm(b236d, b234, b246, 1, 1), EM_ERR_DTYPE,
                  "baddbmm: self and batch2 must have the same dtype, but got Double and Float");
  ASSERT_NULL_ERR(em_tensor_baddbmm(m36, b234, b236d, 1, 1), EM_ERR_SHAPE,
                  "baddbmm: Expected size for first two dimensions of batch2 tensor to be: [2, 4] "
                  "but got: [2, 3].");

  em_tensor_release(m34), em_tensor_release(m46), em_tensor_release(m56), em_tensor_release(m36);
  em_tensor_release(m26), em_tensor_release(v3), em_tensor_release(d36), em_tensor_release(d46);
  em_tensor_release(t363), em_tensor_release(bl), em_tensor_release(b234), em_tensor_release(b246);
  em_tensor_release(b256), em_tensor_release(b336), em_tensor_release(b236d);
}

EM_TEST(errors_matmul) {
  em_tensor *s = em_tensor_zeros(0, NULL, EM_FLOAT32);
  em_tensor *v4 = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  em_tensor *m34 = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *m56 = em_tensor_zeros(EM_DIMS(5, 6), EM_FLOAT32);
  em_tensor *v5 = em_tensor_zeros(EM_DIMS(5), EM_FLOAT32);
  em_tensor *d46 = em_tensor_zeros(EM_DIMS(4, 6), EM_FLOAT64);
  em_tensor *b234 = em_tensor_zeros(EM_DIMS(2, 3, 4), EM_FLOAT32);
  em_tensor *b346 = em_tensor_zeros(EM_DIMS(3, 4, 6), EM_FLOAT32);
  em_tensor *i34 = em_tensor_zeros(EM_DIMS(3, 4), EM_INT32);
  em_tensor *i46 = em_tensor_zeros(EM_DIMS(4, 6), EM_INT64);
  em_tensor *bl = em_tensor_zeros(EM_DIMS(2, 2), EM_BOOL);

  ASSERT_NULL_ERR(
      em_tensor_matmul(s, v4), EM_ERR_SHAPE,
      "matmul: both arguments to matmul need to be at least 1D, but they are 0D and 1D");
  ASSERT_NULL_ERR(em_tensor_matmul(v4, s), EM_ERR_SHAPE, "but they are 1D and 0D");
  ASSERT_NULL_ERR(em_tensor_matmul(m34, m56), EM_ERR_SHAPE,
                  "matmul: shapes [3, 4] and [5, 6] cannot be multiplied (4 != 5)");
  ASSERT_NULL_ERR(em_tensor_matmul(m34, v5), EM_ERR_SHAPE,
                  "matmul: shapes [3, 4] and [5] cannot be multiplied (4 != 5)");
  ASSERT_NULL_ERR(em_tensor_matmul(v5, m34), EM_ERR_SHAPE, "(5 != 3)");
  ASSERT_NULL_ERR(em_tensor_matmul(v4, v5), EM_ERR_SHAPE,
                  "matmul: shapes [4] and [5] cannot be multiplied");
  ASSERT_NULL_ERR(em_tensor_matmul(m34, d46), EM_ERR_DTYPE,
                  "matmul: expected scalar type Float but found Double");
  ASSERT_NULL_ERR(em_tensor_matmul(i34, i46), EM_ERR_DTYPE,
                  "matmul: expected scalar type Int but found Long");
  ASSERT_NULL_ERR(em_tensor_matmul(bl, bl), EM_ERR_DTYPE,
                  "matmul: \"matmul\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_matmul(b234, b346), EM_ERR_SHAPE,
                  "matmul: the size of tensor a (2) must match the size of tensor b (3) at "
                  "non-singleton dimension");
  ASSERT_NULL_ERR(em_tensor_matmul(b234, NULL), EM_ERR_INVALID, "matmul: NULL tensor");

  em_tensor_release(s), em_tensor_release(v4), em_tensor_release(m34), em_tensor_release(m56);
  em_tensor_release(v5), em_tensor_release(d46), em_tensor_release(b234), em_tensor_release(b346);
  em_tensor_release(i34), em_tensor_release(i46), em_tensor_release(bl);
}

/* ember relies on BLAS's beta == 0 meaning "C is not read" (fresh outputs
 * are uninitialised): NaN there must not leak. Also a released NaN buffer
 * of the same size is likely reused by the next result. */
EM_TEST(beta_zero_never_reads_output) {
  float a[4] = {1, 2, 3, 4}, c[4] = {NAN, NAN, NAN, NAN};
  double ad[4] = {1, 2, 3, 4}, cd[4] = {NAN, NAN, NAN, NAN};
  em__sgemm(false, false, 2, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2);
  em__dgemm(false, true, 2, 2, 2, 1.0, ad, 2, ad, 2, 0.0, cd, 2);
  ASSERT_TRUE(c[0] == 7 && c[1] == 10 && c[2] == 15 && c[3] == 22);
  ASSERT_TRUE(cd[0] == 5 && cd[1] == 11 && cd[2] == 11 && cd[3] == 25);
  for (int i = 0; i < 20; i++) {
    em_tensor *n = em_tensor_full(EM_DIMS(64, 64), em_scalar_float(NAN), EM_FLOAT32);
    em_tensor_release(n);
    em_tensor *x = em_tensor_ones(EM_DIMS(64, 8), EM_FLOAT32),
              *y = em_tensor_ones(EM_DIMS(8, 64), EM_FLOAT32);
    em_tensor *r = em_tensor_mm(x, y);
    ASSERT_NOTNULL(r);
    const float *p = em_tensor_data(r);
    for (int j = 0; j < 64 * 64; j++) ASSERT_TRUE(p[j] == 8);
    em_tensor_release(x), em_tensor_release(y), em_tensor_release(r);
  }
}

/* The thread count does not change results (row split of the kernels). */
EM_TEST(thread_count_independent) {
  int old = em_get_num_threads();
  em_tensor *a = mk(EM_INT32, 2, (int64_t[]){200, 64}, 1),
            *b = mk(EM_INT32, 2, (int64_t[]){64, 50}, 2);
  em_set_num_threads(1);
  em_tensor *r1 = em_tensor_mm(a, b);
  em_set_num_threads(2);
  em_tensor *r2 = em_tensor_mm(a, b);
  em_set_num_threads(old);
  ASSERT_NOTNULL(r1);
  ASSERT_NOTNULL(r2);
  ASSERT_TRUE(memcmp(em_tensor_data(r1), em_tensor_data(r2), 200 * 50 * sizeof(int32_t)) == 0);
  CHECK_MATMUL(r2, a, b, EM_INT32);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(r1), em_tensor_release(r2);
}

/* ---- fork while another thread multiplies ------------------------------------------------- */

static atomic_bool mul_stop;

static void *keep_multiplying(void *arg) {
  em_tensor *a = arg;
  while (!atomic_load(&mul_stop)) em_tensor_release(em_tensor_matmul(a, a));
  return NULL;
}

/* c == a @ a for square a of n x n floats, against a double loop. */
static bool square_ok(em_tensor *a, em_tensor *c, int n) {
  if (!c) return false;
  const float *x = em_tensor_data(a), *y = em_tensor_data(c);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double acc = 0;
      for (int k = 0; k < n; k++) acc += (double)x[i * n + k] * x[k * n + j];
      if (fabs(acc - y[i * n + j]) > 1e-4 * (1 + fabs(acc))) return false;
    }
  return true;
}

/* A DataLoader or Hogwild fork while another thread is inside a GEMM
 * (OpenBLAS stops its thread pool on fork): neither the parent's GEMM nor
 * the child's may hang or crash, from the very first GEMM (the thread's,
 * which loads BLAS) on. SIGALRM ends a hang as a failure. */
EM_TEST(fork_while_another_thread_multiplies) {
  enum { N = 160 };
  em_set_num_threads(2);
  em_tensor *a = em_tensor_randn(EM_DIMS(N, N), EM_FLOAT32, NULL);
  atomic_store(&mul_stop, false);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, keep_multiplying, a), 0);
  alarm(120);
  int bad = 0;
  for (int r = 0; r < 25; r++) {
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
      alarm(20);
      _exit(square_ok(a, em_tensor_matmul(a, a), N) ? 0 : 1);
    }
    int st;
    waitpid(p, &st, 0);
    bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
  }
  atomic_store(&mul_stop, true);
  pthread_join(th, NULL);
  alarm(0);
  ASSERT_EQ(bad, 0);
  em_tensor *c = em_tensor_matmul(a, a);
  ASSERT_TRUE(square_ok(a, c, N));
  em_tensor_release(c), em_tensor_release(a);
}

EM_TEST_MAIN()
