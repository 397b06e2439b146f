/* Storage, tensor objects, geometry accessors, empty/from_data/from_blob,
 * grad mode, element access helpers. */
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"

const em__ag_vtable *_Atomic em__ag = NULL;

/* ---- CPU memory ----------------------------------------------------------------
 * Small storages keep header and data in one block from malloc (glibc's
 * per-thread cache makes that a few dozen instructions; data is 16-byte
 * aligned, enough for tiny tensors). Medium ones use one 64-byte aligned
 * block. Large ones (>= EM_CPU_CACHE_MIN) come from a cache of freed blocks,
 * because glibc returns big blocks to the kernel on free and every new one
 * would page-fault all over again on first touch (a 64 MiB output costs
 * more to fault in than to compute). */
#define EM_STORAGE_HEADER 64
#define EM_SMALL_STORAGE 1024 /* header + data up to this: plain malloc */
_Static_assert(sizeof(em_storage) <= EM_STORAGE_HEADER, "storage header fits in 64 bytes");

static em_status cpu_alloc(em_allocator *self, size_t nbytes, em_device dev, void **data,
                           void **ctx) {
  void *p = em__cpu_cache_alloc(nbytes);
  if (!p) return em__set_error(EM_ERR_NOMEM, "cpu allocator: cannot allocate %zu bytes", nbytes);
  *data = p;
  *ctx = NULL;
  return EM_OK;
}
static void cpu_free(em_allocator *self, void *data, size_t nbytes, void *ctx) {
  em__cpu_cache_free(data, nbytes);
}

static em_allocator cpu_allocator = {"cpu", EM_CPU, cpu_alloc, cpu_free, NULL};
em_allocator *em_cpu_allocator(void) { return &cpu_allocator; }

static void storage_init(em_storage *s, em_device dev, size_t nbytes) {
  atomic_init(&s->refcount, 1);
  atomic_init(&s->version, 0);
  s->flags = 0;
  s->device = dev;
  s->nbytes = nbytes;
  s->allocator = NULL;
  s->ctx = NULL;
  s->data = NULL;
}

/* Default allocators of the other device types, installed at load time by
 * their backend (core/cuda/register.c: the CUDA caching allocator). */
em_allocator *em__device_allocators[EM_DEVICE_TYPE_COUNT];

em_storage *em_storage_create(em_allocator *a, size_t nbytes, em_device dev) {
  if (!a) {
    if (dev.type != EM_CPU) {
      a = dev.type > EM_CPU && dev.type < EM_DEVICE_TYPE_COUNT ? em__device_allocators[dev.type]
                                                               : NULL;
      if (!a)
        return EM_FAIL(EM_ERR_DEVICE, "storage: no allocator registered for device type %d",
                       dev.type);
    } else {
      a = &cpu_allocator;
    }
  }
  if (a == &cpu_allocator && nbytes < EM_CPU_CACHE_MIN) {
    void *block = NULL;
    if (nbytes > (size_t)INT64_MAX - EM_STORAGE_HEADER)
      return EM_FAIL(EM_ERR_NOMEM, "cpu allocator: cannot allocate %zu bytes", nbytes);
    if (EM_STORAGE_HEADER + nbytes <= EM_SMALL_STORAGE)
      block = malloc(EM_STORAGE_HEADER + nbytes);
    else if (posix_memalign(&block, 64, EM_STORAGE_HEADER + nbytes) != 0)
      block = NULL;
    if (!block) return EM_FAIL(EM_ERR_NOMEM, "cpu allocator: cannot allocate %zu bytes", nbytes);
    em_storage *s = block;
    storage_init(s, dev, nbytes);
    s->data = (char *)block + EM_STORAGE_HEADER;
    return s;
  }
  em_storage *s = malloc(sizeof *s);
  if (!s) return EM_FAIL(EM_ERR_NOMEM, "storage: out of memory");
  storage_init(s, dev, nbytes);
  s->allocator = a;
  if (a->alloc(a, nbytes, dev, &s->data, &s->ctx) != EM_OK) {
    free(s);
    return NULL;
  }
  return s;
}

struct blob_ctx {
  void (*deleter)(void *data, void *ctx);
  void *ctx;
};
static void blob_free(em_allocator *self, void *data, size_t nbytes, void *ctx) {
  struct blob_ctx *b = ctx;
  if (b->deleter) b->deleter(data, b->ctx);
  free(b);
}
static em_allocator blob_allocator = {"blob", EM_CPU, NULL, blob_free, NULL};

