/* The store's behaviour through its API: operations and their PyTorch
 * semantics, arbitrary bytes, timeouts naming keys, blocking gets woken by
 * other clients, prefix isolation, threads and processes adding at once,
 * authentication, connecting before the server is up, losing the server,
 * and the server hosted in a caller's libuv loop. */
#include <uv.h>

#include "comm/store_impl.h"
#include "tests/comm/test_store_util.h"

/* A server with no secret and one client on it; the test body uses srv, s. */
#define WITH_STORE(timeout_ms)                              \
  em_store_server *srv = t_server("", NULL, 0);             \
  ASSERT_NOTNULL(srv);                                      \
  em_store *s = t_client(em_store_server_port(srv), "", (timeout_ms)); \
  if (!s) em_store_server_destroy(srv);                     \
  ASSERT_NOTNULL(s)

#define END_STORE()            \
  em_store_release(s);         \
  em_store_server_destroy(srv)

static bool value_is(void *v, size_t n, const void *want, size_t wn) {
  return v && n == wn && (wn == 0 || memcmp(v, want, wn) == 0) && ((char *)v)[n] == '\0';
}

EM_TEST(set_get_overwrite_delete_num_keys) {
  WITH_STORE(10000);
  void *v = NULL;
  size_t n = 0;
  int64_t nk = -1;
  bool existed = false;
  ASSERT_OK(em_store_num_keys(s, &nk));
  ASSERT_EQ(nk, 0);
  ASSERT_OK(em_store_set(s, "k", "v1", 2));
  ASSERT_OK(em_store_get(s, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "v1", 2));
  ASSERT_STREQ((char *)v, "v1"); /* text values come back NUL-terminated */
  em_store_free(v);
  ASSERT_OK(em_store_set(s, "k", "second", 6));
  ASSERT_OK(em_store_get(s, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "second", 6));
  em_store_free(v);
  ASSERT_OK(em_store_set(s, "other", "x", 1));
  ASSERT_OK(em_store_num_keys(s, &nk));
  ASSERT_EQ(nk, 2);
  ASSERT_OK(em_store_delete_key(s, "k", &existed));
  ASSERT_TRUE(existed);
  ASSERT_OK(em_store_delete_key(s, "k", &existed));
  ASSERT_TRUE(!existed);
  ASSERT_OK(em_store_num_keys(s, &nk));
  ASSERT_EQ(nk, 1);
  ASSERT_ERR(em_store_get_timeout(s, "k", 0, &v, &n), EM_ERR_TIMEOUT, "'k'");
  ASSERT_TRUE(v == NULL && n == 0);
  ASSERT_STREQ(em_store_kind(s), "tcp");
  ASSERT_EQ(em_store_tcp_port(s), em_store_server_port(srv));
  END_STORE();
}

EM_TEST(arbitrary_bytes_zero_bytes_and_empty_values) {
  WITH_STORE(10000);
  void *v = NULL;
  size_t n = 0;
  /* a key made of every byte but NUL */
  char key[256];
  for (int i = 1; i < 256; i++) key[i - 1] = (char)i;
  key[255] = '\0';
  const uint8_t val[] = {0, 1, 0, 255, 0, 'a', 0};
  ASSERT_OK(em_store_set(s, key, val, sizeof val));
  ASSERT_OK(em_store_get(s, key, &v, &n));
  ASSERT_TRUE(value_is(v, n, val, sizeof val));
  em_store_free(v);
  /* empty value, given as NULL and as a pointer */
  ASSERT_OK(em_store_set(s, "empty", NULL, 0));
  ASSERT_OK(em_store_get(s, "empty", &v, &n));
  ASSERT_TRUE(v != NULL);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(((char *)v)[0], 0);
  em_store_free(v);
  ASSERT_OK(em_store_set(s, "empty2", "ignored", 0));
  const char *ks[] = {"empty", "empty2"};
  bool all = false;
  ASSERT_OK(em_store_check(s, ks, 2, &all));
  ASSERT_TRUE(all); /* an empty value still exists */
  /* the empty key is a key too */
  ASSERT_OK(em_store_set(s, "", "e", 1));
  ASSERT_OK(em_store_get(s, "", &v, &n));
  ASSERT_TRUE(value_is(v, n, "e", 1));
  em_store_free(v);
  /* a large value: 16 MiB of a pattern */
  size_t big = 16u << 20;
  uint8_t *b = malloc(big);
  ASSERT_NOTNULL(b);
  for (size_t i = 0; i < big; i++) b[i] = (uint8_t)(i * 2654435761u >> 13);
  em_status st = em_store_set(s, "big", b, big);
  if (st == EM_OK) st = em_store_get(s, "big", &v, &n);
  bool same = st == EM_OK && value_is(v, n, b, big);
  free(b);
  em_store_free(v);
  ASSERT_OK(st);
  ASSERT_TRUE(same);
  END_STORE();
}

EM_TEST(add_counts_in_decimal_text) {
  WITH_STORE(10000);
  int64_t r = 0;
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_add(s, "c", 5, &r));
  ASSERT_EQ(r, 5);
  ASSERT_OK(em_store_add(s, "c", -7, &r));
  ASSERT_EQ(r, -2);
  ASSERT_OK(em_store_add(s, "c", 0, &r));
  ASSERT_EQ(r, -2);
  ASSERT_OK(em_store_get(s, "c", &v, &n));
  ASSERT_TRUE(value_is(v, n, "-2", 2));
  em_store_free(v);
  /* set can seed a counter */
  ASSERT_OK(em_store_set(s, "seeded", "40", 2));
  ASSERT_OK(em_store_add(s, "seeded", 2, NULL));
  ASSERT_OK(em_store_get(s, "seeded", &v, &n));
  ASSERT_TRUE(value_is(v, n, "42", 2));
  em_store_free(v);
  ASSERT_OK(em_store_set(s, "text", "abc", 3));
  ASSERT_ERR(em_store_add(s, "text", 1, &r), EM_ERR_INVALID,
             "store: add: value of key 'text' is not an integer: 'abc'");
  ASSERT_OK(em_store_set(s, "spaced", " 1", 2));
  ASSERT_ERR(em_store_add(s, "spaced", 1, &r), EM_ERR_INVALID, "not an integer");
  ASSERT_OK(em_store_set(s, "max", "9223372036854775807", 19));
  ASSERT_ERR(em_store_add(s, "max", 1, &r), EM_ERR_INVALID, "overflows int64");
  ASSERT_OK(em_store_set(s, "min", "-9223372036854775808", 20));
  ASSERT_OK(em_store_add(s, "min", 1, &r));
  ASSERT_EQ(r, INT64_MIN + 1);
  ASSERT_OK(em_store_set(s, "toolong", "9223372036854775808", 19));
  ASSERT_ERR(em_store_add(s, "toolong", -1, &r), EM_ERR_INVALID, "not an integer");
  /* the failed adds changed nothing */
  ASSERT_OK(em_store_get(s, "max", &v, &n));
  ASSERT_TRUE(value_is(v, n, "9223372036854775807", 19));
  em_store_free(v);
  END_STORE();
}

