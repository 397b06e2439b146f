/* The autograd engine: per-tensor metadata, recording nodes as ops run,
 * in-place rebasing, and the backward pass.
 *
 * Backward runs on the calling thread: the graph reachable from the roots
 * is discovered, each node's dependency count is the number of edges into
 * it, and a node runs once that count reaches zero — i.e. once every
 * gradient flowing into it is known. Ready nodes run newest first (by
 * sequence number) and AccumulateGrad nodes before anything else, so a
 * leaf's post-accumulate hooks fire as soon as its gradient is final (the
 * DDP reducer launches bucket allreduces from them while backward goes
 * on). One backward runs at a time (engine lock); hooks must not start
 * another. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/autograd_impl.h"

static atomic_ullong next_seq = 1;
static pthread_mutex_t engine_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guards the weak pointers between metas and nodes (accumulator,
 * retain_node / retain slots). Never held while calling out. */
static pthread_mutex_t meta_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int next_hook_handle = 1;

/* ---- metadata ------------------------------------------------------------------ */

static struct em_ag_meta *get_meta(em_tensor *t) {
  struct em_ag_meta *m = __atomic_load_n(&t->ag, __ATOMIC_ACQUIRE);
  if (m) return m;
  struct em_ag_meta *fresh = calloc(1, sizeof *fresh);
  if (!fresh) return EM_FAIL(EM_ERR_NOMEM, "autograd: out of memory");
  struct em_ag_meta *expected = NULL;
  if (__atomic_compare_exchange_n(&t->ag, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    return fresh;
  free(fresh);
  return expected;
}

static void hooks_free(em_ag_hook *h) {
  while (h) {
    em_ag_hook *next = h->next;
    if (h->ctx_free) h->ctx_free(h->ctx);
    free(h);
    h = next;
  }
}

static void unregister_retain(struct em_ag_meta *m) {
  pthread_mutex_lock(&meta_mu);
  em_ag_node *n = m->retain_node;
  if (n && n->retain && m->output_nr < n->nout && n->retain[m->output_nr] == m)
    n->retain[m->output_nr] = NULL;
  m->retain_node = NULL;
  pthread_mutex_unlock(&meta_mu);
}

static void register_retain(struct em_ag_meta *m) {
  pthread_mutex_lock(&meta_mu);
  em_ag_node *n = m->grad_fn;
  if (n && n->retain && m->output_nr < n->nout) {
    n->retain[m->output_nr] = m;
    m->retain_node = n;
  }
  pthread_mutex_unlock(&meta_mu);
}

static void free_meta(struct em_ag_meta *m) {
  if (!m) return;
  if (m->retain_node) unregister_retain(m);
  em_tensor_release(m->grad);
  hooks_free(m->hooks);
  em__ag_node_release(m->grad_fn);
  free(m);
}

/* ---- nodes ------------------------------------------------------------------------ */

/* One zeroed allocation holds the node and all its arrays (nodes are made
 * for every recorded op: their cost is on every training step's path). */
static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static em_ag_node *node_alloc(em_ag_node_type type, int nin, int nout, int nsaved) {
  size_t sz = align8(sizeof(em_ag_node));
  size_t o_next = sz;
  sz += align8(sizeof(em_ag_edge) * (size_t)nin);
  size_t o_in = sz;
  sz += align8(sizeof(em_ag_tmeta) * (size_t)nin);
  size_t o_out = sz;
  sz += align8(sizeof(em_ag_tmeta) * (size_t)nout);
  size_t o_ret = sz;
  sz += align8(sizeof(struct em_ag_meta *) * (size_t)nout);
  size_t o_diff = sz;
  sz += align8(sizeof(bool) * (size_t)nout);
  size_t o_saved = sz;
  sz += align8(sizeof(em_ag_saved) * (size_t)nsaved);
  char *block = calloc(1, sz);
  if (!block) return EM_FAIL(EM_ERR_NOMEM, "autograd: out of memory");
  em_ag_node *n = (em_ag_node *)block;
  atomic_init(&n->refcount, 1);
  n->type = type;
  n->seq = atomic_fetch_add(&next_seq, 1);
  n->nin = nin;
  n->nout = nout;
  n->nsaved = nsaved;
  n->next = (em_ag_edge *)(block + o_next);
  n->in_meta = (em_ag_tmeta *)(block + o_in);
  n->out_meta = (em_ag_tmeta *)(block + o_out);
  n->retain = (struct em_ag_meta **)(block + o_ret);
  n->out_differentiable = (bool *)(block + o_diff);
  n->saved = (em_ag_saved *)(block + o_saved);
  return n;
}

static void release_saved(em_ag_saved *s, int n) {
  for (int i = 0; i < n; i++) {
    em_tensor_release(s[i].t);
    s[i].t = NULL;
  }
}

static void ctx_free(struct em_ag_ctx *c) {
  if (!c) return;
  release_saved(c->saved, c->nsaved);
  free(c->saved);
  free(c->needs_grad);
  if (c->user_free) c->user_free(c->user);
  free(c);
}

/* Destroys nodes iteratively: a long chain (an unrolled loop) must not
 * recurse once per node. */
void em__ag_node_release(em_ag_node *n) {
  em_ag_node *stack_buf[64], **stack = stack_buf;
  size_t top = 0, cap = 64;
  if (!n) return;
  if (atomic_fetch_sub_explicit(&n->refcount, 1, memory_order_acq_rel) != 1) return;
  stack[top++] = n;
  while (top) {
    n = stack[--top];
    for (int i = 0; i < n->nin; i++) {
      em_ag_node *c = n->next[i].node;
      if (!c || atomic_fetch_sub_explicit(&c->refcount, 1, memory_order_acq_rel) != 1) continue;
      if (top == cap) {
        size_t ncap = cap * 2;
        em_ag_node **ns = malloc(ncap * sizeof *ns);
        if (!ns) { /* out of memory while freeing: leak the rest rather than crash */
          continue;
        }
        memcpy(ns, stack, top * sizeof *ns);
        if (stack != stack_buf) free(stack);
        stack = ns;
        cap = ncap;
      }
      stack[top++] = c;
    }
    if (n->type == EM_AG_NODE_ACCUMULATE && n->variable) {
      pthread_mutex_lock(&meta_mu);
      struct em_ag_meta *m = n->variable->ag;
      if (m && m->accumulator == n) m->accumulator = NULL;
      pthread_mutex_unlock(&meta_mu);
      em_tensor_release(n->variable);
    }
    pthread_mutex_lock(&meta_mu);
    for (int i = 0; i < n->nout; i++)
      if (n->retain[i]) n->retain[i]->retain_node = NULL;
    pthread_mutex_unlock(&meta_mu);
    release_saved(n->saved, n->nsaved);
    ctx_free(n->ctx);
    hooks_free(n->pre_hooks);
    free(n->buffer);
    free(n); /* the arrays live in the same block */
  }
  if (stack != stack_buf) free(stack);
}

static void set_name(em_ag_node *n, const char *base) {
  /* "add" -> "AddBackward0", "log_softmax" -> "LogSoftmaxBackward0" */
  size_t j = 0;
  bool up = true;
  for (size_t i = 0; base[i] && j < sizeof n->name - 10; i++) {
    char c = base[i];
    if (c == '_') {
      up = true;
      continue;
    }
    n->name[j++] = up && c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
    up = false;
  }
  snprintf(n->name + j, sizeof n->name - j, "Backward0");
}

static void tmeta_of(em_ag_tmeta *m, const em_tensor *t) {
  if (!t) return;
  m->ndim = t->ndim;
  m->dtype = t->dtype;
  m->device = t->device;
  memcpy(m->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
}

static em_ag_node *accumulator_of(em_tensor *t) {
  struct em_ag_meta *m = get_meta(t);
  if (!m) return NULL;
  pthread_mutex_lock(&meta_mu);
  em_ag_node *acc = m->accumulator;
  if (acc) atomic_fetch_add(&acc->refcount, 1);
  pthread_mutex_unlock(&meta_mu);
  if (acc) return acc;
  acc = node_alloc(EM_AG_NODE_ACCUMULATE, 0, 1, 0); /* its one reference is the caller's */
  if (!acc) return NULL;
  acc->seq = UINT64_MAX; /* runs as soon as it is ready */
  snprintf(acc->name, sizeof acc->name, "AccumulateGrad");
  acc->variable = em_tensor_retain(t);
  tmeta_of(&acc->out_meta[0], t);
  acc->out_differentiable[0] = true;
  pthread_mutex_lock(&meta_mu);
  em_ag_node *other = m->accumulator;
  if (other) {
    atomic_fetch_add(&other->refcount, 1);
  } else {
    m->accumulator = acc; /* weak */
  }
  pthread_mutex_unlock(&meta_mu);
  if (other) { /* another thread made one first */
    em__ag_node_release(acc);
    return other;
  }
  return acc;
}

/* The edge a gradient for t flows along (retained), or a NULL edge. */
static em_status edge_of(em_tensor *t, em_ag_edge *e) {
  e->node = NULL;
  e->input_nr = 0;
  if (!t || !t->requires_grad) return EM_OK;
  struct em_ag_meta *m = t->ag;
  if (m && m->grad_fn) {
    atomic_fetch_add(&m->grad_fn->refcount, 1);
    e->node = m->grad_fn;
    e->input_nr = m->output_nr;
    return EM_OK;
  }
  e->node = accumulator_of(t);
  return e->node ? EM_OK : em_last_status();
}

/* Makes node output k the history of t. */
static em_status set_history(em_tensor *t, em_ag_node *n, int k) {
  struct em_ag_meta *m = get_meta(t);
  if (!m) return em_last_status();
  if (m->retain_node) unregister_retain(m);
  atomic_fetch_add(&n->refcount, 1);
  em_ag_node *old = m->grad_fn;
  m->grad_fn = n;
  m->output_nr = k;
  t->requires_grad = true;
  if (m->retains_grad) register_retain(m);
  em__ag_node_release(old);
  return EM_OK;
}

static em_status save(em_ag_saved *s, em_tensor *t) {
  if (!t) return EM_OK;
  s->t = em_tensor_detach(t);
  if (!s->t) return em_last_status();
  s->version = em_tensor_version(t);
  return EM_OK;
}

static em_tensor *saved_get(em_ag_node *n, em_ag_saved *s, const char *what, int i) {
  if (n->released)
    return EM_FAIL(EM_ERR_STATE,
                   "%s: trying to backward through the graph a second time (or directly access "
                   "saved tensors after they have already been freed); saved intermediate values "
                   "of the graph are freed when you call backward() or autograd.grad(); specify "
                   "retain_graph=True if you need to backward through the graph a second time",
                   n->name);
  if (!s->t) return EM_FAIL(EM_ERR_INTERNAL, "%s: %s %d was not saved", n->name, what, i);
  uint64_t v = em_tensor_version(s->t);
  if (v != s->version)
    return EM_FAIL(EM_ERR_STATE,
                   "one of the variables needed for gradient computation has been modified by an "
                   "inplace operation: [%s %s], which is %s %d of %s, is at version %llu; "
                   "expected version %llu instead",
                   em_dtype_name((em_dtype)s->t->dtype), em__tshape(s->t), what, i, n->name,
                   (unsigned long long)v, (unsigned long long)s->version);
  return s->t;
}

em_tensor *em__ag_saved_in(em_ag_node *n, int i) {
  return saved_get(n, &n->saved[i], "input", i);
}
em_tensor *em__ag_saved_out(em_ag_node *n, int i) {
  return saved_get(n, &n->saved[n->nin + i], "output", i);
}

/* ---- recording ---------------------------------------------------------------------- */

static em_status link_inputs(em_ag_node *n, int nin, em_tensor *const *in) {
  for (int i = 0; i < nin; i++) {
    tmeta_of(&n->in_meta[i], in[i]);
    EM_CHECK(edge_of(in[i], &n->next[i]));
  }
  return EM_OK;
}

static em_status link_outputs(em_ag_node *n, int nout, em_tensor *const *out,
                              const bool *non_diff) {
  for (int j = 0; j < nout; j++) {
    if (!out[j]) continue;
    tmeta_of(&n->out_meta[j], out[j]);
    bool diff = em_dtype_is_float((em_dtype)out[j]->dtype) && !(non_diff && non_diff[j]);
    n->out_differentiable[j] = diff;
    if (diff) EM_CHECK(set_history(out[j], n, j));
  }
  return EM_OK;
}

static em_status record(em_op op, int nin, em_tensor *const *in, int nout, em_tensor *const *out,
                        const em_op_attrs *a) {
  const em_ag_formula *f = em__ag_formula(op);
  if (!f) return EM_OK; /* not differentiable: outputs stay plain tensors */
  em_ag_node *n = node_alloc(EM_AG_NODE_OP, nin, nout, nin + nout);
  if (!n) return em_last_status();
  n->op = op;
  if (a) n->attrs = *a;
  set_name(n, em__op_name(op));
  em_status st = link_inputs(n, nin, in);
  for (int i = 0; !st && i < nin; i++)
    if (f->save_in & (1u << i)) st = save(&n->saved[i], in[i]);
  for (int j = 0; !st && j < nout; j++)
    if (f->save_out & (1u << j)) st = save(&n->saved[nin + j], out[j]);
  if (!st) st = link_outputs(n, nout, out, NULL);
  em__ag_node_release(n); /* outputs hold it now (or it dies on error) */
  return st;
}

/* ---- in-place ---------------------------------------------------------------------------- */

static bool is_leaf(const em_tensor *t) { return !t->requires_grad || !t->ag || !t->ag->grad_fn; }

static em_status check_inplace(const char *op, em_tensor *self) {
  if (!em_is_grad_enabled()) return EM_OK;
  if (self->requires_grad && is_leaf(self))
    return em__set_error(EM_ERR_STATE,
                         "%s: a leaf Variable that requires grad is being used in an in-place "
                         "operation",
                         op);
  if (self->base && self->base->requires_grad && is_leaf(self->base))
    return em__set_error(EM_ERR_STATE,
                         "%s: a view of a leaf Variable that requires grad is being used in an "
                         "in-place operation",
                         op);
  return EM_OK;
}

/* An identity node from (edge) so a non-leaf can take a leaf's history. */
static em_ag_node *identity_node(em_tensor *from) {
  em_ag_node *n = node_alloc(EM_AG_NODE_IDENTITY, 1, 1, 0);
  if (!n) return NULL;
  snprintf(n->name, sizeof n->name, "CloneBackward0");
  tmeta_of(&n->in_meta[0], from);
  tmeta_of(&n->out_meta[0], from);
  n->out_differentiable[0] = true;
  if (edge_of(from, &n->next[0])) {
    em__ag_node_release(n);
    return NULL;
  }
  return n;
}

static em_status rebase_plain(em_tensor *self, em_tensor *result) {
  if (!result->requires_grad) return EM_OK;
  struct em_ag_meta *rm = result->ag;
  if (rm && rm->grad_fn) return set_history(self, rm->grad_fn, rm->output_nr);
  em_ag_node *id = identity_node(result);
  if (!id) return em_last_status();
  em_status st = set_history(self, id, 0);
  em__ag_node_release(id);
  return st;
}

/* self is a view of base; base <- CopySlices(base's old history, result),
 * self <- as_strided view of base's new history. */
static em_status rebase_view(em_tensor *self, em_tensor *result) {
  em_tensor *base = self->base;
  if (!em_tensor_is_contiguous(base))
    return em__set_error(EM_ERR_NOTIMPL,
                         "in-place operation on a view of a non-contiguous tensor that requires "
                         "grad is not supported; clone() the base first");
  em_ag_node *cs = node_alloc(EM_AG_NODE_COPY_SLICES, 2, 1, 0);
  if (!cs) return em_last_status();
  snprintf(cs->name, sizeof cs->name, "CopySlices");
  cs->attrs.nd = self->ndim;
  memcpy(cs->attrs.d, self->shape, sizeof(int64_t) * (size_t)self->ndim);
  memcpy(cs->attrs.d2, self->strides, sizeof(int64_t) * (size_t)self->ndim);
  cs->attrs.i[0] = self->offset - base->offset;
  em_tensor *ins[2] = {base, result};
  em_status st = link_inputs(cs, 2, ins);
  tmeta_of(&cs->out_meta[0], base);
  cs->out_differentiable[0] = true;
  if (!st) st = set_history(base, cs, 0);
  em__ag_node_release(cs);
  if (st) return st;
  /* self's new history: as_strided of base's */
  em_ag_node *v = node_alloc(EM_AG_NODE_OP, 1, 1, 1);
  if (!v) return em_last_status();
  v->op = EM_OP_AS_STRIDED;
  set_name(v, "as_strided");
  v->attrs.nd = self->ndim;
  memcpy(v->attrs.d, self->shape, sizeof(int64_t) * (size_t)self->ndim);
  memcpy(v->attrs.d2, self->strides, sizeof(int64_t) * (size_t)self->ndim);
  v->attrs.i[0] = self->offset;
  v->attrs.i[1] = base->offset;
  v->attrs.i[2] = 1; /* checked above */
  st = link_inputs(v, 1, &base);
  tmeta_of(&v->out_meta[0], self);
  v->out_differentiable[0] = true;
  if (!st) st = set_history(self, v, 0);
  em__ag_node_release(v);
  return st;
}

static em_status rebase(em_tensor *self, em_tensor *result) {
  if (self->base && (self->base->requires_grad || result->requires_grad))
    return rebase_view(self, result);
  return rebase_plain(self, result);
}

static const em__ag_vtable vtable = {record, rebase, check_inplace, free_meta};

void em__ag_install(void) {
  const em__ag_vtable *expected = NULL;
  atomic_compare_exchange_strong(&em__ag, &expected, &vtable);
}

/* ---- public per-tensor API ------------------------------------------------------------------ */

em_status em_tensor_set_requires_grad(em_tensor *t, bool requires_grad) {
  if (!t) return em__set_error(EM_ERR_INVALID, "requires_grad_: NULL tensor");
  if (requires_grad && !em_dtype_is_float((em_dtype)t->dtype))
    return em__set_error(EM_ERR_DTYPE,
                         "requires_grad_: only Tensors of floating point dtype can require "
                         "gradients (got %s)",
                         em_dtype_name((em_dtype)t->dtype));
  if (!requires_grad && !is_leaf(t))
    return em__set_error(EM_ERR_STATE,
                         "requires_grad_: you can only change requires_grad flags of leaf "
                         "variables; use detach() to get a tensor that does not require grad");
  em__ag_install();
  t->requires_grad = requires_grad;
  return EM_OK;
}

bool em_tensor_requires_grad(const em_tensor *t) { return t && t->requires_grad; }
bool em_tensor_is_leaf(const em_tensor *t) { return is_leaf(t); }

em_tensor *em_tensor_grad(em_tensor *t) {
  struct em_ag_meta *m = t->ag;
  return m && m->grad ? em_tensor_retain(m->grad) : NULL;
}

em_status em_tensor_set_grad(em_tensor *t, em_tensor *g) {
  if (g) {
    bool same = g->ndim == t->ndim && g->dtype == t->dtype && em_device_eq(g->device, t->device);
    for (int i = 0; same && i < t->ndim; i++) same = g->shape[i] == t->shape[i];
    if (!same)
      return em__set_error(EM_ERR_SHAPE,
                           "grad: assigned grad has data of a different size or type (%s %s, "
                           "expected %s %s)",
                           em_dtype_name((em_dtype)g->dtype), em__tshape(g),
                           em_dtype_name((em_dtype)t->dtype), em__tshape(t));
  }
  em__ag_install();
  struct em_ag_meta *m = get_meta(t);
  if (!m) return em_last_status();
  em_tensor *old = m->grad;
  m->grad = g ? em_tensor_retain(g) : NULL;
  em_tensor_release(old);
  return EM_OK;
}

em_status em_tensor_retain_grad(em_tensor *t) {
  if (!t->requires_grad)
    return em__set_error(EM_ERR_STATE, "retain_grad: can't retain_grad on Tensor that has "
                         "requires_grad=False");
  if (is_leaf(t)) return EM_OK; /* leaves keep their grad anyway */
  struct em_ag_meta *m = get_meta(t);
  if (!m) return em_last_status();
  if (!m->retains_grad) {
    m->retains_grad = true;
    register_retain(m);
  }
  return EM_OK;
}

const char *em_tensor_grad_fn_name(const em_tensor *t) {
  return t->ag && t->ag->grad_fn ? t->ag->grad_fn->name : NULL;
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static int add_hook(em_tensor *t, em_tensor_hook_fn fn, em_post_accumulate_hook_fn post,
                    void *ctx, void (*cfree)(void *)) {
  if (!t->requires_grad) {
    em__set_error(EM_ERR_STATE, "register_hook: cannot register a hook on a tensor that doesn't "
                  "require gradient");
    return -1;
  }
  if (post && !is_leaf(t)) {
    em__set_error(EM_ERR_STATE, "register_post_accumulate_grad_hook: post accumulate grad hooks "
                  "cannot be registered on non-leaf tensors");
    return -1;
  }
  struct em_ag_meta *m = get_meta(t);
  em_ag_hook *h = calloc(1, sizeof *h);
  if (!m || !h) {
    free(h);
    em__set_error(EM_ERR_NOMEM, "register_hook: out of memory");
    return -1;
  }
  h->handle = atomic_fetch_add(&next_hook_handle, 1);
  h->fn = fn;
  h->post_fn = post;
  h->ctx = ctx;
  h->ctx_free = cfree;
  pthread_mutex_lock(&engine_mu);
  em_ag_hook **list;
  if (!post && !is_leaf(t)) {
    h->output_nr = m->output_nr;
    list = &m->grad_fn->pre_hooks;
  } else {
    list = &m->hooks;
  }
  while (*list) list = &(*list)->next; /* run in registration order */
  *list = h;
  pthread_mutex_unlock(&engine_mu);
  return h->handle;
}

int em_tensor_register_hook(em_tensor *t, em_tensor_hook_fn fn, void *ctx,
                            void (*ctx_free)(void *ctx)) {
  return add_hook(t, fn, NULL, ctx, ctx_free);
}

int em_tensor_register_post_accumulate_grad_hook(em_tensor *t, em_post_accumulate_hook_fn fn,
                                                 void *ctx, void (*ctx_free)(void *ctx)) {
  return add_hook(t, NULL, fn, ctx, ctx_free);
}

static bool remove_from(em_ag_hook **list, int handle) {
  for (; *list; list = &(*list)->next) {
    if ((*list)->handle == handle) {
      em_ag_hook *h = *list;
      *list = h->next;
      h->next = NULL;
      hooks_free(h);
      return true;
    }
  }
  return false;
}

bool em_tensor_remove_hook(em_tensor *t, int handle) {
  struct em_ag_meta *m = t->ag;
  if (!m) return false;
  pthread_mutex_lock(&engine_mu);
  bool found = remove_from(&m->hooks, handle) || (m->grad_fn && remove_from(&m->grad_fn->pre_hooks, handle));
  pthread_mutex_unlock(&engine_mu);
  return found;
}

/* ---- the backward pass ------------------------------------------------------------------------ */

typedef struct queued_cb {
  em_status (*fn)(void *ctx);
  void *ctx;
} queued_cb;

static __thread bool in_backward;
static __thread queued_cb *cbs;
static __thread int ncbs, cap_cbs;

bool em_ag_in_backward(void) { return in_backward; }

em_status em_ag_queue_callback(em_status (*fn)(void *ctx), void *ctx) {
  if (!in_backward)
    return em__set_error(EM_ERR_STATE, "queue_callback: only allowed during a backward pass");
  if (ncbs == cap_cbs) {
    int nc = cap_cbs ? cap_cbs * 2 : 8;
    queued_cb *n = realloc(cbs, sizeof *n * (size_t)nc);
    if (!n) return em__set_error(EM_ERR_NOMEM, "queue_callback: out of memory");
    cbs = n;
    cap_cbs = nc;
  }
  cbs[ncbs++] = (queued_cb){fn, ctx};
  return EM_OK;
}

/* Runs (and clears) the callbacks queued during a pass; every one runs
 * even after an error (they release resources), the first error wins. */
static em_status run_callbacks(em_status st) {
  for (int i = 0; i < ncbs; i++) { /* a callback may queue more */
    em_status s = cbs[i].fn(cbs[i].ctx);
    if (!st) st = s;
  }
  ncbs = 0;
  free(cbs);
  cbs = NULL;
  cap_cbs = 0;
  return st;
}

typedef struct capture {
  em_ag_node *node;
  int input_nr;
  em_tensor *grad; /* what flowed in */
} capture;

typedef struct graph {
  em_ag_node **nodes; /* every reachable node */
  size_t n, cap;
  em_ag_node **heap; /* ready nodes, max-heap by seq */
  size_t hn, hcap;
} graph;

static em_status vec_push(em_ag_node ***v, size_t *n, size_t *cap, em_ag_node *x) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    em_ag_node **nv = realloc(*v, nc * sizeof *nv);
    if (!nv) return em__set_error(EM_ERR_NOMEM, "backward: out of memory");
    *v = nv;
    *cap = nc;
  }
  (*v)[(*n)++] = x;
  return EM_OK;
}

static em_status heap_push(graph *g, em_ag_node *x) {
  EM_CHECK(vec_push(&g->heap, &g->hn, &g->hcap, x));
  size_t i = g->hn - 1;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (g->heap[p]->seq >= g->heap[i]->seq) break;
    em_ag_node *t = g->heap[p];
    g->heap[p] = g->heap[i];
    g->heap[i] = t;
    i = p;
  }
  return EM_OK;
}

static em_ag_node *heap_pop(graph *g) {
  em_ag_node *top = g->heap[0];
  g->heap[0] = g->heap[--g->hn];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < g->hn && g->heap[l]->seq > g->heap[m]->seq) m = l;
    if (r < g->hn && g->heap[r]->seq > g->heap[m]->seq) m = r;
    if (m == i) break;
    em_ag_node *t = g->heap[m];
    g->heap[m] = g->heap[i];
    g->heap[i] = t;
    i = m;
  }
  return top;
}

