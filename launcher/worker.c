/* Starting workers, and making sure none outlives trainrun.
 *
 * Each worker is fork + exec'd into its own process group (so a signal to
 * the group reaches everything it starts) with PR_SET_PDEATHSIG = SIGKILL
 * (so it dies with trainrun, even by SIGKILL); the child checks getppid()
 * after the prctl to close the window in which trainrun could die first.
 * uv_spawn cannot run code between fork and exec, hence fork here.
 *
 * PDEATHSIG does not reach a worker's own children. For those, trainrun
 * starts a guardian at start-up: a tiny child in its own process group that
 * ignores signals and reads a pipe on which trainrun announces each worker
 * group ("+pgid", "-pgid"). When the pipe reaches EOF without a "q" first —
 * trainrun died, however — the guardian SIGKILLs every group still listed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/launcher_impl.h"

extern char **environ;

/* ---- the command ------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

static bool is_exec_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* execvp's search, done once here so a typo is one clear error instead of
 * nproc failed workers. */
static em_status find_program(const char *name, char **path) {
  if (strchr(name, '/')) {
    struct stat st;
    if (stat(name, &st) != 0)
      return em_set_error(EM_ERR_INVALID, "cannot run '%s': %s", name, strerror(errno));
    if (S_ISDIR(st.st_mode))
      return em_set_error(EM_ERR_INVALID, "cannot run '%s': it is a directory", name);
    if (access(name, X_OK) != 0)
      return em_set_error(EM_ERR_INVALID,
                          "cannot run '%s': not executable (%s)%s", name, strerror(errno),
                          ends_with(name, ".py") ? "" : "; a Python script needs a .py name");
    *path = strdup(name);
    return *path ? EM_OK : em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  const char *env = getenv("PATH");
  const char *dirs = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
  for (const char *p = dirs; *p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    char *cand = malloc(len + strlen(name) + 2);
    if (!cand) return em_set_error(EM_ERR_NOMEM, "out of memory");
    if (len == 0) sprintf(cand, "%s", name); /* an empty entry is the current directory */
    else sprintf(cand, "%.*s/%s", (int)len, p, name);
    if (is_exec_file(cand)) {
      *path = cand;
      return EM_OK;
    }
    free(cand);
    p += len + (colon ? 1 : 0);
  }
  if (access(name, F_OK) == 0)
    return em_set_error(EM_ERR_INVALID,
                        "cannot run '%s': not found on PATH (to run the file in this directory, "
                        "write ./%s)",
                        name, name);
  return em_set_error(EM_ERR_INVALID, "cannot run '%s': not found on PATH", name);
}

em_status tr_command_build(const tr_options *o, tr_command *cmd) {
  *cmd = (tr_command){0};
  const char *prog = o->prog[0];
  const char *py = getenv("TRAINRUN_PYTHON");
  if (!py || !*py) py = EMBER_PYTHON_EXECUTABLE;
  bool python = o->module || (!o->no_python && ends_with(prog, ".py"));
  int extra = python ? (o->module ? 2 : 1) : 0;
  em_status st = EM_OK;
  cmd->argv = calloc((size_t)(o->nprog + extra + 1), sizeof *cmd->argv);
  if (!cmd->argv) return em_set_error(EM_ERR_NOMEM, "out of memory");
  int n = 0;
  if (python) {
    if (!is_exec_file(py)) {
      st = em_set_error(EM_ERR_INVALID,
                        "the Python interpreter ember was built for (%s) cannot be run: %s "
                        "(set TRAINRUN_PYTHON to another one)",
                        py, access(py, F_OK) ? "no such file" : "not executable");
      goto fail;
    }
    if (!o->module && access(prog, R_OK) != 0) {
      st = em_set_error(EM_ERR_INVALID, "cannot read the script '%s': %s", prog, strerror(errno));
      goto fail;
    }
    if (!(cmd->path = strdup(py)) || !(cmd->argv[n++] = strdup(py))) goto nomem;
    if (o->module && !(cmd->argv[n++] = strdup("-m"))) goto nomem;
  } else {
    if ((st = find_program(prog, &cmd->path))) goto fail;
  }
  for (int i = 0; i < o->nprog; i++)
    if (!(cmd->argv[n++] = strdup(o->prog[i]))) goto nomem;
  cmd->argc = n;
  return EM_OK;
nomem:
  st = em_set_error(EM_ERR_NOMEM, "out of memory");
fail:
  cmd->argc = n;
  tr_command_free(cmd);
  return st;
}

void tr_command_free(tr_command *cmd) {
  if (cmd->argv)
    for (int i = 0; i < cmd->argc; i++) free(cmd->argv[i]);
  free(cmd->argv);
  free(cmd->path);
  *cmd = (tr_command){0};
}

/* ---- environment ------------------------------------------------------------- */

static em_status env_push(tr_env *e, char *kv) {
  if (!kv) return em_set_error(EM_ERR_NOMEM, "out of memory");
  if (e->n + 2 > e->cap) {
    int cap = e->cap ? e->cap * 2 : 64;
    char **v = realloc(e->v, (size_t)cap * sizeof *v);
    if (!v) {
      free(kv);
      return em_set_error(EM_ERR_NOMEM, "out of memory");
    }
    e->v = v;
    e->cap = cap;
  }
  e->v[e->n++] = kv;
  e->v[e->n] = NULL;
  return EM_OK;
}

em_status tr_env_from_current(tr_env *e) {
  *e = (tr_env){0};
  for (char **p = environ; *p; p++) {
    em_status st = env_push(e, strdup(*p));
    if (st) {
      tr_env_free(e);
      return st;
    }
  }
  if (!e->v) return env_push(e, strdup("TRAINRUN=1")) ? EM_ERR_NOMEM : EM_OK;
  return EM_OK;
}

static int env_find(const tr_env *e, const char *name) {
  size_t len = strlen(name);
  for (int i = 0; i < e->n; i++)
    if (!strncmp(e->v[i], name, len) && e->v[i][len] == '=') return i;
  return -1;
}

em_status tr_env_clone(tr_env *dst, const tr_env *src) {
  *dst = (tr_env){0};
  for (int i = 0; i < src->n; i++) {
    em_status st = env_push(dst, strdup(src->v[i]));
    if (st) {
      tr_env_free(dst);
      return st;
    }
  }
  return EM_OK;
}

const char *tr_env_get(const tr_env *e, const char *name) {
  int i = env_find(e, name);
  return i < 0 ? NULL : e->v[i] + strlen(name) + 1;
}

em_status tr_env_set(tr_env *e, const char *name, const char *value) {
  size_t a = strlen(name), b = strlen(value);
  char *kv = malloc(a + b + 2);
  if (!kv) return em_set_error(EM_ERR_NOMEM, "out of memory");
  memcpy(kv, name, a);
  kv[a] = '=';
  memcpy(kv + a + 1, value, b + 1);
  int i = env_find(e, name);
  if (i >= 0) {
    free(e->v[i]);
    e->v[i] = kv;
    return EM_OK;
  }
  return env_push(e, kv);
}

void tr_env_free(tr_env *e) {
  for (int i = 0; i < e->n; i++) free(e->v[i]);
  free(e->v);
  *e = (tr_env){0};
}

/* ---- spawning ---------------------------------------------------------------- */

/* SIGPIPE as trainrun found it (it ignores SIGPIPE itself). */
static struct sigaction g_sigpipe_orig;
static bool g_sigpipe_saved;

static void save_sigpipe(void) {
  if (g_sigpipe_saved) return;
  sigaction(SIGPIPE, NULL, &g_sigpipe_orig);
  g_sigpipe_saved = true;
  signal(SIGPIPE, SIG_IGN);
}

/* Only async-signal-safe calls between fork and exec. */
static void child_fail(const char *what, const char *path, int err) {
  const char *desc = strerrordesc_np(err);
  const char *parts[] = {"trainrun: cannot start ", path, ": ", what, ": ",
                         desc ? desc : "error", "\n"};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    ssize_t r = write(2, parts[i], strlen(parts[i]));
    (void)r;
  }
  _exit(127);
}

