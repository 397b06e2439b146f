/* The "auto" backend ("gloo" is an alias): shared memory inside a host,
 * tcp across hosts, composed hierarchically — what a PyTorch script that
 * asks for "gloo" gets from ember on CPUs.
 *
 * From the host ids the front end gives (hostname + network namespace):
 *   - every rank on one host: the shm backend alone;
 *   - one rank per host: the tcp backend alone;
 *   - otherwise three sub-groups, each made through the registry
 *     (em__pg_backend_find) over its own prefix of the group's store:
 *       local   shm among the ranks of this host ("hier/local<h>/")
 *       cross   tcp among the host leaders, the lowest rank of each host
 *               ("hier/cross/"; leaders only)
 *       all     tcp over every rank ("hier/all/"), for what does not
 *               compose (see below). It is made eagerly: a lazily made one
 *               would need every rank to arrive, and a send/recv between
 *               two hosts only involves two.
 *     Hosts are numbered in the order of their lowest rank; local ranks
 *     follow global rank order.
 *
 * Composition (hierarchical mode):
 *   allreduce       local reduce to the leader, allreduce among leaders,
 *                   local broadcast (avg: sums, the leader divides by the
 *                   world size once)
 *   broadcast       on the root's host a local broadcast from the root (if
 *                   it is not the leader), a broadcast among leaders, a
 *                   local broadcast on the other hosts
 *   reduce          local reduce to the leader (into scratch unless the
 *                   leader is the root), reduce among leaders to the root's
 *                   host, then leader -> root over shm if the root is not
 *                   its host's leader
 *   barrier         local, leaders, local
 *   allgather and reduce_scatter, when the layout is regular (every host
 *                   has L ranks and host h holds ranks h*L .. h*L+L-1, as
 *                   trainrun / torchrun place them): local gather / reduce
 *                   to the leader, allgather / reduce_scatter of L-chunk
 *                   blocks among leaders, local broadcast / scatter;
 *                   otherwise over "all"
 *   gather, scatter, all_to_all: over "all" (tcp over every rank)
 *   send/recv       over shm when both ranks share a host, else over "all"
 *
 * Errors: a sub-group's error fails the collective; the hier backend then
 * aborts every sub-group (the tcp ones tell their peers), so ranks on other
 * hosts fail at once instead of at their timeout. Local groups print global
 * ranks; errors from the leaders' group are prefixed with the leader ranks'
 * global numbers. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/pg_impl.h"

/* pg_shm.c: print global ranks in a local group's messages. */
void em__pg_shm_set_labels(void *ctx, const int *labels);

#define TAG_REDUCE_FWD (-1001) /* leader -> root of reduce (user tags are >= 0) */

typedef enum { MODE_SINGLE, MODE_FLAT, MODE_HIER } hier_mode;

typedef struct sub {
  void *ctx;
  const em_pg_backend_ops *ops;
} sub;

typedef struct hier {
  const em_pg_backend_ops *ops;
  hier_mode mode;
  int rank, size;
  int nhosts, host;  /* my host's index */
  int lrank, lsize;  /* my rank / size inside my host */
  int *host_of;      /* rank -> host index */
  int *lrank_of;     /* rank -> local rank */
  int *leader_of;    /* host -> its lowest (global) rank */
  int *granks;       /* global (world) rank of each group rank, for messages */
  bool regular;      /* host h holds ranks h*L .. h*L+L-1 */
  sub local, cross, all;
  _Atomic int aborted;
} hier;

static em_status sub_run(hier *h, sub *s, em_coll *parent, em_coll c) {
  c.seq = parent->seq;
  c.deadline_ms = parent->deadline_ms;
  c.device = parent->device;
  return s->ops->run(s->ctx, &c);
}

static em_coll mk(em_coll_kind k, em_dtype dt, int64_t n) {
  em_coll c;
  memset(&c, 0, sizeof c);
  c.kind = k;
  c.dtype = dt;
  c.count = n;
  return c;
}

/* Prefixes an error of the leaders' group with who its ranks are. */
static em_status cross_err(hier *h, em_status st) {
  char map[256];
  size_t o = 0;
  for (int i = 0; i < h->nhosts && o + 16 < sizeof map; i++)
    o += (size_t)snprintf(map + o, sizeof map - o, "%s%d", i ? ", " : "",
                          h->granks[h->leader_of[i]]);
  em__prefix_error("auto backend: between hosts (leader ranks 0..%d are ranks %s)",
                   h->nhosts - 1, map);
  return st;
}