/* Collects every node reachable from the roots and counts edges into each. */
static em_status discover(graph *g, int nroots, const em_ag_edge *roots) {
  em_ag_node **stack = NULL;
  size_t sn = 0, scap = 0;
  em_status st = EM_OK;
  for (int r = 0; r < nroots && !st; r++) {
    em_ag_node *n = roots[r].node;
    if (!n || n->queued) continue;
    n->queued = true; /* "seen" during discovery */
    st = vec_push(&g->nodes, &g->n, &g->cap, n);
    if (!st) st = vec_push(&stack, &sn, &scap, n);
  }
  while (!st && sn) {
    em_ag_node *n = stack[--sn];
    for (int i = 0; i < n->nin && !st; i++) {
      em_ag_node *c = n->next[i].node;
      if (!c) continue;
      c->deps++;
      if (!c->queued) {
        c->queued = true;
        st = vec_push(&g->nodes, &g->n, &g->cap, c);
        if (!st) st = vec_push(&stack, &sn, &scap, c);
      }
    }
  }
  free(stack);
  for (size_t i = 0; i < g->n; i++) g->nodes[i]->queued = false;
  return st;
}

/* capture mode: a node runs only if a capture target is reachable from it.
 * nodes[] is in discovery (pre-)order, so iterate to a fixed point. */
