/* Indexing ops: index_select, embedding, gather, take_along_dim, scatter*,
 * index_add, masked_fill, masked_select, nonzero, one_hot, advanced
 * indexing and index_put_. Expected values are hand-computed (checked
 * against PyTorch 1.13 while writing) or come from naive reference loops in
 * this file, on contiguous and non-contiguous inputs, several dtypes,
 * zero-size inputs and every error. */
#include "core/core_impl.h"
#include "tests/harness.h"

static em_tensor *mk(em_dtype dt, int nd, const int64_t *shape, const double *v) {
  em_tensor *d = em_tensor_from_data(v, nd, shape, EM_FLOAT64);
  if (!d) return NULL;
  em_tensor *r = em_tensor_to_dtype(d, dt);
  em_tensor_release(d);
  return r;
}

static em_tensor *mki(int nd, const int64_t *shape, const int64_t *v) {
  return em_tensor_from_data(v, nd, shape, EM_INT64);
}

#define I64(...) ((const int64_t[]){__VA_ARGS__})
#define F64(...) ((const double[]){__VA_ARGS__})

/* Values i * scale + shift (bool: i % 2) in row-major order. */
static em_tensor *seq(em_dtype dt, int nd, const int64_t *shape, double scale, double shift) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = dt == EM_BOOL ? (double)(i % 2) : i * scale + shift;
  em_tensor *t = mk(dt, nd, shape, v);
  free(v);
  return t;
}

/* Deterministic pseudo-random ints in [lo, hi). */
static em_tensor *rand_idx(int nd, const int64_t *shape, int64_t lo, int64_t hi, uint32_t seed) {
  em_tensor *t = em_tensor_empty(nd, shape, EM_INT64);
  int64_t *p = t->numel ? em_tensor_data(t) : NULL;
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < t->numel; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = lo + (int64_t)((s >> 8) % (uint32_t)(hi - lo));
  }
  return t;
}

static double at(em_tensor *t, const int64_t *c) {
  int64_t lin = 0;
  for (int d = 0; d < t->ndim; d++) lin = lin * t->shape[d] + c[d];
  return em_test_get(t, lin);
}

static int64_t at_i(em_tensor *t, const int64_t *c) { return (int64_t)at(t, c); }

static bool next(int nd, const int64_t *shape, int64_t *c) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++c[d] < shape[d]) return true;
    c[d] = 0;
  }
  return false;
}

/* Every element of t as a malloc'd double array (logical order). */
static double *values(em_tensor *t) {
  double *v = malloc(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
  for (int64_t i = 0; i < t->numel; i++) v[i] = em_test_get(t, i);
  return v;
}

/* ---- index_select --------------------------------------------------------------------- */

EM_TEST(index_select_values) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(3, 4), 1, 0);
  em_tensor *i0 = mki(EM_DIMS(3), I64(2, 0, 2));
  em_tensor *r0 = em_tensor_index_select(a, 0, i0);
  ASSERT_SHAPE(r0, 3, 4);
  ASSERT_TENSOR_CLOSE(r0, ((double[]){8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}), 0, 0);
  em_tensor *i1 = mki(EM_DIMS(2), I64(0, 3));
  em_tensor *r1 = em_tensor_index_select(a, -1, i1);
  ASSERT_SHAPE(r1, 3, 2);
  ASSERT_TENSOR_CLOSE(r1, ((double[]){0, 3, 4, 7, 8, 11}), 0, 0);
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(1), F64(1));
  em_tensor *r2 = em_tensor_index_select(a, 0, i32);
  ASSERT_SHAPE(r2, 1, 4);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){4, 5, 6, 7}), 0, 0);
  em_tensor *i0d = em_tensor_scalar(em_scalar_int(1), EM_INT64);
  em_tensor *r3 = em_tensor_index_select(a, 0, i0d);
  ASSERT_SHAPE(r3, 1, 4);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){4, 5, 6, 7}), 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_float(5), EM_FLOAT32);
  em_tensor *i1z = mki(EM_DIMS(1), I64(0));
  em_tensor *r4 = em_tensor_index_select(s, 0, i1z);
  ASSERT_SCALAR_SHAPE(r4);
  ASSERT_CLOSE(em_tensor_item_double(r4), 5, 0, 0);
  em_tensor *ie = em_tensor_empty(EM_DIMS(0), EM_INT64);
  em_tensor *r5 = em_tensor_index_select(a, 0, ie);
  ASSERT_SHAPE(r5, 0, 4);
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *r6 = em_tensor_index_select(z, 0, ie);
  ASSERT_SHAPE(r6, 0, 3);
  em_tensor *r7 = em_tensor_index_select(z, 1, i0);
  ASSERT_SHAPE(r7, 0, 3);
  em_tensor_release(a), em_tensor_release(i0), em_tensor_release(r0), em_tensor_release(i1);
  em_tensor_release(r1), em_tensor_release(i32), em_tensor_release(r2), em_tensor_release(i0d);
  em_tensor_release(r3), em_tensor_release(s), em_tensor_release(r4), em_tensor_release(ie);
  em_tensor_release(r5), em_tensor_release(z), em_tensor_release(r6), em_tensor_release(r7);
  em_tensor_release(i1z);
}

EM_TEST(index_select_reference_noncontiguous_dtypes) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8, EM_INT64, EM_BOOL};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *a = seq(dts[k], EM_DIMS(4, 5, 6), 1, 0);
    em_tensor *p = em_tensor_permute(a, EM_DIMS(2, 0, 1));   /* [6, 4, 5] */
    em_tensor *big = rand_idx(EM_DIMS(14), 0, 4, (uint32_t)k); /* dim 1 has size 4 */
    em_tensor *idx = em_tensor_slice(big, 0, 1, INT64_MAX, 2); /* 7, stride 2 */
    for (int dim = 0; dim < 3; dim++) {
      em_tensor *r = em_tensor_index_select(p, dim, idx);
      ASSERT_NOTNULL(r);
      ASSERT_EQ(r->shape[dim], 7);
      int64_t c[3] = {0}, s[3];
      for (int64_t i = 0; i < r->numel; i++) {
        memcpy(s, c, sizeof s);
        s[dim] = at_i(idx, &c[dim]);
        ASSERT_CLOSE(em_test_get(r, i), at(p, s), 0, 0);
        next(3, r->shape, c);
      }
      em_tensor_release(r);
    }
    em_tensor_release(a), em_tensor_release(p), em_tensor_release(big), em_tensor_release(idx);
  }
}

EM_TEST(index_select_large_rows) {
  em_tensor *w = seq(EM_FLOAT32, EM_DIMS(1000, 300), 1, 0);
  em_tensor *idx = rand_idx(EM_DIMS(2000), 0, 1000, 7);
  em_tensor *r = em_tensor_index_select(w, 0, idx);
  ASSERT_SHAPE(r, 2000, 300);
  const int64_t *ip = em_tensor_data(idx);
  for (int64_t b = 0; b < 2000; b += 13)
    for (int64_t j = 0; j < 300; j += 7)
      ASSERT_CLOSE(em_test_get(r, b * 300 + j), (double)(float)(ip[b] * 300 + j), 0, 0);
  em_tensor_release(w), em_tensor_release(idx), em_tensor_release(r);
}

EM_TEST(index_select_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(3, 4), 1, 0);
  em_tensor *i3 = mki(EM_DIMS(1), I64(3));
  em_tensor *in = mki(EM_DIMS(1), I64(-1));
  em_tensor *i4 = mki(EM_DIMS(2), I64(0, 4));
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(1), F64(1));
  em_tensor *i16 = mk(EM_INT16, EM_DIMS(1), F64(1));
  em_tensor *i2d = mki(EM_DIMS(1, 1), I64(1));
  ASSERT_NULL_ERR(em_tensor_index_select(a, 0, i3), EM_ERR_INDEX,
                  "index_select: index 3 is out of bounds for dimension 0 with size 3");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 0, in), EM_ERR_INDEX,
                  "index_select: index -1 is out of bounds for dimension 0 with size 3");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 1, i4), EM_ERR_INDEX,
                  "index 4 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 0, f), EM_ERR_DTYPE,
                  "index_select: Expected dtype int32 or int64 for index but got float32");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 0, i16), EM_ERR_DTYPE, "but got int16");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 0, i2d), EM_ERR_INDEX,
                  "index_select: Index is supposed to be a vector");
  ASSERT_NULL_ERR(em_tensor_index_select(a, 2, i3), EM_ERR_INDEX, "dimension out of range");
  em_tensor_release(a), em_tensor_release(i3), em_tensor_release(in), em_tensor_release(i4);
  em_tensor_release(f), em_tensor_release(i16), em_tensor_release(i2d);
}

/* ---- embedding ------------------------------------------------------------------------- */

EM_TEST(embedding_values) {
  em_tensor *w = seq(EM_FLOAT32, EM_DIMS(4, 2), 1, 0);
  em_tensor *ix = mki(EM_DIMS(2, 2), I64(0, 3, 1, 1));
  em_tensor *e = em_tensor_embedding(w, ix);
  ASSERT_SHAPE(e, 2, 2, 2);
  ASSERT_TENSOR_CLOSE(e, ((double[]){0, 1, 6, 7, 2, 3, 2, 3}), 0, 0);
  em_tensor *i32 = em_tensor_to_dtype(ix, EM_INT32);
  em_tensor *e32 = em_tensor_embedding(w, i32);
  ASSERT_TENSOR_CLOSE(e32, ((double[]){0, 1, 6, 7, 2, 3, 2, 3}), 0, 0);
  em_tensor *i0 = em_tensor_scalar(em_scalar_int(2), EM_INT64);
  em_tensor *e0 = em_tensor_embedding(w, i0);
  ASSERT_SHAPE(e0, 2);
  ASSERT_TENSOR_CLOSE(e0, ((double[]){4, 5}), 0, 0);
  /* non-contiguous weight and indices */
  em_tensor *w2 = seq(EM_FLOAT64, EM_DIMS(2, 4), 1, 0);
  em_tensor *wt = em_tensor_t(w2); /* [4, 2]: row r = (r, r + 4) */
  em_tensor *it = em_tensor_t(ix); /* [[0, 1], [3, 1]] */
  em_tensor *e2 = em_tensor_embedding(wt, it);
  ASSERT_SHAPE(e2, 2, 2, 2);
  ASSERT_TENSOR_CLOSE(e2, ((double[]){0, 4, 1, 5, 3, 7, 1, 5}), 0, 0);
  em_tensor *ie = em_tensor_empty(EM_DIMS(0, 3), EM_INT64);
  em_tensor *ee = em_tensor_embedding(w, ie);
  ASSERT_SHAPE(ee, 0, 3, 2);
  em_tensor_release(w), em_tensor_release(ix), em_tensor_release(e), em_tensor_release(i32);
  em_tensor_release(e32), em_tensor_release(i0), em_tensor_release(e0), em_tensor_release(w2);
  em_tensor_release(wt), em_tensor_release(it), em_tensor_release(e2), em_tensor_release(ie);
  em_tensor_release(ee);
}

