/* The mpi backend: ember's collectives on Open MPI (or any MPI-3 library),
 * selected by name ("mpi"), for jobs launched with mpirun.
 *
 * Initialisation: the first mpi group initialises MPI unless someone else
 * (the program, mpi4py) already has. ember does it on a small service
 * thread of its own, asking for MPI_THREAD_MULTIPLE; MPI_Finalize runs on
 * that thread at exit (atexit) when ember initialised MPI. Threads, by the
 * level MPI provides:
 *   MULTIPLE     run() calls MPI directly from whatever thread the front
 *                end uses (its progress thread, or the caller for small
 *                collectives); several groups may progress at once.
 *   SERIALIZED   every MPI call takes one process-wide mutex; the mutex is
 *                held per call, never across a wait, so two groups waiting
 *                on each other's peers cannot deadlock.
 *   FUNNELED /   only the thread that initialised MPI may call it: every
 *   SINGLE       run() is shipped to ember's service thread and executed
 *                there (one collective of the process at a time). If the
 *                program initialised MPI itself at this level, its main
 *                thread owns MPI and ember refuses with a clear error.
 *
 * Communicators: a group as large as MPI_COMM_WORLD is MPI_Comm_split of
 * the world with key = the group rank (so ranks follow ember's numbering);
 * a smaller group (new_group) is MPI_Comm_create_group over the members'
 * world ranks (init->global_ranks), collective over the members only. Both
 * get MPI_ERRORS_RETURN, so an MPI error is an ember error, not an abort.
 *
 * Collectives are the non-blocking MPI-3 calls (MPI_Iallreduce, ...) polled
 * with MPI_Test, so a deadline and abort() work: the wait gives up with
 * EM_ERR_TIMEOUT / EM_ERR_COMM and the group is broken from then on (an
 * MPI collective cannot be cancelled). Reductions: MPI's built-in ops where
 * their semantics are ember's (sums, products, integer min/max, bitwise;
 * bool as uint8 with BOR/BAND/BXOR), user-defined ops over em__reduce_out
 * for float min/max (NaN propagates as in PyTorch) and float16/bfloat16
 * (distinct 2-byte datatypes); avg = sum, then divide. Counts above
 * INT_MAX are split into pieces for allreduce, broadcast, reduce,
 * send/recv; the other collectives refuse them. A peer that dies is
 * usually reported by mpirun, which ends the job. */
#define _GNU_SOURCE
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/pg_impl.h"

#define CHUNK_ELEMS ((int64_t)1 << 30)

/* ---- process-wide MPI state --------------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;   /* init / the job slot */
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER; /* SERIALIZED */
static bool g_ready, g_we_init, g_serialize, g_funnel, g_thread_up;
static int g_level = -1;
static pthread_t g_thread;
static MPI_Datatype g_f16 = MPI_DATATYPE_NULL, g_bf16 = MPI_DATATYPE_NULL;
static MPI_Op g_uop[EM_REDUCE_OP_COUNT];
static int g_tag_ub = 32767;

/* A job for the service thread. */
typedef struct job {
  em_status (*fn)(void *arg);
  void *arg;
  em_status st;
  char err[1024];
  bool done, quit;
} job;
static job *g_job;

static inline void LK(void) {
  if (g_serialize) pthread_mutex_lock(&g_call_mu);
}
static inline void ULK(void) {
  if (g_serialize) pthread_mutex_unlock(&g_call_mu);
}

static em_status mpi_err(int rc, const char *what) {
  char s[MPI_MAX_ERROR_STRING + 1];
  int n = 0;
  if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) n = snprintf(s, sizeof s, "error %d", rc);
  s[n < 0 ? 0 : (n > MPI_MAX_ERROR_STRING ? MPI_MAX_ERROR_STRING : n)] = 0;
  return em__set_error(EM_ERR_COMM, "mpi backend: %s failed: %s", what, s);
}

static void *service_main(void *p) {
  (void)p;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    while (!g_job || g_job->done) pthread_cond_wait(&g_cv, &g_mu);
    job *j = g_job;
    pthread_mutex_unlock(&g_mu);
    em_clear_error();
    j->st = j->fn ? j->fn(j->arg) : EM_OK;
    if (j->st) snprintf(j->err, sizeof j->err, "%s", em_last_error());
    pthread_mutex_lock(&g_mu);
    j->done = true;
    pthread_cond_broadcast(&g_cv);
    if (j->quit) break;
  }
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

