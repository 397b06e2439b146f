/* Elementwise iteration: broadcasting operands over a shape, coalescing
 * dims, splitting the flattened range across threads, and the shared front
 * end for every elementwise op (em__elementwise). */
#include <stdlib.h>

#include "core/core_impl.h"
#ifdef EMBER_CUDA
#include "core/cuda/cuda_impl.h"
#endif

void em__iter_init(em_iter *it, int n, em_tensor *const *ops, int ndim, const int64_t *shape) {
  assert(n >= 1 && n <= EM_ITER_MAX_OPERANDS);
  it->nops = n;
  it->device = ops[0]->device;
  for (int k = 0; k < n; k++) it->data[k] = ops[k]->numel ? em__data_ptr(ops[k]) : NULL;
  /* innermost first, dropping size-1 dims */
  int nd = 0;
  int64_t numel = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    numel *= shape[i];
    if (shape[i] == 1) continue;
    it->shape[nd] = shape[i];
    for (int k = 0; k < n; k++) {
      const em_tensor *t = ops[k];
      int j = i - (ndim - t->ndim);
      int64_t es = (int64_t)em_dtype_size((em_dtype)t->dtype);
      it->strides[nd][k] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j] * es;
    }
    nd++;
  }
  /* merge dim d+1 into d when every operand walks them as one */
  int out = 0;
  for (int d = 1; d < nd; d++) {
    bool mergeable = true;
    for (int k = 0; k < n && mergeable; k++)
      mergeable = it->strides[d][k] == it->strides[out][k] * it->shape[out];
    if (mergeable) {
      it->shape[out] *= it->shape[d];
    } else {
      out++;
      it->shape[out] = it->shape[d];
      for (int k = 0; k < n; k++) it->strides[out][k] = it->strides[d][k];
    }
  }
  nd = nd ? out + 1 : 0;
  if (nd == 0) { /* a single element */
    nd = 1;
    it->shape[0] = 1;
    for (int k = 0; k < n; k++) it->strides[0][k] = 0;
  }
  it->ndim = nd;
  it->numel = numel;
}

void em__iter_run_range(const em_iter *it, em_loop_fn fn, const em_op_attrs *a, int64_t begin,
                        int64_t end) {
  const int n = it->nops, nd = it->ndim;
  const int64_t inner = it->shape[0];
  int64_t idx[EM_MAX_DIMS];
  int64_t rest = begin / inner, i0 = begin % inner;
  for (int d = 1; d < nd; d++) {
    idx[d] = rest % it->shape[d];
    rest /= it->shape[d];
  }
  char *ptr[EM_ITER_MAX_OPERANDS];
  int64_t pos = begin;
  while (pos < end) {
    for (int k = 0; k < n; k++) {
      char *p = it->data[k] + i0 * it->strides[0][k];
      for (int d = 1; d < nd; d++) p += idx[d] * it->strides[d][k];
      ptr[k] = p;
    }
    int64_t len = inner - i0;
    if (len > end - pos) len = end - pos;
    fn(ptr, it->strides[0], len, a);
    pos += len;
    i0 = 0;
    for (int d = 1; d < nd; d++) {
      if (++idx[d] < it->shape[d]) break;
      idx[d] = 0;
    }
  }
}

typedef struct run_ctx {
  const em_iter *it;
  em_loop_fn fn;
  const em_op_attrs *a;
} run_ctx;

static void run_part(void *ctx, int64_t b, int64_t e) {
  run_ctx *r = ctx;
  em__iter_run_range(r->it, r->fn, r->a, b, e);
}

/* Two operands where the output walks dim 0 densely but the input walks
 * dim 1 densely (a transposing copy, e.g. contiguous() of a transposed
 * matrix): row-by-row iteration would stride through the input and miss
 * the cache on every element, so iterate in tiles whose input cache lines
 * stay resident. */
#define TILE 64

