/* Internals shared by the nn sources (not part of the public API). */
#ifndef EMBER_NN_NN_IMPL_H
#define EMBER_NN_NN_IMPL_H

#include "core/core_impl.h"

em_tensor *em__convert(em_tensor *t, em_dtype dt); /* core/ops_copy.c */

/* The dtype the CPU layers compute in: float64 stays, float32, float16
 * and bfloat16 compute in float32. */
static inline em_dtype em__nn_compute_dtype(em_dtype dt) {
  return dt == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32;
}

/* t as a contiguous tensor of dtype dt: t itself (retained) when it
 * already is one, else a converted copy. Never records. */
static inline em_tensor *em__nn_as_compute(em_tensor *t, em_dtype dt) {
  if (t->dtype == dt && em_tensor_is_contiguous(t)) return em_tensor_retain(t);
  return em__convert(t, dt);
}

/* printf into a new malloc'd string (NULL when out of memory): module
 * reprs (nn/module.c). */
char *em__nn_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

#endif
