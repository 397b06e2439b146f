/* Ternary elementwise ops (where, lerp, addcmul, addcdiv) against
 * references computed here, for every supported dtype, on contiguous,
 * transposed, step-sliced, expanded and broadcast operands, 0-dim and
 * zero-size tensors; promotion; in-place forms; errors with messages. */
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

static em_tensor *mk(em_dtype dt, int ndim, const int64_t *shape, const double *vals) {
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  for (int64_t i = 0; i < t->numel; i++)
    em__store_f64((char *)em__data_ptr(t) + i * (int64_t)em_dtype_size(dt), dt, vals[i]);
  return t;
}

static double round_to(double v, em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return (float)v;
    case EM_FLOAT16: return em_half_to_float(em_float_to_half((float)v));
    case EM_BFLOAT16: return em_bf16_to_float(em_float_to_bf16((float)v));
    case EM_INT8: return (int8_t)(int64_t)v;
    case EM_INT16: return (int16_t)(int64_t)v;
    case EM_INT32: return (int32_t)(int64_t)v;
    case EM_UINT8: return (uint8_t)(int64_t)v;
    case EM_BOOL: return v != 0;
    default: return v;
  }
}
/* rtol relative to the result and to the operands' magnitude (scale):
 * a + w (b - a) and a + v x y may cancel. */
static bool close_to(double got, double want, double rtol, double scale) {
  if (isnan(want)) return isnan(got);
  return got == want || fabs(got - want) <= rtol * (fabs(want) + scale);
}
static double rtol_for(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return 5e-7;
    case EM_FLOAT64: return 1e-15;
    case EM_FLOAT16: return 1.2e-3;
    case EM_BFLOAT16: return 8e-3;
    default: return 0;
  }
}

enum { L_CONTIG, L_TRANSPOSED, L_SLICED, L_EXPANDED, L_ROW, L_COL, L_SCALAR, L_EMPTY, NL };
static const char *const LNAME[NL] = {"contiguous", "transposed", "sliced", "expanded",
                                      "row [6]", "column [4,1]", "0-dim", "zero-size"};

static void layouts(em_dtype dt, const double *vals, em_tensor **v) {
  v[L_CONTIG] = mk(dt, 2, (int64_t[]){4, 6}, vals);
  double tv[48];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 6; j++) tv[j * 4 + i] = vals[i * 6 + j];
  em_tensor *b = mk(dt, 2, (int64_t[]){6, 4}, tv);
  v[L_TRANSPOSED] = em_tensor_t(b);
  em_tensor_release(b);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 6; j++) tv[i * 12 + 2 * j] = vals[i * 6 + j], tv[i * 12 + 2 * j + 1] = 3;
  b = mk(dt, 2, (int64_t[]){4, 12}, tv);
  v[L_SLICED] = em_tensor_slice(b, 1, 0, INT64_MAX, 2);
  em_tensor_release(b);
  b = mk(dt, 2, (int64_t[]){1, 6}, vals + 6);
  v[L_EXPANDED] = em_tensor_expand(b, 2, (int64_t[]){4, 6});
  em_tensor_release(b);
  v[L_ROW] = mk(dt, 1, (int64_t[]){6}, vals + 12);
  v[L_COL] = mk(dt, 2, (int64_t[]){4, 1}, vals + 18);
  v[L_SCALAR] = mk(dt, 0, NULL, vals + 5);
  v[L_EMPTY] = mk(dt, 2, (int64_t[]){0, 6}, vals);
}

static const int TRIPLES[][3] = {
    {L_CONTIG, L_CONTIG, L_CONTIG},     {L_TRANSPOSED, L_SLICED, L_EXPANDED},
    {L_SLICED, L_TRANSPOSED, L_CONTIG}, {L_CONTIG, L_ROW, L_COL},
    {L_COL, L_ROW, L_SCALAR},           {L_SCALAR, L_CONTIG, L_ROW},
    {L_SCALAR, L_SCALAR, L_SCALAR},     {L_EMPTY, L_ROW, L_SCALAR},
    {L_EXPANDED, L_TRANSPOSED, L_SLICED},
};

typedef em_tensor *(*tfn)(em_tensor *, em_tensor *, em_tensor *, void *ctx);
typedef double (*tref)(double x, double y, double z, void *ctx);

/* r = fn(x, y, z) for each triple of layouts; x, y, z hold va/vb/vc in
 * dtypes da/db/dc, computed in ct (inputs rounded to it), result out_dt. */
