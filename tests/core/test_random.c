/* The Philox generator and the random tensor ops.
 *
 * Exact values are checked against a reference Philox4x32-10 written here
 * from the paper (and itself checked against the Random123 known-answer
 * vectors) plus the value mappings core/cpu/random.c documents; the
 * distributions are checked with fixed seeds and generous bounds. Tests
 * that touch the default generator restore its state. */
#include <stdint.h>

#include "core/core_impl.h"
#include "tests/harness.h"

void em__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* ---- reference Philox4x32-10 (Salmon et al., SC'11) ------------------------------- */

static void ref_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * x0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * x2;
    uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
    uint32_t y1 = (uint32_t)p1;
    uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
    uint32_t y3 = (uint32_t)p0;
    x0 = y0, x1 = y1, x2 = y2, x3 = y3;
    k0 += 0x9E3779B9u; /* the bump after the last round is never used */
    k1 += 0xBB67AE85u;
  }
  out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
}

/* The block element k of a call starting at counter `offset` draws. */
static void ref_block(uint64_t seed, uint64_t offset, int64_t k, uint32_t w[4]) {
  uint64_t c = offset + (uint64_t)k;
  const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0, 0};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  ref_philox(ctr, key, w);
}
static double ref_unit53(const uint32_t *w) {
  return (double)((((uint64_t)w[0] << 32) | w[1]) >> 11) / 9007199254740992.0;
}

