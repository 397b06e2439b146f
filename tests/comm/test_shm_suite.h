/* The collective suite every CPU backend test runs over a backend instance
 * (t_be): every em_coll kind, every dtype, every reduce op, sizes from 0
 * elements to several MiB, every root, in place and not. Each check
 * compares with values computed independently in tests/comm/test_shm_util.h.
 * Functions return 0 when everything matched, else print and return 1. */
#ifndef EMBER_TESTS_COMM_SHM_SUITE_H
#define EMBER_TESTS_COMM_SHM_SUITE_H

#include "tests/comm/test_shm_util.h"

static inline em_coll t_coll(em_coll_kind k, em_dtype dt, int64_t n) {
  em_coll c;
  memset(&c, 0, sizeof c);
  c.kind = k;
  c.dtype = dt;
  c.device = EM_DEVICE_CPU;
  c.count = n;
  return c;
}

static inline int s_allreduce(t_be *b, em_dtype dt, em_reduce_op op, int64_t n, bool inplace) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt);
  char *in = t_alloc((size_t)n * es), *out = inplace ? in : t_alloc((size_t)n * es);
  t_fill(in, me, 0, n, dt);
  if (!inplace) t_poison(out, (size_t)n * es);
  em_coll c = t_coll(EM_COLL_ALLREDUCE, dt, n);
  c.op = op;
  c.in = in;
  c.out = out;
  em_status st = t_be_run(b, c);
  C_CHECK(st == EM_OK, "allreduce(%s, %s, %lld) failed: %s", em_dtype_name(dt),
          em_reduce_op_name(op), (long long)n, em_last_error());
  for (int64_t i = 0; i < n; i++) {
    double want = t_expect(W, i, op, dt), got = t_get(out, i, dt);
    C_CHECK(t_close(got, want, dt), "allreduce(%s, %s, n=%lld%s) [%lld] = %.17g, expected %.17g",
            em_dtype_name(dt), em_reduce_op_name(op), (long long)n, inplace ? ", in place" : "",
            (long long)i, got, want);
  }
  if (!inplace) free(out);
  free(in);
  return 0;
}

static inline int s_broadcast(t_be *b, em_dtype dt, int64_t n, int root) {
  const int me = b->rank;
  const size_t es = em_dtype_size(dt);
  char *buf = t_alloc((size_t)n * es);
  if (me == root)
    t_fill(buf, root + 11, 0, n, dt);
  else
    t_poison(buf, (size_t)n * es);
  em_coll c = t_coll(EM_COLL_BROADCAST, dt, n);
  c.root = root;
  c.in = c.out = buf;
  C_OK(t_be_run(b, c));
  for (int64_t i = 0; i < n; i++) {
    double want = (double)t_val(root + 11, i, dt), got = t_get(buf, i, dt);
    C_CHECK(got == want, "broadcast(%s, n=%lld, root %d) [%lld] = %g, expected %g",
            em_dtype_name(dt), (long long)n, root, (long long)i, got, want);
  }
  free(buf);
  return 0;
}

static inline int s_reduce(t_be *b, em_dtype dt, em_reduce_op op, int64_t n, int root) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt);
  char *in = t_alloc((size_t)n * es);
  t_fill(in, me, 0, n, dt);
  em_coll c = t_coll(EM_COLL_REDUCE, dt, n);
  c.op = op;
  c.root = root;
  c.in = in;
  c.out = me == root ? in : NULL;
  C_OK(t_be_run(b, c));
  for (int64_t i = 0; i < n; i++) {
    double want = me == root ? t_expect(W, i, op, dt) : (double)t_val(me, i, dt);
    double got = t_get(in, i, dt);
    C_CHECK(t_close(got, want, dt), "reduce(%s, %s, n=%lld, root %d) [%lld] = %g, expected %g%s",
            em_dtype_name(dt), em_reduce_op_name(op), (long long)n, root, (long long)i, got, want,
            me == root ? "" : " (a non-root input must stay intact)");
  }
  free(in);
  return 0;
}

