/* The CUDA runtime side of ember: devices, streams, events, the device
 * backend of the caching allocator, the device and pinned-host
 * em_allocators, copies between devices, memory stats. See
 * core/cuda/cuda_impl.h for the design. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/cuda/cuda_impl.h"

/* ---- errors ---------------------------------------------------------------------------- */

em_status em__cuda_error(cudaError_t err, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  (void)cudaGetLastError(); /* clear a non-sticky error so it is reported once */
  return em__set_error(err == cudaErrorMemoryAllocation ? EM_ERR_NOMEM : EM_ERR_CUDA,
                       "%s: CUDA error: %s (%s)", what, cudaGetErrorString(err),
                       cudaGetErrorName(err));
}

em_status em__cuda_check_launch(cudaError_t err, const char *op) {
  if (err == cudaSuccess) err = cudaGetLastError();
  if (err == cudaSuccess) return EM_OK;
  return em__cuda_error(err, "%s: kernel launch failed", op);
}

/* ---- devices ------------------------------------------------------------------------------ */

/* One per device, created on first use. */
struct em_cuda_stream {
  int device;
  cudaStream_t handle;
  bool is_default;
};

typedef struct cuda_dev {
  pthread_once_t once;
  em_status init_st;
  char init_msg[256];
  em__calloc *alloc;
  em_cuda_stream default_stream;
  em_cuda_stream *_Atomic current;
} cuda_dev;

static struct {
  pthread_once_t once;
  int count;
  char reason[256];
  cuda_dev dev[EM__CUDA_MAX_DEVICES];
} rt = {.once = PTHREAD_ONCE_INIT};

static void rt_init(void) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(rt.reason, sizeof rt.reason, "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    n = 0;
  } else if (n == 0) {
    snprintf(rt.reason, sizeof rt.reason, "no CUDA device found");
  }
  if (n > EM__CUDA_MAX_DEVICES) n = EM__CUDA_MAX_DEVICES;
  rt.count = n;
  for (int i = 0; i < EM__CUDA_MAX_DEVICES; i++) rt.dev[i].once = (pthread_once_t)PTHREAD_ONCE_INIT;
}

em_status em__cuda_init(void) {
  pthread_once(&rt.once, rt_init);
  if (rt.count == 0) return em__set_error(EM_ERR_DEVICE, "CUDA is not available (%s)", rt.reason);
  return EM_OK;
}

bool em_cuda_is_available(void) { return em_cuda_device_count() > 0; }

int em_cuda_device_count(void) {
  pthread_once(&rt.once, rt_init);
  return rt.count;
}

const char *em_cuda_unavailable_reason(void) {
  pthread_once(&rt.once, rt_init);
  return rt.count ? "" : rt.reason;
}

em_status em__cuda_check_device(int device) {
  EM_CHECK(em__cuda_init());
  if (device < 0 || device >= rt.count)
    return em__set_error(EM_ERR_DEVICE, "cuda:%d is not available (%d CUDA device%s)", device,
                         rt.count, rt.count == 1 ? "" : "s");
  return EM_OK;
}

/* The device the thread set last (-1: unknown; cudaSetDevice is cheap but
 * not free, and every launch sets it). */
static __thread int thread_device = -1;
/* The device em_cuda_set_device chose on this thread (-1: none): what "the
 * current device" means. A launch on another device's tensor moves
 * thread_device, not this. */
static __thread int user_device = -1;

em_status em__cuda_set_device(int device) {
  if (EM_LIKELY(device == thread_device && device >= 0)) return EM_OK;
  EM_CHECK(em__cuda_check_device(device));
  EM_CUDA_CHECK(cudaSetDevice(device), "cuda:%d: cudaSetDevice", device);
  thread_device = device;
  return EM_OK;
}

static void dev_init(int device);
static __thread int dev_init_index;
static void dev_init_once(void) { dev_init(dev_init_index); }