EM_TEST(compare_set_follows_pytorch) {
  WITH_STORE(10000);
  void *v = NULL;
  size_t n = 0;
  bool all = true;
  /* missing key, empty expected: stores desired */
  ASSERT_OK(em_store_compare_set(s, "k", "", 0, "one", 3, &v, &n));
  ASSERT_TRUE(value_is(v, n, "one", 3));
  em_store_free(v);
  /* missing key, non-empty expected: answers expected, stores nothing */
  ASSERT_OK(em_store_compare_set(s, "absent", "exp", 3, "des", 3, &v, &n));
  ASSERT_TRUE(value_is(v, n, "exp", 3));
  em_store_free(v);
  const char *ab[] = {"absent"};
  ASSERT_OK(em_store_check(s, ab, 1, &all));
  ASSERT_TRUE(!all);
  /* match: swaps */
  ASSERT_OK(em_store_compare_set(s, "k", "one", 3, "two", 3, &v, &n));
  ASSERT_TRUE(value_is(v, n, "two", 3));
  em_store_free(v);
  /* mismatch: answers the current value, keeps it */
  ASSERT_OK(em_store_compare_set(s, "k", "one", 3, "three", 5, &v, &n));
  ASSERT_TRUE(value_is(v, n, "two", 3));
  em_store_free(v);
  ASSERT_OK(em_store_get(s, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "two", 3));
  em_store_free(v);
  /* bytes with NULs compare whole */
  ASSERT_OK(em_store_set(s, "z", "a\0b", 3));
  ASSERT_OK(em_store_compare_set(s, "z", "a\0c", 3, "no", 2, NULL, NULL));
  ASSERT_OK(em_store_compare_set(s, "z", "a\0b", 3, "yes", 3, &v, &n));
  ASSERT_TRUE(value_is(v, n, "yes", 3));
  em_store_free(v);
  END_STORE();
}

EM_TEST(check_and_wait) {
  WITH_STORE(10000);
  bool all = false;
  ASSERT_OK(em_store_check(s, NULL, 0, &all));
  ASSERT_TRUE(all);
  const char *ks[] = {"a", "b"};
  ASSERT_OK(em_store_check(s, ks, 2, &all));
  ASSERT_TRUE(!all);
  ASSERT_OK(em_store_set(s, "a", "1", 1));
  ASSERT_OK(em_store_check(s, ks, 2, &all));
  ASSERT_TRUE(!all);
  ASSERT_OK(em_store_set(s, "b", "1", 1));
  ASSERT_OK(em_store_check(s, ks, 2, &all));
  ASSERT_TRUE(all);
  ASSERT_OK(em_store_wait(s, ks, 2, 1000));
  ASSERT_OK(em_store_wait(s, ks, 2, 0)); /* present: 0 ms is enough */
  ASSERT_OK(em_store_wait(s, NULL, 0, 0));
  const char *dup[] = {"c", "c", "a"}; /* a key named twice */
  ASSERT_ERR(em_store_wait(s, dup, 3, 0), EM_ERR_TIMEOUT, "2 of 3 keys not set: 'c', 'c'");
  /* long lists are cut short */
  const char *many[12] = {"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11"};
  ASSERT_ERR(em_store_wait(s, many, 12, 0), EM_ERR_TIMEOUT,
             "12 of 12 keys not set: 'm0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7' and 4 more");
  END_STORE();
}

EM_TEST(wait_timeout_names_missing_keys_and_keeps_the_connection) {
  WITH_STORE(10000);
  ASSERT_OK(em_store_set(s, "a", "1", 1));
  const char *ks[] = {"a", "m1", "m\n2"};
  int64_t t0 = t_now_ms();
  ASSERT_ERR(em_store_wait(s, ks, 3, 150), EM_ERR_TIMEOUT,
             "store: wait: timed out after 150 ms; 2 of 3 keys not set: 'm1', 'm\\x0a2'");
  int64_t dt = t_now_ms() - t0;
  ASSERT_TRUE(dt >= 140 && dt < 3000);
  ASSERT_TRUE(!strstr(em_last_error(), "'a'"));
  /* the canceled wait left the connection in step */
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_set(s, "after", "ok", 2));
  ASSERT_OK(em_store_get(s, "after", &v, &n));
  ASSERT_TRUE(value_is(v, n, "ok", 2));
  em_store_free(v);
  t0 = t_now_ms();
  ASSERT_ERR(em_store_get_timeout(s, "nokey", 100, &v, &n), EM_ERR_TIMEOUT,
             "store: get: timed out after 100 ms waiting for key 'nokey'");
  ASSERT_TRUE(t_now_ms() - t0 < 3000);
  /* the store default applies to get */
  ASSERT_OK(em_store_set_timeout(s, 80));
  ASSERT_EQ(em_store_timeout(s), 80);
  ASSERT_ERR(em_store_get(s, "nokey", &v, &n), EM_ERR_TIMEOUT, "after 80 ms");
  ASSERT_ERR(em_store_wait(s, ks, 3, EM_STORE_DEFAULT_TIMEOUT), EM_ERR_TIMEOUT, "after 80 ms");
  ASSERT_OK(em_store_set_timeout(s, 10000));
  int64_t nk = 0;
  ASSERT_OK(em_store_num_keys(s, &nk));
  ASSERT_EQ(nk, 2); /* the canceled waiters left no placeholder keys */
  END_STORE();
}

