/* The process-group front end: group creation (environment, store, URL,
 * sub-groups), the backend registry, argument validation, staging of
 * non-contiguous and list arguments, the per-group FIFO queue with its
 * progress thread, work handles, timeouts, the DETAIL debug check and the
 * monitored barrier. Backends (comm/pg_*.c) only ever see contiguous
 * buffers, one collective at a time.
 *
 * Environment (em_pg_init_env, em_pg_init_url "env://"):
 *   RANK, WORLD_SIZE        this rank and the group size (under mpirun,
 *                           OMPI_COMM_WORLD_RANK / _SIZE when these are unset)
 *   MASTER_ADDR, MASTER_PORT the store's address. Rank 0 starts the store
 *                           server there (em_store_tcp_create) unless
 *                           TRAINRUN_STORE_PREFIX (set by trainrun): every
 *                           key goes under this prefix, fresh per attempt;
 *                           EMBER_STORE_HOSTED=1 (set by trainrun, whose
 *                           agent hosts the store; torchelastic's
 *                           TORCHELASTIC_USE_AGENT_STORE=True is accepted too):
 *                           then every rank, rank 0 included, only connects.
 *   EMBER_STORE_SECRET      the store's secret (read by the store).
 *   EMBER_DISTRIBUTED_DEBUG=DETAIL (or TORCH_DISTRIBUTED_DEBUG=DETAIL)
 *                           check every collective's arguments across ranks.
 *   EMBER_PG_INLINE_BYTES   largest collective (bytes) run inline on the
 *                           caller's thread when the queue is idle
 *                           (default 64 KiB; 0 = never).
 *
 * Store layout: a group instance lives under "<group_name>/<generation>/"
 * in the store, the generation counted by the "<group_name>/join" counter
 * (so a job that recreates a group on the same store gets fresh keys);
 * sub-group k of a group under "<parent prefix>/sub<k>/". Inside: "uid"
 * (rank 0's random 64-bit id), "host/<rank>", "members" (sub-groups),
 * "mb/<n>/..." (monitored barriers) and the backend's own keys.
 *
 * Queue: each member group has one progress thread that runs queued works
 * in FIFO order; a collective of at most inline_max bytes issued while the
 * queue is empty and nothing runs executes inline on the caller's thread
 * (then the returned work is already complete). A work's deadline counts
 * from its call. A failure (peer death, timeout, mismatch) breaks the
 * group: the backend is aborted, queued works fail, later calls fail at
 * once. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"
#include "core/cuda/ember_cuda.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src); /* core/ops_copy.c */

#define DEFAULT_INLINE_BYTES ((int64_t)64 << 10)
#define WAIT_GRACE_MS 2000

/* ---- names and small helpers ------------------------------------------------------------ */

int64_t em__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *em_reduce_op_name(em_reduce_op op) {
  static const char *names[] = {"sum", "avg", "prod", "min", "max", "band", "bor", "bxor"};
  _Static_assert(sizeof names / sizeof names[0] == EM_REDUCE_OP_COUNT, "reduce op names");
  return (int)op >= 0 && op < EM_REDUCE_OP_COUNT ? names[op] : "?";
}

const char *em__coll_name(em_coll_kind k) {
  static const char *names[] = {"allreduce", "broadcast", "reduce",  "allgather",
                                "reduce_scatter", "gather", "scatter", "all_to_all",
                                "send",      "recv",      "barrier"};
  _Static_assert(sizeof names / sizeof names[0] == EM_COLL_KIND_COUNT, "collective names");
  return (int)k >= 0 && k < EM_COLL_KIND_COUNT ? names[k] : "?";
}

const char *em__coll_desc(const em_coll *c, char *buf, size_t size) {
  const char *dt = em_dtype_name(c->dtype), *op = em_reduce_op_name(c->op);
  long long n = (long long)c->count;
  switch (c->kind) {
    case EM_COLL_ALLREDUCE: snprintf(buf, size, "allreduce(%s, %lld elements, %s)", dt, n, op); break;
    case EM_COLL_BROADCAST:
      snprintf(buf, size, "broadcast(%s, %lld elements, root %d)", dt, n, c->root);
      break;
    case EM_COLL_REDUCE:
      snprintf(buf, size, "reduce(%s, %lld elements, %s, root %d)", dt, n, op, c->root);
      break;
    case EM_COLL_ALLGATHER:
      snprintf(buf, size, "allgather(%s, %lld elements per rank)", dt, n);
      break;
    case EM_COLL_REDUCE_SCATTER:
      snprintf(buf, size, "reduce_scatter(%s, %lld elements per rank, %s)", dt, n, op);
      break;
    case EM_COLL_GATHER:
      snprintf(buf, size, "gather(%s, %lld elements per rank, root %d)", dt, n, c->root);
      break;
    case EM_COLL_SCATTER:
      snprintf(buf, size, "scatter(%s, %lld elements per rank, root %d)", dt, n, c->root);
      break;
    case EM_COLL_ALL_TO_ALL: snprintf(buf, size, "all_to_all(%s)", dt); break;
    case EM_COLL_SEND:
    case EM_COLL_RECV:
      snprintf(buf, size, "%s(%s, %lld elements, peer %d, tag %d)", em__coll_name(c->kind), dt, n,
               c->root, c->tag);
      break;
    case EM_COLL_BARRIER: snprintf(buf, size, "barrier()"); break;
    default: snprintf(buf, size, "collective %d", (int)c->kind); break;
  }
  return buf;
}

static bool kind_has_op(em_coll_kind k) {
  return k == EM_COLL_ALLREDUCE || k == EM_COLL_REDUCE || k == EM_COLL_REDUCE_SCATTER;
}
static bool kind_has_root(em_coll_kind k) {
  return k == EM_COLL_BROADCAST || k == EM_COLL_REDUCE || k == EM_COLL_GATHER ||
         k == EM_COLL_SCATTER;
}

/* ---- the backend registry ------------------------------------------------------------------- */

#define MAX_BACKENDS 32
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  char name[32];
  em_pg_backend_create_fn fn;
} reg[MAX_BACKENDS];
static int nreg;
static bool reg_ready;

static int reg_index(const char *name) {
  for (int i = 0; i < nreg; i++)
    if (!strcmp(reg[i].name, name)) return i;
  return -1;
}

static em_status reg_put_locked(const char *name, em_pg_backend_create_fn fn) {
  int i = reg_index(name);
  if (!fn) {
    if (i >= 0) {
      reg[i] = reg[--nreg];
    }
    return EM_OK;
  }
  if (i < 0) {
    if (nreg == MAX_BACKENDS)
      return em__set_error(EM_ERR_INVALID, "register backend '%s': the table is full (%d)", name,
                           MAX_BACKENDS);
    i = nreg++;
    snprintf(reg[i].name, sizeof reg[i].name, "%s", name);
  }
  reg[i].fn = fn;
  return EM_OK;
}

static void reg_builtins_locked(void) {
  if (reg_ready) return;
  reg_ready = true;
  reg_put_locked("tcp", em__pg_tcp_create);
#if defined(EM_PG_HAVE_HIER) && EM_PG_HAVE_HIER
  reg_put_locked("auto", em__pg_hier_create);
  reg_put_locked("gloo", em__pg_hier_create);
#else
  reg_put_locked("auto", em__pg_tcp_create); /* until the shm/hierarchical backend exists */
  reg_put_locked("gloo", em__pg_tcp_create);
#endif
#if defined(EM_PG_HAVE_SHM) && EM_PG_HAVE_SHM
  reg_put_locked("shm", em__pg_shm_create);
#endif
#if defined(EM_PG_HAVE_MPI) && EM_PG_HAVE_MPI
  reg_put_locked("mpi", em__pg_mpi_create);
#endif
#if defined(EM_PG_HAVE_NCCL) && EM_PG_HAVE_NCCL
  reg_put_locked("nccl", em__pg_nccl_create);
#endif
}

em_status em__pg_backend_register(const char *name, em_pg_backend_create_fn fn) {
  if (!name || !*name || strlen(name) > 31)
    return em__set_error(EM_ERR_INVALID, "register backend: the name must be 1 to 31 characters");
  pthread_mutex_lock(&reg_mu);
  reg_builtins_locked();
  em_status st = reg_put_locked(name, fn);
  pthread_mutex_unlock(&reg_mu);
  return st;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *names_locked(char *buf, size_t size) {
  const char *v[MAX_BACKENDS];
  for (int i = 0; i < nreg; i++) v[i] = reg[i].name;
  qsort(v, (size_t)nreg, sizeof v[0], cmp_str);
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < nreg && off < size; i++)
    off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "", v[i]);
  return buf;
}

const char *em__pg_backend_names(char *buf, size_t size) {
  pthread_mutex_lock(&reg_mu);
  reg_builtins_locked();
  names_locked(buf, size);
  pthread_mutex_unlock(&reg_mu);
  return buf;
}

em_pg_backend_create_fn em__pg_backend_find(const char *name) {
  pthread_mutex_lock(&reg_mu);
  reg_builtins_locked();
  int i = name ? reg_index(name) : -1;
  em_pg_backend_create_fn fn = i >= 0 ? reg[i].fn : NULL;
  if (!fn) {
    char known[512];
    names_locked(known, sizeof known);
    em__set_error(EM_ERR_INVALID, "unknown process group backend '%s' (known: %s)",
                  name ? name : "(null)", known);
  }
  pthread_mutex_unlock(&reg_mu);
  return fn;
}

/* ---- structures ----------------------------------------------------------------------------- */

/* What DETAIL mode compares across ranks before each collective. Fields a
 * collective does not use are zero (-1 for root) so memcmp decides. */
typedef struct fingerprint {
  uint32_t magic;
  uint8_t kind, op, dtype, ndim;
  int32_t root;
  int32_t unused;
  uint64_t seq;
  int64_t count;
  int64_t shape[EM_MAX_DIMS];
} fingerprint;
#define FP_MAGIC 0x46504d45u

