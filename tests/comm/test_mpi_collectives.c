/* The mpi backend under mpirun. The test binary launches itself with
 * `mpirun --allow-run-as-root --oversubscribe -np 2|3 <self> --mpi-child`
 * (skipped with 77 when mpirun or the mpi backend is missing); each MPI
 * process then runs the shared collective suite on the backend directly
 * (store-less, ranks from OMPI_COMM_WORLD_RANK / SIZE), a sub-group made
 * with MPI_Comm_create_group, and the public API (em_pg_init_env with
 * backend "mpi", a new_group) against independently computed values. */
#include <limits.h>

#include "tests/comm/test_mpirun.h"
#include "tests/free_port.h"
#include "tests/comm/test_shm_suite.h"

/* ---- inside mpirun ------------------------------------------------------------------- */

static int child_backend(int rank, int world) {
  t_be b;
  C_OK(t_be_create(&b, "mpi", NULL, rank, world, NULL, 60000));
  t_suite_full = 0; /* MPI's collectives are not ours to test exhaustively */
  C_RUN(suite_all(&b));
  t_be_destroy(&b);

  /* a sub-group of the first and the last rank */
  int members[2] = {0, world - 1};
  int idx = rank == 0 ? 0 : (rank == world - 1 ? 1 : -1);
  if (idx >= 0) {
    em_pg_backend_init in = {.rank = idx, .size = 2, .global_ranks = members, .timeout_ms = 60000,
                             .group_name = "sub"};
    t_be s = {.rank = idx, .size = 2, .timeout_ms = 60000};
    em_pg_backend_create_fn fn = em__pg_backend_find("mpi");
    C_CHECK(fn, "no mpi backend");
    C_OK(fn(&in, &s.ctx, &s.ops));
    C_RUN(s_allreduce(&s, EM_FLOAT32, EM_REDUCE_SUM, 1000, true));
    C_RUN(s_broadcast(&s, EM_INT64, 77, 1));
    C_RUN(s_allgather(&s, EM_FLOAT16, 33, -1, false));
    t_be_destroy(&s);
  }
  return 0;
}

/* with_store: MASTER_ADDR / MASTER_PORT set (rank 0 hosts a store),
 * else store-less (ranks from OMPI_COMM_WORLD_*). */
static int child_public(int rank, int world, bool with_store) {
  em_pg_options o = {.backend = "mpi", .timeout_ms = 60000,
                     .group_name = with_store ? "with_store" : "storeless"};
  const char *port = getenv("EMBER_T_MPI_PORT");
  if (with_store) {
    C_CHECK(port, "EMBER_T_MPI_PORT is not set");
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", port, 1);
  } else {
    unsetenv("MASTER_ADDR");
    unsetenv("MASTER_PORT");
  }
  em_pg *pg = em_pg_init_env(&o);
  C_CHECK(pg, "init_env: %s", em_last_error());
  C_CHECK(em_pg_rank(pg) == rank && em_pg_size(pg) == world, "rank %d of %d", em_pg_rank(pg),
          em_pg_size(pg));
  C_CHECK(!strcmp(em_pg_backend_name(pg), "mpi"), "backend %s", em_pg_backend_name(pg));
  int64_t n = 1000;
  em_tensor *t = em_tensor_empty(1, &n, EM_FLOAT64);
  C_CHECK(t, "empty: %s", em_last_error());
  double *d = (double *)em__data_ptr(t);
  for (int64_t i = 0; i < n; i++) d[i] = (double)t_val(rank, i, EM_FLOAT64);
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_AVG, NULL);
  C_CHECK(w, "allreduce: %s", em_last_error());
  C_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  for (int64_t i = 0; i < n; i++)
    C_CHECK(t_close(d[i], t_expect(world, i, EM_REDUCE_AVG, EM_FLOAT64), EM_FLOAT64),
            "avg[%lld] = %g", (long long)i, d[i]);
  /* a sub-group of ranks 1.. (everyone calls new_group) */
  int sub[T_MAX_RANKS], ns = 0;
  for (int r = 1; r < world; r++) sub[ns++] = r;
  em_pg *g = em_pg_new_group(pg, ns, sub, NULL);
  if (!g && !with_store && strstr(em_last_error(), "has no store")) {
    /* the front end cannot agree on a sub-group without a store yet */
    if (rank == 0) fprintf(stderr, "  note: %s\n", em_last_error());
  } else {
    C_CHECK(g, "new_group: %s", em_last_error());
  }
  if (g && rank >= 1) {
    C_CHECK(em_pg_rank(g) == rank - 1, "sub rank %d", em_pg_rank(g));
    for (int64_t i = 0; i < n; i++) d[i] = rank;
    w = em_pg_allreduce(g, t, EM_REDUCE_SUM, NULL);
    C_CHECK(w, "sub allreduce: %s", em_last_error());
    C_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    double want = (double)(world - 1) * world / 2;
    for (int64_t i = 0; i < n; i++) C_CHECK(d[i] == want, "sub sum[%lld] = %g", (long long)i, d[i]);
  }
  w = em_pg_barrier(pg, NULL);
  C_CHECK(w, "barrier: %s", em_last_error());
  C_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  em_pg_release(g);
  em_tensor_release(t);
  em_pg_release(pg);
  return 0;
}

static int child_main(void) {
  const char *r = getenv("OMPI_COMM_WORLD_RANK"), *s = getenv("OMPI_COMM_WORLD_SIZE");
  if (!r || !s) {
    fprintf(stderr, "--mpi-child outside mpirun\n");
    return 2;
  }
  t_rank = atoi(r);
  t_world = atoi(s);
  C_RUN(child_backend(t_rank, t_world));
  C_RUN(child_public(t_rank, t_world, false));
  C_RUN(child_public(t_rank, t_world, true));
  return 0;
}

/* ---- the launcher ------------------------------------------------------------------- */

/* Runs mpirun -np np <self> --mpi-child, with a free port for the store of
 * the with-store part; returns its exit status. */
static int run_mpirun(int np, int64_t timeout_ms) {
  int port = em_test_free_port();
  char portenv[64];
  snprintf(portenv, sizeof portenv, "EMBER_T_MPI_PORT=%d", port);
  char *args[] = {"--mpi-child", NULL}, *env[] = {portenv, NULL};
  return mr_run(np, args, env, timeout_ms);
}

static void run_np(int np) {
  char mpirun[PATH_MAX];
  if (!mr_find_in_path("mpirun", mpirun, sizeof mpirun)) EM_SKIP("mpirun is not on PATH");
  em_clear_error();
  if (!em__pg_backend_find("mpi")) EM_SKIP("the mpi backend is not built: %s", em_last_error());
  ASSERT_EQ(run_mpirun(np, 100000), 0);
}

EM_TEST(mpi_world2) { run_np(2); }
EM_TEST(mpi_world3) { run_np(3); }

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--mpi-child")) return child_main();
  return em_test_main(argc, argv);
}