/* gather when root >= 0, else allgather */
static inline int s_allgather(t_be *b, em_dtype dt, int64_t n, int root, bool inplace) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt), nb = (size_t)n * es;
  bool gets = root < 0 || me == root;
  char *out = gets ? t_alloc(nb * (size_t)W) : NULL;
  if (out) t_poison(out, nb * (size_t)W);
  char *in = inplace && out ? out + (size_t)me * nb : t_alloc(nb);
  t_fill(in, me + 3, 0, n, dt);
  em_coll c = t_coll(root < 0 ? EM_COLL_ALLGATHER : EM_COLL_GATHER, dt, n);
  c.root = root < 0 ? 0 : root;
  c.in = in;
  c.out = out;
  C_OK(t_be_run(b, c));
  if (gets) {
    for (int q = 0; q < W; q++)
      for (int64_t i = 0; i < n; i++) {
        double want = (double)t_val(q + 3, i, dt), got = t_get(out + (size_t)q * nb, i, dt);
        C_CHECK(got == want, "%s(%s, n=%lld, root %d) chunk %d [%lld] = %g, expected %g",
                root < 0 ? "allgather" : "gather", em_dtype_name(dt), (long long)n, root, q,
                (long long)i, got, want);
      }
  }
  if (!(inplace && out)) free(in);
  free(out);
  return 0;
}

static inline int s_scatter(t_be *b, em_dtype dt, int64_t n, int root) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt), nb = (size_t)n * es;
  char *in = NULL;
  if (me == root) {
    in = t_alloc(nb * (size_t)W);
    for (int q = 0; q < W; q++) t_fill(in + (size_t)q * nb, q, root, n, dt);
  }
  char *out = t_alloc(nb);
  t_poison(out, nb);
  em_coll c = t_coll(EM_COLL_SCATTER, dt, n);
  c.root = root;
  c.in = in;
  c.out = out;
  C_OK(t_be_run(b, c));
  for (int64_t i = 0; i < n; i++) {
    double want = (double)t_val(me, root + i, dt), got = t_get(out, i, dt);
    C_CHECK(got == want, "scatter(%s, n=%lld, root %d) [%lld] = %g, expected %g",
            em_dtype_name(dt), (long long)n, root, (long long)i, got, want);
  }
  free(in);
  free(out);
  return 0;
}

static inline int s_reduce_scatter(t_be *b, em_dtype dt, em_reduce_op op, int64_t n) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt), nb = (size_t)n * es;
  char *in = t_alloc(nb * (size_t)W), *out = t_alloc(nb);
  t_fill(in, me, 0, n * W, dt);
  t_poison(out, nb);
  em_coll c = t_coll(EM_COLL_REDUCE_SCATTER, dt, n);
  c.op = op;
  c.in = in;
  c.out = out;
  C_OK(t_be_run(b, c));
  for (int64_t i = 0; i < n; i++) {
    double want = t_expect(W, (int64_t)me * n + i, op, dt), got = t_get(out, i, dt);
    C_CHECK(t_close(got, want, dt), "reduce_scatter(%s, %s, n=%lld) [%lld] = %g, expected %g",
            em_dtype_name(dt), em_reduce_op_name(op), (long long)n, (long long)i, got, want);
  }
  free(in);
  free(out);
  return 0;
}

/* Rank s sends ((s + 2d) % 3) * m elements to rank d, element j being
 * t_val(s, 7919 * d + j). */
static inline int s_all_to_all(t_be *b, em_dtype dt, int64_t m) {
  const int W = b->size, me = b->rank;
  const size_t es = em_dtype_size(dt);
  int64_t sc[T_MAX_RANKS], rc[T_MAX_RANKS], tin = 0, tout = 0;
  for (int q = 0; q < W; q++) {
    sc[q] = ((me + 2 * q) % 3) * m;
    rc[q] = ((q + 2 * me) % 3) * m;
    tin += sc[q];
    tout += rc[q];
  }
  char *in = t_alloc((size_t)tin * es), *out = t_alloc((size_t)tout * es);
  t_poison(out, (size_t)tout * es);
  int64_t off = 0;
  for (int q = 0; q < W; q++) {
    for (int64_t j = 0; j < sc[q]; j++) t_put(in, off + j, dt, (double)t_val(me, 7919 * q + j, dt));
    off += sc[q];
  }
  em_coll c = t_coll(EM_COLL_ALL_TO_ALL, dt, 0);
  c.in = in;
  c.out = out;
  c.send_counts = sc;
  c.recv_counts = rc;
  C_OK(t_be_run(b, c));
  off = 0;
  for (int q = 0; q < W; q++) {
    for (int64_t j = 0; j < rc[q]; j++) {
      double want = (double)t_val(q, 7919 * me + j, dt), got = t_get(out, off + j, dt);
      C_CHECK(got == want, "all_to_all(%s, m=%lld) from rank %d [%lld] = %g, expected %g",
              em_dtype_name(dt), (long long)m, q, (long long)j, got, want);
    }
    off += rc[q];
  }
  free(in);
  free(out);
  return 0;
}

