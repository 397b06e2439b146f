/* The loader: options, the in-process iterator, and the main-process side
 * of worker processes (start, dispatch, in-order delivery, failure
 * detection, shutdown).
 *
 * Dispatch (as torch's _MultiProcessingDataLoaderIter): batches are
 * numbered in sampler order and given round-robin to the workers that are
 * still active; at most prefetch_factor * num_workers are outstanding.
 * Each worker's ring has prefetch_factor + 1 slots; a task is sent with a
 * free slot of its worker, or held back until one frees, except the batch
 * the caller is waiting for, which is sent at once with slot -1 (one-off
 * segment) so a user holding many batches never deadlocks the loader.
 * Results arrive out of order and are handed out in order.
 *
 * Slot states live in main-process memory: FREE -> INFLIGHT (task sent)
 * -> HELD (handed out) -> FREE (the storage deleter, when the last view
 * goes, in whatever thread releases it). The ring mapping is refcounted by
 * its worker and by every held slot, so batches outlive their iterator.
 *
 * Messages go through each worker's mailbox (dataloader_impl.h), the rest
 * over its socket behind a marker.
 *
 * Failure detection: every call looks at all worker sockets and pidfds
 * (at most every CHECK_S while batches keep coming through the mailboxes),
 * and waits in slices of 50 ms, so a worker that died (or closed its
 * socket) is reported within milliseconds.
 *
 * pin_memory (with a CUDA device): each batch is copied into pinned host
 * memory as it is handed out (as torch's pin-memory thread does), so its
 * slot is free again at once and host->device copies of it can be
 * asynchronous. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cuda/ember_cuda.h"
#include "dataloader/dataloader_impl.h"

#define WAIT_SLICE_MS 50
#define SHUTDOWN_GRACE_MS 1000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- rings (main side) ------------------------------------------------------------------ */

enum { SLOT_FREE, SLOT_INFLIGHT, SLOT_HELD };

/* How long the main process busy-polls for a batch before sleeping, when
 * the host has a core to spare (see spin_wait). */
#define DEFAULT_SPIN_S 300e-6
/* How often a call that finds its batch in a mailbox also polls the
 * sockets and pidfds for deaths. */
#define CHECK_S 2e-3

typedef struct dl_ring {
  atomic_int refs;
  char *base; /* NULL until the worker sent its ring */
  size_t map_len;
  size_t slot_bytes;
  int nslots; /* 0 for a one-off segment */
  atomic_int *state;
} dl_ring;

static dl_ring *ring_new(int nslots) {
  dl_ring *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  atomic_init(&r->refs, 1);
  r->nslots = nslots;
  if (nslots) {
    r->state = calloc((size_t)nslots, sizeof *r->state);
    if (!r->state) {
      free(r);
      return NULL;
    }
    for (int i = 0; i < nslots; i++) atomic_init(&r->state[i], SLOT_FREE);
  }
  return r;
}

static void ring_unref(dl_ring *r) {
  if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
  if (r->base) munmap(r->base, r->map_len);
  free(r->state);
  free(r);
}

static void slot_set(dl_ring *r, int slot, int state) {
  if (r && slot >= 0 && slot < r->nslots)
    atomic_store_explicit(&r->state[slot], state, memory_order_release);
}

typedef struct slot_ref {
  dl_ring *ring;
  int slot;
} slot_ref;

/* The deleter of a handed-out slot's storage: the slot goes back to its
 * ring (any thread, any time, also after the loader is gone). */
static void slot_deleter(void *data, void *ctx) {
  slot_ref *s = ctx;
  slot_set(s->ring, s->slot, SLOT_FREE);
  ring_unref(s->ring);
  free(s);
}

/* Maps a segment fd of len bytes; NULL with an error. */
static char *map_fd(int fd, size_t len, const char *who) {
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < len)
    return EM_FAIL(EM_ERR_STATE, "%s: sent a shared segment smaller than it claims", who);
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return EM_FAIL(EM_ERR_NOMEM, "%s: cannot map its shared segment: %s", who, strerror(errno));
  return p;
}

/* ---- workers and pools ------------------------------------------------------------------- */

typedef struct dl_worker {
  int id;
  pid_t pid;
  int sock, pidfd, efd;
  em__dl_mbox *mbox;
  dl_ring *ring;
  bool exited, eof, exhausted;
  bool retired; /* no work left for it: its socket closed, it is leaving */
  int wstatus;
  bool have_status;
  int inflight, stale;
  bool fatal;
  em_status fatal_status;
  char fatal_msg[EM_DL_TEXT_MAX];
  char name[64]; /* "DataLoader worker 1 (pid 1234)" */
} dl_worker;

typedef struct dl_pool {
  int n;
  int nslots;
  dl_worker *w;
  em__dl_worker_cfg *cfg;
  uint64_t epoch;
  em_status broken;
  char *broken_msg;
  em__dl_result_msg *rbuf;
  double spin_s; /* busy-poll before sleeping (see spin_wait) */
  char *shared;  /* the sleeping flag, then the workers' mailboxes */
  size_t shared_len;
  _Atomic int *main_sleeping;
  int main_efd;  /* the workers wake this process through it */
  int64_t batch_size;
  double checked; /* when pump last polled the sockets and pidfds */
  bool outgrown;  /* a batch did not fit its slot */
} dl_pool;

struct em_dl_loader {
  atomic_int refs;
  em_dl_dataset *ds;
  em_dl_loader_options o;
  bool iterable;
  em_dl_sampler *bsampler; /* batching: the batch sampler */
  em_dl_sampler *isampler; /* no batching: the index sampler */
  dl_pool *pool;           /* persistent workers */
  bool iter_active;
  size_t learned_slot;     /* auto slot size that served the last whole pass */
  bool warned_ringless;    /* said once that /dev/shm could not hold a ring */
  int pin;                 /* pin_memory with a CUDA device: 1; 0: no; -1: not known yet */
};

static void loader_unref(em_dl_loader *l);

static pid_t pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
  return (pid_t)syscall(SYS_pidfd_open, pid, 0);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static void close_registered(int *fd) {
  if (*fd >= 0) {
    em__dl_fd_unregister(*fd);
    close(*fd);
    *fd = -1;
  }
}

static void pool_free(dl_pool *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) {
    close_registered(&p->w[i].sock);
    close_registered(&p->w[i].pidfd);
    close_registered(&p->w[i].efd);
    ring_unref(p->w[i].ring);
  }
  close_registered(&p->main_efd);
  if (p->shared) munmap(p->shared, p->shared_len);
  free(p->w);
  free(p->cfg);
  free(p->broken_msg);
  free(p->rbuf);
  free(p);
}

/* Stops every worker: EOF on its socket (idle workers leave at once, busy
 * ones within 10 ms of work), SIGKILL after the grace period, always
 * reaped. */
static void pool_shutdown(dl_pool *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) close_registered(&p->w[i].sock);
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int left = 0;
    for (int i = 0; i < p->n; i++) {
      dl_worker *w = &p->w[i];
      if (w->exited || w->pid <= 0) continue;
      int st;
      pid_t r = waitpid(w->pid, &st, WNOHANG);
      if (r == w->pid || (r < 0 && errno == ECHILD)) w->exited = true;
      else left++;
    }
    if (!left) break;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - start.tv_sec) * 1e3 + (double)(now.tv_nsec - start.tv_nsec) / 1e6;
    if (ms >= SHUTDOWN_GRACE_MS) {
      for (int i = 0; i < p->n; i++) {
        dl_worker *w = &p->w[i];
        if (w->exited || w->pid <= 0) continue;
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        w->exited = true;
      }
      break;
    }
    /* until one of them exits (its pidfd turns readable); every 2 ms
     * where one has no pidfd */
    struct pollfd pf[64];
    int k = 0, wait_ms = (int)(SHUTDOWN_GRACE_MS - ms) + 1;
    for (int i = 0; i < p->n; i++) {
      dl_worker *w = &p->w[i];
      if (w->exited || w->pid <= 0) continue;
      if (w->pidfd >= 0 && k < 64) pf[k++] = (struct pollfd){w->pidfd, POLLIN, 0};
      else wait_ms = 2;
    }
    poll(pf, (nfds_t)k, wait_ms);
  }
  pool_free(p);
}

