/* The loader with 0, 1 and 2 workers: identical batches for one seed,
 * in-order delivery, zero-copy slots, slot recycling and one-off segments,
 * persistent workers, per-worker seeding, iterable datasets, options, and a
 * samples/s measurement (printed, not asserted). */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cuda/ember_cuda.h"
#include "core/ops.h"
#include "dataloader/dataloader.h"
#include "dataloader/dataloader_impl.h"
#include "tests/dataloader/dl_util.h"

#define PIX 784
#define TRY(call)                 \
  do {                            \
    em_status st_ = (call);       \
    if (st_) return st_;          \
  } while (0)

/* Image i is pixel p = (i * 7 + p) % 251; label i. */
static uint8_t pix(int64_t i, int p) { return (uint8_t)((i * 7 + p) % 251); }

static em_dl_dataset *make_images(int64_t n) {
  uint8_t *x = malloc((size_t)(n * PIX + 1));
  int64_t *y = malloc((size_t)(n + 1) * sizeof *y);
  for (int64_t i = 0; i < n; i++) {
    for (int p = 0; p < PIX; p++) x[i * PIX + p] = pix(i, p);
    y[i] = i;
  }
  em_tensor *xt = em_tensor_from_data(x, EM_DIMS(n, 1, 28, 28), EM_UINT8);
  em_tensor *yt = em_tensor_from_data(y, EM_DIMS(n), EM_INT64);
  free(x);
  free(y);
  em_tensor *ts[2] = {xt, yt};
  em_dl_dataset *d = em_dl_tensor_dataset_create(2, ts);
  em_tensor_release(xt);
  em_tensor_release(yt);
  return d;
}

/* Checks a batch of make_images against its labels; appends the labels to
 * out. Returns the batch size or -1. */
static int64_t check_batch(em_dl_batch *b, int64_t *out) {
  if (b->n != 2) return -1;
  em_tensor *x = b->t[0], *y = b->t[1];
  int64_t n = em_tensor_size(y, 0);
  if (x->ndim != 4 || x->shape[0] != n || x->shape[1] != 1 || x->shape[2] != 28) return -1;
  if (!em_tensor_is_contiguous(x)) return -1;
  const uint8_t *xp = em_tensor_data(x);
  for (int64_t r = 0; r < n; r++) {
    int64_t l = (int64_t)em_test_get(y, r);
    for (int p = 0; p < PIX; p++)
      if (xp[r * PIX + p] != pix(l, p)) return -1;
    out[r] = l;
  }
  return n;
}

/* One pass: all labels in delivery order. */
static int64_t run_pass(em_dl_loader *l, int64_t *labels, int64_t *nbatches) {
  em_dl_iter *it = em_dl_loader_iter(l);
  if (!it) return -1;
  int64_t k = 0, nb = 0;
  for (;;) {
    em_dl_batch b;
    bool done;
    if (em_dl_iter_next(it, &b, &done) != EM_OK) {
      fprintf(stderr, "  next failed: %s\n", em_last_error());
      k = -1;
      break;
    }
    if (done) break;
    if (b.index != nb) k = -1;
    int64_t n = k < 0 ? -1 : check_batch(&b, labels + k);
    em_dl_batch_release(&b);
    if (n < 0) {
      k = -1;
      break;
    }
    k += n;
    nb++;
  }
  em_dl_iter_destroy(it);
  if (nbatches) *nbatches = nb;
  return k;
}

static em_dl_loader *make_loader(em_dl_dataset *d, int workers, int64_t bs, bool shuffle,
                                 bool drop_last, em_generator *g) {
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = bs;
  o.shuffle = shuffle;
  o.drop_last = drop_last;
  o.num_workers = workers;
  o.generator = g;
  return em_dl_loader_create(d, &o);
}

EM_TEST(same_batches_with_0_1_2_workers) {
  em_dl_dataset *d = make_images(1000);
  int64_t *ref = malloc(1000 * sizeof *ref), *got = malloc(1000 * sizeof *got);
  for (int drop = 0; drop < 2; drop++) {
    for (int w = 0; w <= 2; w++) {
      em_generator *g = em_generator_create(1234);
      em_dl_loader *l = make_loader(d, w, 64, true, drop, g);
      ASSERT_NOTNULL(l);
      ASSERT_EQ(em_dl_loader_len(l), drop ? 15 : 16);
      int64_t nb;
      int64_t n = run_pass(l, w ? got : ref, &nb);
      ASSERT_EQ(n, drop ? 960 : 1000);
      ASSERT_EQ(nb, drop ? 15 : 16);
      if (w) ASSERT_TRUE(memcmp(ref, got, (size_t)n * sizeof *ref) == 0);
      /* a second pass continues the generator: another order */
      n = run_pass(l, got, &nb);
      ASSERT_EQ(n, drop ? 960 : 1000);
      ASSERT_TRUE(memcmp(ref, got, (size_t)n * sizeof *ref) != 0);
      em_dl_loader_destroy(l);
      em_generator_destroy(g);
    }
    /* without drop_last the pass is a permutation of the dataset */
    if (!drop) {
      char seen[1000] = {0};
      for (int i = 0; i < 1000; i++) {
        ASSERT_TRUE(!seen[ref[i]]);
        seen[ref[i]] = 1;
      }
    }
  }
  free(ref);
  free(got);
  em_dl_dataset_release(d);
  ASSERT_EQ(dl_shm_count(getpid()), 0);
}