static inline int s_send(t_be *b, int peer, int tag, em_dtype dt, int64_t n, int seed) {
  const size_t es = em_dtype_size(dt);
  char *buf = t_alloc((size_t)n * es);
  t_fill(buf, seed, tag, n, dt);
  em_coll c = t_coll(EM_COLL_SEND, dt, n);
  c.root = peer;
  c.tag = tag;
  c.in = buf;
  em_status st = t_be_run(b, c);
  free(buf);
  C_CHECK(st == EM_OK, "send(to %d, tag %d, n=%lld) failed: %s", peer, tag, (long long)n,
          em_last_error());
  return 0;
}

static inline int s_recv(t_be *b, int peer, int tag, em_dtype dt, int64_t n, int seed) {
  const size_t es = em_dtype_size(dt);
  char *buf = t_alloc((size_t)n * es);
  t_poison(buf, (size_t)n * es);
  em_coll c = t_coll(EM_COLL_RECV, dt, n);
  c.root = peer;
  c.tag = tag;
  c.out = buf;
  C_OK(t_be_run(b, c));
  for (int64_t i = 0; i < n; i++) {
    double want = (double)t_val(seed, tag + i, dt), got = t_get(buf, i, dt);
    C_CHECK(got == want, "recv(from %d, tag %d, n=%lld) [%lld] = %g, expected %g", peer, tag,
            (long long)n, (long long)i, got, want);
  }
  free(buf);
  return 0;
}

static inline int s_barrier(t_be *b) {
  em_coll c = t_coll(EM_COLL_BARRIER, EM_FLOAT32, 0);
  C_OK(t_be_run(b, c));
  return 0;
}

/* ---- the suite ----------------------------------------------------------------------- */

/* 1: every dtype x op x size (the shm backend's own test); 0: a lighter
 * pass for backends built on others (hier, mpi): every kind and op, fewer
 * dtypes and sizes, one multi-MiB buffer per kind. */
static int t_suite_full = 1;

static inline int suite_reductions(t_be *b) {
  static const int64_t sizes[] = {0, 1, 5, 37, 3000, 20000};
  static const em_dtype light[] = {EM_FLOAT32, EM_BFLOAT16, EM_INT64, EM_UINT8, EM_BOOL};
  int nd = t_suite_full ? T_NDTYPES : (int)(sizeof light / sizeof light[0]);
  for (int d = 0; d < nd; d++) {
    em_dtype dt = t_suite_full ? t_all_dtypes[d] : light[d];
    for (int op = 0; op < EM_REDUCE_OP_COUNT; op++) {
      if (!t_op_ok((em_reduce_op)op, dt)) continue;
      for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        C_RUN(s_allreduce(b, dt, (em_reduce_op)op, sizes[s], (s + (size_t)op) % 2 == 0));
      C_RUN(s_reduce_scatter(b, dt, (em_reduce_op)op, op % 2 ? 3 : 9000));
      C_RUN(s_reduce(b, dt, (em_reduce_op)op, op % 2 ? 7 : 12000, op % b->size));
    }
  }
  /* large: several steps of the pipelined path, odd sizes */
  C_RUN(s_allreduce(b, EM_FLOAT32, EM_REDUCE_SUM, 1600001, true));
  if (!t_suite_full) return 0;
  C_RUN(s_allreduce(b, EM_INT64, EM_REDUCE_MAX, 300007, false));
  C_RUN(s_allreduce(b, EM_BFLOAT16, EM_REDUCE_AVG, 700001, true));
  C_RUN(s_reduce(b, EM_FLOAT64, EM_REDUCE_SUM, 500003, b->size - 1));
  C_RUN(s_reduce_scatter(b, EM_FLOAT32, EM_REDUCE_SUM, 400001));
  return 0;
}

