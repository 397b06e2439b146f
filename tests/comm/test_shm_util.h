/* Helpers shared by the shm / hier / mpi backend tests: W forked ranks (rank
 * 0 hosts the store on 127.0.0.1 and tells the others its port through a
 * pipe; the test process itself starts no thread, so children fork from a
 * clean process), always reaped and killed on every path; a thin wrapper
 * over a backend instance (em_pg_backend_ops) for tests that drive a
 * backend directly; data of every dtype as a known function of (rank,
 * index) with expected results computed independently here, in double /
 * int64. */
#ifndef EMBER_TESTS_COMM_SHM_UTIL_H
#define EMBER_TESTS_COMM_SHM_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"
#include "comm/store.h"
#include "tests/harness.h"

#define T_MAX_RANKS 8
#define T_KILL_ALL (-2)

static int t_rank = -1;  /* in a child: its rank */
static int t_world = 0;
static uint64_t t_uid;   /* the group's uid, drawn by the parent before forking */
static char t_group[64]; /* a group name unique to this test process */
static int t_exits_expected; /* ranks that reach the end (0 = all) */

static inline int64_t t_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void t_sleep(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Child-side checks: print with the rank and return 1 from the body. */
#define C_FAIL(...)                                                       \
  do {                                                                    \
    fprintf(stderr, "  [rank %d] %s:%d: ", t_rank, __FILE__, __LINE__);   \
    fprintf(stderr, __VA_ARGS__);                                         \
    fputc('\n', stderr);                                                  \
    return 1;                                                             \
  } while (0)
#define C_CHECK(cond, ...)     \
  do {                         \
    if (!(cond)) C_FAIL(__VA_ARGS__); \
  } while (0)
#define C_OK(call)                                                                      \
  do {                                                                                  \
    em_status c_s_ = (call);                                                            \
    C_CHECK(c_s_ == EM_OK, "%s failed: %s: %s", #call, em_status_name(c_s_), em_last_error()); \
  } while (0)
#define C_ERR(call, st, substr)                                                          \
  do {                                                                                  \
    em_clear_error();                                                                   \
    em_status c_s_ = (call);                                                            \
    C_CHECK(c_s_ == (st) && strstr(em_last_error(), (substr)),                          \
            "%s: expected %s containing \"%s\", got %s: \"%s\"", #call, em_status_name(st), \
            substr, em_status_name(c_s_), em_last_error());                            \
  } while (0)
#define C_RUN(call)         \
  do {                      \
    int c_r_ = (call);      \
    if (c_r_) return c_r_;  \
  } while (0)

/* ---- forked ranks ------------------------------------------------------------------ */

typedef int (*t_body)(em_store *store, int rank, int world, void *arg);

static inline void t_new_group_name(const char *what) {
  static int n;
  snprintf(t_group, sizeof t_group, "t%d-%s-%d", (int)getpid(), what, n++);
  if (getrandom(&t_uid, sizeof t_uid, 0) != (ssize_t)sizeof t_uid) t_uid = (uint64_t)t_ms();
}

/* Runs body in world forked ranks; codes[r] gets rank r's exit code (0 ok,
 * 128+sig if killed, -1 if it had to be killed at the deadline). Returns
 * true when every rank finished by timeout_ms. kill_rank >= 0: that rank is
 * SIGKILLed kill_after_ms after the start (T_KILL_ALL: every rank; -1:
 * none). */
static inline bool t_run_ranks_kill(int world, t_body body, void *arg, int64_t timeout_ms,
                                    int *codes, int kill_rank, int64_t kill_after_ms) {
  int pfd[2];
  if (pipe(pfd) != 0) return false;
  pid_t pids[T_MAX_RANKS];
  fflush(stdout);
  fflush(stderr);
  for (int r = 0; r < world; r++) {
    pid_t p = fork();
    if (p < 0) {
      for (int j = 0; j < r; j++) kill(pids[j], SIGKILL);
      for (int j = 0; j < r; j++) waitpid(pids[j], NULL, 0);
      close(pfd[0]);
      close(pfd[1]);
      return false;
    }
    if (p == 0) {
      t_rank = r;
      t_world = world;
      em_store_options o = {.timeout_ms = timeout_ms, .connect_timeout_ms = 10000, .secret = ""};
      em_store *s = NULL;
      if (r == 0) {
        close(pfd[0]);
        s = em_store_tcp_create("127.0.0.1", 0, true, &o);
        int port = s ? em_store_tcp_port(s) : -1;
        for (int j = 1; j < world; j++)
          if (write(pfd[1], &port, sizeof port) != (ssize_t)sizeof port) break;
        close(pfd[1]);
      } else {
        close(pfd[1]);
        int port = -1;
        if (read(pfd[0], &port, sizeof port) != (ssize_t)sizeof port) port = -1;
        close(pfd[0]);
        if (port > 0) s = em_store_tcp_connect("127.0.0.1", port, &o);
      }
      if (!s) {
        fprintf(stderr, "  [rank %d] store: %s\n", r, em_last_error());
        exit(99);
      }
      int rc = body(s, r, world, arg);
      /* rank 0 serves the store: it stays until the others are done with it
       * (t_exits_expected of them: fewer when the test kills ranks) */
      int64_t cur = 0;
      if (em_store_add(s, "t/exit", 1, &cur) == EM_OK && r == 0) {
        int want = t_exits_expected ? t_exits_expected : world;
        int64_t end = t_ms() + 10000;
        while (cur < want && t_ms() < end && em_store_add(s, "t/exit", 0, &cur) == EM_OK)
          t_sleep(2);
      }
      em_store_release(s);
      exit(rc);
    }
    pids[r] = p;
  }
  close(pfd[0]);
  close(pfd[1]);
  int64_t start = t_ms(), end = start + timeout_ms;
  bool done[T_MAX_RANKS] = {0}, ok = true, killed = false;
  int left = world;
  while (left > 0) {
    if (!killed && kill_rank != -1 && t_ms() - start >= kill_after_ms) {
      for (int r = 0; r < world; r++)
        if (r == kill_rank || kill_rank == T_KILL_ALL) kill(pids[r], SIGKILL);
      killed = true;
    }
    for (int r = 0; r < world; r++) {
      if (done[r]) continue;
      int status;
      pid_t w = waitpid(pids[r], &status, WNOHANG);
      if (w == pids[r]) {
        done[r] = true;
        left--;
        codes[r] = WIFEXITED(status) ? WEXITSTATUS(status)
                                     : (WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -3);
      }
    }
    if (left == 0) break;
    if (t_ms() >= end) {
      for (int r = 0; r < world; r++)
        if (!done[r]) kill(pids[r], SIGKILL);
      for (int r = 0; r < world; r++)
        if (!done[r]) {
          waitpid(pids[r], NULL, 0);
          codes[r] = -1;
        }
      ok = false;
      break;
    }
    t_sleep(2);
  }
  return ok;
}

static inline bool t_run_ranks(int world, t_body body, void *arg, int64_t timeout_ms, int *codes) {
  return t_run_ranks_kill(world, body, arg, timeout_ms, codes, -1, -1);
}

/* Parent-side: every rank exited 0. */
#define ASSERT_RANKS_OK(world, body, arg, timeout_ms)                                  \
  do {                                                                                 \
    int t_codes_[T_MAX_RANKS] = {0};                                                   \
    bool t_ok_ = t_run_ranks((world), (body), (arg), (timeout_ms), t_codes_);          \
    ASSERT_TRUE(t_ok_);                                                                \
    for (int t_r_ = 0; t_r_ < (world); t_r_++) {                                       \
      if (t_codes_[t_r_] != 0) EM_FAILF("rank %d exited with %d", t_r_, t_codes_[t_r_]); \
    }                                                                                  \
    if (em_test_failed_now) return;                                                    \
  } while (0)

/* Names of /dev/shm entries that contain needle (0 = none); the first is
 * copied into first. */
static inline int t_shm_leftovers(const char *needle, char *first, size_t size) {
  DIR *d = opendir("/dev/shm");
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strstr(e->d_name, needle)) {
      if (n == 0 && first) snprintf(first, size, "%s", e->d_name);
      n++;
    }
  }
  closedir(d);
  return n;
}

