/* The other collectives of the tcp backend against results computed here
 * by plain loops: broadcast and reduce from every root, allgather (list and
 * tensor), gather and scatter from every root, reduce_scatter (list and
 * tensor) over ops and dtypes, all_to_all with a different size (zero
 * included) for every pair, barrier; sizes 0 to 100k+ elements; world
 * sizes 1 to 4. */
#include "tests/comm/test_pg_values.h"

/* ---- broadcast / reduce ---------------------------------------------------------------- */

static void body_broadcast_reduce(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  const em_dtype bdt[] = {EM_FLOAT32, EM_FLOAT16, EM_INT64, EM_UINT8, EM_BOOL, EM_BFLOAT16};
  const int64_t bsz[] = {0, 1, 7, 1000, 100003};
  for (int root = 0; root < W; root++)
    for (size_t d = 0; d < sizeof bdt / sizeof bdt[0]; d++)
      for (size_t s = 0; s < sizeof bsz / sizeof bsz[0]; s++) {
        em_dtype dt = bdt[d];
        int64_t n = bsz[s];
        if (n > 1000 && d > 1) continue;
        /* every rank fills with its own values; root's must win */
        em_tensor *t = mk(dt, n, CLS_ARITH, r, 5);
        CK_NN(t);
        em_work *w = em_pg_broadcast(pg, t, root, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        CK_VALUES(t, n, dt, gen(CLS_ARITH, dt, root, i + 5), "broadcast");
        em_tensor_release(t);
      }
  const em_reduce_op rops[] = {EM_REDUCE_SUM, EM_REDUCE_MAX, EM_REDUCE_PROD, EM_REDUCE_BAND,
                               EM_REDUCE_AVG};
  const em_dtype rdt[] = {EM_FLOAT64, EM_INT32, EM_BFLOAT16, EM_BOOL};
  for (int root = 0; root < W; root++)
    for (size_t o = 0; o < sizeof rops / sizeof rops[0]; o++)
      for (size_t d = 0; d < sizeof rdt / sizeof rdt[0]; d++)
        for (int big = 0; big < 2; big++) {
          em_dtype dt = rdt[d];
          em_reduce_op op = rops[o];
          if (!op_ok(op, dt)) continue;
          if (big && dt != EM_FLOAT64 && dt != EM_INT32) continue;
          int64_t n = big ? 100003 : 1000;
          em_tensor *t = mk(dt, n, cls_of(op), r, 0);
          CK_NN(t);
          em_work *w = em_pg_reduce(pg, t, root, op, NULL);
          CK_NN(w);
          CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
          em_work_release(w);
          if (r == root)
            CK_VALUES(t, n, dt, expect_reduce(op, dt, W, i), "reduce at root");
          else /* a non-root input is left as it was */
            CK_VALUES(t, n, dt, gen(cls_of(op), dt, r, i), "reduce input of a non-root");
          em_tensor_release(t);
        }
}

/* ---- allgather / reduce_scatter / gather / scatter / all_to_all --------------------------- */

static void body_gathers(t_ctx *c, em_pg *pg) {
  (void)c;
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  const em_dtype dts[] = {EM_FLOAT32, EM_INT64, EM_FLOAT16, EM_BOOL};
  const int64_t szs[] = {0, 1, 7, 1000, 40009};
  for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
    for (size_t s = 0; s < sizeof szs / sizeof szs[0]; s++) {
      em_dtype dt = dts[d];
      int64_t n = szs[s];
      if (n > 1000 && d > 1) continue;
      /* allgather into a list: outs[j] = rank j's input */
      em_tensor *in = mk(dt, n, CLS_ARITH, r, 0);
      em_tensor *outs[8] = {0};
      for (int j = 0; j < W; j++) {
        outs[j] = em_tensor_zeros(1, &n, dt);
        CK_NN(outs[j]);
      }
      em_work *w = em_pg_allgather(pg, outs, in, NULL);
      CK_NN(w);
      CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
      em_work_release(w);
      for (int j = 0; j < W; j++) CK_VALUES(outs[j], n, dt, gen(CLS_ARITH, dt, j, i), "allgather list");
      /* into one tensor [W * n] */
      int64_t wn = W * n;
      em_tensor *flat = em_tensor_zeros(1, &wn, dt);
      w = em_pg_allgather_into_tensor(pg, flat, in, NULL);
      CK_NN(w);
      CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
      em_work_release(w);
      CK_VALUES(flat, wn, dt, gen(CLS_ARITH, dt, (int)(i / (n ? n : 1)), i % (n ? n : 1)), "allgather_into_tensor");
      /* gather to each root, scatter from each root */
      for (int root = 0; root < W; root++) {
        for (int j = 0; j < W; j++) em_tensor_fill_(outs[j], em_scalar_int(0));
        w = em_pg_gather(pg, r == root ? outs : NULL, in, root, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        if (r == root)
          for (int j = 0; j < W; j++) CK_VALUES(outs[j], n, dt, gen(CLS_ARITH, dt, j, i), "gather");
        /* scatter: root's ins[j] = gen(root * 10 + j) */
        em_tensor *ins[8] = {0};
        if (r == root)
          for (int j = 0; j < W; j++) ins[j] = mk(dt, n, CLS_ARITH, root * 10 + j, 3);
        em_tensor *out = em_tensor_zeros(1, &n, dt);
        w = em_pg_scatter(pg, out, r == root ? ins : NULL, root, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        CK_VALUES(out, n, dt, gen(CLS_ARITH, dt, root * 10 + r, i + 3), "scatter");
        em_tensor_release(out);
        for (int j = 0; j < W; j++) em_tensor_release(ins[j]);
      }
      em_tensor_release(flat);
      em_tensor_release(in);
      for (int j = 0; j < W; j++) em_tensor_release(outs[j]);
    }
  /* reduce_scatter (list and tensor forms) over ops and dtypes */
  const em_reduce_op ops[] = {EM_REDUCE_SUM, EM_REDUCE_MIN, EM_REDUCE_AVG, EM_REDUCE_BOR,
                              EM_REDUCE_PROD};
  const em_dtype rdt[] = {EM_FLOAT32, EM_INT32, EM_BFLOAT16, EM_UINT8};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t d = 0; d < sizeof rdt / sizeof rdt[0]; d++)
      for (size_t s = 0; s < sizeof szs / sizeof szs[0]; s++) {
        em_dtype dt = rdt[d];
        em_reduce_op op = ops[o];
        int64_t n = szs[s];
        if (!op_ok(op, dt) || (n > 1000 && d > 0)) continue;
        int cls = cls_of(op);
        /* rank r's chunk j holds gen(cls, r, j * n + i): the reduction of
         * chunk r over ranks is expect_reduce at index r * n + i */
        int64_t wn = W * n;
        em_tensor *in = mk(dt, wn, cls, r, 0);
        em_tensor *out = em_tensor_zeros(1, &n, dt);
        em_work *w = em_pg_reduce_scatter_tensor(pg, out, in, op, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        CK_VALUES(out, n, dt, expect_reduce(op, dt, W, r * n + i), "reduce_scatter_tensor");
        CK_VALUES(in, wn, dt, gen(cls, dt, r, i), "reduce_scatter input unchanged");
        em_tensor *ins[8] = {0};
        for (int j = 0; j < W; j++) ins[j] = mk(dt, n, cls, r, j * n);
        em_tensor_fill_(out, em_scalar_int(0));
        w = em_pg_reduce_scatter(pg, out, ins, op, NULL);
        CK_NN(w);
        CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
        em_work_release(w);
        CK_VALUES(out, n, dt, expect_reduce(op, dt, W, r * n + i), "reduce_scatter list");
        for (int j = 0; j < W; j++) em_tensor_release(ins[j]);
        em_tensor_release(in);
        em_tensor_release(out);
      }
  /* all_to_all with a different size for every pair (zero included): rank
   * i sends rank j (i + j) % 3 * k elements valued 1000 i + 10 j + index */
  for (int k = 1; k <= 20001; k += 20000) {
    em_tensor *ins[8], *outs[8];
    for (int j = 0; j < W; j++) {
      int64_t ns = ((r + j) % 3) * k, nr = ((j + r) % 3) * k;
      ins[j] = em_tensor_empty(1, &ns, EM_INT32);
      outs[j] = em_tensor_zeros(1, &nr, EM_INT32);
      CK(ins[j] && outs[j], "alloc");
      for (int64_t i = 0; i < ns; i++) t_set(ins[j], i, 1000.0 * r + 10 * j + (double)(i % 7));
    }
    em_work *w = em_pg_all_to_all(pg, outs, ins, NULL);
    CK_NN(w);
    CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
    em_work_release(w);
    for (int j = 0; j < W; j++) {
      CK_VALUES(outs[j], outs[j]->numel, EM_INT32, 1000.0 * j + 10 * r + (double)(i % 7), "all_to_all");
      em_tensor_release(ins[j]);
      em_tensor_release(outs[j]);
    }
  }
  em_work *w = em_pg_barrier(pg, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  em_work_release(w);
}

#define WORLD_TESTS(W)                                                                       \
  EM_TEST(broadcast_reduce_w##W) { ASSERT_RANKS_OK(W, body_broadcast_reduce, NULL, NULL); }        \
  EM_TEST(gathers_scatters_all_to_all_w##W) { ASSERT_RANKS_OK(W, body_gathers, NULL, NULL); }

WORLD_TESTS(1)
WORLD_TESTS(2)
WORLD_TESTS(3)
WORLD_TESTS(4)

EM_TEST_MAIN()