typedef struct copy_pair {
  em_tensor *dst, *src;
} copy_pair;

typedef struct cb_entry {
  void (*cb)(em_work *w, void *ctx);
  void *ctx;
} cb_entry;

struct em_work {
  atomic_int refcount;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool finished; /* the result is known (status, is_completed) */
  bool done;     /* ... and its callbacks have run (what wait waits for) */
  em_status st;
  char *msg;
  em_pg *pg; /* holds a core reference; NULL for em_work_completed */
  em_work *next;
  em_coll c;
  bool p2p;
  fingerprint fp;
  int64_t bytes;
  int64_t timeout_ms;
  /* tensors kept alive until completion, copies to make before and after */
  em_tensor **held;
  int nheld, capheld;
  copy_pair *cin, *cout;
  int ncin, ncout, capcin, capcout;
  em_tensor **bump; /* written in place: bump their version */
  int nbump, capbump;
  int64_t *counts;
  cb_entry *cbs;
  int ncbs, capcbs;
};

struct em_pg {
  atomic_int refcount;  /* users */
  atomic_int core_refs; /* memory: users (1) + one per work */
  int rank, size;
  char name[192];
  em_store *store; /* this instance's namespace */
  const em_pg_backend_ops *ops;
  void *bctx;
  char backend_name[32]; /* the backend running (ops->name) */
  char requested[32];    /* the name asked for: sub-groups inherit it */
  char **host_ids;
  int *global_ranks;
  char *master_addr;
  atomic_llong timeout_ms;
  bool detail;
  int64_t inline_max;
  uint64_t seq, p2p_seq, subgroups, mb_count;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  em_work *qhead, *qtail;
  bool running, stopping, thread_started;
  bool thread_owns; /* released from its own progress thread: it tears down */
  pthread_t thread;
  pid_t pid; /* the creating process (a forked child has no progress thread) */
  atomic_bool broken;
  em_status broken_st;
  char broken_msg[1024];
};

/* ---- group lifetime -------------------------------------------------------------------------- */

static void core_release(em_pg *pg) {
  if (atomic_fetch_sub_explicit(&pg->core_refs, 1, memory_order_acq_rel) != 1) return;
  pthread_mutex_destroy(&pg->mu);
  pthread_cond_destroy(&pg->cv);
  free(pg);
}

static em_pg *pg_alloc(void) {
  em_pg *pg = calloc(1, sizeof *pg);
  if (!pg) return EM_FAIL(EM_ERR_NOMEM, "process group: out of memory");
  atomic_init(&pg->refcount, 1);
  atomic_init(&pg->core_refs, 1);
  pg->pid = getpid();
  pthread_mutex_init(&pg->mu, NULL);
  pthread_cond_init(&pg->cv, NULL);
  return pg;
}

/* Frees everything but the core (the progress thread must not be running). */
static void pg_teardown(em_pg *pg) {
  pthread_mutex_lock(&pg->mu);
  const em_pg_backend_ops *ops = pg->ops;
  void *bctx = pg->bctx;
  pg->ops = NULL;
  pg->bctx = NULL;
  pthread_mutex_unlock(&pg->mu);
  if (ops) ops->destroy(bctx);
  em_store_release(pg->store);
  pg->store = NULL;
  if (pg->host_ids)
    for (int i = 0; i < pg->size; i++) free(pg->host_ids[i]);
  free(pg->host_ids);
  free(pg->global_ranks);
  free(pg->master_addr);
  pg->host_ids = NULL;
  pg->global_ranks = NULL;
  pg->master_addr = NULL;
}

em_pg *em_pg_retain(em_pg *pg) {
  if (pg) atomic_fetch_add_explicit(&pg->refcount, 1, memory_order_relaxed);
  return pg;
}

