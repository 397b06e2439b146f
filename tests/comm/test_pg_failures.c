/* Failure is an error, never a hang: ranks killed (SIGKILL) before and at
 * several points inside large collectives, a rank that skips a collective,
 * wait() timeouts, a rank that leaves early, mismatched collectives with
 * and without EMBER_DISTRIBUTED_DEBUG=DETAIL, and the monitored barrier.
 * Every surviving rank must fail within a short time with an error naming
 * the culprit, and later calls on the broken group fail at once. */
#include "tests/comm/test_pg_util.h"

typedef struct kill_arg {
  int victim;
  int64_t n;       /* elements of the collective */
  int kind;        /* 0 allreduce, 1 broadcast, 2 allgather */
  bool before;     /* the victim dies before calling */
  int64_t die_after; /* else: after writing this many bytes in it (-1: after it) */
} kill_arg;

static void fill_seq(em_tensor *t, double base) {
  for (int64_t i = 0; i < t->numel; i++) t_set(t, i, base + (double)(i % 1000));
}

static void body_kill(t_ctx *c, em_pg *pg) {
  kill_arg *a = c->arg;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  /* one good collective first: the group works */
  em_tensor *one = em_tensor_ones(EM_DIMS(4), EM_FLOAT32);
  em_work *w = em_pg_allreduce(pg, one, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  em_tensor_release(one);
  if (r == a->victim && a->before) raise(SIGKILL);
  if (r == a->victim && a->die_after >= 0) em__pg_tcp_test_die_after(a->die_after);
  int64_t n = a->n, wn = n * W;
  em_tensor *t = em_tensor_empty(1, &n, EM_FLOAT32);
  em_tensor *out = em_tensor_empty(1, &wn, EM_FLOAT32);
  CK(t && out, "alloc");
  fill_seq(t, r);
  int64_t t0 = t_now_ms();
  if (a->kind == 0) w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
  else if (a->kind == 1) w = em_pg_broadcast(pg, t, (a->victim + 1) % W, NULL);
  else w = em_pg_allgather_into_tensor(pg, out, t, NULL);
  CK_NN(w);
  em_status st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
  int64_t took = t_now_ms() - t0;
  char victim[32];
  snprintf(victim, sizeof victim, "rank %d", a->victim);
  if (r == a->victim) {
    /* the victim was told to die after some bytes: a broadcast leaf that
     * sends nothing completes and dies at its next send */
    raise(SIGKILL);
  }
  if (st == EM_OK) {
    /* the victim may only have died after finishing its share; the next
     * collective must fail then */
    em_work_release(w);
    t0 = t_now_ms();
    w = em_pg_barrier(pg, NULL);
    if (w) {
      st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
    } else {
      st = em_last_status();
    }
    took = t_now_ms() - t0;
  }
  CK(st == EM_ERR_COMM, "expected a communication error, got %s: %s", em_status_name(st),
     em_last_error());
  CK(strstr(em_last_error(), victim) != NULL, "the error does not name %s: %s", victim,
     em_last_error());
  CK(took < 5000, "detection took %lld ms (timeout is 20 s)", (long long)took);
  em_work_release(w);
  /* the group is broken now: every later call fails at once */
  em_tensor *x = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  CK_NULL(em_pg_allreduce(pg, x, EM_REDUCE_SUM, NULL), EM_ERR_COMM, "broken", victim);
  em_tensor_release(x);
  em_tensor_release(t);
  em_tensor_release(out);
}

static void run_kill(int W, int victim, int kind, int64_t n, int64_t die_after, bool before) {
  kill_arg a = {.victim = victim, .n = n, .kind = kind, .before = before, .die_after = die_after};
  t_opts o = {.timeout_ms = 20000, .reap_ms = 30000, .expect_dead = 1};
  int codes[8] = {0};
  t_spawn(W, body_kill, &a, &o, codes);
  for (int r = 0; r < W; r++) {
    if (r == victim) {
      if (codes[r] != 128 + SIGKILL)
        EM_FAILF("world %d kind %d die_after %lld: the victim exited with %d, not SIGKILL", W,
                 kind, (long long)die_after, codes[r]);
    } else if (codes[r] != 0) {
      EM_FAILF("world %d kind %d die_after %lld: rank %d exited with %d", W, kind,
               (long long)die_after, r, codes[r]);
    }
  }
}

EM_TEST(rank_killed_before_allreduce) {
  run_kill(2, 1, 0, 1 << 20, -1, true);
  run_kill(3, 2, 0, 1 << 20, -1, true);
  run_kill(4, 0, 0, 1 << 20, -1, true);
}

/* 8 MiB float32 allreduce (the ring: 256 KiB slices). A rank writes
 * 2 (W-1)/W * 8 MiB: die at its first frame, inside the first slice, in
 * the reduce-scatter half and in the allgather half. */
EM_TEST(rank_killed_mid_allreduce) {
  const int64_t points[] = {1, 100000, 3000000, 7000000};
  for (int p = 0; p < 4; p++) {
    run_kill(2, 1, 0, 2 << 20, points[p], false);
    run_kill(3, 1, 0, 2 << 20, points[p], false);
    run_kill(4, 2, 0, 2 << 20, points[p], false);
    if (em_test_failed_now) return;
  }
}

EM_TEST(rank_killed_mid_broadcast_and_allgather) {
  run_kill(3, 0, 1, 2 << 20, 2000000, false); /* the victim forwards */
  run_kill(4, 1, 2, 1 << 20, 1500000, false);
}

/* ---- a rank that skips a collective ------------------------------------------------ */

static void body_skip(t_ctx *c, em_pg *pg) {
  int r = em_pg_rank(pg);
  if (r == 1) { /* skips; waits until the others have seen their timeout */
    const char *k = "timed_out";
    CK_OK(em_store_wait(c->store, &k, 1, 15000));
    return;
  }
  int64_t n = *(int64_t *)c->arg;
  em_tensor *t = em_tensor_ones(1, &n, EM_FLOAT32);
  int64_t t0 = t_now_ms();
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_ERR(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT), EM_ERR_TIMEOUT, "allreduce #1");
  int64_t took = t_now_ms() - t0;
  CK(took >= 400 && took < 3000, "timed out after %lld ms (group timeout 500 ms)", (long long)took);
  CK(em_work_is_completed(w), "a failed work is completed");
  CK_ERR(em_work_status(w), EM_ERR_TIMEOUT, "allreduce #1");
  em_work_release(w);
  CK_NULL(em_pg_barrier(pg, NULL), EM_ERR_TIMEOUT, "broken by an earlier failure");
  em_tensor_release(t);
  int64_t v;
  em_store_add(c->store, "timed_out_n", 1, &v);
  if (v == em_pg_size(pg) - 1) em_store_set(c->store, "timed_out", "1", 1);
}

