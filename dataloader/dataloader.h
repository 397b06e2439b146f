/* ember — data loading: datasets, samplers, collation, worker processes
 * that fill shared-memory batch rings, readers for IDX and .npy files, and
 * shared-memory tensors (share_memory) for Hogwild training.
 *
 * The pieces, as in torch.utils.data:
 *
 *   dataset   map-style (length + get item) or iterable (a stream per
 *             worker); built-ins: TensorDataset, Subset, ConcatDataset,
 *             random_split, MNIST / Fashion-MNIST from IDX files. A user
 *             dataset is a struct of callbacks plus a void *ctx, so a
 *             Python object can sit behind it.
 *   sample    a flat tuple of tensors (image, label) — em_dl_sample.
 *   sampler   yields dataset indices (sequential, random, weighted,
 *             distributed); a batch sampler groups them into batches.
 *   collate   turns n samples into one batch through a batch builder that
 *             places the batch tensors where the batch will be read: a slot
 *             of a shared-memory ring in a worker, the heap otherwise.
 *   loader    drives the sampler, runs dataset + collate in-process
 *             (num_workers = 0) or in forked worker processes, and hands
 *             out batches in order.
 *
 * Worked example: Fashion-MNIST, shuffled batches of 64 from 2 workers.
 *
 *     em_dl_dataset *train = em_dl_mnist_create("/usr/share/datasets/fashion-mnist", true);
 *     em_dl_loader_options o;
 *     em_dl_loader_options_init(&o);
 *     o.batch_size = 64;
 *     o.shuffle = true;
 *     o.num_workers = 2;
 *     em_dl_loader *loader = em_dl_loader_create(train, &o);
 *     em_dl_dataset_release(train);                // the loader keeps it
 *     for (int epoch = 0; epoch < 2; epoch++) {
 *       em_dl_iter *it = em_dl_loader_iter(loader);  // forks the workers
 *       em_dl_batch b;
 *       bool done;
 *       while (em_dl_iter_next(it, &b, &done) == EM_OK && !done) {
 *         em_tensor *images = b.t[0];   // uint8 [64, 28, 28], a view of a
 *         em_tensor *labels = b.t[1];   // shared-memory slot (zero copy)
 *         ...
 *         em_dl_batch_release(&b);      // the slot goes back to its ring
 *       }                               // when its last view is released
 *       em_dl_iter_destroy(it);         // workers stop; nothing is left
 *     }                                 // in /dev/shm on any exit path
 *     em_dl_loader_destroy(loader);
 *
 * Worker processes (num_workers >= 1). Each worker is fork()ed from the
 * thread that creates the iterator, so callbacks (datasets, collate,
 * worker_init_fn) run in the worker exactly as they would in-process, on a
 * copy-on-write image of the parent. Worker w seeds ember's default
 * generator with base_seed + w, where base_seed is drawn from the loader's
 * generator for every iterator (em_dl_get_worker_info() gives the seed to
 * datasets that keep their own generator). Each worker owns a ring of
 * prefetch_factor + 1 slots in one shared-memory segment and writes every
 * batch straight into a slot; the main process hands out tensors that are
 * views of the slot; the slot returns to the ring when the last view (and
 * the em_dl_batch) is released. A batch that does not fit its slot, or a
 * batch needed while the user still holds every slot of its worker, goes
 * into a one-off segment of its own instead (correct, just slower). So
 * does every batch of a worker whose ring /dev/shm cannot hold: the main
 * process then warns once on stderr. With slot_bytes given, the rings'
 * size is known and checked before any worker starts (an error if they
 * do not fit).
 *
 * Shared memory never outlives its processes: every segment is created in
 * /dev/shm (after checking with statvfs that it fits, and reserved with
 * fallocate so a full /dev/shm is an error here, not a SIGBUS later) and
 * its name is unlinked right after the creating process opened it: the
 * memory lives exactly as long as some process maps it. Names carry the
 * creator's pid ("ember-dl-<pid>-<n>"); the loader removes names whose
 * creator no longer exists (a process killed in the microseconds between
 * create and unlink). Workers die with their parent (PR_SET_PDEATHSIG,
 * plus a getppid() check and end-of-file on their socket), and the main
 * process detects a dead worker through a pidfd: the next em_dl_iter_next
 * fails within a second with an error naming the worker, its pid, how it
 * died, and the sample it was loading — never a hang.
 *
 * Threads: an iterator is driven by one thread at a time; batches may be
 * released from any thread. Workers are forked by the thread that calls
 * em_dl_loader_iter and die with it (PR_SET_PDEATHSIG follows the thread,
 * not the process): create iterators on a thread that outlives them.
 *
 * Errors and ownership follow core/tensor.h: functions return em_status or
 * NULL with a message (em_last_error()); returned objects are new
 * references; arguments are borrowed and retained when kept.
 */