typedef struct setter_arg {
  int port;
  int64_t delay_ms;
  const char *keys[4];
  int nkeys;
  em_status st;
  char err[256];
} setter_arg;

static void *setter_main(void *p) {
  setter_arg *a = p;
  em_store *c = t_client(a->port, "", 10000);
  a->st = c ? EM_OK : em_last_status();
  for (int i = 0; c && i < a->nkeys && a->st == EM_OK; i++) {
    t_sleep_ms(a->delay_ms);
    a->st = em_store_set(c, a->keys[i], a->keys[i], strlen(a->keys[i]));
  }
  if (a->st) snprintf(a->err, sizeof a->err, "%s", em_last_error());
  em_store_release(c);
  return NULL;
}

EM_TEST(get_and_wait_are_woken_by_another_clients_set) {
  WITH_STORE(10000);
  setter_arg a = {.port = em_store_server_port(srv), .delay_ms = 100, .keys = {"later"}, .nkeys = 1};
  pthread_t th;
  pthread_create(&th, NULL, setter_main, &a);
  void *v = NULL;
  size_t n = 0;
  int64_t t0 = t_now_ms();
  em_status st = em_store_get(s, "later", &v, &n); /* default timeout: 10 s */
  int64_t dt = t_now_ms() - t0;
  pthread_join(th, NULL);
  ASSERT_OK(a.st);
  ASSERT_OK(st);
  ASSERT_TRUE(value_is(v, n, "later", 5));
  em_store_free(v);
  ASSERT_TRUE(dt >= 80 && dt < 5000);

  setter_arg b = {.port = a.port, .delay_ms = 50, .keys = {"w1", "w2", "w3"}, .nkeys = 3};
  pthread_create(&th, NULL, setter_main, &b);
  const char *ks[] = {"w3", "w1", "w2"};
  st = em_store_wait(s, ks, 3, 5000);
  pthread_join(th, NULL);
  ASSERT_OK(b.st);
  ASSERT_OK(st);
  END_STORE();
}

EM_TEST(prefix_stores_are_isolated) {
  WITH_STORE(10000);
  void *v = NULL;
  size_t n = 0;
  bool all = true, existed = false;
  int64_t r = 0, nk = 0;
  em_store *p1 = em_store_prefix_create(s, "job1");
  em_store *p2 = em_store_prefix_create(s, "job2");
  ASSERT_NOTNULL(p1);
  ASSERT_NOTNULL(p2);
  ASSERT_STREQ(em_store_kind(p1), "prefix");
  ASSERT_EQ(em_store_tcp_port(p1), -1);
  ASSERT_OK(em_store_set(p1, "k", "one", 3));
  ASSERT_OK(em_store_set(p2, "k", "two", 3));
  ASSERT_OK(em_store_get(p1, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "one", 3));
  em_store_free(v);
  ASSERT_OK(em_store_get(s, "job2/k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "two", 3));
  em_store_free(v);
  const char *k[] = {"k"};
  ASSERT_OK(em_store_check(s, k, 1, &all));
  ASSERT_TRUE(!all); /* the base has no plain "k" */
  ASSERT_OK(em_store_add(p1, "n", 3, &r));
  ASSERT_OK(em_store_add(p2, "n", 10, &r));
  ASSERT_OK(em_store_add(p1, "n", 1, &r));
  ASSERT_EQ(r, 4);
  ASSERT_OK(em_store_delete_key(p2, "k", &existed));
  ASSERT_TRUE(existed);
  ASSERT_OK(em_store_get_timeout(p1, "k", 0, &v, &n));
  em_store_free(v);
  ASSERT_OK(em_store_num_keys(p1, &nk)); /* the base's count, as PyTorch */
  ASSERT_EQ(nk, 3);
  const char *only2[] = {"only2"};
  ASSERT_OK(em_store_set(p2, "only2", "x", 1));
  ASSERT_ERR(em_store_wait(p1, only2, 1, 0), EM_ERR_TIMEOUT, "'job1/only2'");
  /* nesting */
  em_store *sub = em_store_prefix_create(p1, "sub");
  ASSERT_NOTNULL(sub);
  ASSERT_OK(em_store_set(sub, "x", "deep", 4));
  ASSERT_OK(em_store_get(s, "job1/sub/x", &v, &n));
  ASSERT_TRUE(value_is(v, n, "deep", 4));
  em_store_free(v);
  ASSERT_OK(em_store_compare_set(sub, "x", "deep", 4, "deeper", 6, &v, &n));
  ASSERT_TRUE(value_is(v, n, "deeper", 6));
  em_store_free(v);
  /* a clone of a prefix store has its own connection and the same prefix */
  em_store *cl = em_store_clone(sub);
  ASSERT_NOTNULL(cl);
  ASSERT_OK(em_store_get(cl, "x", &v, &n));
  ASSERT_TRUE(value_is(v, n, "deeper", 6));
  em_store_free(v);
  em_store_release(cl);
  /* prefix stores keep the base alive: drop every other reference first */
  em_store_release(p1);
  em_store_release(s);
  ASSERT_OK(em_store_set(sub, "still", "here", 4));
  ASSERT_OK(em_store_get(p2, "n", &v, &n));
  ASSERT_TRUE(value_is(v, n, "10", 2));
  em_store_free(v);
  em_store_release(sub);
  em_store_release(p2);
  em_store_server_destroy(srv);
}

typedef struct adder_arg {
  em_store *shared; /* NULL: open an own connection on port */
  int port;
  int adds;
  int64_t *results;
  em_status st;
  char err[256];
} adder_arg;

static void *adder_main(void *p) {
  adder_arg *a = p;
  em_store *c = a->shared ? em_store_retain(a->shared) : t_client(a->port, "", 20000);
  a->st = c ? EM_OK : em_last_status();
  for (int i = 0; c && i < a->adds && a->st == EM_OK; i++)
    a->st = em_store_add(c, "counter", 1, &a->results[i]);
  if (a->st) snprintf(a->err, sizeof a->err, "%s", em_last_error());
  em_store_release(c);
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Runs nthreads adders (own or shared connection); every add's result
 * must be distinct: together exactly 1..total. */
static void run_adders(em_store_server *srv, em_store *shared, int nthreads, int adds) {
  int total = nthreads * adds;
  int64_t *res = calloc((size_t)total, sizeof *res);
  adder_arg *args = calloc((size_t)nthreads, sizeof *args);
  pthread_t *th = calloc((size_t)nthreads, sizeof *th);
  ASSERT_TRUE(res && args && th);
  for (int i = 0; i < nthreads; i++) {
    args[i] = (adder_arg){.shared = shared, .port = em_store_server_port(srv), .adds = adds,
                          .results = res + (size_t)i * adds};
    pthread_create(&th[i], NULL, adder_main, &args[i]);
  }
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  int bad = -1;
  for (int i = 0; i < nthreads; i++)
    if (args[i].st && bad < 0) bad = i;
  if (bad >= 0) EM_FAILF("thread %d: %s", bad, args[bad].err);
  qsort(res, (size_t)total, sizeof *res, cmp_i64);
  for (int i = 0; i < total && bad < 0; i++)
    if (res[i] != i + 1) {
      EM_FAILF("sorted add results[%d] = %lld, expected %d", i, (long long)res[i], i + 1);
      break;
    }
  free(res);
  free(args);
  free(th);
}

EM_TEST(threads_share_one_client) {
  WITH_STORE(20000);
  run_adders(srv, s, 8, 100);
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_get(s, "counter", &v, &n));
  ASSERT_TRUE(value_is(v, n, "800", 3));
  em_store_free(v);
  END_STORE();
}

EM_TEST(thirty_two_clients_add_at_once) {
  WITH_STORE(20000);
  run_adders(srv, NULL, 32, 25);
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_get(s, "counter", &v, &n));
  ASSERT_TRUE(value_is(v, n, "800", 3));
  em_store_free(v);
  END_STORE();
}

/* Forked processes, each its own client, add and then meet at a barrier
 * key; the parent hosts the server. They are forked before its thread
 * starts (a fork while another thread holds a lock, such as ASan's
 * allocator's, leaves the child with it held) and learn the port through
 * a pipe. */
EM_TEST(processes_add_and_meet) {
  enum { NPROC = 6, ADDS = 40 };
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pids[NPROC];
  int started = 0;
  for (; started < NPROC; started++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      close(fds[1]);
      int port = -1;
      if (read(fds[0], &port, sizeof port) != (ssize_t)sizeof port) _exit(9);
      em_store *c = t_client(port, "", 20000);
      int rc = c ? 0 : 10;
      int64_t last = 0, r = 0;
      for (int i = 0; !rc && i < ADDS; i++) {
        if (em_store_add(c, "procs", 1, &r) || r <= last) rc = 11;
        last = r;
      }
      int64_t arrived = 0;
      if (!rc && em_store_add(c, "arrived", 1, &arrived)) rc = 12;
      if (!rc && arrived == NPROC && em_store_set(c, "go", "1", 1)) rc = 13;
      const char *go[] = {"go"};
      if (!rc && em_store_wait(c, go, 1, 15000)) rc = 14;
      if (rc && c) fprintf(stderr, "child %d: %s\n", (int)getpid(), em_last_error());
      em_store_release(c);
      _exit(rc);
    }
    pids[started] = pid;
  }
  close(fds[0]);
  WITH_STORE(20000);
  int port = em_store_server_port(srv);
  for (int i = 0; i < started; i++)
    if (write(fds[1], &port, sizeof port) != (ssize_t)sizeof port) break;
  close(fds[1]);
  int codes[NPROC];
  for (int i = 0; i < started; i++) codes[i] = t_reap(pids[i], 30000);
  ASSERT_EQ(started, NPROC);
  for (int i = 0; i < NPROC; i++) ASSERT_EQ(codes[i], 0);
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_get(s, "procs", &v, &n));
  ASSERT_TRUE(value_is(v, n, "240", 3));
  em_store_free(v);
  END_STORE();
}