static int check_ternary(const char *what, tfn fn, tref ref, void *ctx, em_dtype da,
                         em_dtype db, em_dtype dc, em_dtype ct, em_dtype out_dt,
                         const double *va, const double *vb, const double *vc) {
  em_tensor *A[NL], *B[NL], *Cc[NL];
  layouts(da, va, A), layouts(db, vb, B), layouts(dc, vc, Cc);
  int ok = 1;
  bool mixed = da != db || db != dc || da != dc;
  for (size_t p = 0; ok && p < sizeof TRIPLES / sizeof TRIPLES[0]; p++) {
    /* 0-dim operands of another dtype promote less: covered by hand */
    if (mixed &&
        (TRIPLES[p][0] == L_SCALAR || TRIPLES[p][1] == L_SCALAR || TRIPLES[p][2] == L_SCALAR))
      continue;
    em_tensor *x = A[TRIPLES[p][0]], *y = B[TRIPLES[p][1]], *z = Cc[TRIPLES[p][2]];
    em_tensor *r = fn(x, y, z, ctx);
    if (!r) {
      fprintf(stderr, "  %s(%s, %s, %s): %s\n", what, LNAME[TRIPLES[p][0]],
              LNAME[TRIPLES[p][1]], LNAME[TRIPLES[p][2]], em_last_error());
      ok = 0;
      break;
    }
    if (r->dtype != out_dt) {
      fprintf(stderr, "  %s: dtype %s, expected %s\n", what, em_dtype_name((em_dtype)r->dtype),
              em_dtype_name(out_dt));
      ok = 0;
    }
    em_tensor *xe = em_tensor_expand(x, r->ndim, r->shape);
    em_tensor *ye = em_tensor_expand(y, r->ndim, r->shape);
    em_tensor *ze = em_tensor_expand(z, r->ndim, r->shape);
    if (!xe || !ye || !ze) {
      fprintf(stderr, "  %s: result shape %s is not the broadcast shape\n", what, em__tshape(r));
      ok = 0;
    }
    for (int64_t i = 0; ok && i < r->numel; i++) {
      double a = em_test_get(xe, i), b = em_test_get(ye, i), c = em_test_get(ze, i);
      if (ct != EM_DTYPE_UNDEFINED) a = round_to(a, ct), b = round_to(b, ct), c = round_to(c, ct);
      double want = round_to(ref(a, b, c, ctx), out_dt), got = em_test_get(r, i);
      double scale = fabs(a) + fabs(b) + fabs(c);
      if (!close_to(got, want, rtol_for(out_dt), out_dt == EM_FLOAT64 ? 4 * scale : 0)) {
        fprintf(stderr, "  %s(%s, %s, %s) %s element %lld: f(%.9g, %.9g, %.9g) = %.17g, "
                "expected %.17g\n", what, LNAME[TRIPLES[p][0]], LNAME[TRIPLES[p][1]],
                LNAME[TRIPLES[p][2]], em_dtype_name(out_dt), (long long)i, a, b, c, got, want);
        ok = 0;
      }
    }
    em_tensor_release(xe), em_tensor_release(ye), em_tensor_release(ze), em_tensor_release(r);
  }
  for (int k = 0; k < NL; k++)
    em_tensor_release(A[k]), em_tensor_release(B[k]), em_tensor_release(Cc[k]);
  return ok;
}