#ifndef EMBER_DATALOADER_DATALOADER_H
#define EMBER_DATALOADER_DATALOADER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most tensors in one sample, and in one batch (a collate function
 * may return, say, a list of every sample's tensors). */
#define EM_DL_MAX_FIELDS 32
#define EM_DL_MAX_TENSORS 65536

/* ---- samples --------------------------------------------------------------
 * A sample is a flat tuple of tensors, e.g. (image [28, 28] uint8, label
 * 0-dim int64). The fields are owned references. */
typedef struct em_dl_sample {
  int n;
  em_tensor *t[EM_DL_MAX_FIELDS];
} em_dl_sample;

/* Appends t to s, taking over the caller's reference (t is released if s
 * is full or t is NULL, with an error). */
EM_API em_status em_dl_sample_push(em_dl_sample *s, em_tensor *t);
/* Releases the fields and sets n = 0. */
EM_API void em_dl_sample_release(em_dl_sample *s);

/* ---- datasets ---------------------------------------------------------- */

typedef struct em_dl_dataset em_dl_dataset;

/* Facts about the current worker, for datasets and worker_init_fn. */
typedef struct em_dl_worker_info {
  int id;            /* 0 .. num_workers-1 */
  int num_workers;
  uint64_t seed;     /* base_seed + id; the default generator is seeded with it */
  em_dl_dataset *dataset; /* the worker's dataset (borrowed) */
} em_dl_worker_info;

/* In a worker process: that worker's info; in the main process: NULL
 * (torch.utils.data.get_worker_info). */
EM_API const em_dl_worker_info *em_dl_get_worker_info(void);

/* A dataset is callbacks over ctx. Map-style datasets set len and get;
 * iterable datasets set iter_begin / iter_next (and optionally iter_end)
 * and leave get NULL. Callbacks report errors through em_set_error.
 *   len        number of samples (>= 0); -1 with an error on failure.
 *   get        fills out (n = 0 on entry) with sample index, 0 <= index <
 *              len (em_dl_dataset_get checks the range). On failure it
 *              releases what it pushed.
 *   iter_begin starts a pass; info is NULL in-process, else the worker's
 *              (shard the stream by info->id / info->num_workers, as with
 *              torch's get_worker_info()). *state is passed back.
 *   iter_next  fills out with the next sample, or sets *done.
 *   destroy    frees ctx when the last reference goes (may be NULL). */
typedef struct em_dl_dataset_ops {
  const char *name; /* for messages: "TensorDataset" */
  int64_t (*len)(void *ctx);
  em_status (*get)(void *ctx, int64_t index, em_dl_sample *out);
  em_status (*iter_begin)(void *ctx, const em_dl_worker_info *info, void **state);
  em_status (*iter_next)(void *ctx, void *state, em_dl_sample *out, bool *done);
  void (*iter_end)(void *ctx, void *state);
  void (*destroy)(void *ctx);
} em_dl_dataset_ops;

/* A dataset over user callbacks (ops is copied). NULL on bad ops. */
EM_API em_dl_dataset *em_dl_dataset_create(const em_dl_dataset_ops *ops, void *ctx);
EM_API em_dl_dataset *em_dl_dataset_retain(em_dl_dataset *d); /* returns d */
EM_API void em_dl_dataset_release(em_dl_dataset *d);           /* NULL is fine */
EM_API const char *em_dl_dataset_name(const em_dl_dataset *d);
EM_API bool em_dl_dataset_is_iterable(const em_dl_dataset *d);
EM_API void *em_dl_dataset_ctx(const em_dl_dataset *d);
/* Length of a map-style dataset; -1 with an error for an iterable one. */
EM_API int64_t em_dl_dataset_len(em_dl_dataset *d);
/* Sample index into out (which must be empty: n = 0). Negative indices
 * count from the end, as in Python. EM_ERR_INDEX when out of range. */
