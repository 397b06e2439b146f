/* ember nn losses (torch.nn.functional's, with reduction none/mean/sum).
 * All are differentiable with respect to input (and target where PyTorch
 * allows it). */
#ifndef EMBER_NN_LOSSES_H
#define EMBER_NN_LOSSES_H

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum em_reduction { EM_REDUCTION_MEAN = 0, EM_REDUCTION_SUM, EM_REDUCTION_NONE } em_reduction;

/* Options for cross_entropy and nll_loss; NULL means PyTorch's defaults
 * (no weight, ignore_index -100, mean, no label smoothing). */
typedef struct em_ce_options {
  em_tensor *weight;      /* [C] class weights or NULL */
  int64_t ignore_index;   /* for class-index targets; default -100 */
  bool has_ignore_index;  /* false: use -100 */
  em_reduction reduction;
  double label_smoothing; /* [0, 1] */
} em_ce_options;

/* input [N, C] or [N, C, d1, ...] (or [C]); target class indices [N, ...]
 * (int64) or probabilities with input's shape (float). */
EM_API em_tensor *em_nn_f_cross_entropy(em_tensor *input, em_tensor *target,
                                        const em_ce_options *o);
/* input: log-probabilities [N, C, ...]; target class indices. */
EM_API em_tensor *em_nn_f_nll_loss(em_tensor *input, em_tensor *target, const em_ce_options *o);
EM_API em_tensor *em_nn_f_mse_loss(em_tensor *input, em_tensor *target, em_reduction r);
EM_API em_tensor *em_nn_f_l1_loss(em_tensor *input, em_tensor *target, em_reduction r);
EM_API em_tensor *em_nn_f_smooth_l1_loss(em_tensor *input, em_tensor *target, em_reduction r,
                                         double beta);
/* input probabilities in [0, 1]; weight broadcastable or NULL. */
EM_API em_tensor *em_nn_f_binary_cross_entropy(em_tensor *input, em_tensor *target,
                                               em_tensor *weight, em_reduction r);
EM_API em_tensor *em_nn_f_binary_cross_entropy_with_logits(em_tensor *input, em_tensor *target,
                                                           em_tensor *weight,
                                                           em_tensor *pos_weight, em_reduction r);
/* input: log-probabilities; target: probabilities (or log-probabilities
 * when log_target). Reduction EM_REDUCTION_MEAN averages over all elements
 * as PyTorch's "mean"; batchmean is sum / N: pass batchmean true. */
EM_API em_tensor *em_nn_f_kl_div(em_tensor *input, em_tensor *target, em_reduction r,
                                 bool batchmean, bool log_target);

#ifdef __cplusplus
}
#endif
#endif
