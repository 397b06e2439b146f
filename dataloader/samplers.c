/* Samplers: the callback object and its iterator, sequential, random,
 * subset-random, weighted-random, batch and distributed samplers.
 *
 * The random ones follow torch.utils.data's algorithms on ember's
 * generator: RandomSampler takes successive randperm(n) (or randint draws
 * of 32 with replacement) from its generator, or, without one, from a
 * private generator seeded with a value drawn from the default generator at
 * each pass; DistributedSampler takes randperm(len) from a generator seeded
 * with seed + epoch. The numbers are ember's (a seed does not give
 * PyTorch's indices), the structure is PyTorch's. */
#include <math.h>
#include <stdlib.h>

#include "dataloader/dataloader_impl.h"

/* ---- the sampler object ------------------------------------------------------------ */

em_dl_sampler *em_dl_sampler_create(const em_dl_sampler_ops *ops, void *ctx) {
  if (!ops || !ops->begin || !ops->next)
    return EM_FAIL(EM_ERR_INVALID, "sampler: ops needs begin and next");
  em_dl_sampler *s = malloc(sizeof *s);
  if (!s) return EM_FAIL(EM_ERR_NOMEM, "sampler: out of memory");
  atomic_init(&s->refcount, 1);
  s->ops = *ops;
  if (!s->ops.name) s->ops.name = "Sampler";
  s->ctx = ctx;
  return s;
}

em_dl_sampler *em_dl_sampler_retain(em_dl_sampler *s) {
  if (!s) return NULL;
  atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
  return s;
}

void em_dl_sampler_release(em_dl_sampler *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) != 1) return;
  if (s->ops.destroy) s->ops.destroy(s->ctx);
  free(s);
}

const char *em_dl_sampler_name(const em_dl_sampler *s) { return s ? s->ops.name : "(null)"; }
bool em_dl_sampler_is_batch(const em_dl_sampler *s) { return s && s->ops.is_batch; }

int64_t em_dl_sampler_len(em_dl_sampler *s) {
  if (!s || !s->ops.len) return -1;
  return s->ops.len(s->ctx);
}

em_status em_dl_sampler_set_epoch(em_dl_sampler *s, int64_t epoch) {
  if (!s) return em__set_error(EM_ERR_INVALID, "set_epoch: sampler is NULL");
  if (!s->ops.set_epoch)
    return em__set_error(EM_ERR_INVALID, "set_epoch: %s has no epoch", s->ops.name);
  return s->ops.set_epoch(s->ctx, epoch);
}

em_dl_sampler_iter *em_dl_sampler_iter_create(em_dl_sampler *s) {
  if (!s) return EM_FAIL(EM_ERR_INVALID, "sampler iter: sampler is NULL");
  em_dl_sampler_iter *it = calloc(1, sizeof *it);
  if (!it) return EM_FAIL(EM_ERR_NOMEM, "sampler iter: out of memory");
  it->s = em_dl_sampler_retain(s);
  em_clear_error();
  em_status st = s->ops.begin(s->ctx, &it->state);
  if (st != EM_OK) {
    em__dl_callback_failed(st, "begin");
    em__prefix_error("%s", s->ops.name);
    em_dl_sampler_release(s);
    free(it);
    return NULL;
  }
  it->begun = true;
  return it;
}

em_status em_dl_sampler_iter_next(em_dl_sampler_iter *it, const int64_t **idx, int64_t *n) {
  if (!idx || !n) return em__set_error(EM_ERR_INVALID, "sampler next: NULL output");
  *n = 0;
  *idx = NULL;
  if (!it) return em__set_error(EM_ERR_INVALID, "sampler next: iterator is NULL");
  if (it->done) return EM_OK;
  em_clear_error();
  em_status st = it->s->ops.next(it->s->ctx, it->state, idx, n);
  if (!st && *n > 0 && !*idx)
    st = em__set_error(EM_ERR_INVALID, "%s: next returned %lld indices but no array",
                       it->s->ops.name, (long long)*n);
  if (st) {
    *n = 0; /* nothing half-taken: the next call starts clean */
    *idx = NULL;
    em__dl_callback_failed(st, "%s: next", it->s->ops.name);
    return st;
  }
  if (*n <= 0) {
    *n = 0;
    it->done = true;
  }
  return EM_OK;
}