static inline int suite_movement(t_be *b) {
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT16, EM_INT64, EM_BOOL, EM_INT8};
  static const int64_t sizes[] = {0, 1, 13, 5000, 70001};
  size_t ndts = t_suite_full ? sizeof dts / sizeof dts[0] : 2;
  for (size_t d = 0; d < ndts; d++) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      int64_t n = sizes[s];
      for (int root = 0; root < b->size; root++) {
        C_RUN(s_broadcast(b, dts[d], n, root));
        C_RUN(s_allgather(b, dts[d], n, root, false));
        C_RUN(s_scatter(b, dts[d], n, root));
      }
      C_RUN(s_allgather(b, dts[d], n, -1, s % 2 == 0));
      C_RUN(s_all_to_all(b, dts[d], n / 2 + (s == 1)));
      C_RUN(s_barrier(b));
    }
  }
  /* several MiB */
  C_RUN(s_broadcast(b, EM_FLOAT32, 1500001, b->size - 1));
  C_RUN(s_allgather(b, EM_FLOAT64, 300001, -1, true));
  if (!t_suite_full) return 0;
  C_RUN(s_allgather(b, EM_INT32, 300001, 1 % b->size, false));
  C_RUN(s_scatter(b, EM_FLOAT32, 300001, 0));
  C_RUN(s_all_to_all(b, EM_FLOAT32, 200001));
  return 0;
}

/* Point to point: pairs, a ring where everyone sends first (more than a
 * ring slot holds, so a blocking send would deadlock without draining),
 * out-of-order tags, zero-length messages. */
static inline int suite_p2p(t_be *b) {
  const int W = b->size, me = b->rank;
  const int next = (me + 1) % W, prev = (me + W - 1) % W;
  /* ring, everyone sends first */
  C_RUN(s_send(b, next, 5, EM_FLOAT32, 300000, me));
  C_RUN(s_recv(b, prev, 5, EM_FLOAT32, 300000, prev));
  /* pairs (0,1), (2,3): tags out of order, sizes 0 .. MiB */
  int partner = me ^ 1;
  if (partner < W) {
    if (me % 2 == 0) {
      C_RUN(s_send(b, partner, 1, EM_INT64, 10, me));
      C_RUN(s_send(b, partner, 2, EM_INT8, 0, me));
      C_RUN(s_send(b, partner, 3, EM_FLOAT64, 200000, me));
      C_RUN(s_send(b, partner, 4, EM_UINT8, 77, me));
      C_RUN(s_recv(b, partner, 9, EM_FLOAT16, 100003, partner));
    } else {
      C_RUN(s_recv(b, partner, 4, EM_UINT8, 77, partner));
      C_RUN(s_recv(b, partner, 3, EM_FLOAT64, 200000, partner));
      C_RUN(s_recv(b, partner, 2, EM_INT8, 0, partner));
      C_RUN(s_recv(b, partner, 1, EM_INT64, 10, partner));
      C_RUN(s_send(b, partner, 9, EM_FLOAT16, 100003, me));
    }
  }
  /* same tag twice: matched in order */
  C_RUN(s_send(b, next, 7, EM_INT32, 3, me));
  C_RUN(s_send(b, next, 7, EM_INT32, 3, me + 100));
  C_RUN(s_recv(b, prev, 7, EM_INT32, 3, prev));
  C_RUN(s_recv(b, prev, 7, EM_INT32, 3, prev + 100));
  C_RUN(s_barrier(b));
  return 0;
}

static inline int suite_all(t_be *b) {
  C_RUN(suite_reductions(b));
  C_RUN(suite_movement(b));
  C_RUN(suite_p2p(b));
  return 0;
}

#endif