EM_TEST(sequential_order_and_worker_assignment) {
  em_dl_dataset *d = make_images(100);
  em_dl_loader *l = make_loader(d, 2, 10, false, false, NULL);
  em_dl_iter *it = em_dl_loader_iter(l);
  ASSERT_NOTNULL(it);
  pid_t pids[4];
  ASSERT_EQ(em_dl_iter_worker_pids(it, pids, 4), 2);
  for (int64_t b = 0;; b++) {
    em_dl_batch batch;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &batch, &done));
    if (done) {
      ASSERT_EQ(b, 10);
      break;
    }
    ASSERT_EQ(batch.index, b);
    ASSERT_EQ(batch.worker, b % 2); /* round robin, delivered in order */
    ASSERT_EQ(em_test_get(batch.t[1], 0), b * 10);
    em_dl_batch_release(&batch);
  }
  em_dl_iter_destroy(it);
  /* the pass ended: the workers are gone */
  ASSERT_TRUE(!dl_pid_running(pids[0]) && !dl_pid_running(pids[1]));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

/* Whether addr lies in a mapping of a (deleted) /dev/shm ember segment. */
static bool in_shm_mapping(const void *addr) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  bool found = false;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
    if ((unsigned long)addr >= lo && (unsigned long)addr < hi) {
      found = strstr(line, "/dev/shm/ember-dl-") != NULL;
      break;
    }
  }
  if (f) fclose(f);
  return found;
}

EM_TEST(zero_copy_views_and_slot_reuse) {
  em_dl_dataset *d = make_images(256);
  em_dl_loader *l = make_loader(d, 1, 16, false, false, NULL);
  em_dl_iter *it = em_dl_loader_iter(l);
  const void *addrs[16];
  for (int k = 0; k < 16; k++) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    ASSERT_TRUE(!done);
    /* the batch tensors are views of the worker's shared slot */
    ASSERT_TRUE(in_shm_mapping(em_tensor_data(b.t[0])));
    ASSERT_TRUE(b.t[0]->storage == b.t[1]->storage);
    ASSERT_TRUE(b.holder == b.t[0]->storage);
    addrs[k] = em_tensor_data(b.t[0]);
    int64_t lab[16];
    ASSERT_EQ(check_batch(&b, lab), 16);
    ASSERT_EQ(lab[0], 16 * k);
    em_dl_batch_release(&b);
  }
  /* released at once, so the ring's 3 slots are all that was used */
  int distinct = 0;
  for (int k = 0; k < 16; k++) {
    bool seen = false;
    for (int j = 0; j < k; j++) seen |= addrs[j] == addrs[k];
    distinct += !seen;
  }
  ASSERT_TRUE(distinct <= 3);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(holding_every_batch_does_not_deadlock) {
  /* All 32 batches stay alive: far more than the ring's slots; the loader
   * falls back to one-off segments and the values stay right. The batches
   * also outlive their iterator and loader. */
  em_dl_dataset *d = make_images(512);
  em_dl_loader *l = make_loader(d, 2, 16, false, false, NULL);
  em_dl_iter *it = em_dl_loader_iter(l);
  em_dl_batch *held = calloc(32, sizeof *held);
  for (int k = 0; k < 32; k++) {
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &held[k], &done));
    ASSERT_TRUE(!done);
  }
  em_dl_batch extra;
  bool done;
  ASSERT_OK(em_dl_iter_next(it, &extra, &done));
  ASSERT_TRUE(done);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
  for (int k = 0; k < 32; k++) {
    int64_t lab[16];
    ASSERT_EQ(check_batch(&held[k], lab), 16);
    ASSERT_EQ(lab[0], 16 * k);
    em_dl_batch_release(&held[k]);
  }
  free(held);
  /* every mapping is gone once the last batch is released */
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int maps = 0;
  while (fgets(line, sizeof line, f)) maps += strstr(line, "ember-dl-") != NULL;
  fclose(f);
  ASSERT_EQ(maps, 0);
}

EM_TEST(small_slots_use_one_off_segments) {
  em_dl_dataset *d = make_images(64);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 16;
  o.num_workers = 2;
  o.slot_bytes = 16384; /* the header plus 4 KiB: a batch of 16 images does not fit */
  em_dl_loader *l = em_dl_loader_create(d, &o);
  ASSERT_NOTNULL(l);
  int64_t labels[64], nb;
  ASSERT_EQ(run_pass(l, labels, &nb), 64);
  for (int i = 0; i < 64; i++) ASSERT_EQ(labels[i], i);
  em_dl_loader_destroy(l);
  o.slot_bytes = 100;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "slot_bytes=100 is smaller than");
  em_dl_dataset_release(d);
}

/* Sample i: a float32 vector of length 1 + (i >= 32 ? 200 : 0) filled with
 * i: batch 0 is small, the later ones outgrow the auto-sized slots. */
static int64_t grow_len(void *ctx) { return 96; }
static em_status grow_get(void *ctx, int64_t i, em_dl_sample *out) {
  int64_t n = 1 + (i >= 32 ? 200 : 0);
  em_tensor *t = em_tensor_full(EM_DIMS(n), em_scalar_float((double)i), EM_FLOAT32);
  return em_dl_sample_push(out, t);
}

