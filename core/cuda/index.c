/* CUDA entries of the index family's row kernels (signatures and geometry:
 * core/cpu/index.c), kernels in core/cuda/index.cu:
 *
 *   INDEX, INDEX_SELECT: void (char *out, const char *src, const int64_t *off,
 *                              int64_t nb, const em_op_attrs *g)
 *   INDEX_PUT, INDEX_ADD: void (char *dst, const char *vals, const int64_t *off,
 *                               int64_t nb, const em_op_attrs *g)
 *
 * off must be DEVICE memory here (nb int64 element offsets). The along-dim
 * ops (gather, scatter, scatter_add, masked_fill) are elementwise kernels
 * (core/cuda/elementwise.cu) reached through em__iter_run.
 *
 * Note: core/ops_index.c still refuses CUDA tensors (it validates and
 * wraps index values on the host and builds off on the CPU); these entries
 * are ready for when it copies indices to the host for checking and passes
 * device offsets. */
#include "core/cuda/cuda_impl.h"

static void rows_of(emcu_rows *r, const int64_t *off, int64_t nb, const em_op_attrs *g) {
  memset(r, 0, sizeof *r);
  int np = (int)g->i[0], nq = g->nd - np;
  r->np = np;
  r->nq = nq;
  r->nP = r->nQ = 1;
  for (int k = 0; k < np; k++) {
    r->psize[k] = g->d[k];
    r->pstride[k] = g->d2[k];
    r->nP *= g->d[k];
  }
  for (int k = 0; k < nq; k++) {
    r->qsize[k] = g->d[np + k];
    r->qstride[k] = g->d2[np + k];
    r->nQ *= g->d[np + k];
  }
  r->nb = nb;
  r->off = off;
}

#define DEF_GATHER(BYTES)                                                                  \
  static void rows_gather_##BYTES(char *out, const char *src, const int64_t *off, int64_t nb, \
                                  const em_op_attrs *g) {                                   \
    emcu_rows r;                                                                            \
    rows_of(&r, off, nb, g);                                                                \
    cudaStream_t s;                                                                         \
    if (r.nP * r.nQ * nb == 0 || em__cuda_enter(em__cuda_device_of(out), &s)) return;       \
    em__cuda_check_launch(emcu_rows_gather(out, src, &r, BYTES, s), "index_select");       \
  }
DEF_GATHER(1)
DEF_GATHER(2)
DEF_GATHER(4)
DEF_GATHER(8)

#define DTYPES(X) \
  X(FLOAT32) X(FLOAT64) X(FLOAT16) X(BFLOAT16) X(INT8) X(INT16) X(INT32) X(INT64) X(UINT8) X(BOOL)

#define DEF_SCATTER(DT)                                                                        \
  static void rows_scatter_##DT(char *dst, const char *vals, const int64_t *off, int64_t nb,    \
                                const em_op_attrs *g) {                                        \
    emcu_rows r;                                                                               \
    rows_of(&r, off, nb, g);                                                                   \
    cudaStream_t s;                                                                            \
    if (r.nP * r.nQ * nb == 0 || em__cuda_enter(em__cuda_device_of(dst), &s)) return;          \
    em__cuda_check_launch(emcu_rows_scatter(EM_##DT, dst, vals, &r, g->i[1] != 0, g->i[2] != 0, \
                                            g->s, s),                                          \
                          "index_put");                                                        \
  }
DTYPES(DEF_SCATTER)

void em__cuda_register_index(void) {
  static void *const gather_by_size[9] = {[1] = (void *)rows_gather_1, [2] = (void *)rows_gather_2,
                                          [4] = (void *)rows_gather_4, [8] = (void *)rows_gather_8};
#define REG(DT)                                                                              \
  em__register_kernel(EM_OP_INDEX, EM_CUDA, EM_##DT, gather_by_size[em_dtype_size(EM_##DT)]); \
  em__register_kernel(EM_OP_INDEX_SELECT, EM_CUDA, EM_##DT,                                  \
                      gather_by_size[em_dtype_size(EM_##DT)]);                               \
  em__register_kernel(EM_OP_INDEX_PUT, EM_CUDA, EM_##DT, (void *)rows_scatter_##DT);         \
  if (emcu_rows_scatter_supported(EM_##DT, true))                                            \
    em__register_kernel(EM_OP_INDEX_ADD, EM_CUDA, EM_##DT, (void *)rows_scatter_##DT);
  DTYPES(REG)
#undef REG
}
