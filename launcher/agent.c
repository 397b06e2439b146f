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
#include "launcher/launcher_impl.h"

#define DEADLINE_AFTER_KILL_MS 5000 /* how long SIGKILLed groups may take to vanish */
#define PROGRESS_EVERY_MS 10000     /* "still waiting for ..." during a rendezvous */

typedef struct agent agent;

typedef struct worker {
  agent *a;
  int local_rank, rank;
  pid_t pid; /* also its process group; 0 = never started */
  bool running;
  bool group_gone;
  int status;
  uint64_t t_start, t_exit;
  tr_stream out, err;
  uv_poll_t *pout, *perr;
  tr_line_tail tail;
  int logfd;
} worker;

typedef struct node {
  int slot, node_rank, nproc, rank_offset, requested;
  long pid;
  char host[256];
  /* coordinator's bookkeeping */
  char hb_last[32];
  uint64_t hb_seen;
  bool lost;
} node;

typedef enum { PH_RDZV, PH_RUN, PH_STOP, PH_DONE } phase;
typedef enum { END_NONE, END_OK, END_FAIL, END_LOST, END_SIGNAL, END_ERROR } end_kind;

struct agent {
  uv_loop_t loop;
  tr_options *o;
  const tr_command *cmd;
  int exit_code;
  bool shutting_down;
  uint64_t t0;
  /* signals and the guardian */
  uv_signal_t sig[8];
  int nsig;
  uv_signal_t sigchld;
  int guard_fd;
  pid_t guard_pid;
  /* the store */
  bool coordinator;
  em_store_server *srv;
  tr_kv *kv;
  char secret[80];
  char master_addr[256];
  int master_port;
  char *prefix; /* trainrun/<run id>/ */
  char *log_root;
  /* the round */
  int round;
  phase ph;
  int slot;
  tr_kvop *world_op, *end_op, *hb_op;
  bool coord_lost;
  /* the world */
  int nnodes, node_rank, world_size, rank_offset, max_restarts;
  node *nodes;
  worker *w;
  int nw, nlive;
  bool terminating, force_stopped, local_stopped, done_sent;
  uint64_t hb_count;
  uv_timer_t grace_timer, deadline_timer, hb_timer, rdzv_timer, last_call_timer, progress_timer,
      ack_timer;
  /* the outcome */
  end_kind end;
  int end_code;
  char *end_desc;
  char *my_end; /* what this agent published as the end, if anything */
  bool local_failure;
  int user_sig;
  /* coordinator */
  node *joined; /* by slot, [nnodes_max] */
  tr_kvop **node_ops, **done_ops, **ack_ops;
  int njoined, ndone, nack_ops;
  bool finalized;
};

static void start_round(agent *a);
static void check_stopped(agent *a);
static void maybe_round_over(agent *a);
static void finish(agent *a, int code);
static void shutdown_agent(agent *a);
static void handle_end(agent *a, const char *value);
static void begin_stop(agent *a, int sig);
static void coord_rdzv_begin(agent *a);
static void coord_run_begin(agent *a);
static void coord_finalize(agent *a);

/* ---- small helpers ----------------------------------------------------------- */

static double since(uint64_t t) { return (double)(uv_hrtime() - t) / 1e9; }

