/* Collective algorithms over a point-to-point byte transport
 * (em_transport), independent of how the bytes travel (gloo's
 * allreduce_ring.h beside transport/tcp/pair.h).
 *
 *   allreduce       small: recursive doubling (log2 W exchanges of the
 *                   whole buffer); medium: recursive halving-doubling
 *                   (Rabenseifner: reduce-scatter by halving, allgather by
 *                   doubling); both fold the extra ranks of a
 *                   non-power-of-two world into their neighbours first and
 *                   hand them the result last. large: ring reduce-scatter +
 *                   allgather, each chunk cut into slices and the two phases
 *                   run as one pipelined stream: receiving slice k overlaps
 *                   reducing slice k-1 and forwarding slice k-2.
 *   broadcast       binomial tree, pipelined in slices.
 *   reduce          binomial tree towards the root, pipelined in slices.
 *   allgather       ring, pipelined in slices, received straight into place.
 *   reduce_scatter  the ring's reduce-scatter half on a scratch copy.
 *   gather/scatter  direct to/from the root.
 *   all_to_all      every pair at once (the transport interleaves them).
 *   barrier         dissemination with empty messages.
 *   send/recv       one message.
 *
 * Every rank computes the same bits: ring results are computed once by
 * the chunk's owner and copied; exchanges combine "lower rank op higher
 * rank" on both sides. Zero-element collectives still exchange empty
 * messages, so a rank that disagrees about a size fails at the
 * transport's length check instead of drifting out of step. */
#define _GNU_SOURCE
#include <stdlib.h>

#include "comm/pg_impl.h"

/* Tunables (bytes). A slice is the unit of pipelining (EMBER_PG_SLICE_BYTES
 * overrides it); WINDOW receives are posted ahead in the ring. */
#define SLICE_DEFAULT ((int64_t)256 << 10)
#define WINDOW 4
#define RD_MAX_BYTES ((int64_t)16 << 10)
#define RD2_MAX_BYTES ((int64_t)128 << 10) /* world 2: one exchange is cheapest */
#define HD_MAX_BYTES ((int64_t)512 << 10)
/* A power-of-two world folds nothing: there halving-doubling's log2 W
 * exchanges of whole halves beat the ring's many slices up to here
 * (measured over loopback at 2 and 4 ranks: 1 MiB 420-690 -> 300-620 us
 * at 2 ranks, 2.5 -> 1.5-1.9 ms at 4; even at 4 MiB; the ring wins from
 * 8 MiB, and at 3 ranks, where folding sends whole buffers, from 1 MiB). */
#define HD_POW2_MAX_BYTES ((int64_t)4 << 20)

typedef struct algo {
  em_transport *t;
  em_coll *c;
  int rank, W;
  size_t es;
  int64_t dl;
} algo;

#define ISEND(a, peer, buf, n, req) (a)->t->isend((a)->t->ctx, (peer), (buf), (size_t)(n), (req))
#define IRECV(a, peer, buf, n, req) (a)->t->irecv((a)->t->ctx, (peer), (buf), (size_t)(n), (req))
#define WAIT(a, req) (a)->t->wait((a)->t->ctx, (req), (a)->dl)
#define WAIT_ALL(a) (a)->t->wait_all((a)->t->ctx, (a)->dl)

/* Part p of n elements split into k nearly equal parts (the first n % k
 * parts one longer). */
static inline int64_t part_off(int64_t n, int64_t k, int64_t p) {
  return p * (n / k) + (p < n % k ? p : n % k);
}
static inline int64_t part_len(int64_t n, int64_t k, int64_t p) {
  return n / k + (p < n % k ? 1 : 0);
}
static inline int mod(int x, int m) { return ((x % m) + m) % m; }

static void *scratch(size_t n) { return malloc(n ? n : 1); }

static em_status nomem(const char *what, size_t n) {
  return em__set_error(EM_ERR_NOMEM, "%s: cannot allocate %zu bytes of scratch memory", what, n);
}