void em_dl_sampler_iter_destroy(em_dl_sampler_iter *it) {
  if (!it) return;
  if (it->begun && it->s->ops.end) it->s->ops.end(it->s->ctx, it->state);
  em_dl_sampler_release(it->s);
  free(it);
}

em_status em_dl_sampler_collect(em_dl_sampler *s, int64_t max_n, int64_t **out, int64_t *n) {
  if (!out || !n) return em__set_error(EM_ERR_INVALID, "sampler collect: NULL output");
  *out = NULL;
  *n = 0;
  em_dl_sampler_iter *it = em_dl_sampler_iter_create(s);
  if (!it) return em_last_status();
  int64_t cap = 0, len = 0, *buf = NULL;
  em_status st = EM_OK;
  for (;;) {
    const int64_t *idx;
    int64_t k;
    EM_CHECK_GOTO(em_dl_sampler_iter_next(it, &idx, &k), st, fail);
    if (k == 0) break;
    if (len + k > max_n) {
      st = em__set_error(EM_ERR_INVALID, "sampler collect: %s yields more than %lld indices",
                         s->ops.name, (long long)max_n);
      goto fail;
    }
    if (len + k > cap) {
      int64_t nc = cap ? cap * 2 : 1024;
      while (nc < len + k) nc *= 2;
      int64_t *nb = realloc(buf, (size_t)nc * sizeof *nb);
      if (!nb) {
        st = em__set_error(EM_ERR_NOMEM, "sampler collect: out of memory");
        goto fail;
      }
      buf = nb;
      cap = nc;
    }
    memcpy(buf + len, idx, (size_t)k * sizeof *idx);
    len += k;
  }
  em_dl_sampler_iter_destroy(it);
  *out = buf;
  *n = len;
  return EM_OK;
fail:
  free(buf);
  em_dl_sampler_iter_destroy(it);
  return st;
}

/* ---- helpers ---------------------------------------------------------------------------- */

#define CHUNK 1024

/* A seed drawn from the default generator, as torch's
 * int(torch.empty((), dtype=torch.int64).random_()). */
static em_status draw_seed(em_generator *from, uint64_t *seed) {
  em_tensor *t = em_tensor_randint(0, INT64_MAX, 0, NULL, EM_INT64, from);
  if (!t) return em_last_status();
  *seed = (uint64_t)*(int64_t *)em__data_ptr(t);
  em_tensor_release(t);
  return EM_OK;
}

/* Copies the int64 contents of a fresh tensor into a malloc'd array. */
static int64_t *take_indices(em_tensor *t) {
  int64_t n = t->numel;
  int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  if (!v) return EM_FAIL(EM_ERR_NOMEM, "sampler: out of memory for %lld indices", (long long)n);
  if (n) memcpy(v, em__data_ptr(t), (size_t)n * sizeof *v);
  return v;
}

/* ---- SequentialSampler ---------------------------------------------------------------- */

typedef struct seq_state {
  int64_t pos;
  int64_t buf[CHUNK];
} seq_state;

static int64_t seq_len(void *ctx) { return *(int64_t *)ctx; }

static em_status seq_begin(void *ctx, void **state) {
  seq_state *s = calloc(1, sizeof *s);
  if (!s) return em__set_error(EM_ERR_NOMEM, "SequentialSampler: out of memory");
  *state = s;
  return EM_OK;
}

static em_status seq_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  seq_state *s = state;
  int64_t total = *(int64_t *)ctx, k = 0;
  while (k < CHUNK && s->pos < total) s->buf[k++] = s->pos++;
  *idx = s->buf;
  *n = k;
  return EM_OK;
}

static void free_state(void *ctx, void *state) { free(state); }

em_dl_sampler *em_dl_sequential_sampler_create(int64_t n) {
  if (n < 0) return EM_FAIL(EM_ERR_INVALID, "SequentialSampler: negative length %lld", (long long)n);
  int64_t *c = malloc(sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "SequentialSampler: out of memory");
  *c = n;
  static const em_dl_sampler_ops ops = {.name = "SequentialSampler", .len = seq_len,
                                        .begin = seq_begin, .next = seq_next,
                                        .end = free_state, .destroy = free};
  em_dl_sampler *s = em_dl_sampler_create(&ops, c);
  if (!s) free(c);
  return s;
}