static void pool_fail(dl_pool *p, em_status st, const char *msg) {
  if (p->broken) return;
  p->broken = st ? st : EM_ERR_STATE;
  p->broken_msg = strdup(msg);
}

/* A pool of l's workers, not started yet (pool_spawn forks them): their
 * mailboxes, and the spinning policy. */
static dl_pool *pool_create(em_dl_loader *l) {
  const em_dl_loader_options *o = &l->o;
  int n = o->num_workers;
  int nslots = o->prefetch_factor + 1;
  em_dl_shm_cleanup_stale();
  /* Workers set one kernel thread, which makes core load and self-check
   * OpenBLAS (~0.1 s) unless it is loaded already: load it here once, so
   * that the workers inherit it instead of each paying for it. */
  (void)em_blas_info();
  if (o->slot_bytes) {
    size_t sb = em__dl_align(o->slot_bytes, 4096), total;
    char what[160], b1[32];
    snprintf(what, sizeof what, "DataLoader: the batch rings (%d workers x %d slots x %s)", n,
             nslots, em__dl_fmt_bytes((double)sb, b1, sizeof b1));
    if (__builtin_mul_overflow(sb, (size_t)n * (size_t)nslots, &total)) total = SIZE_MAX;
    if (em__dl_shm_check_space(total, what)) return NULL;
  }
  dl_pool *p = calloc(1, sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "DataLoader: out of memory");
  p->n = n;
  p->nslots = nslots;
  /* Spinning only while every process of the job on this host has a core:
   * LOCAL_WORLD_SIZE ranks (trainrun, torchrun) each with its workers.
   * EMBER_DL_SPIN_US overrides; 0 turns spinning off. */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  const char *lws = getenv("LOCAL_WORLD_SIZE"), *spin = getenv("EMBER_DL_SPIN_US");
  long ranks = lws && atol(lws) > 0 ? atol(lws) : 1;
  p->spin_s = spin && *spin ? atof(spin) * 1e-6 : ncpu >= ranks * (n + 1) ? DEFAULT_SPIN_S : 0;
  p->w = calloc((size_t)n, sizeof *p->w);
  p->cfg = calloc((size_t)n, sizeof *p->cfg);
  p->rbuf = malloc(sizeof *p->rbuf);
  p->batch_size = o->batch_size;
  size_t mbox_bytes = em__dl_mbox_bytes(o->batch_size);
  p->shared_len = em__dl_align(64 + (size_t)n * mbox_bytes, 4096);
  p->shared = mmap(NULL, p->shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p->shared == MAP_FAILED) p->shared = NULL;
  p->main_efd = -1;
  if (p->w)
    for (int i = 0; i < n; i++) p->w[i].sock = p->w[i].pidfd = p->w[i].efd = -1;
  if (!p->w || !p->cfg || !p->rbuf || !p->shared) {
    pool_free(p);
    return EM_FAIL(EM_ERR_NOMEM, "DataLoader: out of memory starting %d workers", n);
  }
  p->main_sleeping = (_Atomic int *)p->shared;
  atomic_init(p->main_sleeping, 0);
  p->main_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->main_efd < 0) {
    pool_free(p);
    return EM_FAIL(EM_ERR_IO, "DataLoader: eventfd failed: %s", strerror(errno));
  }
  for (int i = 0; i < n; i++) {
    p->w[i].mbox = (em__dl_mbox *)(p->shared + 64 + (size_t)i * mbox_bytes);
    p->w[i].id = i;
    atomic_init(&p->w[i].mbox->batch, -1);
    atomic_init(&p->w[i].mbox->sample, -1);
  }
  return p;
}

/* Forks pool p's workers (from pool_create). On failure the pool is shut
 * down and freed. */
static em_status pool_spawn(dl_pool *p, em_dl_loader *l, uint64_t base_seed) {
  const em_dl_loader_options *o = &l->o;
  int n = p->n, nslots = p->nslots;
  for (int i = 0; i < n; i++) {
    dl_worker *w = &p->w[i];
    int sv[2];
    w->ring = ring_new(nslots);
    if (!w->ring) {
      em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
      goto fail;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      em__set_error(EM_ERR_IO, "DataLoader: socketpair failed: %s", strerror(errno));
      goto fail;
    }
    w->sock = sv[0];
    em__dl_fd_register(sv[0]);
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd < 0) {
      em__set_error(EM_ERR_IO, "DataLoader: eventfd failed: %s", strerror(errno));
      close(sv[1]);
      goto fail;
    }
    p->cfg[i] = (em__dl_worker_cfg){
        .id = i, .num_workers = n, .seed = base_seed + (uint64_t)i, .parent = getpid(),
        .sock = sv[1], .dataset = l->ds, .iterable = l->iterable, .batch_size = o->batch_size,
        .drop_last = o->drop_last, .collate_fn = o->collate_fn, .collate_ctx = o->collate_ctx,
        .worker_init_fn = o->worker_init_fn, .worker_init_ctx = o->worker_init_ctx,
        .nslots = nslots,
        .slot_bytes = o->slot_bytes ? em__dl_align(o->slot_bytes, 4096) : l->learned_slot,
        .mbox = w->mbox, .main_sleeping = p->main_sleeping,
        .efd = w->efd, .main_efd = p->main_efd};
    fflush(NULL); /* buffered output must not be written twice */
    if (o->fork_hooks.prepare) o->fork_hooks.prepare(o->fork_hooks.ctx);
    em__dl_fork_lock();
    pid_t pid = fork();
    if (pid == 0) {
      em__dl_fork_child_close_fds();
      if (o->fork_hooks.child) o->fork_hooks.child(o->fork_hooks.ctx);
      em__dl_worker_main(&p->cfg[i]);
    }
    int err = errno;
    em__dl_fork_unlock_parent();
    if (o->fork_hooks.parent) o->fork_hooks.parent(o->fork_hooks.ctx);
    close(sv[1]);
    if (pid < 0) {
      em__set_error(EM_ERR_NOMEM, "DataLoader: cannot start worker %d: fork failed: %s", i,
                    strerror(err));
      goto fail;
    }
    w->pid = pid;
    snprintf(w->name, sizeof w->name, "DataLoader worker %d (pid %d)", i, (int)pid);
    w->pidfd = pidfd_open_(pid);
    if (w->pidfd >= 0) em__dl_fd_register(w->pidfd);
    em__dl_fd_register(w->efd); /* workers forked later must not keep it */
  }
  em__dl_fd_register(p->main_efd); /* only this pool's workers keep it */
  return EM_OK;
fail:;
  em_status st = em_last_status();
  char *msg = strdup(em_last_error()); /* pool_shutdown may set errors of its own */
  pool_shutdown(p);
  em__set_error(st, "%s", msg ? msg : "DataLoader: cannot start the workers (out of memory)");
  free(msg);
  return st ? st : EM_ERR_NOMEM;
}

/* "was killed by signal 11 (Segmentation fault)" */
static void describe_exit(dl_worker *w, char *buf, size_t size) {
  if (!w->have_status) {
    snprintf(buf, size, "exited unexpectedly");
  } else if (WIFSIGNALED(w->wstatus)) {
    int sig = WTERMSIG(w->wstatus);
    snprintf(buf, size, "was killed by signal %d (%s)%s", sig, strsignal(sig),
             sig == SIGKILL ? "; if nobody sent it, the out-of-memory killer probably did" : "");
  } else if (WIFEXITED(w->wstatus)) {
    snprintf(buf, size, "exited unexpectedly with exit code %d", WEXITSTATUS(w->wstatus));
  } else {
    snprintf(buf, size, "exited unexpectedly (status 0x%x)", w->wstatus);
  }
}

/* ---- the iterator ------------------------------------------------------------------------------ */

enum { T_FREE, T_PENDING, T_SENT, T_DONE, T_ERROR, T_END };