EM_TEST(rank_skipping_a_collective_times_the_others_out) {
  int64_t small = 16, large = 1 << 20; /* inline and queued */
  t_opts o = {.timeout_ms = 500};
  ASSERT_RANKS_OK(3, body_skip, &small, &o);
  ASSERT_RANKS_OK(3, body_skip, &large, &o);
  ASSERT_RANKS_OK(2, body_skip, &large, &o);
}

/* wait(timeout) shorter than the collective's: EM_ERR_TIMEOUT naming the
 * collective and its number; the group is aborted. */
static void body_wait_timeout(t_ctx *c, em_pg *pg) {
  int r = em_pg_rank(pg);
  int64_t n = 1 << 20;
  em_tensor *t = em_tensor_ones(1, &n, EM_FLOAT32);
  /* two good ones first */
  for (int k = 0; k < 2; k++) {
    em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
  }
  if (r == 0) {
    int64_t t0 = t_now_ms();
    em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
    CK_NN(w);
    CK_ERR(em_work_wait(w, 300), EM_ERR_TIMEOUT, "allreduce #3", "timed out after 300 ms");
    int64_t took = t_now_ms() - t0;
    CK(took >= 290 && took < 2500, "wait returned after %lld ms", (long long)took);
    em_work_release(w);
    CK_NULL(em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL), EM_ERR_TIMEOUT, "broken",
            "allreduce #3 timed out");
    em_store_set(c->store, "go", "1", 1);
  } else {
    const char *k = "go";
    CK_OK(em_store_wait(c->store, &k, 1, 15000));
    /* rank 0 gave up and told us why */
    em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
    if (w) {
      CK_ERR(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT), EM_ERR_TIMEOUT, "rank 0 aborted",
             "allreduce #3 timed out");
      em_work_release(w);
    }
  }
  em_tensor_release(t);
}

