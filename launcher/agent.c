/* The trainrun agent: one per node, everything on one libuv loop.
 *
 * A job runs in rounds (round r = restart r). In each round every agent:
 *   1. joins: ADD R/joined -> its slot s; SET R/node/<s> = "host nproc rank pid"
 *   2. waits for R/world, which the node-0 agent (the coordinator, host of
 *      the store) publishes once the nodes have joined: node ranks, rank
 *      offsets, the world size — or "error <why>" when the rendezvous fails
 *   3. starts its workers and waits for R/end: "ok" once every node set
 *      R/done/<node rank>, else the first failure, which whoever sees it
 *      stores with set-if-absent ("fail ...", "lost ...", "signal ...")
 *   4. stops its workers (SIGTERM to their groups, SIGKILL after the grace
 *      period) when the end is a failure; when they are all gone it either
 *      starts round r+1 or acknowledges (R/ack/<slot>) and exits.
 * R is "trainrun/<run id>/r<round>/". Agents other than node 0 beat
 * R/hb/<node rank> every --monitor-interval; the coordinator declares a node
 * whose beat has not changed for --heartbeat-timeout lost, and a node whose
 * store connection breaks has lost the coordinator.
 *
 * Everything is an event: worker exits arrive by SIGCHLD (uv_signal), output
 * by uv_poll on the pipes, store results by uv_async (kv.c), signals by
 * uv_signal; timers exist only for the grace period, heartbeats and the
 * rendezvous deadline. Nothing sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "comm/store.h"
#include "launcher/agent_impl.h"

/* ---- small helpers ----------------------------------------------------------- */

double tr__since(uint64_t t) { return (double)(uv_hrtime() - t) / 1e9; }

/* "trainrun/<id>/r<round>/<fmt...>" in a static buffer (kv copies keys). */
const char *tr__rkey(agent *a, const char *fmt, ...) {
  static char buf[1024];
  int n = snprintf(buf, sizeof buf, "%sr%d/", a->prefix, a->round);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  va_end(ap);
  return buf;
}

tr_kvop *tr__kv(agent *a, tr_kv_kind kind, const char *key, const char *val, int64_t arg,
                tr_kv_cb cb) {
  tr_kvop *op = tr_kv_start(a->kv, kind, key, val, arg, cb, a);
  if (!op) tr_msg("error: out of memory starting a store operation on '%s'", key);
  else op->tag = a->round; /* callbacks run later, on the loop */
  return op;
}

void tr__timer_stop(uv_timer_t *t) {
  if (!uv_is_closing((uv_handle_t *)t)) uv_timer_stop(t);
}

const char *tr__endpoint(agent *a) {
  static char buf[300];
  snprintf(buf, sizeof buf, "%s:%d", a->o->rdzv_host, a->master_port);
  return buf;
}

int tr__wait_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

void tr__describe_status(int st, char *buf, size_t size) {
  if (WIFEXITED(st)) snprintf(buf, size, "exited with code %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, size, "was killed by %s (signal %d)%s", tr_signal_name(WTERMSIG(st)),
             WTERMSIG(st), WCOREDUMP(st) ? ", core dumped" : "");
  else snprintf(buf, size, "ended with wait status %d", st);
}

/* ---- the outcome --------------------------------------------------------------- */

static void on_end_setnx(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_ERR_INTERRUPTED) return;
  if (op->st != EM_OK) {
    if (a->end == END_NONE) {
      tr_msg("error: cannot report to the rendezvous host %s: %s", tr__endpoint(a), op->err);
      a->coord_lost = !a->coordinator;
      tr__handle_end(a, op->val); /* our own verdict */
    }
    return;
  }
  tr__handle_end(a, op->out);
}

void tr__publish_end(agent *a, const char *value) {
  if (a->end != END_NONE) return;
  if (!a->my_end) a->my_end = strdup(value);
  if (!tr__kv(a, TR_KV_SETNX, tr__rkey(a, "end"), value, 0, on_end_setnx)) tr__handle_end(a, value);
}

