/* Shape-building ops: cat, stack, flip, repeat, pad. Each allocates a new
 * contiguous result (views live in ops_view.c).
 *
 * Autograd records (inputs as the user passed them; attrs layout):
 *   CAT     inputs: all n tensors, in order. i[0] = dim (wrapped, >= 0).
 *           Inputs that are legacy empty tensors (1-D, size 0) were skipped:
 *           they take no part in the result (their grad is empty); every
 *           other input k occupies result[..., off_k : off_k + in_k.size(dim),
 *           ...] with off_k the sum of the earlier non-skipped sizes.
 *   FLIP    inputs: t. nd = number of flipped dims, d[0..nd) = the dims
 *           (wrapped, >= 0, no repeats). Backward: flip the grad.
 *   REPEAT  inputs: t. nd = number of repeats (>= t.ndim), d[0..nd) = the
 *           repeats; t is viewed with nd - t.ndim leading 1-dims first.
 *           Backward: grad viewed as [r0, s0, r1, s1, ...], summed over r.
 *   PAD     inputs: t. nd = t.ndim; d[j] = pad before dim j, d2[j] = pad
 *           after dim j (0 for dims F.pad leaves alone; negative = crop);
 *           f[0] = the fill value. Backward: pad the grad with the negated
 *           pads (a crop, and zeros where the input was cropped).
 *   stack records VIEW (unsqueeze) per input and then CAT.
 */
#include <stdlib.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);

/* Kernel signatures: must match core/cpu/shape.c. */
typedef em_status (*cat_fn)(char *out, int64_t outer, int64_t out_row, int n,
                            char *const *src, const int64_t *row);
typedef void (*repeat_fn)(char *out, const char *src, int nd, const int64_t *shape,
                          const int64_t *reps, int64_t esize);

/* A view of t (not recorded) with new geometry. */
static em_tensor *raw_view(em_tensor *t, int nd, const int64_t *shape, const int64_t *strides,
                           int64_t offset) {
  return em__tensor_new(t->storage, (em_dtype)t->dtype, nd, shape, strides, offset);
}

/* ---- cat / stack ------------------------------------------------------------------- */

