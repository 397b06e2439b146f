/* The tcp backend: a full mesh of TCP connections between the ranks of a
 * group, bootstrapped through the store, with an em_transport over it that
 * runs comm/algorithms.c (gloo's transport/tcp, in C).
 *
 * Bootstrap: each rank listens on an ephemeral port on all interfaces,
 * publishes "tcp/addr/<rank>" = "<ip> <port>" (ip: the interface that
 * routes to MASTER_ADDR, else the first non-loopback IPv4 address; ranks
 * on the same host — equal host ids — use 127.0.0.1), connects to every
 * lower rank and accepts every higher one. A hello {magic, uid, rank,
 * world} that the acceptor answers checks that both ends belong to this
 * group instance (uid: drawn by rank 0, shared through the store), so a
 * stale or foreign connection is refused. Then TCP_NODELAY, large socket
 * buffers, non-blocking mode.
 *
 * Wire: every message is a frame: a 40-byte header (host byte order: the
 * ranks of a job share an architecture) and a payload.
 *   COLL   data of collective #seq; the header also carries the
 *          collective's kind, dtype, op, root and count, so the receiver
 *          checks them against its own call and its expected length: a
 *          rank that called a different collective or size fails with
 *          both descriptions instead of corrupting memory.
 *   P2P    send/recv data, matched by tag.
 *   ABORT  a rank's failure (status + message) sent to its peers so they
 *          fail at once with the cause ("rank 1 aborted allreduce #4: ...").
 *   BYE    sent at destroy: an EOF after BYE is a clean exit, an EOF
 *          without it a dead peer.
 *
 * Progress: isend/irecv queue requests per peer (sends are also tried at
 * once); wait/wait_all poll every peer's socket and an eventfd (abort):
 * a peer is read while we expect data from it (or have data for it: two
 * ranks that both send large messages first must not deadlock, and while
 * its FIN shows up via POLLRDHUP — a dead peer is an error naming it at
 * once, whether or not we are talking to it). Frames that arrive before
 * their receive is posted go to a per-peer list and are matched when it
 * is. Small frames are read through a 64 KiB staging buffer (several per
 * syscall), large payloads straight into their destination; sends go out
 * with sendmsg over header+payload iovecs of several frames. All of this
 * runs on the thread that runs the collective (the group's progress
 * thread, or the caller for small ones): nothing else touches the sockets.
 *
 * Failures. A peer whose connection ends without BYE (EOF, reset) has
 * died: if this rank still expects data from it or has data for it, the
 * collective fails at once naming it; otherwise (it finished its share of
 * this collective first) it is noted and the collective may still
 * complete here, but the next collective fails at its start. Before
 * blaming a peer whose connection broke, the other connections get a
 * short look: an ABORT frame or an earlier death names the real cause
 * (a rank that failed because rank 2 died closes its own connections
 * too). A rank that fails sends ABORT with its reason on every connection
 * whose outgoing stream is between frames and shuts down the others (a
 * torn frame cannot carry it), so every peer learns promptly.
 *
 * Waiting: poll(2) on every socket and the eventfd. On the caller's
 * thread (small collectives run inline there; it is blocked anyway) a
 * busy-poll comes first, since a sleeping poll costs a wake-up per
 * message, tens of microseconds on a VM: up to EMBER_PG_TCP_SPIN_US
 * microseconds (default 50; 0: never), only while the host has a core for
 * each of its ranks and no other job wants them (at most one runnable
 * thread per core, this job's included, as /proc/loadavg counts them;
 * read at most every 100 ms). On a loaded host a spin costs more than it
 * saves: it burns the
 * rank's share of the core and its wake-up priority (an 8-byte allreduce
 * went from 84 to 266 us at load 10 on 2 cores). The spin is adaptive as
 * well: one that catches nothing halves the next (down to 1/64), one that
 * does doubles it. The progress thread never spins (see
 * em__pg_on_progress_thread).
 *
 * EMBER_PG_DEBUG=1 prints every failure of this backend on stderr as it
 * happens (rank and message), for debugging jobs that fail together.
 *
 * Test hook: em__pg_tcp_test_die_after(n) makes this process SIGKILL itself
 * once the tcp backend has written n more bytes (counted over all groups),
 * so tests kill a rank at a precise point of an algorithm. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"

#define MAGIC 0x454d5047u /* "EMPG" */
#define HELLO_MAGIC 0x454d4831u
#define VERSION 1u
#define STAGE_BYTES (64u << 10)
#define DIRECT_MIN (16u << 10) /* payload left >= this is read straight into place */
#define MAX_IOV 64
#define ABORT_MSG_MAX 2048u
#define SOCKBUF_DEFAULT (4 << 20)

enum { F_COLL = 1, F_P2P = 2, F_ABORT = 3, F_BYE = 4 };

typedef struct hdr {
  uint32_t magic;
  uint8_t type, kind, dtype, op;
  int32_t root; /* ABORT: the em_status */
  int32_t tag;
  uint64_t seq;
  int64_t count;
  uint64_t len;
} hdr;
_Static_assert(sizeof(hdr) == 40, "frame header is 40 bytes");

/* A frame that arrived before its receive was posted. */
typedef struct ux {
  struct ux *next;
  hdr h;
  char *data;
  bool complete;
} ux;

typedef struct req {
  bool send, done;
  int peer;
  char *buf;
  uint64_t n;
  hdr h; /* sends: the header to write */
} req;

/* A FIFO of request ids. */
typedef struct idq {
  int *v;
  int head, n, cap;
} idq;

typedef struct peer {
  int fd;
  bool bye, eof, closed; /* closed: no longer polled */
  bool draining;         /* FIN seen: read everything */
  /* input */
  uint8_t *stage;
  uint32_t spos, slen;
  bool in_frame;
  hdr h;
  char *dst;
  uint64_t left;
  int dst_req;
  ux *dst_ux;
  char *abort_buf;
  /* queues */
  idq sq, rq;
  uint64_t sent; /* bytes of the head send (header included) already written */
  ux *ux_head, *ux_tail;
} peer;

typedef struct tcp {
  int rank, W;
  peer *peers;
  int efd;
  atomic_int aborted;
  pthread_mutex_t amu;
  em_status abort_st;
  char abort_msg[512];
  bool failed, told_peers, in_sweep;
  int first_dead; /* the first peer seen dying (EOF without BYE), or -1 */
  int deferred_from; /* an ABORT seen during an unrelated send/recv, or -1 */
  em_status deferred_st;
  char deferred_msg[1024];
  em_status fail_st;
  char fail_msg[1024];
  em_coll *cur;
  req *reqs;
  int nreq, capreq, pending;
  em_transport tr;
  struct pollfd *pfd, *spfd; /* progress's poll set; sweep's own */
  int *pmap, *spmap;
  pid_t pid; /* the creating process: a forked child must not touch the sockets */
  int64_t spin_ns;  /* longest busy-poll before sleeping in poll (0: never) */
  int64_t spin_cur; /* the current one (adaptive, spin_ns / 64 .. spin_ns) */
  long ncpu;
  char group_name[128];
} tcp;

