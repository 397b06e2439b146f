/* Optimizers and gradient clipping. Every update is checked against the
 * update rule written out here in plain double arithmetic on a few scalars
 * for several steps, with every option; a few end states were also
 * computed once with PyTorch 1.13 and are hard-coded. Param groups, state
 * dict round trips and load errors, the staging path (non-contiguous and
 * float32 parameters), zero_grad, construction errors, clipping. */
#include <math.h>

#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

#define NP 3
#define STEPS 5

/* The gradient fed at step t (1-based) to element i, and the start values. */
static double gfun(int t, int i) { return cos(1.3 * t + 0.7 * i) + 0.1 * i - 0.2; }
static double p0(int i) { return 0.5 - 0.3 * i; }

static em_tensor *param(em_dtype dt) {
  double v[NP];
  for (int i = 0; i < NP; i++) v[i] = p0(i);
  em_tensor *a = em_tensor_from_data(v, EM_DIMS(NP), EM_FLOAT64);
  em_tensor *p = em_tensor_to_dtype(a, dt);
  em_tensor_release(a); /* p holds its own reference (a itself for float64) */
  em_tensor_set_requires_grad(p, true);
  return p;
}

static em_status set_grad(em_tensor *p, int t, double scale) {
  double v[NP];
  for (int i = 0; i < NP; i++) v[i] = scale * gfun(t, i);
  em_tensor *a = em_tensor_from_data(v, EM_DIMS(NP), EM_FLOAT64);
  em_tensor *g = em_tensor_to_dtype(a, (em_dtype)p->dtype);
  em_status st = em_tensor_set_grad(p, g);
  em_tensor_release(g), em_tensor_release(a);
  return st;
}

/* ---- the update rules, by hand -------------------------------------------------------- */

typedef struct ref_opts {
  int kind; /* 0 SGD, 1 Adam, 2 AdamW, 3 RMSprop, 4 Adagrad */
  double lr, momentum, dampening, wd, b1, b2, eps, alpha, lr_decay, init_acc;
  bool nesterov, maximize, amsgrad, centered;
} ref_opts;

/* Runs STEPS steps of the rule on NP scalars; out receives the params. */
static void ref_run(const ref_opts *o, double *out) {
  for (int i = 0; i < NP; i++) {
    double p = p0(i), buf = 0, m = 0, v = 0, vmax = 0, sq = 0, ga = 0, sum = o->init_acc;
    for (int t = 1; t <= STEPS; t++) {
      double g = gfun(t, i);
      if (o->maximize) g = -g;
      switch (o->kind) {
        case 0: /* SGD */
          if (o->wd != 0) g += o->wd * p;
          if (o->momentum != 0) {
            buf = t == 1 ? g : o->momentum * buf + (1 - o->dampening) * g;
            g = o->nesterov ? g + o->momentum * buf : buf;
          }
          p -= o->lr * g;
          break;
        case 1: /* Adam */
        case 2: /* AdamW */
          if (o->kind == 2)
            p *= 1 - o->lr * o->wd;
          else if (o->wd != 0)
            g += o->wd * p;
          m = o->b1 * m + (1 - o->b1) * g;
          v = o->b2 * v + (1 - o->b2) * g * g;
          vmax = fmax(vmax, v);
          p -= o->lr / (1 - pow(o->b1, t)) * m /
               (sqrt(o->amsgrad ? vmax : v) / sqrt(1 - pow(o->b2, t)) + o->eps);
          break;
        case 3: { /* RMSprop */
          if (o->wd != 0) g += o->wd * p;
          sq = o->alpha * sq + (1 - o->alpha) * g * g;
          double avg;
          if (o->centered) {
            ga = o->alpha * ga + (1 - o->alpha) * g;
            avg = sqrt(sq - ga * ga) + o->eps;
          } else {
            avg = sqrt(sq) + o->eps;
          }
          if (o->momentum > 0) {
            buf = o->momentum * buf + g / avg;
            p -= o->lr * buf;
          } else {
            p -= o->lr * g / avg;
          }
          break;
        }
        default: /* Adagrad */
          if (o->wd != 0) g += o->wd * p;
          sum += g * g;
          p -= o->lr / (1 + (t - 1) * o->lr_decay) * g / (sqrt(sum) + o->eps);
          break;
      }
    }
    out[i] = p;
  }
}

static em_optimizer *make(const ref_opts *r, em_tensor *p) {
  switch (r->kind) {
    case 0:
      return em_optim_sgd(1, &p, &(em_sgd_options){r->lr, r->momentum, r->dampening, r->wd,
                                                    r->nesterov, r->maximize});
    case 1:
    case 2: {
      em_adam_options o = {.lr = r->lr, .beta1 = r->b1, .beta2 = r->b2, .eps = r->eps,
                           .weight_decay = r->wd, .weight_decay_zero = r->wd == 0,
                           .amsgrad = r->amsgrad, .maximize = r->maximize};
      return r->kind == 1 ? em_optim_adam(1, &p, &o) : em_optim_adamw(1, &p, &o);
    }
    case 3:
      return em_optim_rmsprop(1, &p, &(em_rmsprop_options){r->lr, r->alpha, r->eps, r->wd,
                                                            r->momentum, r->centered, r->maximize});
    default:
      return em_optim_adagrad(1, &p, &(em_adagrad_options){r->lr, r->lr_decay, r->wd, r->init_acc,
                                                            r->eps, r->maximize});
  }
}