void em_pg_release(em_pg *pg) {
  if (!pg) return;
  if (atomic_fetch_sub_explicit(&pg->refcount, 1, memory_order_acq_rel) != 1) return;
  if (getpid() != pg->pid) {
    /* a forked child's copy: the progress thread exists only in the parent
     * and may have held the lock when the child was forked */
    pg->thread_started = false;
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
  }
  if (pg->thread_started && pthread_equal(pthread_self(), pg->thread)) {
    /* from a work callback: the thread finishes the queue and tears down */
    pthread_mutex_lock(&pg->mu);
    pg->stopping = true;
    pg->thread_owns = true;
    pthread_mutex_unlock(&pg->mu);
    pthread_detach(pg->thread);
    return;
  }
  if (pg->thread_started) {
    pthread_mutex_lock(&pg->mu);
    pg->stopping = true;
    pthread_cond_broadcast(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
    pthread_join(pg->thread, NULL); /* runs what is queued: each work has a deadline */
  }
  pg_teardown(pg);
  core_release(pg);
}

int em_pg_rank(const em_pg *pg) { return pg ? pg->rank : -1; }
int em_pg_size(const em_pg *pg) { return pg ? pg->size : 0; }
const char *em_pg_backend_name(const em_pg *pg) { return pg ? pg->backend_name : ""; }
int64_t em_pg_timeout(const em_pg *pg) { return pg ? atomic_load(&pg->timeout_ms) : 0; }
em_store *em_pg_store(em_pg *pg) { return pg ? pg->store : NULL; }

em_status em_pg_set_timeout(em_pg *pg, int64_t timeout_ms) {
  if (!pg) return em__set_error(EM_ERR_INVALID, "set_timeout: process group is NULL");
  if (timeout_ms <= 0)
    return em__set_error(EM_ERR_INVALID, "set_timeout: timeout must be > 0 ms (got %lld)",
                         (long long)timeout_ms);
  atomic_store(&pg->timeout_ms, timeout_ms);
  return EM_OK;
}

/* Breaks the group: the first failure wins; the backend is told. */
static void group_abort(em_pg *pg, em_status st, const char *msg) {
  pthread_mutex_lock(&pg->mu);
  if (!atomic_load(&pg->broken)) {
    pg->broken_st = st;
    snprintf(pg->broken_msg, sizeof pg->broken_msg, "%s", msg);
    atomic_store(&pg->broken, true);
    if (pg->ops) pg->ops->abort(pg->bctx, st, msg);
  }
  pthread_mutex_unlock(&pg->mu);
}

/* ---- works ---------------------------------------------------------------------------------- */

static em_work *work_new(em_pg *pg) {
  em_work *w = calloc(1, sizeof *w);
  if (!w) return EM_FAIL(EM_ERR_NOMEM, "process group: out of memory");
  atomic_init(&w->refcount, 1);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->pg = pg;
  if (pg) atomic_fetch_add_explicit(&pg->core_refs, 1, memory_order_relaxed);
  return w;
}

static void release_tensors(em_work *w) {
  for (int i = 0; i < w->nheld; i++) em_tensor_release(w->held[i]);
  free(w->held);
  free(w->cin);
  free(w->cout);
  free(w->bump);
  w->held = NULL;
  w->cin = w->cout = NULL;
  w->bump = NULL;
  w->nheld = w->ncin = w->ncout = w->nbump = 0;
}

em_work *em_work_retain(em_work *w) {
  if (w) atomic_fetch_add_explicit(&w->refcount, 1, memory_order_relaxed);
  return w;
}

void em_work_release(em_work *w) {
  if (!w) return;
  if (atomic_fetch_sub_explicit(&w->refcount, 1, memory_order_acq_rel) != 1) return;
  release_tensors(w);
  free(w->counts);
  free(w->cbs);
  free(w->msg);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  if (w->pg) core_release(w->pg);
  free(w);
}

em_work *em_work_completed(em_status st) {
  em_work *w = work_new(NULL);
  if (!w) return NULL;
  w->done = w->finished = true;
  w->st = st;
  if (st != EM_OK) {
    const char *m = em_last_status() == st && em_last_error()[0] ? em_last_error() : em_status_name(st);
    w->msg = strdup(m);
  }
  return w;
}

/* The work whose callbacks this thread is running (a callback may wait on
 * its own work: that returns at once). */
static __thread em_work *completing;

/* Sets w's result, drops its tensors, runs its callbacks, then wakes its
 * waiters: a wait that returns has seen the callbacks registered before
 * completion run. */
static void work_complete(em_work *w, em_status st, const char *msg) {
  pthread_mutex_lock(&w->mu);
  w->st = st;
  if (st != EM_OK) w->msg = strdup(msg ? msg : em_status_name(st));
  w->finished = true;
  cb_entry *cbs = w->cbs;
  int ncbs = w->ncbs;
  w->cbs = NULL;
  w->ncbs = w->capcbs = 0;
  pthread_mutex_unlock(&w->mu);
  release_tensors(w);
  em_work *outer = completing;
  completing = w;
  for (int i = 0; i < ncbs; i++) cbs[i].cb(w, cbs[i].ctx);
  completing = outer;
  free(cbs);
  pthread_mutex_lock(&w->mu);
  w->done = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static em_status work_result(em_work *w) {
  if (w->st == EM_OK) return EM_OK;
  return em__set_error(w->st, "%s", w->msg ? w->msg : em_status_name(w->st));
}

bool em_work_is_completed(em_work *w) {
  if (!w) return false;
  pthread_mutex_lock(&w->mu);
  bool d = w->finished;
  pthread_mutex_unlock(&w->mu);
  return d;
}

em_status em_work_status(em_work *w) {
  if (!w) return em__set_error(EM_ERR_INVALID, "work_status: work is NULL");
  pthread_mutex_lock(&w->mu);
  bool d = w->finished;
  pthread_mutex_unlock(&w->mu);
  if (!d) return em__set_error(EM_ERR_STATE, "work_status: %s is still pending",
                               w->c.kind < EM_COLL_KIND_COUNT ? em__coll_name(w->c.kind) : "work");
  return work_result(w);
}

em_status em_work_then(em_work *w, void (*cb)(em_work *w, void *ctx), void *ctx) {
  if (!w || !cb) return em__set_error(EM_ERR_INVALID, "work_then: work or callback is NULL");
  pthread_mutex_lock(&w->mu);
  if (!w->finished) {
    if (w->ncbs == w->capcbs) {
      int nc = w->capcbs ? w->capcbs * 2 : 4;
      cb_entry *n = realloc(w->cbs, sizeof *n * (size_t)nc);
      if (!n) {
        pthread_mutex_unlock(&w->mu);
        return em__set_error(EM_ERR_NOMEM, "work_then: out of memory");
      }
      w->cbs = n;
      w->capcbs = nc;
    }
    w->cbs[w->ncbs++] = (cb_entry){cb, ctx};
    pthread_mutex_unlock(&w->mu);
    return EM_OK;
  }
  pthread_mutex_unlock(&w->mu);
  cb(w, ctx);
  return EM_OK;
}

static void deadline_ts(int64_t deadline_ms, struct timespec *ts) {
  /* the condition variable runs on CLOCK_REALTIME: convert */
  int64_t left = deadline_ms - em__now_ms();
  if (left < 0) left = 0;
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += left / 1000;
  ts->tv_nsec += (left % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* Waits until w is done or deadline (em__now_ms) passes; true if done. */
static bool wait_done(em_work *w, int64_t deadline) {
  pthread_mutex_lock(&w->mu);
  while (!w->done) {
    if (em__now_ms() >= deadline) break;
    struct timespec ts;
    int64_t step = deadline - em__now_ms();
    if (step > 1000) step = 1000; /* re-read the clock: realtime may jump */
    deadline_ts(em__now_ms() + step, &ts);
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
  bool d = w->done;
  pthread_mutex_unlock(&w->mu);
  return d;
}

static const char *work_label(const em_work *w, char *buf, size_t size) {
  if (w->p2p)
    snprintf(buf, size, "%s #%llu (peer %d, tag %d)", em__coll_name(w->c.kind),
             (unsigned long long)w->c.seq, w->c.root, w->c.tag);
  else
    snprintf(buf, size, "%s #%llu", em__coll_name(w->c.kind), (unsigned long long)w->c.seq);
  return buf;
}

static void run_work(em_pg *pg, em_work *w);

/* Takes the queue's head and marks the group running (pg->mu held). */
static em_work *take_head(em_pg *pg) {
  em_work *w = pg->qhead;
  pg->qhead = w->next;
  if (!pg->qhead) pg->qtail = NULL;
  w->next = NULL;
  pg->running = true;
  return w;
}

/* Marks the group idle (pg->mu held) and wakes the progress thread only
 * when it has something to do: a needless wake-up would let it take the
 * next work from a caller about to run it. */
static void end_run(em_pg *pg) {
  pg->running = false;
  if (pg->qhead || pg->stopping) pthread_cond_broadcast(&pg->cv);
}

/* A caller about to block on a work that has not started runs it itself,
 * as an inline collective would: no hand-over to the progress thread and
 * back, and a thread that may spin (the progress thread never does). Only
 * the queue's head while nothing runs, without callbacks, and only for a
 * caller that would wait as long as the work may take. True if it ran w. */
static bool run_if_idle(em_work *w, int64_t wait_deadline) {
  em_pg *pg = w->pg;
  if (!pg || w->c.deadline_ms > wait_deadline) return false;
  /* callbacks run on the progress thread (em_work_then): such a work
   * stays there */
  pthread_mutex_lock(&w->mu);
  bool cbs = w->ncbs > 0;
  pthread_mutex_unlock(&w->mu);
  if (cbs) return false;
  pthread_mutex_lock(&pg->mu);
  if (pg->qhead != w || pg->running) {
    pthread_mutex_unlock(&pg->mu);
    return false;
  }
  take_head(pg);
  pthread_mutex_unlock(&pg->mu);
  run_work(pg, w);
  em_work_release(w); /* the queue's reference; the caller holds its own */
  pthread_mutex_lock(&pg->mu);
  end_run(pg);
  pthread_mutex_unlock(&pg->mu);
  return true;
}

em_status em_work_wait(em_work *w, int64_t timeout_ms) {
  if (!w) return em__set_error(EM_ERR_INVALID, "work_wait: work is NULL");
  if (timeout_ms < 0 && timeout_ms != EM_PG_DEFAULT_TIMEOUT)
    return em__set_error(EM_ERR_INVALID, "work_wait: timeout must be >= 0 ms or "
                         "EM_PG_DEFAULT_TIMEOUT (got %lld)", (long long)timeout_ms);
  if (w == completing) return work_result(w); /* from its own callback */
  int64_t now = em__now_ms(), deadline;
  if (timeout_ms == EM_PG_DEFAULT_TIMEOUT) {
    /* the collective enforces its own deadline; the grace only covers a
     * backend that fails to */
    deadline = (w->c.deadline_ms > now ? w->c.deadline_ms : now) + WAIT_GRACE_MS;
  } else {
    deadline = now + timeout_ms;
  }
  run_if_idle(w, deadline);
  if (wait_done(w, deadline)) return work_result(w);
  /* timed out: the ranks may be out of step, so the group cannot go on */
  em_pg *pg = w->pg;
  char label[96], msg[512];
  int64_t waited = timeout_ms == EM_PG_DEFAULT_TIMEOUT ? w->timeout_ms : timeout_ms;
  snprintf(msg, sizeof msg, "%s timed out after %lld ms (rank %d of %d, group '%s')",
           work_label(w, label, sizeof label), (long long)waited, pg ? pg->rank : -1,
           pg ? pg->size : 0, pg ? pg->name : "?");
  if (pg) group_abort(pg, EM_ERR_TIMEOUT, msg);
  /* the backend returns promptly once aborted; the work then fails */
  wait_done(w, em__now_ms() + WAIT_GRACE_MS);
  return em__set_error(EM_ERR_TIMEOUT, "%s", msg);
}

/* ---- building a work ----------------------------------------------------------------------- */

static em_status grow(void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return EM_OK;
  int nc = *cap ? *cap * 2 : 8;
  while (nc < need) nc *= 2;
  void *n = realloc(*arr, elem * (size_t)nc);
  if (!n) return em__set_error(EM_ERR_NOMEM, "process group: out of memory");
  *arr = n;
  *cap = nc;
  return EM_OK;
}

/* Keeps t alive until completion; takes over the caller's reference when
 * own is true (else retains). */
static em_status hold(em_work *w, em_tensor *t, bool own) {
  if (grow((void **)&w->held, &w->capheld, w->nheld + 1, sizeof(em_tensor *))) {
    if (own) em_tensor_release(t);
    return EM_ERR_NOMEM;
  }
  w->held[w->nheld++] = own ? t : em_tensor_retain(t);
  return EM_OK;
}

static em_status add_copy(em_work *w, bool before, em_tensor *dst, em_tensor *src) {
  if (before) {
    EM_CHECK(grow((void **)&w->cin, &w->capcin, w->ncin + 1, sizeof(copy_pair)));
    w->cin[w->ncin++] = (copy_pair){dst, src};
  } else {
    EM_CHECK(grow((void **)&w->cout, &w->capcout, w->ncout + 1, sizeof(copy_pair)));
    w->cout[w->ncout++] = (copy_pair){dst, src};
  }
  return EM_OK;
}

/* A contiguous buffer for t: t's own memory when contiguous, else a staging
 * copy (filled before the run if read, copied back after if written). */
static em_status stage(em_work *w, em_tensor *t, bool read, bool written, void **data) {
  EM_CHECK(hold(w, t, false));
  if (em_tensor_is_contiguous(t)) {
    *data = t->numel ? em__data_ptr(t) : NULL;
    if (written) {
      EM_CHECK(grow((void **)&w->bump, &w->capbump, w->nbump + 1, sizeof(em_tensor *)));
      w->bump[w->nbump++] = t;
    }
    return EM_OK;
  }
  em_tensor *s = em_tensor_empty_on(t->ndim, t->shape, (em_dtype)t->dtype, t->device);
  if (!s) return em_last_status();
  EM_CHECK(hold(w, s, true));
  if (read) EM_CHECK(add_copy(w, true, s, t));
  if (written) EM_CHECK(add_copy(w, false, t, s));
  *data = s->numel ? em__data_ptr(s) : NULL;
  return EM_OK;
}

/* One contiguous buffer holding the tensors of list (n of them) back to
 * back, read from them before the run and/or written to them after. */
static em_status pack(em_work *w, em_tensor *const *list, int n, em_dtype dt, em_device dev,
                      bool read, bool written, void **data) {
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += list[i]->numel;
  em_tensor *buf = em_tensor_empty_on(1, &total, dt, dev);
  if (!buf) return em_last_status();
  EM_CHECK(hold(w, buf, true));
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    em_tensor *t = list[i];
    EM_CHECK(hold(w, t, false));
    em_tensor *v = em__tensor_view_of(buf, t->ndim, t->shape, NULL, off);
    if (!v) return em_last_status();
    EM_CHECK(hold(w, v, true));
    if (read) EM_CHECK(add_copy(w, true, v, t));
    if (written) EM_CHECK(add_copy(w, false, t, v));
    off += t->numel;
  }
  *data = total ? em__data_ptr(buf) : NULL;
  return EM_OK;
}

/* ---- validation -------------------------------------------------------------------------------- */

static em_status check_member(const em_pg *pg, const char *op) {
  if (!pg) return em__set_error(EM_ERR_INVALID, "%s: process group is NULL", op);
  if (pg->rank < 0)
    return em__set_error(EM_ERR_STATE, "%s: this process is not a member of group '%s'", op,
                         pg->name);
  if (atomic_load(&pg->broken)) {
    pthread_mutex_t *mu = (pthread_mutex_t *)&pg->mu;
    pthread_mutex_lock(mu);
    em_status st = pg->broken_st;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", pg->broken_msg);
    pthread_mutex_unlock(mu);
    return em__set_error(st, "%s: process group '%s' is broken by an earlier failure: %s", op,
                         pg->name, msg);
  }
  return EM_OK;
}

static em_status check_tensor(const em_pg *pg, const char *op, const char *what, em_tensor *t) {
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: %s is NULL", op, what);
  uint32_t devs = pg->ops && pg->ops->devices ? pg->ops->devices : EM_PG_DEV_CPU;
  if (t->device.type < 0 || t->device.type >= EM_DEVICE_TYPE_COUNT ||
      !(devs & (1u << t->device.type))) {
    char d[16];
    return em__set_error(EM_ERR_DEVICE, "%s: the %s backend does not support %s tensors (%s)", op,
                         pg->backend_name, em_device_str(t->device, d, sizeof d), what);
  }
  return EM_OK;
}

static em_status check_like(const char *op, const char *what, int i, em_tensor *t, em_tensor *ref,
                            const char *refname) {
  if (!t) return em__set_error(EM_ERR_INVALID, "%s: %s %d is NULL", op, what, i);
  if (t->dtype != ref->dtype)
    return em__set_error(EM_ERR_DTYPE, "%s: %s %d has dtype %s but %s has dtype %s", op, what, i,
                         em_dtype_name((em_dtype)t->dtype), refname,
                         em_dtype_name((em_dtype)ref->dtype));
  if (t->numel != ref->numel)
    return em__set_error(EM_ERR_SHAPE,
                         "%s: %s %d has shape %s (%lld elements) but %s has shape %s (%lld "
                         "elements)",
                         op, what, i, em__tshape(t), (long long)t->numel, refname, em__tshape(ref),
                         (long long)ref->numel);
  if (!em_device_eq(t->device, ref->device))
    return em__set_error(EM_ERR_DEVICE, "%s: %s %d is on another device than %s", op, what, i,
                         refname);
  return EM_OK;
}

static em_status check_root(const em_pg *pg, const char *op, const char *what, int root) {
  if (root < 0 || root >= pg->size)
    return em__set_error(EM_ERR_INVALID, "%s: %s rank %d is out of range for a group of size %d",
                         op, what, root, pg->size);
  return EM_OK;
}

static em_status check_opts(const em_pg *pg, const char *op, const em_coll_options *o,
                            int64_t *timeout) {
  *timeout = atomic_load(&pg->timeout_ms);
  if (o) {
    if (o->timeout_ms < 0)
      return em__set_error(EM_ERR_INVALID, "%s: timeout must be >= 0 ms (got %lld)", op,
                           (long long)o->timeout_ms);
    if (o->timeout_ms > 0) *timeout = o->timeout_ms;
  }
  return EM_OK;
}

static void fp_fill(em_work *w, const em_tensor *shape_of) {
  fingerprint *f = &w->fp;
  memset(f, 0, sizeof *f);
  f->magic = FP_MAGIC;
  f->kind = (uint8_t)w->c.kind;
  f->op = kind_has_op(w->c.kind) ? (uint8_t)w->c.op : 0;
  f->dtype = w->c.kind == EM_COLL_BARRIER ? 0 : (uint8_t)w->c.dtype;
  f->root = kind_has_root(w->c.kind) ? w->c.root : -1;
  f->seq = w->c.seq;
  if (shape_of && w->c.kind != EM_COLL_ALL_TO_ALL) {
    f->count = w->c.count;
    f->ndim = (uint8_t)shape_of->ndim;
    for (int i = 0; i < shape_of->ndim; i++) f->shape[i] = shape_of->shape[i];
  }
}

static const char *fp_desc(const fingerprint *f, char *buf, size_t size) {
  char sh[EM_SHAPE_STR_MAX];
  em_coll_kind k = (em_coll_kind)f->kind;
  if (k >= EM_COLL_KIND_COUNT || (k != EM_COLL_BARRIER && !em_dtype_is_valid(f->dtype))) {
    snprintf(buf, size, "an unknown collective");
    return buf;
  }
  em__shape_str(f->ndim > EM_MAX_DIMS ? EM_MAX_DIMS : f->ndim, f->shape, sh, sizeof sh);
  const char *dt = em_dtype_name((em_dtype)f->dtype), *op = em_reduce_op_name((em_reduce_op)f->op);
  const char *nm = em__coll_name(k);
  switch (k) {
    case EM_COLL_BARRIER: snprintf(buf, size, "barrier()"); break;
    case EM_COLL_ALL_TO_ALL: snprintf(buf, size, "all_to_all(%s)", dt); break;
    case EM_COLL_ALLREDUCE:
    case EM_COLL_REDUCE_SCATTER: snprintf(buf, size, "%s(%s, %s, %s)", nm, dt, sh, op); break;
    case EM_COLL_REDUCE:
      snprintf(buf, size, "%s(%s, %s, %s, root %d)", nm, dt, sh, op, f->root);
      break;
    case EM_COLL_BROADCAST:
    case EM_COLL_GATHER:
    case EM_COLL_SCATTER: snprintf(buf, size, "%s(%s, %s, root %d)", nm, dt, sh, f->root); break;
    default: snprintf(buf, size, "%s(%s, %s)", nm, dt, sh); break;
  }
  return buf;
}

/* DETAIL: every rank learns every rank's fingerprint (a fixed-size
 * allgather over the backend itself, so it cannot mismatch) and compares
 * rank 0's with the others, so all ranks report the same message. */
static em_status check_fingerprints(em_pg *pg, em_work *w) {
  fingerprint *all = calloc((size_t)pg->size, sizeof *all);
  if (!all) return em__set_error(EM_ERR_NOMEM, "process group: out of memory");
  em_coll fc = {.kind = EM_COLL_ALLGATHER, .op = EM_REDUCE_SUM, .dtype = EM_UINT8,
                .device = EM_DEVICE_CPU, .root = -1, .in = &w->fp, .out = all,
                .count = (int64_t)sizeof(fingerprint), .seq = w->c.seq,
                .deadline_ms = w->c.deadline_ms};
  em_status st = pg->ops->run(pg->bctx, &fc);
  if (st == EM_OK) {
    for (int r = 1; r < pg->size; r++) {
      if (!memcmp(&all[0], &all[r], sizeof(fingerprint))) continue;
      char a[512], b[512];
      fp_desc(&all[0], a, sizeof a);
      fp_desc(&all[r], b, sizeof b);
      if (all[0].seq == all[r].seq)
        st = em__set_error(EM_ERR_COMM,
                           "mismatched collectives in group '%s': rank 0 called %s but rank %d "
                           "called %s as collective #%llu",
                           pg->name, a, r, b, (unsigned long long)all[0].seq);
      else
        st = em__set_error(EM_ERR_COMM,
                           "mismatched collectives in group '%s': rank 0 called %s as collective "
                           "#%llu but rank %d called %s as collective #%llu",
                           pg->name, a, (unsigned long long)all[0].seq, r, b,
                           (unsigned long long)all[r].seq);
      break;
    }
  }
  free(all);
  return st;
}

/* ---- running works ---------------------------------------------------------------------------- */

static void run_work(em_pg *pg, em_work *w) {
  if (atomic_load(&pg->broken)) {
    char label[96], msg[1400];
    pthread_mutex_lock(&pg->mu);
    em_status st = pg->broken_st;
    snprintf(msg, sizeof msg, "%s did not run: process group '%s' is broken: %.1000s",
             work_label(w, label, sizeof label), pg->name, pg->broken_msg);
    pthread_mutex_unlock(&pg->mu);
    work_complete(w, st, msg);
    return;
  }
  em_status st = EM_OK;
  for (int i = 0; i < w->ncin && !st; i++) st = em__copy_into(w->cin[i].dst, w->cin[i].src);
  if (!st && pg->detail && !w->p2p) st = check_fingerprints(pg, w);
  if (!st) st = pg->ops->run(pg->bctx, &w->c);
  for (int i = 0; i < w->ncout && !st; i++) st = em__copy_into(w->cout[i].dst, w->cout[i].src);
  /* the copies back into a device collective's non-contiguous outputs are
   * queued on the current stream: done before the work completes */
  if (!st && w->ncout && w->c.device.type == EM_CUDA)
    st = em_cuda_stream_synchronize(em_cuda_current_stream(w->c.device.index));
  if (st) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", em_last_error());
    group_abort(pg, st, msg);
    work_complete(w, st, msg);
    return;
  }
  for (int i = 0; i < w->nbump; i++) em__bump_version(w->bump[i]);
  work_complete(w, EM_OK, NULL);
}

_Thread_local bool em__pg_on_progress_thread;

static void *progress_main(void *arg) {
  em_pg *pg = arg;
  em__pg_on_progress_thread = true;
  pthread_mutex_lock(&pg->mu);
  for (;;) {
    while (!pg->qhead || pg->running) {
      if (pg->stopping && !pg->qhead && !pg->running) goto out;
      pthread_cond_wait(&pg->cv, &pg->mu);
    }
    em_work *w = take_head(pg);
    pthread_mutex_unlock(&pg->mu);
    run_work(pg, w);
    em_work_release(w); /* the queue's reference */
    pthread_mutex_lock(&pg->mu);
    pg->running = false; /* this thread is the only waiter: it looks again */
  }
out:;
  bool owns = pg->thread_owns;
  pthread_mutex_unlock(&pg->mu);
  if (owns) {
    pg_teardown(pg);
    core_release(pg);
  }
  return NULL;
}

static em_work *fail_work(em_work *w) {
  em_work_release(w);
  return NULL;
}

/* Numbers the work, then runs it inline (small, idle queue) or queues it.
 * Consumes the creation reference on failure; returns the work. */
static em_work *submit(em_pg *pg, em_work *w, int64_t timeout) {
  if (w->c.device.type != EM_CPU) {
    /* A device collective reads the inputs as the caller's stream has
     * them now: their staging copies go on that stream at once, and the
     * backend orders itself after it (prepare). */
    em_status st = EM_OK;
    for (int i = 0; i < w->ncin && !st; i++) st = em__copy_into(w->cin[i].dst, w->cin[i].src);
    w->ncin = 0;
    if (st) return fail_work(w); /* the group stays usable */
  }
  if (pg->ops->prepare && pg->ops->prepare(pg->bctx, &w->c)) return fail_work(w);
  pthread_mutex_lock(&pg->mu);
  if (atomic_load(&pg->broken)) {
    pthread_mutex_unlock(&pg->mu);
    em_status st = check_member(pg, em__coll_name(w->c.kind));
    em_work_release(w);
    (void)st;
    return NULL;
  }
  if (w->p2p) {
    w->c.seq = ++pg->p2p_seq;
  } else {
    w->c.seq = ++pg->seq;
    w->fp.seq = w->c.seq;
  }
  w->timeout_ms = timeout;
  w->c.deadline_ms = em__now_ms() + timeout;
  if (!pg->qhead && !pg->running && w->bytes <= pg->inline_max) {
    pg->running = true;
    pthread_mutex_unlock(&pg->mu);
    run_work(pg, w);
    pthread_mutex_lock(&pg->mu);
    end_run(pg);
    pthread_mutex_unlock(&pg->mu);
    return w;
  }
  em_work_retain(w); /* the queue's reference */
  if (pg->qtail) pg->qtail->next = w;
  else pg->qhead = w;
  pg->qtail = w;
  pthread_cond_broadcast(&pg->cv);
  pthread_mutex_unlock(&pg->mu);
  return w;
}

/* Common prologue: membership and options; a new work for kind. */
static em_work *begin(em_pg *pg, em_coll_kind kind, const em_coll_options *o, int64_t *timeout) {
  const char *op = em__coll_name(kind);
  if (check_member(pg, op) || check_opts(pg, op, o, timeout)) return NULL;
  em_work *w = work_new(pg);
  if (!w) return NULL;
  w->c.kind = kind;
  w->c.device = EM_DEVICE_CPU;
  w->c.root = -1;
  w->p2p = kind == EM_COLL_SEND || kind == EM_COLL_RECV;
  return w;
}

#define TRY(call)                    \
  do {                               \
    if ((call) != EM_OK) return fail_work(w); \
  } while (0)

/* ---- collectives -------------------------------------------------------------------------------- */

em_work *em_pg_allreduce(em_pg *pg, em_tensor *t, em_reduce_op op, const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_ALLREDUCE, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "allreduce", "tensor", t));
  TRY(em__reduce_op_check("allreduce", op, (em_dtype)t->dtype));
  w->c.op = op;
  w->c.dtype = (em_dtype)t->dtype;
  w->c.device = t->device;
  w->c.count = t->numel;
  TRY(stage(w, t, true, true, &w->c.out));
  w->c.in = w->c.out;
  w->bytes = t->numel * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, t);
  return submit(pg, w, timeout);
}

