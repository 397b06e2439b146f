/* The caching allocator (see core/cuda/caching_alloc.h for the scheme).
 * Plain C over em__dev_backend: no CUDA here. */
#include "core/cuda/caching_alloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_impl.h"

#define NBINS 64 /* size class = floor(log2(size)) */

typedef struct pending {
  void *event;
  em__cblock *block;
} pending;

struct em__calloc {
  em__dev_backend be;
  int device;
  pthread_mutex_t mu;
  em__cblock *bins[2][NBINS]; /* free blocks per pool and size class */
  pending *pend;              /* frees waiting for other streams' events */
  int npend, cappend;
  em_cuda_memory_stats st;
};

/* ---- sizes ------------------------------------------------------------------------- */

static bool round_size(size_t size, size_t *out) {
  if (size < EM__CALLOC_MIN_BLOCK) {
    *out = EM__CALLOC_MIN_BLOCK;
    return true;
  }
  if (size > SIZE_MAX - EM__CALLOC_MIN_BLOCK) return false;
  *out = (size + EM__CALLOC_MIN_BLOCK - 1) / EM__CALLOC_MIN_BLOCK * EM__CALLOC_MIN_BLOCK;
  return true;
}

/* Bytes of the segment to request from the device for a rounded size. */
static bool segment_size(size_t size, size_t *out) {
  if (size <= EM__CALLOC_SMALL_SIZE) {
    *out = EM__CALLOC_SMALL_SEGMENT;
  } else if (size < EM__CALLOC_MIN_LARGE_ALLOC) {
    *out = EM__CALLOC_LARGE_SEGMENT;
  } else {
    if (size > SIZE_MAX - EM__CALLOC_ROUND_LARGE) return false;
    *out = (size + EM__CALLOC_ROUND_LARGE - 1) / EM__CALLOC_ROUND_LARGE * EM__CALLOC_ROUND_LARGE;
  }
  return true;
}

static int size_class(size_t size) {
  int c = 63 - __builtin_clzll((unsigned long long)size);
  return c < NBINS ? c : NBINS - 1;
}

/* Split off the rest of a free block when it is worth keeping apart. */
static bool should_split(const em__cblock *b, size_t size) {
  size_t rest = b->size - size;
  return b->pool == 0 ? rest >= EM__CALLOC_MIN_BLOCK : rest > EM__CALLOC_SMALL_SIZE;
}

/* "2.00 GiB" */
static const char *human(size_t n, char *buf, size_t size) {
  const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  if (u == 0)
    snprintf(buf, size, "%zu bytes", n);
  else
    snprintf(buf, size, "%.2f %s", v, unit[u]);
  return buf;
}

/* ---- bins ------------------------------------------------------------------------------- */

static void bin_insert(em__calloc *a, em__cblock *b) {
  em__cblock **head = &a->bins[b->pool][size_class(b->size)];
  b->bin_prev = NULL;
  b->bin_next = *head;
  if (*head) (*head)->bin_prev = b;
  *head = b;
  b->in_bin = true;
}

static void bin_remove(em__calloc *a, em__cblock *b) {
  em__cblock **head = &a->bins[b->pool][size_class(b->size)];
  if (b->bin_prev)
    b->bin_prev->bin_next = b->bin_next;
  else
    *head = b->bin_next;
  if (b->bin_next) b->bin_next->bin_prev = b->bin_prev;
  b->bin_prev = b->bin_next = NULL;
  b->in_bin = false;
}

/* The best-fitting free block of stream with at least size bytes: the
 * smallest (then lowest address) in the lowest bin that has one. */
static em__cblock *bin_find(em__calloc *a, int pool, size_t size, void *stream) {
  for (int c = size_class(size); c < NBINS; c++) {
    em__cblock *best = NULL;
    for (em__cblock *b = a->bins[pool][c]; b; b = b->bin_next) {
      if (b->stream != stream || b->size < size) continue;
      if (!best || b->size < best->size ||
          (b->size == best->size && (uintptr_t)b->ptr < (uintptr_t)best->ptr))
        best = b;
    }
    if (best) return best;
  }
  return NULL;
}

/* ---- freeing ---------------------------------------------------------------------------------- */

/* Puts the free block b into its bin, merged with free neighbours. */
static void free_block(em__calloc *a, em__cblock *b) {
  b->allocated = false;
  b->requested = 0;
  b->nuses = 0;
  em__cblock *p = b->prev;
  if (p && p->in_bin) { /* absorb b into p */
    bin_remove(a, p);
    p->size += b->size;
    p->next = b->next;
    if (b->next) b->next->prev = p;
    free(b->uses);
    free(b);
    b = p;
  }
  em__cblock *n = b->next;
  if (n && n->in_bin) { /* absorb n into b */
    bin_remove(a, n);
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    free(n->uses);
    free(n);
  }
  bin_insert(a, b);
}