typedef struct dl_task {
  int state;
  int64_t batch;
  int worker;
  int slot;
  int64_t *idx;
  int64_t n, idx_cap;
  dl_ring *seg; /* one-off segment of a finished batch */
  em_status err;
  int64_t err_sample;
  char *msg;
} dl_task;

struct em_dl_iter {
  em_dl_loader *l;
  dl_pool *pool;
  bool owns_pool;
  em_dl_sampler_iter *sit;
  const int64_t *chunk; /* index sampler without batching */
  int64_t chunk_n, chunk_pos;
  void *ds_state;
  bool ds_live;
  bool src_done;
  int64_t send_idx, rcvd_idx;
  dl_task *tasks;
  int cap;
  int rr;
  bool finished;
  em_status deferred; /* an error met after handing out a batch */
  char *deferred_msg;
  em_status failed;
  char *failed_msg;
  em_dl_sample *samples;
  int64_t samples_cap;
  em__dl_task_msg *sbuf;
};

static dl_task *task_of(em_dl_iter *it, int64_t batch) { return &it->tasks[batch % it->cap]; }

/* The next batch's indices from the sampler (one index without batching);
 * *n = 0 at the end. */
static em_status next_indices(em_dl_iter *it, const int64_t **idx, int64_t *n) {
  if (it->l->bsampler) return em_dl_sampler_iter_next(it->sit, idx, n);
  if (it->chunk_pos == it->chunk_n) {
    const int64_t *chunk;
    int64_t chunk_n;
    EM_CHECK(em_dl_sampler_iter_next(it->sit, &chunk, &chunk_n));
    it->chunk = chunk;
    it->chunk_n = chunk_n;
    it->chunk_pos = 0;
    if (it->chunk_n == 0) {
      *n = 0;
      return EM_OK;
    }
  }
  *idx = it->chunk + it->chunk_pos++;
  *n = 1;
  return EM_OK;
}

static void iter_fail(em_dl_iter *it, em_status st, const char *msg) {
  if (it->failed) return;
  it->failed = st ? st : EM_ERR_STATE;
  it->failed_msg = strdup(msg);
  if (it->pool) {
    if (!it->owns_pool) it->l->pool = NULL; /* a broken persistent pool goes too */
    pool_shutdown(it->pool);
    it->pool = NULL;
  }
}

/* Fails the iterator with the pool's failure and returns its status. */
static em_status fail_from_pool(em_dl_iter *it) {
  dl_pool *p = it->pool;
  em_status st = p->broken;
  char *msg = strdup(p->broken_msg ? p->broken_msg : "DataLoader: worker failure");
  iter_fail(it, st, msg ? msg : "DataLoader: worker failure");
  em__set_error(st, "%s", msg ? msg : "DataLoader: worker failure");
  free(msg);
  return st;
}

/* A worker is gone: reap it and break the pool with the best message. */
static void worker_died(dl_pool *p, dl_worker *w) {
  if (!w->exited) {
    /* Its socket closed: it is exiting. Give it a second, then make sure. */
    int st;
    pid_t r = 0;
    for (int k = 0; k < 500 && r == 0; k++) {
      r = waitpid(w->pid, &st, WNOHANG);
      if (r == 0) {
        struct timespec nap = {0, 2 * 1000 * 1000};
        nanosleep(&nap, NULL);
      }
    }
    if (r == 0) {
      kill(w->pid, SIGKILL);
      while ((r = waitpid(w->pid, &st, 0)) < 0 && errno == EINTR) {
      }
    }
    if (r == w->pid) {
      w->wstatus = st;
      w->have_status = true;
    }
    w->exited = true;
  }
  char msg[EM_DL_TEXT_MAX + 256];
  if (w->fatal) {
    snprintf(msg, sizeof msg, "%s: %s", w->name, w->fatal_msg);
    pool_fail(p, w->fatal_status, msg);
    return;
  }
  char how[160], where[96] = "";
  describe_exit(w, how, sizeof how);
  int64_t b = atomic_load(&w->mbox->batch), s = atomic_load(&w->mbox->sample);
  if (s >= 0 && b >= 0)
    snprintf(where, sizeof where, " while loading sample %lld of batch %lld", (long long)s,
             (long long)b);
  else if (b >= 0)
    snprintf(where, sizeof where, " while loading batch %lld", (long long)b);
  snprintf(msg, sizeof msg, "%s %s%s", w->name, how, where);
  pool_fail(p, EM_ERR_STATE, msg);
}

/* One message from worker w (fd: attached descriptor or -1, consumed). */
static void handle_msg(dl_pool *p, em_dl_iter *it, dl_worker *w, const em__dl_result_msg *m,
                       size_t len, int fd) {
  char why[EM_DL_TEXT_MAX + 256];
  if (len < offsetof(em__dl_result_msg, text) + 1) {
    snprintf(why, sizeof why, "%s: sent a malformed message", w->name);
    goto protocol;
  }
  if (m->type == EM_DL_MSG_FATAL) {
    w->fatal = true;
    w->fatal_status = m->status > 0 && m->status < EM_STATUS_COUNT ? m->status : EM_ERR_STATE;
    snprintf(w->fatal_msg, sizeof w->fatal_msg, "%.*s", (int)(len - offsetof(em__dl_result_msg, text)),
             m->text);
    if (fd >= 0) close(fd);
    return;
  }
  if (m->type == EM_DL_MSG_RING) {
    if (fd < 0 || m->nslots != w->ring->nslots || m->bytes < EM_DL_SLOT_HDR + EM_DL_ALIGN ||
        w->ring->base) {
      snprintf(why, sizeof why, "%s: sent an invalid ring", w->name);
      goto protocol;
    }
    size_t len2 = (size_t)m->bytes * (size_t)m->nslots;
    char *base = map_fd(fd, len2, w->name);
    close(fd);
    if (!base) {
      pool_fail(p, em_last_status(), em_last_error());
      return;
    }
    w->ring->base = base;
    w->ring->map_len = len2;
    w->ring->slot_bytes = (size_t)m->bytes;
    return;
  }
  if (m->type != EM_DL_MSG_BATCH && m->type != EM_DL_MSG_ERROR && m->type != EM_DL_MSG_END) {
    snprintf(why, sizeof why, "%s: sent an unknown message %u", w->name, m->type);
    goto protocol;
  }
  if (m->epoch != p->epoch) { /* a task of an earlier pass (persistent workers) */
    slot_set(w->ring, m->slot, SLOT_FREE);
    if (fd >= 0) close(fd);
    if (w->stale > 0) w->stale--;
    return;
  }
  dl_task *t = it ? task_of(it, m->batch) : NULL;
  if (!t || m->batch < it->rcvd_idx || m->batch >= it->send_idx || t->batch != m->batch ||
      t->state != T_SENT || t->worker != w->id) {
    snprintf(why, sizeof why, "%s: sent a result for batch %lld that it was not given", w->name,
             (long long)m->batch);
    goto protocol;
  }
  w->inflight--;
  if (m->type == EM_DL_MSG_BATCH) {
    if (fd >= 0) { /* a one-off segment; the assigned slot stayed unused */
      if (t->slot >= 0) p->outgrown = true;
      if (t->slot >= 0 && !w->ring->base && !it->l->warned_ringless) {
        it->l->warned_ringless = true;
        fprintf(stderr, "ember DataLoader: %s: /dev/shm cannot hold its ring of batches, so each "
                "batch travels in a shared-memory segment of its own (slower); enlarge /dev/shm "
                "(e.g. docker run --shm-size) or use fewer workers or a smaller prefetch_factor\n",
                w->name);
      }
      char *base = map_fd(fd, (size_t)m->bytes, w->name);
      close(fd);
      fd = -1;
      if (!base || m->bytes < EM_DL_SLOT_HDR || !(t->seg = ring_new(0))) {
        if (base) munmap(base, (size_t)m->bytes);
        pool_fail(p, em_last_status() ? em_last_status() : EM_ERR_NOMEM, em_last_error());
        return;
      }
      t->seg->base = base;
      t->seg->map_len = (size_t)m->bytes;
      slot_set(w->ring, t->slot, SLOT_FREE);
      t->slot = -1;
    } else if (t->slot < 0 || !w->ring->base) {
      snprintf(why, sizeof why, "%s: reported batch %lld without a place for it", w->name,
               (long long)m->batch);
      goto protocol;
    }
    t->state = T_DONE;
    return;
  }
  slot_set(w->ring, t->slot, SLOT_FREE);
  t->slot = -1;
  if (fd >= 0) close(fd);
  if (m->type == EM_DL_MSG_END) {
    t->state = T_END;
    w->exhausted = true;
    return;
  }
  t->state = T_ERROR;
  t->err = m->status > 0 && m->status < EM_STATUS_COUNT ? m->status : EM_ERR_INTERNAL;
  t->err_sample = m->sample;
  free(t->msg);
  t->msg = strndup(m->text, len - offsetof(em__dl_result_msg, text));
  return;
protocol:
  if (fd >= 0) close(fd);
  pool_fail(p, EM_ERR_STATE, why);
}

