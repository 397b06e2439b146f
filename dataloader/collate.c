/* Collation: the batch builder (heap or shared-memory slot), the layout of
 * a batch in a slot, default_collate / default_convert.
 *
 * Slot layout: a header (em__dl_slot_header) in the first EM_DL_SLOT_HDR
 * bytes, then the data area: the tensors, their descriptors (dtype, shape,
 * strides and element offset of each) and the meta bytes. In a worker the
 * builder bump-allocates batch tensors inside the data area (64-byte
 * aligned), so default_collate copies every sample straight to its final
 * place and the main process only wraps the same bytes: one write per
 * batch. Tensors a collate function made elsewhere
 * are copied in when the batch is written. */
#include <stdlib.h>

#include "dataloader/dataloader_impl.h"

/* ---- the builder ------------------------------------------------------------------- */

void em__dl_builder_init_heap(em_dl_batch_builder *b) {
  memset(b, 0, sizeof *b);
  b->mode = EM_DL_BUILDER_HEAP;
}

em_status em__dl_builder_init_slot(em_dl_batch_builder *b, void *data, size_t cap) {
  memset(b, 0, sizeof *b);
  b->mode = EM_DL_BUILDER_SLOT;
  b->slot = em_storage_from_blob(data, cap, EM_DEVICE_CPU, NULL, NULL);
  return b->slot ? EM_OK : em_last_status();
}

void em__dl_builder_deinit(em_dl_batch_builder *b) {
  for (int i = 0; i < b->n; i++) em_tensor_release(b->t[i]);
  free(b->t);
  b->t = NULL;
  b->n = b->cap = 0;
  free(b->meta);
  b->meta = NULL;
  b->meta_len = 0;
  if (b->slot) em_storage_release(b->slot);
  b->slot = NULL;
}

em_tensor *em_dl_batch_builder_alloc(em_dl_batch_builder *b, int ndim, const int64_t *shape,
                                     em_dtype dt) {
  int64_t numel;
  if (!b) return EM_FAIL(EM_ERR_INVALID, "batch builder alloc: builder is NULL");
  if (!em_dtype_is_valid(dt))
    return EM_FAIL(EM_ERR_DTYPE, "batch builder alloc: invalid dtype %d", (int)dt);
  if (ndim < 0 || ndim > EM_MAX_DIMS)
    return EM_FAIL(EM_ERR_INVALID, "batch builder alloc: ndim %d out of range [0, %d]", ndim,
                   EM_MAX_DIMS);
  if (em__check_shape("batch builder alloc", ndim, shape, &numel)) return NULL;
  size_t es = em_dtype_size(dt), nbytes;
  if (__builtin_mul_overflow((size_t)numel, es, &nbytes))
    return EM_FAIL(EM_ERR_NOMEM, "batch builder alloc: %lld elements overflow", (long long)numel);
  if (b->mode == EM_DL_BUILDER_SLOT) {
    size_t off = em__dl_align(b->used, EM_DL_ALIGN);
    if (off <= b->slot->nbytes && nbytes <= b->slot->nbytes - off) {
      em_tensor *t = em__tensor_new(b->slot, dt, ndim, shape, NULL, (int64_t)(off / es));
      if (t) b->used = off + nbytes;
      return t;
    }
    b->overflowed = true; /* goes to the heap; the batch is written elsewhere */
  }
  return em_tensor_empty(ndim, shape, dt);
}

em_status em_dl_batch_builder_add(em_dl_batch_builder *b, em_tensor *t) {
  if (!b || !t) return em__set_error(EM_ERR_INVALID, "batch builder add: NULL argument");
  if (b->n >= EM_DL_MAX_TENSORS)
    return em__set_error(EM_ERR_INVALID, "batch builder add: a batch holds at most %d tensors",
                         EM_DL_MAX_TENSORS);
  if (t->device.type != EM_CPU)
    return em__set_error(EM_ERR_DEVICE, "batch builder add: batch tensors must be on the CPU");
  if (b->n == b->cap) {
    int cap = b->cap ? 2 * b->cap : 8;
    em_tensor **grown = realloc(b->t, (size_t)cap * sizeof *grown);
    if (!grown) return em__set_error(EM_ERR_NOMEM, "batch builder add: out of memory");
    b->t = grown;
    b->cap = cap;
  }
  b->t[b->n++] = em_tensor_retain(t);
  return EM_OK;
}