EM_TEST(authentication) {
  t_log log;
  t_log_init(&log);
  em_store_server *srv = t_server("s3cret", &log, 0);
  ASSERT_NOTNULL(srv);
  int port = em_store_server_port(srv);
  em_store *good = t_client(port, "s3cret", 10000);
  ASSERT_NOTNULL(good);
  int64_t t0 = t_now_ms();
  ASSERT_STORE_NULL_ERR(t_client(port, "wrong", 10000), EM_ERR_COMM,
                        "store: authentication failed: wrong or missing EMBER_STORE_SECRET");
  ASSERT_TRUE(t_now_ms() - t0 < 3000); /* refused at once, not retried */
  ASSERT_TRUE(t_log_has(&log, "refused 127.0.0.1:", "authentication failed (wrong secret)", 2000));
  ASSERT_STORE_NULL_ERR(t_client(port, "", 10000), EM_ERR_COMM,
                        "store: authentication failed: wrong or missing EMBER_STORE_SECRET");
  ASSERT_TRUE(t_log_has(&log, "refused 127.0.0.1:", "authentication failed (no secret)", 2000));
  /* the server carries on */
  ASSERT_OK(em_store_set(good, "k", "v", 1));
  em_store *again = t_client(port, "s3cret", 10000);
  ASSERT_NOTNULL(again);
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_get(again, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "v", 1));
  em_store_free(v);
  em_store_release(again);
  em_store_release(good);
  em_store_server_destroy(srv);
  t_log_deinit(&log);

  /* a server without a secret accepts a client that has one */
  srv = t_server("", NULL, 0);
  ASSERT_NOTNULL(srv);
  good = t_client(em_store_server_port(srv), "unneeded", 10000);
  ASSERT_NOTNULL(good);
  em_store_release(good);
  em_store_server_destroy(srv);
}

EM_TEST(secret_from_environment) {
  setenv(EM_STORE_SECRET_ENV, "from-env", 1);
  em_store_server *srv = em_store_server_start(HOST, 0, NULL); /* NULL options: env secret */
  em_store_options o = {.timeout_ms = 5000, .connect_timeout_ms = 2000}; /* secret NULL: env */
  em_store *c = srv ? em_store_tcp_connect(HOST, em_store_server_port(srv), &o) : NULL;
  bool ok = c != NULL;
  em_store_release(c);
  unsetenv(EM_STORE_SECRET_ENV);
  /* the variable gone, the client has no secret any more */
  em_store *d = srv ? em_store_tcp_connect(HOST, em_store_server_port(srv), &o) : NULL;
  em_status dst = em_last_status();
  em_store_release(d);
  em_store_server_destroy(srv);
  ASSERT_NOTNULL(srv);
  ASSERT_TRUE(ok);
  ASSERT_TRUE(d == NULL && dst == EM_ERR_COMM);
}

