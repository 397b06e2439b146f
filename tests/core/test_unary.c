/* Unary elementwise ops: every op against a reference computed here in
 * double (libm) or by hand, for every dtype it supports, on contiguous,
 * transposed, step-sliced, expanded, 0-dim and zero-size inputs; in-place
 * forms; promotion; error messages; and the accuracy of the vectorised
 * float32 exp/tanh/sigmoid/silu/gelu/erf against libm over the whole float
 * range. */
#include <float.h>
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

/* ---- helpers ------------------------------------------------------------------------ */

static size_t esz(em_dtype dt) { return em_dtype_size(dt); }

/* A contiguous tensor of dtype dt holding vals. */
static em_tensor *mk(em_dtype dt, int ndim, const int64_t *shape, const double *vals) {
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  for (int64_t i = 0; i < t->numel; i++)
    em__store_f64((char *)em__data_ptr(t) + i * (int64_t)esz(dt), dt, vals[i]);
  return t;
}

/* The value v as dtype dt would store it, back in double. */
static double round_to(double v, em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return (float)v;
    case EM_FLOAT16: return em_half_to_float(em_float_to_half((float)v));
    case EM_BFLOAT16: return em_bf16_to_float(em_float_to_bf16((float)v));
    default: return v;
  }
}

enum { V_CONTIG, V_TRANSPOSED, V_SLICED, V_EXPANDED, V_SCALAR, V_EMPTY, NV };
static const char *const VNAME[NV] = {"contiguous", "transposed", "sliced", "expanded",
                                      "0-dim", "zero-size"};

/* Six layouts of (about) the logical [R, C] values vals: the checker reads
 * every input back through the view, so each may hold different values. */
static void variants(em_dtype dt, int R, int C, const double *vals, em_tensor **v) {
  v[V_CONTIG] = mk(dt, 2, (int64_t[]){R, C}, vals);
  double *tv = malloc(sizeof(double) * (size_t)(R * C * 2));
  for (int i = 0; i < R; i++)
    for (int j = 0; j < C; j++) tv[j * R + i] = vals[i * C + j];
  em_tensor *b = mk(dt, 2, (int64_t[]){C, R}, tv);
  v[V_TRANSPOSED] = em_tensor_t(b);
  em_tensor_release(b);
  for (int i = 0; i < R; i++)
    for (int j = 0; j < C; j++) {
      tv[i * 2 * C + 2 * j] = vals[i * C + j];
      tv[i * 2 * C + 2 * j + 1] = 77;
    }
  b = mk(dt, 2, (int64_t[]){R, 2 * C}, tv);
  v[V_SLICED] = em_tensor_slice(b, 1, 0, INT64_MAX, 2);
  em_tensor_release(b);
  b = mk(dt, 2, (int64_t[]){1, C}, vals + C);
  v[V_EXPANDED] = em_tensor_expand(b, 2, (int64_t[]){R, C});
  em_tensor_release(b);
  v[V_SCALAR] = mk(dt, 0, NULL, vals + 1);
  v[V_EMPTY] = mk(dt, 2, (int64_t[]){0, C}, vals);
  free(tv);
}

static void release_all(em_tensor **v, int n) {
  for (int i = 0; i < n; i++) em_tensor_release(v[i]);
}

static bool same_shape(const em_tensor *a, const em_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

/* |got - want| within rtol/atol, or both NaN, or equal (infinities). */
static bool close_to(double got, double want, double rtol, double atol) {
  if (isnan(want)) return isnan(got);
  if (got == want) return true;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

static double rtol_for(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return 5e-7;
    case EM_FLOAT64: return 1e-14;
    case EM_FLOAT16: return 1.2e-3;
    case EM_BFLOAT16: return 8e-3;
    default: return 0;
  }
}
static double atol_for(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return 1e-37;
    case EM_FLOAT64: return 1e-300;
    case EM_FLOAT16: return 1e-7;
    case EM_BFLOAT16: return 1e-37;
    default: return 0;
  }
}

typedef em_tensor *(*ufn)(em_tensor *);
typedef em_status (*ufn_)(em_tensor *);
typedef double (*rfn)(double);

/* Checks r = fn(x) elementwise against ref(x) rounded to the output dtype
 * (out_dt). Returns 0 and prints the first mismatch on failure. */
static int check_values(const char *what, const char *layout, em_tensor *x, em_tensor *r,
                        em_dtype out_dt, rfn ref) {
  if (!r) {
    fprintf(stderr, "  %s (%s): NULL: %s\n", what, layout, em_last_error());
    return 0;
  }
  if (r->dtype != out_dt || !same_shape(r, x)) {
    fprintf(stderr, "  %s (%s): dtype %s / shape %s, expected %s / %s\n", what, layout,
            em_dtype_name((em_dtype)r->dtype), em__tshape(r), em_dtype_name(out_dt),
            em__tshape(x));
    return 0;
  }
  for (int64_t i = 0; i < x->numel; i++) {
    double in = em_test_get(x, i), want = round_to(ref(in), out_dt), got = em_test_get(r, i);
    if (!close_to(got, want, rtol_for(out_dt), atol_for(out_dt))) {
      fprintf(stderr, "  %s (%s, %s): element %lld: %s(%.17g) = %.17g, expected %.17g\n", what,
              layout, em_dtype_name(out_dt), (long long)i, what, in, got, want);
      return 0;
    }
  }
  return 1;
}

/* fn and fn_ on every layout of vals in dtype dt; out_dt is the result
 * dtype; in-place must fail with a cast error when out_dt != dt and out_dt
 * cannot be cast. */