em_status em_dl_batch_builder_set_meta(em_dl_batch_builder *b, const void *data, size_t len) {
  if (!b || (len && !data))
    return em__set_error(EM_ERR_INVALID, "batch builder set_meta: NULL argument");
  void *m = NULL;
  if (len) {
    m = malloc(len);
    if (!m) return em__set_error(EM_ERR_NOMEM, "batch builder set_meta: out of memory");
    memcpy(m, data, len);
  }
  free(b->meta);
  b->meta = m;
  b->meta_len = len;
  return EM_OK;
}

static void free_deleter(void *data, void *ctx) { free(data); }

em_storage *em__dl_heap_copy(const void *data, size_t len, const void **copy) {
  void *buf = malloc(len ? len : 1);
  if (!buf) return EM_FAIL(EM_ERR_NOMEM, "DataLoader: out of memory for %zu bytes", len);
  memcpy(buf, data, len);
  em_storage *s = em_storage_from_blob(buf, len, EM_DEVICE_CPU, free_deleter, NULL);
  if (!s) {
    free(buf);
    return NULL;
  }
  *copy = buf;
  return s;
}

em_status em__dl_builder_finish_heap(em_dl_batch_builder *b, em_dl_batch *out) {
  memset(out, 0, sizeof *out);
  if (b->meta_len) {
    out->holder = em_storage_from_blob(b->meta, b->meta_len, EM_DEVICE_CPU, free_deleter, NULL);
    if (!out->holder) return em_last_status();
    out->meta = b->meta;
    out->meta_len = b->meta_len;
    b->meta = NULL;
    b->meta_len = 0;
  }
  out->n = b->n;
  out->t = b->t;
  b->t = NULL;
  b->n = b->cap = 0;
  out->worker = -1;
  return EM_OK;
}

static size_t tensor_bytes(const em_tensor *t) {
  return (size_t)t->numel * em_dtype_size((em_dtype)t->dtype);
}

static size_t desc_bytes(int n) { return (size_t)n * sizeof(em__dl_tdesc); }

size_t em__dl_builder_compact_bytes(const em_dl_batch_builder *b) {
  size_t total = 0;
  for (int i = 0; i < b->n; i++) total += em__dl_align(tensor_bytes(b->t[i]), EM_DL_ALIGN);
  return total + em__dl_align(desc_bytes(b->n), EM_DL_ALIGN) +
         em__dl_align(b->meta_len, EM_DL_ALIGN);
}

/* Copies t as a contiguous array to data + off and describes it. */
static em_status copy_compact(char *data, size_t off, em_tensor *t, em__dl_tdesc *d) {
  em_dtype dt = (em_dtype)t->dtype;
  size_t es = em_dtype_size(dt);
  d->dtype = dt;
  d->ndim = t->ndim;
  d->offset = (int64_t)(off / es);
  memcpy(d->shape, t->shape, (size_t)t->ndim * sizeof(int64_t));
  em__contiguous_strides(t->ndim, t->shape, d->strides);
  if (t->numel == 0) return EM_OK;
  if (em_tensor_is_contiguous(t)) {
    memcpy(data + off, em__data_ptr(t), tensor_bytes(t));
    return EM_OK;
  }
  em_tensor *dst = em_tensor_from_blob(data + off, t->ndim, t->shape, NULL, dt, EM_DEVICE_CPU,
                                       NULL, NULL);
  if (!dst) return em_last_status();
  em_status st = em_tensor_copy_(dst, t);
  em_tensor_release(dst);
  return st;
}

em_status em__dl_builder_write(em_dl_batch_builder *b, em__dl_slot_header *hdr, size_t cap,
                               bool in_place) {
  char *data = (char *)hdr + EM_DL_SLOT_HDR;
  size_t used = in_place ? b->used : 0;
  /* Room check first, so that a batch that does not fit leaves the slot
   * untouched. */
  size_t end = used; /* where the tensors end */
  for (int i = 0; i < b->n; i++)
    if (!(in_place && b->t[i]->storage == b->slot))
      end = em__dl_align(end, EM_DL_ALIGN) + tensor_bytes(b->t[i]);
  size_t desc_off = em__dl_align(end, EM_DL_ALIGN);
  size_t meta_off = em__dl_align(desc_off + desc_bytes(b->n), EM_DL_ALIGN);
  size_t need = meta_off + b->meta_len;
  if (need > cap)
    return em__set_error(EM_ERR_NOMEM, "batch of %zu bytes does not fit a slot of %zu", need,
                         cap);
  em__dl_tdesc *descs = (em__dl_tdesc *)(data + desc_off);
  for (int i = 0; i < b->n; i++) {
    em_tensor *t = b->t[i];
    em__dl_tdesc *d = &descs[i];
    if (in_place && t->storage == b->slot) {
      d->dtype = t->dtype;
      d->ndim = t->ndim;
      d->offset = t->offset;
      memcpy(d->shape, t->shape, (size_t)t->ndim * sizeof(int64_t));
      memcpy(d->strides, t->strides, (size_t)t->ndim * sizeof(int64_t));
      continue;
    }
    used = em__dl_align(used, EM_DL_ALIGN);
    EM_CHECK(copy_compact(data, used, t, d));
    used += tensor_bytes(t);
  }
  hdr->desc_off = desc_off;
  hdr->meta_off = meta_off;
  hdr->meta_len = b->meta_len;
  if (b->meta_len) memcpy(data + meta_off, b->meta, b->meta_len);
  hdr->n = b->n;
  hdr->data_used = need;
  hdr->magic = EM_DL_SLOT_MAGIC;
  return EM_OK;
}