EM_TEST(wait_timeout_aborts_the_group) {
  t_opts o = {.timeout_ms = 20000};
  ASSERT_RANKS_OK(2, body_wait_timeout, NULL, &o);
}

/* ---- a rank that leaves early --------------------------------------------------------- */

static void body_leave(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg);
  em_tensor *t = em_tensor_ones(EM_DIMS(8), EM_FLOAT32);
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  em_tensor_release(t);
  if (r == 1) return; /* destroys its group (clean BYE) and goes */
  t_sleep_ms(100);
  int64_t t0 = t_now_ms();
  w = em_pg_barrier(pg, NULL);
  CK_NN(w);
  CK_ERR(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT), EM_ERR_COMM, "rank 1 left the group");
  CK(t_now_ms() - t0 < 3000, "took %lld ms", (long long)(t_now_ms() - t0));
  em_work_release(w);
}

EM_TEST(rank_leaving_early_is_an_error_naming_it) {
  t_opts o = {.timeout_ms = 20000};
  ASSERT_RANKS_OK(2, body_leave, NULL, &o);
  ASSERT_RANKS_OK(3, body_leave, NULL, &o);
}

/* ---- mismatched collectives ------------------------------------------------------------- */

typedef struct mm_arg {
  int which;
  const char *expect[3];
} mm_arg;

/* Two matching collectives, then rank 1 calls something else as #3. */
static void body_mismatch(t_ctx *c, em_pg *pg) {
  mm_arg *a = c->arg;
  int r = em_pg_rank(pg);
  em_tensor *t = em_tensor_ones(EM_DIMS(4, 8), EM_FLOAT32);
  for (int k = 0; k < 2; k++) {
    em_work *w = k ? em_pg_barrier(pg, NULL) : em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
  }
  /* everyone is done with #2 before anyone fails #3 (and closes) */
  CK_OK(em_pg_monitored_barrier(pg, 10000, true));
  em_tensor *x = NULL;
  em_work *w = NULL;
  bool other = r == 1;
  switch (a->which) {
    case 0: /* op */
      w = em_pg_allreduce(pg, t, other ? EM_REDUCE_MAX : EM_REDUCE_SUM, NULL);
      break;
    case 1: /* dtype */
      x = em_tensor_ones(EM_DIMS(4, 8), other ? EM_FLOAT64 : EM_FLOAT32);
      w = em_pg_allreduce(pg, x, EM_REDUCE_SUM, NULL);
      break;
    case 2: /* shape, same element count */
      x = other ? em_tensor_ones(EM_DIMS(8, 4), EM_FLOAT32) : em_tensor_ones(EM_DIMS(4, 8), EM_FLOAT32);
      w = em_pg_allreduce(pg, x, EM_REDUCE_SUM, NULL);
      break;
    case 3: /* kind */
      w = other ? em_pg_broadcast(pg, t, 0, NULL) : em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
      break;
    case 4: /* size, no DETAIL */
    case 5: { /* size, large (the ring) */
      int64_t n = a->which == 4 ? (other ? 200 : 100) : (other ? 3 << 20 : 2 << 20);
      x = em_tensor_ones(1, &n, EM_FLOAT32);
      w = em_pg_allreduce(pg, x, EM_REDUCE_SUM, NULL);
      break;
    }
    case 6: /* dtype of the same width, no DETAIL */
      x = em_tensor_ones(EM_DIMS(32), other ? EM_INT32 : EM_FLOAT32);
      w = em_pg_allreduce(pg, x, EM_REDUCE_SUM, NULL);
      break;
    case 7: /* kind, no DETAIL */
      w = other ? em_pg_broadcast(pg, t, 0, NULL) : em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
      break;
  }
  CK_NN(w);
  em_status st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
  CK(st == EM_ERR_COMM, "expected a mismatch error, got %s: %s", em_status_name(st), em_last_error());
  for (int k = 0; k < 3 && a->expect[k]; k++)
    CK(strstr(em_last_error(), a->expect[k]), "message lacks \"%s\": %s", a->expect[k],
       em_last_error());
  em_work_release(w);
  em_tensor_release(x);
  em_tensor_release(t);
}