EM_TEST(philox_known_answers) {
  /* Random123 kat_vectors: philox4x32 10 rounds */
  static const struct {
    uint32_t ctr[4], key[2], out[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
    uint32_t a[4], b[4];
    ref_philox(kat[i].ctr, kat[i].key, a);
    em__philox4x32_10(kat[i].ctr, kat[i].key, b);
    for (int j = 0; j < 4; j++) {
      ASSERT_EQ(a[j], kat[i].out[j]);
      ASSERT_EQ(b[j], kat[i].out[j]);
    }
  }
}

/* ---- the generator -------------------------------------------------------------------- */

EM_TEST(generator_state_api) {
  /* the default seed is PyTorch's default CPU seed */
  ASSERT_TRUE(em_generator_seed(em_default_generator()) == 67280421310721ULL);
  ASSERT_TRUE(em_generator_seed(NULL) == 67280421310721ULL);

  em_generator *g = em_generator_create(42);
  ASSERT_TRUE(g != NULL);
  uint64_t s, o;
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(s, 42);
  ASSERT_EQ(o, 0);
  ASSERT_EQ(em_generator_advance(g, 10), 0);
  ASSERT_EQ(em_generator_advance(g, 5), 10);
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(o, 15);
  em_generator_set_state(g, 7, 1000);
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(s, 7);
  ASSERT_EQ(o, 1000);
  em_generator_set_seed(g, 9); /* resets the offset */
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(s, 9);
  ASSERT_EQ(o, 0);
  ASSERT_EQ(em_generator_seed(g), 9);
  em_generator_get_state(g, NULL, NULL); /* allowed */
  em_generator_destroy(g);
  em_generator_destroy(NULL);
  em_generator_destroy(em_default_generator()); /* never freed */

  /* manual_seed seeds the default generator; restore it afterwards */
  uint64_t ds, dof;
  em_generator_get_state(NULL, &ds, &dof);
  em_manual_seed(1234);
  em_generator_get_state(em_default_generator(), &s, &o);
  ASSERT_EQ(s, 1234);
  ASSERT_EQ(o, 0);
  em_tensor *t = em_tensor_rand(EM_DIMS(5), EM_FLOAT32, NULL);
  em_generator_get_state(NULL, &s, &o);
  ASSERT_EQ(o, 5);
  em_generator_set_state(NULL, ds, dof);
  em_tensor_release(t);
}

typedef struct advance_ctx {
  em_generator *g;
  uint64_t *got;
} advance_ctx;

static void advance_part(void *ctx, int64_t b, int64_t e) {
  advance_ctx *c = ctx;
  for (int64_t i = b; i < e; i++) c->got[i] = em_generator_advance(c->g, 3);
}

EM_TEST(generator_advance_is_atomic_across_threads) {
  /* the pool's threads reserve counters concurrently: every reservation
   * gets its own block of 3 */
  enum { N = 20000 };
  em_generator *g = em_generator_create(1);
  uint64_t *got = calloc(N, sizeof *got);
  bool *seen = calloc(N, 1);
  advance_ctx c = {g, got};
  int prev = em_get_num_threads();
  em_set_num_threads(2);
  em__parallel_for(N, 100, advance_part, &c);
  em_set_num_threads(prev);
  int bad = 0;
  for (int i = 0; i < N; i++) {
    if (got[i] % 3 || got[i] / 3 >= N || seen[got[i] / 3]) bad++;
    else seen[got[i] / 3] = true;
  }
  uint64_t s, o;
  em_generator_get_state(g, &s, &o);
  free(got);
  free(seen);
  em_generator_destroy(g);
  ASSERT_EQ(bad, 0);
  ASSERT_EQ(o, 3 * N);
}

/* ---- exact values --------------------------------------------------------------------------- */

EM_TEST(rand_matches_reference) {
  const uint64_t seed = 0x123456789abcdefULL, off = 1000;
  em_generator *g = em_generator_create(seed);
  em_generator_set_state(g, seed, off);
  em_tensor *a = em_tensor_rand(EM_DIMS(2, 3), EM_FLOAT32, g);
  ASSERT_SHAPE(a, 2, 3);
  const float *av = em_tensor_data(a);
  for (int k = 0; k < 6; k++) {
    uint32_t w[4];
    ref_block(seed, off, k, w);
    ASSERT_TRUE(av[k] == (float)(w[0] >> 8) / 16777216.0f);
  }
  uint64_t s, o;
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(o, off + 6);

  em_tensor *b = em_tensor_rand(EM_DIMS(5), EM_FLOAT64, g); /* counters 1006.. */
  const double *bv = em_tensor_data(b);
  for (int k = 0; k < 5; k++) {
    uint32_t w[4];
    ref_block(seed, off + 6, k, w);
    ASSERT_TRUE(bv[k] == ref_unit53(w));
  }
  em_tensor *h = em_tensor_rand(EM_DIMS(5), EM_FLOAT16, g);
  em_tensor *bf = em_tensor_rand(EM_DIMS(5), EM_BFLOAT16, g);
  for (int k = 0; k < 5; k++) {
    uint32_t w[4];
    ref_block(seed, off + 11, k, w);
    ASSERT_CLOSE(em_test_get(h, k), (double)(w[0] >> 21) / 2048.0, 0, 0);
    ref_block(seed, off + 16, k, w);
    ASSERT_CLOSE(em_test_get(bf, k), (double)(w[0] >> 24) / 256.0, 0, 0);
  }

  /* randn: Box-Muller, cosine branch */
  em_generator_set_state(g, seed, 0);
  em_tensor *n = em_tensor_randn(EM_DIMS(8), EM_FLOAT64, g);
  em_tensor *n32 = em_tensor_randn(EM_DIMS(8), EM_FLOAT32, g);
  for (int k = 0; k < 8; k++) {
    uint32_t w[4];
    ref_block(seed, 0, k, w);
    double u1 = 1.0 - ref_unit53(w), u2 = ref_unit53(w + 2);
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    ASSERT_CLOSE(em_test_get(n, k), z, 1e-12, 1e-12);
    ref_block(seed, 8, k, w);
    u1 = ((double)w[0] + 1.0) / 4294967296.0;
    u2 = (double)(w[1] >> 8) / 16777216.0;
    z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    ASSERT_CLOSE(em_test_get(n32, k), z, 1e-5, 1e-4); /* computed in float */
  }

  /* randint: low + (64 bits mod range) */
  em_generator_set_state(g, seed, 77);
  em_tensor *r = em_tensor_randint(-10, 1000, EM_DIMS(9), EM_DTYPE_UNDEFINED, g);
  ASSERT_EQ(r->dtype, EM_INT64);
  const int64_t *rv = em_tensor_data(r);
  for (int k = 0; k < 9; k++) {
    uint32_t w[4];
    ref_block(seed, 77, k, w);
    ASSERT_EQ(rv[k], -10 + (int64_t)((((uint64_t)w[0] << 32) | w[1]) % 1010));
  }

  /* bernoulli_: 1 when the 53-bit uniform is below p */
  em_generator_set_state(g, seed, 5);
  em_tensor *z = em_tensor_zeros(EM_DIMS(16), EM_INT32);
  ASSERT_OK(em_tensor_bernoulli_(z, 0.37, g));
  for (int k = 0; k < 16; k++) {
    uint32_t w[4];
    ref_block(seed, 5, k, w);
    ASSERT_EQ(em_test_get(z, k), ref_unit53(w) < 0.37);
  }

  /* uniform_: from + u * (to - from) */
  em_generator_set_state(g, seed, 0);
  em_tensor *u = em_tensor_empty(EM_DIMS(6), EM_FLOAT64);
  ASSERT_OK(em_tensor_uniform_(u, -2.0, 6.0, g));
  for (int k = 0; k < 6; k++) {
    uint32_t w[4];
    ref_block(seed, 0, k, w);
    ASSERT_TRUE(em_test_get(u, k) == ref_unit53(w) * 8.0 + -2.0);
  }
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(h), em_tensor_release(bf);
  em_tensor_release(n), em_tensor_release(n32), em_tensor_release(r), em_tensor_release(z);
  em_tensor_release(u);
  em_generator_destroy(g);
}

EM_TEST(seeds_reproduce_and_differ) {
  em_generator *g1 = em_generator_create(2024), *g2 = em_generator_create(2024),
               *g3 = em_generator_create(2025);
  em_tensor *a = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, g1);
  em_tensor *b = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, g2);
  em_tensor *c = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, g3);
  em_tensor *d = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, g1); /* next numbers */
  ASSERT_TRUE(memcmp(em_tensor_data(a), em_tensor_data(b), 4000) == 0);
  int same_c = 0, same_d = 0;
  for (int i = 0; i < 1000; i++) {
    same_c += em_test_get(a, i) == em_test_get(c, i);
    same_d += em_test_get(a, i) == em_test_get(d, i);
  }
  ASSERT_TRUE(same_c < 5);
  ASSERT_TRUE(same_d < 5);
  /* set_state replays */
  em_generator_set_state(g3, 2024, 1000);
  em_tensor *e = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, g3);
  ASSERT_TRUE(memcmp(em_tensor_data(d), em_tensor_data(e), 4000) == 0);
  /* the default generator: manual_seed replays too */
  uint64_t ds, dof;
  em_generator_get_state(NULL, &ds, &dof);
  em_manual_seed(2024);
  em_tensor *f = em_tensor_randn(EM_DIMS(1000), EM_FLOAT32, NULL);
  em_generator_set_state(NULL, ds, dof);
  ASSERT_TRUE(memcmp(em_tensor_data(a), em_tensor_data(f), 4000) == 0);
  /* a worker's stream: base_seed + worker_id differs from its neighbour's */
  em_generator *w0 = em_generator_create(2024 + 0), *w1 = em_generator_create(2024 + 1);
  em_tensor *x0 = em_tensor_rand(EM_DIMS(100), EM_FLOAT64, w0);
  em_tensor *x1 = em_tensor_rand(EM_DIMS(100), EM_FLOAT64, w1);
  int same = 0;
  for (int i = 0; i < 100; i++) same += em_test_get(x0, i) == em_test_get(x1, i);
  ASSERT_EQ(same, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c), em_tensor_release(d);
  em_tensor_release(e), em_tensor_release(f), em_tensor_release(x0), em_tensor_release(x1);
  em_generator_destroy(g1), em_generator_destroy(g2), em_generator_destroy(g3);
  em_generator_destroy(w0), em_generator_destroy(w1);
}

/* ---- thread-count independence ---------------------------------------------------------------- */