void tr__local_failure(agent *a, worker *w, const char *why) {
  bool first = !a->local_failure && a->end == END_NONE;
  a->local_failure = true;
  char desc[512], status[160];
  if (why) snprintf(status, sizeof status, "could not be started: %s", why);
  else tr__describe_status(w->status, status, sizeof status);
  snprintf(desc, sizeof desc, "rank %d (local rank %d on host %s, node rank %d, pid %d) %s",
           w->rank, w->local_rank, tr_hostname(), a->node_rank, (int)w->pid, status);
  int code = why ? 1 : tr__wait_code(w->status);
  if (first) {
    tr_msg("================================================================");
    double ran = !w->t_start ? 0.0
                 : w->t_exit ? (double)(w->t_exit - w->t_start) / 1e9
                             : tr__since(w->t_start);
    tr_msg("job failed: %s after %.2f s", desc, ran);
    if (w->tail.count == 0) {
      tr_msg("rank %d wrote nothing to stderr", w->rank);
    } else {
      tr_msg("last %d line%s of rank %d's stderr:", w->tail.count, w->tail.count == 1 ? "" : "s",
             w->rank);
      for (int i = 0; i < w->tail.count; i++) {
        int k = (w->tail.next - w->tail.count + i + TR_TAIL_LINES) % TR_TAIL_LINES;
        tr_msg("  %s", w->tail.lines[k]);
      }
    }
    tr_msg("================================================================");
  }
  char value[700];
  snprintf(value, sizeof value, "fail %d %d %d %s %s", code, w->rank, a->node_rank,
           tr_hostname(), desc);
  tr__begin_stop(a, SIGTERM);
  tr__publish_end(a, value);
}


static void parse_end(agent *a, const char *v) {
  char kind[16] = "";
  int off = 0;
  sscanf(v, "%15s %n", kind, &off);
  const char *rest = v + off;
  a->end_code = 1;
  free(a->end_desc);
  a->end_desc = NULL;
  int n = 0;
  if (!strcmp(kind, "ok")) {
    a->end = END_OK;
    a->end_code = 0;
  } else if (!strcmp(kind, "fail")) {
    int code = 1, rank, nr;
    char host[256];
    a->end = END_FAIL;
    if (sscanf(rest, "%d %d %d %255s %n", &code, &rank, &nr, host, &n) >= 4) {
      a->end_code = code;
      rest += n;
    }
  } else if (!strcmp(kind, "lost")) {
    a->end = END_LOST;
    int nr;
    char host[256];
    if (sscanf(rest, "%d %255s %n", &nr, host, &n) >= 2) rest += n;
  } else if (!strcmp(kind, "signal")) {
    int sig, nr;
    char host[256];
    a->end = END_SIGNAL;
    if (sscanf(rest, "%d %d %255s %n", &sig, &nr, host, &n) >= 3) {
      a->end_code = 128 + sig;
      rest += n;
    }
  } else {
    a->end = END_ERROR;
  }
  a->end_desc = strdup(rest);
}

void tr__handle_end(agent *a, const char *value) {
  if (a->end != END_NONE || a->ph == PH_DONE) return;
  parse_end(a, value ? value : "error (no value)");
  if (a->end_op) {
    tr_kv_cancel(a->end_op);
    a->end_op = NULL;
  }
  if (a->end != END_OK) {
    bool ours = a->my_end && value && !strcmp(a->my_end, value);
    const char *desc = a->end_desc && *a->end_desc ? a->end_desc : "the job failed elsewhere";
    if (!ours && a->local_failure) tr_msg("the first failure was elsewhere: %s", desc);
    else if (!ours && !a->coord_lost) tr_msg("stopping: %s", desc);
    tr__begin_stop(a, SIGTERM);
  }
  tr__maybe_round_over(a);
}

