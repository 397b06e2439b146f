/* nn.init: PyTorch's initialisation rules, in place, without autograd. */
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "nn/nn.h"

/* Runs an in-place initialiser with grad mode off (parameters are leaves
 * that require grad; writing them under autograd would be an error). */
#define NO_GRAD(expr)                            \
  ({                                             \
    bool prev_ = em_set_grad_enabled(false);     \
    em_status st_ = (expr);                      \
    em_set_grad_enabled(prev_);                  \
    st_;                                         \
  })

static em_status need_float(const char *op, em_tensor *t) {
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
  if (!em_dtype_is_float((em_dtype)t->dtype))
    return em__set_error(EM_ERR_DTYPE, "%s: expected a floating-point tensor, got %s", op,
                         em_dtype_name((em_dtype)t->dtype));
  return EM_OK;
}

double em_nn_init_calculate_gain(const char *nl, double param) {
  if (!nl) nl = "linear";
  static const char *const linear[] = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                       "conv_transpose2d", "conv_transpose3d", "sigmoid"};
  for (size_t i = 0; i < sizeof linear / sizeof linear[0]; i++)
    if (strcmp(nl, linear[i]) == 0) return 1.0;
  if (strcmp(nl, "tanh") == 0) return 5.0 / 3;
  if (strcmp(nl, "relu") == 0) return sqrt(2.0);
  if (strcmp(nl, "leaky_relu") == 0) return sqrt(2.0 / (1 + param * param));
  if (strcmp(nl, "selu") == 0) return 3.0 / 4;
  em__set_error(EM_ERR_INVALID, "calculate_gain: unsupported nonlinearity %s", nl);
  return NAN;
}

em_status em_nn_init_fans(em_tensor *t, int64_t *fan_in, int64_t *fan_out) {
  if (t->ndim < 2)
    return em__set_error(EM_ERR_INVALID, "Fan in and fan out can not be computed for tensor with "
                         "fewer than 2 dimensions (got %s)", em__tshape(t));
  int64_t rf = 1;
  for (int d = 2; d < t->ndim; d++) rf *= t->shape[d];
  *fan_in = t->shape[1] * rf;
  *fan_out = t->shape[0] * rf;
  return EM_OK;
}

em_status em_nn_init_uniform_(em_tensor *t, double a, double b, em_generator *g) {
  EM_CHECK(need_float("uniform_", t));
  return NO_GRAD(em_tensor_uniform_(t, a, b, g));
}

em_status em_nn_init_normal_(em_tensor *t, double mean, double std, em_generator *g) {
  EM_CHECK(need_float("normal_", t));
  return NO_GRAD(em_tensor_normal_(t, mean, std, g));
}

em_status em_nn_init_constant_(em_tensor *t, double value) {
  if (!t) return em__set_error(EM_ERR_INVALID, "constant_: NULL tensor");
  return NO_GRAD(em_tensor_fill_(t, em_scalar_float(value)));
}
em_status em_nn_init_zeros_(em_tensor *t) { return em_nn_init_constant_(t, 0); }
em_status em_nn_init_ones_(em_tensor *t) { return em_nn_init_constant_(t, 1); }

em_status em_nn_init_xavier_uniform_(em_tensor *t, double gain, em_generator *g) {
  int64_t fi, fo;
  EM_CHECK(need_float("xavier_uniform_", t));
  EM_CHECK(em_nn_init_fans(t, &fi, &fo));
  double std = gain * sqrt(2.0 / (double)(fi + fo));
  double a = sqrt(3.0) * std;
  return NO_GRAD(em_tensor_uniform_(t, -a, a, g));
}

em_status em_nn_init_xavier_normal_(em_tensor *t, double gain, em_generator *g) {
  int64_t fi, fo;
  EM_CHECK(need_float("xavier_normal_", t));
  EM_CHECK(em_nn_init_fans(t, &fi, &fo));
  return NO_GRAD(em_tensor_normal_(t, 0, gain * sqrt(2.0 / (double)(fi + fo)), g));
}