static void mark_needed(graph *g, int ncap, const capture *caps) {
  for (int c = 0; c < ncap; c++)
    if (caps[c].node) caps[c].node->needed = true;
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t k = g->n; k-- > 0;) {
      em_ag_node *n = g->nodes[k];
      if (n->needed) continue;
      for (int i = 0; i < n->nin; i++)
        if (n->next[i].node && n->next[i].node->needed) {
          n->needed = true;
          changed = true;
          break;
        }
    }
  }
}

static em_status add_into(em_tensor **slot, em_tensor *g) {
  if (!*slot) {
    *slot = em_tensor_retain(g);
    return EM_OK;
  }
  em_tensor *s = em_tensor_add(*slot, g);
  if (!s) return em_last_status();
  em_tensor_release(*slot);
  *slot = s;
  return EM_OK;
}

/* Runs a chain of tensor hooks on *grad (replacing it as they ask). */
static em_status run_hooks(em_ag_hook *h, int output_nr, bool match_output, em_tensor **grad) {
  for (; h; h = h->next) {
    if (!h->fn || (match_output && h->output_nr != output_nr) || !*grad) continue;
    em_tensor *rep = NULL;
    em_status st = h->fn(*grad, &rep, h->ctx);
    if (st) {
      em_tensor_release(rep);
      return st;
    }
    if (rep) {
      bool same = rep->ndim == (*grad)->ndim;
      for (int i = 0; same && i < rep->ndim; i++) same = rep->shape[i] == (*grad)->shape[i];
      if (!same) {
        em_status e = em__set_error(EM_ERR_SHAPE, "hook returned a gradient of shape %s, expected %s",
                                    em__tshape(rep), em__tshape(*grad));
        em_tensor_release(rep);
        return e;
      }
      em_tensor_release(*grad);
      *grad = rep;
    }
  }
  return EM_OK;
}

