/* The bridge from ember's elementwise iteration (core/iter.c) to the CUDA
 * kernels (core/cuda/elementwise.cu): an em_iter whose operands live on a
 * CUDA device becomes one kernel launch on the device's current stream.
 * Also: CPU 0-dim operands joining a CUDA op, and the registration of the
 * elementwise launcher tables. */
#include "core/cuda/cuda_impl.h"

_Static_assert(EMCU_MAX_DIMS == EM_MAX_DIMS, "emcu_iter mirrors em_iter");
_Static_assert(EMCU_MAX_OPERANDS == EM_ITER_MAX_OPERANDS, "emcu_iter mirrors em_iter");

em_status em__cuda_iter_run(int device, void *fn, const em_iter *it, const em_op_attrs *a) {
  if (it->numel == 0) return EM_OK;
  emcu_iter ci;
  ci.nops = it->nops;
  ci.ndim = it->ndim;
  ci.numel = it->numel;
  memcpy(ci.shape, it->shape, sizeof ci.shape);
  memcpy(ci.strides, it->strides, sizeof ci.strides);
  memcpy(ci.data, it->data, sizeof ci.data);
  emcu_attrs ca;
  memset(&ca, 0, sizeof ca);
  if (a) {
    memcpy(ca.f, a->f, sizeof ca.f);
    memcpy(ca.i, a->i, sizeof ca.i);
    ca.s = a->s;
  }
  cudaStream_t s;
  EM_CHECK(em__cuda_enter(device, &s));
  cudaError_t err = ((emcu_elem_fn)fn)(&ci, &ca, s);
  return em__cuda_check_launch(err, "elementwise kernel");
}

bool em__cuda_mixed_scalars(int n, em_tensor *const *ts, em_device *dev) {
  int cuda = -1;
  bool scalar = false;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (ts[i]->device.type == EM_CUDA) {
      if (cuda < 0) cuda = i;
    } else if (ts[i]->device.type == EM_CPU && ts[i]->ndim == 0) {
      scalar = true;
    }
  }
  if (cuda < 0 || !scalar) return false;
  *dev = ts[cuda]->device;
  return true;
}

em_status em__cuda_scalars_to_device(int n, em_tensor *const *in, em_device dev, em_tensor **use,
                                     em_tensor **tmp) {
  for (int i = 0; i < n; i++) {
    use[i] = in[i];
    tmp[i] = NULL;
    if (in[i] && in[i]->device.type == EM_CPU && in[i]->ndim == 0) {
      tmp[i] = em__cuda_move(in[i], dev, false); /* the op records in[i] itself */
      if (!tmp[i]) return em_last_status(); /* the caller releases tmp[0..n) */
      tmp[i]->is_wrapped_number = in[i]->is_wrapped_number;
      use[i] = tmp[i];
    }
  }
  return EM_OK;
}

/* ---- registration ------------------------------------------------------------------------------ */

void em__cuda_register_elementwise(void) {
#define REG(OP, table)                                          \
  for (int dt = 0; dt < EM_DTYPE_COUNT; dt++)                    \
    if (table[dt]) em__register_kernel(EM_OP_##OP, EM_CUDA, (em_dtype)dt, (void *)table[dt]);
  EMCU_ELEMENTWISE_TABLES(REG)
#undef REG
}