static int check_unary(const char *what, ufn fn, ufn_ fn_, rfn ref, em_dtype dt,
                       em_dtype out_dt, int R, int C, const double *vals) {
  em_tensor *v[NV];
  variants(dt, R, C, vals, v);
  int ok = 1;
  for (int k = 0; k < NV && ok; k++) {
    em_tensor *r = fn(v[k]);
    ok = check_values(what, VNAME[k], v[k], r, out_dt, ref);
    em_tensor_release(r);
    if (!ok || !fn_ || k == V_EXPANDED) continue;
    /* in place: write through the view, check against the old values */
    em_tensor *before = em_tensor_clone(v[k]);
    em_status st = fn_(v[k]);
    if (out_dt != dt && !em_can_cast(out_dt, dt)) {
      ok = st == EM_ERR_DTYPE && strstr(em_last_error(), "can't be cast to the desired output");
      if (!ok) fprintf(stderr, "  %s_ (%s): expected a cast error, got %s\n", what, VNAME[k],
                       em_status_name(st));
    } else if (st) {
      fprintf(stderr, "  %s_ (%s): %s\n", what, VNAME[k], em_last_error());
      ok = 0;
    } else {
      /* the values land in dt */
      for (int64_t i = 0; ok && i < v[k]->numel; i++) {
        double in = em_test_get(before, i), want = round_to(round_to(ref(in), out_dt), dt);
        if (!em_dtype_is_float(dt)) want = (double)(int64_t)want;
        double got = em_test_get(v[k], i);
        if (!close_to(got, want, rtol_for(dt), atol_for(dt))) {
          fprintf(stderr, "  %s_ (%s, %s): element %lld: %.17g -> %.17g, expected %.17g\n",
                  what, VNAME[k], em_dtype_name(dt), (long long)i, in, got, want);
          ok = 0;
        }
      }
    }
    em_tensor_release(before);
  }
  if (ok && fn_) { /* an expanded tensor cannot be written in place */
    em_status st = fn_(v[V_EXPANDED]);
    if (!(out_dt != dt && !em_can_cast(out_dt, dt)) &&
        !(st == EM_ERR_INVALID && strstr(em_last_error(), "more than one element"))) {
      fprintf(stderr, "  %s_ on an expanded tensor: got %s: %s\n", what, em_status_name(st),
              em_last_error());
      ok = 0;
    }
  }
  release_all(v, NV);
  return ok;
}

