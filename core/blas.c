/* GEMM through OpenBLAS, loaded at run time.
 *
 * Debian's OpenBLAS 0.3.21 does not recognise some newer CPUs and falls
 * back to generic kernels 6x slower than it could run. OPENBLAS_CORETYPE
 * picks the kernel set, but only before the library initialises — so ember
 * dlopen()s it: when the user has not chosen, ember selects the kernels the
 * CPU supports (SkylakeX/Cooperlake with AVX-512, Haswell with AVX2+FMA
 * when OpenBLAS fell back to an older generic set), then verifies GEMM
 * results against a float64 reference and falls back to OpenBLAS's own
 * choice if they disagree. em_blas_info() reports what is in use.
 *
 * Without any BLAS a blocked C loop computes the same results, slowly. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core_impl.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);
typedef void (*dgemm_fn)(int, int, int, int, int, int, double, const double *, int,
                         const double *, int, double, double *, int);

static struct {
  void *handle;
  sgemm_fn sgemm;
  dgemm_fn dgemm;
  void (*set_threads)(int);
  char *(*corename)(void);
  char *(*config)(void);
  char info[256];
} blas;

/* ---- CPU features ---------------------------------------------------------------- */

static bool os_saves(unsigned mask) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false; /* OSXSAVE */
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & mask) == mask;
}

static bool cpu_avx512(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  return f && dq && bw && vl && os_saves(0xe6);
}

static bool cpu_avx512_bf16(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return a & (1u << 5);
}

static bool cpu_avx2_fma(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 12))) return false; /* FMA */
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 5))) return false;
  return os_saves(0x6);
}

/* ---- the C fallback ---------------------------------------------------------------- */

#define FALLBACK_GEMM(NAME, T)                                                              \
  static void NAME(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *A,   \
                   int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc) {        \
    for (int64_t i = 0; i < m; i++) {                                                      \
      T *c = C + i * ldc;                                                                  \
      if (beta == 0)                                                                       \
        for (int64_t j = 0; j < n; j++) c[j] = 0;                                          \
      else if (beta != 1)                                                                  \
        for (int64_t j = 0; j < n; j++) c[j] *= beta;                                      \
      for (int64_t p = 0; p < k; p++) {                                                    \
        T av = alpha * (ta ? A[p * lda + i] : A[i * lda + p]);                             \
        if (av == 0) continue;                                                             \
        if (!tb) {                                                                         \
          const T *b = B + p * ldb;                                                        \
          for (int64_t j = 0; j < n; j++) c[j] += av * b[j];                               \
        } else {                                                                           \
          for (int64_t j = 0; j < n; j++) c[j] += av * B[j * ldb + p];                     \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }
FALLBACK_GEMM(fallback_sgemm, float)
FALLBACK_GEMM(fallback_dgemm, double)

/* ---- loading and verification ---------------------------------------------------------- */

/* Compares BLAS sgemm/dgemm with a float64 loop on shapes that exercise
 * edge blocks and every transpose combination. */
static bool verify(void) {
  static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {67, 45, 53}, {128, 96, 160}, {33, 257, 19}};
  bool ok = true;
  unsigned seed = 12345;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && ok; s++) {
    int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
    float *A = malloc(sizeof(float) * m * k), *B = malloc(sizeof(float) * k * n),
          *C = malloc(sizeof(float) * m * n);
    double *Ad = malloc(sizeof(double) * m * k), *Bd = malloc(sizeof(double) * k * n),
           *Cd = malloc(sizeof(double) * m * n), *R = malloc(sizeof(double) * m * n);
    if (!A || !B || !C || !Ad || !Bd || !Cd || !R) ok = false;
    for (int i = 0; ok && i < m * k; i++) {
      seed = seed * 1103515245u + 12345u;
      Ad[i] = A[i] = (float)((int)(seed >> 16) % 2001 - 1000) / 1000.0f;
    }
    for (int i = 0; ok && i < k * n; i++) {
      seed = seed * 1103515245u + 12345u;
      Bd[i] = B[i] = (float)((int)(seed >> 16) % 2001 - 1000) / 1000.0f;
    }
    for (int t = 0; ok && t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      /* A is stored [m,k] or, transposed, [k,m]: reinterpret the same data */
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
          double acc = 0;
          for (int p = 0; p < k; p++)
            acc += (ta ? Ad[p * m + i] : Ad[i * k + p]) * (tb ? Bd[j * k + p] : Bd[p * n + j]);
          R[i * n + j] = acc;
        }
      blas.sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, m, n, k, 1.0f, A,
                 ta ? m : k, B, tb ? k : n, 0.0f, C, n);
      blas.dgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, m, n, k, 1.0, Ad,
                 ta ? m : k, Bd, tb ? k : n, 0.0, Cd, n);
      for (int i = 0; i < m * n && ok; i++) {
        double tol = 1e-5 * (k + 1);
        if (!(fabs(C[i] - R[i]) <= tol) || !(fabs(Cd[i] - R[i]) <= 1e-10 * (k + 1))) ok = false;
      }
    }
    free(A), free(B), free(C), free(Ad), free(Bd), free(Cd), free(R);
  }
  return ok;
}