pid_t tr_spawn_worker(const tr_spawn *sp) {
  save_sigpipe();
  /* All signals blocked across the fork: a signal that reached the child
   * before exec would run libuv's handler there, which writes into the
   * parent's signal pipe — trainrun would "receive" a signal nobody sent,
   * and the child would not die of it. The child resets the handlers to
   * the default first, then unblocks. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    em_set_error(EM_ERR_INTERNAL, "fork failed: %s", strerror(err));
    return -1;
  }
  if (pid == 0) {
    for (int sig = 1; sig < NSIG; sig++) {
      struct sigaction sa;
      if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0) continue;
      if (sig == SIGPIPE) sigaction(SIGPIPE, &g_sigpipe_orig, NULL);
      else if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN) signal(sig, SIG_DFL);
      /* SIG_IGN stays, as for any program started under nohup */
    }
    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail("prctl", sp->cmd->path, errno);
    if (getppid() != parent) _exit(137); /* trainrun died before the prctl */
    int nul = open("/dev/null", O_RDONLY);
    if (nul < 0) child_fail("/dev/null", sp->cmd->path, errno);
    if (dup2(nul, 0) < 0 || dup2(sp->out_fd, 1) < 0 || dup2(sp->err_fd, 2) < 0)
      child_fail("dup2", sp->cmd->path, errno);
    close_range(3, ~0u, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(sp->cmd->path, sp->cmd->argv, sp->envp);
    child_fail("exec", sp->cmd->path, errno);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  /* also here, so the group exists before anyone signals it */
  setpgid(pid, pid);
  return pid;
}

