/* Elementwise unary ops: math functions, activations, rounding, logical
 * and bitwise not, isnan/isinf/isfinite, clamp/hardtanh, pow with a scalar
 * exponent or base.
 *
 * Semantics follow PyTorch 1.13: float-only math (exp, log, sqrt, sin,
 * sigmoid, erf, reciprocal, ...) turns integer and bool inputs into the
 * default float dtype; neg/abs/sign/square/relu keep integer dtypes (square
 * of bool gives int64); floor/ceil/round/trunc of integers are copies;
 * round is half-to-even; silu, frac and the parameterised activations are
 * float-only. In-place forms keep the dtype and need the result castable
 * to it ("result type Float can't be cast to the desired output type Int").
 * float16/bfloat16 are computed in float.
 *
 * Autograd attrs (every node has the one input t unless noted):
 *   UNARY_<name>: none. (logical_not and bitwise_not are not recorded.)
 *   ISNAN / ISINF / ISFINITE: not recorded (bool results).
 *   LEAKY_RELU: f[0] = negative_slope.
 *   GELU, GELU_TANH: none (GELU is the exact erf form, GELU_TANH the tanh
 *     approximation).
 *   SOFTPLUS: f[0] = beta, f[1] = threshold.
 *   ELU: f[0] = alpha.
 *   HARDTANH: f[0] = min_val, f[1] = max_val, i[0] = i[1] = 1.
 *   CLAMP: i[0] = has_min, i[1] = has_max, f[0] = min (-inf when absent),
 *     f[1] = max (+inf when absent); min > max gives max everywhere.
 *     (i[2], i[3] hold integer bounds for integer kernels.)
 *   POW_SCALAR: out = t ** s; s = the exponent scalar, f[0] = it as double.
 *   RPOW_SCALAR: out = s ** t; s = the base scalar, f[0] = it as double.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);
const char *em__torch_dtype_name(em_dtype dt);
em_status em__check_inplace_cast(const char *name, em_dtype result, em_dtype self);
em_tensor *em__pow_scalar(em_tensor *t, em_scalar exponent);
bool em__elementwise_small(em_op op, em_dtype key, em_dtype rt, int n, em_tensor *const *in,
                           const em_op_attrs *at, int64_t grain, em_tensor **out);

static em_status not_implemented(const char *op, const char *kname, em_dtype dt) {
  return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", op, kname,
                       em__torch_dtype_name(dt));
}

static void attrs_init(em_op_attrs *at) {
  for (int k = 0; k < 4; k++) at->f[k] = 0, at->i[k] = 0;
  at->nd = 0;
  at->s = em_scalar_int(0);
}

static bool is_int_or_bool(em_dtype dt) { return !em_dtype_is_float(dt); }

/* ---- the EM_UNARY_OPS table --------------------------------------------------------- */

typedef enum ukind {
  UK_KEEP,      /* integer dtypes kept (neg abs sign square relu) */
  UK_FLOAT,     /* integers and bool become the default float */
  UK_FLOATONLY, /* integers and bool rejected (silu frac) */
  UK_ROUND,     /* integers: a copy; bool rejected */
  UK_LOGICAL,   /* bool out, any input */
  UK_BITWISE    /* integers and bool only */
} ukind;

typedef enum ubool {
  UB_OK,      /* kernel for bool */
  UB_NOTIMPL, /* "not implemented for 'Bool'" */
  UB_NEG,     /* neg's own message */
  UB_RELU,    /* relu's own message */
  UB_LONG     /* computed as int64 (square) */
} ubool;

typedef struct uinfo {
  const char *name;
  const char *kname; /* PyTorch's kernel name in "not implemented" messages */
  ukind kind;
  ubool on_bool;
  bool record;
  int64_t grain;
} uinfo;

