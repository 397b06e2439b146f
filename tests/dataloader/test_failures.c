/* Failures and clean-up: a worker that returns an error, segfaults, is
 * SIGKILLed, runs out of memory, exits, fails its init or hangs (timeout);
 * SIGINT and SIGKILL of the main process (run in a child of this test);
 * the /dev/shm space check and the stale-name janitor. After each case the
 * test checks /dev/shm and the process table. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dataloader/dataloader.h"
#include "tests/dataloader/dl_util.h"

/* The out-of-memory case asks for 1 PiB; under ASan that must be a NULL
 * return, not an abort. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((constructor)) static void become_subreaper(void) {
  /* Orphaned workers of the children killed below are re-parented to this
   * process, so it can reap them and see how they died. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
}

/* What the test dataset does at a sample: */
enum { ACT_NONE, ACT_ERROR, ACT_SEGV, ACT_OOM, ACT_EXIT, ACT_SLEEP };
typedef struct fail_ds {
  int64_t len, at;
  int action;
  int sleep_ms;       /* every sample, in workers only */
} fail_ds;

static int64_t f_len(void *ctx) { return ((fail_ds *)ctx)->len; }
static em_status f_get(void *ctx, int64_t i, em_dl_sample *out) {
  fail_ds *f = ctx;
  if (f->sleep_ms && em_dl_get_worker_info()) usleep((useconds_t)f->sleep_ms * 1000);
  if (i == f->at) {
    switch (f->action) {
      case ACT_ERROR: return em_set_error(EM_ERR_INVALID, "sample %lld is cursed", (long long)i);
      case ACT_SEGV:
#ifdef EMBER_SANITIZE
        signal(SIGSEGV, SIG_DFL); /* let the signal kill, as without ASan */
#endif
        {
          volatile uintptr_t bad = 16; /* unmapped, and not NULL (UBSan would stop first) */
          *(volatile int *)bad = 1;
        }
        break;
      case ACT_OOM: {
        em_tensor *t = em_tensor_empty(EM_DIMS(1LL << 50), EM_UINT8);
        if (!t) return em_last_status();
        em_tensor_release(t);
        break;
      }
      case ACT_EXIT: _exit(3);
      case ACT_SLEEP: usleep(2000 * 1000); break;
    }
  }
  return em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(i), EM_INT64));
}

static em_dl_dataset *fail_dataset(fail_ds *f) {
  static const em_dl_dataset_ops ops = {.name = "Fail", .len = f_len, .get = f_get};
  return em_dl_dataset_create(&ops, f);
}

static em_dl_loader *loader_for(em_dl_dataset *d, int workers, int64_t bs) {
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = bs;
  o.num_workers = workers;
  return em_dl_loader_create(d, &o);
}

/* Nothing of this process or of pids is left running or in /dev/shm. */
static int clean(const pid_t *pids, int n) {
  for (int i = 0; i < n; i++)
    if (dl_pid_running(pids[i]) || dl_shm_count(pids[i])) return 0;
  return dl_shm_count(getpid()) == 0;
}