EM_TEST(embedding_errors) {
  em_tensor *w = seq(EM_FLOAT32, EM_DIMS(4, 2), 1, 0);
  em_tensor *w1 = seq(EM_FLOAT32, EM_DIMS(4), 1, 0);
  em_tensor *i4 = mki(EM_DIMS(1), I64(4));
  em_tensor *in = mki(EM_DIMS(1), I64(-1));
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(1), F64(1));
  ASSERT_NULL_ERR(em_tensor_embedding(w1, i4), EM_ERR_SHAPE, "embedding: 'weight' must be 2-D");
  ASSERT_NULL_ERR(em_tensor_embedding(w, f), EM_ERR_DTYPE,
                  "scalar types: int64, int32; but got float32 instead");
  ASSERT_NULL_ERR(em_tensor_embedding(w, i4), EM_ERR_INDEX,
                  "index 4 is out of bounds for dimension 0 with size 4");
  ASSERT_NULL_ERR(em_tensor_embedding(w, in), EM_ERR_INDEX, "index -1 is out of bounds");
  ASSERT_TRUE(strstr(em_last_error(), "embedding") == em_last_error());
  em_tensor_release(w), em_tensor_release(w1), em_tensor_release(i4), em_tensor_release(in);
  em_tensor_release(f);
}

/* ---- gather / take_along_dim ----------------------------------------------------------------- */

EM_TEST(gather_values) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(3, 4), 1, 0);
  em_tensor *ix = mki(EM_DIMS(3, 2), I64(0, 3, 1, 1, 2, 0));
  em_tensor *g = em_tensor_gather(a, 1, ix);
  ASSERT_SHAPE(g, 3, 2);
  ASSERT_TENSOR_CLOSE(g, ((double[]){0, 3, 5, 5, 10, 8}), 0, 0);
  em_tensor *ix2 = mki(EM_DIMS(4, 1), I64(1, 1, 1, 1)); /* longer than self along dim */
  em_tensor *g2 = em_tensor_gather(a, 0, ix2);
  ASSERT_SHAPE(g2, 4, 1);
  ASSERT_TENSOR_CLOSE(g2, ((double[]){4, 4, 4, 4}), 0, 0);
  em_tensor *ix3 = mki(EM_DIMS(1, 5), I64(1, 1, 1, 1, 1));
  em_tensor *g3 = em_tensor_gather(a, 1, ix3);
  ASSERT_TENSOR_CLOSE(g3, ((double[]){1, 1, 1, 1, 1}), 0, 0);
  em_tensor *ie = em_tensor_empty(EM_DIMS(0, 9), EM_INT64); /* empty: no size checks */
  em_tensor *ge = em_tensor_gather(a, 0, ie);
  ASSERT_SHAPE(ge, 0, 9);
  em_tensor *s = em_tensor_scalar(em_scalar_float(5), EM_FLOAT32);
  em_tensor *i0 = em_tensor_scalar(em_scalar_int(0), EM_INT64);
  em_tensor *gs = em_tensor_gather(s, 0, i0);
  ASSERT_SCALAR_SHAPE(gs);
  ASSERT_CLOSE(em_tensor_item_double(gs), 5, 0, 0);
  em_tensor *i00 = mki(EM_DIMS(2), I64(0, 0));
  em_tensor *gs2 = em_tensor_gather(s, -1, i00);
  ASSERT_TENSOR_CLOSE(gs2, ((double[]){5, 5}), 0, 0);
  em_tensor_release(a), em_tensor_release(ix), em_tensor_release(g), em_tensor_release(ix2);
  em_tensor_release(g2), em_tensor_release(ix3), em_tensor_release(g3), em_tensor_release(ie);
  em_tensor_release(ge), em_tensor_release(s), em_tensor_release(i0), em_tensor_release(gs);
  em_tensor_release(i00), em_tensor_release(gs2);
}

EM_TEST(gather_reference_noncontiguous_dtypes) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_INT32, EM_BOOL, EM_FLOAT64, EM_UINT8};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *a = seq(dts[k], EM_DIMS(5, 6, 7), 1, 0);
    em_tensor *p = em_tensor_transpose(a, 0, 2); /* [7, 6, 5] */
    for (int dim = -3; dim < 3; dim++) {
      int d = dim < 0 ? dim + 3 : dim;
      em_tensor *raw = rand_idx(EM_DIMS(4, 5, 8), 0, p->shape[d], (uint32_t)(k * 7 + d));
      em_tensor *ix = em_tensor_transpose(raw, 1, 2);   /* [4, 8, 5], non-contiguous */
      if (d != 1) { /* index sizes must be <= self's outside dim: narrow 8 to 6 */
        em_tensor *sl = em_tensor_narrow(ix, 1, 0, 6);
        em_tensor_release(ix);
        ix = sl;
      }
      em_tensor *g = em_tensor_gather(p, dim, ix);
      ASSERT_NOTNULL(g);
      ASSERT_EQ(g->ndim, 3);
      int64_t c[3] = {0}, s[3];
      for (int64_t i = 0; i < g->numel; i++) {
        memcpy(s, c, sizeof s);
        s[d] = at_i(ix, c);
        ASSERT_CLOSE(em_test_get(g, i), at(p, s), 0, 0);
        next(3, g->shape, c);
      }
      em_tensor_release(g), em_tensor_release(raw), em_tensor_release(ix);
    }
    em_tensor_release(a), em_tensor_release(p);
  }
}

EM_TEST(gather_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(3, 4), 1, 0);
  em_tensor *in = mki(EM_DIMS(1, 1), I64(-1));
  em_tensor *i4 = mki(EM_DIMS(1, 1), I64(4));
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(1, 1), F64(1));
  em_tensor *wide = mki(EM_DIMS(1, 5), I64(1, 1, 1, 1, 1));
  em_tensor *i1d = mki(EM_DIMS(1), I64(1));
  ASSERT_NULL_ERR(em_tensor_gather(a, 1, in), EM_ERR_INDEX,
                  "gather: index -1 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_gather(a, 1, i4), EM_ERR_INDEX,
                  "gather: index 4 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_gather(a, 1, i32), EM_ERR_DTYPE,
                  "gather: Expected dtype int64 for index but got int32");
  ASSERT_NULL_ERR(em_tensor_gather(a, 0, wide), EM_ERR_SHAPE,
                  "Size does not match at dimension 1 expected index [1, 5] to be smaller than "
                  "self [3, 4] apart from dimension 0");
  ASSERT_NULL_ERR(em_tensor_gather(a, 0, i1d), EM_ERR_SHAPE,
                  "Index tensor must have the same number of dimensions as input tensor");
  ASSERT_NULL_ERR(em_tensor_gather(a, 2, in), EM_ERR_INDEX, "dimension out of range");
  em_tensor_release(a), em_tensor_release(in), em_tensor_release(i4), em_tensor_release(i32);
  em_tensor_release(wide), em_tensor_release(i1d);
}

EM_TEST(take_along_dim_values_and_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(3, 4), 1, 0);
  em_tensor *c = mki(EM_DIMS(3, 1), I64(0, 3, 1));
  em_tensor *r1 = em_tensor_take_along_dim(a, c, 1);
  ASSERT_SHAPE(r1, 3, 1);
  ASSERT_TENSOR_CLOSE(r1, ((double[]){0, 7, 9}), 0, 0);
  em_tensor *row = mki(EM_DIMS(1, 3), I64(0, 3, 1)); /* broadcast over dim 0 */
  em_tensor *r2 = em_tensor_take_along_dim(a, row, -1);
  ASSERT_SHAPE(r2, 3, 3);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){0, 3, 1, 4, 7, 5, 8, 11, 9}), 0, 0);
  em_tensor *col = mki(EM_DIMS(2, 1), I64(0, 2));
  em_tensor *r3 = em_tensor_take_along_dim(a, col, 0);
  ASSERT_SHAPE(r3, 2, 4);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){0, 1, 2, 3, 8, 9, 10, 11}), 0, 0);
  em_tensor *am = seq(EM_FLOAT32, EM_DIMS(1, 4), 1, 0); /* self broadcast too */
  em_tensor *ix = mki(EM_DIMS(2, 2), I64(3, 0, 1, 1));
  em_tensor *r4 = em_tensor_take_along_dim(am, ix, 1);
  ASSERT_SHAPE(r4, 2, 2);
  ASSERT_TENSOR_CLOSE(r4, ((double[]){3, 0, 1, 1}), 0, 0);
  em_tensor *neg = mki(EM_DIMS(1, 1), I64(-1));
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(1, 1), F64(1));
  em_tensor *i1 = mki(EM_DIMS(1), I64(1));
  em_tensor *bad = mki(EM_DIMS(2, 2), I64(1, 2, 1, 2));
  ASSERT_NULL_ERR(em_tensor_take_along_dim(a, neg, 1), EM_ERR_INDEX,
                  "index -1 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_take_along_dim(a, i32, 1), EM_ERR_DTYPE,
                  "take_along_dim: dtype of indices should be int64 but got int32");
  ASSERT_NULL_ERR(em_tensor_take_along_dim(a, i1, 1), EM_ERR_SHAPE,
                  "input and indices should have the same number of dimensions, but got 2 "
                  "dimensions for input, and 1 dimensions for indices");
  ASSERT_NULL_ERR(em_tensor_take_along_dim(a, bad, 1), EM_ERR_SHAPE,
                  "the size of tensor a (3) must match the size of tensor b (2) at non-singleton "
                  "dimension 0");
  em_tensor_release(a), em_tensor_release(c), em_tensor_release(r1), em_tensor_release(row);
  em_tensor_release(r2), em_tensor_release(col), em_tensor_release(r3), em_tensor_release(am);
  em_tensor_release(ix), em_tensor_release(r4), em_tensor_release(neg), em_tensor_release(i32);
  em_tensor_release(i1), em_tensor_release(bad);
}

/* ---- scatter family ----------------------------------------------------------------------- */

