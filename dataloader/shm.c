/* Shared-memory segments: creation with a space check and no lingering
 * name, the stale-name janitor, the shared-memory allocator and
 * share_memory for tensors.
 *
 * Every segment is a POSIX shm object: shm_open(O_CREAT | O_EXCL) under a
 * name carrying the creator's pid, shm_unlink right away (the fd keeps the
 * object), ftruncate + posix_fallocate (tmpfs reserves the pages now, so a
 * full /dev/shm fails here with ENOSPC instead of a SIGBUS on first touch),
 * mmap(MAP_SHARED). The memory then lives exactly as long as a mapping or
 * fd does: forked children inherit the mapping, other processes get the
 * fd over a unix socket. Only a process killed between shm_open and
 * shm_unlink (two consecutive syscalls) can leave a name; the janitor
 * removes names whose creator is gone. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dataloader/dataloader_impl.h"

#define SHM_DIR "/dev/shm"

const char *em__dl_fmt_bytes(double b, char *buf, size_t size) {
  static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024.0 && u < 6) {
    b /= 1024.0;
    u++;
  }
  if (u == 0) snprintf(buf, size, "%.0f bytes", b);
  else snprintf(buf, size, "%.1f %s", b, units[u]);
  return buf;
}

static size_t test_free_bytes; /* tests: /dev/shm as if it had only this much free */

void em__dl_shm_set_test_free_bytes(size_t n) { test_free_bytes = n; }

em_status em__dl_shm_check_space(size_t need, const char *what) {
  struct statvfs sv;
  if (statvfs(SHM_DIR, &sv) != 0) return EM_OK; /* no /dev/shm to ask: shm_open will tell */
  double avail = (double)sv.f_bavail * (double)sv.f_frsize;
  if (test_free_bytes && (double)test_free_bytes < avail) avail = (double)test_free_bytes;
  if ((double)need <= avail) return EM_OK;
  char a[32], n[32];
  return em__set_error(EM_ERR_NOMEM,
                       "%s: /dev/shm has %s free, but %s are needed; free space in /dev/shm "
                       "or enlarge it (e.g. docker run --shm-size), or use fewer workers, a "
                       "smaller prefetch_factor or smaller batches",
                       what, em__dl_fmt_bytes(avail, a, sizeof a),
                       em__dl_fmt_bytes((double)need, n, sizeof n));
}

static atomic_uint_fast64_t segment_seq;

em_status em__dl_segment_create(size_t len, const char *what, int *fd_out, void **addr_out) {
  char name[80], sz[32];
  if (len == 0) len = 1;
  if (len > (size_t)INT64_MAX)
    return em__set_error(EM_ERR_NOMEM, "%s: cannot create a shared segment of %zu bytes", what,
                         len);
  EM_CHECK(em__dl_shm_check_space(len, what));
  int fd = -1;
  for (int tries = 0; fd < 0; tries++) {
    snprintf(name, sizeof name, "/" EM_DL_SHM_PREFIX "%ld-%llu", (long)getpid(),
             (unsigned long long)atomic_fetch_add(&segment_seq, 1));
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && (errno != EEXIST || tries > 100))
      return em__set_error(EM_ERR_IO, "%s: shm_open(%s) failed: %s", what, name,
                           strerror(errno));
  }
  shm_unlink(name); /* from here on nothing can outlive the processes */
  if (ftruncate(fd, (off_t)len) != 0) {
    int e = errno;
    close(fd);
    return em__set_error(e == ENOSPC || e == EFBIG ? EM_ERR_NOMEM : EM_ERR_IO,
                         "%s: cannot size a shared segment to %s: %s", what,
                         em__dl_fmt_bytes((double)len, sz, sizeof sz), strerror(e));
  }
  int e = posix_fallocate(fd, 0, (off_t)len);
  if (e != 0 && e != EOPNOTSUPP && e != EINVAL) {
    close(fd);
    return em__set_error(EM_ERR_NOMEM,
                         "%s: cannot reserve %s in /dev/shm: %s (free space in /dev/shm or "
                         "enlarge it)",
                         what, em__dl_fmt_bytes((double)len, sz, sizeof sz), strerror(e));
  }
  if (addr_out) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      e = errno;
      close(fd);
      return em__set_error(EM_ERR_NOMEM, "%s: cannot map %s of shared memory: %s", what,
                           em__dl_fmt_bytes((double)len, sz, sizeof sz), strerror(e));
    }
    *addr_out = p;
  }
  *fd_out = fd;
  return EM_OK;
}