EM_API em_status em_dl_dataset_get(em_dl_dataset *d, int64_t index, em_dl_sample *out);

/* TensorDataset: sample i is (t[0][i], ..., t[n-1][i]) as views. Every
 * tensor needs ndim >= 1 and the same size(0). */
EM_API em_dl_dataset *em_dl_tensor_dataset_create(int n, em_tensor *const *tensors);
/* Subset: sample i is d[indices[i]]. Indices are checked against len(d)
 * (negatives count from the end) and copied. */
EM_API em_dl_dataset *em_dl_subset_create(em_dl_dataset *d, int64_t n, const int64_t *indices);
/* ConcatDataset of n map-style datasets. */
EM_API em_dl_dataset *em_dl_concat_dataset_create(int n, em_dl_dataset *const *datasets);
/* random_split: n non-overlapping Subsets of the given lengths (summing to
 * len(d)), from one randperm(len(d)) drawn from g (NULL: the default
 * generator), as torch.utils.data.random_split. out[0..n) receive new
 * references. The _fractions form takes fractions summing to 1: lengths
 * floor(len * f) with the remainder given one by one round-robin. */
EM_API em_status em_dl_random_split(em_dl_dataset *d, int n, const int64_t *lengths,
                                    em_generator *g, em_dl_dataset **out);
EM_API em_status em_dl_random_split_fractions(em_dl_dataset *d, int n, const double *fractions,
                                              em_generator *g, em_dl_dataset **out);

/* ---- file readers ---------------------------------------------------------
 * Both read the whole file into one new contiguous tensor. A malformed or
 * truncated file is EM_ERR_IO with a message naming the file and what is
 * wrong; sizes claimed by a header are checked against the file before
 * anything is allocated. */

/* IDX (MNIST / Fashion-MNIST), plain or gzip (detected by its magic;
 * inflated once, straight into the tensor). Element types: ubyte -> uint8,
 * byte -> int8, short -> int16, int -> int32, float -> float32, double ->
 * float64 (big-endian on disk). */
EM_API em_tensor *em_dl_idx_load(const char *path);
/* .npy, format versions 1.0, 2.0 and 3.0 (header per NumPy's format spec).
 * dtypes: b1 i1 i2 i4 i8 u1 f2 f4 f8, little- or big-endian; C or Fortran
 * order (a Fortran-order file is returned as a C-contiguous copy). */
EM_API em_tensor *em_dl_npy_load(const char *path);
/* Writes t as a version 1.0 .npy file (NumPy reads it; bfloat16 is
 * refused: NumPy has no such type). */
EM_API em_status em_dl_npy_save(const char *path, em_tensor *t);
/* MNIST-layout dataset from root/{train,t10k}-{images-idx3,labels-idx1}-ubyte
 * (each plain or with ".gz"): samples (image uint8 [28, 28], label 0-dim
 * int64). Works for MNIST and Fashion-MNIST. */
EM_API em_dl_dataset *em_dl_mnist_create(const char *root, bool train);

/* ---- samplers ---------------------------------------------------------------
 * A sampler yields indices; a batch sampler yields lists of indices. Both
 * are callbacks over ctx so a Python sampler can sit behind them:
 *   len     number of indices (batches) per pass; -1 if unknown.
 *   begin   starts a pass (draws its randomness); *state is passed back.
 *   next    plain sampler: *idx points at the next *n >= 1 indices (a chunk
 *           of any size); batch sampler: at the next batch. *n = 0 at the
 *           end. The memory stays valid until the next call.
 *   set_epoch optional (distributed sampler).
 * Generators passed to samplers are borrowed: keep them alive as long as
 * the sampler. NULL means: draw a fresh seed from the default generator at
 * every pass, as torch does. */
typedef struct em_dl_sampler em_dl_sampler;
typedef struct em_dl_sampler_ops {
  const char *name;
  bool is_batch;
  int64_t (*len)(void *ctx);
  em_status (*begin)(void *ctx, void **state);
  em_status (*next)(void *ctx, void *state, const int64_t **idx, int64_t *n);
  void (*end)(void *ctx, void *state);
  em_status (*set_epoch)(void *ctx, int64_t epoch);
  void (*destroy)(void *ctx);
} em_dl_sampler_ops;

