/* Printing (expected strings produced once by PyTorch 1.13's repr() with
 * "torch." replaced by "ember."; torch is not needed to run this test) and
 * the comparison helpers allclose / equal. */
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

/* A tensor of dtype dt holding v (row-major), built through float64. */
static em_tensor *mk(em_dtype dt, int ndim, const int64_t *shape, const double *v) {
  em_tensor *d = em_tensor_from_data(v, ndim, shape, EM_FLOAT64);
  if (!d) return NULL;
  em_tensor *r = em_tensor_to_dtype(d, dt);
  em_tensor_release(d);
  return r;
}
#define MK(dt, shape_list, ...) mk(dt, shape_list, (const double[]){__VA_ARGS__})

/* A tensor of dtype dt and the given shape with element i = f(i). */
static em_tensor *mk_fn(em_dtype dt, int ndim, const int64_t *shape, double (*f)(int64_t)) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = f(i);
  em_tensor *t = mk(dt, ndim, shape, v);
  free(v);
  return t;
}

static double f_id(int64_t i) { return (double)i; }
static double f_div7(int64_t i) { return (float)i / 7.0f; } /* float32 arithmetic, as torch */
static double f_div3f(int64_t i) { return (float)i / 3.0f; }
static double f_div3d(int64_t i) { return (double)i / 3.0; }
static double f_mul15(int64_t i) { return (double)i * 1.5; }
static double f_div4(int64_t i) { return (double)i / 4.0; }
static double f_mul1000(int64_t i) { return (double)i * 1000.0; }
static double f_hidden(int64_t i) { return i == 1000 ? 1e10 : 1.0; }

/* Compares the printout of t (released here) with expected. */
static int check_str(em_tensor *t, const char *prefix, const char *expected, int line) {
  if (!t) {
    fprintf(stderr, "  line %d: tensor is NULL: %s\n", line, em_last_error());
    return 0;
  }
  char *s = em_tensor_to_string(t, prefix);
  em_tensor_release(t);
  int ok = s && strcmp(s, expected) == 0;
  if (!ok)
    fprintf(stderr, "  line %d: printout differs\n    got:\n%s\n    expected:\n%s\n", line,
            s ? s : em_last_error(), expected);
  free(s);
  return ok;
}
#define CHECK_STR(t, expected)                                       \
  do {                                                               \
    if (!check_str((t), NULL, (expected), __LINE__)) {               \
      em_test_failed_now = 1;                                        \
      return;                                                        \
    }                                                                \
  } while (0)

