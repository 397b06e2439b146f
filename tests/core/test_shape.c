/* cat, stack, flip, repeat, pad: hand-computed values and naive reference
 * loops (in double, through the tensors' strides) on contiguous and
 * non-contiguous inputs, several dtypes, zero-size inputs and errors. */
#include "core/core_impl.h"
#include "tests/harness.h"

/* A tensor of dtype dt holding v (row-major). */
static em_tensor *mk(em_dtype dt, int nd, const int64_t *shape, const double *v) {
  em_tensor *d = em_tensor_from_data(v, nd, shape, EM_FLOAT64);
  if (!d) return NULL;
  em_tensor *r = em_tensor_to_dtype(d, dt);
  em_tensor_release(d);
  return r;
}

/* Values f(i) = i * scale + shift (bool: i % 2) for i in row-major order. */
static em_tensor *seq(em_dtype dt, int nd, const int64_t *shape, double scale, double shift) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = dt == EM_BOOL ? (double)(i % 2) : i * scale + shift;
  em_tensor *t = mk(dt, nd, shape, v);
  free(v);
  return t;
}

/* Element at coordinates c of t, as double. */
static double at(em_tensor *t, const int64_t *c) {
  int64_t lin = 0;
  for (int d = 0; d < t->ndim; d++) lin = lin * t->shape[d] + c[d];
  return em_test_get(t, lin);
}

/* Row-major odometer: advances c over shape; false after the last. */
static bool next(int nd, const int64_t *shape, int64_t *c) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++c[d] < shape[d]) return true;
    c[d] = 0;
  }
  return false;
}

/* Expected values of cat(ts, dim) by a reference loop (legacy empty
 * tensors skipped). Returns a malloc'd array of out numel. */
static double *ref_cat(int n, em_tensor *const *ts, int dim, int nd, const int64_t *oshape) {
  int64_t numel = 1;
  for (int d = 0; d < nd; d++) numel *= oshape[d];
  double *e = malloc(sizeof(double) * (size_t)(numel ? numel : 1));
  int64_t c[EM_MAX_DIMS] = {0}, ci[EM_MAX_DIMS];
  for (int64_t i = 0; i < numel; i++) {
    int64_t pos = c[dim];
    for (int k = 0; k < n; k++) {
      if (ts[k]->ndim == 1 && ts[k]->shape[0] == 0) continue;
      if (pos < ts[k]->shape[dim]) {
        memcpy(ci, c, sizeof ci);
        ci[dim] = pos;
        e[i] = at(ts[k], ci);
        break;
      }
      pos -= ts[k]->shape[dim];
    }
    next(nd, oshape, c);
  }
  return e;
}

/* ---- cat -------------------------------------------------------------------------- */

EM_TEST(cat_basic_dims) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *b = seq(EM_FLOAT32, EM_DIMS(1, 3), 1, 10);
  em_tensor *c0 = em_tensor_cat(2, (em_tensor *[]){a, b}, 0);
  ASSERT_SHAPE(c0, 3, 3);
  ASSERT_TENSOR_CLOSE(c0, ((double[]){0, 1, 2, 3, 4, 5, 10, 11, 12}), 0, 0);
  em_tensor *bt = seq(EM_FLOAT32, EM_DIMS(2, 2), 1, 10);
  em_tensor *c1 = em_tensor_cat(3, (em_tensor *[]){a, bt, a}, -1);
  ASSERT_SHAPE(c1, 2, 8);
  ASSERT_TENSOR_CLOSE(c1, ((double[]){0, 1, 2, 10, 11, 0, 1, 2, 3, 4, 5, 12, 13, 3, 4, 5}), 0, 0);
  em_tensor *one = em_tensor_cat(1, &a, 1);
  ASSERT_TENSOR_CLOSE(one, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  ASSERT_TRUE(one->storage != a->storage);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(bt);
  em_tensor_release(c0), em_tensor_release(c1), em_tensor_release(one);
}