static const em_dtype FLOATS[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
static const em_dtype INTS[] = {EM_INT8, EM_INT16, EM_INT32, EM_INT64, EM_UINT8};

/* 4 x 6 values over the interesting range of most functions */
static const double VALS[24] = {-3.5, -2,   -1,  -0.75, -0.5,  -0.1,  0,  0.1,
                                0.25, 0.5,  0.9, 1,     1.5,   2,     3,  4.25,
                                10,   -10,  7.5, -7.25, 0.001, -0.001, 20, -20};

/* ---- references --------------------------------------------------------------------- */

static double r_neg(double x) { return -x; }
static double r_abs(double x) { return fabs(x); }
static double r_sign(double x) { return x > 0 ? 1 : x < 0 ? -1 : 0; }
static double r_exp(double x) { return exp(x); }
static double r_exp2(double x) { return exp2(x); }
static double r_log(double x) { return log(x); }
static double r_log2(double x) { return log2(x); }
static double r_log10(double x) { return log10(x); }
static double r_log1p(double x) { return log1p(x); }
static double r_expm1(double x) { return expm1(x); }
static double r_sqrt(double x) { return sqrt(x); }
static double r_rsqrt(double x) { return 1 / sqrt(x); }
static double r_recip(double x) { return 1 / x; }
static double r_square(double x) { return x * x; }
static double r_sin(double x) { return sin(x); }
static double r_cos(double x) { return cos(x); }
static double r_tan(double x) { return tan(x); }
static double r_asin(double x) { return asin(x); }
static double r_acos(double x) { return acos(x); }
static double r_atan(double x) { return atan(x); }
static double r_sinh(double x) { return sinh(x); }
static double r_cosh(double x) { return cosh(x); }
static double r_tanh(double x) { return tanh(x); }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_erf(double x) { return erf(x); }
static double r_relu(double x) { return x < 0 ? 0 : x; }
static double r_silu(double x) { return x / (1 + exp(-x)); }
static double r_floor(double x) { return floor(x); }
static double r_ceil(double x) { return ceil(x); }
static double r_round(double x) { return nearbyint(x); }
static double r_trunc(double x) { return trunc(x); }
static double r_frac(double x) { return x - trunc(x); }
static double r_lnot(double x) { return x == 0; }
static double r_bnot_s(double x) { return -x - 1; } /* ~x in two's complement */
static double r_bnot_u8(double x) { return 255 - x; }
static double r_neg_u8(double x) { return x == 0 ? 0 : 256 - x; }
static double r_gelu(double x) { return 0.5 * x * erfc(-x * M_SQRT1_2); }
/* 0.5 x (1 + tanh(k)) written as x * sigmoid(2k), free of cancellation */
static double r_gelu_tanh(double x) {
  return x / (1 + exp(-2 * sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

typedef struct uop {
  const char *name;
  ufn fn;
  ufn_ fn_;
  rfn ref;
} uop;

#define U(name, ref) {#name, em_tensor_##name, em_tensor_##name##_, ref}
static const uop FLOAT_OPS[] = {
    U(neg, r_neg),         U(abs, r_abs),     U(sign, r_sign),     U(exp, r_exp),
    U(exp2, r_exp2),       U(log, r_log),     U(log2, r_log2),     U(log10, r_log10),
    U(log1p, r_log1p),     U(expm1, r_expm1), U(sqrt, r_sqrt),     U(rsqrt, r_rsqrt),
    U(reciprocal, r_recip), U(square, r_square), U(sin, r_sin),     U(cos, r_cos),
    U(tan, r_tan),         U(asin, r_asin),   U(acos, r_acos),     U(atan, r_atan),
    U(sinh, r_sinh),       U(cosh, r_cosh),   U(tanh, r_tanh),     U(sigmoid, r_sigmoid),
    U(erf, r_erf),         U(relu, r_relu),   U(silu, r_silu),     U(floor, r_floor),
    U(ceil, r_ceil),       U(round, r_round), U(trunc, r_trunc),   U(frac, r_frac),
};

/* ---- float ops over every float dtype and layout ------------------------------------ */

EM_TEST(float_ops_all_float_dtypes_and_layouts) {
  for (size_t o = 0; o < sizeof FLOAT_OPS / sizeof FLOAT_OPS[0]; o++)
    for (size_t d = 0; d < 4; d++)
      ASSERT_TRUE(check_unary(FLOAT_OPS[o].name, FLOAT_OPS[o].fn, FLOAT_OPS[o].fn_,
                              FLOAT_OPS[o].ref, FLOATS[d], FLOATS[d], 4, 6, VALS));
}

/* float-only math turns integers and bool into the default float dtype;
 * the in-place forms cannot write a float result into an integer tensor */
EM_TEST(float_ops_promote_integers) {
  static const double ivals[24] = {-3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                                   9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, -4};
  static const double uvals[24] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                   12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
  static const double bvals[24] = {0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0,
                                   1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0};
  const uop promoted[] = {U(exp, r_exp),     U(exp2, r_exp2), U(log, r_log),
                          U(log2, r_log2),   U(log10, r_log10), U(log1p, r_log1p),
                          U(expm1, r_expm1), U(sqrt, r_sqrt), U(rsqrt, r_rsqrt),
                          U(reciprocal, r_recip), U(sin, r_sin), U(cos, r_cos),
                          U(tan, r_tan),     U(asin, r_asin), U(acos, r_acos),
                          U(atan, r_atan),   U(sinh, r_sinh), U(cosh, r_cosh),
                          U(tanh, r_tanh),   U(sigmoid, r_sigmoid), U(erf, r_erf)};
  for (size_t o = 0; o < sizeof promoted / sizeof promoted[0]; o++) {
    for (size_t d = 0; d < 5; d++)
      ASSERT_TRUE(check_unary(promoted[o].name, promoted[o].fn, promoted[o].fn_,
                              promoted[o].ref, INTS[d], EM_FLOAT32, 4, 6,
                              INTS[d] == EM_UINT8 ? uvals : ivals));
    ASSERT_TRUE(check_unary(promoted[o].name, promoted[o].fn, promoted[o].fn_,
                            promoted[o].ref, EM_BOOL, EM_FLOAT32, 4, 6, bvals));
  }
  em_tensor *i = mk(EM_INT32, 1, (int64_t[]){2}, (double[]){1, 2});
  ASSERT_ERR(em_tensor_exp_(i), EM_ERR_DTYPE,
             "exp_: result type Float can't be cast to the desired output type Int");
  /* the default dtype decides */
  ASSERT_OK(em_set_default_dtype(EM_FLOAT64));
  em_tensor *e = em_tensor_exp(i);
  em_set_default_dtype(EM_FLOAT32);
  ASSERT_NOTNULL(e);
  ASSERT_EQ(e->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(e, ((double[]){exp(1.0), exp(2.0)}), 1e-15, 0);
  em_tensor_release(e);
  em_tensor_release(i);
}

/* neg, abs, sign, square, relu keep integer dtypes and wrap */
EM_TEST(integer_keeping_ops) {
  /* |v| <= 11: squares fit in int8 */
  static const double iv[24] = {-3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                                9,  10, 11, -11, -10, -9, -8, -7, -6, -5, 0, -4};
  static const double uv[24] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                12, 13, 14, 15, 16, 17, 18, 200, 20, 21, 22, 255};
  const uop keep[] = {U(abs, r_abs), U(sign, r_sign), U(square, r_square), U(relu, r_relu)};
  for (size_t o = 0; o < 4; o++)
    for (size_t d = 0; d < 4; d++) /* signed: values small enough not to wrap */
      ASSERT_TRUE(check_unary(keep[o].name, keep[o].fn, keep[o].fn_, keep[o].ref, INTS[d],
                              INTS[d], 4, 6, iv));
  for (size_t d = 0; d < 4; d++) {
    ASSERT_TRUE(check_unary("neg", em_tensor_neg, em_tensor_neg_, r_neg, INTS[d], INTS[d], 4,
                            6, iv));
    ASSERT_TRUE(check_unary("bitwise_not", em_tensor_bitwise_not, em_tensor_bitwise_not_,
                            r_bnot_s, INTS[d], INTS[d], 4, 6, iv));
  }
  ASSERT_TRUE(check_unary("neg", em_tensor_neg, em_tensor_neg_, r_neg_u8, EM_UINT8, EM_UINT8, 4,
                          6, uv));
  ASSERT_TRUE(check_unary("bitwise_not", em_tensor_bitwise_not, em_tensor_bitwise_not_,
                          r_bnot_u8, EM_UINT8, EM_UINT8, 4, 6, uv));
  ASSERT_TRUE(check_unary("abs", em_tensor_abs, em_tensor_abs_, r_abs, EM_UINT8, EM_UINT8, 4,
                          6, uv));
  ASSERT_TRUE(check_unary("relu", em_tensor_relu, em_tensor_relu_, r_relu, EM_UINT8, EM_UINT8,
                          4, 6, uv));
  ASSERT_TRUE(check_unary("sign", em_tensor_sign, em_tensor_sign_, r_sign, EM_UINT8, EM_UINT8,
                          4, 6, uv));

  /* wrapping, hand-computed (PyTorch gives the same) */
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){3}, (double[]){-128, 100, 127});
  em_tensor *r = em_tensor_neg(i8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-128, -100, -127}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_abs(i8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-128, 100, 127}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_square(i8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 16, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor *i16 = mk(EM_INT16, 1, (int64_t[]){2}, (double[]){-32768, 300});
  r = em_tensor_square(i16); /* 90000 wraps to 24464 */
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 24464}), 0, 0);
  em_tensor_release(r);
  em_tensor *u8 = mk(EM_UINT8, 1, (int64_t[]){3}, (double[]){1, 0, 255});
  r = em_tensor_neg(u8);
  ASSERT_EQ(r->dtype, EM_UINT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){255, 0, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor *i64 = em_tensor_full(EM_DIMS(1), em_scalar_int(INT64_MIN), EM_INT64);
  r = em_tensor_neg(i64);
  ASSERT_EQ(*(int64_t *)em_tensor_data(r), INT64_MIN);
  em_tensor_release(r);
  em_tensor_release(i8), em_tensor_release(i16), em_tensor_release(u8), em_tensor_release(i64);
}

EM_TEST(bool_inputs) {
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){3}, (double[]){1, 0, 1});
  ASSERT_NULL_ERR(em_tensor_neg(b), EM_ERR_DTYPE,
                  "Negation, the `-` operator, on a bool tensor is not supported. If you are "
                  "trying to invert a mask, use the `~` or `logical_not()` operator instead.");
  ASSERT_ERR(em_tensor_neg_(b), EM_ERR_DTYPE, "neg_: Negation, the `-` operator");
  ASSERT_NULL_ERR(em_tensor_abs(b), EM_ERR_DTYPE, "\"abs_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_relu(b), EM_ERR_DTYPE, "Boolean inputs not supported for relu");
  ASSERT_NULL_ERR(em_tensor_floor(b), EM_ERR_DTYPE, "not implemented for 'Bool'");
  ASSERT_ERR(em_tensor_round_(b), EM_ERR_DTYPE, "round_: \"round_vml_cpu\" not implemented");
  ASSERT_NULL_ERR(em_tensor_frac(b), EM_ERR_DTYPE, "\"frac_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_silu(b), EM_ERR_DTYPE, "\"silu_cpu\" not implemented for 'Bool'");
  em_tensor *r = em_tensor_sign(b);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0, 1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_square(b); /* as pow(b, 2): int64 */
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0, 1}), 0, 0);
  em_tensor_release(r);
  ASSERT_ERR(em_tensor_square_(b), EM_ERR_DTYPE,
             "square_: result type Long can't be cast to the desired output type Bool");
  em_tensor_release(b);
}

