/* Datasets (TensorDataset, Subset, ConcatDataset, random_split, user
 * callbacks) and collation (default_collate, default_convert, user
 * collate with meta bytes). */
#include <stdlib.h>

#include "core/ops.h"
#include "dataloader/dataloader.h"
#include "dataloader/dataloader_impl.h"
#include "tests/dataloader/dl_util.h"

/* x[i] = [10 i, 10 i + 1, 10 i + 2] (float32), y[i] = i (int64). */
static em_dl_dataset *make_xy(int64_t n, em_tensor **xo, em_tensor **yo) {
  float *x = malloc((size_t)(n * 3 + 1) * sizeof *x);
  int64_t *y = malloc((size_t)(n + 1) * sizeof *y);
  for (int64_t i = 0; i < n; i++) {
    for (int k = 0; k < 3; k++) x[i * 3 + k] = (float)(10 * i + k);
    y[i] = i;
  }
  em_tensor *xt = em_tensor_from_data(x, EM_DIMS(n, 3), EM_FLOAT32);
  em_tensor *yt = em_tensor_from_data(y, EM_DIMS(n), EM_INT64);
  free(x);
  free(y);
  em_tensor *ts[2] = {xt, yt};
  em_dl_dataset *d = em_dl_tensor_dataset_create(2, ts);
  if (xo) *xo = xt;
  else em_tensor_release(xt);
  if (yo) *yo = yt;
  else em_tensor_release(yt);
  return d;
}

/* The label of sample i of d. */
static int64_t label_of(em_dl_dataset *d, int64_t i) {
  em_dl_sample s = {0};
  if (em_dl_dataset_get(d, i, &s) != EM_OK) return -999;
  int64_t v = (int64_t)em_test_get(s.t[1], 0);
  em_dl_sample_release(&s);
  return v;
}

EM_TEST(tensor_dataset) {
  em_dl_dataset *d = make_xy(5, NULL, NULL);
  ASSERT_NOTNULL(d);
  ASSERT_EQ(em_dl_dataset_len(d), 5);
  ASSERT_TRUE(!em_dl_dataset_is_iterable(d));
  em_dl_sample s = {0};
  ASSERT_OK(em_dl_dataset_get(d, 2, &s));
  ASSERT_EQ(s.n, 2);
  ASSERT_SHAPE(s.t[0], 3);
  ASSERT_TENSOR_CLOSE(s.t[0], ((double[]){20, 21, 22}), 0, 0);
  ASSERT_SCALAR_SHAPE(s.t[1]);
  ASSERT_EQ(em_test_get(s.t[1], 0), 2);
  em_dl_sample_release(&s);
  ASSERT_EQ(s.n, 0);
  ASSERT_OK(em_dl_dataset_get(d, -1, &s)); /* Python-style negative index */
  ASSERT_EQ(em_test_get(s.t[1], 0), 4);
  em_dl_sample_release(&s);
  ASSERT_ERR(em_dl_dataset_get(d, 5, &s), EM_ERR_INDEX,
             "TensorDataset: index 5 is out of range for a dataset of length 5");
  ASSERT_ERR(em_dl_dataset_get(d, -6, &s), EM_ERR_INDEX, "index -6 is out of range");
  em_dl_dataset_release(d);
}

EM_TEST(tensor_dataset_views_non_contiguous) {
  /* rows of a transposed tensor are strided views; values still right */
  em_tensor *a = em_tensor_arange(em_scalar_int(0), em_scalar_int(6), em_scalar_int(1), EM_INT64);
  em_tensor *m = em_tensor_view(a, EM_DIMS(2, 3));
  em_tensor *t = em_tensor_transpose(m, 0, 1); /* [3, 2]: rows (0,3) (1,4) (2,5) */
  em_dl_dataset *d = em_dl_tensor_dataset_create(1, &t);
  em_dl_sample s = {0};
  ASSERT_OK(em_dl_dataset_get(d, 1, &s));
  ASSERT_TENSOR_CLOSE(s.t[0], ((double[]){1, 4}), 0, 0);
  /* and default_collate stacks strided samples correctly */
  em_dl_sample ss[2] = {{0}, {0}};
  ASSERT_OK(em_dl_dataset_get(d, 2, &ss[0]));
  ASSERT_OK(em_dl_dataset_get(d, 0, &ss[1]));
  em_dl_batch b;
  ASSERT_OK(em_dl_collate(NULL, NULL, 2, ss, &b));
  ASSERT_SHAPE(b.t[0], 2, 2);
  ASSERT_TENSOR_CLOSE(b.t[0], ((double[]){2, 5, 0, 3}), 0, 0);
  em_dl_batch_release(&b);
  em_dl_sample_release(&ss[0]);
  em_dl_sample_release(&ss[1]);
  em_dl_sample_release(&s);
  em_dl_dataset_release(d);
  em_tensor_release(t);
  em_tensor_release(m);
  em_tensor_release(a);
}

