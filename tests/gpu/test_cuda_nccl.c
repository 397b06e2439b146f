/* The nccl process-group backend on one GPU: every collective at world
 * size 1 (NCCL runs single-rank communicators), integer avg, the errors
 * (bitwise ops, int16 reductions, CPU tensors, a tensor on another
 * device: refused at the call, the group still usable), and several
 * communicators on one device at once (a world group and two sub-groups
 * created from it, used concurrently). NCCL refuses two ranks of one
 * communicator on one GPU, so multi-rank runs need several GPUs (the
 * comm tests' fork helpers would do). Skips (77) without a CUDA device. */
#include <pthread.h>

#include "comm/process_group.h"
#include "tests/gpu/gpu_util.h"

#if defined(EMBER_CUDA) && defined(EMBER_TEST_NCCL)
static em_pg *world_group(em_store **store) {
  em_store_options so = {.timeout_ms = 60000, .secret = ""};
  *store = em_store_tcp_create("127.0.0.1", 0, true, &so);
  if (!*store) return NULL;
  em_pg_options o = {.backend = "nccl", .timeout_ms = 60000, .group_name = "gpu_test"};
  return em_pg_init_store(*store, 0, 1, &o);
}

#define WAIT_OK(w)                                          \
  do {                                                      \
    em_work *w_ = (w);                                      \
    ASSERT_NOTNULL(w_);                                     \
    em_status s_ = em_work_wait(w_, 60000);                 \
    em_work_release(w_);                                    \
    ASSERT_OK(s_);                                          \
  } while (0)