int em_dl_shm_cleanup_stale(void) {
  DIR *d = opendir(SHM_DIR);
  if (!d) return 0;
  int removed = 0;
  struct dirent *e;
  size_t plen = strlen(EM_DL_SHM_PREFIX);
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, EM_DL_SHM_PREFIX, plen) != 0) continue;
    char *end;
    long pid = strtol(e->d_name + plen, &end, 10);
    if (end == e->d_name + plen || *end != '-' || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* creator alive */
    char name[300];
    snprintf(name, sizeof name, "/%s", e->d_name);
    if (shm_unlink(name) == 0) removed++;
  }
  closedir(d);
  return removed;
}

/* ---- the shared-memory allocator -------------------------------------------------- */

/* Several storages packed into one segment (share_memory_list) hold one
 * reference each to it. */
typedef struct shm_seg {
  atomic_int refs;
  void *base;
  size_t len;
} shm_seg;

/* What a storage moved by share_memory holds: its reference to the
 * segment, and the block its data lived in before when that block came
 * from the CPU allocator. That block stays reserved (its pages handed back
 * to the kernel) until the storage dies: a NumPy array, memoryview or
 * DLPack capsule taken earlier keeps the storage alive and still points
 * there, and must find stale zeros rather than another tensor's memory. */
typedef struct shm_ref {
  shm_seg *seg;
  em_allocator *old_alloc; /* NULL: nothing kept */
  void *old, *old_ctx;
  size_t old_bytes;
} shm_ref;

static em_status shm_alloc(em_allocator *self, size_t nbytes, em_device dev, void **data,
                           void **ctx) {
  if (dev.type != EM_CPU)
    return em__set_error(EM_ERR_DEVICE, "shared memory allocator: only CPU memory can be shared");
  int fd;
  void *p;
  EM_CHECK(em__dl_segment_create(nbytes, "shared memory allocator", &fd, &p));
  close(fd);
  *data = p;
  *ctx = NULL;
  return EM_OK;
}

static void shm_free(em_allocator *self, void *data, size_t nbytes, void *ctx) {
  if (ctx) {
    shm_ref *r = ctx;
    if (atomic_fetch_sub(&r->seg->refs, 1) == 1) {
      munmap(r->seg->base, r->seg->len);
      free(r->seg);
    }
    if (r->old_alloc) r->old_alloc->free(r->old_alloc, r->old, r->old_bytes, r->old_ctx);
    free(r);
    return;
  }
  if (data) munmap(data, nbytes ? nbytes : 1);
}

static em_allocator shm_allocator = {"cpu_shared", EM_CPU, shm_alloc, shm_free, NULL};

em_allocator *em_dl_shm_allocator(void) { return &shm_allocator; }

em_tensor *em_dl_empty_shared(int ndim, const int64_t *shape, em_dtype dt) {
  em_tensor *t = em_tensor_empty_strided(ndim, shape, NULL, dt, EM_DEVICE_CPU, &shm_allocator);
  if (!t) {
    em__prefix_error("empty_shared");
    return NULL;
  }
  t->storage->flags |= EM_STORAGE_SHARED;
  return t;
}

bool em_dl_is_shared(const em_tensor *t) {
  return t && t->storage && (t->storage->flags & EM_STORAGE_SHARED);
}

/* Hands the whole pages inside [p, p + n) back to the kernel; the range
 * stays reserved and reads as zeros. */
static void drop_pages(void *p, size_t n) {
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t b = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
  uintptr_t e = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
  if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}

/* Points storage s at new memory (already holding its bytes) in segment
 * seg, and lets the old memory go:
 *   - a CPU heap storage (header and data in one block, freed with the
 *     storage) and a block of the CPU allocator stay reserved until the
 *     storage dies (see shm_ref), their pages handed back now: the
 *     process does not hold the tensor twice, and a raw pointer taken
 *     earlier reads stale zeros, never memory reused by another tensor;
 *   - memory of any other allocator (a NumPy array's, through from_blob)
 *     belongs to someone else and is released to them now. */
