/* Datasets: the callback object, samples, TensorDataset, Subset,
 * ConcatDataset and random_split. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataloader/dataloader_impl.h"

em_dl_worker_info *em__dl_worker_info;

const em_dl_worker_info *em_dl_get_worker_info(void) { return em__dl_worker_info; }

/* ---- samples ------------------------------------------------------------------ */

em_status em_dl_sample_push(em_dl_sample *s, em_tensor *t) {
  if (!s) {
    em_tensor_release(t);
    return em__set_error(EM_ERR_INVALID, "sample: NULL sample");
  }
  if (!t) return em__set_error(EM_ERR_INVALID, "sample: cannot add a NULL tensor");
  if (s->n >= EM_DL_MAX_FIELDS) {
    em_tensor_release(t);
    return em__set_error(EM_ERR_INVALID, "sample: more than %d fields", EM_DL_MAX_FIELDS);
  }
  s->t[s->n++] = t;
  return EM_OK;
}

void em_dl_sample_release(em_dl_sample *s) {
  if (!s) return;
  int n = s->n < 0 ? 0 : s->n > EM_DL_MAX_FIELDS ? EM_DL_MAX_FIELDS : s->n;
  for (int i = 0; i < n; i++) em_tensor_release(s->t[i]);
  s->n = 0;
}

void em__dl_sample_clear(em_dl_sample *s) { memset(s, 0, sizeof *s); }

/* Releases what a callback filled into s (cleared before it ran, so the
 * filled fields are the non-NULL ones, whatever n it left). */
static void sample_drop(em_dl_sample *s) {
  for (int i = 0; i < EM_DL_MAX_FIELDS; i++) em_tensor_release(s->t[i]);
  memset(s, 0, sizeof *s);
}

em_status em__dl_callback_failed(em_status st, const char *fmt, ...) {
  if (!st) st = EM_ERR_STATE;
  if (em_last_status() != EM_OK && em_last_error()[0]) return st;
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return em__set_error(st, "%s failed without an error message", what);
}

em_status em__dl_iter_next(em_dl_dataset *d, void *state, em_dl_sample *s, bool *done) {
  em__dl_sample_clear(s);
  em_clear_error();
  em_status st = d->ops.iter_next(d->ctx, state, s, done);
  if (!st && !em__dl_sample_ok(s)) {
    char who[96];
    snprintf(who, sizeof who, "%s: iter_next", d->ops.name);
    return em__dl_sample_bad(s, who);
  }
  if (st) {
    sample_drop(s);
    return em__dl_callback_failed(st, "%s: iter_next", d->ops.name);
  }
  if (*done) em_dl_sample_release(s);
  return EM_OK;
}

em_status em__dl_sample_bad(em_dl_sample *s, const char *who) {
  int n = s->n;
  sample_drop(s);
  return em__set_error(EM_ERR_INVALID, "%s returned a sample of %d fields (0 to %d)", who, n,
                       EM_DL_MAX_FIELDS);
}

/* ---- the dataset object ----------------------------------------------------------- */

em_dl_dataset *em_dl_dataset_create(const em_dl_dataset_ops *ops, void *ctx) {
  if (!ops) return EM_FAIL(EM_ERR_INVALID, "dataset: ops is NULL");
  bool map = ops->get != NULL, iter = ops->iter_next != NULL;
  if (map == iter)
    return EM_FAIL(EM_ERR_INVALID,
                   "dataset %s: set either get (map-style) or iter_begin/iter_next (iterable)",
                   ops->name ? ops->name : "?");
  if (map && !ops->len)
    return EM_FAIL(EM_ERR_INVALID, "dataset %s: a map-style dataset needs len",
                   ops->name ? ops->name : "?");
  if (iter && !ops->iter_begin)
    return EM_FAIL(EM_ERR_INVALID, "dataset %s: an iterable dataset needs iter_begin",
                   ops->name ? ops->name : "?");
  em_dl_dataset *d = malloc(sizeof *d);
  if (!d) return EM_FAIL(EM_ERR_NOMEM, "dataset: out of memory");
  atomic_init(&d->refcount, 1);
  d->ops = *ops;
  if (!d->ops.name) d->ops.name = "Dataset";
  d->ctx = ctx;
  return d;
}

em_dl_dataset *em_dl_dataset_retain(em_dl_dataset *d) {
  if (!d) return NULL;
  atomic_fetch_add_explicit(&d->refcount, 1, memory_order_relaxed);
  return d;
}

void em_dl_dataset_release(em_dl_dataset *d) {
  if (!d || atomic_fetch_sub_explicit(&d->refcount, 1, memory_order_acq_rel) != 1) return;
  if (d->ops.destroy) d->ops.destroy(d->ctx);
  free(d);
}