em_work *em_pg_broadcast(em_pg *pg, em_tensor *t, int root, const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_BROADCAST, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "broadcast", "tensor", t));
  TRY(check_root(pg, "broadcast", "root", root));
  bool is_root = pg->rank == root;
  w->c.root = root;
  w->c.dtype = (em_dtype)t->dtype;
  w->c.device = t->device;
  w->c.count = t->numel;
  TRY(stage(w, t, is_root, !is_root, &w->c.out));
  w->c.in = w->c.out;
  w->bytes = t->numel * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, t);
  return submit(pg, w, timeout);
}

em_work *em_pg_reduce(em_pg *pg, em_tensor *t, int root, em_reduce_op op,
                      const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_REDUCE, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "reduce", "tensor", t));
  TRY(check_root(pg, "reduce", "root", root));
  TRY(em__reduce_op_check("reduce", op, (em_dtype)t->dtype));
  bool is_root = pg->rank == root;
  w->c.root = root;
  w->c.op = op;
  w->c.dtype = (em_dtype)t->dtype;
  w->c.device = t->device;
  w->c.count = t->numel;
  TRY(stage(w, t, true, is_root, &w->c.in));
  w->c.out = is_root ? w->c.in : NULL;
  w->bytes = t->numel * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, t);
  return submit(pg, w, timeout);
}