em_status em__dl_slot_read(const void *slot, size_t cap, const char *who, em__dl_slot_header *h,
                           em__dl_tdesc **descs) {
#define BAD(...)                                                                         \
  do {                                                                                   \
    char why_[256];                                                                      \
    snprintf(why_, sizeof why_, __VA_ARGS__);                                            \
    free(d_);                                                                            \
    return em__set_error(EM_ERR_STATE, "%s: corrupt batch in shared memory (%s)", who, why_); \
  } while (0)
  /* Everything is checked and used from copies: a worker still writing
   * the slot cannot change what was checked. */
  em__dl_tdesc *d_ = NULL;
  *descs = NULL;
  memcpy(h, slot, sizeof *h);
  if (h->magic != EM_DL_SLOT_MAGIC) BAD("bad magic");
  if (h->n < 0 || h->n > EM_DL_MAX_TENSORS) BAD("%d tensors", h->n);
  if (h->data_used > cap) BAD("%llu bytes used of %zu", (unsigned long long)h->data_used, cap);
  if (h->meta_off > cap || h->meta_len > cap - h->meta_off) BAD("meta out of bounds");
  if (h->desc_off % EM_DL_ALIGN || h->desc_off > cap || desc_bytes(h->n) > cap - h->desc_off)
    BAD("tensor descriptors out of bounds");
  if (h->n) {
    d_ = malloc(desc_bytes(h->n));
    if (!d_) return em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
    memcpy(d_, (const char *)slot + EM_DL_SLOT_HDR + h->desc_off, desc_bytes(h->n));
  }
  for (int i = 0; i < h->n; i++) {
    const em__dl_tdesc *d = &d_[i];
    if (!em_dtype_is_valid(d->dtype)) BAD("tensor %d: dtype %d", i, d->dtype);
    if (d->ndim < 0 || d->ndim > EM_MAX_DIMS) BAD("tensor %d: ndim %d", i, d->ndim);
    if (d->offset < 0) BAD("tensor %d: offset %lld", i, (long long)d->offset);
    int64_t numel = 1, last = d->offset;
    bool empty = false;
    for (int k = 0; k < d->ndim; k++) {
      if (d->shape[k] < 0 || d->strides[k] < 0) BAD("tensor %d: negative size or stride", i);
      if (d->shape[k] == 0) empty = true;
    }
    if (!empty) {
      for (int k = 0; k < d->ndim; k++) {
        int64_t reach;
        if (__builtin_mul_overflow(d->shape[k] - 1, d->strides[k], &reach) ||
            __builtin_add_overflow(last, reach, &last) ||
            __builtin_mul_overflow(numel, d->shape[k], &numel))
          BAD("tensor %d: geometry overflows", i);
      }
      size_t es = em_dtype_size((em_dtype)d->dtype);
      if ((uint64_t)last >= cap / es) BAD("tensor %d: reaches past the slot", i);
    } else if (em__check_shape("DataLoader", d->ndim, d->shape, NULL)) {
      BAD("tensor %d: shape overflows", i);
    }
  }
  *descs = d_;
  return EM_OK;
#undef BAD
}

/* ---- batches ---------------------------------------------------------------------------- */

void em_dl_batch_release(em_dl_batch *b) {
  if (!b) return;
  for (int i = 0; i < b->n; i++) em_tensor_release(b->t[i]);
  free(b->t);
  if (b->holder) em_storage_release(b->holder);
  memset(b, 0, sizeof *b);
}

