/* Autograd on the GPU: gradients computed by backward on CUDA tensors are
 * checked against central finite differences of the same function run on
 * the GPU (a projected gradcheck in float64: s = sum(f(x) * v) for a fixed
 * random v), and against the CPU's backward. em_ag_gradcheck itself reads
 * tensors on the host, so the check is done here by hand. Skips (77)
 * without a CUDA device. */
#include "autograd/autograd.h"
#include "tests/gpu/gpu_util.h"

typedef em_tensor *(*fn_t)(em_tensor *const *in);

/* s = sum(f(in) * v), a 0-dim tensor on in's device. */
static em_tensor *project(fn_t f, em_tensor *const *in, em_tensor *v) {
  em_tensor *y = f(in);
  if (!y) return NULL;
  em_tensor *p = em_tensor_mul(y, v);
  em_tensor_release(y);
  if (!p) return NULL;
  em_tensor *s = em_tensor_sum(p, 0, NULL, false, EM_DTYPE_UNDEFINED);
  em_tensor_release(p);
  return s;
}

/* Gradients of s wrt leaves made from cpu_in (copies on dev); grads[i]
 * are new CPU tensors. */
static em_status grads_on(fn_t f, int nin, em_tensor *const *cpu_in, em_tensor *v_cpu, em_device dev,
                          em_tensor **grads) {
  em_tensor *in[8] = {0}, *v = em_tensor_to_device(v_cpu, dev), *s = NULL;
  em_status st = EM_OK;
  for (int i = 0; i < nin; i++) {
    in[i] = em_tensor_clone(cpu_in[i]);
    em_tensor *d = in[i] ? em_tensor_to_device(in[i], dev) : NULL;
    em_tensor_release(in[i]);
    in[i] = d;
    if (!d || em_tensor_set_requires_grad(d, true)) return em_last_status();
  }
  s = v ? project(f, in, v) : NULL;
  if (!s) st = em_last_status();
  if (!st) st = em_backward(s, NULL, false);
  for (int i = 0; i < nin && !st; i++) {
    em_tensor *g = em_tensor_grad(in[i]);
    grads[i] = g ? em_tensor_to_device(g, EM_DEVICE_CPU) : NULL;
    em_tensor_release(g);
    if (!grads[i]) st = em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  }
  em_tensor_release(s), em_tensor_release(v);
  for (int i = 0; i < nin; i++) em_tensor_release(in[i]);
  return st;
}

/* s evaluated on the GPU (no grad) for inputs cpu_in. */
static double s_on_gpu(fn_t f, int nin, em_tensor *const *cpu_in, em_tensor *v_gpu) {
  em_tensor *in[8];
  for (int i = 0; i < nin; i++) in[i] = em_tensor_to_device(cpu_in[i], GPU);
  bool prev = em_set_grad_enabled(false);
  em_tensor *s = project(f, in, v_gpu);
  em_set_grad_enabled(prev);
  double r = s ? em_tensor_item_double(s) : NAN;
  em_tensor_release(s);
  for (int i = 0; i < nin; i++) em_tensor_release(in[i]);
  return r;
}

/* The check; returns 1 when every gradient entry matches. */
static int gpu_gradcheck(const char *name, fn_t f, int nin, em_tensor *const *cpu_in) {
  em_tensor *y = f(cpu_in);
  if (!y) {
    fprintf(stderr, "  %s: forward failed on the CPU: %s\n", name, em_last_error());
    return 0;
  }
  em_tensor *v = g_values(y->ndim, y->shape, EM_FLOAT64, -1, 1, 99);
  em_tensor_release(y);
  em_tensor *vg = em_tensor_to_device(v, GPU);
  em_tensor *gg[8] = {0}, *gc[8] = {0};
  int ok = grads_on(f, nin, cpu_in, v, GPU, gg) == EM_OK && grads_on(f, nin, cpu_in, v, EM_DEVICE_CPU, gc) == EM_OK;
  if (!ok) fprintf(stderr, "  %s: backward failed: %s\n", name, em_last_error());
  const double eps = 1e-6, atol = 1e-5, rtol = 1e-4;
  for (int i = 0; ok && i < nin; i++) {
    ok = g_close(gg[i], gc[i], 1e-9, 1e-10, __FILE__, __LINE__, name); /* GPU vs CPU backward */
    em_tensor *x = em_tensor_clone(cpu_in[i]);
    for (int64_t j = 0; ok && j < x->numel; j++) {
      double *p = (double *)em__data_ptr(x) + j, x0 = *p;
      em_tensor *ins[8];
      for (int k = 0; k < nin; k++) ins[k] = k == i ? x : cpu_in[k];
      *p = x0 + eps;
      double sp = s_on_gpu(f, nin, ins, vg);
      *p = x0 - eps;
      double sm = s_on_gpu(f, nin, ins, vg);
      *p = x0;
      double num = (sp - sm) / (2 * eps), ana = em_test_get(gg[i], j);
      if (!(fabs(ana - num) <= atol + rtol * fabs(num))) {
        fprintf(stderr, "  %s: input %d element %lld: backward %.10g, finite differences %.10g\n",
                name, i, (long long)j, ana, num);
        ok = 0;
      }
    }
    em_tensor_release(x);
  }
  for (int i = 0; i < nin; i++) em_tensor_release(gg[i]), em_tensor_release(gc[i]);
  em_tensor_release(vg), em_tensor_release(v);
  return ok;
}

