/* The shm backend when things go wrong: a rank SIGKILLed in the middle of
 * collectives (small, large, broadcast from it, a receive from it,
 * all_to_all) makes every other rank fail promptly with an error naming
 * it; SIGKILL of every rank leaves nothing in /dev/shm; a too small
 * /dev/shm is a clear error on every rank; deadlines, abort(), mismatched
 * collectives and message sizes, a rank that leaves, ranks on different
 * hosts. */
#include <pthread.h>

#include "tests/comm/test_shm_suite.h"

void em__pg_shm_set_test_free_bytes(int64_t n);

#define VICTIM 2

enum { M_SMALL, M_LARGE, M_BCAST_ROOT, M_RECV, M_ALLTOALL, M_COUNT };
static const char *mode_names[] = {"small allreduce", "large allreduce", "broadcast from it",
                                   "recv from it", "all_to_all"};

static int one_op(t_be *b, int mode, char *buf, size_t n) {
  em_coll c;
  int64_t sc[T_MAX_RANKS], rc[T_MAX_RANKS];
  switch (mode) {
    case M_SMALL:
    case M_LARGE:
      c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, mode == M_SMALL ? 2 : (int64_t)n);
      c.op = EM_REDUCE_SUM;
      c.in = c.out = buf;
      break;
    case M_BCAST_ROOT:
      c = t_coll(EM_COLL_BROADCAST, EM_FLOAT32, (int64_t)n / 2);
      c.root = VICTIM;
      c.in = c.out = buf;
      break;
    case M_RECV:
      c = t_coll(EM_COLL_RECV, EM_FLOAT32, 1000);
      c.root = VICTIM;
      c.tag = 1;
      c.out = buf;
      break;
    default:
      for (int q = 0; q < b->size; q++) sc[q] = rc[q] = (int64_t)n / 8;
      c = t_coll(EM_COLL_ALL_TO_ALL, EM_FLOAT32, 0);
      c.send_counts = sc;
      c.recv_counts = rc;
      c.in = buf;
      c.out = buf + n * 2;
      break;
  }
  return t_be_run(b, c);
}

static int body_killed(em_store *store, int rank, int world, void *arg) {
  int mode = *(int *)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 60000));
  size_t n = 1u << 20; /* 4 MiB of float32 */
  char *buf = calloc(n * 4, sizeof(float));
  C_CHECK(buf, "out of memory");
  if (rank == VICTIM && mode == M_RECV) {
    t_sleep(100000); /* never sends; SIGKILLed */
  }
  int64_t t0 = t_ms();
  for (long it = 0;; it++) {
    em_status st = one_op(&b, mode, buf, n);
    if (st != EM_OK) {
      int64_t t = t_ms() - t0;
      C_CHECK(rank != VICTIM, "the victim failed: %s", em_last_error());
      if (getenv("T_VERBOSE")) fprintf(stderr, "[rank %d, %lld ms] %s\n", rank, (long long)t, em_last_error());
      C_CHECK(st == EM_ERR_COMM, "%s: expected a comm error, got %s: %s", mode_names[mode],
              em_status_name(st), em_last_error());
      C_CHECK(strstr(em_last_error(), "rank 2 (pid") && strstr(em_last_error(), "died"),
              "%s: the error does not name the dead rank: %s", mode_names[mode], em_last_error());
      C_CHECK(t < 3000, "%s: noticed the death only after %lld ms", mode_names[mode],
              (long long)t);
      /* the group stays broken */
      C_CHECK(one_op(&b, M_SMALL, buf, n) == EM_ERR_COMM, "a broken group ran a collective");
      break;
    }
    C_CHECK(t_ms() - t0 < 10000, "%s: no error after %ld collectives", mode_names[mode], it);
  }
  free(buf);
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_killed_rank_is_named) {
  for (int mode = 0; mode < M_COUNT; mode++) {
    t_new_group_name("kill");
    t_exits_expected = 2;
    int codes[T_MAX_RANKS] = {0};
    bool ok = t_run_ranks_kill(3, body_killed, &mode, 30000, codes, VICTIM, 1500);
    t_exits_expected = 0;
    ASSERT_TRUE(ok);
    if (codes[0] || codes[1]) EM_FAILF("%s: survivors exited %d, %d", mode_names[mode], codes[0], codes[1]);
    ASSERT_EQ(codes[VICTIM], 128 + SIGKILL);
    char first[256];
    if (t_shm_leftovers(t_group, first, sizeof first)) EM_FAILF("left /dev/shm/%s", first);
    if (em_test_failed_now) return;
  }
}

/* SIGKILL of every rank mid-collective: the segment's name was unlinked at
 * setup, so nothing stays in /dev/shm. */
static int body_forever(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 60000));
  size_t n = 1u << 20;
  float *buf = calloc(n, sizeof(float));
  for (;;) {
    em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, (int64_t)n);
    c.in = c.out = buf;
    if (t_be_run(&b, c) != EM_OK) break;
  }
  free(buf);
  t_be_destroy(&b);
  return 1;
}