EM_TEST(tensor_dataset_errors) {
  em_tensor *a = em_tensor_zeros(EM_DIMS(4, 2), EM_FLOAT32);
  em_tensor *b = em_tensor_zeros(EM_DIMS(5), EM_FLOAT32);
  em_tensor *z = em_tensor_zeros(0, NULL, EM_FLOAT32);
  em_tensor *ab[2] = {a, b};
  ASSERT_PNULL_ERR(em_dl_tensor_dataset_create(2, ab), EM_ERR_SHAPE,
                   "Size mismatch between tensors: tensor 0 has size(0) 4 but tensor 1 has 5");
  ASSERT_PNULL_ERR(em_dl_tensor_dataset_create(1, &z), EM_ERR_SHAPE, "tensor 0 is 0-dim");
  ASSERT_PNULL_ERR(em_dl_tensor_dataset_create(0, ab), EM_ERR_INVALID, "needs 1 to 32 tensors");
  /* zero-length dataset */
  em_tensor *e = em_tensor_zeros(EM_DIMS(0, 3), EM_FLOAT32);
  em_dl_dataset *d = em_dl_tensor_dataset_create(1, &e);
  ASSERT_EQ(em_dl_dataset_len(d), 0);
  em_dl_sample s = {0};
  ASSERT_ERR(em_dl_dataset_get(d, 0, &s), EM_ERR_INDEX, "out of range for a dataset of length 0");
  em_dl_dataset_release(d);
  em_tensor_release(e);
  em_tensor_release(a);
  em_tensor_release(b);
  em_tensor_release(z);
}

EM_TEST(subset_and_concat) {
  em_dl_dataset *d = make_xy(10, NULL, NULL);
  const int64_t idx[] = {7, 2, -1};
  em_dl_dataset *s = em_dl_subset_create(d, 3, idx);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(em_dl_dataset_len(s), 3);
  ASSERT_EQ(label_of(s, 0), 7);
  ASSERT_EQ(label_of(s, 1), 2);
  ASSERT_EQ(label_of(s, 2), 9);
  const int64_t bad[] = {1, 10};
  ASSERT_PNULL_ERR(em_dl_subset_create(d, 2, bad), EM_ERR_INDEX,
                   "Subset: index 10 at position 1 is out of range for TensorDataset of length 10");
  em_dl_dataset *e = make_xy(4, NULL, NULL);
  em_dl_dataset *parts[3] = {s, d, e};
  em_dl_dataset *c = em_dl_concat_dataset_create(3, parts);
  ASSERT_NOTNULL(c);
  ASSERT_EQ(em_dl_dataset_len(c), 17);
  int64_t expect[17] = {7, 2, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3};
  for (int i = 0; i < 17; i++) ASSERT_EQ(label_of(c, i), expect[i]);
  ASSERT_EQ(label_of(c, -1), 3);
  em_dl_sample smp = {0};
  ASSERT_ERR(em_dl_dataset_get(c, 17, &smp), EM_ERR_INDEX, "ConcatDataset: index 17 is out of range");
  ASSERT_PNULL_ERR(em_dl_concat_dataset_create(0, parts), EM_ERR_INVALID, "should not be an empty");
  /* an empty member is skipped */
  em_dl_dataset *z = make_xy(0, NULL, NULL);
  em_dl_dataset *parts2[3] = {z, e, z};
  em_dl_dataset *c2 = em_dl_concat_dataset_create(3, parts2);
  ASSERT_EQ(em_dl_dataset_len(c2), 4);
  for (int i = 0; i < 4; i++) ASSERT_EQ(label_of(c2, i), i);
  em_dl_dataset_release(c2);
  em_dl_dataset_release(z);
  em_dl_dataset_release(c);
  em_dl_dataset_release(e);
  em_dl_dataset_release(s); /* the concat held its own references */
  em_dl_dataset_release(d);
}