EM_TEST(connect_times_out_naming_the_address) {
  int port = em_test_free_port();
  ASSERT_TRUE(port > 0);
  char want[64];
  snprintf(want, sizeof want, "store: could not connect to 127.0.0.1:%d within", port);
  em_store_options o = {.connect_timeout_ms = 300, .secret = ""};
  int64_t t0 = t_now_ms();
  ASSERT_STORE_NULL_ERR(em_store_tcp_connect(HOST, port, &o), EM_ERR_TIMEOUT, want);
  int64_t dt = t_now_ms() - t0;
  ASSERT_TRUE(dt >= 280 && dt < 3000);
  if (!strstr(em_last_error(), "Connection refused")) EM_FAILF("%s", em_last_error());
}

typedef struct late_server {
  int port;
  int64_t delay_ms;
  em_store_server *srv;
} late_server;

static void *late_server_main(void *p) {
  late_server *l = p;
  t_sleep_ms(l->delay_ms);
  em_store_server_options o = {.secret = ""};
  l->srv = em_store_server_start(HOST, l->port, &o);
  return NULL;
}

EM_TEST(connect_retries_until_the_server_is_up) {
  late_server l = {.port = em_test_free_port(), .delay_ms = 300};
  ASSERT_TRUE(l.port > 0);
  pthread_t th;
  pthread_create(&th, NULL, late_server_main, &l);
  em_store_options o = {.connect_timeout_ms = 10000, .secret = ""};
  int64_t t0 = t_now_ms();
  em_store *c = em_store_tcp_connect(HOST, l.port, &o);
  int64_t dt = t_now_ms() - t0;
  em_status st = c ? EM_OK : em_last_status();
  if (c) st = em_store_set(c, "k", "v", 1);
  pthread_join(th, NULL);
  em_store_release(c);
  em_store_server_destroy(l.srv);
  ASSERT_NOTNULL(l.srv);
  ASSERT_OK(st);
  ASSERT_TRUE(dt >= 250 && dt < 5000);
}

typedef struct getter_arg {
  em_store *s;
  const char *key;
  int64_t timeout_ms;
  em_status st;
  int64_t elapsed;
  char err[512];
} getter_arg;

static void *getter_main(void *p) {
  getter_arg *g = p;
  void *v = NULL;
  size_t n = 0;
  int64_t t0 = t_now_ms();
  g->st = em_store_get_timeout(g->s, g->key, g->timeout_ms, &v, &n);
  g->elapsed = t_now_ms() - t0;
  snprintf(g->err, sizeof g->err, "%s", em_last_error());
  em_store_free(v);
  return NULL;
}

EM_TEST(server_stopping_fails_a_waiting_get_promptly) {
  WITH_STORE(EM_STORE_DEFAULT_TIMEOUT_MS); /* 30 minutes */
  getter_arg g = {.s = s, .key = "never", .timeout_ms = EM_STORE_DEFAULT_TIMEOUT};
  pthread_t th;
  pthread_create(&th, NULL, getter_main, &g);
  t_sleep_ms(150);
  em_store_server_stop(srv);
  pthread_join(th, NULL);
  ASSERT_EQ(g.st, EM_ERR_COMM);
  ASSERT_TRUE(strstr(g.err, "store: get: lost connection to server 127.0.0.1:") != NULL);
  ASSERT_TRUE(g.elapsed < 5000);
  /* later calls fail at once, naming the earlier loss */
  ASSERT_ERR(em_store_set(s, "k", "v", 1), EM_ERR_COMM, "was lost earlier");
  END_STORE();
}

EM_TEST(server_process_killed_while_a_client_waits) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    em_store_server *srv = t_server("", NULL, 0);
    int port = srv ? em_store_server_port(srv) : -1;
    if (write(fds[1], &port, sizeof port) != sizeof port) _exit(3);
    close(fds[1]);
    t_sleep_ms(20000); /* until killed; the parent reaps us in any case */
    _exit(0);
  }
  close(fds[1]);
  int port = -1;
  ssize_t r = read(fds[0], &port, sizeof port);
  close(fds[0]);
  em_store *c = r == sizeof port && port > 0 ? t_client(port, "", EM_STORE_DEFAULT_TIMEOUT_MS) : NULL;
  getter_arg g = {.s = c, .key = "never", .timeout_ms = EM_STORE_DEFAULT_TIMEOUT};
  pthread_t th;
  if (c) pthread_create(&th, NULL, getter_main, &g);
  t_sleep_ms(150);
  kill(pid, SIGKILL);
  int code = t_reap(pid, 5000);
  if (c) pthread_join(th, NULL);
  em_store_release(c);
  ASSERT_TRUE(port > 0);
  ASSERT_NOTNULL(c);
  ASSERT_EQ(code, 128 + SIGKILL);
  ASSERT_EQ(g.st, EM_ERR_COMM);
  ASSERT_TRUE(strstr(g.err, "lost connection") != NULL);
  ASSERT_TRUE(g.elapsed < 5000);
}

EM_TEST(clone_gives_a_thread_its_own_connection) {
  WITH_STORE(10000);
  em_store *c = em_store_clone(s);
  ASSERT_NOTNULL(c);
  ASSERT_EQ(em_store_timeout(c), 10000);
  /* a get parked on the clone does not hold up the original */
  getter_arg g = {.s = c, .key = "slow", .timeout_ms = 5000};
  pthread_t th;
  pthread_create(&th, NULL, getter_main, &g);
  t_sleep_ms(50);
  int64_t t0 = t_now_ms();
  em_status st = em_store_set(s, "other", "1", 1);
  int64_t dt = t_now_ms() - t0;
  if (st == EM_OK) st = em_store_set(s, "slow", "2", 1);
  pthread_join(th, NULL);
  em_store_release(c);
  ASSERT_OK(st);
  ASSERT_TRUE(dt < 1000);
  ASSERT_OK(g.st);
  END_STORE();
}

