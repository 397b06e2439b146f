/* Elementwise binary ops: arithmetic, division variants, pow,
 * maximum/minimum, atan2, logical and bitwise ops, comparisons.
 *
 * Semantics follow PyTorch 1.13: the compute dtype is result_type(a, b)
 * (wrapped scalars and 0-dim tensors take part with lower priority); true
 * division and atan2 turn integer/bool results into the default float
 * dtype; logical ops and comparisons compute in the promoted dtype and give
 * bool; bitwise ops reject floats; integer division, remainder and fmod by
 * zero are an error ("ZeroDivisionError"), never a trap; integer overflow
 * wraps. In-place forms keep self's shape and dtype: the broadcast shape
 * must equal self's and the result dtype must be castable to self's.
 *
 * Autograd attrs (what each recorded node carries):
 *   BINARY_add, BINARY_sub: inputs (a, b); s = alpha (int 1 for plain
 *     add/sub), f[0] = alpha as double, i[0] = alpha as int64 (0 for a
 *     float alpha). out = a + alpha * b (a - alpha * b).
 *   BINARY_mul, div, floor_divide, trunc_divide, remainder, fmod, pow,
 *     maximum, minimum, atan2: inputs (a, b); no attrs.
 *   Scalar variants record the same node with b the wrapped scalar (which
 *     never requires grad), except pow_scalar, which records POW_SCALAR
 *     (see core/ops_unary.c).
 *   Logical, bitwise ops and comparisons (bool / integer results) are not
 *   recorded, as in PyTorch.
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);
em_tensor *em__pow_scalar(em_tensor *t, em_scalar exponent); /* core/ops_unary.c */

/* ---- the op table ------------------------------------------------------------------- */

typedef enum bkind {
  BK_ARITH,   /* add sub mul: result_type */
  BK_DIV,     /* div atan2: integer results become the default float */
  BK_INTDIV,  /* floor_divide trunc_divide remainder fmod: no bool; int / 0 errors */
  BK_POW,     /* no bool; int ** negative wrapped scalar errors */
  BK_MAXMIN,  /* maximum minimum */
  BK_LOGICAL, /* bool out */
  BK_BITWISE, /* integers and bool only */
  BK_CMP      /* bool out */
} bkind;

typedef struct binfo {
  em_op op;
  const char *name;
  const char *name_; /* the in-place op's name */
  const char *kname; /* PyTorch's kernel name for "not implemented" messages */
  bkind kind;
  bool record;
  int64_t grain;
} binfo;

#define BI(name, kname, kind, rec, grain) \
  [EM_OP_BINARY_##name - EM_OP_BINARY_add] = {EM_OP_BINARY_##name, #name, #name "_", kname, \
                                               kind, rec, grain}
static const binfo BINARY[] = {
    BI(add, "add", BK_ARITH, true, EM_GRAIN_CHEAP),
    BI(sub, "sub", BK_ARITH, true, EM_GRAIN_CHEAP),
    BI(mul, "mul", BK_ARITH, true, EM_GRAIN_CHEAP),
    BI(div, "div_true", BK_DIV, true, EM_GRAIN_CHEAP),
    BI(floor_divide, "div_floor_cpu", BK_INTDIV, true, EM_GRAIN_COSTLY),
    BI(trunc_divide, "div_trunc_cpu", BK_INTDIV, true, EM_GRAIN_COSTLY),
    BI(remainder, "remainder_cpu", BK_INTDIV, true, EM_GRAIN_COSTLY),
    BI(fmod, "fmod_cpu", BK_INTDIV, true, EM_GRAIN_COSTLY),
    BI(pow, "pow", BK_POW, true, EM_GRAIN_COSTLY),
    BI(maximum, "maximum_cpu", BK_MAXMIN, true, EM_GRAIN_CHEAP),
    BI(minimum, "minimum_cpu", BK_MAXMIN, true, EM_GRAIN_CHEAP),
    BI(atan2, "atan2_cpu", BK_DIV, true, EM_GRAIN_COSTLY),
    BI(logical_and, "logical_and_cpu", BK_LOGICAL, false, EM_GRAIN_CHEAP),
    BI(logical_or, "logical_or_cpu", BK_LOGICAL, false, EM_GRAIN_CHEAP),
    BI(logical_xor, "logical_xor_cpu", BK_LOGICAL, false, EM_GRAIN_CHEAP),
    BI(bitwise_and, "bitwise_and_cpu", BK_BITWISE, false, EM_GRAIN_CHEAP),
    BI(bitwise_or, "bitwise_or_cpu", BK_BITWISE, false, EM_GRAIN_CHEAP),
    BI(bitwise_xor, "bitwise_xor_cpu", BK_BITWISE, false, EM_GRAIN_CHEAP),
};
#undef BI
#define EM__COUNT1(name) +1
_Static_assert(sizeof BINARY / sizeof BINARY[0] == 0 EM_BINARY_OPS(EM__COUNT1),
               "one BINARY entry per EM_BINARY_OPS name");

