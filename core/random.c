/* Random numbers: the counter-based generator and the random tensor ops.
 *
 * The generator is Philox4x32-10 (Salmon et al., SC'11) used as a keyed
 * bijection on counters. Its whole state is (seed, offset): the key is the
 * 64-bit seed, and a call that fills n elements reserves the counters
 * [offset, offset + n) with one atomic add (em_generator_advance). Element
 * i of that call is computed from the block philox(counter = offset + i,
 * key = seed) alone, so the result depends only on (seed, offset) and the
 * op, never on how many threads share the work or how the work is split;
 * and two threads drawing from one generator at once get disjoint counters.
 *
 * The default generator starts from seed 67280421310721 (the value PyTorch
 * gives its default CPU generator), offset 0. em_manual_seed and
 * em_generator_set_seed set the seed and reset the offset to 0.
 *
 * Forked workers (dataloader): a fork copies the parent's generators, so
 * every child would replay the parent's next numbers. A worker derives an
 * independent stream by reseeding right after the fork, the way PyTorch
 * seeds its workers: the parent draws one base_seed per epoch (e.g. from
 * randint on its own generator) and worker w calls
 *     em_manual_seed(base_seed + w);
 * (or em_generator_create(base_seed + w) for a private generator). Philox
 * under different keys gives unrelated streams, so adjacent seeds are as
 * good as random ones. The generator holds no lock (only atomics), so a
 * fork while another thread draws cannot leave it locked in the child.
 *
 * How the 4 words of a block become a value is written in core/cpu/random.c
 * (uniform: the dtype's significand bits, so rand never returns 1;
 * normal: Box-Muller; integers: 64 bits modulo the range). The numbers are
 * ember's own: the same seed does not give PyTorch's numbers.
 *
 * In-place random ops (uniform_, normal_, bernoulli_) bump the version
 * counter. On a tensor that requires grad under grad mode they go through
 * em__inplace_recorded like fill_: a leaf is refused with autograd's
 * in-place error; a non-leaf gets the random values and a FILL node, i.e.
 * a zero gradient to its history, as PyTorch's uniform_/normal_ give.
 * bernoulli(p) records EM_OP_BERNOULLI_P with input p and no attrs; its
 * backward is zero (as PyTorch's derivatives.yaml has it).
 */
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"

/* The kernel signature of the random and counting ops (core/cpu/random.c):
 * fills contiguous out[begin, end). */
typedef void (*em__range_kernel)(char *out, const char *in, int64_t begin, int64_t end,
                                 const em_op_attrs *a);

em_status em__copy_into(em_tensor *dst, em_tensor *src);
void em__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* ---- the generator ---------------------------------------------------------------- */

#define EM_DEFAULT_SEED 67280421310721ULL

struct em_generator {
  _Atomic uint64_t seed;
  _Atomic uint64_t offset;
};

static em_generator default_gen = {EM_DEFAULT_SEED, 0};

static inline em_generator *gen_or_default(em_generator *g) { return g ? g : &default_gen; }

em_generator *em_default_generator(void) { return &default_gen; }

em_generator *em_generator_create(uint64_t seed) {
  em_generator *g = malloc(sizeof *g);
  if (!g) return EM_FAIL(EM_ERR_NOMEM, "generator_create: out of memory");
  atomic_init(&g->seed, seed);
  atomic_init(&g->offset, 0);
  return g;
}

/* The default generator is never freed. */
void em_generator_destroy(em_generator *g) {
  if (g && g != &default_gen) free(g);
}

void em_generator_set_seed(em_generator *g, uint64_t seed) {
  g = gen_or_default(g);
  atomic_store(&g->seed, seed);
  atomic_store(&g->offset, 0);
}

uint64_t em_generator_seed(em_generator *g) { return atomic_load(&gen_or_default(g)->seed); }

void em_generator_get_state(em_generator *g, uint64_t *seed, uint64_t *offset) {
  g = gen_or_default(g);
  if (seed) *seed = atomic_load(&g->seed);
  if (offset) *offset = atomic_load(&g->offset);
}

void em_generator_set_state(em_generator *g, uint64_t seed, uint64_t offset) {
  g = gen_or_default(g);
  atomic_store(&g->seed, seed);
  atomic_store(&g->offset, offset);
}

