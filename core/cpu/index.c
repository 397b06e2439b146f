/* CPU kernels: index family. Front ends (core/ops_index.c) validate every
 * index and wrap negative ones; kernels trust them. Index values are int64.
 *
 * Kernel signatures (core/ops_index.c declares the same typedefs):
 *
 * Row gather / scatter. The indexed tensor is walked as [P..., B, Q...]:
 * P and Q are dims of it taken whole (strides known), B is the indexed
 * part, flattened: off[b] is the element offset of indexed position b.
 * Geometry g: i[0] = np (P dims), nd = np + nq, d[0..nd) the sizes of the
 * P then Q dims, d2[0..nd) their strides (elements) in the indexed tensor.
 *
 *   INDEX, INDEX_SELECT:
 *     void (char *out, const char *src, const int64_t *off, int64_t nb,
 *           const em_op_attrs *g)
 *     out contiguous [P..., nb, Q...]: out[p, b, q] = src[p.sP + off[b] + q.sQ]
 *     Whole contiguous Q rows are copied with memcpy.
 *
 *   INDEX_PUT, INDEX_ADD:
 *     void (char *dst, const char *vals, const int64_t *off, int64_t nb,
 *           const em_op_attrs *g)
 *     vals contiguous [P..., nb, Q...], or one element for all when g->i[2];
 *     dst[p.sP + off[b] + q.sQ] = vals[p, b, q]            (g->i[1] == 0)
 *     dst[p.sP + off[b] + q.sQ] += alpha * vals[p, b, q]   (g->i[1] != 0,
 *     alpha = g->s). Work is split over (p, q) only; each thread walks b in
 *     order, so duplicates accumulate deterministically (and without races)
 *     whatever the thread count; for plain puts the last duplicate wins.
 *
 * Along-dim ops (em_loop_fn over the index's shape with the dim left out;
 * the loop walks the dim itself: a->i[0] = its length L, a->i[1] = the
 * index's byte stride along it, a->i[2] = the indexed tensor's byte stride
 * along it, a->i[3] = the walked operand's byte stride along it):
 *   GATHER         operands (out, index, self):  out[j] = self[index[j]]
 *   SCATTER        operands (self, index, src):  self[index[j]] = src[j]
 *   SCATTER_VALUE  operands (self, index):       self[index[j]] = a->s
 *   SCATTER_ADD    operands (self, index, src):  self[index[j]] += src[j]
 *   Elements of one loop call are distinct positions outside the dim, and
 *   j runs in order, so scatter_add is deterministic under threads too.
 *
 *   MASKED_FILL    em_loop_fn, operands (out, self, mask as bytes):
 *                  out = mask ? a->s : self
 *   MASKED_SELECT  void (char *out, const char *src, const uint8_t *mask,
 *                  int64_t n): src and mask contiguous; out gets the
 *                  selected elements in order.
 *   NONZERO (bool) int64_t (int64_t *out, const uint8_t *mask, int ndim,
 *                  const int64_t *shape, const int64_t *strides, int64_t n):
 *                  mask contiguous (bytes, nonzero = selected); writes, in
 *                  row-major order, [count, ndim] coordinates (strides NULL)
 *                  or one element offset sum(coord * strides) per selected
 *                  position (advanced indexing by a mask); out NULL: only
 *                  counts. Returns the count.
 *   ONE_HOT (int64) void (int64_t *out, const int64_t *idx, int64_t n,
 *                  int64_t classes): out [n, classes] gets 1 at idx[i].
 */
#include "core/cpu/kernel_impl.h"

/* ---- geometry shared by the row kernels ------------------------------------------ */

typedef struct rows_geom {
  int np, nqo;             /* P dims; Q dims outside the inner run */
  int64_t psize[EM_MAX_DIMS], pstride[EM_MAX_DIMS];
  int64_t qsize[EM_MAX_DIMS], qstride[EM_MAX_DIMS];
  int64_t nP, nQo;         /* products */
  int64_t run, rstride;    /* inner run: length and stride (elements) */
} rows_geom;

