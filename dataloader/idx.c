/* IDX files (MNIST, Fashion-MNIST): plain or gzip, and the MNIST-layout
 * dataset.
 *
 * Format: magic = 0x00 0x00 <type> <ndims>, then ndims big-endian uint32
 * sizes, then the elements in row-major order, big-endian. A gzip file is
 * recognised by its magic (1f 8b). The data is read (or inflated) once,
 * straight into the tensor. Every size the header claims is checked against
 * the file before allocating: exactly for a plain file, against the largest
 * expansion deflate allows (1032:1) for a gzip file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dataloader/dataloader_impl.h"

#define DEFLATE_MAX_RATIO 1032

/* A source that is either a plain FILE or a gzFile. */
typedef struct src {
  const char *path;
  FILE *f;
  gzFile gz;
  int64_t file_size;
  bool gz_truncated; /* the compressed stream ended early */
} src;

/* zlib's message without the "<fd:N>: " it puts before it (the stream
 * was opened with gzdopen; the error names the file itself). */
static const char *gz_message(gzFile gz) {
  int code;
  const char *m = gzerror(gz, &code);
  if (strncmp(m, "<fd:", 4) == 0 && strstr(m, ": ")) m = strstr(m, ": ") + 2;
  return m;
}

/* Reads up to n bytes; returns bytes read, or -1 with the error set. */
static int64_t src_read(src *s, void *buf, int64_t n) {
  char *p = buf;
  int64_t got = 0;
  while (got < n) {
    int64_t want = n - got;
    if (want > (1 << 30)) want = 1 << 30;
    if (s->gz) {
      int r = gzread(s->gz, p + got, (unsigned)want);
      if (r < 0) {
        em__set_error(EM_ERR_IO, "idx: %s: corrupt gzip data: %s", s->path, gz_message(s->gz));
        return -1;
      }
      if (r == 0) {
        int code;
        gzerror(s->gz, &code);
        if (code == Z_BUF_ERROR) s->gz_truncated = true;
        else if (code != Z_OK) {
          em__set_error(EM_ERR_IO, "idx: %s: corrupt gzip data: %s", s->path, gz_message(s->gz));
          return -1;
        }
        break;
      }
      got += r;
    } else {
      size_t r = fread(p + got, 1, (size_t)want, s->f);
      if (r == 0) {
        if (ferror(s->f)) {
          em__set_error(EM_ERR_IO, "idx: %s: read error: %s", s->path, strerror(errno));
          return -1;
        }
        break;
      }
      got += (int64_t)r;
    }
  }
  return got;
}

static void src_close(src *s) {
  if (s->gz) gzclose(s->gz);
  if (s->f) fclose(s->f);
}

static em_dtype idx_dtype(int code, const char **name) {
  switch (code) {
    case 0x08: *name = "unsigned byte"; return EM_UINT8;
    case 0x09: *name = "signed byte"; return EM_INT8;
    case 0x0B: *name = "short"; return EM_INT16;
    case 0x0C: *name = "int"; return EM_INT32;
    case 0x0D: *name = "float"; return EM_FLOAT32;
    case 0x0E: *name = "double"; return EM_FLOAT64;
    default: return EM_DTYPE_UNDEFINED;
  }
}

