/* Process-group internals: the collective request every backend runs, the
 * backend vtable and registry, and the transport-independent algorithm
 * helpers.
 *
 * Layering (as gloo / NCCL): comm/process_group.c is the front end
 * (validation, non-contiguous staging, the per-group FIFO queue and
 * progress thread, work handles, timeouts, debug fingerprints);
 * a backend (comm/pg_tcp.c, comm/pg_shm.c, comm/pg_mpi.c,
 * comm/pg_hier.c, later comm/pg_nccl.c) executes one em_coll at a time;
 * collective algorithms that only need point-to-point byte transfers
 * (ring, recursive halving-doubling, tree) live in comm/algorithms.c and
 * run over any backend that provides an em_transport.
 *
 * Threads: the front end calls a backend's run() for one collective at a
 * time per group — on the group's progress thread, or inline on the
 * caller's thread for small collectives when the group's queue is idle
 * (latency) — never two at once. abort() may come from any thread at any
 * time (also while run() is executing) and must return promptly. */
#ifndef EMBER_COMM_PG_IMPL_H
#define EMBER_COMM_PG_IMPL_H

#include "comm/process_group.h"
#include "core/core_impl.h"

typedef enum em_coll_kind {
  EM_COLL_ALLREDUCE,
  EM_COLL_BROADCAST,
  EM_COLL_REDUCE,
  EM_COLL_ALLGATHER,      /* out = world contiguous chunks of count elements */
  EM_COLL_REDUCE_SCATTER, /* in = world chunks of count elements; out = count */
  EM_COLL_GATHER,         /* out (root only) = world chunks */
  EM_COLL_SCATTER,        /* in (root only) = world chunks */
  EM_COLL_ALL_TO_ALL,     /* in/out = world chunks; sizes per peer in counts */
  EM_COLL_SEND,
  EM_COLL_RECV,
  EM_COLL_BARRIER,
  EM_COLL_KIND_COUNT
} em_coll_kind;

/* One collective as a backend sees it: contiguous CPU (or device) byte
 * buffers already laid out by the front end. For list forms the front end
 * packs the per-rank tensors into one buffer of `world` chunks and unpacks
 * afterwards.
 *
 * Buffers per kind (n = count elements of dtype; W = group size):
 *   ALLREDUCE       in[n] -> out[n] on every rank (the front end passes
 *                   in == out: in place). op AVG: the algorithm sums and
 *                   divides (em__reduce_avg_finish).
 *   BROADCAST       out[n] everywhere; root's out is the source (in == out).
 *   REDUCE          in[n] on every rank; out[n] on root only (in == out on
 *                   root; out NULL elsewhere: non-root inputs stay intact).
 *   ALLGATHER       in[n] -> out[W*n] (chunk r = rank r's in).
 *   REDUCE_SCATTER  in[W*n] -> out[n] (chunk r of the reduction).
 *   GATHER          in[n]; out[W*n] on root only (NULL elsewhere).
 *   SCATTER         in[W*n] on root only (NULL elsewhere); out[n].
 *   ALL_TO_ALL      in = concatenation of send_counts[j] elements for each
 *                   peer j; out = concatenation of recv_counts[j] from each
 *                   peer j. count unused.
 *   SEND / RECV     in[n] (send) / out[n] (recv); root = the peer; tag.
 *   BARRIER         no buffers; count 0.
 * Buffers of zero elements may be NULL. */
typedef struct em_coll {
  em_coll_kind kind;
  em_reduce_op op;
  em_dtype dtype;
  em_device device;
  int root;            /* root rank, or the peer of send/recv */
  int tag;             /* send/recv */
  void *in;            /* may equal out (in place) */
  void *out;
  int64_t count;       /* elements: whole buffer (allreduce, broadcast,
                          reduce, send/recv) or one rank's chunk
                          (allgather, reduce_scatter, gather, scatter) */
  int64_t *send_counts; /* all_to_all: elements for each peer (world) */
  int64_t *recv_counts;
  uint64_t seq;        /* this group's collective number (1, 2, ...); p2p
                          operations are numbered separately */
  int64_t deadline_ms; /* absolute em__now_ms() deadline */
} em_coll;

/* ---- backends ------------------------------------------------------------------ */

/* Device bits for em_pg_backend_ops.devices. */
#define EM_PG_DEV_CPU (1u << EM_CPU)
#define EM_PG_DEV_CUDA (1u << EM_CUDA)

/* A backend instance of one group. run executes one collective to
 * completion on the calling thread (the group's progress thread or, for
 * small ones, the caller) and returns EM_OK or the error: EM_ERR_COMM
 * naming the peer rank that died or broke the protocol ("rank 3 closed
 * the connection during allreduce #7"), EM_ERR_TIMEOUT when the deadline
 * passes. abort may be called from any thread to make a running run()
 * return promptly (timeouts, a peer failure seen elsewhere, shutdown);
 * after it the instance only fails. destroy frees everything (shared
 * memory segments unlinked); it is called once, with no run() active. */
