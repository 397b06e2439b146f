/* CPU kernels: binary family. */
#include "core/cpu/kernel_impl.h"

void em__cpu_register_binary(void) {}