static bool transposing(const em_iter *it) {
  if (it->nops != 2 || it->ndim != 2 || it->shape[0] < 16 || it->shape[1] < 16) return false;
  int64_t si0 = it->strides[0][1], si1 = it->strides[1][1];
  return it->strides[0][0] != 0 && si1 != 0 && llabs(si1) < llabs(si0);
}

typedef struct tile_ctx {
  const em_iter *it;
  em_loop_fn fn;
  const em_op_attrs *a;
} tile_ctx;

/* Tiles of dim-1 blocks [b, e) (in units of TILE rows). */
static void run_tiles(void *ctx, int64_t b, int64_t e) {
  tile_ctx *c = ctx;
  const em_iter *it = c->it;
  int64_t n0 = it->shape[0], n1 = it->shape[1];
  for (int64_t ib = b; ib < e; ib++) {
    int64_t i0 = ib * TILE, i1 = i0 + TILE < n1 ? i0 + TILE : n1;
    for (int64_t j0 = 0; j0 < n0; j0 += TILE) {
      int64_t len = n0 - j0 < TILE ? n0 - j0 : TILE;
      for (int64_t i = i0; i < i1; i++) {
        char *ptr[2] = {it->data[0] + j0 * it->strides[0][0] + i * it->strides[1][0],
                        it->data[1] + j0 * it->strides[0][1] + i * it->strides[1][1]};
        c->fn(ptr, it->strides[0], len, c->a);
      }
    }
  }
}

em_status em__iter_run(const em_iter *it, em_loop_fn fn, const em_op_attrs *a, int64_t grain) {
  if (it->numel == 0) return EM_OK;
#ifdef EMBER_CUDA
  /* CUDA device branch (core/cuda/cuda_impl.h): the table entry is then an
   * emcu_elem_fn, launched once over the whole iteration; its launch
   * status is the result. */
  if (it->device.type == EM_CUDA) return em__cuda_iter_run(it->device.index, (void *)fn, it, a);
#endif
  if (transposing(it)) {
    tile_ctx c = {it, fn, a};
    int64_t blocks = (it->shape[1] + TILE - 1) / TILE;
    if (grain <= 0) grain = EM_GRAIN_CHEAP;
    int64_t per = (grain + TILE * it->shape[0] - 1) / (TILE * it->shape[0]);
    em__parallel_for(blocks, per < 1 ? 1 : per, run_tiles, &c);
    return EM_OK;
  }
  if (grain <= 0) grain = EM_GRAIN_CHEAP;
  if (it->numel <= grain) {
    em__iter_run_range(it, fn, a, 0, it->numel);
    return EM_OK;
  }
  run_ctx r = {it, fn, a};
  em__parallel_for(it->numel, grain, run_part, &r);
  return EM_OK;
}

/* ---- type promotion ---------------------------------------------------------- */

static em_dtype combine_categories(em_dtype higher, em_dtype lower) {
  if (higher != EM_DTYPE_UNDEFINED && em_dtype_is_float(higher)) return higher;
  if (higher == EM_BOOL || (lower != EM_DTYPE_UNDEFINED && em_dtype_is_float(lower)))
    return em_promote_types(higher, lower);
  if (higher != EM_DTYPE_UNDEFINED) return higher;
  return lower;
}

em_dtype em__result_type(int n, em_tensor *const *ts) {
  em_dtype dim_r = EM_DTYPE_UNDEFINED, zero_r = EM_DTYPE_UNDEFINED, wrapped_r = EM_DTYPE_UNDEFINED;
  for (int i = 0; i < n; i++) {
    const em_tensor *t = ts[i];
    if (!t) continue;
    em_dtype dt = (em_dtype)t->dtype;
    if (t->is_wrapped_number) {
      if (em_dtype_is_float(dt)) dt = em_get_default_dtype();
      wrapped_r = em_promote_types(wrapped_r, dt);
    } else if (t->ndim == 0) {
      zero_r = em_promote_types(zero_r, dt);
    } else {
      dim_r = em_promote_types(dim_r, dt);
    }
  }
  return combine_categories(dim_r, combine_categories(zero_r, wrapped_r));
}