EM_API em_dl_sampler *em_dl_sampler_create(const em_dl_sampler_ops *ops, void *ctx);
EM_API em_dl_sampler *em_dl_sampler_retain(em_dl_sampler *s);
EM_API void em_dl_sampler_release(em_dl_sampler *s);
EM_API const char *em_dl_sampler_name(const em_dl_sampler *s);
EM_API bool em_dl_sampler_is_batch(const em_dl_sampler *s);
EM_API int64_t em_dl_sampler_len(em_dl_sampler *s);
/* DistributedSampler.set_epoch; EM_ERR_INVALID for samplers without one. */
EM_API em_status em_dl_sampler_set_epoch(em_dl_sampler *s, int64_t epoch);

/* 0, 1, ..., n-1. */
EM_API em_dl_sampler *em_dl_sequential_sampler_create(int64_t n);
/* torch's RandomSampler over n items: without replacement, num_samples
 * (-1: n) indices from successive randperm(n, g); with replacement, from
 * randint(0, n, [32], g) draws. */
EM_API em_dl_sampler *em_dl_random_sampler_create(int64_t n, bool replacement,
                                                  int64_t num_samples, em_generator *g);
/* SubsetRandomSampler: indices[randperm(n, g)]. indices is copied. */
EM_API em_dl_sampler *em_dl_subset_random_sampler_create(int64_t n, const int64_t *indices,
                                                         em_generator *g);
/* WeightedRandomSampler: num_samples indices i drawn with probability
 * weights[i] / sum (with replacement: inverse CDF of uniform draws from g;
 * without: the Efraimidis-Spirakis keys u^(1/w), largest first). */
EM_API em_dl_sampler *em_dl_weighted_random_sampler_create(int64_t n, const double *weights,
                                                           int64_t num_samples, bool replacement,
                                                           em_generator *g);
/* BatchSampler: groups s's indices into lists of batch_size, the last one
 * shorter unless drop_last. s is retained. */
EM_API em_dl_sampler *em_dl_batch_sampler_create(em_dl_sampler *s, int64_t batch_size,
                                                 bool drop_last);

/* DistributedSampler, exactly as torch's: with shuffle, the order of a
 * pass is randperm(dataset_len) from a generator seeded with seed + epoch;
 * without drop_last the list is padded to a multiple of num_replicas by
 * repeating it from its start; with drop_last its tail is dropped; rank r
 * takes positions r, r + num_replicas, ... . uneven (for evaluation): no
 * padding and no dropping — ranks get ceil or floor of len/num_replicas
 * indices and every index exactly once overall. */
typedef struct em_dl_distributed_options {
  int64_t num_replicas; /* default 1 */
  int64_t rank;         /* default 0 */
  bool shuffle;         /* default true */
  uint64_t seed;        /* default 0 */
  bool drop_last;       /* default false */
  bool uneven;          /* default false; excludes drop_last */
} em_dl_distributed_options;
EM_API void em_dl_distributed_options_init(em_dl_distributed_options *o);
EM_API em_dl_sampler *em_dl_distributed_sampler_create(int64_t dataset_len,
                                                       const em_dl_distributed_options *o);

/* Iterating a sampler by hand. */
typedef struct em_dl_sampler_iter em_dl_sampler_iter;
EM_API em_dl_sampler_iter *em_dl_sampler_iter_create(em_dl_sampler *s);
/* The next chunk of indices (plain) or the next batch (batch sampler);
 * *n = 0 at the end. *idx stays valid until the next call. */
EM_API em_status em_dl_sampler_iter_next(em_dl_sampler_iter *it, const int64_t **idx,
                                         int64_t *n);
EM_API void em_dl_sampler_iter_destroy(em_dl_sampler_iter *it);
/* One whole pass, flattened, into a malloc'd array (*out NULL when *n is
 * 0); free() it. Stops with an error past max_n indices (an endless
 * sampler). */
EM_API em_status em_dl_sampler_collect(em_dl_sampler *s, int64_t max_n, int64_t **out,
                                       int64_t *n);

