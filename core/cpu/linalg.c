/* CPU kernels: linalg family — the batched product
 *
 *     c[b] = beta * c[b] + alpha * a[b] @ b[b]
 *     a [batch, n, k] (any strides), b [batch, k, m] (rows contiguous:
 *     sb1 == 1, any row and batch strides), c contiguous [batch, n, m];
 *     rows [r0, r1) of the flattened [batch * n]
 *
 * for the dtypes BLAS does not serve (float16, bfloat16, integers, bool)
 * and for float32/float64 when there is no product to compute (k == 0).
 * One body instantiated per dtype; registered under EM_OP_MM. The front
 * end copies b when its rows are not contiguous.
 *
 * Accumulators: float for float16/bfloat16/float32, double for float64,
 * unsigned integers for the integer types (wrapping arithmetic as PyTorch:
 * uint32 for widths <= 32 bits, uint64 for int64; the result reduced to the
 * storage width is the same modulo 2^width), OR of ANDs for bool. beta 0:
 * c is not read, so NaN or garbage in c never leaks into the result. The
 * front end passes k = 0 and alpha = 0 together when the product is to be
 * ignored.
 *
 * Blocking: RB output rows of one batch at a time, in tiles of JT columns
 * whose RB x JT accumulators stay in L1; each step adds a[i, p] * b[p, tile]
 * to every row of the block, so one (converted) load of b serves RB rows
 * and the inner loop over the tile vectorises. */
#include "core/cpu/kernel_impl.h"

#define JT 256 /* output columns per tile */
#define RB 4   /* output rows per block */

/* Per-dtype pieces:
 *   LD(x)            storage -> accumulator
 *   ST(v)            accumulator -> storage
 *   SC(d)            alpha/beta (double) -> accumulator (integers truncate)
 *   MAC(s, x, y)     s += x * y
 *   AXPBY(al, v, be, c)  al * v + be * c
 *   SCALE(al, v)     al * v */
#define LD_I(x) ((uint64_t)(int64_t)(x))
#define LD_I32(x) ((uint32_t)(int32_t)(x))
#define SC_F(d) (d)
#define SC_I(d) ((uint64_t)em__f2i64(d)) /* truncated by the (ACC) cast for uint32 */
#define SC_B(d) ((d) != 0)
#define MAC_A(s, x, y) ((s) += (x) * (y))
#define MAC_B(s, x, y) ((s) = (s) | ((x) & (y)))
#define AXPBY_A(al, v, be, c) ((al) * (v) + (be) * (c))
#define AXPBY_B(al, v, be, c) (((al) & (v)) | ((be) & (c)))
#define SCALE_A(al, v) ((al) * (v))
#define SCALE_B(al, v) ((al) & (v))
#define ST_I8(v) ((int8_t)(v))
#define ST_I16(v) ((int16_t)(v))
#define ST_I32(v) ((int32_t)(v))
#define ST_I64(v) ((int64_t)(v))
#define ST_U8(v) ((uint8_t)(v))

/* X(DT, T, ACC, LD, ST, SC, MAC, AXPBY, SCALE, PACK); PACK 1: LD does not
 * vectorise (float16's branchy conversion), so each row of a b tile is
 * converted once into a buffer before the multiply-adds. */
#define LINALG_TYPES(X)                                                                    \
  X(FLOAT32, float, float, EM_ID, EM_ID, SC_F, MAC_A, AXPBY_A, SCALE_A, 0)                 \
  X(FLOAT64, double, double, EM_ID, EM_ID, SC_F, MAC_A, AXPBY_A, SCALE_A, 0)               \
  X(FLOAT16, uint16_t, float, em__h2f, em__f2h, SC_F, MAC_A, AXPBY_A, SCALE_A, 1)          \
  X(BFLOAT16, uint16_t, float, em__b2f, em__f2b, SC_F, MAC_A, AXPBY_A, SCALE_A, 0)         \
  X(INT8, int8_t, uint32_t, LD_I32, ST_I8, SC_I, MAC_A, AXPBY_A, SCALE_A, 0)               \
  X(INT16, int16_t, uint32_t, LD_I32, ST_I16, SC_I, MAC_A, AXPBY_A, SCALE_A, 0)            \
  X(INT32, int32_t, uint32_t, LD_I32, ST_I32, SC_I, MAC_A, AXPBY_A, SCALE_A, 0)            \
  X(INT64, int64_t, uint64_t, LD_I, ST_I64, SC_I, MAC_A, AXPBY_A, SCALE_A, 0)              \
  X(UINT8, uint8_t, uint32_t, LD_I32, ST_U8, SC_I, MAC_A, AXPBY_A, SCALE_A, 0)             \
  X(BOOL, bool, bool, EM_ID, EM_ID, SC_B, MAC_B, AXPBY_B, SCALE_B, 0)