/* The (valid) device's state, initialised once. */
static cuda_dev *dev_get(int device) {
  if (em__cuda_check_device(device)) return NULL;
  cuda_dev *d = &rt.dev[device];
  dev_init_index = device; /* pthread_once takes no argument */
  pthread_once(&d->once, dev_init_once);
  if (d->init_st) {
    em__set_error(d->init_st, "%s", d->init_msg);
    return NULL;
  }
  return d;
}

em_status em_cuda_set_device(int device) {
  if (!dev_get(device)) return em_last_status();
  EM_CHECK(em__cuda_set_device(device));
  user_device = device;
  return EM_OK;
}

int em_cuda_current_device(void) {
  if (user_device >= 0) return user_device;
  return em_cuda_device_count() ? 0 : -1;
}

int em__cuda_user_device(void) { return user_device; }
int em__cuda_thread_device(void) { return thread_device; }

static int resolve(int device) { return device < 0 ? em_cuda_current_device() : device; }

em_status em_cuda_device_name(int device, char *buf, size_t size) {
  device = resolve(device);
  EM_CHECK(em__cuda_check_device(device));
  struct cudaDeviceProp p;
  EM_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "device_name(cuda:%d)", device);
  snprintf(buf, size, "%s", p.name);
  return EM_OK;
}

em_status em_cuda_synchronize(int device) {
  device = resolve(device);
  EM_CHECK(em__cuda_set_device(device));
  EM_CUDA_CHECK(cudaDeviceSynchronize(), "synchronize(cuda:%d)", device);
  return EM_OK;
}

/* ---- streams -------------------------------------------------------------------------------- */

cudaStream_t em__cuda_stream(int device) {
  cuda_dev *d = &rt.dev[device];
  em_cuda_stream *s = atomic_load_explicit(&d->current, memory_order_acquire);
  return s ? s->handle : (cudaStream_t)0;
}

int em__cuda_device_of(const void *p) {
  struct cudaPointerAttributes at;
  if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return em_cuda_current_device();
  }
  return at.device;
}

em_status em__cuda_enter(int device, cudaStream_t *s) {
  if (!dev_get(device)) return em_last_status();
  EM_CHECK(em__cuda_set_device(device));
  *s = em__cuda_stream(device);
  return EM_OK;
}

em_cuda_stream *em_cuda_stream_create(int device, int priority) {
  device = resolve(device);
  if (!dev_get(device) || em__cuda_set_device(device)) return NULL;
  em_cuda_stream *s = calloc(1, sizeof *s);
  if (!s) return EM_FAIL(EM_ERR_NOMEM, "stream_create: out of memory");
  int lo = 0, hi = 0;
  if (cudaDeviceGetStreamPriorityRange(&lo, &hi) == cudaSuccess) {
    /* CUDA: lower numbers are higher priorities, as ember's; clamp */
    if (priority < hi) priority = hi;
    if (priority > lo) priority = lo;
  }
  cudaError_t err = cudaStreamCreateWithPriority(&s->handle, cudaStreamNonBlocking, priority);
  if (err != cudaSuccess) {
    free(s);
    em__cuda_error(err, "stream_create(cuda:%d)", device);
    return NULL;
  }
  s->device = device;
  return s;
}

em_status em_cuda_stream_destroy(em_cuda_stream *s) {
  if (!s || s->is_default) return EM_OK;
  if (atomic_load(&rt.dev[s->device].current) == s)
    return em__set_error(EM_ERR_STATE,
                         "stream_destroy: the stream is the current stream of cuda:%d; make "
                         "another stream current first",
                         s->device);
  EM_CHECK(em__cuda_set_device(s->device));
  EM_CUDA_CHECK(cudaStreamSynchronize(s->handle), "stream_destroy");
  EM_CUDA_CHECK(cudaStreamDestroy(s->handle), "stream_destroy");
  free(s);
  return EM_OK;
}

em_cuda_stream *em_cuda_default_stream(int device) {
  device = resolve(device);
  cuda_dev *d = dev_get(device);
  return d ? &d->default_stream : NULL;
}

em_cuda_stream *em_cuda_current_stream(int device) {
  device = resolve(device);
  cuda_dev *d = dev_get(device);
  if (!d) return NULL;
  em_cuda_stream *s = atomic_load(&d->current);
  return s ? s : &d->default_stream;
}