enum { NT = 100000 }; /* well above the kernels' grain, so 2 threads split it */

static em_tensor *draw_all(int which, em_generator *g) {
  switch (which) {
    case 0: return em_tensor_rand(EM_DIMS(NT), EM_FLOAT32, g);
    case 1: return em_tensor_randn(EM_DIMS(NT), EM_FLOAT64, g);
    case 2: return em_tensor_randint(-5, 100, EM_DIMS(NT), EM_INT32, g);
    case 3: {
      em_tensor *t = em_tensor_zeros(EM_DIMS(NT), EM_UINT8);
      if (t && em_tensor_bernoulli_(t, 0.25, g)) {
        em_tensor_release(t);
        return NULL;
      }
      return t;
    }
    case 4: { /* non-contiguous in-place target */
      em_tensor *m = em_tensor_zeros(EM_DIMS(400, 250), EM_FLOAT16);
      em_tensor *t = m ? em_tensor_transpose(m, 0, 1) : NULL;
      em_tensor_release(m);
      if (t && em_tensor_normal_(t, 1.0, 3.0, g)) {
        em_tensor_release(t);
        return NULL;
      }
      return t;
    }
    default: {
      em_tensor *p = em_tensor_full(EM_DIMS(NT), em_scalar_float(0.5), EM_FLOAT32);
      em_tensor *r = p ? em_tensor_bernoulli(p, g) : NULL;
      em_tensor_release(p);
      return r;
    }
  }
}

EM_TEST(same_numbers_at_one_and_two_threads) {
  int prev = em_get_num_threads();
  for (int which = 0; which < 6; which++) {
    em_generator *g = em_generator_create(99);
    em_set_num_threads(1);
    em_tensor *a = draw_all(which, g);
    em_generator_set_state(g, 99, 0);
    em_set_num_threads(2);
    em_tensor *b = draw_all(which, g);
    em_set_num_threads(prev);
    ASSERT_NOTNULL(a);
    ASSERT_NOTNULL(b);
    ASSERT_EQ(a->numel, NT);
    for (int64_t i = 0; i < NT; i++) {
      if (em_test_get(a, i) != em_test_get(b, i)) {
        EM_FAILF("op %d: element %lld differs: %g vs %g", which, (long long)i,
                 em_test_get(a, i), em_test_get(b, i));
        break;
      }
    }
    em_tensor_release(a), em_tensor_release(b);
    em_generator_destroy(g);
    if (em_test_failed_now) return;
  }
}

/* ---- distributions (fixed seeds, generous bounds) ------------------------------------------------ */

static void moments(em_tensor *t, double *mean, double *var, double *lo, double *hi) {
  double s = 0, s2 = 0;
  *lo = INFINITY, *hi = -INFINITY;
  for (int64_t i = 0; i < t->numel; i++) {
    double v = em_test_get(t, i);
    s += v;
    s2 += v * v;
    if (v < *lo) *lo = v;
    if (v > *hi) *hi = v;
  }
  *mean = s / (double)t->numel;
  *var = s2 / (double)t->numel - *mean * *mean;
}

EM_TEST(uniform_distribution) {
  em_generator *g = em_generator_create(11);
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
  for (int i = 0; i < 4; i++) {
    em_tensor *t = em_tensor_rand(EM_DIMS(100000), dts[i], g);
    ASSERT_NOTNULL(t);
    ASSERT_EQ(t->dtype, dts[i]);
    double m, v, lo, hi;
    moments(t, &m, &v, &lo, &hi);
    ASSERT_CLOSE(m, 0.5, 0, 0.01);
    ASSERT_CLOSE(v, 1.0 / 12.0, 0, 0.004);
    ASSERT_TRUE(lo >= 0.0 && hi < 1.0);
    em_tensor_release(t);
  }
  em_tensor *u = em_tensor_empty(EM_DIMS(100000), EM_FLOAT32);
  ASSERT_OK(em_tensor_uniform_(u, -2.0, 3.0, g));
  double m, v, lo, hi;
  moments(u, &m, &v, &lo, &hi);
  ASSERT_CLOSE(m, 0.5, 0, 0.03);
  ASSERT_CLOSE(v, 25.0 / 12.0, 0, 0.06);
  ASSERT_TRUE(lo >= -2.0 && hi <= 3.0);
  ASSERT_OK(em_tensor_uniform_(u, 1.5, 1.5, g)); /* from == to: constant */
  moments(u, &m, &v, &lo, &hi);
  ASSERT_TRUE(lo == 1.5 && hi == 1.5);
  em_tensor_release(u);
  em_generator_destroy(g);
}

EM_TEST(normal_distribution) {
  em_generator *g = em_generator_create(12);
  static const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
  for (int i = 0; i < 4; i++) {
    em_tensor *t = em_tensor_randn(EM_DIMS(100000), dts[i], g);
    ASSERT_NOTNULL(t);
    double m, v, lo, hi;
    moments(t, &m, &v, &lo, &hi);
    ASSERT_CLOSE(m, 0.0, 0, 0.02);
    ASSERT_CLOSE(v, 1.0, 0, 0.04);
    int64_t within1 = 0;
    for (int64_t k = 0; k < t->numel; k++) within1 += fabs(em_test_get(t, k)) < 1.0;
    ASSERT_CLOSE((double)within1 / 100000.0, 0.6827, 0, 0.01);
    ASSERT_TRUE(isfinite(lo) && isfinite(hi));
    em_tensor_release(t);
  }
  em_tensor *n = em_tensor_empty(EM_DIMS(100000), EM_FLOAT64);
  ASSERT_OK(em_tensor_normal_(n, 3.0, 2.0, g));
  double m, v, lo, hi;
  moments(n, &m, &v, &lo, &hi);
  ASSERT_CLOSE(m, 3.0, 0, 0.04);
  ASSERT_CLOSE(v, 4.0, 0, 0.15);
  ASSERT_OK(em_tensor_normal_(n, -1.25, 0.0, g)); /* std 0: the mean */
  moments(n, &m, &v, &lo, &hi);
  ASSERT_TRUE(lo == -1.25 && hi == -1.25);
  em_tensor_release(n);
  em_generator_destroy(g);
}