EM_TEST(random_split) {
  em_dl_dataset *d = make_xy(10, NULL, NULL);
  em_dl_dataset *out[3];
  em_generator *g = em_generator_create(42);
  ASSERT_OK(em_dl_random_split(d, 3, (const int64_t[]){3, 5, 2}, g, out));
  ASSERT_EQ(em_dl_dataset_len(out[0]), 3);
  ASSERT_EQ(em_dl_dataset_len(out[1]), 5);
  ASSERT_EQ(em_dl_dataset_len(out[2]), 2);
  int seen[10] = {0};
  int64_t order[10];
  int k = 0;
  for (int p = 0; p < 3; p++)
    for (int64_t i = 0; i < em_dl_dataset_len(out[p]); i++) {
      int64_t l = label_of(out[p], i);
      ASSERT_TRUE(l >= 0 && l < 10 && !seen[l]);
      seen[l] = 1;
      order[k++] = l;
    }
  /* documented: the splits cut one randperm(10, g) in order */
  em_generator_set_seed(g, 42);
  em_tensor *perm = em_tensor_randperm(10, EM_INT64, g);
  for (int i = 0; i < 10; i++) ASSERT_EQ(order[i], em_test_get(perm, i));
  em_tensor_release(perm);
  for (int p = 0; p < 3; p++) em_dl_dataset_release(out[p]);
  ASSERT_ERR(em_dl_random_split(d, 2, (const int64_t[]){3, 5}, g, out), EM_ERR_INVALID,
             "Sum of input lengths does not equal the length of the input dataset!");
  /* fractions: floor(10 * f) = 3, 3, 3, remainder 1 to the first */
  ASSERT_OK(em_dl_random_split_fractions(d, 3, (const double[]){0.3, 0.3, 0.4}, g, out));
  ASSERT_EQ(em_dl_dataset_len(out[0]), 3);
  ASSERT_EQ(em_dl_dataset_len(out[1]), 3);
  ASSERT_EQ(em_dl_dataset_len(out[2]), 4);
  for (int p = 0; p < 3; p++) em_dl_dataset_release(out[p]);
  ASSERT_OK(em_dl_random_split_fractions(d, 3, (const double[]){0.25, 0.25, 0.5}, g, out));
  ASSERT_EQ(em_dl_dataset_len(out[0]), 3); /* 2, 2, 5 + remainder 1 */
  ASSERT_EQ(em_dl_dataset_len(out[1]), 2);
  ASSERT_EQ(em_dl_dataset_len(out[2]), 5);
  for (int p = 0; p < 3; p++) em_dl_dataset_release(out[p]);
  ASSERT_ERR(em_dl_random_split_fractions(d, 2, (const double[]){0.5, 0.6}, g, out),
             EM_ERR_INVALID, "not 1");
  ASSERT_ERR(em_dl_random_split_fractions(d, 2, (const double[]){1.5, -0.5}, g, out),
             EM_ERR_INVALID, "Fraction at index 0 is not between 0 and 1");
  em_generator_destroy(g);
  em_dl_dataset_release(d);
}

