/* dtype facts, PyTorch's promotion rules, half/bfloat16 conversion,
 * devices and scalars. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "core/core_impl.h"

static const em_dtype_info dtype_table[] = {
#define X(e, n, t, s, f, sg) [EM_##e] = {n, s, f, sg},
    EM_DTYPE_MAP(X)
#undef X
};
_Static_assert(sizeof dtype_table / sizeof dtype_table[0] == EM_DTYPE_COUNT,
               "one entry per dtype");
#define X(e, n, t, s, f, sg) _Static_assert(sizeof(t) == s, "storage size of " n);
EM_DTYPE_MAP(X)
#undef X

bool em_dtype_is_valid(int dt) { return dt >= 0 && dt < EM_DTYPE_COUNT; }

const em_dtype_info *em_dtype_get_info(em_dtype dt) {
  return em_dtype_is_valid(dt) ? &dtype_table[dt] : NULL;
}
const char *em_dtype_name(em_dtype dt) {
  return em_dtype_is_valid(dt) ? dtype_table[dt].name : "?";
}
/* PyTorch's ScalarType names ("Float", "Long"), for messages that follow
 * PyTorch's wording. */
const char *em__torch_dtype_name(em_dtype dt) {
  static const char *const names[EM_DTYPE_COUNT] = {
      [EM_FLOAT32] = "Float", [EM_FLOAT64] = "Double", [EM_FLOAT16] = "Half",
      [EM_BFLOAT16] = "BFloat16", [EM_INT8] = "Char", [EM_INT16] = "Short",
      [EM_INT32] = "Int", [EM_INT64] = "Long", [EM_UINT8] = "Byte", [EM_BOOL] = "Bool"};
  return em_dtype_is_valid(dt) ? names[dt] : "?";
}
size_t em_dtype_size(em_dtype dt) { return em_dtype_is_valid(dt) ? dtype_table[dt].size : 0; }
bool em_dtype_is_float(em_dtype dt) { return em_dtype_is_valid(dt) && dtype_table[dt].is_float; }

em_dtype em_dtype_from_name(const char *name) {
  static const struct {
    const char *alias;
    em_dtype dt;
  } aliases[] = {{"float", EM_FLOAT32},  {"double", EM_FLOAT64}, {"half", EM_FLOAT16},
                 {"short", EM_INT16},    {"int", EM_INT32},      {"long", EM_INT64},
                 {"f32", EM_FLOAT32},    {"f64", EM_FLOAT64},    {"f16", EM_FLOAT16},
                 {"bf16", EM_BFLOAT16}};
  if (!name) return EM_DTYPE_UNDEFINED;
  if (strncmp(name, "ember.", 6) == 0) name += 6;
  else if (strncmp(name, "torch.", 6) == 0) name += 6;
  for (int i = 0; i < EM_DTYPE_COUNT; i++)
    if (strcmp(name, dtype_table[i].name) == 0) return (em_dtype)i;
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(name, aliases[i].alias) == 0) return aliases[i].dt;
  return EM_DTYPE_UNDEFINED;
}

static int float_rank(em_dtype d) {
  switch (d) {
    case EM_FLOAT16:
    case EM_BFLOAT16: return 1;
    case EM_FLOAT32: return 2;
    case EM_FLOAT64: return 3;
    default: return 0;
  }
}

em_dtype em_promote_types(em_dtype a, em_dtype b) {
  if (a == EM_DTYPE_UNDEFINED) return b;
  if (b == EM_DTYPE_UNDEFINED) return a;
  if (a == b) return a;
  if (a == EM_BOOL) return b;
  if (b == EM_BOOL) return a;
  bool fa = em_dtype_is_float(a), fb = em_dtype_is_float(b);
  if (fa && fb) {
    if ((a == EM_FLOAT16 && b == EM_BFLOAT16) || (a == EM_BFLOAT16 && b == EM_FLOAT16))
      return EM_FLOAT32;
    return float_rank(a) >= float_rank(b) ? a : b;
  }
  if (fa) return a;
  if (fb) return b;
  /* both integers */
  if ((a == EM_UINT8 && b == EM_INT8) || (a == EM_INT8 && b == EM_UINT8)) return EM_INT16;
  if (a == EM_UINT8) return b; /* b is a wider or equal signed type */
  if (b == EM_UINT8) return a;
  return em_dtype_size(a) >= em_dtype_size(b) ? a : b;
}