/* ---- RandomSampler ------------------------------------------------------------------------ */

typedef struct rand_ctx {
  int64_t n, num_samples;
  bool replacement;
  em_generator *g; /* borrowed; NULL: fresh seed per pass */
} rand_ctx;

typedef struct rand_state {
  em_generator *own; /* private generator of this pass (g NULL) */
  em_generator *g;
  int64_t produced;
  int64_t *cur;
} rand_state;

static int64_t rand_len(void *ctx) { return ((rand_ctx *)ctx)->num_samples; }

static em_status rand_begin(void *ctx, void **state) {
  rand_ctx *c = ctx;
  rand_state *s = calloc(1, sizeof *s);
  if (!s) return em__set_error(EM_ERR_NOMEM, "RandomSampler: out of memory");
  if (c->g) {
    s->g = c->g;
  } else {
    uint64_t seed = 0;
    em_status st = draw_seed(NULL, &seed);
    if (!st && !(s->own = em_generator_create(seed))) st = em_last_status();
    if (st) {
      free(s);
      return st;
    }
    s->g = s->own;
  }
  *state = s;
  return EM_OK;
}

static em_status rand_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  rand_ctx *c = ctx;
  rand_state *s = state;
  int64_t left = c->num_samples - s->produced;
  *n = 0;
  if (left <= 0) return EM_OK;
  em_tensor *t;
  int64_t k;
  if (c->replacement) {
    k = left < 32 ? left : 32;
    t = em_tensor_randint(0, c->n, EM_DIMS(k), EM_INT64, s->g);
  } else {
    k = left < c->n ? left : c->n;
    t = em_tensor_randperm(c->n, EM_INT64, s->g);
  }
  if (!t) return em_last_status();
  free(s->cur);
  s->cur = take_indices(t);
  em_tensor_release(t);
  if (!s->cur) return em_last_status();
  s->produced += k;
  *idx = s->cur;
  *n = k;
  return EM_OK;
}

static void rand_end(void *ctx, void *state) {
  rand_state *s = state;
  em_generator_destroy(s->own);
  free(s->cur);
  free(s);
}

em_dl_sampler *em_dl_random_sampler_create(int64_t n, bool replacement, int64_t num_samples,
                                           em_generator *g) {
  if (n < 0) return EM_FAIL(EM_ERR_INVALID, "RandomSampler: negative length %lld", (long long)n);
  if (num_samples < 0) num_samples = n;
  if (num_samples <= 0)
    return EM_FAIL(EM_ERR_INVALID,
                   "RandomSampler: num_samples should be a positive integer value, but got "
                   "num_samples=%lld",
                   (long long)num_samples);
  if (n == 0)
    return EM_FAIL(EM_ERR_INVALID, "RandomSampler: cannot draw %lld samples from an empty dataset",
                   (long long)num_samples);
  rand_ctx *c = malloc(sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "RandomSampler: out of memory");
  *c = (rand_ctx){n, num_samples, replacement, g};
  static const em_dl_sampler_ops ops = {.name = "RandomSampler", .len = rand_len,
                                        .begin = rand_begin, .next = rand_next,
                                        .end = rand_end, .destroy = free};
  em_dl_sampler *s = em_dl_sampler_create(&ops, c);
  if (!s) free(c);
  return s;
}

/* ---- SubsetRandomSampler ------------------------------------------------------------------ */

typedef struct subset_ctx {
  int64_t n;
  int64_t *idx;
  em_generator *g;
} subset_ctx;

static int64_t subset_len(void *ctx) { return ((subset_ctx *)ctx)->n; }

