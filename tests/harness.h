/* A small header-only test harness.
 *
 *     #include "tests/harness.h"
 *     EM_TEST(add_broadcasts) {
 *       em_tensor *a = ...;
 *       ASSERT_OK(em_tensor_add_(a, b));
 *       ASSERT_TENSOR_CLOSE(a, ((double[]){1, 2, 3}), 1e-6, 0);
 *       em_tensor_release(a);
 *     }
 *     EM_TEST_MAIN()
 *
 * Each EM_TEST registers itself; main runs them all (or those whose name
 * contains argv[1]). A failed assertion prints file:line and what differed
 * and returns from the test; the binary exits non-zero if any test failed.
 * Tests must release what they create (the sanitizer build checks). A test
 * that cannot run here calls EM_SKIP(reason): exit code 77 when every test
 * skipped.
 */
#ifndef EMBER_TESTS_HARNESS_H
#define EMBER_TESTS_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

typedef void (*em_test_fn)(void);
typedef struct em_test_entry {
  const char *name;
  em_test_fn fn;
} em_test_entry;

#define EM_TEST_MAX 1024
static em_test_entry em_test_list[EM_TEST_MAX];
static int em_test_count;
static int em_test_failed_now;
static int em_test_skipped_now;

#define EM_TEST(name)                                                                \
  static void em_test_##name(void);                                                  \
  __attribute__((constructor)) static void em_test_register_##name(void) {           \
    if (em_test_count < EM_TEST_MAX)                                                 \
      em_test_list[em_test_count++] = (em_test_entry){#name, em_test_##name};        \
  }                                                                                  \
  static void em_test_##name(void)

#define EM_FAILF(...)                                              \
  do {                                                             \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);              \
    fprintf(stderr, __VA_ARGS__);                                  \
    fprintf(stderr, "\n");                                         \
    em_test_failed_now = 1;                                        \
  } while (0)

#define EM_SKIP(...)                                               \
  do {                                                             \
    fprintf(stderr, "  skipped: ");                                \
    fprintf(stderr, __VA_ARGS__);                                  \
    fprintf(stderr, "\n");                                         \
    em_test_skipped_now = 1;                                       \
    return;                                                        \
  } while (0)

#define ASSERT_TRUE(cond)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      EM_FAILF("assertion failed: %s", #cond);                     \
      return;                                                      \
    }                                                              \
  } while (0)

