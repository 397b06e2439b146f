/* Elementwise ternary ops: where, lerp, addcmul, addcdiv.
 *
 * Semantics follow PyTorch 1.13: where needs a bool (or uint8) condition
 * and promotes a and b; lerp is float-only and needs end (and a tensor
 * weight) of self's dtype; addcmul promotes its three tensors (value is
 * converted to the compute dtype); addcdiv rejects integer t1 and t2.
 * In-place forms keep self's shape and dtype.
 *
 * Autograd attrs:
 *   WHERE: inputs (cond, a, b); no attrs.
 *   LERP: inputs (a, b) with i[0] = 1 and the scalar weight in f[0], or
 *     inputs (a, b, weight) with i[0] = 0.
 *   ADDCMUL, ADDCDIV: inputs (a, t1, t2); s = value, f[0] = value as
 *     double (i[0] = value as int64 for integer kernels).
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);
const char *em__torch_dtype_name(em_dtype dt);
em_status em__check_inplace_cast(const char *name, em_dtype result, em_dtype self);
em_status em__check_inplace_shape(const char *name, em_tensor *self, int n,
                                  em_tensor *const *others);

static void attrs_init(em_op_attrs *at) {
  for (int k = 0; k < 4; k++) at->f[k] = 0, at->i[k] = 0;
  at->nd = 0;
  at->s = em_scalar_int(0);
}

/* ---- where -------------------------------------------------------------------------- */

em_tensor *em_tensor_where(em_tensor *cond, em_tensor *a, em_tensor *b) {
  if (!cond || !a || !b) return EM_FAIL(EM_ERR_INVALID, "where: NULL tensor");
  if (cond->dtype != EM_BOOL && cond->dtype != EM_UINT8)
    return EM_FAIL(EM_ERR_DTYPE,
                   "where: where expected condition to be a boolean tensor, but got a tensor "
                   "with dtype %s",
                   em__torch_dtype_name((em_dtype)cond->dtype));
  em_tensor *ab[2] = {a, b};
  em_dtype ct = em__result_type(2, ab);
  em_tensor *in[3] = {cond, a, b};
  em_dtype idt[3] = {EM_DTYPE_UNDEFINED, ct, ct};
  bool convert = a->dtype != ct || b->dtype != ct;
  em_tensor *out = em__elementwise(EM_OP_WHERE, ct, ct, 3, in, convert ? idt : NULL, NULL,
                                   EM_GRAIN_CHEAP);
  return em__record1(EM_OP_WHERE, 3, in, out, NULL);
}

/* ---- lerp --------------------------------------------------------------------------- */

/* C++ type names, as PyTorch's lerp messages print them. */
static const char *cpp_type_name(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return "float";
    case EM_FLOAT64: return "double";
    case EM_FLOAT16: return "c10::Half";
    case EM_BFLOAT16: return "c10::BFloat16";
    case EM_INT8: return "signed char";
    case EM_INT16: return "short int";
    case EM_INT32: return "int";
    case EM_INT64: return "long int";
    case EM_UINT8: return "unsigned char";
    default: return "bool";
  }
}

static em_status lerp_check(const char *name, em_tensor *a, em_tensor *b, em_tensor *w) {
  if (b->dtype != a->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: expected dtype %s for `end` but got dtype %s", name,
                         cpp_type_name((em_dtype)a->dtype), cpp_type_name((em_dtype)b->dtype));
  if (w && w->dtype != a->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: expected dtype %s for `weight` but got dtype %s",
                         name, cpp_type_name((em_dtype)a->dtype),
                         cpp_type_name((em_dtype)w->dtype));
  if (!em_dtype_is_float((em_dtype)a->dtype))
    return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", name,
                         w ? "lerp_kernel_tensor" : "lerp_kernel_scalar",
                         em__torch_dtype_name((em_dtype)a->dtype));
  return EM_OK;
}

