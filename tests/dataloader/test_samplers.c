/* Samplers: exact sequences where the algorithm fixes them (sequential,
 * batch, distributed without shuffle: values from torch 1.13's
 * DistributedSampler), properties for the random ones (permutation, same
 * seed same order, set_epoch changes it, frequencies), and the documented
 * algorithm where a test says so. */
#include <stdlib.h>

#include "dataloader/dataloader.h"
#include "tests/dataloader/dl_util.h"

/* One pass flattened. */
static int64_t *collect(em_dl_sampler *s, int64_t *n) {
  int64_t *v = NULL;
  if (em_dl_sampler_collect(s, 1 << 24, &v, n) != EM_OK) return NULL;
  if (!v) v = malloc(sizeof *v); /* an empty pass: non-NULL for the asserts */
  return v;
}

static bool is_perm(const int64_t *v, int64_t n) {
  char *seen = calloc((size_t)n + 1, 1);
  bool ok = true;
  for (int64_t i = 0; i < n && ok; i++) {
    if (v[i] < 0 || v[i] >= n || seen[v[i]]) ok = false;
    else seen[v[i]] = 1;
  }
  free(seen);
  return ok;
}

static bool same(const int64_t *a, const int64_t *b, int64_t n) {
  return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

#define ASSERT_SEQ(v, n, ...)                                             \
  do {                                                                    \
    const int64_t e_[] = {__VA_ARGS__};                                   \
    ASSERT_EQ((n), (int64_t)(sizeof e_ / sizeof e_[0]));                  \
    for (size_t k_ = 0; k_ < sizeof e_ / sizeof e_[0]; k_++)              \
      if ((v)[k_] != e_[k_]) {                                            \
        EM_FAILF("element %zu: %lld != %lld", k_, (long long)(v)[k_], (long long)e_[k_]); \
        return;                                                           \
      }                                                                   \
  } while (0)

EM_TEST(sequential) {
  em_dl_sampler *s = em_dl_sequential_sampler_create(5);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(em_dl_sampler_len(s), 5);
  int64_t n;
  int64_t *v = collect(s, &n);
  ASSERT_NOTNULL(v);
  ASSERT_SEQ(v, n, 0, 1, 2, 3, 4);
  free(v);
  em_dl_sampler_release(s);
  s = em_dl_sequential_sampler_create(0);
  v = collect(s, &n);
  ASSERT_EQ(n, 0);
  free(v);
  em_dl_sampler_release(s);
  /* chunks are bounded but cover long ranges */
  s = em_dl_sequential_sampler_create(5000);
  v = collect(s, &n);
  ASSERT_EQ(n, 5000);
  for (int64_t i = 0; i < n; i++) ASSERT_EQ(v[i], i);
  free(v);
  em_dl_sampler_release(s);
  ASSERT_PNULL_ERR(em_dl_sequential_sampler_create(-1), EM_ERR_INVALID, "negative");
}

EM_TEST(random_without_replacement) {
  em_generator *g = em_generator_create(42);
  em_dl_sampler *s = em_dl_random_sampler_create(100, false, -1, g);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(em_dl_sampler_len(s), 100);
  int64_t n, n2;
  int64_t *a = collect(s, &n);
  ASSERT_TRUE(a && n == 100 && is_perm(a, 100));
  /* the next pass continues the generator: a different order */
  int64_t *b = collect(s, &n2);
  ASSERT_TRUE(b && n2 == 100 && is_perm(b, 100) && !same(a, b, 100));
  /* same seed, same order */
  em_generator_set_seed(g, 42);
  int64_t *c = collect(s, &n2);
  ASSERT_TRUE(c && same(a, c, 100));
  /* another seed, another order */
  em_generator_set_seed(g, 43);
  int64_t *d = collect(s, &n2);
  ASSERT_TRUE(d && is_perm(d, 100) && !same(a, d, 100));
  /* The documented algorithm: a pass is randperm(n, g) (this checks
   * ember's RandomSampler against ember's randperm, by design). */
  em_generator_set_seed(g, 42);
  em_tensor *p = em_tensor_randperm(100, EM_INT64, g);
  ASSERT_NOTNULL(p);
  ASSERT_TRUE(same(a, (const int64_t *)em_tensor_data(p), 100));
  em_tensor_release(p);
  free(a), free(b), free(c), free(d);
  em_dl_sampler_release(s);

  /* num_samples > n: whole permutations, then a prefix of one more */
  em_generator_set_seed(g, 5);
  s = em_dl_random_sampler_create(10, false, 25, g);
  a = collect(s, &n);
  ASSERT_EQ(n, 25);
  ASSERT_TRUE(is_perm(a, 10) && is_perm(a + 10, 10));
  for (int i = 20; i < 25; i++) ASSERT_TRUE(a[i] >= 0 && a[i] < 10);
  em_generator_set_seed(g, 5); /* documented algorithm: successive randperm(10) */
  for (int k = 0; k < 3; k++) {
    p = em_tensor_randperm(10, EM_INT64, g);
    ASSERT_TRUE(same(a + 10 * k, (const int64_t *)em_tensor_data(p), k < 2 ? 10 : 5));
    em_tensor_release(p);
  }
  free(a);
  em_dl_sampler_release(s);
  em_generator_destroy(g);
}

EM_TEST(random_without_generator_uses_default_seed) {
  em_dl_sampler *s = em_dl_random_sampler_create(50, false, -1, NULL);
  int64_t n;
  em_manual_seed(3);
  int64_t *a = collect(s, &n);
  int64_t *b = collect(s, &n); /* the default generator moved on */
  em_manual_seed(3);
  int64_t *c = collect(s, &n);
  ASSERT_TRUE(a && b && c && is_perm(a, 50) && is_perm(b, 50));
  ASSERT_TRUE(!same(a, b, 50) && same(a, c, 50));
  free(a), free(b), free(c);
  em_dl_sampler_release(s);
}

EM_TEST(random_with_replacement) {
  em_generator *g = em_generator_create(7);
  em_dl_sampler *s = em_dl_random_sampler_create(4, true, 40000, g);
  ASSERT_EQ(em_dl_sampler_len(s), 40000);
  int64_t n;
  int64_t *a = collect(s, &n);
  ASSERT_EQ(n, 40000);
  int64_t cnt[4] = {0};
  for (int64_t i = 0; i < n; i++) {
    ASSERT_TRUE(a[i] >= 0 && a[i] < 4);
    cnt[a[i]]++;
  }
  for (int k = 0; k < 4; k++) ASSERT_CLOSE(cnt[k], 10000, 0.05, 0);
  /* documented algorithm: chunks of randint(0, n, [32]) */
  em_generator_set_seed(g, 7);
  em_tensor *r = em_tensor_randint(0, 4, EM_DIMS(32), EM_INT64, g);
  ASSERT_TRUE(same(a, (const int64_t *)em_tensor_data(r), 32));
  em_tensor_release(r);
  /* same seed, same sequence */
  em_generator_set_seed(g, 7);
  int64_t *b = collect(s, &n);
  ASSERT_TRUE(same(a, b, 40000));
  free(a), free(b);
  em_dl_sampler_release(s);
  /* num_samples smaller than n, not a multiple of 32 */
  s = em_dl_random_sampler_create(1000, true, 45, g);
  a = collect(s, &n);
  ASSERT_EQ(n, 45);
  free(a);
  em_dl_sampler_release(s);
  ASSERT_PNULL_ERR(em_dl_random_sampler_create(10, true, 0, g), EM_ERR_INVALID,
                  "num_samples should be a positive integer value, but got num_samples=0");
  ASSERT_PNULL_ERR(em_dl_random_sampler_create(0, false, -1, g), EM_ERR_INVALID,
                  "num_samples=0");
  em_generator_destroy(g);
}

EM_TEST(subset_random) {
  const int64_t idx[] = {10, 20, 30, 40, 50};
  em_generator *g = em_generator_create(1);
  em_dl_sampler *s = em_dl_subset_random_sampler_create(5, idx, g);
  int64_t n;
  int64_t *a = collect(s, &n);
  ASSERT_EQ(n, 5);
  int64_t sum = 0;
  bool seen[5] = {0};
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(a[i] % 10 == 0 && a[i] >= 10 && a[i] <= 50 && !seen[a[i] / 10 - 1]);
    seen[a[i] / 10 - 1] = true;
    sum += a[i];
  }
  ASSERT_EQ(sum, 150);
  free(a);
  em_dl_sampler_release(s);
  em_generator_destroy(g);
}