EM_TEST(print_basic_dtypes) {
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(3), 1, 2, 3), "tensor([1., 2., 3.])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2, 2), 0.12345, -1.0, 2.5, 3.0), "tensor([[ 0.1235, -1.0000],\n"
            "        [ 2.5000,  3.0000]])");
  CHECK_STR(MK(EM_INT32, EM_DIMS(3), 1, 2, 3), "tensor([1, 2, 3], dtype=ember.int32)");
  CHECK_STR(MK(EM_INT64, EM_DIMS(3), 1, 2, 3), "tensor([1, 2, 3])");
  CHECK_STR(MK(EM_FLOAT64, EM_DIMS(2), 1.5, 2.0), "tensor([1.5000, 2.0000], dtype=ember.float64)");
  CHECK_STR(MK(EM_BOOL, EM_DIMS(2), 1, 0), "tensor([ True, False])");
  CHECK_STR(MK(EM_UINT8, EM_DIMS(3), 0, 255, 7), "tensor([  0, 255,   7], dtype=ember.uint8)");
  CHECK_STR(MK(EM_INT8, EM_DIMS(3), -128, 127, 0), "tensor([-128,  127,    0], dtype=ember.int8)");
  CHECK_STR(MK(EM_INT16, EM_DIMS(2, 1), -300, 12), "tensor([[-300],\n"
            "        [  12]], dtype=ember.int16)");
  CHECK_STR(MK(EM_BOOL, EM_DIMS(2, 3), 1, 0, 1, 0, 0, 1), "tensor([[ True, False,  True],\n"
            "        [False, False,  True]])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(3, 1), 1.5, -2.0, 3.25), "tensor([[ 1.5000],\n"
            "        [-2.0000],\n"
            "        [ 3.2500]])");
  CHECK_STR(MK(EM_INT64, EM_DIMS(1, 1, 1), 5), "tensor([[[5]]])");
  CHECK_STR(mk_fn(EM_INT64, EM_DIMS(2, 3, 4), f_id), "tensor([[[ 0,  1,  2,  3],\n"
            "         [ 4,  5,  6,  7],\n"
            "         [ 8,  9, 10, 11]],\n"
            "\n"
            "        [[12, 13, 14, 15],\n"
            "         [16, 17, 18, 19],\n"
            "         [20, 21, 22, 23]]])");
}

EM_TEST(print_zero_dim) {
  CHECK_STR(em_tensor_scalar(em_scalar_float(3.5), EM_FLOAT32), "tensor(3.5000)");
  CHECK_STR(em_tensor_scalar(em_scalar_int(-7), EM_INT64), "tensor(-7)");
  CHECK_STR(em_tensor_scalar(em_scalar_bool(true), EM_BOOL), "tensor(True)");
  CHECK_STR(em_tensor_scalar(em_scalar_float(0.1), EM_FLOAT64), "tensor(0.1000, dtype=ember.float64)");
  CHECK_STR(em_tensor_scalar(em_scalar_float(2.0), EM_FLOAT32), "tensor(2.)");
  CHECK_STR(em_tensor_scalar(em_scalar_float(1e-7), EM_FLOAT32), "tensor(1.0000e-07)");
  CHECK_STR(em_tensor_scalar(em_scalar_float(65504.0), EM_FLOAT16), "tensor(65504., dtype=ember.float16)");
}

EM_TEST(print_empty) {
  CHECK_STR(em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32), "tensor([], size=(0, 3))");
  CHECK_STR(em_tensor_zeros(EM_DIMS(0), EM_FLOAT32), "tensor([])");
  CHECK_STR(em_tensor_zeros(EM_DIMS(0), EM_INT64), "tensor([], dtype=ember.int64)");
  CHECK_STR(em_tensor_zeros(EM_DIMS(2, 0, 3), EM_INT32), "tensor([], size=(2, 0, 3), dtype=ember.int32)");
  CHECK_STR(em_tensor_zeros(EM_DIMS(0), EM_BOOL), "tensor([], dtype=ember.bool)");
}

EM_TEST(print_scientific_and_int_mode) {
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2), 1e-5, 1.0), "tensor([1.0000e-05, 1.0000e+00])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2), 1e9, 1.0), "tensor([1.0000e+09, 1.0000e+00])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2), 1.0, 1e5), "tensor([1.0000e+00, 1.0000e+05])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(1), 1e8), "tensor([100000000.])");
  CHECK_STR(MK(EM_FLOAT64, EM_DIMS(2), 1e-10, -1e-12), "tensor([ 1.0000e-10, -1.0000e-12], dtype=ember.float64)");
  CHECK_STR(MK(EM_FLOAT64, EM_DIMS(2), 1e300, -2.5e-300), "tensor([ 1.0000e+300, -2.5000e-300], dtype=ember.float64)");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(3), 1.0, -20.0, 300.0), "tensor([  1., -20., 300.])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(3), -1.5, 2.25, 100.125), "tensor([ -1.5000,   2.2500, 100.1250])");
  CHECK_STR(MK(EM_FLOAT64, EM_DIMS(3), 0.00015, 0.12345, 2.5e-4), "tensor([0.0001, 0.1235, 0.0003], dtype=ember.float64)");
  CHECK_STR(MK(EM_FLOAT64, EM_DIMS(2), 123456789.0, 2.0), "tensor([1.2346e+08, 2.0000e+00], dtype=ember.float64)");
}

EM_TEST(print_nonfinite_and_zeros) {
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(4), NAN, INFINITY, -INFINITY, 1.5), "tensor([   nan,    inf,   -inf, 1.5000])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(3), 1.0, INFINITY, NAN), "tensor([1., inf, nan])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(1), -NAN), "tensor([nan])"); /* a negative NaN prints "nan" */
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2), 0.0, 0.0), "tensor([0., 0.])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(2), -0.0, 1.0), "tensor([-0., 1.])");
  CHECK_STR(MK(EM_FLOAT32, EM_DIMS(4), 1e-6, NAN, -INFINITY, 3.0), "tensor([1.0000e-06,        nan,       -inf, 3.0000e+00])");
}

