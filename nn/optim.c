/* Optimizers: SGD, Adam, AdamW, RMSprop, Adagrad with param groups and
 * state dicts (layout documented in nn/optim.h).
 *
 * The update rules are PyTorch 1.13's single-tensor ("for-loop")
 * implementations, op for op: each kernel below evaluates, per element and
 * in the parameter's precision, the same sequence of operations PyTorch
 * runs as whole-tensor ops (scalars cast to the tensor's type as PyTorch's
 * CPU kernels do), e.g. Adam:
 *     m = m * b1 + (1 - b1) * g
 *     v = v * b2 + (1 - b2) * g * g
 *     p = p + (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Kernels run on contiguous float32/float64 data, split across threads;
 * a parameter or gradient in another layout or dtype is staged through a
 * contiguous float32/float64 copy and written back. Updates run with grad
 * mode off and bump the version counters of what they write.
 *
 * State per parameter (created at the first step that has a gradient, as
 * PyTorch; Adagrad's at construction):
 *   SGD      s[0] momentum_buffer (only with momentum)
 *   Adam(W)  s[0] exp_avg, s[1] exp_avg_sq, s[2] max_exp_avg_sq (amsgrad), step
 *   RMSprop  s[0] square_avg, s[1] momentum_buffer (momentum > 0),
 *            s[2] grad_avg (centered), step
 *   Adagrad  s[0] sum, step
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/core_impl.h"
#include "nn/nn.h"

typedef enum okind { K_SGD, K_ADAM, K_ADAMW, K_RMSPROP, K_ADAGRAD } okind;

static const char *const KIND_NAME[] = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad"};

typedef struct hyper {
  double lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha, lr_decay, init_acc;
  bool nesterov, maximize, amsgrad, centered;
} hyper;

typedef struct group {
  hyper h;
  double initial_lr;   /* the lr at creation until a scheduler sets it */
  bool has_initial_lr; /* set by a scheduler (PyTorch's group['initial_lr']) */
  int first, n;        /* the group's params are ps[first, first + n) */
} group;

typedef struct pstate {
  em_tensor *p;
  int64_t step;
  em_tensor *s[3];
} pstate;

struct em_optimizer {
  okind kind;
  hyper defaults; /* the constructor's options, for add_param_group(NULL) */
  int ng;
  group *g;
  int np;
  pstate *ps;
};

/* State entry names, by kind and slot. */
static const char *const STATE_NAME[5][3] = {
    {"momentum_buffer", NULL, NULL},
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    {"square_avg", "momentum_buffer", "grad_avg"},
    {"sum", NULL, NULL},
};

/* ---- options ------------------------------------------------------------------------ */

static em_status bad(const char *kind, const char *what, double v) {
  return em__set_error(EM_ERR_INVALID, "%s: Invalid %s: %g", kind, what, v);
}

static em_status sgd_hyper(const em_sgd_options *o, hyper *h) {
  if (!o) return em__set_error(EM_ERR_INVALID, "SGD: options (with lr) are required");
  if (!(o->lr > 0)) return bad("SGD", "learning rate", o->lr);
  if (!(o->momentum >= 0)) return bad("SGD", "momentum value", o->momentum);
  if (!(o->weight_decay >= 0)) return bad("SGD", "weight_decay value", o->weight_decay);
  if (isnan(o->dampening)) return bad("SGD", "dampening value", o->dampening);
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return em__set_error(EM_ERR_INVALID,
                         "SGD: Nesterov momentum requires a momentum and zero dampening");
  *h = (hyper){.lr = o->lr, .momentum = o->momentum, .dampening = o->dampening,
               .weight_decay = o->weight_decay, .nesterov = o->nesterov, .maximize = o->maximize};
  return EM_OK;
}

static em_status adam_hyper(const char *kind, bool decoupled, const em_adam_options *o, hyper *h) {
  if (!o) return em__set_error(EM_ERR_INVALID, "%s: options (with lr) are required", kind);
  double b1 = o->beta1 == 0 ? 0.9 : o->beta1, b2 = o->beta2 == 0 ? 0.999 : o->beta2;
  double eps = o->eps == 0 ? 1e-8 : o->eps;
  double wd = o->weight_decay == 0 && decoupled && !o->weight_decay_zero ? 1e-2 : o->weight_decay;
  if (!(o->lr > 0)) return bad(kind, "learning rate", o->lr);
  if (!(eps >= 0)) return bad(kind, "epsilon value", eps);
  if (!(b1 >= 0 && b1 < 1)) return bad(kind, "beta parameter at index 0", b1);
  if (!(b2 >= 0 && b2 < 1)) return bad(kind, "beta parameter at index 1", b2);
  if (!(wd >= 0)) return bad(kind, "weight_decay value", wd);
  *h = (hyper){.lr = o->lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd,
               .amsgrad = o->amsgrad, .maximize = o->maximize};
  return EM_OK;
}

static em_status rmsprop_hyper(const em_rmsprop_options *o, hyper *h) {
  if (!o) return em__set_error(EM_ERR_INVALID, "RMSprop: options (with lr) are required");
  double alpha = o->alpha == 0 ? 0.99 : o->alpha, eps = o->eps == 0 ? 1e-8 : o->eps;
  if (!(o->lr > 0)) return bad("RMSprop", "learning rate", o->lr);
  if (!(eps >= 0)) return bad("RMSprop", "epsilon value", eps);
  if (!(o->momentum >= 0)) return bad("RMSprop", "momentum value", o->momentum);
  if (!(o->weight_decay >= 0)) return bad("RMSprop", "weight_decay value", o->weight_decay);
  if (!(alpha >= 0)) return bad("RMSprop", "alpha value", alpha);
  *h = (hyper){.lr = o->lr, .alpha = alpha, .eps = eps, .weight_decay = o->weight_decay,
               .momentum = o->momentum, .centered = o->centered, .maximize = o->maximize};
  return EM_OK;
}

static em_status adagrad_hyper(const em_adagrad_options *o, hyper *h) {
  em_adagrad_options d = {0};
  if (o) d = *o;
  double lr = d.lr == 0 ? 1e-2 : d.lr, eps = d.eps == 0 ? 1e-10 : d.eps;
  if (!(lr >= 0)) return bad("Adagrad", "learning rate", lr);
  if (!(d.lr_decay >= 0)) return bad("Adagrad", "lr_decay value", d.lr_decay);
  if (!(d.weight_decay >= 0)) return bad("Adagrad", "weight_decay value", d.weight_decay);
  if (!(d.initial_accumulator_value >= 0))
    return bad("Adagrad", "initial_accumulator_value value", d.initial_accumulator_value);
  if (!(eps >= 0)) return bad("Adagrad", "epsilon value", eps);
  *h = (hyper){.lr = lr, .lr_decay = d.lr_decay, .weight_decay = d.weight_decay,
               .init_acc = d.initial_accumulator_value, .eps = eps, .maximize = d.maximize};
  return EM_OK;
}

