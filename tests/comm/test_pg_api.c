/* The process-group API around the collectives: creating groups from the
 * environment, a tcp:// URL and sub-groups (members and non-members); bad
 * arguments of every kind (rejected before anything is sent, so the group
 * goes on working); asynchronous works in flight together and waited out
 * of order, completion callbacks, completed works; send/recv with tags out
 * of order, both directions at once and between collectives; list forms
 * with non-contiguous tensors; the backend registry (a fake backend checks
 * the front end's staging on its own); releasing a group with work queued. */
#include <stdatomic.h>

#include "tests/comm/test_pg_util.h"

static em_tensor *iota(int64_t n, em_dtype dt, double base) {
  em_tensor *t = em_tensor_empty(1, &n, dt);
  if (t)
    for (int64_t i = 0; i < n; i++) t_set(t, i, base + (double)(i % 100));
  return t;
}

/* Every rank reaches this point (through the test's own store) before any
 * goes on: rank 0 must not take a store it hosts away from the others. */
static void sync_all(t_ctx *c, const char *key) {
  int64_t n = 0;
  em_store_add(c->store, key, 1, &n);
  int64_t end = t_now_ms() + 10000;
  while (n < c->world && t_now_ms() < end) {
    t_sleep_ms(1);
    em_store_add(c->store, key, 0, &n);
  }
}

static void allreduce_ok(em_pg *pg, int64_t n) {
  int W = em_pg_size(pg);
  em_tensor *t = iota(n, EM_FLOAT64, 1);
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  for (int64_t i = 0; i < n; i++)
    CK(t_get(t, i) == W * (1 + (double)(i % 100)), "element %lld: %g", (long long)i, t_get(t, i));
  em_tensor_release(t);
}

/* ---- init from the environment and from a URL ----------------------------------------- */

static void body_env(t_ctx *c, em_pg *unused) {
  (void)unused;
  int port = *(int *)c->arg;
  char buf[32];
  /* malformed and missing variables first */
  unsetenv("RANK");
  unsetenv("WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_SIZE");
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "environment variable RANK is not set");
  setenv("RANK", "zero", 1);
  setenv("WORLD_SIZE", "2", 1);
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "RANK='zero' is not a valid integer");
  snprintf(buf, sizeof buf, "%d", c->rank);
  setenv("RANK", buf, 1);
  snprintf(buf, sizeof buf, "%d", c->world);
  setenv("WORLD_SIZE", buf, 1);
  unsetenv("MASTER_ADDR");
  unsetenv("MASTER_PORT");
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "MASTER_ADDR is not set");
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "MASTER_PORT is not set");
  setenv("MASTER_PORT", "70000", 1);
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "MASTER_PORT=70000 is out of range");
  snprintf(buf, sizeof buf, "%d", port);
  setenv("MASTER_PORT", buf, 1);
  setenv("RANK", "5", 1);
  CK_NULL(em_pg_init_env(NULL), EM_ERR_INVALID, "rank 5 is out of range for world size");
  snprintf(buf, sizeof buf, "%d", c->rank);
  setenv("RANK", buf, 1);
  em_pg_options bad = {.backend = "carrier-pigeon"};
  CK_NULL(em_pg_init_env(&bad), EM_ERR_INVALID, "unknown process group backend 'carrier-pigeon'",
          "tcp");
  /* rank 0 hosts the store at MASTER_PORT */
  snprintf(buf, sizeof buf, "%d", port);
  setenv("MASTER_PORT", buf, 1);
  setenv("EMBER_STORE_SECRET", "", 1);
  em_pg_options o = {.backend = "tcp", .timeout_ms = 10000};
  em_pg *pg = em_pg_init_env(&o);
  CK_NN(pg);
  CK(em_pg_rank(pg) == c->rank && em_pg_size(pg) == c->world, "rank %d size %d", em_pg_rank(pg),
     em_pg_size(pg));
  CK(!strcmp(em_pg_backend_name(pg), "tcp"), "backend %s", em_pg_backend_name(pg));
  CK(em_pg_store(pg) != NULL, "a store");
  CK(em_pg_timeout(pg) == 10000, "timeout %lld", (long long)em_pg_timeout(pg));
  allreduce_ok(pg, 1000);
  /* a second group with the default name on the same store gets fresh
   * keys; rank 0's first group hosts the store, so nobody hosts now */
  setenv("EMBER_STORE_HOSTED", "1", 1);
  em_pg *again = em_pg_init_env(&o);
  unsetenv("EMBER_STORE_HOSTED");
  CK_NN(again);
  allreduce_ok(again, 10);
  em_pg_release(again);
  allreduce_ok(pg, 100000);
  CK_OK(em_pg_monitored_barrier(pg, 10000, true));
  sync_all(c, "env_done"); /* rank 0's store must outlive the others' use */
  em_pg_release(pg);
  /* a launcher hosts the store: EMBER_STORE_HOSTED=1 makes rank 0 only
   * connect (here the test's own store plays the launcher's) */
  snprintf(buf, sizeof buf, "%d", em_store_tcp_port(c->store));
  setenv("MASTER_PORT", buf, 1);
  setenv("EMBER_STORE_HOSTED", "1", 1);
  em_pg_options o2 = {.backend = "auto", .timeout_ms = 10000, .group_name = "hosted"};
  pg = em_pg_init_env(&o2);
  CK_NN(pg);
  allreduce_ok(pg, 77);
  em_pg_release(pg);
  unsetenv("EMBER_STORE_HOSTED");
}