em_status em_dl_collate(em_dl_collate_fn fn, void *ctx, int n, em_dl_sample *samples,
                        em_dl_batch *out) {
  if (!out) return em__set_error(EM_ERR_INVALID, "collate: out is NULL");
  memset(out, 0, sizeof *out);
  if (!fn) fn = em_dl_default_collate;
  em_dl_batch_builder b;
  em__dl_builder_init_heap(&b);
  em_clear_error();
  em_status st = fn(ctx, n, samples, &b);
  if (st) em__dl_callback_failed(st, "collate_fn");
  if (!st) st = em__dl_builder_finish_heap(&b, out);
  em__dl_builder_deinit(&b);
  return st;
}

/* ---- default_collate / default_convert ----------------------------------------------------- */

em_status em_dl_default_collate(void *ctx, int n, em_dl_sample *samples,
                                em_dl_batch_builder *b) {
  if (n < 1 || !samples)
    return em__set_error(EM_ERR_INVALID, "default_collate: empty batch");
  int nf = samples[0].n;
  if (nf < 1) return em__set_error(EM_ERR_INVALID, "default_collate: sample 0 has no fields");
  if (nf > EM_DL_MAX_FIELDS)
    return em__set_error(EM_ERR_INVALID, "default_collate: sample 0 has %d fields (at most %d)",
                         nf, EM_DL_MAX_FIELDS);
  for (int i = 1; i < n; i++)
    if (samples[i].n != nf)
      return em__set_error(EM_ERR_INVALID,
                           "default_collate: each element in list of batch should be of equal "
                           "size (sample 0 has %d fields, sample %d has %d)",
                           nf, i, samples[i].n);
  for (int f = 0; f < nf; f++) {
    em_tensor *t0 = samples[0].t[f];
    if (!t0) return em__set_error(EM_ERR_INVALID, "default_collate: field %d of sample 0 is NULL", f);
    if (t0->ndim + 1 > EM_MAX_DIMS)
      return em__set_error(EM_ERR_SHAPE, "default_collate: field %d has %d dims; stacking needs "
                           "at most %d", f, t0->ndim, EM_MAX_DIMS - 1);
    for (int i = 1; i < n; i++) {
      em_tensor *t = samples[i].t[f];
      if (!t) return em__set_error(EM_ERR_INVALID, "default_collate: field %d of sample %d is NULL", f, i);
      bool same = t->ndim == t0->ndim;
      for (int k = 0; same && k < t->ndim; k++) same = t->shape[k] == t0->shape[k];
      if (!same)
        return em__set_error(EM_ERR_SHAPE,
                             "default_collate: stack expects each tensor to be equal size, but got "
                             "%s at entry 0 and %s at entry %d (field %d)",
                             em__tshape(t0), em__tshape(t), i, f);
    }
    /* mixed dtypes stack in their promoted type, as torch.stack */
    em_dtype dt = (em_dtype)t0->dtype;
    for (int i = 1; i < n; i++) dt = em_promote_types(dt, (em_dtype)samples[i].t[f]->dtype);
    int64_t shape[EM_MAX_DIMS];
    shape[0] = n;
    memcpy(shape + 1, t0->shape, (size_t)t0->ndim * sizeof(int64_t));
    em_tensor *out = em_dl_batch_builder_alloc(b, t0->ndim + 1, shape, dt);
    if (!out) return em_last_status();
    size_t row = (size_t)t0->numel * em_dtype_size(dt);
    char *dst = row ? em__data_ptr(out) : NULL;
    em_status st = EM_OK;
    for (int i = 0; i < n && row && !st; i++) {
      em_tensor *t = samples[i].t[f];
      if (t->dtype == dt && t->device.type == EM_CPU && em_tensor_is_contiguous(t)) {
        memcpy(dst + (size_t)i * row, em__data_ptr(t), row);
      } else {
        em_tensor *r = em_tensor_from_blob(dst + (size_t)i * row, t->ndim, t->shape, NULL, dt,
                                           EM_DEVICE_CPU, NULL, NULL);
        st = r ? em_tensor_copy_(r, t) : em_last_status();
        em_tensor_release(r);
      }
    }
    if (!st) st = em_dl_batch_builder_add(b, out);
    em_tensor_release(out);
    if (st) return st;
  }
  return EM_OK;
}

em_status em_dl_default_convert(void *ctx, int n, em_dl_sample *samples,
                                em_dl_batch_builder *b) {
  if (n != 1 || !samples)
    return em__set_error(EM_ERR_INVALID, "default_convert: expects exactly one sample, got %d", n);
  for (int f = 0; f < samples[0].n; f++) EM_CHECK(em_dl_batch_builder_add(b, samples[0].t[f]));
  return EM_OK;
}