/* "trainrun/<id>/r<round>/<fmt...>" in a static buffer (kv copies keys). */
static const char *rkey(agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *rkey(agent *a, const char *fmt, ...) {
  static char buf[1024];
  int n = snprintf(buf, sizeof buf, "%sr%d/", a->prefix, a->round);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  va_end(ap);
  return buf;
}

static tr_kvop *kv(agent *a, tr_kv_kind kind, const char *key, const char *val, int64_t arg,
                   tr_kv_cb cb) {
  tr_kvop *op = tr_kv_start(a->kv, kind, key, val, arg, cb, a);
  if (!op) tr_msg("error: out of memory starting a store operation on '%s'", key);
  else op->tag = a->round; /* callbacks run later, on the loop */
  return op;
}

static void timer_stop(uv_timer_t *t) {
  if (!uv_is_closing((uv_handle_t *)t)) uv_timer_stop(t);
}

static const char *endpoint(agent *a) {
  static char buf[300];
  snprintf(buf, sizeof buf, "%s:%d", a->o->rdzv_host, a->master_port);
  return buf;
}

static int wait_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

static void describe_status(int st, char *buf, size_t size) {
  if (WIFEXITED(st)) snprintf(buf, size, "exited with code %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, size, "was killed by %s (signal %d)%s", tr_signal_name(WTERMSIG(st)),
             WTERMSIG(st), WCOREDUMP(st) ? ", core dumped" : "");
  else snprintf(buf, size, "ended with wait status %d", st);
}

/* ---- workers ------------------------------------------------------------------ */

static worker *find_worker(agent *a, pid_t pid) {
  for (int i = 0; i < a->nw; i++)
    if (a->w[i].pid == pid) return &a->w[i];
  return NULL;
}

static void on_poll_closed(uv_handle_t *h) { free(h); }

static void poll_close(uv_poll_t **p) {
  if (!*p) return;
  uv_poll_stop(*p);
  uv_close((uv_handle_t *)*p, on_poll_closed);
  *p = NULL;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  worker *w = h->data;
  bool is_err = h == w->perr;
  tr_stream *s = is_err ? &w->err : &w->out;
  if (!tr_stream_pump(s)) poll_close(is_err ? &w->perr : &w->pout);
}

static int open_log(agent *a, int rank) {
  if (!a->log_root) return -1;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/attempt_%d/rank_%d.log", a->log_root, a->round, rank);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) tr_msg("warning: cannot write the log file %s: %s", path, strerror(errno));
  return fd;
}

static int mkdir_p(const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static em_status worker_env(agent *a, tr_env *base) {
  char num[64];
  TR_CHECK(tr_env_from_current(base));
#define SETI(name, v)                          \
  do {                                         \
    snprintf(num, sizeof num, "%d", (int)(v)); \
    TR_CHECK(tr_env_set(base, name, num));     \
  } while (0)
  SETI("WORLD_SIZE", a->world_size);
  SETI("LOCAL_WORLD_SIZE", a->nw);
  SETI("GROUP_RANK", a->node_rank);
  SETI("GROUP_WORLD_SIZE", a->nnodes);
  TR_CHECK(tr_env_set(base, "MASTER_ADDR", a->master_addr));
  SETI("MASTER_PORT", a->master_port);
  TR_CHECK(tr_env_set(base, EM_STORE_SECRET_ENV, a->secret));
  SETI("TRAINRUN_RESTART_COUNT", a->round);
  SETI("TRAINRUN_MAX_RESTARTS", a->max_restarts);
  TR_CHECK(tr_env_set(base, "TRAINRUN_RUN_ID", a->o->run_id));
  /* the store keys this round's workers may use without colliding with the
   * agents' or an earlier attempt's: wrap the store in a prefix store */
  TR_CHECK(tr_env_set(base, "TRAINRUN_STORE_PREFIX", rkey(a, "worker")));
  /* the names torch.distributed.elastic uses, for scripts that look */
  SETI("TORCHELASTIC_RESTART_COUNT", a->round);
  SETI("TORCHELASTIC_MAX_RESTARTS", a->max_restarts);
  TR_CHECK(tr_env_set(base, "TORCHELASTIC_RUN_ID", a->o->run_id));
#undef SETI
  const char *omp = tr_env_get(base, "OMP_NUM_THREADS");
  if (!omp || !*omp) TR_CHECK(tr_env_set(base, "OMP_NUM_THREADS", "1"));
  /* ember importable: the build's python/ (the extension) and the source
   * tree's (the pure-Python package), before whatever the user has */
  const char *old = tr_env_get(base, "PYTHONPATH");
  size_t len = strlen(EMBER_PYTHON_BUILD_DIR) + strlen(EMBER_PYTHON_SOURCE_DIR) +
               (old ? strlen(old) : 0) + 4;
  char *pp = malloc(len);
  if (!pp) return em_set_error(EM_ERR_NOMEM, "out of memory");
  pp[0] = 0;
  const char *parts[] = {EMBER_PYTHON_BUILD_DIR, EMBER_PYTHON_SOURCE_DIR, old};
  for (int i = 0; i < 3; i++) {
    if (!parts[i] || !*parts[i]) continue;
    if (pp[0]) strcat(pp, ":");
    strcat(pp, parts[i]);
  }
  em_status st = pp[0] ? tr_env_set(base, "PYTHONPATH", pp) : EM_OK;
  free(pp);
  return st;
}

static void local_failure(agent *a, worker *w, const char *why);

/* Starts worker i; on failure reports it as that rank's failure. */
static bool spawn_one(agent *a, worker *w, const tr_env *base) {
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  tr_env env = {0};
  char num[32], why[512];
  const tr_options *o = a->o;
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    snprintf(why, sizeof why, "cannot create pipes: %s", strerror(errno));
    goto fail;
  }
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  if (tr_env_clone(&env, base)) goto oom;
  snprintf(num, sizeof num, "%d", w->rank);
  if (tr_env_set(&env, "RANK", num)) goto oom;
  snprintf(num, sizeof num, "%d", w->local_rank);
  if (tr_env_set(&env, "LOCAL_RANK", num)) goto oom;
  tr_spawn sp = {.cmd = a->cmd, .envp = env.v, .out_fd = out[1], .err_fd = err[1]};
  pid_t pid = tr_spawn_worker(&sp);
  if (pid < 0) {
    snprintf(why, sizeof why, "%s", em_last_error());
    goto fail;
  }
  tr_guardian_track(a->guard_fd, pid, true);
  close(out[1]);
  close(err[1]);
  tr_env_free(&env);
  w->pid = pid;
  w->running = true;
  w->t_start = uv_hrtime();
  a->nlive++;
  int lr = w->local_rank;
  int red = tr_streamspec_mask(&o->redirects, lr, 0);
  int tee = tr_streamspec_mask(&o->tee, lr, o->redirects.set ? 0 : 3);
  int filemask = a->log_root ? (tee | red) : 0;
  bool shown = tr_rankset_has(&o->ranks_filter, w->rank) &&
               tr_rankset_has(&o->local_ranks_filter, lr);
  w->logfd = filemask ? open_log(a, w->rank) : -1;
  tr_stream_init(&w->out, out[0], TR_STDOUT, w->rank, shown && !(red & TR_STDOUT),
                 filemask & TR_STDOUT ? w->logfd : -1, NULL);
  tr_stream_init(&w->err, err[0], TR_STDERR, w->rank, shown && !(red & TR_STDERR),
                 filemask & TR_STDERR ? w->logfd : -1, &w->tail);
  w->pout = malloc(sizeof *w->pout);
  w->perr = malloc(sizeof *w->perr);
  if (!w->pout || !w->perr) {
    free(w->pout);
    free(w->perr);
    w->pout = w->perr = NULL;
    tr_msg("error: out of memory watching rank %d's output", w->rank);
    return true;
  }
  uv_poll_init(&a->loop, w->pout, out[0]);
  uv_poll_init(&a->loop, w->perr, err[0]);
  w->pout->data = w->perr->data = w;
  uv_poll_start(w->pout, UV_READABLE, on_poll);
  uv_poll_start(w->perr, UV_READABLE, on_poll);
  return true;
oom:
  snprintf(why, sizeof why, "out of memory");
fail:
  for (int i = 0; i < 2; i++) {
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
  tr_env_free(&env);
  w->status = 1 << 8; /* as if it exited with code 1 */
  w->group_gone = true;
  local_failure(a, w, why);
  return false;
}

static void launch_workers(agent *a) {
  a->w = calloc((size_t)a->nw, sizeof *a->w);
  if (!a->w) {
    tr_msg("error: out of memory");
    a->nw = 0;
    finish(a, 1);
    return;
  }
  for (int i = 0; i < a->nw; i++) {
    a->w[i] = (worker){.a = a, .local_rank = i, .rank = a->rank_offset + i, .logfd = -1,
                       .group_gone = true};
    a->w[i].out.fd = a->w[i].err.fd = -1;
  }
  a->ph = PH_RUN;
  if (a->log_root) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/attempt_%d", a->log_root, a->round);
    if (mkdir_p(dir) != 0) tr_msg("warning: cannot create the log directory %s: %s", dir,
                                  strerror(errno));
  }
  tr_env base = {0};
  if (worker_env(a, &base) != EM_OK) {
    tr_msg("error: cannot build the workers' environment: %s", em_last_error());
    tr_env_free(&base);
    local_failure(a, &a->w[0], "no environment");
    return;
  }
  for (int i = 0; i < a->nw; i++) {
    a->w[i].group_gone = false;
    if (!spawn_one(a, &a->w[i], &base)) break;
  }
  tr_env_free(&base);
  check_stopped(a);
}

static void free_workers(agent *a) {
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    poll_close(&w->pout);
    poll_close(&w->perr);
    tr_stream_finish(&w->out);
    tr_stream_finish(&w->err);
    if (w->logfd >= 0) close(w->logfd);
    w->logfd = -1;
    tr_tail_free(&w->tail);
  }
  free(a->w);
  a->w = NULL;
  a->nw = 0;
}