static void on_end_wait(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op != a->end_op) return; /* cancelled or stale */
  a->end_op = NULL;
  if (op->st == EM_OK) {
    tr__handle_end(a, op->out);
    return;
  }
  if (a->end != END_NONE) return;
  /* our connection to the coordinator broke */
  char value[700];
  snprintf(value, sizeof value, "lost 0 %s lost the rendezvous host %s (node 0's trainrun): %s",
           a->o->rdzv_host, tr__endpoint(a), op->err ? op->err : "?");
  a->coord_lost = true;
  tr_msg("error: lost the rendezvous host %s (node 0's trainrun): %s", tr__endpoint(a),
         op->err ? op->err : "?");
  tr__handle_end(a, value);
}

static void on_done_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st != EM_OK && op->st != EM_ERR_INTERRUPTED && a->end == END_NONE) {
    char value[700];
    snprintf(value, sizeof value, "lost 0 %s cannot reach the rendezvous host %s: %s",
             a->o->rdzv_host, tr__endpoint(a), op->err);
    a->coord_lost = !a->coordinator;
    tr__handle_end(a, value);
  }
}

void tr__publish_done(agent *a) {
  if (a->done_sent) return;
  a->done_sent = true;
  tr__kv(a, TR_KV_SET, tr__rkey(a, "done/%d", a->node_rank), "ok", 0, on_done_set);
}

/* The first non-zero status among this node's workers, else 0. */
static int local_result(agent *a) {
  for (int i = 0; i < a->nw; i++)
    if (a->w[i].pid > 0 && a->w[i].status != 0) return tr__wait_code(a->w[i].status);
  return 0;
}

static void reset_round(agent *a) {
  tr__timer_stop(&a->grace_timer); /* nothing of the last stop reaches the next round */
  tr__timer_stop(&a->deadline_timer);
  tr__free_workers(a);
  free(a->nodes);
  a->nodes = NULL;
  free(a->end_desc);
  a->end_desc = NULL;
  free(a->my_end);
  a->my_end = NULL;
  a->end = END_NONE;
  a->end_code = 0;
  a->local_failure = a->done_sent = a->terminating = a->force_stopped = a->local_stopped = false;
  a->nlive = 0;
  a->slot = -1;
  a->hb_op = NULL;
}

void tr__maybe_round_over(agent *a) {
  if (a->ph == PH_DONE || a->end == END_NONE || !a->local_stopped) return;
  tr__timer_stop(&a->hb_timer);
  tr__coord_round_over(a);
  int code = a->end_code;
  if (a->end == END_SIGNAL) code = local_result(a);
  bool restart = (a->end == END_FAIL || a->end == END_LOST) && !a->coord_lost && !a->user_sig &&
                 a->round < a->max_restarts;
  if (restart) {
    tr_msg("restarting all workers (restart %d of %d) after: %s", a->round + 1, a->max_restarts,
           a->end_desc ? a->end_desc : "a failure");
    reset_round(a);
    a->round++;
    tr__start_round(a);
    return;
  }
  if (a->end == END_FAIL || a->end == END_LOST || a->end == END_ERROR)
    tr_msg("exiting with code %d%s", code,
           a->max_restarts > 0 && a->end != END_ERROR && !a->user_sig && !a->coord_lost
               ? " (no restarts left)"
               : "");
  tr__finish(a, code);
}

/* ---- the end of the job ------------------------------------------------------------ */

static void on_ack_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  tr__shutdown(a);
}

static void on_ack_timeout(uv_timer_t *t) {
  agent *a = t->data;
  tr__shutdown(a);
}

static void on_ack_wait(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  for (int i = 0; i < a->nack_ops; i++)
    if (a->ack_ops[i] == op) {
      a->ack_ops[i] = NULL;
      for (int k = 0; k < a->nack_ops; k++)
        if (a->ack_ops[k]) return;
      tr__shutdown(a);
      return;
    }
}