em_status em_cuda_set_current_stream(em_cuda_stream *s) {
  if (!s) return em__set_error(EM_ERR_INVALID, "set_current_stream: stream is NULL");
  cuda_dev *d = dev_get(s->device);
  if (!d) return em_last_status();
  atomic_store(&d->current, s);
  return EM_OK;
}

int em_cuda_stream_device(const em_cuda_stream *s) { return s ? s->device : -1; }

em_status em_cuda_stream_synchronize(em_cuda_stream *s) {
  if (!s) return em__set_error(EM_ERR_INVALID, "stream_synchronize: stream is NULL");
  EM_CHECK(em__cuda_set_device(s->device));
  EM_CUDA_CHECK(cudaStreamSynchronize(s->handle), "stream_synchronize(cuda:%d)", s->device);
  return EM_OK;
}

bool em_cuda_stream_query(em_cuda_stream *s) {
  if (!s || em__cuda_set_device(s->device)) return true;
  cudaError_t err = cudaStreamQuery(s->handle);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return true;
}

void *em_cuda_stream_handle(em_cuda_stream *s) { return s ? (void *)s->handle : NULL; }

/* ---- events ------------------------------------------------------------------------------------ */

struct em_cuda_event {
  cudaEvent_t ev;
  int device; /* -1 until first recorded */
  bool timing;
};

em_cuda_event *em_cuda_event_create(bool enable_timing) {
  if (em__cuda_init()) return NULL;
  em_cuda_event *e = calloc(1, sizeof *e);
  if (!e) return EM_FAIL(EM_ERR_NOMEM, "event_create: out of memory");
  e->device = -1;
  e->timing = enable_timing;
  return e;
}

void em_cuda_event_destroy(em_cuda_event *e) {
  if (!e) return;
  if (e->device >= 0 && em__cuda_set_device(e->device) == EM_OK) cudaEventDestroy(e->ev);
  free(e);
}

em_status em_cuda_event_record(em_cuda_event *e, em_cuda_stream *s) {
  if (!e) return em__set_error(EM_ERR_INVALID, "event_record: event is NULL");
  if (!s) s = em_cuda_current_stream(-1);
  if (!s) return em_last_status();
  if (e->device >= 0 && e->device != s->device)
    return em__set_error(EM_ERR_DEVICE,
                         "event_record: the event belongs to cuda:%d but the stream to cuda:%d",
                         e->device, s->device);
  EM_CHECK(em__cuda_set_device(s->device));
  if (e->device < 0) {
    EM_CUDA_CHECK(cudaEventCreateWithFlags(&e->ev, e->timing ? cudaEventDefault
                                                              : cudaEventDisableTiming),
                  "event_record");
    e->device = s->device;
  }
  EM_CUDA_CHECK(cudaEventRecord(e->ev, s->handle), "event_record");
  return EM_OK;
}

em_status em_cuda_stream_wait_event(em_cuda_stream *s, em_cuda_event *e) {
  if (!e) return em__set_error(EM_ERR_INVALID, "stream_wait_event: event is NULL");
  if (!s) s = em_cuda_current_stream(-1);
  if (!s) return em_last_status();
  if (e->device < 0) return EM_OK; /* never recorded: nothing to wait for */
  EM_CHECK(em__cuda_set_device(s->device));
  EM_CUDA_CHECK(cudaStreamWaitEvent(s->handle, e->ev, 0), "stream_wait_event");
  return EM_OK;
}

em_status em_cuda_stream_wait_stream(em_cuda_stream *s, em_cuda_stream *other) {
  if (!s || !other) return em__set_error(EM_ERR_INVALID, "stream_wait_stream: stream is NULL");
  if (s == other) return EM_OK;
  em_cuda_event *e = em_cuda_event_create(false);
  if (!e) return em_last_status();
  em_status st = em_cuda_event_record(e, other);
  if (!st) st = em_cuda_stream_wait_event(s, e);
  em_cuda_event_destroy(e); /* CUDA keeps the wait alive after destroy */
  return st;
}

