/* Convolution and batch norm on the GPU through cuDNN (pooling is ember's
 * own kernels: core/cuda/pool.cu). Contracts in core/cuda/cuda_nn.h.
 *
 * One cuDNN handle per device, used under a lock and bound to the
 * device's current stream for each call. Algorithms come from cuDNN's
 * heuristics (cudnnGet*Algorithm_v7: no benchmarking runs); the first one
 * whose workspace can be allocated is used. Workspaces and results come
 * from the caching allocator on the current stream.
 *
 * Transposed convolution is the adjoint of a convolution whose "input" is
 * the transposed convolution's output: forward = backward-data of that
 * convolution, grad input = its forward, grad weight = its backward-filter
 * with the roles of input and output gradient exchanged.
 *
 * Built without cuDNN (EMBER_CUDNN undefined), every entry fails with
 * EM_ERR_NOTIMPL. */
#include "core/cuda/cuda_impl.h"
#include "core/cuda/cuda_nn.h"

#ifdef EMBER_CUDNN
#include <cudnn.h>
#include <pthread.h>

bool em_cudnn_is_available(void) { return em_cuda_is_available(); }

static struct {
  pthread_mutex_t mu;
  cudnnHandle_t h[EM__CUDA_MAX_DEVICES];
} handles = {.mu = PTHREAD_MUTEX_INITIALIZER};

static em_status cudnn_error(cudnnStatus_t st, const char *what) {
  return em__set_error(EM_ERR_CUDA, "%s: cuDNN error: %s", what, cudnnGetErrorString(st));
}

#define CUDNN_TRY(call, what)                                          \
  do {                                                                 \
    cudnnStatus_t cs_ = (call);                                        \
    if (cs_ != CUDNN_STATUS_SUCCESS) {                                 \
      st = cudnn_error(cs_, what);                                     \
      goto done;                                                       \
    }                                                                  \
  } while (0)

/* The device's handle bound to its current stream, lock held on success. */
static em_status lock_handle(int device, cudnnHandle_t *out) {
  cudaStream_t s;
  EM_CHECK(em__cuda_enter(device, &s));
  pthread_mutex_lock(&handles.mu);
  cudnnStatus_t cs = CUDNN_STATUS_SUCCESS;
  if (!handles.h[device]) cs = cudnnCreate(&handles.h[device]);
  if (cs == CUDNN_STATUS_SUCCESS) cs = cudnnSetStream(handles.h[device], s);
  if (cs != CUDNN_STATUS_SUCCESS) {
    pthread_mutex_unlock(&handles.mu);
    return cudnn_error(cs, "cuDNN setup");
  }
  *out = handles.h[device];
  return EM_OK;
}
static void unlock_handle(void) { pthread_mutex_unlock(&handles.mu); }

static bool data_type(em_dtype dt, cudnnDataType_t *out) {
  switch (dt) {
    case EM_FLOAT32: *out = CUDNN_DATA_FLOAT; return true;
    case EM_FLOAT64: *out = CUDNN_DATA_DOUBLE; return true;
    case EM_FLOAT16: *out = CUDNN_DATA_HALF; return true;
    case EM_BFLOAT16: *out = CUDNN_DATA_BFLOAT16; return true;
    default: return false;
  }
}

/* ---- convolution -------------------------------------------------------------------------- */

typedef struct conv_desc {
  cudnnTensorDescriptor_t x, y, b; /* x: the convolution's input, y: its output */
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t c;
  cudnnDataType_t dt;
} conv_desc;

static void conv_desc_free(conv_desc *d) {
  if (d->x) cudnnDestroyTensorDescriptor(d->x);
  if (d->y) cudnnDestroyTensorDescriptor(d->y);
  if (d->b) cudnnDestroyTensorDescriptor(d->b);
  if (d->w) cudnnDestroyFilterDescriptor(d->w);
  if (d->c) cudnnDestroyConvolutionDescriptor(d->c);
}

