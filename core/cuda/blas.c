/* The matmul family on CUDA: the EM_OP_MM entry for float32, float64,
 * float16 and bfloat16 is one cublasGemmStridedBatchedEx call (integer
 * and bool matmuls have no CUDA kernel, as in PyTorch).
 *
 * Contract (em_gemm_fn, core/core_impl.h): c[b] = beta * c[b] + alpha *
 * a[b] @ b[b]; a [batch, n, k] with element strides (sab, sa0, sa1), b
 * [batch, k, m] with (sbb, sb0, sb1), c contiguous [batch, n, m]; k == 0
 * or alpha == 0 means no product (a, b may be NULL); beta == 0: c is not
 * read. The front end calls the entry on its thread pool with row ranges
 * [r0, r1) of batch * n: the call that gets row 0 enqueues the whole
 * product, the others return at once (see core/cuda/cuda_impl.h).
 *
 * Row-major to cuBLAS's column-major: C^T (m x n) = B^T (m x k) A^T (k x n).
 * A row-major [r, c] operand with unit column stride is, in memory, the
 * column-major [c, r] matrix with ld = row stride (op N gives its
 * transpose back); one with unit row stride is the column-major [r, c]
 * matrix (op T). Other layouts are first copied to a dense scratch buffer
 * on the stream (one matrix when the batch stride is 0).
 *
 * Precision: float32 products use CUBLAS_COMPUTE_32F ("highest"),
 * _FAST_TF32 ("high") or _FAST_16BF ("medium")
 * (em_cuda_set_float32_matmul_precision); float16/bfloat16 accumulate in
 * float32, with reduced-precision reductions allowed unless
 * em_cuda_set_allow_reduced_precision_reduction(false).
 *
 * Errors: the front end (core/ops_linalg.c gemm_run) calls the entry once
 * on its own thread; a failure (cuBLAS, the 32-bit size limits, an
 * allocation for a dense copy) comes back through em_gemm_args.status
 * with its message, and the op fails. */
#include <cublas_v2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/cuda/cuda_impl.h"

/* ---- handles: one per device, used under a lock ---------------------------------------- */

static struct {
  pthread_mutex_t mu;
  cublasHandle_t h[EM__CUDA_MAX_DEVICES];
} handles = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *cublas_msg(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    default: return "cuBLAS error";
  }
}