typedef struct race_arg {
  int port;
  int n;
  const char **names;
  em_status st;
} race_arg;

static void *race_setter_main(void *p) {
  race_arg *a = p;
  em_store *c = t_client(a->port, "", 10000);
  a->st = c ? EM_OK : em_last_status();
  for (int i = 0; c && i < a->n && a->st == EM_OK; i++) {
    a->st = em_store_set(c, a->names[i], a->names[i], strlen(a->names[i]));
    t_sleep_ms(1);
  }
  em_store_release(c);
  return NULL;
}

/* Tiny timeouts racing sets: every get either returns the right value or
 * times out, and the connection stays in step throughout. */
EM_TEST(timeouts_racing_sets_keep_the_connection_in_step) {
  WITH_STORE(10000);
  enum { N = 150 };
  static const char *names[N];
  static char buf[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(buf[i], sizeof buf[i], "r%d", i);
    names[i] = buf[i];
  }
  race_arg ra = {.port = em_store_server_port(srv), .n = N, .names = names};
  pthread_t th;
  pthread_create(&th, NULL, race_setter_main, &ra);
  int ok = 0, timeouts = 0, bad = 0;
  char err[512] = "";
  for (int i = 0; i < N; i++) {
    void *v = NULL;
    size_t n = 0;
    em_status st = em_store_get_timeout(s, names[i], i % 3, &v, &n);
    if (st == EM_OK && value_is(v, n, names[i], strlen(names[i]))) ok++;
    else if (st == EM_ERR_TIMEOUT) timeouts++;
    else if (!bad++) snprintf(err, sizeof err, "%s: %s", names[i], em_last_error());
    em_store_free(v);
  }
  pthread_join(th, NULL);
  if (bad) EM_FAILF("%d bad gets, first: %s", bad, err);
  ASSERT_OK(ra.st);
  ASSERT_EQ(ok + timeouts, N);
  /* everything is set by now: all answer */
  for (int i = 0; i < N; i++) {
    void *v = NULL;
    size_t n = 0;
    ASSERT_OK(em_store_get_timeout(s, names[i], 0, &v, &n));
    ASSERT_TRUE(value_is(v, n, names[i], strlen(names[i])));
    em_store_free(v);
  }
  END_STORE();
}

EM_TEST(tcp_create_hosts_the_server_in_process) {
  em_store_options o = {.timeout_ms = 5000, .connect_timeout_ms = 2000, .secret = "job"};
  em_store *master = em_store_tcp_create(HOST, 0, true, &o);
  ASSERT_NOTNULL(master);
  int port = em_store_tcp_port(master);
  ASSERT_TRUE(port > 0);
  em_store *worker = em_store_tcp_create(HOST, port, false, &o);
  if (!worker) em_store_release(master);
  ASSERT_NOTNULL(worker);
  int64_t r = 0;
  em_status st = em_store_add(worker, "n", 2, &r);
  if (!st) st = em_store_add(master, "n", 3, &r);
  em_store_release(master); /* stops the server */
  em_status after = em_store_set(worker, "x", "y", 1);
  em_store_release(worker);
  ASSERT_OK(st);
  ASSERT_EQ(r, 5);
  ASSERT_EQ(after, EM_ERR_COMM);
  /* a name (not a numeric address) listens on all interfaces */
  em_store *byname = em_store_tcp_create("localhost", 0, true, &o);
  ASSERT_NOTNULL(byname);
  em_store *w2 = em_store_tcp_connect(HOST, em_store_tcp_port(byname), &o);
  em_store_release(w2);
  em_store_release(byname);
  ASSERT_NOTNULL(w2);
  /* the port is taken */
  em_store *a = em_store_tcp_create(HOST, 0, true, &o);
  ASSERT_NOTNULL(a);
  char want[64];
  snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d", em_store_tcp_port(a));
  em_clear_error();
  em_store *b = em_store_tcp_create(HOST, em_store_tcp_port(a), true, &o);
  em_status bst = em_last_status();
  char berr[512];
  snprintf(berr, sizeof berr, "%s", em_last_error());
  em_store_release(b);
  em_store_release(a);
  ASSERT_TRUE(b == NULL && bst == EM_ERR_COMM);
  ASSERT_TRUE(strstr(berr, want) != NULL);
}

/* ---- a server inside a caller's loop, with the direct API ---- */

typedef struct attached {
  uv_loop_t loop;
  em_store_server *srv;
  int port;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool up;
  int fired_ok, fired_stopped;
  int loop_close_rc;
  em_status st;
  char err[256];
} attached;

static void on_quit(em_store_server *srv, em_status st, void *ctx) {
  if (st == EM_OK) em_store_server_destroy(srv); /* from inside our own callback */
}

static void on_go(em_store_server *srv, em_status st, void *ctx) {
  attached *a = ctx;
  if (st != EM_OK) {
    a->fired_stopped++;
    return;
  }
  a->fired_ok++;
  void *v = NULL;
  size_t n = 0;
  bool found = false;
  em_status s1 = em_store_server_get(srv, "go", &v, &n, &found);
  char ack[64];
  snprintf(ack, sizeof ack, "ack:%.*s", (int)n, v ? (char *)v : "");
  em_store_free(v);
  if (!s1 && found) s1 = em_store_server_set(srv, "ack", ack, strlen(ack));
  if (s1) a->st = s1;
  const char *q[] = {"quit"};
  if (!s1) s1 = em_store_server_watch(srv, q, 1, on_quit, a, NULL);
  if (s1) a->st = s1;
}

static void on_never(em_store_server *srv, em_status st, void *ctx) {
  attached *a = ctx;
  if (st == EM_ERR_STATE) a->fired_stopped++;
  else a->fired_ok += 100; /* must not happen */
}