EM_TEST(scatter_values) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *ix = mki(EM_DIMS(2, 2), I64(0, 3, 1, 1));
  em_tensor *src = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 1);
  em_tensor *s = em_tensor_scatter(z, 1, ix, src);
  ASSERT_SHAPE(s, 3, 4);
  /* duplicate (row 1, col 1): the later element along dim wins */
  ASSERT_TENSOR_CLOSE(s, ((double[]){1, 0, 0, 2, 0, 5, 0, 0, 0, 0, 0, 0}), 0, 0);
  ASSERT_TENSOR_CLOSE(z, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor *iv = mki(EM_DIMS(1, 2), I64(0, 1));
  em_tensor *sv = em_tensor_scatter_value(z, 1, iv, em_scalar_float(2.5));
  ASSERT_TENSOR_CLOSE(sv, ((double[]){2.5, 2.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor *zl = em_tensor_zeros(EM_DIMS(3, 4), EM_INT64);
  em_tensor *svl = em_tensor_scatter_value(zl, 1, iv, em_scalar_float(2.5));
  ASSERT_TENSOR_CLOSE(svl, ((double[]){2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor *ia = mki(EM_DIMS(2, 3), I64(0, 0, 0, 1, 1, 3));
  em_tensor *ones = em_tensor_ones(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *sa = em_tensor_scatter_add(z, 1, ia, ones);
  ASSERT_TENSOR_CLOSE(sa, ((double[]){3, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0}), 0, 0);
  em_tensor *ie = em_tensor_empty(EM_DIMS(0, 9), EM_INT64);
  em_tensor *se = em_tensor_scatter(z, 1, ie, src);
  ASSERT_SHAPE(se, 3, 4);
  ASSERT_TENSOR_CLOSE(se, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  /* in place, on a transposed view: writes reach the base */
  em_tensor *base = em_tensor_zeros(EM_DIMS(4, 3), EM_FLOAT32);
  em_tensor *v = em_tensor_t(base); /* [3, 4] */
  uint64_t ver = em_tensor_version(base);
  ASSERT_OK(em_tensor_scatter_(v, 1, ix, src));
  ASSERT_TENSOR_CLOSE(v, ((double[]){1, 0, 0, 2, 0, 5, 0, 0, 0, 0, 0, 0}), 0, 0);
  ASSERT_TENSOR_CLOSE(base, ((double[]){1, 0, 0, 0, 5, 0, 0, 0, 0, 2, 0, 0}), 0, 0);
  ASSERT_TRUE(em_tensor_version(base) > ver);
  ASSERT_OK(em_tensor_scatter_add_(v, 1, ia, ones));
  ASSERT_TENSOR_CLOSE(v, ((double[]){4, 0, 0, 2, 0, 7, 0, 1, 0, 0, 0, 0}), 0, 0);
  /* 0-dim */
  em_tensor *s0 = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  em_tensor *i0 = em_tensor_scalar(em_scalar_int(0), EM_INT64);
  em_tensor *v0 = em_tensor_scalar(em_scalar_float(4), EM_FLOAT32);
  em_tensor *r0 = em_tensor_scatter_add(s0, 0, i0, v0);
  ASSERT_SCALAR_SHAPE(r0);
  ASSERT_CLOSE(em_tensor_item_double(r0), 5, 0, 0);
  em_tensor_release(z), em_tensor_release(ix), em_tensor_release(src), em_tensor_release(s);
  em_tensor_release(iv), em_tensor_release(sv), em_tensor_release(zl), em_tensor_release(svl);
  em_tensor_release(ia), em_tensor_release(ones), em_tensor_release(sa), em_tensor_release(ie);
  em_tensor_release(se), em_tensor_release(base), em_tensor_release(v), em_tensor_release(s0);
  em_tensor_release(i0), em_tensor_release(v0), em_tensor_release(r0);
}

/* scatter_add with many duplicates against a reference loop, on every dim,
 * non-contiguous self and src, several dtypes (small ints: sums exact). */
EM_TEST(scatter_add_reference_duplicates) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_INT32, EM_INT8};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    for (int d = 0; d < 3; d++) {
      em_tensor *selfb = seq(dts[k], EM_DIMS(6, 5, 4), 0, 1);      /* all ones */
      em_tensor *self = em_tensor_permute(selfb, EM_DIMS(2, 1, 0)); /* [4, 5, 6] */
      int64_t ishape[3] = {3, 4, 5};
      ishape[d] = 9; /* more than self's size along d: duplicates */
      int64_t sshape_rev[3] = {ishape[2] + 1, ishape[1] + 1, ishape[0] + 1};
      em_tensor *srci = rand_idx(3, sshape_rev, -3, 4, (uint32_t)(k * 3 + d + 100));
      em_tensor *srcb = em_tensor_to_dtype(srci, dts[k]);
      em_tensor *src = em_tensor_permute(srcb, EM_DIMS(2, 1, 0)); /* bigger than index */
      em_tensor *ix = rand_idx(3, ishape, 0, self->shape[d], (uint32_t)(k * 3 + d));
      em_tensor *r = em_tensor_scatter_add(self, d, ix, src);
      ASSERT_NOTNULL(r);
      double *e = values(self);
      int64_t c[3] = {0}, o[3];
      for (int64_t i = 0; i < ix->numel; i++) {
        memcpy(o, c, sizeof o);
        o[d] = at_i(ix, c);
        e[(o[0] * self->shape[1] + o[1]) * self->shape[2] + o[2]] += at(src, c);
        next(3, ix->shape, c);
      }
      ASSERT_TENSOR_CLOSE_N(r, e, r->numel, 0, 0);
      ASSERT_OK(em_tensor_scatter_add_(self, d, ix, src)); /* in place gives the same */
      ASSERT_TENSOR_CLOSE_N(self, e, self->numel, 0, 0);
      free(e);
      em_tensor_release(selfb), em_tensor_release(self), em_tensor_release(srci);
      em_tensor_release(srcb), em_tensor_release(src), em_tensor_release(ix), em_tensor_release(r);
    }
  }
}

/* Big enough to run threaded; integer-valued floats so every order of
 * summation is exact, and a second run must be bit-identical. */
EM_TEST(scatter_add_large_deterministic) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(64, 512), EM_FLOAT32);
  em_tensor *ix = rand_idx(EM_DIMS(400, 512), 0, 64, 11);
  em_tensor *src = rand_idx(EM_DIMS(400, 512), -8, 8, 12);
  em_tensor *srcf = em_tensor_to_dtype(src, EM_FLOAT32);
  em_tensor *r1 = em_tensor_scatter_add(z, 0, ix, srcf);
  em_tensor *r2 = em_tensor_scatter_add(z, 0, ix, srcf);
  double *e = calloc(64 * 512, sizeof(double));
  const int64_t *ip = em_tensor_data(ix), *sp = em_tensor_data(src);
  for (int64_t i = 0; i < 400; i++)
    for (int64_t j = 0; j < 512; j++) e[ip[i * 512 + j] * 512 + j] += (double)sp[i * 512 + j];
  ASSERT_TENSOR_CLOSE_N(r1, e, 64 * 512, 0, 0);
  ASSERT_TRUE(memcmp(em_tensor_data(r1), em_tensor_data(r2), 64 * 512 * sizeof(float)) == 0);
  free(e);
  em_tensor_release(z), em_tensor_release(ix), em_tensor_release(src), em_tensor_release(srcf);
  em_tensor_release(r1), em_tensor_release(r2);
}

EM_TEST(scatter_aliasing_and_bool) {
  /* src is self: reads see the values before the op */
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(1, 4), 1, 1); /* [1, 2, 3, 4] */
  em_tensor *ix = mki(EM_DIMS(1, 4), I64(3, 2, 1, 0));
  ASSERT_OK(em_tensor_scatter_(a, 1, ix, a));
  ASSERT_TENSOR_CLOSE(a, ((double[]){4, 3, 2, 1}), 0, 0);
  em_tensor *b = mk(EM_BOOL, EM_DIMS(4), F64(0, 0, 1, 0));
  em_tensor *i1 = mki(EM_DIMS(2), I64(1, 1));
  em_tensor *t1 = mk(EM_BOOL, EM_DIMS(2), F64(1, 1));
  em_tensor *rb = em_tensor_scatter_add(b, 0, i1, t1);
  ASSERT_TENSOR_CLOSE(rb, ((double[]){0, 1, 1, 0}), 0, 0);
  em_tensor_release(a), em_tensor_release(ix), em_tensor_release(b), em_tensor_release(i1);
  em_tensor_release(t1), em_tensor_release(rb);
}

EM_TEST(scatter_errors) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *ix = mki(EM_DIMS(2, 2), I64(0, 3, 1, 1));
  em_tensor *src = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 1);
  em_tensor *srcl = seq(EM_INT64, EM_DIMS(2, 3), 1, 1);
  em_tensor *src21 = seq(EM_FLOAT32, EM_DIMS(2, 1), 1, 1);
  em_tensor *i5 = mki(EM_DIMS(2, 2), I64(0, 3, 1, 5));
  em_tensor *ineg = mki(EM_DIMS(1, 2), I64(0, -1));
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(1, 1), F64(0));
  em_tensor *i1d = mki(EM_DIMS(1), I64(0));
  em_tensor *tall = mki(EM_DIMS(5, 1), I64(0, 0, 0, 0, 0));
  ASSERT_NULL_ERR(em_tensor_scatter(z, 1, ix, srcl), EM_ERR_DTYPE,
                  "scatter: Expected self.dtype to be equal to src.dtype (got float32 and int64)");
  ASSERT_NULL_ERR(em_tensor_scatter(z, 1, ix, src21), EM_ERR_SHAPE,
                  "Expected index [2, 2] to be smaller than self [3, 4] apart from dimension 1 "
                  "and to be smaller size than src [2, 1]");
  ASSERT_NULL_ERR(em_tensor_scatter_value(z, 1, tall, em_scalar_float(1)), EM_ERR_SHAPE,
                  "Expected index [5, 1] to be smaller than self [3, 4] apart from dimension 1");
  ASSERT_NULL_ERR(em_tensor_scatter(z, 1, i5, src), EM_ERR_INDEX,
                  "scatter: index 5 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_scatter_add(z, 1, ineg, src), EM_ERR_INDEX,
                  "scatter_add: index -1 is out of bounds for dimension 1 with size 4");
  ASSERT_NULL_ERR(em_tensor_scatter_value(z, 1, i32, em_scalar_float(1)), EM_ERR_DTYPE,
                  "Expected dtype int64 for index but got int32");
  ASSERT_NULL_ERR(em_tensor_scatter_add(z, 1, i1d, src), EM_ERR_SHAPE,
                  "Index tensor must have the same number of dimensions as self tensor");
  ASSERT_ERR(em_tensor_scatter_(z, 1, i5, src), EM_ERR_INDEX, "scatter_: index 5 is out of bounds");
  ASSERT_TENSOR_CLOSE(z, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  ASSERT_ERR(em_tensor_scatter_add_(z, 2, ix, src), EM_ERR_INDEX, "dimension out of range");
  em_tensor *row = em_tensor_zeros(EM_DIMS(1, 4), EM_FLOAT32);
  em_tensor *ex = em_tensor_expand(row, EM_DIMS(3, 4));
  ASSERT_ERR(em_tensor_scatter_(ex, 1, ix, src), EM_ERR_INVALID,
             "more than one element of the written-to tensor refers to a single memory location");
  em_tensor_release(z), em_tensor_release(ix), em_tensor_release(src), em_tensor_release(srcl);
  em_tensor_release(src21), em_tensor_release(i5), em_tensor_release(ineg), em_tensor_release(i32);
  em_tensor_release(i1d), em_tensor_release(tall), em_tensor_release(row), em_tensor_release(ex);
}

/* ---- index_add ----------------------------------------------------------------------------- */