const char *em_dl_dataset_name(const em_dl_dataset *d) { return d ? d->ops.name : "(null)"; }
bool em_dl_dataset_is_iterable(const em_dl_dataset *d) { return d && !d->ops.get; }
void *em_dl_dataset_ctx(const em_dl_dataset *d) { return d ? d->ctx : NULL; }

int64_t em_dl_dataset_len(em_dl_dataset *d) {
  if (!d) {
    em__set_error(EM_ERR_INVALID, "len: dataset is NULL");
    return -1;
  }
  if (!d->ops.len) {
    em__set_error(EM_ERR_INVALID, "len: %s is an iterable dataset and has no length",
                  d->ops.name);
    return -1;
  }
  int64_t n = d->ops.len(d->ctx);
  if (n < 0 && em_last_status() == EM_OK)
    em__set_error(EM_ERR_INVALID, "len: %s returned %lld", d->ops.name, (long long)n);
  return n;
}

em_status em_dl_dataset_get(em_dl_dataset *d, int64_t index, em_dl_sample *out) {
  if (!d || !out) return em__set_error(EM_ERR_INVALID, "dataset get: NULL argument");
  if (!d->ops.get)
    return em__set_error(EM_ERR_INVALID,
                         "dataset get: %s is an iterable dataset; it cannot be indexed",
                         d->ops.name);
  int64_t n = em_dl_dataset_len(d);
  if (n < 0) return em_last_status();
  int64_t i = index < 0 ? index + n : index;
  if (i < 0 || i >= n)
    return em__set_error(EM_ERR_INDEX, "%s: index %lld is out of range for a dataset of length %lld",
                         d->ops.name, (long long)index, (long long)n);
  em__dl_sample_clear(out);
  em_clear_error();
  em_status st = d->ops.get(d->ctx, i, out);
  if (st) {
    sample_drop(out);
    if (em_last_status() == EM_OK) em__set_error(st, "%s: get(%lld) failed", d->ops.name,
                                                 (long long)i);
    return st;
  }
  if (!em__dl_sample_ok(out)) {
    char who[96];
    snprintf(who, sizeof who, "%s: get(%lld)", d->ops.name, (long long)i);
    return em__dl_sample_bad(out, who);
  }
  return EM_OK;
}

/* ---- TensorDataset -------------------------------------------------------------------- */

typedef struct tensor_ds {
  int n;
  int64_t len;
  em_tensor *t[EM_DL_MAX_FIELDS];
} tensor_ds;

static int64_t tensor_ds_len(void *ctx) { return ((tensor_ds *)ctx)->len; }

/* Row i of each tensor as a view: the same geometry minus dim 0. */
static em_status tensor_ds_get(void *ctx, int64_t i, em_dl_sample *out) {
  tensor_ds *d = ctx;
  for (int k = 0; k < d->n; k++) {
    em_tensor *t = d->t[k];
    em_tensor *row = em__tensor_view_of(t, t->ndim - 1, t->shape + 1, t->strides + 1,
                                        t->offset + i * t->strides[0]);
    if (!row) return em_last_status();
    out->t[out->n++] = row;
  }
  return EM_OK;
}

static void tensor_ds_destroy(void *ctx) {
  tensor_ds *d = ctx;
  for (int k = 0; k < d->n; k++) em_tensor_release(d->t[k]);
  free(d);
}

em_dl_dataset *em_dl_tensor_dataset_create(int n, em_tensor *const *tensors) {
  if (n < 1 || n > EM_DL_MAX_FIELDS)
    return EM_FAIL(EM_ERR_INVALID, "TensorDataset: needs 1 to %d tensors, got %d",
                   EM_DL_MAX_FIELDS, n);
  if (!tensors) return EM_FAIL(EM_ERR_INVALID, "TensorDataset: tensors is NULL");
  for (int k = 0; k < n; k++) {
    if (!tensors[k]) return EM_FAIL(EM_ERR_INVALID, "TensorDataset: tensor %d is NULL", k);
    if (tensors[k]->ndim < 1)
      return EM_FAIL(EM_ERR_SHAPE, "TensorDataset: tensor %d is 0-dim; every tensor needs a "
                     "first dimension to index", k);
    if (tensors[k]->shape[0] != tensors[0]->shape[0])
      return EM_FAIL(EM_ERR_SHAPE,
                     "TensorDataset: Size mismatch between tensors: tensor 0 has size(0) %lld "
                     "but tensor %d has %lld",
                     (long long)tensors[0]->shape[0], k, (long long)tensors[k]->shape[0]);
  }
  tensor_ds *d = calloc(1, sizeof *d);
  if (!d) return EM_FAIL(EM_ERR_NOMEM, "TensorDataset: out of memory");
  d->n = n;
  d->len = tensors[0]->shape[0];
  for (int k = 0; k < n; k++) d->t[k] = em_tensor_retain(tensors[k]);
  static const em_dl_dataset_ops ops = {
      .name = "TensorDataset", .len = tensor_ds_len, .get = tensor_ds_get,
      .destroy = tensor_ds_destroy};
  em_dl_dataset *ds = em_dl_dataset_create(&ops, d);
  if (!ds) tensor_ds_destroy(d);
  return ds;
}