EM_TEST(batches_larger_than_auto_slots) {
  static const em_dl_dataset_ops ops = {.name = "Grow", .len = grow_len, .get = grow_get};
  em_dl_dataset *d = em_dl_dataset_create(&ops, NULL);
  em_dl_loader *l = make_loader(d, 1, 32, false, false, NULL);
  /* whole passes: the second one starts from the slot size the first
   * learned (or, as the first outgrew it, sizes anew) */
  for (int pass = 0; pass < 2; pass++) {
    em_dl_iter *it = em_dl_loader_iter(l);
    for (int k = 0; k < 4; k++) {
      em_dl_batch b;
      bool done;
      ASSERT_OK(em_dl_iter_next(it, &b, &done));
      if (k == 3) {
        ASSERT_TRUE(done);
        break;
      }
      ASSERT_SHAPE(b.t[0], 32, k ? 201 : 1);
      ASSERT_EQ(em_test_get(b.t[0], 0), 32 * k);
      ASSERT_EQ(em_test_get(b.t[0], b.t[0]->numel - 1), 32 * k + 31);
      em_dl_batch_release(&b);
    }
    em_dl_iter_destroy(it);
  }
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

/* A dataset whose samples take longer on one worker: delivery stays in
 * order. */
static int64_t slow_len(void *ctx) { return 40; }
static em_status slow_get(void *ctx, int64_t i, em_dl_sample *out) {
  const em_dl_worker_info *w = em_dl_get_worker_info();
  if (w && w->id == 0) usleep(3000);
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(i), EM_INT64));
}

EM_TEST(in_order_delivery_with_uneven_workers) {
  static const em_dl_dataset_ops ops = {.name = "Slow", .len = slow_len, .get = slow_get};
  em_dl_dataset *d = em_dl_dataset_create(&ops, NULL);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 2;
  o.prefetch_factor = 4;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  em_dl_iter *it = em_dl_loader_iter(l);
  for (int k = 0; k < 20; k++) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    ASSERT_TRUE(!done);
    ASSERT_TENSOR_CLOSE(b.t[0], ((double[]){2 * k, 2 * k + 1}), 0, 0);
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

/* ---- the mailbox's other paths ---------------------------------------------------------- */

/* Sample i: the scalar i, after a nap of nap_us. */
typedef struct {
  int64_t n;
  int nap_us;
} idx_ds;
static int64_t idx_len(void *ctx) { return ((idx_ds *)ctx)->n; }
static em_status idx_get(void *ctx, int64_t i, em_dl_sample *out) {
  if (((idx_ds *)ctx)->nap_us) usleep((useconds_t)((idx_ds *)ctx)->nap_us);
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(i), EM_INT64));
}

/* Batches 0.. of size bs over 0..n-1 in order, while the caller sleeps
 * nap_us before every batch from first_nap on. */
static void check_index_batches(em_dl_loader *l, int64_t n, int64_t bs, int64_t first_nap,
                                int nap_us, int64_t stop) {
  em_dl_iter *it = em_dl_loader_iter(l);
  ASSERT_NOTNULL(it);
  int64_t next = 0, k = 0;
  for (;;) {
    if (k >= first_nap && nap_us) usleep((useconds_t)nap_us);
    if (stop >= 0 && k == stop) break;
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    if (done) break;
    ASSERT_EQ(b.index, k);
    int64_t m = em_tensor_size(b.t[0], 0);
    ASSERT_EQ(m, next + bs <= n ? bs : n - next);
    const int64_t *v = em_tensor_data(b.t[0]);
    for (int64_t r = 0; r < m; r++) ASSERT_EQ(v[r], next + r);
    next += m;
    k++;
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  if (stop < 0) ASSERT_EQ(next, n);
}

/* Tasks too big for a queue entry (over EM_DL_TASK_INLINE indices) go
 * over the socket behind a marker, in parts above EM_DL_TASK_CHUNK; more
 * tasks than the queue holds wait in the main process; a caller that
 * stops reading lets results pile up past the result queue. */
EM_TEST(mailbox_markers_and_full_queues) {
  idx_ds big = {10000, 0}, small = {400, 0}, slow = {60, 1000};
  int64_t n = big.n;
  static const em_dl_dataset_ops ops = {.name = "Index", .len = idx_len, .get = idx_get};
  em_dl_dataset *d = em_dl_dataset_create(&ops, &big);
  /* 300 and 5000 indices per task: one message, and two parts */
  for (int64_t bs = 300; bs <= 5000; bs += 4700) {
    em_dl_loader *l = make_loader(d, 1, bs, false, false, NULL);
    ASSERT_NOTNULL(l);
    check_index_batches(l, n, bs, 0, 0, -1);
    em_dl_loader_destroy(l);
  }
  /* prefetch 100 > EM_DL_TASK_Q tasks; a sleepy caller: > EM_DL_RESULT_Q
   * results wait for it */
  em_dl_dataset *d2 = em_dl_dataset_create(&ops, &small);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 1;
  o.prefetch_factor = 100;
  em_dl_loader *l = em_dl_loader_create(d2, &o);
  ASSERT_NOTNULL(l);
  check_index_batches(l, small.n, 2, 1, 20000, 5); /* stops early: the rest in flight */
  check_index_batches(l, small.n, 2, 0, 0, -1);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d2);
  /* persistent workers: a new pass while the last one's tasks (1 ms a
   * sample) still fill the queue */
  em_dl_dataset *d3 = em_dl_dataset_create(&ops, &slow);
  o.persistent_workers = true;
  o.prefetch_factor = 40;
  l = em_dl_loader_create(d3, &o);
  ASSERT_NOTNULL(l);
  for (int pass = 0; pass < 3; pass++) check_index_batches(l, slow.n, 2, 0, 0, pass < 2 ? 1 : -1);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d3);
  em_dl_dataset_release(d);
}

/* ---- seeding and worker_init_fn ------------------------------------------------------ */

