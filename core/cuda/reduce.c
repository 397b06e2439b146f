/* C glue of the CUDA reductions (kernels: core/cuda/reduce.cu). The entries
 * have the family's signature (core/cpu/reduce.c):
 *
 *     em_status k(em_tensor *const *out, em_tensor *in, const em_op_attrs *a)
 *
 * Reductions: the input (any strides) is split into kept and reduced dims
 * (a->d[0..nd) names the reduced ones; entries >= in->ndim, from a 0-dim
 * input, are ignored); size-1 dims are dropped; out[0] / out[1] are fresh
 * contiguous tensors over the kept dims. softmax, log_softmax, cumsum and
 * cumprod take a contiguous input of the output dtype and work along
 * a->i[1] as [outer, D, inner]. */
#include "core/cuda/cuda_impl.h"

static em_status run_reduce(emcu_reduce_op op, const char *name, em_tensor *const *out,
                            em_tensor *in, const em_op_attrs *a) {
  emcu_reduce_args r;
  memset(&r, 0, sizeof r);
  bool red[EM_MAX_DIMS] = {0};
  for (int k = 0; k < a->nd; k++)
    if (a->d[k] >= 0 && a->d[k] < in->ndim) red[a->d[k]] = true;
  r.nout = 1;
  r.nr = 1;
  for (int i = 0; i < in->ndim; i++) {
    if (red[i]) {
      r.nr *= in->shape[i];
      if (in->shape[i] == 1) continue;
      r.red_shape[r.nred] = in->shape[i];
      r.red_stride[r.nred++] = in->strides[i];
    } else {
      r.nout *= in->shape[i];
      if (in->shape[i] == 1) continue;
      r.keep_shape[r.nkeep] = in->shape[i];
      r.keep_stride[r.nkeep++] = in->strides[i];
    }
  }
  if (r.nout == 0) return EM_OK;
  r.src = in->numel ? em__data_ptr(in) : NULL;
  r.out0 = out[0] ? em__data_ptr(out[0]) : NULL;
  r.out1 = out[1] ? em__data_ptr(out[1]) : NULL;
  r.p = a->f[0];
  cudaStream_t s;
  EM_CHECK(em__cuda_enter(in->device.index, &s));
  em__cblock *tmp = NULL;
  size_t scratch = emcu_reduce_scratch(op, &r);
  if (scratch) EM_CHECK(em__cuda_tmp_alloc(in->device.index, scratch, &tmp));
  cudaError_t err = emcu_reduce(op, (em_dtype)in->dtype, &r, tmp ? tmp->ptr : NULL, s);
  em__cuda_tmp_free(in->device.index, tmp);
  return em__cuda_check_launch(err, name);
}

static em_status run_scan(emcu_scan_op op, const char *name, em_tensor *const *out, em_tensor *in,
                          const em_op_attrs *a) {
  if (in->numel == 0) return EM_OK;
  int dim = (int)a->i[1];
  int64_t outer = 1, d = 1, inner = 1;
  for (int i = 0; i < in->ndim; i++) {
    if (i < dim) outer *= in->shape[i];
    else if (i == dim) d = in->shape[i];
    else inner *= in->shape[i];
  }
  cudaStream_t s;
  EM_CHECK(em__cuda_enter(in->device.index, &s));
  cudaError_t err = emcu_scan(op, (em_dtype)in->dtype, em__data_ptr(in), em__data_ptr(out[0]), outer,
                              d, inner, s);
  return em__cuda_check_launch(err, name);
}

#define RED_ENTRY(fn, OP, name)                                                      \
  static em_status fn(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) { \
    return run_reduce(OP, name, out, in, a);                                         \
  }