/* ---- the elementwise front end -------------------------------------------------- */

em_status em_broadcast_shapes(int n, const int *ndims, const int64_t *const *shapes,
                              int *out_ndim, int64_t *out_shape) {
  int nd = 0;
  for (int i = 0; i < n; i++)
    if (ndims[i] > nd) nd = ndims[i];
  if (nd > EM_MAX_DIMS)
    return em__set_error(EM_ERR_INVALID, "broadcast: %d dims is more than the maximum %d", nd,
                         EM_MAX_DIMS);
  for (int d = 0; d < nd; d++) out_shape[d] = 1;
  for (int i = 0; i < n; i++) {
    int off = nd - ndims[i];
    for (int j = 0; j < ndims[i]; j++) {
      int64_t s = shapes[i][j], *o = &out_shape[off + j];
      if (s == *o || s == 1) continue;
      if (*o == 1) {
        *o = s;
        continue;
      }
      char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
      return em__set_error(EM_ERR_SHAPE,
                           "the size of tensor a (%lld) must match the size of tensor b (%lld) "
                           "at non-singleton dimension %d (shapes %s and %s)",
                           (long long)*o, (long long)s, off + j,
                           em__shape_str(ndims[0], shapes[0], a, sizeof a),
                           em__shape_str(ndims[i], shapes[i], b, sizeof b));
    }
  }
  *out_ndim = nd;
  return EM_OK;
}

static em_status broadcast_tensors(const char *op, int n, em_tensor *const *in, int *nd,
                                   int64_t *shape) {
  int ndims[EM_ITER_MAX_OPERANDS];
  const int64_t *shapes[EM_ITER_MAX_OPERANDS];
  for (int i = 0; i < n; i++) {
    ndims[i] = in[i]->ndim;
    shapes[i] = in[i]->shape;
  }
  em_status st = em_broadcast_shapes(n, ndims, shapes, nd, shape);
  if (st) em__prefix_error("%s", op);
  return st;
}

static bool same_geometry(const em_tensor *a, const em_tensor *b) {
  if (a->storage != b->storage || a->offset != b->offset || a->ndim != b->ndim ||
      a->dtype != b->dtype)
    return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->strides[i] != b->strides[i]))
      return false;
  return true;
}

/* A contiguous copy of t converted to dt (no autograd). */

static em_status run_into(em_op op, em_dtype key, em_tensor *out, int nin,
                          em_tensor *const *in, const em_dtype *in_dtypes,
                          const em_op_attrs *a, int64_t grain, int nd, const int64_t *shape) {
  em_loop_fn fn = (em_loop_fn)em__kernel(op, (em_device_type)out->device.type, key);
  if (!fn) return em_last_status();
  em_tensor *ops[EM_ITER_MAX_OPERANDS] = {out};
  em_tensor *tmp[EM_ITER_MAX_OPERANDS] = {0};
  em_status st = EM_OK;
  for (int i = 0; i < nin; i++) {
    em_tensor *t = in[i];
    bool convert = in_dtypes && in_dtypes[i] != EM_DTYPE_UNDEFINED && t->dtype != in_dtypes[i];
    /* an input that overlaps the output in a different layout is read from
     * a copy, so writes cannot race ahead of reads */
    bool overlap = t->storage == out->storage && t->numel > 0 && !same_geometry(t, out);
    if (convert || overlap) {
      tmp[i] = em__convert(t, convert ? in_dtypes[i] : (em_dtype)t->dtype);
      EM_CHECK_PTR_GOTO(tmp[i], st, done);
      t = tmp[i];
    }
    ops[i + 1] = t;
  }
  em_iter it;
  em__iter_init(&it, nin + 1, ops, nd, shape);
  st = em__iter_run(&it, fn, a, grain); /* a device launch's status is the op's */
done:
  for (int i = 0; i < nin; i++) em_tensor_release(tmp[i]);
  return st;
}