/* ---- a backend driven directly ---------------------------------------------------- */

typedef struct t_be {
  void *ctx;
  const em_pg_backend_ops *ops;
  int rank, size;
  uint64_t seq;
  int64_t timeout_ms;
} t_be;

static inline em_status t_be_create(t_be *b, const char *backend, em_store *store, int rank,
                                    int world, const char *const *host_ids, int64_t timeout_ms) {
  memset(b, 0, sizeof *b);
  int granks[T_MAX_RANKS];
  for (int r = 0; r < world; r++) granks[r] = r;
  em_pg_backend_init in = {.store = store,
                           .rank = rank,
                           .size = world,
                           .host_ids = host_ids,
                           .global_ranks = granks,
                           .timeout_ms = timeout_ms,
                           .group_name = t_group,
                           .uid = t_uid};
  em_pg_backend_create_fn fn = em__pg_backend_find(backend);
  if (!fn) return em_last_status() ? em_last_status() : EM_ERR_INVALID;
  b->rank = rank;
  b->size = world;
  b->timeout_ms = timeout_ms;
  return fn(&in, &b->ctx, &b->ops);
}

static inline void t_be_destroy(t_be *b) {
  if (b->ops) b->ops->destroy(b->ctx);
  b->ops = NULL;
}

/* Runs c (its seq and deadline filled in here). */
static inline em_status t_be_run(t_be *b, em_coll c) {
  if (c.kind != EM_COLL_SEND && c.kind != EM_COLL_RECV) c.seq = ++b->seq;
  if (!c.deadline_ms) c.deadline_ms = em__now_ms() + b->timeout_ms;
  return b->ops->run(b->ctx, &c);
}