/* ---- the guardian ------------------------------------------------------------ */

static void guardian_main(int fd) {
  static const int ignore[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
                               SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU, SIGALRM};
  for (size_t i = 0; i < sizeof ignore / sizeof ignore[0]; i++) signal(ignore[i], SIG_IGN);
  setpgid(0, 0);
  prctl(PR_SET_NAME, "trainrun-guard");
  int nul = open("/dev/null", O_RDWR);
  if (nul >= 0) {
    dup2(nul, 0);
    dup2(nul, 1);
    dup2(nul, 2);
    if (nul > 2) close(nul);
  }
  if (fd != 3) {
    dup2(fd, 3);
    close(fd);
    fd = 3;
  }
  close_range(4, ~0u, 0);
  pid_t *groups = NULL;
  size_t n = 0, cap = 0;
  char buf[4096], line[64];
  size_t ll = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* trainrun is gone */
    for (ssize_t i = 0; i < r; i++) {
      char c = buf[i];
      if (c != '\n') {
        if (ll < sizeof line - 1) line[ll++] = c;
        continue;
      }
      line[ll] = 0;
      ll = 0;
      if (line[0] == 'q') _exit(0); /* orderly exit: trainrun stopped them itself */
      pid_t g = (pid_t)atol(line + 1);
      if (g <= 1) continue;
      if (line[0] == '+') {
        if (n == cap) {
          size_t nc = cap ? cap * 2 : 64;
          pid_t *ng = realloc(groups, nc * sizeof *ng);
          if (!ng) continue;
          groups = ng;
          cap = nc;
        }
        groups[n++] = g;
      } else if (line[0] == '-') {
        for (size_t k = 0; k < n; k++)
          if (groups[k] == g) {
            groups[k] = groups[--n];
            break;
          }
      }
    }
  }
  for (size_t k = 0; k < n; k++) kill(-groups[k], SIGKILL);
  _exit(0);
}

em_status tr_guardian_start(int *fd, pid_t *pid) {
  save_sigpipe();
  int p[2];
  *fd = -1;
  *pid = -1;
  if (pipe2(p, O_CLOEXEC) != 0)
    return em_set_error(EM_ERR_INTERNAL, "cannot create the guardian's pipe: %s",
                        strerror(errno));
  pid_t g = fork();
  if (g < 0) {
    close(p[0]);
    close(p[1]);
    return em_set_error(EM_ERR_INTERNAL, "cannot start the guardian: fork: %s", strerror(errno));
  }
  if (g == 0) {
    close(p[1]);
    guardian_main(p[0]);
  }
  close(p[0]);
  *fd = p[1];
  *pid = g;
  return EM_OK;
}

void tr_guardian_track(int fd, pid_t pgid, bool add) {
  if (fd < 0) return;
  char line[32];
  int n = snprintf(line, sizeof line, "%c%d\n", add ? '+' : '-', (int)pgid);
  ssize_t r;
  do r = write(fd, line, (size_t)n);
  while (r < 0 && errno == EINTR);
}

void tr_guardian_stop(int fd) {
  if (fd < 0) return;
  ssize_t r;
  do r = write(fd, "q\n", 2);
  while (r < 0 && errno == EINTR);
  close(fd);
}
