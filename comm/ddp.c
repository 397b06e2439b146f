/* The DDP reducer: buckets, ready tracking from autograd's post-accumulate
 * hooks, ordered async launches, end-of-backward finalisation, no_sync,
 * unused-parameter handling, bucket rebuilding and comm hooks. Everything
 * here runs on the thread that calls forward/backward; communication runs
 * on the process group's progress thread. */
#include <stdio.h>
#include <stdlib.h>

#include "autograd/autograd.h"
#include "comm/ddp.h"
#include "core/core_impl.h"

#define DEFAULT_CAP ((int64_t)25 << 20)
#define DEFAULT_FIRST_CAP ((int64_t)1 << 20)

typedef struct bucket {
  em_dtype dtype;
  em_device device;
  em_tensor *buffer; /* flat, contiguous */
  int n;
  int *params;       /* indices into ddp->ps */
  int64_t *offsets;  /* element offsets in buffer */
  em_tensor **ptensors;
  int pending;       /* parameters not yet ready this iteration */
  bool launched;
  em_work *work;
  em_tensor *result;
} bucket;

typedef struct pinfo {
  em_tensor *p;
  char *name;
  int bucket;
  int64_t offset;
  int hook;
} pinfo;

typedef struct hook_ctx {
  em_ddp *d;
  int index;
} hook_ctx;

struct em_ddp {
  em_module *m;
  em_pg *pg;
  em_ddp_options o;
  int np;
  pinfo *ps;
  int nb;
  bucket *bs;
  int next_launch;
  bool no_sync;
  bool prepared;  /* a forward under grad mode expects a backward */
  bool any_ready; /* some gradient of this iteration arrived */
  bool finalize_queued;
  bool *ready;    /* per parameter, this iteration */
  int *ready_order;
  int nready;
  bool rebuild_pending;
  bool *static_unused; /* static_graph: unused set learned in iteration 1 */
  bool static_known;
  em_ddp_comm_hook hook;
  void *hook_state;
  void (*hook_free)(void *);
  em_ddp_stats stats;
};

/* ---- small helpers ------------------------------------------------------------------ */

static em_status wait_all(em_work **w, int n) {
  em_status st = EM_OK;
  for (int i = 0; i < n; i++) {
    if (!w[i]) continue;
    em_status s = em_work_wait(w[i], EM_PG_DEFAULT_TIMEOUT);
    if (!st) st = s;
    em_work_release(w[i]);
    w[i] = NULL;
  }
  return st;
}

/* The part of bucket b holding parameter i, shaped like the parameter. */
static em_tensor *slice_of(em_ddp *d, int i) {
  pinfo *p = &d->ps[i];
  em_tensor *flat = em_tensor_narrow(d->bs[p->bucket].buffer, 0, p->offset, p->p->numel);
  if (!flat) return NULL;
  em_tensor *v = em_tensor_view(flat, p->p->ndim, p->p->shape);
  em_tensor_release(flat);
  return v;
}

static bool grad_is_view(em_ddp *d, int i) {
  em_tensor *g = em_tensor_grad(d->ps[i].p);
  bool yes = g && g->storage == d->bs[d->ps[i].bucket].buffer->storage &&
             g->offset == d->ps[i].offset;
  em_tensor_release(g);
  return yes;
}

/* ---- buckets ------------------------------------------------------------------------- */

static void free_buckets(em_ddp *d) {
  for (int b = 0; b < d->nb; b++) {
    bucket *k = &d->bs[b];
    em_tensor_release(k->buffer);
    em_work_release(k->work);
    em_tensor_release(k->result);
    free(k->params), free(k->offsets), free(k->ptensors);
  }
  free(d->bs);
  d->bs = NULL;
  d->nb = 0;
}

/* Groups the parameters, in the given order, into buckets capped by size
 * (first bucket first_cap), one dtype and device per bucket. */
