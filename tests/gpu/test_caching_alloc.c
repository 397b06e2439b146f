/* The caching allocator's logic over a fake device (host memory with a
 * capacity, fake streams whose queued work the test completes by hand):
 * rounding, pools, splitting, best fit, coalescing, per-stream reuse,
 * record_stream, stats, empty_cache, out-of-memory recovery and message,
 * threads. Runs on every machine (no CUDA needed). */
#include <pthread.h>

#include "core/core_impl.h"
#include "core/cuda/caching_alloc.h"
#include "tests/harness.h"

#define MiB ((size_t)1 << 20)

/* ---- the fake device ------------------------------------------------------------ */

typedef struct fake_stream {
  int queued; /* work items enqueued so far */
  int done;   /* of which finished */
} fake_stream;

typedef struct fake_event {
  fake_stream *s;
  int upto;
} fake_event;

typedef struct fake_dev {
  size_t capacity, used;
  int allocs, frees, events_live;
  int events_left; /* > 0: event_record fails after this many more */
  int stream_syncs;
  pthread_mutex_t mu;
  struct {
    void *p;
    size_t n;
  } live[256];
  int nlive;
} fake_dev;

static int fake_alloc(void *ctx, int device, size_t size, void **ptr) {
  fake_dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  int rc = 1;
  if (d->used + size <= d->capacity && d->nlive < 256) {
    /* 512-byte aligned like cudaMalloc's (256) */
    void *p = NULL;
    if (posix_memalign(&p, 512, size) == 0) {
      d->live[d->nlive].p = p;
      d->live[d->nlive].n = size;
      d->nlive++;
      d->used += size;
      d->allocs++;
      *ptr = p;
      rc = 0;
    }
  }
  pthread_mutex_unlock(&d->mu);
  return rc;
}

static void fake_free(void *ctx, int device, void *ptr) {
  fake_dev *d = ctx;
  pthread_mutex_lock(&d->mu);
  for (int i = 0; i < d->nlive; i++)
    if (d->live[i].p == ptr) {
      d->used -= d->live[i].n;
      d->live[i] = d->live[--d->nlive];
      d->frees++;
      free(ptr);
      break;
    }
  pthread_mutex_unlock(&d->mu);
}

static void *fake_event_record(void *ctx, int device, void *stream) {
  fake_dev *d = ctx;
  if (d->events_left > 0 && --d->events_left == 0) {
    d->events_left = 1; /* keeps failing */
    return NULL;
  }
  fake_event *e = malloc(sizeof *e);
  if (!e) return NULL;
  e->s = stream;
  e->upto = e->s->queued;
  d->events_live++;
  return e;
}
static bool fake_event_query(void *ctx, void *ev) {
  fake_event *e = ev;
  return e->s->done >= e->upto;
}
static void fake_event_sync(void *ctx, void *ev) {
  fake_event *e = ev;
  if (e->s->done < e->upto) e->s->done = e->upto; /* "waits": the work finishes */
}
static void fake_event_destroy(void *ctx, void *ev) {
  fake_dev *d = ctx;
  d->events_live--;
  free(ev);
}
static void fake_stream_sync(void *ctx, int device, void *stream) {
  fake_dev *d = ctx;
  fake_stream *s = stream;
  s->done = s->queued;
  d->stream_syncs++;
}

typedef struct fixture {
  fake_dev dev;
  em__calloc *a;
} fixture;

static void fixture_init(fixture *f, size_t capacity) {
  memset(&f->dev, 0, sizeof f->dev);
  f->dev.capacity = capacity;
  pthread_mutex_init(&f->dev.mu, NULL);
  em__dev_backend be = {.ctx = &f->dev,
                        .name = "fake",
                        .raw_alloc = fake_alloc,
                        .raw_free = fake_free,
                        .event_record = fake_event_record,
                        .event_query = fake_event_query,
                        .event_sync = fake_event_sync,
                        .event_destroy = fake_event_destroy,
                        .stream_sync = fake_stream_sync};
  f->a = em__calloc_create(&be, 0);
}