uint64_t em_generator_advance(em_generator *g, uint64_t n) {
  return atomic_fetch_add(&gen_or_default(g)->offset, n);
}

void em_manual_seed(uint64_t seed) { em_generator_set_seed(&default_gen, seed); }

/* ---- running range kernels ---------------------------------------------------------- */

typedef struct range_ctx {
  em__range_kernel fn;
  char *out;
  const char *in;
  const em_op_attrs *a;
} range_ctx;

static void range_part(void *ctx, int64_t b, int64_t e) {
  range_ctx *r = ctx;
  r->fn(r->out, r->in, b, e, r->a);
}

/* Fills the contiguous tensor out (numel > 0) with kernel op over [0,
 * numel), split across threads in chunks of at least grain. */
static em_status range_run(em_op op, em_tensor *out, const char *in, const em_op_attrs *a,
                           int64_t grain) {
  em__range_kernel fn =
      (em__range_kernel)em__kernel(op, (em_device_type)out->device.type, (em_dtype)out->dtype);
  if (!fn) return em_last_status();
  range_ctx r = {fn, em__data_ptr(out), in, a};
  em__parallel_for(out->numel, grain, range_part, &r);
  return EM_OK;
}

/* t <- kernel op in logical (row-major) element order, for any layout:
 * non-contiguous targets are filled through a contiguous temporary. Bumps
 * t's version. Shared with core/ops_create.c. */
em_status em__range_fill(em_op op, em_tensor *t, const char *in, const em_op_attrs *a,
                         int64_t grain) {
  if (t->numel == 0) return EM_OK;
  if (em_tensor_is_contiguous(t)) {
    EM_CHECK(range_run(op, t, in, a, grain));
    em__bump_version(t);
    return EM_OK;
  }
  em_tensor *tmp = em_tensor_empty_on(t->ndim, t->shape, (em_dtype)t->dtype, t->device);
  if (!tmp) return em_last_status();
  em_status st = range_run(op, tmp, in, a, grain);
  if (!st) st = em__copy_into(t, tmp); /* bumps the version */
  em_tensor_release(tmp);
  return st;
}

/* Reserves t's counters from g and runs the random kernel op into t. */
static em_status random_fill(em_op op, em_tensor *t, em_op_attrs *a, em_generator *g,
                             const char *in) {
  g = gen_or_default(g);
  uint64_t seed = atomic_load(&g->seed);
  uint64_t offset = em_generator_advance(g, (uint64_t)t->numel);
  a->i[0] = (int64_t)seed;
  a->i[1] = (int64_t)offset;
  return em__range_fill(op, t, in, a, EM_GRAIN_COSTLY);
}

/* ---- validation helpers ---------------------------------------------------------------- */

static em_status check_tensor(const char *op, em_tensor *t) {
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: NULL tensor", op);
  return EM_OK;
}

static em_status check_float_dtype(const char *op, em_dtype dt) {
  if (!em_dtype_is_valid(dt)) return em__set_error(EM_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dt);
  if (!em_dtype_is_float(dt))
    return em__set_error(EM_ERR_DTYPE,
                         "%s: not implemented for %s (a floating point dtype is required)", op,
                         em_dtype_name(dt));
  return EM_OK;
}

/* In-place writes need each element at its own address (PyTorch's
 * internal-overlap check). */
static em_status check_no_internal_overlap(const char *op, em_tensor *t) {
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] > 1 && t->strides[i] == 0)
      return em__set_error(EM_ERR_INVALID,
                           "%s: unsupported operation: more than one element of the written-to "
                           "tensor refers to a single memory location; clone() it first",
                           op);
  return EM_OK;
}

/* Largest finite value of a float dtype. */
static double float_max(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT16: return 65504.0;
    case EM_BFLOAT16: return 3.3895313892515355e38;
    case EM_FLOAT32: return 3.4028234663852886e38;
    default: return 1.7976931348623157e308;
  }
}

/* ---- random tensors ---------------------------------------------------------------------- */

