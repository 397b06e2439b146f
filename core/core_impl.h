/* ember core internals: shared by core's files and by the modules built on
 * core (autograd, nn, comm, ...). Not installed, not part of the API.
 *
 * Contents: error helpers, the op list, kernel dispatch, the elementwise
 * iterator, the thread pool, autograd recording hooks, small utilities.
 */
#ifndef EMBER_CORE_IMPL_H
#define EMBER_CORE_IMPL_H

#include <assert.h>
#include <string.h>

#include "core/core.h"

#define EM_LIKELY(x) __builtin_expect(!!(x), 1)
#define EM_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- errors -------------------------------------------------------------- */

/* Sets the thread-local error; returns s. */
em_status em__set_error(em_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to the current message (adds context on the way up). */
void em__prefix_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set the error and return NULL (for functions returning a pointer). */
#define EM_FAIL(status, ...) (em__set_error((status), __VA_ARGS__), (void *)0)

#define EM_CHECK(call)              \
  do {                              \
    em_status em__st_ = (call);     \
    if (EM_UNLIKELY(em__st_)) return em__st_; \
  } while (0)

#define EM_CHECK_GOTO(call, st, label) \
  do {                                 \
    (st) = (call);                     \
    if (EM_UNLIKELY(st)) goto label;   \
  } while (0)

/* For calls returning a pointer: jump to label with st set to the status
 * the failed call left. */
#define EM_CHECK_PTR_GOTO(ptr, st, label)           \
  do {                                              \
    if (EM_UNLIKELY(!(ptr))) {                      \
      (st) = em_last_status();                      \
      if ((st) == EM_OK) (st) = EM_ERR_INTERNAL;    \
      goto label;                                   \
    }                                               \
  } while (0)

/* "[3, 4]" into buf; returns buf. */
const char *em__shape_str(int ndim, const int64_t *shape, char *buf, size_t size);
#define EM_SHAPE_STR_MAX 256
/* Shape of t as a string in a thread-local rotating buffer (8 slots) so
 * several can appear in one message. */
const char *em__tshape(const em_tensor *t);

/* Wraps dim into [0, ndim) (ndim 0 accepts -1 and 0 as PyTorch does);
 * errors name op. */
em_status em__wrap_dim(const char *op, int dim, int ndim, int *out);
/* Wraps a dim list into out (sorted? no: order kept), rejecting repeats. */
em_status em__wrap_dims(const char *op, int ndims, const int64_t *dims, int ndim, int64_t *out);
/* Checks shape entries >= 0 and that the product fits in int64. */
em_status em__check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel);

/* ---- the op list ----------------------------------------------------------
 * Every op that has kernels or records autograd nodes. One X-macro per
 * family; families live beside their front end (ops_<family>.c). */
#define EM_OPS_COPY(X) \
  X(COPY) X(CLONE) X(TO_DTYPE) X(TO_DEVICE) X(FILL) X(DETACH)
#define EM_OPS_VIEW(X) \
  X(VIEW) X(PERMUTE) X(SLICE) X(SELECT) X(EXPAND) X(AS_STRIDED)
#define EM_OPS_SHAPE(X) X(CAT) X(FLIP) X(REPEAT) X(PAD)
#define EM_OPS_UNARY_EXTRA(X)                                                        \
  X(ISNAN) X(ISINF) X(ISFINITE) X(LEAKY_RELU) X(GELU) X(GELU_TANH) X(SOFTPLUS) X(ELU) \
  X(HARDTANH) X(CLAMP) X(POW_SCALAR) X(RPOW_SCALAR)
/* RELU_BACKWARD (internal, for autograd): out = y > 0 ? g : 0 with
 * operands (g, y) — ReLU's gradient in one pass. */
