/* The GPU entry points for nn/'s layers (core/cuda/cuda_nn.h) against
 * nn/'s CPU layers: convolution (cuDNN; strided, padded, dilated, grouped,
 * transposed) forward and backward, pooling (max with indices, average,
 * adaptive) forward and backward, batch norm (cuDNN) in training and eval
 * with the running statistics; and the nn functions batch_norm, layer_norm
 * and group_norm called on GPU tensors. Backward references come from the CPU
 * autograd of the nn functions: gradients of sum(y * v). Skips (77)
 * without a CUDA device. */
#include "autograd/autograd.h"
#include "nn/nn.h"
#include "nn/optim.h"
#include "tests/gpu/gpu_util.h"
#ifdef EMBER_CUDA
#include "core/cuda/cuda_nn.h"
#endif

#ifdef EMBER_CUDA
/* CPU gradients of sum(y * v) for y = f(inputs), via autograd. */
typedef em_tensor *(*layer_fn)(em_tensor *const *in, void *ctx);
static em_status cpu_grads(layer_fn f, void *ctx, int n, em_tensor *const *in, em_tensor *v,
                           em_tensor **y, em_tensor **grads) {
  em_tensor *leaf[4] = {0};
  for (int i = 0; i < n; i++) {
    if (!in[i]) continue;
    leaf[i] = em_tensor_clone(in[i]);
    EM_CHECK(em_tensor_set_requires_grad(leaf[i], true));
  }
  *y = f(leaf, ctx);
  if (!*y) return em_last_status();
  em_tensor *p = em_tensor_mul(*y, v), *s = p ? em_tensor_sum(p, 0, NULL, false, EM_DTYPE_UNDEFINED) : NULL;
  em_status st = s ? em_backward(s, NULL, false) : em_last_status();
  for (int i = 0; i < n; i++) grads[i] = leaf[i] ? em_tensor_grad(leaf[i]) : NULL;
  em_tensor_release(p), em_tensor_release(s);
  for (int i = 0; i < n; i++) em_tensor_release(leaf[i]);
  return st;
}

typedef struct conv_case {
  bool transposed;
  em_conv_options o;
  int64_t N, Cin, H, W, Cout, kh, kw;
} conv_case;

static em_tensor *conv_cpu(em_tensor *const *in, void *ctx) {
  conv_case *c = ctx;
  return c->transposed ? em_nn_f_conv_transpose2d(in[0], in[1], in[2], &c->o)
                       : em_nn_f_conv2d(in[0], in[1], in[2], &c->o);
}

static int run_conv_case(conv_case *c, em_dtype dt) {
  int64_t g = c->o.groups ? c->o.groups : 1;
  int64_t w0 = c->transposed ? c->Cin : c->Cout, w1 = c->transposed ? c->Cout / g : c->Cin / g;
  em_tensor *x = g_values(EM_DIMS(c->N, c->Cin, c->H, c->W), dt, -1, 1, 1);
  em_tensor *w = g_values(EM_DIMS(w0, w1, c->kh, c->kw), dt, -1, 1, 2);
  em_tensor *b = g_values(EM_DIMS(c->Cout), dt, -1, 1, 3);
  em_tensor *in[3] = {x, w, b}, *ycpu = NULL, *gc[3] = {0};
  em_tensor *y0 = conv_cpu(in, c);
  em_tensor *v = g_values(y0->ndim, y0->shape, dt, -1, 1, 4);
  int ok = cpu_grads(conv_cpu, c, 3, in, v, &ycpu, gc) == EM_OK;
  em_cuda_conv_geom geo = {c->transposed, c->N, c->Cin, c->H, c->W, c->Cout, y0->shape[2],
                           y0->shape[3], c->kh, c->kw, c->o.stride[0] ? c->o.stride[0] : 1,
                           c->o.stride[1] ? c->o.stride[1] : 1, c->o.padding[0], c->o.padding[1],
                           c->o.dilation[0] ? c->o.dilation[0] : 1,
                           c->o.dilation[1] ? c->o.dilation[1] : 1, g};
  em_tensor *gx = g_to(x, GPU), *gw = g_to(w, GPU), *gb = g_to(b, GPU), *gv = g_to(v, GPU);
  em_tensor *yg = ok ? em__cuda_conv2d_forward(&geo, gx, gw, gb) : NULL;
  double rt = dt == EM_FLOAT64 ? 1e-10 : 1e-4;
  ok = ok && g_close(yg, ycpu, rt, rt, __FILE__, __LINE__, "conv forward");
  em_tensor *dx = NULL, *dw = NULL, *db = NULL;
  ok = ok && em__cuda_conv2d_backward(&geo, gx, gw, gv, &dx, &dw, &db) == EM_OK;
  ok = ok && g_close(dx, gc[0], rt, rt, __FILE__, __LINE__, "conv grad input") &&
       g_close(dw, gc[1], rt, rt * 10, __FILE__, __LINE__, "conv grad weight") &&
       g_close(db, gc[2], rt, rt * 10, __FILE__, __LINE__, "conv grad bias");
  if (!ok) fprintf(stderr, "  conv case failed: %s\n", em_last_error());
  em_tensor *all[] = {x, w, b, ycpu, y0, v, gx, gw, gb, gv, yg, dx, dw, db, gc[0], gc[1], gc[2]};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) em_tensor_release(all[i]);
  return ok;
}

