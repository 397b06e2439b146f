/* nn.init: gains, fans, the bounds and spreads of each rule, orthogonal. */
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

static em_tensor *param(int ndim, const int64_t *shape) {
  em_tensor *t = em_tensor_empty(ndim, shape, EM_FLOAT32);
  em_tensor_set_requires_grad(t, true); /* initialisers must work on parameters */
  return t;
}

static void stats(em_tensor *t, double *maxabs, double *mean, double *std) {
  double s = 0, s2 = 0, m = 0;
  for (int64_t i = 0; i < t->numel; i++) {
    double v = em_test_get(t, i);
    s += v;
    s2 += v * v;
    m = fmax(m, fabs(v));
  }
  *maxabs = m;
  *mean = s / t->numel;
  *std = sqrt(s2 / t->numel - *mean * *mean);
}

EM_TEST(gains_and_fans) {
  ASSERT_CLOSE(em_nn_init_calculate_gain("relu", 0), sqrt(2.0), 1e-15, 0);
  ASSERT_CLOSE(em_nn_init_calculate_gain("tanh", 0), 5.0 / 3, 1e-15, 0);
  ASSERT_CLOSE(em_nn_init_calculate_gain("leaky_relu", sqrt(5.0)), sqrt(1.0 / 3), 1e-15, 0);
  ASSERT_CLOSE(em_nn_init_calculate_gain("conv2d", 0), 1, 0, 0);
  ASSERT_CLOSE(em_nn_init_calculate_gain("selu", 0), 0.75, 0, 0);
  ASSERT_TRUE(isnan(em_nn_init_calculate_gain("swish", 0)));
  ASSERT_TRUE(strstr(em_last_error(), "unsupported nonlinearity swish"));
  em_tensor *w = em_tensor_empty(EM_DIMS(16, 8, 3, 3), EM_FLOAT32);
  int64_t fi, fo;
  ASSERT_OK(em_nn_init_fans(w, &fi, &fo));
  ASSERT_EQ(fi, 72);
  ASSERT_EQ(fo, 144);
  em_tensor *v = em_tensor_empty(EM_DIMS(5), EM_FLOAT32);
  ASSERT_ERR(em_nn_init_fans(v, &fi, &fo), EM_ERR_INVALID, "fewer than 2 dimensions");
  ASSERT_ERR(em_nn_init_xavier_uniform_(v, 1, NULL), EM_ERR_INVALID, "fewer than 2 dimensions");
  em_tensor_release(w), em_tensor_release(v);
}

EM_TEST(uniform_rules_hit_their_bounds) {
  em_manual_seed(1);
  em_tensor *w = param(EM_DIMS(300, 200));
  double m, mean, sd;
  ASSERT_OK(em_nn_init_xavier_uniform_(w, 2.0, NULL));
  double a = 2.0 * sqrt(6.0 / 500);
  stats(w, &m, &mean, &sd);
  ASSERT_TRUE(m <= a && m > 0.99 * a);
  ASSERT_CLOSE(sd, a / sqrt(3.0), 0.02, 0);
  ASSERT_OK(em_nn_init_kaiming_uniform_(w, sqrt(5.0), EM_FAN_IN, "leaky_relu", NULL));
  double b = 1 / sqrt(200.0); /* PyTorch's Linear default */
  stats(w, &m, &mean, &sd);
  ASSERT_TRUE(m <= b && m > 0.99 * b);
  ASSERT_OK(em_nn_init_kaiming_uniform_(w, 0, EM_FAN_OUT, "relu", NULL));
  double c = sqrt(3.0) * sqrt(2.0) / sqrt(300.0);
  stats(w, &m, &mean, &sd);
  ASSERT_TRUE(m <= c && m > 0.99 * c);
  ASSERT_OK(em_nn_init_uniform_(w, -0.5, 0.25, NULL));
  stats(w, &m, &mean, &sd);
  ASSERT_CLOSE(mean, -0.125, 0, 0.01);
  em_tensor_release(w);
}