EM_TEST(weighted_with_replacement) {
  const double w[] = {1, 2, 0, 7};
  em_generator *g = em_generator_create(11);
  em_dl_sampler *s = em_dl_weighted_random_sampler_create(4, w, 100000, true, g);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(em_dl_sampler_len(s), 100000);
  int64_t n;
  int64_t *a = collect(s, &n);
  ASSERT_EQ(n, 100000);
  int64_t cnt[4] = {0};
  for (int64_t i = 0; i < n; i++) cnt[a[i]]++;
  ASSERT_EQ(cnt[2], 0);
  ASSERT_CLOSE(cnt[0] / 1e5, 0.1, 0, 0.01);
  ASSERT_CLOSE(cnt[1] / 1e5, 0.2, 0, 0.01);
  ASSERT_CLOSE(cnt[3] / 1e5, 0.7, 0, 0.01);
  em_generator_set_seed(g, 11);
  int64_t *b = collect(s, &n);
  ASSERT_TRUE(same(a, b, 100000));
  free(a), free(b);
  em_dl_sampler_release(s);
  em_generator_destroy(g);
}

EM_TEST(weighted_without_replacement) {
  em_generator *g = em_generator_create(12);
  const double w[] = {5, 0, 1, 3, 2};
  em_dl_sampler *s = em_dl_weighted_random_sampler_create(5, w, 4, false, g);
  ASSERT_NOTNULL(s);
  int64_t n;
  int64_t *a = collect(s, &n);
  ASSERT_EQ(n, 4); /* exactly the four positive weights, each once */
  int64_t mask = 0;
  for (int i = 0; i < 4; i++) mask |= 1 << a[i];
  ASSERT_EQ(mask, 0x1d);
  free(a);
  em_dl_sampler_release(s);
  /* the first pick of {1, 3} is index 1 with probability 3/4 */
  const double w2[] = {1, 3};
  s = em_dl_weighted_random_sampler_create(2, w2, 1, false, g);
  int firsts = 0, passes = 4000;
  for (int k = 0; k < passes; k++) {
    a = collect(s, &n);
    ASSERT_EQ(n, 1);
    firsts += a[0] == 1;
    free(a);
  }
  ASSERT_CLOSE(firsts / (double)passes, 0.75, 0, 0.03);
  em_dl_sampler_release(s);
  const double bad[] = {1, -1};
  ASSERT_PNULL_ERR(em_dl_weighted_random_sampler_create(2, bad, 1, true, g),
                  EM_ERR_INVALID, "weight 1 is -1");
  const double zero[] = {0, 0};
  ASSERT_PNULL_ERR(em_dl_weighted_random_sampler_create(2, zero, 1, true, g),
                  EM_ERR_INVALID, "sum of probabilities <= 0");
  ASSERT_PNULL_ERR(em_dl_weighted_random_sampler_create(2, w2, 3, false, g),
                  EM_ERR_INVALID, "cannot sample n_sample > prob_dist.size(-1) samples without replacement");
  ASSERT_PNULL_ERR(em_dl_weighted_random_sampler_create(5, w, 5, false, g),
                  EM_ERR_INVALID, "not enough non-negative category to sample");
  ASSERT_PNULL_ERR(em_dl_weighted_random_sampler_create(2, w2, 0, true, g),
                  EM_ERR_INVALID, "num_samples should be a positive integer value");
  em_generator_destroy(g);
}