static em_status cross_run(hier *h, em_coll *parent, em_coll c) {
  em_status st = sub_run(h, &h->cross, parent, c);
  return st ? cross_err(h, st) : EM_OK;
}

static em_status h_allreduce(hier *h, em_coll *c) {
  em_reduce_op op = c->op == EM_REDUCE_AVG ? EM_REDUCE_SUM : c->op;
  bool leader = h->lrank == 0;
  em_coll r = mk(EM_COLL_REDUCE, c->dtype, c->count);
  r.op = op;
  r.root = 0;
  r.in = c->in;
  r.out = leader ? c->out : NULL;
  if (h->lsize > 1) EM_CHECK(sub_run(h, &h->local, c, r));
  else if (c->in != c->out && c->count) memcpy(c->out, c->in, (size_t)c->count * em_dtype_size(c->dtype));
  if (leader) {
    em_coll a = mk(EM_COLL_ALLREDUCE, c->dtype, c->count);
    a.op = op;
    a.in = a.out = c->out;
    EM_CHECK(cross_run(h, c, a));
    if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, h->size);
  }
  if (h->lsize > 1) {
    em_coll b = mk(EM_COLL_BROADCAST, c->dtype, c->count);
    b.root = 0;
    b.in = b.out = c->out;
    EM_CHECK(sub_run(h, &h->local, c, b));
  }
  return EM_OK;
}

static em_status h_broadcast(hier *h, em_coll *c) {
  int rh = h->host_of[c->root], rl = h->lrank_of[c->root];
  em_coll b = mk(EM_COLL_BROADCAST, c->dtype, c->count);
  b.in = b.out = c->out;
  bool done_local = false;
  if (h->host == rh && rl != 0 && h->lsize > 1) {
    b.root = rl;
    EM_CHECK(sub_run(h, &h->local, c, b));
    done_local = true;
  }
  if (h->lrank == 0) {
    b.root = rh;
    EM_CHECK(cross_run(h, c, b));
  }
  if (!done_local && h->lsize > 1) {
    b.root = 0;
    EM_CHECK(sub_run(h, &h->local, c, b));
  }
  return EM_OK;
}

static em_status h_reduce(hier *h, em_coll *c) {
  const size_t nb = (size_t)c->count * em_dtype_size(c->dtype);
  em_reduce_op op = c->op == EM_REDUCE_AVG ? EM_REDUCE_SUM : c->op;
  int rh = h->host_of[c->root], rl = h->lrank_of[c->root];
  bool leader = h->lrank == 0, me_root = h->rank == c->root;
  em_status st = EM_OK;
  char *tmp = NULL, *acc = NULL;
  if (leader) {
    if (me_root) {
      acc = c->out;
    } else {
      tmp = malloc(nb ? nb : 1);
      if (!tmp) return em__set_error(EM_ERR_NOMEM, "auto backend: reduce: out of memory");
      acc = tmp;
    }
  }
  em_coll r = mk(EM_COLL_REDUCE, c->dtype, c->count);
  r.op = op;
  r.root = 0;
  r.in = c->in;
  r.out = acc;
  if (h->lsize > 1)
    EM_CHECK_GOTO(sub_run(h, &h->local, c, r), st, done);
  else if (acc != c->in && nb)
    memcpy(acc, c->in, nb);
  if (leader) {
    em_coll x = mk(EM_COLL_REDUCE, c->dtype, c->count);
    x.op = op;
    x.root = rh;
    x.in = acc;
    x.out = h->host == rh ? acc : NULL;
    EM_CHECK_GOTO(cross_run(h, c, x), st, done);
  }
  if (h->host == rh && rl != 0) {
    /* the leader holds the result; the root is another rank of its host */
    if (leader) {
      em_coll s = mk(EM_COLL_SEND, c->dtype, c->count);
      s.root = rl;
      s.tag = TAG_REDUCE_FWD;
      s.in = acc;
      EM_CHECK_GOTO(sub_run(h, &h->local, c, s), st, done);
    } else if (me_root) {
      em_coll s = mk(EM_COLL_RECV, c->dtype, c->count);
      s.root = 0;
      s.tag = TAG_REDUCE_FWD;
      s.out = c->out;
      EM_CHECK_GOTO(sub_run(h, &h->local, c, s), st, done);
    }
  }
  if (me_root && c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, h->size);
done:
  free(tmp);
  return st;
}

static em_status h_barrier(hier *h, em_coll *c) {
  em_coll b = mk(EM_COLL_BARRIER, c->dtype, 0);
  if (h->lsize > 1) EM_CHECK(sub_run(h, &h->local, c, b));
  if (h->lrank == 0) EM_CHECK(cross_run(h, c, b));
  if (h->lsize > 1) EM_CHECK(sub_run(h, &h->local, c, b));
  return EM_OK;
}