static int64_t slice_bytes(void) {
  static int64_t cached = -1;
  int64_t v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (v < 0) {
    v = (int64_t)em__pg_env_bytes("EMBER_PG_SLICE_BYTES", SLICE_DEFAULT, 4096, 1u << 30);
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
  }
  return v;
}
#define SLICE_BYTES slice_bytes()

static int64_t env_algo(void) {
  static int cached = -1; /* 0 none, 1 rd, 2 hd, 3 ring */
  int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (v < 0) {
    const char *e = getenv("EMBER_PG_ALGO");
    v = 0;
    if (e && !strcmp(e, "rd")) v = 1;
    else if (e && !strcmp(e, "hd")) v = 2;
    else if (e && !strcmp(e, "ring")) v = 3;
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
  }
  return v;
}

static int pick_allreduce(int64_t nbytes, int W) {
  int forced = (int)env_algo();
  if (forced) return forced;
  if (nbytes <= RD_MAX_BYTES || (W == 2 && nbytes <= RD2_MAX_BYTES)) return 1;
  if (nbytes <= HD_MAX_BYTES || ((W & (W - 1)) == 0 && nbytes <= HD_POW2_MAX_BYTES)) return 2;
  return 3;
}

const char *em__algo_allreduce_name(int64_t nbytes, int world) {
  switch (pick_allreduce(nbytes, world)) {
    case 1: return "recursive_doubling";
    case 2: return "halving_doubling";
    default: return "ring";
  }
}

/* Combines so that both sides of an exchange get the same bits:
 * dst = (mine if I am the lower rank) op (theirs). */
static em_status combine(algo *a, void *mine, const void *theirs, int64_t n, bool i_am_lower) {
  if (i_am_lower) return em__reduce_out(mine, mine, theirs, n, a->c->dtype, a->c->op);
  return em__reduce_out(mine, theirs, mine, n, a->c->dtype, a->c->op);
}

/* ---- folding a non-power-of-two world -------------------------------------------
 * p = largest power of two <= W, extra = W - p. Among the first 2*extra
 * ranks each even rank hands its buffer to the odd rank above and sits out;
 * the p survivors get virtual ranks 0..p-1. */
typedef struct fold {
  int p, extra;
  int vrank; /* -1 for a rank that sits out */
} fold;

static fold fold_of(int rank, int W) {
  fold f;
  f.p = 1;
  while (f.p * 2 <= W) f.p *= 2;
  f.extra = W - f.p;
  if (rank < 2 * f.extra) f.vrank = (rank % 2) ? rank / 2 : -1;
  else f.vrank = rank - f.extra;
  return f;
}
static int real_rank(const fold *f, int v) { return v < f->extra ? 2 * v + 1 : v + f->extra; }

static em_status fold_in(algo *a, const fold *f, char *buf, int64_t n, char *tmp) {
  if (a->rank >= 2 * f->extra) return EM_OK;
  size_t bytes = (size_t)n * a->es;
  if (f->vrank < 0) { /* even: hand over */
    EM_CHECK(ISEND(a, a->rank + 1, buf, bytes, NULL));
    return WAIT_ALL(a);
  }
  EM_CHECK(IRECV(a, a->rank - 1, tmp, bytes, NULL));
  EM_CHECK(WAIT_ALL(a));
  return combine(a, buf, tmp, n, false); /* the sender (rank - 1) is lower */
}

static em_status fold_out(algo *a, const fold *f, char *buf, int64_t n) {
  if (a->rank >= 2 * f->extra) return EM_OK;
  size_t bytes = (size_t)n * a->es;
  if (f->vrank < 0) EM_CHECK(IRECV(a, a->rank + 1, buf, bytes, NULL));
  else EM_CHECK(ISEND(a, a->rank - 1, buf, bytes, NULL));
  return WAIT_ALL(a);
}

/* ---- allreduce: recursive doubling ------------------------------------------------ */

