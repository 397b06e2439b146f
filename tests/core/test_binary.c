/* Binary elementwise ops and comparisons: every op against a reference
 * computed here (double / int64 loops, Python's division semantics) for
 * every dtype it supports, on contiguous, transposed, step-sliced,
 * expanded and broadcast operands, 0-dim and zero-size tensors; scalar
 * forms; PyTorch's type promotion; in-place forms; every error with its
 * message. */
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

/* ---- helpers ------------------------------------------------------------------------ */

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

static bool close_to(double got, double want, double rtol, double atol) {
  if (isnan(want)) return isnan(got);
  if (got == want) return true;
  return fabs(got - want) <= atol + rtol * fabs(want);
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

/* Logical [4, 6] values in five layouts plus the broadcast shapes used by
 * the pairs below. */
enum { L_CONTIG, L_TRANSPOSED, L_SLICED, L_EXPANDED, L_ROW, L_COL, L_SCALAR, L_EMPTY, NL };

static void layouts(em_dtype dt, const double *vals, em_tensor **v) {
  v[L_CONTIG] = mk(dt, 2, (int64_t[]){4, 6}, vals);
  double tv[48];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 6; j++) tv[j * 4 + i] = vals[i * 6 + j];
  em_tensor *b = mk(dt, 2, (int64_t[]){6, 4}, tv);
  v[L_TRANSPOSED] = em_tensor_t(b);
  em_tensor_release(b);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 6; j++) tv[i * 12 + 2 * j] = vals[i * 6 + j], tv[i * 12 + 2 * j + 1] = 9;
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

static const int PAIRS[][2] = {
    {L_CONTIG, L_CONTIG},   {L_TRANSPOSED, L_SLICED}, {L_SLICED, L_TRANSPOSED},
    {L_EXPANDED, L_CONTIG}, {L_CONTIG, L_ROW},        {L_COL, L_ROW},
    {L_SCALAR, L_CONTIG},   {L_TRANSPOSED, L_SCALAR}, {L_SCALAR, L_SCALAR},
    {L_EMPTY, L_ROW},       {L_ROW, L_EMPTY},
};
static const char *const LNAME[NL] = {"contiguous", "transposed", "sliced", "expanded",
                                      "row [6]",    "column [4,1]", "0-dim", "zero-size"};

typedef em_tensor *(*bfn)(em_tensor *, em_tensor *);
typedef em_status (*bfn_)(em_tensor *, em_tensor *);
/* reference on values already in the compute dtype ct; integer results
 * wrapped by the caller */
typedef double (*bref)(double x, double y, em_dtype ct);

/* r = fn(a, b) for every pair of layouts, and fn_(a, b) where a can take
 * the result (same shape, writable). */
static int check_binary(const char *what, bfn fn, bfn_ fn_, bref ref, em_dtype da, em_dtype db,
                        em_dtype ct, em_dtype out_dt, const double *va, const double *vb) {
  em_tensor *A[NL], *B[NL];
  layouts(da, va, A);
  layouts(db, vb, B);
  int ok = 1;
  for (size_t p = 0; ok && p < sizeof PAIRS / sizeof PAIRS[0]; p++) {
    /* a 0-dim operand of another dtype promotes less: covered by hand */
    if (da != db && (PAIRS[p][0] == L_SCALAR || PAIRS[p][1] == L_SCALAR)) continue;
    em_tensor *a = A[PAIRS[p][0]], *b = B[PAIRS[p][1]];
    em_tensor *r = fn(a, b);
    if (!r) {
      fprintf(stderr, "  %s(%s, %s): %s\n", what, LNAME[PAIRS[p][0]], LNAME[PAIRS[p][1]],
              em_last_error());
      ok = 0;
      break;
    }
    if (r->dtype != out_dt) {
      fprintf(stderr, "  %s: dtype %s, expected %s\n", what, em_dtype_name((em_dtype)r->dtype),
              em_dtype_name(out_dt));
      ok = 0;
    }
    em_tensor *ae = em_tensor_expand(a, r->ndim, r->shape);
    em_tensor *be = em_tensor_expand(b, r->ndim, r->shape);
    if (!ae || !be) {
      fprintf(stderr, "  %s: result shape %s is not the broadcast shape\n", what, em__tshape(r));
      ok = 0;
    }
    for (int64_t i = 0; ok && i < r->numel; i++) {
      double x = round_to(em_test_get(ae, i), ct), y = round_to(em_test_get(be, i), ct);
      double want = round_to(ref(x, y, ct), out_dt), got = em_test_get(r, i);
      if (!close_to(got, want, rtol_for(out_dt), 1e-300)) {
        fprintf(stderr,
                "  %s(%s %s, %s %s) element %lld: f(%.17g, %.17g) = %.17g, expected %.17g\n",
                what, LNAME[PAIRS[p][0]], em_dtype_name(da), LNAME[PAIRS[p][1]],
                em_dtype_name(db), (long long)i, x, y, got, want);
        ok = 0;
      }
    }
    bool writable = ok && fn_ && PAIRS[p][0] != L_EXPANDED && r->ndim == a->ndim &&
                    r->numel == a->numel;
    em_tensor_release(ae), em_tensor_release(be), em_tensor_release(r);
    if (!writable) continue;
    em_tensor *before = em_tensor_clone(a);
    em_status st = fn_(a, b);
    if (out_dt != da && !em_can_cast(out_dt, da)) {
      if (st != EM_ERR_DTYPE || !strstr(em_last_error(), "can't be cast to the desired output")) {
        fprintf(stderr, "  %s_: expected a cast error, got %s\n", what, em_status_name(st));
        ok = 0;
      }
    } else if (st) {
      fprintf(stderr, "  %s_(%s, %s): %s\n", what, LNAME[PAIRS[p][0]], LNAME[PAIRS[p][1]],
              em_last_error());
      ok = 0;
    } else {
      em_tensor *be2 = em_tensor_expand(b, a->ndim, a->shape);
      for (int64_t i = 0; ok && i < a->numel; i++) {
        double x = round_to(em_test_get(before, i), ct), y = round_to(em_test_get(be2, i), ct);
        double want = round_to(round_to(ref(x, y, ct), out_dt), da), got = em_test_get(a, i);
        if (!close_to(got, want, rtol_for(da), 1e-300)) {
          fprintf(stderr, "  %s_(%s, %s) element %lld: %.17g, expected %.17g\n", what,
                  LNAME[PAIRS[p][0]], LNAME[PAIRS[p][1]], (long long)i, got, want);
          ok = 0;
        }
      }
      em_tensor_release(be2);
    }
    em_tensor_release(before);
  }
  for (int k = 0; k < NL; k++) em_tensor_release(A[k]), em_tensor_release(B[k]);
  return ok;
}