/* floor/ceil/round/trunc of integers are copies; frac and silu reject them */
EM_TEST(rounding) {
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){8},
                    (double[]){0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, -2.6, 1e8});
  em_tensor *r = em_tensor_round(f); /* half to even */
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 2, 2, -0.0, -2, 2, -3, 1e8}), 0, 0);
  ASSERT_TRUE(signbit(em_test_get(r, 3)));
  em_tensor_release(r);
  r = em_tensor_frac(f);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0.5, 0.5, 0.5, -0.5, -0.5, 0.4999000132083893, -0.6, 0}),
                      1e-6, 0);
  em_tensor_release(r);
  em_tensor *inf = mk(EM_FLOAT64, 1, (int64_t[]){3}, (double[]){INFINITY, -INFINITY, NAN});
  r = em_tensor_frac(inf);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, NAN}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_floor(inf);
  ASSERT_TENSOR_CLOSE(r, ((double[]){INFINITY, -INFINITY, NAN}), 0, 0);
  em_tensor_release(r);
  for (size_t d = 0; d < 5; d++) {
    em_tensor *i = mk(INTS[d], 1, (int64_t[]){3}, (double[]){1, 7, 100});
    em_tensor *(*fns[4])(em_tensor *) = {em_tensor_floor, em_tensor_ceil, em_tensor_round,
                                         em_tensor_trunc};
    for (int k = 0; k < 4; k++) {
      r = fns[k](i);
      ASSERT_NOTNULL(r);
      ASSERT_EQ(r->dtype, INTS[d]);
      ASSERT_TRUE(r->storage != i->storage);
      ASSERT_TENSOR_CLOSE(r, ((double[]){1, 7, 100}), 0, 0);
      em_tensor_release(r);
    }
    uint64_t v = em_tensor_version(i);
    ASSERT_OK(em_tensor_floor_(i));
    ASSERT_TRUE(em_tensor_version(i) > v);
    ASSERT_TENSOR_CLOSE(i, ((double[]){1, 7, 100}), 0, 0);
    ASSERT_NULL_ERR(em_tensor_frac(i), EM_ERR_DTYPE, "\"frac_cpu\" not implemented for '");
    ASSERT_ERR(em_tensor_frac_(i), EM_ERR_DTYPE, "not implemented for '");
    ASSERT_NULL_ERR(em_tensor_silu(i), EM_ERR_DTYPE, "\"silu_cpu\" not implemented for '");
    em_tensor_release(i);
  }
  em_tensor *i32 = mk(EM_INT32, 1, (int64_t[]){1}, (double[]){3});
  ASSERT_NULL_ERR(em_tensor_silu(i32), EM_ERR_DTYPE,
                  "silu: \"silu_cpu\" not implemented for 'Int'");
  em_tensor_release(i32);
  em_tensor_release(f), em_tensor_release(inf);
}