EM_TEST(randint_range_and_dtypes) {
  em_generator *g = em_generator_create(13);
  em_tensor *t = em_tensor_randint(-3, 4, EM_DIMS(70000), EM_DTYPE_UNDEFINED, g);
  ASSERT_NOTNULL(t);
  int64_t count[7] = {0};
  const int64_t *v = em_tensor_data(t);
  for (int64_t i = 0; i < 70000; i++) {
    ASSERT_TRUE(v[i] >= -3 && v[i] < 4);
    count[v[i] + 3]++;
  }
  for (int i = 0; i < 7; i++) ASSERT_CLOSE((double)count[i], 10000.0, 0, 600.0);
  em_tensor_release(t);

  struct {
    em_dtype dt;
    int64_t lo, hi;
  } cases[] = {
      {EM_INT8, -128, -120}, {EM_INT8, 100, 128},   {EM_UINT8, 250, 256}, {EM_INT16, -5, 5},
      {EM_INT32, 0, 3},      {EM_BOOL, 0, 2},       {EM_FLOAT32, -4, 4},  {EM_FLOAT64, 0, 1000},
      {EM_FLOAT16, 0, 10},   {EM_BFLOAT16, -2, 2},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    em_tensor *r = em_tensor_randint(cases[c].lo, cases[c].hi, EM_DIMS(5, 200), cases[c].dt, g);
    ASSERT_NOTNULL(r);
    ASSERT_EQ(r->dtype, cases[c].dt);
    bool seen_lo = false, seen_top = false;
    for (int64_t i = 0; i < r->numel; i++) {
      double x = em_test_get(r, i);
      ASSERT_TRUE(x >= (double)cases[c].lo && x < (double)cases[c].hi && x == floor(x));
      seen_lo |= x == (double)cases[c].lo;
      seen_top |= x == (double)(cases[c].hi - 1);
    }
    if (cases[c].hi - cases[c].lo <= 20) ASSERT_TRUE(seen_lo && seen_top);
    em_tensor_release(r);
  }
  /* the whole int64 range (range 2^64 - 1 in unsigned arithmetic) */
  em_tensor *w = em_tensor_randint(INT64_MIN, INT64_MAX, EM_DIMS(1000), EM_INT64, g);
  ASSERT_NOTNULL(w);
  int neg = 0;
  for (int i = 0; i < 1000; i++) neg += ((const int64_t *)em_tensor_data(w))[i] < 0;
  ASSERT_CLOSE(neg, 500, 0, 80);
  em_tensor_release(w);
  /* 0-dim and empty */
  em_tensor *s = em_tensor_randint(5, 6, 0, NULL, EM_DTYPE_UNDEFINED, g);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(s->ndim, 0);
  ASSERT_CLOSE(em_tensor_item_double(s), 5, 0, 0);
  em_tensor *e = em_tensor_randint(0, 5, EM_DIMS(3, 0), EM_INT32, g);
  ASSERT_SHAPE(e, 3, 0);
  em_tensor_release(s), em_tensor_release(e);
  em_generator_destroy(g);
}

EM_TEST(randperm_is_a_permutation) {
  em_generator *g = em_generator_create(14);
  em_generator_set_state(g, 14, 500);
  em_tensor *p = em_tensor_randperm(1000, EM_DTYPE_UNDEFINED, g);
  ASSERT_NOTNULL(p);
  ASSERT_EQ(p->dtype, EM_INT64);
  ASSERT_SHAPE(p, 1000);
  /* reference Fisher-Yates from the top with counters 500 + i */
  int64_t ref[1000];
  for (int i = 0; i < 1000; i++) ref[i] = i;
  for (int64_t i = 999; i > 0; i--) {
    uint32_t w[4];
    ref_block(14, 500, i, w);
    int64_t j = (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)(i + 1));
    int64_t tmp = ref[i];
    ref[i] = ref[j];
    ref[j] = tmp;
  }
  const int64_t *v = em_tensor_data(p);
  bool seen[1000] = {0};
  int fixed = 0;
  for (int i = 0; i < 1000; i++) {
    ASSERT_EQ(v[i], ref[i]);
    ASSERT_TRUE(v[i] >= 0 && v[i] < 1000 && !seen[v[i]]);
    seen[v[i]] = true;
    fixed += v[i] == i;
  }
  ASSERT_TRUE(fixed < 10); /* expected 1 */
  uint64_t s, o;
  em_generator_get_state(g, &s, &o);
  ASSERT_EQ(o, 1500);
  em_tensor_release(p);

  static const em_dtype dts[] = {EM_INT32, EM_INT16, EM_INT8, EM_UINT8, EM_FLOAT32,
                                 EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
  static const int64_t ns[] = {100, 300, 128, 256, 1000, 50, 2049, 257};
  for (int d = 0; d < 8; d++) {
    em_tensor *q = em_tensor_randperm(ns[d], dts[d], g);
    ASSERT_NOTNULL(q);
    ASSERT_EQ(q->dtype, dts[d]);
    bool *hit = calloc((size_t)ns[d], 1);
    for (int64_t i = 0; i < ns[d]; i++) {
      double x = em_test_get(q, i);
      int64_t k = (int64_t)x;
      if (dts[d] == EM_UINT8 || x < 0 || x >= ns[d] || hit[k]) {
        if (!(dts[d] == EM_UINT8 && x >= 0 && x < 256 && !hit[k])) {
          free(hit);
          EM_FAILF("dtype %s: element %lld = %g", em_dtype_name(dts[d]), (long long)i, x);
          em_tensor_release(q);
          return;
        }
      }
      hit[k] = true;
    }
    free(hit);
    em_tensor_release(q);
  }
  em_tensor *z = em_tensor_randperm(0, EM_DTYPE_UNDEFINED, g);
  ASSERT_SHAPE(z, 0);
  em_tensor *one = em_tensor_randperm(1, EM_DTYPE_UNDEFINED, g);
  ASSERT_TENSOR_CLOSE(one, ((double[]){0}), 0, 0);
  em_tensor_release(z), em_tensor_release(one);
  em_generator_destroy(g);
}