typedef struct em_pg_backend_ops {
  const char *name;
  em_status (*run)(void *ctx, em_coll *c);
  /* st and reason say why (EM_ERR_TIMEOUT "allreduce #3 timed out after
   * 100 ms", ...): a backend that can tell its peers passes them on. */
  void (*abort)(void *ctx, em_status st, const char *reason);
  void (*destroy)(void *ctx);
  /* Devices whose buffers run() accepts (EM_PG_DEV_* bits); 0 means CPU
   * only. The front end refuses other tensors with EM_ERR_DEVICE. */
  uint32_t devices;
  /* Optional; called on the caller's thread when a collective is
   * submitted, before it is numbered or queued, after the front end has
   * filled the staging copies of a device collective's non-contiguous
   * inputs: refuses what the backend cannot do (an error fails this call
   * only, the group stays usable) and orders the backend's own stream
   * after the caller's stream work so far (GPU backends). */
  em_status (*prepare)(void *ctx, em_coll *c);
  /* Collectives of at most this many bytes (the larger of in/out) may run
   * inline on the caller's thread when the group's queue is idle: 0 = the
   * front end's default (EMBER_PG_INLINE_BYTES, 64 KiB), -1 = never. */
  int64_t inline_max_bytes;
} em_pg_backend_ops;

/* Backend constructors, found by name (em__pg_backend_find). store is the
 * group's store already namespaced for this group instance (retain it to
 * keep it; use keys under a backend-specific sub-prefix such as "tcp/");
 * ranks are the group's. host_ids[r] is an opaque string equal for ranks
 * on the same host (hostname + network namespace inode), for backends
 * that care. uid is a random 64-bit id every rank of this group instance
 * agrees on (rank 0 drew it): use it to name shared-memory segments and to
 * recognise the group's own connections. master_addr is the store's host
 * when the group was made from the environment or a URL (NULL for an
 * explicit store): the tcp backend publishes the address of the interface
 * that reaches it. global_ranks[r] is group rank r's rank in the world
 * group (the identity for a world group). store may be NULL only for a
 * store-less mpi group. */
typedef struct em_pg_backend_init {
  em_store *store;
  int rank, size;
  const char *const *host_ids;
  const int *global_ranks;
  int64_t timeout_ms;
  const char *group_name;
  const char *master_addr;
  uint64_t uid;
} em_pg_backend_init;

/* On success *ctx and *ops describe the instance; on failure the error is
 * set and nothing is left behind. */
typedef em_status (*em_pg_backend_create_fn)(const em_pg_backend_init *init, void **ctx,
                                             const em_pg_backend_ops **ops);

/* The registry: a thread-safe table of backends by name. The front end
 * registers the built-in ones before the first lookup:
 *   "tcp"           em__pg_tcp_create   (comm/pg_tcp.c)
 *   "shm"           em__pg_shm_create   (comm/pg_shm.c,  if built: EM_PG_HAVE_SHM)
 *   "auto", "gloo"  em__pg_hier_create  (comm/pg_hier.c, if built: EM_PG_HAVE_HIER;
 *                                        until then "auto"/"gloo" mean "tcp")
 *   "mpi"           em__pg_mpi_create   (comm/pg_mpi.c,  if built: EM_PG_HAVE_MPI)
 *   "nccl"          em__pg_nccl_create  (comm/pg_nccl.c, if built: EM_PG_HAVE_NCCL)
 * comm/CMakeLists.txt compiles each of those files when it exists and
 * defines its EM_PG_HAVE_* macro for comm/process_group.c, which then
 * references the constructor (so a static link keeps it). Anything else
 * (a test's fake backend, a plugin) calls em__pg_backend_register.
 *
 * register: adds or replaces name -> fn (fn NULL removes it). Names are
 * copied; at most 32 backends; EM_ERR_INVALID for a NULL/empty/too long
 * (> 31) name or a full table.
 * find: the constructor, or NULL with EM_ERR_INVALID "unknown process
 * group backend 'x' (known: auto, gloo, mpi, shm, tcp)". */
em_status em__pg_backend_register(const char *name, em_pg_backend_create_fn fn);
em_pg_backend_create_fn em__pg_backend_find(const char *name);
/* Writes the registered names, sorted and comma-separated, into buf. */
const char *em__pg_backend_names(char *buf, size_t size);

/* A byte count (or other size) from environment variable name: decimal
 * with an optional k/K or m/M suffix (KiB, MiB), clamped to [lo, hi]; def
 * when unset, empty or not a number. The backends' tuning knobs
 * (EMBER_PG_*, EMBER_SHM_*) all read through it. */
size_t em__pg_env_bytes(const char *name, size_t def, size_t lo, size_t hi);

/* True on a group's progress thread (comm/process_group.c). A backend may
 * busy-poll on the caller's thread, which is blocked anyway, but never on
 * the progress thread: there a spin would take the core from the
 * computation the asynchronous work overlaps. */
extern _Thread_local bool em__pg_on_progress_thread;

