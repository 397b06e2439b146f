/* GPU entry points for nn/'s layers whose CPU kernels live in nn/ (conv,
 * pooling, batch norm). Available when EMBER_CUDA is defined; nn/ calls
 * them for CUDA tensors from the same autograd functions it uses on the
 * CPU (the geometry structs mirror nn/conv.c's conv_geom and nn/pool.c's
 * pool_geom). Tensors are contiguous, of one floating dtype, on one CUDA
 * device; results are new tensors on that device. Work is queued on the
 * device's current stream.
 *
 *   convolution  cuDNN (forward, backward data, backward filter; transposed
 *                convolution as backward data), bias added with cuDNN;
 *                float32 follows the matmul precision setting (TF32 when
 *                "high" or "medium"), float16/bfloat16 use tensor cores
 *   pooling      ember's CUDA kernels (PyTorch's windows: ceil_mode,
 *                dilation, count_include_pad, adaptive; max pooling
 *                returns PyTorch's flat h*W + w argmax index)
 *   batch norm   cuDNN spatial batch norm (training: batch statistics and
 *                running-stat update with PyTorch's unbiased variance;
 *                eval: running statistics)
 */
#ifndef EMBER_CORE_CUDA_CUDA_NN_H
#define EMBER_CORE_CUDA_CUDA_NN_H

#include "core/tensor.h"

typedef struct em_cuda_conv_geom {
  bool transposed;
  int64_t N, Cin, H, W, Cout, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t groups;
} em_cuda_conv_geom;

/* y [N, Cout, OH, OW] = conv(x [N, Cin, H, W], w) + b (b may be NULL). */
em_tensor *em__cuda_conv2d_forward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *b);
/* Gradients for the outputs requested (non-NULL pointers; x is needed for
 * gw, w for gx): gx like x, gw like w, gb [Cout]. */
em_status em__cuda_conv2d_backward(const em_cuda_conv_geom *g, em_tensor *x, em_tensor *w,
                                   em_tensor *gy, em_tensor **gx, em_tensor **gw, em_tensor **gb);

typedef enum em_cuda_pool_kind { EM_CUDA_POOL_MAX, EM_CUDA_POOL_AVG, EM_CUDA_POOL_ADAPTIVE } em_cuda_pool_kind;
typedef struct em_cuda_pool_geom {
  em_cuda_pool_kind kind;
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool count_include_pad;
} em_cuda_pool_geom;

/* x [planes, H, W] -> y [planes, OH, OW] (x's dtype); *idx (max pooling,
 * when idx is not NULL): int64 argmax indices. */
em_status em__cuda_pool2d_forward(const em_cuda_pool_geom *g, em_tensor *x, em_tensor **y,
                                  em_tensor **idx);
/* gy [planes, OH, OW] (and idx for max pooling) -> gx [planes, H, W]. */
em_status em__cuda_pool2d_backward(const em_cuda_pool_geom *g, em_tensor *gy, em_tensor *idx,
                                   em_tensor **gx);

/* x [N, C, ...] of float32 or float64 (other dtypes: EM_ERR_NOTIMPL, so
 * the caller can convert or fall back); weight, bias [C] or NULL (1 and
 * 0); running_mean / running_var [C] or NULL, updated in training
 * (momentum as PyTorch: new = (1 - m) old + m batch, unbiased variance).
 * All of x's dtype. Training returns save_mean / save_invstd [C] for the
 * backward (either pointer may be NULL). */
em_status em__cuda_batch_norm_forward(em_tensor *x, em_tensor *weight, em_tensor *bias,
                                      em_tensor *running_mean, em_tensor *running_var,
                                      bool training, double momentum, double eps, em_tensor **y,
                                      em_tensor **save_mean, em_tensor **save_invstd);
em_status em__cuda_batch_norm_backward(em_tensor *x, em_tensor *gy, em_tensor *weight,
                                       em_tensor *save_mean, em_tensor *save_invstd, double eps,
                                       em_tensor **gx, em_tensor **gw, em_tensor **gb);

#endif
