/* CPU kernels: shape family. */
#include "core/cpu/kernel_impl.h"

void em__cpu_register_shape(void) {}
