/* ember optim — optimizers, learning-rate schedulers, gradient clipping.
 *
 *     em_sgd_options o = {.lr = 0.05, .momentum = 0.9};
 *     em_optimizer *opt = em_optim_sgd(params.n, params.tensors, &o);
 *     for (...) {
 *       em_optim_zero_grad(opt, true);
 *       ... em_backward(loss, NULL, false);
 *       em_optim_step(opt);
 *     }
 *     em_optim_free(opt);
 *
 * Updates follow PyTorch 1.13's update rules exactly (the single-tensor
 * "for-loop" implementations) and run without autograd. Parameters are
 * retained by the optimizer. Each optimizer has param groups with their
 * own hyper-parameters; schedulers change a group's lr.
 *
 * State dicts use PyTorch's layout flattened to dotted names:
 * "state.<param index>.<name>" (momentum_buffer, exp_avg, exp_avg_sq,
 * max_exp_avg_sq, square_avg, sum, step ...) and
 * "param_groups.<group>.<hyper-parameter>" (0-dim float64 tensors;
 * booleans as 0/1; Adam's betas as a [2] tensor), plus
 * "param_groups.<group>.params" (int64 indices) — so one safetensors file
 * can hold a model and its optimizer. The tensors are live references to
 * the optimizer's state, as PyTorch's. A scheduler borrows its optimizer,
 * which must outlive it.
 */
#ifndef EMBER_NN_OPTIM_H
#define EMBER_NN_OPTIM_H

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_optimizer em_optimizer;

/* Zero-initialised options give PyTorch's defaults except lr, which must
 * be set (> 0 or an error). */
typedef struct em_sgd_options {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
} em_sgd_options;

typedef struct em_adam_options {
  double lr;
  double beta1, beta2; /* 0 means the defaults 0.9, 0.999 */
  double eps;          /* 0 means 1e-8 */
  double weight_decay; /* Adam: L2 added to the gradient; AdamW: decoupled
                          (0 means 0 for Adam, 1e-2 for AdamW; set
                          weight_decay_zero to force 0 for AdamW) */
  bool weight_decay_zero;
  bool amsgrad, maximize;
} em_adam_options;

typedef struct em_rmsprop_options {
  double lr, alpha /* 0: 0.99 */, eps /* 0: 1e-8 */, weight_decay, momentum;
  bool centered, maximize;
} em_rmsprop_options;

typedef struct em_adagrad_options {
  double lr /* 0: 1e-2 */, lr_decay, weight_decay, initial_accumulator_value, eps /* 0: 1e-10 */;
  bool maximize;
} em_adagrad_options;

EM_API em_optimizer *em_optim_sgd(int n, em_tensor *const *params, const em_sgd_options *o);
EM_API em_optimizer *em_optim_adam(int n, em_tensor *const *params, const em_adam_options *o);
EM_API em_optimizer *em_optim_adamw(int n, em_tensor *const *params, const em_adam_options *o);
EM_API em_optimizer *em_optim_rmsprop(int n, em_tensor *const *params,
                                      const em_rmsprop_options *o);
EM_API em_optimizer *em_optim_adagrad(int n, em_tensor *const *params,
                                      const em_adagrad_options *o);
EM_API void em_optim_free(em_optimizer *opt);

/* Adds a param group with its own options (a pointer to the options
 * struct of the optimizer's kind). A parameter may be in only one group. */
EM_API em_status em_optim_add_param_group(em_optimizer *opt, int n, em_tensor *const *params,
                                          const void *options);
EM_API int em_optim_num_groups(const em_optimizer *opt);
EM_API double em_optim_get_lr(const em_optimizer *opt, int group);
EM_API em_status em_optim_set_lr(em_optimizer *opt, int group, double lr);
/* The lr a group was created with (schedulers scale from it). */
EM_API double em_optim_initial_lr(const em_optimizer *opt, int group);

/* Any hyper-parameter of a group by its state-dict name ("lr",
 * "momentum", "weight_decay", "nesterov" (0/1), "eps", "beta1", "beta2",
 * "amsgrad", "alpha", "centered", "lr_decay", ...). Unknown names and
 * invalid values are errors. */
EM_API em_status em_optim_get_option(em_optimizer *opt, int group, const char *name, double *value);
EM_API em_status em_optim_set_option(em_optimizer *opt, int group, const char *name, double value);
/* "SGD", "Adam", "AdamW", "RMSprop" or "Adagrad". */
EM_API const char *em_optim_kind(const em_optimizer *opt);

/* One update of every parameter that has a gradient. */
EM_API em_status em_optim_step(em_optimizer *opt);
EM_API em_status em_optim_zero_grad(em_optimizer *opt, bool set_to_none);

EM_API em_state_dict *em_optim_state_dict(em_optimizer *opt);
/* Restores state and hyper-parameters; the dict must come from an
 * optimizer of the same kind with the same group sizes (else an error
 * naming the mismatch, and nothing changes). */
EM_API em_status em_optim_load_state_dict(em_optimizer *opt, const em_state_dict *sd);

/* ---- gradient clipping ---------------------------------------------------------- */

/* Scales the gradients so their total norm (norm_type: 2, 1, INFINITY, ...)
 * is at most max_norm, as torch.nn.utils.clip_grad_norm_; *total_norm (may
 * be NULL) receives the norm before clipping. Non-finite norms are an
 * error when error_if_nonfinite. */
EM_API em_status em_nn_clip_grad_norm_(int n, em_tensor *const *params, double max_norm,
                                       double norm_type, bool error_if_nonfinite,
                                       double *total_norm);
EM_API em_status em_nn_clip_grad_value_(int n, em_tensor *const *params, double clip_value);

/* ---- learning-rate schedulers --------------------------------------------------------
 * A scheduler changes its optimizer's learning rates each time
 * em_sched_step is called (once per epoch or per iteration, as in PyTorch;
 * the constructor performs PyTorch's initial step). */
typedef struct em_scheduler em_scheduler;

EM_API em_scheduler *em_sched_step_lr(em_optimizer *opt, int64_t step_size, double gamma);
EM_API em_scheduler *em_sched_multistep_lr(em_optimizer *opt, int n, const int64_t *milestones,
                                           double gamma);
EM_API em_scheduler *em_sched_exponential_lr(em_optimizer *opt, double gamma);
EM_API em_scheduler *em_sched_cosine_annealing_lr(em_optimizer *opt, int64_t t_max,
                                                  double eta_min);
EM_API em_scheduler *em_sched_linear_lr(em_optimizer *opt, double start_factor,
                                        double end_factor, int64_t total_iters);
/* anneal_cos: cosine (true) or linear annealing. */
EM_API em_scheduler *em_sched_one_cycle_lr(em_optimizer *opt, double max_lr,
                                           int64_t total_steps, double pct_start,
                                           bool anneal_cos, double div_factor,
                                           double final_div_factor, bool three_phase);
/* Runs schedulers[i] until milestones[i] (n - 1 milestones). Steals the
 * scheduler references. */
EM_API em_scheduler *em_sched_sequential_lr(em_optimizer *opt, int n, em_scheduler **schedulers,
                                            const int64_t *milestones);
EM_API em_status em_sched_step(em_scheduler *s);
EM_API double em_sched_last_lr(const em_scheduler *s, int group);
EM_API int64_t em_sched_last_epoch(const em_scheduler *s);
EM_API void em_sched_free(em_scheduler *s);

#ifdef __cplusplus
}
#endif
#endif
