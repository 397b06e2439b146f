/* The kernel table: em__kernels[op][device type][dtype], filled once by the
 * CPU (and CUDA) registration functions before the first lookup. */
#include <ctype.h>
#include <pthread.h>

#include "core/core_impl.h"

static void *kernels[EM_OP_COUNT][EM_DEVICE_TYPE_COUNT][EM_DTYPE_COUNT];

#define EM__OP_NAME_LOWER(name) #name,
#define EM__OP_NAME_UPPER(NAME) #NAME,
static const char *const op_names_raw[EM_OP_COUNT] = {
    EM_OPS_COPY(EM__OP_NAME_UPPER) EM_OPS_VIEW(EM__OP_NAME_UPPER)
    EM_OPS_SHAPE(EM__OP_NAME_UPPER) EM_UNARY_OPS(EM__OP_NAME_LOWER)
    EM_OPS_UNARY_EXTRA(EM__OP_NAME_UPPER) EM_BINARY_OPS(EM__OP_NAME_LOWER)
    EM_OPS_BINARY_EXTRA(EM__OP_NAME_UPPER) EM_OPS_TERNARY(EM__OP_NAME_UPPER)
    EM_OPS_REDUCE(EM__OP_NAME_UPPER) EM_OPS_LINALG(EM__OP_NAME_UPPER)
    EM_OPS_INDEX(EM__OP_NAME_UPPER) EM_OPS_RANDOM(EM__OP_NAME_UPPER)};
static char op_names[EM_OP_COUNT][32];

#ifdef EMBER_CUDA
void em__cuda_register_kernels(void);
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_tables(void) {
  for (int i = 0; i < EM_OP_COUNT; i++) {
    size_t j = 0;
    for (; op_names_raw[i][j] && j < sizeof op_names[i] - 1; j++)
      op_names[i][j] = (char)tolower((unsigned char)op_names_raw[i][j]);
    op_names[i][j] = '\0';
  }
  em__cpu_register_kernels();
#ifdef EMBER_CUDA
  em__cuda_register_kernels();
#endif
}

const char *em__op_name(em_op op) {
  pthread_once(&once, init_tables);
  return (op >= 0 && op < EM_OP_COUNT) ? op_names[op] : "?";
}

void em__register_kernel(em_op op, em_device_type dev, em_dtype dt, void *fn) {
  assert(op >= 0 && op < EM_OP_COUNT && dev < EM_DEVICE_TYPE_COUNT && em_dtype_is_valid(dt));
  kernels[op][dev][dt] = fn;
}

void *em__kernel(em_op op, em_device_type dev, em_dtype dt) {
  pthread_once(&once, init_tables);
  void *fn = (op >= 0 && op < EM_OP_COUNT && dev < EM_DEVICE_TYPE_COUNT && em_dtype_is_valid(dt))
                 ? kernels[op][dev][dt]
                 : NULL;
  if (!fn)
    em__set_error(dev == EM_CPU ? EM_ERR_DTYPE : EM_ERR_NOTIMPL,
                  "%s: no kernel for %s/%s", em__op_name(op), dev == EM_CPU ? "cpu" : "cuda",
                  em_dtype_name(dt));
  return fn;
}