EM_TEST(every_collective_at_world_size_one) {
  REQUIRE_CUDA();
  em_store *store = NULL;
  em_pg *pg = world_group(&store);
  ASSERT_NOTNULL(pg);
  ASSERT_STREQ(em_pg_backend_name(pg), "nccl");
  const em_dtype dts[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT32, EM_INT64, EM_UINT8};
  for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
    em_tensor *x = g_values(EM_DIMS(5, 7), dts[k], -9, 9, 1 + k), *g = g_to(x, GPU);
    /* reductions over one rank are the identity (avg divides by 1) */
    const em_reduce_op ops[] = {EM_REDUCE_SUM, EM_REDUCE_AVG, EM_REDUCE_PROD, EM_REDUCE_MIN, EM_REDUCE_MAX};
    for (int o = 0; o < 5; o++) {
      WAIT_OK(em_pg_allreduce(pg, g, ops[o], NULL));
      ASSERT_GPU_CLOSE(g, x, 0, 0);
    }
    WAIT_OK(em_pg_broadcast(pg, g, 0, NULL));
    WAIT_OK(em_pg_reduce(pg, g, 0, EM_REDUCE_SUM, NULL));
    ASSERT_GPU_CLOSE(g, x, 0, 0);
    em_tensor *out = em_tensor_empty_like(g, EM_DTYPE_UNDEFINED);
    WAIT_OK(em_pg_allgather(pg, &out, g, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    ASSERT_OK(em_tensor_zero_(out));
    WAIT_OK(em_pg_allgather_into_tensor(pg, out, g, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    ASSERT_OK(em_tensor_zero_(out));
    WAIT_OK(em_pg_reduce_scatter(pg, out, &g, EM_REDUCE_SUM, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    ASSERT_OK(em_tensor_zero_(out));
    WAIT_OK(em_pg_gather(pg, &out, g, 0, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    ASSERT_OK(em_tensor_zero_(out));
    WAIT_OK(em_pg_scatter(pg, out, &g, 0, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    ASSERT_OK(em_tensor_zero_(out));
    WAIT_OK(em_pg_all_to_all(pg, &out, &g, NULL));
    ASSERT_GPU_CLOSE(out, x, 0, 0);
    /* a non-contiguous tensor goes through a contiguous copy */
    em_tensor *t = em_tensor_transpose(g, 0, 1), *xt = em_tensor_transpose(x, 0, 1);
    WAIT_OK(em_pg_allreduce(pg, t, EM_REDUCE_MAX, NULL));
    ASSERT_GPU_CLOSE(t, xt, 0, 0);
    em_tensor_release(t), em_tensor_release(xt), em_tensor_release(out);
    em_tensor_release(g), em_tensor_release(x);
  }
  WAIT_OK(em_pg_barrier(pg, NULL));
  /* point-to-point needs a peer: at world size 1 the front end refuses it */
  em_tensor *a = g_values(EM_DIMS(16), EM_FLOAT32, -1, 1, 3), *ga = g_to(a, GPU);
  ASSERT_NULL_ERR(em_pg_send(pg, ga, 0, 0, NULL), EM_ERR_INVALID, "cannot send to itself");
  em_tensor_release(ga), em_tensor_release(a);
  em_pg_release(pg);
  em_store_release(store);
}

EM_TEST(errors_are_clear) {
  REQUIRE_CUDA();
  em_store *store = NULL;
  em_pg *pg = world_group(&store);
  ASSERT_NOTNULL(pg);
  em_tensor *c = em_tensor_ones(EM_DIMS(3), EM_INT32), *g = g_to(c, GPU);
  ASSERT_NULL_ERR(em_pg_allreduce(pg, c, EM_REDUCE_SUM, NULL), EM_ERR_DEVICE,
                  "the nccl backend does not support cpu tensors");
  /* what NCCL cannot do is refused at the call, and the group stays usable */
  ASSERT_NULL_ERR(em_pg_allreduce(pg, g, EM_REDUCE_BAND, NULL), EM_ERR_NOTIMPL,
                  "not supported by NCCL");
  em_tensor *c16 = em_tensor_ones(EM_DIMS(3), EM_INT16), *g16 = g_to(c16, GPU);
  ASSERT_NULL_ERR(em_pg_allreduce(pg, g16, EM_REDUCE_SUM, NULL), EM_ERR_NOTIMPL,
                  "cannot reduce int16");
  if (em_cuda_device_count() > 1) {
    em_tensor *g1 = em_tensor_to_device(c, EM_DEVICE_CUDA(1));
    ASSERT_NULL_ERR(em_pg_allreduce(pg, g1, EM_REDUCE_SUM, NULL), EM_ERR_DEVICE,
                    "communicator is on cuda:0");
    em_tensor_release(g1);
  }
  WAIT_OK(em_pg_allreduce(pg, g, EM_REDUCE_SUM, NULL));
  ASSERT_GPU_CLOSE(g, c, 0, 0); /* one rank: the sum is itself */
  WAIT_OK(em_pg_broadcast(pg, g16, 0, NULL)); /* int16 still moves, as bytes */
  em_tensor_release(g16), em_tensor_release(c16);
  em_tensor_release(g), em_tensor_release(c);
  em_pg_release(pg);
  em_store_release(store);
}

typedef struct loop_arg {
  em_pg *pg;
  int iters;
  em_status st;
} loop_arg;

static void *allreduce_loop(void *p) {
  loop_arg *a = p;
  em_tensor *x = em_tensor_full(EM_DIMS(1 << 16), em_scalar_float(1), EM_FLOAT32);
  em_tensor *g = x ? em_tensor_to_device(x, GPU) : NULL;
  a->st = g ? EM_OK : em_last_status();
  for (int i = 0; i < a->iters && !a->st; i++) {
    em_work *w = em_pg_allreduce(a->pg, g, EM_REDUCE_SUM, NULL);
    a->st = w ? em_work_wait(w, 60000) : em_last_status();
    em_work_release(w);
  }
  em_tensor_release(g), em_tensor_release(x);
  return NULL;
}

EM_TEST(several_communicators_on_one_device) {
  REQUIRE_CUDA();
  em_store *store = NULL;
  em_pg *pg = world_group(&store);
  ASSERT_NOTNULL(pg);
  int r0 = 0;
  em_pg_options o = {.backend = "nccl", .timeout_ms = 60000};
  em_pg *sub1 = em_pg_new_group(pg, 1, &r0, &o), *sub2 = em_pg_new_group(pg, 1, &r0, &o);
  ASSERT_NOTNULL(sub1);
  ASSERT_NOTNULL(sub2);
  loop_arg args[3] = {{pg, 20, EM_OK}, {sub1, 20, EM_OK}, {sub2, 20, EM_OK}};
  pthread_t th[3];
  for (int i = 0; i < 3; i++) ASSERT_EQ(pthread_create(&th[i], NULL, allreduce_loop, &args[i]), 0);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 3; i++) ASSERT_OK(args[i].st);
  em_pg_release(sub2), em_pg_release(sub1), em_pg_release(pg);
  em_store_release(store);
}
#else
EM_TEST(no_cuda_in_this_build) { EM_SKIP("no CUDA device: %s", em_cuda_unavailable_reason()); }
#endif

EM_TEST_MAIN()
