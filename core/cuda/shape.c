/* CUDA entries of the shape family (signatures: core/cpu/shape.c).
 *
 *   CAT:    em_status (char *out, int64_t outer, int64_t out_row, int n,
 *                      char *const *src, const int64_t *row)
 *     input k ([outer, row[k]] bytes, contiguous) lands at byte
 *     sum(row[0..k)) of each out row: one cudaMemcpy2DAsync per input (a
 *     plain copy for one row); the copies' status is returned.
 *   REPEAT: void (char *out, const char *src, int nd, const int64_t *shape,
 *                 const int64_t *reps, int64_t esize): one kernel.
 * Both only move bytes, so one function serves every dtype. REPEAT
 * returns nothing: a failed launch leaves its error in em_last_error()
 * (and the next synchronising call fails). */
#include "core/cuda/cuda_impl.h"

static em_status cat_cuda(char *out, int64_t outer, int64_t out_row, int n, char *const *src,
                          const int64_t *row) {
  cudaStream_t s;
  if (outer == 0) return EM_OK;
  EM_CHECK(em__cuda_enter(em__cuda_device_of(out), &s));
  int64_t col = 0;
  for (int k = 0; k < n; k++) {
    if (row[k] > 0) {
      /* one row: a plain copy (a 2D copy's pitch is limited, to 2 GiB) */
      cudaError_t err =
          outer == 1 ? cudaMemcpyAsync(out + col, src[k], (size_t)row[k], cudaMemcpyDeviceToDevice, s)
                     : cudaMemcpy2DAsync(out + col, (size_t)out_row, src[k], (size_t)row[k],
                                         (size_t)row[k], (size_t)outer, cudaMemcpyDeviceToDevice, s);
      if (err != cudaSuccess) return em__cuda_error(err, "cat: copy of input %d", k);
    }
    col += row[k] > 0 ? row[k] : 0;
  }
  return EM_OK;
}

static void repeat_cuda(char *out, const char *src, int nd, const int64_t *shape,
                        const int64_t *reps, int64_t esize) {
  cudaStream_t s;
  if (em__cuda_enter(em__cuda_device_of(out), &s)) return;
  em__cuda_check_launch(emcu_repeat(out, src, nd, shape, reps, esize, s), "repeat");
}

void em__cuda_register_shape(void) {
  for (int dt = 0; dt < EM_DTYPE_COUNT; dt++) {
    em__register_kernel(EM_OP_CAT, EM_CUDA, (em_dtype)dt, (void *)cat_cuda);
    em__register_kernel(EM_OP_REPEAT, EM_CUDA, (em_dtype)dt, (void *)repeat_cuda);
  }
}