em_work *em_pg_allgather(em_pg *pg, em_tensor *const *outs, em_tensor *in,
                         const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_ALLGATHER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "allgather", "input", in));
  if (!outs) {
    em__set_error(EM_ERR_INVALID, "allgather: the output list is NULL");
    return fail_work(w);
  }
  for (int i = 0; i < pg->size; i++) TRY(check_like("allgather", "output tensor", i, outs[i], in, "the input"));
  w->c.dtype = (em_dtype)in->dtype;
  w->c.device = in->device;
  w->c.count = in->numel;
  TRY(stage(w, in, true, false, &w->c.in));
  TRY(pack(w, outs, pg->size, w->c.dtype, in->device, false, true, &w->c.out));
  w->bytes = in->numel * pg->size * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, in);
  return submit(pg, w, timeout);
}

em_work *em_pg_allgather_into_tensor(em_pg *pg, em_tensor *out, em_tensor *in,
                                     const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_ALLGATHER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "allgather_into_tensor", "input", in));
  TRY(check_tensor(pg, "allgather_into_tensor", "output", out));
  if (out->dtype != in->dtype) {
    em__set_error(EM_ERR_DTYPE, "allgather_into_tensor: output dtype %s differs from input dtype %s",
                  em_dtype_name((em_dtype)out->dtype), em_dtype_name((em_dtype)in->dtype));
    return fail_work(w);
  }
  if (out->numel != in->numel * pg->size) {
    em__set_error(EM_ERR_SHAPE,
                  "allgather_into_tensor: output tensor size must be equal to world_size times "
                  "input tensor size: output %s has %lld elements, input %s has %lld and world "
                  "size is %d",
                  em__tshape(out), (long long)out->numel, em__tshape(in), (long long)in->numel,
                  pg->size);
    return fail_work(w);
  }
  w->c.dtype = (em_dtype)in->dtype;
  w->c.device = in->device;
  w->c.count = in->numel;
  TRY(stage(w, in, true, false, &w->c.in));
  TRY(stage(w, out, false, true, &w->c.out));
  w->bytes = out->numel * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, in);
  return submit(pg, w, timeout);
}

em_work *em_pg_reduce_scatter(em_pg *pg, em_tensor *out, em_tensor *const *ins, em_reduce_op op,
                              const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_REDUCE_SCATTER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "reduce_scatter", "output", out));
  if (!ins) {
    em__set_error(EM_ERR_INVALID, "reduce_scatter: the input list is NULL");
    return fail_work(w);
  }
  for (int i = 0; i < pg->size; i++)
    TRY(check_like("reduce_scatter", "input tensor", i, ins[i], out, "the output"));
  TRY(em__reduce_op_check("reduce_scatter", op, (em_dtype)out->dtype));
  w->c.op = op;
  w->c.dtype = (em_dtype)out->dtype;
  w->c.device = out->device;
  w->c.count = out->numel;
  TRY(pack(w, ins, pg->size, w->c.dtype, out->device, true, false, &w->c.in));
  TRY(stage(w, out, false, true, &w->c.out));
  w->bytes = out->numel * pg->size * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, out);
  return submit(pg, w, timeout);
}

em_work *em_pg_reduce_scatter_tensor(em_pg *pg, em_tensor *out, em_tensor *in, em_reduce_op op,
                                     const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_REDUCE_SCATTER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "reduce_scatter_tensor", "input", in));
  TRY(check_tensor(pg, "reduce_scatter_tensor", "output", out));
  if (out->dtype != in->dtype) {
    em__set_error(EM_ERR_DTYPE, "reduce_scatter_tensor: output dtype %s differs from input dtype %s",
                  em_dtype_name((em_dtype)out->dtype), em_dtype_name((em_dtype)in->dtype));
    return fail_work(w);
  }
  if (in->numel != out->numel * pg->size) {
    em__set_error(EM_ERR_SHAPE,
                  "reduce_scatter_tensor: input tensor size must be equal to world_size times "
                  "output tensor size: input %s has %lld elements, output %s has %lld and world "
                  "size is %d",
                  em__tshape(in), (long long)in->numel, em__tshape(out), (long long)out->numel,
                  pg->size);
    return fail_work(w);
  }
  TRY(em__reduce_op_check("reduce_scatter_tensor", op, (em_dtype)out->dtype));
  w->c.op = op;
  w->c.dtype = (em_dtype)out->dtype;
  w->c.device = out->device;
  w->c.count = out->numel;
  TRY(stage(w, in, true, false, &w->c.in));
  TRY(stage(w, out, false, true, &w->c.out));
  w->bytes = in->numel * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, out);
  return submit(pg, w, timeout);
}

em_work *em_pg_gather(em_pg *pg, em_tensor *const *outs, em_tensor *in, int root,
                      const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_GATHER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "gather", "input", in));
  TRY(check_root(pg, "gather", "root", root));
  bool is_root = pg->rank == root;
  if (is_root && !outs) {
    em__set_error(EM_ERR_INVALID, "gather: the root (rank %d) must pass an output list", root);
    return fail_work(w);
  }
  if (!is_root && outs) {
    em__set_error(EM_ERR_INVALID,
                  "gather: the output list must be NULL on non-root ranks (rank %d, root %d)",
                  pg->rank, root);
    return fail_work(w);
  }
  w->c.root = root;
  w->c.dtype = (em_dtype)in->dtype;
  w->c.device = in->device;
  w->c.count = in->numel;
  if (is_root) {
    for (int i = 0; i < pg->size; i++) TRY(check_like("gather", "output tensor", i, outs[i], in, "the input"));
    TRY(pack(w, outs, pg->size, w->c.dtype, in->device, false, true, &w->c.out));
  }
  TRY(stage(w, in, true, false, &w->c.in));
  w->bytes = in->numel * (is_root ? pg->size : 1) * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, in);
  return submit(pg, w, timeout);
}