/* Ends the job with code: participants acknowledge (so node 0 keeps the
 * store up until they have read the end), node 0 waits for them. */
void tr__finish(agent *a, int code) {
  if (a->ph == PH_DONE) return;
  a->ph = PH_DONE;
  a->exit_code = code;
  tr__timer_stop(&a->hb_timer);
  tr__timer_stop(&a->rdzv_timer);
  tr__timer_stop(&a->last_call_timer);
  tr__timer_stop(&a->progress_timer);
  if (a->world_op) {
    tr_kv_cancel(a->world_op);
    a->world_op = NULL;
  }
  if (a->end_op) {
    tr_kv_cancel(a->end_op);
    a->end_op = NULL;
  }
  if (!a->coordinator) {
    if (a->coord_lost || a->slot < 0 ||
        !tr__kv(a, TR_KV_SET, tr__rkey(a, "ack/%d", a->slot), "1", 0, on_ack_set))
      tr__shutdown(a);
    return;
  }
  /* the coordinator: wait for every joined, not lost participant */
  int want = 0;
  for (int s = 0; a->joined && s < a->o->nnodes_max; s++)
    if (a->joined[s].slot >= 0 && s != a->slot && !a->joined[s].lost) want++;
  if (want == 0) {
    tr__shutdown(a);
    return;
  }
  free(a->ack_ops);
  a->ack_ops = calloc((size_t)want, sizeof *a->ack_ops);
  if (!a->ack_ops) {
    tr__shutdown(a);
    return;
  }
  a->nack_ops = want;
  int k = 0;
  for (int s = 0; s < a->o->nnodes_max; s++)
    if (a->joined[s].slot >= 0 && s != a->slot && !a->joined[s].lost)
      a->ack_ops[k++] = tr__kv(a, TR_KV_WAIT, tr__rkey(a, "ack/%d", s), NULL, -1, on_ack_wait);
  uint64_t ms = (uint64_t)((a->o->heartbeat_timeout + a->o->grace_period) * 1000) + 2000;
  uv_timer_start(&a->ack_timer, on_ack_timeout, ms, 0);
}

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

void tr__shutdown(agent *a) {
  if (a->shutting_down) return;
  a->shutting_down = true;
  a->ph = PH_DONE;
  for (int i = 0; i < a->nsig; i++) close_handle((uv_handle_t *)&a->sig[i]);
  close_handle((uv_handle_t *)&a->sigchld);
  uv_timer_t *timers[] = {&a->grace_timer, &a->deadline_timer, &a->hb_timer, &a->rdzv_timer,
                          &a->last_call_timer, &a->progress_timer, &a->ack_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
    close_handle((uv_handle_t *)timers[i]);
  tr__free_workers(a);
  tr_kv_close(a->kv);
  a->kv = NULL;
  if (a->srv) em_store_server_destroy(a->srv);
  a->srv = NULL;
  tr_guardian_stop(a->guard_fd);
  a->guard_fd = -1;
}

/* ---- heartbeats ---------------------------------------------------------------------- */

static void on_hb_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op == a->hb_op) a->hb_op = NULL;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_OK || op->st == EM_ERR_INTERRUPTED || a->end != END_NONE) return;
  char value[700];
  snprintf(value, sizeof value, "lost 0 %s lost the rendezvous host %s (heartbeat failed): %s",
           a->o->rdzv_host, tr__endpoint(a), op->err);
  a->coord_lost = true;
  tr_msg("error: lost the rendezvous host %s (node 0's trainrun): %s", tr__endpoint(a), op->err);
  tr__handle_end(a, value);
}

static void on_hb_tick(uv_timer_t *t) {
  agent *a = t->data;
  if (a->hb_op) return; /* the last one is still on its way */
  char v[32];
  snprintf(v, sizeof v, "%llu", (unsigned long long)++a->hb_count);
  a->hb_op = tr__kv(a, TR_KV_SET, tr__rkey(a, "hb/%d", a->node_rank), v, 0, on_hb_set);
}