EM_TEST(convolution_matches_the_cpu) {
  REQUIRE_CUDA();
  ASSERT_OK(em_cuda_set_float32_matmul_precision("highest")); /* no TF32 in the comparison */
  conv_case cases[] = {
      {false, {{1, 1}, {0, 0}, {1, 1}, {0, 0}, 1}, 2, 3, 8, 8, 5, 3, 3},
      {false, {{2, 1}, {1, 1}, {1, 2}, {0, 0}, 2}, 2, 4, 9, 8, 6, 3, 3},
      {false, {{1, 1}, {2, 0}, {1, 1}, {0, 0}, 1}, 1, 1, 5, 7, 2, 5, 1},
      {true, {{2, 2}, {1, 0}, {1, 1}, {1, 0}, 1}, 2, 3, 4, 5, 4, 3, 2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!run_conv_case(&cases[i], EM_FLOAT64) || !run_conv_case(&cases[i], EM_FLOAT32)) {
      EM_FAILF("convolution case %zu differs", i);
      return;
    }
  }
}

/* ---- pooling -------------------------------------------------------------------------------- */

typedef struct pool_case {
  em_cuda_pool_kind kind;
  em_pool_options o;
  int64_t out_h, out_w; /* adaptive */
} pool_case;

static em_tensor *pool_cpu(em_tensor *const *in, void *ctx) {
  pool_case *c = ctx;
  if (c->kind == EM_CUDA_POOL_MAX) return em_nn_f_max_pool2d(in[0], &c->o);
  if (c->kind == EM_CUDA_POOL_AVG) return em_nn_f_avg_pool2d(in[0], &c->o);
  return em_nn_f_adaptive_avg_pool2d(in[0], c->out_h, c->out_w);
}

static int64_t dflt(int64_t v, int64_t d) { return v ? v : d; }

EM_TEST(pooling_matches_the_cpu) {
  REQUIRE_CUDA();
  pool_case cases[] = {
      {EM_CUDA_POOL_MAX, {{2, 2}, {0, 0}, {0, 0}, {0, 0}, false, true}, 0, 0},
      {EM_CUDA_POOL_MAX, {{3, 3}, {2, 1}, {1, 1}, {1, 2}, true, true}, 0, 0},
      {EM_CUDA_POOL_AVG, {{3, 2}, {2, 2}, {1, 1}, {0, 0}, true, false}, 0, 0},
      {EM_CUDA_POOL_AVG, {{2, 2}, {1, 1}, {1, 0}, {0, 0}, false, true}, 0, 0},
      {EM_CUDA_POOL_ADAPTIVE, {{0, 0}, {0, 0}, {0, 0}, {0, 0}, false, false}, 3, 4},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pool_case *c = &cases[i];
    em_tensor *x = g_values(EM_DIMS(2, 3, 9, 10), EM_FLOAT64, -2, 2, 5 + i);
    em_tensor *y0 = pool_cpu(&x, c);
    ASSERT_NOTNULL(y0);
    em_tensor *v = g_values(y0->ndim, y0->shape, EM_FLOAT64, -1, 1, 6), *ycpu = NULL, *gcpu = NULL;
    ASSERT_OK(cpu_grads(pool_cpu, c, 1, &x, v, &ycpu, &gcpu));
    em_cuda_pool_geom geo = {c->kind, 6, 9, 10, y0->shape[2], y0->shape[3], c->o.kernel[0],
                             c->o.kernel[1], dflt(c->o.stride[0], c->o.kernel[0]),
                             dflt(c->o.stride[1], c->o.kernel[1]), c->o.padding[0], c->o.padding[1],
                             dflt(c->o.dilation[0], 1), dflt(c->o.dilation[1], 1),
                             c->o.count_include_pad};
    em_tensor *x3 = em_tensor_reshape(x, EM_DIMS(6, 9, 10)), *gx = g_to(x3, GPU);
    em_tensor *yg = NULL, *idx = NULL, *dx = NULL;
    ASSERT_OK(em__cuda_pool2d_forward(&geo, gx, &yg, &idx));
    em_tensor *y4 = em_tensor_reshape(yg, y0->ndim, y0->shape);
    ASSERT_GPU_CLOSE(y4, ycpu, 1e-12, 1e-12);
    em_tensor *v3 = em_tensor_reshape(v, EM_DIMS(6, y0->shape[2], y0->shape[3])), *gv = g_to(v3, GPU);
    ASSERT_OK(em__cuda_pool2d_backward(&geo, gv, idx, &dx));
    em_tensor *dx4 = em_tensor_reshape(dx, EM_DIMS(2, 3, 9, 10));
    ASSERT_GPU_CLOSE(dx4, gcpu, 1e-12, 1e-12);
    em_tensor *all[] = {x, y0, v, ycpu, gcpu, x3, gx, yg, idx, dx, y4, v3, gv, dx4};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) em_tensor_release(all[j]);
  }
}

