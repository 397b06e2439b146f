/* Linear algebra: matmul, mm, bmm, mv, dot, outer, addmm, baddbmm.
 *
 * Every op reduces to one batched product out[b] = beta * out[b] + alpha *
 * a[b] @ b[b] (gemm_run) over operands given as (data, strides): mv sees its
 * vector as a [k, 1] matrix, dot as [1, k] @ [k, 1].
 *
 * float32/float64 on the CPU go through BLAS (em__sgemm / em__dgemm). An
 * operand whose strides are row-major or column-major with some leading
 * dimension (transposed, sliced, an expanded batch) goes to BLAS as it is,
 * with a transpose flag; only a layout BLAS cannot express (two non-unit
 * strides, a stride-0 row) is copied to contiguous memory first, one matrix
 * when the batch stride is 0. Batches run one GEMM after another on the
 * calling thread (each GEMM uses BLAS's threads; never BLAS inside
 * em__parallel_for); a batch sharing one right-hand matrix whose left-hand
 * rows are evenly spaced folds into a single taller GEMM.
 *
 * The other dtypes run the kernels of core/cpu/linalg.c on em__parallel_for
 * over output rows (b copied first when its rows are not contiguous):
 * float16/bfloat16 accumulate in float, integers wrap (alpha and beta
 * truncate to integers, as PyTorch), bool is refused as by PyTorch's CPU mm
 * family (outer accepts it: logical and). k == 0 or alpha == 0 computes no
 * product: the result is beta * input (zeros without an input), and
 * beta == 0 never reads the input, so NaNs there do not propagate.
 *
 * The mm family does not promote: operands must share a dtype.
 *
 * Autograd records (inputs exactly as the caller passed them):
 *   MM       (a [n,k], b [k,m]) -> [n,m]                          no attrs
 *   BMM      (a [B,n,k], b [B,k,m]) -> [B,n,m]                    no attrs
 *   MV       (a [n,k], v [k]) -> [n]                              no attrs
 *   DOT      (a [k], b [k]) -> 0-dim                              no attrs
 *   ADDMM    (input, m1 [n,k], m2 [k,m]) -> [n,m]; input broadcasts to
 *            [n,m]. f[0] = beta, f[1] = alpha (as passed).
 *            Backward: d input = beta * g summed to input's shape (zero,
 *            not NaN-propagating, when beta == 0); d m1 = alpha * g @ m2^T;
 *            d m2 = alpha * m1^T @ g.
 *   BADDBMM  (input, b1 [B,n,k], b2 [B,k,m]) -> [B,n,m]; input broadcasts
 *            to [B,n,m]. f[0] = beta, f[1] = alpha; backward as ADDMM
 *            with bmm.
 * matmul records nothing itself: it is built from views (unsqueeze,
 * reshape, expand, view, squeeze_dim) and dot / mv / mm / bmm, which
 * record. outer is to_dtype (promotion) + unsqueeze + MM with k = 1.
 */
#include <math.h>

#include "core/core_impl.h"

em_status em__copy_into(em_tensor *dst, em_tensor *src); /* core/ops_copy.c */

/* ---- the batched product ------------------------------------------------------------- */

/* A [batch, rows, cols] matrix stack inside t's storage: element (b, i, j)
 * is at offset off + b * sb + i * s0 + j * s1 (elements). */
typedef struct operand {
  em_tensor *t;
  int64_t off, sb, s0, s1;
} operand;

static operand mat_of(em_tensor *t) { /* t 2-D */
  return (operand){t, t->offset, 0, t->strides[0], t->strides[1]};
}
static operand bmat_of(em_tensor *t) { /* t 3-D */
  return (operand){t, t->offset, t->strides[0], t->strides[1], t->strides[2]};
}
static const char *operand_data(const operand *o) {
  return (const char *)o->t->storage->data + o->off * (int64_t)em_dtype_size((em_dtype)o->t->dtype);
}

/* Can BLAS read the [r, c] matrix with strides (s0, s1) (r, c >= 1)? Row
 * major with ld = s0, or column major (BLAS transpose) with ld = s1; the
 * stride of a size-1 dim does not matter. */