em_tensor *em_dl_idx_load(const char *path) {
  if (!path) return EM_FAIL(EM_ERR_INVALID, "idx: path is NULL");
  src s = {path, NULL, NULL, 0, false};
  em_tensor *t = NULL;
  int fd0 = em__open_regular("idx", path, &s.file_size);
  if (fd0 < 0) return NULL;
  s.f = fdopen(fd0, "rb");
  if (!s.f) {
    close(fd0);
    return EM_FAIL(EM_ERR_NOMEM, "idx: %s: out of memory", path);
  }
  unsigned char m2[2] = {0, 0};
  size_t r2 = fread(m2, 1, 2, s.f);
  bool gz = r2 == 2 && m2[0] == 0x1f && m2[1] == 0x8b;
  if (gz) {
    int fd = fcntl(fileno(s.f), F_DUPFD_CLOEXEC, 0);
    fclose(s.f);
    s.f = NULL;
    if (fd < 0 || lseek(fd, 0, SEEK_SET) != 0 || !(s.gz = gzdopen(fd, "rb"))) {
      if (fd >= 0) close(fd);
      return EM_FAIL(EM_ERR_IO, "idx: %s: cannot open the gzip stream", path);
    }
    gzbuffer(s.gz, 1 << 17);
  } else {
    rewind(s.f);
  }
  const char *kind = gz ? "gzip IDX file" : "IDX file";

  unsigned char magic[4];
  int64_t got = src_read(&s, magic, 4);
  if (got < 0) goto fail;
  if (got < 4) {
    em__set_error(EM_ERR_IO, "idx: %s: truncated header: the %s ends after %lld of 4 magic bytes",
                  path, kind, (long long)got);
    goto fail;
  }
  const char *tname = "";
  em_dtype dt = idx_dtype(magic[2], &tname);
  if (magic[0] != 0 || magic[1] != 0 || dt == EM_DTYPE_UNDEFINED) {
    em__set_error(EM_ERR_IO,
                  "idx: %s: bad magic %02x %02x %02x %02x (an IDX file starts with 00 00, a type "
                  "code 08/09/0b/0c/0d/0e and the number of dims)",
                  path, magic[0], magic[1], magic[2], magic[3]);
    goto fail;
  }
  int ndim = magic[3];
  if (ndim < 1 || ndim > EM_MAX_DIMS) {
    em__set_error(EM_ERR_IO, "idx: %s: wrong number of dims %d in the header (1 to %d supported)",
                  path, ndim, EM_MAX_DIMS);
    goto fail;
  }
  unsigned char dims[4 * EM_MAX_DIMS];
  got = src_read(&s, dims, 4 * ndim);
  if (got < 0) goto fail;
  if (got < 4 * ndim) {
    em__set_error(EM_ERR_IO,
                  "idx: %s: truncated header: %d dims need %d size bytes but the %s ends after %lld",
                  path, ndim, 4 * ndim, kind, (long long)got);
    goto fail;
  }
  int64_t shape[EM_MAX_DIMS];
  for (int i = 0; i < ndim; i++) {
    const unsigned char *d = dims + 4 * i;
    shape[i] = (int64_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
  }
  int64_t numel = 0;
  size_t es = em_dtype_size(dt);
  uint64_t nbytes = 0;
  /* em__check_shape: the (non-zero) sizes must multiply to at most 2^63 */
  if (em__check_shape("idx", ndim, shape, &numel) ||
      __builtin_mul_overflow((uint64_t)numel, (uint64_t)es, &nbytes) || nbytes > INT64_MAX) {
    em__set_error(EM_ERR_IO, "idx: %s: the header claims a size (%s of %s) too large to exist",
                  path, em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0}, EM_SHAPE_STR_MAX),
                  tname);
    goto fail;
  }
  int64_t header = 4 + 4 * (int64_t)ndim;
  if (!gz && (int64_t)nbytes > s.file_size - header) {
    em__set_error(EM_ERR_IO,
                  "idx: %s: truncated data: the header claims %s of %s (%llu bytes) but the file "
                  "holds %lld bytes of data",
                  path, em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0}, EM_SHAPE_STR_MAX),
                  tname, (unsigned long long)nbytes, (long long)(s.file_size - header));
    goto fail;
  }
  if (gz && nbytes / DEFLATE_MAX_RATIO > (uint64_t)s.file_size) {
    em__set_error(EM_ERR_IO,
                  "idx: %s: the header claims %s of %s (%llu bytes), more than a gzip file of "
                  "%lld bytes can hold",
                  path, em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0}, EM_SHAPE_STR_MAX),
                  tname, (unsigned long long)nbytes, (long long)s.file_size);
    goto fail;
  }
  t = em_tensor_empty(ndim, shape, dt);
  if (!t) {
    em__prefix_error("idx: %s", path);
    goto fail;
  }
  if (nbytes) {
    got = src_read(&s, em__data_ptr(t), (int64_t)nbytes);
    if (got < 0) goto fail;
    if ((uint64_t)got < nbytes) {
      em__set_error(EM_ERR_IO,
                    "idx: %s: truncated data: the header claims %llu bytes of data but the %s "
                    "holds %lld",
                    path, (unsigned long long)nbytes, kind, (long long)got);
      goto fail;
    }
  }
  unsigned char extra[64];
  got = src_read(&s, extra, sizeof extra);
  if (got < 0) goto fail;
  if (got > 0) {
    em__set_error(EM_ERR_IO, "idx: %s: unexpected bytes after the %llu bytes of data the header "
                  "claims (wrong dims?)", path, (unsigned long long)nbytes);
    goto fail;
  }
  if (s.gz_truncated) {
    em__set_error(EM_ERR_IO, "idx: %s: truncated gzip stream (unexpected end of file)", path);
    goto fail;
  }
  src_close(&s);
  if (es > 1 && nbytes) em__dl_bswap(em__data_ptr(t), t->numel, es);
  return t;
