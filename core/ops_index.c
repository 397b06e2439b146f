/* Indexing ops: index_select, gather, scatter*, index_add, masked_fill,
 * masked_select, nonzero, one_hot, embedding, take_along_dim, advanced
 * indexing (index / index_put_).
 *
 * Every index is checked here, once, before a kernel runs: an index
 * outside its dimension is EM_ERR_INDEX "<op>: index 5 is out of bounds for
 * dimension 0 with size 3". Negative indices wrap only in index and
 * index_put_ (as PyTorch); index_select, gather, scatter*, index_add,
 * embedding and take_along_dim reject them. Index tensors are int64;
 * int32 is also accepted by index_select, index_add, embedding, index and
 * index_put_.
 *
 * Autograd records (inputs as the user passed them; index tensors are
 * inputs too and never require grad; attrs layout):
 *   INDEX_SELECT   inputs (t, index).            i[0] = dim (wrapped).
 *   GATHER         inputs (t, index).            i[0] = dim (wrapped).
 *   SCATTER        inputs (t, index, src).       i[0] = dim (wrapped).
 *   SCATTER_VALUE  inputs (t, index).            i[0] = dim; s = value.
 *   SCATTER_ADD    inputs (t, index, src).       i[0] = dim (wrapped).
 *   INDEX_ADD      inputs (t, index, src).       i[0] = dim; s = alpha.
 *   MASKED_FILL    inputs (t, mask).             s = value. The result has
 *                  the broadcast shape of t and mask (out of place).
 *   MASKED_SELECT  inputs (t, mask).             (t and mask broadcast.)
 *   INDEX          inputs (t, indices[0..n)).    i[0] = n. A NULL input is
 *                  a full slice; bool/uint8 inputs are masks; int inputs
 *                  may be negative (wrapped). Backward: index_put_ of the
 *                  grad into zeros with the same indices, accumulate=true.
 *   INDEX_PUT      inputs (t, values, indices[0..n)).  i[0] = n,
 *                  i[1] = accumulate. Recorded only through index_put_
 *                  under autograd (out of place on a copy of t, then t is
 *                  rebased). values has t's dtype and broadcasts to the
 *                  indexing result.
 *   The in-place forms (scatter_, scatter_add_, index_add_, masked_fill_,
 *   index_put_) record the out-of-place op through em__inplace_recorded.
 *   Composites: embedding = index_select(weight, 0, indices flattened)
 *   then a VIEW; take_along_dim = EXPAND of both operands then GATHER.
 *   nonzero and one_hot are not differentiable and record nothing.
 */
#include <stdlib.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src);

/* Kernel signatures: must match core/cpu/index.c (documented there). */
typedef void (*rows_gather_fn)(char *out, const char *src, const int64_t *off, int64_t nb,
                               const em_op_attrs *g);
typedef void (*rows_scatter_fn)(char *dst, const char *vals, const int64_t *off, int64_t nb,
                                const em_op_attrs *g);
typedef void (*masked_select_fn)(char *out, const char *src, const uint8_t *mask, int64_t n);
typedef int64_t (*nonzero_fn)(int64_t *out, const uint8_t *mask, int ndim, const int64_t *shape,
                              const int64_t *strides, int64_t n);
typedef void (*one_hot_fn)(int64_t *out, const int64_t *idx, int64_t n, int64_t classes);

/* Each index entry consumes a dim or inserts one (a 0-dim mask), so no
 * valid call has more entries than EM_MAX_DIMS. */
#define MAX_INDICES EM_MAX_DIMS

/* ---- helpers ------------------------------------------------------------------------- */

static em_tensor *raw_view(em_tensor *t, int nd, const int64_t *shape, const int64_t *strides,
                           int64_t offset) {
  return em__tensor_new(t->storage, (em_dtype)t->dtype, nd, shape, strides, offset);
}

static bool is_int_index(const em_tensor *t) { return t->dtype == EM_INT64 || t->dtype == EM_INT32; }
static bool is_mask(const em_tensor *t) { return t->dtype == EM_BOOL || t->dtype == EM_UINT8; }

static em_status check_index_dtype(const char *op, const em_tensor *idx, bool allow_int32) {
  if (idx->dtype == EM_INT64 || (allow_int32 && idx->dtype == EM_INT32)) return EM_OK;
  return em__set_error(EM_ERR_DTYPE, "%s: Expected dtype %s for index but got %s", op,
                       allow_int32 ? "int32 or int64" : "int64",
                       em_dtype_name((em_dtype)idx->dtype));
}

/* The front ends read index and mask values on the host: CPU only until a
 * device backend provides its own. */
static em_status check_cpu(const char *op, const em_tensor *t) {
  if (t->device.type == EM_CPU) return EM_OK;
  char b[16];
  return em__set_error(EM_ERR_NOTIMPL, "%s: not implemented for %s tensors", op,
                       em_device_str(t->device, b, sizeof b));
}

/* Writes to t must not reach one memory location through two elements. */
static em_status check_no_internal_overlap(const char *op, const em_tensor *t) {
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] > 1 && t->strides[i] == 0)
      return em__set_error(EM_ERR_INVALID,
                           "%s: unsupported operation: more than one element of the written-to "
                           "tensor refers to a single memory location; clone() it first",
                           op);
  return EM_OK;
}

/* t as a contiguous int64 tensor whose values are checked against a dim
 * of the given size (dim only names it in messages). wrap: values in
 * [-size, size) are accepted and negative ones wrapped; else [0, size).
 * Returns t retained when it already qualifies, else a new tensor. */
static em_tensor *index_values(const char *op, em_tensor *t, int64_t size, int dim, bool wrap) {
  em_tensor *c = (t->dtype == EM_INT64 && em_tensor_is_contiguous(t))
                     ? em_tensor_retain(t)
                     : em__convert(t, EM_INT64);
  if (!c) return NULL;
  const int64_t *p = c->numel ? (const int64_t *)em__data_ptr(c) : NULL;
  const int64_t lo = wrap ? -size : 0;
  bool negative = false;
  for (int64_t i = 0; i < c->numel; i++) {
    int64_t v = p[i];
    if (EM_UNLIKELY(v < lo || v >= size)) {
      em_tensor_release(c);
      return EM_FAIL(EM_ERR_INDEX, "%s: index %lld is out of bounds for dimension %d with size %lld",
                     op, (long long)v, dim, (long long)size);
    }
    negative |= v < 0;
  }
  if (!negative) return c;
  if (c == t) { /* the caller's tensor: wrap in a copy */
    em_tensor_release(c);
    c = em__convert(t, EM_INT64);
    if (!c) return NULL;
  }
  int64_t *q = (int64_t *)em__data_ptr(c);
  for (int64_t i = 0; i < c->numel; i++) q[i] += q[i] < 0 ? size : 0;
  return c;
}