static const em_dtype FLOATS[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
static const em_dtype INTS[] = {EM_INT8, EM_INT16, EM_INT32, EM_INT64, EM_UINT8};

/* 4 x 6 operands (layouts use slices of them). B holds zeros for the
 * division cases. */
static const double FA[24] = {-7.5, -3, -2, -1, -0.5, 0,    0.5, 1,  2,   3,   7.5, 10,
                              1.25, -4, 6,  9,  -6.5, 0.25, 5,   -5, 4.5, -1.5, 2.5, 12};
static const double FB[24] = {2,  -2, 0.5, 3,   -0.25, 4,  1.5, -1, 0,   2.5, -3,  8,
                              -5, 6,  7,   0.75, 2,    -4, 1,   3,  -2.5, 0.5, 10, -0};
/* integers: small enough for int8 products to be checked with wrapping */
static const double IA[24] = {-7, -3, -2, -1, 0,  1,  2,  3,   5,   7,  10, 12,
                              13, -4, 6,  9,  -6, 11, 50, 100, 127, -128, 30, 99};
static const double IB[24] = {2,  -2, 5, 3,  -1, 4, 3, -1, 7, 2, -3, 8,
                              -5, 6,  7, 1,  2, -4, 1, 3,  2, 4, 10, -9};
static const double UA[24] = {7, 3, 2, 1, 0, 1, 2, 3, 5, 7, 10, 12,
                              13, 4, 6, 9, 6, 11, 50, 100, 127, 200, 30, 255};
static const double UB[24] = {2, 2, 5, 3, 1, 4, 3, 1, 7, 2, 3, 8,
                              5, 6, 7, 1, 2, 4, 1, 3, 2, 4, 10, 9};
static const double BA[24] = {0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0,
                              1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0};
static const double BB[24] = {1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0,
                              0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1};

/* ---- references --------------------------------------------------------------------- */

static bool is_int(em_dtype dt) { return !em_dtype_is_float(dt); }

/* integer arithmetic in uint64 (wraps; the caller narrows to the dtype) */
static double i_(uint64_t v) { return (double)(int64_t)v; }
static double r_add(double x, double y, em_dtype ct) {
  return is_int(ct) ? i_((uint64_t)(int64_t)x + (uint64_t)(int64_t)y) : x + y;
}
static double r_sub(double x, double y, em_dtype ct) {
  return is_int(ct) ? i_((uint64_t)(int64_t)x - (uint64_t)(int64_t)y) : x - y;
}
static double r_mul(double x, double y, em_dtype ct) {
  if (ct == EM_BOOL) return x && y;
  return is_int(ct) ? i_((uint64_t)(int64_t)x * (uint64_t)(int64_t)y) : x * y;
}
static double r_div(double x, double y, em_dtype ct) { return x / y; }
/* Python's float // and % (CPython's float_floor_div / float_rem) */
static double py_floordiv(double x, double y) {
  if (y == 0) return x / y;
  double mod = fmod(x, y), div = (x - mod) / y;
  if (mod != 0 && (y < 0) != (mod < 0)) div -= 1;
  if (div == 0) return copysign(0, x / y);
  double fl = floor(div);
  return div - fl > 0.5 ? fl + 1 : fl;
}
static double py_mod(double x, double y) {
  double mod = fmod(x, y);
  if (mod != 0 && (y < 0) != (mod < 0)) mod += y;
  return mod;
}
static double r_floordiv(double x, double y, em_dtype ct) {
  return is_int(ct) ? floor(x / y) : py_floordiv(x, y);
}
static double r_truncdiv(double x, double y, em_dtype ct) { return trunc(x / y); }
static double r_rem(double x, double y, em_dtype ct) {
  return is_int(ct) ? x - y * floor(x / y) : py_mod(x, y);
}
static double r_fmod(double x, double y, em_dtype ct) { return fmod(x, y); }
static double r_pow(double x, double y, em_dtype ct) {
  if (!is_int(ct)) return pow(x, y);
  if (y < 0) return x == 1 ? 1 : x == -1 ? ((int64_t)y % 2 ? -1 : 1) : 0;
  uint64_t r = 1;
  for (int64_t k = 0; k < (int64_t)y; k++) r *= (uint64_t)(int64_t)x;
  return i_(r);
}
static double r_max(double x, double y, em_dtype ct) {
  return isnan(x) ? x : isnan(y) ? y : x < y ? y : x;
}
static double r_min(double x, double y, em_dtype ct) {
  return isnan(x) ? x : isnan(y) ? y : y < x ? y : x;
}
static double r_atan2(double x, double y, em_dtype ct) { return atan2(x, y); }
static double r_land(double x, double y, em_dtype ct) { return x != 0 && y != 0; }
static double r_lor(double x, double y, em_dtype ct) { return x != 0 || y != 0; }
static double r_lxor(double x, double y, em_dtype ct) { return (x != 0) != (y != 0); }
static double r_band(double x, double y, em_dtype ct) { return (double)((int64_t)x & (int64_t)y); }
static double r_bor(double x, double y, em_dtype ct) { return (double)((int64_t)x | (int64_t)y); }
static double r_bxor(double x, double y, em_dtype ct) { return (double)((int64_t)x ^ (int64_t)y); }
static double r_eq(double x, double y, em_dtype ct) { return x == y; }
static double r_ne(double x, double y, em_dtype ct) { return x != y; }
static double r_lt(double x, double y, em_dtype ct) { return x < y; }
static double r_le(double x, double y, em_dtype ct) { return x <= y; }
static double r_gt(double x, double y, em_dtype ct) { return x > y; }
static double r_ge(double x, double y, em_dtype ct) { return x >= y; }

typedef struct bop {
  const char *name;
  bfn fn;
  bfn_ fn_;
  bref ref;
} bop;
#define B(name, ref) {#name, em_tensor_##name, em_tensor_##name##_, ref}
#define C(name, ref) {#name, em_tensor_##name, NULL, ref}

/* ---- arithmetic over dtypes and layouts --------------------------------------------- */

EM_TEST(float_ops_all_dtypes_and_layouts) {
  const bop ops[] = {B(add, r_add),         B(sub, r_sub),       B(mul, r_mul),
                     B(div, r_div),         B(floor_divide, r_floordiv),
                     B(trunc_divide, r_truncdiv), B(remainder, r_rem), B(fmod, r_fmod),
                     B(pow, r_pow),         B(maximum, r_max),   B(minimum, r_min),
                     B(atan2, r_atan2)};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t d = 0; d < 4; d++)
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, FLOATS[d],
                               FLOATS[d], FLOATS[d], FLOATS[d], FA, FB));
}