static void *attached_main(void *p) {
  attached *a = p;
  uv_loop_init(&a->loop);
  em_store_server_options o = {.secret = "loop-secret"};
  a->srv = em_store_server_attach(&a->loop, HOST, 0, &o);
  a->port = a->srv ? em_store_server_port(a->srv) : -1;
  em_status st = a->srv ? EM_OK : em_last_status();
  int64_t r = 0;
  uint64_t id = 0, gone = 0;
  /* the hosting process seeds keys and watches without a client */
  if (!st) st = em_store_server_set(a->srv, "seed", "s", 1);
  if (!st) st = em_store_server_add(a->srv, "count", 7, &r);
  const char *go[] = {"go"};
  if (!st) st = em_store_server_watch(a->srv, go, 1, on_go, a, &id);
  const char *nv[] = {"never"};
  if (!st) st = em_store_server_watch(a->srv, nv, 1, on_never, a, NULL);
  const char *x[] = {"x"};
  if (!st) st = em_store_server_watch(a->srv, x, 1, on_never, a, &gone);
  if (!st && !em_store_server_unwatch(a->srv, gone)) st = EM_ERR_INTERNAL;
  if (!st && em_store_server_unwatch(a->srv, gone)) st = EM_ERR_INTERNAL;
  if (st) snprintf(a->err, sizeof a->err, "%s", em_last_error());
  a->st = st;
  pthread_mutex_lock(&a->mu);
  a->up = true;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  if (!st) uv_run(&a->loop, UV_RUN_DEFAULT); /* returns once the server closed */
  else em_store_server_destroy(a->srv), uv_run(&a->loop, UV_RUN_DEFAULT);
  a->loop_close_rc = uv_loop_close(&a->loop);
  return NULL;
}

EM_TEST(server_attached_to_a_callers_loop) {
  attached a = {0};
  pthread_mutex_init(&a.mu, NULL);
  pthread_cond_init(&a.cv, NULL);
  pthread_t th;
  pthread_create(&th, NULL, attached_main, &a);
  pthread_mutex_lock(&a.mu);
  while (!a.up) pthread_cond_wait(&a.cv, &a.mu);
  pthread_mutex_unlock(&a.mu);
  em_status st = a.st;
  em_store *c = NULL;
  void *v = NULL;
  size_t n = 0;
  int64_t r = 0;
  char seen[64] = "";
  if (!st) c = t_client(a.port, "loop-secret", 5000);
  if (!st && !c) st = em_last_status();
  if (!st) st = em_store_add(c, "count", 1, &r);
  if (!st) st = em_store_get(c, "seed", &v, &n);
  em_store_free(v);
  v = NULL;
  if (!st) st = em_store_set(c, "go", "17", 2);
  if (!st) st = em_store_get(c, "ack", &v, &n); /* set by the watch callback */
  if (v) snprintf(seen, sizeof seen, "%s", (char *)v);
  em_store_free(v);
  char err[512] = "";
  if (st) snprintf(err, sizeof err, "%s", em_last_error());
  if (c) em_store_set(c, "quit", "", 0); /* the loop's callback destroys the server */
  pthread_join(th, NULL);
  em_status after = c ? em_store_set(c, "late", "", 0) : EM_ERR_COMM;
  em_store_release(c);
  pthread_mutex_destroy(&a.mu);
  pthread_cond_destroy(&a.cv);
  if (a.st) EM_FAILF("loop thread: %s", a.err);
  if (st) EM_FAILF("client: %s", err);
  ASSERT_OK(a.st);
  ASSERT_OK(st);
  ASSERT_EQ(r, 8);
  ASSERT_STREQ(seen, "ack:17");
  ASSERT_EQ(a.fired_ok, 1);
  ASSERT_EQ(a.fired_stopped, 1); /* "never" was told the server stopped */
  ASSERT_EQ(a.loop_close_rc, 0); /* every handle closed */
  ASSERT_EQ(after, EM_ERR_COMM);
}

EM_TEST(attach_failure_leaves_the_loop_clean) {
  em_store_server *busy = t_server("", NULL, 0);
  ASSERT_NOTNULL(busy);
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  em_clear_error();
  em_store_server *srv = em_store_server_attach(&loop, HOST, em_store_server_port(busy), NULL);
  em_status st = em_last_status();
  char err[512];
  snprintf(err, sizeof err, "%s", em_last_error());
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  em_store_server_destroy(busy);
  ASSERT_TRUE(srv == NULL);
  ASSERT_EQ(st, EM_ERR_COMM);
  ASSERT_TRUE(strstr(err, "store server: cannot listen on 127.0.0.1:") != NULL);
  ASSERT_TRUE(strstr(err, "Address already in use") != NULL);
  ASSERT_EQ(rc, 0);
}