static em_status subset_begin(void *ctx, void **state) {
  subset_ctx *c = ctx;
  em_tensor *p = em_tensor_randperm(c->n, EM_INT64, c->g);
  if (!p) return em_last_status();
  int64_t *v = take_indices(p);
  em_tensor_release(p);
  if (!v) return em_last_status();
  for (int64_t i = 0; i < c->n; i++) v[i] = c->idx[v[i]];
  int64_t *s = malloc(2 * sizeof *s);
  if (!s) {
    free(v);
    return em__set_error(EM_ERR_NOMEM, "SubsetRandomSampler: out of memory");
  }
  s[0] = (int64_t)(intptr_t)v;
  s[1] = 0; /* handed out */
  *state = s;
  return EM_OK;
}

static em_status subset_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  subset_ctx *c = ctx;
  int64_t *s = state;
  *idx = (const int64_t *)(intptr_t)s[0];
  *n = s[1] ? 0 : c->n;
  s[1] = 1;
  return EM_OK;
}

static void subset_end(void *ctx, void *state) {
  int64_t *s = state;
  free((void *)(intptr_t)s[0]);
  free(s);
}

static void subset_destroy(void *ctx) {
  subset_ctx *c = ctx;
  free(c->idx);
  free(c);
}

em_dl_sampler *em_dl_subset_random_sampler_create(int64_t n, const int64_t *indices,
                                                  em_generator *g) {
  if (n < 0 || (n > 0 && !indices))
    return EM_FAIL(EM_ERR_INVALID, "SubsetRandomSampler: bad indices (n %lld)", (long long)n);
  subset_ctx *c = malloc(sizeof *c);
  int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  if (!c || !v) {
    free(c);
    free(v);
    return EM_FAIL(EM_ERR_NOMEM, "SubsetRandomSampler: out of memory");
  }
  if (n) memcpy(v, indices, (size_t)n * sizeof *v);
  *c = (subset_ctx){n, v, g};
  static const em_dl_sampler_ops ops = {.name = "SubsetRandomSampler", .len = subset_len,
                                        .begin = subset_begin, .next = subset_next,
                                        .end = subset_end, .destroy = subset_destroy};
  em_dl_sampler *s = em_dl_sampler_create(&ops, c);
  if (!s) subset_destroy(c);
  return s;
}

/* ---- WeightedRandomSampler ------------------------------------------------------------------ */

typedef struct weighted_ctx {
  int64_t n, num_samples;
  bool replacement;
  double *w, *cum; /* cum[i] = w[0] + ... + w[i] */
  em_generator *g;
} weighted_ctx;

typedef struct key_idx {
  double key;
  int64_t i;
} key_idx;

static int key_desc(const void *a, const void *b) {
  const key_idx *x = a, *y = b;
  if (x->key > y->key) return -1;
  if (x->key < y->key) return 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

static int64_t weighted_len(void *ctx) { return ((weighted_ctx *)ctx)->num_samples; }

static em_status weighted_begin(void *ctx, void **state) {
  weighted_ctx *c = ctx;
  int64_t m = c->replacement ? c->num_samples : c->n;
  em_tensor *u = em_tensor_rand(EM_DIMS(m), EM_FLOAT64, c->g);
  if (!u) return em_last_status();
  const double *uv = (const double *)em__data_ptr(u);
  int64_t *out = malloc((size_t)c->num_samples * sizeof *out + 2 * sizeof(int64_t));
  key_idx *keys = NULL;
  if (!out) goto nomem;
  double total = c->cum[c->n - 1];
  if (c->replacement) {
    for (int64_t k = 0; k < c->num_samples; k++) {
      double target = uv[k] * total;
      int64_t lo = 0, hi = c->n - 1; /* first i with cum[i] > target */
      while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->cum[mid] > target) hi = mid;
        else lo = mid + 1;
      }
      while (lo > 0 && c->w[lo] == 0) lo--; /* rounding at the top end */
      out[k + 2] = lo;
    }
  } else {
    keys = malloc((size_t)c->n * sizeof *keys);
    if (!keys) goto nomem;
    for (int64_t i = 0; i < c->n; i++) {
      keys[i].i = i;
      keys[i].key = c->w[i] > 0 ? log(uv[i]) / c->w[i] : -INFINITY; /* log(u^(1/w)) */
    }
    qsort(keys, (size_t)c->n, sizeof *keys, key_desc);
    for (int64_t k = 0; k < c->num_samples; k++) out[k + 2] = keys[k].i;
    free(keys);
  }
  em_tensor_release(u);
  out[0] = 0; /* handed out */
  *state = out;
  return EM_OK;