EM_TEST(index_add_values) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *ix = mki(EM_DIMS(3), I64(0, 2, 0));
  em_tensor *ones = em_tensor_ones(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *r = em_tensor_index_add(z, 0, ix, ones, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r, ((double[]){4, 4, 4, 4, 0, 0, 0, 0, 2, 2, 2, 2}), 0, 0);
  em_tensor *i32 = em_tensor_to_dtype(ix, EM_INT32);
  em_tensor *r32 = em_tensor_index_add(z, 0, i32, ones, em_scalar_int(2));
  ASSERT_TENSOR_CLOSE(r32, ((double[]){4, 4, 4, 4, 0, 0, 0, 0, 2, 2, 2, 2}), 0, 0);
  em_tensor *i03 = mki(EM_DIMS(2), I64(0, 3));
  em_tensor *ones32 = em_tensor_ones(EM_DIMS(3, 2), EM_FLOAT32);
  em_tensor *r1 = em_tensor_index_add(z, 1, i03, ones32, em_scalar_float(2.5));
  ASSERT_TENSOR_CLOSE(r1, ((double[]){2.5, 0, 0, 2.5, 2.5, 0, 0, 2.5, 2.5, 0, 0, 2.5}), 0, 0);
  /* int64 with a float alpha: alpha is cast to the dtype (2.5 -> 2) */
  em_tensor *zl = em_tensor_zeros(EM_DIMS(3, 4), EM_INT64);
  em_tensor *onesl = em_tensor_ones(EM_DIMS(3, 2), EM_INT64);
  em_tensor *rl = em_tensor_index_add(zl, 1, i03, onesl, em_scalar_float(2.5));
  ASSERT_TENSOR_CLOSE(rl, ((double[]){2, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 2}), 0, 0);
  em_tensor *zb = em_tensor_zeros(EM_DIMS(4), EM_BOOL);
  em_tensor *tb = mk(EM_BOOL, EM_DIMS(2), F64(1, 0));
  em_tensor *rb = em_tensor_index_add(zb, 0, i03, tb, em_scalar_int(1));
  ASSERT_TENSOR_CLOSE(rb, ((double[]){1, 0, 0, 0}), 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  em_tensor *i00 = mki(EM_DIMS(2), I64(0, 0));
  em_tensor *o2 = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  em_tensor *rs = em_tensor_index_add(s, 0, i00, o2, em_scalar_int(1));
  ASSERT_SCALAR_SHAPE(rs);
  ASSERT_CLOSE(em_tensor_item_double(rs), 3, 0, 0);
  /* int8 wraps like PyTorch */
  em_tensor *z8 = mk(EM_INT8, EM_DIMS(1), F64(120));
  em_tensor *v8 = mk(EM_INT8, EM_DIMS(2), F64(5, 5));
  em_tensor *r8 = em_tensor_index_add(z8, 0, i00, v8, em_scalar_int(1));
  ASSERT_TENSOR_CLOSE(r8, ((double[]){-126}), 0, 0);
  /* empty index: a copy */
  em_tensor *ie = em_tensor_empty(EM_DIMS(0), EM_INT64);
  em_tensor *se = em_tensor_empty(EM_DIMS(3, 0), EM_FLOAT32);
  em_tensor *re = em_tensor_index_add(z, 1, ie, se, em_scalar_int(1));
  ASSERT_SHAPE(re, 3, 4);
  em_tensor_release(z), em_tensor_release(ix), em_tensor_release(ones), em_tensor_release(r);
  em_tensor_release(i32), em_tensor_release(r32), em_tensor_release(i03), em_tensor_release(ones32);
  em_tensor_release(r1), em_tensor_release(zl), em_tensor_release(onesl), em_tensor_release(rl);
  em_tensor_release(zb), em_tensor_release(tb), em_tensor_release(rb), em_tensor_release(s);
  em_tensor_release(i00), em_tensor_release(o2), em_tensor_release(rs), em_tensor_release(z8);
  em_tensor_release(v8), em_tensor_release(r8), em_tensor_release(ie), em_tensor_release(se);
  em_tensor_release(re);
}

EM_TEST(index_add_reference_noncontiguous) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_INT16};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    for (int d = 0; d < 3; d++) {
      em_tensor *b = seq(dts[k], EM_DIMS(5, 4, 3), 1, 0);
      em_tensor *self = em_tensor_permute(b, EM_DIMS(1, 2, 0)); /* [4, 3, 5] */
      int64_t sshape[3] = {4, 3, 5};
      sshape[d] = 7;
      em_tensor *srcb = seq(dts[k], 3, (int64_t[]){sshape[2], sshape[1], sshape[0]}, 1, 1);
      em_tensor *src = em_tensor_permute(srcb, EM_DIMS(2, 1, 0)); /* non-contiguous */
      em_tensor *ixb = rand_idx(EM_DIMS(14), 0, self->shape[d], (uint32_t)(k + 10 * d));
      em_tensor *ix = em_tensor_slice(ixb, 0, 0, INT64_MAX, 2);
      double *e = values(self);
      int64_t c[3] = {0}, o[3];
      for (int64_t i = 0; i < src->numel; i++) {
        memcpy(o, c, sizeof o);
        o[d] = at_i(ix, &c[d]);
        e[(o[0] * 3 + o[1]) * 5 + o[2]] += 3 * at(src, c);
        next(3, src->shape, c);
      }
      ASSERT_OK(em_tensor_index_add_(self, d, ix, src, em_scalar_int(3)));
      ASSERT_TENSOR_CLOSE_N(self, e, self->numel, dts[k] == EM_FLOAT16 ? 1e-3 : 0, 0);
      free(e);
      em_tensor_release(b), em_tensor_release(self), em_tensor_release(srcb);
      em_tensor_release(src), em_tensor_release(ixb), em_tensor_release(ix);
    }
  }
}

/* One big row range with many duplicates: the split-run threaded path. */
EM_TEST(index_add_large_deterministic) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(8, 8192), EM_FLOAT32);
  em_tensor *ix = rand_idx(EM_DIMS(50), 0, 8, 3);
  em_tensor *src = rand_idx(EM_DIMS(50, 8192), -5, 5, 4);
  em_tensor *srcf = em_tensor_to_dtype(src, EM_FLOAT32);
  em_tensor *r1 = em_tensor_index_add(z, 0, ix, srcf, em_scalar_int(1));
  em_tensor *r2 = em_tensor_index_add(z, 0, ix, srcf, em_scalar_int(1));
  double *e = calloc(8 * 8192, sizeof(double));
  const int64_t *ip = em_tensor_data(ix), *sp = em_tensor_data(src);
  for (int64_t b = 0; b < 50; b++)
    for (int64_t j = 0; j < 8192; j++) e[ip[b] * 8192 + j] += (double)sp[b * 8192 + j];
  ASSERT_TENSOR_CLOSE_N(r1, e, 8 * 8192, 0, 0);
  ASSERT_TRUE(memcmp(em_tensor_data(r1), em_tensor_data(r2), 8 * 8192 * sizeof(float)) == 0);
  free(e);
  em_tensor_release(z), em_tensor_release(ix), em_tensor_release(src), em_tensor_release(srcf);
  em_tensor_release(r1), em_tensor_release(r2);
}