em_work *em_pg_scatter(em_pg *pg, em_tensor *out, em_tensor *const *ins, int root,
                       const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_SCATTER, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, "scatter", "output", out));
  TRY(check_root(pg, "scatter", "root", root));
  bool is_root = pg->rank == root;
  if (is_root && !ins) {
    em__set_error(EM_ERR_INVALID, "scatter: the root (rank %d) must pass an input list", root);
    return fail_work(w);
  }
  if (!is_root && ins) {
    em__set_error(EM_ERR_INVALID,
                  "scatter: the input list must be NULL on non-root ranks (rank %d, root %d)",
                  pg->rank, root);
    return fail_work(w);
  }
  w->c.root = root;
  w->c.dtype = (em_dtype)out->dtype;
  w->c.device = out->device;
  w->c.count = out->numel;
  if (is_root) {
    for (int i = 0; i < pg->size; i++) TRY(check_like("scatter", "input tensor", i, ins[i], out, "the output"));
    TRY(pack(w, ins, pg->size, w->c.dtype, out->device, true, false, &w->c.in));
  }
  TRY(stage(w, out, false, true, &w->c.out));
  w->bytes = out->numel * (is_root ? pg->size : 1) * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, out);
  return submit(pg, w, timeout);
}

em_work *em_pg_all_to_all(em_pg *pg, em_tensor *const *outs, em_tensor *const *ins,
                          const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_ALL_TO_ALL, o, &timeout);
  if (!w) return NULL;
  if (!outs || !ins) {
    em__set_error(EM_ERR_INVALID, "all_to_all: the %s list is NULL", outs ? "input" : "output");
    return fail_work(w);
  }
  const int W = pg->size;
  for (int i = 0; i < W; i++) {
    char what[32];
    snprintf(what, sizeof what, "input tensor %d", i);
    TRY(check_tensor(pg, "all_to_all", what, ins[i]));
    snprintf(what, sizeof what, "output tensor %d", i);
    TRY(check_tensor(pg, "all_to_all", what, outs[i]));
    em_tensor *bad = ins[i]->dtype != ins[0]->dtype ? ins[i] : outs[i]->dtype != ins[0]->dtype ? outs[i] : NULL;
    if (bad) {
      em__set_error(EM_ERR_DTYPE, "all_to_all: %s tensor %d has dtype %s but input tensor 0 has %s",
                    bad == ins[i] ? "input" : "output", i, em_dtype_name((em_dtype)bad->dtype),
                    em_dtype_name((em_dtype)ins[0]->dtype));
      return fail_work(w);
    }
  }
  w->counts = malloc(sizeof(int64_t) * 2 * (size_t)W);
  if (!w->counts) {
    em__set_error(EM_ERR_NOMEM, "all_to_all: out of memory");
    return fail_work(w);
  }
  int64_t sin = 0, sout = 0;
  for (int i = 0; i < W; i++) {
    w->counts[i] = ins[i]->numel;
    w->counts[W + i] = outs[i]->numel;
    sin += ins[i]->numel;
    sout += outs[i]->numel;
  }
  if (w->counts[pg->rank] != w->counts[W + pg->rank]) {
    em__set_error(EM_ERR_SHAPE,
                  "all_to_all: input tensor %d (what this rank sends itself) has %lld elements "
                  "but output tensor %d has %lld",
                  pg->rank, (long long)w->counts[pg->rank], pg->rank,
                  (long long)w->counts[W + pg->rank]);
    return fail_work(w);
  }
  w->c.dtype = (em_dtype)ins[0]->dtype;
  w->c.device = ins[0]->device;
  w->c.send_counts = w->counts;
  w->c.recv_counts = w->counts + W;
  TRY(pack(w, ins, W, w->c.dtype, w->c.device, true, false, &w->c.in));
  TRY(pack(w, outs, W, w->c.dtype, w->c.device, false, true, &w->c.out));
  w->bytes = (sin > sout ? sin : sout) * (int64_t)em_dtype_size(w->c.dtype);
  fp_fill(w, NULL);
  return submit(pg, w, timeout);
}

static em_work *p2p(em_pg *pg, em_coll_kind kind, em_tensor *t, int peer, int tag,
                    const em_coll_options *o) {
  const char *op = em__coll_name(kind);
  int64_t timeout;
  em_work *w = begin(pg, kind, o, &timeout);
  if (!w) return NULL;
  TRY(check_tensor(pg, op, "tensor", t));
  TRY(check_root(pg, op, kind == EM_COLL_SEND ? "destination" : "source", peer));
  if (peer == pg->rank) {
    em__set_error(EM_ERR_INVALID, "%s: rank %d cannot %s itself", op, peer,
                  kind == EM_COLL_SEND ? "send to" : "receive from");
    return fail_work(w);
  }
  if (tag < 0) {
    em__set_error(EM_ERR_INVALID, "%s: tag must be >= 0 (got %d)", op, tag);
    return fail_work(w);
  }
  w->c.root = peer;
  w->c.tag = tag;
  w->c.dtype = (em_dtype)t->dtype;
  w->c.device = t->device;
  w->c.count = t->numel;
  if (kind == EM_COLL_SEND) {
    TRY(stage(w, t, true, false, &w->c.in));
  } else {
    TRY(stage(w, t, false, true, &w->c.out));
  }
  w->bytes = t->numel * (int64_t)em_dtype_size(w->c.dtype);
  return submit(pg, w, timeout);
}

em_work *em_pg_send(em_pg *pg, em_tensor *t, int dst, int tag, const em_coll_options *o) {
  return p2p(pg, EM_COLL_SEND, t, dst, tag, o);
}

em_work *em_pg_recv(em_pg *pg, em_tensor *t, int src, int tag, const em_coll_options *o) {
  return p2p(pg, EM_COLL_RECV, t, src, tag, o);
}

em_work *em_pg_barrier(em_pg *pg, const em_coll_options *o) {
  int64_t timeout;
  em_work *w = begin(pg, EM_COLL_BARRIER, o, &timeout);
  if (!w) return NULL;
  w->c.dtype = EM_UINT8;
  fp_fill(w, NULL);
  return submit(pg, w, timeout);
}

#undef TRY

/* ---- monitored barrier ------------------------------------------------------------------------ */

em_status em_pg_monitored_barrier(em_pg *pg, int64_t timeout_ms, bool wait_all_ranks) {
  EM_CHECK(check_member(pg, "monitored_barrier"));
  if (timeout_ms == EM_PG_DEFAULT_TIMEOUT || timeout_ms == 0) timeout_ms = em_pg_timeout(pg);
  if (timeout_ms < 0)
    return em__set_error(EM_ERR_INVALID, "monitored_barrier: timeout must be > 0 ms (got %lld)",
                         (long long)timeout_ms);
  if (!pg->store)
    return em__set_error(EM_ERR_NOTIMPL, "monitored_barrier: group '%s' has no store", pg->name);
  uint64_t n = __atomic_add_fetch(&pg->mb_count, 1, __ATOMIC_RELAXED);
  char key[96], done[96];
  snprintf(key, sizeof key, "mb/%llu/arrived/%d", (unsigned long long)n, pg->rank);
  snprintf(done, sizeof done, "mb/%llu/done", (unsigned long long)n);
  EM_CHECK(em_store_set(pg->store, key, "1", 1));
  if (pg->rank != 0) {
    void *v = NULL;
    size_t len = 0;
    em_status st = em_store_get_timeout(pg->store, done, timeout_ms + WAIT_GRACE_MS, &v, &len);
    if (st == EM_ERR_TIMEOUT)
      return em__set_error(EM_ERR_TIMEOUT,
                           "monitored_barrier: rank 0 did not finish the barrier within %lld ms "
                           "(group '%s')",
                           (long long)timeout_ms, pg->name);
    if (st) return st;
    if (len == 2 && !memcmp(v, "ok", 2)) {
      em_store_free(v);
      return EM_OK;
    }
    st = em__set_error(EM_ERR_TIMEOUT, "monitored_barrier: %s", (char *)v);
    em_store_free(v);
    return st;
  }
  const int64_t deadline = em__now_ms() + timeout_ms;
  char missing[1024] = "";
  int nmissing = 0, first = -1;
  size_t off = 0;
  for (int r = 1; r < pg->size; r++) {
    snprintf(key, sizeof key, "mb/%llu/arrived/%d", (unsigned long long)n, r);
    const char *k = key;
    int64_t left = deadline - em__now_ms();
    em_status st = em_store_wait(pg->store, &k, 1, left > 0 ? left : 0);
    if (st == EM_OK) continue;
    if (st != EM_ERR_TIMEOUT) return st;
    em_clear_error();
    if (first < 0) first = r;
    nmissing++;
    if (off < sizeof missing)
      off += (size_t)snprintf(missing + off, sizeof missing - off, "%s%d", nmissing > 1 ? ", " : "", r);
    if (!wait_all_ranks) break;
  }
  char verdict[1300];
  int vl;
  if (nmissing == 0) {
    vl = snprintf(verdict, sizeof verdict, "ok");
  } else if (!wait_all_ranks || nmissing == 1) {
    vl = snprintf(verdict, sizeof verdict,
                  "rank %d failed to pass monitored_barrier within %lld ms (group '%s')", first,
                  (long long)timeout_ms, pg->name);
  } else {
    vl = snprintf(verdict, sizeof verdict,
                  "ranks %s failed to pass monitored_barrier within %lld ms (group '%s')", missing,
                  (long long)timeout_ms, pg->name);
  }
  EM_CHECK(em_store_set(pg->store, done, verdict, (size_t)vl));
  if (nmissing == 0) return EM_OK;
  return em__set_error(EM_ERR_TIMEOUT, "monitored_barrier: %s", verdict);
}

/* ---- creating groups ---------------------------------------------------------------------------- */