EM_TEST(logical_and_bitwise_not) {
  static const double v[24] = {0, 1, -2, 0.5, 0, 3, 0, 0, 7, -1, 0, 1,
                               1, 0, 0, 2, 5, 0, 0, 0, 1, 1, 0, 9};
  for (size_t d = 0; d < 4; d++)
    ASSERT_TRUE(check_unary("logical_not", em_tensor_logical_not, em_tensor_logical_not_,
                            r_lnot, FLOATS[d], EM_BOOL, 4, 6, v));
  static const double iv[24] = {0, 1, 2, 3, 0, 3, 0, 0, 7, 1, 0, 1,
                                1, 0, 0, 2, 5, 0, 0, 0, 1, 1, 0, 9};
  for (size_t d = 0; d < 5; d++)
    ASSERT_TRUE(check_unary("logical_not", em_tensor_logical_not, em_tensor_logical_not_,
                            r_lnot, INTS[d], EM_BOOL, 4, 6, iv));
  /* logical_not_ on a float tensor writes 0/1 floats */
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){3}, (double[]){0, 2, -0.5});
  ASSERT_OK(em_tensor_logical_not_(f));
  ASSERT_EQ(f->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(f, ((double[]){1, 0, 0}), 0, 0);
  ASSERT_NULL_ERR(em_tensor_bitwise_not(f), EM_ERR_DTYPE,
                  "bitwise_not: \"bitwise_not_cpu\" not implemented for 'Float'");
  ASSERT_ERR(em_tensor_bitwise_not_(f), EM_ERR_DTYPE, "not implemented for 'Float'");
  em_tensor *h = mk(EM_FLOAT16, 1, (int64_t[]){1}, (double[]){1});
  ASSERT_NULL_ERR(em_tensor_bitwise_not(h), EM_ERR_DTYPE, "not implemented for 'Half'");
  em_tensor *i = mk(EM_INT16, 1, (int64_t[]){4}, (double[]){0, -1, 5, 32767});
  em_tensor *r = em_tensor_bitwise_not(i);
  ASSERT_EQ(r->dtype, EM_INT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 0, -6, -32768}), 0, 0);
  em_tensor_release(r);
  em_tensor *u = mk(EM_UINT8, 1, (int64_t[]){3}, (double[]){0, 1, 200});
  r = em_tensor_bitwise_not(u);
  ASSERT_TENSOR_CLOSE(r, ((double[]){255, 254, 55}), 0, 0);
  em_tensor_release(r);
  em_tensor *b = mk(EM_BOOL, 2, (int64_t[]){2, 2}, (double[]){1, 0, 0, 1});
  em_tensor *bt = em_tensor_t(b);
  r = em_tensor_bitwise_not(bt);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 1, 0}), 0, 0);
  em_tensor_release(r);
  ASSERT_OK(em_tensor_bitwise_not_(bt)); /* through the transposed view */
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 1, 1, 0}), 0, 0);
  em_tensor_release(bt), em_tensor_release(b), em_tensor_release(u), em_tensor_release(i);
  em_tensor_release(h), em_tensor_release(f);
}

EM_TEST(isnan_isinf_isfinite) {
  for (size_t d = 0; d < 4; d++) {
    em_tensor *f = mk(FLOATS[d], 2, (int64_t[]){2, 3},
                      (double[]){NAN, INFINITY, -INFINITY, 0, -1.5, 1e30});
    em_tensor *ft = em_tensor_t(f);
    em_tensor *r = em_tensor_isnan(ft);
    ASSERT_EQ(r->dtype, EM_BOOL);
    ASSERT_SHAPE(r, 3, 2);
    ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0, 0, 0, 0, 0}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_isinf(f);
    /* 1e30 is inf in half */
    double big_inf = FLOATS[d] == EM_FLOAT16;
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 1, 0, 0, big_inf}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_isfinite(f);
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0, 0, 1, 1, !big_inf}), 0, 0);
    em_tensor_release(r);
    em_tensor_release(ft), em_tensor_release(f);
  }
  em_tensor *i = mk(EM_INT64, 2, (int64_t[]){1, 2}, (double[]){3, -1});
  em_tensor *r = em_tensor_isnan(i);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_SHAPE(r, 1, 2);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_isinf(i);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_isfinite(i);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor *z = em_tensor_empty(EM_DIMS(0), EM_FLOAT32);
  r = em_tensor_isnan(z);
  ASSERT_SHAPE(r, 0);
  em_tensor_release(r), em_tensor_release(z), em_tensor_release(i);
}

/* ---- parameterised activations ------------------------------------------------------ */

static double g_param[2];
static double r_leaky(double x) { return x > 0 ? x : x * g_param[0]; }
static double r_softplus(double x) {
  double b = g_param[0], th = g_param[1];
  return x * b > th ? x : log1p(exp(x * b)) / b;
}
static double r_elu(double x) { return x > 0 ? x : g_param[0] * expm1(x); }
static double r_clampf(double x) {
  double y = x < g_param[0] ? g_param[0] : x;
  return y > g_param[1] ? g_param[1] : y;
}
static em_tensor *f_leaky(em_tensor *t) { return em_tensor_leaky_relu(t, g_param[0]); }
static em_status f_leaky_(em_tensor *t) { return em_tensor_leaky_relu_(t, g_param[0]); }
static em_tensor *f_gelu(em_tensor *t) { return em_tensor_gelu(t, false); }
static em_tensor *f_gelu_tanh(em_tensor *t) { return em_tensor_gelu(t, true); }
static em_tensor *f_softplus(em_tensor *t) {
  return em_tensor_softplus(t, g_param[0], g_param[1]);
}
static em_tensor *f_elu(em_tensor *t) { return em_tensor_elu(t, g_param[0]); }
static em_tensor *f_hardtanh(em_tensor *t) {
  return em_tensor_hardtanh(t, g_param[0], g_param[1]);
}
static em_tensor *f_clamp(em_tensor *t) {
  return em_tensor_clamp(t, true, g_param[0], true, g_param[1]);
}
static em_status f_clamp_(em_tensor *t) {
  return em_tensor_clamp_(t, true, g_param[0], true, g_param[1]);
}

