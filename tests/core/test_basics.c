/* dtypes, promotion, half/bfloat16, storage, creation, copies and views. */
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "tests/harness.h"

EM_TEST(dtype_table) {
  ASSERT_STREQ(em_dtype_name(EM_FLOAT32), "float32");
  ASSERT_STREQ(em_dtype_name(EM_BFLOAT16), "bfloat16");
  ASSERT_EQ(em_dtype_size(EM_FLOAT16), 2);
  ASSERT_EQ(em_dtype_size(EM_INT64), 8);
  ASSERT_EQ(em_dtype_from_name("long"), EM_INT64);
  ASSERT_EQ(em_dtype_from_name("torch.float"), EM_FLOAT32);
  ASSERT_EQ(em_dtype_from_name("nonsense"), EM_DTYPE_UNDEFINED);
}

/* PyTorch's promote_types table, written out by hand. */
EM_TEST(promote_types_matches_pytorch) {
  struct { em_dtype a, b, r; } cases[] = {
      {EM_UINT8, EM_INT8, EM_INT16},      {EM_UINT8, EM_INT32, EM_INT32},
      {EM_INT8, EM_INT64, EM_INT64},      {EM_BOOL, EM_UINT8, EM_UINT8},
      {EM_BOOL, EM_BOOL, EM_BOOL},        {EM_INT64, EM_FLOAT16, EM_FLOAT16},
      {EM_FLOAT16, EM_BFLOAT16, EM_FLOAT32}, {EM_BFLOAT16, EM_FLOAT64, EM_FLOAT64},
      {EM_INT32, EM_FLOAT32, EM_FLOAT32}, {EM_FLOAT32, EM_FLOAT64, EM_FLOAT64},
      {EM_UINT8, EM_BFLOAT16, EM_BFLOAT16}, {EM_INT16, EM_UINT8, EM_INT16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ASSERT_EQ(em_promote_types(cases[i].a, cases[i].b), cases[i].r);
    ASSERT_EQ(em_promote_types(cases[i].b, cases[i].a), cases[i].r);
  }
  ASSERT_TRUE(em_can_cast(EM_INT64, EM_FLOAT32));
  ASSERT_TRUE(!em_can_cast(EM_FLOAT32, EM_INT64));
  ASSERT_TRUE(!em_can_cast(EM_INT32, EM_BOOL));
  ASSERT_TRUE(em_can_cast(EM_BOOL, EM_INT8));
}

EM_TEST(half_and_bfloat16_conversions) {
  /* known bit patterns */
  ASSERT_EQ(em_float_to_half(1.0f), 0x3c00);
  ASSERT_EQ(em_float_to_half(-2.0f), 0xc000);
  ASSERT_EQ(em_float_to_half(65504.0f), 0x7bff);
  ASSERT_EQ(em_float_to_half(65520.0f), 0x7c00);     /* rounds to inf */
  ASSERT_EQ(em_float_to_half(5.960464477539063e-8f), 0x0001); /* smallest subnormal */
  ASSERT_EQ(em_float_to_half(1.0009765625f), 0x3c01);
  ASSERT_EQ(em_float_to_half(1.00048828125f), 0x3c00); /* tie -> even */
  ASSERT_EQ(em_float_to_half(1.00146484375f), 0x3c02); /* tie -> even (up) */
  ASSERT_TRUE(isnan(em_half_to_float(em_float_to_half(NAN))));
  ASSERT_CLOSE(em_half_to_float(0x3555), 0.333251953125, 0, 0);
  ASSERT_CLOSE(em_half_to_float(0x0001), 5.960464477539063e-8, 0, 0);
  ASSERT_EQ(em_float_to_bf16(1.0f), 0x3f80);
  ASSERT_EQ(em_float_to_bf16(1.00390625f), 0x3f80);  /* tie -> even */
  ASSERT_EQ(em_float_to_bf16(1.01171875f), 0x3f82);  /* tie -> even (up) */
  ASSERT_CLOSE(em_bf16_to_float(0x4049), 3.140625, 0, 0);
  /* every half round-trips exactly through float */
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = em_half_to_float((uint16_t)h);
    if (isnan(f)) continue;
    ASSERT_EQ(em_float_to_half(f), h);
  }
}

