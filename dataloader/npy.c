/* .npy files, per NumPy's format specification (numpy/lib/format.py,
 * NEP 1):
 *
 *   "\x93NUMPY" major minor   magic, version 1.0, 2.0 or 3.0
 *   HEADER_LEN                uint16 LE (1.0) or uint32 LE (2.0, 3.0)
 *   header                    a Python dict literal, ASCII (latin-1 for
 *                             1.0/2.0, UTF-8 for 3.0), padded with spaces
 *                             and ending in '\n':
 *                             {'descr': '<f4', 'fortran_order': False,
 *                              'shape': (3, 4), }
 *   data                      numel * itemsize bytes
 *
 * The header is parsed as the literal it is (keys in any order, either
 * quote, trailing commas, Python 2's "3L"); exactly the three keys are
 * required. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataloader/dataloader_impl.h"

#define NPY_HEADER_MAX (1 << 20)

typedef struct parser {
  const char *p, *end;
} parser;

static void skip_ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static bool eat(parser *ps, char c) {
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == c) {
    ps->p++;
    return true;
  }
  return false;
}

/* A quoted string into buf (no escapes are needed by valid headers). */
static bool parse_string(parser *ps, char *buf, size_t size) {
  skip_ws(ps);
  if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"')) return false;
  char q = *ps->p++;
  size_t n = 0;
  while (ps->p < ps->end && *ps->p != q) {
    if (*ps->p == '\\' || n + 1 >= size) return false;
    buf[n++] = *ps->p++;
  }
  if (ps->p >= ps->end) return false;
  ps->p++;
  buf[n] = '\0';
  return true;
}

static bool parse_word(parser *ps, const char *w) {
  skip_ws(ps);
  size_t n = strlen(w);
  if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, w, n) == 0) {
    ps->p += n;
    return true;
  }
  return false;
}

/* A Python tuple of integers: "(3, 4)", "(5,)", "()"; not "(5)", which
 * is an int, nor "(05,)", which Python refuses ("(00,)" it reads as 0). An 'L' after a number
 * (Python 2's long, in files it wrote) is skipped, as NumPy does. */
static bool parse_shape(parser *ps, int *ndim, int64_t *shape, bool *too_many, bool *too_big) {
  *ndim = 0;
  if (!eat(ps, '(')) return false;
  for (;;) {
    if (eat(ps, ')')) return true;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return false;
    if (*ps->p == '0') /* "00" is 0 in Python, "01" a syntax error */
      for (const char *q = ps->p; q < ps->end && *q >= '0' && *q <= '9'; q++)
        if (*q != '0') return false;
    int64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
      int d = *ps->p - '0';
      if (v > (INT64_MAX - d) / 10) *too_big = true;
      else v = v * 10 + d;
      ps->p++;
    }
    if (ps->p < ps->end && *ps->p == 'L') ps->p++;
    if (*ndim >= EM_MAX_DIMS) *too_many = true;
    else shape[*ndim] = v;
    (*ndim)++;
    if (eat(ps, ',')) continue;
    if (*ndim == 1) return false; /* "(5)" */
    return eat(ps, ')');
  }
}

typedef struct npy_header {
  char descr[64];
  bool fortran;
  int ndim;
  int64_t shape[EM_MAX_DIMS];
} npy_header;

/* The header as an error quotes it: its first 120 bytes on one line, the
 * padding and newline trimmed, other unprintable bytes as \xNN. */
static const char *quote_header(const char *text, size_t hlen, char *out, size_t cap) {
  while (hlen > 0 && (text[hlen - 1] == ' ' || text[hlen - 1] == '\n')) hlen--;
  if (hlen > 120) hlen = 120;
  size_t o = 0;
  for (size_t i = 0; i < hlen && o + 5 < cap; i++) {
    unsigned char ch = (unsigned char)text[i];
    if (ch >= 0x20 && ch < 0x7f) out[o++] = (char)ch;
    else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
  }
  out[o] = '\0';
  return out;
}

#define BAD_HEADER(...)                                                           \
  do {                                                                            \
    char why_[200], quoted_[4 * 120 + 8];                                         \
    snprintf(why_, sizeof why_, __VA_ARGS__);                                     \
    return em__set_error(EM_ERR_IO, "npy: %s: bad header: %s (header: \"%s\")", path, why_, \
                         quote_header(text, hlen, quoted_, sizeof quoted_));      \
  } while (0)