static const em_dtype FLOATS[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
static const em_dtype INTS[] = {EM_INT8, EM_INT16, EM_INT32, EM_INT64, EM_UINT8};
static const em_dtype ALL[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8,
                               EM_INT16,   EM_INT32,   EM_INT64,   EM_UINT8,    EM_BOOL};

static const double VA[24] = {-7.5, -3, -2, -1, -0.5, 0,    0.5, 1,  2,   3,    7.5, 10,
                              1.25, -4, 6,  9,  -6.5, 0.25, 5,   -5, 4.5, -1.5, 2.5, 12};
static const double VB[24] = {2,  -2, 0.5, 3,   -0.25, 4,  1.5, -1, 0.125, 2.5, -3,  8,
                              -5, 6,  7,   0.75, 2,    -4, 1,   3,  -2.5,  0.5, 10, -0.5};
static const double VI[24] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                              13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
static const double VJ[24] = {5, 3, 1, 2, 7, 1, 2, 4, 6, 8, 9, 3,
                              2, 1, 5, 7, 3, 2, 4, 6, 1, 1, 2, 3};
static const double COND[24] = {1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0,
                                0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1};
/* lerp weights: both sides of 0.5, outside [0, 1] */
static const double VW[24] = {0, 0.25, 0.5, 0.75, 1, -0.5, 1.5, 0.1, 0.9, 0.49, 0.51, 2,
                              0.3, 0.7, 0.05, 0.95, -1, 0.6, 0.4, 0.2, 0.8, 1, 0, 0.5};

/* ---- where -------------------------------------------------------------------------- */

static em_tensor *f_where(em_tensor *c, em_tensor *a, em_tensor *b, void *ctx) {
  return em_tensor_where(c, a, b);
}
static double r_where(double c, double a, double b, void *ctx) { return c != 0 ? a : b; }

EM_TEST(where_all_dtypes_and_layouts) {
  for (size_t d = 0; d < 10; d++) {
    ASSERT_TRUE(check_ternary("where", f_where, r_where, NULL, EM_BOOL, ALL[d], ALL[d],
                              EM_DTYPE_UNDEFINED, ALL[d], COND, ALL[d] == EM_UINT8 ? VI : VA,
                              ALL[d] == EM_UINT8 ? VJ : VB));
  }
  /* a uint8 condition: any non-zero byte selects a */
  static const double u8c[24] = {2, 0, 255, 1, 7, 0, 1, 9, 0, 0, 1, 0,
                                 0, 3, 0, 1, 1, 0, 0, 0, 128, 1, 0, 1};
  ASSERT_TRUE(check_ternary("where", f_where, r_where, NULL, EM_UINT8, EM_FLOAT32, EM_FLOAT32,
                            EM_DTYPE_UNDEFINED, EM_FLOAT32, u8c, VA, VB));
}

EM_TEST(where_promotion_and_errors) {
  /* a and b promote; the condition takes no part */
  ASSERT_TRUE(check_ternary("where", f_where, r_where, NULL, EM_BOOL, EM_INT32, EM_FLOAT32,
                            EM_FLOAT32, EM_FLOAT32, COND, VI, VB));
  ASSERT_TRUE(check_ternary("where", f_where, r_where, NULL, EM_BOOL, EM_INT32, EM_INT64,
                            EM_INT64, EM_INT64, COND, VI, VJ));
  ASSERT_TRUE(check_ternary("where", f_where, r_where, NULL, EM_BOOL, EM_FLOAT16, EM_BFLOAT16,
                            EM_FLOAT32, EM_FLOAT32, COND, VA, VB));
  em_tensor *c = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  em_tensor *i = mk(EM_INT32, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *d0 = mk(EM_FLOAT64, 0, NULL, (double[]){2.5});
  em_tensor *r = em_tensor_where(c, i, d0); /* as PyTorch: float64 */
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 2.5}), 0, 0);
  em_tensor_release(r);
  em_tensor *c0 = mk(EM_BOOL, 0, NULL, (double[]){1});
  em_tensor *f0 = mk(EM_FLOAT32, 0, NULL, (double[]){2});
  em_tensor *g0 = mk(EM_FLOAT32, 0, NULL, (double[]){3});
  r = em_tensor_where(c0, f0, g0);
  ASSERT_SCALAR_SHAPE(r);
  ASSERT_CLOSE(em_tensor_item_double(r), 2, 0, 0);
  em_tensor_release(r);
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1, 0});
  ASSERT_NULL_ERR(em_tensor_where(f, i, i), EM_ERR_DTYPE,
                  "where: where expected condition to be a boolean tensor, but got a tensor "
                  "with dtype Float");
  ASSERT_NULL_ERR(em_tensor_where(i, f, f), EM_ERR_DTYPE, "but got a tensor with dtype Int");
  em_tensor *c3 = mk(EM_BOOL, 1, (int64_t[]){3}, (double[]){1, 0, 1});
  ASSERT_NULL_ERR(em_tensor_where(c3, f, f0), EM_ERR_SHAPE,
                  "where: the size of tensor a (3) must match the size of tensor b (2)");
  ASSERT_NULL_ERR(em_tensor_where(NULL, f, f), EM_ERR_INVALID, "where: NULL tensor");
  em_tensor_release(c), em_tensor_release(i), em_tensor_release(d0), em_tensor_release(c0);
  em_tensor_release(f0), em_tensor_release(g0), em_tensor_release(f), em_tensor_release(c3);
}