/* ---- batch norm ------------------------------------------------------------------------------- */

static em_tensor *bn_cpu(em_tensor *const *in, void *ctx) {
  return em_nn_f_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
}

EM_TEST(batch_norm_matches_the_cpu) {
  REQUIRE_CUDA();
  const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64};
  for (int k = 0; k < 2; k++) {
    em_dtype dt = dts[k];
    double rt = dt == EM_FLOAT64 ? 1e-9 : 1e-4;
    em_tensor *x = g_values(EM_DIMS(4, 3, 5, 6), dt, -2, 3, 1);
    em_tensor *w = g_values(EM_DIMS(3), dt, 0.5, 1.5, 2), *b = g_values(EM_DIMS(3), dt, -1, 1, 3);
    em_tensor *rm = em_tensor_zeros(EM_DIMS(3), dt), *rv = em_tensor_ones(EM_DIMS(3), dt);
    em_tensor *grm = g_to(rm, GPU), *grv = g_to(rv, GPU);
    /* training: batch statistics, running stats updated */
    em_tensor *yc = em_nn_f_batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
    ASSERT_NOTNULL(yc);
    em_tensor *gx = g_to(x, GPU), *gw = g_to(w, GPU), *gb = g_to(b, GPU);
    em_tensor *yg = NULL, *sm = NULL, *si = NULL;
    ASSERT_OK(em__cuda_batch_norm_forward(gx, gw, gb, grm, grv, true, 0.1, 1e-5, &yg, &sm, &si));
    ASSERT_GPU_CLOSE(yg, yc, rt, rt);
    ASSERT_GPU_CLOSE(grm, rm, rt, rt);
    ASSERT_GPU_CLOSE(grv, rv, rt, rt);
    /* backward against the CPU's autograd */
    em_tensor *v = g_values(EM_DIMS(4, 3, 5, 6), dt, -1, 1, 4), *gv = g_to(v, GPU);
    em_tensor *in[3] = {x, w, b}, *ycpu = NULL, *gc[3] = {0};
    ASSERT_OK(cpu_grads(bn_cpu, NULL, 3, in, v, &ycpu, gc));
    em_tensor *dx = NULL, *dw = NULL, *db = NULL;
    ASSERT_OK(em__cuda_batch_norm_backward(gx, gv, gw, sm, si, 1e-5, &dx, &dw, &db));
    ASSERT_GPU_CLOSE(dx, gc[0], rt * 10, rt * 10);
    ASSERT_GPU_CLOSE(dw, gc[1], rt * 10, rt * 10);
    ASSERT_GPU_CLOSE(db, gc[2], rt * 10, rt * 10);
    /* eval: the running statistics */
    em_tensor *ye = em_nn_f_batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5), *yge = NULL;
    ASSERT_OK(em__cuda_batch_norm_forward(gx, gw, gb, grm, grv, false, 0.1, 1e-5, &yge, NULL, NULL));
    ASSERT_GPU_CLOSE(yge, ye, rt, rt);
    em_tensor *all[] = {x, w, b, rm, rv, grm, grv, yc, gx, gw, gb, yg, sm, si, v, gv, ycpu,
                        gc[0], gc[1], gc[2], dx, dw, db, ye, yge};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) em_tensor_release(all[j]);
  }
  em_tensor *h = em_tensor_empty_on(EM_DIMS(2, 3), EM_FLOAT16, GPU), *y = NULL;
  ASSERT_ERR(em__cuda_batch_norm_forward(h, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &y, NULL, NULL),
             EM_ERR_NOTIMPL, "float32 or float64");
  em_tensor_release(h);
}
/* ---- the nn functions on GPU tensors ------------------------------------------------------ */