EM_TEST(bernoulli_frequencies_and_dtypes) {
  em_generator *g = em_generator_create(15);
  em_tensor *t = em_tensor_empty(EM_DIMS(100000), EM_FLOAT32);
  ASSERT_OK(em_tensor_bernoulli_(t, 0.3, g));
  double m, v, lo, hi;
  moments(t, &m, &v, &lo, &hi);
  ASSERT_CLOSE(m, 0.3, 0, 0.01);
  ASSERT_TRUE(lo == 0.0 && hi == 1.0);
  ASSERT_OK(em_tensor_bernoulli_(t, 0.0, g));
  moments(t, &m, &v, &lo, &hi);
  ASSERT_TRUE(hi == 0.0);
  ASSERT_OK(em_tensor_bernoulli_(t, 1.0, g));
  moments(t, &m, &v, &lo, &hi);
  ASSERT_TRUE(lo == 1.0);
  em_tensor_release(t);
  /* every dtype */
  for (int d = 0; d < EM_DTYPE_COUNT; d++) {
    em_tensor *x = em_tensor_full(EM_DIMS(2000), em_scalar_int(7), (em_dtype)d);
    ASSERT_OK(em_tensor_bernoulli_(x, 0.5, g));
    int64_t ones = 0;
    for (int64_t i = 0; i < 2000; i++) {
      double e = em_test_get(x, i);
      ASSERT_TRUE(e == 0.0 || e == 1.0);
      ones += e == 1.0;
    }
    ASSERT_CLOSE((double)ones, 1000.0, 0, 150.0);
    em_tensor_release(x);
  }

  /* bernoulli(p): per-element probabilities, p's dtype */
  double pv[3000];
  for (int i = 0; i < 3000; i++) pv[i] = i % 3 == 0 ? 0.0 : i % 3 == 1 ? 1.0 : 0.8;
  em_tensor *p = em_tensor_from_data(pv, EM_DIMS(3000), EM_FLOAT64);
  em_tensor *r = em_tensor_bernoulli(p, g);
  ASSERT_NOTNULL(r);
  ASSERT_EQ(r->dtype, EM_FLOAT64);
  int64_t hits = 0;
  for (int i = 0; i < 3000; i++) {
    double e = em_test_get(r, i);
    if (i % 3 == 0) ASSERT_TRUE(e == 0.0);
    if (i % 3 == 1) ASSERT_TRUE(e == 1.0);
    if (i % 3 == 2) hits += e == 1.0;
  }
  ASSERT_CLOSE((double)hits / 1000.0, 0.8, 0, 0.05);
  em_tensor_release(r);
  /* half probabilities, non-contiguous: same as a contiguous copy */
  em_tensor *ph = em_tensor_to_dtype(p, EM_FLOAT16);
  em_tensor *pm = em_tensor_view(ph, EM_DIMS(30, 100));
  em_tensor *pt = em_tensor_transpose(pm, 0, 1);
  em_tensor *pc = em_tensor_contiguous(pt);
  ASSERT_NOTNULL(pc);
  em_generator_set_state(g, 15, 0);
  em_tensor *r1 = em_tensor_bernoulli(pt, g);
  em_generator_set_state(g, 15, 0);
  em_tensor *r2 = em_tensor_bernoulli(pc, g);
  ASSERT_NOTNULL(r1);
  ASSERT_NOTNULL(r2);
  ASSERT_EQ(r1->dtype, EM_FLOAT16);
  ASSERT_SHAPE(r1, 100, 30);
  for (int64_t i = 0; i < 3000; i++) {
    ASSERT_TRUE(em_test_get(r1, i) == em_test_get(r2, i));
    ASSERT_TRUE(em_test_get(r1, i) == (em_test_get(pt, i) == 1.0 ? 1.0 : em_test_get(r1, i)));
  }
  /* 0-dim and empty */
  em_tensor *p0 = em_tensor_scalar(em_scalar_float(1.0), EM_FLOAT32);
  em_tensor *r0 = em_tensor_bernoulli(p0, g);
  ASSERT_EQ(r0->ndim, 0);
  ASSERT_CLOSE(em_tensor_item_double(r0), 1.0, 0, 0);
  em_tensor *pe = em_tensor_empty(EM_DIMS(0, 2), EM_BFLOAT16);
  em_tensor *re = em_tensor_bernoulli(pe, g);
  ASSERT_SHAPE(re, 0, 2);
  em_tensor_release(p), em_tensor_release(ph), em_tensor_release(pm), em_tensor_release(pt);
  em_tensor_release(pc), em_tensor_release(r1), em_tensor_release(r2), em_tensor_release(p0);
  em_tensor_release(r0), em_tensor_release(pe), em_tensor_release(re);
  em_generator_destroy(g);
}

/* ---- layouts, versions, sizes ------------------------------------------------------------------- */