static void host_id(char *buf, size_t size) {
  char hn[256] = "localhost";
  gethostname(hn, sizeof hn - 1);
  hn[sizeof hn - 1] = '\0';
  struct stat st;
  unsigned long long ino = stat("/proc/self/ns/net", &st) == 0 ? (unsigned long long)st.st_ino : 0;
  snprintf(buf, size, "%s/netns:%llu", hn, ino);
}

size_t em__pg_env_bytes(const char *name, size_t def, size_t lo, size_t hi) {
  const char *v = getenv(name);
  if (!v || !*v) return def;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || end == v) return def;
  int shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20 : 0;
  n = n > (ULLONG_MAX >> shift) ? ULLONG_MAX : n << shift;
  if (n < lo) n = lo;
  if (n > hi) n = hi;
  return (size_t)n;
}

static bool env_flag(const char *name, const char *yes) {
  const char *v = getenv(name);
  return v && !strcasecmp(v, yes);
}

typedef struct group_args {
  em_store *store; /* this instance's namespace (owned reference) */
  int rank, size;
  const char *backend;
  int64_t timeout_ms;
  const char *name;
  const char *master_addr;
  int *global_ranks; /* owned, size entries */
  char **host_ids;   /* owned, size entries; NULL: exchange them */
} group_args;

static void free_strs(char **v, int n) {
  if (!v) return;
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Builds a member group from a: agrees on the uid, exchanges host ids,
 * creates the backend and starts the progress thread. Consumes a's owned
 * fields whatever happens. */
static em_pg *group_create(group_args *a) {
  em_status st = EM_OK;
  em_pg *pg = pg_alloc();
  if (!pg) {
    em_store_release(a->store);
    free(a->global_ranks);
    free_strs(a->host_ids, a->size);
    return NULL;
  }
  pg->rank = a->rank;
  pg->size = a->size;
  pg->store = a->store;
  pg->global_ranks = a->global_ranks;
  pg->host_ids = a->host_ids;
  atomic_init(&pg->timeout_ms, a->timeout_ms);
  snprintf(pg->name, sizeof pg->name, "%s", a->name);
  pg->detail = env_flag("EMBER_DISTRIBUTED_DEBUG", "DETAIL") ||
               env_flag("TORCH_DISTRIBUTED_DEBUG", "DETAIL");
  if (a->master_addr && !(pg->master_addr = strdup(a->master_addr))) {
    st = em__set_error(EM_ERR_NOMEM, "process group: out of memory");
    goto fail;
  }
  em_pg_backend_create_fn create = em__pg_backend_find(a->backend);
  if (!create) {
    st = em_last_status();
    goto fail;
  }
  uint64_t uid = 0;
  if (pg->store) {
    /* the instance id, drawn by rank 0 */
    if (pg->rank == 0) {
      if (getrandom(&uid, sizeof uid, 0) != (ssize_t)sizeof uid)
        uid = (uint64_t)em__now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
      char hex[17];
      snprintf(hex, sizeof hex, "%016llx", (unsigned long long)uid);
      EM_CHECK_GOTO(em_store_set(pg->store, "uid", hex, 16), st, fail);
    } else {
      void *v = NULL;
      size_t n = 0;
      st = em_store_get_timeout(pg->store, "uid", a->timeout_ms, &v, &n);
      if (st) {
        em__prefix_error("process group '%s': waiting for rank 0", pg->name);
        goto fail;
      }
      uid = strtoull((char *)v, NULL, 16);
      em_store_free(v);
    }
    if (!pg->host_ids) {
      pg->host_ids = calloc((size_t)pg->size, sizeof(char *));
      if (!pg->host_ids) {
        st = em__set_error(EM_ERR_NOMEM, "process group: out of memory");
        goto fail;
      }
      char me[320], key[64];
      host_id(me, sizeof me);
      snprintf(key, sizeof key, "host/%d", pg->rank);
      EM_CHECK_GOTO(em_store_set(pg->store, key, me, strlen(me)), st, fail);
      for (int r = 0; r < pg->size; r++) {
        void *v = NULL;
        size_t n = 0;
        snprintf(key, sizeof key, "host/%d", r);
        st = em_store_get_timeout(pg->store, key, a->timeout_ms, &v, &n);
        if (st) {
          em__prefix_error("process group '%s': waiting for rank %d to join", pg->name, r);
          goto fail;
        }
        pg->host_ids[r] = v; /* malloc'd and NUL-terminated by the store */
      }
    }
  }
  em_pg_backend_init bi = {.store = pg->store, .rank = pg->rank, .size = pg->size,
                           .host_ids = (const char *const *)pg->host_ids,
                           .global_ranks = pg->global_ranks, .timeout_ms = a->timeout_ms,
                           .group_name = pg->name, .master_addr = pg->master_addr, .uid = uid};
  void *bctx = NULL;
  const em_pg_backend_ops *ops = NULL;
  st = create(&bi, &bctx, &ops);
  if (st) {
    em__prefix_error("process group '%s' (rank %d of %d, backend %s)", pg->name, pg->rank,
                     pg->size, a->backend);
    goto fail;
  }
  pg->ops = ops;
  pg->bctx = bctx;
  snprintf(pg->backend_name, sizeof pg->backend_name, "%s", ops->name);
  snprintf(pg->requested, sizeof pg->requested, "%s", a->backend);
  int64_t inl = DEFAULT_INLINE_BYTES;
  const char *e = getenv("EMBER_PG_INLINE_BYTES");
  if (e && *e) inl = atoll(e) > 0 ? atoll(e) : -1;
  if (ops->inline_max_bytes < 0) inl = -1;
  else if (ops->inline_max_bytes > 0 && !(e && *e)) inl = ops->inline_max_bytes;
  pg->inline_max = inl;
  /* the progress thread takes no signals: they belong to the user's threads */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&pg->thread, NULL, progress_main, pg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    st = em__set_error(EM_ERR_NOMEM, "process group '%s': cannot start its thread: %s", pg->name,
                       strerror(rc));
    goto fail;
  }
  pg->thread_started = true;
  return pg;
fail:
  (void)st;
  pg_teardown(pg);
  core_release(pg);
  return NULL;
}

static em_status resolve_opts(const em_pg_options *o, const char *op, const char **backend,
                              int64_t *timeout, const char **name) {
  *backend = o && o->backend && *o->backend ? o->backend : "auto";
  *name = o && o->group_name && *o->group_name ? o->group_name : "default_pg";
  *timeout = o && o->timeout_ms ? o->timeout_ms : EM_PG_DEFAULT_TIMEOUT_MS;
  if (*timeout < 0)
    return em__set_error(EM_ERR_INVALID, "%s: timeout must be > 0 ms (got %lld)", op,
                         (long long)*timeout);
  if (strlen(*name) > 100)
    return em__set_error(EM_ERR_INVALID, "%s: group name is too long (%zu > 100)", op, strlen(*name));
  if (!em__pg_backend_find(*backend)) {
    em__prefix_error("%s", op);
    return em_last_status();
  }
  return EM_OK;
}

static em_pg *init_store_impl(em_store *store, int rank, int world, const em_pg_options *o,
                              const char *master_addr) {
  const char *backend, *name;
  int64_t timeout;
  if (resolve_opts(o, "init_process_group", &backend, &timeout, &name)) return NULL;
  if (world < 1)
    return EM_FAIL(EM_ERR_INVALID, "init_process_group: world size must be >= 1 (got %d)", world);
  if (rank < 0 || rank >= world)
    return EM_FAIL(EM_ERR_INVALID, "init_process_group: rank %d is out of range for world size %d",
                   rank, world);
  if (!store && strcmp(backend, "mpi") != 0)
    return EM_FAIL(EM_ERR_INVALID, "init_process_group: store is NULL (only the mpi backend "
                   "runs without one)");
  group_args a = {.rank = rank, .size = world, .backend = backend, .timeout_ms = timeout,
                  .name = name, .master_addr = master_addr};
  a.global_ranks = malloc(sizeof(int) * (size_t)world);
  if (!a.global_ranks) return EM_FAIL(EM_ERR_NOMEM, "init_process_group: out of memory");
  for (int i = 0; i < world; i++) a.global_ranks[i] = i;
  if (store) {
    /* a fresh namespace per instance: "<name>/<generation>" */
    char key[160];
    int64_t joined = 0;
    snprintf(key, sizeof key, "%s/join", name);
    em_status st = em_store_add(store, key, 1, &joined);
    if (st) {
      free(a.global_ranks);
      em__prefix_error("init_process_group '%s'", name);
      return NULL;
    }
    snprintf(key, sizeof key, "%s/%lld", name, (long long)((joined - 1) / world));
    a.store = em_store_prefix_create(store, key);
    if (!a.store) {
      free(a.global_ranks);
      return NULL;
    }
    em_store_set_timeout(a.store, timeout);
  }
  return group_create(&a);
}

em_pg *em_pg_init_store(em_store *store, int rank, int world_size, const em_pg_options *o) {
  return init_store_impl(store, rank, world_size, o, NULL);
}

static em_status env_int(const char *op, const char *name, int lo, int *out, bool *present) {
  const char *v = getenv(name);
  *present = v && *v;
  if (!*present) return EM_OK;
  char *end = NULL;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < lo || x > INT32_MAX)
    return em__set_error(EM_ERR_INVALID, "%s: environment variable %s='%s' is not a valid integer",
                         op, name, v);
  *out = (int)x;
  return EM_OK;
}

/* Connects to (or, on rank 0 without a launcher, hosts) the store at
 * host:port and builds the world group on it. */
