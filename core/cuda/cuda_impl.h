/* ember's CUDA backend: internals shared by the C files of core/cuda.
 *
 * ---- Layout --------------------------------------------------------------------------
 *   ember_cuda.h      public API: devices, streams, events, memory, settings
 *   cuda_impl.h       this file: internals of the C side
 *   cu_kernels.h      the C/C++ boundary: plain structs + launcher tables
 *   caching_alloc.[ch] the caching allocator's logic (no CUDA; unit-tested
 *                     on the CPU through a fake device backend)
 *   runtime.c         devices, streams, events, the CUDA device backend of
 *                     the allocator, the em_allocator objects (device and
 *                     pinned host), copies between devices, the hooks core
 *                     calls (to_device, default allocator, config string)
 *   register.c        em__cuda_register_kernels: every CUDA kernel into the
 *                     dispatch table; the load-time hook installation
 *   elementwise.c     the bridge from em_iter to the kernels (iter.c calls
 *                     em__cuda_iter_run); CPU scalars joining device ops
 *   reduce.c, shape.c, index.c   C glue of those families (geometry)
 *   blas.c            matmul family through cuBLAS (EM_OP_MM kernel),
 *                     precision settings
 *   cudnn.c           convolution, pooling, batch norm through cuDNN
 *                     (entry points for nn/: em__cuda_conv2d_* ...)
 *   *.cu              kernels: copy/fill + unary + binary + ternary +
 *                     index along-dim (elementwise.cu, math in
 *                     cu_common.cuh), reductions and softmax/scans
 *                     (reduce.cu), rows gather/scatter, repeat, helpers
 *                     (index.cu)
 *   cuda_stub.c       the public API in builds without CUDA
 *
 * ---- How ops reach the GPU --------------------------------------------------------------
 * The op front ends (core/ops_*.c) are shared by all devices: they
 * validate, broadcast, promote and allocate the output on the inputs'
 * device (em_tensor_empty_on -> the default allocator of "cuda", installed
 * by this backend), then look up the kernel by (op, EM_CUDA, dtype). What
 * a CUDA table entry is depends on the family, because the front ends call
 * the families differently:
 *
 *   elementwise (copy, fill, unary, binary, comparisons, ternary, masked
 *   fill, gather/scatter along a dim): the entry is an emcu_elem_fn taking
 *   the whole iteration, not a 1-D em_loop_fn. core/iter.c's em__iter_run
 *   (its one device branch, marked there) hands iterations whose operands
 *   live on a CUDA device to em__cuda_iter_run, which launches ONE kernel
 *   over the iteration on the current stream (no per-row calls, no host
 *   threads). em__elementwise / em__elementwise_into also let a CPU 0-dim
 *   tensor (a wrapped Python number) join a CUDA op, as PyTorch does, by
 *   copying it to the device first (em__cuda_scalars_to_device).
 *   reductions, softmax, cumsum: the family signature (em_status
 *   k(out[], in, attrs)) already takes whole tensors: the entries are C
 *   functions in reduce.c that compute the geometry and launch.
 *   cat: the entry is a cat_fn doing one cudaMemcpy2DAsync per input;
 *   repeat: a repeat_fn launching a kernel.
 *   mm family: the entry is an em_gemm_fn. The front end runs it on its
 *   thread pool over row ranges; the CUDA entry does the whole product
 *   (one cuBLAS call, strided-batched) in the call that receives row 0 and
 *   returns at once for the others, so it is enqueued exactly once whatever
 *   the pool does. (Hence the process-wide current stream: that call may
 *   come from a pool thread.)
 *   index rows (index_select, index, index_add, index_put): entries with
 *   the CPU signatures whose off[] must be device memory. The front end
 *   (core/ops_index.c) still refuses CUDA tensors because it validates and
 *   rewrites index values on the host; see the report for what it needs.
 *   random: no CUDA kernels (the front end splits the range across host
 *   threads); "no kernel for cuda/float32" until a device generator exists.
 *   Anything without an entry fails with the dispatcher's
 *   "<op>: no kernel for cuda/<dtype>" (EM_ERR_NOTIMPL).
 *
 * Autograd needs nothing: backward formulas are written with ops, which
 * dispatch the same way.
 *
 * ---- Streams and synchronisation ----------------------------------------------------------
 * Kernels go to the current stream of the tensor's device, which is
 * process-wide (ember_cuda.h). Every launch sets the device first
 * (em__cuda_set_device, cached per thread). Nothing waits except copies to
 * the host, em_cuda_synchronize and the stream/event waits. Launch errors
 * are reported by the op that launched; errors of running kernels
 * ("illegal memory access") surface at the next synchronising call.
 *
 * ---- Memory -----------------------------------------------------------------------------------
 * Device storages come from em_cuda_allocator(): one caching allocator per
 * device (caching_alloc.c) over cudaMalloc/cudaFree and CUDA events; the
 * storage's ctx is the block, which belongs to the stream current at
 * allocation. Temporaries of an op (reduction scratch, staged operands) are
 * allocated and freed on the op's stream: stream order makes the early
 * free safe. Pinned host memory (em_cuda_pinned_allocator) is cudaHostAlloc
 * per storage, with an event recorded after each asynchronous copy that
 * uses it, so freeing it waits for the copy.
 */