EM_TEST(index_add_errors) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *ones = em_tensor_ones(EM_DIMS(3, 4), EM_FLOAT32);
  em_tensor *ones5 = em_tensor_ones(EM_DIMS(3, 5), EM_FLOAT32);
  em_tensor *onesd = em_tensor_ones(EM_DIMS(3, 4), EM_FLOAT64);
  em_tensor *ineg = mki(EM_DIMS(3), I64(0, -1, 0));
  em_tensor *i3 = mki(EM_DIMS(3), I64(0, 3, 0));
  em_tensor *i2 = mki(EM_DIMS(2), I64(0, 2));
  em_tensor *i2d = mki(EM_DIMS(1, 3), I64(0, 2, 0));
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(3), F64(0, 1, 2));
  em_tensor *ok = mki(EM_DIMS(3), I64(0, 2, 0));
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, ineg, ones, em_scalar_int(1)), EM_ERR_INDEX,
                  "index_add: index -1 is out of bounds for dimension 0 with size 3");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, i3, ones, em_scalar_int(1)), EM_ERR_INDEX,
                  "index 3 is out of bounds for dimension 0 with size 3");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, i2, ones, em_scalar_int(1)), EM_ERR_SHAPE,
                  "Number of indices (2) should be equal to source.size(dim): (3), for dim: 0");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, ok, ones5, em_scalar_int(1)), EM_ERR_SHAPE,
                  "source shape [3, 5] must match self shape [3, 4] except at dimension 0");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, ok, onesd, em_scalar_int(1)), EM_ERR_DTYPE,
                  "self (float32) and source (float64) must have the same scalar type");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, i2d, ones, em_scalar_int(1)), EM_ERR_INDEX,
                  "Index is supposed to be a vector, but got dim: 2");
  ASSERT_NULL_ERR(em_tensor_index_add(z, 0, f, ones, em_scalar_int(1)), EM_ERR_DTYPE,
                  "Expected dtype int32 or int64 for index but got float32");
  ASSERT_ERR(em_tensor_index_add_(z, 0, i3, ones, em_scalar_int(1)), EM_ERR_INDEX,
             "index_add_: index 3 is out of bounds");
  ASSERT_TENSOR_CLOSE(z, ((double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor_release(z), em_tensor_release(ones), em_tensor_release(ones5), em_tensor_release(onesd);
  em_tensor_release(ineg), em_tensor_release(i3), em_tensor_release(i2), em_tensor_release(i2d);
  em_tensor_release(f), em_tensor_release(ok);
}

/* ---- masked_fill / masked_select ------------------------------------------------------------- */

EM_TEST(masked_fill_values) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *m = mk(EM_BOOL, EM_DIMS(3), F64(1, 0, 1));
  em_tensor *r = em_tensor_masked_fill(a, m, em_scalar_int(-1));
  ASSERT_TENSOR_CLOSE(r, ((double[]){-1, 1, -1, -1, 4, -1}), 0, 0);
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *mb = em_tensor_ones(EM_DIMS(2, 2, 3), EM_BOOL); /* broadcasts self */
  em_tensor *rb = em_tensor_masked_fill(a, mb, em_scalar_int(-1));
  ASSERT_SHAPE(rb, 2, 2, 3);
  em_tensor *al = seq(EM_INT64, EM_DIMS(2, 3), 1, 0);
  em_tensor *rl = em_tensor_masked_fill(al, m, em_scalar_float(2.7));
  ASSERT_EQ(rl->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(rl, ((double[]){2, 1, 2, 2, 4, 2}), 0, 0);
  em_tensor *ab = mk(EM_BOOL, EM_DIMS(3), F64(0, 0, 0));
  em_tensor *rbo = em_tensor_masked_fill(ab, m, em_scalar_float(2.7));
  ASSERT_TENSOR_CLOSE(rbo, ((double[]){1, 0, 1}), 0, 0);
  em_tensor *ah = seq(EM_FLOAT16, EM_DIMS(2, 3), 0.5, 0);
  em_tensor *mu = mk(EM_UINT8, EM_DIMS(2, 1), F64(0, 7));
  em_tensor *rh = em_tensor_masked_fill(ah, mu, em_scalar_float(0.25));
  ASSERT_TENSOR_CLOSE(rh, ((double[]){0, 0.5, 1, 0.25, 0.25, 0.25}), 0, 0);
  /* in place on a transposed view with a transposed mask */
  em_tensor *base = seq(EM_FLOAT64, EM_DIMS(3, 2), 1, 0);
  em_tensor *v = em_tensor_t(base); /* [[0, 2, 4], [1, 3, 5]] */
  em_tensor *mm = mk(EM_BOOL, EM_DIMS(3, 2), F64(1, 0, 0, 1, 0, 0));
  em_tensor *mt = em_tensor_t(mm); /* [[1, 0, 0], [0, 1, 0]] */
  ASSERT_OK(em_tensor_masked_fill_(v, mt, em_scalar_float(9)));
  ASSERT_TENSOR_CLOSE(v, ((double[]){9, 2, 4, 1, 9, 5}), 0, 0);
  ASSERT_TENSOR_CLOSE(base, ((double[]){9, 1, 2, 9, 4, 5}), 0, 0);
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *rz = em_tensor_masked_fill(z, m, em_scalar_int(1));
  ASSERT_SHAPE(rz, 0, 3);
  em_tensor_release(a), em_tensor_release(m), em_tensor_release(r), em_tensor_release(mb);
  em_tensor_release(rb), em_tensor_release(al), em_tensor_release(rl), em_tensor_release(ab);
  em_tensor_release(rbo), em_tensor_release(ah), em_tensor_release(mu), em_tensor_release(rh);
  em_tensor_release(base), em_tensor_release(v), em_tensor_release(mm), em_tensor_release(mt);
  em_tensor_release(z), em_tensor_release(rz);
}

EM_TEST(masked_fill_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *mf = mk(EM_FLOAT32, EM_DIMS(3), F64(1, 0, 1));
  em_tensor *m2 = mk(EM_BOOL, EM_DIMS(2), F64(1, 0));
  em_tensor *m23 = em_tensor_ones(EM_DIMS(2, 3), EM_BOOL);
  em_tensor *row = em_tensor_select(a, 0, 0);
  ASSERT_NULL_ERR(em_tensor_masked_fill(a, mf, em_scalar_int(1)), EM_ERR_DTYPE,
                  "masked_fill: expected BoolTensor or ByteTensor for mask, got float32");
  ASSERT_NULL_ERR(em_tensor_masked_fill(a, m2, em_scalar_int(1)), EM_ERR_SHAPE,
                  "masked_fill: the size of tensor a (3) must match the size of tensor b (2) at "
                  "non-singleton dimension");
  ASSERT_ERR(em_tensor_masked_fill_(row, m23, em_scalar_int(1)), EM_ERR_SHAPE,
             "output with shape [3] doesn't match the broadcast shape [2, 3]");
  ASSERT_ERR(em_tensor_masked_fill_(a, mf, em_scalar_int(1)), EM_ERR_DTYPE, "expected BoolTensor");
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor_release(a), em_tensor_release(mf), em_tensor_release(m2), em_tensor_release(m23);
  em_tensor_release(row);
}

EM_TEST(masked_select_values) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *m = mk(EM_BOOL, EM_DIMS(3), F64(1, 0, 1));
  em_tensor *r = em_tensor_masked_select(a, m);
  ASSERT_SHAPE(r, 4);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 2, 3, 5}), 0, 0);
  em_tensor *mb = em_tensor_ones(EM_DIMS(2, 2, 3), EM_BOOL);
  em_tensor *rb = em_tensor_masked_select(a, mb);
  ASSERT_TENSOR_CLOSE(rb, ((double[]){0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *row = em_tensor_select(a, 0, 0);
  em_tensor *mc = mk(EM_BOOL, EM_DIMS(2, 1), F64(1, 0));
  em_tensor *rc = em_tensor_masked_select(row, mc);
  ASSERT_TENSOR_CLOSE(rc, ((double[]){0, 1, 2}), 0, 0);
  /* non-contiguous self and mask; other dtypes; reference loop */
  em_dtype dts[] = {EM_FLOAT16, EM_INT8, EM_BOOL, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *b = seq(dts[k], EM_DIMS(4, 5), 1, 3);
    em_tensor *bt = em_tensor_t(b); /* [5, 4] */
    em_tensor *mi = rand_idx(EM_DIMS(4, 5), 0, 2, (uint32_t)k);
    em_tensor *mbool = em_tensor_to_dtype(mi, EM_BOOL);
    em_tensor *mt = em_tensor_t(mbool);
    em_tensor *rs = em_tensor_masked_select(bt, mt);
    ASSERT_NOTNULL(rs);
    double e[20];
    int n = 0;
    for (int64_t i = 0; i < 20; i++)
      if (em_test_get(mt, i)) e[n++] = em_test_get(bt, i);
    ASSERT_TENSOR_CLOSE_N(rs, e, n, 0, 0);
    ASSERT_EQ(rs->dtype, dts[k]);
    em_tensor_release(b), em_tensor_release(bt), em_tensor_release(mi), em_tensor_release(mbool);
    em_tensor_release(mt), em_tensor_release(rs);
  }
  em_tensor *none = em_tensor_zeros(EM_DIMS(3), EM_BOOL);
  em_tensor *rn = em_tensor_masked_select(a, none);
  ASSERT_SHAPE(rn, 0);
  em_tensor *mf = mk(EM_INT32, EM_DIMS(3), F64(1, 0, 1));
  em_tensor *m2 = mk(EM_BOOL, EM_DIMS(2), F64(1, 0));
  ASSERT_NULL_ERR(em_tensor_masked_select(a, mf), EM_ERR_DTYPE,
                  "masked_select: expected BoolTensor or ByteTensor for mask, got int32");
  ASSERT_NULL_ERR(em_tensor_masked_select(a, m2), EM_ERR_SHAPE,
                  "the size of tensor a (3) must match the size of tensor b (2)");
  em_tensor_release(a), em_tensor_release(m), em_tensor_release(r), em_tensor_release(mb);
  em_tensor_release(rb), em_tensor_release(row), em_tensor_release(mc), em_tensor_release(rc);
  em_tensor_release(none), em_tensor_release(rn), em_tensor_release(mf), em_tensor_release(m2);
}

/* ---- nonzero / one_hot ------------------------------------------------------------------------ */

EM_TEST(nonzero_values) {
  em_tensor *a = mk(EM_INT64, EM_DIMS(2, 2), F64(0, 1, 2, 0));
  em_tensor *r = em_tensor_nonzero(a);
  ASSERT_SHAPE(r, 2, 2);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 1, 0}), 0, 0);
  em_tensor *s3 = em_tensor_scalar(em_scalar_int(3), EM_INT64);
  em_tensor *s0 = em_tensor_scalar(em_scalar_int(0), EM_INT64);
  em_tensor *r3 = em_tensor_nonzero(s3), *r0 = em_tensor_nonzero(s0);
  ASSERT_SHAPE(r3, 1, 0);
  ASSERT_SHAPE(r0, 0, 0);
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(3), F64(NAN, 0, -0.0));
  em_tensor *rf = em_tensor_nonzero(f);
  ASSERT_SHAPE(rf, 1, 1);
  ASSERT_TENSOR_CLOSE(rf, ((double[]){0}), 0, 0);
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *rz = em_tensor_nonzero(z);
  ASSERT_SHAPE(rz, 0, 2);
  /* 3-D, non-contiguous, several dtypes, against a reference */
  em_dtype dts[] = {EM_FLOAT16, EM_BOOL, EM_UINT8, EM_BFLOAT16, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *ri = rand_idx(EM_DIMS(3, 4, 5), 0, 3, (uint32_t)(k + 1));
    em_tensor *rv = em_tensor_to_dtype(ri, dts[k]);
    em_tensor *p = em_tensor_permute(rv, EM_DIMS(2, 0, 1)); /* [5, 3, 4] */
    em_tensor *nz = em_tensor_nonzero(p);
    ASSERT_NOTNULL(nz);
    double e[60 * 3];
    int n = 0;
    int64_t c[3] = {0};
    for (int64_t i = 0; i < 60; i++) {
      if (em_test_get(p, i) != 0)
        for (int d = 0; d < 3; d++) e[n++] = (double)c[d];
      next(3, p->shape, c);
    }
    ASSERT_EQ(nz->shape[1], 3);
    ASSERT_TENSOR_CLOSE_N(nz, e, n, 0, 0);
    em_tensor_release(ri), em_tensor_release(rv), em_tensor_release(p), em_tensor_release(nz);
  }
  em_tensor_release(a), em_tensor_release(r), em_tensor_release(s3), em_tensor_release(s0);
  em_tensor_release(r3), em_tensor_release(r0), em_tensor_release(f), em_tensor_release(rf);
  em_tensor_release(z), em_tensor_release(rz);
}

/* Long rows and many rows: crosses the kernel's internal chunks. */
EM_TEST(nonzero_large_reference) {
  em_tensor *ri = rand_idx(EM_DIMS(29, 37, 3), 0, 4, 77);
  em_tensor *p = em_tensor_permute(ri, EM_DIMS(1, 0, 2)); /* [37, 29, 3] */
  em_tensor *nz = em_tensor_nonzero(p);
  ASSERT_NOTNULL(nz);
  double *e = malloc(sizeof(double) * 37 * 29 * 3 * 3);
  int64_t n = 0, c[3] = {0};
  for (int64_t i = 0; i < p->numel; i++) {
    if (em_test_get(p, i) != 0)
      for (int d = 0; d < 3; d++) e[n++] = (double)c[d];
    next(3, p->shape, c);
  }
  ASSERT_TENSOR_CLOSE_N(nz, e, n, 0, 0);
  em_tensor *w = rand_idx(EM_DIMS(5000), 0, 2, 78); /* one long row */
  em_tensor *nw = em_tensor_nonzero(w);
  n = 0;
  for (int64_t i = 0; i < 5000; i++)
    if (em_test_get(w, i) != 0) e[n++] = (double)i;
  ASSERT_SHAPE(nw, n, 1);
  ASSERT_TENSOR_CLOSE_N(nw, e, n, 0, 0);
  free(e);
  em_tensor_release(ri), em_tensor_release(p), em_tensor_release(nz), em_tensor_release(w);
  em_tensor_release(nw);
}

EM_TEST(one_hot_values_and_errors) {
  em_tensor *a = mki(EM_DIMS(3), I64(0, 2, 1));
  em_tensor *r = em_tensor_one_hot(a, -1);
  ASSERT_SHAPE(r, 3, 3);
  ASSERT_EQ(r->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r, ((double[]){1, 0, 0, 0, 0, 1, 0, 1, 0}), 0, 0);
  em_tensor *r5 = em_tensor_one_hot(a, 5);
  ASSERT_SHAPE(r5, 3, 5);
  ASSERT_TENSOR_CLOSE(r5, ((double[]){1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}), 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_int(2), EM_INT64);
  em_tensor *rs = em_tensor_one_hot(s, 3);
  ASSERT_SHAPE(rs, 3);
  ASSERT_TENSOR_CLOSE(rs, ((double[]){0, 0, 1}), 0, 0);
  em_tensor *e = em_tensor_empty(EM_DIMS(0), EM_INT64);
  em_tensor *re = em_tensor_one_hot(e, 3);
  ASSERT_SHAPE(re, 0, 3);
  em_tensor *b2 = mki(EM_DIMS(2, 3), I64(1, 0, 1, 3, 3, 0));
  em_tensor *bt = em_tensor_t(b2); /* [3, 2]: [[1, 3], [0, 3], [1, 0]] */
  em_tensor *rb = em_tensor_one_hot(bt, -1);
  ASSERT_SHAPE(rb, 3, 2, 4);
  ASSERT_TENSOR_CLOSE(rb, ((double[]){0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0,
                                      0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0}), 0, 0);
  em_tensor *neg = mki(EM_DIMS(3), I64(0, -2, 1));
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(1), F64(1));
  ASSERT_NULL_ERR(em_tensor_one_hot(a, 2), EM_ERR_INDEX,
                  "one_hot: Class values must be smaller than num_classes (got 2, num_classes 2)");
  ASSERT_NULL_ERR(em_tensor_one_hot(neg, 3), EM_ERR_INDEX,
                  "one_hot: Class values must be non-negative (got -2)");
  ASSERT_NULL_ERR(em_tensor_one_hot(neg, -1), EM_ERR_INDEX, "Class values must be non-negative");
  ASSERT_NULL_ERR(em_tensor_one_hot(i32, -1), EM_ERR_DTYPE,
                  "one_hot is only applicable to index tensor (int64), got int32");
  ASSERT_NULL_ERR(em_tensor_one_hot(e, -1), EM_ERR_INVALID,
                  "Can not infer total number of classes from empty tensor.");
  ASSERT_NULL_ERR(em_tensor_one_hot(a, -2), EM_ERR_INVALID, "num_classes must be -1 or non-negative");
  em_tensor_release(a), em_tensor_release(r), em_tensor_release(r5), em_tensor_release(s);
  em_tensor_release(rs), em_tensor_release(e), em_tensor_release(re), em_tensor_release(b2);
  em_tensor_release(bt), em_tensor_release(rb), em_tensor_release(neg), em_tensor_release(i32);
}