EM_TEST(activations_float) {
  for (size_t d = 0; d < 4; d++) {
    em_dtype dt = FLOATS[d];
    g_param[0] = 0.125;
    ASSERT_TRUE(check_unary("leaky_relu", f_leaky, f_leaky_, r_leaky, dt, dt, 4, 6, VALS));
    ASSERT_TRUE(check_unary("gelu", f_gelu, NULL, r_gelu, dt, dt, 4, 6, VALS));
    ASSERT_TRUE(check_unary("gelu_tanh", f_gelu_tanh, NULL, r_gelu_tanh, dt, dt, 4, 6, VALS));
    g_param[0] = 2, g_param[1] = 5; /* x * beta > threshold above x = 2.5: linear */
    ASSERT_TRUE(check_unary("softplus", f_softplus, NULL, r_softplus, dt, dt, 4, 6, VALS));
    g_param[0] = -0.5, g_param[1] = 20;
    ASSERT_TRUE(check_unary("softplus", f_softplus, NULL, r_softplus, dt, dt, 4, 6, VALS));
    g_param[0] = 1.5;
    ASSERT_TRUE(check_unary("elu", f_elu, NULL, r_elu, dt, dt, 4, 6, VALS));
    g_param[0] = -1.25, g_param[1] = 2.5;
    ASSERT_TRUE(check_unary("hardtanh", f_hardtanh, NULL, r_clampf, dt, dt, 4, 6, VALS));
    ASSERT_TRUE(check_unary("clamp", f_clamp, f_clamp_, r_clampf, dt, dt, 4, 6, VALS));
  }
  /* hand-computed points */
  em_tensor *x = mk(EM_FLOAT64, 1, (int64_t[]){4}, (double[]){1, -1, -100, NAN});
  em_tensor *r = em_tensor_elu(x, 2);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 2 * (exp(-1.0) - 1), -2, NAN}), 1e-15, 0);
  em_tensor_release(r);
  r = em_tensor_leaky_relu(x, 0.2);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, -0.2, -20, NAN}), 1e-15, 0);
  em_tensor_release(r);
  r = em_tensor_softplus(x, 1, 20);
  ASSERT_TENSOR_CLOSE(r, ((double[]){log1p(exp(1.0)), log1p(exp(-1.0)), 3.720075976020836e-44,
                                     NAN}),
                      1e-15, 0);
  em_tensor_release(r);
  em_tensor_release(x);
}

EM_TEST(activations_reject_integers) {
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){2}, (double[]){1, -1});
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  ASSERT_NULL_ERR(em_tensor_leaky_relu(i, 0.1), EM_ERR_DTYPE,
                  "leaky_relu: \"leaky_relu_cpu\" not implemented for 'Long'");
  ASSERT_ERR(em_tensor_leaky_relu_(i, 0.1), EM_ERR_DTYPE, "not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_gelu(i, false), EM_ERR_DTYPE,
                  "\"GeluKernelImpl\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_gelu(b, true), EM_ERR_DTYPE,
                  "\"GeluKernelImpl\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_softplus(i, 1, 20), EM_ERR_DTYPE,
                  "\"softplus_cpu\" not implemented for 'Long'");
  ASSERT_NULL_ERR(em_tensor_elu(b, 1), EM_ERR_DTYPE, "\"elu_cpu\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_hardtanh(b, -1, 1), EM_ERR_DTYPE,
                  "Bool inputs not supported for hardtanh");
  /* hardtanh keeps integer dtypes, bounds truncated as PyTorch converts them */
  em_tensor *r = em_tensor_hardtanh(i, -0.5, 0.5);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
  em_tensor_release(r);
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){3}, (double[]){-100, 5, 100});
  r = em_tensor_hardtanh(i8, -1, 1);
  ASSERT_EQ(r->dtype, EM_INT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 1, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(i8), em_tensor_release(i), em_tensor_release(b);
}

EM_TEST(clamp_semantics) {
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){4}, (double[]){1, 5, 10, NAN});
  em_tensor *r = em_tensor_clamp(f, true, 6, true, 2); /* min > max gives max */
  ASSERT_TENSOR_CLOSE(r, ((double[]){2, 2, 2, NAN}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_clamp(f, false, 0, true, 4);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 4, 4, NAN}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_clamp(f, true, 4, false, 0);
  ASSERT_TENSOR_CLOSE(r, ((double[]){4, 5, 10, NAN}), 0, 0);
  em_tensor_release(r);
  ASSERT_NULL_ERR(em_tensor_clamp(f, false, 0, false, 0), EM_ERR_INVALID,
                  "clamp: At least one of 'min' or 'max' must not be None");
  ASSERT_ERR(em_tensor_clamp_(f, false, 0, false, 0), EM_ERR_INVALID, "At least one of");

  /* integer tensors: integral bounds keep the dtype, others promote */
  for (size_t d = 0; d < 5; d++) {
    em_tensor *i = mk(INTS[d], 1, (int64_t[]){4}, (double[]){0, 3, 7, 100});
    r = em_tensor_clamp(i, true, 2, true, 50);
    ASSERT_EQ(r->dtype, INTS[d]);
    ASSERT_TENSOR_CLOSE(r, ((double[]){2, 3, 7, 50}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_clamp(i, true, 2.5, false, 0);
    ASSERT_EQ(r->dtype, EM_FLOAT32);
    ASSERT_TENSOR_CLOSE(r, ((double[]){2.5, 3, 7, 100}), 0, 0);
    em_tensor_release(r);
    ASSERT_ERR(em_tensor_clamp_(i, true, 2.5, false, 0), EM_ERR_DTYPE,
               "clamp_: result type Float can't be cast to the desired output type");
    ASSERT_OK(em_tensor_clamp_(i, false, 0, true, 5));
    ASSERT_TENSOR_CLOSE(i, ((double[]){0, 3, 5, 5}), 0, 0);
    em_tensor_release(i);
  }
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){1}, (double[]){5});
  ASSERT_NULL_ERR(em_tensor_clamp(i8, true, -1000, false, 0), EM_ERR_INVALID,
                  "value cannot be converted to type int8_t without overflow");
  ASSERT_NULL_ERR(em_tensor_clamp(i8, false, 0, true, 300), EM_ERR_INVALID,
                  "value cannot be converted to type int8_t without overflow");
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  r = em_tensor_clamp(b, true, 0, true, 1); /* bool with int bounds: int64 */
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  /* a 0-dim float64 tensor stays float64; a float32 one with a float bound stays float32 */
  em_tensor *s = mk(EM_FLOAT64, 0, NULL, (double[]){5});
  r = em_tensor_clamp(s, false, 0, true, 1.5);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_SCALAR_SHAPE(r);
  ASSERT_CLOSE(em_tensor_item_double(r), 1.5, 0, 0);
  em_tensor_release(r);
  em_tensor_release(s), em_tensor_release(b), em_tensor_release(i8), em_tensor_release(f);
}