EM_TEST(detail_reports_mismatches_with_both_sides) {
  setenv("EMBER_DISTRIBUTED_DEBUG", "DETAIL", 1);
  t_opts o = {.timeout_ms = 5000};
  mm_arg cases[] = {
      {0, {"rank 0 called allreduce(float32, [4, 8], sum) but rank 1 called allreduce(float32, "
           "[4, 8], max) as collective #3"}},
      {1, {"rank 0 called allreduce(float32, [4, 8], sum) but rank 1 called allreduce(float64, "
           "[4, 8], sum) as collective #3"}},
      {2, {"rank 0 called allreduce(float32, [4, 8], sum) but rank 1 called allreduce(float32, "
           "[8, 4], sum) as collective #3"}},
      {3, {"rank 0 called allreduce(float32, [4, 8], sum) but rank 1 called broadcast(float32, "
           "[4, 8], root 0) as collective #3"}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int codes[4];
    int bad = t_spawn(2, body_mismatch, &cases[k], &o, codes);
    if (bad) {
      unsetenv("EMBER_DISTRIBUTED_DEBUG");
      EM_FAILF("DETAIL case %zu: %d ranks failed", k, bad);
      return;
    }
  }
  unsetenv("EMBER_DISTRIBUTED_DEBUG");
}

EM_TEST(mismatches_without_detail_are_errors_not_corruption) {
  t_opts o = {.timeout_ms = 5000};
  mm_arg cases[] = {
      {4, {"allreduce(float32, 200 elements, sum)", "allreduce(float32, 100 elements, sum)",
           "collective #3"}},
      {5, {"elements, sum)", "collective #3"}},
      {6, {"allreduce(int32, 32 elements, sum)", "allreduce(float32, 32 elements, sum)"}},
      {7, {"broadcast(float32, 32 elements, root 0)", "allreduce(float32, 32 elements, sum)"}},
      {0, {"allreduce(float32, 32 elements, max)", "allreduce(float32, 32 elements, sum)"}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int codes[4];
    int bad = t_spawn(2, body_mismatch, &cases[k], &o, codes);
    if (bad) {
      EM_FAILF("case %zu: %d ranks failed", k, bad);
      return;
    }
  }
  /* three ranks, sizes differ on one: everyone fails (directly or told) */
  int codes[4];
  if (t_spawn(3, body_mismatch, &cases[0], &o, codes)) EM_FAILF("3 ranks: a rank failed");
}

/* ---- monitored barrier ---------------------------------------------------------------------- */

typedef struct mb_arg {
  int absent[4];
  int nabsent;
  bool wait_all;
  const char *expect;
} mb_arg;

static void body_mb(t_ctx *c, em_pg *pg) {
  mb_arg *a = c->arg;
  int r = em_pg_rank(pg);
  CK_OK(em_pg_monitored_barrier(pg, 2000, true)); /* everyone present */
  for (int k = 0; k < a->nabsent; k++)
    if (a->absent[k] == r) {
      const char *key = "mb_over";
      CK_OK(em_store_wait(c->store, &key, 1, 15000));
      return;
    }
  int64_t t0 = t_now_ms();
  CK_ERR(em_pg_monitored_barrier(pg, 300, a->wait_all), EM_ERR_TIMEOUT, a->expect);
  CK(t_now_ms() - t0 < 4000, "took %lld ms", (long long)(t_now_ms() - t0));
  int64_t v;
  em_store_add(c->store, "mb_n", 1, &v);
  if (v == em_pg_size(pg) - a->nabsent) em_store_set(c->store, "mb_over", "1", 1);
}

EM_TEST(monitored_barrier_names_missing_ranks) {
  mb_arg one = {{2}, 1, false, "rank 2 failed to pass monitored_barrier within 300 ms"};
  ASSERT_RANKS_OK(3, body_mb, &one, NULL);
  mb_arg two = {{1, 3}, 2, true, "ranks 1, 3 failed to pass monitored_barrier"};
  ASSERT_RANKS_OK(4, body_mb, &two, NULL);
  mb_arg first = {{1, 3}, 2, false, "rank 1 failed to pass monitored_barrier"};
  ASSERT_RANKS_OK(4, body_mb, &first, NULL);
}

EM_TEST_MAIN()