EM_TEST(print_summarized) {
  CHECK_STR(mk_fn(EM_INT64, EM_DIMS(2000), f_id), "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])");
  CHECK_STR(mk_fn(EM_FLOAT32, EM_DIMS(40, 50), f_div7), "tensor([[0.0000e+00, 1.4286e-01, 2.8571e-01,  ..., 6.7143e+00, 6.8571e+00,\n"
            "         7.0000e+00],\n"
            "        [7.1429e+00, 7.2857e+00, 7.4286e+00,  ..., 1.3857e+01, 1.4000e+01,\n"
            "         1.4143e+01],\n"
            "        [1.4286e+01, 1.4429e+01, 1.4571e+01,  ..., 2.1000e+01, 2.1143e+01,\n"
            "         2.1286e+01],\n"
            "        ...,\n"
            "        [2.6429e+02, 2.6443e+02, 2.6457e+02,  ..., 2.7100e+02, 2.7114e+02,\n"
            "         2.7129e+02],\n"
            "        [2.7143e+02, 2.7157e+02, 2.7171e+02,  ..., 2.7814e+02, 2.7829e+02,\n"
            "         2.7843e+02],\n"
            "        [2.7857e+02, 2.7871e+02, 2.7886e+02,  ..., 2.8529e+02, 2.8543e+02,\n"
            "         2.8557e+02]])");
  CHECK_STR(mk_fn(EM_INT64, EM_DIMS(10, 10, 20), f_id), "tensor([[[   0,    1,    2,  ...,   17,   18,   19],\n"
            "         [  20,   21,   22,  ...,   37,   38,   39],\n"
            "         [  40,   41,   42,  ...,   57,   58,   59],\n"
            "         ...,\n"
            "         [ 140,  141,  142,  ...,  157,  158,  159],\n"
            "         [ 160,  161,  162,  ...,  177,  178,  179],\n"
            "         [ 180,  181,  182,  ...,  197,  198,  199]],\n"
            "\n"
            "        [[ 200,  201,  202,  ...,  217,  218,  219],\n"
            "         [ 220,  221,  222,  ...,  237,  238,  239],\n"
            "         [ 240,  241,  242,  ...,  257,  258,  259],\n"
            "         ...,\n"
            "         [ 340,  341,  342,  ...,  357,  358,  359],\n"
            "         [ 360,  361,  362,  ...,  377,  378,  379],\n"
            "         [ 380,  381,  382,  ...,  397,  398,  399]],\n"
            "\n"
            "        [[ 400,  401,  402,  ...,  417,  418,  419],\n"
            "         [ 420,  421,  422,  ...,  437,  438,  439],\n"
            "         [ 440,  441,  442,  ...,  457,  458,  459],\n"
            "         ...,\n"
            "         [ 540,  541,  542,  ...,  557,  558,  559],\n"
            "         [ 560,  561,  562,  ...,  577,  578,  579],\n"
            "         [ 580,  581,  582,  ...,  597,  598,  599]],\n"
            "\n"
            "        ...,\n"
            "\n"
            "        [[1400, 1401, 1402,  ..., 1417, 1418, 1419],\n"
            "         [1420, 1421, 1422,  ..., 1437, 1438, 1439],\n"
            "         [1440, 1441, 1442,  ..., 1457, 1458, 1459],\n"
            "         ...,\n"
            "         [1540, 1541, 1542,  ..., 1557, 1558, 1559],\n"
            "         [1560, 1561, 1562,  ..., 1577, 1578, 1579],\n"
            "         [1580, 1581, 1582,  ..., 1597, 1598, 1599]],\n"
            "\n"
            "        [[1600, 1601, 1602,  ..., 1617, 1618, 1619],\n"
            "         [1620, 1621, 1622,  ..., 1637, 1638, 1639],\n"
            "         [1640, 1641, 1642,  ..., 1657, 1658, 1659],\n"
            "         ...,\n"
            "         [1740, 1741, 1742,  ..., 1757, 1758, 1759],\n"
            "         [1760, 1761, 1762,  ..., 1777, 1778, 1779],\n"
            "         [1780, 1781, 1782,  ..., 1797, 1798, 1799]],\n"
            "\n"
            "        [[1800, 1801, 1802,  ..., 1817, 1818, 1819],\n"
            "         [1820, 1821, 1822,  ..., 1837, 1838, 1839],\n"
            "         [1840, 1841, 1842,  ..., 1857, 1858, 1859],\n"
            "         ...,\n"
            "         [1940, 1941, 1942,  ..., 1957, 1958, 1959],\n"
            "         [1960, 1961, 1962,  ..., 1977, 1978, 1979],\n"
            "         [1980, 1981, 1982,  ..., 1997, 1998, 1999]]])");
  CHECK_STR(mk_fn(EM_FLOAT32, EM_DIMS(2, 1000), f_id), "tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 9.9700e+02, 9.9800e+02,\n"
            "         9.9900e+02],\n"
            "        [1.0000e+03, 1.0010e+03, 1.0020e+03,  ..., 1.9970e+03, 1.9980e+03,\n"
            "         1.9990e+03]])");
  /* the formatter sees only the shown elements: 1e10 in the middle is cut */
  CHECK_STR(mk_fn(EM_FLOAT32, EM_DIMS(2001), f_hidden), "tensor([1., 1., 1.,  ..., 1., 1., 1.])");
  CHECK_STR(mk_fn(EM_INT16, EM_DIMS(7, 1, 2, 150), f_id), "tensor([[[[   0,    1,    2,  ...,  147,  148,  149],\n"
            "          [ 150,  151,  152,  ...,  297,  298,  299]]],\n"
            "\n"
            "\n"
            "        [[[ 300,  301,  302,  ...,  447,  448,  449],\n"
            "          [ 450,  451,  452,  ...,  597,  598,  599]]],\n"
            "\n"
            "\n"
            "        [[[ 600,  601,  602,  ...,  747,  748,  749],\n"
            "          [ 750,  751,  752,  ...,  897,  898,  899]]],\n"
            "\n"
            "\n"
            "        ...,\n"
            "\n"
            "\n"
            "        [[[1200, 1201, 1202,  ..., 1347, 1348, 1349],\n"
            "          [1350, 1351, 1352,  ..., 1497, 1498, 1499]]],\n"
            "\n"
            "\n"
            "        [[[1500, 1501, 1502,  ..., 1647, 1648, 1649],\n"
            "          [1650, 1651, 1652,  ..., 1797, 1798, 1799]]],\n"
            "\n"
            "\n"
            "        [[[1800, 1801, 1802,  ..., 1947, 1948, 1949],\n"
            "          [1950, 1951, 1952,  ..., 2097, 2098, 2099]]]], dtype=ember.int16)");
}

