/* trainrun end to end on one node: it runs the real binary with the test
 * worker (tr_worker.c) and checks environments, output, failures,
 * restarts, signals and that no process survives. Each worker carries a
 * unique marker=... argument, so "nothing survived" is a scan of
 * /proc/<pid>/cmdline for it. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/free_port.h"
#include "tests/harness.h"

#ifndef TRAINRUN_PATH
#error "the build passes TRAINRUN_PATH"
#endif

#define W TR_WORKER_PATH
#define ARGS(...) ((const char *[]){__VA_ARGS__, NULL})

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return strdup("");
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      char *b = realloc(buf, cap *= 2);
      if (!b) break;
      buf = b;
    }
  }
  fclose(f);
  if (buf) buf[len] = 0;
  return buf ? buf : strdup("");
}

typedef struct proc {
  pid_t pid;
  char out[64], err[64];
  double t0;
} proc;

/* Starts trainrun with args, its stdout and stderr going to temp files. */
static bool start(proc *p, const char *const *args) {
  snprintf(p->out, sizeof p->out, "/tmp/trtest_out_XXXXXX");
  snprintf(p->err, sizeof p->err, "/tmp/trtest_err_XXXXXX");
  int fo = mkstemp(p->out), fe = mkstemp(p->err);
  if (fo < 0 || fe < 0) return false;
  const char *argv[64] = {TRAINRUN_PATH};
  int n = 1;
  for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
  argv[n] = NULL;
  p->t0 = now_s();
  p->pid = fork();
  if (p->pid == 0) {
    dup2(fo, 1);
    dup2(fe, 2);
    execv(TRAINRUN_PATH, (char **)argv);
    _exit(126);
  }
  close(fo);
  close(fe);
  return p->pid > 0;
}

/* Waits for p; returns its exit code (128+N for a signal), or -1 after
 * timeout seconds (then it is killed). *secs = how long it ran. */
static int finish_proc(proc *p, double timeout, double *secs) {
  int st = 0;
  for (;;) {
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) break;
    if (now_s() - p->t0 > timeout) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &st, 0);
      fprintf(stderr, "  trainrun did not finish within %g s\n", timeout);
      return -1;
    }
    sleep_ms(2);
  }
  if (secs) *secs = now_s() - p->t0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs trainrun to the end; out/err are malloc'd (caller frees). */
static int run(const char *const *args, double timeout, char **out, char **err, double *secs) {
  proc p;
  if (!start(&p, args)) return -1;
  int code = finish_proc(&p, timeout, secs);
  *out = slurp(p.out);
  *err = slurp(p.err);
  unlink(p.out);
  unlink(p.err);
  if (code != 0 && getenv("TRTEST_VERBOSE")) fprintf(stderr, "---\n%s---\n%s---\n", *out, *err);
  return code;
}

/* Waits until file holds count copies of text. */
static bool wait_text(const char *path, const char *text, int count, double timeout) {
  double t0 = now_s();
  while (now_s() - t0 < timeout) {
    char *s = slurp(path);
    int n = 0;
    for (const char *p = s; (p = strstr(p, text)); p++) n++;
    free(s);
    if (n >= count) return true;
    sleep_ms(5);
  }
  return false;
}

/* Processes (other than us) whose command line mentions marker. */
static int count_marker(const char *marker) {
  DIR *d = opendir("/proc");
  if (!d) return 0;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    if (atoi(e->d_name) == getpid()) continue;
    char path[300], buf[8192];
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(buf + i) + 1)
      if (strstr(buf + i, marker)) {
        n++;
        break;
      }
  }
  closedir(d);
  return n;
}

/* True once no process mentions marker (within timeout). */
static bool none_left(const char *marker, double timeout) {
  double t0 = now_s();
  while (now_s() - t0 < timeout) {
    if (count_marker(marker) == 0) return true;
    sleep_ms(10);
  }
  return count_marker(marker) == 0;
}

static const char *new_marker(void) {
  static char m[64];
  static int k;
  snprintf(m, sizeof m, "marker=trtest-%d-%d", (int)getpid(), ++k);
  return m;
}