/* Runs fn(arg) on the service thread and waits for it. */
static em_status on_service(em_status (*fn)(void *), void *arg, bool quit) {
  job j = {.fn = fn, .arg = arg, .quit = quit};
  pthread_mutex_lock(&g_mu);
  while (g_job && !g_job->done) pthread_cond_wait(&g_cv, &g_mu);
  g_job = &j;
  pthread_cond_broadcast(&g_cv);
  while (!j.done) pthread_cond_wait(&g_cv, &g_mu);
  g_job = NULL;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  if (j.st) em__set_error(j.st, "%s", j.err);
  return j.st;
}

/* Runs fn where MPI may be called from: here, or on the service thread. */
static em_status exec(em_status (*fn)(void *), void *arg) {
  return g_funnel ? on_service(fn, arg, false) : fn(arg);
}

static em_dtype dtype_of(MPI_Datatype t) {
  if (t == MPI_FLOAT) return EM_FLOAT32;
  if (t == MPI_DOUBLE) return EM_FLOAT64;
  if (t == g_f16) return EM_FLOAT16;
  if (t == g_bf16) return EM_BFLOAT16;
  return EM_DTYPE_UNDEFINED;
}

/* inout[i] = in[i] op inout[i] through ember's kernels. */
#define USER_OP(OPNAME, EMOP)                                                         \
  static void uop_##OPNAME(void *in, void *inout, int *len, MPI_Datatype *t) {       \
    em_dtype dt = dtype_of(*t);                                                       \
    if (dt != EM_DTYPE_UNDEFINED) em__reduce_out(inout, in, inout, *len, dt, EMOP);   \
  }
USER_OP(sum, EM_REDUCE_SUM)
USER_OP(prod, EM_REDUCE_PROD)
USER_OP(min, EM_REDUCE_MIN)
USER_OP(max, EM_REDUCE_MAX)

static em_status setup_types(void) {
  int rc;
  if ((rc = MPI_Type_contiguous(1, MPI_UINT16_T, &g_f16)) || (rc = MPI_Type_commit(&g_f16)) ||
      (rc = MPI_Type_contiguous(1, MPI_UINT16_T, &g_bf16)) || (rc = MPI_Type_commit(&g_bf16)))
    return mpi_err(rc, "MPI_Type_contiguous");
  for (int i = 0; i < EM_REDUCE_OP_COUNT; i++) g_uop[i] = MPI_OP_NULL;
  if ((rc = MPI_Op_create(uop_sum, 1, &g_uop[EM_REDUCE_SUM])) ||
      (rc = MPI_Op_create(uop_prod, 1, &g_uop[EM_REDUCE_PROD])) ||
      (rc = MPI_Op_create(uop_min, 1, &g_uop[EM_REDUCE_MIN])) ||
      (rc = MPI_Op_create(uop_max, 1, &g_uop[EM_REDUCE_MAX])))
    return mpi_err(rc, "MPI_Op_create");
  void *ub = NULL;
  int flag = 0;
  if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag) == MPI_SUCCESS && flag && ub)
    g_tag_ub = *(int *)ub;
  return EM_OK;
}

static const char *level_name(int l) {
  switch (l) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "?";
  }
}

static em_status init_job(void *arg) {
  (void)arg;
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return em__set_error(EM_ERR_COMM, "mpi backend: MPI_Init_thread failed (%d)", rc);
  g_level = provided;
  return setup_types();
}

static em_status finalize_job(void *arg) {
  (void)arg;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
  return EM_OK;
}

static void finalize_at_exit(void) {
  if (!g_we_init || !g_thread_up) return;
  on_service(finalize_job, NULL, true);
  pthread_join(g_thread, NULL);
  g_thread_up = false;
}

