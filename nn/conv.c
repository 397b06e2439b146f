/* Convolutions: conv1d, conv2d, conv_transpose2d (functional forms and
 * modules).
 *
 * Every convolution becomes one autograd node (an em_ag_function,
 * "ConvolutionBackward0") over a 4-D problem: conv1d runs as conv2d with
 * a height of 1, unbatched inputs get a batch dim of 1 (both through view
 * ops, so autograd sees the original tensors). The kernels lower onto GEMM
 * (nn/cpu_conv_impl.h): forward, grad input (GEMM + col2im) and grad
 * weight (GEMM) each take one GEMM per group per chunk of images; grad
 * bias is a reduction. float32 and float64 compute natively, float16 and
 * bfloat16 through float32.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"
#ifdef EMBER_CUDA
#include "core/cuda/cuda_nn.h" /* CUDA tensors: cuDNN (see the CUDA blocks below) */
#endif

/* The problem in 4-D terms. For a transposed convolution x is
 * [N, Cin, H, W] and the output [N, Cout, OH, OW] is the "image" of the
 * adjoint convolution. */
typedef struct conv_geom {
  int spatial; /* 1 or 2: for messages */
  bool transposed;
  int64_t N, Cin, H, W, Cout, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t groups;
} conv_geom;

#define T float
#define SFX(name) name##_f32
#define GEMM em__sgemm
#include "nn/cpu_conv_impl.h"

#define T double
#define SFX(name) name##_f64
#define GEMM em__dgemm
#include "nn/cpu_conv_impl.h"

/* The same kernels compiled for AVX2 + FMA, chosen at run time (the build
 * targets baseline x86-64). */
#if defined(__x86_64__) && defined(__GNUC__)
#define EM_CONV_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define T float
#define SFX(name) name##_f32_avx2
#define GEMM em__sgemm
#include "nn/cpu_conv_impl.h"
#define T double
#define SFX(name) name##_f64_avx2
#define GEMM em__dgemm
#include "nn/cpu_conv_impl.h"
#pragma GCC pop_options
#endif

typedef em_status (*conv_fwd_fn_f32)(const conv_geom *, const float *, const float *, const float *,
                                     float *);
typedef em_status (*conv_bwd_fn_f32)(const conv_geom *, const float *, const float *, const float *,
                                     float *, float *, float *);
typedef em_status (*conv_fwd_fn_f64)(const conv_geom *, const double *, const double *,
                                     const double *, double *);
typedef em_status (*conv_bwd_fn_f64)(const conv_geom *, const double *, const double *,
                                     const double *, double *, double *, double *);

/* The kernel set for this CPU. */
static struct {
  conv_fwd_fn_f32 fwd32, tfwd32;
  conv_bwd_fn_f32 bwd32, tbwd32;
  conv_fwd_fn_f64 fwd64, tfwd64;
  conv_bwd_fn_f64 bwd64, tbwd64;
} kern;

static void pick_kernels(void) {
  kern.fwd32 = conv_forward_f32, kern.tfwd32 = convt_forward_f32;
  kern.bwd32 = conv_backward_f32, kern.tbwd32 = convt_backward_f32;
  kern.fwd64 = conv_forward_f64, kern.tfwd64 = convt_forward_f64;
  kern.bwd64 = conv_backward_f64, kern.tbwd64 = convt_backward_f64;
#ifdef EM_CONV_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    kern.fwd32 = conv_forward_f32_avx2, kern.tfwd32 = convt_forward_f32_avx2;
    kern.bwd32 = conv_backward_f32_avx2, kern.tbwd32 = convt_backward_f32_avx2;
    kern.fwd64 = conv_forward_f64_avx2, kern.tfwd64 = convt_forward_f64_avx2;
    kern.bwd64 = conv_backward_f64_avx2, kern.tbwd64 = convt_backward_f64_avx2;
  }
#endif
}

static pthread_once_t kern_once = PTHREAD_ONCE_INIT;

/* ---- small helpers ---------------------------------------------------------------- */