/* Batches of a batch sampler, as a flat list with -1 after each batch. */
static int64_t *batches(em_dl_sampler *bs, int64_t *n) {
  em_dl_sampler_iter *it = em_dl_sampler_iter_create(bs);
  if (!it) return NULL;
  int64_t *out = malloc(4096 * sizeof *out);
  *n = 0;
  for (;;) {
    const int64_t *idx;
    int64_t k;
    if (em_dl_sampler_iter_next(it, &idx, &k) != EM_OK || k == 0) break;
    for (int64_t i = 0; i < k; i++) out[(*n)++] = idx[i];
    out[(*n)++] = -1;
  }
  em_dl_sampler_iter_destroy(it);
  return out;
}

EM_TEST(batch_sampler) {
  em_dl_sampler *s = em_dl_sequential_sampler_create(10);
  em_dl_sampler *b = em_dl_batch_sampler_create(s, 3, false);
  ASSERT_NOTNULL(b);
  ASSERT_TRUE(em_dl_sampler_is_batch(b));
  ASSERT_EQ(em_dl_sampler_len(b), 4);
  int64_t n;
  int64_t *v = batches(b, &n);
  ASSERT_SEQ(v, n, 0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, -1);
  free(v);
  em_dl_sampler_release(b);
  b = em_dl_batch_sampler_create(s, 3, true);
  ASSERT_EQ(em_dl_sampler_len(b), 3);
  v = batches(b, &n);
  ASSERT_SEQ(v, n, 0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1);
  free(v);
  ASSERT_PNULL_ERR(em_dl_batch_sampler_create(b, 2, false), EM_ERR_INVALID,
                  "already yields batches");
  em_dl_sampler_release(b);
  b = em_dl_batch_sampler_create(s, 10, true); /* exact multiple */
  v = batches(b, &n);
  ASSERT_EQ(n, 11);
  free(v);
  em_dl_sampler_release(b);
  ASSERT_PNULL_ERR(em_dl_batch_sampler_create(s, 0, false), EM_ERR_INVALID,
                  "batch_size should be a positive integer value, but got batch_size=0");
  em_dl_sampler_release(s);

  /* over a random sampler: the batches cut the sampler's own sequence */
  em_generator *g = em_generator_create(9);
  s = em_dl_random_sampler_create(2500, false, -1, g);
  b = em_dl_batch_sampler_create(s, 64, false);
  v = batches(b, &n);
  em_generator_set_seed(g, 9);
  int64_t m;
  int64_t *flat = collect(s, &m);
  ASSERT_EQ(m, 2500);
  int64_t k = 0, inb = 0, nb = 0;
  for (int64_t i = 0; i < n; i++) {
    if (v[i] < 0) {
      ASSERT_TRUE(inb == 64 || (k == 2500 && inb == 2500 % 64));
      inb = 0;
      nb++;
      continue;
    }
    ASSERT_EQ(v[i], flat[k]);
    k++, inb++;
  }
  ASSERT_EQ(k, 2500);
  ASSERT_EQ(nb, 40);
  free(v), free(flat);
  em_dl_sampler_release(b);
  em_dl_sampler_release(s);
  em_generator_destroy(g);
}