static em_tensor *random_new(const char *op, em_op kop, int ndim, const int64_t *shape,
                             em_dtype dt, em_device dev, double f0, double f1, em_generator *g) {
  int64_t numel;
  if (em__check_shape(op, ndim, shape, &numel)) return NULL;
  if (dt == EM_DTYPE_UNDEFINED) dt = em_get_default_dtype();
  if (check_float_dtype(op, dt)) return NULL;
  em_tensor *t = em_tensor_empty_on(ndim, shape, dt, dev);
  if (!t) return NULL;
  em_op_attrs a = {0};
  a.f[0] = f0;
  a.f[1] = f1;
  if (random_fill(kop, t, &a, g, NULL)) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

em_tensor *em_tensor_rand(int ndim, const int64_t *shape, em_dtype dt, em_generator *g) {
  return random_new("rand", EM_OP_UNIFORM, ndim, shape, dt, EM_DEVICE_CPU, 0.0, 1.0, g);
}

em_tensor *em_tensor_randn(int ndim, const int64_t *shape, em_dtype dt, em_generator *g) {
  return random_new("randn", EM_OP_NORMAL, ndim, shape, dt, EM_DEVICE_CPU, 0.0, 1.0, g);
}

em_tensor *em_tensor_rand_like(em_tensor *t, em_dtype dt, em_generator *g) {
  if (check_tensor("rand_like", t)) return NULL;
  if (dt == EM_DTYPE_UNDEFINED) dt = (em_dtype)t->dtype;
  return random_new("rand_like", EM_OP_UNIFORM, t->ndim, t->shape, dt, t->device, 0.0, 1.0, g);
}

em_tensor *em_tensor_randn_like(em_tensor *t, em_dtype dt, em_generator *g) {
  if (check_tensor("randn_like", t)) return NULL;
  if (dt == EM_DTYPE_UNDEFINED) dt = (em_dtype)t->dtype;
  return random_new("randn_like", EM_OP_NORMAL, t->ndim, t->shape, dt, t->device, 0.0, 1.0, g);
}

/* Inclusive bounds of an integer (or bool) dtype. */
static void int_bounds(em_dtype dt, int64_t *lo, int64_t *hi) {
  switch (dt) {
    case EM_INT8: *lo = INT8_MIN, *hi = INT8_MAX; break;
    case EM_INT16: *lo = INT16_MIN, *hi = INT16_MAX; break;
    case EM_INT32: *lo = INT32_MIN, *hi = INT32_MAX; break;
    case EM_UINT8: *lo = 0, *hi = UINT8_MAX; break;
    case EM_BOOL: *lo = 0, *hi = 1; break;
    default: *lo = INT64_MIN, *hi = INT64_MAX; break;
  }
}

em_tensor *em_tensor_randint(int64_t low, int64_t high, int ndim, const int64_t *shape,
                             em_dtype dt, em_generator *g) {
  int64_t numel;
  if (em__check_shape("randint", ndim, shape, &numel)) return NULL;
  if (dt == EM_DTYPE_UNDEFINED) dt = EM_INT64;
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "randint: invalid dtype %d", (int)dt);
  if (low >= high)
    return EM_FAIL(EM_ERR_INVALID,
                   "randint: random_ expects 'from' to be less than 'to', but got from=%lld >= "
                   "to=%lld",
                   (long long)low, (long long)high);
  if (!em_dtype_is_float(dt)) {
    int64_t lo, hi;
    int_bounds(dt, &lo, &hi);
    if (low < lo || low > hi)
      return EM_FAIL(EM_ERR_INVALID, "randint: from=%lld is out of bounds for %s [%lld, %lld]",
                     (long long)low, em_dtype_name(dt), (long long)lo, (long long)hi);
    if (high - 1 > hi)
      return EM_FAIL(EM_ERR_INVALID,
                     "randint: to - 1 = %lld is out of bounds for %s [%lld, %lld]",
                     (long long)(high - 1), em_dtype_name(dt), (long long)lo, (long long)hi);
  }
  em_tensor *t = em_tensor_empty(ndim, shape, dt);
  if (!t) return NULL;
  em_op_attrs a = {0};
  a.i[2] = low;
  a.i[3] = (int64_t)((uint64_t)high - (uint64_t)low);
  if (random_fill(EM_OP_RANDINT, t, &a, g, NULL)) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

/* The largest n whose permutation dt holds exactly (0..n-1). */
static int64_t randperm_max(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT16: return 2049;
    case EM_BFLOAT16: return 257;
    case EM_FLOAT32: return (1LL << 24) + 1;
    case EM_FLOAT64: return (1LL << 53) + 1;
    case EM_INT8: return 128;
    case EM_UINT8: return 256;
    case EM_INT16: return 32768;
    case EM_INT32: return 1LL << 31;
    default: return INT64_MAX;
  }
}

