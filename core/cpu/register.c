/* Every CPU kernel family registers its kernels here, once, before the
 * first lookup (strong references, so static linking keeps each family). */
#include "core/core_impl.h"

#define FAMILIES(X) \
  X(copy) X(unary) X(binary) X(ternary) X(reduce) X(linalg) X(index) X(shape) X(random)

#define DECL(f) void em__cpu_register_##f(void);
FAMILIES(DECL)
#undef DECL

void em__cpu_register_kernels(void) {
#define CALL(f) em__cpu_register_##f();
  FAMILIES(CALL)
#undef CALL
}