EM_TEST(argument_errors) {
  WITH_STORE(10000);
  void *v = (void *)1;
  size_t n = 7;
  bool b = false;
  int64_t r = 0;
  ASSERT_ERR(em_store_set(NULL, "k", "v", 1), EM_ERR_INVALID, "store: set: store is NULL");
  ASSERT_ERR(em_store_set(s, NULL, "v", 1), EM_ERR_INVALID, "store: set: key is NULL");
  ASSERT_ERR(em_store_set(s, "k", NULL, 3), EM_ERR_INVALID,
             "store: set: value is NULL but its length is 3");
  ASSERT_ERR(em_store_set(s, "k", "v", (size_t)EM_STORE_MAX_VALUE + 1), EM_ERR_INVALID,
             "store: set: value of 67108865 bytes exceeds the 67108864-byte limit");
  char *longkey = malloc(EM_STORE_MAX_KEY + 2);
  ASSERT_NOTNULL(longkey);
  memset(longkey, 'k', EM_STORE_MAX_KEY + 1);
  longkey[EM_STORE_MAX_KEY + 1] = '\0';
  em_status lst = em_store_set(s, longkey, "v", 1);
  free(longkey);
  ASSERT_EQ(lst, EM_ERR_INVALID);
  ASSERT_TRUE(strstr(em_last_error(), "exceeds the 65536-byte limit") != NULL);
  ASSERT_ERR(em_store_get(s, "k", NULL, &n), EM_ERR_INVALID, "must not be NULL");
  ASSERT_ERR(em_store_get_timeout(s, "k", -5, &v, &n), EM_ERR_INVALID,
             "store: get: timeout must be >= 0 ms or EM_STORE_DEFAULT_TIMEOUT, got -5");
  ASSERT_TRUE(v == NULL && n == 0);
  ASSERT_ERR(em_store_check(s, NULL, 2, &b), EM_ERR_INVALID, "store: check: keys is NULL");
  const char *withnull[] = {"a", NULL};
  ASSERT_ERR(em_store_wait(s, withnull, 2, 10), EM_ERR_INVALID, "store: wait: keys[1] is NULL");
  ASSERT_ERR(em_store_add(NULL, "k", 1, &r), EM_ERR_INVALID, "store: add: store is NULL");
  ASSERT_ERR(em_store_num_keys(s, NULL), EM_ERR_INVALID, "n must not be NULL");
  ASSERT_ERR(em_store_set_timeout(s, 0), EM_ERR_INVALID, "got 0");
  ASSERT_ERR(em_store_compare_set(s, "k", NULL, 1, "d", 1, NULL, NULL), EM_ERR_INVALID,
             "expected is NULL");
  ASSERT_STORE_NULL_ERR(em_store_prefix_create(NULL, "p"), EM_ERR_INVALID, "base store is NULL");
  ASSERT_STORE_NULL_ERR(em_store_prefix_create(s, NULL), EM_ERR_INVALID, "prefix is NULL");
  ASSERT_STORE_NULL_ERR(em_store_tcp_connect(NULL, 1, NULL), EM_ERR_INVALID, "host is empty");
  ASSERT_STORE_NULL_ERR(em_store_tcp_connect(HOST, 70000, NULL), EM_ERR_INVALID,
                        "port 70000 is not in [0, 65535]");
  ASSERT_STORE_NULL_ERR(em_store_tcp_connect(HOST, 0, NULL), EM_ERR_INVALID, "port 0");
  em_store_options bad = {.timeout_ms = -1};
  ASSERT_STORE_NULL_ERR(em_store_tcp_connect(HOST, 1, &bad), EM_ERR_INVALID, "timeouts must be");
  ASSERT_STORE_NULL_ERR(em_store_clone(NULL), EM_ERR_INVALID, "store is NULL");
  em_clear_error();
  ASSERT_TRUE(em_store_server_start(HOST, -1, NULL) == NULL);
  ASSERT_TRUE(strstr(em_last_error(), "port -1") != NULL);
  ASSERT_TRUE(em_store_server_attach(NULL, HOST, 0, NULL) == NULL);
  em_store_release(NULL);
  em_store_server_destroy(NULL);
  /* the connection still works after all that */
  ASSERT_OK(em_store_set(s, "k", "v", 1));
  END_STORE();
}

/* A store written outside this module plugs in through em_store_ops. */
typedef struct mem_store {
  char key[64];
  char val[64];
  size_t vlen;
  bool has;
  int destroyed;
} mem_store;

static em_status mem_set(void *ctx, const char *key, const void *value, size_t len, int64_t t) {
  mem_store *m = ctx;
  snprintf(m->key, sizeof m->key, "%s", key);
  memcpy(m->val, value, len < 64 ? len : 64);
  m->vlen = len;
  m->has = true;
  return EM_OK;
}
static em_status mem_get(void *ctx, const char *key, int64_t t, void **value, size_t *len) {
  mem_store *m = ctx;
  if (!m->has || strcmp(key, m->key))
    return em_set_error(EM_ERR_TIMEOUT, "mem: no key '%s'", key);
  *value = malloc(m->vlen + 1);
  memcpy(*value, m->val, m->vlen);
  ((char *)*value)[m->vlen] = 0;
  *len = m->vlen;
  return EM_OK;
}
static em_status mem_add(void *c, const char *k, int64_t d, int64_t t, int64_t *r) {
  return em_set_error(EM_ERR_NOTIMPL, "mem: add");
}
static em_status mem_cas(void *c, const char *k, const void *e, size_t el, const void *d,
                         size_t dl, int64_t t, void **cur, size_t *cl) {
  return em_set_error(EM_ERR_NOTIMPL, "mem: compare_set");
}
static em_status mem_check(void *c, const char *const *k, size_t n, int64_t t, bool *all) {
  *all = false;
  return EM_OK;
}
static em_status mem_wait(void *c, const char *const *k, size_t n, int64_t t) { return EM_OK; }
static em_status mem_del(void *c, const char *k, int64_t t, bool *e) {
  *e = false;
  return EM_OK;
}
static em_status mem_num(void *c, int64_t t, int64_t *n) {
  *n = ((mem_store *)c)->has;
  return EM_OK;
}
static void mem_destroy(void *c) { ((mem_store *)c)->destroyed++; }

static const em_store_ops mem_ops = {
    .name = "mem", .set = mem_set, .get = mem_get, .add = mem_add, .compare_set = mem_cas,
    .check = mem_check, .wait = mem_wait, .delete_key = mem_del, .num_keys = mem_num,
    .destroy = mem_destroy};

EM_TEST(custom_store_through_ops) {
  mem_store m = {0};
  em_store *s = em_store_create(&mem_ops, &m);
  ASSERT_NOTNULL(s);
  ASSERT_TRUE(em_store_ctx(s) == &m);
  ASSERT_STREQ(em_store_kind(s), "mem");
  em_store *p = em_store_prefix_create(s, "pre");
  ASSERT_NOTNULL(p);
  ASSERT_OK(em_store_set(p, "k", "val", 3));
  ASSERT_STREQ(m.key, "pre/k");
  void *v = NULL;
  size_t n = 0;
  ASSERT_OK(em_store_get(p, "k", &v, &n));
  ASSERT_TRUE(value_is(v, n, "val", 3));
  em_store_free(v);
  ASSERT_ERR(em_store_add(p, "k", 1, NULL), EM_ERR_NOTIMPL, "mem: add");
  ASSERT_STORE_NULL_ERR(em_store_clone(p), EM_ERR_NOTIMPL, "a mem store cannot be cloned");
  em_store_release(s);
  ASSERT_EQ(m.destroyed, 0); /* the prefix store still holds it */
  em_store_release(p);
  ASSERT_EQ(m.destroyed, 1);
  em_store_ops incomplete = mem_ops;
  incomplete.get = NULL;
  ASSERT_STORE_NULL_ERR(em_store_create(&incomplete, &m), EM_ERR_INVALID, "lacks a required");
}

EM_TEST_MAIN()