/* g is a contiguous view, of v's dtype, covering all of its base's
 * storage, and nothing but g holds the base or the storage. */
static bool sole_view(const em_tensor *g, const em_tensor *v) {
  const em_tensor *b = g->base;
  if (!b || b->base || b->storage != g->storage || g->dtype != v->dtype || g->offset != 0) return false;
  if (atomic_load(&g->refcount) != 1 || atomic_load(&b->refcount) != 1) return false;
  if (atomic_load(&g->storage->refcount) != 2) return false; /* held by g and b only */
  if ((size_t)g->numel * em_dtype_size((em_dtype)g->dtype) != g->storage->nbytes) return false;
  return g->storage->device.type == EM_CPU && em_tensor_is_contiguous(g);
}

static em_status accumulate(em_ag_node *n, em_tensor *g) {
  em_tensor *v = n->variable;
  struct em_ag_meta *m = get_meta(v);
  if (!m) return em_last_status();
  EM_CHECK(run_hooks(m->hooks, 0, false, &n->buffer[0]));
  g = n->buffer[0];
  if (!g) return EM_OK;
  if (!m->grad) {
    /* keep the incoming tensor when nothing else can see it, else copy so
     * later in-place accumulation is safe */
    bool steal = atomic_load(&g->refcount) == 1 && !g->base && em_tensor_is_contiguous(g) &&
                 g->dtype == v->dtype;
    if (steal) {
      m->grad = em_tensor_retain(g);
    } else if (sole_view(g, v)) {
      /* a contiguous view of a whole tensor nobody else holds (a Linear
       * weight's gradient: the transpose of a column-major product): its
       * storage becomes the gradient, without the copy */
      m->grad = em__tensor_new(g->storage, (em_dtype)g->dtype, g->ndim, g->shape, NULL, 0);
      if (!m->grad) return em_last_status();
    } else {
      em_tensor *c = em_tensor_empty_on(v->ndim, v->shape, (em_dtype)v->dtype, v->device);
      if (!c) return em_last_status();
      em_status st = em_tensor_copy_(c, g);
      if (st) {
        em_tensor_release(c);
        return st;
      }
      m->grad = c;
    }
  } else {
    EM_CHECK(em_tensor_add_(m->grad, g));
  }
  for (em_ag_hook *h = m->hooks; h; h = h->next)
    if (h->post_fn) EM_CHECK(h->post_fn(v, h->ctx));
  return EM_OK;
}