/* Initialises MPI once per process (see the top of the file). */
static em_status mpi_ensure_init(void) {
  pthread_mutex_lock(&g_mu);
  bool ready = g_ready;
  pthread_mutex_unlock(&g_mu);
  if (ready) return EM_OK;
  static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&once);
  em_status st = EM_OK;
  if (g_ready) goto out;
  int inited = 0, fin = 0;
  MPI_Finalized(&fin);
  if (fin) {
    st = em__set_error(EM_ERR_STATE, "mpi backend: MPI has already been finalized");
    goto out;
  }
  MPI_Initialized(&inited);
  if (inited) {
    MPI_Query_thread(&g_level);
    if (g_level < MPI_THREAD_SERIALIZED) {
      st = em__set_error(EM_ERR_STATE,
                         "mpi backend: MPI was initialised with %s; ember calls MPI from its "
                         "progress thread and needs MPI_THREAD_SERIALIZED or "
                         "MPI_THREAD_MULTIPLE (initialise MPI with MPI_Init_thread(..., "
                         "MPI_THREAD_MULTIPLE, ...), or let ember do it)",
                         level_name(g_level));
      goto out;
    }
    st = setup_types();
    if (st) goto out;
  } else {
    if (pthread_create(&g_thread, NULL, service_main, NULL) != 0) {
      st = em__set_error(EM_ERR_INTERNAL, "mpi backend: cannot start the MPI service thread");
      goto out;
    }
    g_thread_up = true;
    st = on_service(init_job, NULL, false);
    if (st) goto out;
    g_we_init = true;
    atexit(finalize_at_exit);
    g_funnel = g_level < MPI_THREAD_SERIALIZED;
  }
  g_serialize = g_level == MPI_THREAD_SERIALIZED;
  pthread_mutex_lock(&g_mu);
  g_ready = true;
  pthread_mutex_unlock(&g_mu);
out:
  pthread_mutex_unlock(&once);
  return st;
}

/* ---- the backend instance -------------------------------------------------------- */

/* A send that returned before the receiver took it (the data was copied):
 * MPI's buffered mode, kept per group, so two ranks that both send first
 * do not deadlock (the tcp and shm backends buffer the same way). */
typedef struct psend {
  struct psend *next;
  MPI_Request req;
  void *buf;
  size_t bytes;
  int peer, tag;
} psend;

#define BUFFERED_MAX ((size_t)256 << 20) /* bytes of sends in flight per group */

typedef struct mpi_pg {
  MPI_Comm comm;
  int rank, size;
  psend *pending;
  size_t pending_bytes;
  _Atomic int aborted;
  bool broken; /* a request was left pending: do not free the communicator */
  char abort_reason[512];
} mpi_pg;

static bool native(em_dtype dt, MPI_Datatype *t) {
  switch (dt) {
    case EM_FLOAT32: *t = MPI_FLOAT; return true;
    case EM_FLOAT64: *t = MPI_DOUBLE; return true;
    case EM_FLOAT16: *t = g_f16; return true;
    case EM_BFLOAT16: *t = g_bf16; return true;
    case EM_INT8: *t = MPI_INT8_T; return true;
    case EM_INT16: *t = MPI_INT16_T; return true;
    case EM_INT32: *t = MPI_INT32_T; return true;
    case EM_INT64: *t = MPI_INT64_T; return true;
    case EM_UINT8: *t = MPI_UINT8_T; return true;
    case EM_BOOL: *t = MPI_UINT8_T; return true;
    default: return false;
  }
}

/* The MPI op computing ember's op on dt (avg: sum; the caller divides). */
static MPI_Op mpi_op(em_reduce_op op, em_dtype dt) {
  bool fl = em_dtype_is_float(dt);
  bool half = dt == EM_FLOAT16 || dt == EM_BFLOAT16;
  if (dt == EM_BOOL) {
    switch (op) {
      case EM_REDUCE_SUM: case EM_REDUCE_MAX: case EM_REDUCE_BOR: return MPI_BOR;
      case EM_REDUCE_PROD: case EM_REDUCE_MIN: case EM_REDUCE_BAND: return MPI_BAND;
      case EM_REDUCE_BXOR: return MPI_BXOR;
      default: return MPI_OP_NULL;
    }
  }
  switch (op) {
    case EM_REDUCE_SUM: case EM_REDUCE_AVG: return half ? g_uop[EM_REDUCE_SUM] : MPI_SUM;
    case EM_REDUCE_PROD: return half ? g_uop[EM_REDUCE_PROD] : MPI_PROD;
    case EM_REDUCE_MIN: return fl ? g_uop[EM_REDUCE_MIN] : MPI_MIN;
    case EM_REDUCE_MAX: return fl ? g_uop[EM_REDUCE_MAX] : MPI_MAX;
    case EM_REDUCE_BAND: return MPI_BAND;
    case EM_REDUCE_BOR: return MPI_BOR;
    case EM_REDUCE_BXOR: return MPI_BXOR;
    default: return MPI_OP_NULL;
  }
}

