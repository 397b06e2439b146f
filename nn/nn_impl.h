/* Internals shared by the nn sources (not part of the public API). */
#ifndef EMBER_NN_NN_IMPL_H
#define EMBER_NN_NN_IMPL_H

#include "core/core_impl.h"

/* printf into a new malloc'd string (NULL when out of memory): module
 * reprs (nn/module.c). */
char *em__nn_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

#endif
