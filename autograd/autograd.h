/* ember autograd — tape-based reverse-mode differentiation.
 *
 * Ops record a node as they run when an input requires grad and grad mode
 * is on (core/core_impl.h: em__record). em_backward walks the recorded graph
 * from the output in dependency order (a node runs once every gradient
 * flowing into it is known), accumulates into the .grad of leaf tensors,
 * and frees the graph unless retain_graph.
 *
 *     em_tensor *w = em_tensor_randn(EM_DIMS(3, 2), EM_FLOAT32, NULL);
 *     em_tensor_set_requires_grad(w, true);
 *     em_tensor *y = em_tensor_matmul(x, w);
 *     em_tensor *loss = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
 *     em_backward(loss, NULL, false);          // w's grad is now d loss / d w
 *     em_tensor *g = em_tensor_grad(w);        // new reference
 *
 * Grad mode is thread-local: em_set_grad_enabled(false) is PyTorch's
 * no_grad (core/tensor.h). Hooks: tensor hooks may replace the gradient
 * flowing into a tensor; post-accumulate-grad hooks on leaves fire as soon
 * as that leaf's .grad is final (the DDP reducer hangs off them). Custom
 * functions supply their own forward and backward. em_ag_gradcheck compares
 * analytical gradients with central finite differences in float64.
 *
 * Ownership and errors follow core: inputs borrowed, results new
 * references, em_status / NULL with em_last_error() on failure.
 */
#ifndef EMBER_AUTOGRAD_H
#define EMBER_AUTOGRAD_H

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- per-tensor state ---------------------------------------------------- */

/* Marks t as requiring grad (a leaf: accumulates into .grad). Only
 * floating-point tensors can require grad; a non-leaf cannot be set to not
 * require grad (use em_tensor_detach). */
EM_API em_status em_tensor_set_requires_grad(em_tensor *t, bool requires_grad);
EM_API bool em_tensor_requires_grad(const em_tensor *t);
/* A leaf: requires no grad, or requires grad and was not produced by a
 * recorded op. */
EM_API bool em_tensor_is_leaf(const em_tensor *t);
/* The accumulated gradient (new reference), or NULL when there is none
 * (not an error). */
EM_API em_tensor *em_tensor_grad(em_tensor *t);
/* Replaces .grad (g may be NULL to clear); g must match t's shape and
 * dtype. */
EM_API em_status em_tensor_set_grad(em_tensor *t, em_tensor *g);
/* Non-leaf tensors keep their gradient too after backward. */
EM_API em_status em_tensor_retain_grad(em_tensor *t);
/* "AddBackward0", "AccumulateGrad" style name of t's creator, or NULL. */
EM_API const char *em_tensor_grad_fn_name(const em_tensor *t);

/* ---- running backward ---------------------------------------------------- */

/* Back-propagates from t. grad is d(something)/dt with t's shape; NULL is
 * allowed only when t has one element (it means 1). Without retain_graph
 * the graph's saved tensors are freed and a second backward through it is
 * an error. */
EM_API em_status em_backward(em_tensor *t, em_tensor *grad, bool retain_graph);
/* Several roots at once (grads[i] may be NULL for one-element roots). */
EM_API em_status em_backward_multi(int n, em_tensor *const *roots, em_tensor *const *grads,
                                   bool retain_graph);
/* d outputs / d inputs without touching .grad: grads_out[i] receives a new
 * reference (NULL for an input the outputs do not depend on, which is an
 * error unless allow_unused). */
EM_API em_status em_ag_grad(int nout, em_tensor *const *outputs, em_tensor *const *grad_outputs,
                            int nin, em_tensor *const *inputs, bool retain_graph,
                            bool allow_unused, em_tensor **grads_out);

/* ---- hooks ----------------------------------------------------------------- */

/* Called with the gradient flowing into the tensor. To replace it, set
 * *replacement to a new reference of the same shape; leave it NULL to keep
 * the gradient. Returning non-OK aborts backward with that error. */
typedef em_status (*em_tensor_hook_fn)(em_tensor *grad, em_tensor **replacement, void *ctx);
/* Called after a leaf's .grad has received its final value for this
 * backward pass. */
typedef em_status (*em_post_accumulate_hook_fn)(em_tensor *leaf, void *ctx);

/* Returns a handle (> 0) for removal, or -1 on error. ctx_free (may be NULL)
 * runs on ctx when the hook is removed or the tensor goes. t must require
 * grad. */