#define DEF_GEMM(DT, T, ACC, LD, ST, SC, MAC, AXPBY, SCALE, PACK)                          \
  static void gemm_##DT(const em_gemm_args *g, int64_t r0, int64_t r1) {                   \
    const int64_t n = g->n, m = g->m, k = g->k, sa0 = g->sa0, sa1 = g->sa1, sb0 = g->sb0;  \
    const ACC al = (ACC)SC(g->alpha), be = (ACC)SC(g->beta);                               \
    const bool read_c = g->beta != 0;                                                      \
    ACC acc[RB][JT], ybuf[PACK ? JT : 1];                                                  \
    for (int64_t r = r0; r < r1;) {                                                        \
      const int64_t bi = r / n, i = r % n;                                                 \
      int64_t rb = r1 - r < RB ? r1 - r : RB;                                              \
      if (n - i < rb) rb = n - i;                                                          \
      const T *a0 = k ? (const T *)g->a + bi * g->sab + i * sa0 : NULL;                    \
      const T *bmat = k ? (const T *)g->b + bi * g->sbb : NULL;                            \
      for (int64_t j0 = 0; j0 < m; j0 += JT) {                                             \
        const int64_t jn = m - j0 < JT ? m - j0 : JT;                                      \
        for (int q = 0; q < rb; q++)                                                       \
          for (int64_t j = 0; j < jn; j++) acc[q][j] = 0;                                  \
        for (int64_t p = 0; p < k; p++) {                                                  \
          const T *brow = bmat + p * sb0 + j0;                                             \
          if (rb == RB) {                                                                  \
            const ACC x0 = LD(a0[p * sa1]), x1 = LD(a0[sa0 + p * sa1]);                    \
            const ACC x2 = LD(a0[2 * sa0 + p * sa1]), x3 = LD(a0[3 * sa0 + p * sa1]);      \
            if (PACK)                                                                      \
              for (int64_t j = 0; j < jn; j++) ybuf[j] = LD(brow[j]);                      \
            for (int64_t j = 0; j < jn; j++) {                                             \
              const ACC y = PACK ? ybuf[j] : LD(brow[j]);                                  \
              MAC(acc[0][j], x0, y);                                                       \
              MAC(acc[1][j], x1, y);                                                       \
              MAC(acc[2][j], x2, y);                                                       \
              MAC(acc[3][j], x3, y);                                                       \
            }                                                                              \
          } else {                                                                         \
            for (int q = 0; q < rb; q++) {                                                 \
              const ACC x = LD(a0[q * sa0 + p * sa1]);                                     \
              for (int64_t j = 0; j < jn; j++) MAC(acc[q][j], x, LD(brow[j]));             \
            }                                                                              \
          }                                                                                \
        }                                                                                  \
        for (int q = 0; q < rb; q++) {                                                     \
          T *c = (T *)g->c + (r + q) * m + j0;                                             \
          if (read_c)                                                                      \
            for (int64_t j = 0; j < jn; j++) c[j] = ST(AXPBY(al, acc[q][j], be, LD(c[j]))); \
          else                                                                             \
            for (int64_t j = 0; j < jn; j++) c[j] = ST(SCALE(al, acc[q][j]));              \
        }                                                                                  \
      }                                                                                    \
      r += rb;                                                                             \
    }                                                                                      \
  }
LINALG_TYPES(DEF_GEMM)

void em__cpu_register_linalg(void) {
#define REG(DT, T, ACC, LD, ST, SC, MAC, AXPBY, SCALE, PACK)                               \
  em__register_kernel(EM_OP_MM, EM_CPU, EM_##DT, (void *)gemm_##DT);
  LINALG_TYPES(REG)
#undef REG
}
