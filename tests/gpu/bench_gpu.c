/* GPU benchmark run by tests/gpu/device_check.sh: one summary table.
 *
 *   GEMM      ember's mm (cuBLAS through the dispatcher) vs a direct cuBLAS
 *             call on the same buffers: float32, TF32, bfloat16; TFLOP/s
 *   memory    elementwise add and a full sum vs a device-to-device copy; GB/s
 *   training  one step (forward, loss, backward, SGD) of the Fashion-MNIST
 *             CNN (batch 256) and of a GPT-style transformer block (batch 8,
 *             512 tokens, width 768, 12 heads); ms per step, with ember on
 *             the CPU as the reference for the CNN
 *
 * Usage: bench_gpu [--quick]. Exit status 1 when a row failed (the table is
 * printed anyway, with the error in that row). */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "core/cuda/ember_cuda.h"
#include "nn/nn.h"

#define GPU EM_DEVICE_CUDA(0)

typedef struct row {
  char name[48], unit[16], note[160];
  double ember, ref;
  bool failed;
} row;

static row rows[32];
static int nrows;
static int failures;

static row *add_row(const char *name, const char *unit) {
  row *r = &rows[nrows++];
  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->unit, sizeof r->unit, "%s", unit);
  r->ref = NAN;
  return r;
}