static em_status allreduce_rd(algo *a, char *buf, int64_t n) {
  size_t bytes = (size_t)n * a->es;
  char *tmp = scratch(bytes);
  if (!tmp) return nomem("allreduce", bytes);
  fold f = fold_of(a->rank, a->W);
  em_status st;
  EM_CHECK_GOTO(fold_in(a, &f, buf, n, tmp), st, out);
  if (f.vrank >= 0) {
    for (int mask = 1; mask < f.p; mask <<= 1) {
      int pv = f.vrank ^ mask, peer = real_rank(&f, pv);
      EM_CHECK_GOTO(IRECV(a, peer, tmp, bytes, NULL), st, out);
      EM_CHECK_GOTO(ISEND(a, peer, buf, bytes, NULL), st, out);
      EM_CHECK_GOTO(WAIT_ALL(a), st, out);
      EM_CHECK_GOTO(combine(a, buf, tmp, n, f.vrank < pv), st, out);
    }
  }
  st = fold_out(a, &f, buf, n);
out:
  free(tmp);
  return st;
}

/* ---- allreduce: recursive halving-doubling ---------------------------------------- */

static em_status allreduce_hd(algo *a, char *buf, int64_t n) {
  fold f = fold_of(a->rank, a->W);
  size_t es = a->es;
  size_t tbytes = (size_t)n * es; /* fold_in needs the whole buffer */
  char *tmp = scratch(tbytes);
  if (!tmp) return nomem("allreduce", tbytes);
  em_status st;
  EM_CHECK_GOTO(fold_in(a, &f, buf, n, tmp), st, out);
  if (f.vrank >= 0 && f.p > 1) {
    const int p = f.p, v = f.vrank;
    /* blocks b of the buffer: part_off(n, p, b) */
#define BOFF(b) part_off(n, p, (b))
    int b0 = 0, nb = p;
    for (int mask = p / 2; mask >= 1; mask >>= 1) {
      int pv = v ^ mask, peer = real_rank(&f, pv), half = nb / 2;
      int keep0 = (v & mask) ? b0 + half : b0;
      int give0 = (v & mask) ? b0 : b0 + half;
      int64_t ko = BOFF(keep0), kl = BOFF(keep0 + half) - ko;
      int64_t go = BOFF(give0), gl = BOFF(give0 + half) - go;
      EM_CHECK_GOTO(IRECV(a, peer, tmp, (size_t)kl * es, NULL), st, out);
      EM_CHECK_GOTO(ISEND(a, peer, buf + go * es, (size_t)gl * es, NULL), st, out);
      EM_CHECK_GOTO(WAIT_ALL(a), st, out);
      EM_CHECK_GOTO(combine(a, buf + ko * es, tmp, kl, v < pv), st, out);
      b0 = keep0;
      nb = half;
    }
    for (int mask = 1; mask < p; mask <<= 1) {
      int pv = v ^ mask, peer = real_rank(&f, pv);
      int other0 = (v & mask) ? b0 - nb : b0 + nb;
      int64_t mo = BOFF(b0), ml = BOFF(b0 + nb) - mo;
      int64_t oo = BOFF(other0), ol = BOFF(other0 + nb) - oo;
      EM_CHECK_GOTO(IRECV(a, peer, buf + oo * es, (size_t)ol * es, NULL), st, out);
      EM_CHECK_GOTO(ISEND(a, peer, buf + mo * es, (size_t)ml * es, NULL), st, out);
      EM_CHECK_GOTO(WAIT_ALL(a), st, out);
      if (v & mask) b0 = other0;
      nb *= 2;
    }
#undef BOFF
  }
  st = fold_out(a, &f, buf, n);
out:
  free(tmp);
  return st;
}

