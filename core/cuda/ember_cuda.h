/* ember — CUDA devices, streams, events, memory.
 *
 * Tensors live on "cpu" or "cuda:N". Move them with em_tensor_to_device;
 * ops on CUDA tensors run CUDA kernels (or cuBLAS / cuDNN) on the device's
 * current stream and return without waiting; reading a result on the host
 * (em_tensor_to_device to the CPU, em_tensor_item, printing) waits for it.
 *
 *     em_device gpu = EM_DEVICE_CUDA(0);
 *     em_tensor *x = em_tensor_randn(EM_DIMS(4096, 4096), EM_FLOAT32, NULL);
 *     em_tensor *xg = em_tensor_to_device(x, gpu);     // host -> device
 *     em_tensor *yg = em_tensor_matmul(xg, xg);        // cuBLAS, async
 *     em_tensor *y = em_tensor_to_device(yg, EM_DEVICE_CPU); // waits, copies back
 *
 *     em_cuda_stream *s = em_cuda_stream_create(0, 0);  // a side stream
 *     em_cuda_stream *prev = em_cuda_current_stream(0);
 *     em_cuda_set_current_stream(s);                    // ops now go to s
 *     ...
 *     em_cuda_set_current_stream(prev);
 *     em_cuda_stream_synchronize(s);
 *     em_cuda_stream_destroy(s);
 *
 * Streams. Each device has a current stream, process-wide (unlike
 * PyTorch's per-thread one: ember's thread pool may enqueue work of an op
 * from any of its threads, and it must land on the stream the op was
 * called on). It starts as the device's default (legacy) stream. Streams
 * made with em_cuda_stream_create do not synchronise with the default
 * stream: order them with events (em_cuda_stream_wait_event /
 * em_cuda_stream_wait_stream).
 *
 * Memory. Device memory comes from a caching allocator (one per device):
 * freed blocks are kept and reused for later tensors of the same stream,
 * so steady-state training does not call cudaMalloc. A block freed while
 * another stream still uses it must be announced with
 * em_tensor_record_stream; the allocator then reuses it only after that
 * stream's work (as of the free) has finished. em_cuda_empty_cache returns
 * unused cached memory to the driver. Pinned (page-locked) host memory
 * (em_tensor_pin_memory) makes host->device copies asynchronous.
 *
 * Without CUDA support (-DEMBER_CUDA=OFF, or no toolkit at build time)
 * these functions exist but report that CUDA is not available:
 * em_cuda_is_available() is false and em_cuda_device_count() is 0.
 *
 * Errors: EM_ERR_DEVICE for a bad or absent device, EM_ERR_CUDA for a
 * failure the CUDA runtime reports (its message is included),
 * EM_ERR_NOMEM for out-of-memory (the message states the bytes requested,
 * allocated and reserved).
 */
#ifndef EMBER_CORE_CUDA_EMBER_CUDA_H
#define EMBER_CORE_CUDA_EMBER_CUDA_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices ---------------------------------------------------------------------- */

/* True when ember was built with CUDA and at least one device is usable. */
EM_API bool em_cuda_is_available(void);
/* Number of visible CUDA devices (0 without CUDA, without a driver or
 * without a device; never an error). */
EM_API int em_cuda_device_count(void);
/* The calling thread's current device (what "cuda" without an index
 * means for the functions that take -1 as device): the one it set with
 * em_cuda_set_device, else device 0 (-1 without a device). Ops on tensors
 * of other devices do not change it. */
EM_API em_status em_cuda_set_device(int device);
EM_API int em_cuda_current_device(void);
/* "NVIDIA H200" into buf. */
EM_API em_status em_cuda_device_name(int device, char *buf, size_t size);
/* Waits until every stream of device (-1: current) is idle; reports an
 * asynchronous kernel error if one happened. */
EM_API em_status em_cuda_synchronize(int device);
/* True when ember was built with cuDNN (GPU convolution and batch norm)
 * and a device is usable. */
EM_API bool em_cudnn_is_available(void);
/* Why em_cuda_is_available() is false ("no CUDA device found", "ember was
 * built without CUDA support", the runtime's error); "" when it is true. */
EM_API const char *em_cuda_unavailable_reason(void);

/* ---- streams ------------------------------------------------------------------------ */

typedef struct em_cuda_stream em_cuda_stream;

/* A new non-blocking stream on device (-1: current); priority 0 is the
 * default, negative is higher. Destroy with em_cuda_stream_destroy. */
EM_API em_cuda_stream *em_cuda_stream_create(int device, int priority);
/* Waits for the stream's work, then frees it. It must not be the current
 * stream (EM_ERR_STATE: make another stream current first). Destroying a
 * default stream is a no-op. NULL is fine. */
EM_API em_status em_cuda_stream_destroy(em_cuda_stream *s);
/* The device's default stream (never NULL for a valid device; not to be
 * destroyed). NULL with an error for a bad device. */