static em_status parse_header(const char *path, const char *text, size_t hlen, npy_header *h) {
  parser ps = {text, text + hlen};
  bool have_descr = false, have_fortran = false, have_shape = false;
  if (!eat(&ps, '{')) BAD_HEADER("not a Python dict literal");
  for (;;) {
    if (eat(&ps, '}')) break;
    char key[64];
    if (!parse_string(&ps, key, sizeof key)) BAD_HEADER("expected a quoted key");
    if (!eat(&ps, ':')) BAD_HEADER("expected ':' after '%s'", key);
    if (strcmp(key, "descr") == 0) {
      skip_ws(&ps);
      if (ps.p < ps.end && *ps.p == '[')
        return em__set_error(EM_ERR_IO, "npy: %s: structured dtypes (descr is a list) are not "
                             "supported", path);
      if (!parse_string(&ps, h->descr, sizeof h->descr)) BAD_HEADER("descr is not a string");
      have_descr = true;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (parse_word(&ps, "True")) h->fortran = true;
      else if (parse_word(&ps, "False")) h->fortran = false;
      else BAD_HEADER("fortran_order is not True or False");
      have_fortran = true;
    } else if (strcmp(key, "shape") == 0) {
      bool too_many = false, too_big = false;
      if (!parse_shape(&ps, &h->ndim, h->shape, &too_many, &too_big))
        BAD_HEADER("shape is not a tuple of non-negative integers");
      if (too_many)
        return em__set_error(EM_ERR_IO, "npy: %s: the shape has %d dims; ember supports at most %d",
                             path, h->ndim, EM_MAX_DIMS);
      if (too_big) return em__set_error(EM_ERR_IO, "npy: %s: a size in the shape is too large", path);
      have_shape = true;
    } else {
      BAD_HEADER("unexpected key '%s' (the header holds exactly descr, fortran_order and shape)",
                 key);
    }
    if (eat(&ps, ',')) continue;
    if (eat(&ps, '}')) break;
    BAD_HEADER("expected ',' or '}'");
  }
  if (!have_descr || !have_fortran || !have_shape)
    BAD_HEADER("missing key %s", !have_descr ? "'descr'" : !have_fortran ? "'fortran_order'" : "'shape'");
  skip_ws(&ps);
  if (ps.p != ps.end) BAD_HEADER("unexpected text after the dict");
  return EM_OK;
}

/* descr ("<f4") -> dtype and whether bytes must be swapped. */
/* As NumPy's dtype(): '<' little-endian, '>' big-endian; '=', '|' or no
 * order character, native (this host is little-endian). */
static em_status parse_descr(const char *path, const char *descr, em_dtype *dt, bool *swap) {
  char order = descr[0];
  bool marked = order == '<' || order == '>' || order == '|' || order == '=';
  const char *k = marked ? descr + 1 : descr;
  static const struct {
    const char *code;
    em_dtype dt;
  } map[] = {{"b1", EM_BOOL},    {"?", EM_BOOL},     {"i1", EM_INT8},    {"u1", EM_UINT8},
             {"i2", EM_INT16},   {"i4", EM_INT32},   {"i8", EM_INT64},   {"f2", EM_FLOAT16},
             {"f4", EM_FLOAT32}, {"f8", EM_FLOAT64}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    if (strcmp(k, map[i].code) != 0) continue;
    size_t es = em_dtype_size(map[i].dt);
    *dt = map[i].dt;
    *swap = es > 1 && order == '>';
    return EM_OK;
  }
  if (k[0] == 'O')
    return em__set_error(EM_ERR_IO, "npy: %s: object arrays (descr '%s') hold pickled Python "
                         "objects and cannot be loaded", path, descr);
  return em__set_error(EM_ERR_DTYPE, "npy: %s: unsupported dtype '%s' (supported: b1 i1 i2 i4 i8 "
                       "u1 f2 f4 f8)", path, descr);
}

