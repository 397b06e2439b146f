/* Shared-memory tensors: share_memory in place (views stay consistent),
 * across fork (a child writes, the parent sees), lists of tensors in one
 * segment, the old memory (handed back, never reused while the storage
 * lives), two threads sharing at once, and no name or mapping left
 * behind. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ops.h"
#include "dataloader/dataloader.h"
#include "tests/dataloader/dl_util.h"

/* Mappings of this process backed by ember shm segments. */
static int shm_mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int n = 0;
  while (f && fgets(line, sizeof line, f)) n += strstr(line, "/dev/shm/ember-dl-") != NULL;
  if (f) fclose(f);
  return n;
}

/* Runs fn in a forked child; true if it exited 0. */
static bool in_child(void (*fn)(void *), void *arg) {
  fflush(NULL);
  pid_t p = fork();
  if (p == 0) {
    fn(arg);
    _exit(0);
  }
  int st;
  waitpid(p, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void child_writes(void *arg) {
  em_tensor *t = arg;
  float *p = em_tensor_data(t);
  for (int64_t i = 0; i < t->numel; i++) p[i] = (float)(2 * i + 1);
}

EM_TEST(share_memory_across_fork) {
  int before = shm_mappings();
  em_tensor *t = em_tensor_zeros(EM_DIMS(1000), EM_FLOAT32);
  em_tensor *view = em_tensor_slice(t, 0, 10, 20, 2); /* made before sharing */
  em_tensor *s = em_tensor_scalar(em_scalar_float(0), EM_FLOAT32);
  ASSERT_TRUE(!em_dl_is_shared(t));
  em_storage *storage = t->storage;
  ASSERT_OK(em_dl_share_memory(t));
  ASSERT_TRUE(em_dl_is_shared(t) && em_dl_is_shared(view));
  ASSERT_TRUE(t->storage == storage); /* same storage object, new memory */
  ASSERT_EQ(shm_mappings(), before + 1);
  ASSERT_EQ(dl_shm_count(getpid()), 0); /* the name is already gone */
  /* the data moved intact */
  ASSERT_EQ(em_test_get(t, 999), 0);
  /* a child writes through t; the parent sees it through t and the view */
  ASSERT_TRUE(in_child(child_writes, t));
  ASSERT_EQ(em_test_get(t, 0), 1);
  ASSERT_EQ(em_test_get(t, 999), 1999);
  ASSERT_TENSOR_CLOSE(view, ((double[]){21, 25, 29, 33, 37}), 0, 0);
  /* idempotent */
  ASSERT_OK(em_dl_share_memory(t));
  ASSERT_EQ(shm_mappings(), before + 1);
  em_tensor_release(view);
  em_tensor_release(t);
  em_tensor_release(s);
  ASSERT_EQ(shm_mappings(), before); /* unmapped with the last reference */
}

typedef struct several {
  em_tensor *a, *b, *c;
} several;

static void child_adds(void *arg) {
  several *s = arg;
  em_tensor_release(em_tensor_add_scalar(s->a, em_scalar_int(0))); /* ops work in the child */
  ((double *)em_tensor_data(s->a))[0] = 42;
  ((int64_t *)em_tensor_data(s->b))[2] = -7;
  ((uint8_t *)em_tensor_data(s->c))[0] = 9;
}

EM_TEST(share_memory_list) {
  int before = shm_mappings();
  several s;
  s.a = em_tensor_ones(EM_DIMS(3, 3), EM_FLOAT64);
  s.b = em_tensor_arange(em_scalar_int(0), em_scalar_int(5), em_scalar_int(1), EM_INT64);
  s.c = em_tensor_zeros(EM_DIMS(1), EM_UINT8);
  em_tensor *at = em_tensor_transpose(s.a, 0, 1); /* shares a's storage: moved once */
  em_tensor *empty = em_tensor_zeros(EM_DIMS(0), EM_FLOAT32);
  em_tensor *shared = em_dl_empty_shared(EM_DIMS(4), EM_FLOAT32); /* already shared */
  ASSERT_TRUE(em_dl_is_shared(shared));
  int after_empty = shm_mappings();
  em_tensor *list[6] = {s.a, at, s.b, s.c, empty, shared};
  ASSERT_OK(em_dl_share_memory_list(6, list));
  for (int i = 0; i < 6; i++) ASSERT_TRUE(em_dl_is_shared(list[i]));
  ASSERT_EQ(shm_mappings(), after_empty + 1); /* one segment for all */
  ASSERT_TRUE(in_child(child_adds, &s));
  ASSERT_EQ(em_test_get(s.a, 0), 42);
  ASSERT_EQ(em_test_get(at, 0), 42);
  ASSERT_EQ(em_test_get(s.a, 8), 1);
  ASSERT_TENSOR_CLOSE(s.b, ((double[]){0, 1, -7, 3, 4}), 0, 0);
  ASSERT_EQ(em_test_get(s.c, 0), 9);
  /* the segment lives until its last storage goes */
  em_tensor_release(s.a);
  em_tensor_release(s.b);
  ASSERT_EQ(shm_mappings(), after_empty + 1);
  em_tensor_release(at);
  em_tensor_release(s.c);
  ASSERT_EQ(shm_mappings(), after_empty);
  em_tensor_release(empty);
  em_tensor_release(shared);
  ASSERT_EQ(shm_mappings(), before);
  ASSERT_ERR(em_dl_share_memory_list(1, (em_tensor *[]){NULL}), EM_ERR_INVALID, "tensor 0 is NULL");
  ASSERT_ERR(em_dl_share_memory(NULL), EM_ERR_INVALID, "tensor is NULL");
}

static int deleted;
static void count_delete(void *data, void *ctx) { deleted++; }

EM_TEST(share_memory_of_blob_storage) {
  /* memory owned by someone else (a NumPy array, a loader slot): copied
   * into shared memory and handed back to its owner at once */
  float buf[4] = {1, 2, 3, 4};
  em_tensor *t = em_tensor_from_blob(buf, EM_DIMS(4), NULL, EM_FLOAT32, EM_DEVICE_CPU,
                                     count_delete, NULL);
  ASSERT_OK(em_dl_share_memory(t));
  ASSERT_EQ(deleted, 1);
  buf[0] = 100; /* no longer t's memory */
  ASSERT_TENSOR_CLOSE(t, ((double[]){1, 2, 3, 4}), 0, 0);
  em_tensor_release(t);
  ASSERT_EQ(deleted, 1);
}

/* Resident pages of [p, p + n) (mincore). */
static size_t resident_pages(const void *p, size_t n) {
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t b = (uintptr_t)p & ~((uintptr_t)page - 1);
  size_t np = ((uintptr_t)p + n - b + (size_t)page - 1) / (size_t)page, r = 0;
  unsigned char *v = malloc(np);
  if (v && mincore((void *)b, np * (size_t)page, v) == 0)
    for (size_t i = 0; i < np; i++) r += v[i] & 1;
  free(v);
  return r;
}

EM_TEST(old_memory_stays_reserved_until_the_storage_dies) {
  /* 8 MiB, from the CPU allocator's cache path: share_memory hands its
   * pages back but keeps the block until the storage dies, so that a raw
   * pointer taken before (a NumPy array, a DLPack capsule) reads stale
   * zeros and can never write into a tensor allocated after */
  size_t n = 2 << 20;
  em_tensor *t = em_tensor_full(EM_DIMS((int64_t)n), em_scalar_float(3), EM_FLOAT32);
  float *old = em_tensor_data(t);
  ASSERT_TRUE(resident_pages(old, n * 4) > 0);
  ASSERT_OK(em_dl_share_memory(t));
  ASSERT_TRUE(em_tensor_data(t) != (void *)old);
  ASSERT_EQ(resident_pages(old, n * 4), 0); /* not held twice */
  ASSERT_EQ(old[0], 0.0f);
  em_tensor *fresh[4];
  for (int k = 0; k < 4; k++) { /* the cache must not hand the old block out */
    fresh[k] = em_tensor_zeros(EM_DIMS((int64_t)n), EM_FLOAT32);
    ASSERT_TRUE(em_tensor_data(fresh[k]) != (void *)old);
  }
  old[5] = 42; /* a stale writer */
  for (int k = 0; k < 4; k++) {
    ASSERT_EQ(em_test_get(fresh[k], 5), 0);
    em_tensor_release(fresh[k]);
  }
  ASSERT_EQ(em_test_get(t, 5), 3);
  em_tensor_release(t); /* now the old block goes back to the allocator */
}

typedef struct share_race {
  em_tensor **ts;
  int n;
  pthread_barrier_t *bar;
  em_status st;
} share_race;

static void *share_thread(void *arg) {
  share_race *r = arg;
  pthread_barrier_wait(r->bar);
  r->st = em_dl_share_memory_list(r->n, r->ts);
  return NULL;
}

EM_TEST(share_memory_from_two_threads_at_once) {
  int before = shm_mappings();
  for (int round = 0; round < 20; round++) {
    em_tensor *ts[8];
    for (int i = 0; i < 8; i++) ts[i] = em_tensor_full(EM_DIMS(70000), em_scalar_float(i), EM_FLOAT32);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    share_race r[2] = {{ts, 8, &bar, EM_OK}, {ts, 8, &bar, EM_OK}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, share_thread, &r[k]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    pthread_barrier_destroy(&bar);
    ASSERT_OK(r[0].st);
    ASSERT_OK(r[1].st);
    ASSERT_EQ(shm_mappings(), before + 1); /* one segment: the second call found them shared */
    for (int i = 0; i < 8; i++) {
      ASSERT_TRUE(em_dl_is_shared(ts[i]));
      ASSERT_EQ(em_test_get(ts[i], 69999), i);
      em_tensor_release(ts[i]);
    }
    ASSERT_EQ(shm_mappings(), before);
  }
}

static void child_hogwild(void *arg) {
  em_tensor *t = arg;
  int64_t *p = em_tensor_data(t);
  for (int i = 0; i < 1000; i++) __atomic_fetch_add(&p[0], 1, __ATOMIC_RELAXED);
}

EM_TEST(two_children_update_one_tensor) {
  em_tensor *t = em_dl_empty_shared(EM_DIMS(1), EM_INT64);
  ASSERT_OK(em_tensor_zero_(t));
  fflush(NULL);
  pid_t p[2];
  for (int k = 0; k < 2; k++) {
    p[k] = fork();
    if (p[k] == 0) {
      child_hogwild(t);
      _exit(0);
    }
  }
  for (int k = 0; k < 2; k++) waitpid(p[k], NULL, 0);
  ASSERT_EQ(em_test_get(t, 0), 2000);
  em_tensor_release(t);
}

EM_TEST(shm_allocator) {
  em_allocator *a = em_dl_shm_allocator();
  ASSERT_STREQ(a->name, "cpu_shared");
  em_tensor *t = em_tensor_empty_strided(EM_DIMS(2, 3), NULL, EM_INT32, EM_DEVICE_CPU, a);
  ASSERT_NOTNULL(t);
  ASSERT_OK(em_tensor_fill_(t, em_scalar_int(5)));
  ASSERT_TENSOR_CLOSE(t, ((double[]){5, 5, 5, 5, 5, 5}), 0, 0);
  em_tensor_release(t);
  em_tensor *z = em_dl_empty_shared(EM_DIMS(0), EM_FLOAT32);
  ASSERT_NOTNULL(z);
  em_tensor_release(z);
  ASSERT_EQ(dl_shm_count(getpid()), 0);
}

EM_TEST_MAIN()
