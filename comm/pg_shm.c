/* The shm backend: the ranks of one host exchange through one shared-memory
 * segment per group instance. No sockets, no kernel on the fast path: ranks
 * publish sequence numbers with C11 release stores and peers poll them
 * with acquire loads (a short spin, then sched_yield, then a futex sleep).
 *
 * Segment: "/ember-<uid>-<group>" (uid: the 64-bit id rank 0 drew for this
 * group instance, in hex; group: the sanitised group name). Rank 0 checks
 * /dev/shm's free space (statvfs), creates it (O_EXCL, 0600), reserves the
 * memory with posix_fallocate (so a full /dev/shm is an error here, not a
 * SIGBUS later) and publishes the name through the store ("shm/seg"); the
 * others open and map it, and the last one to map it unlinks the name at
 * once, before any collective runs: from then on the memory lives only in
 * the mappings, so even SIGKILL of every rank leaves nothing in /dev/shm.
 * Every failing setup path unlinks too and tells the others (the store key
 * "shm/error", the segment's ready flag), so nobody waits for a peer that
 * gave up. The one window left — every rank killed between the creation
 * and the last mapping — is swept by the next group's rank 0: it removes
 * ember segments whose setup never finished and whose creator is dead.
 *
 * Layout (offsets in the header; every region cache-line or page aligned):
 *   header       magic, layout parameters, attach/ready counters, the
 *                group's failure flag and message
 *   ranks[W]     pid, pid-namespace inode, "left" flag of each rank
 *   ctrl[W]      one 128-byte line per rank, written only by that rank:
 *                step counters copied / reduced / done of the large path,
 *                and a futex word + sleeper count for wake-ups
 *   small[W][2]  two small buffers per rank: line 0 holds the sequence
 *                number, the collective's descriptor and the first 24 bytes
 *                of data (so an 8-byte allreduce moves one cache line per
 *                rank), the rest up to small_cap bytes of data
 *   large[W][D]  D step buffers of step_bytes per rank
 *   p2p[W][W-1]  a ring of chunk slots per ordered pair (send/recv)
 *
 * Protocol. Every collective starts with a small exchange: each rank
 * writes its descriptor (kind, dtype, op, root, count, path) and — when the
 * data fits (small path) — its payload into small buffer s & 1 and
 * publishes s; each rank then reads the buffers it needs (all, or the
 * root's) and checks the descriptors match its own call (a mismatch is an
 * error naming both calls, never corruption). Before writing buffer s & 1 a
 * rank waits until every peer has published s - 1, i.e. has finished
 * exchange s - 2, the last reader of that buffer. Small allreduce: every
 * rank reduces all W payloads in rank order (identical bits everywhere).
 *
 * Large path (pipelined over steps of step_bytes per rank, D = 2 buffers
 * in flight; step numbers are global and monotonic, so no counter is ever
 * reset): allreduce = reduce-scatter + allgather in shared memory: each
 * rank copies the W - 1 slices of the step it does not own into its step
 * buffer (copied = g + 1); rank r reduces slice r from its own input and
 * the peers' buffers straight into its output, copies the result into its
 * buffer (reduced = g + 1), copies the next step in, then copies every
 * peer's reduced slice out (done = g + 1). A buffer is rewritten only when
 * every peer's done has passed the step that last used it. So each byte is
 * copied in once, reduced once (by one rank, in parallel across ranks) and
 * copied out once: the 2(W-1)/W volume of a ring, with no extra copies.
 * broadcast / scatter: the root copies in, the others copy out; gather the
 * reverse; allgather / reduce_scatter / all_to_all: everyone copies in,
 * then everyone copies out (reduces) its part.
 *
 * send/recv: a ring of nslots chunks per ordered pair (head written by the
 * sender, tail by the receiver); a message is a run of chunks whose first
 * carries the tag and length. A receive takes the first message with its
 * tag; messages with other tags that arrive first are moved to a private
 * list (MPI's unexpected queue). A sender waiting for ring space drains its
 * own incoming rings into that list, so two ranks that both send first
 * cannot deadlock.
 *
 * Failure: while waiting, a rank checks every ~2 ms the group's failure
 * flag, its own abort flag, the deadline, and whether the peer it waits
 * for is alive (a pidfd opened at setup, polled; kill(pid, 0) where pidfds
 * are missing; skipped for a peer in another pid namespace) or has left
 * (destroyed its group). A dead peer is "rank 3 (pid 1234) died during
 * allreduce"; every error also sets the group's failure flag with its
 * message, so the other ranks fail at once with the cause.
 *
 * Tunables (rank 0's environment decides, the others read the header):
 * EMBER_SHM_STEP_BYTES (step buffer per rank, default 512 KiB),
 * EMBER_SHM_SMALL_BYTES (largest small-path allreduce, default 16 KiB).
 * Test hook: em__pg_shm_set_test_free_bytes(n) makes the /dev/shm check
 * see n free bytes (n < 0: the real figure). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"

#define SHM_MAGIC 0x314d48535245424dull /* "MBERSHM1" */
#define SHM_VERSION 2u
#define LINE 128u
#define PAGE 4096u
#define SMALL_HDR 40u
#define DEF_SMALL_CAP (64u << 10)
#define DEF_STEP_BYTES (512u << 10)
#define DEF_SMALL_ALLREDUCE (16u << 10)
#define NDBUF 2u
#define P2P_NSLOTS 4u
#define P2P_HDR 64u
#define FAIL_MSG 1024u
#define CHECK_NS 2000000ll   /* health checks every 2 ms of waiting */
#define SLEEP_NS 2000000ll   /* futex sleeps at most 2 ms */
#define SHM_DIR "/dev/shm"

/* ---- the segment's structures ------------------------------------------------- */

typedef struct seg_header {
  uint64_t magic, version, seg_bytes;
  int64_t size;
  uint64_t small_cap, step_bytes, ndbuf, p2p_slot, p2p_nslots, small_allreduce;
  uint64_t off_rank, off_ctrl, off_small, off_large, off_p2p;
  _Atomic uint32_t attached; /* ranks that mapped the segment */
  _Atomic uint32_t ready;    /* 0 setting up, 1 ready (name unlinked), 2 setup failed */
  _Atomic uint32_t fail_claim; /* 0, or rank + 1 of the first rank to fail the group */
  _Atomic uint32_t failed;   /* set (= fail_claim) once fail_msg is written */
  char fail_msg[FAIL_MSG];
} seg_header;

typedef struct seg_rank {
  _Atomic int64_t pid;
  _Atomic uint64_t pidns;
  _Atomic uint32_t left; /* destroyed its group */
  uint32_t pad;
  char pad2[LINE - 24];
} seg_rank;

typedef struct seg_ctrl {
  _Atomic uint64_t copied, reduced, done;
  _Atomic uint32_t futex, sleepers;
  char pad[LINE - 32];
} seg_ctrl;
_Static_assert(sizeof(seg_ctrl) == LINE, "one control line per rank");

/* Line 0 of a small buffer; data follows at SMALL_HDR. */
typedef struct seg_small {
  _Atomic uint64_t seq;
  uint8_t kind, dtype, op, flags;
  int32_t root;
  int64_t count;
  uint64_t nbytes;
  uint64_t pad;
} seg_small;
_Static_assert(sizeof(seg_small) == SMALL_HDR, "small header");

#define FL_LARGE 1u

typedef struct chan_ctl {
  _Atomic uint64_t head; /* chunks written by the sender */
  char pad1[LINE - 8];
  _Atomic uint64_t tail; /* chunks consumed by the receiver */
  char pad2[LINE - 8];
} chan_ctl;

typedef struct chunk_hdr {
  int64_t tag;
  uint64_t msg_bytes;
  uint64_t chunk_bytes;
  uint64_t first;
} chunk_hdr;

/* ---- the backend instance ------------------------------------------------------ */

/* A message that arrived before its receive (copied out of the ring). */
typedef struct umsg {
  struct umsg *next;
  int64_t tag;
  size_t len, got;
  char *data;
} umsg;

typedef struct rxq {
  umsg *head, *tail;
  umsg *open;       /* the last message of the list while chunks still arrive */
  uint64_t consumed; /* chunks taken from the ring (mirror of its tail) */
} rxq;