static _Atomic int64_t die_budget = -1;
void em__pg_tcp_test_die_after(int64_t n) { atomic_store(&die_budget, n); }

/* ---- small utilities ---------------------------------------------------------------- */

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether no other job seems to want this host's cores: at most one
 * runnable thread per core right now (the 4th field of /proc/loadavg,
 * this job's own running threads included). Read at most every 100 ms per
 * process; where it cannot be read, the 1-minute load average below
 * cores + 0.5 decides. */
static bool host_has_room(const tcp *t) {
  static _Atomic int64_t read_at = 0;
  static atomic_bool room = true;
  int64_t now = now_ns();
  if (now - atomic_load_explicit(&read_at, memory_order_relaxed) > 100000000) {
    atomic_store_explicit(&read_at, now, memory_order_relaxed);
    bool ok = false, r = true;
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[128];
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      double l1, l5, l15;
      long running, total;
      if (n > 0) {
        buf[n] = '\0';
        ok = sscanf(buf, "%lf %lf %lf %ld/%ld", &l1, &l5, &l15, &running, &total) == 5;
        if (ok) r = running <= t->ncpu;
      }
    }
    if (!ok) {
      double la;
      r = getloadavg(&la, 1) != 1 || la < (double)t->ncpu + 0.5;
    }
    atomic_store_explicit(&room, r, memory_order_relaxed);
  }
  return atomic_load_explicit(&room, memory_order_relaxed);
}

static em_status idq_push(idq *q, int id) {
  if (q->head + q->n == q->cap) {
    if (q->head > 0) {
      memmove(q->v, q->v + q->head, sizeof(int) * (size_t)q->n);
      q->head = 0;
    } else {
      int nc = q->cap ? q->cap * 2 : 16;
      int *nv = realloc(q->v, sizeof(int) * (size_t)nc);
      if (!nv) return em__set_error(EM_ERR_NOMEM, "tcp backend: out of memory");
      q->v = nv;
      q->cap = nc;
    }
  }
  q->v[q->head + q->n++] = id;
  return EM_OK;
}
static inline int idq_front(const idq *q) { return q->n ? q->v[q->head] : -1; }
static inline void idq_pop(idq *q) {
  q->head++;
  if (--q->n == 0) q->head = 0;
}
static inline void idq_clear(idq *q) { q->head = q->n = 0; }

static const char *desc_hdr(const hdr *h, char *buf, size_t size) {
  em_coll c = {.kind = (em_coll_kind)h->kind, .op = (em_reduce_op)h->op,
               .dtype = (em_dtype)h->dtype, .root = h->root, .tag = h->tag, .count = h->count};
  if (h->kind >= EM_COLL_KIND_COUNT || !em_dtype_is_valid(h->dtype) || h->op >= EM_REDUCE_OP_COUNT) {
    snprintf(buf, size, "an unknown collective (kind %u)", h->kind);
    return buf;
  }
  return em__coll_desc(&c, buf, size);
}

static bool is_p2p(em_coll_kind k) { return k == EM_COLL_SEND || k == EM_COLL_RECV; }
static bool has_op(em_coll_kind k) {
  return k == EM_COLL_ALLREDUCE || k == EM_COLL_REDUCE || k == EM_COLL_REDUCE_SCATTER;
}
static bool has_root(em_coll_kind k) {
  return k == EM_COLL_BROADCAST || k == EM_COLL_REDUCE || k == EM_COLL_GATHER ||
         k == EM_COLL_SCATTER;
}

static void fill_hdr(const tcp *t, hdr *h, uint64_t len) {
  const em_coll *c = t->cur;
  memset(h, 0, sizeof *h);
  h->magic = MAGIC;
  h->len = len;
  h->dtype = (uint8_t)c->dtype;
  if (is_p2p(c->kind)) {
    h->type = F_P2P;
    h->kind = (uint8_t)EM_COLL_SEND;
    h->tag = c->tag;
    h->count = c->count;
    h->root = -1;
    return;
  }
  h->type = F_COLL;
  h->kind = (uint8_t)c->kind;
  h->op = has_op(c->kind) ? (uint8_t)c->op : 0;
  h->root = has_root(c->kind) ? c->root : -1;
  h->seq = c->seq;
  h->count = c->kind == EM_COLL_ALL_TO_ALL ? -1 : c->count;
}

/* ---- failure ------------------------------------------------------------------------- */

static em_status refail(tcp *t) { return em__set_error(t->fail_st, "%s", t->fail_msg); }

static em_status fail(tcp *t, em_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static em_status fail(tcp *t, em_status st, const char *fmt, ...) {
  if (t->failed) return refail(t);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->fail_msg, sizeof t->fail_msg, fmt, ap);
  va_end(ap);
  t->failed = true;
  t->fail_st = st;
  if (getenv("EMBER_PG_DEBUG")) fprintf(stderr, "[dbg rank %d] fail: %s\n", t->rank, t->fail_msg);
  return refail(t);
}

static const char *cur_name(const tcp *t, char *buf, size_t size) {
  if (!t->cur) return "(idle)";
  if (is_p2p(t->cur->kind))
    snprintf(buf, size, "%s (peer %d, tag %d)", em__coll_name(t->cur->kind), t->cur->root,
             t->cur->tag);
  else
    snprintf(buf, size, "%s #%llu", em__coll_name(t->cur->kind), (unsigned long long)t->cur->seq);
  return buf;
}

/* Tells every peer whose outgoing stream is at a frame boundary why this
 * rank gave up (best effort, never blocks), once. */
static void tell_peers(tcp *t, em_status st, const char *msg) {
  if (t->told_peers) return;
  t->told_peers = true;
  size_t ml = strlen(msg);
  if (ml > ABORT_MSG_MAX) ml = ABORT_MSG_MAX;
  for (int i = 0; i < t->W; i++) {
    peer *p = &t->peers[i];
    if (i == t->rank || p->fd < 0 || p->eof) continue;
    if (p->sq.n > 0 && p->sent > 0) { /* mid-frame: cannot interleave; end the stream */
      shutdown(p->fd, SHUT_WR);
      continue;
    }
    hdr h = {.magic = MAGIC, .type = F_ABORT, .root = (int32_t)st, .len = ml};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)msg, ml}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t r = sendmsg(p->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r != (ssize_t)(sizeof h + ml)) shutdown(p->fd, SHUT_WR); /* torn: end it */
  }
}

/* ---- reading -------------------------------------------------------------------------- */