/* ---- stopping ------------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t) {
  agent *a = t->data;
  for (int i = 0; i < a->nw; i++)
    if (!a->w[i].group_gone)
      tr_msg("warning: processes of rank %d (process group %d) survived SIGKILL for %d s; giving "
             "up on them",
             a->w[i].rank, (int)a->w[i].pid, DEADLINE_AFTER_KILL_MS / 1000);
  a->force_stopped = true;
  check_stopped(a);
}

static void kill_groups(agent *a, int sig) {
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    if (w->pid <= 0 || w->group_gone) continue;
    if (kill(-w->pid, sig) != 0 && errno == ESRCH && !w->running) w->group_gone = true;
  }
}

static void on_grace(uv_timer_t *t) {
  agent *a = t->data;
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    if (w->running)
      tr_msg("rank %d did not stop within the grace period (%g s): sending SIGKILL", w->rank,
             a->o->grace_period);
  }
  kill_groups(a, SIGKILL);
  uv_timer_start(&a->deadline_timer, on_deadline, DEADLINE_AFTER_KILL_MS, 0);
  check_stopped(a);
}

/* Sends sig to every live worker group and starts the grace period. */
static void terminate_all(agent *a, int sig) {
  kill_groups(a, sig);
  if (a->terminating) return;
  a->terminating = true;
  if (sig == SIGKILL || a->o->grace_period <= 0) on_grace(&a->grace_timer);
  else uv_timer_start(&a->grace_timer, on_grace, (uint64_t)(a->o->grace_period * 1000), 0);
}

