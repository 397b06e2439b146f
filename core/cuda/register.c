/* CUDA kernels into the dispatch table, and the hooks core calls into
 * this backend. core/dispatch.c calls em__cuda_register_kernels() once,
 * after the CPU kernels; referencing it also links this file (and so the
 * load-time hook installation below) into every program using ember_core. */
#include "core/cuda/cuda_impl.h"

void em__cuda_register_kernels(void); /* core/dispatch.c */
void em__cuda_register_kernels(void) {
  em__cuda_register_elementwise();
  em__cuda_register_reduce();
  em__cuda_register_shape();
  em__cuda_register_index();
  em__cuda_register_blas();
}

/* Core's hooks (defined in core/ops_copy.c, core/blas.c, core/tensor.c). */
extern em_tensor *(*em__to_device_hook)(em_tensor *t, em_device dev);
extern const char *(*em__cuda_info_hook)(void);
extern em_allocator *em__device_allocators[EM_DEVICE_TYPE_COUNT];
em_tensor *em__cuda_to_device(em_tensor *t, em_device dev); /* runtime.c */

/* Installed at load time: they only store pointers (no CUDA call happens
 * before a CUDA tensor is made, so programs that never use the GPU never
 * initialise the driver, and forked workers stay safe). */
__attribute__((constructor)) static void install_hooks(void) {
  em__to_device_hook = em__cuda_to_device;
  em__cuda_info_hook = em__cuda_config_info;
  em__device_allocators[EM_CUDA] = em_cuda_allocator();
}
