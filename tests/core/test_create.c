/* Creation ops that count: arange, linspace, eye. Expected values are
 * written by hand (or were read off PyTorch 1.13 once, noted as such). */
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

#define I(v) em_scalar_int(v)
#define F(v) em_scalar_float(v)
#define UNDEF EM_DTYPE_UNDEFINED

EM_TEST(arange_integers) {
  em_tensor *a = em_tensor_arange(I(0), I(5), I(1), UNDEF);
  ASSERT_SHAPE(a, 5);
  ASSERT_EQ(a->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 1, 2, 3, 4}), 0, 0);
  em_tensor *b = em_tensor_arange(I(0), I(10), I(3), UNDEF); /* ceil(10/3) = 4 */
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 3, 6, 9}), 0, 0);
  em_tensor *c = em_tensor_arange(I(10), I(0), I(-3), UNDEF);
  ASSERT_TENSOR_CLOSE(c, ((double[]){10, 7, 4, 1}), 0, 0);
  em_tensor *d = em_tensor_arange(I(-5), I(5), I(3), UNDEF);
  ASSERT_TENSOR_CLOSE(d, ((double[]){-5, -2, 1, 4}), 0, 0);
  em_tensor *e = em_tensor_arange(I(5), I(5), I(1), UNDEF); /* empty */
  ASSERT_SHAPE(e, 0);
  ASSERT_EQ(e->dtype, EM_INT64);
  /* bool scalars count as integers */
  em_tensor *f = em_tensor_arange(em_scalar_bool(false), I(2), em_scalar_bool(true), UNDEF);
  ASSERT_EQ(f->dtype, EM_INT64);
  ASSERT_TENSOR_CLOSE(f, ((double[]){0, 1}), 0, 0);
  /* int64 beyond 2^53 stays exact */
  const int64_t big = (int64_t)1 << 53;
  em_tensor *g = em_tensor_arange(I(big), I(big + 5), I(2), UNDEF);
  ASSERT_SHAPE(g, 3);
  const int64_t *gv = em_tensor_data(g);
  ASSERT_EQ(gv[0], big);
  ASSERT_EQ(gv[1], big + 2);
  ASSERT_EQ(gv[2], big + 4);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e), em_tensor_release(f), em_tensor_release(g);
}