static em_status build_buckets(em_ddp *d, const int *order) {
  bucket *bs = calloc((size_t)d->np + 1, sizeof *bs);
  if (!bs) return em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
  int nb = 0;
  int64_t cap = d->o.first_bucket_cap_bytes;
  /* open[k]: the bucket currently filling for the k-th distinct dtype */
  int open_bucket[EM_DTYPE_COUNT];
  int64_t open_bytes[EM_DTYPE_COUNT];
  for (int k = 0; k < EM_DTYPE_COUNT; k++) open_bucket[k] = -1, open_bytes[k] = 0;
  em_status st = EM_OK;
  for (int j = 0; j < d->np && !st; j++) {
    int i = order[j];
    em_tensor *p = d->ps[i].p;
    int dt = p->dtype;
    if (open_bucket[dt] < 0) {
      open_bucket[dt] = nb++;
      bs[open_bucket[dt]].dtype = (em_dtype)dt;
      bs[open_bucket[dt]].device = p->device;
      bs[open_bucket[dt]].params = malloc(sizeof(int) * (size_t)d->np);
      bs[open_bucket[dt]].offsets = malloc(sizeof(int64_t) * (size_t)d->np);
      if (!bs[open_bucket[dt]].params || !bs[open_bucket[dt]].offsets)
        st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      open_bytes[dt] = 0;
    }
    if (st) break;
    bucket *k = &bs[open_bucket[dt]];
    int64_t off = k->n ? k->offsets[k->n - 1] + d->ps[k->params[k->n - 1]].p->numel : 0;
    k->params[k->n] = i;
    k->offsets[k->n++] = off;
    d->ps[i].bucket = open_bucket[dt];
    d->ps[i].offset = off;
    open_bytes[dt] += p->numel * (int64_t)em_dtype_size((em_dtype)dt);
    if (open_bytes[dt] >= cap) { /* close it: the next parameter starts a new one */
      open_bucket[dt] = -1;
      cap = d->o.bucket_cap_bytes;
    }
  }
  for (int b = 0; b < nb && !st; b++) {
    bucket *k = &bs[b];
    int64_t total = k->n ? k->offsets[k->n - 1] + d->ps[k->params[k->n - 1]].p->numel : 0;
    k->buffer = em_tensor_empty_on(EM_DIMS(total), k->dtype, k->device); /* the params' device */
    if (k->buffer && em_tensor_zero_(k->buffer)) em_tensor_release(k->buffer), k->buffer = NULL;
    k->ptensors = malloc(sizeof(em_tensor *) * (size_t)(k->n + 1));
    if (!k->buffer || !k->ptensors) {
      st = k->buffer ? em__set_error(EM_ERR_NOMEM, "DDP: out of memory") : em_last_status();
      break;
    }
    for (int j = 0; j < k->n; j++) k->ptensors[j] = d->ps[k->params[j]].p;
  }
  if (st) {
    bucket *old = d->bs;
    int oldn = d->nb;
    d->bs = bs;
    d->nb = nb;
    free_buckets(d);
    d->bs = old;
    d->nb = oldn;
    return st;
  }
  free_buckets(d);
  d->bs = bs;
  d->nb = nb;
  d->stats.nbuckets = nb;
  return EM_OK;
}

/* With gradient_as_bucket_view: every .grad is a view of its bucket slice
 * (existing gradient values are kept). */
static em_status point_grads_at_buckets(em_ddp *d) {
  for (int i = 0; i < d->np; i++) {
    if (grad_is_view(d, i)) continue;
    em_tensor *v = slice_of(d, i);
    if (!v) return em_last_status();
    em_tensor *g = em_tensor_grad(d->ps[i].p);
    em_status st = g ? em_tensor_copy_(v, g) : em_tensor_zero_(v);
    em_tensor_release(g);
    if (!st) st = em_tensor_set_grad(d->ps[i].p, v);
    em_tensor_release(v);
    EM_CHECK(st);
  }
  return EM_OK;
}

/* ---- cross-rank checks and broadcasts ------------------------------------------------- */