em_status em_cuda_event_synchronize(em_cuda_event *e) {
  if (!e) return em__set_error(EM_ERR_INVALID, "event_synchronize: event is NULL");
  if (e->device < 0) return EM_OK;
  EM_CHECK(em__cuda_set_device(e->device));
  EM_CUDA_CHECK(cudaEventSynchronize(e->ev), "event_synchronize");
  return EM_OK;
}

bool em_cuda_event_query(em_cuda_event *e) {
  if (!e || e->device < 0 || em__cuda_set_device(e->device)) return true;
  cudaError_t err = cudaEventQuery(e->ev);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return true;
}

em_status em_cuda_event_elapsed_ms(em_cuda_event *start, em_cuda_event *end, float *ms) {
  if (!start || !end || !ms) return em__set_error(EM_ERR_INVALID, "event_elapsed_ms: NULL argument");
  if (!start->timing || !end->timing)
    return em__set_error(EM_ERR_INVALID,
                         "event_elapsed_ms: both events must be created with enable_timing");
  if (start->device < 0 || end->device < 0)
    return em__set_error(EM_ERR_STATE, "event_elapsed_ms: both events must be recorded first");
  EM_CHECK(em__cuda_set_device(end->device));
  EM_CUDA_CHECK(cudaEventElapsedTime(ms, start->ev, end->ev), "event_elapsed_ms");
  return EM_OK;
}

/* ---- the caching allocator's CUDA backend ------------------------------------------------------ */

static int be_alloc(void *ctx, int device, size_t size, void **ptr) {
  if (em__cuda_set_device(device)) return 1;
  cudaError_t err = cudaMalloc(ptr, size);
  if (err != cudaSuccess) {
    (void)cudaGetLastError(); /* out of memory is not sticky */
    return 1;
  }
  return 0;
}

static void be_free(void *ctx, int device, void *ptr) {
  if (em__cuda_set_device(device) == EM_OK) cudaFree(ptr);
}

static void *be_event_record(void *ctx, int device, void *stream) {
  cudaEvent_t ev;
  if (em__cuda_set_device(device)) return NULL;
  if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) return NULL;
  if (cudaEventRecord(ev, (cudaStream_t)stream) != cudaSuccess) {
    cudaEventDestroy(ev);
    return NULL;
  }
  return (void *)ev;
}

static bool be_event_query(void *ctx, void *ev) {
  cudaError_t err = cudaEventQuery((cudaEvent_t)ev);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return true; /* done, or the device failed: nothing left to wait for */
}

static void be_event_sync(void *ctx, void *ev) { cudaEventSynchronize((cudaEvent_t)ev); }
static void be_event_destroy(void *ctx, void *ev) { cudaEventDestroy((cudaEvent_t)ev); }
static void be_stream_sync(void *ctx, int device, void *stream) {
  if (em__cuda_set_device(device) == EM_OK) cudaStreamSynchronize((cudaStream_t)stream);
}

static const em__dev_backend cuda_backend = {
    .name = "CUDA",
    .raw_alloc = be_alloc,
    .raw_free = be_free,
    .event_record = be_event_record,
    .event_query = be_event_query,
    .event_sync = be_event_sync,
    .event_destroy = be_event_destroy,
    .stream_sync = be_stream_sync,
};

static void dev_init(int device) {
  cuda_dev *d = &rt.dev[device];
  d->default_stream = (em_cuda_stream){device, (cudaStream_t)0, true};
  atomic_store(&d->current, &d->default_stream);
  d->alloc = em__calloc_create(&cuda_backend, device);
  if (!d->alloc) {
    d->init_st = em_last_status();
    snprintf(d->init_msg, sizeof d->init_msg, "cuda:%d: %s", device, em_last_error());
  }
}

em__calloc *em__cuda_calloc(int device) {
  cuda_dev *d = dev_get(device);
  return d ? d->alloc : NULL;
}

em_status em__cuda_tmp_alloc(int device, size_t n, em__cblock **b) {
  em__calloc *a = em__cuda_calloc(device);
  if (!a) return em_last_status();
  return em__calloc_malloc(a, n, (void *)em__cuda_stream(device), b);
}