nomem:
  free(out);
  em_tensor_release(u);
  return em__set_error(EM_ERR_NOMEM, "WeightedRandomSampler: out of memory");
}

static em_status weighted_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  weighted_ctx *c = ctx;
  int64_t *s = state;
  *idx = s + 2;
  *n = s[0] ? 0 : c->num_samples;
  s[0] = 1;
  return EM_OK;
}

static void weighted_destroy(void *ctx) {
  weighted_ctx *c = ctx;
  free(c->w);
  free(c->cum);
  free(c);
}

em_dl_sampler *em_dl_weighted_random_sampler_create(int64_t n, const double *weights,
                                                    int64_t num_samples, bool replacement,
                                                    em_generator *g) {
  if (n < 1 || !weights)
    return EM_FAIL(EM_ERR_INVALID, "WeightedRandomSampler: needs at least one weight");
  if (num_samples <= 0)
    return EM_FAIL(EM_ERR_INVALID,
                   "WeightedRandomSampler: num_samples should be a positive integer value, but "
                   "got num_samples=%lld",
                   (long long)num_samples);
  double sum = 0;
  int64_t positive = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(weights[i]) || weights[i] < 0)
      return EM_FAIL(EM_ERR_INVALID,
                     "WeightedRandomSampler: invalid multinomial distribution: weight %lld is %g "
                     "(weights must be finite and >= 0)",
                     (long long)i, weights[i]);
    sum += weights[i];
    positive += weights[i] > 0;
  }
  if (!(sum > 0))
    return EM_FAIL(EM_ERR_INVALID,
                   "WeightedRandomSampler: invalid multinomial distribution (sum of probabilities "
                   "<= 0)");
  if (!isfinite(sum))
    return EM_FAIL(EM_ERR_INVALID,
                   "WeightedRandomSampler: the weights add up to more than a double holds; scale "
                   "them down");
  if (!replacement && num_samples > n)
    return EM_FAIL(EM_ERR_INVALID,
                   "WeightedRandomSampler: cannot sample n_sample > prob_dist.size(-1) samples "
                   "without replacement (%lld > %lld)",
                   (long long)num_samples, (long long)n);
  if (!replacement && num_samples > positive)
    return EM_FAIL(EM_ERR_INVALID,
                   "WeightedRandomSampler: invalid multinomial distribution (with "
                   "replacement=False, not enough non-negative category to sample): %lld "
                   "samples but %lld positive weights",
                   (long long)num_samples, (long long)positive);
  weighted_ctx *c = calloc(1, sizeof *c);
  if (c) {
    c->w = malloc((size_t)n * sizeof *c->w);
    c->cum = malloc((size_t)n * sizeof *c->cum);
  }
  if (!c || !c->w || !c->cum) {
    if (c) weighted_destroy(c);
    return EM_FAIL(EM_ERR_NOMEM, "WeightedRandomSampler: out of memory");
  }
  c->n = n;
  c->num_samples = num_samples;
  c->replacement = replacement;
  c->g = g;
  double acc = 0;
  for (int64_t i = 0; i < n; i++) {
    c->w[i] = weights[i];
    acc += weights[i];
    c->cum[i] = acc;
  }
  static const em_dl_sampler_ops ops = {.name = "WeightedRandomSampler", .len = weighted_len,
                                        .begin = weighted_begin, .next = weighted_next,
                                        .end = free_state, .destroy = weighted_destroy};
  em_dl_sampler *s = em_dl_sampler_create(&ops, c);
  if (!s) weighted_destroy(c);
  return s;
}

/* ---- BatchSampler ------------------------------------------------------------------------------ */

typedef struct batch_ctx {
  em_dl_sampler *inner;
  int64_t batch_size;
  bool drop_last;
} batch_ctx;

typedef struct batch_state {
  em_dl_sampler_iter *it;
  const int64_t *chunk;
  int64_t chunk_n, chunk_pos;
  int64_t buf[];
} batch_state;