static void begin_stop(agent *a, int sig) {
  if (a->ph == PH_RUN) a->ph = PH_STOP;
  if (!a->w) return;
  if (a->terminating) { /* already stopping (a failure, the user's signal) */
    check_stopped(a);
    return;
  }
  int alive = 0;
  for (int i = 0; i < a->nw; i++) alive += a->w[i].running;
  if (alive && sig == SIGTERM && !a->terminating)
    tr_msg("stopping %d worker%s on %s (SIGTERM, then SIGKILL after %g s)", alive,
           alive == 1 ? "" : "s", tr_hostname(), a->o->grace_period);
  terminate_all(a, sig);
  check_stopped(a);
}

/* Decides whether every process of this round is gone; then finishes
 * the output and moves on. */
static void check_stopped(agent *a) {
  if (a->local_stopped || !a->w || a->ph == PH_RDZV) return;
  bool waiting = false, leftovers = false;
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    if (w->running) {
      waiting = true;
      continue;
    }
    if (w->group_gone) continue;
    if (w->pid <= 0) { /* never started */
      w->group_gone = true;
      continue;
    }
    if (!a->force_stopped && (kill(-w->pid, 0) == 0 || errno == EPERM)) {
      waiting = leftovers = true;
      continue;
    }
    w->group_gone = true;
    tr_guardian_track(a->guard_fd, w->pid, false);
  }
  if (waiting) {
    if (leftovers && a->nlive == 0 && !a->terminating) {
      tr_msg("the workers exited but left processes in their process groups: stopping them");
      terminate_all(a, SIGTERM);
    }
    return;
  }
  a->local_stopped = true;
  a->terminating = false;
  timer_stop(&a->grace_timer);
  timer_stop(&a->deadline_timer);
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    poll_close(&w->pout);
    poll_close(&w->perr);
    tr_stream_finish(&w->out);
    tr_stream_finish(&w->err);
  }
  maybe_round_over(a);
}

/* ---- the outcome --------------------------------------------------------------- */

static void on_end_setnx(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_ERR_INTERRUPTED) return;
  if (op->st != EM_OK) {
    if (a->end == END_NONE) {
      tr_msg("error: cannot report to the rendezvous host %s: %s", endpoint(a), op->err);
      a->coord_lost = !a->coordinator;
      handle_end(a, op->val); /* our own verdict */
    }
    return;
  }
  handle_end(a, op->out);
}

static void publish_end(agent *a, const char *value) {
  if (a->end != END_NONE) return;
  if (!a->my_end) a->my_end = strdup(value);
  if (!kv(a, TR_KV_SETNX, rkey(a, "end"), value, 0, on_end_setnx)) handle_end(a, value);
}

