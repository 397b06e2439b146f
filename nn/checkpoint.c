/* safetensors checkpoints: atomic writes, and loads that refuse truncated,
 * corrupt or hostile files. The JSON header goes through jansson. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "nn/nn.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

/* A header bigger than this is refused before reading it (safetensors
 * itself caps the header at 100 MB). */
#define MAX_HEADER (100u << 20)

static const struct {
  em_dtype dt;
  const char *name;
} dtype_names[] = {{EM_FLOAT32, "F32"}, {EM_FLOAT64, "F64"}, {EM_FLOAT16, "F16"},
                   {EM_BFLOAT16, "BF16"}, {EM_INT8, "I8"},   {EM_INT16, "I16"},
                   {EM_INT32, "I32"},   {EM_INT64, "I64"},   {EM_UINT8, "U8"},
                   {EM_BOOL, "BOOL"}};

static const char *st_name(em_dtype dt) {
  for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
    if (dtype_names[i].dt == dt) return dtype_names[i].name;
  return NULL;
}

static em_dtype st_dtype(const char *name) {
  for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
    if (strcmp(dtype_names[i].name, name) == 0) return dtype_names[i].dt;
  return EM_DTYPE_UNDEFINED;
}

/* ---- save -------------------------------------------------------------------- */

em_status em_save_safetensors(const char *path, const em_state_dict *sd, int nmeta,
                              const char *const *meta_keys, const char *const *meta_values) {
  if (!path || !sd) return em__set_error(EM_ERR_INVALID, "save: NULL path or state dict");
  int n = em_state_dict_size(sd);
  em_tensor **data = calloc((size_t)n + 1, sizeof *data);
  json_t *hdr = json_object();
  char *text = NULL;
  em__afile f = {-1, NULL, NULL, NULL};
  em_status st = EM_OK;
  if (!data || !hdr) {
    st = em__set_error(EM_ERR_NOMEM, "save: out of memory");
    goto done;
  }
  if (nmeta > 0) {
    json_t *meta = json_object();
    for (int i = 0; meta && i < nmeta; i++) json_object_set_new(meta, meta_keys[i], json_string(meta_values[i]));
    if (!meta || json_object_set_new(hdr, "__metadata__", meta)) {
      st = em__set_error(EM_ERR_NOMEM, "save: out of memory");
      goto done;
    }
  }
  uint64_t offset = 0;
  for (int i = 0; i < n; i++) {
    em_tensor *t = em_state_dict_tensor_at(sd, i);
    const char *name = em_state_dict_name_at(sd, i);
    if (strcmp(name, "__metadata__") == 0) {
      st = em__set_error(EM_ERR_INVALID, "save: \"__metadata__\" is reserved and can't name a tensor");
      goto done;
    }
    em_tensor *cpu = em_tensor_to_device(t, EM_DEVICE_CPU);
    EM_CHECK_PTR_GOTO(cpu, st, done);
    data[i] = em_tensor_contiguous(cpu);
    em_tensor_release(cpu);
    EM_CHECK_PTR_GOTO(data[i], st, done);
    uint64_t bytes = (uint64_t)data[i]->numel * em_dtype_size((em_dtype)t->dtype);
    json_t *shape = json_array();
    for (int d = 0; shape && d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_name((em_dtype)t->dtype), "shape",
                              shape, "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
    if (!entry || json_object_set_new(hdr, name, entry)) {
      st = em__set_error(EM_ERR_NOMEM, "save: out of memory building the header");
      goto done;
    }
    offset += bytes;
  }
  text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!text) {
    st = em__set_error(EM_ERR_NOMEM, "save: out of memory");
    goto done;
  }
  size_t hlen = strlen(text), padded = (hlen + 7) & ~(size_t)7; /* 8-byte aligned data */
  EM_CHECK_GOTO(em__afile_open(&f, "save", path), st, done);
  uint64_t le = padded;
  EM_CHECK_GOTO(em__afile_write(&f, &le, 8), st, done);
  EM_CHECK_GOTO(em__afile_write(&f, text, hlen), st, done);
  EM_CHECK_GOTO(em__afile_write(&f, "        ", padded - hlen), st, done);
  for (int i = 0; i < n; i++)
    if (data[i]->numel)
      EM_CHECK_GOTO(em__afile_write(&f, em_tensor_data(data[i]),
                                    (size_t)data[i]->numel * em_dtype_size((em_dtype)data[i]->dtype)),
                    st, done);
  st = em__afile_commit(&f);
done:
  if (f.tmp) em__afile_abort(&f);
  free(text);
  json_decref(hdr);
  for (int i = 0; data && i < n; i++) em_tensor_release(data[i]);
  free(data);
  return st;
}