/* Regular layout only: host h's L ranks hold chunks h*L .. h*L+L-1. */
static em_status h_allgather(hier *h, em_coll *c) {
  const size_t nb = (size_t)c->count * em_dtype_size(c->dtype);
  const int L = h->lsize;
  char *block = (char *)c->out + (size_t)h->host * (size_t)L * nb;
  if (L > 1) {
    em_coll g = mk(EM_COLL_GATHER, c->dtype, c->count);
    g.root = 0;
    g.in = c->in;
    g.out = h->lrank == 0 ? block : NULL;
    EM_CHECK(sub_run(h, &h->local, c, g));
  } else if (nb && block != c->in) {
    memcpy(block, c->in, nb);
  }
  if (h->lrank == 0) {
    em_coll a = mk(EM_COLL_ALLGATHER, c->dtype, c->count * L);
    a.in = block;
    a.out = c->out;
    EM_CHECK(cross_run(h, c, a));
  }
  if (L > 1) {
    em_coll b = mk(EM_COLL_BROADCAST, c->dtype, c->count * h->size);
    b.root = 0;
    b.in = b.out = c->out;
    EM_CHECK(sub_run(h, &h->local, c, b));
  }
  return EM_OK;
}

/* Regular layout only. */
static em_status h_reduce_scatter(hier *h, em_coll *c) {
  const size_t es = em_dtype_size(c->dtype), nb = (size_t)c->count * es;
  const int L = h->lsize;
  em_reduce_op op = c->op == EM_REDUCE_AVG ? EM_REDUCE_SUM : c->op;
  bool leader = h->lrank == 0;
  em_status st = EM_OK;
  char *all = NULL, *mine = NULL;
  if (leader) {
    all = malloc(nb * (size_t)h->size + 1);
    mine = malloc(nb * (size_t)L + 1);
    if (!all || !mine) {
      st = em__set_error(EM_ERR_NOMEM, "auto backend: reduce_scatter: out of memory");
      goto done;
    }
  }
  em_coll r = mk(EM_COLL_REDUCE, c->dtype, c->count * h->size);
  r.op = op;
  r.root = 0;
  r.in = c->in;
  r.out = all;
  if (L > 1)
    EM_CHECK_GOTO(sub_run(h, &h->local, c, r), st, done);
  else if (nb)
    memcpy(all, c->in, nb * (size_t)h->size);
  if (leader) {
    em_coll x = mk(EM_COLL_REDUCE_SCATTER, c->dtype, c->count * L);
    x.op = op;
    x.in = all;
    x.out = mine;
    EM_CHECK_GOTO(cross_run(h, c, x), st, done);
    if (c->op == EM_REDUCE_AVG)
      em__reduce_avg_finish(mine, c->count * L, c->dtype, h->size);
  }
  if (L > 1) {
    em_coll s = mk(EM_COLL_SCATTER, c->dtype, c->count);
    s.root = 0;
    s.in = mine;
    s.out = c->out;
    EM_CHECK_GOTO(sub_run(h, &h->local, c, s), st, done);
  } else if (nb) {
    memcpy(c->out, mine, nb);
  }
done:
  free(all);
  free(mine);
  return st;
}

static em_status h_p2p(hier *h, em_coll *c) {
  int peer = c->root;
  if (peer < 0 || peer >= h->size)
    return em__set_error(EM_ERR_INVALID, "auto backend: %s: rank %d out of range [0, %d)",
                         em__coll_name(c->kind), peer, h->size);
  if (h->host_of[peer] == h->host) {
    em_coll l = *c;
    l.root = h->lrank_of[peer];
    return h->local.ops->run(h->local.ctx, &l);
  }
  return h->all.ops->run(h->all.ctx, c);
}

static em_status hier_dispatch(hier *h, em_coll *c) {
  switch (h->mode) {
    case MODE_SINGLE: return h->local.ops->run(h->local.ctx, c);
    case MODE_FLAT: return h->all.ops->run(h->all.ctx, c);
    default: break;
  }
  switch (c->kind) {
    case EM_COLL_ALLREDUCE: return h_allreduce(h, c);
    case EM_COLL_BROADCAST: return h_broadcast(h, c);
    case EM_COLL_REDUCE: return h_reduce(h, c);
    case EM_COLL_BARRIER: return h_barrier(h, c);
    case EM_COLL_ALLGATHER:
      return h->regular ? h_allgather(h, c) : h->all.ops->run(h->all.ctx, c);
    case EM_COLL_REDUCE_SCATTER:
      return h->regular ? h_reduce_scatter(h, c) : h->all.ops->run(h->all.ctx, c);
    case EM_COLL_SEND:
    case EM_COLL_RECV: return h_p2p(h, c);
    default: return h->all.ops->run(h->all.ctx, c);
  }
}