void em__cuda_tmp_free(int device, em__cblock *b) {
  if (b) em__calloc_free(b->owner, b);
}

/* ---- em_allocator: device memory ---------------------------------------------------------------- */

static em_status dev_alloc(em_allocator *self, size_t nbytes, em_device dev, void **data,
                           void **ctx) {
  *data = NULL;
  *ctx = NULL;
  if (dev.type != EM_CUDA)
    return em__set_error(EM_ERR_DEVICE, "CUDA allocator: cannot allocate on device type %d",
                         dev.type);
  em__calloc *a = em__cuda_calloc(dev.index);
  if (!a) return em_last_status();
  em__cblock *b = NULL;
  EM_CHECK(em__calloc_malloc(a, nbytes, (void *)em__cuda_stream(dev.index), &b));
  if (b) {
    *data = b->ptr;
    *ctx = b;
  }
  return EM_OK;
}

static void dev_free(em_allocator *self, void *data, size_t nbytes, void *ctx) {
  em__cblock *b = ctx;
  if (b) em__calloc_free(b->owner, b);
}

static em_allocator device_allocator = {"cuda", EM_CUDA, dev_alloc, dev_free, NULL};
em_allocator *em_cuda_allocator(void) { return &device_allocator; }

em__cblock *em__cuda_storage_block(const em_storage *s) {
  return s && s->allocator == &device_allocator ? (em__cblock *)s->ctx : NULL;
}

em_status em_tensor_record_stream(em_tensor *t, em_cuda_stream *s) {
  if (!t || !s) return em__set_error(EM_ERR_INVALID, "record_stream: NULL argument");
  if (t->device.type != EM_CUDA)
    return em__set_error(EM_ERR_DEVICE, "record_stream: expected a CUDA tensor");
  if (s->device != t->device.index)
    return em__set_error(EM_ERR_DEVICE,
                         "record_stream: the tensor is on cuda:%d but the stream on cuda:%d",
                         t->device.index, s->device);
  em__cblock *b = em__cuda_storage_block(t->storage);
  if (!b) return EM_OK; /* memory ember does not manage */
  return em__calloc_record_stream(b->owner, b, (void *)s->handle);
}

/* ---- em_allocator: pinned host memory -----------------------------------------------------------
 * cudaHostAlloc is slow (it maps pages for the device), so freed pinned
 * blocks are cached by power-of-two size and reused. A block used by an
 * asynchronous copy carries an event recorded after the copy; it is
 * reused only once the event has completed. */

typedef struct pinned_block {
  void *ptr;
  size_t size; /* power of two */
  cudaEvent_t ev;
  int ev_device; /* -1: no pending copy */
  struct pinned_block *next;
} pinned_block;

static struct {
  pthread_mutex_t mu;
  pinned_block *free[64];
  size_t cached;
} pinned = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int pow2_class(size_t n, size_t *size) {
  size_t s = 4096;
  int c = 12;
  while (s < n && c < 62) s <<= 1, c++;
  *size = s;
  return c;
}

static bool pinned_idle(pinned_block *b) {
  if (b->ev_device < 0) return true;
  if (em__cuda_set_device(b->ev_device)) return true;
  cudaError_t err = cudaEventQuery(b->ev);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  cudaEventDestroy(b->ev);
  b->ev_device = -1;
  return true;
}