typedef struct shm {
  const em_pg_backend_ops *ops;
  int rank, size;
  int *labels; /* rank numbers to print (global ranks under pg_hier) */
  char name[256];
  char *base;
  size_t seg_bytes;
  seg_header *hdr;
  seg_rank *ranks;
  seg_ctrl *ctrl;
  char *small, *large, *p2p;
  size_t small_buf, chan_bytes, small_cap, step_bytes, p2p_slot, small_allreduce;
  unsigned ndbuf, nslots;
  uint64_t sseq;   /* small exchanges done */
  uint64_t *seen;  /* per peer: a small seq it is known to have posted */
  uint64_t step;   /* large steps done */
  uint64_t *tx_head; /* per destination: chunks written */
  rxq *rx;         /* per source */
  int *pidfd;
  bool *pid_check;
  bool oversub;
  _Atomic int aborted;
  em_coll *cur; /* the collective being run (messages, deadline) */
  int64_t spin_ns;
} shm;

static int64_t test_free_bytes = -1;

void em__pg_shm_set_test_free_bytes(int64_t n);
void em__pg_shm_set_test_free_bytes(int64_t n) { test_free_bytes = n; }

/* pg_hier prints global ranks in its local groups' messages. */
void em__pg_shm_set_labels(void *ctx, const int *labels);
void em__pg_shm_set_labels(void *ctx, const int *labels) {
  shm *x = ctx;
  if (x->labels)
    for (int i = 0; i < x->size; i++) x->labels[i] = labels[i];
}

static inline int lab(const shm *x, int r) { return x->labels ? x->labels[r] : r; }

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static inline seg_small *small_at(const shm *x, int r, uint64_t s) {
  return (seg_small *)(x->small + ((size_t)r * 2 + (s & 1)) * x->small_buf);
}
static inline char *small_data(seg_small *b) { return (char *)b + SMALL_HDR; }
static inline char *slot_at(const shm *x, int r, uint64_t g) {
  return x->large + ((size_t)r * x->ndbuf + g % x->ndbuf) * x->step_bytes;
}
static inline chan_ctl *chan_at(const shm *x, int src, int dst) {
  size_t i = (size_t)src * (size_t)(x->size - 1) + (size_t)(dst < src ? dst : dst - 1);
  return (chan_ctl *)(x->p2p + i * x->chan_bytes);
}
static inline char *chunk_at(const shm *x, chan_ctl *c, uint64_t i) {
  return (char *)c + sizeof(chan_ctl) + (size_t)(i % x->nslots) * x->p2p_slot;
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

/* Publishes *p = v (release + the store-load order the sleeper protocol
 * needs), then wakes whoever sleeps on this rank's futex. */
static inline void publish(shm *x, _Atomic uint64_t *p, uint64_t v) {
  atomic_store_explicit(p, v, memory_order_seq_cst);
  seg_ctrl *me = &x->ctrl[x->rank];
  if (EM_UNLIKELY(atomic_load_explicit(&me->sleepers, memory_order_seq_cst) != 0)) {
    atomic_fetch_add_explicit(&me->futex, 1, memory_order_seq_cst);
    futex(&me->futex, FUTEX_WAKE, INT_MAX, NULL);
  }
}

static void wake_all(shm *x) {
  if (!x->ctrl) return;
  for (int r = 0; r < x->size; r++) {
    atomic_fetch_add_explicit(&x->ctrl[r].futex, 1, memory_order_seq_cst);
    futex(&x->ctrl[r].futex, FUTEX_WAKE, INT_MAX, NULL);
  }
}

static const char *cur_name(const shm *x) {
  return x->cur ? em__coll_name(x->cur->kind) : "setup";
}

/* Records the group's first failure in the segment so every rank fails at
 * once with the cause. */
static void fail_group(shm *x, const char *msg) {
  if (!x->hdr) return;
  uint32_t zero = 0;
  if (atomic_compare_exchange_strong(&x->hdr->fail_claim, &zero, (uint32_t)x->rank + 1)) {
    snprintf(x->hdr->fail_msg, sizeof x->hdr->fail_msg, "%s", msg);
    atomic_store_explicit(&x->hdr->failed, (uint32_t)x->rank + 1, memory_order_release);
  }
  wake_all(x);
}

static bool peer_dead(shm *x, int q) {
  if (x->pidfd[q] >= 0) {
    struct pollfd p = {.fd = x->pidfd[q], .events = POLLIN};
    return poll(&p, 1, 0) > 0;
  }
  if (!x->pid_check[q]) return false;
  pid_t pid = (pid_t)atomic_load(&x->ranks[q].pid);
  return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
}

/* The periodic checks of a wait: abort, the group's failure, the peer's
 * death or departure, the deadline. */
static em_status health(shm *x, int peer) {
  if (atomic_load(&x->aborted))
    return em__set_error(EM_ERR_COMM, "shm backend: %s aborted (the group was aborted)",
                         cur_name(x));
  if (x->hdr) {
    uint32_t f = atomic_load_explicit(&x->hdr->failed, memory_order_acquire);
    if (f) {
      if ((int)f - 1 == x->rank) return em__set_error(EM_ERR_COMM, "%s", x->hdr->fail_msg);
      return em__set_error(EM_ERR_COMM, "shm backend: %s failed: rank %d broke the group: %s",
                           cur_name(x), lab(x, (int)f - 1), x->hdr->fail_msg);
    }
  }
  if (peer >= 0 && peer != x->rank) {
    if (atomic_load(&x->ranks[peer].left))
      return em__set_error(EM_ERR_COMM,
                           "shm backend: rank %d left the group (destroyed it) during %s",
                           lab(x, peer), cur_name(x));
    if (peer_dead(x, peer))
      return em__set_error(EM_ERR_COMM, "shm backend: rank %d (pid %lld) died during %s",
                           lab(x, peer), (long long)atomic_load(&x->ranks[peer].pid),
                           cur_name(x));
  }
  if (x->cur && x->cur->deadline_ms > 0 && em__now_ms() >= x->cur->deadline_ms) {
    char d[160];
    return em__set_error(EM_ERR_TIMEOUT, "shm backend: %s timed out waiting for rank %d",
                         em__coll_desc(x->cur, d, sizeof d), lab(x, peer < 0 ? x->rank : peer));
  }
  return EM_OK;
}

static em_status rx_pull(shm *x, int src);

/* Waits until *p >= target, written by rank peer. Spins (short when the
 * host is oversubscribed), then yields, then sleeps on peer's futex; every
 * CHECK_NS runs the health checks. drain: also pull every incoming p2p
 * ring meanwhile (a sender waiting for space). */
static em_status wait_slow(shm *x, int peer, _Atomic uint64_t *p, uint64_t target, bool drain) {
  int64_t t0 = now_ns(), next_check = t0 + CHECK_NS / 8;
  seg_ctrl *pc = &x->ctrl[peer];
  for (unsigned it = 1;; it++) {
    if (atomic_load_explicit(p, memory_order_acquire) >= target) return EM_OK;
    if (drain)
      for (int s = 0; s < x->size; s++)
        if (s != x->rank) EM_CHECK(rx_pull(x, s));
    if ((it & 31) && !drain) {
      em__cpu_relax();
      continue;
    }
    int64_t t = now_ns();
    if (t >= next_check) {
      EM_CHECK(health(x, peer));
      next_check = t + CHECK_NS;
    }
    int64_t waited = t - t0;
    if (waited < x->spin_ns) {
      em__cpu_relax();
    } else if (waited < 1000000 || drain) {
      sched_yield();
    } else {
      atomic_fetch_add_explicit(&pc->sleepers, 1, memory_order_seq_cst);
      uint32_t v = atomic_load_explicit(&pc->futex, memory_order_seq_cst);
      if (atomic_load_explicit(p, memory_order_seq_cst) < target && !atomic_load(&x->aborted)) {
        struct timespec ts = {0, SLEEP_NS};
        futex(&pc->futex, FUTEX_WAIT, v, &ts);
      }
      atomic_fetch_sub_explicit(&pc->sleepers, 1, memory_order_seq_cst);
    }
  }
}

static inline em_status wait_ge(shm *x, int peer, _Atomic uint64_t *p, uint64_t target) {
  if (EM_LIKELY(atomic_load_explicit(p, memory_order_acquire) >= target)) return EM_OK;
  for (int i = 0; i < 64; i++) {
    em__cpu_relax();
    if (atomic_load_explicit(p, memory_order_acquire) >= target) return EM_OK;
  }
  return wait_slow(x, peer, p, target, false);
}

/* ---- small exchanges ------------------------------------------------------------ */

/* Waits until buffer (sseq + 1) & 1 of this rank is free (every peer has
 * posted sseq) and returns its data area. */
static em_status small_begin(shm *x, char **data) {
  uint64_t s = x->sseq + 1;
  if (s >= 2) {
    for (int q = 0; q < x->size; q++) {
      if (q == x->rank || x->seen[q] >= s - 1) continue;
      EM_CHECK(wait_ge(x, q, &small_at(x, q, s - 1)->seq, s - 1));
      x->seen[q] = s - 1;
    }
  }
  *data = small_data(small_at(x, x->rank, s));
  return EM_OK;
}

static void small_publish(shm *x, const em_coll *c, uint8_t flags, size_t nbytes) {
  uint64_t s = ++x->sseq;
  seg_small *b = small_at(x, x->rank, s);
  b->kind = (uint8_t)c->kind;
  b->dtype = (uint8_t)c->dtype;
  b->op = (uint8_t)c->op;
  b->flags = flags;
  b->root = c->root;
  b->count = c->count;
  b->nbytes = nbytes;
  publish(x, &b->seq, s);
}

/* "allreduce(float32, 12 elements, sum)" for a peer's descriptor. */
static const char *peer_desc(const seg_small *b, char *buf, size_t size) {
  em_coll c = {.kind = (em_coll_kind)b->kind,
               .dtype = (em_dtype)b->dtype,
               .op = (em_reduce_op)b->op,
               .root = b->root,
               .count = b->count};
  return em__coll_desc(&c, buf, size);
}

static bool has_op(em_coll_kind k) {
  return k == EM_COLL_ALLREDUCE || k == EM_COLL_REDUCE || k == EM_COLL_REDUCE_SCATTER;
}
static bool has_root(em_coll_kind k) {
  return k == EM_COLL_BROADCAST || k == EM_COLL_REDUCE || k == EM_COLL_GATHER ||
         k == EM_COLL_SCATTER;
}

/* Waits for peer q's part of the current exchange and checks it describes
 * the same collective as ours. */
static em_status small_read(shm *x, const em_coll *c, uint8_t flags, int q, seg_small **out) {
  uint64_t s = x->sseq;
  seg_small *b = small_at(x, q, s);
  if (q != x->rank) {
    EM_CHECK(wait_ge(x, q, &b->seq, s));
    if (x->seen[q] < s) x->seen[q] = s;
  }
  bool same = b->kind == (uint8_t)c->kind && b->dtype == (uint8_t)c->dtype;
  if (same && c->kind != EM_COLL_BARRIER && c->kind != EM_COLL_ALL_TO_ALL)
    same = b->count == c->count && b->flags == flags;
  if (same && has_op(c->kind)) same = b->op == (uint8_t)c->op;
  if (same && has_root(c->kind)) same = b->root == c->root;
  if (EM_UNLIKELY(!same)) {
    char mine[160], theirs[160];
    return em__set_error(EM_ERR_COMM,
                         "shm backend: collective mismatch at collective #%llu: rank %d called "
                         "%s but rank %d called %s",
                         (unsigned long long)s, lab(x, x->rank),
                         em__coll_desc(c, mine, sizeof mine), lab(x, q),
                         peer_desc(b, theirs, sizeof theirs));
  }
  *out = b;
  return EM_OK;
}

/* The handshake of a large collective: descriptors only (plus extra bytes,
 * e.g. all_to_all's counts), read from every peer (all) or from the root. */
static em_status handshake(shm *x, const em_coll *c, bool all, const void *extra, size_t n) {
  char *d;
  EM_CHECK(small_begin(x, &d));
  if (n) memcpy(d, extra, n);
  small_publish(x, c, FL_LARGE, n);
  seg_small *b;
  if (all) {
    for (int q = 0; q < x->size; q++)
      if (q != x->rank) EM_CHECK(small_read(x, c, FL_LARGE, q, &b));
  } else if (x->rank != c->root) {
    EM_CHECK(small_read(x, c, FL_LARGE, c->root, &b));
  }
  return EM_OK;
}

/* ---- large path helpers ------------------------------------------------------ */

/* Before writing this rank's buffer for global step g: every peer is done
 * with step g - ndbuf, the last step that used it. */
static em_status wait_reuse(shm *x, uint64_t g) {
  if (g < x->ndbuf) return EM_OK;
  uint64_t need = g - x->ndbuf + 1;
  for (int q = 0; q < x->size; q++)
    if (q != x->rank) EM_CHECK(wait_ge(x, q, &x->ctrl[q].done, need));
  return EM_OK;
}

static em_status wait_all_ctr(shm *x, size_t off, uint64_t need) {
  for (int q = 0; q < x->size; q++) {
    if (q == x->rank) continue;
    _Atomic uint64_t *p = (_Atomic uint64_t *)((char *)&x->ctrl[q] + off);
    EM_CHECK(wait_ge(x, q, p, need));
  }
  return EM_OK;
}

/* Elements of one slice of a step buffer split W ways (a whole number of
 * cache lines). */
static size_t slice_cap(const shm *x, size_t es) {
  return (x->step_bytes / (size_t)x->size) / LINE * LINE / es;
}

static inline size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

static inline void copy(void *dst, const void *src, size_t n) {
  if (n && dst != src) memcpy(dst, src, n);
}

/* ---- allreduce / reduce ----------------------------------------------------------- */

static em_status small_allreduce(shm *x, em_coll *c, bool all) {
  size_t es = em_dtype_size(c->dtype), nb = (size_t)c->count * es;
  int root = all ? -1 : c->root;
  char *d;
  EM_CHECK(small_begin(x, &d));
  copy(d, c->in, nb);
  small_publish(x, c, 0, nb);
  if (!all && x->rank != root) return EM_OK;
  seg_small *b0;
  EM_CHECK(small_read(x, c, 0, 0, &b0));
  seg_small *b1;
  int q0 = 1;
  if (x->size >= 2) {
    EM_CHECK(small_read(x, c, 0, 1, &b1));
    EM_CHECK(em__reduce_out(c->out, small_data(b0), small_data(b1), c->count, c->dtype, c->op));
    q0 = 2;
  } else {
    copy(c->out, small_data(b0), nb);
  }
  for (int q = q0; q < x->size; q++) {
    seg_small *b;
    EM_CHECK(small_read(x, c, 0, q, &b));
    EM_CHECK(em__reduce_into(c->out, small_data(b), c->count, c->dtype, c->op));
  }
  if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, x->size);
  return EM_OK;
}