/* Destroys the allocator; the fake device must then be empty. */
static int fixture_done(fixture *f) {
  em__calloc_destroy(f->a);
  int ok = f->dev.used == 0 && f->dev.nlive == 0 && f->dev.events_live == 0;
  if (!ok)
    fprintf(stderr, "  fake device not empty: %zu bytes in %d segments, %d events\n", f->dev.used,
            f->dev.nlive, f->dev.events_live);
  pthread_mutex_destroy(&f->dev.mu);
  return ok;
}

static em_cuda_memory_stats stats(fixture *f) {
  em_cuda_memory_stats s;
  em__calloc_stats(f->a, &s);
  return s;
}

static fake_stream s1, s2;

#define ALLOC(f, var, n, stream) \
  em__cblock *var = NULL;        \
  ASSERT_OK(em__calloc_malloc((f)->a, (n), (stream), &var))

/* ---- tests -------------------------------------------------------------------------- */

EM_TEST(rounding_and_small_pool) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ASSERT_NOTNULL(f.a);
  ALLOC(&f, a, 1, &s1);
  ASSERT_EQ(a->size, 512);
  ASSERT_EQ(a->requested, 1);
  ALLOC(&f, b, 513, &s1);
  ASSERT_EQ(b->size, 1024);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.allocated, 1536);
  ASSERT_EQ(s.requested, 514);
  ASSERT_EQ(s.reserved, 2 * MiB); /* one small segment */
  ASSERT_EQ(s.num_device_allocs, 1);
  ASSERT_EQ(f.dev.allocs, 1);
  /* carved from the same segment, back to back */
  ASSERT_TRUE((char *)b->ptr == (char *)a->ptr + 512);
  em__cblock *z = (em__cblock *)1;
  ASSERT_OK(em__calloc_malloc(f.a, 0, &s1, &z));
  ASSERT_TRUE(z == NULL);
  em__calloc_free(f.a, a);
  em__calloc_free(f.a, b);
  em__calloc_free(f.a, NULL);
  s = stats(&f);
  ASSERT_EQ(s.allocated, 0);
  ASSERT_EQ(s.requested, 0);
  ASSERT_EQ(s.reserved, 2 * MiB); /* cached, not returned */
  ASSERT_EQ(f.dev.frees, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(reuse_after_free) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 1000, &s1);
  ALLOC(&f, b, 2000, &s1);
  void *pa = a->ptr;
  em__calloc_free(f.a, a);
  ALLOC(&f, c, 700, &s1); /* 1024 again: takes a's place */
  ASSERT_TRUE(c->ptr == pa);
  ASSERT_EQ(f.dev.allocs, 1);
  em__calloc_free(f.a, b);
  em__calloc_free(f.a, c);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(best_fit_prefers_the_smallest_block) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, big, 4096, &s1);
  ALLOC(&f, sep1, 512, &s1);
  ALLOC(&f, small, 1024, &s1);
  ALLOC(&f, sep2, 512, &s1);
  void *psmall = small->ptr, *pbig = big->ptr;
  em__calloc_free(f.a, big);
  em__calloc_free(f.a, small);
  ALLOC(&f, x, 1024, &s1);
  ASSERT_TRUE(x->ptr == psmall);
  ALLOC(&f, y, 3000, &s1); /* 3072 of the 4096 hole, split */
  ASSERT_TRUE(y->ptr == pbig);
  ASSERT_EQ(y->size, 3072);
  ALLOC(&f, z, 1024, &s1); /* the 1024 left of the hole */
  ASSERT_TRUE((char *)z->ptr == (char *)pbig + 3072);
  ASSERT_EQ(f.dev.allocs, 1);
  em__calloc_free(f.a, x);
  em__calloc_free(f.a, y);
  em__calloc_free(f.a, z);
  em__calloc_free(f.a, sep1);
  em__calloc_free(f.a, sep2);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(coalescing_rebuilds_the_segment) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 1024, &s1);
  ALLOC(&f, b, 2048, &s1);
  ALLOC(&f, c, 4096, &s1);
  void *base = a->ptr;
  /* free the outer ones first: b's free must merge with both sides */
  em__calloc_free(f.a, a);
  em__calloc_free(f.a, c);
  em__calloc_free(f.a, b);
  /* one free block covering the whole segment: a full-segment request
   * fits at its start without a new device allocation */
  ALLOC(&f, whole, EM__CALLOC_SMALL_SIZE, &s1);
  ASSERT_TRUE(whole->ptr == base);
  ASSERT_EQ(f.dev.allocs, 1);
  em__calloc_free(f.a, whole);
  em__calloc_empty_cache(f.a);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.reserved, 0);
  ASSERT_EQ(s.num_segments, 0);
  ASSERT_EQ(s.num_device_frees, 1);
  ASSERT_EQ(f.dev.used, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(empty_cache_keeps_segments_in_use) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 1024, &s1);
  ALLOC(&f, b, 1024, &s1);
  em__calloc_free(f.a, a);
  em__calloc_empty_cache(f.a); /* b still lives in the segment */
  ASSERT_EQ(stats(&f).reserved, 2 * MiB);
  ASSERT_EQ(f.dev.frees, 0);
  em__calloc_free(f.a, b);
  em__calloc_empty_cache(f.a);
  ASSERT_EQ(stats(&f).reserved, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(large_pool_segments_and_split_rule) {
  fixture f;
  fixture_init(&f, 256 * MiB);
  ALLOC(&f, a, 2 * MiB, &s1); /* under 10 MiB: a 20 MiB segment, split */
  ASSERT_EQ(a->size, 2 * MiB);
  ASSERT_EQ(stats(&f).reserved, 20 * MiB);
  ALLOC(&f, b, 3 * MiB, &s1); /* from the remaining 18 MiB */
  ASSERT_TRUE((char *)b->ptr == (char *)a->ptr + 2 * MiB);
  ASSERT_EQ(f.dev.allocs, 1);
  /* 19.5 MiB: rounded to a 20 MiB segment; the 0.5 MiB rest is not split
   * off (large-pool remainders must exceed 1 MiB) */
  ALLOC(&f, c, 19 * MiB + MiB / 2, &s1);
  ASSERT_EQ(c->size, 20 * MiB);
  ASSERT_EQ(stats(&f).reserved, 40 * MiB);
  /* small requests never come from the large pool */
  ALLOC(&f, d, 4096, &s1);
  ASSERT_EQ(stats(&f).reserved, 42 * MiB);
  em__calloc_free(f.a, a);
  em__calloc_free(f.a, b);
  em__calloc_free(f.a, c);
  em__calloc_free(f.a, d);
  ASSERT_EQ(stats(&f).allocated, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(blocks_are_reused_only_on_their_stream) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 4096, &s1);
  void *pa = a->ptr;
  em__calloc_free(f.a, a);
  ALLOC(&f, b, 4096, &s2); /* s1's cached block is not handed to s2 */
  ASSERT_TRUE(b->ptr != pa);
  ASSERT_EQ(f.dev.allocs, 2);
  ALLOC(&f, c, 4096, &s1); /* but to s1 again */
  ASSERT_TRUE(c->ptr == pa);
  ASSERT_TRUE(c->stream == (void *)&s1);
  em__calloc_free(f.a, b);
  em__calloc_free(f.a, c);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(record_stream_delays_reuse_until_the_other_stream_is_done) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  s1 = (fake_stream){0, 0};
  s2 = (fake_stream){0, 0};
  ALLOC(&f, a, 4096, &s1);
  void *pa = a->ptr;
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s2));
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s2)); /* once is enough */
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s1)); /* its own stream: no-op */
  s2.queued++; /* a kernel on s2 still reads a */
  em__calloc_free(f.a, a);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.num_pending_frees, 1);
  ASSERT_EQ(s.allocated, 0);
  ASSERT_EQ(f.dev.events_live, 1);
  ALLOC(&f, b, 4096, &s1); /* a is not reusable yet */
  ASSERT_TRUE(b->ptr != pa);
  s2.done = s2.queued; /* s2's kernel finished */
  ALLOC(&f, c, 4096, &s1);
  ASSERT_TRUE(c->ptr == pa);
  ASSERT_EQ(stats(&f).num_pending_frees, 0);
  ASSERT_EQ(f.dev.events_live, 0);
  em__calloc_free(f.a, b);
  em__calloc_free(f.a, c);
  ASSERT_TRUE(fixture_done(&f));
}