/* ---- ring reduce-scatter (+ allgather), pipelined ----------------------------------
 * buf holds W chunks (off[c], len[c] in elements). Reduce-scatter step s
 * (0..W-2) sends chunk r-s-1 to the right and reduces chunk r-s-2 from the
 * left, so rank r ends owning chunk r; allgather step s sends chunk r-s and
 * receives chunk r-s-1 into place. Each chunk travels in S slices and both
 * phases form one stream of messages from the left neighbour: RS messages
 * land in a window of WINDOW scratch slots, AG messages straight in buf. */
static em_status ring(algo *a, char *buf, const int64_t *off, const int64_t *len, bool gather) {
  const int W = a->W, r = a->rank, left = mod(r - 1, W), right = mod(r + 1, W);
  const size_t es = a->es;
  int64_t maxlen = 0;
  for (int c = 0; c < W; c++)
    if (len[c] > maxlen) maxlen = len[c];
  int64_t S = (maxlen * (int64_t)es + SLICE_BYTES - 1) / SLICE_BYTES;
  if (S < 1) S = 1;
  const int64_t maxslice = part_len(maxlen, S, 0);
  const int64_t n_rs = (int64_t)(W - 1) * S, M = n_rs * (gather ? 2 : 1);
  const int64_t D = n_rs < WINDOW ? n_rs : WINDOW;
  size_t tbytes = (size_t)(D * maxslice) * es;
  char *tmp = scratch(tbytes);
  int *rreq = malloc(sizeof(int) * (size_t)(M ? M : 1));
  em_status st = EM_OK;
  if (!tmp || !rreq) {
    st = nomem("ring", tbytes);
    goto out;
  }
#define SOFF(c, j) (off[(c)] + part_off(len[(c)], S, (j)))
#define SLEN(c, j) part_len(len[(c)], S, (j))
  /* message m of the incoming stream: its chunk, slice and destination */
#define POST(m)                                                                          \
  do {                                                                                   \
    int64_t m_ = (m);                                                                    \
    if (m_ < n_rs) {                                                                     \
      int c_ = mod(r - (int)(m_ / S) - 2, W);                                            \
      EM_CHECK_GOTO(IRECV(a, left, tmp + (size_t)((m_ % D) * maxslice) * es,             \
                          (size_t)SLEN(c_, m_ % S) * es, &rreq[m_]), st, out);           \
    } else {                                                                             \
      int64_t mm_ = m_ - n_rs;                                                           \
      int c_ = mod(r - (int)(mm_ / S) - 1, W);                                           \
      EM_CHECK_GOTO(IRECV(a, left, buf + (size_t)SOFF(c_, mm_ % S) * es,                 \
                          (size_t)SLEN(c_, mm_ % S) * es, &rreq[m_]), st, out);          \
    }                                                                                    \
  } while (0)

  {
    int c0 = mod(r - 1, W);
    for (int64_t j = 0; j < S; j++)
      EM_CHECK_GOTO(ISEND(a, right, buf + (size_t)SOFF(c0, j) * es, (size_t)SLEN(c0, j) * es, NULL),
                    st, out);
  }
  for (int64_t m = 0; m < D && m < M; m++) POST(m);
  for (int64_t m = 0; m < M; m++) {
    EM_CHECK_GOTO(WAIT(a, rreq[m]), st, out);
    if (m < n_rs) {
      int s = (int)(m / S);
      int64_t j = m % S;
      int c = mod(r - s - 2, W);
      EM_CHECK_GOTO(em__reduce_into(buf + (size_t)SOFF(c, j) * es,
                                    tmp + (size_t)((m % D) * maxslice) * es, SLEN(c, j),
                                    a->c->dtype, a->c->op),
                    st, out);
      if (m + D < M) POST(m + D);
      if (s + 1 < W - 1 || gather) /* forward; at the last step c == r starts the allgather */
        EM_CHECK_GOTO(ISEND(a, right, buf + (size_t)SOFF(c, j) * es, (size_t)SLEN(c, j) * es, NULL),
                      st, out);
    } else {
      int64_t mm = m - n_rs;
      int s = (int)(mm / S);
      int64_t j = mm % S;
      int c = mod(r - s - 1, W);
      if (m + D < M) POST(m + D);
      if (s + 1 < W - 1)
        EM_CHECK_GOTO(ISEND(a, right, buf + (size_t)SOFF(c, j) * es, (size_t)SLEN(c, j) * es, NULL),
                      st, out);
    }
  }
  st = WAIT_ALL(a);
#undef POST
#undef SOFF
#undef SLEN
out:
  free(tmp);
  free(rreq);
  return st;
}