/* Sample i: (i, 3 uniform draws from the default generator, worker id). */
static int64_t rnd_len(void *ctx) { return 16; }
static em_status rnd_get(void *ctx, int64_t i, em_dl_sample *out) {
  const em_dl_worker_info *w = em_dl_get_worker_info();
  TRY(em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(i), EM_INT64)));
  TRY(em_dl_sample_push(out, em_tensor_rand(EM_DIMS(3), EM_FLOAT64, NULL)));
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(w ? w->id : -1), EM_INT64));
}

/* worker_init_fn records (id, seed, num_workers) in a shared tensor. */
static em_status record_init(void *ctx, int id) {
  em_tensor *board = ctx;
  const em_dl_worker_info *w = em_dl_get_worker_info();
  int64_t *p = em_tensor_data(board);
  p[3 * id] = id + 1;
  p[3 * id + 1] = (int64_t)w->seed;
  p[3 * id + 2] = w->num_workers;
  return EM_OK;
}

static em_status rnd_pass(em_dl_loader *l, double *vals, int64_t *workers) {
  em_dl_iter *it = em_dl_loader_iter(l);
  if (!it) return em_last_status();
  for (int k = 0; k < 8; k++) {
    em_dl_batch b;
    bool done;
    TRY(em_dl_iter_next(it, &b, &done));
    for (int r = 0; r < 2; r++) {
      for (int j = 0; j < 3; j++) vals[(2 * k + r) * 3 + j] = em_test_get(b.t[1], r * 3 + j);
      workers[2 * k + r] = (int64_t)em_test_get(b.t[2], r);
    }
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  return EM_OK;
}

EM_TEST(per_worker_seeding_is_reproducible) {
  static const em_dl_dataset_ops ops = {.name = "Rnd", .len = rnd_len, .get = rnd_get};
  em_dl_dataset *d = em_dl_dataset_create(&ops, NULL);
  em_tensor *board = em_dl_empty_shared(EM_DIMS(6), EM_INT64);
  ASSERT_OK(em_tensor_zero_(board));
  em_generator *g = em_generator_create(99);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 2;
  o.generator = g;
  o.worker_init_fn = record_init;
  o.worker_init_ctx = board;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  double a[48], b[48];
  int64_t wa[16], wb[16];
  ASSERT_OK(rnd_pass(l, a, wa));
  const int64_t *p = em_tensor_data(board);
  ASSERT_EQ(p[0], 1);
  ASSERT_EQ(p[3], 2);
  ASSERT_EQ(p[2], 2);
  ASSERT_EQ(p[4] - p[1], 1); /* seeds base_seed + id */
  /* the base seed is the loader generator's first int64 draw */
  em_generator *g2 = em_generator_create(99);
  em_tensor *bs = em_tensor_randint(0, INT64_MAX, 0, NULL, EM_INT64, g2);
  ASSERT_EQ(p[1], *(int64_t *)em_tensor_data(bs));
  em_tensor_release(bs);
  em_generator_destroy(g2);
  for (int i = 0; i < 16; i++) ASSERT_EQ(wa[i], (i / 2) % 2);
  /* worker 0's first sample and worker 1's first sample: different streams */
  ASSERT_TRUE(a[0] != a[6]);
  /* each worker's stream is the default generator seeded base_seed + id */
  em_generator *w0 = em_generator_create((uint64_t)p[1]);
  em_tensor *r0 = em_tensor_rand(EM_DIMS(3), EM_FLOAT64, w0);
  for (int j = 0; j < 3; j++) ASSERT_EQ(a[j], em_test_get(r0, j));
  em_tensor_release(r0);
  em_generator_destroy(w0);
  /* same loader seed: the same augmentation in every worker */
  em_generator_set_seed(g, 99);
  ASSERT_OK(rnd_pass(l, b, wb));
  ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
  /* a new pass without reseeding: a new base seed, new numbers */
  ASSERT_OK(rnd_pass(l, b, wb));
  ASSERT_TRUE(memcmp(a, b, sizeof a) != 0);
  em_dl_loader_destroy(l);
  em_generator_destroy(g);
  em_tensor_release(board);
  em_dl_dataset_release(d);
}

EM_TEST(persistent_workers) {
  em_dl_dataset *d = make_images(200);
  em_generator *g = em_generator_create(5);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 10;
  o.shuffle = true;
  o.num_workers = 2;
  o.persistent_workers = true;
  o.generator = g;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  ASSERT_NOTNULL(l);
  pid_t p1[2], p2[2];
  /* pass 1: stop after 3 batches (results in flight become stale) */
  em_dl_iter *it = em_dl_loader_iter(l);
  ASSERT_NOTNULL(it);
  ASSERT_PNULL_ERR(em_dl_loader_iter(l), EM_ERR_STATE, "already serve a live iterator");
  ASSERT_EQ(em_dl_iter_worker_pids(it, p1, 2), 2);
  for (int k = 0; k < 3; k++) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  ASSERT_TRUE(dl_pid_running(p1[0]) && dl_pid_running(p1[1]));
  /* passes 2 and 3: complete, same workers, permutations, different orders */
  int64_t a[200], b[200], nb;
  ASSERT_EQ(run_pass(l, a, &nb), 200);
  ASSERT_EQ(nb, 20);
  ASSERT_EQ(run_pass(l, b, &nb), 200);
  ASSERT_TRUE(memcmp(a, b, sizeof a) != 0);
  char seen[200] = {0};
  for (int i = 0; i < 200; i++) {
    ASSERT_TRUE(!seen[b[i]]);
    seen[b[i]] = 1;
  }
  it = em_dl_loader_iter(l);
  ASSERT_EQ(em_dl_iter_worker_pids(it, p2, 2), 2);
  ASSERT_TRUE(p1[0] == p2[0] && p1[1] == p2[1]);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  ASSERT_TRUE(!dl_pid_running(p1[0]) && !dl_pid_running(p1[1]));
  em_generator_destroy(g);
  em_dl_dataset_release(d);
}

/* ---- iterable datasets ---------------------------------------------------------------- */

/* Items 0..24, sharded: worker w of W yields items w, w + W, ... */
typedef struct { int64_t next, step; } range_state;
static em_status rg_begin(void *ctx, const em_dl_worker_info *info, void **state) {
  range_state *s = malloc(sizeof *s);
  s->next = info ? info->id : 0;
  s->step = info ? info->num_workers : 1;
  *state = s;
  return EM_OK;
}
static em_status rg_next(void *ctx, void *state, em_dl_sample *out, bool *done) {
  range_state *s = state;
  if (s->next >= 25) {
    *done = true;
    return EM_OK;
  }
  int64_t v = s->next;
  s->next += s->step;
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(v), EM_INT64));
}
static void rg_end(void *ctx, void *state) { free(state); }