/* ---- Subset ------------------------------------------------------------------------------ */

typedef struct subset_ds {
  em_dl_dataset *base;
  int64_t n;
  int64_t *idx;
} subset_ds;

static int64_t subset_len(void *ctx) { return ((subset_ds *)ctx)->n; }

static em_status subset_get(void *ctx, int64_t i, em_dl_sample *out) {
  subset_ds *s = ctx;
  return em_dl_dataset_get(s->base, s->idx[i], out);
}

static void subset_destroy(void *ctx) {
  subset_ds *s = ctx;
  em_dl_dataset_release(s->base);
  free(s->idx);
  free(s);
}

em_dl_dataset *em_dl_subset_create(em_dl_dataset *d, int64_t n, const int64_t *indices) {
  if (!d) return EM_FAIL(EM_ERR_INVALID, "Subset: dataset is NULL");
  if (n < 0) return EM_FAIL(EM_ERR_INVALID, "Subset: negative length %lld", (long long)n);
  if (n > 0 && !indices) return EM_FAIL(EM_ERR_INVALID, "Subset: indices is NULL");
  int64_t len = em_dl_dataset_len(d);
  if (len < 0) {
    em__prefix_error("Subset");
    return NULL;
  }
  subset_ds *s = calloc(1, sizeof *s);
  int64_t *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
  if (!s || !idx) {
    free(s);
    free(idx);
    return EM_FAIL(EM_ERR_NOMEM, "Subset: out of memory for %lld indices", (long long)n);
  }
  for (int64_t k = 0; k < n; k++) {
    int64_t i = indices[k] < 0 ? indices[k] + len : indices[k];
    if (i < 0 || i >= len) {
      free(s);
      free(idx);
      return EM_FAIL(EM_ERR_INDEX,
                     "Subset: index %lld at position %lld is out of range for %s of length %lld",
                     (long long)indices[k], (long long)k, d->ops.name, (long long)len);
    }
    idx[k] = i;
  }
  s->base = em_dl_dataset_retain(d);
  s->n = n;
  s->idx = idx;
  static const em_dl_dataset_ops ops = {
      .name = "Subset", .len = subset_len, .get = subset_get, .destroy = subset_destroy};
  em_dl_dataset *ds = em_dl_dataset_create(&ops, s);
  if (!ds) subset_destroy(s);
  return ds;
}

/* ---- ConcatDataset --------------------------------------------------------------------------- */

typedef struct concat_ds {
  int n;
  em_dl_dataset **d;
  int64_t *cum; /* cum[k] = total length of d[0..k] */
} concat_ds;

static int64_t concat_len(void *ctx) {
  concat_ds *c = ctx;
  return c->n ? c->cum[c->n - 1] : 0;
}

static em_status concat_get(void *ctx, int64_t i, em_dl_sample *out) {
  concat_ds *c = ctx;
  int lo = 0, hi = c->n - 1; /* bisect_right(cum, i) */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (c->cum[mid] <= i) lo = mid + 1;
    else hi = mid;
  }
  int64_t local = lo == 0 ? i : i - c->cum[lo - 1];
  return em_dl_dataset_get(c->d[lo], local, out);
}

static void concat_destroy(void *ctx) {
  concat_ds *c = ctx;
  for (int k = 0; k < c->n; k++) em_dl_dataset_release(c->d[k]);
  free(c->d);
  free(c->cum);
  free(c);
}

