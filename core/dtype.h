/* ember — element types, devices and PyTorch's type promotion.
 *
 * The per-dtype facts live in one table (em_dtype_info) guarded by a
 * static_assert on EM_DTYPE_COUNT. float16 and bfloat16 are stored as
 * uint16_t bit patterns and computed in float.
 */
#ifndef EMBER_CORE_DTYPE_H
#define EMBER_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(ENUM, name, C storage type, size, is_float, is_signed) in PyTorch order
 * of "kind"; the enum order is ember's own and stable (it appears in
 * checkpoints only by name). */
#define EM_DTYPE_MAP(X)                                \
  X(FLOAT32, "float32", float, 4, 1, 1)                \
  X(FLOAT64, "float64", double, 8, 1, 1)               \
  X(FLOAT16, "float16", uint16_t, 2, 1, 1)             \
  X(BFLOAT16, "bfloat16", uint16_t, 2, 1, 1)           \
  X(INT8, "int8", int8_t, 1, 0, 1)                     \
  X(INT16, "int16", int16_t, 2, 0, 1)                  \
  X(INT32, "int32", int32_t, 4, 0, 1)                  \
  X(INT64, "int64", int64_t, 8, 0, 1)                  \
  X(UINT8, "uint8", uint8_t, 1, 0, 0)                  \
  X(BOOL, "bool", bool, 1, 0, 0)

typedef enum em_dtype {
#define EM__DTYPE_ENUM(e, n, t, s, f, sg) EM_##e,
  EM_DTYPE_MAP(EM__DTYPE_ENUM)
#undef EM__DTYPE_ENUM
  EM_DTYPE_COUNT,
  EM_DTYPE_UNDEFINED = -1
} em_dtype;

typedef struct em_dtype_info {
  const char *name;  /* "float32" */
  size_t size;       /* bytes per element */
  bool is_float;     /* float16/bfloat16/float32/float64 */
  bool is_signed;
} em_dtype_info;

EM_API const em_dtype_info *em_dtype_get_info(em_dtype dt);
EM_API const char *em_dtype_name(em_dtype dt); /* "float32"; "?" if invalid */
EM_API size_t em_dtype_size(em_dtype dt);
EM_API bool em_dtype_is_float(em_dtype dt);
EM_API bool em_dtype_is_valid(int dt);
/* Parse "float32", "float", "int64", "long", "bool", ... ; UNDEFINED if
 * unknown. */
EM_API em_dtype em_dtype_from_name(const char *name);

/* PyTorch's promote_types: the smallest dtype both a and b convert to. */
EM_API em_dtype em_promote_types(em_dtype a, em_dtype b);
/* PyTorch's can_cast: may a result of type from be written into type to
 * by an in-place op (no float->int, no int/float->bool)? */
EM_API bool em_can_cast(em_dtype from, em_dtype to);

/* The default floating dtype (float32); what a Python float scalar and
 * creation functions without a dtype produce. Thread-safe get/set. */
EM_API em_dtype em_get_default_dtype(void);
EM_API em_status em_set_default_dtype(em_dtype dt);

/* half / bfloat16 bit patterns <-> float (round to nearest even). */
EM_API float em_half_to_float(uint16_t h);
EM_API uint16_t em_float_to_half(float f);
EM_API float em_bf16_to_float(uint16_t h);
EM_API uint16_t em_float_to_bf16(float f);

/* ---- devices ---------------------------------------------------------- */

typedef enum em_device_type { EM_CPU = 0, EM_CUDA = 1, EM_DEVICE_TYPE_COUNT } em_device_type;

typedef struct em_device {
  int16_t type;  /* em_device_type */
  int16_t index; /* 0 for the CPU */
} em_device;

#define EM_DEVICE_CPU ((em_device){EM_CPU, 0})
#define EM_DEVICE_CUDA(i) ((em_device){EM_CUDA, (int16_t)(i)})

static inline bool em_device_eq(em_device a, em_device b) {
  return a.type == b.type && a.index == b.index;
}
/* Writes "cpu" or "cuda:0" into buf (size >= 16); returns buf. */
EM_API const char *em_device_str(em_device d, char *buf, size_t size);
/* Parses "cpu", "cuda", "cuda:1". */
EM_API em_status em_device_parse(const char *s, em_device *out);

/* ---- scalars ---------------------------------------------------------- */

/* A Python-style number: its kind drives type promotion (an int scalar
 * keeps an int32 tensor int32; a float scalar makes it float32). */
typedef enum em_scalar_kind { EM_SCALAR_BOOL, EM_SCALAR_INT, EM_SCALAR_FLOAT } em_scalar_kind;
typedef struct em_scalar {
  em_scalar_kind kind;
  union {
    double f;
    int64_t i;
  } v;
} em_scalar;

static inline em_scalar em_scalar_float(double f) {
  em_scalar s;
  s.kind = EM_SCALAR_FLOAT;
  s.v.f = f;
  return s;
}
static inline em_scalar em_scalar_int(int64_t i) {
  em_scalar s;
  s.kind = EM_SCALAR_INT;
  s.v.i = i;
  return s;
}
static inline em_scalar em_scalar_bool(bool b) {
  em_scalar s;
  s.kind = EM_SCALAR_BOOL;
  s.v.i = b;
  return s;
}
static inline double em_scalar_to_double(em_scalar s) {
  return s.kind == EM_SCALAR_FLOAT ? s.v.f : (double)s.v.i;
}
/* The dtype a wrapped scalar of this kind has: bool, int64, or the
 * default float dtype. */
EM_API em_dtype em_scalar_dtype(em_scalar s);

#ifdef __cplusplus
}
#endif
#endif