/* Fisher-Yates from the top: step i (n-1 down to 1) swaps element i with
 * element j = (64 bits of block offset + i) mod (i + 1). Sequential by
 * nature; the counters make it a function of (seed, offset) only. */
em_tensor *em_tensor_randperm(int64_t n, em_dtype dt, em_generator *g) {
  if (dt == EM_DTYPE_UNDEFINED) dt = EM_INT64;
  if (!em_dtype_is_valid(dt)) return EM_FAIL(EM_ERR_DTYPE, "randperm: invalid dtype %d", (int)dt);
  if (dt == EM_BOOL) return EM_FAIL(EM_ERR_DTYPE, "randperm: not implemented for bool");
  if (n < 0) return EM_FAIL(EM_ERR_INVALID, "randperm: n must be non-negative, got %lld", (long long)n);
  if (n > randperm_max(dt))
    return EM_FAIL(EM_ERR_INVALID, "randperm: n cannot be greater than %lld for %s, got %lld",
                   (long long)randperm_max(dt), em_dtype_name(dt), (long long)n);
  em_tensor *p = em_tensor_empty(EM_DIMS(n), EM_INT64);
  if (!p) return NULL;
  g = gen_or_default(g);
  uint64_t seed = atomic_load(&g->seed);
  uint64_t base = em_generator_advance(g, (uint64_t)n);
  int64_t *v = (int64_t *)(n ? em__data_ptr(p) : NULL);
  for (int64_t i = 0; i < n; i++) v[i] = i;
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (int64_t i = n - 1; i > 0; i--) {
    uint64_t c = base + (uint64_t)i;
    const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0, 0};
    uint32_t w[4];
    em__philox4x32_10(ctr, key, w);
    int64_t j = (int64_t)(((uint64_t)w[0] << 32 | w[1]) % (uint64_t)(i + 1));
    int64_t tmp = v[i];
    v[i] = v[j];
    v[j] = tmp;
  }
  if (dt == EM_INT64) return p;
  em_tensor *out = em__convert(p, dt);
  em_tensor_release(p);
  return out;
}

/* ---- in-place random ops ---------------------------------------------------------------------- */

typedef struct inplace_ctx {
  em_op op;
  double f0, f1;
  em_generator *g;
} inplace_ctx;

/* Out-of-place body for em__inplace_recorded: fresh random values shaped
 * like self, recorded as a FILL of self (zero gradient to self's history). */
static em_tensor *random_outplace(em_tensor *self_copy, void *ctx) {
  inplace_ctx *c = ctx;
  em_tensor *r = em_tensor_empty_like(self_copy, EM_DTYPE_UNDEFINED);
  if (!r) return NULL;
  em_op_attrs a = {0};
  a.f[0] = c->f0;
  a.f[1] = c->f1;
  if (random_fill(c->op, r, &a, c->g, NULL)) {
    em_tensor_release(r);
    return NULL;
  }
  em_op_attrs fa = {0};
  fa.s = em_scalar_int(0);
  return em__record1(EM_OP_FILL, 1, &self_copy, r, &fa);
}

static em_status random_inplace(const char *op, em_op kop, em_tensor *t, double f0, double f1,
                                em_generator *g) {
  EM_CHECK(check_no_internal_overlap(op, t));
  if (em__should_record(1, &t)) {
    inplace_ctx c = {kop, f0, f1, g};
    return em__inplace_recorded(op, t, random_outplace, &c);
  }
  em_op_attrs a = {0};
  a.f[0] = f0;
  a.f[1] = f1;
  return random_fill(kop, t, &a, g, NULL);
}