static void sub_abort(sub *s, em_status st, const char *why) {
  if (s->ops) s->ops->abort(s->ctx, st, why);
}

static void hier_abort(void *ctx, em_status st, const char *reason) {
  hier *h = ctx;
  atomic_store(&h->aborted, 1);
  sub_abort(&h->local, st, reason);
  sub_abort(&h->cross, st, reason);
  sub_abort(&h->all, st, reason);
}

static em_status hier_run(void *ctx, em_coll *c) {
  hier *h = ctx;
  if (atomic_load(&h->aborted))
    return em__set_error(EM_ERR_COMM, "auto backend: %s: the group was aborted",
                         em__coll_name(c->kind));
  if (c->kind == EM_COLL_ALLREDUCE || c->kind == EM_COLL_REDUCE ||
      c->kind == EM_COLL_REDUCE_SCATTER)
    EM_CHECK(em__reduce_op_check(em__coll_name(c->kind), c->op, c->dtype));
  em_status st = hier_dispatch(h, c);
  if (st != EM_OK && h->mode == MODE_HIER) {
    /* a sub-group failed: the others must not wait for us */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    hier_abort(h, st, msg);
    em__set_error(st, "%s", msg);
  }
  return st;
}

static void hier_destroy(void *ctx) {
  hier *h = ctx;
  if (!h) return;
  if (h->local.ops) h->local.ops->destroy(h->local.ctx);
  if (h->cross.ops) h->cross.ops->destroy(h->cross.ctx);
  if (h->all.ops) h->all.ops->destroy(h->all.ctx);
  free(h->host_of);
  free(h->lrank_of);
  free(h->leader_of);
  free(h->granks);
  free(h);
}

static const em_pg_backend_ops auto_ops = {
    .name = "auto", .run = hier_run, .abort = hier_abort, .destroy = hier_destroy,
    .devices = EM_PG_DEV_CPU, .inline_max_bytes = 0};
static const em_pg_backend_ops gloo_ops = {
    .name = "gloo", .run = hier_run, .abort = hier_abort, .destroy = hier_destroy,
    .devices = EM_PG_DEV_CPU, .inline_max_bytes = 0};

/* Makes a sub-group of n ranks (members[i] = group rank of sub rank i) over
 * store prefix pfx. */
static em_status make_sub(hier *h, const em_pg_backend_init *in, const char *backend,
                          const char *pfx, const char *suffix, int n, const int *members,
                          int me, sub *out) {
  em_status st = EM_OK;
  const char **hosts = NULL;
  int *gr = NULL;
  char *name = NULL;
  em_store *ps = NULL;
  em_pg_backend_create_fn fn = em__pg_backend_find(backend);
  if (!fn) return em_last_status() ? em_last_status() : EM_ERR_INVALID;
  hosts = malloc(sizeof(char *) * (size_t)n);
  gr = malloc(sizeof(int) * (size_t)n);
  size_t gl = strlen(in->group_name ? in->group_name : "pg") + strlen(suffix) + 2;
  name = malloc(gl);
  if (!hosts || !gr || !name) {
    st = em__set_error(EM_ERR_NOMEM, "auto backend: out of memory");
    goto done;
  }
  snprintf(name, gl, "%s.%s", in->group_name ? in->group_name : "pg", suffix);
  for (int i = 0; i < n; i++) {
    hosts[i] = in->host_ids ? in->host_ids[members[i]] : "";
    gr[i] = h->granks[members[i]];
  }
  ps = em_store_prefix_create(in->store, pfx);
  EM_CHECK_PTR_GOTO(ps, st, done);
  em_pg_backend_init si = *in;
  si.store = ps;
  si.rank = me;
  si.size = n;
  si.host_ids = hosts;
  si.global_ranks = gr;
  si.group_name = name;
  st = fn(&si, &out->ctx, &out->ops);
  if (st == EM_OK && strcmp(backend, "shm") == 0) em__pg_shm_set_labels(out->ctx, gr);
done:
  em_store_release(ps);
  free(hosts);
  free(gr);
  free(name);
  return st;
}