static void local_failure(agent *a, worker *w, const char *why) {
  bool first = !a->local_failure && a->end == END_NONE;
  a->local_failure = true;
  char desc[512], status[160];
  if (why) snprintf(status, sizeof status, "could not be started: %s", why);
  else describe_status(w->status, status, sizeof status);
  snprintf(desc, sizeof desc, "rank %d (local rank %d on host %s, node rank %d, pid %d) %s",
           w->rank, w->local_rank, tr_hostname(), a->node_rank, (int)w->pid, status);
  int code = why ? 1 : wait_code(w->status);
  if (first) {
    tr_msg("================================================================");
    tr_msg("job failed: %s after %.2f s", desc, w->t_start ? since(w->t_start) : 0.0);
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
  begin_stop(a, SIGTERM);
  publish_end(a, value);
}

static void publish_done(agent *a);

static void on_worker_exit(agent *a, worker *w) {
  bool failed = !(WIFEXITED(w->status) && WEXITSTATUS(w->status) == 0);
  if (a->ph != PH_RUN || a->user_sig) return;
  if (failed) local_failure(a, w, NULL);
  else if (a->nlive == 0) publish_done(a);
}

static void on_sigchld(uv_signal_t *h, int signum) {
  (void)signum;
  agent *a = h->data;
  for (;;) {
    int st = 0;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) break;
    if (pid == a->guard_pid) {
      tr_msg("warning: the guardian process died; workers may outlive a killed trainrun");
      a->guard_pid = -1;
      close(a->guard_fd);
      a->guard_fd = -1;
      continue;
    }
    worker *w = find_worker(a, pid);
    if (!w || !w->running) continue; /* an orphaned descendant we adopted */
    w->running = false;
    w->status = st;
    w->t_exit = uv_hrtime();
    a->nlive--;
    /* what it wrote before exiting is in the pipes now: read it, so the
     * summary shows its last lines */
    if (w->perr && !tr_stream_pump(&w->err)) poll_close(&w->perr);
    if (w->pout && !tr_stream_pump(&w->out)) poll_close(&w->pout);
    on_worker_exit(a, w);
  }
  check_stopped(a);
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

static void handle_end(agent *a, const char *value) {
  if (a->end != END_NONE || a->ph == PH_DONE) return;
  parse_end(a, value ? value : "error (no value)");
  if (a->end_op) {
    tr_kv_cancel(a->end_op);
    a->end_op = NULL;
  }
  if (a->end != END_OK) {
    bool ours = a->my_end && value && !strcmp(a->my_end, value);
    if (!ours && !a->local_failure && !a->coord_lost)
      tr_msg("stopping: %s", a->end_desc ? a->end_desc : "the job failed elsewhere");
    else if (a->local_failure && a->end == END_FAIL && a->end_desc &&
             !strstr(a->end_desc, tr_hostname()))
      tr_msg("the first failure was elsewhere: %s", a->end_desc);
    begin_stop(a, SIGTERM);
  }
  maybe_round_over(a);
}

static void on_end_wait(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op != a->end_op) return; /* cancelled or stale */
  a->end_op = NULL;
  if (op->st == EM_OK) {
    handle_end(a, op->out);
    return;
  }
  if (a->end != END_NONE) return;
  /* our connection to the coordinator broke */
  char value[700];
  snprintf(value, sizeof value, "lost 0 %s lost the rendezvous host %s (node 0's trainrun): %s",
           a->o->rdzv_host, endpoint(a), op->err ? op->err : "?");
  a->coord_lost = true;
  tr_msg("error: lost the rendezvous host %s (node 0's trainrun): %s", endpoint(a),
         op->err ? op->err : "?");
  handle_end(a, value);
}

static void on_done_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st != EM_OK && op->st != EM_ERR_INTERRUPTED && a->end == END_NONE) {
    char value[700];
    snprintf(value, sizeof value, "lost 0 %s cannot reach the rendezvous host %s: %s",
             a->o->rdzv_host, endpoint(a), op->err);
    a->coord_lost = !a->coordinator;
    handle_end(a, value);
  }
}

static void publish_done(agent *a) {
  if (a->done_sent) return;
  a->done_sent = true;
  kv(a, TR_KV_SET, rkey(a, "done/%d", a->node_rank), "ok", 0, on_done_set);
}

/* The first non-zero status among this node's workers, else 0. */
static int local_result(agent *a) {
  for (int i = 0; i < a->nw; i++)
    if (a->w[i].pid > 0 && a->w[i].status != 0) return wait_code(a->w[i].status);
  return 0;
}

static void reset_round(agent *a) {
  free_workers(a);
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

static void coord_round_over(agent *a) {
  if (!a->coordinator) return;
  for (int i = 0; i < a->nnodes && a->done_ops; i++) {
    tr_kvop *op = a->done_ops[i];
    a->done_ops[i] = NULL;
    tr_kv_cancel(op);
  }
}

static void maybe_round_over(agent *a) {
  if (a->ph == PH_DONE || a->end == END_NONE || !a->local_stopped) return;
  timer_stop(&a->hb_timer);
  coord_round_over(a);
  int code = a->end_code;
  if (a->end == END_SIGNAL) code = local_result(a);
  bool restart = (a->end == END_FAIL || a->end == END_LOST) && !a->coord_lost && !a->user_sig &&
                 a->round < a->max_restarts;
  if (restart) {
    tr_msg("restarting all workers (restart %d of %d) after: %s", a->round + 1, a->max_restarts,
           a->end_desc ? a->end_desc : "a failure");
    reset_round(a);
    a->round++;
    start_round(a);
    return;
  }
  if (a->end == END_FAIL || a->end == END_LOST || a->end == END_ERROR)
    tr_msg("exiting with code %d%s", code,
           a->max_restarts > 0 && a->end != END_ERROR && !a->user_sig && !a->coord_lost
               ? " (no restarts left)"
               : "");
  finish(a, code);
}

/* ---- the end of the job ------------------------------------------------------------ */

static void on_ack_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  shutdown_agent(a);
}