em_storage *em_storage_from_blob(void *data, size_t nbytes, em_device dev,
                                 void (*deleter)(void *data, void *ctx), void *ctx) {
  em_storage *s = malloc(sizeof *s);
  struct blob_ctx *b = malloc(sizeof *b);
  if (!s || !b) {
    free(s);
    free(b);
    return EM_FAIL(EM_ERR_NOMEM, "storage: out of memory");
  }
  storage_init(s, dev, nbytes);
  b->deleter = deleter;
  b->ctx = ctx;
  s->allocator = &blob_allocator;
  s->ctx = b;
  s->data = data;
  return s;
}

void em_storage_retain(em_storage *s) {
  atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
}

void em_storage_release(em_storage *s) {
  if (!s) return;
  if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) != 1) return;
  if (!s->allocator) {
    free(s); /* inline CPU block: header and data together */
    return;
  }
  s->allocator->free(s->allocator, s->data, s->nbytes, s->ctx);
  free(s);
}

/* ---- tensors ------------------------------------------------------------------ */

void em__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i] > 1 ? shape[i] : 1;
  }
}

em_tensor *em__tensor_new(em_storage *s, em_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *strides, int64_t offset) {
  em_tensor *t = malloc(sizeof *t);
  if (!t) return EM_FAIL(EM_ERR_NOMEM, "tensor: out of memory");
  atomic_init(&t->refcount, 1);
  t->dtype = (int8_t)dt;
  t->ndim = (int8_t)ndim;
  t->requires_grad = false;
  t->is_wrapped_number = false;
  t->device = s->device;
  t->storage = s;
  em_storage_retain(s);
  t->offset = offset;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    t->shape[i] = shape[i];
    n *= shape[i];
  }
  t->numel = n;
  if (strides)
    memcpy(t->strides, strides, (size_t)ndim * sizeof(int64_t));
  else
    em__contiguous_strides(ndim, shape, t->strides);
  t->base = NULL;
  t->ag = NULL;
  t->user = NULL;
  return t;
}

em_tensor *em__tensor_view_of(em_tensor *t, int ndim, const int64_t *shape,
                              const int64_t *strides, int64_t offset) {
  em_tensor *v = em__tensor_new(t->storage, (em_dtype)t->dtype, ndim, shape, strides, offset);
  if (!v) return NULL;
  v->base = em_tensor_retain(t->base ? t->base : t);
  return v;
}

em_tensor *em_tensor_retain(em_tensor *t) {
  atomic_fetch_add_explicit(&t->refcount, 1, memory_order_relaxed);
  return t;
}

void em_tensor_release(em_tensor *t) {
  if (!t) return;
  if (atomic_fetch_sub_explicit(&t->refcount, 1, memory_order_acq_rel) != 1) return;
  if (t->ag) {
    const em__ag_vtable *ag = em__ag_get();
    assert(ag && "autograd meta without autograd");
    ag->free_meta(t->ag);
  }
  em_tensor_release(t->base);
  em_storage_release(t->storage);
  free(t);
}

void em_tensor_list_release(em_tensor **list, int n) {
  if (!list) return;
  for (int i = 0; i < n; i++) em_tensor_release(list[i]);
  free(list);
}

int em_tensor_ndim(const em_tensor *t) { return t->ndim; }
const int64_t *em_tensor_shape(const em_tensor *t) { return t->shape; }
const int64_t *em_tensor_strides(const em_tensor *t) { return t->strides; }
int64_t em_tensor_numel(const em_tensor *t) { return t->numel; }
em_dtype em_tensor_dtype(const em_tensor *t) { return (em_dtype)t->dtype; }
em_device em_tensor_device(const em_tensor *t) { return t->device; }
uint64_t em_tensor_version(const em_tensor *t) {
  return atomic_load_explicit(&t->storage->version, memory_order_relaxed);
}
void *em_tensor_data(const em_tensor *t) { return t->numel ? em__data_ptr(t) : NULL; }

bool em_tensor_is_contiguous(const em_tensor *t) {
  int64_t expected = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] == 1) continue;
    if (t->shape[i] == 0) return true;
    if (t->strides[i] != expected) return false;
    expected *= t->shape[i];
  }
  return true;
}

int64_t em_tensor_size(const em_tensor *t, int dim) {
  int d;
  if (em__wrap_dim("size", dim, t->ndim, &d)) return -1;
  return t->ndim ? t->shape[d] : 1;
}

em_status em__check_same_device(const char *op, int n, em_tensor *const *ts) {
  for (int i = 1; i < n; i++) {
    if (ts[i] && ts[0] && !em_device_eq(ts[i]->device, ts[0]->device)) {
      char a[16], b[16];
      return em__set_error(EM_ERR_DEVICE,
                           "%s: expected all tensors to be on the same device, but found at "
                           "least two devices, %s and %s",
                           op, em_device_str(ts[0]->device, a, sizeof a),
                           em_device_str(ts[i]->device, b, sizeof b));
    }
  }
  return EM_OK;
}