/* Checks a computed input gradient against the input's recorded shape and
 * converts its dtype and device when needed. */
static em_status validate_grad(em_ag_node *n, int i, em_tensor **g) {
  const em_ag_tmeta *m = &n->in_meta[i];
  bool same = (*g)->ndim == m->ndim;
  for (int d = 0; same && d < m->ndim; d++) same = (*g)->shape[d] == m->shape[d];
  if (!same) {
    char b[EM_SHAPE_STR_MAX];
    return em__set_error(EM_ERR_INTERNAL,
                         "Function %s returned an invalid gradient at index %d - got %s but "
                         "expected shape compatible with %s",
                         n->name, i, em__tshape(*g), em__shape_str(m->ndim, m->shape, b, sizeof b));
  }
  if ((*g)->dtype != m->dtype && em_dtype_is_float((em_dtype)m->dtype)) {
    em_tensor *c = em_tensor_to_dtype(*g, (em_dtype)m->dtype);
    if (!c) return em_last_status();
    em_tensor_release(*g);
    *g = c;
  }
  if (!em_device_eq((*g)->device, m->device)) {
    em_tensor *c = em_tensor_to_device(*g, m->device);
    if (!c) return em_last_status();
    em_tensor_release(*g);
    *g = c;
  }
  return EM_OK;
}