/* ---- advanced indexing ------------------------------------------------------------------------- */

/* x = arange(24).reshape(2, 3, 4) */
static em_tensor *x234(em_dtype dt) { return seq(dt, EM_DIMS(2, 3, 4), 1, 0); }

EM_TEST(index_single_int_tensor) {
  em_tensor *x = x234(EM_FLOAT32);
  em_tensor *i = mki(EM_DIMS(3), I64(1, 0, 1));
  em_tensor *r = em_tensor_index(x, 1, &i);
  ASSERT_SHAPE(r, 3, 3, 4);
  for (int64_t k = 0; k < r->numel; k++) {
    int64_t b = k / 12, rest = k % 12, src = (b == 1 ? 0 : 1) * 12 + rest;
    ASSERT_CLOSE(em_test_get(r, k), (double)src, 0, 0);
  }
  em_tensor *neg = mki(EM_DIMS(2), I64(1, -2)); /* wraps */
  em_tensor *rn = em_tensor_index(x, 1, &neg);
  ASSERT_SHAPE(rn, 2, 3, 4);
  ASSERT_CLOSE(em_test_get(rn, 0), 12, 0, 0);
  ASSERT_CLOSE(em_test_get(rn, 12), 0, 0, 0);
  em_tensor *i3 = mki(EM_DIMS(1), I64(3));
  em_tensor *r1 = em_tensor_index(x, 2, (em_tensor *[]){NULL, i3}); /* x[:, [3]] fails, size 3 */
  ASSERT_TRUE(r1 == NULL);
  em_tensor *r2 = em_tensor_index(x, 3, (em_tensor *[]){NULL, NULL, i3}); /* x[:, :, [3]] */
  ASSERT_SHAPE(r2, 2, 3, 1);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){3, 7, 11, 15, 19, 23}), 0, 0);
  em_tensor *i32 = mk(EM_INT32, EM_DIMS(2), F64(1, 0));
  em_tensor *r3 = em_tensor_index(x, 2, (em_tensor *[]){NULL, i32});
  ASSERT_SHAPE(r3, 2, 2, 4);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){4, 5, 6, 7, 0, 1, 2, 3, 16, 17, 18, 19, 12, 13, 14, 15}), 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_int(1), EM_INT64);
  em_tensor *r4 = em_tensor_index(x, 1, &s); /* 0-dim index: dim dropped */
  ASSERT_SHAPE(r4, 3, 4);
  ASSERT_CLOSE(em_test_get(r4, 0), 12, 0, 0);
  em_tensor *ie = em_tensor_empty(EM_DIMS(0), EM_INT64);
  em_tensor *r5 = em_tensor_index(x, 1, &ie);
  ASSERT_SHAPE(r5, 0, 3, 4);
  em_tensor *r6 = em_tensor_index(x, 0, NULL); /* no index: a copy */
  ASSERT_SHAPE(r6, 2, 3, 4);
  ASSERT_TRUE(r6->storage != x->storage);
  ASSERT_CLOSE(em_test_get(r6, 23), 23, 0, 0);
  em_tensor_release(x), em_tensor_release(i), em_tensor_release(r), em_tensor_release(neg);
  em_tensor_release(rn), em_tensor_release(i3), em_tensor_release(r2), em_tensor_release(i32);
  em_tensor_release(r3), em_tensor_release(s), em_tensor_release(r4), em_tensor_release(ie);
  em_tensor_release(r5), em_tensor_release(r6);
}

EM_TEST(index_broadcast_and_separated) {
  em_tensor *x = x234(EM_FLOAT32);
  em_tensor *c = mki(EM_DIMS(2, 1), I64(0, 1));
  em_tensor *r02 = mki(EM_DIMS(2), I64(0, 2));
  em_tensor *r = em_tensor_index(x, 2, (em_tensor *[]){c, r02}); /* x[[[0],[1]], [0,2]] */
  ASSERT_SHAPE(r, 2, 2, 4);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23}), 0, 0);
  em_tensor *i01 = mki(EM_DIMS(2), I64(0, 1));
  em_tensor *sep = em_tensor_index(x, 3, (em_tensor *[]){i01, NULL, r02}); /* x[[0,1], :, [0,2]] */
  ASSERT_SHAPE(sep, 2, 3);
  ASSERT_TENSOR_CLOSE(sep, ((double[]){0, 4, 8, 14, 18, 22}), 0, 0);
  em_tensor *adj = em_tensor_index(x, 3, (em_tensor *[]){NULL, i01, r02}); /* x[:, [0,1], [0,2]] */
  ASSERT_SHAPE(adj, 2, 2);
  ASSERT_TENSOR_CLOSE(adj, ((double[]){0, 6, 12, 18}), 0, 0);
  em_tensor *row = mki(EM_DIMS(1, 2), I64(0, 1));
  em_tensor *mid = em_tensor_index(x, 3, (em_tensor *[]){NULL, row, NULL}); /* x[:, [[0,1]], :] */
  ASSERT_SHAPE(mid, 2, 1, 2, 4);
  ASSERT_TENSOR_CLOSE(mid, ((double[]){0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19}), 0, 0);
  /* two 0-dim indices separated by a slice: result dims go to the front */
  em_tensor *s1 = em_tensor_scalar(em_scalar_int(1), EM_INT64);
  em_tensor *s2 = em_tensor_scalar(em_scalar_int(2), EM_INT64);
  em_tensor *ss = em_tensor_index(x, 3, (em_tensor *[]){s1, NULL, s2});
  ASSERT_SHAPE(ss, 3);
  ASSERT_TENSOR_CLOSE(ss, ((double[]){14, 18, 22}), 0, 0);
  /* separated with a 2-D broadcast shape: [2, 2] + [3] */
  em_tensor *b2 = mki(EM_DIMS(2, 2), I64(1, 0, 0, 1));
  em_tensor *sep2 = em_tensor_index(x, 3, (em_tensor *[]){b2, NULL, c}); /* c: [[0],[1]] */
  ASSERT_SHAPE(sep2, 2, 2, 3);
  ASSERT_TENSOR_CLOSE(sep2, ((double[]){12, 16, 20, 0, 4, 8, 1, 5, 9, 13, 17, 21}), 0, 0);
  em_tensor *i012 = mki(EM_DIMS(3), I64(0, 2, 1));
  ASSERT_NULL_ERR(em_tensor_index(x, 2, ((em_tensor *[]){i01, i012})), EM_ERR_INDEX,
                  "index: shape mismatch: indexing tensors could not be broadcast together with "
                  "shapes [2], [3]");
  em_tensor_release(x), em_tensor_release(c), em_tensor_release(r02), em_tensor_release(r);
  em_tensor_release(i01), em_tensor_release(sep), em_tensor_release(adj), em_tensor_release(row);
  em_tensor_release(mid), em_tensor_release(s1), em_tensor_release(s2), em_tensor_release(ss);
  em_tensor_release(b2), em_tensor_release(sep2), em_tensor_release(i012);
}

EM_TEST(index_bool_masks) {
  em_tensor *x = x234(EM_FLOAT32);
  em_tensor *m0 = mk(EM_BOOL, EM_DIMS(2), F64(1, 0));
  em_tensor *r0 = em_tensor_index(x, 1, &m0);
  ASSERT_SHAPE(r0, 1, 3, 4);
  ASSERT_CLOSE(em_test_get(r0, 11), 11, 0, 0);
  em_tensor *m1 = mk(EM_BOOL, EM_DIMS(3), F64(1, 0, 1));
  em_tensor *r1 = em_tensor_index(x, 2, (em_tensor *[]){NULL, m1}); /* mask + slice */
  ASSERT_SHAPE(r1, 2, 2, 4);
  ASSERT_TENSOR_CLOSE(r1, ((double[]){0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23}), 0, 0);
  em_tensor *m2 = mk(EM_BOOL, EM_DIMS(2, 3), F64(1, 0, 1, 0, 0, 1));
  em_tensor *r2 = em_tensor_index(x, 1, &m2);
  ASSERT_SHAPE(r2, 3, 4);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){0, 1, 2, 3, 8, 9, 10, 11, 20, 21, 22, 23}), 0, 0);
  em_tensor *i123 = mki(EM_DIMS(3), I64(1, 2, 3));
  em_tensor *r3 = em_tensor_index(x, 2, (em_tensor *[]){m2, i123}); /* 2-D mask + int */
  ASSERT_SHAPE(r3, 3);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){1, 10, 23}), 0, 0);
  em_tensor *tt = mk(EM_BOOL, EM_DIMS(2), F64(1, 1));
  em_tensor *i03 = mki(EM_DIMS(2), I64(0, 3));
  em_tensor *r4 = em_tensor_index(x, 3, (em_tensor *[]){tt, NULL, i03}); /* mask, slice, int */
  ASSERT_SHAPE(r4, 2, 3);
  ASSERT_TENSOR_CLOSE(r4, ((double[]){0, 4, 8, 15, 19, 23}), 0, 0);
  em_tensor *all = em_tensor_ones(EM_DIMS(2, 3, 4), EM_BOOL);
  em_tensor *r5 = em_tensor_index(x, 1, &all);
  ASSERT_SHAPE(r5, 24);
  em_tensor *u8 = mk(EM_UINT8, EM_DIMS(2), F64(0, 1));
  em_tensor *r6 = em_tensor_index(x, 1, &u8);
  ASSERT_SHAPE(r6, 1, 3, 4);
  ASSERT_CLOSE(em_test_get(r6, 0), 12, 0, 0);
  /* 0-dim masks add a dim of size 1 (true) or 0 (false) */
  em_tensor *bt = em_tensor_scalar(em_scalar_bool(true), EM_BOOL);
  em_tensor *bf = em_tensor_scalar(em_scalar_bool(false), EM_BOOL);
  em_tensor *r7 = em_tensor_index(x, 1, &bt);
  ASSERT_SHAPE(r7, 1, 2, 3, 4);
  em_tensor *r8 = em_tensor_index(x, 1, &bf);
  ASSERT_SHAPE(r8, 0, 2, 3, 4);
  em_tensor *r9 = em_tensor_index(x, 2, (em_tensor *[]){NULL, bt});
  ASSERT_SHAPE(r9, 2, 1, 3, 4);
  em_tensor *i01 = mki(EM_DIMS(2), I64(0, 1));
  em_tensor *r10 = em_tensor_index(x, 3, (em_tensor *[]){i01, NULL, bt}); /* separated */
  ASSERT_SHAPE(r10, 2, 3, 4);
  ASSERT_CLOSE(em_test_get(r10, 12), 12, 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_float(5), EM_FLOAT32);
  em_tensor *r11 = em_tensor_index(s, 1, &bt);
  ASSERT_SHAPE(r11, 1);
  ASSERT_TENSOR_CLOSE(r11, ((double[]){5}), 0, 0);
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &m1), EM_ERR_INDEX,
                  "The shape of the mask [3] at index 0 does not match the shape of the indexed "
                  "tensor [2, 3, 4] at index 0");
  em_tensor *bad = em_tensor_ones(EM_DIMS(2, 3, 5), EM_BOOL);
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &bad), EM_ERR_INDEX,
                  "The shape of the mask [2, 3, 5] at index 2 does not match the shape of the "
                  "indexed tensor [2, 3, 4] at index 2");
  em_tensor_release(x), em_tensor_release(m0), em_tensor_release(r0), em_tensor_release(m1);
  em_tensor_release(r1), em_tensor_release(m2), em_tensor_release(r2), em_tensor_release(i123);
  em_tensor_release(r3), em_tensor_release(tt), em_tensor_release(i03), em_tensor_release(r4);
  em_tensor_release(all), em_tensor_release(r5), em_tensor_release(u8), em_tensor_release(r6);
  em_tensor_release(bt), em_tensor_release(bf), em_tensor_release(r7), em_tensor_release(r8);
  em_tensor_release(r9), em_tensor_release(r10), em_tensor_release(s), em_tensor_release(r11);
  em_tensor_release(bad), em_tensor_release(i01);
}

