/* The shm backend, driven directly (em_pg_backend_ops) by 2, 3 and 4
 * forked ranks on this host: every collective kind x dtype x reduce op,
 * sizes 0 .. several MiB (small path, pipelined large path), every root,
 * point to point with out-of-order tags, against values computed in the
 * test. Also: the segment is gone from /dev/shm once the group is up and
 * after it is destroyed. */
#include "tests/comm/test_shm_suite.h"

static int body_suite(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 20000));
  /* the name is unlinked as soon as every rank has mapped it */
  char first[256];
  C_CHECK(t_shm_leftovers(t_group, first, sizeof first) == 0,
          "/dev/shm/%s still exists after setup", first);
  int rc = suite_all(&b);
  t_be_destroy(&b);
  return rc;
}

static void run_world(int world) {
  t_new_group_name("coll");
  ASSERT_RANKS_OK(world, body_suite, NULL, 60000);
  char first[256];
  ASSERT_EQ(t_shm_leftovers(t_group, first, sizeof first), 0);
}

EM_TEST(shm_collectives_world2) { run_world(2); }
EM_TEST(shm_collectives_world3) { run_world(3); }
EM_TEST(shm_collectives_world4) { run_world(4); }

/* A world of one needs no segment; every collective is a local copy. */
static int body_one(em_store *store, int rank, int world, void *arg) {
  (void)arg;
  t_be b;
  C_OK(t_be_create(&b, "shm", store, rank, world, NULL, 5000));
  C_RUN(s_allreduce(&b, EM_FLOAT32, EM_REDUCE_AVG, 100, false));
  C_RUN(s_allreduce(&b, EM_INT64, EM_REDUCE_SUM, 100, true));
  C_RUN(s_broadcast(&b, EM_INT16, 33, 0));
  C_RUN(s_reduce(&b, EM_FLOAT64, EM_REDUCE_MAX, 9, 0));
  C_RUN(s_allgather(&b, EM_UINT8, 10, -1, false));
  C_RUN(s_allgather(&b, EM_UINT8, 10, 0, false));
  C_RUN(s_scatter(&b, EM_FLOAT32, 10, 0));
  C_RUN(s_reduce_scatter(&b, EM_INT32, EM_REDUCE_PROD, 10));
  C_RUN(s_all_to_all(&b, EM_FLOAT32, 10));
  C_RUN(s_barrier(&b));
  t_be_destroy(&b);
  return 0;
}

EM_TEST(shm_world1) {
  t_new_group_name("one");
  ASSERT_RANKS_OK(1, body_one, NULL, 20000);
}

EM_TEST_MAIN()