#define EM_OPS_BINARY_EXTRA(X) X(EQ) X(NE) X(LT) X(LE) X(GT) X(GE) X(RELU_BACKWARD)
#define EM_OPS_TERNARY(X) X(WHERE) X(LERP) X(ADDCMUL) X(ADDCDIV)
#define EM_OPS_REDUCE(X)                                                           \
  X(SUM) X(MEAN) X(PROD) X(AMAX) X(AMIN) X(ALL) X(ANY) X(VAR) X(STD) X(LOGSUMEXP)   \
  X(NORM) X(COUNT_NONZERO) X(MAX_DIM) X(MIN_DIM) X(ARGMAX) X(ARGMIN) X(SOFTMAX)     \
  X(LOG_SOFTMAX) X(CUMSUM) X(CUMPROD)
#define EM_OPS_LINALG(X) X(MM) X(BMM) X(MV) X(DOT) X(ADDMM) X(BADDBMM)
#define EM_OPS_INDEX(X)                                                               \
  X(INDEX_SELECT) X(GATHER) X(SCATTER) X(SCATTER_VALUE) X(SCATTER_ADD) X(INDEX_ADD)   \
  X(MASKED_FILL) X(MASKED_SELECT) X(NONZERO) X(ONE_HOT) X(INDEX) X(INDEX_PUT)
#define EM_OPS_RANDOM(X) \
  X(UNIFORM) X(NORMAL) X(BERNOULLI) X(BERNOULLI_P) X(RANDINT) X(ARANGE) X(LINSPACE)

/* Upper-case names for the public unary/binary X-lists. */
#define EM__OP_UNARY_ENUM(name) EM_OP_UNARY_##name,
#define EM__OP_BINARY_ENUM(name) EM_OP_BINARY_##name,
#define EM__OP_ENUM(NAME) EM_OP_##NAME,

typedef enum em_op {
  EM_OPS_COPY(EM__OP_ENUM)
  EM_OPS_VIEW(EM__OP_ENUM)
  EM_OPS_SHAPE(EM__OP_ENUM)
  EM_UNARY_OPS(EM__OP_UNARY_ENUM)
  EM_OPS_UNARY_EXTRA(EM__OP_ENUM)
  EM_BINARY_OPS(EM__OP_BINARY_ENUM)
  EM_OPS_BINARY_EXTRA(EM__OP_ENUM)
  EM_OPS_TERNARY(EM__OP_ENUM)
  EM_OPS_REDUCE(EM__OP_ENUM)
  EM_OPS_LINALG(EM__OP_ENUM)
  EM_OPS_INDEX(EM__OP_ENUM)
  EM_OPS_RANDOM(EM__OP_ENUM)
  EM_OP_COUNT
} em_op;

/* "add", "mm", ... (lower case, for messages and autograd node names). */
const char *em__op_name(em_op op);

/* Scalars and small lists an op passes to its kernel and to autograd. */
typedef struct em_op_attrs {
  double f[4];             /* alpha, slope, bounds, exponent, beta, ... */
  int64_t i[4];            /* dim, keepdim, flags, ... */
  int nd;                  /* used entries of d and d2 */
  int64_t d[EM_MAX_DIMS];  /* dim lists, permutations, sizes */
  int64_t d2[EM_MAX_DIMS]; /* a second list (strides for as_strided, ...) */
  em_scalar s;             /* a scalar operand (fill value, ...) */
} em_op_attrs;

/* ---- kernel dispatch -----------------------------------------------------
 * em__kernels[op][device type][dtype] holds a kernel whose signature the
 * op's family defines (em_loop_fn for elementwise ops). Filled once by
 * em__cpu_register_kernels() (and em__cuda_register_kernels() when built
 * with CUDA) before the first lookup. */
void em__register_kernel(em_op op, em_device_type dev, em_dtype dt, void *fn);
/* The kernel, or NULL with the error "<op>: no kernel for cpu/bool" set. */
void *em__kernel(em_op op, em_device_type dev, em_dtype dt);
/* Each CPU kernel family registers itself from core/cpu/register.c. */
void em__cpu_register_kernels(void);

/* ---- elementwise iteration -----------------------------------------------*/

#define EM_ITER_MAX_OPERANDS 5