fail:
  em_tensor_release(t);
  src_close(&s);
  return NULL;
}

/* ---- MNIST layout ---------------------------------------------------------------------- */

static em_tensor *load_one(const char *root, const char *name) {
  size_t len = strlen(root) + strlen(name) + 8;
  char *p = malloc(len);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "mnist: out of memory");
  snprintf(p, len, "%s/%s", root, name);
  struct stat st;
  if (stat(p, &st) != 0) {
    snprintf(p, len, "%s/%s.gz", root, name);
    if (stat(p, &st) != 0) {
      free(p);
      return EM_FAIL(EM_ERR_IO, "mnist: found neither %s/%s nor %s/%s.gz", root, name, root, name);
    }
  }
  em_tensor *t = em_dl_idx_load(p);
  free(p);
  return t;
}

em_dl_dataset *em_dl_mnist_create(const char *root, bool train) {
  if (!root) return EM_FAIL(EM_ERR_INVALID, "mnist: root is NULL");
  const char *pre = train ? "train" : "t10k";
  char in[64], ln[64];
  snprintf(in, sizeof in, "%s-images-idx3-ubyte", pre);
  snprintf(ln, sizeof ln, "%s-labels-idx1-ubyte", pre);
  em_tensor *images = NULL, *labels = NULL, *l64 = NULL;
  em_dl_dataset *d = NULL;
  images = load_one(root, in);
  if (!images) goto done;
  labels = load_one(root, ln);
  if (!labels) goto done;
  if (images->ndim != 3 || images->dtype != EM_UINT8) {
    em__set_error(EM_ERR_IO, "mnist: %s/%s holds %s %s, expected uint8 [N, rows, cols]", root, in,
                  em_dtype_name((em_dtype)images->dtype), em__tshape(images));
    goto done;
  }
  if (labels->ndim != 1 || labels->dtype != EM_UINT8 || labels->shape[0] != images->shape[0]) {
    em__set_error(EM_ERR_IO, "mnist: %s/%s holds %s %s, expected uint8 [%lld] to match the images",
                  root, ln, em_dtype_name((em_dtype)labels->dtype), em__tshape(labels),
                  (long long)images->shape[0]);
    goto done;
  }
  l64 = em_tensor_empty(1, labels->shape, EM_INT64);
  if (!l64) goto done;
  const uint8_t *src = labels->numel ? (const uint8_t *)em__data_ptr(labels) : NULL;
  int64_t *dst = labels->numel ? (int64_t *)em__data_ptr(l64) : NULL;
  for (int64_t i = 0; i < labels->numel; i++) dst[i] = src[i];
  em_tensor *ts[2] = {images, l64};
  d = em_dl_tensor_dataset_create(2, ts);
done:
  em_tensor_release(images);
  em_tensor_release(labels);
  em_tensor_release(l64);
  return d;
}
