/* What node 0's agent does besides being an agent: it decides the
 * rendezvous (who joined, node ranks, the world, or an error naming who is
 * missing), ends a round ("ok" once every node is done) and declares nodes
 * whose heartbeat stopped lost. It works on the store it hosts, through the
 * same asynchronous operations as everyone (kv.c, direct mode). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "launcher/agent_impl.h"

#define PROGRESS_EVERY_MS 10000 /* "still waiting for ..." during a rendezvous */

static void coord_finalize(agent *a);

static void on_hb_get(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st != EM_OK || !op->found || !a->nodes || a->ph == PH_DONE) return;
  int nr = -1;
  /* the node rank is the key's last component */
  const char *slash = strrchr(op->key, '/');
  if (!slash || sscanf(slash + 1, "%d", &nr) != 1 || nr < 0 || nr >= a->nnodes) return;
  node *n = &a->nodes[nr];
  if (strncmp(n->hb_last, op->out, sizeof n->hb_last - 1) != 0) {
    snprintf(n->hb_last, sizeof n->hb_last, "%s", op->out);
    n->hb_seen = uv_hrtime();
  }
}

void tr__on_hb_check(uv_timer_t *t) {
  agent *a = t->data;
  if (!a->nodes || a->end != END_NONE) return;
  uint64_t now = uv_hrtime();
  for (int nr = 0; nr < a->nnodes; nr++) {
    node *n = &a->nodes[nr];
    if (nr == a->node_rank || n->lost) continue;
    double silent = (double)(now - n->hb_seen) / 1e9;
    if (silent > a->o->heartbeat_timeout) {
      n->lost = true;
      if (a->joined && n->slot >= 0 && n->slot < a->o->nnodes_max) a->joined[n->slot].lost = true;
      char value[700];
      snprintf(value, sizeof value,
               "lost %d %s node %d (host %s, ranks %d-%d) is lost: no heartbeat for %.1f s", nr,
               n->host, nr, n->host, n->rank_offset, n->rank_offset + n->nproc - 1, silent);
      tr_msg("error: node %d (host %s) is lost: no heartbeat for %.1f s (--heartbeat-timeout %g)",
             nr, n->host, silent, a->o->heartbeat_timeout);
      tr__publish_end(a, value);
      return;
    }
    tr__kv(a, TR_KV_GET, tr__rkey(a, "hb/%d", nr), NULL, 0, on_hb_get);
  }
}

/* ---- the coordinator: rendezvous ------------------------------------------------------- */

static void coord_cancel_node_ops(agent *a) {
  for (int i = 0; a->node_ops && i < a->o->nnodes_max; i++) {
    tr_kvop *op = a->node_ops[i];
    a->node_ops[i] = NULL;
    tr_kv_cancel(op);
  }
}

/* "host0 (node 0), host1, ..." of the joined nodes, and what is missing. */
static void coord_progress(agent *a, char *buf, size_t size) {
  size_t off = 0;
  int shown = 0;
  for (int s = 0; s < a->o->nnodes_max && off < size; s++) {
    node *n = &a->joined[s];
    if (n->slot < 0) continue;
    if (shown++ == 8) {
      off += (size_t)snprintf(buf + off, size - off, ", ...");
      break;
    }
    off += (size_t)snprintf(buf + off, size - off, "%s%s", shown > 1 ? ", " : "", n->host);
    if (n->requested >= 0 && off < size)
      off += (size_t)snprintf(buf + off, size - off, " (node %d)", n->requested);
  }
  int missing = a->o->nnodes_min - a->njoined;
  if (missing <= 0 || off >= size) return;
  off += (size_t)snprintf(buf + off, size - off, "; missing %d node%s", missing,
                          missing == 1 ? "" : "s");
  if (a->o->slurm_hosts && off < size) {
    /* Slurm told us who should come: name them */
    bool first = true;
    for (size_t h = 0; h < a->o->nslurm_hosts && off < size; h++) {
      bool here = false;
      for (int s = 0; s < a->o->nnodes_max && !here; s++)
        here = a->joined[s].slot >= 0 && !strcmp(a->joined[s].host, a->o->slurm_hosts[h]);
      if (here) continue;
      off += (size_t)snprintf(buf + off, size - off, "%s%s", first ? ": " : ", ",
                              a->o->slurm_hosts[h]);
      first = false;
    }
  } else if (off < size) {
    /* with fixed node ranks: name the ranks nobody claimed */
    bool all_fixed = true;
    for (int s = 0; s < a->o->nnodes_max; s++)
      if (a->joined[s].slot >= 0 && a->joined[s].requested < 0 && s != a->slot) all_fixed = false;
    if (all_fixed) {
      bool first = true;
      for (int r = 0; r < a->o->nnodes_max && off < size; r++) {
        bool claimed = r == 0;
        for (int s = 0; s < a->o->nnodes_max && !claimed; s++)
          claimed = a->joined[s].slot >= 0 && a->joined[s].requested == r;
        if (claimed) continue;
        off += (size_t)snprintf(buf + off, size - off, "%snode rank %d", first ? " (" : ", ", r);
        first = false;
      }
      if (!first && off < size) snprintf(buf + off, size - off, ")");
    }
  }
}