/* PyTorch's C++ type names as its dtype-mismatch messages print them. */
static const char *cpp_type_name(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return "float";
    case EM_FLOAT64: return "double";
    case EM_FLOAT16: return "c10::Half";
    case EM_BFLOAT16: return "c10::BFloat16";
    case EM_INT8: return "signed char";
    case EM_INT16: return "short int";
    case EM_INT32: return "int";
    case EM_INT64: return "long int";
    case EM_UINT8: return "unsigned char";
    case EM_BOOL: return "bool";
    default: return "?";
  }
}

/* ---- computing ------------------------------------------------------------------------ */

#ifdef EMBER_CUDA
/* ---- CUDA: the same problem on cuDNN (core/cuda/cuda_nn.h) -------------------------------- */
static em_cuda_conv_geom cuda_geom(const conv_geom *g) {
  return (em_cuda_conv_geom){g->transposed, g->N,  g->Cin, g->H,  g->W,  g->Cout,
                             g->OH,         g->OW, g->kh,  g->kw, g->sh, g->sw,
                             g->ph,         g->pw, g->dh,  g->dw, g->groups};
}

static em_tensor *cuda_conv_forward(const conv_geom *g, em_tensor *x, em_tensor *w, em_tensor *b) {
  em_cuda_conv_geom cg = cuda_geom(g);
  em_dtype dt = (em_dtype)x->dtype;
  em_tensor *xc = em__as_compute(x, dt), *wc = xc ? em__as_compute(w, dt) : NULL;
  em_tensor *bc = wc && b ? em__as_compute(b, dt) : NULL;
  em_tensor *y = wc && (!b || bc) ? em__cuda_conv2d_forward(&cg, xc, wc, bc) : NULL;
  em_tensor_release(xc), em_tensor_release(wc), em_tensor_release(bc);
  return y;
}

static em_status cuda_conv_backward(const conv_geom *g, em_tensor *x, em_tensor *w, em_tensor *go,
                                    bool need_x, bool need_w, bool need_b, int nin,
                                    em_tensor **grad_in) {
  em_cuda_conv_geom cg = cuda_geom(g);
  em_dtype dt = (em_dtype)go->dtype;
  em_tensor *goc = em__as_compute(go, dt), *xc = x ? em__as_compute(x, dt) : NULL;
  em_tensor *wc = w ? em__as_compute(w, dt) : NULL, *dx = NULL, *dw = NULL, *db = NULL;
  em_status st = !goc || (x && !xc) || (w && !wc)
                     ? em_last_status()
                     : em__cuda_conv2d_backward(&cg, xc, wc, goc, need_x ? &dx : NULL,
                                                need_w ? &dw : NULL, need_b ? &db : NULL);
  em_tensor_release(goc), em_tensor_release(xc), em_tensor_release(wc);
  if (st) return st;
  grad_in[0] = dx;
  grad_in[1] = dw;
  if (nin > 2) grad_in[2] = db;
  return EM_OK;
}
#endif

/* out = conv(x, w) + b for 4-D x and w of the same floating dtype; out
 * has x's dtype. */
