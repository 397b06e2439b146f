/* A cache of large freed CPU blocks. glibc hands blocks above its mmap
 * threshold (at most 32 MiB) back to the kernel on free, so a training
 * loop that allocates the same big activations every step page-faults
 * them in every step. Freed blocks >= EM_CPU_CACHE_MIN wait here (up to
 * EMBER_CPU_CACHE_MB in total, default 1024) for a request of a similar
 * size (best fit, at most 25% larger). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "core/core_impl.h"

#define SLOTS 64
#define ROUND ((size_t)64 << 10) /* sizes are rounded up to 64 KiB */

typedef struct blk {
  void *p;
  size_t n;
  uint64_t stamp; /* for evicting the least recently freed */
} blk;

static struct {
  pthread_mutex_t mu;
  blk b[SLOTS];
  int n;
  size_t bytes, limit;
  uint64_t clock;
} cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void lock(void) { pthread_mutex_lock(&cache.mu); }
static void unlock(void) { pthread_mutex_unlock(&cache.mu); }

static void init(void) {
  const char *e = getenv("EMBER_CPU_CACHE_MB");
  long mb = e && *e ? atol(e) : 1024;
  cache.limit = mb > 0 ? (size_t)mb << 20 : 0;
  /* a fork while another thread holds the lock must not leave it held */
  pthread_atfork(lock, unlock, unlock);
}

static size_t rounded(size_t n) { return (n + ROUND - 1) / ROUND * ROUND; }

void *em__cpu_cache_alloc(size_t nbytes) {
  pthread_once(&once, init);
  size_t n = rounded(nbytes ? nbytes : 1);
  if (n < nbytes) return NULL; /* overflow */
  lock();
  int best = -1;
  for (int i = 0; i < cache.n; i++)
    if (cache.b[i].n >= n && cache.b[i].n - n <= n / 4 && (best < 0 || cache.b[i].n < cache.b[best].n))
      best = i;
  if (best >= 0) {
    void *p = cache.b[best].p;
    cache.bytes -= cache.b[best].n;
    cache.b[best] = cache.b[--cache.n];
    unlock();
    return p;
  }
  unlock();
  void *p = NULL;
  if (posix_memalign(&p, 4096, n) != 0) return NULL;
  madvise(p, n, MADV_HUGEPAGE); /* fewer faults on first touch where THP is "madvise" */
  return p;
}

void em__cpu_cache_free(void *p, size_t nbytes) {
  if (!p) return;
  pthread_once(&once, init);
  size_t n = rounded(nbytes ? nbytes : 1);
  void *evict[SLOTS];
  int nevict = 0;
  lock();
  if (n > cache.limit) {
    unlock();
    free(p);
    return;
  }
  while (cache.n > 0 && (cache.n == SLOTS || cache.bytes + n > cache.limit)) {
    int old = 0;
    for (int i = 1; i < cache.n; i++)
      if (cache.b[i].stamp < cache.b[old].stamp) old = i;
    evict[nevict++] = cache.b[old].p;
    cache.bytes -= cache.b[old].n;
    cache.b[old] = cache.b[--cache.n];
  }
  cache.b[cache.n++] = (blk){p, n, ++cache.clock};
  cache.bytes += n;
  unlock();
  for (int i = 0; i < nevict; i++) free(evict[i]);
}

void em_cpu_empty_cache(void) {
  pthread_once(&once, init);
  void *all[SLOTS];
  int n;
  lock();
  n = cache.n;
  for (int i = 0; i < n; i++) all[i] = cache.b[i].p;
  cache.n = 0;
  cache.bytes = 0;
  unlock();
  for (int i = 0; i < n; i++) free(all[i]);
}

size_t em_cpu_cache_bytes(void) {
  lock();
  size_t b = cache.bytes;
  unlock();
  return b;
}