EM_TEST(worker_error_names_worker_and_sample) {
  fail_ds f = {40, 13, ACT_ERROR, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 2, 4);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pids[2];
  ASSERT_EQ(em_dl_iter_worker_pids(it, pids, 2), 2);
  em_dl_batch b;
  bool done;
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    em_dl_batch_release(&b);
  }
  /* batch 3 = samples 12..15, worker 3 % 2 = 1 */
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader worker 1 (pid %d) failed on sample 13 of batch 3: "
           "sample 13 is cursed", (int)pids[1]);
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_INVALID, expect);
  /* the worker lives on; the pass continues with batch 4 */
  ASSERT_OK(em_dl_iter_next(it, &b, &done));
  ASSERT_EQ(b.index, 4);
  ASSERT_EQ(em_test_get(b.t[0], 0), 16);
  em_dl_batch_release(&b);
  em_dl_iter_destroy(it);
  ASSERT_TRUE(clean(pids, 2));
  /* in-process: the dataset's own error */
  em_dl_loader_destroy(l);
  l = loader_for(d, 0, 4);
  it = em_dl_loader_iter(l);
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    em_dl_batch_release(&b);
  }
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_INVALID, "sample 13 is cursed");
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(worker_segfault) {
  fail_ds f = {40, 5, ACT_SEGV, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 2, 2);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pids[2];
  em_dl_iter_worker_pids(it, pids, 2);
  em_dl_batch b;
  bool done;
  em_status st = EM_OK;
  double t0 = now();
  int k;
  for (k = 0; k < 10 && !st; k++) {
    st = em_dl_iter_next(it, &b, &done);
    if (!st) em_dl_batch_release(&b);
  }
  double dt = now() - t0;
  ASSERT_EQ(st, EM_ERR_STATE);
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader worker 0 (pid %d) was killed by signal 11 "
           "(Segmentation fault) while loading sample 5 of batch 2", (int)pids[0]);
  ASSERT_TRUE(strstr(em_last_error(), expect) != NULL || (fprintf(stderr, "  got: %s\n", em_last_error()), 0));
  ASSERT_TRUE(k <= 3); /* batches 0 and 1, then the error */
  ASSERT_TRUE(dt < 1.0);
  /* every worker is gone at once; later calls keep failing */
  ASSERT_TRUE(clean(pids, 2));
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_STATE, "unusable after an earlier failure");
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(worker_sigkilled) {
  fail_ds f = {100000, -1, ACT_NONE, 5};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 2, 2);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pids[2];
  em_dl_iter_worker_pids(it, pids, 2);
  em_dl_batch b;
  bool done;
  for (int k = 0; k < 4; k++) {
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    em_dl_batch_release(&b);
  }
  kill(pids[1], SIGKILL);
  usleep(100 * 1000);
  double t0 = now();
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader worker 1 (pid %d) was killed by signal 9", (int)pids[1]);
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_STATE, expect); /* the very next call */
  ASSERT_TRUE(now() - t0 < 1.0);
  ASSERT_TRUE(strstr(em_last_error(), "out-of-memory killer") != NULL);
  ASSERT_TRUE(clean(pids, 2));
  em_dl_iter_destroy(it);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(worker_out_of_memory) {
  fail_ds f = {20, 3, ACT_OOM, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 1, 4);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pid;
  em_dl_iter_worker_pids(it, &pid, 1);
  em_dl_batch b;
  bool done;
  char expect[128];
  snprintf(expect, sizeof expect, "DataLoader worker 0 (pid %d) failed on sample 3 of batch 0", (int)pid);
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_NOMEM, expect);
  ASSERT_TRUE(strstr(em_last_error(), "cannot allocate") != NULL);
  ASSERT_OK(em_dl_iter_next(it, &b, &done)); /* the worker survived */
  em_dl_batch_release(&b);
  em_dl_iter_destroy(it);
  ASSERT_TRUE(clean(&pid, 1));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(worker_exits) {
  fail_ds f = {20, 2, ACT_EXIT, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 1, 4);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pid;
  em_dl_iter_worker_pids(it, &pid, 1);
  em_dl_batch b;
  bool done;
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader worker 0 (pid %d) exited unexpectedly with exit code 3 "
           "while loading sample 2 of batch 0", (int)pid);
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_STATE, expect);
  em_dl_iter_destroy(it);
  ASSERT_TRUE(clean(&pid, 1));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

static em_status bad_init(void *ctx, int id) {
  if (id == 1) return em_set_error(EM_ERR_INVALID, "init says no to worker %d", id);
  return EM_OK;
}

