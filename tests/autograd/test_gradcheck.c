/* gradcheck over every differentiable core op: central differences in
 * float64 against backward, on contiguous, non-contiguous (transposed,
 * step-sliced) and broadcast inputs. */
#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "tests/harness.h"

#define EPS 1e-6
#define ATOL 1e-5
#define RTOL 1e-3

/* A float64 input of shape s with values uniform in [lo, hi). layout 0:
 * contiguous; 1: a transposed view (last two dims swapped in memory);
 * 2: every other element of a larger tensor along dim 0. */
static em_tensor *mk(int ndim, const int64_t *s, double lo, double hi, int layout) {
  em_tensor *t = NULL;
  if (layout == 1 && ndim >= 2) {
    int64_t sw[EM_MAX_DIMS];
    memcpy(sw, s, sizeof(int64_t) * ndim);
    sw[ndim - 1] = s[ndim - 2];
    sw[ndim - 2] = s[ndim - 1];
    em_tensor *b = em_tensor_empty(ndim, sw, EM_FLOAT64);
    em_tensor_uniform_(b, lo, hi, NULL);
    t = em_tensor_transpose(b, ndim - 2, ndim - 1);
    em_tensor_release(b);
  } else if (layout == 2 && ndim >= 1) {
    int64_t s2[EM_MAX_DIMS];
    memcpy(s2, s, sizeof(int64_t) * ndim);
    s2[0] = 2 * s[0];
    em_tensor *b = em_tensor_empty(ndim, s2, EM_FLOAT64);
    em_tensor_uniform_(b, lo, hi, NULL);
    t = em_tensor_slice(b, 0, 1, INT64_MAX, 2);
    em_tensor_release(b);
  } else {
    t = em_tensor_empty(ndim, s, EM_FLOAT64);
    em_tensor_uniform_(t, lo, hi, NULL);
  }
  em_tensor_set_requires_grad(t, true);
  return t;
}
#define MK(lo, hi, layout, ...) mk(EM_DIMS(__VA_ARGS__), lo, hi, layout)

typedef em_tensor *(*fn1)(em_tensor *);
typedef em_tensor *(*fn2)(em_tensor *, em_tensor *);

static em_tensor *call1(int n, em_tensor *const *in, void *ctx) { return ((fn1)ctx)(in[0]); }
static em_tensor *call2(int n, em_tensor *const *in, void *ctx) { return ((fn2)ctx)(in[0], in[1]); }

static int check(const char *what, em_ag_gradcheck_fn f, void *ctx, int n, em_tensor **in) {
  em_clear_error();
  em_status st = em_ag_gradcheck(f, ctx, n, in, EPS, ATOL, RTOL);
  for (int i = 0; i < n; i++) em_tensor_release(in[i]);
  if (st) {
    fprintf(stderr, "  gradcheck %s: %s\n", what, em_last_error());
    return 0;
  }
  return 1;
}

#define CHECK1(name, fn, lo, hi, layout, ...)                                    \
  do {                                                                           \
    em_tensor *in_[1] = {MK(lo, hi, layout, __VA_ARGS__)};                       \
    if (!check(name, call1, (void *)(fn), 1, in_)) em_test_failed_now = 1;       \
  } while (0)

#define CHECK2(name, fn, a, b)                                                   \
  do {                                                                           \
    em_tensor *in_[2] = {a, b};                                                  \
    if (!check(name, call2, (void *)(fn), 2, in_)) em_test_failed_now = 1;       \
  } while (0)

/* ---- unary ---------------------------------------------------------------- */