/* ---- data ------------------------------------------------------------------------- */

static const em_dtype t_all_dtypes[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8,
                                        EM_INT16,   EM_INT32,   EM_INT64,   EM_UINT8,    EM_BOOL};
#define T_NDTYPES ((int)(sizeof t_all_dtypes / sizeof t_all_dtypes[0]))

/* Rank r's element i: a small integer, exact in every dtype, so sums and
 * products of up to 4 ranks are exact too (except uint8 prod, which wraps
 * as PyTorch's does, and which the expected value wraps the same way). */
static inline int64_t t_val(int r, int64_t i, em_dtype dt) {
  int64_t v = ((int64_t)r * 5 + i * 3 + 1) % 7 - 3; /* -3..3 */
  if (dt == EM_UINT8) v += 3;
  if (dt == EM_BOOL) v = ((r + i) % 3) == 0;
  return v;
}

static inline void t_put(void *buf, int64_t i, em_dtype dt, double v) {
  char *p = (char *)buf;
  switch (dt) {
    case EM_FLOAT32: ((float *)p)[i] = (float)v; break;
    case EM_FLOAT64: ((double *)p)[i] = v; break;
    case EM_FLOAT16: ((uint16_t *)p)[i] = em_float_to_half((float)v); break;
    case EM_BFLOAT16: ((uint16_t *)p)[i] = em_float_to_bf16((float)v); break;
    case EM_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
    case EM_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
    case EM_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
    case EM_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
    case EM_UINT8: ((uint8_t *)p)[i] = (uint8_t)(int64_t)v; break;
    case EM_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: break;
  }
}

static inline double t_get(const void *buf, int64_t i, em_dtype dt) {
  const char *p = (const char *)buf;
  switch (dt) {
    case EM_FLOAT32: return ((const float *)p)[i];
    case EM_FLOAT64: return ((const double *)p)[i];
    case EM_FLOAT16: return em_half_to_float(((const uint16_t *)p)[i]);
    case EM_BFLOAT16: return em_bf16_to_float(((const uint16_t *)p)[i]);
    case EM_INT8: return ((const int8_t *)p)[i];
    case EM_INT16: return ((const int16_t *)p)[i];
    case EM_INT32: return ((const int32_t *)p)[i];
    case EM_INT64: return (double)((const int64_t *)p)[i];
    case EM_UINT8: return ((const uint8_t *)p)[i];
    case EM_BOOL: return ((const uint8_t *)p)[i];
    default: return NAN;
  }
}

