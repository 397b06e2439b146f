/* Copies, conversion, fill, and the autograd plumbing every op uses
 * (recording and in-place rebasing). */
#include <stdlib.h>

#include "core/core_impl.h"

/* ---- recording ------------------------------------------------------------------ */

em_status em__record(em_op op, int nin, em_tensor *const *in, int nout, em_tensor *const *out,
                     const em_op_attrs *a) {
  if (!em__should_record(nin, in)) return EM_OK;
  return em__ag_get()->record(op, nin, in, nout, out, a);
}

em_tensor *em__record1(em_op op, int nin, em_tensor *const *in, em_tensor *out,
                       const em_op_attrs *a) {
  if (!out) return NULL;
  if (em__record(op, nin, in, 1, &out, a)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

/* ---- copies ----------------------------------------------------------------------- */

/* Cross-device copies are provided by the CUDA backend when built (not
 * recorded for autograd: em_tensor_to_device records). */
em_tensor *(*em__to_device_hook)(em_tensor *t, em_device dev) = NULL;

/* dst <- src without recording: broadcast, any dtypes, any layouts, and
 * from another device (src moved to dst's device first). */
em_status em__copy_into(em_tensor *dst, em_tensor *src) {
  em_tensor *moved = NULL;
  if (!em_device_eq(dst->device, src->device)) {
    char a[16], b[16];
    if (!em__to_device_hook)
      return em__set_error(EM_ERR_DEVICE,
                           "copy_: copying from %s to %s is not supported in this build",
                           em_device_str(src->device, a, sizeof a),
                           em_device_str(dst->device, b, sizeof b));
    if (!(moved = em__to_device_hook(src, dst->device))) {
      em__prefix_error("copy_");
      return em_last_status();
    }
    src = moved;
  }
  em_op_attrs at = {0};
  at.i[0] = src->dtype;
  em_status st = em__elementwise_into(EM_OP_COPY, (em_dtype)dst->dtype, dst, 1, &src, NULL, &at,
                                      EM_GRAIN_CHEAP);
  em_tensor_release(moved);
  if (st) em__prefix_error("copy_");
  return st;
}

em_tensor *em__convert(em_tensor *t, em_dtype dt) {
  em_tensor *out = em_tensor_empty_on(t->ndim, t->shape, dt, t->device);
  if (!out) return NULL;
  if (em__copy_into(out, t)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

em_status em__convert_owned(em_tensor **t, em_dtype dt) {
  em_tensor *c = em__convert(*t, dt);
  em_tensor_release(*t);
  *t = c;
  return c ? EM_OK : em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
}

static em_tensor *copy_outplace(em_tensor *self_copy, void *ctx) {
  em_tensor *src = ctx;
  em_tensor *c = em_tensor_to_dtype(src, (em_dtype)self_copy->dtype);
  if (c && !em_device_eq(c->device, self_copy->device)) {
    em_tensor *m = em_tensor_to_device(c, self_copy->device);
    em_tensor_release(c);
    c = m;
  }
  if (!c) return NULL;
  em_tensor *e = em_tensor_expand(c, self_copy->ndim, self_copy->shape);
  em_tensor_release(c);
  return e;
}

em_status em_tensor_copy_(em_tensor *dst, em_tensor *src) {
  if (!dst || !src) return em__set_error(EM_ERR_INVALID, "copy_: NULL tensor");
  em_tensor *in[2] = {dst, src};
  if (em__should_record(2, in)) return em__inplace_recorded("copy_", dst, copy_outplace, src);
  return em__copy_into(dst, src);
}

em_tensor *em_tensor_clone(em_tensor *t) {
  em_tensor *out = em__convert(t, (em_dtype)t->dtype);
  return em__record1(EM_OP_CLONE, 1, &t, out, NULL);
}

em_tensor *em_tensor_contiguous(em_tensor *t) {
  if (em_tensor_is_contiguous(t)) return em_tensor_retain(t);
  return em_tensor_clone(t);
}

em_tensor *em_tensor_to_dtype(em_tensor *t, em_dtype dt) {
  if (!em_dtype_is_valid(dt))
    return EM_FAIL(EM_ERR_DTYPE, "to: invalid dtype %d", (int)dt);
  if (t->dtype == dt) return em_tensor_retain(t);
  em_tensor *out = em__convert(t, dt);
  em_op_attrs a = {0};
  a.i[0] = t->dtype;
  return em__record1(EM_OP_TO_DTYPE, 1, &t, out, &a);
}

/* A move between devices is differentiable (the gradient moves back). */
em_tensor *em_tensor_to_device(em_tensor *t, em_device dev) {
  if (em_device_eq(t->device, dev)) return em_tensor_retain(t);
  if (!em__to_device_hook) {
    char b[16];
    return EM_FAIL(EM_ERR_DEVICE,
                   "to: device %s is not available (ember was built without CUDA support)",
                   em_device_str(dev, b, sizeof b));
  }
  em_op_attrs a = {0};
  return em__record1(EM_OP_TO_DEVICE, 1, &t, em__to_device_hook(t, dev), &a);
}

em_tensor *em_tensor_detach(em_tensor *t) {
  return em__tensor_new(t->storage, (em_dtype)t->dtype, t->ndim, t->shape, t->strides,
                        t->offset);
}

/* ---- fill ---------------------------------------------------------------------------- */

static em_status fill_into(em_tensor *t, em_scalar v) {
  if (t->numel == 0) return EM_OK;
  em_op_attrs a = {0};
  a.s = v;
  em_loop_fn fn = (em_loop_fn)em__kernel(EM_OP_FILL, (em_device_type)t->device.type,
                                         (em_dtype)t->dtype);
  if (!fn) return em_last_status();
  em_iter it;
  em__iter_init(&it, 1, &t, t->ndim, t->shape);
  EM_CHECK(em__iter_run(&it, fn, &a, EM_GRAIN_CHEAP));
  em__bump_version(t);
  return EM_OK;
}

static em_tensor *fill_outplace(em_tensor *self_copy, void *ctx) {
  em_tensor *r = em_tensor_empty_like(self_copy, EM_DTYPE_UNDEFINED);
  if (r && fill_into(r, *(em_scalar *)ctx)) {
    em_tensor_release(r);
    return NULL;
  }
  /* record so the rebased tensor's history says "filled" (zero gradient) */
  em_op_attrs a = {0};
  a.s = *(em_scalar *)ctx;
  return em__record1(EM_OP_FILL, 1, &self_copy, r, &a);
}

em_status em_tensor_fill_(em_tensor *t, em_scalar value) {
  if (em__should_record(1, &t)) return em__inplace_recorded("fill_", t, fill_outplace, &value);
  return fill_into(t, value);
}

em_status em_tensor_zero_(em_tensor *t) { return em_tensor_fill_(t, em_scalar_int(0)); }

/* ---- simple creation ------------------------------------------------------------------ */

em_tensor *em_tensor_full(int ndim, const int64_t *shape, em_scalar value, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_scalar_dtype(value);
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (t && fill_into(t, value)) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

em_tensor *em_tensor_zeros(int ndim, const int64_t *shape, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  return em_tensor_full(ndim, shape, em_scalar_int(0), dt);
}

em_tensor *em_tensor_ones(int ndim, const int64_t *shape, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  return em_tensor_full(ndim, shape, em_scalar_int(1), dt);
}

em_tensor *em_tensor_empty_like(em_tensor *t, em_dtype dt) {
  return em_tensor_empty_on(t->ndim, t->shape, dt == EM_DTYPE_UNDEFINED ? (em_dtype)t->dtype : dt,
                            t->device);
}

static em_tensor *full_like(em_tensor *t, em_scalar v, em_dtype dt) {
  em_tensor *r = em_tensor_empty_like(t, dt);
  if (r && fill_into(r, v)) {
    em_tensor_release(r);
    return NULL;
  }
  return r;
}
em_tensor *em_tensor_zeros_like(em_tensor *t, em_dtype dt) {
  return full_like(t, em_scalar_int(0), dt);
}
em_tensor *em_tensor_ones_like(em_tensor *t, em_dtype dt) {
  return full_like(t, em_scalar_int(1), dt);
}
em_tensor *em_tensor_full_like(em_tensor *t, em_scalar value, em_dtype dt) {
  return full_like(t, value, dt);
}

/* ---- in-place ops under autograd ---------------------------------------------------------- */

em_status em__inplace_recorded(const char *op, em_tensor *self, em__outplace_fn fn, void *ctx) {
  const em__ag_vtable *ag = em__ag_get();
  EM_CHECK(ag->check_inplace(op, self));
  em_tensor *copy = em_tensor_clone(self);
  if (!copy) return em_last_status();
  em_tensor *r = fn(copy, ctx);
  em_tensor_release(copy);
  if (!r) return em_last_status();
  em_status st = EM_OK;
  bool same = r->ndim == self->ndim;
  for (int i = 0; same && i < r->ndim; i++) same = r->shape[i] == self->shape[i];
  if (!same) {
    st = em__set_error(EM_ERR_SHAPE, "%s: output with shape %s doesn't match the broadcast shape %s",
                       op, em__tshape(self), em__tshape(r));
    goto done;
  }
  if (r->dtype != self->dtype && !em_can_cast((em_dtype)r->dtype, (em_dtype)self->dtype)) {
    st = em__check_inplace_cast(op, (em_dtype)r->dtype, (em_dtype)self->dtype);
    goto done;
  }
  EM_CHECK_GOTO(em__copy_into(self, r), st, done);
  st = ag->rebase(self, r);
done:
  em_tensor_release(r);
  return st;
}
