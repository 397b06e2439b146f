/* The worker process: its main loop, its ring, and the fd registry that
 * keeps workers from inheriting each other's sockets.
 *
 * A worker is fork()ed by the main process (loader.c) and talks to it
 * through its mailbox (dataloader_impl.h: two queues in shared memory) and
 * one SOCK_SEQPACKET socketpair: tasks in (batch number, target slot,
 * sample indices), results out (batch ready / error / end of stream), file
 * descriptors of shared segments attached with SCM_RIGHTS on the socket. A
 * batch that lands in its slot costs no system call on either side while
 * both are awake. The worker owns
 * a ring of nslots slots in one shared segment that it creates itself,
 * sized from its first batch unless slot_bytes was given, and hands to the
 * main process once. It writes every batch straight into the slot the main
 * process named (or, if the batch does not fit or no slot was free, into a
 * one-off segment sent with the result).
 *
 * It dies with the main process: PR_SET_PDEATHSIG(SIGKILL), a getppid()
 * check after setting it, end-of-file on the socket, and a getppid() check
 * every second while idle. It ignores SIGINT (Ctrl-C reaches the whole
 * process group; the main process decides) and leaves with _exit so the
 * parent's atexit handlers and stdio buffers are not run twice. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dataloader/dataloader_impl.h"

/* ---- fd registry ---------------------------------------------------------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static int *reg_fds;
static int reg_n, reg_cap;

void em__dl_fd_register(int fd) {
  pthread_mutex_lock(&reg_mu);
  if (reg_n == reg_cap) {
    int nc = reg_cap ? reg_cap * 2 : 16;
    int *nf = realloc(reg_fds, (size_t)nc * sizeof *nf);
    if (!nf) { /* losing track only costs a leaked fd copy in a later worker */
      pthread_mutex_unlock(&reg_mu);
      return;
    }
    reg_fds = nf;
    reg_cap = nc;
  }
  reg_fds[reg_n++] = fd;
  pthread_mutex_unlock(&reg_mu);
}

void em__dl_fd_unregister(int fd) {
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < reg_n; i++)
    if (reg_fds[i] == fd) {
      reg_fds[i] = reg_fds[--reg_n];
      break;
    }
  pthread_mutex_unlock(&reg_mu);
}

void em__dl_fork_lock(void) { pthread_mutex_lock(&reg_mu); }
void em__dl_fork_unlock_parent(void) { pthread_mutex_unlock(&reg_mu); }

void em__dl_fork_child_close_fds(void) {
  for (int i = 0; i < reg_n; i++) close(reg_fds[i]);
  reg_n = 0;
  pthread_mutex_init(&reg_mu, NULL); /* the parent's lock was held across fork */
}

/* ---- the mailbox layout (both sides) ---- */

size_t em__dl_task_stride(int64_t batch_size) {
  size_t inline_n = (size_t)em__dl_task_inline(batch_size);
  return em__dl_align(sizeof(em__dl_task_msg) + inline_n * sizeof(int64_t), 64);
}

size_t em__dl_mbox_bytes(int64_t batch_size) {
  return em__dl_align(sizeof(em__dl_mbox) + EM_DL_TASK_Q * em__dl_task_stride(batch_size), 64);
}

em__dl_task_msg *em__dl_task_entry(em__dl_mbox *m, int64_t batch_size, uint64_t i) {
  return (em__dl_task_msg *)((char *)(m + 1) + (i % EM_DL_TASK_Q) * em__dl_task_stride(batch_size));
}