static bool fits_int(const em_cuda_conv_geom *g) {
  const int64_t v[] = {g->N, g->Cin, g->H, g->W, g->Cout, g->OH, g->OW, g->kh, g->kw,
                       g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->groups};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (v[i] > INT32_MAX) return false;
  return true;
}

/* Descriptors of the (non-transposed) convolution behind g: for a
 * transposed g, its input is the transposed op's output. */
static em_status conv_desc_make(const em_cuda_conv_geom *g, em_dtype dt, conv_desc *d) {
  em_status st = EM_OK;
  memset(d, 0, sizeof *d);
  if (!data_type(dt, &d->dt))
    return em__set_error(EM_ERR_DTYPE, "conv2d: no cuDNN convolution for %s", em_dtype_name(dt));
  if (!fits_int(g)) return em__set_error(EM_ERR_INVALID, "conv2d: sizes beyond cuDNN's 32-bit limits");
  /* conv input [N, Ci, Hi, Wi] -> output [N, Co, Ho, Wo], filter [Co, Ci/g, kh, kw] */
  int N = (int)g->N, Ci, Hi, Wi, Co, Ho, Wo;
  if (!g->transposed) {
    Ci = (int)g->Cin, Hi = (int)g->H, Wi = (int)g->W, Co = (int)g->Cout, Ho = (int)g->OH, Wo = (int)g->OW;
  } else {
    Ci = (int)g->Cout, Hi = (int)g->OH, Wi = (int)g->OW, Co = (int)g->Cin, Ho = (int)g->H, Wo = (int)g->W;
  }
  CUDNN_TRY(cudnnCreateTensorDescriptor(&d->x), "conv2d");
  CUDNN_TRY(cudnnCreateTensorDescriptor(&d->y), "conv2d");
  CUDNN_TRY(cudnnCreateTensorDescriptor(&d->b), "conv2d");
  CUDNN_TRY(cudnnCreateFilterDescriptor(&d->w), "conv2d");
  CUDNN_TRY(cudnnCreateConvolutionDescriptor(&d->c), "conv2d");
  CUDNN_TRY(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, d->dt, N, Ci, Hi, Wi), "conv2d input");
  CUDNN_TRY(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, d->dt, N, Co, Ho, Wo), "conv2d output");
  CUDNN_TRY(cudnnSetTensor4dDescriptor(d->b, CUDNN_TENSOR_NCHW, d->dt, 1, (int)g->Cout, 1, 1), "conv2d bias");
  CUDNN_TRY(cudnnSetFilter4dDescriptor(d->w, d->dt, CUDNN_TENSOR_NCHW, Co, Ci / (int)g->groups,
                                       (int)g->kh, (int)g->kw),
            "conv2d weight");
  CUDNN_TRY(cudnnSetConvolution2dDescriptor(d->c, (int)g->ph, (int)g->pw, (int)g->sh, (int)g->sw,
                                            (int)g->dh, (int)g->dw, CUDNN_CROSS_CORRELATION,
                                            dt == EM_FLOAT64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT),
            "conv2d");
  CUDNN_TRY(cudnnSetConvolutionGroupCount(d->c, (int)g->groups), "conv2d groups");
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  if (dt == EM_FLOAT16 || dt == EM_BFLOAT16)
    math = CUDNN_TENSOR_OP_MATH;
  else if (dt == EM_FLOAT32)
    math = strcmp(em_cuda_get_float32_matmul_precision(), "highest") ? CUDNN_TENSOR_OP_MATH
                                                                      : CUDNN_FMA_MATH;
  CUDNN_TRY(cudnnSetConvolutionMathType(d->c, math), "conv2d math type");
  return EM_OK;
done:
  conv_desc_free(d);
  return st;
}

/* alpha = 1, beta = 0 (or 1) in the type cuDNN wants for dt */
typedef struct scalars {
  float f[2];
  double d[2];
} scalars;
static const void *one_of(const scalars *s, em_dtype dt) { return dt == EM_FLOAT64 ? (const void *)&s->d[1] : (const void *)&s->f[1]; }
static const void *zero_of(const scalars *s, em_dtype dt) { return dt == EM_FLOAT64 ? (const void *)&s->d[0] : (const void *)&s->f[0]; }
static const scalars SC = {{0, 1}, {0, 1}};