/* The value of NAME in an env dump ("NAME=value\n" lines), in buf. */
static const char *env_value(const char *dump, const char *name, char *buf, size_t size) {
  size_t n = strlen(name);
  for (const char *p = dump; p && *p;) {
    if (!strncmp(p, name, n) && p[n] == '=') {
      const char *e = strchr(p, '\n');
      size_t len = e ? (size_t)(e - p - (ptrdiff_t)n - 1) : strlen(p + n + 1);
      if (len >= size) len = size - 1;
      memcpy(buf, p + n + 1, len);
      buf[len] = 0;
      return buf;
    }
    p = strchr(p, '\n');
    if (p) p++;
  }
  return NULL;
}

#define ASSERT_HAS(text, sub)                                                        \
  do {                                                                               \
    if (!strstr((text), (sub))) {                                                    \
      EM_FAILF("expected to find \"%s\" in:\n%s", (sub), (text));                    \
      goto out;                                                                      \
    }                                                                                \
  } while (0)
#define ASSERT_LACKS(text, sub)                                                      \
  do {                                                                               \
    if (strstr((text), (sub))) {                                                     \
      EM_FAILF("did not expect \"%s\" in:\n%s", (sub), (text));                      \
      goto out;                                                                      \
    }                                                                                \
  } while (0)
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      EM_FAILF("check failed: %s", #cond);                                           \
      goto out;                                                                      \
    }                                                                                \
  } while (0)
#define CHECK_EQ(a, b)                                                               \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    if (a_ != b_) {                                                                  \
      EM_FAILF("%s == %s failed: %lld != %lld\nstdout:\n%s\nstderr:\n%s", #a, #b, a_,  \
               b_, out ? out : "", err ? err : "");                                  \
      goto out;                                                                      \
    }                                                                                \
  } while (0)

static void rm_rf(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  int r = system(cmd);
  (void)r;
}

/* ---- the tests ------------------------------------------------------------ */

EM_TEST(help_and_version) {
  char *out = NULL, *err = NULL;
  int code = run(ARGS("--help"), 10, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "usage: trainrun");
  ASSERT_HAS(out, "examples:");
  ASSERT_HAS(out, "--max-restarts");
  free(out), free(err);
  code = run(ARGS("--version"), 10, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "trainrun (ember) ");
out:
  free(out);
  free(err);
}

EM_TEST(bad_command_lines) {
  char *out = NULL, *err = NULL;
  int code = run(ARGS("--nprocs", "2", W, "ok"), 10, &out, &err, NULL);
  CHECK_EQ(code, 2);
  ASSERT_HAS(err, "trainrun: error: unknown option '--nprocs' (did you mean --nproc?)");
  ASSERT_HAS(err, "trainrun --help");
  free(out), free(err);
  code = run(ARGS("--nproc", "2", "/nonexistent/prog"), 10, &out, &err, NULL);
  CHECK_EQ(code, 2);
  ASSERT_HAS(err, "cannot run '/nonexistent/prog': No such file or directory");
  free(out), free(err);
  code = run(ARGS("no-such-program-trtest"), 10, &out, &err, NULL);
  CHECK_EQ(code, 2);
  ASSERT_HAS(err, "cannot run 'no-such-program-trtest': not found on PATH");
  free(out), free(err);
  code = run(ARGS("/nonexistent/train.py"), 10, &out, &err, NULL);
  CHECK_EQ(code, 2);
  ASSERT_HAS(err, "/nonexistent/train.py");
out:
  free(out);
  free(err);
}