/* t as a contiguous tensor of dtype dt that does not share storage with
 * avoid (NULL: no constraint). */
static em_tensor *contiguous_as(em_tensor *t, em_dtype dt, const em_tensor *avoid) {
  if (t->dtype == dt && em_tensor_is_contiguous(t) && (!avoid || t->storage != avoid->storage))
    return em_tensor_retain(t);
  return em__convert(t, dt);
}

/* Nonempty view of a 0-dim size: PyTorch treats a 0-dim tensor as [1]
 * in the dim-wise ops. */
static inline int nonempty_ndim(const em_tensor *t) { return t->ndim ? t->ndim : 1; }
static inline int64_t size_at(const em_tensor *t, int d) { return t->ndim ? t->shape[d] : 1; }
static inline int64_t stride_at(const em_tensor *t, int d) { return t->ndim ? t->strides[d] : 0; }

/* A new int64 [n] tensor of element offsets idx[b] * stride. */
static em_tensor *row_offsets(em_tensor *idx, int64_t stride) {
  em_tensor *off = em_tensor_empty(EM_DIMS(idx->numel), EM_INT64);
  if (!off) return NULL;
  const int64_t *p = idx->numel ? (const int64_t *)em__data_ptr(idx) : NULL;
  int64_t *o = off->numel ? (int64_t *)em__data_ptr(off) : NULL;
  for (int64_t b = 0; b < idx->numel; b++) o[b] = p[b] * stride;
  return off;
}

/* Row geometry for an op over dim d of t: P = dims before d, Q = dims
 * after d (see core/cpu/index.c). */
static void dim_geometry(const em_tensor *t, int d, em_op_attrs *g) {
  int nd = 0;
  for (int j = 0; j < t->ndim; j++) {
    if (j == d) continue;
    g->d[nd] = t->shape[j];
    g->d2[nd] = t->strides[j];
    nd++;
  }
  g->i[0] = t->ndim ? d : 0;
  g->nd = nd;
}

/* ---- index_select / embedding ----------------------------------------------------------- */

em_tensor *em_tensor_index_select(em_tensor *t, int dim, em_tensor *index) {
  const char *op = "index_select";
  int d;
  if (!t || !index) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (em__wrap_dim(op, dim, t->ndim, &d)) return NULL;
  if (check_index_dtype(op, index, true)) return NULL;
  if (em__check_same_device(op, 2, (em_tensor *[]){t, index}) || check_cpu(op, t)) return NULL;
  if (index->ndim > 1)
    return EM_FAIL(EM_ERR_INDEX, "%s: Index is supposed to be a vector, but got shape %s", op,
                   em__tshape(index));
  if (t->ndim == 0 && index->numel != 1)
    return EM_FAIL(EM_ERR_INDEX,
                   "%s: index_select on a 0-dim tensor needs exactly one index, got %lld", op,
                   (long long)index->numel);
  em_tensor *idx = index_values(op, index, size_at(t, d), d, false);
  if (!idx) return NULL;
  em_tensor *off = NULL, *out = NULL;
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  if (t->ndim) shape[d] = idx->numel;
  out = em_tensor_empty_on(t->ndim, shape, (em_dtype)t->dtype, t->device);
  if (!out) goto fail;
  if (out->numel > 0) {
    rows_gather_fn fn = (rows_gather_fn)em__kernel(EM_OP_INDEX_SELECT,
                                                   (em_device_type)t->device.type,
                                                   (em_dtype)t->dtype);
    off = fn ? row_offsets(idx, stride_at(t, d)) : NULL;
    if (!off) goto fail;
    em_op_attrs g = {0};
    dim_geometry(t, d, &g);
    fn(em__data_ptr(out), em__data_ptr(t), (const int64_t *)em__data_ptr(off), idx->numel, &g);
  }
  em_tensor_release(off);
  em_tensor_release(idx);
  em_op_attrs a = {0};
  a.i[0] = d;
  return em__record1(EM_OP_INDEX_SELECT, 2, (em_tensor *[]){t, index}, out, &a);
fail:
  em_tensor_release(out);
  em_tensor_release(off);
  em_tensor_release(idx);
  return NULL;
}

em_tensor *em_tensor_embedding(em_tensor *weight, em_tensor *indices) {
  if (!weight || !indices) return EM_FAIL(EM_ERR_INVALID, "embedding: NULL tensor");
  if (weight->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "embedding: 'weight' must be 2-D, got shape %s",
                   em__tshape(weight));
  if (!is_int_index(indices))
    return EM_FAIL(EM_ERR_DTYPE,
                   "embedding: Expected tensor for argument 'indices' to have one of the "
                   "following scalar types: int64, int32; but got %s instead",
                   em_dtype_name((em_dtype)indices->dtype));
  if (indices->ndim + 1 > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "embedding: indices have too many dims (%d)", indices->ndim);
  em_tensor *flat = em_tensor_reshape(indices, EM_DIMS(-1));
  if (!flat) return NULL;
  em_tensor *rows = em_tensor_index_select(weight, 0, flat);
  em_tensor_release(flat);
  if (!rows) {
    em__prefix_error("embedding");
    return NULL;
  }
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, indices->shape, sizeof(int64_t) * (size_t)indices->ndim);
  shape[indices->ndim] = weight->shape[1];
  em_tensor *out = em_tensor_view(rows, indices->ndim + 1, shape);
  em_tensor_release(rows);
  return out;
}

/* ---- along-dim ops: gather, scatter, scatter_add ---------------------------------------- */

/* Runs an along-dim kernel over idx's shape (idx contiguous int64, valid).
 * x is the indexed tensor (self), w the tensor walked with the index (out
 * for GATHER, src for SCATTER/SCATTER_ADD, NULL for SCATTER_VALUE). */