static void on_ack_timeout(uv_timer_t *t) {
  agent *a = t->data;
  shutdown_agent(a);
}

static void on_ack_wait(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  for (int i = 0; i < a->nack_ops; i++)
    if (a->ack_ops[i] == op) {
      a->ack_ops[i] = NULL;
      for (int k = 0; k < a->nack_ops; k++)
        if (a->ack_ops[k]) return;
      shutdown_agent(a);
      return;
    }
}

/* Ends the job with code: participants acknowledge (so node 0 keeps the
 * store up until they have read the end), node 0 waits for them. */
static void finish(agent *a, int code) {
  if (a->ph == PH_DONE) return;
  a->ph = PH_DONE;
  a->exit_code = code;
  timer_stop(&a->hb_timer);
  timer_stop(&a->rdzv_timer);
  timer_stop(&a->last_call_timer);
  timer_stop(&a->progress_timer);
  if (a->world_op) {
    tr_kv_cancel(a->world_op);
    a->world_op = NULL;
  }
  if (a->end_op) {
    tr_kv_cancel(a->end_op);
    a->end_op = NULL;
  }
  if (!a->coordinator) {
    if (a->coord_lost || a->slot < 0 || !kv(a, TR_KV_SET, rkey(a, "ack/%d", a->slot), "1", 0,
                                           on_ack_set))
      shutdown_agent(a);
    return;
  }
  /* the coordinator: wait for every joined, not lost participant */
  int want = 0;
  for (int s = 0; a->joined && s < a->o->nnodes_max; s++)
    if (a->joined[s].slot >= 0 && s != a->slot && !a->joined[s].lost) want++;
  if (want == 0) {
    shutdown_agent(a);
    return;
  }
  free(a->ack_ops);
  a->ack_ops = calloc((size_t)want, sizeof *a->ack_ops);
  if (!a->ack_ops) {
    shutdown_agent(a);
    return;
  }
  a->nack_ops = want;
  int k = 0;
  for (int s = 0; s < a->o->nnodes_max; s++)
    if (a->joined[s].slot >= 0 && s != a->slot && !a->joined[s].lost)
      a->ack_ops[k++] = kv(a, TR_KV_WAIT, rkey(a, "ack/%d", s), NULL, -1, on_ack_wait);
  uint64_t ms = (uint64_t)((a->o->heartbeat_timeout + a->o->grace_period) * 1000) + 2000;
  uv_timer_start(&a->ack_timer, on_ack_timeout, ms, 0);
}

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

static void shutdown_agent(agent *a) {
  if (a->shutting_down) return;
  a->shutting_down = true;
  a->ph = PH_DONE;
  for (int i = 0; i < a->nsig; i++) close_handle((uv_handle_t *)&a->sig[i]);
  close_handle((uv_handle_t *)&a->sigchld);
  uv_timer_t *timers[] = {&a->grace_timer, &a->deadline_timer, &a->hb_timer, &a->rdzv_timer,
                          &a->last_call_timer, &a->progress_timer, &a->ack_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
    close_handle((uv_handle_t *)timers[i]);
  free_workers(a);
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
           a->o->rdzv_host, endpoint(a), op->err);
  a->coord_lost = true;
  tr_msg("error: lost the rendezvous host %s (node 0's trainrun): %s", endpoint(a), op->err);
  handle_end(a, value);
}

static void on_hb_tick(uv_timer_t *t) {
  agent *a = t->data;
  if (a->hb_op) return; /* the last one is still on its way */
  char v[32];
  snprintf(v, sizeof v, "%llu", (unsigned long long)++a->hb_count);
  a->hb_op = kv(a, TR_KV_SET, rkey(a, "hb/%d", a->node_rank), v, 0, on_hb_set);
}

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