EM_TEST(arange_floats_and_inference) {
  /* any float scalar: the default float dtype, size ceil((end-start)/step) */
  em_tensor *a = em_tensor_arange(I(-3), I(3), F(2.5), UNDEF);
  ASSERT_EQ(a->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(a, ((double[]){-3.0, -0.5, 2.0}), 0, 0);
  /* 0.1 steps: value k is (float)(0.1 * k) computed in double (PyTorch's
   * float32 values: 0.30000001192092896 for k = 3) */
  em_tensor *b = em_tensor_arange(F(0), F(1), F(0.1), UNDEF);
  ASSERT_SHAPE(b, 10);
  const float *bv = em_tensor_data(b);
  ASSERT_TRUE(bv[3] == 0.30000001192092896f);
  ASSERT_TRUE(bv[9] == 0.8999999761581421f);
  em_tensor *c = em_tensor_arange(F(0), F(1), F(0.1), EM_FLOAT64);
  ASSERT_SHAPE(c, 10);
  const double *cv = em_tensor_data(c);
  ASSERT_TRUE(cv[3] == 0.30000000000000004);
  ASSERT_TRUE(cv[7] == 0.7000000000000001);
  em_tensor *h = em_tensor_arange(I(1), I(2), F(0.25), EM_FLOAT16);
  ASSERT_EQ(h->dtype, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(h, ((double[]){1.0, 1.25, 1.5, 1.75}), 0, 0);
  em_tensor *bf = em_tensor_arange(I(-2), I(3), F(1.5), EM_BFLOAT16);
  ASSERT_TENSOR_CLOSE(bf, ((double[]){-2.0, -0.5, 1.0, 2.5}), 0, 0);
  em_tensor *i8 = em_tensor_arange(I(0), I(10), I(3), EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(i8, ((double[]){0, 3, 6, 9}), 0, 0);
  /* default dtype float64 */
  ASSERT_OK(em_set_default_dtype(EM_FLOAT64));
  em_tensor *d = em_tensor_arange(I(0), F(2), I(1), UNDEF);
  ASSERT_OK(em_set_default_dtype(EM_FLOAT32));
  ASSERT_EQ(d->dtype, EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(d, ((double[]){0, 1}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(h);
  em_tensor_release(bf), em_tensor_release(i8), em_tensor_release(d);
}

EM_TEST(arange_integer_dtypes) {
  /* float bounds truncate for integer dtypes: arange(0.5, 5, 1, int64) and
   * int32 both give 0..4 (PyTorch) */
  em_tensor *a = em_tensor_arange(F(0.5), I(5), I(1), EM_INT64);
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 1, 2, 3, 4}), 0, 0);
  em_tensor *b = em_tensor_arange(F(0.5), I(5), I(1), EM_INT32);
  ASSERT_EQ(b->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 1, 2, 3, 4}), 0, 0);
  /* the size uses the untruncated bounds for non-int64: ceil(4.2 / 1.9) = 3 */
  em_tensor *c = em_tensor_arange(F(0.5), F(4.7), F(1.9), EM_INT32);
  ASSERT_TENSOR_CLOSE(c, ((double[]){0, 1, 2}), 0, 0);
  /* int8 wraps past 127 as PyTorch does */
  em_tensor *d = em_tensor_arange(I(120), I(136), I(1), EM_INT8);
  ASSERT_SHAPE(d, 16);
  const int8_t *dv = em_tensor_data(d);
  ASSERT_EQ(dv[7], 127);
  ASSERT_EQ(dv[8], -128);
  ASSERT_EQ(dv[15], -121);
  em_tensor *e = em_tensor_arange(I(250), I(0), I(-100), EM_UINT8);
  ASSERT_TENSOR_CLOSE(e, ((double[]){250, 150, 50}), 0, 0);
  em_tensor *f = em_tensor_arange(I(-4), I(4), I(4), EM_INT16);
  ASSERT_TENSOR_CLOSE(f, ((double[]){-4, 0}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e), em_tensor_release(f);
}

EM_TEST(arange_parallel_fill) {
  /* large enough to be split across threads */
  int prev = em_get_num_threads();
  em_set_num_threads(2);
  em_tensor *a = em_tensor_arange(I(0), I(200000), I(1), EM_INT32);
  em_tensor *b = em_tensor_arange(F(0), F(100000), F(0.5), EM_FLOAT64);
  em_set_num_threads(prev);
  ASSERT_SHAPE(a, 200000);
  ASSERT_SHAPE(b, 200000);
  const int32_t *av = em_tensor_data(a);
  const double *bv = em_tensor_data(b);
  for (int64_t i = 0; i < 200000; i++) {
    if (av[i] != i || bv[i] != 0.5 * (double)i) {
      EM_FAILF("element %lld: %d %g", (long long)i, av[i], bv[i]);
      break;
    }
  }
  em_tensor_release(a), em_tensor_release(b);
}

EM_TEST(arange_errors) {
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(5), I(0), UNDEF), EM_ERR_INVALID,
                  "arange: step must be nonzero");
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(5), F(0.0), UNDEF), EM_ERR_INVALID,
                  "step must be nonzero");
  /* 0.5 becomes 0 in int64 */
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(5), F(0.5), EM_INT64), EM_ERR_INVALID,
                  "step must be nonzero");
  ASSERT_NULL_ERR(em_tensor_arange(I(5), I(0), I(1), UNDEF), EM_ERR_INVALID,
                  "upper bound and larger bound inconsistent with step sign");
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(5), I(-1), UNDEF), EM_ERR_INVALID,
                  "upper bound and larger bound inconsistent with step sign");
  ASSERT_NULL_ERR(em_tensor_arange(F(0), F(-1), F(0.5), UNDEF), EM_ERR_INVALID,
                  "upper bound and larger bound inconsistent with step sign");
  ASSERT_NULL_ERR(em_tensor_arange(F(0), F(INFINITY), F(1), UNDEF), EM_ERR_INVALID,
                  "arange: unsupported range: 0 -> inf");
  ASSERT_NULL_ERR(em_tensor_arange(F(NAN), F(1), F(1), UNDEF), EM_ERR_INVALID,
                  "unsupported range: nan -> 1");
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(3), I(1), EM_BOOL), EM_ERR_DTYPE,
                  "arange: not implemented for bool");
  ASSERT_NULL_ERR(em_tensor_arange(I(0), F(1e30), I(1), EM_INT64), EM_ERR_INVALID,
                  "cannot be converted to type int64 without overflow");
  ASSERT_NULL_ERR(em_tensor_arange(I(INT64_MIN), I(INT64_MAX), I(1), EM_INT64), EM_ERR_INVALID,
                  "invalid size, possible overflow?");
  ASSERT_NULL_ERR(em_tensor_arange(F(0), F(1e300), F(1e-300), UNDEF), EM_ERR_INVALID,
                  "invalid size, possible overflow?");
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(3), I(1), (em_dtype)42), EM_ERR_DTYPE,
                  "arange: invalid dtype 42");
  /* sizes that cannot be allocated fail cleanly, before any allocation */
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(INT64_MAX / 2), I(1), EM_INT64), EM_ERR_NOMEM,
                  "arange: empty:");
  /* 2^63 - 1 elements round to 2^63 in double: too many for int64 */
  ASSERT_NULL_ERR(em_tensor_arange(I(0), I(INT64_MAX), I(1), EM_INT64), EM_ERR_INVALID,
                  "invalid size, possible overflow?");
}