EM_TEST(cat_promotes_dtypes) {
  em_tensor *f = mk(EM_FLOAT32, EM_DIMS(2), (double[]){1.5, 2.5});
  em_tensor *i = mk(EM_INT32, EM_DIMS(2), (double[]){3, 4});
  em_tensor *b = mk(EM_BOOL, EM_DIMS(2), (double[]){1, 0});
  em_tensor *l = mk(EM_INT64, EM_DIMS(1), (double[]){7});
  em_tensor *h = mk(EM_FLOAT16, EM_DIMS(1), (double[]){2.5});
  em_tensor *u = mk(EM_UINT8, EM_DIMS(1), (double[]){200});
  em_tensor *i8 = mk(EM_INT8, EM_DIMS(1), (double[]){-3});
  em_tensor *r1 = em_tensor_cat(2, (em_tensor *[]){i, f}, 0);
  ASSERT_EQ(r1->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(r1, ((double[]){3, 4, 1.5, 2.5}), 0, 0);
  em_tensor *r2 = em_tensor_cat(2, (em_tensor *[]){b, l}, 0);
  ASSERT_EQ(r2->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){1, 0, 7}), 0, 0);
  em_tensor *r3 = em_tensor_cat(2, (em_tensor *[]){b, h}, 0);
  ASSERT_EQ(r3->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(r3, ((double[]){1, 0, 2.5}), 0, 0);
  em_tensor *r4 = em_tensor_cat(2, (em_tensor *[]){u, i8}, 0);
  ASSERT_EQ(r4->dtype, EM_INT16);
  ASSERT_TENSOR_CLOSE(r4, ((double[]){200, -3}), 0, 0);
  em_tensor *r5 = em_tensor_cat(2, (em_tensor *[]){b, b}, 0);
  ASSERT_EQ(r5->dtype, EM_BOOL);
  ASSERT_TENSOR_CLOSE(r5, ((double[]){1, 0, 1, 0}), 0, 0);
  em_tensor_release(f), em_tensor_release(i), em_tensor_release(b), em_tensor_release(l);
  em_tensor_release(h), em_tensor_release(u), em_tensor_release(i8);
  em_tensor_release(r1), em_tensor_release(r2), em_tensor_release(r3), em_tensor_release(r4);
  em_tensor_release(r5);
}

/* Non-contiguous, converted and contiguous inputs mixed, so the block
 * kernel runs on several separate runs of the output row. */
EM_TEST(cat_noncontiguous_mixed_against_reference) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_INT64, EM_BOOL};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_dtype dt = dts[k];
    em_tensor *a = seq(dt, EM_DIMS(3, 4, 2), 1, 0);
    em_tensor *big = seq(dt, EM_DIMS(3, 3, 6), 1, 100);
    em_tensor *bs = em_tensor_slice(big, 2, 0, INT64_MAX, 3); /* [3, 3, 2] step 3 */
    em_tensor *src = seq(dt, EM_DIMS(3, 2, 1), 1, 50);
    em_tensor *e = em_tensor_expand(src, EM_DIMS(3, 2, 2));  /* stride 0 */
    em_tensor *c = seq(dt, EM_DIMS(3, 1, 2), 1, -7);
    em_tensor *legacy = em_tensor_empty(EM_DIMS(0), dt);
    em_tensor *z = em_tensor_empty(EM_DIMS(3, 0, 2), dt);
    em_tensor *ti = seq(dt == EM_BOOL ? EM_BOOL : EM_INT32, EM_DIMS(3, 5, 2), 1, 30);
    em_tensor *in[] = {a, bs, legacy, e, c, z, ti, a};
    em_tensor *out = em_tensor_cat(8, in, 1);
    ASSERT_SHAPE(out, 3, 19, 2);
    ASSERT_EQ(out->dtype, dt);
    double *ref = ref_cat(8, in, 1, 3, out->shape);
    ASSERT_TENSOR_CLOSE_N(out, ref, out->numel, 0, 0);
    free(ref);
    /* transposed inputs along dim 0 */
    em_tensor *at_ = em_tensor_transpose(a, 0, 2); /* [2, 4, 3] */
    em_tensor *out2 = em_tensor_cat(3, (em_tensor *[]){at_, at_, at_}, 0);
    ASSERT_SHAPE(out2, 6, 4, 3);
    ref = ref_cat(3, (em_tensor *[]){at_, at_, at_}, 0, 3, out2->shape);
    ASSERT_TENSOR_CLOSE_N(out2, ref, out2->numel, 0, 0);
    free(ref);
    em_tensor_release(a), em_tensor_release(big), em_tensor_release(bs), em_tensor_release(src);
    em_tensor_release(e), em_tensor_release(c), em_tensor_release(legacy), em_tensor_release(z);
    em_tensor_release(ti), em_tensor_release(out), em_tensor_release(at_), em_tensor_release(out2);
  }
}

