/* The float32 matmul precision and the reduced-precision-reduction switch
 * (core/cuda/ember_cuda.h). Kept in every build, so that code setting them
 * runs on a CPU-only build too; the GPU matmul (core/cuda/blas.c) and
 * convolution (core/cuda/cudnn.c) read them. The precision starts from
 * env EMBER_FLOAT32_MATMUL_PRECISION at first use ("highest" when unset
 * or invalid). */
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#include "core/core_impl.h"
#include "core/cuda/ember_cuda.h"

static const char *const names[] = {"highest", "high", "medium"}; /* EM__PREC_* */
static _Atomic int precision = -1; /* -1: read the environment first */
static _Atomic bool allow_reduced = true;

static int parse(const char *s) {
  for (int i = 0; i < 3; i++)
    if (s && !strcasecmp(s, names[i])) return i;
  return -1;
}

int em__matmul_precision(void) {
  int p = atomic_load(&precision);
  if (p < 0) {
    int e = parse(getenv("EMBER_FLOAT32_MATMUL_PRECISION"));
    int expected = -1;
    atomic_compare_exchange_strong(&precision, &expected, e < 0 ? EM__PREC_HIGHEST : e);
    p = atomic_load(&precision);
  }
  return p;
}

bool em__allow_reduced_precision_reduction(void) { return atomic_load(&allow_reduced); }

em_status em_cuda_set_float32_matmul_precision(const char *s) {
  int p = parse(s);
  if (p < 0)
    return em__set_error(EM_ERR_INVALID,
                         "set_float32_matmul_precision: expected \"highest\", \"high\" or "
                         "\"medium\", got \"%s\"",
                         s ? s : "(null)");
  atomic_store(&precision, p);
  return EM_OK;
}

const char *em_cuda_get_float32_matmul_precision(void) { return names[em__matmul_precision()]; }

void em_cuda_set_allow_reduced_precision_reduction(bool allow) { atomic_store(&allow_reduced, allow); }