/* ---- load --------------------------------------------------------------------- */

static em_status read_at(int fd, void *buf, size_t n, off_t off, const char *path) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return em__set_error(EM_ERR_IO, "load: reading %s: %s", path, strerror(errno));
    if (r == 0) return em__set_error(EM_ERR_IO, "load: %s is truncated", path);
    p += r;
    n -= (size_t)r;
    off += r;
  }
  return EM_OK;
}

typedef struct span {
  uint64_t b, e;
  const char *name;
} span;

static int span_cmp(const void *x, const void *y) {
  const span *a = x, *b = y;
  return a->b < b->b ? -1 : a->b > b->b ? 1 : (a->e < b->e ? -1 : a->e > b->e);
}

/* Opens path and parses its header; *data_start is where tensor bytes
 * begin, *data_len how many there are. */
static em_status open_header(const char *path, int *fd_out, json_t **hdr_out, uint64_t *data_start,
                             uint64_t *data_len) {
  *fd_out = -1;
  *hdr_out = NULL;
  int64_t file_size;
  int fd = em__open_regular("load", path, &file_size);
  if (fd < 0) return em_last_status();
  em_status st = EM_OK;
  char *text = NULL;
  uint64_t size = (uint64_t)file_size, hlen;
  if (size < 8) {
    st = em__set_error(EM_ERR_IO, "load: %s is truncated (%llu bytes, no header length)", path,
                       (unsigned long long)size);
    goto fail;
  }
  EM_CHECK_GOTO(read_at(fd, &hlen, 8, 0, path), st, fail);
  if (hlen > size - 8) {
    st = em__set_error(EM_ERR_IO, "load: %s: header length %llu runs past the end of the file (%llu bytes)",
                       path, (unsigned long long)hlen, (unsigned long long)size);
    goto fail;
  }
  if (hlen > MAX_HEADER) {
    st = em__set_error(EM_ERR_INVALID, "load: %s: header of %llu bytes is larger than the %u allowed",
                       path, (unsigned long long)hlen, MAX_HEADER);
    goto fail;
  }
  text = malloc(hlen + 1);
  if (!text) {
    st = em__set_error(EM_ERR_NOMEM, "load: out of memory");
    goto fail;
  }
  EM_CHECK_GOTO(read_at(fd, text, hlen, 8, path), st, fail);
  json_error_t err;
  json_t *hdr = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &err);
  if (!hdr || !json_is_object(hdr)) {
    st = em__set_error(EM_ERR_INVALID, "load: %s: the header is not a JSON object (%s at byte %d)", path,
                       hdr ? "not an object" : err.text, err.position);
    json_decref(hdr);
    goto fail;
  }
  free(text);
  *fd_out = fd;
  *hdr_out = hdr;
  *data_start = 8 + hlen;
  *data_len = size - 8 - hlen;
  return EM_OK;
fail:
  free(text);
  close(fd);
  return st;
}

/* Validates one header entry; fills dtype, shape and [b, e). */
static em_status check_entry(const char *path, const char *name, json_t *v, uint64_t data_len,
                             em_dtype *dt, int *ndim, int64_t *shape, uint64_t *b, uint64_t *e) {
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  if (!json_is_object(v) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
      json_array_size(jo) != 2)
    return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" needs dtype, shape and data_offsets",
                         path, name);
  *dt = st_dtype(json_string_value(jd));
  if (*dt == EM_DTYPE_UNDEFINED)
    return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" has unsupported dtype \"%s\"", path,
                         name, json_string_value(jd));
  size_t nd = json_array_size(js);
  if (nd > EM_MAX_DIMS)
    return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" has %zu dims (at most %d)", path,
                         name, nd, EM_MAX_DIMS);
  uint64_t numel = 1;
  for (size_t d = 0; d < nd; d++) {
    json_t *x = json_array_get(js, d);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
      return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" has an invalid shape", path, name);
    shape[d] = json_integer_value(x);
    if (__builtin_mul_overflow(numel, (uint64_t)shape[d], &numel))
      return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" has an absurd shape", path, name);
  }
  *ndim = (int)nd;
  json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
  if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
      json_integer_value(je) < json_integer_value(jb))
    return em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" has invalid data_offsets", path, name);
  *b = (uint64_t)json_integer_value(jb);
  *e = (uint64_t)json_integer_value(je);
  uint64_t bytes;
  if (__builtin_mul_overflow(numel, (uint64_t)em_dtype_size(*dt), &bytes) || bytes != *e - *b)
    return em__set_error(EM_ERR_INVALID,
                         "load: %s: entry \"%s\": shape and dtype need %llu bytes but data_offsets "
                         "span %llu",
                         path, name, (unsigned long long)bytes, (unsigned long long)(*e - *b));
  if (*e > data_len)
    return em__set_error(EM_ERR_INVALID,
                         "load: %s: entry \"%s\": data_offsets [%llu, %llu] lie outside the %llu "
                         "data bytes (truncated or corrupt file)",
                         path, name, (unsigned long long)*b, (unsigned long long)*e,
                         (unsigned long long)data_len);
  return EM_OK;
}