/* Completes the pending frees whose events have finished (all of them,
 * waiting, when wait is set). */
static void process_events(em__calloc *a, bool wait) {
  int k = 0;
  for (int i = 0; i < a->npend; i++) {
    pending *e = &a->pend[i];
    if (!wait && !a->be.event_query(a->be.ctx, e->event)) {
      a->pend[k++] = *e;
      continue;
    }
    if (wait) a->be.event_sync(a->be.ctx, e->event);
    a->be.event_destroy(a->be.ctx, e->event);
    if (--e->block->pending_events == 0) {
      free_block(a, e->block);
      a->st.num_pending_frees--;
    }
  }
  a->npend = k;
}

/* Returns every segment that is one free block to the device. */
static void release_cached(em__calloc *a) {
  for (int pool = 0; pool < 2; pool++)
    for (int c = 0; c < NBINS; c++) {
      em__cblock *b = a->bins[pool][c];
      while (b) {
        em__cblock *next = b->bin_next;
        if (!b->prev && !b->next) {
          bin_remove(a, b);
          a->be.raw_free(a->be.ctx, a->device, b->ptr);
          a->st.reserved -= b->size;
          a->st.num_segments--;
          a->st.num_device_frees++;
          free(b->uses);
          free(b);
        }
        b = next;
      }
    }
}

/* ---- the API -------------------------------------------------------------------------------------- */

em__calloc *em__calloc_create(const em__dev_backend *be, int device) {
  em__calloc *a = calloc(1, sizeof *a);
  if (!a) return EM_FAIL(EM_ERR_NOMEM, "caching allocator: out of host memory");
  a->be = *be;
  a->device = device;
  pthread_mutex_init(&a->mu, NULL);
  return a;
}

void em__calloc_destroy(em__calloc *a) {
  if (!a) return;
  pthread_mutex_lock(&a->mu);
  process_events(a, true);
  release_cached(a);
  pthread_mutex_unlock(&a->mu);
  pthread_mutex_destroy(&a->mu);
  free(a->pend);
  free(a);
}

/* A new segment of at least size bytes for stream, or NULL when the device
 * has no memory left (after releasing the cache and waiting for pending
 * frees, which may also have produced a fitting free block: *reuse). */
static em__cblock *new_segment(em__calloc *a, int pool, size_t size, void *stream,
                               em__cblock **reuse) {
  size_t seg;
  if (!segment_size(size, &seg)) return NULL;
  void *ptr = NULL;
  int rc = a->be.raw_alloc(a->be.ctx, a->device, seg, &ptr);
  if (rc != 0) {
    release_cached(a);
    rc = a->be.raw_alloc(a->be.ctx, a->device, seg, &ptr);
  }
  if (rc != 0 && a->npend > 0) {
    process_events(a, true);
    if ((*reuse = bin_find(a, pool, size, stream))) return NULL;
    release_cached(a);
    rc = a->be.raw_alloc(a->be.ctx, a->device, seg, &ptr);
  }
  if (rc != 0) return NULL;
  em__cblock *b = calloc(1, sizeof *b);
  if (!b) {
    a->be.raw_free(a->be.ctx, a->device, ptr);
    return NULL;
  }
  b->ptr = ptr;
  b->size = seg;
  b->stream = stream;
  b->pool = pool;
  a->st.reserved += seg;
  a->st.num_segments++;
  a->st.num_device_allocs++;
  if (a->st.reserved > a->st.peak_reserved) a->st.peak_reserved = a->st.reserved;
  return b;
}