static int64_t *dist_pass(int64_t len, em_dl_distributed_options o, int64_t rank, int64_t epoch,
                          int64_t *n) {
  o.rank = rank;
  em_dl_sampler *s = em_dl_distributed_sampler_create(len, &o);
  if (!s) return NULL;
  em_dl_sampler_set_epoch(s, epoch);
  int64_t *v = collect(s, n);
  if (em_dl_sampler_len(s) != *n) {
    free(v);
    v = NULL;
  }
  em_dl_sampler_release(s);
  return v;
}

EM_TEST(distributed_exact_without_shuffle) {
  /* Expected values: torch 1.13 DistributedSampler(range(n), R, r,
   * shuffle=False, drop_last=...). */
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  o.shuffle = false;
  o.num_replicas = 3;
  int64_t n;
  int64_t *v;
  v = dist_pass(10, o, 0, 0, &n);
  ASSERT_SEQ(v, n, 0, 3, 6, 9);
  free(v);
  v = dist_pass(10, o, 1, 0, &n);
  ASSERT_SEQ(v, n, 1, 4, 7, 0);
  free(v);
  v = dist_pass(10, o, 2, 0, &n);
  ASSERT_SEQ(v, n, 2, 5, 8, 1);
  free(v);
  o.drop_last = true;
  v = dist_pass(10, o, 0, 0, &n);
  ASSERT_SEQ(v, n, 0, 3, 6);
  free(v);
  v = dist_pass(10, o, 2, 0, &n);
  ASSERT_SEQ(v, n, 2, 5, 8);
  free(v);
  o.num_replicas = 4;
  v = dist_pass(7, o, 3, 0, &n);
  ASSERT_SEQ(v, n, 3);
  free(v);
  o.drop_last = false;
  o.num_replicas = 5; /* fewer samples than replicas: padded by repetition */
  int64_t expect[5] = {0, 1, 0, 1, 0};
  for (int r = 0; r < 5; r++) {
    v = dist_pass(2, o, r, 0, &n);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(v[0], expect[r]);
    free(v);
  }
  v = dist_pass(0, o, 4, 0, &n);
  ASSERT_EQ(n, 0);
  free(v);
}