EM_TEST(print_line_wrapping_and_suffixes) {
  CHECK_STR(mk_fn(EM_FLOAT32, EM_DIMS(30), f_div3f), "tensor([0.0000, 0.3333, 0.6667, 1.0000, 1.3333, 1.6667, 2.0000, 2.3333, 2.6667,\n"
            "        3.0000, 3.3333, 3.6667, 4.0000, 4.3333, 4.6667, 5.0000, 5.3333, 5.6667,\n"
            "        6.0000, 6.3333, 6.6667, 7.0000, 7.3333, 7.6667, 8.0000, 8.3333, 8.6667,\n"
            "        9.0000, 9.3333, 9.6667])");
  CHECK_STR(mk_fn(EM_INT64, EM_DIMS(100), f_id), "tensor([ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17,\n"
            "        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,\n"
            "        36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53,\n"
            "        54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,\n"
            "        72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89,\n"
            "        90, 91, 92, 93, 94, 95, 96, 97, 98, 99])");
  CHECK_STR(mk_fn(EM_FLOAT32, EM_DIMS(3, 20), f_mul15), "tensor([[ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n"
            "         12.0000, 13.5000, 15.0000, 16.5000, 18.0000, 19.5000, 21.0000, 22.5000,\n"
            "         24.0000, 25.5000, 27.0000, 28.5000],\n"
            "        [30.0000, 31.5000, 33.0000, 34.5000, 36.0000, 37.5000, 39.0000, 40.5000,\n"
            "         42.0000, 43.5000, 45.0000, 46.5000, 48.0000, 49.5000, 51.0000, 52.5000,\n"
            "         54.0000, 55.5000, 57.0000, 58.5000],\n"
            "        [60.0000, 61.5000, 63.0000, 64.5000, 66.0000, 67.5000, 69.0000, 70.5000,\n"
            "         72.0000, 73.5000, 75.0000, 76.5000, 78.0000, 79.5000, 81.0000, 82.5000,\n"
            "         84.0000, 85.5000, 87.0000, 88.5000]])");
  CHECK_STR(mk_fn(EM_FLOAT64, EM_DIMS(8), f_div3d), "tensor([0.0000, 0.3333, 0.6667, 1.0000, 1.3333, 1.6667, 2.0000, 2.3333],\n"
            "       dtype=ember.float64)");
  CHECK_STR(mk_fn(EM_INT32, EM_DIMS(20), f_mul1000), "tensor([    0,  1000,  2000,  3000,  4000,  5000,  6000,  7000,  8000,  9000,\n"
            "        10000, 11000, 12000, 13000, 14000, 15000, 16000, 17000, 18000, 19000],\n"
            "       dtype=ember.int32)");
  CHECK_STR(mk_fn(EM_FLOAT16, EM_DIMS(12), f_div4), "tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000, 1.2500, 1.5000, 1.7500, 2.0000,\n"
            "        2.2500, 2.5000, 2.7500], dtype=ember.float16)");
}