EM_TEST(linspace_values) {
  em_tensor *a = em_tensor_linspace(0, 1, 5, UNDEF);
  ASSERT_EQ(a->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(a, ((double[]){0, 0.25, 0.5, 0.75, 1}), 0, 0);
  /* symmetric: the end is hit exactly; float32 values as PyTorch 1.13 gives */
  em_tensor *b = em_tensor_linspace(0, 1, 11, EM_FLOAT32);
  const float *bv = em_tensor_data(b);
  ASSERT_TRUE(bv[3] == 0.30000001192092896f);
  ASSERT_TRUE(bv[6] == 0.6000000238418579f);
  ASSERT_TRUE(bv[7] == 0.699999988079071f);
  ASSERT_TRUE(bv[10] == 1.0f);
  em_tensor *c = em_tensor_linspace(0, 1, 11, EM_FLOAT64);
  const double *cv = em_tensor_data(c);
  /* the scalar formula on both sides (PyTorch's vectorised CPU path may
   * differ in the last bit: it gives 0.6000000000000001 for k = 6 with AVX2) */
  ASSERT_TRUE(cv[3] == 0.30000000000000004); /* 0 + 0.1 * 3 */
  ASSERT_TRUE(cv[6] == 0.6);                 /* 1 - 0.1 * 4 */
  ASSERT_TRUE(cv[10] == 1.0);
  /* a reference loop in double for a long float64 range */
  em_tensor *d = em_tensor_linspace(-3.7, 11.1, 1001, EM_FLOAT64);
  ASSERT_SHAPE(d, 1001);
  const double *dv = em_tensor_data(d);
  double step = (11.1 - -3.7) / 1000.0;
  for (int k = 0; k < 1001; k++) {
    double want = k < 500 ? -3.7 + step * k : 11.1 - step * (1000 - k);
    ASSERT_CLOSE(dv[k], want, 0, 0);
  }
  em_tensor *e = em_tensor_linspace(5, 1, 5, UNDEF);
  ASSERT_TENSOR_CLOSE(e, ((double[]){5, 4, 3, 2, 1}), 0, 0);
  em_tensor *f = em_tensor_linspace(3, 7, 1, UNDEF); /* steps 1: start */
  ASSERT_TENSOR_CLOSE(f, ((double[]){3}), 0, 0);
  em_tensor *g = em_tensor_linspace(0, 1, 0, UNDEF);
  ASSERT_SHAPE(g, 0);
  em_tensor *h = em_tensor_linspace(0, 1, 2, EM_FLOAT16);
  ASSERT_TENSOR_CLOSE(h, ((double[]){0, 1}), 0, 0);
  em_tensor *bf = em_tensor_linspace(0, 1, 5, EM_BFLOAT16);
  ASSERT_TENSOR_CLOSE(bf, ((double[]){0, 0.25, 0.5, 0.75, 1}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e), em_tensor_release(f), em_tensor_release(g), em_tensor_release(h);
  em_tensor_release(bf);
}

EM_TEST(linspace_integers) {
  /* start/end truncate first, then step = (2 - -1) / 6 = 0.5 and values
   * truncate: PyTorch gives [-1, 0, 0, 0, 1, 1, 2] */
  em_tensor *a = em_tensor_linspace(-1.5, 2.7, 7, EM_INT32);
  ASSERT_EQ(a->dtype, EM_INT32);
  ASSERT_TENSOR_CLOSE(a, ((double[]){-1, 0, 0, 0, 1, 1, 2}), 0, 0);
  em_tensor *b = em_tensor_linspace(0, 10, 4, EM_INT64);
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 3, 6, 10}), 0, 0);
  em_tensor *c = em_tensor_linspace(0, 255, 4, EM_UINT8);
  ASSERT_TENSOR_CLOSE(c, ((double[]){0, 85, 170, 255}), 0, 0);
  em_tensor *d = em_tensor_linspace(-128, 127, 2, EM_INT8);
  ASSERT_TENSOR_CLOSE(d, ((double[]){-128, 127}), 0, 0);
  em_tensor *e = em_tensor_linspace(100, 0, 3, EM_INT16);
  ASSERT_TENSOR_CLOSE(e, ((double[]){100, 50, 0}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e);
}