EM_TEST(distributed_shuffle_properties) {
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  o.num_replicas = 4;
  o.seed = 17;
  const int64_t len = 103, R = 4;
  /* drop_last: every index at most once over the ranks, total 100 */
  o.drop_last = true;
  char seen[103] = {0};
  int64_t total = 0;
  for (int64_t r = 0; r < R; r++) {
    int64_t n;
    int64_t *v = dist_pass(len, o, r, 0, &n);
    ASSERT_NOTNULL(v);
    ASSERT_EQ(n, 25);
    for (int64_t i = 0; i < n; i++) {
      ASSERT_TRUE(v[i] >= 0 && v[i] < len && !seen[v[i]]);
      seen[v[i]] = 1;
    }
    total += n;
    free(v);
  }
  ASSERT_EQ(total, 100);
  /* padding: rebuild the global order from the ranks (position p is rank
   * p % R's element p / R): a permutation of 103 followed by its first 1
   * element, so that 104 = 26 * 4 */
  o.drop_last = false;
  int64_t global[104];
  int64_t *rk[4];
  for (int64_t r = 0; r < R; r++) {
    int64_t n;
    rk[r] = dist_pass(len, o, r, 0, &n);
    ASSERT_EQ(n, 26);
  }
  for (int64_t p = 0; p < 104; p++) global[p] = rk[p % R][p / R];
  ASSERT_TRUE(is_perm(global, 103));
  ASSERT_EQ(global[103], global[0]);
  /* same seed and epoch: same order; set_epoch: a new order; the
   * documented algorithm: randperm(len) from a generator seeded seed+epoch */
  int64_t n;
  int64_t *again = dist_pass(len, o, 1, 0, &n);
  ASSERT_TRUE(same(again, rk[1], 26));
  int64_t *e1 = dist_pass(len, o, 1, 1, &n);
  ASSERT_TRUE(!same(e1, rk[1], 26));
  em_generator *g = em_generator_create(17 + 1);
  em_tensor *p = em_tensor_randperm(len, EM_INT64, g);
  const int64_t *pv = em_tensor_data(p);
  for (int64_t i = 0; i < 26; i++) ASSERT_EQ(e1[i], pv[(1 + i * R) % len]);
  em_tensor_release(p);
  em_generator_destroy(g);
  o.seed = 18;
  int64_t *s18 = dist_pass(len, o, 1, 0, &n);
  ASSERT_TRUE(same(s18, e1, 26)); /* seed 18 epoch 0 == seed 17 epoch 1 (seed + epoch) */
  free(again), free(e1), free(s18);
  for (int r = 0; r < 4; r++) free(rk[r]);
}