static em_status allreduce_ring(algo *a, char *buf, int64_t n) {
  int64_t *off = malloc(sizeof(int64_t) * 2 * (size_t)a->W);
  if (!off) return nomem("allreduce", 0);
  int64_t *len = off + a->W;
  for (int c = 0; c < a->W; c++) {
    off[c] = part_off(n, a->W, c);
    len[c] = part_len(n, a->W, c);
  }
  em_status st = ring(a, buf, off, len, true);
  free(off);
  return st;
}

static em_status allreduce(algo *a) {
  em_coll *c = a->c;
  char *buf = c->out;
  if (c->in != c->out && c->count > 0) memcpy(c->out, c->in, (size_t)c->count * a->es);
  em_status st = EM_OK;
  if (a->W > 1) {
    switch (pick_allreduce(c->count * (int64_t)a->es, a->W)) {
      case 1: st = allreduce_rd(a, buf, c->count); break;
      case 2: st = allreduce_hd(a, buf, c->count); break;
      default: st = allreduce_ring(a, buf, c->count); break;
    }
  }
  if (!st && c->op == EM_REDUCE_AVG) em__reduce_avg_finish(buf, c->count, c->dtype, a->W);
  return st;
}

/* ---- binomial trees ---------------------------------------------------------------- */

/* The tree rooted at root: vrank = rank - root (mod W); parent clears the
 * lowest set bit; children are vrank + 2^k for 2^k below that bit, the
 * largest subtree first. */
typedef struct tree {
  int parent; /* real rank, -1 at the root */
  int nchild;
  int child[32];
} tree;

static tree tree_of(int rank, int root, int W) {
  tree t = {.parent = -1, .nchild = 0};
  int v = mod(rank - root, W), top = 1;
  while (top < W) top <<= 1;
  int lim = top;
  for (int mask = 1; mask < top; mask <<= 1) {
    if (v & mask) {
      t.parent = mod(v - mask + root, W);
      lim = mask;
      break;
    }
  }
  for (int mask = lim >> 1; mask >= 1; mask >>= 1)
    if (v + mask < W) t.child[t.nchild++] = mod(v + mask + root, W);
  return t;
}

static int64_t nslices(int64_t n, size_t es) {
  int64_t s = (n * (int64_t)es + SLICE_BYTES - 1) / SLICE_BYTES;
  return s < 1 ? 1 : s;
}

static em_status broadcast(algo *a) {
  em_coll *c = a->c;
  char *buf = c->out;
  const size_t es = a->es;
  if (a->rank == c->root && c->in && c->in != c->out && c->count > 0)
    memcpy(c->out, c->in, (size_t)c->count * es);
  if (a->W == 1) return EM_OK;
  tree t = tree_of(a->rank, c->root, a->W);
  const int64_t n = c->count, S = nslices(n, es);
  int *rreq = NULL;
  em_status st = EM_OK;
  if (t.parent >= 0) {
    rreq = malloc(sizeof(int) * (size_t)S);
    if (!rreq) return nomem("broadcast", 0);
    for (int64_t j = 0; j < S; j++)
      EM_CHECK_GOTO(IRECV(a, t.parent, buf + (size_t)part_off(n, S, j) * es,
                          (size_t)part_len(n, S, j) * es, &rreq[j]), st, out);
  }
  for (int64_t j = 0; j < S; j++) {
    if (rreq) EM_CHECK_GOTO(WAIT(a, rreq[j]), st, out);
    for (int k = 0; k < t.nchild; k++)
      EM_CHECK_GOTO(ISEND(a, t.child[k], buf + (size_t)part_off(n, S, j) * es,
                          (size_t)part_len(n, S, j) * es, NULL), st, out);
  }
  st = WAIT_ALL(a);
out:
  free(rreq);
  return st;
}