em_status em__calloc_malloc(em__calloc *a, size_t request, void *stream, em__cblock **out) {
  *out = NULL;
  if (request == 0) return EM_OK;
  size_t size;
  char h1[32], h2[32], h3[32];
  if (!round_size(request, &size))
    return em__set_error(EM_ERR_NOMEM, "%s out of memory on device %d: tried to allocate %zu bytes",
                         a->be.name, a->device, request);
  int pool = size <= EM__CALLOC_SMALL_SIZE ? 0 : 1;
  pthread_mutex_lock(&a->mu);
  if (a->npend) process_events(a, false);
  em__cblock *b = bin_find(a, pool, size, stream);
  if (b) {
    bin_remove(a, b);
  } else {
    em__cblock *reuse = NULL;
    b = new_segment(a, pool, size, stream, &reuse);
    if (reuse) {
      b = reuse;
      bin_remove(a, b);
    }
  }
  if (!b) {
    a->st.num_ooms++;
    em_cuda_memory_stats st = a->st;
    pthread_mutex_unlock(&a->mu);
    return em__set_error(EM_ERR_NOMEM,
                         "%s out of memory on device %d: tried to allocate %s (%zu bytes "
                         "requested); %s (%zu bytes) allocated and %s (%zu bytes) reserved by "
                         "ember's caching allocator",
                         a->be.name, a->device, human(request, h1, sizeof h1), request,
                         human(st.allocated, h2, sizeof h2), st.allocated,
                         human(st.reserved, h3, sizeof h3), st.reserved);
  }
  if (should_split(b, size)) {
    em__cblock *rest = calloc(1, sizeof *rest);
    if (rest) { /* without it the whole block is handed out: still correct */
      rest->ptr = (char *)b->ptr + size;
      rest->size = b->size - size;
      rest->stream = b->stream;
      rest->pool = b->pool;
      rest->prev = b;
      rest->next = b->next;
      if (b->next) b->next->prev = rest;
      b->next = rest;
      b->size = size;
      bin_insert(a, rest);
    }
  }
  b->allocated = true;
  b->owner = a;
  b->requested = request;
  a->st.allocated += b->size;
  a->st.requested += request;
  a->st.num_allocs++;
  if (a->st.allocated > a->st.peak_allocated) a->st.peak_allocated = a->st.allocated;
  pthread_mutex_unlock(&a->mu);
  *out = b;
  return EM_OK;
}

void em__calloc_free(em__calloc *a, em__cblock *b) {
  if (!b) return;
  pthread_mutex_lock(&a->mu);
  assert(b->allocated && !b->in_bin);
  a->st.allocated -= b->size;
  a->st.requested -= b->requested;
  if (b->nuses == 0) {
    free_block(a, b);
    pthread_mutex_unlock(&a->mu);
    return;
  }
  /* used on other streams: reuse only after their work so far is done */
  b->allocated = false;
  bool ok = true;
  int i = 0;
  for (; i < b->nuses && ok; i++) {
    if (a->npend == a->cappend) {
      int cap = a->cappend ? 2 * a->cappend : 16;
      pending *p = realloc(a->pend, (size_t)cap * sizeof *p);
      if (!p) {
        ok = false;
        break;
      }
      a->pend = p;
      a->cappend = cap;
    }
    void *ev = a->be.event_record(a->be.ctx, a->device, b->uses[i]);
    if (!ev) {
      ok = false;
      break;
    }
    a->pend[a->npend++] = (pending){ev, b};
    b->pending_events++;
  }
  bool tracked = b->pending_events > 0;
  if (tracked) a->st.num_pending_frees++;
  if (!ok) {
    /* could not track every other stream: wait for the untracked ones
     * (uses[i..]) and for everything pending (slow but safe). That frees
     * b too when it has events (b may be merged away then: not touched
     * after); else it is freed here. */
    for (int j = i; j < b->nuses; j++) a->be.stream_sync(a->be.ctx, a->device, b->uses[j]);
    b->nuses = 0;
    process_events(a, true);
    if (!tracked) free_block(a, b);
  } else {
    b->nuses = 0;
  }
  pthread_mutex_unlock(&a->mu);
}

em_status em__calloc_record_stream(em__calloc *a, em__cblock *b, void *stream) {
  if (!b || stream == b->stream) return EM_OK;
  pthread_mutex_lock(&a->mu);
  for (int i = 0; i < b->nuses; i++)
    if (b->uses[i] == stream) {
      pthread_mutex_unlock(&a->mu);
      return EM_OK;
    }
  if (b->nuses == b->capuses) {
    int cap = b->capuses ? 2 * b->capuses : 4;
    void **u = realloc(b->uses, (size_t)cap * sizeof *u);
    if (!u) {
      pthread_mutex_unlock(&a->mu);
      return em__set_error(EM_ERR_NOMEM, "record_stream: out of host memory");
    }
    b->uses = u;
    b->capuses = cap;
  }
  b->uses[b->nuses++] = stream;
  pthread_mutex_unlock(&a->mu);
  return EM_OK;
}

void em__calloc_empty_cache(em__calloc *a) {
  pthread_mutex_lock(&a->mu);
  process_events(a, true);
  release_cached(a);
  pthread_mutex_unlock(&a->mu);
}

void em__calloc_stats(em__calloc *a, em_cuda_memory_stats *out) {
  pthread_mutex_lock(&a->mu);
  *out = a->st;
  pthread_mutex_unlock(&a->mu);
}

void em__calloc_reset_peak(em__calloc *a) {
  pthread_mutex_lock(&a->mu);
  a->st.peak_allocated = a->st.allocated;
  a->st.peak_reserved = a->st.reserved;
  pthread_mutex_unlock(&a->mu);
}