/* Operands broadcast over a shape, dims coalesced, innermost first. */
typedef struct em_iter {
  int nops;
  int ndim;
  int64_t numel;
  int64_t shape[EM_MAX_DIMS];                          /* [0] innermost */
  int64_t strides[EM_MAX_DIMS][EM_ITER_MAX_OPERANDS];  /* bytes, [dim][operand] */
  char *data[EM_ITER_MAX_OPERANDS];
  em_device device; /* the operands' device: em__iter_run hands CUDA ones to core/cuda */
} em_iter;

/* A 1-D inner loop over n elements: data[k] points at operand k's first
 * element, strides[k] is its byte stride (0 for a broadcast operand).
 * Operand 0 is the output. Kernels never validate. */
typedef void (*em_loop_fn)(char **data, const int64_t *strides, int64_t n,
                           const em_op_attrs *a);

/* Sets up iteration of ops[0..n) over (ndim, shape); each operand must be
 * broadcastable to it (checked by the caller). */
void em__iter_init(em_iter *it, int n, em_tensor *const *ops, int ndim, const int64_t *shape);
/* Runs fn over the whole iteration, split across threads when numel >
 * grain (grain <= 0 picks the default for cheap ops). A device iteration
 * returns its launch status (the CPU always EM_OK). */
em_status em__iter_run(const em_iter *it, em_loop_fn fn, const em_op_attrs *a, int64_t grain);
/* Runs fn over a sub-range [begin, end) of the flattened iteration. */
void em__iter_run_range(const em_iter *it, em_loop_fn fn, const em_op_attrs *a,
                        int64_t begin, int64_t end);

#define EM_GRAIN_CHEAP 32768  /* elements per task for memory-bound ops */
#define EM_GRAIN_COSTLY 4096  /* for transcendental ops */

/* out = kernel(op)(inputs...) elementwise with broadcasting. Input i is
 * converted to in_dtypes[i] first when it differs (EM_DTYPE_UNDEFINED:
 * keep). The kernel is looked up by (op, device, key). out_dtype is the
 * result dtype. Allocates the output; records nothing. */
em_tensor *em__elementwise(em_op op, em_dtype key, em_dtype out_dtype, int nin,
                           em_tensor *const *in, const em_dtype *in_dtypes,
                           const em_op_attrs *a, int64_t grain);
/* Same into an existing out (which must have the broadcast shape and dtype
 * out->dtype; inputs may alias out element for element). */
em_status em__elementwise_into(em_op op, em_dtype key, em_tensor *out, int nin,
                               em_tensor *const *in, const em_dtype *in_dtypes,
                               const em_op_attrs *a, int64_t grain);

/* A contiguous copy of t with dtype dt on t's device; never records
 * (core/ops_copy.c). */
em_tensor *em__convert(em_tensor *t, em_dtype dt);
/* Replaces *t by its conversion to dt, releasing the old reference; on
 * failure *t is NULL and the error set. */
em_status em__convert_owned(em_tensor **t, em_dtype dt);
/* The dtype the floating layers compute in: float64 stays, float32,
 * float16 and bfloat16 compute in float32. */
static inline em_dtype em__compute_dtype(em_dtype dt) {
  return dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32;
}
/* t as a contiguous tensor of dtype dt: t itself (retained) when it
 * already is one, else a converted copy. Never records. */
static inline em_tensor *em__as_compute(em_tensor *t, em_dtype dt) {
  if (t->dtype == dt && em_tensor_is_contiguous(t)) return em_tensor_retain(t);
  return em__convert(t, dt);
}

/* "Float", "Long", ... as PyTorch names dtypes in messages (core/dtype.c). */
const char *em__torch_dtype_name(em_dtype dt);
/* Helpers shared by the elementwise front ends (core/ops_binary.c). */
/* Errors for in-place ops whose result cannot be written into self. */
em_status em__check_inplace_cast(const char *name, em_dtype result, em_dtype self);
em_status em__check_inplace_shape(const char *name, em_tensor *self, int n,
                                  em_tensor *const *others);
/* A fast path for small dense operands of the right dtype: runs the
 * kernel directly; false when the operands do not qualify. */
bool em__elementwise_small(em_op op, em_dtype key, em_dtype rt, int n, em_tensor *const *in,
                           const em_op_attrs *a, int64_t grain, em_tensor **out);