EM_API em_cuda_stream *em_cuda_default_stream(int device);
/* The device's current stream (-1: current device). */
EM_API em_cuda_stream *em_cuda_current_stream(int device);
/* Makes s the current stream of its device (for every thread). */
EM_API em_status em_cuda_set_current_stream(em_cuda_stream *s);
EM_API int em_cuda_stream_device(const em_cuda_stream *s);
EM_API em_status em_cuda_stream_synchronize(em_cuda_stream *s);
/* True when all work queued on s has finished. */
EM_API bool em_cuda_stream_query(em_cuda_stream *s);
/* Work queued on s after this call waits for the other stream's work
 * queued before it. */
EM_API em_status em_cuda_stream_wait_stream(em_cuda_stream *s, em_cuda_stream *other);
/* The cudaStream_t (for interop with other CUDA libraries). */
EM_API void *em_cuda_stream_handle(em_cuda_stream *s);

/* ---- events -------------------------------------------------------------------------- */

typedef struct em_cuda_event em_cuda_event;

/* enable_timing: the event can be used with em_cuda_event_elapsed_ms. */
EM_API em_cuda_event *em_cuda_event_create(bool enable_timing);
EM_API void em_cuda_event_destroy(em_cuda_event *e); /* NULL is fine */
/* Records e on s (NULL: the current stream of the current device). */
EM_API em_status em_cuda_event_record(em_cuda_event *e, em_cuda_stream *s);
/* Work queued on s (NULL: current) after this waits for e. */
EM_API em_status em_cuda_stream_wait_event(em_cuda_stream *s, em_cuda_event *e);
EM_API em_status em_cuda_event_synchronize(em_cuda_event *e);
/* True when the work before the record has finished (or never recorded). */
EM_API bool em_cuda_event_query(em_cuda_event *e);
/* Milliseconds between two recorded timing events. */
EM_API em_status em_cuda_event_elapsed_ms(em_cuda_event *start, em_cuda_event *end, float *ms);

/* ---- memory ----------------------------------------------------------------------------- */

/* The caching allocator of device tensors (what em_tensor_empty_on uses
 * for "cuda:N") and the pinned host allocator (for em_tensor_empty_strided
 * with EM_DEVICE_CPU). */
EM_API em_allocator *em_cuda_allocator(void);
EM_API em_allocator *em_cuda_pinned_allocator(void);

/* The caching allocator's counters for one device (bytes unless noted). */
typedef struct em_cuda_memory_stats {
  size_t allocated;      /* in blocks handed out to tensors (rounded sizes) */
  size_t requested;      /* what those tensors asked for */
  size_t reserved;       /* obtained from the device (cached + allocated) */
  size_t peak_allocated; /* maxima since the start or the last reset */
  size_t peak_reserved;
  int64_t num_allocs;         /* block allocations served */
  int64_t num_device_allocs;  /* cudaMalloc calls (segments) */
  int64_t num_device_frees;   /* segments released to the device */
  int64_t num_ooms;           /* out-of-memory errors reported */
  int64_t num_segments;       /* segments held now */
  int64_t num_pending_frees;  /* blocks waiting for another stream's work */
} em_cuda_memory_stats;

EM_API em_status em_cuda_memory_stats_get(int device, em_cuda_memory_stats *out);
EM_API em_status em_cuda_reset_peak_memory_stats(int device);
/* Returns cached, unused device memory of every device to the driver
 * (blocks in use stay). */
EM_API em_status em_cuda_empty_cache(void);

/* Marks t's memory as used by stream s: when t's storage is freed, the
 * memory is reused only after the work queued on s before the free has
 * finished (PyTorch's Tensor.record_stream). CUDA tensors only. */
EM_API em_status em_tensor_record_stream(em_tensor *t, em_cuda_stream *s);

/* A copy of the CPU tensor t in pinned host memory (t itself, retained,
 * when it already is pinned). Host->device copies from pinned memory are
 * asynchronous. Without CUDA: EM_ERR_DEVICE. */
EM_API em_tensor *em_tensor_pin_memory(em_tensor *t);
EM_API bool em_tensor_is_pinned(const em_tensor *t);

/* em_tensor_to_device with PyTorch's non_blocking: with non_blocking true a
 * host->device copy from pinned memory and a device->host copy into
 * pinned memory return before the copy is done (the result is ready once
 * the current stream reaches it); otherwise as em_tensor_to_device, which
 * returns when the data can be used from the host. */
EM_API em_tensor *em_tensor_to_device_async(em_tensor *t, em_device dev, bool non_blocking);

/* ---- matmul settings ---------------------------------------------------------------------
 * float32 matmul precision, as torch.set_float32_matmul_precision:
 *   "highest" (default): full float32 products;
 *   "high":    TF32 tensor cores (10-bit mantissa products, float32 sums);
 *   "medium":  bfloat16 tensor cores with float32 sums.
 * Also read from env EMBER_FLOAT32_MATMUL_PRECISION at first use.
 * allow_bf16_reduced_precision_reduction (default true, as PyTorch): lets
 * cuBLAS use reduced-precision reductions in float16/bfloat16 GEMMs. */
EM_API em_status em_cuda_set_float32_matmul_precision(const char *precision);
EM_API const char *em_cuda_get_float32_matmul_precision(void);
EM_API void em_cuda_set_allow_reduced_precision_reduction(bool allow);

#ifdef __cplusplus
}
#endif
#endif