EM_TEST(inplace_on_views_follows_logical_order) {
  em_generator *g = em_generator_create(16);
  /* a transposed view gets the numbers a contiguous tensor of its shape gets */
  em_tensor *m = em_tensor_zeros(EM_DIMS(50, 40), EM_FLOAT32);
  em_tensor *t = em_tensor_transpose(m, 0, 1);
  em_tensor *ref = em_tensor_empty(EM_DIMS(40, 50), EM_FLOAT32);
  ASSERT_OK(em_tensor_uniform_(t, -1, 1, g));
  em_generator_set_state(g, 16, 0);
  ASSERT_OK(em_tensor_uniform_(ref, -1, 1, g));
  for (int64_t i = 0; i < 2000; i++) ASSERT_TRUE(em_test_get(t, i) == em_test_get(ref, i));
  /* a strided slice: only its elements change */
  em_tensor *z = em_tensor_zeros(EM_DIMS(100), EM_FLOAT64);
  em_tensor *s = em_tensor_slice(z, 0, 1, INT64_MAX, 3); /* 1, 4, ..., 97: 33 elements */
  ASSERT_SHAPE(s, 33);
  em_generator_set_state(g, 16, 0);
  ASSERT_OK(em_tensor_normal_(s, 10.0, 1.0, g));
  em_generator_set_state(g, 16, 0);
  em_tensor *n = em_tensor_empty(EM_DIMS(33), EM_FLOAT64);
  ASSERT_OK(em_tensor_normal_(n, 10.0, 1.0, g));
  for (int64_t i = 0; i < 100; i++) {
    double e = em_test_get(z, i);
    if (i % 3 == 1)
      ASSERT_TRUE(e == em_test_get(n, (i - 1) / 3));
    else
      ASSERT_TRUE(e == 0.0);
  }
  /* an offset, contiguous view */
  em_tensor *tail = em_tensor_slice(z, 0, 90, INT64_MAX, 1);
  ASSERT_OK(em_tensor_bernoulli_(tail, 1.0, g));
  ASSERT_CLOSE(em_test_get(z, 89), 0.0, 0, 0);
  ASSERT_CLOSE(em_test_get(z, 90), 1.0, 0, 0);
  ASSERT_CLOSE(em_test_get(z, 99), 1.0, 0, 0);
  em_tensor_release(m), em_tensor_release(t), em_tensor_release(ref), em_tensor_release(z);
  em_tensor_release(s), em_tensor_release(n), em_tensor_release(tail);
  em_generator_destroy(g);
}

EM_TEST(versions_sizes_and_like) {
  em_generator *g = em_generator_create(17);
  em_tensor *t = em_tensor_zeros(EM_DIMS(4, 4), EM_FLOAT32);
  uint64_t v0 = em_tensor_version(t);
  ASSERT_OK(em_tensor_uniform_(t, 0, 1, g));
  ASSERT_TRUE(em_tensor_version(t) > v0);
  uint64_t v1 = em_tensor_version(t);
  ASSERT_OK(em_tensor_normal_(t, 0, 1, g));
  ASSERT_TRUE(em_tensor_version(t) > v1);
  uint64_t v2 = em_tensor_version(t);
  em_tensor *tt = em_tensor_transpose(t, 0, 1); /* shares the storage */
  ASSERT_OK(em_tensor_bernoulli_(tt, 0.5, g));
  ASSERT_TRUE(em_tensor_version(t) > v2);

  /* sizes: empty draws consume nothing, 0-dim draws one counter */
  uint64_t s, o0, o1;
  em_generator_get_state(g, &s, &o0);
  em_tensor *e = em_tensor_rand(EM_DIMS(0, 3), EM_FLOAT32, g);
  ASSERT_SHAPE(e, 0, 3);
  ASSERT_OK(em_tensor_uniform_(e, 0, 1, g));
  em_generator_get_state(g, &s, &o1);
  ASSERT_EQ(o1, o0);
  em_tensor *z = em_tensor_randn(0, NULL, EM_FLOAT64, g);
  ASSERT_EQ(z->ndim, 0);
  ASSERT_TRUE(isfinite(em_tensor_item_double(z)));
  em_generator_get_state(g, &s, &o1);
  ASSERT_EQ(o1, o0 + 1);

  /* *_like: shape and dtype from t unless given; the default float */
  em_tensor *h = em_tensor_zeros(EM_DIMS(3, 5), EM_FLOAT16);
  em_tensor *l1 = em_tensor_rand_like(h, EM_DTYPE_UNDEFINED, g);
  ASSERT_SHAPE(l1, 3, 5);
  ASSERT_EQ(l1->dtype, EM_FLOAT16);
  em_tensor *l2 = em_tensor_randn_like(h, EM_FLOAT64, g);
  ASSERT_EQ(l2->dtype, EM_FLOAT64);
  ASSERT_SHAPE(l2, 3, 5);
  em_tensor *i = em_tensor_zeros(EM_DIMS(2), EM_INT64);
  em_tensor *l3 = em_tensor_rand_like(i, EM_FLOAT32, g);
  ASSERT_EQ(l3->dtype, EM_FLOAT32);
  em_tensor *d = em_tensor_rand(EM_DIMS(2), EM_DTYPE_UNDEFINED, g);
  ASSERT_EQ(d->dtype, EM_FLOAT32);
  ASSERT_OK(em_set_default_dtype(EM_FLOAT64));
  em_tensor *d64 = em_tensor_randn(EM_DIMS(2), EM_DTYPE_UNDEFINED, g);
  ASSERT_OK(em_set_default_dtype(EM_FLOAT32));
  ASSERT_EQ(d64->dtype, EM_FLOAT64);
  em_tensor_release(t), em_tensor_release(tt), em_tensor_release(e), em_tensor_release(z);
  em_tensor_release(h), em_tensor_release(l1), em_tensor_release(l2), em_tensor_release(i);
  em_tensor_release(l3), em_tensor_release(d), em_tensor_release(d64);
  em_generator_destroy(g);
}

/* ---- errors ----------------------------------------------------------------------------------------- */