/* Geometry of step k of a large allreduce: R elements from base, slices of
 * L elements (slice r at r * L, possibly short or empty at the end). */
typedef struct ar_step {
  size_t base, R, L;
} ar_step;

static ar_step ar_geom(const shm *x, size_t n, size_t lmax, size_t es, size_t k) {
  ar_step s;
  size_t per = lmax * (size_t)x->size;
  s.base = k * per;
  s.R = min_sz(per, n - s.base);
  size_t q = LINE / es;
  s.L = (s.R + (size_t)x->size - 1) / (size_t)x->size;
  s.L = (s.L + q - 1) / q * q;
  if (s.L > lmax) s.L = lmax;
  return s;
}

static inline size_t slice_len(const ar_step *s, int r) {
  size_t lo = (size_t)r * s->L;
  return lo >= s->R ? 0 : min_sz(s->L, s->R - lo);
}

static em_status ar_copy_in(shm *x, const em_coll *c, size_t n, size_t lmax, size_t es,
                            size_t k, uint64_t g) {
  EM_CHECK(wait_reuse(x, g));
  ar_step s = ar_geom(x, n, lmax, es, k);
  char *slot = slot_at(x, x->rank, g);
  const char *in = c->in;
  for (int r = 0; r < x->size; r++) {
    if (r == x->rank) continue;
    size_t len = slice_len(&s, r);
    copy(slot + (size_t)r * lmax * es, in + (s.base + (size_t)r * s.L) * es, len * es);
  }
  publish(x, &x->ctrl[x->rank].copied, g + 1);
  return EM_OK;
}