static em_status run_node(em_ag_node *n, em_tensor **grad_in) {
  switch (n->type) {
    case EM_AG_NODE_OP: {
      const em_ag_formula *f = em__ag_formula(n->op);
      if (!f) return em__set_error(EM_ERR_INTERNAL, "%s: no derivative formula", n->name);
      if (n->released)
        return em__set_error(EM_ERR_STATE,
                             "%s: trying to backward through the graph a second time (or directly "
                             "access saved tensors after they have already been freed); specify "
                             "retain_graph=True if you need to backward through the graph a "
                             "second time",
                             n->name);
      return f->backward(n, n->buffer, grad_in);
    }
    case EM_AG_NODE_CUSTOM: {
      if (n->ctx->released)
        return em__set_error(EM_ERR_STATE,
                             "%s: trying to backward through the graph a second time; specify "
                             "retain_graph=True",
                             n->name);
      em_status st = n->fn->backward(n->ctx, n->nout, n->buffer, n->nin, grad_in);
      if (st && !em_last_error()[0]) em__set_error(st, "%s: backward failed", n->name);
      return st;
    }
    case EM_AG_NODE_IDENTITY:
      grad_in[0] = n->buffer[0] ? em_tensor_retain(n->buffer[0]) : NULL;
      return EM_OK;
    case EM_AG_NODE_COPY_SLICES: {
      em_tensor *g = n->buffer[0];
      if (!g) return EM_OK;
      em_tensor *gc = em_tensor_contiguous(g);
      if (!gc) return em_last_status();
      em_status st = EM_OK;
      em_tensor *region = NULL, *base_g = NULL, *zero_region = NULL;
      region = em_tensor_as_strided(gc, n->attrs.nd, n->attrs.d, n->attrs.d2,
                                    gc->offset + n->attrs.i[0]);
      EM_CHECK_PTR_GOTO(region, st, out);
      grad_in[1] = em_tensor_clone(region);
      EM_CHECK_PTR_GOTO(grad_in[1], st, out);
      if (n->next[0].node) {
        base_g = em_tensor_clone(gc);
        EM_CHECK_PTR_GOTO(base_g, st, out);
        zero_region = em_tensor_as_strided(base_g, n->attrs.nd, n->attrs.d, n->attrs.d2,
                                           base_g->offset + n->attrs.i[0]);
        EM_CHECK_PTR_GOTO(zero_region, st, out);
        EM_CHECK_GOTO(em_tensor_zero_(zero_region), st, out);
        grad_in[0] = em_tensor_retain(base_g);
      }
    out:
      em_tensor_release(zero_region);
      em_tensor_release(base_g);
      em_tensor_release(region);
      em_tensor_release(gc);
      return st;
    }
    case EM_AG_NODE_ACCUMULATE:
      return accumulate(n, n->buffer[0]);
  }
  return EM_OK;
}

static void release_graph_saved(em_ag_node *n) {
  if (n->type == EM_AG_NODE_OP) {
    release_saved(n->saved, n->nsaved);
    n->released = true;
  } else if (n->type == EM_AG_NODE_CUSTOM && n->ctx) {
    release_saved(n->ctx->saved, n->ctx->nsaved);
    n->ctx->released = true;
  }
}

static void free_buffer(em_ag_node *n) {
  if (!n->buffer) return;
  for (int i = 0; i < n->nout; i++) em_tensor_release(n->buffer[i]);
  free(n->buffer);
  n->buffer = NULL;
}

/* The core of backward and autograd.grad. With caps (ncap > 0) gradients
 * reaching the captured edges are recorded and nothing accumulates into
 * leaves. */
static em_status engine_run(int nroots, const em_ag_edge *roots, em_tensor *const *root_grads,
                            bool retain_graph, int ncap, capture *caps) {
  graph g = {0};
  em_status st = discover(&g, nroots, roots);
  if (st) goto done;
  for (size_t i = 0; i < g.n && !st; i++) {
    em_ag_node *n = g.nodes[i];
    n->buffer = calloc((size_t)n->nout + 1, sizeof *n->buffer);
    if (!n->buffer) st = em__set_error(EM_ERR_NOMEM, "backward: out of memory");
  }
  if (st) goto done;
  if (ncap) mark_needed(&g, ncap, caps);
  for (int r = 0; r < nroots && !st; r++) {
    em_ag_node *n = roots[r].node;
    if (!n) continue;
    st = add_into(&n->buffer[roots[r].input_nr], root_grads[r]);
  }
  for (int r = 0; r < nroots && !st; r++) {
    em_ag_node *n = roots[r].node;
    if (n && n->deps == 0 && !n->queued && (!ncap || n->needed)) {
      n->queued = true;
      st = heap_push(&g, n);
    }
  }
  while (!st && g.hn) {
    if (em_interrupt_requested()) {
      st = em__set_error(EM_ERR_INTERRUPTED, "backward: interrupted");
      break;
    }
    em_ag_node *n = heap_pop(&g);
    /* tensor hooks of non-leaf outputs, then retain_grad */
    for (int k = 0; !st && k < n->nout && n->pre_hooks; k++)
      st = run_hooks(n->pre_hooks, k, true, &n->buffer[k]);
    for (int k = 0; !st && k < n->nout; k++) {
      if (!n->buffer[k]) continue;
      em_tensor *old = NULL;
      pthread_mutex_lock(&meta_mu);
      struct em_ag_meta *m = n->retain[k];
      if (m) {
        old = m->grad;
        m->grad = old ? em_tensor_add(old, n->buffer[k]) : em_tensor_clone(n->buffer[k]);
        if (!m->grad) st = em_last_status();
      }
      pthread_mutex_unlock(&meta_mu);
      em_tensor_release(old);
    }
    if (st) break;
    for (int c = 0; c < ncap; c++)
      if (caps[c].node == n && n->buffer[caps[c].input_nr] && !caps[c].grad)
        caps[c].grad = em_tensor_retain(n->buffer[caps[c].input_nr]);
    em_tensor *grad_in_buf[16] = {0};
    em_tensor **grad_in = n->nin <= 16 ? grad_in_buf : calloc((size_t)n->nin, sizeof *grad_in);
    if (!grad_in) {
      st = em__set_error(EM_ERR_NOMEM, "backward: out of memory");
      break;
    }
    bool skip = ncap && (n->type == EM_AG_NODE_ACCUMULATE || !n->needed);
    if (!skip) st = run_node(n, grad_in);
    for (int i = 0; i < n->nin && !st; i++)
      if (grad_in[i]) st = validate_grad(n, i, &grad_in[i]);
    for (int i = 0; i < n->nin && !st; i++) {
      em_ag_node *c = n->next[i].node;
      if (!c) continue;
      if (grad_in[i]) st = add_into(&c->buffer[n->next[i].input_nr], grad_in[i]);
      if (!st && --c->deps == 0 && (!ncap || c->needed) && !c->queued) {
        c->queued = true;
        st = heap_push(&g, c);
      }
    }
    for (int i = 0; i < n->nin; i++) em_tensor_release(grad_in[i]);
    if (grad_in != grad_in_buf) free(grad_in);
    if (!retain_graph && !skip) release_graph_saved(n);
    free_buffer(n);
  }
done:
  for (size_t i = 0; i < g.n; i++) {
    em_ag_node *n = g.nodes[i];
    free_buffer(n);
    n->deps = 0;
    n->needed = false;
    n->queued = false;
  }
  free(g.nodes);
  free(g.heap);
  return st;
}

