/* The "nccl" process-group backend: collectives between GPUs through NCCL.
 *
 * Bootstrap: rank 0 draws an ncclUniqueId and publishes it under
 * "nccl/uid" in the group's store (already namespaced for this group
 * instance); the others read it within the group's timeout. The
 * communicator is created non-blocking (ncclConfig_t.blocking = 0), so
 * its creation and every later call can be abandoned with ncclCommAbort
 * when the deadline passes or the group is aborted.
 *
 * Device: each rank drives one GPU, fixed at creation: the calling
 * thread's current device if one was set (em_cuda_set_device, as
 * torch.cuda.set_device), else LOCAL_RANK modulo the device count when the
 * launcher set it, else device 0. Tensors must be on that device.
 *
 * Streams: the communicator has its own stream. When a collective is
 * submitted (prepare, on the caller's thread) that stream is made to wait
 * for an event recorded on the device's current (compute) stream, so the
 * collective reads the tensors as the caller's stream work leaves them;
 * prepare also refuses what NCCL cannot do (another device, bitwise ops,
 * int16 reductions) without breaking the group. run() then enqueues the
 * NCCL call and an event after it. run() (on the group's
 * progress thread: the caller's work handle is asynchronous) polls that
 * event and ncclCommGetAsyncError until the collective is done, the
 * communicator reports an error (a peer died, the network broke) or the
 * deadline passes; the last two abort the communicator (ncclCommAbort) and
 * fail the collective. Once run() returns the data is in place, so work
 * the caller queues after em_work_wait sees it.
 *
 * Collectives: allreduce, broadcast, reduce, allgather and reduce_scatter
 * map onto NCCL's; gather, scatter, all_to_all and send/recv are grouped
 * ncclSend/ncclRecv; barrier is a one-element allreduce. ReduceOps sum,
 * prod, min, max and avg (avg: ncclAvg for floats; a sum divided on the
 * stream for integers, truncating as torch); bitwise ops have no NCCL
 * equivalent (EM_ERR_NOTIMPL). bool reduces as uint8 (sum/max: or,
 * prod/min: and); int16 moves as bytes but cannot be reduced by NCCL.
 * send/recv match in posting order per peer (NCCL has no tags; tags are
 * accepted and ignored). A send completes only once the peer's matching
 * recv runs, and a group runs its works one at a time: two ranks that
 * both send to each other first wait for each other until the timeout
 * (order the exchange, or use all_to_all). Buffers the front end hands in
 * host memory (its own debug fingerprints) are staged through a device
 * buffer kept for the purpose, and copied back once the collective is
 * done.
 */
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "comm/pg_impl.h"
#include "core/cuda/cuda_impl.h"

typedef struct nccl_pg {
  int rank, W, device;
  pid_t pid;
  ncclComm_t comm; /* NULL once aborted */
  cudaStream_t stream;
  cudaEvent_t ready, done;
  int32_t *one; /* device scratch for barrier */
  void *stage;  /* device staging for host buffers (debug fingerprints) */
  size_t stage_bytes;
  pthread_mutex_t mu; /* comm vs abort() */
  bool running;
  _Atomic bool aborted;
  em_status abort_st;
  char abort_msg[512];
  char group_name[64];
} nccl_pg;

/* ---- helpers ---------------------------------------------------------------------------- */

static em_status nccl_fail(nccl_pg *p, ncclResult_t r, em_status st, const char *what) {
  const char *last = p && p->comm ? ncclGetLastError(p->comm) : NULL;
  return em__set_error(st, "nccl backend (rank %d of %d, cuda:%d): %s: %s%s%s", p ? p->rank : -1,
                       p ? p->W : 0, p ? p->device : -1, what, ncclGetErrorString(r),
                       last && *last ? ": " : "", last && *last ? last : "");
}

/* Aborts the communicator (with p->mu held). */
static void abort_comm_locked(nccl_pg *p) {
  if (p->comm) {
    ncclCommAbort(p->comm);
    p->comm = NULL;
  }
}