EM_TEST(random_errors) {
  em_generator *g = em_generator_create(18);
  ASSERT_NULL_ERR(em_tensor_rand(EM_DIMS(3), EM_INT64, g), EM_ERR_DTYPE,
                  "rand: not implemented for int64");
  ASSERT_NULL_ERR(em_tensor_randn(EM_DIMS(3), EM_BOOL, g), EM_ERR_DTYPE,
                  "randn: not implemented for bool");
  ASSERT_NULL_ERR(em_tensor_rand(EM_DIMS(2, -1), EM_FLOAT32, g), EM_ERR_INVALID,
                  "rand: negative dimension -1 in shape [2, -1]");
  ASSERT_NULL_ERR(em_tensor_rand(EM_DIMS(3), (em_dtype)55, g), EM_ERR_DTYPE,
                  "rand: invalid dtype 55");
  em_tensor *it = em_tensor_zeros(EM_DIMS(2), EM_INT32);
  ASSERT_NULL_ERR(em_tensor_rand_like(it, EM_DTYPE_UNDEFINED, g), EM_ERR_DTYPE,
                  "rand_like: not implemented for int32");
  ASSERT_NULL_ERR(em_tensor_randn_like(it, EM_UINT8, g), EM_ERR_DTYPE,
                  "randn_like: not implemented for uint8");
  ASSERT_NULL_ERR(em_tensor_rand_like(NULL, EM_FLOAT32, g), EM_ERR_INVALID,
                  "rand_like: NULL tensor");

  ASSERT_NULL_ERR(em_tensor_randint(5, 5, EM_DIMS(3), EM_DTYPE_UNDEFINED, g), EM_ERR_INVALID,
                  "randint: random_ expects 'from' to be less than 'to', but got from=5 >= to=5");
  ASSERT_NULL_ERR(em_tensor_randint(5, 3, EM_DIMS(3), EM_DTYPE_UNDEFINED, g), EM_ERR_INVALID,
                  "from=5 >= to=3");
  ASSERT_NULL_ERR(em_tensor_randint(0, 300, EM_DIMS(3), EM_INT8, g), EM_ERR_INVALID,
                  "randint: to - 1 = 299 is out of bounds for int8");
  ASSERT_NULL_ERR(em_tensor_randint(-1, 2, EM_DIMS(3), EM_UINT8, g), EM_ERR_INVALID,
                  "randint: from=-1 is out of bounds for uint8");
  ASSERT_NULL_ERR(em_tensor_randint(0, 3, EM_DIMS(3), EM_BOOL, g), EM_ERR_INVALID,
                  "to - 1 = 2 is out of bounds for bool");
  ASSERT_NULL_ERR(em_tensor_randint(0, 3, EM_DIMS(-3), EM_INT64, g), EM_ERR_INVALID,
                  "randint: negative dimension -3");
  ASSERT_NULL_ERR(em_tensor_randint(0, 3, EM_DIMS(3), (em_dtype)-2, g), EM_ERR_DTYPE,
                  "randint: invalid dtype -2");

  ASSERT_NULL_ERR(em_tensor_randperm(-1, EM_DTYPE_UNDEFINED, g), EM_ERR_INVALID,
                  "randperm: n must be non-negative, got -1");
  ASSERT_NULL_ERR(em_tensor_randperm(3, EM_BOOL, g), EM_ERR_DTYPE,
                  "randperm: not implemented for bool");
  ASSERT_NULL_ERR(em_tensor_randperm(300, EM_INT8, g), EM_ERR_INVALID,
                  "randperm: n cannot be greater than 128 for int8, got 300");
  ASSERT_NULL_ERR(em_tensor_randperm(3000, EM_FLOAT16, g), EM_ERR_INVALID,
                  "n cannot be greater than 2049 for float16");
  ASSERT_NULL_ERR(em_tensor_randperm(3, (em_dtype)40, g), EM_ERR_DTYPE, "randperm: invalid dtype");

  em_tensor *f = em_tensor_zeros(EM_DIMS(3), EM_FLOAT32);
  em_tensor *h = em_tensor_zeros(EM_DIMS(3), EM_FLOAT16);
  em_tensor *d = em_tensor_zeros(EM_DIMS(3), EM_FLOAT64);
  ASSERT_ERR(em_tensor_uniform_(f, 2, 1, g), EM_ERR_INVALID,
             "uniform_: expects to return a [from, to) range, but found from=2 > to=1");
  ASSERT_ERR(em_tensor_uniform_(f, NAN, 1, g), EM_ERR_INVALID, "from=nan > to=1");
  ASSERT_ERR(em_tensor_uniform_(h, 0, 1e6, g), EM_ERR_INVALID,
             "uniform_: to=1e+06 is out of bounds for float16");
  em_tensor *b16 = em_tensor_zeros(EM_DIMS(3), EM_BFLOAT16);
  ASSERT_ERR(em_tensor_uniform_(b16, -1e39, 0, g), EM_ERR_INVALID,
             "uniform_: from=-1e+39 is out of bounds for bfloat16");
  em_tensor_release(b16);
  ASSERT_ERR(em_tensor_uniform_(f, -INFINITY, 0, g), EM_ERR_INVALID,
             "uniform_: from=-inf is out of bounds for float32");
  ASSERT_ERR(em_tensor_uniform_(d, -1e308, 1e308, g), EM_ERR_INVALID,
             "uniform_: expects to - from to be finite");
  ASSERT_ERR(em_tensor_uniform_(it, 0, 1, g), EM_ERR_DTYPE, "uniform_: not implemented for int32");
  ASSERT_ERR(em_tensor_uniform_(NULL, 0, 1, g), EM_ERR_INVALID, "uniform_: NULL tensor");
  ASSERT_ERR(em_tensor_normal_(f, 0, -1, g), EM_ERR_INVALID,
             "normal_: expects std >= 0.0, but found std -1");
  ASSERT_ERR(em_tensor_normal_(f, 0, NAN, g), EM_ERR_INVALID, "found std nan");
  ASSERT_ERR(em_tensor_normal_(f, INFINITY, 1, g), EM_ERR_INVALID,
             "normal_: expects a finite mean, but found mean inf");
  ASSERT_ERR(em_tensor_normal_(it, 0, 1, g), EM_ERR_DTYPE, "normal_: not implemented for int32");
  ASSERT_ERR(em_tensor_bernoulli_(f, 1.5, g), EM_ERR_INVALID,
             "bernoulli_: expects p to be in [0, 1], but got p=1.5");
  ASSERT_ERR(em_tensor_bernoulli_(f, -0.1, g), EM_ERR_INVALID, "but got p=-0.1");
  ASSERT_ERR(em_tensor_bernoulli_(f, NAN, g), EM_ERR_INVALID, "but got p=nan");
  ASSERT_ERR(em_tensor_bernoulli_(NULL, 0.5, g), EM_ERR_INVALID, "bernoulli_: NULL tensor");

  ASSERT_NULL_ERR(em_tensor_bernoulli(it, g), EM_ERR_DTYPE, "bernoulli: not implemented for int32");
  em_tensor *bad = em_tensor_from_data((const double[]){0.5, 1.5}, EM_DIMS(2), EM_FLOAT64);
  ASSERT_NULL_ERR(em_tensor_bernoulli(bad, g), EM_ERR_INVALID,
                  "but got 1.5 at flat index 1");
  em_tensor *bad2 = em_tensor_from_data((const float[]){NAN}, EM_DIMS(1), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_bernoulli(bad2, g), EM_ERR_INVALID, "0 <= p_in <= 1");
  ASSERT_NULL_ERR(em_tensor_bernoulli(NULL, g), EM_ERR_INVALID, "bernoulli: NULL tensor");

  /* expanded targets: refused before any counter is taken */
  em_tensor *one = em_tensor_zeros(EM_DIMS(1), EM_FLOAT32);
  em_tensor *ex = em_tensor_expand(one, EM_DIMS(4));
  uint64_t s, o0, o1;
  em_generator_get_state(g, &s, &o0);
  ASSERT_ERR(em_tensor_uniform_(ex, 0, 1, g), EM_ERR_INVALID,
             "uniform_: unsupported operation: more than one element of the written-to tensor "
             "refers to a single memory location");
  ASSERT_ERR(em_tensor_bernoulli_(ex, 0.5, g), EM_ERR_INVALID, "bernoulli_: unsupported operation");
  em_generator_get_state(g, &s, &o1);
  ASSERT_EQ(o1, o0);
  ASSERT_CLOSE(em_test_get(one, 0), 0.0, 0, 0);

  em_tensor_release(it), em_tensor_release(f), em_tensor_release(h), em_tensor_release(d);
  em_tensor_release(bad), em_tensor_release(bad2), em_tensor_release(one), em_tensor_release(ex);
  em_generator_destroy(g);
}