/* ---- creation ----------------------------------------------------------------- */

em_tensor *em_tensor_empty_strided(int ndim, const int64_t *shape, const int64_t *strides,
                                   em_dtype dt, em_device dev, em_allocator *a) {
  int64_t numel;
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "empty: invalid dtype %d", (int)dt);
  if (em__check_shape("empty", ndim, shape, &numel)) return NULL;
  size_t span = 0; /* elements the geometry reaches */
  if (numel > 0) {
    int64_t last = 0;
    for (int i = 0; i < ndim; i++) {
      int64_t s = strides ? strides[i] : 1;
      if (s < 0) return EM_FAIL(EM_ERR_INVALID, "empty_strided: negative stride %lld",
                                (long long)s);
      int64_t reach;
      if (__builtin_mul_overflow(shape[i] - 1, s, &reach) ||
          __builtin_add_overflow(last, reach, &last))
        return EM_FAIL(EM_ERR_INVALID, "empty_strided: strides overflow");
    }
    span = strides ? (size_t)last + 1 : (size_t)numel;
  }
  size_t esize = em_dtype_size(dt), nbytes;
  if (__builtin_mul_overflow(span, esize, &nbytes))
    return EM_FAIL(EM_ERR_NOMEM, "empty: %zu elements of %s overflow the address space", span,
                   em_dtype_name(dt));
  em_storage *s = em_storage_create(a, nbytes, dev);
  if (!s) return NULL;
  em_tensor *t = em__tensor_new(s, dt, ndim, shape, strides, 0);
  em_storage_release(s);
  return t;
}

em_tensor *em_tensor_empty_on(int ndim, const int64_t *shape, em_dtype dt, em_device dev) {
  return em_tensor_empty_strided(ndim, shape, NULL, dt, dev, NULL);
}

em_tensor *em_tensor_empty(int ndim, const int64_t *shape, em_dtype dt) {
  return em_tensor_empty_strided(ndim, shape, NULL, dt, EM_DEVICE_CPU, NULL);
}

em_tensor *em_tensor_from_data(const void *data, int ndim, const int64_t *shape, em_dtype dt) {
  if (!data && ndim > 0) {
    int64_t n;
    if (em__check_shape("from_data", ndim, shape, &n)) return NULL;
    if (n > 0) return EM_FAIL(EM_ERR_INVALID, "from_data: data is NULL");
  }
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (t && t->numel) memcpy(em__data_ptr(t), data, (size_t)t->numel * em_dtype_size(dt));
  return t;
}

em_tensor *em_tensor_from_blob(void *data, int ndim, const int64_t *shape,
                               const int64_t *strides, em_dtype dt, em_device dev,
                               void (*deleter)(void *data, void *ctx), void *ctx) {
  int64_t numel;
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "from_blob: invalid dtype %d", dt);
  if (em__check_shape("from_blob", ndim, shape, &numel)) return NULL;
  if (!data && numel > 0) return EM_FAIL(EM_ERR_INVALID, "from_blob: data is NULL");
  size_t span = (size_t)numel;
  if (strides && numel > 0) {
    int64_t last = 0;
    for (int i = 0; i < ndim; i++) {
      if (strides[i] < 0)
        return EM_FAIL(EM_ERR_INVALID, "from_blob: negative stride %lld", (long long)strides[i]);
      last += (shape[i] - 1) * strides[i];
    }
    span = (size_t)last + 1;
  }
  em_storage *s = em_storage_from_blob(data, span * em_dtype_size(dt), dev, deleter, ctx);
  if (!s) return NULL;
  em_tensor *t = em__tensor_new(s, dt, ndim, shape, strides, 0);
  em_storage_release(s);
  return t;
}

em_tensor *em_tensor_scalar(em_scalar s, em_dtype dt) {
  if (dt == EM_DTYPE_UNDEFINED) dt = em_scalar_dtype(s);
  em_tensor *t = em_tensor_empty(0, NULL, dt);
  if (t) em__store_scalar(em__data_ptr(t), dt, s);
  return t;
}

em_tensor *em_tensor_wrapped_scalar(em_scalar s) {
  /* Integers keep int64 (exact); floats are held in float64 so the value
   * is exact too — promotion uses the kind, not the storage type. */
  em_dtype dt = s.kind == EM_SCALAR_FLOAT ? EM_FLOAT64 : em_scalar_dtype(s);
  em_tensor *t = em_tensor_scalar(s, dt);
  if (t) t->is_wrapped_number = true;
  return t;
}

/* ---- grad mode ------------------------------------------------------------------ */

