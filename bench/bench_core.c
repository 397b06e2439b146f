/* ember core benchmark: prints one table from one run.
 *
 *     build/bench/bench_core            # 1 and 2 threads
 *     build/bench/bench_core 1 4 8      # the thread counts to run
 *
 * Rows (medians of several repetitions; each measured at every thread count
 * through em_set_num_threads, which also sets BLAS's threads):
 *   sgemm N^3        em_tensor_mm (incl. allocating and releasing the
 *                    result) vs cblas_sgemm called directly on the very
 *                    library ember loaded (same kernels, same threads),
 *                    GFLOP/s; target ratio >= 0.95.
 *   add 16M f32      em_tensor_add (out of place: the result's allocation
 *                    and first touch count) and em_tensor_add_ (in place),
 *                    GB/s counting bytes read + written, vs memcpy of the
 *                    same buffer size (one thread / ember's threads);
 *                    target ratio >= 0.7.
 *   sum 16M f32      em_tensor_sum over everything, GB/s read.
 *   add 1-elem       ns per em_tensor_add of two 1-element tensors plus the
 *                    release of its result; target <= 300 ns.
 *
 * It uses ember's internal thread pool (em__parallel_for) for the threaded
 * memcpy reference, so that both sides run on the same threads. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core_impl.h"

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
enum { ROW_MAJOR = 101, NO_TRANS = 111 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define REPS_MAX 15

/* ---- the table ------------------------------------------------------------------ */

static int misses;

/* higher: larger is better (rates) and ratio = ember / reference; target
 * is the ratio bound, or (ref < 0) an absolute bound on ember's value;
 * NAN: no target. */
static void row(const char *name, int threads, double ember, double ref, bool higher,
                double target) {
  char refs[32] = "-", ratio[32] = "-", tgt[32] = "-";
  bool ok = true;
  if (ref >= 0) {
    double r = higher ? ember / ref : ref / ember;
    snprintf(refs, sizeof refs, "%.1f", ref);
    snprintf(ratio, sizeof ratio, "%.2f", r);
    if (target == target) {
      snprintf(tgt, sizeof tgt, ">= %.2f", target);
      ok = r >= target;
    }
  } else if (target == target) {
    snprintf(tgt, sizeof tgt, "%s %.0f", higher ? ">=" : "<=", target);
    ok = higher ? ember >= target : ember <= target;
  }
  if (!ok) misses++;
  printf("%-36s %3d %12.1f %12s %7s %9s  %s\n", name, threads, ember, refs, ratio, tgt,
         ok ? "ok" : "MISS");
}

static void fail(const char *what) {
  fprintf(stderr, "bench_core: %s: %s\n", what, em_last_error());
  exit(1);
}

static em_tensor *filled(int64_t n0, int64_t n1, float scale) {
  em_tensor *t =
      n1 ? em_tensor_empty(EM_DIMS(n0, n1), EM_FLOAT32) : em_tensor_empty(EM_DIMS(n0), EM_FLOAT32);
  if (!t) fail("empty");
  float *p = em_tensor_data(t);
  uint32_t s = 12345;
  for (int64_t i = 0; i < t->numel; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = scale * ((float)(s >> 8) / 16777216.0f - 0.5f);
  }
  return t;
}

/* ---- sgemm ------------------------------------------------------------------------ */

static void bench_sgemm(cblas_sgemm_fn ref_sgemm, int threads, int64_t n, int reps) {
  em_tensor *a = filled(n, n, 1), *b = filled(n, n, 1);
  float *c = aligned_alloc(64, sizeof(float) * (size_t)(n * n));
  if (!c) fail("malloc");
  memset(c, 0, sizeof(float) * (size_t)(n * n));
  const float *pa = em_tensor_data(a), *pb = em_tensor_data(b);
  double te[REPS_MAX], tr[REPS_MAX];
  /* warm up both, then alternate (and swap which goes first) so that drift
   * and cache state hit both sides alike */
  for (int r = -1; r < reps; r++) {
    for (int side = 0; side < 2; side++) {
      bool ember = (side == 0) == (r % 2 == 0);
      double t0 = now();
      if (ember) {
        em_tensor *o = em_tensor_mm(a, b);
        if (!o) fail("mm");
        em_tensor_release(o);
      } else {
        ref_sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, (int)n, (int)n, (int)n, 1.0f, pa, (int)n, pb,
                  (int)n, 0.0f, c, (int)n);
      }
      double t = now() - t0;
      if (r >= 0) *(ember ? &te[r] : &tr[r]) = t;
    }
  }
  double flop = 2.0 * (double)n * (double)n * (double)n;
  char name[64];
  snprintf(name, sizeof name, "sgemm %lld^3 (GFLOP/s)", (long long)n);
  row(name, threads, flop / median(te, reps) / 1e9, flop / median(tr, reps) / 1e9, true, 0.95);
  free(c);
  em_tensor_release(a), em_tensor_release(b);
}

/* ---- memory-bound ops ------------------------------------------------------------------ */

typedef struct copy_job {
  char *dst;
  const char *src;
} copy_job;

static void copy_range(void *ctx, int64_t b, int64_t e) {
  copy_job *j = ctx;
  memcpy(j->dst + b, j->src + b, (size_t)(e - b));
}

