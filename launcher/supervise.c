/* Supervising this node's workers: spawning them with their environment
 * and output pipes, reaping them (SIGCHLD), and stopping them — SIGTERM to
 * each process group, SIGKILL after the grace period — until every process
 * of the round is gone. */
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

#include <uv.h>

#include "comm/store.h"
#include "launcher/agent_impl.h"

#define DEADLINE_AFTER_KILL_MS 5000 /* how long SIGKILLed groups may take to vanish */

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

int tr__mkdir_p(const char *path) {
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
  TR_CHECK(tr_env_set(base, "TRAINRUN_STORE_PREFIX", tr__rkey(a, "worker")));
  /* the agent hosts the store at MASTER_ADDR:MASTER_PORT: rank 0 connects
   * to it like every other rank instead of hosting one (comm/process_group.c) */
  TR_CHECK(tr_env_set(base, "EMBER_STORE_HOSTED", "1"));
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
  tr__local_failure(a, w, why);
  return false;
}

void tr__launch_workers(agent *a) {
  a->w = calloc((size_t)a->nw, sizeof *a->w);
  if (!a->w) {
    tr_msg("error: out of memory");
    a->nw = 0;
    tr__finish(a, 1);
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
    if (tr__mkdir_p(dir) != 0) tr_msg("warning: cannot create the log directory %s: %s", dir,
                                  strerror(errno));
  }
  tr_env base = {0};
  if (worker_env(a, &base) != EM_OK) {
    tr_msg("error: cannot build the workers' environment: %s", em_last_error());
    tr_env_free(&base);
    tr__local_failure(a, &a->w[0], "no environment");
    return;
  }
  for (int i = 0; i < a->nw; i++) {
    a->w[i].group_gone = false;
    if (!spawn_one(a, &a->w[i], &base)) break;
  }
  tr_env_free(&base);
  tr__check_stopped(a);
}

void tr__free_workers(agent *a) {
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
  tr__check_stopped(a);
}

void tr__kill_groups(agent *a, int sig) {
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
  tr__kill_groups(a, SIGKILL);
  uv_timer_start(&a->deadline_timer, on_deadline, DEADLINE_AFTER_KILL_MS, 0);
  tr__check_stopped(a);
}

/* Sends sig to every live worker group and starts the grace period. A
 * round whose processes are all gone has nothing left to stop: a grace
 * timer armed then would fire into the next round. */
void tr__terminate_all(agent *a, int sig) {
  if (a->local_stopped) return;
  tr__kill_groups(a, sig);
  if (a->terminating) return;
  a->terminating = true;
  if (sig == SIGKILL || a->o->grace_period <= 0) on_grace(&a->grace_timer);
  else uv_timer_start(&a->grace_timer, on_grace, (uint64_t)(a->o->grace_period * 1000), 0);
}

void tr__begin_stop(agent *a, int sig) {
  if (a->ph == PH_RUN) a->ph = PH_STOP;
  if (!a->w || a->local_stopped) return; /* (the verdict can come after the stop) */
  if (a->terminating) { /* already stopping (a failure, the user's signal) */
    tr__check_stopped(a);
    return;
  }
  int alive = 0;
  for (int i = 0; i < a->nw; i++) alive += a->w[i].running;
  if (alive && sig == SIGTERM && !a->terminating)
    tr_msg("stopping %d worker%s on %s (SIGTERM, then SIGKILL after %g s)", alive,
           alive == 1 ? "" : "s", tr_hostname(), a->o->grace_period);
  tr__terminate_all(a, sig);
  tr__check_stopped(a);
}

/* Decides whether every process of this round is gone; then finishes
 * the output and moves on. */
void tr__check_stopped(agent *a) {
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
      tr__terminate_all(a, SIGTERM);
    }
    return;
  }
  a->local_stopped = true;
  a->terminating = false;
  tr__timer_stop(&a->grace_timer);
  tr__timer_stop(&a->deadline_timer);
  for (int i = 0; i < a->nw; i++) {
    worker *w = &a->w[i];
    poll_close(&w->pout);
    poll_close(&w->perr);
    tr_stream_finish(&w->out);
    tr_stream_finish(&w->err);
  }
  tr__maybe_round_over(a);
}

static void on_worker_exit(agent *a, worker *w) {
  bool failed = !(WIFEXITED(w->status) && WEXITSTATUS(w->status) == 0);
  if (a->ph != PH_RUN || a->user_sig) return;
  if (failed) tr__local_failure(a, w, NULL);
  else if (a->nlive == 0) tr__publish_done(a);
}

void tr__on_sigchld(uv_signal_t *h, int signum) {
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
  tr__check_stopped(a);
}