/* Runs the optimizer on a param of dtype dt (layout 1: a non-contiguous
 * view, layout 2: a non-contiguous gradient) and compares with the rule. */
static int check_rule(const ref_opts *r, em_dtype dt, int layout, double rtol) {
  em_tensor *p, *base = NULL;
  if (layout == 1) {
    double v[2 * NP];
    for (int i = 0; i < NP; i++) v[2 * i] = p0(i), v[2 * i + 1] = 99;
    em_tensor *a = em_tensor_from_data(v, EM_DIMS(2 * NP), EM_FLOAT64);
    base = em_tensor_to_dtype(a, dt);
    em_tensor_release(a);
    p = em_tensor_slice(base, 0, 0, INT64_MAX, 2);
    em_tensor_set_requires_grad(p, true);
  } else {
    p = param(dt);
  }
  em_optimizer *opt = make(r, p);
  if (!opt) {
    fprintf(stderr, "  optimizer: %s\n", em_last_error());
    return 0;
  }
  int ok = 1;
  for (int t = 1; t <= STEPS && ok; t++) {
    if (layout == 2) { /* the grad as a strided view */
      double v[2 * NP];
      for (int i = 0; i < NP; i++) v[2 * i] = gfun(t, i), v[2 * i + 1] = -7;
      em_tensor *a = em_tensor_from_data(v, EM_DIMS(NP, 2), EM_FLOAT64);
      em_tensor *c = em_tensor_to_dtype(a, dt);
      em_tensor *g = em_tensor_select(c, 1, 0);
      ok = !em_tensor_set_grad(p, g);
      em_tensor_release(g), em_tensor_release(c), em_tensor_release(a);
    } else {
      ok = !set_grad(p, t, 1);
    }
    ok = ok && !em_optim_step(opt);
    if (!ok) fprintf(stderr, "  step %d: %s\n", t, em_last_error());
  }
  double want[NP];
  ref_run(r, want);
  if (ok) ok = em_test_tensor_close(p, want, NP, rtol, 1e-12, __FILE__, __LINE__, "param");
  if (ok && base) ok = em_test_get(base, 1) == 99; /* the gaps are untouched */
  em_optim_free(opt);
  em_tensor_release(p), em_tensor_release(base);
  return ok;
}

/* each option set on float64 (tight), float32 (loose) and both staged
 * layouts */
static int check_all_layouts(const ref_opts *r) {
  return check_rule(r, EM_FLOAT64, 0, 1e-13) && check_rule(r, EM_FLOAT32, 0, 2e-5) &&
         check_rule(r, EM_FLOAT64, 1, 1e-13) && check_rule(r, EM_FLOAT64, 2, 1e-13) &&
         check_rule(r, EM_FLOAT32, 1, 2e-5);
}

EM_TEST(sgd_update_rule) {
  ref_opts cases[] = {
      {.kind = 0, .lr = 0.1},
      {.kind = 0, .lr = 0.1, .momentum = 0.9},
      {.kind = 0, .lr = 0.05, .momentum = 0.9, .dampening = 0.3},
      {.kind = 0, .lr = 0.1, .momentum = 0.9, .nesterov = true},
      {.kind = 0, .lr = 0.1, .momentum = 0.5, .wd = 0.01, .maximize = true},
      {.kind = 0, .lr = 0.2, .wd = 0.1},
      {.kind = 0, .lr = 0.1, .momentum = 0.8, .nesterov = true, .wd = 0.05, .maximize = true},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (!check_all_layouts(&cases[k])) fprintf(stderr, "  case %zu\n", k);
    ASSERT_TRUE(check_all_layouts(&cases[k]));
  }
}

EM_TEST(adam_update_rule) {
  ref_opts cases[] = {
      {.kind = 1, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8},
      {.kind = 1, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .amsgrad = true},
      {.kind = 1, .lr = 0.02, .b1 = 0.8, .b2 = 0.99, .eps = 1e-3, .wd = 0.1},
      {.kind = 1, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.05, .amsgrad = true,
       .maximize = true},
      {.kind = 2, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.01},
      {.kind = 2, .lr = 0.05, .b1 = 0.7, .b2 = 0.95, .eps = 1e-6, .wd = 0.1, .amsgrad = true},
      {.kind = 2, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0},
      {.kind = 2, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.02, .maximize = true},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (!check_all_layouts(&cases[k])) fprintf(stderr, "  case %zu\n", k);
    ASSERT_TRUE(check_all_layouts(&cases[k]));
  }
}

EM_TEST(rmsprop_update_rule) {
  ref_opts cases[] = {
      {.kind = 3, .lr = 0.01, .alpha = 0.99, .eps = 1e-8},
      {.kind = 3, .lr = 0.01, .alpha = 0.99, .eps = 1e-8, .centered = true},
      {.kind = 3, .lr = 0.01, .alpha = 0.9, .eps = 1e-8, .momentum = 0.9},
      {.kind = 3, .lr = 0.02, .alpha = 0.9, .eps = 1e-4, .momentum = 0.5, .centered = true,
       .wd = 0.1},
      {.kind = 3, .lr = 0.01, .alpha = 0.99, .eps = 1e-8, .maximize = true},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (!check_all_layouts(&cases[k])) fprintf(stderr, "  case %zu\n", k);
    ASSERT_TRUE(check_all_layouts(&cases[k]));
  }
}