static void on_progress(uv_timer_t *t) {
  agent *a = t->data;
  char buf[1024];
  coord_progress(a, buf, sizeof buf);
  tr_msg("rendezvous round %d: still waiting: %d of %d node%s joined: %s", a->round, a->njoined,
         a->o->nnodes_min, a->o->nnodes_min == 1 ? "" : "s", buf);
}

void tr__coord_fail_rdzv(agent *a, const char *msg) {
  char *v = malloc(strlen(msg) + 8);
  if (v) {
    sprintf(v, "error %s", msg);
    tr__kv(a, TR_KV_SET, tr__rkey(a, "world"), v, 0, NULL);
    free(v);
  }
  a->finalized = true;
  coord_cancel_node_ops(a);
  tr__timer_stop(&a->rdzv_timer);
  tr__timer_stop(&a->last_call_timer);
  tr__timer_stop(&a->progress_timer);
  /* our own world wait reads the error and ends the job */
}

static void on_rdzv_timeout(uv_timer_t *t) {
  agent *a = t->data;
  if (a->finalized) return;
  if (a->njoined >= a->o->nnodes_min) {
    coord_finalize(a);
    return;
  }
  char prog[1024], msg[1300];
  coord_progress(a, prog, sizeof prog);
  snprintf(msg, sizeof msg,
           "rendezvous round %d failed after %g s (--rdzv-timeout): %d of %d node%s joined: %s",
           a->round, a->o->rdzv_timeout, a->njoined, a->o->nnodes_min,
           a->o->nnodes_min == 1 ? "" : "s", prog);
  tr__coord_fail_rdzv(a, msg);
}

static void on_last_call(uv_timer_t *t) {
  agent *a = t->data;
  if (!a->finalized) coord_finalize(a);
}

static void on_node_joined(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  int slot = -1;
  for (int i = 0; a->node_ops && i < a->o->nnodes_max; i++)
    if (a->node_ops[i] == op) slot = i;
  if (slot < 0) return; /* cancelled */
  a->node_ops[slot] = NULL;
  if (a->finalized) return;
  if (op->st != EM_OK) {
    char msg[600];
    snprintf(msg, sizeof msg, "rendezvous failed: %s", op->err);
    tr__coord_fail_rdzv(a, msg);
    return;
  }
  node *n = &a->joined[slot];
  if (sscanf(op->out, "%255s %d %d %ld", n->host, &n->nproc, &n->requested, &n->pid) != 4 ||
      n->nproc < 1) {
    char msg[600];
    snprintf(msg, sizeof msg, "rendezvous failed: a node sent a malformed join: '%.100s'",
             op->out);
    tr__coord_fail_rdzv(a, msg);
    return;
  }
  n->slot = slot;
  a->njoined++;
  if (a->o->nnodes_max > 1) {
    char prog[1024];
    coord_progress(a, prog, sizeof prog);
    tr_msg("rendezvous round %d: %d of %d node%s joined: %s", a->round, a->njoined,
           a->o->nnodes_max, a->o->nnodes_max == 1 ? "" : "s", prog);
  }
  if (a->njoined == a->o->nnodes_max) coord_finalize(a);
  else if (a->njoined >= a->o->nnodes_min && !uv_is_active((uv_handle_t *)&a->last_call_timer))
    uv_timer_start(&a->last_call_timer, on_last_call, (uint64_t)(a->o->last_call * 1000), 0);
}

void tr__coord_rdzv_begin(agent *a) {
  int max = a->o->nnodes_max;
  free(a->joined);
  free(a->node_ops);
  a->joined = calloc((size_t)max, sizeof *a->joined);
  a->node_ops = calloc((size_t)max, sizeof *a->node_ops);
  a->njoined = 0;
  a->finalized = false;
  if (!a->joined || !a->node_ops) {
    tr_msg("error: out of memory");
    tr__finish(a, 1);
    return;
  }
  for (int s = 0; s < max; s++) {
    a->joined[s].slot = -1;
    a->node_ops[s] = tr__kv(a, TR_KV_WAIT, tr__rkey(a, "node/%d", s), NULL, -1, on_node_joined);
  }
  uv_timer_start(&a->rdzv_timer, on_rdzv_timeout, (uint64_t)(a->o->rdzv_timeout * 1000), 0);
  if (max > 1)
    uv_timer_start(&a->progress_timer, on_progress, PROGRESS_EVERY_MS, PROGRESS_EVERY_MS);
}

/* Node ranks: the coordinator is 0, nodes that asked for a rank get it,
 * the others fill the gaps in the order they joined. */