static em_tensor *empty_on(em_device dev, em_dtype dt, int64_t a, int64_t b, int64_t c, int64_t d) {
  return em_tensor_empty_on(EM_DIMS(a, b, c, d), dt, dev);
}

/* The conv's forward (input x -> output y). */
static em_status run_forward(cudnnHandle_t h, int device, const conv_desc *d, em_dtype dt,
                             const void *x, const void *w, void *y) {
  cudnnConvolutionFwdAlgoPerf_t perf[8];
  int n = 0;
  cudnnStatus_t cs = cudnnGetConvolutionForwardAlgorithm_v7(h, d->x, d->w, d->c, d->y, 8, &n, perf);
  if (cs != CUDNN_STATUS_SUCCESS) return cudnn_error(cs, "conv2d: choosing an algorithm");
  for (int i = 0; i < n; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(h, d->x, d->w, d->c, d->y, perf[i].algo, &ws) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    em__cblock *b = NULL;
    if (ws && em__cuda_tmp_alloc(device, ws, &b)) continue;
    cs = cudnnConvolutionForward(h, one_of(&SC, dt), d->x, x, d->w, w, d->c, perf[i].algo,
                                 b ? b->ptr : NULL, ws, zero_of(&SC, dt), d->y, y);
    em__cuda_tmp_free(device, b);
    if (cs == CUDNN_STATUS_SUCCESS) return EM_OK;
  }
  return em__set_error(EM_ERR_CUDA, "conv2d: no cuDNN forward algorithm could run");
}

/* Gradient of the conv's input from the output gradient dy. */
static em_status run_backward_data(cudnnHandle_t h, int device, const conv_desc *d, em_dtype dt,
                                   const void *w, const void *dy, void *dx) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[8];
  int n = 0;
  cudnnStatus_t cs =
      cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d->w, d->y, d->c, d->x, 8, &n, perf);
  if (cs != CUDNN_STATUS_SUCCESS) return cudnn_error(cs, "conv2d: choosing an algorithm");
  for (int i = 0; i < n; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    if (cudnnGetConvolutionBackwardDataWorkspaceSize(h, d->w, d->y, d->c, d->x, perf[i].algo, &ws) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    em__cblock *b = NULL;
    if (ws && em__cuda_tmp_alloc(device, ws, &b)) continue;
    cs = cudnnConvolutionBackwardData(h, one_of(&SC, dt), d->w, w, d->y, dy, d->c, perf[i].algo,
                                      b ? b->ptr : NULL, ws, zero_of(&SC, dt), d->x, dx);
    em__cuda_tmp_free(device, b);
    if (cs == CUDNN_STATUS_SUCCESS) return EM_OK;
  }
  return em__set_error(EM_ERR_CUDA, "conv2d: no cuDNN backward-data algorithm could run");
}

/* Gradient of the filter from the conv's input x and output gradient dy. */
static em_status run_backward_filter(cudnnHandle_t h, int device, const conv_desc *d, em_dtype dt,
                                     const void *x, const void *dy, void *dw) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[8];
  int n = 0;
  cudnnStatus_t cs =
      cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d->x, d->y, d->c, d->w, 8, &n, perf);
  if (cs != CUDNN_STATUS_SUCCESS) return cudnn_error(cs, "conv2d: choosing an algorithm");
  for (int i = 0; i < n; i++) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    if (cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d->x, d->y, d->c, d->w, perf[i].algo,
                                                       &ws) != CUDNN_STATUS_SUCCESS)
      continue;
    em__cblock *b = NULL;
    if (ws && em__cuda_tmp_alloc(device, ws, &b)) continue;
    cs = cudnnConvolutionBackwardFilter(h, one_of(&SC, dt), d->x, x, d->y, dy, d->c, perf[i].algo,
                                        b ? b->ptr : NULL, ws, zero_of(&SC, dt), d->w, dw);
    em__cuda_tmp_free(device, b);
    if (cs == CUDNN_STATUS_SUCCESS) return EM_OK;
  }
  return em__set_error(EM_ERR_CUDA, "conv2d: no cuDNN backward-filter algorithm could run");
}

