/* View ops: new geometry over the same storage, never a copy (reshape and
 * flatten copy only when no view can express the result).
 *
 * Autograd records: VIEW (any pure reshape; backward reshapes back),
 * PERMUTE (d = permutation), SLICE (i = dim, start, step), SELECT (i = dim,
 * index), EXPAND, AS_STRIDED (d = sizes, d2 = strides, i[0] = offset,
 * i[1] = the input's offset, i[2] = whether the input is contiguous). */
#include <stdlib.h>

#include "core/core_impl.h"

static em_tensor *record_view(em_op op, em_tensor *t, em_tensor *v, const em_op_attrs *a) {
  return em__record1(op, 1, &t, v, a);
}

/* ---- view / reshape ---------------------------------------------------------------- */

/* Resolves one -1 in shape against numel; writes the result to out. */
static em_status infer_shape(const char *op, int64_t numel, int ndim, const int64_t *shape,
                             int64_t *out) {
  if (ndim < 0 || ndim > EM_MAX_DIMS)
    return em__set_error(EM_ERR_INVALID, "%s: number of dims %d is not in [0, %d]", op, ndim,
                         EM_MAX_DIMS);
  int infer = -1;
  int64_t prod = 1;
  for (int i = 0; i < ndim; i++) {
    out[i] = shape[i];
    if (shape[i] == -1) {
      if (infer >= 0) return em__set_error(EM_ERR_INVALID, "%s: only one dimension can be inferred", op);
      infer = i;
    } else if (shape[i] < 0) {
      return em__set_error(EM_ERR_INVALID, "%s: invalid shape dimension %lld", op,
                           (long long)shape[i]);
    } else if (__builtin_mul_overflow(prod, shape[i], &prod)) {
      return em__set_error(EM_ERR_INVALID, "%s: shape is too large", op);
    }
  }
  char b[EM_SHAPE_STR_MAX];
  if (infer >= 0) {
    if (prod == 0 || numel % prod != 0)
      return em__set_error(EM_ERR_SHAPE, "%s: shape '%s' is invalid for input of size %lld", op,
                           em__shape_str(ndim, shape, b, sizeof b), (long long)numel);
    out[infer] = numel / prod;
  } else if (prod != numel) {
    return em__set_error(EM_ERR_SHAPE, "%s: shape '%s' is invalid for input of size %lld", op,
                         em__shape_str(ndim, shape, b, sizeof b), (long long)numel);
  }
  return EM_OK;
}

/* PyTorch's computeStride: strides for viewing (ond, oshape, ostride) as
 * nshape, or false when the memory layout cannot express it. */