/* ---- batches and collation ------------------------------------------------ */

/* A batch: tensors (owned references) plus optional opaque bytes a collate
 * function attached (meta, e.g. a pickled structure for Python). meta stays
 * valid until em_dl_batch_release. */
typedef struct em_dl_batch {
  int n;
  em_tensor **t;   /* t[0..n): a heap array (NULL when n = 0) */
  const void *meta;
  size_t meta_len;
  int64_t index;   /* position of the batch in its pass */
  int worker;      /* the worker that made it; -1 in-process */
  em_storage *holder; /* internal: keeps the slot (and meta) alive */
} em_dl_batch;
EM_API void em_dl_batch_release(em_dl_batch *b); /* zeroes *b */

/* Where a collate function puts its output. In a worker, tensors from
 * em_dl_batch_builder_alloc live in the worker's shared-memory slot, so the
 * batch is written exactly once. */
typedef struct em_dl_batch_builder em_dl_batch_builder;

/* A new uninitialised tensor (new reference) placed where the batch will
 * live. Fill it, then add it (or a view of it). */
EM_API em_tensor *em_dl_batch_builder_alloc(em_dl_batch_builder *b, int ndim,
                                            const int64_t *shape, em_dtype dt);
/* Appends t as the next batch tensor (retained). A tensor that does not
 * live in the slot is copied into it when the batch is finished. */
EM_API em_status em_dl_batch_builder_add(em_dl_batch_builder *b, em_tensor *t);
/* Attaches opaque bytes (copied) to the batch. */
EM_API em_status em_dl_batch_builder_set_meta(em_dl_batch_builder *b, const void *data,
                                              size_t len);

/* A collate function turns samples[0..n) (borrowed) into a batch through
 * the builder. */
typedef em_status (*em_dl_collate_fn)(void *ctx, int n, em_dl_sample *samples,
                                      em_dl_batch_builder *b);
/* default_collate: field f of the batch is the stack of field f of every
 * sample along a new dim 0 ([n, ...]). Every sample needs the same number
 * of fields, and each field the same shape across samples; mixed dtypes
 * stack in their promoted type (em_promote_types), as torch.stack. */
EM_API em_status em_dl_default_collate(void *ctx, int n, em_dl_sample *samples,
                                       em_dl_batch_builder *b);
/* default_convert (loaders without batching): the fields of samples[0]
 * unchanged. */
EM_API em_status em_dl_default_convert(void *ctx, int n, em_dl_sample *samples,
                                       em_dl_batch_builder *b);
/* Runs a collate function in-process (heap tensors) into out. */
EM_API em_status em_dl_collate(em_dl_collate_fn fn, void *ctx, int n, em_dl_sample *samples,
                               em_dl_batch *out);

/* ---- the loader ------------------------------------------------------------ */

typedef struct em_dl_loader em_dl_loader;
typedef struct em_dl_iter em_dl_iter;

/* Around every fork() of a worker (a Python binding calls PyOS_BeforeFork /
 * PyOS_AfterFork_Parent / PyOS_AfterFork_Child here). */
typedef struct em_dl_fork_hooks {
  void (*prepare)(void *ctx);
  void (*parent)(void *ctx);
  void (*child)(void *ctx);
  void *ctx;
} em_dl_fork_hooks;

typedef struct em_dl_loader_options {
  int64_t batch_size;        /* default 1; 0 = no batching (each sample as is) */
  bool shuffle;              /* RandomSampler(generator) instead of sequential */
  em_dl_sampler *sampler;    /* custom index sampler (retained) */
  em_dl_sampler *batch_sampler; /* custom batch sampler (retained); excludes
                                   batch_size != 1, shuffle, sampler, drop_last */
  bool drop_last;
  int num_workers;           /* 0: load in the calling thread */
  int prefetch_factor;       /* batches in flight per worker; 0: 2 */
  bool persistent_workers;   /* keep workers between passes */
  double timeout;            /* seconds to wait for a batch; 0: forever */
  em_dl_collate_fn collate_fn; /* NULL: default_collate (default_convert
                                  without batching) */
  void *collate_ctx;
  /* Runs in each worker after seeding, before any sample. */
  em_status (*worker_init_fn)(void *ctx, int worker_id);
  void *worker_init_ctx;
  em_generator *generator;   /* base seed and shuffling (borrowed); NULL: default */
  bool pin_memory;           /* with a CUDA device: batches handed out in pinned
                                host memory (copies; the ring slot is freed at
                                once); a no-op without */
  size_t slot_bytes;         /* ring slot size; 0: from the first batch (+25%) */
  /* Polled about every 50 ms and on EINTR while waiting for a batch; a
   * non-OK status is returned from em_dl_iter_next (a binding raises
   * KeyboardInterrupt here). */
  em_status (*check_interrupt)(void *ctx);
  void *interrupt_ctx;
  em_dl_fork_hooks fork_hooks;
} em_dl_loader_options;

