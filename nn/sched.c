/* Learning-rate schedulers: StepLR, MultiStepLR, ExponentialLR,
 * CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR.
 *
 * Each follows PyTorch 1.13's _LRScheduler: the constructor sets the
 * groups' initial_lr (if no scheduler did before), takes base_lrs from it
 * and performs the initial step (last_epoch 0); em_sched_step increments
 * last_epoch and applies the scheduler's chainable ("recursive") get_lr to
 * the groups' current lrs, so sequences match PyTorch's to the last bit
 * and compose with lr changes made elsewhere. SequentialLR switches to the
 * next scheduler at each milestone with that scheduler's closed form at
 * epoch 0, as PyTorch's step(0).
 *
 * OneCycleLR also cycles momentum as PyTorch's default cycle_momentum=True
 * (base_momentum 0.85, max_momentum 0.95): SGD's and RMSprop's momentum,
 * Adam's and AdamW's beta1. Adagrad has no momentum and is not cycled
 * (PyTorch raises an error there unless cycle_momentum=False).
 *
 * A scheduler borrows its optimizer, which must outlive it. A failed step
 * changes nothing (PyTorch has already advanced last_epoch when OneCycleLR
 * raises "Tried to step ... times").
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "nn/nn.h"

/* internal accessors defined in nn/optim.c */
em_status em__optim_set_initial_lr(em_optimizer *opt, int group, double lr, bool only_if_unset);
bool em__optim_cycles_momentum(const em_optimizer *opt);
double em__optim_momentum(const em_optimizer *opt, int group);
void em__optim_set_momentum(em_optimizer *opt, int group, double m);
void em__optim_put_lr(em_optimizer *opt, int group, double lr);

typedef enum skind { S_STEP, S_MULTISTEP, S_EXP, S_COS, S_LINEAR, S_ONECYCLE, S_SEQ } skind;