RED_ENTRY(k_sum, EMCU_SUM, "sum")
RED_ENTRY(k_mean, EMCU_MEAN, "mean")
RED_ENTRY(k_prod, EMCU_PROD, "prod")
RED_ENTRY(k_amax, EMCU_AMAX, "amax")
RED_ENTRY(k_amin, EMCU_AMIN, "amin")
RED_ENTRY(k_all, EMCU_ALL, "all")
RED_ENTRY(k_any, EMCU_ANY, "any")
RED_ENTRY(k_cnt, EMCU_COUNT_NONZERO, "count_nonzero")
RED_ENTRY(k_norm, EMCU_NORM, "norm")
RED_ENTRY(k_var, EMCU_VAR, "var")
RED_ENTRY(k_std, EMCU_STD, "std")
RED_ENTRY(k_lse, EMCU_LOGSUMEXP, "logsumexp")
RED_ENTRY(k_argmax, EMCU_ARGMAX, "argmax")
RED_ENTRY(k_argmin, EMCU_ARGMIN, "argmin")

#define SCAN_ENTRY(fn, OP, name)                                                     \
  static em_status fn(em_tensor *const *out, em_tensor *in, const em_op_attrs *a) { \
    return run_scan(OP, name, out, in, a);                                           \
  }
SCAN_ENTRY(k_softmax, EMCU_SOFTMAX, "softmax")
SCAN_ENTRY(k_log_softmax, EMCU_LOG_SOFTMAX, "log_softmax")
SCAN_ENTRY(k_cumsum, EMCU_CUMSUM, "cumsum")
SCAN_ENTRY(k_cumprod, EMCU_CUMPROD, "cumprod")

void em__cuda_register_reduce(void) {
  static const struct {
    em_op op;
    emcu_reduce_op cu;
    void *fn;
  } red[] = {
      {EM_OP_SUM, EMCU_SUM, (void *)k_sum},
      {EM_OP_MEAN, EMCU_MEAN, (void *)k_mean},
      {EM_OP_PROD, EMCU_PROD, (void *)k_prod},
      {EM_OP_AMAX, EMCU_AMAX, (void *)k_amax},
      {EM_OP_AMIN, EMCU_AMIN, (void *)k_amin},
      {EM_OP_ALL, EMCU_ALL, (void *)k_all},
      {EM_OP_ANY, EMCU_ANY, (void *)k_any},
      {EM_OP_COUNT_NONZERO, EMCU_COUNT_NONZERO, (void *)k_cnt},
      {EM_OP_NORM, EMCU_NORM, (void *)k_norm},
      {EM_OP_VAR, EMCU_VAR, (void *)k_var},
      {EM_OP_STD, EMCU_STD, (void *)k_std},
      {EM_OP_LOGSUMEXP, EMCU_LOGSUMEXP, (void *)k_lse},
      {EM_OP_MAX_DIM, EMCU_ARGMAX, (void *)k_argmax},
      {EM_OP_MIN_DIM, EMCU_ARGMIN, (void *)k_argmin},
      {EM_OP_ARGMAX, EMCU_ARGMAX, (void *)k_argmax},
      {EM_OP_ARGMIN, EMCU_ARGMIN, (void *)k_argmin},
  };
  for (size_t k = 0; k < sizeof red / sizeof red[0]; k++)
    for (int dt = 0; dt < EM_DTYPE_COUNT; dt++)
      if (emcu_reduce_supported(red[k].cu, (em_dtype)dt))
        em__register_kernel(red[k].op, EM_CUDA, (em_dtype)dt, red[k].fn);
  static const struct {
    em_op op;
    emcu_scan_op cu;
    void *fn;
  } scan[] = {
      {EM_OP_SOFTMAX, EMCU_SOFTMAX, (void *)k_softmax},
      {EM_OP_LOG_SOFTMAX, EMCU_LOG_SOFTMAX, (void *)k_log_softmax},
      {EM_OP_CUMSUM, EMCU_CUMSUM, (void *)k_cumsum},
      {EM_OP_CUMPROD, EMCU_CUMPROD, (void *)k_cumprod},
  };
  for (size_t k = 0; k < sizeof scan / sizeof scan[0]; k++)
    for (int dt = 0; dt < EM_DTYPE_COUNT; dt++)
      if (emcu_scan_supported(scan[k].cu, (em_dtype)dt))
        em__register_kernel(scan[k].op, EM_CUDA, (em_dtype)dt, scan[k].fn);
}
