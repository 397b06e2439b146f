/* ember — storage, tensors as views, creation, random numbers.
 *
 * A tensor is a view over a refcounted storage: dtype, device, shape,
 * strides (in elements), offset (in elements). Views share the storage;
 * the storage carries the version counter that in-place ops bump and that
 * autograd checks.
 *
 *     int64_t shape[] = {2, 3};
 *     em_tensor *a = em_tensor_ones(2, shape, EM_FLOAT32);
 *     em_tensor *t = em_tensor_transpose(a, 0, 1);   // [3, 2] view of a
 *     em_tensor *c = em_tensor_contiguous(t);        // copies
 *     em_tensor_release(t);
 *     em_tensor_release(c);
 *     em_tensor_release(a);
 *
 * Ownership: every em_tensor* an ember function returns is a new
 * reference; the caller releases it with em_tensor_release. Arguments are
 * borrowed: a function that keeps a tensor retains it. NULL means failure
 * (see core/status.h); failing functions leak nothing.
 *
 * The struct fields are visible for speed and for ember's own modules;
 * treat them as read-only and use the functions to change a tensor.
 */
#ifndef EMBER_CORE_TENSOR_H
#define EMBER_CORE_TENSOR_H

#include <stdatomic.h>
#include <stdio.h>

#include "core/dtype.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EM_MAX_DIMS 16

/* Shape literal helper: em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32). */
#define EM_DIMS(...)                                                \
  (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), \
      ((const int64_t[]){__VA_ARGS__})

/* ---- allocators and storage ------------------------------------------ */

typedef struct em_allocator em_allocator;
typedef struct em_storage em_storage;

/* An allocator hands out device memory for storages. alloc fills *data and
 * may stash per-allocation state in *ctx (a shm name, a CUDA stream);
 * free gets both back. alloc sets the error and returns non-OK on failure;
 * nbytes may be 0. */
struct em_allocator {
  const char *name;
  em_device_type device_type;
  em_status (*alloc)(em_allocator *self, size_t nbytes, em_device dev,
                     void **data, void **ctx);
  void (*free)(em_allocator *self, void *data, size_t nbytes, void *ctx);
  void *state;
};

enum { EM_STORAGE_SHARED = 1u << 0 };

struct em_storage {
  atomic_int refcount;
  uint32_t flags;
  em_device device;
  void *data;
  size_t nbytes;
  em_allocator *allocator;
  void *ctx;
  atomic_uint_fast64_t version; /* bumped by every in-place write */
};

/* The default CPU allocator: 64-byte aligned heap memory; large blocks
 * are cached after free and reused. */
EM_API em_allocator *em_cpu_allocator(void);
/* Returns every cached free block to the system (PyTorch users know this
 * as empty_cache). Bytes currently cached: em_cpu_cache_bytes(). */
EM_API void em_cpu_empty_cache(void);
EM_API size_t em_cpu_cache_bytes(void);

/* New storage of nbytes from allocator a (NULL: the device's default). */
EM_API em_storage *em_storage_create(em_allocator *a, size_t nbytes, em_device dev);
/* Storage over memory the caller owns; deleter(data, ctx) runs when the
 * last reference goes (deleter may be NULL). */
EM_API em_storage *em_storage_from_blob(void *data, size_t nbytes, em_device dev,
                                        void (*deleter)(void *data, void *ctx),
                                        void *ctx);
EM_API void em_storage_retain(em_storage *s);
EM_API void em_storage_release(em_storage *s);

/* ---- tensors ---------------------------------------------------------- */

typedef struct em_tensor em_tensor;
struct em_ag_meta; /* owned by autograd/ */
struct em_generator;
typedef struct em_generator em_generator;

struct em_tensor {
  atomic_int refcount;
  int8_t dtype;             /* em_dtype */
  int8_t ndim;
  bool requires_grad;
  bool is_wrapped_number;   /* a Python scalar turned into a 0-dim tensor */
  em_device device;
  em_storage *storage;
  int64_t offset;           /* in elements */
  int64_t numel;
  int64_t shape[EM_MAX_DIMS];
  int64_t strides[EM_MAX_DIMS]; /* in elements */
  em_tensor *base;          /* for views: the tensor first viewed (retained) */
  struct em_ag_meta *ag;    /* autograd state; NULL when never needed */
  void *user;               /* one slot for a language binding; not owned */
};