static em_status check_operands(const char *op, int n, em_tensor *const *ts) {
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (ts[i]->device.type != EM_CUDA || !em_device_eq(ts[i]->device, ts[0]->device))
      return em__set_error(EM_ERR_DEVICE, "%s: expected tensors on one CUDA device", op);
    if (!em_tensor_is_contiguous(ts[i]))
      return em__set_error(EM_ERR_INVALID, "%s: expected contiguous tensors", op);
  }
  return EM_OK;
}

em_tensor *em__cuda_conv2d_forward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *b) {
  if (check_operands("conv2d", 3, (em_tensor *[]){x, w, b})) return NULL;
  em_dtype dt = (em_dtype)x->dtype;
  int device = x->device.index;
  em_tensor *y = empty_on(x->device, dt, g->N, g->Cout, g->OH, g->OW);
  if (!y || y->numel == 0) return y;
  if (x->numel == 0) { /* no input channels or pixels: bias only (or zeros) */
    em_status z = em_tensor_zero_(y);
    if (!z && b) {
      em_tensor *bv = em_tensor_view(b, EM_DIMS(1, g->Cout, 1, 1));
      z = bv ? em_tensor_add_(y, bv) : em_last_status();
      em_tensor_release(bv);
    }
    if (z) {
      em_tensor_release(y);
      return NULL;
    }
    return y;
  }
  conv_desc d;
  if (conv_desc_make(g, dt, &d)) {
    em_tensor_release(y);
    return NULL;
  }
  cudnnHandle_t h;
  em_status st = lock_handle(device, &h);
  if (st == EM_OK) {
    if (!g->transposed)
      st = run_forward(h, device, &d, dt, em__data_ptr(x), em__data_ptr(w), em__data_ptr(y));
    else /* the adjoint conv's backward data: its output gradient is x */
      st = run_backward_data(h, device, &d, dt, em__data_ptr(w), em__data_ptr(x), em__data_ptr(y));
    if (st == EM_OK && b) {
      cudnnStatus_t cs = cudnnAddTensor(h, one_of(&SC, dt), d.b, em__data_ptr(b), one_of(&SC, dt),
                                        g->transposed ? d.x : d.y, em__data_ptr(y));
      if (cs != CUDNN_STATUS_SUCCESS) st = cudnn_error(cs, "conv2d: adding the bias");
    }
    unlock_handle();
  }
  conv_desc_free(&d);
  if (st) {
    em_tensor_release(y);
    return NULL;
  }
  return y;
}