static void storage_move(em_storage *s, void *data, shm_seg *seg, shm_ref *r) {
  void *old = s->data;
  em_allocator *oa = s->allocator;
  void *octx = s->ctx;
  *r = (shm_ref){seg, NULL, NULL, NULL, 0};
  s->data = data;
  s->allocator = &shm_allocator;
  s->ctx = r;
  s->flags |= EM_STORAGE_SHARED;
  if (oa && oa != em_cpu_allocator()) {
    if (oa->free) oa->free(oa, old, s->nbytes, octx);
    return;
  }
  drop_pages(old, s->nbytes);
  if (oa) *r = (shm_ref){seg, oa, old, octx, s->nbytes};
}

/* share_memory runs one call at a time: two threads moving one storage
 * would each copy it and swap it in. The lock is held across fork
 * (pthread_atfork) so that a child never inherits it taken. */
static pthread_mutex_t share_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t share_once = PTHREAD_ONCE_INIT;
static void share_lock(void) { pthread_mutex_lock(&share_mu); }
static void share_unlock(void) { pthread_mutex_unlock(&share_mu); }
static void share_init(void) { pthread_atfork(share_lock, share_unlock, share_unlock); }

static em_status share_list(int n, em_tensor *const *ts);

em_status em_dl_share_memory_list(int n, em_tensor *const *ts) {
  pthread_once(&share_once, share_init);
  share_lock();
  em_status st = share_list(n, ts);
  share_unlock();
  return st;
}

static em_status share_list(int n, em_tensor *const *ts) {
  if (n < 0) return em__set_error(EM_ERR_INVALID, "share_memory: negative count %d", n);
  if (n > 0 && !ts) return em__set_error(EM_ERR_INVALID, "share_memory: tensor list is NULL");
  em_storage **todo = malloc(((size_t)n + 1) * sizeof *todo);
  if (!todo) return em__set_error(EM_ERR_NOMEM, "share_memory: out of memory");
  int m = 0;
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      free(todo);
      return em__set_error(EM_ERR_INVALID, "share_memory: tensor %d is NULL", i);
    }
    em_storage *s = ts[i]->storage;
    if (s->device.type != EM_CPU || (s->flags & EM_STORAGE_SHARED)) continue;
    bool seen = false;
    for (int j = 0; j < m && !seen; j++) seen = todo[j] == s;
    if (seen) continue;
    if (s->nbytes == 0) { /* nothing to share; mark it so it is not revisited */
      s->flags |= EM_STORAGE_SHARED;
      continue;
    }
    todo[m++] = s;
    total += em__dl_align(s->nbytes, EM_DL_ALIGN);
  }
  if (m == 0) {
    free(todo);
    return EM_OK;
  }
  char what[96];
  snprintf(what, sizeof what, "share_memory (%d tensor storage%s)", m, m == 1 ? "" : "s");
  int fd;
  void *base;
  em_status st = em__dl_segment_create(total, what, &fd, &base);
  if (st) {
    free(todo);
    return st;
  }
  close(fd);
  shm_seg *seg = malloc(sizeof *seg);
  shm_ref **refs = calloc((size_t)m, sizeof *refs); /* one per storage, made before any moves */
  bool refs_ok = refs != NULL;
  for (int j = 0; refs_ok && j < m; j++) refs_ok = (refs[j] = malloc(sizeof **refs)) != NULL;
  if (!seg || !refs_ok) {
    for (int j = 0; refs && j < m; j++) free(refs[j]);
    free(refs);
    free(seg);
    munmap(base, total);
    free(todo);
    return em__set_error(EM_ERR_NOMEM, "share_memory: out of memory");
  }
  atomic_init(&seg->refs, m);
  seg->base = base;
  seg->len = total;
  size_t off = 0;
  for (int j = 0; j < m; j++) {
    char *dst = (char *)base + off;
    memcpy(dst, todo[j]->data, todo[j]->nbytes);
    storage_move(todo[j], dst, seg, refs[j]);
    off += em__dl_align(todo[j]->nbytes, EM_DL_ALIGN);
  }
  free(refs);
  free(todo);
  return EM_OK;
}

em_status em_dl_share_memory(em_tensor *t) {
  if (!t) return em__set_error(EM_ERR_INVALID, "share_memory: tensor is NULL");
  return em_dl_share_memory_list(1, &t);
}