static em_status to_hyper(okind k, const void *o, hyper *h) {
  switch (k) {
    case K_SGD: return sgd_hyper(o, h);
    case K_ADAM: return adam_hyper("Adam", false, o, h);
    case K_ADAMW: return adam_hyper("AdamW", true, o, h);
    case K_RMSPROP: return rmsprop_hyper(o, h);
    default: return adagrad_hyper(o, h);
  }
}

/* ---- construction ------------------------------------------------------------------- */

/* Adagrad's state exists from the start: sum = initial_accumulator_value. */
static em_status adagrad_init_state(pstate *s, const hyper *h) {
  s->step = 0;
  em_tensor_release(s->s[0]);
  s->s[0] = em_tensor_full(s->p->ndim, s->p->shape, em_scalar_float(h->init_acc),
                           (em_dtype)s->p->dtype);
  return s->s[0] ? EM_OK : em_last_status();
}

em_status em_optim_add_param_group(em_optimizer *opt, int n, em_tensor *const *params,
                                   const void *options) {
  if (!opt) return em__set_error(EM_ERR_INVALID, "add_param_group: NULL optimizer");
  const char *kind = KIND_NAME[opt->kind];
  if (n < 0 || (n > 0 && !params))
    return em__set_error(EM_ERR_INVALID, "%s: invalid parameter list (n = %d)", kind, n);
  hyper h = opt->defaults;
  if (options && to_hyper(opt->kind, options, &h)) return em_last_status();
  for (int i = 0; i < n; i++) {
    em_tensor *p = params[i];
    if (!p) return em__set_error(EM_ERR_INVALID, "%s: parameter %d is NULL", kind, i);
    if (!em_dtype_is_float((em_dtype)p->dtype))
      return em__set_error(EM_ERR_DTYPE,
                           "%s: optimizer can only optimize floating-point Tensors, but parameter "
                           "%d is %s",
                           kind, i, em_dtype_name((em_dtype)p->dtype));
    if (!em_tensor_is_leaf(p))
      return em__set_error(EM_ERR_INVALID, "%s: can't optimize a non-leaf Tensor (parameter %d)",
                           kind, i);
    for (int j = 0; j < i; j++)
      if (params[j] == p)
        return em__set_error(EM_ERR_INVALID,
                             "%s: parameter %d appears twice in the parameter group (as %d)", kind,
                             i, j);
    for (int j = 0; j < opt->np; j++)
      if (opt->ps[j].p == p)
        return em__set_error(EM_ERR_INVALID,
                             "%s: some parameters appear in more than one parameter group "
                             "(parameter %d is already optimized)",
                             kind, i);
  }
  pstate *ps = realloc(opt->ps, sizeof *ps * (size_t)(opt->np + n + 1));
  if (!ps) return em__set_error(EM_ERR_NOMEM, "%s: out of memory", kind);
  opt->ps = ps;
  group *g = realloc(opt->g, sizeof *g * (size_t)(opt->ng + 1));
  if (!g) return em__set_error(EM_ERR_NOMEM, "%s: out of memory", kind);
  opt->g = g;
  for (int i = 0; i < n; i++) {
    ps[opt->np + i] = (pstate){.p = params[i]};
    if (opt->kind == K_ADAGRAD && adagrad_init_state(&ps[opt->np + i], &h)) {
      for (int j = 0; j <= i; j++) em_tensor_release(ps[opt->np + j].s[0]);
      return em_last_status();
    }
  }
  for (int i = 0; i < n; i++) em_tensor_retain(params[i]);
  g[opt->ng] = (group){.h = h, .initial_lr = h.lr, .first = opt->np, .n = n};
  opt->ng++;
  opt->np += n;
  return EM_OK;
}

static em_optimizer *create(okind k, int n, em_tensor *const *params, const void *options) {
  hyper h;
  if (to_hyper(k, options, &h)) return NULL;
  if (n <= 0) return EM_FAIL(EM_ERR_INVALID, "%s: optimizer got an empty parameter list", KIND_NAME[k]);
  em_optimizer *opt = calloc(1, sizeof *opt);
  if (!opt) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", KIND_NAME[k]);
  opt->kind = k;
  opt->defaults = h;
  if (em_optim_add_param_group(opt, n, params, options)) {
    em_optim_free(opt);
    return NULL;
  }
  return opt;
}

em_optimizer *em_optim_sgd(int n, em_tensor *const *params, const em_sgd_options *o) {
  return create(K_SGD, n, params, o);
}
em_optimizer *em_optim_adam(int n, em_tensor *const *params, const em_adam_options *o) {
  return create(K_ADAM, n, params, o);
}
em_optimizer *em_optim_adamw(int n, em_tensor *const *params, const em_adam_options *o) {
  return create(K_ADAMW, n, params, o);
}
em_optimizer *em_optim_rmsprop(int n, em_tensor *const *params, const em_rmsprop_options *o) {
  return create(K_RMSPROP, n, params, o);
}
em_optimizer *em_optim_adagrad(int n, em_tensor *const *params, const em_adagrad_options *o) {
  em_adagrad_options d = {0};
  return create(K_ADAGRAD, n, params, o ? o : &d);
}

static void pstate_clear(pstate *s) {
  for (int k = 0; k < 3; k++) {
    em_tensor_release(s->s[k]);
    s->s[k] = NULL;
  }
  s->step = 0;
}

void em_optim_free(em_optimizer *opt) {
  if (!opt) return;
  for (int i = 0; i < opt->np; i++) {
    pstate_clear(&opt->ps[i]);
    em_tensor_release(opt->ps[i].p);
  }
  free(opt->ps);
  free(opt->g);
  free(opt);
}

int em_optim_num_groups(const em_optimizer *opt) { return opt ? opt->ng : 0; }

static group *get_group(const em_optimizer *opt, int i, const char *fn) {
  if (!opt) return EM_FAIL(EM_ERR_INVALID, "%s: NULL optimizer", fn);
  if (i < 0 || i >= opt->ng)
    return EM_FAIL(EM_ERR_INDEX, "%s: param group %d is out of range (the optimizer has %d)", fn,
                   i, opt->ng);
  return &opt->g[i];
}