static bool want_read(const peer *p) {
  return p->rq.n > 0 || p->in_frame || p->sq.n > 0 || p->draining;
}

/* Checks a frame against the running collective and the length this rank
 * expects (expect UINT64_MAX: length unknown yet, an early arrival). */
static em_status check_coll(tcp *t, int from, const hdr *h, uint64_t expect) {
  const em_coll *c = t->cur;
  char a[160], b[160], nm[96];
  if (h->type == F_P2P) {
    if (expect == UINT64_MAX) return EM_OK;
    if (h->dtype != (uint8_t)c->dtype || h->len != expect)
      return fail(t, EM_ERR_COMM,
                  "recv from rank %d (tag %d): rank %d sent %lld elements of %s (%llu bytes) but "
                  "this rank expects %lld elements of %s (%llu bytes)",
                  from, c->tag, from, (long long)h->count, em_dtype_name((em_dtype)h->dtype),
                  (unsigned long long)h->len, (long long)c->count, em_dtype_name(c->dtype),
                  (unsigned long long)expect);
    return EM_OK;
  }
  if (h->seq != c->seq)
    return fail(t, EM_ERR_COMM,
                "%s: rank %d sent data of collective #%llu (%s) while this rank runs collective "
                "#%llu (%s): the ranks called different sequences of collectives",
                cur_name(t, nm, sizeof nm), from, (unsigned long long)h->seq,
                desc_hdr(h, a, sizeof a), (unsigned long long)c->seq,
                em__coll_desc(c, b, sizeof b));
  hdr mine;
  fill_hdr(t, &mine, expect);
  if (mine.kind != h->kind || mine.dtype != h->dtype || mine.op != h->op ||
      mine.root != h->root || mine.count != h->count)
    return fail(t, EM_ERR_COMM,
                "rank %d called %s but this rank (%d) called %s as collective #%llu (set "
                "EMBER_DISTRIBUTED_DEBUG=DETAIL to compare shapes)",
                from, desc_hdr(h, a, sizeof a), t->rank, em__coll_desc(c, b, sizeof b),
                (unsigned long long)c->seq);
  if (expect != UINT64_MAX && h->len != expect)
    return fail(t, EM_ERR_COMM,
                "%s: rank %d sent a message of %llu bytes where this rank expected %llu: the "
                "ranks passed different sizes (or counts per peer)",
                cur_name(t, nm, sizeof nm), from, (unsigned long long)h->len,
                (unsigned long long)expect);
  return EM_OK;
}

static void complete_req(tcp *t, int id) {
  if (!t->reqs[id].done) {
    t->reqs[id].done = true;
    t->pending--;
  }
}

/* The frame being read from p is complete. */
static em_status finish_frame(tcp *t, int from) {
  peer *p = &t->peers[from];
  p->in_frame = false;
  if (p->h.type == F_ABORT) {
    char nm[96];
    size_t ml = (size_t)p->h.len;
    char *msg = p->abort_buf;
    p->abort_buf = NULL;
    em_status st = (p->h.root > 0 && p->h.root < EM_STATUS_COUNT) ? (em_status)p->h.root
                                                                  : EM_ERR_COMM;
    if (t->cur && is_p2p(t->cur->kind) && (t->cur->root != from || t->pending == 0)) {
      /* a send/recv between two other live ranks may still finish, and
       * one with from whose data is all here (read in the same gulp as
       * this frame) has; the next collective (or exchange with from)
       * fails with this */
      if (t->deferred_from < 0) {
        t->deferred_from = from;
        t->deferred_st = st;
        snprintf(t->deferred_msg, sizeof t->deferred_msg, "rank %d aborted: %.*s", from, (int)ml,
                 msg ? msg : "");
      }
      free(msg);
      return EM_OK;
    }
    em_status r = fail(t, st, "%s: rank %d aborted: %.*s", cur_name(t, nm, sizeof nm), from,
                       (int)ml, msg ? msg : "");
    free(msg);
    return r; /* run() passes the reason on: the source may not reach everyone */
  }
  if (p->dst_req >= 0) complete_req(t, p->dst_req);
  if (p->dst_ux) p->dst_ux->complete = true;
  p->dst_req = -1;
  p->dst_ux = NULL;
  return EM_OK;
}

/* A header from p has been read: find where its payload goes. */
static em_status start_frame(tcp *t, int from) {
  peer *p = &t->peers[from];
  hdr *h = &p->h;
  char nm[96];
  if (h->magic != MAGIC || h->type < F_COLL || h->type > F_BYE)
    return fail(t, EM_ERR_COMM, "%s: rank %d sent a corrupt frame header (magic %08x, type %u)",
                cur_name(t, nm, sizeof nm), from, h->magic, h->type);
  p->dst_req = -1;
  p->dst_ux = NULL;
  p->left = h->len;
  if (h->type == F_BYE) {
    p->bye = true;
    p->draining = true;
    return EM_OK;
  }
  p->in_frame = true;
  if (h->type == F_ABORT) {
    if (h->len > ABORT_MSG_MAX)
      return fail(t, EM_ERR_COMM, "%s: rank %d aborted (oversize reason)", cur_name(t, nm, sizeof nm),
                  from);
    p->abort_buf = malloc((size_t)h->len + 1);
    if (!p->abort_buf) return fail(t, EM_ERR_NOMEM, "tcp backend: out of memory");
    p->dst = p->abort_buf;
  } else {
    int id = idq_front(&p->rq);
    bool p2p_now = t->cur && is_p2p(t->cur->kind);
    bool match = id >= 0 && (p2p_now ? (h->type == F_P2P && h->tag == t->cur->tag)
                                     : h->type == F_COLL);
    if (match) {
      EM_CHECK(check_coll(t, from, h, t->reqs[id].n));
      idq_pop(&p->rq);
      p->dst = t->reqs[id].buf;
      p->dst_req = id;
    } else {
      /* an early frame of the running collective is checked now: its
       * sender may be gone by the time it is matched */
      if (h->type == F_COLL && t->cur && !p2p_now && h->seq <= t->cur->seq)
        EM_CHECK(check_coll(t, from, h, UINT64_MAX));
      ux *u = calloc(1, sizeof *u);
      char *d = u ? malloc(h->len ? (size_t)h->len : 1) : NULL;
      if (!d) {
        free(u);
        return fail(t, EM_ERR_NOMEM, "tcp backend: cannot buffer a %llu-byte message from rank %d",
                    (unsigned long long)h->len, from);
      }
      u->h = *h;
      u->data = d;
      if (p->ux_tail) p->ux_tail->next = u;
      else p->ux_head = u;
      p->ux_tail = u;
      p->dst = d;
      p->dst_ux = u;
    }
  }
  if (p->left == 0) return finish_frame(t, from);
  return EM_OK;
}