EM_TEST(integer_ops_all_dtypes_and_layouts) {
  const bop ops[] = {B(add, r_add),         B(sub, r_sub),         B(mul, r_mul),
                     B(floor_divide, r_floordiv), B(trunc_divide, r_truncdiv),
                     B(remainder, r_rem),   B(fmod, r_fmod),       B(maximum, r_max),
                     B(minimum, r_min),     B(bitwise_and, r_band), B(bitwise_or, r_bor),
                     B(bitwise_xor, r_bxor)};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t d = 0; d < 5; d++) {
      const double *a = INTS[d] == EM_UINT8 ? UA : IA, *b = INTS[d] == EM_UINT8 ? UB : IB;
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, INTS[d], INTS[d],
                               INTS[d], INTS[d], a, b));
    }
  /* pow with small exponents (negative ones give 0 / +-1) */
  static const double pa[24] = {-3, -2, -1, 0, 1, 2, 3, 4, 5, -1, 1, 2,
                                2, -2, 3, 1, -1, 7, 0, 1, 2, 3, 4, 5};
  static const double pb[24] = {0, 1, 2, 3, 4, 5, -1, -2, -3, -3, -4, 6,
                                7, 3, 2, 1, 0, 2, 5, 3, 2, 1, 0, 3};
  for (size_t d = 0; d < 4; d++)
    ASSERT_TRUE(check_binary("pow", em_tensor_pow, em_tensor_pow_, r_pow, INTS[d], INTS[d],
                             INTS[d], INTS[d], pa, pb));
  /* true division and atan2 of integers give the default float */
  for (size_t d = 0; d < 5; d++) {
    const double *a = INTS[d] == EM_UINT8 ? UA : IA, *b = INTS[d] == EM_UINT8 ? UB : IB;
    ASSERT_TRUE(check_binary("div", em_tensor_div, em_tensor_div_, r_div, INTS[d], INTS[d],
                             EM_FLOAT32, EM_FLOAT32, a, b));
    ASSERT_TRUE(check_binary("atan2", em_tensor_atan2, em_tensor_atan2_, r_atan2, INTS[d],
                             INTS[d], EM_FLOAT32, EM_FLOAT32, a, b));
  }
}

EM_TEST(bool_ops) {
  const bop ops[] = {B(add, r_lor),        B(mul, r_mul),         B(maximum, r_max),
                     B(minimum, r_min),    B(bitwise_and, r_band), B(bitwise_or, r_bor),
                     B(bitwise_xor, r_bxor), B(logical_and, r_land), B(logical_or, r_lor),
                     B(logical_xor, r_lxor)};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, EM_BOOL, EM_BOOL,
                             EM_BOOL, EM_BOOL, BA, BB));
  ASSERT_TRUE(check_binary("div", em_tensor_div, em_tensor_div_, r_div, EM_BOOL, EM_BOOL,
                           EM_FLOAT32, EM_FLOAT32, BA, BB));
  em_tensor *a = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  ASSERT_NULL_ERR(em_tensor_sub(a, a), EM_ERR_DTYPE,
                  "sub: Subtraction, the `-` operator, with two bool tensors is not supported. "
                  "Use the `^` or `logical_xor()` operator instead.");
  ASSERT_NULL_ERR(em_tensor_sub_scalar(a, em_scalar_bool(true)), EM_ERR_DTYPE,
                  "with two bool tensors is not supported");
  ASSERT_NULL_ERR(em_tensor_sub_scalar(a, em_scalar_int(1)), EM_ERR_DTYPE,
                  "sub: Subtraction, the `-` operator, with a bool tensor is not supported. If "
                  "you are trying to invert a mask, use the `~` or `logical_not()` operator "
                  "instead.");
  ASSERT_ERR(em_tensor_sub_(a, a), EM_ERR_DTYPE, "sub_: Subtraction, the `-` operator");
  const char *kname[] = {"div_floor_cpu", "div_trunc_cpu", "remainder_cpu", "fmod_cpu", "pow"};
  bfn fns[] = {em_tensor_floor_divide, em_tensor_trunc_divide, em_tensor_remainder,
               em_tensor_fmod, em_tensor_pow};
  for (int k = 0; k < 5; k++) {
    char msg[64];
    snprintf(msg, sizeof msg, "\"%s\" not implemented for 'Bool'", kname[k]);
    ASSERT_NULL_ERR(fns[k](a, a), EM_ERR_DTYPE, msg);
  }
  /* bool + bool stays bool (True + True == True); bool * int scalar is int64 */
  em_tensor *r = em_tensor_add(a, a);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_mul_scalar(a, em_scalar_int(3));
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_bitwise_and_scalar(a, em_scalar_int(1));
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(a);
}

/* logical ops of any dtype give bool; the in-place form keeps self's dtype */
EM_TEST(logical_ops_any_dtype) {
  const bop ops[] = {B(logical_and, r_land), B(logical_or, r_lor), B(logical_xor, r_lxor)};
  static const double za[24] = {0, 1, -2, 0.5, 0, 3, 0, 0, 7, -1, 0, 1,
                                1, 0, 0, 2, 5, 0, 0, 0, 1, 1, 0, 9};
  static const double zb[24] = {1, 0, 0, 2, 0, 3, 0, 9, 0, -1, 0, 1,
                                0, 0, 4, 2, 0, 1, 0, 3, 1, 0, 0, 2};
  for (size_t o = 0; o < 3; o++) {
    for (size_t d = 0; d < 4; d++)
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, FLOATS[d],
                               FLOATS[d], FLOATS[d], EM_BOOL, za, zb));
    for (size_t d = 0; d < 5; d++)
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, INTS[d],
                               INTS[d], INTS[d], EM_BOOL, INTS[d] == EM_UINT8 ? zb : za, zb));
    /* mixed dtypes */
    ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, ops[o].fn_, ops[o].ref, EM_FLOAT32,
                             EM_INT64, EM_FLOAT32, EM_BOOL, za, zb));
  }
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){0.5, 0});
  em_tensor *g = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){2, 1});
  ASSERT_OK(em_tensor_logical_and_(f, g));
  ASSERT_EQ(f->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(f, ((double[]){1, 0}), 0, 0);
  em_tensor *r = em_tensor_logical_xor_scalar(f, em_scalar_int(0));
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r), em_tensor_release(f), em_tensor_release(g);
}