/* ---- lerp --------------------------------------------------------------------------- */

/* the exact a + w (b - a), in double */
static double r_lerp(double a, double b, double w, void *ctx) { return a + w * (b - a); }
static em_tensor *f_lerp(em_tensor *a, em_tensor *b, em_tensor *w, void *ctx) {
  return em_tensor_lerp(a, b, w);
}
static double r_lerp_s(double a, double b, double unused, void *ctx) {
  return a + *(double *)ctx * (b - a);
}
static em_tensor *f_lerp_s(em_tensor *a, em_tensor *b, em_tensor *unused, void *ctx) {
  return em_tensor_lerp_scalar(a, b, *(double *)ctx);
}

EM_TEST(lerp_all_float_dtypes_and_layouts) {
  for (size_t d = 0; d < 4; d++) {
    /* f16/bf16 inputs round before the reference sees them */
    ASSERT_TRUE(check_ternary("lerp", f_lerp, r_lerp, NULL, FLOATS[d], FLOATS[d], FLOATS[d],
                              FLOATS[d], FLOATS[d], VA, VB, VW));
    static const double ws[] = {0, 0.25, 0.5, 0.75, 1, -0.5, 1.75};
    for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) {
      double w = ws[k];
      ASSERT_TRUE(check_ternary("lerp_scalar", f_lerp_s, r_lerp_s, &w, FLOATS[d], FLOATS[d],
                                FLOATS[d], FLOATS[d], FLOATS[d], VA, VB, VW));
    }
  }
  /* the weight >= 0.5 side is exact at w = 1 */
  em_tensor *a = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1e8, 0.1});
  em_tensor *b = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1, 3});
  em_tensor *r = em_tensor_lerp_scalar(a, b, 1);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 3}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_lerp_scalar(a, b, 0);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1e8, (float)0.1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(a), em_tensor_release(b);
}

EM_TEST(lerp_inplace_and_errors) {
  em_tensor *a = mk(EM_FLOAT32, 2, (int64_t[]){2, 2}, (double[]){1, 2, 0, 0});
  em_tensor *b = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){3, 6});
  ASSERT_OK(em_tensor_lerp_(a, b, 0.5));
  ASSERT_TENSOR_CLOSE(a, ((double[]){2, 4, 1.5, 3}), 0, 0);
  em_tensor *at = em_tensor_t(a); /* through a transposed view */
  ASSERT_OK(em_tensor_lerp_(at, b, 0.25));
  ASSERT_TENSOR_CLOSE(at, ((double[]){2.25, 2.625, 3.75, 3.75}), 0, 0);
  ASSERT_TENSOR_CLOSE(a, ((double[]){2.25, 3.75, 2.625, 3.75}), 0, 0);
  em_tensor_release(at);
  em_tensor *a1 = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *b2 = mk(EM_FLOAT32, 2, (int64_t[]){2, 2}, (double[]){3, 6, 1, 1});
  ASSERT_ERR(em_tensor_lerp_(a1, b2, 0.5), EM_ERR_SHAPE,
             "lerp_: output with shape [2] doesn't match the broadcast shape [2, 2]");
  em_tensor *d = mk(EM_FLOAT64, 1, (int64_t[]){2}, (double[]){3, 6});
  ASSERT_NULL_ERR(em_tensor_lerp_scalar(a1, d, 0.25), EM_ERR_DTYPE,
                  "lerp: expected dtype float for `end` but got dtype double");
  ASSERT_ERR(em_tensor_lerp_(a1, d, 0.25), EM_ERR_DTYPE,
             "lerp_: expected dtype float for `end` but got dtype double");
  ASSERT_NULL_ERR(em_tensor_lerp(a1, a1, d), EM_ERR_DTYPE,
                  "expected dtype float for `weight` but got dtype double");
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){2}, (double[]){1, 2});
  ASSERT_NULL_ERR(em_tensor_lerp_scalar(i, i, 0.5), EM_ERR_DTYPE,
                  "lerp: \"lerp_kernel_scalar\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_lerp(i, i, i), EM_ERR_DTYPE,
                  "\"lerp_kernel_tensor\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_lerp(a1, NULL, a1), EM_ERR_INVALID, "lerp: NULL tensor");
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(a1), em_tensor_release(b2);
  em_tensor_release(d), em_tensor_release(i);
}

/* ---- addcmul / addcdiv -------------------------------------------------------------- */