static int64_t batch_len(void *ctx) {
  batch_ctx *c = ctx;
  int64_t n = em_dl_sampler_len(c->inner);
  if (n < 0) return -1;
  return c->drop_last ? n / c->batch_size : (n + c->batch_size - 1) / c->batch_size;
}

static em_status batch_begin(void *ctx, void **state) {
  batch_ctx *c = ctx;
  batch_state *s = malloc(sizeof *s + (size_t)c->batch_size * sizeof(int64_t));
  if (!s) return em__set_error(EM_ERR_NOMEM, "BatchSampler: out of memory for a batch of %lld",
                               (long long)c->batch_size);
  s->it = em_dl_sampler_iter_create(c->inner);
  if (!s->it) {
    free(s);
    return em_last_status(); /* set: em_dl_sampler_iter_create always fails with one */
  }
  s->chunk = NULL;
  s->chunk_n = s->chunk_pos = 0;
  *state = s;
  return EM_OK;
}

static em_status batch_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  batch_ctx *c = ctx;
  batch_state *s = state;
  int64_t k = 0;
  while (k < c->batch_size) {
    if (s->chunk_pos == s->chunk_n) {
      const int64_t *chunk;
      int64_t chunk_n;
      EM_CHECK(em_dl_sampler_iter_next(s->it, &chunk, &chunk_n));
      s->chunk = chunk;
      s->chunk_n = chunk_n;
      s->chunk_pos = 0;
      if (s->chunk_n == 0) break;
    }
    int64_t take = s->chunk_n - s->chunk_pos;
    if (take > c->batch_size - k) take = c->batch_size - k;
    memcpy(s->buf + k, s->chunk + s->chunk_pos, (size_t)take * sizeof(int64_t));
    k += take;
    s->chunk_pos += take;
  }
  if (k < c->batch_size && c->drop_last) k = 0;
  *idx = s->buf;
  *n = k;
  return EM_OK;
}

static void batch_end(void *ctx, void *state) {
  batch_state *s = state;
  em_dl_sampler_iter_destroy(s->it);
  free(s);
}

static void batch_destroy(void *ctx) {
  batch_ctx *c = ctx;
  em_dl_sampler_release(c->inner);
  free(c);
}

em_dl_sampler *em_dl_batch_sampler_create(em_dl_sampler *s, int64_t batch_size, bool drop_last) {
  if (!s) return EM_FAIL(EM_ERR_INVALID, "BatchSampler: sampler is NULL");
  if (s->ops.is_batch)
    return EM_FAIL(EM_ERR_INVALID, "BatchSampler: %s already yields batches", s->ops.name);
  if (batch_size <= 0 || batch_size > EM_DL_MAX_BATCH)
    return EM_FAIL(EM_ERR_INVALID,
                   "BatchSampler: batch_size should be a positive integer value, but got "
                   "batch_size=%lld",
                   (long long)batch_size);
  batch_ctx *c = malloc(sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "BatchSampler: out of memory");
  *c = (batch_ctx){em_dl_sampler_retain(s), batch_size, drop_last};
  static const em_dl_sampler_ops ops = {.name = "BatchSampler", .is_batch = true,
                                        .len = batch_len, .begin = batch_begin,
                                        .next = batch_next, .end = batch_end,
                                        .destroy = batch_destroy};
  em_dl_sampler *b = em_dl_sampler_create(&ops, c);
  if (!b) batch_destroy(c);
  return b;
}

/* ---- DistributedSampler ----------------------------------------------------------------------- */

typedef struct dist_ctx {
  int64_t len; /* dataset length */
  em_dl_distributed_options o;
  int64_t epoch;
  int64_t num_samples, total_size;
} dist_ctx;

void em_dl_distributed_options_init(em_dl_distributed_options *o) {
  *o = (em_dl_distributed_options){.num_replicas = 1, .rank = 0, .shuffle = true, .seed = 0,
                                   .drop_last = false, .uneven = false};
}

static int64_t dist_len(void *ctx) { return ((dist_ctx *)ctx)->num_samples; }

static em_status dist_set_epoch(void *ctx, int64_t epoch) {
  ((dist_ctx *)ctx)->epoch = epoch;
  return EM_OK;
}