em_status em_tensor_uniform_(em_tensor *t, double from, double to, em_generator *g) {
  EM_CHECK(check_tensor("uniform_", t));
  em_dtype dt = (em_dtype)t->dtype;
  EM_CHECK(check_float_dtype("uniform_", dt));
  if (!(from <= to))
    return em__set_error(EM_ERR_INVALID,
                         "uniform_: expects to return a [from, to) range, but found from=%g > "
                         "to=%g",
                         from, to);
  double m = float_max(dt);
  if (!(from >= -m && from <= m))
    return em__set_error(EM_ERR_INVALID, "uniform_: from=%g is out of bounds for %s", from,
                         em_dtype_name(dt));
  if (!(to >= -m && to <= m))
    return em__set_error(EM_ERR_INVALID, "uniform_: to=%g is out of bounds for %s", to,
                         em_dtype_name(dt));
  if (!isfinite(to - from))
    return em__set_error(EM_ERR_INVALID,
                         "uniform_: expects to - from to be finite, but found to=%g and from=%g",
                         to, from);
  return random_inplace("uniform_", EM_OP_UNIFORM, t, from, to, g);
}

em_status em_tensor_normal_(em_tensor *t, double mean, double std, em_generator *g) {
  EM_CHECK(check_tensor("normal_", t));
  EM_CHECK(check_float_dtype("normal_", (em_dtype)t->dtype));
  if (!(std >= 0.0))
    return em__set_error(EM_ERR_INVALID, "normal_: expects std >= 0.0, but found std %g", std);
  if (!isfinite(mean))
    return em__set_error(EM_ERR_INVALID, "normal_: expects a finite mean, but found mean %g",
                         mean);
  return random_inplace("normal_", EM_OP_NORMAL, t, mean, std, g);
}

em_status em_tensor_bernoulli_(em_tensor *t, double p, em_generator *g) {
  EM_CHECK(check_tensor("bernoulli_", t));
  if (!(p >= 0.0 && p <= 1.0))
    return em__set_error(EM_ERR_INVALID, "bernoulli_: expects p to be in [0, 1], but got p=%g",
                         p);
  return random_inplace("bernoulli_", EM_OP_BERNOULLI, t, p, 0.0, g);
}

em_tensor *em_tensor_bernoulli(em_tensor *p, em_generator *g) {
  if (check_tensor("bernoulli", p)) return NULL;
  em_dtype dt = (em_dtype)p->dtype;
  if (!em_dtype_is_float(dt))
    return EM_FAIL(EM_ERR_DTYPE,
                   "bernoulli: not implemented for %s (probabilities must be floating point)",
                   em_dtype_name(dt));
  em_tensor *p64 = NULL, *out = NULL;
  em_status st = EM_OK;
  if (p->numel && dt == EM_FLOAT64 && em_tensor_is_contiguous(p) && p->device.type == EM_CPU) {
    p64 = em_tensor_retain(p);
  } else {
    p64 = em__convert(p, EM_FLOAT64);
    EM_CHECK_PTR_GOTO(p64, st, fail);
  }
  const double *pv = p->numel ? (const double *)em__data_ptr(p64) : NULL;
  if (p64->device.type == EM_CPU) {
    for (int64_t k = 0; k < p->numel; k++) {
      if (!(pv[k] >= 0.0 && pv[k] <= 1.0)) {
        em__set_error(EM_ERR_INVALID,
                      "bernoulli: expected every probability p_in to satisfy 0 <= p_in <= 1, "
                      "but got %g at flat index %lld",
                      pv[k], (long long)k);
        goto fail;
      }
    }
  }
  out = em_tensor_empty_on(p->ndim, p->shape, dt, p->device);
  EM_CHECK_PTR_GOTO(out, st, fail);
  em_op_attrs a = {0};
  EM_CHECK_GOTO(random_fill(EM_OP_BERNOULLI_P, out, &a, g, (const char *)pv), st, fail);
  em_tensor_release(p64);
  return em__record1(EM_OP_BERNOULLI_P, 1, &p, out, NULL);
fail:
  (void)st;
  em_tensor_release(p64);
  em_tensor_release(out);
  return NULL;
}