EM_TEST(default_collate) {
  em_dl_dataset *d = make_xy(6, NULL, NULL);
  em_dl_sample s[3] = {{0}, {0}, {0}};
  for (int i = 0; i < 3; i++) ASSERT_OK(em_dl_dataset_get(d, 4 - 2 * i, &s[i]));
  em_dl_batch b;
  ASSERT_OK(em_dl_collate(em_dl_default_collate, NULL, 3, s, &b));
  ASSERT_EQ(b.n, 2);
  ASSERT_SHAPE(b.t[0], 3, 3);
  ASSERT_EQ(em_tensor_dtype(b.t[0]), EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(b.t[0], ((double[]){40, 41, 42, 20, 21, 22, 0, 1, 2}), 0, 0);
  ASSERT_SHAPE(b.t[1], 3);
  ASSERT_EQ(em_tensor_dtype(b.t[1]), EM_INT64);
  ASSERT_TENSOR_CLOSE(b.t[1], ((double[]){4, 2, 0}), 0, 0);
  ASSERT_EQ(b.worker, -1);
  em_dl_batch_release(&b);
  ASSERT_EQ(b.n, 0);
  /* default_convert: the sample unchanged */
  ASSERT_OK(em_dl_collate(em_dl_default_convert, NULL, 1, s, &b));
  ASSERT_SHAPE(b.t[0], 3);
  ASSERT_TENSOR_CLOSE(b.t[0], ((double[]){40, 41, 42}), 0, 0);
  em_dl_batch_release(&b);
  /* mismatches */
  em_dl_sample odd = {0};
  ASSERT_OK(em_dl_sample_push(&odd, em_tensor_zeros(EM_DIMS(4), EM_FLOAT32)));
  ASSERT_OK(em_dl_sample_push(&odd, em_tensor_zeros(0, NULL, EM_INT64)));
  em_dl_sample two[2] = {s[0], odd};
  ASSERT_ERR(em_dl_collate(NULL, NULL, 2, two, &b), EM_ERR_SHAPE,
             "stack expects each tensor to be equal size, but got [3] at entry 0 and [4] at entry 1 (field 0)");
  em_dl_sample_release(&odd);
  /* mixed dtypes stack in the promoted type, as torch.stack: float32 and
   * float64 in float64, int64 and float32 in float32 */
  ASSERT_OK(em_dl_sample_push(&odd, em_tensor_full(EM_DIMS(3), em_scalar_float(0.1), EM_FLOAT64)));
  ASSERT_OK(em_dl_sample_push(&odd, em_tensor_full(0, NULL, em_scalar_float(2.5), EM_FLOAT32)));
  two[1] = odd;
  ASSERT_OK(em_dl_collate(NULL, NULL, 2, two, &b));
  ASSERT_EQ(em_tensor_dtype(b.t[0]), EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(b.t[0], ((double[]){40, 41, 42, 0.1, 0.1, 0.1}), 0, 0);
  ASSERT_EQ(em_tensor_dtype(b.t[1]), EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(b.t[1], ((double[]){4, 2.5}), 0, 0);
  em_dl_batch_release(&b);
  em_dl_sample_release(&odd);
  ASSERT_OK(em_dl_sample_push(&odd, em_tensor_zeros(EM_DIMS(3), EM_FLOAT32)));
  two[1] = odd;
  ASSERT_ERR(em_dl_collate(NULL, NULL, 2, two, &b), EM_ERR_INVALID,
             "each element in list of batch should be of equal size (sample 0 has 2 fields, sample 1 has 1)");
  em_dl_sample_release(&odd);
  ASSERT_ERR(em_dl_collate(NULL, NULL, 0, s, &b), EM_ERR_INVALID, "empty batch");
  for (int i = 0; i < 3; i++) em_dl_sample_release(&s[i]);
  ASSERT_ERR(em_dl_sample_push(&odd, NULL), EM_ERR_INVALID, "NULL tensor");
  em_dl_dataset_release(d);
}

/* A user collate: the sum of labels as an int64 0-dim tensor allocated in
 * the batch builder, a tensor made elsewhere (copied in), and meta bytes. */
static em_status sum_collate(void *ctx, int n, em_dl_sample *s, em_dl_batch_builder *b) {
  em_tensor *t = em_dl_batch_builder_alloc(b, 0, NULL, EM_INT64);
  if (!t) return em_last_status();
  int64_t sum = 0;
  for (int i = 0; i < n; i++) sum += (int64_t)em_test_get(s[i].t[1], 0);
  *(int64_t *)em_tensor_data(t) = sum;
  em_status st = em_dl_batch_builder_add(b, t);
  em_tensor_release(t);
  if (st) return st;
  em_tensor *other = em_tensor_full(EM_DIMS(2), em_scalar_float(0.5), EM_FLOAT64);
  st = em_dl_batch_builder_add(b, other);
  em_tensor_release(other);
  if (st) return st;
  char meta[32];
  int len = snprintf(meta, sizeof meta, "n=%d", n);
  return em_dl_batch_builder_set_meta(b, meta, (size_t)len + 1);
}

EM_TEST(user_collate) {
  em_dl_dataset *d = make_xy(6, NULL, NULL);
  em_dl_sample s[4] = {{0}, {0}, {0}, {0}};
  for (int i = 0; i < 4; i++) ASSERT_OK(em_dl_dataset_get(d, i + 1, &s[i]));
  em_dl_batch b;
  ASSERT_OK(em_dl_collate(sum_collate, NULL, 4, s, &b));
  ASSERT_EQ(b.n, 2);
  ASSERT_SCALAR_SHAPE(b.t[0]);
  ASSERT_EQ(em_test_get(b.t[0], 0), 1 + 2 + 3 + 4);
  ASSERT_TENSOR_CLOSE(b.t[1], ((double[]){0.5, 0.5}), 0, 0);
  ASSERT_EQ(b.meta_len, 4);
  ASSERT_STREQ((const char *)b.meta, "n=4");
  em_dl_batch_release(&b);
  for (int i = 0; i < 4; i++) em_dl_sample_release(&s[i]);
  em_dl_dataset_release(d);
}

/* A user map-style dataset: sample i is (i * i) as int32, failing at 13. */
static int64_t sq_len(void *ctx) { return 20; }
static em_status sq_get(void *ctx, int64_t i, em_dl_sample *out) {
  if (i == 13) return em_set_error(EM_ERR_INVALID, "squares: 13 is unlucky");
  int32_t v = (int32_t)(i * i);
  return em_dl_sample_push(out, em_tensor_from_data(&v, 0, NULL, EM_INT32));
}
static int destroyed;
static void sq_destroy(void *ctx) { destroyed++; }

EM_TEST(user_dataset) {
  static const em_dl_dataset_ops ops = {.name = "Squares", .len = sq_len, .get = sq_get,
                                        .destroy = sq_destroy};
  em_dl_dataset *d = em_dl_dataset_create(&ops, NULL);
  ASSERT_NOTNULL(d);
  ASSERT_STREQ(em_dl_dataset_name(d), "Squares");
  em_dl_sample s = {0};
  ASSERT_OK(em_dl_dataset_get(d, 7, &s));
  ASSERT_EQ(em_test_get(s.t[0], 0), 49);
  em_dl_sample_release(&s);
  ASSERT_ERR(em_dl_dataset_get(d, 13, &s), EM_ERR_INVALID, "squares: 13 is unlucky");
  ASSERT_EQ(s.n, 0);
  em_dl_dataset_retain(d);
  em_dl_dataset_release(d);
  ASSERT_EQ(destroyed, 0);
  em_dl_dataset_release(d);
  ASSERT_EQ(destroyed, 1);
  em_dl_dataset_ops both = ops;
  both.iter_next = (void *)sq_get;
  ASSERT_PNULL_ERR(em_dl_dataset_create(&both, NULL), EM_ERR_INVALID, "set either get");
  em_dl_dataset_ops nolen = {.get = sq_get};
  ASSERT_PNULL_ERR(em_dl_dataset_create(&nolen, NULL), EM_ERR_INVALID, "needs len");
}

/* The main process reads a slot only through checked copies: every field
 * a worker could corrupt is refused with a clear error. */
EM_TEST(slot_read_refuses_corrupt_slots) {
  const size_t cap = 1 << 16;
  char *slot = aligned_alloc(4096, EM_DL_SLOT_HDR + cap);
  em__dl_slot_header *h = (em__dl_slot_header *)slot;
  em_dl_batch_builder b;
  ASSERT_OK(em__dl_builder_init_slot(&b, slot + EM_DL_SLOT_HDR, cap));
  em_tensor *t = em_dl_batch_builder_alloc(&b, EM_DIMS(4), EM_FLOAT32);
  for (int i = 0; i < 4; i++) ((float *)em_tensor_data(t))[i] = (float)i;
  ASSERT_OK(em_dl_batch_builder_add(&b, t));
  em_tensor_release(t);
  em_tensor *heap = em_tensor_full(EM_DIMS(2, 3), em_scalar_int(7), EM_INT64); /* copied in */
  ASSERT_OK(em_dl_batch_builder_add(&b, heap));
  em_tensor_release(heap);
  ASSERT_OK(em__dl_builder_write(&b, h, cap, true));
  em__dl_builder_deinit(&b);
  em__dl_slot_header good = *h, hc;
  em__dl_tdesc *d = NULL;
  ASSERT_OK(em__dl_slot_read(slot, cap, "w", &hc, &d));
  ASSERT_EQ(hc.n, 2);
  ASSERT_EQ(d[0].dtype, EM_FLOAT32);
  ASSERT_EQ(d[1].ndim, 2);
  ASSERT_EQ(d[1].shape[1], 3);
  em__dl_tdesc good0 = d[0];
  free(d);
  em__dl_tdesc *d0 = (em__dl_tdesc *)(slot + EM_DL_SLOT_HDR + good.desc_off);
#define EXPECT_CORRUPT(what, change)                                            \
  do {                                                                          \
    *h = good;                                                                  \
    *d0 = good0;                                                                \
    change;                                                                     \
    d = (em__dl_tdesc *)1;                                                      \
    ASSERT_ERR(em__dl_slot_read(slot, cap, "worker 3", &hc, &d), EM_ERR_STATE,  \
               "worker 3: corrupt batch in shared memory (" what);              \
    ASSERT_TRUE(d == NULL);                                                     \
  } while (0)
  EXPECT_CORRUPT("bad magic", h->magic ^= 1);
  EXPECT_CORRUPT("65537 tensors", h->n = EM_DL_MAX_TENSORS + 1);
  EXPECT_CORRUPT("-1 tensors", h->n = -1);
  EXPECT_CORRUPT("meta out of bounds", h->meta_off = cap - 2; h->meta_len = 3);
  EXPECT_CORRUPT("tensor descriptors out of bounds", h->desc_off += 8);
  EXPECT_CORRUPT("tensor descriptors out of bounds", h->desc_off = cap + 64);
  EXPECT_CORRUPT("tensor descriptors out of bounds", h->n = (int)(cap / sizeof(em__dl_tdesc)) + 1);
  EXPECT_CORRUPT("tensor 0: dtype 99", d0->dtype = 99);
  EXPECT_CORRUPT("tensor 0: ndim 17", d0->ndim = 17);
  EXPECT_CORRUPT("tensor 0: reaches past the slot", d0->offset = cap / 4);
  EXPECT_CORRUPT("tensor 0: negative size or stride", d0->strides[0] = -1);
  EXPECT_CORRUPT("tensor 0: geometry overflows", d0->shape[0] = INT64_MAX; d0->strides[0] = 2);
  EXPECT_CORRUPT("tensor 0: shape overflows", d0->ndim = 3; d0->shape[0] = 0;
                 d0->shape[1] = INT64_MAX; d0->shape[2] = 2);
#undef EXPECT_CORRUPT
  free(slot);
}

/* ---- user mistakes in datasets ------------------------------------------------------------ */

static int64_t wide_len(void *ctx) { return 4; }
static int64_t big_len(void *ctx) { return INT64_MAX / 2 + 1; }
/* fills 33 fields (writing n directly, as a careless callback might) */
static em_status wide_get(void *ctx, int64_t i, em_dl_sample *out) {
  for (int k = 0; k < 3; k++) out->t[k] = em_tensor_scalar(em_scalar_int(k), EM_INT64);
  out->n = *(int *)ctx;
  return EM_OK;
}

EM_TEST(dataset_mistakes) {
  int n = 33;
  static const em_dl_dataset_ops ops = {.name = "Wide", .len = wide_len, .get = wide_get};
  em_dl_dataset *d = em_dl_dataset_create(&ops, &n);
  em_dl_sample s;
  /* the three fields it made are released (ASan would see a leak) */
  ASSERT_ERR(em_dl_dataset_get(d, 1, &s), EM_ERR_INVALID,
             "Wide: get(1) returned a sample of 33 fields (0 to 32)");
  n = -2;
  ASSERT_ERR(em_dl_dataset_get(d, 1, &s), EM_ERR_INVALID, "returned a sample of -2 fields");
  n = 3;
  ASSERT_OK(em_dl_dataset_get(d, 1, &s));
  ASSERT_EQ(s.n, 3);
  em_dl_sample_release(&s);
  ASSERT_ERR(em_dl_sample_push(NULL, em_tensor_scalar(em_scalar_int(1), EM_INT64)),
             EM_ERR_INVALID, "NULL sample");
  ASSERT_TRUE(em_dl_dataset_retain(NULL) == NULL);
  /* lengths that add up past 2^63 */
  static const em_dl_dataset_ops big_ops = {.name = "Big", .len = big_len, .get = wide_get};
  em_dl_dataset *big = em_dl_dataset_create(&big_ops, &n);
  em_dl_dataset *two[2] = {big, big};
  ASSERT_NULL_ERR(em_dl_concat_dataset_create(2, two), EM_ERR_INVALID, "add up past 2^63");
  int64_t lens[3] = {INT64_MAX, INT64_MAX, 2};
  em_dl_dataset *parts[3];
  ASSERT_ERR(em_dl_random_split(d, 3, lens, NULL, parts), EM_ERR_INVALID, "add up past 2^63");
  em_dl_dataset_release(big);
  em_dl_dataset_release(d);
}

EM_TEST_MAIN()