/* The device's handle bound to stream s, with the lock held on success. */
static em_status lock_handle(int device, cudaStream_t s, cublasHandle_t *out) {
  pthread_mutex_lock(&handles.mu);
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  if (!handles.h[device]) st = cublasCreate(&handles.h[device]);
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(handles.h[device], s);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasSetMathMode(handles.h[device],
                           em__allow_reduced_precision_reduction()
                               ? CUBLAS_DEFAULT_MATH
                               : CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  if (st != CUBLAS_STATUS_SUCCESS) {
    pthread_mutex_unlock(&handles.mu);
    return em__set_error(EM_ERR_CUDA, "matmul: cuBLAS setup on cuda:%d failed: %s", device,
                         cublas_msg(st));
  }
  *out = handles.h[device];
  return EM_OK;
}

const char *em__cuda_blas_info(void) {
  static char buf[64];
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  snprintf(buf, sizeof buf, "cuBLAS %d.%d.%d", major, minor, patch);
  return buf;
}

/* ---- the product ------------------------------------------------------------------------- */

/* Layout of the row-major [r, c] operand with strides (s0, s1) as cuBLAS
 * can read it (see the file comment); false when it cannot. */
static bool layout(int64_t r, int64_t c, int64_t s0, int64_t s1, bool *trans, int64_t *ld) {
  if ((c == 1 || s1 == 1) && (r == 1 || s0 >= c)) {
    *trans = false;
    *ld = r == 1 ? c : s0;
    return true;
  }
  if ((r == 1 || s0 == 1) && (c == 1 || s1 >= r)) {
    *trans = true;
    *ld = c == 1 ? r : s1;
    return true;
  }
  return false;
}

/* Copies the [batch, r, c] stack at p (strides sb, s0, s1 elements) into
 * dense scratch on the stream; updates p and the strides. */
static em_status densify(int device, cudaStream_t s, em_dtype dt, int64_t batch, int64_t r,
                         int64_t c, const char **p, int64_t *sb, int64_t *s0, int64_t *s1,
                         em__cblock **hold) {
  if (*sb == 0) batch = 1;
  size_t es = em_dtype_size(dt);
  EM_CHECK(em__cuda_tmp_alloc(device, (size_t)(batch * r * c) * es, hold));
  emcu_iter it;
  memset(&it, 0, sizeof it);
  it.nops = 2;
  it.ndim = 3;
  it.numel = batch * r * c;
  int64_t shape[3] = {c, r, batch}, ostr[3] = {1, c, r * c}, istr[3] = {*s1, *s0, *sb};
  for (int d = 0; d < 3; d++) {
    it.shape[d] = shape[d];
    it.strides[d][0] = ostr[d] * (int64_t)es;
    it.strides[d][1] = istr[d] * (int64_t)es;
  }
  it.data[0] = (*hold)->ptr;
  it.data[1] = (char *)*p;
  emcu_attrs a;
  memset(&a, 0, sizeof a);
  a.i[0] = dt; /* the copy kernel's source dtype */
  EM_CHECK(em__cuda_check_launch(emcu_copy[dt](&it, &a, s), "matmul: staging an operand"));
  *p = (*hold)->ptr;
  *sb = *sb == 0 ? 0 : r * c;
  *s0 = c;
  *s1 = 1;
  return EM_OK;
}

static em_status gemm(const em_gemm_args *g, em_dtype dt, int device) {
  cudaStream_t s;
  EM_CHECK(em__cuda_enter(device, &s));
  const int64_t batch = g->batch, n = g->n, m = g->m, k = g->k;
  if (batch * n * m == 0) return EM_OK;
  if (k == 0 || g->alpha == 0) { /* no product: c = beta * c */
    size_t bytes = (size_t)(batch * n * m) * em_dtype_size(dt);
    if (g->beta == 0) {
      EM_CUDA_CHECK(cudaMemsetAsync(g->c, 0, bytes, s), "matmul");
      return EM_OK;
    }
    if (g->beta != 1)
      EM_CHECK(em__cuda_check_launch(emcu_scale(g->c, batch * n * m, dt, g->beta, s), "matmul"));
    return EM_OK;
  }
  const char *pa = g->a, *pb = g->b;
  int64_t sab = g->sab, sa0 = g->sa0, sa1 = g->sa1, sbb = g->sbb, sb0 = g->sb0, sb1 = g->sb1;
  em__cblock *ha = NULL, *hb = NULL;
  em_status st = EM_OK;
  bool ta = false, tb = false;
  int64_t lda = 1, ldb = 1;
  if (!layout(n, k, sa0, sa1, &ta, &lda)) {
    EM_CHECK_GOTO(densify(device, s, dt, batch, n, k, &pa, &sab, &sa0, &sa1, &ha), st, done);
    layout(n, k, sa0, sa1, &ta, &lda);
  }
  if (!layout(k, m, sb0, sb1, &tb, &ldb)) {
    EM_CHECK_GOTO(densify(device, s, dt, batch, k, m, &pb, &sbb, &sb0, &sb1, &hb), st, done);
    layout(k, m, sb0, sb1, &tb, &ldb);
  }
  if (n > INT32_MAX || m > INT32_MAX || k > INT32_MAX || batch > INT32_MAX || lda > INT32_MAX ||
      ldb > INT32_MAX) {
    st = em__set_error(EM_ERR_INVALID, "matmul: sizes beyond cuBLAS's 32-bit limits");
    goto done;
  }
  cudaDataType_t ty;
  cublasComputeType_t ct;
  float af = (float)g->alpha, bf = (float)g->beta;
  const void *alpha = &af, *beta = &bf;
  switch (dt) {
    case EM_FLOAT32:
      ty = CUDA_R_32F;
      ct = em__matmul_precision() == EM__PREC_HIGH     ? CUBLAS_COMPUTE_32F_FAST_TF32
           : em__matmul_precision() == EM__PREC_MEDIUM ? CUBLAS_COMPUTE_32F_FAST_16BF
                                            : CUBLAS_COMPUTE_32F;
      break;
    case EM_FLOAT64:
      ty = CUDA_R_64F;
      ct = CUBLAS_COMPUTE_64F;
      alpha = &g->alpha;
      beta = &g->beta;
      break;
    case EM_FLOAT16:
      ty = CUDA_R_16F;
      ct = CUBLAS_COMPUTE_32F;
      break;
    default: /* BFLOAT16 */
      ty = CUDA_R_16BF;
      ct = CUBLAS_COMPUTE_32F;
      break;
  }
  cublasHandle_t h = NULL;
  EM_CHECK_GOTO(lock_handle(device, s, &h), st, done);
  /* C^T (m x n) = op(B) (m x k) op(A) (k x n) */
  cublasStatus_t cs = cublasGemmStridedBatchedEx(
      h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)m, (int)n, (int)k,
      alpha, pb, ty, (int)ldb, (long long)sbb, pa, ty, (int)lda, (long long)sab, beta, g->c, ty,
      (int)m, (long long)(n * m), (int)batch, ct, CUBLAS_GEMM_DEFAULT);
  pthread_mutex_unlock(&handles.mu);
  if (cs != CUBLAS_STATUS_SUCCESS)
    st = em__set_error(EM_ERR_CUDA, "matmul: cuBLAS GEMM (%lld x %lld x %lld, batch %lld) failed: %s",
                       (long long)n, (long long)m, (long long)k, (long long)batch, cublas_msg(cs));
done:
  em__cuda_tmp_free(device, ha);
  em__cuda_tmp_free(device, hb);
  return st;
}

#define DEF_MM(DT)                                                           \
  static void mm_##DT(const em_gemm_args *g, int64_t r0, int64_t r1) {      \
    if (r0 != 0) return; /* the call with row 0 does the whole product */ \
    em_status st = gemm(g, EM_##DT, em__cuda_device_of(g->c));             \
    if (g->status) *g->status = st;                                         \
  }
DEF_MM(FLOAT32)
DEF_MM(FLOAT64)
DEF_MM(FLOAT16)
DEF_MM(BFLOAT16)

void em__cuda_register_blas(void) {
  em__register_kernel(EM_OP_MM, EM_CUDA, EM_FLOAT32, (void *)mm_FLOAT32);
  em__register_kernel(EM_OP_MM, EM_CUDA, EM_FLOAT64, (void *)mm_FLOAT64);
  em__register_kernel(EM_OP_MM, EM_CUDA, EM_FLOAT16, (void *)mm_FLOAT16);
  em__register_kernel(EM_OP_MM, EM_CUDA, EM_BFLOAT16, (void *)mm_BFLOAT16);
}