EM_API int em_tensor_register_hook(em_tensor *t, em_tensor_hook_fn fn, void *ctx,
                                   void (*ctx_free)(void *ctx));
EM_API int em_tensor_register_post_accumulate_grad_hook(em_tensor *t,
                                                        em_post_accumulate_hook_fn fn,
                                                        void *ctx, void (*ctx_free)(void *ctx));
/* Removes a hook by handle; false if there was none. */
EM_API bool em_tensor_remove_hook(em_tensor *t, int handle);

/* ---- engine callbacks (for the DDP reducer) -------------------------------- */

/* From inside a hook running during backward: run fn(ctx) once after the
 * current backward pass has finished every node, before em_backward
 * returns (PyTorch's queue_callback). Its error becomes backward's error.
 * Outside a backward pass it is EM_ERR_STATE. */
EM_API em_status em_ag_queue_callback(em_status (*fn)(void *ctx), void *ctx);
/* True while the calling thread runs a backward pass. */
EM_API bool em_ag_in_backward(void);

/* The leaves that require grad and are reachable backwards from the roots'
 * autograd graphs: *leaves is a malloc'd array of *n new references
 * (release with em_tensor_list_release). */
EM_API em_status em_ag_reachable_leaves(int nroots, em_tensor *const *roots, em_tensor ***leaves,
                                        int *n);

/* ---- custom functions ------------------------------------------------------ */

#define EM_AG_MAX_OUTPUTS 8

typedef struct em_ag_ctx em_ag_ctx;

/* A differentiable function written by the user. forward runs with grad
 * mode off and fills out[0..*nout) with new references (at most
 * EM_AG_MAX_OUTPUTS); backward receives one gradient per output (NULL
 * where none flowed: treat as zeros) and writes one new reference per input
 * into grad_in (NULL for no gradient). */
typedef struct em_ag_function {
  const char *name; /* node name, e.g. "Conv2dBackward" */
  em_status (*forward)(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                       em_tensor **out);
  em_status (*backward)(em_ag_ctx *ctx, int nout, em_tensor *const *grad_out, int nin,
                        em_tensor **grad_in);
} em_ag_function;

/* Runs fn on the inputs (NULL inputs allowed) and, when an input requires
 * grad and grad mode is on, records a node whose backward is fn->backward.
 * user is handed to forward/backward through the ctx; user_free (may be
 * NULL) runs when the ctx goes. */
EM_API em_status em_ag_function_apply(const em_ag_function *fn, void *user,
                                      void (*user_free)(void *user), int nin,
                                      em_tensor *const *in, int *nout, em_tensor **out);
/* Saves tensors for backward (retained; checked against in-place changes). */
EM_API em_status em_ag_ctx_save(em_ag_ctx *ctx, int n, em_tensor *const *ts);
/* The i-th saved tensor (borrowed), or NULL with an error if it was
 * modified in place after saving or freed by an earlier backward. */
EM_API em_tensor *em_ag_ctx_saved(em_ag_ctx *ctx, int i);
EM_API int em_ag_ctx_num_saved(em_ag_ctx *ctx);
EM_API void *em_ag_ctx_user(em_ag_ctx *ctx);
/* Which inputs need a gradient (backward may skip the others). */
EM_API bool em_ag_ctx_needs_input_grad(em_ag_ctx *ctx, int i);
/* Outputs that never get a gradient (indices, masks). */
EM_API em_status em_ag_ctx_mark_non_differentiable(em_ag_ctx *ctx, int output_index);

/* ---- gradcheck ---------------------------------------------------------------- */

/* The function under test: builds one output from the inputs (new
 * reference) using differentiable ops. */
typedef em_tensor *(*em_ag_gradcheck_fn)(int nin, em_tensor *const *in, void *ctx);

/* Compares the Jacobian from backward with central differences (step eps)
 * for every float64 input that requires grad. Passes when every entry
 * satisfies |analytical - numerical| <= atol + rtol * |numerical|. On a
 * mismatch returns EM_ERR_INVALID with a message naming the input, the
 * output and input element, both values, and the max difference. Inputs
 * may be non-contiguous views; they are perturbed in place and restored. */
EM_API em_status em_ag_gradcheck(em_ag_gradcheck_fn fn, void *ctx, int nin,
                                 em_tensor *const *in, double eps, double atol, double rtol);

#ifdef __cplusplus
}
#endif
#endif