static void fail_row(row *r, const char *what) {
  r->failed = true;
  failures++;
  snprintf(r->note, sizeof r->note, "FAILED %s: %s", what, em_last_error());
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds per call of fn(ctx) on the GPU, timed with events over iters
 * calls after warm-up ones. */
typedef em_status (*gpu_fn)(void *ctx);
static em_status time_gpu(gpu_fn fn, void *ctx, int warm, int iters, double *sec) {
  for (int i = 0; i < warm; i++) EM_CHECK(fn(ctx));
  em_cuda_event *a = em_cuda_event_create(true), *b = em_cuda_event_create(true);
  if (!a || !b) return em_last_status();
  em_status st = em_cuda_event_record(a, NULL);
  for (int i = 0; i < iters && !st; i++) st = fn(ctx);
  if (!st) st = em_cuda_event_record(b, NULL);
  if (!st) st = em_cuda_event_synchronize(b);
  float ms = 0;
  if (!st) st = em_cuda_event_elapsed_ms(a, b, &ms);
  em_cuda_event_destroy(a), em_cuda_event_destroy(b);
  *sec = ms * 1e-3 / iters;
  return st;
}

static em_tensor *filled(int ndim, const int64_t *shape, em_dtype dt, double v) {
  em_tensor *t = em_tensor_empty_on(ndim, shape, dt, GPU);
  if (t && em_tensor_fill_(t, em_scalar_float(v))) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

/* ---- GEMM ------------------------------------------------------------------------------------ */

typedef struct gemm_ctx {
  em_tensor *a, *b;
  cublasHandle_t h;
  void *c_ref;
  int n;
  cudaDataType_t ty;
  cublasComputeType_t ct;
} gemm_ctx;

static em_status ember_mm(void *p) {
  gemm_ctx *g = p;
  em_tensor *c = em_tensor_mm(g->a, g->b);
  if (!c) return em_last_status();
  em_tensor_release(c); /* the block returns to the cache on the same stream */
  return EM_OK;
}

static em_status cublas_mm(void *p) {
  gemm_ctx *g = p;
  float one = 1, zero = 0;
  cublasStatus_t s = cublasGemmEx(g->h, CUBLAS_OP_N, CUBLAS_OP_N, g->n, g->n, g->n, &one,
                                  em_tensor_data(g->b), g->ty, g->n, em_tensor_data(g->a), g->ty,
                                  g->n, &zero, g->c_ref, g->ty, g->n, g->ct, CUBLAS_GEMM_DEFAULT);
  return s == CUBLAS_STATUS_SUCCESS ? EM_OK : em_set_error(EM_ERR_CUDA, "cublasGemmEx failed (%d)", (int)s);
}

static void bench_gemm(const char *name, em_dtype dt, const char *precision, cudaDataType_t ty,
                       cublasComputeType_t ct, int n, int iters) {
  row *r = add_row(name, "TFLOP/s");
  gemm_ctx g = {0};
  g.n = n;
  g.ty = ty;
  g.ct = ct;
  em_cuda_set_float32_matmul_precision(precision);
  g.a = filled(EM_DIMS(n, n), dt, 0.01);
  g.b = filled(EM_DIMS(n, n), dt, 0.02);
  double flop = 2.0 * n * (double)n * n, sec;
  if (!g.a || !g.b) {
    fail_row(r, "setup");
    goto done;
  }
  if (time_gpu(ember_mm, &g, 2, iters, &sec)) {
    fail_row(r, "ember mm");
    goto done;
  }
  r->ember = flop / sec * 1e-12;
  if (cublasCreate(&g.h) != CUBLAS_STATUS_SUCCESS ||
      cublasSetStream(g.h, (cudaStream_t)em_cuda_stream_handle(em_cuda_current_stream(0))) !=
          CUBLAS_STATUS_SUCCESS ||
      cudaMalloc(&g.c_ref, (size_t)n * n * em_dtype_size(dt)) != cudaSuccess) {
    em_set_error(EM_ERR_CUDA, "cuBLAS setup failed");
    fail_row(r, "reference");
    goto done;
  }
  if (time_gpu(cublas_mm, &g, 2, iters, &sec)) {
    fail_row(r, "cuBLAS");
    goto done;
  }
  r->ref = flop / sec * 1e-12;
  snprintf(r->note, sizeof r->note, "%dx%dx%d, reference: direct cublasGemmEx", n, n, n);
done:
  if (g.h) cublasDestroy(g.h);
  if (g.c_ref) cudaFree(g.c_ref);
  em_tensor_release(g.a), em_tensor_release(g.b);
  em_cuda_set_float32_matmul_precision("highest");
}

/* ---- memory bandwidth ------------------------------------------------------------------------- */

typedef struct mem_ctx {
  em_tensor *a, *b, *out;
  size_t bytes;
} mem_ctx;

static em_status ember_add(void *p) {
  mem_ctx *m = p;
  em_tensor *c = em_tensor_add(m->a, m->b);
  if (!c) return em_last_status();
  em_tensor_release(c);
  return EM_OK;
}
static em_status ember_sum(void *p) {
  mem_ctx *m = p;
  em_tensor *c = em_tensor_sum(m->a, 0, NULL, false, EM_DTYPE_UNDEFINED);
  if (!c) return em_last_status();
  em_tensor_release(c);
  return EM_OK;
}
static em_status d2d_copy(void *p) {
  mem_ctx *m = p;
  cudaError_t e = cudaMemcpyAsync(em_tensor_data(m->out), em_tensor_data(m->a), m->bytes,
                                  cudaMemcpyDeviceToDevice,
                                  (cudaStream_t)em_cuda_stream_handle(em_cuda_current_stream(0)));
  return e == cudaSuccess ? EM_OK : em_set_error(EM_ERR_CUDA, "cudaMemcpyAsync: %s", cudaGetErrorString(e));
}

static void bench_memory(int64_t n, int iters) {
  mem_ctx m = {0};
  m.a = filled(EM_DIMS(n), EM_FLOAT32, 1);
  m.b = filled(EM_DIMS(n), EM_FLOAT32, 2);
  m.out = filled(EM_DIMS(n), EM_FLOAT32, 0);
  m.bytes = (size_t)n * 4;
  row *r1 = add_row("add float32 (a + b)", "GB/s"), *r2 = add_row("sum float32 (all)", "GB/s");
  double sec, copy = NAN;
  if (!m.a || !m.b || !m.out) {
    fail_row(r1, "setup"), fail_row(r2, "setup");
    goto done;
  }
  if (time_gpu(d2d_copy, &m, 2, iters, &sec) == EM_OK) copy = 2.0 * m.bytes / sec * 1e-9;
  r1->ref = r2->ref = copy;
  if (time_gpu(ember_add, &m, 2, iters, &sec))
    fail_row(r1, "add");
  else
    r1->ember = 3.0 * m.bytes / sec * 1e-9;
  if (time_gpu(ember_sum, &m, 2, iters, &sec))
    fail_row(r2, "sum");
  else
    r2->ember = 1.0 * m.bytes / sec * 1e-9;
  if (!r1->failed) snprintf(r1->note, sizeof r1->note, "%lld elements; reference: D2D cudaMemcpy", (long long)n);
  if (!r2->failed) snprintf(r2->note, sizeof r2->note, "reads %zu MB; reference: D2D cudaMemcpy", m.bytes >> 20);
done:
  em_tensor_release(m.a), em_tensor_release(m.b), em_tensor_release(m.out);
}

/* ---- training steps -------------------------------------------------------------------------- */

/* Moves every parameter of m to dev as a new leaf requiring grad. */
static em_status module_to(em_module *m, em_device dev) {
  em_named_tensors ps;
  EM_CHECK(em_module_named_parameters(m, &ps));
  em_status st = EM_OK;
  for (int i = 0; i < ps.n && !st; i++) {
    em_tensor *d = em_tensor_to_device(ps.tensors[i], dev);
    if (!d) {
      st = em_last_status();
      break;
    }
    st = em_tensor_set_requires_grad(d, true);
    if (!st) st = em_module_set_tensor(m, ps.names[i], d);
    em_tensor_release(d);
  }
  em_named_tensors_free(&ps);
  return st;
}

/* Cross-entropy from ops, on the device (nn's cross_entropy computes a GPU
 * tensor's loss on the host):
 * -sum(onehot * log_softmax(logits)) / batch. */
static em_tensor *ce_loss(em_tensor *logits, em_tensor *onehot) {
  em_tensor *ls = em_tensor_log_softmax(logits, 1, EM_DTYPE_UNDEFINED);
  em_tensor *p = ls ? em_tensor_mul(ls, onehot) : NULL;
  em_tensor *s = p ? em_tensor_sum(p, 0, NULL, false, EM_DTYPE_UNDEFINED) : NULL;
  em_tensor *l = s ? em_tensor_mul_scalar(s, em_scalar_float(-1.0 / (double)logits->shape[0])) : NULL;
  em_tensor_release(ls), em_tensor_release(p), em_tensor_release(s);
  return l;
}

/* p -= lr * p.grad for every parameter; grads cleared. */
static em_status sgd_step(em_module *m, double lr) {
  em_named_tensors ps;
  EM_CHECK(em_module_named_parameters(m, &ps));
  em_status st = EM_OK;
  bool prev = em_set_grad_enabled(false);
  for (int i = 0; i < ps.n && !st; i++) {
    em_tensor *g = em_tensor_grad(ps.tensors[i]);
    if (g) st = em_tensor_sub_alpha_(ps.tensors[i], g, em_scalar_float(lr));
    em_tensor_release(g);
  }
  em_set_grad_enabled(prev);
  em_named_tensors_free(&ps);
  if (!st) st = em_module_zero_grad(m, true);
  return st;
}

typedef struct train_ctx {
  em_module *model;
  em_tensor *x, *onehot;
} train_ctx;

static em_status train_step(void *p) {
  train_ctx *t = p;
  em_tensor *out = em_module_forward(t->model, t->x);
  em_tensor *loss = out ? ce_loss(out, t->onehot) : NULL;
  em_status st = loss ? em_backward(loss, NULL, false) : em_last_status();
  if (!st) st = sgd_step(t->model, 0.01);
  em_tensor_release(out), em_tensor_release(loss);
  return st;
}

static em_module *fashion_cnn(void) {
  em_conv_options c = {0};
  em_pool_options p = {.kernel = {2, 2}};
  return em_nn_sequential(10, (em_module *[]){
      em_nn_conv2d(1, 32, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_conv2d(32, 64, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_flatten(1, -1), em_nn_linear(1600, 128, true), em_nn_relu(),
      em_nn_linear(128, 10, true)});
}

static em_tensor *onehot_on(int64_t batch, int64_t classes, em_device dev) {
  em_tensor *h = em_tensor_zeros(EM_DIMS(batch, classes), EM_FLOAT32);
  if (!h) return NULL;
  float *p = em_tensor_data(h);
  for (int64_t i = 0; i < batch; i++) p[i * classes + (i * 7) % classes] = 1;
  em_tensor *d = em_tensor_to_device(h, dev);
  em_tensor_release(h);
  return d;
}

static void bench_cnn(int iters) {
  row *r = add_row("Fashion-MNIST CNN step", "ms/step");
  const int64_t B = 256;
  train_ctx g = {0}, c = {0};
  em_tensor *xc = em_tensor_randn(EM_DIMS(B, 1, 28, 28), EM_FLOAT32, NULL);
  g.model = fashion_cnn();
  c.model = fashion_cnn();
  if (!xc || !g.model || !c.model || module_to(g.model, GPU)) {
    fail_row(r, "setup");
    goto done;
  }
  g.x = em_tensor_to_device(xc, GPU);
  g.onehot = onehot_on(B, 10, GPU);
  c.x = em_tensor_retain(xc);
  c.onehot = onehot_on(B, 10, EM_DEVICE_CPU);
  double sec;
  if (!g.x || !g.onehot || time_gpu(train_step, &g, 3, iters, &sec)) {
    fail_row(r, "GPU step");
    goto done;
  }
  r->ember = sec * 1e3;
  if (c.onehot && train_step(&c) == EM_OK) { /* the CPU for reference: 3 steps */
    double t0 = now_s();
    int k = 0;
    for (; k < 3 && train_step(&c) == EM_OK; k++) {
    }
    if (k) r->ref = (now_s() - t0) / k * 1e3;
  }
  snprintf(r->note, sizeof r->note, "batch %lld, %.0f images/s; reference: ember on %d CPU threads",
           (long long)B, B / sec, em_get_num_threads());
done:
  em_module_release(g.model), em_module_release(c.model);
  em_tensor_release(g.x), em_tensor_release(g.onehot), em_tensor_release(c.x), em_tensor_release(c.onehot);
  em_tensor_release(xc);
}

/* ---- a GPT-style block: x + attn(ln(x)), then + mlp(ln(.)) --------------------------------------- */

typedef struct gpt {
  int64_t B, T, C, H;
  em_tensor *p[8]; /* wqkv [C,3C], bqkv, wo [C,C], bo, w1 [C,4C], b1, w2 [4C,C], b2 */
  em_tensor *mask; /* [T, T]: 0 on and below the diagonal, -inf above */
  em_tensor *x;
} gpt;

#define REL(t) (em_tensor_release(t), (t) = NULL)

static em_tensor *layer_norm(em_tensor *x) { /* over the last dim, no affine */
  const int64_t d[] = {-1};
  em_tensor *m = em_tensor_mean(x, 1, d, true, EM_DTYPE_UNDEFINED);
  em_tensor *v = em_tensor_var(x, 1, d, 0, true);
  em_tensor *ve = v ? em_tensor_add_scalar(v, em_scalar_float(1e-5)) : NULL;
  em_tensor *rs = ve ? em_tensor_rsqrt(ve) : NULL;
  em_tensor *xm = m ? em_tensor_sub(x, m) : NULL;
  em_tensor *y = xm && rs ? em_tensor_mul(xm, rs) : NULL;
  em_tensor_release(m), em_tensor_release(v), em_tensor_release(ve), em_tensor_release(rs), em_tensor_release(xm);
  return y;
}

static em_tensor *linear(em_tensor *x, em_tensor *w, em_tensor *b) {
  em_tensor *h = em_tensor_matmul(x, w);
  em_tensor *y = h ? em_tensor_add(h, b) : NULL;
  em_tensor_release(h);
  return y;
}

/* [B, T, C] -> [B, H, T, D] */
static em_tensor *heads(gpt *g, em_tensor *t) {
  em_tensor *v = em_tensor_reshape(t, EM_DIMS(g->B, g->T, g->H, g->C / g->H));
  em_tensor *r = v ? em_tensor_transpose(v, 1, 2) : NULL;
  em_tensor_release(v);
  return r;
}

static em_tensor *gpt_forward(gpt *g) {
  em_tensor *ln1 = NULL, *qkv = NULL, *q = NULL, *k = NULL, *v = NULL, *kt = NULL, *s = NULL,
            *ss = NULL, *sm = NULL, *a = NULL, *o = NULL, *ob = NULL, *om = NULL, *proj = NULL,
            *x1 = NULL, *ln2 = NULL, *h = NULL, *hg = NULL, *m2 = NULL, *out = NULL;
  em_tensor **parts = NULL;
  int np = 0;
  if (!(ln1 = layer_norm(g->x))) goto done;
  if (!(qkv = linear(ln1, g->p[0], g->p[1]))) goto done;
  if (em_tensor_split(qkv, g->C, 2, &parts, &np)) goto done;
  if (!(q = heads(g, parts[0])) || !(k = heads(g, parts[1])) || !(v = heads(g, parts[2]))) goto done;
  if (!(kt = em_tensor_transpose(k, 2, 3)) || !(s = em_tensor_matmul(q, kt))) goto done;
  if (!(ss = em_tensor_mul_scalar(s, em_scalar_float(1.0 / sqrt((double)(g->C / g->H)))))) goto done;
  REL(s);
  if (!(s = em_tensor_add(ss, g->mask)) || !(sm = em_tensor_softmax(s, -1, EM_DTYPE_UNDEFINED))) goto done;
  if (!(a = em_tensor_matmul(sm, v)) || !(o = em_tensor_transpose(a, 1, 2))) goto done;
  if (!(om = em_tensor_reshape(o, EM_DIMS(g->B, g->T, g->C)))) goto done;
  if (!(proj = linear(om, g->p[2], g->p[3])) || !(x1 = em_tensor_add(g->x, proj))) goto done;
  if (!(ln2 = layer_norm(x1)) || !(h = linear(ln2, g->p[4], g->p[5]))) goto done;
  if (!(hg = em_tensor_gelu(h, true)) || !(m2 = linear(hg, g->p[6], g->p[7]))) goto done;
  out = em_tensor_add(x1, m2);
done:
  em_tensor_list_release(parts, np);
  em_tensor *all[] = {ln1, qkv, q, k, v, kt, s, ss, sm, a, o, ob, om, proj, x1, ln2, h, hg, m2};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) em_tensor_release(all[i]);
  return out;
}

static em_status gpt_step(void *p) {
  gpt *g = p;
  em_tensor *y = gpt_forward(g);
  em_tensor *y2 = y ? em_tensor_square(y) : NULL; /* a stand-in loss: mean(y^2) */
  em_tensor *loss = y2 ? em_tensor_mean(y2, 0, NULL, false, EM_DTYPE_UNDEFINED) : NULL;
  em_status st = loss ? em_backward(loss, NULL, false) : em_last_status();
  bool prev = em_set_grad_enabled(false);
  for (int i = 0; i < 8 && !st; i++) {
    em_tensor *gr = em_tensor_grad(g->p[i]);
    if (gr) st = em_tensor_sub_alpha_(g->p[i], gr, em_scalar_float(1e-4));
    em_tensor_release(gr);
    if (!st) st = em_tensor_set_grad(g->p[i], NULL);
  }
  em_set_grad_enabled(prev);
  em_tensor_release(y), em_tensor_release(y2), em_tensor_release(loss);
  return st;
}

static void bench_gpt(int iters) {
  row *r = add_row("GPT block step (fp32)", "ms/step");
  gpt g = {.B = 8, .T = 512, .C = 768, .H = 12};
  const int64_t C = g.C;
  int64_t shapes[8][2] = {{C, 3 * C}, {3 * C, 0}, {C, C}, {C, 0}, {C, 4 * C}, {4 * C, 0}, {4 * C, C}, {C, 0}};
  for (int i = 0; i < 8; i++) {
    int nd = shapes[i][1] ? 2 : 1;
    em_tensor *c = em_tensor_randn(nd, shapes[i], EM_FLOAT32, NULL);
    em_tensor *s = c ? em_tensor_mul_scalar(c, em_scalar_float(0.02)) : NULL;
    g.p[i] = s ? em_tensor_to_device(s, GPU) : NULL;
    em_tensor_release(c), em_tensor_release(s);
    if (!g.p[i] || em_tensor_set_requires_grad(g.p[i], true)) {
      fail_row(r, "setup");
      goto done;
    }
  }
  {
    em_tensor *m = em_tensor_zeros(EM_DIMS(g.T, g.T), EM_FLOAT32);
    float *mp = m ? em_tensor_data(m) : NULL;
    for (int64_t i = 0; mp && i < g.T; i++)
      for (int64_t j = i + 1; j < g.T; j++) mp[i * g.T + j] = -INFINITY;
    g.mask = m ? em_tensor_to_device(m, GPU) : NULL;
    em_tensor_release(m);
    em_tensor *x = em_tensor_randn(EM_DIMS(g.B, g.T, g.C), EM_FLOAT32, NULL);
    g.x = x ? em_tensor_to_device(x, GPU) : NULL;
    em_tensor_release(x);
  }
  double sec;
  if (!g.mask || !g.x || time_gpu(gpt_step, &g, 2, iters, &sec)) {
    fail_row(r, "step");
    goto done;
  }
  r->ember = sec * 1e3;
  /* matmul FLOPs: 6 * params * tokens for the linears + the two attention
   * products (x3 with backward) */
  double tokens = (double)g.B * g.T, params = 12.0 * C * C;
  double flop = 6 * params * tokens + 3 * 2 * 2.0 * g.B * g.T * (double)g.T * C;
  snprintf(r->note, sizeof r->note, "B=%lld T=%lld C=%lld H=%lld: %.1f TFLOP/s in matmuls",
           (long long)g.B, (long long)g.T, (long long)g.C, (long long)g.H, flop / sec * 1e-12);
done:
  for (int i = 0; i < 8; i++) em_tensor_release(g.p[i]);
  em_tensor_release(g.mask), em_tensor_release(g.x);
}

/* ---- main ----------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  bool quick = argc > 1 && !strcmp(argv[1], "--quick");
  if (!em_cuda_is_available()) {
    printf("bench_gpu: skipped: no CUDA device (%s)\n", em_cuda_unavailable_reason());
    return 77;
  }
  char name[128] = "?";
  em_cuda_device_name(0, name, sizeof name);
  int n = quick ? 4096 : 8192, it = quick ? 5 : 20;
  bench_gemm("sgemm float32", EM_FLOAT32, "highest", CUDA_R_32F, CUBLAS_COMPUTE_32F, n, it);
  bench_gemm("sgemm TF32", EM_FLOAT32, "high", CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, n, it);
  bench_gemm("GEMM bfloat16", EM_BFLOAT16, "highest", CUDA_R_16BF, CUBLAS_COMPUTE_32F, n, it);
  bench_memory(quick ? (int64_t)1 << 26 : (int64_t)1 << 28, it);
  bench_cnn(quick ? 5 : 20);
  bench_gpt(quick ? 3 : 10);

  em_cuda_memory_stats ms;
  em_cuda_memory_stats_get(0, &ms);
  printf("\nember GPU benchmark on %s (%s)\n", name, em_version());
  printf("%-26s %12s %12s %7s  %-8s %s\n", "benchmark", "ember", "reference", "ratio", "unit", "notes");
  for (int i = 0; i < nrows; i++) {
    row *r = &rows[i];
    char e[32] = "-", f[32] = "-", q[16] = "-";
    if (!r->failed) snprintf(e, sizeof e, "%.2f", r->ember);
    if (!isnan(r->ref)) snprintf(f, sizeof f, "%.2f", r->ref);
    if (!r->failed && !isnan(r->ref) && r->ref > 0)
      snprintf(q, sizeof q, "%.2f", !strcmp(r->unit, "ms/step") ? r->ref / r->ember : r->ember / r->ref);
    printf("%-26s %12s %12s %7s  %-8s %s\n", r->name, e, f, q, r->unit, r->note);
  }
  printf("(ratio: ember / reference for rates, reference / ember for times: higher is better for ember)\n");
  printf("peak GPU memory allocated %.2f GiB, reserved %.2f GiB\n",
         ms.peak_allocated / 1073741824.0, ms.peak_reserved / 1073741824.0);
  return failures ? 1 : 0;
}
