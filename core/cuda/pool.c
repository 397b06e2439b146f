/* C glue of the GPU pooling kernels (core/cuda/pool.cu); contract in
 * core/cuda/cuda_nn.h. float32 and float64 compute natively, float16 and
 * bfloat16 through float32 (as nn/pool.c on the CPU). */
#include "core/cuda/cuda_impl.h"
#include "core/cuda/cuda_nn.h"


static emcu_pool geom_of(const em_cuda_pool_geom *g) {
  emcu_pool p = {(int)g->kind, g->planes, g->H, g->W, g->OH, g->OW, g->kh, g->kw, g->sh,
                 g->sw, g->ph, g->pw, g->dh, g->dw, g->count_include_pad};
  return p;
}

em_status em__cuda_pool2d_forward(const em_cuda_pool_geom *g, em_tensor *x, em_tensor **y,
                                  em_tensor **idx) {
  if (x->device.type != EM_CUDA)
    return em__set_error(EM_ERR_DEVICE, "pool2d: expected a CUDA tensor");
  if (!em_dtype_is_float((em_dtype)x->dtype))
    return em__set_error(EM_ERR_DTYPE, "pool2d: expected a floating-point tensor");
  em_dtype dt = (em_dtype)x->dtype, cdt = em__compute_dtype(dt);
  em_tensor *xc = NULL, *out = NULL, *ix = NULL;
  em_status st = EM_OK;
  EM_CHECK_PTR_GOTO(xc = em__as_compute(x, cdt), st, done);
  EM_CHECK_PTR_GOTO(out = em_tensor_empty_on(EM_DIMS(g->planes, g->OH, g->OW), cdt, x->device), st,
                    done);
  if (idx && g->kind == EM_CUDA_POOL_MAX)
    EM_CHECK_PTR_GOTO(ix = em_tensor_empty_on(EM_DIMS(g->planes, g->OH, g->OW), EM_INT64, x->device),
                      st, done);
  if (out->numel) {
    emcu_pool p = geom_of(g);
    cudaStream_t s;
    EM_CHECK_GOTO(em__cuda_enter(x->device.index, &s), st, done);
    EM_CHECK_GOTO(em__cuda_check_launch(emcu_pool2d_forward(&p, cdt == EM_FLOAT64, em__data_ptr(xc),
                                                            em__data_ptr(out),
                                                            ix ? (int64_t *)em__data_ptr(ix) : NULL, s),
                                        "pool2d"),
                  st, done);
  }
  if (cdt != dt) EM_CHECK_GOTO(em__convert_owned(&out, dt), st, done);
done:
  em_tensor_release(xc);
  if (st) {
    em_tensor_release(out);
    em_tensor_release(ix);
    return st;
  }
  *y = out;
  if (idx) *idx = ix;
  return EM_OK;
}

em_status em__cuda_pool2d_backward(const em_cuda_pool_geom *g, em_tensor *gy, em_tensor *idx,
                                   em_tensor **gx) {
  if (gy->device.type != EM_CUDA)
    return em__set_error(EM_ERR_DEVICE, "pool2d backward: expected a CUDA tensor");
  if (g->kind == EM_CUDA_POOL_MAX && (!idx || idx->dtype != EM_INT64 || !em_tensor_is_contiguous(idx)))
    return em__set_error(EM_ERR_INVALID, "pool2d backward: max pooling needs its int64 indices");
  em_dtype dt = (em_dtype)gy->dtype, cdt = em__compute_dtype(dt);
  em_tensor *gc = NULL, *out = NULL;
  em_status st = EM_OK;
  EM_CHECK_PTR_GOTO(gc = em__as_compute(gy, cdt), st, done);
  EM_CHECK_PTR_GOTO(out = em_tensor_empty_on(EM_DIMS(g->planes, g->H, g->W), cdt, gy->device), st,
                    done);
  if (out->numel) {
    emcu_pool p = geom_of(g);
    cudaStream_t s;
    EM_CHECK_GOTO(em__cuda_enter(gy->device.index, &s), st, done);
    EM_CHECK_GOTO(em__cuda_check_launch(
                      emcu_pool2d_backward(&p, cdt == EM_FLOAT64, em__data_ptr(gc),
                                           idx ? (const int64_t *)em__data_ptr(idx) : NULL,
                                           em__data_ptr(out), s),
                      "pool2d backward"),
                  st, done);
  }
  if (cdt != dt) EM_CHECK_GOTO(em__convert_owned(&out, dt), st, done);
done:
  em_tensor_release(gc);
  if (st) {
    em_tensor_release(out);
    return st;
  }
  *gx = out;
  return EM_OK;
}