static em_status run_along_dim(em_op op, int dim, em_tensor *x, em_tensor *idx, em_tensor *w,
                               em_scalar value) {
  if (idx->numel == 0) return EM_OK;
  em_loop_fn fn = (em_loop_fn)em__kernel(op, (em_device_type)x->device.type, (em_dtype)x->dtype);
  if (!fn) return em_last_status();
  const int nd = nonempty_ndim(idx);
  int64_t shape[EM_MAX_DIMS], sx[EM_MAX_DIMS], si[EM_MAX_DIMS], sw[EM_MAX_DIMS];
  for (int j = 0; j < nd; j++) {
    shape[j] = j == dim ? 1 : size_at(idx, j);
    sx[j] = stride_at(x, j);
    si[j] = stride_at(idx, j);
    sw[j] = w ? stride_at(w, j) : 0;
  }
  const int64_t es = (int64_t)em_dtype_size((em_dtype)x->dtype);
  em_op_attrs a = {0};
  a.i[0] = size_at(idx, dim);
  a.i[1] = si[dim] * (int64_t)sizeof(int64_t);
  a.i[2] = sx[dim] * es;
  a.i[3] = sw[dim] * es;
  a.s = value;
  em_tensor *vx = raw_view(x, nd, shape, sx, x->offset);
  em_tensor *vi = raw_view(idx, nd, shape, si, idx->offset);
  em_tensor *vw = w ? raw_view(w, nd, shape, sw, w->offset) : NULL;
  em_status st = EM_OK;
  if (!vx || !vi || (w && !vw)) {
    st = em_last_status();
  } else {
    em_tensor *ops[3];
    int n = 0;
    if (op == EM_OP_GATHER) {
      ops[n++] = vw;
      ops[n++] = vi;
      ops[n++] = vx;
    } else {
      ops[n++] = vx;
      ops[n++] = vi;
      if (vw) ops[n++] = vw;
    }
    em_iter it;
    em__iter_init(&it, n, ops, nd, shape);
    int64_t grain = EM_GRAIN_CHEAP / (a.i[0] > 0 ? a.i[0] : 1);
    st = em__iter_run(&it, fn, &a, grain > 0 ? grain : 1);
  }
  em_tensor_release(vx);
  em_tensor_release(vi);
  em_tensor_release(vw);
  return st;
}

em_tensor *em_tensor_gather(em_tensor *t, int dim, em_tensor *index) {
  const char *op = "gather";
  int d;
  if (!t || !index) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (check_index_dtype(op, index, false)) return NULL;
  if (em__check_same_device(op, 2, (em_tensor *[]){t, index}) || check_cpu(op, t)) return NULL;
  if (nonempty_ndim(index) != nonempty_ndim(t))
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Index tensor must have the same number of dimensions as input tensor "
                   "(index %s, input %s)",
                   op, em__tshape(index), em__tshape(t));
  if (em__wrap_dim(op, dim, t->ndim, &d)) return NULL;
  if (index->numel > 0)
    for (int j = 0; j < nonempty_ndim(t); j++)
      if (j != d && size_at(index, j) > size_at(t, j))
        return EM_FAIL(EM_ERR_SHAPE,
                       "%s: Size does not match at dimension %d expected index %s to be smaller "
                       "than self %s apart from dimension %d",
                       op, j, em__tshape(index), em__tshape(t), d);
  em_tensor *idx = index_values(op, index, size_at(t, d), d, false);
  if (!idx) return NULL;
  em_tensor *out = em_tensor_empty_on(index->ndim, index->shape, (em_dtype)t->dtype, t->device);
  if (out && run_along_dim(EM_OP_GATHER, d, t, idx, out, em_scalar_int(0))) {
    em_tensor_release(out);
    out = NULL;
  }
  em_tensor_release(idx);
  em_op_attrs a = {0};
  a.i[0] = d;
  return em__record1(EM_OP_GATHER, 2, (em_tensor *[]){t, index}, out, &a);
}

em_tensor *em_tensor_take_along_dim(em_tensor *t, em_tensor *indices, int dim) {
  const char *op = "take_along_dim";
  int d;
  if (!t || !indices) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (indices->dtype != EM_INT64)
    return EM_FAIL(EM_ERR_DTYPE, "%s: dtype of indices should be int64 but got %s", op,
                   em_dtype_name((em_dtype)indices->dtype));
  if (t->ndim != indices->ndim)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: input and indices should have the same number of dimensions, but got %d "
                   "dimensions for input, and %d dimensions for indices",
                   op, t->ndim, indices->ndim);
  if (em__wrap_dim(op, dim, t->ndim, &d)) return NULL;
  int64_t ts[EM_MAX_DIMS], is[EM_MAX_DIMS];
  for (int j = 0; j < t->ndim; j++) {
    int64_t a = t->shape[j], b = indices->shape[j];
    if (j == d) {
      ts[j] = a;
      is[j] = b;
      continue;
    }
    if (a != b && a != 1 && b != 1)
      return EM_FAIL(EM_ERR_SHAPE,
                     "%s: the size of tensor a (%lld) must match the size of tensor b (%lld) at "
                     "non-singleton dimension %d (input %s, indices %s)",
                     op, (long long)a, (long long)b, j, em__tshape(t), em__tshape(indices));
    ts[j] = is[j] = a == 1 ? b : a;
  }
  em_tensor *te = em_tensor_expand(t, t->ndim, ts);
  em_tensor *ie = te ? em_tensor_expand(indices, indices->ndim, is) : NULL;
  em_tensor *out = ie ? em_tensor_gather(te, d, ie) : NULL;
  if (!out) em__prefix_error("%s", op);
  em_tensor_release(te);
  em_tensor_release(ie);
  return out;
}

/* Checks scatter's arguments (src may be NULL); wraps dim into *d. */
static em_status scatter_check(const char *op, em_tensor *t, int dim, em_tensor *index,
                               em_tensor *src, int *d) {
  if (!t || !index) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
  EM_CHECK(check_index_dtype(op, index, false));
  EM_CHECK(em__check_same_device(op, 3, (em_tensor *[]){t, index, src}));
  EM_CHECK(check_cpu(op, t));
  if (src && src->dtype != t->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: Expected self.dtype to be equal to src.dtype (got %s and %s)",
                         op, em_dtype_name((em_dtype)t->dtype), em_dtype_name((em_dtype)src->dtype));
  if (nonempty_ndim(index) != nonempty_ndim(t))
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Index tensor must have the same number of dimensions as self tensor "
                         "(index %s, self %s)",
                         op, em__tshape(index), em__tshape(t));
  if (src && nonempty_ndim(index) != nonempty_ndim(src))
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Index tensor must have the same number of dimensions as src tensor "
                         "(index %s, src %s)",
                         op, em__tshape(index), em__tshape(src));
  EM_CHECK(em__wrap_dim(op, dim, t->ndim, d));
  if (index->numel == 0) return EM_OK;
  for (int j = 0; j < nonempty_ndim(t); j++) {
    bool bad = (j != *d && size_at(index, j) > size_at(t, j)) ||
               (src && size_at(index, j) > size_at(src, j));
    if (!bad) continue;
    if (src)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: Expected index %s to be smaller than self %s apart from dimension "
                           "%d and to be smaller size than src %s",
                           op, em__tshape(index), em__tshape(t), *d, em__tshape(src));
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Expected index %s to be smaller than self %s apart from dimension %d",
                         op, em__tshape(index), em__tshape(t), *d);
  }
  return EM_OK;
}

/* self[index] op= src / value along dim d, in place, arguments checked.
 * Does not record. */