static bool blas_layout(int64_t r, int64_t c, int64_t s0, int64_t s1, bool *trans, int64_t *ld) {
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

/* Replaces o by a contiguous copy of its [batch, rows, cols] stack (one
 * matrix when the batch stride is 0). *hold receives the copy. */
static em_status densify(operand *o, em_dtype dt, int64_t batch, int64_t rows, int64_t cols,
                         em_tensor **hold) {
  bool one = batch == 1 || o->sb == 0;
  int64_t shape[3] = {batch, rows, cols}, strides[3] = {o->sb, o->s0, o->s1};
  em_tensor *v = one ? em__tensor_view_of(o->t, 2, shape + 1, strides + 1, o->off)
                     : em__tensor_view_of(o->t, 3, shape, strides, o->off);
  if (!v) return em_last_status();
  em_tensor *c = em__convert(v, dt);
  em_tensor_release(v);
  if (!c) return em_last_status();
  *hold = c;
  *o = (operand){c, c->offset, one ? 0 : rows * cols, cols, 1};
  return EM_OK;
}

static em_status blas_run(em_tensor *out, int64_t batch, int64_t n, int64_t m, int64_t k, operand a,
                          operand b, double alpha, double beta) {
  em_dtype dt = (em_dtype)out->dtype;
  em_tensor *ha = NULL, *hb = NULL;
  em_status st = EM_OK;
  bool ta = false, tb = false;
  int64_t lda = 1, ldb = 1;
  if (!blas_layout(n, k, a.s0, a.s1, &ta, &lda)) {
    EM_CHECK_GOTO(densify(&a, dt, batch, n, k, &ha), st, done);
    blas_layout(n, k, a.s0, a.s1, &ta, &lda);
  }
  if (!blas_layout(k, m, b.s0, b.s1, &tb, &ldb)) {
    EM_CHECK_GOTO(densify(&b, dt, batch, k, m, &hb), st, done);
    blas_layout(k, m, b.s0, b.s1, &tb, &ldb);
  }
  int64_t rows = n;
  if (batch > 1 && b.sb == 0 && !ta && a.sb == n * lda) { /* one taller GEMM */
    rows = batch * n;
    batch = 1;
  }
  const int64_t es = (int64_t)em_dtype_size(dt);
  const char *pa = operand_data(&a), *pb = operand_data(&b);
  char *pc = em__data_ptr(out);
  for (int64_t i = 0; i < batch; i++) {
    const char *ai = pa + i * a.sb * es, *bi = pb + i * b.sb * es;
    char *ci = pc + i * n * m * es;
    if (dt == EM_FLOAT32)
      em__sgemm(ta, tb, rows, m, k, (float)alpha, (const float *)ai, lda, (const float *)bi, ldb,
                (float)beta, (float *)ci, m);
    else
      em__dgemm(ta, tb, rows, m, k, alpha, (const double *)ai, lda, (const double *)bi, ldb, beta,
                (double *)ci, m);
  }
done:
  em_tensor_release(ha);
  em_tensor_release(hb);
  return st;
}

typedef struct rows_job {
  em_gemm_fn fn;
  em_gemm_args g;
} rows_job;

static void run_rows(void *ctx, int64_t r0, int64_t r1) {
  rows_job *j = ctx;
  j->fn(&j->g, r0, r1);
}

/* Alpha and beta as the kernels will use them: integer dtypes truncate. */
static double effective(em_dtype dt, double x) {
  if (em_dtype_is_float(dt) || dt == EM_BOOL) return x;
  if (x != x) return 0;
  if (x >= 9.2233720368547758e18) return 9.2233720368547758e18;
  if (x <= -9.2233720368547758e18) return -9.2233720368547758e18;
  return trunc(x);
}

/* out (fresh, contiguous [batch, n, m], holding the input when beta != 0)
 * = beta * out + alpha * a @ b. alpha and beta already effective. */
static em_status gemm_run(em_tensor *out, int64_t batch, int64_t n, int64_t m, int64_t k, operand a,
                          operand b, double alpha, double beta) {
  if (out->numel == 0) return EM_OK;
  em_dtype dt = (em_dtype)out->dtype;
  if (k == 0 || alpha == 0) k = 0, alpha = 0;
  if (out->device.type == EM_CPU && (dt == EM_FLOAT32 || dt == EM_FLOAT64) && k > 0)
    return blas_run(out, batch, n, m, k, a, b, alpha, beta);
  rows_job j;
  j.fn = (em_gemm_fn)em__kernel(EM_OP_MM, (em_device_type)out->device.type, dt);
  if (!j.fn) return em_last_status();
  /* the kernels read b's rows contiguously */
  em_tensor *hold = NULL;
  if (m == 1) b.s1 = 1;
  if (k > 0 && b.s1 != 1) EM_CHECK(densify(&b, dt, batch, k, m, &hold));
  // clang-format off
  j.g = (em_gemm_args){.batch = batch, .n = n, .m = m, .k = k,
                       .a = k ? operand_data(&a) : NULL, .b = k ? operand_data(&b) : NULL,
                       .c = em__data_ptr(out),
                       .sab = a.sb, .sa0 = a.s0, .sa1 = a.s1,
                       .sbb = b.sb, .sb0 = b.s0, .sb1 = b.s1,
                       .alpha = alpha, .beta = beta};
  // clang-format on
  if (out->device.type != EM_CPU) {
    /* a device GEMM is one library call, made here so its error is ours */
    em_status st = EM_OK;
    j.g.status = &st;
    j.fn(&j.g, 0, batch * n);
    em_tensor_release(hold);
    return st;
  }
  /* a row costs m * k multiply-adds: aim for >= 64K per task */
  double cost = (double)m * (double)(k + 1);
  int64_t grain = cost >= 65536 ? 1 : (int64_t)(65536 / cost);
  em__parallel_for(batch * n, grain, run_rows, &j);
  em_tensor_release(hold);
  return EM_OK;
}

/* ---- validation ----------------------------------------------------------------------------- */

static bool null_args(const char *op, int n, em_tensor *const *ts) {
  for (int i = 0; i < n; i++)
    if (!ts[i]) {
      em__set_error(EM_ERR_INVALID, "%s: NULL tensor argument", op);
      return true;
    }
  return false;
}

/* The mm family: same dtype (no promotion), not bool, one device. */
static bool bad_dtypes(const char *op, em_tensor *a, em_tensor *b) {
  if (a->dtype != b->dtype) {
    em__set_error(EM_ERR_DTYPE, "%s: expected scalar type %s but found %s", op,
                  em__torch_dtype_name(a->dtype),
                  em__torch_dtype_name(b->dtype));
    return true;
  }
  if (a->dtype == EM_BOOL) {
    em__set_error(EM_ERR_DTYPE, "%s: \"%s\" not implemented for 'Bool'", op, op);
    return true;
  }
  em_tensor *ts[2] = {a, b};
  return em__check_same_device(op, 2, ts) != EM_OK;
}

/* input (of addmm / baddbmm) must have dtype dt and expand to shape. */
static bool bad_input(const char *op, const char *other, em_tensor *input, em_tensor *ref, int nd,
                      const int64_t *shape) {
  if (input->dtype != ref->dtype) {
    em__set_error(EM_ERR_DTYPE, "%s: self and %s must have the same dtype, but got %s and %s", op,
                  other, em__torch_dtype_name(input->dtype), em__torch_dtype_name(ref->dtype));
    return true;
  }
  em_tensor *ts[2] = {ref, input};
  if (em__check_same_device(op, 2, ts)) return true;
  char b[EM_SHAPE_STR_MAX];
  if (input->ndim > nd) {
    em__set_error(EM_ERR_SHAPE,
                  "%s: the number of sizes provided (%d) must be greater or equal to the number "
                  "of dimensions in the tensor (%d) (input %s, target %s)",
                  op, nd, input->ndim, em__tshape(input), em__shape_str(nd, shape, b, sizeof b));
    return true;
  }
  int off = nd - input->ndim;
  for (int i = 0; i < input->ndim; i++) {
    int64_t s = input->shape[i];
    if (s != 1 && s != shape[off + i]) {
      em__set_error(EM_ERR_SHAPE,
                    "%s: The expanded size of the tensor (%lld) must match the existing size "
                    "(%lld) at non-singleton dimension %d.  Target sizes: %s.  Tensor sizes: %s",
                    op, (long long)shape[off + i], (long long)s, off + i,
                    em__shape_str(nd, shape, b, sizeof b), em__tshape(input));
      return true;
    }
  }
  return false;
}

/* ---- the ops --------------------------------------------------------------------------------- */

/* [n,k] @ [k,m] for validated operands of one dtype; records nothing. */
static em_tensor *mm_core(em_tensor *a, em_tensor *b) {
  int64_t n = a->shape[0], k = a->shape[1], m = b->shape[1];
  em_tensor *out = em_tensor_empty_on(2, (int64_t[]){n, m}, (em_dtype)a->dtype, a->device);
  if (out && gemm_run(out, 1, n, m, k, mat_of(a), mat_of(b), 1, 0)) {
    em_tensor_release(out);
    return NULL;
  }
  return out;
}

static bool mm_shapes_bad(const char *op, em_tensor *a, em_tensor *b) {
  if (a->shape[1] == b->shape[0]) return false;
  em__set_error(EM_ERR_SHAPE,
                "%s: mat1 and mat2 shapes cannot be multiplied (%lldx%lld and %lldx%lld)", op,
                (long long)a->shape[0], (long long)a->shape[1], (long long)b->shape[0],
                (long long)b->shape[1]);
  return true;
}

em_tensor *em_tensor_mm(em_tensor *a, em_tensor *b) {
  em_tensor *in[2] = {a, b};
  if (null_args("mm", 2, in)) return NULL;
  if (a->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "mm: self must be a matrix, got %d-D tensor", a->ndim);
  if (b->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "mm: mat2 must be a matrix, got %d-D tensor", b->ndim);
  if (bad_dtypes("mm", a, b) || mm_shapes_bad("mm", a, b)) return NULL;
  return em__record1(EM_OP_MM, 2, in, mm_core(a, b), NULL);
}

static bool bmm_shapes_bad(const char *op, em_tensor *a, em_tensor *b) {
  if (a->ndim != 3 || b->ndim != 3) {
    em__set_error(EM_ERR_SHAPE, "%s: %s must be a 3D tensor, got %d-D", op,
                  a->ndim != 3 ? "batch1" : "batch2", a->ndim != 3 ? a->ndim : b->ndim);
    return true;
  }
  if (b->shape[0] != a->shape[0] || b->shape[1] != a->shape[2]) {
    em__set_error(EM_ERR_SHAPE,
                  "%s: Expected size for first two dimensions of batch2 tensor to be: [%lld, %lld] "
                  "but got: [%lld, %lld].",
                  op, (long long)a->shape[0], (long long)a->shape[2], (long long)b->shape[0],
                  (long long)b->shape[1]);
    return true;
  }
  return false;
}

em_tensor *em_tensor_bmm(em_tensor *a, em_tensor *b) {
  em_tensor *in[2] = {a, b};
  if (null_args("bmm", 2, in) || bmm_shapes_bad("bmm", a, b) || bad_dtypes("bmm", a, b))
    return NULL;
  int64_t B = a->shape[0], n = a->shape[1], k = a->shape[2], m = b->shape[2];
  em_tensor *out = em_tensor_empty_on(3, (int64_t[]){B, n, m}, (em_dtype)a->dtype, a->device);
  if (out && gemm_run(out, B, n, m, k, bmat_of(a), bmat_of(b), 1, 0)) {
    em_tensor_release(out);
    return NULL;
  }
  return em__record1(EM_OP_BMM, 2, in, out, NULL);
}

em_tensor *em_tensor_mv(em_tensor *a, em_tensor *v) {
  em_tensor *in[2] = {a, v};
  if (null_args("mv", 2, in)) return NULL;
  if (a->ndim != 2 || v->ndim != 1)
    return EM_FAIL(EM_ERR_SHAPE,
                   "mv: expected a 2-D matrix and a 1-D vector, but got %d-D and %d-D tensors",
                   a->ndim, v->ndim);
  if (bad_dtypes("mv", a, v)) return NULL;
  int64_t n = a->shape[0], k = a->shape[1];
  if (v->shape[0] != k)
    return EM_FAIL(EM_ERR_SHAPE, "mv: size mismatch, got mat (%lldx%lld) and vec (%lld)",
                   (long long)n, (long long)k, (long long)v->shape[0]);
  em_tensor *out = em_tensor_empty_on(1, &n, (em_dtype)a->dtype, a->device);
  operand vo = {v, v->offset, 0, v->strides[0], 1}; /* [k, 1] */
  if (out && gemm_run(out, 1, n, 1, k, mat_of(a), vo, 1, 0)) {
    em_tensor_release(out);
    return NULL;
  }
  return em__record1(EM_OP_MV, 2, in, out, NULL);
}

em_tensor *em_tensor_dot(em_tensor *a, em_tensor *b) {
  em_tensor *in[2] = {a, b};
  if (null_args("dot", 2, in)) return NULL;
  if (a->ndim != 1 || b->ndim != 1)
    return EM_FAIL(EM_ERR_SHAPE, "dot: 1D tensors expected, but got %dD and %dD tensors", a->ndim,
                   b->ndim);
  if (a->dtype != b->dtype)
    return EM_FAIL(EM_ERR_DTYPE,
                   "dot: expected both vectors to have same dtype, but found %s and %s",
                   em__torch_dtype_name(a->dtype), em__torch_dtype_name(b->dtype));
  if (bad_dtypes("dot", a, b)) return NULL;
  int64_t k = a->shape[0];
  if (b->shape[0] != k)
    return EM_FAIL(EM_ERR_SHAPE,
                   "dot: inconsistent tensor size, expected tensor [%lld] and src [%lld] to have "
                   "the same number of elements, but got %lld and %lld elements respectively",
                   (long long)k, (long long)b->shape[0], (long long)k, (long long)b->shape[0]);
  em_tensor *out = em_tensor_empty_on(0, NULL, (em_dtype)a->dtype, a->device);
  operand ao = {a, a->offset, 0, 0, a->strides[0]}; /* [1, k] */
  operand bo = {b, b->offset, 0, b->strides[0], 1}; /* [k, 1] */
  if (out && gemm_run(out, 1, 1, 1, k, ao, bo, 1, 0)) {
    em_tensor_release(out);
    return NULL;
  }
  return em__record1(EM_OP_DOT, 2, in, out, NULL);
}

em_tensor *em_tensor_outer(em_tensor *a, em_tensor *b) {
  em_tensor *in[2] = {a, b};
  if (null_args("outer", 2, in)) return NULL;
  if (a->ndim != 1)
    return EM_FAIL(EM_ERR_SHAPE, "outer: Expected 1-D argument self, but got %d-D", a->ndim);
  if (b->ndim != 1)
    return EM_FAIL(EM_ERR_SHAPE, "outer: Expected 1-D argument vec2, but got %d-D", b->ndim);
  if (em__check_same_device("outer", 2, in)) return NULL;
  em_dtype dt = em_promote_types((em_dtype)a->dtype, (em_dtype)b->dtype);
  em_tensor *ac = NULL, *bc = NULL, *av = NULL, *bv = NULL, *out = NULL;
  if (!(ac = em_tensor_to_dtype(a, dt)) || !(bc = em_tensor_to_dtype(b, dt)) ||
      !(av = em_tensor_unsqueeze(ac, 1)) || !(bv = em_tensor_unsqueeze(bc, 0)))
    goto done;
  em_tensor *mv[2] = {av, bv};
  out = em__record1(EM_OP_MM, 2, mv, mm_core(av, bv), NULL);
done:
  em_tensor_release(ac), em_tensor_release(bc), em_tensor_release(av), em_tensor_release(bv);
  return out;
}

em_tensor *em_tensor_addmm(em_tensor *input, em_tensor *m1, em_tensor *m2, double beta,
                           double alpha) {
  em_tensor *in[3] = {input, m1, m2};
  if (null_args("addmm", 3, in)) return NULL;
  if (m1->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "addmm: mat1 must be a matrix, got %d-D tensor", m1->ndim);
  if (m2->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "addmm: mat2 must be a matrix, got %d-D tensor", m2->ndim);
  if (m1->dtype != m2->dtype)
    return EM_FAIL(EM_ERR_DTYPE, "addmm: mat1 and mat2 must have the same dtype, but got %s and %s",
                   em__torch_dtype_name(m1->dtype), em__torch_dtype_name(m2->dtype));
  if (bad_dtypes("addmm", m1, m2) || mm_shapes_bad("addmm", m1, m2)) return NULL;
  int64_t n = m1->shape[0], k = m1->shape[1], m = m2->shape[1];
  int64_t shape[2] = {n, m};
  if (bad_input("addmm", "mat2", input, m2, 2, shape)) return NULL;
  em_dtype dt = (em_dtype)m1->dtype;
  double be = effective(dt, beta), al = effective(dt, alpha);
  em_tensor *out = em_tensor_empty_on(2, shape, dt, m1->device);
  if (!out) return NULL;
  if ((be != 0 && out->numel && em__copy_into(out, input)) ||
      gemm_run(out, 1, n, m, k, mat_of(m1), mat_of(m2), al, be)) {
    em_tensor_release(out);
    return NULL;
  }
  em_op_attrs at = {0};
  at.f[0] = beta;
  at.f[1] = alpha;
  return em__record1(EM_OP_ADDMM, 3, in, out, &at);
}

em_tensor *em_tensor_baddbmm(em_tensor *input, em_tensor *b1, em_tensor *b2, double beta,
                             double alpha) {
  em_tensor *in[3] = {input, b1, b2};
  if (null_args("baddbmm", 3, in) || bmm_shapes_bad("baddbmm", b1, b2) ||
      bad_dtypes("baddbmm", b1, b2))
    return NULL;
  int64_t B = b1->shape[0], n = b1->shape[1], k = b1->shape[2], m = b2->shape[2];
  int64_t shape[3] = {B, n, m};
  if (bad_input("baddbmm", "batch2", input, b2, 3, shape)) return NULL;
  em_dtype dt = (em_dtype)b1->dtype;
  double be = effective(dt, beta), al = effective(dt, alpha);
  em_tensor *out = em_tensor_empty_on(3, shape, dt, b1->device);
  if (!out) return NULL;
  if ((be != 0 && out->numel && em__copy_into(out, input)) ||
      gemm_run(out, B, n, m, k, bmat_of(b1), bmat_of(b2), al, be)) {
    em_tensor_release(out);
    return NULL;
  }
  em_op_attrs at = {0};
  at.f[0] = beta;
  at.f[1] = alpha;
  return em__record1(EM_OP_BADDBMM, 3, in, out, &at);
}

/* ---- matmul -------------------------------------------------------------------------------- */

/* Can dims [0, nd) of t merge into one dim without a copy? */
static bool mergeable(const em_tensor *t, int nd) {
  int prev = -1;
  for (int i = 0; i < nd; i++) {
    if (t->shape[i] == 0) return true;
    if (t->shape[i] == 1) continue;
    if (prev >= 0 && t->strides[prev] != t->strides[i] * t->shape[i]) return false;
    prev = i;
  }
  return true;
}

/* a [..., n, k] @ b [k] or [k, m] with a's leading dims foldable into rows:
 * one mm over [rows, k]. */
static em_tensor *matmul_fold(em_tensor *a, em_tensor *b) {
  int da = a->ndim;
  int64_t rows = 1, k = a->shape[da - 1];
  for (int i = 0; i < da - 1; i++) rows *= a->shape[i];
  em_tensor *a2 = NULL, *b2 = NULL, *o = NULL, *r = NULL;
  if (!(a2 = em_tensor_reshape(a, 2, (int64_t[]){rows, k}))) goto done;
  if (!(b2 = b->ndim == 1 ? em_tensor_unsqueeze(b, 1) : em_tensor_retain(b))) goto done;
  if (!(o = em_tensor_mm(a2, b2))) goto done;
  int64_t shape[EM_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < da - 1; i++) shape[nd++] = a->shape[i];
  if (b->ndim == 2) shape[nd++] = b->shape[1];
  r = em_tensor_view(o, nd, shape);
done:
  em_tensor_release(a2), em_tensor_release(b2), em_tensor_release(o);
  return r;
}

/* General case: batch dims broadcast, both sides expanded (no copy: bmm
 * takes stride-0 batches) and reshaped to one batch dim. */
static em_tensor *matmul_batched(em_tensor *a, em_tensor *b) {
  int da = a->ndim, db = b->ndim;
  int nba = da > 2 ? da - 2 : 0, nbb = db > 2 ? db - 2 : 0;
  int64_t batch[EM_MAX_DIMS];
  int nb;
  const int ndims[2] = {nba, nbb};
  const int64_t *shapes[2] = {a->shape, b->shape};
  if (em_broadcast_shapes(2, ndims, shapes, &nb, batch)) {
    em__prefix_error("matmul");
    return NULL;
  }
  int64_t B = 1;
  for (int i = 0; i < nb; i++) B *= batch[i];
  int64_t k = a->shape[da - 1];
  int64_t n = da == 1 ? 1 : a->shape[da - 2], m = db == 1 ? 1 : b->shape[db - 1];
  em_tensor *a1 = NULL, *b1 = NULL, *ae = NULL, *be = NULL, *a3 = NULL, *b3 = NULL, *o = NULL,
            *r = NULL;
  int64_t sh[EM_MAX_DIMS];
  memcpy(sh, batch, sizeof(int64_t) * (size_t)nb);
  if (!(a1 = da == 1 ? em_tensor_unsqueeze(a, 0) : em_tensor_retain(a))) goto done;
  if (!(b1 = db == 1 ? em_tensor_unsqueeze(b, 1) : em_tensor_retain(b))) goto done;
  sh[nb] = n, sh[nb + 1] = k;
  if (!(ae = em_tensor_expand(a1, nb + 2, sh))) goto done;
  sh[nb] = k, sh[nb + 1] = m;
  if (!(be = em_tensor_expand(b1, nb + 2, sh))) goto done;
  if (!(a3 = nb == 1 ? em_tensor_retain(ae) : em_tensor_reshape(ae, 3, (int64_t[]){B, n, k})))
    goto done;
  if (!(b3 = nb == 1 ? em_tensor_retain(be) : em_tensor_reshape(be, 3, (int64_t[]){B, k, m})))
    goto done;
  if (!(o = em_tensor_bmm(a3, b3))) goto done;
  int nd = nb;
  if (da > 1) sh[nd++] = n;
  if (db > 1) sh[nd++] = m;
  r = em_tensor_view(o, nd, sh);
done:
  em_tensor_release(a1), em_tensor_release(b1), em_tensor_release(ae), em_tensor_release(be);
  em_tensor_release(a3), em_tensor_release(b3), em_tensor_release(o);
  return r;
}

em_tensor *em_tensor_matmul(em_tensor *a, em_tensor *b) {
  em_tensor *in[2] = {a, b};
  if (null_args("matmul", 2, in)) return NULL;
  int da = a->ndim, db = b->ndim;
  if (da == 0 || db == 0)
    return EM_FAIL(
        EM_ERR_SHAPE,
        "matmul: both arguments to matmul need to be at least 1D, but they are %dD and %dD", da,
        db);
  if (bad_dtypes("matmul", a, b)) return NULL;
  int64_t ka = a->shape[da - 1], kb = db == 1 ? b->shape[0] : b->shape[db - 2];
  if (ka != kb)
    return EM_FAIL(EM_ERR_SHAPE, "matmul: shapes %s and %s cannot be multiplied (%lld != %lld)",
                   em__tshape(a), em__tshape(b), (long long)ka, (long long)kb);
  if (da == 1 && db == 1) return em_tensor_dot(a, b);
  if (da == 2 && db == 1) return em_tensor_mv(a, b);
  if (da == 2 && db == 2) return em_tensor_mm(a, b);
  if (da == 1 && db == 2) {
    em_tensor *a2 = em_tensor_unsqueeze(a, 0);
    if (!a2) return NULL;
    em_tensor *o = em_tensor_mm(a2, b);
    em_tensor_release(a2);
    if (!o) return NULL;
    em_tensor *r = em_tensor_squeeze_dim(o, 0);
    em_tensor_release(o);
    return r;
  }
  if (da >= 3 && db <= 2 && mergeable(a, da - 1)) return matmul_fold(a, b);
  return matmul_batched(a, b);
}