static const char *const SNAME[] = {"StepLR",    "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                                    "LinearLR",  "OneCycleLR",  "SequentialLR"};

enum { V_INITIAL, V_MAX, V_MIN };   /* OneCycle phase lr ends */
enum { M_MAX, M_BASE };             /* OneCycle phase momentum ends */

typedef struct phase {
  double end_step;
  int start_lr, end_lr, start_m, end_m;
} phase;

struct em_scheduler {
  skind kind;
  em_optimizer *opt; /* borrowed */
  int ng;
  int64_t last_epoch, step_count;
  double *base_lrs, *last_lr;
  /* StepLR, MultiStepLR, ExponentialLR */
  int64_t step_size;
  double gamma;
  int nms;
  int64_t *ms; /* sorted milestones (MultiStepLR, SequentialLR) */
  /* CosineAnnealingLR */
  int64_t t_max;
  double eta_min;
  /* LinearLR */
  double start_factor, end_factor;
  int64_t total_iters;
  /* OneCycleLR */
  int64_t total_steps;
  bool anneal_cos, cycle_m;
  int nphases;
  phase phases[3];
  double *max_lr, *min_lr;
  double max_m, base_m;
  /* SequentialLR */
  int nchild;
  em_scheduler **child;
};

void em_sched_free(em_scheduler *s) {
  if (!s) return;
  for (int i = 0; i < s->nchild; i++) em_sched_free(s->child[i]);
  free(s->child);
  free(s->base_lrs), free(s->last_lr), free(s->ms), free(s->max_lr), free(s->min_lr);
  free(s);
}

/* A scheduler of kind k over opt with its per-group arrays; initial_lr is
 * set (unless set before) and base_lrs read from it only when set_base. */
static em_scheduler *alloc_sched(skind k, em_optimizer *opt) {
  if (!opt) return EM_FAIL(EM_ERR_INVALID, "%s: NULL optimizer", SNAME[k]);
  em_scheduler *s = calloc(1, sizeof *s);
  int ng = em_optim_num_groups(opt);
  if (s) {
    s->kind = k;
    s->opt = opt;
    s->ng = ng;
    s->last_epoch = -1;
    s->base_lrs = calloc((size_t)ng + 1, sizeof(double));
    s->last_lr = calloc((size_t)ng + 1, sizeof(double));
  }
  if (!s || !s->base_lrs || !s->last_lr) {
    em_sched_free(s);
    return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", SNAME[k]);
  }
  return s;
}

static void take_base_lrs(em_scheduler *s) {
  for (int g = 0; g < s->ng; g++) {
    em__optim_set_initial_lr(s->opt, g, em_optim_get_lr(s->opt, g), true);
    s->base_lrs[g] = em_optim_initial_lr(s->opt, g);
  }
}

static double anneal(bool cosine, double start, double end, double pct) {
  if (cosine) {
    double cos_out = cos(M_PI * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

/* The new lr of every group (out[ng]) and, for OneCycleLR, momentum
 * (mom[ng]) at s->last_epoch + 1 (or at epoch 0 with the closed form when
 * closed). Changes nothing. */
static em_status compute(em_scheduler *s, int64_t e, bool closed, double *out, double *mom) {
  for (int g = 0; g < s->ng; g++) {
    double lr = em_optim_get_lr(s->opt, g), base = s->base_lrs[g], v = lr;
    switch (s->kind) {
      case S_STEP:
        if (closed)
          v = base * pow(s->gamma, (double)(e / s->step_size));
        else
          v = (e == 0 || e % s->step_size != 0) ? lr : lr * s->gamma;
        break;
      case S_MULTISTEP: {
        int below = 0, count = 0; /* bisect_right, and e's multiplicity */
        for (int i = 0; i < s->nms; i++) below += s->ms[i] <= e, count += s->ms[i] == e;
        if (closed)
          v = base * pow(s->gamma, (double)below);
        else
          v = count == 0 ? lr : lr * pow(s->gamma, (double)count);
        break;
      }
      case S_EXP:
        if (closed)
          v = base * pow(s->gamma, (double)e);
        else
          v = e == 0 ? lr : lr * s->gamma;
        break;
      case S_COS: {
        double T = (double)s->t_max, em = s->eta_min, de = (double)e;
        if (closed)
          v = em + (base - em) * (1 + cos(M_PI * de / T)) / 2;
        else if (e == 0)
          v = lr;
        else if (s->step_count == 1 && e > 0)
          v = em + (base - em) * (1 + cos(de * M_PI / T)) / 2;
        else if ((e - 1 - s->t_max) % (2 * s->t_max) == 0)
          v = lr + (base - em) * (1 - cos(M_PI / T)) / 2;
        else
          v = (1 + cos(M_PI * de / T)) / (1 + cos(M_PI * (de - 1) / T)) * (lr - em) + em;
        break;
      }
      case S_LINEAR: {
        double sf = s->start_factor, ef = s->end_factor;
        if (closed)
          v = base * (sf + (ef - sf) * (double)(e < s->total_iters ? e : s->total_iters) /
                               (double)s->total_iters);
        else if (e == 0)
          v = lr * sf;
        else if (e > s->total_iters)
          v = lr;
        else
          v = lr * (1. + (ef - sf) / ((double)s->total_iters * sf + (double)(e - 1) * (ef - sf)));
        break;
      }
      case S_ONECYCLE: {
        if (e > s->total_steps)
          return em__set_error(EM_ERR_INVALID,
                               "OneCycleLR: Tried to step %lld times. The specified number of total "
                               "steps is %lld",
                               (long long)(e + 1), (long long)s->total_steps);
        double ends_lr[3] = {em_optim_initial_lr(s->opt, g), s->max_lr[g], s->min_lr[g]};
        double ends_m[2] = {s->max_m, s->base_m};
        double start_step = 0, de = (double)e;
        for (int i = 0; i < s->nphases; i++) {
          const phase *p = &s->phases[i];
          if (de <= p->end_step || i == s->nphases - 1) {
            if (p->end_step - start_step == 0)
              return em__set_error(EM_ERR_INVALID,
                                   "OneCycleLR: float division by zero (phase %d of the schedule "
                                   "is empty at step %lld: pct_start is too small for total_steps "
                                   "%lld)",
                                   i, (long long)e, (long long)s->total_steps);
            double pct = (de - start_step) / (p->end_step - start_step);
            v = anneal(s->anneal_cos, ends_lr[p->start_lr], ends_lr[p->end_lr], pct);
            if (mom) mom[g] = anneal(s->anneal_cos, ends_m[p->start_m], ends_m[p->end_m], pct);
            break;
          }
          start_step = p->end_step;
        }
        break;
      }
      case S_SEQ:
        break;
    }
    out[g] = v;
  }
  return EM_OK;
}

/* One step (epoch < 0) or PyTorch's step(epoch) with epoch 0. */
static em_status sched_step(em_scheduler *s, int64_t epoch) {
  if (em_optim_num_groups(s->opt) != s->ng)
    return em__set_error(EM_ERR_STATE,
                         "%s: the optimizer has %d param groups, the scheduler was made for %d",
                         SNAME[s->kind], em_optim_num_groups(s->opt), s->ng);
  if (s->kind == S_SEQ) {
    int64_t e = s->last_epoch + 1;
    int idx = 0;
    while (idx < s->nms && s->ms[idx] <= e) idx++;
    em_scheduler *c = s->child[idx];
    em_status st = sched_step(c, idx > 0 && s->ms[idx - 1] == e ? 0 : -1);
    if (st) return st;
    s->last_epoch = e;
    memcpy(s->last_lr, c->last_lr, sizeof(double) * (size_t)s->ng);
    return EM_OK;
  }
  double *v = malloc(sizeof(double) * (size_t)(2 * s->ng + 1));
  if (!v) return em__set_error(EM_ERR_NOMEM, "%s: out of memory", SNAME[s->kind]);
  double *mom = v + s->ng;
  int64_t e = epoch >= 0 ? epoch : s->last_epoch + 1;
  s->step_count++; /* get_lr sees the incremented count, as in PyTorch */
  em_status st = compute(s, e, epoch >= 0 && s->kind != S_ONECYCLE, v, mom);
  if (st) {
    s->step_count--;
    free(v);
    return st;
  }
  s->last_epoch = e;
  for (int g = 0; g < s->ng; g++) {
    em__optim_put_lr(s->opt, g, v[g]);
    if (s->kind == S_ONECYCLE && s->cycle_m) em__optim_set_momentum(s->opt, g, mom[g]);
    s->last_lr[g] = em_optim_get_lr(s->opt, g);
  }
  free(v);
  return EM_OK;
}

em_status em_sched_step(em_scheduler *s) {
  if (!s) return em__set_error(EM_ERR_INVALID, "scheduler step: NULL scheduler");
  return sched_step(s, -1);
}

double em_sched_last_lr(const em_scheduler *s, int group) {
  if (!s) return (em__set_error(EM_ERR_INVALID, "last_lr: NULL scheduler"), NAN);
  if (group < 0 || group >= s->ng)
    return (em__set_error(EM_ERR_INDEX, "last_lr: param group %d is out of range (%d groups)",
                          group, s->ng),
            NAN);
  return s->last_lr[group];
}

int64_t em_sched_last_epoch(const em_scheduler *s) { return s ? s->last_epoch : -1; }

/* Base lrs from the groups, then the initial step. */
static em_scheduler *start(em_scheduler *s) {
  take_base_lrs(s);
  if (sched_step(s, -1)) {
    em_sched_free(s);
    return NULL;
  }
  return s;
}

em_scheduler *em_sched_step_lr(em_optimizer *opt, int64_t step_size, double gamma) {
  if (step_size <= 0)
    return EM_FAIL(EM_ERR_INVALID, "StepLR: step_size must be positive, got %lld", (long long)step_size);
  em_scheduler *s = alloc_sched(S_STEP, opt);
  if (!s) return NULL;
  s->step_size = step_size;
  s->gamma = gamma;
  return start(s);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

em_scheduler *em_sched_multistep_lr(em_optimizer *opt, int n, const int64_t *milestones,
                                    double gamma) {
  if (n < 0 || (n > 0 && !milestones))
    return EM_FAIL(EM_ERR_INVALID, "MultiStepLR: invalid milestone list (n = %d)", n);
  em_scheduler *s = alloc_sched(S_MULTISTEP, opt);
  if (!s) return NULL;
  s->ms = malloc(sizeof(int64_t) * (size_t)(n + 1));
  if (!s->ms) {
    em_sched_free(s);
    return EM_FAIL(EM_ERR_NOMEM, "MultiStepLR: out of memory");
  }
  if (n) memcpy(s->ms, milestones, sizeof(int64_t) * (size_t)n);
  qsort(s->ms, (size_t)n, sizeof(int64_t), cmp_i64);
  s->nms = n;
  s->gamma = gamma;
  return start(s);
}

em_scheduler *em_sched_exponential_lr(em_optimizer *opt, double gamma) {
  em_scheduler *s = alloc_sched(S_EXP, opt);
  if (!s) return NULL;
  s->gamma = gamma;
  return start(s);
}

em_scheduler *em_sched_cosine_annealing_lr(em_optimizer *opt, int64_t t_max, double eta_min) {
  if (t_max <= 0)
    return EM_FAIL(EM_ERR_INVALID, "CosineAnnealingLR: T_max must be positive, got %lld",
                   (long long)t_max);
  em_scheduler *s = alloc_sched(S_COS, opt);
  if (!s) return NULL;
  s->t_max = t_max;
  s->eta_min = eta_min;
  return start(s);
}

em_scheduler *em_sched_linear_lr(em_optimizer *opt, double start_factor, double end_factor,
                                 int64_t total_iters) {
  if (!(start_factor > 0 && start_factor <= 1))
    return EM_FAIL(EM_ERR_INVALID,
                   "LinearLR: Starting multiplicative factor expected to be greater than 0 and less "
                   "or equal to 1, got %g",
                   start_factor);
  if (!(end_factor >= 0 && end_factor <= 1))
    return EM_FAIL(EM_ERR_INVALID,
                   "LinearLR: Ending multiplicative factor expected to be between 0 and 1, got %g",
                   end_factor);
  if (total_iters <= 0)
    return EM_FAIL(EM_ERR_INVALID, "LinearLR: total_iters must be positive, got %lld",
                   (long long)total_iters);
  em_scheduler *s = alloc_sched(S_LINEAR, opt);
  if (!s) return NULL;
  s->start_factor = start_factor;
  s->end_factor = end_factor;
  s->total_iters = total_iters;
  return start(s);
}

em_scheduler *em_sched_one_cycle_lr(em_optimizer *opt, double max_lr, int64_t total_steps,
                                    double pct_start, bool anneal_cos, double div_factor,
                                    double final_div_factor, bool three_phase) {
  static const char op[] = "OneCycleLR";
  if (total_steps <= 0)
    return EM_FAIL(EM_ERR_INVALID, "%s: Expected positive integer total_steps, but got %lld", op,
                   (long long)total_steps);
  if (!(pct_start >= 0 && pct_start <= 1))
    return EM_FAIL(EM_ERR_INVALID, "%s: Expected float between 0 and 1 pct_start, but got %g", op,
                   pct_start);
  if (!(max_lr >= 0) || !(div_factor > 0) || !(final_div_factor > 0))
    return EM_FAIL(EM_ERR_INVALID,
                   "%s: max_lr (%g) must be >= 0 and div_factor (%g), final_div_factor (%g) > 0",
                   op, max_lr, div_factor, final_div_factor);
  em_scheduler *s = alloc_sched(S_ONECYCLE, opt);
  if (!s) return NULL;
  s->total_steps = total_steps;
  s->anneal_cos = anneal_cos;
  double ts = (double)total_steps;
  if (three_phase) {
    s->nphases = 3;
    s->phases[0] = (phase){pct_start * ts - 1, V_INITIAL, V_MAX, M_MAX, M_BASE};
    s->phases[1] = (phase){2 * pct_start * ts - 2, V_MAX, V_INITIAL, M_BASE, M_MAX};
    s->phases[2] = (phase){ts - 1, V_INITIAL, V_MIN, M_MAX, M_MAX};
  } else {
    s->nphases = 2;
    s->phases[0] = (phase){pct_start * ts - 1, V_INITIAL, V_MAX, M_MAX, M_BASE};
    s->phases[1] = (phase){ts - 1, V_MAX, V_MIN, M_BASE, M_MAX};
  }
  s->max_lr = calloc((size_t)s->ng + 1, sizeof(double));
  s->min_lr = calloc((size_t)s->ng + 1, sizeof(double));
  if (!s->max_lr || !s->min_lr) {
    em_sched_free(s);
    return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  }
  s->max_m = 0.95;
  s->base_m = 0.85;
  s->cycle_m = em__optim_cycles_momentum(opt);
  /* remember what the constructor overwrites so a failed initial step
   * leaves the optimizer as it was */
  double *saved = calloc((size_t)(3 * s->ng + 1), sizeof(double));
  if (!saved) {
    em_sched_free(s);
    return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", op);
  }
  for (int g = 0; g < s->ng; g++) {
    saved[3 * g] = em_optim_initial_lr(opt, g);
    saved[3 * g + 1] = em_optim_get_lr(opt, g);
    saved[3 * g + 2] = em__optim_momentum(opt, g);
    double init = max_lr / div_factor;
    em__optim_set_initial_lr(opt, g, init, false);
    s->max_lr[g] = max_lr;
    s->min_lr[g] = init / final_div_factor;
    if (s->cycle_m) em__optim_set_momentum(opt, g, s->max_m);
  }
  take_base_lrs(s);
  if (sched_step(s, -1)) {
    for (int g = 0; g < s->ng; g++) {
      em__optim_set_initial_lr(opt, g, saved[3 * g], false);
      em__optim_put_lr(opt, g, saved[3 * g + 1]);
      if (s->cycle_m) em__optim_set_momentum(opt, g, saved[3 * g + 2]);
    }
    free(saved);
    em_sched_free(s);
    return NULL;
  }
  free(saved);
  return s;
}

em_scheduler *em_sched_sequential_lr(em_optimizer *opt, int n, em_scheduler **schedulers,
                                     const int64_t *milestones) {
  static const char op[] = "SequentialLR";
  em_scheduler *s = NULL;
  em_status st = EM_OK;
  if (n < 1 || !schedulers) {
    st = em__set_error(EM_ERR_INVALID, "%s: needs at least one scheduler (got %d)", op, n);
    goto fail;
  }
  for (int i = 0; i < n && !st; i++) {
    if (!schedulers[i])
      st = em__set_error(EM_ERR_INVALID, "%s: scheduler %d is NULL", op, i);
    else if (schedulers[i]->opt != opt)
      st = em__set_error(EM_ERR_INVALID,
                         "%s: Sequential Schedulers expects all schedulers to belong to the same "
                         "optimizer, but got schedulers at index %d to be different than the "
                         "optimizer passed in.",
                         op, i);
    else if (schedulers[i]->kind == S_SEQ)
      st = em__set_error(EM_ERR_INVALID, "%s: scheduler %d is itself a SequentialLR", op, i);
    for (int j = 0; j < i && !st; j++)
      if (schedulers[j] == schedulers[i])
        st = em__set_error(EM_ERR_INVALID, "%s: scheduler %d is passed twice", op, i);
  }
  if (st) goto fail;
  if (n > 1 && !milestones) {
    st = em__set_error(EM_ERR_INVALID,
                       "%s: Sequential Schedulers expects number of schedulers provided to be one "
                       "more than the number of milestone points, but got number of schedulers %d "
                       "and no milestones",
                       op, n);
    goto fail;
  }
  for (int i = 1; i < n - 1; i++)
    if (milestones[i] < milestones[i - 1]) {
      st = em__set_error(EM_ERR_INVALID, "%s: milestones must be in increasing order (%lld after %lld)",
                         op, (long long)milestones[i], (long long)milestones[i - 1]);
      goto fail;
    }
  if (!(s = alloc_sched(S_SEQ, opt))) goto fail_status;
  s->child = calloc((size_t)n, sizeof *s->child);
  s->ms = malloc(sizeof(int64_t) * (size_t)n);
  if (!s->child || !s->ms) {
    st = em__set_error(EM_ERR_NOMEM, "%s: out of memory", op);
    goto fail;
  }
  if (schedulers[0]->ng != s->ng) {
    st = em__set_error(EM_ERR_STATE,
                       "%s: the schedulers were made for %d param groups, the optimizer has %d", op,
                       schedulers[0]->ng, s->ng);
    goto fail;
  }
  if (n > 1) memcpy(s->ms, milestones, sizeof(int64_t) * (size_t)(n - 1));
  s->nms = n - 1;
  s->last_epoch = 0;
  for (int g = 0; g < s->ng; g++) em__optim_put_lr(opt, g, em_optim_initial_lr(opt, g));
  for (int i = 0; i < n; i++) schedulers[i]->last_epoch -= 1;
  schedulers[0]->step_count = 0;
  if ((st = sched_step(schedulers[0], -1))) {
    for (int i = 0; i < n; i++) schedulers[i]->last_epoch += 1;
    goto fail;
  }
  for (int i = 0; i < n; i++) s->child[i] = schedulers[i];
  s->nchild = n;
  memcpy(s->last_lr, schedulers[0]->last_lr, sizeof(double) * (size_t)s->ng);
  return s;
fail_status:
  st = em_last_status();
fail:
  (void)st;
  em_sched_free(s);
  if (schedulers)
    for (int i = 0; i < n; i++) em_sched_free(schedulers[i]);
  return NULL;
}