EM_TEST(iterable_dataset) {
  static const em_dl_dataset_ops ops = {.name = "Range", .iter_begin = rg_begin,
                                        .iter_next = rg_next, .iter_end = rg_end};
  em_dl_dataset *d = em_dl_dataset_create(&ops, NULL);
  ASSERT_TRUE(em_dl_dataset_is_iterable(d));
  ASSERT_EQ(em_dl_dataset_len(d), -1);
  for (int workers = 0; workers <= 2; workers++)
    for (int drop = 0; drop < 2; drop++) {
      em_dl_loader *l = make_loader(d, workers, 4, false, drop, NULL);
      ASSERT_NOTNULL(l);
      ASSERT_EQ(em_dl_loader_len(l), -1);
      em_dl_iter *it = em_dl_loader_iter(l);
      char seen[25] = {0};
      int count = 0, partial = 0;
      for (;;) {
        em_dl_batch b;
        bool done;
        ASSERT_OK(em_dl_iter_next(it, &b, &done));
        if (done) break;
        int64_t n = em_tensor_size(b.t[0], 0);
        if (n < 4) partial++;
        for (int64_t r = 0; r < n; r++) {
          int64_t v = (int64_t)em_test_get(b.t[0], r);
          ASSERT_TRUE(v >= 0 && v < 25 && !seen[v]);
          seen[v] = 1;
          count++;
        }
        em_dl_batch_release(&b);
      }
      em_dl_iter_destroy(it);
      em_dl_loader_destroy(l);
      /* 0 workers: 25 = 6 x 4 + 1; 1 worker the same; 2 workers: 13 + 12
       * items = 3 x 4 + 1 and 3 x 4 */
      if (!drop) ASSERT_EQ(count, 25);
      else ASSERT_EQ(count, workers == 2 ? 24 : 24);
      if (drop) ASSERT_EQ(partial, 0);
    }
  /* no batching: one item at a time */
  em_dl_loader *l = make_loader(d, 2, 0, false, false, NULL);
  em_dl_iter *it = em_dl_loader_iter(l);
  int count = 0;
  for (;;) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    if (done) break;
    ASSERT_SCALAR_SHAPE(b.t[0]);
    count++;
    em_dl_batch_release(&b);
  }
  ASSERT_EQ(count, 25);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.shuffle = true;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID,
                   "DataLoader with IterableDataset: expected unspecified shuffle option");
  em_dl_dataset_release(d);
}

/* ---- collate, samplers and options ------------------------------------------------------ */

/* Collate: labels summed into a builder tensor, a copied-in tensor, meta. */
static em_status meta_collate(void *ctx, int n, em_dl_sample *s, em_dl_batch_builder *b) {
  em_tensor *t = em_dl_batch_builder_alloc(b, EM_DIMS(1), EM_INT64);
  if (!t) return em_last_status();
  int64_t sum = 0;
  for (int i = 0; i < n; i++) sum += (int64_t)em_test_get(s[i].t[1], 0);
  *(int64_t *)em_tensor_data(t) = sum;
  em_status st = em_dl_batch_builder_add(b, t);
  em_tensor_release(t);
  em_tensor *h = em_tensor_full(EM_DIMS(2, 2), em_scalar_int(n), EM_INT32); /* heap: copied in */
  if (!st) st = em_dl_batch_builder_add(b, h);
  em_tensor_release(h);
  char m[32];
  int len = snprintf(m, sizeof m, "batch of %d", n);
  return st ? st : em_dl_batch_builder_set_meta(b, m, (size_t)len + 1);
}