/* ---- the round ----------------------------------------------------------------------- */

static bool parse_world(agent *a, const char *v, char *err, size_t errsize) {
  int round, nnodes, ws, maxr, port, n = 0;
  if (!strncmp(v, "error ", 6)) {
    snprintf(err, errsize, "%s", v + 6);
    return false;
  }
  if (sscanf(v, "world %d %d %d %d %d\n%n", &round, &nnodes, &ws, &maxr, &port, &n) != 5 ||
      nnodes < 1 || nnodes > TR_MAX_NODES) {
    snprintf(err, errsize, "malformed world from the rendezvous host: '%.80s'", v);
    return false;
  }
  node *nodes = calloc((size_t)nnodes, sizeof *nodes);
  if (!nodes) {
    snprintf(err, errsize, "out of memory");
    return false;
  }
  const char *p = v + n;
  int mine = -1;
  for (int i = 0; i < nnodes; i++) {
    node nd = {0};
    int m = 0;
    if (sscanf(p, "node %d %d %d %d %255s\n%n", &nd.slot, &nd.node_rank, &nd.nproc,
               &nd.rank_offset, nd.host, &m) != 5 ||
        nd.node_rank < 0 || nd.node_rank >= nnodes) {
      free(nodes);
      snprintf(err, errsize, "malformed world from the rendezvous host");
      return false;
    }
    nd.hb_seen = uv_hrtime();
    nodes[nd.node_rank] = nd;
    if (nd.slot == a->slot) mine = nd.node_rank;
    p += m;
  }
  if (mine < 0) {
    free(nodes);
    snprintf(err, errsize,
             "this node joined the rendezvous after it closed: the job started with %d node%s",
             nnodes, nnodes == 1 ? "" : "s");
    return false;
  }
  free(a->nodes);
  a->nodes = nodes;
  a->nnodes = nnodes;
  a->world_size = ws;
  a->max_restarts = maxr;
  a->master_port = port;
  a->node_rank = mine;
  a->rank_offset = nodes[mine].rank_offset;
  a->nw = nodes[mine].nproc;
  return true;
}

static void on_world(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op != a->world_op) return;
  a->world_op = NULL;
  tr__timer_stop(&a->progress_timer);
  char err[600];
  if (op->st != EM_OK) {
    if (op->st == EM_ERR_TIMEOUT)
      tr_msg("error: rendezvous at %s failed: node 0 did not start the job within %g s "
             "(--rdzv-timeout)",
             tr__endpoint(a), a->o->rdzv_timeout);
    else
      tr_msg("error: rendezvous at %s failed: %s", tr__endpoint(a), op->err);
    a->coord_lost = true;
    tr__finish(a, 1);
    return;
  }
  if (!parse_world(a, op->out, err, sizeof err)) {
    tr_msg("error: %s", err);
    tr__finish(a, 1);
    return;
  }
  if (a->o->nnodes_max > 1 || a->round > 0)
    tr_msg("round %d: node rank %d of %d on %s, ranks %d-%d of %d", a->round, a->node_rank,
           a->nnodes, tr_hostname(), a->rank_offset, a->rank_offset + a->nw - 1, a->world_size);
  a->end_op = tr__kv(a, TR_KV_WAIT, tr__rkey(a, "end"), NULL, -1, on_end_wait);
  if (a->coordinator) tr__coord_run_begin(a);
  else if (a->nnodes > 1) {
    uint64_t ms = (uint64_t)(a->o->monitor_interval * 1000);
    if (ms == 0) ms = 1;
    a->hb_timer.data = a;
    uv_timer_start(&a->hb_timer, on_hb_tick, 0, ms);
  }
  tr__launch_workers(a);
}

static void on_node_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_OK || op->st == EM_ERR_INTERRUPTED || a->ph != PH_RDZV) return;
  tr_msg("error: cannot join the rendezvous at %s: %s", tr__endpoint(a), op->err);
  a->coord_lost = !a->coordinator;
  tr__finish(a, 1);
}