static void coord_finalize(agent *a) {
  int max = a->o->nnodes_max, n = a->njoined;
  char msg[1024];
  a->finalized = true;
  coord_cancel_node_ops(a);
  tr__timer_stop(&a->rdzv_timer);
  tr__timer_stop(&a->last_call_timer);
  tr__timer_stop(&a->progress_timer);
  if (a->slot < 0 || a->joined[a->slot].slot < 0) {
    tr__coord_fail_rdzv(a, "rendezvous failed: the rendezvous host itself has not joined");
    return;
  }
  int *by_rank = malloc((size_t)n * sizeof *by_rank);
  if (!by_rank) {
    tr__coord_fail_rdzv(a, "out of memory");
    return;
  }
  for (int r = 0; r < n; r++) by_rank[r] = -1;
  by_rank[0] = a->slot;
  for (int s = 0; s < max; s++) {
    node *nd = &a->joined[s];
    if (nd->slot < 0 || s == a->slot || nd->requested < 0) continue;
    int r = nd->requested;
    if (r >= n) {
      snprintf(msg, sizeof msg,
               "rendezvous round %d failed: %s asks for node rank %d but %d node%s joined "
               "(node ranks 0 to %d)",
               a->round, nd->host, r, n, n == 1 ? "" : "s", n - 1);
      goto fail;
    }
    if (by_rank[r] >= 0) {
      node *other = &a->joined[by_rank[r]];
      snprintf(msg, sizeof msg,
               "rendezvous round %d failed: node rank %d is claimed by both %s (pid %ld) and %s "
               "(pid %ld)%s",
               a->round, r, other->host, other->pid, nd->host, nd->pid,
               r == 0 ? "; node rank 0 is the rendezvous host's" : "");
      goto fail;
    }
    by_rank[r] = s;
  }
  for (int s = 0, r = 0; s < max; s++) {
    node *nd = &a->joined[s];
    if (nd->slot < 0 || s == a->slot || nd->requested >= 0) continue;
    while (by_rank[r] >= 0) r++;
    by_rank[r] = s;
  }
  size_t cap = 128 + (size_t)n * 300, off = 0;
  char *w = malloc(cap);
  if (!w) {
    free(by_rank);
    tr__coord_fail_rdzv(a, "out of memory");
    return;
  }
  int ws = 0;
  for (int r = 0; r < n; r++) ws += a->joined[by_rank[r]].nproc;
  off += (size_t)snprintf(w + off, cap - off, "world %d %d %d %d %d\n", a->round, n, ws,
                          a->o->max_restarts, a->master_port);
  for (int r = 0, offset = 0; r < n; r++) {
    node *nd = &a->joined[by_rank[r]];
    nd->node_rank = r;
    nd->rank_offset = offset;
    off += (size_t)snprintf(w + off, cap - off, "node %d %d %d %d %s\n", nd->slot, r, nd->nproc,
                            offset, nd->host);
    offset += nd->nproc;
  }
  free(by_rank);
  tr__kv(a, TR_KV_SET, tr__rkey(a, "world"), w, 0, NULL);
  free(w);
  return;
fail:
  free(by_rank);
  tr__coord_fail_rdzv(a, msg);
}

/* ---- the coordinator: the running job ---------------------------------------------------- */

static void on_done_ok_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_OK) tr__handle_end(a, op->out);
}

static void on_node_done(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  int idx = -1;
  for (int i = 0; a->done_ops && i < a->nnodes; i++)
    if (a->done_ops[i] == op) idx = i;
  if (idx < 0) return;
  a->done_ops[idx] = NULL;
  if (op->st != EM_OK) return;
  if (++a->ndone == a->nnodes) tr__kv(a, TR_KV_SETNX, tr__rkey(a, "end"), "ok", 0, on_done_ok_set);
}

void tr__coord_run_begin(agent *a) {
  free(a->done_ops);
  a->done_ops = calloc((size_t)a->nnodes, sizeof *a->done_ops);
  a->ndone = 0;
  if (!a->done_ops) {
    tr_msg("error: out of memory");
    return;
  }
  for (int nr = 0; nr < a->nnodes; nr++)
    a->done_ops[nr] = tr__kv(a, TR_KV_WAIT, tr__rkey(a, "done/%d", nr), NULL, -1, on_node_done);
  if (a->nnodes > 1) {
    uint64_t ms = (uint64_t)(a->o->monitor_interval * 1000);
    if (ms == 0) ms = 1;
    uv_timer_start(&a->hb_timer, tr__on_hb_check, ms, ms);
  }
}

void tr__coord_round_over(agent *a) {
  if (!a->coordinator) return;
  for (int i = 0; i < a->nnodes && a->done_ops; i++) {
    tr_kvop *op = a->done_ops[i];
    a->done_ops[i] = NULL;
    tr_kv_cancel(op);
  }
}