EM_TEST(print_half_and_bfloat16) {
  CHECK_STR(MK(EM_FLOAT16, EM_DIMS(3), 0.1, 0.2, 1000.5), "tensor([9.9976e-02, 1.9995e-01, 1.0005e+03], dtype=ember.float16)");
  CHECK_STR(MK(EM_BFLOAT16, EM_DIMS(2), 0.1, 3.14159), "tensor([0.1001, 3.1406], dtype=ember.bfloat16)");
  CHECK_STR(MK(EM_BFLOAT16, EM_DIMS(3), 1.0, 256.0, 3.0), "tensor([  1., 256.,   3.], dtype=ember.bfloat16)");
}

EM_TEST(print_non_contiguous) {
  em_tensor *m = MK(EM_FLOAT32, EM_DIMS(2, 3), 1, 2, 3, 4, 5, 6.25);
  ASSERT_NOTNULL(m);
  CHECK_STR(em_tensor_transpose(m, 0, 1), "tensor([[1.0000, 4.0000],\n"
            "        [2.0000, 5.0000],\n"
            "        [3.0000, 6.2500]])");
  em_tensor_release(m);
  em_tensor *r = mk_fn(EM_FLOAT32, EM_DIMS(10), f_id);
  ASSERT_NOTNULL(r);
  CHECK_STR(em_tensor_slice(r, 0, 1, INT64_MAX, 3), "tensor([1., 4., 7.])");
  em_tensor_release(r);
  em_tensor *c = MK(EM_INT32, EM_DIMS(2, 1), 1, 2);
  ASSERT_NOTNULL(c);
  CHECK_STR(em_tensor_expand(c, EM_DIMS(2, 3)), "tensor([[1, 1, 1],\n"
            "        [2, 2, 2]], dtype=ember.int32)");
  em_tensor_release(c);
  /* a summarised view: every other row of a [4000, 2] tensor, transposed */
  em_tensor *big = mk_fn(EM_INT64, EM_DIMS(4000), f_id);
  ASSERT_NOTNULL(big);
  em_tensor *v = em_tensor_view(big, EM_DIMS(2000, 2));
  em_tensor *s = v ? em_tensor_select(v, 1, 0) : NULL; /* 0, 2, 4, ... */
  ASSERT_NOTNULL(s);
  CHECK_STR(em_tensor_retain(s), "tensor([   0,    2,    4,  ..., 3994, 3996, 3998])");
  em_tensor_release(s), em_tensor_release(v), em_tensor_release(big);
}