static void on_joined(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_ERR_INTERRUPTED || a->ph != PH_RDZV) return;
  if (op->st != EM_OK) {
    tr_msg("error: cannot join the rendezvous at %s: %s", tr__endpoint(a), op->err);
    a->coord_lost = !a->coordinator;
    tr__finish(a, 1);
    return;
  }
  a->slot = (int)op->num - 1;
  char info[400];
  snprintf(info, sizeof info, "%s %d %d %ld", tr_hostname(), a->o->nproc, a->o->node_rank,
           (long)getpid());
  tr__kv(a, TR_KV_SET, tr__rkey(a, "node/%d", a->slot), info, 0, on_node_set);
  int64_t timeout = -1;
  if (!a->coordinator) {
    timeout = (int64_t)(a->o->rdzv_timeout * 1000) + 30000;
    if (a->o->nnodes_max > 1)
      tr_msg("joined the rendezvous at %s (round %d); waiting for the other nodes", tr__endpoint(a),
             a->round);
  }
  a->world_op = tr__kv(a, TR_KV_WAIT, tr__rkey(a, "world"), NULL, timeout, on_world);
}

void tr__start_round(agent *a) {
  a->ph = PH_RDZV;
  a->slot = -1;
  if (a->coordinator) tr__coord_rdzv_begin(a);
  if (!tr__kv(a, TR_KV_ADD, tr__rkey(a, "joined"), NULL, 1, on_joined)) tr__finish(a, 1);
}

/* ---- signals ---------------------------------------------------------------------------- */

static bool terminating_signal(int sig) {
  return sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;
}

static void on_signal(uv_signal_t *h, int sig) {
  agent *a = h->data;
  if (!terminating_signal(sig)) {
    tr__kill_groups(a, sig); /* SIGUSR1/SIGUSR2: for the workers to act on */
    return;
  }
  if (a->ph == PH_DONE) {
    tr__shutdown(a);
    return;
  }
  if (a->user_sig) {
    tr_msg("got %s again: killing all workers now (SIGKILL)", tr_signal_name(sig));
    tr__kill_groups(a, SIGKILL);
    return;
  }
  a->user_sig = sig;
  if (a->ph == PH_RDZV) {
    tr_msg("got %s during the rendezvous: stopping", tr_signal_name(sig));
    if (a->coordinator && !a->finalized) {
      char msg[300];
      snprintf(msg, sizeof msg, "the rendezvous host (%s) was stopped by %s", tr_hostname(),
               tr_signal_name(sig));
      tr__coord_fail_rdzv(a, msg);
    }
    if (a->coordinator) {
      tr__finish(a, 128 + sig);
    } else {
      a->exit_code = 128 + sig;
      tr__shutdown(a);
    }
    return;
  }
  tr_msg("got %s: passing it to the workers and waiting for them to exit (again to kill them)",
         tr_signal_name(sig));
  if (a->ph == PH_RUN) a->ph = PH_STOP;
  tr__terminate_all(a, sig);
  char value[400];
  snprintf(value, sizeof value, "signal %d %d %s trainrun on %s got %s", sig, a->node_rank,
           tr_hostname(), tr_hostname(), tr_signal_name(sig));
  tr__publish_end(a, value);
  tr__check_stopped(a);
}

/* ---- setting up ------------------------------------------------------------------------- */

static void store_log(void *ctx, const char *line) {
  (void)ctx;
  tr_msg("store: %s", line);
}

static bool is_loopback_name(const char *h) {
  return !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1");
}