bool em_can_cast(em_dtype from, em_dtype to) {
  if (em_dtype_is_float(from) && !em_dtype_is_float(to)) return false;
  if (from != EM_BOOL && to == EM_BOOL) return false;
  return true;
}

static _Atomic int default_dtype = EM_FLOAT32;

em_dtype em_get_default_dtype(void) { return (em_dtype)atomic_load(&default_dtype); }

em_status em_set_default_dtype(em_dtype dt) {
  if (dt != EM_FLOAT32 && dt != EM_FLOAT64 && dt != EM_FLOAT16 && dt != EM_BFLOAT16)
    return em__set_error(EM_ERR_DTYPE,
                         "set_default_dtype: only floating-point dtypes are supported as the "
                         "default type, got %s",
                         em_dtype_name(dt));
  atomic_store(&default_dtype, dt);
  return EM_OK;
}

em_dtype em_scalar_dtype(em_scalar s) {
  switch (s.kind) {
    case EM_SCALAR_BOOL: return EM_BOOL;
    case EM_SCALAR_INT: return EM_INT64;
    default: return em_get_default_dtype();
  }
}

/* ---- half and bfloat16 ---------------------------------------------------- */

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float em_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return u2f(sign | 0x7f800000u | (man << 13)); /* inf / nan */
  if (exp == 0) {
    if (man == 0) return u2f(sign);
    /* subnormal: value = man * 2^-24 */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t em_float_to_half(float f) {
  uint32_t u = f2u(f);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t a = u & 0x7fffffff;
  if (a >= 0x7f800000u) /* inf or nan */
    return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 | ((a >> 13) & 0x3ff) : 0));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
  if (a < 0x38800000u) {                                 /* below 2^-14: subnormal half */
    /* scale so the half's last mantissa bit lands on float's unit place */
    float v = u2f(a) * 16777216.0f; /* 2^24 */
    uint32_t m = (uint32_t)lrintf(v); /* round to nearest even */
    return (uint16_t)(sign | m);
  }
  uint32_t mant = a & 0x7fffff;
  uint32_t exp = (a >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float em_bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t em_float_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffff) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* ---- devices ---------------------------------------------------------------- */

const char *em_device_str(em_device d, char *buf, size_t size) {
  if (d.type == EM_CPU) snprintf(buf, size, "cpu");
  else if (d.type == EM_CUDA) snprintf(buf, size, "cuda:%d", d.index);
  else snprintf(buf, size, "device%d:%d", d.type, d.index);
  return buf;
}

em_status em_device_parse(const char *s, em_device *out) {
  if (!s) return em__set_error(EM_ERR_INVALID, "device: NULL device string");
  if (strcmp(s, "cpu") == 0) {
    *out = EM_DEVICE_CPU;
    return EM_OK;
  }
  if (strncmp(s, "cuda", 4) == 0) {
    if (s[4] == '\0') {
      *out = EM_DEVICE_CUDA(0);
      return EM_OK;
    }
    if (s[4] == ':') {
      char *end;
      long idx = strtol(s + 5, &end, 10);
      if (end != s + 5 && *end == '\0' && idx >= 0 && idx < 1024) {
        *out = EM_DEVICE_CUDA(idx);
        return EM_OK;
      }
    }
  }
  return em__set_error(EM_ERR_INVALID,
                       "device: expected one of cpu, cuda, cuda:N as the device string, got '%s'",
                       s);
}