#define UNARY_CASES(X)                                                          \
  X(neg, -1, 1) X(abs, 0.2, 1) X(exp, -1, 1) X(exp2, -1, 1) X(log, 0.5, 2)      \
  X(log2, 0.5, 2) X(log10, 0.5, 2) X(log1p, 0, 1) X(expm1, -1, 1) X(sqrt, 0.5, 2) \
  X(rsqrt, 0.5, 2) X(reciprocal, 0.5, 2) X(square, -1, 1) X(sin, -2, 2)         \
  X(cos, -2, 2) X(tan, -1, 1) X(asin, -0.8, 0.8) X(acos, -0.8, 0.8)             \
  X(atan, -2, 2) X(sinh, -1, 1) X(cosh, -1, 1) X(tanh, -2, 2) X(sigmoid, -3, 3) \
  X(erf, -2, 2) X(relu, 0.1, 1) X(silu, -2, 2) X(frac, 0.1, 0.9)

EM_TEST(unary_ops) {
#define X(name, lo, hi)                                      \
  CHECK1(#name, em_tensor_##name, lo, hi, 0, 3, 4);          \
  CHECK1(#name " (transposed)", em_tensor_##name, lo, hi, 1, 3, 4);
  UNARY_CASES(X)
#undef X
}

static em_tensor *neg_abs(em_tensor *x) { /* abs and relu across zero */
  em_tensor *a = em_tensor_abs(x), *r = em_tensor_relu(x);
  em_tensor *s = em_tensor_add(a, r);
  em_tensor_release(a), em_tensor_release(r);
  return s;
}
static em_tensor *leaky(em_tensor *x) { return em_tensor_leaky_relu(x, 0.1); }
static em_tensor *gelu_exact(em_tensor *x) { return em_tensor_gelu(x, false); }
static em_tensor *gelu_tanh(em_tensor *x) { return em_tensor_gelu(x, true); }
static em_tensor *softplus(em_tensor *x) { return em_tensor_softplus(x, 2.0, 1.5); }
static em_tensor *elu(em_tensor *x) { return em_tensor_elu(x, 0.7); }
static em_tensor *hardtanh(em_tensor *x) { return em_tensor_hardtanh(x, -0.5, 0.5); }
static em_tensor *clamp(em_tensor *x) { return em_tensor_clamp(x, true, -0.5, true, 0.4); }
static em_tensor *clamp_min(em_tensor *x) { return em_tensor_clamp(x, true, -0.5, false, 0); }
static em_tensor *pow3(em_tensor *x) { return em_tensor_pow_scalar(x, em_scalar_float(2.5)); }
static em_tensor *rpow(em_tensor *x) { return em_tensor_rpow_scalar(em_scalar_float(1.7), x); }
static em_tensor *floor_plus(em_tensor *x) { /* floor's gradient is zero */
  em_tensor *f = em_tensor_floor(x);
  em_tensor *s = em_tensor_add(f, x);
  em_tensor_release(f);
  return s;
}

EM_TEST(unary_extra_ops) {
  CHECK1("abs+relu", neg_abs, -1, 1, 1, 4, 3);
  CHECK1("leaky_relu", leaky, -1, 1, 0, 3, 4);
  CHECK1("gelu", gelu_exact, -2, 2, 1, 3, 4);
  CHECK1("gelu_tanh", gelu_tanh, -2, 2, 0, 3, 4);
  CHECK1("softplus", softplus, -1.5, 1.5, 0, 3, 4);
  CHECK1("elu", elu, -1, 1, 2, 3, 4);
  CHECK1("hardtanh", hardtanh, -1, 1, 0, 3, 4);
  CHECK1("clamp", clamp, -1, 1, 1, 3, 4);
  CHECK1("clamp_min", clamp_min, -1, 1, 0, 5);
  CHECK1("pow_scalar", pow3, 0.5, 2, 0, 3, 4);
  CHECK1("rpow_scalar", rpow, -1, 1, 0, 3, 4);
  CHECK1("floor", floor_plus, 0.1, 0.9, 0, 6);
}

/* ---- binary --------------------------------------------------------------- */

static em_tensor *add_alpha(em_tensor *a, em_tensor *b) { return em_tensor_add_alpha(a, b, em_scalar_float(-2.5)); }
static em_tensor *sub_alpha(em_tensor *a, em_tensor *b) { return em_tensor_sub_alpha(a, b, em_scalar_float(0.5)); }

#define BINARY_CASES(X)                                                                   \
  X(add, -1, 1, -1, 1) X(sub, -1, 1, -1, 1) X(mul, -1, 1, -1, 1) X(div, -1, 1, 0.5, 2)       \
  X(pow, 0.5, 2, -1, 1) X(maximum, -1, 1, -1, 1) X(minimum, -1, 1, -1, 1)                  \
  X(atan2, -1, 1, 0.5, 1) X(remainder, 1, 3, 0.7, 0.9) X(fmod, 1, 3, 0.7, 0.9)

EM_TEST(binary_ops) {
#define X(name, alo, ahi, blo, bhi)                                                        \
  CHECK2(#name, em_tensor_##name, MK(alo, ahi, 0, 3, 4), MK(blo, bhi, 0, 3, 4));            \
  CHECK2(#name " (broadcast)", em_tensor_##name, MK(alo, ahi, 0, 3, 1), MK(blo, bhi, 2, 1, 4)); \
  CHECK2(#name " (strided)", em_tensor_##name, MK(alo, ahi, 2, 3, 4), MK(blo, bhi, 1, 3, 4));
  BINARY_CASES(X)
#undef X
  CHECK2("add alpha", add_alpha, MK(-1, 1, 0, 2, 3), MK(-1, 1, 0, 3));
  CHECK2("sub alpha", sub_alpha, MK(-1, 1, 0, 3), MK(-1, 1, 1, 2, 3));
}

/* mixed: a scalar operand and a float32 operand promoted to float64 */
static em_tensor *mul_scalar(em_tensor *a) { return em_tensor_mul_scalar(a, em_scalar_float(3.0)); }
static em_tensor *div_scalar(em_tensor *a) { return em_tensor_div_scalar(a, em_scalar_int(4)); }
EM_TEST(scalar_operands) {
  CHECK1("mul_scalar", mul_scalar, -1, 1, 0, 3);
  CHECK1("div_scalar", div_scalar, -1, 1, 1, 2, 3);
}

/* ---- ternary ---------------------------------------------------------------- */

static em_tensor *where_fn(int n, em_tensor *const *in, void *ctx) {
  em_tensor *c = em_tensor_gt_scalar(in[2], em_scalar_float(0));
  em_tensor *r = em_tensor_where(c, in[0], in[1]);
  em_tensor_release(c);
  return r;
}
static em_tensor *lerp_fn(int n, em_tensor *const *in, void *ctx) { return em_tensor_lerp(in[0], in[1], in[2]); }
static em_tensor *lerp_s_fn(int n, em_tensor *const *in, void *ctx) { return em_tensor_lerp_scalar(in[0], in[1], 0.3); }
static em_tensor *addcmul_fn(int n, em_tensor *const *in, void *ctx) {
  return em_tensor_addcmul(in[0], in[1], in[2], em_scalar_float(0.7));
}
static em_tensor *addcdiv_fn(int n, em_tensor *const *in, void *ctx) {
  return em_tensor_addcdiv(in[0], in[1], in[2], em_scalar_float(-1.3));
}

EM_TEST(ternary_ops) {
  em_tensor *in[3];
  in[0] = MK(-1, 1, 0, 3, 4), in[1] = MK(-1, 1, 1, 1, 4), in[2] = MK(-1, 1, 0, 3, 1);
  in[2]->requires_grad = false;
  ASSERT_TRUE(check("where", where_fn, NULL, 3, in));
  in[0] = MK(-1, 1, 0, 3, 4), in[1] = MK(-1, 1, 1, 3, 4), in[2] = MK(0, 1, 0, 4);
  ASSERT_TRUE(check("lerp", lerp_fn, NULL, 3, in));
  in[0] = MK(-1, 1, 0, 3, 4), in[1] = MK(-1, 1, 2, 3, 4);
  ASSERT_TRUE(check("lerp_scalar", lerp_s_fn, NULL, 2, in));
  in[0] = MK(-1, 1, 0, 3, 4), in[1] = MK(-1, 1, 1, 3, 4), in[2] = MK(-1, 1, 0, 1, 4);
  ASSERT_TRUE(check("addcmul", addcmul_fn, NULL, 3, in));
  in[0] = MK(-1, 1, 0, 3, 4), in[1] = MK(-1, 1, 1, 3, 4), in[2] = MK(0.5, 2, 0, 4);
  ASSERT_TRUE(check("addcdiv", addcdiv_fn, NULL, 3, in));
}

/* ---- reductions ---------------------------------------------------------------- */

static em_tensor *sum_all(em_tensor *x) { return em_tensor_sum(x, 0, NULL, false, EM_DTYPE_UNDEFINED); }
static em_tensor *sum_d1(em_tensor *x) { return em_tensor_sum(x, EM_DIMS(1), false, EM_DTYPE_UNDEFINED); }
static em_tensor *sum_d02k(em_tensor *x) { return em_tensor_sum(x, EM_DIMS(0, -1), true, EM_DTYPE_UNDEFINED); }
static em_tensor *mean_d0(em_tensor *x) { return em_tensor_mean(x, EM_DIMS(0), false, EM_DTYPE_UNDEFINED); }
static em_tensor *mean_all(em_tensor *x) { return em_tensor_mean(x, 0, NULL, false, EM_DTYPE_UNDEFINED); }
static em_tensor *prod_d1(em_tensor *x) { return em_tensor_prod(x, EM_DIMS(1), false, EM_DTYPE_UNDEFINED); }
static em_tensor *prod_all(em_tensor *x) { return em_tensor_prod(x, 0, NULL, false, EM_DTYPE_UNDEFINED); }
static em_tensor *amax_d1(em_tensor *x) { return em_tensor_amax(x, EM_DIMS(1), true); }
static em_tensor *amin_all(em_tensor *x) { return em_tensor_amin(x, 0, NULL, false); }
static em_tensor *max_all(em_tensor *x) { return em_tensor_max_all(x); }
static em_tensor *var_d1(em_tensor *x) { return em_tensor_var(x, EM_DIMS(1), 1, false); }
static em_tensor *var_all0(em_tensor *x) { return em_tensor_var(x, 0, NULL, 0, false); }
static em_tensor *std_d0(em_tensor *x) { return em_tensor_std(x, EM_DIMS(0), 1, true); }
static em_tensor *lse_d1(em_tensor *x) { return em_tensor_logsumexp(x, EM_DIMS(1), false); }
static em_tensor *norm2(em_tensor *x) { return em_tensor_norm(x, 2, 0, NULL, false); }
static em_tensor *norm1_d1(em_tensor *x) { return em_tensor_norm(x, 1, EM_DIMS(1), false); }
static em_tensor *norm3_d0(em_tensor *x) { return em_tensor_norm(x, 3, EM_DIMS(0), true); }
static em_tensor *norminf(em_tensor *x) { return em_tensor_norm(x, INFINITY, EM_DIMS(1), false); }
static em_tensor *softmax1(em_tensor *x) { return em_tensor_softmax(x, 1, EM_DTYPE_UNDEFINED); }
static em_tensor *softmax0(em_tensor *x) { return em_tensor_softmax(x, 0, EM_DTYPE_UNDEFINED); }
static em_tensor *log_softmax1(em_tensor *x) { return em_tensor_log_softmax(x, -1, EM_DTYPE_UNDEFINED); }
static em_tensor *cumsum1(em_tensor *x) { return em_tensor_cumsum(x, 1, EM_DTYPE_UNDEFINED); }
static em_tensor *cumprod0(em_tensor *x) { return em_tensor_cumprod(x, 0, EM_DTYPE_UNDEFINED); }
static em_tensor *max_dim1(em_tensor *x) {
  em_tensor *v = NULL, *i = NULL;
  if (em_tensor_max_dim(x, 1, false, &v, &i)) return NULL;
  em_tensor_release(i);
  return v;
}
static em_tensor *min_dim0k(em_tensor *x) {
  em_tensor *v = NULL, *i = NULL;
  if (em_tensor_min_dim(x, 0, true, &v, &i)) return NULL;
  em_tensor_release(i);
  return v;
}

EM_TEST(reductions) {
  CHECK1("sum all", sum_all, -1, 1, 1, 3, 4);
  CHECK1("sum dim 1", sum_d1, -1, 1, 2, 3, 4, 2);
  CHECK1("sum dims 0,-1 keepdim", sum_d02k, -1, 1, 0, 3, 4, 2);
  CHECK1("mean dim 0", mean_d0, -1, 1, 1, 3, 4);
  CHECK1("mean all", mean_all, -1, 1, 0, 5);
  CHECK1("prod dim 1", prod_d1, 0.5, 1.5, 0, 3, 4);
  CHECK1("prod all", prod_all, 0.5, 1.5, 1, 2, 3);
  CHECK1("amax dim 1", amax_d1, -1, 1, 0, 3, 4);
  CHECK1("amin all", amin_all, -1, 1, 1, 3, 4);
  CHECK1("max_all", max_all, -1, 1, 0, 7);
  CHECK1("var dim 1", var_d1, -1, 1, 0, 3, 4);
  CHECK1("var all c=0", var_all0, -1, 1, 2, 3, 4);
  CHECK1("std dim 0", std_d0, -1, 1, 1, 3, 4);
  CHECK1("logsumexp", lse_d1, -1, 1, 0, 3, 4);
  CHECK1("norm 2", norm2, -1, 1, 1, 3, 4);
  CHECK1("norm 1", norm1_d1, 0.1, 1, 0, 3, 4);
  CHECK1("norm 3", norm3_d0, 0.1, 1, 0, 3, 4);
  CHECK1("norm inf", norminf, -1, 1, 0, 3, 4);
  CHECK1("softmax dim 1", softmax1, -1, 1, 0, 3, 4);
  CHECK1("softmax dim 0", softmax0, -1, 1, 1, 3, 4);
  CHECK1("log_softmax", log_softmax1, -1, 1, 2, 3, 4);
  CHECK1("cumsum", cumsum1, -1, 1, 0, 3, 4);
  CHECK1("cumprod", cumprod0, 0.5, 1.5, 1, 3, 4);
  CHECK1("max_dim", max_dim1, -1, 1, 0, 3, 4);
  CHECK1("min_dim keepdim", min_dim0k, -1, 1, 1, 3, 4);
}

/* products with zeros: the gradient is the product of the other factors */
EM_TEST(prod_with_zero) {
  em_tensor *x = em_tensor_from_data((double[]){2, 0, 3, 0, 4, 5}, EM_DIMS(2, 3), EM_FLOAT64);
  ASSERT_OK(em_tensor_set_requires_grad(x, true));
  em_tensor *p = em_tensor_prod(x, EM_DIMS(1), false, EM_DTYPE_UNDEFINED);
  em_tensor *s = em_tensor_sum(p, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){0, 6, 0, 20, 0, 0}), 0, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(p), em_tensor_release(x);
}

/* ---- linear algebra ------------------------------------------------------------ */

static em_tensor *addmm_fn(int n, em_tensor *const *in, void *ctx) {
  return em_tensor_addmm(in[0], in[1], in[2], 0.5, -1.5);
}
static em_tensor *baddbmm_fn(int n, em_tensor *const *in, void *ctx) {
  return em_tensor_baddbmm(in[0], in[1], in[2], 2.0, 0.5);
}

EM_TEST(linalg) {
  CHECK2("mm", em_tensor_mm, MK(-1, 1, 0, 3, 4), MK(-1, 1, 1, 4, 2));
  CHECK2("bmm", em_tensor_bmm, MK(-1, 1, 1, 2, 3, 4), MK(-1, 1, 0, 2, 4, 2));
  CHECK2("mv", em_tensor_mv, MK(-1, 1, 1, 3, 4), MK(-1, 1, 2, 4));
  CHECK2("dot", em_tensor_dot, MK(-1, 1, 0, 5), MK(-1, 1, 2, 5));
  CHECK2("outer", em_tensor_outer, MK(-1, 1, 0, 3), MK(-1, 1, 0, 4));
  CHECK2("matmul 1-D x 2-D", em_tensor_matmul, MK(-1, 1, 0, 4), MK(-1, 1, 0, 4, 3));
  CHECK2("matmul 2-D x 1-D", em_tensor_matmul, MK(-1, 1, 0, 3, 4), MK(-1, 1, 0, 4));
  CHECK2("matmul batched broadcast", em_tensor_matmul, MK(-1, 1, 0, 2, 1, 3, 4), MK(-1, 1, 1, 3, 4, 2));
  em_tensor *in[3] = {MK(-1, 1, 0, 2), MK(-1, 1, 1, 3, 4), MK(-1, 1, 0, 4, 2)};
  ASSERT_TRUE(check("addmm", addmm_fn, NULL, 3, in));
  em_tensor *in2[3] = {MK(-1, 1, 0, 1, 3, 2), MK(-1, 1, 0, 2, 3, 4), MK(-1, 1, 1, 2, 4, 2)};
  ASSERT_TRUE(check("baddbmm", baddbmm_fn, NULL, 3, in2));
}

/* ---- views and copies --------------------------------------------------------------- */

static em_tensor *view_fn(em_tensor *x) { return em_tensor_view(x, EM_DIMS(4, 3)); }
static em_tensor *reshape_fn(em_tensor *x) { return em_tensor_reshape(x, EM_DIMS(2, 6)); }
static em_tensor *permute_fn(em_tensor *x) { return em_tensor_permute(x, EM_DIMS(2, 0, 1)); }
static em_tensor *slice_fn(em_tensor *x) { return em_tensor_slice(x, 1, 1, INT64_MAX, 2); }
static em_tensor *select_fn(em_tensor *x) { return em_tensor_select(x, 0, -1); }
static em_tensor *narrow_fn(em_tensor *x) { return em_tensor_narrow(x, 1, 1, 2); }
static em_tensor *expand_fn(em_tensor *x) { return em_tensor_expand(x, EM_DIMS(2, 3, 4)); }
static em_tensor *squeeze_fn(em_tensor *x) { return em_tensor_squeeze(x); }
static em_tensor *unsqueeze_fn(em_tensor *x) { return em_tensor_unsqueeze(x, 1); }
static em_tensor *as_strided_fn(em_tensor *x) {
  return em_tensor_as_strided(x, 2, (int64_t[]){3, 3}, (int64_t[]){1, 1}, x->offset + 1);
}
static em_tensor *clone_fn(em_tensor *x) { return em_tensor_clone(x); }
static em_tensor *flip_fn(em_tensor *x) { return em_tensor_flip(x, EM_DIMS(0, 1)); }
static em_tensor *repeat_fn(em_tensor *x) { return em_tensor_repeat(x, EM_DIMS(2, 1, 3)); }
static em_tensor *pad_fn(em_tensor *x) { return em_tensor_pad(x, 4, (int64_t[]){1, 2, -1, 1}, 0.5); }
static em_tensor *cat_fn(em_tensor *a, em_tensor *b) {
  em_tensor *ts[2] = {a, b};
  return em_tensor_cat(2, ts, 1);
}
static em_tensor *stack_fn(em_tensor *a, em_tensor *b) {
  em_tensor *ts[2] = {a, b};
  return em_tensor_stack(2, ts, 0);
}

EM_TEST(views_and_copies) {
  CHECK1("view", view_fn, -1, 1, 0, 3, 4);
  CHECK1("reshape (copying)", reshape_fn, -1, 1, 1, 3, 4);
  CHECK1("permute", permute_fn, -1, 1, 0, 2, 3, 4);
  CHECK1("slice step 2", slice_fn, -1, 1, 1, 3, 5);
  CHECK1("select", select_fn, -1, 1, 0, 3, 4);
  CHECK1("narrow", narrow_fn, -1, 1, 2, 3, 4);
  CHECK1("expand", expand_fn, -1, 1, 0, 3, 1);
  CHECK1("squeeze", squeeze_fn, -1, 1, 0, 3, 1, 4);
  CHECK1("unsqueeze", unsqueeze_fn, -1, 1, 1, 3, 4);
  CHECK1("as_strided overlapping", as_strided_fn, -1, 1, 0, 12);
  CHECK1("clone", clone_fn, -1, 1, 1, 3, 4);
  CHECK1("flip", flip_fn, -1, 1, 1, 3, 4);
  CHECK1("repeat", repeat_fn, -1, 1, 0, 3, 2);
  CHECK1("pad (with crop)", pad_fn, -1, 1, 0, 3, 4);
  CHECK2("cat", cat_fn, MK(-1, 1, 0, 3, 2), MK(-1, 1, 1, 3, 4));
  CHECK2("stack", stack_fn, MK(-1, 1, 0, 3, 2), MK(-1, 1, 2, 3, 2));
}

/* ---- indexing -------------------------------------------------------------------------- */

static em_tensor *idx_tensor(const int64_t *v, int n) { return em_tensor_from_data(v, EM_DIMS(n), EM_INT64); }

static em_tensor *index_select_fn(em_tensor *x) {
  em_tensor *i = idx_tensor((int64_t[]){2, 0, 2}, 3);
  em_tensor *r = em_tensor_index_select(x, 1, i);
  em_tensor_release(i);
  return r;
}
static em_tensor *gather_fn(em_tensor *x) {
  em_tensor *i = em_tensor_from_data((int64_t[]){0, 2, 1, 1, 3, 0}, EM_DIMS(3, 2), EM_INT64);
  em_tensor *r = em_tensor_gather(x, 1, i);
  em_tensor_release(i);
  return r;
}
static em_tensor *take_fn(em_tensor *x) {
  em_tensor *i = em_tensor_from_data((int64_t[]){0, 2, 1, 3}, EM_DIMS(1, 4), EM_INT64);
  em_tensor *r = em_tensor_take_along_dim(x, i, 0);
  em_tensor_release(i);
  return r;
}
static em_tensor *scatter_fn(em_tensor *a, em_tensor *src) {
  em_tensor *i = em_tensor_from_data((int64_t[]){1, 0, 2, 3}, EM_DIMS(1, 4), EM_INT64);
  em_tensor *r = em_tensor_scatter(a, 0, i, src);
  em_tensor_release(i);
  return r;
}
static em_tensor *scatter_add_fn(em_tensor *a, em_tensor *src) {
  em_tensor *i = em_tensor_from_data((int64_t[]){1, 1, 2, 0, 0, 2, 1, 0}, EM_DIMS(2, 4), EM_INT64);
  em_tensor *r = em_tensor_scatter_add(a, 0, i, src);
  em_tensor_release(i);
  return r;
}
static em_tensor *index_add_fn(em_tensor *a, em_tensor *src) {
  em_tensor *i = idx_tensor((int64_t[]){2, 0, 2}, 3);
  em_tensor *r = em_tensor_index_add(a, 0, i, src, em_scalar_float(1.5));
  em_tensor_release(i);
  return r;
}
static em_tensor *masked_fill_fn(em_tensor *x) {
  em_tensor *m = em_tensor_from_data((bool[]){1, 0, 0, 1}, EM_DIMS(4), EM_BOOL);
  em_tensor *r = em_tensor_masked_fill(x, m, em_scalar_float(2.0));
  em_tensor_release(m);
  return r;
}
static em_tensor *masked_select_fn(em_tensor *x) {
  em_tensor *m = em_tensor_from_data((bool[]){1, 0, 1, 1}, EM_DIMS(4), EM_BOOL);
  em_tensor *r = em_tensor_masked_select(x, m);
  em_tensor_release(m);
  return r;
}
static em_tensor *embedding_fn(em_tensor *w) {
  em_tensor *i = em_tensor_from_data((int64_t[]){1, 3, 1, 0}, EM_DIMS(2, 2), EM_INT64);
  em_tensor *r = em_tensor_embedding(w, i);
  em_tensor_release(i);
  return r;
}
static em_tensor *index_fn(em_tensor *x) {
  em_tensor *i0 = idx_tensor((int64_t[]){2, 0, 2}, 3);
  em_tensor *idx[2] = {NULL, i0};
  em_tensor *r = em_tensor_index(x, 2, idx);
  em_tensor_release(i0);
  return r;
}
static em_tensor *index_put_fn(em_tensor *a, em_tensor *v) {
  em_tensor *c = em_tensor_clone(a);
  em_tensor *i0 = idx_tensor((int64_t[]){1, 1, 0}, 3);
  em_tensor *idx[1] = {i0};
  em_status st = em_tensor_index_put_(c, 1, idx, v, true);
  em_tensor_release(i0);
  if (st) {
    em_tensor_release(c);
    return NULL;
  }
  return c;
}

EM_TEST(indexing) {
  CHECK1("index_select", index_select_fn, -1, 1, 1, 3, 4);
  CHECK1("gather", gather_fn, -1, 1, 0, 3, 4);
  CHECK1("take_along_dim", take_fn, -1, 1, 1, 4, 4);
  CHECK2("scatter", scatter_fn, MK(-1, 1, 0, 4, 4), MK(-1, 1, 0, 1, 4));
  CHECK2("scatter_add", scatter_add_fn, MK(-1, 1, 1, 3, 4), MK(-1, 1, 0, 2, 4));
  CHECK2("index_add", index_add_fn, MK(-1, 1, 0, 3, 2), MK(-1, 1, 1, 3, 2));
  CHECK1("masked_fill", masked_fill_fn, -1, 1, 0, 3, 4);
  CHECK1("masked_select", masked_select_fn, -1, 1, 1, 3, 4);
  CHECK1("embedding", embedding_fn, -1, 1, 0, 4, 3);
  CHECK1("index", index_fn, -1, 1, 1, 2, 3);
  CHECK2("index_put accumulate", index_put_fn, MK(-1, 1, 0, 3, 2), MK(-1, 1, 0, 3, 2));
}

/* ---- in-place ops under autograd ------------------------------------------------------- */

static em_tensor *inplace_chain(em_tensor *x) {
  /* y = x * 2; y.mul_(x); y.add_(1); y[0] *= 3 (through a view) */
  em_tensor *y = em_tensor_mul_scalar(x, em_scalar_float(2));
  if (em_tensor_mul_(y, x) || em_tensor_add_(y, x)) goto fail;
  em_tensor *row = em_tensor_select(y, 0, 0);
  em_tensor *three = em_tensor_wrapped_scalar(em_scalar_float(3));
  em_status st = em_tensor_mul_(row, three);
  em_tensor_release(three);
  em_tensor_release(row);
  if (st) goto fail;
  return y;
fail:
  em_tensor_release(y);
  return NULL;
}

/* float32 rounding would swamp central differences: check to_dtype's
 * backward directly (the gradient comes back in the input's dtype). */
EM_TEST(to_dtype_backward) {
  em_tensor *x = MK(-1, 1, 0, 3);
  em_tensor *f = em_tensor_to_dtype(x, EM_FLOAT32);
  em_tensor *m = em_tensor_mul_scalar(f, em_scalar_float(3));
  em_tensor *s = em_tensor_sum(m, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_EQ(g->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(g, ((double[]){3, 3, 3}), 0, 0);
  em_tensor *list[] = {x, f, m, s, g};
  for (size_t i = 0; i < 5; i++) em_tensor_release(list[i]);
}

EM_TEST(inplace_and_copy_slices) {
  CHECK1("in-place chain with a view", inplace_chain, -1, 1, 0, 3, 4);
}

EM_TEST_MAIN()
