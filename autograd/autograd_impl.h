/* autograd internals: nodes, per-tensor metadata, derivative formulas. */
#ifndef EMBER_AUTOGRAD_IMPL_H
#define EMBER_AUTOGRAD_IMPL_H

#include "autograd/autograd.h"
#include "core/core_impl.h"

typedef struct em_ag_node em_ag_node;

typedef struct em_ag_edge {
  em_ag_node *node; /* retained; NULL: the input needs no gradient */
  int input_nr;     /* which output of node this edge feeds */
} em_ag_edge;

/* Shape, dtype and device of a tensor at record time. */
typedef struct em_ag_tmeta {
  int8_t ndim;
  int8_t dtype;
  em_device device;
  int64_t shape[EM_MAX_DIMS];
} em_ag_tmeta;

typedef struct em_ag_saved {
  em_tensor *t;      /* a detached alias, or NULL */
  uint64_t version;  /* storage version when saved */
} em_ag_saved;

typedef struct em_ag_hook {
  struct em_ag_hook *next;
  int handle;
  int output_nr;     /* for hooks kept on a node: which output */
  em_tensor_hook_fn fn;
  em_post_accumulate_hook_fn post_fn;
  void *ctx;
  void (*ctx_free)(void *ctx);
} em_ag_hook;

typedef enum em_ag_node_type {
  EM_AG_NODE_OP,         /* recorded core op: formulas[op] */
  EM_AG_NODE_ACCUMULATE, /* AccumulateGrad of a leaf */
  EM_AG_NODE_CUSTOM,     /* em_ag_function */
  EM_AG_NODE_IDENTITY,   /* passes grad 0 through (rebase onto a leaf) */
  EM_AG_NODE_COPY_SLICES /* in-place write through a view */
} em_ag_node_type;

struct em_ag_meta {
  em_tensor *grad;
  em_ag_node *grad_fn;    /* retained */
  int output_nr;
  em_ag_node *accumulator; /* weak: the AccumulateGrad node of a leaf */
  em_ag_hook *hooks;       /* leaf tensor hooks and post-accumulate hooks */
  bool retains_grad;
  em_ag_node *retain_node; /* where this meta is registered for retain_grad */
};

struct em_ag_node {
  atomic_int refcount;
  em_ag_node_type type;
  em_op op;
  uint64_t seq;
  int nin, nout;
  em_ag_edge *next;      /* [nin] */
  em_ag_tmeta *in_meta;  /* [nin] */
  em_ag_tmeta *out_meta; /* [nout] */
  em_ag_saved *saved;    /* [nsaved] */
  int nsaved;
  bool released;         /* saved tensors freed by a backward without retain_graph */
  em_op_attrs attrs;
  em_ag_hook *pre_hooks;         /* tensor hooks of non-leaf outputs */
  struct em_ag_meta **retain;    /* [nout] weak: metas that retain grad */
  bool *out_differentiable;      /* [nout] */
  /* AccumulateGrad */
  em_tensor *variable;
  /* custom functions */
  const em_ag_function *fn;
  struct em_ag_ctx *ctx;
  /* copy-slices: the view's geometry relative to its base */
  /* engine scratch (valid during one backward, under the engine lock) */
  int deps;
  bool needed;
  bool queued;
  em_tensor **buffer;    /* [nout] incoming gradients */
  char name[48];
};

struct em_ag_ctx {
  em_ag_saved *saved;
  int nsaved;
  void *user;
  void (*user_free)(void *user);
  bool *needs_grad; /* [nin] */
  int nin;
  bool non_diff[EM_AG_MAX_OUTPUTS];
  bool released;
};

/* A derivative formula: given the gradients of the node's outputs (NULL
 * where none flowed), write one new reference per input into grad_in
 * (leave NULL for none). Runs with grad mode off. */
typedef em_status (*em_ag_backward_fn)(em_ag_node *n, em_tensor *const *grad_out,
                                       em_tensor **grad_in);

typedef struct em_ag_formula {
  em_ag_backward_fn backward;
  uint32_t save_in;  /* bit i: save input i */
  uint32_t save_out; /* bit i: save output i */
} em_ag_formula;

/* The formula for op, or NULL when op is not differentiable. */
const em_ag_formula *em__ag_formula(em_op op);

/* Saved tensor access for formulas: input i / output i as saved, or NULL
 * with an error when freed or modified in place. */
em_tensor *em__ag_saved_in(em_ag_node *n, int i);
em_tensor *em__ag_saved_out(em_ag_node *n, int i);
/* Reduces g to shape (ndim, shape) by summing broadcast dims. */
em_tensor *em__ag_sum_to(em_tensor *g, int ndim, const int64_t *shape);
/* g reduced to input i's recorded shape and converted to its dtype. */
em_tensor *em__ag_to_input(em_ag_node *n, int i, em_tensor *g);

void em__ag_install(void);
void em__ag_node_release(em_ag_node *n);

#endif