static bool cat_skipped(const em_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

em_tensor *em_tensor_cat(int n, em_tensor *const *ts, int dim) {
  if (n <= 0 || !ts) return EM_FAIL(EM_ERR_INVALID, "cat: expected a non-empty list of Tensors");
  for (int k = 0; k < n; k++) {
    if (!ts[k]) return EM_FAIL(EM_ERR_INVALID, "cat: tensor at position %d is NULL", k);
    if (ts[k]->ndim == 0)
      return EM_FAIL(EM_ERR_SHAPE,
                     "cat: zero-dimensional tensor (at position %d) cannot be concatenated", k);
  }
  if (em__check_same_device("cat", n, ts)) return NULL;
  em_dtype dt = em__result_type(n, ts);
  /* the first input that is not a legacy empty tensor fixes the geometry */
  int ref = -1;
  for (int k = 0; k < n && ref < 0; k++)
    if (!cat_skipped(ts[k])) ref = k;
  if (ref < 0) /* all legacy empty: PyTorch returns an empty [0] tensor */
    return em__record1(EM_OP_CAT, n, ts, em_tensor_empty_on(EM_DIMS(0), dt, ts[0]->device),
                       &(em_op_attrs){.i = {0}});
  const em_tensor *r = ts[ref];
  int d;
  if (em__wrap_dim("cat", dim, r->ndim, &d)) return NULL;
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, r->shape, sizeof(int64_t) * (size_t)r->ndim);
  shape[d] = 0;
  for (int k = 0; k < n; k++) {
    const em_tensor *t = ts[k];
    if (cat_skipped(t)) continue;
    if (t->ndim != r->ndim)
      return EM_FAIL(EM_ERR_SHAPE, "cat: Tensors must have same number of dimensions: got %d and %d",
                     r->ndim, t->ndim);
    for (int j = 0; j < r->ndim; j++)
      if (j != d && t->shape[j] != r->shape[j])
        return EM_FAIL(EM_ERR_SHAPE,
                       "cat: Sizes of tensors must match except in dimension %d. Expected size "
                       "%lld but got size %lld for tensor number %d in the list (shapes %s and %s)",
                       d, (long long)r->shape[j], (long long)t->shape[j], k, em__tshape(r),
                       em__tshape(t));
    if (__builtin_add_overflow(shape[d], t->shape[d], &shape[d]))
      return EM_FAIL(EM_ERR_INVALID, "cat: result size along dim %d overflows", d);
  }
  em_tensor *out = em_tensor_empty_on(r->ndim, shape, dt, r->device);
  if (!out) return NULL;
  em_status st = EM_OK;
  char **src = NULL;
  int64_t *row = NULL;
  if (out->numel == 0) goto record;
  /* inputs already contiguous and of the result dtype go through the block
   * kernel in one pass; the others are copied (converted) into their slice */
  src = calloc((size_t)n, sizeof *src);
  row = calloc((size_t)n, sizeof *row);
  if (!src || !row) {
    st = em__set_error(EM_ERR_NOMEM, "cat: out of memory");
    goto done;
  }
  int64_t outer = 1, inner = 1, esize = (int64_t)em_dtype_size(dt);
  for (int j = 0; j < d; j++) outer *= shape[j];
  for (int j = d + 1; j < r->ndim; j++) inner *= shape[j];
  int64_t off = 0;
  bool any_fast = false;
  for (int k = 0; k < n; k++) {
    em_tensor *t = ts[k];
    if (cat_skipped(t)) continue;
    int64_t len = t->shape[d];
    if (t->numel > 0) {
      if (t->dtype == dt && em_tensor_is_contiguous(t)) {
        src[k] = em__data_ptr(t);
        row[k] = len * inner * esize;
        any_fast = true;
      } else {
        int64_t st_[EM_MAX_DIMS];
        memcpy(st_, out->strides, sizeof(int64_t) * (size_t)out->ndim);
        int64_t sh[EM_MAX_DIMS];
        memcpy(sh, out->shape, sizeof(int64_t) * (size_t)out->ndim);
        sh[d] = len;
        em_tensor *slot = raw_view(out, out->ndim, sh, st_, out->offset + off * out->strides[d]);
        EM_CHECK_PTR_GOTO(slot, st, done);
        st = em__copy_into(slot, t);
        em_tensor_release(slot);
        if (st) {
          em__prefix_error("cat");
          goto done;
        }
        /* done: a negative width tells the block pass to step over it */
        row[k] = -len * inner * esize;
      }
    }
    off += len;
  }
  if (any_fast) {
    cat_fn fn = (cat_fn)em__kernel(EM_OP_CAT, (em_device_type)out->device.type, dt);
    if (!fn) {
      st = em_last_status();
      goto done;
    }
    /* one kernel call per maximal run of inputs not copied above: the run
     * [k, k1) fills columns [col, col + w) of every output row */
    int64_t out_row = shape[d] * inner * esize, col = 0;
    int k = 0;
    while (k < n) {
      if (row[k] < 0) {
        col -= row[k];
        k++;
        continue;
      }
      int k1 = k;
      int64_t w = 0;
      while (k1 < n && row[k1] >= 0) w += row[k1++];
      if (w > 0 && (st = fn(em__data_ptr(out) + col, outer, out_row, k1 - k, src + k, row + k)))
        goto done;
      col += w;
      k = k1;
    }
  }
record:
  free(src);
  free(row);
  return em__record1(EM_OP_CAT, n, ts, out, &(em_op_attrs){.i = {d}});
done:
  free(src);
  free(row);
  em_tensor_release(out);
  return NULL;
}

