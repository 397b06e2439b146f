/* The caching allocator's logic, independent of CUDA.
 *
 * It runs over a small "device backend" (raw allocate / free, events on
 * streams), so the same code serves the GPU (core/cuda/runtime.c plugs in
 * cudaMalloc, cudaFree and CUDA events) and a fake device in the unit test
 * (tests/gpu/test_caching_alloc.c), which runs on any machine.
 *
 * Scheme (PyTorch's CUDACachingAllocator, simplified):
 *   - Requests are rounded up to 512 bytes. Requests up to 1 MiB come from
 *     the small pool, whose segments (device allocations) are 2 MiB;
 *     larger ones from the large pool: segments of 20 MiB for requests
 *     under 10 MiB, else the request rounded up to 2 MiB.
 *   - Free blocks sit in size-class bins (one per power of two, per pool).
 *     A request takes the best-fitting free block of its stream from the
 *     lowest bin that has one; a block much larger than asked is split and
 *     the remainder goes back to a bin (small pool: remainders of at least
 *     512 bytes; large pool: above 1 MiB, so small requests do not
 *     fragment large segments).
 *   - A freed block merges with its free neighbours in the same segment
 *     (coalescing), so a segment whose blocks are all free is one block
 *     again and can be returned by empty_cache.
 *   - Blocks belong to the stream they were allocated on and are reused
 *     only for that stream: stream order then guarantees that earlier
 *     kernels using the memory finished before the next user's kernels
 *     start. A block used on other streams (record_stream) is not reused
 *     when freed: an event is recorded on each of those streams, and the
 *     block returns to its bin once all those events have completed
 *     (checked at every allocation).
 *   - When the device is out of memory, cached free segments are released
 *     and the allocation retried; then pending frees are waited for and it
 *     is retried again; then it fails with EM_ERR_NOMEM stating the bytes
 *     requested, allocated and reserved.
 * Thread-safe (one mutex per allocator).
 */
#ifndef EMBER_CORE_CUDA_CACHING_ALLOC_H
#define EMBER_CORE_CUDA_CACHING_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cuda/ember_cuda.h"

/* What the allocator needs from a device. Streams and events are opaque
 * pointers (cudaStream_t / cudaEvent_t for CUDA; the NULL stream is a
 * valid stream). */
typedef struct em__dev_backend {
  void *ctx;
  const char *name; /* "cuda", "fake": in messages */
  /* Allocates size bytes on device; 0 and *ptr on success, non-zero when
   * the device is out of memory (no error set). */
  int (*raw_alloc)(void *ctx, int device, size_t size, void **ptr);
  void (*raw_free)(void *ctx, int device, void *ptr);
  /* A new event recorded on stream (NULL on failure). */
  void *(*event_record)(void *ctx, int device, void *stream);
  /* True once the work queued on the stream before the record is done. */
  bool (*event_query)(void *ctx, void *event);
  /* Blocks until it is. */
  void (*event_sync)(void *ctx, void *event);
  void (*event_destroy)(void *ctx, void *event);
  /* Blocks until the work queued on stream is done (when no event could
   * be recorded for it). */
  void (*stream_sync)(void *ctx, int device, void *stream);
} em__dev_backend;

typedef struct em__calloc em__calloc;
typedef struct em__cblock em__cblock;

/* A block handed out: ptr and size (rounded) are valid until freed. */
struct em__cblock {
  void *ptr;
  size_t size;      /* rounded size */
  size_t requested; /* what the caller asked for */
  void *stream;     /* the stream it belongs to */
  /* internal: */
  em__calloc *owner;         /* the allocator it came from */
  int pool;                  /* 0 small, 1 large */
  bool allocated, in_bin;
  int pending_events;        /* events to wait for before reuse */
  em__cblock *prev, *next;   /* neighbours in the segment (address order) */
  em__cblock *bin_prev, *bin_next;
  void **uses;               /* other streams that used it (record_stream) */
  int nuses, capuses;
};

/* A new allocator for device of backend be (copied). NULL on NOMEM. */
em__calloc *em__calloc_create(const em__dev_backend *be, int device);
/* Waits for pending frees and returns every segment to the backend; blocks
 * still allocated are leaked to the backend (their segments are kept). */
void em__calloc_destroy(em__calloc *a);

/* A block of at least size bytes for stream. size 0 gives *out = NULL.
 * EM_ERR_NOMEM: "CUDA out of memory on device 0: tried to allocate ...". */
em_status em__calloc_malloc(em__calloc *a, size_t size, void *stream, em__cblock **out);
/* Returns b (NULL is fine) to the cache. */
void em__calloc_free(em__calloc *a, em__cblock *b);
/* b is also used on stream (see the header comment). */
em_status em__calloc_record_stream(em__calloc *a, em__cblock *b, void *stream);
/* Waits for pending frees, then releases every segment that is entirely
 * free. */
void em__calloc_empty_cache(em__calloc *a);
void em__calloc_stats(em__calloc *a, em_cuda_memory_stats *out);
void em__calloc_reset_peak(em__calloc *a);

/* Rounding rules (exposed for tests). */
#define EM__CALLOC_MIN_BLOCK ((size_t)512)
#define EM__CALLOC_SMALL_SIZE ((size_t)1 << 20)        /* small-pool requests */
#define EM__CALLOC_SMALL_SEGMENT ((size_t)2 << 20)     /* small-pool segments */
#define EM__CALLOC_MIN_LARGE_ALLOC ((size_t)10 << 20)  /* below: 20 MiB segments */
#define EM__CALLOC_LARGE_SEGMENT ((size_t)20 << 20)
#define EM__CALLOC_ROUND_LARGE ((size_t)2 << 20)

#endif