EM_TEST(creation_fills) {
  em_tensor *z = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  ASSERT_SHAPE(z, 2, 3);
  ASSERT_TENSOR_CLOSE(z, ((double[]){0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor *o = em_tensor_ones(EM_DIMS(4), EM_INT8);
  ASSERT_TENSOR_CLOSE(o, ((double[]){1, 1, 1, 1}), 0, 0);
  em_tensor *f = em_tensor_full(EM_DIMS(3), em_scalar_float(2.5), EM_BFLOAT16);
  ASSERT_TENSOR_CLOSE(f, ((double[]){2.5, 2.5, 2.5}), 0, 0);
  em_tensor *big = em_tensor_full(EM_DIMS(2), em_scalar_int(9007199254740993LL), EM_INT64);
  ASSERT_EQ(*(int64_t *)em_tensor_data(big), 9007199254740993LL); /* not rounded via double */
  em_tensor *e = em_tensor_zeros(EM_DIMS(0, 5), EM_FLOAT64);
  ASSERT_EQ(e->numel, 0);
  ASSERT_TRUE(em_tensor_data(e) == NULL);
  em_tensor *s = em_tensor_scalar(em_scalar_int(7), EM_DTYPE_UNDEFINED);
  ASSERT_EQ(s->ndim, 0);
  ASSERT_EQ(s->dtype, EM_INT64);
  ASSERT_CLOSE(em_tensor_item_double(s), 7, 0, 0);
  em_tensor_release(z), em_tensor_release(o), em_tensor_release(f);
  em_tensor_release(big), em_tensor_release(e), em_tensor_release(s);
}

EM_TEST(creation_errors) {
  ASSERT_NULL_ERR(em_tensor_zeros(EM_DIMS(2, -1), EM_FLOAT32), EM_ERR_INVALID, "negative dimension -1");
  ASSERT_NULL_ERR(em_tensor_zeros(EM_DIMS(1LL << 40, 1LL << 40), EM_FLOAT32), EM_ERR_INVALID,
                  "overflow");
  ASSERT_NULL_ERR(em_tensor_empty(EM_DIMS(1LL << 62), EM_FLOAT64), EM_ERR_NOMEM, "");
  int64_t shape[EM_MAX_DIMS + 1] = {0};
  ASSERT_NULL_ERR(em_tensor_zeros(EM_MAX_DIMS + 1, shape, EM_FLOAT32), EM_ERR_INVALID,
                  "number of dims");
  ASSERT_NULL_ERR(em_tensor_zeros(EM_DIMS(2), (em_dtype)42), EM_ERR_DTYPE, "invalid dtype 42");
}

EM_TEST(item_requires_one_element) {
  em_tensor *t = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  em_scalar s;
  ASSERT_ERR(em_tensor_item(t, &s), EM_ERR_INVALID, "2 elements cannot be converted to Scalar");
  em_tensor_release(t);
}

/* Values every dtype holds exactly go through each of the 100 pairs. */
EM_TEST(copy_converts_every_pair) {
  const double vals[] = {0, 1, 2, 3, 5, 7, 100, 127};
  for (int s = 0; s < EM_DTYPE_COUNT; s++) {
    for (int d = 0; d < EM_DTYPE_COUNT; d++) {
      em_tensor *src = em_tensor_empty(EM_DIMS(8), (em_dtype)s);
      em_tensor *dst = em_tensor_empty(EM_DIMS(8), (em_dtype)d);
      double expect[8];
      for (int i = 0; i < 8; i++) {
        double v = s == EM_BOOL ? (vals[i] != 0) : vals[i];
        em__store_f64((char *)src->storage->data + i * em_dtype_size((em_dtype)s), (em_dtype)s, v);
        expect[i] = d == EM_BOOL ? (v != 0) : v;
      }
      ASSERT_OK(em_tensor_copy_(dst, src));
      ASSERT_TENSOR_CLOSE_N(dst, expect, 8, 0, 0);
      em_tensor_release(src);
      em_tensor_release(dst);
    }
  }
}

/* The edges, computed by hand: truncation toward zero, modular narrowing of
 * integers, anything non-zero is true. */
EM_TEST(copy_conversion_edges) {
  em_tensor *f = em_tensor_from_data((float[]){2.75f, -3.5f, 0.5f, -0.0f}, EM_DIMS(4), EM_FLOAT32);
  em_tensor *i = em_tensor_empty(EM_DIMS(4), EM_INT64);
  em_tensor *b = em_tensor_empty(EM_DIMS(4), EM_BOOL);
  ASSERT_OK(em_tensor_copy_(i, f));
  ASSERT_TENSOR_CLOSE(i, ((double[]){2, -3, 0, 0}), 0, 0);
  ASSERT_OK(em_tensor_copy_(b, f));
  ASSERT_TENSOR_CLOSE(b, ((double[]){1, 1, 1, 0}), 0, 0);
  em_tensor *w = em_tensor_from_data((int16_t[]){300, -1, -129, 255}, EM_DIMS(4), EM_INT16);
  em_tensor *i8 = em_tensor_empty(EM_DIMS(4), EM_INT8), *u8 = em_tensor_empty(EM_DIMS(4), EM_UINT8);
  ASSERT_OK(em_tensor_copy_(i8, w));
  ASSERT_TENSOR_CLOSE(i8, ((double[]){44, -1, 127, -1}), 0, 0);
  ASSERT_OK(em_tensor_copy_(u8, w));
  ASSERT_TENSOR_CLOSE(u8, ((double[]){44, 255, 127, 255}), 0, 0);
  em_tensor *h = em_tensor_empty(EM_DIMS(4), EM_FLOAT16);
  em_tensor *bf = em_tensor_empty(EM_DIMS(4), EM_BFLOAT16);
  em_tensor *third = em_tensor_from_data((double[]){1.0 / 3, 1e6, -70000, 1e-8}, EM_DIMS(4), EM_FLOAT64);
  ASSERT_OK(em_tensor_copy_(h, third));
  ASSERT_TENSOR_CLOSE(h, ((double[]){0.333251953125, INFINITY, -INFINITY, 0}), 0, 0);
  ASSERT_OK(em_tensor_copy_(bf, third));
  ASSERT_TENSOR_CLOSE(bf, ((double[]){0.333984375, 999424, -70144, 1.0011717677116394e-08}), 0, 0);
  ASSERT_OK(em_tensor_copy_(h, bf)); /* the uint16 pair that must convert */
  ASSERT_TENSOR_CLOSE(h, ((double[]){0.333984375, INFINITY, -INFINITY, 0}), 0, 0);
  em_tensor *list[] = {f, i, b, w, i8, u8, h, bf, third};
  for (size_t k = 0; k < sizeof list / sizeof list[0]; k++) em_tensor_release(list[k]);
}

EM_TEST(copy_float_to_int_saturates) {
  em_tensor *f = em_tensor_from_data((float[]){1e10f, -1e10f, NAN, 3.9f, -3.9f}, EM_DIMS(5), EM_FLOAT32);
  em_tensor *i = em_tensor_empty(EM_DIMS(5), EM_INT32);
  ASSERT_OK(em_tensor_copy_(i, f));
  ASSERT_TENSOR_CLOSE(i, ((double[]){2147483647, -2147483648.0, 0, 3, -3}), 0, 0);
  em_tensor_release(f), em_tensor_release(i);
}

EM_TEST(copy_broadcasts_and_handles_strides) {
  em_tensor *row = em_tensor_from_data((double[]){1, 2, 3}, EM_DIMS(3), EM_FLOAT64);
  em_tensor *m = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  ASSERT_OK(em_tensor_copy_(m, row));
  ASSERT_TENSOR_CLOSE(m, ((double[]){1, 2, 3, 1, 2, 3}), 0, 0);
  em_tensor *mt = em_tensor_transpose(m, 0, 1); /* [3, 2] non-contiguous */
  em_tensor *c = em_tensor_contiguous(mt);
  ASSERT_SHAPE(c, 3, 2);
  ASSERT_TRUE(em_tensor_is_contiguous(c));
  ASSERT_TENSOR_CLOSE(c, ((double[]){1, 1, 2, 2, 3, 3}), 0, 0);
  em_tensor *bad = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  ASSERT_ERR(em_tensor_copy_(m, bad), EM_ERR_SHAPE, "must match the size");
  ASSERT_ERR(em_tensor_copy_(row, m), EM_ERR_SHAPE, "doesn't match the broadcast shape");
  em_tensor_release(row), em_tensor_release(m), em_tensor_release(mt);
  em_tensor_release(c), em_tensor_release(bad);
}

EM_TEST(copy_with_overlap_reads_old_values) {
  /* x[1:] = x[:-1] must shift, not smear */
  em_tensor *x = em_tensor_from_data((float[]){1, 2, 3, 4, 5}, EM_DIMS(5), EM_FLOAT32);
  em_tensor *a = em_tensor_slice(x, 0, 1, INT64_MAX, 1), *b = em_tensor_slice(x, 0, 0, 4, 1);
  ASSERT_OK(em_tensor_copy_(a, b));
  ASSERT_TENSOR_CLOSE(x, ((double[]){1, 1, 2, 3, 4}), 0, 0);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(x);
}

EM_TEST(writing_into_expanded_tensor_is_an_error) {
  em_tensor *x = em_tensor_zeros(EM_DIMS(1, 3), EM_FLOAT32);
  em_tensor *e = em_tensor_expand(x, EM_DIMS(4, 3));
  ASSERT_ERR(em_tensor_copy_(e, x), EM_ERR_INVALID, "more than one element");
  em_tensor_release(e), em_tensor_release(x);
}

EM_TEST(views_share_storage) {
  em_tensor *x = em_tensor_from_data((float[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, EM_DIMS(3, 4),
                                     EM_FLOAT32);
  em_tensor *v = em_tensor_view(x, EM_DIMS(2, -1));
  ASSERT_SHAPE(v, 2, 6);
  ASSERT_TRUE(v->storage == x->storage && v->base == x);
  em_tensor *t = em_tensor_transpose(x, 0, 1);
  ASSERT_SHAPE(t, 4, 3);
  ASSERT_TENSOR_CLOSE(t, ((double[]){0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}), 0, 0);
  ASSERT_NULL_ERR(em_tensor_view(t, EM_DIMS(12)), EM_ERR_SHAPE, "use reshape");
  em_tensor *r = em_tensor_reshape(t, EM_DIMS(12));
  ASSERT_TRUE(r->storage != x->storage);
  ASSERT_TENSOR_CLOSE(r, ((double[]){0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}), 0, 0);
  em_tensor *s = em_tensor_slice(x, 1, 1, INT64_MAX, 2); /* x[:, 1::2] */
  ASSERT_SHAPE(s, 3, 2);
  ASSERT_TENSOR_CLOSE(s, ((double[]){1, 3, 5, 7, 9, 11}), 0, 0);
  em_tensor *sel = em_tensor_select(x, 0, -1);
  ASSERT_TENSOR_CLOSE(sel, ((double[]){8, 9, 10, 11}), 0, 0);
  em_tensor *n = em_tensor_narrow(x, 1, 2, 2);
  ASSERT_TENSOR_CLOSE(n, ((double[]){2, 3, 6, 7, 10, 11}), 0, 0);
  em_tensor *u = em_tensor_unsqueeze(sel, 0);
  ASSERT_SHAPE(u, 1, 4);
  em_tensor *e = em_tensor_expand(u, EM_DIMS(2, -1));
  ASSERT_TENSOR_CLOSE(e, ((double[]){8, 9, 10, 11, 8, 9, 10, 11}), 0, 0);
  em_tensor *sq = em_tensor_squeeze(u);
  ASSERT_SHAPE(sq, 4);
  em_tensor *fl = em_tensor_flatten(x, 0, -1);
  ASSERT_SHAPE(fl, 12);
  em_tensor *uf = em_tensor_unflatten(fl, 0, EM_DIMS(2, -1, 3));
  ASSERT_SHAPE(uf, 2, 2, 3);
  em_tensor *p = em_tensor_permute(uf, EM_DIMS(2, 0, 1));
  ASSERT_SHAPE(p, 3, 2, 2);
  ASSERT_EQ(em_test_get(p, 1), 3);
  /* writes through a view show in the base */
  ASSERT_OK(em_tensor_fill_(s, em_scalar_int(-1)));
  ASSERT_TENSOR_CLOSE(x, ((double[]){0, -1, 2, -1, 4, -1, 6, -1, 8, -1, 10, -1}), 0, 0);
  ASSERT_EQ(em_tensor_version(x), 1);
  em_tensor *list[] = {v, t, r, s, sel, n, u, e, sq, fl, uf, p, x};
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) em_tensor_release(list[i]);
}

EM_TEST(view_errors) {
  em_tensor *x = em_tensor_zeros(EM_DIMS(2, 3), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_view(x, EM_DIMS(4, -1)), EM_ERR_SHAPE, "shape '[4, -1]' is invalid for input of size 6");
  ASSERT_NULL_ERR(em_tensor_view(x, EM_DIMS(-1, -1)), EM_ERR_INVALID, "only one dimension");
  ASSERT_NULL_ERR(em_tensor_select(x, 2, 0), EM_ERR_INDEX, "dimension out of range");
  ASSERT_NULL_ERR(em_tensor_select(x, 1, 3), EM_ERR_INDEX, "index 3 is out of bounds for dimension 1 with size 3");
  ASSERT_NULL_ERR(em_tensor_narrow(x, 1, 2, 2), EM_ERR_INDEX, "exceeds dimension size");
  ASSERT_NULL_ERR(em_tensor_slice(x, 0, 0, 1, 0), EM_ERR_INVALID, "step must be positive");
  ASSERT_NULL_ERR(em_tensor_expand(x, EM_DIMS(2, 4)), EM_ERR_SHAPE, "must match the existing size");
  ASSERT_NULL_ERR(em_tensor_expand(x, EM_DIMS(3)), EM_ERR_SHAPE, "number of sizes provided");
  ASSERT_NULL_ERR(em_tensor_permute(x, EM_DIMS(0, 0)), EM_ERR_INVALID, "appears multiple times");
  ASSERT_NULL_ERR(em_tensor_as_strided(x, 1, (int64_t[]){4}, (int64_t[]){2}, 0), EM_ERR_INDEX, "storage holds 6");
  em_tensor_release(x);
}

EM_TEST(split_and_chunk) {
  em_tensor *x = em_tensor_from_data((int32_t[]){0, 1, 2, 3, 4, 5, 6}, EM_DIMS(7), EM_INT32);
  em_tensor **parts;
  int n;
  ASSERT_OK(em_tensor_split(x, 3, 0, &parts, &n));
  ASSERT_EQ(n, 3);
  ASSERT_TENSOR_CLOSE(parts[2], ((double[]){6}), 0, 0);
  em_tensor_list_release(parts, n);
  ASSERT_OK(em_tensor_chunk(x, 2, 0, &parts, &n));
  ASSERT_EQ(n, 2);
  ASSERT_TENSOR_CLOSE(parts[0], ((double[]){0, 1, 2, 3}), 0, 0);
  ASSERT_TENSOR_CLOSE(parts[1], ((double[]){4, 5, 6}), 0, 0);
  em_tensor_list_release(parts, n);
  ASSERT_OK(em_tensor_split_sizes(x, 3, (int64_t[]){1, 0, 6}, 0, &parts));
  ASSERT_EQ(parts[1]->numel, 0);
  em_tensor_list_release(parts, 3);
  ASSERT_ERR(em_tensor_split_sizes(x, 2, (int64_t[]){1, 2}, 0, &parts), EM_ERR_SHAPE, "sum exactly to 7");
  em_tensor_release(x);
}

static int blob_deleted;
static void blob_free(void *p, void *ctx) {
  ASSERT_TRUE(ctx == &blob_deleted);
  blob_deleted++;
  free(p);
}

EM_TEST(from_blob_calls_deleter_once) {
  float *buf = malloc(6 * sizeof(float));
  for (int i = 0; i < 6; i++) buf[i] = (float)i;
  em_tensor *t = em_tensor_from_blob(buf, EM_DIMS(2, 3), NULL, EM_FLOAT32, EM_DEVICE_CPU,
                                     blob_free, &blob_deleted);
  em_tensor *v = em_tensor_select(t, 0, 1);
  em_tensor_release(t);
  ASSERT_EQ(blob_deleted, 0);
  ASSERT_TENSOR_CLOSE(v, ((double[]){3, 4, 5}), 0, 0);
  em_tensor_release(v);
  ASSERT_EQ(blob_deleted, 1);
}

EM_TEST(config_reports_blas) {
  const char *info = em_blas_info();
  ASSERT_TRUE(info && strlen(info) > 0);
  ASSERT_TRUE(strstr(em_config_string(), "BLAS") != NULL);
  printf("  %s", em_config_string());
}

/* The thread pool survives fork(): a child forked while the parent's
 * workers sleep runs parallel ops (with workers of its own) to the end.
 * Each child has 10 s (alarm) for what takes milliseconds. */
static void fork_sum_ctx(void *ctx, int64_t b, int64_t e) {
  atomic_llong *acc = ctx;
  for (int64_t i = b; i < e; i++) atomic_fetch_add(acc, i);
}

EM_TEST(thread_pool_works_after_fork) {
  int prev = em_get_num_threads();
  em_set_num_threads(4);
  for (int round = 0; round < 20; round++) {
    atomic_llong acc = 0;
    em__parallel_for(1 << 16, 1, fork_sum_ctx, &acc); /* workers exist ... */
    ASSERT_EQ((long long)atomic_load(&acc), (long long)(1 << 16) * ((1 << 16) - 1) / 2);
    usleep(round % 2 ? 20000 : 100); /* ... asleep on the pool's condition variable, or spinning */
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
      alarm(10);
      for (int k = 0; k < 200; k++) {
        atomic_llong a = 0;
        em__parallel_for(1 << 16, 1, fork_sum_ctx, &a);
        if (atomic_load(&a) != (long long)(1 << 16) * ((1 << 16) - 1) / 2) _exit(2);
      }
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      EM_FAILF("round %d: the child %s %d", round, WIFEXITED(status) ? "exited" : "was killed by signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  em_set_num_threads(prev);
}

/* A pending interrupt request never cuts a kernel short: the op's result
 * is whole (only a backward stops between nodes). */
EM_TEST(interrupt_request_leaves_kernels_whole) {
  int prev = em_get_num_threads();
  em_set_num_threads(2);
  int64_t n = 1 << 20;
  em_tensor *a = em_tensor_ones(1, &n, EM_FLOAT32), *b = em_tensor_ones(1, &n, EM_FLOAT32);
  em_request_interrupt();
  em_tensor *c = em_tensor_add(a, b);
  em_clear_interrupt();
  ASSERT_NOTNULL(c);
  const float *p = em_tensor_data(c);
  for (int64_t i = 0; i < n; i++)
    if (p[i] != 2.0f) EM_FAILF("element %lld is %g", (long long)i, p[i]);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c);
  em_set_num_threads(prev);
}

EM_TEST_MAIN()
