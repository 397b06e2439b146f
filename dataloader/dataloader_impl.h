/* dataloader internals shared by its files. Not part of the API. */
#ifndef EMBER_DATALOADER_IMPL_H
#define EMBER_DATALOADER_IMPL_H

#include <stdatomic.h>

#include "core/core_impl.h"
#include "dataloader/dataloader.h"

/* ---- objects ---------------------------------------------------------------- */

struct em_dl_dataset {
  atomic_int refcount;
  em_dl_dataset_ops ops;
  void *ctx;
};

struct em_dl_sampler {
  atomic_int refcount;
  em_dl_sampler_ops ops;
  void *ctx;
};

struct em_dl_sampler_iter {
  em_dl_sampler *s;
  void *state;
  bool begun, done;
};

/* Set once in a worker right after fork (process-global by nature: one
 * worker per process). */
extern em_dl_worker_info *em__dl_worker_info;

/* ---- shared-memory segments (shm.c) ------------------------------------------ */

/* Name prefix of every /dev/shm object this module creates:
 * "/ember-dl-<creator pid>-<sequence>". */
#define EM_DL_SHM_PREFIX "ember-dl-"

/* Checks that /dev/shm can hold need bytes; EM_ERR_NOMEM naming what (and
 * the sizes) if not. */
em_status em__dl_shm_check_space(size_t need, const char *what);
/* Tests: the space check sees at most n free bytes (0: the real figure);
 * workers forked afterwards inherit it. */
void em__dl_shm_set_test_free_bytes(size_t n);
/* A new shared segment of len bytes (space checked, reserved with
 * fallocate, its name already unlinked): *fd open read-write (the caller
 * closes it), *addr mapped MAP_SHARED unless addr is NULL. */
em_status em__dl_segment_create(size_t len, const char *what, int *fd, void **addr);
/* Formats bytes as "12.0 MiB" into buf. */
const char *em__dl_fmt_bytes(double bytes, char *buf, size_t size);

/* ---- the batch builder and slot layout (collate.c) ----------------------------- */

/* One tensor of a batch in a slot: geometry relative to the slot's data
 * area (offset in elements). */
typedef struct em__dl_tdesc {
  int32_t dtype, ndim;
  int64_t offset;
  int64_t shape[EM_MAX_DIMS];
  int64_t strides[EM_MAX_DIMS];
} em__dl_tdesc;

#define EM_DL_SLOT_MAGIC 0x656d2d646c736c74ULL /* "em-dlslt" */

/* The head of every slot (and one-off segment); the data area follows at
 * EM_DL_SLOT_HDR. The n tensor descriptors are in the data area too, after
 * the tensors, so a batch may hold any number (up to EM_DL_MAX_TENSORS). */
typedef struct em__dl_slot_header {
  uint64_t magic;
  int64_t batch;
  uint64_t epoch;
  int32_t n;
  int32_t pad;
  uint64_t data_used;
  uint64_t desc_off;           /* em__dl_tdesc[n] in the data area */
  uint64_t meta_off, meta_len; /* meta bytes in the data area */
} em__dl_slot_header;

#define EM_DL_ALIGN 64
#define EM_DL_SLOT_HDR (((sizeof(em__dl_slot_header) + 4095) / 4096) * 4096)

