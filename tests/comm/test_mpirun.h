/* Launching a test binary under mpirun (the mpi backend's tests): finding
 * mpirun, running `mpirun -np N <self> <args...>` in its own process group
 * with a timeout, and the environment Open MPI needs under the sanitizers
 * (its own allocations live until exit: the leak check is kept to
 * ember's memory). */
#ifndef EMBER_TESTS_COMM_TEST_MPIRUN_H
#define EMBER_TESTS_COMM_TEST_MPIRUN_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline bool mr_find_in_path(const char *prog, char *out, size_t size) {
  const char *path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t len = colon ? (size_t)(colon - path) : strlen(path);
    snprintf(out, size, "%.*s/%s", (int)len, path, prog);
    if (access(out, X_OK) == 0) return true;
    path += len + (colon ? 1 : 0);
  }
  return false;
}

static inline int64_t mr_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The running binary's path (for mpirun to start it again). */
static inline bool mr_self(char *out, size_t size) {
  ssize_t n = readlink("/proc/self/exe", out, size - 1);
  if (n <= 0) return false;
  out[n] = '\0';
  return true;
}

/* Runs mpirun -np np <self> args... (args NULL-terminated, at most 8) with
 * env "NAME=value" strings set in the child; returns its exit status, 77
 * when mpirun is missing, -1 on timeout (after killing its process group). */
static inline int mr_run(int np, char *const *args, char *const *env, int64_t timeout_ms) {
  char mpirun[PATH_MAX], self[PATH_MAX], nps[16], supp[64];
  if (!mr_find_in_path("mpirun", mpirun, sizeof mpirun)) return 77;
  if (!mr_self(self, sizeof self)) return -2;
  snprintf(nps, sizeof nps, "%d", np);
  snprintf(supp, sizeof supp, "/tmp/ember-mpi-lsan-%d.supp", (int)getpid());
  FILE *f = fopen(supp, "w");
  if (f) {
    fputs("leak:libmpi\nleak:libopen-pal\nleak:libopen-rte\nleak:libpmix\nleak:libhwloc\n"
          "leak:libevent\nleak:mca_\nleak:libucs\nleak:libucp\nleak:libfabric\nleak:libpsm\n"
          "leak:libibverbs\nleak:libz\nleak:libudev\n",
          f);
    fclose(f);
  }
  pid_t p = fork();
  if (p < 0) return -2;
  if (p == 0) {
    setpgid(0, 0);
    for (int i = 0; env && env[i]; i++) putenv(env[i]);
    char lsan[128];
    snprintf(lsan, sizeof lsan, "suppressions=%s:print_suppressions=0", supp);
    setenv("LSAN_OPTIONS", lsan, 1);
    /* full stacks (Open MPI has no frame pointers) so the suppressions see libmpi */
    const char *ao = getenv("ASAN_OPTIONS");
    char asan[512];
    snprintf(asan, sizeof asan, "%s%sfast_unwind_on_malloc=0", ao ? ao : "", ao && *ao ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    /* keep Open MPI's components loaded at exit so their leaks are named */
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    unsetenv("MASTER_ADDR");
    unsetenv("MASTER_PORT");
    char *argv[32] = {mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                      "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism",
                      "none", "-np", nps, self};
    int k = 14;
    for (int i = 0; args && args[i] && k < 31; i++) argv[k++] = args[i];
    argv[k] = NULL;
    execv(mpirun, argv);
    _exit(127);
  }
  setpgid(p, p);
  int64_t end = mr_now_ms() + timeout_ms;
  int status = 0;
  for (;;) {
    pid_t w = waitpid(p, &status, WNOHANG);
    if (w == p) break;
    if (mr_now_ms() >= end) {
      kill(-p, SIGTERM);
      usleep(500 * 1000);
      kill(-p, SIGKILL);
      waitpid(p, &status, 0);
      unlink(supp);
      return -1;
    }
    usleep(10 * 1000);
  }
  unlink(supp);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#endif