EM_TEST(adagrad_update_rule) {
  ref_opts cases[] = {
      {.kind = 4, .lr = 0.01, .eps = 1e-10},
      {.kind = 4, .lr = 0.1, .eps = 1e-10, .lr_decay = 0.1},
      {.kind = 4, .lr = 0.1, .eps = 1e-10, .init_acc = 0.5},
      {.kind = 4, .lr = 0.1, .eps = 1e-3, .wd = 0.1, .maximize = true, .lr_decay = 0.02},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (!check_all_layouts(&cases[k])) fprintf(stderr, "  case %zu\n", k);
    ASSERT_TRUE(check_all_layouts(&cases[k]));
  }
}

/* End states computed once with torch.optim (float64 params, the same
 * gradients), so a shared misreading of PyTorch in ref_run and the
 * optimizer would show. */
EM_TEST(matches_pytorch_end_states) {
  static const double T_SGD[] = {0.8292526428575908, 0.5722249697870843, 0.18763386592104264};
  static const double T_SGD_NEST[] = {-0.026677177974338922, -0.2364556780337296, -0.3262725798991587};
  static const double T_ADAM[] = {0.5100804036543262, 0.2275205747237768, -0.08059402026047957};
  static const double T_ADAMW[] = {0.48736761272547374, 0.16927933805530462, -0.12203994404255528};
  static const double T_RMS[] = {0.5073646476574406, 0.29195552761694465, -0.05193467576295726};
  static const double T_ADAGRAD[] = {0.4097074438044785, 0.10745823672938863, -0.14682130785262706};
  ref_opts cases[] = {
      {.kind = 0, .lr = 0.1, .momentum = 0.9, .dampening = 0.2, .wd = 0.05},
      {.kind = 0, .lr = 0.1, .momentum = 0.9, .nesterov = true, .maximize = true, .wd = 0.05},
      {.kind = 1, .lr = 0.01, .b1 = 0.8, .b2 = 0.99, .eps = 1e-8, .wd = 0.1, .amsgrad = true},
      {.kind = 2, .lr = 0.01, .b1 = 0.9, .b2 = 0.999, .eps = 1e-8, .wd = 0.01, .amsgrad = true,
       .maximize = true},
      {.kind = 3, .lr = 0.01, .alpha = 0.9, .eps = 1e-8, .centered = true, .momentum = 0.5, .wd = 0.1},
      {.kind = 4, .lr = 0.1, .eps = 1e-10, .lr_decay = 0.05, .init_acc = 0.3, .wd = 0.1,
       .maximize = true},
  };
  const double *want[] = {T_SGD, T_SGD_NEST, T_ADAM, T_ADAMW, T_RMS, T_ADAGRAD};
  for (int k = 0; k < 6; k++) {
    double r[NP];
    ref_run(&cases[k], r);
    for (int i = 0; i < NP; i++) ASSERT_CLOSE(r[i], want[k][i], 1e-13, 0);
    ASSERT_TRUE(check_rule(&cases[k], EM_FLOAT64, 0, 1e-13));
  }
}

EM_TEST(param_groups_and_skipped_params) {
  em_tensor *a = param(EM_FLOAT64), *b = param(EM_FLOAT64), *c = param(EM_FLOAT64);
  em_optimizer *opt = em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1, .momentum = 0.9});
  ASSERT_NOTNULL(opt);
  ASSERT_OK(em_optim_add_param_group(opt, 1, &b, &(em_sgd_options){.lr = 0.01}));
  ASSERT_OK(em_optim_add_param_group(opt, 1, &c, NULL)); /* the constructor's options */
  ASSERT_EQ(em_optim_num_groups(opt), 3);
  ASSERT_CLOSE(em_optim_get_lr(opt, 1), 0.01, 0, 0);
  ASSERT_CLOSE(em_optim_get_lr(opt, 2), 0.1, 0, 0);
  for (int t = 1; t <= STEPS; t++) {
    ASSERT_OK(set_grad(a, t, 1));
    ASSERT_OK(set_grad(b, t, 1));
    ASSERT_OK(em_tensor_set_grad(c, NULL)); /* c has no grad: skipped */
    ASSERT_OK(em_optim_step(opt));
  }
  double wa[NP], wb[NP];
  ref_run(&(ref_opts){.kind = 0, .lr = 0.1, .momentum = 0.9}, wa);
  ref_run(&(ref_opts){.kind = 0, .lr = 0.01}, wb);
  ASSERT_TENSOR_CLOSE(a, wa, 1e-14, 0);
  ASSERT_TENSOR_CLOSE(b, wb, 1e-14, 0);
  double w0[NP] = {p0(0), p0(1), p0(2)};
  ASSERT_TENSOR_CLOSE(c, w0, 0, 0);
  /* no state for b (no momentum) nor c (never had a grad) */
  em_state_dict *sd = em_optim_state_dict(opt);
  ASSERT_TRUE(em_state_dict_get(sd, "state.0.momentum_buffer") != NULL);
  ASSERT_TRUE(em_state_dict_get(sd, "state.1.momentum_buffer") == NULL);
  ASSERT_TRUE(em_state_dict_get(sd, "state.2.momentum_buffer") == NULL);
  ASSERT_EQ(em_test_get(em_state_dict_get(sd, "param_groups.2.params"), 0), 2);
  em_state_dict_free(sd);
  /* lr changes apply at the next step */
  ASSERT_OK(em_optim_set_lr(opt, 1, 0.5));
  ASSERT_CLOSE(em_optim_get_lr(opt, 1), 0.5, 0, 0);
  ASSERT_CLOSE(em_optim_initial_lr(opt, 1), 0.01, 0, 0);
  double before = em_test_get(b, 0);
  ASSERT_OK(set_grad(b, 1, 1));
  ASSERT_OK(em_optim_step(opt));
  ASSERT_CLOSE(em_test_get(b, 0), before - 0.5 * gfun(1, 0), 1e-14, 0);
  ASSERT_ERR(em_optim_set_lr(opt, 3, 0.1), EM_ERR_INDEX, "param group 3 is out of range");
  ASSERT_ERR(em_optim_set_lr(opt, 0, -1), EM_ERR_INVALID, "Invalid learning rate");
  ASSERT_TRUE(isnan(em_optim_get_lr(opt, -1)));
  em_optim_free(opt);
  em_tensor_release(a), em_tensor_release(b), em_tensor_release(c);
}