double em_optim_get_lr(const em_optimizer *opt, int group) {
  struct group *g = get_group(opt, group, "get_lr");
  return g ? g->h.lr : NAN;
}

em_status em_optim_set_lr(em_optimizer *opt, int group, double lr) {
  struct group *g = get_group(opt, group, "set_lr");
  if (!g) return em_last_status();
  if (!(lr >= 0)) return em__set_error(EM_ERR_INVALID, "set_lr: Invalid learning rate: %g", lr);
  g->h.lr = lr;
  return EM_OK;
}

double em_optim_initial_lr(const em_optimizer *opt, int group) {
  struct group *g = get_group(opt, group, "initial_lr");
  return g ? g->initial_lr : NAN;
}

/* ---- internal accessors for the schedulers (nn/sched.c) ------------------------------ */

em_status em__optim_set_initial_lr(em_optimizer *opt, int group, double lr, bool only_if_unset);
bool em__optim_cycles_momentum(const em_optimizer *opt);
double em__optim_momentum(const em_optimizer *opt, int group);
void em__optim_set_momentum(em_optimizer *opt, int group, double m);
void em__optim_put_lr(em_optimizer *opt, int group, double lr);

/* A scheduler's lr, unchecked (PyTorch does not check them either). */
void em__optim_put_lr(em_optimizer *opt, int group, double lr) { opt->g[group].h.lr = lr; }

/* PyTorch's group.setdefault('initial_lr', lr) (only_if_unset) or
 * group['initial_lr'] = lr. */
em_status em__optim_set_initial_lr(em_optimizer *opt, int group, double lr, bool only_if_unset) {
  struct group *g = get_group(opt, group, "scheduler");
  if (!g) return em_last_status();
  if (only_if_unset && g->has_initial_lr) return EM_OK;
  g->initial_lr = lr;
  g->has_initial_lr = true;
  return EM_OK;
}

/* The hyper-parameter OneCycleLR cycles: SGD's and RMSprop's momentum,
 * Adam's and AdamW's beta1; Adagrad has none. */
bool em__optim_cycles_momentum(const em_optimizer *opt) { return opt->kind != K_ADAGRAD; }
double em__optim_momentum(const em_optimizer *opt, int group) {
  const hyper *h = &opt->g[group].h;
  return opt->kind == K_ADAM || opt->kind == K_ADAMW ? h->beta1 : h->momentum;
}
void em__optim_set_momentum(em_optimizer *opt, int group, double m) {
  hyper *h = &opt->g[group].h;
  if (opt->kind == K_ADAM || opt->kind == K_ADAMW)
    h->beta1 = m;
  else if (opt->kind != K_ADAGRAD)
    h->momentum = m;
}

/* ---- kernels --------------------------------------------------------------------------
 * (n) contiguous elements of p, g and the state slots, all of one dtype. */

typedef struct kargs {
  const hyper *h;
  void *p, *s0, *s1, *s2;
  const void *g;
  bool first;                      /* SGD: the momentum buffer starts as d_p */
  double step_size, bc2_sqrt, clr; /* Adam: lr / (1 - b1^t), sqrt(1 - b2^t); Adagrad: lr */
} kargs;

/* In place square roots of x[0, n). libm's sqrt may set errno, which
 * keeps GCC from vectorising any loop that calls it, so kernels with a
 * square root work in chunks: a vectorised loop leaves the radicands in a
 * buffer, this takes their (correctly rounded) roots, a second vectorised
 * loop finishes. */
static void sqrt_f32(float *x, int64_t n) {
  int64_t i = 0;
#ifdef __SSE2__
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
  for (; i < n; i++) x[i] = sqrtf(x[i]);
}
static void sqrt_f64(double *x, int64_t n) {
  int64_t i = 0;
#ifdef __SSE2__
  for (; i + 2 <= n; i += 2) _mm_storeu_pd(x + i, _mm_sqrt_pd(_mm_loadu_pd(x + i)));
#endif
  for (; i < n; i++) x[i] = sqrt(x[i]);
}

#define CHUNK 512

/* Each kernel is a body inlined into a few entry points with the flags
 * that decide which arrays are touched (momentum, amsgrad, centered)
 * constant, so every variant is a branch-free loop the compiler
 * vectorises; the other options are selects on loop invariants. Negation
 * for maximize is a multiplication by -1 (exact). */