#define GRADCHECK(name, f, ...)                                                      \
  do {                                                                               \
    em_tensor *in_[] = {__VA_ARGS__};                                                \
    int n_ = (int)(sizeof in_ / sizeof in_[0]);                                      \
    int ok_ = gpu_gradcheck(name, f, n_, in_);                                       \
    for (int i_ = 0; i_ < n_; i_++) em_tensor_release(in_[i_]);                      \
    if (!ok_) {                                                                      \
      EM_FAILF("%s: gradients differ", name);                                        \
      return;                                                                        \
    }                                                                                \
  } while (0)

#define X64(seed, ...) g_values(EM_DIMS(__VA_ARGS__), EM_FLOAT64, -1.5, 1.5, seed)

/* ---- functions under test ---------------------------------------------------------------- */

static em_tensor *f_mlp(em_tensor *const *in) { /* tanh(x @ w + b) */
  em_tensor *h = em_tensor_matmul(in[0], in[1]);
  em_tensor *z = h ? em_tensor_add(h, in[2]) : NULL;
  em_tensor *r = z ? em_tensor_tanh(z) : NULL;
  em_tensor_release(h), em_tensor_release(z);
  return r;
}
static em_tensor *f_softmax(em_tensor *const *in) {
  em_tensor *a = em_tensor_softmax(in[0], 1, EM_DTYPE_UNDEFINED);
  em_tensor *b = em_tensor_log_softmax(in[0], 0, EM_DTYPE_UNDEFINED);
  em_tensor *r = a && b ? em_tensor_add(a, b) : NULL;
  em_tensor_release(a), em_tensor_release(b);
  return r;
}
static em_tensor *f_reductions(em_tensor *const *in) { /* var + logsumexp + norm along dim 1 */
  const int64_t d[] = {1};
  em_tensor *a = em_tensor_var(in[0], 1, d, 1, false);
  em_tensor *b = em_tensor_logsumexp(in[0], 1, d, false);
  em_tensor *c = em_tensor_norm(in[0], 2, 1, d, false);
  em_tensor *ab = a && b ? em_tensor_add(a, b) : NULL;
  em_tensor *r = ab && c ? em_tensor_add(ab, c) : NULL;
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(ab);
  return r;
}
static em_tensor *f_broadcast(em_tensor *const *in) { /* a * b + a / (b^2 + 1), b broadcast */
  em_tensor *ab = em_tensor_mul(in[0], in[1]);
  em_tensor *b2 = em_tensor_square(in[1]);
  em_tensor *b21 = b2 ? em_tensor_add_scalar(b2, em_scalar_float(1)) : NULL;
  em_tensor *q = b21 ? em_tensor_div(in[0], b21) : NULL;
  em_tensor *r = ab && q ? em_tensor_add(ab, q) : NULL;
  em_tensor_release(ab), em_tensor_release(b2), em_tensor_release(b21), em_tensor_release(q);
  return r;
}
static em_tensor *f_activations(em_tensor *const *in) { /* gelu + silu * sigmoid, amax */
  em_tensor *g = em_tensor_gelu(in[0], false), *s = em_tensor_silu(in[0]), *sg = em_tensor_sigmoid(in[0]);
  em_tensor *ss = s && sg ? em_tensor_mul(s, sg) : NULL;
  em_tensor *r = g && ss ? em_tensor_add(g, ss) : NULL;
  const int64_t d[] = {0};
  em_tensor *m = r ? em_tensor_amax(r, 1, d, true) : NULL;
  em_tensor *out = m ? em_tensor_sub(r, m) : NULL;
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(sg), em_tensor_release(ss);
  em_tensor_release(r), em_tensor_release(m);
  return out;
}
static em_tensor *f_shape(em_tensor *const *in) { /* cat, transpose, cumsum */
  em_tensor *t = em_tensor_transpose(in[1], 0, 1);
  em_tensor *c = t ? em_tensor_cat(2, (em_tensor *[]){in[0], t}, 0) : NULL;
  em_tensor *r = c ? em_tensor_cumsum(c, 1, EM_DTYPE_UNDEFINED) : NULL;
  em_tensor_release(t), em_tensor_release(c);
  return r;
}