typedef struct run_args {
  mpi_pg *x;
  em_coll *c;
} run_args;

/* Tests the buffered sends; frees the completed ones. A failed one fails
 * the group (its error is reported by the collective running now). */
static em_status progress_sends(mpi_pg *x) {
  for (psend **pp = &x->pending; *pp;) {
    psend *p = *pp;
    int flag = 0;
    LK();
    int rc = MPI_Test(&p->req, &flag, MPI_STATUS_IGNORE);
    ULK();
    if (rc != MPI_SUCCESS) {
      x->broken = true;
      char what[96];
      snprintf(what, sizeof what, "an earlier send to rank %d (tag %d)", p->peer, p->tag);
      return mpi_err(rc, what);
    }
    if (!flag) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    x->pending_bytes -= p->bytes;
    free(p->buf);
    free(p);
  }
  return EM_OK;
}

/* Polls req until it completes, the deadline passes or the group is
 * aborted (then the request stays pending and the group is broken). */
static em_status wait_req(mpi_pg *x, em_coll *c, MPI_Request *req, MPI_Status *status) {
  MPI_Status ignore;
  if (!status) status = &ignore;
  for (unsigned it = 0;; it++) {
    if (x->pending && (it & 15) == 0) EM_CHECK(progress_sends(x));
    int flag = 0;
    LK();
    int rc = MPI_Test(req, &flag, status);
    ULK();
    if (rc != MPI_SUCCESS) {
      x->broken = true;
      return mpi_err(rc, em__coll_name(c->kind));
    }
    if (flag) return EM_OK;
    if ((it & 63) == 63) {
      if (atomic_load(&x->aborted)) {
        x->broken = true;
        return em__set_error(EM_ERR_COMM, "mpi backend: %s aborted: %s", em__coll_name(c->kind),
                             x->abort_reason);
      }
      if (c->deadline_ms > 0 && em__now_ms() >= c->deadline_ms) {
        char d[160];
        x->broken = true;
        return em__set_error(EM_ERR_TIMEOUT, "mpi backend: %s timed out",
                             em__coll_desc(c, d, sizeof d));
      }
      if (it > 4096) sched_yield();
    }
  }
}

static em_status fits_int(em_coll *c, int64_t n) {
  if (n > INT_MAX)
    return em__set_error(EM_ERR_NOTIMPL,
                         "mpi backend: %s of %lld elements per rank: MPI counts stop at %d",
                         em__coll_name(c->kind), (long long)n, INT_MAX);
  return EM_OK;
}

#define START(call, what)                 \
  do {                                    \
    LK();                                 \
    int rc_ = (call);                     \
    ULK();                                \
    if (rc_ != MPI_SUCCESS) return mpi_err(rc_, what); \
  } while (0)