EM_TEST(zero_grad) {
  em_tensor *a = param(EM_FLOAT32);
  em_optimizer *opt = em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1});
  ASSERT_OK(set_grad(a, 1, 1));
  em_tensor *g = em_tensor_grad(a);
  ASSERT_OK(em_optim_zero_grad(opt, false));
  double z[NP] = {0, 0, 0};
  ASSERT_TENSOR_CLOSE(g, z, 0, 0); /* zeroed in place */
  em_tensor_release(g);
  ASSERT_OK(em_optim_zero_grad(opt, true));
  g = em_tensor_grad(a);
  ASSERT_TRUE(g == NULL);
  ASSERT_OK(em_optim_zero_grad(opt, false)); /* no grad: fine */
  ASSERT_OK(em_optim_step(opt));             /* nothing to do */
  em_optim_free(opt);
  em_tensor_release(a);
}

/* ---- state dicts -------------------------------------------------------------------------- */

static em_optimizer *make_kind(int kind, em_tensor **ps) {
  switch (kind) {
    case 0:
      return em_optim_sgd(2, ps, &(em_sgd_options){.lr = 0.1, .momentum = 0.9, .nesterov = true});
    case 1: return em_optim_adam(2, ps, &(em_adam_options){.lr = 0.01, .amsgrad = true});
    case 2: return em_optim_adamw(2, ps, &(em_adam_options){.lr = 0.01, .weight_decay = 0.1});
    case 3:
      return em_optim_rmsprop(2, ps, &(em_rmsprop_options){.lr = 0.01, .momentum = 0.5, .centered = true});
    default: return em_optim_adagrad(2, ps, &(em_adagrad_options){.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.2});
  }
}

EM_TEST(state_dict_round_trip) {
  for (int kind = 0; kind < 5; kind++) {
    em_tensor *a[2] = {param(EM_FLOAT32), param(EM_FLOAT32)};
    em_optimizer *A = make_kind(kind, a);
    ASSERT_NOTNULL(A);
    for (int t = 1; t <= 3; t++) {
      ASSERT_OK(set_grad(a[0], t, 1));
      ASSERT_OK(set_grad(a[1], t, -0.5));
      ASSERT_OK(em_optim_step(A));
    }
    em_state_dict *sd = em_optim_state_dict(A);
    ASSERT_NOTNULL(sd);
    /* a fresh optimizer over copies of the parameters, with other hyper-parameters */
    em_tensor *b[2];
    for (int k = 0; k < 2; k++) {
      em_tensor *d = em_tensor_detach(a[k]);
      b[k] = em_tensor_clone(d);
      em_tensor_release(d);
      em_tensor_set_requires_grad(b[k], true);
    }
    em_optimizer *B = make_kind(kind, b);
    ASSERT_OK(em_optim_set_lr(B, 0, 123));
    ASSERT_OK(em_optim_load_state_dict(B, sd));
    ASSERT_CLOSE(em_optim_get_lr(B, 0), em_optim_get_lr(A, 0), 0, 0);
    em_state_dict_free(sd);
    for (int t = 4; t <= 7; t++) {
      ASSERT_OK(set_grad(a[0], t, 1));
      ASSERT_OK(set_grad(a[1], t, -0.5));
      ASSERT_OK(set_grad(b[0], t, 1));
      ASSERT_OK(set_grad(b[1], t, -0.5));
      ASSERT_OK(em_optim_step(A));
      ASSERT_OK(em_optim_step(B));
    }
    for (int k = 0; k < 2; k++) {
      bool eq = false;
      ASSERT_OK(em_tensor_equal(a[k], b[k], &eq));
      if (!eq) fprintf(stderr, "  kind %d param %d differs\n", kind, k);
      ASSERT_TRUE(eq);
    }
    em_optim_free(A), em_optim_free(B);
    em_tensor_release(a[0]), em_tensor_release(a[1]), em_tensor_release(b[0]), em_tensor_release(b[1]);
  }
}

