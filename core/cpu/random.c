/* CPU kernels: random family. */
#include "core/cpu/kernel_impl.h"

void em__cpu_register_random(void) {}
