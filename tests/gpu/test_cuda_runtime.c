/* The CUDA runtime layer on a real device: devices, streams and events,
 * the caching allocator (reuse, stats, record_stream, empty_cache, the
 * out-of-memory message), pinned memory and asynchronous copies, the
 * configuration string. Skips (77) without a CUDA device. */
#include "tests/gpu/gpu_util.h"

EM_TEST(devices) {
  REQUIRE_CUDA();
  ASSERT_TRUE(em_cuda_device_count() >= 1);
  ASSERT_STREQ(em_cuda_unavailable_reason(), "");
  char name[128];
  ASSERT_OK(em_cuda_device_name(0, name, sizeof name));
  ASSERT_TRUE(name[0] != '\0');
  ASSERT_OK(em_cuda_set_device(0));
  ASSERT_EQ(em_cuda_current_device(), 0);
  ASSERT_ERR(em_cuda_set_device(em_cuda_device_count()), EM_ERR_DEVICE, "is not available");
  ASSERT_OK(em_cuda_synchronize(-1));
  ASSERT_TRUE(strstr(em_config_string(), "CUDA: runtime") != NULL);
}

EM_TEST(streams_order_work_with_events) {
  REQUIRE_CUDA();
  em_cuda_stream *def = em_cuda_current_stream(0);
  ASSERT_NOTNULL(def);
  ASSERT_TRUE(def == em_cuda_default_stream(0));
  em_cuda_stream *s = em_cuda_stream_create(0, 0);
  ASSERT_NOTNULL(s);
  ASSERT_EQ(em_cuda_stream_device(s), 0);
  /* produce on the default stream, consume on s after waiting for it */
  em_tensor *x = g_values(EM_DIMS(1 << 20), EM_FLOAT32, -1, 1, 1), *g = g_to(x, GPU);
  em_tensor *y = em_tensor_mul_scalar(g, em_scalar_float(2));
  em_cuda_event *e = em_cuda_event_create(true), *e2 = em_cuda_event_create(true);
  ASSERT_NOTNULL(e);
  ASSERT_OK(em_cuda_event_record(e, NULL));
  ASSERT_OK(em_cuda_stream_wait_event(s, e));
  ASSERT_OK(em_cuda_set_current_stream(s));
  ASSERT_TRUE(em_cuda_current_stream(0) == s);
  em_tensor *z = em_tensor_add(y, g); /* runs on s, after y */
  ASSERT_OK(em_cuda_event_record(e2, s));
  ASSERT_ERR(em_cuda_stream_destroy(s), EM_ERR_STATE, "current stream");
  ASSERT_OK(em_cuda_set_current_stream(def));
  ASSERT_OK(em_cuda_stream_wait_stream(def, s));
  ASSERT_OK(em_cuda_event_synchronize(e2));
  ASSERT_TRUE(em_cuda_event_query(e2));
  float ms = -1;
  ASSERT_OK(em_cuda_event_elapsed_ms(e, e2, &ms));
  ASSERT_TRUE(ms >= 0);
  em_tensor *c = em_tensor_mul_scalar(x, em_scalar_float(3));
  ASSERT_GPU_CLOSE(z, c, 0, 0);
  ASSERT_OK(em_cuda_stream_synchronize(s));
  ASSERT_TRUE(em_cuda_stream_query(s));
  ASSERT_TRUE(em_cuda_stream_handle(s) != NULL);
  em_tensor_release(c), em_tensor_release(z), em_tensor_release(y), em_tensor_release(g), em_tensor_release(x);
  ASSERT_OK(em_cuda_stream_destroy(s));
  em_cuda_event_destroy(e), em_cuda_event_destroy(e2);
  em_cuda_event *t = em_cuda_event_create(false);
  ASSERT_TRUE(em_cuda_event_query(t)); /* never recorded: nothing to wait for */
  ASSERT_OK(em_cuda_event_synchronize(t));
  float m2;
  ASSERT_ERR(em_cuda_event_elapsed_ms(t, t, &m2), EM_ERR_INVALID, "enable_timing");
  em_cuda_event_destroy(t);
  ASSERT_ERR(em_cuda_set_current_stream(NULL), EM_ERR_INVALID, "NULL");
}

EM_TEST(caching_allocator_reuses_and_counts) {
  REQUIRE_CUDA();
  ASSERT_OK(em_cuda_synchronize(0));
  ASSERT_OK(em_cuda_empty_cache());
  em_cuda_memory_stats s0, s1, s2;
  ASSERT_OK(em_cuda_memory_stats_get(0, &s0));
  em_tensor *a = em_tensor_empty_on(EM_DIMS(1000), EM_FLOAT32, GPU); /* 4000 -> 4096 bytes */
  ASSERT_NOTNULL(a);
  void *pa = em_tensor_data(a);
  ASSERT_OK(em_cuda_memory_stats_get(0, &s1));
  ASSERT_EQ(s1.allocated - s0.allocated, 4096);
  ASSERT_EQ(s1.requested - s0.requested, 4000);
  ASSERT_TRUE(s1.reserved >= s0.reserved);
  em_tensor_release(a);
  em_tensor *b = em_tensor_empty_on(EM_DIMS(1000), EM_FLOAT32, GPU);
  ASSERT_TRUE(em_tensor_data(b) == pa); /* the cached block, same stream */
  ASSERT_OK(em_cuda_memory_stats_get(0, &s2));
  ASSERT_EQ(s2.num_device_allocs, s1.num_device_allocs);
  em_tensor_release(b);
  ASSERT_OK(em_cuda_reset_peak_memory_stats(0));
  ASSERT_OK(em_cuda_memory_stats_get(0, &s2));
  ASSERT_EQ(s2.peak_allocated, s2.allocated);
  ASSERT_OK(em_cuda_empty_cache());
  ASSERT_OK(em_cuda_memory_stats_get(0, &s2));
  ASSERT_EQ(s2.allocated, s0.allocated);
}