em_status em_load_safetensors(const char *path, em_state_dict **out) {
  *out = NULL;
  if (!path) return em__set_error(EM_ERR_INVALID, "load: NULL path");
  int fd;
  json_t *hdr;
  uint64_t start, data_len;
  EM_CHECK(open_header(path, &fd, &hdr, &start, &data_len));
  em_status st = EM_OK;
  size_t count = json_object_size(hdr);
  span *spans = calloc(count + 1, sizeof *spans);
  em_state_dict *sd = em_state_dict_create();
  if (!spans || !sd) {
    st = em__set_error(EM_ERR_NOMEM, "load: out of memory");
    goto done;
  }
  size_t ns = 0;
  const char *name;
  json_t *v;
  /* validate everything before allocating any tensor */
  json_object_foreach(hdr, name, v) {
    if (strcmp(name, "__metadata__") == 0) {
      if (!json_is_object(v)) {
        st = em__set_error(EM_ERR_INVALID, "load: %s: __metadata__ must be an object", path);
        goto done;
      }
      continue;
    }
    em_dtype dt;
    int nd;
    int64_t shape[EM_MAX_DIMS];
    EM_CHECK_GOTO(check_entry(path, name, v, data_len, &dt, &nd, shape, &spans[ns].b, &spans[ns].e),
                  st, done);
    spans[ns++].name = name;
  }
  qsort(spans, ns, sizeof *spans, span_cmp);
  uint64_t reach = 0; /* furthest end so far; empty entries take no bytes */
  const char *reach_name = NULL;
  for (size_t i = 0; i < ns; i++) {
    if (spans[i].e == spans[i].b) continue;
    if (reach_name && spans[i].b < reach) {
      st = em__set_error(EM_ERR_INVALID, "load: %s: entries \"%s\" and \"%s\" overlap in the data",
                         path, reach_name, spans[i].name);
      goto done;
    }
    reach = spans[i].e;
    reach_name = spans[i].name;
  }
  json_object_foreach(hdr, name, v) {
    if (strcmp(name, "__metadata__") == 0) continue;
    em_dtype dt;
    int nd;
    int64_t shape[EM_MAX_DIMS];
    uint64_t b, e;
    EM_CHECK_GOTO(check_entry(path, name, v, data_len, &dt, &nd, shape, &b, &e), st, done);
    em_tensor *t = em_tensor_empty(nd, shape, dt);
    EM_CHECK_PTR_GOTO(t, st, done);
    if (e > b) st = read_at(fd, em_tensor_data(t), (size_t)(e - b), (off_t)(start + b), path);
    if (!st && dt == EM_BOOL) { /* normalise bytes to 0/1: any other value is not a bool */
      uint8_t *p = em_tensor_data(t);
      for (int64_t i = 0; i < t->numel && !st; i++)
        if (p[i] > 1) st = em__set_error(EM_ERR_INVALID, "load: %s: entry \"%s\" holds a bool byte %u",
                                         path, name, p[i]);
    }
    if (!st) st = em_state_dict_set(sd, name, t);
    em_tensor_release(t);
    if (st) goto done;
  }
done:
  free(spans);
  json_decref(hdr);
  close(fd);
  if (st) {
    em_state_dict_free(sd);
    return st;
  }
  *out = sd;
  return EM_OK;
}

em_status em_safetensors_metadata(const char *path, const char *key, char **value) {
  *value = NULL;
  int fd;
  json_t *hdr;
  uint64_t start, len;
  EM_CHECK(open_header(path, &fd, &hdr, &start, &len));
  close(fd);
  json_t *meta = json_object_get(hdr, "__metadata__");
  json_t *v = meta ? json_object_get(meta, key) : NULL;
  em_status st = EM_OK;
  if (v) {
    if (!json_is_string(v)) {
      st = em__set_error(EM_ERR_INVALID, "load: %s: metadata \"%s\" is not a string", path, key);
    } else {
      *value = strdup(json_string_value(v));
      if (!*value) st = em__set_error(EM_ERR_NOMEM, "load: out of memory");
    }
  }
  json_decref(hdr);
  return st;
}
