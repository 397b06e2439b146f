/* CPU kernels: shape family (cat, repeat). Both only move bytes, so one
 * function serves every dtype (registered per dtype for the dispatch table);
 * flip and pad are views plus the copy kernels (core/ops_shape.c).
 *
 * Kernel signatures (shared with core/ops_shape.c, which declares the same
 * typedefs):
 *
 *   CAT:    em_status (char *out, int64_t outer, int64_t out_row, int n,
 *                      char *const *src, const int64_t *row)
 *     out rows are out_row bytes apart; input k is [outer, row[k]] bytes,
 *     contiguous, and lands at byte sum(row[0..k)) of each out row (the
 *     inputs may fill only part of a row: the caller offsets out).
 *     src[k] may be NULL when row[k] == 0. The CPU's never fails; a
 *     device's returns its copy's status.
 *
 *   REPEAT: void (char *out, const char *src, int nd, const int64_t *shape,
 *                 const int64_t *reps, int64_t esize)
 *     src is contiguous with shape[0..nd); out is contiguous with shape
 *     shape[d] * reps[d] (every size > 0). */
#include <stdlib.h>

#include "core/cpu/kernel_impl.h"

/* ---- cat ------------------------------------------------------------------------ */

#define CAT_CHUNK ((int64_t)1 << 18) /* bytes per task when splitting big blocks */

typedef struct cat_ctx {
  char *out;
  int64_t out_row;
  int n;
  char *const *src;
  const int64_t *row;
  const int64_t *col; /* column offset of each input in an out row */
} cat_ctx;

/* Rows [b, e) of the output. */
static void cat_rows(void *p, int64_t b, int64_t e) {
  const cat_ctx *c = p;
  for (int64_t r = b; r < e; r++) {
    char *o = c->out + r * c->out_row;
    for (int k = 0; k < c->n; k++)
      if (c->row[k]) memcpy(o + c->col[k], c->src[k] + r * c->row[k], (size_t)c->row[k]);
  }
}

/* One output row (outer == 1): byte range [b, e) of it, split across inputs. */
static void cat_bytes(void *p, int64_t b, int64_t e) {
  const cat_ctx *c = p;
  for (int k = 0; k < c->n && b < e; k++) {
    int64_t lo = c->col[k], hi = lo + c->row[k];
    if (c->row[k] == 0 || hi <= b || lo >= e) continue;
    int64_t s = b > lo ? b : lo, t = e < hi ? e : hi;
    memcpy(c->out + s, c->src[k] + (s - lo), (size_t)(t - s));
  }
}

static em_status cat_kernel(char *out, int64_t outer, int64_t out_row, int n, char *const *src,
                            const int64_t *row) {
  int64_t col_small[64];
  int64_t *col = n <= 64 ? col_small : malloc(sizeof(int64_t) * (size_t)n);
  cat_ctx c = {out, out_row, n, src, row, col};
  if (!col) { /* no memory for the offsets: copy without threads */
    for (int64_t r = 0; r < outer; r++) {
      int64_t off = 0;
      for (int k = 0; k < n; k++) {
        if (row[k]) memcpy(out + r * out_row + off, src[k] + r * row[k], (size_t)row[k]);
        off += row[k];
      }
    }
    return EM_OK;
  }
  int64_t off = 0;
  for (int k = 0; k < n; k++) {
    col[k] = off;
    off += row[k];
  }
  if (outer == 1) {
    em__parallel_for(off, CAT_CHUNK, cat_bytes, &c); /* off: the inputs' total width */
  } else {
    int64_t grain = off > 0 ? CAT_CHUNK / off : outer;
    em__parallel_for(outer, grain > 0 ? grain : 1, cat_rows, &c);
  }
  if (col != col_small) free(col);
  return EM_OK;
}

/* ---- repeat --------------------------------------------------------------------- */

/* Writes the repeated block of dims [d, nd) at out from src; ostr[d] and
 * istr[d] are the out / in strides (bytes) of dim d. */
static void repeat_rec(char *out, const char *src, int d, int nd, const int64_t *shape,
                       const int64_t *reps, const int64_t *ostr, const int64_t *istr) {
  int64_t blk; /* bytes of one copy of dim d's [0, shape[d]) range */
  if (d == nd - 1) {
    blk = shape[d] * istr[d];
    memcpy(out, src, (size_t)blk);
  } else {
    for (int64_t i = 0; i < shape[d]; i++)
      repeat_rec(out + i * ostr[d], src + i * istr[d], d + 1, nd, shape, reps, ostr, istr);
    blk = shape[d] * ostr[d];
  }
  /* replicate the block by doubling: few large memcpys */
  int64_t have = 1;
  while (have < reps[d]) {
    int64_t m = have <= reps[d] - have ? have : reps[d] - have;
    memcpy(out + have * blk, out, (size_t)(m * blk));
    have += m;
  }
}

static void repeat_kernel(char *out, const char *src, int nd, const int64_t *shape,
                          const int64_t *reps, int64_t esize) {
  if (nd == 0) {
    memcpy(out, src, (size_t)esize);
    return;
  }
  int64_t ostr[EM_MAX_DIMS], istr[EM_MAX_DIMS];
  int64_t o = esize, i = esize;
  for (int d = nd - 1; d >= 0; d--) {
    ostr[d] = o;
    istr[d] = i;
    o *= shape[d] * reps[d];
    i *= shape[d];
  }
  repeat_rec(out, src, 0, nd, shape, reps, ostr, istr);
}

void em__cpu_register_shape(void) {
#define REG(ENUM, T, C, LD, ST)                                        \
  em__register_kernel(EM_OP_CAT, EM_CPU, EM_##ENUM, (void *)cat_kernel); \
  em__register_kernel(EM_OP_REPEAT, EM_CPU, EM_##ENUM, (void *)repeat_kernel);
  EM_ALL_TYPES(REG)
#undef REG
}