/* Reads the socket message a result marker of w stands for; false when
 * it has not arrived yet or the socket ended (w->eof). */
static bool recv_marked(dl_pool *p, em_dl_iter *it, dl_worker *w) {
  bool reset_seen = false;
  for (;;) {
    if (w->sock < 0 || w->eof) return false;
    struct iovec iov = {p->rbuf, sizeof *p->rbuf};
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } cm;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.buf;
    mh.msg_controllen = sizeof cm.buf;
    ssize_t r = recvmsg(w->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      /* A worker that exits with tasks unread resets the connection; the
       * error is reported once, before what it sent: read on. */
      if (errno == ECONNRESET && !reset_seen) {
        reset_seen = true;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) w->eof = true;
      return false;
    }
    if (r == 0) {
      w->eof = true;
      return false;
    }
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
          c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int fds[4];
        memcpy(fds, CMSG_DATA(c), (size_t)(nfd > 4 ? 4 : nfd) * sizeof(int));
        for (int k = 0; k < nfd && k < 4; k++) {
          if (fd < 0) fd = fds[k];
          else close(fds[k]);
        }
      }
    handle_msg(p, it, w, p->rbuf, (size_t)r, fd);
    return true;
  }
}

/* Takes w's published results in order, without a system call unless
 * one is a marker. */
static void take_results(dl_pool *p, em_dl_iter *it, dl_worker *w) {
  em__dl_mbox *mb = w->mbox;
  while (!p->broken) {
    uint64_t head = atomic_load_explicit(&mb->res_head, memory_order_relaxed);
    if (atomic_load_explicit(&mb->res_tail, memory_order_acquire) == head) return;
    em__dl_result_entry e = mb->res[head % EM_DL_RESULT_Q];
    if (e.type == EM_DL_MSG_MARK) {
      if (!recv_marked(p, it, w)) return; /* not sent yet, or the worker is gone */
      atomic_store_explicit(&mb->res_head, head + 1, memory_order_release);
      continue;
    }
    atomic_store_explicit(&mb->res_head, head + 1, memory_order_release);
    em__dl_result_msg *m = p->rbuf;
    memset(m, 0, offsetof(em__dl_result_msg, text) + 1);
    m->type = e.type;
    m->slot = e.slot;
    m->batch = e.batch;
    m->epoch = e.epoch;
    m->sample = -1;
    handle_msg(p, it, w, m, offsetof(em__dl_result_msg, text) + 1, -1);
  }
}

/* Has a live worker published a result not taken yet? A marker counts
 * only with markers: its message wakes a sleeping poll by itself. */
static bool results_waiting(const dl_pool *p, bool markers) {
  for (int i = 0; i < p->n; i++) {
    const dl_worker *w = &p->w[i];
    if (w->exited || w->retired) continue;
    uint64_t head = atomic_load_explicit(&w->mbox->res_head, memory_order_relaxed);
    if (atomic_load(&w->mbox->res_tail) != head &&
        (markers || w->mbox->res[head % EM_DL_RESULT_Q].type != EM_DL_MSG_MARK))
      return true;
  }
  return false;
}

/* Takes every worker's published results (memory only, but for markers). */
static void collect(dl_pool *p, em_dl_iter *it) {
  for (int i = 0; i < p->n && !p->broken; i++)
    if (!p->w[i].exited && !p->w[i].retired) take_results(p, it, &p->w[i]);
}

/* Takes w's results, then notes end-of-file on its socket. Data on the
 * socket always has a published marker (the worker publishes first), so
 * data seen here means one more look at the queue. */
static void drain(dl_pool *p, em_dl_iter *it, dl_worker *w) {
  for (int pass = 0; pass < 2 && !p->broken; pass++) {
    take_results(p, it, w);
    if (w->sock < 0 || w->eof || p->broken) return;
    char b;
    ssize_t r = recv(w->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && errno == ECONNRESET) r = recv(w->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      w->eof = true;
      take_results(p, it, w); /* what it published before it went */
      return;
    }
    if (r < 0) return;
  }
}

/* Polls every worker for up to timeout_ms; processes messages and deaths.
 * Returns 1 if interrupted by a signal (EINTR), else 0. */
static int pump(dl_pool *p, em_dl_iter *it, int timeout_ms) {
  struct pollfd fds[2 * 64 + 1];
  struct pollfd *pf = fds;
  size_t want = 2 * (size_t)p->n + 1;
  if (want > sizeof fds / sizeof fds[0]) {
    pf = malloc(want * sizeof *pf);
    if (!pf) {
      pf = fds;
      want = sizeof fds / sizeof fds[0];
    }
  }
  int k = 0;
  bool any_nopidfd = false;
  pf[k++] = (struct pollfd){p->main_efd, POLLIN, 0};
  for (int i = 0; i < p->n && (size_t)k + 2 <= want; i++) {
    dl_worker *w = &p->w[i];
    if (w->exited || w->retired) continue;
    pf[k++] = (struct pollfd){w->sock, POLLIN, 0};
    if (w->pidfd >= 0) pf[k++] = (struct pollfd){w->pidfd, POLLIN, 0};
    else any_nopidfd = true;
  }
  if (any_nopidfd && timeout_ms > WAIT_SLICE_MS) timeout_ms = WAIT_SLICE_MS;
  /* Going to sleep: say so, then look once more (see em__dl_mbox). */
  bool sleeping = timeout_ms > 0;
  if (sleeping) {
    atomic_store(p->main_sleeping, 1);
    if (results_waiting(p, false)) timeout_ms = 0;
  }
  int r = poll(pf, (nfds_t)k, timeout_ms);
  int intr = r < 0 && errno == EINTR;
  if (sleeping) atomic_store(p->main_sleeping, 0);
  if (r > 0 && (pf[0].revents & POLLIN)) {
    uint64_t v;
    if (read(p->main_efd, &v, sizeof v) < 0) { /* EAGAIN: another read took it */
    }
  }
  if (pf != fds) free(pf);
  p->checked = now_s();
  for (int i = 0; i < p->n && !p->broken; i++) {
    dl_worker *w = &p->w[i];
    if (w->exited || w->retired) continue;
    drain(p, it, w);
    if (p->broken) break;
    bool gone = w->eof;
    if (!gone && w->pidfd >= 0) {
      struct pollfd q = {w->pidfd, POLLIN, 0};
      gone = poll(&q, 1, 0) > 0;
    } else if (!gone) {
      int st;
      pid_t pr = waitpid(w->pid, &st, WNOHANG);
      if (pr == w->pid) {
        w->exited = true;
        w->wstatus = st;
        w->have_status = true;
        gone = true;
      }
    }
    if (gone) {
      drain(p, it, w); /* whatever it sent before dying is still valid */
      if (!p->broken) worker_died(p, w);
    }
  }
  return intr;
}

/* Wakes worker w if it sleeps (see em__dl_mbox). */
static void wake_worker(dl_worker *w) { em__dl_wake(&w->mbox->worker_sleeping, w->efd); }

/* Room for one more entry in w's task queue? */
static bool task_room(const dl_worker *w) {
  const em__dl_mbox *mb = w->mbox;
  return atomic_load_explicit(&mb->task_tail, memory_order_relaxed) -
             atomic_load_explicit(&mb->task_head, memory_order_acquire) <
         EM_DL_TASK_Q;
}

