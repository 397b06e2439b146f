/* A small thread pool for kernels: em__parallel_for splits [0, n) into
 * chunks run by the caller and up to num_threads - 1 workers.
 *
 * Why not OpenMP: libgomp's pool does not survive fork() (dataloader
 * workers fork) and spins against OpenBLAS's own threads. Workers here spin
 * briefly for back-to-back ops, then sleep on a condition variable. Jobs
 * from different caller threads do not queue: a caller that finds the pool
 * busy runs its job inline. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/core_impl.h"

/* Polling before sleeping: long enough to catch back-to-back kernels,
 * short enough not to fight OpenBLAS's threads (which spin themselves)
 * when a GEMM follows a parallel region (~20-50 us). */
#define SPIN_ITERS 1000

typedef struct job {
  em_range_fn fn;
  void *ctx;
  int64_t n, chunk;
  int64_t nchunks;
  atomic_llong next;  /* next chunk to take */
  atomic_llong done;  /* chunks finished */
} job;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake, finished;
  pthread_mutex_t busy; /* held by the thread whose job runs */
  atomic_ullong gen;    /* bumped for each job */
  job *current;         /* NULL between jobs */
  int active;           /* workers inside the current job */
  int started;          /* worker threads running */
  int wanted;           /* configured thread count (caller included) */
  bool initialised;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, NULL, 0, 0, 0, false};

static __thread bool in_region;
static atomic_bool interrupt_flag;

void em_request_interrupt(void) { atomic_store_explicit(&interrupt_flag, true, memory_order_relaxed); }
void em_clear_interrupt(void) { atomic_store_explicit(&interrupt_flag, false, memory_order_relaxed); }
bool em_interrupt_requested(void) {
  return atomic_load_explicit(&interrupt_flag, memory_order_relaxed);
}

bool em__in_parallel_region(void) { return in_region; }

static void run_chunks(job *j) {
  int64_t c;
  while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks) {
    int64_t b = c * j->chunk, e = b + j->chunk;
    if (e > j->n) e = j->n;
    j->fn(j->ctx, b, e);
    atomic_fetch_add_explicit(&j->done, 1, memory_order_acq_rel);
  }
}

static void *worker_main(void *arg) {
  (void)arg;
  in_region = true;
  unsigned long long seen = atomic_load(&pool.gen);
  for (;;) {
    for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&pool.gen, memory_order_acquire) == seen;
         i++)
      em__cpu_relax();
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.gen) == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = atomic_load(&pool.gen);
    job *j = pool.current;
    if (!j) { /* woke after that job had already finished */
      pthread_mutex_unlock(&pool.mu);
      continue;
    }
    pool.active++;
    pthread_mutex_unlock(&pool.mu);
    run_chunks(j);
    pthread_mutex_lock(&pool.mu);
    if (--pool.active == 0) pthread_cond_signal(&pool.finished);
    pthread_mutex_unlock(&pool.mu);
  }
  return NULL;
}

static int default_threads(void) {
  const char *e = getenv("EMBER_NUM_THREADS");
  if (!e || !*e) e = getenv("OMP_NUM_THREADS");
  if (e && *e) {
    int n = atoi(e);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static void atfork_prepare(void) {
  pthread_mutex_lock(&pool.busy);
  pthread_mutex_lock(&pool.mu);
}
static void atfork_parent(void) {
  pthread_mutex_unlock(&pool.mu);
  pthread_mutex_unlock(&pool.busy);
}
static void atfork_child(void) {
  /* Only the forking thread exists in the child: start workers afresh.
   * The condition variables are made anew too: the parent's sleeping
   * workers are still counted as waiters in their copies, and glibc's
   * broadcast waits for waiters that no longer exist to leave (a hang on
   * the child's first parallel op, seen as a flaky DDP test). */
  pool.started = 0;
  pool.active = 0;
  pool.current = NULL;
  pthread_cond_init(&pool.wake, NULL);
  pthread_cond_init(&pool.finished, NULL);
  pthread_mutex_init(&pool.mu, NULL);
  pthread_mutex_init(&pool.busy, NULL);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void pool_init(void) {
  pool.wanted = default_threads();
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  pool.initialised = true;
}

/* Starts workers up to wanted - 1; called with pool.mu held. */
static void ensure_workers(void) {
  while (pool.started < pool.wanted - 1) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, worker_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) break; /* run with fewer threads */
    pool.started++;
  }
}

void em_set_num_threads(int n) {
  pthread_once(&init_once, pool_init);
  if (n < 1) n = 1;
  pthread_mutex_lock(&pool.mu);
  pool.wanted = n; /* extra idle workers beyond n simply never get chunks */
  pthread_mutex_unlock(&pool.mu);
  em__blas_set_num_threads(n);
}

int em_get_num_threads(void) {
  pthread_once(&init_once, pool_init);
  return pool.wanted;
}

void em__parallel_for(int64_t n, int64_t grain, em_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  pthread_once(&init_once, pool_init);
  int nt = pool.wanted;
  if (nt <= 1 || n <= grain || in_region || pthread_mutex_trylock(&pool.busy) != 0) {
    fn(ctx, 0, n);
    return;
  }
  int64_t nchunks = (n + grain - 1) / grain;
  if (nchunks > nt) nchunks = nt;
  job j = {.fn = fn, .ctx = ctx, .n = n, .chunk = (n + nchunks - 1) / nchunks};
  j.nchunks = (n + j.chunk - 1) / j.chunk;
  atomic_init(&j.next, 0);
  atomic_init(&j.done, 0);

  pthread_mutex_lock(&pool.mu);
  ensure_workers();
  pool.current = &j;
  atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);

  in_region = true;
  run_chunks(&j);
  in_region = false;

  for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&j.done, memory_order_acquire) < j.nchunks;
       i++)
    em__cpu_relax();
  pthread_mutex_lock(&pool.mu);
  /* Once current is NULL no new worker enters; wait for those inside. */
  pool.current = NULL;
  while (pool.active > 0) pthread_cond_wait(&pool.finished, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
  assert(atomic_load(&j.done) == j.nchunks);
  pthread_mutex_unlock(&pool.busy);
}