EM_TEST(state_dict_layout) {
  em_tensor *a[2] = {param(EM_FLOAT32), param(EM_FLOAT32)};
  em_optimizer *opt = em_optim_adam(2, a, &(em_adam_options){.lr = 0.01, .beta1 = 0.8});
  ASSERT_OK(set_grad(a[0], 1, 1));
  ASSERT_OK(em_optim_step(opt));
  ASSERT_OK(em_optim_step(opt));
  em_state_dict *sd = em_optim_state_dict(opt);
  const char *names[] = {"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq",
                         "param_groups.0.lr", "param_groups.0.eps", "param_groups.0.weight_decay",
                         "param_groups.0.amsgrad", "param_groups.0.maximize", "param_groups.0.betas",
                         "param_groups.0.decoupled_weight_decay", "param_groups.0.params"};
  ASSERT_EQ(em_state_dict_size(sd), (int)(sizeof names / sizeof names[0]));
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    ASSERT_STREQ(em_state_dict_name_at(sd, (int)i), names[i]);
  em_tensor *step = em_state_dict_get(sd, "state.0.step");
  ASSERT_TRUE(step->ndim == 0 && step->dtype == EM_FLOAT32 && em_test_get(step, 0) == 2);
  em_tensor *betas = em_state_dict_get(sd, "param_groups.0.betas");
  ASSERT_TENSOR_CLOSE(betas, ((double[]){0.8, 0.999}), 0, 0);
  em_tensor *lr = em_state_dict_get(sd, "param_groups.0.lr");
  ASSERT_TRUE(lr->ndim == 0 && lr->dtype == EM_FLOAT64 && em_test_get(lr, 0) == 0.01);
  em_tensor *ps = em_state_dict_get(sd, "param_groups.0.params");
  ASSERT_TRUE(ps->dtype == EM_INT64);
  ASSERT_TENSOR_CLOSE(ps, ((double[]){0, 1}), 0, 0);
  /* exp_avg after two steps of the same gradient: (1 - 0.8^2) g */
  double want[NP];
  for (int i = 0; i < NP; i++) want[i] = (1 - 0.64) * gfun(1, i);
  ASSERT_TENSOR_CLOSE(em_state_dict_get(sd, "state.0.exp_avg"), want, 1e-6, 1e-7);
  em_state_dict_free(sd);
  em_optim_free(opt);
  em_tensor_release(a[0]), em_tensor_release(a[1]);
}

EM_TEST(load_state_dict_errors_change_nothing) {
  em_tensor *a[2] = {param(EM_FLOAT32), param(EM_FLOAT32)};
  em_optimizer *sgd = em_optim_sgd(2, a, &(em_sgd_options){.lr = 0.1, .momentum = 0.9});
  em_optimizer *adam = em_optim_adam(2, a, &(em_adam_options){.lr = 0.01});
  em_optimizer *adamw = em_optim_adamw(2, a, &(em_adam_options){.lr = 0.01});
  em_optimizer *one = em_optim_adam(1, a, &(em_adam_options){.lr = 0.01});
  ASSERT_OK(set_grad(a[0], 1, 1));
  ASSERT_OK(set_grad(a[1], 1, 1));
  ASSERT_OK(em_optim_step(sgd));
  ASSERT_OK(em_optim_step(adam));
  em_state_dict *ssd = em_optim_state_dict(sgd), *asd = em_optim_state_dict(adam);
  em_state_dict *before = em_optim_state_dict(adamw);
  ASSERT_ERR(em_optim_load_state_dict(adam, ssd), EM_ERR_INVALID,
             "param_groups.0.eps is missing (is the state dict from a Adam optimizer?)");
  ASSERT_ERR(em_optim_load_state_dict(adamw, asd), EM_ERR_INVALID,
             "the state dict is from Adam, not AdamW");
  ASSERT_ERR(em_optim_load_state_dict(one, asd), EM_ERR_INVALID,
             "loaded state dict contains a parameter group that doesn't match the size of "
             "optimizer's group");
  ASSERT_OK(em_optim_add_param_group(one, 1, a + 1, NULL));
  ASSERT_ERR(em_optim_load_state_dict(one, asd), EM_ERR_INVALID,
             "loaded state dict has a different number of parameter groups (1, the optimizer has 2)");
  /* a state tensor of the wrong shape, an unknown entry, an incomplete state */
  em_state_dict *bad = em_state_dict_create();
  ASSERT_OK(em_state_dict_merge(bad, asd, ""));
  em_tensor *wrong = em_tensor_zeros(EM_DIMS(4), EM_FLOAT32);
  ASSERT_OK(em_state_dict_set(bad, "state.1.exp_avg", wrong));
  ASSERT_ERR(em_optim_load_state_dict(adam, bad), EM_ERR_SHAPE,
             "size mismatch for state.1.exp_avg: copying a tensor with shape [4]");
  em_state_dict_free(bad);
  bad = em_state_dict_create();
  ASSERT_OK(em_state_dict_merge(bad, ssd, ""));
  ASSERT_OK(em_state_dict_set(bad, "state.0.exp_avg", wrong));
  ASSERT_ERR(em_optim_load_state_dict(sgd, bad), EM_ERR_INVALID, "unexpected state entry");
  ASSERT_OK(em_state_dict_set(bad, "state.7.momentum_buffer", wrong));
  em_state_dict_free(bad);
  bad = em_state_dict_create();
  ASSERT_OK(em_state_dict_merge(bad, ssd, ""));
  ASSERT_OK(em_state_dict_set(bad, "state.7.momentum_buffer", wrong));
  ASSERT_ERR(em_optim_load_state_dict(sgd, bad), EM_ERR_INVALID,
             "refers to parameter 7, which is in no group");
  em_state_dict_free(bad);
  bad = em_state_dict_create();
  ASSERT_OK(em_state_dict_merge(bad, ssd, ""));
  em_tensor *idx = em_tensor_from_data((int64_t[]){0, 5}, EM_DIMS(2), EM_INT64);
  ASSERT_OK(em_state_dict_set(bad, "param_groups.0.params", idx));
  ASSERT_ERR(em_optim_load_state_dict(sgd, bad), EM_ERR_INVALID,
             "param_groups.0.params holds an invalid index 5 (the optimizer has 2 parameters)");
  em_tensor_release(idx);
  em_state_dict_free(bad);
  /* Adam's state without exp_avg_sq */
  em_state_dict *dec = em_state_dict_create();
  for (int i = 0; i < em_state_dict_size(asd); i++)
    if (strcmp(em_state_dict_name_at(asd, i), "state.1.exp_avg_sq") != 0)
      ASSERT_OK(em_state_dict_set(dec, em_state_dict_name_at(asd, i), em_state_dict_tensor_at(asd, i)));
  em_tensor *w = em_tensor_scalar(em_scalar_float(1), EM_FLOAT64);
  ASSERT_OK(em_state_dict_set(dec, "param_groups.0.decoupled_weight_decay", w));
  ASSERT_ERR(em_optim_load_state_dict(adamw, dec), EM_ERR_INVALID,
             "state.1 is incomplete (no exp_avg_sq)");
  em_state_dict_free(dec);
  /* adamw is unchanged by all of this */
  em_state_dict *after = em_optim_state_dict(adamw);
  ASSERT_EQ(em_state_dict_size(after), em_state_dict_size(before));
  ASSERT_CLOSE(em_optim_get_lr(adamw, 0), 0.01, 0, 0);
  em_state_dict_free(after), em_state_dict_free(before);
  em_tensor_release(w), em_tensor_release(wrong);
  em_state_dict_free(ssd), em_state_dict_free(asd);
  em_optim_free(sgd), em_optim_free(adam), em_optim_free(adamw), em_optim_free(one);
  em_tensor_release(a[0]), em_tensor_release(a[1]);
}

