/* ember nn layers: modules and their functional forms.
 *
 * Every layer has a functional form em_nn_f_<layer>(...) (PyTorch's
 * torch.nn.functional) that is differentiable, and a module constructor
 * em_nn_<layer>(...) that owns parameters initialised as PyTorch does.
 * Shapes follow PyTorch: convolution inputs are [N, C, (L) | (H, W)],
 * unbatched inputs (one dim fewer) are accepted where PyTorch accepts them.
 */
#ifndef EMBER_NN_LAYERS_H
#define EMBER_NN_LAYERS_H

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear --------------------------------------------------------------- */

/* y = x w^T + b; x [..., in], w [out, in], b [out] or NULL. */
EM_API em_tensor *em_nn_f_linear(em_tensor *x, em_tensor *w, em_tensor *b);
/* y_k = x1^T W_k x2 + b_k; x1 [..., in1], x2 [..., in2], w [out, in1, in2]. */
EM_API em_tensor *em_nn_f_bilinear(em_tensor *x1, em_tensor *x2, em_tensor *w, em_tensor *b);

EM_API em_module *em_nn_linear(int64_t in_features, int64_t out_features, bool bias);
EM_API em_module *em_nn_bilinear(int64_t in1_features, int64_t in2_features,
                                 int64_t out_features, bool bias);
EM_API em_module *em_nn_identity(void);
/* Flatten(start_dim=1, end_dim=-1) as a module. */
EM_API em_module *em_nn_flatten(int start_dim, int end_dim);

/* ---- convolution and pooling ------------------------------------------------- */

/* Convolution geometry; 1-D convolutions use index 0 only. */
typedef struct em_conv_options {
  int64_t stride[2];         /* default 1 (0 means 1) */
  int64_t padding[2];        /* default 0 */
  int64_t dilation[2];       /* default 1 (0 means 1) */
  int64_t output_padding[2]; /* transposed convolution only */
  int64_t groups;            /* default 1 (0 means 1) */
} em_conv_options;

/* x [N, Cin, L], w [Cout, Cin/groups, K] */
EM_API em_tensor *em_nn_f_conv1d(em_tensor *x, em_tensor *w, em_tensor *b,
                                 const em_conv_options *o);
/* x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW] -> [N, Cout, OH, OW] */
EM_API em_tensor *em_nn_f_conv2d(em_tensor *x, em_tensor *w, em_tensor *b,
                                 const em_conv_options *o);
/* x [N, Cin, H, W], w [Cin, Cout/groups, KH, KW] */
EM_API em_tensor *em_nn_f_conv_transpose2d(em_tensor *x, em_tensor *w, em_tensor *b,
                                           const em_conv_options *o);

EM_API em_module *em_nn_conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel,
                               const em_conv_options *o, bool bias);
EM_API em_module *em_nn_conv2d(int64_t in_channels, int64_t out_channels, int64_t kh,
                               int64_t kw, const em_conv_options *o, bool bias);
EM_API em_module *em_nn_conv_transpose2d(int64_t in_channels, int64_t out_channels, int64_t kh,
                                         int64_t kw, const em_conv_options *o, bool bias);

typedef struct em_pool_options {
  int64_t kernel[2];
  int64_t stride[2];   /* 0: the kernel size (PyTorch's default) */
  int64_t padding[2];
  int64_t dilation[2]; /* max pool only; 0 means 1 */
  bool ceil_mode;
  bool count_include_pad; /* avg pool only; PyTorch's default is true */
} em_pool_options;

EM_API em_tensor *em_nn_f_max_pool2d(em_tensor *x, const em_pool_options *o);
/* Also returns the flat argmax indices (int64, per plane) when indices is
 * not NULL. */
EM_API em_tensor *em_nn_f_max_pool2d_with_indices(em_tensor *x, const em_pool_options *o,
                                                  em_tensor **indices);
EM_API em_tensor *em_nn_f_avg_pool2d(em_tensor *x, const em_pool_options *o);
EM_API em_tensor *em_nn_f_adaptive_avg_pool2d(em_tensor *x, int64_t out_h, int64_t out_w);