/* ---- fork against GEMM -------------------------------------------------------------
 *
 * OpenBLAS stops its thread pool in a pthread_atfork prepare handler. A
 * GEMM running in another thread meanwhile waits forever for pool threads
 * that are gone, and a child forked during the first GEMM's start-up
 * hangs in its own. So every GEMM holds use_lock for reading, and a fork
 * takes it for writing (waiting for the GEMMs in flight) before OpenBLAS's
 * handler runs: prepare handlers run in the reverse order of their
 * registration, so ours is registered again after each dlopen (which
 * registers OpenBLAS's), and counts per thread so that only the first
 * one to run locks. */
static pthread_rwlock_t use_lock;
static pthread_once_t use_lock_once = PTHREAD_ONCE_INIT;
static __thread int fork_depth;

static void use_lock_reset(void) {
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  /* a fork is not starved by threads that keep multiplying */
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&use_lock, &a);
  pthread_rwlockattr_destroy(&a);
}

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* Registered once before OpenBLAS loads, too: a fork while it loads waits
 * for the loading to end. */
static void use_lock_init(void) {
  use_lock_reset();
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void fork_prepare(void) {
  if (fork_depth++ == 0) pthread_rwlock_wrlock(&use_lock);
}

static void fork_parent(void) {
  if (--fork_depth == 0) pthread_rwlock_unlock(&use_lock);
}

/* The child's thread has a new thread id, which glibc's unlock would take
 * for a reader's: the lock starts afresh (no other thread exists here). */
static void fork_child(void) {
  if (--fork_depth == 0) use_lock_reset();
}

static bool try_load(const char *name) {
  blas.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!blas.handle) return false;
  pthread_atfork(fork_prepare, fork_parent, fork_child);
  blas.sgemm = (sgemm_fn)dlsym(blas.handle, "cblas_sgemm");
  blas.dgemm = (dgemm_fn)dlsym(blas.handle, "cblas_dgemm");
  blas.set_threads = (void (*)(int))dlsym(blas.handle, "openblas_set_num_threads");
  blas.corename = (char *(*)(void))dlsym(blas.handle, "openblas_get_corename");
  blas.config = (char *(*)(void))dlsym(blas.handle, "openblas_get_config");
  if (!blas.sgemm || !blas.dgemm) {
    dlclose(blas.handle);
    memset(&blas, 0, sizeof blas);
    return false;
  }
  return true;
}

static void unload(void) {
  if (blas.handle) dlclose(blas.handle);
  memset(&blas, 0, sizeof blas);
}

static bool generic_core(const char *core) {
  static const char *const old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                    "Atom", "Katmai", "Coppermine", "Northwood", "Banias",
                                    "Sandybridge", "Opteron", "Barcelona"};
  for (size_t i = 0; core && i < sizeof old / sizeof old[0]; i++)
    if (strcasecmp(core, old[i]) == 0) return true;
  return false;
}