static em_status pinned_alloc(em_allocator *self, size_t nbytes, em_device dev, void **data,
                              void **ctx) {
  *data = NULL;
  *ctx = NULL;
  if (nbytes == 0) return EM_OK;
  EM_CHECK(em__cuda_init());
  size_t size;
  int c = pow2_class(nbytes, &size);
  if (size < nbytes) return em__set_error(EM_ERR_NOMEM, "pinned allocator: %zu bytes is too large", nbytes);
  pthread_mutex_lock(&pinned.mu);
  for (pinned_block **pp = &pinned.free[c]; *pp; pp = &(*pp)->next) {
    pinned_block *b = *pp;
    if (!pinned_idle(b)) continue;
    *pp = b->next;
    pinned.cached -= b->size;
    pthread_mutex_unlock(&pinned.mu);
    *data = b->ptr;
    *ctx = b;
    return EM_OK;
  }
  pthread_mutex_unlock(&pinned.mu);
  pinned_block *b = calloc(1, sizeof *b);
  if (!b) return em__set_error(EM_ERR_NOMEM, "pinned allocator: out of memory");
  cudaError_t err = cudaHostAlloc(&b->ptr, size, cudaHostAllocPortable);
  if (err != cudaSuccess) {
    free(b);
    return em__cuda_error(err, "pinned allocator: cannot allocate %zu bytes", size);
  }
  b->size = size;
  b->ev_device = -1;
  *data = b->ptr;
  *ctx = b;
  return EM_OK;
}

static void pinned_free(em_allocator *self, void *data, size_t nbytes, void *ctx) {
  pinned_block *b = ctx;
  if (!b) return;
  int c = 12;
  while (((size_t)1 << c) < b->size) c++;
  pthread_mutex_lock(&pinned.mu);
  b->next = pinned.free[c];
  pinned.free[c] = b;
  pinned.cached += b->size;
  pthread_mutex_unlock(&pinned.mu);
}

static em_allocator pinned_allocator = {"cuda_pinned", EM_CPU, pinned_alloc, pinned_free, NULL};
em_allocator *em_cuda_pinned_allocator(void) { return &pinned_allocator; }

bool em_tensor_is_pinned(const em_tensor *t) {
  return t && t->storage->allocator == &pinned_allocator;
}

/* An event after the work queued so far on stream, so the pinned block of
 * storage s is not reused before that work (a copy) is done. */
static void pinned_record(em_storage *s, int device, cudaStream_t stream) {
  pinned_block *b = s->ctx;
  if (!b) return;
  pthread_mutex_lock(&pinned.mu);
  if (b->ev_device >= 0 && em__cuda_set_device(b->ev_device) == EM_OK) {
    cudaEventSynchronize(b->ev); /* an older copy: rare; keep one event */
    cudaEventDestroy(b->ev);
  }
  b->ev_device = -1;
  if (em__cuda_set_device(device) == EM_OK &&
      cudaEventCreateWithFlags(&b->ev, cudaEventDisableTiming) == cudaSuccess) {
    if (cudaEventRecord(b->ev, stream) == cudaSuccess)
      b->ev_device = device;
    else
      cudaEventDestroy(b->ev);
  }
  if (b->ev_device < 0) cudaStreamSynchronize(stream); /* could not track: wait */
  pthread_mutex_unlock(&pinned.mu);
}

static void pinned_empty_cache(void) {
  pthread_mutex_lock(&pinned.mu);
  for (int c = 0; c < 64; c++) {
    pinned_block **pp = &pinned.free[c];
    while (*pp) {
      pinned_block *b = *pp;
      if (b->ev_device >= 0 && em__cuda_set_device(b->ev_device) == EM_OK) {
        cudaEventSynchronize(b->ev);
        cudaEventDestroy(b->ev);
        b->ev_device = -1;
      }
      *pp = b->next;
      pinned.cached -= b->size;
      cudaFreeHost(b->ptr);
      free(b);
    }
  }
  pthread_mutex_unlock(&pinned.mu);
}

em_tensor *em_tensor_pin_memory(em_tensor *t) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "pin_memory: tensor is NULL");
  if (t->device.type != EM_CPU)
    return EM_FAIL(EM_ERR_DEVICE, "pin_memory: cannot pin a tensor that is not on the CPU");
  if (em_tensor_is_pinned(t)) return em_tensor_retain(t);
  if (em__cuda_init()) {
    em__prefix_error("pin_memory");
    return NULL;
  }
  em_tensor *p = em_tensor_empty_strided(t->ndim, t->shape, NULL, (em_dtype)t->dtype,
                                         EM_DEVICE_CPU, &pinned_allocator);
  if (!p) return NULL;
  if (t->numel) {
    em_status em__copy_into(em_tensor * dst, em_tensor * src);
    if (em__copy_into(p, t)) {
      em_tensor_release(p);
      return NULL;
    }
  }
  return p;
}