static bool view_strides(int ond, const int64_t *oshape, const int64_t *ostride, int nnd,
                         const int64_t *nshape, int64_t *nstride, int64_t numel) {
  static const int64_t one = 1;
  if (ond == 0) {
    oshape = &one;
    ostride = &one;
    ond = 1;
  }
  if (numel == 0) {
    em__contiguous_strides(nnd, nshape, nstride);
    return true;
  }
  int view_d = nnd - 1;
  int64_t chunk_base = ostride[ond - 1], tensor_numel = 1, view_numel = 1;
  for (int td = ond - 1; td >= 0; td--) {
    tensor_numel *= oshape[td];
    if (td == 0 || (oshape[td - 1] != 1 && ostride[td - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || nshape[view_d] == 1)) {
        nstride[view_d] = view_numel * chunk_base;
        view_numel *= nshape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) {
        chunk_base = ostride[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

/* A VIEW-recorded view of t with shape (ndim, shape) if strides allow. */
static em_tensor *view_as(const char *op, em_tensor *t, int ndim, const int64_t *shape,
                          bool *needs_copy) {
  int64_t strides[EM_MAX_DIMS];
  if (!view_strides(t->ndim, t->shape, t->strides, ndim, shape, strides, t->numel)) {
    if (needs_copy) {
      *needs_copy = true;
      return NULL;
    }
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: view size is not compatible with input tensor's size and stride (at "
                   "least one dimension spans across two contiguous subspaces); use reshape "
                   "instead (input %s)",
                   op, em__tshape(t));
  }
  em_tensor *v = em__tensor_view_of(t, ndim, shape, strides, t->offset);
  return record_view(EM_OP_VIEW, t, v, NULL);
}

em_tensor *em_tensor_view(em_tensor *t, int ndim, const int64_t *shape) {
  int64_t s[EM_MAX_DIMS];
  if (infer_shape("view", t->numel, ndim, shape, s)) return NULL;
  return view_as("view", t, ndim, s, NULL);
}

em_tensor *em_tensor_reshape(em_tensor *t, int ndim, const int64_t *shape) {
  int64_t s[EM_MAX_DIMS];
  if (infer_shape("reshape", t->numel, ndim, shape, s)) return NULL;
  bool needs_copy = false;
  em_tensor *v = view_as("reshape", t, ndim, s, &needs_copy);
  if (v || !needs_copy) return v;
  em_tensor *c = em_tensor_clone(t);
  if (!c) return NULL;
  v = view_as("reshape", c, ndim, s, NULL);
  em_tensor_release(c);
  return v;
}

em_tensor *em_tensor_flatten(em_tensor *t, int start_dim, int end_dim) {
  int s, e;
  if (em__wrap_dim("flatten", start_dim, t->ndim, &s) || em__wrap_dim("flatten", end_dim, t->ndim, &e))
    return NULL;
  if (s > e)
    return EM_FAIL(EM_ERR_INVALID, "flatten: start_dim (%d) cannot come after end_dim (%d)", s, e);
  if (t->ndim == 0) return em_tensor_reshape(t, EM_DIMS(1));
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < s; i++) shape[nd++] = t->shape[i];
  int64_t m = 1;
  for (int i = s; i <= e; i++) m *= t->shape[i];
  shape[nd++] = m;
  for (int i = e + 1; i < t->ndim; i++) shape[nd++] = t->shape[i];
  return em_tensor_reshape(t, nd, shape);
}

em_tensor *em_tensor_unflatten(em_tensor *t, int dim, int nsizes, const int64_t *sizes) {
  int d;
  if (em__wrap_dim("unflatten", dim, t->ndim, &d)) return NULL;
  if (t->ndim == 0) return EM_FAIL(EM_ERR_INVALID, "unflatten: cannot unflatten a 0-dim tensor");
  if (nsizes < 1 || t->ndim - 1 + nsizes > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "unflatten: sizes must be a non-empty list of at most %d dims",
                   EM_MAX_DIMS - t->ndim + 1);
  int64_t inner[EM_MAX_DIMS];
  if (infer_shape("unflatten", t->shape[d], nsizes, sizes, inner)) return NULL;
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < d; i++) shape[nd++] = t->shape[i];
  for (int i = 0; i < nsizes; i++) shape[nd++] = inner[i];
  for (int i = d + 1; i < t->ndim; i++) shape[nd++] = t->shape[i];
  return em_tensor_view(t, nd, shape);
}

em_tensor *em_tensor_squeeze(em_tensor *t) {
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] != 1) {
      shape[nd] = t->shape[i];
      strides[nd++] = t->strides[i];
    }
  em_tensor *v = em__tensor_view_of(t, nd, shape, strides, t->offset);
  return record_view(EM_OP_VIEW, t, v, NULL);
}

em_tensor *em_tensor_squeeze_dim(em_tensor *t, int dim) {
  int d;
  if (em__wrap_dim("squeeze", dim, t->ndim, &d)) return NULL;
  if (t->ndim == 0 || t->shape[d] != 1) {
    em_tensor *v = em__tensor_view_of(t, t->ndim, t->shape, t->strides, t->offset);
    return record_view(EM_OP_VIEW, t, v, NULL);
  }
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < t->ndim; i++)
    if (i != d) {
      shape[nd] = t->shape[i];
      strides[nd++] = t->strides[i];
    }
  em_tensor *v = em__tensor_view_of(t, nd, shape, strides, t->offset);
  return record_view(EM_OP_VIEW, t, v, NULL);
}

em_tensor *em_tensor_unsqueeze(em_tensor *t, int dim) {
  int d;
  if (em__wrap_dim("unsqueeze", dim, t->ndim + 1, &d)) return NULL;
  if (t->ndim + 1 > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "unsqueeze: a tensor can have at most %d dims", EM_MAX_DIMS);
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i <= t->ndim; i++) {
    if (i == d) {
      shape[nd] = 1;
      strides[nd++] = i < t->ndim ? t->shape[i] * t->strides[i] : 1;
    }
    if (i < t->ndim) {
      shape[nd] = t->shape[i];
      strides[nd++] = t->strides[i];
    }
  }
  em_tensor *v = em__tensor_view_of(t, nd, shape, strides, t->offset);
  return record_view(EM_OP_VIEW, t, v, NULL);
}