/* Splits g's Q dims into an inner run (trailing dims walked with one
 * stride) and outer dims. */
static void rows_geom_init(rows_geom *r, const em_op_attrs *g) {
  int np = (int)g->i[0], nq = g->nd - np;
  r->np = np;
  r->nP = 1;
  for (int k = 0; k < np; k++) {
    r->psize[k] = g->d[k];
    r->pstride[k] = g->d2[k];
    r->nP *= g->d[k];
  }
  const int64_t *qs = g->d + np, *qt = g->d2 + np;
  r->run = 1;
  r->rstride = 1;
  int last = nq - 1;
  if (nq > 0) {
    r->run = qs[last];
    r->rstride = qt[last];
    while (last > 0 && qt[last - 1] == r->rstride * r->run) {
      last--;
      r->run *= qs[last];
    }
  }
  r->nqo = last > 0 ? last : 0;
  r->nQo = 1;
  for (int k = 0; k < r->nqo; k++) {
    r->qsize[k] = qs[k];
    r->qstride[k] = qt[k];
    r->nQo *= qs[k];
  }
}

/* Element offset of linear index lin over (n, size, stride). */
static inline int64_t lin_offset(int64_t lin, int n, const int64_t *size, const int64_t *stride) {
  int64_t o = 0;
  for (int k = n - 1; k >= 0; k--) {
    o += (lin % size[k]) * stride[k];
    lin /= size[k];
  }
  return o;
}

/* ---- row gather ---------------------------------------------------------------------- */

typedef struct gather_ctx {
  char *out;
  const char *src;
  const int64_t *off;
  int64_t nb;
  rows_geom r;
} gather_ctx;