static em_status prepare_roots(const char *op, int n, em_tensor *const *roots,
                               em_tensor *const *grads, em_ag_edge *edges, em_tensor **rg) {
  for (int i = 0; i < n; i++) {
    em_tensor *t = roots[i];
    if (!t) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
    if (!t->requires_grad)
      return em__set_error(EM_ERR_STATE,
                           "%s: element %d of tensors does not require grad and does not have a "
                           "grad_fn",
                           op, i);
    em_tensor *g = grads ? grads[i] : NULL;
    if (g) {
      bool same = g->ndim == t->ndim;
      for (int d = 0; same && d < t->ndim; d++) same = g->shape[d] == t->shape[d];
      if (!same)
        return em__set_error(EM_ERR_SHAPE,
                             "%s: mismatch in shape: grad_output[%d] has a shape of %s and "
                             "output[%d] has a shape of %s",
                             op, i, em__tshape(g), i, em__tshape(t));
      rg[i] = g->dtype == t->dtype ? em_tensor_retain(g) : em_tensor_to_dtype(g, (em_dtype)t->dtype);
    } else {
      if (t->numel != 1)
        return em__set_error(EM_ERR_STATE,
                             "%s: grad can be implicitly created only for scalar outputs (got "
                             "shape %s)",
                             op, em__tshape(t));
      rg[i] = em_tensor_ones_like(t, EM_DTYPE_UNDEFINED);
    }
    if (!rg[i]) return em_last_status();
    EM_CHECK(edge_of(t, &edges[i]));
  }
  return EM_OK;
}

em_status em_backward_multi(int n, em_tensor *const *roots, em_tensor *const *grads,
                            bool retain_graph) {
  if (n <= 0) return em__set_error(EM_ERR_INVALID, "backward: no tensors given");
  em_ag_edge *edges = calloc((size_t)n, sizeof *edges);
  em_tensor **rg = calloc((size_t)n, sizeof *rg);
  em_status st = EM_OK;
  if (!edges || !rg) {
    st = em__set_error(EM_ERR_NOMEM, "backward: out of memory");
    goto done;
  }
  st = prepare_roots("backward", n, roots, grads, edges, rg);
  if (st) goto done;
  bool prev = em_set_grad_enabled(false);
  pthread_mutex_lock(&engine_mu);
  in_backward = true;
  st = engine_run(n, edges, rg, retain_graph, 0, NULL);
  pthread_mutex_unlock(&engine_mu);
  st = run_callbacks(st); /* outside the lock: callbacks may wait on other threads */
  in_backward = false;
  em_set_grad_enabled(prev);
done:
  for (int i = 0; edges && rg && i < n; i++) {
    em__ag_node_release(edges[i].node);
    em_tensor_release(rg[i]);
  }
  free(edges);
  free(rg);
  return st;
}

em_status em_backward(em_tensor *t, em_tensor *grad, bool retain_graph) {
  return em_backward_multi(1, &t, grad ? &grad : NULL, retain_graph);
}

em_status em_ag_grad(int nout, em_tensor *const *outputs, em_tensor *const *grad_outputs,
                     int nin, em_tensor *const *inputs, bool retain_graph, bool allow_unused,
                     em_tensor **grads_out) {
  for (int i = 0; i < nin; i++) grads_out[i] = NULL;
  if (nout <= 0 || nin <= 0) return em__set_error(EM_ERR_INVALID, "grad: no outputs or inputs given");
  for (int i = 0; i < nin; i++)
    if (!inputs[i] || !inputs[i]->requires_grad)
      return em__set_error(EM_ERR_STATE, "grad: one of the differentiated Tensors (input %d) does "
                           "not require grad", i);
  em_ag_edge *edges = calloc((size_t)nout, sizeof *edges);
  em_tensor **rg = calloc((size_t)nout, sizeof *rg);
  capture *caps = calloc((size_t)nin, sizeof *caps);
  em_status st = EM_OK;
  if (!edges || !rg || !caps) {
    st = em__set_error(EM_ERR_NOMEM, "grad: out of memory");
    goto done;
  }
  st = prepare_roots("grad", nout, outputs, grad_outputs, edges, rg);
  for (int i = 0; !st && i < nin; i++) {
    em_ag_edge e;
    st = edge_of(inputs[i], &e);
    caps[i].node = e.node;
    caps[i].input_nr = e.input_nr;
  }
  if (st) goto done;
  bool prev = em_set_grad_enabled(false);
  pthread_mutex_lock(&engine_mu);
  in_backward = true;
  st = engine_run(nout, edges, rg, retain_graph, nin, caps);
  pthread_mutex_unlock(&engine_mu);
  st = run_callbacks(st);
  in_backward = false;
  em_set_grad_enabled(prev);
  for (int i = 0; !st && i < nin; i++) {
    if (!caps[i].grad && !allow_unused)
      st = em__set_error(EM_ERR_STATE,
                         "grad: one of the differentiated Tensors (input %d) appears to not have "
                         "been used in the graph; set allow_unused=True if this is the desired "
                         "behavior",
                         i);
  }
  for (int i = 0; !st && i < nin; i++) {
    if (caps[i].grad) {
      em_tensor *g = caps[i].grad;
      if (g->dtype != inputs[i]->dtype) {
        grads_out[i] = em_tensor_to_dtype(g, (em_dtype)inputs[i]->dtype);
        if (!grads_out[i]) st = em_last_status();
      } else {
        grads_out[i] = em_tensor_retain(g);
      }
    }
  }
  if (st)
    for (int i = 0; i < nin; i++) {
      em_tensor_release(grads_out[i]);
      grads_out[i] = NULL;
    }
done:
  for (int i = 0; edges && rg && i < nout; i++) {
    em__ag_node_release(edges[i].node);
    em_tensor_release(rg[i]);
  }
  for (int i = 0; caps && i < nin; i++) {
    em__ag_node_release(caps[i].node);
    em_tensor_release(caps[i].grad);
  }
  free(edges);
  free(rg);
  free(caps);
  return st;
}

/* ---- reachable leaves ------------------------------------------------------------------------------ */