/* Big enough for the threaded paths (one long row, and many rows). */
EM_TEST(cat_large_threaded) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(700, 1000), 1, 0);
  em_tensor *b = seq(EM_FLOAT32, EM_DIMS(300, 1000), -1, 0);
  em_tensor *c = em_tensor_cat(2, (em_tensor *[]){a, b}, 0);
  ASSERT_SHAPE(c, 1000, 1000);
  for (int64_t i = 0; i < c->numel; i += 997) {
    double e = i < 700000 ? (double)(float)i : (double)(float)(-(i - 700000));
    ASSERT_CLOSE(em_test_get(c, i), e, 0, 0);
  }
  ASSERT_CLOSE(em_test_get(c, 699999), 699999, 0, 0);
  ASSERT_CLOSE(em_test_get(c, 700000), 0, 0, 0);
  em_tensor *d = em_tensor_cat(2, (em_tensor *[]){a, a}, 1);
  ASSERT_SHAPE(d, 700, 2000);
  for (int64_t r = 0; r < 700; r += 37)
    for (int64_t j = 0; j < 2000; j += 101)
      ASSERT_CLOSE(em_test_get(d, r * 2000 + j), (double)(float)(r * 1000 + j % 1000), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
}

EM_TEST(cat_zero_size_and_legacy_empty) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *r = em_tensor_cat(3, (em_tensor *[]){z, a, z}, 0);
  ASSERT_SHAPE(r, 2, 3);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *rz = em_tensor_cat(2, (em_tensor *[]){z, z}, 0);
  ASSERT_SHAPE(rz, 0, 3);
  /* a legacy [0] tensor is skipped whatever its dims, but takes part in
   * the dtype */
  em_tensor *leg = em_tensor_empty(EM_DIMS(0), EM_FLOAT64);
  em_tensor *r2 = em_tensor_cat(2, (em_tensor *[]){leg, a}, 1);
  ASSERT_SHAPE(r2, 2, 3);
  ASSERT_EQ(r2->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *li = em_tensor_empty(EM_DIMS(0), EM_INT32);
  em_tensor *r3 = em_tensor_cat(2, (em_tensor *[]){leg, li}, 3); /* dim not checked */
  ASSERT_SHAPE(r3, 0);
  ASSERT_EQ(r3->dtype, EM_FLOAT64);
  em_tensor *zz = em_tensor_empty(EM_DIMS(2, 0), EM_FLOAT32);
  em_tensor *r4 = em_tensor_cat(2, (em_tensor *[]){zz, zz}, 0);
  ASSERT_SHAPE(r4, 4, 0);
  em_tensor_release(a), em_tensor_release(z), em_tensor_release(r), em_tensor_release(rz);
  em_tensor_release(leg), em_tensor_release(r2), em_tensor_release(li), em_tensor_release(r3);
  em_tensor_release(zz), em_tensor_release(r4);
}

EM_TEST(cat_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *b = seq(EM_FLOAT32, EM_DIMS(2, 4), 1, 0);
  em_tensor *c = seq(EM_FLOAT32, EM_DIMS(2, 3, 1), 1, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_cat(0, NULL, 0), EM_ERR_INVALID, "cat: expected a non-empty list of Tensors");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, b}), 0), EM_ERR_SHAPE,
                  "cat: Sizes of tensors must match except in dimension 0. Expected size 3 but "
                  "got size 4 for tensor number 1 in the list");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, c}), 0), EM_ERR_SHAPE,
                  "Tensors must have same number of dimensions: got 2 and 3");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, s}), 0), EM_ERR_SHAPE,
                  "zero-dimensional tensor (at position 1) cannot be concatenated");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, a}), 2), EM_ERR_INDEX,
                  "cat: dimension out of range (expected to be in range of [-2, 1], but got 2)");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, a}), -3), EM_ERR_INDEX, "but got -3");
  ASSERT_NULL_ERR(em_tensor_cat(2, ((em_tensor *[]){a, NULL}), 0), EM_ERR_INVALID, "NULL");
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(s);
}

