/* Inputs and expected results for the collective tests: rank r's value at
 * index i is a known small number (exact in every dtype), so each rank
 * computes every expected output with a plain loop in double / int64. */
#ifndef EMBER_TESTS_COMM_PG_VALUES_H
#define EMBER_TESTS_COMM_PG_VALUES_H

#include "tests/comm/test_pg_util.h"

static const em_dtype DTYPES[] __attribute__((unused)) = {
    EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8, EM_INT32, EM_INT64, EM_UINT8, EM_BOOL};
#define NDT (int)(sizeof DTYPES / sizeof DTYPES[0])

enum { CLS_ARITH, CLS_PROD, CLS_BIT };

static inline int cls_of(em_reduce_op op) {
  if (op == EM_REDUCE_PROD) return CLS_PROD;
  if (op >= EM_REDUCE_BAND) return CLS_BIT;
  return CLS_ARITH;
}

/* Rank r's value at index i for reductions of class cls. */
static inline double gen(int cls, em_dtype dt, int r, int64_t i) {
  bool uns = dt == EM_UINT8;
  if (dt == EM_BOOL) {
    if (cls == CLS_PROD) return (i + 2 * r) % 3 != 1;
    if (cls == CLS_BIT) return (i + r) % 2;
    return (i + r) % 3 == 0;
  }
  if (cls == CLS_PROD) {
    int k = (int)((i + 2 * r) % 3);
    static const double s[] = {1, -1, 2}, u[] = {1, 2, 1};
    return uns ? u[k] : s[k];
  }
  if (cls == CLS_BIT) {
    int64_t v = (i * 37 + r * 101) % 256;
    return uns ? (double)v : (double)(v - 128);
  }
  int64_t v = (i * 7 + r * 13) % 9;
  return uns ? (double)v : (double)(v - 4);
}

static inline bool op_ok(em_reduce_op op, em_dtype dt) {
  if (dt == EM_BOOL) return op != EM_REDUCE_AVG;
  if (em_dtype_is_float(dt)) return op <= EM_REDUCE_MAX;
  return true;
}

/* The reduction of every rank's gen(...) at index i. */
static inline double expect_reduce(em_reduce_op op, em_dtype dt, int W, int64_t i) {
  int cls = cls_of(op);
  double acc = gen(cls, dt, 0, i);
  int64_t bits = (int64_t)acc;
  for (int r = 1; r < W; r++) {
    double v = gen(cls, dt, r, i);
    int64_t b = (int64_t)v;
    switch (op) {
      case EM_REDUCE_SUM:
      case EM_REDUCE_AVG: acc += v; break;
      case EM_REDUCE_PROD: acc *= v; break;
      case EM_REDUCE_MIN: acc = v < acc ? v : acc; break;
      case EM_REDUCE_MAX: acc = v > acc ? v : acc; break;
      case EM_REDUCE_BAND: bits &= b; break;
      case EM_REDUCE_BOR: bits |= b; break;
      case EM_REDUCE_BXOR: bits ^= b; break;
      default: break;
    }
  }
  if (op >= EM_REDUCE_BAND) acc = (double)bits;
  if (dt == EM_BOOL) return acc != 0;
  if (op == EM_REDUCE_AVG) {
    if (em_dtype_is_float(dt)) return acc / W;
    return (double)((int64_t)acc / W); /* truncates toward zero */
  }
  return acc;
}

static inline em_tensor *mk(em_dtype dt, int64_t n, int cls, int r, int64_t shift) {
  em_tensor *t = em_tensor_empty(1, &n, dt);
  if (!t) return NULL;
  for (int64_t i = 0; i < n; i++) t_set(t, i, gen(cls, dt, r, i + shift));
  return t;
}

/* Values of t equal f(i) for every i (first mismatch reported). */
#define CK_VALUES(t, n, dt, expr_of_i, what)                                          \
  do {                                                                                \
    for (int64_t i = 0; i < (n); i++) {                                               \
      double want_ = (expr_of_i), got_ = t_get((t), i);                               \
      CK(t_close(got_, want_, (dt)), "%s (%s, n=%lld): element %lld is %.9g, expected %.9g", \
         (what), em_dtype_name(dt), (long long)(n), (long long)i, got_, want_);      \
    }                                                                                 \
  } while (0)

static const int64_t SIZES[] __attribute__((unused)) = {0, 1, 7, 1000};
#define NSZ (int)(sizeof SIZES / sizeof SIZES[0])


static inline void check_allreduce(em_pg *pg, em_dtype dt, em_reduce_op op, int64_t n) {
  int r = em_pg_rank(pg), W = em_pg_size(pg);
  em_tensor *t = mk(dt, n, cls_of(op), r, 0);
  CK_NN(t);
  em_work *w = em_pg_allreduce(pg, t, op, NULL);
  CK_NN(w);
  CK_OK(em_work_wait(w, EM_PG_DEFAULT_TIMEOUT));
  CK(em_work_is_completed(w), "not completed after wait");
  CK_OK(em_work_status(w));
  em_work_release(w);
  char what[64];
  snprintf(what, sizeof what, "allreduce %s", em_reduce_op_name(op));
  CK_VALUES(t, n, dt, expect_reduce(op, dt, W, i), what);
  em_tensor_release(t);
}

#endif
