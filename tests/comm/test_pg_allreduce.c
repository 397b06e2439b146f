/* allreduce of the tcp backend against results computed here by plain
 * loops: every dtype (float32, float64, float16, bfloat16, int8, int32,
 * int64, uint8, bool) x every reduce op it supports x sizes 0, 1, 7, 1000
 * and large counts no world size divides (the ring, pipelined slices),
 * world sizes 1 to 4; transposed and strided (non-contiguous) tensors; the
 * three algorithms (recursive doubling, halving-doubling, ring) forced in
 * turn on sizes around their edges. */
#include "tests/comm/test_pg_values.h"

/* ---- allreduce ------------------------------------------------------------------- */

static void body_allreduce(t_ctx *c, em_pg *pg) {
  (void)c;
  for (int d = 0; d < NDT; d++)
    for (int op = 0; op < EM_REDUCE_OP_COUNT; op++) {
      if (!op_ok((em_reduce_op)op, DTYPES[d])) continue;
      for (int s = 0; s < NSZ; s++) {
        check_allreduce(pg, DTYPES[d], (em_reduce_op)op, SIZES[s]);
        if (t_fails) return;
      }
    }
  /* large: ring with pipelined slices; a count no world size divides */
  check_allreduce(pg, EM_FLOAT32, EM_REDUCE_SUM, (1 << 20) + 3);
  check_allreduce(pg, EM_INT64, EM_REDUCE_MAX, 300001);
  check_allreduce(pg, EM_FLOAT16, EM_REDUCE_AVG, 200003);
  check_allreduce(pg, EM_BFLOAT16, EM_REDUCE_PROD, 150001);
  check_allreduce(pg, EM_UINT8, EM_REDUCE_BXOR, 700001);
}

/* Non-contiguous: a transposed matrix and a strided slice, whose gaps must
 * stay untouched. */
static void body_noncontig(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  for (int big = 0; big < 2; big++) {
    int64_t rows = big ? 513 : 7, cols = big ? 257 : 13;
    em_tensor *base = em_tensor_empty(EM_DIMS(rows, cols), EM_FLOAT32);
    CK_NN(base);
    em_tensor *t = em_tensor_transpose(base, 0, 1);
    CK_NN(t);
    CK(!em_tensor_is_contiguous(t), "transpose should be non-contiguous");
    int64_t n = t->numel;
    for (int64_t i = 0; i < n; i++) t_set(t, i, gen(CLS_ARITH, EM_FLOAT32, r, i));
    em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    CK_VALUES(t, n, EM_FLOAT32, expect_reduce(EM_REDUCE_SUM, EM_FLOAT32, W, i), "transposed allreduce");
    em_tensor_release(t);
    em_tensor_release(base);
  }
  /* every other element of an int64 vector; the odd ones are sentinels */
  int64_t n2 = 2 * 1001;
  em_tensor *base = em_tensor_empty(1, &n2, EM_INT64);
  CK_NN(base);
  for (int64_t i = 0; i < n2; i++) t_set(base, i, -77);
  em_tensor *t = em_tensor_slice(base, 0, 0, n2, 2);
  CK_NN(t);
  for (int64_t i = 0; i < t->numel; i++) t_set(t, i, gen(CLS_ARITH, EM_INT64, r, i));
  em_work *w = em_pg_allreduce(pg, t, EM_REDUCE_MAX, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  CK_VALUES(t, t->numel, EM_INT64, expect_reduce(EM_REDUCE_MAX, EM_INT64, W, i), "strided allreduce");
  for (int64_t i = 1; i < n2; i += 2) CK(t_get(base, i) == -77, "gap %lld was written", (long long)i);
  /* broadcast into a strided view (root's is strided too) */
  for (int64_t i = 0; i < t->numel; i++) t_set(t, i, r == 0 ? (double)(3 * i) : -1.0);
  w = em_pg_broadcast(pg, t, 0, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
  CK_VALUES(t, t->numel, EM_INT64, (double)(3 * i), "strided broadcast");
  for (int64_t i = 1; i < n2; i += 2) CK(t_get(base, i) == -77, "gap %lld was written", (long long)i);
  em_tensor_release(t);
  em_tensor_release(base);
}

/* Every allreduce algorithm, forced, on sizes around its edges. */
static void body_algos(t_ctx *c, em_pg *pg) {
  (void)c;
  const int64_t n[] = {0, 1, 3, 5, 64, 1000, 70001};
  for (size_t s = 0; s < sizeof n / sizeof n[0]; s++) {
    check_allreduce(pg, EM_FLOAT64, EM_REDUCE_SUM, n[s]);
    check_allreduce(pg, EM_INT32, EM_REDUCE_BXOR, n[s]);
    check_allreduce(pg, EM_FLOAT16, EM_REDUCE_MAX, n[s]);
    check_allreduce(pg, EM_BOOL, EM_REDUCE_PROD, n[s]);
  }
}

static void run_algos(int W) {
  const char *algos[] = {"rd", "hd", "ring"};
  for (int a = 0; a < 3; a++) {
    setenv("EMBER_PG_ALGO", algos[a], 1);
    int codes[8];
    int bad = t_spawn(W, body_algos, NULL, NULL, codes);
    unsetenv("EMBER_PG_ALGO");
    if (bad) {
      EM_FAILF("algorithm %s at world %d: %d ranks failed", algos[a], W, bad);
      return;
    }
  }
}

#define WORLD_TESTS(W)                                                                      \
  EM_TEST(allreduce_every_dtype_op_size_w##W) { ASSERT_RANKS_OK(W, body_allreduce, NULL, NULL); } \
  EM_TEST(noncontiguous_w##W) { ASSERT_RANKS_OK(W, body_noncontig, NULL, NULL); }

WORLD_TESTS(1)
WORLD_TESTS(2)
WORLD_TESTS(3)
WORLD_TESTS(4)

EM_TEST(allreduce_algorithms_forced_w2) { run_algos(2); }
EM_TEST(allreduce_algorithms_forced_w3) { run_algos(3); }
EM_TEST(allreduce_algorithms_forced_w4) { run_algos(4); }

EM_TEST_MAIN()