/* ---- permute / transpose ----------------------------------------------------------------- */

em_tensor *em_tensor_permute(em_tensor *t, int ndims, const int64_t *dims) {
  if (ndims != t->ndim)
    return EM_FAIL(EM_ERR_INVALID,
                   "permute: number of dims don't match in permute (input has %d, got %d)",
                   t->ndim, ndims);
  em_op_attrs a = {0};
  if (em__wrap_dims("permute", ndims, dims, t->ndim, a.d)) return NULL;
  a.nd = ndims;
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  for (int i = 0; i < ndims; i++) {
    shape[i] = t->shape[a.d[i]];
    strides[i] = t->strides[a.d[i]];
  }
  em_tensor *v = em__tensor_view_of(t, ndims, shape, strides, t->offset);
  return record_view(EM_OP_PERMUTE, t, v, &a);
}

em_tensor *em_tensor_transpose(em_tensor *t, int dim0, int dim1) {
  int a, b;
  if (em__wrap_dim("transpose", dim0, t->ndim, &a) || em__wrap_dim("transpose", dim1, t->ndim, &b))
    return NULL;
  int64_t perm[EM_MAX_DIMS];
  for (int i = 0; i < t->ndim; i++) perm[i] = i;
  if (t->ndim) {
    perm[a] = b;
    perm[b] = a;
  }
  return em_tensor_permute(t, t->ndim, perm);
}

em_tensor *em_tensor_t(em_tensor *t) {
  if (t->ndim > 2)
    return EM_FAIL(EM_ERR_INVALID, "t: expects a tensor with <= 2 dimensions, but self is %dD",
                   t->ndim);
  if (t->ndim < 2) return em_tensor_transpose(t, 0, 0);
  return em_tensor_transpose(t, 0, 1);
}

/* ---- narrow / slice / select ---------------------------------------------------------------- */

em_tensor *em_tensor_slice(em_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
  int d;
  if (t->ndim == 0) return EM_FAIL(EM_ERR_INDEX, "slice: cannot slice a 0-dim tensor");
  if (em__wrap_dim("slice", dim, t->ndim, &d)) return NULL;
  if (step <= 0) return EM_FAIL(EM_ERR_INVALID, "slice: step must be positive, got %lld", (long long)step);
  int64_t n = t->shape[d];
  if (start < 0) start = start + n < 0 ? 0 : start + n;
  if (end < 0) end = end + n < 0 ? 0 : end + n;
  if (start > n) start = n;
  if (end > n) end = n;
  if (end < start) end = start;
  int64_t len = (end - start + step - 1) / step;
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  memcpy(shape, t->shape, sizeof(int64_t) * t->ndim);
  memcpy(strides, t->strides, sizeof(int64_t) * t->ndim);
  shape[d] = len;
  strides[d] = t->strides[d] * step;
  em_tensor *v = em__tensor_view_of(t, t->ndim, shape, strides, t->offset + start * t->strides[d]);
  em_op_attrs a = {0};
  a.i[0] = d;
  a.i[1] = start;
  a.i[2] = step;
  return record_view(EM_OP_SLICE, t, v, &a);
}

em_tensor *em_tensor_narrow(em_tensor *t, int dim, int64_t start, int64_t length) {
  int d;
  if (t->ndim == 0) return EM_FAIL(EM_ERR_INDEX, "narrow: cannot narrow a 0-dim tensor");
  if (em__wrap_dim("narrow", dim, t->ndim, &d)) return NULL;
  int64_t n = t->shape[d];
  if (start < -n || start > n)
    return EM_FAIL(EM_ERR_INDEX, "narrow: start (%lld) out of range for dimension %d of size %lld",
                   (long long)start, d, (long long)n);
  if (start < 0) start += n;
  if (length < 0 || start + length > n)
    return EM_FAIL(EM_ERR_INDEX, "narrow: start (%lld) + length (%lld) exceeds dimension size (%lld)",
                   (long long)start, (long long)length, (long long)n);
  return em_tensor_slice(t, d, start, start + length, 1);
}