EM_TEST(user_collate_in_workers) {
  em_dl_dataset *d = make_images(30);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 8;
  o.num_workers = 2;
  o.collate_fn = meta_collate;
  o.pin_memory = true; /* a no-op without CUDA (tests/gpu/test_cuda_dataloader.c: with) */
  em_dl_loader *l = em_dl_loader_create(d, &o);
  em_dl_iter *it = em_dl_loader_iter(l);
  for (int k = 0; k < 4; k++) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    int n = k < 3 ? 8 : 6;
    int64_t sum = 0;
    for (int i = 0; i < n; i++) sum += 8 * k + i;
    ASSERT_EQ(b.n, 2);
    ASSERT_TRUE(em_tensor_is_pinned(b.t[0]) == em_cuda_is_available());
    ASSERT_EQ(em_test_get(b.t[0], 0), sum);
    ASSERT_SHAPE(b.t[1], 2, 2);
    ASSERT_EQ(em_test_get(b.t[1], 3), n);
    char expect[32];
    snprintf(expect, sizeof expect, "batch of %d", n);
    ASSERT_STREQ((const char *)b.meta, expect);
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

/* Collate: one tensor per sample and one per label (2n tensors), half in
 * the slot (builder alloc), half copied in; ctx: one more heap tensor of
 * this many elements after the first batch (whose size sizes the ring),
 * so that those batches outgrow their slots (one-off segments). */
static em_status many_collate(void *ctx, int n, em_dl_sample *s, em_dl_batch_builder *b) {
  em_status st = EM_OK;
  for (int i = 0; i < n && !st; i++) {
    em_tensor *t = em_dl_batch_builder_alloc(b, EM_DIMS(1), EM_INT64);
    if (!t) return em_last_status();
    *(int64_t *)em_tensor_data(t) = (int64_t)em_test_get(s[i].t[1], 0);
    st = em_dl_batch_builder_add(b, t);
    em_tensor_release(t);
    em_tensor *h = em_tensor_full(EM_DIMS(2), em_scalar_int(1000 + i), EM_INT32);
    if (!st) st = em_dl_batch_builder_add(b, h);
    em_tensor_release(h);
  }
  int64_t extra = *(const int64_t *)ctx;
  if (!st && extra && em_test_get(s[0].t[1], 0) >= 100) {
    em_tensor *big = em_tensor_zeros(EM_DIMS(extra), EM_UINT8);
    st = em_dl_batch_builder_add(b, big);
    em_tensor_release(big);
  }
  return st;
}

EM_TEST(batches_of_many_tensors) {
  /* more tensors than a sample may have fields (EM_DL_MAX_FIELDS), in and
   * out of process, in a slot and in a one-off segment */
  em_dl_dataset *d = make_images(300);
  for (int nw = 0; nw <= 2; nw++)
    for (int big = 0; big < 2; big++) {
      int64_t extra = big ? 4 << 20 : 0;
      em_dl_loader_options o;
      em_dl_loader_options_init(&o);
      o.batch_size = 100;
      o.num_workers = nw;
      o.collate_fn = many_collate;
      o.collate_ctx = &extra;
      em_dl_loader *l = em_dl_loader_create(d, &o);
      em_dl_iter *it = em_dl_loader_iter(l);
      ASSERT_NOTNULL(it);
      for (int k = 0; k < 3; k++) {
        em_dl_batch b;
        bool done;
        ASSERT_OK(em_dl_iter_next(it, &b, &done));
        ASSERT_TRUE(!done);
        ASSERT_EQ(b.n, 200 + (big && k ? 1 : 0));
        for (int i = 0; i < 100; i++) {
          ASSERT_EQ(em_test_get(b.t[2 * i], 0), 100 * k + i);
          ASSERT_SHAPE(b.t[2 * i + 1], 2);
          ASSERT_EQ(em_test_get(b.t[2 * i + 1], 1), 1000 + i);
        }
        if (big && k) ASSERT_EQ(em_tensor_numel(b.t[200]), extra);
        em_dl_batch_release(&b);
      }
      em_dl_iter_destroy(it);
      em_dl_loader_destroy(l);
    }
  em_dl_dataset_release(d);
}

EM_TEST(dev_shm_too_small_for_the_rings) {
  /* /dev/shm cannot hold a worker's ring of 3 slots but holds a batch:
   * every batch travels in a segment of its own, the pass is whole */
  em_dl_dataset *d = make_images(50);
  em__dl_shm_set_test_free_bytes(20 << 10); /* a ring of 8-image batches needs ~48 KiB */
  for (int pass = 0; pass < 2; pass++) {
    em_dl_loader_options o;
    em_dl_loader_options_init(&o);
    o.batch_size = 8;
    o.num_workers = 2;
    em_dl_loader *l = em_dl_loader_create(d, &o);
    em_dl_iter *it = em_dl_loader_iter(l);
    ASSERT_NOTNULL(it);
    int64_t labels[64], n = 0;
    for (;;) {
      em_dl_batch b;
      bool done;
      ASSERT_OK(em_dl_iter_next(it, &b, &done));
      if (done) break;
      int64_t got = check_batch(&b, labels + n);
      ASSERT_TRUE(got > 0);
      n += got;
      em_dl_batch_release(&b);
    }
    ASSERT_EQ(n, 50);
    for (int64_t i = 0; i < n; i++) ASSERT_EQ(labels[i], i);
    em_dl_iter_destroy(it);
    em_dl_loader_destroy(l);
  }
  em__dl_shm_set_test_free_bytes(0);
  ASSERT_EQ(dl_shm_count(getpid()), 0);
  em_dl_dataset_release(d);
}

EM_TEST(custom_samplers_and_no_batching) {
  em_dl_dataset *d = make_images(20);
  /* a batch sampler over a reversed-order user list */
  int64_t order[20];
  for (int i = 0; i < 20; i++) order[i] = 19 - i;
  em_generator *g = em_generator_create(3);
  em_dl_sampler *s = em_dl_subset_random_sampler_create(20, order, g);
  em_dl_sampler *bs = em_dl_batch_sampler_create(s, 6, true);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_sampler = bs;
  o.num_workers = 2;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  ASSERT_NOTNULL(l);
  ASSERT_EQ(em_dl_loader_len(l), 3);
  int64_t labels[20], nb;
  ASSERT_EQ(run_pass(l, labels, &nb), 18);
  em_dl_loader_destroy(l);
  /* batch_size 0: samples one by one, as they are */
  em_dl_loader_options_init(&o);
  o.batch_size = 0;
  o.num_workers = 1;
  o.sampler = s;
  l = em_dl_loader_create(d, &o);
  ASSERT_EQ(em_dl_loader_len(l), 20);
  em_dl_iter *it = em_dl_loader_iter(l);
  int count = 0;
  for (;;) {
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    if (done) break;
    ASSERT_SHAPE(b.t[0], 1, 28, 28);
    ASSERT_SCALAR_SHAPE(b.t[1]);
    count++;
    em_dl_batch_release(&b);
  }
  ASSERT_EQ(count, 20);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  /* option errors, with torch's messages */
  em_dl_loader_options_init(&o);
  o.num_workers = -1;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID,
                   "num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.");
  em_dl_loader_options_init(&o);
  o.persistent_workers = true;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "persistent_workers option needs num_workers > 0");
  em_dl_loader_options_init(&o);
  o.prefetch_factor = 3;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "prefetch_factor option could only be specified in multiprocessing");
  em_dl_loader_options_init(&o);
  o.sampler = s;
  o.shuffle = true;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "sampler option is mutually exclusive with shuffle");
  em_dl_loader_options_init(&o);
  o.batch_sampler = bs;
  o.batch_size = 4;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID,
                   "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last");
  em_dl_loader_options_init(&o);
  o.timeout = -1;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "timeout option should be non-negative");
  em_dl_loader_options_init(&o);
  o.sampler = bs;
  ASSERT_PNULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "pass it as batch_sampler");
  em_dl_sampler_release(bs);
  em_dl_sampler_release(s);
  em_generator_destroy(g);
  em_dl_dataset_release(d);
}