/* Pipelined tree reduce: each node folds its children's slices into an
 * accumulator (root: out; inner nodes: a scratch copy of in, so non-root
 * inputs stay intact; leaves send in as it is) and passes each finished
 * slice up. Children's slices land in WINDOW slots per child. */
static em_status reduce(algo *a) {
  em_coll *c = a->c;
  const size_t es = a->es;
  const int64_t n = c->count;
  const bool is_root = a->rank == c->root;
  tree t = tree_of(a->rank, c->root, a->W);
  char *acc = NULL, *own = NULL, *tmp = NULL;
  int *rreq = NULL;
  em_status st = EM_OK;
  if (is_root) {
    acc = c->out;
    if (c->in != c->out && n > 0) memcpy(acc, c->in, (size_t)n * es);
  } else if (t.nchild > 0) {
    own = scratch((size_t)n * es);
    if (!own) return nomem("reduce", (size_t)n * es);
    if (n > 0) memcpy(own, c->in, (size_t)n * es);
    acc = own;
  } else {
    acc = c->in;
  }
  const int64_t S = nslices(n, es), slice = part_len(n, S, 0);
  const int64_t D = S < WINDOW ? S : WINDOW;
  if (t.nchild > 0) {
    size_t tb = (size_t)(t.nchild * D * slice) * es;
    tmp = scratch(tb);
    rreq = malloc(sizeof(int) * (size_t)(t.nchild * S));
    if (!tmp || !rreq) {
      st = nomem("reduce", tb);
      goto out;
    }
  }
#define SLOT(k, j) (tmp + (size_t)(((k) * D + (j) % D) * slice) * es)
#define RPOST(k, j)                                                                      \
  EM_CHECK_GOTO(IRECV(a, t.child[(k)], SLOT((k), (j)), (size_t)part_len(n, S, (j)) * es,  \
                      &rreq[(k) * S + (j)]), st, out)
  /* post the first window of every child, child-major per peer (each
   * peer's own order is what matters) */
  for (int k = 0; k < t.nchild; k++)
    for (int64_t j = 0; j < D; j++) RPOST(k, j);
  for (int64_t j = 0; j < S; j++) {
    char *dst = acc + (size_t)part_off(n, S, j) * es;
    for (int k = 0; k < t.nchild; k++) {
      EM_CHECK_GOTO(WAIT(a, rreq[k * S + j]), st, out);
      EM_CHECK_GOTO(em__reduce_into(dst, SLOT(k, j), part_len(n, S, j), c->dtype, c->op), st, out);
      if (j + D < S) RPOST(k, j + D);
    }
    if (t.parent >= 0)
      EM_CHECK_GOTO(ISEND(a, t.parent, dst, (size_t)part_len(n, S, j) * es, NULL), st, out);
  }
#undef SLOT
#undef RPOST
  st = WAIT_ALL(a);
  if (!st && is_root && c->op == EM_REDUCE_AVG) em__reduce_avg_finish(acc, n, c->dtype, a->W);
out:
  free(own);
  free(tmp);
  free(rreq);
  return st;
}

/* ---- allgather / reduce_scatter ----------------------------------------------------- */