em_tensor *em_tensor_select(em_tensor *t, int dim, int64_t index) {
  int d;
  if (t->ndim == 0) return EM_FAIL(EM_ERR_INDEX, "select: cannot select on a 0-dim tensor");
  if (em__wrap_dim("select", dim, t->ndim, &d)) return NULL;
  int64_t n = t->shape[d];
  if (index < -n || index >= n)
    return EM_FAIL(EM_ERR_INDEX, "select: index %lld is out of bounds for dimension %d with size %lld",
                   (long long)index, d, (long long)n);
  if (index < 0) index += n;
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < t->ndim; i++)
    if (i != d) {
      shape[nd] = t->shape[i];
      strides[nd++] = t->strides[i];
    }
  em_tensor *v = em__tensor_view_of(t, nd, shape, strides, t->offset + index * t->strides[d]);
  em_op_attrs a = {0};
  a.i[0] = d;
  a.i[1] = index;
  return record_view(EM_OP_SELECT, t, v, &a);
}

/* ---- expand ------------------------------------------------------------------------------------ */

em_tensor *em_tensor_expand(em_tensor *t, int ndim, const int64_t *shape) {
  if (ndim < t->ndim || ndim > EM_MAX_DIMS) {
    char b[EM_SHAPE_STR_MAX];
    return EM_FAIL(EM_ERR_SHAPE,
                   "expand: the number of sizes provided (%d) must be greater or equal to the "
                   "number of dimensions in the tensor (%d) (input %s, sizes %s)",
                   ndim, t->ndim, em__tshape(t), em__shape_str(ndim, shape, b, sizeof b));
  }
  int64_t nshape[EM_MAX_DIMS], nstrides[EM_MAX_DIMS];
  int off = ndim - t->ndim;
  for (int i = 0; i < ndim; i++) {
    int j = i - off;
    int64_t s = shape[i];
    if (j < 0) {
      if (s < 0)
        return EM_FAIL(EM_ERR_SHAPE, "expand: the expanded size %lld is not allowed in a leading, "
                       "non-existing dimension %d", (long long)s, i);
      nshape[i] = s;
      nstrides[i] = 0;
      continue;
    }
    if (s == -1) s = t->shape[j];
    if (s < 0) return EM_FAIL(EM_ERR_SHAPE, "expand: invalid size %lld", (long long)s);
    if (t->shape[j] == s) {
      nshape[i] = s;
      nstrides[i] = t->strides[j];
    } else if (t->shape[j] == 1) {
      nshape[i] = s;
      nstrides[i] = 0;
    } else {
      char b[EM_SHAPE_STR_MAX];
      return EM_FAIL(EM_ERR_SHAPE,
                     "expand: the expanded size of the tensor (%lld) must match the existing size "
                     "(%lld) at non-singleton dimension %d; target sizes %s, tensor sizes %s",
                     (long long)s, (long long)t->shape[j], i,
                     em__shape_str(ndim, shape, b, sizeof b), em__tshape(t));
    }
  }
  if (em__check_shape("expand", ndim, nshape, NULL)) return NULL;
  em_tensor *v = em__tensor_view_of(t, ndim, nshape, nstrides, t->offset);
  return record_view(EM_OP_EXPAND, t, v, NULL);
}

em_tensor *em_tensor_expand_as(em_tensor *t, em_tensor *other) {
  return em_tensor_expand(t, other->ndim, other->shape);
}

/* ---- as_strided --------------------------------------------------------------------------------- */

em_tensor *em_tensor_as_strided(em_tensor *t, int ndim, const int64_t *shape,
                                 const int64_t *strides, int64_t offset) {
  int64_t numel;
  if (em__check_shape("as_strided", ndim, shape, &numel)) return NULL;
  if (offset < 0) return EM_FAIL(EM_ERR_INVALID, "as_strided: negative storage offset %lld", (long long)offset);
  int64_t cap = (int64_t)(t->storage->nbytes / em_dtype_size((em_dtype)t->dtype));
  if (numel > 0) {
    int64_t last = offset;
    for (int i = 0; i < ndim; i++) {
      if (strides[i] < 0)
        return EM_FAIL(EM_ERR_INVALID, "as_strided: negative strides are not supported (%lld)",
                       (long long)strides[i]);
      int64_t r;
      if (__builtin_mul_overflow(shape[i] - 1, strides[i], &r) || __builtin_add_overflow(last, r, &last))
        return EM_FAIL(EM_ERR_INVALID, "as_strided: geometry overflows");
    }
    if (last >= cap)
      return EM_FAIL(EM_ERR_INDEX,
                     "as_strided: setStorage: sizes %s, strides and offset %lld require %lld "
                     "elements but the storage holds %lld",
                     em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0}, EM_SHAPE_STR_MAX),
                     (long long)offset, (long long)last + 1, (long long)cap);
  }
  em_tensor *v = em__tensor_view_of(t, ndim, shape, strides, offset);
  em_op_attrs a = {0};
  a.nd = ndim;
  memcpy(a.d, shape, sizeof(int64_t) * ndim);
  memcpy(a.d2, strides, sizeof(int64_t) * ndim);
  a.i[0] = offset;
  a.i[1] = t->offset;                  /* the input's geometry, for backward */
  a.i[2] = em_tensor_is_contiguous(t); /* (its gradient is built contiguous) */
  return record_view(EM_OP_AS_STRIDED, t, v, &a);
}