#define DEF_ROW_GATHER(T)                                                                   \
  static void row_gather_part_##T(void *p, int64_t b0, int64_t b1) {                        \
    const gather_ctx *c = p;                                                                \
    const rows_geom *r = &c->r;                                                             \
    const T *src = (const T *)c->src;                                                       \
    const int64_t *off = c->off, nb = c->nb, run = r->run, rs = r->rstride;                 \
    T *out = (T *)c->out + b0 * r->nQo * run;                                               \
    int64_t pl = b0 / nb, b = b0 % nb, row = b0;                                            \
    while (row < b1) {                                                                      \
      const T *sp = src + lin_offset(pl, r->np, r->psize, r->pstride);                      \
      int64_t bend = b + (b1 - row) < nb ? b + (b1 - row) : nb;                             \
      if (run == 1 && r->nQo == 1) { /* single elements: a plain gather loop */             \
        for (int64_t k = b; k < bend; k++) *out++ = sp[off[k]];                             \
      } else {                                                                              \
        for (int64_t k = b; k < bend; k++) {                                                \
          for (int64_t qo = 0; qo < r->nQo; qo++) {                                         \
            const T *s = sp + off[k] +                                                      \
                         (r->nqo ? lin_offset(qo, r->nqo, r->qsize, r->qstride) : 0);       \
            if (rs == 1) {                                                                  \
              memcpy(out, s, (size_t)run * sizeof(T));                                      \
            } else {                                                                        \
              for (int64_t j = 0; j < run; j++) out[j] = s[j * rs];                         \
            }                                                                               \
            out += run;                                                                     \
          }                                                                                 \
        }                                                                                   \
      }                                                                                     \
      row += bend - b;                                                                      \
      b = 0;                                                                                \
      pl++;                                                                                 \
    }                                                                                       \
  }                                                                                         \
  static void row_gather_##T(char *out, const char *src, const int64_t *off, int64_t nb,    \
                             const em_op_attrs *g) {                                        \
    gather_ctx c = {out, src, off, nb, {0}};                                                \
    rows_geom_init(&c.r, g);                                                                \
    int64_t rows = c.r.nP * nb, per = c.r.nQo * c.r.run;                                    \
    if (rows == 0 || per == 0) return;                                                      \
    int64_t grain = EM_GRAIN_CHEAP / per;                                                   \
    em__parallel_for(rows, grain > 0 ? grain : 1, row_gather_part_##T, &c);                 \
  }
DEF_ROW_GATHER(uint8_t)
DEF_ROW_GATHER(uint16_t)
DEF_ROW_GATHER(uint32_t)
DEF_ROW_GATHER(uint64_t)

/* ---- row scatter (put / accumulate) --------------------------------------------------- */

typedef struct scatter_ctx {
  char *dst;
  const char *vals;
  const int64_t *off;
  int64_t nb;
  rows_geom r;
  int64_t chunk, nchunk; /* the inner run split into nchunk pieces of chunk */
  bool acc, scalar;
  em_scalar alpha;
} scatter_ctx;

/* Accumulation per dtype class: x is the stored value, y the value added,
 * al the alpha in the compute type. */
#define ACC_FLOAT(T, LD, ST, x, y, al) ST(LD(x) + (al) * LD(y))
#define ACC_INT(T, LD, ST, x, y, al) EM_WRAP_ADD(T, x, EM_WRAP_MUL(T, al, y))
#define ACC_BOOL(T, LD, ST, x, y, al) ((bool)((x) | ((al) & (y))))

/* alpha as the compute type: floats take the value, ints and bool the
 * value converted to the storage type as PyTorch casts it */
#define ALPHA_FLOAT(ENUM, T, C, s) ((C)em_scalar_to_double(s))
#define ALPHA_INT(ENUM, T, C, s) \
  ({                             \
    T v_;                        \
    em__store_scalar(&v_, EM_##ENUM, s); \
    (C) v_;                      \
  })

#define DEF_ROW_SCATTER(ENUM, T, C, LD, ST, ACC, ALPHA)                                      \
  static void row_scatter_part_##ENUM(void *p, int64_t u0, int64_t u1) {                     \
    const scatter_ctx *c = p;                                                                \
    const rows_geom *r = &c->r;                                                              \
    T *dst = (T *)c->dst;                                                                    \
    const T *vals = (const T *)c->vals;                                                      \
    const int64_t rs = r->rstride, nb = c->nb, nq = r->nQo, run = r->run;                    \
    const C al = ALPHA(ENUM, T, C, c->alpha);                                                \
    for (int64_t u = u0; u < u1; u++) {                                                      \
      int64_t ch = u % c->nchunk, pq = u / c->nchunk, qo = pq % nq, pl = pq / nq;           \
      int64_t j0 = ch * c->chunk, j1 = j0 + c->chunk < run ? j0 + c->chunk : run;            \
      int64_t base = lin_offset(pl, r->np, r->psize, r->pstride) +                           \
                     (r->nqo ? lin_offset(qo, r->nqo, r->qsize, r->qstride) : 0);            \
      for (int64_t b = 0; b < nb; b++) {                                                     \
        T *d = dst + base + c->off[b];                                                       \
        const T *v = c->scalar ? vals : vals + ((pl * nb + b) * nq + qo) * run;              \
        const int64_t vs = c->scalar ? 0 : 1;                                                \
        if (c->acc) {                                                                        \
          for (int64_t j = j0; j < j1; j++) d[j * rs] = ACC(T, LD, ST, d[j * rs], v[j * vs], al); \
        } else if (rs == 1 && vs == 1) {                                                     \
          memcpy(d + j0, v + j0, (size_t)(j1 - j0) * sizeof(T));                             \
        } else {                                                                             \
          for (int64_t j = j0; j < j1; j++) d[j * rs] = v[j * vs];                           \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
  }                                                                                          \
  static void row_scatter_##ENUM(char *dst, const char *vals, const int64_t *off, int64_t nb, \
                                 const em_op_attrs *g) {                                     \
    scatter_ctx c = {dst, vals, off, nb, {0}, 0, 1, g->i[1] != 0, g->i[2] != 0, g->s};       \
    rows_geom_init(&c.r, g);                                                                 \
    int64_t units = c.r.nP * c.r.nQo;                                                        \
    if (units == 0 || nb == 0 || c.r.run == 0) return;                                       \
    /* few (p, q) units: split the inner run so threads still get work */                   \
    c.chunk = c.r.run;                                                                       \
    if (units < 64 && c.r.run >= 2048) {                                                     \
      c.chunk = c.r.run / 64 > 1024 ? c.r.run / 64 : 1024;                                   \
      c.nchunk = (c.r.run + c.chunk - 1) / c.chunk;                                          \
    }                                                                                        \
    int64_t work = nb * c.chunk, grain = EM_GRAIN_CHEAP / (work > 0 ? work : 1);             \
    em__parallel_for(units * c.nchunk, grain > 0 ? grain : 1, row_scatter_part_##ENUM, &c);  \
  }
#define DEF_ROW_SCATTER_F(ENUM, T, C, LD, ST) DEF_ROW_SCATTER(ENUM, T, C, LD, ST, ACC_FLOAT, ALPHA_FLOAT)
#define DEF_ROW_SCATTER_I(ENUM, T, C, LD, ST) DEF_ROW_SCATTER(ENUM, T, C, LD, ST, ACC_INT, ALPHA_INT)
#define DEF_ROW_SCATTER_B(ENUM, T, C, LD, ST) DEF_ROW_SCATTER(ENUM, T, C, LD, ST, ACC_BOOL, ALPHA_INT)
EM_FLOAT_TYPES(DEF_ROW_SCATTER_F)
EM_INT_TYPES(DEF_ROW_SCATTER_I)
EM_BOOL_TYPE(DEF_ROW_SCATTER_B)

/* ---- along-dim gather / scatter ----------------------------------------------------------- */

#define IDX_AT(p) (*(const int64_t *)(p))

#define DEF_DIM_OPS(ENUM, T, C, LD, ST, ACC, ALPHA)                                          \
  EM_KERNEL_SIG(gather_##ENUM) {                                                              \
    const int64_t L = a->i[0], si = a->i[1], sx = a->i[2], sw = a->i[3];                       \
    for (int64_t j = 0; j < L; j++) {                                                         \
      char *o = d_[0] + j * sw;                                                               \
      const char *ix = d_[1] + j * si, *sp = d_[2];                                           \
      for (int64_t k = 0; k < n_; k++)                                                        \
        *(T *)(o + k * s_[0]) = *(const T *)(sp + k * s_[2] + IDX_AT(ix + k * s_[1]) * sx);   \
    }                                                                                         \
  }                                                                                           \
  EM_KERNEL_SIG(scatter_##ENUM) {                                                             \
    const int64_t L = a->i[0], si = a->i[1], sx = a->i[2], sw = a->i[3];                       \
    for (int64_t j = 0; j < L; j++) {                                                         \
      const char *ix = d_[1] + j * si, *sp = d_[2] + j * sw;                                  \
      for (int64_t k = 0; k < n_; k++)                                                        \
        *(T *)(d_[0] + k * s_[0] + IDX_AT(ix + k * s_[1]) * sx) = *(const T *)(sp + k * s_[2]); \
    }                                                                                         \
  }                                                                                           \
  EM_KERNEL_SIG(scatter_value_##ENUM) {                                                       \
    const int64_t L = a->i[0], si = a->i[1], sx = a->i[2];                                    \
    T v;                                                                                      \
    em__store_scalar(&v, EM_##ENUM, a->s);                                                    \
    for (int64_t j = 0; j < L; j++) {                                                         \
      const char *ix = d_[1] + j * si;                                                        \
      for (int64_t k = 0; k < n_; k++) *(T *)(d_[0] + k * s_[0] + IDX_AT(ix + k * s_[1]) * sx) = v; \
    }                                                                                         \
  }                                                                                           \
  EM_KERNEL_SIG(scatter_add_##ENUM) {                                                         \
    const int64_t L = a->i[0], si = a->i[1], sx = a->i[2], sw = a->i[3];                       \
    const C one = (C)1;                                                                       \
    for (int64_t j = 0; j < L; j++) {                                                         \
      const char *ix = d_[1] + j * si, *sp = d_[2] + j * sw;                                  \
      for (int64_t k = 0; k < n_; k++) {                                                      \
        T *dp = (T *)(d_[0] + k * s_[0] + IDX_AT(ix + k * s_[1]) * sx);                       \
        *dp = ACC(T, LD, ST, *dp, *(const T *)(sp + k * s_[2]), one);                         \
      }                                                                                       \
    }                                                                                         \
  }                                                                                           \
  EM_KERNEL_SIG(masked_fill_##ENUM) {                                                         \
    T v;                                                                                      \
    em__store_scalar(&v, EM_##ENUM, a->s);                                                    \
    const int64_t so = s_[0], sa = s_[1], sm = s_[2];                                         \
    if (so == (int64_t)sizeof(T) && sa == (int64_t)sizeof(T) && sm == 1) {                    \
      T *o = (T *)d_[0];                                                                      \
      const T *x = (const T *)d_[1];                                                          \
      const uint8_t *m = (const uint8_t *)d_[2];                                              \
      for (int64_t k = 0; k < n_; k++) o[k] = m[k] ? v : x[k];                                \
    } else {                                                                                  \
      for (int64_t k = 0; k < n_; k++) {                                                      \
        const uint8_t m = *(const uint8_t *)(d_[2] + k * sm);                                 \
        *(T *)(d_[0] + k * so) = m ? v : *(const T *)(d_[1] + k * sa);                        \
      }                                                                                       \
    }                                                                                         \
  }
#define DEF_DIM_OPS_F(ENUM, T, C, LD, ST) DEF_DIM_OPS(ENUM, T, C, LD, ST, ACC_FLOAT, ALPHA_FLOAT)
#define DEF_DIM_OPS_I(ENUM, T, C, LD, ST) DEF_DIM_OPS(ENUM, T, C, LD, ST, ACC_INT, ALPHA_INT)
#define DEF_DIM_OPS_B(ENUM, T, C, LD, ST) DEF_DIM_OPS(ENUM, T, C, LD, ST, ACC_BOOL, ALPHA_INT)
EM_FLOAT_TYPES(DEF_DIM_OPS_F)
EM_INT_TYPES(DEF_DIM_OPS_I)
EM_BOOL_TYPE(DEF_DIM_OPS_B)

/* ---- masked_select, nonzero, one_hot ------------------------------------------------------------ */

#define DEF_MASKED_SELECT(T)                                                               \
  static void masked_select_##T(char *out, const char *src, const uint8_t *mask, int64_t n) { \
    T *o = (T *)out;                                                                       \
    const T *s = (const T *)src;                                                           \
    for (int64_t i = 0; i < n; i++)                                                        \
      if (mask[i]) *o++ = s[i];                                                            \
  }
DEF_MASKED_SELECT(uint8_t)
DEF_MASKED_SELECT(uint16_t)
DEF_MASKED_SELECT(uint32_t)
DEF_MASKED_SELECT(uint64_t)

/* Selected positions of a contiguous byte mask in row-major order: with
 * strides NULL, coordinates ([count, ndim] rows); else one element offset
 * sum(coord[d] * strides[d]) per selected position. Branch-free: every
 * position is written to a small buffer and kept by advancing the count. */
#define NZ_CHUNK 512
static int64_t nonzero_bool(int64_t *out, const uint8_t *mask, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t n) {
  int64_t count = 0;
  if (!out) {
    for (int64_t i = 0; i < n; i++) count += mask[i] != 0;
    return count;
  }
  const int w = strides ? 1 : (ndim > 0 ? ndim : 0);
  int64_t buf[(NZ_CHUNK + 1) * EM_MAX_DIMS];
  int64_t idx[EM_MAX_DIMS] = {0}, offset = 0;
  const int last = ndim - 1;
  const int64_t inner = ndim ? shape[last] : 1, istride = strides && ndim ? strides[last] : 0;
  int64_t i = 0;
  while (i < n) {
    int64_t k = 0; /* entries kept in buf */
    int64_t end = i + NZ_CHUNK < n ? i + NZ_CHUNK : n;
    while (i < end) {
      /* the rest of the current innermost row, within the chunk */
      int64_t j0 = ndim ? idx[last] : 0, len = inner - j0;
      if (len > end - i) len = end - i;
      if (strides) {
        for (int64_t j = 0; j < len; j++) {
          buf[k] = offset + (j0 + j) * istride;
          k += mask[i + j] != 0;
        }
      } else if (ndim) {
        for (int64_t j = 0; j < len; j++) {
          int64_t *row = buf + k * w;
          for (int d = 0; d < last; d++) row[d] = idx[d];
          row[last] = j0 + j;
          k += mask[i + j] != 0;
        }
      } else { /* 0-dim mask: one position, offset 0 */
        buf[0] = 0;
        k += mask[i] != 0;
      }
      i += len;
      if (!ndim) break;
      idx[last] += len;
      if (idx[last] == inner) { /* carry into the outer dims */
        idx[last] = 0;
        for (int d = last - 1; d >= 0; d--) {
          if (++idx[d] < shape[d]) break;
          idx[d] = 0;
        }
        if (strides) {
          offset = 0;
          for (int d = 0; d < last; d++) offset += idx[d] * strides[d];
        }
      }
    }
    memcpy(out + count * w, buf, (size_t)(k * w) * sizeof(int64_t));
    count += k;
  }
  return count;
}

static void one_hot_int64(int64_t *out, const int64_t *idx, int64_t n, int64_t classes) {
  memset(out, 0, (size_t)(n * classes) * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) out[i * classes + idx[i]] = 1;
}

void em__cpu_register_index(void) {
#define ROW_GATHER(T)                                                                        \
  (sizeof(T) == 1   ? (void *)row_gather_uint8_t                                             \
   : sizeof(T) == 2 ? (void *)row_gather_uint16_t                                            \
   : sizeof(T) == 4 ? (void *)row_gather_uint32_t                                            \
                    : (void *)row_gather_uint64_t)
#define BY_SIZE(ENUM, T, C, LD, ST)                                                          \
  em__register_kernel(EM_OP_INDEX, EM_CPU, EM_##ENUM, ROW_GATHER(T));                        \
  em__register_kernel(EM_OP_INDEX_SELECT, EM_CPU, EM_##ENUM, ROW_GATHER(T));                 \
  em__register_kernel(EM_OP_MASKED_SELECT, EM_CPU, EM_##ENUM,                                \
                      sizeof(T) == 1   ? (void *)masked_select_uint8_t                  \
                      : sizeof(T) == 2 ? (void *)masked_select_uint16_t                 \
                      : sizeof(T) == 4 ? (void *)masked_select_uint32_t                 \
                                       : (void *)masked_select_uint64_t);               \
  em__register_kernel(EM_OP_INDEX_PUT, EM_CPU, EM_##ENUM, (void *)row_scatter_##ENUM);       \
  em__register_kernel(EM_OP_INDEX_ADD, EM_CPU, EM_##ENUM, (void *)row_scatter_##ENUM);       \
  em__register_kernel(EM_OP_GATHER, EM_CPU, EM_##ENUM, (void *)gather_##ENUM);               \
  em__register_kernel(EM_OP_SCATTER, EM_CPU, EM_##ENUM, (void *)scatter_##ENUM);             \
  em__register_kernel(EM_OP_SCATTER_VALUE, EM_CPU, EM_##ENUM, (void *)scatter_value_##ENUM); \
  em__register_kernel(EM_OP_SCATTER_ADD, EM_CPU, EM_##ENUM, (void *)scatter_add_##ENUM);     \
  em__register_kernel(EM_OP_MASKED_FILL, EM_CPU, EM_##ENUM, (void *)masked_fill_##ENUM);
  EM_ALL_TYPES(BY_SIZE)
#undef BY_SIZE
#undef ROW_GATHER
  em__register_kernel(EM_OP_NONZERO, EM_CPU, EM_BOOL, (void *)nonzero_bool);
  em__register_kernel(EM_OP_ONE_HOT, EM_CPU, EM_INT64, (void *)one_hot_int64);
}