static char *describe(em_ddp *d, size_t *len) {
  size_t cap = 256, n = 0;
  char *s = malloc(cap);
  for (int i = 0; s && i < d->np; i++) {
    em_tensor *p = d->ps[i].p;
    char line[512];
    int w = snprintf(line, sizeof line, "%s %s %s\n", d->ps[i].name, em__tshape(p),
                     em_dtype_name((em_dtype)p->dtype));
    if (w < 0) continue;
    if (n + (size_t)w + 1 > cap) {
      cap = (cap + (size_t)w) * 2;
      char *ns = realloc(s, cap);
      if (!ns) {
        free(s);
        return NULL;
      }
      s = ns;
    }
    memcpy(s + n, line, (size_t)w);
    n += (size_t)w;
  }
  if (s) s[n] = '\0';
  *len = n;
  return s;
}

/* Line k of a description ("" past the end), into buf. */
static const char *line_at(const char *s, int k, char *buf, size_t size) {
  for (int i = 0; i < k && s; i++) {
    s = strchr(s, '\n');
    if (s) s++;
  }
  if (!s || !*s) return "";
  const char *e = strchr(s, '\n');
  size_t len = e ? (size_t)(e - s) : strlen(s);
  if (len >= size) len = size - 1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  return buf;
}

/* t (stolen) moved to dev; NULL with the error set. */
static em_tensor *move_to(em_tensor *t, em_device dev) {
  em_tensor *m = t ? em_tensor_to_device(t, dev) : NULL;
  em_tensor_release(t);
  return m;
}

/* DDP's own small collectives (the parameter check, the bucket order) run
 * on the parameters' device: the nccl backend takes GPU tensors only. */
static em_tensor *to_params_device(const em_ddp *d, em_tensor *t) {
  return move_to(t, d->np ? d->ps[0].p->device : EM_DEVICE_CPU);
}

/* Every rank's parameter list must match rank 0's. */
static em_status verify_params(em_ddp *d) {
  int world = em_pg_size(d->pg), rank = em_pg_rank(d->pg);
  if (world == 1) return EM_OK;
  size_t len;
  char *mine = describe(d, &len);
  if (!mine) return em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
  em_status st = EM_OK;
  em_tensor *lens = NULL, *mylen = NULL, *all = NULL, *buf = NULL;
  mylen = to_params_device(d, em_tensor_full(EM_DIMS(1), em_scalar_int((int64_t)len), EM_INT64));
  lens = to_params_device(d, em_tensor_empty(EM_DIMS(world), EM_INT64));
  EM_CHECK_PTR_GOTO(mylen, st, done);
  EM_CHECK_PTR_GOTO(lens, st, done);
  em_work *w = em_pg_allgather_into_tensor(d->pg, lens, mylen, NULL);
  EM_CHECK_PTR_GOTO(w, st, done);
  EM_CHECK_GOTO(wait_all(&w, 1), st, done);
  EM_CHECK_PTR_GOTO(lens = move_to(lens, EM_DEVICE_CPU), st, done);
  int64_t maxlen = 1;
  const int64_t *l = em_tensor_data(lens);
  for (int r = 0; r < world; r++) maxlen = l[r] > maxlen ? l[r] : maxlen;
  buf = em_tensor_zeros(EM_DIMS(maxlen), EM_UINT8);
  EM_CHECK_PTR_GOTO(buf, st, done);
  memcpy(em_tensor_data(buf), mine, len);
  buf = to_params_device(d, buf);
  all = to_params_device(d, em_tensor_empty(EM_DIMS(world * maxlen), EM_UINT8));
  EM_CHECK_PTR_GOTO(buf, st, done);
  EM_CHECK_PTR_GOTO(all, st, done);
  w = em_pg_allgather_into_tensor(d->pg, all, buf, NULL);
  EM_CHECK_PTR_GOTO(w, st, done);
  EM_CHECK_GOTO(wait_all(&w, 1), st, done);
  EM_CHECK_PTR_GOTO(all = move_to(all, EM_DEVICE_CPU), st, done);
  const char *data = em_tensor_data(all);
  for (int r = 0; r < world && !st; r++) {
    char *theirs = strndup(data + r * maxlen, (size_t)l[r]);
    if (!theirs) {
      st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      break;
    }
    if (strcmp(theirs, mine) != 0) {
      char a[512], b[512];
      int k = 0;
      while (strcmp(line_at(mine, k, a, sizeof a), line_at(theirs, k, b, sizeof b)) == 0) k++;
      const char *ma = line_at(mine, k, a, sizeof a), *mb = line_at(theirs, k, b, sizeof b);
      st = em__set_error(EM_ERR_INVALID,
                         "DDP: the parameters differ across ranks: parameter %d is \"%s\" on "
                         "rank %d but \"%s\" on rank %d (every rank must build the same model)",
                         k, *ma ? ma : "(none)", rank, *mb ? mb : "(none)", r);
    }
    free(theirs);
  }
done:
  free(mine);
  em_tensor_release(lens), em_tensor_release(mylen), em_tensor_release(all), em_tensor_release(buf);
  return st;
}