static em_status scatter_into(const char *op, em_op kop, em_tensor *self, int d, em_tensor *index,
                              em_tensor *src, em_scalar value) {
  em_tensor *idx = index_values(op, index, size_at(self, d), d, false);
  if (idx && idx->storage == self->storage) { /* index aliasing self: read a copy */
    em_tensor *c = em__convert(idx, EM_INT64);
    em_tensor_release(idx);
    idx = c;
  }
  if (!idx) return em_last_status();
  em_status st = EM_OK;
  /* reading src while self is written: read from a copy if they share memory */
  em_tensor *s = src ? (src->storage == self->storage ? em__convert(src, (em_dtype)src->dtype)
                                                      : em_tensor_retain(src))
                     : NULL;
  if (src && !s) {
    st = em_last_status();
  } else {
    st = run_along_dim(kop, d, self, idx, s, value);
  }
  em_tensor_release(s);
  em_tensor_release(idx);
  return st;
}

/* Out-of-place scatter family: a copy of t, scattered into, recorded. */
static em_tensor *scatter_outplace(const char *op, em_op kop, em_tensor *t, int dim,
                                   em_tensor *index, em_tensor *src, em_scalar value) {
  int d;
  if (scatter_check(op, t, dim, index, src, &d)) return NULL;
  em_tensor *out = em__convert(t, (em_dtype)t->dtype);
  if (!out) return NULL;
  if (scatter_into(op, kop, out, d, index, src, value)) {
    em_tensor_release(out);
    return NULL;
  }
  em_op_attrs a = {0};
  a.i[0] = d;
  a.s = value;
  if (src) return em__record1(kop, 3, (em_tensor *[]){t, index, src}, out, &a);
  return em__record1(kop, 2, (em_tensor *[]){t, index}, out, &a);
}

typedef struct scatter_args {
  const char *op;
  em_op kop;
  int dim;
  em_tensor *index, *src;
  em_scalar value;
} scatter_args;

static em_tensor *scatter_outplace_cb(em_tensor *self_copy, void *ctx) {
  scatter_args *s = ctx;
  return scatter_outplace(s->op, s->kop, self_copy, s->dim, s->index, s->src, s->value);
}

static em_status scatter_inplace(const char *op, em_op kop, em_tensor *t, int dim,
                                 em_tensor *index, em_tensor *src) {
  int d;
  EM_CHECK(scatter_check(op, t, dim, index, src, &d));
  if (em__should_record(3, (em_tensor *[]){t, index, src})) {
    scatter_args s = {op, kop, dim, index, src, em_scalar_int(0)};
    return em__inplace_recorded(op, t, scatter_outplace_cb, &s);
  }
  EM_CHECK(check_no_internal_overlap(op, t));
  EM_CHECK(scatter_into(op, kop, t, d, index, src, em_scalar_int(0)));
  if (index->numel) em__bump_version(t);
  return EM_OK;
}

em_tensor *em_tensor_scatter(em_tensor *t, int dim, em_tensor *index, em_tensor *src) {
  if (!src) return EM_FAIL(EM_ERR_INVALID, "scatter: NULL src");
  return scatter_outplace("scatter", EM_OP_SCATTER, t, dim, index, src, em_scalar_int(0));
}

em_status em_tensor_scatter_(em_tensor *t, int dim, em_tensor *index, em_tensor *src) {
  if (!src) return em__set_error(EM_ERR_INVALID, "scatter_: NULL src");
  return scatter_inplace("scatter_", EM_OP_SCATTER, t, dim, index, src);
}

em_tensor *em_tensor_scatter_value(em_tensor *t, int dim, em_tensor *index, em_scalar value) {
  return scatter_outplace("scatter", EM_OP_SCATTER_VALUE, t, dim, index, NULL, value);
}

em_tensor *em_tensor_scatter_add(em_tensor *t, int dim, em_tensor *index, em_tensor *src) {
  if (!src) return EM_FAIL(EM_ERR_INVALID, "scatter_add: NULL src");
  return scatter_outplace("scatter_add", EM_OP_SCATTER_ADD, t, dim, index, src, em_scalar_int(0));
}

em_status em_tensor_scatter_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src) {
  if (!src) return em__set_error(EM_ERR_INVALID, "scatter_add_: NULL src");
  return scatter_inplace("scatter_add_", EM_OP_SCATTER_ADD, t, dim, index, src);
}

/* ---- index_add ---------------------------------------------------------------------------- */

static em_status index_add_check(const char *op, em_tensor *t, int dim, em_tensor *index,
                                 em_tensor *src, int *d) {
  if (!t || !index || !src) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
  EM_CHECK(em__wrap_dim(op, dim, t->ndim, d));
  EM_CHECK(check_index_dtype(op, index, true));
  EM_CHECK(em__check_same_device(op, 3, (em_tensor *[]){t, index, src}));
  EM_CHECK(check_cpu(op, t));
  if (index->ndim > 1)
    return em__set_error(EM_ERR_INDEX,
                         "%s: Index is supposed to be a vector, but got dim: %d with type: %s and "
                         "size: %s",
                         op, index->ndim, em_dtype_name((em_dtype)index->dtype),
                         em__tshape(index));
  if (src->dtype != t->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: self (%s) and source (%s) must have the same scalar type",
                         op, em_dtype_name((em_dtype)t->dtype), em_dtype_name((em_dtype)src->dtype));
  /* a 0-dim self (or source) counts as one element along dim 0 */
  bool shape_ok = nonempty_ndim(src) == nonempty_ndim(t);
  for (int j = 0; shape_ok && j < nonempty_ndim(t); j++)
    shape_ok = j == *d || size_at(src, j) == size_at(t, j);
  if (!shape_ok)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: source shape %s must match self shape %s except at dimension %d", op,
                         em__tshape(src), em__tshape(t), *d);
  if (index->numel != size_at(src, *d))
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Number of indices (%lld) should be equal to source.size(dim): (%lld), "
                         "for dim: %d",
                         op, (long long)index->numel, (long long)size_at(src, *d), *d);
  return EM_OK;
}

/* self[..., index[b], ...] += alpha * src[..., b, ...], in place, checked.
 * Does not record. */
static em_status index_add_into(const char *op, em_tensor *self, int d, em_tensor *index,
                                em_tensor *src, em_scalar alpha) {
  if (index->numel == 0 || self->numel == 0) return EM_OK;
  rows_scatter_fn fn = (rows_scatter_fn)em__kernel(EM_OP_INDEX_ADD,
                                                   (em_device_type)self->device.type,
                                                   (em_dtype)self->dtype);
  if (!fn) return em_last_status();
  em_tensor *idx = index_values(op, index, size_at(self, d), d, false);
  if (!idx) return em_last_status();
  em_tensor *vals = contiguous_as(src, (em_dtype)self->dtype, self);
  em_tensor *off = vals ? row_offsets(idx, stride_at(self, d)) : NULL;
  em_status st = EM_OK;
  if (!off) {
    st = em_last_status();
  } else {
    em_op_attrs g = {0};
    dim_geometry(self, d, &g);
    g.i[1] = 1; /* accumulate */
    g.s = alpha;
    fn(em__data_ptr(self), em__data_ptr(vals), (const int64_t *)em__data_ptr(off), idx->numel, &g);
  }
  em_tensor_release(off);
  em_tensor_release(vals);
  em_tensor_release(idx);
  return st;
}

