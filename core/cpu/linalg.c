/* CPU kernels: linalg family. */
#include "core/cpu/kernel_impl.h"

void em__cpu_register_linalg(void) {}