/* Broadcasts tensors from rank 0 (all launched, then waited). */
static em_status broadcast_list(em_ddp *d, int n, em_tensor *const *ts) {
  if (em_pg_size(d->pg) == 1 || n == 0) return EM_OK;
  em_work **w = calloc((size_t)n, sizeof *w);
  if (!w) return em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
  em_status st = EM_OK;
  for (int i = 0; i < n && !st; i++) {
    w[i] = em_pg_broadcast(d->pg, ts[i], 0, NULL);
    if (!w[i]) st = em_last_status();
  }
  em_status st2 = wait_all(w, n);
  free(w);
  return st ? st : st2;
}

static em_status broadcast_buffers(em_ddp *d) {
  em_named_tensors b;
  EM_CHECK(em_module_named_buffers(d->m, &b));
  em_status st = broadcast_list(d, b.n, b.tensors);
  em_named_tensors_free(&b);
  return st;
}

/* ---- the iteration ---------------------------------------------------------------------- */

static em_status launch_ready(em_ddp *d) {
  while (d->next_launch < d->nb && d->bs[d->next_launch].pending == 0) {
    bucket *k = &d->bs[d->next_launch];
    em_ddp_bucket view = {d->next_launch, k->buffer, k->n, k->ptensors, k->offsets, NULL};
    em_work *w = d->hook(d->hook_state, d->pg, &view);
    if (!w) {
      em_tensor_release(view.result);
      if (!em_last_status()) em__set_error(EM_ERR_COMM, "DDP: the comm hook returned no work");
      em__prefix_error("DDP: bucket %d", d->next_launch);
      return em_last_status();
    }
    k->work = w;
    k->result = view.result;
    k->launched = true;
    d->stats.buckets_launched++;
    if (d->nready < d->np) d->stats.launched_during_backward++;
    d->next_launch++;
  }
  return EM_OK;
}

static em_status finalize(void *ctx);

static em_status mark_ready(em_ddp *d, int i, bool unused) {
  if (d->ready[i]) return EM_OK;
  d->ready[i] = true;
  d->ready_order[d->nready++] = i;
  bucket *k = &d->bs[d->ps[i].bucket];
  if (unused || !d->o.gradient_as_bucket_view || !grad_is_view(d, i)) {
    em_tensor *v = slice_of(d, i);
    if (!v) return em_last_status();
    em_tensor *g = unused ? NULL : em_tensor_grad(d->ps[i].p);
    em_status st = g ? em_tensor_copy_(v, g) : em_tensor_zero_(v);
    em_tensor_release(g);
    em_tensor_release(v);
    EM_CHECK(st);
  }
  if (!unused) {
    d->any_ready = true;
    if (!d->finalize_queued && em_ag_in_backward()) {
      EM_CHECK(em_ag_queue_callback(finalize, d));
      d->finalize_queued = true;
    }
  }
  if (--k->pending == 0) EM_CHECK(launch_ready(d));
  return EM_OK;
}