/* all: allreduce (everyone gets the result) or reduce to c->root. */
static em_status large_allreduce(shm *x, em_coll *c, bool all) {
  const int W = x->size, me = x->rank;
  const size_t es = em_dtype_size(c->dtype), n = (size_t)c->count;
  const size_t lmax = slice_cap(x, es);
  const size_t K = (n + lmax * W - 1) / (lmax * W);
  const bool gets = all || me == c->root;
  EM_CHECK(handshake(x, c, true, NULL, 0));
  const uint64_t g0 = x->step;
  if (K) EM_CHECK(ar_copy_in(x, c, n, lmax, es, 0, g0));
  for (size_t k = 0; k < K; k++) {
    const uint64_t g = g0 + k;
    ar_step s = ar_geom(x, n, lmax, es, k);
    EM_CHECK(wait_all_ctr(x, offsetof(seg_ctrl, copied), g + 1));
    /* Reduce my slice: into my output (and then my buffer, for the peers)
     * or, for a non-root of reduce, straight into my buffer. */
    size_t len = slice_len(&s, me);
    char *mine = slot_at(x, me, g) + (size_t)me * lmax * es;
    char *dst = gets ? (char *)c->out + (s.base + (size_t)me * s.L) * es : mine;
    const char *src = (const char *)c->in + (s.base + (size_t)me * s.L) * es;
    if (len) {
      bool first = true;
      for (int q = 0; q < W; q++) {
        if (q == me) continue;
        const char *peer = slot_at(x, q, g) + (size_t)me * lmax * es;
        if (first)
          EM_CHECK(em__reduce_out(dst, src, peer, (int64_t)len, c->dtype, c->op));
        else
          EM_CHECK(em__reduce_into(dst, peer, (int64_t)len, c->dtype, c->op));
        first = false;
      }
      if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(dst, (int64_t)len, c->dtype, W);
      if (all) copy(mine, dst, len * es);
    }
    publish(x, &x->ctrl[me].reduced, g + 1);
    if (k + 1 < K) EM_CHECK(ar_copy_in(x, c, n, lmax, es, k + 1, g + 1));
    if (gets) {
      for (int q = 0; q < W; q++) {
        if (q == me) continue;
        EM_CHECK(wait_ge(x, q, &x->ctrl[q].reduced, g + 1));
        size_t ql = slice_len(&s, q);
        copy((char *)c->out + (s.base + (size_t)q * s.L) * es,
             slot_at(x, q, g) + (size_t)q * lmax * es, ql * es);
      }
    }
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
  return EM_OK;
}

/* ---- broadcast / scatter / gather / allgather ------------------------------------ */

static em_status do_broadcast(shm *x, em_coll *c) {
  const size_t es = em_dtype_size(c->dtype), nb = (size_t)c->count * es;
  const int me = x->rank, root = c->root;
  if (nb <= x->small_cap) {
    char *d;
    EM_CHECK(small_begin(x, &d));
    if (me == root) copy(d, c->out, nb);
    small_publish(x, c, 0, me == root ? nb : 0);
    if (me != root) {
      seg_small *b;
      EM_CHECK(small_read(x, c, 0, root, &b));
      copy(c->out, small_data(b), nb);
    }
    return EM_OK;
  }
  EM_CHECK(handshake(x, c, false, NULL, 0));
  const size_t E = x->step_bytes / es, K = (nb / es + E - 1) / E;
  const uint64_t g0 = x->step;
  for (size_t k = 0; k < K; k++) {
    const uint64_t g = g0 + k;
    size_t off = k * E * es, len = min_sz(E * es, nb - off);
    if (me == root) {
      EM_CHECK(wait_reuse(x, g));
      memcpy(slot_at(x, me, g), (char *)c->out + off, len);
      publish(x, &x->ctrl[me].copied, g + 1);
    } else {
      EM_CHECK(wait_ge(x, root, &x->ctrl[root].copied, g + 1));
      memcpy((char *)c->out + off, slot_at(x, root, g), len);
    }
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
  return EM_OK;
}

static em_status do_allgather(shm *x, em_coll *c, bool all) {
  const size_t es = em_dtype_size(c->dtype), nb = (size_t)c->count * es;
  const int me = x->rank, W = x->size, root = c->root;
  const bool gets = all || me == root;
  if (gets) copy((char *)c->out + (size_t)me * nb, c->in, nb);
  if (nb <= x->small_cap) {
    char *d;
    EM_CHECK(small_begin(x, &d));
    copy(d, c->in, nb);
    small_publish(x, c, 0, nb);
    if (!gets) return EM_OK;
    for (int q = 0; q < W; q++) {
      if (q == me) continue;
      seg_small *b;
      EM_CHECK(small_read(x, c, 0, q, &b));
      copy((char *)c->out + (size_t)q * nb, small_data(b), nb);
    }
    return EM_OK;
  }
  /* allgather: everyone checks everyone; gather: the root checks everyone,
   * the others check the root */
  EM_CHECK(handshake(x, c, gets, NULL, 0));
  const size_t E = x->step_bytes / es, K = (nb / es + E - 1) / E;
  const uint64_t g0 = x->step;
  for (size_t k = 0; k <= K; k++) {
    /* copy step k in (not the root of a gather), then step k - 1 out */
    if (k < K && (all || me != root)) {
      const uint64_t g = g0 + k;
      size_t off = k * E * es, len = min_sz(E * es, nb - off);
      EM_CHECK(wait_reuse(x, g));
      memcpy(slot_at(x, me, g), (const char *)c->in + off, len);
      publish(x, &x->ctrl[me].copied, g + 1);
    }
    if (k == 0) continue;
    const uint64_t g = g0 + k - 1;
    size_t off = (k - 1) * E * es, len = min_sz(E * es, nb - off);
    if (gets) {
      for (int q = 0; q < W; q++) {
        if (q == me) continue;
        EM_CHECK(wait_ge(x, q, &x->ctrl[q].copied, g + 1));
        memcpy((char *)c->out + (size_t)q * nb + off, slot_at(x, q, g), len);
      }
    }
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
  return EM_OK;
}

static em_status do_scatter(shm *x, em_coll *c) {
  const size_t es = em_dtype_size(c->dtype), nb = (size_t)c->count * es;
  const int me = x->rank, W = x->size, root = c->root;
  if (me == root) copy(c->out, (const char *)c->in + (size_t)me * nb, nb);
  if (nb * (size_t)W <= x->small_cap) {
    char *d;
    EM_CHECK(small_begin(x, &d));
    if (me == root) copy(d, c->in, nb * (size_t)W);
    small_publish(x, c, 0, me == root ? nb * (size_t)W : 0);
    if (me != root) {
      seg_small *b;
      EM_CHECK(small_read(x, c, 0, root, &b));
      copy(c->out, small_data(b) + (size_t)me * nb, nb);
    }
    return EM_OK;
  }
  EM_CHECK(handshake(x, c, false, NULL, 0));
  const size_t lmax = slice_cap(x, es), n = (size_t)c->count, K = (n + lmax - 1) / lmax;
  const uint64_t g0 = x->step;
  for (size_t k = 0; k < K; k++) {
    const uint64_t g = g0 + k;
    size_t off = k * lmax, len = min_sz(lmax, n - off);
    if (me == root) {
      EM_CHECK(wait_reuse(x, g));
      for (int q = 0; q < W; q++)
        if (q != me)
          memcpy(slot_at(x, me, g) + (size_t)q * lmax * es,
                 (const char *)c->in + ((size_t)q * n + off) * es, len * es);
      publish(x, &x->ctrl[me].copied, g + 1);
    } else {
      EM_CHECK(wait_ge(x, root, &x->ctrl[root].copied, g + 1));
      memcpy((char *)c->out + off * es, slot_at(x, root, g) + (size_t)me * lmax * es, len * es);
    }
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
  return EM_OK;
}

/* ---- reduce_scatter -------------------------------------------------------------- */

static em_status do_reduce_scatter(shm *x, em_coll *c) {
  const size_t es = em_dtype_size(c->dtype), n = (size_t)c->count, nb = n * es;
  const int me = x->rank, W = x->size;
  const char *in = c->in;
  if (nb * (size_t)W <= x->small_cap) {
    char *d;
    EM_CHECK(small_begin(x, &d));
    copy(d, in, nb * (size_t)W);
    small_publish(x, c, 0, nb * (size_t)W);
    seg_small *b0, *b1;
    EM_CHECK(small_read(x, c, 0, 0, &b0));
    if (W == 1) {
      copy(c->out, small_data(b0) + (size_t)me * nb, nb);
    } else {
      EM_CHECK(small_read(x, c, 0, 1, &b1));
      EM_CHECK(em__reduce_out(c->out, small_data(b0) + (size_t)me * nb,
                              small_data(b1) + (size_t)me * nb, c->count, c->dtype, c->op));
    }
    for (int q = 2; q < W; q++) {
      seg_small *b;
      EM_CHECK(small_read(x, c, 0, q, &b));
      EM_CHECK(em__reduce_into(c->out, small_data(b) + (size_t)me * nb, c->count, c->dtype,
                               c->op));
    }
    if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, W);
    return EM_OK;
  }
  EM_CHECK(handshake(x, c, true, NULL, 0));
  const size_t lmax = slice_cap(x, es), K = (n + lmax - 1) / lmax;
  const uint64_t g0 = x->step;
  for (size_t k = 0; k <= K; k++) {
    if (k < K) {
      const uint64_t g = g0 + k;
      size_t off = k * lmax, len = min_sz(lmax, n - off);
      EM_CHECK(wait_reuse(x, g));
      for (int r = 0; r < W; r++)
        if (r != me)
          memcpy(slot_at(x, me, g) + (size_t)r * lmax * es, in + ((size_t)r * n + off) * es,
                 len * es);
      publish(x, &x->ctrl[me].copied, g + 1);
    }
    if (k == 0) continue;
    const uint64_t g = g0 + k - 1;
    size_t off = (k - 1) * lmax, len = min_sz(lmax, n - off);
    char *dst = (char *)c->out + off * es;
    const char *src = in + ((size_t)me * n + off) * es;
    bool first = true;
    for (int q = 0; q < W; q++) {
      if (q == me) continue;
      EM_CHECK(wait_ge(x, q, &x->ctrl[q].copied, g + 1));
      const char *peer = slot_at(x, q, g) + (size_t)me * lmax * es;
      if (first)
        EM_CHECK(em__reduce_out(dst, src, peer, (int64_t)len, c->dtype, c->op));
      else
        EM_CHECK(em__reduce_into(dst, peer, (int64_t)len, c->dtype, c->op));
      first = false;
    }
    if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(dst, (int64_t)len, c->dtype, W);
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
  return EM_OK;
}

/* ---- all_to_all ------------------------------------------------------------------ */

static em_status do_all_to_all(shm *x, em_coll *c) {
  const int me = x->rank, W = x->size;
  const size_t es = em_dtype_size(c->dtype);
  em_status st = EM_OK;
  int64_t *mine = malloc(sizeof(int64_t) * 2 * (size_t)W);
  size_t *soff = malloc(sizeof(size_t) * (size_t)W), *roff = malloc(sizeof(size_t) * (size_t)W);
  int64_t **S = calloc((size_t)W, sizeof *S); /* S[q] = rank q's send counts (in its buffer) */
  char *tmp = NULL;
  if (!mine || !soff || !roff || !S) {
    st = em__set_error(EM_ERR_NOMEM, "shm backend: all_to_all: out of memory");
    goto done;
  }
  if ((size_t)W * 16 > x->small_cap) {
    st = em__set_error(EM_ERR_NOTIMPL, "shm backend: all_to_all supports at most %zu ranks",
                       x->small_cap / 16);
    goto done;
  }
  memcpy(mine, c->send_counts, sizeof(int64_t) * (size_t)W);
  memcpy(mine + W, c->recv_counts, sizeof(int64_t) * (size_t)W);
  EM_CHECK_GOTO(handshake(x, c, true, mine, sizeof(int64_t) * 2 * (size_t)W), st, done);
  int64_t maxc = 0;
  for (int q = 0; q < W; q++) {
    seg_small *b = small_at(x, q, x->sseq);
    S[q] = (int64_t *)small_data(b);
  }
  for (int q = 0; q < W; q++) {
    for (int r = 0; r < W; r++) {
      int64_t sent = S[q][r], expect = S[r][W + q];
      if (sent != expect) {
        st = em__set_error(EM_ERR_COMM,
                           "shm backend: all_to_all size mismatch: rank %d sends %lld elements "
                           "to rank %d, which expects %lld",
                           lab(x, q), (long long)sent, lab(x, r), (long long)expect);
        goto done;
      }
      if (q != r && sent > maxc) maxc = sent;
    }
  }
  size_t tin = 0, tout = 0;
  for (int r = 0; r < W; r++) {
    soff[r] = tin;
    roff[r] = tout;
    tin += (size_t)c->send_counts[r];
    tout += (size_t)c->recv_counts[r];
  }
  const char *in = c->in;
  if (tin && c->in == c->out) { /* in place: keep the input apart */
    tmp = malloc(tin * es);
    if (!tmp) {
      st = em__set_error(EM_ERR_NOMEM, "shm backend: all_to_all: out of memory");
      goto done;
    }
    memcpy(tmp, c->in, tin * es);
    in = tmp;
  }
  copy((char *)c->out + roff[me] * es, in + soff[me] * es, (size_t)c->send_counts[me] * es);
  const size_t lmax = slice_cap(x, es), K = ((size_t)maxc + lmax - 1) / lmax;
  const uint64_t g0 = x->step;
  for (size_t k = 0; k <= K; k++) {
    if (k < K) {
      const uint64_t g = g0 + k;
      EM_CHECK_GOTO(wait_reuse(x, g), st, done);
      for (int r = 0; r < W; r++) {
        size_t cnt = (size_t)S[me][r], off = k * lmax;
        if (r == me || cnt <= off) continue;
        memcpy(slot_at(x, me, g) + (size_t)r * lmax * es, in + (soff[r] + off) * es,
               min_sz(lmax, cnt - off) * es);
      }
      publish(x, &x->ctrl[me].copied, g + 1);
    }
    if (k == 0) continue;
    const uint64_t g = g0 + k - 1;
    for (int q = 0; q < W; q++) {
      size_t cnt = (size_t)S[q][me], off = (k - 1) * lmax;
      if (q == me) continue;
      EM_CHECK_GOTO(wait_ge(x, q, &x->ctrl[q].copied, g + 1), st, done);
      if (cnt > off)
        memcpy((char *)c->out + (roff[q] + off) * es, slot_at(x, q, g) + (size_t)me * lmax * es,
               min_sz(lmax, cnt - off) * es);
    }
    publish(x, &x->ctrl[me].done, g + 1);
  }
  x->step = g0 + K;
done:
  free(tmp);
  free(S);
  free(roff);
  free(soff);
  free(mine);
  return st;
}

/* ---- send / recv ------------------------------------------------------------------ */

static void umsg_free(umsg *m) {
  if (!m) return;
  free(m->data);
  free(m);
}

/* Moves every chunk that has arrived from src into the unexpected list
 * (the caller found no receive for it). Never blocks. */
static em_status rx_pull(shm *x, int src) {
  rxq *q = &x->rx[src];
  chan_ctl *ch = chan_at(x, src, x->rank);
  while (atomic_load_explicit(&ch->head, memory_order_acquire) > q->consumed) {
    const chunk_hdr *h = (const chunk_hdr *)chunk_at(x, ch, q->consumed);
    if (!q->open) {
      if (!h->first)
        return em__set_error(EM_ERR_INTERNAL, "shm backend: corrupt message ring from rank %d",
                             lab(x, src));
      umsg *m = calloc(1, sizeof *m);
      if (!m) return em__set_error(EM_ERR_NOMEM, "shm backend: out of memory");
      m->tag = h->tag;
      m->len = h->msg_bytes;
      m->data = malloc(m->len ? m->len : 1);
      if (!m->data) {
        free(m);
        return em__set_error(EM_ERR_NOMEM, "shm backend: out of memory (%zu-byte message)",
                             (size_t)h->msg_bytes);
      }
      if (q->tail)
        q->tail->next = m;
      else
        q->head = m;
      q->tail = m;
      q->open = m;
    }
    umsg *m = q->open;
    size_t cb = h->chunk_bytes;
    if (cb > m->len - m->got)
      return em__set_error(EM_ERR_INTERNAL, "shm backend: corrupt message ring from rank %d",
                           lab(x, src));
    memcpy(m->data + m->got, (const char *)h + P2P_HDR, cb);
    m->got += cb;
    if (m->got == m->len) q->open = NULL;
    q->consumed++;
    publish(x, &ch->tail, q->consumed);
  }
  return EM_OK;
}

static em_status size_mismatch(shm *x, int src, int64_t tag, size_t got, size_t want) {
  return em__set_error(EM_ERR_COMM,
                       "shm backend: recv: rank %d sent %zu bytes with tag %lld but the receive "
                       "expects %zu bytes",
                       lab(x, src), got, (long long)tag, want);
}

static em_status do_send(shm *x, const void *buf, size_t n, int dst, int64_t tag) {
  chan_ctl *ch = chan_at(x, x->rank, dst);
  uint64_t h = x->tx_head[dst];
  const size_t cap = x->p2p_slot - P2P_HDR;
  size_t off = 0;
  do {
    size_t cb = min_sz(cap, n - off);
    if (h >= x->nslots) {
      uint64_t need = h - x->nslots + 1;
      if (atomic_load_explicit(&ch->tail, memory_order_acquire) < need)
        EM_CHECK(wait_slow(x, dst, &ch->tail, need, true));
    }
    chunk_hdr *hd = (chunk_hdr *)chunk_at(x, ch, h);
    hd->tag = tag;
    hd->msg_bytes = n;
    hd->chunk_bytes = cb;
    hd->first = off == 0;
    if (cb) memcpy((char *)hd + P2P_HDR, (const char *)buf + off, cb);
    h++;
    x->tx_head[dst] = h;
    publish(x, &ch->head, h);
    off += cb;
  } while (off < n);
  return EM_OK;
}

static em_status do_recv(shm *x, void *buf, size_t n, int src, int64_t tag) {
  rxq *q = &x->rx[src];
  chan_ctl *ch = chan_at(x, src, x->rank);
  size_t got = 0;
  for (;;) {
    /* an unexpected message with this tag? */
    umsg *prev = NULL, *m = q->head;
    while (m && m->tag != tag) prev = m, m = m->next;
    if (m) {
      if (m->len != n) return size_mismatch(x, src, tag, m->len, n);
      copy(buf, m->data, m->got);
      got = m->got;
      bool partial = m == q->open;
      if (prev)
        prev->next = m->next;
      else
        q->head = m->next;
      if (q->tail == m) q->tail = prev;
      if (partial) q->open = NULL;
      umsg_free(m);
      if (!partial) return EM_OK;
      break; /* the rest of it is still in the ring: read it straight into buf */
    }
    if (q->open) { /* finish the unexpected message in flight first */
      EM_CHECK(wait_ge(x, src, &ch->head, q->consumed + 1));
      EM_CHECK(rx_pull(x, src));
      continue;
    }
    EM_CHECK(wait_ge(x, src, &ch->head, q->consumed + 1));
    const chunk_hdr *h = (const chunk_hdr *)chunk_at(x, ch, q->consumed);
    if (h->tag == tag && h->first) {
      if (h->msg_bytes != n) return size_mismatch(x, src, tag, h->msg_bytes, n);
      break;
    }
    EM_CHECK(rx_pull(x, src));
  }
  /* The message starts (or continues) at the ring's tail: read it into buf. */
  do {
    EM_CHECK(wait_ge(x, src, &ch->head, q->consumed + 1));
    const chunk_hdr *h = (const chunk_hdr *)chunk_at(x, ch, q->consumed);
    size_t cb = h->chunk_bytes;
    if (cb > n - got)
      return em__set_error(EM_ERR_INTERNAL, "shm backend: corrupt message ring from rank %d",
                           lab(x, src));
    if (cb) memcpy((char *)buf + got, (const char *)h + P2P_HDR, cb);
    got += cb;
    q->consumed++;
    publish(x, &ch->tail, q->consumed);
  } while (got < n);
  return EM_OK;
}

/* ---- run / abort / destroy ------------------------------------------------------ */

static em_status run_one(shm *x, em_coll *c) {
  const size_t es = em_dtype_size(c->dtype);
  const int W = x->size;
  switch (c->kind) {
    case EM_COLL_ALLREDUCE:
    case EM_COLL_REDUCE: {
      bool all = c->kind == EM_COLL_ALLREDUCE;
      if (W == 1) {
        if (all || x->rank == c->root) copy(c->out, c->in, (size_t)c->count * es);
        return EM_OK;
      }
      if ((size_t)c->count * es <= x->small_allreduce) return small_allreduce(x, c, all);
      return large_allreduce(x, c, all);
    }
    case EM_COLL_BROADCAST:
      return W == 1 ? EM_OK : do_broadcast(x, c);
    case EM_COLL_ALLGATHER:
    case EM_COLL_GATHER: {
      bool all = c->kind == EM_COLL_ALLGATHER;
      if (W == 1) {
        copy(c->out, c->in, (size_t)c->count * es);
        return EM_OK;
      }
      return do_allgather(x, c, all);
    }
    case EM_COLL_SCATTER:
      if (W == 1) {
        copy(c->out, c->in, (size_t)c->count * es);
        return EM_OK;
      }
      return do_scatter(x, c);
    case EM_COLL_REDUCE_SCATTER:
      if (W == 1) {
        copy(c->out, c->in, (size_t)c->count * es);
        return EM_OK;
      }
      return do_reduce_scatter(x, c);
    case EM_COLL_ALL_TO_ALL:
      if (W == 1) {
        copy(c->out, c->in, (size_t)c->send_counts[0] * es);
        return EM_OK;
      }
      return do_all_to_all(x, c);
    case EM_COLL_BARRIER: {
      if (W == 1) return EM_OK;
      char *d;
      EM_CHECK(small_begin(x, &d));
      small_publish(x, c, 0, 0);
      for (int q = 0; q < W; q++) {
        seg_small *b;
        if (q != x->rank) EM_CHECK(small_read(x, c, 0, q, &b));
      }
      return EM_OK;
    }
    case EM_COLL_SEND:
    case EM_COLL_RECV: {
      int peer = c->root;
      size_t nb = (size_t)c->count * es;
      return c->kind == EM_COLL_SEND ? do_send(x, c->in, nb, peer, c->tag)
                                     : do_recv(x, c->out, nb, peer, c->tag);
    }
    default:
      return em__set_error(EM_ERR_INVALID, "shm backend: unknown collective kind %d",
                           (int)c->kind);
  }
}

static em_status shm_run(void *ctx, em_coll *c) {
  shm *x = ctx;
  if (!em_dtype_is_valid((int)c->dtype) && c->kind != EM_COLL_BARRIER)
    return em__set_error(EM_ERR_DTYPE, "shm backend: invalid dtype %d", (int)c->dtype);
  if (c->device.type != EM_CPU)
    return em__set_error(EM_ERR_DEVICE, "shm backend: %s: tensors must be on the CPU",
                         em__coll_name(c->kind));
  if (c->count < 0)
    return em__set_error(EM_ERR_INVALID, "shm backend: %s: negative count %lld",
                         em__coll_name(c->kind), (long long)c->count);
  if ((has_root(c->kind) || c->kind == EM_COLL_SEND || c->kind == EM_COLL_RECV) &&
      (c->root < 0 || c->root >= x->size))
    return em__set_error(EM_ERR_INVALID, "shm backend: %s: rank %d out of range [0, %d)",
                         em__coll_name(c->kind), c->root, x->size);
  if ((c->kind == EM_COLL_SEND || c->kind == EM_COLL_RECV) && c->root == x->rank)
    return em__set_error(EM_ERR_INVALID, "shm backend: %s with itself (rank %d)",
                         em__coll_name(c->kind), lab(x, c->root));
  if (has_op(c->kind)) EM_CHECK(em__reduce_op_check(em__coll_name(c->kind), c->op, c->dtype));
  x->cur = c;
  em_status st = health(x, -1);
  if (st == EM_OK) st = run_one(x, c);
  if (st != EM_OK && x->hdr) {
    /* The group is broken now: tell the peers (they fail at once). */
    char msg[FAIL_MSG];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    fail_group(x, msg);
    em__set_error(st, "%s", msg);
  }
  x->cur = NULL;
  return st;
}

/* Makes a running run() return and fails the group for the peers too,
 * with the reason (a timeout here usually means a peer is stuck). */
static void shm_abort(void *ctx, em_status st, const char *reason) {
  shm *x = ctx;
  (void)st;
  atomic_store(&x->aborted, 1);
  if (x->hdr) {
    char msg[FAIL_MSG];
    snprintf(msg, sizeof msg, "shm backend: rank %d aborted the group: %s", lab(x, x->rank),
             reason && *reason ? reason : "aborted");
    fail_group(x, msg);
  }
}

static void shm_free(shm *x) {
  if (!x) return;
  if (x->pidfd)
    for (int r = 0; r < x->size; r++)
      if (x->pidfd[r] >= 0) close(x->pidfd[r]);
  if (x->rx) {
    for (int r = 0; r < x->size; r++) {
      for (umsg *m = x->rx[r].head, *n; m; m = n) {
        n = m->next;
        umsg_free(m);
      }
    }
  }
  if (x->base) munmap(x->base, x->seg_bytes);
  free(x->labels);
  free(x->seen);
  free(x->tx_head);
  free(x->rx);
  free(x->pidfd);
  free(x->pid_check);
  free(x);
}

static void shm_destroy(void *ctx) {
  shm *x = ctx;
  if (!x) return;
  if (x->ranks) {
    atomic_store(&x->ranks[x->rank].left, 1);
    wake_all(x);
  }
  shm_free(x);
}

static const em_pg_backend_ops shm_ops = {
    .name = "shm",
    .run = shm_run,
    .abort = shm_abort,
    .destroy = shm_destroy,
    .devices = EM_PG_DEV_CPU,
    .inline_max_bytes = 0,
};

/* ---- setup ------------------------------------------------------------------------ */

static void layout(seg_header *h, int W) {
  h->size = W;
  h->off_rank = align_up(sizeof(seg_header), LINE);
  h->off_ctrl = align_up(h->off_rank + (size_t)W * sizeof(seg_rank), LINE);
  h->off_small = align_up(h->off_ctrl + (size_t)W * sizeof(seg_ctrl), PAGE);
  size_t small_buf = align_up(SMALL_HDR + h->small_cap, LINE);
  h->off_large = align_up(h->off_small + (size_t)W * 2 * small_buf, PAGE);
  h->off_p2p = h->off_large + (size_t)W * h->ndbuf * h->step_bytes;
  size_t chan = align_up(sizeof(chan_ctl) + h->p2p_nslots * h->p2p_slot, PAGE);
  h->seg_bytes = h->off_p2p + (size_t)W * (size_t)(W - 1) * chan;
}

static void attach_views(shm *x) {
  seg_header *h = x->hdr;
  x->ranks = (seg_rank *)(x->base + h->off_rank);
  x->ctrl = (seg_ctrl *)(x->base + h->off_ctrl);
  x->small = x->base + h->off_small;
  x->large = x->base + h->off_large;
  x->p2p = x->base + h->off_p2p;
  x->small_cap = h->small_cap;
  x->small_buf = align_up(SMALL_HDR + h->small_cap, LINE);
  x->step_bytes = h->step_bytes;
  x->ndbuf = (unsigned)h->ndbuf;
  x->p2p_slot = h->p2p_slot;
  x->nslots = (unsigned)h->p2p_nslots;
  x->chan_bytes = align_up(sizeof(chan_ctl) + h->p2p_nslots * h->p2p_slot, PAGE);
  x->small_allreduce = h->small_allreduce;
}

static uint64_t pidns_inode(void) {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static void register_self(shm *x) {
  atomic_store(&x->ranks[x->rank].pid, (int64_t)getpid());
  atomic_store(&x->ranks[x->rank].pidns, pidns_inode());
}

/* Opens pidfds of the peers (after everyone registered). */
static void open_pidfds(shm *x) {
  uint64_t myns = pidns_inode();
  for (int q = 0; q < x->size; q++) {
    x->pidfd[q] = -1;
    x->pid_check[q] = false;
    if (q == x->rank) continue;
    pid_t pid = (pid_t)atomic_load(&x->ranks[q].pid);
    if (pid <= 0 || atomic_load(&x->ranks[q].pidns) != myns || myns == 0) continue;
#ifdef SYS_pidfd_open
    x->pidfd[q] = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    x->pid_check[q] = x->pidfd[q] < 0;
  }
}

static void sanitize(const char *in, char *out, size_t size) {
  size_t j = 0;
  for (const char *p = in; *p && j + 1 < size; p++) {
    char ch = *p;
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.';
    out[j++] = ok ? ch : '_';
  }
  out[j] = 0;
}

static int64_t shm_free_bytes(void) {
  if (test_free_bytes >= 0) return test_free_bytes;
  struct statvfs v;
  if (statvfs(SHM_DIR, &v) != 0) return -1;
  return (int64_t)v.f_bavail * (int64_t)v.f_frsize;
}

/* Reports a setup failure to the peers: the store key (for ranks that have
 * not mapped the segment) and the ready flag (for those that have), and
 * removes the name. The error stays set. */
static void setup_fail(shm *x, em_store *store, bool have_name) {
  char msg[FAIL_MSG];
  snprintf(msg, sizeof msg, "%s", em_last_error());
  em_status st = em_last_status();
  if (have_name) shm_unlink(x->name);
  if (x->hdr) {
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong(&x->hdr->fail_claim, &zero, (uint32_t)x->rank + 1))
      snprintf(x->hdr->fail_msg, sizeof x->hdr->fail_msg, "%s", msg);
    atomic_store(&x->hdr->ready, 2);
  }
  if (store) {
    char v[FAIL_MSG + 32];
    int n = snprintf(v, sizeof v, "rank %d: %s", lab(x, x->rank), msg);
    em_store_set(store, "shm/error", v, (size_t)(n < (int)sizeof v ? n : (int)sizeof v - 1));
  }
  em__set_error(st, "%s", msg);
}

/* Removes ember segments whose setup never finished and whose creator is
 * dead (every rank SIGKILLed between creation and the last mapping — the
 * only window in which a name exists). A segment of a live job, or one we
 * cannot judge (another pid namespace, not ours), is left alone. */
static void sweep_stale(void) {
  DIR *d = opendir(SHM_DIR);
  if (!d) return;
  uint64_t myns = pidns_inode();
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "ember-", 6) != 0) continue;
    char name[300];
    snprintf(name, sizeof name, "/%s", e->d_name);
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) continue;
    struct stat sb;
    void *p = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && sb.st_uid == geteuid() && (size_t)sb.st_size >= PAGE)
      p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) continue;
    const seg_header *h = p;
    bool stale = false;
    if (h->magic == SHM_MAGIC && h->version == SHM_VERSION && atomic_load(&h->ready) == 0 &&
        h->off_rank + sizeof(seg_rank) <= PAGE) {
      const seg_rank *r0 = (const seg_rank *)((const char *)p + h->off_rank);
      pid_t pid = (pid_t)atomic_load(&r0->pid);
      stale = pid > 0 && atomic_load(&r0->pidns) == myns && myns != 0 && kill(pid, 0) != 0 &&
              errno == ESRCH;
    }
    munmap(p, PAGE);
    if (stale) shm_unlink(name);
  }
  closedir(d);
}