#define CI(NAME, name) \
  [EM_OP_##NAME - EM_OP_EQ] = {EM_OP_##NAME, #name,  #name "_",     #name "_cpu", \
                               BK_CMP,       false, EM_GRAIN_CHEAP}
static const binfo COMPARE[] = {CI(EQ, eq), CI(NE, ne), CI(LT, lt),
                                CI(LE, le), CI(GT, gt), CI(GE, ge)};
#undef CI

/* ---- helpers ------------------------------------------------------------------------ */

static em_status not_implemented(const char *op, const char *kname, em_dtype dt) {
  return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", op, kname,
                       em__torch_dtype_name(dt));
}

/* ---- the small-tensor fast path ------------------------------------------------------
 * For a few elements the generic iterator's setup (broadcasting, dim
 * coalescing, conversions, overlap checks) costs more than the work.
 * When every operand is a contiguous CPU tensor of the key dtype with the
 * result's shape (or a single element that broadcasts), the kernel is
 * called once on the raw pointers. */

static inline bool dense(const em_tensor *t) {
  int64_t expect = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->strides[i] != expect) return false;
    expect *= t->shape[i];
  }
  return true;
}

/* Can in[0..n) run on the fast path? *full receives the operand whose
 * shape the result has. */
static inline bool small_ok(int n, em_tensor *const *in, em_dtype key, int64_t grain,
                            em_tensor **full) {
  em_tensor *f = in[0];
  for (int i = 1; i < n; i++)
    if (in[i]->numel > f->numel || in[i]->ndim > f->ndim) f = in[i];
  if (f->numel > grain || f->numel == 0) return false;
  for (int i = 0; i < n; i++) {
    em_tensor *t = in[i];
    if (t->dtype != key || t->device.type != EM_CPU || t->device.index != 0 || !dense(t))
      return false;
    if (t == f || t->numel == 1) {
      if (t->ndim > f->ndim) return false;
      continue;
    }
    if (t->ndim != f->ndim || memcmp(t->shape, f->shape, sizeof(int64_t) * (size_t)t->ndim))
      return false;
  }
  *full = f;
  return true;
}

#define EM__DTYPE_SIZE(e, n, t, s, f, sg) [EM_##e] = s,
static const int8_t ESIZE[EM_DTYPE_COUNT] = {EM_DTYPE_MAP(EM__DTYPE_SIZE)};
#undef EM__DTYPE_SIZE

static inline void small_run(em_loop_fn fn, em_tensor *out, int n, em_tensor *const *in,
                             const em_op_attrs *at) {
  char *data[EM_ITER_MAX_OPERANDS];
  int64_t strides[EM_ITER_MAX_OPERANDS];
  strides[0] = ESIZE[out->dtype];
  data[0] = (char *)out->storage->data + out->offset * strides[0];
  for (int i = 0; i < n; i++) {
    int64_t es = ESIZE[in[i]->dtype];
    data[i + 1] = (char *)in[i]->storage->data + in[i]->offset * es;
    strides[i + 1] = in[i]->numel == 1 && out->numel > 1 ? 0 : es;
  }
  fn(data, strides, out->numel, at);
}

/* out = op(in...) on the fast path. Returns false (nothing done, no error)
 * when it does not apply; else true with *out the result or NULL on
 * failure. */