#define C_ EM_GRAIN_CHEAP
#define X_ EM_GRAIN_COSTLY
#define UI(name, kname, kind, on_bool, rec, grain) \
  [EM_OP_UNARY_##name - EM_OP_UNARY_neg] = {#name, kname, kind, on_bool, rec, grain}
static const uinfo UNARY[] = {
    UI(neg, "neg_cpu", UK_KEEP, UB_NEG, true, C_),
    UI(abs, "abs_cpu", UK_KEEP, UB_NOTIMPL, true, C_),
    UI(sign, "sign_cpu", UK_KEEP, UB_OK, true, C_),
    UI(exp, "exp_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(exp2, "exp2_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(log, "log_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(log2, "log2_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(log10, "log10_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(log1p, "log1p_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(expm1, "expm1_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(sqrt, "sqrt_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(rsqrt, "rsqrt_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(reciprocal, "reciprocal_cpu", UK_FLOAT, UB_OK, true, C_),
    UI(square, "square_cpu", UK_KEEP, UB_LONG, true, C_),
    UI(sin, "sin_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(cos, "cos_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(tan, "tan_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(asin, "asin_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(acos, "acos_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(atan, "atan_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(sinh, "sinh_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(cosh, "cosh_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(tanh, "tanh_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(sigmoid, "sigmoid_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(erf, "erf_vml_cpu", UK_FLOAT, UB_OK, true, X_),
    UI(relu, "clamp_min_cpu", UK_KEEP, UB_RELU, true, C_),
    UI(silu, "silu_cpu", UK_FLOATONLY, UB_NOTIMPL, true, X_),
    UI(floor, "floor_vml_cpu", UK_ROUND, UB_NOTIMPL, true, C_),
    UI(ceil, "ceil_vml_cpu", UK_ROUND, UB_NOTIMPL, true, C_),
    UI(round, "round_vml_cpu", UK_ROUND, UB_NOTIMPL, true, C_),
    UI(trunc, "trunc_vml_cpu", UK_ROUND, UB_NOTIMPL, true, C_),
    UI(frac, "frac_cpu", UK_FLOATONLY, UB_NOTIMPL, true, C_),
    UI(logical_not, "logical_not_cpu", UK_LOGICAL, UB_OK, false, C_),
    UI(bitwise_not, "bitwise_not_cpu", UK_BITWISE, UB_OK, false, C_),
};
#undef UI
#define EM__COUNT1(name) +1
_Static_assert(sizeof UNARY / sizeof UNARY[0] == 0 EM_UNARY_OPS(EM__COUNT1),
               "one UNARY entry per EM_UNARY_OPS name");

/* Picks the kernel key (= the dtype the input is converted to) and the
 * result dtype for op u on t. *copy: integer rounding, the result is a
 * copy of t. */
static em_status unary_types(const uinfo *u, const char *name, em_dtype dt, em_dtype *key,
                             em_dtype *rt, bool *copy) {
  *key = *rt = dt;
  *copy = false;
  if (dt == EM_BOOL) {
    switch (u->on_bool) {
      case UB_OK: break;
      case UB_NOTIMPL: return not_implemented(name, u->kname, dt);
      case UB_NEG:
        return em__set_error(EM_ERR_DTYPE,
                             "%s: Negation, the `-` operator, on a bool tensor is not "
                             "supported. If you are trying to invert a mask, use the `~` or "
                             "`logical_not()` operator instead.",
                             name);
      case UB_RELU:
        return em__set_error(EM_ERR_DTYPE, "%s: Boolean inputs not supported for relu", name);
      case UB_LONG: *key = *rt = EM_INT64; return EM_OK;
    }
  }
  switch (u->kind) {
    case UK_KEEP: break;
    case UK_FLOAT:
      if (is_int_or_bool(dt)) *key = *rt = em_get_default_dtype();
      break;
    case UK_FLOATONLY:
      if (is_int_or_bool(dt)) return not_implemented(name, u->kname, dt);
      break;
    case UK_ROUND: *copy = is_int_or_bool(dt); break;
    case UK_LOGICAL: *rt = EM_BOOL; break;
    case UK_BITWISE:
      if (em_dtype_is_float(dt)) return not_implemented(name, u->kname, dt);
      break;
  }
  return EM_OK;
}

/* out = op(t) with the given key and result dtype; records nothing. */
static em_tensor *unary_compute(em_op op, em_tensor *t, em_dtype key, em_dtype rt,
                                const em_op_attrs *at, int64_t grain) {
  em_tensor *out;
  if (em__elementwise_small(op, key, rt, 1, &t, at, grain, &out)) return out;
  return em__elementwise(op, key, rt, 1, &t, t->dtype != key ? &key : NULL, at, grain);
}

static em_tensor *unary_out(int idx, em_tensor *t) {
  const uinfo *u = &UNARY[idx];
  em_op op = (em_op)(EM_OP_UNARY_neg + idx);
  if (EM_UNLIKELY(!t)) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", u->name);
  em_dtype key, rt;
  bool copy;
  if (unary_types(u, u->name, (em_dtype)t->dtype, &key, &rt, &copy)) return NULL;
  if (copy) return em__convert(t, (em_dtype)t->dtype); /* integers never require grad */
  em_tensor *out = unary_compute(op, t, key, rt, NULL, u->grain);
  return u->record ? em__record1(op, 1, &t, out, NULL) : out;
}

static em_tensor *unary_outplace(em_tensor *self_copy, void *ctx) {
  return unary_out((int)(intptr_t)ctx, self_copy);
}

/* Shared tail of every in-place unary op: after validation, writes op(t)
 * into t (directly when the result dtype is t's, else through a copy), or
 * hands over to autograd with fn computing the recorded out-of-place op. */
static em_status unary_inplace_run(const char *name, em_op op, em_tensor *t, em_dtype key,
                                   em_dtype rt, const em_op_attrs *at, int64_t grain,
                                   em__outplace_fn fn, void *ctx) {
  EM_CHECK(em__check_inplace_cast(name, rt, (em_dtype)t->dtype));
  if (em__should_record(1, &t)) return em__inplace_recorded(name, t, fn, ctx);
  if (rt == t->dtype)
    return em__elementwise_into(op, key, t, 1, &t, t->dtype != key ? &key : NULL, at, grain);
  em_tensor *r = unary_compute(op, t, key, rt, at, grain);
  if (!r) return em_last_status();
  em_status st = em__copy_into(t, r);
  em_tensor_release(r);
  return st;
}

static em_status unary_inplace(int idx, em_tensor *t) {
  const uinfo *u = &UNARY[idx];
  char name[40];
  snprintf(name, sizeof name, "%s_", u->name);
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", name);
  em_dtype key, rt;
  bool copy;
  EM_CHECK(unary_types(u, name, (em_dtype)t->dtype, &key, &rt, &copy));
  if (copy) {
    em__bump_version(t); /* rounding an integer tensor leaves it as it is */
    return EM_OK;
  }
  return unary_inplace_run(name, (em_op)(EM_OP_UNARY_neg + idx), t, key, rt, NULL, u->grain,
                           unary_outplace, (void *)(intptr_t)idx);
}

#define DEF_UNARY_API(name)                                                          \
  em_tensor *em_tensor_##name(em_tensor *t) {                                        \
    return unary_out(EM_OP_UNARY_##name - EM_OP_UNARY_neg, t);                       \
  }                                                                                  \
  em_status em_tensor_##name##_(em_tensor *t) {                                      \
    return unary_inplace(EM_OP_UNARY_##name - EM_OP_UNARY_neg, t);                   \
  }
EM_UNARY_OPS(DEF_UNARY_API)
#undef DEF_UNARY_API

/* ---- isnan / isinf / isfinite ------------------------------------------------------- */

static em_tensor *classify(em_op op, const char *name, em_tensor *t, bool int_answer) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", name);
  if (is_int_or_bool((em_dtype)t->dtype))
    return em_tensor_full_like(t, em_scalar_bool(int_answer), EM_BOOL);
  return em__elementwise(op, (em_dtype)t->dtype, EM_BOOL, 1, &t, NULL, NULL, EM_GRAIN_CHEAP);
}
em_tensor *em_tensor_isnan(em_tensor *t) { return classify(EM_OP_ISNAN, "isnan", t, false); }
em_tensor *em_tensor_isinf(em_tensor *t) { return classify(EM_OP_ISINF, "isinf", t, false); }
em_tensor *em_tensor_isfinite(em_tensor *t) {
  return classify(EM_OP_ISFINITE, "isfinite", t, true);
}

/* ---- float-only activations with parameters ----------------------------------------- */

typedef struct act_ctx {
  em_op op;
  em_op_attrs at;
} act_ctx;

/* out = op(t; attrs) for a float-only activation, recorded. */
static em_tensor *activation(em_op op, const char *name, const char *kname, em_tensor *t,
                             const em_op_attrs *at) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", name);
  if (is_int_or_bool((em_dtype)t->dtype))
    return not_implemented(name, kname, (em_dtype)t->dtype), NULL;
  em_tensor *out = unary_compute(op, t, (em_dtype)t->dtype, (em_dtype)t->dtype, at,
                                 EM_GRAIN_COSTLY);
  return em__record1(op, 1, &t, out, at);
}

em_tensor *em_tensor_leaky_relu(em_tensor *t, double negative_slope) {
  em_op_attrs at;
  attrs_init(&at);
  at.f[0] = negative_slope;
  return activation(EM_OP_LEAKY_RELU, "leaky_relu", "leaky_relu_cpu", t, &at);
}

static em_tensor *leaky_outplace(em_tensor *self_copy, void *ctx) {
  return em_tensor_leaky_relu(self_copy, ((act_ctx *)ctx)->at.f[0]);
}

em_status em_tensor_leaky_relu_(em_tensor *t, double negative_slope) {
  if (!t) return em__set_error(EM_ERR_INVALID, "leaky_relu_: NULL tensor");
  if (is_int_or_bool((em_dtype)t->dtype))
    return not_implemented("leaky_relu_", "leaky_relu_cpu", (em_dtype)t->dtype);
  act_ctx c;
  c.op = EM_OP_LEAKY_RELU;
  attrs_init(&c.at);
  c.at.f[0] = negative_slope;
  return unary_inplace_run("leaky_relu_", EM_OP_LEAKY_RELU, t, (em_dtype)t->dtype,
                           (em_dtype)t->dtype, &c.at, EM_GRAIN_COSTLY, leaky_outplace, &c);
}

em_tensor *em_tensor_gelu(em_tensor *t, bool approximate) {
  return activation(approximate ? EM_OP_GELU_TANH : EM_OP_GELU, "gelu", "GeluKernelImpl", t,
                    NULL);
}

em_tensor *em_tensor_softplus(em_tensor *t, double beta, double threshold) {
  em_op_attrs at;
  attrs_init(&at);
  at.f[0] = beta;
  at.f[1] = threshold;
  return activation(EM_OP_SOFTPLUS, "softplus", "softplus_cpu", t, &at);
}

em_tensor *em_tensor_elu(em_tensor *t, double alpha) {
  em_op_attrs at;
  attrs_init(&at);
  at.f[0] = alpha;
  return activation(EM_OP_ELU, "elu", "elu_cpu", t, &at);
}

/* ---- clamp / hardtanh --------------------------------------------------------------- */

/* A bound given as a double counts as an int scalar when it is integral
 * (so clamp(int_tensor, 0, 5) stays int, clamp(int_tensor, 0.5, 5) gives
 * float): the C API cannot tell 0 from 0.0 apart. */
static em_scalar bound_scalar(double v) {
  if (isfinite(v) && v == floor(v) && fabs(v) < 9.2e18) return em_scalar_int((int64_t)v);
  return em_scalar_float(v);
}

/* result_type(t, wrapped scalars) without allocating them: only dtype,
 * ndim and is_wrapped_number take part. */
static em_dtype scalars_result_type(em_tensor *t, int n, const em_scalar *s) {
  em_tensor fake[2];
  em_tensor *ts[3] = {t};
  for (int i = 0; i < n; i++) {
    memset(&fake[i], 0, sizeof fake[i]);
    fake[i].dtype = (int8_t)(s[i].kind == EM_SCALAR_FLOAT ? EM_FLOAT64 : em_scalar_dtype(s[i]));
    fake[i].is_wrapped_number = true;
    ts[i + 1] = &fake[i];
  }
  return em__result_type(n + 1, ts);
}

static const char *ctype_name(em_dtype dt) {
  switch (dt) {
    case EM_INT8: return "int8_t";
    case EM_INT16: return "int16_t";
    case EM_INT32: return "int32_t";
    case EM_INT64: return "int64_t";
    case EM_UINT8: return "uint8_t";
    default: return "bool";
  }
}

/* Integer bound v (already integral or truncated) for dtype dt: must fit. */
static em_status int_bound(const char *name, double v, em_dtype dt, int64_t *out) {
  double lo, hi;
  switch (dt) {
    case EM_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
    case EM_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
    case EM_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
    case EM_UINT8: lo = 0, hi = UINT8_MAX; break;
    default: lo = -9223372036854775808.0, hi = 9223372036854775807.0; break;
  }
  double tv = trunc(v);
  if (!(tv >= lo && tv <= hi) || (dt == EM_INT64 && tv >= 9223372036854775807.0))
    return em__set_error(EM_ERR_INVALID, "%s: value cannot be converted to type %s without "
                         "overflow", name, ctype_name(dt));
  *out = (int64_t)tv;
  return EM_OK;
}

/* Fills the clamp kernel's attrs for compute dtype dt. */
static em_status clamp_attrs(const char *name, em_dtype dt, bool has_min, double min,
                             bool has_max, double max, em_op_attrs *at) {
  attrs_init(at);
  at->i[0] = has_min;
  at->i[1] = has_max;
  at->f[0] = has_min ? min : -INFINITY;
  at->f[1] = has_max ? max : INFINITY;
  at->i[2] = INT64_MIN;
  at->i[3] = INT64_MAX;
  if (!em_dtype_is_float(dt)) {
    if (has_min) EM_CHECK(int_bound(name, min, dt, &at->i[2]));
    if (has_max) EM_CHECK(int_bound(name, max, dt, &at->i[3]));
  }
  return EM_OK;
}

typedef struct clamp_ctx {
  bool has_min, has_max;
  double min, max;
} clamp_ctx;

static em_status clamp_types(const char *name, em_tensor *t, const clamp_ctx *c,
                             em_dtype *rt) {
  if (!c->has_min && !c->has_max)
    return em__set_error(EM_ERR_INVALID, "%s: At least one of 'min' or 'max' must not be None",
                         name);
  em_scalar s[2];
  int n = 0;
  if (c->has_min) s[n++] = bound_scalar(c->min);
  if (c->has_max) s[n++] = bound_scalar(c->max);
  *rt = scalars_result_type(t, n, s);
  return EM_OK;
}

em_tensor *em_tensor_clamp(em_tensor *t, bool has_min, double min, bool has_max, double max) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "clamp: NULL tensor");
  clamp_ctx c = {has_min, has_max, min, max};
  em_dtype rt = EM_DTYPE_UNDEFINED;
  em_op_attrs at;
  if (clamp_types("clamp", t, &c, &rt) ||
      clamp_attrs("clamp", rt, has_min, min, has_max, max, &at))
    return NULL;
  em_tensor *out = unary_compute(EM_OP_CLAMP, t, rt, rt, &at, EM_GRAIN_CHEAP);
  return em__record1(EM_OP_CLAMP, 1, &t, out, &at);
}

static em_tensor *clamp_outplace(em_tensor *self_copy, void *ctx) {
  clamp_ctx *c = ctx;
  return em_tensor_clamp(self_copy, c->has_min, c->min, c->has_max, c->max);
}

em_status em_tensor_clamp_(em_tensor *t, bool has_min, double min, bool has_max, double max) {
  if (!t) return em__set_error(EM_ERR_INVALID, "clamp_: NULL tensor");
  clamp_ctx c = {has_min, has_max, min, max};
  em_dtype rt = EM_DTYPE_UNDEFINED;
  em_op_attrs at;
  EM_CHECK(clamp_types("clamp_", t, &c, &rt));
  EM_CHECK(em__check_inplace_cast("clamp_", rt, (em_dtype)t->dtype));
  EM_CHECK(clamp_attrs("clamp_", rt, has_min, min, has_max, max, &at));
  return unary_inplace_run("clamp_", EM_OP_CLAMP, t, rt, rt, &at, EM_GRAIN_CHEAP,
                           clamp_outplace, &c);
}

em_tensor *em_tensor_hardtanh(em_tensor *t, double min_val, double max_val) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "hardtanh: NULL tensor");
  em_dtype dt = (em_dtype)t->dtype;
  if (dt == EM_BOOL)
    return EM_FAIL(EM_ERR_DTYPE, "hardtanh: Bool inputs not supported for hardtanh");
  em_op_attrs at;
  if (clamp_attrs("hardtanh", dt, true, min_val, true, max_val, &at)) return NULL;
  em_tensor *out = unary_compute(EM_OP_HARDTANH, t, dt, dt, &at, EM_GRAIN_CHEAP);
  return em__record1(EM_OP_HARDTANH, 1, &t, out, &at);
}

/* ---- pow with a scalar exponent or base --------------------------------------------- */

static void pow_attrs(em_op_attrs *at, em_scalar s) {
  attrs_init(at);
  at->s = s;
  at->f[0] = em_scalar_to_double(s);
  at->i[0] = s.kind == EM_SCALAR_FLOAT ? 0 : s.v.i;
}

/* t ** exponent, recorded as POW_SCALAR (em_tensor_pow_scalar). */
em_tensor *em__pow_scalar(em_tensor *t, em_scalar exponent) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "pow: NULL tensor");
  em_dtype rt = scalars_result_type(t, 1, &exponent);
  if (rt == EM_BOOL) return not_implemented("pow", "pow", rt), NULL;
  if (!em_dtype_is_float(rt) && exponent.kind == EM_SCALAR_INT && exponent.v.i < 0)
    return EM_FAIL(EM_ERR_INVALID, "pow: Integers to negative integer powers are not allowed.");
  em_op_attrs at;
  pow_attrs(&at, exponent);
  em_tensor *out = unary_compute(EM_OP_POW_SCALAR, t, rt, rt, &at, EM_GRAIN_COSTLY);
  return em__record1(EM_OP_POW_SCALAR, 1, &t, out, &at);
}

em_tensor *em_tensor_rpow_scalar(em_scalar base, em_tensor *t) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "pow: NULL tensor");
  em_dtype rt = scalars_result_type(t, 1, &base);
  if (rt == EM_BOOL) return not_implemented("pow", "pow", rt), NULL;
  em_op_attrs at;
  pow_attrs(&at, base);
  em_tensor *out = unary_compute(EM_OP_RPOW_SCALAR, t, rt, rt, &at, EM_GRAIN_COSTLY);
  return em__record1(EM_OP_RPOW_SCALAR, 1, &t, out, &at);
}