em_tensor *em_tensor_index_add(em_tensor *t, int dim, em_tensor *index, em_tensor *src,
                               em_scalar alpha) {
  int d;
  if (index_add_check("index_add", t, dim, index, src, &d)) return NULL;
  em_tensor *out = em__convert(t, (em_dtype)t->dtype);
  if (!out) return NULL;
  if (index_add_into("index_add", out, d, index, src, alpha)) {
    em_tensor_release(out);
    return NULL;
  }
  em_op_attrs a = {0};
  a.i[0] = d;
  a.s = alpha;
  return em__record1(EM_OP_INDEX_ADD, 3, (em_tensor *[]){t, index, src}, out, &a);
}

typedef struct index_add_args {
  int dim;
  em_tensor *index, *src;
  em_scalar alpha;
} index_add_args;

static em_tensor *index_add_cb(em_tensor *self_copy, void *ctx) {
  index_add_args *s = ctx;
  return em_tensor_index_add(self_copy, s->dim, s->index, s->src, s->alpha);
}

em_status em_tensor_index_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src,
                               em_scalar alpha) {
  const char *op = "index_add_";
  int d;
  EM_CHECK(index_add_check(op, t, dim, index, src, &d));
  if (em__should_record(3, (em_tensor *[]){t, index, src})) {
    index_add_args s = {dim, index, src, alpha};
    return em__inplace_recorded(op, t, index_add_cb, &s);
  }
  EM_CHECK(check_no_internal_overlap(op, t));
  EM_CHECK(index_add_into(op, t, d, index, src, alpha));
  if (index->numel) em__bump_version(t);
  return EM_OK;
}

/* ---- masked_fill / masked_select / nonzero ------------------------------------------------- */

static em_status check_mask(const char *op, const em_tensor *mask) {
  if (is_mask(mask)) return EM_OK;
  return em__set_error(EM_ERR_DTYPE, "%s: expected BoolTensor or ByteTensor for mask, got %s", op,
                       em_dtype_name((em_dtype)mask->dtype));
}

em_tensor *em_tensor_masked_fill(em_tensor *t, em_tensor *mask, em_scalar value) {
  if (!t || !mask) return EM_FAIL(EM_ERR_INVALID, "masked_fill: NULL tensor");
  if (check_mask("masked_fill", mask)) return NULL;
  em_op_attrs a = {0};
  a.s = value;
  em_tensor *in[2] = {t, mask};
  em_tensor *out = em__elementwise(EM_OP_MASKED_FILL, (em_dtype)t->dtype, (em_dtype)t->dtype, 2,
                                   in, NULL, &a, EM_GRAIN_CHEAP);
  return em__record1(EM_OP_MASKED_FILL, 2, in, out, &a);
}

static em_tensor *masked_fill_cb(em_tensor *self_copy, void *ctx) {
  em_tensor *mask = ((void **)ctx)[0];
  em_scalar *value = ((void **)ctx)[1];
  return em_tensor_masked_fill(self_copy, mask, *value);
}

em_status em_tensor_masked_fill_(em_tensor *t, em_tensor *mask, em_scalar value) {
  if (!t || !mask) return em__set_error(EM_ERR_INVALID, "masked_fill_: NULL tensor");
  EM_CHECK(check_mask("masked_fill_", mask));
  em_tensor *in[2] = {t, mask};
  if (em__should_record(2, in)) {
    void *ctx[2] = {mask, &value};
    return em__inplace_recorded("masked_fill_", t, masked_fill_cb, ctx);
  }
  em_op_attrs a = {0};
  a.s = value;
  em_status st = em__elementwise_into(EM_OP_MASKED_FILL, (em_dtype)t->dtype, t, 2, in, NULL, &a,
                                      EM_GRAIN_CHEAP);
  if (st) em__prefix_error("masked_fill_");
  return st;
}

/* t broadcast to (nd, shape) as a contiguous tensor of dtype dt. */
static em_tensor *broadcast_contiguous(em_tensor *t, int nd, const int64_t *shape, em_dtype dt) {
  bool same = t->ndim == nd;
  for (int j = 0; same && j < nd; j++) same = t->shape[j] == shape[j];
  if (same) return contiguous_as(t, dt, NULL);
  em_tensor *out = em_tensor_empty_on(nd, shape, dt, t->device);
  if (out && em__copy_into(out, t)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

em_tensor *em_tensor_masked_select(em_tensor *t, em_tensor *mask) {
  const char *op = "masked_select";
  if (!t || !mask) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (check_mask(op, mask)) return NULL;
  if (em__check_same_device(op, 2, (em_tensor *[]){t, mask}) || check_cpu(op, t)) return NULL;
  int nd;
  int64_t shape[EM_MAX_DIMS];
  if (em_broadcast_shapes(2, (int[]){t->ndim, mask->ndim},
                          (const int64_t *[]){t->shape, mask->shape}, &nd, shape)) {
    em__prefix_error("%s", op);
    return NULL;
  }
  masked_select_fn fn = (masked_select_fn)em__kernel(EM_OP_MASKED_SELECT,
                                                     (em_device_type)t->device.type,
                                                     (em_dtype)t->dtype);
  if (!fn) return NULL;
  /* a bool mask is read as bytes: both are one byte, any nonzero selects */
  em_tensor *m = broadcast_contiguous(mask, nd, shape, (em_dtype)mask->dtype);
  em_tensor *s = m ? broadcast_contiguous(t, nd, shape, (em_dtype)t->dtype) : NULL;
  em_tensor *out = NULL;
  if (s) {
    const uint8_t *mp = m->numel ? (const uint8_t *)em__data_ptr(m) : NULL;
    int64_t count = 0;
    for (int64_t i = 0; i < m->numel; i++) count += mp[i] != 0;
    out = em_tensor_empty_on(EM_DIMS(count), (em_dtype)t->dtype, t->device);
    if (out && count) fn(em__data_ptr(out), em__data_ptr(s), mp, m->numel);
  }
  em_tensor_release(m);
  em_tensor_release(s);
  return em__record1(EM_OP_MASKED_SELECT, 2, (em_tensor *[]){t, mask}, out, NULL);
}

em_tensor *em_tensor_nonzero(em_tensor *t) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "nonzero: NULL tensor");
  if (check_cpu("nonzero", t)) return NULL;
  nonzero_fn fn = (nonzero_fn)em__kernel(EM_OP_NONZERO, (em_device_type)t->device.type, EM_BOOL);
  if (!fn) return NULL;
  /* uint8 is read as bytes like bool; any other dtype becomes bool (x != 0) */
  em_tensor *m = contiguous_as(t, t->dtype == EM_UINT8 ? EM_UINT8 : EM_BOOL, NULL);
  if (!m) return NULL;
  const uint8_t *mp = m->numel ? (const uint8_t *)em__data_ptr(m) : NULL;
  int64_t count = fn(NULL, mp, t->ndim, t->shape, NULL, m->numel);
  em_tensor *out = em_tensor_empty_on(EM_DIMS(count, t->ndim), EM_INT64, t->device);
  if (out && out->numel) fn((int64_t *)em__data_ptr(out), mp, t->ndim, t->shape, NULL, m->numel);
  em_tensor_release(m);
  return out;
}