static inline size_t em__dl_align(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Reverses the byte order of n elements of es bytes (2, 4 or 8) in place:
 * big-endian IDX files, '>' .npy files. */
static inline void em__dl_bswap(void *data, int64_t n, size_t es) {
  if (es == 2) {
    uint16_t *p = data;
    for (int64_t i = 0; i < n; i++) p[i] = __builtin_bswap16(p[i]);
  } else if (es == 4) {
    uint32_t *p = data;
    for (int64_t i = 0; i < n; i++) p[i] = __builtin_bswap32(p[i]);
  } else if (es == 8) {
    uint64_t *p = data;
    for (int64_t i = 0; i < n; i++) p[i] = __builtin_bswap64(p[i]);
  }
}

enum { EM_DL_BUILDER_HEAP, EM_DL_BUILDER_SLOT };

struct em_dl_batch_builder {
  int mode;
  em_storage *slot;    /* slot mode: storage over the slot's data area */
  size_t used;         /* bytes bump-allocated in the data area */
  bool overflowed;     /* an alloc did not fit: it went to the heap */
  int n, cap;
  em_tensor **t;       /* t[0..n), grown as tensors are added */
  void *meta;
  size_t meta_len;
};

/* Heap mode (in-process, or a worker before its ring exists). */
void em__dl_builder_init_heap(em_dl_batch_builder *b);
/* Slot mode over data area [data, data + cap). */
em_status em__dl_builder_init_slot(em_dl_batch_builder *b, void *data, size_t cap);
void em__dl_builder_deinit(em_dl_batch_builder *b);
/* Heap mode: moves the built tensors and meta into out. */
em_status em__dl_builder_finish_heap(em_dl_batch_builder *b, em_dl_batch *out);
/* A storage owning a heap copy of len bytes of data (*copy: the copy). */
em_storage *em__dl_heap_copy(const void *data, size_t len, const void **copy);
/* Bytes a compact copy of the batch needs after the header. */
size_t em__dl_builder_compact_bytes(const em_dl_batch_builder *b);
/* Writes the batch into the slot at hdr (data area hdr + EM_DL_SLOT_HDR of
 * cap bytes): in place when everything already lives there (b in slot mode
 * over that same area), else compacted by copying. EM_ERR_NOMEM if it
 * does not fit (the caller then uses a one-off segment). */
em_status em__dl_builder_write(em_dl_batch_builder *b, em__dl_slot_header *hdr, size_t cap,
                               bool in_place);
/* Reads the batch in the slot (or segment) at slot, whose data area holds
 * cap bytes, in the main process: copies its header to *h and its tensor
 * descriptors to *descs (malloc'd, NULL when none; free() them) and
 * checks the copies, so that a worker writing the slot meanwhile cannot
 * make the caller reach outside it. Errors name who. */
em_status em__dl_slot_read(const void *slot, size_t cap, const char *who, em__dl_slot_header *h,
                           em__dl_tdesc **descs);

/* ---- workers (workers.c) ----------------------------------------------------------- */

/* What a worker needs; lives in the parent's memory, inherited by fork. */
typedef struct em__dl_worker_cfg {
  int id, num_workers;
  uint64_t seed;
  pid_t parent;
  int sock;                 /* the worker's end of its socketpair */
  em_dl_dataset *dataset;
  bool iterable;
  int64_t batch_size;       /* 0: no batching */
  bool drop_last;
  em_dl_collate_fn collate_fn;
  void *collate_ctx;
  em_status (*worker_init_fn)(void *ctx, int worker_id);
  void *worker_init_ctx;
  int nslots;
  size_t slot_bytes;        /* 0: sized from the first batch */
  struct em__dl_mbox *mbox;     /* this worker's queues and status (shared) */
  _Atomic int *main_sleeping;   /* the pool's flag (shared) */
  int efd;                  /* eventfd that wakes this worker */
  int main_efd;             /* eventfd that wakes the main process */
} em__dl_worker_cfg;

/* The mailbox: the common messages travel through shared memory, without
 * a system call. Each worker has two single-producer single-consumer
 * queues in a mapping made before the fork: tasks (main -> worker) and
 * results (worker -> main). A message that does not fit an entry (more
 * indices than EM_DL_TASK_INLINE, an error text, a file descriptor) goes
 * over the socket and its place in the queue holds an EM_DL_MSG_MARK
 * entry, published before the send: the queue alone gives the order. A
 * side that runs out of work raises its sleeping flag, looks at its queue
 * once more and sleeps in poll(); the other side, having published,
 * clears the flag and writes the sleeper's eventfd (sequentially
 * consistent stores and loads on both sides, so one of them always sees
 * the other). The socket still carries end-of-file both ways. */
#define EM_DL_TASK_Q 16     /* task entries per worker */
#define EM_DL_RESULT_Q 64   /* result entries per worker */
#define EM_DL_TASK_INLINE 256 /* indices a task entry holds at most */

typedef struct em__dl_result_entry {
  uint32_t type; /* EM_DL_MSG_BATCH (in its slot), EM_DL_MSG_END or EM_DL_MSG_MARK */
  int32_t slot;
  int64_t batch;
  uint64_t epoch;
  uint64_t pad;
} em__dl_result_entry;

typedef struct em__dl_mbox {
  _Alignas(64) _Atomic uint64_t task_tail; /* main: tasks published */
  _Alignas(64) _Atomic uint64_t task_head; /* worker: tasks taken */
  _Atomic int worker_sleeping;
  _Alignas(64) _Atomic uint64_t res_tail;  /* worker: results published */
  _Alignas(64) _Atomic uint64_t res_head;  /* main: results taken */
  /* the worker's progress, read by the main process when it dies */
  _Alignas(64) _Atomic int64_t batch;      /* -1 idle */
  _Atomic int64_t sample;                  /* -1 none */
  _Alignas(64) em__dl_result_entry res[EM_DL_RESULT_Q];
  /* then EM_DL_TASK_Q task entries (em__dl_task_msg with room for the
   * pool's inline indices), em__dl_task_stride() bytes apart */
} em__dl_mbox;

/* Indices inline in a task entry, for batches of batch_size (0: none). */
static inline int64_t em__dl_task_inline(int64_t batch_size) {
  return batch_size <= 0 ? 1 : batch_size < EM_DL_TASK_INLINE ? batch_size : EM_DL_TASK_INLINE;
}
size_t em__dl_task_stride(int64_t batch_size);
/* Wakes the side whose sleeping flag this is, if it sleeps: clears the
 * flag and writes its eventfd (once, however many wake it). */
void em__dl_wake(_Atomic int *sleeping, int efd);
size_t em__dl_mbox_bytes(int64_t batch_size);
struct em__dl_task_msg *em__dl_task_entry(struct em__dl_mbox *m, int64_t batch_size, uint64_t i);

/* Bounds on loader options: a batch's size, the batches in flight over
 * all workers (prefetch_factor x num_workers), a slot's size. */
#define EM_DL_MAX_BATCH ((int64_t)1 << 40)
#define EM_DL_MAX_PREFETCH 65536
#define EM_DL_MAX_SLOT ((size_t)1 << 62)

/* Samples filled by user callbacks: cleared before (so that the fields
 * filled are the non-NULL ones), checked after; a bad field count
 * releases what was filled and is an error naming who returned it. */
void em__dl_sample_clear(em_dl_sample *s);
static inline bool em__dl_sample_ok(const em_dl_sample *s) {
  return s->n >= 0 && s->n <= EM_DL_MAX_FIELDS;
}
em_status em__dl_sample_bad(em_dl_sample *s, const char *who);
/* An iterable dataset's iter_next into s, checked: on failure nothing is
 * left in s and the error names the dataset; with *done, s is empty
 * (fields returned along with done are not a sample). */
em_status em__dl_iter_next(em_dl_dataset *d, void *state, em_dl_sample *s, bool *done);
/* After a user callback failed with st: if it set no error message, one
 * naming what failed ("<fmt> failed without a message"); returns st, or
 * EM_ERR_STATE for a failure reported as OK. */
em_status em__dl_callback_failed(em_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The worker process body; never returns. */
_Noreturn void em__dl_worker_main(const em__dl_worker_cfg *cfg);

/* Messages on the SOCK_SEQPACKET pair. */
enum {
  EM_DL_MSG_TASK = 1, /* main -> worker: fetch a batch into a slot */
  EM_DL_MSG_RESET,    /* main -> worker: new pass (persistent workers) */
  EM_DL_MSG_RING,     /* worker -> main: its ring (fd attached) */
  EM_DL_MSG_BATCH,    /* worker -> main: batch ready (fd attached if one-off) */
  EM_DL_MSG_ERROR,    /* worker -> main: the batch failed */
  EM_DL_MSG_END,      /* worker -> main: iterable exhausted */
  EM_DL_MSG_FATAL,    /* worker -> main: the worker cannot go on; it exits */
  EM_DL_MSG_MARK      /* queue entry: the next message is on the socket */
};

#define EM_DL_TASK_CHUNK 4096 /* indices per task message */

typedef struct em__dl_task_msg {
  uint32_t type;
  int32_t slot;      /* -1: write into a one-off segment */
  int64_t batch;
  uint64_t epoch;
  int64_t n;         /* indices in the whole task; -1: next from the iterator */
  int64_t first;     /* index of indices[0] within the task */
  int64_t count;     /* indices in this message */
  int64_t indices[];
} em__dl_task_msg;

#define EM_DL_TEXT_MAX 6144 /* a worker's error text: a Python traceback fits */

typedef struct em__dl_result_msg {
  uint32_t type;
  int32_t slot;
  int64_t batch;
  uint64_t epoch;
  int64_t sample;    /* failing sample index, -1 if none */
  int32_t status;
  int32_t nslots;
  uint64_t bytes;    /* RING: slot bytes; BATCH one-off: segment bytes */
  char text[EM_DL_TEXT_MAX];
} em__dl_result_msg;

/* fd registry: main-side descriptors of every live worker, closed in each
 * newly forked worker so that a worker's death is seen as EOF and pidfds
 * do not leak into unrelated processes. Callers hold the lock around fork. */
void em__dl_fd_register(int fd);
void em__dl_fd_unregister(int fd);
void em__dl_fork_lock(void);
void em__dl_fork_unlock_parent(void);
void em__dl_fork_child_close_fds(void); /* in the child: closes all, resets the lock */

#endif