EM_TEST(print_prefix_and_default_dtype) {
  em_tensor *p = MK(EM_FLOAT32, EM_DIMS(2, 2), 1, 2, 3, 4);
  ASSERT_NOTNULL(p);
  /* the indent follows the prefix's last line, as Parameter's repr */
  ASSERT_TRUE(check_str(p, "Parameter containing:\ntensor(", "Parameter containing:\n"
            "tensor([[1., 2.],\n"
            "        [3., 4.]])", __LINE__));
  em_tensor *q = MK(EM_FLOAT32, EM_DIMS(2, 2), 1, 2, 3, 4);
  ASSERT_TRUE(check_str(q, "Tensor(", "Tensor([[1., 2.],\n        [3., 4.]])", __LINE__));

  ASSERT_OK(em_set_default_dtype(EM_FLOAT64));
  em_tensor *a = MK(EM_FLOAT64, EM_DIMS(2), 1.5, 2.0);
  em_tensor *b = MK(EM_FLOAT32, EM_DIMS(2), 1.5, 2.0);
  em_tensor *e = em_tensor_zeros(EM_DIMS(0), EM_FLOAT32);
  int ok = check_str(a, NULL, "tensor([1.5000, 2.0000])", __LINE__) &&
           check_str(b, NULL, "tensor([1.5000, 2.0000], dtype=ember.float32)", __LINE__) &&
           check_str(e, NULL, "tensor([], dtype=ember.float32)", __LINE__);
  ASSERT_OK(em_set_default_dtype(EM_FLOAT32));
  ASSERT_TRUE(ok);
}

EM_TEST(print_to_file_and_errors) {
  em_tensor *t = MK(EM_INT64, EM_DIMS(3), 1, 2, 3);
  ASSERT_NOTNULL(t);
  FILE *f = tmpfile();
  ASSERT_TRUE(f != NULL);
  ASSERT_OK(em_tensor_print(t, f));
  rewind(f);
  char buf[64] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  ASSERT_EQ(n, strlen("tensor([1, 2, 3])\n"));
  ASSERT_STREQ(buf, "tensor([1, 2, 3])\n");
  em_tensor_release(t);

  em_clear_error();
  ASSERT_TRUE(em_tensor_to_string(NULL, NULL) == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_INVALID);
  ASSERT_TRUE(strstr(em_last_error(), "to_string: NULL tensor") != NULL);
  ASSERT_ERR(em_tensor_print(NULL, stdout), EM_ERR_INVALID, "NULL tensor");
}

/* ---- allclose / equal ----------------------------------------------------------- */

static bool allclose(em_tensor *a, em_tensor *b, double rtol, double atol, bool equal_nan) {
  bool r = false;
  if (em_tensor_allclose(a, b, rtol, atol, equal_nan, &r)) {
    fprintf(stderr, "  allclose failed: %s\n", em_last_error());
    return false;
  }
  return r;
}
static bool equal(em_tensor *a, em_tensor *b) {
  bool r = false;
  if (em_tensor_equal(a, b, &r)) {
    fprintf(stderr, "  equal failed: %s\n", em_last_error());
    return false;
  }
  return r;
}