EM_TEST(bitwise_rejects_floats) {
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){1}, (double[]){1});
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){1}, (double[]){1});
  ASSERT_NULL_ERR(em_tensor_bitwise_and(f, f), EM_ERR_DTYPE,
                  "bitwise_and: \"bitwise_and_cpu\" not implemented for 'Float'");
  ASSERT_NULL_ERR(em_tensor_bitwise_or(i, f), EM_ERR_DTYPE,
                  "\"bitwise_or_cpu\" not implemented for 'Float'");
  ASSERT_NULL_ERR(em_tensor_bitwise_xor_scalar(i, em_scalar_float(1.5)), EM_ERR_DTYPE,
                  "\"bitwise_xor_cpu\" not implemented for 'Float'");
  ASSERT_ERR(em_tensor_bitwise_and_(i, f), EM_ERR_DTYPE, "bitwise_and_: \"bitwise_and_cpu\"");
  em_tensor *h = mk(EM_BFLOAT16, 1, (int64_t[]){1}, (double[]){1});
  ASSERT_NULL_ERR(em_tensor_bitwise_and(h, h), EM_ERR_DTYPE, "not implemented for 'BFloat16'");
  /* uint8 ^ int8 promotes to int16: 5 ^ -1 == -6 */
  em_tensor *u = mk(EM_UINT8, 1, (int64_t[]){1}, (double[]){5});
  em_tensor *s = mk(EM_INT8, 1, (int64_t[]){1}, (double[]){-1});
  em_tensor *r = em_tensor_bitwise_xor(u, s);
  ASSERT_EQ(r->dtype, EM_INT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-6}), 0, 0);
  em_tensor_release(r), em_tensor_release(u), em_tensor_release(s), em_tensor_release(h);
  em_tensor_release(f), em_tensor_release(i);
}

/* ---- division semantics ------------------------------------------------------------- */

EM_TEST(float_division_edge_cases) {
  /* Python semantics, values from PyTorch */
  em_tensor *a = mk(EM_FLOAT32, 1, (int64_t[]){6}, (double[]){-1, 5, -0.0, 1, -1, 0});
  em_tensor *b = mk(EM_FLOAT32, 1, (int64_t[]){6},
                    (double[]){INFINITY, INFINITY, 3, 0, 0, 0});
  em_tensor *r = em_tensor_floor_divide(a, b);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 0, -0.0, INFINITY, -INFINITY, NAN}), 0, 0);
  ASSERT_TRUE(signbit(em_test_get(r, 2)));
  em_tensor_release(r);
  em_tensor *one = mk(EM_FLOAT32, 1, (int64_t[]){1}, (double[]){1});
  r = em_tensor_floor_divide_scalar(one, em_scalar_float(0.1)); /* 1 // 0.1 == 9 */
  ASSERT_TENSOR_CLOSE(r, ((double[]){9}), 0, 0);
  em_tensor_release(r);
  em_tensor *c = mk(EM_FLOAT64, 1, (int64_t[]){4}, (double[]){-1, 5, -0.0, 3});
  em_tensor *d = mk(EM_FLOAT64, 1, (int64_t[]){4}, (double[]){INFINITY, -INFINITY, 3, -2});
  r = em_tensor_remainder(c, d);
  ASSERT_TENSOR_CLOSE(r, ((double[]){INFINITY, -INFINITY, -0.0, -1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_fmod(c, d);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 5, -0.0, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor *e = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){-7, 7});
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){2, 0});
  r = em_tensor_trunc_divide(e, f);
  ASSERT_TENSOR_CLOSE(r, ((double[]){-3, INFINITY}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(one), em_tensor_release(c);
  em_tensor_release(d), em_tensor_release(e), em_tensor_release(f);
}

EM_TEST(integer_division_signs) {
  for (size_t d = 0; d < 4; d++) {
    em_tensor *a = mk(INTS[d], 1, (int64_t[]){4}, (double[]){-7, 7, -7, 7});
    em_tensor *b = mk(INTS[d], 1, (int64_t[]){4}, (double[]){2, -2, -2, 2});
    em_tensor *r = em_tensor_floor_divide(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){-4, -4, 3, 3}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_trunc_divide(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){-3, -3, 3, 3}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_remainder(a, b); /* sign of the divisor */
    ASSERT_TENSOR_CLOSE(r, ((double[]){1, -1, -1, 1}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_fmod(a, b); /* sign of the dividend */
    ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 1, -1, 1}), 0, 0);
    em_tensor_release(r);
    em_tensor_release(a), em_tensor_release(b);
  }
}