static em_status allgather(algo *a) {
  em_coll *c = a->c;
  const size_t es = a->es;
  const int W = a->W, r = a->rank, left = mod(r - 1, W), right = mod(r + 1, W);
  const int64_t n = c->count;
  char *out = c->out;
  if (n > 0 && c->in != out + (size_t)(r * n) * es) memcpy(out + (size_t)(r * n) * es, c->in, (size_t)n * es);
  if (W == 1) return EM_OK;
  const int64_t S = nslices(n, es), M = (int64_t)(W - 1) * S;
  int *rreq = malloc(sizeof(int) * (size_t)M);
  if (!rreq) return nomem("allgather", 0);
  em_status st = EM_OK;
#define AOFF(ch, j) ((size_t)((ch) * n + part_off(n, S, (j))) * es)
#define ALEN(j) ((size_t)part_len(n, S, (j)) * es)
  for (int64_t m = 0; m < M; m++) {
    int ch = mod(r - (int)(m / S) - 1, W);
    EM_CHECK_GOTO(IRECV(a, left, out + AOFF(ch, m % S), ALEN(m % S), &rreq[m]), st, out);
  }
  for (int64_t j = 0; j < S; j++)
    EM_CHECK_GOTO(ISEND(a, right, out + AOFF(r, j), ALEN(j), NULL), st, out);
  for (int64_t m = 0; m < M; m++) {
    int s = (int)(m / S);
    if (s + 1 >= W - 1) break; /* the last step's slices are not forwarded */
    EM_CHECK_GOTO(WAIT(a, rreq[m]), st, out);
    int ch = mod(r - s - 1, W);
    EM_CHECK_GOTO(ISEND(a, right, out + AOFF(ch, m % S), ALEN(m % S), NULL), st, out);
  }
#undef AOFF
#undef ALEN
  st = WAIT_ALL(a);
out:
  free(rreq);
  return st;
}

static em_status reduce_scatter(algo *a) {
  em_coll *c = a->c;
  const size_t es = a->es;
  const int W = a->W;
  const int64_t n = c->count;
  size_t bytes = (size_t)(W * n) * es;
  em_status st = EM_OK;
  if (W == 1) {
    if (n > 0 && c->out != c->in) memcpy(c->out, c->in, (size_t)n * es);
  } else {
    char *work = scratch(bytes);
    int64_t *off = malloc(sizeof(int64_t) * 2 * (size_t)W);
    if (!work || !off) {
      free(work);
      free(off);
      return nomem("reduce_scatter", bytes);
    }
    if (bytes) memcpy(work, c->in, bytes);
    int64_t *len = off + W;
    for (int ch = 0; ch < W; ch++) {
      off[ch] = ch * n;
      len[ch] = n;
    }
    st = ring(a, work, off, len, false);
    if (!st && n > 0) memcpy(c->out, work + (size_t)(a->rank * n) * es, (size_t)n * es);
    free(work);
    free(off);
  }
  if (!st && c->op == EM_REDUCE_AVG) em__reduce_avg_finish(c->out, n, c->dtype, W);
  return st;
}

/* ---- direct patterns ------------------------------------------------------------------ */

static em_status gather(algo *a) {
  em_coll *c = a->c;
  const size_t cb = (size_t)c->count * a->es;
  if (a->rank != c->root) {
    EM_CHECK(ISEND(a, c->root, c->in, cb, NULL));
    return WAIT_ALL(a);
  }
  char *out = c->out;
  for (int p = 0; p < a->W; p++) {
    if (p == a->rank) {
      if (cb && out + p * cb != (char *)c->in) memcpy(out + p * cb, c->in, cb);
    } else {
      EM_CHECK(IRECV(a, p, out + p * cb, cb, NULL));
    }
  }
  return WAIT_ALL(a);
}

static em_status scatter(algo *a) {
  em_coll *c = a->c;
  const size_t cb = (size_t)c->count * a->es;
  if (a->rank != c->root) {
    EM_CHECK(IRECV(a, c->root, c->out, cb, NULL));
    return WAIT_ALL(a);
  }
  const char *in = c->in;
  for (int i = 1; i <= a->W; i++) { /* root's own chunk last: the peers' go out first */
    int p = mod(a->rank + i, a->W);
    if (p == a->rank) {
      if (cb && in + p * cb != (char *)c->out) memcpy(c->out, in + p * cb, cb);
    } else {
      EM_CHECK(ISEND(a, p, in + p * cb, cb, NULL));
    }
  }
  return WAIT_ALL(a);
}

