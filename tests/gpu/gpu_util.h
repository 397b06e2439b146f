/* Helpers for the GPU tests: skipping without a device, moving tensors,
 * comparing a GPU result with the CPU result element by element (printing
 * the max difference), deterministic inputs. */
#ifndef EMBER_TESTS_GPU_UTIL_H
#define EMBER_TESTS_GPU_UTIL_H

#include "core/core_impl.h"
#include "core/cuda/ember_cuda.h"
#include "tests/harness.h"

#define GPU EM_DEVICE_CUDA(0)

/* Every GPU test starts with this: without a device it skips (exit 77
 * when all tests of the binary did). */
#define REQUIRE_CUDA()                                                               \
  do {                                                                               \
    if (!em_cuda_is_available()) EM_SKIP("no CUDA device: %s", em_cuda_unavailable_reason()); \
  } while (0)

static inline em_tensor *g_to(em_tensor *t, em_device d) {
  return t ? em_tensor_to_device(t, d) : NULL;
}

/* Compares gpu (any device) with cpu element by element after copying it
 * to the host: same shape and dtype, |g - c| <= atol + rtol |c|, NaN
 * matching NaN. Prints the max difference and the first mismatch. */
static inline int g_close(em_tensor *gpu, em_tensor *cpu, double rtol, double atol,
                          const char *file, int line, const char *what) {
  if (!gpu || !cpu) {
    fprintf(stderr, "  %s:%d: %s: %s is NULL: %s\n", file, line, what, gpu ? "cpu" : "gpu",
            em_last_error());
    return 0;
  }
  em_tensor *h = em_tensor_to_device(gpu, EM_DEVICE_CPU);
  if (!h) {
    fprintf(stderr, "  %s:%d: %s: copy to host failed: %s\n", file, line, what, em_last_error());
    return 0;
  }
  int ok = 1;
  if (h->dtype != cpu->dtype || h->ndim != cpu->ndim) ok = 0;
  for (int d = 0; ok && d < h->ndim; d++) ok = h->shape[d] == cpu->shape[d];
  if (!ok) {
    fprintf(stderr, "  %s:%d: %s: gpu %s %s vs cpu %s %s\n", file, line, what,
            em_dtype_name((em_dtype)h->dtype), em__tshape(h), em_dtype_name((em_dtype)cpu->dtype),
            em__tshape(cpu));
    em_tensor_release(h);
    return 0;
  }
  double maxdiff = 0;
  int64_t bad = -1;
  for (int64_t i = 0; i < h->numel; i++) {
    double g = em_test_get(h, i), c = em_test_get(cpu, i);
    if ((isnan(g) && isnan(c)) || g == c) continue;
    double diff = fabs(g - c);
    if (isnan(diff) || isinf(diff)) diff = INFINITY;
    if (diff > maxdiff) maxdiff = diff;
    if (!(diff <= atol + rtol * fabs(c)) && bad < 0) bad = i;
  }
  if (bad >= 0)
    fprintf(stderr, "  %s:%d: %s: max |diff| %.3g; first mismatch at %lld: gpu %.17g, cpu %.17g\n",
            file, line, what, maxdiff, (long long)bad, em_test_get(h, bad), em_test_get(cpu, bad));
  em_tensor_release(h);
  return bad < 0;
}

#define ASSERT_GPU_CLOSE(gpu, cpu, rtol, atol)                                         \
  do {                                                                                 \
    if (!g_close((gpu), (cpu), (rtol), (atol), __FILE__, __LINE__, #gpu)) {            \
      em_test_failed_now = 1;                                                          \
      return;                                                                          \
    }                                                                                  \
  } while (0)

/* Deterministic values of dtype dt in a range the op tolerates: floats in
 * [lo, hi), integers in [lo, hi] (bool: 0/1). */
static inline em_tensor *g_values(int ndim, const int64_t *shape, em_dtype dt, double lo, double hi,
                                  uint64_t seed) {
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < t->numel; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    double u = (double)(s >> 11) / 9007199254740992.0;
    double v = lo + (hi - lo) * u;
    if (!em_dtype_is_float(dt)) v = floor(lo + (hi - lo + 1) * u);
    if (dt == EM_BOOL) v = u < 0.5 ? 0 : 1;
    em__store_f64((char *)em__data_ptr(t) + i * (int64_t)em_dtype_size(dt), dt, v);
  }
  return t;
}

/* Tolerances per dtype for results computed by different code. */
static inline double g_rtol(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return 2e-5;
    case EM_FLOAT64: return 1e-12;
    case EM_FLOAT16: return 2e-3;
    case EM_BFLOAT16: return 1.6e-2;
    default: return 0;
  }
}

#endif