EM_TEST(linspace_errors) {
  ASSERT_NULL_ERR(em_tensor_linspace(0, 1, -1, UNDEF), EM_ERR_INVALID,
                  "linspace: number of steps must be non-negative, got -1");
  ASSERT_NULL_ERR(em_tensor_linspace(0, 300, 4, EM_INT8), EM_ERR_INVALID,
                  "linspace: value 300 cannot be converted to type int8 without overflow");
  ASSERT_NULL_ERR(em_tensor_linspace(-1, 3, 4, EM_UINT8), EM_ERR_INVALID,
                  "value -1 cannot be converted to type uint8");
  ASSERT_NULL_ERR(em_tensor_linspace(NAN, 3, 4, EM_INT64), EM_ERR_INVALID,
                  "value nan cannot be converted to type int64");
  ASSERT_NULL_ERR(em_tensor_linspace(0, 1, 4, EM_BOOL), EM_ERR_DTYPE,
                  "linspace: not implemented for bool");
  ASSERT_NULL_ERR(em_tensor_linspace(0, 1, 4, (em_dtype)-7), EM_ERR_DTYPE,
                  "linspace: invalid dtype -7");
  ASSERT_NULL_ERR(em_tensor_linspace(0, 1, INT64_MAX, EM_FLOAT64), EM_ERR_NOMEM, "linspace: empty:");
}

EM_TEST(eye_shapes_and_dtypes) {
  em_tensor *a = em_tensor_eye(2, 3, UNDEF);
  ASSERT_SHAPE(a, 2, 3);
  ASSERT_EQ(a->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(a, ((double[]){1, 0, 0, 0, 1, 0}), 0, 0);
  em_tensor *b = em_tensor_eye(3, 2, EM_INT8);
  ASSERT_TENSOR_CLOSE(b, ((double[]){1, 0, 0, 1, 0, 0}), 0, 0);
  em_tensor *c = em_tensor_eye(3, -1, EM_FLOAT64); /* m < 0: square */
  ASSERT_SHAPE(c, 3, 3);
  ASSERT_TENSOR_CLOSE(c, ((double[]){1, 0, 0, 0, 1, 0, 0, 0, 1}), 0, 0);
  em_tensor *d = em_tensor_eye(2, -1, EM_BOOL);
  ASSERT_TENSOR_CLOSE(d, ((double[]){1, 0, 0, 1}), 0, 0);
  em_tensor *e = em_tensor_eye(0, -1, UNDEF);
  ASSERT_SHAPE(e, 0, 0);
  em_tensor *f = em_tensor_eye(4, 0, UNDEF);
  ASSERT_SHAPE(f, 4, 0);
  em_tensor *g = em_tensor_eye(1, 1, EM_BFLOAT16);
  ASSERT_TENSOR_CLOSE(g, ((double[]){1}), 0, 0);
  static const em_dtype all[] = {EM_FLOAT16, EM_INT16, EM_INT32, EM_INT64, EM_UINT8};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    em_tensor *t = em_tensor_eye(2, 2, all[i]);
    ASSERT_EQ(t->dtype, all[i]);
    ASSERT_TENSOR_CLOSE(t, ((double[]){1, 0, 0, 1}), 0, 0);
    em_tensor_release(t);
  }
  ASSERT_NULL_ERR(em_tensor_eye(-1, 2, UNDEF), EM_ERR_INVALID,
                  "eye: n must be greater or equal to 0, got -1");
  ASSERT_NULL_ERR(em_tensor_eye(2, 2, (em_dtype)99), EM_ERR_DTYPE, "eye: invalid dtype 99");
  ASSERT_NULL_ERR(em_tensor_eye((int64_t)1 << 40, (int64_t)1 << 40, UNDEF), EM_ERR_INVALID,
                  "has too many elements");
  /* empty, but the other sizes multiply past 2^63 (the strides would overflow) */
  ASSERT_NULL_ERR(em_tensor_empty(EM_DIMS(0, (int64_t)1 << 40, (int64_t)1 << 40), UNDEF),
                  EM_ERR_INVALID, "has too many elements");
  em_tensor *big_empty = em_tensor_empty(EM_DIMS((int64_t)1 << 40, 0, (int64_t)1 << 20), UNDEF);
  ASSERT_SHAPE(big_empty, (int64_t)1 << 40, 0, (int64_t)1 << 20);
  ASSERT_EQ(em_tensor_numel(big_empty), 0);
  ASSERT_EQ(em_tensor_strides(big_empty)[0], (int64_t)1 << 20);
  em_tensor_release(big_empty);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e), em_tensor_release(f), em_tensor_release(g);
}

EM_TEST_MAIN()