typedef struct norm_case {
  int kind; /* 0 batch norm (training), 1 batch norm (eval), 2 layer norm, 3 group norm,
              4 batch norm (training) without weight and bias */
  em_tensor *rm, *rv; /* batch norm's running statistics (on the inputs' device) */
} norm_case;

static em_tensor *norm_fn(em_tensor *const *in, void *ctx) {
  norm_case *c = ctx;
  const int64_t last[] = {5, 6};
  switch (c->kind) {
    case 0:
    case 4: return em_nn_f_batch_norm(in[0], c->rm, c->rv, in[1], in[2], true, 0.1, 1e-5);
    case 1: return em_nn_f_batch_norm(in[0], c->rm, c->rv, in[1], in[2], false, 0.1, 1e-5);
    case 2: return em_nn_f_layer_norm(in[0], 2, last, in[1], in[2], 1e-5);
    default: return em_nn_f_group_norm(in[0], 3, in[1], in[2], 1e-5);
  }
}

/* em_nn_f_batch_norm (cuDNN in training, composed in eval), layer_norm and
 * group_norm (composed) on GPU tensors: outputs, running statistics and
 * gradients of sum(y * v) against the same functions on the CPU; float16
 * inputs compute in float32. */
EM_TEST(norm_functions_on_the_gpu_match_the_cpu) {
  REQUIRE_CUDA();
  const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16};
  for (int k = 0; k < 3; k++)
    for (int kind = 0; kind < 5; kind++) {
      em_dtype dt = dts[k];
      double rt = dt == EM_FLOAT64 ? 1e-9 : dt == EM_FLOAT32 ? 1e-4 : 1e-2;
      const int64_t C = 6;
      em_tensor *x = g_values(EM_DIMS(4, C, 5, 6), dt, -2, 3, 1);
      int64_t pn = kind == 2 ? 2 : 1, ps[2] = {kind == 2 ? 5 : C, 6};
      em_tensor *w = kind == 4 ? NULL : g_values(pn, ps, dt, 0.5, 1.5, 2);
      em_tensor *b = kind == 4 ? NULL : g_values(pn, ps, dt, -1, 1, 3);
      em_tensor *v = g_values(EM_DIMS(4, C, 5, 6), dt, -1, 1, 4);
      norm_case cc = {kind, NULL, NULL}, cg = {kind, NULL, NULL};
      if (kind < 2 || kind == 4) {
        cc.rm = g_values(EM_DIMS(C), dt, -0.5, 0.5, 5), cc.rv = g_values(EM_DIMS(C), dt, 0.5, 2, 6);
        cg.rm = g_to(cc.rm, GPU), cg.rv = g_to(cc.rv, GPU);
      }
      em_tensor *in[3] = {x, w, b}, *gin[3] = {g_to(x, GPU), g_to(w, GPU), g_to(b, GPU)};
      em_tensor *gv = g_to(v, GPU), *yc = NULL, *yg = NULL, *gc[3] = {0}, *gg[3] = {0};
      ASSERT_OK(cpu_grads(norm_fn, &cc, 3, in, v, &yc, gc));
      ASSERT_OK(cpu_grads(norm_fn, &cg, 3, gin, gv, &yg, gg));
      ASSERT_TRUE(em_device_eq(yg->device, GPU) && yg->dtype == dt);
      ASSERT_GPU_CLOSE(yg, yc, rt, rt);
      for (int i = 0; i < 3; i++) {
        if (!in[i]) continue;
        ASSERT_TRUE(em_device_eq(gg[i]->device, GPU));
        ASSERT_GPU_CLOSE(gg[i], gc[i], rt * 10, rt * 10);
      }
      if (cc.rm) { /* updated in training, untouched in eval */
        ASSERT_GPU_CLOSE(cg.rm, cc.rm, rt, rt);
        ASSERT_GPU_CLOSE(cg.rv, cc.rv, rt, rt);
      }
      em_tensor *all[] = {x, w, b, v, gin[0], gin[1], gin[2], gv, yc, yg, gc[0], gc[1], gc[2],
                          gg[0], gg[1], gg[2], cc.rm, cc.rv, cg.rm, cg.rv};
      for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) em_tensor_release(all[j]);
    }
  /* parameters on another device than the input: a clear error */
  em_tensor *x = em_tensor_ones(EM_DIMS(2, 3), EM_FLOAT32), *gx = g_to(x, GPU);
  ASSERT_NULL_ERR(em_nn_f_batch_norm(gx, NULL, NULL, x, NULL, true, 0.1, 1e-5), EM_ERR_DEVICE,
                  "expected all tensors to be on the same device, but found at least two devices, "
                  "cuda:0 and cpu");
  em_tensor_release(gx), em_tensor_release(x);
}
typedef struct ce_case {
  em_tensor *target, *weight; /* on the input's device */
} ce_case;