/* ---- one_hot ----------------------------------------------------------------------------------- */

em_tensor *em_tensor_one_hot(em_tensor *t, int64_t num_classes) {
  const char *op = "one_hot";
  if (!t) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (check_cpu(op, t)) return NULL;
  if (t->dtype != EM_INT64)
    return EM_FAIL(EM_ERR_DTYPE, "%s: one_hot is only applicable to index tensor (int64), got %s",
                   op, em_dtype_name((em_dtype)t->dtype));
  if (num_classes < -1)
    return EM_FAIL(EM_ERR_INVALID, "%s: num_classes must be -1 or non-negative, got %lld", op,
                   (long long)num_classes);
  if (t->ndim + 1 > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "%s: input has too many dims (%d)", op, t->ndim);
  one_hot_fn fn = (one_hot_fn)em__kernel(EM_OP_ONE_HOT, (em_device_type)t->device.type, EM_INT64);
  if (!fn) return NULL;
  if (num_classes == -1 && t->numel == 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: Can not infer total number of classes from empty tensor.",
                   op);
  em_tensor *c = contiguous_as(t, EM_INT64, NULL);
  if (!c) return NULL;
  const int64_t *p = c->numel ? (const int64_t *)em__data_ptr(c) : NULL;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (int64_t i = 0; i < c->numel; i++) {
    lo = p[i] < lo ? p[i] : lo;
    hi = p[i] > hi ? p[i] : hi;
  }
  em_tensor *out = NULL;
  if (c->numel && lo < 0) {
    em__set_error(EM_ERR_INDEX, "%s: Class values must be non-negative (got %lld).", op,
                  (long long)lo);
    goto done;
  }
  if (num_classes == -1) {
    if (hi == INT64_MAX) {
      em__set_error(EM_ERR_INVALID, "%s: too many classes (max value %lld)", op, (long long)hi);
      goto done;
    }
    num_classes = hi + 1;
  } else if (c->numel && hi >= num_classes) {
    em__set_error(EM_ERR_INDEX,
                  "%s: Class values must be smaller than num_classes (got %lld, num_classes %lld).",
                  op, (long long)hi, (long long)num_classes);
    goto done;
  }
  int64_t shape[EM_MAX_DIMS];
  memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  shape[t->ndim] = num_classes;
  out = em_tensor_empty_on(t->ndim + 1, shape, EM_INT64, t->device);
  if (out && out->numel) fn((int64_t *)em__data_ptr(out), p, c->numel, num_classes);
done:
  em_tensor_release(c);
  return out;
}

/* ---- advanced indexing ---------------------------------------------------------------------------
 * t[i0, i1, ...]: each entry is NULL (a full slice of one dim), an int
 * tensor (one dim) or a bool/uint8 mask (as many dims as it has; a 0-dim
 * mask adds a new dim of size 1 or 0 as numpy does). Masks become their
 * nonzero() coordinates. The int indices broadcast to a shape B; the
 * result is [P..., B..., Q...] where P / Q are the sliced dims before /
 * after the indexed ones when those are adjacent, else [B..., sliced...]
 * (numpy's rule for separated advanced indices). */

typedef struct adv_plan {
  em_tensor *src;                /* t, or a view of t with 0-dim-mask dims inserted */
  int ngroups;                   /* advanced index entries */
  em_tensor *grp[MAX_INDICES];   /* each: contiguous int64, its own shape (a mask: [count]) */
  int64_t mul[MAX_INDICES];      /* offset = sum over groups of grp * mul */
  int bnd;
  int64_t bshape[EM_MAX_DIMS];   /* the groups' broadcast shape B */
  em_op_attrs g;                 /* row geometry of src (P, Q) */
  int64_t nb;
  em_tensor *off;                /* int64 B: offsets of the indexed positions in src */
  int rnd;
  int64_t rshape[EM_MAX_DIMS];   /* result shape */
} adv_plan;

static void adv_release(adv_plan *p) {
  em_tensor_release(p->src);
  for (int j = 0; j < p->ngroups; j++) em_tensor_release(p->grp[j]);
  em_tensor_release(p->off);
  memset(p, 0, sizeof *p);
}

/* off[k] += idx[k] * a->i[0] over the broadcast shape (int64 operands). */
static void add_offsets(char **d, const int64_t *s, int64_t n, const em_op_attrs *a) {
  const int64_t stride = a->i[0];
  for (int64_t k = 0; k < n; k++)
    *(int64_t *)(d[0] + k * s[0]) += *(const int64_t *)(d[1] + k * s[1]) * stride;
}

/* The element offsets (int64 [count]) of the selected positions of a
 * k-dim mask over dims with the given strides, in row-major order. */
static em_tensor *mask_offsets(em_tensor *mask, const int64_t *strides) {
  nonzero_fn fn = (nonzero_fn)em__kernel(EM_OP_NONZERO, (em_device_type)mask->device.type, EM_BOOL);
  if (!fn) return NULL;
  em_tensor *m = contiguous_as(mask, (em_dtype)mask->dtype, NULL); /* bool or uint8: bytes */
  if (!m) return NULL;
  const uint8_t *mp = m->numel ? (const uint8_t *)em__data_ptr(m) : NULL;
  int64_t count = fn(NULL, mp, mask->ndim, mask->shape, strides, m->numel);
  em_tensor *out = em_tensor_empty_on(EM_DIMS(count), EM_INT64, mask->device);
  if (out && count) fn((int64_t *)em__data_ptr(out), mp, mask->ndim, mask->shape, strides, m->numel);
  em_tensor_release(m);
  return out;
}