static em_status run_job(void *arg) {
  run_args *a = arg;
  mpi_pg *x = a->x;
  em_coll *c = a->c;
  MPI_Datatype t;
  MPI_Request req = MPI_REQUEST_NULL;
  if (!native(c->dtype, &t) && c->kind != EM_COLL_BARRIER)
    return em__set_error(EM_ERR_DTYPE, "mpi backend: dtype %s is not supported",
                         em_dtype_name(c->dtype));
  const size_t es = c->kind == EM_COLL_BARRIER ? 1 : em_dtype_size(c->dtype);
  const int W = x->size, me = x->rank;
  switch (c->kind) {
    case EM_COLL_ALLREDUCE:
    case EM_COLL_REDUCE: {
      MPI_Op op = mpi_op(c->op, c->dtype);
      bool all = c->kind == EM_COLL_ALLREDUCE, gets = all || me == c->root;
      for (int64_t off = 0; off < c->count || off == 0; off += CHUNK_ELEMS) {
        int n = (int)(c->count - off < CHUNK_ELEMS ? c->count - off : CHUNK_ELEMS);
        char *in = (char *)c->in + (size_t)off * es;
        char *out = gets ? (char *)c->out + (size_t)off * es : NULL;
        const void *sb = gets && in == out ? MPI_IN_PLACE : in;
        if (all)
          START(MPI_Iallreduce(sb, out, n, t, op, x->comm, &req), "MPI_Iallreduce");
        else
          START(MPI_Ireduce(sb, out, n, t, op, c->root, x->comm, &req), "MPI_Ireduce");
        EM_CHECK(wait_req(x, c, &req, NULL));
        if (c->count == 0) break;
      }
      if (gets && c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, W);
      return EM_OK;
    }
    case EM_COLL_BROADCAST:
      for (int64_t off = 0; off < c->count || off == 0; off += CHUNK_ELEMS) {
        int n = (int)(c->count - off < CHUNK_ELEMS ? c->count - off : CHUNK_ELEMS);
        START(MPI_Ibcast((char *)c->out + (size_t)off * es, n, t, c->root, x->comm, &req),
              "MPI_Ibcast");
        EM_CHECK(wait_req(x, c, &req, NULL));
        if (c->count == 0) break;
      }
      return EM_OK;
    case EM_COLL_ALLGATHER:
    case EM_COLL_GATHER: {
      EM_CHECK(fits_int(c, c->count));
      EM_CHECK(fits_int(c, c->count * W));
      int n = (int)c->count;
      bool all = c->kind == EM_COLL_ALLGATHER, gets = all || me == c->root;
      const void *sb = gets && c->out && (char *)c->out + (size_t)me * (size_t)n * es == c->in
                           ? MPI_IN_PLACE
                           : c->in;
      if (all)
        START(MPI_Iallgather(sb, n, t, c->out, n, t, x->comm, &req), "MPI_Iallgather");
      else
        START(MPI_Igather(sb, n, t, c->out, n, t, c->root, x->comm, &req), "MPI_Igather");
      return wait_req(x, c, &req, NULL);
    }
    case EM_COLL_SCATTER: {
      EM_CHECK(fits_int(c, c->count * W));
      int n = (int)c->count;
      void *rb = c->out;
      if (me == c->root && c->in && (char *)c->in + (size_t)me * (size_t)n * es == c->out)
        rb = MPI_IN_PLACE;
      START(MPI_Iscatter(c->in, n, t, rb, n, t, c->root, x->comm, &req), "MPI_Iscatter");
      return wait_req(x, c, &req, NULL);
    }
    case EM_COLL_REDUCE_SCATTER: {
      EM_CHECK(fits_int(c, c->count * W));
      START(MPI_Ireduce_scatter_block(c->in, c->out, (int)c->count, t, mpi_op(c->op, c->dtype),
                                      x->comm, &req),
            "MPI_Ireduce_scatter_block");
      EM_CHECK(wait_req(x, c, &req, NULL));
      if (c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, c->count, c->dtype, W);
      return EM_OK;
    }
    case EM_COLL_ALL_TO_ALL: {
      em_status st = EM_OK;
      int *sc = malloc(sizeof(int) * 4 * (size_t)W);
      char *tmp = NULL;
      if (!sc) return em__set_error(EM_ERR_NOMEM, "mpi backend: out of memory");
      int *sd = sc + W, *rc = sc + 2 * W, *rd = sc + 3 * W;
      int64_t so = 0, ro = 0;
      for (int q = 0; q < W; q++) {
        if (so + c->send_counts[q] > INT_MAX || ro + c->recv_counts[q] > INT_MAX) {
          st = fits_int(c, (int64_t)INT_MAX + 1);
          goto a2a_done;
        }
        sc[q] = (int)c->send_counts[q];
        sd[q] = (int)so;
        rc[q] = (int)c->recv_counts[q];
        rd[q] = (int)ro;
        so += c->send_counts[q];
        ro += c->recv_counts[q];
      }
      const void *in = c->in;
      if (so && c->in == c->out) { /* in place: keep the input apart */
        tmp = malloc((size_t)so * es);
        if (!tmp) {
          st = em__set_error(EM_ERR_NOMEM, "mpi backend: out of memory");
          goto a2a_done;
        }
        memcpy(tmp, c->in, (size_t)so * es);
        in = tmp;
      }
      LK();
      int r = MPI_Ialltoallv(in, sc, sd, t, c->out, rc, rd, t, x->comm, &req);
      ULK();
      if (r != MPI_SUCCESS) {
        st = mpi_err(r, "MPI_Ialltoallv");
        goto a2a_done;
      }
      st = wait_req(x, c, &req, NULL);
    a2a_done:
      free(tmp);
      free(sc);
      return st;
    }
    case EM_COLL_SEND:
    case EM_COLL_RECV: {
      if (c->tag > g_tag_ub)
        return em__set_error(EM_ERR_INVALID, "mpi backend: %s: tag %d above MPI_TAG_UB (%d)",
                             em__coll_name(c->kind), c->tag, g_tag_ub);
      for (int64_t off = 0; off < c->count || off == 0; off += CHUNK_ELEMS) {
        int n = (int)(c->count - off < CHUNK_ELEMS ? c->count - off : CHUNK_ELEMS);
        MPI_Status status;
        size_t bytes = (size_t)n * es;
        if (c->kind == EM_COLL_SEND && x->pending_bytes + bytes <= BUFFERED_MAX) {
          /* buffered: copy, start, return; completed by later progress */
          psend *p = calloc(1, sizeof *p);
          void *b = malloc(bytes ? bytes : 1);
          if (!p || !b) {
            free(p);
            free(b);
            return em__set_error(EM_ERR_NOMEM, "mpi backend: send: out of memory");
          }
          if (bytes) memcpy(b, (char *)c->in + (size_t)off * es, bytes);
          LK();
          int r = MPI_Isend(b, n, t, c->root, c->tag, x->comm, &p->req);
          ULK();
          if (r != MPI_SUCCESS) {
            free(p);
            free(b);
            return mpi_err(r, "MPI_Isend");
          }
          p->buf = b;
          p->bytes = bytes;
          p->peer = c->root;
          p->tag = c->tag;
          p->next = x->pending;
          x->pending = p;
          x->pending_bytes += bytes;
          EM_CHECK(progress_sends(x));
        } else if (c->kind == EM_COLL_SEND) {
          START(MPI_Isend((char *)c->in + (size_t)off * es, n, t, c->root, c->tag, x->comm, &req),
                "MPI_Isend");
          EM_CHECK(wait_req(x, c, &req, &status));
        } else {
          START(MPI_Irecv((char *)c->out + (size_t)off * es, n, t, c->root, c->tag, x->comm, &req),
                "MPI_Irecv");
          EM_CHECK(wait_req(x, c, &req, &status));
          int got = 0;
          MPI_Get_count(&status, t, &got);
          if (got != n)
            return em__set_error(EM_ERR_COMM,
                                 "mpi backend: recv: rank %d sent %d elements with tag %d but the "
                                 "receive expects %d",
                                 c->root, got, c->tag, n);
        }
        if (c->count == 0) break;
      }
      return EM_OK;
    }
    case EM_COLL_BARRIER:
      START(MPI_Ibarrier(x->comm, &req), "MPI_Ibarrier");
      return wait_req(x, c, &req, NULL);
    default:
      return em__set_error(EM_ERR_INVALID, "mpi backend: unknown collective kind %d", (int)c->kind);
  }
}