/* When no event can be recorded for a stream that used the block, the
 * free waits for that stream (and for the events it did record) before
 * the block can be reused: never reused while a kernel still reads it. */
EM_TEST(record_stream_without_events_waits_for_the_streams) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  s1 = (fake_stream){0, 0};
  s2 = (fake_stream){0, 0};
  fake_stream s3 = {0, 0};
  ALLOC(&f, a, 4096, &s1);
  void *pa = a->ptr;
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s2));
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s3));
  s2.queued++, s3.queued++; /* kernels on s2 and s3 still read a */
  f.dev.events_left = 2;    /* s2's event is recorded, s3's fails */
  em__calloc_free(f.a, a);
  ASSERT_EQ(f.dev.stream_syncs, 1);
  ASSERT_EQ(s3.done, s3.queued); /* waited for s3 */
  ASSERT_EQ(s2.done, s2.queued); /* and for s2's event */
  f.dev.events_left = 0;
  ALLOC(&f, b, 4096, &s1); /* safe to reuse now */
  ASSERT_TRUE(b->ptr == pa);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.num_pending_frees, 0);
  ASSERT_EQ(f.dev.events_live, 0);
  em__calloc_free(f.a, b);
  /* no event at all */
  ALLOC(&f, c, 4096, &s1);
  ASSERT_OK(em__calloc_record_stream(f.a, c, &s2));
  s2.queued++;
  f.dev.events_left = 1;
  em__calloc_free(f.a, c);
  ASSERT_EQ(f.dev.stream_syncs, 2);
  ASSERT_EQ(s2.done, s2.queued);
  f.dev.events_left = 0;
  ALLOC(&f, d, 4096, &s1);
  ASSERT_TRUE(d->ptr == pa);
  em__calloc_free(f.a, d);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(empty_cache_waits_for_pending_frees) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  s1 = (fake_stream){0, 0};
  s2 = (fake_stream){0, 0};
  ALLOC(&f, a, 4096, &s1);
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s2));
  s2.queued++;
  em__calloc_free(f.a, a);
  em__calloc_empty_cache(f.a);
  ASSERT_EQ(s2.done, s2.queued); /* it waited */
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.reserved, 0);
  ASSERT_EQ(s.num_pending_frees, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(stats_track_peaks) {
  fixture f;
  fixture_init(&f, 256 * MiB);
  ALLOC(&f, a, 30 * MiB, &s1);
  ALLOC(&f, b, 12 * MiB, &s1);
  em__calloc_free(f.a, a);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.allocated, 12 * MiB);
  ASSERT_EQ(s.peak_allocated, 42 * MiB);
  ASSERT_EQ(s.reserved, 42 * MiB);
  ASSERT_EQ(s.peak_reserved, 42 * MiB);
  ASSERT_EQ(s.num_allocs, 2);
  em__calloc_reset_peak(f.a);
  s = stats(&f);
  ASSERT_EQ(s.peak_allocated, 12 * MiB);
  em__calloc_free(f.a, b);
  em__calloc_empty_cache(f.a);
  s = stats(&f);
  ASSERT_EQ(s.reserved, 0);
  ASSERT_EQ(s.peak_reserved, 42 * MiB); /* peaks stay until reset */
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(out_of_memory_frees_the_cache_and_retries) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 40 * MiB, &s1);
  em__calloc_free(f.a, a); /* 40 MiB cached */
  ALLOC(&f, b, 50 * MiB, &s1); /* 40 + 50 > 64: the cache is released */
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.reserved, 50 * MiB);
  ASSERT_EQ(s.num_device_frees, 1);
  ASSERT_EQ(s.num_ooms, 0);
  em__calloc_free(f.a, b);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(out_of_memory_waits_for_pending_frees) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  s1 = (fake_stream){0, 0};
  s2 = (fake_stream){0, 0};
  ALLOC(&f, a, 40 * MiB, &s1);
  ASSERT_OK(em__calloc_record_stream(f.a, a, &s2));
  s2.queued++;
  void *pa = a->ptr;
  em__calloc_free(f.a, a);
  ALLOC(&f, b, 40 * MiB, &s1); /* only fits once s2 is done with a */
  ASSERT_TRUE(b->ptr == pa);
  ASSERT_EQ(s2.done, s2.queued);
  em__calloc_free(f.a, b);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST(out_of_memory_message) {
  fixture f;
  fixture_init(&f, 64 * MiB);
  ALLOC(&f, a, 30 * MiB, &s1);
  em__cblock *b = (em__cblock *)1;
  ASSERT_ERR(em__calloc_malloc(f.a, 40 * MiB, &s1, &b), EM_ERR_NOMEM,
             "fake out of memory on device 0: tried to allocate 40.00 MiB (41943040 bytes "
             "requested); 30.00 MiB (31457280 bytes) allocated and 30.00 MiB (31457280 bytes) "
             "reserved");
  ASSERT_TRUE(b == NULL);
  ASSERT_EQ(stats(&f).num_ooms, 1);
  ASSERT_ERR(em__calloc_malloc(f.a, SIZE_MAX - 10, &s1, &b), EM_ERR_NOMEM,
             "tried to allocate");
  /* the allocator still works after failing */
  ALLOC(&f, c, 1 * MiB, &s1);
  em__calloc_free(f.a, a);
  em__calloc_free(f.a, c);
  ASSERT_TRUE(fixture_done(&f));
}