/* INT_MIN / -1 wraps instead of trapping */
EM_TEST(integer_min_divided_by_minus_one) {
  struct { em_dtype dt; double min; } cases[] = {
      {EM_INT8, -128}, {EM_INT16, -32768}, {EM_INT32, -2147483648.0}};
  for (size_t k = 0; k < 3; k++) {
    em_tensor *a = mk(cases[k].dt, 1, (int64_t[]){2}, (double[]){cases[k].min, 5});
    em_tensor *b = mk(cases[k].dt, 1, (int64_t[]){2}, (double[]){-1, -1});
    em_tensor *r = em_tensor_floor_divide(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){cases[k].min, -5}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_trunc_divide(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){cases[k].min, -5}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_remainder(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
    em_tensor_release(r);
    r = em_tensor_fmod(a, b);
    ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
    em_tensor_release(r);
    em_tensor_release(a), em_tensor_release(b);
  }
  em_tensor *a = em_tensor_full(EM_DIMS(3), em_scalar_int(INT64_MIN), EM_INT64);
  em_tensor *r = em_tensor_floor_divide_scalar(a, em_scalar_int(-1));
  ASSERT_EQ(((int64_t *)em_tensor_data(r))[0], INT64_MIN);
  em_tensor_release(r);
  r = em_tensor_remainder_scalar(a, em_scalar_int(-1));
  ASSERT_EQ(((int64_t *)em_tensor_data(r))[2], 0);
  em_tensor_release(r);
  em_tensor_release(a);
}

EM_TEST(integer_division_by_zero_is_an_error) {
  bfn fns[] = {em_tensor_floor_divide, em_tensor_trunc_divide, em_tensor_remainder,
               em_tensor_fmod};
  bfn_ fns_[] = {em_tensor_floor_divide_, em_tensor_trunc_divide_, em_tensor_remainder_,
                 em_tensor_fmod_};
  em_tensor *(*fs[])(em_tensor *, em_scalar) = {
      em_tensor_floor_divide_scalar, em_tensor_trunc_divide_scalar, em_tensor_remainder_scalar,
      em_tensor_fmod_scalar};
  for (size_t d = 0; d < 5; d++) {
    em_tensor *a = mk(INTS[d], 2, (int64_t[]){2, 2}, (double[]){1, 2, 3, 4});
    em_tensor *b = mk(INTS[d], 2, (int64_t[]){2, 2}, (double[]){1, 2, 0, 4});
    em_tensor *bt = em_tensor_t(b); /* the zero read through a view */
    for (int k = 0; k < 4; k++) {
      ASSERT_NULL_ERR(fns[k](a, bt), EM_ERR_INVALID, "ZeroDivisionError");
      ASSERT_NULL_ERR(fs[k](a, em_scalar_int(0)), EM_ERR_INVALID, "ZeroDivisionError");
      ASSERT_ERR(fns_[k](a, b), EM_ERR_INVALID, "ZeroDivisionError");
      ASSERT_TENSOR_CLOSE(a, ((double[]){1, 2, 3, 4}), 0, 0); /* unchanged */
    }
    /* a float divisor: IEEE results, no error */
    em_tensor *r = em_tensor_remainder_scalar(a, em_scalar_float(0));
    ASSERT_EQ(r->dtype, EM_FLOAT32);
    ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, NAN, NAN}), 0, 0);
    em_tensor_release(r);
    em_tensor_release(bt), em_tensor_release(a), em_tensor_release(b);
  }
  /* 256 becomes 0 as a uint8 divisor */
  em_tensor *u = mk(EM_UINT8, 1, (int64_t[]){1}, (double[]){3});
  ASSERT_NULL_ERR(em_tensor_floor_divide_scalar(u, em_scalar_int(256)), EM_ERR_INVALID,
                  "floor_divide: ZeroDivisionError");
  em_tensor_release(u);
}

/* ---- pow ---------------------------------------------------------------------------- */

EM_TEST(pow_tensor_semantics) {
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){3}, (double[]){0, 2, -2});
  em_tensor *m1 = mk(EM_INT64, 1, (int64_t[]){3}, (double[]){-1, -1, -1});
  em_tensor *r = em_tensor_pow(i, m1); /* a tensor exponent: no error */
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0, 0}), 0, 0);
  em_tensor_release(r);
  em_tensor *w = em_tensor_wrapped_scalar(em_scalar_int(-1));
  ASSERT_NULL_ERR(em_tensor_pow(i, w), EM_ERR_INVALID,
                  "Integers to negative integer powers are not allowed.");
  ASSERT_ERR(em_tensor_pow_(i, w), EM_ERR_INVALID, "pow_: Integers to negative integer powers");
  em_tensor *z = mk(EM_INT64, 0, NULL, (double[]){-1}); /* a 0-dim tensor is a tensor */
  r = em_tensor_pow(i, z);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0, 0}), 0, 0);
  em_tensor_release(r);
  /* a wrapped base: 2 ** tensor */
  em_tensor *two = em_tensor_wrapped_scalar(em_scalar_int(2));
  em_tensor *e = mk(EM_INT32, 1, (int64_t[]){3}, (double[]){-1, 3, 10});
  r = em_tensor_pow(two, e);
  ASSERT_EQ(r->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 8, 1024}), 0, 0);
  em_tensor_release(r);
  /* float: pow(x, 0) == 1 even for NaN; negative base, fractional exponent: NaN */
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){4}, (double[]){-8, 0, NAN, 2});
  em_tensor *g = mk(EM_FLOAT32, 1, (int64_t[]){4}, (double[]){1.0 / 3, -1, 0, 0.5});
  r = em_tensor_pow(f, g);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, INFINITY, 1, sqrt(2.0)}), 1e-6, 0);
  em_tensor_release(r);
  /* pow_scalar through the binary name */
  r = em_tensor_pow_scalar(f, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r, ((double[]){64, 0, NAN, 4}), 0, 0);
  em_tensor_release(r);
  ASSERT_OK(em_tensor_pow_(f, g));
  ASSERT_TENSOR_CLOSE(f, ((double[]){NAN, INFINITY, 1, sqrt(2.0)}), 1e-6, 0);
  em_tensor_release(i), em_tensor_release(m1), em_tensor_release(w), em_tensor_release(z);
  em_tensor_release(two), em_tensor_release(e), em_tensor_release(f), em_tensor_release(g);
}

EM_TEST(maximum_minimum_nan) {
  em_tensor *a = mk(EM_FLOAT32, 1, (int64_t[]){3}, (double[]){1, NAN, 2});
  em_tensor *b = mk(EM_FLOAT32, 1, (int64_t[]){3}, (double[]){NAN, 3, 1});
  em_tensor *r = em_tensor_maximum(a, b);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, 2}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_minimum(a, b);
  ASSERT_TENSOR_CLOSE(r, ((double[]){NAN, NAN, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(a), em_tensor_release(b);
}

/* ---- comparisons -------------------------------------------------------------------- */

EM_TEST(comparisons_all_dtypes) {
  const bop ops[] = {C(eq, r_eq), C(ne, r_ne), C(lt, r_lt), C(le, r_le), C(gt, r_gt), C(ge, r_ge)};
  /* shared values so that equality happens */
  static const double ca[24] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                0, 1, 0, 3, 4, 100, 6, 7, 2, 9, 1, 0};
  static const double cb[24] = {1, 3, 2, 4, 6, 5, 7, 9, 8, 10, 0, 12,
                                1, 0, 0, 2, 4, 5, 6, 8, 2, 1, 1, 1};
  for (size_t o = 0; o < 6; o++) {
    for (size_t d = 0; d < 4; d++)
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, NULL, ops[o].ref, FLOATS[d], FLOATS[d],
                               FLOATS[d], EM_BOOL, FA, FB));
    for (size_t d = 0; d < 5; d++)
      ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, NULL, ops[o].ref, INTS[d], INTS[d],
                               INTS[d], EM_BOOL, ca, cb));
    ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, NULL, ops[o].ref, EM_BOOL, EM_BOOL,
                             EM_BOOL, EM_BOOL, BA, BB));
    /* mixed: compared in the promoted dtype */
    ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, NULL, ops[o].ref, EM_INT32, EM_FLOAT64,
                             EM_FLOAT64, EM_BOOL, ca, FB));
    ASSERT_TRUE(check_binary(ops[o].name, ops[o].fn, NULL, ops[o].ref, EM_UINT8, EM_INT8,
                             EM_INT16, EM_BOOL, ca, cb));
  }
  em_tensor *n = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){NAN, 1});
  em_tensor *r = em_tensor_eq(n, n);
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_ne(n, n);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(n);
}

