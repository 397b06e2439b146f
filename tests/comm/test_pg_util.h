/* Helpers for the process-group tests: fork W ranks that each build a group
 * through a store hosted by rank 0 on 127.0.0.1 (a free port, passed to the
 * others through a pipe), run a body, and report failures through their
 * exit code; inputs that are known functions of (rank, index); element
 * access in logical order for any layout.
 *
 * Inside a rank body, CK / CK_OK / CK_ERR check and return on failure
 * (they print the rank and the location); the parent asserts that every
 * rank exited 0. Children exit with exit() so the sanitizers' leak check
 * runs in every rank. */
#ifndef EMBER_TESTS_COMM_PG_UTIL_H
#define EMBER_TESTS_COMM_PG_UTIL_H

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"
#include "tests/free_port.h"
#include "tests/harness.h"

static int t_rank = -1;  /* in a child: its rank */
static int t_fails = 0;  /* in a child: failed checks */

#define CK(cond, ...)                                                                  \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "  [rank %d] %s:%d: check failed: %s: ", t_rank, __FILE__, __LINE__, \
              #cond);                                                                  \
      fprintf(stderr, __VA_ARGS__);                                                    \
      fprintf(stderr, "\n");                                                           \
      t_fails++;                                                                       \
      return;                                                                          \
    }                                                                                  \
  } while (0)

#define CK_OK(call)                                                                    \
  do {                                                                                 \
    em_status ck_s_ = (call);                                                          \
    CK(ck_s_ == EM_OK, "%s: %s", em_status_name(ck_s_), em_last_error());              \
  } while (0)

#define CK_NN(ptr) CK((ptr) != NULL, "NULL: %s: %s", em_status_name(em_last_status()), em_last_error())

/* The call fails with status st and a message containing every substring. */
#define CK_ERR(call, st, ...)                                                          \
  do {                                                                                 \
    em_clear_error();                                                                  \
    em_status ck_s_ = (call);                                                          \
    const char *ck_subs_[] = {__VA_ARGS__};                                            \
    bool ck_ok_ = ck_s_ == (st);                                                       \
    for (size_t ck_i_ = 0; ck_ok_ && ck_i_ < sizeof ck_subs_ / sizeof ck_subs_[0]; ck_i_++) \
      ck_ok_ = strstr(em_last_error(), ck_subs_[ck_i_]) != NULL;                       \
    CK(ck_ok_, "expected %s with \"%s\"..., got %s: \"%s\"", em_status_name(st), ck_subs_[0], \
       em_status_name(ck_s_), em_last_error());                                        \
  } while (0)

/* A pointer-returning call returns NULL with st and the substrings. */
#define CK_NULL(call, st, ...)                                                         \
  do {                                                                                 \
    em_clear_error();                                                                  \
    void *ck_p_ = (void *)(call);                                                      \
    const char *ck_subs_[] = {__VA_ARGS__};                                            \
    bool ck_ok_ = !ck_p_ && em_last_status() == (st);                                  \
    for (size_t ck_i_ = 0; ck_ok_ && ck_i_ < sizeof ck_subs_ / sizeof ck_subs_[0]; ck_i_++) \
      ck_ok_ = strstr(em_last_error(), ck_subs_[ck_i_]) != NULL;                       \
    CK(ck_ok_, "expected NULL with %s \"%s\"..., got %s %s: \"%s\"", em_status_name(st),  \
       ck_subs_[0], ck_p_ ? "non-NULL" : "NULL", em_status_name(em_last_status()),      \
       em_last_error());                                                               \
  } while (0)

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

/* Reaps pid within timeout_ms, SIGKILLing it if still running. Returns
 * its exit code, 128 + signal when signalled, -1 on timeout. */
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
    t_sleep_ms(2);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -3;
}

/* ---- running W ranks ---------------------------------------------------------- */

typedef struct t_ctx {
  int rank, world;
  em_store *store; /* the job's store (rank 0 hosts it) */
  void *arg;
} t_ctx;

typedef void (*t_body)(t_ctx *c, em_pg *pg);

typedef struct t_opts {
  const char *backend;  /* NULL = "tcp" */
  int64_t timeout_ms;   /* the group's; 0 = 10 s */
  int64_t reap_ms;      /* how long the parent waits; 0 = 30 s */
  bool no_group;        /* the body makes its own groups (pg NULL) */
  int expect_dead;      /* ranks expected to die: rank 0 waits less at the end */
  /* environment set in one rank's child before anything runs */
  int env_rank;
  const char *env_name, *env_value;
} t_opts;

/* Runs body in W forked ranks; codes[r] receives each rank's exit status
 * (see t_reap). Returns the number of ranks that did not exit 0. */