static __thread bool grad_disabled; /* zero-initialised: enabled by default */

bool em_is_grad_enabled(void) { return !grad_disabled; }
bool em_set_grad_enabled(bool enabled) {
  bool prev = !grad_disabled;
  grad_disabled = !enabled;
  return prev;
}

/* ---- element access (slow paths) -------------------------------------------------- */

double em__load_f64(const void *p, em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return *(const float *)p;
    case EM_FLOAT64: return *(const double *)p;
    case EM_FLOAT16: return em_half_to_float(*(const uint16_t *)p);
    case EM_BFLOAT16: return em_bf16_to_float(*(const uint16_t *)p);
    case EM_INT8: return *(const int8_t *)p;
    case EM_INT16: return *(const int16_t *)p;
    case EM_INT32: return *(const int32_t *)p;
    case EM_INT64: return (double)*(const int64_t *)p;
    case EM_UINT8: return *(const uint8_t *)p;
    case EM_BOOL: return *(const bool *)p;
    default: return NAN;
  }
}

/* float -> int conversion that is defined for every input (C leaves
 * out-of-range conversion undefined): saturate, NaN -> 0. */
static int64_t f64_to_i64(double v) {
  if (v != v) return 0;
  if (v >= 9.2233720368547758e18) return INT64_MAX;
  if (v <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)v;
}

int64_t em__load_i64(const void *p, em_dtype dt) {
  switch (dt) {
    case EM_INT8: return *(const int8_t *)p;
    case EM_INT16: return *(const int16_t *)p;
    case EM_INT32: return *(const int32_t *)p;
    case EM_INT64: return *(const int64_t *)p;
    case EM_UINT8: return *(const uint8_t *)p;
    case EM_BOOL: return *(const bool *)p;
    default: return f64_to_i64(em__load_f64(p, dt));
  }
}

void em__store_f64(void *p, em_dtype dt, double v) {
  switch (dt) {
    case EM_FLOAT32: *(float *)p = (float)v; break;
    case EM_FLOAT64: *(double *)p = v; break;
    case EM_FLOAT16: *(uint16_t *)p = em_float_to_half((float)v); break;
    case EM_BFLOAT16: *(uint16_t *)p = em_float_to_bf16((float)v); break;
    case EM_INT8: *(int8_t *)p = (int8_t)f64_to_i64(v); break;
    case EM_INT16: *(int16_t *)p = (int16_t)f64_to_i64(v); break;
    case EM_INT32: *(int32_t *)p = (int32_t)f64_to_i64(v); break;
    case EM_INT64: *(int64_t *)p = f64_to_i64(v); break;
    case EM_UINT8: *(uint8_t *)p = (uint8_t)f64_to_i64(v); break;
    case EM_BOOL: *(bool *)p = v != 0; break;
    default: break;
  }
}

void em__store_scalar(void *p, em_dtype dt, em_scalar v) {
  if (v.kind == EM_SCALAR_FLOAT || em_dtype_is_float(dt)) {
    em__store_f64(p, dt, em_scalar_to_double(v));
    return;
  }
  int64_t i = v.v.i;
  switch (dt) {
    case EM_INT8: *(int8_t *)p = (int8_t)i; break;
    case EM_INT16: *(int16_t *)p = (int16_t)i; break;
    case EM_INT32: *(int32_t *)p = (int32_t)i; break;
    case EM_INT64: *(int64_t *)p = i; break;
    case EM_UINT8: *(uint8_t *)p = (uint8_t)i; break;
    case EM_BOOL: *(bool *)p = i != 0; break;
    default: break;
  }
}

em_status em_tensor_item(em_tensor *t, em_scalar *out) {
  if (t->numel != 1)
    return em__set_error(EM_ERR_INVALID,
                         "item: a Tensor with %lld elements cannot be converted to Scalar",
                         (long long)t->numel);
  if (t->device.type != EM_CPU) {
    em_tensor *c = em_tensor_to_device(t, EM_DEVICE_CPU);
    if (!c) return em_last_status();
    em_status st = em_tensor_item(c, out);
    em_tensor_release(c);
    return st;
  }
  const void *p = em__data_ptr(t);
  em_dtype dt = (em_dtype)t->dtype;
  if (em_dtype_is_float(dt)) *out = em_scalar_float(em__load_f64(p, dt));
  else if (dt == EM_BOOL) *out = em_scalar_bool(*(const bool *)p);
  else *out = em_scalar_int(em__load_i64(p, dt));
  return EM_OK;
}

double em_tensor_item_double(em_tensor *t) {
  em_scalar s;
  if (em_tensor_item(t, &s)) return NAN;
  return em_scalar_to_double(s);
}