EM_TEST(distributed_uneven) {
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  o.shuffle = false;
  o.uneven = true;
  o.num_replicas = 3;
  int64_t n;
  int64_t *v = dist_pass(10, o, 0, 0, &n);
  ASSERT_SEQ(v, n, 0, 3, 6, 9);
  free(v);
  v = dist_pass(10, o, 1, 0, &n);
  ASSERT_SEQ(v, n, 1, 4, 7);
  free(v);
  v = dist_pass(10, o, 2, 0, &n);
  ASSERT_SEQ(v, n, 2, 5, 8);
  free(v);
  /* shuffled: every index exactly once over the ranks */
  o.shuffle = true;
  o.num_replicas = 4;
  char seen[10] = {0};
  int64_t total = 0;
  for (int r = 0; r < 4; r++) {
    v = dist_pass(10, o, r, 3, &n);
    ASSERT_EQ(n, r < 2 ? 3 : 2);
    for (int64_t i = 0; i < n; i++) {
      ASSERT_TRUE(!seen[v[i]]);
      seen[v[i]] = 1;
    }
    total += n;
    free(v);
  }
  ASSERT_EQ(total, 10);
}

EM_TEST(distributed_errors) {
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  o.num_replicas = 3;
  o.rank = 3;
  ASSERT_PNULL_ERR(em_dl_distributed_sampler_create(10, &o), EM_ERR_INVALID,
                  "Invalid rank 3, rank should be in the interval [0, 2]");
  o.rank = -1;
  ASSERT_PNULL_ERR(em_dl_distributed_sampler_create(10, &o), EM_ERR_INVALID,
                  "Invalid rank -1");
  o.rank = 0;
  o.num_replicas = 0;
  ASSERT_PNULL_ERR(em_dl_distributed_sampler_create(10, &o), EM_ERR_INVALID,
                  "num_replicas should be positive");
  o.num_replicas = 2;
  o.uneven = o.drop_last = true;
  ASSERT_PNULL_ERR(em_dl_distributed_sampler_create(10, &o), EM_ERR_INVALID,
                  "exclude each other");
  em_dl_sampler *s = em_dl_sequential_sampler_create(3);
  ASSERT_ERR(em_dl_sampler_set_epoch(s, 1), EM_ERR_INVALID, "SequentialSampler has no epoch");
  em_dl_sampler_release(s);
}

/* A user sampler: yields 2 * i in chunks of 3, like a Python generator. */
typedef struct { int64_t n, pos, buf[3]; } evens;
static int64_t ev_len(void *ctx) { return 5; }
static em_status ev_begin(void *ctx, void **state) {
  evens *e = calloc(1, sizeof *e);
  e->n = 5;
  *state = e;
  return EM_OK;
}
static em_status ev_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  evens *e = state;
  int64_t k = 0;
  while (k < 3 && e->pos < e->n) e->buf[k++] = 2 * e->pos++;
  *idx = e->buf;
  *n = k;
  return EM_OK;
}
static void ev_end(void *ctx, void *state) { free(state); }

EM_TEST(user_sampler) {
  static const em_dl_sampler_ops ops = {.name = "Evens", .len = ev_len, .begin = ev_begin,
                                        .next = ev_next, .end = ev_end};
  em_dl_sampler *s = em_dl_sampler_create(&ops, NULL);
  em_dl_sampler *b = em_dl_batch_sampler_create(s, 2, false);
  int64_t n;
  int64_t *v = batches(b, &n);
  ASSERT_SEQ(v, n, 0, 2, -1, 4, 6, -1, 8, -1);
  free(v);
  ASSERT_EQ(em_dl_sampler_len(b), 3);
  ASSERT_STREQ(em_dl_sampler_name(s), "Evens");
  /* collect stops an endless (here: too long) sampler with an error */
  int64_t *out;
  ASSERT_ERR(em_dl_sampler_collect(s, 3, &out, &n), EM_ERR_INVALID, "more than 3 indices");
  em_dl_sampler_release(b);
  em_dl_sampler_release(s);
}

/* ---- user mistakes in samplers --------------------------------------------------------- */