static void on_hb_check(uv_timer_t *t) {
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
      publish_end(a, value);
      return;
    }
    kv(a, TR_KV_GET, rkey(a, "hb/%d", nr), NULL, 0, on_hb_get);
  }
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
  timer_stop(&a->progress_timer);
  char err[600];
  if (op->st != EM_OK) {
    if (op->st == EM_ERR_TIMEOUT)
      tr_msg("error: rendezvous at %s failed: node 0 did not start the job within %g s "
             "(--rdzv-timeout)",
             endpoint(a), a->o->rdzv_timeout);
    else
      tr_msg("error: rendezvous at %s failed: %s", endpoint(a), op->err);
    a->coord_lost = true;
    finish(a, 1);
    return;
  }
  if (!parse_world(a, op->out, err, sizeof err)) {
    tr_msg("error: %s", err);
    finish(a, 1);
    return;
  }
  if (a->o->nnodes_max > 1 || a->round > 0)
    tr_msg("round %d: node rank %d of %d on %s, ranks %d-%d of %d", a->round, a->node_rank,
           a->nnodes, tr_hostname(), a->rank_offset, a->rank_offset + a->nw - 1, a->world_size);
  a->end_op = kv(a, TR_KV_WAIT, rkey(a, "end"), NULL, -1, on_end_wait);
  if (a->coordinator) coord_run_begin(a);
  else if (a->nnodes > 1) {
    uint64_t ms = (uint64_t)(a->o->monitor_interval * 1000);
    if (ms == 0) ms = 1;
    a->hb_timer.data = a;
    uv_timer_start(&a->hb_timer, on_hb_tick, 0, ms);
  }
  launch_workers(a);
}

static void on_node_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_OK || op->st == EM_ERR_INTERRUPTED || a->ph != PH_RDZV) return;
  tr_msg("error: cannot join the rendezvous at %s: %s", endpoint(a), op->err);
  a->coord_lost = !a->coordinator;
  finish(a, 1);
}

static void on_joined(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_ERR_INTERRUPTED || a->ph != PH_RDZV) return;
  if (op->st != EM_OK) {
    tr_msg("error: cannot join the rendezvous at %s: %s", endpoint(a), op->err);
    a->coord_lost = !a->coordinator;
    finish(a, 1);
    return;
  }
  a->slot = (int)op->num - 1;
  char info[400];
  snprintf(info, sizeof info, "%s %d %d %ld", tr_hostname(), a->o->nproc, a->o->node_rank,
           (long)getpid());
  kv(a, TR_KV_SET, rkey(a, "node/%d", a->slot), info, 0, on_node_set);
  int64_t timeout = -1;
  if (!a->coordinator) {
    timeout = (int64_t)(a->o->rdzv_timeout * 1000) + 30000;
    if (a->o->nnodes_max > 1)
      tr_msg("joined the rendezvous at %s (round %d); waiting for the other nodes", endpoint(a),
             a->round);
  }
  a->world_op = kv(a, TR_KV_WAIT, rkey(a, "world"), NULL, timeout, on_world);
}