EM_TEST(env_vars) {
  char dir[] = "/tmp/trtest_env_XXXXXX";
  char *out = NULL, *err = NULL, *dump[3] = {NULL, NULL, NULL};
  char v[512], secret[512] = "", port[512] = "", runid[512] = "";
  ASSERT_TRUE(mkdtemp(dir));
  unsetenv("OMP_NUM_THREADS");
  int code = run(ARGS("--nproc", "3", "--max-restarts", "2", "--rdzv-id", "job-7", W, "env", dir),
                 20, &out, &err, NULL);
  CHECK_EQ(code, 0);
  for (int r = 0; r < 3; r++) {
    char path[600];
    snprintf(path, sizeof path, "%s/rank%d.env", dir, r);
    dump[r] = slurp(path);
    char want[16];
    snprintf(want, sizeof want, "%d", r);
    CHECK(env_value(dump[r], "RANK", v, sizeof v) && !strcmp(v, want));
    CHECK(env_value(dump[r], "LOCAL_RANK", v, sizeof v) && !strcmp(v, want));
    CHECK(env_value(dump[r], "WORLD_SIZE", v, sizeof v) && !strcmp(v, "3"));
    CHECK(env_value(dump[r], "LOCAL_WORLD_SIZE", v, sizeof v) && !strcmp(v, "3"));
    CHECK(env_value(dump[r], "GROUP_RANK", v, sizeof v) && !strcmp(v, "0"));
    CHECK(env_value(dump[r], "GROUP_WORLD_SIZE", v, sizeof v) && !strcmp(v, "1"));
    CHECK(env_value(dump[r], "MASTER_ADDR", v, sizeof v) && !strcmp(v, "127.0.0.1"));
    CHECK(env_value(dump[r], "TRAINRUN_RESTART_COUNT", v, sizeof v) && !strcmp(v, "0"));
    CHECK(env_value(dump[r], "TRAINRUN_MAX_RESTARTS", v, sizeof v) && !strcmp(v, "2"));
    CHECK(env_value(dump[r], "TRAINRUN_RUN_ID", v, sizeof v) && !strcmp(v, "job-7"));
    CHECK(env_value(dump[r], "OMP_NUM_THREADS", v, sizeof v) && !strcmp(v, "1"));
    CHECK(env_value(dump[r], "PYTHONPATH", v, sizeof v));
    CHECK(strstr(v, EMBER_TEST_BINARY_DIR "/python") && strstr(v, EMBER_TEST_SOURCE_DIR "/python"));
    CHECK(env_value(dump[r], "MASTER_PORT", v, sizeof v) && atoi(v) > 0 && atoi(v) < 65536);
    if (r == 0) snprintf(port, sizeof port, "%s", v);
    CHECK(!strcmp(v, port));
    CHECK(env_value(dump[r], "EMBER_STORE_SECRET", v, sizeof v) && strlen(v) == 64);
    if (r == 0) snprintf(secret, sizeof secret, "%s", v);
    CHECK(!strcmp(v, secret));
    CHECK(env_value(dump[r], "TRAINRUN_STORE_PREFIX", v, sizeof v));
    if (r == 0) snprintf(runid, sizeof runid, "%s", v);
    CHECK(!strcmp(v, runid) && strstr(v, "job-7"));
  }
  free(out), free(err);
  out = err = NULL;
  /* a user's OMP_NUM_THREADS stays; a new job gets a new secret */
  setenv("OMP_NUM_THREADS", "4", 1);
  code = run(ARGS("--nproc", "1", W, "env", dir), 20, &out, &err, NULL);
  unsetenv("OMP_NUM_THREADS");
  CHECK_EQ(code, 0);
  free(dump[0]);
  {
    char path[600];
    snprintf(path, sizeof path, "%s/rank0.env", dir);
    dump[0] = slurp(path);
  }
  CHECK(env_value(dump[0], "OMP_NUM_THREADS", v, sizeof v) && !strcmp(v, "4"));
  CHECK(env_value(dump[0], "EMBER_STORE_SECRET", v, sizeof v) && strcmp(v, secret) != 0);
  CHECK(env_value(dump[0], "TRAINRUN_MAX_RESTARTS", v, sizeof v) && !strcmp(v, "0"));
out:
  for (int r = 0; r < 3; r++) free(dump[r]);
  free(out);
  free(err);
  rm_rf(dir);
}