static int flaky_calls;
static int64_t flaky_buf[2] = {0, 1};
static em_status flaky_begin(void *ctx, void **state) {
  *state = NULL;
  flaky_calls = 0;
  return EM_OK;
}
/* yields [0, 1], fails (call 1), then yields [0, 1] again, then ends */
static em_status flaky_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  int c = flaky_calls++;
  if (c == 1) return em_set_error(EM_ERR_IO, "Flaky: next failed");
  if (c == 0 || c == 2) {
    *idx = flaky_buf;
    *n = 2;
  }
  return EM_OK;
}
static em_status silent_begin(void *ctx, void **state) { return EM_ERR_IO; }
static em_status null_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  *n = 3; /* and no array */
  return EM_OK;
}

EM_TEST(sampler_mistakes) {
  /* a failed next leaves the pass usable: the batch sampler does not keep
   * a half-taken chunk */
  static const em_dl_sampler_ops flaky = {.name = "Flaky", .begin = flaky_begin, .next = flaky_next};
  em_dl_sampler *s = em_dl_sampler_create(&flaky, NULL);
  em_dl_sampler *b = em_dl_batch_sampler_create(s, 3, false);
  em_dl_sampler_iter *it = em_dl_sampler_iter_create(b);
  ASSERT_NOTNULL(it);
  const int64_t *idx;
  int64_t n;
  ASSERT_ERR(em_dl_sampler_iter_next(it, &idx, &n), EM_ERR_IO, "Flaky: next failed");
  ASSERT_OK(em_dl_sampler_iter_next(it, &idx, &n));
  ASSERT_EQ(n, 2);
  ASSERT_EQ(idx[1], 1);
  em_dl_sampler_iter_destroy(it);
  /* a begin or next that fails without a message gets one */
  static const em_dl_sampler_ops silent = {.name = "Silent", .begin = silent_begin, .next = flaky_next};
  em_dl_sampler *q = em_dl_sampler_create(&silent, NULL);
  em_dl_sampler *qb = em_dl_batch_sampler_create(q, 2, false);
  ASSERT_NULL_ERR(em_dl_sampler_iter_create(q), EM_ERR_IO, "Silent: begin failed without an error message");
  ASSERT_NULL_ERR(em_dl_sampler_iter_create(qb), EM_ERR_IO, "Silent: begin failed without");
  /* n > 0 without an array */
  static const em_dl_sampler_ops nul = {.name = "Null", .begin = flaky_begin, .next = null_next};
  em_dl_sampler *z = em_dl_sampler_create(&nul, NULL);
  int64_t *out;
  ASSERT_ERR(em_dl_sampler_collect(z, 10, &out, &n), EM_ERR_INVALID, "Null: next returned 3 indices but no array");
  ASSERT_ERR(em_dl_sampler_collect(z, 10, NULL, &n), EM_ERR_INVALID, "NULL output");
  ASSERT_TRUE(em_dl_sampler_retain(NULL) == NULL);
  /* sizes that would overflow */
  em_dl_distributed_options o;
  em_dl_distributed_options_init(&o);
  o.num_replicas = INT64_MAX;
  o.rank = 5;
  em_dl_sampler *d = em_dl_distributed_sampler_create(10, &o);
  ASSERT_NOTNULL(d);
  ASSERT_OK(em_dl_sampler_collect(d, 10, &out, &n));
  ASSERT_EQ(n, 1); /* padding: every replica gets one index */
  free(out);
  o.drop_last = true;
  em_dl_sampler *d2 = em_dl_distributed_sampler_create(10, &o);
  ASSERT_EQ(em_dl_sampler_len(d2), 0);
  ASSERT_NULL_ERR(em_dl_random_sampler_create(0, false, 5, NULL), EM_ERR_INVALID,
                  "cannot draw 5 samples from an empty dataset");
  double w[3] = {1e308, 1e308, 1e308};
  ASSERT_NULL_ERR(em_dl_weighted_random_sampler_create(3, w, 10, true, NULL), EM_ERR_INVALID,
                  "weights add up to more than a double holds");
  em_dl_sampler_release(d2), em_dl_sampler_release(d), em_dl_sampler_release(z);
  em_dl_sampler_release(qb), em_dl_sampler_release(q), em_dl_sampler_release(b);
  em_dl_sampler_release(s);
}

EM_TEST_MAIN()