#define ASSERT_EQ(a, b)                                                               \
  do {                                                                                \
    long long em_a_ = (long long)(a), em_b_ = (long long)(b);                         \
    if (em_a_ != em_b_) {                                                             \
      EM_FAILF("%s == %s failed: %lld != %lld", #a, #b, em_a_, em_b_);                \
      return;                                                                         \
    }                                                                                 \
  } while (0)

#define ASSERT_STREQ(a, b)                                                            \
  do {                                                                                \
    const char *em_a_ = (a), *em_b_ = (b);                                            \
    if (!em_a_ || !em_b_ || strcmp(em_a_, em_b_) != 0) {                              \
      EM_FAILF("%s == %s failed:\n    got      \"%s\"\n    expected \"%s\"", #a, #b,   \
               em_a_ ? em_a_ : "(null)", em_b_ ? em_b_ : "(null)");                   \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* |a - b| <= atol + rtol * |b| */
#define ASSERT_CLOSE(a, b, rtol, atol)                                                \
  do {                                                                                \
    double em_a_ = (double)(a), em_b_ = (double)(b);                                  \
    if (!(fabs(em_a_ - em_b_) <= (atol) + (rtol) * fabs(em_b_)) &&                    \
        !(isnan(em_a_) && isnan(em_b_)) && !(em_a_ == em_b_)) {                       \
      EM_FAILF("%s ~= %s failed: %.17g vs %.17g (diff %.3g)", #a, #b, em_a_, em_b_,     \
               fabs(em_a_ - em_b_));                                                  \
      return;                                                                         \
    }                                                                                 \
  } while (0)

#define ASSERT_OK(call)                                                               \
  do {                                                                                \
    em_status em_s_ = (call);                                                         \
    if (em_s_ != EM_OK) {                                                             \
      EM_FAILF("%s failed: %s: %s", #call, em_status_name(em_s_), em_last_error());   \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* Evaluates a pointer-returning call, failing the test if it is NULL. */
#define ASSERT_NOTNULL(ptr)                                                           \
  do {                                                                                \
    if (!(ptr)) {                                                                     \
      EM_FAILF("%s is NULL: %s: %s", #ptr, em_status_name(em_last_status()),           \
               em_last_error());                                                      \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* The call must fail with status st and a message containing substr. */
#define ASSERT_ERR(call, st, substr)                                                  \
  do {                                                                                \
    em_clear_error();                                                                 \
    em_status em_s_ = (call);                                                         \
    if (em_s_ != (st) || !strstr(em_last_error(), (substr))) {                        \
      EM_FAILF("%s: expected %s containing \"%s\", got %s: \"%s\"", #call,            \
               em_status_name(st), substr, em_status_name(em_s_), em_last_error());   \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* The pointer-returning call must return NULL with status st and a message
 * containing substr (a failing test may leak what it returned). */
#define ASSERT_NULL_ERR(call, st, substr)                                             \
  do {                                                                                \
    em_clear_error();                                                                 \
    void *em_p_ = (void *)(call);                                                     \
    if (em_p_ || em_last_status() != (st) || !strstr(em_last_error(), (substr))) {    \
      EM_FAILF("%s: expected NULL with %s containing \"%s\", got %s %s: \"%s\"", #call, \
               em_status_name(st), substr, em_p_ ? "a tensor" : "NULL",               \
               em_status_name(em_last_status()), em_last_error());                    \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* Reads element i (row-major logical order) of any tensor as double. */
static inline double em_test_get(em_tensor *t, int64_t i) {
  int64_t off = t->offset;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t n = t->shape[d];
    off += (i % n) * t->strides[d];
    i /= n;
  }
  const char *p = (const char *)t->storage->data + off * (int64_t)em_dtype_size((em_dtype)t->dtype);
  switch ((em_dtype)t->dtype) {
    case EM_FLOAT32: return *(const float *)p;
    case EM_FLOAT64: return *(const double *)p;
    case EM_FLOAT16: return em_half_to_float(*(const uint16_t *)p);
    case EM_BFLOAT16: return em_bf16_to_float(*(const uint16_t *)p);
    case EM_INT8: return *(const int8_t *)p;
    case EM_INT16: return *(const int16_t *)p;
    case EM_INT32: return *(const int32_t *)p;
    case EM_INT64: return (double)*(const int64_t *)p;
    case EM_UINT8: return *(const uint8_t *)p;
    case EM_BOOL: return *(const bool *)p;
    default: return NAN;
  }
}

/* Compares every element of t (logical order) with expected[0..numel),
 * printing the max difference and the first mismatch. */
static inline int em_test_tensor_close(em_tensor *t, const double *expected, int64_t n,
                                       double rtol, double atol, const char *file, int line,
                                       const char *what) {
  if (!t) {
    fprintf(stderr, "  %s:%d: %s is NULL: %s\n", file, line, what, em_last_error());
    return 0;
  }
  if (t->numel != n) {
    fprintf(stderr, "  %s:%d: %s has %lld elements, expected %lld\n", file, line, what,
            (long long)t->numel, (long long)n);
    return 0;
  }
  double maxdiff = 0;
  int64_t bad = -1;
  for (int64_t i = 0; i < n; i++) {
    double g = em_test_get(t, i), e = expected[i];
    if (isnan(g) && isnan(e)) continue;
    if (g == e) continue;
    double diff = fabs(g - e);
    if (!(diff <= diff) || isinf(g) || isinf(e)) diff = INFINITY;
    if (diff > maxdiff) maxdiff = diff;
    if (!(diff <= atol + rtol * fabs(e)) && bad < 0) bad = i;
  }
  if (bad >= 0) {
    fprintf(stderr,
            "  %s:%d: %s differs: max |diff| %.3g; first mismatch at %lld: got %.17g, "
            "expected %.17g\n",
            file, line, what, maxdiff, (long long)bad, em_test_get(t, bad), expected[bad]);
    return 0;
  }
  return 1;
}

#define ASSERT_TENSOR_CLOSE(t, expected, rtol, atol)                                       \
  do {                                                                                     \
    const double *em_e_ = (expected);                                                      \
    int64_t em_n_ = (int64_t)(sizeof(expected) / sizeof(double));                          \
    if (!em_test_tensor_close((t), em_e_, em_n_, (rtol), (atol), __FILE__, __LINE__, #t)) { \
      em_test_failed_now = 1;                                                              \
      return;                                                                              \
    }                                                                                      \
  } while (0)

/* Same with an explicit count (for heap arrays). */
#define ASSERT_TENSOR_CLOSE_N(t, expected, n, rtol, atol)                                   \
  do {                                                                                     \
    if (!em_test_tensor_close((t), (expected), (n), (rtol), (atol), __FILE__, __LINE__, #t)) { \
      em_test_failed_now = 1;                                                              \
      return;                                                                              \
    }                                                                                      \
  } while (0)

#define ASSERT_SHAPE(t, ...)                                                              \
  do {                                                                                    \
    const int64_t em_s_[] = {__VA_ARGS__};                                                \
    int em_nd_ = (int)(sizeof em_s_ / sizeof em_s_[0]);                                   \
    if (!(t)) {                                                                           \
      EM_FAILF("%s is NULL: %s", #t, em_last_error());                                    \
      return;                                                                             \
    }                                                                                     \
    int em_ok_ = (t)->ndim == em_nd_;                                                     \
    for (int em_i_ = 0; em_ok_ && em_i_ < em_nd_; em_i_++)                                \
      em_ok_ = (t)->shape[em_i_] == em_s_[em_i_];                                         \
    if (!em_ok_) {                                                                        \
      char em_b_[256];                                                                    \
      int em_n_ = 0;                                                                      \
      for (int em_i_ = 0; em_i_ < (t)->ndim; em_i_++)                                     \
        em_n_ += snprintf(em_b_ + em_n_, sizeof em_b_ - (size_t)em_n_, "%lld ",           \
                          (long long)(t)->shape[em_i_]);                                  \
      EM_FAILF("%s has shape [ %s] (ndim %d), expected %s", #t, em_b_, (t)->ndim,         \
               #__VA_ARGS__);                                                             \
      return;                                                                             \
    }                                                                                     \
  } while (0)

/* A 0-dim shape check. */
#define ASSERT_SCALAR_SHAPE(t) ASSERT_EQ((t)->ndim, 0)

static inline int em_test_main(int argc, char **argv) {
  int failed = 0, ran = 0, skipped = 0;
  for (int i = 0; i < em_test_count; i++) {
    if (argc > 1 && !strstr(em_test_list[i].name, argv[1])) continue;
    em_test_failed_now = 0;
    em_test_skipped_now = 0;
    em_clear_error();
    em_test_list[i].fn();
    ran++;
    if (em_test_skipped_now) {
      skipped++;
      printf("SKIP %s\n", em_test_list[i].name);
    } else if (em_test_failed_now) {
      failed++;
      printf("FAIL %s\n", em_test_list[i].name);
    } else {
      printf("ok   %s\n", em_test_list[i].name);
    }
    fflush(stdout);
  }
  printf("%d tests, %d failed, %d skipped\n", ran, failed, skipped);
  if (failed) return 1;
  if (ran > 0 && skipped == ran) return 77;
  return 0;
}

#define EM_TEST_MAIN() \
  int main(int argc, char **argv) { return em_test_main(argc, argv); }

#endif