EM_TEST(construction_errors) {
  em_tensor *a = param(EM_FLOAT32);
  ASSERT_NULL_ERR(em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0}), EM_ERR_INVALID,
                  "Invalid learning rate: 0");
  ASSERT_NULL_ERR(em_optim_sgd(1, &a, NULL), EM_ERR_INVALID, "options");
  ASSERT_NULL_ERR(em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1, .momentum = -1}),
                  EM_ERR_INVALID, "Invalid momentum value: -1");
  ASSERT_NULL_ERR(em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1, .weight_decay = -1}),
                  EM_ERR_INVALID, "Invalid weight_decay value: -1");
  ASSERT_NULL_ERR(em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1, .nesterov = true}),
                  EM_ERR_INVALID, "Nesterov momentum requires a momentum and zero dampening");
  ASSERT_NULL_ERR(em_optim_adam(1, &a, &(em_adam_options){.lr = 0.1, .beta1 = 1}), EM_ERR_INVALID,
                  "Invalid beta parameter at index 0: 1");
  ASSERT_NULL_ERR(em_optim_adam(1, &a, &(em_adam_options){.lr = 0.1, .beta2 = 1.5}),
                  EM_ERR_INVALID, "Invalid beta parameter at index 1: 1.5");
  ASSERT_NULL_ERR(em_optim_adamw(1, &a, &(em_adam_options){.lr = 0.1, .eps = -1}), EM_ERR_INVALID,
                  "Invalid epsilon value: -1");
  ASSERT_NULL_ERR(em_optim_rmsprop(1, &a, &(em_rmsprop_options){.lr = 0.1, .alpha = -0.5}),
                  EM_ERR_INVALID, "Invalid alpha value: -0.5");
  ASSERT_NULL_ERR(em_optim_adagrad(1, &a, &(em_adagrad_options){.lr_decay = -1}), EM_ERR_INVALID,
                  "Invalid lr_decay value: -1");
  ASSERT_NULL_ERR(em_optim_adagrad(1, &a, &(em_adagrad_options){.initial_accumulator_value = -1}),
                  EM_ERR_INVALID, "Invalid initial_accumulator_value value: -1");
  ASSERT_NULL_ERR(em_optim_sgd(0, &a, &(em_sgd_options){.lr = 0.1}), EM_ERR_INVALID,
                  "optimizer got an empty parameter list");
  em_tensor *i = em_tensor_zeros(EM_DIMS(2), EM_INT64);
  ASSERT_NULL_ERR(em_optim_sgd(1, &i, &(em_sgd_options){.lr = 0.1}), EM_ERR_DTYPE,
                  "can only optimize floating-point Tensors");
  em_tensor *nl = em_tensor_mul_scalar(a, em_scalar_float(2));
  ASSERT_NULL_ERR(em_optim_sgd(1, &nl, &(em_sgd_options){.lr = 0.1}), EM_ERR_INVALID,
                  "can't optimize a non-leaf Tensor");
  em_tensor *twice[2] = {a, a};
  ASSERT_NULL_ERR(em_optim_sgd(2, twice, &(em_sgd_options){.lr = 0.1}), EM_ERR_INVALID,
                  "appears twice");
  em_optimizer *opt = em_optim_sgd(1, &a, &(em_sgd_options){.lr = 0.1});
  ASSERT_ERR(em_optim_add_param_group(opt, 1, &a, NULL), EM_ERR_INVALID,
             "some parameters appear in more than one parameter group");
  ASSERT_ERR(em_optim_add_param_group(opt, 1, &a, &(em_sgd_options){.lr = -2}), EM_ERR_INVALID,
             "Invalid learning rate");
  ASSERT_EQ(em_optim_num_groups(opt), 1);
  /* defaults: Adam 0.9/0.999/1e-8, AdamW weight_decay 1e-2, RMSprop alpha 0.99, Adagrad lr 1e-2 */
  em_optimizer *aw = em_optim_adamw(1, &a, &(em_adam_options){.lr = 0.1});
  em_state_dict *sd = em_optim_state_dict(aw);
  ASSERT_TENSOR_CLOSE(em_state_dict_get(sd, "param_groups.0.betas"), ((double[]){0.9, 0.999}), 0, 0);
  ASSERT_CLOSE(em_test_get(em_state_dict_get(sd, "param_groups.0.weight_decay"), 0), 1e-2, 0, 0);
  ASSERT_CLOSE(em_test_get(em_state_dict_get(sd, "param_groups.0.eps"), 0), 1e-8, 0, 0);
  em_state_dict_free(sd);
  em_optimizer *ag = em_optim_adagrad(1, &a, NULL);
  ASSERT_CLOSE(em_optim_get_lr(ag, 0), 1e-2, 0, 0);
  sd = em_optim_state_dict(ag); /* Adagrad's state exists before any step */
  ASSERT_TRUE(em_state_dict_get(sd, "state.0.sum") != NULL);
  em_state_dict_free(sd);
  em_optim_free(aw), em_optim_free(ag), em_optim_free(opt);
  em_tensor_release(nl), em_tensor_release(i), em_tensor_release(a);
}