bool em__elementwise_small(em_op op, em_dtype key, em_dtype rt, int n, em_tensor *const *in,
                           const em_op_attrs *at, int64_t grain, em_tensor **out);
bool em__elementwise_small(em_op op, em_dtype key, em_dtype rt, int n, em_tensor *const *in,
                           const em_op_attrs *at, int64_t grain, em_tensor **out) {
  em_tensor *f;
  if (!small_ok(n, in, key, grain, &f)) return false;
  em_loop_fn fn = (em_loop_fn)em__kernel(op, EM_CPU, key);
  if (!fn) {
    *out = NULL;
    return true;
  }
  *out = em_tensor_empty_on(f->ndim, f->shape, rt, f->device);
  if (*out) small_run(fn, *out, n, in, at);
  return true;
}

/* The same into self (in[0] is self, of dtype key == self's): applies when
 * no other input shares self's storage except as self's very elements. */
static bool inplace_small(em_op op, em_dtype key, em_tensor *self, int n, em_tensor *const *in,
                          const em_op_attrs *at, int64_t grain, em_status *st) {
  em_tensor *f;
  if (!small_ok(n, in, key, grain, &f) || f->numel != self->numel) return false;
  for (int i = 1; i < n; i++) /* sharing only as the very same elements */
    if (in[i]->storage == self->storage &&
        (in[i]->offset != self->offset || in[i]->numel != self->numel))
      return false;
  em_loop_fn fn = (em_loop_fn)em__kernel(op, EM_CPU, key);
  if (!fn) {
    *st = em_last_status();
    return true;
  }
  small_run(fn, self, n, in, at);
  em__bump_version(self);
  *st = EM_OK;
  return true;
}

/* Is any element of the integer tensor t zero? (t on the CPU) */
#define ZSCAN(ENUM, T)                                                                  \
  static void zscan_##ENUM(char **d, const int64_t *s, int64_t n, const em_op_attrs *a) { \
    em_op_attrs *found = (em_op_attrs *)a; /* the caller's non-const flag */            \
    const char *p = d[0];                                                               \
    for (int64_t k = 0; k < n; k++, p += s[0])                                          \
      if (*(const T *)p == 0) {                                                         \
        found->i[0] = 1;                                                                \
        return;                                                                         \
      }                                                                                 \
  }
ZSCAN(INT8, int8_t)
ZSCAN(INT16, int16_t)
ZSCAN(INT32, int32_t)
ZSCAN(INT64, int64_t)
ZSCAN(UINT8, uint8_t)
#undef ZSCAN

static bool has_zero(em_tensor *t) {
  em_loop_fn fn;
  switch ((em_dtype)t->dtype) {
    case EM_INT8: fn = zscan_INT8; break;
    case EM_INT16: fn = zscan_INT16; break;
    case EM_INT32: fn = zscan_INT32; break;
    case EM_INT64: fn = zscan_INT64; break;
    case EM_UINT8: fn = zscan_UINT8; break;
    default: return false;
  }
  if (t->numel == 0 || t->device.type != EM_CPU) return false;
  em_iter it;
  em__iter_init(&it, 1, &t, t->ndim, t->shape);
  em_op_attrs found = {0};
  em__iter_run_range(&it, fn, &found, 0, it.numel);
  return found.i[0] != 0;
}

/* The value of a one-element tensor as an int64 (for wrapped scalars). */
static int64_t scalar_i64(em_tensor *t) {
  return em__load_i64(em__data_ptr(t), (em_dtype)t->dtype);
}

/* Validates dtypes for a (op) b and picks the compute dtype *ct (what the
 * kernel is keyed by and the inputs are converted to) and the result dtype
 * *rt. alpha: add/sub's alpha, or NULL. */