/* ---- stack -------------------------------------------------------------------------- */

EM_TEST(stack_dims) {
  em_tensor *a = seq(EM_INT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *b = seq(EM_INT32, EM_DIMS(2, 3), 1, 10);
  em_tensor *s0 = em_tensor_stack(2, (em_tensor *[]){a, b}, 0);
  ASSERT_SHAPE(s0, 2, 2, 3);
  ASSERT_TENSOR_CLOSE(s0, ((double[]){0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}), 0, 0);
  em_tensor *s2 = em_tensor_stack(2, (em_tensor *[]){a, b}, -1);
  ASSERT_SHAPE(s2, 2, 3, 2);
  ASSERT_TENSOR_CLOSE(s2, ((double[]){0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15}), 0, 0);
  em_tensor *s1 = em_tensor_stack(2, (em_tensor *[]){a, b}, 1);
  ASSERT_SHAPE(s1, 2, 2, 3);
  ASSERT_TENSOR_CLOSE(s1, ((double[]){0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15}), 0, 0);
  /* non-contiguous input, and 0-dim inputs of mixed dtypes */
  em_tensor *at_ = em_tensor_t(a);
  em_tensor *bt = em_tensor_t(b);
  em_tensor *st = em_tensor_stack(2, (em_tensor *[]){at_, bt}, 0);
  ASSERT_SHAPE(st, 2, 3, 2);
  ASSERT_TENSOR_CLOSE(st, ((double[]){0, 3, 1, 4, 2, 5, 10, 13, 11, 14, 12, 15}), 0, 0);
  em_tensor *x = em_tensor_scalar(em_scalar_int(1), EM_INT64);
  em_tensor *y = em_tensor_scalar(em_scalar_float(2.5), EM_FLOAT32);
  em_tensor *sxy = em_tensor_stack(2, (em_tensor *[]){x, y}, 0);
  ASSERT_SHAPE(sxy, 2);
  ASSERT_EQ(sxy->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(sxy, ((double[]){1, 2.5}), 0, 0);
  em_tensor *e = em_tensor_empty(EM_DIMS(0), EM_FLOAT32);
  em_tensor *se = em_tensor_stack(2, (em_tensor *[]){e, e}, 0);
  ASSERT_SHAPE(se, 2, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(s0), em_tensor_release(s2);
  em_tensor_release(s1), em_tensor_release(at_), em_tensor_release(bt), em_tensor_release(st);
  em_tensor_release(x), em_tensor_release(y), em_tensor_release(sxy), em_tensor_release(e);
  em_tensor_release(se);
}

EM_TEST(stack_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  em_tensor *b = seq(EM_FLOAT32, EM_DIMS(3, 2), 1, 0);
  ASSERT_NULL_ERR(em_tensor_stack(2, ((em_tensor *[]){a, b}), 0), EM_ERR_SHAPE,
                  "stack expects each tensor to be equal size, but got [2, 3] at entry 0 and "
                  "[3, 2] at entry 1");
  ASSERT_NULL_ERR(em_tensor_stack(2, ((em_tensor *[]){a, a}), 3), EM_ERR_INDEX,
                  "expected to be in range of [-3, 2], but got 3");
  ASSERT_NULL_ERR(em_tensor_stack(0, NULL, 0), EM_ERR_INVALID, "stack expects a non-empty TensorList");
  em_tensor_release(a), em_tensor_release(b);
}

/* ---- flip ---------------------------------------------------------------------------- */

EM_TEST(flip_values) {
  em_tensor *a = seq(EM_INT64, EM_DIMS(2, 3), 1, 0);
  em_tensor *f01 = em_tensor_flip(a, EM_DIMS(0, 1));
  ASSERT_TENSOR_CLOSE(f01, ((double[]){5, 4, 3, 2, 1, 0}), 0, 0);
  em_tensor *f1 = em_tensor_flip(a, EM_DIMS(-1));
  ASSERT_TENSOR_CLOSE(f1, ((double[]){2, 1, 0, 5, 4, 3}), 0, 0);
  em_tensor *f0 = em_tensor_flip(a, EM_DIMS(0));
  ASSERT_TENSOR_CLOSE(f0, ((double[]){3, 4, 5, 0, 1, 2}), 0, 0);
  em_tensor *fn = em_tensor_flip(a, 0, NULL);
  ASSERT_TENSOR_CLOSE(fn, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  ASSERT_TRUE(fn->storage != a->storage);
  /* non-contiguous: transposed [3, 2] and a step slice */
  em_tensor *at_ = em_tensor_t(a);
  em_tensor *ft = em_tensor_flip(at_, EM_DIMS(0));
  ASSERT_SHAPE(ft, 3, 2);
  ASSERT_TENSOR_CLOSE(ft, ((double[]){2, 5, 1, 4, 0, 3}), 0, 0);
  em_tensor *sl = em_tensor_slice(a, 1, 0, INT64_MAX, 2); /* [[0, 2], [3, 5]] */
  em_tensor *fs = em_tensor_flip(sl, EM_DIMS(1, 0));
  ASSERT_TENSOR_CLOSE(fs, ((double[]){5, 3, 2, 0}), 0, 0);
  em_tensor_release(a), em_tensor_release(f01), em_tensor_release(f1), em_tensor_release(f0);
  em_tensor_release(fn), em_tensor_release(at_), em_tensor_release(ft), em_tensor_release(sl);
  em_tensor_release(fs);
}

EM_TEST(flip_dtypes_reference_zero_size_scalar) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_BFLOAT16, EM_INT8, EM_UINT8, EM_BOOL, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *a = seq(dts[k], EM_DIMS(3, 4, 5), 1, 0);
    em_tensor *p = em_tensor_permute(a, EM_DIMS(2, 0, 1)); /* [5, 3, 4] */
    em_tensor *f = em_tensor_flip(p, EM_DIMS(2, 0));
    ASSERT_SHAPE(f, 5, 3, 4);
    ASSERT_EQ(f->dtype, dts[k]);
    int64_t c[3] = {0}, src[3];
    for (int64_t i = 0; i < f->numel; i++) {
      src[0] = 4 - c[0];
      src[1] = c[1];
      src[2] = 3 - c[2];
      ASSERT_CLOSE(em_test_get(f, i), at(p, src), 0, 0);
      next(3, f->shape, c);
    }
    em_tensor_release(a), em_tensor_release(p), em_tensor_release(f);
  }
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *fz = em_tensor_flip(z, EM_DIMS(0, 1));
  ASSERT_SHAPE(fz, 0, 3);
  em_tensor *s = em_tensor_scalar(em_scalar_float(4), EM_FLOAT32);
  em_tensor *fsc = em_tensor_flip(s, EM_DIMS(0));
  ASSERT_SCALAR_SHAPE(fsc);
  ASSERT_CLOSE(em_tensor_item_double(fsc), 4, 0, 0);
  em_tensor_release(z), em_tensor_release(fz), em_tensor_release(s), em_tensor_release(fsc);
}

EM_TEST(flip_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  ASSERT_NULL_ERR(em_tensor_flip(a, EM_DIMS(0, 0)), EM_ERR_INVALID,
                  "flip: dim 0 appears multiple times in the list of dims");
  ASSERT_NULL_ERR(em_tensor_flip(a, EM_DIMS(2)), EM_ERR_INDEX,
                  "flip: dimension out of range (expected to be in range of [-2, 1], but got 2)");
  em_tensor_release(a);
}

/* ---- repeat ------------------------------------------------------------------------------ */

EM_TEST(repeat_values) {
  em_tensor *a = seq(EM_INT64, EM_DIMS(2, 3), 1, 0);
  em_tensor *r = em_tensor_repeat(a, EM_DIMS(2, 1, 2));
  ASSERT_SHAPE(r, 2, 2, 6);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5,
                                     0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5}), 0, 0);
  em_tensor *r2 = em_tensor_repeat(a, EM_DIMS(3, 1));
  ASSERT_SHAPE(r2, 6, 3);
  ASSERT_TENSOR_CLOSE(r2, ((double[]){0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *r0 = em_tensor_repeat(a, EM_DIMS(2, 0));
  ASSERT_SHAPE(r0, 4, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_int(5), EM_INT64);
  em_tensor *rs = em_tensor_repeat(s, EM_DIMS(2, 3));
  ASSERT_SHAPE(rs, 2, 3);
  ASSERT_TENSOR_CLOSE(rs, ((double[]){5, 5, 5, 5, 5, 5}), 0, 0);
  em_tensor *rs0 = em_tensor_repeat(s, 0, NULL);
  ASSERT_SCALAR_SHAPE(rs0);
  ASSERT_CLOSE(em_tensor_item_double(rs0), 5, 0, 0);
  em_tensor_release(a), em_tensor_release(r), em_tensor_release(r2), em_tensor_release(r0);
  em_tensor_release(s), em_tensor_release(rs), em_tensor_release(rs0);
}

EM_TEST(repeat_reference_noncontiguous) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_BOOL, EM_INT16, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *a = seq(dts[k], EM_DIMS(4, 3, 2), 1, 1);
    em_tensor *p = em_tensor_permute(a, EM_DIMS(1, 2, 0)); /* [3, 2, 4] */
    const int64_t reps[] = {2, 3, 1, 2};
    em_tensor *r = em_tensor_repeat(p, 4, reps);
    ASSERT_SHAPE(r, 2, 9, 2, 8);
    int64_t c[4] = {0}, src[3];
    for (int64_t i = 0; i < r->numel; i++) {
      src[0] = c[1] % 3;
      src[1] = c[2] % 2;
      src[2] = c[3] % 4;
      ASSERT_CLOSE(em_test_get(r, i), at(p, src), 0, 0);
      next(4, r->shape, c);
    }
    em_tensor_release(a), em_tensor_release(p), em_tensor_release(r);
  }
}