em_status em__cuda_conv2d_backward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *gy, em_tensor **gx, em_tensor **gw, em_tensor **gb) {
  EM_CHECK(check_operands("conv2d backward", 3, (em_tensor *[]){gy, x, w}));
  if ((gw && !x) || (gx && !w))
    return em__set_error(EM_ERR_INVALID, "conv2d backward: x is needed for gw and w for gx");
  em_dtype dt = (em_dtype)gy->dtype;
  int device = gy->device.index;
  em_tensor *dx = NULL, *dw = NULL, *db = NULL;
  em_status st = EM_OK;
  int64_t w0 = g->transposed ? g->Cin : g->Cout;
  int64_t w1 = g->transposed ? g->Cout / g->groups : g->Cin / g->groups;
  if (gx) EM_CHECK_PTR_GOTO(dx = empty_on(gy->device, dt, g->N, g->Cin, g->H, g->W), st, out);
  if (gw) EM_CHECK_PTR_GOTO(dw = empty_on(gy->device, dt, w0, w1, g->kh, g->kw), st, out);
  if (gb) EM_CHECK_PTR_GOTO(db = em_tensor_empty_on(EM_DIMS(g->Cout), dt, gy->device), st, out);
  if (gy->numel == 0 || (x && x->numel == 0)) { /* nothing flows: zeros */
    if (dx) EM_CHECK_GOTO(em_tensor_zero_(dx), st, out);
    if (dw) EM_CHECK_GOTO(em_tensor_zero_(dw), st, out);
    if (db) EM_CHECK_GOTO(em_tensor_zero_(db), st, out);
    goto out;
  }
  conv_desc d;
  EM_CHECK_GOTO(conv_desc_make(g, dt, &d), st, out);
  cudnnHandle_t h;
  st = lock_handle(device, &h);
  if (st == EM_OK) {
    void *pgy = em__data_ptr(gy);
    if (dx) /* grad input: conv^T of gy (transposed: the conv of gy) */
      st = g->transposed ? run_forward(h, device, &d, dt, pgy, em__data_ptr(w), em__data_ptr(dx))
                         : run_backward_data(h, device, &d, dt, em__data_ptr(w), pgy, em__data_ptr(dx));
    if (st == EM_OK && dw) /* the conv's input and output gradient */
      st = g->transposed ? run_backward_filter(h, device, &d, dt, pgy, em__data_ptr(x), em__data_ptr(dw))
                         : run_backward_filter(h, device, &d, dt, em__data_ptr(x), pgy, em__data_ptr(dw));
    if (st == EM_OK && db) {
      cudnnStatus_t cs = cudnnConvolutionBackwardBias(h, one_of(&SC, dt), g->transposed ? d.x : d.y,
                                                      pgy, zero_of(&SC, dt), d.b, em__data_ptr(db));
      if (cs != CUDNN_STATUS_SUCCESS) st = cudnn_error(cs, "conv2d backward: bias gradient");
    }
    unlock_handle();
  }
  conv_desc_free(&d);
out:
  if (st) {
    em_tensor_release(dx), em_tensor_release(dw), em_tensor_release(db);
    return st;
  }
  if (gx) *gx = dx;
  if (gw) *gw = dw;
  if (gb) *gb = db;
  return EM_OK;
}

/* ---- batch norm ------------------------------------------------------------------------------ */

typedef struct bn_desc {
  cudnnTensorDescriptor_t x, p;
} bn_desc;

static void bn_desc_free(bn_desc *d) {
  if (d->x) cudnnDestroyTensorDescriptor(d->x);
  if (d->p) cudnnDestroyTensorDescriptor(d->p);
}

/* x [N, C, ...] as NCHW with H = the rest, W = 1; p: the derived [1, C, 1, 1]. */
static em_status bn_desc_make(em_tensor *x, bn_desc *d) {
  em_status st = EM_OK;
  memset(d, 0, sizeof *d);
  cudnnDataType_t t;
  if (x->dtype != EM_FLOAT32 && x->dtype != EM_FLOAT64)
    return em__set_error(EM_ERR_NOTIMPL, "batch_norm: the CUDA path takes float32 or float64, not %s",
                         em_dtype_name((em_dtype)x->dtype));
  data_type((em_dtype)x->dtype, &t);
  int64_t rest = 1;
  for (int i = 2; i < x->ndim; i++) rest *= x->shape[i];
  if (x->ndim < 2 || x->shape[0] > INT32_MAX || x->shape[1] > INT32_MAX || rest > INT32_MAX)
    return em__set_error(EM_ERR_SHAPE, "batch_norm: cannot run shape %s on cuDNN", em__tshape(x));
  CUDNN_TRY(cudnnCreateTensorDescriptor(&d->x), "batch_norm");
  CUDNN_TRY(cudnnCreateTensorDescriptor(&d->p), "batch_norm");
  CUDNN_TRY(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, t, (int)x->shape[0],
                                       (int)x->shape[1], (int)rest, 1),
            "batch_norm");
  CUDNN_TRY(cudnnDeriveBNTensorDescriptor(d->p, d->x, CUDNN_BATCHNORM_SPATIAL), "batch_norm");
  return EM_OK;
done:
  bn_desc_free(d);
  return st;
}