EM_TEST(init_from_environment) {
  int port = em_test_free_port();
  ASSERT_TRUE(port > 0);
  t_opts o = {.no_group = true};
  ASSERT_RANKS_OK(2, body_env, &port, &o);
  port = em_test_free_port();
  ASSERT_RANKS_OK(3, body_env, &port, &o);
}

static void body_url(t_ctx *c, em_pg *unused) {
  (void)unused;
  int port = *(int *)c->arg;
  CK_NULL(em_pg_init_url(NULL, 0, 1, NULL), EM_ERR_INVALID, "url is NULL");
  CK_NULL(em_pg_init_url("http://127.0.0.1:80", 0, 1, NULL), EM_ERR_INVALID, "unsupported URL");
  CK_NULL(em_pg_init_url("tcp://127.0.0.1", 0, 1, NULL), EM_ERR_INVALID, "lacks host:port");
  CK_NULL(em_pg_init_url("tcp://127.0.0.1:0", 0, 1, NULL), EM_ERR_INVALID, "invalid port");
  CK_NULL(em_pg_init_url("tcp://127.0.0.1:12x", 0, 1, NULL), EM_ERR_INVALID, "invalid port");
  CK_NULL(em_pg_init_url("tcp://[::1", 0, 1, NULL), EM_ERR_INVALID, "malformed URL");
  CK_NULL(em_pg_init_url("tcp://127.0.0.1:5", 3, 2, NULL), EM_ERR_INVALID, "rank 3 is out of range");
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  em_pg_options o = {.backend = "tcp", .timeout_ms = 10000};
  em_pg *pg = em_pg_init_url(url, c->rank, c->world, &o);
  CK_NN(pg);
  allreduce_ok(pg, 5000);
  CK_OK(em_pg_monitored_barrier(pg, 10000, true));
  sync_all(c, "url_done");
  em_pg_release(pg);
}

EM_TEST(init_from_tcp_url) {
  int port = em_test_free_port();
  ASSERT_TRUE(port > 0);
  t_opts o = {.no_group = true};
  ASSERT_RANKS_OK(3, body_url, &port, &o);
}

/* ---- sub-groups ---------------------------------------------------------------------------- */

static void body_new_group(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg);
  CK_NULL(em_pg_new_group(pg, 2, (int[]){2, 0}, NULL), EM_ERR_INVALID, "sorted and distinct");
  CK_NULL(em_pg_new_group(pg, 2, (int[]){0, 9}, NULL), EM_ERR_INVALID, "rank 9 is out of range");
  CK_NULL(em_pg_new_group(pg, -1, NULL, NULL), EM_ERR_INVALID, "bad rank list");
  const int even[] = {0, 2}, tail[] = {1, 2, 3};
  em_pg *a = em_pg_new_group(pg, 2, even, NULL);
  CK_NN(a);
  em_pg *b = em_pg_new_group(pg, 3, tail, NULL);
  CK_NN(b);
  em_pg *all = em_pg_new_group(pg, 0, NULL, NULL); /* every rank */
  CK_NN(all);
  int ra = r == 0 ? 0 : r == 2 ? 1 : -1;
  CK(em_pg_rank(a) == ra && em_pg_size(a) == 2, "group a: rank %d size %d", em_pg_rank(a), em_pg_size(a));
  CK(em_pg_rank(b) == (r >= 1 ? r - 1 : -1) && em_pg_size(b) == 3, "group b: rank %d", em_pg_rank(b));
  CK(em_pg_rank(all) == r && em_pg_size(all) == 4, "group all: rank %d", em_pg_rank(all));
  em_tensor *t = iota(1000, EM_INT32, r);
  /* issue on both groups before waiting: they run independently */
  em_work *wa = em_pg_rank(a) >= 0 ? em_pg_allreduce(a, t, EM_REDUCE_SUM, NULL) : NULL;
  em_tensor *u = iota(300000, EM_FLOAT32, 10 * r);
  em_work *wb = em_pg_rank(b) >= 0 ? em_pg_allreduce(b, u, EM_REDUCE_MAX, NULL) : NULL;
  if (em_pg_rank(a) < 0) {
    CK_NULL(em_pg_allreduce(a, t, EM_REDUCE_SUM, NULL), EM_ERR_STATE, "not a member of group");
    CK_NULL(em_pg_new_group(a, 0, NULL, NULL), EM_ERR_STATE, "not a member");
  } else {
    CK_NN(wa);
    CK_OK(em_work_wait(wa, EM_PG_DEFAULT_TIMEOUT));
    for (int64_t i = 0; i < 1000; i++)
      CK(t_get(t, i) == 0 + 2 + 2 * (double)(i % 100), "group a element %lld: %g", (long long)i, t_get(t, i));
  }
  if (wb) {
    CK_OK(em_work_wait(wb, EM_PG_DEFAULT_TIMEOUT));
    for (int64_t i = 0; i < 300000; i += 997)
      CK(t_get(u, i) == 30 + (double)(i % 100), "group b element %lld: %g", (long long)i, t_get(u, i));
  } else {
    CK(r == 0, "rank %d should be in group b", r);
  }
  em_work_release(wa);
  em_work_release(wb);
  /* a sub-group of a sub-group */
  if (em_pg_rank(b) >= 0) {
    em_pg *bb = em_pg_new_group(b, 2, (int[]){0, 2}, NULL); /* world ranks 1 and 3 */
    CK_NN(bb);
    CK(em_pg_rank(bb) == (r == 1 ? 0 : r == 3 ? 1 : -1), "bb rank %d", em_pg_rank(bb));
    if (em_pg_rank(bb) >= 0) allreduce_ok(bb, 5);
    em_pg_release(bb);
  }
  allreduce_ok(all, 64);
  allreduce_ok(pg, 64);
  em_tensor_release(t);
  em_tensor_release(u);
  em_pg_release(a);
  em_pg_release(b);
  em_pg_release(all);
  /* ranks that disagree about the members fail instead of hanging */
  const int mine[] = {0, r == 3 ? 2 : 1};
  em_pg *bad = em_pg_new_group(pg, 2, mine, NULL);
  if (bad) {
    /* the first writer's list won and this rank agrees with it: a member
     * group works (its other member agreed too), others are placeholders */
    if (em_pg_rank(bad) >= 0) allreduce_ok(bad, 3);
    em_pg_release(bad);
  } else {
    CK(em_last_status() == EM_ERR_INVALID && strstr(em_last_error(), "but another rank"),
       "%s", em_last_error());
  }
}