static inline int t_spawn(int W, t_body body, void *arg, const t_opts *o, int *codes) {
  t_opts def = {0};
  if (!o) o = &def;
  int fds[2];
  if (pipe(fds) != 0) return W;
  pid_t pids[64];
  fflush(stdout);
  fflush(stderr);
  for (int r = 0; r < W; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      pids[r] = -1;
      continue;
    }
    if (pid == 0) {
      t_rank = r;
      t_fails = 0;
      if (o->env_name && o->env_rank == r) setenv(o->env_name, o->env_value, 1);
      int64_t gto = o->timeout_ms ? o->timeout_ms : 10000;
      em_store_options so = {.timeout_ms = 15000, .connect_timeout_ms = 10000, .secret = ""};
      em_store *s = NULL;
      int port = -1;
      if (r == 0) {
        close(fds[0]);
        s = em_store_tcp_create("127.0.0.1", 0, true, &so);
        port = s ? em_store_tcp_port(s) : -1;
        for (int k = 1; k < W; k++) {
          ssize_t wr = write(fds[1], &port, sizeof port);
          (void)wr;
        }
        close(fds[1]);
      } else {
        close(fds[1]);
        ssize_t rd = read(fds[0], &port, sizeof port);
        close(fds[0]);
        if (rd == (ssize_t)sizeof port && port > 0) s = em_store_tcp_connect("127.0.0.1", port, &so);
      }
      if (!s) {
        fprintf(stderr, "  [rank %d] no store: %s\n", r, em_last_error());
        exit(3);
      }
      t_ctx c = {.rank = r, .world = W, .store = s, .arg = arg};
      em_pg *pg = NULL;
      if (!o->no_group) {
        em_pg_options po = {.backend = o->backend ? o->backend : "tcp", .timeout_ms = gto};
        pg = em_pg_init_store(s, r, W, &po);
        if (!pg) {
          fprintf(stderr, "  [rank %d] init failed: %s\n", r, em_last_error());
          em_store_release(s);
          exit(4);
        }
      }
      body(&c, pg);
      em_pg_release(pg);
      /* rank 0 hosts the store: keep it up until the others are done */
      int64_t n = 0;
      em_store_add(s, "t_done", 1, &n);
      if (r == 0) {
        int64_t end = t_now_ms() + (o->expect_dead ? 1500 : 10000);
        while (n < W - o->expect_dead && t_now_ms() < end) {
          t_sleep_ms(2);
          if (em_store_add(s, "t_done", 0, &n) != EM_OK) break;
        }
      }
      em_store_release(s);
      exit(t_fails ? 1 : 0);
    }
    pids[r] = pid;
  }
  close(fds[0]);
  close(fds[1]);
  int bad = 0;
  int64_t reap = o->reap_ms ? o->reap_ms : 30000;
  int64_t end = t_now_ms() + reap;
  for (int r = 0; r < W; r++) {
    int code = pids[r] < 0 ? -4 : t_reap(pids[r], end - t_now_ms() > 0 ? end - t_now_ms() : 1);
    if (codes) codes[r] = code;
    if (code != 0) bad++;
  }
  return bad;
}

/* All ranks must exit 0. */
#define ASSERT_RANKS_OK(W, body, arg, opts)                                 \
  do {                                                                      \
    int codes_[64] = {0};                                                         \
    int bad_ = t_spawn((W), (body), (arg), (opts), codes_);                 \
    if (bad_) {                                                             \
      EM_FAILF("%d of %d ranks failed (exit codes:%s%d %d %d %d)", bad_, (W), " ", codes_[0], \
               (W) > 1 ? codes_[1] : 0, (W) > 2 ? codes_[2] : 0, (W) > 3 ? codes_[3] : 0); \
      return;                                                               \
    }                                                                       \
  } while (0)

/* ---- element access in logical order ---------------------------------------------- */

static inline char *t_elem(em_tensor *t, int64_t i) {
  int64_t off = t->offset;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t n = t->shape[d];
    off += (i % n) * t->strides[d];
    i /= n;
  }
  return (char *)t->storage->data + off * (int64_t)em_dtype_size((em_dtype)t->dtype);
}

static inline void t_set(em_tensor *t, int64_t i, double v) {
  char *p = t_elem(t, i);
  switch ((em_dtype)t->dtype) {
    case EM_FLOAT32: *(float *)p = (float)v; break;
    case EM_FLOAT64: *(double *)p = v; break;
    case EM_FLOAT16: *(uint16_t *)p = em_float_to_half((float)v); break;
    case EM_BFLOAT16: *(uint16_t *)p = em_float_to_bf16((float)v); break;
    case EM_INT8: *(int8_t *)p = (int8_t)v; break;
    case EM_INT16: *(int16_t *)p = (int16_t)v; break;
    case EM_INT32: *(int32_t *)p = (int32_t)v; break;
    case EM_INT64: *(int64_t *)p = (int64_t)v; break;
    case EM_UINT8: *(uint8_t *)p = (uint8_t)v; break;
    case EM_BOOL: *(bool *)p = v != 0; break;
    default: break;
  }
}

static inline double t_get(em_tensor *t, int64_t i) { return em_test_get(t, i); }

/* Tolerance for comparing a reduced value of dtype dt. */
static inline double t_tol(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT16: return 2e-3;
    case EM_BFLOAT16: return 1e-2;
    case EM_FLOAT32: return 1e-6;
    default: return 0;
  }
}

static inline bool t_close(double got, double want, em_dtype dt) {
  if (isnan(got) && isnan(want)) return true;
  return fabs(got - want) <= t_tol(dt) * (1 + fabs(want));
}

#endif