static const char *const names[] = {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"};

static bool load_any(void) {
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (try_load(names[i])) return true;
  return false;
}

static atomic_int threads_wanted, threads_applied; /* see ensure() */

static void blas_init(void) {
  const char *user = getenv("OPENBLAS_CORETYPE");
  /* set but empty: OpenBLAS would quietly pick something; treat as unset */
  if (user && !*user) {
    unsetenv("OPENBLAS_CORETYPE");
    user = NULL;
  }
  const char *chosen = NULL;
  if (!user || !*user) {
    if (cpu_avx512()) chosen = cpu_avx512_bf16() ? "Cooperlake" : "SkylakeX";
    if (chosen) setenv("OPENBLAS_CORETYPE", chosen, 1);
  }
  bool loaded = load_any();
  if (loaded && !chosen && (!user || !*user) && blas.corename &&
      generic_core(blas.corename()) && cpu_avx2_fma()) {
    /* OpenBLAS did not know this CPU: retry with the AVX2 kernels */
    unload();
    chosen = "Haswell";
    setenv("OPENBLAS_CORETYPE", chosen, 1);
    loaded = load_any();
  }
  const char *how = user && *user ? "set by OPENBLAS_CORETYPE" : chosen ? "selected by ember" : "chosen by OpenBLAS";
  if (loaded && !verify()) {
    fprintf(stderr, "ember: BLAS kernels (%s) failed the GEMM self-check; %s\n",
            blas.corename ? blas.corename() : "?",
            chosen ? "retrying with OpenBLAS's own choice" : "using ember's C GEMM");
    unload();
    loaded = false;
    if (chosen) {
      unsetenv("OPENBLAS_CORETYPE");
      loaded = load_any() && verify();
      if (!loaded) unload();
      how = "chosen by OpenBLAS after ember's choice failed the self-check";
    }
  }
  if (!loaded) {
    snprintf(blas.info, sizeof blas.info, "none (ember's C GEMM; install libopenblas0 for speed)");
    return;
  }
  char version[64] = "BLAS";
  if (blas.config) { /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." */
    const char *c = blas.config();
    const char *sp = strchr(c, ' ');
    sp = sp ? strchr(sp + 1, ' ') : NULL;
    size_t len = sp ? (size_t)(sp - c) : strlen(c);
    if (len >= sizeof version) len = sizeof version - 1;
    memcpy(version, c, len);
    version[len] = '\0';
  }
  snprintf(blas.info, sizeof blas.info, "%s (%s kernels, %s; self-check passed)", version,
           blas.corename ? blas.corename() : "unknown", how);
  if (blas.set_threads) blas.set_threads(em_get_num_threads());
  atomic_store(&threads_applied, em_get_num_threads());
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_bool loaded;
static void blas_init_once(void) {
  blas_init();
  atomic_store(&loaded, true);
}

/* OpenBLAS's thread count, applied lazily: the count last asked for and
 * the one OpenBLAS has. A forked process (a DataLoader worker) that asks
 * for one thread must not call openblas_set_num_threads at once: after a
 * fork OpenBLAS's server is down, and that call starts it with the
 * parent's thread count, whose idle threads then spin (sched_yield) for
 * ~0.1 s against the processes doing the work. So the count is handed to
 * OpenBLAS before the next GEMM instead: never, in a process that does
 * none. */
static inline void ensure(void) {
  pthread_once(&once, blas_init_once);
  int want = atomic_load_explicit(&threads_wanted, memory_order_relaxed);
  if (want > 0 && want != atomic_load_explicit(&threads_applied, memory_order_relaxed)) {
    atomic_store(&threads_applied, want);
    if (blas.set_threads) blas.set_threads(want);
  }
}

/* ensure() and the GEMM after it run under use_lock (see fork_prepare). */
static inline void use_begin(void) {
  pthread_once(&use_lock_once, use_lock_init);
  pthread_rwlock_rdlock(&use_lock);
  ensure();
}

static inline void use_end(void) { pthread_rwlock_unlock(&use_lock); }

const char *em_blas_info(void) {
  use_begin();
  use_end();
  return blas.info;
}

/* Applied before the next GEMM (see ensure); blas_init also picks the
 * count up when the first GEMM loads BLAS (loading and self-checking costs
 * ~100 ms, which processes that never multiply matrices should not pay). */
void em__blas_set_num_threads(int n) { atomic_store(&threads_wanted, n); }

static bool fits_int(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  return m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && lda <= INT32_MAX &&
         ldb <= INT32_MAX && ldc <= INT32_MAX;
}

void em__sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
               int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  use_begin();
  if (blas.sgemm && fits_int(m, n, k, lda, ldb, ldc))
    blas.sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, (int)m, (int)n, (int)k,
               alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
  else
    fallback_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  use_end();
}

void em__dgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
               int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  use_begin();
  if (blas.dgemm && fits_int(m, n, k, lda, ldb, ldc))
    blas.dgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, (int)m, (int)n, (int)k,
               alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
  else
    fallback_dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  use_end();
}

/* ---- configuration -------------------------------------------------------------------- */

const char *em_version(void) { return EMBER_VERSION_STRING; }

/* CUDA support reports itself through this hook when built. */
const char *(*em__cuda_info_hook)(void) = NULL;

const char *em_config_string(void) {
  static __thread char buf[1024];
  snprintf(buf, sizeof buf,
           "ember %s\n"
           "  BLAS: %s\n"
           "  CPU threads: %d (em_set_num_threads / EMBER_NUM_THREADS)\n"
           "  CUDA: %s\n",
           em_version(), em_blas_info(), em_get_num_threads(),
           em__cuda_info_hook ? em__cuda_info_hook() : "not available in this build");
  return buf;
}