EM_TEST(output_is_prefixed_by_line) {
  char *out = NULL, *err = NULL;
  int code = run(ARGS("--nproc", "2", W, "print"), 20, &out, &err, NULL);
  CHECK_EQ(code, 0);
  for (int r = 0; r < 2; r++) {
    char want[128];
    snprintf(want, sizeof want, "[rank %d]: out line 1 from %d\n", r, r);
    ASSERT_HAS(out, want);
    snprintf(want, sizeof want, "[rank %d]: out line 2 from %d\n", r, r);
    ASSERT_HAS(out, want);
    snprintf(want, sizeof want, "[rank %d]: split line\n", r);
    ASSERT_HAS(out, want);
    snprintf(want, sizeof want, "[rank %d]: no newline at the end\n", r);
    ASSERT_HAS(out, want);
    snprintf(want, sizeof want, "[rank %d]: err line from %d\n", r, r);
    ASSERT_HAS(err, want);
    ASSERT_LACKS(out, "err line");
  }
  /* every line of stdout is one whole worker line */
  for (const char *p = out; *p;) {
    CHECK(!strncmp(p, "[rank ", 6));
    const char *nl = strchr(p, '\n');
    CHECK(nl);
    p = nl + 1;
  }
  free(out), free(err);
  out = err = NULL;
  /* --ranks-filter: only rank 1 on the console */
  code = run(ARGS("--nproc", "2", "--ranks-filter", "1", W, "print"), 20, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 1]: out line 1 from 1");
  ASSERT_LACKS(out, "[rank 0]");
  ASSERT_LACKS(err, "[rank 0]");
out:
  free(out);
  free(err);
}