EM_TEST(gradients_on_the_gpu_match_finite_differences) {
  REQUIRE_CUDA();
  GRADCHECK("mlp", f_mlp, X64(1, 3, 4), X64(2, 4, 5), X64(3, 5));
  GRADCHECK("softmax", f_softmax, X64(4, 3, 5));
  GRADCHECK("reductions", f_reductions, X64(5, 3, 6));
  GRADCHECK("broadcast", f_broadcast, X64(6, 2, 3, 4), X64(7, 3, 1));
  GRADCHECK("activations", f_activations, X64(8, 4, 3));
  GRADCHECK("shape", f_shape, X64(9, 2, 3), X64(10, 3, 2));
}

EM_TEST(leaf_gradients_stay_on_the_device) {
  REQUIRE_CUDA();
  em_tensor *w = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32), *gw = g_to(w, GPU);
  ASSERT_OK(em_tensor_set_requires_grad(gw, true));
  em_tensor *y = em_tensor_mul_scalar(gw, em_scalar_float(2));
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(gw);
  ASSERT_NOTNULL(g);
  ASSERT_TRUE(em_device_eq(g->device, GPU));
  em_tensor *two = em_tensor_full(EM_DIMS(3), em_scalar_float(2), EM_FLOAT32);
  ASSERT_GPU_CLOSE(g, two, 0, 0);
  em_tensor_release(two), em_tensor_release(g), em_tensor_release(s), em_tensor_release(y);
  em_tensor_release(gw), em_tensor_release(w);
}

/* Moving a tensor between devices is differentiable both ways, and the
 * gradient lands on the leaf's device (w * 3 on the GPU from a CPU leaf;
 * (v on the CPU) * 5 from a GPU leaf; an asynchronous move from pinned
 * memory records the same). */
EM_TEST(moves_between_devices_carry_gradients) {
  REQUIRE_CUDA();
  em_tensor *w = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  ASSERT_OK(em_tensor_set_requires_grad(w, true));
  em_tensor *wg = em_tensor_to_device(w, GPU);
  ASSERT_NOTNULL(wg);
  ASSERT_TRUE(em_tensor_requires_grad(wg) && !em_tensor_is_leaf(wg));
  em_tensor *y = em_tensor_mul_scalar(wg, em_scalar_float(3));
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(w);
  ASSERT_NOTNULL(g);
  ASSERT_TRUE(g->device.type == EM_CPU);
  double three[4] = {3, 3, 3, 3};
  ASSERT_TENSOR_CLOSE(g, three, 0, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(y), em_tensor_release(wg);

  em_tensor *z = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32); /* no grad: copies are leaves */
  em_tensor *v = g_to(z, GPU);
  ASSERT_OK(em_tensor_set_requires_grad(v, true)); /* a GPU leaf */
  em_tensor *vc = em_tensor_to_device(v, EM_DEVICE_CPU);
  y = em_tensor_mul_scalar(vc, em_scalar_float(5));
  s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  g = em_tensor_grad(v);
  ASSERT_NOTNULL(g);
  ASSERT_TRUE(em_device_eq(g->device, GPU));
  em_tensor *five = em_tensor_full(EM_DIMS(4), em_scalar_float(5), EM_FLOAT32);
  ASSERT_GPU_CLOSE(g, five, 0, 0);
  em_tensor_release(five), em_tensor_release(g), em_tensor_release(s), em_tensor_release(y);
  em_tensor_release(vc), em_tensor_release(v);

  em_tensor *p = em_tensor_pin_memory(z);
  ASSERT_OK(em_tensor_set_requires_grad(p, true));
  em_tensor *pg = em_tensor_to_device_async(p, GPU, true);
  ASSERT_NOTNULL(pg);
  ASSERT_TRUE(em_tensor_requires_grad(pg));
  s = em_tensor_sum(pg, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  g = em_tensor_grad(p);
  ASSERT_NOTNULL(g);
  ASSERT_TRUE(g->device.type == EM_CPU);
  double ones[4] = {1, 1, 1, 1};
  ASSERT_TENSOR_CLOSE(g, ones, 0, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(pg), em_tensor_release(p);
  em_tensor_release(z), em_tensor_release(w);
}

EM_TEST_MAIN()