/* Wraps an int64 into dtype's range as a store into it would. */
static inline double t_wrap(int64_t v, em_dtype dt) {
  switch (dt) {
    case EM_INT8: return (int8_t)(uint8_t)v;
    case EM_INT16: return (int16_t)(uint16_t)v;
    case EM_INT32: return (int32_t)(uint32_t)v;
    case EM_UINT8: return (uint8_t)v;
    case EM_BOOL: return v != 0;
    default: return (double)v;
  }
}

static inline bool t_is_float(em_dtype dt) {
  return dt == EM_FLOAT32 || dt == EM_FLOAT64 || dt == EM_FLOAT16 || dt == EM_BFLOAT16;
}

/* Whether op applies to dt (as PyTorch: bitwise ops on integers and bool,
 * avg not on bool). */
static inline bool t_op_ok(em_reduce_op op, em_dtype dt) {
  if (op == EM_REDUCE_BAND || op == EM_REDUCE_BOR || op == EM_REDUCE_BXOR) return !t_is_float(dt);
  if (op == EM_REDUCE_AVG) return dt != EM_BOOL;
  return true;
}

/* The reduction over ranks 0..world-1 of t_val(r, idx(r)) — computed here
 * in int64 (every input is a small integer), then divided (avg) or wrapped
 * into dt as the backend's dtype arithmetic would. */
static inline double t_expect_vals(const int64_t *v, int world, em_reduce_op op, em_dtype dt) {
  if (dt == EM_BOOL) {
    int64_t acc = v[0] != 0;
    for (int r = 1; r < world; r++) {
      int64_t b = v[r] != 0;
      switch (op) {
        case EM_REDUCE_SUM: case EM_REDUCE_MAX: case EM_REDUCE_BOR: acc = acc | b; break;
        case EM_REDUCE_PROD: case EM_REDUCE_MIN: case EM_REDUCE_BAND: acc = acc & b; break;
        case EM_REDUCE_BXOR: acc = acc ^ b; break;
        default: break;
      }
    }
    return (double)acc;
  }
  int64_t acc = v[0];
  for (int r = 1; r < world; r++) {
    switch (op) {
      case EM_REDUCE_SUM: case EM_REDUCE_AVG: acc += v[r]; break;
      case EM_REDUCE_PROD: acc *= v[r]; break;
      case EM_REDUCE_MIN: acc = v[r] < acc ? v[r] : acc; break;
      case EM_REDUCE_MAX: acc = v[r] > acc ? v[r] : acc; break;
      case EM_REDUCE_BAND: acc &= v[r]; break;
      case EM_REDUCE_BOR: acc |= v[r]; break;
      case EM_REDUCE_BXOR: acc ^= v[r]; break;
      default: break;
    }
  }
  if (op == EM_REDUCE_AVG) {
    if (t_is_float(dt)) return (double)acc / world;
    return t_wrap(acc / world, dt); /* integers truncate toward zero */
  }
  return t_wrap(acc, dt);
}

static inline double t_expect(int world, int64_t i, em_reduce_op op, em_dtype dt) {
  int64_t v[T_MAX_RANKS] = {0};
  for (int r = 0; r < world && r < T_MAX_RANKS; r++) v[r] = t_val(r, i, dt);
  return t_expect_vals(v, world, op, dt);
}

static inline double t_tol(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT16: return 2e-3;
    case EM_BFLOAT16: return 1e-2;
    case EM_FLOAT32: return 1e-6;
    case EM_FLOAT64: return 1e-12;
    default: return 0;
  }
}

static inline bool t_close(double got, double want, em_dtype dt) {
  if (got == want) return true;
  return fabs(got - want) <= t_tol(dt) * fabs(want);
}

/* Fills n elements of buf with t_val(r, off + i). */
static inline void t_fill(void *buf, int r, int64_t off, int64_t n, em_dtype dt) {
  for (int64_t i = 0; i < n; i++) t_put(buf, i, dt, (double)t_val(r, off + i, dt));
}

/* A garbage pattern, so a result that was never written shows. */
static inline void t_poison(void *buf, size_t nbytes) { memset(buf, 0x5b, nbytes); }

static inline void *t_alloc(size_t nbytes) { return malloc(nbytes ? nbytes : 1); }

#endif