/* weight / bias, or ones / zeros [C] when NULL (then held in *hold). */
static em_status param_or(em_tensor *p, em_tensor *x, double fill, em_tensor **hold, void **data) {
  if (p) {
    *data = em__data_ptr(p);
    return EM_OK;
  }
  em_tensor *t = em_tensor_empty_on(EM_DIMS(x->shape[1]), (em_dtype)x->dtype, x->device);
  if (!t) return em_last_status();
  if (em_tensor_fill_(t, em_scalar_float(fill))) {
    em_tensor_release(t);
    return em_last_status();
  }
  *hold = t;
  *data = em__data_ptr(t);
  return EM_OK;
}

em_status em__cuda_batch_norm_forward(em_tensor *x, em_tensor *weight, em_tensor *bias,
                                      em_tensor *running_mean, em_tensor *running_var,
                                      bool training, double momentum, double eps, em_tensor **y,
                                      em_tensor **save_mean, em_tensor **save_invstd) {
  EM_CHECK(check_operands("batch_norm", 5, (em_tensor *[]){x, weight, bias, running_mean, running_var}));
  if (!training && (!running_mean || !running_var))
    return em__set_error(EM_ERR_INVALID, "batch_norm: eval mode needs running_mean and running_var");
  em_dtype dt = (em_dtype)x->dtype;
  int device = x->device.index;
  em_tensor *out = NULL, *sm = NULL, *si = NULL, *hw = NULL, *hb = NULL;
  bn_desc d = {0};
  em_status st = EM_OK;
  void *pw, *pb;
  EM_CHECK_GOTO(bn_desc_make(x, &d), st, out_);
  EM_CHECK_GOTO(param_or(weight, x, 1, &hw, &pw), st, out_);
  EM_CHECK_GOTO(param_or(bias, x, 0, &hb, &pb), st, out_);
  EM_CHECK_PTR_GOTO(out = em_tensor_empty_like(x, EM_DTYPE_UNDEFINED), st, out_);
  if (training) {
    EM_CHECK_PTR_GOTO(sm = em_tensor_empty_on(EM_DIMS(x->shape[1]), dt, x->device), st, out_);
    EM_CHECK_PTR_GOTO(si = em_tensor_empty_on(EM_DIMS(x->shape[1]), dt, x->device), st, out_);
  }
  if (x->numel == 0) goto out_;
  cudnnHandle_t h;
  EM_CHECK_GOTO(lock_handle(device, &h), st, out_);
  cudnnStatus_t cs;
  if (training)
    cs = cudnnBatchNormalizationForwardTraining(
        h, CUDNN_BATCHNORM_SPATIAL, one_of(&SC, dt), zero_of(&SC, dt), d.x, em__data_ptr(x), d.x,
        em__data_ptr(out), d.p, pw, pb, momentum, running_mean ? em__data_ptr(running_mean) : NULL,
        running_var ? em__data_ptr(running_var) : NULL, eps, em__data_ptr(sm), em__data_ptr(si));
  else
    cs = cudnnBatchNormalizationForwardInference(
        h, CUDNN_BATCHNORM_SPATIAL, one_of(&SC, dt), zero_of(&SC, dt), d.x, em__data_ptr(x), d.x,
        em__data_ptr(out), d.p, pw, pb, em__data_ptr(running_mean), em__data_ptr(running_var), eps);
  unlock_handle();
  if (cs != CUDNN_STATUS_SUCCESS) st = cudnn_error(cs, "batch_norm");
  if (st == EM_OK && training) {
    if (running_mean) em__bump_version(running_mean);
    if (running_var) em__bump_version(running_var);
  }
out_:
  bn_desc_free(&d);
  em_tensor_release(hw), em_tensor_release(hb);
  if (st) {
    em_tensor_release(out), em_tensor_release(sm), em_tensor_release(si);
    return st;
  }
  *y = out;
  if (save_mean) *save_mean = sm; else em_tensor_release(sm);
  if (save_invstd) *save_invstd = si; else em_tensor_release(si);
  return EM_OK;
}