static em_status do_read(tcp *t, int from, int stop_req);

/* Before blaming from's broken connection: give the other connections a
 * short look for an ABORT frame (which names the cause) or an earlier
 * death. */
static void sweep(tcp *t, int from) {
  if (t->in_sweep) return;
  t->in_sweep = true;
  int64_t end = em__now_ms() + 50;
  for (;;) {
    int n = 0;
    for (int i = 0; i < t->W; i++) {
      peer *p = &t->peers[i];
      if (i == t->rank || i == from || p->closed) continue;
      t->spfd[n] = (struct pollfd){.fd = p->fd, .events = POLLRDHUP};
      t->spmap[n++] = i;
    }
    int64_t left = end - em__now_ms();
    if (n == 0 || left <= 0 || poll(t->spfd, (nfds_t)n, (int)left) <= 0) break;
    for (int k = 0; k < n && !t->failed; k++)
      if (t->spfd[k].revents) {
        t->peers[t->spmap[k]].draining = true;
        (void)do_read(t, t->spmap[k], -1);
      }
    if (t->failed) break;
  }
  t->in_sweep = false;
}

/* from's connection broke (EOF, reset): fail if this rank still needs it,
 * else note the death. */
static em_status peer_gone(tcp *t, int from, int err) {
  peer *p = &t->peers[from];
  char nm[96];
  bool torn = p->in_frame;
  p->eof = true;
  p->closed = true;
  p->draining = false;
  p->in_frame = false;
  bool needed = torn || p->rq.n > 0 || p->sq.n > 0;
  if (p->bye && !torn && err == 0) {
    if (!needed) return EM_OK;
    return fail(t, EM_ERR_COMM,
                "%s: rank %d left the group (destroyed it) while this rank still exchanges data "
                "with it: the ranks called different collectives",
                cur_name(t, nm, sizeof nm), from);
  }
  if (!needed && !t->in_sweep) {
    if (t->first_dead < 0) t->first_dead = from;
    return EM_OK;
  }
  if (t->first_dead < 0 && !t->in_sweep) {
    sweep(t, from);
    if (t->failed) return refail(t);
  }
  if (t->first_dead >= 0 && t->first_dead != from)
    return fail(t, EM_ERR_COMM,
                "%s: rank %d closed its connection (the process died or was killed); rank %d "
                "then broke off too",
                cur_name(t, nm, sizeof nm), t->first_dead, from);
  if (t->first_dead < 0) t->first_dead = from;
  if (err)
    return fail(t, EM_ERR_COMM,
                "%s: rank %d reset the connection (the process died or was killed): %s",
                cur_name(t, nm, sizeof nm), from, strerror(err));
  return fail(t, EM_ERR_COMM, "%s: rank %d closed its connection%s (the process died or was killed)",
              cur_name(t, nm, sizeof nm), from, torn ? " in the middle of a message" : "");
}

static em_status peer_eof(tcp *t, int from) { return peer_gone(t, from, 0); }

static em_status sock_error(tcp *t, int from, int err, const char *what) {
  char nm[96];
  if (err == ECONNRESET || err == EPIPE) return peer_gone(t, from, err);
  return fail(t, EM_ERR_COMM, "%s: %s rank %d failed: %s", cur_name(t, nm, sizeof nm), what, from,
              strerror(err));
}

/* Reads what p has for us without blocking. Stops at a frame boundary
 * once stop_req (if >= 0) has completed, so the algorithm can react. */