static void sleep_us(int64_t us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

/* Waits for a non-blocking NCCL call (or the communicator's creation) to
 * leave ncclInProgress, by the deadline. */
static em_status wait_ready(nccl_pg *p, int64_t deadline, const char *what) {
  int64_t backoff = 10;
  for (;;) {
    ncclResult_t ast = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(p->comm, &ast);
    if (r != ncclSuccess) return nccl_fail(p, r, EM_ERR_COMM, what);
    if (ast == ncclSuccess) return EM_OK;
    if (ast != ncclInProgress) return nccl_fail(p, ast, EM_ERR_COMM, what);
    if (atomic_load(&p->aborted))
      return em__set_error(p->abort_st, "nccl backend: %s: %s", what, p->abort_msg);
    if (em__now_ms() > deadline)
      return em__set_error(EM_ERR_TIMEOUT, "nccl backend (rank %d of %d): %s timed out", p->rank,
                           p->W, what);
    sleep_us(backoff);
    if (backoff < 1000) backoff *= 2;
  }
}

static bool nccl_type(em_dtype dt, ncclDataType_t *t) {
  switch (dt) {
    case EM_FLOAT32: *t = ncclFloat32; return true;
    case EM_FLOAT64: *t = ncclFloat64; return true;
    case EM_FLOAT16: *t = ncclFloat16; return true;
    case EM_BFLOAT16: *t = ncclBfloat16; return true;
    case EM_INT8: *t = ncclInt8; return true;
    case EM_INT32: *t = ncclInt32; return true;
    case EM_INT64: *t = ncclInt64; return true;
    case EM_UINT8:
    case EM_BOOL: *t = ncclUint8; return true;
    default: return false; /* int16 */
  }
}

static em_status nccl_op(const em_coll *c, ncclRedOp_t *op, bool *div_after) {
  *div_after = false;
  bool is_bool = c->dtype == EM_BOOL, fl = em_dtype_is_float(c->dtype);
  switch (c->op) {
    case EM_REDUCE_SUM: *op = is_bool ? ncclMax : ncclSum; return EM_OK;
    case EM_REDUCE_PROD: *op = is_bool ? ncclMin : ncclProd; return EM_OK;
    case EM_REDUCE_MIN: *op = ncclMin; return EM_OK;
    case EM_REDUCE_MAX: *op = ncclMax; return EM_OK;
    case EM_REDUCE_AVG:
      if (fl) {
        *op = ncclAvg;
      } else {
        *op = ncclSum;
        *div_after = true;
      }
      return EM_OK;
    default:
      return em__set_error(EM_ERR_NOTIMPL, "nccl backend: reduce op %s is not supported by NCCL",
                           em_reduce_op_name(c->op));
  }
}

/* ---- running one collective ----------------------------------------------------------------- */

static size_t nbytes(int64_t n, em_dtype dt) { return (size_t)n * em_dtype_size(dt); }

/* Enqueues c's NCCL calls on p->stream (buffers are device pointers). */
static em_status enqueue(nccl_pg *p, const em_coll *c, void *in, void *out) {
  ncclDataType_t t;
  const bool reduces = c->kind == EM_COLL_ALLREDUCE || c->kind == EM_COLL_REDUCE ||
                       c->kind == EM_COLL_REDUCE_SCATTER;
  int64_t count = c->count;
  em_dtype dt = c->dtype;
  if (!nccl_type(dt, &t)) {
    if (reduces)
      return em__set_error(EM_ERR_NOTIMPL, "nccl backend: NCCL cannot reduce %s tensors",
                           em_dtype_name(dt));
    t = ncclUint8; /* data movement: as bytes */
    count *= (int64_t)em_dtype_size(dt);
    dt = EM_UINT8;
  }
  ncclRedOp_t op = ncclSum;
  bool div_after = false;
  if (reduces) EM_CHECK(nccl_op(c, &op, &div_after));
  const size_t es = em_dtype_size(dt);
  const int64_t world = p->W;
  ncclResult_t r = ncclSuccess;
  switch (c->kind) {
    case EM_COLL_ALLREDUCE:
      r = ncclAllReduce(in, out, (size_t)count, t, op, p->comm, p->stream);
      break;
    case EM_COLL_BROADCAST:
      r = ncclBroadcast(in, out, (size_t)count, t, c->root, p->comm, p->stream);
      break;
    case EM_COLL_REDUCE:
      r = ncclReduce(in, out ? out : in, (size_t)count, t, op, c->root, p->comm, p->stream);
      break;
    case EM_COLL_ALLGATHER:
      r = ncclAllGather(in, out, (size_t)count, t, p->comm, p->stream);
      break;
    case EM_COLL_REDUCE_SCATTER:
      r = ncclReduceScatter(in, out, (size_t)count, t, op, p->comm, p->stream);
      break;
    case EM_COLL_GATHER:
    case EM_COLL_SCATTER:
    case EM_COLL_ALL_TO_ALL:
    case EM_COLL_SEND:
    case EM_COLL_RECV: {
      r = ncclGroupStart();
      if (r != ncclSuccess) break;
      if (c->kind == EM_COLL_GATHER) {
        if (p->rank == c->root)
          for (int j = 0; j < world && r == ncclSuccess; j++)
            r = ncclRecv((char *)out + nbytes(j * count, dt), (size_t)count, t, j, p->comm, p->stream);
        if (r == ncclSuccess) r = ncclSend(in, (size_t)count, t, c->root, p->comm, p->stream);
      } else if (c->kind == EM_COLL_SCATTER) {
        if (p->rank == c->root)
          for (int j = 0; j < world && r == ncclSuccess; j++)
            r = ncclSend((char *)in + nbytes(j * count, dt), (size_t)count, t, j, p->comm, p->stream);
        if (r == ncclSuccess) r = ncclRecv(out, (size_t)count, t, c->root, p->comm, p->stream);
      } else if (c->kind == EM_COLL_ALL_TO_ALL) {
        const int64_t scale = (int64_t)(em_dtype_size(c->dtype) / es); /* bytes when moved as bytes */
        int64_t so = 0, ro = 0;
        for (int j = 0; j < world && r == ncclSuccess; j++) {
          int64_t sn = c->send_counts[j] * scale, rn = c->recv_counts[j] * scale;
          if (sn > 0) r = ncclSend((char *)in + (size_t)so * es, (size_t)sn, t, j, p->comm, p->stream);
          if (r == ncclSuccess && rn > 0)
            r = ncclRecv((char *)out + (size_t)ro * es, (size_t)rn, t, j, p->comm, p->stream);
          so += sn;
          ro += rn;
        }
      } else if (c->kind == EM_COLL_SEND) {
        r = ncclSend(in, (size_t)count, t, c->root, p->comm, p->stream);
      } else {
        r = ncclRecv(out, (size_t)count, t, c->root, p->comm, p->stream);
      }
      ncclResult_t r2 = ncclGroupEnd();
      if (r == ncclSuccess) r = r2;
      break;
    }
    case EM_COLL_BARRIER:
      r = ncclAllReduce(p->one, p->one, 1, ncclInt32, ncclSum, p->comm, p->stream);
      break;
    default:
      return em__set_error(EM_ERR_INTERNAL, "nccl backend: unknown collective %d", (int)c->kind);
  }
  if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(p, r, EM_ERR_COMM, em__coll_name(c->kind));
  if (r == ncclInProgress) EM_CHECK(wait_ready(p, c->deadline_ms, em__coll_name(c->kind)));
  if (div_after && out && (c->kind != EM_COLL_REDUCE || p->rank == c->root)) /* integer avg */
    EM_CHECK(em__cuda_check_launch(emcu_div_trunc(out, c->count, c->dtype, world, p->stream), "avg"));
  return EM_OK;
}

/* Waits for p->done, watching the communicator and the deadline. */
static em_status wait_done(nccl_pg *p, const em_coll *c) {
  char desc[160];
  int64_t backoff = 5;
  for (;;) {
    cudaError_t e = cudaEventQuery(p->done);
    if (e == cudaSuccess) return EM_OK;
    if (e != cudaErrorNotReady) return em__cuda_error(e, "nccl backend: %s", em__coll_desc(c, desc, sizeof desc));
    ncclResult_t ast = ncclSuccess;
    ncclCommGetAsyncError(p->comm, &ast);
    if (ast != ncclSuccess && ast != ncclInProgress)
      return nccl_fail(p, ast, EM_ERR_COMM, em__coll_desc(c, desc, sizeof desc));
    if (atomic_load(&p->aborted))
      return em__set_error(p->abort_st, "nccl backend: %s #%llu: %s", em__coll_name(c->kind),
                           (unsigned long long)c->seq, p->abort_msg);
    if (c->deadline_ms > 0 && em__now_ms() > c->deadline_ms)
      return em__set_error(EM_ERR_TIMEOUT,
                           "nccl backend (rank %d of %d): %s #%llu timed out; the communicator was "
                           "aborted",
                           p->rank, p->W, em__coll_desc(c, desc, sizeof desc),
                           (unsigned long long)c->seq);
    sleep_us(backoff);
    if (backoff < 500) backoff *= 2;
  }
}

/* Buffer sizes of c in bytes (in, out), for staging host buffers. */
static void coll_sizes(const nccl_pg *p, const em_coll *c, size_t *in_b, size_t *out_b) {
  size_t n = nbytes(c->count, c->dtype), wn = n * (size_t)p->W;
  *in_b = *out_b = n;
  switch (c->kind) {
    case EM_COLL_ALLGATHER:
    case EM_COLL_GATHER: *out_b = wn; break;
    case EM_COLL_REDUCE_SCATTER:
    case EM_COLL_SCATTER: *in_b = wn; break;
    case EM_COLL_ALL_TO_ALL: {
      int64_t s = 0, r = 0;
      for (int j = 0; j < p->W; j++) s += c->send_counts[j], r += c->recv_counts[j];
      *in_b = nbytes(s, c->dtype);
      *out_b = nbytes(r, c->dtype);
      break;
    }
    case EM_COLL_BARRIER: *in_b = *out_b = 0; break;
    default: break;
  }
}

/* What NCCL cannot run: a tensor on another device, a reduction NCCL
 * has no op or type for. */
static em_status check_coll(const nccl_pg *p, const em_coll *c) {
  if (c->device.type == EM_CUDA && c->device.index != p->device)
    return em__set_error(EM_ERR_DEVICE,
                         "nccl backend: the group's communicator is on cuda:%d but the tensor is "
                         "on cuda:%d (call em_cuda_set_device before creating the group)",
                         p->device, c->device.index);
  if (c->kind != EM_COLL_ALLREDUCE && c->kind != EM_COLL_REDUCE &&
      c->kind != EM_COLL_REDUCE_SCATTER)
    return EM_OK;
  ncclDataType_t t;
  if (!nccl_type(c->dtype, &t))
    return em__set_error(EM_ERR_NOTIMPL, "nccl backend: NCCL cannot reduce %s tensors",
                         em_dtype_name(c->dtype));
  ncclRedOp_t op;
  bool div_after;
  return nccl_op(c, &op, &div_after);
}

/* On the caller's thread, at submission: refuses what NCCL cannot do and
 * makes the communicator's stream wait for the caller's stream work so
 * far (cudaStreamWaitEvent takes the event as recorded now, so one event
 * serves every call). */
static em_status nccl_prepare(void *ctx, em_coll *c) {
  nccl_pg *p = ctx;
  if (atomic_load(&p->aborted))
    return em__set_error(p->abort_st, "nccl backend: %s", p->abort_msg);
  EM_CHECK(check_coll(p, c));
  if (c->device.type != EM_CUDA || c->kind == EM_COLL_BARRIER) return EM_OK;
  int prev = em__cuda_thread_device(); /* restored only if this thread had set one */
  EM_CHECK(em__cuda_set_device(p->device));
  pthread_mutex_lock(&p->mu);
  cudaError_t e = cudaEventRecord(p->ready, em__cuda_stream(p->device));
  if (e == cudaSuccess) e = cudaStreamWaitEvent(p->stream, p->ready, 0);
  pthread_mutex_unlock(&p->mu);
  if (prev >= 0 && prev != p->device) em__cuda_set_device(prev);
  if (e != cudaSuccess) return em__cuda_error(e, "nccl backend: ordering after the compute stream");
  return EM_OK;
}

/* Device buffer of at least n bytes for staging host buffers. */
static em_status stage_buffer(nccl_pg *p, size_t n, void **out) {
  if (n > p->stage_bytes) {
    if (p->stage) {
      cudaStreamSynchronize(p->stream);
      cudaFree(p->stage);
      p->stage = NULL;
      p->stage_bytes = 0;
    }
    if (cudaMalloc(&p->stage, n) != cudaSuccess) {
      (void)cudaGetLastError();
      return em__set_error(EM_ERR_NOMEM, "nccl backend: cannot stage %zu bytes on cuda:%d", n,
                           p->device);
    }
    p->stage_bytes = n;
  }
  *out = p->stage;
  return EM_OK;
}

static em_status nccl_run(void *ctx, em_coll *c) {
  nccl_pg *p = ctx;
  if (atomic_load(&p->aborted))
    return em__set_error(p->abort_st, "nccl backend: %s", p->abort_msg);
  EM_CHECK(check_coll(p, c));
  /* restored at the end when this thread had set a device: run() may be on
   * the caller's thread (a fresh progress thread has none: no context on
   * another GPU is created for it) */
  int prev = em__cuda_thread_device();
  EM_CHECK(em__cuda_set_device(p->device));
  pthread_mutex_lock(&p->mu);
  if (!p->comm) {
    pthread_mutex_unlock(&p->mu);
    if (prev >= 0 && prev != p->device) em__cuda_set_device(prev);
    return em__set_error(p->abort_st ? p->abort_st : EM_ERR_STATE, "nccl backend: %s",
                         p->abort_msg[0] ? p->abort_msg : "the communicator was aborted");
  }
  p->running = true;
  pthread_mutex_unlock(&p->mu);

  em_status st = EM_OK;
  void *in = c->in, *out = c->out, *dout = NULL;
  size_t in_b = 0, out_b = 0;
  bool host = c->device.type == EM_CPU && c->kind != EM_COLL_BARRIER;
  if (host) {
    /* the front end's own host buffers (pageable): staged through one
     * device buffer, in then out; copied back only once the collective is
     * done, so that no copy ever waits on a collective that may hang */
    coll_sizes(p, c, &in_b, &out_b);
    size_t in_room = (in_b + 255) / 256 * 256;
    void *buf = NULL;
    EM_CHECK_GOTO(stage_buffer(p, in_room + (out && out != in ? out_b : 0), &buf), st, done);
    void *din = buf;
    dout = out ? (out == in ? din : (char *)buf + in_room) : NULL;
    if (in && in_b &&
        cudaMemcpyAsync(din, in, in_b, cudaMemcpyHostToDevice, p->stream) != cudaSuccess) {
      st = em__cuda_error(cudaGetLastError(), "nccl backend: staging");
      goto done;
    }
    in = din;
    out = dout;
  }
  EM_CHECK_GOTO(enqueue(p, c, in, out), st, done);
  if (cudaEventRecord(p->done, p->stream) != cudaSuccess) {
    st = em__cuda_error(cudaGetLastError(), "nccl backend: recording completion");
    goto done;
  }
  st = wait_done(p, c);
  if (!st && host && dout && out_b) {
    cudaError_t e = cudaMemcpyAsync(c->out, dout, out_b, cudaMemcpyDeviceToHost, p->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(p->stream);
    if (e != cudaSuccess) st = em__cuda_error(e, "nccl backend: staging");
  }
done:
  pthread_mutex_lock(&p->mu);
  p->running = false;
  if (atomic_load(&p->aborted) || (st && (st == EM_ERR_TIMEOUT || st == EM_ERR_COMM))) {
    /* a peer died, the network broke or we gave up: the communicator may be
     * stuck in a kernel; abort it so the stream drains */
    if (!atomic_load(&p->aborted)) {
      p->abort_st = st;
      snprintf(p->abort_msg, sizeof p->abort_msg, "%s", em_last_error());
      atomic_store(&p->aborted, true);
    }
    abort_comm_locked(p);
  }
  pthread_mutex_unlock(&p->mu);
  if (prev >= 0 && prev != p->device) em__cuda_set_device(prev);
  return st;
}

static void nccl_abort(void *ctx, em_status st, const char *reason) {
  nccl_pg *p = ctx;
  pthread_mutex_lock(&p->mu);
  if (!atomic_load(&p->aborted)) {
    p->abort_st = st ? st : EM_ERR_STATE;
    snprintf(p->abort_msg, sizeof p->abort_msg, "%s", reason ? reason : "aborted");
    atomic_store(&p->aborted, true);
  }
  if (!p->running) abort_comm_locked(p); /* else run() aborts it when it sees the flag */
  pthread_mutex_unlock(&p->mu);
}

static void nccl_destroy(void *ctx) {
  nccl_pg *p = ctx;
  if (!p) return;
  if (getpid() != p->pid) { /* a forked child: the GPU state is the parent's */
    free(p);
    return;
  }
  if (em__cuda_set_device(p->device) == EM_OK) {
    if (p->comm) {
      /* finalize flushes pending work (non-blocking): give it a bounded time */
      ncclResult_t ast = ncclCommFinalize(p->comm);
      int64_t deadline = em__now_ms() + 10000;
      while ((ast == ncclSuccess || ast == ncclInProgress) &&
             ncclCommGetAsyncError(p->comm, &ast) == ncclSuccess && ast == ncclInProgress &&
             em__now_ms() < deadline)
        sleep_us(100);
      if (ast == ncclSuccess)
        ncclCommDestroy(p->comm);
      else
        ncclCommAbort(p->comm);
      p->comm = NULL;
    }
    if (p->stream) {
      cudaStreamSynchronize(p->stream);
      cudaStreamDestroy(p->stream);
    }
    if (p->ready) cudaEventDestroy(p->ready);
    if (p->done) cudaEventDestroy(p->done);
    if (p->one) cudaFree(p->one);
    if (p->stage) cudaFree(p->stage);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static const em_pg_backend_ops nccl_ops = {
    .name = "nccl",
    .run = nccl_run,
    .abort = nccl_abort,
    .destroy = nccl_destroy,
    .devices = EM_PG_DEV_CUDA,
    .prepare = nccl_prepare,
    .inline_max_bytes = -1, /* run() waits on the GPU: not inline at submission */
};

/* ---- creation ------------------------------------------------------------------------------- */

static int pick_device(void) {
  int n = em_cuda_device_count();
  int chosen = em__cuda_user_device(); /* em_cuda_set_device on this thread */
  if (chosen >= 0) return chosen;
  const char *lr = getenv("LOCAL_RANK");
  if (lr && *lr && n > 0) return atoi(lr) % n;
  return 0;
}

em_status em__pg_nccl_create(const em_pg_backend_init *in, void **ctx_out,
                             const em_pg_backend_ops **ops_out) {
  if (!in || !ctx_out || !ops_out || in->size < 1 || in->rank < 0 || in->rank >= in->size)
    return em__set_error(EM_ERR_INVALID, "nccl backend: bad arguments");
  if (!in->store) return em__set_error(EM_ERR_INVALID, "nccl backend: needs a store to bootstrap");
  if (!em_cuda_is_available())
    return em__set_error(EM_ERR_DEVICE, "nccl backend: CUDA is not available (%s)",
                         em_cuda_unavailable_reason());
  nccl_pg *p = calloc(1, sizeof *p);
  if (!p) return em__set_error(EM_ERR_NOMEM, "nccl backend: out of memory");
  em_status st = EM_OK;
  p->rank = in->rank;
  p->W = in->size;
  p->pid = getpid();
  p->device = pick_device();
  pthread_mutex_init(&p->mu, NULL);
  snprintf(p->group_name, sizeof p->group_name, "%s", in->group_name ? in->group_name : "");
  const int64_t timeout = in->timeout_ms > 0 ? in->timeout_ms : EM_PG_DEFAULT_TIMEOUT_MS;
  const int64_t deadline = em__now_ms() + timeout;
  EM_CHECK_GOTO(em_cuda_set_device(p->device), st, fail);

  /* the unique id, through the store */
  ncclUniqueId id;
  if (p->rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      st = nccl_fail(p, r, EM_ERR_COMM, "ncclGetUniqueId");
      goto fail;
    }
    EM_CHECK_GOTO(em_store_set(in->store, "nccl/uid", &id, sizeof id), st, fail);
  } else {
    void *v = NULL;
    size_t n = 0;
    st = em_store_get_timeout(in->store, "nccl/uid", timeout, &v, &n);
    if (st) {
      em__prefix_error("nccl backend (rank %d of %d): waiting for rank 0's NCCL id", p->rank, p->W);
      goto fail;
    }
    if (n != sizeof id) {
      em_store_free(v);
      st = em__set_error(EM_ERR_COMM, "nccl backend: rank 0 published a malformed NCCL id (%zu bytes)", n);
      goto fail;
    }
    memcpy(&id, v, sizeof id);
    em_store_free(v);
  }

  /* stream, events, barrier scratch */
  cudaError_t e = cudaStreamCreateWithFlags(&p->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&p->ready, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaMalloc((void **)&p->one, sizeof(int32_t));
  if (e == cudaSuccess) e = cudaMemset(p->one, 0, sizeof(int32_t));
  if (e != cudaSuccess) {
    st = em__cuda_error(e, "nccl backend: setting up cuda:%d", p->device);
    goto fail;
  }

  /* the communicator, non-blocking so that it can be abandoned */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&p->comm, p->W, id, p->rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    st = nccl_fail(p, r, EM_ERR_COMM, "creating the communicator");
    goto fail; /* aborts a communicator NCCL allocated before failing */
  }
  if ((st = wait_ready(p, deadline, "creating the communicator"))) {
    em__prefix_error("nccl backend: group '%s'", p->group_name);
    goto fail;
  }
  *ctx_out = p;
  *ops_out = &nccl_ops;
  return EM_OK;
fail:
  if (p->comm) {
    ncclCommAbort(p->comm);
    p->comm = NULL;
  }
  nccl_destroy(p);
  return st;
}