static em_tensor *ce_fn(em_tensor *const *in, void *ctx) {
  ce_case *c = ctx;
  em_ce_options o = {.weight = c->weight, .label_smoothing = 0.1, .reduction = EM_REDUCTION_MEAN};
  return em_nn_f_cross_entropy(in[0], c->target, &o);
}

/* cross_entropy (nll_loss underneath) on GPU tensors, with class weights
 * and label smoothing: the loss and its gradients against the CPU; then
 * SGD with momentum and Adam steps on GPU parameters against the same
 * steps on CPU copies. */
EM_TEST(losses_and_optimizers_on_gpu_tensors) {
  REQUIRE_CUDA();
  int64_t tv[8] = {0, 4, 2, 2, 1, 3, 0, 4};
  em_tensor *x = g_values(EM_DIMS(8, 5), EM_FLOAT32, -2, 2, 1);
  em_tensor *w = g_values(EM_DIMS(5), EM_FLOAT32, 0.5, 1.5, 2);
  em_tensor *t = em_tensor_from_data(tv, EM_DIMS(8), EM_INT64), *gt = g_to(t, GPU);
  em_tensor *one = em_tensor_scalar(em_scalar_float(1), EM_FLOAT32), *gone = g_to(one, GPU);
  em_tensor *in[1] = {x}, *gin[1] = {g_to(x, GPU)}, *gw = g_to(w, GPU);
  em_tensor *yc = NULL, *yg = NULL, *gc[1] = {0}, *gg[1] = {0};
  ce_case cc = {t, w}, cg = {gt, gw};
  ASSERT_OK(cpu_grads(ce_fn, &cc, 1, in, one, &yc, gc));
  ASSERT_OK(cpu_grads(ce_fn, &cg, 1, gin, gone, &yg, gg));
  ASSERT_TRUE(em_device_eq(yg->device, GPU) && em_device_eq(gg[0]->device, GPU));
  ASSERT_GPU_CLOSE(yg, yc, 1e-5, 1e-6);
  ASSERT_GPU_CLOSE(gg[0], gc[0], 1e-5, 1e-6);
  ASSERT_NULL_ERR(em_nn_f_cross_entropy(gin[0], t, NULL), EM_ERR_DEVICE,
                  "expected all tensors to be on the same device, but found at least two devices, "
                  "cuda:0 and cpu");
  for (int kind = 0; kind < 2; kind++) {
    em_tensor *p = em_tensor_clone(x), *gp = g_to(x, GPU);
    ASSERT_OK(em_tensor_set_requires_grad(p, true));
    ASSERT_OK(em_tensor_set_requires_grad(gp, true));
    em_sgd_options so = {.lr = 0.1, .momentum = 0.9};
    em_adam_options ao = {.lr = 0.01};
    em_optimizer *oc = kind ? em_optim_adam(1, &p, &ao) : em_optim_sgd(1, &p, &so);
    em_optimizer *og = kind ? em_optim_adam(1, &gp, &ao) : em_optim_sgd(1, &gp, &so);
    ASSERT_NOTNULL(oc);
    ASSERT_NOTNULL(og);
    for (int step = 0; step < 3; step++) {
      em_tensor *grad = g_values(EM_DIMS(8, 5), EM_FLOAT32, -1, 1, 10 + step), *ggrad = g_to(grad, GPU);
      ASSERT_OK(em_tensor_set_grad(p, grad));
      ASSERT_OK(em_tensor_set_grad(gp, ggrad));
      ASSERT_OK(em_optim_step(oc));
      ASSERT_OK(em_optim_step(og));
      em_tensor_release(grad), em_tensor_release(ggrad);
    }
    ASSERT_TRUE(em_device_eq(gp->device, GPU));
    ASSERT_GPU_CLOSE(gp, p, 1e-5, 1e-6);
    em_optim_free(oc), em_optim_free(og);
    em_tensor_release(p), em_tensor_release(gp);
  }
  em_tensor *all[] = {x, w, gw, t, gt, one, gone, gin[0], yc, yg, gc[0], gg[0]};
  for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) em_tensor_release(all[j]);
}
#else
EM_TEST(no_cuda_in_this_build) { EM_SKIP("no CUDA device: %s", em_cuda_unavailable_reason()); }
#endif

EM_TEST_MAIN()