EM_TEST(comparison_scalars) {
  em_tensor *i = mk(EM_INT64, 1, (int64_t[]){3}, (double[]){1, 2, 3});
  em_tensor *r = em_tensor_lt_scalar(i, em_scalar_float(1.5)); /* in float */
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_eq_scalar(i, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_ge_scalar(i, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 1}), 0, 0);
  em_tensor_release(r);
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1.5, 1});
  r = em_tensor_eq_scalar(f, em_scalar_int(1));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_ne_scalar(f, em_scalar_float(1.5));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_gt_scalar(f, em_scalar_bool(true));
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_le_scalar(f, em_scalar_float(1.25));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1}), 0, 0);
  em_tensor_release(r);
  /* the scalar is converted to the tensor's integer dtype, as in PyTorch:
   * 300 becomes 44 in int8, -1 becomes 255 in uint8 */
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){2}, (double[]){44, 45});
  r = em_tensor_eq_scalar(i8, em_scalar_int(300));
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  em_tensor *u8 = mk(EM_UINT8, 1, (int64_t[]){1}, (double[]){0});
  r = em_tensor_lt_scalar(u8, em_scalar_int(-1));
  ASSERT_TENSOR_CLOSE(r, ((double[]){1}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(i), em_tensor_release(f), em_tensor_release(i8), em_tensor_release(u8);
}

/* ---- type promotion ----------------------------------------------------------------- */

EM_TEST(promotion) {
  em_tensor *i32 = mk(EM_INT32, 1, (int64_t[]){2}, (double[]){1, -2});
  em_tensor *r = em_tensor_add_scalar(i32, em_scalar_float(2.5));
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3.5, 0.5}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_add_scalar(i32, em_scalar_int(5));
  ASSERT_EQ(r->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){6, 3}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_mul_scalar(i32, em_scalar_int(1LL << 33)); /* wraps in int32 */
  ASSERT_EQ(r->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
  em_tensor_release(r);

  em_tensor *u8 = mk(EM_UINT8, 1, (int64_t[]){1}, (double[]){200});
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){1}, (double[]){100});
  r = em_tensor_add(u8, i8);
  ASSERT_EQ(r->dtype, EM_INT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){300}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_add_scalar(u8, em_scalar_int(300)); /* 300 -> 44 as uint8: 244 */
  ASSERT_EQ(r->dtype, EM_UINT8);
  ASSERT_TENSOR_CLOSE(r, ((double[]){244}), 0, 0);
  em_tensor_release(r);

  em_tensor *h = mk(EM_FLOAT16, 1, (int64_t[]){1}, (double[]){1.5});
  em_tensor *d0 = mk(EM_FLOAT64, 0, NULL, (double[]){2.5});
  r = em_tensor_add(h, d0); /* a 0-dim float64 does not promote a float16 tensor */
  ASSERT_EQ(r->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(r, ((double[]){4}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_add(i32, d0); /* but it does promote an integer one */
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3.5, 0.5}), 0, 0);
  em_tensor_release(r);
  em_tensor *i0 = mk(EM_INT64, 0, NULL, (double[]){1});
  r = em_tensor_add(i0, d0);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_SCALAR_SHAPE(r);
  ASSERT_CLOSE(em_tensor_item_double(r), 3.5, 0, 0);
  em_tensor_release(r);
  em_tensor *b16 = mk(EM_BFLOAT16, 1, (int64_t[]){1}, (double[]){2});
  r = em_tensor_mul(b16, h);
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){3}), 0, 0);
  em_tensor_release(r);
  em_tensor *f32 = mk(EM_FLOAT32, 1, (int64_t[]){1}, (double[]){0.1});
  em_tensor *f64 = mk(EM_FLOAT64, 1, (int64_t[]){1}, (double[]){0.2});
  r = em_tensor_add(f32, f64);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){(double)0.1f + 0.2}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_div(i32, i32);
  ASSERT_EQ(r->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 1}), 0, 0);
  em_tensor_release(r);
  ASSERT_OK(em_set_default_dtype(EM_FLOAT64));
  r = em_tensor_div_scalar(i32, em_scalar_int(3));
  em_set_default_dtype(EM_FLOAT32);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1.0 / 3, -2.0 / 3}), 1e-16, 0);
  em_tensor_release(r);
  em_tensor_release(i32), em_tensor_release(u8), em_tensor_release(i8), em_tensor_release(h);
  em_tensor_release(d0), em_tensor_release(i0), em_tensor_release(b16);
  em_tensor_release(f32), em_tensor_release(f64);
}

EM_TEST(scalar_forms_of_every_op) {
  em_tensor *f = mk(EM_FLOAT64, 1, (int64_t[]){3}, (double[]){-7.5, 2, 9});
  struct { em_tensor *(*fn)(em_tensor *, em_scalar); bref ref; } ops[] = {
      {em_tensor_add_scalar, r_add},       {em_tensor_sub_scalar, r_sub},
      {em_tensor_mul_scalar, r_mul},       {em_tensor_div_scalar, r_div},
      {em_tensor_floor_divide_scalar, r_floordiv}, {em_tensor_trunc_divide_scalar, r_truncdiv},
      {em_tensor_remainder_scalar, r_rem}, {em_tensor_fmod_scalar, r_fmod},
      {em_tensor_pow_scalar, r_pow},       {em_tensor_maximum_scalar, r_max},
      {em_tensor_minimum_scalar, r_min},   {em_tensor_atan2_scalar, r_atan2},
      {em_tensor_logical_and_scalar, r_land}, {em_tensor_logical_or_scalar, r_lor},
      {em_tensor_logical_xor_scalar, r_lxor}};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    em_tensor *r = ops[k].fn(f, em_scalar_float(-2.5));
    ASSERT_NOTNULL(r);
    ASSERT_EQ(r->numel, 3);
    for (int i = 0; i < 3; i++)
      ASSERT_CLOSE(em_test_get(r, i), ops[k].ref(em_test_get(f, i), -2.5, EM_FLOAT64), 1e-15, 0);
    em_tensor_release(r);
  }
  em_tensor *i = mk(EM_INT16, 1, (int64_t[]){3}, (double[]){-7, 12, 5});
  struct { em_tensor *(*fn)(em_tensor *, em_scalar); bref ref; } iops[] = {
      {em_tensor_bitwise_and_scalar, r_band}, {em_tensor_bitwise_or_scalar, r_bor},
      {em_tensor_bitwise_xor_scalar, r_bxor}, {em_tensor_remainder_scalar, r_rem},
      {em_tensor_floor_divide_scalar, r_floordiv}, {em_tensor_sub_scalar, r_sub}};
  for (size_t k = 0; k < sizeof iops / sizeof iops[0]; k++) {
    em_tensor *r = iops[k].fn(i, em_scalar_int(-3));
    ASSERT_NOTNULL(r);
    ASSERT_EQ(r->dtype, EM_INT16);
    for (int j = 0; j < 3; j++)
      ASSERT_CLOSE(em_test_get(r, j), iops[k].ref(em_test_get(i, j), -3, EM_INT16), 0, 0);
    em_tensor_release(r);
  }
  em_tensor_release(f), em_tensor_release(i);
}