#define INLINE static inline __attribute__((always_inline))
#define DEFINE_KERNELS(T, SUF)                                                                  \
  INLINE void sgd_body_##SUF(const kargs *a, int64_t b, int64_t e, const bool has_mom) {       \
    const hyper *h = a->h;                                                                      \
    T *restrict p = a->p, *restrict buf = a->s0;                                                \
    const T *restrict g = a->g;                                                                 \
    const T wd = (T)h->weight_decay, mom = (T)h->momentum, damp1 = (T)(1 - h->dampening);       \
    const T nlr = (T)(-h->lr), sgn = h->maximize ? (T)-1 : (T)1;                                \
    const bool has_wd = h->weight_decay != 0, nest = h->nesterov, first = a->first;             \
    for (int64_t i = b; i < e; i++) {                                                           \
      T d = g[i] * sgn;                                                                         \
      d = has_wd ? d + wd * p[i] : d;                                                           \
      if (has_mom) {                                                                            \
        T bb = first ? d : buf[i] * mom + damp1 * d;                                            \
        buf[i] = bb;                                                                            \
        d = nest ? d + mom * bb : bb;                                                           \
      }                                                                                         \
      p[i] = p[i] + nlr * d;                                                                    \
    }                                                                                           \
  }                                                                                             \
  static void sgd_##SUF(void *ctx, int64_t b, int64_t e) {                                      \
    const kargs *a = ctx;                                                                       \
    if (a->h->momentum != 0)                                                                    \
      sgd_body_##SUF(a, b, e, true);                                                            \
    else                                                                                        \
      sgd_body_##SUF(a, b, e, false);                                                           \
  }                                                                                             \
  INLINE void adam_body_##SUF(const kargs *a, int64_t b, int64_t e, const bool decoupled,       \
                              const bool ams) {                                                 \
    const hyper *h = a->h;                                                                      \
    const T b1 = (T)h->beta1, omb1 = (T)(1 - h->beta1), b2 = (T)h->beta2;                       \
    const T omb2 = (T)(1 - h->beta2), wd = (T)h->weight_decay;                                  \
    const T decay = (T)(1 - h->lr * h->weight_decay), bc2s = (T)a->bc2_sqrt, eps = (T)h->eps;   \
    const T nss = (T)(-a->step_size), sgn = h->maximize ? (T)-1 : (T)1;                         \
    const bool has_wd = h->weight_decay != 0;                                                   \
    T r[CHUNK];                                                                                 \
    for (int64_t c = b; c < e; c += CHUNK) {                                                    \
      const int64_t n = e - c < CHUNK ? e - c : CHUNK;                                          \
      T *restrict p = (T *)a->p + c, *restrict m = (T *)a->s0 + c, *restrict v = (T *)a->s1 + c; \
      T *restrict vmax = ams ? (T *)a->s2 + c : NULL;                                           \
      const T *restrict g = (const T *)a->g + c;                                                \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T gi = g[i] * sgn;                                                                      \
        if (!decoupled) gi = has_wd ? gi + wd * p[i] : gi;                                      \
        T mi = m[i] * b1 + omb1 * gi;                                                           \
        T vi = v[i] * b2 + omb2 * gi * gi;                                                      \
        m[i] = mi;                                                                              \
        v[i] = vi;                                                                              \
        if (ams) {                                                                              \
          T old = vmax[i];                                                                      \
          vi = old > vi || old != old ? old : vi; /* torch.maximum: NaN wins */                \
          vmax[i] = vi;                                                                         \
        }                                                                                       \
        r[i] = vi;                                                                              \
      }                                                                                         \
      sqrt_##SUF(r, n);                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T pi = p[i];                                                                            \
        if (decoupled) pi = has_wd ? pi * decay : pi;                                           \
        T denom = r[i] / bc2s + eps;                                                            \
        p[i] = pi + nss * m[i] / denom;                                                         \
      }                                                                                         \
    }                                                                                           \
  }                                                                                             \
  static void adam_##SUF(void *ctx, int64_t b, int64_t e) {                                     \
    const kargs *a = ctx;                                                                       \
    if (a->h->amsgrad)                                                                          \
      adam_body_##SUF(a, b, e, false, true);                                                    \
    else                                                                                        \
      adam_body_##SUF(a, b, e, false, false);                                                   \
  }                                                                                             \
  static void adamw_##SUF(void *ctx, int64_t b, int64_t e) {                                    \
    const kargs *a = ctx;                                                                       \
    if (a->h->amsgrad)                                                                          \
      adam_body_##SUF(a, b, e, true, true);                                                     \
    else                                                                                        \
      adam_body_##SUF(a, b, e, true, false);                                                    \
  }                                                                                             \
  INLINE void rmsprop_body_##SUF(const kargs *a, int64_t b, int64_t e, const bool cen,          \
                                 const bool has_mom) {                                          \
    const hyper *h = a->h;                                                                      \
    const T alpha = (T)h->alpha, oma = (T)(1 - h->alpha), wd = (T)h->weight_decay;              \
    const T eps = (T)h->eps, mom = (T)h->momentum, nlr = (T)(-h->lr), neg1 = (T)-1;             \
    const T sgn = h->maximize ? (T)-1 : (T)1;                                                   \
    const bool has_wd = h->weight_decay != 0;                                                   \
    T r[CHUNK];                                                                                 \
    for (int64_t c = b; c < e; c += CHUNK) {                                                    \
      const int64_t n = e - c < CHUNK ? e - c : CHUNK;                                          \
      T *restrict p = (T *)a->p + c, *restrict sq = (T *)a->s0 + c;                             \
      T *restrict buf = has_mom ? (T *)a->s1 + c : NULL, *restrict gavg = cen ? (T *)a->s2 + c : NULL; \
      const T *restrict g = (const T *)a->g + c;                                                \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T gi = g[i] * sgn;                                                                      \
        gi = has_wd ? gi + wd * p[i] : gi;                                                      \
        T s = sq[i] * alpha + oma * gi * gi;                                                    \
        sq[i] = s;                                                                              \
        if (cen) {                                                                              \
          T ga = gavg[i] * alpha + oma * gi;                                                    \
          gavg[i] = ga;                                                                         \
          s = s + neg1 * ga * ga;                                                               \
        }                                                                                       \
        r[i] = s;                                                                               \
      }                                                                                         \
      sqrt_##SUF(r, n);                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T gi = g[i] * sgn;                                                                      \
        gi = has_wd ? gi + wd * p[i] : gi;                                                      \
        T avg = r[i] + eps;                                                                     \
        if (has_mom) {                                                                          \
          T bb = buf[i] * mom + gi / avg;                                                       \
          buf[i] = bb;                                                                          \
          p[i] = p[i] + nlr * bb;                                                               \
        } else {                                                                                \
          p[i] = p[i] + nlr * gi / avg;                                                         \
        }                                                                                       \
      }                                                                                         \
    }                                                                                           \
  }                                                                                             \
  static void rmsprop_##SUF(void *ctx, int64_t b, int64_t e) {                                  \
    const kargs *a = ctx;                                                                       \
    bool cen = a->h->centered, mom = a->h->momentum > 0;                                        \
    if (cen && mom)                                                                             \
      rmsprop_body_##SUF(a, b, e, true, true);                                                  \
    else if (cen)                                                                               \
      rmsprop_body_##SUF(a, b, e, true, false);                                                 \
    else if (mom)                                                                               \
      rmsprop_body_##SUF(a, b, e, false, true);                                                 \
    else                                                                                        \
      rmsprop_body_##SUF(a, b, e, false, false);                                                \
  }                                                                                             \
  static void adagrad_##SUF(void *ctx, int64_t b, int64_t e) {                                  \
    const kargs *a = ctx;                                                                       \
    const hyper *h = a->h;                                                                      \
    const T wd = (T)h->weight_decay, eps = (T)h->eps, nclr = (T)(-a->clr);                      \
    const T sgn = h->maximize ? (T)-1 : (T)1;                                                   \
    const bool has_wd = h->weight_decay != 0;                                                   \
    T r[CHUNK];                                                                                 \
    for (int64_t c = b; c < e; c += CHUNK) {                                                    \
      const int64_t n = e - c < CHUNK ? e - c : CHUNK;                                          \
      T *restrict p = (T *)a->p + c, *restrict sum = (T *)a->s0 + c;                            \
      const T *restrict g = (const T *)a->g + c;                                                \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T gi = g[i] * sgn;                                                                      \
        gi = has_wd ? gi + wd * p[i] : gi;                                                      \
        T s = sum[i] + gi * gi;                                                                 \
        sum[i] = s;                                                                             \
        r[i] = s;                                                                               \
      }                                                                                         \
      sqrt_##SUF(r, n);                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                         \
        T gi = g[i] * sgn;                                                                      \
        gi = has_wd ? gi + wd * p[i] : gi;                                                      \
        T sd = r[i] + eps;                                                                      \
        p[i] = p[i] + nclr * gi / sd;                                                           \
      }                                                                                         \
    }                                                                                           \
  }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