/* ---- split / chunk ----------------------------------------------------------------------------- */

em_status em_tensor_split_sizes(em_tensor *t, int nsizes, const int64_t *sizes, int dim,
                                 em_tensor ***out) {
  int d;
  *out = NULL;
  if (t->ndim == 0) return em__set_error(EM_ERR_INVALID, "split: cannot split a 0-dim tensor");
  EM_CHECK(em__wrap_dim("split", dim, t->ndim, &d));
  int64_t total = 0;
  for (int i = 0; i < nsizes; i++) {
    if (sizes[i] < 0)
      return em__set_error(EM_ERR_INVALID, "split_with_sizes: split sizes must be non-negative, got %lld",
                           (long long)sizes[i]);
    total += sizes[i];
  }
  if (total != t->shape[d])
    return em__set_error(EM_ERR_SHAPE,
                         "split_with_sizes: split sizes must sum exactly to %lld (the size of "
                         "dimension %d), but got sizes summing to %lld",
                         (long long)t->shape[d], d, (long long)total);
  if (nsizes < 0) return em__set_error(EM_ERR_INVALID, "split_with_sizes: negative count %d", nsizes);
  em_tensor **list = calloc((size_t)nsizes + 1, sizeof *list);
  if (!list) return em__set_error(EM_ERR_NOMEM, "split: out of memory");
  int64_t start = 0;
  for (int i = 0; i < nsizes; i++) {
    list[i] = em_tensor_narrow(t, d, start, sizes[i]);
    if (!list[i]) {
      em_tensor_list_release(list, i);
      return em_last_status();
    }
    start += sizes[i];
  }
  *out = list;
  return EM_OK;
}

em_status em_tensor_split(em_tensor *t, int64_t split_size, int dim, em_tensor ***out, int *n) {
  int d;
  *out = NULL;
  *n = 0;
  if (t->ndim == 0) return em__set_error(EM_ERR_INVALID, "split: cannot split a 0-dim tensor");
  EM_CHECK(em__wrap_dim("split", dim, t->ndim, &d));
  int64_t size = t->shape[d];
  if (split_size < 0 || (split_size == 0 && size != 0))
    return em__set_error(EM_ERR_INVALID, "split: split_size can only be 0 if dimension size is 0, "
                         "but got %lld", (long long)split_size);
  int64_t count = split_size == 0 ? 1 : (size + split_size - 1) / split_size;
  if (count == 0) count = 1;
  if (count > INT32_MAX) return em__set_error(EM_ERR_INVALID, "split: too many pieces");
  int64_t *sizes = malloc(sizeof(int64_t) * (size_t)count);
  if (!sizes) return em__set_error(EM_ERR_NOMEM, "split: out of memory");
  for (int64_t i = 0; i < count; i++) {
    int64_t rem = size - i * split_size;
    sizes[i] = split_size == 0 ? 0 : (rem < split_size ? rem : split_size);
  }
  em_status st = em_tensor_split_sizes(t, (int)count, sizes, d, out);
  free(sizes);
  if (!st) *n = (int)count;
  return st;
}

em_status em_tensor_chunk(em_tensor *t, int chunks, int dim, em_tensor ***out, int *n) {
  int d;
  *out = NULL;
  *n = 0;
  if (chunks <= 0) return em__set_error(EM_ERR_INVALID, "chunk: number of chunks must be greater than 0, got %d", chunks);
  if (t->ndim == 0) return em__set_error(EM_ERR_INVALID, "chunk: cannot chunk a 0-dim tensor");
  EM_CHECK(em__wrap_dim("chunk", dim, t->ndim, &d));
  int64_t size = t->shape[d];
  int64_t split = (size + chunks - 1) / chunks;
  return em_tensor_split(t, split, d, out, n);
}
