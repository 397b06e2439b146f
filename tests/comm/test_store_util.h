/* Helpers shared by the store tests: servers on 127.0.0.1 with captured
 * logs, clients with short timeouts, clocks, children that are always
 * reaped. */
#ifndef EMBER_TESTS_COMM_STORE_UTIL_H
#define EMBER_TESTS_COMM_STORE_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/store.h"
#include "tests/free_port.h"
#include "tests/harness.h"

#define HOST "127.0.0.1"

static inline int64_t t_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void t_sleep_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Log lines a server printed (its log callback runs on its thread). */
typedef struct t_log {
  pthread_mutex_t mu;
  char lines[128][512];
  int n;
} t_log;

static inline void t_log_init(t_log *l) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
}

static inline void t_log_line(void *ctx, const char *line) {
  t_log *l = ctx;
  pthread_mutex_lock(&l->mu);
  if (l->n < 128) snprintf(l->lines[l->n++], sizeof l->lines[0], "%s", line);
  pthread_mutex_unlock(&l->mu);
}

/* Whether a line containing all of a and b (b may be NULL) was logged
 * within wait_ms. */
static inline bool t_log_has(t_log *l, const char *a, const char *b, int64_t wait_ms) {
  int64_t end = t_now_ms() + wait_ms;
  for (;;) {
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++) {
      if (strstr(l->lines[i], a) && (!b || strstr(l->lines[i], b))) {
        pthread_mutex_unlock(&l->mu);
        return true;
      }
    }
    pthread_mutex_unlock(&l->mu);
    if (t_now_ms() >= end) return false;
    t_sleep_ms(10);
  }
}

static inline void t_log_dump(t_log *l) {
  pthread_mutex_lock(&l->mu);
  for (int i = 0; i < l->n; i++) fprintf(stderr, "    log: %s\n", l->lines[i]);
  pthread_mutex_unlock(&l->mu);
}

static inline void t_log_deinit(t_log *l) { pthread_mutex_destroy(&l->mu); }

/* A started server on 127.0.0.1, a free port, secret ("" = none), logging
 * into log (may be NULL = stderr). */
static inline em_store_server *t_server(const char *secret, t_log *log, int64_t auth_timeout_ms) {
  em_store_server_options o = {.secret = secret, .auth_timeout_ms = auth_timeout_ms};
  if (log) {
    o.log = t_log_line;
    o.log_ctx = log;
  }
  return em_store_server_start(HOST, 0, &o);
}

static inline em_store *t_client(int port, const char *secret, int64_t timeout_ms) {
  em_store_options o = {.timeout_ms = timeout_ms, .connect_timeout_ms = 5000, .secret = secret};
  return em_store_tcp_connect(HOST, port, &o);
}

/* Waits up to timeout_ms until the server has n clients. */
static inline bool t_wait_clients(em_store_server *srv, int n, int64_t timeout_ms) {
  int64_t end = t_now_ms() + timeout_ms;
  while (em_store_server_num_clients(srv) != n) {
    if (t_now_ms() >= end) return false;
    t_sleep_ms(5);
  }
  return true;
}

/* Reaps pid within timeout_ms, SIGKILLing it if it is still running then.
 * Returns its exit code, 128+signal when signalled, -1 on timeout. */
static inline int t_reap(pid_t pid, int64_t timeout_ms) {
  int64_t end = t_now_ms() + timeout_ms;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -2;
    if (t_now_ms() >= end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    t_sleep_ms(5);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -3;
}

/* The pointer-returning store call must return NULL with status st and a
 * message containing substr. */
#define ASSERT_STORE_NULL_ERR(call, st, substr)                                          \
  do {                                                                                 \
    em_clear_error();                                                                  \
    em_store *em_p_ = (call);                                                          \
    if (em_p_ || em_last_status() != (st) || !strstr(em_last_error(), (substr))) {     \
      EM_FAILF("%s: expected NULL with %s containing \"%s\", got %s %s: \"%s\"", #call, \
               em_status_name(st), substr, em_p_ ? "a store" : "NULL",                 \
               em_status_name(em_last_status()), em_last_error());                     \
      em_store_release(em_p_);                                                         \
      return;                                                                          \
    }                                                                                  \
  } while (0)

#endif