EM_TEST(add_sub_alpha) {
  em_tensor *a = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *b = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){4, -8});
  em_tensor *r = em_tensor_add_alpha(a, b, em_scalar_float(0.5));
  ASSERT_TENSOR_CLOSE(r, ((double[]){3, -2}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_sub_alpha(a, b, em_scalar_int(3));
  ASSERT_TENSOR_CLOSE(r, ((double[]){-11, 26}), 0, 0);
  em_tensor_release(r);
  ASSERT_OK(em_tensor_add_alpha_(a, b, em_scalar_float(-0.25)));
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 4}), 0, 0);
  ASSERT_OK(em_tensor_sub_alpha_(a, b, em_scalar_float(0.5)));
  ASSERT_TENSOR_CLOSE(a, ((double[]){-2, 8}), 0, 0);
  /* integers: alpha wraps with the product (PyTorch: [45, -110]) */
  em_tensor *x = mk(EM_INT8, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *y = mk(EM_INT8, 1, (int64_t[]){2}, (double[]){3, 4});
  r = em_tensor_add_alpha(x, y, em_scalar_int(100));
  ASSERT_TENSOR_CLOSE(r, ((double[]){45, -110}), 0, 0);
  em_tensor_release(r);
  ASSERT_NULL_ERR(em_tensor_add_alpha(x, y, em_scalar_float(0.5)), EM_ERR_DTYPE,
                  "add: For integral input tensors, argument alpha must not be a floating point "
                  "number.");
  ASSERT_ERR(em_tensor_sub_alpha_(x, y, em_scalar_float(2)), EM_ERR_DTYPE,
             "sub_: For integral input tensors");
  ASSERT_NULL_ERR(em_tensor_add_alpha(x, y, em_scalar_bool(true)), EM_ERR_DTYPE,
                  "Boolean alpha only supported for Boolean results.");
  em_tensor *t = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){0, 0});
  em_tensor *u = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  r = em_tensor_add_alpha(t, u, em_scalar_int(2)); /* bool result: alpha acts as true */
  ASSERT_EQ(r->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0}), 0, 0);
  em_tensor_release(r);
  r = em_tensor_add_alpha(t, u, em_scalar_bool(false));
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 0}), 0, 0);
  em_tensor_release(r);
  /* a float alpha with a float result from int inputs is fine */
  em_tensor *f = mk(EM_FLOAT64, 1, (int64_t[]){2}, (double[]){1, 1});
  r = em_tensor_add_alpha(x, f, em_scalar_float(0.5));
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1.5, 2.5}), 0, 0);
  em_tensor_release(r);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(x), em_tensor_release(y);
  em_tensor_release(t), em_tensor_release(u), em_tensor_release(f);
}

/* ---- in place ----------------------------------------------------------------------- */