static em_status create_segment(shm *x, const em_pg_backend_init *in) {
  sweep_stale();
  seg_header h = {0};
  h.small_cap = DEF_SMALL_CAP;
  size_t minstep = align_up((size_t)x->size * LINE * 4, PAGE);
  h.step_bytes = align_up(em__pg_env_bytes("EMBER_SHM_STEP_BYTES", DEF_STEP_BYTES, 4096, 64u << 20), PAGE);
  if (h.step_bytes < minstep) h.step_bytes = minstep;
  h.ndbuf = NDBUF;
  h.p2p_nslots = P2P_NSLOTS;
  size_t pairs = (size_t)x->size * (size_t)(x->size - 1);
  size_t slot = (16u << 20) / pairs / P2P_NSLOTS;
  if (slot > (64u << 10)) slot = 64u << 10;
  if (slot < (8u << 10)) slot = 8u << 10;
  h.p2p_slot = align_up(slot, PAGE);
  h.small_allreduce = em__pg_env_bytes("EMBER_SHM_SMALL_BYTES", DEF_SMALL_ALLREDUCE, 0, h.small_cap);
  layout(&h, x->size);
  x->seg_bytes = h.seg_bytes;

  int64_t avail = shm_free_bytes();
  if (avail >= 0 && (uint64_t)avail < h.seg_bytes)
    return em__set_error(EM_ERR_NOMEM,
                         "shm backend: %s has %.1f MiB free but a group of %d ranks needs %.1f "
                         "MiB of shared memory; free space there (or enlarge it, e.g. docker "
                         "--shm-size) or use backend \"tcp\"",
                         SHM_DIR, (double)avail / 1048576.0, x->size,
                         (double)h.seg_bytes / 1048576.0);

  int fd = shm_open(x->name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0)
    return em__set_error(EM_ERR_COMM, "shm backend: cannot create shared memory %s: %s", x->name,
                         strerror(errno));
  em_status st = EM_OK;
  int err = ftruncate(fd, (off_t)h.seg_bytes) ? errno : posix_fallocate(fd, 0, (off_t)h.seg_bytes);
  if (err) {
    st = em__set_error(err == ENOSPC ? EM_ERR_NOMEM : EM_ERR_COMM,
                       "shm backend: cannot reserve %.1f MiB of shared memory in %s: %s",
                       (double)h.seg_bytes / 1048576.0, SHM_DIR, strerror(err));
    goto fail;
  }
  void *p = mmap(NULL, h.seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    st = em__set_error(EM_ERR_NOMEM, "shm backend: cannot map %s: %s", x->name, strerror(errno));
    goto fail;
  }
  close(fd);
  fd = -1;
  x->base = p;
  x->hdr = p;
  h.magic = SHM_MAGIC;
  h.version = SHM_VERSION;
  memcpy(x->hdr, &h, offsetof(seg_header, attached));
  attach_views(x);
  register_self(x);
  atomic_store(&x->hdr->attached, 1);
  (void)in;
  return EM_OK;
fail:
  if (fd >= 0) close(fd);
  shm_unlink(x->name);
  return st;
}