static em_status on_grad_ready(em_tensor *leaf, void *ctx) {
  hook_ctx *h = ctx;
  em_ddp *d = h->d;
  if (d->no_sync || !d->prepared) return EM_OK;
  return mark_ready(d, h->index, false);
}

static void reset_iteration(em_ddp *d) {
  for (int b = 0; b < d->nb; b++) {
    bucket *k = &d->bs[b];
    k->pending = k->n;
    k->launched = false;
    em_work_release(k->work);
    k->work = NULL;
    em_tensor_release(k->result);
    k->result = NULL;
  }
  for (int i = 0; i < d->np; i++) d->ready[i] = false;
  d->nready = 0;
  d->next_launch = 0;
  d->any_ready = false;
  d->finalize_queued = false;
  d->prepared = false;
}

/* End of backward: wait every bucket, write averaged gradients back. */
static em_status finalize(void *ctx) {
  em_ddp *d = ctx;
  d->finalize_queued = false;
  if (d->next_launch < d->nb) return EM_OK; /* unused parameters: reported at the next forward */
  em_status st = EM_OK;
  for (int b = 0; b < d->nb; b++) {
    bucket *k = &d->bs[b];
    em_status s = wait_all(&k->work, 1);
    if (!st) st = s;
    if (!s && k->result) s = em_tensor_copy_(k->buffer, k->result);
    if (!st) st = s;
    em_tensor_release(k->result);
    k->result = NULL;
  }
  for (int i = 0; i < d->np && !st; i++) {
    if (d->o.gradient_as_bucket_view && grad_is_view(d, i)) continue;
    em_tensor *v = slice_of(d, i);
    if (!v) return em_last_status();
    em_tensor *g = em_tensor_grad(d->ps[i].p);
    if (g) {
      st = em_tensor_copy_(g, v);
    } else if (d->o.gradient_as_bucket_view) {
      st = em_tensor_set_grad(d->ps[i].p, v);
    } else {
      em_tensor *c = em_tensor_clone(v);
      st = c ? em_tensor_set_grad(d->ps[i].p, c) : em_last_status();
      em_tensor_release(c);
    }
    em_tensor_release(g);
    em_tensor_release(v);
  }
  if (st) return st;
  if (d->stats.iterations == 0 && !d->stats.rebuilt) d->rebuild_pending = true;
  if (d->o.static_graph && !d->static_known) d->static_known = true;
  d->stats.iterations++;
  d->prepared = false;
  return EM_OK;
}

/* Rebuilds buckets in the order gradients became ready in iteration 1 (rank
 * 0's order, so every rank builds the same buckets). */
static em_status rebuild(em_ddp *d) {
  d->rebuild_pending = false;
  d->stats.rebuilt = true;
  em_tensor *order = em_tensor_empty(EM_DIMS(d->np), EM_INT64);
  if (!order) return em_last_status();
  int64_t *o = em_tensor_data(order);
  bool *seen = calloc((size_t)d->np + 1, sizeof *seen);
  if (!seen && d->np) {
    em_tensor_release(order);
    return em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
  }
  int k = 0;
  for (int j = 0; j < d->nready; j++)
    if (!seen[d->ready_order[j]]) seen[d->ready_order[j]] = true, o[k++] = d->ready_order[j];
  for (int i = d->np - 1; i >= 0; i--) /* never ready: reverse registration order */
    if (!seen[i]) o[k++] = i;
  free(seen);
  em_status st = (order = to_params_device(d, order)) ? broadcast_list(d, 1, &order) : em_last_status();
  if (!st && !(order = move_to(order, EM_DEVICE_CPU))) st = em_last_status();
  o = st ? NULL : em_tensor_data(order);
  int *ord = st ? NULL : malloc(sizeof(int) * (size_t)(d->np + 1));
  if (!st && !ord) st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
  for (int i = 0; !st && i < d->np; i++) {
    ord[i] = (int)o[i];
    if (ord[i] < 0 || ord[i] >= d->np) st = em__set_error(EM_ERR_INTERNAL, "DDP: bad bucket order");
  }
  em_tensor_release(order);
  if (!st) {
    /* keep gradients that live in the old buckets */
    em_tensor **keep = calloc((size_t)d->np + 1, sizeof *keep);
    for (int i = 0; keep && i < d->np; i++)
      if (d->o.gradient_as_bucket_view && grad_is_view(d, i)) {
        em_tensor *g = em_tensor_grad(d->ps[i].p);
        keep[i] = g ? em_tensor_clone(g) : NULL;
        em_tensor_release(g);
        em_tensor_set_grad(d->ps[i].p, keep[i]);
      }
    st = build_buckets(d, ord);
    for (int i = 0; keep && i < d->np; i++) em_tensor_release(keep[i]);
    free(keep);
    if (!st && d->o.gradient_as_bucket_view) st = point_grads_at_buckets(d);
  }
  free(ord);
  return st;
}