em_status em__cuda_batch_norm_backward(em_tensor *x, em_tensor *gy, em_tensor *weight,
                                       em_tensor *save_mean, em_tensor *save_invstd, double eps,
                                       em_tensor **gx, em_tensor **gw, em_tensor **gb) {
  EM_CHECK(check_operands("batch_norm backward", 5, (em_tensor *[]){x, gy, weight, save_mean, save_invstd}));
  em_dtype dt = (em_dtype)x->dtype;
  int device = x->device.index;
  em_tensor *dx = NULL, *dw = NULL, *db = NULL, *hw = NULL;
  bn_desc d = {0};
  em_status st = EM_OK;
  void *pw;
  EM_CHECK_GOTO(bn_desc_make(x, &d), st, out_);
  EM_CHECK_GOTO(param_or(weight, x, 1, &hw, &pw), st, out_);
  EM_CHECK_PTR_GOTO(dx = em_tensor_empty_like(x, EM_DTYPE_UNDEFINED), st, out_);
  EM_CHECK_PTR_GOTO(dw = em_tensor_empty_on(EM_DIMS(x->shape[1]), dt, x->device), st, out_);
  EM_CHECK_PTR_GOTO(db = em_tensor_empty_on(EM_DIMS(x->shape[1]), dt, x->device), st, out_);
  if (x->numel == 0) {
    EM_CHECK_GOTO(em_tensor_zero_(dw), st, out_);
    EM_CHECK_GOTO(em_tensor_zero_(db), st, out_);
    goto out_;
  }
  cudnnHandle_t h;
  EM_CHECK_GOTO(lock_handle(device, &h), st, out_);
  cudnnStatus_t cs = cudnnBatchNormalizationBackward(
      h, CUDNN_BATCHNORM_SPATIAL, one_of(&SC, dt), zero_of(&SC, dt), one_of(&SC, dt),
      zero_of(&SC, dt), d.x, em__data_ptr(x), d.x, em__data_ptr(gy), d.x, em__data_ptr(dx), d.p, pw,
      em__data_ptr(dw), em__data_ptr(db), eps, save_mean ? em__data_ptr(save_mean) : NULL,
      save_invstd ? em__data_ptr(save_invstd) : NULL);
  unlock_handle();
  if (cs != CUDNN_STATUS_SUCCESS) st = cudnn_error(cs, "batch_norm backward");
out_:
  bn_desc_free(&d);
  em_tensor_release(hw);
  if (st) {
    em_tensor_release(dx), em_tensor_release(dw), em_tensor_release(db);
    return st;
  }
  if (gx) *gx = dx; else em_tensor_release(dx);
  if (gw) *gw = dw; else em_tensor_release(dw);
  if (gb) *gb = db; else em_tensor_release(db);
  return EM_OK;
}

#else /* built without cuDNN */

bool em_cudnn_is_available(void) { return false; }

#define NO_CUDNN(op) em__set_error(EM_ERR_NOTIMPL, "%s: ember was built without cuDNN", op)

em_tensor *em__cuda_conv2d_forward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *b) {
  NO_CUDNN("conv2d");
  return NULL;
}
em_status em__cuda_conv2d_backward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *gy, em_tensor **gx, em_tensor **gw, em_tensor **gb) {
  return NO_CUDNN("conv2d backward");
}
em_status em__cuda_batch_norm_forward(em_tensor *x, em_tensor *weight, em_tensor *bias,
                                      em_tensor *running_mean, em_tensor *running_var,
                                      bool training, double momentum, double eps, em_tensor **y,
                                      em_tensor **save_mean, em_tensor **save_invstd) {
  return NO_CUDNN("batch_norm");
}
em_status em__cuda_batch_norm_backward(em_tensor *x, em_tensor *gy, em_tensor *weight,
                                       em_tensor *save_mean, em_tensor *save_invstd, double eps,
                                       em_tensor **gx, em_tensor **gw, em_tensor **gb) {
  return NO_CUDNN("batch_norm backward");
}
#endif