static em_status all_to_all(algo *a) {
  em_coll *c = a->c;
  const size_t es = a->es;
  const int W = a->W, r = a->rank;
  int64_t so = 0, ro = 0, my_so = 0, my_ro = 0;
  for (int p = 0; p < W; p++) {
    if (p == r) {
      my_so = so;
      my_ro = ro;
    }
    so += c->send_counts[p];
    ro += c->recv_counts[p];
  }
  (void)so;
  (void)ro;
  if (c->send_counts[r] != c->recv_counts[r])
    return em__set_error(EM_ERR_SHAPE, "all_to_all: rank %d sends itself %lld elements but "
                         "expects %lld", r, (long long)c->send_counts[r],
                         (long long)c->recv_counts[r]);
  /* offsets per peer */
  int64_t *soff = malloc(sizeof(int64_t) * 2 * (size_t)W);
  if (!soff) return nomem("all_to_all", 0);
  int64_t *roff = soff + W;
  so = ro = 0;
  for (int p = 0; p < W; p++) {
    soff[p] = so;
    roff[p] = ro;
    so += c->send_counts[p];
    ro += c->recv_counts[p];
  }
  em_status st = EM_OK;
  for (int i = 1; i < W; i++) {
    int p = mod(r - i, W);
    EM_CHECK_GOTO(IRECV(a, p, (char *)c->out + (size_t)roff[p] * es, (size_t)c->recv_counts[p] * es,
                        NULL), st, out);
  }
  for (int i = 1; i < W; i++) {
    int p = mod(r + i, W);
    EM_CHECK_GOTO(ISEND(a, p, (const char *)c->in + (size_t)soff[p] * es,
                        (size_t)c->send_counts[p] * es, NULL), st, out);
  }
  if (c->recv_counts[r] > 0)
    memcpy((char *)c->out + (size_t)my_ro * es, (const char *)c->in + (size_t)my_so * es,
           (size_t)c->recv_counts[r] * es);
  st = WAIT_ALL(a);
out:
  free(soff);
  return st;
}

static em_status barrier(algo *a) {
  for (int k = 1; k < a->W; k <<= 1) {
    EM_CHECK(IRECV(a, mod(a->rank - k, a->W), NULL, 0, NULL));
    EM_CHECK(ISEND(a, mod(a->rank + k, a->W), NULL, 0, NULL));
    EM_CHECK(WAIT_ALL(a));
  }
  return EM_OK;
}

em_status em__algo_run(em_transport *t, em_coll *c) {
  algo a = {.t = t, .c = c, .rank = t->rank, .W = t->size, .es = em_dtype_size(c->dtype),
            .dl = c->deadline_ms};
  switch (c->kind) {
    case EM_COLL_ALLREDUCE: return allreduce(&a);
    case EM_COLL_BROADCAST: return broadcast(&a);
    case EM_COLL_REDUCE: return reduce(&a);
    case EM_COLL_ALLGATHER: return allgather(&a);
    case EM_COLL_REDUCE_SCATTER: return reduce_scatter(&a);
    case EM_COLL_GATHER: return gather(&a);
    case EM_COLL_SCATTER: return scatter(&a);
    case EM_COLL_ALL_TO_ALL: return all_to_all(&a);
    case EM_COLL_SEND:
      EM_CHECK(ISEND(&a, c->root, c->in, (size_t)c->count * a.es, NULL));
      return WAIT_ALL(&a);
    case EM_COLL_RECV:
      EM_CHECK(IRECV(&a, c->root, c->out, (size_t)c->count * a.es, NULL));
      return WAIT_ALL(&a);
    case EM_COLL_BARRIER: return barrier(&a);
    default: break;
  }
  return em__set_error(EM_ERR_INTERNAL, "collective kind %d has no algorithm", (int)c->kind);
}