/* Non-contiguous self and indices, dtypes, against a reference loop for
 * x[i0, :, i2] (separated) and x[:, i1, i2] (adjacent). */
EM_TEST(index_reference_noncontiguous) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_BOOL, EM_INT64, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *b = seq(dts[k], EM_DIMS(6, 5, 4), 1, 0);
    em_tensor *x = em_tensor_permute(b, EM_DIMS(1, 2, 0)); /* [5, 4, 6] */
    em_tensor *ia = rand_idx(EM_DIMS(3, 2), -5, 5, (uint32_t)k);  /* for dim 0, negative too */
    em_tensor *ibr = rand_idx(EM_DIMS(2, 3), 0, 6, (uint32_t)k + 9);
    em_tensor *ib = em_tensor_t(ibr); /* [3, 2] non-contiguous, for dim 2 */
    em_tensor *r = em_tensor_index(x, 3, (em_tensor *[]){ia, NULL, ib});
    ASSERT_SHAPE(r, 3, 2, 4);
    int64_t c[3] = {0};
    for (int64_t i = 0; i < r->numel; i++) {
      int64_t bc[2] = {c[0], c[1]};
      int64_t s[3] = {at_i(ia, bc), c[2], at_i(ib, bc)};
      if (s[0] < 0) s[0] += 5;
      ASSERT_CLOSE(em_test_get(r, i), at(x, s), 0, 0);
      next(3, r->shape, c);
    }
    em_tensor *ic = rand_idx(EM_DIMS(3, 1), 0, 4, (uint32_t)k + 3); /* broadcast with ib's [3, 2] */
    em_tensor *r2 = em_tensor_index(x, 3, (em_tensor *[]){NULL, ic, ib});
    ASSERT_SHAPE(r2, 5, 3, 2);
    memset(c, 0, sizeof c);
    for (int64_t i = 0; i < r2->numel; i++) {
      int64_t bc[2] = {c[1], c[2]}, bc0[2] = {c[1], 0};
      int64_t s[3] = {c[0], at_i(ic, bc0), at_i(ib, bc)};
      ASSERT_CLOSE(em_test_get(r2, i), at(x, s), 0, 0);
      next(3, r2->shape, c);
    }
    em_tensor_release(b), em_tensor_release(x), em_tensor_release(ia), em_tensor_release(ibr);
    em_tensor_release(ib), em_tensor_release(r), em_tensor_release(ic), em_tensor_release(r2);
  }
}

/* Masks over non-contiguous tensors (offsets from the strides), big
 * enough to cross the mask kernel's chunks, as index and as index_put_. */
EM_TEST(index_mask_noncontiguous_reference) {
  em_tensor *b = seq(EM_FLOAT32, EM_DIMS(40, 30, 3), 1, 0);
  em_tensor *x = em_tensor_permute(b, EM_DIMS(2, 1, 0)); /* [3, 30, 40] */
  em_tensor *mi = rand_idx(EM_DIMS(40, 30), 0, 2, 31);
  em_tensor *mb = em_tensor_to_dtype(mi, EM_BOOL);
  em_tensor *mask = em_tensor_t(mb); /* [30, 40], non-contiguous */
  em_tensor *r = em_tensor_index(x, 2, (em_tensor *[]){NULL, mask}); /* x[:, mask] */
  ASSERT_NOTNULL(r);
  int64_t cnt = 0;
  for (int64_t i = 0; i < 1200; i++) cnt += em_test_get(mask, i) != 0;
  ASSERT_SHAPE(r, 3, cnt);
  double *e = malloc(sizeof(double) * 3 * 1200);
  int64_t n = 0;
  for (int64_t a = 0; a < 3; a++)
    for (int64_t i = 0; i < 1200; i++)
      if (em_test_get(mask, i) != 0) e[n++] = at(x, (int64_t[]){a, i / 40, i % 40});
  ASSERT_TENSOR_CLOSE_N(r, e, n, 0, 0);
  /* put through the same mask into the permuted view, accumulate twice */
  em_tensor *ones = em_tensor_ones(EM_DIMS(3, cnt), EM_FLOAT32);
  ASSERT_OK(em_tensor_index_put_(x, 2, ((em_tensor *[]){NULL, mask}), ones, true));
  ASSERT_OK(em_tensor_index_put_(x, 2, ((em_tensor *[]){NULL, mask}), ones, true));
  for (int64_t a = 0; a < 3; a++)
    for (int64_t i = 0; i < 1200; i++) {
      int64_t c[3] = {a, i / 40, i % 40};
      double orig = (double)((c[2] * 30 + c[1]) * 3 + c[0]);
      ASSERT_CLOSE(at(x, c), orig + (em_test_get(mask, i) != 0 ? 2 : 0), 0, 0);
    }
  /* a mask's count broadcasts with int indices like any index */
  em_tensor *m3 = mk(EM_BOOL, EM_DIMS(3), F64(1, 1, 0));
  em_tensor *i3 = mki(EM_DIMS(3), I64(0, 1, 2));
  ASSERT_NULL_ERR(em_tensor_index(x, 2, ((em_tensor *[]){m3, i3})), EM_ERR_INDEX,
                  "shape mismatch: indexing tensors could not be broadcast together with shapes "
                  "[2], [3]");
  free(e);
  em_tensor_release(b), em_tensor_release(x), em_tensor_release(mi), em_tensor_release(mb);
  em_tensor_release(mask), em_tensor_release(r), em_tensor_release(ones), em_tensor_release(m3);
  em_tensor_release(i3);
}

EM_TEST(index_errors) {
  em_tensor *x = x234(EM_FLOAT32);
  em_tensor *i2 = mki(EM_DIMS(1), I64(2));
  em_tensor *im3 = mki(EM_DIMS(1), I64(-3));
  em_tensor *i3 = mki(EM_DIMS(1), I64(3));
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(1), F64(0));
  em_tensor *i16 = mk(EM_INT16, EM_DIMS(1), F64(0));
  em_tensor *i0 = mki(EM_DIMS(1), I64(0));
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &i2), EM_ERR_INDEX,
                  "index: index 2 is out of bounds for dimension 0 with size 2");
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &im3), EM_ERR_INDEX,
                  "index: index -3 is out of bounds for dimension 0 with size 2");
  ASSERT_NULL_ERR(em_tensor_index(x, 2, ((em_tensor *[]){NULL, i3})), EM_ERR_INDEX,
                  "index 3 is out of bounds for dimension 1 with size 3");
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &f), EM_ERR_DTYPE,
                  "index: tensors used as indices must be long, int, byte or bool tensors (got "
                  "float32 at position 0)");
  ASSERT_NULL_ERR(em_tensor_index(x, 1, &i16), EM_ERR_DTYPE, "got int16");
  ASSERT_NULL_ERR(em_tensor_index(x, 4, ((em_tensor *[]){NULL, NULL, NULL, i0})), EM_ERR_INDEX,
                  "too many indices for tensor of dimension 3");
  ASSERT_NULL_ERR(em_tensor_index(z, 1, &i0), EM_ERR_INDEX,
                  "index 0 is out of bounds for dimension 0 with size 0");
  em_tensor_release(x), em_tensor_release(i2), em_tensor_release(im3), em_tensor_release(i3);
  em_tensor_release(f), em_tensor_release(i16), em_tensor_release(i0), em_tensor_release(z);
}

/* ---- index_put_ ------------------------------------------------------------------------------------ */