/* A parameter of a million elements updates through the threaded kernel
 * (and the result matches the rule). */
EM_TEST(large_parameter) {
  int64_t n = 1 << 20;
  em_tensor *p = em_tensor_ones(EM_DIMS(n), EM_FLOAT32);
  em_tensor_set_requires_grad(p, true);
  em_tensor *g = em_tensor_full(EM_DIMS(n), em_scalar_float(0.5), EM_FLOAT32);
  ASSERT_OK(em_tensor_set_grad(p, g));
  em_optimizer *opt = em_optim_adam(1, &p, &(em_adam_options){.lr = 0.01});
  for (int t = 0; t < 3; t++) ASSERT_OK(em_optim_step(opt));
  /* a constant gradient moves Adam by lr * m_hat / (sqrt(v_hat) + eps) = lr each step */
  double want = 1 - 3 * 0.01 * 0.5 / (0.5 + 1e-8);
  ASSERT_CLOSE(em_test_get(p, 0), want, 1e-6, 0);
  ASSERT_CLOSE(em_test_get(p, n - 1), want, 1e-6, 0);
  ASSERT_CLOSE(em_test_get(p, n / 2 + 17), want, 1e-6, 0);
  em_optim_free(opt);
  em_tensor_release(g), em_tensor_release(p);
}

/* ---- clipping --------------------------------------------------------------------------------- */

static em_tensor *with_grad(int n, const double *gv) {
  em_tensor *p = em_tensor_zeros(EM_DIMS(n), EM_FLOAT64);
  em_tensor_set_requires_grad(p, true);
  em_tensor *g = em_tensor_from_data(gv, EM_DIMS(n), EM_FLOAT64);
  em_tensor_set_grad(p, g);
  em_tensor_release(g);
  return p;
}