EM_TEST(shm_sigkill_everyone_leaves_nothing) {
  t_new_group_name("killall");
  int codes[T_MAX_RANKS] = {0};
  bool ok = t_run_ranks_kill(3, body_forever, NULL, 30000, codes, T_KILL_ALL, 1500);
  ASSERT_TRUE(ok);
  for (int r = 0; r < 3; r++) ASSERT_EQ(codes[r], 128 + SIGKILL);
  char first[256];
  if (t_shm_leftovers(t_group, first, sizeof first)) EM_FAILF("left /dev/shm/%s", first);
}

/* Every rank killed during setup, before the last one mapped the segment:
 * the name is still there, and the next group's rank 0 sweeps it away (its
 * setup never finished and its creator is dead). */
static int body_stuck_setup(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  if (rank == 1) t_sleep(100000); /* never arrives */
  t_be b;
  em_status st = t_be_create(&b, "shm", store, rank, world, NULL, 30000);
  if (st == EM_OK) t_be_destroy(&b);
  return 1;
}

static int body_simple(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 30000));
  C_RUN(s_allreduce(&b, EM_FLOAT32, EM_REDUCE_SUM, 100, true));
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_stale_setup_segment_is_swept) {
  t_new_group_name("stuck");
  char old[64], first[256];
  snprintf(old, sizeof old, "%s", t_group);
  int codes[T_MAX_RANKS] = {0};
  ASSERT_TRUE(t_run_ranks_kill(2, body_stuck_setup, NULL, 30000, codes, T_KILL_ALL, 2000));
  ASSERT_EQ(t_shm_leftovers(old, first, sizeof first), 1);
  t_new_group_name("sweeper");
  ASSERT_RANKS_OK(2, body_simple, NULL, 30000);
  if (t_shm_leftovers(old, first, sizeof first)) EM_FAILF("/dev/shm/%s was not swept", first);
}

/* /dev/shm too small: rank 0 refuses with the figures, the others learn it
 * through the store at once (not at their timeout). */
static int body_noshm(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  if (rank == 0) em__pg_shm_set_test_free_bytes(1 << 20);
  int64_t t0 = t_ms();
  em_clear_error();
  em_status st = t_be_create(&b, "shm", store, rank, world, NULL, 30000);
  if (rank == 0) {
    C_CHECK(st == EM_ERR_NOMEM && strstr(em_last_error(), "/dev/shm has 1.0 MiB free") &&
                strstr(em_last_error(), "group of 3 ranks needs"),
            "rank 0: %s: %s", em_status_name(st), em_last_error());
  } else {
    C_CHECK(st == EM_ERR_COMM && strstr(em_last_error(), "setup failed on rank 0") &&
                strstr(em_last_error(), "/dev/shm has 1.0 MiB free"),
            "%s: %s", em_status_name(st), em_last_error());
  }
  C_CHECK(t_ms() - t0 < 5000, "took %lld ms (the timeout is 30 s)", (long long)(t_ms() - t0));
  return 0;
}

EM_TEST(shm_dev_shm_too_small) {
  t_new_group_name("noshm");
  ASSERT_RANKS_OK(3, body_noshm, NULL, 30000);
  char first[256];
  ASSERT_EQ(t_shm_leftovers(t_group, first, sizeof first), 0);
}

/* A deadline passes while a peer is late: EM_ERR_TIMEOUT naming it; the
 * late peer then finds the group broken with the cause. */
static int body_timeout(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 30000));
  float v[4] = {1, 2, 3, 4};
  float big[20000] = {0};
  em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 4);
  c.in = c.out = v;
  C_OK(t_be_run(&b, c));
  if (rank == 0) {
    int64_t t0 = t_ms();
    c.deadline_ms = em__now_ms() + 200;
    c.in = c.out = big;
    c.count = 20000;
    C_ERR(t_be_run(&b, c), EM_ERR_TIMEOUT, "timed out waiting for rank 1");
    int64_t t = t_ms() - t0;
    C_CHECK(t >= 190 && t < 1500, "timed out after %lld ms", (long long)t);
    C_CHECK(strstr(em_last_error(), "allreduce(float32, 20000 elements"), "%s", em_last_error());
    em_store_set(store, "t/timed_out", "1", 1);
  } else {
    const char *k = "t/timed_out";
    C_OK(em_store_wait(store, &k, 1, 10000));
    c.in = c.out = big;
    c.count = 20000;
    C_ERR(t_be_run(&b, c), EM_ERR_COMM, "rank 0 broke the group");
    C_CHECK(strstr(em_last_error(), "timed out"), "%s", em_last_error());
  }
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_timeout_names_the_late_rank) {
  t_new_group_name("timeout");
  ASSERT_RANKS_OK(2, body_timeout, NULL, 30000);
}

/* abort() from another thread makes a waiting run() return. */
typedef struct abort_ctx {
  t_be *b;
  em_status st;
  int64_t took;
} abort_ctx;

