/* The shm and auto backends through the public process-group API
 * (em_pg_init_store, tensors, works): the backend that runs, non-contiguous
 * tensors (staged by the front end), async works overlapping, every list
 * form, and nothing left in /dev/shm once the group is released. Values are
 * computed independently in the test. */
#include "tests/comm/test_shm_util.h"

/* A [rows, cols] float64 tensor transposed: logical (i, j) holds
 * t_val(seed, i * rows + j) — non-contiguous. */
static em_tensor *transposed(int seed, int64_t rows, int64_t cols) {
  em_tensor *base = em_tensor_empty(EM_DIMS(cols, rows), EM_FLOAT64);
  if (!base) return NULL;
  double *d = (double *)em__data_ptr(base);
  /* base[j][i] = value of logical (i, j) */
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) d[j * rows + i] = (double)t_val(seed, i * cols + j, EM_FLOAT64);
  em_tensor *t = em_tensor_transpose(base, 0, 1);
  em_tensor_release(base);
  return t;
}

static double at2(em_tensor *t, int64_t i, int64_t j) {
  const double *d = (const double *)t->storage->data;
  return d[t->offset + i * t->strides[0] + j * t->strides[1]];
}

static int wait_ok(em_work *w) {
  C_CHECK(w, "collective refused: %s", em_last_error());
  em_status st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
  em_work_release(w);
  C_CHECK(st == EM_OK, "wait: %s: %s", em_status_name(st), em_last_error());
  return 0;
}

static int body_api(em_store *store, int rank, int world, void *arg) {
  const char *backend = arg;
  em_pg_options o = {.backend = backend, .timeout_ms = 30000, .group_name = t_group};
  em_pg *pg = em_pg_init_store(store, rank, world, &o);
  C_CHECK(pg, "init_store(%s): %s", backend, em_last_error());
  const char *name = em_pg_backend_name(pg);
  C_CHECK(!strcmp(backend, "shm") ? !strcmp(name, "shm")
                                  : (!strcmp(name, "auto") || !strcmp(name, "gloo")),
          "backend %s runs as %s", backend, name);
  char first[256];
  C_CHECK(t_shm_leftovers(t_group, first, sizeof first) == 0, "/dev/shm/%s exists", first);

  /* allreduce of a non-contiguous tensor, two of them in flight at once */
  const int64_t R = 37, C = 300;
  em_tensor *a = transposed(rank, R, C), *b = transposed(rank + 7, R, C);
  C_CHECK(a && b, "tensors: %s", em_last_error());
  em_work *wa = em_pg_allreduce(pg, a, EM_REDUCE_SUM, NULL);
  em_work *wb = em_pg_allreduce(pg, b, EM_REDUCE_MAX, NULL);
  C_RUN(wait_ok(wa));
  C_RUN(wait_ok(wb));
  for (int64_t i = 0; i < R; i++)
    for (int64_t j = 0; j < C; j++) {
      int64_t va[T_MAX_RANKS] = {0}, vb[T_MAX_RANKS] = {0};
      for (int r = 0; r < world; r++) {
        va[r] = t_val(r, i * C + j, EM_FLOAT64);
        vb[r] = t_val(r + 7, i * C + j, EM_FLOAT64);
      }
      double ea = t_expect_vals(va, world, EM_REDUCE_SUM, EM_FLOAT64);
      double eb = t_expect_vals(vb, world, EM_REDUCE_MAX, EM_FLOAT64);
      C_CHECK(at2(a, i, j) == ea && at2(b, i, j) == eb, "(%lld, %lld): %g %g, expected %g %g",
              (long long)i, (long long)j, at2(a, i, j), at2(b, i, j), ea, eb);
    }
  em_tensor_release(a);
  em_tensor_release(b);

  /* allgather into a list and broadcast from the last rank, int32 */
  int64_t n = 5000;
  em_tensor *in = em_tensor_empty(1, &n, EM_INT32);
  em_tensor *outs[T_MAX_RANKS];
  for (int q = 0; q < world; q++) outs[q] = em_tensor_zeros(1, &n, EM_INT32);
  t_fill(em__data_ptr(in), rank, 0, n, EM_INT32);
  C_RUN(wait_ok(em_pg_allgather(pg, outs, in, NULL)));
  for (int q = 0; q < world; q++)
    for (int64_t i = 0; i < n; i++) {
      double got = t_get(em__data_ptr(outs[q]), i, EM_INT32);
      C_CHECK(got == (double)t_val(q, i, EM_INT32), "allgather[%d][%lld] = %g", q, (long long)i,
              got);
    }
  if (rank == world - 1) t_fill(em__data_ptr(in), 99, 0, n, EM_INT32);
  C_RUN(wait_ok(em_pg_broadcast(pg, in, world - 1, NULL)));
  for (int64_t i = 0; i < n; i++)
    C_CHECK(t_get(em__data_ptr(in), i, EM_INT32) == (double)t_val(99, i, EM_INT32),
            "broadcast[%lld]", (long long)i);

  /* reduce_scatter from a list, avg */
  em_tensor *rs = em_tensor_zeros(1, &n, EM_INT32);
  for (int q = 0; q < world; q++) t_fill(em__data_ptr(outs[q]), rank, q * n, n, EM_INT32);
  C_RUN(wait_ok(em_pg_reduce_scatter(pg, rs, outs, EM_REDUCE_AVG, NULL)));
  for (int64_t i = 0; i < n; i++) {
    double want = t_expect(world, rank * n + i, EM_REDUCE_AVG, EM_INT32);
    C_CHECK(t_get(em__data_ptr(rs), i, EM_INT32) == want, "reduce_scatter[%lld]", (long long)i);
  }
  C_RUN(wait_ok(em_pg_barrier(pg, NULL)));
  for (int q = 0; q < world; q++) em_tensor_release(outs[q]);
  em_tensor_release(rs);
  em_tensor_release(in);
  em_pg_release(pg);
  return 0;
}

static void run_api(const char *backend, int world) {
  t_new_group_name("api");
  ASSERT_RANKS_OK(world, body_api, (void *)backend, 60000);
  char first[256];
  ASSERT_EQ(t_shm_leftovers(t_group, first, sizeof first), 0);
}

EM_TEST(shm_api_world2) { run_api("shm", 2); }
EM_TEST(shm_api_world3) { run_api("shm", 3); }
EM_TEST(auto_api_world2) { run_api("auto", 2); }
EM_TEST(gloo_api_world3) { run_api("gloo", 3); }

EM_TEST_MAIN()