static em_status binary_types(const binfo *bi, const char *name, em_tensor *a, em_tensor *b,
                              const em_scalar *alpha, em_dtype *ct, em_dtype *rt) {
  em_dtype r;
  if (a->dtype == b->dtype && !a->is_wrapped_number && !b->is_wrapped_number) {
    r = (em_dtype)a->dtype; /* what result_type gives, without its loop */
  } else {
    em_tensor *in[2] = {a, b};
    r = em__result_type(2, in);
  }
  *ct = *rt = r;
  switch (bi->kind) {
    case BK_ARITH:
      if (bi->op == EM_OP_BINARY_sub && (a->dtype == EM_BOOL || b->dtype == EM_BOOL)) {
        if (a->dtype == EM_BOOL && b->dtype == EM_BOOL)
          return em__set_error(EM_ERR_DTYPE,
                               "%s: Subtraction, the `-` operator, with two bool tensors is not "
                               "supported. Use the `^` or `logical_xor()` operator instead.",
                               name);
        return em__set_error(EM_ERR_DTYPE,
                             "%s: Subtraction, the `-` operator, with a bool tensor is not "
                             "supported. If you are trying to invert a mask, use the `~` or "
                             "`logical_not()` operator instead.",
                             name);
      }
      if (alpha) {
        if (alpha->kind == EM_SCALAR_FLOAT && !em_dtype_is_float(r))
          return em__set_error(EM_ERR_DTYPE,
                               "%s: For integral input tensors, argument alpha must not be a "
                               "floating point number.",
                               name);
        if (alpha->kind == EM_SCALAR_BOOL && r != EM_BOOL)
          return em__set_error(EM_ERR_DTYPE,
                               "%s: Boolean alpha only supported for Boolean results.", name);
      }
      return EM_OK;
    case BK_DIV:
      if (!em_dtype_is_float(r)) *ct = *rt = em_get_default_dtype();
      return EM_OK;
    case BK_INTDIV:
      if (r == EM_BOOL) return not_implemented(name, bi->kname, r);
      return EM_OK;
    case BK_POW:
      if (r == EM_BOOL) return not_implemented(name, bi->kname, r);
      if (!em_dtype_is_float(r) && b->is_wrapped_number && b->numel == 1 &&
          scalar_i64(b) < 0)
        return em__set_error(EM_ERR_INVALID,
                             "%s: Integers to negative integer powers are not allowed.", name);
      return EM_OK;
    case BK_MAXMIN:
      return EM_OK;
    case BK_LOGICAL:
    case BK_CMP:
      *rt = EM_BOOL;
      return EM_OK;
    case BK_BITWISE:
      if (em_dtype_is_float(r)) return not_implemented(name, bi->kname, r);
      return EM_OK;
  }
  return EM_OK;
}

/* Clears the scalar fields (d/d2 stay unset: nd is 0). */
static void attrs_init(em_op_attrs *at) {
  for (int k = 0; k < 4; k++) at->f[k] = 0, at->i[k] = 0;
  at->nd = 0;
  at->s = em_scalar_int(0);
}

static void alpha_attrs(em_op_attrs *at, const em_scalar *alpha) {
  em_scalar al = alpha ? *alpha : em_scalar_int(1);
  at->s = al;
  at->f[0] = em_scalar_to_double(al);
  at->i[0] = al.kind == EM_SCALAR_FLOAT ? 0 : al.v.i;
}

/* Integer floor_divide/trunc_divide/remainder/fmod: the divisor converted
 * to ct (conversion can make zeros: 256 as uint8) must have no zero.
 * *conv receives the converted divisor when one was made. */
static em_status check_divisor(const binfo *bi, const char *name, em_tensor *b, em_dtype ct,
                               em_tensor **conv) {
  *conv = NULL;
  if (bi->kind != BK_INTDIV || em_dtype_is_float(ct)) return EM_OK;
  if (b->dtype != ct) {
    *conv = em__convert(b, ct);
    if (!*conv) return em_last_status();
    b = *conv;
  }
  if (has_zero(b)) {
    em_tensor_release(*conv);
    *conv = NULL;
    return em__set_error(EM_ERR_INVALID, "%s: ZeroDivisionError (integer division by zero)",
                         name);
  }
  return EM_OK;
}

/* out = a (op) b of dtype rt, computed in ct; records nothing. */
static em_tensor *binary_compute(const binfo *bi, const char *name, em_tensor *a, em_tensor *b,
                                 em_dtype ct, em_dtype rt, const em_op_attrs *at) {
  em_tensor *conv;
  if (check_divisor(bi, name, b, ct, &conv)) return NULL;
  em_tensor *in[2] = {a, conv ? conv : b};
  em_tensor *out;
  if (!em__elementwise_small(bi->op, ct, rt, 2, in, at, bi->grain, &out)) {
    em_dtype idt[2] = {ct, ct};
    bool convert = in[0]->dtype != ct || in[1]->dtype != ct;
    out = em__elementwise(bi->op, ct, rt, 2, in, convert ? idt : NULL, at, bi->grain);
  }
  em_tensor_release(conv);
  return out;
}