em_tensor *em__pow_scalar(em_tensor *t, em_scalar exponent);

/* PyTorch's result_type over tensors (wrapped numbers and 0-dim tensors
 * take part with lower priority). */
em_dtype em__result_type(int n, em_tensor *const *ts);

/* ---- threads ---------------------------------------------------------------*/

typedef void (*em_range_fn)(void *ctx, int64_t begin, int64_t end);
/* Calls fn over [0, n) in chunks of at least grain, on up to
 * em_get_num_threads() threads (the caller is one of them). Nested calls
 * run inline. Returns when every chunk is done. */
void em__parallel_for(int64_t n, int64_t grain, em_range_fn fn, void *ctx);
bool em__in_parallel_region(void);

/* ---- linalg kernels (core/cpu/linalg.c) --------------------------------------
 * The batched product c[b] = beta * c[b] + alpha * a[b] @ b[b] for the
 * dtypes BLAS does not serve (and for k == 0). Registered under EM_OP_MM
 * for every dtype. a is [batch, n, k] with any strides (elements; batch
 * strides may be 0), b is [batch, k, m] likewise but with contiguous rows
 * (sb1 == 1); c is contiguous [batch, n, m]. beta 0:
 * c is not read. The kernel computes the flattened rows [r0, r1) of
 * [batch * n] and may run on several threads at once. */
typedef struct em_gemm_args {
  int64_t batch, n, m, k;
  const char *a, *b;
  char *c;
  int64_t sab, sa0, sa1; /* a's strides (batch, row, col), elements */
  int64_t sbb, sb0, sb1;
  double alpha, beta;
  /* A device kernel (one call does the whole product) stores its status
   * here, its error message in the calling thread's. */
  em_status *status;
} em_gemm_args;
typedef void (*em_gemm_fn)(const em_gemm_args *g, int64_t r0, int64_t r1);

/* ---- BLAS (core/blas.c) ------------------------------------------------------
 * Row-major GEMM C = alpha * op(A) op(B) + beta * C through OpenBLAS when it
 * loads, else a blocked C fallback. */
void em__sgemm(bool transa, bool transb, int64_t m, int64_t n, int64_t k, float alpha,
               const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
               int64_t ldc);
void em__dgemm(bool transa, bool transb, int64_t m, int64_t n, int64_t k, double alpha,
               const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
               double *c, int64_t ldc);
void em__blas_set_num_threads(int n);

/* ---- CPU memory (core/cpu_cache.c) ---------------------------------------------
 * Blocks of at least EM_CPU_CACHE_MIN bytes are kept after free (up to a
 * limit: env EMBER_CPU_CACHE_MB, default 1024) and reused, so large
 * tensors do not page-fault afresh on every allocation. */
#define EM_CPU_CACHE_MIN ((size_t)1 << 20)
void *em__cpu_cache_alloc(size_t nbytes);
void em__cpu_cache_free(void *p, size_t nbytes);

/* ---- tensor internals --------------------------------------------------------*/

/* A new tensor over storage s (retained) with the given geometry. strides
 * NULL: row-major. Does not set base. */
em_tensor *em__tensor_new(em_storage *s, em_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *strides, int64_t offset);
/* A view of t with new geometry: shares t's storage, base = t's base or t. */
em_tensor *em__tensor_view_of(em_tensor *t, int ndim, const int64_t *shape,
                              const int64_t *strides, int64_t offset);
void em__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* One step of a busy-wait: tells the core (and a hyperthread sibling)
 * that this thread only waits. */
static inline void em__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}
static inline void em__bump_version(em_tensor *t) {
  atomic_fetch_add_explicit(&t->storage->version, 1, memory_order_relaxed);
}
static inline char *em__data_ptr(const em_tensor *t) {
  return (char *)t->storage->data + t->offset * (int64_t)em_dtype_size((em_dtype)t->dtype);
}
/* float32 matmul precision (core/matmul_precision.c): EM__PREC_*. */
enum { EM__PREC_HIGHEST, EM__PREC_HIGH, EM__PREC_MEDIUM };
int em__matmul_precision(void);
bool em__allow_reduced_precision_reduction(void);
/* Checks that tensors share a device; errors name op. */
em_status em__check_same_device(const char *op, int n, em_tensor *const *ts);

