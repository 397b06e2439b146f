/* The "auto" ("gloo") backend over simulated hosts on this machine: the
 * test builds em_pg_backend_init itself with chosen host ids (the front
 * end derives them from hostname + network namespace), so one machine
 * holds two or three "hosts" — each host's ranks share memory (their own
 * shm segment), hosts talk tcp. Layouts: regular blocks (the composed
 * allgather / reduce_scatter paths), irregular (ranks of a host not
 * contiguous: the fallbacks), one rank per host (tcp only), one host (shm
 * only). Every collective of the shared suite, against independently
 * computed values; a rank killed on one host makes the ranks of both
 * hosts fail promptly, naming it. */
#include "tests/comm/test_shm_suite.h"

typedef struct layout {
  int world;
  const char *hosts[T_MAX_RANKS];
  const char *backend;
} layout;

static int body_suite(em_store *store, int rank, int world, void *arg) {
  layout *l = arg;
  t_be b;
  C_OK(t_be_create(&b, l->backend, store, rank, world, l->hosts, 60000));
  t_suite_full = 0; /* shm and tcp have their own full suites */
  int rc = suite_all(&b);
  t_be_destroy(&b);
  return rc;
}

static void run_layout(layout *l) {
  t_new_group_name("hier");
  ASSERT_RANKS_OK(l->world, body_suite, l, 100000);
  char first[256];
  ASSERT_EQ(t_shm_leftovers(t_group, first, sizeof first), 0);
}

EM_TEST(hier_two_hosts_regular) {
  layout l = {4, {"hostA", "hostA", "hostB", "hostB"}, "auto"};
  run_layout(&l);
}

EM_TEST(hier_two_hosts_irregular) {
  layout l = {3, {"hostA", "hostB", "hostA"}, "gloo"};
  run_layout(&l);
}

EM_TEST(hier_three_hosts_uneven) {
  layout l = {4, {"hostA", "hostB", "hostB", "hostC"}, "auto"};
  run_layout(&l);
}

EM_TEST(hier_one_rank_per_host) {
  layout l = {2, {"hostA", "hostB"}, "auto"};
  run_layout(&l);
}

EM_TEST(hier_one_host) {
  layout l = {3, {"hostA", "hostA", "hostA"}, "auto"};
  run_layout(&l);
}

/* Rank 3 (host B) dies in the middle of allreduces: everyone else — its
 * host mate and both ranks of host A, which only hear of it through the
 * leaders' tcp group — fails promptly with an error naming it. */
static int body_killed(em_store *store, int rank, int world, void *arg) {
  layout *l = arg;
  t_be b;
  C_OK(t_be_create(&b, "auto", store, rank, world, l->hosts, 60000));
  size_t n = 1u << 18;
  float *buf = calloc(n, sizeof(float));
  int64_t t0 = t_ms();
  for (long it = 0;; it++) {
    em_coll c = t_coll(EM_COLL_ALLREDUCE, EM_FLOAT32, (int64_t)(it % 2 ? n : 3));
    c.in = c.out = buf;
    em_status st = t_be_run(&b, c);
    if (st != EM_OK) {
      if (getenv("T_VERBOSE")) fprintf(stderr, "[rank %d] %s\n", rank, em_last_error());
      C_CHECK(rank != 3, "the victim failed");
      C_CHECK(strstr(em_last_error(), "rank 3"), "the error does not name rank 3: %s",
              em_last_error());
      C_CHECK(t_ms() - t0 < 4000, "noticed only after %lld ms", (long long)(t_ms() - t0));
      break;
    }
    C_CHECK(t_ms() - t0 < 10000, "no error after %ld allreduces", it);
  }
  free(buf);
  t_be_destroy(&b);
  return 0;
}

EM_TEST(hier_killed_rank_is_named_on_every_host) {
  layout l = {4, {"hostA", "hostA", "hostB", "hostB"}, "auto"};
  t_new_group_name("hierkill");
  t_exits_expected = 3;
  int codes[T_MAX_RANKS] = {0};
  bool ok = t_run_ranks_kill(4, body_killed, &l, 30000, codes, 3, 1500);
  t_exits_expected = 0;
  ASSERT_TRUE(ok);
  for (int r = 0; r < 3; r++)
    if (codes[r]) EM_FAILF("rank %d exited with %d", r, codes[r]);
  ASSERT_EQ(codes[3], 128 + SIGKILL);
  char first[256];
  ASSERT_EQ(t_shm_leftovers(t_group, first, sizeof first), 0);
}

EM_TEST_MAIN()