/* ---- in-place random ops under autograd ---------------------------------------------------------------
 * A stand-in autograd table: a tensor whose user slot is LEAF is a leaf. */

static char LEAF;
static em_op recorded[8];
static int nrecorded, nrebased;

static em_status fake_record(em_op op, int nin, em_tensor *const *in, int nout,
                             em_tensor *const *out, const em_op_attrs *a) {
  if (nrecorded < 8) recorded[nrecorded++] = op;
  for (int i = 0; i < nout; i++) out[i]->requires_grad = true; /* as autograd does */
  return EM_OK;
}
static em_status fake_rebase(em_tensor *self, em_tensor *result) {
  nrebased++;
  return EM_OK;
}
static em_status fake_check_inplace(const char *op, em_tensor *self) {
  if (self->user == &LEAF)
    return em_set_error(EM_ERR_STATE,
                        "%s: a leaf Variable that requires grad is being used in an in-place "
                        "operation.",
                        op);
  return EM_OK;
}
static void fake_free_meta(struct em_ag_meta *m) {}
static const em__ag_vtable fake_ag = {fake_record, fake_rebase, fake_check_inplace,
                                      fake_free_meta};

EM_TEST(inplace_random_under_autograd) {
  em_generator *g = em_generator_create(19);
  em_tensor *leaf = em_tensor_zeros(EM_DIMS(6), EM_FLOAT32);
  em_tensor *mid = em_tensor_zeros(EM_DIMS(6), EM_FLOAT32);
  leaf->requires_grad = true;
  leaf->user = &LEAF;
  mid->requires_grad = true;
  const em__ag_vtable *saved = atomic_load(&em__ag);
  atomic_store(&em__ag, &fake_ag);
  nrecorded = nrebased = 0;

  /* a leaf is refused, unchanged, and no counter is consumed */
  uint64_t s, o0, o1;
  em_generator_get_state(g, &s, &o0);
  em_status st1 = em_tensor_uniform_(leaf, 0, 1, g);
  em_status st2 = em_tensor_normal_(leaf, 0, 1, g);
  em_generator_get_state(g, &s, &o1);
  /* a non-leaf gets the values the plain path would give, a FILL node and
   * a rebase */
  uint64_t v0 = em_tensor_version(mid);
  em_status st3 = em_tensor_uniform_(mid, 5, 6, g);
  uint64_t v1 = em_tensor_version(mid);
  int rec_after_mid = nrecorded, rebased_after_mid = nrebased;
  bool has_fill = false;
  for (int i = 0; i < nrecorded; i++) has_fill |= recorded[i] == EM_OP_FILL;
  /* grad mode off: the plain path, nothing recorded */
  bool prev = em_set_grad_enabled(false);
  em_status st4 = em_tensor_bernoulli_(leaf, 1.0, g);
  em_set_grad_enabled(prev);
  int rec_after_nograd = nrecorded;

  atomic_store(&em__ag, saved);
  leaf->requires_grad = mid->requires_grad = false;
  leaf->user = NULL;

  ASSERT_EQ(st1, EM_ERR_STATE);
  ASSERT_EQ(st2, EM_ERR_STATE);
  ASSERT_EQ(o1, o0);
  ASSERT_OK(st3);
  ASSERT_TRUE(v1 > v0);
  ASSERT_TRUE(has_fill);
  ASSERT_EQ(rebased_after_mid, 1);
  ASSERT_EQ(rec_after_nograd, rec_after_mid);
  ASSERT_OK(st4);
  for (int i = 0; i < 6; i++) ASSERT_CLOSE(em_test_get(leaf, i), 1.0, 0, 0);
  em_tensor *ref = em_tensor_empty(EM_DIMS(6), EM_FLOAT32);
  em_generator_set_state(g, 19, o0);
  ASSERT_OK(em_tensor_uniform_(ref, 5, 6, g));
  for (int i = 0; i < 6; i++) ASSERT_TRUE(em_test_get(mid, i) == em_test_get(ref, i));
  em_tensor_release(leaf), em_tensor_release(mid), em_tensor_release(ref);
  em_generator_destroy(g);
}

EM_TEST_MAIN()