EM_TEST(normal_rules_have_their_spread) {
  em_manual_seed(2);
  em_tensor *w = param(EM_DIMS(400, 250));
  double m, mean, sd;
  ASSERT_OK(em_nn_init_kaiming_normal_(w, 0, EM_FAN_IN, "relu", NULL));
  stats(w, &m, &mean, &sd);
  ASSERT_CLOSE(sd, sqrt(2.0 / 250), 0.02, 0);
  ASSERT_CLOSE(mean, 0, 0, 0.003);
  ASSERT_OK(em_nn_init_xavier_normal_(w, 1, NULL));
  stats(w, &m, &mean, &sd);
  ASSERT_CLOSE(sd, sqrt(2.0 / 650), 0.02, 0);
  ASSERT_OK(em_nn_init_normal_(w, 3, 0.5, NULL));
  stats(w, &m, &mean, &sd);
  ASSERT_CLOSE(mean, 3, 0, 0.01);
  ASSERT_CLOSE(sd, 0.5, 0.02, 0);
  ASSERT_ERR(em_nn_init_normal_(w, 0, -1, NULL), EM_ERR_INVALID, "");
  ASSERT_OK(em_nn_init_constant_(w, 0.25));
  ASSERT_CLOSE(em_test_get(w, 12345), 0.25, 0, 0);
  ASSERT_OK(em_nn_init_zeros_(w));
  stats(w, &m, &mean, &sd);
  ASSERT_CLOSE(m, 0, 0, 0);
  ASSERT_OK(em_nn_init_ones_(w));
  ASSERT_CLOSE(em_test_get(w, 0), 1, 0, 0);
  em_tensor_release(w);
}

/* q q^T (rows <= cols) or q^T q (rows >= cols) is gain^2 times the
 * identity. */
static void check_orthogonal(int64_t rows, int64_t cols, double gain) {
  em_tensor *w = em_tensor_empty(EM_DIMS(rows, cols), EM_FLOAT64);
  em_status st = em_nn_init_orthogonal_(w, gain, NULL);
  if (st) {
    EM_FAILF("orthogonal_: %s", em_last_error());
    em_tensor_release(w);
    return;
  }
  const double *q = em_tensor_data(w);
  int64_t k = rows < cols ? rows : cols;
  double worst = 0;
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) {
      double acc = 0;
      if (rows >= cols)
        for (int64_t r = 0; r < rows; r++) acc += q[r * cols + i] * q[r * cols + j];
      else
        for (int64_t c = 0; c < cols; c++) acc += q[i * cols + c] * q[j * cols + c];
      worst = fmax(worst, fabs(acc - (i == j ? gain * gain : 0)));
    }
  if (worst > 1e-10) EM_FAILF("orthogonal_ %lldx%lld: deviation %g", (long long)rows, (long long)cols, worst);
  em_tensor_release(w);
}

EM_TEST(orthogonal) {
  em_manual_seed(5);
  check_orthogonal(6, 4, 1.0);
  check_orthogonal(3, 7, 2.0);
  check_orthogonal(5, 5, 1.5);
  em_tensor *w = param(EM_DIMS(4, 2, 3));
  ASSERT_OK(em_nn_init_orthogonal_(w, 1, NULL));
  em_tensor *v = em_tensor_empty(EM_DIMS(3), EM_FLOAT32);
  ASSERT_ERR(em_nn_init_orthogonal_(v, 1, NULL), EM_ERR_INVALID, "2 or more dimensions");
  em_tensor *i = em_tensor_empty(EM_DIMS(3, 3), EM_INT32);
  ASSERT_ERR(em_nn_init_orthogonal_(i, 1, NULL), EM_ERR_DTYPE, "floating-point");
  em_tensor_release(w), em_tensor_release(v), em_tensor_release(i);
}

EM_TEST_MAIN()