static em_status pick_secret(agent *a) {
  const char *env = getenv(EM_STORE_SECRET_ENV);
  if (env && *env) {
    if (strlen(env) >= sizeof a->secret)
      return em_set_error(EM_ERR_INVALID, "%s is longer than %zu characters",
                          EM_STORE_SECRET_ENV, sizeof a->secret - 1);
    snprintf(a->secret, sizeof a->secret, "%s", env);
    return EM_OK;
  }
  if (a->o->nnodes_max == 1) {
    if (sodium_init() < 0) return em_set_error(EM_ERR_INTERNAL, "libsodium failed to initialise");
    unsigned char b[32];
    randombytes_buf(b, sizeof b);
    sodium_bin2hex(a->secret, sizeof a->secret, b, sizeof b);
    sodium_memzero(b, sizeof b);
    return EM_OK;
  }
  /* several nodes must share the secret, and only the user can give it to
   * all of them */
  a->secret[0] = 0;
  tr_msg("warning: %s is not set, so the store at %s:%d accepts any client; export the same "
         "secret on every node (e.g. export %s=$(openssl rand -hex 32))",
         EM_STORE_SECRET_ENV, a->o->rdzv_host, a->o->rdzv_port, EM_STORE_SECRET_ENV);
  return EM_OK;
}

/* Node 0 hosts the store; with no node rank given, whoever can bind the
 * rendezvous port on the rendezvous host does. */
static em_status pick_role(agent *a) {
  tr_options *o = a->o;
  char err[300];
  bool local = tr_host_is_local(o->rdzv_host, err, sizeof err);
  if (err[0] && (o->node_rank == 0 || o->nnodes_max == 1))
    return em_set_error(EM_ERR_INVALID, "rendezvous host: %s", err);
  bool try_host = o->node_rank == 0 || (o->node_rank < 0 && local);
  if (o->node_rank == 0 && o->nnodes_max > 1 && !local)
    return em_set_error(EM_ERR_INVALID,
                        "this is node rank 0, which hosts the rendezvous, but the rendezvous "
                        "host '%s' is not an address of this machine (%s)%s",
                        o->rdzv_host, tr_hostname(),
                        o->env_source && !strcmp(o->env_source, "slurm")
                            ? "; under Slurm node rank 0 must run on the first node of "
                              "SLURM_JOB_NODELIST (is every task claiming SLURM_PROCID=0?)"
                            : "");
  snprintf(a->master_addr, sizeof a->master_addr, "%s", o->rdzv_host);
  a->master_port = o->rdzv_port;
  if (!try_host) return EM_OK;
  const char *bind = is_loopback_name(o->rdzv_host) ? o->rdzv_host
                     : strchr(o->rdzv_host, ':')    ? "::"
                                                    : "0.0.0.0";
  em_store_server_options so = {.secret = a->secret, .log = store_log};
  a->srv = em_store_server_attach(&a->loop, bind, o->rdzv_port, &so);
  if (!a->srv) {
    char why[512];
    snprintf(why, sizeof why, "%s", em_last_error());
    if (o->node_rank < 0 && strcasestr(why, "address already in use")) {
      em_clear_error();
      return EM_OK; /* another agent on this host hosts it */
    }
    bool in_use = strstr(why, "in use") != NULL;
    return em_set_error(EM_ERR_COMM, "cannot host the rendezvous store on port %d: %s%s",
                        o->rdzv_port, why,
                        !in_use ? ""
                        : o->nnodes_max > 1
                            ? " (does another trainrun also claim node rank 0, or another job "
                              "use this port?)"
                            : " (another job on this host? choose another port)");
  }
  a->coordinator = true;
  a->master_port = em_store_server_port(a->srv);
  return EM_OK;
}