static em_pg *init_tcp_store(const char *op, const char *host, int port, int rank, int world,
                             const em_pg_options *o) {
  const char *backend, *name;
  int64_t timeout;
  if (resolve_opts(o, op, &backend, &timeout, &name)) return NULL;
  if (world < 1)
    return EM_FAIL(EM_ERR_INVALID, "%s: world size must be >= 1 (got %d)", op, world);
  if (rank < 0 || rank >= world)
    return EM_FAIL(EM_ERR_INVALID, "%s: rank %d is out of range for world size %d", op, rank, world);
  bool hosted = env_flag("EMBER_STORE_HOSTED", "1") || env_flag("TORCHELASTIC_USE_AGENT_STORE", "true");
  em_store_options so = {.timeout_ms = timeout, .connect_timeout_ms = timeout};
  em_store *s = em_store_tcp_create(host, port, rank == 0 && !hosted, &so);
  if (!s) {
    em__prefix_error("%s: store at %s:%d", op, host, port);
    return NULL;
  }
  /* trainrun gives each attempt its own key space, so a restarted job never
   * meets an earlier attempt's (possibly half-written) keys */
  const char *attempt = getenv("TRAINRUN_STORE_PREFIX");
  if (attempt && *attempt) {
    em_store *p = em_store_prefix_create(s, attempt);
    em_store_release(s);
    if (!p) return NULL;
    s = p;
  }
  em_pg *pg = init_store_impl(s, rank, world, o, host);
  em_store_release(s); /* the group's prefix store holds it */
  return pg;
}

em_pg *em_pg_init_env(const em_pg_options *o) {
  const char *op = "init_env";
  int rank = -1, world = -1, port = -1;
  bool have_rank, have_world, have_port;
  if (env_int(op, "RANK", 0, &rank, &have_rank) || env_int(op, "WORLD_SIZE", 1, &world, &have_world))
    return NULL;
  if (!have_rank && !have_world) { /* under mpirun */
    if (env_int(op, "OMPI_COMM_WORLD_RANK", 0, &rank, &have_rank) ||
        env_int(op, "OMPI_COMM_WORLD_SIZE", 1, &world, &have_world))
      return NULL;
  }
  if (!have_rank) return EM_FAIL(EM_ERR_INVALID, "%s: environment variable RANK is not set", op);
  if (!have_world)
    return EM_FAIL(EM_ERR_INVALID, "%s: environment variable WORLD_SIZE is not set", op);
  const char *addr = getenv("MASTER_ADDR");
  if (env_int(op, "MASTER_PORT", 0, &port, &have_port)) return NULL;
  const char *backend = o && o->backend ? o->backend : "auto";
  if ((!addr || !*addr || !have_port) && !strcmp(backend, "mpi"))
    return init_store_impl(NULL, rank, world, o, NULL);
  if (!addr || !*addr)
    return EM_FAIL(EM_ERR_INVALID, "%s: environment variable MASTER_ADDR is not set", op);
  if (!have_port)
    return EM_FAIL(EM_ERR_INVALID, "%s: environment variable MASTER_PORT is not set", op);
  if (port < 1 || port > 65535)
    return EM_FAIL(EM_ERR_INVALID, "%s: MASTER_PORT=%d is out of range [1, 65535]", op, port);
  return init_tcp_store(op, addr, port, rank, world, o);
}

em_pg *em_pg_init_url(const char *url, int rank, int world_size, const em_pg_options *o) {
  const char *op = "init_url";
  if (!url) return EM_FAIL(EM_ERR_INVALID, "%s: url is NULL", op);
  if (!strcmp(url, "env://")) {
    /* explicit rank/world override the environment's */
    if (rank >= 0 && world_size >= 1) {
      const char *addr = getenv("MASTER_ADDR");
      int port = -1;
      bool have_port;
      if (env_int(op, "MASTER_PORT", 0, &port, &have_port)) return NULL;
      if (!addr || !*addr || !have_port)
        return EM_FAIL(EM_ERR_INVALID, "%s: env:// needs MASTER_ADDR and MASTER_PORT", op);
      return init_tcp_store(op, addr, port, rank, world_size, o);
    }
    return em_pg_init_env(o);
  }
  if (strncmp(url, "tcp://", 6) != 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: unsupported URL '%s' (expected tcp://host:port or env://)",
                   op, url);
  const char *h = url + 6, *colon;
  char host[256];
  if (*h == '[') { /* [v6]:port */
    const char *close = strchr(h, ']');
    if (!close || close[1] != ':' || (size_t)(close - h - 1) >= sizeof host)
      return EM_FAIL(EM_ERR_INVALID, "%s: malformed URL '%s'", op, url);
    memcpy(host, h + 1, (size_t)(close - h - 1));
    host[close - h - 1] = '\0';
    colon = close + 1;
  } else {
    colon = strrchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= sizeof host)
      return EM_FAIL(EM_ERR_INVALID, "%s: URL '%s' lacks host:port", op, url);
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
  }
  char *end = NULL;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || (*end && *end != '/') || port < 1 || port > 65535)
    return EM_FAIL(EM_ERR_INVALID, "%s: URL '%s' has an invalid port", op, url);
  return init_tcp_store(op, host, (int)port, rank, world_size, o);
}

em_pg *em_pg_new_group(em_pg *pg, int n, const int *ranks, const em_pg_options *o) {
  const char *op = "new_group";
  if (!pg) return EM_FAIL(EM_ERR_INVALID, "%s: parent group is NULL", op);
  if (check_member(pg, op)) return NULL;
  if (n < 0 || (n > 0 && !ranks))
    return EM_FAIL(EM_ERR_INVALID, "%s: bad rank list (n = %d)", op, n);
  const int W = pg->size;
  if (n > W)
    return EM_FAIL(EM_ERR_INVALID, "%s: %d ranks given for a group of size %d", op, n, W);
  int m = n ? n : W; /* no list: every rank */
  int *list = malloc(sizeof(int) * (size_t)m);
  if (!list) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  for (int i = 0; i < m; i++) list[i] = n ? ranks[i] : i;
  for (int i = 0; i < m; i++) {
    if (list[i] < 0 || list[i] >= W) {
      int bad = list[i];
      free(list);
      return EM_FAIL(EM_ERR_INVALID, "%s: rank %d is out of range for a group of size %d", op,
                     bad, W);
    }
    if (i > 0 && list[i] <= list[i - 1]) {
      int a = list[i - 1], b = list[i];
      free(list);
      return EM_FAIL(EM_ERR_INVALID, "%s: ranks must be sorted and distinct (%d then %d)", op, a, b);
    }
  }
  const char *backend = o && o->backend && *o->backend ? o->backend : NULL;
  int64_t timeout = o && o->timeout_ms ? o->timeout_ms : em_pg_timeout(pg);
  if (timeout < 0) {
    free(list);
    return EM_FAIL(EM_ERR_INVALID, "%s: timeout must be > 0 ms (got %lld)", op, (long long)timeout);
  }
  if (backend && !em__pg_backend_find(backend)) {
    free(list);
    em__prefix_error("%s", op);
    return NULL;
  }
  if (!pg->store) {
    free(list);
    return EM_FAIL(EM_ERR_NOTIMPL, "%s: group '%s' has no store to agree through", op, pg->name);
  }
  uint64_t k = __atomic_add_fetch(&pg->subgroups, 1, __ATOMIC_RELAXED);
  char prefix[64], name[192];
  snprintf(prefix, sizeof prefix, "sub%llu", (unsigned long long)k);
  if (o && o->group_name && *o->group_name) snprintf(name, sizeof name, "%.150s", o->group_name);
  else snprintf(name, sizeof name, "%.150s/sub%llu", pg->name, (unsigned long long)k);
  em_store *s = em_store_prefix_create(pg->store, prefix);
  if (!s) {
    free(list);
    return NULL;
  }
  em_store_set_timeout(s, timeout);
  /* every rank of the parent must pass the same list: the first one
   * written wins and the others compare with it */
  char mine[4096];
  size_t off = 0;
  for (int i = 0; i < m && off < sizeof mine; i++)
    off += (size_t)snprintf(mine + off, sizeof mine - off, "%s%d", i ? ", " : "", list[i]);
  if (off >= sizeof mine) off = sizeof mine - 1;
  void *cur = NULL;
  size_t clen = 0;
  em_status st = em_store_compare_set(s, "members", "", 0, mine, off, &cur, &clen);
  if (st) {
    free(list);
    em_store_release(s);
    em__prefix_error("%s", op);
    return NULL;
  }
  if (clen != off || memcmp(cur, mine, off) != 0) {
    em__set_error(EM_ERR_INVALID,
                  "%s: rank %d passed ranks [%s] but another rank of group '%s' passed [%s]", op,
                  pg->rank, mine, pg->name, (char *)cur);
    em_store_free(cur);
    free(list);
    em_store_release(s);
    return NULL;
  }
  em_store_free(cur);
  int me = -1;
  for (int i = 0; i < m; i++)
    if (list[i] == pg->rank) me = i;
  if (me < 0) { /* not a member: a placeholder whose collectives fail */
    em_store_release(s);
    free(list);
    em_pg *np = pg_alloc();
    if (!np) return NULL;
    np->rank = -1;
    np->size = m;
    atomic_init(&np->timeout_ms, timeout);
    snprintf(np->name, sizeof np->name, "%s", name);
    snprintf(np->backend_name, sizeof np->backend_name, "%s", backend ? backend : pg->requested);
    return np;
  }
  group_args a = {.store = s, .rank = me, .size = m,
                  .backend = backend ? backend : pg->requested, .timeout_ms = timeout,
                  .name = name, .master_addr = pg->master_addr};
  a.global_ranks = malloc(sizeof(int) * (size_t)m);
  a.host_ids = pg->host_ids ? calloc((size_t)m, sizeof(char *)) : NULL;
  if (!a.global_ranks || (pg->host_ids && !a.host_ids)) {
    free(a.global_ranks);
    free(a.host_ids);
    free(list);
    em_store_release(s);
    return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  }
  for (int i = 0; i < m; i++) {
    a.global_ranks[i] = pg->global_ranks ? pg->global_ranks[list[i]] : list[i];
    if (a.host_ids) {
      a.host_ids[i] = strdup(pg->host_ids[list[i]]);
      if (!a.host_ids[i]) {
        free_strs(a.host_ids, m);
        free(a.global_ranks);
        free(list);
        em_store_release(s);
        return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
      }
    }
  }
  free(list);
  return group_create(&a);
}