EM_API em_module *em_nn_max_pool2d(const em_pool_options *o);
EM_API em_module *em_nn_avg_pool2d(const em_pool_options *o);
EM_API em_module *em_nn_adaptive_avg_pool2d(int64_t out_h, int64_t out_w);

/* ---- normalisation -------------------------------------------------------------- */

/* x [N, C, ...]. In training (or without running stats) normalises with
 * the batch statistics and, when running_mean/var are given, updates them
 * in place: running = (1 - momentum) running + momentum batch (the
 * unbiased variance). In eval uses the running statistics. weight/bias may
 * be NULL. */
EM_API em_tensor *em_nn_f_batch_norm(em_tensor *x, em_tensor *running_mean,
                                     em_tensor *running_var, em_tensor *weight, em_tensor *bias,
                                     bool training, double momentum, double eps);
/* Normalises over the last ndim dims, which must equal shape. */
EM_API em_tensor *em_nn_f_layer_norm(em_tensor *x, int ndim, const int64_t *shape,
                                     em_tensor *weight, em_tensor *bias, double eps);
/* x [N, C, ...], C divisible by num_groups; weight/bias [C] or NULL. */
EM_API em_tensor *em_nn_f_group_norm(em_tensor *x, int64_t num_groups, em_tensor *weight,
                                     em_tensor *bias, double eps);

/* track_running_stats false: always batch statistics, no buffers. */
EM_API em_module *em_nn_batch_norm1d(int64_t num_features, double eps, double momentum,
                                     bool affine, bool track_running_stats);
EM_API em_module *em_nn_batch_norm2d(int64_t num_features, double eps, double momentum,
                                     bool affine, bool track_running_stats);
EM_API em_module *em_nn_layer_norm(int ndim, const int64_t *shape, double eps,
                                   bool elementwise_affine);
EM_API em_module *em_nn_group_norm(int64_t num_groups, int64_t num_channels, double eps,
                                   bool affine);

/* ---- embedding and dropout -------------------------------------------------------- */

/* indices (int64/int32, any shape) into weight [num, dim]. When
 * has_padding_idx, rows equal to padding_idx (negative counts from the end)
 * get no gradient. */
EM_API em_tensor *em_nn_f_embedding(em_tensor *indices, em_tensor *weight, bool has_padding_idx,
                                    int64_t padding_idx);
EM_API em_module *em_nn_embedding(int64_t num_embeddings, int64_t embedding_dim,
                                  bool has_padding_idx, int64_t padding_idx);

/* Zeroes elements with probability p and scales the rest by 1/(1-p) when
 * training; the identity otherwise. g NULL: the default generator. */
EM_API em_tensor *em_nn_f_dropout(em_tensor *x, double p, bool training, em_generator *g);
EM_API em_module *em_nn_dropout(double p);

/* ---- activations as modules (the functions are core ops) ------------------------- */

EM_API em_module *em_nn_relu(void);
EM_API em_module *em_nn_leaky_relu(double negative_slope);
EM_API em_module *em_nn_gelu(bool approximate_tanh);
EM_API em_module *em_nn_silu(void);
EM_API em_module *em_nn_tanh(void);
EM_API em_module *em_nn_sigmoid(void);
EM_API em_module *em_nn_softmax(int dim);
EM_API em_module *em_nn_log_softmax(int dim);

/* ---- containers --------------------------------------------------------------------- */

/* Children named "0", "1", ...; forward chains them. Steals each
 * module reference (NULL entries make the call fail, releasing the rest). */
EM_API em_module *em_nn_sequential(int n, em_module *const *modules);
EM_API em_status em_nn_sequential_append(em_module *seq, em_module *m); /* steals m */
/* A list of modules without a forward; children named "0", "1", ... */
EM_API em_module *em_nn_module_list(int n, em_module *const *modules);
/* An ordered dict of named modules without a forward. */
EM_API em_module *em_nn_module_dict(int n, const char *const *names, em_module *const *modules);

#ifdef __cplusplus
}
#endif
#endif