typedef struct vctx {
  em_scalar value;
  double v; /* the value as the kernel uses it */
} vctx;
static double r_addcmul(double a, double x, double y, void *ctx) {
  return a + ((vctx *)ctx)->v * x * y;
}
static double r_addcdiv(double a, double x, double y, void *ctx) {
  return a + ((vctx *)ctx)->v * x / y;
}
/* integers: the product wraps in int64 before narrowing; values are small */
static double r_addcmul_i(double a, double x, double y, void *ctx) {
  return (double)((int64_t)a + (int64_t)((vctx *)ctx)->v * (int64_t)x * (int64_t)y);
}
static em_tensor *f_addcmul(em_tensor *a, em_tensor *x, em_tensor *y, void *ctx) {
  return em_tensor_addcmul(a, x, y, ((vctx *)ctx)->value);
}
static em_tensor *f_addcdiv(em_tensor *a, em_tensor *x, em_tensor *y, void *ctx) {
  return em_tensor_addcdiv(a, x, y, ((vctx *)ctx)->value);
}

EM_TEST(addcmul_addcdiv_all_dtypes_and_layouts) {
  vctx v = {em_scalar_float(0.5), 0.5};
  for (size_t d = 0; d < 4; d++) {
    ASSERT_TRUE(check_ternary("addcmul", f_addcmul, r_addcmul, &v, FLOATS[d], FLOATS[d],
                              FLOATS[d], FLOATS[d], FLOATS[d], VA, VB, VJ));
    ASSERT_TRUE(check_ternary("addcdiv", f_addcdiv, r_addcdiv, &v, FLOATS[d], FLOATS[d],
                              FLOATS[d], FLOATS[d], FLOATS[d], VA, VB, VJ));
  }
  /* integers: the value is converted (2.5 -> 2, as PyTorch); products wrap */
  vctx vi = {em_scalar_float(2.5), 2};
  for (size_t d = 0; d < 5; d++)
    ASSERT_TRUE(check_ternary("addcmul", f_addcmul, r_addcmul_i, &vi, INTS[d], INTS[d], INTS[d],
                              INTS[d], INTS[d], VI, VJ, VI));
  vctx vn = {em_scalar_int(-3), -3};
  ASSERT_TRUE(check_ternary("addcmul", f_addcmul, r_addcmul_i, &vn, EM_INT64, EM_INT64,
                            EM_INT64, EM_INT64, EM_INT64, VI, VJ, VI));
  /* promotion over the three tensors */
  vctx v2 = {em_scalar_int(2), 2};
  ASSERT_TRUE(check_ternary("addcmul", f_addcmul, r_addcmul, &v2, EM_INT64, EM_FLOAT32,
                            EM_INT64, EM_FLOAT32, EM_FLOAT32, VI, VB, VJ));
  ASSERT_TRUE(check_ternary("addcmul", f_addcmul, r_addcmul, &v2, EM_FLOAT32, EM_FLOAT64,
                            EM_INT32, EM_FLOAT64, EM_FLOAT64, VA, VB, VJ));
  ASSERT_TRUE(check_ternary("addcdiv", f_addcdiv, r_addcdiv, &v2, EM_INT32, EM_FLOAT32,
                            EM_INT32, EM_FLOAT32, EM_FLOAT32, VI, VB, VJ));
}