static em_tensor *binary_out(const binfo *bi, em_tensor *a, em_tensor *b,
                             const em_scalar *alpha) {
  if (EM_UNLIKELY(!a || !b)) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", bi->name);
  em_dtype ct, rt;
  if (binary_types(bi, bi->name, a, b, alpha, &ct, &rt)) return NULL;
  em_op_attrs at;
  attrs_init(&at);
  if (bi->kind == BK_ARITH) alpha_attrs(&at, alpha);
  em_tensor *out = binary_compute(bi, bi->name, a, b, ct, rt, &at);
  if (!bi->record) return out;
  em_tensor *in[2] = {a, b};
  return em__record1(bi->op, 2, in, out, &at);
}

/* ---- in place ----------------------------------------------------------------------- */

/* Checks that broadcasting self with the others keeps self's shape. */
em_status em__check_inplace_shape(const char *name, em_tensor *self, int n,
                                  em_tensor *const *others);
em_status em__check_inplace_shape(const char *name, em_tensor *self, int n,
                                  em_tensor *const *others) {
  int ndims[EM_ITER_MAX_OPERANDS];
  const int64_t *shapes[EM_ITER_MAX_OPERANDS];
  ndims[0] = self->ndim;
  shapes[0] = self->shape;
  for (int i = 0; i < n; i++) {
    ndims[i + 1] = others[i]->ndim;
    shapes[i + 1] = others[i]->shape;
  }
  int nd;
  int64_t shape[EM_MAX_DIMS];
  em_status st = em_broadcast_shapes(n + 1, ndims, shapes, &nd, shape);
  if (st) {
    em__prefix_error("%s", name);
    return st;
  }
  bool same = nd == self->ndim;
  for (int i = 0; same && i < nd; i++) same = shape[i] == self->shape[i];
  if (!same) {
    char b[EM_SHAPE_STR_MAX];
    return em__set_error(EM_ERR_SHAPE, "%s: output with shape %s doesn't match the broadcast "
                         "shape %s", name, em__tshape(self), em__shape_str(nd, shape, b, sizeof b));
  }
  return EM_OK;
}

/* The "result type Float can't be cast to the desired output type Long"
 * check of every in-place op. */
em_status em__check_inplace_cast(const char *name, em_dtype result, em_dtype self);
em_status em__check_inplace_cast(const char *name, em_dtype result, em_dtype self) {
  if (result == self || em_can_cast(result, self)) return EM_OK;
  return em__set_error(EM_ERR_DTYPE,
                       "%s: result type %s can't be cast to the desired output type %s", name,
                       em__torch_dtype_name(result), em__torch_dtype_name(self));
}

typedef struct inplace_ctx {
  const binfo *bi;
  em_tensor *other;
  const em_scalar *alpha;
} inplace_ctx;

static em_tensor *binary_outplace(em_tensor *self_copy, void *ctx) {
  inplace_ctx *c = ctx;
  return binary_out(c->bi, self_copy, c->other, c->alpha);
}