em_tensor *em_tensor_lerp(em_tensor *a, em_tensor *b, em_tensor *weight) {
  if (!a || !b || !weight) return EM_FAIL(EM_ERR_INVALID, "lerp: NULL tensor");
  if (lerp_check("lerp", a, b, weight)) return NULL;
  em_op_attrs at;
  attrs_init(&at);
  em_tensor *in[3] = {a, b, weight};
  em_tensor *out = em__elementwise(EM_OP_LERP, (em_dtype)a->dtype, (em_dtype)a->dtype, 3, in,
                                   NULL, &at, EM_GRAIN_CHEAP);
  return em__record1(EM_OP_LERP, 3, in, out, &at);
}

em_tensor *em_tensor_lerp_scalar(em_tensor *a, em_tensor *b, double weight) {
  if (!a || !b) return EM_FAIL(EM_ERR_INVALID, "lerp: NULL tensor");
  if (lerp_check("lerp", a, b, NULL)) return NULL;
  em_op_attrs at;
  attrs_init(&at);
  at.i[0] = 1;
  at.f[0] = weight;
  em_tensor *in[2] = {a, b};
  em_tensor *out = em__elementwise(EM_OP_LERP, (em_dtype)a->dtype, (em_dtype)a->dtype, 2, in,
                                   NULL, &at, EM_GRAIN_CHEAP);
  return em__record1(EM_OP_LERP, 2, in, out, &at);
}

typedef struct lerp_ctx {
  em_tensor *b;
  double w;
} lerp_ctx;

static em_tensor *lerp_outplace(em_tensor *self_copy, void *ctx) {
  lerp_ctx *c = ctx;
  return em_tensor_lerp_scalar(self_copy, c->b, c->w);
}

em_status em_tensor_lerp_(em_tensor *a, em_tensor *b, double weight) {
  if (!a || !b) return em__set_error(EM_ERR_INVALID, "lerp_: NULL tensor");
  EM_CHECK(lerp_check("lerp_", a, b, NULL));
  EM_CHECK(em__check_inplace_shape("lerp_", a, 1, &b));
  em_tensor *in[2] = {a, b};
  if (em__should_record(2, in)) {
    lerp_ctx c = {b, weight};
    return em__inplace_recorded("lerp_", a, lerp_outplace, &c);
  }
  em_op_attrs at;
  attrs_init(&at);
  at.i[0] = 1;
  at.f[0] = weight;
  return em__elementwise_into(EM_OP_LERP, (em_dtype)a->dtype, a, 2, in, NULL, &at,
                              EM_GRAIN_CHEAP);
}

/* ---- addcmul / addcdiv -------------------------------------------------------------- */

static em_status addc_types(em_op op, const char *name, em_tensor *a, em_tensor *t1,
                            em_tensor *t2, em_dtype *ct) {
  if (op == EM_OP_ADDCDIV && !em_dtype_is_float((em_dtype)t1->dtype) &&
      !em_dtype_is_float((em_dtype)t2->dtype))
    return em__set_error(
        EM_ERR_DTYPE,
        "%s: Integer division with addcdiv is no longer supported, and in a future  release "
        "addcdiv will perform a true division of tensor1 and tensor2. The historic addcdiv "
        "behavior can be implemented as (input + value * torch.trunc(tensor1 / "
        "tensor2)).to(input.dtype) for integer inputs and as (input + value * tensor1 / "
        "tensor2) for float inputs. The future addcdiv behavior is just the latter "
        "implementation: (input + value * tensor1 / tensor2), for all dtypes.",
        name);
  em_tensor *in[3] = {a, t1, t2};
  *ct = em__result_type(3, in);
  if (*ct == EM_BOOL)
    return em__set_error(EM_ERR_DTYPE, "%s: \"%s_cpu_out\" not implemented for 'Bool'", name,
                         op == EM_OP_ADDCMUL ? "addcmul" : "addcdiv");
  return EM_OK;
}