/* ---- pow with a scalar -------------------------------------------------------------- */

static double g_exp;
static double r_pow_e(double x) { return pow(x, g_exp); }
static em_tensor *f_pow_e(em_tensor *t) { return em_tensor_pow_scalar(t, em_scalar_float(g_exp)); }
static double r_rpow(double x) { return pow(g_exp, x); }
static em_tensor *f_rpow(em_tensor *t) { return em_tensor_rpow_scalar(em_scalar_float(g_exp), t); }

EM_TEST(pow_scalar_float) {
  static const double exps[] = {2, 3, 0.5, -0.5, -1, -2, 1, 0, 2.5, -1.5, 1.0 / 3};
  for (size_t d = 0; d < 4; d++)
    for (size_t e = 0; e < sizeof exps / sizeof exps[0]; e++) {
      g_exp = exps[e];
      ASSERT_TRUE(check_unary("pow", f_pow_e, NULL, r_pow_e, FLOATS[d], FLOATS[d], 4, 6, VALS));
    }
  static const double bases[] = {2, 0.5, -2.5, 10, 1};
  for (size_t d = 0; d < 4; d++)
    for (size_t e = 0; e < sizeof bases / sizeof bases[0]; e++) {
      g_exp = bases[e];
      ASSERT_TRUE(check_unary("rpow", f_rpow, NULL, r_rpow, FLOATS[d], FLOATS[d], 4, 6, VALS));
    }
}

EM_TEST(pow_scalar_integers) {
  static const double iv[6] = {-3, -1, 0, 1, 2, 5};
  for (size_t d = 0; d < 4; d++) { /* signed */
    em_tensor *i = mk(INTS[d], 1, (int64_t[]){6}, iv);
    for (int e = 0; e <= 3; e++) {
      em_tensor *r = em_tensor_pow_scalar(i, em_scalar_int(e));
      ASSERT_EQ(r->dtype, INTS[d]);
      double want[6];
      for (int k = 0; k < 6; k++) want[k] = pow(iv[k], e);
      ASSERT_TENSOR_CLOSE(r, want, 0, 0);
      em_tensor_release(r);
    }
    ASSERT_NULL_ERR(em_tensor_pow_scalar(i, em_scalar_int(-1)), EM_ERR_INVALID,
                    "pow: Integers to negative integer powers are not allowed.");
    ASSERT_ERR(em_tensor_pow_(i, (em_tensor *)NULL), EM_ERR_INVALID, "NULL tensor");
    em_tensor *r = em_tensor_pow_scalar(i, em_scalar_float(0.5)); /* float exponent: float */
    ASSERT_EQ(r->dtype, EM_FLOAT32);
    ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, 0, 1, sqrt(2.0), sqrt(5.0)}), 1e-6, 0);
    em_tensor_release(r);
    /* (-2) ** x and 2 ** x with negative x: 0 unless the base is +-1 */
    r = em_tensor_rpow_scalar(em_scalar_int(-2), i);
    ASSERT_EQ(r->dtype, INTS[d]);
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0, 1, -2, 4, -32}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_rpow_scalar(em_scalar_int(-1), i);
    ASSERT_TENSOR_CLOSE(r, ((double[]){-1, -1, 1, -1, 1, -1}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_rpow_scalar(em_scalar_int(1), i);
    ASSERT_TENSOR_CLOSE(r, ((double[]){1, 1, 1, 1, 1, 1}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_rpow_scalar(em_scalar_float(2.5), i);
    ASSERT_EQ(r->dtype, EM_FLOAT32);
    ASSERT_TENSOR_CLOSE(r, ((double[]){pow(2.5, -3), 0.4, 1, 2.5, 6.25, pow(2.5, 5)}), 1e-6, 0);
    em_tensor_release(r);
    em_tensor_release(i);
  }
  /* wrapping: 3 ** 40 in int32 (PyTorch: 689956897) */
  em_tensor *i32 = mk(EM_INT32, 1, (int64_t[]){1}, (double[]){3});
  em_tensor *r = em_tensor_pow_scalar(i32, em_scalar_int(40));
  ASSERT_TENSOR_CLOSE(r, ((double[]){689956897}), 0, 0);
  em_tensor_release(r);
  em_tensor *u8 = mk(EM_UINT8, 1, (int64_t[]){3}, (double[]){2, 3, 16});
  r = em_tensor_pow_scalar(u8, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r, ((double[]){4, 9, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_rpow_scalar(em_scalar_int(2), u8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){4, 8, 0}), 0, 0);
  em_tensor_release(r);
  /* bool tensors: an int scalar makes int64; a bool one is not supported */
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  r = em_tensor_pow_scalar(b, em_scalar_int(2));
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_rpow_scalar(em_scalar_int(2), b);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){2, 1}), 0, 0);
  em_tensor_release(r);
  ASSERT_NULL_ERR(em_tensor_pow_scalar(b, em_scalar_bool(true)), EM_ERR_DTYPE,
                  "\"pow\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_rpow_scalar(em_scalar_bool(true), b), EM_ERR_DTYPE,
                  "\"pow\" not implemented for 'Bool'");
  ASSERT_NULL_ERR(em_tensor_pow_scalar(b, em_scalar_int(-1)), EM_ERR_INVALID,
                  "Integers to negative integer powers are not allowed.");
  /* float16 tensor with an int exponent stays float16 */
  em_tensor *h = mk(EM_FLOAT16, 1, (int64_t[]){2}, (double[]){2, -3});
  r = em_tensor_pow_scalar(h, em_scalar_int(2));
  ASSERT_EQ(r->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){4, 9}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(h), em_tensor_release(b), em_tensor_release(u8), em_tensor_release(i32);
}

/* ---- accuracy of the vectorised float32 math over the whole range ------------------- */

/* |got - want| in units of the float spacing at want (subnormal spacing
 * below FLT_MIN); 0 when both are the same infinity or both NaN. */