static em_status do_read(tcp *t, int from, int stop_req) {
  peer *p = &t->peers[from];
  if (!p->stage) { /* allocated on first use: most algorithms talk to few peers */
    p->stage = malloc(STAGE_BYTES);
    if (!p->stage) return fail(t, EM_ERR_NOMEM, "tcp backend: out of memory");
  }
  for (;;) {
    if (t->failed) return refail(t);
    if (p->in_frame) {
      if (p->spos < p->slen) {
        uint64_t k = p->slen - p->spos;
        if (k > p->left) k = p->left;
        memcpy(p->dst, p->stage + p->spos, (size_t)k);
        p->dst += k;
        p->left -= k;
        p->spos += (uint32_t)k;
        if (p->left == 0) EM_CHECK(finish_frame(t, from));
        continue;
      }
      ssize_t r;
      if (p->left >= DIRECT_MIN) {
        size_t k = p->left > (1u << 30) ? (1u << 30) : (size_t)p->left;
        r = recv(p->fd, p->dst, k, MSG_DONTWAIT);
        if (r > 0) {
          p->dst += r;
          p->left -= (uint64_t)r;
          if (p->left == 0) EM_CHECK(finish_frame(t, from));
          continue;
        }
      } else {
        p->spos = p->slen = 0;
        r = recv(p->fd, p->stage, STAGE_BYTES, MSG_DONTWAIT);
        if (r > 0) {
          p->slen = (uint32_t)r;
          continue;
        }
      }
      if (r == 0) return peer_eof(t, from);
      if (errno == EAGAIN || errno == EWOULDBLOCK) return EM_OK;
      if (errno == EINTR) continue;
      return sock_error(t, from, errno, "receiving from");
    }
    /* at a frame boundary: read on only while something is expected from
     * (or owed to) this peer, so a frame of a later collective (an ABORT
     * included) stays put until its collective runs */
    if (stop_req >= 0 && t->reqs[stop_req].done) return EM_OK;
    if (!want_read(p)) return EM_OK;
    if (p->slen - p->spos >= sizeof(hdr)) {
      memcpy(&p->h, p->stage + p->spos, sizeof(hdr));
      p->spos += (uint32_t)sizeof(hdr);
      EM_CHECK(start_frame(t, from));
      continue;
    }
    if (p->spos > 0) {
      memmove(p->stage, p->stage + p->spos, p->slen - p->spos);
      p->slen -= p->spos;
      p->spos = 0;
    }
    /* a large expected payload is better read straight into place: take
     * only the header now */
    size_t want = STAGE_BYTES - p->slen;
    int id = idq_front(&p->rq);
    if (id >= 0 && t->reqs[id].n >= DIRECT_MIN) want = sizeof(hdr) - p->slen;
    ssize_t r = recv(p->fd, p->stage + p->slen, want, MSG_DONTWAIT);
    if (r > 0) {
      p->slen += (uint32_t)r;
      continue;
    }
    if (r == 0) {
      if (p->slen > 0) {
        p->in_frame = true; /* a torn header */
      }
      return peer_eof(t, from);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return EM_OK;
    if (errno == EINTR) continue;
    return sock_error(t, from, errno, "receiving from");
  }
}

/* ---- writing ---------------------------------------------------------------------------- */

static em_status do_write(tcp *t, int to) {
  peer *p = &t->peers[to];
  while (p->sq.n > 0) {
    if (t->failed) return refail(t);
    struct iovec iov[MAX_IOV];
    int niov = 0;
    uint64_t skip = p->sent;
    for (int k = 0; k < p->sq.n && niov + 2 <= MAX_IOV; k++) {
      req *rq = &t->reqs[p->sq.v[p->sq.head + k]];
      if (skip < sizeof(hdr)) {
        iov[niov++] = (struct iovec){(char *)&rq->h + skip, sizeof(hdr) - skip};
        skip = 0;
        if (rq->n) iov[niov++] = (struct iovec){rq->buf, (size_t)rq->n};
      } else {
        skip -= sizeof(hdr);
        if (rq->n > skip) iov[niov++] = (struct iovec){rq->buf + skip, (size_t)(rq->n - skip)};
        skip = 0;
      }
    }
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
    ssize_t r = sendmsg(p->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return EM_OK;
      if (errno == EINTR) continue;
      int err = errno;
      /* the peer may have said why it left: read that first */
      p->draining = true;
      em_status st = do_read(t, to, -1);
      if (st) return st;
      return sock_error(t, to, err, "sending to");
    }
    if (atomic_load_explicit(&die_budget, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub(&die_budget, (int64_t)r) - (int64_t)r <= 0)
      raise(SIGKILL);
    uint64_t done = p->sent + (uint64_t)r;
    while (p->sq.n > 0) {
      int id = idq_front(&p->sq);
      uint64_t fl = sizeof(hdr) + t->reqs[id].n;
      if (done < fl) break;
      done -= fl;
      idq_pop(&p->sq);
      complete_req(t, id);
    }
    p->sent = done;
  }
  p->sent = 0;
  return EM_OK;
}

/* ---- progress ------------------------------------------------------------------------------ */

static em_status check_abort(tcp *t) {
  if (!atomic_load_explicit(&t->aborted, memory_order_acquire)) return EM_OK;
  pthread_mutex_lock(&t->amu);
  em_status st = t->abort_st ? t->abort_st : EM_ERR_STATE;
  char msg[512];
  snprintf(msg, sizeof msg, "%s", t->abort_msg);
  pthread_mutex_unlock(&t->amu);
  char nm[96];
  return fail(t, st, "%s: process group aborted: %s", cur_name(t, nm, sizeof nm), msg);
}

static em_status timed_out(tcp *t, int req_id) {
  char nm[96];
  int id = req_id;
  if (id < 0 || t->reqs[id].done)
    for (id = 0; id < t->nreq && t->reqs[id].done; id++) {
    }
  if (id >= t->nreq) return fail(t, EM_ERR_TIMEOUT, "%s: timed out", cur_name(t, nm, sizeof nm));
  const req *r = &t->reqs[id];
  char dead[96] = "";
  if (t->first_dead >= 0)
    snprintf(dead, sizeof dead, "; rank %d had closed its connection (died or was killed)",
             t->first_dead);
  return fail(t, EM_ERR_TIMEOUT, "%s: timed out waiting for rank %d (%s %llu bytes)%s",
              cur_name(t, nm, sizeof nm), r->peer, r->send ? "to take" : "to send",
              (unsigned long long)r->n, dead);
}

/* Drives every socket until request id (or, for id < 0, everything) has
 * completed, the deadline passes, or something fails. */
static em_status progress(tcp *t, int id, int64_t deadline) {
  for (;;) {
    if (t->failed) return refail(t);
    EM_CHECK(check_abort(t));
    if (id >= 0 ? t->reqs[id].done : t->pending == 0) return EM_OK;
    /* frames already in a staging buffer never make the socket readable:
     * hand them out first */
    bool staged = false;
    for (int i = 0; i < t->W; i++) {
      peer *p = &t->peers[i];
      if (i != t->rank && p->spos < p->slen && (p->in_frame || p->rq.n > 0)) {
        EM_CHECK(do_read(t, i, id));
        staged = true;
      }
    }
    if (staged && (id >= 0 ? t->reqs[id].done : t->pending == 0)) return EM_OK;
    int n = 0;
    for (int i = 0; i < t->W; i++) {
      peer *p = &t->peers[i];
      if (i == t->rank || p->closed) continue;
      short ev = POLLRDHUP;
      if (want_read(p)) ev |= POLLIN;
      if (p->sq.n > 0) ev |= POLLOUT;
      t->pfd[n] = (struct pollfd){.fd = p->fd, .events = ev};
      t->pmap[n++] = i;
    }
    t->pfd[n] = (struct pollfd){.fd = t->efd, .events = POLLIN};
    int64_t now = em__now_ms();
    if (now >= deadline) return timed_out(t, id);
    int64_t wait = deadline - now;
    /* a short spin first on the caller's thread (see "Waiting" above) */
    int r = 0;
    if (t->spin_cur > 0 && !em__pg_on_progress_thread && host_has_room(t)) {
      int64_t until = now_ns() + t->spin_cur;
      do r = poll(t->pfd, (nfds_t)n + 1, 0);
      while (r == 0 && now_ns() < until);
      if (r != 0) t->spin_cur = t->spin_cur * 2 < t->spin_ns ? t->spin_cur * 2 : t->spin_ns;
      else if (t->spin_cur / 2 >= t->spin_ns / 64) t->spin_cur /= 2;
    }
    if (r == 0) r = poll(t->pfd, (nfds_t)n + 1, wait > INT_MAX ? INT_MAX : (int)wait);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(t, EM_ERR_COMM, "tcp backend: poll failed: %s", strerror(errno));
    }
    if (r == 0) continue;
    for (int k = 0; k < n; k++) {
      short re = t->pfd[k].revents;
      if (!re) continue;
      int i = t->pmap[k];
      if (re & (POLLRDHUP | POLLHUP | POLLERR)) t->peers[i].draining = true;
      if (re & POLLOUT) EM_CHECK(do_write(t, i));
      if (re & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) EM_CHECK(do_read(t, i, id));
    }
  }
}

/* ---- the transport -------------------------------------------------------------------------- */

static em_status new_req(tcp *t, bool send, int to, const void *buf, size_t n, int *out) {
  if (t->nreq == t->capreq) {
    int nc = t->capreq ? t->capreq * 2 : 64;
    req *nr = realloc(t->reqs, sizeof(req) * (size_t)nc);
    if (!nr) return fail(t, EM_ERR_NOMEM, "tcp backend: out of memory");
    t->reqs = nr;
    t->capreq = nc;
  }
  int id = t->nreq++;
  req *r = &t->reqs[id];
  r->send = send;
  r->done = false;
  r->peer = to;
  r->buf = (char *)buf;
  r->n = n;
  t->pending++;
  *out = id;
  return EM_OK;
}

static em_status bad_peer(tcp *t, int who) {
  return em__set_error(EM_ERR_INTERNAL, "tcp backend: peer %d out of range [0, %d) or self",
                       who, t->W);
}

/* A peer already known gone is needed. */
static em_status gone_error(tcp *t, int who) {
  char nm[96];
  if (t->peers[who].bye)
    return fail(t, EM_ERR_COMM,
                "%s: rank %d left the group (destroyed it) while this rank still exchanges data "
                "with it: the ranks called different collectives",
                cur_name(t, nm, sizeof nm), who);
  return fail(t, EM_ERR_COMM, "%s: rank %d closed its connection (the process died or was killed)",
              cur_name(t, nm, sizeof nm), who);
}

static em_status tr_isend(void *ctx, int to, const void *buf, size_t n, int *req_out) {
  tcp *t = ctx;
  if (t->failed) return refail(t);
  if (to < 0 || to >= t->W || to == t->rank) return bad_peer(t, to);
  int id = -1;
  EM_CHECK(new_req(t, true, to, buf, n, &id));
  fill_hdr(t, &t->reqs[id].h, n);
  if (req_out) *req_out = id;
  peer *p = &t->peers[to];
  if (p->eof) return gone_error(t, to);
  EM_CHECK(idq_push(&p->sq, id));
  if (p->sq.n == 1) return do_write(t, to); /* try at once: latency */
  return EM_OK;
}

static em_status tr_irecv(void *ctx, int from, void *buf, size_t n, int *req_out) {
  tcp *t = ctx;
  if (t->failed) return refail(t);
  if (from < 0 || from >= t->W || from == t->rank) return bad_peer(t, from);
  int id = -1;
  EM_CHECK(new_req(t, false, from, buf, n, &id));
  if (req_out) *req_out = id;
  peer *p = &t->peers[from];
  /* an early arrival? (only when nothing is queued before us) */
  if (p->rq.n == 0) {
    bool p2p_now = is_p2p(t->cur->kind);
    ux *prev = NULL;
    for (ux *u = p->ux_head; u; prev = u, u = u->next) {
      bool match = p2p_now ? (u->h.type == F_P2P && u->h.tag == t->cur->tag) : u->h.type == F_COLL;
      if (!match) continue;
      EM_CHECK(check_coll(t, from, &u->h, n));
      if (prev) prev->next = u->next;
      else p->ux_head = u->next;
      if (p->ux_tail == u) p->ux_tail = prev;
      if (u->complete) {
        if (n) memcpy(buf, u->data, n);
        complete_req(t, id);
      } else { /* still arriving: redirect the rest of it into buf */
        size_t got = (size_t)(p->dst - u->data);
        if (got) memcpy(buf, u->data, got);
        p->dst = (char *)buf + got;
        p->dst_ux = NULL;
        p->dst_req = id;
      }
      free(u->data);
      free(u);
      return EM_OK;
    }
    if (p->eof) return gone_error(t, from);
  }
  return idq_push(&p->rq, id);
}

static em_status tr_wait(void *ctx, int id, int64_t deadline) {
  tcp *t = ctx;
  if (t->failed) return refail(t);
  if (id < 0 || id >= t->nreq) return em__set_error(EM_ERR_INTERNAL, "tcp backend: bad request %d", id);
  if (t->reqs[id].done) return EM_OK;
  /* try the socket once before polling: the data is often there */
  const req *r = &t->reqs[id];
  if (!r->send) EM_CHECK(do_read(t, r->peer, id));
  return progress(t, id, deadline);
}

static em_status tr_wait_all(void *ctx, int64_t deadline) {
  tcp *t = ctx;
  if (t->failed) return refail(t);
  EM_CHECK(progress(t, -1, deadline));
  t->nreq = 0;
  return EM_OK;
}

/* ---- backend ops ---------------------------------------------------------------------------- */

static void clear_queues(tcp *t) {
  for (int i = 0; i < t->W; i++) {
    if (i == t->rank) continue;
    peer *p = &t->peers[i];
    idq_clear(&p->rq);
    if (!p->in_frame || p->dst_req < 0) continue;
    p->dst_req = -1; /* never reached once failed */
  }
  t->nreq = 0;
  t->pending = 0;
}

/* A receive of c's tag from c->root that arrived whole before the peer's
 * ABORT (frames of one connection arrive in order): it still completes. */
static bool arrived_before_abort(const tcp *t, const em_coll *c) {
  if (c->kind != EM_COLL_RECV) return false;
  for (const ux *u = t->peers[c->root].ux_head; u; u = u->next)
    if (u->h.type == F_P2P && u->h.tag == c->tag) return u->complete;
  return false;
}

static em_status tcp_run(void *ctx, em_coll *c) {
  tcp *t = ctx;
  t->cur = c;
  em_status st;
  if (t->failed) {
    st = refail(t);
  } else if (t->deferred_from >= 0 && (!is_p2p(c->kind) || c->root == t->deferred_from) &&
             !arrived_before_abort(t, c)) {
    char nm[96];
    st = fail(t, t->deferred_st, "%s: %s", cur_name(t, nm, sizeof nm), t->deferred_msg);
  } else if ((st = check_abort(t)) == EM_OK &&
             (is_p2p(c->kind) || t->first_dead < 0 || (st = gone_error(t, t->first_dead)) == EM_OK)) {
    t->nreq = 0;
    t->pending = 0;
    st = em__algo_run(&t->tr, c);
    if (st && !t->failed) fail(t, st, "%s", em_last_error());
  }
  if (st) {
    tell_peers(t, t->fail_st, t->fail_msg);
    clear_queues(t);
    for (int i = 0; i < t->W; i++)
      if (i != t->rank) idq_clear(&t->peers[i].sq);
    st = refail(t);
  }
  t->cur = NULL;
  return st;
}

static void tcp_abort(void *ctx, em_status st, const char *reason) {
  tcp *t = ctx;
  pthread_mutex_lock(&t->amu);
  if (!atomic_load(&t->aborted)) {
    t->abort_st = st ? st : EM_ERR_STATE;
    snprintf(t->abort_msg, sizeof t->abort_msg, "%s", reason ? reason : "aborted");
    atomic_store_explicit(&t->aborted, 1, memory_order_release);
    uint64_t one = 1;
    ssize_t r = write(t->efd, &one, sizeof one);
    (void)r;
  }
  pthread_mutex_unlock(&t->amu);
}

static void free_peer(peer *p) {
  for (ux *u = p->ux_head, *n; u; u = n) {
    n = u->next;
    free(u->data);
    free(u);
  }
  free(p->stage);
  free(p->abort_buf);
  free(p->sq.v);
  free(p->rq.v);
  if (p->fd >= 0) close(p->fd);
}

static void tcp_destroy(void *ctx) {
  tcp *t = ctx;
  if (!t) return;
  if (getpid() != t->pid) { /* a forked child: the sockets are the parent's */
    for (int i = 0; t->peers && i < t->W; i++)
      if (i != t->rank && t->peers[i].fd >= 0) {
        close(t->peers[i].fd);
        t->peers[i].fd = -1;
      }
    t->failed = t->told_peers = true;
    atomic_store(&t->aborted, 1);
    pthread_mutex_init(&t->amu, NULL); /* a thread of the parent may have held it */
  }
  bool healthy = !t->failed && !atomic_load(&t->aborted);
  if (!healthy && !t->told_peers) {
    if (t->failed) {
      tell_peers(t, t->fail_st, t->fail_msg);
    } else {
      pthread_mutex_lock(&t->amu);
      char msg[600];
      snprintf(msg, sizeof msg, "process group aborted: %s", t->abort_msg);
      em_status st = t->abort_st;
      pthread_mutex_unlock(&t->amu);
      tell_peers(t, st, msg);
    }
  }
  for (int i = 0; t->peers && i < t->W; i++) {
    peer *p = &t->peers[i];
    if (i == t->rank || p->fd < 0) continue;
    if (healthy && !p->eof) {
      hdr h = {.magic = MAGIC, .type = F_BYE};
      ssize_t r = send(p->fd, &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL);
      (void)r;
    }
    shutdown(p->fd, SHUT_WR);
    /* read what is pending so close() sends FIN, not RST */
    char sink[4096];
    for (int k = 0; k < 1024 && recv(p->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; k++) {
    }
  }
  for (int i = 0; t->peers && i < t->W; i++)
    if (i != t->rank) free_peer(&t->peers[i]);
  free(t->peers);
  free(t->reqs);
  free(t->pfd);
  free(t->pmap);
  free(t->spfd);
  free(t->spmap);
  if (t->efd >= 0) close(t->efd);
  pthread_mutex_destroy(&t->amu);
  free(t);
}

static const em_pg_backend_ops tcp_ops = {
    .name = "tcp",
    .run = tcp_run,
    .abort = tcp_abort,
    .destroy = tcp_destroy,
    .devices = EM_PG_DEV_CPU,
    .inline_max_bytes = 0,
};

/* ---- bootstrap -------------------------------------------------------------------------------- */

typedef struct hello {
  uint32_t magic, version;
  uint64_t uid;
  int32_t rank, world;
} hello;

static em_status io_all(int fd, void *buf, size_t n, bool wr, int64_t deadline, const char *what,
                        int peer_rank) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = wr ? send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : recv(fd, p, n, MSG_DONTWAIT);
    if (r > 0) {
      p += r;
      n -= (size_t)r;
      continue;
    }
    if (r == 0)
      return em__set_error(EM_ERR_COMM, "tcp backend: rank %d closed the connection during %s",
                           peer_rank, what);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return em__set_error(EM_ERR_COMM, "tcp backend: %s with rank %d failed: %s", what,
                           peer_rank, strerror(errno));
    int64_t left = deadline - em__now_ms();
    if (left <= 0)
      return em__set_error(EM_ERR_TIMEOUT, "tcp backend: timed out during %s with rank %d", what,
                           peer_rank);
    struct pollfd pf = {.fd = fd, .events = wr ? POLLOUT : POLLIN};
    poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
  }
  return EM_OK;
}