static em_status hier_create(const em_pg_backend_init *in, void **ctx,
                             const em_pg_backend_ops **ops, const em_pg_backend_ops *mine) {
  if (!in || !ctx || !ops || in->size < 1 || in->rank < 0 || in->rank >= in->size)
    return em__set_error(EM_ERR_INVALID, "auto backend: bad arguments");
  const int W = in->size;
  em_status st = EM_OK;
  int *members = NULL;
  hier *h = calloc(1, sizeof *h);
  if (!h) return em__set_error(EM_ERR_NOMEM, "auto backend: out of memory");
  h->ops = mine;
  h->rank = in->rank;
  h->size = W;
  h->host_of = malloc(sizeof(int) * (size_t)W);
  h->lrank_of = malloc(sizeof(int) * (size_t)W);
  h->leader_of = malloc(sizeof(int) * (size_t)W);
  h->granks = malloc(sizeof(int) * (size_t)W);
  members = malloc(sizeof(int) * (size_t)W);
  if (!h->host_of || !h->lrank_of || !h->leader_of || !h->granks || !members) {
    st = em__set_error(EM_ERR_NOMEM, "auto backend: out of memory");
    goto fail;
  }
  /* hosts in order of their lowest rank; local ranks in rank order */
  int *count = members; /* reused as per-host counters */
  for (int r = 0; r < W; r++) {
    h->granks[r] = in->global_ranks ? in->global_ranks[r] : r;
    int hh = -1;
    for (int q = 0; q < r && hh < 0; q++)
      if (!in->host_ids || strcmp(in->host_ids[q], in->host_ids[r]) == 0) hh = h->host_of[q];
    if (hh < 0) {
      hh = h->nhosts++;
      h->leader_of[hh] = r;
      count[hh] = 0;
    }
    h->host_of[r] = hh;
    h->lrank_of[r] = count[hh]++;
  }
  h->host = h->host_of[h->rank];
  h->lrank = h->lrank_of[h->rank];
  h->lsize = count[h->host];
  h->regular = true;
  for (int r = 0; r < W; r++)
    if (count[h->host_of[r]] != h->lsize || h->host_of[r] != r / h->lsize) h->regular = false;

  if (h->nhosts == 1) {
    h->mode = MODE_SINGLE;
    for (int r = 0; r < W; r++) members[r] = r;
    EM_CHECK_GOTO(make_sub(h, in, "shm", "hier/local0", "local0", W, members, h->rank, &h->local),
                  st, fail);
  } else if (h->nhosts == W) {
    h->mode = MODE_FLAT;
    for (int r = 0; r < W; r++) members[r] = r;
    EM_CHECK_GOTO(make_sub(h, in, "tcp", "hier/all", "all", W, members, h->rank, &h->all), st,
                  fail);
  } else {
    h->mode = MODE_HIER;
    char pfx[48], sfx[32];
    int n = 0;
    for (int r = 0; r < W; r++)
      if (h->host_of[r] == h->host) members[n++] = r;
    snprintf(pfx, sizeof pfx, "hier/local%d", h->host);
    snprintf(sfx, sizeof sfx, "local%d", h->host);
    EM_CHECK_GOTO(make_sub(h, in, "shm", pfx, sfx, n, members, h->lrank, &h->local), st, fail);
    if (h->lrank == 0) {
      for (int i = 0; i < h->nhosts; i++) members[i] = h->leader_of[i];
      EM_CHECK_GOTO(make_sub(h, in, "tcp", "hier/cross", "cross", h->nhosts, members, h->host,
                             &h->cross),
                    st, fail);
    }
    for (int r = 0; r < W; r++) members[r] = r;
    EM_CHECK_GOTO(make_sub(h, in, "tcp", "hier/all", "all", W, members, h->rank, &h->all), st,
                  fail);
  }
  free(members);
  *ctx = h;
  *ops = mine;
  return EM_OK;
fail:
  free(members);
  {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    hier_abort(h, st, msg);
    hier_destroy(h);
    em__set_error(st, "%s", msg);
  }
  return st;
}

em_status em__pg_hier_create(const em_pg_backend_init *in, void **ctx,
                             const em_pg_backend_ops **ops) {
  return hier_create(in, ctx, ops, &auto_ops);
}

/* The "gloo" alias: the same backend under PyTorch's name. */
em_status em__pg_hier_create_gloo(const em_pg_backend_init *in, void **ctx,
                                  const em_pg_backend_ops **ops);
em_status em__pg_hier_create_gloo(const em_pg_backend_init *in, void **ctx,
                                  const em_pg_backend_ops **ops) {
  return hier_create(in, ctx, ops, &gloo_ops);
}