em_status em_ddp_pre_forward(em_ddp *d) {
  if (d->prepared && d->any_ready) {
    /* a backward started reducing but some parameters never got gradients */
    size_t cap = 1024, n = 0;
    char *names = malloc(cap);
    if (names) names[0] = '\0';
    for (int i = 0; names && i < d->np; i++) {
      if (d->ready[i]) continue;
      size_t w = strlen(d->ps[i].name) + 2;
      if (n + w + 1 > cap) {
        cap = (cap + w) * 2;
        char *nn = realloc(names, cap);
        if (!nn) break;
        names = nn;
      }
      n += (size_t)snprintf(names + n, cap - n, "%s%s", n ? ", " : "", d->ps[i].name);
    }
    em__set_error(EM_ERR_STATE,
                  "DDP: expected to have finished reduction in the prior iteration before "
                  "starting a new one; this means the module has parameters that were not used "
                  "in producing the loss. Pass find_unused_parameters to the DDP options, and "
                  "make sure every forward output takes part in the loss. Parameters that did "
                  "not receive a gradient on rank %d: %s",
                  em_pg_rank(d->pg), names ? names : "(out of memory)");
    free(names);
    reset_iteration(d);
    return EM_ERR_STATE;
  }
  if (d->rebuild_pending) EM_CHECK(rebuild(d));
  reset_iteration(d); /* after a rebuild: the new buckets' pending counts */
  if (!d->o.no_broadcast_buffers) EM_CHECK(broadcast_buffers(d));
  if (d->o.gradient_as_bucket_view) EM_CHECK(point_grads_at_buckets(d));
  return EM_OK;
}

em_status em_ddp_post_forward(em_ddp *d, int nout, em_tensor *const *outputs) {
  if (!em_is_grad_enabled() || !em_module_is_training(d->m) || d->no_sync) return EM_OK;
  d->prepared = true;
  if (!d->o.find_unused_parameters && !d->o.static_graph) return EM_OK;
  if (d->o.static_graph && d->static_known) { /* the unused set of iteration 1 */
    for (int i = 0; i < d->np; i++)
      if (d->static_unused[i]) EM_CHECK(mark_ready(d, i, true));
    return EM_OK;
  }
  if (!d->o.find_unused_parameters) return EM_OK;
  em_tensor **leaves;
  int n;
  EM_CHECK(em_ag_reachable_leaves(nout, outputs, &leaves, &n));
  em_status st = EM_OK;
  for (int i = 0; i < d->np && !st; i++) {
    bool used = false;
    for (int j = 0; j < n && !used; j++) used = leaves[j] == d->ps[i].p;
    if (d->o.static_graph) d->static_unused[i] = !used;
    if (!used) st = mark_ready(d, i, true);
  }
  em_tensor_list_release(leaves, n);
  return st;
}