em_dl_dataset *em_dl_concat_dataset_create(int n, em_dl_dataset *const *datasets) {
  if (n < 1) return EM_FAIL(EM_ERR_INVALID, "ConcatDataset: datasets should not be an empty iterable");
  if (!datasets) return EM_FAIL(EM_ERR_INVALID, "ConcatDataset: datasets is NULL");
  for (int k = 0; k < n; k++) {
    if (!datasets[k]) return EM_FAIL(EM_ERR_INVALID, "ConcatDataset: dataset %d is NULL", k);
    if (em_dl_dataset_is_iterable(datasets[k]))
      return EM_FAIL(EM_ERR_INVALID, "ConcatDataset: dataset %d (%s) is iterable; "
                     "ConcatDataset does not support IterableDataset", k, datasets[k]->ops.name);
  }
  concat_ds *c = calloc(1, sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "ConcatDataset: out of memory");
  c->d = calloc((size_t)n, sizeof *c->d);
  c->cum = calloc((size_t)n, sizeof *c->cum);
  if (!c->d || !c->cum) {
    concat_destroy(c);
    return EM_FAIL(EM_ERR_NOMEM, "ConcatDataset: out of memory");
  }
  int64_t total = 0;
  for (int k = 0; k < n; k++) {
    int64_t len = em_dl_dataset_len(datasets[k]);
    if (len < 0) {
      em__prefix_error("ConcatDataset");
      concat_destroy(c);
      return NULL;
    }
    if (__builtin_add_overflow(total, len, &total)) {
      concat_destroy(c);
      return EM_FAIL(EM_ERR_INVALID, "ConcatDataset: the lengths add up past 2^63");
    }
    c->cum[k] = total;
    c->d[k] = em_dl_dataset_retain(datasets[k]);
    c->n = k + 1;
  }
  static const em_dl_dataset_ops ops = {
      .name = "ConcatDataset", .len = concat_len, .get = concat_get, .destroy = concat_destroy};
  em_dl_dataset *ds = em_dl_dataset_create(&ops, c);
  if (!ds) concat_destroy(c);
  return ds;
}

/* ---- random_split ------------------------------------------------------------------------------ */

em_status em_dl_random_split(em_dl_dataset *d, int n, const int64_t *lengths, em_generator *g,
                             em_dl_dataset **out) {
  if (!d || !out || (n > 0 && !lengths))
    return em__set_error(EM_ERR_INVALID, "random_split: NULL argument");
  if (n < 1) return em__set_error(EM_ERR_INVALID, "random_split: needs at least one length");
  int64_t len = em_dl_dataset_len(d);
  if (len < 0) {
    em__prefix_error("random_split");
    return em_last_status();
  }
  int64_t sum = 0;
  for (int k = 0; k < n; k++) {
    if (lengths[k] < 0)
      return em__set_error(EM_ERR_INVALID, "random_split: length %lld at index %d is negative",
                           (long long)lengths[k], k);
    if (__builtin_add_overflow(sum, lengths[k], &sum))
      return em__set_error(EM_ERR_INVALID, "random_split: the lengths add up past 2^63");
  }
  if (sum != len)
    return em__set_error(EM_ERR_INVALID,
                         "random_split: Sum of input lengths does not equal the length of the "
                         "input dataset! (%lld != %lld)",
                         (long long)sum, (long long)len);
  for (int k = 0; k < n; k++) out[k] = NULL;
  em_tensor *perm = em_tensor_randperm(sum, EM_INT64, g);
  if (!perm) return em_last_status();
  const int64_t *p = sum ? (const int64_t *)em__data_ptr(perm) : NULL;
  int64_t off = 0;
  for (int k = 0; k < n; k++) {
    out[k] = em_dl_subset_create(d, lengths[k], p ? p + off : NULL);
    if (!out[k]) {
      for (int j = 0; j < k; j++) {
        em_dl_dataset_release(out[j]);
        out[j] = NULL;
      }
      em_tensor_release(perm);
      return em_last_status();
    }
    off += lengths[k];
  }
  em_tensor_release(perm);
  return EM_OK;
}

em_status em_dl_random_split_fractions(em_dl_dataset *d, int n, const double *fractions,
                                       em_generator *g, em_dl_dataset **out) {
  if (!d || !out || (n > 0 && !fractions))
    return em__set_error(EM_ERR_INVALID, "random_split: NULL argument");
  if (n < 1) return em__set_error(EM_ERR_INVALID, "random_split: needs at least one fraction");
  int64_t len = em_dl_dataset_len(d);
  if (len < 0) {
    em__prefix_error("random_split");
    return em_last_status();
  }
  double sum = 0;
  for (int k = 0; k < n; k++) {
    if (!(fractions[k] >= 0 && fractions[k] <= 1))
      return em__set_error(EM_ERR_INVALID, "random_split: Fraction at index %d is not between 0 and 1",
                           k);
    sum += fractions[k];
  }
  /* math.isclose(sum, 1) (rel_tol 1e-9) and sum <= 1 */
  if (!(fabs(sum - 1.0) <= 1e-9 * fmax(fabs(sum), 1.0) && sum <= 1.0))
    return em__set_error(EM_ERR_INVALID, "random_split: fractions sum to %.17g, not 1", sum);
  int64_t *lengths = malloc((size_t)n * sizeof *lengths);
  if (!lengths) return em__set_error(EM_ERR_NOMEM, "random_split: out of memory");
  int64_t total = 0;
  for (int k = 0; k < n; k++) {
    lengths[k] = (int64_t)floor((double)len * fractions[k]);
    total += lengths[k];
  }
  for (int64_t r = 0; r < len - total; r++) lengths[r % n]++;
  em_status st = em_dl_random_split(d, n, lengths, g, out);
  free(lengths);
  return st;
}