static em_status kaiming_std(const char *op, em_tensor *t, double a, em_fan_mode mode,
                             const char *nl, double *std) {
  int64_t fi, fo;
  EM_CHECK(need_float(op, t));
  EM_CHECK(em_nn_init_fans(t, &fi, &fo));
  if (mode != EM_FAN_IN && mode != EM_FAN_OUT)
    return em__set_error(EM_ERR_INVALID, "%s: mode must be fan_in or fan_out", op);
  double gain = em_nn_init_calculate_gain(nl ? nl : "leaky_relu", a);
  if (isnan(gain)) return em_last_status();
  int64_t fan = mode == EM_FAN_IN ? fi : fo;
  *std = fan > 0 ? gain / sqrt((double)fan) : 0;
  return EM_OK;
}

em_status em_nn_init_kaiming_uniform_(em_tensor *t, double a, em_fan_mode mode, const char *nl,
                                      em_generator *g) {
  double std = 0;
  EM_CHECK(kaiming_std("kaiming_uniform_", t, a, mode, nl, &std));
  if (t->numel == 0) return EM_OK;
  double bound = sqrt(3.0) * std;
  return NO_GRAD(em_tensor_uniform_(t, -bound, bound, g));
}

em_status em_nn_init_kaiming_normal_(em_tensor *t, double a, em_fan_mode mode, const char *nl,
                                     em_generator *g) {
  double std = 0;
  EM_CHECK(kaiming_std("kaiming_normal_", t, a, mode, nl, &std));
  if (t->numel == 0) return EM_OK;
  return NO_GRAD(em_tensor_normal_(t, 0, std, g));
}

/* Thin QR of a (m x n, m >= n, row-major, double) by modified Gram-Schmidt
 * with re-orthogonalisation: q (m x n) with orthonormal columns and
 * R's diagonal positive, which is the sign convention PyTorch applies to
 * LAPACK's QR. */
static void qr_positive(const double *a, int64_t m, int64_t n, double *q) {
  memcpy(q, a, sizeof(double) * (size_t)(m * n));
  for (int64_t j = 0; j < n; j++) {
    for (int pass = 0; pass < 2; pass++)
      for (int64_t k = 0; k < j; k++) {
        double dot = 0;
        for (int64_t i = 0; i < m; i++) dot += q[i * n + k] * q[i * n + j];
        for (int64_t i = 0; i < m; i++) q[i * n + j] -= dot * q[i * n + k];
      }
    double norm = 0;
    for (int64_t i = 0; i < m; i++) norm += q[i * n + j] * q[i * n + j];
    norm = sqrt(norm);
    for (int64_t i = 0; i < m; i++) q[i * n + j] = norm > 0 ? q[i * n + j] / norm : 0;
  }
}

em_status em_nn_init_orthogonal_(em_tensor *t, double gain, em_generator *g) {
  EM_CHECK(need_float("orthogonal_", t));
  if (t->ndim < 2)
    return em__set_error(EM_ERR_INVALID, "orthogonal_: only tensors with 2 or more dimensions are "
                         "supported (got %s)", em__tshape(t));
  if (t->numel == 0) return EM_OK;
  int64_t rows = t->shape[0], cols = t->numel / rows;
  bool transposed = rows < cols;
  int64_t m = transposed ? cols : rows, n = transposed ? rows : cols;
  em_tensor *flat = em_tensor_randn(EM_DIMS(rows, cols), EM_FLOAT64, g);
  if (!flat) return em_last_status();
  double *a = malloc(sizeof(double) * (size_t)(m * n)), *q = malloc(sizeof(double) * (size_t)(m * n));
  em_status st = EM_OK;
  em_tensor *out = NULL, *shaped = NULL;
  if (!a || !q) {
    st = em__set_error(EM_ERR_NOMEM, "orthogonal_: out of memory");
    goto done;
  }
  const double *f = em_tensor_data(flat);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      if (transposed) a[c * n + r] = f[r * cols + c];
      else a[r * n + c] = f[r * cols + c];
    }
  qr_positive(a, m, n, q);
  out = em_tensor_empty(EM_DIMS(rows, cols), EM_FLOAT64);
  EM_CHECK_PTR_GOTO(out, st, done);
  double *o = em_tensor_data(out);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) o[r * cols + c] = gain * (transposed ? q[c * n + r] : q[r * n + c]);
  shaped = em_tensor_view(out, t->ndim, t->shape);
  EM_CHECK_PTR_GOTO(shaped, st, done);
  st = NO_GRAD(em_tensor_copy_(t, shaped));
done:
  free(a), free(q);
  em_tensor_release(shaped), em_tensor_release(out), em_tensor_release(flat);
  return st;
}