/* ---- memory stats ------------------------------------------------------------------------------------ */

em_status em_cuda_memory_stats_get(int device, em_cuda_memory_stats *out) {
  if (!out) return em__set_error(EM_ERR_INVALID, "memory_stats: out is NULL");
  em__calloc *a = em__cuda_calloc(resolve(device));
  if (!a) return em_last_status();
  em__calloc_stats(a, out);
  return EM_OK;
}

em_status em_cuda_reset_peak_memory_stats(int device) {
  em__calloc *a = em__cuda_calloc(resolve(device));
  if (!a) return em_last_status();
  em__calloc_reset_peak(a);
  return EM_OK;
}

em_status em_cuda_empty_cache(void) {
  pthread_once(&rt.once, rt_init);
  for (int i = 0; i < rt.count; i++) {
    cuda_dev *d = &rt.dev[i];
    /* only devices already in use have a cache */
    if (d->alloc && em__cuda_set_device(i) == EM_OK) em__calloc_empty_cache(d->alloc);
  }
  pinned_empty_cache();
  return EM_OK;
}

/* ---- copies between devices ---------------------------------------------------------------------------- */

/* Copies nbytes; host memory is pinned when hs (its storage) comes from
 * the pinned allocator. Host->device waits for the copy when sync (as
 * torch's blocking copy); else, from pinned memory, it returns at once,
 * recording an event that keeps the pinned block from reuse.
 * Device->host waits unless the host side is pinned and !sync. Between
 * devices: on the destination's current stream after the source's
 * current stream; across devices it waits. */
static em_status copy_bytes(void *dst, em_device dd, const void *src, em_device sd, size_t n,
                            bool sync, em_storage *hs) {
  if (n == 0) return EM_OK;
  bool pinned_host = hs && hs->allocator == &pinned_allocator;
  cudaStream_t s;
  if (sd.type == EM_CPU) { /* host -> device */
    EM_CHECK(em__cuda_enter(dd.index, &s));
    EM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s),
                  "to(cuda:%d): copy of %zu bytes", dd.index, n);
    /* blocking: waits even from pageable memory (it may be page-locked
     * by someone else, and then the copy would not have read it yet) */
    if (sync)
      EM_CUDA_CHECK(cudaStreamSynchronize(s), "to(cuda:%d)", dd.index);
    else if (pinned_host)
      pinned_record(hs, dd.index, s);
    return EM_OK;
  }
  if (dd.type == EM_CPU) { /* device -> host */
    EM_CHECK(em__cuda_enter(sd.index, &s));
    EM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s),
                  "to(cpu) from cuda:%d: copy of %zu bytes", sd.index, n);
    if (!pinned_host || sync)
      EM_CUDA_CHECK(cudaStreamSynchronize(s), "to(cpu) from cuda:%d", sd.index);
    else
      pinned_record(hs, sd.index, s);
    return EM_OK;
  }
  if (sd.index == dd.index) {
    EM_CHECK(em__cuda_enter(dd.index, &s));
    EM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s), "copy on cuda:%d",
                  dd.index);
    if (sync) EM_CUDA_CHECK(cudaStreamSynchronize(s), "copy on cuda:%d", dd.index);
    return EM_OK;
  }
  /* across devices: order after the source's pending work, then wait, so
   * neither side's memory can be reused under the copy */
  em_cuda_stream *ss = em_cuda_current_stream(sd.index), *ds = em_cuda_current_stream(dd.index);
  if (!ss || !ds) return em_last_status();
  EM_CHECK(em_cuda_stream_wait_stream(ds, ss));
  EM_CHECK(em__cuda_set_device(dd.index));
  EM_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, n, ds->handle),
                "to(cuda:%d) from cuda:%d", dd.index, sd.index);
  EM_CUDA_CHECK(cudaStreamSynchronize(ds->handle), "to(cuda:%d) from cuda:%d", dd.index, sd.index);
  return EM_OK;
}