/* Element access for slow generic paths (tests, printing, indexing). */
double em__load_f64(const void *p, em_dtype dt);
int64_t em__load_i64(const void *p, em_dtype dt);
void em__store_f64(void *p, em_dtype dt, double v);
void em__store_scalar(void *p, em_dtype dt, em_scalar v);

/* ---- autograd hooks ------------------------------------------------------------
 * core records nodes through this table, which autograd/ installs the first
 * time any tensor is made to require grad. While it is NULL nothing can
 * require grad and recording is skipped at the cost of one load. */
typedef struct em__ag_vtable {
  /* Records op with inputs in[0..nin) and outputs out[0..nout). */
  em_status (*record)(em_op op, int nin, em_tensor *const *in, int nout,
                      em_tensor *const *out, const em_op_attrs *a);
  /* self was overwritten in place by result's value: self takes result's
   * history (and its view base gets a copy-slices node). */
  em_status (*rebase)(em_tensor *self, em_tensor *result);
  /* Error if self may not be modified in place under grad mode. */
  em_status (*check_inplace)(const char *op, em_tensor *self);
  void (*free_meta)(struct em_ag_meta *m);
  /* A new tensor sharing t's data with its autograd identity copied
   * (views): called when a view op records. */
} em__ag_vtable;

extern const em__ag_vtable *_Atomic em__ag;

static inline const em__ag_vtable *em__ag_get(void) {
  return atomic_load_explicit(&em__ag, memory_order_acquire);
}

/* True when op inputs need a node: autograd installed, grad mode on and
 * some input requires grad. */
static inline bool em__should_record(int n, em_tensor *const *in) {
  if (EM_LIKELY(!atomic_load_explicit(&em__ag, memory_order_relaxed))) return false;
  if (!em_is_grad_enabled()) return false;
  for (int i = 0; i < n; i++)
    if (in[i] && in[i]->requires_grad) return true;
  return false;
}
/* Records if needed; on failure releases *out and returns NULL. */
em_tensor *em__record1(em_op op, int nin, em_tensor *const *in, em_tensor *out,
                       const em_op_attrs *a);
em_status em__record(em_op op, int nin, em_tensor *const *in, int nout, em_tensor *const *out,
                     const em_op_attrs *a);

/* In-place ops under autograd: self <- fn(clone(self), ctx) computed out of
 * place, then written back and self rebased onto the result's history.
 * Used by every in-place op when em__should_record says so. */
typedef em_tensor *(*em__outplace_fn)(em_tensor *self_copy, void *ctx);
em_status em__inplace_recorded(const char *op, em_tensor *self, em__outplace_fn fn, void *ctx);

/* Opens path to read, refusing anything but a regular file (a FIFO is
 * refused without waiting for a writer); the fd (close-on-exec), or -1
 * with the error set, naming op and path. *size gets the file's size. */
int em__open_regular(const char *op, const char *path, int64_t *size);

/* Files written atomically (core/files.c): the bytes go to a
 * temporary file beside path; commit fsyncs it, renames it over path and
 * fsyncs the directory, so a reader sees the old file or the whole new
 * one, never a part, whatever happens meanwhile. As an in-place write
 * would, a symlink is followed (its target is replaced) and a file that
 * exists keeps its permissions. Every error names op and the file. After
 * open fails, or after commit or abort, nothing is left on disk but (on
 * a successful commit) path. */
typedef struct em__afile {
  int fd;
  char *tmp, *target; /* target: path, its symlinks resolved */
  const char *op;
} em__afile;
em_status em__afile_open(em__afile *f, const char *op, const char *path);
em_status em__afile_write(em__afile *f, const void *buf, size_t n);
em_status em__afile_commit(em__afile *f); /* on failure the temporary file is removed */
void em__afile_abort(em__afile *f);

#endif
