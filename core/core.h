/* ember core — the tensor library everything else stands on.
 *
 * Layout: core/status.h (errors), core/dtype.h (dtypes, devices, scalars,
 * promotion), core/tensor.h (storage, tensors, creation, rng, threads),
 * core/ops.h (every tensor operation).
 *
 * A worked example:
 *
 *     #include "core/core.h"
 *
 *     em_tensor *x = em_tensor_randn(EM_DIMS(64, 784), EM_FLOAT32, NULL);
 *     em_tensor *w = em_tensor_randn(EM_DIMS(784, 10), EM_FLOAT32, NULL);
 *     em_tensor *y = em_tensor_matmul(x, w);            // [64, 10]
 *     em_tensor *p = em_tensor_softmax(y, -1, EM_DTYPE_UNDEFINED);
 *     if (!p) fprintf(stderr, "%s\n", em_last_error());
 *     em_tensor_print(p, stdout);
 *     em_tensor_release(p); em_tensor_release(y);
 *     em_tensor_release(w); em_tensor_release(x);
 */
#ifndef EMBER_CORE_H
#define EMBER_CORE_H

#include "core/status.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "core/ops.h"

#endif