EM_TEST(clip_grad_norm) {
  double g1[] = {3, -4}, g2[] = {12, 0, -1};
  double norms[] = {2, 1, INFINITY, 3};
  for (int k = 0; k < 4; k++) {
    double nt = norms[k], total;
    if (nt == 2) total = sqrt(9 + 16 + 144 + 1);
    else if (nt == 1) total = 3 + 4 + 12 + 1;
    else if (isinf(nt)) total = 12;
    else total = cbrt(27 + 64 + 1728 + 1);
    for (int clip = 0; clip < 2; clip++) {
      double max_norm = clip ? total / 4 : total * 2;
      em_tensor *ps[3] = {with_grad(2, g1), with_grad(3, g2), em_tensor_zeros(EM_DIMS(2), EM_FLOAT64)};
      em_tensor_set_requires_grad(ps[2], true); /* no grad: skipped */
      double got = -1;
      ASSERT_OK(em_nn_clip_grad_norm_(3, ps, max_norm, nt, true, &got));
      ASSERT_CLOSE(got, total, 1e-14, 0);
      double c = clip ? max_norm / (total + 1e-6) : 1;
      em_tensor *a = em_tensor_grad(ps[0]), *b = em_tensor_grad(ps[1]);
      ASSERT_TENSOR_CLOSE(a, ((double[]){3 * c, -4 * c}), 1e-14, 0);
      ASSERT_TENSOR_CLOSE(b, ((double[]){12 * c, 0, -c}), 1e-14, 0);
      em_tensor_release(a), em_tensor_release(b);
      for (int i = 0; i < 3; i++) em_tensor_release(ps[i]);
    }
  }
  /* non-finite totals */
  double gn[] = {1, NAN}, gi[] = {INFINITY, 1};
  em_tensor *pn = with_grad(2, gn), *pi = with_grad(2, gi);
  double got;
  ASSERT_ERR(em_nn_clip_grad_norm_(1, &pn, 1, 2, true, &got), EM_ERR_INVALID,
             "The total norm of order 2 for gradients from `parameters` is non-finite");
  ASSERT_ERR(em_nn_clip_grad_norm_(1, &pi, 1, INFINITY, true, &got), EM_ERR_INVALID,
             "The total norm of order inf");
  ASSERT_OK(em_nn_clip_grad_norm_(1, &pi, 1, 2, false, &got)); /* scaled by 1/inf */
  ASSERT_TRUE(isinf(got));
  em_tensor *g = em_tensor_grad(pi);
  ASSERT_TRUE(isnan(em_test_get(g, 0)) && em_test_get(g, 1) == 0);
  em_tensor_release(g);
  ASSERT_ERR(em_nn_clip_grad_norm_(1, &pi, 1, 0, false, NULL), EM_ERR_INVALID,
             "norm_type must be positive");
  /* nothing with a gradient: total 0 */
  em_tensor *none = em_tensor_zeros(EM_DIMS(2), EM_FLOAT32);
  ASSERT_OK(em_nn_clip_grad_norm_(1, &none, 1, 2, true, &got));
  ASSERT_TRUE(got == 0);
  /* float32 gradients */
  em_tensor *p32 = em_tensor_zeros(EM_DIMS(2), EM_FLOAT32);
  em_tensor_set_requires_grad(p32, true);
  em_tensor *g32 = em_tensor_full(EM_DIMS(2), em_scalar_float(3), EM_FLOAT32);
  em_tensor_set_grad(p32, g32);
  ASSERT_OK(em_nn_clip_grad_norm_(1, &p32, 1, 2, true, &got));
  ASSERT_CLOSE(got, sqrt(18), 1e-6, 0);
  ASSERT_TENSOR_CLOSE(g32, ((double[]){3 / (sqrt(18) + 1e-6), 3 / (sqrt(18) + 1e-6)}), 1e-6, 0);
  em_tensor_release(g32), em_tensor_release(p32), em_tensor_release(none);
  em_tensor_release(pn), em_tensor_release(pi);
}

EM_TEST(clip_grad_value) {
  double g1[] = {3, -4, 0.5}, g2[] = {-0.2, 7};
  em_tensor *ps[2] = {with_grad(3, g1), with_grad(2, g2)};
  ASSERT_OK(em_nn_clip_grad_value_(2, ps, 1));
  em_tensor *a = em_tensor_grad(ps[0]), *b = em_tensor_grad(ps[1]);
  ASSERT_TENSOR_CLOSE(a, ((double[]){1, -1, 0.5}), 0, 0);
  ASSERT_TENSOR_CLOSE(b, ((double[]){-0.2, 1}), 0, 0);
  ASSERT_ERR(em_nn_clip_grad_value_(2, ps, NAN), EM_ERR_INVALID, "NaN");
  em_tensor_release(a), em_tensor_release(b);
  em_tensor_release(ps[0]), em_tensor_release(ps[1]);
}

/* Hyper-parameters by name, as the Python layer syncs its param_groups. */
EM_TEST(options_by_name) {
  em_tensor *w = em_tensor_ones(EM_DIMS(2), EM_FLOAT64);
  ASSERT_OK(em_tensor_set_requires_grad(w, true));
  em_adam_options ao = {.lr = 0.1};
  em_optimizer *opt = em_optim_adam(1, &w, &ao);
  double v;
  ASSERT_OK(em_optim_get_option(opt, 0, "beta2", &v));
  ASSERT_CLOSE(v, 0.999, 0, 0);
  ASSERT_OK(em_optim_set_option(opt, 0, "beta1", 0.5));
  ASSERT_OK(em_optim_set_option(opt, 0, "amsgrad", 1));
  ASSERT_OK(em_optim_get_option(opt, 0, "amsgrad", &v));
  ASSERT_CLOSE(v, 1, 0, 0);
  ASSERT_STREQ(em_optim_kind(opt), "Adam");
  ASSERT_ERR(em_optim_set_option(opt, 0, "momentum", 0.9), EM_ERR_INVALID, "no hyper-parameter named 'momentum'");
  ASSERT_ERR(em_optim_set_option(opt, 0, "beta1", 1.5), EM_ERR_INVALID, "must be in [0, 1)");
  ASSERT_ERR(em_optim_set_option(opt, 0, "lr", -1), EM_ERR_INVALID, "invalid lr value");
  ASSERT_ERR(em_optim_get_option(opt, 3, "lr", &v), EM_ERR_INDEX, "out of range");
  /* a changed beta1 takes effect: one step by hand (bias-corrected Adam) */
  em_tensor *g = em_tensor_full(EM_DIMS(2), em_scalar_float(2), EM_FLOAT64);
  ASSERT_OK(em_tensor_set_grad(w, g));
  ASSERT_OK(em_optim_set_option(opt, 0, "amsgrad", 0));
  ASSERT_OK(em_optim_step(opt));
  double m = 0.5 * 2, vv = 0.001 * 4, mh = m / 0.5, vh = vv / 0.001;
  double expect = 1 - 0.1 * mh / (sqrt(vh) + 1e-8);
  ASSERT_TENSOR_CLOSE(w, ((double[]){expect, expect}), 1e-12, 0);
  em_optim_free(opt);
  em_tensor_release(g), em_tensor_release(w);
}

EM_TEST_MAIN()