static double ulps(float got, double want) {
  if (isnan(want)) return isnan(got) ? 0 : INFINITY;
  float wf = (float)want;
  if (isinf(wf)) /* past FLT_MAX: spacing 2^104 */
    return got == wf ? 0 : isinf(got) ? INFINITY : fabs(got - want) / 2.028240960365167e31;
  double aw = fabs(want);
  double spacing = aw < FLT_MIN ? 1.401298464324817e-45 : ldexp(1.0, ilogb(aw) - 23);
  return fabs((double)got - want) / spacing;
}

static double sweep_ref(int f, double x) {
  switch (f) {
    case 0: return exp(x);
    case 1: return tanh(x);
    case 2: return 1 / (1 + exp(-x));
    case 3: return x / (1 + exp(-x));
    case 4: return erf(x);
    case 5: return 0.5 * x * erfc(-x / sqrt(2.0));
    default: { /* x * sigmoid(2k) == 0.5 x (1 + tanh k), free of cancellation */
      double k2 = 2 * sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
      return x / (1 + exp(-k2));
    }
  }
}

EM_TEST(vector_math_accuracy_float32) {
  /* inputs: a fine linear grid, a log grid of both signs over the whole
   * float range, and the edges of each implementation's branches */
  int64_t cap = 80000, n = 0;
  float *xs = malloc(sizeof(float) * (size_t)cap);
  for (double x = -120; x <= 120; x += 0.0137) xs[n++] = (float)x;
  for (double e = -45; e <= 38.5; e += 0.01) {
    xs[n++] = (float)pow(10, e);
    xs[n++] = (float)-pow(10, e);
  }
  static const float special[] = {0.0f,      -0.0f,      INFINITY,   -INFINITY, NAN,
                                  FLT_MIN,   -FLT_MIN,   FLT_TRUE_MIN, FLT_MAX,  -FLT_MAX,
                                  88.72283f, 88.722839f, 88.72284f,  88.7229f,  89.0f,
                                  -87.33654f, -87.5f,    -100.0f,    -103.97207f, -103.97208f,
                                  -103.9721f, -104.0f,   -150.0f,    0.625f,     -0.625f,
                                  1.0f,      -1.0f,      1.4142135f, -1.4142135f, 9.0f,
                                  -9.0f,     13.0f,      -13.0f,     -14.0f,     3.9f};
  for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) {
    xs[n++] = special[k];
    xs[n++] = nextafterf(special[k], INFINITY);
    xs[n++] = nextafterf(special[k], -INFINITY);
  }
  ASSERT_TRUE(n <= cap);
  em_tensor *x = em_tensor_from_data(xs, 1, (int64_t[]){n}, EM_FLOAT32);
  const char *names[7] = {"exp", "tanh", "sigmoid", "silu", "erf", "gelu", "gelu_tanh"};
  for (int f = 0; f < 7; f++) {
    em_tensor *r = f == 0   ? em_tensor_exp(x)
                   : f == 1 ? em_tensor_tanh(x)
                   : f == 2 ? em_tensor_sigmoid(x)
                   : f == 3 ? em_tensor_silu(x)
                   : f == 4 ? em_tensor_erf(x)
                   : f == 5 ? em_tensor_gelu(x, false)
                            : em_tensor_gelu(x, true);
    ASSERT_NOTNULL(r);
    const float *got = em_tensor_data(r);
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
      double u = ulps(got[i], sweep_ref(f, xs[i]));
      if (u > worst) worst = u, at = i;
    }
    printf("  %-9s max error %.2f ulp (at x = %.9g)\n", names[f], worst, xs[at]);
    if (worst > 3) {
      EM_FAILF("%s: %.9g -> %.9g, expected %.17g (%.2f ulp)", names[f], xs[at], got[at],
               sweep_ref(f, xs[at]), worst);
      em_tensor_release(r);
      break;
    }
    em_tensor_release(r);
  }
  em_tensor_release(x);
  free(xs);
}

/* Above the grain the work is split across threads. */
EM_TEST(large_tensors_threaded) {
  int64_t n = 300000;
  em_tensor *x = em_tensor_empty(EM_DIMS(n), EM_FLOAT32);
  float *p = em_tensor_data(x);
  for (int64_t i = 0; i < n; i++) p[i] = (float)((i % 2001) - 1000) * 0.01f;
  em_tensor *r = em_tensor_tanh(x);
  em_tensor *q = em_tensor_relu(x);
  const float *pr = em_tensor_data(r), *pq = em_tensor_data(q);
  for (int64_t i = 0; i < n; i++) {
    ASSERT_CLOSE(pr[i], tanh(p[i]), 5e-7, 1e-30);
    ASSERT_CLOSE(pq[i], p[i] < 0 ? 0 : p[i], 0, 0);
  }
  ASSERT_OK(em_tensor_exp_(x));
  for (int64_t i = 0; i < n; i++)
    ASSERT_CLOSE(p[i], exp((float)((i % 2001) - 1000) * 0.01f), 5e-7, 0);
  em_tensor_release(r), em_tensor_release(q), em_tensor_release(x);
}

EM_TEST(null_arguments) {
  ASSERT_NULL_ERR(em_tensor_exp(NULL), EM_ERR_INVALID, "exp: NULL tensor");
  ASSERT_ERR(em_tensor_exp_(NULL), EM_ERR_INVALID, "exp_: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_isnan(NULL), EM_ERR_INVALID, "isnan: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_gelu(NULL, false), EM_ERR_INVALID, "gelu: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_clamp(NULL, true, 0, true, 1), EM_ERR_INVALID, "clamp: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_pow_scalar(NULL, em_scalar_int(2)), EM_ERR_INVALID, "NULL tensor");
  ASSERT_NULL_ERR(em_tensor_rpow_scalar(em_scalar_int(2), NULL), EM_ERR_INVALID, "NULL tensor");
}

EM_TEST_MAIN()