/* The pass for this rank, computed whole: [0] handed-out flag, [1..] indices. */
static em_status dist_begin(void *ctx, void **state) {
  dist_ctx *c = ctx;
  int64_t len = c->len, R = c->o.num_replicas, r = c->o.rank;
  int64_t *all = NULL;
  if (c->o.shuffle) {
    em_generator *g = em_generator_create(c->o.seed + (uint64_t)c->epoch);
    if (!g) return em_last_status();
    em_tensor *p = em_tensor_randperm(len, EM_INT64, g);
    em_generator_destroy(g);
    if (!p) return em_last_status();
    all = take_indices(p);
    em_tensor_release(p);
    if (!all) return em_last_status();
  } else {
    all = malloc((size_t)(len ? len : 1) * sizeof *all);
    if (!all) return em__set_error(EM_ERR_NOMEM, "DistributedSampler: out of memory");
    for (int64_t i = 0; i < len; i++) all[i] = i;
  }
  int64_t *out = malloc(((size_t)c->num_samples + 1) * sizeof *out);
  if (!out) {
    free(all);
    return em__set_error(EM_ERR_NOMEM, "DistributedSampler: out of memory");
  }
  out[0] = 0;
  int64_t k = 0;
  /* Position p of the padded (or truncated) list is all[p % len]; the
   * uneven split takes the list as is. */
  int64_t end = c->o.uneven ? len : c->total_size;
  for (int64_t p = r; p < end;) {
    out[1 + k++] = all[p % len];
    if (__builtin_add_overflow(p, R, &p)) break;
  }
  assert(k == c->num_samples);
  free(all);
  *state = out;
  return EM_OK;
}

static em_status dist_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  dist_ctx *c = ctx;
  int64_t *s = state;
  *idx = s + 1;
  *n = s[0] ? 0 : c->num_samples;
  s[0] = 1;
  return EM_OK;
}

em_dl_sampler *em_dl_distributed_sampler_create(int64_t dataset_len,
                                                const em_dl_distributed_options *o) {
  em_dl_distributed_options def;
  if (!o) {
    em_dl_distributed_options_init(&def);
    o = &def;
  }
  if (dataset_len < 0)
    return EM_FAIL(EM_ERR_INVALID, "DistributedSampler: negative dataset length %lld",
                   (long long)dataset_len);
  if (o->num_replicas < 1)
    return EM_FAIL(EM_ERR_INVALID, "DistributedSampler: num_replicas should be positive, got %lld",
                   (long long)o->num_replicas);
  if (o->rank < 0 || o->rank >= o->num_replicas)
    return EM_FAIL(EM_ERR_INVALID,
                   "DistributedSampler: Invalid rank %lld, rank should be in the interval [0, %lld]",
                   (long long)o->rank, (long long)(o->num_replicas - 1));
  if (o->uneven && o->drop_last)
    return EM_FAIL(EM_ERR_INVALID,
                   "DistributedSampler: uneven (no padding) and drop_last exclude each other");
  dist_ctx *c = calloc(1, sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "DistributedSampler: out of memory");
  c->len = dataset_len;
  c->o = *o;
  int64_t R = o->num_replicas;
  if (o->uneven) {
    c->num_samples = dataset_len / R + (o->rank < dataset_len % R ? 1 : 0);
    c->total_size = dataset_len;
  } else {
    /* torch: ceil((len - R) / R) with drop_last, else ceil(len / R); the
     * first is floor(len / R) */
    c->num_samples = dataset_len / R + (!o->drop_last && dataset_len % R != 0);
    if (__builtin_mul_overflow(c->num_samples, R, &c->total_size)) {
      free(c);
      return EM_FAIL(EM_ERR_INVALID, "DistributedSampler: num_replicas=%lld is too large",
                     (long long)R);
    }
  }
  static const em_dl_sampler_ops ops = {.name = "DistributedSampler", .len = dist_len,
                                        .begin = dist_begin, .next = dist_next,
                                        .end = free_state, .set_epoch = dist_set_epoch,
                                        .destroy = free};
  em_dl_sampler *s = em_dl_sampler_create(&ops, c);
  if (!s) free(c);
  return s;
}