EM_API em_tensor *em_tensor_retain(em_tensor *t); /* returns t */
EM_API void em_tensor_release(em_tensor *t);      /* NULL is fine */
/* Releases n tensors (NULL entries skipped) and frees the array. */
EM_API void em_tensor_list_release(em_tensor **list, int n);

EM_API int em_tensor_ndim(const em_tensor *t);
EM_API const int64_t *em_tensor_shape(const em_tensor *t);
EM_API const int64_t *em_tensor_strides(const em_tensor *t);
EM_API int64_t em_tensor_numel(const em_tensor *t);
EM_API em_dtype em_tensor_dtype(const em_tensor *t);
EM_API em_device em_tensor_device(const em_tensor *t);
EM_API bool em_tensor_is_contiguous(const em_tensor *t);
/* Address of element 0 (storage data + offset); NULL for numel 0. */
EM_API void *em_tensor_data(const em_tensor *t);
EM_API uint64_t em_tensor_version(const em_tensor *t);
/* Size of dim (negative dims count from the end); -1 and an error if out
 * of range. */
EM_API int64_t em_tensor_size(const em_tensor *t, int dim);

/* The single value of a one-element tensor. */
EM_API em_status em_tensor_item(em_tensor *t, em_scalar *out);
/* Same as a double (NaN and an error if t is not one element). */
EM_API double em_tensor_item_double(em_tensor *t);

/* ---- creation ---------------------------------------------------------- */

/* dtype EM_DTYPE_UNDEFINED means the default float dtype where a dtype is
 * optional. Sizes must be >= 0 and their product must fit in int64. */
EM_API em_tensor *em_tensor_empty(int ndim, const int64_t *shape, em_dtype dt);
EM_API em_tensor *em_tensor_empty_on(int ndim, const int64_t *shape, em_dtype dt,
                                     em_device dev);
/* Empty tensor with explicit strides (elements) from a chosen allocator. */
EM_API em_tensor *em_tensor_empty_strided(int ndim, const int64_t *shape,
                                          const int64_t *strides, em_dtype dt,
                                          em_device dev, em_allocator *a);
EM_API em_tensor *em_tensor_zeros(int ndim, const int64_t *shape, em_dtype dt);
EM_API em_tensor *em_tensor_ones(int ndim, const int64_t *shape, em_dtype dt);
EM_API em_tensor *em_tensor_full(int ndim, const int64_t *shape, em_scalar value, em_dtype dt);
/* Values start, start+step, ... < end (> end for a negative step). dt
 * UNDEFINED: int64 when all three are ints, else the default float. */
EM_API em_tensor *em_tensor_arange(em_scalar start, em_scalar end, em_scalar step, em_dtype dt);
EM_API em_tensor *em_tensor_linspace(double start, double end, int64_t steps, em_dtype dt);
EM_API em_tensor *em_tensor_eye(int64_t n, int64_t m, em_dtype dt);
/* *_like: same shape, device and (for dt UNDEFINED) dtype as t. */
EM_API em_tensor *em_tensor_empty_like(em_tensor *t, em_dtype dt);
EM_API em_tensor *em_tensor_zeros_like(em_tensor *t, em_dtype dt);
EM_API em_tensor *em_tensor_ones_like(em_tensor *t, em_dtype dt);
EM_API em_tensor *em_tensor_full_like(em_tensor *t, em_scalar value, em_dtype dt);
EM_API em_tensor *em_tensor_rand_like(em_tensor *t, em_dtype dt, em_generator *g);
EM_API em_tensor *em_tensor_randn_like(em_tensor *t, em_dtype dt, em_generator *g);

/* Copies ndim/shape row-major elements of type dt from data. */
EM_API em_tensor *em_tensor_from_data(const void *data, int ndim, const int64_t *shape,
                                      em_dtype dt);
/* Zero-copy tensor over caller memory (strides NULL: row-major);
 * deleter(data, ctx) runs when the last view goes. */
EM_API em_tensor *em_tensor_from_blob(void *data, int ndim, const int64_t *shape,
                                      const int64_t *strides, em_dtype dt, em_device dev,
                                      void (*deleter)(void *data, void *ctx), void *ctx);