/* The entry w's task queue fills next (the caller checked room). */
static em__dl_task_msg *task_next_entry(const dl_pool *p, dl_worker *w) {
  uint64_t tail = atomic_load_explicit(&w->mbox->task_tail, memory_order_relaxed);
  return em__dl_task_entry(w->mbox, p->batch_size, tail);
}

/* Publishes the next entry of w's task queue (the caller checked room). */
static void task_publish(dl_worker *w) {
  em__dl_mbox *mb = w->mbox;
  atomic_store(&mb->task_tail, atomic_load_explicit(&mb->task_tail, memory_order_relaxed) + 1);
}

/* Sends task t to its worker (slot already chosen): in its task queue, or
 * a marker there and the indices over the socket when they do not fit an
 * entry. *full when the queue has no room (nothing sent; retry later). */
static em_status send_task(em_dl_iter *it, dl_task *t, bool *full) {
  dl_pool *p = it->pool;
  dl_worker *w = &p->w[t->worker];
  *full = !task_room(w);
  if (*full) return EM_OK;
  int64_t total = it->l->iterable ? -1 : t->n, first = 0;
  bool inline_ = total <= em__dl_task_inline(p->batch_size);
  em__dl_task_msg *e = task_next_entry(p, w);
  e->type = inline_ ? EM_DL_MSG_TASK : EM_DL_MSG_MARK;
  e->slot = t->slot;
  e->batch = t->batch;
  e->epoch = p->epoch;
  e->n = total;
  e->first = 0;
  e->count = inline_ && total > 0 ? total : 0;
  if (e->count) memcpy(e->indices, t->idx, (size_t)total * sizeof(int64_t));
  task_publish(w);
  while (!inline_ && first < total) {
    int64_t cnt = total - first;
    if (cnt > EM_DL_TASK_CHUNK) cnt = EM_DL_TASK_CHUNK;
    em__dl_task_msg *m = it->sbuf;
    m->type = EM_DL_MSG_TASK;
    m->slot = t->slot;
    m->batch = t->batch;
    m->epoch = p->epoch;
    m->n = total;
    m->first = first;
    m->count = cnt;
    memcpy(m->indices, t->idx + first, (size_t)cnt * sizeof(int64_t));
    size_t len = sizeof *m + (size_t)cnt * sizeof(int64_t);
    ssize_t r = send(w->sock, m, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) {
      first += cnt;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      /* The worker has not read its socket yet: wait, watching for death. */
      wake_worker(w);
      struct pollfd q = {w->sock, POLLOUT, 0};
      poll(&q, 1, WAIT_SLICE_MS);
      pump(p, it, 0);
      if (p->broken) return fail_from_pool(it);
      continue;
    }
    pump(p, it, WAIT_SLICE_MS); /* EPIPE: it died; find out how */
    if (!p->broken) {
      char msg[256];
      snprintf(msg, sizeof msg, "%s: its socket failed: %s", w->name, strerror(errno));
      pool_fail(p, EM_ERR_STATE, msg);
    }
    return fail_from_pool(it);
  }
  wake_worker(w);
  t->state = T_SENT;
  w->inflight++;
  return EM_OK;
}

static int free_slot(dl_ring *r) {
  for (int s = 0; s < r->nslots; s++)
    if (atomic_load_explicit(&r->state[s], memory_order_acquire) == SLOT_FREE) {
      slot_set(r, s, SLOT_INFLIGHT);
      return s;
    }
  return -1;
}

/* Sends held-back tasks, per worker in batch order, into free slots; the
 * awaited batch goes out even without one. */
static em_status flush_pending(em_dl_iter *it) {
  dl_pool *p = it->pool;
  bool blocked_small[64];
  bool *blocked = p->n <= 64 ? blocked_small : calloc((size_t)p->n, sizeof *blocked);
  if (!blocked) return em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
  if (blocked == blocked_small) memset(blocked_small, 0, sizeof blocked_small);
  em_status st = EM_OK;
  for (int64_t b = it->rcvd_idx; b < it->send_idx && !st; b++) {
    dl_task *t = task_of(it, b);
    if (t->state != T_PENDING || blocked[t->worker]) continue;
    dl_worker *w = &p->w[t->worker];
    if (!task_room(w)) { /* it has plenty queued: later */
      blocked[t->worker] = true;
      continue;
    }
    int s = free_slot(w->ring);
    if (s < 0 && b != it->rcvd_idx) {
      blocked[t->worker] = true;
      continue;
    }
    t->slot = s;
    bool full;
    st = send_task(it, t, &full);
    if (full) { /* cannot happen after task_room; keep the slot free */
      slot_set(w->ring, s, SLOT_FREE);
      t->slot = -1;
      blocked[t->worker] = true;
    }
  }
  if (blocked != blocked_small) free(blocked);
  return st;
}

/* Creates tasks up to the prefetch limit (taking their indices from the
 * sampler), to be sent by flush_pending. */
static em_status make_tasks(em_dl_iter *it) {
  dl_pool *p = it->pool;
  while (!it->src_done && it->send_idx - it->rcvd_idx < it->cap) {
    int w = -1;
    for (int k = 0; k < p->n; k++) {
      int c = (it->rr + k) % p->n;
      if (!p->w[c].exhausted) {
        w = c;
        break;
      }
    }
    if (w < 0) {
      it->src_done = true;
      break;
    }
    dl_task *t = task_of(it, it->send_idx);
    if (!it->l->iterable) {
      const int64_t *idx;
      int64_t n;
      EM_CHECK(next_indices(it, &idx, &n));
      if (n == 0) {
        it->src_done = true;
        break;
      }
      if (n > t->idx_cap) {
        int64_t *ni = realloc(t->idx, (size_t)n * sizeof *ni);
        if (!ni) return em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
        t->idx = ni;
        t->idx_cap = n;
      }
      memcpy(t->idx, idx, (size_t)n * sizeof *idx);
      t->n = n;
    }
    it->rr = (w + 1) % p->n;
    t->state = T_PENDING;
    t->batch = it->send_idx++;
    t->worker = w;
    t->slot = -1;
    t->seg = NULL;
  }
  return EM_OK;
}

/* Creates tasks up to the prefetch limit, then sends what it can. */
static em_status dispatch(em_dl_iter *it) {
  EM_CHECK(make_tasks(it));
  return flush_pending(it);
}

/* Wraps finished task t's slot (or one-off segment) as the batch. */
static em_status hand_out(em_dl_iter *it, dl_task *t, em_dl_batch *out) {
  dl_worker *w = &it->pool->w[t->worker];
  dl_ring *r = t->seg ? t->seg : w->ring;
  char *base = t->seg ? t->seg->base : w->ring->base + (size_t)t->slot * w->ring->slot_bytes;
  size_t cap = (t->seg ? t->seg->map_len : w->ring->slot_bytes) - EM_DL_SLOT_HDR;
  em__dl_slot_header hc, *h = &hc;
  em__dl_tdesc *descs = NULL;
  em_status st = em__dl_slot_read(base, cap, w->name, h, &descs);
  if (!st && (h->batch != t->batch || h->epoch != it->pool->epoch))
    st = em__set_error(EM_ERR_STATE, "%s: slot holds batch %lld, expected %lld", w->name,
                       (long long)h->batch, (long long)t->batch);
  slot_ref *ref = st ? NULL : malloc(sizeof *ref);
  if (!st && !ref) st = em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
  if (st) {
    free(descs);
    free(ref);
    slot_set(w->ring, t->slot, SLOT_FREE);
    if (t->seg) ring_unref(t->seg);
    t->seg = NULL;
    return st;
  }
  /* The batch's storage takes over the task's claim on the slot. */
  ref->ring = r;
  ref->slot = t->seg ? -1 : t->slot;
  if (!t->seg) atomic_fetch_add(&r->refs, 1);
  slot_set(w->ring, t->slot, SLOT_HELD);
  t->seg = NULL;
  em_storage *s = em_storage_from_blob(base + EM_DL_SLOT_HDR, cap, EM_DEVICE_CPU, slot_deleter, ref);
  if (!s) {
    free(descs);
    slot_deleter(NULL, ref);
    return em_last_status();
  }
  s->flags |= EM_STORAGE_SHARED; /* it is: forked processes see one batch, as in torch */
  memset(out, 0, sizeof *out);
  out->holder = s;
  out->index = t->batch;
  out->worker = t->worker;
  if (h->meta_len) {
    out->meta = base + EM_DL_SLOT_HDR + h->meta_off;
    out->meta_len = h->meta_len;
  }
  out->t = h->n ? calloc((size_t)h->n, sizeof *out->t) : NULL;
  if (h->n && !out->t) st = em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory");
  for (int i = 0; i < h->n && !st; i++) {
    const em__dl_tdesc *d = &descs[i];
    out->t[i] = em__tensor_new(s, (em_dtype)d->dtype, d->ndim, d->shape, d->strides, d->offset);
    if (!out->t[i]) st = em_last_status();
    else out->n = i + 1;
  }
  free(descs);
  if (st) em_dl_batch_release(out);
  return st;
}

