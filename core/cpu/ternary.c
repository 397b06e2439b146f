/* CPU kernels: ternary family. */
#include "core/cpu/kernel_impl.h"

void em__cpu_register_ternary(void) {}