EM_TEST(allclose_tolerances_and_nan) {
  em_tensor *a = MK(EM_FLOAT64, EM_DIMS(3), 1.0, 100.0, 0.0);
  em_tensor *b = MK(EM_FLOAT64, EM_DIMS(3), 1.0 + 1e-6, 100.0 + 5e-4, 1e-9);
  ASSERT_NOTNULL(a);
  ASSERT_NOTNULL(b);
  /* |a-b| <= atol + rtol*|b|: 1e-6 <= 1e-8 + 1e-5*1.000001 ... */
  ASSERT_TRUE(allclose(a, b, 1e-5, 1e-8, false));
  ASSERT_TRUE(!allclose(a, b, 1e-6, 1e-8, false)); /* 5e-4 > 1e-8 + 1e-6 * 100.0005 */
  ASSERT_TRUE(!allclose(a, b, 0, 0, false));
  ASSERT_TRUE(allclose(a, b, 0, 1e-3, false));
  em_tensor_release(a), em_tensor_release(b);

  em_tensor *n1 = MK(EM_FLOAT32, EM_DIMS(3), NAN, INFINITY, -INFINITY);
  em_tensor *n2 = MK(EM_FLOAT32, EM_DIMS(3), NAN, INFINITY, -INFINITY);
  em_tensor *n3 = MK(EM_FLOAT32, EM_DIMS(3), 1.0, INFINITY, -INFINITY);
  em_tensor *n4 = MK(EM_FLOAT32, EM_DIMS(3), NAN, INFINITY, INFINITY);
  ASSERT_TRUE(!allclose(n1, n2, 1e-5, 1e-8, false));
  ASSERT_TRUE(allclose(n1, n2, 1e-5, 1e-8, true));
  ASSERT_TRUE(!allclose(n1, n3, 1e-5, 1e-8, true)); /* NaN vs number */
  ASSERT_TRUE(!allclose(n1, n4, 1e-5, 1e-8, true)); /* -inf vs inf */
  ASSERT_TRUE(allclose(n3, n3, 0, 0, false)); /* equal infinities are close */
  em_tensor_release(n1), em_tensor_release(n2), em_tensor_release(n3), em_tensor_release(n4);
}

EM_TEST(allclose_broadcast_promotion_layouts) {
  /* [2, 3] vs a [3] row, broadcast */
  em_tensor *a = MK(EM_FLOAT32, EM_DIMS(2, 3), 1, 2, 3, 1, 2, 3.00001);
  em_tensor *row = MK(EM_FLOAT64, EM_DIMS(3), 1, 2, 3);
  ASSERT_NOTNULL(a);
  ASSERT_NOTNULL(row);
  ASSERT_TRUE(allclose(a, row, 1e-5, 1e-8, false));
  ASSERT_TRUE(!allclose(a, row, 1e-7, 0, false));
  /* int vs float promotion */
  em_tensor *i = MK(EM_INT32, EM_DIMS(3), 1, 2, 3);
  ASSERT_TRUE(allclose(i, row, 0, 0, false));
  ASSERT_TRUE(allclose(row, i, 0, 0, false));
  /* ints: tolerance in absolute terms */
  em_tensor *j = MK(EM_INT64, EM_DIMS(3), 1, 2, 5);
  ASSERT_TRUE(!allclose(i, j, 0, 1, false));
  ASSERT_TRUE(allclose(i, j, 0, 2, false));
  ASSERT_TRUE(allclose(i, j, 0.4, 0, false)); /* 2 <= 0.4 * 5 */
  /* int64 extremes: the difference is exact */
  em_tensor *big1 = em_tensor_full(EM_DIMS(1), em_scalar_int(INT64_MAX), EM_INT64);
  em_tensor *big2 = em_tensor_full(EM_DIMS(1), em_scalar_int(INT64_MIN), EM_INT64);
  ASSERT_TRUE(!allclose(big1, big2, 0, 1e18, false));
  ASSERT_TRUE(allclose(big1, big2, 0, 2e19, false));
  /* transposed vs contiguous */
  em_tensor *m = MK(EM_FLOAT32, EM_DIMS(2, 3), 1, 2, 3, 4, 5, 6);
  em_tensor *mt = em_tensor_transpose(m, 0, 1);
  em_tensor *m2 = MK(EM_FLOAT64, EM_DIMS(3, 2), 1, 4, 2, 5, 3, 6);
  ASSERT_TRUE(allclose(mt, m2, 0, 0, false));
  ASSERT_TRUE(equal(mt, m2));
  /* expanded, zero-size and 0-dim */
  em_tensor *s = em_tensor_scalar(em_scalar_float(2.0), EM_FLOAT32);
  em_tensor *twos = MK(EM_FLOAT32, EM_DIMS(2, 2), 2, 2, 2, 2);
  ASSERT_TRUE(allclose(twos, s, 0, 0, false));
  em_tensor *z1 = em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32);
  em_tensor *z2 = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  ASSERT_TRUE(allclose(z1, z2, 0, 0, false));
  /* bool */
  em_tensor *b1 = MK(EM_BOOL, EM_DIMS(2), 1, 0);
  em_tensor *b2 = MK(EM_BOOL, EM_DIMS(2), 1, 1);
  ASSERT_TRUE(!allclose(b1, b2, 0, 0.5, false));
  ASSERT_TRUE(allclose(b1, b2, 0, 1, false));
  /* errors */
  em_tensor *four = MK(EM_FLOAT32, EM_DIMS(4), 1, 2, 3, 4);
  bool r;
  ASSERT_ERR(em_tensor_allclose(a, four, 1e-5, 1e-8, false, &r), EM_ERR_SHAPE,
             "the size of tensor a (3) must match the size of tensor b (4)");
  ASSERT_ERR(em_tensor_allclose(a, row, -1, 1e-8, false, &r), EM_ERR_INVALID,
             "rtol must be greater than or equal to zero, but got -1");
  ASSERT_ERR(em_tensor_allclose(a, row, 1e-5, -1, false, &r), EM_ERR_INVALID,
             "atol must be greater than or equal to zero, but got -1");
  ASSERT_ERR(em_tensor_allclose(a, NULL, 1e-5, 1e-8, false, &r), EM_ERR_INVALID, "NULL");
  em_tensor_release(a), em_tensor_release(row), em_tensor_release(i), em_tensor_release(j);
  em_tensor_release(big1), em_tensor_release(big2);
  em_tensor_release(m), em_tensor_release(mt), em_tensor_release(m2);
  em_tensor_release(s), em_tensor_release(twos), em_tensor_release(z1), em_tensor_release(z2);
  em_tensor_release(b1), em_tensor_release(b2), em_tensor_release(four);
}