static void *abort_runner(void *p) {
  abort_ctx *a = p;
  float v[2] = {0};
  em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 2);
  c.in = c.out = v;
  int64_t t0 = t_ms();
  a->st = t_be_run(a->b, c);
  a->took = t_ms() - t0;
  return NULL;
}

static int body_abort(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 30000));
  if (rank == 0) {
    abort_ctx a = {.b = &b};
    pthread_t th;
    C_CHECK(pthread_create(&th, NULL, abort_runner, &a) == 0, "pthread_create");
    t_sleep(150);
    b.ops->abort(b.ctx, EM_ERR_TIMEOUT, "the test gave up");
    pthread_join(th, NULL);
    C_CHECK(a.st == EM_ERR_COMM && strstr(em_last_error(), ""), "aborted run returned %s",
            em_status_name(a.st));
    C_CHECK(a.took < 1000, "abort took %lld ms to be noticed", (long long)a.took);
    em_store_set(store, "t/aborted", "1", 1);
  } else {
    const char *k = "t/aborted";
    C_OK(em_store_wait(store, &k, 1, 10000));
    float v[2] = {0};
    em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 2);
    c.in = c.out = v;
    C_ERR(t_be_run(&b, c), EM_ERR_COMM, "rank 0 aborted the group: the test gave up");
  }
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_abort_wakes_the_waiter) {
  t_new_group_name("abort");
  ASSERT_RANKS_OK(2, body_abort, NULL, 30000);
}

/* Ranks that call different collectives or sizes fail with both calls in
 * the message instead of exchanging garbage. */
static int body_mismatch(em_store *store, int rank, int world, void *arg) {
  int which = *(int *)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 30000));
  static float buf[400000];
  em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 10);
  c.in = c.out = buf;
  const char *want = "collective mismatch";
  if (which == 0) { /* small sizes differ */
    c.count = rank == 0 ? 10 : 12;
  } else if (which == 1) { /* large sizes differ */
    c.count = rank == 0 ? 300000 : 300001;
  } else if (which == 2) { /* kinds differ */
    if (rank == 1) c.kind = EM_COLL_BROADCAST;
  } else if (which == 3) { /* ops differ */
    c.op = rank == 0 ? EM_REDUCE_SUM : EM_REDUCE_MAX;
  } else { /* p2p sizes differ */
    c = t_coll(rank == 0 ? EM_COLL_SEND : EM_COLL_RECV, EM_FLOAT32, rank == 0 ? 10 : 12);
    c.root = 1 - rank;
    c.tag = 3;
    c.in = c.out = buf;
    want = rank == 0 ? NULL : "rank 0 sent 40 bytes with tag 3 but the receive expects 48 bytes";
  }
  em_clear_error();
  em_status st = t_be_run(&b, c);
  if (want) {
    C_CHECK(st == EM_ERR_COMM && strstr(em_last_error(), want), "case %d: %s: %s", which,
            em_status_name(st), em_last_error());
    if (which == 0)
      C_CHECK(strstr(em_last_error(), "allreduce(float32, 10 elements, sum)") &&
                  strstr(em_last_error(), "allreduce(float32, 12 elements, sum)"),
              "%s", em_last_error());
  }
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_mismatch_is_an_error) {
  for (int which = 0; which < 5; which++) {
    t_new_group_name("mismatch");
    ASSERT_RANKS_OK(2, body_mismatch, &which, 30000);
  }
}

/* A rank that destroys its group while a peer waits for it. */
static int body_leave(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 30000));
  if (rank == 1) {
    t_be_destroy(&b);
    return 0;
  }
  float v[2] = {0};
  em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 2);
  c.in = c.out = v;
  C_ERR(t_be_run(&b, c), EM_ERR_COMM, "rank 1 left the group");
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_peer_left) {
  t_new_group_name("leave");
  ASSERT_RANKS_OK(2, body_leave, NULL, 30000);
}

/* Misuse the front end would normally catch, still errors here. */
static int body_misuse(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  const char *hosts[] = {"hostA", "hostB"};
  C_ERR(t_be_create(&b, "shm", store, rank, world, hosts, 5000), EM_ERR_INVALID,
        "different hosts");
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 5000));
  float v[2] = {0};
  em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 2);
  c.in = c.out = v;
  c.op = EM_REDUCE_BAND;
  C_ERR(t_be_run(&b, c), EM_ERR_DTYPE, "band");
  c = t_coll(EM_COLL_SEND, EM_FLOAT32, 2);
  c.root = rank;
  c.in = v;
  C_ERR(t_be_run(&b, c), EM_ERR_INVALID, "with itself");
  c.root = 5;
  C_ERR(t_be_run(&b, c), EM_ERR_INVALID, "rank 5 out of range");
  /* none of that broke the group */
  c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, 2);
  c.in = c.out = v;
  C_OK(t_be_run(&b, c));
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_misuse) {
  t_new_group_name("misuse");
  ASSERT_RANKS_OK(2, body_misuse, NULL, 30000);
}

EM_TEST_MAIN()