static em_status open_segment(shm *x) {
  int fd = shm_open(x->name, O_RDWR, 0);
  if (fd < 0)
    return em__set_error(EM_ERR_COMM,
                         "shm backend: cannot open shared memory %s: %s (are all ranks of the "
                         "group on one host?)",
                         x->name, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(seg_header)) {
    close(fd);
    return em__set_error(EM_ERR_COMM, "shm backend: shared memory %s is truncated", x->name);
  }
  size_t n = (size_t)sb.st_size;
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED)
    return em__set_error(EM_ERR_NOMEM, "shm backend: cannot map %s: %s", x->name, strerror(errno));
  x->base = p;
  x->seg_bytes = n;
  seg_header *h = p;
  seg_header want;
  memset(&want, 0, sizeof want);
  want.small_cap = h->small_cap;
  want.step_bytes = h->step_bytes;
  want.ndbuf = h->ndbuf;
  want.p2p_slot = h->p2p_slot;
  want.p2p_nslots = h->p2p_nslots;
  layout(&want, x->size);
  if (h->magic != SHM_MAGIC || h->version != SHM_VERSION || h->size != x->size ||
      h->seg_bytes != n || want.seg_bytes != n || want.off_p2p != h->off_p2p) {
    x->hdr = NULL;
    return em__set_error(EM_ERR_COMM,
                         "shm backend: shared memory %s does not belong to this group (size %lld, "
                         "world %lld vs %d)",
                         x->name, (long long)n, (long long)h->size, x->size);
  }
  x->hdr = h;
  attach_views(x);
  register_self(x);
  return EM_OK;
}