EM_TEST(equal_semantics) {
  em_tensor *i = MK(EM_INT64, EM_DIMS(2), 1, 2);
  em_tensor *f = MK(EM_FLOAT32, EM_DIMS(2), 1, 2);
  em_tensor *g = MK(EM_FLOAT32, EM_DIMS(2), 1, 2.5);
  em_tensor *row = MK(EM_INT64, EM_DIMS(1, 2), 1, 2);
  em_tensor *nan = MK(EM_FLOAT64, EM_DIMS(1), NAN);
  ASSERT_TRUE(equal(i, f));        /* promoted: torch.equal(tensor([1,2]), tensor([1.,2.])) */
  ASSERT_TRUE(!equal(f, g));
  ASSERT_TRUE(!equal(i, row));     /* shapes differ: false, no broadcasting */
  ASSERT_TRUE(!equal(nan, nan));   /* NaN != NaN */
  /* compared in the promoted dtype: 16777217 as float32 is 16777216 */
  em_tensor *big = em_tensor_full(EM_DIMS(1), em_scalar_int(16777217), EM_INT64);
  em_tensor *bigf = em_tensor_full(EM_DIMS(1), em_scalar_float(16777216.0), EM_FLOAT32);
  ASSERT_TRUE(equal(big, bigf));
  em_tensor *big64 = em_tensor_full(EM_DIMS(1), em_scalar_float(16777216.0), EM_FLOAT64);
  ASSERT_TRUE(!equal(big, big64));
  em_tensor *e1 = em_tensor_zeros(EM_DIMS(0, 2), EM_INT8);
  em_tensor *e2 = em_tensor_zeros(EM_DIMS(0, 2), EM_FLOAT32);
  ASSERT_TRUE(equal(e1, e2));
  em_tensor *s1 = em_tensor_scalar(em_scalar_bool(true), EM_BOOL);
  em_tensor *s2 = em_tensor_scalar(em_scalar_int(1), EM_UINT8);
  ASSERT_TRUE(equal(s1, s2));
  bool r;
  ASSERT_ERR(em_tensor_equal(i, f, NULL), EM_ERR_INVALID, "equal: NULL argument");
  ASSERT_ERR(em_tensor_equal(NULL, f, &r), EM_ERR_INVALID, "equal: NULL argument");
  em_tensor_release(i), em_tensor_release(f), em_tensor_release(g), em_tensor_release(row);
  em_tensor_release(nan), em_tensor_release(big), em_tensor_release(bigf), em_tensor_release(big64);
  em_tensor_release(e1), em_tensor_release(e2), em_tensor_release(s1), em_tensor_release(s2);
}

EM_TEST_MAIN()
