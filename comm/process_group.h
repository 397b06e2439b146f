/* ember process groups — collectives across processes and machines.
 *
 * A process group is a set of ranks that run the same collectives in the
 * same order. Every collective is asynchronous: it returns a work handle at
 * once, and em_work_wait blocks until the data is there (or an error or
 * the timeout). Backends: "tcp" (Gloo-style: ring reduce-scatter+allgather
 * for large buffers, recursive halving-doubling for small ones, over
 * sockets bootstrapped through the store), "shm" (ranks on one host
 * exchange through shared memory), "mpi" (Open MPI), "nccl" (GPUs), and
 * "auto" / "gloo": shm among the ranks of a host, tcp across hosts,
 * composed hierarchically (reduce inside each host, allreduce across hosts,
 * broadcast back).
 *
 *     // torchrun / trainrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
 *     em_pg *pg = em_pg_init_env(NULL);                 // backend "auto"
 *     em_tensor *g = ...;                                // any dtype, any layout
 *     em_work *w = em_pg_allreduce(pg, g, EM_REDUCE_AVG, NULL);
 *     ... overlap other work ...
 *     if (em_work_wait(w, EM_PG_DEFAULT_TIMEOUT) != EM_OK)
 *       fprintf(stderr, "%s\n", em_last_error());      // e.g. "rank 3 died"
 *     em_work_release(w);
 *     em_pg_release(pg);
 *
 * Failure is an error, never a hang: every wait has a timeout (the group's,
 * 30 minutes by default, or the call's); a peer that dies makes every other
 * rank's pending and later collectives fail promptly with an error naming
 * it; after such an error the group is broken and every later call fails
 * at once (create a new group, e.g. after trainrun restarts the job).
 * Mismatched collectives (a different op, dtype, shape or order across
 * ranks) are caught when EMBER_DISTRIBUTED_DEBUG=DETAIL, with both sides'
 * arguments in the message; without it a size mismatch is still an error,
 * never memory corruption.
 *
 * Ownership: groups and works are refcounted (release with em_pg_release /
 * em_work_release). Tensors passed to a collective are retained until it
 * completes; results are written into the caller's tensors (in place), so
 * do not read or write them until the work has completed.
 */
#ifndef EMBER_COMM_PROCESS_GROUP_H
#define EMBER_COMM_PROCESS_GROUP_H

#include "comm/store.h"
#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_pg em_pg;
typedef struct em_work em_work;

typedef enum em_reduce_op {
  EM_REDUCE_SUM = 0,
  EM_REDUCE_AVG, /* sum / world size (floats; integer avg truncates like torch) */
  EM_REDUCE_PROD,
  EM_REDUCE_MIN,
  EM_REDUCE_MAX,
  EM_REDUCE_BAND, /* integers and bool only */
  EM_REDUCE_BOR,
  EM_REDUCE_BXOR,
  EM_REDUCE_OP_COUNT
} em_reduce_op;

EM_API const char *em_reduce_op_name(em_reduce_op op); /* "sum", "avg", ... */

/* Pass as a timeout to mean "the group's timeout". */
#define EM_PG_DEFAULT_TIMEOUT ((int64_t)-1)
#define EM_PG_DEFAULT_TIMEOUT_MS ((int64_t)30 * 60 * 1000)

/* Zero-initialised fields take the defaults; NULL options = all defaults. */
typedef struct em_pg_options {
  const char *backend; /* "auto" (default; "gloo" is an alias), "tcp", "shm", "mpi", "nccl" */
  int64_t timeout_ms;  /* default EM_PG_DEFAULT_TIMEOUT_MS */
  const char *group_name; /* namespaces the store keys; default "default_pg" */
} em_pg_options;

/* ---- creating groups --------------------------------------------------------- */

/* From the environment torchrun and trainrun set: RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT (the store; rank 0 hosts it when no launcher
 * does) and EMBER_STORE_SECRET; under mpirun without those, from
 * OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE (backend "mpi" needs no
 * store). A missing or malformed variable is an error naming it. */
EM_API em_pg *em_pg_init_env(const em_pg_options *o);
/* From an explicit store (retained) and rank / world size. */
EM_API em_pg *em_pg_init_store(em_store *store, int rank, int world_size, const em_pg_options *o);
/* From "tcp://host:port" (rank 0 hosts the store there) or "env://". */
EM_API em_pg *em_pg_init_url(const char *url, int rank, int world_size, const em_pg_options *o);

/* A sub-group of the given global ranks of pg (sorted, distinct). It is a
 * collective over pg: every rank of pg calls it with the same list. Ranks
 * outside the list get a non-member group (em_pg_rank -1) whose
 * collectives fail with a clear error. */
EM_API em_pg *em_pg_new_group(em_pg *pg, int n, const int *ranks, const em_pg_options *o);

EM_API em_pg *em_pg_retain(em_pg *pg);
/* Drops a reference; the last one waits for queued work (up to the
 * timeout), closes connections and removes shared memory. */
EM_API void em_pg_release(em_pg *pg);