/* Test hook (fault injection): the process SIGKILLs itself once the tcp
 * backend has written n more bytes to its peers (over all groups); -1
 * disarms. Lets tests kill a rank at a chosen point of an algorithm. */
void em__pg_tcp_test_die_after(int64_t n);

em_status em__pg_tcp_create(const em_pg_backend_init *init, void **ctx,
                            const em_pg_backend_ops **ops);
em_status em__pg_shm_create(const em_pg_backend_init *init, void **ctx,
                            const em_pg_backend_ops **ops);
em_status em__pg_hier_create(const em_pg_backend_init *init, void **ctx,
                             const em_pg_backend_ops **ops);
em_status em__pg_mpi_create(const em_pg_backend_init *init, void **ctx,
                            const em_pg_backend_ops **ops);
em_status em__pg_nccl_create(const em_pg_backend_init *init, void **ctx,
                             const em_pg_backend_ops **ops);

/* ---- byte transport for generic algorithms ------------------------------------ */

/* Point-to-point byte transfers between ranks of one group, as the
 * algorithms need them: post sends and receives (each returns a request
 * id), then wait for one of them or for all. A backend that offers this
 * gets ring / halving-doubling / tree collectives from comm/algorithms.c.
 *
 * Ordering: messages between a pair of ranks are matched in the order
 * they were posted (the n-th isend from a to b meets the n-th irecv on b
 * from a), as over a TCP stream; a backend that multiplexes several
 * channels must keep that per-pair order. Request ids are valid until the
 * next wait_all; wait on a completed request returns at once. A failed
 * call leaves the transport failed for the rest of the collective (the
 * backend then aborts). Errors name the peer. */
typedef struct em_transport {
  void *ctx;
  int rank, size;
  /* Starts sending n bytes to peer (the buffer stays untouched until the
   * request completes). *req (may be NULL) receives the request id. */
  em_status (*isend)(void *ctx, int peer, const void *buf, size_t n, int *req);
  /* Starts receiving exactly n bytes from peer into buf (a different
   * length from the peer is a protocol error, not corruption). */
  em_status (*irecv)(void *ctx, int peer, void *buf, size_t n, int *req);
  /* Completes request req (progressing every other one meanwhile), or
   * fails by the deadline. */
  em_status (*wait)(void *ctx, int req, int64_t deadline_ms);
  /* Completes every posted send and receive, or fails by the deadline. */
  em_status (*wait_all)(void *ctx, int64_t deadline_ms);
} em_transport;

/* Generic algorithms over a transport. They handle every em_coll kind,
 * any world size (including non-powers of two) and zero counts (zero-byte
 * messages are still exchanged, so ranks that disagree about a size fail
 * instead of drifting apart); large allreduces use ring reduce-scatter +
 * allgather in pipelined slices, small ones recursive doubling or
 * halving-doubling with the extra ranks of a non-power-of-two world folded
 * in first. Scratch memory is malloc'd per call (EM_ERR_NOMEM). Results
 * are identical bit for bit on every rank. */
em_status em__algo_run(em_transport *t, em_coll *c);

/* Which allreduce algorithm em__algo_run picks for nbytes over world
 * ranks: "recursive_doubling", "halving_doubling" or "ring" (for tests and
 * the benchmark). EMBER_PG_ALGO=ring|hd|rd forces one. */
const char *em__algo_allreduce_name(int64_t nbytes, int world);

/* ---- shared helpers ------------------------------------------------------------- */

/* dst[i] = dst[i] op src[i] for n elements of dtype (AVG accumulates as
 * SUM; the caller divides). Vectorised per dtype; bool: sum/max = or,
 * prod/min = and. EM_ERR_DTYPE for ops the dtype does not support (see
 * em__reduce_op_check). */
em_status em__reduce_into(void *dst, const void *src, int64_t n, em_dtype dt, em_reduce_op op);
/* dst[i] = a[i] op b[i] (dst may alias a or b). */
em_status em__reduce_out(void *dst, const void *a, const void *b, int64_t n, em_dtype dt,
                         em_reduce_op op);
/* The AVG finish: divide n elements by world (integers truncate toward
 * zero; float16/bfloat16 divide in float). */
void em__reduce_avg_finish(void *buf, int64_t n, em_dtype dt, int world);
/* EM_OK if op applies to dt, else EM_ERR_DTYPE (bitwise ops on floats,
 * avg on bool) or EM_ERR_INVALID (op out of range), the message prefixed
 * with what ("allreduce: reduce op band is not supported for float32"). */
em_status em__reduce_op_check(const char *what, em_reduce_op op, em_dtype dt);

/* Monotonic milliseconds. */
int64_t em__now_ms(void);
const char *em__coll_name(em_coll_kind k); /* "allreduce", ... */
/* "allreduce(float32, 32 elements, sum)" / "broadcast(int64, 8 elements,
 * root 1)" into buf; returns buf. */
const char *em__coll_desc(const em_coll *c, char *buf, size_t size);

#endif