em_status em_ag_reachable_leaves(int nroots, em_tensor *const *roots, em_tensor ***leaves, int *n) {
  *leaves = NULL;
  *n = 0;
  em_ag_edge *edges = calloc((size_t)nroots + 1, sizeof *edges);
  if (!edges) return em__set_error(EM_ERR_NOMEM, "reachable_leaves: out of memory");
  em_status st = EM_OK;
  for (int i = 0; i < nroots && !st; i++)
    if (roots[i]) st = edge_of(roots[i], &edges[i]);
  graph g = {0};
  em_tensor **out = NULL;
  int count = 0;
  pthread_mutex_lock(&engine_mu);
  if (!st) st = discover(&g, nroots, edges);
  for (size_t i = 0; i < g.n; i++) g.nodes[i]->deps = 0; /* discover counted; reset */
  if (!st) {
    out = calloc(g.n + 1, sizeof *out);
    if (!out) st = em__set_error(EM_ERR_NOMEM, "reachable_leaves: out of memory");
  }
  for (size_t i = 0; !st && i < g.n; i++)
    if (g.nodes[i]->type == EM_AG_NODE_ACCUMULATE && g.nodes[i]->variable)
      out[count++] = em_tensor_retain(g.nodes[i]->variable);
  pthread_mutex_unlock(&engine_mu);
  free(g.nodes);
  free(g.heap);
  for (int i = 0; i < nroots; i++) em__ag_node_release(edges[i].node);
  free(edges);
  if (st) {
    em_tensor_list_release(out, count);
    return st;
  }
  *leaves = out;
  *n = count;
  return EM_OK;
}

/* ---- custom functions ------------------------------------------------------------------------------ */

em_status em_ag_function_apply(const em_ag_function *fn, void *user, void (*user_free)(void *user),
                               int nin, em_tensor *const *in, int *nout, em_tensor **out) {
  *nout = 0;
  if (!fn || !fn->forward || !fn->backward) {
    if (user_free) user_free(user);
    return em__set_error(EM_ERR_INVALID, "function: forward and backward are required");
  }
  struct em_ag_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    if (user_free) user_free(user);
    return em__set_error(EM_ERR_NOMEM, "function: out of memory");
  }
  ctx->user = user;
  ctx->user_free = user_free;
  ctx->nin = nin;
  ctx->needs_grad = calloc((size_t)nin + 1, sizeof *ctx->needs_grad);
  if (!ctx->needs_grad) {
    ctx_free(ctx);
    return em__set_error(EM_ERR_NOMEM, "function: out of memory");
  }
  for (int i = 0; i < nin; i++)
    ctx->needs_grad[i] = in[i] && in[i]->requires_grad && em_is_grad_enabled();
  bool rec = em__should_record(nin, in);
  bool prev = em_set_grad_enabled(false);
  em_tensor *outs[EM_AG_MAX_OUTPUTS] = {0};
  int no = 0;
  em_status st = fn->forward(ctx, nin, in, &no, outs);
  em_set_grad_enabled(prev);
  if (!st && (no < 0 || no > EM_AG_MAX_OUTPUTS))
    st = em__set_error(EM_ERR_INVALID, "%s: forward returned %d outputs (at most %d)", fn->name,
                       no, EM_AG_MAX_OUTPUTS);
  if (st) {
    if (!em_last_error()[0]) em__set_error(st, "%s: forward failed", fn->name);
    for (int i = 0; i < EM_AG_MAX_OUTPUTS; i++) em_tensor_release(outs[i]);
    ctx_free(ctx);
    return st;
  }
  /* an output that is an input must become a new tensor object so that
   * history is set on it, not on the input */
  for (int j = 0; j < no; j++)
    for (int i = 0; outs[j] && i < nin; i++)
      if (outs[j] == in[i]) {
        em_tensor *a = em_tensor_detach(outs[j]);
        em_tensor_release(outs[j]);
        outs[j] = a;
        if (!a) st = em_last_status();
        break;
      }
  if (!st && rec) {
    em_ag_node *n = node_alloc(EM_AG_NODE_CUSTOM, nin, no, 0);
    if (!n) {
      st = em_last_status();
    } else {
      n->fn = fn;
      n->ctx = ctx;
      ctx = NULL;
      snprintf(n->name, sizeof n->name, "%s", fn->name ? fn->name : "CustomFunctionBackward");
      st = link_inputs(n, nin, in);
      if (!st) st = link_outputs(n, no, outs, n->ctx->non_diff);
      em__ag_node_release(n);
    }
  }
  ctx_free(ctx);
  if (st) {
    for (int j = 0; j < no; j++) em_tensor_release(outs[j]);
    return st;
  }
  for (int j = 0; j < no; j++) out[j] = outs[j];
  *nout = no;
  return EM_OK;
}

em_status em_ag_ctx_save(em_ag_ctx *ctx, int n, em_tensor *const *ts) {
  em_ag_saved *s = realloc(ctx->saved, sizeof *s * (size_t)(ctx->nsaved + n));
  if (!s) return em__set_error(EM_ERR_NOMEM, "save_for_backward: out of memory");
  ctx->saved = s;
  for (int i = 0; i < n; i++) {
    em_ag_saved *e = &ctx->saved[ctx->nsaved];
    e->t = NULL;
    e->version = 0;
    if (ts[i]) {
      e->t = em_tensor_detach(ts[i]);
      if (!e->t) return em_last_status();
      e->version = em_tensor_version(ts[i]);
    }
    ctx->nsaved++;
  }
  return EM_OK;
}

em_tensor *em_ag_ctx_saved(em_ag_ctx *ctx, int i) {
  if (ctx->released)
    return EM_FAIL(EM_ERR_STATE, "saved tensors were freed by an earlier backward; specify "
                   "retain_graph=True to backward twice");
  if (i < 0 || i >= ctx->nsaved)
    return EM_FAIL(EM_ERR_INDEX, "saved tensor %d out of range (%d saved)", i, ctx->nsaved);
  em_ag_saved *s = &ctx->saved[i];
  if (!s->t) return NULL;
  uint64_t v = em_tensor_version(s->t);
  if (v != s->version)
    return EM_FAIL(EM_ERR_STATE,
                   "one of the variables needed for gradient computation has been modified by an "
                   "inplace operation: saved tensor %d [%s %s] is at version %llu; expected "
                   "version %llu instead",
                   i, em_dtype_name((em_dtype)s->t->dtype), em__tshape(s->t),
                   (unsigned long long)v, (unsigned long long)s->version);
  return s->t;
}

int em_ag_ctx_num_saved(em_ag_ctx *ctx) { return ctx->nsaved; }
void *em_ag_ctx_user(em_ag_ctx *ctx) { return ctx->user; }

bool em_ag_ctx_needs_input_grad(em_ag_ctx *ctx, int i) {
  return i >= 0 && i < ctx->nin && ctx->needs_grad[i];
}

em_status em_ag_ctx_mark_non_differentiable(em_ag_ctx *ctx, int output_index) {
  if (output_index < 0 || output_index >= EM_AG_MAX_OUTPUTS)
    return em__set_error(EM_ERR_INDEX, "mark_non_differentiable: output %d out of range",
                         output_index);
  ctx->non_diff[output_index] = true;
  return EM_OK;
}