static void task_clear(dl_task *t) {
  t->state = T_FREE;
  free(t->msg);
  t->msg = NULL;
  if (t->seg) ring_unref(t->seg);
  t->seg = NULL;
}

static void iter_finish(em_dl_iter *it) {
  it->finished = true;
  if (it->pool && it->owns_pool) {
    /* The next pass's workers make their rings at once, while this
     * process draws the sampler's order, instead of after their first
     * batch (auto slot size only; a batch that outgrew its slot starts
     * the sizing over). */
    dl_pool *p = it->pool;
    size_t learned = 0;
    for (int i = 0; i < p->n; i++)
      if (p->w[i].ring && p->w[i].ring->slot_bytes > learned) learned = p->w[i].ring->slot_bytes;
    if (!it->l->o.slot_bytes) it->l->learned_slot = p->outgrown ? 0 : learned;
    pool_shutdown(it->pool);
    it->pool = NULL;
  }
}

static em_status wait_interrupt(em_dl_iter *it) {
  const em_dl_loader_options *o = &it->l->o;
  if (!o->check_interrupt) return EM_OK;
  em_status st = o->check_interrupt(o->interrupt_ctx);
  if (st && em_last_status() != st)
    em__set_error(st, "DataLoader: interrupted while waiting for batch %lld", (long long)it->rcvd_idx);
  return st;
}

/* Waiting for task t: while the host has a core for every worker and for
 * this process, wait without sleeping for up to p->spin_s first. A batch
 * that arrives meanwhile then costs no wake-up on either side (a sleeping
 * poll costs one per batch, which on a VM is as dear as the sends
 * themselves). The spin reads only the mailboxes; deaths are noticed by
 * the sleeping poll after it. Returns true when t is no longer pending. */
static bool spin_wait(dl_pool *p, em_dl_iter *it, dl_task *t) {
  if (p->spin_s <= 0 || t->state != T_SENT) return false;
  double end = now_s() + p->spin_s;
  for (;;) {
    if (results_waiting(p, true)) collect(p, it);
    else em__cpu_relax();
    if (t->state != T_SENT || p->broken || now_s() >= end) break;
  }
  return t->state != T_SENT || p->broken;
}

/* Lets the workers of an owned pool that have nothing left to do (the
 * sampler is done, or their stream is, and all their results are in)
 * leave now, while the caller still works on the last batches, instead
 * of at the end of the pass. */
static void retire_finished(em_dl_iter *it) {
  dl_pool *p = it->pool;
  if (!it->owns_pool) return;
  for (int i = 0; i < p->n; i++) {
    dl_worker *w = &p->w[i];
    if (w->retired || w->exited || w->inflight || !(it->src_done || w->exhausted)) continue;
    bool pending = false;
    for (int64_t b = it->rcvd_idx; b < it->send_idx && !pending; b++)
      pending = task_of(it, b)->worker == i && task_of(it, b)->state == T_PENDING;
    if (pending) continue;
    w->retired = true;
    close_registered(&w->sock);
  }
}

/* Keeps the error just met for the next call to report. */
static void defer_error(em_dl_iter *it) {
  it->deferred = em_last_status() ? em_last_status() : EM_ERR_INTERNAL;
  it->deferred_msg = strdup(em_last_error());
}

static em_status next_mp(em_dl_iter *it, em_dl_batch *out, bool *done) {
  dl_pool *p = it->pool;
  if (it->deferred) {
    em_status st = it->deferred;
    em__set_error(st, "%s", it->deferred_msg ? it->deferred_msg : "DataLoader: deferred error");
    it->deferred = EM_OK;
    free(it->deferred_msg);
    it->deferred_msg = NULL;
    return st;
  }
  collect(p, it);
  if (now_s() - p->checked >= CHECK_S) pump(p, it, 0);
  if (p->broken) return fail_from_pool(it);
  double deadline = it->l->o.timeout > 0 ? now_s() + it->l->o.timeout : 0;
  for (;;) {
    em_status st = dispatch(it);
    if (st) return st;
    if (p->broken) return fail_from_pool(it);
    if (it->rcvd_idx == it->send_idx) {
      iter_finish(it);
      *done = true;
      return EM_OK;
    }
    dl_task *t = task_of(it, it->rcvd_idx);
    if (t->state == T_DONE || t->state == T_ERROR || t->state == T_END) {
      int64_t b = it->rcvd_idx++;
      if (t->state == T_END) {
        task_clear(t);
        continue;
      }
      if (t->state == T_DONE) {
        st = hand_out(it, t, out);
        task_clear(t);
        /* Keep the workers busy while the caller works; an error here (a
         * sampler failing) is reported by the next call. */
        if (!st && dispatch(it) && !it->deferred) defer_error(it);
        if (!st && it->src_done) retire_finished(it);
        return st;
      }
      dl_worker *w = &p->w[t->worker];
      if (t->err_sample >= 0)
        em__set_error(t->err, "%s failed on sample %lld of batch %lld: %s", w->name,
                      (long long)t->err_sample, (long long)b, t->msg ? t->msg : "");
      else
        em__set_error(t->err, "%s failed on batch %lld: %s", w->name, (long long)b,
                      t->msg ? t->msg : "");
      st = t->err;
      task_clear(t);
      return st;
    }
    int slice = WAIT_SLICE_MS;
    if (deadline > 0) {
      double left = deadline - now_s();
      if (left <= 0) {
        dl_worker *w = &p->w[t->worker];
        return em__set_error(EM_ERR_TIMEOUT,
                             "DataLoader timed out after %g seconds waiting for batch %lld from %s",
                             it->l->o.timeout, (long long)it->rcvd_idx, w->name);
      }
      if (left * 1000 < slice) slice = (int)(left * 1000) + 1;
    }
    if (spin_wait(p, it, t)) continue;
    if (pump(p, it, slice) || it->l->o.check_interrupt) {
      st = wait_interrupt(it);
      if (st) return st;
    }
    if (p->broken) return fail_from_pool(it);
  }
}

/* ---- in-process loading ------------------------------------------------------------------------ */

static em_status grow_samples(em_dl_iter *it, int64_t n) {
  if (n <= it->samples_cap) return EM_OK;
  if ((uint64_t)n > SIZE_MAX / sizeof(em_dl_sample))
    return em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory for %lld samples", (long long)n);
  em_dl_sample *s = realloc(it->samples, (size_t)n * sizeof *s);
  if (!s) return em__set_error(EM_ERR_NOMEM, "DataLoader: out of memory for %lld samples", (long long)n);
  it->samples = s;
  it->samples_cap = n;
  return EM_OK;
}