/* 0-dim tensor holding s, of dtype dt (UNDEFINED: em_scalar_dtype(s)). */
EM_API em_tensor *em_tensor_scalar(em_scalar s, em_dtype dt);
/* 0-dim "wrapped number" (a Python scalar operand): it takes part in type
 * promotion with the lowest priority, as in PyTorch. */
EM_API em_tensor *em_tensor_wrapped_scalar(em_scalar s);

/* ---- random numbers ----------------------------------------------------
 * Counter-based (Philox4x32-10): element i of a call draws from counter
 * (offset + i), so results depend only on (seed, offset), never on the
 * thread count. Each call advances the generator's offset. g NULL means
 * the default generator. */
EM_API em_generator *em_default_generator(void);
EM_API em_generator *em_generator_create(uint64_t seed);
EM_API void em_generator_destroy(em_generator *g);
EM_API void em_generator_set_seed(em_generator *g, uint64_t seed);
EM_API uint64_t em_generator_seed(em_generator *g);
/* The generator's full state is (seed, offset). */
EM_API void em_generator_get_state(em_generator *g, uint64_t *seed, uint64_t *offset);
EM_API void em_generator_set_state(em_generator *g, uint64_t seed, uint64_t offset);
/* Reserves n counters and returns the first (thread-safe). */
EM_API uint64_t em_generator_advance(em_generator *g, uint64_t n);
EM_API void em_manual_seed(uint64_t seed); /* seeds the default generator */

EM_API em_tensor *em_tensor_rand(int ndim, const int64_t *shape, em_dtype dt, em_generator *g);
EM_API em_tensor *em_tensor_randn(int ndim, const int64_t *shape, em_dtype dt, em_generator *g);
/* Integers in [low, high); dt UNDEFINED: int64. */
EM_API em_tensor *em_tensor_randint(int64_t low, int64_t high, int ndim, const int64_t *shape,
                                    em_dtype dt, em_generator *g);
/* A random permutation of 0..n-1; dt UNDEFINED: int64. */
EM_API em_tensor *em_tensor_randperm(int64_t n, em_dtype dt, em_generator *g);
EM_API em_status em_tensor_uniform_(em_tensor *t, double from, double to, em_generator *g);
EM_API em_status em_tensor_normal_(em_tensor *t, double mean, double std, em_generator *g);
/* Each element becomes 1 with probability p, else 0. */
EM_API em_status em_tensor_bernoulli_(em_tensor *t, double p, em_generator *g);
/* out[i] ~ Bernoulli(p[i]) for a tensor of probabilities. */
EM_API em_tensor *em_tensor_bernoulli(em_tensor *p, em_generator *g);

/* ---- grad mode -----------------------------------------------------------
 * Thread-local switch for autograd recording (PyTorch's no_grad /
 * enable_grad); on by default in every thread. set returns the previous
 * value so callers can restore it. */
EM_API bool em_is_grad_enabled(void);
EM_API bool em_set_grad_enabled(bool enabled);

/* ---- interrupting long operations ---------------------------------------
 * em_request_interrupt (async-signal-safe: call it from a SIGINT handler)
 * makes a running backward (or autograd grad) stop between two nodes and
 * fail with EM_ERR_INTERRUPTED. A kernel always runs to completion: an op
 * either finishes or does not start, never returns part of a result. The
 * request stays until em_clear_interrupt. The Python binding installs a
 * SIGINT handler that calls it, so Ctrl-C stops a long backward. */
EM_API void em_request_interrupt(void);
EM_API void em_clear_interrupt(void);
EM_API bool em_interrupt_requested(void);

/* ---- threads and configuration ---------------------------------------- */

/* One knob for ember's CPU threads (kernels and BLAS). Default: env
 * EMBER_NUM_THREADS, else OMP_NUM_THREADS, else the CPU count. */
EM_API void em_set_num_threads(int n);
EM_API int em_get_num_threads(void);

EM_API const char *em_version(void);
/* The BLAS in use: "OpenBLAS 0.3.21 (SkylakeX kernels)". */
EM_API const char *em_blas_info(void);
/* A multi-line description of the build and run-time configuration. */
EM_API const char *em_config_string(void);

#ifdef __cplusplus
}
#endif
#endif