EM_API void em_dl_loader_options_init(em_dl_loader_options *o);
/* A loader over d (retained). Options are checked here with torch's
 * messages; samplers in o are retained. */
EM_API em_dl_loader *em_dl_loader_create(em_dl_dataset *d, const em_dl_loader_options *o);
/* Drops the caller's loader; live iterators keep it alive. Persistent
 * workers stop when the loader is gone. */
EM_API void em_dl_loader_destroy(em_dl_loader *l);
/* Batches per pass (len of the batch sampler); -1 for iterable datasets. */
EM_API int64_t em_dl_loader_len(em_dl_loader *l);

/* Starts a pass: draws the base seed, starts (or, persistent, reuses) the
 * workers. A persistent loader has at most one live iterator. */
EM_API em_dl_iter *em_dl_loader_iter(em_dl_loader *l);
/* The next batch in order into out, or *done = true at the end (out
 * zeroed). A worker's error for a batch is returned for that batch (status
 * from the worker, message naming the worker, pid and sample) and the pass
 * continues; a dead worker, a timeout or an interrupt is returned at
 * once; after a dead worker every later call fails. */
EM_API em_status em_dl_iter_next(em_dl_iter *it, em_dl_batch *out, bool *done);
/* Ends the pass: without persistent workers, stops them (EOF on their
 * socket, SIGKILL after a grace period) and reaps them. */
EM_API void em_dl_iter_destroy(em_dl_iter *it);
/* The worker pids of the pass (at most max); returns how many. */
EM_API int em_dl_iter_worker_pids(em_dl_iter *it, pid_t *pids, int max);

/* ---- shared-memory tensors ----------------------------------------------------
 * Storage in shared memory is inherited by fork(): parent and children see
 * one copy. Segments are unlinked as soon as they are mapped, so nothing
 * remains in /dev/shm whatever happens to the processes. */

/* An em_allocator over shared memory. Storages made through it directly do
 * not carry EM_STORAGE_SHARED; em_dl_empty_shared does. */
EM_API em_allocator *em_dl_shm_allocator(void);
/* A new contiguous tensor in shared memory (flag EM_STORAGE_SHARED). */
EM_API em_tensor *em_dl_empty_shared(int ndim, const int64_t *shape, em_dtype dt);
/* Tensor.share_memory_(): moves t's storage into shared memory in place.
 * The rule: the em_storage object stays the same and only its memory moves,
 * so t and every view of that storage (slices, transposes, autograd's saved
 * copies) see the shared memory at once; only raw pointers taken earlier
 * (em_tensor_data, a NumPy array over the old memory) go stale: the old
 * memory's pages go back to the kernel (the tensor is not held twice)
 * while its addresses stay reserved until the storage dies, so such a
 * pointer reads zeros and never reaches a tensor allocated later (memory
 * of another owner, from_blob, goes back to its owner at once). No-op
 * when already shared and for CUDA tensors. Calls run one at a time;
 * using the tensor from another thread during the move is not safe. */
EM_API em_status em_dl_share_memory(em_tensor *t);
/* The same for a list (a module's parameters and buffers): all storages
 * not yet shared move into one segment (space checked once). */
EM_API em_status em_dl_share_memory_list(int n, em_tensor *const *ts);
EM_API bool em_dl_is_shared(const em_tensor *t);
/* Removes /dev/shm names left by ember processes that no longer exist
 * (only possible when one was killed between create and unlink). Runs
 * automatically when workers start; returns how many were removed. */
EM_API int em_dl_shm_cleanup_stale(void);

#ifdef __cplusplus
}
#endif
#endif