EM_API int em_pg_rank(const em_pg *pg); /* -1 for a non-member */
EM_API int em_pg_size(const em_pg *pg);
EM_API const char *em_pg_backend_name(const em_pg *pg);
EM_API int64_t em_pg_timeout(const em_pg *pg);
EM_API em_status em_pg_set_timeout(em_pg *pg, int64_t timeout_ms);
/* The group's store (borrowed; NULL for a store-less mpi group). */
EM_API em_store *em_pg_store(em_pg *pg);

/* ---- collectives ------------------------------------------------------------------
 * Each returns a new work reference, or NULL when the call itself is wrong
 * (then nothing was sent). Tensors may be of any dtype and contiguous or
 * not (non-contiguous ones go through a contiguous copy). All ranks must
 * pass matching shapes and dtypes. timeout_ms in em_coll_options (NULL =
 * the group's) bounds the collective itself. */
typedef struct em_coll_options {
  int64_t timeout_ms; /* 0 = the group's */
} em_coll_options;

EM_API em_work *em_pg_allreduce(em_pg *pg, em_tensor *t, em_reduce_op op, const em_coll_options *o);
EM_API em_work *em_pg_broadcast(em_pg *pg, em_tensor *t, int root, const em_coll_options *o);
/* Only root's t receives the result. */
EM_API em_work *em_pg_reduce(em_pg *pg, em_tensor *t, int root, em_reduce_op op,
                             const em_coll_options *o);
/* outs: world-size tensors shaped like in. */
EM_API em_work *em_pg_allgather(em_pg *pg, em_tensor *const *outs, em_tensor *in,
                                const em_coll_options *o);
/* out: [world * in.shape[0], ...] (in's dim 0 times world size). */
EM_API em_work *em_pg_allgather_into_tensor(em_pg *pg, em_tensor *out, em_tensor *in,
                                            const em_coll_options *o);
/* out receives the reduction of every rank's ins[rank]. */
EM_API em_work *em_pg_reduce_scatter(em_pg *pg, em_tensor *out, em_tensor *const *ins,
                                     em_reduce_op op, const em_coll_options *o);
/* in: [world * out.shape[0], ...]. */
EM_API em_work *em_pg_reduce_scatter_tensor(em_pg *pg, em_tensor *out, em_tensor *in,
                                            em_reduce_op op, const em_coll_options *o);
/* outs (world-size tensors) only on root; NULL elsewhere. */
EM_API em_work *em_pg_gather(em_pg *pg, em_tensor *const *outs, em_tensor *in, int root,
                             const em_coll_options *o);
/* ins (world-size tensors) only on root; NULL elsewhere. */
EM_API em_work *em_pg_scatter(em_pg *pg, em_tensor *out, em_tensor *const *ins, int root,
                              const em_coll_options *o);
/* outs[j] receives rank j's ins[me]; tensors may differ in size per peer
 * (as torch's all_to_all with lists). */
EM_API em_work *em_pg_all_to_all(em_pg *pg, em_tensor *const *outs, em_tensor *const *ins,
                                 const em_coll_options *o);
/* Point to point. The tag matches a send with its recv (non-negative). */
EM_API em_work *em_pg_send(em_pg *pg, em_tensor *t, int dst, int tag, const em_coll_options *o);
EM_API em_work *em_pg_recv(em_pg *pg, em_tensor *t, int src, int tag, const em_coll_options *o);
EM_API em_work *em_pg_barrier(em_pg *pg, const em_coll_options *o);
/* A barrier through the store that names the ranks that did not arrive
 * within timeout_ms (all of them when wait_all_ranks, else the first). */
EM_API em_status em_pg_monitored_barrier(em_pg *pg, int64_t timeout_ms, bool wait_all_ranks);

/* ---- work handles ----------------------------------------------------------------- */

/* Blocks until the work completes (EM_OK), fails (its error), or
 * timeout_ms passes (EM_ERR_TIMEOUT naming the collective; the group is then
 * aborted, as torch's watchdog does, because ranks may be out of step).
 * EM_PG_DEFAULT_TIMEOUT: the group's timeout. */
EM_API em_status em_work_wait(em_work *w, int64_t timeout_ms);
EM_API bool em_work_is_completed(em_work *w);
/* EM_OK when completed successfully, the error when failed (its message
 * in em_last_error()), EM_ERR_STATE while pending. */
EM_API em_status em_work_status(em_work *w);
/* Runs cb(w, ctx) once when the work completes (at once, on this thread,
 * if it already has); on the progress thread otherwise: keep it short. (A
 * work without callbacks may run on the thread that waits for it; a
 * callback added by another thread while it runs then runs there.) */
EM_API em_status em_work_then(em_work *w, void (*cb)(em_work *w, void *ctx), void *ctx);
EM_API em_work *em_work_retain(em_work *w);
EM_API void em_work_release(em_work *w);
/* A work that is already complete (for user comm hooks that finish
 * synchronously). */
EM_API em_work *em_work_completed(em_status st);

#ifdef __cplusplus
}
#endif
#endif