#ifndef EMBER_CORE_CUDA_CUDA_IMPL_H
#define EMBER_CORE_CUDA_CUDA_IMPL_H

#include <cuda_runtime_api.h>

#include "core/core_impl.h"
#include "core/cuda/caching_alloc.h"
#include "core/cuda/cu_kernels.h"
#include "core/cuda/ember_cuda.h"

#define EM__CUDA_MAX_DEVICES 64

/* ---- errors ------------------------------------------------------------------------------
 * Sets EM_ERR_CUDA (EM_ERR_NOMEM for cudaErrorMemoryAllocation) with
 * "<what>: CUDA error: <description> (<name>)"; returns the status. */
em_status em__cuda_error(cudaError_t err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define EM_CUDA_CHECK(call, ...)                                          \
  do {                                                                    \
    cudaError_t em__ce_ = (call);                                         \
    if (EM_UNLIKELY(em__ce_ != cudaSuccess)) return em__cuda_error(em__ce_, __VA_ARGS__); \
  } while (0)

/* ---- devices and streams (runtime.c) ----------------------------------------------------------- */

/* Initialises the runtime once; EM_ERR_DEVICE "no CUDA device" when none. */
em_status em__cuda_init(void);
/* device must be a valid index: EM_ERR_DEVICE "cuda:7 is not available
 * (2 CUDA devices)" otherwise. */
em_status em__cuda_check_device(int device);
/* cudaSetDevice, skipped when the thread is already on device. */
em_status em__cuda_set_device(int device);
/* The device em_cuda_set_device chose on this thread, -1 if none. */
int em__cuda_user_device(void);
/* The device this thread last set for a launch, -1 if none yet. */
int em__cuda_thread_device(void);
/* The current stream of a (valid) device. */
cudaStream_t em__cuda_stream(int device);
/* Both: set device, return its current stream in *s. */
em_status em__cuda_enter(int device, cudaStream_t *s);
/* The device a kernel's pointer lives on (the front end allocated it on
 * the op's device), asking the driver; the current device if it cannot
 * tell. */
int em__cuda_device_of(const void *p);
/* Reports an error left by kernels launched so far (cudaGetLastError)
 * against op. */
em_status em__cuda_check_launch(cudaError_t err, const char *op);

/* ---- memory (runtime.c) ---------------------------------------------------------------------- */

em__calloc *em__cuda_calloc(int device); /* NULL with an error if unavailable */
/* Device scratch on the current stream of device, freed with
 * em__cuda_tmp_free once the kernels using it are enqueued. */
em_status em__cuda_tmp_alloc(int device, size_t n, em__cblock **b);
void em__cuda_tmp_free(int device, em__cblock *b);
/* A device tensor's storage block (NULL for storages not from the caching
 * allocator, e.g. from_blob). */
em__cblock *em__cuda_storage_block(const em_storage *s);

/* Copies nbytes between any two of (host, device) on the current stream of
 * the device involved (the destination's for device->device); waits when
 * the host side is pageable or when sync is set. */
em_status em__cuda_memcpy(void *dst, em_device ddev, const void *src, em_device sdev,
                          size_t nbytes, bool sync);

/* ---- kernels: bridges and registration ---------------------------------------------------------- */

/* Runs the CUDA elementwise kernel fn (an emcu_elem_fn from the table) over
 * it on the current stream of device (core/iter.c's device branch). */
em_status em__cuda_iter_run(int device, void *fn, const em_iter *it, const em_op_attrs *a);
/* True when some of ts[0..n) is on a CUDA device (*dev: the first such)
 * and another is a CPU 0-dim tensor. */
bool em__cuda_mixed_scalars(int n, em_tensor *const *ts, em_device *dev);
/* t copied to dev (t itself, retained, when it is there), asynchronously
 * as em_tensor_to_device_async; not recorded for autograd. */
em_tensor *em__cuda_move(em_tensor *t, em_device dev, bool non_blocking);
/* in[0..n) with every CPU 0-dim tensor replaced by a copy on dev (in
 * use[], new references in tmp[] to release afterwards). */
em_status em__cuda_scalars_to_device(int n, em_tensor *const *in, em_device dev, em_tensor **use,
                                     em_tensor **tmp);

void em__cuda_register_elementwise(void);
void em__cuda_register_reduce(void);
void em__cuda_register_shape(void);
void em__cuda_register_index(void);
void em__cuda_register_blas(void);

/* For em_config_string (core/blas.c's hook). */
const char *em__cuda_config_info(void);
const char *em__cuda_blas_info(void);

#endif