void em__dl_wake(_Atomic int *sleeping, int efd) {
  if (atomic_load(sleeping) && atomic_exchange(sleeping, 0)) {
    uint64_t one = 1;
    while (write(efd, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
}

/* ---- the worker ------------------------------------------------------------------------------ */

typedef struct wk {
  const em__dl_worker_cfg *cfg;
  em_dl_worker_info info;
  uint64_t epoch;
  char *ring;             /* NULL until the first batch (auto size) */
  bool ringless;          /* /dev/shm could not hold the ring: one segment per batch */
  size_t slot_bytes;
  void *iter_state;       /* iterable datasets */
  bool iter_live, exhausted;
  em_dl_sample *samples;
  int64_t samples_cap;
  int64_t *idx;
  int64_t idx_cap;
  char *rbuf;             /* receive buffer */
  size_t rbuf_len;
  em__dl_result_msg msg;
  int64_t hangup_checked; /* CLOCK_MONOTONIC_COARSE ns of the last socket check */
} wk;

/* Leaves without the parent's atexit handlers; stdio was flushed before
 * the fork, so flushing here writes only what this worker printed. */
static _Noreturn void wk_exit(int code) {
  fflush(NULL);
  _exit(code);
}

/* Sends msg (text trimmed) with an optional fd over the socket; the main
 * process gone means we are done. */
static void wk_sock_send(wk *w, int fd) {
  size_t len = offsetof(em__dl_result_msg, text) + strnlen(w->msg.text, EM_DL_TEXT_MAX - 1) + 1;
  w->msg.text[EM_DL_TEXT_MAX - 1] = '\0';
  struct iovec iov = {&w->msg, len};
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } cm;
  if (fd >= 0) {
    memset(&cm, 0, sizeof cm);
    mh.msg_control = cm.buf;
    mh.msg_controllen = sizeof cm.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t r = sendmsg(w->cfg->sock, &mh, MSG_NOSIGNAL);
    if (r >= 0) return;
    if (errno == EINTR) continue;
    wk_exit(0); /* EPIPE / ECONNRESET: the main process went away */
  }
}

/* The main process closed its end: leave now. Asked between samples, it
 * looks at the socket every HANGUP_CHECK_NS of work (a clock read costs
 * nanoseconds, a poll a system call), so a long batch stops soon after
 * the iterator is dropped. */
#define HANGUP_CHECK_NS 10000000LL
static void wk_check_hangup(wk *w) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  if (now - w->hangup_checked < HANGUP_CHECK_NS) return;
  w->hangup_checked = now;
  struct pollfd p = {w->cfg->sock, POLLRDHUP, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) wk_exit(0);
}

/* Wakes the main process if it sleeps (see em__dl_mbox). */
static void wk_wake_main(wk *w) { em__dl_wake(w->cfg->main_sleeping, w->cfg->main_efd); }

/* Reports w->msg: in the result queue when it fits an entry, else over
 * the socket behind a marker. Waits while the queue is full (the main
 * process holds EM_DL_RESULT_Q results unread). */
static void wk_send(wk *w, int fd) {
  const em__dl_worker_cfg *c = w->cfg;
  em__dl_mbox *mb = c->mbox;
  uint64_t tail = atomic_load_explicit(&mb->res_tail, memory_order_relaxed);
  while (tail - atomic_load_explicit(&mb->res_head, memory_order_acquire) >= EM_DL_RESULT_Q) {
    wk_wake_main(w);
    if (getppid() != c->parent) wk_exit(0);
    wk_check_hangup(w);
    struct timespec nap = {0, 200 * 1000};
    nanosleep(&nap, NULL);
  }
  bool inline_ = fd < 0 && !w->msg.text[0] &&
                 (w->msg.type == EM_DL_MSG_BATCH || w->msg.type == EM_DL_MSG_END);
  em__dl_result_entry *e = &mb->res[tail % EM_DL_RESULT_Q];
  *e = (em__dl_result_entry){inline_ ? w->msg.type : EM_DL_MSG_MARK, w->msg.slot, w->msg.batch,
                             w->msg.epoch, 0};
  atomic_store(&mb->res_tail, tail + 1);
  if (!inline_) wk_sock_send(w, fd);
  wk_wake_main(w);
}

static void wk_result(wk *w, uint32_t type, int32_t slot, int64_t batch) {
  memset(&w->msg, 0, offsetof(em__dl_result_msg, text));
  w->msg.text[0] = '\0';
  w->msg.type = type;
  w->msg.slot = slot;
  w->msg.batch = batch;
  w->msg.epoch = w->epoch;
  w->msg.sample = -1;
}

static void wk_error(wk *w, uint32_t type, int64_t batch, int32_t slot, int64_t sample,
                     em_status st, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void wk_error(wk *w, uint32_t type, int64_t batch, int32_t slot, int64_t sample,
                     em_status st, const char *fmt, ...) {
  wk_result(w, type, slot, batch);
  w->msg.sample = sample;
  w->msg.status = st ? st : EM_ERR_INTERNAL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->msg.text, EM_DL_TEXT_MAX, fmt, ap);
  va_end(ap);
  wk_send(w, -1);
}

static _Noreturn void wk_fatal(wk *w, const char *what) {
  em_status st = em_last_status();
  /* the status travels beside the text (a Python exception's class maps
   * to a status whose name would only mislead here) */
  wk_error(w, EM_DL_MSG_FATAL, -1, -1, -1, st, "%s: %s", what, em_last_error());
  wk_exit(1);
}

/* Creates the ring (nslots x slot_bytes) and sends its fd. */
static em_status wk_make_ring(wk *w, size_t slot_bytes) {
  const em__dl_worker_cfg *c = w->cfg;
  size_t total;
  if (__builtin_mul_overflow(slot_bytes, (size_t)c->nslots, &total))
    return em__set_error(EM_ERR_NOMEM, "ring size overflows");
  char what[160], sb[32];
  snprintf(what, sizeof what, "DataLoader worker %d: its ring of %d slots x %s", c->id, c->nslots,
           em__dl_fmt_bytes((double)slot_bytes, sb, sizeof sb));
  int fd;
  void *p;
  EM_CHECK(em__dl_segment_create(total, what, &fd, &p));
  w->ring = p;
  w->slot_bytes = slot_bytes;
  wk_result(w, EM_DL_MSG_RING, -1, -1);
  w->msg.nslots = c->nslots;
  w->msg.bytes = slot_bytes;
  wk_send(w, fd);
  close(fd);
  return EM_OK;
}

/* wk_make_ring, or, where /dev/shm cannot hold the ring, none: every
 * batch then travels in a segment of exactly its size (as torch's) and
 * the main process warns. Any other failure ends the worker. */
static void wk_ring_or_none(wk *w, size_t slot_bytes) {
  if (!wk_make_ring(w, slot_bytes)) return;
  if (em_last_status() != EM_ERR_NOMEM) wk_fatal(w, "cannot create its shared-memory ring");
  w->ringless = true;
}

static em_status wk_grow_samples(wk *w, int64_t n) {
  if (n <= w->samples_cap) return EM_OK;
  if ((uint64_t)n > SIZE_MAX / sizeof(em_dl_sample))
    return em__set_error(EM_ERR_NOMEM, "out of memory for %lld samples", (long long)n);
  em_dl_sample *s = realloc(w->samples, (size_t)n * sizeof *s);
  if (!s) return em__set_error(EM_ERR_NOMEM, "out of memory for %lld samples", (long long)n);
  w->samples = s;
  w->samples_cap = n;
  return EM_OK;
}

static void wk_release_samples(wk *w, int64_t n) {
  for (int64_t i = 0; i < n; i++) em_dl_sample_release(&w->samples[i]);
}

/* Runs one task: fetch, collate into the slot (or a one-off segment),
 * report. */
static void wk_task(wk *w, int64_t batch, int32_t slot, int64_t n) {
  const em__dl_worker_cfg *c = w->cfg;
  em__dl_mbox *stat = c->mbox;
  atomic_store_explicit(&stat->batch, batch, memory_order_relaxed);
  int64_t want = n >= 0 ? n : (c->batch_size > 0 ? c->batch_size : 1);
  int64_t got = 0;
  em_status st = wk_grow_samples(w, want);
  if (st) {
    wk_error(w, EM_DL_MSG_ERROR, batch, slot, -1, st, "%s", em_last_error());
    return;
  }
  if (!c->iterable) {
    for (; got < n; got++) {
      int64_t index = w->idx[got];
      atomic_store_explicit(&stat->sample, index, memory_order_relaxed);
      wk_check_hangup(w);
      w->samples[got].n = 0;
      em_clear_error();
      st = em_dl_dataset_get(c->dataset, index, &w->samples[got]);
      if (st) {
        wk_release_samples(w, got);
        wk_error(w, EM_DL_MSG_ERROR, batch, slot, index, st, "%s", em_last_error());
        atomic_store_explicit(&stat->sample, -1, memory_order_relaxed);
        return;
      }
    }
  } else {
    if (w->exhausted) {
      wk_result(w, EM_DL_MSG_END, slot, batch);
      wk_send(w, -1);
      return;
    }
    for (; got < want; got++) {
      bool done = false;
      wk_check_hangup(w);
      st = em__dl_iter_next(c->dataset, w->iter_state, &w->samples[got], &done);
      if (st) {
        wk_release_samples(w, got);
        wk_error(w, EM_DL_MSG_ERROR, batch, slot, -1, st, "%s", em_last_error());
        return;
      }
      if (done) {
        w->exhausted = true;
        break;
      }
    }
    if (got == 0 || (got < want && c->drop_last && c->batch_size > 0)) {
      wk_release_samples(w, got);
      wk_result(w, EM_DL_MSG_END, slot, batch);
      wk_send(w, -1);
      return;
    }
  }
  atomic_store_explicit(&stat->sample, -1, memory_order_relaxed);

  /* Collate straight into the slot when the ring exists. */
  em_dl_batch_builder b;
  bool in_slot = w->ring && slot >= 0;
  char *slot_base = in_slot ? w->ring + (size_t)slot * w->slot_bytes : NULL;
  if (in_slot) st = em__dl_builder_init_slot(&b, slot_base + EM_DL_SLOT_HDR,
                                             w->slot_bytes - EM_DL_SLOT_HDR);
  else em__dl_builder_init_heap(&b), st = EM_OK;
  em_dl_collate_fn fn = c->collate_fn ? c->collate_fn
                        : c->batch_size > 0 ? em_dl_default_collate : em_dl_default_convert;
  em_clear_error();
  if (!st) st = fn(c->collate_ctx, (int)got, w->samples, &b);
  wk_release_samples(w, got);
  if (st) {
    /* "collate_fn: <its message>", or the loader's for a silent failure */
    bool silent = em_last_status() == EM_OK || !em_last_error()[0];
    em__dl_callback_failed(st, "collate_fn");
    wk_error(w, EM_DL_MSG_ERROR, batch, slot, -1, st, "%s%s", silent ? "" : "collate_fn: ",
             em_last_error());
    em__dl_builder_deinit(&b);
    return;
  }
  if (!w->ring && !w->ringless && c->nslots > 0) {
    size_t need = EM_DL_SLOT_HDR + em__dl_builder_compact_bytes(&b);
    wk_ring_or_none(w, em__dl_align(need + need / 4, 4096));
  }
  if (slot >= 0 && w->ring) {
    em__dl_slot_header *h = (em__dl_slot_header *)(w->ring + (size_t)slot * w->slot_bytes);
    st = em__dl_builder_write(&b, h, w->slot_bytes - EM_DL_SLOT_HDR, in_slot);
    if (!st) {
      h->batch = batch;
      h->epoch = w->epoch;
      em__dl_builder_deinit(&b);
      wk_result(w, EM_DL_MSG_BATCH, slot, batch);
      wk_send(w, -1);
      return;
    }
    if (st != EM_ERR_NOMEM) {
      em__dl_builder_deinit(&b);
      wk_error(w, EM_DL_MSG_ERROR, batch, slot, -1, st, "%s", em_last_error());
      return;
    }
  }
  /* A one-off segment of exactly the batch's size. */
  size_t len = EM_DL_SLOT_HDR + em__dl_builder_compact_bytes(&b);
  char what[96];
  snprintf(what, sizeof what, "DataLoader worker %d: a one-off segment for batch %lld", c->id,
           (long long)batch);
  int fd;
  void *p;
  st = em__dl_segment_create(len, what, &fd, &p);
  if (!st) {
    em__dl_slot_header *h = p;
    st = em__dl_builder_write(&b, h, len - EM_DL_SLOT_HDR, false);
    h->batch = batch;
    h->epoch = w->epoch;
    munmap(p, len);
    if (!st) {
      em__dl_builder_deinit(&b);
      wk_result(w, EM_DL_MSG_BATCH, slot, batch);
      w->msg.bytes = len;
      wk_send(w, fd);
      close(fd);
      return;
    }
    close(fd);
  }
  em__dl_builder_deinit(&b);
  wk_error(w, EM_DL_MSG_ERROR, batch, slot, -1, st, "%s", em_last_error());
}

static void wk_iter_restart(wk *w) {
  const em__dl_worker_cfg *c = w->cfg;
  if (!c->iterable) return;
  if (w->iter_live && c->dataset->ops.iter_end) c->dataset->ops.iter_end(c->dataset->ctx, w->iter_state);
  w->iter_live = false;
  w->exhausted = false;
  w->iter_state = NULL;
  em_clear_error();
  em_status st = c->dataset->ops.iter_begin(c->dataset->ctx, &w->info, &w->iter_state);
  if (st) {
    em__dl_callback_failed(st, "%s: iter_begin", c->dataset->ops.name);
    wk_fatal(w, "iter_begin of the dataset failed");
  }
  w->iter_live = true;
}

/* Blocks for the next message on the socket; exits on EOF or when
 * orphaned. */
static ssize_t wk_sock_recv(wk *w) {
  const em__dl_worker_cfg *c = w->cfg;
  ssize_t q = recv(c->sock, w->rbuf, w->rbuf_len, MSG_TRUNC | MSG_DONTWAIT);
  if (q > 0 && (size_t)q <= w->rbuf_len) return q;
  if (q == 0) wk_exit(0);
  if (q > 0) wk_exit(2);
  for (;;) {
    struct pollfd p = {c->sock, POLLIN, 0};
    int r = poll(&p, 1, 1000);
    if (r < 0 && errno != EINTR) wk_exit(1);
    if (getppid() != c->parent) wk_exit(0);
    if (r <= 0) continue;
    ssize_t n = recv(c->sock, w->rbuf, w->rbuf_len, MSG_TRUNC);
    if (n == 0) wk_exit(0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      wk_exit(0);
    }
    if ((size_t)n > w->rbuf_len) wk_exit(2); /* protocol error: cannot happen */
    return n;
  }
}

/* Sleeps until the main process publishes a task (its eventfd), closes
 * the socket, or a second passes; exits when orphaned. */
static void wk_sleep(wk *w, uint64_t head) {
  const em__dl_worker_cfg *c = w->cfg;
  em__dl_mbox *mb = c->mbox;
  atomic_store(&mb->worker_sleeping, 1);
  if (atomic_load(&mb->task_tail) != head) {
    atomic_store(&mb->worker_sleeping, 0);
    return;
  }
  struct pollfd p[2] = {{c->sock, POLLIN | POLLRDHUP, 0}, {c->efd, POLLIN, 0}};
  int r = poll(p, 2, 1000);
  atomic_store(&mb->worker_sleeping, 0);
  if (r < 0 && errno != EINTR) wk_exit(1);
  if (getppid() != c->parent) wk_exit(0);
  if (r <= 0) return;
  if (p[1].revents & POLLIN) {
    uint64_t v;
    if (read(c->efd, &v, sizeof v) < 0 && errno != EAGAIN && errno != EINTR) wk_exit(1);
  }
  if (p[0].revents & (POLLHUP | POLLRDHUP | POLLERR)) wk_exit(0);
  if (p[0].revents & POLLIN) {
    char b;
    /* data is only ever sent behind a published marker: this is EOF, or
     * a marker this thread will see on its next look */
    if (recv(c->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) wk_exit(0);
  }
}

/* The next message from the main process, into w->rbuf: from the task
 * queue, or from the socket when the queue holds a marker. Blocks. */
static ssize_t wk_recv(wk *w) {
  const em__dl_worker_cfg *c = w->cfg;
  em__dl_mbox *mb = c->mbox;
  for (;;) {
    uint64_t head = atomic_load_explicit(&mb->task_head, memory_order_relaxed);
    if (atomic_load_explicit(&mb->task_tail, memory_order_acquire) == head) {
      wk_sleep(w, head);
      continue;
    }
    const em__dl_task_msg *e = em__dl_task_entry(mb, c->batch_size, head);
    if (e->type == EM_DL_MSG_MARK) {
      atomic_store_explicit(&mb->task_head, head + 1, memory_order_release);
      return wk_sock_recv(w);
    }
    int64_t cnt = e->count;
    if (cnt < 0 || cnt > em__dl_task_inline(c->batch_size)) wk_exit(2); /* cannot happen */
    size_t len = sizeof *e + (size_t)cnt * sizeof(int64_t);
    memcpy(w->rbuf, e, len);
    atomic_store_explicit(&mb->task_head, head + 1, memory_order_release);
    return (ssize_t)len;
  }
}

_Noreturn void em__dl_worker_main(const em__dl_worker_cfg *cfg) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != cfg->parent) _exit(0); /* the parent died before prctl */
  signal(SIGINT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, SIG_DFL); /* not the parent's handler (a binding's) */
  signal(SIGCHLD, SIG_DFL);
  static wk w;
  memset(&w, 0, sizeof w);
  w.cfg = cfg;
  w.info = (em_dl_worker_info){cfg->id, cfg->num_workers, cfg->seed, cfg->dataset};
  em__dl_worker_info = &w.info;
  w.rbuf_len = sizeof(em__dl_task_msg) + EM_DL_TASK_CHUNK * sizeof(int64_t);
  w.rbuf = malloc(w.rbuf_len);
  if (!w.rbuf) _exit(1);
  em_set_num_threads(1); /* as torch: no kernel threads per worker */
  em_manual_seed(cfg->seed);
  if (cfg->worker_init_fn) {
    em_clear_error();
    em_status st = cfg->worker_init_fn(cfg->worker_init_ctx, cfg->id);
    if (st) {
      em__dl_callback_failed(st, "worker_init_fn");
      wk_fatal(&w, "worker_init_fn failed");
    }
  }
  if (cfg->slot_bytes) wk_ring_or_none(&w, cfg->slot_bytes);
  if (cfg->iterable) wk_iter_restart(&w);

  for (;;) {
    ssize_t n = wk_recv(&w);
    if ((size_t)n < sizeof(uint32_t)) continue;
    em__dl_task_msg *m = (em__dl_task_msg *)w.rbuf;
    if (m->type == EM_DL_MSG_RESET) {
      w.epoch = m->epoch;
      wk_iter_restart(&w);
      continue;
    }
    if (m->type != EM_DL_MSG_TASK || (size_t)n < sizeof *m) continue;
    int64_t batch = m->batch, total = m->n;
    int32_t slot = m->slot;
    if (m->epoch != w.epoch) w.epoch = m->epoch;
    if (total > 0) {
      if (total > w.idx_cap) {
        int64_t *ni = realloc(w.idx, (size_t)total * sizeof *ni);
        if (!ni) {
          /* drain the rest of the task, then report */
          for (int64_t have = m->count; have < total;) {
            wk_sock_recv(&w);
            have += ((em__dl_task_msg *)w.rbuf)->count;
          }
          wk_error(&w, EM_DL_MSG_ERROR, batch, slot, -1, EM_ERR_NOMEM,
                   "out of memory for %lld indices", (long long)total);
          continue;
        }
        w.idx = ni;
        w.idx_cap = total;
      }
      int64_t have = 0;
      for (;;) {
        em__dl_task_msg *t = (em__dl_task_msg *)w.rbuf;
        if (t->first < 0 || t->count < 0 || t->first + t->count > total) _exit(2);
        memcpy(w.idx + t->first, t->indices, (size_t)t->count * sizeof(int64_t));
        have += t->count;
        if (have >= total) break;
        wk_sock_recv(&w); /* the rest of a task follows its first part */
      }
    }
    wk_task(&w, batch, slot, total);
    atomic_store_explicit(&cfg->mbox->batch, -1, memory_order_relaxed);
  }
}