EM_TEST(addc_errors_and_inplace) {
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){3, 6});
  em_tensor *g = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){2, 4});
  ASSERT_NULL_ERR(em_tensor_addcdiv(i, i, i, em_scalar_int(2)), EM_ERR_DTYPE,
                  "addcdiv: Integer division with addcdiv is no longer supported");
  ASSERT_NULL_ERR(em_tensor_addcdiv(f, i, i, em_scalar_int(2)), EM_ERR_DTYPE,
                  "Integer division with addcdiv is no longer supported");
  ASSERT_ERR(em_tensor_addcdiv_(f, i, i, em_scalar_int(2)), EM_ERR_DTYPE,
             "addcdiv_: Integer division with addcdiv");
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){1}, (double[]){1});
  ASSERT_NULL_ERR(em_tensor_addcmul(b, b, b, em_scalar_int(2)), EM_ERR_DTYPE,
                  "addcmul: \"addcmul_cpu_out\" not implemented for 'Bool'");
  ASSERT_ERR(em_tensor_addcmul_(i, f, g, em_scalar_float(0.5)), EM_ERR_DTYPE,
             "addcmul_: result type Float can't be cast to the desired output type Long");
  ASSERT_ERR(em_tensor_addcdiv_(i, f, g, em_scalar_float(0.5)), EM_ERR_DTYPE,
             "addcdiv_: result type Float can't be cast to the desired output type Long");
  em_tensor *row = mk(EM_FLOAT32, 2, (int64_t[]){1, 2}, (double[]){3, 6});
  ASSERT_ERR(em_tensor_addcmul_(f, row, g, em_scalar_int(1)), EM_ERR_SHAPE,
             "addcmul_: output with shape [2] doesn't match the broadcast shape [1, 2]");
  ASSERT_NULL_ERR(em_tensor_addcmul(f, NULL, g, em_scalar_int(1)), EM_ERR_INVALID,
                  "addcmul: NULL tensor");
  /* in place, same dtype and promoted-then-cast */
  em_tensor *a = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1, 2});
  ASSERT_OK(em_tensor_addcmul_(a, f, g, em_scalar_float(0.5)));
  ASSERT_TENSOR_CLOSE(a, ((double[]){4, 14}), 0, 0);
  ASSERT_OK(em_tensor_addcdiv_(a, f, g, em_scalar_int(2)));
  ASSERT_TENSOR_CLOSE(a, ((double[]){7, 17}), 0, 0);
  em_tensor *d = mk(EM_FLOAT64, 1, (int64_t[]){2}, (double[]){0.1, 0.1});
  ASSERT_OK(em_tensor_addcmul_(a, d, d, em_scalar_int(1))); /* computed in float64 */
  ASSERT_EQ(a->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(a, ((double[]){(float)(7 + 0.1 * 0.1), (float)(17 + 0.1 * 0.1)}), 0, 0);
  ASSERT_OK(em_tensor_addcmul_(i, i, i, em_scalar_int(3)));
  ASSERT_TENSOR_CLOSE(i, ((double[]){4, 14}), 0, 0);
  /* through a step-sliced view */
  em_tensor *base = mk(EM_FLOAT64, 1, (int64_t[]){4}, (double[]){1, 100, 2, 200});
  em_tensor *sl = em_tensor_slice(base, 0, 0, INT64_MAX, 2);
  ASSERT_OK(em_tensor_addcdiv_(sl, d, d, em_scalar_float(0.5)));
  ASSERT_TENSOR_CLOSE(base, ((double[]){1.5, 100, 2.5, 200}), 0, 0);
  em_tensor_release(sl), em_tensor_release(base), em_tensor_release(d), em_tensor_release(a);
  em_tensor_release(row), em_tensor_release(b), em_tensor_release(i), em_tensor_release(f);
  em_tensor_release(g);
}

EM_TEST(large_tensors_threaded) {
  int64_t n = 200000;
  em_tensor *a = em_tensor_empty(EM_DIMS(n), EM_FLOAT32);
  em_tensor *b = em_tensor_empty(EM_DIMS(n), EM_FLOAT32);
  em_tensor *c = em_tensor_empty(EM_DIMS(n), EM_BOOL);
  float *pa = em_tensor_data(a), *pb = em_tensor_data(b);
  bool *pc = em_tensor_data(c);
  for (int64_t k = 0; k < n; k++)
    pa[k] = (float)(k % 101), pb[k] = (float)(k % 7) + 1, pc[k] = k % 3 == 0;
  em_tensor *w = em_tensor_where(c, a, b);
  em_tensor *m = em_tensor_addcmul(a, a, b, em_scalar_float(0.5));
  const float *pw = em_tensor_data(w), *pm = em_tensor_data(m);
  for (int64_t k = 0; k < n; k++) {
    ASSERT_CLOSE(pw[k], pc[k] ? pa[k] : pb[k], 0, 0);
    ASSERT_CLOSE(pm[k], pa[k] + 0.5f * pa[k] * pb[k], 0, 0);
  }
  ASSERT_OK(em_tensor_lerp_(a, b, 0.25));
  for (int64_t k = 0; k < n; k++) {
    float x = (float)(k % 101), y = (float)(k % 7) + 1;
    ASSERT_CLOSE(pa[k], x + 0.25f * (y - x), 1e-6, 0);
  }
  em_tensor_release(w), em_tensor_release(m), em_tensor_release(a), em_tensor_release(b);
  em_tensor_release(c);
}

EM_TEST_MAIN()