EM_TEST(new_group_members_and_non_members) {
  t_opts o = {.timeout_ms = 5000};
  ASSERT_RANKS_OK(4, body_new_group, NULL, &o);
}

/* ---- bad arguments -------------------------------------------------------------------------- */

static void body_bad_args(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg);
  em_tensor *f = iota(8, EM_FLOAT32, 0), *i32 = iota(8, EM_INT32, 0), *b = em_tensor_ones(EM_DIMS(8), EM_BOOL);
  em_tensor *f4 = iota(4, EM_FLOAT32, 0), *f16 = iota(16, EM_FLOAT32, 0), *d8 = iota(8, EM_FLOAT64, 0);
  CK_NULL(em_pg_allreduce(NULL, f, EM_REDUCE_SUM, NULL), EM_ERR_INVALID, "process group is NULL");
  CK_NULL(em_pg_allreduce(pg, NULL, EM_REDUCE_SUM, NULL), EM_ERR_INVALID, "allreduce: tensor is NULL");
  CK_NULL(em_pg_allreduce(pg, f, (em_reduce_op)99, NULL), EM_ERR_INVALID, "invalid reduce op 99");
  CK_NULL(em_pg_allreduce(pg, f, EM_REDUCE_BAND, NULL), EM_ERR_DTYPE,
          "cannot use reduce op band with non-integral dtype float32");
  CK_NULL(em_pg_allreduce(pg, b, EM_REDUCE_AVG, NULL), EM_ERR_DTYPE, "cannot use reduce op avg with dtype bool");
  CK_NULL(em_pg_reduce(pg, d8, 0, EM_REDUCE_BXOR, NULL), EM_ERR_DTYPE, "reduce: cannot use reduce op bxor");
  em_coll_options neg = {.timeout_ms = -5};
  CK_NULL(em_pg_allreduce(pg, f, EM_REDUCE_SUM, &neg), EM_ERR_INVALID, "timeout must be >= 0 ms (got -5)");
  CK_NULL(em_pg_broadcast(pg, f, 2, NULL), EM_ERR_INVALID, "broadcast: root rank 2 is out of range for a group of size 2");
  CK_NULL(em_pg_broadcast(pg, f, -1, NULL), EM_ERR_INVALID, "root rank -1 is out of range");
  CK_NULL(em_pg_reduce(pg, f, 5, EM_REDUCE_SUM, NULL), EM_ERR_INVALID, "reduce: root rank 5");
  em_tensor *outs_bad_dt[2] = {f, i32}, *outs_bad_n[2] = {f, f4}, *outs_null[2] = {f, NULL};
  CK_NULL(em_pg_allgather(pg, NULL, f, NULL), EM_ERR_INVALID, "output list is NULL");
  CK_NULL(em_pg_allgather(pg, outs_bad_dt, f, NULL), EM_ERR_DTYPE,
          "allgather: output tensor 1 has dtype int32 but the input has dtype float32");
  CK_NULL(em_pg_allgather(pg, outs_bad_n, f, NULL), EM_ERR_SHAPE, "output tensor 1 has shape [4] (4 elements)");
  CK_NULL(em_pg_allgather(pg, outs_null, f, NULL), EM_ERR_INVALID, "output tensor 1 is NULL");
  CK_NULL(em_pg_allgather_into_tensor(pg, f, f, NULL), EM_ERR_SHAPE,
          "output tensor size must be equal to world_size times input tensor size");
  CK_NULL(em_pg_allgather_into_tensor(pg, d8, f4, NULL), EM_ERR_DTYPE, "output dtype float64 differs");
  CK_NULL(em_pg_reduce_scatter_tensor(pg, f, f, EM_REDUCE_SUM, NULL), EM_ERR_SHAPE,
          "input tensor size must be equal to world_size times output tensor size");
  CK_NULL(em_pg_reduce_scatter(pg, f, outs_bad_dt, EM_REDUCE_SUM, NULL), EM_ERR_DTYPE, "input tensor 1 has dtype int32");
  CK_NULL(em_pg_reduce_scatter(pg, f, NULL, EM_REDUCE_SUM, NULL), EM_ERR_INVALID, "input list is NULL");
  em_tensor *two[2] = {f, f};
  CK_NULL(em_pg_reduce_scatter_tensor(pg, f4, f, EM_REDUCE_BOR, NULL), EM_ERR_DTYPE, "bor");
  CK_NULL(em_pg_gather(pg, r == 0 ? NULL : two, f, 0, NULL), EM_ERR_INVALID,
          r == 0 ? "the root (rank 0) must pass an output list" : "must be NULL on non-root ranks");
  CK_NULL(em_pg_scatter(pg, f, r == 1 ? NULL : two, 1, NULL), EM_ERR_INVALID,
          r == 1 ? "the root (rank 1) must pass an input list" : "must be NULL on non-root ranks");
  CK_NULL(em_pg_gather(pg, two, f, 3, NULL), EM_ERR_INVALID, "gather: root rank 3");
  em_tensor *mixed[2] = {f, d8}, *fs[2] = {f, f};
  CK_NULL(em_pg_all_to_all(pg, fs, mixed, NULL), EM_ERR_DTYPE, "all_to_all: input tensor 1 has dtype float64");
  CK_NULL(em_pg_all_to_all(pg, NULL, fs, NULL), EM_ERR_INVALID, "output list is NULL");
  em_tensor *self_bad[2] = {f4, f4};
  CK_NULL(em_pg_all_to_all(pg, self_bad, fs, NULL), EM_ERR_SHAPE, "what this rank sends itself");
  CK_NULL(em_pg_send(pg, f, r, 0, NULL), EM_ERR_INVALID, "cannot send to itself");
  CK_NULL(em_pg_recv(pg, f, r, 0, NULL), EM_ERR_INVALID, "cannot receive from itself");
  CK_NULL(em_pg_send(pg, f, 1 - r, -1, NULL), EM_ERR_INVALID, "tag must be >= 0 (got -1)");
  CK_NULL(em_pg_send(pg, f, 7, 0, NULL), EM_ERR_INVALID, "send: destination rank 7 is out of range");
  CK_NULL(em_pg_recv(pg, f, -2, 0, NULL), EM_ERR_INVALID, "recv: source rank -2 is out of range");
  CK_ERR(em_work_wait(NULL, 10), EM_ERR_INVALID, "work is NULL");
  CK_ERR(em_work_status(NULL), EM_ERR_INVALID, "work is NULL");
  CK_ERR(em_work_then(NULL, NULL, NULL), EM_ERR_INVALID, "NULL");
  CK_ERR(em_pg_set_timeout(pg, 0), EM_ERR_INVALID, "timeout must be > 0 ms");
  CK_ERR(em_pg_monitored_barrier(NULL, 10, false), EM_ERR_INVALID, "process group is NULL");
  CK_NULL(em_pg_init_store(c->store, 0, 0, NULL), EM_ERR_INVALID, "world size must be >= 1");
  CK_NULL(em_pg_init_store(c->store, 2, 2, NULL), EM_ERR_INVALID, "rank 2 is out of range");
  CK_NULL(em_pg_init_store(NULL, 0, 1, NULL), EM_ERR_INVALID, "store is NULL");
  em_pg_options neg_o = {.timeout_ms = -1};
  CK_NULL(em_pg_init_store(c->store, 0, 1, &neg_o), EM_ERR_INVALID, "timeout must be > 0 ms");
  /* a wait with a negative timeout other than the default is refused */
  em_work *done = em_work_completed(EM_OK);
  CK_ERR(em_work_wait(done, -7), EM_ERR_INVALID, "timeout must be >= 0 ms");
  em_work_release(done);
  /* nothing was sent: the group still works, and collective numbers
   * were not consumed by the refused calls */
  allreduce_ok(pg, 1000);
  em_tensor_release(f);
  em_tensor_release(i32);
  em_tensor_release(b);
  em_tensor_release(f4);
  em_tensor_release(f16);
  em_tensor_release(d8);
}