/* A user sampler that fails on its third chunk (a Python sampler raising). */
typedef struct { int64_t calls, buf[2]; } broken_state;
static int64_t br_len(void *ctx) { return 100; }
static em_status br_begin(void *ctx, void **state) {
  *state = calloc(1, sizeof(broken_state));
  return EM_OK;
}
static em_status br_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  broken_state *b = state;
  if (b->calls == 2) return em_set_error(EM_ERR_INVALID, "sampler broke");
  b->buf[0] = 2 * b->calls;
  b->buf[1] = 2 * b->calls + 1;
  b->calls++;
  *idx = b->buf;
  *n = 2;
  return EM_OK;
}
static void br_end(void *ctx, void *state) { free(state); }

EM_TEST(failing_sampler_is_an_error_not_a_hang) {
  static const em_dl_sampler_ops ops = {.name = "Broken", .len = br_len, .begin = br_begin,
                                        .next = br_next, .end = br_end};
  em_dl_sampler *s = em_dl_sampler_create(&ops, NULL);
  em_dl_dataset *d = make_images(20);
  for (int w = 0; w <= 2; w += 2) {
    em_dl_loader_options o;
    em_dl_loader_options_init(&o);
    o.batch_size = 2;
    o.num_workers = w;
    o.sampler = s;
    em_dl_loader *l = em_dl_loader_create(d, &o);
    em_dl_iter *it = em_dl_loader_iter(l);
    em_status st = EM_OK;
    int good = 0;
    for (int k = 0; k < 5 && !st; k++) {
      em_dl_batch b;
      bool done;
      st = em_dl_iter_next(it, &b, &done);
      if (!st) {
        ASSERT_TRUE(!done);
        good++;
        em_dl_batch_release(&b);
      }
    }
    ASSERT_EQ(st, EM_ERR_INVALID);
    ASSERT_TRUE(strstr(em_last_error(), "sampler broke") != NULL);
    ASSERT_TRUE(good <= 2);
    em_dl_iter_destroy(it);
    em_dl_loader_destroy(l);
  }
  em_dl_sampler_release(s);
  em_dl_dataset_release(d);
}

/* A sampler that fails in begin (*ctx == -1) or on its first chunk. The
 * loader takes the first chunks before it forks the workers. */
static em_status early_begin(void *ctx, void **state) {
  *state = NULL;
  if (*(int *)ctx < 0) return em_set_error(EM_ERR_INVALID, "sampler broke in begin");
  return EM_OK;
}
static em_status early_next(void *ctx, void *state, const int64_t **idx, int64_t *n) {
  return em_set_error(EM_ERR_INVALID, "sampler broke at once");
}