static em_range_fn kernel_for(okind k, bool f64) {
  switch (k) {
    case K_SGD: return f64 ? sgd_f64 : sgd_f32;
    case K_ADAM: return f64 ? adam_f64 : adam_f32;
    case K_ADAMW: return f64 ? adamw_f64 : adamw_f32;
    case K_RMSPROP: return f64 ? rmsprop_f64 : rmsprop_f32;
    default: return f64 ? adagrad_f64 : adagrad_f32;
  }
}

#define OPTIM_GRAIN 16384

/* ---- step --------------------------------------------------------------------------------- */

static em_tensor *zeros_like(em_tensor *p) {
  return em_tensor_zeros(p->ndim, p->shape, (em_dtype)p->dtype);
}

/* t itself (retained) when it is contiguous of dtype dt, else a contiguous
 * copy converted to dt. */
static em_tensor *stage(em_tensor *t, em_dtype dt) {
  if (t->dtype == dt && em_tensor_is_contiguous(t) && t->device.type == EM_CPU)
    return em_tensor_retain(t);
  /* a host copy (a GPU tensor's too: the update kernels run on the host) */
  em_tensor *c = em_tensor_empty(t->ndim, t->shape, dt);
  if (c && em_tensor_copy_(c, t)) {
    em_tensor_release(c);
    return NULL;
  }
  return c;
}

/* Creates the state a step needs; returns whether SGD's momentum buffer is
 * new (it then starts as the first d_p). */
static em_status ensure_state(okind k, const hyper *h, pstate *s, bool *first) {
  *first = false;
  em_tensor *p = s->p;
#define NEED(slot)                                              \
  do {                                                          \
    if (!s->s[slot] && !(s->s[slot] = zeros_like(p))) return em_last_status(); \
  } while (0)
  switch (k) {
    case K_SGD:
      if (h->momentum != 0 && !s->s[0]) {
        s->s[0] = zeros_like(p);
        if (!s->s[0]) return em_last_status();
        *first = true;
      }
      break;
    case K_ADAM:
    case K_ADAMW:
      if (!s->s[0]) s->step = 0;
      NEED(0);
      NEED(1);
      if (h->amsgrad) NEED(2);
      break;
    case K_RMSPROP:
      if (!s->s[0]) s->step = 0;
      NEED(0);
      if (h->momentum > 0) NEED(1);
      if (h->centered) NEED(2);
      break;
    case K_ADAGRAD:
      if (!s->s[0]) {
        s->step = 0;
        if (!(s->s[0] = em_tensor_full(p->ndim, p->shape, em_scalar_float(h->init_acc),
                                       (em_dtype)p->dtype)))
          return em_last_status();
      }
      break;
  }
#undef NEED
  return EM_OK;
}

static em_status update(okind k, const hyper *h, pstate *s, em_tensor *grad) {
  bool first;
  em_status st = ensure_state(k, h, s, &first);
  if (st) return st;
  em_tensor *p = s->p;
  if (p->numel == 0) return EM_OK;
  kargs a = {.h = h, .first = first};
  int64_t step = s->step + (k != K_SGD); /* committed once the update is done */
  double t = (double)step;
  if (k == K_ADAM || k == K_ADAMW) {
    a.step_size = h->lr / (1 - pow(h->beta1, t));
    a.bc2_sqrt = sqrt(1 - pow(h->beta2, t));
  } else if (k == K_ADAGRAD) {
    a.clr = h->lr / (1 + (t - 1) * h->lr_decay);
  }
  /* which state slots this step touches */
  bool use[3] = {false, false, false};
  if (k == K_SGD) use[0] = h->momentum != 0;
  else if (k == K_ADAM || k == K_ADAMW) use[0] = use[1] = true, use[2] = h->amsgrad;
  else if (k == K_RMSPROP) use[0] = true, use[1] = h->momentum > 0, use[2] = h->centered;
  else use[0] = true;

  em_dtype cdt = p->dtype == EM_FLOAT64 ? EM_FLOAT64 : EM_FLOAT32;
  em_tensor *sp = NULL, *sg = NULL, *ss[3] = {NULL, NULL, NULL};
  sp = stage(p, cdt);
  sg = sp ? stage(grad, cdt) : NULL;
  if (!sg) goto fail;
  for (int j = 0; j < 3; j++)
    if (use[j] && !(ss[j] = stage(s->s[j], cdt))) goto fail;
  a.p = em_tensor_data(sp);
  a.g = em_tensor_data(sg);
  a.s0 = ss[0] ? em_tensor_data(ss[0]) : NULL;
  a.s1 = ss[1] ? em_tensor_data(ss[1]) : NULL;
  a.s2 = ss[2] ? em_tensor_data(ss[2]) : NULL;
  em__parallel_for(p->numel, OPTIM_GRAIN, kernel_for(k, cdt == EM_FLOAT64), &a);
  s->step = step;
  first = false;
  /* write back what was staged; bump the versions of what was written
   * in place */
  if (sp != p) {
    if ((st = em_tensor_copy_(p, sp))) goto done;
  } else {
    em__bump_version(p);
  }
  for (int j = 0; j < 3; j++) {
    if (!ss[j]) continue;
    if (ss[j] != s->s[j]) {
      if ((st = em_tensor_copy_(s->s[j], ss[j]))) goto done;
    } else {
      em__bump_version(s->s[j]);
    }
  }
  goto done;
fail:
  st = em_last_status();
  if (first) { /* the new momentum buffer was never filled */
    em_tensor_release(s->s[0]);
    s->s[0] = NULL;
  }
done:
  em_tensor_release(sp), em_tensor_release(sg);
  for (int j = 0; j < 3; j++) em_tensor_release(ss[j]);
  return st;
}

em_status em_optim_step(em_optimizer *opt) {
  if (!opt) return em__set_error(EM_ERR_INVALID, "step: NULL optimizer");
  bool prev = em_set_grad_enabled(false);
  em_status st = EM_OK;
  for (int gi = 0; gi < opt->ng && !st; gi++) {
    group *g = &opt->g[gi];
    for (int i = g->first; i < g->first + g->n && !st; i++) {
      em_tensor *grad = em_tensor_grad(opt->ps[i].p);
      if (!grad) continue; /* parameters without a gradient are skipped */
      st = update(opt->kind, &g->h, &opt->ps[i], grad);
      em_tensor_release(grad);
      if (st) em__prefix_error("%s.step (parameter %d)", KIND_NAME[opt->kind], i);
    }
  }
  em_set_grad_enabled(prev);
  return st;
}