EM_TEST(worker_init_fn_fails) {
  fail_ds f = {20, -1, ACT_NONE, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 2;
  o.worker_init_fn = bad_init;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pids[2];
  em_dl_iter_worker_pids(it, pids, 2);
  em_dl_batch b;
  bool done;
  em_status st = EM_OK;
  for (int k = 0; k < 5 && !st; k++) {
    st = em_dl_iter_next(it, &b, &done);
    if (!st) em_dl_batch_release(&b);
  }
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader worker 1 (pid %d): worker_init_fn failed: init "
           "says no to worker 1", (int)pids[1]);
  ASSERT_TRUE((st == EM_ERR_INVALID && strstr(em_last_error(), expect) != NULL) ||
              (fprintf(stderr, "  got %d: %s\n", st, em_last_error()), 0));
  em_dl_iter_destroy(it);
  ASSERT_TRUE(clean(pids, 2));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(timeout_and_early_destroy) {
  fail_ds f = {20, 0, ACT_SLEEP, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 1;
  o.timeout = 0.3;
  em_dl_loader *l = em_dl_loader_create(d, &o);
  em_dl_iter *it = em_dl_loader_iter(l);
  pid_t pid;
  em_dl_iter_worker_pids(it, &pid, 1);
  em_dl_batch b;
  bool done;
  double t0 = now();
  char expect[160];
  snprintf(expect, sizeof expect, "DataLoader timed out after 0.3 seconds waiting for batch 0 from "
           "DataLoader worker 0 (pid %d)", (int)pid);
  ASSERT_ERR(em_dl_iter_next(it, &b, &done), EM_ERR_TIMEOUT, expect);
  double dt = now() - t0;
  ASSERT_TRUE(dt >= 0.29 && dt < 1.0);
  /* destroying while the worker sleeps inside a sample: SIGKILL after the
   * grace period, never a hang */
  t0 = now();
  em_dl_iter_destroy(it);
  ASSERT_TRUE(now() - t0 < 1.9);
  ASSERT_TRUE(clean(&pid, 1));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

EM_TEST(normal_end_and_early_break_clean_up) {
  fail_ds f = {64, -1, ACT_NONE, 1};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader *l = loader_for(d, 2, 4);
  pid_t pids[2];
  em_dl_iter *it = em_dl_loader_iter(l);
  em_dl_iter_worker_pids(it, pids, 2);
  em_dl_batch b;
  bool done = false;
  int k = 0;
  while (!done) {
    ASSERT_OK(em_dl_iter_next(it, &b, &done));
    if (!done) k++;
    em_dl_batch_release(&b);
  }
  ASSERT_EQ(k, 16);
  ASSERT_TRUE(clean(pids, 2)); /* already at the end of the pass */
  em_dl_iter_destroy(it);
  it = em_dl_loader_iter(l);
  em_dl_iter_worker_pids(it, pids, 2);
  ASSERT_OK(em_dl_iter_next(it, &b, &done));
  em_dl_batch_release(&b);
  double t0 = now();
  em_dl_iter_destroy(it); /* with prefetched work in flight */
  ASSERT_TRUE(now() - t0 < 1.0);
  ASSERT_TRUE(clean(pids, 2));
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
}

/* ---- the main process killed ------------------------------------------------------------- */

static volatile sig_atomic_t got_sigint;
static void on_sigint(int sig) { got_sigint = 1; }
static em_status interrupted(void *ctx) {
  return got_sigint ? em_set_error(EM_ERR_INTERRUPTED, "KeyboardInterrupt") : EM_OK;
}

/* In a child: a loader with 2 slow workers; reports (own pid, worker pids)
 * on fd, then loads until killed. With handle_sigint it stops on the
 * interrupt, destroys the iterator and exits 0 if the workers are gone. */
static _Noreturn void child_loader(int fd, bool handle_sigint) {
  fail_ds f = {1000000, -1, ACT_NONE, 20};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 2;
  if (handle_sigint) {
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    o.check_interrupt = interrupted;
  }
  em_dl_loader *l = em_dl_loader_create(d, &o);
  em_dl_iter *it = em_dl_loader_iter(l);
  if (!it) _exit(10);
  pid_t p[3] = {getpid(), 0, 0};
  em_dl_iter_worker_pids(it, p + 1, 2);
  if (write(fd, p, sizeof p) != sizeof p) _exit(11);
  for (;;) {
    em_dl_batch b;
    bool done;
    em_status st = em_dl_iter_next(it, &b, &done);
    if (st == EM_ERR_INTERRUPTED) break;
    if (st || done) _exit(12);
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  bool ok = !dl_pid_running(p[1]) && !dl_pid_running(p[2]) && dl_shm_count(getpid()) == 0;
  _exit(ok ? 0 : 13);
}

/* Waits up to 2 s for pid (ours, or re-parented to us) to exit; its wait
 * status, or -1. */
static int reap(pid_t pid) {
  for (int k = 0; k < 400; k++) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0 && !dl_pid_running(pid)) return -2; /* gone, reaped elsewhere */
    usleep(5000);
  }
  return -1;
}

static void kill_main_case(int sig, bool handler) {
  int pfd[2];
  ASSERT_TRUE(pipe(pfd) == 0);
  fflush(NULL);
  pid_t child = fork();
  if (child == 0) {
    close(pfd[0]);
    child_loader(pfd[1], handler);
  }
  close(pfd[1]);
  pid_t p[3];
  ASSERT_EQ(read(pfd[0], p, sizeof p), sizeof p);
  close(pfd[0]);
  ASSERT_EQ(p[0], child);
  usleep(150 * 1000); /* mid-pass: workers busy, slots in flight */
  kill(child, sig);
  int st = reap(child);
  if (handler) {
    ASSERT_TRUE(st >= 0 && WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
  } else {
    ASSERT_TRUE(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == sig);
  }
  /* the workers die with their parent (PR_SET_PDEATHSIG) */
  for (int i = 1; i <= 2; i++) {
    int ws = reap(p[i]);
    if (ws == -1) kill(p[i], SIGKILL), reap(p[i]);
    ASSERT_TRUE(ws != -1);
    if (!handler && ws >= 0) ASSERT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
  }
  ASSERT_TRUE(clean(p, 3));
}

EM_TEST(sigint_main_process) { kill_main_case(SIGINT, false); }
EM_TEST(sigint_main_process_with_handler) { kill_main_case(SIGINT, true); }
EM_TEST(sigkill_main_process) { kill_main_case(SIGKILL, false); }

/* ---- /dev/shm ------------------------------------------------------------------------------- */

EM_TEST(shm_space_check) {
  fail_ds f = {20, -1, ACT_NONE, 0};
  em_dl_dataset *d = fail_dataset(&f);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = 2;
  o.num_workers = 2;
  o.slot_bytes = (size_t)1 << 50; /* 1 PiB per slot */
  em_dl_loader *l = em_dl_loader_create(d, &o);
  ASSERT_NOTNULL(l);
  ASSERT_PNULL_ERR(em_dl_loader_iter(l), EM_ERR_NOMEM,
                   "DataLoader: the batch rings (2 workers x 3 slots x 1.0 PiB): /dev/shm has ");
  ASSERT_TRUE(strstr(em_last_error(), "free, but 6.0 PiB are needed") != NULL);
  /* nothing was started */
  ASSERT_TRUE(waitpid(-1, NULL, WNOHANG) <= 0);
  em_dl_loader_destroy(l);
  em_dl_dataset_release(d);
  ASSERT_PNULL_ERR(em_dl_empty_shared(EM_DIMS(1LL << 48, 16), EM_UINT8), EM_ERR_NOMEM,
                   "/dev/shm has ");
  ASSERT_EQ(dl_shm_count(getpid()), 0);
}

EM_TEST(stale_names_are_removed) {
  fflush(NULL);
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, NULL, 0);
  char name[64];
  snprintf(name, sizeof name, "/ember-dl-%d-77", (int)dead);
  int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
  ASSERT_TRUE(fd >= 0);
  close(fd);
  char mine[64];
  snprintf(mine, sizeof mine, "/ember-dl-%d-999999", (int)getpid());
  fd = shm_open(mine, O_CREAT | O_RDWR, 0600);
  close(fd);
  ASSERT_EQ(dl_shm_count(dead), 1);
  ASSERT_TRUE(em_dl_shm_cleanup_stale() >= 1);
  ASSERT_EQ(dl_shm_count(dead), 0);
  ASSERT_EQ(dl_shm_count(getpid()), 1); /* a live creator's name stays */
  shm_unlink(mine);
}

EM_TEST_MAIN()