static em_status next_inproc(em_dl_iter *it, em_dl_batch *out, bool *done) {
  em_dl_loader *l = it->l;
  int64_t got = 0;
  em_status st;
  if (!l->iterable) {
    const int64_t *idx;
    int64_t n;
    EM_CHECK(next_indices(it, &idx, &n));
    if (n == 0) {
      it->finished = true;
      *done = true;
      return EM_OK;
    }
    EM_CHECK(grow_samples(it, n));
    for (; got < n; got++) {
      it->samples[got].n = 0;
      st = em_dl_dataset_get(l->ds, idx[got], &it->samples[got]);
      if (st) goto fail;
    }
  } else {
    int64_t want = l->o.batch_size > 0 ? l->o.batch_size : 1;
    EM_CHECK(grow_samples(it, want));
    while (got < want && !it->src_done) {
      bool d = false;
      st = em__dl_iter_next(l->ds, it->ds_state, &it->samples[got], &d);
      if (st) goto fail;
      if (d) it->src_done = true;
      else got++;
    }
    if (got == 0 || (got < want && l->o.drop_last && l->o.batch_size > 0)) {
      for (int64_t i = 0; i < got; i++) em_dl_sample_release(&it->samples[i]);
      it->finished = true;
      *done = true;
      return EM_OK;
    }
  }
  em_dl_collate_fn fn = l->o.collate_fn ? l->o.collate_fn
                        : l->o.batch_size > 0 ? em_dl_default_collate : em_dl_default_convert;
  st = em_dl_collate(fn, l->o.collate_ctx, (int)got, it->samples, out);
  for (int64_t i = 0; i < got; i++) em_dl_sample_release(&it->samples[i]);
  if (st) {
    em__prefix_error("DataLoader: collate_fn failed on batch %lld", (long long)it->rcvd_idx);
    it->rcvd_idx++;
    return st;
  }
  out->index = it->rcvd_idx++;
  return EM_OK;
fail:
  for (int64_t i = 0; i < got; i++) em_dl_sample_release(&it->samples[i]);
  it->rcvd_idx++;
  return st;
}

/* ---- public API ----------------------------------------------------------------------------------- */

void em_dl_loader_options_init(em_dl_loader_options *o) {
  memset(o, 0, sizeof *o);
  o->batch_size = 1;
  o->prefetch_factor = 0;
}

em_dl_loader *em_dl_loader_create(em_dl_dataset *d, const em_dl_loader_options *opts) {
  em_dl_loader_options def;
  if (!opts) {
    em_dl_loader_options_init(&def);
    opts = &def;
  }
  if (!d) return EM_FAIL(EM_ERR_INVALID, "DataLoader: dataset is NULL");
  const em_dl_loader_options *o = opts;
  if (o->num_workers < 0)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: num_workers option should be non-negative; use "
                   "num_workers=0 to disable multiprocessing.");
  if (o->num_workers > 1024)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: num_workers=%d is too many (at most 1024)",
                   o->num_workers);
  if (!(o->timeout >= 0)) return EM_FAIL(EM_ERR_INVALID, "DataLoader: timeout option should be non-negative");
  if (o->prefetch_factor < 0)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: prefetch_factor option should be positive, got %d",
                   o->prefetch_factor);
  if ((int64_t)o->prefetch_factor * o->num_workers > EM_DL_MAX_PREFETCH)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: prefetch_factor=%d x num_workers=%d batches in "
                   "flight is too many (at most %d)", o->prefetch_factor, o->num_workers,
                   EM_DL_MAX_PREFETCH);
  if (o->prefetch_factor > 0 && o->num_workers == 0)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: prefetch_factor option could only be specified in "
                   "multiprocessing.let num_workers > 0 to enable multiprocessing.");
  if (o->persistent_workers && o->num_workers == 0)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: persistent_workers option needs num_workers > 0");
  if (o->batch_size < 0)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: batch_size should be a positive integer value, but "
                   "got batch_size=%lld", (long long)o->batch_size);
  if (o->slot_bytes > EM_DL_MAX_SLOT)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: slot_bytes=%zu is too large (at most 2^62)",
                   o->slot_bytes);
  if (o->batch_size > EM_DL_MAX_BATCH)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: batch_size=%lld is too large (at most 2^40)",
                   (long long)o->batch_size);
  if (o->slot_bytes && o->slot_bytes < EM_DL_SLOT_HDR + EM_DL_ALIGN)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: slot_bytes=%zu is smaller than a slot's header "
                   "(%zu bytes) plus data", o->slot_bytes, (size_t)EM_DL_SLOT_HDR);
  bool iterable = em_dl_dataset_is_iterable(d);
  if (iterable) {
    if (o->shuffle)
      return EM_FAIL(EM_ERR_INVALID, "DataLoader with IterableDataset: expected unspecified shuffle "
                     "option, but got shuffle=True");
    if (o->sampler)
      return EM_FAIL(EM_ERR_INVALID, "DataLoader with IterableDataset: expected unspecified sampler "
                     "option, but got sampler=%s", o->sampler->ops.name);
    if (o->batch_sampler)
      return EM_FAIL(EM_ERR_INVALID, "DataLoader with IterableDataset: expected unspecified "
                     "batch_sampler option, but got batch_sampler=%s", o->batch_sampler->ops.name);
  }
  if (o->sampler && o->shuffle)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: sampler option is mutually exclusive with shuffle");
  if (o->sampler && o->sampler->ops.is_batch)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: sampler %s yields batches; pass it as batch_sampler",
                   o->sampler->ops.name);
  if (o->batch_sampler) {
    if (o->batch_size != 1 || o->shuffle || o->sampler || o->drop_last)
      return EM_FAIL(EM_ERR_INVALID, "DataLoader: batch_sampler option is mutually exclusive with "
                     "batch_size, shuffle, sampler, and drop_last");
    if (!o->batch_sampler->ops.is_batch)
      return EM_FAIL(EM_ERR_INVALID, "DataLoader: batch_sampler %s does not yield batches",
                     o->batch_sampler->ops.name);
  }
  if (o->batch_size == 0 && o->drop_last)
    return EM_FAIL(EM_ERR_INVALID, "DataLoader: batch_size=None option disables auto-batching and "
                   "is mutually exclusive with drop_last");
  em_dl_loader *l = calloc(1, sizeof *l);
  if (!l) return EM_FAIL(EM_ERR_NOMEM, "DataLoader: out of memory");
  atomic_init(&l->refs, 1);
  l->o = *o;
  l->pin = -1;
  if (l->o.num_workers > 0 && l->o.prefetch_factor == 0) l->o.prefetch_factor = 2;
  l->iterable = iterable;
  l->ds = em_dl_dataset_retain(d);
  l->o.sampler = NULL;
  l->o.batch_sampler = NULL;
  if (!iterable) {
    em_dl_sampler *s = NULL;
    if (o->batch_sampler) {
      l->bsampler = em_dl_sampler_retain(o->batch_sampler);
    } else {
      if (o->sampler) {
        s = em_dl_sampler_retain(o->sampler);
      } else {
        int64_t n = em_dl_dataset_len(d);
        if (n < 0) goto fail;
        s = o->shuffle ? em_dl_random_sampler_create(n, false, -1, o->generator)
                       : em_dl_sequential_sampler_create(n);
        if (!s) goto fail;
      }
      if (o->batch_size > 0) {
        l->bsampler = em_dl_batch_sampler_create(s, o->batch_size, o->drop_last);
        em_dl_sampler_release(s);
        if (!l->bsampler) goto fail;
      } else {
        l->isampler = s;
      }
    }
  }
  return l;
fail:
  em__prefix_error("DataLoader");
  loader_unref(l);
  return NULL;
}

static void loader_unref(em_dl_loader *l) {
  if (!l || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1) return;
  pool_shutdown(l->pool);
  em_dl_sampler_release(l->bsampler);
  em_dl_sampler_release(l->isampler);
  em_dl_dataset_release(l->ds);
  free(l);
}

void em_dl_loader_destroy(em_dl_loader *l) { loader_unref(l); }

int64_t em_dl_loader_len(em_dl_loader *l) {
  if (!l || l->iterable) return -1;
  return em_dl_sampler_len(l->bsampler ? l->bsampler : l->isampler);
}

static em_status draw_base_seed(em_dl_loader *l, uint64_t *seed) {
  em_tensor *t = em_tensor_randint(0, INT64_MAX, 0, NULL, EM_INT64, l->o.generator);
  if (!t) return em_last_status();
  *seed = (uint64_t)*(int64_t *)em__data_ptr(t);
  em_tensor_release(t);
  return EM_OK;
}