em_tensor *em_tensor_stack(int n, em_tensor *const *ts, int dim) {
  if (n <= 0 || !ts) return EM_FAIL(EM_ERR_INVALID, "stack: stack expects a non-empty TensorList");
  for (int k = 0; k < n; k++)
    if (!ts[k]) return EM_FAIL(EM_ERR_INVALID, "stack: tensor at position %d is NULL", k);
  int d;
  if (em__wrap_dim("stack", dim, ts[0]->ndim + 1, &d)) return NULL;
  for (int k = 1; k < n; k++) {
    bool same = ts[k]->ndim == ts[0]->ndim;
    for (int j = 0; same && j < ts[0]->ndim; j++) same = ts[k]->shape[j] == ts[0]->shape[j];
    if (!same)
      return EM_FAIL(EM_ERR_SHAPE,
                     "stack: stack expects each tensor to be equal size, but got %s at entry 0 "
                     "and %s at entry %d",
                     em__tshape(ts[0]), em__tshape(ts[k]), k);
  }
  em_tensor *small[16];
  em_tensor **u = n <= 16 ? small : calloc((size_t)n, sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "stack: out of memory");
  em_tensor *out = NULL;
  int made = 0;
  for (; made < n; made++) {
    u[made] = em_tensor_unsqueeze(ts[made], d);
    if (!u[made]) goto done;
  }
  out = em_tensor_cat(n, u, d);
  if (!out) em__prefix_error("stack");
done:
  for (int k = 0; k < made; k++) em_tensor_release(u[k]);
  if (u != small) free(u);
  return out;
}

/* ---- flip ---------------------------------------------------------------------------------- */

em_tensor *em_tensor_flip(em_tensor *t, int ndims, const int64_t *dims) {
  em_op_attrs a = {0};
  if (ndims < 0 || (ndims > 0 && !dims))
    return EM_FAIL(EM_ERR_INVALID, "flip: invalid dims list (%d dims)", ndims);
  if (em__wrap_dims("flip", ndims, dims, t->ndim, a.d)) return NULL;
  a.nd = ndims;
  /* a view walking the flipped dims backwards (negative strides never
   * escape: it is only read by the copy) */
  int64_t strides[EM_MAX_DIMS];
  int64_t offset = t->offset;
  memcpy(strides, t->strides, sizeof(int64_t) * (size_t)t->ndim);
  for (int k = 0; k < ndims; k++) {
    int j = (int)a.d[k];
    if (j >= t->ndim || t->shape[j] == 0) continue; /* 0-dim: nothing to flip */
    offset += (t->shape[j] - 1) * t->strides[j];
    strides[j] = -t->strides[j];
  }
  em_tensor *out = em_tensor_empty_on(t->ndim, t->shape, (em_dtype)t->dtype, t->device);
  if (!out) return NULL;
  if (t->numel > 0) {
    em_tensor *v = raw_view(t, t->ndim, t->shape, strides, offset);
    em_status st = v ? em__copy_into(out, v) : em_last_status();
    em_tensor_release(v);
    if (st) {
      em__prefix_error("flip");
      em_tensor_release(out);
      return NULL;
    }
  }
  return em__record1(EM_OP_FLIP, 1, &t, out, &a);
}

/* ---- repeat ---------------------------------------------------------------------------------- */

em_tensor *em_tensor_repeat(em_tensor *t, int nrepeats, const int64_t *repeats) {
  if (nrepeats < t->ndim)
    return EM_FAIL(EM_ERR_INVALID,
                   "repeat: Number of dimensions of repeat dims can not be smaller than number "
                   "of dimensions of tensor (%d < %d)",
                   nrepeats, t->ndim);
  if (nrepeats > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "repeat: %d repeat dims is more than the maximum %d", nrepeats,
                   EM_MAX_DIMS);
  em_op_attrs a = {0};
  a.nd = nrepeats;
  int64_t in_shape[EM_MAX_DIMS], out_shape[EM_MAX_DIMS];
  int lead = nrepeats - t->ndim;
  for (int j = 0; j < nrepeats; j++) {
    a.d[j] = repeats[j];
    in_shape[j] = j < lead ? 1 : t->shape[j - lead];
    if (repeats[j] < 0)
      return EM_FAIL(EM_ERR_INVALID,
                     "repeat: Trying to create tensor with negative dimension %lld (repeats must "
                     "be >= 0, got %lld for dim %d)",
                     (long long)(in_shape[j] * repeats[j]), (long long)repeats[j], j);
    if (__builtin_mul_overflow(in_shape[j], repeats[j], &out_shape[j]))
      return EM_FAIL(EM_ERR_INVALID, "repeat: size of dim %d overflows (%lld * %lld)", j,
                     (long long)in_shape[j], (long long)repeats[j]);
  }
  em_tensor *out = em_tensor_empty_on(nrepeats, out_shape, (em_dtype)t->dtype, t->device);
  if (!out) return NULL;
  if (out->numel > 0) {
    repeat_fn fn = (repeat_fn)em__kernel(EM_OP_REPEAT, (em_device_type)t->device.type,
                                         (em_dtype)t->dtype);
    em_tensor *c = fn ? (em_tensor_is_contiguous(t) ? em_tensor_retain(t)
                                                    : em__convert(t, (em_dtype)t->dtype))
                      : NULL;
    if (!c) {
      em_tensor_release(out);
      return NULL;
    }
    fn(em__data_ptr(out), em__data_ptr(c), nrepeats, in_shape, repeats,
       (int64_t)em_dtype_size((em_dtype)t->dtype));
    em_tensor_release(c);
  }
  return em__record1(EM_OP_REPEAT, 1, &t, out, &a);
}