static void tune_socket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  static int bufsz = -1;
  int b = __atomic_load_n(&bufsz, __ATOMIC_RELAXED);
  if (b < 0) {
    b = (int)em__pg_env_bytes("EMBER_PG_TCP_SOCKBUF", SOCKBUF_DEFAULT, 0, 1u << 30);
    __atomic_store_n(&bufsz, b, __ATOMIC_RELAXED);
  }
  if (b > 0) {
    /* FORCE (root) goes past net.core.[rw]mem_max; otherwise the plain
     * option, capped by the kernel */
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &b, sizeof b) != 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  }
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The local IPv4 address that routes to host (a UDP connect sends
 * nothing); "" if unknown. */
static void route_addr(const char *host, char *out, size_t size) {
  out[0] = '\0';
  if (!host || !*host) return;
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *ai = NULL;
  if (getaddrinfo(host, "9", &hints, &ai) != 0 || !ai) return;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
      inet_ntop(AF_INET, &sa.sin_addr, out, (socklen_t)size);
    close(fd);
  }
  freeaddrinfo(ai);
}

static void first_ipv4(char *out, size_t size) {
  struct ifaddrs *ifs = NULL;
  snprintf(out, size, "127.0.0.1");
  if (getifaddrs(&ifs) != 0) return;
  for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    struct sockaddr_in *sa = (struct sockaddr_in *)i->ifa_addr;
    if ((ntohl(sa->sin_addr.s_addr) >> 24) == 127) continue;
    inet_ntop(AF_INET, &sa->sin_addr, out, (socklen_t)size);
    break;
  }
  freeifaddrs(ifs);
}