EM_TEST(repeat_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  ASSERT_NULL_ERR(em_tensor_repeat(a, EM_DIMS(2)), EM_ERR_INVALID,
                  "Number of dimensions of repeat dims can not be smaller than number of "
                  "dimensions of tensor");
  ASSERT_NULL_ERR(em_tensor_repeat(a, EM_DIMS(-1, 2)), EM_ERR_INVALID,
                  "Trying to create tensor with negative dimension -2");
  em_tensor_release(a);
}

/* ---- pad ------------------------------------------------------------------------------------ */

EM_TEST(pad_values) {
  em_tensor *a = seq(EM_INT64, EM_DIMS(2, 3), 1, 0);
  em_tensor *p1 = em_tensor_pad(a, EM_DIMS(1, 2), 0);
  ASSERT_SHAPE(p1, 2, 6);
  ASSERT_TENSOR_CLOSE(p1, ((double[]){0, 0, 1, 2, 0, 0, 0, 3, 4, 5, 0, 0}), 0, 0);
  em_tensor *p2 = em_tensor_pad(a, EM_DIMS(1, 2, -1, 1), 7);
  ASSERT_SHAPE(p2, 2, 6);
  ASSERT_TENSOR_CLOSE(p2, ((double[]){7, 3, 4, 5, 7, 7, 7, 7, 7, 7, 7, 7}), 0, 0);
  em_tensor *p3 = em_tensor_pad(a, EM_DIMS(-1, -1, 1, 0), 0); /* crop + pad */
  ASSERT_SHAPE(p3, 3, 1);
  ASSERT_TENSOR_CLOSE(p3, ((double[]){0, 1, 4}), 0, 0);
  em_tensor *p4 = em_tensor_pad(a, EM_DIMS(-3, 0), 0); /* crop to nothing */
  ASSERT_SHAPE(p4, 2, 0);
  em_tensor *p5 = em_tensor_pad(a, EM_DIMS(1, 1), 2.5); /* value truncated to the int dtype */
  ASSERT_TENSOR_CLOSE(p5, ((double[]){2, 0, 1, 2, 2, 2, 3, 4, 5, 2}), 0, 0);
  em_tensor *p6 = em_tensor_pad(a, 0, NULL, 1);
  ASSERT_TENSOR_CLOSE(p6, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor *p7 = em_tensor_pad(a, EM_DIMS(-3, 1), 9); /* whole dim cropped, one pad */
  ASSERT_SHAPE(p7, 2, 1);
  ASSERT_TENSOR_CLOSE(p7, ((double[]){9, 9}), 0, 0);
  em_tensor *b = mk(EM_BOOL, EM_DIMS(2), (double[]){1, 0});
  em_tensor *pb = em_tensor_pad(b, EM_DIMS(1, 0), 2.5);
  ASSERT_TENSOR_CLOSE(pb, ((double[]){1, 1, 0}), 0, 0);
  em_tensor *s = em_tensor_scalar(em_scalar_float(3), EM_FLOAT32);
  em_tensor *ps = em_tensor_pad(s, 0, NULL, 0);
  ASSERT_SCALAR_SHAPE(ps);
  em_tensor *z = em_tensor_empty(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *pz = em_tensor_pad(z, EM_DIMS(1, 1), 1);
  ASSERT_SHAPE(pz, 0, 5);
  em_tensor *z2 = em_tensor_empty(EM_DIMS(2, 0), EM_FLOAT32);
  em_tensor *pz2 = em_tensor_pad(z2, EM_DIMS(1, 1), -1);
  ASSERT_SHAPE(pz2, 2, 2);
  ASSERT_TENSOR_CLOSE(pz2, ((double[]){-1, -1, -1, -1}), 0, 0);
  em_tensor_release(a), em_tensor_release(p1), em_tensor_release(p2), em_tensor_release(p3);
  em_tensor_release(p4), em_tensor_release(p5), em_tensor_release(p6), em_tensor_release(p7);
  em_tensor_release(b), em_tensor_release(pb), em_tensor_release(s), em_tensor_release(ps);
  em_tensor_release(z), em_tensor_release(pz), em_tensor_release(z2), em_tensor_release(pz2);
}

EM_TEST(pad_reference_noncontiguous) {
  em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_INT32, EM_FLOAT64};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *a = seq(dts[k], EM_DIMS(5, 4, 6), 1, 1);
    em_tensor *t = em_tensor_transpose(a, 0, 2); /* [6, 4, 5] */
    const int64_t pads[] = {2, -1, -1, 3, 1, 0}; /* last dim, middle, first */
    em_tensor *p = em_tensor_pad(t, 6, pads, -4);
    ASSERT_SHAPE(p, 7, 6, 6);
    const int64_t before[3] = {1, -1, 2};
    int64_t c[3] = {0}, src[3];
    for (int64_t i = 0; i < p->numel; i++) {
      bool inside = true;
      for (int d = 0; d < 3; d++) {
        src[d] = c[d] - before[d];
        inside = inside && src[d] >= 0 && src[d] < t->shape[d];
      }
      ASSERT_CLOSE(em_test_get(p, i), inside ? at(t, src) : -4, 0, 0);
      next(3, p->shape, c);
    }
    em_tensor_release(a), em_tensor_release(t), em_tensor_release(p);
  }
}

EM_TEST(pad_errors) {
  em_tensor *a = seq(EM_FLOAT32, EM_DIMS(2, 3), 1, 0);
  ASSERT_NULL_ERR(em_tensor_pad(a, EM_DIMS(1), 0), EM_ERR_INVALID, "Padding length must be divisible by 2");
  ASSERT_NULL_ERR(em_tensor_pad(a, EM_DIMS(1, 1, 1, 1, 1, 1), 0), EM_ERR_INVALID,
                  "Padding length too large");
  ASSERT_NULL_ERR(em_tensor_pad(a, EM_DIMS(-3, 0, 1, 0), 0), EM_ERR_INVALID,
                  "The input size 3, plus negative padding -3 and 0 resulted in a negative "
                  "output size, which is invalid. Check dimension 1 of your input.");
  ASSERT_NULL_ERR(em_tensor_pad(a, EM_DIMS(-2, -2), 0), EM_ERR_INVALID,
                  "The input size 3, plus negative padding -2 and -2 resulted in a negative");
  em_tensor_release(a);
}

EM_TEST_MAIN()