EM_TEST(log_dir) {
  char dir[] = "/tmp/trtest_logs_XXXXXX";
  char *out = NULL, *err = NULL, *log = NULL;
  ASSERT_TRUE(mkdtemp(dir));
  int code = run(ARGS("--nproc", "2", "--log-dir", dir, W, "print"), 20, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 0]: out line 1 from 0"); /* the console still has it */
  char path[600];
  snprintf(path, sizeof path, "%s/attempt_0/rank_1.log", dir);
  log = slurp(path);
  ASSERT_HAS(log, "out line 1 from 1\n");
  ASSERT_HAS(log, "err line from 1\n");
  ASSERT_HAS(log, "no newline at the end\n");
  ASSERT_LACKS(log, "[rank");
  free(out), free(err), free(log);
  out = err = log = NULL;
  /* --redirects 1: stdout only to the files */
  code = run(ARGS("--nproc", "2", "--log-dir", dir, "--redirects", "1", W, "print"), 20, &out,
             &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_LACKS(out, "out line");
  ASSERT_HAS(err, "[rank 0]: err line from 0");
  snprintf(path, sizeof path, "%s/attempt_0/rank_0.log", dir);
  log = slurp(path);
  ASSERT_HAS(log, "out line 2 from 0\n");
  ASSERT_LACKS(log, "err line"); /* --redirects alone writes only what it redirects */
out:
  free(out);
  free(err);
  free(log);
  rm_rf(dir);
}

EM_TEST(failing_rank_stops_the_others) {
  const char *m = new_marker();
  char *out = NULL, *err = NULL;
  double secs = 0;
  int code = run(ARGS("--nproc", "3", "--grace-period", "5", W, "fail", "1", "7", "100", m), 20,
                 &out, &err, &secs);
  CHECK_EQ(code, 7);
  ASSERT_HAS(err, "job failed: rank 1 (local rank 1 on host ");
  ASSERT_HAS(err, "exited with code 7");
  ASSERT_HAS(err, "last 3 lines of rank 1's stderr:");
  ASSERT_HAS(err, "trainrun:   last words of rank 1");
  ASSERT_HAS(err, "exiting with code 7");
  /* the other ranks die of the SIGTERM at once, long before the grace
   * period would have SIGKILLed them */
  CHECK(secs < 3.0);
  CHECK(none_left(m, 2.0));
out:
  free(out);
  free(err);
}

EM_TEST(crash_names_the_signal) {
  const char *m = new_marker();
  char *out = NULL, *err = NULL;
  int code = run(ARGS("--nproc", "2", W, "crash", "0", m), 20, &out, &err, NULL);
  CHECK_EQ(code, 128 + SIGSEGV);
  ASSERT_HAS(err, "rank 0 (local rank 0");
  ASSERT_HAS(err, "was killed by SIGSEGV (signal 11)");
  ASSERT_HAS(err, "about to crash");
  CHECK(none_left(m, 2.0));
out:
  free(out);
  free(err);
}

EM_TEST(ignoring_sigterm_gets_sigkill_after_the_grace_period) {
  const char *m = new_marker();
  char *out = NULL, *err = NULL;
  double secs = 0;
  setenv("TR_WORKER_IGNORE_TERM", "1", 1);
  int code = run(ARGS("--nproc", "2", "--grace-period", "0.5", W, "fail", "1", "5", "100", m), 20,
                 &out, &err, &secs);
  unsetenv("TR_WORKER_IGNORE_TERM");
  CHECK_EQ(code, 5);
  ASSERT_HAS(err, "rank 0 did not stop within the grace period (0.5 s): sending SIGKILL");
  CHECK(secs >= 0.5 && secs < 4.0);
  CHECK(none_left(m, 2.0));
out:
  free(out);
  free(err);
}

EM_TEST(restarts_up_to_max_restarts) {
  char dir[] = "/tmp/trtest_restart_XXXXXX";
  char *out = NULL, *err = NULL, *r0 = NULL, *r1 = NULL;
  ASSERT_TRUE(mkdtemp(dir));
  char path[600];
  /* fails twice, then succeeds in the third attempt */
  int code = run(ARGS("--nproc", "2", "--max-restarts", "3", W, "restart", "2", dir), 20, &out,
                 &err, NULL);
  CHECK_EQ(code, 0);
  snprintf(path, sizeof path, "%s/rank0.restarts", dir);
  r0 = slurp(path);
  snprintf(path, sizeof path, "%s/rank1.restarts", dir);
  r1 = slurp(path);
  CHECK(!strcmp(r0, "0 3\n1 3\n2 3\n"));
  CHECK(!strcmp(r1, "0 3\n1 3\n2 3\n"));
  ASSERT_HAS(err, "restarting all workers (restart 1 of 3)");
  ASSERT_HAS(err, "restarting all workers (restart 2 of 3)");
  ASSERT_LACKS(err, "restart 3 of 3");
  free(out), free(err), free(r0), free(r1);
  out = err = r0 = r1 = NULL;
  rm_rf(dir);
  ASSERT_TRUE(mkdtemp(strcpy(dir, "/tmp/trtest_restart_XXXXXX")));
  /* always fails: 1 + 2 attempts, then the failed worker's code */
  code = run(ARGS("--nproc", "2", "--max-restarts", "2", W, "restart", "99", dir), 20, &out, &err,
             NULL);
  CHECK_EQ(code, 3);
  snprintf(path, sizeof path, "%s/rank0.restarts", dir);
  r0 = slurp(path);
  CHECK(!strcmp(r0, "0 2\n1 2\n2 2\n"));
  ASSERT_HAS(err, "exiting with code 3 (no restarts left)");
out:
  free(out);
  free(err);
  free(r0);
  free(r1);
  rm_rf(dir);
}

/* The restarted round outlives the grace period of the stop that ended
 * the round before: nothing of that stop may reach it. */
EM_TEST(a_restarted_round_runs_past_the_last_grace_period) {
  char dir[] = "/tmp/trtest_restart_XXXXXX";
  char *out = NULL, *err = NULL;
  ASSERT_TRUE(mkdtemp(dir));
  int code = run(ARGS("--nproc", "2", "--max-restarts", "1", "--grace-period", "0.3", W, "restart",
                      "1", dir, "1200"),
                 20, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(err, "restarting all workers (restart 1 of 1)");
  ASSERT_LACKS(err, "did not stop within the grace period");
out:
  free(out);
  free(err);
  rm_rf(dir);
}

/* Starts 2 workers running mode (args), sends sig to trainrun once they
 * are ready; trainrun must exit with want_code and leave nothing behind. */
static void signal_test(int sig, const char *const *args, int want_code, int want_procs,
                        const char *want_out) {
  const char *m = new_marker();
  proc p;
  char *out = NULL, *err = NULL;
  const char *argv[32] = {"--nproc", "2", "--grace-period", "3"};
  int n = 4;
  for (int i = 0; args[i] && n < 30; i++) argv[n++] = args[i];
  argv[n++] = m;
  argv[n] = NULL;
  ASSERT_TRUE(start(&p, argv));
  if (!wait_text(p.out, "ready", 2, 10)) {
    kill(p.pid, SIGKILL);
    finish_proc(&p, 5, NULL);
    EM_FAILF("the workers did not start");
    goto out;
  }
  CHECK(count_marker(m) >= want_procs);
  kill(p.pid, sig);
  double secs = 0;
  int code = finish_proc(&p, 10, &secs);
  out = slurp(p.out);
  err = slurp(p.err);
  CHECK_EQ(code, want_code);
  CHECK(secs < 5);
  if (want_out) ASSERT_HAS(out, want_out);
  CHECK(none_left(m, 3.0));
out:
  unlink(p.out);
  unlink(p.err);
  free(out);
  free(err);
}

/* trainrun, its guardian and the 2 workers carry the marker */
EM_TEST(sigint_is_forwarded_and_nothing_survives) {
  signal_test(SIGINT, ARGS(W, "sleep"), 128 + SIGINT, 4, NULL);
}

EM_TEST(sigint_handled_by_workers) {
  /* the workers catch SIGINT and exit 0: so does trainrun */
  signal_test(SIGINT, ARGS(W, "catch", "2", "0"), 0, 4, "[rank 1]: got signal 2");
}

EM_TEST(sigusr1_is_forwarded) {
  signal_test(SIGUSR1, ARGS(W, "catch", "10", "0"), 0, 4, "[rank 0]: got signal 10");
}

EM_TEST(sigterm_reaches_grandchildren) {
  signal_test(SIGTERM, ARGS(W, "fork"), 128 + SIGTERM, 6, NULL);
}

EM_TEST(sigkill_of_trainrun_leaves_no_process) {
  signal_test(SIGKILL, ARGS(W, "fork"), 128 + SIGKILL, 6, NULL);
}

EM_TEST(unforwarded_signal_kills_trainrun_and_the_guardian_cleans_up) {
  /* --signals none: SIGTERM kills trainrun itself; the workers and their
   * children must die all the same */
  signal_test(SIGTERM, ARGS("--signals", "none", W, "fork"), 128 + SIGTERM, 6, NULL);
}

EM_TEST(store_refuses_a_wrong_secret) {
  char *out = NULL, *err = NULL;
  int code = run(ARGS("--nproc", "2", W, "store"), 30, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 0]: store ok");
  ASSERT_HAS(out, "[rank 1]: store ok");
  ASSERT_HAS(out, "[rank 0]: wrong secret refused: ");
  ASSERT_HAS(out, "authentication failed");
  ASSERT_HAS(out, "[rank 1]: missing secret refused: ");
  /* the agent logs the refused clients */
  ASSERT_HAS(err, "trainrun: store: ");
out:
  free(out);
  free(err);
}

EM_TEST(python_scripts_and_modules) {
  if (access(EMBER_TEST_PYTHON, X_OK) != 0) EM_SKIP("%s is not installed", EMBER_TEST_PYTHON);
  char dir[] = "/tmp/trtest_py_XXXXXX";
  char *out = NULL, *err = NULL;
  ASSERT_TRUE(mkdtemp(dir));
  char script[600], sh[600];
  snprintf(script, sizeof script, "%s/train.py", dir);
  FILE *f = fopen(script, "w");
  CHECK(f);
  fprintf(f, "import os, sys\nprint('py', os.environ['RANK'], sys.executable)\n");
  fclose(f);
  int code = run(ARGS("--nproc", "2", script), 30, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 0]: py 0 " EMBER_TEST_PYTHON);
  ASSERT_HAS(out, "[rank 1]: py 1 " EMBER_TEST_PYTHON);
  free(out), free(err);
  out = err = NULL;
  code = run(ARGS("--nproc", "1", "-m", "platform"), 30, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 0]: Linux");
  free(out), free(err);
  out = err = NULL;
  /* --no-python runs even a .py file directly */
  snprintf(sh, sizeof sh, "%s/shell.py", dir);
  f = fopen(sh, "w");
  CHECK(f);
  fprintf(f, "#!/bin/sh\necho shell $RANK\n");
  fclose(f);
  chmod(sh, 0755);
  code = run(ARGS("--no-python", sh), 30, &out, &err, NULL);
  CHECK_EQ(code, 0);
  ASSERT_HAS(out, "[rank 0]: shell 0");
out:
  free(out);
  free(err);
  rm_rf(dir);
}

EM_TEST(exec_failure_is_a_failure) {
  char dir[] = "/tmp/trtest_exec_XXXXXX";
  char *out = NULL, *err = NULL;
  ASSERT_TRUE(mkdtemp(dir));
  char prog[600];
  snprintf(prog, sizeof prog, "%s/badinterp", dir);
  FILE *f = fopen(prog, "w");
  CHECK(f);
  fprintf(f, "#!/nonexistent/interpreter\n");
  fclose(f);
  chmod(prog, 0755);
  int code = run(ARGS("--nproc", "2", prog), 20, &out, &err, NULL);
  CHECK_EQ(code, 127);
  ASSERT_HAS(err, "trainrun: cannot start ");
  ASSERT_HAS(err, "exec: No such file or directory");
  ASSERT_HAS(err, "exited with code 127");
out:
  free(out);
  free(err);
  rm_rf(dir);
}

EM_TEST(elastic_min_nodes_start_after_the_last_call) {
  char *out = NULL, *err = NULL;
  char ep[64];
  snprintf(ep, sizeof ep, "127.0.0.1:%d", em_test_free_port());
  setenv("EMBER_STORE_SECRET", "elastic-test", 1);
  double secs = 0;
  int code = run(ARGS("--nnodes", "1:3", "--rdzv", ep, "--rdzv-conf", "last_call_timeout=0.3",
                      "--nproc", "2", W, "ok"),
                 20, &out, &err, &secs);
  unsetenv("EMBER_STORE_SECRET");
  CHECK_EQ(code, 0);
  ASSERT_HAS(err, "rendezvous round 0: 1 of 3 nodes joined");
  ASSERT_HAS(err, "round 0: node rank 0 of 1");
  CHECK(secs >= 0.3);
  free(out), free(err);
  out = err = NULL;
  /* a fixed-size job that cannot fill up names what is missing */
  snprintf(ep, sizeof ep, "127.0.0.1:%d", em_test_free_port());
  code = run(ARGS("--nnodes", "2", "--rdzv", ep, "--rdzv-timeout", "0.3", W, "ok"), 20, &out,
             &err, NULL);
  CHECK_EQ(code, 1);
  ASSERT_HAS(err, "failed after 0.3 s (--rdzv-timeout): 1 of 2 nodes joined");
  ASSERT_HAS(err, "EMBER_STORE_SECRET is not set");
out:
  free(out);
  free(err);
}

/* Two agents on one host (as two srun tasks would be): a full rendezvous
 * without root or namespaces. */
EM_TEST(two_agents_on_one_host) {
  char dir[] = "/tmp/trtest_2agents_XXXXXX";
  char *out[2] = {NULL, NULL}, *err[2] = {NULL, NULL}, *dump = NULL;
  proc p[2];
  char ep[64], v[256];
  ASSERT_TRUE(mkdtemp(dir));
  snprintf(ep, sizeof ep, "127.0.0.1:%d", em_test_free_port());
  setenv("EMBER_STORE_SECRET", "two-agents", 1);
  /* node 1 first: it waits for node 0 to host the store */
  bool ok = start(&p[1], ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "1", "--nproc", "2",
                              "--monitor-interval", "0.1", "--heartbeat-timeout", "2", W, "env",
                              dir)) &&
            start(&p[0], ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "0", "--nproc", "1",
                              "--monitor-interval", "0.1", "--heartbeat-timeout", "2", W, "env",
                              dir));
  unsetenv("EMBER_STORE_SECRET");
  ASSERT_TRUE(ok);
  int code[2];
  for (int i = 0; i < 2; i++) {
    code[i] = finish_proc(&p[i], 20, NULL);
    out[i] = slurp(p[i].out);
    err[i] = slurp(p[i].err);
    unlink(p[i].out);
    unlink(p[i].err);
  }
  if (code[0] != 0 || code[1] != 0)
    EM_FAILF("exit codes %d and %d\nnode 0:\n%s\nnode 1:\n%s", code[0], code[1], err[0], err[1]);
  CHECK(code[0] == 0 && code[1] == 0);
  /* node 0 has 1 worker, node 1 has 2: ranks 0 | 1 2 */
  const int group[3] = {0, 1, 1}, local[3] = {0, 0, 1};
  for (int r = 0; r < 3; r++) {
    char path[600];
    snprintf(path, sizeof path, "%s/rank%d.env", dir, r);
    free(dump);
    dump = slurp(path);
    CHECK(env_value(dump, "WORLD_SIZE", v, sizeof v) && !strcmp(v, "3"));
    CHECK(env_value(dump, "GROUP_WORLD_SIZE", v, sizeof v) && !strcmp(v, "2"));
    CHECK(env_value(dump, "GROUP_RANK", v, sizeof v) && atoi(v) == group[r]);
    CHECK(env_value(dump, "LOCAL_RANK", v, sizeof v) && atoi(v) == local[r]);
    CHECK(env_value(dump, "LOCAL_WORLD_SIZE", v, sizeof v) && atoi(v) == (r == 0 ? 1 : 2));
    CHECK(env_value(dump, "EMBER_STORE_SECRET", v, sizeof v) && !strcmp(v, "two-agents"));
    CHECK(env_value(dump, "MASTER_ADDR", v, sizeof v) && !strcmp(v, "127.0.0.1"));
  }
  ASSERT_HAS(err[1], "round 0: node rank 1 of 2");
out:
  for (int i = 0; i < 2; i++) {
    free(out[i]);
    free(err[i]);
  }
  free(dump);
  rm_rf(dir);
}