static em_status mpi_run(void *ctx, em_coll *c) {
  mpi_pg *x = ctx;
  if (atomic_load(&x->aborted))
    return em__set_error(EM_ERR_COMM, "mpi backend: %s: the group was aborted: %s",
                         em__coll_name(c->kind), x->abort_reason);
  if (c->device.type != EM_CPU)
    return em__set_error(EM_ERR_DEVICE, "mpi backend: %s: tensors must be on the CPU",
                         em__coll_name(c->kind));
  if (c->kind == EM_COLL_ALLREDUCE || c->kind == EM_COLL_REDUCE ||
      c->kind == EM_COLL_REDUCE_SCATTER)
    EM_CHECK(em__reduce_op_check(em__coll_name(c->kind), c->op, c->dtype));
  if ((c->kind == EM_COLL_SEND || c->kind == EM_COLL_RECV) && c->root == x->rank)
    return em__set_error(EM_ERR_INVALID, "mpi backend: %s with itself (rank %d)",
                         em__coll_name(c->kind), c->root);
  run_args a = {x, c};
  return exec(run_job, &a);
}

static void mpi_abort(void *ctx, em_status st, const char *reason) {
  mpi_pg *x = ctx;
  (void)st;
  snprintf(x->abort_reason, sizeof x->abort_reason, "%s", reason && *reason ? reason : "aborted");
  atomic_store(&x->aborted, 1);
}