em_dl_iter *em_dl_loader_iter(em_dl_loader *l) {
  if (!l) return EM_FAIL(EM_ERR_INVALID, "DataLoader iter: loader is NULL");
  const em_dl_loader_options *o = &l->o;
  if (o->persistent_workers && l->iter_active)
    return EM_FAIL(EM_ERR_STATE, "DataLoader iter: this loader's persistent workers already serve "
                   "a live iterator; destroy it first");
  em_dl_iter *it = calloc(1, sizeof *it);
  if (!it) return EM_FAIL(EM_ERR_NOMEM, "DataLoader iter: out of memory");
  atomic_fetch_add(&l->refs, 1);
  it->l = l;
  uint64_t seed = 0;
  bool reuse = o->persistent_workers && l->pool;
  if (!reuse && draw_base_seed(l, &seed)) goto fail;
  if (o->num_workers > 0) {
    it->cap = o->prefetch_factor * o->num_workers;
    it->tasks = calloc((size_t)it->cap, sizeof *it->tasks);
    it->sbuf = malloc(sizeof(em__dl_task_msg) + EM_DL_TASK_CHUNK * sizeof(int64_t));
    if (!it->tasks || !it->sbuf) {
      em__set_error(EM_ERR_NOMEM, "DataLoader iter: out of memory");
      goto fail;
    }
    if (reuse) {
      dl_pool *p = l->pool;
      it->pool = p;
      p->epoch++; /* from here on, results of the last pass are stale */
      pump(p, NULL, 0);
      if (p->broken) {
        em__set_error(p->broken, "%s", p->broken_msg);
        l->pool = NULL;
        it->pool = NULL;
        char msg[EM_DL_TEXT_MAX + 256];
        snprintf(msg, sizeof msg, "%s", em_last_error());
        em_status st = p->broken;
        pool_shutdown(p);
        em__set_error(st, "%s", msg);
        goto fail;
      }
      for (int i = 0; i < p->n && !p->broken; i++) {
        dl_worker *w = &p->w[i];
        w->exhausted = false;
        while (!task_room(w) && !p->broken) { /* it is still busy with the last pass's tasks */
          pump(p, NULL, WAIT_SLICE_MS);
          if (wait_interrupt(it)) goto fail;
        }
        if (p->broken) break;
        em__dl_task_msg *e = task_next_entry(p, w);
        memset(e, 0, sizeof *e);
        e->type = EM_DL_MSG_RESET;
        e->epoch = p->epoch;
        task_publish(w);
        wake_worker(w);
      }
    } else {
      /* The first tasks are made before the fork: the sampler's work (a
       * permutation) then writes pages not yet shared with the workers,
       * which costs no copy-on-write faults (at 1 worker, 29 page faults
       * from iter() to the first batch instead of 266), and the tasks go
       * out the moment the workers exist. A sampler that fails here is
       * reported by the first next(), as later in the pass. */
      it->pool = pool_create(l);
      if (!it->pool) goto fail;
      it->owns_pool = true; /* until the workers run */
      if (!l->iterable) {
        it->sit = em_dl_sampler_iter_create(l->bsampler ? l->bsampler : l->isampler);
        if (!it->sit) goto fail;
      }
      if (make_tasks(it)) defer_error(it);
      if (pool_spawn(it->pool, l, seed)) {
        it->pool = NULL; /* pool_spawn freed it */
        goto fail;
      }
      if (o->persistent_workers) l->pool = it->pool;
      if (!it->deferred && flush_pending(it)) defer_error(it);
    }
    it->owns_pool = !o->persistent_workers;
  }
  if (l->iterable) {
    if (o->num_workers == 0) {
      em_clear_error();
      em_status st = l->ds->ops.iter_begin(l->ds->ctx, NULL, &it->ds_state);
      if (st) {
        em__dl_callback_failed(st, "%s: iter_begin", l->ds->ops.name);
        goto fail;
      }
      it->ds_live = true;
    }
  } else if (!it->sit) {
    it->sit = em_dl_sampler_iter_create(l->bsampler ? l->bsampler : l->isampler);
    if (!it->sit) goto fail;
  }
  if (o->persistent_workers) l->iter_active = true;
  return it;
fail:
  em__prefix_error("DataLoader iter");
  if (it->pool && it->owns_pool) pool_shutdown(it->pool);
  it->pool = NULL;
  em_dl_iter_destroy(it);
  return NULL;
}

/* pin_memory: the batch's CPU tensors become copies in pinned host memory
 * and a worker's batch lets go of its slot (its meta, which lives there,
 * is copied to the heap). */
static em_status pin_batch(em_dl_batch *b) {
  for (int i = 0; i < b->n; i++) {
    if (em_tensor_device(b->t[i]).type != EM_CPU || em_tensor_is_pinned(b->t[i])) continue;
    em_tensor *p = em_tensor_pin_memory(b->t[i]);
    if (!p) {
      em__prefix_error("DataLoader");
      return em_last_status();
    }
    em_tensor_release(b->t[i]);
    b->t[i] = p;
  }
  if (b->worker < 0) return EM_OK; /* in-process: the holder keeps only the meta */
  const void *copy = NULL;
  em_storage *meta = NULL;
  if (b->meta_len && !(meta = em__dl_heap_copy(b->meta, b->meta_len, &copy))) return em_last_status();
  if (b->holder) em_storage_release(b->holder);
  b->holder = meta;
  b->meta = copy;
  return EM_OK;
}

em_status em_dl_iter_next(em_dl_iter *it, em_dl_batch *out, bool *done) {
  if (!it || !out || !done) return em__set_error(EM_ERR_INVALID, "DataLoader next: NULL argument");
  memset(out, 0, sizeof *out);
  *done = false;
  if (it->failed)
    return em__set_error(EM_ERR_STATE, "DataLoader: the iterator is unusable after an earlier "
                         "failure: %s", it->failed_msg ? it->failed_msg : "");
  if (it->finished) {
    *done = true;
    return EM_OK;
  }
  em_clear_error();
  em_status st = it->pool ? next_mp(it, out, done) : next_inproc(it, out, done);
  if (st || *done || !it->l->o.pin_memory) return st;
  /* Asked once, at the first batch: making a loader does not start CUDA. */
  if (it->l->pin < 0) it->l->pin = em_cuda_is_available();
  if (it->l->pin && (st = pin_batch(out))) em_dl_batch_release(out);
  return st;
}

void em_dl_iter_destroy(em_dl_iter *it) {
  if (!it) return;
  em_dl_loader *l = it->l;
  if (it->pool) {
    if (it->owns_pool) {
      pool_shutdown(it->pool);
    } else {
      /* Persistent workers keep running: what is still in flight belongs
       * to this pass and is dropped when it arrives. */
      dl_pool *p = it->pool;
      for (int64_t b = it->rcvd_idx; b < it->send_idx; b++) {
        dl_task *t = task_of(it, b);
        dl_worker *w = &p->w[t->worker];
        if (t->state == T_SENT) {
          w->stale++;
          w->inflight--;
        } else if (t->state == T_DONE) {
          slot_set(w->ring, t->slot, SLOT_FREE);
        }
      }
    }
  }
  if (l->o.persistent_workers) l->iter_active = false;
  if (it->tasks)
    for (int i = 0; i < it->cap; i++) {
      task_clear(&it->tasks[i]);
      free(it->tasks[i].idx);
    }
  free(it->tasks);
  free(it->sbuf);
  em_dl_sampler_iter_destroy(it->sit);
  if (it->ds_live && l->ds->ops.iter_end) l->ds->ops.iter_end(l->ds->ctx, it->ds_state);
  free(it->samples);
  free(it->failed_msg);
  free(it->deferred_msg);
  free(it);
  loader_unref(l);
}

int em_dl_iter_worker_pids(em_dl_iter *it, pid_t *pids, int max) {
  if (!it || !it->pool || !pids) return 0;
  int k = 0;
  for (int i = 0; i < it->pool->n && k < max; i++) pids[k++] = it->pool->w[i].pid;
  return k;
}
