/* Files: opening one to read without blocking on a FIFO, and atomic
 * writes (temporary file, fsync, rename, directory fsync; see em__afile
 * in core_impl.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_impl.h"

int em__open_regular(const char *op, const char *path, int64_t *size) {
  /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    em__set_error(EM_ERR_IO, "%s: cannot open %s: %s", op, path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    em__set_error(EM_ERR_IO, "%s: %s is not a regular file", op, path);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    em__set_error(EM_ERR_IO, "%s: %s: fcntl: %s", op, path, strerror(errno));
    close(fd);
    return -1;
  }
  if (size) *size = (int64_t)st.st_size;
  return fd;
}

em_status em__afile_open(em__afile *f, const char *op, const char *path) {
  static _Atomic unsigned counter;
  f->fd = -1;
  f->tmp = NULL;
  f->op = op;
  struct stat lst, st;
  /* a symlink that resolves: write its target (realpath fails on a
   * dangling one, which the rename then replaces) */
  f->target = lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) ? realpath(path, NULL) : NULL;
  if (!f->target) f->target = strdup(path);
  if (!f->target) return em__set_error(EM_ERR_NOMEM, "%s: out of memory", op);
  bool exists = stat(f->target, &st) == 0 && S_ISREG(st.st_mode);
  for (int attempt = 0; attempt < 100; attempt++) {
    free(f->tmp);
    if (asprintf(&f->tmp, "%s.tmp.%d.%u", f->target, (int)getpid(),
                 atomic_fetch_add(&counter, 1)) < 0) {
      f->tmp = NULL;
      em__afile_abort(f);
      return em__set_error(EM_ERR_NOMEM, "%s: out of memory", op);
    }
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd >= 0) {
      if (exists) fchmod(f->fd, st.st_mode & 07777); /* best effort, as cp does */
      return EM_OK;
    }
    if (errno != EEXIST) break;
  }
  em_status s = em__set_error(EM_ERR_IO, "%s: cannot create %s: %s", op, f->tmp, strerror(errno));
  free(f->tmp);
  f->tmp = NULL;
  em__afile_abort(f);
  return s;
}

em_status em__afile_write(em__afile *f, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(f->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return em__set_error(EM_ERR_IO, "%s: writing %s: %s", f->op, f->tmp, strerror(errno));
    p += w;
    n -= (size_t)w;
  }
  return EM_OK;
}

void em__afile_abort(em__afile *f) {
  if (f->fd >= 0) close(f->fd);
  if (f->tmp) unlink(f->tmp);
  free(f->tmp);
  free(f->target);
  f->fd = -1;
  f->tmp = f->target = NULL;
}

em_status em__afile_commit(em__afile *f) {
  em_status st = EM_OK;
  if (fsync(f->fd) != 0)
    st = em__set_error(EM_ERR_IO, "%s: fsync %s: %s", f->op, f->tmp, strerror(errno));
  int fd = f->fd;
  f->fd = -1;
  if (close(fd) != 0 && !st)
    st = em__set_error(EM_ERR_IO, "%s: closing %s: %s", f->op, f->tmp, strerror(errno));
  if (!st && rename(f->tmp, f->target) != 0)
    st = em__set_error(EM_ERR_IO, "%s: renaming %s to %s: %s", f->op, f->tmp, f->target,
                       strerror(errno));
  if (st) {
    em__afile_abort(f);
    return st;
  }
  free(f->tmp);
  f->tmp = NULL;
  char *copy = f->target; /* make the rename durable */
  f->target = NULL;
  int dfd = copy ? open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  free(copy);
  return EM_OK;
}
