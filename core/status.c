/* Status strings and the thread-local last error. */
#include <stdio.h>

#include "core/core_impl.h"

/* room for a PATH_MAX (4096) path and the reason after it */
#define EM_ERROR_MAX 8192

static __thread char last_msg[EM_ERROR_MAX];
static __thread em_status last_status;

static const char *const status_names[EM_STATUS_COUNT] = {
    [EM_OK] = "ok",
#define X(name, desc, pyexc) [EM_ERR_##name] = desc,
    EM_STATUS_MAP(X)
#undef X
};

static const char *const status_pyexc[EM_STATUS_COUNT] = {
    [EM_OK] = "None",
#define X(name, desc, pyexc) [EM_ERR_##name] = pyexc,
    EM_STATUS_MAP(X)
#undef X
};

const char *em_status_name(em_status s) {
  if ((int)s < 0 || s >= EM_STATUS_COUNT) return "unknown status";
  return status_names[s];
}

const char *em_status_pyexc(em_status s) {
  if ((int)s < 0 || s >= EM_STATUS_COUNT) return "RuntimeError";
  return status_pyexc[s];
}

const char *em_last_error(void) { return last_msg; }
em_status em_last_status(void) { return last_status; }

void em_clear_error(void) {
  last_msg[0] = '\0';
  last_status = EM_OK;
}

static em_status set_errorv(em_status s, const char *fmt, va_list ap) {
  vsnprintf(last_msg, sizeof last_msg, fmt, ap);
  last_status = s;
  return s;
}

em_status em__set_error(em_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_errorv(s, fmt, ap);
  va_end(ap);
  return s;
}

em_status em_set_error(em_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_errorv(s, fmt, ap);
  va_end(ap);
  return s;
}

void em__prefix_error(const char *fmt, ...) {
  char old[EM_ERROR_MAX];
  memcpy(old, last_msg, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(last_msg, sizeof last_msg, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof last_msg - 3) return;
  last_msg[n] = ':';
  last_msg[n + 1] = ' ';
  size_t room = sizeof last_msg - (size_t)n - 2;
  size_t len = strnlen(old, room - 1);
  memcpy(last_msg + n + 2, old, len);
  last_msg[n + 2 + len] = '\0';
}

const char *em__shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
  size_t n = 0;
  if (size == 0) return buf;
  n += (size_t)snprintf(buf + n, size - n, "[");
  for (int i = 0; i < ndim && n < size; i++)
    n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (n < size) snprintf(buf + n, size - n, "]");
  return buf;
}

const char *em__tshape(const em_tensor *t) {
  static __thread char bufs[8][EM_SHAPE_STR_MAX];
  static __thread unsigned next;
  char *b = bufs[next++ % 8];
  return em__shape_str(t->ndim, t->shape, b, EM_SHAPE_STR_MAX);
}

em_status em__wrap_dim(const char *op, int dim, int ndim, int *out) {
  int n = ndim > 0 ? ndim : 1; /* a 0-dim tensor accepts dim 0 and -1 */
  if (dim < -n || dim >= n)
    return em__set_error(EM_ERR_INDEX,
                         "%s: dimension out of range (expected to be in range of [%d, %d], "
                         "but got %d)",
                         op, -n, n - 1, dim);
  *out = dim < 0 ? dim + n : dim;
  return EM_OK;
}

em_status em__wrap_dims(const char *op, int ndims, const int64_t *dims, int ndim, int64_t *out) {
  if (ndims > EM_MAX_DIMS) return em__set_error(EM_ERR_INVALID, "%s: too many dims (%d)", op, ndims);
  bool seen[EM_MAX_DIMS] = {0};
  for (int i = 0; i < ndims; i++) {
    int d = 0;
    if (dims[i] < INT32_MIN || dims[i] > INT32_MAX)
      return em__set_error(EM_ERR_INDEX, "%s: dimension %lld out of range", op,
                           (long long)dims[i]);
    EM_CHECK(em__wrap_dim(op, (int)dims[i], ndim, &d));
    if (seen[d])
      return em__set_error(EM_ERR_INVALID, "%s: dim %d appears multiple times in the list of dims",
                           op, d);
    seen[d] = true;
    out[i] = d;
  }
  return EM_OK;
}

em_status em__check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 0 || ndim > EM_MAX_DIMS)
    return em__set_error(EM_ERR_INVALID, "%s: number of dims %d is not in [0, %d]", op, ndim,
                         EM_MAX_DIMS);
  if (ndim > 0 && !shape) return em__set_error(EM_ERR_INVALID, "%s: shape is NULL", op);
  int64_t n = 1;
  bool zero = false;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return em__set_error(EM_ERR_INVALID, "%s: negative dimension %lld in shape %s", op,
                           (long long)shape[i],
                           em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0},
                                         EM_SHAPE_STR_MAX));
    if (shape[i] == 0) zero = true;
  }
  /* The product of the non-zero dims must fit even when a zero dim makes
   * the tensor empty: contiguous strides are built from it (as torch,
   * which refuses [0, 2^40, 2^40] too). */
  for (int i = 0; i < ndim; i++) {
    if (shape[i] > 0 && __builtin_mul_overflow(n, shape[i], &n))
      return em__set_error(EM_ERR_INVALID, "%s: shape %s has too many elements (overflow)", op,
                           em__shape_str(ndim, shape, (char[EM_SHAPE_STR_MAX]){0},
                                         EM_SHAPE_STR_MAX));
  }
  if (zero) n = 0;
  if (numel) *numel = n;
  return EM_OK;
}
