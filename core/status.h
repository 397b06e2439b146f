/* ember — status codes and the thread-local last error.
 *
 * Every fallible ember function returns an em_status (EM_OK == 0) or a
 * pointer that is NULL on failure. On failure it has set a thread-local
 * message naming the operation and the offending values, which
 * em_last_error() returns until the next failure on the same thread:
 *
 *     em_tensor *c = em_tensor_matmul(a, b);
 *     if (!c) {
 *         fprintf(stderr, "%s: %s\n", em_status_name(em_last_status()),
 *                 em_last_error());
 *         // "matmul: shapes [3, 4] and [5, 6] cannot be multiplied (4 != 5)"
 *     }
 *
 * A user mistake never aborts the process; assert() guards internal
 * invariants only.
 */
#ifndef EMBER_CORE_STATUS_H
#define EMBER_CORE_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EM_API __attribute__((visibility("default")))

/* X(name, description, Python exception) — one table for the enum, the
 * strings and the Python mapping (python/errors.c). */
#define EM_STATUS_MAP(X)                                              \
  X(INVALID, "invalid argument", "ValueError")                        \
  X(SHAPE, "shape error", "RuntimeError")                             \
  X(DTYPE, "dtype error", "TypeError")                                \
  X(INDEX, "index out of range", "IndexError")                        \
  X(DEVICE, "device error", "RuntimeError")                           \
  X(NOMEM, "out of memory", "MemoryError")                            \
  X(NOTIMPL, "not implemented", "NotImplementedError")                \
  X(CUDA, "CUDA error", "RuntimeError")                               \
  X(IO, "I/O error", "OSError")                                       \
  X(COMM, "communication error", "RuntimeError")                      \
  X(TIMEOUT, "timed out", "TimeoutError")                             \
  X(INTERRUPTED, "interrupted", "KeyboardInterrupt")                  \
  X(STATE, "invalid state", "RuntimeError")                           \
  X(INTERNAL, "internal error", "RuntimeError")

typedef enum em_status {
  EM_OK = 0,
#define EM__STATUS_ENUM(name, desc, pyexc) EM_ERR_##name,
  EM_STATUS_MAP(EM__STATUS_ENUM)
#undef EM__STATUS_ENUM
  EM_STATUS_COUNT
} em_status;

/* "ok", "invalid argument", ... ; never NULL. */
EM_API const char *em_status_name(em_status s);
/* Name of the Python exception class this status maps to ("ValueError"). */
EM_API const char *em_status_pyexc(em_status s);

/* The message of the last failure on this thread ("" if none). */
EM_API const char *em_last_error(void);
EM_API em_status em_last_status(void);
EM_API void em_clear_error(void);

/* Set the thread-local error (for code outside ember that reports through
 * the same channel, e.g. user hooks). Returns s so callers can
 * `return em_set_error(EM_ERR_INVALID, "...")`. */
EM_API em_status em_set_error(em_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