static em_tensor *conv_compute(const conv_geom *g, em_tensor *x, em_tensor *w, em_tensor *b) {
#ifdef EMBER_CUDA
  if (x->device.type == EM_CUDA) return cuda_conv_forward(g, x, w, b);
#endif
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  em_tensor *xc = NULL, *wc = NULL, *bc = NULL, *out = NULL;
  em_status st = EM_OK;
  xc = em__as_compute(x, cdt);
  EM_CHECK_PTR_GOTO(xc, st, done);
  wc = em__as_compute(w, cdt);
  EM_CHECK_PTR_GOTO(wc, st, done);
  if (b) {
    bc = em__as_compute(b, cdt);
    EM_CHECK_PTR_GOTO(bc, st, done);
  }
  out = em_tensor_empty(EM_DIMS(g->N, g->Cout, g->OH, g->OW), cdt);
  EM_CHECK_PTR_GOTO(out, st, done);
  pthread_once(&kern_once, pick_kernels);
  if (cdt == EM_FLOAT64) {
    const double *bp = bc ? (const double *)em__data_ptr(bc) : NULL;
    st = (g->transposed ? kern.tfwd64 : kern.fwd64)(g, (double *)em__data_ptr(xc),
                                                    (double *)em__data_ptr(wc), bp,
                                                    (double *)em__data_ptr(out));
  } else {
    const float *bp = bc ? (const float *)em__data_ptr(bc) : NULL;
    st = (g->transposed ? kern.tfwd32 : kern.fwd32)(g, (float *)em__data_ptr(xc),
                                                    (float *)em__data_ptr(wc), bp,
                                                    (float *)em__data_ptr(out));
  }
  if (!st && cdt != dt) EM_CHECK_GOTO(em__convert_owned(&out, dt), st, done);
done:
  em_tensor_release(xc), em_tensor_release(wc), em_tensor_release(bc);
  if (st) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

/* ---- the autograd function ---------------------------------------------------------------- */

/* inputs: x [N, Cin, H, W], w, b (may be NULL); saved: x when w needs a
 * gradient, w when x does. */
static em_status conv_fn_forward(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                                 em_tensor **out) {
  const conv_geom *g = em_ag_ctx_user(ctx);
  out[0] = conv_compute(g, in[0], in[1], nin > 2 ? in[2] : NULL);
  if (!out[0]) return em_last_status();
  *nout = 1;
  em_tensor *save[2] = {em_ag_ctx_needs_input_grad(ctx, 1) ? in[0] : NULL,
                        em_ag_ctx_needs_input_grad(ctx, 0) ? in[1] : NULL};
  return em_ag_ctx_save(ctx, 2, save);
}

static em_status conv_fn_backward(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                                  em_tensor **grad_in) {
  const conv_geom *g = em_ag_ctx_user(ctx);
  em_tensor *go = grad_out[0];
  if (!go) return EM_OK; /* no gradient flowed: none for the inputs */
  bool need_x = em_ag_ctx_needs_input_grad(ctx, 0), need_w = em_ag_ctx_needs_input_grad(ctx, 1),
       need_b = nin > 2 && em_ag_ctx_needs_input_grad(ctx, 2);
  em_tensor *x = NULL, *w = NULL;
  if (need_w && !(x = em_ag_ctx_saved(ctx, 0))) return em_last_status();
  if (need_x && !(w = em_ag_ctx_saved(ctx, 1))) return em_last_status();
#ifdef EMBER_CUDA
  if (go->device.type == EM_CUDA)
    return cuda_conv_backward(g, x, w, go, need_x, need_w, need_b, nin, grad_in);
#endif
  em_dtype cdt = em__compute_dtype((em_dtype)go->dtype);
  em_tensor *goc = NULL, *xc = NULL, *wc = NULL, *dx = NULL, *dw = NULL, *db = NULL;
  em_status st = EM_OK;
  goc = em__as_compute(go, cdt);
  EM_CHECK_PTR_GOTO(goc, st, done);
  if (x) {
    xc = em__as_compute(x, cdt);
    EM_CHECK_PTR_GOTO(xc, st, done);
  }
  if (w) {
    wc = em__as_compute(w, cdt);
    EM_CHECK_PTR_GOTO(wc, st, done);
  }
  int64_t wsh0 = g->transposed ? g->Cin : g->Cout;
  int64_t wsh1 = g->transposed ? g->Cout / g->groups : g->Cin / g->groups;
  if (need_x) {
    dx = em_tensor_empty(EM_DIMS(g->N, g->Cin, g->H, g->W), cdt);
    EM_CHECK_PTR_GOTO(dx, st, done);
  }
  if (need_w) {
    dw = em_tensor_empty(EM_DIMS(wsh0, wsh1, g->kh, g->kw), cdt);
    EM_CHECK_PTR_GOTO(dw, st, done);
  }
  if (need_b) {
    db = em_tensor_empty(EM_DIMS(g->Cout), cdt);
    EM_CHECK_PTR_GOTO(db, st, done);
  }
#define PTR(t, TY) ((t) ? (TY *)em__data_ptr(t) : NULL)
  pthread_once(&kern_once, pick_kernels);
  if (cdt == EM_FLOAT64) {
    st = (g->transposed ? kern.tbwd64 : kern.bwd64)(
        g, PTR(xc, double), PTR(wc, double), PTR(goc, double), PTR(dx, double), PTR(dw, double),
        PTR(db, double));
  } else {
    st = (g->transposed ? kern.tbwd32 : kern.bwd32)(
        g, PTR(xc, float), PTR(wc, float), PTR(goc, float), PTR(dx, float), PTR(dw, float),
        PTR(db, float));
  }
#undef PTR
done:
  em_tensor_release(goc), em_tensor_release(xc), em_tensor_release(wc);
  if (st) {
    em_tensor_release(dx), em_tensor_release(dw), em_tensor_release(db);
    return st;
  }
  grad_in[0] = dx;
  grad_in[1] = dw;
  if (nin > 2) grad_in[2] = db;
  return EM_OK;
}

static const em_ag_function conv_function = {"ConvolutionBackward0", conv_fn_forward,
                                             conv_fn_backward};

/* Runs the 4-D problem, recording one node when autograd needs it. */
static em_tensor *conv_run(const conv_geom *g, em_tensor *x, em_tensor *w, em_tensor *b) {
  em_tensor *in[3] = {x, w, b};
  if (!em__should_record(3, in)) return conv_compute(g, x, w, b);
  conv_geom *u = malloc(sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "conv: out of memory");
  *u = *g;
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  if (em_ag_function_apply(&conv_function, u, free, b ? 3 : 2, in, &nout, out)) return NULL;
  return out[0];
}

/* ---- validation and the front end ------------------------------------------------------------ */

static int64_t opt_or(int64_t v, int64_t dflt) { return v == 0 ? dflt : v; }

/* "(5 x 5)" or "(5)" */
static const char *pair_str(int spatial, int64_t a, int64_t b, char *buf, size_t n) {
  if (spatial == 1)
    snprintf(buf, n, "(%lld)", (long long)b);
  else
    snprintf(buf, n, "(%lld x %lld)", (long long)a, (long long)b);
  return buf;
}

/* Validates the arguments of a convolution and fills g (in 4-D terms;
 * spatial 1 maps the length onto the width). x is the batched input. */
static em_status conv_check(const char *op, int spatial, bool transposed, em_tensor *x, em_tensor *w,
                            em_tensor *b, const em_conv_options *o, conv_geom *g) {
  em_conv_options dflt = {0};
  if (!o) o = &dflt;
  int ns = spatial;
  int64_t stride[2], pad[2], dil[2], opad[2];
  for (int i = 0; i < ns; i++) {
    stride[i] = opt_or(o->stride[i], 1);
    pad[i] = o->padding[i];
    dil[i] = opt_or(o->dilation[i], 1);
    opad[i] = transposed ? o->output_padding[i] : 0;
  }
  int64_t groups = opt_or(o->groups, 1);
  for (int i = 0; i < ns; i++) {
    if (pad[i] < 0) return em__set_error(EM_ERR_INVALID, "%s: negative padding is not supported", op);
    if (opad[i] < 0)
      return em__set_error(EM_ERR_INVALID, "%s: negative output_padding is not supported", op);
    if (stride[i] < 0)
      return em__set_error(EM_ERR_INVALID, "%s: non-positive stride is not supported", op);
    if (dil[i] < 0)
      return em__set_error(EM_ERR_INVALID, "%s: non-positive dilation is not supported", op);
  }
  if (groups < 0) return em__set_error(EM_ERR_INVALID, "%s: non-positive groups is not supported", op);
  if (w->ndim != ns + 2)
    return em__set_error(EM_ERR_SHAPE, "%s: expected %dD weight, but got weight of size %s", op,
                         ns + 2, em__tshape(w));
  /* dtypes */
  em_dtype xdt = (em_dtype)x->dtype;
  if (!em_dtype_is_float(xdt))
    return em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for '%s'", op, op,
                         em__torch_dtype_name(xdt));
  if (w->dtype != x->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: Input type (%s) and weight type (%s) should be the same",
                         op, cpp_type_name(xdt), cpp_type_name((em_dtype)w->dtype));
  if (b && b->dtype != x->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: Input type (%s) and bias type (%s) should be the same",
                         op, cpp_type_name(xdt), cpp_type_name((em_dtype)b->dtype));
  bool on_cuda = false; /* CUDA: input, weight and bias on one CUDA device run on cuDNN */
#ifdef EMBER_CUDA
  on_cuda = x->device.type == EM_CUDA && em_device_eq(w->device, x->device) &&
            (!b || em_device_eq(b->device, x->device));
#endif
  if (!on_cuda && (!em_device_eq(x->device, EM_DEVICE_CPU) || !em_device_eq(w->device, EM_DEVICE_CPU) ||
                   (b && !em_device_eq(b->device, EM_DEVICE_CPU))))
    return em__set_error(EM_ERR_DEVICE, "%s: only CPU tensors are supported in this build", op);
  /* channels and groups */
  int64_t w0 = w->shape[0], w1 = w->shape[1];
  if (w0 < 1)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Given groups=%lld, expected weight to be at least 1 at dimension 0, "
                         "but got weight of size %s instead",
                         op, (long long)groups, em__tshape(w));
  if (w0 % groups != 0)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Given groups=%lld, expected weight to be divisible by %lld at "
                         "dimension 0, but got weight of size [%s] instead",
                         op, (long long)groups, (long long)groups, em__tshape(w));
  int64_t cin = transposed ? w0 : w1 * groups;
  int64_t cout = transposed ? w1 * groups : w0;
  if (x->shape[1] != cin) {
    if (transposed)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: Given transposed=1, weight of size %s, expected input%s to have "
                           "%lld channels, but got %lld channels instead",
                           op, em__tshape(w), em__tshape(x), (long long)cin,
                           (long long)x->shape[1]);
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Given groups=%lld, weight of size %s, expected input%s to have %lld "
                         "channels, but got %lld channels instead",
                         op, (long long)groups, em__tshape(w), em__tshape(x), (long long)cin,
                         (long long)x->shape[1]);
  }
  if (b && (b->ndim != 1 || b->shape[0] != cout))
    return em__set_error(EM_ERR_SHAPE,
                         "%s: Given %sweight of size %s, expected bias to be 1-dimensional with "
                         "%lld elements, but got bias of size %s instead",
                         op, transposed ? "transposed=1, " : "", em__tshape(w), (long long)cout,
                         em__tshape(b));
  for (int i = 0; i < ns; i++)
    if (w->shape[2 + i] < 1)
      return em__set_error(EM_ERR_SHAPE, "%s: non-positive kernel size is not supported, got "
                           "weight of size %s", op, em__tshape(w));
  /* sizes: index 0 is H (1 for conv1d), 1 is W */
  int64_t in_sz[2], k[2], s[2], p[2], d[2], op_[2], out_sz[2];
  for (int i = 0; i < 2; i++) {
    int j = i - (2 - ns); /* option index; < 0 for the dummy height of conv1d */
    in_sz[i] = j < 0 ? 1 : x->shape[2 + j];
    k[i] = j < 0 ? 1 : w->shape[2 + j];
    s[i] = j < 0 ? 1 : stride[j];
    p[i] = j < 0 ? 0 : pad[j];
    d[i] = j < 0 ? 1 : dil[j];
    op_[i] = j < 0 ? 0 : opad[j];
  }
  char b1[64], b2[64];
  if (transposed) {
    for (int i = 0; i < 2; i++) {
      if (!(op_[i] < s[i] || op_[i] < d[i])) {
        if (ns == 2)
          return em__set_error(
              EM_ERR_INVALID,
              "%s: output padding must be smaller than either stride or dilation, but got "
              "output_padding_height: %lld output_padding_width: %lld stride_height: %lld "
              "stride_width: %lld dilation_height: %lld dilation_width: %lld",
              op, (long long)op_[0], (long long)op_[1], (long long)s[0], (long long)s[1],
              (long long)d[0], (long long)d[1]);
        return em__set_error(EM_ERR_INVALID,
                             "%s: output padding must be smaller than either stride or dilation, "
                             "but got output_padding: %lld stride: %lld dilation: %lld",
                             op, (long long)op_[1], (long long)s[1], (long long)d[1]);
      }
    }
    for (int i = 0; i < 2; i++)
      out_sz[i] = (in_sz[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op_[i] + 1;
    if (out_sz[0] < 1 || out_sz[1] < 1)
      return em__set_error(EM_ERR_SHAPE,
                           "%s: Given input size per channel: %s. Calculated output size per "
                           "channel: %s. Output size is too small",
                           op, pair_str(ns, in_sz[0], in_sz[1], b1, sizeof b1),
                           pair_str(ns, out_sz[0], out_sz[1], b2, sizeof b2));
  } else {
    int64_t padded[2], ek[2];
    for (int i = 0; i < 2; i++) {
      padded[i] = in_sz[i] + 2 * p[i];
      ek[i] = d[i] * (k[i] - 1) + 1;
    }
    if (padded[0] < ek[0] || padded[1] < ek[1])
      return em__set_error(EM_ERR_SHAPE,
                           "%s: Calculated padded input size per channel: %s. Kernel size: %s. "
                           "Kernel size can't be greater than actual input size",
                           op, pair_str(ns, padded[0], padded[1], b1, sizeof b1),
                           pair_str(ns, ek[0], ek[1], b2, sizeof b2));
    for (int i = 0; i < 2; i++) out_sz[i] = (padded[i] - ek[i]) / s[i] + 1;
  }
  *g = (conv_geom){.spatial = ns, .transposed = transposed, .N = x->shape[0], .Cin = cin,
                   .H = in_sz[0], .W = in_sz[1], .Cout = cout, .OH = out_sz[0], .OW = out_sz[1],
                   .kh = k[0], .kw = k[1], .sh = s[0], .sw = s[1], .ph = p[0], .pw = p[1],
                   .dh = d[0], .dw = d[1], .groups = groups};
  return EM_OK;
}

/* The shared front end: unbatched inputs get a batch dim, conv1d a height
 * of 1; the result is viewed back. */
static em_tensor *conv_front(const char *op, int ns, bool transposed, em_tensor *x, em_tensor *w,
                             em_tensor *b, const em_conv_options *o) {
  if (!x || !w) return EM_FAIL(EM_ERR_INVALID, "%s: input and weight must not be NULL", op);
  if (x->ndim != ns + 1 && x->ndim != ns + 2)
    return EM_FAIL(EM_ERR_SHAPE,
                   "%s: Expected %dD (unbatched) or %dD (batched) input to %s, but got input of "
                   "size: %s",
                   op, ns + 1, ns + 2, op, em__tshape(x));
  bool unbatched = x->ndim == ns + 1;
  em_tensor *xb = NULL, *x4 = NULL, *w4 = NULL, *y4 = NULL, *y = NULL;
  em_status st = EM_OK;
  xb = unbatched ? em_tensor_unsqueeze(x, 0) : em_tensor_retain(x);
  EM_CHECK_PTR_GOTO(xb, st, done);
  conv_geom g;
  EM_CHECK_GOTO(conv_check(op, ns, transposed, xb, w, b, o, &g), st, done);
  if (ns == 1) {
    x4 = em_tensor_unsqueeze(xb, 2);
    EM_CHECK_PTR_GOTO(x4, st, done);
    w4 = em_tensor_unsqueeze(w, 2);
    EM_CHECK_PTR_GOTO(w4, st, done);
  } else {
    x4 = em_tensor_retain(xb);
    w4 = em_tensor_retain(w);
  }
  y4 = conv_run(&g, x4, w4, b);
  EM_CHECK_PTR_GOTO(y4, st, done);
  y = em_tensor_retain(y4);
  if (ns == 1) {
    em_tensor *t = em_tensor_squeeze_dim(y, 2);
    em_tensor_release(y);
    y = t;
    EM_CHECK_PTR_GOTO(y, st, done);
  }
  if (unbatched) {
    em_tensor *t = em_tensor_squeeze_dim(y, 0);
    em_tensor_release(y);
    y = t;
    EM_CHECK_PTR_GOTO(y, st, done);
  }
done:
  em_tensor_release(xb), em_tensor_release(x4), em_tensor_release(w4), em_tensor_release(y4);
  if (st) {
    em_tensor_release(y);
    return NULL;
  }
  return y;
}

em_tensor *em_nn_f_conv1d(em_tensor *x, em_tensor *w, em_tensor *b, const em_conv_options *o) {
  return conv_front("conv1d", 1, false, x, w, b, o);
}

em_tensor *em_nn_f_conv2d(em_tensor *x, em_tensor *w, em_tensor *b, const em_conv_options *o) {
  return conv_front("conv2d", 2, false, x, w, b, o);
}

em_tensor *em_nn_f_conv_transpose2d(em_tensor *x, em_tensor *w, em_tensor *b,
                                    const em_conv_options *o) {
  return conv_front("conv_transpose2d", 2, true, x, w, b, o);
}

/* ---- modules ------------------------------------------------------------------------------------ */

typedef struct conv_impl {
  int ns;
  bool transposed;
  int64_t cin, cout, k[2];
  em_conv_options o; /* defaults filled in */
  bool bias;
} conv_impl;

static em_tensor *conv_forward(em_module *m, int nin, em_tensor *const *in) {
  conv_impl *p = em_module_impl(m);
  if (nin != 1)
    return EM_FAIL(EM_ERR_INVALID, "%s.forward: takes 1 input, got %d", em_module_type_name(m), nin);
  em_tensor *w = em_module_parameter(m, "weight"), *b = em_module_parameter(m, "bias");
  if (p->transposed) return em_nn_f_conv_transpose2d(in[0], w, b, &p->o);
  return p->ns == 1 ? em_nn_f_conv1d(in[0], w, b, &p->o) : em_nn_f_conv2d(in[0], w, b, &p->o);
}

/* "(3, 3)" or "(3,)" */
static const char *tuple_str(int ns, const int64_t *v, char *buf, size_t n) {
  if (ns == 1)
    snprintf(buf, n, "(%lld,)", (long long)v[0]);
  else
    snprintf(buf, n, "(%lld, %lld)", (long long)v[0], (long long)v[1]);
  return buf;
}

static bool all_eq(int ns, const int64_t *v, int64_t x) {
  for (int i = 0; i < ns; i++)
    if (v[i] != x) return false;
  return true;
}

/* PyTorch's _ConvNd.extra_repr. */
static char *conv_repr(em_module *m) {
  conv_impl *p = em_module_impl(m);
  char k[64], s[64], pd[64], d[64], op[64];
  char buf[512];
  int n = snprintf(buf, sizeof buf, "%lld, %lld, kernel_size=%s, stride=%s", (long long)p->cin,
                   (long long)p->cout, tuple_str(p->ns, p->k, k, sizeof k),
                   tuple_str(p->ns, p->o.stride, s, sizeof s));
  if (!all_eq(p->ns, p->o.padding, 0))
    n += snprintf(buf + n, sizeof buf - (size_t)n, ", padding=%s",
                  tuple_str(p->ns, p->o.padding, pd, sizeof pd));
  if (!all_eq(p->ns, p->o.dilation, 1))
    n += snprintf(buf + n, sizeof buf - (size_t)n, ", dilation=%s",
                  tuple_str(p->ns, p->o.dilation, d, sizeof d));
  if (!all_eq(p->ns, p->o.output_padding, 0))
    n += snprintf(buf + n, sizeof buf - (size_t)n, ", output_padding=%s",
                  tuple_str(p->ns, p->o.output_padding, op, sizeof op));
  if (p->o.groups != 1)
    n += snprintf(buf + n, sizeof buf - (size_t)n, ", groups=%lld", (long long)p->o.groups);
  if (!p->bias) snprintf(buf + n, sizeof buf - (size_t)n, ", bias=False");
  return em__nn_fmt("%s", buf);
}

static const em_module_ops conv1d_ops = {"Conv1d", conv_forward, conv_repr, free};
static const em_module_ops conv2d_ops = {"Conv2d", conv_forward, conv_repr, free};
static const em_module_ops convt2d_ops = {"ConvTranspose2d", conv_forward, conv_repr, free};

/* uniform(-bound, bound) float32 parameter registered under name. */
static em_status add_uniform_param(em_module *m, const char *name, int ndim, const int64_t *shape,
                                   double bound) {
  em_tensor *t = em_tensor_empty(ndim, shape, EM_FLOAT32);
  if (!t) return em_last_status();
  em_status st = em_tensor_uniform_(t, -bound, bound, NULL);
  if (!st) st = em_module_register_parameter(m, name, t);
  em_tensor_release(t);
  return st;
}

static em_module *conv_module(const em_module_ops *ops, int ns, bool transposed, int64_t cin,
                              int64_t cout, int64_t kh, int64_t kw, const em_conv_options *o,
                              bool bias) {
  const char *name = ops->type_name;
  em_conv_options dflt = {0};
  if (!o) o = &dflt;
  int64_t groups = opt_or(o->groups, 1);
  if (groups < 1) return EM_FAIL(EM_ERR_INVALID, "%s: groups must be a positive integer", name);
  if (cin < 0 || cout < 0)
    return EM_FAIL(EM_ERR_INVALID,
                   "%s: Trying to create tensor with negative dimension: in_channels=%lld, "
                   "out_channels=%lld",
                   name, (long long)cin, (long long)cout);
  if (cin % groups != 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: in_channels must be divisible by groups", name);
  if (cout % groups != 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: out_channels must be divisible by groups", name);
  if (kh < 0 || kw < 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: kernel_size must be non-negative, got %lld", name,
                   (long long)(kh < 0 ? kh : kw));
  conv_impl *p = calloc(1, sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", name);
  p->ns = ns;
  p->transposed = transposed;
  p->cin = cin;
  p->cout = cout;
  p->bias = bias;
  if (ns == 1) {
    p->k[0] = kw;
    p->o.stride[0] = opt_or(o->stride[0], 1);
    p->o.padding[0] = o->padding[0];
    p->o.dilation[0] = opt_or(o->dilation[0], 1);
  } else {
    p->k[0] = kh, p->k[1] = kw;
    for (int i = 0; i < 2; i++) {
      p->o.stride[i] = opt_or(o->stride[i], 1);
      p->o.padding[i] = o->padding[i];
      p->o.dilation[i] = opt_or(o->dilation[i], 1);
      p->o.output_padding[i] = transposed ? o->output_padding[i] : 0;
    }
  }
  p->o.groups = groups;
  em_module *m = em_module_create(ops, p);
  if (!m) return NULL;
  /* PyTorch: kaiming_uniform_(weight, a=sqrt(5)) and bias uniform(+-1/sqrt(fan_in)); fan_in
   * from weight dim 1 times the receptive field (for ConvTranspose that is out/groups). */
  int64_t shape[4];
  int nd = ns + 2;
  shape[0] = transposed ? cin : cout;
  shape[1] = transposed ? cout / groups : cin / groups;
  if (ns == 1) {
    shape[2] = kw;
  } else {
    shape[2] = kh, shape[3] = kw;
  }
  int64_t fan_in = shape[1];
  for (int i = 2; i < nd; i++) fan_in *= shape[i];
  double gain = sqrt(2.0 / (1.0 + 5.0));
  double wbound = fan_in > 0 ? sqrt(3.0) * (gain / sqrt((double)fan_in)) : 0;
  double bbound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0;
  em_status st = add_uniform_param(m, "weight", nd, shape, wbound);
  if (!st)
    st = bias ? add_uniform_param(m, "bias", EM_DIMS(cout), bbound)
              : em_module_register_parameter(m, "bias", NULL);
  if (st) {
    em_module_release(m);
    return NULL;
  }
  return m;
}

em_module *em_nn_conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel,
                        const em_conv_options *o, bool bias) {
  return conv_module(&conv1d_ops, 1, false, in_channels, out_channels, 1, kernel, o, bias);
}

em_module *em_nn_conv2d(int64_t in_channels, int64_t out_channels, int64_t kh, int64_t kw,
                        const em_conv_options *o, bool bias) {
  return conv_module(&conv2d_ops, 2, false, in_channels, out_channels, kh, kw, o, bias);
}

em_module *em_nn_conv_transpose2d(int64_t in_channels, int64_t out_channels, int64_t kh,
                                  int64_t kw, const em_conv_options *o, bool bias) {
  return conv_module(&convt2d_ops, 2, true, in_channels, out_channels, kh, kw, o, bias);
}