/* ---- threads ----------------------------------------------------------------------------- */

typedef struct thread_arg {
  em__calloc *a;
  fake_stream *s;
  int failures;
} thread_arg;

static void *churn(void *p) {
  thread_arg *t = p;
  em__cblock *held[16] = {0};
  unsigned seed = (unsigned)(uintptr_t)t->s;
  for (int i = 0; i < 2000; i++) {
    int k = (int)(rand_r(&seed) % 16);
    if (held[k]) {
      /* the memory must still be ours: check the pattern written */
      if (*(unsigned char *)held[k]->ptr != (unsigned char)k) t->failures++;
      em__calloc_free(t->a, held[k]);
      held[k] = NULL;
    } else {
      size_t n = 1 + (size_t)(rand_r(&seed) % (3 * MiB));
      if (em__calloc_malloc(t->a, n, t->s, &held[k]) != EM_OK) {
        t->failures++;
        continue;
      }
      memset(held[k]->ptr, k, n < 64 ? n : 64);
    }
  }
  for (int k = 0; k < 16; k++) em__calloc_free(t->a, held[k]);
  return NULL;
}

EM_TEST(threads_share_an_allocator) {
  fixture f;
  fixture_init(&f, (size_t)2 << 30);
  fake_stream streams[4];
  thread_arg args[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    streams[i] = (fake_stream){0, 0};
    /* two threads per stream: blocks move between threads of a stream */
    args[i] = (thread_arg){f.a, &streams[i / 2], 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, churn, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 4; i++) ASSERT_EQ(args[i].failures, 0);
  em_cuda_memory_stats s = stats(&f);
  ASSERT_EQ(s.allocated, 0);
  ASSERT_EQ(s.requested, 0);
  em__calloc_empty_cache(f.a);
  ASSERT_EQ(stats(&f).reserved, 0);
  ASSERT_TRUE(fixture_done(&f));
}

EM_TEST_MAIN()