static em_status adv_prepare(const char *op, em_tensor *t, int n, em_tensor *const *indices,
                             adv_plan *p) {
  memset(p, 0, sizeof *p);
  if (n < 0 || n > MAX_INDICES || (n > 0 && !indices))
    return em__set_error(EM_ERR_INDEX, "%s: invalid number of indices %d", op, n);
  EM_CHECK(check_cpu(op, t));
  /* dims consumed and dims inserted (0-dim masks) */
  int consumed = 0, inserted = 0;
  for (int k = 0; k < n; k++) {
    em_tensor *ix = indices[k];
    if (!ix) {
      consumed++;
      continue;
    }
    if (!em_device_eq(ix->device, t->device))
      return em__set_error(EM_ERR_DEVICE, "%s: indices should be on the same device as the indexed tensor", op);
    if (is_int_index(ix)) {
      consumed++;
    } else if (is_mask(ix)) {
      consumed += ix->ndim;
      inserted += ix->ndim == 0;
    } else {
      return em__set_error(EM_ERR_DTYPE,
                           "%s: tensors used as indices must be long, int, byte or bool tensors "
                           "(got %s at position %d)",
                           op, em_dtype_name((em_dtype)ix->dtype), k);
    }
  }
  if (consumed > t->ndim)
    return em__set_error(EM_ERR_INDEX, "%s: too many indices for tensor of dimension %d", op,
                         t->ndim);
  const int D = t->ndim + inserted;
  if (D > EM_MAX_DIMS)
    return em__set_error(EM_ERR_INDEX, "%s: indexing would need %d dims, more than the maximum %d",
                         op, D, EM_MAX_DIMS);
  /* the source geometry; which src dims are indexed */
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  bool adv[EM_MAX_DIMS] = {0};
  em_status st = EM_OK;
  int sd = 0, td = 0; /* src dim, t dim */
  for (int k = 0; k < n; k++) {
    em_tensor *ix = indices[k];
    if (!ix || is_int_index(ix)) {
      adv[sd] = ix != NULL;
      shape[sd] = t->shape[td];
      strides[sd++] = t->strides[td++];
    } else if (ix->ndim == 0) { /* a new dim of size 1, indexed by [0] or [] */
      adv[sd] = true;
      shape[sd] = 1;
      strides[sd++] = 0;
    } else {
      for (int j = 0; j < ix->ndim; j++) {
        if (ix->shape[j] != t->shape[td + j])
          return em__set_error(EM_ERR_INDEX,
                               "%s: The shape of the mask %s at index %d does not match the shape "
                               "of the indexed tensor %s at index %d",
                               op, em__tshape(ix), j, em__tshape(t), td + j);
        adv[sd] = true;
        shape[sd] = t->shape[td + j];
        strides[sd++] = t->strides[td + j];
      }
      td += ix->ndim;
    }
  }
  for (; td < t->ndim; td++) {
    shape[sd] = t->shape[td];
    strides[sd++] = t->strides[td];
  }
  p->src = inserted ? raw_view(t, D, shape, strides, t->offset) : em_tensor_retain(t);
  EM_CHECK_PTR_GOTO(p->src, st, fail);
  /* one offset group per advanced entry: int indices validated, wrapped
   * and scaled by their dim's stride later; masks straight to offsets */
  sd = 0;
  td = 0;
  for (int k = 0; k < n; k++) {
    em_tensor *ix = indices[k];
    em_tensor **gp = &p->grp[p->ngroups];
    if (!ix) {
      sd++, td++;
      continue;
    }
    if (is_int_index(ix)) {
      *gp = index_values(op, ix, shape[sd], td, true);
      p->mul[p->ngroups] = strides[sd];
      sd++, td++;
    } else if (ix->ndim == 0) {
      bool on = em__load_i64(em__data_ptr(ix), (em_dtype)ix->dtype) != 0;
      *gp = em_tensor_zeros(EM_DIMS(on ? 1 : 0), EM_INT64);
      p->mul[p->ngroups] = 0;
      sd++;
    } else {
      *gp = mask_offsets(ix, &strides[sd]);
      p->mul[p->ngroups] = 1;
      sd += ix->ndim, td += ix->ndim;
    }
    p->ngroups++;
    EM_CHECK_PTR_GOTO(*gp, st, fail);
  }
  /* broadcast the groups */
  int ndims[MAX_INDICES];
  const int64_t *shapes[MAX_INDICES];
  for (int k = 0; k < p->ngroups; k++) {
    ndims[k] = p->grp[k]->ndim;
    shapes[k] = p->grp[k]->shape;
  }
  p->bnd = 0;
  if (p->ngroups && em_broadcast_shapes(p->ngroups, ndims, shapes, &p->bnd, p->bshape)) {
    char msg[1024];
    size_t m = 0;
    for (int k = 0; k < p->ngroups && m < sizeof msg; k++)
      m += (size_t)snprintf(msg + m, sizeof msg - m, "%s%s", k ? ", " : "",
                            em__shape_str(ndims[k], shapes[k], (char[EM_SHAPE_STR_MAX]){0},
                                          EM_SHAPE_STR_MAX));
    st = em__set_error(EM_ERR_INDEX,
                       "%s: shape mismatch: indexing tensors could not be broadcast together "
                       "with shapes %s",
                       op, msg);
    goto fail;
  }
  p->nb = 1;
  for (int j = 0; j < p->bnd; j++) p->nb *= p->bshape[j];
  /* result: [P, B, Q] when the indexed dims are adjacent, else [B, Q] */
  int first = -1, last = -1;
  for (int j = 0; j < D; j++)
    if (adv[j]) {
      if (first < 0) first = j;
      last = j;
    }
  bool adjacent = first >= 0;
  for (int j = first; first >= 0 && j <= last; j++) adjacent = adjacent && adv[j];
  int np = 0, nq = 0;
  int64_t qshape[EM_MAX_DIMS], qstride[EM_MAX_DIMS];
  for (int j = 0; j < D; j++) {
    if (adv[j]) continue;
    if (adjacent && j < first) {
      p->g.d[np] = shape[j];
      p->g.d2[np++] = strides[j];
    } else {
      qshape[nq] = shape[j];
      qstride[nq++] = strides[j];
    }
  }
  if (np + p->bnd + nq > EM_MAX_DIMS) {
    st = em__set_error(EM_ERR_INDEX, "%s: the result would have %d dims, more than the maximum %d",
                       op, np + p->bnd + nq, EM_MAX_DIMS);
    goto fail;
  }
  for (int j = 0; j < nq; j++) {
    p->g.d[np + j] = qshape[j];
    p->g.d2[np + j] = qstride[j];
  }
  p->g.i[0] = np;
  p->g.nd = np + nq;
  p->rnd = 0;
  for (int j = 0; j < np; j++) p->rshape[p->rnd++] = p->g.d[j];
  for (int j = 0; j < p->bnd; j++) p->rshape[p->rnd++] = p->bshape[j];
  for (int j = 0; j < nq; j++) p->rshape[p->rnd++] = qshape[j];
  /* offsets of the indexed positions: one mask alone already is them */
  if (p->ngroups == 1 && p->mul[0] == 1) {
    p->off = em_tensor_retain(p->grp[0]);
    return EM_OK;
  }
  p->off = em_tensor_zeros(p->bnd, p->bshape, EM_INT64);
  EM_CHECK_PTR_GOTO(p->off, st, fail);
  for (int k = 0; k < p->ngroups && p->nb > 0; k++) {
    if (p->mul[k] == 0) continue;
    em_op_attrs a = {0};
    a.i[0] = p->mul[k];
    em_iter it;
    em__iter_init(&it, 2, (em_tensor *[]){p->off, p->grp[k]}, p->bnd, p->bshape);
    (void)em__iter_run(&it, add_offsets, &a, EM_GRAIN_CHEAP); /* CPU only */
  }
  return EM_OK;
fail:
  adv_release(p);
  return st;
}