static int connect_to(const char *ip, int port, int64_t deadline, int peer_rank) {
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      em__set_error(EM_ERR_COMM, "tcp backend: socket failed: %s", strerror(errno));
      return -1;
    }
    tune_socket(fd);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
      close(fd);
      em__set_error(EM_ERR_COMM, "tcp backend: rank %d published a bad address '%s'", peer_rank, ip);
      return -1;
    }
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (r != 0 && errno == EINPROGRESS) {
      int64_t left = deadline - em__now_ms();
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      if (left > 0 && poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left) == 1) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        r = err ? -1 : 0;
        errno = err;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (r == 0) return fd;
    int err = errno;
    close(fd);
    if (em__now_ms() >= deadline || (err != ECONNREFUSED && err != EAGAIN && err != EINTR)) {
      em__set_error(err == ETIMEDOUT ? EM_ERR_TIMEOUT : EM_ERR_COMM,
                    "tcp backend: cannot connect to rank %d at %s:%d: %s", peer_rank, ip, port,
                    strerror(err));
      return -1;
    }
    usleep(10000);
  }
}

em_status em__pg_tcp_create(const em_pg_backend_init *in, void **ctx_out,
                            const em_pg_backend_ops **ops_out) {
  if (!in || !ctx_out || !ops_out || in->size < 1 || in->rank < 0 || in->rank >= in->size)
    return em__set_error(EM_ERR_INVALID, "tcp backend: bad arguments");
  if (in->size > 1 && !in->store)
    return em__set_error(EM_ERR_INVALID, "tcp backend: needs a store to bootstrap");
  tcp *t = calloc(1, sizeof *t);
  if (!t) return em__set_error(EM_ERR_NOMEM, "tcp backend: out of memory");
  em_status st = EM_OK;
  int lfd = -1;
  t->rank = in->rank;
  t->W = in->size;
  t->efd = -1;
  pthread_mutex_init(&t->amu, NULL);
  snprintf(t->group_name, sizeof t->group_name, "%s", in->group_name ? in->group_name : "");
  t->first_dead = -1;
  t->deferred_from = -1;
  {
    /* spin only while this host has a core for every rank on it */
    int local = 1;
    for (int j = 0; in->host_ids && j < t->W; j++)
      if (j != t->rank && in->host_ids[j] && in->host_ids[t->rank] &&
          !strcmp(in->host_ids[j], in->host_ids[t->rank]))
        local++;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const char *e = getenv("EMBER_PG_TCP_SPIN_US");
    int64_t us = e && *e ? atoll(e) : 50;
    t->spin_ns = us > 0 && local <= ncpu ? us * 1000 : 0;
    t->spin_cur = t->spin_ns;
    t->ncpu = ncpu;
  }
  t->peers = calloc((size_t)t->W, sizeof(peer));
  t->pfd = calloc((size_t)t->W + 1, sizeof(struct pollfd));
  t->pmap = calloc((size_t)t->W + 1, sizeof(int));
  t->spfd = calloc((size_t)t->W + 1, sizeof(struct pollfd));
  t->spmap = calloc((size_t)t->W + 1, sizeof(int));
  t->pid = getpid();
  if (!t->peers || !t->pfd || !t->pmap || !t->spfd || !t->spmap) {
    st = em__set_error(EM_ERR_NOMEM, "tcp backend: out of memory");
    goto fail;
  }
  for (int i = 0; i < t->W; i++) {
    t->peers[i].fd = -1;
    t->peers[i].dst_req = -1;
  }
  t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->efd < 0) {
    st = em__set_error(EM_ERR_COMM, "tcp backend: eventfd failed: %s", strerror(errno));
    goto fail;
  }
  t->tr = (em_transport){.ctx = t, .rank = t->rank, .size = t->W, .isend = tr_isend,
                         .irecv = tr_irecv, .wait = tr_wait, .wait_all = tr_wait_all};
  if (t->W > 1) {
    const int64_t deadline = em__now_ms() + (in->timeout_ms > 0 ? in->timeout_ms : EM_PG_DEFAULT_TIMEOUT_MS);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t sl = sizeof sa;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, t->W + 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
      st = em__set_error(EM_ERR_COMM, "tcp backend: cannot listen: %s", strerror(errno));
      goto fail;
    }
    tune_socket(lfd);
    set_nonblock(lfd);
    char ip[64];
    route_addr(in->master_addr, ip, sizeof ip);
    if (!ip[0] || !strncmp(ip, "127.", 4)) {
      char alt[64];
      first_ipv4(alt, sizeof alt);
      if (!ip[0]) snprintf(ip, sizeof ip, "%s", alt);
    }
    char key[64], val[128];
    snprintf(key, sizeof key, "tcp/addr/%d", t->rank);
    int vl = snprintf(val, sizeof val, "%s %d", ip, (int)ntohs(sa.sin_port));
    EM_CHECK_GOTO(em_store_set(in->store, key, val, (size_t)vl), st, fail);
    /* connect down */
    for (int j = 0; j < t->rank; j++) {
      snprintf(key, sizeof key, "tcp/addr/%d", j);
      void *v = NULL;
      size_t n = 0;
      int64_t left = deadline - em__now_ms();
      st = em_store_get_timeout(in->store, key, left > 0 ? left : 1, &v, &n);
      if (st) {
        em__prefix_error("tcp backend: waiting for rank %d's address", j);
        goto fail;
      }
      char pip[64] = "";
      int pport = 0;
      if (sscanf((char *)v, "%63s %d", pip, &pport) != 2) {
        em_store_free(v);
        st = em__set_error(EM_ERR_COMM, "tcp backend: rank %d published a bad address", j);
        goto fail;
      }
      em_store_free(v);
      const char *use = pip;
      if (in->host_ids && in->host_ids[j] && in->host_ids[t->rank] &&
          !strcmp(in->host_ids[j], in->host_ids[t->rank]))
        use = "127.0.0.1";
      int fd = connect_to(use, pport, deadline, j);
      if (fd < 0) {
        st = em_last_status();
        goto fail;
      }
      t->peers[j].fd = fd;
      hello h = {HELLO_MAGIC, VERSION, in->uid, t->rank, t->W};
      EM_CHECK_GOTO(io_all(fd, &h, sizeof h, true, deadline, "the handshake", j), st, fail);
    }
    /* accept up */
    int need = t->W - 1 - t->rank;
    while (need > 0) {
      int64_t left = deadline - em__now_ms();
      if (left <= 0) {
        int missing = -1;
        for (int j = t->W - 1; j > t->rank; j--)
          if (t->peers[j].fd < 0) missing = j;
        st = em__set_error(EM_ERR_TIMEOUT,
                           "tcp backend: timed out waiting for rank %d to connect (group '%s')",
                           missing, t->group_name);
        goto fail;
      }
      struct pollfd pf = {.fd = lfd, .events = POLLIN};
      if (poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left) <= 0) continue;
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) continue;
      hello h;
      int64_t hdl = em__now_ms() + 5000;
      if (hdl > deadline) hdl = deadline;
      if (io_all(fd, &h, sizeof h, false, hdl, "the handshake", -1) != EM_OK ||
          h.magic != HELLO_MAGIC || h.version != VERSION || h.uid != in->uid ||
          h.world != t->W || h.rank <= t->rank || h.rank >= t->W || t->peers[h.rank].fd >= 0) {
        close(fd); /* a stranger or a stale connection: not ours */
        em_clear_error();
        continue;
      }
      tune_socket(fd);
      hello ack = {HELLO_MAGIC, VERSION, in->uid, t->rank, t->W};
      if (io_all(fd, &ack, sizeof ack, true, deadline, "the handshake", h.rank) != EM_OK) {
        close(fd);
        em_clear_error();
        continue;
      }
      t->peers[h.rank].fd = fd;
      need--;
    }
    for (int j = 0; j < t->rank; j++) {
      hello ack;
      EM_CHECK_GOTO(io_all(t->peers[j].fd, &ack, sizeof ack, false, deadline, "the handshake", j),
                    st, fail);
      if (ack.magic != HELLO_MAGIC || ack.uid != in->uid || ack.rank != j) {
        st = em__set_error(EM_ERR_COMM, "tcp backend: rank %d answered the handshake wrongly", j);
        goto fail;
      }
    }
    close(lfd);
    lfd = -1;
    for (int j = 0; j < t->W; j++) {
      if (j == t->rank) continue;
      set_nonblock(t->peers[j].fd);
    }
  }
  *ctx_out = t;
  *ops_out = &tcp_ops;
  return EM_OK;
fail:
  if (lfd >= 0) close(lfd);
  t->failed = true;
  t->told_peers = true;
  tcp_destroy(t);
  return st;
}