static void addc_attrs(em_op_attrs *at, em_scalar value) {
  attrs_init(at);
  at->s = value;
  at->f[0] = em_scalar_to_double(value);
  if (value.kind != EM_SCALAR_FLOAT)
    at->i[0] = value.v.i;
  else if (value.v.f != value.v.f)
    at->i[0] = 0;
  else
    at->i[0] = value.v.f >= 9.2233720368547758e18    ? INT64_MAX
               : value.v.f <= -9.2233720368547758e18 ? INT64_MIN
                                                     : (int64_t)value.v.f;
}

static em_tensor *addc_compute(em_op op, em_tensor *a, em_tensor *t1, em_tensor *t2,
                               em_dtype ct, const em_op_attrs *at) {
  em_tensor *in[3] = {a, t1, t2};
  em_dtype idt[3] = {ct, ct, ct};
  bool convert = a->dtype != ct || t1->dtype != ct || t2->dtype != ct;
  return em__elementwise(op, ct, ct, 3, in, convert ? idt : NULL, at, EM_GRAIN_CHEAP);
}

static em_tensor *addc_out(em_op op, const char *name, em_tensor *a, em_tensor *t1,
                           em_tensor *t2, em_scalar value) {
  if (!a || !t1 || !t2) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", name);
  em_dtype ct;
  if (addc_types(op, name, a, t1, t2, &ct)) return NULL;
  em_op_attrs at;
  addc_attrs(&at, value);
  em_tensor *in[3] = {a, t1, t2};
  return em__record1(op, 3, in, addc_compute(op, a, t1, t2, ct, &at), &at);
}

typedef struct addc_ctx {
  em_op op;
  em_tensor *t1, *t2;
  em_scalar value;
} addc_ctx;

static em_tensor *addc_outplace(em_tensor *self_copy, void *ctx) {
  addc_ctx *c = ctx;
  return addc_out(c->op, c->op == EM_OP_ADDCMUL ? "addcmul" : "addcdiv", self_copy, c->t1,
                  c->t2, c->value);
}

static em_status addc_inplace(em_op op, const char *name, em_tensor *a, em_tensor *t1,
                              em_tensor *t2, em_scalar value) {
  if (!a || !t1 || !t2) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", name);
  em_dtype ct;
  EM_CHECK(addc_types(op, name, a, t1, t2, &ct));
  EM_CHECK(em__check_inplace_cast(name, ct, (em_dtype)a->dtype));
  em_tensor *others[2] = {t1, t2};
  EM_CHECK(em__check_inplace_shape(name, a, 2, others));
  em_tensor *in[3] = {a, t1, t2};
  if (em__should_record(3, in)) {
    addc_ctx c = {op, t1, t2, value};
    return em__inplace_recorded(name, a, addc_outplace, &c);
  }
  em_op_attrs at;
  addc_attrs(&at, value);
  if (ct == a->dtype) {
    em_dtype idt[3] = {ct, ct, ct};
    bool convert = t1->dtype != ct || t2->dtype != ct;
    return em__elementwise_into(op, ct, a, 3, in, convert ? idt : NULL, &at, EM_GRAIN_CHEAP);
  }
  em_tensor *r = addc_compute(op, a, t1, t2, ct, &at);
  if (!r) return em_last_status();
  em_status st = em__copy_into(a, r);
  em_tensor_release(r);
  return st;
}

em_tensor *em_tensor_addcmul(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value) {
  return addc_out(EM_OP_ADDCMUL, "addcmul", a, t1, t2, value);
}
em_status em_tensor_addcmul_(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value) {
  return addc_inplace(EM_OP_ADDCMUL, "addcmul_", a, t1, t2, value);
}
em_tensor *em_tensor_addcdiv(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value) {
  return addc_out(EM_OP_ADDCDIV, "addcdiv", a, t1, t2, value);
}
em_status em_tensor_addcdiv_(em_tensor *a, em_tensor *t1, em_tensor *t2, em_scalar value) {
  return addc_inplace(EM_OP_ADDCDIV, "addcdiv_", a, t1, t2, value);
}