em_tensor *em_tensor_index(em_tensor *t, int n, em_tensor *const *indices) {
  const char *op = "index";
  if (!t) return EM_FAIL(EM_ERR_INVALID, "%s: NULL tensor", op);
  adv_plan p;
  if (adv_prepare(op, t, n, indices, &p)) return NULL;
  em_tensor *out = em_tensor_empty_on(p.rnd, p.rshape, (em_dtype)t->dtype, t->device);
  if (out && out->numel > 0) {
    rows_gather_fn fn = (rows_gather_fn)em__kernel(EM_OP_INDEX, (em_device_type)t->device.type,
                                                   (em_dtype)t->dtype);
    if (!fn) {
      em_tensor_release(out);
      out = NULL;
    } else {
      fn(em__data_ptr(out), em__data_ptr(p.src), (const int64_t *)em__data_ptr(p.off), p.nb, &p.g);
    }
  }
  adv_release(&p);
  if (!out) return NULL;
  em_tensor *ins[MAX_INDICES + 1] = {t};
  for (int k = 0; k < n; k++) ins[k + 1] = indices[k];
  em_op_attrs a = {0};
  a.i[0] = n;
  return em__record1(EM_OP_INDEX, n + 1, ins, out, &a);
}

/* t[indices] = values (or += with accumulate), in place, without
 * recording. values has t's dtype (checked by the caller). */
static em_status index_put_into(const char *op, em_tensor *t, int n, em_tensor *const *indices,
                                em_tensor *values, bool accumulate) {
  adv_plan p;
  EM_CHECK(adv_prepare(op, t, n, indices, &p));
  em_status st = EM_OK;
  em_tensor *vals = NULL;
  int bnd;
  int64_t bshape[EM_MAX_DIMS];
  bool ok = em_broadcast_shapes(2, (int[]){p.rnd, values->ndim},
                                (const int64_t *[]){p.rshape, values->shape}, &bnd, bshape) == EM_OK;
  for (int j = 0; ok && j < p.rnd; j++) ok = bnd == p.rnd && bshape[j] == p.rshape[j];
  if (!ok) {
    char b[EM_SHAPE_STR_MAX];
    st = em__set_error(EM_ERR_SHAPE,
                       "%s: shape mismatch: value tensor of shape %s cannot be broadcast to "
                       "indexing result of shape %s",
                       op, em__tshape(values), em__shape_str(p.rnd, p.rshape, b, sizeof b));
    goto done;
  }
  int64_t rnumel = p.nb;
  for (int j = 0; j < p.g.nd; j++) rnumel *= p.g.d[j];
  if (rnumel == 0) goto done;
  EM_CHECK_GOTO(check_no_internal_overlap(op, p.src), st, done);
  rows_scatter_fn fn = (rows_scatter_fn)em__kernel(EM_OP_INDEX_PUT, (em_device_type)t->device.type,
                                                   (em_dtype)t->dtype);
  if (!fn) {
    st = em_last_status();
    goto done;
  }
  bool scalar = values->numel == 1;
  vals = scalar ? contiguous_as(values, (em_dtype)t->dtype, t)
                : broadcast_contiguous(values, p.rnd, p.rshape, (em_dtype)t->dtype);
  if (vals && vals->storage == t->storage) { /* values aliasing t: read a copy */
    em_tensor *c = em__convert(vals, (em_dtype)t->dtype);
    em_tensor_release(vals);
    vals = c;
  }
  EM_CHECK_PTR_GOTO(vals, st, done);
  p.g.i[1] = accumulate;
  p.g.i[2] = scalar;
  p.g.s = em_scalar_int(1);
  fn(em__data_ptr(p.src), em__data_ptr(vals), (const int64_t *)em__data_ptr(p.off), p.nb, &p.g);
  em__bump_version(t);
done:
  em_tensor_release(vals);
  adv_release(&p);
  return st;
}

typedef struct index_put_args {
  int n;
  em_tensor *const *indices;
  em_tensor *values;
  bool accumulate;
} index_put_args;

static em_tensor *index_put_cb(em_tensor *self_copy, void *ctx) {
  index_put_args *s = ctx;
  em_tensor *out = em__convert(self_copy, (em_dtype)self_copy->dtype);
  if (!out) return NULL;
  if (index_put_into("index_put_", out, s->n, s->indices, s->values, s->accumulate)) {
    em_tensor_release(out);
    return NULL;
  }
  em_tensor *ins[MAX_INDICES + 2] = {self_copy, s->values};
  for (int k = 0; k < s->n; k++) ins[k + 2] = s->indices[k];
  em_op_attrs a = {0};
  a.i[0] = s->n;
  a.i[1] = s->accumulate;
  return em__record1(EM_OP_INDEX_PUT, s->n + 2, ins, out, &a);
}

em_status em_tensor_index_put_(em_tensor *t, int n, em_tensor *const *indices, em_tensor *values,
                               bool accumulate) {
  const char *op = "index_put_";
  if (!t || !values) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (n < 0 || n > MAX_INDICES || (n > 0 && !indices))
    return em__set_error(EM_ERR_INDEX, "%s: invalid number of indices %d", op, n);
  EM_CHECK(em__check_same_device(op, 2, (em_tensor *[]){t, values}));
  /* a wrapped number (a Python scalar) converts to t's dtype; a tensor
   * must already have it, as in PyTorch */
  if (values->dtype != t->dtype && !values->is_wrapped_number)
    return em__set_error(EM_ERR_DTYPE,
                         "%s: Index put requires the source and destination dtypes match, got %s "
                         "for the destination and %s for the source.",
                         op, em_dtype_name((em_dtype)t->dtype),
                         em_dtype_name((em_dtype)values->dtype));
  em_tensor *ins[MAX_INDICES + 2] = {t, values};
  for (int k = 0; k < n; k++) ins[k + 2] = indices[k];
  if (em__should_record(n + 2, ins)) {
    index_put_args s = {n, indices, values, accumulate};
    return em__inplace_recorded(op, t, index_put_cb, &s);
  }
  return index_put_into(op, t, n, indices, values, accumulate);
}