em_status em__cuda_memcpy(void *dst, em_device ddev, const void *src, em_device sdev,
                          size_t nbytes, bool sync) {
  return copy_bytes(dst, ddev, src, sdev, nbytes, sync, NULL);
}


em_tensor *em__cuda_move(em_tensor *t, em_device dev, bool non_blocking) {
  if (!t) return EM_FAIL(EM_ERR_INVALID, "to: tensor is NULL");
  if (em_device_eq(t->device, dev)) return em_tensor_retain(t);
  char b1[16], b2[16];
  if (dev.type != EM_CPU && dev.type != EM_CUDA)
    return EM_FAIL(EM_ERR_DEVICE, "to: unknown device type %d", dev.type);
  if (dev.type == EM_CUDA && em__cuda_check_device(dev.index)) {
    em__prefix_error("to(%s)", em_device_str(dev, b1, sizeof b1));
    return NULL;
  }
  /* a dense copy of the source first (on its device) */
  em_tensor *src = em_tensor_is_contiguous(t) ? em_tensor_retain(t)
                                              : em__convert(t, (em_dtype)t->dtype);
  if (!src) return NULL;
  em_tensor *out = NULL;
  if (dev.type == EM_CPU && non_blocking)
    out = em_tensor_empty_strided(t->ndim, t->shape, NULL, (em_dtype)t->dtype, dev,
                                  &pinned_allocator);
  else
    out = em_tensor_empty_on(t->ndim, t->shape, (em_dtype)t->dtype, dev);
  if (!out) goto fail;
  size_t n = (size_t)t->numel * em_dtype_size((em_dtype)t->dtype);
  em_storage *hs = dev.type == EM_CPU ? out->storage : src->device.type == EM_CPU ? src->storage : NULL;
  if (t->numel &&
      copy_bytes(em__data_ptr(out), dev, em__data_ptr(src), src->device, n, !non_blocking, hs)) {
    em__prefix_error("to(%s) from %s", em_device_str(dev, b1, sizeof b1),
                     em_device_str(t->device, b2, sizeof b2));
    goto fail;
  }
  em_tensor_release(src);
  return out;
fail:
  em_tensor_release(out);
  em_tensor_release(src);
  return NULL;
}

/* A move between devices is differentiable (the gradient moves back). */
em_tensor *em_tensor_to_device_async(em_tensor *t, em_device dev, bool non_blocking) {
  em_tensor *out = em__cuda_move(t, dev, non_blocking);
  if (!out || out == t) return out;
  em_op_attrs a = {0};
  return em__record1(EM_OP_TO_DEVICE, 1, &t, out, &a);
}

/* core/ops_copy.c's hook behind em_tensor_to_device and cross-device
 * copy_ (which record for autograd themselves). */
em_tensor *em__cuda_to_device(em_tensor *t, em_device dev) {
  return em__cuda_move(t, dev, false);
}

/* ---- configuration ------------------------------------------------------------------------------------------ */

const char *em__cuda_config_info(void) {
  static char buf[768];
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&mu);
  int rv = 0, dv = 0;
  cudaRuntimeGetVersion(&rv);
  cudaDriverGetVersion(&dv);
  int n = em_cuda_device_count();
  int off = snprintf(buf, sizeof buf, "runtime %d.%d", rv / 1000, (rv % 1000) / 10);
  if (dv) off += snprintf(buf + off, sizeof buf - (size_t)off, ", driver %d.%d", dv / 1000, (dv % 1000) / 10);
  if (n == 0) {
    snprintf(buf + off, sizeof buf - (size_t)off, "; %s", rt.reason);
  } else {
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess)
      off += snprintf(buf + off, sizeof buf - (size_t)off, "; %d device%s: %s (sm_%d%d, %.0f GiB)", n,
                      n == 1 ? "" : "s", p.name, p.major, p.minor,
                      (double)p.totalGlobalMem / (1024.0 * 1024 * 1024));
    snprintf(buf + off, sizeof buf - (size_t)off, "; %s", em__cuda_blas_info());
  }
  pthread_mutex_unlock(&mu);
  return buf;
}