em_status em_optim_zero_grad(em_optimizer *opt, bool set_to_none) {
  if (!opt) return em__set_error(EM_ERR_INVALID, "zero_grad: NULL optimizer");
  bool prev = em_set_grad_enabled(false);
  em_status st = EM_OK;
  for (int i = 0; i < opt->np && !st; i++) {
    em_tensor *p = opt->ps[i].p;
    if (set_to_none) {
      st = em_tensor_set_grad(p, NULL);
      continue;
    }
    em_tensor *g = em_tensor_grad(p);
    if (g) st = em_tensor_zero_(g);
    em_tensor_release(g);
  }
  em_set_grad_enabled(prev);
  return st;
}

/* ---- state dicts ------------------------------------------------------------------------ */

typedef struct hkey {
  const char *name;
  size_t off;
  bool is_bool;
} hkey;

#define HD(name, field) {name, offsetof(hyper, field), false}
#define HB(name, field) {name, offsetof(hyper, field), true}
static const hkey SGD_KEYS[] = {HD("lr", lr), HD("momentum", momentum), HD("dampening", dampening),
                                HD("weight_decay", weight_decay), HB("nesterov", nesterov),
                                HB("maximize", maximize), {NULL, 0, false}};
static const hkey ADAM_KEYS[] = {HD("lr", lr), HD("eps", eps), HD("weight_decay", weight_decay),
                                 HB("amsgrad", amsgrad), HB("maximize", maximize), {NULL, 0, false}};
static const hkey RMS_KEYS[] = {HD("lr", lr), HD("alpha", alpha), HD("eps", eps),
                                HD("weight_decay", weight_decay), HD("momentum", momentum),
                                HB("centered", centered), HB("maximize", maximize), {NULL, 0, false}};
static const hkey ADAGRAD_KEYS[] = {HD("lr", lr), HD("lr_decay", lr_decay),
                                    HD("weight_decay", weight_decay),
                                    HD("initial_accumulator_value", init_acc), HD("eps", eps),
                                    HB("maximize", maximize), {NULL, 0, false}};
static const hkey *const KEYS[5] = {SGD_KEYS, ADAM_KEYS, ADAM_KEYS, RMS_KEYS, ADAGRAD_KEYS};

/* ---- hyper-parameters by name (the Python layer syncs param_groups) ---------------------- */

static double *hyper_field(em_optimizer *opt, int group, const char *name, bool *is_bool) {
  hyper *h = &opt->g[group].h;
  *is_bool = false;
  if (opt->kind == K_ADAM || opt->kind == K_ADAMW) {
    if (strcmp(name, "beta1") == 0) return &h->beta1;
    if (strcmp(name, "beta2") == 0) return &h->beta2;
  }
  for (const hkey *k = KEYS[opt->kind]; k->name; k++)
    if (strcmp(k->name, name) == 0) {
      *is_bool = k->is_bool;
      return (double *)((char *)h + k->off);
    }
  return NULL;
}

em_status em_optim_get_option(em_optimizer *opt, int group, const char *name, double *value) {
  if (group < 0 || group >= opt->ng)
    return em__set_error(EM_ERR_INDEX, "optimizer: param group %d out of range (%d groups)", group, opt->ng);
  bool is_bool;
  double *f = name ? hyper_field(opt, group, name, &is_bool) : NULL;
  if (!f) return em__set_error(EM_ERR_INVALID, "%s: no hyper-parameter named '%s'", KIND_NAME[opt->kind],
                               name ? name : "(null)");
  *value = is_bool ? (double)*(bool *)f : *f;
  return EM_OK;
}

em_status em_optim_set_option(em_optimizer *opt, int group, const char *name, double value) {
  if (group < 0 || group >= opt->ng)
    return em__set_error(EM_ERR_INDEX, "optimizer: param group %d out of range (%d groups)", group, opt->ng);
  bool is_bool;
  double *f = name ? hyper_field(opt, group, name, &is_bool) : NULL;
  if (!f) return em__set_error(EM_ERR_INVALID, "%s: no hyper-parameter named '%s'", KIND_NAME[opt->kind],
                               name ? name : "(null)");
  if (!is_bool && !(value >= 0) && strcmp(name, "lr_decay") != 0)
    return em__set_error(EM_ERR_INVALID, "%s: invalid %s value: %g", KIND_NAME[opt->kind], name, value);
  if ((strcmp(name, "beta1") == 0 || strcmp(name, "beta2") == 0) && !(value < 1))
    return em__set_error(EM_ERR_INVALID, "%s: invalid %s value: %g (must be in [0, 1))",
                         KIND_NAME[opt->kind], name, value);
  if (is_bool) *(bool *)f = value != 0;
  else *f = value;
  return EM_OK;
}

const char *em_optim_kind(const em_optimizer *opt) { return KIND_NAME[opt->kind]; }