EM_TEST(sampler_failing_before_the_first_batch) {
  static const em_dl_sampler_ops ops = {.name = "Early", .len = br_len, .begin = early_begin,
                                        .next = early_next};
  em_dl_dataset *d = make_images(20);
  for (int where = -1; where <= 0; where++) {
    em_dl_sampler *s = em_dl_sampler_create(&ops, &where);
    for (int w = 1; w <= 2; w++) {
      em_dl_loader_options o;
      em_dl_loader_options_init(&o);
      o.batch_size = 2;
      o.num_workers = w;
      o.sampler = s;
      o.persistent_workers = w == 2;
      em_dl_loader *l = em_dl_loader_create(d, &o);
      ASSERT_TRUE(l != NULL);
      if (where < 0) { /* iter fails, and no worker was started */
        ASSERT_PNULL_ERR(em_dl_loader_iter(l), EM_ERR_INVALID, "sampler broke in begin");
        ASSERT_TRUE(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
      } else { /* the first next reports it; the pass then ends */
        em_dl_iter *it = em_dl_loader_iter(l);
        ASSERT_TRUE(it != NULL);
        pid_t pids[2];
        ASSERT_EQ(em_dl_iter_worker_pids(it, pids, 2), w);
        em_dl_batch b;
        bool done;
        ASSERT_EQ(em_dl_iter_next(it, &b, &done), EM_ERR_INVALID);
        ASSERT_TRUE(strstr(em_last_error(), "sampler broke at once") != NULL);
        em_dl_iter_destroy(it);
        em_dl_loader_destroy(l);
        l = NULL;
        for (int k = 0; k < w; k++) ASSERT_TRUE(!dl_pid_running(pids[k]));
      }
      em_dl_loader_destroy(l);
      ASSERT_EQ(dl_shm_count(getpid()), 0);
    }
    em_dl_sampler_release(s);
  }
  em_dl_dataset_release(d);
}

/* ---- throughput ----------------------------------------------------------------------------- */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

EM_TEST(throughput_samples_per_second) {
  /* Synthetic Fashion-MNIST-sized data: 20000 uint8 [1, 28, 28] images,
   * shuffled batches of 64. Printed for the record, not asserted. */
  const int64_t n = 20000;
  em_dl_dataset *d = make_images(n);
  for (int w = 0; w <= 2; w++) {
    em_generator *g = em_generator_create(1);
    em_dl_loader *l = make_loader(d, w, 64, true, false, g);
    em_dl_iter *it = em_dl_loader_iter(l);
    double t0 = now();
    int64_t samples = 0;
    for (;;) {
      em_dl_batch b;
      bool done;
      ASSERT_OK(em_dl_iter_next(it, &b, &done));
      if (done) break;
      samples += b.t[0]->shape[0];
      em_dl_batch_release(&b);
    }
    double dt = now() - t0;
    em_dl_iter_destroy(it);
    ASSERT_EQ(samples, n);
    printf("  num_workers=%d: %.0f samples/s (%lld samples of 784 bytes, batch 64, shuffled)\n", w,
           (double)samples / dt, (long long)samples);
    em_dl_loader_destroy(l);
    em_generator_destroy(g);
  }
  em_dl_dataset_release(d);
}

/* ---- user mistakes ------------------------------------------------------------------------ */

/* yields two items, the second along with done (fields with done are not
 * a sample, and must not leak), or fails silently when ctx says so */
static em_status odd_begin(void *ctx, const em_dl_worker_info *info, void **state) {
  *state = calloc(1, sizeof(int));
  return EM_OK;
}
static em_status odd_next(void *ctx, void *state, em_dl_sample *out, bool *done) {
  int *k = state;
  if (*(int *)ctx) return EM_ERR_IO; /* no message */
  EM_CHECK(em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(*k), EM_INT64)));
  *done = ++*k == 2;
  return EM_OK;
}
static em_status silent_collate(void *ctx, int n, em_dl_sample *samples, em_dl_batch_builder *b) {
  return EM_ERR_IO;
}

EM_TEST(loader_mistakes) {
  int silent = 0;
  static const em_dl_dataset_ops ops = {.name = "Odd", .iter_begin = odd_begin,
                                        .iter_next = odd_next, .iter_end = rg_end};
  em_dl_dataset *d = em_dl_dataset_create(&ops, &silent);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  /* bounds that keep sizes from wrapping */
  o.batch_size = ((int64_t)1 << 61) + 1;
  ASSERT_NULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "batch_size=2305843009213693953 is too large");
  o.batch_size = 2;
  o.slot_bytes = SIZE_MAX - 10;
  ASSERT_NULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "slot_bytes=18446744073709551605 is too large");
  o.slot_bytes = 0;
  o.num_workers = 2;
  o.prefetch_factor = 1 << 28;
  ASSERT_NULL_ERR(em_dl_loader_create(d, &o), EM_ERR_INVALID, "batches in flight is too many");
  ASSERT_EQ(em_dl_iter_worker_pids(NULL, NULL, 4), 0);
  for (int workers = 0; workers <= 1; workers++) {
    em_dl_loader *l = make_loader(d, workers, 4, false, false, NULL);
    silent = 0;
    em_dl_iter *it = em_dl_loader_iter(l);
    em_dl_batch b;
    bool done;
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    ASSERT_TRUE(!done && em_tensor_size(b.t[0], 0) == 1); /* item 1 came with done */
    em_dl_batch_release(&b);
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    ASSERT_TRUE(done);
    em_dl_iter_destroy(it);
    silent = 1;
    it = em_dl_loader_iter(l);
    ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_IO, "Odd: iter_next failed without an error message");
    em_dl_iter_destroy(it);
    em_dl_loader_destroy(l);
    silent = 0;
    o = (em_dl_loader_options){0};
    em_dl_loader_options_init(&o);
    o.batch_size = 2;
    o.num_workers = workers;
    o.collate_fn = silent_collate;
    l = em_dl_loader_create(d, &o);
    it = em_dl_loader_iter(l);
    ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_IO, "collate_fn failed without an error message");
    ASSERT_TRUE(strstr(em_last_error(), "collate_fn: collate_fn") == NULL); /* named once */
    em_dl_iter_destroy(it);
    em_dl_loader_destroy(l);
  }
  em_dl_dataset_release(d);
  ASSERT_EQ(dl_shm_count(getpid()), 0);
}

EM_TEST_MAIN()
