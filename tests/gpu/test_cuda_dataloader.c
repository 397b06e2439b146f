/* The DataLoader's pin_memory on a real device: batches made in the
 * calling process and in workers come out in pinned host memory, equal to
 * those of the same loader without pin_memory; a worker's batch no longer
 * holds its ring slot (a caller may keep many more batches than the ring
 * has slots); its meta survives the move; a pinned batch copies to the
 * device asynchronously. Skips (77) without a CUDA device. */
#include "dataloader/dataloader.h"
#include "tests/gpu/gpu_util.h"

#define N 100
#define BATCH 8

/* Sample i: x = [i, i + 0.5, i + 0.25] (float32), y = 1000 + i (int64). */
static em_dl_dataset *make_dataset(void) {
  float x[N * 3];
  int64_t y[N];
  for (int i = 0; i < N; i++) {
    x[3 * i] = (float)i, x[3 * i + 1] = (float)i + 0.5f, x[3 * i + 2] = (float)i + 0.25f;
    y[i] = 1000 + i;
  }
  em_tensor *ts[2] = {em_tensor_from_data(x, EM_DIMS(N, 3), EM_FLOAT32),
                      em_tensor_from_data(y, EM_DIMS(N), EM_INT64)};
  em_dl_dataset *d = em_dl_tensor_dataset_create(2, ts);
  em_tensor_release(ts[0]);
  em_tensor_release(ts[1]);
  return d;
}

static em_dl_loader *make_loader(em_dl_dataset *d, int workers, bool pin,
                                 em_dl_collate_fn collate) {
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = BATCH;
  o.num_workers = workers;
  o.pin_memory = pin;
  o.collate_fn = collate;
  return em_dl_loader_create(d, &o);
}

static bool same_bytes(em_tensor *a, em_tensor *b) {
  return em_tensor_dtype(a) == em_tensor_dtype(b) && em_tensor_numel(a) == em_tensor_numel(b) &&
         em_tensor_is_contiguous(a) && em_tensor_is_contiguous(b) &&
         !memcmp(em_tensor_data(a), em_tensor_data(b),
                 (size_t)em_tensor_numel(a) * em_dtype_size(em_tensor_dtype(a)));
}

/* All batches of a pass with and without pin_memory, every pinned batch
 * kept until the end of the pass (13 batches; one worker's ring has 3
 * slots). */
static void compare_pass(int workers) {
  em_dl_dataset *d = make_dataset();
  em_dl_loader *lp = make_loader(d, workers, true, NULL), *lu = make_loader(d, workers, false, NULL);
  ASSERT_NOTNULL(lp);
  ASSERT_NOTNULL(lu);
  em_dl_iter *ip = em_dl_loader_iter(lp), *iu = em_dl_loader_iter(lu);
  ASSERT_NOTNULL(ip);
  ASSERT_NOTNULL(iu);
  em_dl_batch kept[(N + BATCH - 1) / BATCH];
  int nb = 0;
  for (;;) {
    em_dl_batch bp, bu;
    bool dp, du;
    ASSERT_OK(em_dl_iter_next(ip, &bp, &dp));
    ASSERT_OK(em_dl_iter_next(iu, &bu, &du));
    ASSERT_EQ(dp, du);
    if (dp) break;
    ASSERT_EQ(bp.n, 2);
    ASSERT_EQ(bp.index, nb);
    for (int i = 0; i < 2; i++) {
      ASSERT_TRUE(em_tensor_is_pinned(bp.t[i]));
      ASSERT_TRUE(!em_tensor_is_pinned(bu.t[i]));
      ASSERT_TRUE(same_bytes(bp.t[i], bu.t[i]));
    }
    if (workers > 0) ASSERT_TRUE(bp.holder == NULL); /* nothing holds the slot */
    em_dl_batch_release(&bu);
    kept[nb++] = bp;
  }
  ASSERT_EQ(nb, (N + BATCH - 1) / BATCH);
  ASSERT_EQ(em_test_get(kept[nb - 1].t[1], 3), 1000 + (nb - 1) * BATCH + 3);
  em_dl_iter_destroy(ip);
  em_dl_iter_destroy(iu);
  for (int i = 0; i < nb; i++) em_dl_batch_release(&kept[i]);
  em_dl_loader_destroy(lp);
  em_dl_loader_destroy(lu);
  em_dl_dataset_release(d);
}

EM_TEST(pinned_batches_in_process) {
  REQUIRE_CUDA();
  compare_pass(0);
}

EM_TEST(pinned_batches_from_one_worker) {
  REQUIRE_CUDA();
  compare_pass(1);
}

EM_TEST(pinned_batches_from_two_workers) {
  REQUIRE_CUDA();
  compare_pass(2);
}

/* default_collate's output plus meta naming the batch's first sample. */
static em_status meta_collate(void *ctx, int n, em_dl_sample *s, em_dl_batch_builder *b) {
  em_dl_batch out;
  em_status st = em_dl_collate(em_dl_default_collate, NULL, n, s, &out);
  if (st) return st;
  for (int i = 0; i < out.n && !st; i++) st = em_dl_batch_builder_add(b, out.t[i]);
  char m[32];
  int len = snprintf(m, sizeof m, "first %lld", (long long)em_test_get(out.t[1], 0));
  em_dl_batch_release(&out);
  return st ? st : em_dl_batch_builder_set_meta(b, m, (size_t)len + 1);
}

EM_TEST(meta_survives_pinning) {
  REQUIRE_CUDA();
  em_dl_dataset *d = make_dataset();
  em_dl_loader *l = make_loader(d, 2, true, meta_collate);
  ASSERT_NOTNULL(l);
  em_dl_iter *it = em_dl_loader_iter(l);
  ASSERT_NOTNULL(it);
  em_dl_batch b;
  bool done;
  ASSERT_OK(em_dl_iter_next(it, &b, &done));
  ASSERT_TRUE(!done);
  em_dl_iter_destroy(it); /* the batch outlives its iterator and its workers */
  ASSERT_TRUE(em_tensor_is_pinned(b.t[0]));
  ASSERT_STREQ((const char *)b.meta, "first 1000");
  em_dl_batch_release(&b);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(pinned_batch_copies_to_the_device_asynchronously) {
  REQUIRE_CUDA();
  em_dl_dataset *d = make_dataset();
  em_dl_loader *l = make_loader(d, 1, true, NULL);
  em_dl_iter *it = em_dl_loader_iter(l);
  ASSERT_NOTNULL(it);
  em_dl_batch b;
  bool done;
  ASSERT_OK(em_dl_iter_next(it, &b, &done));
  ASSERT_TRUE(em_tensor_is_pinned(b.t[0]));
  em_tensor *g = em_tensor_to_device_async(b.t[0], GPU, true);
  ASSERT_NOTNULL(g);
  em_tensor *twice = em_tensor_mul_scalar(g, em_scalar_float(2));
  em_tensor *want = em_tensor_mul_scalar(b.t[0], em_scalar_float(2));
  ASSERT_GPU_CLOSE(twice, want, 0, 0);
  em_tensor_release(want), em_tensor_release(twice), em_tensor_release(g);
  em_dl_batch_release(&b);
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST_MAIN()