static em_status put(em_state_dict *sd, em_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the formatted name to t, stealing t. */
static em_status put(em_state_dict *sd, em_tensor *t, const char *fmt, ...) {
  if (!t) return em_last_status();
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  em_status st = em_state_dict_set(sd, name, t);
  em_tensor_release(t);
  return st;
}

static em_tensor *f64_scalar(double v) { return em_tensor_scalar(em_scalar_float(v), EM_FLOAT64); }

/* The step as PyTorch 1.13 keeps it: a float32 tensor for Adam, AdamW and
 * Adagrad, a plain int (int64 here) for RMSprop. */
static em_tensor *step_tensor(okind k, int64_t step) {
  if (k == K_RMSPROP) return em_tensor_scalar(em_scalar_int(step), EM_INT64);
  return em_tensor_scalar(em_scalar_float((double)step), EM_FLOAT32);
}

em_state_dict *em_optim_state_dict(em_optimizer *opt) {
  if (!opt) return EM_FAIL(EM_ERR_INVALID, "state_dict: NULL optimizer");
  em_state_dict *sd = em_state_dict_create();
  if (!sd) return NULL;
  em_status st = EM_OK;
  for (int i = 0; i < opt->np && !st; i++) {
    pstate *s = &opt->ps[i];
    if (opt->kind != K_SGD && s->s[0]) st = put(sd, step_tensor(opt->kind, s->step), "state.%d.step", i);
    for (int j = 0; j < 3 && !st; j++)
      if (s->s[j])
        st = put(sd, em_tensor_retain(s->s[j]), "state.%d.%s", i, STATE_NAME[opt->kind][j]);
  }
  for (int gi = 0; gi < opt->ng && !st; gi++) {
    group *g = &opt->g[gi];
    for (const hkey *k = KEYS[opt->kind]; k->name && !st; k++) {
      const char *f = (const char *)&g->h + k->off;
      double v = k->is_bool ? (double)*(const bool *)f : *(const double *)f;
      st = put(sd, f64_scalar(v), "param_groups.%d.%s", gi, k->name);
    }
    if (!st && (opt->kind == K_ADAM || opt->kind == K_ADAMW)) {
      double b[2] = {g->h.beta1, g->h.beta2};
      st = put(sd, em_tensor_from_data(b, EM_DIMS(2), EM_FLOAT64), "param_groups.%d.betas", gi);
      if (!st)
        st = put(sd, f64_scalar(opt->kind == K_ADAMW), "param_groups.%d.decoupled_weight_decay", gi);
    }
    if (!st && g->has_initial_lr)
      st = put(sd, f64_scalar(g->initial_lr), "param_groups.%d.initial_lr", gi);
    if (!st) {
      em_tensor *idx = em_tensor_arange(em_scalar_int(g->first), em_scalar_int(g->first + g->n),
                                        em_scalar_int(1), EM_INT64);
      st = put(sd, idx, "param_groups.%d.params", gi);
    }
  }
  if (st) {
    em_state_dict_free(sd);
    return NULL;
  }
  return sd;
}

/* Parses "<int>." at *s (advancing past the dot) into *out. */
static bool parse_index(const char **s, long long *out) {
  char *end;
  if (**s < '0' || **s > '9') return false;
  long long v = strtoll(*s, &end, 10);
  if (*end != '.' || v < 0 || v > 1000000000) return false;
  *out = v;
  *s = end + 1;
  return true;
}

static em_status one_value(const char *name, em_tensor *t, double *v) {
  if (t->numel != 1)
    return em__set_error(EM_ERR_SHAPE, "load_state_dict: %s must hold one value, got shape %s",
                         name, em__tshape(t));
  *v = em_tensor_item_double(t);
  return EM_OK;
}

/* A fresh contiguous tensor with p's shape and dtype holding t's values. */
static em_tensor *state_copy(em_tensor *t, em_tensor *p) {
  em_tensor *c = em_tensor_empty(p->ndim, p->shape, (em_dtype)p->dtype);
  if (c && em_tensor_copy_(c, t)) {
    em_tensor_release(c);
    return NULL;
  }
  return c;
}

em_status em_optim_load_state_dict(em_optimizer *opt, const em_state_dict *sd) {
  if (!opt || !sd) return em__set_error(EM_ERR_INVALID, "load_state_dict: NULL argument");
  const char *kind = KIND_NAME[opt->kind];
  em_status st = EM_OK;
  int nent = em_state_dict_size(sd), ng = 0;
  group *ng_arr = NULL;
  pstate *nps = NULL;
  int *map = NULL; /* saved index -> our parameter, by saved index (dense up to maxidx) */
  long long maxidx = -1;

  /* groups: count them and check their sizes */
  for (int i = 0; i < nent; i++) {
    const char *nm = em_state_dict_name_at(sd, i);
    if (strncmp(nm, "param_groups.", 13) != 0) continue;
    const char *q = nm + 13;
    long long gi;
    if (!parse_index(&q, &gi))
      return em__set_error(EM_ERR_INVALID, "load_state_dict: malformed key \"%s\"", nm);
    if (gi + 1 > ng) ng = (int)gi + 1;
  }
  if (ng != opt->ng)
    return em__set_error(EM_ERR_INVALID,
                         "%s.load_state_dict: loaded state dict has a different number of parameter "
                         "groups (%d, the optimizer has %d)",
                         kind, ng, opt->ng);
  for (int gi = 0; gi < ng; gi++) {
    char name[64];
    snprintf(name, sizeof name, "param_groups.%d.params", gi);
    em_tensor *pt = em_state_dict_get(sd, name);
    if (!pt) return em__set_error(EM_ERR_INVALID, "%s.load_state_dict: %s is missing", kind, name);
    if (pt->ndim != 1 || em_dtype_is_float((em_dtype)pt->dtype) || pt->dtype == EM_BOOL)
      return em__set_error(EM_ERR_INVALID, "%s.load_state_dict: %s must be a 1-D integer tensor",
                           kind, name);
    if (pt->shape[0] != opt->g[gi].n)
      return em__set_error(EM_ERR_INVALID,
                           "%s.load_state_dict: loaded state dict contains a parameter group that "
                           "doesn't match the size of optimizer's group (group %d: %lld parameters, "
                           "the optimizer's has %d)",
                           kind, gi, (long long)pt->shape[0], opt->g[gi].n);
    for (int64_t j = 0; j < pt->shape[0]; j++) {
      int64_t v = em__load_i64(em__data_ptr(pt) + j * pt->strides[0] * (int64_t)em_dtype_size((em_dtype)pt->dtype),
                               (em_dtype)pt->dtype);
      if (v < 0 || v >= opt->np) /* PyTorch numbers the parameters 0 .. n - 1 */
        return em__set_error(EM_ERR_INVALID,
                             "%s.load_state_dict: %s holds an invalid index %lld (the optimizer has "
                             "%d parameters)",
                             kind, name, (long long)v, opt->np);
      if (v > maxidx) maxidx = v;
    }
  }
  map = malloc(sizeof *map * (size_t)(maxidx + 2));
  ng_arr = malloc(sizeof *ng_arr * (size_t)(ng + 1));
  nps = calloc((size_t)opt->np + 1, sizeof *nps);
  if (!map || !ng_arr || !nps) {
    st = em__set_error(EM_ERR_NOMEM, "load_state_dict: out of memory");
    goto done;
  }
  for (long long i = 0; i <= maxidx; i++) map[i] = -1;
  for (int gi = 0; gi < ng; gi++) {
    char name[64];
    snprintf(name, sizeof name, "param_groups.%d.params", gi);
    em_tensor *pt = em_state_dict_get(sd, name);
    for (int64_t j = 0; j < pt->shape[0]; j++) {
      int64_t v = em__load_i64(em__data_ptr(pt) + j * pt->strides[0] * (int64_t)em_dtype_size((em_dtype)pt->dtype),
                               (em_dtype)pt->dtype);
      if (map[v] >= 0) {
        st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: parameter index %lld appears twice",
                           kind, (long long)v);
        goto done;
      }
      map[v] = opt->g[gi].first + (int)j;
    }
  }

  /* hyper-parameters */
  for (int gi = 0; gi < ng; gi++) {
    group *g = &ng_arr[gi];
    *g = opt->g[gi];
    char name[128];
    for (const hkey *k = KEYS[opt->kind]; k->name; k++) {
      snprintf(name, sizeof name, "param_groups.%d.%s", gi, k->name);
      em_tensor *t = em_state_dict_get(sd, name);
      double v = 0;
      if (!t) {
        st = em__set_error(EM_ERR_INVALID,
                           "%s.load_state_dict: %s is missing (is the state dict from a %s "
                           "optimizer?)",
                           kind, name, kind);
        goto done;
      }
      if ((st = one_value(name, t, &v))) goto done;
      char *f = (char *)&g->h + k->off;
      if (k->is_bool)
        *(bool *)f = v != 0;
      else
        *(double *)f = v;
    }
    if (opt->kind == K_ADAM || opt->kind == K_ADAMW) {
      snprintf(name, sizeof name, "param_groups.%d.betas", gi);
      em_tensor *t = em_state_dict_get(sd, name);
      if (!t || t->numel != 2) {
        st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: %s is %s", kind, name,
                           t ? "not 2 values" : "missing");
        goto done;
      }
      em_tensor *c = em_tensor_contiguous(t);
      em_tensor *c64 = c ? em_tensor_to_dtype(c, EM_FLOAT64) : NULL;
      if (!c64) {
        em_tensor_release(c);
        st = em_last_status();
        goto done;
      }
      const double *b = em_tensor_data(c64);
      g->h.beta1 = b[0], g->h.beta2 = b[1];
      em_tensor_release(c64), em_tensor_release(c);
      snprintf(name, sizeof name, "param_groups.%d.decoupled_weight_decay", gi);
      t = em_state_dict_get(sd, name);
      double v = 0;
      if (t) {
        if ((st = one_value(name, t, &v))) goto done;
        if ((v != 0) != (opt->kind == K_ADAMW)) {
          st = em__set_error(EM_ERR_INVALID,
                             "%s.load_state_dict: the state dict is from %s, not %s (%s = %g)",
                             kind, v != 0 ? "AdamW" : "Adam", kind, name, v);
          goto done;
        }
      }
    }
    snprintf(name, sizeof name, "param_groups.%d.initial_lr", gi);
    em_tensor *t = em_state_dict_get(sd, name);
    g->has_initial_lr = t != NULL;
    g->initial_lr = g->h.lr;
    if (t && (st = one_value(name, t, &g->initial_lr))) goto done;
  }

  /* per-parameter state */
  for (int i = 0; i < opt->np; i++) nps[i] = (pstate){.p = opt->ps[i].p};
  bool *has_step = calloc((size_t)opt->np + 1, sizeof *has_step);
  if (!has_step) {
    st = em__set_error(EM_ERR_NOMEM, "load_state_dict: out of memory");
    goto done;
  }
  for (int i = 0; i < nent && !st; i++) {
    const char *nm = em_state_dict_name_at(sd, i);
    if (strncmp(nm, "state.", 6) != 0) continue;
    const char *q = nm + 6;
    long long idx;
    if (!parse_index(&q, &idx)) {
      st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: malformed key \"%s\"", kind, nm);
      break;
    }
    if (idx > maxidx || map[idx] < 0) {
      st = em__set_error(EM_ERR_INVALID,
                         "%s.load_state_dict: %s refers to parameter %lld, which is in no group",
                         kind, nm, idx);
      break;
    }
    pstate *s = &nps[map[idx]];
    em_tensor *t = em_state_dict_tensor_at(sd, i);
    if (strcmp(q, "step") == 0 && opt->kind != K_SGD) {
      double v = 0;
      if ((st = one_value(nm, t, &v))) break;
      if (!(v >= 0 && v <= 9.0e15)) {
        st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: %s = %g is not a valid step", kind,
                           nm, v);
        break;
      }
      s->step = (int64_t)v;
      has_step[map[idx]] = true;
      continue;
    }
    int slot = -1;
    for (int j = 0; j < 3; j++)
      if (STATE_NAME[opt->kind][j] && strcmp(q, STATE_NAME[opt->kind][j]) == 0) slot = j;
    if (slot < 0) {
      st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: unexpected state entry \"%s\" for %s",
                         kind, nm, kind);
      break;
    }
    bool same = t->ndim == s->p->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == s->p->shape[d];
    if (!same) {
      st = em__set_error(EM_ERR_SHAPE,
                         "%s.load_state_dict: size mismatch for %s: copying a tensor with shape %s "
                         "from the state dict, the shape of the parameter is %s",
                         kind, nm, em__tshape(t), em__tshape(s->p));
      break;
    }
    em_tensor_release(s->s[slot]);
    if (!(s->s[slot] = state_copy(t, s->p))) st = em_last_status();
  }
  /* complete states only: the slots every step reads, and the step */
  for (int i = 0; i < opt->np && !st; i++) {
    pstate *s = &nps[i];
    bool any = s->s[0] || s->s[1] || s->s[2] || has_step[i];
    if (opt->kind == K_SGD || !any) continue;
    const char *missing = !s->s[0] ? STATE_NAME[opt->kind][0]
                          : (opt->kind == K_ADAM || opt->kind == K_ADAMW) && !s->s[1] ? "exp_avg_sq"
                          : !has_step[i] ? "step" : NULL;
    if (missing) {
      long long saved = -1;
      for (long long j = 0; j <= maxidx; j++)
        if (map[j] == i) saved = j;
      st = em__set_error(EM_ERR_INVALID, "%s.load_state_dict: state.%lld is incomplete (no %s)",
                         kind, saved, missing);
    }
  }
  /* Adagrad's state always exists: parameters the dict has none for
   * start afresh from their group's initial_accumulator_value */
  for (int gi = 0; gi < ng && !st && opt->kind == K_ADAGRAD; gi++)
    for (int i = opt->g[gi].first; i < opt->g[gi].first + opt->g[gi].n && !st; i++)
      if (!nps[i].s[0]) st = adagrad_init_state(&nps[i], &ng_arr[gi].h);
  free(has_step);
  if (st) goto done;

  /* commit */
  for (int i = 0; i < opt->np; i++) {
    pstate_clear(&opt->ps[i]);
    for (int j = 0; j < 3; j++) opt->ps[i].s[j] = nps[i].s[j], nps[i].s[j] = NULL;
    opt->ps[i].step = nps[i].step;
  }
  memcpy(opt->g, ng_arr, sizeof *ng_arr * (size_t)ng);
done:
  if (nps)
    for (int i = 0; i < opt->np; i++) pstate_clear(&nps[i]);
  free(nps), free(ng_arr), free(map);
  return st;
}