/* ---- pad ---------------------------------------------------------------------------------------- */

em_tensor *em_tensor_pad(em_tensor *t, int npads, const int64_t *pads, double value) {
  if (npads < 0 || npads % 2 != 0)
    return EM_FAIL(EM_ERR_INVALID, "pad: Padding length must be divisible by 2 (got %d)", npads);
  if (npads / 2 > t->ndim)
    return EM_FAIL(EM_ERR_INVALID,
                   "pad: Padding length too large: %d pads for a tensor of dimension %d", npads,
                   t->ndim);
  em_op_attrs a = {0};
  a.nd = t->ndim;
  a.f[0] = value;
  bool any_positive = false;
  for (int k = 0; k < npads / 2; k++) {
    int j = t->ndim - 1 - k;
    a.d[j] = pads[2 * k];
    a.d2[j] = pads[2 * k + 1];
    if (a.d[j] > 0 || a.d2[j] > 0) any_positive = true;
  }
  /* the input part that survives (negative pads crop) and where it lands */
  int64_t out_shape[EM_MAX_DIMS], in_start[EM_MAX_DIMS], out_start[EM_MAX_DIMS],
      keep[EM_MAX_DIMS];
  for (int j = 0; j < t->ndim; j++) {
    int64_t before = a.d[j], after = a.d2[j], n = t->shape[j], m;
    bool bad = __builtin_add_overflow(n, before, &m) || __builtin_add_overflow(m, after, &m);
    if (bad || m < 0 || (any_positive && m <= 0 && (before || after)))
      return EM_FAIL(EM_ERR_INVALID,
                     "pad: The input size %lld, plus negative padding %lld and %lld resulted in "
                     "a negative output size, which is invalid. Check dimension %d of your input.",
                     (long long)n, (long long)before, (long long)after, j);
    out_shape[j] = m;
    in_start[j] = before < 0 ? -before : 0;
    out_start[j] = before > 0 ? before : 0;
    int64_t k0 = n + (before < 0 ? before : 0) + (after < 0 ? after : 0);
    keep[j] = k0 > 0 ? k0 : 0;
  }
  em_tensor *out = em_tensor_empty_on(t->ndim, out_shape, (em_dtype)t->dtype, t->device);
  if (!out) return NULL;
  em_status st = EM_OK;
  if (out->numel > 0) {
    bool interior = true; /* the input covers the whole output: no fill */
    for (int j = 0; j < t->ndim; j++) interior = interior && keep[j] == out_shape[j];
    if (!interior) EM_CHECK_GOTO(em_tensor_fill_(out, em_scalar_float(value)), st, fail);
    int64_t in_off = t->offset, out_off = out->offset;
    bool empty = false;
    for (int j = 0; j < t->ndim; j++) {
      in_off += in_start[j] * t->strides[j];
      out_off += out_start[j] * out->strides[j];
      empty = empty || keep[j] == 0;
    }
    if (!empty) {
      em_tensor *src = raw_view(t, t->ndim, keep, t->strides, in_off);
      em_tensor *dst = raw_view(out, t->ndim, keep, out->strides, out_off);
      st = src && dst ? em__copy_into(dst, src) : em_last_status();
      em_tensor_release(src);
      em_tensor_release(dst);
      if (st) {
        em__prefix_error("pad");
        goto fail;
      }
    }
  }
  return em__record1(EM_OP_PAD, 1, &t, out, &a);
fail:
  em_tensor_release(out);
  return NULL;
}