static void start_round(agent *a) {
  a->ph = PH_RDZV;
  a->slot = -1;
  if (a->coordinator) coord_rdzv_begin(a);
  if (!kv(a, TR_KV_ADD, rkey(a, "joined"), NULL, 1, on_joined)) finish(a, 1);
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

static void coord_fail_rdzv(agent *a, const char *msg) {
  char *v = malloc(strlen(msg) + 8);
  if (v) {
    sprintf(v, "error %s", msg);
    kv(a, TR_KV_SET, rkey(a, "world"), v, 0, NULL);
    free(v);
  }
  a->finalized = true;
  coord_cancel_node_ops(a);
  timer_stop(&a->rdzv_timer);
  timer_stop(&a->last_call_timer);
  timer_stop(&a->progress_timer);
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
  coord_fail_rdzv(a, msg);
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
    coord_fail_rdzv(a, msg);
    return;
  }
  node *n = &a->joined[slot];
  if (sscanf(op->out, "%255s %d %d %ld", n->host, &n->nproc, &n->requested, &n->pid) != 4 ||
      n->nproc < 1) {
    char msg[600];
    snprintf(msg, sizeof msg, "rendezvous failed: a node sent a malformed join: '%.100s'",
             op->out);
    coord_fail_rdzv(a, msg);
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

static void coord_rdzv_begin(agent *a) {
  int max = a->o->nnodes_max;
  free(a->joined);
  free(a->node_ops);
  a->joined = calloc((size_t)max, sizeof *a->joined);
  a->node_ops = calloc((size_t)max, sizeof *a->node_ops);
  a->njoined = 0;
  a->finalized = false;
  if (!a->joined || !a->node_ops) {
    tr_msg("error: out of memory");
    finish(a, 1);
    return;
  }
  for (int s = 0; s < max; s++) {
    a->joined[s].slot = -1;
    a->node_ops[s] = kv(a, TR_KV_WAIT, rkey(a, "node/%d", s), NULL, -1, on_node_joined);
  }
  uv_timer_start(&a->rdzv_timer, on_rdzv_timeout, (uint64_t)(a->o->rdzv_timeout * 1000), 0);
  if (max > 1) uv_timer_start(&a->progress_timer, on_progress, PROGRESS_EVERY_MS, PROGRESS_EVERY_MS);
}

/* Node ranks: the coordinator is 0, nodes that asked for a rank get it,
 * the others fill the gaps in the order they joined. */
static void coord_finalize(agent *a) {
  int max = a->o->nnodes_max, n = a->njoined;
  char msg[1024];
  a->finalized = true;
  coord_cancel_node_ops(a);
  timer_stop(&a->rdzv_timer);
  timer_stop(&a->last_call_timer);
  timer_stop(&a->progress_timer);
  if (a->slot < 0 || a->joined[a->slot].slot < 0) {
    coord_fail_rdzv(a, "rendezvous failed: the rendezvous host itself has not joined");
    return;
  }
  int *by_rank = malloc((size_t)n * sizeof *by_rank);
  if (!by_rank) {
    coord_fail_rdzv(a, "out of memory");
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
    coord_fail_rdzv(a, "out of memory");
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
  kv(a, TR_KV_SET, rkey(a, "world"), w, 0, NULL);
  free(w);
  return;
fail:
  free(by_rank);
  coord_fail_rdzv(a, msg);
}

/* ---- the coordinator: the running job ---------------------------------------------------- */

static void on_done_ok_set(tr_kvop *op) {
  agent *a = op->ctx;
  if (op->tag != a->round) return; /* from an earlier round */
  if (op->st == EM_OK) handle_end(a, op->out);
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
  if (++a->ndone == a->nnodes) kv(a, TR_KV_SETNX, rkey(a, "end"), "ok", 0, on_done_ok_set);
}

static void coord_run_begin(agent *a) {
  free(a->done_ops);
  a->done_ops = calloc((size_t)a->nnodes, sizeof *a->done_ops);
  a->ndone = 0;
  if (!a->done_ops) {
    tr_msg("error: out of memory");
    return;
  }
  for (int nr = 0; nr < a->nnodes; nr++)
    a->done_ops[nr] = kv(a, TR_KV_WAIT, rkey(a, "done/%d", nr), NULL, -1, on_node_done);
  if (a->nnodes > 1) {
    uint64_t ms = (uint64_t)(a->o->monitor_interval * 1000);
    if (ms == 0) ms = 1;
    uv_timer_start(&a->hb_timer, on_hb_check, ms, ms);
  }
}

/* ---- signals ---------------------------------------------------------------------------- */

static bool terminating_signal(int sig) {
  return sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;
}

static void on_signal(uv_signal_t *h, int sig) {
  agent *a = h->data;
  if (!terminating_signal(sig)) {
    kill_groups(a, sig); /* SIGUSR1/SIGUSR2: for the workers to act on */
    return;
  }
  if (a->ph == PH_DONE) {
    shutdown_agent(a);
    return;
  }
  if (a->user_sig) {
    tr_msg("got %s again: killing all workers now (SIGKILL)", tr_signal_name(sig));
    kill_groups(a, SIGKILL);
    return;
  }
  a->user_sig = sig;
  if (a->ph == PH_RDZV) {
    tr_msg("got %s during the rendezvous: stopping", tr_signal_name(sig));
    if (a->coordinator && !a->finalized) {
      char msg[300];
      snprintf(msg, sizeof msg, "the rendezvous host (%s) was stopped by %s", tr_hostname(),
               tr_signal_name(sig));
      coord_fail_rdzv(a, msg);
    }
    if (a->coordinator) {
      finish(a, 128 + sig);
    } else {
      a->exit_code = 128 + sig;
      shutdown_agent(a);
    }
    return;
  }
  tr_msg("got %s: passing it to the workers and waiting for them to exit (again to kill them)",
         tr_signal_name(sig));
  if (a->ph == PH_RUN) a->ph = PH_STOP;
  terminate_all(a, sig);
  char value[400];
  snprintf(value, sizeof value, "signal %d %d %s trainrun on %s got %s", sig, a->node_rank,
           tr_hostname(), tr_hostname(), tr_signal_name(sig));
  publish_end(a, value);
  check_stopped(a);
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
    if (o->node_rank < 0 && strstr(why, "address already in use")) {
      em_clear_error();
      return EM_OK; /* another agent on this host hosts it */
    }
    return em_set_error(EM_ERR_COMM, "cannot host the rendezvous store on port %d: %s%s",
                        o->rdzv_port, why,
                        strstr(why, "in use") ? " (another job on this host? choose another port)"
                                              : "");
  }
  a->coordinator = true;
  a->master_port = em_store_server_port(a->srv);
  return EM_OK;
}

static em_status setup_logs(agent *a) {
  const tr_options *o = a->o;
  if (o->log_dir) {
    if (mkdir_p(o->log_dir) != 0)
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
  uv_signal_start(&a->sigchld, on_sigchld, SIGCHLD);
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
    shutdown_agent(a);
  } else {
    a->max_restarts = o->max_restarts;
    start_round(a);
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
