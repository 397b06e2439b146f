/* A worker for the launcher tests: trainrun runs it; its first argument
 * says what to do. Any argument of the form marker=... is ignored, so tests
 * can find their processes in the process table.
 *
 *   ok                       exit 0 at once
 *   env DIR                  write the environment to DIR/rank<RANK>.env
 *   print                    a few lines on stdout and stderr, and a last
 *                            stdout line without a newline
 *   fail R CODE [DELAY_MS]   rank R prints 3 stderr lines and exits CODE
 *                            (after DELAY_MS); the others wait for a signal
 *                            (ignoring SIGTERM if TR_WORKER_IGNORE_TERM is set)
 *   crash R                  rank R kills itself with SIGSEGV; others wait
 *   sleep                    print "ready" and wait for a signal
 *   ignore-term              ignore SIGTERM, print "ready", wait forever
 *   fork                     start a grandchild (same marker) that waits,
 *                            print "ready", wait for a signal
 *   catch SIGNUM [CODE]      on signal SIGNUM print "got signal SIGNUM" and
 *                            exit CODE (0); "ready" first
 *   restart N DIR [MS]       append RESTART_COUNT to DIR/rank<RANK>.restarts;
 *                            rank 0 exits 3 (after 0.2 s) while
 *                            TRAINRUN_RESTART_COUNT < N; in the attempt
 *                            that succeeds every rank works MS ms first
 *   store                    talk to the agent's store: a client with the
 *                            job's secret sets and reads a key, one with a
 *                            wrong secret must be refused
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/store.h"

extern char **environ;

static int env_int(const char *name) {
  const char *v = getenv(name);
  return v ? atoi(v) : -1;
}

static void wait_forever(void) {
  for (;;) pause();
}

static void say(FILE *f, const char *s) {
  fputs(s, f);
  fflush(f);
}

static void on_caught(int sig) {
  char msg[64];
  int n = snprintf(msg, sizeof msg, "got signal %d\n", sig);
  ssize_t r = write(1, msg, (size_t)n);
  (void)r;
  _exit(env_int("TR_WORKER_CATCH_CODE"));
}

int main(int argc, char **argv) {
  /* drop marker=... arguments */
  int n = 0;
  for (int i = 0; i < argc; i++)
    if (strncmp(argv[i], "marker=", 7) != 0) argv[n++] = argv[i];
  argc = n;
  if (argc < 2) {
    fprintf(stderr, "usage: tr_worker MODE [args]\n");
    return 2;
  }
  const char *mode = argv[1];
  int rank = env_int("RANK");
  if (!strcmp(mode, "ok")) return 0;
  if (!strcmp(mode, "env") && argc >= 3) {
    char path[4096];
    snprintf(path, sizeof path, "%s/rank%d.env", argv[2], rank);
    FILE *f = fopen(path, "w");
    if (!f) {
      perror(path);
      return 1;
    }
    for (char **e = environ; *e; e++) fprintf(f, "%s\n", *e);
    fclose(f);
    return 0;
  }
  if (!strcmp(mode, "print")) {
    printf("out line 1 from %d\nout line 2 from %d\n", rank, rank);
    fflush(stdout);
    fprintf(stderr, "err line from %d\n", rank);
    /* one line written in two pieces: must come out whole */
    say(stdout, "split ");
    usleep(20000);
    say(stdout, "line\n");
    say(stdout, "no newline at the end");
    return 0;
  }
  if (!strcmp(mode, "fail") && argc >= 4) {
    if (rank == atoi(argv[2])) {
      if (argc >= 5) usleep((useconds_t)atoi(argv[4]) * 1000);
      fprintf(stderr, "stderr line 1 of the failing rank\n");
      fprintf(stderr, "stderr line 2 of the failing rank\n");
      fprintf(stderr, "last words of rank %d\n", rank);
      return atoi(argv[3]);
    }
    if (getenv("TR_WORKER_IGNORE_TERM")) signal(SIGTERM, SIG_IGN);
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "crash") && argc >= 3) {
    if (rank == atoi(argv[2])) {
      fprintf(stderr, "about to crash\n");
      signal(SIGSEGV, SIG_DFL);
      raise(SIGSEGV);
    }
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "sleep")) {
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "ignore-term")) {
    signal(SIGTERM, SIG_IGN);
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "fork")) {
    pid_t p = fork();
    if (p == 0) {
      /* the grandchild: no PR_SET_PDEATHSIG of its own */
      wait_forever();
    }
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "catch") && argc >= 3) {
    /* catch SIGNUM [CODE]: on that signal print "got signal N", exit CODE */
    setenv("TR_WORKER_CATCH_CODE", argc >= 4 ? argv[3] : "0", 1);
    signal(atoi(argv[2]), on_caught);
    say(stdout, "ready\n");
    wait_forever();
  }
  if (!strcmp(mode, "restart") && argc >= 4) {
    int count = env_int("TRAINRUN_RESTART_COUNT");
    char path[4096];
    snprintf(path, sizeof path, "%s/rank%d.restarts", argv[3], rank);
    FILE *f = fopen(path, "a");
    if (f) {
      fprintf(f, "%d %s\n", count, getenv("TRAINRUN_MAX_RESTARTS"));
      fclose(f);
    }
    if (rank == 0 && count < atoi(argv[2])) {
      usleep(200000); /* let the others write their line before they are stopped */
      fprintf(stderr, "failing in attempt %d\n", count);
      return 3;
    }
    if (count >= atoi(argv[2]) && argc >= 5) usleep((useconds_t)atoi(argv[4]) * 1000);
    return 0;
  }
  if (!strcmp(mode, "store")) {
    const char *host = getenv("MASTER_ADDR");
    int port = env_int("MASTER_PORT");
    const char *prefix = getenv("TRAINRUN_STORE_PREFIX");
    if (!host || port <= 0 || !prefix) {
      fprintf(stderr, "MASTER_ADDR, MASTER_PORT or TRAINRUN_STORE_PREFIX missing\n");
      return 1;
    }
    em_store_options good = {.timeout_ms = 10000}; /* secret from EMBER_STORE_SECRET */
    em_store *s = em_store_tcp_connect(host, port, &good);
    if (!s) {
      fprintf(stderr, "connect with the job's secret failed: %s\n", em_last_error());
      return 1;
    }
    em_store *p = em_store_prefix_create(s, prefix);
    char key[64], val[64];
    snprintf(key, sizeof key, "hello/%d", rank);
    snprintf(val, sizeof val, "from rank %d", rank);
    int ws = env_int("WORLD_SIZE");
    int rc = 0;
    if (!p || em_store_set(p, key, val, strlen(val)) != EM_OK) {
      fprintf(stderr, "set failed: %s\n", em_last_error());
      rc = 1;
    }
    /* every rank reads every other rank's key */
    for (int r = 0; r < ws && !rc; r++) {
      void *v = NULL;
      size_t len = 0;
      snprintf(key, sizeof key, "hello/%d", r);
      if (em_store_get(p, key, &v, &len) != EM_OK) {
        fprintf(stderr, "get %s failed: %s\n", key, em_last_error());
        rc = 1;
      }
      em_store_free(v);
    }
    em_store_release(p);
    em_store_release(s);
    em_store_options bad = {.timeout_ms = 5000, .connect_timeout_ms = 5000,
                            .secret = "not-the-secret"};
    em_store *b = em_store_tcp_connect(host, port, &bad);
    if (b) {
      fprintf(stderr, "a client with a wrong secret was let in\n");
      em_store_release(b);
      return 1;
    }
    printf("wrong secret refused: %s\n", em_last_error());
    em_store_options none = {.timeout_ms = 5000, .connect_timeout_ms = 5000, .secret = ""};
    b = em_store_tcp_connect(host, port, &none);
    if (b) {
      fprintf(stderr, "a client without a secret was let in\n");
      em_store_release(b);
      return 1;
    }
    printf("missing secret refused: %s\n", em_last_error());
    if (!rc) printf("store ok\n");
    return rc;
  }
  fprintf(stderr, "tr_worker: unknown mode or missing arguments: %s\n", mode);
  return 2;
}