EM_TEST(record_stream_delays_reuse) {
  REQUIRE_CUDA();
  ASSERT_OK(em_cuda_synchronize(0));
  ASSERT_OK(em_cuda_empty_cache()); /* no free blocks left from earlier tests */
  em_cuda_stream *side = em_cuda_stream_create(0, 0);
  ASSERT_NOTNULL(side);
  em_tensor *a = em_tensor_empty_on(EM_DIMS(1 << 16), EM_FLOAT32, GPU);
  void *pa = em_tensor_data(a);
  ASSERT_OK(em_tensor_record_stream(a, side));
  em_tensor_release(a); /* pending until side's work (none yet) is done */
  em_cuda_memory_stats st;
  ASSERT_OK(em_cuda_memory_stats_get(0, &st));
  ASSERT_OK(em_cuda_stream_synchronize(side));
  em_tensor *b = em_tensor_empty_on(EM_DIMS(1 << 16), EM_FLOAT32, GPU);
  ASSERT_TRUE(em_tensor_data(b) == pa); /* side is idle: reused */
  em_tensor *cpu = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  ASSERT_ERR(em_tensor_record_stream(cpu, side), EM_ERR_DEVICE, "CUDA tensor");
  em_tensor_release(cpu), em_tensor_release(b);
  ASSERT_OK(em_cuda_stream_destroy(side));
}

EM_TEST(out_of_memory_is_a_clear_error) {
  REQUIRE_CUDA();
  /* far beyond any device: requested, allocated and reserved are stated */
  int64_t n = (int64_t)1 << 50;
  em_clear_error();
  em_tensor *t = em_tensor_empty_on(EM_DIMS(n), EM_UINT8, GPU);
  ASSERT_TRUE(t == NULL);
  ASSERT_EQ(em_last_status(), EM_ERR_NOMEM);
  ASSERT_TRUE(strstr(em_last_error(), "CUDA out of memory on device 0: tried to allocate") != NULL);
  ASSERT_TRUE(strstr(em_last_error(), "1125899906842624 bytes requested") != NULL);
  ASSERT_TRUE(strstr(em_last_error(), "allocated and") != NULL);
  ASSERT_TRUE(strstr(em_last_error(), "reserved") != NULL);
  em_cuda_memory_stats st;
  ASSERT_OK(em_cuda_memory_stats_get(0, &st));
  ASSERT_TRUE(st.num_ooms >= 1);
  /* the allocator still works */
  em_tensor *ok = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  em_tensor *g = g_to(ok, GPU);
  ASSERT_NOTNULL(g);
  em_tensor_release(g), em_tensor_release(ok);
}

EM_TEST(pinned_memory_and_async_copies) {
  REQUIRE_CUDA();
  em_tensor *x = g_values(EM_DIMS(256, 1024), EM_FLOAT32, -1, 1, 3);
  em_tensor *p = em_tensor_pin_memory(x);
  ASSERT_NOTNULL(p);
  ASSERT_TRUE(em_tensor_is_pinned(p));
  ASSERT_TRUE(!em_tensor_is_pinned(x));
  em_tensor *p2 = em_tensor_pin_memory(p);
  ASSERT_TRUE(p2 == p);
  em_tensor_release(p2);
  em_tensor *g = em_tensor_to_device_async(p, GPU, true); /* returns before the copy is done */
  ASSERT_NOTNULL(g);
  em_tensor *back = em_tensor_to_device_async(g, EM_DEVICE_CPU, true); /* into pinned memory */
  ASSERT_NOTNULL(back);
  ASSERT_TRUE(em_tensor_is_pinned(back));
  ASSERT_OK(em_cuda_stream_synchronize(em_cuda_current_stream(0)));
  ASSERT_GPU_CLOSE(back, x, 0, 0);
  /* freeing a pinned source right after an async copy is safe: the block
   * is reused only after the copy */
  em_tensor *q = em_tensor_pin_memory(x);
  em_tensor *gq = em_tensor_to_device_async(q, GPU, true);
  em_tensor_release(q);
  em_tensor *q2 = em_tensor_pin_memory(x);
  ASSERT_GPU_CLOSE(gq, x, 0, 0);
  em_tensor_release(q2), em_tensor_release(gq);
  ASSERT_NULL_ERR(em_tensor_pin_memory(g), EM_ERR_DEVICE, "not on the CPU");
  em_tensor_release(back), em_tensor_release(g), em_tensor_release(p), em_tensor_release(x);
  ASSERT_OK(em_cuda_empty_cache());
}

EM_TEST(printing_and_item_read_through_the_host) {
  REQUIRE_CUDA();
  double v[] = {1.5, -2};
  em_tensor *x = em_tensor_from_data(v, EM_DIMS(2), EM_FLOAT64), *g = g_to(x, GPU);
  char *s = em_tensor_to_string(g, NULL);
  ASSERT_NOTNULL(s);
  ASSERT_TRUE(strstr(s, "cuda:0") != NULL);
  free(s);
  em_tensor *e = em_tensor_select(g, 0, 1);
  ASSERT_CLOSE(em_tensor_item_double(e), -2, 0, 0);
  em_tensor_release(e), em_tensor_release(g), em_tensor_release(x);
}

EM_TEST_MAIN()