EM_TEST(an_agent_with_the_wrong_secret_is_refused) {
  char *out = NULL, *err = NULL;
  char ep[64];
  proc p0;
  snprintf(ep, sizeof ep, "127.0.0.1:%d", em_test_free_port());
  setenv("EMBER_STORE_SECRET", "right", 1);
  bool ok = start(&p0, ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "0", "--rdzv-timeout",
                            "1.5", W, "ok"));
  setenv("EMBER_STORE_SECRET", "wrong", 1);
  int code = ok ? run(ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "1", W, "ok"), 20, &out,
                      &err, NULL)
                : -1;
  unsetenv("EMBER_STORE_SECRET");
  int code0 = finish_proc(&p0, 20, NULL);
  char *err0 = slurp(p0.err);
  unlink(p0.out);
  unlink(p0.err);
  if (code != 1 || !strstr(err ? err : "", "authentication failed") || code0 != 1 ||
      !strstr(err0, "missing 1 node (node rank 1)"))
    EM_FAILF("node 1: %d\n%s\nnode 0: %d\n%s", code, err ? err : "", code0, err0);
  free(err0);
  free(out);
  free(err);
}

EM_TEST(two_agents_claiming_node_rank_0) {
  char *out = NULL, *err = NULL;
  char ep[64];
  proc p0;
  snprintf(ep, sizeof ep, "127.0.0.1:%d", em_test_free_port());
  setenv("EMBER_STORE_SECRET", "s", 1);
  bool ok = start(&p0, ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "0", "--rdzv-timeout",
                            "1", W, "ok"));
  /* wait until the first one hosts the store */
  ok = ok && wait_text(p0.err, "1 of 2 nodes joined", 1, 10);
  int code = ok ? run(ARGS("--nnodes", "2", "--rdzv", ep, "--node-rank", "0", W, "ok"), 20, &out,
                      &err, NULL)
                : -1;
  unsetenv("EMBER_STORE_SECRET");
  int code0 = finish_proc(&p0, 20, NULL);
  unlink(p0.out);
  unlink(p0.err);
  CHECK(ok);
  CHECK_EQ(code, 1);
  ASSERT_HAS(err, "already in use (does another trainrun also claim node rank 0");
  CHECK_EQ(code0, 1);
out:
  free(out);
  free(err);
}

EM_TEST(fast_start_and_fast_failure) {
  char *out = NULL, *err = NULL;
  double secs = 0;
  /* generous bounds: the benchmark measures; this catches a sleeping poll */
  int code = run(ARGS("--nproc", "2", "/bin/true"), 10, &out, &err, &secs);
  CHECK_EQ(code, 0);
  CHECK(secs < 3.0);
  free(out), free(err);
  out = err = NULL;
  /* rank 0 fails at once, while the others may still be between fork and
   * exec: a SIGTERM then must still kill them (it once reached trainrun's
   * own handler instead, and the grace period had to SIGKILL them) */
  code = run(ARGS("--nproc", "4", W, "fail", "0", "9"), 10, &out, &err, &secs);
  CHECK_EQ(code, 9);
  CHECK(secs < 3.0);
out:
  free(out);
  free(err);
}

EM_TEST_MAIN()