em_tensor *em_dl_npy_load(const char *path) {
  if (!path) return EM_FAIL(EM_ERR_INVALID, "npy: path is NULL");
  int64_t fsize;
  int fd = em__open_regular("npy", path, &fsize);
  if (fd < 0) return NULL;
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    close(fd);
    return EM_FAIL(EM_ERR_NOMEM, "npy: %s: out of memory", path);
  }
  char *text = NULL;
  em_tensor *t = NULL, *raw = NULL;
  unsigned char pre[12];
  size_t got = fread(pre, 1, 8, f);
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (got < 6 || memcmp(pre, magic, 6) != 0) {
    em__set_error(EM_ERR_IO, "npy: %s: bad magic (a .npy file starts with \"\\x93NUMPY\")", path);
    goto fail;
  }
  if (got < 8) {
    em__set_error(EM_ERR_IO, "npy: %s: truncated header: the file ends inside the version", path);
    goto fail;
  }
  int major = pre[6], minor = pre[7];
  if (!((major == 1 || major == 2 || major == 3) && minor == 0)) {
    em__set_error(EM_ERR_IO, "npy: %s: unsupported format version %d.%d (1.0, 2.0 and 3.0 are "
                  "known)", path, major, minor);
    goto fail;
  }
  size_t lsize = major == 1 ? 2 : 4;
  if (fread(pre + 8, 1, lsize, f) != lsize) {
    em__set_error(EM_ERR_IO, "npy: %s: truncated header: the file ends inside HEADER_LEN", path);
    goto fail;
  }
  uint64_t hlen = major == 1 ? (uint64_t)pre[8] | (uint64_t)pre[9] << 8
                             : (uint64_t)pre[8] | (uint64_t)pre[9] << 8 |
                                   (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
  int64_t hstart = 8 + (int64_t)lsize;
  if ((int64_t)hlen > fsize - hstart) {
    em__set_error(EM_ERR_IO, "npy: %s: truncated header: HEADER_LEN is %llu but only %lld bytes "
                  "follow", path, (unsigned long long)hlen, (long long)(fsize - hstart));
    goto fail;
  }
  if (hlen > NPY_HEADER_MAX) {
    em__set_error(EM_ERR_IO, "npy: %s: a header of %llu bytes is implausibly large", path,
                  (unsigned long long)hlen);
    goto fail;
  }
  text = malloc(hlen + 1);
  if (!text) {
    em__set_error(EM_ERR_NOMEM, "npy: out of memory");
    goto fail;
  }
  if (fread(text, 1, hlen, f) != hlen) {
    em__set_error(EM_ERR_IO, "npy: %s: read error in the header", path);
    goto fail;
  }
  text[hlen] = '\0';
  if (memchr(text, '\0', hlen)) {
    em__set_error(EM_ERR_IO, "npy: %s: bad header: it contains a NUL byte", path);
    goto fail;
  }
  npy_header h = {0};
  if (parse_header(path, text, hlen, &h)) goto fail;
  em_dtype dt = EM_UINT8;
  bool swap = false;
  if (parse_descr(path, h.descr, &dt, &swap)) goto fail;
  char sbuf[EM_SHAPE_STR_MAX];
  em__shape_str(h.ndim, h.shape, sbuf, sizeof sbuf);
  int64_t numel;
  if (em__check_shape("npy", h.ndim, h.shape, &numel)) { /* its (non-zero) sizes overflow */
    em__set_error(EM_ERR_IO, "npy: %s: the header claims shape %s of %s, whose sizes multiply to "
                  "more than 2^63 elements", path, sbuf, h.descr);
    goto fail;
  }
  size_t es = em_dtype_size(dt);
  uint64_t nbytes;
  int64_t data_bytes = fsize - hstart - (int64_t)hlen;
  bool too_big = __builtin_mul_overflow((uint64_t)numel, (uint64_t)es, &nbytes) || nbytes > INT64_MAX;
  if (too_big || (int64_t)nbytes > data_bytes) {
    if (too_big)
      em__set_error(EM_ERR_IO, "npy: %s: the header claims shape %s of %s, more than 2^63 bytes "
                    "(the file holds %lld bytes of data)", path, sbuf, h.descr,
                    (long long)data_bytes);
    else
      em__set_error(EM_ERR_IO, "npy: %s: truncated data: shape %s of %s needs %llu bytes but the "
                    "file holds %lld", path, sbuf, h.descr, (unsigned long long)nbytes,
                    (long long)data_bytes);
    goto fail;
  }
  if ((int64_t)nbytes < data_bytes) {
    em__set_error(EM_ERR_IO, "npy: %s: %lld unexpected byte(s) after the data of shape %s of %s "
                  "(wrong shape?)", path, (long long)(data_bytes - (int64_t)nbytes), sbuf, h.descr);
    goto fail;
  }
  /* Fortran order: the bytes are the C-order array of the reversed shape. */
  int64_t rshape[EM_MAX_DIMS];
  for (int i = 0; i < h.ndim; i++) rshape[i] = h.fortran ? h.shape[h.ndim - 1 - i] : h.shape[i];
  raw = em_tensor_empty(h.ndim, rshape, dt);
  if (!raw) {
    em__prefix_error("npy: %s", path);
    goto fail;
  }
  if (nbytes && fread(em__data_ptr(raw), 1, nbytes, f) != nbytes) {
    em__set_error(EM_ERR_IO, "npy: %s: read error in the data: %s", path, strerror(errno));
    goto fail;
  }
  if (swap && nbytes) em__dl_bswap(em__data_ptr(raw), raw->numel, es);
  if (dt == EM_BOOL) { /* NumPy reads any nonzero byte as True; ours hold exactly 0 or 1 */
    unsigned char *b = (unsigned char *)em__data_ptr(raw);
    for (uint64_t i = 0; i < nbytes; i++) b[i] = b[i] != 0;
  }
  if (h.fortran && h.ndim > 1) {
    int64_t perm[EM_MAX_DIMS];
    for (int i = 0; i < h.ndim; i++) perm[i] = h.ndim - 1 - i;
    em_tensor *v = em_tensor_permute(raw, h.ndim, perm);
    if (!v) goto fail;
    t = em_tensor_contiguous(v);
    em_tensor_release(v);
    if (!t) goto fail;
    em_tensor_release(raw);
  } else {
    t = raw;
  }
  raw = NULL;
  free(text);
  fclose(f);
  return t;
fail:
  em_tensor_release(raw);
  em_tensor_release(t);
  free(text);
  fclose(f);
  return NULL;
}