EM_TEST(index_put_values) {
  em_tensor *t = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *i = mki(EM_DIMS(3), I64(0, 2, 0));
  em_tensor *v = mk(EM_FLOAT32, EM_DIMS(3), F64(1, 2, 3));
  ASSERT_OK(em_tensor_index_put_(t, 1, &i, v, true));
  ASSERT_TENSOR_CLOSE(t, ((double[]){4, 0, 2}), 0, 0);
  em_tensor *t2 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  ASSERT_OK(em_tensor_index_put_(t2, 1, &i, v, false)); /* duplicates: the last one wins */
  ASSERT_TENSOR_CLOSE(t2, ((double[]){3, 0, 2}), 0, 0);
  em_tensor *t3 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *in = mki(EM_DIMS(3), I64(0, -1, 0));
  em_tensor *five = em_tensor_scalar(em_scalar_float(5), EM_FLOAT32);
  uint64_t ver = em_tensor_version(t3);
  ASSERT_OK(em_tensor_index_put_(t3, 1, &in, five, true));
  ASSERT_TENSOR_CLOSE(t3, ((double[]){10, 0, 5}), 0, 0);
  ASSERT_TRUE(em_tensor_version(t3) > ver);
  /* rows, broadcast values */
  em_tensor *m = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *i010 = mki(EM_DIMS(3), I64(0, 1, 0));
  ASSERT_OK(em_tensor_index_put_(m, 1, &i010, v, true));
  ASSERT_TENSOR_CLOSE(m, ((double[]){2, 4, 6, 1, 2, 3}), 0, 0);
  em_tensor *m2 = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *i020 = mki(EM_DIMS(3), I64(0, 2, 0));
  em_tensor *col = mk(EM_FLOAT32, EM_DIMS(2, 1), F64(1, 2));
  ASSERT_OK(em_tensor_index_put_(m2, 2, ((em_tensor *[]){NULL, i020}), col, true));
  ASSERT_TENSOR_CLOSE(m2, ((double[]){2, 0, 1, 4, 0, 2}), 0, 0);
  /* masks */
  em_tensor *m3 = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  em_tensor *mask = mk(EM_BOOL, EM_DIMS(2, 3), F64(1, 0, 1, 0, 0, 1));
  ASSERT_OK(em_tensor_index_put_(m3, 1, &mask, v, true));
  ASSERT_TENSOR_CLOSE(m3, ((double[]){1, 0, 2, 0, 0, 3}), 0, 0);
  em_tensor *seven = em_tensor_scalar(em_scalar_float(7), EM_FLOAT32);
  ASSERT_OK(em_tensor_index_put_(m3, 1, &mask, seven, false));
  ASSERT_TENSOR_CLOSE(m3, ((double[]){7, 0, 7, 0, 0, 7}), 0, 0);
  /* a wrapped number converts to the dtype */
  em_tensor *w = em_tensor_wrapped_scalar(em_scalar_float(2.5));
  em_tensor *ml = em_tensor_zeros(EM_DIMS(2, 3), EM_INT64);
  ASSERT_OK(em_tensor_index_put_(ml, 1, &mask, w, false));
  ASSERT_TENSOR_CLOSE(ml, ((double[]){2, 0, 2, 0, 0, 2}), 0, 0);
  /* separated advanced indices: values [2, 3] */
  em_tensor *x = em_tensor_zeros(EM_DIMS(2, 3, 4), EM_FLOAT32);
  em_tensor *i01 = mki(EM_DIMS(2), I64(0, 1)), *i03 = mki(EM_DIMS(2), I64(0, 3));
  em_tensor *v23 = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 1);
  ASSERT_OK(em_tensor_index_put_(x, 3, ((em_tensor *[]){i01, NULL, i03}), v23, false));
  ASSERT_CLOSE(em_test_get(x, 0), 1, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 4), 2, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 8), 3, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 12 + 3), 4, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 12 + 7), 5, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 12 + 11), 6, 0, 0);
  ASSERT_CLOSE(em_test_get(x, 1), 0, 0, 0);
  /* no advanced index: the whole tensor */
  em_tensor *y = em_tensor_zeros(EM_DIMS(2, 2), EM_FLOAT32);
  ASSERT_OK(em_tensor_index_put_(y, 0, NULL, seven, true));
  ASSERT_OK(em_tensor_index_put_(y, 1, (em_tensor *[]){NULL}, seven, true));
  ASSERT_TENSOR_CLOSE(y, ((double[]){14, 14, 14, 14}), 0, 0);
  em_tensor_release(t), em_tensor_release(i), em_tensor_release(v), em_tensor_release(t2);
  em_tensor_release(t3), em_tensor_release(in), em_tensor_release(five), em_tensor_release(m);
  em_tensor_release(i010), em_tensor_release(m2), em_tensor_release(i020), em_tensor_release(col);
  em_tensor_release(m3), em_tensor_release(mask), em_tensor_release(seven), em_tensor_release(w);
  em_tensor_release(ml), em_tensor_release(x), em_tensor_release(i01), em_tensor_release(i03);
  em_tensor_release(v23), em_tensor_release(y);
}

EM_TEST(index_put_noncontiguous_dtypes_aliasing) {
  /* into a transposed view: writes reach the base */
  em_tensor *base = em_tensor_zeros(EM_DIMS(3, 2), EM_FLOAT64);
  em_tensor *v = em_tensor_t(base); /* [2, 3] */
  em_tensor *i = mki(EM_DIMS(2), I64(2, 0));
  em_tensor *vals = mk(EM_FLOAT64, EM_DIMS(2), F64(8, 9));
  ASSERT_OK(em_tensor_index_put_(v, 2, ((em_tensor *[]){NULL, i}), vals, false));
  ASSERT_TENSOR_CLOSE(v, ((double[]){9, 0, 8, 9, 0, 8}), 0, 0);
  ASSERT_TENSOR_CLOSE(base, ((double[]){9, 9, 0, 0, 8, 8}), 0, 0);
  /* int8 accumulate wraps; bool accumulate is or */
  em_tensor *c8 = mk(EM_INT8, EM_DIMS(2), F64(100, 0));
  em_tensor *i00 = mki(EM_DIMS(2), I64(0, 0));
  em_tensor *v8 = mk(EM_INT8, EM_DIMS(2), F64(20, 20));
  ASSERT_OK(em_tensor_index_put_(c8, 1, &i00, v8, true));
  ASSERT_TENSOR_CLOSE(c8, ((double[]){-116, 0}), 0, 0);
  em_tensor *cb = mk(EM_BOOL, EM_DIMS(2, 3), F64(0, 0, 0, 0, 0, 0));
  em_tensor *vb = mk(EM_BOOL, EM_DIMS(2, 3), F64(1, 0, 1, 0, 0, 0));
  ASSERT_OK(em_tensor_index_put_(cb, 1, &i00, vb, true));
  ASSERT_TENSOR_CLOSE(cb, ((double[]){1, 0, 1, 0, 0, 0}), 0, 0);
  em_tensor *ch = em_tensor_zeros(EM_DIMS(4), EM_FLOAT16);
  em_tensor *vh = mk(EM_FLOAT16, EM_DIMS(2), F64(0.5, 0.25));
  ASSERT_OK(em_tensor_index_put_(ch, 1, &i00, vh, true));
  ASSERT_TENSOR_CLOSE(ch, ((double[]){0.75, 0, 0, 0}), 0, 0);
  /* values read from the tensor being written */
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(4), 1, 1); /* [1, 2, 3, 4] */
  em_tensor *rev = mki(EM_DIMS(4), I64(3, 2, 1, 0));
  ASSERT_OK(em_tensor_index_put_(a, 1, &rev, a, false));
  ASSERT_TENSOR_CLOSE(a, ((double[]){4, 3, 2, 1}), 0, 0);
  em_tensor_release(base), em_tensor_release(v), em_tensor_release(i), em_tensor_release(vals);
  em_tensor_release(c8), em_tensor_release(i00), em_tensor_release(v8), em_tensor_release(cb);
  em_tensor_release(vb), em_tensor_release(ch), em_tensor_release(vh), em_tensor_release(a);
  em_tensor_release(rev);
}

/* Accumulate with many duplicates, rows (threaded split-run path) and
 * elements; deterministic and exact against a reference. */
EM_TEST(index_put_accumulate_large) {
  em_tensor *t = em_tensor_zeros(EM_DIMS(16, 4096), EM_FLOAT32);
  em_tensor *i = rand_idx(EM_DIMS(64), 0, 16, 21);
  em_tensor *vi = rand_idx(EM_DIMS(64, 4096), -9, 9, 22);
  em_tensor *vf = em_tensor_to_dtype(vi, EM_FLOAT32);
  ASSERT_OK(em_tensor_index_put_(t, 1, &i, vf, true));
  double *e = calloc(16 * 4096, sizeof(double));
  const int64_t *ip = em_tensor_data(i), *vp = em_tensor_data(vi);
  for (int64_t b = 0; b < 64; b++)
    for (int64_t j = 0; j < 4096; j++) e[ip[b] * 4096 + j] += (double)vp[b * 4096 + j];
  ASSERT_TENSOR_CLOSE_N(t, e, 16 * 4096, 0, 0);
  /* element-wise: two index tensors, 200k duplicated positions */
  em_tensor *u = em_tensor_zeros(EM_DIMS(30, 40), EM_FLOAT64);
  em_tensor *r = rand_idx(EM_DIMS(200000), 0, 30, 23);
  em_tensor *c = rand_idx(EM_DIMS(200000), -40, 40, 24);
  em_tensor *one = em_tensor_scalar(em_scalar_float(1), EM_FLOAT64);
  ASSERT_OK(em_tensor_index_put_(u, 2, ((em_tensor *[]){r, c}), one, true));
  double *e2 = calloc(30 * 40, sizeof(double));
  const int64_t *rp = em_tensor_data(r), *cp = em_tensor_data(c);
  for (int64_t k = 0; k < 200000; k++) e2[rp[k] * 40 + (cp[k] < 0 ? cp[k] + 40 : cp[k])] += 1;
  ASSERT_TENSOR_CLOSE_N(u, e2, 30 * 40, 0, 0);
  free(e), free(e2);
  em_tensor_release(t), em_tensor_release(i), em_tensor_release(vi), em_tensor_release(vf);
  em_tensor_release(u), em_tensor_release(r), em_tensor_release(c), em_tensor_release(one);
}

EM_TEST(index_put_errors) {
  em_tensor *t = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *i03 = mki(EM_DIMS(2), I64(0, 3));
  em_tensor *i01 = mki(EM_DIMS(2), I64(0, 1));
  em_tensor *five = em_tensor_scalar(em_scalar_float(5), EM_FLOAT32);
  em_tensor *v3 = mk(EM_FLOAT32, EM_DIMS(3), F64(5, 6, 7));
  em_tensor *vl = mk(EM_INT64, EM_DIMS(2), F64(5, 6));
  em_tensor *vd = mk(EM_FLOAT64, EM_DIMS(2), F64(5, 6));
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(1), F64(0));
  ASSERT_ERR(em_tensor_index_put_(t, 1, &i03, five, true), EM_ERR_INDEX,
             "index_put_: index 3 is out of bounds for dimension 0 with size 3");
  ASSERT_ERR(em_tensor_index_put_(t, 1, &i01, v3, false), EM_ERR_SHAPE,
             "shape mismatch: value tensor of shape [3] cannot be broadcast to indexing result "
             "of shape [2]");
  ASSERT_ERR(em_tensor_index_put_(t, 1, &i01, vl, false), EM_ERR_DTYPE,
             "Index put requires the source and destination dtypes match, got float32 for the "
             "destination and int64 for the source.");
  ASSERT_ERR(em_tensor_index_put_(t, 1, &i01, vd, true), EM_ERR_DTYPE, "got float32 for the destination and float64");
  ASSERT_ERR(em_tensor_index_put_(t, 1, &f, five, true), EM_ERR_DTYPE,
             "tensors used as indices must be long, int, byte or bool tensors");
  ASSERT_ERR(em_tensor_index_put_(t, 2, ((em_tensor *[]){i01, i01}), five, true), EM_ERR_INDEX,
             "too many indices for tensor of dimension 1");
  ASSERT_TENSOR_CLOSE(t, ((double[]){0, 0, 0}), 0, 0);
  em_tensor *row = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *ex = em_tensor_expand(row, EM_DIMS(2, 3));
  ASSERT_ERR(em_tensor_index_put_(ex, 1, &i01, five, false), EM_ERR_INVALID,
             "more than one element of the written-to tensor refers to a single memory location");
  em_tensor_release(t), em_tensor_release(i03), em_tensor_release(i01), em_tensor_release(five);
  em_tensor_release(v3), em_tensor_release(vl), em_tensor_release(vd), em_tensor_release(f);
  em_tensor_release(row), em_tensor_release(ex);
}

EM_TEST_MAIN()