static em_status binary_inplace(const binfo *bi, em_tensor *self, em_tensor *other,
                                const em_scalar *alpha) {
  const char *name = bi->name_;
  if (!self || !other) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", name);
  em_dtype ct, rt;
  EM_CHECK(binary_types(bi, name, self, other, alpha, &ct, &rt));
  EM_CHECK(em__check_inplace_cast(name, rt, (em_dtype)self->dtype));
  EM_CHECK(em__check_inplace_shape(name, self, 1, &other));
  em_tensor *in[2] = {self, other};
  if (em__should_record(2, in)) {
    inplace_ctx c = {bi, other, alpha};
    return em__inplace_recorded(name, self, binary_outplace, &c);
  }
  em_op_attrs at;
  attrs_init(&at);
  if (bi->kind == BK_ARITH) alpha_attrs(&at, alpha);
  if (rt != self->dtype) {
    em_tensor *r = binary_compute(bi, name, self, other, ct, rt, &at);
    if (!r) return em_last_status();
    em_status st = em__copy_into(self, r);
    em_tensor_release(r);
    return st;
  }
  em_tensor *conv;
  EM_CHECK(check_divisor(bi, name, other, ct, &conv));
  if (conv) in[1] = conv;
  em_status st;
  if (inplace_small(bi->op, ct, self, 2, in, &at, bi->grain, &st)) {
    em_tensor_release(conv);
    return st;
  }
  em_dtype idt[2] = {ct, ct};
  bool convert = in[0]->dtype != ct || in[1]->dtype != ct;
  st = em__elementwise_into(bi->op, ct, self, 2, in, convert ? idt : NULL, &at, bi->grain);
  em_tensor_release(conv);
  return st;
}

/* ---- scalar operands ---------------------------------------------------------------- */

static em_tensor *binary_scalar(const binfo *bi, em_tensor *a, em_scalar s) {
  if (bi->op == EM_OP_BINARY_pow) return em__pow_scalar(a, s);
  em_tensor *w = em_tensor_wrapped_scalar(s);
  if (!w) return NULL;
  em_tensor *out = binary_out(bi, a, w, NULL);
  em_tensor_release(w);
  return out;
}

/* ---- the public functions ----------------------------------------------------------- */

#define DEF_BINARY_API(name)                                                            \
  em_tensor *em_tensor_##name(em_tensor *a, em_tensor *b) {                             \
    return binary_out(&BINARY[EM_OP_BINARY_##name - EM_OP_BINARY_add], a, b, NULL);     \
  }                                                                                     \
  em_status em_tensor_##name##_(em_tensor *a, em_tensor *b) {                           \
    return binary_inplace(&BINARY[EM_OP_BINARY_##name - EM_OP_BINARY_add], a, b, NULL); \
  }                                                                                     \
  em_tensor *em_tensor_##name##_scalar(em_tensor *a, em_scalar b) {                     \
    return binary_scalar(&BINARY[EM_OP_BINARY_##name - EM_OP_BINARY_add], a, b);        \
  }
EM_BINARY_OPS(DEF_BINARY_API)
#undef DEF_BINARY_API

em_tensor *em_tensor_add_alpha(em_tensor *a, em_tensor *b, em_scalar alpha) {
  return binary_out(&BINARY[0], a, b, &alpha);
}
em_status em_tensor_add_alpha_(em_tensor *a, em_tensor *b, em_scalar alpha) {
  return binary_inplace(&BINARY[0], a, b, &alpha);
}
em_tensor *em_tensor_sub_alpha(em_tensor *a, em_tensor *b, em_scalar alpha) {
  return binary_out(&BINARY[EM_OP_BINARY_sub - EM_OP_BINARY_add], a, b, &alpha);
}
em_status em_tensor_sub_alpha_(em_tensor *a, em_tensor *b, em_scalar alpha) {
  return binary_inplace(&BINARY[EM_OP_BINARY_sub - EM_OP_BINARY_add], a, b, &alpha);
}

#define DEF_CMP_API(name)                                                           \
  em_tensor *em_tensor_##name(em_tensor *a, em_tensor *b) {                         \
    return binary_out(&COMPARE[EM_OP_##name##_ENUM - EM_OP_EQ], a, b, NULL);        \
  }                                                                                 \
  em_tensor *em_tensor_##name##_scalar(em_tensor *a, em_scalar b) {                 \
    return binary_scalar(&COMPARE[EM_OP_##name##_ENUM - EM_OP_EQ], a, b);           \
  }
#define EM_OP_eq_ENUM EM_OP_EQ
#define EM_OP_ne_ENUM EM_OP_NE
#define EM_OP_lt_ENUM EM_OP_LT
#define EM_OP_le_ENUM EM_OP_LE
#define EM_OP_gt_ENUM EM_OP_GT
#define EM_OP_ge_ENUM EM_OP_GE
EM_COMPARE_OPS(DEF_CMP_API)
#undef DEF_CMP_API