em_status em_dl_npy_save(const char *path, em_tensor *t) {
  if (!path || !t) return em__set_error(EM_ERR_INVALID, "npy save: NULL argument");
  const char *descr;
  switch ((em_dtype)t->dtype) {
    case EM_BOOL: descr = "|b1"; break;
    case EM_UINT8: descr = "|u1"; break;
    case EM_INT8: descr = "|i1"; break;
    case EM_INT16: descr = "<i2"; break;
    case EM_INT32: descr = "<i4"; break;
    case EM_INT64: descr = "<i8"; break;
    case EM_FLOAT16: descr = "<f2"; break;
    case EM_FLOAT32: descr = "<f4"; break;
    case EM_FLOAT64: descr = "<f8"; break;
    default:
      return em__set_error(EM_ERR_DTYPE, "npy save: NumPy has no %s type",
                           em_dtype_name((em_dtype)t->dtype));
  }
  char shape[EM_MAX_DIMS * 24 + 8];
  size_t n = 0;
  n += (size_t)snprintf(shape + n, sizeof shape - n, "(");
  for (int i = 0; i < t->ndim; i++)
    n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", i ? ", " : "",
                          (long long)t->shape[i]);
  snprintf(shape + n, sizeof shape - n, t->ndim == 1 ? ",)" : ")");
  char dict[EM_MAX_DIMS * 24 + 128];
  int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                    descr, shape);
  /* Pad so that magic + version + HEADER_LEN + header is a multiple of 64,
   * the header ending in '\n'. */
  size_t total = em__dl_align(10 + (size_t)dl + 1, 64);
  size_t hlen = total - 10;
  char head[sizeof dict + 80];
  memcpy(head, (const unsigned char[]){0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}, 8);
  head[8] = (char)(hlen & 0xff);
  head[9] = (char)(hlen >> 8);
  memcpy(head + 10, dict, (size_t)dl);
  memset(head + 10 + dl, ' ', total - 11 - (size_t)dl);
  head[total - 1] = '\n';
  em_tensor *cpu = em_tensor_to_device(t, EM_DEVICE_CPU);
  if (!cpu) return em_last_status();
  em_tensor *c = em_tensor_contiguous(cpu);
  em_tensor_release(cpu);
  if (!c) return em_last_status();
  em__afile f;
  em_status st = em__afile_open(&f, "npy save", path);
  if (!st) st = em__afile_write(&f, head, total);
  size_t nbytes = (size_t)c->numel * em_dtype_size((em_dtype)c->dtype);
  if (!st && nbytes) st = em__afile_write(&f, em__data_ptr(c), nbytes);
  if (!st) st = em__afile_commit(&f);
  else if (f.tmp) em__afile_abort(&f);
  em_tensor_release(c);
  return st;
}