EM_TEST(inplace_rules) {
  em_tensor *i32 = mk(EM_INT32, 1, (int64_t[]){2}, (double[]){1, 2});
  em_tensor *f = mk(EM_FLOAT32, 1, (int64_t[]){2}, (double[]){0.5, 0.25});
  em_tensor *w = em_tensor_wrapped_scalar(em_scalar_float(2.5));
  ASSERT_ERR(em_tensor_add_(i32, w), EM_ERR_DTYPE,
             "add_: result type Float can't be cast to the desired output type Int");
  em_tensor *i64 = mk(EM_INT64, 1, (int64_t[]){2}, (double[]){1, 2});
  ASSERT_ERR(em_tensor_mul_(i64, f), EM_ERR_DTYPE,
             "mul_: result type Float can't be cast to the desired output type Long");
  ASSERT_ERR(em_tensor_div_(i64, i64), EM_ERR_DTYPE,
             "div_: result type Float can't be cast to the desired output type Long");
  em_tensor *b = mk(EM_BOOL, 1, (int64_t[]){2}, (double[]){1, 0});
  ASSERT_ERR(em_tensor_mul_(b, i64), EM_ERR_DTYPE,
             "mul_: result type Long can't be cast to the desired output type Bool");
  ASSERT_TENSOR_CLOSE(i64, ((double[]){1, 2}), 0, 0);

  /* the broadcast shape must be self's */
  em_tensor *one = mk(EM_FLOAT32, 1, (int64_t[]){1}, (double[]){1});
  ASSERT_ERR(em_tensor_add_(one, f), EM_ERR_SHAPE,
             "add_: output with shape [1] doesn't match the broadcast shape [2]");
  em_tensor *c = em_tensor_ones(EM_DIMS(2, 1), EM_FLOAT32);
  em_tensor *r3 = em_tensor_ones(EM_DIMS(1, 3), EM_FLOAT32);
  ASSERT_ERR(em_tensor_sub_(c, r3), EM_ERR_SHAPE,
             "sub_: output with shape [2, 1] doesn't match the broadcast shape [2, 3]");
  em_tensor *m23 = em_tensor_ones(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *v4 = em_tensor_ones(EM_DIMS(4), EM_FLOAT32);
  ASSERT_ERR(em_tensor_add_(m23, v4), EM_ERR_SHAPE,
             "add_: the size of tensor a (3) must match the size of tensor b (4)");
  ASSERT_NULL_ERR(em_tensor_add(m23, v4), EM_ERR_SHAPE,
                  "add: the size of tensor a (3) must match the size of tensor b (4)");

  /* self keeps its dtype: float32 += float64, int8 += int64 (wraps) */
  em_tensor *d = mk(EM_FLOAT64, 1, (int64_t[]){2}, (double[]){0.1, 1e-10});
  ASSERT_OK(em_tensor_add_(f, d));
  ASSERT_EQ(f->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(f, ((double[]){(float)(0.5 + 0.1), (float)(0.25 + 1e-10)}), 0, 0);
  em_tensor *i8 = mk(EM_INT8, 1, (int64_t[]){1}, (double[]){100});
  em_tensor *h = mk(EM_INT64, 1, (int64_t[]){1}, (double[]){100});
  ASSERT_OK(em_tensor_add_(i8, h));
  ASSERT_EQ(i8->dtype, EM_INT8);
  ASSERT_TENSOR_CLOSE(i8, ((double[]){-56}), 0, 0);
  /* int32 with an int scalar and float32 with a float scalar */
  em_tensor *s = em_tensor_wrapped_scalar(em_scalar_int(3));
  ASSERT_OK(em_tensor_mul_(i32, s));
  ASSERT_TENSOR_CLOSE(i32, ((double[]){3, 6}), 0, 0);
  ASSERT_OK(em_tensor_sub_(f, w));
  ASSERT_TENSOR_CLOSE(f, ((double[]){(float)(0.5 + 0.1) - 2.5f, (float)(0.25 + 1e-10) - 2.5f}),
                      0, 0);
  /* version counter */
  uint64_t v = em_tensor_version(i32);
  ASSERT_OK(em_tensor_add_(i32, i32));
  ASSERT_TRUE(em_tensor_version(i32) > v);
  ASSERT_TENSOR_CLOSE(i32, ((double[]){6, 12}), 0, 0);
  /* an expanded self cannot be written */
  em_tensor *e = em_tensor_expand(one, 1, (int64_t[]){2});
  ASSERT_ERR(em_tensor_add_(e, f), EM_ERR_INVALID, "more than one element of the written-to");
  em_tensor_release(e), em_tensor_release(s), em_tensor_release(i8), em_tensor_release(h);
  em_tensor_release(d), em_tensor_release(m23), em_tensor_release(v4), em_tensor_release(c);
  em_tensor_release(r3), em_tensor_release(one), em_tensor_release(b), em_tensor_release(i64);
  em_tensor_release(w), em_tensor_release(f), em_tensor_release(i32);
}

/* a op= a, a op= a^T (overlapping in another layout), a view op= x */
EM_TEST(inplace_aliasing) {
  double v[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  em_tensor *a = mk(EM_FLOAT32, 2, (int64_t[]){3, 3}, v);
  ASSERT_OK(em_tensor_mul_(a, a));
  ASSERT_TENSOR_CLOSE(a, ((double[]){1, 4, 9, 16, 25, 36, 49, 64, 81}), 0, 0);
  em_tensor_release(a);
  a = mk(EM_FLOAT32, 2, (int64_t[]){3, 3}, v);
  em_tensor *at = em_tensor_t(a);
  ASSERT_OK(em_tensor_add_(a, at));
  ASSERT_TENSOR_CLOSE(a, ((double[]){2, 6, 10, 6, 10, 14, 10, 14, 18}), 0, 0);
  em_tensor_release(at), em_tensor_release(a);
  /* through a step-sliced view: only every other column changes */
  em_tensor *base = mk(EM_INT32, 2, (int64_t[]){2, 4}, (double[]){1, 2, 3, 4, 5, 6, 7, 8});
  em_tensor *sl = em_tensor_slice(base, 1, 0, INT64_MAX, 2);
  em_tensor *ten = mk(EM_INT32, 1, (int64_t[]){2}, (double[]){10, 20});
  ASSERT_OK(em_tensor_add_(sl, ten));
  ASSERT_TENSOR_CLOSE(base, ((double[]){11, 2, 23, 4, 15, 6, 27, 8}), 0, 0);
  /* shifted overlap in the same storage: base[0, 1:] -= base[0, :3] */
  em_tensor *row = em_tensor_select(base, 0, 0);
  em_tensor *hi = em_tensor_narrow(row, 0, 1, 3), *lo = em_tensor_narrow(row, 0, 0, 3);
  ASSERT_OK(em_tensor_sub_(hi, lo));
  ASSERT_TENSOR_CLOSE(row, ((double[]){11, 2 - 11, 23 - 2, 4 - 23}), 0, 0);
  em_tensor_release(hi), em_tensor_release(lo), em_tensor_release(row);
  em_tensor_release(ten), em_tensor_release(sl), em_tensor_release(base);
}

/* Above the grain the work is split across threads (broadcast operand). */
EM_TEST(large_tensors_threaded) {
  int64_t R = 400, Cn = 500;
  em_tensor *a = em_tensor_empty(EM_DIMS(R, Cn), EM_FLOAT32);
  em_tensor *b = em_tensor_empty(EM_DIMS(Cn), EM_FLOAT32);
  float *pa = em_tensor_data(a), *pb = em_tensor_data(b);
  for (int64_t i = 0; i < R * Cn; i++) pa[i] = (float)(i % 97) - 48;
  for (int64_t j = 0; j < Cn; j++) pb[j] = (float)j * 0.5f;
  em_tensor *r = em_tensor_add(a, b);
  em_tensor *q = em_tensor_mul(b, a);
  em_tensor *g = em_tensor_gt(a, b);
  const float *pr = em_tensor_data(r), *pq = em_tensor_data(q);
  const bool *pg = em_tensor_data(g);
  for (int64_t i = 0; i < R * Cn; i++) {
    ASSERT_CLOSE(pr[i], pa[i] + pb[i % Cn], 0, 0);
    ASSERT_CLOSE(pq[i], pa[i] * pb[i % Cn], 0, 0);
    ASSERT_EQ(pg[i], pa[i] > pb[i % Cn]);
  }
  ASSERT_OK(em_tensor_sub_(a, b));
  for (int64_t i = 0; i < R * Cn; i++) ASSERT_CLOSE(pa[i], (float)(i % 97) - 48 - pb[i % Cn], 0, 0);
  em_tensor_release(r), em_tensor_release(q), em_tensor_release(g);
  em_tensor_release(a), em_tensor_release(b);
}

EM_TEST(null_arguments) {
  em_tensor *a = em_tensor_ones(EM_DIMS(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_add(a, NULL), EM_ERR_INVALID, "add: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_lt(NULL, a), EM_ERR_INVALID, "lt: NULL tensor");
  ASSERT_ERR(em_tensor_mul_(NULL, a), EM_ERR_INVALID, "mul_: NULL tensor");
  ASSERT_NULL_ERR(em_tensor_sub_scalar(NULL, em_scalar_int(1)), EM_ERR_INVALID, "NULL tensor");
  em_tensor_release(a);
}

EM_TEST_MAIN()