static void bench_memory(int threads, int64_t n, int reps) {
  size_t bytes = sizeof(float) * (size_t)n;
  char *src = aligned_alloc(64, bytes), *dst = aligned_alloc(64, bytes);
  if (!src || !dst) fail("malloc");
  memset(src, 1, bytes);
  memset(dst, 0, bytes);
  em_tensor *a = filled(n, 0, 1), *b = filled(n, 0, 1e-3f);
  double t1[REPS_MAX], tt[REPS_MAX], tadd[REPS_MAX], tadd_[REPS_MAX], tsum[REPS_MAX];
  copy_job j = {dst, src};
  for (int r = -1; r < reps; r++) {
    double t0 = now();
    memcpy(dst, src, bytes);
    double t_1 = now();
    em__parallel_for((int64_t)bytes, (int64_t)bytes / threads + 1, copy_range, &j);
    double t_2 = now();
    em_tensor *o = em_tensor_add(a, b);
    if (!o) fail("add");
    em_tensor_release(o);
    double t_3 = now();
    if (em_tensor_add_(a, b)) fail("add_");
    double t_4 = now();
    em_tensor *s = em_tensor_sum(a, 0, NULL, false, EM_DTYPE_UNDEFINED);
    if (!s) fail("sum");
    em_tensor_release(s);
    double t_5 = now();
    if (r >= 0) {
      t1[r] = t_1 - t0, tt[r] = t_2 - t_1, tadd[r] = t_3 - t_2, tadd_[r] = t_4 - t_3;
      tsum[r] = t_5 - t_4;
    }
  }
  double gb = 1e9;
  double copy1 = 2.0 * (double)bytes / median(t1, reps) / gb;
  double copyt = 2.0 * (double)bytes / median(tt, reps) / gb;
  double ref = threads > 1 ? copyt : copy1;
  row("memcpy 64 MiB, 1 thread (GB/s)", threads, copy1, -1, true, NAN);
  if (threads > 1) row("memcpy 64 MiB, ember threads (GB/s)", threads, copyt, -1, true, NAN);
  row("add 16M f32 out of place (GB/s)", threads, 3.0 * (double)bytes / median(tadd, reps) / gb,
      ref, true, 0.7);
  row("add_ 16M f32 in place (GB/s)", threads, 3.0 * (double)bytes / median(tadd_, reps) / gb, ref,
      true, 0.7);
  row("sum 16M f32 (GB/s)", threads, (double)bytes / median(tsum, reps) / gb, -1, true, NAN);
  em_tensor_release(a), em_tensor_release(b);
  free(src), free(dst);
}

static void bench_tiny(int threads, int reps) {
  em_tensor *a = filled(1, 0, 1), *b = filled(1, 0, 1);
  enum { ITERS = 20000 };
  double t[REPS_MAX];
  for (int r = -1; r < reps; r++) {
    double t0 = now();
    for (int i = 0; i < ITERS; i++) {
      em_tensor *o = em_tensor_add(a, b);
      if (!o) fail("add");
      em_tensor_release(o);
    }
    if (r >= 0) t[r] = (now() - t0) / ITERS * 1e9;
  }
  row("add 1-elem incl. release (ns)", threads, median(t, reps), -1, false, 300);
  em_tensor_release(a), em_tensor_release(b);
}

int main(int argc, char **argv) {
  int threads[16] = {1, 2}, nthreads = 2;
  if (argc > 1) {
    nthreads = 0;
    for (int i = 1; i < argc && nthreads < 16; i++)
      if (atoi(argv[i]) > 0) threads[nthreads++] = atoi(argv[i]);
  }
  /* ember loads OpenBLAS (and may set OPENBLAS_CORETYPE) first; dlopen of
   * the same name then returns that very library. */
  const char *info = em_blas_info();
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  cblas_sgemm_fn ref_sgemm = h ? (cblas_sgemm_fn)dlsym(h, "cblas_sgemm") : NULL;
  int (*blas_threads)(void) = h ? (int (*)(void))dlsym(h, "openblas_get_num_threads") : NULL;
  double load[3] = {0};
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
    fclose(f);
  }
  printf("ember %s core benchmark\nBLAS: %s\nload average at start: %.2f %.2f %.2f\n\n",
         em_version(), info, load[0], load[1], load[2]);
  printf("%-36s %3s %12s %12s %7s %9s\n", "benchmark", "thr", "ember", "reference", "ratio",
         "target");
  for (int i = 0; i < nthreads; i++) {
    em_set_num_threads(threads[i]);
    if (blas_threads && blas_threads() != threads[i])
      fprintf(stderr, "bench_core: BLAS runs %d threads, expected %d\n", blas_threads(),
              threads[i]);
    if (ref_sgemm) {
      bench_sgemm(ref_sgemm, threads[i], 1024, 9);
      bench_sgemm(ref_sgemm, threads[i], 2048, 5);
    } else {
      printf("%-36s %3d  (no libopenblas.so.0 to compare with)\n", "sgemm", threads[i]);
    }
    bench_memory(threads[i], 16 << 20, 9);
    bench_tiny(threads[i], 7);
  }
  printf("\n%d row(s) missed their target\n", misses);
  if (h) dlclose(h);
  return 0;
}