EM_TEST(bad_arguments_are_refused_before_anything_is_sent) {
  ASSERT_RANKS_OK(2, body_bad_args, NULL, NULL);
}

/* ---- async works, callbacks ------------------------------------------------------------------ */

static atomic_int cb_count;
static void on_done(em_work *w, void *ctx) {
  (void)w;
  atomic_fetch_add((atomic_int *)ctx, 1);
}

static void body_async(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  enum { K = 6 };
  em_tensor *ts[K];
  em_work *ws[K];
  atomic_init(&cb_count, 0);
  for (int k = 0; k < K; k++) {
    int64_t n = (k % 2) ? 3 : (1 << 18) + k; /* small ones queue behind large ones */
    ts[k] = iota(n, EM_FLOAT32, k + r);
    ws[k] = em_pg_allreduce(pg, ts[k], EM_REDUCE_SUM, NULL);
    CK_NN(ws[k]);
    CK_OK(em_work_then(ws[k], on_done, &cb_count));
  }
  for (int k = K - 1; k >= 0; k--) { /* out of order */
    CK_OK(em_work_wait(ws[k], EM_PG_DEFAULT_TIMEOUT));
    CK(em_work_is_completed(ws[k]), "completed");
    int64_t n = ts[k]->numel;
    double base = W * k + W * (W - 1) / 2.0;
    for (int64_t i = 0; i < n; i += 1 + n / 50)
      CK(t_get(ts[k], i) == base + W * (double)(i % 100), "work %d element %lld: %g", k, (long long)i,
         t_get(ts[k], i));
  }
  CK(atomic_load(&cb_count) == K, "callbacks ran %d times", atomic_load(&cb_count));
  /* a callback on a completed work runs at once, on this thread */
  CK_OK(em_work_then(ws[0], on_done, &cb_count));
  CK(atomic_load(&cb_count) == K + 1, "late callback");
  for (int k = 0; k < K; k++) {
    em_work_release(ws[k]);
    em_tensor_release(ts[k]);
  }
  /* already-complete works for user hooks */
  em_work *ok = em_work_completed(EM_OK);
  CK_NN(ok);
  CK(em_work_is_completed(ok), "completed");
  CK_OK(em_work_wait(ok, 0));
  em_set_error(EM_ERR_COMM, "hook failed: disk on fire");
  em_work *bad = em_work_completed(EM_ERR_COMM);
  em_clear_error();
  CK_ERR(em_work_wait(bad, 10), EM_ERR_COMM, "disk on fire");
  CK_ERR(em_work_status(bad), EM_ERR_COMM, "disk on fire");
  em_work_release(ok);
  em_work_release(bad);
  /* the group's timeout can change; a pending work reports EM_ERR_STATE */
  CK_OK(em_pg_set_timeout(pg, 12345));
  CK(em_pg_timeout(pg) == 12345, "timeout");
  em_tensor *big = iota(1 << 20, EM_FLOAT32, 0);
  em_work *w = em_pg_allreduce(pg, big, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  em_status st = em_work_status(w);
  CK(st == EM_OK || st == EM_ERR_STATE, "status %s", em_status_name(st));
  if (st == EM_ERR_STATE) CK(strstr(em_last_error(), "still pending"), "%s", em_last_error());
  CK_OK(em_work_wait(w, 10000));
  em_work_release(w);
  /* release works without waiting, then the group: it runs them first */
  for (int k = 0; k < 3; k++) {
    w = em_pg_allreduce(pg, big, EM_REDUCE_SUM, NULL);
    CK_NN(w);
    em_work_release(w);
  }
  em_tensor_release(big);
}

EM_TEST(async_works_in_flight_waited_out_of_order) {
  ASSERT_RANKS_OK(2, body_async, NULL, NULL);
  ASSERT_RANKS_OK(3, body_async, NULL, NULL);
}

/* ---- send / recv ------------------------------------------------------------------------------- */

static void body_p2p(t_ctx *c, em_pg *pg) {
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  if (r < 2) {
    int peer = 1 - r;
    if (r == 0) { /* tags 1, 2, 1: the receiver asks for 2 first */
      for (int k = 0; k < 3; k++) {
        em_tensor *t = iota(10, EM_INT64, 100 * (k + 1));
        em_work *w = em_pg_send(pg, t, peer, k == 1 ? 2 : 1, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        em_tensor_release(t);
      }
    } else {
      const int tags[] = {2, 1, 1};
      const double want[] = {200, 100, 300};
      for (int k = 0; k < 3; k++) {
        em_tensor *t = em_tensor_zeros(EM_DIMS(10), EM_INT64);
        em_work *w = em_pg_recv(pg, t, peer, tags[k], NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        CK(t_get(t, 3) == want[k] + 3, "recv %d (tag %d): %g", k, tags[k], t_get(t, 3));
        em_tensor_release(t);
      }
    }
    /* both directions at once, 8 MiB each: both ranks send first */
    int64_t n = 2 << 20;
    em_tensor *out = iota(n, EM_FLOAT32, r), *in = em_tensor_zeros(1, &n, EM_FLOAT32);
    em_work *ws = em_pg_send(pg, out, peer, 9, NULL);
    em_work *wr = em_pg_recv(pg, in, peer, 9, NULL);
    CK(ws && wr, "send/recv");
    CK_OK(em_work_wait(wr, EM_PG_DEFAULT_TIMEOUT));
    CK_OK(em_work_wait(ws, EM_PG_DEFAULT_TIMEOUT));
    for (int64_t i = 0; i < n; i += 4099) CK(t_get(in, i) == peer + (double)(i % 100), "big recv %lld", (long long)i);
    em_work_release(ws);
    em_work_release(wr);
    /* a transposed (non-contiguous) receive buffer */
    em_tensor *base = em_tensor_zeros(EM_DIMS(3, 5), EM_FLOAT64);
    em_tensor *tr = em_tensor_transpose(base, 0, 1);
    em_tensor *src = iota(15, EM_FLOAT64, 0);
    em_tensor *srcv = em_tensor_view(src, EM_DIMS(5, 3));
    em_work *w = r == 0 ? em_pg_send(pg, srcv, 1, 4, NULL) : em_pg_recv(pg, tr, 0, 4, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    if (r == 1)
      for (int64_t i = 0; i < 15; i++) CK(t_get(tr, i) == (double)i, "transposed recv %lld: %g", (long long)i, t_get(tr, i));
    em_tensor_release(srcv);
    em_tensor_release(src);
    em_tensor_release(tr);
    em_tensor_release(base);
    /* a send that overtakes a collective: rank 0 sends, then joins the
     * allreduce; rank 1 receives after the allreduce */
    em_tensor *m = iota(1000, EM_INT32, 5);
    if (r == 0) {
      w = em_pg_send(pg, m, 1, 7, NULL);
      CK_NN(w);
      CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
      em_work_release(w);
    }
    em_tensor_release(out);
    em_tensor_release(in);
    if (r == 1) {
      allreduce_ok(pg, 3000);
      em_tensor *got = em_tensor_zeros(EM_DIMS(1000), EM_INT32);
      w = em_pg_recv(pg, got, 0, 7, NULL);
      CK_NN(w);
      CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
      em_work_release(w);
      CK(t_get(got, 42) == 5 + 42, "overtaking message: %g", t_get(got, 42));
      em_tensor_release(got);
    } else {
      allreduce_ok(pg, 3000);
    }
    em_tensor_release(m);
  } else {
    allreduce_ok(pg, 3000);
  }
  /* a ring of sends and receives */
  em_tensor *s = iota(500, EM_FLOAT16, r), *g = em_tensor_zeros(EM_DIMS(500), EM_FLOAT16);
  em_work *w1 = em_pg_send(pg, s, (r + 1) % W, 3, NULL);
  em_work *w2 = em_pg_recv(pg, g, (r + W - 1) % W, 3, NULL);
  CK(w1 && w2, "ring");
  CK_OK(em_work_wait(w2, EM_PG_DEFAULT_TIMEOUT));
  CK_OK(em_work_wait(w1, EM_PG_DEFAULT_TIMEOUT));
  CK(t_get(g, 7) == (r + W - 1) % W + 7, "ring value %g", t_get(g, 7));
  em_work_release(w1);
  em_work_release(w2);
  em_tensor_release(s);
  em_tensor_release(g);
  /* a size mismatch is an error, not corruption. It aborts the group, and
   * an abort fails every op still in flight anywhere: ranks 2 and 3 may
   * still be finishing the ring, so everyone gets here first. */
  sync_all(c, "p2p_mismatch");
  if (r < 2) {
    em_tensor *t = em_tensor_zeros(EM_DIMS(r == 0 ? 10 : 20), EM_FLOAT32);
    em_work *w = r == 0 ? em_pg_send(pg, t, 1, 0, NULL) : em_pg_recv(pg, t, 0, 0, NULL);
    CK_NN(w);
    em_status st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
    if (r == 1) {
      CK(st == EM_ERR_COMM && strstr(em_last_error(), "rank 0 sent 10 elements of float32 (40 bytes) but this rank expects 20"),
         "%s: %s", em_status_name(st), em_last_error());
    }
    em_work_release(w);
    em_tensor_release(t);
  }
}

EM_TEST(send_recv_tags_directions_and_overtaking) {
  ASSERT_RANKS_OK(2, body_p2p, NULL, NULL);
  ASSERT_RANKS_OK(4, body_p2p, NULL, NULL);
}

/* A message that arrived whole before its sender failed is still received:
 * rank 1 sends to rank 2, then fails (a size mismatch with rank 0) and
 * tells everyone; rank 2 reads both frames while busy with rank 3 and then
 * receives from rank 1 all the same; only its next exchange with rank 1
 * reports the failure. */
static void body_recv_after_abort(t_ctx *c, em_pg *pg) {
  int r = em_pg_rank(pg);
  em_tensor *t = iota(r == 0 ? 10 : 20, EM_FLOAT32, 0);
  if (r == 0) {
    em_work *w = em_pg_send(pg, t, 1, 0, NULL);
    CK_NN(w);
    (void)em_work_wait(w, EM_PG_DEFAULT_TIMEOUT); /* rank 1 may have failed first */
    em_work_release(w);
  } else if (r == 1) {
    em_work *w = em_pg_send(pg, t, 2, 3, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    w = em_pg_recv(pg, t, 0, 0, NULL);
    CK_NN(w);
    CK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT) == EM_ERR_COMM, "the mismatch went unnoticed");
    em_work_release(w);
  } else if (r == 2) {
    t_sleep_ms(300); /* both of rank 1's frames are here by now */
    em_tensor *big = iota(1 << 20, EM_FLOAT32, 0);
    em_work *w = em_pg_send(pg, big, 3, 5, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    em_tensor_release(big);
    w = em_pg_recv(pg, t, 1, 3, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    CK(t_get(t, 19) == 19, "received %g", t_get(t, 19));
    w = em_pg_recv(pg, t, 1, 4, NULL);
    CK_NN(w);
    CK(em_work_wait(w, 5000) == EM_ERR_COMM && strstr(em_last_error(), "rank 1"),
       "the next exchange with rank 1: %s", em_last_error());
    em_work_release(w);
  } else {
    em_tensor *big = em_tensor_zeros(EM_DIMS(1 << 20), EM_FLOAT32);
    em_work *w = em_pg_recv(pg, big, 2, 5, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    em_tensor_release(big);
  }
  em_tensor_release(t);
  if (r == 1) return; /* gone at once: rank 2 sees its connection close mid-send to rank 3 */
  int64_t n = 0;
  em_store_add(c->store, "recv_after_abort", 1, &n);
  for (int64_t end = t_now_ms() + 10000; n < 3 && t_now_ms() < end; t_sleep_ms(1))
    em_store_add(c->store, "recv_after_abort", 0, &n);
}

EM_TEST(a_message_that_arrived_before_the_senders_abort_is_received) {
  ASSERT_RANKS_OK(4, body_recv_after_abort, NULL, NULL);
}

/* The backends' size knobs: k/m suffixes, clamping, defaults for junk. */
EM_TEST(env_byte_sizes) {
  const char *n = "EMBER_T_BYTES";
  unsetenv(n);
  ASSERT_EQ(em__pg_env_bytes(n, 7, 0, 100), 7);
  struct { const char *v; size_t want; } cases[] = {
      {"1m", 1u << 20}, {"64k", 65536}, {"4096", 4096}, {"3", 100},
      {"abc", 777}, {"", 777}, {"99999999999m", 1u << 30},
      {"99999999999999999m", 1u << 30}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    setenv(n, cases[i].v, 1);
    size_t got = em__pg_env_bytes(n, 777, 100, 1u << 30);
    if (got != cases[i].want) EM_FAILF("'%s': %zu, expected %zu", cases[i].v, got, cases[i].want);
  }
  unsetenv(n);
}

/* ---- list forms with non-contiguous tensors ------------------------------------------------------- */

static void body_lists_noncontig(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  /* allgather into the columns of a [5, W] matrix */
  em_tensor *m = em_tensor_zeros(EM_DIMS(5, 4), EM_INT32);
  em_tensor *cols[4];
  for (int j = 0; j < W; j++) cols[j] = em_tensor_select(m, 1, j);
  em_tensor *in = iota(5, EM_INT32, 10 * r);
  em_work *w = em_pg_allgather(pg, cols, in, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  for (int j = 0; j < W; j++)
    for (int64_t i = 0; i < 5; i++) CK(t_get(cols[j], i) == 10 * j + (double)i, "column %d row %lld", j, (long long)i);
  /* reduce_scatter from columns into a strided output */
  em_tensor *base = em_tensor_zeros(EM_DIMS(10), EM_INT32);
  em_tensor *out = em_tensor_slice(base, 0, 0, 10, 2);
  w = em_pg_reduce_scatter(pg, out, cols, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  for (int64_t i = 0; i < 5; i++) {
    CK(t_get(out, i) == W * (10.0 * r + (double)i), "reduce_scatter %lld: %g", (long long)i, t_get(out, i));
    CK(t_get(base, 2 * i + 1) == 0, "gap written");
  }
  for (int j = 0; j < W; j++) em_tensor_release(cols[j]);
  em_tensor_release(m);
  em_tensor_release(in);
  em_tensor_release(out);
  em_tensor_release(base);
}

EM_TEST(list_forms_with_noncontiguous_tensors) {
  ASSERT_RANKS_OK(2, body_lists_noncontig, NULL, NULL);
  ASSERT_RANKS_OK(4, body_lists_noncontig, NULL, NULL);
}

/* ---- releasing a group from its own callback; a forked child's copy ------------------------ */

static void release_group(em_work *w, void *ctx) {
  (void)w;
  em_pg_release(ctx); /* the last reference, on the group's progress thread */
}

static void body_release_paths(t_ctx *c, em_pg *pg) {
  (void)c;
  em_pg *g = em_pg_new_group(pg, 0, NULL, NULL);
  CK_NN(g);
  em_tensor *t = iota(1 << 19, EM_FLOAT32, 0); /* queued, not inline */
  em_work *w = em_pg_allreduce(g, t, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_then(w, release_group, g));
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  em_tensor_release(t);
  /* a forked child that drops its copy of the group must not disturb the
   * parent's connections (no shutdown, no BYE, no join) */
  if (em_pg_rank(pg) == 0) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      em_pg_release(pg);
      _exit(0);
    }
    CK(pid > 0, "fork");
    CK(t_reap(pid, 5000) == 0, "child");
  }
  allreduce_ok(pg, 100000);
  allreduce_ok(pg, 10);
  t_sleep_ms(100); /* the detached thread finishes tearing g down */
}

EM_TEST(release_from_a_callback_and_in_a_forked_child) {
  ASSERT_RANKS_OK(2, body_release_paths, NULL, NULL);
}

/* ---- no leaked threads or file descriptors ------------------------------------------------------ */

#include <dirent.h>

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void body_no_leaks(t_ctx *c, em_pg *unused) {
  (void)unused;
  sync_all(c, "leak_start"); /* every rank's store client is connected */
  int fds0 = count_entries("/proc/self/fd"), th0 = count_entries("/proc/self/task");
  for (int round = 0; round < 3; round++) {
    em_pg_options o = {.backend = "tcp", .timeout_ms = 10000};
    em_pg *pg = em_pg_init_store(c->store, c->rank, c->world, &o);
    CK_NN(pg);
    em_pg *sub = em_pg_new_group(pg, 2, (int[]){0, 1}, NULL);
    CK_NN(sub);
    allreduce_ok(pg, 300000);
    if (em_pg_rank(sub) >= 0) allreduce_ok(sub, 10);
    CK(count_entries("/proc/self/task") > th0, "a progress thread runs");
    em_pg_release(sub);
    em_pg_release(pg);
    sync_all(c, round == 0 ? "leak0" : round == 1 ? "leak1" : "leak2");
  }
  int fds1 = count_entries("/proc/self/fd"), th1 = count_entries("/proc/self/task");
  /* (rank 0 hosts the store: its server's connections come and go with
   * the other processes, so its count says nothing about ours) */
  if (c->rank > 0) CK(fds1 == fds0, "file descriptors: %d before, %d after", fds0, fds1);
  CK(th1 == th0, "threads: %d before, %d after", th0, th1);
}

EM_TEST(no_leaked_threads_or_file_descriptors) {
  t_opts o = {.no_group = true};
  ASSERT_RANKS_OK(3, body_no_leaks, NULL, &o);
}

/* ---- the registry, with a fake backend ---------------------------------------------------------- */

static int fake_runs;
static em_status fake_run(void *ctx, em_coll *c) {
  (void)ctx;
  fake_runs++;
  if (c->kind == EM_COLL_ALLREDUCE) { /* doubles float32 data */
    float *p = c->out;
    for (int64_t i = 0; i < c->count; i++) p[i] *= 2;
    return EM_OK;
  }
  return em__set_error(EM_ERR_NOTIMPL, "fake backend: %s", em__coll_name(c->kind));
}
static void fake_abort(void *ctx, em_status st, const char *reason) { (void)ctx; (void)st; (void)reason; }
static void fake_destroy(void *ctx) { free(ctx); }
static const em_pg_backend_ops fake_ops = {.name = "fake", .run = fake_run, .abort = fake_abort,
                                           .destroy = fake_destroy, .inline_max_bytes = -1};
static em_status fake_create(const em_pg_backend_init *in, void **ctx, const em_pg_backend_ops **ops) {
  if (in->size != 1) return em__set_error(EM_ERR_INVALID, "fake backend: one rank only");
  *ctx = malloc(1);
  *ops = &fake_ops;
  return EM_OK;
}

static void body_registry(t_ctx *c, em_pg *unused) {
  (void)unused;
  char names[256];
  em__pg_backend_names(names, sizeof names);
  CK(strstr(names, "auto") && strstr(names, "gloo") && strstr(names, "tcp"), "names: %s", names);
  CK_ERR(em__pg_backend_register("", fake_create), EM_ERR_INVALID, "1 to 31 characters");
  CK_OK(em__pg_backend_register("fake", fake_create));
  CK(em__pg_backend_find("fake") == fake_create, "found");
  CK_NULL(em__pg_backend_find("nope"), EM_ERR_INVALID, "unknown process group backend 'nope' (known: ", "fake", "tcp");
  em_pg_options o = {.backend = "fake", .timeout_ms = 5000, .group_name = "fakes"};
  em_pg *pg = em_pg_init_store(c->store, 0, 1, &o);
  CK_NN(pg);
  CK(!strcmp(em_pg_backend_name(pg), "fake"), "%s", em_pg_backend_name(pg));
  /* the front end stages a transposed tensor for the backend and copies
   * the result back (never inline: inline_max_bytes is -1) */
  em_tensor *base = em_tensor_empty(EM_DIMS(3, 4), EM_FLOAT32);
  for (int64_t i = 0; i < 12; i++) t_set(base, i, (double)i);
  em_tensor *t = em_tensor_transpose(base, 0, 1);
  uint64_t v0 = em_tensor_version(t);
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, 5000));
  em_work_release(w);
  for (int64_t i = 0; i < 12; i++) CK(t_get(base, i) == 2.0 * (double)i, "element %lld: %g", (long long)i, t_get(base, i));
  CK(em_tensor_version(t) > v0, "version bumped");
  CK(fake_runs == 1, "runs %d", fake_runs);
  /* a backend error breaks the group, later calls fail at once */
  w = em_pg_barrier(pg, NULL);
  CK_NN(w);
  CK_ERR(em_work_wait(w, 5000), EM_ERR_NOTIMPL, "fake backend: barrier");
  em_work_release(w);
  CK_NULL(em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL), EM_ERR_NOTIMPL, "is broken by an earlier failure", "fake backend: barrier");
  em_tensor_release(t);
  em_tensor_release(base);
  em_pg_release(pg);
  CK_OK(em__pg_backend_register("fake", NULL)); /* removed */
  CK_NULL(em__pg_backend_find("fake"), EM_ERR_INVALID, "unknown process group backend 'fake'");
}

EM_TEST(backend_registry_and_front_end_staging) {
  t_opts o = {.no_group = true};
  ASSERT_RANKS_OK(1, body_registry, NULL, &o);
}

EM_TEST_MAIN()