/* Waits for the segment's ready flag (the last rank to map it unlinked the
 * name), watching the store's error key, rank 0's life and the deadline. */
static em_status wait_ready(shm *x, em_store *store, int64_t deadline_ms) {
  int64_t next_store = 0;
  for (unsigned it = 0;; it++) {
    uint32_t r = atomic_load_explicit(&x->hdr->ready, memory_order_acquire);
    if (r == 1) return EM_OK;
    if (r == 2)
      return em__set_error(EM_ERR_COMM, "shm backend: setup failed on another rank: %s",
                           x->hdr->fail_msg);
    if (it < 1000) {
      sched_yield();
      continue;
    }
    int64_t now = em__now_ms();
    if (now >= next_store) {
      bool has = false;
      const char *k = "shm/error";
      if (em_store_check(store, &k, 1, &has) == EM_OK && has) {
        void *v = NULL;
        size_t len = 0;
        if (em_store_get_timeout(store, k, 0, &v, &len) == EM_OK) {
          em__set_error(EM_ERR_COMM, "shm backend: setup failed on %s", (char *)v);
          em_store_free(v);
          return EM_ERR_COMM;
        }
      }
      next_store = now + 50;
    }
    for (int q = 0; q < x->size; q++) {
      pid_t pid = (pid_t)atomic_load(&x->ranks[q].pid);
      if (q != x->rank && pid > 0 && atomic_load(&x->ranks[q].pidns) == pidns_inode() &&
          kill(pid, 0) != 0 && errno == ESRCH)
        return em__set_error(EM_ERR_COMM, "shm backend: rank %d (pid %d) died during setup",
                             lab(x, q), (int)pid);
    }
    if (deadline_ms > 0 && now >= deadline_ms)
      return em__set_error(EM_ERR_TIMEOUT,
                           "shm backend: setup timed out: %u of %d ranks mapped the shared "
                           "memory",
                           atomic_load(&x->hdr->attached), x->size);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

em_status em__pg_shm_create(const em_pg_backend_init *in, void **ctx,
                            const em_pg_backend_ops **ops) {
  if (!in || !ctx || !ops || in->size < 1 || in->rank < 0 || in->rank >= in->size)
    return em__set_error(EM_ERR_INVALID, "shm backend: bad arguments (rank %d, size %d)",
                         in ? in->rank : -1, in ? in->size : -1);
  if (in->host_ids) {
    for (int r = 1; r < in->size; r++)
      if (strcmp(in->host_ids[r], in->host_ids[0]) != 0)
        return em__set_error(EM_ERR_INVALID,
                             "shm backend: ranks 0 and %d are on different hosts (%s, %s); "
                             "shm needs every rank on one host: use backend \"auto\" or \"tcp\"",
                             r, in->host_ids[0], in->host_ids[r]);
  }
  if (in->size > 1 && !in->store)
    return em__set_error(EM_ERR_INVALID, "shm backend: needs a store to bootstrap");
  shm *x = calloc(1, sizeof *x);
  if (!x) return em__set_error(EM_ERR_NOMEM, "shm backend: out of memory");
  x->ops = &shm_ops;
  x->rank = in->rank;
  x->size = in->size;
  em_status st = EM_OK;
  x->labels = malloc(sizeof(int) * (size_t)in->size);
  x->seen = calloc((size_t)in->size, sizeof *x->seen);
  x->tx_head = calloc((size_t)in->size, sizeof *x->tx_head);
  x->rx = calloc((size_t)in->size, sizeof *x->rx);
  x->pidfd = malloc(sizeof(int) * (size_t)in->size);
  x->pid_check = calloc((size_t)in->size, sizeof(bool));
  if (!x->labels || !x->seen || !x->tx_head || !x->rx || !x->pidfd || !x->pid_check) {
    shm_free(x);
    return em__set_error(EM_ERR_NOMEM, "shm backend: out of memory");
  }
  for (int r = 0; r < in->size; r++) {
    x->labels[r] = r;
    x->pidfd[r] = -1;
  }
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  x->oversub = ncpu > 0 && in->size > ncpu;
  x->spin_ns = (int64_t)em__pg_env_bytes("EMBER_SHM_SPIN_NS", x->oversub ? 2000 : 50000, 0, 100000000);
  if (in->size == 1) {
    *ctx = x;
    *ops = &shm_ops;
    return EM_OK;
  }

  char group[96];
  sanitize(in->group_name ? in->group_name : "pg", group, sizeof group);
  snprintf(x->name, sizeof x->name, "/ember-%016llx-%s", (unsigned long long)in->uid, group);
  int64_t deadline = in->timeout_ms > 0 ? em__now_ms() + in->timeout_ms : 0;
  em_store *store = in->store;
  bool have_name = false;

  if (x->rank == 0) {
    st = create_segment(x, in);
    if (st != EM_OK) {
      char v[FAIL_MSG + 2];
      int n = snprintf(v, sizeof v, "!%s", em_last_error());
      em_store_set(store, "shm/seg", v, (size_t)(n < (int)sizeof v ? n : (int)sizeof v - 1));
      goto fail;
    }
    have_name = true;
    st = em_store_set(store, "shm/seg", x->name, strlen(x->name));
    if (st != EM_OK) {
      setup_fail(x, store, true);
      goto fail;
    }
  } else {
    void *v = NULL;
    size_t len = 0;
    int64_t left = deadline ? deadline - em__now_ms() : EM_STORE_DEFAULT_TIMEOUT;
    if (deadline && left < 1) left = 1;
    st = em_store_get_timeout(store, "shm/seg", left, &v, &len);
    if (st != EM_OK) {
      em__prefix_error("shm backend: waiting for rank 0's shared memory");
      setup_fail(x, store, false);
      goto fail;
    }
    if (len > 0 && ((char *)v)[0] == '!') {
      st = em__set_error(EM_ERR_COMM, "shm backend: setup failed on rank 0: %s", (char *)v + 1);
      em_store_free(v);
      goto fail;
    }
    if (len != strlen(x->name) || memcmp(v, x->name, len) != 0) {
      st = em__set_error(EM_ERR_COMM,
                         "shm backend: rank 0 created shared memory '%.*s' but this rank expects "
                         "'%s' (ranks disagree about the group)",
                         (int)len, (char *)v, x->name);
      em_store_free(v);
      setup_fail(x, store, false);
      goto fail;
    }
    em_store_free(v);
    have_name = true;
    st = open_segment(x);
    if (st != EM_OK) {
      setup_fail(x, store, true);
      goto fail;
    }
    uint32_t n = atomic_fetch_add(&x->hdr->attached, 1) + 1;
    if (n == (uint32_t)x->size) {
      /* everyone has it mapped: the name goes now */
      shm_unlink(x->name);
      atomic_store_explicit(&x->hdr->ready, 1, memory_order_release);
    }
  }
  st = wait_ready(x, store, deadline);
  if (st != EM_OK) {
    setup_fail(x, store, have_name);
    goto fail;
  }
  if (x->rank == 0) em_store_delete_key(store, "shm/seg", NULL);
  open_pidfds(x);
  *ctx = x;
  *ops = &shm_ops;
  return EM_OK;
fail:
  shm_free(x);
  return st ? st : EM_ERR_INTERNAL;
}