static em_status setup_logs(agent *a) {
  const tr_options *o = a->o;
  if (o->log_dir) {
    if (tr__mkdir_p(o->log_dir) != 0)
      return em_set_error(EM_ERR_IO, "--log-dir: cannot create '%s': %s", o->log_dir,
                          strerror(errno));
    a->log_root = strdup(o->log_dir);
  } else if (o->tee.set || o->redirects.set) {
    char tmpl[] = "/tmp/trainrun-XXXXXX";
    if (!mkdtemp(tmpl))
      return em_set_error(EM_ERR_IO, "cannot create a log directory in /tmp: %s",
                          strerror(errno));
    a->log_root = strdup(tmpl);
    if (a->log_root) tr_msg("worker logs go to %s (--log-dir to choose)", a->log_root);
  }
  if ((o->log_dir || o->tee.set || o->redirects.set) && !a->log_root)
    return em_set_error(EM_ERR_NOMEM, "out of memory");
  return EM_OK;
}

int tr_agent_run(tr_options *o, const tr_command *cmd) {
  agent *a = calloc(1, sizeof *a);
  if (!a) {
    tr_msg("error: out of memory");
    return 1;
  }
  a->o = o;
  a->cmd = cmd;
  a->t0 = uv_hrtime();
  a->guard_fd = -1;
  a->guard_pid = -1;
  a->slot = -1;
  int code = 1;
  /* the guardian first, while this process is small and has one thread */
  if (tr_guardian_start(&a->guard_fd, &a->guard_pid) != EM_OK) {
    tr_msg("error: %s", em_last_error());
    free(a);
    return 1;
  }
  /* orphaned grandchildren come to us, so their exits are events too */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (uv_loop_init(&a->loop) != 0) {
    tr_msg("error: cannot create the event loop");
    tr_guardian_stop(a->guard_fd);
    free(a);
    return 1;
  }
  uv_timer_t *timers[] = {&a->grace_timer, &a->deadline_timer, &a->hb_timer, &a->rdzv_timer,
                          &a->last_call_timer, &a->progress_timer, &a->ack_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(&a->loop, timers[i]);
    timers[i]->data = a;
  }
  uv_signal_init(&a->loop, &a->sigchld);
  a->sigchld.data = a;
  uv_signal_start(&a->sigchld, tr__on_sigchld, SIGCHLD);
  for (int s = 1; s < 32 && a->nsig < 8; s++) {
    if (!(o->signals & (1u << s))) continue;
    uv_signal_init(&a->loop, &a->sig[a->nsig]);
    a->sig[a->nsig].data = a;
    uv_signal_start(&a->sig[a->nsig], on_signal, s);
    a->nsig++;
  }
  size_t plen = strlen(o->run_id) + 16;
  a->prefix = malloc(plen);
  if (a->prefix) snprintf(a->prefix, plen, "trainrun/%s/", o->run_id);
  em_status st = a->prefix ? EM_OK : em_set_error(EM_ERR_NOMEM, "out of memory");
  if (!st) st = setup_logs(a);
  if (!st) st = pick_secret(a);
  if (!st) st = pick_role(a);
  if (!st) {
    if (a->coordinator) {
      a->kv = tr_kv_direct(&a->loop, a->srv);
    } else {
      int64_t req = (int64_t)(o->heartbeat_timeout * 1000);
      a->kv = tr_kv_remote(&a->loop, o->rdzv_host, o->rdzv_port, a->secret,
                           (int64_t)(o->rdzv_timeout * 1000), req < 1000 ? 1000 : req);
    }
    if (!a->kv) st = em_last_status() ? em_last_status() : EM_ERR_NOMEM;
  }
  if (st) {
    tr_msg("error: %s", em_last_error());
    a->exit_code = 1;
    tr__shutdown(a);
  } else {
    a->max_restarts = o->max_restarts;
    tr__start_round(a);
  }
  uv_run(&a->loop, UV_RUN_DEFAULT);
  code = a->exit_code;
  if (uv_loop_close(&a->loop) != 0) {
    /* a handle we did not close: walk and close, then finish */
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
  }
  free(a->prefix);
  free(a->log_root);
  free(a->nodes);
  free(a->end_desc);
  free(a->my_end);
  free(a->joined);
  free(a->node_ops);
  free(a->done_ops);
  free(a->ack_ops);
  free(a);
  return code;
}
