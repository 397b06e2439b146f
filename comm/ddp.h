/* ember DDP — DistributedDataParallel's gradient reducer.
 *
 * Wraps a module so that each backward pass averages the gradients over
 * the ranks of a process group, overlapping communication with the rest of
 * backward:
 *
 *   - At creation every rank's parameters must have the same names, shapes
 *     and dtypes (an error names the first differing parameter and the
 *     ranks); then rank 0's parameters and buffers are broadcast.
 *   - Parameters are grouped in reverse registration order into buckets
 *     (25 MiB cap, the first 1 MiB, settable); after the first iteration
 *     the buckets are rebuilt in the order gradients actually became ready.
 *   - As autograd's post-accumulate hooks fire, a gradient is copied into
 *     its bucket (or already lives there with gradient_as_bucket_view); a
 *     full bucket launches its async allreduce at once, in bucket order,
 *     while backward goes on. A callback queued on the engine waits every
 *     bucket at the end of backward, averages and writes the gradients back,
 *     so the optimizer step sees synchronised gradients.
 *   - no_sync: backward accumulates locally without communication (gradient
 *     accumulation); the next synchronised backward reduces the sums.
 *   - find_unused_parameters: parameters the forward output does not reach
 *     are marked ready at once, so nothing waits forever; without it, a
 *     parameter that gets no gradient leaves its bucket pending and the next
 *     forward fails with an error naming the parameters that never got one.
 *   - Comm hooks: the default allreduce, fp16 / bf16 compression, or a user
 *     function that receives the bucket and returns a work handle.
 *
 *     em_ddp *ddp = em_ddp_create(model, pg, NULL);
 *     for (...) {
 *       em_optim_zero_grad(opt, true);
 *       em_tensor *y = em_ddp_forward(ddp, 1, &x);
 *       em_tensor *loss = ...;
 *       em_backward(loss, NULL, false);   // gradients are averaged on return
 *       em_optim_step(opt);
 *     }
 *     em_ddp_free(ddp);
 */
#ifndef EMBER_COMM_DDP_H
#define EMBER_COMM_DDP_H

#include "comm/process_group.h"
#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_ddp em_ddp;

/* One bucket as a comm hook sees it. buffer is a flat contiguous tensor
 * holding the bucket's gradients (params[i]'s at offsets[i]). The hook
 * starts the communication and returns its work; it sets result to the
 * tensor that will hold the averaged gradients when the work completes
 * (leave it NULL to mean buffer itself). The reducer converts result into
 * buffer if they differ (compression hooks). */
typedef struct em_ddp_bucket {
  int index;
  em_tensor *buffer;
  int nparams;
  em_tensor *const *params;
  const int64_t *offsets;
  em_tensor *result;
} em_ddp_bucket;

/* Returns a new work reference, or NULL with the error set. */
typedef em_work *(*em_ddp_comm_hook)(void *state, em_pg *pg, em_ddp_bucket *bucket);

/* Zero-initialised options are PyTorch's defaults. */
typedef struct em_ddp_options {
  int64_t bucket_cap_bytes;       /* 0: 25 MiB */
  int64_t first_bucket_cap_bytes; /* 0: 1 MiB */
  bool gradient_as_bucket_view;
  bool find_unused_parameters;
  bool static_graph;
  bool no_broadcast_buffers;      /* torch's broadcast_buffers=False */
} em_ddp_options;

/* Wraps m (retained) over pg (retained). A collective over pg. */
EM_API em_ddp *em_ddp_create(em_module *m, em_pg *pg, const em_ddp_options *o);
EM_API void em_ddp_free(em_ddp *d);
EM_API em_module *em_ddp_module(em_ddp *d); /* borrowed */

/* Runs the module (broadcasting buffers first when enabled) and prepares
 * the reducer for the backward of its output. */
EM_API em_tensor *em_ddp_forward(em_ddp *d, int nin, em_tensor *const *in);
/* For callers that run the module themselves (the Python layer):
 * call before the forward ... */
EM_API em_status em_ddp_pre_forward(em_ddp *d);
/* ... and after it with every output tensor the loss may depend on. */
EM_API em_status em_ddp_post_forward(em_ddp *d, int nout, em_tensor *const *outputs);

/* Turns gradient synchronisation off (torch's no_sync context) or back
 * on; returns the previous setting. */
EM_API bool em_ddp_set_no_sync(em_ddp *d, bool no_sync);

/* Replaces the comm hook (once, before the first backward, as torch).
 * state_free (may be NULL) runs on state when the reducer goes. */
EM_API em_status em_ddp_register_comm_hook(em_ddp *d, em_ddp_comm_hook hook, void *state,
                                           void (*state_free)(void *state));
/* The built-in hooks (state is unused: pass NULL). */
EM_API em_work *em_ddp_hook_allreduce(void *state, em_pg *pg, em_ddp_bucket *bucket);
EM_API em_work *em_ddp_hook_fp16_compress(void *state, em_pg *pg, em_ddp_bucket *bucket);
EM_API em_work *em_ddp_hook_bf16_compress(void *state, em_pg *pg, em_ddp_bucket *bucket);

/* Introspection (tests, logging). */
typedef struct em_ddp_stats {
  int nbuckets;
  int64_t iterations;              /* synchronised backward passes finished */
  int64_t buckets_launched;        /* in total */
  int64_t launched_during_backward;/* launched while some parameter of the
                                      same pass had not got its gradient */
  bool rebuilt;                    /* buckets rebuilt after iteration 1 */
} em_ddp_stats;
EM_API em_ddp_stats em_ddp_get_stats(em_ddp *d);
/* Parameter indices (registration order) of bucket b, in bucket order;
 * returns the count (<= cap). */
EM_API int em_ddp_bucket_params(em_ddp *d, int b, int *indices, int cap);

#ifdef __cplusplus
}
#endif
#endif