em_tensor *em__elementwise(em_op op, em_dtype key, em_dtype out_dtype, int nin,
                           em_tensor *const *in, const em_dtype *in_dtypes,
                           const em_op_attrs *a, int64_t grain) {
  int nd;
  int64_t shape[EM_MAX_DIMS];
#ifdef EMBER_CUDA
  /* CUDA: CPU 0-dim operands (wrapped numbers) join a CUDA op as copies on
   * its device, as in PyTorch. */
  em_device cdev;
  if (em__cuda_mixed_scalars(nin, in, &cdev)) {
    em_tensor *use[EM_ITER_MAX_OPERANDS], *tmp[EM_ITER_MAX_OPERANDS] = {0};
    em_tensor *r = NULL;
    if (em__cuda_scalars_to_device(nin, in, cdev, use, tmp) == EM_OK)
      r = em__elementwise(op, key, out_dtype, nin, use, in_dtypes, a, grain);
    for (int i = 0; i < nin; i++) em_tensor_release(tmp[i]);
    return r;
  }
#endif
  if (em__check_same_device(em__op_name(op), nin, in)) return NULL;
  if (broadcast_tensors(em__op_name(op), nin, in, &nd, shape)) return NULL;
  em_tensor *out = em_tensor_empty_on(nd, shape, out_dtype, in[0]->device);
  if (!out) return NULL;
  if (out->numel && run_into(op, key, out, nin, in, in_dtypes, a, grain, nd, shape)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

em_status em__elementwise_into(em_op op, em_dtype key, em_tensor *out, int nin,
                               em_tensor *const *in, const em_dtype *in_dtypes,
                               const em_op_attrs *a, int64_t grain) {
  int nd;
  int64_t shape[EM_MAX_DIMS];
#ifdef EMBER_CUDA
  em_device cdev; /* CUDA: as in em__elementwise */
  if (out->device.type == EM_CUDA && em__cuda_mixed_scalars(nin, in, &cdev)) {
    em_tensor *use[EM_ITER_MAX_OPERANDS], *tmp[EM_ITER_MAX_OPERANDS] = {0};
    em_status st = em__cuda_scalars_to_device(nin, in, out->device, use, tmp);
    if (st == EM_OK) st = em__elementwise_into(op, key, out, nin, use, in_dtypes, a, grain);
    for (int i = 0; i < nin; i++) em_tensor_release(tmp[i]);
    return st;
  }
#endif
  em_tensor *all[EM_ITER_MAX_OPERANDS] = {out};
  for (int i = 0; i < nin; i++) all[i + 1] = in[i];
  EM_CHECK(em__check_same_device(em__op_name(op), nin + 1, all));
  EM_CHECK(broadcast_tensors(em__op_name(op), nin + 1, all, &nd, shape));
  bool same = nd == out->ndim;
  for (int i = 0; same && i < nd; i++) same = shape[i] == out->shape[i];
  if (!same) {
    char b[EM_SHAPE_STR_MAX];
    return em__set_error(EM_ERR_SHAPE,
                         "%s: output with shape %s doesn't match the broadcast shape %s",
                         em__op_name(op), em__tshape(out), em__shape_str(nd, shape, b, sizeof b));
  }
  for (int i = 0; i < out->ndim; i++)
    if (out->shape[i] > 1 && out->strides[i] == 0)
      return em__set_error(EM_ERR_INVALID,
                           "%s: unsupported operation: more than one element of the written-to "
                           "tensor refers to a single memory location; clone() it first",
                           em__op_name(op));
  if (out->numel == 0) return EM_OK;
  EM_CHECK(run_into(op, key, out, nin, in, in_dtypes, a, grain, nd, shape));
  em__bump_version(out);
  return EM_OK;
}