static em_status free_job(void *arg) {
  mpi_pg *x = arg;
  int fin = 0;
  MPI_Finalized(&fin);
  /* buffered sends: give the receivers a moment, then give up on them */
  int64_t end = em__now_ms() + 5000;
  while (!fin && x->pending && !x->broken && !atomic_load(&x->aborted) && em__now_ms() < end) {
    if (progress_sends(x) != EM_OK) break;
    sched_yield();
  }
  if (x->pending) x->broken = true;
  for (psend *p = x->pending, *n; p; p = n) {
    n = p->next;
    /* never taken: cancel it; the buffer is freed only once MPI is done with it */
    int flag = 0;
    LK();
    MPI_Cancel(&p->req);
    ULK();
    for (int i = 0; i < 100000 && !flag; i++) {
      LK();
      int rc = MPI_Test(&p->req, &flag, MPI_STATUS_IGNORE);
      ULK();
      if (rc != MPI_SUCCESS) break;
    }
    if (flag) free(p->buf);
    free(p);
  }
  if (!fin && x->comm != MPI_COMM_NULL && !x->broken) {
    LK();
    MPI_Comm_free(&x->comm);
    ULK();
  }
  return EM_OK;
}

static void mpi_destroy(void *ctx) {
  mpi_pg *x = ctx;
  if (!x) return;
  if (g_ready && !(g_we_init && !g_thread_up)) exec(free_job, x);
  free(x);
}

static const em_pg_backend_ops mpi_ops = {
    .name = "mpi",
    .run = mpi_run,
    .abort = mpi_abort,
    .destroy = mpi_destroy,
    .devices = EM_PG_DEV_CPU,
    .inline_max_bytes = 0,
};

typedef struct create_args {
  const em_pg_backend_init *in;
  mpi_pg *x;
} create_args;

static em_status create_job(void *arg) {
  create_args *a = arg;
  const em_pg_backend_init *in = a->in;
  mpi_pg *x = a->x;
  int wsize = 0, wrank = 0, rc;
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  if (in->size > wsize)
    return em__set_error(EM_ERR_INVALID,
                         "mpi backend: a group of %d ranks in an MPI job of %d processes (launch "
                         "with mpirun -np %d)",
                         in->size, wsize, in->size);
  if (in->size == wsize) {
    LK();
    rc = MPI_Comm_split(MPI_COMM_WORLD, 0, in->rank, &x->comm);
    ULK();
    if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Comm_split");
  } else {
    if (!in->global_ranks)
      return em__set_error(EM_ERR_INVALID, "mpi backend: a sub-group needs its members' ranks");
    if (in->global_ranks[in->rank] != wrank)
      return em__set_error(EM_ERR_INVALID,
                           "mpi backend: this process is world rank %d for ember but "
                           "MPI_COMM_WORLD rank %d; sub-groups need the two to agree (launch the "
                           "job with mpirun)",
                           in->global_ranks[in->rank], wrank);
    MPI_Group world, g;
    LK();
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    rc = MPI_Group_incl(world, in->size, in->global_ranks, &g);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_create_group(MPI_COMM_WORLD, g, 0, &x->comm);
    MPI_Group_free(&g);
    MPI_Group_free(&world);
    ULK();
    if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Comm_create_group");
  }
  LK();
  MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
  int r = -1, s = -1;
  MPI_Comm_rank(x->comm, &r);
  MPI_Comm_size(x->comm, &s);
  ULK();
  if (r != in->rank || s != in->size)
    return em__set_error(EM_ERR_INTERNAL, "mpi backend: communicator rank %d of %d, expected %d of %d",
                         r, s, in->rank, in->size);
  return EM_OK;
}

em_status em__pg_mpi_create(const em_pg_backend_init *in, void **ctx,
                            const em_pg_backend_ops **ops) {
  if (!in || !ctx || !ops || in->size < 1 || in->rank < 0 || in->rank >= in->size)
    return em__set_error(EM_ERR_INVALID, "mpi backend: bad arguments");
  EM_CHECK(mpi_ensure_init());
  mpi_pg *x = calloc(1, sizeof *x);
  if (!x) return em__set_error(EM_ERR_NOMEM, "mpi backend: out of memory");
  x->comm = MPI_COMM_NULL;
  x->rank = in->rank;
  x->size = in->size;
  create_args a = {in, x};
  em_status st = exec(create_job, &a);
  if (st) {
    free(x);
    return st;
  }
  *ctx = x;
  *ops = &mpi_ops;
  return EM_OK;
}