em_tensor *em_ddp_forward(em_ddp *d, int nin, em_tensor *const *in) {
  if (em_ddp_pre_forward(d)) return NULL;
  em_tensor *out = em_module_forward_n(d->m, nin, in);
  if (out && em_ddp_post_forward(d, 1, &out)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

bool em_ddp_set_no_sync(em_ddp *d, bool no_sync) {
  bool prev = d->no_sync;
  d->no_sync = no_sync;
  return prev;
}

/* ---- comm hooks ------------------------------------------------------------------------------ */

em_work *em_ddp_hook_allreduce(void *state, em_pg *pg, em_ddp_bucket *bucket) {
  return em_pg_allreduce(pg, bucket->buffer, EM_REDUCE_AVG, NULL);
}

static em_work *compress(em_pg *pg, em_ddp_bucket *bucket, em_dtype dt) {
  /* divide first so the sum cannot overflow the narrow type */
  em_tensor *scaled = em_tensor_div_scalar(bucket->buffer, em_scalar_int(em_pg_size(pg)));
  em_tensor *c = scaled ? em_tensor_to_dtype(scaled, dt) : NULL;
  em_tensor_release(scaled);
  if (!c) return NULL;
  em_work *w = em_pg_allreduce(pg, c, EM_REDUCE_SUM, NULL);
  if (!w) {
    em_tensor_release(c);
    return NULL;
  }
  bucket->result = c;
  return w;
}

em_work *em_ddp_hook_fp16_compress(void *state, em_pg *pg, em_ddp_bucket *bucket) {
  return compress(pg, bucket, EM_FLOAT16);
}
em_work *em_ddp_hook_bf16_compress(void *state, em_pg *pg, em_ddp_bucket *bucket) {
  return compress(pg, bucket, EM_BFLOAT16);
}

em_status em_ddp_register_comm_hook(em_ddp *d, em_ddp_comm_hook hook, void *state,
                                    void (*state_free)(void *state)) {
  if (!hook) return em__set_error(EM_ERR_INVALID, "register_comm_hook: NULL hook");
  if (d->stats.iterations > 0 || d->prepared) {
    if (state_free) state_free(state);
    return em__set_error(EM_ERR_STATE, "register_comm_hook: a comm hook can only be registered "
                         "before the first forward/backward");
  }
  if (d->hook_free) d->hook_free(d->hook_state);
  d->hook = hook;
  d->hook_state = state;
  d->hook_free = state_free;
  return EM_OK;
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

em_ddp *em_ddp_create(em_module *m, em_pg *pg, const em_ddp_options *o) {
  if (!m || !pg) return EM_FAIL(EM_ERR_INVALID, "DDP: NULL module or process group");
  if (em_pg_rank(pg) < 0)
    return EM_FAIL(EM_ERR_INVALID, "DDP: this rank is not a member of the process group");
  em_ddp *d = calloc(1, sizeof *d);
  if (!d) return EM_FAIL(EM_ERR_NOMEM, "DDP: out of memory");
  d->m = em_module_retain(m);
  d->pg = em_pg_retain(pg);
  if (o) d->o = *o;
  if (d->o.bucket_cap_bytes <= 0) d->o.bucket_cap_bytes = DEFAULT_CAP;
  if (d->o.first_bucket_cap_bytes <= 0) d->o.first_bucket_cap_bytes = DEFAULT_FIRST_CAP;
  d->hook = em_ddp_hook_allreduce;
  em_named_tensors params = {0};
  em_status st = em_module_named_parameters(m, &params);
  if (st) goto fail;
  d->ps = calloc((size_t)params.n + 1, sizeof *d->ps);
  d->ready = calloc((size_t)params.n + 1, sizeof *d->ready);
  d->ready_order = calloc((size_t)params.n + 1, sizeof *d->ready_order);
  d->static_unused = calloc((size_t)params.n + 1, sizeof *d->static_unused);
  if (!d->ps || !d->ready || !d->ready_order || !d->static_unused) {
    st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
    goto fail;
  }
  for (int i = 0; i < params.n; i++) {
    if (!params.tensors[i]->requires_grad) continue;
    d->ps[d->np].p = em_tensor_retain(params.tensors[i]);
    d->ps[d->np].name = strdup(params.names[i]);
    d->ps[d->np].hook = -1;
    if (!d->ps[d->np].name) {
      st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      d->np++;
      goto fail;
    }
    d->np++;
  }
  EM_CHECK_GOTO(verify_params(d), st, fail);
  {
    em_tensor **ts = malloc(sizeof *ts * (size_t)(d->np + 1));
    if (!ts) {
      st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      goto fail;
    }
    for (int i = 0; i < d->np; i++) ts[i] = d->ps[i].p;
    st = broadcast_list(d, d->np, ts);
    free(ts);
    if (st) goto fail;
  }
  EM_CHECK_GOTO(broadcast_buffers(d), st, fail);
  {
    int *order = malloc(sizeof(int) * (size_t)(d->np + 1));
    if (!order) {
      st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      goto fail;
    }
    for (int i = 0; i < d->np; i++) order[i] = d->np - 1 - i; /* reverse registration order */
    st = build_buckets(d, order);
    free(order);
    if (st) goto fail;
  }
  if (d->o.gradient_as_bucket_view) EM_CHECK_GOTO(point_grads_at_buckets(d), st, fail);
  for (int i = 0; i < d->np; i++) {
    hook_ctx *h = malloc(sizeof *h);
    if (!h) {
      st = em__set_error(EM_ERR_NOMEM, "DDP: out of memory");
      goto fail;
    }
    *h = (hook_ctx){d, i};
    d->ps[i].hook = em_tensor_register_post_accumulate_grad_hook(d->ps[i].p, on_grad_ready, h, free);
    if (d->ps[i].hook < 0) {
      free(h);
      st = em_last_status();
      goto fail;
    }
  }
  em_named_tensors_free(&params);
  reset_iteration(d);
  return d;
fail:
  em_named_tensors_free(&params);
  em_ddp_free(d);
  if (!st) st = EM_ERR_INTERNAL;
  return NULL;
}

void em_ddp_free(em_ddp *d) {
  if (!d) return;
  for (int b = 0; b < d->nb; b++) { /* finish in-flight work before freeing buffers */
    if (d->bs[b].work) em_work_wait(d->bs[b].work, EM_PG_DEFAULT_TIMEOUT);
  }
  for (int i = 0; i < d->np; i++) {
    if (d->ps[i].hook >= 0) em_tensor_remove_hook(d->ps[i].p, d->ps[i].hook);
    if (d->o.gradient_as_bucket_view && d->bs && grad_is_view(d, i)) {
      /* leave the user a gradient that does not alias our buffer */
      em_tensor *g = em_tensor_grad(d->ps[i].p);
      em_tensor *c = g ? em_tensor_clone(g) : NULL;
      em_tensor_set_grad(d->ps[i].p, c);
      em_tensor_release(c);
      em_tensor_release(g);
    }
    em_tensor_release(d->ps[i].p);
    free(d->ps[i].name);
  }
  free_buckets(d);
  if (d->hook_free) d->hook_free(d->hook_state);
  free(d->ps), free(d->ready), free(d->ready_order), free(d->static_unused);
  em_module_release(d->m);
  em_pg_release(d->pg);
  free(d);
}

em_module *em_ddp_module(em_ddp *d) { return d->m; }
em_ddp_stats em_ddp_get_stats(em_ddp *d) { return d->stats; }

int em_ddp_bucket_params(em_ddp *d, int b, int *indices, int cap) {
  if (b < 0 || b >= d->nb) return 0;
  int n = d->bs[b].n < cap ? d->bs[b].n : cap;
  for (int j = 0; j < n; j++) indices[j] = d->bs[b].params[j];
  return d->bs[b].n;
}
